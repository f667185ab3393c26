r"""Parametrizations for any model by its base shapes, as microsoft/mup does it.

A foreign model (Flax, Equinox, a user's ``(init, apply)``) fixes its own init
and has no feature masks, so it cannot follow :mod:`jaxtheory.nn.param` layer by
layer. What it does have are parameter shapes, and how they change with the
width says everything the parametrization needs (Yang et al. 2021, "Tensor
Programs V", Sec. 5; mup's ``set_base_shapes``):

1. build the model at two widths and compare every parameter's shapes: an axis
   whose size changes is *width-like*, the others are finite;
2. a tensor's role follows from where its width-like axes are: a weight (two or
   more axes) with width-like fan-out only is ``input``, with both ``hidden``,
   with width-like fan-in only ``output``; a width-like vector (bias, norm gain;
   a parameter named ``bias`` of any rank) is ``vector``; a tensor with no
   width-like axis is ``fixed``; an embedding table is ``(vocab, width)`` in
   every framework (Flax's ``embedding``, an Equinox ``Embedding``'s weight),
   so ``input``. Which axes
   are fan-in is the framework's layout: ``'in_out'`` (Flax kernels
   ``(..., in, out)``; fan-in = every axis but the last) or ``'out_in'``
   (Equinox / PyTorch ``(out, in, ...)``; every axis but the first);
3. every tensor then gets the multiplier, init scale and learning-rate
   multipliers of :mod:`jaxtheory.nn.param` for its role, with its fan-in and
   width read from its shape, and, given a ``base_width``, its width ratio
   ``r`` (its width-like size over the same size at the base width: at the
   base width every parametrization equals SP).

The module's own init is taken as SP's (``W_std = 1``): a parametrization
rescales it by ``std / std_SP`` (so the *effective* weight ``mult * w`` starts
as the module's init times the table's width factors), the forward pass uses
``mult * w``, and the learning rates are multiplied per tensor (the trainer
does it; :func:`scale_by_lr_mult` is the same as an optax transformation).
Vectors follow :func:`jaxtheory.nn.param.bias_rule` with ``b_std = 1`` (a
foreign module does not state its bias scale; in the NTK and mean-field forms
this sets their effective learning rate). What base shapes cannot change: the
query-key scaling inside a foreign attention (muP wants ``1/d_head``), which
the module must do itself; and which axes of a multi-axis kernel are its
inputs: a multi-head projection's ``(in, heads, head_dim)`` counts ``in x
heads`` as its fan-in (its role, and muP's multipliers, which read the
width-like axes only, are right; the NTK and mean-field multipliers, which
read the fan-in, are off by ``sqrt(heads)``).

>>> import jax, flax.linen as nn
>>> from jaxtheory.nn.flax import from_linen
>>> from jaxtheory.nn import Ctx
>>> class MLP(nn.Module):
...   width: int
...   @nn.compact
...   def __call__(self, x):
...     return nn.Dense(3)(nn.relu(nn.Dense(self.width)(x)))
>>> build = parametrize(lambda w: from_linen(MLP(w), (4,)), base_width=8)
>>> m = build(32)
>>> params, lr = m.init_with_lr_scale(jax.random.key(0), Ctx("mup"))
>>> roles(build, 32)["params"]["Dense_0"]["kernel"]  # Dense(3): created first
'output'
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxtheory.nn import foreign
from jaxtheory.nn.core import Ctx, Feat, Layer, Model, Spec, TrainMode, model, with_state
from jaxtheory.nn.param import LRScale, Rule, bias_rule, family_multipliers, role, weight_rule

__all__ = ["TensorShape", "infer", "parametrize", "roles", "reparametrize", "scale_by_lr_mult"]

LAYOUTS = ("in_out", "out_in")


class TensorShape(NamedTuple):
  """What the base shapes say about one parameter.

  Attributes:
    shape: its shape at the model's width.
    wide: per axis, whether it is width-like.
    role: ``'input'``, ``'hidden'``, ``'output'``, ``'vector'`` or ``'fixed'``.
    fan_in: product of its fan-in axes (1 for vectors).
    n: its width-like size (the fan-out's for ``input`` and ``vector``, the
      fan-in's for ``hidden`` and ``output``; 1 for ``fixed``).
    ratio: ``n`` over the same size at the base width, or ``None`` (no base).
  """
  shape: tuple[int, ...]
  wide: tuple[bool, ...]
  role: str
  fan_in: int
  n: int
  ratio: float | None


def _shapes(m: Model):
  return jax.eval_shape(m.init, jax.random.key(0))


def _fan_axes(ndim: int, layout: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """``(fan-in axes, fan-out axes)`` of a weight with ``ndim >= 2`` axes."""
  if layout == "in_out":
    return tuple(range(ndim - 1)), (ndim - 1,)
  return tuple(range(1, ndim)), (0,)


def _one(shape, other, base, layout: str, kind: str | None = None) -> TensorShape:
  shape, other = tuple(shape), tuple(other)
  if len(shape) != len(other):
    raise ValueError(f"a parameter changes rank with the width ({shape} vs {other}); base "
                     f"shapes need the same parameters at every width")
  wide = tuple(a != b for a, b in zip(shape, other))
  prod = lambda sizes, axes: math.prod(sizes[i] for i in axes)
  size = lambda axes: prod(shape, [i for i in axes if wide[i]])
  ratio = lambda axes: size(axes) / prod(base, [i for i in axes if wide[i]])
  fixed_ratio = None if base is None else 1.0  # base given: the relative table, r = 1
  base = shape if base is None else tuple(base)
  if kind == "table":  # an embedding table is (vocab, width) in Flax and Equinox alike
    layout = "in_out"
  if len(shape) < 2 or kind == "bias":  # a bias of any rank, e.g. attention's (heads, head_dim)
    if not any(wide):
      return TensorShape(shape, wide, "fixed", 1, 1, fixed_ratio)
    every = tuple(range(len(shape)))
    return TensorShape(shape, wide, "vector", 1, size(every),
                       None if fixed_ratio is None else ratio(every))
  fin, fout = _fan_axes(len(shape), layout)
  r = role(any(wide[i] for i in fin), any(wide[i] for i in fout))
  fan_in = prod(shape, fin)
  if r == "fixed":
    return TensorShape(shape, wide, r, fan_in, 1, fixed_ratio)
  axes = fout if r == "input" else fin
  return TensorShape(shape, wide, r, fan_in, size(axes),
                     None if fixed_ratio is None else ratio(axes))


def infer(params, params_other, params_base=None, layout: str = "in_out"):
  """The :class:`TensorShape` of every parameter, from shapes at two widths.

  Args:
    params: the parameters (or their shapes) at the model's width.
    params_other: the same model's at another width (any other width; only
      which axes change matters).
    params_base: the same at the base width, or ``None`` (no base: absolute
      width factors, :mod:`jaxtheory.nn.param`'s first table).
    layout: ``'in_out'`` (Flax, this library) or ``'out_in'`` (Equinox, PyTorch).

  Returns:
    A pytree like ``params`` with a :class:`TensorShape` per leaf (with
    ``ratio=None`` where ``params_base`` is ``None``).
  """
  if layout not in LAYOUTS:
    raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
  # Leaves, not tree structures: an Equinox module's structure holds its sizes.
  s = jax.tree.structure(params)
  sh = lambda t: [x.shape for x in jax.tree.leaves(t)]
  bases = [None] * s.num_leaves if params_base is None else sh(params_base)
  if not len(sh(params_other)) == len(bases) == s.num_leaves:
    raise ValueError("the model has different parameters at different widths; base shapes "
                     "need the same parameters at every width")
  kinds = [_kind(params, path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  leaves = [_one(a, b, c, layout, k)
            for a, b, c, k in zip(sh(params), sh(params_other), bases, kinds)]
  return jax.tree.unflatten(s, leaves)


def _kind(params, path) -> str | None:
  """``'bias'`` for a parameter named so (Flax's ``'bias'``, NNX's ``bias.value``, Equinox's
  ``.bias``): a vector whatever its rank (a multi-head projection's is ``(heads,
  head_dim)``); ``'table'`` for an embedding table (Flax's ``'embedding'``, the weight of an
  Equinox ``Embedding``), ``(vocab, width)`` whatever the framework's layout; else None."""
  names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
  while names and names[-1] == "value":  # NNX: the variable's value
    names.pop()
  if not names:
    return None
  if names[-1] == "bias":
    return "bias"
  if names[-1] == "embedding":
    return "table"
  parent = params
  for k in path[:-1]:
    parent = _child(parent, k)
    if parent is None:
      return None
  eqx = sys.modules.get("equinox")  # an Equinox model's classes: imported if it is one
  embedding = eqx is not None and isinstance(parent, eqx.nn.Embedding)
  return "table" if embedding and names[-1] == "weight" else None


