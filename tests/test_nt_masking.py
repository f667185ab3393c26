"""Masked inputs (``mask_constant``) through ``stax``: finite networks, kernels and batching.

Exactness where it is exact: masking whole positions before a per-position
dense layer and a global average pool is the kernel of the inputs with those
positions removed; a masked mean in ``apply``; a scalar ``DotGeneral`` is
``c^2`` times the kernel. Elsewhere the kernel against Monte Carlo estimates
of the unmasked finite network.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import nt, stax
from jaxtheory.kernels import batching, masking

pytestmark = pytest.mark.usefixtures("x64")

MASK = -7.0


def _inputs(n=4, t=6, c=3, key=0):
  x = jnp.cos(jax.random.normal(jax.random.key(key), (n, t, c)))
  # Example 1 loses its last 2 positions, example 3 all of them; whole positions (all channels).
  x = x.at[1, t - 2:].set(MASK).at[3].set(MASK)
  return x


def test_apply_returns_masks_and_unmask_zeroes_them():
  x = _inputs()
  init, apply, _ = stax.serial(stax.Dense(5), stax.Relu(), stax.Dense(2, b_std=0.3))
  _, params = init(jax.random.key(1), x.shape)
  out = apply(params, x, mask_constant=MASK)
  assert isinstance(out, stax.MaskedArray)
  np.testing.assert_array_equal(np.asarray(out.mask)[..., 0], np.asarray(jnp.all(x == MASK, -1)))
  plain = stax.unmask_fn(apply)(params, x, mask_constant=MASK)
  assert not np.any(np.asarray(plain)[np.asarray(out.mask)[..., 0]])
  # Unmasked positions see the masked inputs as zeros.
  want = apply(params, jnp.where(x == MASK, 0.0, x))
  keep = ~np.asarray(out.mask)[..., 0]
  np.testing.assert_allclose(np.asarray(plain)[keep], np.asarray(want)[keep], rtol=1e-12)


def test_global_avg_pool_averages_unmasked_positions_only():
  x = _inputs(c=1)  # pooling needs whole positions masked: one channel here
  init, apply, _ = stax.GlobalAvgPool()
  _, params = init(jax.random.key(0), x.shape)
  out = apply(params, x, mask_constant=MASK)
  want = np.asarray(x)[1, :4].mean(0)
  np.testing.assert_allclose(np.asarray(out.masked_value)[1], want, rtol=1e-12)
  np.testing.assert_array_equal(np.asarray(out.mask), [[False], [False], [False], [True]])
  # A mask that differs between channels: apply averages each channel's unmasked entries;
  # the kernel (one covariance for all channels) refuses it.
  x3 = _inputs(c=3)
  out = apply(params, x3, mask_constant=MASK)
  keep = np.asarray(x3) != MASK
  want = (np.asarray(x3) * keep).sum(1) / np.maximum(keep.sum(1), 1)
  np.testing.assert_allclose(np.asarray(out.masked_value), want, rtol=1e-12)
  with pytest.raises(NotImplementedError, match="differs between channels"):
    stax.GlobalAvgPool()[2](x3, None, "nngp", mask_constant=MASK)


@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_masked_positions_are_removed_positions(get):
  """Dense per position, ReLU, global mean: masking the tail == cutting it off."""
  x = jnp.cos(jax.random.normal(jax.random.key(2), (3, 7, 4)))
  cut = 5
  masked = x.at[:, cut:].set(MASK)
  net = stax.serial(stax.Dense(8, 1.3, 0.2), stax.Relu(), stax.Dense(8, 1.1, 0.1), stax.Erf(),
                    stax.GlobalAvgPool(), stax.Dense(1, 1.0, 0.1))
  kernel_fn = net[2]
  got = kernel_fn(masked, None, get, mask_constant=MASK)
  want = kernel_fn(x[:, :cut], None, get)
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
  # With x2: its own mask (here none) on the second side.
  x2 = jnp.sin(jax.random.normal(jax.random.key(3), (2, 7, 4)))
  got = kernel_fn(masked, x2.at[:, cut:].set(MASK), get, mask_constant=MASK)
  np.testing.assert_allclose(got, kernel_fn(x[:, :cut], x2[:, :cut], get), rtol=1e-10,
                             atol=1e-12)


@pytest.mark.optimized  # a Monte Carlo mean
def test_kernel_matches_monte_carlo_of_the_unmasked_network():
  x1 = _inputs(n=3, t=5, c=2, key=4)
  x2 = _inputs(n=2, t=5, c=2, key=5)
  init, apply, kernel_fn = stax.serial(
      stax.Conv(256, (2,), padding="SAME", b_std=0.1), stax.Relu(),
      stax.Conv(256, (3,), padding="VALID"), stax.Relu(), stax.GlobalAvgPool(),
      stax.Dense(256))  # 256 outputs: the estimate averages over them
  want = kernel_fn(x1, x2, "nngp", mask_constant=MASK)
  # 128 draws: the estimate is within 3.2% here (4% with the older draws; 12% with 32 draws).
  mc = nt.monte_carlo_kernel_fn(init, stax.unmask_fn(apply), jax.random.key(6), 128)
  got = mc(x1, x2, "nngp", mask_constant=MASK)
  assert got.shape == want.shape == (3, 2)
  np.testing.assert_allclose(got, want, rtol=0.06)


def test_mask_constant_may_be_traced_or_nan():
  x = _inputs()
  kernel_fn = stax.serial(stax.Dense(4), stax.Relu(), stax.GlobalAvgPool())[2]
  want = kernel_fn(x, None, "nngp", mask_constant=MASK)
  traced = jax.jit(kernel_fn, static_argnames="get")(x, None, "nngp", mask_constant=MASK)
  np.testing.assert_allclose(traced, want, rtol=1e-12)
  nan = kernel_fn(jnp.where(x == MASK, jnp.nan, x), None, "nngp", mask_constant=jnp.nan)
  np.testing.assert_allclose(nan, want, rtol=1e-12)


def test_layers_without_a_masking_rule_refuse_masked_inputs():
  x = _inputs()
  # Every built-in layer has a rule; a user's @stax.layer does not say how it treats padding.
  @stax.layer
  def Twice():
    return (lambda key, shape: (shape, ()), lambda params, x, **kw: 2 * x,
            lambda k, **kw: k.replace(nngp=4 * k.nngp, cov1=4 * k.cov1,
                                      cov2=None if k.cov2 is None else 4 * k.cov2))

  init, apply, kernel_fn = stax.serial(stax.Dense(4), Twice())
  _, params = init(jax.random.key(0), x.shape)
  with pytest.raises(NotImplementedError, match="Twice does not support masked inputs"):
    apply(params, x, mask_constant=MASK)
  with pytest.raises(NotImplementedError, match="Twice does not support masked inputs"):
    kernel_fn(x, None, "nngp", mask_constant=MASK)
  # Without a mask they work as before.
  assert kernel_fn(x, None, "nngp").shape[:2] == (4, 4)


def test_channelwise_masks_need_a_collapsing_layer_first():
  x = jnp.ones((2, 3, 2)).at[0, 1, 0].set(MASK)
  kernel_fn = stax.AvgPool((1,))[2]  # keeps the mask and re-masks its kernel
  with pytest.raises(NotImplementedError, match="between channels"):
    kernel_fn(x, None, "nngp", mask_constant=MASK)


def test_scalar_dot_general_scales_the_kernel():
  x = _inputs()
  base = stax.serial(stax.Dense(4), stax.Relu())
  scaled = stax.serial(base, stax.DotGeneral(rhs=-0.7))
  for get in ("nngp", "ntk"):
    np.testing.assert_allclose(scaled[2](x, None, get, mask_constant=MASK),
                               0.49 * base[2](x, None, get, mask_constant=MASK), rtol=1e-12)
  _, params = scaled[0](jax.random.key(0), x.shape)
  np.testing.assert_allclose(scaled[1](params, x), -0.7 * base[1](params[0], x), rtol=1e-12)
  with pytest.raises(ValueError, match="at most one"):
    stax.DotGeneral(lhs=1.0, rhs=2.0)


def test_fan_in_concat_along_the_batch_axis_is_block_diagonal():
  x1 = jax.random.normal(jax.random.key(7), (3, 4))
  x2 = jax.random.normal(jax.random.key(8), (2, 4))
  init, apply, kernel_fn = stax.serial(
      stax.FanOut(2), stax.parallel(stax.Dense(512, 1.0, 0.1), stax.Dense(512, 2.0)),
      stax.FanInConcat(axis=0), stax.Relu(), stax.Dense(256))
  k = kernel_fn(x1, x2, "nngp")
  assert k.shape == (6, 4)
  mc = nt.monte_carlo_kernel_fn(init, apply, jax.random.key(9), 128)(x1, x2, "nngp")
  np.testing.assert_allclose(mc, k, atol=0.05 * float(jnp.max(k)))  # 1.4% here
  # Before the nonlinearity, examples of independent branches are uncorrelated.
  pre = stax.serial(stax.FanOut(2), stax.parallel(stax.Dense(8), stax.Dense(8)),
                    stax.FanInConcat(axis=0))[2](x1, x2, "nngp")
  np.testing.assert_array_equal(pre[:3, 2:], 0.0)
  np.testing.assert_array_equal(pre[3:, :2], 0.0)
  np.testing.assert_allclose(pre[:3, :2], stax.Dense(8)[2](x1, x2, "nngp"), rtol=1e-12)


def test_batching_keeps_an_example_at_one_position_when_rng_is_passed():
  """A kernel that depends on each example's position in its batch (as dropout's masks do)
  is the same computed in blocks as in one piece, once an ``rng`` is passed."""

  def kernel_fn(x1, x2=None, get=None, rng=None):
    del get
    x2 = x1 if x2 is None else x2
    w1 = jax.random.normal(rng, (x1.shape[0], 1))
    w2 = jax.random.normal(rng, (x2.shape[0], 1))
    return (x1 * w1) @ (x2 * w2).T

  x = jax.random.normal(jax.random.key(10), (6, 3))
  rng = jax.random.key(11)
  whole = kernel_fn(x, None, None, rng=rng)
  blocked = batching.batch(kernel_fn, batch_size=2, device_count=0)(x, None, None, rng=rng)
  np.testing.assert_allclose(blocked, whole, rtol=1e-12)


def test_pool_mask_keeps_each_windows_centre():
  m = jnp.array([[0, 1, 1, 0, 1]], bool)[..., None]
  np.testing.assert_array_equal(masking.pool_mask(m, (3,), (1,), "VALID")[0, :, 0],
                                [True, True, False])
  np.testing.assert_array_equal(masking.pool_mask(m, (2,), (2,), "VALID")[0, :, 0],
                                [False, True])
  assert masking.pool_mask(m, (3,), (1,), "SAME") is m


def test_batched_masked_kernels_carry_the_whole_masks():
  """In blocks (batch_size, nt.batch) the result's masks are those of all examples, and the
  Kernel passed back in (whole or in blocks) gives the unbatched answer."""
  x = _inputs(n=4, t=3, c=2)
  kernel_fn = stax.serial(stax.Dense(4), stax.Relu())[2]
  whole = kernel_fn(x, None, None, mask_constant=MASK)
  next_fn = stax.serial(stax.Dense(4), stax.GlobalAvgPool())[2]
  want = next_fn(whole, get="nngp")
  for size in (1, 2):
    blocked = kernel_fn(x, None, None, mask_constant=MASK, batch_size=size)
    np.testing.assert_array_equal(blocked.mask1, whole.mask1)
    assert blocked.mask2 is None and blocked.cov2 is None
    np.testing.assert_allclose(next_fn(blocked, get="nngp"), want, rtol=1e-12)
    np.testing.assert_allclose(nt.batch(next_fn, size)(whole, get="nngp"), want, rtol=1e-12)


def test_nan_mask_constant_with_an_equal_x2_is_the_same_inputs():
  """x1_is_x2 compares the masked inputs: NaN padding does not make x2 differ from x1."""
  x = jnp.where(_inputs() == MASK, jnp.nan, _inputs())
  kernel_fn = stax.serial(stax.Dense(8), stax.Relu(), stax.Dropout(0.5), stax.GlobalAvgPool())[2]
  same = kernel_fn(x, None, "nngp", mask_constant=jnp.nan)
  given = kernel_fn(x, x + 0.0, "nngp", mask_constant=jnp.nan)
  np.testing.assert_allclose(given, same, rtol=1e-12)


def test_kernels_that_change_the_number_of_examples_refuse_blocks():
  x = jax.random.normal(jax.random.key(12), (4, 3))
  kernel_fn = stax.serial(stax.FanOut(2), stax.parallel(stax.Dense(8), stax.Dense(8)),
                          stax.FanInConcat(axis=0))[2]
  assert kernel_fn(x, None, "nngp").shape == (8, 8)
  with pytest.raises(ValueError, match="changes the number of examples"):
    kernel_fn(x, None, "nngp", batch_size=2)
  with pytest.raises(TypeError, match="mask_constant= instead of passing a MaskedArray"):
    kernel_fn(stax.MaskedArray(x, x > 0), None, "nngp")


def test_monte_carlo_keeps_its_blocks_unless_the_network_draws_from_rng():
  from jaxtheory.kernels import monte_carlo  # pylint: disable=import-outside-toplevel
  x = jax.random.normal(jax.random.key(13), (6, 3))
  plain = stax.serial(stax.Dense(4), stax.Relu(), stax.Dense(2))
  dropout = stax.serial(stax.Dense(4), stax.Dropout(0.5), stax.Dense(2))
  assert not monte_carlo._uses_rng(plain[0], plain[1], x, {})
  assert monte_carlo._uses_rng(dropout[0], dropout[1], x, {})
  seen = []

  def apply(params, inputs, **kwargs):
    seen.append(inputs.shape[0])
    return plain[1](params, inputs, **kwargs)

  mc = nt.monte_carlo_kernel_fn(plain[0], apply, jax.random.key(14), 2, batch_size=2,
                                device_count=0)
  mc(x, None, "nngp")
  # The first call traces the whole input (is rng read?); the kernel is then computed in blocks.
  assert seen[0] == 6 and seen[1:] and max(seen[1:]) == 2, seen


def test_dense_on_any_axes_follows_masks():
  """Masking the last positions of a channels-first activation equals deleting them."""
  x = jax.random.normal(jax.random.key(0), (3, 4, 5))  # channels, batch, positions
  masked_x = x.at[:, :, 3:].set(MASK)
  init, apply, kfn = stax.serial(stax.Dense(6, batch_axis=1, channel_axis=0), stax.Relu(),
                                 stax.Dense(1, batch_axis=1, channel_axis=0))
  _, params = init(jax.random.key(1), x.shape)
  y = stax.unmask_fn(apply)(params, masked_x, mask_constant=MASK)
  np.testing.assert_allclose(y[..., :3], apply(params, x[..., :3]), rtol=1e-12)
  np.testing.assert_array_equal(y[..., 3:], 0.0)
  k = kfn(masked_x, None, "ntk", mask_constant=MASK)
  np.testing.assert_allclose(k[..., :3, :3], kfn(x[..., :3], None, "ntk"), rtol=1e-12)
  np.testing.assert_array_equal(k[..., 3:, :], 0.0)
  # A global mean over the unmasked positions, channels first.
  for pool in (stax.GlobalAvgPool(batch_axis=1, channel_axis=0),
               stax.GlobalSumPool(batch_axis=1, channel_axis=0)):
    init, apply, kfn = stax.serial(stax.Dense(6, batch_axis=1, channel_axis=0), stax.Relu(),
                                   pool)
    _, params = init(jax.random.key(1), x.shape)
    np.testing.assert_allclose(stax.unmask_fn(apply)(params, masked_x, mask_constant=MASK),
                               apply(params, x[..., :3]), rtol=1e-12)
    np.testing.assert_allclose(kfn(masked_x, None, "ntk", mask_constant=MASK),
                               kfn(x[..., :3], None, "ntk"), rtol=1e-12)


@pytest.mark.parametrize("layer", [
    stax.LayerNorm((1, -1)),                               # statistics over positions and channels
    stax.Index(stax.Slice[:, 1:]),                         # positions sliced, masks alike
], ids=["layer_norm", "index"])
def test_masked_positions_are_removed_positions_through(layer):
  x = jnp.cos(jax.random.normal(jax.random.key(3), (3, 7, 4)))
  cut = 5
  net = stax.serial(stax.Dense(8, 1.3, 0.2), layer, stax.Relu(), stax.GlobalAvgPool(),
                    stax.Dense(1, 1.0, 0.1))
  init, apply, kernel_fn = net
  for get in ("nngp", "ntk"):
    np.testing.assert_allclose(kernel_fn(x.at[:, cut:].set(MASK), None, get, mask_constant=MASK),
                               kernel_fn(x[:, :cut], None, get), rtol=1e-10, atol=1e-12)
  _, params = init(jax.random.key(1), x.shape)
  np.testing.assert_allclose(
      apply(params, x.at[:, cut:].set(MASK), mask_constant=MASK).masked_value,
      apply(params, x[:, :cut]), rtol=1e-10)


@pytest.mark.parametrize("padding", ["SAME", "VALID", "CIRCULAR"])
def test_conv_transpose_masks_every_output_a_masked_input_reaches(padding):
  """NT's rule: an output position is masked when any input position it receives from is."""
  x = jnp.cos(jax.random.normal(jax.random.key(4), (2, 5, 3)))
  masked = x.at[0, 1].set(MASK).at[1, 4].set(MASK)
  init, apply, _ = stax.ConvTranspose(4, (3,), (2,), padding)
  _, params = init(jax.random.key(0), x.shape)
  mask = apply(params, masked, mask_constant=MASK).mask[..., 0]
  # Which outputs the masked input positions reach: the Jacobian of the unmasked layer.
  jac = jax.jacobian(lambda z: apply(params, z))(x)        # (2, T', 4, 2, 5, 3)
  from_masked = np.zeros(mask.shape, bool)
  for n, t in ((0, 1), (1, 4)):
    from_masked[n] |= np.abs(np.asarray(jac[n, :, :, n, t])).sum((1, 2)) > 0
  np.testing.assert_array_equal(mask, from_masked)


