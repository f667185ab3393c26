r"""Kernel predictions: GP inference, closed-form MSE gradient flow, linearization.

The names, signatures and conventions are those of neural-tangents'
``nt.predict`` (0.6.5) and ``nt.linearize`` / ``nt.taylor_expand``:

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

and :func:`max_learning_rate` gives ``train.mse``'s limit with
``y_train_size=n``.

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
from jax.experimental import ode
from jax.typing import ArrayLike

Array = jax.Array
Axes = int | Sequence[int]
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


class ODEState(NamedTuple):
  """State of the function-space ODE solved by :func:`gradient_descent`.

  Attributes:
    fx_train: train-set outputs.
    fx_test: test-set outputs (``None``: not tracked).
    qx_train: train-set auxiliary variable (velocity, with momentum).
    qx_test: test-set auxiliary variable.
  """
  fx_train: Array | None = None
  fx_test: Array | None = None
  qx_train: Array | None = None
  qx_test: Array | None = None


_Kernel = collections.namedtuple("Kernel", "nngp ntk", defaults=(None, None))


@functools.lru_cache(maxsize=None)
def _gaussians_type(fields: tuple[str, ...]):
  return collections.namedtuple("Gaussians", fields)


# ----------------------------------------------------------------------------
# Layout helpers: NT's zipped kernels <-> 2-D matrices, outputs <-> (N, T).


class _Layout(NamedTuple):
  """How ``y_train``'s axes split into kernel ("sample") axes and traced axes."""
  ndim: int
  trace_axes: tuple[int, ...]  # non-negative, sorted
  sample_shape: tuple[int, ...]  # y_train.shape without trace_axes
  trace_shape: tuple[int, ...]  # y_train.shape at trace_axes

  def kernel_shape(self, sample_1, sample_2=None) -> tuple[int, ...]:
    sample_2 = self.sample_shape if sample_2 is None else sample_2
    return tuple(d for pair in zip(sample_1, sample_2) for d in pair)


def _layout(y_train: Array, trace_axes: Axes) -> _Layout:
  ndim = y_train.ndim
  if ndim == 0:
    raise ValueError("y_train must have at least one (batch) axis, got a scalar")
  axes = (trace_axes,) if isinstance(trace_axes, int) else tuple(trace_axes)
  for a in axes:
    if not -ndim <= a < ndim:
      raise ValueError(f"trace_axes {tuple(axes)} out of range for y_train of shape "
                       f"{y_train.shape}")
  axes = tuple(sorted({a % ndim for a in axes}))
  if 0 in axes:
    raise ValueError("trace_axes must not contain the batch axis 0 of y_train")
  sample = tuple(d for i, d in enumerate(y_train.shape) if i not in axes)
  trace = tuple(y_train.shape[a] for a in axes)
  return _Layout(ndim, axes, sample, trace)


def _out_to_2d(f: Array, lay: _Layout) -> Array:
  """``f`` of shape ``(*sample, *trace interleaved)`` -> ``(prod sample, prod trace)``."""
  f = jnp.moveaxis(f, lay.trace_axes, tuple(range(-len(lay.trace_axes), 0)))
  return f.reshape((-1, math.prod(lay.trace_shape)))


def _out_from_2d(f: Array, lay: _Layout, sample_shape, lead=()) -> Array:
  """Inverse of :func:`_out_to_2d`; ``f`` has shape ``(*lead, N, T)``."""
  f = f.reshape(tuple(lead) + tuple(sample_shape) + lay.trace_shape)
  nl, nt = len(lead), len(lay.trace_axes)
  src = tuple(range(f.ndim - nt, f.ndim))
  return jnp.moveaxis(f, src, tuple(nl + a for a in lay.trace_axes))


def _k_to_2d(k: Array) -> Array:
  """Zipped ``(a1, b1, a2, b2, ...)`` -> ``(a1 a2 ..., b1 b2 ...)``."""
  h = k.ndim // 2
  k = jnp.moveaxis(k, tuple(range(1, k.ndim, 2)), tuple(range(h, k.ndim)))
  return k.reshape((math.prod(k.shape[:h]), -1))


