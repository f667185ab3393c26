"""Tests for the double-descent experiment: the closed-form readout, signature, controls, CLI."""

import json
import pathlib

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from jaxtheory.analysis import peak
from jaxtheory.cli import cli
from jaxtheory.experiments import EXPERIMENTS, configure
from jaxtheory.experiments import double_descent as D
from jaxtheory.errors import ConfigError

# Long training runs: compiled with XLA's default optimizations (tests/conftest.py).
pytestmark = pytest.mark.optimized

# n = 40 random-feature regressions and the default 1000-example MNIST MLP sweep (14x14
# inputs) at one seed and five widths: about 45 s on a 2-core CPU.
# Input dimension 5: with 40 examples of a 20-dimensional teacher no ridge predicts much
# better than zero, and the control could not be told from a zero readout.
# The random-features part is the reduced form of the nakkiran2021 preset (n = 200, 5 seeds).
SMALL = dict(D.PRESETS["nakkiran2021"], part="both", seeds=1, n_train=40, n_test=200,
             input_dim=5,
             features=(10, 20, 30, 36, 40, 44, 50, 60, 80, 160, 320), ridges=(0.0, 1e-2, 10.0),
             widths=(16, 32, 64, 96, 256))
# A tiny MLP setting for the tests of plumbing (not of the phenomenon).
TINY_MLP = dict(mlp_dataset="digits", mlp_pool=1, mlp_n_train=30, mlp_n_test=20)


@pytest.fixture(scope="module")
def small():
  return D.run(D.Config(**SMALL))


def test_registered():
  assert EXPERIMENTS["double-descent"] is D


