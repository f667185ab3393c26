r"""Kernel predictions: GP inference and closed-form MSE gradient flow.

The names, signatures and conventions are those of neural-tangents'
``nt.predict`` (0.6.5); gradient descent on other losses (an ODE) and
:func:`max_learning_rate` live in :mod:`jaxtheory.kernels.dynamics`, NT's
``nt.linearize`` / ``nt.taylor_expand`` in :mod:`jaxtheory.kernels.taylor`:

* every constructor takes the training data once and returns a
  ``predict_fn`` that is cheap to call many times (the eigendecomposition or
  Cholesky factor of the train-train kernel is computed on first use and
  cached);
* kernels have the *zipped* layout of NT: for outputs ``f(x)`` of shape
  ``(n, *rest)`` a kernel between ``n1`` and ``n2`` inputs has shape
  ``(n1, n2, r1, r1, r2, r2, ...)`` with the ``trace_axes`` of ``rest``
  absent, and is read as :math:`\Theta \otimes I` along them. The default
  ``trace_axes=(-1,)`` with outputs ``(n, k)`` gives plain ``(n1, n2)``
  kernels;
* ``t`` counts gradient-descent *steps*: absolute time is
  ``learning_rate * t``; ``t=None`` means :math:`t = \infty` (solved by
  Cholesky instead of eigendecomposition).

Loss normalization (the one place to be careful). NT's closed forms are
gradient flow on

.. math:: \mathcal L_{NT}(f) = \frac{1}{2N}\sum_{i,c}(f_{ic} - y_{ic})^2,
   \qquad N = \text{y\_train.size} = n k,

so :math:`\dot f = -\frac{\eta}{N}\Theta(f - y)`. :func:`jaxtheory.train.mse`
averages over *examples* only, :math:`\mathcal L = \frac{1}{2n}\sum_i
\|f_i - y_i\|^2 = k\,\mathcal L_{NT}`, so it trains ``k = out_dim`` times
faster. Training with ``optax.sgd(lr)`` on ``train.mse`` for ``s`` steps
therefore corresponds to

* ``gradient_descent_mse(K, y, lr, normalization=n)(t=s)`` (the keyword
  ``normalization``, an extension over NT), or equivalently
* ``gradient_descent_mse(K, y, lr)(t=s * k)`` (NT's convention),

and :func:`~jaxtheory.kernels.dynamics.max_learning_rate` gives
``train.mse``'s limit with ``y_train_size=n``.

References: Jacot, Gabriel & Hongler (2018), "Neural Tangent Kernel",
arXiv:1806.07572; Lee et al. (2019), "Wide Neural Networks of Any Depth Evolve
as Linear Models Under Gradient Descent", arXiv:1902.06720; He, Lakshminarayanan
& Teh (2020), "Bayesian Deep Ensembles via the Neural Tangent Kernel",
arXiv:2007.05864.
"""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from jax.typing import ArrayLike

from jaxtheory import compile_cache
from jaxtheory.kernels._zipped import (Axes, _check_kernel, _k_from_2d, _k_to_2d, _layout,
                                       _Layout, _out_from_2d, _out_to_2d, _test_shape)
# Re-exported so that this module offers all of NT's ``nt.predict`` names (see jaxtheory.nt).
from jaxtheory.kernels.dynamics import ODEState, gradient_descent, max_learning_rate  # noqa: F401

Array = jax.Array
Get = str | Sequence[str] | None

# ----------------------------------------------------------------------------
# Public containers.


class Gaussian(NamedTuple):
  """A ``(mean, covariance)`` pair.

  Attributes:
    mean: shape of the function outputs (with leading time axes, if any).
    covariance: shape of the respective NNGP/NTK kernel (zipped layout).
  """
  mean: Array
  covariance: Array


_Kernel = collections.namedtuple("Kernel", "nngp ntk", defaults=(None, None))


@functools.lru_cache(maxsize=None)
def _gaussians_type(fields: tuple[str, ...]):
  return collections.namedtuple("Gaussians", fields)


# ----------------------------------------------------------------------------
# Kernel arguments, ``get`` and shared numerics.


def _is_kernel_object(k) -> bool:
  return hasattr(k, "nngp") or hasattr(k, "ntk")


