"""Tests for the platonic experiment: alignment rises with competence; untrained networks do not."""

import pathlib

import numpy as np
import pytest
from click.testing import CliRunner

from jaxtheory.cli import cli
from jaxtheory.errors import ConfigError
from jaxtheory.experiments import EXPERIMENTS, configure
from jaxtheory.experiments import platonic as P

# scikit-learn's digits (no files needed): MLPs of widths 8 and 32, depths 1 and 2, two seeds,
# and a Flax MLP of width 16; 100 SGD steps reach 40-85% test accuracy. Measured: rho 0.87
# [0.53, 0.96] trained, 0.08 [-0.48, 0.56] untrained; alignment by width 0.31 / 0.67 trained.
SMALL = dict(dataset="digits", per_class=20, n_eval=100, k=5, seeds=2, widths=(8, 32),
             depths=(1, 2), flax_width=16, steps=100, batch_size=50, record=2, bootstrap=300)


@pytest.fixture(scope="module")
def small():
  return P.run(P.Config(**SMALL), progress=False)


def test_registered():
  assert EXPERIMENTS["platonic"] is P


@pytest.mark.parametrize("key,value,message", [
    ("dataset", "cifar10", "unknown dataset 'cifar10'"),
    ("widths", "8,8", "widths must be distinct"),
    ("depths", "0", "depths must be distinct positive"),
    ("k", "600", "k must be below n_eval"),
    ("flax_width", "-1", "flax_width must be >= 0"),
    ("seeds", "0", "seeds must be a positive integer"),
])
def test_bad_config(key, value, message):
  with pytest.raises(ConfigError, match=message):
    P.run(configure(P.Config, {key: value}))


@pytest.mark.slow
def test_signature_on_a_reduced_config(small):
  assert small.alignment.dims == ("stage", "model_a", "model_b")
  assert small.sizes["model"] == 10 and list(small.arch.values).count("flax-mlp") == 2
  A = small.alignment.sel(stage="trained").values
  np.testing.assert_allclose(np.diag(A), 1.0)
  np.testing.assert_allclose(A, A.T)
  checks = P.signature(small)
  assert len(checks) == 3
  assert all(c.passed for c in checks), [c.line() for c in checks]
  # Trained networks align far above chance; the chance level is k / (n - 1).
  assert small.attrs["chance"] == pytest.approx(5 / 99)
  off = A[np.triu_indices(10, 1)]
  assert off.min() > 2 * small.attrs["chance"]
  assert (small.test_acc_final.sel(stage="init") < 0.25).all()


@pytest.mark.slow
def test_control_fails_the_signature(small):
  """Untrained networks read as if trained: no rise with competence; the trained ones read as
  the control show one."""
  swapped = small.assign_coords(stage=list(small.stage.values[::-1]))
  checks = P.signature(swapped)
  assert not checks[0].passed and not checks[0].skipped, checks[0].line()
  assert not checks[2].passed, checks[2].line()


@pytest.mark.slow
def test_summary_and_figures(small, tmp_path):
  rows = dict(P.summary(small))
  assert rows["chance level k/(n-1)"] == f"{5 / 99:.4f}"
  assert rows["trained: alignment by width"].startswith("8: ")
  assert "rho init alignment vs trained acc" in rows
  paths = P.figures(small, tmp_path)
  assert [pathlib.Path(p).name for p in paths] == ["alignment.png"]
  assert pathlib.Path(paths[0]).stat().st_size > 0


def test_cli_with_one_seed(tmp_path):
  """One seed and one depth: no two networks share a width, so the size check is skipped."""
  out = tmp_path / "p"
  args = ["run", "platonic", "--out", str(out)]
  for kv in ("dataset=digits", "per_class=10", "n_eval=40", "k=3", "seeds=1", "widths=8,16",
             "depths=1", "flax_width=8", "steps=5", "record=2", "bootstrap=20"):
    args += ["--set", kv]
  res = CliRunner().invoke(cli, args)
  assert res.exit_code == 0, res.output
  lines = [l for l in res.output.splitlines() if l.startswith(("PASS", "FAIL", "SKIP"))]
  assert len(lines) == 3, res.output
  assert lines[1].startswith("SKIP") and "single network" in lines[1], lines
  assert any("control: untrained" in l for l in lines)
  assert (out / "results.nc").exists() and (out / "alignment.png").exists()
