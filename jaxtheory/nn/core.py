"""The layer protocol, the run context and the combinators.

A layer is a triple ``(init, apply, kernel)`` of pure functions, as in
neural-tangents' stax, extended by one idea: the *feature mask*. A width sweep
runs every width inside one program by building the network at a capacity
``W`` and masking the features beyond the active width ``w`` (a traced
number). Every layer therefore threads the mask of its input's last axis:

* ``init(key, spec, ctx) -> (out_spec, params, lr_scale)`` where ``spec`` is a
  :class:`Spec` (static shape, traced mask) and ``lr_scale`` is a pytree shaped
  like ``params`` holding the per-parameter learning-rate multiplier that the
  parametrization demands;
* ``apply(params, x, feat, ctx) -> (y, out_feat)`` where a :class:`Feat`
  carries the traced mask and the static fact "this axis scales with width";
* ``kernel(k, ctx) -> k``: the infinite-width limit where one exists
  (``None`` otherwise), a map on :class:`jaxtheory.kernels.analytic.Kernel`
  (NNGP, NTK and covariances; see :func:`jaxtheory.kernels.analytic.kernel_fn`).

A mask is ``None`` when every feature is active (statically known), else a
boolean vector over the last axis. Padded weights are zero at init and receive
zero gradients because every hidden activation is multiplied by its mask, so
they stay zero under any elementwise optimizer (ARCHITECTURE.md, "Padded widths").

Users rarely call these functions directly: :func:`jaxtheory.nn.model`
wraps a layer and an input shape into a :class:`Model` with the familiar
``init(key) -> params`` and ``apply(params, x) -> y``.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxtheory.kernels import analytic, combinators
from jaxtheory.nn.param import rescale_lr_for_gamma

Array = jax.Array
Params = Any
Mask = Array | None

PARAMETRIZATIONS = ("sp", "ntk", "mup", "mf")


class Feat(NamedTuple):
  """What a layer knows about the last (feature) axis of its input.

  Attributes:
    wide: static; the axis scales with the swept width (so a parametrization
      treats the layer reading it as hidden/readout, not input).
    mask: ``None`` (every feature active) or a traced boolean vector.
  """
  wide: bool = False
  mask: Mask = None

  def active(self, size: int):
    """Number of active features: the mask's sum (traced) or ``size``."""
    return size if self.mask is None else jnp.sum(self.mask)


class Spec(NamedTuple):
  """What ``init`` knows about an activation: its static shape and its features.

  ``shape`` has a leading batch axis.
  """
  shape: tuple[int, ...]
  feat: Feat = Feat()


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Ctx:
  """The run context shared by every layer of a network.

  Attributes:
    parametrization: ``'sp'`` (standard), ``'ntk'`` (neural tangent),
      ``'mup'`` (maximal update) or ``'mf'`` (mean field). Static: changing it
      recompiles. A tuple of them with a traced ``choice`` is a choice made at
      run time, so one program runs several parametrizations (a sweep whose
      grid has a ``parametrization`` axis): every width factor of
      :mod:`jaxtheory.nn.param` is computed for each and the chosen one
      selected, which gives the same numbers as the single parametrization.
    width: the active width (a traced scalar). ``None`` means the network runs
      at the width it was built with (no padding).
    gamma: richness. The network output is multiplied by ``1/gamma`` and the
      SGD learning rate of every parameter by ``gamma**2`` (Chizat & Bach 2019;
      Bordelon & Pehlevan 2022): ``gamma -> 0`` is lazy, ``gamma = 1`` the
      plain parametrization.
    init_scale: multiplies every weight's init standard deviation (``W_std``).
    base_width: the width at which every parametrization equals SP (initial
      function and first updates; microsoft/mup's convention): width factors
      are taken relative to it (:mod:`jaxtheory.nn.param`). Needs ``width``.
      ``None``: absolute width factors.
    choice: with a tuple ``parametrization``, the index of the one this run
      uses (a traced integer); ignored otherwise.
  """
  parametrization: str | tuple[str, ...] = dataclasses.field(default="sp",
                                                             metadata=dict(static=True))
  width: Any = None
  gamma: Any = 1.0
  init_scale: Any = 1.0
  base_width: Any = None
  choice: Any = None

  def __post_init__(self):
    p = self.parametrization
    names = p if isinstance(p, tuple) else (p,)
    bad = [n for n in names if n not in PARAMETRIZATIONS]
    if bad or not names:
      raise ValueError(
          f"unknown parametrization {(bad or [p])[0]!r}; expected one of "
          f"{', '.join(PARAMETRIZATIONS)}")
    if isinstance(p, tuple) and self.choice is None:
      raise ValueError(f"Ctx(parametrization={p!r}) chooses among several at run time and "
                       "needs choice= (the index of this run's parametrization)")


