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
rates, not the module). Only stateless modules are supported: their variables
must all be parameters (no ``batch_stats``, no NNX ``BatchStat`` or stored
``Rngs``), and ``apply`` must be deterministic (e.g. dropout switched off).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax
import flax.linen as linen
import jax
import jax.numpy as jnp
from flax import nnx

from jaxtheory.nn.core import Layer, Model, model
from jaxtheory.nn import foreign

__all__ = ["from_linen", "from_nnx", "linen_layer", "nnx_layer"]

# Collections linen may create at init that carry no state: ``sow`` writes
# ``intermediates``, and ``apply`` without ``mutable`` ignores it.
_STATELESS_COLLECTIONS = ("intermediates",)


# ----------------------------------------------------------------------------
# Linen.


def linen_layer(module: linen.Module, *, input_dtype: Any = None,
                sample_input: jax.typing.ArrayLike | None = None) -> Layer:
  """A linen module as a :class:`~jaxtheory.nn.Layer`.

  ``init`` returns the variables of ``module.init(key, x0)`` (a dict
  ``{'params': ...}``, exactly what ``module.apply`` takes) and ``apply`` is
  ``module.apply(params, x)``. ``x0`` is ``sample_input`` if given, else zeros of
  the input spec's shape and ``input_dtype``.

  Args:
    module: a linen module whose only variable collection is ``params``.
    input_dtype: dtype of the dummy init input (default: the float dtype);
      pass ``jnp.int32`` for token models.
    sample_input: a batch to trace ``module.init`` with instead of zeros.

  Returns:
    The layer; its ``init`` raises ``ValueError`` if the module creates other
    collections (e.g. ``batch_stats``).
  """
  if sample_input is not None:
    sample_input = jnp.asarray(sample_input)
  name = f"linen module {type(module).__name__}"

  def init(key, spec, ctx):
    foreign.check_ctx(ctx, name)
    x0 = sample_input
    if x0 is None:
      x0 = jnp.zeros(spec.shape, foreign.float_dtype(input_dtype))
    y, variables = module.init_with_output(key, x0)
    variables = flax.core.unfreeze(variables)
    for c in _STATELESS_COLLECTIONS:
      variables.pop(c, None)
    extra = sorted(set(variables) - {"params"})
    if extra:
      raise ValueError(
          f"{name} has variable collections {extra} besides 'params'; only "
          f"stateless modules are supported (e.g. LayerNorm instead of BatchNorm)")
    return foreign.specs(y, spec.shape[0]), variables, foreign.unit_lr(variables)

  def apply(params, x, feat, ctx):
    del feat
    foreign.check_ctx(ctx, name)
    y = module.apply(params, x)
    return y, foreign.fixed_feats(y)

  return Layer(init, apply)


def from_linen(module: linen.Module, input_shape: Sequence[int], *,
               input_dtype: Any = None,
               sample_input: jax.typing.ArrayLike | None = None) -> Model:
  """A linen module as a :class:`~jaxtheory.nn.Model`.

  ``model.init(key)`` equals ``module.init(key, x0)`` and ``model.apply(params,
  x)`` equals ``module.apply(params, x)``; see :func:`linen_layer`.

  Args:
    module: a stateless linen module (only a ``params`` collection).
    input_shape: shape of one example (no batch axis).
    input_dtype: dtype of the dummy init input; ``jnp.int32`` for tokens.
    sample_input: a batch ``(batch, *input_shape)`` to trace init with.

  Returns:
    The model (``Ctx(parametrization='sp', width=None)`` only).

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
  return model(linen_layer(module, input_dtype=input_dtype,
                           sample_input=sample_input), input_shape, paddable=False,
               features=_linen_features(module), penultimate=_linen_penultimate(module))


def _linen_calls(module: linen.Module, params, x) -> list:
  """``(submodule, input, output)`` of every submodule call of ``module.apply(params, x)``.

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

  with linen.intercept_methods(record):
    module.apply(params, x)
  subs = [c for c in calls if not c[0]] or [c for c in calls if c[0]][-1:]
  return [c[1:] for c in subs]


def _linen_features(module: linen.Module):
  """``features(params, x, ctx, inputs=False)``: each submodule's output (or input), in call order.

  See :func:`_linen_calls`; a module without submodules gives its own output (input).
  """
  who = f"linen module {type(module).__name__}"

  def features(params, x, ctx, inputs: bool = False):
    foreign.check_ctx(ctx, who)
    return [a if inputs else y for _, a, y in _linen_calls(module, params, x)]

  return features


def _linen_penultimate(module: linen.Module):
  """``penultimate(params, x, ctx) -> (H, {"W", "b"})``: input and params of the last ``Dense``."""
  who = f"linen module {type(module).__name__}"

  def penultimate(params, x, ctx):
    foreign.check_ctx(ctx, who)
    sub, h, _ = _linen_calls(module, params, x)[-1]
    if not isinstance(sub, linen.Dense):
      raise ValueError(
          f"the last submodule of {who} is a {type(sub).__name__}, not a linen.Dense "
          f"readout; penultimate features are undefined")
    p = sub.variables["params"]
    return h, {"W": p["kernel"], **({"b": p["bias"]} if "bias" in p else {})}

  return penultimate


