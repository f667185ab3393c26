"""Per-position bookkeeping of kernel layouts: a kernel's variances, and per-example,
per-position arrays (variances, masks) laid out to broadcast against a kernel.

A kernel is ``(n1, n2, *S)`` (``nngp``, the NTK) or ``(n, *S)`` (``cov1``, ``cov2``), with
``S = (h, w, ...)`` in the diagonal spatial layout or ``(h, h', w, w', ...)`` in the full one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

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