def _get_attr(k, g: str, name: str):
  """``k.nngp`` / ``k.ntk`` for kernel objects; ``k`` itself for plain arrays."""
  if _is_kernel_object(k):
    v = getattr(k, g, None)
    if v is None:
      raise ValueError(f"{name} has no {g!r} kernel, needed for get={g!r}")
    return v
  return k


def _canonicalize_get(get: Get, allowed: Sequence[str]) -> tuple[bool, tuple[str, ...]]:
  """``(single, names)``: NT's ``get`` (a string, a tuple, or ``None`` = nngp and ntk)."""
  if get is None:
    return False, ("nngp", "ntk")
  single = isinstance(get, str)
  names = tuple(g.lower() for g in ((get,) if single else get))
  if not names:
    raise ValueError('"get" must be non-empty')
  if len(set(names)) < len(names):
    raise ValueError(f'entries of "get" must be unique, got {names}')
  for g in names:
    if g not in allowed:
      raise ValueError(f"get must be among {tuple(allowed)}, got {g!r}")
  return single, names


def _pack(out: dict, single: bool, names: tuple[str, ...]):
  return out[names[0]] if single else _gaussians_type(names)(*(out[g] for g in names))


def _add_diagonal_regularizer(k: Array, diag_reg, absolute: bool) -> Array:
  r""":math:`K + \epsilon I`, :math:`\epsilon` = ``diag_reg`` or ``diag_reg * tr(K) / n``."""
  n = k.shape[0]
  scale = diag_reg if absolute else diag_reg * jnp.trace(k) / n
  return k + scale * jnp.eye(n, dtype=k.dtype)


def _memo(fn: Callable) -> Callable:
  """Caches ``fn(*key)``, computed eagerly even when first called under ``jit``.

  ``jax.ensure_compile_time_eval`` keeps a factorization of a concrete kernel
  concrete, so the cache never holds a tracer of a finished trace.
  """
  cache = {}

  @functools.wraps(fn)
  def cached(*key):
    if key not in cache:
      with jax.ensure_compile_time_eval():
        cache[key] = fn(*key)
    return cache[key]

  return cached


def _phi(lam: Array, s: Array) -> Array:
  r""":math:`\mathrm{expm1}(-\lambda s)/\lambda` (``-s`` at ``lambda = 0``), shape ``s + lam``."""
  lam = lam.reshape((1,) * s.ndim + lam.shape)
  pos = lam > 0
  safe = jnp.where(pos, lam, 1.0)
  s = s.reshape(s.shape + (1,) * (lam.ndim - s.ndim))
  return jnp.where(pos, jnp.expm1(-safe * s) / safe, -s)


# ----------------------------------------------------------------------------
# Jitted kernels of the predictors (one compiled program per call, not one per op; the
# factorizations kept in the executable store, so a later process loads them untraced).


@functools.partial(compile_cache.stored_jit, static_argnames=("absolute",))
def _eigh_regularized(k: Array, diag_reg, absolute: bool) -> tuple[Array, Array]:
  """Eigenpairs of the regularized 2-D kernel, eigenvalues clipped at zero (PSD)."""
  evals, evecs = jnp.linalg.eigh(_add_diagonal_regularizer(_k_to_2d(k), diag_reg, absolute))
  return jnp.maximum(evals, 0.), evecs


@functools.partial(compile_cache.stored_jit, static_argnames=("absolute",))
def _cho_regularized(k: Array, diag_reg, absolute: bool) -> Array:
  """Lower Cholesky factor of the regularized 2-D kernel."""
  return jnp.linalg.cholesky(_add_diagonal_regularizer(_k_to_2d(k), diag_reg, absolute))


def _cho_solve(c: Array, b: Array) -> Array:
  return jsl.cho_solve((c, True), b)


