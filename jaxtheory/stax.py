"""A neural-tangents-compatible facade: ``stax`` names and signatures over :mod:`jaxtheory.nn`.

Every constructor returns ``(init_fn, apply_fn, kernel_fn)`` exactly as
neural-tangents 0.6.5's ``stax`` does (Novak et al. 2020), so NT code ports by
changing the import::

  from jaxtheory import stax
  init_fn, apply_fn, kernel_fn = stax.serial(
      stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu(), stax.Dense(1))
  out_shape, params = init_fn(jax.random.key(0), (-1, 10))
  y = apply_fn(params, x)
  k = kernel_fn(x1, x2, get=("nngp", "ntk"))    # namedtuple; get=None: NT's Kernel

* ``init_fn(key, input_shape) -> (output_shape, params)``; ``input_shape`` has
  a batch axis, which may be ``-1``.
* ``apply_fn(params, inputs, **kwargs)``; ``params`` are NT's: a tuple per
  ``serial``/``parallel``, ``(W, b)`` per ``Dense``/``Conv``/``ConvTranspose``
  (``W`` laid out as ``dimension_numbers[1]``, ``b`` shaped like the output
  with unit axes, ``None`` without a bias), ``()`` for layers without
  parameters; ``rng=`` feeds ``Dropout``.
* ``kernel_fn(x1_or_kernel, x2=None, get=None, **kwargs)``: NNGP and NTK of
  one output channel in NT's conventions (including the per-layer
  ``parameterization``, ``'ntk'`` or ``'standard'`` with its width scale
  ``s``), computed by :mod:`jaxtheory.kernels.analytic` (nonlinearities:
  :mod:`jaxtheory.kernels.nonlinear`). ``get=None`` returns NT's
  :class:`~jaxtheory.kernels.nt_kernel.Kernel` object (``.nngp``, ``.ntk``,
  ``.cov1``, ``.shape1``, ``.x1_is_x2``, ``.replace``, ...), a string that
  array, a tuple a namedtuple. A ``Kernel`` may be passed instead of inputs
  (``kernel_fn(kernel_fn(x))`` composes). ``diagonal_batch=False`` returns full
  self-covariances in ``cov1``/``cov2``; ``diagonal_spatial`` picks the layout;
  ``batch_size=`` computes in blocks (NT does this with ``nt.batch``).
* masking (NT's): ``apply_fn(params, x, mask_constant=c)`` and
  ``kernel_fn(x1, x2, mask_constant=c)`` treat entries equal to ``c`` as
  padding; ``apply_fn`` then returns a :class:`MaskedArray` (``unmask_fn``
  zeroes its masked entries). ``Dense`` and ``Conv`` (channels-last),
  ``AvgPool``, ``GlobalAvgPool`` (a mean over the unmasked positions),
  ``Flatten``, the nonlinearities, ``Dropout``, ``Identity``, ``DotGeneral``
  and the fan-in/fan-out combinators follow masks
  (:mod:`jaxtheory.kernels.masking`); other layers refuse a masked input with
  ``NotImplementedError``.
* every layer's three functions carry its constructor's ``__name__``, and
  :func:`layer` turns NT-style user layers into layers that compose with these.

Covered: ``serial``, ``parallel``, ``Dense``, ``Conv`` (1D-3D, ``'SAME'`` /
``'VALID'``, strides), ``Relu``, ``ABRelu``, ``LeakyRelu``, ``Abs``, ``Erf``,
``Gelu``, ``Sin``, ``Cos``, ``Sign``, ``Exp``, ``ExpNormalized``, ``Identity``,
``Monomial``, ``RectifiedMonomial``, ``Rbf``, ``ElementwiseNumerical``,
``Flatten``, ``AvgPool``, ``GlobalAvgPool``, ``LayerNorm`` (channel axis), ``Aggregate``,
``FanOut``, ``FanInSum``, ``FanInConcat``, ``repeat``, ``Elementwise``,
``Gaussian``, ``Gabor``, ``Sigmoid_like``, ``Hermite``, ``Polynomial``,
``Dropout``, ``layer``, ``ConvTranspose``, ``Index`` (with ``Slice``), ``DotGeneral`` with
a scalar operand (``c * x``). ``Conv`` takes ``dimension_numbers`` of any layout and
``Dense``, ``AvgPool``, ``GlobalAvgPool`` any ``batch_axis``/``channel_axis``;
``Conv``, ``ConvTranspose`` and ``AvgPool`` take ``'SAME'``, ``'VALID'`` and
``'CIRCULAR'`` padding (computed channels-last; the kernel's spatial axes follow the activation's, and
``kernel_fn`` reads its inputs with the first layer's batch and channel axes, as NT).

Not covered (a clear error, or simply absent): other ``batch_axis``/``channel_axis``
of ``Flatten`` and ``LayerNorm``; ``LayerNorm`` over
non-channel axes; attention (``GlobalSelfAttention``),
``BatchNorm`` (NT has none either),
``ConvLocal``, ``SumPool``/``GlobalSumPool``,
``DotGeneral`` with an array operand, ``ImageResize``, ``FanInProd``; NT's ``requires`` decorator (its values, ``Bool`` and
``Diagonal``, are here: :mod:`jaxtheory.kernels.requirements`). ``nt.batch``,
``nt.predict``, ``nt.empirical_kernel_fn`` and
``nt.monte_carlo_kernel_fn`` are in :mod:`jaxtheory.nt`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence


import jax
import jax.numpy as jnp

from jaxtheory import nn
from jaxtheory.kernels import analytic, graph as kgraph, nonlinear, nt_kernel
from jaxtheory.kernels import padding as kpadding
from jaxtheory.kernels.nt_kernel import Kernel
from jaxtheory.kernels.requirements import Bool, Diagonal  # noqa: F401 (NT's stax names)
from jaxtheory.kernels import masking as kmasking
from jaxtheory.nn import core, dropout as dropout_layer, graph, layers as L, masking
from jaxtheory.nn.masking import MaskedArray  # noqa: F401 (NT's stax name)
from jaxtheory.nn.indexing import canonicalize_idx, slice_shape

_CTX = nn.Ctx("ntk")
_PARAM = {"ntk": "ntk", "standard": "sp"}


class _Triple(tuple):
  """``(init_fn, apply_fn, kernel_fn)`` that remembers the jaxtheory layer behind it.

  The three functions are named after the constructor that built them (NT's
  ``init_fn.__name__ == 'Dense'``): :func:`_named` sets the name.
  """

  def __new__(cls, layer: core.Layer, in_axes=None, fans_out: bool = False,
              mask: masking.Rule | None | str = None):
    name = _Name()
    if mask != _PASS:  # combinators pass masks through; other layers follow ``mask`` or refuse
      layer = masking.masked(layer, mask, name)
    obj = tuple.__new__(cls, (_init_fn(layer), _apply_fn(layer), _kernel_fn(layer, in_axes)))
    obj.name = name
    obj.layer = layer
    # ``(batch_axis, channel_axis)`` the layer needs of its input (NT's ``requires``), a tuple
    # of those for several inputs, or ``None`` (any layout). ``kernel_fn`` lays inputs out so.
    obj.in_axes = in_axes
    obj.fans_out = fans_out
    return obj


class _Name:
  """A layer's name for its error messages, known once its constructor returns."""
  value = "this layer"

  def __str__(self):
    return self.value


