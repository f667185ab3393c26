"""``nt.batch``, ``nt.empirical_kernel_fn`` and ``nt.monte_carlo_kernel_fn``."""

import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import nt, stax
from jaxtheory.kernels import batching, monte_carlo


pytestmark = pytest.mark.usefixtures("x64")


def _net(out=3):
  return stax.serial(stax.Dense(16, W_std=1.5), stax.Relu(), stax.Dense(out, W_std=1.5))


def _xs(n1=10, n2=7, d=3):
  k1, k2 = jax.random.split(jax.random.key(0))
  return jax.random.normal(k1, (n1, d)), jax.random.normal(k2, (n2, d))


@pytest.mark.parametrize("batch_size", [0, 3, 5, 20])
@pytest.mark.parametrize("store_on_device", [True, False])
@pytest.mark.parametrize("same", [True, False])
def test_batch_analytic_equals_unbatched(batch_size, store_on_device, same):
  _, _, kernel_fn = _net()
  x1, x2 = _xs()
  x2 = None if same else x2
  want = kernel_fn(x1, x2)
  got = nt.batch(kernel_fn, batch_size, store_on_device=store_on_device)(x1, x2)
  chex.assert_trees_all_close(got, want, rtol=1e-12, atol=1e-12)
  assert type(got) is type(want)
  single = nt.batch(kernel_fn, batch_size)(x1, x2, "ntk")
  chex.assert_trees_all_close(single, want.ntk, rtol=1e-12, atol=1e-12)


def test_batch_calls_kernel_fn_on_blocks_only():
  """Memory: the kernel function only ever sees ``batch_size`` rows of x1 (and one more of an
  x2 that is not x1, so that no block of x2 can equal one of x1)."""
  _, _, kernel_fn = _net()
  x1, x2 = _xs(n1=11, n2=6)
  seen = []

  def spy(a, b, get):
    seen.append((a.shape[0], b.shape[0]))
    return kernel_fn(a, b, get)

  k = nt.batch(spy, batch_size=4, device_count=0)(x1, x2, "nngp")
  chex.assert_trees_all_close(k, kernel_fn(x1, x2, "nngp"), rtol=1e-12, atol=1e-12)
  assert set(seen) == {(4, 5)}
  assert len(seen) == 1  # traced once: every block reuses one compiled function
  nt_batched = nt.batch(spy, batch_size=4, device_count=0)
  for _ in range(2):
    nt_batched(x1, x2, "nngp")
  assert len(seen) == 2  # and so does every later call with the same static arguments


def test_batch_empirical_params_positional_and_keyword():
  init_fn, apply_fn, _ = _net()
  x1, x2 = _xs()
  _, params = init_fn(jax.random.key(1), x1.shape)
  ntk_fn = nt.empirical_ntk_fn(apply_fn, vmap_axes=0, trace_axes=())
  want = ntk_fn(x1, x2, params)
  assert want.shape == (10, 7, 3, 3)
  chex.assert_trees_all_close(nt.batch(ntk_fn, 4)(x1, x2, params), want, rtol=1e-10)
  chex.assert_trees_all_close(nt.batch(ntk_fn, 4)(x1, x2, params=params), want, rtol=1e-10)


def test_batch_pytree_inputs():
  _, _, kernel_fn = stax.parallel(stax.Dense(4), stax.Dense(5))
  x1 = (jnp.arange(12.).reshape(6, 2), jnp.ones((6, 3)))
  want = kernel_fn(x1, None, "nngp")
  got = nt.batch(kernel_fn, 4)(x1, None, "nngp")
  chex.assert_trees_all_close(got, want, rtol=1e-12)


def test_batch_store_on_host():
  _, _, kernel_fn = _net()
  x1, x2 = _xs()
  k = nt.batch(kernel_fn, 4, store_on_device=False)(np.asarray(x1), np.asarray(x2), "nngp")
  assert all(d.platform == "cpu" for d in k.devices())
  chex.assert_trees_all_close(k, kernel_fn(x1, x2, "nngp"), rtol=1e-12)


def test_batch_bad_arguments():
  _, _, kernel_fn = _net()
  with pytest.raises(ValueError, match="batch_size must be a non-negative integer"):
    nt.batch(kernel_fn, -1)
  with pytest.raises(ValueError, match="device_count"):
    nt.batch(kernel_fn, 2, device_count=-2)
  with pytest.raises(ValueError, match="share a leading batch axis"):
    nt.batch(kernel_fn, 2)((jnp.ones((4, 2)), jnp.ones((3, 2))), None)


