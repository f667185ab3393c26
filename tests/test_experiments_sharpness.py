"""Tests for the sharpness experiment: SAM, larger lr, smaller batch reach flatter minima."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from jax.flatten_util import ravel_pytree

from jaxtheory import nn
from jaxtheory.cli import cli
from jaxtheory.experiments import EXPERIMENTS, configure
from jaxtheory.experiments import sharpness as SH
from jaxtheory.losses import mse
from jaxtheory.errors import ConfigError

# digits (ships with scikit-learn), 128 images, 2 x 32 units, 2 seeds x lr 0.1/0.3 x rho
# 0/0.05/0.1 x batch 8/128, 2000 steps: every run reaches loss 0.02; lambda_max ratios ~0.26
# (rho), ~0.55 (lr), ~0.6 (batch); seed vs seed ~0.98.
SMALL = dict(dataset="digits", n_train=128, n_test=300, width=32, batch_sizes=(8, 128),
             steps=2000, target_loss=0.02, lanczos_iters=12, trace_probes=8, bootstrap=200)


@pytest.fixture(scope="module")
def small():
  return SH.run(SH.Config(**SMALL))


def test_registered():
  assert EXPERIMENTS["sharpness"] is SH


@pytest.mark.parametrize("key,value,message", [
    ("dataset", "cifar10", "unknown dataset 'cifar10'"),
    ("rhos", "0,-0.1", "rhos must be distinct numbers >= 0"),
    ("lrs", "0", "lrs must be distinct positive"),
    ("batch_sizes", "8,100000", "batch_sizes must be distinct integers in"),
    ("trace_probes", "1", "trace_probes must be at least 2"),
])
def test_bad_config(key, value, message):
  with pytest.raises(ConfigError, match=message):
    SH.run(configure(SH.Config, {key: value}))


def test_curvature_probe_matches_the_dense_hessian():
  """Lanczos' top eigenvalue and Hutchinson's trace against the dense Hessian of a tiny MLP."""
  with jax.enable_x64(True):
    m = nn.mlp((5,), 4, 1, 3)
    ctx = nn.Ctx()
    p = m.init(jax.random.key(0), ctx)
    x = jax.random.normal(jax.random.key(1), (12, 5))
    y = jax.nn.one_hot(jnp.arange(12) % 3, 3)
    top, tr = jax.jit(SH.curvature_probe(m, 30, 100))(p, ctx, x, y)
    flat, unravel = ravel_pytree(p)
    H = jax.hessian(lambda v: mse(m.apply(unravel(v), x, ctx), y, jnp.ones(12)))(flat)
    ev = np.linalg.eigvalsh(np.asarray(H))
    np.testing.assert_allclose(float(top), ev[-1], rtol=1e-6)
    np.testing.assert_allclose(float(tr), ev.sum(), rtol=0.25)


def test_ratio_and_correlation_reading():
  ds = xr.Dataset(
      {"top_eigenvalue": (("seed", "rho"), [[10.0, 4.0], [12.0, 3.0], [8.0, 9.0]]),
       "converged": (("seed", "rho"), [[True, True], [True, True], [True, False]]),
       "test_error": (("seed", "rho"), [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])},
      coords={"seed": [0, 1, 2], "rho": [0.0, 0.1]})
  np.testing.assert_allclose(SH.paired_ratios(ds, "top_eigenvalue", "rho", 0.0, 0.1), [0.4, 0.25])
  assert SH.flatter(np.array([0.4, 0.25]), 0.8, 0.75)
  assert not SH.flatter(np.array([0.9, 1.1, 1.0]), 0.8, 0.75)
  assert not SH.flatter(np.array([]), 0.8, 0.75)
  rho, lo, hi, n = SH.rank_correlation(ds, n_boot=200)
  assert n == 5 and lo <= rho <= hi


@pytest.mark.slow
def test_signature_and_control(small):
  assert small.top_eigenvalue.dims == ("batch_size", "seed", "lr", "rho")
  assert bool(small.converged.all())
  checks = SH.signature(small)
  assert len(checks) == 4
  assert all(c.passed for c in checks), [c.line() for c in checks]
  # the control (no cause changed: seed vs seed) fails the criterion the causes pass
  assert not SH.flatter(SH.seed_ratios(small, "top_eigenvalue"), 0.8, 0.75)
  # rho = 0, full batch, small lr is the sharpest setting
  m = small.top_eigenvalue.mean("seed")
  assert float(m.sel(rho=0.0, batch_size=128, lr=0.1)) == float(m.max())
  # the measured correlation comes with its interval
  rho, lo, hi, n = SH.rank_correlation(small, n_boot=200)
  assert n == small.converged.size and lo <= rho <= hi


@pytest.mark.slow
def test_summary_and_figures(small, tmp_path):
  rows = dict(SH.summary(small))
  assert rows["dataset"].startswith("digits, 24 of 24 runs")
  assert "95% CI" in rows["Spearman(top_eigenvalue, test error)"]
  paths = SH.figures(small, tmp_path)
  assert [pathlib.Path(p).name for p in paths] == ["sharpness.png"]
  assert pathlib.Path(paths[0]).stat().st_size > 0


def test_cli_prints_pass_fail_lines(tmp_path):
  out = tmp_path / "s"
  args = ["run", "sharpness", "--out", str(out)]
  for kv in ("dataset=digits", "n_train=40", "n_test=40", "seeds=1", "width=8", "lrs=0.1",
             "rhos=0,0.1", "batch_sizes=40", "steps=5", "lanczos_iters=4", "trace_probes=2",
             "target_loss=10"):
    args += ["--set", kv]
  res = CliRunner().invoke(cli, args)
  assert res.exit_code == 0, res.output
  lines = [l for l in res.output.splitlines() if l.startswith(("PASS", "FAIL", "SKIP"))]
  assert len(lines) == 4, res.output
  assert any("seed vs seed" in l and l.startswith("SKIP") for l in lines)
  assert (out / "results.nc").exists() and (out / "sharpness.png").exists()
