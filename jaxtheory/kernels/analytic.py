r"""Analytic infinite-width kernels: the NNGP and the NTK of a layer, in closed form.

Every layer of :mod:`jaxtheory.nn` with an infinite-width limit carries a
``kernel(k, ctx) -> k`` map on :class:`Kernel` (the third member of the
``(init, apply, kernel)`` triple); the combinators compose these maps exactly as
they compose ``apply``. :func:`kernel_fn` turns a model or layer into
neural-tangents' ``kernel_fn(x1, x2, get)``. The conventions are those of
neural-tangents 0.6.5 (Novak et al. 2020, "Neural Tangents: Fast and Easy
Infinite Neural Networks in Python"), which the test-suite uses as an oracle:

* the NNGP of channel-wise i.i.d. outputs (Neal 1994; Lee et al. 2018; Matthews
  et al. 2018) and the NTK (Jacot et al. 2018) of ONE output channel;
* ``'ntk'`` parametrization, and the ``'standard'`` one whose NTK grows with the
  finite widths (Sohl-Dickstein et al. 2020, "On the infinite width limit of
  neural networks with a standard parameterization");
* ``nngp`` compares ``x1`` with ``x2``; ``cov1``/``cov2`` hold each input's
  covariance with itself (the diagonal of the batch: ``diagonal_batch=True``);
* convolutional kernels keep the full position-position covariance (Novak et al.
  2019, "Bayesian deep CNNs with many channels are Gaussian processes"; Arora et
  al. 2019, "On exact computation with an infinitely wide neural net"), laid out
  as ``(n1, n2, h, h', w, w', ...)``, or only its diagonal ``(n1, n2, h, w,
  ...)`` when nothing downstream needs the off-diagonal (no pooling): see
  :func:`kernel_fn`.

Nothing here imports :mod:`jaxtheory.nn` (layers and models are duck-typed), so
``nn`` can build on this module.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from jax import lax

Array = jax.Array
KernelMap = Callable[[Any, Any], Any]

_FIELDS = ("nngp", "ntk", "cov1", "cov2")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Kernel:
  """Second moments of a layer's activations in the infinite-width limit.

  Attributes:
    nngp: ``E[f(x1) f(x2)]`` of one channel, shape ``(n1, n2, *S)``.
    ntk: the neural tangent kernel, shaped like ``nngp`` (``None``: not computed).
    cov1: ``E[f(x1)^2]`` per input of ``x1``, shape ``(n1, *S)``.
    cov2: the same for ``x2``, or ``None`` when ``x2`` is ``x1``.
    channels: the finite channel count of the activation (used only by the
      standard parametrization's NTK; may be traced).
    diagonal_spatial: static; ``S = (h, w, ...)`` holds only same-position
      entries, else ``S = (h, h', w, w', ...)`` holds all position pairs.
    is_gaussian: static; the activation is a centred Gaussian process with
      channels i.i.d. (true after a dense or conv layer, false after a
      nonlinearity, a flatten, a channel concatenation or at the input).
    wide: static; the channel axis scales with the swept width (it decides the
      role of the next layer under muP / mean field).
  """
  nngp: Array
  ntk: Array | None
  cov1: Array
  cov2: Array | None
  channels: Any
  diagonal_spatial: bool = dataclasses.field(default=False, metadata=dict(static=True))
  is_gaussian: bool = dataclasses.field(default=False, metadata=dict(static=True))
  wide: bool = dataclasses.field(default=False, metadata=dict(static=True))

  def replace(self, **kw) -> "Kernel":
    return dataclasses.replace(self, **kw)

  @property
  def nspatial(self) -> int:
    """Number of spatial axes of the activation."""
    s = self.nngp.ndim - 2
    return s if self.diagonal_spatial else s // 2

  @property
  def spatial_shape(self) -> tuple[int, ...]:
    """Sizes of the activation's spatial axes."""
    s = self.nngp.shape[2:]
    return s if self.diagonal_spatial else s[::2]


class NeedsFullSpatial(Exception):
  """Raised by a layer that needs off-diagonal spatial covariances (pooling).

  :func:`kernel_fn` catches it while choosing a layout and recomputes with
  ``diagonal_spatial=False``; users only see it when they build a diagonal
  kernel themselves.
  """


def _map(k: Kernel, fn, with_ntk=True) -> Kernel:
  """Applies ``fn(mat, batch_ndim)`` to every covariance (and the NTK if asked)."""
  return k.replace(
      nngp=fn(k.nngp, 2),
      ntk=None if (k.ntk is None or not with_ntk) else fn(k.ntk, 2),
      cov1=fn(k.cov1, 1),
      cov2=None if k.cov2 is None else fn(k.cov2, 1))


def scale(k: Kernel, factor) -> Kernel:
  """Multiplies every covariance and the NTK by ``factor`` (output scaled by ``sqrt(factor)``)."""
  return _map(k, lambda m, _: m * factor)


# ----------------------------------------------------------------------------
# Inputs.


def _cov(x1, x2, diagonal_spatial: bool, same_batch: bool) -> Array:
  """``sum_c x1[i, s, c] x2[j, s', c] / C`` in the kernel layout."""
  ns = x1.ndim - 2
  letters = "defghklmopqrtuvw"
  sp1 = letters[:ns]
  sp2 = sp1 if diagonal_spatial else letters[ns:2 * ns]
  if same_batch:  # one batch axis: i == j
    out = "a" + ("".join(sp1) if diagonal_spatial else "".join(a + b for a, b in zip(sp1, sp2)))
    spec = f"a{sp1}z,a{sp2}z->{out}"
  else:
    out = "ab" + ("".join(sp1) if diagonal_spatial else "".join(a + b for a, b in zip(sp1, sp2)))
    spec = f"a{sp1}z,b{sp2}z->{out}"
  return jnp.einsum(spec, x1, x2, precision=lax.Precision.HIGHEST) / x1.shape[-1]


def inputs_to_kernel(x1: jax.typing.ArrayLike, x2: jax.typing.ArrayLike | None = None, *,
                     diagonal_spatial: bool = False, compute_ntk: bool = True) -> Kernel:
  r"""The kernel of the inputs themselves: ``K(x, x') = <x_s, x'_{s'}> / C``.

  Args:
    x1: inputs ``(n1, *spatial, channels)``.
    x2: inputs ``(n2, *spatial, channels)`` or ``None`` (``x2 = x1``).
    diagonal_spatial: keep only same-position entries.
    compute_ntk: start an NTK (zero: inputs have no parameters).

  Returns:
    A :class:`Kernel` with ``is_gaussian=False`` (inputs are fixed, so a
    nonlinearity cannot act on them before a random layer).
  """
  x1 = jnp.asarray(x1)
  if x1.ndim < 2:
    raise ValueError(f"inputs need a batch and a channel axis, got shape {x1.shape}")
  if not jnp.issubdtype(x1.dtype, jnp.floating):
    x1 = x1.astype(jnp.result_type(float))
  if x2 is not None:
    x2 = jnp.asarray(x2, x1.dtype)
    if x2.shape[1:] != x1.shape[1:]:
      raise ValueError(f"x1 and x2 must agree beyond the batch axis, got {x1.shape} and {x2.shape}")
  nngp = _cov(x1, x1 if x2 is None else x2, diagonal_spatial, False)
  cov1 = _cov(x1, x1, diagonal_spatial, True)
  cov2 = None if x2 is None else _cov(x2, x2, diagonal_spatial, True)
  return Kernel(nngp, jnp.zeros_like(nngp) if compute_ntk else None, cov1, cov2,
                x1.shape[-1], diagonal_spatial, False, False)


# ----------------------------------------------------------------------------
# Spatial bookkeeping.


def _variances(cov: Array, diagonal_spatial: bool) -> Array:
  """Per-position variances ``(n, h, w, ...)`` of a ``cov1``-shaped array."""
  if diagonal_spatial:
    return cov
  for _ in range((cov.ndim - 1) // 2):
    cov = jnp.diagonal(cov, axis1=1, axis2=2)  # appends the diagonal: order is kept
  return cov


def _spread(v: Array, left: bool, batch_ndim: int, diagonal_spatial: bool) -> Array:
  """Reshapes per-position variances ``(n, *s)`` to broadcast against a kernel.

  ``left`` variances index the first batch axis and the first copy of each
  spatial axis; right ones the second. ``batch_ndim`` is that of the target.
  """
  n, sp = v.shape[0], v.shape[1:]
  if batch_ndim == 2:
    lead = (n, 1) if left else (1, n)
  else:
    lead = (n,)
  if diagonal_spatial:
    return v.reshape(lead + sp)
  pairs = sum((((s, 1) if left else (1, s)) for s in sp), ())
  return v.reshape(lead + pairs)


def _pads(size: int, window: int, stride: int, padding: str):
  (lo, hi), = lax.padtype_to_pads((size,), (window,), (stride,), padding)
  return lo, hi, (size + lo + hi - window) // stride + 1


def _conv_average(mat: Array, batch_ndim: int, filter_shape, strides, padding,
                  diagonal_spatial: bool) -> Array:
  r"""Covariance of a conv with i.i.d. shared weights, up to ``W_std^2``.

  For each spatial axis with filter size :math:`f` and stride :math:`s`,
  :math:`K'_{ij} = \frac1f \sum_{d<f} K_{is+d,\,js+d}` over the zero-padded
  input (Novak et al. 2019, eq. 7; NT's ``_conv_kernel_full_spatial``). Only
  same-offset pairs survive because weights at different offsets are
  independent, so diagonal entries depend only on diagonal entries.
  """
  for a, (f, s) in enumerate(zip(filter_shape, strides)):
    axes = (batch_ndim + a,) if diagonal_spatial else (batch_ndim + 2 * a, batch_ndim + 2 * a + 1)
    lo, hi, size = _pads(mat.shape[axes[0]], f, s, padding)
    widths = [(0, 0)] * mat.ndim
    for ax in axes:
      widths[ax] = (lo, hi)
    padded = jnp.pad(mat, widths)
    acc = 0.0
    for d in range(f):
      sl = padded
      for ax in axes:
        sl = lax.slice_in_dim(sl, d, d + (size - 1) * s + 1, s, axis=ax)
      acc = acc + sl
    mat = acc / f
  return mat


def _pool_sum(mat: Array, batch_ndim: int, window_shape, strides, padding) -> Array:
  """Sum over all pairs of positions in each window (both copies of every axis)."""
  dims, st, pads = [1] * batch_ndim, [1] * batch_ndim, [(0, 0)] * batch_ndim
  for a, (w, s) in enumerate(zip(window_shape, strides)):
    lo, hi, _ = _pads(mat.shape[batch_ndim + 2 * a], w, s, padding)
    dims += [w, w]
    st += [s, s]
    pads += [(lo, hi), (lo, hi)]
  return lax.reduce_window(mat, jnp.zeros((), mat.dtype), lax.add, dims, st, pads)


# ----------------------------------------------------------------------------
# Linear layers.


def _sigma(W_std, ctx):
  return W_std * getattr(ctx, "init_scale", 1.0)


_NO_NTK = ("{where}: no kernel limit: feature learning. The NTK of the {p!r} parametrization "
           "does not converge to a fixed kernel at infinite width (its features move); ask "
           "for get='nngp', or use 'sp'/'ntk' for the NTK.")


def _check_ntk_allowed(k: Kernel, parametrization: str, where: str):
  if k.ntk is not None and parametrization in ("mup", "mf"):
    raise ValueError(_NO_NTK.format(where=where, p=parametrization))


def affine(W_std: float, b_std: float | None, out_channels: Callable[[Any], Any],
           out_wide: bool, parametrization: str | None = None,
           filter_shape: Sequence[int] = (), strides: Sequence[int] = (),
           padding: str = "VALID", name: str = "dense") -> KernelMap:
  r"""Kernel map of a dense (``filter_shape=()``) or convolutional layer.

  With :math:`\sigma = W_{std}\cdot` ``ctx.init_scale`` and :math:`\mathcal A`
  the identity (dense) or the conv average of :func:`_conv_average`
  (Lee et al. 2018, eq. 4; Novak et al. 2019):

  .. math::
    K' = \sigma^2 \mathcal A(K) + b_{std}^2,\qquad
    \Theta' = \begin{cases}
      K' + \sigma^2 \mathcal A(\Theta) & \text{'ntk' (Jacot et al. 2018)}\\
      N_{in} \mathcal A(K) + \sigma^2 \mathcal A(\Theta) + [b] & \text{'sp'}
    \end{cases}

  where :math:`N_{in}` is the finite fan-in (input channels times filter size)
  and :math:`[b]` is 1 when the layer has a bias (Sohl-Dickstein et al. 2020).
  Under ``'mup'``/``'mf'`` the NNGP of hidden layers is the same, a readout
  (wide input, fixed output) contributes only its bias (its weight variance is
  ``O(1/width)``), and the NTK has no limit (a ``ValueError``).

  Args:
    W_std: weight scale.
    b_std: bias scale or ``None`` (no bias).
    out_channels: ``ctx -> `` the output's finite channel count.
    out_wide: the output scales with the swept width.
    parametrization: overrides ``ctx.parametrization``.
    filter_shape: conv filter (empty for dense).
    strides: conv strides.
    padding: ``'SAME'`` or ``'VALID'``.
    name: layer name for error messages.
  """
  filter_shape, strides = tuple(filter_shape), tuple(strides)
  receptive = math.prod(filter_shape)

  def kernel(k: Kernel, ctx) -> Kernel:
    p = parametrization or getattr(ctx, "parametrization", "sp")
    _check_ntk_allowed(k, p, name)
    if k.nspatial != len(filter_shape) and filter_shape:
      raise ValueError(f"{name}: a {len(filter_shape)}D filter needs {len(filter_shape)} "
                       f"spatial axes, the input kernel has {k.nspatial}")
    lin = ((lambda m, bn: _conv_average(m, bn, filter_shape, strides, padding, k.diagonal_spatial))
           if filter_shape else (lambda m, bn: m))
    sigma2 = _sigma(W_std, ctx) ** 2
    readout = k.wide and not out_wide
    if p in ("mup", "mf") and readout:
      sigma2 = 0.0
    b2 = 0.0 if b_std is None else b_std ** 2
    lk = _map(k, lin)
    out = _map(lk, lambda m, _: sigma2 * m + b2, with_ntk=False)
    ntk = None
    if k.ntk is not None:
      if p == "sp":
        fan_in = k.channels * receptive
        ntk = fan_in * lk.nngp + sigma2 * lk.ntk + (0.0 if b_std is None else 1.0)
      else:
        ntk = out.nngp + sigma2 * lk.ntk
    return out.replace(ntk=ntk, channels=out_channels(ctx), is_gaussian=True, wide=out_wide)

  return kernel


def flatten() -> KernelMap:
  r"""Flatten: channels absorb the positions, so :math:`K' = \mathrm{mean}_s K_{ss}`.

  The output channels are no longer identically distributed, so the result is
  not Gaussian-i.i.d.: a dense layer must follow before a nonlinearity (as in NT).
  """

  def kernel(k: Kernel, ctx) -> Kernel:
    del ctx

    def trace(m, bn):
      if k.diagonal_spatial:
        return jnp.mean(m, axis=tuple(range(bn, m.ndim)))
      while m.ndim > bn:
        m = jnp.trace(m, axis1=-2, axis2=-1) / m.shape[-1]
      return m

    return _map(k, trace).replace(channels=k.channels * math.prod(k.spatial_shape),
                                  diagonal_spatial=False, is_gaussian=False)

  return kernel


def avg_pool(window_shape: Sequence[int], strides: Sequence[int], padding: str) -> KernelMap:
  r"""Average pooling normalized by the window size (NT's ``normalize_edges=False``).

  :math:`K'_{ij} = \frac{1}{|w|^2}\sum_{d, d' \in w} K_{is+d,\,js+d'}` over the
  zero-padded input: needs the full spatial covariance.
  """
  window_shape, strides = tuple(window_shape), tuple(strides)
  norm = math.prod(window_shape) ** 2

  def kernel(k: Kernel, ctx) -> Kernel:
    del ctx
    if k.diagonal_spatial:
      raise NeedsFullSpatial("avg_pool")
    if k.nspatial != len(window_shape):
      raise ValueError(f"avg_pool: a {len(window_shape)}D window needs {len(window_shape)} "
                       f"spatial axes, the input kernel has {k.nspatial}")
    return _map(k, lambda m, bn: _pool_sum(m, bn, window_shape, strides, padding) / norm)

  return kernel


def global_avg_pool() -> KernelMap:
  r"""Global average pooling: :math:`K' = \mathrm{mean}_{s, s'} K_{ss'}`."""

  def kernel(k: Kernel, ctx) -> Kernel:
    del ctx
    if k.nspatial == 0:
      return k
    if k.diagonal_spatial:
      raise NeedsFullSpatial("global_avg_pool")
    return _map(k, lambda m, bn: jnp.mean(m, axis=tuple(range(bn, m.ndim))))

  return kernel


def take_last() -> KernelMap:
  """Keeps the last position of a sequence: ``K' = K[..., T-1, T-1]``."""

  def kernel(k: Kernel, ctx) -> Kernel:
    del ctx
    if k.nspatial != 1:
      raise ValueError(f"take_last needs one sequence axis, the kernel has {k.nspatial}")
    idx = (Ellipsis, -1) if k.diagonal_spatial else (Ellipsis, -1, -1)
    return _map(k, lambda m, _: m[idx]).replace(diagonal_spatial=False)

  return kernel


def layer_norm(eps: float = 1e-12, affine: bool = False) -> KernelMap:
  r"""Layer norm over the channel axis of a centred Gaussian activation.

  In the limit the channel mean vanishes and the channel variance is
  :math:`K_{ss}(x)`, so (NT's ``LayerNorm``; Ba et al. 2016)

  .. math:: K'_{ss'}(x, x') = \frac{K_{ss'}(x, x')}{\sqrt{(\epsilon + K_{ss}(x))(\epsilon + K_{s's'}(x'))}}

  and the NTK is divided by the same factor. With ``affine=True`` the gain
  (initially 1) and bias (initially 0) are trained too and add
  :math:`K' + 1` to the NTK.
  """

  def kernel(k: Kernel, ctx) -> Kernel:
    if not k.is_gaussian:
      raise ValueError("layer_norm needs a centred Gaussian input (a dense or conv layer "
                       "right before it); its kernel after a nonlinearity has no closed form")
    if affine and k.ntk is not None:
      _check_ntk_allowed(k, getattr(ctx, "parametrization", "sp"), "layer_norm")
    ds = k.diagonal_spatial
    v1 = _variances(k.cov1, ds) + eps
    v2 = v1 if k.cov2 is None else _variances(k.cov2, ds) + eps
    d12 = jnp.sqrt(_spread(v1, True, 2, ds) * _spread(v2, False, 2, ds))
    d11 = jnp.sqrt(_spread(v1, True, 1, ds) * _spread(v1, False, 1, ds))
    d22 = None if k.cov2 is None else jnp.sqrt(_spread(v2, True, 1, ds) * _spread(v2, False, 1, ds))
    nngp = k.nngp / d12
    ntk = None if k.ntk is None else k.ntk / d12
    if affine and ntk is not None:
      ntk = ntk + nngp + 1.0
    return k.replace(nngp=nngp, ntk=ntk, cov1=k.cov1 / d11,
                     cov2=None if k.cov2 is None else k.cov2 / d22)

  return kernel


# ----------------------------------------------------------------------------
# Nonlinearities: T(c, q1, q2) = (E[f(u) f(v)], E[f'(u) f'(v)]) for
# (u, v) ~ N(0, [[q1, c], [c, q2]]). The NTK follows from Price's theorem:
# dT/dc = E[f'(u) f'(v)], so Theta' = Theta * E[f' f'] (Jacot et al. 2018).

Transform = Callable[[Array, Array, Array, bool], tuple[Array, Array | None]]


def _safe_sqrt(x):
  return jnp.sqrt(jnp.maximum(x, 0.0))


def elementwise(transform: Transform, name: str, keeps_gaussian: bool = False) -> KernelMap:
  """Kernel map of an elementwise nonlinearity given its dual ``transform``.

  Args:
    transform: ``(c, q1, q2, need_dot) -> (E[f f], E[f' f'] or None)``, all
      broadcasting arrays.
    name: layer name for error messages.
    keeps_gaussian: the map is linear (the identity), so the output is still
      a centred Gaussian.
  """

  def kernel(k: Kernel, ctx) -> Kernel:
    del ctx
    if not k.is_gaussian:
      raise ValueError(
          f"{name}: its kernel needs a centred Gaussian input with i.i.d. channels, i.e. a "
          "dense or conv layer right before it (not the raw inputs, a flatten, a channel "
          "concatenation or another nonlinearity)")
    ds = k.diagonal_spatial
    v1 = _variances(k.cov1, ds)
    v2 = v1 if k.cov2 is None else _variances(k.cov2, ds)
    nngp, dot = transform(k.nngp, _spread(v1, True, 2, ds), _spread(v2, False, 2, ds),
                          k.ntk is not None)
    cov1, _ = transform(k.cov1, _spread(v1, True, 1, ds), _spread(v1, False, 1, ds), False)
    cov2 = None
    if k.cov2 is not None:
      cov2, _ = transform(k.cov2, _spread(v2, True, 1, ds), _spread(v2, False, 1, ds), False)
    ntk = None if k.ntk is None else k.ntk * dot
    return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2,
                     is_gaussian=k.is_gaussian and keeps_gaussian)

  return kernel


def identity() -> KernelMap:
  """The identity: every kernel unchanged (still Gaussian)."""
  return lambda k, ctx: k


def ab_relu(a: float, b: float) -> KernelMap:
  r"""``a min(x, 0) + b max(x, 0)``: the arc-cosine kernel of degree 1 (Cho & Saul 2009).

  With :math:`\theta = \arccos(c / \sqrt{q_1 q_2})`,

  .. math::
    T = \frac{(a-b)^2}{2\pi}\sqrt{q_1q_2 - c^2}
        + \Big(\frac{a^2+b^2}{2} - \frac{(a-b)^2}{2\pi}\theta\Big) c,\qquad
    \dot T = \frac{a^2+b^2}{2} - \frac{(a-b)^2}{2\pi}\theta .
  """

  def transform(c, q1, q2, need_dot):
    root = _safe_sqrt(q1 * q2 - c ** 2)
    # theta = pi/2 where both vanish (zero variance), as NT does.
    theta = jnp.where((root == 0) & (c == 0), jnp.pi / 2, jnp.arctan2(root, c))
    factor = (a - b) ** 2 / (2 * jnp.pi)
    dot = (a ** 2 + b ** 2) / 2 - factor * theta
    return factor * root + dot * c, (dot if need_dot else None)

  return elementwise(transform, "ab_relu")


def relu() -> KernelMap:
  """``max(x, 0)``: :func:`ab_relu` with ``a=0, b=1`` (Cho & Saul 2009)."""
  return ab_relu(0.0, 1.0)


def erf(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> KernelMap:
  r"""``a erf(b x) + c`` (Williams 1997, "Computing with infinite networks").

  With :math:`\tilde q = b^2 q`, :math:`\tilde c = b^2 c_{12}`:
  :math:`T = a^2 \frac{2}{\pi}\arcsin\frac{2\tilde c}{\sqrt{(1+2\tilde q_1)(1+2\tilde q_2)}} + c^2`,
  :math:`\dot T = a^2 b^2 \frac{4}{\pi}\big((1+2\tilde q_1)(1+2\tilde q_2) - 4\tilde c^2\big)^{-1/2}`.
  """
  shift = c

  def transform(cc, q1, q2, need_dot):
    cc, q1, q2 = b ** 2 * cc, b ** 2 * q1, b ** 2 * q2
    prod = (1 + 2 * q1) * (1 + 2 * q2)
    root = _safe_sqrt(prod - 4 * cc ** 2)
    nngp = a ** 2 * (2 / jnp.pi) * jnp.arctan2(2 * cc, root) + shift ** 2
    dot = a ** 2 * b ** 2 * (4 / jnp.pi) / root if need_dot else None
    return nngp, dot

  return elementwise(transform, "erf")


def gelu() -> KernelMap:
  r"""Exact GELU ``x Phi(x)`` (Tsuchida, Pearce et al. 2021, arXiv:2002.08517).

  With :math:`\Delta^2 = (1+q_1)(1+q_2) - c^2`,

  .. math::
    T = \frac c4 + \frac{1}{2\pi}\Big(c \arctan\frac{c}{\Delta}
        + \frac{c^2 + q_1 q_2 \Delta^2}{(1+q_1)(1+q_2)\Delta}\Big),

  and :math:`\dot T = \partial T/\partial c` (Price's theorem), taken by
  forward-mode differentiation of this closed form.
  """

  def nngp_fn(c, q1, q2):
    pp1 = (1 + q1) * (1 + q2)
    delta2 = pp1 - c ** 2
    delta = _safe_sqrt(delta2)
    out = (c ** 2 + q1 * q2 * delta2) / (pp1 * delta) + c * jnp.arctan2(c, delta)
    return out / (2 * jnp.pi) + c / 4

  def transform(c, q1, q2, need_dot):
    c, q1, q2 = jnp.broadcast_arrays(c, q1, q2)
    if not need_dot:
      return nngp_fn(c, q1, q2), None
    return jax.jvp(lambda c_: nngp_fn(c_, q1, q2), (c,), (jnp.ones_like(c),))

  return elementwise(transform, "gelu")


def sin(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> KernelMap:
  r"""``a sin(b x + c)``: from :math:`\sin u \sin v = \frac12(\cos(u-v) - \cos(u+v))`,

  .. math::
    T = \frac{a^2}{2}\Big(e^{-\frac{b^2}{2}(q_1+q_2-2c_{12})}
        - \cos(2c)\, e^{-\frac{b^2}{2}(q_1+q_2+2c_{12})}\Big),\quad
    \dot T = \frac{a^2b^2}{2}\Big(e^{-\frac{b^2}{2}(q_1+q_2-2c_{12})}
        + \cos(2c)\, e^{-\frac{b^2}{2}(q_1+q_2+2c_{12})}\Big).
  """
  phase = c

  def transform(cc, q1, q2, need_dot):
    s = q1 + q2
    e1 = jnp.exp(b ** 2 * (cc - s / 2))
    e2 = jnp.exp(-b ** 2 * (cc + s / 2)) * np.cos(2 * phase)
    nngp = a ** 2 / 2 * (e1 - e2)
    return nngp, (a ** 2 * b ** 2 / 2 * (e1 + e2) if need_dot else None)

  return elementwise(transform, "sin")


def cos(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> KernelMap:
  """``a cos(b x + c) = a sin(b x + c + pi/2)``; see :func:`sin`."""
  return sin(a, b, c + np.pi / 2)


def sign() -> KernelMap:
  r"""``sign(x)``: :math:`T = 1 - 2\theta/\pi` (arc-cosine kernel of degree 0, times 4 minus 1).

  :math:`\dot T = 0` away from ``c = +-sqrt(q1 q2)`` (NT's convention: the
  NTK is zero).
  """

  def transform(c, q1, q2, need_dot):
    root = _safe_sqrt(q1 * q2 - c ** 2)
    theta = jnp.where((root == 0) & (c == 0), jnp.pi / 2, jnp.arctan2(root, c))
    return 1 - 2 * theta / jnp.pi, (jnp.zeros_like(c) if need_dot else None)

  return elementwise(transform, "sign")


def exp(a: float = 1.0, b: float = 1.0) -> KernelMap:
  r"""``a exp(b x)``: :math:`T = a^2 e^{b^2 (q_1 + q_2)/2 + b^2 c}`, :math:`\dot T = b^2 T`."""

  def transform(c, q1, q2, need_dot):
    t = a ** 2 * jnp.exp(b ** 2 * ((q1 + q2) / 2 + c))
    return t, (b ** 2 * t if need_dot else None)

  return elementwise(transform, "exp")


def exp_normalized(gamma: float = 1.0, shift: float = -1.0, do_clip: bool = False) -> KernelMap:
  r"""The normalized Gaussian kernel (Shankar et al. 2020, "Neural kernels without tangents").

  :math:`T = \sqrt{q_1q_2}\,\exp\big(\gamma(\rho + \text{shift})\big)` with
  :math:`\rho = c/\sqrt{q_1 q_2}` (clipped to [-1, 1] if ``do_clip``),
  :math:`\dot T = \gamma \exp(\gamma(\rho + \text{shift}))`. Kernel-only (no
  finite-width function has this dual).
  """

  def transform(c, q1, q2, need_dot):
    root = jnp.sqrt(jnp.maximum(q1 * q2, 1e-30))
    rho = c / root
    if do_clip:
      rho = jnp.clip(rho, -1, 1)
    e = jnp.exp(gamma * (rho + shift))
    return root * e, (gamma * e if need_dot else None)

  return elementwise(transform, "exp_normalized")


def rbf(gamma: float = 1.0) -> KernelMap:
  r"""``sqrt(2) sin(sqrt(2 gamma) x + pi/4)``, the dual of the RBF kernel (Rahimi & Recht 2007).

  :math:`T = e^{-\gamma(q_1 + q_2 - 2c)}`, :math:`\dot T = 2\gamma T`.
  """

  def transform(c, q1, q2, need_dot):
    t = jnp.exp(gamma * (2 * c - q1 - q2))
    return t, (2 * gamma * t if need_dot else None)

  return elementwise(transform, "rbf")


def _monomial_moment(n: int, c, prod):
  r""":math:`E[u^n v^n] = \sum_{j \equiv n (2)} \frac{(n!)^2}{j!\,((n-j)/2)!^2\,2^{n-j}} c^j (q_1q_2)^{(n-j)/2}`.

  The Hermite expansion of :math:`x^n` and Mehler's formula (Isserlis' theorem).
  """
  if n < 0:
    return jnp.zeros_like(c)
  out = 0.0
  for j in range(n % 2, n + 1, 2):
    m = (n - j) // 2
    coef = math.factorial(n) ** 2 / (math.factorial(j) * math.factorial(m) ** 2 * 2 ** (n - j))
    out = out + coef * c ** j * prod ** m
  return out + jnp.zeros_like(c)


def monomial(degree: int) -> KernelMap:
  """``x**degree``: Gaussian moments in closed form (see :func:`_monomial_moment`).

  :math:`\\dot T = n^2 E[u^{n-1} v^{n-1}]`.
  """
  _check_degree(degree)

  def transform(c, q1, q2, need_dot):
    prod = q1 * q2
    t = _monomial_moment(degree, c, prod)
    return t, (degree ** 2 * _monomial_moment(degree - 1, c, prod) if need_dot else None)

  return elementwise(transform, f"monomial({degree})")


def _check_degree(degree):
  if not isinstance(degree, int) or isinstance(degree, bool) or degree < 0:
    raise ValueError(f"degree must be a non-negative integer, got {degree!r}")


def _arccos_kernel(n: int, rho):
  r"""Normalized arc-cosine kernel :math:`\kappa_n(\rho) = E[\sigma_n(u)\sigma_n(v)]` of unit Gaussians.

  :math:`\sigma_n(x) = \mathbb 1[x \ge 0] x^n`, so :math:`\kappa_n = J_n(\theta)/2\pi`
  (Cho & Saul 2009) with :math:`\kappa_0 = (\pi-\theta)/2\pi`,
  :math:`\kappa_1 = (\sin\theta + (\pi-\theta)\cos\theta)/2\pi` and, by
  Gaussian integration by parts, for :math:`n \ge 2`
  :math:`\kappa_n = (2n-1)\rho\,\kappa_{n-1} + (n-1)^2(1-\rho^2)\kappa_{n-2}`.
  """
  rho = jnp.clip(rho, -1.0, 1.0)
  theta = jnp.arccos(rho)
  k0 = (jnp.pi - theta) / (2 * jnp.pi)
  if n == 0:
    return k0
  k1 = (_safe_sqrt(1 - rho ** 2) + (jnp.pi - theta) * rho) / (2 * jnp.pi)
  for m in range(2, n + 1):
    k0, k1 = k1, (2 * m - 1) * rho * k1 + (m - 1) ** 2 * (1 - rho ** 2) * k0
  return k1


def rectified_monomial(degree: int) -> KernelMap:
  r"""``(x >= 0) x**degree``: the arc-cosine kernel of degree n (Cho & Saul 2009).

  :math:`T = (q_1q_2)^{n/2}\kappa_n(\rho)`, :math:`\dot T = n^2 (q_1q_2)^{(n-1)/2}\kappa_{n-1}(\rho)`
  (zero for ``n = 0``, as in NT), with :math:`\kappa_n` from :func:`_arccos_kernel`.
  """
  _check_degree(degree)

  def transform(c, q1, q2, need_dot):
    prod = q1 * q2
    root = _safe_sqrt(prod)
    rho = jnp.where(root > 0, c / jnp.where(root > 0, root, 1.0), 0.0)
    t = root ** degree * _arccos_kernel(degree, rho)
    dot = None
    if need_dot:
      dot = (jnp.zeros_like(t) if degree == 0 else
             degree ** 2 * root ** (degree - 1) * _arccos_kernel(degree - 1, rho))
    return t, dot

  return elementwise(transform, f"rectified_monomial({degree})")


def _derivative(fn):
  return lambda x: jax.jvp(fn, (x,), (jnp.ones_like(x),))[1]


def gauss_hermite(fn: Callable, deg: int = 25, df: Callable | None = None,
                  name: str = "elementwise") -> KernelMap:
  r"""Any elementwise ``fn`` by 2D Gauss-Hermite quadrature (NT's ``ElementwiseNumerical``).

  Writing :math:`u = \sqrt{2q_1}\,x`, :math:`v = \frac{c}{\sqrt{q_1/2}}x + \sqrt{2(q_2 - c^2/q_1)}\,y`
  (a Cholesky factor of the covariance), with nodes/weights :math:`(x_i, w_i)`
  of the physicists' Hermite rule of degree ``deg``,

  .. math:: E[f(u) f(v)] \approx \frac1\pi\sum_{ij} w_i w_j\, f(u(x_i))\, f(v(x_i, y_j)),

  and the NTK uses the same rule for :math:`E[f'(u) f'(v)]` (``df``, by default
  forward-mode differentiation of ``fn``). Exact for polynomials of degree
  ``< 2 deg``; smooth functions converge fast, kinks (ReLU) slowly.
  """
  if not isinstance(deg, int) or deg < 1:
    raise ValueError(f"deg must be a positive integer, got {deg!r}")
  xs_np, ws_np = scipy.special.roots_hermite(deg)
  df = _derivative(fn) if df is None else df

  def integrate(f, c, q1, q2):
    dtype = jnp.result_type(c, q1, q2)
    xs, ws = jnp.asarray(xs_np, dtype), jnp.asarray(ws_np, dtype)
    c, q1, q2 = jnp.broadcast_arrays(c, q1, q2)
    s1 = jnp.sqrt(jnp.maximum(q1 / 2, 1e-30))
    a_coef = c / s1
    b_coef = _safe_sqrt(2 * (q2 - c ** 2 / jnp.maximum(q1, 1e-30)))
    u_scale = _safe_sqrt(2 * q1)
    y_nodes = xs.reshape((deg,) + (1,) * c.ndim)
    y_weights = ws.reshape((deg,) + (1,) * c.ndim)

    def step(acc, xw):
      x, w = xw
      fu = f(u_scale * x)
      fv = f(a_coef * x + b_coef * y_nodes)  # (deg, *shape): all y nodes at once
      return acc + w * fu * jnp.sum(y_weights * fv, axis=0), None

    acc, _ = lax.scan(step, jnp.zeros(c.shape, dtype), (xs, ws))
    return acc / jnp.pi

  def transform(c, q1, q2, need_dot):
    return integrate(fn, c, q1, q2), (integrate(df, c, q1, q2) if need_dot else None)

  return elementwise(transform, name)


# ----------------------------------------------------------------------------
# Combinators.


def fan_in_sum() -> KernelMap:
  """Sum of independent centred Gaussian branches: kernels add."""

  def kernel(ks, ctx) -> Kernel:
    del ctx
    ks = tuple(ks)
    if len({k.nngp.shape for k in ks}) != 1 or len({k.diagonal_spatial for k in ks}) != 1:
      raise ValueError(f"fan_in_sum needs kernels of one shape, got "
                       f"{[k.nngp.shape for k in ks]}")
    if len(ks) > 1 and not all(k.is_gaussian for k in ks):
      raise ValueError(
          "fan_in_sum: the kernel of a sum is the sum of kernels only for independent centred "
          "Gaussian branches; every branch must end in a dense or conv layer (got a branch "
          "ending in a nonlinearity, flatten or concatenation)")
    add = lambda xs: None if xs[0] is None else functools.reduce(operator.add, xs)
    return ks[0].replace(nngp=add([k.nngp for k in ks]),
                         ntk=None if any(k.ntk is None for k in ks) else add([k.ntk for k in ks]),
                         cov1=add([k.cov1 for k in ks]), cov2=add([k.cov2 for k in ks]),
                         is_gaussian=all(k.is_gaussian for k in ks),
                         wide=any(k.wide for k in ks))

  return kernel


def _block_diag(mats, pair_axes):
  """Concatenates along ``pair_axes`` (both copies) with zero off-diagonal blocks."""
  sizes = [m.shape[pair_axes[0]] for m in mats]
  total, out, off = sum(sizes), 0.0, 0
  for m, n in zip(mats, sizes):
    widths = [(0, 0)] * m.ndim
    for ax in pair_axes:
      widths[ax] = (off, total - off - n)
    out = out + jnp.pad(m, widths)
    off += n
  return out


def fan_in_concat(axis: int = -1) -> KernelMap:
  r"""Concatenation of independent branches along ``axis`` of the activations.

  Along channels the kernel is the channel-weighted average
  :math:`K = \sum_i C_i K_i / \sum_i C_i` (no longer i.i.d. across channels,
  so not Gaussian-i.i.d.); along a spatial axis the covariance is
  block-diagonal (branches are independent; NT's ``FanInConcat``).
  """

  def kernel(ks, ctx) -> Kernel:
    del ctx
    ks = tuple(ks)
    k0 = ks[0]
    ndim = k0.nspatial + 2
    ax = axis % ndim
    if ax == 0:
      raise ValueError("fan_in_concat along the batch axis has no kernel")
    if len({k.diagonal_spatial for k in ks}) != 1 or len({k.nspatial for k in ks}) != 1:
      raise ValueError("fan_in_concat needs kernels of one layout")
    ntks = None if any(k.ntk is None for k in ks) else [k.ntk for k in ks]
    if ax == ndim - 1:
      if len({k.nngp.shape for k in ks}) != 1:
        raise ValueError(f"fan_in_concat along channels needs equal spatial shapes, got "
                         f"{[k.nngp.shape for k in ks]}")
      chans = [k.channels for k in ks]
      if all(isinstance(c, int) for c in chans) and len(set(chans)) == 1:
        weights = [1.0 / len(ks)] * len(ks)
      else:
        weights = [c / sum(chans) for c in chans]
      avg = lambda ms: None if ms is None or ms[0] is None else sum(w * m for w, m in zip(weights, ms))
      return k0.replace(nngp=avg([k.nngp for k in ks]), ntk=avg(ntks),
                        cov1=avg([k.cov1 for k in ks]), cov2=avg([k.cov2 for k in ks]),
                        channels=sum(chans), is_gaussian=False, wide=any(k.wide for k in ks))
    if not all(k.is_gaussian for k in ks):
      raise ValueError("fan_in_concat along a spatial axis needs centred Gaussian branches "
                       "(each ending in a dense or conv layer)")
    a = ax - 1

    def cat(ms, bn):
      if ms is None or ms[0] is None:
        return None
      if k0.diagonal_spatial:
        return jnp.concatenate(ms, axis=bn + a)
      return _block_diag(ms, (bn + 2 * a, bn + 2 * a + 1))

    return k0.replace(nngp=cat([k.nngp for k in ks], 2), ntk=cat(ntks, 2),
                      cov1=cat([k.cov1 for k in ks], 1), cov2=cat([k.cov2 for k in ks], 1),
                      is_gaussian=True, wide=any(k.wide for k in ks))

  return kernel


def frozen(kernel: KernelMap) -> KernelMap:
  r"""The kernel map of a layer whose parameters are not trained.

  The NTK of any of our layers is affine in its input NTK,
  :math:`\Theta' = A(\Theta) + B`, with :math:`B` the contribution of the
  layer's own parameters; freezing removes :math:`B`:
  :math:`A(\Theta) = \Theta'(\Theta) - \Theta'(0)`.
  """

  def frozen_kernel(k, ctx):
    out = kernel(k, ctx)
    is_k = lambda x: isinstance(x, Kernel)
    if all(x.ntk is None for x in jax.tree.leaves(out, is_leaf=is_k)):
      return out
    zero = jax.tree.map(lambda x: x.replace(ntk=None if x.ntk is None else jnp.zeros_like(x.ntk)),
                        k, is_leaf=is_k)
    own = kernel(zero, ctx)
    return jax.tree.map(lambda o, b: o.replace(ntk=o.ntk - b.ntk), out, own, is_leaf=is_k)

  return frozen_kernel


# ----------------------------------------------------------------------------
# The user entry point.


class _DefaultCtx(NamedTuple):
  parametrization: str = "sp"
  width: Any = None
  gamma: Any = 1.0
  init_scale: Any = 1.0


def layer_name(layer) -> str:
  """A readable name for a layer: the constructor that built its ``apply``."""
  q = getattr(getattr(layer, "apply", None), "__qualname__", "") or ""
  return q.split(".<locals>")[0] or "layer"


def no_kernel_error(layer) -> ValueError:
  return ValueError(
      f"layer {layer_name(layer)!r} has no infinite-width (NNGP/NTK) kernel; "
      "kernels exist for dense, conv, pooling, flatten, layer_norm, elementwise "
      "nonlinearities and the combinators")


def _unpack(model_or_layer):
  if hasattr(model_or_layer, "layer") and hasattr(model_or_layer, "input_shape"):
    return model_or_layer.layer, tuple(model_or_layer.input_shape), True
  if hasattr(model_or_layer, "kernel") and hasattr(model_or_layer, "apply"):
    return model_or_layer, None, False
  raise TypeError(f"expected a Model or a Layer, got {type(model_or_layer).__name__}")


def _normalize_get(get):
  if isinstance(get, str):
    names, single = (get,), True
  else:
    names, single = tuple(get), False
  for g in names:
    if g not in _FIELDS:
      raise ValueError(f"get must name some of {_FIELDS}, got {g!r}")
  return names, single


def kernel_fn(model_or_layer, ctx=None) -> Callable:
  r"""NT's ``kernel_fn`` for a :class:`~jaxtheory.nn.Model` or a layer.

  Args:
    model_or_layer: a model (inputs checked against its ``input_shape``; its
      output is divided by ``ctx.gamma``, so kernels are divided by
      :math:`\gamma^2`) or a bare layer.
    ctx: the run context (``jaxtheory.nn.Ctx``); ``None`` means the default
      (standard parametrization). Its ``parametrization`` picks NT's
      ``'standard'`` (``'sp'``) or ``'ntk'`` convention; ``'mup'``/``'mf'``
      allow only the NNGP.

  Returns:
    ``fn(x1, x2=None, get=("nngp", "ntk"), *, batch_size=None)``. ``x1`` is
    ``(n1, *input_shape)`` (or a tuple of such arrays for a layer that takes a
    tuple); ``get`` a string returns that array, a tuple a namedtuple with those
    fields (from ``nngp``, ``ntk``, ``cov1``, ``cov2``). Kernels are those of one
    output channel, ``(n1, n2)`` after a readout (``(n1, n2, *S)`` if the output
    keeps spatial axes). ``batch_size`` computes ``batch_size x batch_size``
    blocks with one compiled block function and assembles them (the result
    equals the unbatched one). The layout is chosen automatically: only
    same-position covariances when no layer needs more (no pooling) and the
    output has no spatial axes, else all position pairs.

  >>> import jax, jax.numpy as jnp
  >>> from jaxtheory import nn
  >>> m = nn.mlp((3,), width=8, depth=2, out_dim=1)
  >>> fn = kernel_fn(m, nn.Ctx("ntk"))
  >>> fn(jnp.ones((4, 3)), get="nngp").shape
  (4, 4)
  """
  layer, input_shape, is_model = _unpack(model_or_layer)
  ctx = _DefaultCtx() if ctx is None else ctx
  if layer.kernel is None:
    raise no_kernel_error(layer)
  compiled = {}

  def compute(x1, x2, names, diagonal_spatial):
    leaves1, tree = jax.tree.flatten(x1)
    leaves2 = [None] * len(leaves1) if x2 is None else jax.tree.leaves(x2)
    ks = [inputs_to_kernel(a, b, diagonal_spatial=diagonal_spatial,
                           compute_ntk="ntk" in names) for a, b in zip(leaves1, leaves2)]
    out = layer.kernel(jax.tree.unflatten(tree, ks), ctx)
    if is_model:
      gamma = getattr(ctx, "gamma", 1.0)
      if not (isinstance(gamma, (int, float)) and gamma == 1.0):
        out = jax.tree.map(lambda k: scale(k, 1.0 / gamma ** 2), out,
                           is_leaf=lambda k: isinstance(k, Kernel))
    return jax.tree.map(lambda k: {g: getattr(k, g) for g in names}, out,
                        is_leaf=lambda k: isinstance(k, Kernel))

  def choose_layout(x1, x2, names):
    spec = lambda t: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), t)
    try:
      out = jax.eval_shape(lambda a, b: compute(a, b, ("nngp",), True), spec(x1), spec(x2))
    except NeedsFullSpatial:
      return False
    return all(d["nngp"].ndim == 2 for d in jax.tree.leaves(
        out, is_leaf=lambda d: isinstance(d, dict)))

  def block_fn(x1, x2, names):
    key = (jax.tree.structure(x1), tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(x1)),
           None if x2 is None else tuple(a.shape for a in jax.tree.leaves(x2)), names)
    if key not in compiled:
      diag = choose_layout(x1, x2, names)
      compiled[key] = jax.jit(lambda a, b: compute(a, b, names, diag))
    return compiled[key]

  def fn(x1, x2=None, get=("nngp", "ntk"), *, batch_size: int | None = None):
    names, single = _normalize_get(get)
    p = getattr(ctx, "parametrization", "sp")
    if "ntk" in names and p in ("mup", "mf"):
      raise ValueError(_NO_NTK.format(where="kernel_fn", p=p))
    x1 = jax.tree.map(jnp.asarray, x1)
    x2 = None if x2 is None else jax.tree.map(jnp.asarray, x2)
    if is_model:
      for x in (x1, x2):
        if x is not None and x.shape[1:] != input_shape:
          raise ValueError(f"model expects inputs of shape (batch, "
                           f"{', '.join(map(str, input_shape))}) but got {x.shape}")
    if batch_size is None:
      out = block_fn(x1, x2, names)(x1, x2)
    else:
      out = _batched(block_fn, x1, x2, names, batch_size)
    return _format(out, names, single)

  return fn


def _format(out, names, single):
  is_d = lambda d: isinstance(d, dict)
  if single:
    return jax.tree.map(lambda d: d[names[0]], out, is_leaf=is_d)
  cls = namedtuple("Kernels", names)
  return jax.tree.map(lambda d: cls(*(d[g] for g in names)), out, is_leaf=is_d)


def _batched(block_fn, x1, x2, names, batch_size):
  """Blocks of ``batch_size`` rows of x1 times ``batch_size`` rows of x2, assembled."""
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
  same = x2 is None
  x2_ = x1 if same else x2
  n1 = jax.tree.leaves(x1)[0].shape[0]
  n2 = jax.tree.leaves(x2_)[0].shape[0]

  def chunks(x, n):
    # Edge-pad to a multiple of batch_size so every block has one shape (one compile).
    m = -(-n // batch_size) * batch_size
    pad = lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], m - n, axis=0)]) if m > n else a
    x = jax.tree.map(pad, x)
    return [jax.tree.map(lambda a: a[i:i + batch_size], x) for i in range(0, m, batch_size)]

  c1, c2 = chunks(x1, n1), chunks(x2_, n2)
  f = block_fn(c1[0], c2[0], names)
  blocks = [[f(a, b) for b in c2] for a in c1]
  is_d = lambda d: isinstance(d, dict)
  first = blocks[0][0]

  out_leaves, tree = jax.tree.flatten(first, is_leaf=is_d)
  flat = [[jax.tree.leaves(b, is_leaf=is_d) for b in row] for row in blocks]
  result = []
  for li in range(len(out_leaves)):
    d = {}
    for g in names:
      if g in ("nngp", "ntk"):
        rows = [jnp.concatenate([flat[i][j][li][g] for j in range(len(c2))], axis=1)
                for i in range(len(c1))]
        d[g] = jnp.concatenate(rows, axis=0)[:n1, :n2]
      elif g == "cov1":
        d[g] = jnp.concatenate([flat[i][0][li][g] for i in range(len(c1))], axis=0)[:n1]
      else:
        d[g] = None if same else jnp.concatenate(
            [flat[0][j][li][g] for j in range(len(c2))], axis=0)[:n2]
    result.append(d)
  return jax.tree.unflatten(tree, result)
