"""Smoke test of the NT 0.6.5 side env: analytic kernel_fn, empirical_ntk_fn
(all three implementations, checked against each other), and predict.

    benchmarks/nt_oracle/.venv/bin/python benchmarks/nt_oracle/smoke_test.py
"""
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import nt_import  # noqa: E402

nt = nt_import.load()
stax = nt.stax


def main():
  rng = np.random.default_rng(0)
  x_train = jnp.asarray(rng.standard_normal((8, 5)))
  y_train = jnp.asarray(rng.standard_normal((8, 1)))
  x_test = jnp.asarray(rng.standard_normal((3, 5)))

  init_fn, apply_fn, kernel_fn = stax.serial(
      stax.Dense(64, W_std=1.5, b_std=0.1), stax.Relu(),
      stax.Dense(1, W_std=1.5, b_std=0.1))

  # Analytic, checked against the closed form for the input layer:
  # NT's input kernel is x1 @ x2.T / d (mean over the channel axis).
  k = kernel_fn(x_train, x_test, ("nngp", "ntk"))
  assert k.nngp.shape == (8, 3) and k.ntk.shape == (8, 3)
  lin = stax.Dense(1, W_std=1.5, b_std=0.1)[2](x_train, x_test, "nngp")
  np.testing.assert_allclose(
      lin, 1.5**2 * x_train @ x_test.T / 5 + 0.1**2, rtol=1e-12)
  print("analytic kernel_fn ok")

  # Empirical NTK: three implementations agree.
  _, params = init_fn(jax.random.PRNGKey(1), x_train.shape)
  outs = {}
  for impl in ("JACOBIAN_CONTRACTION", "NTK_VECTOR_PRODUCTS",
               "STRUCTURED_DERIVATIVES"):
    f = jax.jit(nt.empirical_ntk_fn(
        apply_fn, trace_axes=(-1,),
        implementation=getattr(nt.NtkImplementation, impl)))
    outs[impl] = np.asarray(f(x_train, x_test, params))
    assert outs[impl].shape == (8, 3), outs[impl].shape
  for impl, v in outs.items():
    np.testing.assert_allclose(v, outs["JACOBIAN_CONTRACTION"], rtol=1e-9,
                               atol=1e-12)
  print("empirical_ntk_fn ok (3 implementations agree)")

  # predict: infinite-time GP/NTK posterior mean, and a finite-time MSE solve.
  pred = nt.predict.gradient_descent_mse_ensemble(
      kernel_fn, x_train, y_train, diag_reg=1e-4)
  nngp_mean, ntk_mean = pred(None, x_test, ("nngp", "ntk"))
  assert nngp_mean.shape == (3, 1) and ntk_mean.shape == (3, 1)
  k_tt = kernel_fn(x_train, None, "ntk")
  k_st = kernel_fn(x_test, x_train, "ntk")
  fx_train0 = jnp.zeros_like(y_train)
  fx_test0 = jnp.zeros((3, 1))
  pfn = nt.predict.gradient_descent_mse(k_tt, y_train, diag_reg=1e-4)
  _, fx_test_inf = pfn(None, fx_train0, fx_test0, k_st)
  np.testing.assert_allclose(fx_test_inf, ntk_mean, rtol=1e-6, atol=1e-8)
  print("predict ok")
  print("neural_tangents", nt.__version__, "jax", jax.__version__)


if __name__ == "__main__":
  main()
