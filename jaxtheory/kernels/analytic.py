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

The kernel maps of elementwise nonlinearities are in
:mod:`jaxtheory.kernels.nonlinear`, those of the combinators (fan-in, frozen
layers) in :mod:`jaxtheory.kernels.combinators`. Nothing here imports
:mod:`jaxtheory.nn` (layers and models are duck-typed), so ``nn`` can build on
these modules.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from jax import lax

from jaxtheory import compile_cache
from jaxtheory.kernels import masking, padding as pad
from jaxtheory.kernels._spatial import (conv_average as _conv_average,
                                        conv_transpose_average as _conv_transpose_average,
                                        pool_sum as _pool_sum,
                                        pool_sum_diagonal as _pool_sum_diagonal,
                                        position_eye as _position_eye,
                                        spread as _spread, twice as _twice,
                                        unshared as _unshared, variances as _variances,
                                        window_counts)

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
    x1_is_x2: ``None`` (unknown) or a boolean array: the two batches are the
      same inputs (dropout's kernel needs it: same-example entries change).
    mask1: ``None`` or which positions of the activation of ``x1`` are masked
      padding, ``(n1, *spatial, c)`` with ``c`` the channels or 1 (see
      :mod:`jaxtheory.kernels.masking`).
    mask2: the same for ``x2`` (``None``: unmasked, or ``x2`` is ``x1``).
    white: static; distinct positions are known not to covary (right after a
      locally connected layer), so pooling can read the diagonal layout exactly.
    joint_split: static; in a joint batch (:class:`NeedsJointBatch`) whose halves
      differ in length, how many of the examples are ``x1``'s (``None``: half).
    batch_from_spatial: static; the output of a contraction of the batch axis in
      the pass that gives neural-tangents' diagonal layout (:class:`BatchFromSpatial`),
      which no layer may follow.
  """
  nngp: Array
  ntk: Array | None
  cov1: Array
  cov2: Array | None
  channels: Any
  diagonal_spatial: bool = dataclasses.field(default=False, metadata=dict(static=True))
  is_gaussian: bool = dataclasses.field(default=False, metadata=dict(static=True))
  wide: bool = dataclasses.field(default=False, metadata=dict(static=True))
  x1_is_x2: Any = None
  mask1: Any = None
  mask2: Any = None
  white: bool = dataclasses.field(default=False, metadata=dict(static=True))
  joint_split: int | None = dataclasses.field(default=None, metadata=dict(static=True))
  batch_from_spatial: bool = dataclasses.field(default=False, metadata=dict(static=True))

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


@functools.cache
def _ctx_type_with(cls: type, name: str) -> type:
  if any(f.name == name for f in dataclasses.fields(cls)):
    return cls
  return dataclasses.make_dataclass(f"{cls.__name__}_{name}",
                                    [(name, Any, dataclasses.field(default=None))],
                                    bases=(cls,), frozen=True)


def ctx_with(ctx, name: str, value):
  """``ctx`` (any dataclass run context) that also carries ``value`` as field ``name`` (read
  with ``getattr(ctx, name, default)``): how kernel-only settings reach the layers' maps."""
  fields = {f.name: getattr(ctx, f.name) for f in dataclasses.fields(ctx) if f.name != name}
  return _ctx_type_with(type(ctx), name)(**fields, **{name: value})


class NeedsFullBatch(Exception):
  """Raised by a layer that mixes examples (resizing or contracting the batch axis) when
  ``kernel_fn`` was asked for per-example covariances (``diagonal_batch=True``, read from
  the context).

  neural-tangents' ``kernel_fn`` then computes with ``diagonal_batch=False`` when
  the caller did not choose, and raises ``ValueError`` when they chose ``True``.
  """


class NeedsJointBatch(Exception):
  """Raised by a layer that mixes examples (contracting the batch axis, a linear resize of it)
  in the kernel of ``x1`` against a different ``x2``: a mixed example's variance needs the
  covariances among ``x1``'s own examples, which that kernel does not hold.

  neural-tangents' ``kernel_fn`` then computes ``x1`` and ``x2`` as one batch, ``x1``'s
  examples first, with :func:`joint_batch` true in the context: such a layer mixes each
  half on its own (:func:`by_halves`) into halves of equal length.
  """


def joint_batch(ctx) -> bool:
  """Whether the kernel's batch holds ``x1``'s examples then ``x2``'s, each half to be mixed
  on its own (see :class:`NeedsJointBatch`)."""
  return bool(getattr(ctx, "joint_batch", False))


def joint_split(k: Kernel, ctx) -> int | None:
  """In a joint batch (:func:`joint_batch`), how many of ``k``'s examples are ``x1``'s;
  ``None`` outside one."""
  if not joint_batch(ctx):
    return None
  return k.nngp.shape[0] // 2 if k.joint_split is None else k.joint_split


def refuse_joint(ctx, what: str) -> None:
  """Raises a ``ValueError`` in a joint batch (:func:`joint_batch`): ``what`` acts across the
  batch axis as a whole, which would mix ``x1``'s half with ``x2``'s."""
  if joint_batch(ctx):
    raise ValueError(f"{what} acts across the whole batch, which kernel_fn cannot combine with a "
                     "layer that mixes examples (a contraction or linear resize of the batch "
                     "axis) for a different x2; compute the kernel of x1 with itself (x2=None)")


def by_halves(fn: Callable[[Array], Array], a: Array, axes: Sequence[int], split: int) -> Array:
  """``fn`` of each block of ``a`` cut along ``axes`` (joint batch axes) after ``split``
  examples (``x1``'s, then ``x2``'s), the results joined again along the same axes: how a
  layer that mixes examples mixes each half on its own. ``fn`` keeps the axes' positions."""
  if not axes:
    return fn(a)
  ax, rest = axes[0], tuple(axes[1:])
  return jnp.concatenate([by_halves(fn, part, rest, split)
                          for part in jnp.split(a, [split], axis=ax)], axis=ax)


class NeedsFullSpatial(Exception):
  """Raised by a layer that needs off-diagonal spatial covariances (pooling).

  :func:`kernel_fn` catches it while choosing a layout and recomputes with
  ``diagonal_spatial=False``; users only see it when they build a diagonal
  kernel themselves.
  """


class BatchFromSpatial(NeedsFullSpatial):
  """Raised in the diagonal layout by a layer whose new batch axis is an old spatial one
  (contracting the batch axis): the kernel between its examples needs both sides' positions.

  neural-tangents' ``kernel_fn(..., diagonal_spatial=True)`` then returns the same-position
  entries of the full layout's kernel with the new batch pair among them (only each new
  example against its own counterpart).
  """


def _map(k: Kernel, fn, with_ntk=True) -> Kernel:
  """Applies ``fn(mat, batch_ndim)`` to every covariance (and the NTK if asked)."""
  return k.replace(
      nngp=fn(k.nngp, 2),
      ntk=None if (k.ntk is None or not with_ntk) else fn(k.ntk, 2),
      cov1=fn(k.cov1, 1),
      cov2=None if k.cov2 is None else fn(k.cov2, 1))


def permute_spatial(k: Kernel, perm: Sequence[int]) -> Kernel:
  """The kernel of the activation with its spatial axes reordered.

  Args:
    k: a kernel whose activation has ``len(perm)`` spatial axes.
    perm: spatial axis ``i`` of the result is axis ``perm[i]`` of ``k``'s
      activation (as in ``jnp.transpose`` of the spatial axes alone).

  Returns:
    ``k`` with every covariance (and the NTK) transposed accordingly, in either
    spatial layout (``(h, w)`` or ``(h, h', w, w')``).
  """
  perm = tuple(int(p) for p in perm)
  if perm == tuple(range(len(perm))):
    return k
  if sorted(perm) != list(range(k.nspatial)):
    raise ValueError(f"perm {perm} is not a permutation of the kernel's {k.nspatial} spatial axes")

  def move(m, bn):
    if m.ndim < bn:  # a scalar NTK placeholder
      return m
    sp = [(bn + p,) if k.diagonal_spatial else (bn + 2 * p, bn + 2 * p + 1) for p in perm]
    return jnp.transpose(m, tuple(range(bn)) + sum(sp, ()))

  def move_mask(m):  # (n, *spatial, c)
    return None if m is None else jnp.transpose(m, (0, *(1 + p for p in perm), m.ndim - 1))

  return _map(k, move).replace(mask1=move_mask(k.mask1), mask2=move_mask(k.mask2))


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
# Linear layers.


_NO_NTK = ("{where}: no kernel limit: feature learning. The NTK of the {p!r} parametrization "
           "does not converge to a fixed kernel at infinite width (its features move); ask "
           "for get='nngp', or use 'sp'/'ntk' for the NTK.")


def _check_one_parametrization(parametrization, where: str):
  if not isinstance(parametrization, str):
    raise ValueError(f"{where}: an infinite-width kernel needs one parametrization, got a choice "
                     f"among {parametrization!r} made at run time; compute the kernel of each")


def _check_ntk_allowed(k: Kernel, parametrization: str, where: str):
  _check_one_parametrization(parametrization, where)
  if k.ntk is not None and parametrization in ("mup", "mf"):
    raise ValueError(_NO_NTK.format(where=where, p=parametrization))


class AffineRule(NamedTuple):
  """What an affine layer's kernel map needs of one run, resolved by the layer from its context.

  Attributes:
    parametrization: the layer's rule: ``'sp'``, ``'ntk'``, ``'mup'`` or ``'mf'``
      (the run's, or the layer's own override).
    init_scale: the run's initial-weights multiplier.
    out_channels: the output's finite channel count (the active width when swept).
    width_ratio: the run's width over its base width (``None``: no base width),
      see :func:`jaxtheory.nn.param.width_ratio`.
  """
  parametrization: str = "sp"
  init_scale: Any = 1.0
  out_channels: Any = 1
  width_ratio: Any = None


def affine(W_std: float, b_std: float | None, *, out_wide: bool,
           rule: Callable[[Any], AffineRule] = lambda ctx: AffineRule(),
           filter_shape: Sequence[int] = (), strides: Sequence[int] = (),
           padding: str = "VALID", name: str = "dense", transpose: bool = False,
           shared: bool = True) -> KernelMap:
  r"""Kernel map of a dense (``filter_shape=()``) or convolutional layer.

  With :math:`\sigma = W_{std}\cdot` ``init_scale`` and :math:`\mathcal A`
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
  With a base width :math:`n_0` (``rule(ctx).width_ratio``, :mod:`jaxtheory.nn.param`'s
  second table) the ``'ntk'`` weights train with learning rate
  :math:`f_0/\sigma^2` and the biases take SP's form, so the NTK (weighted by
  the SGD learning rates) is SP's with the *base* fan-in
  :math:`f_0 = N_{in} n_0 / n` on a wide input (:math:`N_{in}` on a fixed one),
  which stays finite as the width :math:`n` grows:
  :math:`\Theta' = f_0 \mathcal A(K) + \sigma^2 \mathcal A(\Theta) + [b]`. The NNGP
  and the other parametrizations' limits do not depend on the base width
  (their effective init is the absolute table's, and a muP / mean-field readout
  still vanishes like :math:`n_0/n`).
  Under ``'mup'``/``'mf'`` the NNGP of hidden layers is the same, a readout
  (wide input, fixed output) contributes only its bias (its weight variance is
  ``O(1/width)``), and the NTK has no limit (a ``ValueError``).

  Args:
    W_std: weight scale.
    b_std: bias scale or ``None`` (no bias).
    out_wide: the output scales with the swept width (with a wide input, the
      layer is hidden; with a finite one, a readout).
    rule: ``ctx -> AffineRule``: the layer's parametrization, ``init_scale``
      and output channels in the run ``ctx`` the map is called with (default:
      SP, no scaling, one channel).
    filter_shape: conv filter (empty for dense).
    strides: conv strides.
    padding: ``'SAME'`` or ``'VALID'``.
    name: layer name for error messages.
    transpose: a transposed convolution (``lax.conv_transpose``): :math:`\mathcal A`
      is :func:`_conv_transpose_average`.
    shared: ``False`` for a locally connected layer (unshared weights and biases,
      one per output position): different positions are independent, so every
      off-diagonal position pair is zero and each position's variance is the
      shared conv's (:func:`_unshared`).
  """
  filter_shape, strides = tuple(filter_shape), tuple(strides)
  average = _conv_transpose_average if transpose else _conv_average
  receptive = math.prod(filter_shape)

  def kernel(k: Kernel, ctx) -> Kernel:
    r = rule(ctx)
    p = r.parametrization
    _check_ntk_allowed(k, p, name)
    if k.nspatial != len(filter_shape) and filter_shape:
      raise ValueError(f"{name}: a {len(filter_shape)}D filter needs {len(filter_shape)} "
                       f"spatial axes, the input kernel has {k.nspatial}")
    lin = ((lambda m, bn: average(m, bn, filter_shape, strides, padding, k.diagonal_spatial))
           if filter_shape else (lambda m, bn: m))
    if not (shared or k.diagonal_spatial):
      lin = _unshared(lambda m, bn: average(m, bn, filter_shape, strides, padding, True))
    sigma2 = (W_std * r.init_scale) ** 2
    readout = k.wide and not out_wide
    if p in ("mup", "mf") and readout:
      sigma2 = 0.0
    b2 = 0.0 if b_std is None else b_std ** 2
    lk = _map(k, lin)
    # A bias is one variable per channel, or per channel and position if unshared.
    same = ((lambda m, bn: 1.0) if shared or k.diagonal_spatial
            else (lambda m, bn: _position_eye(m.shape[bn:], m.dtype).reshape(
                (1,) * bn + m.shape[bn:])))
    out = _map(lk, lambda m, bn: sigma2 * m + b2 * same(m, bn), with_ntk=False)
    ntk = None
    if k.ntk is not None:
      if p == "sp":
        fan_in = k.channels * receptive
        ntk = (fan_in * lk.nngp + sigma2 * lk.ntk
               + (0.0 if b_std is None else same(lk.nngp, 2)))
      elif p == "ntk" and r.width_ratio is not None:
        # The base fan-in: the fan-in the layer would have at the base width.
        fan_in0 = k.channels * receptive / (r.width_ratio if k.wide else 1.0)
        ntk = (fan_in0 * jnp.where(sigma2 == 0, 0.0, lk.nngp) + sigma2 * lk.ntk
               + (0.0 if b_std is None else same(lk.nngp, 2)))
      else:
        ntk = out.nngp + sigma2 * lk.ntk
    return out.replace(ntk=ntk, channels=r.out_channels, is_gaussian=True, wide=out_wide)

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
                                  diagonal_spatial=True, is_gaussian=False)

  return kernel