def _init_outputs(y_train, fx_train_0, fx_test_0, lay, sample_test, k_dtype):
  """Broadcast initial outputs and the 2-D train form (zeros for ``None``).

  The predictions take the kernel's precision where it is higher than the
  targets' (NT's: a float32 ``y_train`` with a float64 kernel gives float64 at
  any ``t``, ``t=None`` included).
  """
  dtype = jnp.result_type(y_train, k_dtype, float)
  if fx_train_0 is not None:
    fx_train_0 = jnp.broadcast_to(fx_train_0, y_train.shape).astype(dtype)
  f0 = (jnp.zeros((math.prod(lay.sample_shape), math.prod(lay.trace_shape)), dtype)
        if fx_train_0 is None else _out_to_2d(fx_train_0, lay))
  if fx_test_0 is not None:
    fx_test_0 = jnp.broadcast_to(fx_test_0, _test_shape(lay, sample_test)).astype(dtype)
  return fx_train_0, fx_test_0, f0


@functools.partial(jax.jit, static_argnames=("lay", "sample_test"))
def _mse_flow_inf(c, y_train, fx_train_0, fx_test_0, k_test_train, lay, sample_test):
  fx_train_0, fx_test_0, f0 = _init_outputs(y_train, fx_train_0, fx_test_0, lay, sample_test,
                                            c.dtype)
  fx_train_t = y_train.astype(f0.dtype)
  fx_test_t = None
  if fx_test_0 is not None:
    dfx = _k_to_2d(k_test_train) @ _cho_solve(c, _out_to_2d(y_train, lay) - f0)
    fx_test_t = fx_test_0 + _out_from_2d(dfx, lay, sample_test)
  return fx_train_t, fx_test_t


@functools.partial(jax.jit, static_argnames=("lay", "sample_test"))
def _mse_flow(s, lam, V, y_train, fx_train_0, fx_test_0, k_test_train, lay, sample_test):
  fx_train_0, fx_test_0, f0 = _init_outputs(y_train, fx_train_0, fx_test_0, lay, sample_test,
                                            V.dtype)
  t_shape = s.shape
  s = s.reshape(-1)
  lead = tuple(range(len(t_shape)))
  r = V.T @ (f0 - _out_to_2d(y_train, lay))  # the initial residual in the eigenbasis
  fx_train_t = fx_test_t = None
  if fx_train_0 is not None:
    dfx = jnp.einsum("ij,sj,jc->sic", V, jnp.expm1(-s[:, None] * lam[None]), r)
    fx_train_t = (jnp.expand_dims(fx_train_0, lead) +
                  _out_from_2d(dfx, lay, lay.sample_shape, t_shape))
  if fx_test_0 is not None:
    dfx = jnp.einsum("mj,sj,jc->smc", _k_to_2d(k_test_train) @ V, _phi(lam, s), r)
    fx_test_t = jnp.expand_dims(fx_test_0, lead) + _out_from_2d(dfx, lay, sample_test, t_shape)
  return fx_train_t, fx_test_t


# ----------------------------------------------------------------------------
# Closed-form gradient flow on MSE.