_PASS = "pass"
_SAME = masking.identity_rule()
# Nonlinearities that can map a zero input to nonzero re-mask their kernel (as NT's do).
_SAME_REMASK = masking.identity_rule(remask=True)


def _named(constructor):
  """``constructor`` whose triples' functions carry its name (NT's layer names)."""

  @functools.wraps(constructor)
  def build(*args, **kwargs):
    triple = constructor(*args, **kwargs)
    for f in triple[:3]:
      f.__name__ = f.__qualname__ = constructor.__name__
    triple.name.value = constructor.__name__
    return triple

  return build


def _is_shape(s) -> bool:
  return all(isinstance(d, int) for d in s)


def _init_fn(layer):

  def to_spec(shape):
    if _is_shape(shape):
      return core.Spec(tuple(1 if d == -1 else int(d) for d in shape))
    return tuple(to_spec(s) for s in shape)

  def to_shape(spec, shape):
    if isinstance(spec, core.Spec):
      if _is_shape(shape) and -1 not in shape:
        return tuple(spec.shape)
      batch = shape[0] if _is_shape(shape) else -1
      return (batch,) + tuple(spec.shape[1:])
    shapes = shape if not _is_shape(shape) else [shape] * len(spec)
    return tuple(to_shape(s, sh) for s, sh in zip(spec, shapes))

  def init_fn(key, input_shape):
    spec, params, _ = layer.init(key, to_spec(tuple(input_shape)), _CTX)
    return to_shape(spec, tuple(input_shape)), params

  return init_fn


