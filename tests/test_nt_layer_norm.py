"""``stax.LayerNorm`` over spatial axes and the batch, in any layout, with masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import nt, stax

pytestmark = pytest.mark.usefixtures("x64")


def _x(key, n, layout="NHWC"):
  x = jax.random.normal(jax.random.key(key), (n, 4, 3, 2))
  return x if layout == "NHWC" else jnp.moveaxis(x, -1, 1)


@pytest.mark.parametrize("axis", [-1, (1, 3), (0, 3), (0, 1, 2, 3)])
def test_apply_normalises_over_axis(axis):
  x = _x(0, 3) * 3.0 + 1.0
  y = stax.LayerNorm(axis, eps=0.0)[1]((), x)
  np.testing.assert_allclose(jnp.mean(y, axis), 0.0, atol=1e-12)
  np.testing.assert_allclose(jnp.var(y, axis), 1.0, rtol=1e-10)


def test_masked_entries_are_left_out_like_deleted_ones():
  """Normalising over (H, C) with the last row masked == normalising the input without it."""
  x = _x(0, 2)
  masked = x.at[:, -1].set(7.0)
  out = stax.LayerNorm((1, 3))[1]((), masked, mask_constant=7.0)
  np.testing.assert_allclose(out.masked_value[:, :-1], stax.LayerNorm((1, 3))[1]((), x[:, :-1]),
                             rtol=1e-10)
  assert out.mask[:, -1].all() and not out.mask[:, :-1].any()


@pytest.mark.parametrize("layout,axis,masked", [
    ("NHWC", (1, 3), False),         # over a spatial axis and the channels
    ("NCHW", (1, 2, 3), False),      # channels first, over the whole example
    ("NHWC", (0, 3), False),         # over the batch and the channels
    ("NHWC", (1, 2, 3), True),       # over the example, its last row masked
])
def test_kernel_is_the_wide_limit(layout, axis, masked):
  """Conv -> LayerNorm -> Relu: the analytic NNGP against an average over 4096 channels."""
  x1, x2 = _x(1, 3, layout), _x(2, 2, layout)
  kw = {}
  if masked:
    x1, kw = x1.at[:, -1].set(9.0), {"mask_constant": 9.0}
  channel = layout.index("C")
  net = stax.serial(
      stax.Conv(4096, (2, 2), padding="SAME", W_std=1.4, b_std=0.3,
                dimension_numbers=(layout, "HWIO", layout)),
      stax.LayerNorm(axis, batch_axis=0, channel_axis=channel), stax.Relu())
  init, apply, kfn = net
  exact = kfn(x1, x2, "nngp", **kw)
  est = nt.monte_carlo_kernel_fn(init, stax.unmask_fn(apply), jax.random.key(3), n_samples=2,
                                 trace_axes=(channel,))(x1, x2, "nngp", **kw)
  # Sampling error ~3%; normalising over the channels alone would be off by ~30%.
  error = jnp.linalg.norm((est - exact).ravel()) / jnp.linalg.norm(exact.ravel())
  assert error < 0.06, error


def test_bad_axes_are_clear_errors():
  x = _x(0, 2)
  with pytest.raises(ValueError, match="channel axis"):
    stax.LayerNorm((1, 2))[2](x, None, "nngp")
  with pytest.raises(ValueError, match="out of range"):
    stax.LayerNorm((1, 7))[1]((), x)