class Layer(NamedTuple):
  """A layer: ``init``, ``apply`` and (where an infinite-width limit exists) ``kernel``.

  ``outputs(params, x, feat, ctx)``, where given (:func:`serial`), is the list
  of every top-level sublayer's output, in one pass (what the probes read).
  """
  init: Callable
  apply: Callable
  kernel: Callable | None = None
  outputs: Callable | None = None


# ----------------------------------------------------------------------------
# Mask helpers (shared by layers).


def trailing(a: Array, ndim: int) -> Array:
  """``a`` with leading unit axes up to ``ndim``: broadcasts against trailing axes, explicitly.

  The library never relies on implicit rank promotion (a ``(C,)`` bias added to
  a ``(B, C)`` activation), so it runs under ``jax_numpy_rank_promotion='raise'``.
  """
  a = jnp.asarray(a)
  return a.reshape((1,) * (ndim - a.ndim) + a.shape)


def apply_mask(x: Array, feat: Feat) -> Array:
  """Zeroes the inactive features of ``x`` (rule 1: every activation is masked)."""
  return x if feat.mask is None else x * trailing(feat.mask.astype(x.dtype), x.ndim)


def out_feat(size: int, width_mult: float | None, ctx: Ctx) -> Feat:
  """Features of a layer output of capacity ``size``.

  ``width_mult=None`` marks a fixed-size output; otherwise the output has
  ``width_mult * ctx.width`` active features (all ``size`` when unpadded).
  """
  if width_mult is None:
    return Feat()
  if ctx.width is None:
    return Feat(True)
  return Feat(True, jnp.arange(size) < jnp.asarray(ctx.width) * width_mult)


def sum_feats(feats: Sequence[Feat]) -> Feat:
  """Features of a sum of activations (a feature is active if any is)."""
  wide = any(f.wide for f in feats)
  if any(f.mask is None for f in feats):
    return Feat(wide)
  mask = feats[0].mask
  for f in feats[1:]:
    mask = mask | f.mask
  return Feat(wide, mask)


# Set while Model.shapes or Model.lr_scale trace an init whose parameter values are never read:
# stable_normal then skips tracing its draws (a third to two thirds of the trace of an init).
_SHAPES_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("shapes_only", default=False)


@contextlib.contextmanager
def _shapes_only():
  token = _SHAPES_ONLY.set(True)
  try:
    yield
  finally:
    _SHAPES_ONLY.reset(token)


_UNIT_DRAWS: contextvars.ContextVar[bool] = contextvars.ContextVar("unit_draws", default=False)


@contextlib.contextmanager
def unit_draws():
  """Inside, :func:`stable_normal` draws ones: an ``init`` returns each parameter's scale.

  The weights and biases of ``dense``, ``conv``, ``conv_transpose``,
  ``conv_local``, ``embedding``, ``positional_embedding`` and the attention
  layers are ``stable_normal`` draws times a scale (the parametrization's
  std, masked where padded). Read under this context, such a layer's init
  gives that scale entry by entry, so another key scheme can redraw the
  normals and keep the scale (:mod:`jaxtheory.stax` draws as neural-tangents
  does). Draws made otherwise (``fourier_features``) are unaffected.
  """
  token = _UNIT_DRAWS.set(True)
  try:
    yield
  finally:
    _UNIT_DRAWS.reset(token)