def _apply_fn(layer):

  def feats(x):
    return core.Feat() if hasattr(x, "shape") else tuple(feats(a) for a in x)


  def apply_fn(params, inputs, **kwargs):
    rng = kwargs.pop("rng", None)
    mask_constant = kwargs.pop("mask_constant", None)
    # Other keyword arguments are ignored, as NT's layers ignore those they do not use.
    ctx = _CTX if rng is None else dropout_layer.with_rng(_CTX, rng)
    ctx = kgraph.with_pattern(ctx, kwargs.pop("pattern", None))  # Aggregate's graph
    f = feats(masking.unmask(inputs))
    if mask_constant is not None:
      inputs = masking.mask_inputs(inputs, mask_constant)
    y, _ = layer.apply(params, inputs, f, ctx)
    return y

  return apply_fn


def _is_axes(a) -> bool:
  return isinstance(a, tuple) and len(a) == 2 and all(isinstance(i, int) for i in a)


def _channels_last(x, in_axes):
  """Inputs ``x`` (an array, a pytree of them, or ``None``) with each one's batch axis first
  and channel axis last, the other (spatial) axes kept in their order (NT's input kernel)."""
  if in_axes is None or x is None or nt_kernel.is_kernel(x):
    return x
  if _is_axes(in_axes):
    if not hasattr(x, "shape"):
      return x
    b, c = (a % x.ndim for a in in_axes)
    return jnp.moveaxis(jnp.asarray(x), (b, c), (0, x.ndim - 1))
  if isinstance(x, (tuple, list)) and len(x) == len(in_axes):
    return type(x)(_channels_last(a, ax) for a, ax in zip(x, in_axes))
  return x


def _kernel_fn(layer, in_axes=None):
  state = {}

  def kernel_fn(x1, x2=None, get=None, **kwargs):
    if layer.kernel is None:
      raise analytic.no_kernel_error(layer)
    if "fn" not in state:
      state["fn"] = nt_kernel.kernel_fn(layer, _CTX)
    return state["fn"](_channels_last(x1, in_axes), _channels_last(x2, in_axes), get, **kwargs)

  return kernel_fn


def _serial_in_axes(triples) -> object:
  """The input layout a serial stack needs: its first layer's that has one."""
  fanned = False
  for t in triples:
    axes = getattr(t, "in_axes", None)
    if axes is not None:
      if fanned and not _is_axes(axes):
        # One input copied into branches: the first branch that asks decides.
        axes = next((a for a in jax.tree.leaves(axes, is_leaf=_is_axes) if _is_axes(a)), None)
      return axes
    fanned = fanned or getattr(t, "fans_out", False)
  return None


def _perm(src: str, dst: str) -> tuple[int, ...]:
  """``x.transpose(_perm(src, dst))`` lays out as ``dst`` an array laid out as ``src``."""
  return tuple(src.index(c) for c in dst)


def _relaid(layer: core.Layer, lhs: str, canon: str, out: str) -> core.Layer:
  """``layer`` (computing in layout ``canon``) on inputs laid out as ``lhs``, answering in ``out``.

  Each string names the axes (``N`` batch, ``C`` channels, other letters spatial).
  The kernel's spatial axes follow the activation's spatial axes in order (NT's
  convention), so the kernel map permutes them likewise.
  """
  to_c, from_c = _perm(lhs, canon), _perm(canon, out)
  sp = lambda spec: [c for c in spec if c not in "NC"]
  k_to, k_from = _perm(sp(lhs), sp(canon)), _perm(sp(canon), sp(out))

  def init(key, spec, ctx):
    o, params, scales = layer.init(key, core.Spec(tuple(spec.shape[i] for i in to_c), spec.feat),
                                   ctx)
    return core.Spec(tuple(o.shape[i] for i in from_c), o.feat), params, scales

  def apply(params, x, feat, ctx):
    y, f = layer.apply(params, jnp.transpose(x, to_c), feat, ctx)
    return jnp.transpose(y, from_c), f

  def kernel(k, ctx):
    out_k = layer.kernel(analytic.permute_spatial(k, k_to), ctx)
    return analytic.permute_spatial(out_k, k_from)

  return core.Layer(init, apply, kernel)