def gradient_descent_mse(
    k_train_train: ArrayLike,
    y_train: ArrayLike,
    learning_rate: float = 1.,
    diag_reg: float = 0.,
    diag_reg_absolute_scale: bool = False,
    trace_axes: Axes = (-1,),
    *,
    normalization: float | None = None,
) -> Callable:
  r"""Closed-form gradient flow of a linear(ized) model on MSE.

  With :math:`\Theta` = ``k_train_train`` (plus the diagonal regularizer),
  :math:`\tau` = ``learning_rate * t`` and :math:`N` = ``normalization``,
  gradient flow :math:`\dot f = -\frac1N \Theta (f - y)` on the loss
  :math:`\frac{1}{2N}\|f - y\|^2` gives (Jacot et al. 2018; Lee et al. 2019,
  eqs. 8-9)

  .. math::
    f_{\rm train}(\tau) &= y + e^{-\Theta\tau/N}(f_{\rm train}(0) - y), \\
    f_{\rm test}(\tau) &= f_{\rm test}(0) + \Theta_{\rm test,train}\,\Theta^{-1}
      (e^{-\Theta\tau/N} - I)(f_{\rm train}(0) - y),

  evaluated in the eigenbasis of :math:`\Theta` (computed once, clipped at
  zero) for any array of times, or by a Cholesky solve at :math:`t=\infty`.

  Args:
    k_train_train: train-train kernel (NTK for a trained network; NNGP for
      training the readout only), zipped shape of ``y_train`` without
      ``trace_axes``.
    y_train: train targets, e.g. ``(n, k)``.
    learning_rate: step size; ``t`` counts steps.
    diag_reg: diagonal regularizer added to ``k_train_train``.
    diag_reg_absolute_scale: ``True``: add ``diag_reg * I``; ``False``: add
      ``diag_reg * trace(K) / n * I`` (NT's default).
    trace_axes: axes of ``y_train`` along which the kernel is
      :math:`\Theta \otimes I` (absent from the kernel).
    normalization: :math:`N` above. ``None`` (NT's convention) is
      ``y_train.size``; pass ``y_train.shape[0]`` for
      :func:`jaxtheory.train.mse` (see the module docstring).

  Returns:
    ``predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)``
    returning ``fx_train_t``, ``fx_test_t`` or ``(fx_train_t, fx_test_t)``
    (``None`` initial outputs are not predicted), with leading axes
    ``jnp.shape(t)``. At ``t=None`` the train outputs are ``y_train`` (the
    unregularized limit; pass ``k_test_train=k_train_train`` for regularized
    train predictions).

  >>> import jax.numpy as jnp
  >>> K, y = jnp.array([[2., 1.], [1., 2.]]), jnp.array([[1.], [-1.]])
  >>> predict_fn = gradient_descent_mse(K, y)
  >>> predict_fn(t=None, fx_train_0=jnp.zeros((2, 1))).tolist()
  [[1.0], [-1.0]]
  """
  y_train = jnp.asarray(y_train)
  k_train_train = jnp.asarray(k_train_train)
  lay = _layout(y_train, trace_axes)
  _check_kernel(k_train_train, lay, "k_train_train")
  norm = y_train.size if normalization is None else normalization

  @_memo
  def eig():
    return _eigh_regularized(k_train_train, diag_reg, absolute=diag_reg_absolute_scale)

  @_memo
  def cho():
    return _cho_regularized(k_train_train, diag_reg, absolute=diag_reg_absolute_scale)

  def predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None):
    """Train [and test] outputs at time[s] ``t`` (``None``: infinity).

    Args:
      t: steps, a scalar or an array of any shape (fractional allowed).
      fx_train_0: train outputs at ``t=0`` (``None``: don't predict them;
        the flow then starts from zero train outputs, as in NT).
      fx_test_0: test outputs at ``t=0`` (``None``: don't predict them).
      k_test_train: test-train kernel, needed for test predictions.

    Returns:
      ``fx_train_t``, ``fx_test_t`` or both, with leading axes ``shape(t)``.
    """
    sample_test = _check_predict_inputs(fx_train_0, fx_test_0, k_test_train, lay)
    if fx_test_0 is None:
      k_test_train = None
    if t is None:
      fx_train_t, fx_test_t = _mse_flow_inf(cho(), y_train, fx_train_0, fx_test_0,
                                            k_test_train, lay=lay, sample_test=sample_test)
    else:
      s = jnp.asarray(t) * learning_rate / norm
      fx_train_t, fx_test_t = _mse_flow(s, *eig(), y_train, fx_train_0, fx_test_0,
                                        k_test_train, lay=lay, sample_test=sample_test)
    if fx_test_0 is None:
      return fx_train_t
    if fx_train_0 is None:
      return fx_test_t
    return fx_train_t, fx_test_t

  return predict_fn


def _check_predict_inputs(fx_train_0, fx_test_0, k_test_train, lay):
  if fx_train_0 is None and fx_test_0 is None:
    raise ValueError("fx_train_0 and fx_test_0 are both None: nothing to predict")
  if fx_test_0 is not None and k_test_train is None:
    raise ValueError("fx_test_0 is given but k_test_train is None; pass the test-train "
                     "kernel to predict test outputs")
  if fx_test_0 is None:
    return None
  return _check_kernel(k_test_train, lay, "k_test_train", square=False)


# ----------------------------------------------------------------------------
# GP inference (t = infinity).

