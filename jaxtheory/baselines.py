"""Convex baselines that the non-convex training of an experiment is compared against.

* :func:`nuclear_norm_completion`: minimum-nuclear-norm matrix completion,
  the convex reference for the implicit low-rank bias of deep matrix
  factorization (:mod:`jaxtheory.experiments.matrix_completion`).

Linear readouts on fixed features (ridge, minimum norm) are in
:mod:`jaxtheory.probes.readout`; kernel regression and gradient-flow
predictions in :mod:`jaxtheory.kernels.predict`.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits


def nuclear_norm_completion(M: np.ndarray, mask: np.ndarray, iters: int = 3000,
                            lam_min: float = 1e-4) -> np.ndarray:
  r"""Minimum-nuclear-norm completion (approximately) by Soft-Impute with continuation.

  Mazumder, Hastie & Tibshirani (2010): iterate
  :math:`Z \leftarrow S_\lambda(P_\Omega(M) + P_\Omega^\perp(Z))`, where
  :math:`S_\lambda` soft-thresholds singular values by :math:`\lambda`; its
  fixed point minimises :math:`\tfrac12\|P_\Omega(Z - M)\|_F^2 + \lambda\|Z\|_*`.
  :math:`\lambda` decays geometrically from :math:`\sigma_1(P_\Omega M)` to
  ``lam_min`` times that (warm starts), approaching
  :math:`\arg\min \|Z\|_*` subject to :math:`P_\Omega(Z) = P_\Omega(M)`.

  Args:
    M: the matrix (only its observed entries are read).
    mask: boolean, ``True`` where observed.
    iters: total iterations.
    lam_min: final threshold relative to the first.

  Returns:
    The completed matrix (float64).

  >>> M = np.outer([1.0, 2.0, 3.0, 1.0], [1.0, -1.0, 2.0, 1.0])
  >>> mask = np.ones((4, 4), bool)
  >>> mask[0, 1] = mask[2, 3] = False
  >>> bool(np.abs(nuclear_norm_completion(M, mask) - M).max() < 1e-2)
  True
  """
  mask = np.asarray(mask, bool)
  obs = np.where(mask, np.asarray(M, np.float64), 0.0)
  lam0 = np.linalg.norm(obs, 2)
  Z = np.zeros_like(obs)
  # Thousands of small SVDs: BLAS threads only contend (with XLA's, other processes'),
  # 150x slower for 60 x 60 on a busy 2-core machine (148 s against 1 s on one thread).
  with threadpool_limits(limits=1, user_api="blas"):
    for lam in lam0 * np.geomspace(1.0, lam_min, iters):
      U, s, Vt = np.linalg.svd(np.where(mask, obs, Z), full_matrices=False)
      Z = (U * np.maximum(s - lam, 0.0)) @ Vt
  return Z
