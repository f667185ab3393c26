"""Tests for the neural-collapse experiment: data fallback, signature, its control, CLI."""

import pathlib

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from jaxtheory import data
from jaxtheory.cli import cli
from jaxtheory.experiments import EXPERIMENTS, configure
from jaxtheory.experiments import neural_collapse as N
from jaxtheory.errors import ConfigError

# MNIST (CI fetches it), 4 classes x 50 examples: lr=0.1 fits the training set by step
# ~33, then NC1 falls ~2000x and the ETF distance ends near 0.2 (from ~0.7); lr=1e-4 (the
# control) fits it late, NC1 falls ~15x. About 40 s on a 2-core CPU.
SMALL = dict(dataset="mnist", per_class=50, seeds=2, steps=10000, record=30)


@pytest.fixture(scope="module")
def small():
  return N.run(N.Config(**SMALL))


def test_registered():
  assert EXPERIMENTS["neural-collapse"] is N


@pytest.mark.parametrize("key,value,message", [
    ("dataset", "cifar10", "unknown dataset 'cifar10'"),
    ("loss", "hinge", "unknown loss 'hinge'"),
    ("classes", "3", "classes needs at least 2 classes"),
    ("lrs", "0", "lrs must be positive"),
])
def test_bad_config(key, value, message):
  with pytest.raises(ConfigError, match=message):
    N.run(configure(N.Config, {key: value}))


def test_auto_dataset_falls_back_to_digits(monkeypatch):
  def missing(*args, **kwargs):
    raise data.DataError("no files")

  monkeypatch.setitem(data.LOADERS, "mnist", missing)
  ds = N.load_data(N.Config(per_class=5))
  assert ds.name == "digits" and ds.num_classes == 4 and len(ds.y_train) == 20
  np.testing.assert_array_equal(np.bincount(ds.y_train), [5, 5, 5, 5])  # balanced


@pytest.mark.slow
def test_collapse_in_the_terminal_phase(small):
  assert small.attrs["dataset"] == "mnist"
  assert list(small.collapse.values) == list(N.METRICS)
  checks = N.signature(small)
  assert len(checks) == 3
  assert all(c.passed for c in checks), [c.line() for c in checks]
  for seed in (0, 1):
    r = N.terminal_phase(small)[(seed, 0.1)]
    assert r["zero_error_step"] < 200
    assert r["nc1_tpt"] / r["nc1_end"] >= 100
    assert r["nc2_etf_end"] < 0.25 and r["nc2_etf_init"] / r["nc2_etf_end"] > 2
    assert r["nc4_end"] == 1.0  # the decision is the nearest class centre
    assert r["nc3_end"] < 0.5 * r["nc3_tpt"]  # the readout aligns with the class means


@pytest.mark.slow
def test_control_has_no_terminal_phase_and_no_collapse(small):
  control = N.collapse_checks(small, 1e-4)
  assert not any(c.passed for c in control), [c.line() for c in control]
  nc1 = small.collapse_metrics.sel(lr=1e-4, collapse="nc1").isel(step=-1)
  nc1_main = small.collapse_metrics.sel(lr=0.1, collapse="nc1").isel(step=-1)
  assert float(nc1.min()) > 100 * float(nc1_main.max())
  assert N.signature(small.sel(lr=[0.1]))[-1].passed is False


@pytest.mark.slow
def test_summary_and_figures(small, tmp_path):
  rows = dict(N.summary(small))
  assert rows["dataset"] == "mnist classes [0, 1, 2, 3]"
  assert rows["seed=0 lr=0.1"].startswith("100% train @ 33;")
  paths = N.figures(small, tmp_path)
  assert [pathlib.Path(p).name for p in paths] == ["collapse_vs_step.png",
                                                    "train_acc_by_lr.png"]
  assert all(pathlib.Path(p).stat().st_size > 0 for p in paths)