def test_batch_over_devices():
  """Rows of blocks spread over 4 host devices (a subprocess: the device count is fixed at start)."""
  code = textwrap.dedent("""
      import jax, jax.numpy as jnp, numpy as np
      jax.config.update("jax_enable_x64", True)
      from jaxtheory import nt, stax
      from jaxtheory.kernels import batching
      assert jax.local_device_count() == 4
      init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(2))
      x1 = jax.random.normal(jax.random.key(0), (13, 3))
      x2 = jax.random.normal(jax.random.key(1), (6, 3))
      for bs in (0, 2, 3):
        for dc in (-1, 2):
          for b in (None, x2):
            got, want = nt.batch(kernel_fn, bs, dc)(x1, b), kernel_fn(x1, b)
            np.testing.assert_allclose(got.ntk, want.ntk, rtol=1e-12)
            np.testing.assert_allclose(got.nngp, want.nngp, rtol=1e-12)
      _, params = init_fn(jax.random.key(2), x1.shape)
      ntk_fn = nt.empirical_ntk_fn(apply_fn, vmap_axes=0)
      np.testing.assert_allclose(nt.batch(ntk_fn, 2)(x1, x2, params), ntk_fn(x1, x2, params),
                                 rtol=1e-10)
      # One batched kernel_fn reused on Kernel inputs of other shapes (each signature compiled).
      block = nt.batch(stax.serial(stax.Dense(16), stax.Relu())[2], 0, 2)
      _, _, two = stax.serial(stax.Dense(16), stax.Relu(), stax.Dense(16), stax.Relu())
      for b in (None, x2, x2[:4]):
        got, want = block(block(x1[:8], b)), two(x1[:8], b)
        np.testing.assert_allclose(got.nngp, want.nngp, rtol=1e-12)
        assert got.shape2 == want.shape2
      # Dropout's train-mode kernel scales the diagonal where x1 is x2: blocks must keep every
      # diagonal entry on an aligned square block, split over devices, in blocks, or both.
      _, _, drop_fn = stax.serial(stax.Dense(2, W_std=2.), stax.Dropout(0.9, mode="train"),
                                  stax.Dense(1, W_std=2.))
      drop_fn = jax.jit(drop_fn, static_argnums=2)
      for n in (8, 6):
        for b in (None, x1[:n] + 0., x1[5:5 + n]):
          want = drop_fn(x1[:n], b, "ntk")
          for bs in (2, 3):
            for f in (batching._parallel(batching._serial(drop_fn, bs)),
                      batching._serial(batching._parallel(drop_fn), bs), batching._parallel(drop_fn)):
              np.testing.assert_allclose(f(x1[:n], b, "ntk"), want, rtol=1e-12)
      f = batching._jit_or_pmap_broadcast(lambda a, b, p: [a @ b, p], device_count=2)
      out = f(jnp.ones((2, 5)), jnp.ones(5), jnp.ones(3))
      assert out[0].shape == (2,) and out[1].shape == (2, 3)
      print("OK")
      """)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                        timeout=600)
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


def test_empirical_kernel_fn_get():
  init_fn, apply_fn, _ = _net()
  x1, x2 = _xs()
  _, params = init_fn(jax.random.key(1), x1.shape)
  kernel_fn = nt.empirical_kernel_fn(apply_fn, vmap_axes=0)
  both = kernel_fn(x1, x2, None, params)
  chex.assert_trees_all_close(both.nngp, nt.empirical_nngp_fn(apply_fn)(x1, x2, params))
  chex.assert_trees_all_close(both.ntk, nt.empirical_ntk_fn(apply_fn)(x1, x2, params),
                              rtol=1e-10)
  chex.assert_trees_all_close(kernel_fn(x1, x2, "ntk", params), both.ntk)
  assert kernel_fn(x1, None, ("ntk",), params)._fields == ("ntk",)
  with pytest.raises(ValueError, match="get must be among"):
    kernel_fn(x1, x2, "cov1", params)


def test_monte_carlo_one_sample_is_one_draw():
  init_fn, apply_fn, _ = _net()
  x1, x2 = _xs()
  key = jax.random.key(3)
  mc = nt.monte_carlo_kernel_fn(init_fn, apply_fn, key, 1, vmap_axes=0)(x1, x2, "ntk")
  _, draw_key = jax.random.split(key)
  init_key, _ = jax.random.split(draw_key)
  _, params = init_fn(init_key, x1.shape)
  chex.assert_trees_all_close(mc, nt.empirical_ntk_fn(apply_fn)(x1, x2, params), rtol=1e-10)