def _moved_axes(layer: core.Layer, batch_axis: int, channel_axis: int,
                keep_ndim: bool = True) -> core.Layer:
  """``layer`` (channels-last, batch first) on activations with the given batch and channel axes.

  The spatial axes keep their order, so the kernel map is unchanged. With
  ``keep_ndim=False`` the layer's output is ``(batch, channels)`` (global
  pooling) and is answered as ``(channels, batch)`` when the channel axis came first.
  """
  if (batch_axis, channel_axis) == (0, -1):
    return layer

  def axes(ndim):
    b, c = batch_axis % ndim, channel_axis % ndim
    if b == c:
      raise ValueError(f"batch_axis={batch_axis} and channel_axis={channel_axis} name the same "
                       f"axis of a {ndim}-dimensional input")
    return b, c

  def to_std(shape):
    b, c = axes(len(shape))
    rest = [d for i, d in enumerate(shape) if i not in (b, c)]
    return (shape[b], *rest, shape[c])

  def from_std(shape, ndim_in):
    b, c = axes(ndim_in)
    if not keep_ndim:
      return tuple(shape) if b < c else tuple(shape)[::-1]
    out = list(shape[1:-1])
    for i, d in sorted([(b, shape[0]), (c, shape[-1])]):
      out.insert(i, d)
    return tuple(out)

  def init(key, spec, ctx):
    o, params, scales = layer.init(key, core.Spec(to_std(spec.shape), spec.feat), ctx)
    return core.Spec(from_std(o.shape, len(spec.shape)), o.feat), params, scales

  def apply(params, x, feat, ctx):
    b, c = axes(x.ndim)
    y, f = layer.apply(params, jnp.moveaxis(x, (b, c), (0, x.ndim - 1)), feat, ctx)
    if not keep_ndim:
      return (y if b < c else y.T), f
    return jnp.moveaxis(y, (0, y.ndim - 1), (b, c)), f

  return core.Layer(init, apply, layer.kernel)


def _layer(t) -> core.Layer:
  if not isinstance(t, _Triple):
    raise TypeError("jaxtheory.stax combinators take layers built by jaxtheory.stax "
                    f"(got {type(t).__name__}); neural-tangents triples cannot be mixed in")
  return t.layer


def _param(parameterization: str) -> str:
  p = parameterization.lower()
  if p not in _PARAM:
    raise ValueError(f"parameterization must be 'ntk' or 'standard', got {parameterization!r}")
  return _PARAM[p]


def _check_axes(batch_axis=0, channel_axis=-1):
  if batch_axis != 0 or channel_axis not in (-1,):
    raise ValueError("jaxtheory.stax supports channels-last inputs only (batch_axis=0, "
                     f"channel_axis=-1), got batch_axis={batch_axis}, channel_axis={channel_axis}")


def _width_scaled(layer: core.Layer, s, parameterization: str) -> core.Layer:
  r"""NT's ``s = (s_in, s_out)`` of the standard parametrization (Sohl-Dickstein et al. 2020).

  NT stores the weight with std :math:`W_{std}/\sqrt{N_{in}/s_{in}}` and
  divides the product by :math:`\sqrt{s_{in}}` (``layer`` is built with
  ``s_out * out_dim`` outputs), so the function is that of the plain layer while
  the weight's gradient, hence the NTK, shrinks by :math:`s_{in}`: the kernel
  sees :math:`N_{in}/s_{in}` input channels. ``'ntk'`` ignores ``s``, as NT's.
  """
  s_in, s_out = (int(v) for v in s)
  if s_in < 1 or s_out < 1:
    raise ValueError(f"s must hold two positive integers, got {tuple(s)}")
  if (s_in, s_out) == (1, 1) or parameterization.lower() == "ntk":
    return layer
  root = s_in ** 0.5

  def init(key, spec, ctx):
    out, params, scales = layer.init(key, spec, ctx)
    return out, {**params, "W": params["W"] * root}, scales

  def apply(params, x, feat, ctx):
    return layer.apply({**params, "W": params["W"] / root}, x, feat, ctx)

  def kernel(k, ctx):
    out = layer.kernel(k.replace(channels=k.channels / s_in), ctx)
    return out

  return core.Layer(init, apply, kernel)


def _s_out(s, parameterization: str) -> int:
  return 1 if parameterization.lower() == "ntk" else int(tuple(s)[1])


def _check_padding(padding):
  """NT's paddings, as strings or its ``Padding`` enum."""
  return kpadding.check(getattr(padding, "value", padding))


