"""Per-position bookkeeping of kernel layouts: a kernel's variances, per-example,
per-position arrays (variances, masks) laid out to broadcast against a kernel, and the
spatial sums of convolutions and pooling over both copies of each axis (the geometry
that :mod:`jaxtheory.kernels.analytic`'s conv and pooling maps share).

A kernel is ``(n1, n2, *S)`` (``nngp``, the NTK) or ``(n, *S)`` (``cov1``, ``cov2``), with
``S = (h, w, ...)`` in the diagonal spatial layout or ``(h, h', w, w', ...)`` in the full one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxtheory.kernels import padding as pad

Array = jax.Array


def variances(cov: Array, diagonal_spatial: bool) -> Array:
  """Per-position variances ``(n, h, w, ...)`` of a ``cov1``-shaped array."""
  if diagonal_spatial:
    return cov
  for _ in range((cov.ndim - 1) // 2):
    cov = jnp.diagonal(cov, axis1=1, axis2=2)  # appends the diagonal: order is kept
  return cov


def spread(v: Array, left: bool, batch_ndim: int, diagonal_spatial: bool) -> Array:
  """Reshapes per-position variances ``(n, *s)`` to broadcast against a kernel.

  ``left`` variances index the first batch axis and the first copy of each
  spatial axis; right ones the second. ``batch_ndim`` is that of the target.
  """
  n, sp = v.shape[0], v.shape[1:]
  if batch_ndim == 2:
    lead = (n, 1) if left else (1, n)
  else:
    lead = (n,)
  if diagonal_spatial:
    return v.reshape(lead + sp)
  pairs = sum((((s, 1) if left else (1, s)) for s in sp), ())
  return v.reshape(lead + pairs)


def pad_sizes(size: int, window: int, stride: int, padding: str):
  (lo, hi), = lax.padtype_to_pads((size,), (window,), (stride,), padding)
  return lo, hi, (size + lo + hi - window) // stride + 1


def conv_average(mat: Array, batch_ndim: int, filter_shape, strides, padding,
                  diagonal_spatial: bool) -> Array:
  r"""Covariance of a conv with i.i.d. shared weights, up to ``W_std^2``.

  For each spatial axis with filter size :math:`f` and stride :math:`s`,
  :math:`K'_{ij} = \frac1f \sum_{d<f} K_{is+d,\,js+d}` over the zero-padded
  input (Novak et al. 2019, eq. 7; NT's ``_conv_kernel_full_spatial``), or the
  periodically padded one (``'CIRCULAR'``, :mod:`jaxtheory.kernels.padding`). Only
  same-offset pairs survive because weights at different offsets are
  independent, so diagonal entries depend only on diagonal entries.
  """
  for a, (f, s) in enumerate(zip(filter_shape, strides)):
    axes = (batch_ndim + a,) if diagonal_spatial else (batch_ndim + 2 * a, batch_ndim + 2 * a + 1)
    if padding == "CIRCULAR":  # both copies of the axis padded periodically, then VALID
      mat = pad.wrap(mat, axes, (f,) * len(axes), (s,) * len(axes))
    mat = _shifted_sum(mat, axes, f, s, "VALID" if padding == "CIRCULAR" else padding) / f
  return mat


def _shifted_sum(mat: Array, axes: tuple[int, ...], f: int, s: int, padding: str) -> Array:
  """``out[i, j] = sum_{d<f} mat[i s + d - lo, j s + d - lo]`` on ``axes``, zero outside.

  Each offset's valid rows are added into a box of the output in place: no
  zero-padded copy of ``mat`` is made (a padded copy per offset, or one shared
  by all offsets, holds several kernel-sized buffers live at once).
  """
  lo, _, size = pad_sizes(mat.shape[axes[0]], f, s, padding)
  out = _zeros_on(mat, axes, size)
  for d in range(f):
    out = _add_shifted(out, mat, axes, d - lo, s)
  return out


def conv_transpose_pads(window: int, stride: int, padding: str) -> tuple[int, int]:
  """``(before, after)`` padding of the stride-dilated input in ``lax.conv_transpose``."""
  if padding not in ("SAME", "VALID"):
    raise ValueError(f"padding must be 'SAME' or 'VALID' here, got {padding!r}")
  if padding == "SAME":
    total = window + stride - 2
    before = window - 1 if stride > window - 1 else -(-total // 2)
  else:
    total = window + stride - 2 + max(window - stride, 0)
    before = window - 1
  return before, total - before


def conv_transpose_average(mat: Array, batch_ndim: int, filter_shape, strides, padding,
                            diagonal_spatial: bool) -> Array:
  r"""Covariance of a transposed conv with i.i.d. shared weights, up to ``W_std^2``.

  ``lax.conv_transpose`` is a stride-1 ``VALID`` convolution of the input
  dilated by the strides (zeros between positions) and padded; the dilated
  input's covariance is the input's, dilated and padded alike on both copies
  of each axis, so the average of :func:`conv_average` applies to it (NT's
  ``_conv_kernel_full_spatial_transpose``; the diagonal layout likewise). The
  dilated covariance is never built (:func:`_dilated_shifted_sum`).
  ``'CIRCULAR'`` folds the ``'VALID'`` result onto the ring
  (:func:`jaxtheory.kernels.padding.fold`, on both copies of each axis).
  """
  spatial, rings = [], []
  for a, (f, s) in enumerate(zip(filter_shape, strides)):
    lo, hi = conv_transpose_pads(f, s, "VALID" if padding == "CIRCULAR" else padding)
    axes = (batch_ndim + a,) if diagonal_spatial else (batch_ndim + 2 * a, batch_ndim + 2 * a + 1)
    spatial += axes
    rings += [mat.shape[axes[0]] * s] * len(axes)
    mat = _dilated_shifted_sum(mat, axes, f, s, lo, hi) / f
  # CIRCULAR: the VALID output folded onto SAME's n * stride positions (both copies).
  return pad.fold(mat, spatial, rings) if padding == "CIRCULAR" else mat


def _dilated_shifted_sum(mat: Array, axes: tuple[int, ...], f: int, s: int, lo: int,
                         hi: int) -> Array:
  """``out[i, j] = sum_{d<f} D[i + d, j + d]`` on ``axes``, where ``D`` is ``mat`` dilated by
  ``s`` (``s - 1`` zeros between positions) and padded by ``lo``/``hi`` zeros.

  ``D[k]`` is ``mat[(k - lo) / s]`` where that is a whole position, so an output
  ``i = s m + r`` only reads offsets ``d`` with ``d = lo - r`` mod ``s``, at
  ``mat[m + (r + d - lo) / s]``; every output pair ``(i, j)`` with ``i != j`` mod
  ``s`` is zero. Each residue ``r`` is a stride-1 shifted sum of ``mat`` placed on
  the positions ``r, r + s, ...`` of ``out``: no dilated copy is made.
  """
  size_in = mat.shape[axes[0]]
  size = (size_in - 1) * s + 1 + lo + hi - f + 1
  out = 0
  for r in range(min(s, size)):
    count = -(-(size - r) // s)  # outputs r, r + s, ...
    part = _zeros_on(mat, axes, count)
    for d in range(f):
      if (r + d - lo) % s:
        continue
      part = _add_shifted(part, mat, axes, (r + d - lo) // s, 1)
    widths = [(0, 0, 0)] * mat.ndim
    for ax in axes:
      widths[ax] = (r, size - 1 - r - (count - 1) * s, s - 1)
    out = out + lax.pad(part, jnp.zeros((), mat.dtype), widths)
  return out


def _zeros_on(mat: Array, axes: tuple[int, ...], size: int) -> Array:
  shape = list(mat.shape)
  for ax in axes:
    shape[ax] = size
  return jnp.zeros(shape, mat.dtype)


def _add_shifted(out: Array, mat: Array, axes: tuple[int, ...], shift: int, s: int) -> Array:
  """``out[i, j] += mat[i s + shift, j s + shift]`` on ``axes``, where that is inside
  ``mat``, in place (a box of ``out`` updated with ``dynamic_update_slice``)."""
  size_in, size = mat.shape[axes[0]], out.shape[axes[0]]
  first = max(0, -(-(-shift) // s))  # 0 <= i s + shift < size_in
  stop = min(size, (size_in - 1 - shift) // s + 1)
  if stop <= first:
    return out
  src, start = mat, [0] * mat.ndim
  for ax in axes:
    src = lax.slice_in_dim(src, first * s + shift, (stop - 1) * s + shift + 1, s, axis=ax)
    start[ax] = first
  box = lax.slice(out, start, [b + n for b, n in zip(start, src.shape)])
  return lax.dynamic_update_slice(out, box + src, start)


def pool_sum(mat: Array, batch_ndim: int, window_shape, strides, padding) -> Array:
  """Sum over all pairs of positions in each window (both copies of every axis)."""
  dims, st, pads = [1] * batch_ndim, [1] * batch_ndim, [(0, 0)] * batch_ndim
  for a, (w, s) in enumerate(zip(window_shape, strides)):
    lo, hi, _ = pad_sizes(mat.shape[batch_ndim + 2 * a], w, s, padding)
    dims += [w, w]
    st += [s, s]
    pads += [(lo, hi), (lo, hi)]
  # A Python-scalar init makes this a window sum (differentiable in both modes); a
  # traced init would select the generic reducer, which has no transpose rule.
  return lax.reduce_window(mat, 0.0, lax.add, dims, st, pads)


def pool_sum_diagonal(mat: Array, batch_ndim: int, window_shape, strides, padding) -> Array:
  """Sum over the positions of each window, one copy of every axis (the diagonal layout)."""
  dims, st, pads = [1] * batch_ndim, [1] * batch_ndim, [(0, 0)] * batch_ndim
  for a, (w, s) in enumerate(zip(window_shape, strides)):
    lo, hi, _ = pad_sizes(mat.shape[batch_ndim + a], w, s, padding)
    dims.append(w)
    st.append(s)
    pads.append((lo, hi))
  return lax.reduce_window(mat, 0.0, lax.add, dims, st, pads)


def position_eye(spatial: Sequence[int], dtype) -> Array:
  """``1`` where every position pair of the full layout ``(h, h', w, w', ...)`` is equal."""
  eye = jnp.ones((), dtype)
  for n in spatial[::2]:
    eye = jnp.multiply.outer(eye, jnp.eye(n, dtype=dtype))
  return eye


def unshared(average_diagonal) -> Callable:
  """An unshared layer's map on the full layout: the diagonal-layout map
  ``average_diagonal(m, batch_ndim)`` of the same-position entries, placed back on the
  diagonal (distinct positions see independent weights, so they do not covary)."""

  def lin(m, bn):
    if m.ndim < bn:  # a scalar NTK placeholder
      return m
    diag = m
    for _ in range((m.ndim - bn) // 2):  # (h, h', w, w') -> (w, w', h) -> (h, w)
      diag = jnp.diagonal(diag, axis1=bn, axis2=bn + 1)
    diag = average_diagonal(diag, bn)
    full = diag
    for a in range(diag.ndim - bn):  # (h, w) -> (h, h', w, w')
      full = jnp.moveaxis(diag_embed(jnp.moveaxis(full, bn + 2 * a, -1)), (-2, -1),
                          (bn + 2 * a, bn + 2 * a + 1))
    return full

  return lin


def diag_embed(v: Array) -> Array:
  """``(..., n) -> (..., n, n)`` with ``v`` on the diagonal."""
  eye = jnp.eye(v.shape[-1], dtype=v.dtype)
  return v[..., None] * eye.reshape((1,) * (v.ndim - 1) + eye.shape)


def twice(t) -> tuple:
  """``(a, b) -> (a, a, b, b)``: one entry per copy of each spatial axis."""
  return tuple(v for v in t for _ in range(2))


def window_counts(size: int, window: int, stride: int, padding: str) -> Array:
  """Number of non-padding inputs in each pooling window along one axis."""
  return lax.reduce_window(jnp.ones((size,)), 0.0, lax.add, (window,), (stride,), padding)


def zip_axes(x: Array, start_axis: int = 0, end_axis: int | None = None) -> Array:
  """``(..., X, Y, ..., X', Y', ...) -> (..., X, X', Y, Y', ...)`` over the axes from
  ``start_axis`` to ``end_axis`` (an even number): the kernel's full spatial layout from
  the two copies side by side (NT's ``utils.zip_axes``)."""
  return _zip(x, start_axis, end_axis, unzip=False)


def unzip_axes(x: Array, start_axis: int = 0, end_axis: int | None = None) -> Array:
  """The inverse of :func:`zip_axes`: ``(..., X, X', Y, Y', ...) -> (..., X, Y, ..., X', Y', ...)``
  (NT's ``utils.unzip_axes``)."""
  return _zip(x, start_axis, end_axis, unzip=True)


def _zip(x: Array, start_axis: int, end_axis: int | None, unzip: bool) -> Array:
  end = x.ndim if end_axis is None else end_axis % (x.ndim + 1)
  n = end - start_axis
  if n % 2:
    raise ValueError(f"zip_axes: an even number of axes from {start_axis} to {end} is needed, "
                     f"got {n} of shape {x.shape}")
  half = n // 2
  zipped = [start_axis + i + half * c for i in range(half) for c in (0, 1)]
  perm = list(range(start_axis)) + zipped + list(range(end, x.ndim))
  if unzip:  # the inverse permutation
    perm = [perm.index(a) for a in range(x.ndim)]
  return jnp.transpose(x, perm)