def _child(node, key):
  """``node``'s child at a path entry (an attribute, a dict key or a sequence index), or None."""
  for attr in ("name", "key", "idx"):
    if hasattr(key, attr):
      k = getattr(key, attr)
      try:
        return getattr(node, k) if attr == "name" else node[k]
      except (AttributeError, KeyError, IndexError, TypeError):
        return None
  return None


def _is_shape(x) -> bool:
  return isinstance(x, TensorShape)


def rule(t: TensorShape, ctx: Ctx) -> tuple[Rule, Any]:
  """``(rule of the parametrization, SP's init std)`` of one tensor (``W_std = b_std = 1``)."""
  sp = Ctx("sp")
  if t.role == "vector":
    return bias_rule(ctx, "hidden", t.n, 1.0, t.ratio), 1.0
  if t.role == "fixed" and len(t.shape) < 2:
    return bias_rule(ctx, "output", 1, 1.0, t.ratio), 1.0
  return (weight_rule(ctx, t.role, t.fan_in, t.n, 1.0, t.ratio),
          weight_rule(sp, t.role, t.fan_in, t.n, 1.0, t.ratio).std)


def reparametrize(params_sp, shapes, ctx: Ctx):
  """``(params, mults, lr_scale)`` of the parametrization ``ctx`` from SP parameters.

  ``params = params_sp * std / std_SP`` per tensor, so that the effective
  weights ``mults * params`` are the SP ones times the table's width factors.
  """
  rules = jax.tree.map(lambda t: rule(t, ctx), shapes, is_leaf=_is_shape)
  pick = lambda f: jax.tree.map(lambda t, r: f(*r), shapes, rules, is_leaf=_is_shape)
  scale = pick(lambda r, sp_std: r.std / sp_std)
  params = jax.tree.map(lambda p, s: p * jnp.asarray(s, p.dtype), params_sp, scale)
  return params, pick(lambda r, _: r.mult), pick(lambda r, _: r.lr)