@functools.partial(jax.jit, static_argnames=("lay", "sample_test"))
def _gp_posterior(c, y_train, k_td, k_td_init=None, k_tt=None, nngp_dd=None, *, lay,
                  sample_test):
  """Posterior mean [and covariance]; ``nngp_dd`` given means the NTK-ensemble covariance."""
  k_td2 = _k_to_2d(k_td)
  mean = _out_from_2d(k_td2 @ _cho_solve(c, _out_to_2d(y_train, lay)), lay, sample_test)
  if k_tt is None:
    return mean
  cross = k_td2 @ _cho_solve(c, _k_to_2d(k_td_init).T)
  if nngp_dd is None:
    cov = _k_to_2d(k_tt) - cross
  else:
    a = _cho_solve(c, k_td2.T)  # Theta^-1 Theta_d*
    cov = _k_to_2d(k_tt) + a.T @ _k_to_2d(nngp_dd) @ a - cross - cross.T
  return Gaussian(mean, _k_from_2d(cov, sample_test, sample_test))



def gp_inference(
    k_train_train,
    y_train: ArrayLike,
    diag_reg: float = 0.,
    diag_reg_absolute_scale: bool = False,
    trace_axes: Axes = (-1,),
) -> Callable:
  r"""Posterior of the NNGP, of the NTK ensemble at :math:`t=\infty`, and of the NTK-GP.

  With :math:`K` the NNGP, :math:`\Theta` the NTK (each plus the diagonal
  regularizer when inverted), ``*`` the test and ``d`` the train set:

  * ``'nngp'`` (exact Bayesian posterior of an infinitely wide network):
    :math:`\mu = K_{*d}K^{-1}y`, :math:`\Sigma = K_{**} - K_{*d}K^{-1}K_{d*}`;
  * ``'ntk'`` (infinite ensemble of infinitely wide networks trained to
    convergence by gradient flow; Lee et al. 2019, eqs. 15-16 at
    :math:`t=\infty`): :math:`\mu = \Theta_{*d}\Theta^{-1}y`,
    :math:`\Sigma = K_{**} + \Theta_{*d}\Theta^{-1}K\Theta^{-1}\Theta_{d*}
    - (\Theta_{*d}\Theta^{-1}K_{d*} + \text{h.c.})`;
  * ``'ntkgp'`` (GP posterior with NTK prior; He et al. 2020): the NNGP
    formulas with :math:`K \to \Theta`.

  Args:
    k_train_train: train-train kernel: an array (used for every ``get``) or
      an object with ``nngp`` and/or ``ntk`` attributes (the ``'ntk'``
      covariance needs both).
    y_train: train targets.
    diag_reg: diagonal regularizer (see :func:`gradient_descent_mse`).
    diag_reg_absolute_scale: absolute (``True``) or trace-relative regularizer.
    trace_axes: axes of the outputs along which kernels are
      :math:`\Theta \otimes I`.

  Returns:
    ``predict_fn(get=None, k_test_train=None, k_test_test=None)``: for a
    string ``get`` the mean (``k_test_test=None``) or a :class:`Gaussian`;
    for a tuple or ``None`` (= ``('nngp', 'ntk')``) a ``Gaussians``
    namedtuple of those. ``k_test_train=None`` gives train-set predictions
    :math:`N(y, 0)` (pass ``k_test_test=True`` for the zero covariance).

  >>> import jax.numpy as jnp
  >>> K, y = jnp.array([[2., 1.], [1., 2.]]), jnp.array([[3.], [0.]])
  >>> jnp.round(gp_inference(K, y)('nngp', jnp.array([[1., 0.]])), 4).tolist()
  [[2.0]]
  """
  y_train = jnp.asarray(y_train)
  lay = _layout(y_train, trace_axes)
  if _is_kernel_object(k_train_train):
    for g in ("nngp", "ntk"):
      if getattr(k_train_train, g, None) is not None:
        _check_kernel(getattr(k_train_train, g), lay, f"k_train_train.{g}")
  else:
    _check_kernel(k_train_train, lay, "k_train_train")

  def k_dd(g):
    return jnp.asarray(_get_attr(k_train_train, g, "k_train_train"))

  @_memo
  def factor(g):
    return _cho_regularized(k_dd(g), diag_reg, absolute=diag_reg_absolute_scale)

  def predict_fn(get: Get = None, k_test_train=None, k_test_test=None):
    """Posterior mean [and covariance] on the test set (``k_test_train=None``: train set).

    Args:
      get: ``'nngp'``, ``'ntk'``, ``'ntkgp'``, a tuple of them, or ``None``
        (``('nngp', 'ntk')``).
      k_test_train: test-train kernel(s) (array or ``nngp``/``ntk`` object).
      k_test_test: test-test kernel(s) for the covariance; ``None``: mean only.

    Returns:
      A mean or :class:`Gaussian` (string ``get``), else a ``Gaussians`` namedtuple.
    """
    single, names = _canonicalize_get(get, ("nngp", "ntk", "ntkgp"))
    out = {}
    for g in names:
      kg = "ntk" if g == "ntkgp" else g
      if k_test_train is None:  # the train set: N(y_train, 0)
        kdd = k_dd(kg)
        mean = y_train.astype(jnp.result_type(kdd, float))
        out[g] = mean if k_test_test is None else Gaussian(mean, jnp.zeros_like(kdd, mean.dtype))
        continue
      k_td = jnp.asarray(_get_attr(k_test_train, kg, "k_test_train"))
      sample_test = _check_kernel(k_td, lay, "k_test_train", square=False)
      if k_test_test is None:
        out[g] = _gp_posterior(factor(kg), y_train, k_td, lay=lay, sample_test=sample_test)
        continue
      g_init = "ntk" if g == "ntkgp" else "nngp"  # the prior kernel (at init)
      if g == "ntk" and not all(getattr(k, "nngp", None) is not None
                                for k in (k_train_train, k_test_train)):
        raise ValueError(
            "the 'ntk' posterior covariance on a test set needs both NNGP and NTK in "
            "k_train_train and k_test_train (objects with .nngp and .ntk)")
      k_tt = jnp.asarray(_get_attr(k_test_test, g_init, "k_test_test"))
      _check_kernel(k_tt, _Layout(lay.ndim, lay.trace_axes, sample_test, lay.trace_shape),
                    "k_test_test", sample_1=sample_test)
      k_td_init = jnp.asarray(_get_attr(k_test_train, g_init, "k_test_train"))
      nngp_dd = k_dd("nngp") if g == "ntk" else None
      out[g] = _gp_posterior(factor(kg), y_train, k_td, k_td_init, k_tt, nngp_dd,
                             lay=lay, sample_test=sample_test)
    return _pack(out, single, names)

  return predict_fn


