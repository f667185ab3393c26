r"""Taylor expansions of a network in its parameters: NT's ``nt.linearize`` / ``nt.taylor_expand``.

The linearized network trained by gradient descent on MSE follows the
closed-form dynamics of :func:`jaxtheory.kernels.predict.gradient_descent_mse`
with its empirical NTK (Lee et al. 2019, "Wide Neural Networks of Any Depth
Evolve as Linear Models Under Gradient Descent", arXiv:1902.06720).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp


def _tree_sub(a, b):
  return jax.tree.map(lambda x, y: x - y, a, b)


def linearize(f: Callable, params) -> Callable:
  r"""First-order Taylor expansion of ``f`` in its parameters around ``params``.

  :math:`f_{\rm lin}(p, x) = f(p_0, x) + J_p f(p_0, x)\,(p - p_0)`, one
  forward-mode ``jvp`` per call (Lee et al. 2019, eq. 6). Trained by GD on
  MSE it follows :func:`gradient_descent_mse` with the empirical NTK at
  :math:`p_0` exactly (up to time discretization).

  Args:
    f: ``f(params, *args, **kwargs)``, any output pytree.
    params: the expansion point :math:`p_0`.

  Returns:
    ``f_lin(p, *args, **kwargs)`` with ``f``'s signature.

  >>> import jax.numpy as jnp
  >>> f_lin = linearize(jnp.sin, jnp.array(0.))
  >>> float(f_lin(jnp.array(0.5)))
  0.5
  """

  def f_lin(p, *args, **kwargs):
    y0, dy = jax.jvp(lambda q: f(q, *args, **kwargs), (params,), (_tree_sub(p, params),))
    return jax.tree.map(jnp.add, y0, dy)

  return f_lin


def taylor_expand(f: Callable, params, degree: int) -> Callable:
  r"""Taylor expansion of ``f`` in its parameters around ``params`` to ``degree``.

  :math:`f_{\le d}(p, x) = \sum_{j=0}^{d} \frac{1}{j!} D^j_p f(p_0, x)[\Delta^{\otimes j}]`,
  :math:`\Delta = p - p_0`, by ``degree`` nested ``jvp``\ s (each level
  returns all lower derivatives too). ``degree=1`` is :func:`linearize`.

  Args:
    f: ``f(params, *args, **kwargs)``, any output pytree.
    params: the expansion point :math:`p_0`.
    degree: a non-negative integer.

  Returns:
    ``f_tayl(p, *args, **kwargs)`` with ``f``'s signature.

  >>> import jax.numpy as jnp
  >>> f2 = taylor_expand(jnp.exp, jnp.array(0.), 2)
  >>> float(f2(jnp.array(1.)))
  2.5
  """
  if not isinstance(degree, int) or isinstance(degree, bool) or degree < 0:
    raise ValueError(f"degree must be a non-negative integer, got {degree!r}")

  def f_tayl(p, *args, **kwargs):
    delta = _tree_sub(p, params)

    def derivs(order):
      """``q -> [D^0 f(q), D^1 f(q)[delta], ..., D^order f(q)[delta^order]]``."""
      if order == 0:
        return lambda q: [f(q, *args, **kwargs)]
      lower = derivs(order - 1)

      def fn(q):
        primal, tangent = jax.jvp(lower, (q,), (delta,))
        return primal + [tangent[-1]]

      return fn

    terms = derivs(degree)(params)
    out = terms[0]
    for j, term in enumerate(terms[1:], start=1):
      out = jax.tree.map(lambda a, b, c=math.factorial(j): a + b / c, out, term)
    return out

  return f_tayl