def stable_normal(key, shape, dtype=jnp.float32, row_ids=None) -> Array:
  """Standard normals whose entry ``[i, ..., j]`` does not depend on ``shape``.

  Every leading index is folded into the key and the last axis is drawn as
  one vector (threefry's counter mode makes a vector's prefix independent of
  its length). So a weight drawn at a padded capacity agrees, on its active
  block, with the same weight drawn at the active size: padded == unpadded
  from the very first step, and networks of different widths share their
  common sub-network (a nested, width-consistent init).

  Args:
    key: a PRNG key.
    shape: the shape to draw.
    dtype: float dtype.
    row_ids: optional ids folded in for axis -2 instead of ``0..n-1`` (e.g.
      each input feature's rank among the active ones, when the active
      features are not a prefix).
  """
  if _SHAPES_ONLY.get():  # inside Model.shapes: only shapes are read, values never are
    return jnp.zeros(shape, dtype)
  if _UNIT_DRAWS.get():
    return jnp.ones(shape, dtype)
  if len(shape) == 0:
    return jax.random.normal(key, (), dtype)
  draw = lambda k: jax.random.normal(k, shape[-1:], dtype)
  for axis in reversed(range(len(shape) - 1)):
    ids = row_ids if (row_ids is not None and axis == len(shape) - 2) else jnp.arange(shape[axis])
    draw = (lambda inner, ids: lambda k: jax.vmap(
        lambda i: inner(jax.random.fold_in(k, i)))(ids))(draw, ids)
  return draw(key)


# ----------------------------------------------------------------------------
# Combinators.


def _kernel_of(layer: Layer) -> Callable:
  """``layer.kernel``, or a clear error naming a layer without an infinite-width limit."""
  if layer.kernel is None:
    raise analytic.no_kernel_error(layer)

  def kernel(k, ctx):
    if any(getattr(l, "batch_from_spatial", False) for l in jax.tree.leaves(
        k, is_leaf=lambda a: isinstance(a, analytic.Kernel))):
      raise ValueError("diagonal_spatial=True: no layer may follow DotGeneral contracting the "
                       "batch axis (as in neural-tangents; its new batch pair is kept like a "
                       "position pair); use diagonal_spatial=False")
    return layer.kernel(k, ctx)

  return kernel


def _fold_keys(key, n: int) -> list:
  """The combinators' default keys for ``n`` layers: ``fold_in(key, i)``."""
  return [jax.random.fold_in(key, i) for i in range(n)]


def _same_ctx(ctx, n: int) -> list:
  """The combinators' default contexts for ``n`` layers: the one they were given."""
  return [ctx] * n


def serial(*layers: Layer, keys: Callable = _fold_keys, ctxs: Callable = _same_ctx) -> Layer:
  """Composes layers left to right (``serial(f, g)(x) = g(f(x))``).

  ``keys(key, n)`` gives the ``n`` layers their init keys and ``ctxs(ctx, n)``
  their run contexts (another key scheme: :mod:`jaxtheory.stax` splits keys as
  neural-tangents does).
  """
  layers = tuple(layers)

  def init(key, spec, ctx):
    params, scales = [], []
    for layer, k in zip(layers, keys(key, len(layers))):
      spec, p, s = layer.init(k, spec, ctx)
      params.append(p)
      scales.append(s)
    return spec, tuple(params), tuple(scales)

  def through(params, x, feat, ctx):  # ``(x, feat)`` after each layer
    for layer, p, c in zip(layers, params, ctxs(ctx, len(layers))):
      x, feat = layer.apply(p, x, feat, c)
      yield x, feat

  def outputs(params, x, feat, ctx):
    return [y for y, _ in through(params, x, feat, ctx)]

  def apply(params, x, feat, ctx):
    for x, feat in through(params, x, feat, ctx):
      pass
    return x, feat

  def kernel(k, ctx):
    for layer in layers:
      k = _kernel_of(layer)(k, ctx)
    return k

  return Layer(init, apply, kernel, outputs)