def _runs(acc, nc1, etf, lrs=(1e-4, 0.1)):
  """A neural-collapse results dataset: per lr, one seed's train accuracy, NC1 and ETF
  distance at steps 0, 100, 1000, 10000 (the other metrics are placeholders)."""
  steps = [0, 100, 1000, 10000]
  cm = np.full((1, len(lrs), len(steps), len(N.METRICS)), 0.1)
  cm[..., 0] = np.asarray(nc1, float)[None]
  cm[..., 1] = np.asarray(etf, float)[None]
  acc = np.asarray(acc, float)[None]
  return xr.Dataset(
      {"train_acc": (("seed", "lr", "step"), acc),
       "train_loss": (("seed", "lr", "step"), 0.5 * (1 - acc) + 1e-3),
       "collapse_metrics": (("seed", "lr", "step", "collapse"), cm)},
      coords={"seed": [0], "lr": list(lrs), "step": steps, "collapse": list(N.METRICS)},
      attrs={"config": "{}"})


def test_collapse_before_zero_error_counts_and_a_fitting_control_is_no_control():
  # Main run: NC1 falls 200x before zero error (step 1000), then a little more; the ETF
  # distance ends at 0.078. The old check (>= 100x after zero error) failed it.
  main = dict(acc=[0.2, 0.9, 1.0, 1.0], nc1=[1.0, 0.02, 0.005, 0.004],
              etf=[0.7, 0.3, 0.1, 0.078])
  # The control fits by step 100 too (a longer run) and collapses 50x: the old control
  # check (no zero error, or NC1 falls < 100x from init) passed it.
  control = dict(acc=[0.2, 1.0, 1.0, 1.0], nc1=[1.0, 0.3, 0.1, 0.02], etf=[0.7, 0.5, 0.4, 0.3])
  ds = _runs(*[[control[k], main[k]] for k in ("acc", "nc1", "etf")])
  r = N.terminal_phase(ds)[(0, 0.1)]
  assert r["nc1_tpt"] / r["nc1_end"] < 100  # the old check's measure
  nc1, etf, ctrl = N.signature(ds)
  assert nc1.passed and etf.passed, (nc1.line(), etf.line())
  assert not ctrl.passed and "zero error at step 100 (9900 steps of terminal phase)" in \
      ctrl.measured
  # A control that stays out of the terminal phase and collapses less passes.
  control.update(acc=[0.2, 0.5, 0.8, 0.95], nc1=[1.0, 0.5, 0.3, 0.2])
  ds = _runs(*[[control[k], main[k]] for k in ("acc", "nc1", "etf")])
  assert N.signature(ds)[-1].passed, N.signature(ds)[-1].line()
  # A main run that fitted and broke down is an optimization failure, said as such.
  main.update(acc=[0.2, 1.0, 1.0, 0.495])
  ds = _runs(*[[control[k], main[k]] for k in ("acc", "nc1", "etf")])
  nc1 = N.signature(ds)[0]
  assert not nc1.passed and not nc1.skipped
  assert "seed 0: optimization failure, collapsed: " in nc1.measured
  # A main run that never fits in the budget is not judged.
  main.update(acc=[0.2, 0.5, 0.8, 0.97])
  ds = _runs(*[[control[k], main[k]] for k in ("acc", "nc1", "etf")])
  assert all(c.skipped for c in N.signature(ds)[:2])
  assert "zero training error not reached in 10000 steps" in N.signature(ds)[0].measured


def test_cli_prints_pass_fail_lines(tmp_path):
  out = tmp_path / "n"
  args = ["run", "neural-collapse", "--out", str(out)]
  for kv in ("dataset=digits", "classes=0,1,2", "per_class=10", "width=8", "seeds=1",
             "steps=20", "record=4"):
    args += ["--set", kv]
  res = CliRunner().invoke(cli, args)
  assert res.exit_code == 0, res.output
  lines = [l for l in res.output.splitlines() if l.startswith(("PASS", "FAIL", "SKIP"))]
  assert len(lines) == 3, res.output
  assert any("control lr=0.0001" in l for l in lines)
  assert (out / "results.nc").exists() and (out / "collapse_vs_step.png").exists()