def _k_from_2d(m: Array, shape_1, shape_2, lead=()) -> Array:
  """Inverse of :func:`_k_to_2d` for ``m`` of shape ``(*lead, A, B)``."""
  nl, h = len(lead), len(shape_1)
  m = m.reshape(tuple(lead) + tuple(shape_1) + tuple(shape_2))
  return jnp.moveaxis(m, tuple(range(nl + h, nl + 2 * h)), tuple(range(nl + 1, nl + 2 * h, 2)))


def _check_kernel(k, lay: _Layout, name: str, square: bool = True,
                  sample_1=None) -> tuple[int, ...]:
  """Checks a kernel's zipped shape; returns its first (test) sample shape."""
  shape = tuple(jnp.shape(k))
  m = len(lay.sample_shape)
  if len(shape) != 2 * m or shape[1::2] != lay.sample_shape:
    what = (f"{lay.kernel_shape(lay.sample_shape)}" if square else
            f"(n_test, {lay.sample_shape[0]}" + ", r, r" * (m - 1) + ")")
    raise ValueError(
        f"{name} must have shape {what} (zip of y_train.shape {lay.sample_shape + lay.trace_shape}"
        f" without trace_axes {lay.trace_axes}), got {shape}")
  first = shape[::2]
  if square and first != lay.sample_shape:
    raise ValueError(f"{name} must be square with shape {lay.kernel_shape(lay.sample_shape)},"
                     f" got {shape}")
  if sample_1 is not None and first != tuple(sample_1):
    raise ValueError(f"{name} has test shape {first} but the test-train kernel has "
                     f"{tuple(sample_1)}")
  return first


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
  pos = lam > 0
  safe = jnp.where(pos, lam, 1.0)
  s = s[..., None]
  return jnp.where(pos, jnp.expm1(-safe * s) / safe, -s)


# ----------------------------------------------------------------------------
# Jitted kernels of the predictors (one compiled program per call, not one per op).


@functools.partial(jax.jit, static_argnames="absolute")
def _eigh_regularized(k: Array, diag_reg, absolute: bool) -> tuple[Array, Array]:
  """Eigenpairs of the regularized 2-D kernel, eigenvalues clipped at zero (PSD)."""
  evals, evecs = jnp.linalg.eigh(_add_diagonal_regularizer(_k_to_2d(k), diag_reg, absolute))
  return jnp.maximum(evals, 0.), evecs


@functools.partial(jax.jit, static_argnames="absolute")
def _cho_regularized(k: Array, diag_reg, absolute: bool) -> Array:
  """Lower Cholesky factor of the regularized 2-D kernel."""
  return jnp.linalg.cholesky(_add_diagonal_regularizer(_k_to_2d(k), diag_reg, absolute))


def _cho_solve(c: Array, b: Array) -> Array:
  return jsl.cho_solve((c, True), b)


def _init_outputs(y_train, fx_train_0, fx_test_0, lay, sample_test):
  """Broadcast initial outputs and the 2-D train form (zeros for ``None``)."""
  dtype = jnp.result_type(y_train, float)
  if fx_train_0 is not None:
    fx_train_0 = jnp.broadcast_to(fx_train_0, y_train.shape).astype(dtype)
  f0 = (jnp.zeros((math.prod(lay.sample_shape), math.prod(lay.trace_shape)), dtype)
        if fx_train_0 is None else _out_to_2d(fx_train_0, lay))
  if fx_test_0 is not None:
    fx_test_0 = jnp.broadcast_to(fx_test_0, _test_shape(lay, sample_test)).astype(dtype)
  return fx_train_0, fx_test_0, f0