def repeat(layer: Layer, n: int, keys: Callable = _fold_keys) -> Layer:
  """``layer`` composed ``n`` times, its parameters stacked along a leading axis (NT's ``repeat``).

  Equals ``serial(*[layer] * n)`` with the same key (repetition ``i`` is
  initialized with ``keys(key, n)[i]``, ``fold_in(key, i)`` by default, as in
  :func:`serial`), but holds one stacked parameter tree. ``layer`` must keep
  its input's shape.
  """
  if not isinstance(n, int) or isinstance(n, bool) or n < 0:
    raise ValueError(f"repeat needs a non-negative integer n, got {n!r}")

  def init(key, spec, ctx):
    if n == 0:
      return spec, (), ()
    outs = [layer.init(k, spec, ctx) for k in keys(key, n)]
    if outs[0][0].shape != spec.shape:
      raise ValueError(f"repeat: the layer maps shape {spec.shape} to {outs[0][0].shape}; "
                       "use serial(*[layer] * n) for layers that change the shape")
    params = jax.tree.map(lambda *a: jnp.stack(a), *[o[1] for o in outs])
    return outs[-1][0], params, outs[0][2]

  def apply(params, x, feat, ctx):
    for i in range(n):
      x, feat = layer.apply(jax.tree.map(lambda a: a[i], params), x, feat, ctx)
    return x, feat

  def kernel(k, ctx):
    for _ in range(n):
      k = _kernel_of(layer)(k, ctx)
    return k

  return Layer(init, apply, kernel)


def parallel(*layers: Layer, keys: Callable = _fold_keys, ctxs: Callable = _same_ctx) -> Layer:
  """Applies ``layers[i]`` to the ``i``-th of a tuple of inputs (``keys``, ``ctxs``: as in
  :func:`serial`)."""
  layers = tuple(layers)

  def init(key, specs, ctx):
    outs = [l.init(k, s, ctx) for l, k, s in zip(layers, keys(key, len(layers)), specs)]
    return tuple(zip(*outs)) if outs else ((), (), ())

  def apply(params, xs, feats, ctx):
    outs = [l.apply(p, x, f, c)
            for l, p, x, f, c in zip(layers, params, xs, feats, ctxs(ctx, len(layers)))]
    return tuple(o[0] for o in outs), tuple(o[1] for o in outs)

  def kernel(ks, ctx):
    if len(ks) != len(layers):
      raise ValueError(f"parallel of {len(layers)} layers got {len(ks)} kernels")
    return tuple(_kernel_of(l)(k, ctx) for l, k in zip(layers, ks))

  return Layer(init, apply, kernel)


def fan_out(num: int) -> Layer:
  """Copies its input ``num`` times into a tuple."""

  def init(key, spec, ctx):
    del key, ctx
    return (spec,) * num, (), ()

  def apply(params, x, feat, ctx):
    del params, ctx
    return (x,) * num, (feat,) * num

  return Layer(init, apply, lambda k, ctx: (k,) * num)


def fan_in_sum() -> Layer:
  """Sums a tuple of activations of equal shape."""

  def init(key, specs, ctx):
    del key, ctx
    shapes = {s.shape for s in specs}
    if len(shapes) != 1:
      raise ValueError(f"fan_in_sum needs inputs of one shape, got {sorted(shapes)}")
    return Spec(specs[0].shape, sum_feats([s.feat for s in specs])), (), ()

  def apply(params, xs, feats, ctx):
    del params, ctx
    return sum(xs[1:], xs[0]), sum_feats(feats)

  return Layer(init, apply, combinators.fan_in_sum())


def fan_in_prod() -> Layer:
  """Multiplies a tuple of activations of equal shape elementwise."""

  def init(key, specs, ctx):
    del key, ctx
    shapes = {s.shape for s in specs}
    if len(shapes) != 1:
      raise ValueError(f"fan_in_prod needs inputs of one shape, got {sorted(shapes)}")
    return Spec(specs[0].shape, _prod_feats([s.feat for s in specs])), (), ()

  def apply(params, xs, feats, ctx):
    del params, ctx
    return functools.reduce(operator.mul, xs), _prod_feats(feats)

  return Layer(init, apply, combinators.fan_in_prod())


def _prod_feats(feats: Sequence[Feat]) -> Feat:
  """Features of a product of activations (a feature is active if all are)."""
  wide = any(f.wide for f in feats)
  masks = [f.mask for f in feats if f.mask is not None]
  return Feat(wide, functools.reduce(operator.and_, masks) if masks else None)


def _concat_feats(feats: Sequence[Feat], sizes: Sequence[int]) -> Feat:
  wide = any(f.wide for f in feats)
  if all(f.mask is None for f in feats):
    return Feat(wide)
  return Feat(wide, jnp.concatenate([
      jnp.ones((n,), bool) if f.mask is None else f.mask
      for f, n in zip(feats, sizes)]))


