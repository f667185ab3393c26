r"""NT's zipped kernel layout, shared by :mod:`~jaxtheory.kernels.predict` and ``dynamics``.

For outputs ``f(x)`` of shape ``(n, *rest)`` a kernel between ``n1`` and ``n2``
inputs has shape ``(n1, n2, r1, r1, r2, r2, ...)`` with the ``trace_axes`` of
``rest`` absent (read as :math:`\Theta \otimes I` along them). These helpers
turn zipped kernels into 2-D matrices and outputs into ``(N, T)`` matrices, and
back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
Axes = int | Sequence[int]


class _Layout(NamedTuple):
  """How ``y_train``'s axes split into kernel ("sample") axes and traced axes."""
  ndim: int
  trace_axes: tuple[int, ...]  # non-negative, sorted
  sample_shape: tuple[int, ...]  # y_train.shape without trace_axes
  trace_shape: tuple[int, ...]  # y_train.shape at trace_axes

  def kernel_shape(self, sample_1, sample_2=None) -> tuple[int, ...]:
    sample_2 = self.sample_shape if sample_2 is None else sample_2
    return tuple(d for pair in zip(sample_1, sample_2) for d in pair)


def _layout(y_train: Array, trace_axes: Axes) -> _Layout:
  ndim = y_train.ndim
  if ndim == 0:
    raise ValueError("y_train must have at least one (batch) axis, got a scalar")
  axes = (trace_axes,) if isinstance(trace_axes, int) else tuple(trace_axes)
  for a in axes:
    if not -ndim <= a < ndim:
      raise ValueError(f"trace_axes {tuple(axes)} out of range for y_train of shape "
                       f"{y_train.shape}")
  # As in NT, the batch axis is not special: traced with the others, the kernel's axes are
  # then y_train's remaining axes (a kernel of shape () when every axis is traced).
  axes = tuple(sorted({a % ndim for a in axes}))
  sample = tuple(d for i, d in enumerate(y_train.shape) if i not in axes)
  trace = tuple(y_train.shape[a] for a in axes)
  return _Layout(ndim, axes, sample, trace)


def _out_to_2d(f: Array, lay: _Layout) -> Array:
  """``f`` of shape ``(*sample, *trace interleaved)`` -> ``(prod sample, prod trace)``."""
  f = jnp.moveaxis(f, lay.trace_axes, tuple(range(-len(lay.trace_axes), 0)))
  return f.reshape((-1, math.prod(lay.trace_shape)))


def _out_from_2d(f: Array, lay: _Layout, sample_shape, lead=()) -> Array:
  """Inverse of :func:`_out_to_2d`; ``f`` has shape ``(*lead, N, T)``."""
  f = f.reshape(tuple(lead) + tuple(sample_shape) + lay.trace_shape)
  nl, nt = len(lead), len(lay.trace_axes)
  src = tuple(range(f.ndim - nt, f.ndim))
  return jnp.moveaxis(f, src, tuple(nl + a for a in lay.trace_axes))


def _k_to_2d(k: Array) -> Array:
  """Zipped ``(a1, b1, a2, b2, ...)`` -> ``(a1 a2 ..., b1 b2 ...)``."""
  h = k.ndim // 2
  k = jnp.moveaxis(k, tuple(range(1, k.ndim, 2)), tuple(range(h, k.ndim)))
  return k.reshape((math.prod(k.shape[:h]), -1))


def _k_from_2d(m: Array, shape_1, shape_2, lead=()) -> Array:
  """Inverse of :func:`_k_to_2d` for ``m`` of shape ``(*lead, A, B)``."""
  nl, h = len(lead), len(shape_1)
  m = m.reshape(tuple(lead) + tuple(shape_1) + tuple(shape_2))
  return jnp.moveaxis(m, tuple(range(nl + h, nl + 2 * h)), tuple(range(nl + 1, nl + 2 * h, 2)))


def _check_kernel(k, lay: _Layout, name: str, square: bool = True,
                  sample_1=None) -> tuple[int, ...]:
  """Checks a kernel's zipped shape; returns its first (test) sample shape."""
  shape = tuple(jnp.shape(k))
  m = len(lay.sample_shape)
  if len(shape) != 2 * m or shape[1::2] != lay.sample_shape:
    what = (f"{lay.kernel_shape(lay.sample_shape)}" if square else
            f"(n_test, {lay.sample_shape[0]}" + ", r, r" * (m - 1) + ")")
    raise ValueError(
        f"{name} must have shape {what} (zip of y_train.shape {lay.sample_shape + lay.trace_shape}"
        f" without trace_axes {lay.trace_axes}), got {shape}")
  first = shape[::2]
  if square and first != lay.sample_shape:
    raise ValueError(f"{name} must be square with shape {lay.kernel_shape(lay.sample_shape)},"
                     f" got {shape}")
  if sample_1 is not None and first != tuple(sample_1):
    raise ValueError(f"{name} has test shape {first} but the test-train kernel has "
                     f"{tuple(sample_1)}")
  return first


def _test_shape(lay: _Layout, sample_test) -> tuple[int, ...]:
  """Shape of test outputs: ``sample_test`` with the trace axes re-inserted."""
  shape = list(sample_test)
  for a, d in zip(lay.trace_axes, lay.trace_shape):
    shape.insert(a, d)
  return tuple(shape)
