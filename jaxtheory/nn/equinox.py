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
learning-rate multiplier is one. Every array the module holds must be a float
parameter (no integer buffers); state (``eqx.nn.BatchNorm``'s running
statistics) lives in an ``eqx.nn.State`` beside it, and a module with state
or dropout trains in Equinox's training mode and evaluates in its inference
mode (:func:`from_eqx`).

``equinox`` is imported by this module only (``pip install equinox``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from jaxtheory.nn import foreign
from jaxtheory.nn.core import Layer, Model, TrainMode, model

__all__ = ["eqx_layer", "from_eqx"]


def _is_float(x) -> bool:
  return eqx.is_inexact_array(x) or (
      isinstance(x, jax.ShapeDtypeStruct) and jnp.issubdtype(x.dtype, jnp.inexact))


def _is_index(x) -> bool:
  return isinstance(x, eqx.nn.StateIndex)


def _partition(module, name: str):
  """``(params, static)`` of a module (concrete or abstract); refuses arrays that are not float.

  State (``eqx.nn.StateIndex``, e.g. BatchNorm's) lives in an ``eqx.nn.State``
  beside the module, not in it: the index itself goes to the static part.
  """
  params, static = eqx.partition(module, _is_float, is_leaf=_is_index)
  other = [x for x in jax.tree.leaves(static, is_leaf=_is_index)
           if not _is_index(x) and (eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct))]
  if other:
    kinds = sorted({str(x.dtype) for x in other})
    raise ValueError(
        f"{name} holds arrays that are not float parameters ({', '.join(kinds)}); only "
        f"float parameters (and state in an eqx.nn.State) are supported")
  return params, static


def _fresh(state):
  """A copy of an ``eqx.nn.State`` (Equinox refuses to read a state twice)."""
  leaves, tree = jax.tree.flatten(state)
  return jax.tree.unflatten(tree, leaves)


class _Eqx(NamedTuple):
  """An Equinox module taken apart: how to build it and run it in either mode."""
  build: Callable       # key -> (params, state or None)
  name: str
  eval_static: Any      # the static part after eqx.nn.inference_mode(module)
  train_static: Any     # the static part after eqx.nn.inference_mode(module, False)
  stateful: bool        # the module has state (eqx.nn.State)
  takes_key: bool       # its __call__ takes key=
  batched: bool
  axis_name: str

  def split(self, params):
    return (params["params"], _fresh(params["state"])) if self.stateful else (params, None)

  @foreign.routed
  def call(self, static, params, x, key, mode: str):
    """Outputs (and the new state) of the module on a batch ``x``."""
    p, state = self.split(params)
    m = eqx.combine(p, static)

    def one(e, k):
      kw = {} if k is None else {"key": k}
      return m(e, state, **kw) if self.stateful else m(e, **kw)

    if self.batched:
      out = one(x, key)
    else:
      keys = None if key is None else jax.random.split(key, x.shape[0])
      out_axes = (0, None) if self.stateful else 0
      out = jax.vmap(one, in_axes=(0, None if keys is None else 0), out_axes=out_axes,
                     axis_name=self.axis_name)(x, keys)
    if mode == "eval":
      return out[0] if self.stateful else out
    return out

  def has_train_mode(self) -> bool:
    return self.stateful or not eqx.tree_equal(self.eval_static, self.train_static)

  def eval_apply(self, params, x):
    """The module in inference mode (``eqx.nn.inference_mode``: running statistics, no dropout)."""
    if not self.has_train_mode():
      return self.call(self.eval_static, params, x, None, "eval")
    key = jax.random.key(0) if self.takes_key else None  # unused in inference mode
    return self.call(self.eval_static, params, x, key, "eval")

  def train_mode(self) -> TrainMode | None:
    if not self.has_train_mode():
      return None

    def apply(params, x, ctx, key):
      foreign.check_ctx(ctx, self.name)
      out = self.call(self.train_static, params, x, key if self.takes_key else None, "train")
      if not self.stateful:
        return out, params
      return out[0], {"params": params["params"], "state": out[1]}

    return TrainMode(apply, foreign.state_leaves(self.stateful))


