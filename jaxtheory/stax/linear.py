"""Linear layers of :mod:`jaxtheory.stax`: ``Dense``, ``Conv``, ``ConvTranspose``, pooling,
``Flatten``, ``Aggregate``, ``DotGeneral``, ``Index``/``Slice``, ``LayerNorm`` and ``Dropout``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxtheory.kernels import (analytic, dot_general as kdot, masking as kmasking,
                               padding as kpad, resize as kresize)
from jaxtheory.nn import core, dropout as dropout_layer, graph, layers as L, masking
from jaxtheory.nn.indexing import canonicalize_idx, slice_shape
from jaxtheory.stax._core import (_SAME, _SAME_REMASK, _Triple, _check_axes, _check_padding,
                                  _layout_perms, _moved_axes,
                                  _name_layers, _nt_params, _param, _relaid, _s_out,
                                  _width_scaled)


def Dense(out_dim: int, W_std: float = 1.0, b_std: float | None = None, batch_axis: int = 0,
          channel_axis: int = -1, parameterization: str = "ntk",
          s: tuple[int, int] = (1, 1)) -> _Triple:
  """Fully connected layer on the channel axis (NT's ``stax.Dense``); any ``batch_axis`` and
  ``channel_axis`` (the other axes are spatial and keep their place)."""
  p = _param(parameterization)
  lay = _width_scaled(L.dense(out_dim * _s_out(s, parameterization), W_std, b_std,
                              parametrization=p), s, parameterization)
  # A position is masked when all its channels are: the kernel's masks are channels-last,
  # the activation's keep the channel axis where it is.
  rule = masking.Rule(lambda m, shape: kmasking.collapse_channels(m) if shape is None
                      else jnp.all(m, axis=channel_axis, keepdims=True), remask=True)
  return _Triple(_nt_params(_moved_axes(lay, batch_axis, channel_axis), b_axis=channel_axis),
                 (batch_axis, channel_axis), mask=rule)


def Conv(out_chan: int, filter_shape: Sequence[int], strides: Sequence[int] | None = None,
         padding: str = "VALID", W_std: float = 1.0, b_std: float | None = None,
         dimension_numbers: tuple[str, str, str] | None = None, parameterization: str = "ntk",
         s: tuple[int, int] = (1, 1)) -> _Triple:
  """Convolution (NT's ``stax.Conv``).

  Args:
    out_chan: output channels.
    filter_shape: the filter's spatial sizes, in the order of the spatial
      letters of the filter spec (``dimension_numbers[1]``), as in
      ``lax.conv_general_dilated``.
    strides: per spatial axis, in the same order (default 1).
    padding: ``'SAME'``, ``'VALID'`` or ``'CIRCULAR'`` (periodic).
    W_std: weight standard deviation.
    b_std: bias standard deviation (``None``: no bias).
    dimension_numbers: ``(lhs, rhs, out)`` specs of any layout, e.g.
      ``('NCHW', 'OIHW', 'NHWC')`` (``N`` batch, ``C`` channels, ``I``/``O``
      filter in/out); ``None`` is channels-last (``NHWC, HWIO, NHWC``).
      Computed by transposing to channels-last and back; the kernel's spatial
      axes follow the activation's spatial axes in order (NT's convention),
      and ``kernel_fn`` reads its inputs with the batch and channel axes of ``lhs``.
    parameterization: ``'ntk'`` or ``'standard'``.
    s: NT's ``(s_in, s_out)`` width scale of the standard parameterization.

  Returns:
    ``(init_fn, apply_fn, kernel_fn)``.
  """
  padding = _check_padding(padding)
  lay = _width_scaled(
      L.conv(out_chan * _s_out(s, parameterization), filter_shape, strides, padding, W_std,
             b_std, parametrization=_param(parameterization)), s, parameterization)
  return _conv_triple(lay, dimension_numbers, len(tuple(filter_shape)),
                      _conv_mask_rule(filter_shape, strides, padding))


def ConvTranspose(out_chan: int, filter_shape: Sequence[int],
                  strides: Sequence[int] | None = None, padding: str = "VALID",
                  W_std: float = 1.0, b_std: float | None = None,
                  dimension_numbers: tuple[str, str, str] | None = None,
                  parameterization: str = "ntk", s: tuple[int, int] = (1, 1)) -> _Triple:
  """Transposed convolution (NT's ``stax.ConvTranspose``, ``lax.conv_transpose``).

  The arguments are :func:`Conv`'s, except that the output grows by the
  ``strides``, and ``'CIRCULAR'`` padding folds the ``'VALID'`` output onto
  ``n * stride`` periodic positions. Returns ``(init_fn, apply_fn, kernel_fn)``.
  """
  padding = _check_padding(padding)
  lay = _width_scaled(
      L.conv_transpose(out_chan * _s_out(s, parameterization), filter_shape, strides, padding,
                       W_std, b_std, parametrization=_param(parameterization)),
      s, parameterization)
  return _conv_triple(lay, dimension_numbers, len(tuple(filter_shape)),
                      _conv_transpose_mask_rule(filter_shape, strides, padding))


def ConvLocal(out_chan: int, filter_shape: Sequence[int], strides: Sequence[int] | None = None,
              padding: str = "VALID", W_std: float = 1.0, b_std: float | None = None,
              dimension_numbers: tuple[str, str, str] | None = None,
              parameterization: str = "ntk", s: tuple[int, int] = (1, 1)) -> _Triple:
  """Locally connected layer (NT's ``stax.ConvLocal``): :func:`Conv` with a separate filter
  and bias at every output position (``lax.conv_general_dilated_local``).

  The arguments are :func:`Conv`'s. ``W`` is laid out as ``dimension_numbers[1]``
  with the output's spatial sizes and ``I = c_in * prod(filter_shape)``; ``b`` is
  shaped like one output. In the limit distinct positions are independent, so the
  kernel keeps only same-position entries, each a convolution's. Returns
  ``(init_fn, apply_fn, kernel_fn)``.
  """
  padding = _check_padding(padding)
  lay = _width_scaled(
      L.conv_local(out_chan * _s_out(s, parameterization), filter_shape, strides, padding,
                   W_std, b_std, parametrization=_param(parameterization)), s, parameterization)
  return _conv_triple(lay, dimension_numbers, len(tuple(filter_shape)),
                      _conv_mask_rule(filter_shape, strides, padding), b_local=True, white=True)


def _conv_mask_rule(filter_shape, strides, padding) -> masking.Rule:
  """A conv's masks: a position is masked when its whole window is (channels collapsed)."""
  window = tuple(filter_shape)
  strides = (1,) * len(window) if strides is None else tuple(strides)
  return masking.Rule(lambda m, shape: kmasking.pool_mask(kmasking.collapse_channels(m), window,
                                                          strides, padding), remask=True)


def _conv_transpose_mask_rule(filter_shape, strides, padding) -> masking.Rule:
  """A transposed conv's masks (NT's rule): an output position is masked when any input
  position it receives from is (channels collapsed)."""
  window = tuple(filter_shape)
  strides = (1,) * len(window) if strides is None else tuple(strides)

  def mask_fn(m, shape):
    del shape
    m = kmasking.collapse_channels(m).astype(jnp.float32)
    ones = jnp.ones(window + (1, 1), jnp.float32)
    n = len(window)  # channels-last activations, a (*window, in, out) filter
    sp = tuple(range(1, n + 1))
    dims = lax.ConvDimensionNumbers((0, n + 1) + sp, (n + 1, n) + tuple(range(n)),
                                    (0, n + 1) + sp)
    y = lax.conv_transpose(m, ones, strides, "VALID" if padding == "CIRCULAR" else padding,
                           dimension_numbers=dims)
    if padding == "CIRCULAR":
      y = kpad.fold(y, sp, [size * st for size, st in zip(m.shape[1:-1], strides)])
    return y > 0

  return masking.Rule(mask_fn, remask=True)


def _conv_triple(lay, dimension_numbers, nspatial: int, rule=None,
                 b_local: bool = False, white: bool = False) -> _Triple:
  """A channels-last conv layer read and written in ``dimension_numbers``' layouts, its
  filter laid out as ``dimension_numbers[1]`` and its bias shaped like the output (NT's);
  masks follow ``rule`` in the channels-last layout only."""
  if dimension_numbers is None:
    return _Triple(_nt_params(lay, b_local=b_local), (0, -1), mask=rule, white=white)
  lhs, rhs, out = _conv_specs(dimension_numbers, nspatial)
  canon = "N" + "".join(c for c in rhs if c not in "IO") + "C"
  if not (lhs == canon == out):
    lay = _relaid(lay, lhs, canon, out)
  ours = canon[1:-1] + "IO"  # jaxtheory's filter: spatial axes (in rhs's order), in, out
  return _Triple(_nt_params(lay, None if ours == rhs else (ours, rhs), out.index("C"), b_local,
                            None if canon == out else (canon, out)),
                 (lhs.index("N"), lhs.index("C")), out_axes=(out.index("N"), out.index("C")),
                 mask=rule if rule is None or lhs == canon == out else _relaid_rule(rule, lhs,
                                                                                   canon, out),
                 white=white)


def _relaid_rule(rule: masking.Rule, lhs: str, canon: str, out: str) -> masking.Rule:
  """``rule`` (of channels-last masks in layout ``canon``) on masks laid out as ``lhs``,
  answering in ``out``; the kernel's ``(n, *spatial, c)`` masks have their spatial axes
  permuted as the kernel's are (see :func:`_relaid`)."""
  to_c, from_c, k_to, k_from = _layout_perms(lhs, canon, out)
  spatial = lambda m, perm: jnp.transpose(m, (0, *(1 + p for p in perm), m.ndim - 1))

  def mask_fn(m, shape):
    if shape is None:  # the kernel's mask
      return spatial(rule.mask_fn(spatial(m, k_to), None), k_from)
    m = jnp.broadcast_to(m, tuple(shape[:lhs.index("C")]) + (m.shape[lhs.index("C")],) +
                         tuple(shape[lhs.index("C") + 1:]))
    return jnp.transpose(rule.mask_fn(jnp.transpose(m, to_c), tuple(shape[i] for i in to_c)),
                         from_c)

  return masking.Rule(mask_fn, rule.remask)


def _conv_specs(dimension_numbers, nspatial: int) -> tuple[str, str, str]:
  """``(lhs, rhs, out)`` checked: the same spatial letters in each, ``N``/``C`` and ``I``/``O``."""
  try:
    lhs, rhs, out = (str(d) for d in dimension_numbers)
  except (TypeError, ValueError):
    raise ValueError(f"dimension_numbers must be three strings (lhs, rhs, out), got "
                     f"{dimension_numbers!r}") from None
  spatial = [c for c in rhs if c not in "IO"]
  ok = (len(set(rhs)) == len(rhs) == nspatial + 2 and sorted(rhs) == sorted(spatial + ["I", "O"])
        and sorted(lhs) == sorted(out) == sorted(spatial + ["N", "C"]))
  if not ok:
    raise ValueError(
        f"dimension_numbers {tuple(dimension_numbers)} do not describe a {nspatial}D convolution: "
        f"the input and output specs need N, C and the filter spec's {nspatial} spatial letters, "
        "the filter spec I, O and those letters (e.g. ('NCHW', 'OIHW', 'NHWC'))")
  return lhs, rhs, out


def Flatten(batch_axis: int = 0, batch_axis_out: int = 0) -> _Triple:
  """Flattens all axes but the batch axis (NT's ``stax.Flatten``), in their order.

  Args:
    batch_axis: the input's batch axis.
    batch_axis_out: ``0`` (or ``-2``): the output is ``(batch, features)``; ``1``
      (or ``-1``): ``(features, batch)``.
  """
  if batch_axis_out not in (0, 1, -1, -2):
    raise ValueError(f"Flatten: batch_axis_out must be 0 or 1, got {batch_axis_out}")
  first = batch_axis_out in (0, -2)
  if batch_axis == 0 and first:
    return _Triple(L.flatten(), (0, -1), mask=masking.Rule(_flatten_mask))

  def flat(x):
    y = jnp.moveaxis(x, batch_axis, 0)
    y = y.reshape(y.shape[0], -1)
    return y if first else y.T

  def init(key, spec, ctx):
    del key, ctx
    return core.Spec(jax.eval_shape(flat, jax.ShapeDtypeStruct(spec.shape, jnp.float32)).shape), \
        (), ()

  def apply(params, x, feat, ctx):
    del params, ctx
    if feat.mask is not None:
      raise ValueError("Flatten with batch_axis != 0 or batch_axis_out != 0 does not take "
                       "width-padded inputs (a width sweep); use the defaults")
    return flat(x), core.Feat()

  def mask_fn(m, shape):
    return _flatten_mask(m, None) if shape is None else flat(jnp.broadcast_to(m, shape))

  lay = core.Layer(init, apply, L.flatten().kernel)
  # kernel_fn reads the inputs with their batch axis first; their channel axis does not matter.
  return _Triple(lay, (batch_axis, 0 if batch_axis == -1 else -1), mask=masking.Rule(mask_fn),
                 out_axes=(0, 1) if first else (1, 0))


def AvgPool(window_shape: Sequence[int], strides: Sequence[int] | None = None,
            padding: str = "VALID", normalize_edges: bool = False, batch_axis: int = 0,
            channel_axis: int = -1) -> _Triple:
  """Average pooling; NT's defaults: stride 1, normalized by the window size
  (``normalize_edges=True``: by the non-padding inputs in each window). Any ``batch_axis``
  and ``channel_axis``: ``window_shape`` and ``strides`` follow the other axes in order."""
  return _pool(window_shape, strides, padding, normalize_edges, batch_axis, channel_axis)


def SumPool(window_shape: Sequence[int], strides: Sequence[int] | None = None,
            padding: str = "VALID", batch_axis: int = 0, channel_axis: int = -1) -> _Triple:
  """Sum pooling (NT's ``stax.SumPool``): :func:`AvgPool` without the division."""
  return _pool(window_shape, strides, padding, False, batch_axis, channel_axis, normalize=False)


def _pool(window_shape, strides, padding, normalize_edges, batch_axis, channel_axis,
          normalize: bool = True) -> _Triple:
  padding = _check_padding(padding)
  window_shape = tuple(window_shape)
  strides = tuple(strides) if strides is not None else (1,) * len(window_shape)
  name = "AvgPool" if normalize else "SumPool"
  rule = (masking.Rule(lambda m, shape: kmasking.pool_mask(
      kmasking.whole_positions(m, name), window_shape, strides, padding), remask=True)
          if (batch_axis, channel_axis) == (0, -1) else None)
  return _Triple(_moved_axes(L.avg_pool(window_shape, strides, padding, normalize_edges,
                                        normalize), batch_axis, channel_axis),
                 (batch_axis, channel_axis), mask=rule)


def Aggregate(aggregate_axis=None, batch_axis: int = 0, channel_axis: int = -1,
              to_dense: Callable | None = lambda p: p, implementation: str = "DENSE") -> _Triple:
  """Graph aggregation (NT's ``stax.Aggregate``): each vertex becomes the weighted sum of its
  predecessors; ``apply_fn(params, x, pattern=A)``, ``kernel_fn(x1, x2, pattern=(A1, A2))``.

  ``implementation='DENSE'``: ``A`` is ``(batch, *V, *V)`` (``V`` the sizes of
  ``aggregate_axis``, default all but batch and channel), ``to_dense`` decodes
  it first; ``'SPARSE'``: integer arcs ``(batch, n_edges, K, 2)`` (tail, head),
  negative coordinates dropped. No pattern: the identity. See
  :mod:`jaxtheory.kernels.graph`.
  """
  # Masks pass through and the kernel is re-masked (NT's): masked vertices still receive
  # their neighbours' sums, but count as padding downstream.
  return _Triple(graph.aggregate(aggregate_axis, batch_axis, channel_axis, to_dense,
                                 implementation), (batch_axis, channel_axis), mask=_SAME_REMASK)


def GlobalAvgPool(batch_axis: int = 0, channel_axis: int = -1) -> _Triple:
  """Mean over the spatial axes (NT's ``stax.GlobalAvgPool``); the output keeps the batch and
  channel axes in their input order. With masks: the mean over the unmasked positions."""
  rule = masking.Rule(_global_pool_mask(batch_axis, channel_axis, "GlobalAvgPool"),
                      apply=_global_avg_pool_masked(batch_axis, channel_axis))
  return _Triple(_moved_axes(L.global_avg_pool(), batch_axis, channel_axis, keep_ndim=False),
                 (batch_axis, channel_axis), mask=rule,
                 out_axes=_pooled_axes(batch_axis, channel_axis))


def GlobalSumPool(batch_axis: int = 0, channel_axis: int = -1) -> _Triple:
  """Sum over the spatial axes (NT's ``stax.GlobalSumPool``); the output keeps the batch and
  channel axes in their input order."""
  rule = masking.Rule(_global_pool_mask(batch_axis, channel_axis, "GlobalSumPool"))
  return _Triple(_moved_axes(L.global_avg_pool(normalize=False), batch_axis, channel_axis,
                             keep_ndim=False), (batch_axis, channel_axis), mask=rule,
                 out_axes=_pooled_axes(batch_axis, channel_axis))


def _pooled_axes(batch_axis: int, channel_axis: int) -> tuple[int, int]:
  """The ``(batch, channel)`` axes of a global pool's 2-D output: in their input order."""
  first = (batch_axis < channel_axis if (batch_axis < 0) == (channel_axis < 0)
           else batch_axis >= 0)
  return (0, 1) if first else (1, 0)


def _spatial_axes(ndim: int, batch_axis: int, channel_axis: int) -> tuple[int, ...]:
  return tuple(a for a in range(ndim) if a not in (batch_axis % ndim, channel_axis % ndim))


def _global_pool_mask(batch_axis: int, channel_axis: int, where: str):
  """A global pool's output mask: every position masked (the kernel's masks are channels-last;
  the activation's keep the batch and channel axes where they are)."""

  def mask_fn(m, shape):
    if shape is None:
      return jnp.all(kmasking.whole_positions(m, where), axis=tuple(range(1, m.ndim - 1)))
    return jnp.all(m, axis=_spatial_axes(m.ndim, batch_axis, channel_axis))

  return mask_fn


def _global_avg_pool_masked(batch_axis: int, channel_axis: int):
  """The mean over an activation's unmasked positions (NT's masked mean)."""

  def apply(params, x, mask, feat, ctx):
    del params, ctx
    axes = _spatial_axes(x.ndim, batch_axis, channel_axis)
    count = jnp.sum(~jnp.broadcast_to(mask, x.shape), axis=axes)
    return jnp.sum(x, axis=axes) / jnp.maximum(count, 1).astype(x.dtype), feat

  return apply


def _flatten_mask(mask, shape):
  """Flatten's mask: the input's (broadcast to the input, when its shape is known) reshaped."""
  if shape is not None:
    mask = jnp.broadcast_to(mask, shape)
  return mask.reshape(mask.shape[0], -1)


def DotGeneral(*, lhs=None, rhs=None, dimension_numbers=(((), ()), ((), ())), precision=None,
               batch_axis: int = 0, channel_axis: int = -1) -> _Triple:
  """A constant, untrained ``lax.dot_general`` with the input (NT's ``stax.DotGeneral``).

  ``apply_fn`` computes ``lax.dot_general(x, rhs, dimension_numbers)`` or
  ``lax.dot_general(lhs, x, dimension_numbers)`` (at most one of ``lhs`` and
  ``rhs`` is given; neither: the identity; a number or 0-d array: ``c * x``).
  Any linear map of the input can be written so: sums or differences of
  positions, permutations, strides, masks, per-example weights (batching over
  the batch axis), ...

  The kernel is the same contraction applied to both copies of the input's
  covariance: contracted and batched spatial axes of the input are summed or
  paired with the operand's, the operand's free axes become new spatial axes,
  and the output's spatial axes follow its own order (``lax.dot_general``'s:
  batch axes, then the free axes of ``lhs``, then of ``rhs``). Contracting a
  spatial axis needs the covariances of all pairs of positions.

  Args:
    lhs: the constant left operand, or ``None`` (the input is the left one).
    rhs: the constant right operand, or ``None``.
    dimension_numbers: ``((lhs_contracting, rhs_contracting), (lhs_batch,
      rhs_batch))`` as in ``lax.dot_general``; the input's axes are those of the
      activation laid out with ``batch_axis`` and ``channel_axis``.
    precision: ``lax.dot_general``'s.
    batch_axis: the input's batch axis; it may be paired with an operand axis
      (per-example constants) or contracted (examples mixed: the output's first
      axis, the channel axis aside, becomes its batch, as in neural-tangents;
      ``kernel_fn`` then needs ``diagonal_batch=False``, and computes ``x1`` and
      a different ``x2``, of equal shapes, as one batch).
    channel_axis: the input's channel axis; it can be neither contracted nor
      batched (a ``ValueError``).

  Returns:
    ``(init_fn, apply_fn, kernel_fn)``.
  """
  if lhs is not None and rhs is not None:
    raise ValueError("DotGeneral: at most one of the constants lhs and rhs may be given; the "
                     "input is the other operand")
  is_lhs = lhs is not None
  other = lhs if is_lhs else rhs
  if other is None or (jnp.ndim(other) == 0 and not jax.tree.leaves(dimension_numbers)):
    return _scale_layer(1.0 if other is None else float(other))
  other = jnp.asarray(other)

  def spec(ndim, ctx=None):
    # kernel_fn(..., batch_axis=, channel_axis=) states the layout for every layer (NT's).
    b, c = kdot.input_axes_of(ctx) or (batch_axis, channel_axis)
    return kdot.Contraction.of(dimension_numbers, ndim, other.ndim, is_lhs, b, c)

  def dot(x):
    args = (other.astype(x.dtype), x) if is_lhs else (x, other.astype(x.dtype))
    return lax.dot_general(*args, dimension_numbers, precision)

  def init(key, s, ctx):
    del key, ctx
    return core.Spec(jax.eval_shape(dot, jax.ShapeDtypeStruct(s.shape, jnp.float32)).shape), (), ()

  def apply(params, x, feat, ctx):
    del params, feat, ctx
    return dot(x), core.Feat()

  def mask_fn(m, shape):
    return kdot.apply_mask(m, shape, other, dimension_numbers, is_lhs, channel_axis)

  def kernel_mask_fn(m, k, ctx):  # the kernel's (n, *spatial, c) mask, channels last
    return kdot.output_mask(m, other, spec(m.ndim, ctx), analytic.joint_split(k, ctx))

  return _Triple(core.Layer(init, apply, kdot.kernel_map(other, spec)),
                 (batch_axis, channel_axis),
                 mask=masking.Rule(mask_fn, kernel_mask_fn=kernel_mask_fn))


def _scale_layer(c: float) -> _Triple:
  """``c * x``: the kernel times ``c**2``; masks pass through."""

  def init(key, spec, ctx):
    del key, ctx
    return spec, (), ()

  def apply(params, x, feat, ctx):
    del params, ctx
    return x * jnp.asarray(c, x.dtype), feat

  def kernel(k, ctx):
    del ctx
    return analytic.scale(k, c * c)

  return _Triple(core.Layer(init, apply, kernel), mask=_SAME)


def ImageResize(shape: Sequence[int], method, antialias: bool = True,
                precision=lax.Precision.HIGHEST, batch_axis: int = 0,
                channel_axis: int = -1) -> _Triple:
  """Resizes the activation with ``jax.image.resize`` (NT's ``stax.ImageResize``).

  Args:
    shape: the output's shape, one entry per axis of the input, ``-1`` keeping
      that axis (the channel axis must be kept for ``kernel_fn``). Resizing
      the batch axis interpolates examples: ``kernel_fn`` needs
      ``diagonal_batch=False`` for it, and computes a different ``x2`` (of
      ``x1``'s shape) with ``x1`` as one batch
      (:func:`jaxtheory.kernels.resize.resize_batch`).
    method: ``'linear'`` (``'bilinear'``, ...), ``'nearest'``, or for ``apply_fn``
      only ``'cubic'``, ``'lanczos3'``, ``'lanczos5'`` (a ``jax.image.ResizeMethod``
      or its name).
    antialias: a triangular antialiasing filter when shrinking (linear).
    precision: of the interpolation's contractions.
    batch_axis: the input's batch axis.
    channel_axis: the input's channel axis.

  Returns:
    ``(init_fn, apply_fn, kernel_fn)``; the kernel resizes both copies of each
    spatial axis of the covariance alike (:mod:`jaxtheory.kernels.resize`). A mask
    marks an output entry only when all its contributions are masked (NT's rule).
  """
  shape = tuple(int(s) for s in shape)
  method = kresize.method_of(method)
  full = lambda in_shape: tuple(i if s == -1 else s for s, i in zip(shape, in_shape))
  resize = lambda x, to: jax.image.resize(x, to, method, antialias=antialias,
                                          precision=precision)

  def init(key, spec, ctx):
    del key, ctx
    if len(spec.shape) != len(shape):
      raise ValueError(f"ImageResize: shape {shape} has {len(shape)} entries for a "
                       f"{len(spec.shape)}-dimensional input")
    return core.Spec(full(spec.shape)), (), ()

  def apply(params, x, feat, ctx):
    del params, feat, ctx
    return resize(x, full(x.shape)), core.Feat()

  ndim = len(shape)
  b, c = batch_axis % ndim, channel_axis % ndim
  spatial = tuple(shape[a] for a in _spatial_axes(ndim, b, c))
  base = kresize.image_resize(spatial, method, antialias, precision)

  def kernel(k, ctx):
    if shape[c] != -1:
      raise ValueError(f"ImageResize: resizing the channel axis ({channel_axis}) has no "
                       "infinite-width limit; set shape[channel_axis] = -1")
    if shape[b] != -1:
      if getattr(ctx, "diagonal_batch", False):
        raise analytic.NeedsFullBatch("ImageResize (resizing the batch axis)")
      k = kresize.resize_batch(k, shape[b], shape[b], method, antialias, precision,
                               analytic.joint_split(k, ctx))
    return base(k, ctx)

  def mask_fn(m, in_shape):
    if in_shape is None:  # the kernel's (n, *spatial, c) mask
      to = (m.shape[0] if shape[b] == -1 else shape[b],) + tuple(
          i if s == -1 else s for s, i in zip(spatial, m.shape[1:-1]))
      return ~resize(~m, to + m.shape[-1:]).astype(bool)
    to = list(full(in_shape))
    to[c] = m.shape[c]
    return ~resize(~jnp.broadcast_to(m, tuple(in_shape[:c]) + (m.shape[c],) +
                                     tuple(in_shape[c + 1:])), tuple(to)).astype(bool)

  def kernel_mask_fn(m, k, ctx):  # a joint batch resizes each half's masks on its own
    split = analytic.joint_split(k, ctx)
    if shape[b] == -1 or split is None:
      return mask_fn(m, None)
    return analytic.by_halves(lambda half: mask_fn(half, None), m, (0,), split)

  return _Triple(core.Layer(init, apply, kernel), (batch_axis, channel_axis),
                 mask=masking.Rule(mask_fn, remask=True, kernel_mask_fn=kernel_mask_fn))


class _Slice:
  """``Slice[1:10, :, ::-1]`` is ``(slice(1, 10), slice(None), slice(None, None, -1))``."""

  def __getitem__(self, idx):
    return idx


Slice = _Slice()


def Index(idx, batch_axis: int = 0, channel_axis: int = -1) -> _Triple:
  """``x[idx]`` as a layer (NT's ``stax.Index``), ``idx`` built with :data:`Slice`.

  Args:
    idx: the index, e.g. ``stax.Slice[::2, :4, 0, ...]``: slices or integers
      per axis (an integer drops its axis), ``...`` for the remaining axes.
    batch_axis: the batch axis of the input.
    channel_axis: the channel axis of the input.

  Returns:
    ``(init_fn, apply_fn, kernel_fn)``. ``kernel_fn`` indexes the kernel's
    batch and spatial axes alike; it raises ``NotImplementedError`` if ``idx``
    indexes the channel axis (infinite in the kernel) or takes an integer on
    the batch axis (the kernel always keeps one), as NT's does.
  """

  def init(key, spec, ctx):
    del key, ctx
    return core.Spec(slice_shape(spec.shape, idx), spec.feat), (), ()

  def apply(params, x, feat, ctx):
    del params, ctx
    return x[idx], feat

  def kernel(k, ctx):
    ndim = k.nspatial + 2
    full = canonicalize_idx(idx, ndim)
    b, c = batch_axis % ndim, channel_axis % ndim
    if full[b] != slice(None):
      analytic.refuse_joint(ctx, "Index on the batch axis")
    if full[c] != slice(None):
      raise NotImplementedError(f"Index: indexing the channel axis {channel_axis} (infinite in "
                                f"the kernel) is not supported, got {idx}")
    if isinstance(full[b], int):
      raise NotImplementedError(
          f"Index: an integer on the batch axis {batch_axis} removes it, and kernels always "
          f"keep a batch axis; use a slice (e.g. {full[b]}:{full[b] + 1}) instead, got {idx}")
    spatial = tuple(i for a, i in enumerate(full) if a not in (b, c))
    if not k.diagonal_spatial:
      spatial = tuple(i for i in spatial for _ in range(2))

    def take(m, bn):
      if m.ndim < bn:  # a scalar NTK placeholder
        return m
      return m[(full[b],) * bn + spatial]

    return analytic._map(k, take)

  def mask_fn(m, shape):
    if shape is not None:  # the activation's mask, broadcast to it: indexed alike
      return jnp.broadcast_to(m, shape)[idx]
    # The kernel's (n, *spatial, c) mask: the batch and spatial entries of idx; a unit
    # (broadcast) axis stays as it is.
    ndim = m.ndim
    full = canonicalize_idx(idx, ndim)
    b, c = batch_axis % ndim, channel_axis % ndim
    entries = [full[b]] + [i for a, i in enumerate(full) if a not in (b, c)] + [slice(None)]
    return m[tuple(i if size > 1 else (0 if isinstance(i, int) else slice(None))
                   for i, size in zip(entries, m.shape))]

  # Integer indices drop axes: the output layout is left to the layers around it.
  return _Triple(core.Layer(init, apply, kernel), (batch_axis, channel_axis),
                 mask=masking.Rule(mask_fn), out_axes=None)


def LayerNorm(axis=-1, eps: float = 1e-12, batch_axis: int = 0,
              channel_axis: int = -1) -> _Triple:
  """Layer normalisation (NT's ``stax.LayerNorm``): ``(x - mean) / sqrt(eps + var)`` with the
  mean and variance taken over ``axis``.

  ``axis`` (an int or a tuple of them) must include the channel axis (without it
  there is no infinite-width limit); it may add spatial axes and the batch axis
  (statistics shared across the batch). Masked entries (``mask_constant``) are
  left out of the mean and variance; the mask passes through unchanged.
  """
  if batch_axis == channel_axis:
    raise ValueError(f"LayerNorm: batch_axis={batch_axis} and channel_axis={channel_axis} "
                     "name the same axis")

  def axes(ndim):
    """``(normalised axes, batch, channel)`` of an ``ndim``-dimensional activation."""
    ax = (axis,) if isinstance(axis, int) else tuple(axis)
    b, c = batch_axis % ndim, channel_axis % ndim
    if not all(isinstance(a, int) and -ndim <= a < ndim for a in ax):
      raise ValueError(f"LayerNorm: axis={axis!r} is out of range for a {ndim}-dimensional "
                       "input")
    ax = tuple(sorted({a % ndim for a in ax}))
    if c not in ax:
      raise ValueError(f"LayerNorm: normalising over the channel axis ({c}) is needed for an "
                       f"infinite-width limit; got axis={axis!r}")
    return ax, b, c

  def normalize(x, mask, feat):
    ax, _, _ = axes(x.ndim)
    keep = core.apply_mask(jnp.ones_like(x), feat)  # width padding: inactive features out
    if mask is not None:
      keep = keep * ~jnp.broadcast_to(mask, x.shape)
    count = jnp.maximum(jnp.sum(keep, ax, keepdims=True), 1)  # all masked: no statistics
    mean = jnp.sum(keep * x, ax, keepdims=True) / count
    var = jnp.sum(keep * (x - mean) ** 2, ax, keepdims=True) / count
    return core.apply_mask((x - mean) * lax.rsqrt(var + eps), feat)

  def init(key, spec, ctx):
    del key, ctx
    axes(len(spec.shape))
    return spec, (), ()

  def apply(params, x, feat, ctx):
    del params, ctx
    return normalize(x, None, feat), feat

  def masked_apply(params, x, mask, feat, ctx):
    del params, ctx
    return normalize(x, mask, feat), feat

  def kernel(k, ctx):
    ax, b, c = axes(k.nspatial + 2)
    spatial = [a for a in range(k.nspatial + 2) if a not in (b, c)]
    return analytic.layer_norm(eps, spatial_axes=tuple(spatial.index(a) for a in ax
                                                       if a in spatial),
                               over_batch=b in ax)(k, ctx)

  return _Triple(core.Layer(init, apply, kernel), (batch_axis, channel_axis),
                 mask=masking.Rule(lambda m, shape: m, apply=masked_apply))


def Dropout(rate: float, mode: str = "train") -> _Triple:
  """Dropout keeping each unit with probability ``rate`` (NT's ``stax.Dropout``);
  ``apply_fn`` needs ``rng=`` in train mode."""
  return _Triple(dropout_layer.dropout(rate, mode), mask=_SAME)


_name_layers(globals(), __name__)
