"""Tests for the weight-decay experiment: the sqrt(lr/wd) norm, ranks falling with wd, the wd = 0 control."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import xarray as xr
from click.testing import CliRunner

from jaxtheory.analysis import growth_exponent, power_law
from jaxtheory.cli import cli
from jaxtheory.experiments import EXPERIMENTS, configure
from jaxtheory.experiments import weight_decay_spectra as W
from jaxtheory.errors import ConfigError
from jaxtheory.probes.spectra import layer_metric

# Long training runs: compiled with XLA's default optimizations (tests/conftest.py).
pytestmark = pytest.mark.optimized

# MNIST (CI fetches it), 3000 training images (too many to fit exactly in 1500 steps, which would
# end the equilibrium), width 64, 2 normalized layers, 2 seeds; lr*wd >= 0.01 (AdamW) and 0.006
# (SGD): every run relaxes within the first half. At width 32 the plain network's effective rank
# fell with wd only just beyond 2 s.e. on this grid (-0.019 +- 0.008, its first layer flat); at
# width 64, -0.074 +- 0.009, as on the experiment's own grid, and the networks' difference in the
# residual block is +0.102 +- 0.007 (log effective-rank ratio).
# On a grid this small the fits depend on the CPU (XLA rounds differently per instruction set
# and training amplifies it): the same commit that passed CI at the defaults gave, on another
# 2-core machine, AdamW exponents 0.397-0.506, just outside +-0.1. So the law is judged within
# +-0.15 (k2 within 0.25; measured here up to 0.188 at width 64, 0.198 at width 32); the
# experiment's defaults (+-0.1, 0.2) are for its own, larger grid.
TOL = dict(k_tol=0.15, max_k2=0.25)
SMALL = dict(per_class=300, n_test=300, seeds=2, width=64, depth=2, lr_times_wd=(0.01, 0.03),
             lr_over_wd=(0.001, 0.01), sgd_lr_times_wd=(0.006,), sgd_lr_over_wd=(0.1, 1.0),
             steps=1500, record=16)


@pytest.fixture(scope="module")
def small():
  return W.run(W.Config(**SMALL))


def test_registered():
  assert EXPERIMENTS["weight-decay-spectra"] is W


@pytest.mark.parametrize("key,value,message", [
    ("dataset", "cifar10", "unknown dataset 'cifar10'"),
    ("archs", "mlp,cnn", "archs must be distinct names"),
    ("lr_over_wd", "0.1,0", "lr_over_wd must be distinct positive numbers"),
    ("lr_times_wd", "0.1,0.1", "lr_times_wd must be distinct positive numbers"),
    ("record", "3", "record must be an integer >= 5"),
    ("tail", "0.9", "tail must lie in"),
    ("seeds", "0", "seeds must be a positive integer"),
])
def test_bad_config(key, value, message):
  with pytest.raises(ConfigError, match=message):
    W.run(configure(W.Config, {key: value}))


def test_balanced_optimizers_set_lr_and_wd_from_their_product_and_ratio():
  """p = lr*wd = 0.02, r = lr/wd = 0.5: lr 0.1, wd 0.2; decay 0 keeps lr and drops wd."""
  w = {"w": jnp.array([1.0, -2.0])}
  g = {"w": jnp.array([0.5, 0.5])}
  sgd = W.balanced_sgdw.make(lr_times_wd=0.02, lr_over_wd=0.5)
  upd, _ = sgd.update(g, sgd.init(w), w)
  np.testing.assert_allclose(upd["w"], -0.1 * (g["w"] + 0.2 * w["w"]), rtol=1e-6)
  off = W.balanced_sgdw.make(lr_times_wd=0.02, lr_over_wd=0.5, decay=0.0)
  upd, _ = off.update(g, off.init(w), w)
  np.testing.assert_allclose(upd["w"], -0.1 * g["w"], rtol=1e-6)
  adam = W.balanced_adamw.make(lr_times_wd=0.02, lr_over_wd=0.5, b2=0.99)
  ref = optax.adamw(0.1, b2=0.99, weight_decay=0.2)
  np.testing.assert_allclose(adam.update(g, adam.init(w), w)[0]["w"],
                             ref.update(g, ref.init(w), w)[0]["w"], rtol=1e-6)


@pytest.mark.parametrize("arch", W.ARCHS)
def test_hidden_weights_are_scale_invariant(arch):
  """Scaling any hidden weight leaves the output unchanged; scaling the readout does not."""
  m = W.model(arch, (6,), 8, 3, 4)
  params = m.init(jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (5, 6))
  mats = [p for p in jax.tree_util.tree_flatten_with_path(params)[0] if p[1].ndim == 2]
  assert len(mats) == 4
  y = m.apply(params, x)
  for k, (path, _) in enumerate(mats):
    scaled = jax.tree_util.tree_map_with_path(
        lambda p, a, path=path: a * 7.0 if p == path else a, params)
    if k < 3:
      np.testing.assert_allclose(m.apply(scaled, x), y, rtol=1e-4, atol=1e-5)
    else:
      assert not np.allclose(m.apply(scaled, x), y)


def test_layer_metric_records_norm_and_ranks():
  m = W.model("mlp", (6,), 8, 2, 4)
  params = m.init(jax.random.key(0))
  out = layer_metric()(params, None, None)
  assert out.shape == (3, 3)
  W1 = next(a for a in jax.tree.leaves(params) if a.ndim == 2)  # the first hidden weight
  s = np.linalg.svd(np.asarray(W1), compute_uv=False)
  np.testing.assert_allclose(out[0], [np.sqrt((s ** 2).sum()), (s ** 2).sum() / s[0] ** 2,
                                      np.exp(-np.sum(s / s.sum() * np.log(s / s.sum())))],
                             rtol=1e-4)


def test_power_law_recovers_exponents_and_growth():
  r = np.array([1e-3, 1e-2, 1e-1])[:, None] * np.ones((1, 3))
  p = np.ones((3, 1)) * np.array([1e-3, 1e-2, 1e-1])[None]
  y = 2.0 * r ** 0.5 * p ** -0.1
  fit = power_law(y, r, p)
  np.testing.assert_allclose(fit.exponents, [0.5, -0.1], atol=1e-9)
  np.testing.assert_allclose([fit.prefactor, fit.r2], [2.0, 1.0], atol=1e-9)
  assert np.isnan(power_law([1.0, 2.0], [1.0, 2.0]).exponents[0])  # too few points
  t = np.arange(1, 11) * 100.0
  assert abs(growth_exponent(3.0 * np.sqrt(t), t) - 0.5) < 1e-9
  assert abs(growth_exponent(np.full(10, 3.0), t)) < 1e-9


def test_power_law_standard_errors_match_numpy_and_cover_a_noisy_slope():
  rng = np.random.default_rng(0)
  t = np.linspace(1500, 3000, 16)
  y = 14.0 * np.exp(0.15 * rng.standard_normal((400, 16)))  # stationary, fluctuating 15%
  fits = [growth_exponent(c, t, stderr=True) for c in y]
  coef, cov = np.polyfit(np.log(t), np.log(y[0]), 1, cov=True)
  np.testing.assert_allclose(fits[0], [coef[0], np.sqrt(cov[0, 0])], rtol=1e-9)
  g, se = np.array(fits).T
  assert se.mean() > 0.1  # such fluctuations leave the slope uncertain by more than 0.1
  assert 0.9 < np.mean(np.abs(g) < 2 * se) < 0.99  # and 2 s.e. cover the true slope, 0
  g, se = growth_exponent(np.sqrt(t) * np.exp(0.01 * rng.standard_normal(16)), t, stderr=True)
  assert abs(g - 0.5) < 3 * se and se < 0.05  # a clean sqrt(t) growth stays far from 0


@pytest.mark.slow
def test_signature_on_a_small_grid(small):
  assert small.weight_norm.dims == ("arch", "seed", "lr_times_wd", "lr_over_wd", "decay", "step",
                                    "layer")
  checks = W.signature(small, **TOL)
  assert len(checks) == 7
  judged = [c for c in checks if not c.skipped]
  assert len(judged) == 7, [c.line() for c in checks]
  # The equilibrium, the laws (AdamW 1/2 with little lr*wd dependence, SGD 1/4), the ranks
  # falling with wd, the networks' difference in the residual block and the control.
  assert all(c.passed for c in checks), [c.line() for c in checks]
  for (arch, layer), f in W.law_fits(small).items():
    if layer < small.layer.values[-1]:
      assert abs(f.exponents[0] - 0.5) < TOL["k_tol"], (arch, layer, f)


@pytest.mark.slow
def test_rank_check_leaves_out_a_minority_of_collapsed_runs_and_can_fail(small):
  """Runs collapsed onto one direction are left out while at most half; ranks flat in wd fail."""
  def rank_check(ds):
    return W.signature(ds, **TOL)[3]
  tail = small.step >= 0.75 * small.step[-1]
  def collapse(cells):  # the runs with weight decay in these cells end with a stable rank of ~1
    hit = sum((small.lr_times_wd == p) & (small.lr_over_wd == r) for p, r in cells) > 0
    where = (small.decay == 1.0) & tail & hit
    return small.assign(stable_rank=small.stable_rank.where(~where, 1.1))
  p, r = small.lr_times_wd.values, small.lr_over_wd.values
  check = rank_check(collapse([(p[-1], r[-1])]))  # the largest lr: 2 runs of 8 per layer
  assert check.passed and "2 of 8 collapsed, left out" in check.measured, check.line()
  check = rank_check(collapse([(p[-1], r[-1]), (p[0], r[-1]), (p[-1], r[0])]))  # 6 of 8
  assert not check.passed and not check.skipped, check.line()
  # Runs with weight decay whose ranks are those of their twins without it (a function of the
  # lr alone): nothing falls with wd at fixed lr, the check fails.
  flat = small.copy()
  for kind in W.RANKS:
    twin = small[kind].sel(decay=0.0, drop=True)
    flat[kind] = xr.concat([twin, twin], "decay").assign_coords(decay=small.decay).transpose(
        *small[kind].dims)
  check = rank_check(flat)
  assert not check.passed and not check.skipped, check.line()


@pytest.mark.slow
def test_equilibrium_check_judges_a_drift_against_the_noise_of_its_slope(small):
  """One run's norm falling like t^-0.4 over the second half fails the equilibrium; the same
  fall through record-to-record fluctuations of ~40% is within the noise of its slope."""
  steps = small.step.values.astype(float)
  half = steps >= 0.5 * steps[-1]
  one = dict(decay=1.0, arch="resmlp", seed=small.seed.values[0], layer=small.layer.values[0])
  one.update(lr_times_wd=small.lr_times_wd.values[-1], lr_over_wd=small.lr_over_wd.values[-1])
  def with_norm(factor):
    ds = small.copy(deep=True)
    ds["weight_norm"].loc[one] = ds.weight_norm.loc[one].values * factor
    return W.signature(ds, **TOL)[0]
  drift = np.where(half, (np.maximum(steps, 1) / (0.5 * steps[-1])) ** -0.4, 1.0)
  check = with_norm(drift)
  assert not check.passed and "1 of " in check.measured, check.line()
  wobble = np.exp(0.4 * np.where(half, np.resize([1.0, -1.0], len(steps)), 0.0))
  check = with_norm(drift * wobble)
  assert check.passed, check.line()
  assert W.signature(small, **TOL)[0].passed


def test_control_without_weight_decay_fails_the_signature(small):
  """wd = 0 alone: the norm follows the lr alone, not (lr/wd)^(1/2): the law's checks fail."""
  checks = W.signature(small.sel(decay=[0.0]))
  assert "control" in checks[0].name  # its norm grows instead of settling
  assert not checks[0].passed and not checks[0].skipped, checks[0].line()
  assert "control" in checks[1].name
  assert not checks[1].passed and not checks[1].skipped, checks[1].line()
  assert not checks[2].passed and not checks[2].skipped, checks[2].line()
  # Nor do its ranks fall with the wd its twins applied (at fixed lr: the same lr, other wd).
  assert "control" in checks[3].name
  assert not checks[3].passed and not checks[3].skipped, checks[3].line()
  # In the full grid the control's own check passes: its runs do not follow the law.
  assert W.signature(small)[6].passed


