"""What every adapter of a foreign module (Flax linen, NNX, Equinox) shares.

A foreign module's layers do not thread feature masks and fix their own init
scales, so it runs unpadded (``Model.paddable`` is false) and, unless
reparametrized by its base shapes (:mod:`jaxtheory.nn.base_shapes`), in SP
only. These helpers check the run context and fill in the parts of the layer
protocol a foreign module has no say in.
"""

from __future__ import annotations

import contextlib
import threading

import jax
import jax.numpy as jnp
import numpy as np

from jaxtheory.nn import convops
from jaxtheory.nn.core import Ctx, Feat, Layer, Spec
from jaxtheory.nn.param import LRScale


_LOCK = threading.Lock()
_installed = 0  # blocks open in any thread: the gate is installed while there are any
_here = threading.local()  # blocks open in this thread: the gate routes only for these


def _gate(*args, **kwargs):
  """``jax.lax.conv_general_dilated`` while installed: routed in the threads that asked."""
  conv = convops.lax_signature if getattr(_here, "depth", 0) else convops.LAX_CONV
  return conv(*args, **kwargs)


@contextlib.contextmanager
def loop_friendly_convolutions():
  """Routes ``jax.lax.conv_general_dilated`` through :func:`jaxtheory.nn.convops.lax_signature`.

  On XLA:CPU the filter gradient of lax's convolution is 10-100x slower inside
  a loop body, and every training loop of this library is one; a foreign
  module (a linen ``Conv``, an Equinox ``Conv2d``) calls lax's convolution by
  name while it is traced. Inside this block, in this thread and only on CPU,
  that name computes the same convolution with a loop-friendly derivative
  (same values; gradients equal up to rounding). Other threads keep lax's own
  convolution; lax's function is put back when the last block in any thread
  ends.
  """
  global _installed
  if jax.default_backend() != "cpu":
    yield
    return
  with _LOCK:
    if _installed == 0:
      jax.lax.conv_general_dilated = _gate
    _installed += 1
  _here.depth = getattr(_here, "depth", 0) + 1
  try:
    yield
  finally:
    _here.depth -= 1
    with _LOCK:
      _installed -= 1
      if _installed == 0:
        jax.lax.conv_general_dilated = convops.LAX_CONV


def loop_friendly_conv(*args, **kwargs):
  """lax's convolution, routed as in :func:`loop_friendly_convolutions` (for a module that
  holds the function itself, as NNX's ``Conv`` does)."""
  with loop_friendly_convolutions():
    return jax.lax.conv_general_dilated(*args, **kwargs)


def routed(fn):
  """``fn`` run inside :func:`loop_friendly_convolutions`."""

  def call(*args, **kwargs):
    with loop_friendly_convolutions():
      return fn(*args, **kwargs)
  return call


def state_leaves(stateful: bool):
  """``TrainMode.state`` of an adapter whose parameters are ``{'params': ..., 'state': ...}``
  when ``stateful`` (NNX, Equinox), and a plain tree with no state otherwise."""

  def is_state(params):
    if not stateful:
      return jax.tree.map(lambda _: False, params)
    return {"params": jax.tree.map(lambda _: False, params["params"]),
            "state": jax.tree.map(lambda _: True, params["state"])}

  return is_state


class UnsupportedCtx(ValueError):
  """A run context (parametrization, padded width, init scale) a foreign module cannot honour."""


def check_ctx(ctx: Ctx, who: str):
  """Raises :class:`UnsupportedCtx` unless ``ctx`` is one a foreign module can honour."""
  if ctx.parametrization != "sp":
    raise UnsupportedCtx(
        f"{who}: a foreign module only supports parametrization 'sp', got "
        f"{ctx.parametrization!r}; foreign layers cannot be rescaled unless the model is "
        f"wrapped by jaxtheory.nn.base_shapes.parametrize")
  if ctx.width is not None:
    raise UnsupportedCtx(
        f"{who}: the width of a foreign module cannot be padded, so ctx.width must be "
        f"None; a sweep builds such a model at each width by itself")
  try:
    scale_is_one = float(ctx.init_scale) == 1.0
  except (jax.errors.ConcretizationTypeError, TypeError):
    return  # Traced: cannot be checked here.
  if not scale_is_one:
    raise UnsupportedCtx(
        f"{who}: a foreign module's init cannot be rescaled, so ctx.init_scale must be "
        f"1.0, got {ctx.init_scale!r}")


def check_readout(out, y, who: str, layer: str) -> None:
  """Raises ``ValueError`` unless the last ``layer``'s output ``out`` is the model's output ``y``.

  The same array passes; one of another shape fails (a tied embedding's
  ``attend(h)`` after the last dense layer); one of the same shape fails if
  its values differ, where they are concrete (``0.1 * Dense(h)``). Traced,
  the same shape passes: a cast, ``remat`` or a sharding constraint makes a
  new array of the same values, which a trace cannot tell from a rescaling.
  """
  if out is y:
    return
  same = jnp.shape(out) == jnp.shape(y)
  if same and not any(isinstance(a, jax.core.Tracer) for a in (out, y)):
    a, b = np.asarray(out, np.float64), np.asarray(y, np.float64)
    same = bool(np.allclose(a, b, rtol=1e-2, atol=1e-6 * (np.abs(b).max() + 1.0)))
  if not same:
    raise ValueError(
        f"the output of {who} is not its last {layer}'s output (computed after it, or by a "
        f"method other than __call__, such as a tied embedding's attend); penultimate "
        f"features and readout are undefined")


def unit_lr(params):
  """Every learning-rate multiplier equal to one."""
  return jax.tree.map(lambda _: LRScale(1.0, 1.0), params)


def fixed_feats(y):
  """``Feat()`` for every output: a fixed, unmasked feature axis."""
  return jax.tree.map(lambda _: Feat(), y)


def specs(y, batch: int):
  """Specs of the outputs ``y`` (shapes or arrays) with the batch axis ``batch``."""
  return jax.tree.map(lambda a: Spec((batch, *a.shape[1:])), y)


def float_dtype(input_dtype):
  """``input_dtype``, defaulting to the float dtype."""
  return jnp.result_type(float) if input_dtype is None else input_dtype


def layer(call, make_params, name: str, input_dtype=None) -> Layer:
  """The layer of a foreign module given as ``call(params, x) -> y`` and ``make_params(key)``.

  ``init`` draws the parameters and finds the output shapes by tracing ``call``
  (no FLOPs); both functions check the run context first. Every learning-rate
  multiplier is one and the outputs carry no feature mask.
  """

  def init(key, spec, ctx):
    check_ctx(ctx, name)
    params = make_params(key)
    y = jax.eval_shape(call, params, jax.ShapeDtypeStruct(spec.shape, float_dtype(input_dtype)))
    return specs(y, spec.shape[0]), params, unit_lr(params)

  def apply(params, x, feat, ctx):
    del feat
    check_ctx(ctx, name)
    with loop_friendly_convolutions():
      y = call(params, x)
    return y, fixed_feats(y)

  return Layer(init, apply)