@functools.partial(jax.jit, static_argnames=("lay", "sample_test"))
def _mse_flow_inf(c, y_train, fx_train_0, fx_test_0, k_test_train, lay, sample_test):
  fx_train_0, fx_test_0, f0 = _init_outputs(y_train, fx_train_0, fx_test_0, lay, sample_test)
  fx_train_t = y_train.astype(f0.dtype)
  fx_test_t = None
  if fx_test_0 is not None:
    dfx = _k_to_2d(k_test_train) @ _cho_solve(c, _out_to_2d(y_train, lay) - f0)
    fx_test_t = fx_test_0 + _out_from_2d(dfx, lay, sample_test)
  return fx_train_t, fx_test_t


@functools.partial(jax.jit, static_argnames=("lay", "sample_test"))
def _mse_flow(s, lam, V, y_train, fx_train_0, fx_test_0, k_test_train, lay, sample_test):
  fx_train_0, fx_test_0, f0 = _init_outputs(y_train, fx_train_0, fx_test_0, lay, sample_test)
  t_shape = s.shape
  s = s.reshape(-1)
  lead = tuple(range(len(t_shape)))
  r = V.T @ (f0 - _out_to_2d(y_train, lay))  # the initial residual in the eigenbasis
  fx_train_t = fx_test_t = None
  if fx_train_0 is not None:
    dfx = jnp.einsum("ij,sj,jc->sic", V, jnp.expm1(-s[:, None] * lam), r)
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