def _nt_params(layer: core.Layer, w_specs: tuple[str, str] | None = None,
               b_axis: int = -1) -> core.Layer:
  """``layer`` (parameters ``{'W': W, 'b': b}``) holding NT's parameters: a tuple ``(W, b)``.

  ``W`` is laid out as NT lays it out: ``w_specs = (ours, NT's)`` name its axes
  in each layout (``None``: the same layout). ``b`` has the output's rank, its
  values on ``b_axis`` and unit axes elsewhere, or is ``None`` without a bias.
  ``apply`` takes that tuple (a scalar ``b`` broadcasts) or jaxtheory's dict.
  """
  w_perm, undo = (None, None) if w_specs is None else (_perm(*w_specs), _perm(*w_specs[::-1]))

  def init(key, spec, ctx):
    out, params, scales = layer.init(key, spec, ctx)
    W = params["W"] if w_perm is None else jnp.transpose(params["W"], w_perm)
    b = params.get("b")
    if b is not None:
      shape = [1] * len(out.shape)
      shape[b_axis % len(out.shape)] = b.shape[0]
      b = b.reshape(shape)
    return out, (W, b), (scales["W"], scales.get("b"))

  def apply(params, x, feat, ctx):
    if not isinstance(params, dict):
      try:
        W, b = params
      except (TypeError, ValueError):
        raise TypeError("a Dense/Conv/ConvTranspose layer's parameters are NT's (W, b), got "
                        f"{type(params).__name__}") from None
      W = jnp.asarray(W) if undo is None else jnp.transpose(jnp.asarray(W), undo)
      params = {"W": W}
      if b is not None:
        params["b"] = jnp.reshape(b, (-1,) if jnp.ndim(b) else ())
    return layer.apply(params, x, feat, ctx)

  return core.Layer(init, apply, layer.kernel)


# ----------------------------------------------------------------------------
# Combinators.


def serial(*layers) -> _Triple:
  """Composes layers left to right (NT's ``stax.serial``)."""
  return _Triple(nn.serial(*map(_layer, layers)), _serial_in_axes(layers),
                 any(getattr(t, "fans_out", False) for t in layers[:1]), mask=_PASS)


def parallel(*layers) -> _Triple:
  """Applies the ``i``-th layer to the ``i``-th input (NT's ``stax.parallel``)."""
  axes = tuple(getattr(t, "in_axes", None) for t in layers)
  return _Triple(nn.parallel(*map(_layer, layers)),
                 axes if any(a is not None for a in axes) else None, mask=_PASS)


def FanOut(num: int) -> _Triple:
  return _Triple(nn.fan_out(num), fans_out=True, mask=_PASS)


def FanInSum() -> _Triple:
  return _Triple(nn.fan_in_sum(), mask=masking.Rule(lambda ms, shapes: kmasking.sum_masks(ms)))


def FanInConcat(axis: int = -1) -> _Triple:
  return _Triple(nn.fan_in_concat(axis), mask=masking.Rule(
      lambda ms, shapes: kmasking.concat_masks(ms, shapes, axis)))


def Identity() -> _Triple:
  return _Triple(nn.identity_layer(), mask=_SAME)


def Dropout(rate: float, mode: str = "train") -> _Triple:
  """Dropout keeping each unit with probability ``rate`` (NT's ``stax.Dropout``);
  ``apply_fn`` needs ``rng=`` in train mode."""
  return _Triple(dropout_layer.dropout(rate, mode), mask=_SAME)


# ----------------------------------------------------------------------------
# Linear layers.


def Dense(out_dim: int, W_std: float = 1.0, b_std: float | None = None, batch_axis: int = 0,
          channel_axis: int = -1, parameterization: str = "ntk",
          s: tuple[int, int] = (1, 1)) -> _Triple:
  """Fully connected layer on the channel axis (NT's ``stax.Dense``); any ``batch_axis`` and
  ``channel_axis`` (the other axes are spatial and keep their place)."""
  p = _param(parameterization)
  lay = _width_scaled(L.dense(out_dim * _s_out(s, parameterization), W_std, b_std,
                              parametrization=p), s, parameterization)
  rule = (masking.Rule(lambda m, shape: kmasking.collapse_channels(m), remask=True)
          if (batch_axis, channel_axis) == (0, -1) else None)
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
  window = tuple(filter_shape)
  strides = (1,) * len(window) if strides is None else tuple(strides)
  rule = masking.Rule(lambda m, shape: kmasking.pool_mask(kmasking.collapse_channels(m), window,
                                                          strides, padding), remask=True)
  return _conv_triple(lay, dimension_numbers, len(window), rule)