# ----------------------------------------------------------------------------
# Infinite ensembles of infinite-width networks.

@functools.partial(jax.jit, static_argnames=("kind", "lay", "sample_test", "compute_cov"))
def _ensemble_flow(s, lam, V, y_train, k_td, nngp_dd, nngp_td, nngp_tt, *, kind, lay,
                   sample_test, compute_cov):
  """Mean [and covariance] of the ensemble at scaled times ``s`` (``k_td=None``: train set)."""
  t_shape = s.shape
  s = s.reshape(-1)
  vy = V.T @ _out_to_2d(y_train, lay)
  if k_td is None:
    mean = jnp.einsum("ij,sj,jc->sic", V, -jnp.expm1(-s[:, None] * lam[None]), vy)
  else:
    ktd_V = _k_to_2d(k_td) @ V
    mean = jnp.einsum("mj,sj,jc->smc", ktd_V, -_phi(lam, s), vy)
  mean = _out_from_2d(mean, lay, sample_test, t_shape)
  if not compute_cov:
    return mean
  nngp_dd = _k_to_2d(nngp_dd)
  if k_td is None:
    if kind == "nngp":
      cov = jnp.einsum("ij,sj,kj->sik", V, lam[None] * jnp.exp(-2 * s[:, None] * lam[None]), V)
    else:
      e = jnp.einsum("ij,sj,kj->sik", V, jnp.exp(-s[:, None] * lam[None]), V)
      cov = e @ nngp_dd @ e
  else:
    k_tt = _k_to_2d(nngp_tt)
    if kind == "nngp":
      cov = k_tt[None] - jnp.einsum("mj,sj,lj->sml", ktd_V, -_phi(lam, 2 * s), ktd_V)
    else:
      a = jnp.einsum("mj,sj,kj->smk", ktd_V, -_phi(lam, s), V)  # A_t
      cross = a @ _k_to_2d(nngp_td).T
      cov = k_tt[None] + a @ nngp_dd @ jnp.swapaxes(a, -1, -2) - cross - jnp.swapaxes(cross, -1, -2)
  return Gaussian(mean, _k_from_2d(cov, sample_test, sample_test, t_shape))