@pytest.mark.parametrize("key,value,message", [
    ("part", "cnn", "unknown part 'cnn'; available: both, rf, mlp"),
    ("ridges", "0.1,1", "ridges must be >= 0 and include 0"),
    ("mlp_dataset", "cifar", "unknown mlp_dataset 'cifar'; available: mnist, fashion-mnist, "
                             "mnist1d, digits"),
    ("mlp_dataset", "digits", "mlp_pool=2 pools MNIST and Fashion-MNIST images only; set "
                              "mlp_pool=1 for digits"),
    ("mlp_pool", "0", "mlp_pool must be a positive integer, got 0"),
    ("rf_activation", "swish", "unknown rf_activation 'swish'; available: relu, tanh, erf"),
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
  # MLP with 20% label noise: the 0-1 test error peaks where the net first fits the noisy
  # labels, at about n x classes parameters, and falls on both sides.
  c = D.mlp_curves(small)
  err = c["test_error"].sel(label_noise=0.2).values
  i = int(np.argmax(err))
  w_int = D.interpolation_width(c["train_acc"].sel(label_noise=0.2))
  assert w_int / 2 <= small.width[i] <= 2 * w_int
  assert 0.5 <= D.params_per_nk(small, w_int) <= 2.0
  assert err[i] > err[0] + 0.05 and err[i] > err[-1] + 0.05
  assert peak(c["test_loss"].sel(label_noise=0.2).values)[1] > 0.1


@pytest.mark.slow
def test_controls_show_no_peak(small):
  # Large ridge: flat; the optimal ridge is below the ridgeless curve everywhere.
  curves = D.rf_curves(small)
  assert peak(curves["ridge 10"].values, log=True)[1] < np.log10(1.05)
  assert bool((curves["optimal ridge"] <= curves["ridgeless"] + 1e-12).all())
  # No label noise: the MLP's test error has no peak of the signature's size. Read as if it
  # were the noisy sweep, the noiseless one fails the MLP check.
  err = D.mlp_curves(small)["test_error"]
  assert peak(err.sel(label_noise=0.0).values)[1] < 0.05 <= peak(
      err.sel(label_noise=0.2).values)[1]
  as_noisy = small.sel(label_noise=[0.0]).assign_coords(label_noise=[0.2])
  mlp_check = D.signature(as_noisy)[3]
  assert mlp_check.name.startswith("MLP label_noise=0.2: test error peaks") and not mlp_check.passed
  # At initialization nothing has a peak: the noisy check cannot pass, and a flat control
  # with nothing to compare against is skipped, not passed.
  at_init = D.signature(small.isel(step=[0]))[3:]
  assert [c.passed for c in at_init] == [False, False], [c.line() for c in at_init]
  assert at_init[1].skipped and "no peak with label noise passed" in at_init[1].measured
  lines = [ch.line() for ch in D.signature(small.sel(label_noise=[0.0]))]
  assert lines[-1] == ("SKIP  MLP control label_noise=0: no test error peak: needs "
                       "label_noise=0 and a positive label noise in the grid")


@pytest.mark.slow
def test_summary_and_figures(small, tmp_path):
  rows = dict(D.summary(small))
  assert rows["RF ridgeless"].startswith("peak at p=40 (n=40)")
  assert rows["MLP label_noise=0.2 fit"].startswith("train accuracy >= 99% from width ")
  assert "MLP label_noise=0.2 loss" in rows and "MLP label_noise=0 error" in rows
  assert small.attrs["mlp_dataset"] == "mnist" and small.attrs["mlp_num_classes"] == 10
  # One hidden layer on 14x14 inputs: width x (196 + 1) + 10 x (width + 1) parameters.
  np.testing.assert_array_equal(small.num_params, 207 * small.width + 10)
  paths = D.figures(small, tmp_path)
  assert [pathlib.Path(p).name for p in paths] == ["rf_test_loss_vs_features.png",
                                                    "mlp_test_error_vs_width.png"]
  assert all(pathlib.Path(p).stat().st_size > 0 for p in paths)


def _rf(curves: dict, null: float, n: int = 40):
  """A random-features results dataset (one seed) from test-loss curves by ridge."""
  p = [10, 20, 30, 40, 50, 80, 160]
  ridges = list(curves)
  loss = np.array([curves[r] for r in ridges], float).T[None]
  return xr.Dataset({"rf_test_loss": (("seed", "features", "ridge"), loss),
                     "rf_train_loss": (("seed", "features", "ridge"), 0 * loss),
                     "rf_null_test_loss": null},
                    coords={"features": p, "ridge": ridges},
                    attrs={"config": json.dumps({"n_train": n})})


def test_the_control_is_not_a_zero_predictor():
  ridgeless = [0.2, 0.4, 1.0, 10.0, 1.5, 0.5, 0.3]
  null = 0.13
  # The old control: ridge 10 predicts zero at every p (test loss = the zero predictor's), so
  # its curve is flat for no reason of interest; ridge 0.01 predicts but keeps a bump.
  ds = _rf({0.0: ridgeless, 1e-2: [0.06, 0.06, 0.08, 0.11, 0.08, 0.06, 0.055],
            10.0: [null] * 7}, null)
  assert peak(D.rf_curves(ds)["ridge 10"].values, log=True)[1] < np.log10(1.2)  # old: PASS
  assert D.fixed_ridge(ds) == 1e-2
  control = [c for c in D.signature(ds) if "control" in c.name][0]
  assert not control.passed and not control.skipped, control.line()
  # Only a zero-predicting ridge besides the ridgeless one: nothing predicts, so the flat
  # curve says nothing; not judged rather than passed.
  checks = D.signature(_rf({0.0: ridgeless, 10.0: [null] * 7}, null))
  assert [c.skipped for c in checks] == [False, True, True], [c.line() for c in checks]
  assert "not learnable at n = 40: the best ridge explains 0%" in checks[2].measured
  # A ridge that removes the peak and predicts passes.
  ds = _rf({0.0: ridgeless, 1e-2: [0.08, 0.07, 0.07, 0.07, 0.065, 0.06, 0.06],
            10.0: [null] * 7}, null)
  assert all(c.passed for c in D.signature(ds)), [c.line() for c in D.signature(ds)]


def test_an_interpolation_threshold_outside_the_grid_is_not_read_as_no_peak(small):
  # Only the narrow widths: none fits the noisy labels, so where the peak should be is not
  # in the grid. The old check failed ("train accuracy >= 99% from width nan").
  narrow = small.sel(width=[16, 32])
  mlp = [c for c in D.signature(narrow) if c.name.startswith("MLP label_noise=0.2")][0]
  assert mlp.skipped and "interpolation threshold not in the width grid" in mlp.measured
  # A diverged run is an optimization failure, not the absence of a peak.
  broken = small.copy(deep=True)
  broken["train_loss"][dict(width=0, label_noise=1)] = np.nan
  mlp = [c for c in D.signature(broken) if c.name.startswith("MLP label_noise=0.2")][0]
  assert not mlp.passed and not mlp.skipped
  assert mlp.measured.startswith("optimization failure: width 16 seed 0: diverged")
  # So is a diverged control run: it is not a flat control.
  broken = small.copy(deep=True)
  broken["train_loss"][dict(width=0, label_noise=0)] = np.nan
  control = D.signature(broken)[-1]
  assert control.name.startswith("MLP control") and not control.passed and not control.skipped
  assert control.measured.startswith("optimization failure: width 16 seed 0: diverged")


@pytest.mark.parametrize("n,input_dim,noise,activation", [
    (40, 10, 0.5, "relu"),   # the fewest examples per input dimension declared (n / 4)
    (40, 10, 0.25, "tanh"),  # the least noise, another feature map
    (200, 50, 0.5, "erf"),   # the most examples, the third feature map
])
def test_random_features_across_the_declared_range(n, input_dim, noise, activation):
  features = tuple(sorted({int(n * f) for f in (0.25, 0.5, 0.75, 0.9, 1, 1.1, 1.25, 1.5, 2, 4)}))
  ds = D.run(D.Config(part="rf", seeds=1, n_train=n, n_test=400, input_dim=input_dim,
                      noise=noise, rf_activation=activation, features=features))
  checks = D.signature(ds)
  assert len(checks) == 3 and all(c.passed for c in checks), [c.line() for c in checks]


# The MLP's declared range, at its corners not covered by the small run (MNIST, n = 1000,
# label noise 0.2, relu): one seed each, about 8, 8 and 15 s of training on a 2-core CPU.
@pytest.mark.slow
@pytest.mark.parametrize("dataset,n,noise,activation,widths", [
    ("fashion-mnist", 500, 0.25, "tanh", (8, 16, 24, 32, 48, 64, 128)),
    ("mnist", 500, 0.15, "gelu", (8, 16, 24, 32, 48, 64, 128)),
    ("fashion-mnist", 1000, 0.15, "relu", (16, 24, 32, 48, 64, 96, 256)),
])
def test_the_mlp_peak_across_the_declared_range(dataset, n, noise, activation, widths):
  ds = D.run(D.Config(part="mlp", seeds=1, mlp_dataset=dataset, mlp_n_train=n,
                      label_noises=(0.0, noise), mlp_activation=activation, widths=widths))
  checks = D.signature(ds)
  assert len(checks) == 2 and all(c.passed for c in checks), [c.line() for c in checks]


def test_parts_run_alone():
  rf = D.run(D.Config(part="rf", seeds=1, n_train=10, n_test=20, features=(5, 10, 20)))
  assert "rf_test_loss" in rf and "test_acc" not in rf
  assert rf.attrs["rf_dataset"] == "teacher-student" and rf.attrs["dtype"] == "float64"
  mlp = D.run(D.Config(part="mlp", seeds=1, widths=(2, 4, 8), steps=5, record=2, **TINY_MLP))
  assert "rf_test_loss" not in mlp and mlp.test_acc.dims == ("seed", "width", "label_noise",
                                                             "step")


def test_too_few_widths_or_feature_counts_skip_rather_than_raise():
  ds = D.run(D.Config(seeds=1, n_train=10, n_test=10, features=(5, 20), widths=(4,), steps=3,
                      record=1, **TINY_MLP), progress=False)
  checks = D.signature(ds)
  assert all(c.skipped for c in checks) and len(checks) == 3, [c.line() for c in checks]
  assert "at least 3 feature counts, got 5,20" in checks[0].line()
  assert "at least 3 widths, got 4" in checks[-1].line()  # the control
  assert D.summary(ds)


def test_cli_prints_pass_fail_lines(tmp_path):
  out = tmp_path / "d"
  args = ["run", "double-descent", "--out", str(out)]
  for kv in ("seeds=1", "n_train=10", "n_test=20", "features=5,10,20", "ridges=0,1",
             "mlp_dataset=digits", "mlp_pool=1", "mlp_n_train=30", "mlp_n_test=20",
             "widths=2,4,8", "steps=10", "record=3"):
    args += ["--set", kv]
  res = CliRunner().invoke(cli, args)
  assert res.exit_code == 0, res.output
  lines = [l for l in res.output.splitlines() if l.startswith(("PASS", "FAIL", "SKIP"))]
  assert len(lines) == 5, res.output
  assert (out / "results.nc").exists() and (out / "rf_test_loss_vs_features.png").exists()



def test_cli_runs_the_closed_form_part_alone(tmp_path):
  # No training steps, so no step axis: the summary table must not need one.
  out = tmp_path / "rf"
  args = ["run", "double-descent", "--out", str(out), "--no-plots"]
  for kv in ("part=rf", "seeds=1", "n_train=10", "n_test=20", "features=5,10,20", "ridges=0,1"):
    args += ["--set", kv]
  res = CliRunner().invoke(cli, args)
  assert res.exit_code == 0, res.output
  assert "double-descent: mean of 1 seed" in res.output
  assert sum(l.startswith(("PASS", "FAIL", "SKIP")) for l in res.output.splitlines()) == 3