def _test_shape(lay: _Layout, sample_test) -> tuple[int, ...]:
  """Shape of test outputs: ``sample_test`` with the trace axes re-inserted."""
  shape = list(sample_test)
  for a, d in zip(lay.trace_axes, lay.trace_shape):
    shape.insert(a, d)
  return tuple(shape)


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
    mean = jnp.einsum("ij,sj,jc->sic", V, -jnp.expm1(-s[:, None] * lam), vy)
  else:
    ktd_V = _k_to_2d(k_td) @ V
    mean = jnp.einsum("mj,sj,jc->smc", ktd_V, -_phi(lam, s), vy)
  mean = _out_from_2d(mean, lay, sample_test, t_shape)
  if not compute_cov:
    return mean
  nngp_dd = _k_to_2d(nngp_dd)
  if k_td is None:
    if kind == "nngp":
      cov = jnp.einsum("ij,sj,kj->sik", V, lam * jnp.exp(-2 * s[:, None] * lam), V)
    else:
      e = jnp.einsum("ij,sj,kj->sik", V, jnp.exp(-s[:, None] * lam), V)
      cov = e @ nngp_dd @ e
  else:
    k_tt = _k_to_2d(nngp_tt)
    if kind == "nngp":
      cov = k_tt - jnp.einsum("mj,sj,lj->sml", ktd_V, -_phi(lam, 2 * s), ktd_V)
    else:
      a = jnp.einsum("mj,sj,kj->smk", ktd_V, -_phi(lam, s), V)  # A_t
      cross = a @ _k_to_2d(nngp_td).T
      cov = k_tt + a @ nngp_dd @ jnp.swapaxes(a, -1, -2) - cross - jnp.swapaxes(cross, -1, -2)
  return Gaussian(mean, _k_from_2d(cov, sample_test, sample_test, t_shape))



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
    **kernel_fn_kwargs: passed unchanged to every ``kernel_fn`` call (unlike
      NT, train and test values are not combined).

  Returns:
    ``predict_fn(t=None, x_test=None, get=None, compute_cov=False)`` returning
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

  def predict_fn(t=None, x_test=None, get: Get = None, compute_cov: bool = False):
    """Mean [and covariance] of the ensemble's outputs on ``x_test`` at time[s] ``t``.

    Args:
      t: steps (scalar or array; ``None``: infinity).
      x_test: test inputs (``None``: the train set, unregularized).
      get: ``'nngp'``, ``'ntk'``, a tuple, or ``None`` (both).
      compute_cov: also return the covariance.

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
      k_td = kernel_fn(x_test, x_train, needed if len(needed) > 1 else needed[0],
                       **kernel_fn_kwargs)
      if len(needed) == 1:
        k_td = _Kernel(**{needed[0]: k_td})
      sample_test = _check_kernel(getattr(k_td, needed[0]), lay, "kernel_fn(x_test, x_train)",
                                  square=False)
      nngp_tt = kernel_fn(x_test, None, "nngp", **kernel_fn_kwargs) if compute_cov else None

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


# ----------------------------------------------------------------------------
# General losses (ODE) and the largest stable learning rate.


def gradient_descent(
    loss: Callable[[Array, Array], Array],
    k_train_train: ArrayLike,
    y_train: ArrayLike,
    learning_rate: float = 1.,
    momentum: float | None = None,
    trace_axes: Axes = (-1,),
) -> Callable:
  r"""Function-space gradient flow [with momentum] on any loss, by an ODE solver.

  Solves :math:`\dot f_{\rm train} = -\Theta\,\nabla_f \mathcal L(f_{\rm train}, y)`,
  :math:`\dot f_{\rm test} = -\Theta_{*d}\nabla_f \mathcal L` in time
  ``learning_rate * t`` (Lee et al. 2019, sec. 2.2). With ``momentum``
  (heavy ball, :math:`\mu`) the continuous limit is solved in time
  ``sqrt(learning_rate) * t``: :math:`\ddot f = -\Theta\nabla\mathcal L -
  \frac{1 - \mu}{\sqrt{\eta}}\dot f` (NT's convention).

  Args:
    loss: ``loss(fx_train, y_train) -> scalar``; e.g. NT's MSE
      ``lambda f, y: 0.5 * jnp.mean((f - y) ** 2)``.
    k_train_train: train-train NTK (zipped layout).
    y_train: train targets.
    learning_rate: step size.
    momentum: ``None`` for plain gradient flow, else the momentum.
    trace_axes: axes along which kernels are :math:`\Theta \otimes I`.

  Returns:
    ``predict_fn(t=None, fx_train_or_state_0=0., fx_test_0=None,
    k_test_train=None)``; ``t`` must be increasing (``None``: infinity, may
    not converge). Passing an :class:`ODEState` returns an :class:`ODEState`.
  """
  y_train = jnp.asarray(y_train)
  k_train_train = jnp.asarray(k_train_train)
  lay = _layout(y_train, trace_axes)
  _check_kernel(k_train_train, lay, "k_train_train")
  k_dd = _k_to_2d(k_train_train)
  dtype = jnp.result_type(k_train_train, y_train)
  grad_loss = jax.grad(lambda f: loss(f, y_train))
  if momentum is not None:
    time_scale = learning_rate ** 0.5
    friction = (momentum - 1.) / time_scale
  else:
    time_scale, friction = learning_rate, None

  def predict_fn(t=None, fx_train_or_state_0=0., fx_test_0=None, k_test_train=None):
    """Outputs (or the full :class:`ODEState`) at increasing time[s] ``t``."""
    is_state = isinstance(fx_train_or_state_0, ODEState)
    if is_state:
      if fx_test_0 is not None:
        raise ValueError("pass fx_test_0 inside the ODEState, not separately")
      state = fx_train_or_state_0
    else:
      if fx_train_or_state_0 is None and fx_test_0 is None:
        raise ValueError("fx_train_0 and fx_test_0 are both None: nothing to predict")
      state = ODEState(fx_train_or_state_0, fx_test_0)
    if state.fx_test is not None and k_test_train is None:
      raise ValueError("fx_test_0 is given but k_test_train is None")
    if momentum is None and (state.qx_train is not None or state.qx_test is not None):
      raise ValueError("got momentum state variables while momentum is None")
    sample_test = None
    if state.fx_test is not None:
      sample_test = _check_kernel(k_test_train, lay, "k_test_train", square=False)
      k_td = _k_to_2d(jnp.asarray(k_test_train))
    test_shape = None if sample_test is None else _test_shape(lay, sample_test)
    fx_train = (jnp.zeros(y_train.shape, dtype) if state.fx_train is None else
                jnp.broadcast_to(state.fx_train, y_train.shape).astype(dtype))
    fx_test = (None if state.fx_test is None else
               jnp.broadcast_to(state.fx_test, test_shape).astype(dtype))
    qx_train = qx_test = None
    if momentum is not None:
      qx_train = (jnp.zeros_like(fx_train) if state.qx_train is None else
                  jnp.broadcast_to(state.qx_train, y_train.shape).astype(dtype))
      if fx_test is not None:
        qx_test = (jnp.zeros_like(fx_test) if state.qx_test is None else
                   jnp.broadcast_to(state.qx_test, test_shape).astype(dtype))
    state0 = ODEState(fx_train, fx_test, qx_train, qx_test)

    def force(f_train):
      g2 = _out_to_2d(grad_loss(f_train), lay)
      d_train = -_out_from_2d(k_dd @ g2, lay, lay.sample_shape)
      d_test = None if fx_test is None else -_out_from_2d(k_td @ g2, lay, sample_test)
      return d_train, d_test

    def rhs(st, _):
      d_train, d_test = force(st.fx_train)
      if momentum is None:
        return ODEState(d_train, d_test)
      d_qtrain = d_train + friction * st.qx_train
      d_qtest = None if d_test is None else d_test + friction * st.qx_test
      return ODEState(st.qx_train, st.qx_test, d_qtrain, d_qtest)

    t_arr = jnp.asarray(jnp.inf if t is None else t, dtype) * time_scale
    t_shape = t_arr.shape
    t_arr = t_arr.reshape(-1)
    # odeint evaluates at ts[0] = the initial time; prepend 0 (or -tiny when t[0] == 0).
    t0 = jnp.where(t_arr[0] == 0, -jnp.finfo(dtype).tiny, 0.).astype(dtype)[None]
    sol = ode.odeint(rhs, state0, jnp.concatenate([t0, t_arr]))
    sol = jax.tree.map(lambda x: x[1:].reshape(t_shape + x.shape[1:]), sol)
    if is_state:
      return sol
    if fx_train_or_state_0 is not None and fx_test_0 is None:
      return sol.fx_train
    if fx_train_or_state_0 is None:
      return sol.fx_test
    return sol.fx_train, sol.fx_test

  return predict_fn


def max_learning_rate(
    ntk_train_train: ArrayLike,
    y_train_size: int | None = None,
    momentum: float = 0.,
    eps: float = 1e-12,
) -> Array:
  r"""Largest stable learning rate of (momentum) GD on MSE in the linearized regime.

  For the loss :math:`\frac{1}{2N}\|f - y\|^2`, GD multiplies the residual by
  :math:`I - \frac{\eta}{N}\Theta`, a contraction iff
  :math:`\eta < 2N/\lambda_{\max}(\Theta)`; with heavy-ball momentum
  :math:`\mu` the bound is :math:`2(1+\mu)N/\lambda_{\max}` (Goh 2017, "Why
  Momentum Really Works").

  Args:
    ntk_train_train: train-train NTK (zipped layout).
    y_train_size: :math:`N`. ``None`` is the kernel's side length (NT: right
      when ``trace_axes=()``); NT's MSE wants ``y_train.size``,
      :func:`jaxtheory.train.mse` wants the number of examples.
    momentum: heavy-ball momentum.
    eps: guards a zero kernel.

  Returns:
    The maximal learning rate (a scalar array).

  >>> import jax.numpy as jnp
  >>> float(max_learning_rate(jnp.array([[2., 0.], [0., 4.]])))
  1.0
  """
  k = jnp.asarray(ntk_train_train)
  if k.ndim % 2 or k.ndim == 0 or k.shape[::2] != k.shape[1::2]:
    raise ValueError(f"ntk_train_train must be a square zipped kernel, got shape {k.shape}")
  k = _k_to_2d(k)
  n = k.shape[0] if y_train_size is None else y_train_size
  lam_max = jnp.linalg.eigvalsh(k)[-1]
  return 2 * (1 + momentum) * n / (lam_max + eps)


# ----------------------------------------------------------------------------
# Linearization.


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