def ConvTranspose(out_chan: int, filter_shape: Sequence[int],
                  strides: Sequence[int] | None = None, padding: str = "VALID",
                  W_std: float = 1.0, b_std: float | None = None,
                  dimension_numbers: tuple[str, str, str] | None = None,
                  parameterization: str = "ntk", s: tuple[int, int] = (1, 1)) -> _Triple:
  """Transposed convolution (NT's ``stax.ConvTranspose``, ``lax.conv_transpose``).

  Args:
    out_chan: output channels.
    filter_shape: the filter's spatial sizes (in the filter spec's order).
    strides: per spatial axis (default 1); the output grows by them.
    padding: ``'SAME'``, ``'VALID'`` or ``'CIRCULAR'`` (the ``'VALID'`` output folded
      onto ``n * stride`` periodic positions).
    W_std: weight standard deviation.
    b_std: bias standard deviation (``None``: no bias).
    dimension_numbers: ``(lhs, rhs, out)`` specs of any layout, as in :func:`Conv`.
    parameterization: ``'ntk'`` or ``'standard'``.
    s: NT's ``(s_in, s_out)`` width scale of the standard parameterization.

  Returns:
    ``(init_fn, apply_fn, kernel_fn)``.
  """
  padding = _check_padding(padding)
  lay = _width_scaled(
      L.conv_transpose(out_chan * _s_out(s, parameterization), filter_shape, strides, padding,
                       W_std, b_std, parametrization=_param(parameterization)),
      s, parameterization)
  return _conv_triple(lay, dimension_numbers, len(tuple(filter_shape)))


def _conv_triple(lay, dimension_numbers, nspatial: int, rule=None) -> _Triple:
  """A channels-last conv layer read and written in ``dimension_numbers``' layouts, its
  filter laid out as ``dimension_numbers[1]`` and its bias shaped like the output (NT's);
  masks follow ``rule`` in the channels-last layout only."""
  if dimension_numbers is None:
    return _Triple(_nt_params(lay), (0, -1), mask=rule)
  lhs, rhs, out = _conv_specs(dimension_numbers, nspatial)
  canon = "N" + "".join(c for c in rhs if c not in "IO") + "C"
  if not (lhs == canon == out):
    lay = _relaid(lay, lhs, canon, out)
  ours = canon[1:-1] + "IO"  # jaxtheory's filter: spatial axes (in rhs's order), in, out
  return _Triple(_nt_params(lay, None if ours == rhs else (ours, rhs), out.index("C")),
                 (lhs.index("N"), lhs.index("C")), mask=rule if lhs == canon == out else None)


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
  _check_axes(batch_axis)
  if batch_axis_out != 0:
    raise ValueError("only batch_axis_out=0 is covered")
  return _Triple(L.flatten(), (0, -1), mask=masking.Rule(_flatten_mask))


def AvgPool(window_shape: Sequence[int], strides: Sequence[int] | None = None,
            padding: str = "VALID", normalize_edges: bool = False, batch_axis: int = 0,
            channel_axis: int = -1) -> _Triple:
  """Average pooling; NT's defaults: stride 1, normalized by the window size
  (``normalize_edges=True``: by the non-padding inputs in each window). Any ``batch_axis``
  and ``channel_axis``: ``window_shape`` and ``strides`` follow the other axes in order."""
  padding = _check_padding(padding)
  window_shape = tuple(window_shape)
  strides = tuple(strides) if strides is not None else (1,) * len(window_shape)
  rule = (masking.Rule(lambda m, shape: kmasking.pool_mask(m, window_shape, strides, padding),
                       remask=True) if (batch_axis, channel_axis) == (0, -1) else None)
  return _Triple(_moved_axes(L.avg_pool(window_shape, strides, padding, normalize_edges),
                             batch_axis, channel_axis), (batch_axis, channel_axis), mask=rule)


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
  return _Triple(graph.aggregate(aggregate_axis, batch_axis, channel_axis, to_dense,
                                 implementation), (batch_axis, channel_axis))


def GlobalAvgPool(batch_axis: int = 0, channel_axis: int = -1) -> _Triple:
  """Mean over the spatial axes (NT's ``stax.GlobalAvgPool``); the output keeps the batch and
  channel axes in their input order."""
  rule = (masking.Rule(lambda m, shape: jnp.all(m, axis=tuple(range(1, m.ndim - 1))),
                       apply=_global_avg_pool_masked) if (batch_axis, channel_axis) == (0, -1)
          else None)
  return _Triple(_moved_axes(L.global_avg_pool(), batch_axis, channel_axis, keep_ndim=False),
                 (batch_axis, channel_axis), mask=rule)


def _global_avg_pool_masked(params, x, mask, feat, ctx):
  """The mean over a channels-last activation's unmasked positions (NT's masked mean)."""
  del params, ctx
  axes = tuple(range(1, x.ndim - 1))
  count = jnp.sum(~jnp.broadcast_to(mask, x.shape), axis=axes)
  return jnp.sum(x, axis=axes) / jnp.maximum(count, 1).astype(x.dtype), feat


def _flatten_mask(mask, shape):
  """Flatten's mask: the input's (broadcast to the input, when its shape is known) reshaped."""
  if shape is not None:
    mask = jnp.broadcast_to(mask, shape)
  return mask.reshape(mask.shape[0], -1)


