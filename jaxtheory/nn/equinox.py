"""Equinox interop: an ``eqx.Module`` as a layer or model of this library.

A module is split by ``eqx.partition(module, eqx.is_inexact_array)`` into its
parameters (a pytree of float arrays, ``None`` elsewhere, exactly what
``eqx.combine`` takes back) and its static part (activations, sizes, ...),
which is closed over. So the wrapped module is an ordinary ``(init, apply)``
pair that runs under ``jit``, ``grad``, ``vmap`` over seeds and in the optax
loops of :mod:`jaxtheory.train`.

Equinox modules act on ONE example; ``apply`` maps the module over the batch
axis with ``jax.vmap`` (pass ``batched=True`` for a module that takes a batch
itself). As for Flax modules (:mod:`jaxtheory.nn.flax`), a wrapped module runs
under ``Ctx(parametrization='sp', width=None)`` only, its ``Model`` has
``paddable=False`` (a width sweep builds it at each width) and every
learning-rate multiplier is one. Only stateless modules are supported: every
array the module holds must be a float parameter (no ``eqx.nn.BatchNorm``
state, no integer buffers).

``equinox`` is imported by this module only (``pip install equinox``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from jaxtheory.nn import foreign
from jaxtheory.nn.core import Layer, Model, model

__all__ = ["eqx_layer", "from_eqx"]


def _is_float(x) -> bool:
  return eqx.is_inexact_array(x) or (
      isinstance(x, jax.ShapeDtypeStruct) and jnp.issubdtype(x.dtype, jnp.inexact))


def _partition(module, name: str):
  """``(params, static)`` of a module (concrete or abstract); refuses state and other arrays."""
  if any(isinstance(x, eqx.nn.StateIndex) for x in jax.tree.leaves(
      module, is_leaf=lambda x: isinstance(x, eqx.nn.StateIndex))):
    raise ValueError(f"{name} holds state (eqx.nn.StateIndex, e.g. BatchNorm); only "
                     f"stateless modules are supported")
  params, static = eqx.partition(module, _is_float)
  other = [x for x in jax.tree.leaves(static)
           if eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)]
  if other:
    kinds = sorted({str(x.dtype) for x in other})
    raise ValueError(
        f"{name} holds arrays that are not float parameters ({', '.join(kinds)}); only "
        f"stateless modules whose arrays are all parameters are supported")
  return params, static


def eqx_layer(module_or_factory: eqx.Module | Callable[[jax.Array], eqx.Module], *,
              batched: bool = False, input_dtype: Any = None) -> Layer:
  """An Equinox module as a :class:`~jaxtheory.nn.Layer`.

  Args:
    module_or_factory: preferably a factory ``key -> module`` (e.g. ``lambda
      key: eqx.nn.MLP(4, 3, 64, 2, key=key)``), so that ``init(key)`` draws
      fresh parameters from ``key`` (``vmap`` over keys works). A module
      instance is also accepted: then ``init`` ignores its key and returns the
      module's current parameters.
    batched: the module takes a batch ``(batch, ...)`` itself; by default it
      takes one example and ``apply`` vmaps it over the batch.
    input_dtype: dtype of the dummy input used to find the output shape.

  Returns:
    The layer. Raises ``ValueError`` now if the module holds arrays other than
    float parameters.
  """
  if isinstance(module_or_factory, eqx.Module):
    instance = module_or_factory
    build = lambda key: instance
  elif callable(module_or_factory):
    build = module_or_factory
  else:
    raise TypeError(
        f"from_eqx expects an eqx.Module or a factory key -> eqx.Module, got "
        f"{type(module_or_factory).__name__}")
  abstract = eqx.filter_eval_shape(build, jax.random.key(0))
  name = f"Equinox module {type(abstract).__name__}"
  _, static = _partition(abstract, name)

  def call(params, x):
    module = eqx.combine(params, static)
    return module(x) if batched else jax.vmap(module)(x)

  return foreign.layer(call, lambda key: _partition(build(key), name)[0], name, input_dtype)


def _layers_of(module, x, inputs: bool = False) -> list:
  """Outputs (or inputs) of each layer of an ``eqx.nn.MLP`` or ``eqx.nn.Sequential`` on ONE example."""
  outs = []
  if isinstance(module, eqx.nn.MLP):
    for i, layer in enumerate(module.layers):
      y = layer(x)
      outs.append(x if inputs else y)
      x = module.activation(y) if i < len(module.layers) - 1 else y
    return outs
  if isinstance(module, eqx.nn.Sequential):
    for layer in module.layers:
      y = layer(x)
      outs.append(x if inputs else y)
      x = y
    return outs
  raise ValueError(
      f"the features of an Equinox {type(module).__name__} are not known; pass "
      f"from_eqx(..., features=lambda module, x: [activations...])")


def _readout_of(module, who: str) -> dict:
  """``{"W": (d, C), "b": (C,)}``: the last layer of an ``eqx.nn.MLP`` or ``eqx.nn.Sequential``."""
  if not isinstance(module, (eqx.nn.MLP, eqx.nn.Sequential)):
    raise ValueError(
        f"the readout of {who} is not known (only the last layer of an eqx.nn.MLP or "
        f"eqx.nn.Sequential is); penultimate features are undefined")
  last = module.layers[-1]
  if not isinstance(last, eqx.nn.Linear) or last.weight.ndim != 2:
    raise ValueError(
        f"the last layer of {who} is a {type(last).__name__}, not an eqx.nn.Linear "
        f"readout with vector outputs; penultimate features are undefined")
  return {"W": last.weight.T, **({} if last.bias is None else {"b": last.bias})}


def from_eqx(module_or_factory: eqx.Module | Callable[[jax.Array], eqx.Module],
             input_shape: Sequence[int], *, batched: bool = False,
             input_dtype: Any = None, features: Callable | None = None) -> Model:
  """An Equinox module as a :class:`~jaxtheory.nn.Model`; see :func:`eqx_layer`.

  ``model.init(key)`` equals ``eqx.partition(factory(key), eqx.is_inexact_array)[0]``
  and ``model.apply(params, x)`` equals ``jax.vmap(eqx.combine(params, static))(x)``.

  Args:
    module_or_factory: a factory ``key -> module`` (recommended) or a module.
    input_shape: shape of one example (no batch axis).
    batched: the module takes a batch itself (no ``vmap`` over examples).
    input_dtype: dtype of the dummy input; ``jnp.int32`` for tokens.
    features: ``(module, x, inputs=False) -> list of activations`` for probes
      (each layer's output, or its input with ``inputs=True``; ``x`` one
      example, or a batch if ``batched``); default: the layers of an
      ``eqx.nn.MLP`` (outputs before each activation) or ``eqx.nn.Sequential``.
      The model's ``penultimate`` is the input of the last of them, its
      readout the last ``eqx.nn.Linear`` of an ``eqx.nn.MLP`` or
      ``eqx.nn.Sequential`` (transposed to ``(d, C)``).

  Returns:
    The model (``Ctx(parametrization='sp', width=None)`` only; ``paddable=False``).

  >>> import jax, jax.numpy as jnp, equinox as eqx
  >>> m = from_eqx(lambda key: eqx.nn.Linear(4, 3, key=key), (4,))
  >>> params = m.init(jax.random.key(0))
  >>> m.apply(params, jnp.ones((5, 4))).shape
  (5, 3)
  """
  layer = eqx_layer(module_or_factory, batched=batched, input_dtype=input_dtype)
  abstract = (module_or_factory if isinstance(module_or_factory, eqx.Module) else
              eqx.filter_eval_shape(module_or_factory, jax.random.key(0)))
  _, static = eqx.partition(abstract, _is_float)
  per_example = features or _layers_of

  def feats(params, x, ctx, inputs: bool = False):
    foreign.check_ctx(ctx, f"Equinox module {type(abstract).__name__}")
    module = eqx.combine(params, static)
    f = (lambda m, e: per_example(m, e, inputs=True)) if inputs else per_example
    return f(module, x) if batched else jax.vmap(lambda e: f(module, e))(x)

  def penultimate(params, x, ctx):
    H = feats(params, x, ctx, inputs=True)[-1]
    return H, _readout_of(eqx.combine(params, static), f"Equinox module {type(abstract).__name__}")

  return model(layer, input_shape, paddable=False, features=feats, penultimate=penultimate)