def _is_arrays(v) -> bool:
  """Every leaf of ``v`` is an array (NT's test: ``None`` and empty trees pass too)."""
  return all(isinstance(l, (jax.Array, np.ndarray)) for l in jax.tree.leaves(v))


def _is_pair(v) -> bool:
  return isinstance(v, tuple) and len(v) == 2


def _test_kwargs(train: dict, test: dict) -> tuple[dict, dict]:
  """``(test-train, test-test)`` keyword arguments of ``kernel_fn`` (NT's rule).

  Test values replace train ones of the same name; where both are pairs of
  arrays ``(for x1, for x2)``, the test-train call gets ``(test[0], train[0])``
  (e.g. ``pattern``, ``rng``); other values must agree between train and test.
  """
  td, tt = dict(train), dict(train)
  for k, v_tt in test.items():
    v_dd = train.get(k)
    if _is_arrays(v_dd) and _is_arrays(v_tt):
      v_td = (v_tt[0], v_dd[0]) if _is_pair(v_dd) and _is_pair(v_tt) else v_tt
    elif v_dd != v_tt:
      raise ValueError(f"kernel_fn keyword argument {k} differs between the train kernel "
                       f"({v_dd!r}) and the test kernels ({v_tt!r}), which is not supported")
    else:
      v_td = v_tt
    td[k], tt[k] = v_td, v_tt
  return td, tt