def _check_ctx(ctx: Ctx, who: str):
  if ctx.width is not None or getattr(ctx, "base_width", None) is not None:
    raise ValueError(
        f"{who}: a model parametrized by base shapes runs at the width it was built with and "
        f"its base width is fixed by parametrize(), so ctx.width and ctx.base_width must be None")


def _effective(params, shapes, ctx: Ctx, state):
  """The weights the inner model computes with: ``mult * w`` per tensor (state as it is)."""
  rules = jax.tree.map(lambda t: rule(t, ctx)[0], shapes, is_leaf=_is_shape)
  return jax.tree.map(lambda s, p, r: p if s else p * jnp.asarray(r.mult, p.dtype), state,
                      params, rules)


def _layer(inner: Model, shapes, who: str, state) -> Layer:
  sp = Ctx("sp")

  def init(key, spec, ctx):
    _check_ctx(ctx, who)
    p0 = inner.init(key, sp)
    params, _, lr = reparametrize(p0, shapes, ctx)
    params = with_state(state, params, p0)  # state as drawn
    y = jax.eval_shape(lambda p, x: inner.layer.apply(p, x, Feat(), sp)[0], p0,
                       jax.ShapeDtypeStruct(spec.shape, jnp.result_type(float)))
    return foreign.specs(y, spec.shape[0]), params, lr

  def apply(params, x, feat, ctx):
    del feat
    _check_ctx(ctx, who)
    y, _ = inner.layer.apply(_effective(params, shapes, ctx, state), x, Feat(), sp)
    return y, foreign.fixed_feats(y)

  return Layer(init, apply)


def _train_mode(inner: Model, shapes, who: str, state) -> TrainMode | None:
  """The inner model's training mode, run with the effective weights; its state passed through."""
  if inner.train_mode is None:
    return None

  def apply(params, x, ctx, key):
    _check_ctx(ctx, who)
    y, new = inner.train_mode.apply(_effective(params, shapes, ctx, state), x, Ctx("sp"), key)
    return y, with_state(state, params, new)

  return TrainMode(apply, inner.train_mode.state)