def avg_pool(window_shape: Sequence[int], strides: Sequence[int], padding: str,
             normalize_edges: bool = False, normalize: bool = True) -> KernelMap:
  r"""Average pooling: :math:`K'_{ij} = \frac{1}{n_i n_j}\sum_{d, d' \in w} K_{is+d,\,js+d'}`.

  Over the zero-padded input; :math:`n_i` is the window size, or with
  ``normalize_edges`` (NT's flag, which matters for ``'SAME'`` padding) the
  number of non-padding inputs in window :math:`i`. ``normalize=False``: sum
  pooling, :math:`n_i = 1`. Needs the full spatial covariance, unless distinct
  positions do not covary (``k.white``): then the diagonal layout is pooled exactly,
  :math:`K'_{ii} = \frac{1}{n_i^2}\sum_{d \in w} K_{is+d,\,is+d}`.
  """
  window_shape, strides = tuple(window_shape), tuple(strides)
  norm = math.prod(window_shape) ** 2 if normalize else 1

  def kernel(k: Kernel, ctx) -> Kernel:
    del ctx
    diag = k.diagonal_spatial
    if diag and not k.white:
      raise NeedsFullSpatial("avg_pool")
    if k.nspatial != len(window_shape):
      raise ValueError(f"avg_pool: a {len(window_shape)}D window needs {len(window_shape)} "
                       f"spatial axes, the input kernel has {k.nspatial}")
    pool_sum = _pool_sum_diagonal if diag else _pool_sum
    per_axis = (lambda t: t) if diag else _twice
    if padding == "CIRCULAR":  # every window is full: periodic padding, then VALID
      return _map(k, lambda m, bn: pool_sum(
          pad.wrap(m, range(bn, m.ndim), per_axis(window_shape), per_axis(strides)), bn,
          window_shape, strides, "VALID") / norm)
    if not (normalize_edges and normalize):
      return _map(k, lambda m, bn: pool_sum(m, bn, window_shape, strides, padding) / norm)
    counts = [window_counts(n, w, st, padding)
              for n, w, st in zip(k.spatial_shape, window_shape, strides)]

    def pool(m, bn):
      m = pool_sum(m, bn, window_shape, strides, padding)
      for a, c in enumerate(counts):
        shape = [1] * m.ndim
        if diag:
          shape[bn + a] = c.shape[0]
          m = m / (c * c).astype(m.dtype).reshape(shape)
        else:
          shape[bn + 2 * a] = shape[bn + 2 * a + 1] = c.shape[0]
          m = m / (c[:, None] * c[None, :]).astype(m.dtype).reshape(shape)
      return m

    return _map(k, pool)

  return kernel