def test_conv_in_any_layout_follows_masks_as_channels_last_does():
  """A conv read as NCH and written as NHC: masks and kernel equal the channels-last conv's."""
  x = jnp.cos(jax.random.normal(jax.random.key(8), (3, 7, 2))).at[0, 4:].set(MASK)
  last = stax.serial(stax.Conv(4, (3,), (2,), "SAME", b_std=0.1), stax.Relu(),
                     stax.Conv(4, (2,), padding="VALID"), stax.GlobalAvgPool())
  first = stax.serial(stax.Conv(4, (3,), (2,), "SAME", b_std=0.1,
                                dimension_numbers=("NCH", "HIO", "NHC")), stax.Relu(),
                      stax.Conv(4, (2,), padding="VALID"), stax.GlobalAvgPool())
  xt = jnp.swapaxes(x, 1, 2)
  for get in ("nngp", "ntk"):
    np.testing.assert_allclose(first[2](xt, None, get, mask_constant=MASK),
                               last[2](x, None, get, mask_constant=MASK), rtol=1e-12)
  _, params = last[0](jax.random.key(0), x.shape)
  want = last[1](params, x, mask_constant=MASK)
  got = first[1](params, xt, mask_constant=MASK)
  np.testing.assert_allclose(got.masked_value, want.masked_value, rtol=1e-12)
  np.testing.assert_array_equal(got.mask, want.mask)


def test_conv_transpose_kernel_with_masks_matches_monte_carlo():
  """Within 4% of 32 draws, where ignoring the masks after the layer is off by up to 19%."""
  x1 = jnp.cos(jax.random.normal(jax.random.key(5), (3, 5, 2))).at[0, 1:3].set(MASK)
  x2 = jnp.cos(jax.random.normal(jax.random.key(6), (2, 5, 2))).at[1, 4].set(MASK)
  init, apply, kernel_fn = stax.serial(
      stax.Conv(256, (2,), padding="SAME", W_std=1.2, b_std=0.1), stax.Relu(),
      stax.ConvTranspose(256, (3,), (2,), "SAME", W_std=1.3, b_std=0.2), stax.Erf(),
      stax.GlobalAvgPool())
  exact = kernel_fn(x1, x2, "nngp", mask_constant=MASK)
  est = nt.monte_carlo_kernel_fn(init, stax.unmask_fn(apply), jax.random.key(7), 32)(
      x1, x2, "nngp", mask_constant=MASK)
  assert np.abs(np.asarray(est - exact)).max() < 0.04 * np.abs(np.asarray(exact)).max()
