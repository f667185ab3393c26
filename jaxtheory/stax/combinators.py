"""Combinators of :mod:`jaxtheory.stax`: ``serial``, ``parallel``, ``repeat``, fan-out/fan-in,
``Identity``, NT's ``@layer`` for user layers, and ``unmask_fn``."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxtheory import nn
from jaxtheory.kernels import analytic, masking as kmasking, nt_kernel
from jaxtheory.nn import core, masking
from jaxtheory.stax._core import (_PASS, _SAME, _Triple, _layer, _name_layers,
                                  _serial_in_axes)


def _nt_keys(layer: core.Layer, init, apply) -> core.Layer:
  """``layer`` initialized and applied by NT's ``init`` and ``apply``: how keys reach the layers."""
  return core.Layer(init, apply, layer.kernel)


def _split_ctx(ctx, n: int) -> list:
  """``n`` contexts, one per layer: a key in ``ctx`` (``apply_fn(..., rng=)``, read by ``Dropout``)
  split into ``n``, as NT's ``serial`` and ``parallel`` split theirs."""
  rng = getattr(ctx, "rng", None)
  if rng is None or n == 0:
    return [ctx] * n
  return [analytic.ctx_with(ctx, "rng", k) for k in jax.random.split(rng, n)]


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
  inner = tuple(map(_layer, layers))

  def init(key, spec, ctx):
    params, scales = [], []
    for lay, k in zip(inner, _split_chain(key, len(inner))):
      spec, p, s = lay.init(k, spec, ctx)
      params.append(p)
      scales.append(s)
    return spec, tuple(params), tuple(scales)

  def apply(params, x, feat, ctx):
    for lay, p, c in zip(inner, params, _split_ctx(ctx, len(inner))):
      x, feat = lay.apply(p, x, feat, c)
    return x, feat

  return _Triple(_nt_keys(nn.serial(*inner), init, apply), _serial_in_axes(layers),
                 any(getattr(t, "fans_out", False) for t in layers[:1]), mask=_PASS,
                 out_axes=out_axes)


def parallel(*layers) -> _Triple:
  """Applies the ``i``-th layer to the ``i``-th input (NT's ``stax.parallel``)."""
  axes = tuple(getattr(t, "in_axes", None) for t in layers)
  inner = tuple(map(_layer, layers))

  def init(key, specs, ctx):
    keys = jax.random.split(key, len(inner)) if inner else ()
    outs = [lay.init(k, s, ctx) for lay, k, s in zip(inner, keys, specs)]
    return tuple(zip(*outs)) if outs else ((), (), ())

  def apply(params, xs, feats, ctx):
    outs = [lay.apply(p, x, f, c) for lay, p, x, f, c
            in zip(inner, params, xs, feats, _split_ctx(ctx, len(inner)))]
    return tuple(o[0] for o in outs), tuple(o[1] for o in outs)

  return _Triple(_nt_keys(nn.parallel(*inner), init, apply),
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
  inner, stacked = _layer(layer), core.repeat(_layer(layer), n)

  def init(key, spec, ctx):
    with core.unit_draws():  # checks the shapes; the parameters are drawn below
      out, params, scales = stacked.init(key, spec, ctx)
    if n == 0:
      return out, params, scales
    ps = [inner.init(k, spec, ctx)[1] for k in _split_chain(key, n)]
    return out, jax.tree.map(lambda *a: jnp.stack(a), *ps), scales

  return _Triple(_nt_keys(stacked, init, stacked.apply), getattr(layer, "in_axes", None), mask=_PASS,
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