def DotGeneral(*, lhs=None, rhs=None, dimension_numbers=(((), ()), ((), ())), precision=None,
               batch_axis: int = 0, channel_axis: int = -1) -> _Triple:
  """A constant factor times the input (NT's ``stax.DotGeneral`` with a scalar operand).

  ``lhs`` or ``rhs`` (at most one) is a number or a 0-d array ``c``: the layer
  computes ``c * x`` and its kernel ``c^2 K``; with both ``None`` it is the
  identity. Array operands, which NT contracts with the input by
  ``lax.dot_general(..., dimension_numbers)``, are not supported here (a clear
  error); masks pass through unchanged.
  """
  del precision, batch_axis, channel_axis  # a scalar acts alike on every axis
  if lhs is not None and rhs is not None:
    raise ValueError("DotGeneral: at most one of the constants lhs and rhs may be given; the "
                     "input is the other operand")
  other = lhs if rhs is None else rhs
  c = 1.0 if other is None else other
  if jnp.ndim(c) != 0 or jax.tree.leaves(dimension_numbers):
    raise NotImplementedError(
        "DotGeneral with an array operand (a contraction with the input) is not supported by "
        "jaxtheory.stax; a scalar lhs or rhs (c * x) is, with empty dimension_numbers")
  c = float(c)

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
    del ctx
    ndim = k.nspatial + 2
    full = canonicalize_idx(idx, ndim)
    b, c = batch_axis % ndim, channel_axis % ndim
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

  return _Triple(core.Layer(init, apply, kernel), (batch_axis, channel_axis))


def unmask_fn(apply_fn: Callable) -> Callable:
  """NT's ``stax.unmask_fn``: ``apply_fn`` whose masked outputs (:class:`MaskedArray`) are
  returned as plain arrays with the masked entries zeroed."""

  @functools.wraps(apply_fn)
  def fn(*args, **kwargs):
    return masking.unmask(apply_fn(*args, **kwargs))

  return fn


def LayerNorm(axis=-1, eps: float = 1e-12, batch_axis: int = 0,
              channel_axis: int = -1) -> _Triple:
  """Layer norm over the channel axis (NT's ``stax.LayerNorm``)."""
  _check_axes(batch_axis, channel_axis)
  if axis not in (-1, (-1,), [-1]):
    raise ValueError(f"LayerNorm over axis={axis!r} is not covered (only the channel axis, -1)")
  return _Triple(L.layer_norm(eps), (0, -1))


# ----------------------------------------------------------------------------
# Nonlinearities.


def Relu(do_stabilize: bool = False) -> _Triple:
  del do_stabilize  # float64 kernels need no rescaling
  return _Triple(L.relu(), mask=_SAME)


def ABRelu(a: float, b: float, do_stabilize: bool = False) -> _Triple:
  del do_stabilize
  return _Triple(L.ab_relu(a, b), mask=_SAME)


def LeakyRelu(alpha: float, do_stabilize: bool = False) -> _Triple:
  del do_stabilize
  return _Triple(L.leaky_relu(alpha), mask=_SAME)


def Abs(do_stabilize: bool = False) -> _Triple:
  del do_stabilize
  return _Triple(L.ab_relu(-1.0, 1.0), mask=_SAME)