def _eqx_parts(module_or_factory, batched: bool, axis_name: str) -> _Eqx:
  if isinstance(module_or_factory, eqx.Module):
    instance = module_or_factory
    factory = lambda key: instance
  elif callable(module_or_factory):
    factory = module_or_factory
  else:
    raise TypeError(
        f"from_eqx expects an eqx.Module or a factory key -> eqx.Module, got "
        f"{type(module_or_factory).__name__}")
  abstract = eqx.filter_eval_shape(factory, jax.random.key(0))
  name = f"Equinox module {type(abstract).__name__}"
  stateful = any(_is_index(x) for x in jax.tree.leaves(abstract, is_leaf=_is_index))
  if stateful and isinstance(module_or_factory, eqx.Module):
    raise ValueError(f"{name} holds state (eqx.nn.StateIndex, e.g. BatchNorm): pass a factory "
                     f"key -> module, which is built by eqx.nn.make_with_state")
  state_tree = None
  if stateful:
    # Every build names its state afresh; the state is read under this build's names.
    abstract, state = eqx.filter_eval_shape(eqx.nn.make_with_state(factory), jax.random.key(0))
    state_tree = jax.tree.structure(state)
  _partition(abstract, name)

  def build(key):
    if stateful:
      module, state = eqx.nn.make_with_state(factory)(key)
      return {"params": _partition(module, name)[0],
              "state": jax.tree.unflatten(state_tree, jax.tree.leaves(state))}
    return _partition(factory(key), name)[0]

  eval_static = _partition(eqx.nn.inference_mode(abstract, True), name)[1]
  train_static = _partition(eqx.nn.inference_mode(abstract, False), name)[1]
  takes_key = "key" in inspect.signature(type(abstract).__call__).parameters
  return _Eqx(build, name, eval_static, train_static, stateful, takes_key, batched, axis_name)


def eqx_layer(module_or_factory: eqx.Module | Callable[[jax.Array], eqx.Module], *,
              batched: bool = False, input_dtype: Any = None, axis_name: str = "batch",
              _model: bool = False) -> Layer:
  """An Equinox module as a :class:`~jaxtheory.nn.Layer` (inference mode).

  Args:
    module_or_factory: preferably a factory ``key -> module`` (e.g. ``lambda
      key: eqx.nn.MLP(4, 3, 64, 2, key=key)``), so that ``init(key)`` draws
      fresh parameters from ``key`` (``vmap`` over keys works). A module
      instance is also accepted: then ``init`` ignores its key and returns the
      module's current parameters. A module with state (``eqx.nn.BatchNorm``)
      must be given by a factory (it is built by ``eqx.nn.make_with_state``).
    batched: the module takes a batch ``(batch, ...)`` itself; by default it
      takes one example and ``apply`` vmaps it over the batch.
    input_dtype: dtype of the dummy input used to find the output shape.
    axis_name: the batch axis name the module's ``BatchNorm`` layers reduce over.

  Returns:
    The layer. Raises ``ValueError`` now if the module holds arrays other than
    float parameters, or trains otherwise than it evaluates (state, dropout):
    a layer has no training mode; :func:`from_eqx` gives such a module one.
  """
  parts = _eqx_parts(module_or_factory, batched, axis_name)
  if not _model and parts.has_train_mode():
    raise ValueError(f"{parts.name} trains otherwise than it evaluates (batch norm, dropout): "
                     f"wrap it whole with from_eqx, which gives it its training mode")
  return foreign.layer(parts.eval_apply, parts.build, parts.name, input_dtype)


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


def _identity(fn) -> bool:
  """Whether an activation is the identity: no parameters of its own (a learnable one, such as
  PReLU, is not) and a few points, large ones too, left where they are; evaluated now,
  inside a trace too."""
  if jax.tree.leaves(eqx.filter(fn, eqx.is_array)):
    return False
  with jax.ensure_compile_time_eval():
    probe = jnp.array([-1e4, -3.0, -0.5, 0.0, 0.25, 7.0, 1e4])
    return bool(jnp.all(jax.vmap(fn)(probe) == probe))


