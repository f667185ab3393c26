"""Convolutions whose filter gradient stays fast inside loops on XLA:CPU.

On XLA:CPU the weight (filter) gradient of ``lax.conv_general_dilated`` runs one
to two orders of magnitude slower inside a loop body (``lax.scan``,
``fori_loop``: every training loop of :mod:`jaxtheory.train`) than the same
computation outside one (jax-ml/jax#12868; measured in ``benchmarks/conv_grad.py``).
The forward convolution and the input gradient are not affected.

:func:`conv_general_dilated` computes the same function as
``lax.conv_general_dilated`` (the same primitive, so the forward pass is
unchanged), with a ``jax.custom_jvp`` whose tangent in the
filter is, on CPU, a matrix product of the input's patches with the filter
tangent (``lax.conv_general_dilated_patches`` + ``dot_general``); its
transpose, the filter gradient, is then a product of the patches with the
output cotangent instead of a "backward-filter" convolution. On other
platforms (``lax.platform_dependent``) the filter tangent is the convolution
itself, as in lax. Being a JVP rule written in ordinary JAX, it keeps every
transformation: ``jvp`` (empirical NTKs, Hessian-vector products), ``grad``
(by transposition), ``vmap`` and higher derivatives.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero


def channels_last_dims(nspatial: int) -> tuple[str, str, str]:
  """``('N...C', '...IO', 'N...C')`` for up to 3 spatial axes (``'DHW'``'s last ``nspatial``)."""
  s = "DHW"[3 - nspatial:]
  return ("N" + s + "C", s + "IO", "N" + s + "C")


# lax's own convolution, bound once: a foreign module's calls to ``jax.lax.conv_general_dilated``
# may be routed here (:func:`lax_signature`), and must not come back.
LAX_CONV = lax.conv_general_dilated


def _lax_conv(cfg, x, W):
  strides, padding, lhs_dil, rhs_dil, dims = cfg
  return LAX_CONV(x, W, strides, padding, lhs_dil, rhs_dil, dimension_numbers=dims)


def _swapped_conv(cfg, dx, W):
  """``conv(dx, W)`` with the filter stored as ``(*filter, out, in)``: the same values, and a
  transpose (the input gradient) whose filter is in the canonical ``(*filter, in, out)``
  layout, which XLA:CPU runs fast inside loops (with lax's layout it is ~10x slower there)."""
  strides, padding, lhs_dil, rhs_dil, (lhs, rhs, out) = cfg
  return LAX_CONV(dx, jnp.swapaxes(W, -1, -2), strides, padding, lhs_dil, rhs_dil,
                    dimension_numbers=(lhs, rhs[:-2] + "OI", out))


def _patch_dot(cfg, x, dW):
  """``conv(x, dW)`` as patches of ``x`` times ``dW`` (channels-last layouts only)."""
  strides, padding, lhs_dil, rhs_dil, dims = cfg
  filt = dW.shape[:-2]
  p = lax.conv_general_dilated_patches(x, filt, strides, padding, lhs_dil, rhs_dil,
                                       dimension_numbers=dims)
  # Patch features are (input channel, *filter position), input channel slowest.
  c_in, c_out = dW.shape[-2:]
  Wm = jnp.moveaxis(dW, -2, 0).reshape(c_in * math.prod(filt), c_out)
  return lax.dot_general(p, Wm, (((p.ndim - 1,), (0,)), ((), ())))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _conv(cfg, x, W):
  return _lax_conv(cfg, x, W)


def _conv_jvp(cfg, primals, tangents):
  x, W = primals
  dx, dW = tangents
  y = _conv(cfg, x, W)
  parts = []
  if not isinstance(dx, SymbolicZero):
    parts.append(lax.platform_dependent(
        dx, W, cpu=functools.partial(_swapped_conv, cfg), default=functools.partial(_conv, cfg)))
  if not isinstance(dW, SymbolicZero):
    parts.append(lax.platform_dependent(
        x, dW, cpu=functools.partial(_patch_dot, cfg), default=functools.partial(_conv, cfg)))
  if not parts:
    return y, SymbolicZero.from_primal_value(y)
  return y, functools.reduce(jnp.add, parts)


_conv.defjvp(_conv_jvp, symbolic_zeros=True)


def _canonical(n, name, value, default):
  value = tuple(default for _ in range(n)) if value is None else tuple(value)
  if len(value) != n:
    raise ValueError(f"{name} needs {n} entries, got {value}")
  return value


def conv_general_dilated(x, W, window_strides: Sequence[int], padding,
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: tuple[str, str, str] | None = None):
  """``lax.conv_general_dilated`` over channels-last ``x`` ``(N, *spatial, C)`` and
  ``W`` ``(*filter, C, O)``, with a filter gradient that is fast in loops on CPU.

  ``padding`` is ``'SAME'``, ``'VALID'`` or explicit ``(low, high)`` pairs;
  ``dimension_numbers`` (default :func:`channels_last_dims`) must be channels-last
  specs ``('N' + s + 'C', s + 'IO', 'N' + s + 'C')`` for some spatial letters ``s``.
  """
  n = W.ndim - 2
  dims = channels_last_dims(n) if dimension_numbers is None else tuple(dimension_numbers)
  s = dims[0][1:-1]
  if (x.ndim != n + 2 or len(s) != n or dims != ("N" + s + "C", s + "IO", "N" + s + "C")):
    raise ValueError(f"conv_general_dilated takes channels-last inputs and (*filter, in, out) "
                     f"filters; got x {x.shape}, W {W.shape}, dimension_numbers {dims}")
  strides = _canonical(n, "window_strides", window_strides, 1)
  lhs_dilation = _canonical(n, "lhs_dilation", lhs_dilation, 1)
  rhs_dilation = _canonical(n, "rhs_dilation", rhs_dilation, 1)
  if not isinstance(padding, str):
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  cfg = (strides, padding, lhs_dilation, rhs_dilation, dims)
  if n == 0:  # no spatial axes: a matrix product, nothing to patch
    return _lax_conv(cfg, x, W)
  return _conv(cfg, x, W)


def lax_signature(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                  dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                  precision=None, preferred_element_type=None, **kwargs):
  """``lax.conv_general_dilated``, argument for argument, through :func:`conv_general_dilated`.

  The calls it can take (any layout, moved to channels-last and back; no
  grouping, default precision) get the fast filter gradient; any other goes
  to lax unchanged. So it can stand in for lax's convolution inside modules
  written against lax (Flax, Equinox).
  """
  n = jnp.ndim(rhs) - 2
  extra = {k: v for k, v in kwargs.items() if v is not None}  # e.g. out_sharding=None
  if not (1 <= n <= 3 and feature_group_count == 1 and batch_group_count == 1
          and precision is None and preferred_element_type is None and not extra):
    return LAX_CONV(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                    dimension_numbers, feature_group_count, batch_group_count, precision,
                    preferred_element_type, **kwargs)
  lhs_spec, rhs_spec, out_spec = lax.conv_dimension_numbers(jnp.shape(lhs), jnp.shape(rhs),
                                                            dimension_numbers)
  x = jnp.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))    # N, spatial..., C
  W = jnp.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))    # spatial..., I, O
  y = conv_general_dilated(x, W, window_strides, padding, lhs_dilation, rhs_dilation,
                           channels_last_dims(n))                      # N, spatial..., O
  where = [0] * (n + 2)  # axis d of the result is axis where[d] of y
  where[out_spec[0]], where[out_spec[1]] = 0, n + 1
  for i, d in enumerate(out_spec[2:]):
    where[d] = 1 + i
  return jnp.transpose(y, where)


def _transpose_padding(k: int, s: int, padding: str) -> tuple[int, int]:
  """lax.conv_transpose's padding for a ``'SAME'``/``'VALID'`` forward conv."""
  if padding == "SAME":
    pad_len = k + s - 2
    pad_a = k - 1 if s > k - 1 else math.ceil(pad_len / 2)
  elif padding == "VALID":
    pad_len = k + s - 2 + max(k - s, 0)
    pad_a = k - 1
  else:
    raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
  return pad_a, pad_len - pad_a


def conv_transpose(x, W, strides: Sequence[int], padding: str,
                   dimension_numbers: tuple[str, str, str] | None = None):
  """``lax.conv_transpose(x, W, strides, padding)`` (channels-last, no kernel flip), through
  :func:`conv_general_dilated`: the same convolution, with its fast filter gradient."""
  n = W.ndim - 2
  strides = _canonical(n, "strides", strides, 1)
  pads = [_transpose_padding(k, s, padding) for k, s in zip(W.shape[:n], strides)]
  return conv_general_dilated(x, W, (1,) * n, pads, lhs_dilation=strides,
                              dimension_numbers=dimension_numbers)
