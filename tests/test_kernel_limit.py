"""Finite width against the kernel limit: empirical NTK -> analytic NTK at rate width^-1/2,
the side-by-side comparison of a sweep with its kernels, and the kernel-limit experiment."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import data, kernels, nn, sweep
from jaxtheory.probes import over_runs
from jaxtheory import limits
from jaxtheory.errors import ConfigError


def test_empirical_ntk_of_a_sweep_converges_to_the_analytic_ntk_like_inverse_sqrt_width():
  """One call per width bucket gives the empirical NTK of every seed (vmapped over the
  sweep's initial parameters); its relative Frobenius error to the infinite-width NTK,
  averaged over seeds, falls with slope -1/2 (+-0.15) in log-log over 5 widths."""
  ds = data.teacher_student(n_train=10, n_test=4, input_dim=5, seed=3)
  widths = [64, 128, 256, 512, 1024]
  s = sweep.Sweep(lambda w: nn.mlp((5,), w, 2, 1, b_std=0.2), ds,
                  dict(seed=list(range(8)), width=widths), steps=1, loss="mse",
                  parametrization="ntk", dtype="float64")
  with jax.enable_x64(True):
    x = jnp.asarray(ds.x_train, jnp.float64)
    theta = kernels.kernel_fn(s.model(64), nn.Ctx("ntk"))(x, None, "ntk")
    err = {w: [] for w in widths}
    for g in sweep.initial_params(s):
      k = over_runs(lambda p, c: kernels.empirical_ntk(
          lambda q, xx: g.apply(q, xx, c), p, x), g.params, g.ctx)
      for j, w in enumerate(g.coords["width"]):
        err[int(w)].append(float(jnp.linalg.norm(k[j] - theta) / jnp.linalg.norm(theta)))
  mean = [np.mean(err[w]) for w in widths]
  slope = np.polyfit(np.log(widths), np.log(mean), 1)[0]
  assert abs(slope + 0.5) <= 0.15, (slope, mean)


@pytest.fixture(scope="module")
def compared():
  ds = data.teacher_student(n_train=24, n_test=12, input_dim=4, seed=0)
  s = sweep.Sweep(lambda w: nn.mlp((4,), w, 1, 1, b_std=0.1), ds,
                  dict(seed=[0, 1], width=[32, 512]), "sgd", dict(lr=0.5), steps=40,
                  record="log:5", loss="mse", parametrization="ntk", dtype="float64")
  return limits.compare(s, n_probe=8)


def test_compare_sets_each_run_beside_its_kernel_predictions(compared):
  r = compared
  for v in ("dev_linear", "dev_ntk", "kernel_movement", "kernel_alignment"):
    assert r[v].dims == ("seed", "width", "step")
    assert np.isfinite(r[v].values).all(), v
  # At step 0 the network is its own linearization and its kernel has not moved.
  np.testing.assert_allclose(r.dev_linear.isel(step=0).values, 0.0, atol=1e-10)
  np.testing.assert_allclose(r.kernel_movement.isel(step=0).values, 0.0, atol=1e-12)
  assert r.ntk_probe.dims == ("seed", "width", "step", "probe_1", "probe_2")
  # The wider network follows both its linearization and the infinite-width NTK more closely.
  last = r.isel(step=-1).mean("seed")
  for v in ("dev_linear", "dev_ntk", "kernel_movement", "ntk_init_error"):
    assert float(last[v].sel(width=512)) < float(last[v].sel(width=32)), v
  assert float(last.dev_linear.sel(width=512)) < 0.02
  assert ((r.kernel_alignment.values > 0) & (r.kernel_alignment.values <= 1)).all()


def test_compare_over_a_parametrization_axis_equals_one_compare_each(compared):
  """NTK and mean-field runs in one sweep (one program): each run matches its own compare."""
  ds = data.teacher_student(n_train=24, n_test=12, input_dim=4, seed=0)
  s = sweep.Sweep(lambda w: nn.mlp((4,), w, 1, 1, b_std=0.1), ds,
                  dict(parametrization=["mf", "ntk"], seed=[0, 1], width=[32, 512]), "sgd",
                  dict(lr=0.5), steps=40, record="log:5", loss="mse", dtype="float64")
  both = limits.compare(s, n_probe=8)
  assert both.dev_linear.dims == ("parametrization", "seed", "width", "step")
  ntk = both.sel(parametrization="ntk")
  for v in ("dev_linear", "dev_ntk", "kernel_movement", "kernel_alignment", "ntk_init_error",
            "weight_movement", "train_loss"):
    np.testing.assert_allclose(ntk[v].values, compared[v].values, rtol=1e-9, atol=1e-12,
                               err_msg=v)
  # Mean-field has no analytic NTK: its runs get NaN there, and their kernel moves.
  assert np.isnan(both.dev_ntk.sel(parametrization="mf").values).all()
  assert np.isfinite(both.dev_linear.sel(parametrization="mf").values).all()
  moved = both.kernel_movement.isel(step=-1).mean("seed")
  assert float(moved.sel(parametrization="mf", width=512)) > 10 * float(
      moved.sel(parametrization="ntk", width=512))


def test_width_exponent_fits_the_power_law(compared):
  da = compared.ntk_init_error
  e = limits.width_exponent(da)
  w = da.width.values
  v = da.mean("seed").values
  assert e == pytest.approx(np.log(v[1] / v[0]) / np.log(w[1] / w[0]))


@pytest.mark.parametrize("change,message", [
    (dict(optimizer="adam"), "full-batch gradient descent"),
    (dict(batch_size=8), "full-batch gradient descent"),
    (dict(loss="xent"), "squared error"),
])
def test_compare_rejects_what_has_no_closed_form(change, message):
  ds = data.gaussian_mixture(n_train=16, n_test=8, num_classes=2, input_dim=3, seed=0)
  base = dict(model=lambda w: nn.mlp((3,), w, 1, 2), data=ds, grid=dict(width=[8]), steps=2,
              loss="mse")
  with pytest.raises(ConfigError, match=message):
    limits.compare(sweep.Sweep(**{**base, **change}))


@pytest.mark.slow
def test_kernel_limit_experiment_shows_its_signature(tmp_path):
  """Reduced config: every check passes (NTK deviation ~ width^-1/2, kernel moving under
  mean-field, muP coordinates flat), figures are written, and through the CLI the
  checks print as PASS lines."""
  from click.testing import CliRunner

  from jaxtheory.cli import cli
  from jaxtheory.experiments import kernel_limit as K
  args = ["run", "kernel-limit", "--out", str(tmp_path / "kl"), "--set", "widths=64,128,256,512",
          "--set", "seeds=2", "--set", "steps=100", "--set", "coord_steps=3"]
  r = CliRunner().invoke(cli, args)
  assert r.exit_code == 0, r.output
  assert r.output.count("PASS") == 4, r.output
  assert "FAIL" not in r.output
  assert (tmp_path / "kl" / "kernel_limit_vs_width.png").exists()
  assert (tmp_path / "kl" / "coord_check.png").exists()
  ds = sweep.load(tmp_path / "kl" / "results.nc")
  assert all(c.passed for c in K.signature(ds))

  # Controls: with the lazy (NTK) sweep in the rich sweep's place, or SP's coordinates in
  # muP's place, the corresponding checks fail.
  lazy = ds.copy(deep=True)
  for v in ("kernel_movement", "dev_linear"):
    lazy[v].values[1] = lazy[v].values[0]
  lazy["coord_size"].values[1] = lazy["coord_size"].values[0]
  passed = [c.passed for c in K.signature(lazy)]
  assert passed[:2] == [True, True] and passed[2:] == [False, False]
  with pytest.raises(ConfigError, match="rich must be"):
    K.run(K.Config(rich="ntk"))
