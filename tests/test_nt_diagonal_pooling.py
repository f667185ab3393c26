"""``kernel_fn(..., diagonal_spatial=True)`` through pooling, as in neural-tangents.

Right after a locally connected layer distinct positions do not covary (they see
independent weights), so pooling reads the diagonal layout exactly; anywhere
else pooling needs all pairs of positions and the diagonal layout is refused.
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


def test_elsewhere_pooling_refuses_the_diagonal_layout():
  """After a conv and a ReLU positions covary: NT's requirement check raises, and so do we."""
  net = stax.serial(stax.Conv(8, (2, 2), padding="SAME", b_std=0.1), stax.Relu(),
                    stax.ConvLocal(8, (1, 1)), stax.Relu(), stax.AvgPool((2, 2)), stax.Flatten())
  x1, x2 = _x(0, 2), _x(1, 3)
  with pytest.raises(ValueError, match="diagonal_spatial=True: avg_pool needs"):
    net[2](x1, x2, "nngp", diagonal_spatial=True)
  # Left to choose, the layout is full there, and diagonal where the network allows it.
  np.testing.assert_allclose(net[2](x1, x2, "nngp"), net[2](x1, x2, "nngp",
                                                             diagonal_spatial=False), rtol=1e-12)
