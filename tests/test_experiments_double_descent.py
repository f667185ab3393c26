"""Tests for the double-descent experiment: the closed-form readout, signature, controls, CLI."""

import doctest
import pathlib

import numpy as np
import pytest
from click.testing import CliRunner

from jaxtheory.analysis import peak
from jaxtheory.cli import cli
from jaxtheory.experiments import EXPERIMENTS, configure
from jaxtheory.experiments import double_descent as D
from jaxtheory.train import ConfigError

# n = 40 random-feature regressions and a 100-example digits MLP sweep: about 15 s on a
# 2-core CPU, most of it compiling.
SMALL = dict(seeds=2, n_train=40, n_test=200,
             features=(10, 20, 30, 36, 40, 44, 50, 60, 80, 160, 320), ridges=(0.0, 1e-2, 10.0),
             mlp_n_train=100, widths=(2, 4, 8, 16, 32, 64), steps=1500)


@pytest.fixture(scope="module")
def small():
  return D.run(D.Config(**SMALL))


def test_docstring_examples_run():
  assert doctest.testmod(D).failed == 0


def test_registered():
  assert EXPERIMENTS["double-descent"] is D


@pytest.mark.parametrize("key,value,message", [
    ("part", "cnn", "unknown part 'cnn'; available: both, rf, mlp"),
    ("ridges", "0.1,1", "ridges must be >= 0 and include 0"),
    ("features", "10,20", "features needs at least 3 values"),
    ("mlp_dataset", "cifar", "unknown mlp_dataset 'cifar'"),
    ("label_noises", "0,1.5", r"label_noises must lie in \[0, 1\)"),
])
def test_bad_config(key, value, message):
  with pytest.raises(ConfigError, match=message):
    D.run(configure(D.Config, {key: value}))


@pytest.mark.slow
def test_double_descent_appears(small):
  checks = D.signature(small)
  assert len(checks) == 5
  assert all(c.passed for c in checks), [c.line() for c in checks]
  ridgeless = D.rf_curves(small)["ridgeless"]
  assert int(ridgeless.features[int(np.argmax(ridgeless.values))]) == 40  # p = n
  # Training loss: interpolation (zero) from p = n on, without ridge.
  train = small.rf_train_loss.sel(ridge=0.0).median("seed")
  assert float(train.sel(features=40)) < 1e-8 < float(train.sel(features=36))


@pytest.mark.slow
def test_controls_show_no_peak(small):
  # Large ridge: flat; the optimal ridge is below the ridgeless curve everywhere.
  curves = D.rf_curves(small)
  assert peak(curves["ridge 10"].values, log=True)[1] < np.log10(1.05)
  assert bool((curves["optimal ridge"] <= curves["ridgeless"] + 1e-12).all())
  # No label noise: the MLP's test loss has a much smaller bump than with noise.
  c = D.mlp_curves(small)["test_loss"]
  assert peak(c.sel(label_noise=0.0).values)[1] < 0.5 * peak(
      c.sel(label_noise=0.2).values)[1]
  noiseless = small.sel(label_noise=[0.0])
  lines = [ch.line() for ch in D.signature(noiseless)]
  assert lines[-1] == ("FAIL  MLP control label_noise=0: a much smaller peak: needs "
                       "label_noise=0 and a positive label noise in the grid")


@pytest.mark.slow
def test_summary_and_figures(small, tmp_path):
  rows = dict(D.summary(small))
  assert rows["RF ridgeless"].startswith("peak at p=40 (n=40)")
  assert "MLP label_noise=0.2 error" in rows
  paths = D.figures(small, tmp_path)
  assert [pathlib.Path(p).name for p in paths] == ["rf_test_loss_vs_features.png",
                                                    "mlp_test_loss_vs_width.png"]
  assert all(pathlib.Path(p).stat().st_size > 0 for p in paths)


def test_parts_run_alone():
  rf = D.run(D.Config(part="rf", seeds=1, n_train=10, n_test=20, features=(5, 10, 20)))
  assert "rf_test_loss" in rf and "test_acc" not in rf
  assert rf.attrs["rf_dataset"] == "teacher-student" and rf.attrs["dtype"] == "float64"
  mlp = D.run(D.Config(part="mlp", seeds=1, mlp_n_train=30, widths=(2, 4, 8), steps=5,
                       record=2))
  assert "rf_test_loss" not in mlp and mlp.test_acc.dims == ("seed", "width", "label_noise",
                                                             "step")



def test_cli_prints_pass_fail_lines(tmp_path):
  out = tmp_path / "d"
  args = ["run", "double-descent", "--out", str(out)]
  for kv in ("seeds=1", "n_train=10", "n_test=20", "features=5,10,20", "ridges=0,1",
             "mlp_n_train=30", "widths=2,4,8", "steps=10", "record=3"):
    args += ["--set", kv]
  res = CliRunner().invoke(cli, args)
  assert res.exit_code == 0, res.output
  lines = [l for l in res.output.splitlines() if l.startswith(("PASS", "FAIL"))]
  assert len(lines) == 5, res.output
  assert (out / "results.nc").exists() and (out / "rf_test_loss_vs_features.png").exists()