def fan_in_concat(axis: int = -1) -> Layer:
  """Concatenates a tuple of activations along ``axis`` (default: features)."""

  def feats_of(feats, shapes):
    ndim = len(shapes[0])
    if axis % ndim == ndim - 1:
      return _concat_feats(feats, [s[-1] for s in shapes])
    return sum_feats(feats)

  def init(key, specs, ctx):
    del key, ctx
    shape = list(specs[0].shape)
    shape[axis] = sum(s.shape[axis] for s in specs)
    return Spec(tuple(shape), feats_of([s.feat for s in specs],
                                       [s.shape for s in specs])), (), ()

  def apply(params, xs, feats, ctx):
    del params, ctx
    return jnp.concatenate(xs, axis=axis), feats_of(feats, [x.shape for x in xs])

  return Layer(init, apply, combinators.fan_in_concat(axis))


def identity_layer() -> Layer:
  """Passes its input through unchanged."""

  def init(key, spec, ctx):
    del key, ctx
    return spec, (), ()

  def apply(params, x, feat, ctx):
    del params, ctx
    return x, feat

  return Layer(init, apply, analytic.identity())


def residual(*layers: Layer) -> Layer:
  """``x + serial(*layers)(x)``: a residual block."""
  return serial(fan_out(2), parallel(serial(*layers), identity_layer()),
                fan_in_sum())


def frozen(layer: Layer) -> Layer:
  """The same layer with its parameters held fixed (zero learning rate).

  Used for random-features models and fixed Fourier features: the parameters
  still exist (so they are saved and can be probed) but never move. Its NTK
  keeps only what flows through the layer (see
  :func:`jaxtheory.kernels.combinators.frozen`).
  """

  def init(key, spec, ctx):
    spec, params, scales = layer.init(key, spec, ctx)
    return spec, params, jax.tree.map(lambda s: s * 0, scales)

  def apply(params, x, feat, ctx):
    return layer.apply(jax.lax.stop_gradient(params), x, feat, ctx)

  def kernel(k, ctx):
    return combinators.frozen(_kernel_of(layer))(k, ctx)

  return Layer(init, apply, kernel)


def antisymmetric(layer: Layer) -> Layer:
  r"""Two copies of ``layer`` started equal, their outputs subtracted: zero at init.

  The antisymmetrical initialization trick (Chizat, Oyallon & Bach 2019, "On
  lazy training in differentiable programming", Sec. 2.3; Zhang et al. 2020,
  "A type of generalization error induced by initialization in deep neural
  networks"):

  .. math:: f(x; \theta_a, \theta_b) = \frac{g(x; \theta_a) - g(x; \theta_b)}{\sqrt 2},
     \qquad \theta_a = \theta_b \text{ at init},

  so :math:`f_0 = 0` while the tangent kernel at init is that of ``g``
  (:math:`(\Theta_a + \Theta_b)/2 = \Theta_g`); the two copies then train
  apart. Scaling a model's output by :math:`1/\gamma` (the richness of
  :class:`Ctx`) then changes its training speed, not its initial function:
  without it the lazy limit :math:`\gamma \to 0` starts from an output of
  size :math:`1/\gamma`. Parameters are the pair ``(theta_a, theta_b)``.
  Its infinite-width limit is the layer's NTK with a zero NNGP.
  """

  def init(key, spec, ctx):
    spec, params, scales = layer.init(key, spec, ctx)
    return spec, (params, params), (scales, scales)

  def apply(params, x, feat, ctx):
    ya, fa = layer.apply(params[0], x, feat, ctx)
    yb, _ = layer.apply(params[1], x, feat, ctx)
    return (ya - yb) * (1 / math.sqrt(2.0)), fa

  def kernel(k, ctx):
    out = _kernel_of(layer)(k, ctx)
    zero = lambda a: None if a is None else jnp.zeros_like(a)
    is_k = lambda x: isinstance(x, analytic.Kernel)
    return jax.tree.map(lambda o: o.replace(nngp=zero(o.nngp), cov1=zero(o.cov1),
                                            cov2=zero(o.cov2), is_gaussian=True),
                        out, is_leaf=is_k)

  return Layer(init, apply, kernel)


# ----------------------------------------------------------------------------
# Models: a layer plus the shape of one input.


