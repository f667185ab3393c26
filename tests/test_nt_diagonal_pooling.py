"""``kernel_fn(..., diagonal_spatial=True)`` through pooling: positions read as uncorrelated.

As in neural-tangents, asking for the diagonal layout makes pooling layers treat
distinct positions as uncorrelated. That is exact after a locally connected
layer (its positions see independent weights) and an approximation elsewhere;
without the request, layouts are chosen so that pooling is always exact.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import stax

pytestmark = pytest.mark.usefixtures("x64")

MASK = -5.0


def _x(key, n):
  return jax.random.normal(jax.random.key(key), (n, 6, 5, 2))


@pytest.mark.parametrize("pool", [
    stax.AvgPool((2, 3), (2, 1), "VALID"),
    stax.AvgPool((2, 2), padding="SAME", normalize_edges=True),
    stax.SumPool((3, 2), padding="CIRCULAR"),
    stax.GlobalAvgPool(),
], ids=["avg_valid", "avg_same_edges", "sum_circular", "global_avg"])
def test_after_a_locally_connected_layer_the_diagonal_layout_is_exact(pool):
  net = stax.serial(stax.ConvLocal(8, (2, 2), padding="SAME", W_std=1.4, b_std=0.2), pool,
                    stax.Erf(), stax.Flatten(), stax.Dense(1))
  x1, x2 = _x(0, 2), _x(1, 3)
  for get in ("nngp", "ntk"):
    np.testing.assert_allclose(net[2](x1, x2, get, diagonal_spatial=True),
                               net[2](x1, x2, get, diagonal_spatial=False), rtol=1e-12)


def test_masked_global_pooling_of_uncorrelated_positions_is_exact():
  net = stax.serial(stax.ConvLocal(8, (2, 2), padding="SAME", W_std=1.4, b_std=0.2),
                    stax.GlobalAvgPool(), stax.Dense(1))
  x1 = _x(0, 2).at[0, 4:].set(MASK)
  x2 = _x(1, 3).at[2, :, 3:].set(MASK)
  for get in ("nngp", "ntk"):
    np.testing.assert_allclose(net[2](x1, x2, get, diagonal_spatial=True, mask_constant=MASK),
                               net[2](x1, x2, get, diagonal_spatial=False, mask_constant=MASK),
                               rtol=1e-12)


def test_elsewhere_pooling_sums_the_same_position_entries_only():
  """After a ReLU positions covary; the diagonal layout keeps only same-position terms."""
  body = stax.serial(stax.Conv(8, (2, 2), padding="SAME", b_std=0.1), stax.Relu())
  x1, x2 = _x(0, 2), _x(1, 3)
  diag = body[2](x1, x2, "nngp", diagonal_spatial=True)          # (2, 3, 6, 5)
  white = stax.serial(body, stax.AvgPool((2, 2), (2, 1)))[2](x1, x2, "nngp", diagonal_spatial=True)
  want = jax.lax.reduce_window(diag, 0.0, jax.lax.add, (1, 1, 2, 2), (1, 1, 2, 1), "VALID") / 16
  np.testing.assert_allclose(white, want, rtol=1e-12)
  exact = stax.serial(body, stax.AvgPool((2, 2), (2, 1)), stax.Flatten())[2](x1, x2, "nngp")
  assert not np.allclose(jnp.mean(white, (2, 3)), exact)  # the approximation is visible