def global_avg_pool(normalize: bool = True) -> KernelMap:
  r"""Global average pooling: :math:`K' = \mathrm{mean}_{s, s'} K_{ss'}` (over the unmasked
  pairs); ``normalize=False``: global sum pooling, :math:`K' = \sum_{s, s'} K_{ss'}`."""

  def kernel(k: Kernel, ctx) -> Kernel:
    del ctx
    if k.nspatial == 0:
      return k
    if k.diagonal_spatial:
      if not k.white:
        raise NeedsFullSpatial("global_avg_pool")
      return _global_pool_white(k, normalize)
    m11, m12, m22 = masking.products(k, "global_avg_pool")
    mean = (masking.masked_spatial_mean if normalize
            else lambda m, bn, _: jnp.sum(m, axis=tuple(range(bn, m.ndim))))
    return k.replace(nngp=mean(k.nngp, 2, m12),
                     ntk=None if k.ntk is None else mean(k.ntk, 2, m12),
                     cov1=mean(k.cov1, 1, m11),
                     cov2=None if k.cov2 is None else mean(k.cov2, 1, m22),
                     diagonal_spatial=True)

  return kernel


def _global_pool_white(k: Kernel, normalize: bool) -> Kernel:
  """Global pooling of a diagonal-layout kernel of uncorrelated positions (exact): the
  sum of the same-position entries (over positions unmasked on both sides), divided by the
  product of the two sides' unmasked counts when averaging."""
  axes = lambda m, bn: tuple(range(bn, m.ndim))
  m1, m2 = masking.position_masks(k, "global_avg_pool")
  n1, n2 = k.nngp.shape[:2]
  if m1 is None:
    m1, m2 = jnp.zeros((n1, *k.spatial_shape), bool), jnp.zeros((n2, *k.spatial_shape), bool)
  kept = lambda m: jnp.sum(~m, axis=tuple(range(1, m.ndim))).astype(k.nngp.dtype)
  c1, c2 = kept(m1), kept(m2)

  def pool(m, bn, mask, count):
    if m is None or m.ndim < bn:
      return m
    s = jnp.sum(jnp.where(mask, 0.0, m), axis=axes(m, bn))
    return s / jnp.maximum(count, 1.0) if normalize else s

  m12 = _spread(m1, True, 2, True) | _spread(m2, False, 2, True)
  c12 = c1[:, None] * c2[None, :]
  nngp = pool(k.nngp, 2, m12, c12)
  ntk = None if k.ntk is None else pool(k.ntk, 2, m12, c12)
  cov1 = pool(k.cov1, 1, m1, c1 * c1)
  cov2 = None if k.cov2 is None else pool(k.cov2, 1, m2, c2 * c2)
  return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, diagonal_spatial=True)