class TrainMode(NamedTuple):
  """How a model computes while it trains, where that differs from how it evaluates.

  A model with dropout or batch norm (Flax, Equinox) trains in a mode of its
  own: dropout draws its masks from a key, and batch norm normalizes by the
  batch's statistics and updates its running statistics, which it then uses
  to evaluate. Such statistics are *state*: leaves of the parameter tree that
  gradients do not train; each training step replaces them by their new
  values. Everything else (metrics, probes, ``Model.apply``) evaluates.

  Attributes:
    apply: ``apply(params, x, ctx, key) -> (y, params)``: the outputs in
      training mode, before the division by ``ctx.gamma``, and the parameters
      with their state leaves updated (the others as given).
    state: ``state(params) -> pytree of bool`` like ``params``: which leaves
      are state. A model without state marks none.
  """
  apply: Callable
  state: Callable


def without_state(mask, tree):
  """``tree`` with the leaves ``mask`` marks as state (:class:`TrainMode`) set to ``None``."""
  return jax.tree.map(lambda m, a: None if m else a, mask, tree)


def with_state(mask, tree, state):
  """``tree`` with the leaves ``mask`` marks as state taken from ``state`` (``tree`` may hold
  ``None`` there, as :func:`without_state` leaves it)."""
  return jax.tree.map(lambda m, a, b: b if m else a, mask, tree, state)


