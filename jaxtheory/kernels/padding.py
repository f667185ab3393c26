"""Padding of convolutions and pooling: ``'SAME'``, ``'VALID'`` and ``'CIRCULAR'``.

``'CIRCULAR'`` treats each spatial axis as periodic (a ring of positions): the
input is padded as ``'SAME'`` would pad it, with the values from the other end
instead of zeros (:func:`wrap`), and the layer then runs ``'VALID'``; the output
has ``'SAME'``'s shape. A transposed convolution runs ``'VALID'`` and folds its
longer output back onto ``'SAME'``'s ``n * stride`` positions, adding up the
values that land on the same position of the ring (:func:`fold`, the adjoint
of :func:`wrap`). These are the conventions of neural-tangents' ``stax``
(``Padding.CIRCULAR``).

Both are linear maps of a single axis, so a covariance between positions
transforms by applying them to both of its position axes (and a diagonal-only
covariance by applying them to its one axis: under a transposed convolution
with i.i.d. weights, two positions that fold onto one are never correlated).

>>> import jax.numpy as jnp
>>> wrap(jnp.arange(4.0), axes=(0,), windows=(3,), strides=(1,))
Array([3., 0., 1., 2., 3., 0.], dtype=float32)
>>> fold(jnp.array([1.0, 2.0, 3.0, 4.0, 5.0]), axes=(0,), sizes=(3,))
Array([7., 3., 5.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from jax import lax

PADDINGS = ("SAME", "VALID", "CIRCULAR")


def check(padding) -> str:
  """``padding`` as one of :data:`PADDINGS` (a clear error otherwise)."""
  if padding not in PADDINGS:
    raise ValueError(f"padding must be 'SAME', 'VALID' or 'CIRCULAR', got {padding!r}")
  return padding


def same_pads(size: int, window: int, stride: int) -> tuple[int, int]:
  """``(before, after)``: the zeros ``'SAME'`` adds to an axis of ``size`` positions."""
  (lo, hi), = lax.padtype_to_pads((size,), (window,), (stride,), "SAME")
  return lo, hi


def wrap(x, axes: Sequence[int], windows: Sequence[int], strides: Sequence[int]):
  """Periodic padding of ``axes`` by the amounts ``'SAME'`` would pad with zeros."""
  widths = [(0, 0)] * x.ndim
  for ax, w, s in zip(axes, windows, strides):
    widths[ax] = same_pads(x.shape[ax], w, s)
  return jnp.pad(x, widths, mode="wrap")


def fold(y, axes: Sequence[int], sizes: Sequence[int]):
  """The adjoint of :func:`wrap`: each axis of ``m`` positions onto a ring of ``n``.

  Position ``i`` lands on ``(i - lo) mod n`` with ``lo = (m - n) // 2`` (the
  excess split as ``'SAME'`` splits it, the smaller half first), and the values
  landing on one position are summed.
  """
  for ax, n in zip(axes, sizes):
    m = y.shape[ax]
    if m == n:
      continue
    if m < n:
      raise ValueError(f"fold: an axis of {m} positions cannot fold onto {n}")
    shift = (-((m - n) // 2)) % n  # leading zeros that put position i at i + shift = class
    rows = -(-(m + shift) // n)
    widths = [(0, 0)] * y.ndim
    widths[ax] = (shift, rows * n - m - shift)
    z = jnp.moveaxis(jnp.pad(y, widths), ax, 0)
    y = jnp.moveaxis(z.reshape((rows, n) + z.shape[1:]).sum(0), 0, ax)
  return y
