"""Flax interop: a Flax module (linen or NNX) as a layer or model of this library.

A wrapped module becomes an ordinary ``(init, apply)`` pair over pytrees, so it
runs everywhere a native model does: under ``jit``, ``grad``, ``vmap`` over
seeds, inside ``serial`` and in the optax training loops.

What a foreign module cannot do is run padded or take a parametrization:
its layers do not thread feature masks and their init scales and multipliers
are fixed by the module. So a wrapped module

* runs only under ``Ctx(parametrization='sp', width=None)`` (anything else
  raises ``ValueError``); its :class:`~jaxtheory.nn.Model` has
  ``paddable=False``, so a width sweep builds it at each width (one bucket per
  width, seeds and hyperparameters still batched);
* always reports ``Feat()`` (a fixed, unmasked feature axis);
* a model's ``features`` are its submodules' outputs (or inputs) in call
  order (linen's ``intercept_methods``; for NNX, each submodule class's
  ``__call__`` wrapped while the features are computed), and its
  ``penultimate`` is the input of its last submodule with that submodule's
  kernel and bias (it must be a ``linen.Dense`` / ``nnx.Linear``), for probes;
* has every learning-rate multiplier equal to ``LRScale(1.0, 1.0)``.

``ctx.gamma`` works as for native models (it scales the output and the learning
rates, not the module).

Modules with dropout or batch norm train in their own mode and evaluate in
another (:class:`~jaxtheory.nn.TrainMode`): ``Model.apply``, metrics and
probes evaluate (running statistics, no dropout); each training step runs
the training mode with a key of its own and replaces the running statistics
(linen's ``batch_stats``, NNX's ``BatchStat``) by the values it computes,
while the optimizer steps the parameters alone. Linen modules name the two
modes by keyword arguments (``train_kwargs`` / ``eval_kwargs`` of
:func:`from_linen`, e.g. ``{'train': True}`` / ``{'train': False}``); NNX
modules by ``module.train()`` / ``module.eval()``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax
import flax.linen as linen
import jax
import jax.numpy as jnp
from flax import nnx

from jaxtheory.nn.core import Layer, Model, TrainMode, model
from jaxtheory.nn import convops, foreign

__all__ = ["from_linen", "from_nnx", "linen_layer", "nnx_layer"]

# Collections linen may create at init that carry no state: ``sow`` writes
# ``intermediates``, and ``apply`` without ``mutable`` ignores it.
_STATELESS_COLLECTIONS = ("intermediates",)


# ----------------------------------------------------------------------------
# Linen.


def _linen_eval(module: linen.Module, params, x, eval_kwargs: dict, name: str):
  """``module.apply(params, x, **eval_kwargs)``, with a clear error where evaluation needs more."""
  try:
    with foreign.loop_friendly_convolutions():
      return module.apply(params, x, **eval_kwargs)
  except flax.errors.ModifyScopeVariableError as e:
    raise ValueError(
        f"{name} updates its variables when it evaluates ({e.__class__.__name__}); pass "
        f"eval_kwargs that switch it to evaluation, e.g. eval_kwargs={{'train': False}} "
        f"for a module whose BatchNorm takes use_running_average=not train") from None
  except flax.errors.InvalidRngError as e:
    raise ValueError(
        f"{name} draws random numbers when it evaluates ({e.__class__.__name__}); pass "
        f"eval_kwargs that switch it to evaluation, e.g. eval_kwargs={{'train': False}} "
        f"for a module whose Dropout takes deterministic=not train") from None


def linen_layer(module: linen.Module, *, input_dtype: Any = None,
                sample_input: jax.typing.ArrayLike | None = None,
                eval_kwargs: dict | None = None, _model: bool = False) -> Layer:
  """A linen module as a :class:`~jaxtheory.nn.Layer` (evaluation mode).

  ``init`` returns the variables of ``module.init(key, x0, **eval_kwargs)``
  (a dict ``{'params': ..., 'batch_stats': ...}``, exactly what
  ``module.apply`` takes) and ``apply`` is ``module.apply(params, x,
  **eval_kwargs)``. ``x0`` is ``sample_input`` if given, else zeros of the
  input spec's shape and ``input_dtype``. Training mode is the model's
  (:func:`from_linen`).

  Args:
    module: a linen module.
    input_dtype: dtype of the dummy init input (default: the float dtype);
      pass ``jnp.int32`` for token models.
    sample_input: a batch to trace ``module.init`` with instead of zeros.
    eval_kwargs: keyword arguments of the module's ``__call__`` that make it
      evaluate (e.g. ``{'train': False}``); default none.

  Returns:
    The layer; its ``init`` raises ``ValueError`` if the module has
    variables besides ``params`` (``batch_stats``: a layer has no training
    mode; :func:`from_linen` gives such a module one), and ``apply`` if the
    module updates its variables or draws random numbers when called with
    ``eval_kwargs``. A layer always evaluates: its dropout never acts.
  """
  if sample_input is not None:
    sample_input = jnp.asarray(sample_input)
  name = f"linen module {type(module).__name__}"
  eval_kwargs = dict(eval_kwargs or {})

  def init(key, spec, ctx):
    foreign.check_ctx(ctx, name)
    x0 = sample_input
    if x0 is None:
      x0 = jnp.zeros(spec.shape, foreign.float_dtype(input_dtype))
    variables = _linen_init(module, key, x0, eval_kwargs)
    extra = sorted(set(variables) - {"params"})
    if extra and not _model:
      raise ValueError(
          f"{name} has variable collections {extra} besides 'params', which its training "
          f"mode updates; a layer has none: wrap the module whole with from_linen")
    y = jax.eval_shape(lambda v: _linen_eval(module, v, x0, eval_kwargs, name), variables)
    return foreign.specs(y, spec.shape[0]), variables, foreign.unit_lr(variables)

  def apply(params, x, feat, ctx):
    del feat
    foreign.check_ctx(ctx, name)
    y = _linen_eval(module, params, x, eval_kwargs, name)
    return y, foreign.fixed_feats(y)

  return Layer(init, apply)


def _linen_init(module: linen.Module, key, x0, eval_kwargs: dict) -> dict:
  """The variables of ``module.init`` (given a ``'dropout'`` stream too), minus stateless ones."""
  variables = module.init({"params": key, "dropout": jax.random.fold_in(key, 1)}, x0,
                          **eval_kwargs)
  variables = flax.core.unfreeze(variables)
  for c in _STATELESS_COLLECTIONS:
    variables.pop(c, None)
  return variables


def _linen_train_mode(module: linen.Module, collections: Sequence[str], train_kwargs: dict,
                      rng_streams: Sequence[str], name: str) -> TrainMode:
  """Training mode of a linen module: ``train_kwargs``, keys for ``rng_streams``, state updated."""
  state = tuple(c for c in collections if c != "params")

  @foreign.routed
  def apply(params, x, ctx, key):
    foreign.check_ctx(ctx, name)
    rngs = {s: jax.random.fold_in(key, i) for i, s in enumerate(rng_streams)}
    if not state:
      return module.apply(params, x, rngs=rngs, **train_kwargs), params
    y, new = module.apply(params, x, rngs=rngs, mutable=list(state), **train_kwargs)
    return y, {**params, **flax.core.unfreeze(new)}

  def is_state(params):
    return {c: jax.tree.map(lambda _, c=c: c != "params", v) for c, v in params.items()}

  return TrainMode(apply, is_state)


def from_linen(module: linen.Module, input_shape: Sequence[int], *,
               input_dtype: Any = None,
               sample_input: jax.typing.ArrayLike | None = None,
               train_kwargs: dict | None = None, eval_kwargs: dict | None = None,
               rng_streams: Sequence[str] = ("dropout",)) -> Model:
  """A linen module as a :class:`~jaxtheory.nn.Model`.

  ``model.init(key)`` equals ``module.init(key, x0, **eval_kwargs)`` and
  ``model.apply(params, x)`` equals ``module.apply(params, x, **eval_kwargs)``;
  see :func:`linen_layer`. Modules with dropout or batch norm train in
  their own mode (:class:`~jaxtheory.nn.TrainMode`): each step calls
  ``module.apply(params, x, rngs=..., mutable=[...], **train_kwargs)``, with a
  fresh key per step for every stream of ``rng_streams`` and every variable
  collection other than ``params`` (``batch_stats``) mutable; the step's
  parameters take those collections' new values. Metrics and probes
  evaluate (running statistics, no dropout).

  Args:
    module: a linen module.
    input_shape: shape of one example (no batch axis).
    input_dtype: dtype of the dummy init input; ``jnp.int32`` for tokens.
    sample_input: a batch ``(batch, *input_shape)`` to trace init with.
    train_kwargs: keyword arguments of the module's ``__call__`` in training
      (e.g. ``{'train': True}``); ``None`` with no collection besides
      ``params``: the module trains as it evaluates.
    eval_kwargs: keyword arguments in evaluation (e.g. ``{'train': False}``).
    rng_streams: the random streams training draws from (Flax's ``rngs``).

  Returns:
    The model (``Ctx(parametrization='sp', width=None)`` only, unless
    reparametrized by :func:`jaxtheory.nn.base_shapes.parametrize`).

  >>> import jax, jax.numpy as jnp, flax.linen as nn
  >>> m = from_linen(nn.Dense(3), (4,))
  >>> params = m.init(jax.random.key(0))
  >>> m.apply(params, jnp.ones((5, 4))).shape
  (5, 3)
  """
  input_shape = tuple(int(d) for d in input_shape)
  if sample_input is not None:
    sample_input = jnp.asarray(sample_input)
    if sample_input.shape[1:] != input_shape:
      raise ValueError(
          f"sample_input must have shape (batch, {', '.join(map(str, input_shape))})"
          f", got {sample_input.shape}")
    if input_dtype is None:
      input_dtype = sample_input.dtype
  name = f"linen module {type(module).__name__}"
  if eval_kwargs and train_kwargs is None:
    raise ValueError(
        f"{name}: eval_kwargs {eval_kwargs} switch it to evaluation but no train_kwargs switch "
        f"it to training; pass train_kwargs too (e.g. {{'train': True}}, or {{}} if it trains "
        f"with its defaults)")
  eval_kwargs = dict(eval_kwargs or {})
  x0 = (sample_input if sample_input is not None else
        jax.ShapeDtypeStruct((1, *input_shape), foreign.float_dtype(input_dtype)))
  collections = jax.eval_shape(lambda k, x: _linen_init(module, k, x, eval_kwargs),
                               jax.random.key(0), x0)
  jax.eval_shape(lambda v, x: _linen_eval(module, v, x, eval_kwargs, name), collections, x0)
  train_mode = None
  if train_kwargs is not None or set(collections) != {"params"}:
    train_mode = _linen_train_mode(module, tuple(collections), dict(train_kwargs or {}),
                                   tuple(rng_streams), name)
  return model(linen_layer(module, input_dtype=input_dtype, sample_input=sample_input,
                           eval_kwargs=eval_kwargs, _model=True), input_shape, paddable=False,
               features=_linen_features(module, eval_kwargs),
               penultimate=_linen_penultimate(module, eval_kwargs), train_mode=train_mode,
               layout="in_out")


def _linen_calls(module: linen.Module, params, x, eval_kwargs: dict | None = None
                 ) -> tuple[list, Any]:
  """``(calls, y)``: ``(submodule, input, output)`` of every submodule call of
  ``module.apply(params, x)``, and its output ``y``.

  Recorded by ``flax.linen.intercept_methods`` around every submodule's
  ``__call__``, in the order the calls return (a block after the layers inside
  it); a module without submodules gives its own call. ``submodule`` is the
  bound module, so its ``variables`` are readable.
  """
  calls = []

  def record(next_fun, args, kwargs, context):
    y = next_fun(*args, **kwargs)
    if context.method_name == "__call__" and args:
      calls.append((context.module.name is None, context.module, args[0], y))
    return y

  with linen.intercept_methods(record), foreign.loop_friendly_convolutions():
    y = module.apply(params, x, **(eval_kwargs or {}))
  subs = [c for c in calls if not c[0]] or [c for c in calls if c[0]][-1:]
  return [c[1:] for c in subs], y


def _linen_features(module: linen.Module, eval_kwargs: dict):
  """``features(params, x, ctx, inputs=False)``: each submodule's output (or input), in call order.

  See :func:`_linen_calls`; a module without submodules gives its own output (input).
  """
  who = f"linen module {type(module).__name__}"

  def features(params, x, ctx, inputs: bool = False):
    foreign.check_ctx(ctx, who)
    return [a if inputs else y for _, a, y in _linen_calls(module, params, x, eval_kwargs)[0]]

  return features


def _linen_penultimate(module: linen.Module, eval_kwargs: dict):
  """``penultimate(params, x, ctx) -> (H, {"W", "b"})``: input and params of the last ``Dense``."""
  who = f"linen module {type(module).__name__}"

  def penultimate(params, x, ctx):
    foreign.check_ctx(ctx, who)
    calls, y = _linen_calls(module, params, x, eval_kwargs)
    sub, h, out = calls[-1]
    if not isinstance(sub, linen.Dense):
      raise ValueError(
          f"the last submodule of {who} is a {type(sub).__name__}, not a linen.Dense "
          f"readout; penultimate features are undefined")
    foreign.check_readout(out, y, who, "Dense")
    p = sub.variables["params"]
    return h, {"W": p["kernel"], **({"b": p["bias"]} if "bias" in p else {})}

  return penultimate


# ----------------------------------------------------------------------------
# NNX.


def _nnx_split(module: nnx.Module):
  """``(graphdef, params, rngs, state)``: ``nnx.Param``, ``nnx.RngState``, every other variable.

  Values a call sows (``nnx.Intermediate``) are not state: they are dropped.
  """
  graphdef, params, rngs, _, state = nnx.split(module, nnx.Param, nnx.RngState, nnx.Intermediate,
                                               ...)
  return graphdef, params, rngs, state


class _NNX(NamedTuple):
  """An NNX module taken apart: how to build it, run it in either mode, and read its parameters."""
  build: Callable      # key -> module
  name: str
  eval_def: Any        # the graphdef after module.eval()
  train_def: Any       # the graphdef after module.train()
  rngs: Any            # abstract RngState (keys are drawn per call)
  stateful: bool       # state (BatchStat, ...) besides the parameters

  def params_of(self, module) -> Any:
    """The model's parameters: the ``nnx.Param`` state, with ``{'params', 'state'}`` if stateful."""
    _, params, _, state = _nnx_split(module)
    return {"params": params, "state": state} if self.stateful else params

  def merge(self, graphdef, params, key):
    params, state = ((params["params"], params["state"]) if self.stateful else
                     (params, nnx.State({})))
    return nnx.merge(graphdef, params, _draw_rngs(self.rngs, key), state)

  def module(self, params):
    """The module in evaluation mode (``module.eval()``) with these parameters."""
    return self.merge(self.eval_def, params, jax.random.key(0))

  def train_mode(self) -> TrainMode | None:
    if self.eval_def == self.train_def and not self.stateful and not jax.tree.leaves(self.rngs):
      return None

    @foreign.routed
    def apply(params, x, ctx, key):
      foreign.check_ctx(ctx, self.name)
      m = self.merge(self.train_def, params, key)
      y = m(x)
      if not self.stateful:
        return y, params
      return y, {"params": params["params"], "state": _nnx_split(m)[3]}

    return TrainMode(apply, foreign.state_leaves(self.stateful))


def _draw_rngs(abstract, key):
  """Concrete ``nnx.RngState`` like ``abstract``: its keys drawn from ``key``, counts at zero."""
  leaves, tree = jax.tree.flatten(abstract)
  out = [jax.random.fold_in(key, i) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
         else jnp.zeros(x.shape, x.dtype) for i, x in enumerate(leaves)]
  return jax.tree.unflatten(tree, out)


def _nnx_parts(module_or_factory) -> _NNX:
  """An NNX module or factory taken apart (:class:`_NNX`)."""
  if isinstance(module_or_factory, nnx.Module):
    instance = module_or_factory
    build = lambda key: instance
    abstract = nnx.eval_shape(lambda: nnx.merge(*nnx.split(instance)))  # a copy to switch modes
  elif callable(module_or_factory):
    build = lambda key: module_or_factory(nnx.Rngs(key))
    abstract = nnx.eval_shape(lambda: build(jax.random.key(0)))
  else:
    raise TypeError(
        f"from_nnx expects an nnx.Module or a factory rngs -> nnx.Module, got "
        f"{type(module_or_factory).__name__}")
  name = f"NNX module {type(abstract).__name__}"
  _, _, rngs, state = _nnx_split(abstract)
  for _, m in nnx.iter_modules(abstract):  # lax's convolution, with a loop-friendly derivative
    if getattr(m, "conv_general_dilated", None) is convops.LAX_CONV:
      m.conv_general_dilated = foreign.loop_friendly_conv
  abstract.eval()
  eval_def = nnx.split(abstract, nnx.Param, nnx.RngState, ...)[0]
  abstract.train()
  train_def = nnx.split(abstract, nnx.Param, nnx.RngState, ...)[0]
  return _NNX(build, name, eval_def, train_def, rngs, bool(jax.tree.leaves(state)))


def nnx_layer(module_or_factory: nnx.Module | Callable[[nnx.Rngs], nnx.Module], *,
              input_dtype: Any = None, _model: bool = False) -> Layer:
  """An NNX module as a :class:`~jaxtheory.nn.Layer` (evaluation mode).

  The parameters are the ``nnx.State`` of the module's ``nnx.Param`` variables
  (a plain pytree), or ``{'params': ..., 'state': ...}`` for a module with
  other variables (e.g. ``nnx.BatchStat``); ``apply`` runs the module after
  ``module.eval()`` (running statistics, no dropout). Training mode is the
  model's (:func:`from_nnx`).

  Args:
    module_or_factory: preferably a factory ``lambda rngs: MyModule(...,
      rngs=rngs)``, so that ``init(key)`` builds ``factory(nnx.Rngs(key))``
      (different keys, different draws; ``vmap`` over keys works). A module
      instance is also accepted: then ``init`` ignores its key and returns the
      module's current parameters.
    input_dtype: dtype of the dummy input used to find the output shape.

  Returns:
    The layer. Raises ``ValueError`` now if the module holds state
    (``nnx.BatchStat``) or random streams, or trains otherwise than it
    evaluates: a layer has no training mode; :func:`from_nnx` gives such a
    module one.
  """
  parts = _nnx_parts(module_or_factory)
  if not _model and parts.train_mode() is not None:
    raise ValueError(f"{parts.name} trains otherwise than it evaluates (batch norm, dropout): "
                     f"wrap it whole with from_nnx, which gives it its training mode")
  return foreign.layer(lambda params, x: parts.module(params)(x),
                       lambda key: parts.params_of(parts.build(key)), parts.name, input_dtype)


def from_nnx(module_or_factory: nnx.Module | Callable[[nnx.Rngs], nnx.Module],
             input_shape: Sequence[int], *, input_dtype: Any = None) -> Model:
  """An NNX module as a :class:`~jaxtheory.nn.Model`; see :func:`nnx_layer`.

  A module with dropout or batch norm trains in NNX's training mode
  (``module.train()``; :class:`~jaxtheory.nn.TrainMode`): each step draws
  every random stream the module holds (``nnx.Rngs``) afresh from the step's
  key, and its ``nnx.BatchStat`` variables take the values the step gives
  them. Metrics and probes evaluate (``module.eval()``).

  Args:
    module_or_factory: a factory ``rngs -> module`` (recommended: ``init(key)``
      then draws fresh parameters from ``key``) or a module instance (``init``
      returns its current parameters whatever the key).
    input_shape: shape of one example (no batch axis).
    input_dtype: dtype of the dummy input; ``jnp.int32`` for tokens.

  Returns:
    The model (``Ctx(parametrization='sp', width=None)`` only). Its
    ``features`` are its submodules' outputs (inputs) in call order, whatever
    their attribute names, and its ``penultimate`` the input of the last
    submodule called, which must be an ``nnx.Linear`` (for probes).

  >>> import jax, jax.numpy as jnp
  >>> from flax import nnx
  >>> m = from_nnx(lambda rngs: nnx.Linear(4, 3, rngs=rngs), (4,))
  >>> params = m.init(jax.random.key(0))
  >>> m.apply(params, jnp.ones((5, 4))).shape
  (5, 3)
  """
  parts = _nnx_parts(module_or_factory)
  name = parts.name

  @foreign.routed
  def features(params, x, ctx, inputs: bool = False):
    foreign.check_ctx(ctx, name)
    return [a if inputs else y for _, a, y in _nnx_calls(parts.module(params), x)[0]]

  @foreign.routed
  def penultimate(params, x, ctx):
    foreign.check_ctx(ctx, name)
    calls, y = _nnx_calls(parts.module(params), x)
    sub, h, out = calls[-1]
    if not isinstance(sub, nnx.Linear):
      raise ValueError(
          f"the last submodule of {name} is a {type(sub).__name__}, not an nnx.Linear "
          f"readout; penultimate features are undefined")
    foreign.check_readout(out, y, name, "Linear")
    bias = getattr(sub, "bias", None)
    return h, {"W": sub.kernel.get_value(),
               **({} if bias is None else {"b": bias.get_value()})}

  return model(nnx_layer(module_or_factory, input_dtype=input_dtype, _model=True), input_shape,
               paddable=False, features=features, penultimate=penultimate,
               train_mode=parts.train_mode(), layout="in_out")


_OWN_NOTHING = object()


def _nnx_calls(root: nnx.Module, x) -> tuple[list, Any]:
  """``(calls, y)``: ``(submodule, input, output)`` of every submodule call of ``root(x)``,
  and its output ``y``.

  NNX has no method interceptor, so the ``__call__`` of each submodule's class
  is wrapped for the duration of the call (as ``nnx.capture`` does with
  ``method_outputs``) and restored after; only calls on this module's
  submodules are recorded, in the order they return (a block after the layers
  inside it), as :func:`_linen_calls` does. A module without submodules gives
  its own call.
  """
  subs = {id(m) for path, m in nnx.iter_modules(root) if path}
  if not subs:
    y = root(x)
    return [(root, x, y)], y
  classes = {type(m) for _, m in nnx.iter_modules(root) if id(m) in subs}
  originals = {cls: cls.__call__ for cls in classes}  # all looked up before any is wrapped
  owned = {cls: cls.__dict__.get("__call__", _OWN_NOTHING) for cls in classes}
  calls, active = [], set()

  def wrap(call):
    @functools.wraps(call)
    def recorded(self, *args, **kwargs):
      if id(self) not in subs or id(self) in active or not args:
        return call(self, *args, **kwargs)  # the root, or a super().__call__ inside a call
      active.add(id(self))
      try:
        y = call(self, *args, **kwargs)
      finally:
        active.discard(id(self))
      calls.append((self, args[0], y))
      return y
    return recorded

  try:
    for cls in classes:
      cls.__call__ = wrap(originals[cls])
    y = root(x)
  finally:
    for cls in classes:
      if owned[cls] is _OWN_NOTHING:
        del cls.__call__
      else:
        cls.__call__ = owned[cls]
  return calls, y
