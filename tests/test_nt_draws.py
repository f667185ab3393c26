"""``jaxtheory.stax`` draws neural-tangents' own initial parameters from the same key.

References: ``tests/data/nt_draws.npz``, written by NT 0.6.5 itself
(``benchmarks/nt_oracle/make_draws.py``) for the networks of ``draw_battery.py``,
under both of JAX's threefry streams. So a ported script, a seed in a paper and
NT's Monte Carlo tolerances see the very networks NT drew.
"""

import os

import jax
import numpy as np
import pytest

import draw_battery
from jaxtheory.nt import stax

REF = np.load(os.path.join(os.path.dirname(__file__), "data", "nt_draws.npz"))


@pytest.mark.parametrize("stream", ["partitionable", "legacy"])
@pytest.mark.parametrize("name", list(draw_battery.networks(stax)))
def test_init_draws_neural_tangents_parameters(name, stream):
  (init_fn, apply_fn, _), shape = draw_battery.networks(stax)[name]
  with jax.threefry_partitionable(stream == "partitionable"):
    _, params = init_fn(jax.random.PRNGKey(draw_battery.KEY), shape)
    x = jax.random.normal(jax.random.PRNGKey(draw_battery.INPUT_KEY), shape)
    y = apply_fn(params, x, rng=jax.random.PRNGKey(draw_battery.APPLY_KEY))  # Dropout's masks
  leaves = jax.tree_util.tree_leaves(params)
  n_ref = sum(k.startswith(f"{name}/{stream}/leaf") for k in REF.files)
  assert len(leaves) == n_ref
  for i, leaf in enumerate(leaves):
    ref = REF[f"{name}/{stream}/leaf{i}"]
    assert leaf.shape == ref.shape, (i, leaf.shape, ref.shape)
    np.testing.assert_allclose(leaf, ref, rtol=1e-6, atol=1e-7, err_msg=f"leaf {i}")
  np.testing.assert_allclose(y, REF[f"{name}/{stream}/out"], rtol=1e-5, atol=1e-6)


def test_the_two_streams_differ():
  """The legacy references are not the partitionable ones: the test above tells them apart."""
  a, b = REF["dense_relu/partitionable/leaf0"], REF["dense_relu/legacy/leaf0"]
  assert np.max(np.abs(a - b)) > 0.1
