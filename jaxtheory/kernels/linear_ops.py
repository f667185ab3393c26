r"""Kernel maps of parameter-free layers that touch single entries: dropout.

Conventions of neural-tangents 0.6.5 (see :mod:`jaxtheory.kernels.analytic`
for the :class:`~jaxtheory.kernels.analytic.Kernel` these maps transform).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtheory.kernels import analytic
from jaxtheory.kernels.analytic import Kernel, KernelMap

Array = jax.Array


def _spatial_diagonal(shape: tuple[int, ...], diagonal_spatial: bool) -> Array:
  """1 where every spatial pair ``(s, s')`` has ``s == s'`` (all ones when diagonal)."""
  mask = jnp.ones((), bool)
  if diagonal_spatial:
    return jnp.ones(shape, bool)
  for a in range(0, len(shape), 2):
    n = shape[a]
    eye = jnp.eye(n, dtype=bool).reshape((1,) * a + (n, n) + (1,) * (len(shape) - a - 2))
    mask = mask & eye
  return jnp.broadcast_to(mask, shape)


def dropout(rate: float) -> KernelMap:
  r"""Dropout that keeps each unit with probability ``rate`` and scales it by ``1/rate``.

  A kept unit's second moment grows by :math:`1/\text{rate}`; different
  examples and different positions draw independent masks, so only the
  entries of one example with itself at one position change (NT's
  ``Dropout``, train mode):

  .. math::
    K'(x, x')_{ss'} = K(x, x')_{ss'}\,\big(1 + (\text{rate}^{-1} - 1)\,[x = x'][s = s']\big)

  and likewise the NTK. Whether ``x1`` and ``x2`` are the same batch is read
  from ``k.x1_is_x2`` (``x2 = None`` when unknown). The output is not
  Gaussian.
  """
  if not 0.0 < rate <= 1.0:
    raise ValueError(f"dropout rate (the keep probability) must be in (0, 1], got {rate!r}")
  factor = 1.0 / rate

  def kernel(k: Kernel, ctx) -> Kernel:
    sp1 = k.cov1.shape[1:]
    diag1 = _spatial_diagonal(sp1, k.diagonal_spatial)
    scale1 = jnp.where(diag1, factor, 1.0).astype(k.cov1.dtype)
    cov1 = k.cov1 * scale1.reshape((1,) + sp1)
    cov2 = None if k.cov2 is None else k.cov2 * scale1.reshape((1,) + sp1)
    n1, n2 = k.nngp.shape[:2]
    same = (k.cov2 is None) if k.x1_is_x2 is None else k.x1_is_x2
    # Which pairs of examples are one example (same-example entries change).
    h = analytic.joint_split(k, ctx)
    if h is not None:
      # x1's examples then x2's: each is itself; x1's i is x2's i when the batches are the
      # same inputs (x1_is_x2 then says whether x1 is x2).
      cross = jnp.eye(n1, k=h, dtype=bool) | jnp.eye(n1, k=-h, dtype=bool)
      one = jnp.eye(n1, dtype=bool) | (cross & jnp.asarray(same, bool))
    elif n1 == n2:
      one = jnp.eye(n1, dtype=bool) & jnp.asarray(same, bool)
    else:
      one = None
    if one is None:
      nngp, ntk = k.nngp, k.ntk
    else:
      where = one.reshape((n1, n1) + (1,) * len(sp1)) & diag1.reshape((1, 1) + sp1)
      scale = jnp.where(where, factor, 1.0).astype(k.nngp.dtype)
      nngp = k.nngp * scale
      ntk = None if k.ntk is None else k.ntk * scale
    return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, is_gaussian=False)

  return kernel