def test_monte_carlo_generator_matches_counts_and_batching():
  init_fn, apply_fn, _ = _net()
  x1, x2 = _xs()
  key = jax.random.key(4)
  gen = nt.monte_carlo_kernel_fn(init_fn, apply_fn, key, [1, 3])(x1, x2, ("nngp", "ntk"))
  k1, k3 = list(gen)
  for n, k in ((1, k1), (3, k3)):
    single = nt.monte_carlo_kernel_fn(init_fn, apply_fn, key, n, batch_size=4)(x1, x2)
    chex.assert_trees_all_close(k, single, rtol=1e-10)
  with pytest.raises(ValueError, match="n_samples must be positive"):
    nt.monte_carlo_kernel_fn(init_fn, apply_fn, key, 0)
  with pytest.raises(TypeError, match="n_samples must be an integer"):
    nt.monte_carlo_kernel_fn(init_fn, apply_fn, key, 2.0)


def test_monte_carlo_converges_to_analytic():
  """Wide ReLU net: 32 draws give the NTK within 2% and the NNGP within 15%.

  The NNGP estimate of one draw is a product of Gaussian outputs, whose relative
  spread on the small off-diagonal entries is of order one; it falls like
  ``n_samples^-1/2`` (0.20 at 8 draws, 0.12 at 32). The NTK concentrates with
  the width as well, so it is much closer.
  """
  init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(512, W_std=1.5), stax.Relu(),
                                             stax.Dense(32, W_std=1.5))
  x1, x2 = _xs(n1=5, n2=4, d=4)
  mc = nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(5), 32, batch_size=5,
                                vmap_axes=0)(x1, x2)
  exact = kernel_fn(x1, x2)
  for g, tol in (("nngp", 0.15), ("ntk", 0.02)):
    err = np.linalg.norm(getattr(mc, g) - getattr(exact, g)) / np.linalg.norm(getattr(exact, g))
    assert err < tol, (g, err)


def test_monte_carlo_private_sample_once_batched():
  init_fn, apply_fn, _ = _net()
  x1, x2 = _xs(n1=8, n2=4)
  kernel_fn = nt.empirical_kernel_fn(apply_fn)
  once = monte_carlo._sample_once_kernel_fn(kernel_fn, init_fn)
  once_b = monte_carlo._sample_once_kernel_fn(kernel_fn, init_fn, 2, 0, False)
  key = jax.random.key(6)
  chex.assert_trees_all_close(once(x1, x2, key, None), once_b(x1, x2, key, None), rtol=1e-10)
  chex.assert_trees_all_close(batching._serial(once, 4)(x1, None, key, "nngp"),
                              once(x1, None, key, "nngp"), rtol=1e-10)


def test_empirical_ntk_vp_fn_equals_ntk_times_vector():
  init_fn, apply_fn, _ = _net()
  x1, x2 = _xs(n1=4, n2=6)
  _, params = init_fn(jax.random.key(7), x1.shape)
  ntk = nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0)(x1, x2, params)  # (4, 6, 3, 3)
  v = jax.random.normal(jax.random.key(8), (6, 3))
  want = jnp.einsum("ijab,jb->ia", ntk, v)
  got = jax.jit(nt.empirical_ntk_vp_fn(apply_fn, x1, x2, params))(v)
  chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-12)


def test_empirical_ntk_fn_any_vmap_axes_gives_the_same_kernel():
  init_fn, apply_fn, _ = _net()
  x1, x2 = _xs()
  _, params = init_fn(jax.random.key(9), x1.shape)
  want = nt.empirical_ntk_fn(apply_fn, vmap_axes=None)(x1, x2, params)
  for axes in (0, (0, 0, {}), ([0], 0), (1, 0), (0, None, {})):
    got = nt.empirical_ntk_fn(apply_fn, vmap_axes=axes)(x1, x2, params)
    chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-12)


def test_batch_of_dropout_tells_x2_is_x1_as_the_kernel_does():
  # Dropout's train-mode kernel scales the diagonal where x2 is x1, which the kernel tells by
  # value (NaN padding equal to NaN): batched, x2 given as x1 itself or as an equal copy keeps it.
  _, _, kfn = stax.serial(stax.Conv(3, (2,), padding="SAME"), stax.Relu(),
                          stax.Dropout(0.8, mode="train"), stax.Flatten(), stax.Dense(1))
  x = jax.random.normal(jax.random.key(0), (6, 5, 2)).at[1, 3:].set(jnp.nan)
  for b in (None, x, x + 0.0):
    want = kfn(x, b, "nngp", mask_constant=jnp.nan)
    got = nt.batch(kfn, 2, 0)(x, b, "nngp", mask_constant=jnp.nan)
    np.testing.assert_allclose(got, want, rtol=1e-12)