def Erf(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> _Triple:
  return _Triple(L.erf(a, b, c), mask=_SAME_REMASK)


def Gelu(approximate: bool = False) -> _Triple:
  """GELU; as in NT, ``approximate`` changes ``apply_fn`` only (the kernel is exact)."""
  lay = L.gelu(approximate)
  return _Triple(core.Layer(lay.init, lay.apply, nonlinear.gelu()), mask=_SAME)


def Sin(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> _Triple:
  return _Triple(L.sin(a, b, c), mask=_SAME_REMASK)


def Cos(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> _Triple:
  return _Triple(L.cos(a, b, c), mask=_SAME_REMASK)


def Sign() -> _Triple:
  return _Triple(L.sign(), mask=_SAME)


def Exp(a: float = 1.0, b: float = 1.0) -> _Triple:
  return _Triple(L.exp(a, b), mask=_SAME_REMASK)


def ExpNormalized(gamma: float = 1.0, shift: float = -1.0, do_clip: bool = False) -> _Triple:
  """The normalized Gaussian kernel; kernel-only, like NT's (``apply_fn`` raises)."""
  base = L.identity()

  def apply(params, x, feat, ctx):
    raise NotImplementedError("ExpNormalized has no finite-width apply_fn (as in NT)")

  return _Triple(core.Layer(base.init, apply, nonlinear.exp_normalized(gamma, shift, do_clip)),
                 mask=_SAME_REMASK)


def Monomial(degree: int) -> _Triple:
  return _Triple(L.monomial(degree), mask=_SAME)


def RectifiedMonomial(degree: int) -> _Triple:
  return _Triple(L.rectified_monomial(degree), mask=_SAME)


def Rbf(gamma: float = 1.0) -> _Triple:
  return _Triple(L.rbf(gamma), mask=_SAME_REMASK)


def ElementwiseNumerical(fn: Callable, deg: int,
                         df: Callable | None = None) -> _Triple:
  """Any elementwise ``fn`` with a Gauss-Hermite kernel of degree ``deg``."""
  return _Triple(L.elementwise(fn, deg=deg, df=df), mask=_SAME_REMASK)


def Gaussian(a: float = 1.0, b: float = -1.0) -> _Triple:
  """``a * exp(b * x ** 2)``, closed-form kernel."""
  return _Triple(L.gaussian(a, b), mask=_SAME_REMASK)


def Gabor() -> _Triple:
  """``exp(-x ** 2) * sin(x)``, closed-form kernel."""
  return _Triple(L.gabor(), mask=_SAME)


def Sigmoid_like() -> _Triple:
  """``0.5 * erf(x / 2.4020563531719796) + 0.5``: a sigmoid with an erf kernel (NT's constant)."""
  return Erf(a=0.5, b=1 / 2.4020563531719796, c=0.5)


def Hermite(degree: int) -> _Triple:
  """Normalized Hermite polynomial; inputs assumed to have unit variance (as in NT)."""
  return _Triple(L.hermite(degree), mask=_SAME_REMASK)


def Polynomial(coef: Sequence[float]) -> _Triple:
  """``sum_i coef[i] * x ** i`` with its closed-form kernel."""
  return _Triple(L.polynomial(coef), mask=_SAME)


def Elementwise(fn: Callable | None = None, nngp_fn: Callable | None = None,
                d_nngp_fn: Callable | None = None) -> _Triple:
  """A nonlinearity ``fn`` with its dual ``nngp_fn(cov12, var1, var2)`` (and optionally
  ``d_nngp_fn``, else the derivative of ``nngp_fn`` in ``cov12``)."""
  return _Triple(L.dual_elementwise(fn, nngp_fn, d_nngp_fn), mask=_SAME_REMASK)


def repeat(layer, n: int) -> _Triple:
  """``layer`` composed ``n`` times with stacked parameters (NT's ``stax.repeat``)."""
  return _Triple(core.repeat(_layer(layer), n), getattr(layer, "in_axes", None), mask=_PASS)


def layer(layer_fn: Callable) -> Callable:
  """NT's ``@stax.layer``: a user's layer ``(init_fn, apply_fn, kernel_fn)`` as a stax layer.

  ``layer_fn(*args, **kwargs)`` returns NT-style functions: ``init_fn(key,
  input_shape) -> (output_shape, params)``, ``apply_fn(params, x, **kwargs)``
  and ``kernel_fn(kernel, **kwargs) -> kernel`` on a :class:`Kernel`. The
  result composes with every other layer here (its kernel map converts to and
  from :class:`Kernel` around the user's ``kernel_fn``).
  """

  @functools.wraps(layer_fn)
  def build(*args, **kwargs):
    init_fn, apply_fn, kernel_fn = layer_fn(*args, **kwargs)
    triple = _Triple(core.Layer(_foreign_init(init_fn), _foreign_apply(apply_fn),
                                nt_kernel.foreign_kernel_map(kernel_fn)))
    for f in triple[:3]:
      f.__name__ = f.__qualname__ = layer_fn.__name__
    return triple

  return build


def _foreign_init(init_fn):

  def init(key, spec, ctx):
    del ctx
    shape, params = init_fn(key, spec.shape)
    return core.Spec(tuple(shape)), params, jax.tree.map(lambda _: 1.0, params)

  return init


def _foreign_apply(apply_fn):

  def apply(params, x, feat, ctx):
    del feat, ctx
    return apply_fn(params, x), core.Feat()

  return apply


def _name_layers():
  """Names every public constructor's triples after it (run once at import)."""
  g = globals()
  for name, value in list(g.items()):
    if (callable(value) and not name.startswith("_") and name[:1].isupper()
        and getattr(value, "__module__", None) == __name__ and not isinstance(value, type)):
      g[name] = _named(value)
  g["serial"], g["parallel"], g["repeat"] = (_named(serial), _named(parallel), _named(repeat))


_name_layers()