def parametrize(build: Callable[[int], Model], base_width: int | None = None, *,
                layout: str | None = None) -> Callable[[int], Model]:
  """``width -> Model`` that runs ``build(width)`` in any parametrization by its base shapes.

  Args:
    build: ``width -> Model`` (e.g. ``lambda w: from_linen(MLP(w), (d,))``).
    base_width: the width at which every parametrization equals SP (mup's
      convention); ``None``: absolute width factors (as native models without
      ``Ctx.base_width``).
    layout: ``'in_out'`` (Flax, this library) or ``'out_in'`` (Equinox,
      PyTorch-style); ``None``: the one the model states
      (:attr:`~jaxtheory.nn.Model.layout`: the Flax and Equinox adapters
      state theirs), else ``'in_out'``. A layout other than the one the
      model states is an error.

  Returns:
    A function ``width -> Model``, for :class:`jaxtheory.sweep.Sweep` or
    direct use; the model takes ``Ctx(parametrization, gamma=...,
    init_scale=...)`` (``width=None``: it is not paddable).
  """
  if layout is not None and layout not in LAYOUTS:
    raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
  if base_width is not None and (not isinstance(base_width, int) or base_width < 1):
    raise ValueError(f"base_width must be a positive integer or None, got {base_width!r}")

  def at(width: int) -> Model:
    inner = build(width)
    read_as = _layout(inner, layout)  # first: it says when build(width) is not a Model
    base = None if base_width is None else _shapes(build(base_width))
    shapes = infer(_shapes(inner), _shapes(build(2 * width)), base, read_as)
    if not any(t.role != "fixed" for t in jax.tree.leaves(shapes, is_leaf=_is_shape)):
      raise ValueError("no parameter changes shape with the width: is the width passed to "
                       "the model's constructor?")
    who = f"base-shape model at width {width}"
    state = inner.state_mask(_shapes(inner))  # batch norm's statistics: never rescaled
    feats = penultimate = None
    if inner.features is not None:
      def feats(params, x, ctx, inputs: bool = False):
        _check_ctx(ctx, who)
        return inner.features(_effective(params, shapes, ctx, state), x, Ctx("sp"),
                              inputs=inputs)
    if inner.penultimate is not None:
      def penultimate(params, x, ctx):  # the readout as computed with: mult * w
        _check_ctx(ctx, who)
        return inner.penultimate(_effective(params, shapes, ctx, state), x, Ctx("sp"))
    return model(_layer(inner, shapes, who, state), inner.input_shape, paddable=False,
                 features=feats, penultimate=penultimate,
                 train_mode=_train_mode(inner, shapes, who, state))

  return at


def _layout(m: Model, layout: str | None) -> str:
  """The layout to read ``m``'s weights in: the one asked for, checked against the one it states."""
  if not isinstance(m, Model):
    raise ValueError(f"build(width) must return a jaxtheory Model (e.g. "
                     f"nn.flax.from_linen(module, input_shape) or nn.equinox.from_eqx(...)), "
                     f"got {type(m).__name__}")
  stated = getattr(m, "layout", None)
  if layout is not None and stated is not None and layout != stated:
    fan_in = "every axis but the last" if stated == "in_out" else "every axis but the first"
    raise ValueError(f"layout={layout!r}, but the model states its weights are {stated!r} "
                     f"(fan-in: {fan_in}); leave layout out")
  return layout or stated or "in_out"


def roles(build: Callable[[int], Model], width: int, layout: str | None = None):
  """Each parameter's role (a pytree of strings) in ``build(width)``."""
  m = build(width)
  shapes = infer(_shapes(m), _shapes(build(2 * width)), None, _layout(m, layout))
  return jax.tree.map(lambda t: t.role, shapes, is_leaf=_is_shape)


def scale_by_lr_mult(lr_mult) -> optax.GradientTransformation:
  """Multiplies each update by its tensor's learning-rate multiplier.

  ``lr_mult``: a pytree like the parameters (one family of
  :class:`~jaxtheory.nn.param.LRScale`, e.g. ``jax.tree.map(lambda s: s.adam,
  lr_scale, is_leaf=...)``). Chain it after the optimizer:
  ``optax.chain(optax.adam(lr), scale_by_lr_mult(mults))``.
  """

  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: u * jnp.asarray(m, u.dtype), updates, lr_mult), state

  return optax.GradientTransformation(init, update)


def family(lr_scale, name: str):
  """One family (``'sgd'`` or ``'adam'``) of a tree of :class:`LRScale`."""
  return family_multipliers(lr_scale, name)