# ----------------------------------------------------------------------------
# NNX.


def _split_params(module: nnx.Module, name: str):
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  if jax.tree.leaves(rest):
    kinds = sorted({type(v).__name__ for v in
                    jax.tree.leaves(rest, is_leaf=lambda v: isinstance(v, nnx.Variable))})
    raise ValueError(
        f"{name} holds variables other than nnx.Param ({', '.join(kinds)}); only "
        f"stateless modules are supported (no BatchStat, no stored Rngs)")
  return graphdef, params


def _nnx_parts(module_or_factory):
  """``(build: key -> module, graphdef, name)`` of an NNX module or factory."""
  if isinstance(module_or_factory, nnx.Module):
    instance = module_or_factory
    name = f"NNX module {type(instance).__name__}"
    graphdef, _ = _split_params(instance, name)
    build = lambda key: instance
  elif callable(module_or_factory):
    build = lambda key: module_or_factory(nnx.Rngs(key))
    abstract = nnx.eval_shape(lambda: build(jax.random.key(0)))
    name = f"NNX module {type(abstract).__name__}"
    graphdef, _ = _split_params(abstract, name)
  else:
    raise TypeError(
        f"from_nnx expects an nnx.Module or a factory rngs -> nnx.Module, got "
        f"{type(module_or_factory).__name__}")
  return build, graphdef, name


def nnx_layer(module_or_factory: nnx.Module | Callable[[nnx.Rngs], nnx.Module], *,
              input_dtype: Any = None) -> Layer:
  """An NNX module as a :class:`~jaxtheory.nn.Layer`.

  The parameters are the ``nnx.State`` of the module's ``nnx.Param`` variables
  (a plain pytree); ``apply`` is ``nnx.merge(graphdef, params)(x)``.

  Args:
    module_or_factory: preferably a factory ``lambda rngs: MyModule(...,
      rngs=rngs)``, so that ``init(key)`` builds ``factory(nnx.Rngs(key))``
      (different keys, different draws; ``vmap`` over keys works). A module
      instance is also accepted: then ``init`` ignores its key and returns the
      module's current parameters.
    input_dtype: dtype of the dummy input used to find the output shape.

  Returns:
    The layer. Raises ``ValueError`` now if the module holds variables other
    than ``nnx.Param``.
  """
  build, graphdef, name = _nnx_parts(module_or_factory)

  def call(params, x):
    return nnx.merge(graphdef, params)(x)

  return foreign.layer(call, lambda key: _split_params(build(key), name)[1], name, input_dtype)


def from_nnx(module_or_factory: nnx.Module | Callable[[nnx.Rngs], nnx.Module],
             input_shape: Sequence[int], *, input_dtype: Any = None) -> Model:
  """An NNX module as a :class:`~jaxtheory.nn.Model`; see :func:`nnx_layer`.

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
  _, graphdef, name = _nnx_parts(module_or_factory)

  def features(params, x, ctx, inputs: bool = False):
    foreign.check_ctx(ctx, name)
    return [a if inputs else y for _, a, y in _nnx_calls(graphdef, params, x)]

  def penultimate(params, x, ctx):
    foreign.check_ctx(ctx, name)
    sub, h, _ = _nnx_calls(graphdef, params, x)[-1]
    if not isinstance(sub, nnx.Linear):
      raise ValueError(
          f"the last submodule of {name} is a {type(sub).__name__}, not an nnx.Linear "
          f"readout; penultimate features are undefined")
    bias = getattr(sub, "bias", None)
    return h, {"W": sub.kernel.get_value(),
               **({} if bias is None else {"b": bias.get_value()})}

  return model(nnx_layer(module_or_factory, input_dtype=input_dtype), input_shape,
               paddable=False, features=features, penultimate=penultimate)


_OWN_NOTHING = object()


def _nnx_calls(graphdef, params, x) -> list:
  """``(submodule, input, output)`` of every submodule call of ``nnx.merge(graphdef, params)(x)``.

  NNX has no method interceptor, so the ``__call__`` of each submodule's class
  is wrapped for the duration of the call (as ``nnx.capture`` does with
  ``method_outputs``) and restored after; only calls on this module's
  submodules are recorded, in the order they return (a block after the layers
  inside it), as :func:`_linen_calls` does. A module without submodules gives
  its own call.
  """
  root = nnx.merge(graphdef, params)
  subs = {id(m) for path, m in nnx.iter_modules(root) if path}
  if not subs:
    return [(root, x, root(x))]
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
    root(x)
  finally:
    for cls in classes:
      if owned[cls] is _OWN_NOTHING:
        del cls.__call__
      else:
        cls.__call__ = owned[cls]
  return calls