class Model(NamedTuple):
  """A network ready to use: ``init(key, ctx) -> params``, ``apply(params, x, ctx) -> y``.

  Attributes:
    layer: the root layer.
    input_shape: the shape of ONE example (no batch axis).
    paddable: whether the model runs any narrower width by ``Ctx(width=w)``
      (every layer threads feature masks). ``False`` for foreign modules (Flax,
      Equinox, a user's own ``init``/``apply``): a width sweep then builds the
      model at each width, one bucket per width.
    features: ``features(params, x, ctx, inputs=False) -> list of arrays``:
      the outputs (with ``inputs=True`` the inputs) of a foreign model's layers
      in call order (Flax submodules, Equinox layers), for probes; ``None`` for
      native models, whose probes read their ``serial`` layers
      (:func:`jaxtheory.probes.layer_features`).
    penultimate: ``penultimate(params, x, ctx) -> (H, {"W": (d, C), "b": (C,)})``:
      the input of a foreign model's last submodule and that submodule's
      kernel and bias (``ValueError`` when it is not a dense layer), for
      :func:`jaxtheory.probes.collapse.penultimate`; ``None`` for native
      models, whose readout is the last layer of their ``serial``.
    train_mode: how the model computes while it trains (:class:`TrainMode`),
      for a foreign model with dropout or batch norm; ``None``: as it
      evaluates (every native model).
    layout: which axes of its weights are fan-in, for
      :func:`jaxtheory.nn.base_shapes.parametrize`: ``'in_out'`` (Flax kernels
      ``(..., in, out)``), ``'out_in'`` (Equinox ``(out, in, ...)``); ``None``:
      not stated (a user's own ``init``/``apply``; parametrize assumes
      ``'in_out'`` unless told).
  """
  layer: Layer
  input_shape: tuple[int, ...]
  paddable: bool = True
  features: Callable | None = None
  penultimate: Callable | None = None
  train_mode: TrainMode | None = None
  layout: str | None = None

  def init(self, key, ctx: Ctx = Ctx()) -> Params:
    """Initial parameters (padded entries are exactly zero)."""
    return self.init_with_lr_scale(key, ctx)[0]

  def init_with_lr_scale(self, key, ctx: Ctx = Ctx()):
    """``(params, lr_scale)``: parameters and per-parameter LR multipliers."""
    _, params, scales = self.layer.init(key, Spec((1, *self.input_shape)), ctx)
    return params, rescale_lr_for_gamma(scales, ctx)

  def output_shape(self, ctx: Ctx = Ctx()) -> tuple[int, ...]:
    """Shape of the output for one example (no batch axis)."""
    return self.shapes(ctx)[0]

  def shapes(self, ctx: Ctx = Ctx()) -> tuple[tuple[int, ...], Any]:
    """``(output shape of one example, parameter shapes)``, from one trace of ``init``."""
    box = []

    def f(k):
      spec, params, _ = self.layer.init(k, Spec((1, *self.input_shape)), ctx)
      box.append(spec.shape)
      return params

    with _shapes_only():
      params = jax.eval_shape(lambda: f(jax.random.key(0)))  # no eager key: no program
    return tuple(box[0][1:]), params

  def lr_scale(self, ctx: Ctx = Ctx()):
    """The per-parameter learning-rate multipliers alone (no random draw is traced)."""
    with _shapes_only():
      return self.init_with_lr_scale(jax.random.key(0), ctx)[1]

  def num_params(self, ctx: Ctx = Ctx()) -> int:
    """The number of parameter scalars, from their shapes (nothing is computed).

    Counts the network as built: a model built at a sweep's capacity width
    and run narrower counts its padded entries too.
    """
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(self.shapes(ctx)[1])))

  def apply(self, params, x, ctx: Ctx = Ctx()) -> Array:
    """Outputs for a batch ``x`` of shape ``(batch, *input_shape)``."""
    x = jnp.asarray(x)
    if x.shape[1:] != tuple(self.input_shape):
      raise ValueError(
          f"model expects inputs of shape (batch, {', '.join(map(str, self.input_shape))})"
          f" but got {x.shape}")
    y, _ = self.layer.apply(params, x, Feat(), ctx)
    return y / ctx.gamma

  def train_apply(self, params, x, key, ctx: Ctx = Ctx()) -> tuple[Array, Params]:
    """``(outputs, params)`` in training mode: see :class:`TrainMode`.

    Dropout draws from ``key``; the returned parameters carry the updated
    state (running statistics). Without a train mode: ``(apply(params, x),
    params)``.
    """
    if self.train_mode is None:
      return self.apply(params, x, ctx), params
    y, params = self.train_mode.apply(params, jnp.asarray(x), ctx, key)
    return y / ctx.gamma, params

  def state_mask(self, params) -> Any:
    """Which leaves of ``params`` are state (:class:`TrainMode`): a pytree of bools."""
    if self.train_mode is None:
      return jax.tree.map(lambda _: False, params)
    return self.train_mode.state(params)

  def bind_state(self, params) -> tuple[Params, Model]:
    """``(trained, model)``: the parameters gradients train, and a model of them alone.

    The state leaves of ``params`` (running statistics) are left out of
    ``trained`` (``None`` in their place) and fixed inside the returned
    model, whose ``apply``, ``features``, ``penultimate`` and training mode
    take ``trained``. So a probe that differentiates with respect to the
    parameters (a Hessian, an empirical NTK) never sees the state. Full
    parameters (state included, e.g. the initial ones) may be given to the
    returned model too: their own state is used. A model without state comes
    back as it is, with ``params``.
    """
    mask = self.state_mask(params)
    if not any(jax.tree.leaves(mask)):
      return params, self
    full = lambda t: jax.tree.map(lambda m, a, b: b if m and a is None else a, mask, t, params)
    hole = lambda p: without_state(mask, p)
    layer = Layer(lambda key, spec, ctx: (lambda o: (o[0], hole(o[1]), hole(o[2])))(
        self.layer.init(key, spec, ctx)),
                  lambda t, x, feat, ctx: self.layer.apply(full(t), x, feat, ctx))
    features = penultimate = None
    if self.features is not None:
      features = lambda t, x, ctx, inputs=False: self.features(full(t), x, ctx, inputs=inputs)
    if self.penultimate is not None:
      penultimate = lambda t, x, ctx: self.penultimate(full(t), x, ctx)
    mode = self.train_mode

    def train_apply(t, x, ctx, key):
      y, new = mode.apply(full(t), x, ctx, key)
      return y, hole(new)

    return hole(params), self._replace(
        layer=layer, features=features, penultimate=penultimate,
        train_mode=TrainMode(train_apply, lambda t: jax.tree.map(lambda _: False, t)))


def model(layer: Layer, input_shape: Sequence[int], paddable: bool = True,
          features: Callable | None = None, penultimate: Callable | None = None,
          train_mode: TrainMode | None = None, layout: str | None = None) -> Model:
  """Binds a layer to the shape of one input example (see :class:`Model` for the rest)."""
  return Model(layer, tuple(int(d) for d in input_shape), bool(paddable), features,
               penultimate, train_mode, layout)