def _readout_of(module, who: str) -> dict:
  """``{"W": (d, C), "b": (C,)}``: the last layer of an ``eqx.nn.MLP`` or ``eqx.nn.Sequential``."""
  if not isinstance(module, (eqx.nn.MLP, eqx.nn.Sequential)):
    raise ValueError(
        f"the readout of {who} is not known (only the last layer of an eqx.nn.MLP or "
        f"eqx.nn.Sequential is); penultimate features are undefined")
  if isinstance(module, eqx.nn.MLP) and not _identity(module.final_activation):
    raise ValueError(
        f"{who} applies a final activation after its last layer, so its output is not "
        f"H @ W + b; penultimate features and readout are undefined")
  last = module.layers[-1]
  if not isinstance(last, eqx.nn.Linear) or last.weight.ndim != 2:
    raise ValueError(
        f"the last layer of {who} is a {type(last).__name__}, not an eqx.nn.Linear "
        f"readout with vector outputs; penultimate features are undefined")
  return {"W": last.weight.T, **({} if last.bias is None else {"b": last.bias})}


def from_eqx(module_or_factory: eqx.Module | Callable[[jax.Array], eqx.Module],
             input_shape: Sequence[int], *, batched: bool = False,
             input_dtype: Any = None, features: Callable | None = None,
             axis_name: str = "batch") -> Model:
  """An Equinox module as a :class:`~jaxtheory.nn.Model`; see :func:`eqx_layer`.

  ``model.init(key)`` equals ``eqx.partition(factory(key), eqx.is_inexact_array)[0]``
  and ``model.apply(params, x)`` equals ``jax.vmap(eqx.combine(params, static))(x)``.

  A module with dropout or batch norm trains in its own mode
  (:class:`~jaxtheory.nn.TrainMode`): ``eqx.nn.inference_mode(module,
  False)``, mapped over the batch with ``axis_name`` (BatchNorm's batch
  axis), each example given its own key (``key=``, when ``__call__`` takes
  one) drawn from the step's key. Its parameters are then ``{'params': ...,
  'state': eqx.nn.State}`` (``eqx.nn.make_with_state``) and the state takes
  the values each step gives it. Metrics and probes run it in inference mode.

  Args:
    module_or_factory: a factory ``key -> module`` (recommended; required for
      a module with state) or a module.
    input_shape: shape of one example (no batch axis).
    batched: the module takes a batch itself (no ``vmap`` over examples).
    input_dtype: dtype of the dummy input; ``jnp.int32`` for tokens.
    features: ``(module, x, inputs=False) -> list of activations`` for probes
      (each layer's output, or its input with ``inputs=True``; ``x`` one
      example, or a batch if ``batched``); default: the layers of an
      ``eqx.nn.MLP`` (outputs before each activation) or ``eqx.nn.Sequential``.
      The model's ``penultimate`` is the input of the last of them, its
      readout the last ``eqx.nn.Linear`` of an ``eqx.nn.MLP`` or
      ``eqx.nn.Sequential`` (transposed to ``(d, C)``). Not available for a
      module with state.
    axis_name: the batch axis name of the module's ``BatchNorm`` layers.

  Returns:
    The model (``Ctx(parametrization='sp', width=None)`` only; ``paddable=False``).

  >>> import jax, jax.numpy as jnp, equinox as eqx
  >>> m = from_eqx(lambda key: eqx.nn.Linear(4, 3, key=key), (4,))
  >>> params = m.init(jax.random.key(0))
  >>> m.apply(params, jnp.ones((5, 4))).shape
  (5, 3)
  """
  parts = _eqx_parts(module_or_factory, batched, axis_name)
  layer = foreign.layer(parts.eval_apply, parts.build, parts.name, input_dtype)
  per_example = features or _layers_of

  def feats(params, x, ctx, inputs: bool = False):
    foreign.check_ctx(ctx, parts.name)
    if parts.stateful:
      raise ValueError(f"the features of {parts.name} are not available: it holds state "
                       f"(eqx.nn.State), which its layers would need to be called one by one")
    module = eqx.combine(params, parts.eval_static)
    f = (lambda m, e: per_example(m, e, inputs=True)) if inputs else per_example
    with foreign.loop_friendly_convolutions():
      return f(module, x) if batched else jax.vmap(lambda e: f(module, e))(x)

  def penultimate(params, x, ctx):
    H = feats(params, x, ctx, inputs=True)[-1]
    return H, _readout_of(eqx.combine(params, parts.eval_static), parts.name)

  return model(layer, input_shape, paddable=False, features=feats, penultimate=penultimate,
               train_mode=parts.train_mode(), layout="out_in")
