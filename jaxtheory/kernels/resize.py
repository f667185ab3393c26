r"""The kernel of image resizing (``jax.image.resize``; neural-tangents' ``ImageResize``).

Linear and nearest-neighbour resizing act on each spatial axis separately by a fixed
matrix :math:`M` (interpolation weights, with a triangular antialiasing filter when a
linear resize shrinks an axis), so the covariance of the resized activation is
:math:`M K M^\top` on every pair of axes: ``jax.image.resize`` of the kernel itself, with
both copies of an axis resized alike. Nearest-neighbour resizing only selects positions,
so it also acts on the diagonal layout; linear resizing mixes positions and needs the
full one (:class:`~jaxtheory.kernels.analytic.NeedsFullSpatial`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax import lax

from jaxtheory.kernels import analytic

KERNEL_METHODS = (jax.image.ResizeMethod.LINEAR, jax.image.ResizeMethod.NEAREST)


def method_of(method) -> jax.image.ResizeMethod:
  """A ``jax.image.ResizeMethod`` from one or its name (``'linear'``, ``'bilinear'``, ...)."""
  if isinstance(method, jax.image.ResizeMethod):
    return method
  try:
    return jax.image.ResizeMethod.from_string(str(method).lower())
  except ValueError:
    raise ValueError(f"ImageResize: unknown method {method!r}; expected 'linear', 'nearest', "
                     "'cubic', 'lanczos3' or 'lanczos5'") from None


def image_resize(spatial_shape: Sequence[int], method, antialias: bool = True,
                 precision=lax.Precision.HIGHEST) -> analytic.KernelMap:
  """Kernel map of resizing the spatial axes to ``spatial_shape`` (``-1``: unchanged)."""
  method = method_of(method)
  spatial_shape = tuple(spatial_shape)

  def kernel(k: analytic.Kernel, ctx) -> analytic.Kernel:
    del ctx
    if method not in KERNEL_METHODS:
      raise NotImplementedError(
          f"ImageResize: the kernel is computed for the 'linear' and 'nearest' methods only "
          f"(their interpolation weights are fixed matrices), got {method.name.lower()}")
    if len(spatial_shape) != k.nspatial:
      raise ValueError(f"ImageResize: {len(spatial_shape)} spatial sizes for a kernel of "
                       f"{k.nspatial} spatial axes")
    new = tuple(k.spatial_shape[a] if s == -1 else s for a, s in enumerate(spatial_shape))
    if new == tuple(k.spatial_shape):
      return k
    if k.diagonal_spatial and method != jax.image.ResizeMethod.NEAREST:
      raise analytic.NeedsFullSpatial("ImageResize (linear)")
    per_axis = new if k.diagonal_spatial else tuple(s for s in new for _ in range(2))

    def resize(m, bn):
      if m.ndim < bn:  # a scalar NTK placeholder
        return m
      return jax.image.resize(m, m.shape[:bn] + per_axis, method, antialias=antialias,
                              precision=precision)

    return analytic._map(k, resize)

  return kernel
