r"""The kernel of image resizing (``jax.image.resize``; neural-tangents' ``ImageResize``).

Linear and nearest-neighbour resizing act on each spatial axis separately by a fixed
matrix :math:`M` (interpolation weights, with a triangular antialiasing filter when a
linear resize shrinks an axis), so the covariance of the resized activation is
:math:`M K M^\top` on every pair of axes: ``jax.image.resize`` of the kernel itself, with
both copies of an axis resized alike, which needs the full layout of all pairs of
positions (:class:`~jaxtheory.kernels.analytic.NeedsFullSpatial`; nearest-neighbour
resizing only selects positions and could read the diagonal one, but neural-tangents
refuses it, and so does this).

Resizing the batch axis makes each new example an interpolation of old ones
(:func:`resize_batch`): the NNGP and NTK are resized on both batch axes alike, which
is exact. The variances of the new examples are too when the resize only selects
examples (nearest), or when ``x2`` is ``x1`` (then the NNGP holds every covariance
between the examples, and the variances are its diagonal); a linear resize of ``x1``
against a different ``x2`` needs the covariances among ``x1``'s own examples, which that
kernel does not hold (:class:`~jaxtheory.kernels.analytic.NeedsJointBatch`): neural-tangents'
``kernel_fn`` then computes both as one batch and resizes each half on its own. Through
``kernel_fn`` resizing the batch axis also needs ``diagonal_batch=False``, as in
neural-tangents.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
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


def _check_method(method: jax.image.ResizeMethod) -> None:
  if method not in KERNEL_METHODS:
    raise NotImplementedError(
        f"ImageResize: the kernel is computed for the 'linear' and 'nearest' methods only "
        f"(their interpolation weights are fixed matrices), got {method.name.lower()}")


def resize_batch(k: analytic.Kernel, size1: int, size2: int, method, antialias: bool = True,
                 precision=lax.Precision.HIGHEST, split: int | None = None) -> analytic.Kernel:
  """``k`` after resizing the batch axis of ``x1`` to ``size1`` examples and of ``x2`` to
  ``size2`` (see the module's docstring for when this is exact). ``split``: the batch holds
  ``x1``'s first ``split`` examples then ``x2``'s (a joint batch,
  :func:`~jaxtheory.kernels.analytic.joint_split`), each part resized on its own to ``size1``."""
  method = method_of(method)
  _check_method(method)
  same = k.cov2 is None
  nearest = method == jax.image.ResizeMethod.NEAREST
  if not (nearest or same):  # a mixed example's variance needs x1's own covariances
    raise analytic.NeedsJointBatch("ImageResize (a linear resize of the batch axis)")

  def resize(m, sizes):
    if m is None or m.ndim < len(sizes):  # a scalar NTK placeholder
      return m
    to = lambda p, sizes: jax.image.resize(p, tuple(sizes) + p.shape[len(sizes):], method,
                                           antialias=antialias, precision=precision)
    if split is None:
      return to(m, sizes)
    return analytic.by_halves(lambda p: to(p, (size1,) * len(sizes)), m,
                              tuple(range(len(sizes))), split)

  nngp = resize(k.nngp, (size1, size2))
  if nearest:
    cov1, cov2 = resize(k.cov1, (size1,)), resize(k.cov2, (size2,))
  else:  # x2 is x1: the new variances are the diagonal of the new NNGP
    cov1, cov2 = jnp.moveaxis(jnp.diagonal(nngp, axis1=0, axis2=1), -1, 0), None
  return k.replace(nngp=nngp, ntk=resize(k.ntk, (size1, size2)), cov1=cov1, cov2=cov2,
                   joint_split=None)


def image_resize(spatial_shape: Sequence[int], method, antialias: bool = True,
                 precision=lax.Precision.HIGHEST) -> analytic.KernelMap:
  """Kernel map of resizing the spatial axes to ``spatial_shape`` (``-1``: unchanged)."""
  method = method_of(method)
  spatial_shape = tuple(spatial_shape)

  def kernel(k: analytic.Kernel, ctx) -> analytic.Kernel:
    del ctx
    _check_method(method)
    if len(spatial_shape) != k.nspatial:
      raise ValueError(f"ImageResize: {len(spatial_shape)} spatial sizes for a kernel of "
                       f"{k.nspatial} spatial axes")
    if all(s == -1 for s in spatial_shape):
      return k
    if k.diagonal_spatial:  # even a resize to the same size, as neural-tangents
      raise analytic.NeedsFullSpatial("ImageResize")
    new = tuple(k.spatial_shape[a] if s == -1 else s for a, s in enumerate(spatial_shape))
    if new == tuple(k.spatial_shape):
      return k
    per_axis = tuple(s for s in new for _ in range(2))

    def resize(m, bn):
      if m.ndim < bn:  # a scalar NTK placeholder
        return m
      return jax.image.resize(m, m.shape[:bn] + per_axis, method, antialias=antialias,
                              precision=precision)

    return analytic._map(k, resize)

  return kernel
