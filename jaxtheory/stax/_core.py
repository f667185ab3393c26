"""Plumbing of :mod:`jaxtheory.stax`: the ``(init_fn, apply_fn, kernel_fn)`` triple and its helpers.

:class:`_Triple` wraps a :mod:`jaxtheory.nn` layer as NT's three functions;
the rest lays inputs out (batch and channel axes, ``dimension_numbers``),
converts parameters to NT's ``(W, b)``, checks arguments and names each
constructor's triples (:func:`_name_layers`, run by every constructor module).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxtheory import nn
from jaxtheory.kernels import analytic, dot_general as kdot, graph as kgraph, nt_kernel
from jaxtheory.kernels import padding as kpadding
from jaxtheory.nn import core, dropout as dropout_layer, masking

_CTX = nn.Ctx("ntk")
_PARAM = {"ntk": "ntk", "standard": "sp"}


class _Triple(tuple):
  """``(init_fn, apply_fn, kernel_fn)`` that remembers the jaxtheory layer behind it.

  The three functions are named after the constructor that built them (NT's
  ``init_fn.__name__ == 'Dense'``): :func:`_named` sets the name.
  """

  def __new__(cls, layer: core.Layer, in_axes=None, fans_out: bool = False,
              mask: masking.Rule | None | str = None, out_axes="in", white: bool = False):
    name = _Name()
    if mask != _PASS:  # combinators pass masks through; other layers follow ``mask`` or refuse
      layer = _whitening(masking.masked(layer, mask, name), white)
    if out_axes == "in":
      out_axes = in_axes if _is_axes(in_axes) else None
    obj = tuple.__new__(cls, (_init_fn(layer), _apply_fn(layer),
                              _kernel_fn(layer, in_axes, out_axes)))
    obj.name = name
    obj.layer = layer
    # ``(batch_axis, channel_axis)`` the layer needs of its input (NT's ``requires``), a tuple
    # of those for several inputs, or ``None`` (any layout). ``kernel_fn`` lays inputs out so.
    obj.in_axes = in_axes
    # ``(batch_axis, channel_axis)`` of the output, or ``None``: the layout it was given
    # (elementwise layers) or not known. The NT Kernel's ``shape1``/``batch_axis`` follow it.
    obj.out_axes = out_axes
    obj.fans_out = fans_out
    return obj


def _whitening(layer: core.Layer, white: bool) -> core.Layer:
  """``layer`` whose output kernel says whether its distinct positions are known not to covary
  (``white``: a locally connected layer), so that pooling may read the diagonal layout."""
  if layer.kernel is None:
    return layer

  def kernel(k, ctx):
    return jax.tree.map(lambda kk: kk.replace(white=white), layer.kernel(k, ctx),
                        is_leaf=lambda v: isinstance(v, analytic.Kernel))

  return core.Layer(layer.init, layer.apply, kernel)


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


def _kernel_fn(layer, in_axes=None, out_axes=None):
  state = {}

  def kernel_fn(x1, x2=None, get=None, **kwargs):
    if layer.kernel is None:
      raise analytic.no_kernel_error(layer)
    # NT's batch_axis= / channel_axis=: where every activation keeps them, the inputs included.
    given = (kwargs.pop("batch_axis", None), kwargs.pop("channel_axis", None))
    axes = in_axes
    if given != (None, None):
      default = in_axes if _is_axes(in_axes) else (0, -1)
      axes = tuple(d if g is None else int(g) for g, d in zip(given, default))
    key = None if given == (None, None) else axes
    if key not in state:
      ctx = _CTX if key is None else kdot.with_input_axes(_CTX, axes)
      state[key] = nt_kernel.kernel_fn(layer, ctx)
    layout = axes if given != (None, None) else out_axes
    return state[key](_channels_last(x1, axes), _channels_last(x2, axes), get,
                      out_axes=layout if _is_axes(layout) else None, **kwargs)

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


def _layout_perms(lhs: str, canon: str, out: str):
  """``(to_c, from_c, k_to, k_from)``: the transposes of an activation from ``lhs`` to ``canon``
  and from ``canon`` to ``out``, and the same of its spatial axes alone (kernels, masks)."""
  sp = lambda spec: [c for c in spec if c not in "NC"]
  return (_perm(lhs, canon), _perm(canon, out), _perm(sp(lhs), sp(canon)),
          _perm(sp(canon), sp(out)))


def _relaid(layer: core.Layer, lhs: str, canon: str, out: str) -> core.Layer:
  """``layer`` (computing in layout ``canon``) on inputs laid out as ``lhs``, answering in ``out``.

  Each string names the axes (``N`` batch, ``C`` channels, other letters spatial).
  The kernel's spatial axes follow the activation's spatial axes in order (NT's
  convention), so the kernel map permutes them likewise.
  """
  to_c, from_c, k_to, k_from = _layout_perms(lhs, canon, out)

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
               b_axis: int = -1, b_local: bool = False,
               b_specs: tuple[str, str] | None = None) -> core.Layer:
  """``layer`` (parameters ``{'W': W, 'b': b}``) holding NT's parameters: a tuple ``(W, b)``.

  ``W`` is laid out as NT lays it out: ``w_specs = (ours, NT's)`` name its axes
  in each layout (``None``: the same layout). ``b`` has the output's rank, its
  values on ``b_axis`` and unit axes elsewhere, or is ``None`` without a bias.
  ``apply`` takes that tuple (a scalar ``b`` broadcasts) or jaxtheory's dict.
  ``b_local``: ``b`` is a locally connected layer's, one per position and channel,
  held with a leading unit batch axis (NT's ``ConvLocal``), laid out as ``b_specs[1]``
  where jaxtheory's is ``b_specs[0]`` (``None``: the same layout).
  """
  w_perm, undo = (None, None) if w_specs is None else (_perm(*w_specs), _perm(*w_specs[::-1]))
  b_perm, b_undo = ((None, None) if b_specs is None
                    else (_perm(*b_specs), _perm(*b_specs[::-1])))

  def init(key, spec, ctx):
    # NT's draws: ``W ~ normal(k1)`` in NT's layout, ``b ~ normal(k2)`` in its shape, each
    # times the layer's own scale (read with unit draws), so a key gives NT's parameters.
    with core.unit_draws():
      out, params, scales = layer.init(key, spec, ctx)
    k_W, k_b = jax.random.split(key)
    W = params["W"] if w_perm is None else jnp.transpose(params["W"], w_perm)
    W = jax.random.normal(k_W, W.shape, W.dtype) * W
    b = params.get("b")
    if b is not None and b_local:
      b = b[None] if b_perm is None else jnp.transpose(b[None], b_perm)
    elif b is not None:
      shape = [1] * len(out.shape)
      shape[b_axis % len(out.shape)] = b.shape[0]
      b = b.reshape(shape)
    if b is not None:
      b = jax.random.normal(k_b, b.shape, b.dtype) * b
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
      if b is not None and b_local:
        b = jnp.asarray(b) if b_undo is None else jnp.transpose(jnp.asarray(b), b_undo)
        params["b"] = jnp.reshape(b, jnp.shape(b)[1:])
      elif b is not None:
        params["b"] = jnp.reshape(b, (-1,) if jnp.ndim(b) else ())
    return layer.apply(params, x, feat, ctx)

  return core.Layer(init, apply, layer.kernel)


def _name_layers(g: dict, module: str, extra: Sequence[str] = ()):
  """Names every public constructor's triples after it (run once at import).

  ``g`` and ``module`` are a constructor module's ``globals()`` and ``__name__``;
  ``extra`` names lower-case constructors to name as well (``serial``, ...).
  """
  for name, value in list(g.items()):
    if (callable(value) and not name.startswith("_") and name[:1].isupper()
        and getattr(value, "__module__", None) == module and not isinstance(value, type)):
      g[name] = _named(value)
  for name in extra:
    g[name] = _named(g[name])