@pytest.mark.slow
def test_one_seed_and_summary_and_figures(small, tmp_path):
  one = small.isel(seed=[0])
  checks = W.signature(one, **TOL)
  assert checks[4].skipped and "one seed" in checks[4].measured
  assert checks[3].skipped and "too few runs" in checks[3].measured  # 4 runs, 3 parameters
  assert checks[5].skipped and "too few SGD runs" in checks[5].measured  # 2 SGD runs per seed
  assert all(checks[i].passed for i in (1, 2, 6)), [c.line() for c in checks]
  rows = dict(W.summary(small))
  assert rows["mlp AdamW layer 1"].startswith("norm ~ (lr/wd)^k")
  assert "mlp SGD readout" in rows
  paths = W.figures(small, tmp_path)
  assert [pathlib.Path(p).name for p in paths] == ["norm_law.png", "norm_vs_step.png", "ranks.png"]
  assert all(pathlib.Path(p).stat().st_size > 0 for p in paths)


def test_cli_prints_pass_fail_lines(tmp_path):
  out = tmp_path / "w"
  args = ["run", "weight-decay-spectra", "--out", str(out)]
  for kv in ("dataset=digits", "per_class=10", "width=8", "depth=2", "seeds=1", "archs=mlp",
             "lr_times_wd=0.01", "lr_over_wd=0.01,0.1", "sgd=false", "steps=10", "record=5"):
    args += ["--set", kv]
  res = CliRunner().invoke(cli, args)
  assert res.exit_code == 0, res.output
  lines = [l for l in res.output.splitlines() if l.startswith(("PASS", "FAIL", "SKIP"))]
  assert len(lines) == 7, res.output
  assert any("control, no weight decay" in l for l in lines)
  assert (out / "results.nc").exists() and (out / "norm_law.png").exists()