def take_last() -> KernelMap:
  """Keeps the last position of a sequence: ``K' = K[..., T-1, T-1]``."""

  def kernel(k: Kernel, ctx) -> Kernel:
    del ctx
    if k.nspatial != 1:
      raise ValueError(f"take_last needs one sequence axis, the kernel has {k.nspatial}")
    idx = (Ellipsis, -1) if k.diagonal_spatial else (Ellipsis, -1, -1)
    return _map(k, lambda m, _: m[idx]).replace(diagonal_spatial=True)

  return kernel


def layer_norm(eps: float = 1e-12, affine: bool = False, *,
               parametrization: Callable[[Any], str] = lambda ctx: "sp",
               spatial_axes: Sequence[int] = (), over_batch: bool = False) -> KernelMap:
  r"""Layer norm over the channel axis (and optionally spatial axes and the batch) of a
  centred Gaussian activation.

  In the limit the channel mean vanishes and the channel variance is
  :math:`K_{ss}(x)`, so (NT's ``LayerNorm``; Ba et al. 2016)

  .. math:: K'_{ss'}(x, x') = \frac{K_{ss'}(x, x')}{\sqrt{(\epsilon + K_{ss}(x))(\epsilon + K_{s's'}(x'))}}

  and the NTK is divided by the same factor. Normalising over spatial axes too
  replaces :math:`K_{ss}(x)` by its mean over those axes (over the unmasked
  positions when the activation carries masks); over the batch as well, by its
  mean over the batch of ``x`` (and of ``x'`` on the other side). With
  ``affine=True`` the gain (initially 1) and bias (initially 0) are trained too
  and add :math:`K' + 1` to the NTK.

  Args:
    eps: added to the variance before the square root.
    affine: whether a trained gain and bias follow.
    parametrization: ``ctx -> str``, the run's parametrization as the layer
      resolves it; the trained gain's NTK has no infinite-width limit under
      ``'mup'`` and ``'mf'``, where asking for it is an error.
    spatial_axes: the spatial axes (``0`` the first) normalised over as well.
    over_batch: whether the batch axis is normalised over as well.
  """
  mean_axes = ((0,) if over_batch else ()) + tuple(1 + int(a) for a in spatial_axes)

  def mean_variance(cov, mask, ds):
    v = _variances(cov, ds)
    if not mean_axes:
      return v + eps
    if mask is None:
      return jnp.mean(v, mean_axes, keepdims=True) + eps
    w = (~mask).astype(v.dtype)
    total = jnp.sum(w, mean_axes, keepdims=True)
    return jnp.sum(v * w, mean_axes, keepdims=True) / jnp.maximum(total, 1) + eps

  def kernel(k: Kernel, ctx) -> Kernel:
    if not k.is_gaussian:
      raise ValueError("layer_norm needs a centred Gaussian input (a dense or conv layer "
                       "right before it); its kernel after a nonlinearity has no closed form")
    if over_batch:
      refuse_joint(ctx, "layer_norm over the batch axis")
    if affine and k.ntk is not None:
      _check_ntk_allowed(k, parametrization(ctx), "layer_norm")
    ds = k.diagonal_spatial
    m1, m2 = masking.position_masks(k, "LayerNorm") if mean_axes else (None, None)
    v1 = mean_variance(k.cov1, m1, ds)
    v2 = v1 if k.cov2 is None else mean_variance(k.cov2, m2, ds)
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
# The identity: a linear map, so the kernel stays Gaussian (nonlinearities are in
# :mod:`jaxtheory.kernels.nonlinear`).


