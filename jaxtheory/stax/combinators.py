"""Combinators of :mod:`jaxtheory.stax`: ``serial``, ``parallel``, ``repeat``, fan-out/fan-in,
``Identity``, NT's ``@layer`` for user layers, and ``unmask_fn``."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax

from jaxtheory import nn
from jaxtheory.kernels import analytic, masking as kmasking, nt_kernel
from jaxtheory.nn import core, masking
from jaxtheory.stax._core import (_PASS, _SAME, _Triple, _layer, _name_layers,
                                  _serial_in_axes)


def _split_ctx(ctx, n: int) -> list:
  """``n`` contexts, one per layer: a key in ``ctx`` (``apply_fn(..., rng=)``, read by ``Dropout``)
  split into ``n``, as NT's ``serial`` and ``parallel`` split theirs."""
  rng = getattr(ctx, "rng", None)
  if rng is None or n == 0:
    return [ctx] * n
  return [analytic.ctx_with(ctx, "rng", k) for k in jax.random.split(rng, n)]


def _split_once(key, n: int):
  """The keys NT's ``parallel`` gives its ``n`` layers: ``split(key, n)``."""
  return list(jax.random.split(key, n)) if n else []


def _split_chain(key, n: int):
  """The keys NT's ``serial`` and ``repeat`` give their ``n`` layers: ``key, k = split(key)``."""
  keys = []
  for _ in range(n):
    key, k = jax.random.split(key)
    keys.append(k)
  return keys


def serial(*layers) -> _Triple:
  """Composes layers left to right (NT's ``stax.serial``, its keys split as NT splits them)."""
  out_axes = None  # the last layout a layer sets; elementwise layers keep the one they get
  for t in layers:
    out_axes = getattr(t, "out_axes", None) or out_axes
  return _Triple(nn.serial(*map(_layer, layers), keys=_split_chain, ctxs=_split_ctx),
                 _serial_in_axes(layers),
                 any(getattr(t, "fans_out", False) for t in layers[:1]), mask=_PASS,
                 out_axes=out_axes)


def parallel(*layers) -> _Triple:
  """Applies the ``i``-th layer to the ``i``-th input (NT's ``stax.parallel``)."""
  axes = tuple(getattr(t, "in_axes", None) for t in layers)
  return _Triple(nn.parallel(*map(_layer, layers), keys=_split_once, ctxs=_split_ctx),
                 axes if any(a is not None for a in axes) else None, mask=_PASS, out_axes=None)


def FanOut(num: int) -> _Triple:
  return _Triple(nn.fan_out(num), fans_out=True, mask=_PASS)


def FanInSum() -> _Triple:
  return _Triple(nn.fan_in_sum(), mask=masking.Rule(lambda ms, shapes: kmasking.sum_masks(ms)))


def FanInProd() -> _Triple:
  """Elementwise product of the branches (NT's ``stax.FanInProd``); its kernel is the product of
  the branches' kernels, so the branches must not share parameters."""
  return _Triple(nn.fan_in_prod(), mask=masking.Rule(lambda ms, shapes: kmasking.sum_masks(ms)))


def FanInConcat(axis: int = -1) -> _Triple:
  return _Triple(nn.fan_in_concat(axis), mask=masking.Rule(
      lambda ms, shapes: kmasking.concat_masks(ms, shapes, axis)))


def Identity() -> _Triple:
  return _Triple(nn.identity_layer(), mask=_SAME)


def unmask_fn(apply_fn: Callable) -> Callable:
  """NT's ``stax.unmask_fn``: ``apply_fn`` whose masked outputs (:class:`MaskedArray`) are
  returned as plain arrays with the masked entries zeroed."""

  @functools.wraps(apply_fn)
  def fn(*args, **kwargs):
    return masking.unmask(apply_fn(*args, **kwargs))

  return fn


def repeat(layer, n: int) -> _Triple:
  """``layer`` composed ``n`` times with stacked parameters (NT's ``stax.repeat``)."""
  return _Triple(core.repeat(_layer(layer), n, keys=_split_chain),
                 getattr(layer, "in_axes", None), mask=_PASS,
                 out_axes=getattr(layer, "out_axes", None))


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
    triple.name.value = layer_fn.__name__  # for its error messages
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


_name_layers(globals(), __name__, ("serial", "parallel", "repeat"))
