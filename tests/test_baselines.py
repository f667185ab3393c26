"""Convex baselines: minimum-nuclear-norm completion."""


import numpy as np

from jaxtheory import data
from jaxtheory.baselines import nuclear_norm_completion


def test_nuclear_norm_completion_recovers_a_well_sampled_low_rank_matrix():
  M = data.low_rank_ground_truth(30, 30, 2, seed=1).astype(np.float64)
  mask = np.random.default_rng(0).random(M.shape) < 0.6
  Z = nuclear_norm_completion(M, mask, iters=1000)
  assert np.linalg.norm((Z - M)[~mask]) / np.linalg.norm(M[~mask]) < 1e-2
  np.testing.assert_allclose(np.linalg.svd(Z, compute_uv=False)[2:], 0, atol=1e-6)
