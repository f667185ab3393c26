"""``stax.GlobalSelfAttention``: its infinite-width kernel against wide networks, and masking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import nt, stax


# Long runs and Monte Carlo estimates: compiled with XLA's default optimizations.
pytestmark = [pytest.mark.usefixtures("x64"), pytest.mark.optimized]

_DECAY = lambda d: 1 / (1 + 4 * d)


def _attention(width, linear_scaling, pos_emb_type="NONE", val_pos_emb=False, decay=None,
               heads=None, **kw):
  heads = heads or int(np.sqrt(width))
  return stax.GlobalSelfAttention(
      n_chan_out=width, n_chan_key=width, n_chan_val=max(width // heads, 1), n_heads=heads,
      linear_scaling=linear_scaling,
      attention_mechanism="SOFTMAX" if linear_scaling else "IDENTITY",
      pos_emb_type=pos_emb_type, val_pos_emb=val_pos_emb, pos_emb_decay_fn=decay,
      W_pos_emb_std=2.0, W_key_std=0.9, W_out_std=0.8, W_query_std=0.7, W_value_std=1.2,
      **{"b_std": 0.1, **kw})


def _inputs(channels=2):
  """Correlated inputs (a shared pattern plus noise), so the kernels are far from constant."""
  base = jax.random.normal(jax.random.key(0), (1, 2, 3, channels))
  x1 = base + 0.7 * jax.random.normal(jax.random.key(1), (2, 2, 3, channels))
  x2 = base + 0.7 * jax.random.normal(jax.random.key(2), (3, 2, 3, channels))
  return x1, x2


def _rel_err(est, exact):
  return float(jnp.abs(est - exact).max() / jnp.abs(exact).max())


@pytest.mark.parametrize("linear_scaling,pos_emb_type,val_pos_emb,decay", [
    (True, "NONE", False, None), (True, "SUM", False, _DECAY), (False, "SUM", True, None)])
# CONCAT embeddings: the NTK test below.
def test_attention_nngp_is_the_wide_limit(linear_scaling, pos_emb_type, val_pos_emb, decay):
  """The NNGP of attention at every position pair against wide networks (fed the inputs
  themselves: wide, so that the positional embeddings, one per input channel, are too)."""
  x1, x2 = _inputs(256)
  # The identity mechanism's weights stay random per head: it needs many heads.
  init, apply, kfn = _attention(1024 if linear_scaling else 256, linear_scaling, pos_emb_type,
                                val_pos_emb, decay, heads=16 if linear_scaling else 128)
  exact = kfn(x1, x2, "nngp")
  est = nt.monte_carlo_kernel_fn(init, apply, jax.random.key(3), n_samples=64)(x1, x2, "nngp")
  assert exact.shape == (2, 3, 2, 2, 3, 3)
  assert _rel_err(est, exact) < (0.035 if linear_scaling else 0.08)


@pytest.mark.parametrize("linear_scaling,pos_emb_type", [(True, "SUM"), (False, "CONCAT")])
def test_attention_ntk_is_the_wide_limit(linear_scaling, pos_emb_type):
  x1, x2 = _inputs(128)
  init, apply, kfn = stax.serial(_attention(256, linear_scaling, pos_emb_type, True, _DECAY),
                                 stax.Relu(), stax.GlobalAvgPool(), stax.Dense(1, 1.0, 0.0))
  exact = kfn(x1, x2, "ntk")
  est = nt.monte_carlo_kernel_fn(init, apply, jax.random.key(3), n_samples=32)(x1, x2, "ntk")
  assert _rel_err(est, exact) < 0.1


@pytest.mark.parametrize("linear_scaling", [True, False])
def test_masked_positions_are_left_out_exactly(linear_scaling):
  """Masking the last positions equals deleting them, in apply and in the kernel."""
  x1 = jax.random.normal(jax.random.key(1), (2, 5, 3))
  x2 = jax.random.normal(jax.random.key(2), (3, 5, 3))
  keep = 3
  m1 = x1.at[:, keep:].set(10.0)
  m2 = x2.at[:, keep:].set(10.0)
  init, apply, kfn = stax.serial(stax.Conv(8, (1,)), _attention(16, linear_scaling))
  _, params = init(jax.random.key(0), x1.shape)
  y = stax.unmask_fn(apply)(params, m1, mask_constant=10.0)
  np.testing.assert_allclose(y[:, :keep], apply(params, x1[:, :keep]), rtol=1e-10, atol=1e-12)
  np.testing.assert_array_equal(y[:, keep:], 0.0)
  k = kfn(m1, m2, ("nngp", "ntk"), mask_constant=10.0)
  ref = kfn(x1[:, :keep], x2[:, :keep], ("nngp", "ntk"))
  for got, want in zip(k, ref):
    np.testing.assert_allclose(got[..., :keep, :keep], want, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(got[..., keep:, :], 0.0)


def test_attention_refuses_what_has_no_closed_form():
  x1, _ = _inputs()
  kfn = stax.GlobalSelfAttention(8, 8, 8, 2, linear_scaling=False,
                                 attention_mechanism="SOFTMAX")[2]
  with pytest.raises(NotImplementedError, match="no closed-form kernel"):
    kfn(x1, None, "nngp")
  init = stax.GlobalSelfAttention(8, 8, 8, 2, pos_emb_type="SUM", n_chan_pos_emb=5)[0]
  with pytest.raises(ValueError, match="n_chan_pos_emb"):
    init(jax.random.key(0), x1.shape)
  with pytest.raises(ValueError, match="pos_emb_type"):
    stax.GlobalSelfAttention(8, 8, 8, 2, pos_emb_type="ADD")


def test_a_position_is_masked_when_all_its_channels_are():
  """Per-channel masks reach attention through a channel concatenation; as in NT, only the
  positions masked in every channel are left out (the others read their masked entries as 0)."""
  mask = -9.0
  x = jax.random.normal(jax.random.key(0), (2, 5, 3))
  masked = x.at[0, 1, 0].set(mask).at[1, 4].set(mask)
  zeroed = x.at[0, 1, 0].set(0.0).at[1, 4].set(mask)
  att = stax.GlobalSelfAttention(8, 8, 8, 1, linear_scaling=True, b_std=0.1)
  kfn = stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), stax.Dense(2)),
                    stax.FanInConcat(), att, stax.GlobalAvgPool())[2]
  np.testing.assert_allclose(kfn(masked, None, "nngp", mask_constant=mask),
                             kfn(zeroed, None, "nngp", mask_constant=mask), rtol=1e-10)
