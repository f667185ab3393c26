"""``stax.SumPool``, ``GlobalSumPool`` and ``FanInProd``: apply and kernels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import nt, stax


pytestmark = pytest.mark.usefixtures("x64")


def _close(a, b, **kw):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), **kw)


@pytest.mark.parametrize("padding", ["SAME", "CIRCULAR"])
def test_sum_pools_are_the_average_pools_times_their_sizes(padding):
  x1 = jax.random.normal(jax.random.key(0), (2, 5, 4, 3))
  x2 = jax.random.normal(jax.random.key(1), (3, 5, 4, 3))
  conv = stax.Conv(8, (2, 2), padding="SAME")
  for window, strides in (((2, 3), (1, 2)), ((3, 1), None)):
    size = int(np.prod(window))
    _, apply_s, k_s = stax.serial(conv, stax.SumPool(window, strides, padding))
    init, apply_a, k_a = stax.serial(conv, stax.AvgPool(window, strides, padding))
    _, params = init(jax.random.key(2), x1.shape)
    _close(apply_s(params, x1), size * apply_a(params, x1), rtol=1e-12)
    for get in ("nngp", "ntk"):
      _close(k_s(x1, x2, get), size ** 2 * k_a(x1, x2, get), rtol=1e-12)
  _, apply_g, kg = stax.serial(conv, stax.GlobalSumPool())
  _, apply_m, km = stax.serial(conv, stax.GlobalAvgPool())
  _close(apply_g(params, x1), 20 * apply_m(params, x1), rtol=1e-12)
  _close(kg(x1, x2, "ntk"), 20 ** 2 * km(x1, x2, "ntk"), rtol=1e-12)


def test_global_sum_pool_of_masked_inputs_sums_the_unmasked_positions():
  x = jax.random.normal(jax.random.key(0), (2, 5, 3)).at[:, 3:].set(7.0)
  init, apply, kfn = stax.serial(stax.Dense(4), stax.GlobalSumPool())
  _, params = init(jax.random.key(1), x.shape)
  y = stax.unmask_fn(apply)(params, x, mask_constant=7.0)
  _close(y, apply(params, x[:, :3]), rtol=1e-12)
  _close(kfn(x, None, "ntk", mask_constant=7.0), kfn(x[:, :3], None, "ntk"), rtol=1e-12)


def test_fan_in_prod_kernel_is_the_product_rule_and_the_wide_limit():
  x1 = jax.random.normal(jax.random.key(0), (3, 4))
  x2 = jax.random.normal(jax.random.key(1), (2, 4))
  a, b = stax.Dense(1024, 1.3, 0.2), stax.serial(stax.Dense(1024), stax.Erf(), stax.Dense(1024))
  init, apply, kfn = stax.serial(stax.FanOut(2), stax.parallel(a, b), stax.FanInProd(),
                                 stax.Dense(1))
  k = kfn(x1, x2, ("nngp", "ntk"))
  ka, kb = a[2](x1, x2, ("nngp", "ntk")), b[2](x1, x2, ("nngp", "ntk"))
  # Dense(1) after the product: NNGP = K_a K_b, NTK = that plus Theta_a K_b + K_a Theta_b.
  _close(k.nngp, ka.nngp * kb.nngp, rtol=1e-12)
  _close(k.ntk, k.nngp + ka.ntk * kb.nngp + ka.nngp * kb.ntk, rtol=1e-12)
  mc = nt.monte_carlo_kernel_fn(init, apply, jax.random.key(2), n_samples=32)(x1, x2, "ntk")
  assert float(jnp.abs(mc - k.ntk).max() / jnp.abs(k.ntk).max()) < 0.05
  # The apply is the product of the branches.
  _, params = init(jax.random.key(3), x1.shape)
  ya = a[1](params[1][0], x1)
  yb = b[1](params[1][1], x1)
  _close(stax.serial(stax.FanOut(2), stax.parallel(a, b), stax.FanInProd())[1](params[:3], x1),
         ya * yb, rtol=1e-12)