def identity() -> KernelMap:
  """The identity: every kernel unchanged (still Gaussian)."""
  return lambda k, ctx: k


# ----------------------------------------------------------------------------
# The user entry point.


class RunCtx(Protocol):
  """What a whole model's kernel function reads of the run's context (``jaxtheory.nn.Ctx``
  is one): the parametrization, whose NTK may not exist, and the output scale ``1/gamma``.
  Each layer's kernel map resolves its own rule from the context (``affine``'s ``rule``)."""
  parametrization: str
  gamma: Any


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


def kernel_fn(model_or_layer, ctx: RunCtx | None = None, store_key: Any = None) -> Callable:
  r"""NT's ``kernel_fn`` for a :class:`~jaxtheory.nn.Model` or a layer.

  Args:
    model_or_layer: a model (inputs checked against its ``input_shape``; its
      output is divided by ``ctx.gamma``, so kernels are divided by
      :math:`\gamma^2`) or a bare layer.
    ctx: the run context (``jaxtheory.nn.Ctx``); ``None`` means the default
      (standard parametrization). Its ``parametrization`` picks NT's
      ``'standard'`` (``'sp'``) or ``'ntk'`` convention; ``'mup'``/``'mf'``
      allow only the NNGP.
    store_key: ``None``, or a value that determines the layer's kernel map (e.g.
      the settings an experiment builds its model from; never for a kernel the
      user wrote): the compiled kernels then go to the executable store
      (:func:`jaxtheory.compile_cache.stored_call`), and a later process loads
      them without tracing.

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
    output has no spatial axes, else all position pairs. ``diagonal_spatial=True``
    (NT's flag) asks for same-position entries only, ``(n1, n2, h, w, ...)``,
    a ``ValueError`` where a layer needs all pairs (pooling).

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
      gamma = ctx.gamma
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

  programs = {}  # the stored ones made in this process

  def block_fn(x1, x2, names, diagonal_spatial=None):
    key = (jax.tree.structure(x1), tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(x1)),
           None if x2 is None else tuple(a.shape for a in jax.tree.leaves(x2)), names,
           diagonal_spatial)
    if key not in compiled:
      if store_key is None:
        diag = True if diagonal_spatial else choose_layout(x1, x2, names)
        compiled[key] = jax.jit(lambda a, b: compute(a, b, names, diag))
      else:  # the layout is chosen while tracing, which a stored program skips
        jitted = jax.jit(lambda a, b: compute(
            a, b, names, True if diagonal_spatial else choose_layout(a, b, names)))
        what = (store_key, repr(ctx), names, diagonal_spatial)
        compiled[key] = lambda a, b: compile_cache.stored_call(
            jitted, "jaxtheory.kernels.analytic.kernel_fn", what, programs, (a, b), {})
    return compiled[key]

  def fn(x1, x2=None, get=("nngp", "ntk"), *, batch_size: int | None = None,
         diagonal_spatial: bool | None = None):
    names, single = _normalize_get(get)
    p = ctx.parametrization
    _check_one_parametrization(p, "kernel_fn")
    if "ntk" in names and p in ("mup", "mf"):
      raise ValueError(_NO_NTK.format(where="kernel_fn", p=p))
    x1 = jax.tree.map(jnp.asarray, x1)
    x2 = None if x2 is None else jax.tree.map(jnp.asarray, x2)
    if is_model:
      for x in (x1, x2):
        if x is not None and x.shape[1:] != input_shape:
          raise ValueError(f"model expects inputs of shape (batch, "
                           f"{', '.join(map(str, input_shape))}) but got {x.shape}")
    blocks = functools.partial(block_fn, diagonal_spatial=bool(diagonal_spatial))
    try:
      if batch_size is None:
        out = blocks(x1, x2, names)(x1, x2)
      else:
        out = _batched(blocks, x1, x2, names, batch_size)
    except NeedsFullSpatial as e:
      raise ValueError(f"diagonal_spatial=True: {e} needs the covariances of all pairs of "
                       "positions; use diagonal_spatial=False") from None
    return _format(out, names, single)

  return fn


@functools.lru_cache(maxsize=None)
def _kernels_type(names: tuple[str, ...]):
  # One class per field tuple: results of separate calls are the same pytree type.
  return namedtuple("Kernels", names)


def _format(out, names, single):
  is_d = lambda d: isinstance(d, dict)
  if single:
    return jax.tree.map(lambda d: d[names[0]], out, is_leaf=is_d)
  cls = _kernels_type(names)
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
    edge_pad = lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], m - n, axis=0)]) if m > n else a
    x = jax.tree.map(edge_pad, x)
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
