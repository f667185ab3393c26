r"""Masked inputs in infinite-width kernels: which positions of an activation are padding.

Variable-length inputs (sentences of different lengths, graphs of different
sizes) are padded to one shape; neural-tangents marks the padding with a
``mask_constant`` (every input entry equal to it is masked) and carries a
boolean mask beside each activation. Its semantics, which these functions
implement for kernels:

* a masked input entry is zero;
* each layer maps the mask of its input to that of its output: a dense or
  convolutional layer collapses the channel axis (a position is masked when all
  its channels are), a convolution keeps the mask at each window's centre, a
  global pooling masks an example whose positions are all masked, a flatten
  reshapes it; elementwise layers keep it;
* after a layer that can make a zero input nonzero (dense, convolution, and
  nonlinearities with :math:`\phi(0) \ne 0`), covariances that involve a masked
  position are set to zero (:func:`remask`);
* global average pooling averages over the unmasked positions only
  (:func:`masked_spatial_mean`).

Masks are laid out like the activation, batch first and channels last
(``(n, *spatial, c)``), with ``c`` either the channel count or 1. A kernel
carries them as ``mask1`` (for ``x1``) and ``mask2`` (for ``x2``, ``None`` when
``x2`` is ``x1``) of :class:`~jaxtheory.kernels.analytic.Kernel`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxtheory.kernels._spatial import spread

Array = jax.Array


def input_mask(x, mask_constant) -> tuple[Array, Array | None]:
  """``(x with masked entries zeroed, mask)``: entries equal to ``mask_constant`` are masked.

  ``mask_constant`` may be NaN (then NaN entries are masked) or ``None`` (no
  mask: ``x`` is returned as is, with a ``None`` mask).
  """
  x = jnp.asarray(x)
  if mask_constant is None:
    return x, None
  c = jnp.asarray(mask_constant)
  mask = jnp.where(jnp.isnan(c), jnp.isnan(x), x == c)
  return jnp.where(mask, jnp.zeros((), x.dtype), x), mask


def whole_positions(mask: Array, where: str) -> Array:
  """``mask`` itself if it masks whole positions (a unit channel axis), else a clear error."""
  if mask.shape[-1] != 1:
    raise NotImplementedError(
        f"{where}: a mask that differs between channels (shape {mask.shape}) is not supported "
        "here; mask whole positions (all channels of an entry alike), or put a Dense or Conv "
        "layer first, which masks a position when all its channels are masked")
  return mask


def _outer(m1: Array, m2: Array, same_batch: bool, diagonal_spatial: bool) -> Array:
  """Boolean ``m1[i, s] | m2[j, s']`` laid out like a covariance of that kind."""
  bn = 1 if same_batch else 2
  return spread(m1, True, bn, diagonal_spatial) | spread(m2, False, bn, diagonal_spatial)


def position_masks(k, where: str = "masking"):
  """``(m1, m2)``: which positions of the activations on ``x1`` and ``x2`` are masked,
  ``(n1, *spatial)`` and ``(n2, *spatial)`` booleans (``(None, None)`` where ``k`` carries no
  masks; an unmasked side is all ``False``, and ``x2`` that is ``x1`` shares its mask)."""
  if k.mask1 is None and k.mask2 is None:
    return None, None
  n1, n2 = k.nngp.shape[:2]
  none = lambda n: jnp.zeros((n, *k.spatial_shape), bool)
  m1 = none(n1) if k.mask1 is None else whole_positions(k.mask1, where)[..., 0]
  if k.mask2 is None:  # x2 is x1 (no cov2), or x2 is not masked
    m2 = m1 if k.cov2 is None else none(n2)
  else:
    m2 = whole_positions(k.mask2, where)[..., 0]
  return (jnp.broadcast_to(m1, (n1, *k.spatial_shape)),
          jnp.broadcast_to(m2, (n2, *k.spatial_shape)))


def products(k, where: str = "masking"):
  """``(m11, m12, m22)``: which entries of ``cov1``, ``nngp`` (and the NTK) and ``cov2`` of
  kernel ``k`` involve a masked position (``None`` where ``k`` carries no masks)."""
  m1, m2 = position_masks(k, where)
  if m1 is None:
    return None, None, None
  d = k.diagonal_spatial
  m11 = _outer(m1, m1, True, d)
  m22 = m11 if k.cov2 is None else _outer(m2, m2, True, d)
  return m11, _outer(m1, m2, False, d), m22


def _zero(mat, m):
  if mat is None or m is None or mat.ndim < m.ndim:  # a scalar NTK placeholder
    return mat
  return jnp.where(m, jnp.zeros((), mat.dtype), mat)


def remask(k, where: str = "masking"):
  """``k`` with every covariance (and the NTK) that involves a masked position set to zero."""
  m11, m12, m22 = products(k, where)
  if m12 is None:
    return k
  return k.replace(nngp=_zero(k.nngp, m12), ntk=_zero(k.ntk, m12), cov1=_zero(k.cov1, m11),
                   cov2=_zero(k.cov2, m22))


def masked_spatial_mean(mat: Array, batch_ndim: int, mask: Array | None) -> Array:
  """Sum over the spatial axes of ``mat`` divided by the number of unmasked entries (at least 1).

  ``mask`` (broadcastable to ``mat``) marks the masked entries; ``None`` is a
  plain mean. The sum runs over every entry, as neural-tangents' does: masked
  entries are zero wherever a layer before has re-masked them.
  """
  axes = tuple(range(batch_ndim, mat.ndim))
  if mask is None or not axes:
    return jnp.mean(mat, axis=axes)
  mask = jnp.broadcast_to(mask, mat.shape)
  size = jnp.maximum(jnp.sum(~mask, axis=axes), 1)
  return jnp.sum(mat, axis=axes) / size.astype(mat.dtype)


def collapse_channels(mask: Array) -> Array:
  """A position is masked when all its channels are (dense and convolutional layers)."""
  return jnp.all(mask, axis=-1, keepdims=True)


def pool_mask(mask: Array, window_shape: Sequence[int], strides: Sequence[int],
              padding: str) -> Array:
  """The mask of a windowed layer's output: the mask at each window's centre.

  ``mask`` is ``(n, *spatial, c)``. An output position is masked when the input
  position at the centre of its window is (the top-left one of the two centres
  of an even window), as in neural-tangents; an output of the input's shape
  keeps the mask as it is. ``'CIRCULAR'`` padding keeps the shape.
  """
  window_shape, strides = tuple(window_shape), tuple(strides)
  spatial = mask.shape[1:-1]
  if padding == "CIRCULAR":
    padding = "SAME"
  pads = lax.padtype_to_pads(spatial, window_shape, strides, padding)
  out = tuple((s + lo + hi - w) // st + 1
              for s, (lo, hi), w, st in zip(spatial, pads, window_shape, strides))
  if out == spatial:
    return mask
  idx = [slice(None)]
  for (lo, _), w, st, o in zip(pads, window_shape, strides, out):
    start = -lo + (w - 1) // 2
    idx.append(slice(start, start + 1 + (o - 1) * st, st))
  return mask[tuple(idx) + (slice(None),)]


def sum_masks(masks) -> Array | None:
  """The mask of a sum of activations: masked where every summand is."""
  out = None
  for m in masks:
    if m is not None:
      out = m if out is None else out & m
  return out


def concat_masks(masks, shapes, axis: int) -> Array | None:
  """The mask of a concatenation along ``axis`` of activations of ``shapes``.

  A missing mask (``None``) is all-unmasked; each mask is broadcast to its
  activation's extent along ``axis`` and to the common extent elsewhere.
  """
  if all(m is None for m in masks):
    return None
  if shapes is None:  # a kernel map: only the masks' own shapes are known
    known = next(m.shape for m in masks if m is not None)
    shapes = [known if m is None else m.shape for m in masks]
  ndim = len(shapes[0])
  axis %= ndim
  full = [m if m is not None else jnp.zeros((1,) * ndim, bool) for m in masks]
  common = [max(m.shape[a] for m in full) if a != axis else None for a in range(ndim)]
  parts = []
  for m, shape in zip(full, shapes):
    target = tuple(shape[a] if a == axis else common[a] for a in range(ndim))
    parts.append(jnp.broadcast_to(m, target))
  return jnp.concatenate(parts, axis=axis)
