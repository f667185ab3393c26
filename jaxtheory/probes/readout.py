r"""Linear readouts fitted in closed form on a network's features: the linear probe.

A network's features :math:`\Phi` (its penultimate layer, or any fixed
feature map such as random features) are read out by ridge regression,
every ridge strength from one SVD, inside jit and vmap so it can be a metric
recorded during training (:func:`ridge_metric`). The ridgeless readout is the
minimum-norm least-squares one, the limit of gradient descent on the readout
from zero: at :math:`p = n` features it gives random-features double
descent (:mod:`jaxtheory.experiments.double_descent`).

>>> import jax.numpy as jnp
>>> Phi = jnp.eye(3)[:, :2]; y = jnp.array([[1.0], [2.0], [3.0]])
>>> [round(float(v), 3) for v in ridge_losses(Phi, y, Phi, y, [0.0])[:, 0]]
[1.5, 1.5]
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxtheory.probes.collapse import features_from_apply
from jaxtheory.metric import Metric


def ridge_losses(Phi: jax.Array, y: jax.Array, Phi_test: jax.Array, y_test: jax.Array,
                 ridges: Sequence[float], weights: jax.Array | None = None,
                 rcond: float | None = None) -> jax.Array:
  r"""Train and test losses of ridge readouts on fixed features, every ridge from one SVD.

  For each :math:`\lambda` the readout :math:`\hat a_\lambda = \arg\min_a
  \frac1n \sum_i w_i \|\Phi_i a - y_i\|^2 + \lambda \|a\|^2` (``n = sum(w)``) is
  :math:`V \mathrm{diag}(s/(s^2 + n\lambda)) U^\top y` for the SVD
  :math:`\sqrt{w}\,\Phi = U \mathrm{diag}(s) V^\top`; at :math:`\lambda = 0`
  singular values below ``rcond * max(s)`` are dropped (the minimum-norm
  least-squares readout). Losses are :func:`jaxtheory.losses.mse` (half the
  squared error summed over outputs, averaged over examples).

  Args:
    Phi: training features ``(n, p)``; zero columns (padded widths) change nothing.
    y: training targets ``(n, k)``.
    Phi_test: test features ``(m, p)``.
    y_test: test targets ``(m, k)``.
    ridges: the :math:`\lambda` values (static).
    weights: ``(n,)`` 0/1 example weights (active examples of a data-size sweep).
    rcond: relative singular-value cutoff at :math:`\lambda = 0`; default
      ``10 * eps * max(n, p)``.

  Returns:
    ``(2, len(ridges))``: train losses then test losses.
  """
  n, p = Phi.shape
  w = jnp.ones((n,), Phi.dtype) if weights is None else jnp.asarray(weights, Phi.dtype)
  sw = jnp.sqrt(w)[:, None]
  U, s, Vt = jnp.linalg.svd(sw * Phi, full_matrices=False)
  Uty = U.T @ (sw * y)
  rcond = 10 * jnp.finfo(Phi.dtype).eps * max(n, p) if rcond is None else rcond
  keep = s > rcond * s[0]
  n_eff = jnp.sum(w)
  lam = jnp.asarray(ridges, Phi.dtype)[:, None]
  safe = jnp.where(keep, s, 1.0)
  coef = jnp.where(keep[None], s[None] / (safe[None] ** 2 + n_eff * lam), 0.0)  # (R, r)
  A = jnp.einsum("pr,Rr,rk->Rpk", Vt.T, coef, Uty)  # readouts (R, p, k)
  half_sq = lambda f, t: 0.5 * jnp.sum((f - t) ** 2, axis=-1)  # (R, n)
  train = jnp.sum(w[None] * half_sq(jnp.einsum("np,Rpk->Rnk", Phi, A), y[None]), -1) / n_eff
  test = jnp.mean(half_sq(jnp.einsum("mp,Rpk->Rmk", Phi_test, A), y_test[None]), -1)
  return jnp.stack([train, test])


def ridge_metric(ridges: Sequence[float]) -> Metric:
  """A recorded metric: the :func:`ridge_losses` of the network's penultimate features.

  Features come from :func:`jaxtheory.probes.collapse.features_from_apply`
  (a Flax or Equinox model's from its ``Model.penultimate``) and are divided
  by the square root of the active width (``ctx.width``), so a ridge means
  the same at every number of features. The metric has dims
  ``('split', 'ridge')``: ``split`` 0 is train, 1 is test.
  """
  ridges = tuple(float(r) for r in ridges)

  def metric(params, apply, d, ctx, model=None):
    Phi = features_from_apply(apply, params, d["x_train"], model=model, ctx=ctx)
    Phi_test = features_from_apply(apply, params, d["x_test"], model=model, ctx=ctx)
    p = Phi.shape[-1] if ctx.width is None else ctx.width
    scale = 1.0 / jnp.sqrt(jnp.asarray(p, Phi.dtype))
    return ridge_losses(scale * Phi, d["y_train"], scale * Phi_test, d["y_test"],
                        ridges, d["w_train"])

  return Metric(metric, ("split", "ridge"), inputs=("ctx", "model"))