def gradient_descent_mse_ensemble(
    kernel_fn: Callable,
    x_train: ArrayLike,
    y_train: ArrayLike,
    learning_rate: float = 1.,
    diag_reg: float = 0.,
    diag_reg_absolute_scale: bool = False,
    trace_axes: Axes = (-1,),
    *,
    normalization: float | None = None,
    **kernel_fn_kwargs,
) -> Callable:
  r"""Output distribution over random inits of infinite-width nets trained by gradient flow on MSE.

  Lee et al. (2019), eqs. 15-16. With :math:`K` the NNGP, :math:`\Theta` the
  kernel of the trained parameters (``'ntk'``: all layers, :math:`\Theta` =
  NTK; ``'nngp'``: readout only, :math:`\Theta = K`), :math:`E_t =
  e^{-\Theta\tau/N}` (:math:`\tau` = ``learning_rate * t``, :math:`N` =
  ``normalization``, default ``y_train.size``) and :math:`A_t =
  \Theta_{*d}\Theta^{-1}(I - E_t)`, the test outputs are Gaussian with

  .. math::
    \mu_t = A_t\, y, \qquad
    \Sigma_t = K_{**} + A_t K A_t^\top - (A_t K_{d*} + \text{h.c.}),

  which for ``'nngp'`` simplifies to :math:`K_{**} - K_{*d}K^{-1}(I -
  E_{2t})K_{d*}`; on the train set :math:`\mu_t = (I - E_t)y`,
  :math:`\Sigma_t = E_t K E_t`. ``t=None`` is :func:`gp_inference`.

  Args:
    kernel_fn: ``kernel_fn(x1, x2, get, **kwargs)`` (``x2=None``: ``x1``
      with itself); a string ``get`` returns an array, a tuple an object with
      ``nngp``/``ntk`` attributes (NT's convention).
    x_train: train inputs.
    y_train: train targets.
    learning_rate: step size; ``t`` counts steps.
    diag_reg: diagonal regularizer (see :func:`gradient_descent_mse`).
    diag_reg_absolute_scale: absolute or trace-relative regularizer.
    trace_axes: axes of the outputs along which kernels are
      :math:`\Theta \otimes I`.
    normalization: loss normalization (see :func:`gradient_descent_mse`).
    **kernel_fn_kwargs: passed to ``kernel_fn`` for the train-train kernel
      and, unless ``predict_fn`` is given others of the same name, for the
      test-test one; for test-train, pairs of arrays ``(for x1, for x2)``
      (e.g. ``pattern``) combine test and train halves (NT's rule, see
      :func:`_test_kwargs`).

  Returns:
    ``predict_fn(t=None, x_test=None, get=None, compute_cov=False, **kwargs)`` returning
    the mean (or :class:`Gaussian`) for a string ``get``, else a
    ``Gaussians`` namedtuple; leading axes ``jnp.shape(t)``. ``x_test=None``
    predicts on the train set.
  """
  y_train = jnp.asarray(y_train)
  lay = _layout(y_train, trace_axes)
  norm = y_train.size if normalization is None else normalization
  k_dd_cache: dict[str, Array] = {}

  def train_kernels(names: tuple[str, ...]) -> _Kernel:
    missing = tuple(g for g in names if g not in k_dd_cache)
    if missing:
      with jax.ensure_compile_time_eval():
        if len(missing) == 1:
          k_dd_cache[missing[0]] = kernel_fn(x_train, None, missing[0], **kernel_fn_kwargs)
        else:
          ks = kernel_fn(x_train, None, missing, **kernel_fn_kwargs)
          k_dd_cache.update({g: getattr(ks, g) for g in missing})
      for g in missing:
        _check_kernel(k_dd_cache[g], lay, f"kernel_fn(x_train, None, {g!r})")
    return _Kernel(**{g: k_dd_cache[g] for g in names})

  @_memo
  def eig(g):
    k = jnp.asarray(getattr(train_kernels((g,)), g))
    return _eigh_regularized(k, diag_reg, absolute=diag_reg_absolute_scale)

  @_memo
  def predict_inf(names):
    return gp_inference(train_kernels(names), y_train, diag_reg, diag_reg_absolute_scale,
                        lay.trace_axes)

  def predict_fn(t=None, x_test=None, get: Get = None, compute_cov: bool = False,
                 **kernel_fn_test_test_kwargs):
    """Mean [and covariance] of the ensemble's outputs on ``x_test`` at time[s] ``t``.

    Args:
      t: steps (scalar or array; ``None``: infinity).
      x_test: test inputs (``None``: the train set, unregularized).
      get: ``'nngp'``, ``'ntk'``, a tuple, or ``None`` (both).
      compute_cov: also return the covariance.
      **kernel_fn_test_test_kwargs: ``kernel_fn`` keyword arguments for the
        test inputs (e.g. ``pattern=(p_test, p_test)``), see above.

    Returns:
      A mean or :class:`Gaussian` (string ``get``), else a ``Gaussians`` namedtuple.
    """
    single, names = _canonicalize_get(get, ("nngp", "ntk"))
    needed = tuple(g for g in ("nngp", "ntk")
                   if g in names or (g == "nngp" and compute_cov))
    kdd = train_kernels(needed)
    if x_test is None:
      k_td, nngp_tt, sample_test = None, (True if compute_cov else None), lay.sample_shape
    else:
      kw_td, kw_tt = _test_kwargs(kernel_fn_kwargs, kernel_fn_test_test_kwargs)
      k_td = kernel_fn(x_test, x_train, needed if len(needed) > 1 else needed[0], **kw_td)
      if len(needed) == 1:
        k_td = _Kernel(**{needed[0]: k_td})
      sample_test = _check_kernel(getattr(k_td, needed[0]), lay, "kernel_fn(x_test, x_train)",
                                  square=False)
      nngp_tt = kernel_fn(x_test, None, "nngp", **kw_tt) if compute_cov else None

    if t is None:
      return predict_inf(needed)(get=names if not single else names[0],
                                 k_test_train=k_td, k_test_test=nngp_tt)

    s = jnp.asarray(t) * learning_rate / norm
    out = {}
    for g in names:
      kg_td = None if k_td is None else jnp.asarray(getattr(k_td, g))
      cov_args = (None, None, None) if not compute_cov else (
          jnp.asarray(kdd.nngp), None if k_td is None else jnp.asarray(k_td.nngp),
          None if k_td is None else jnp.asarray(nngp_tt))
      out[g] = _ensemble_flow(s, *eig(g), y_train, kg_td, *cov_args, kind=g, lay=lay,
                              sample_test=sample_test, compute_cov=compute_cov)
    return _pack(out, single, names)

  return predict_fn
