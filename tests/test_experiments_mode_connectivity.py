"""Tests for the mode-connectivity experiment: barriers, matching, its random-permutation control."""

import pathlib
import shutil

import jax
import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from jaxtheory import data, nn, sweep
from jaxtheory.cli import cli
from jaxtheory.experiments import EXPERIMENTS, configure
from jaxtheory.experiments import mode_connectivity as M
from jaxtheory.probes.connectivity import spawn_model
from jaxtheory.errors import ConfigError

# MNIST (CI fetches it), 100 images per class pooled to 14x14, widths 16 and 128, 800 SGD
# steps: naive barriers ~1-3 nats, weight-matched ~0.1-0.3, random permutations ~naive.
SMALL = dict(per_class=100, pairs=2, widths=(16, 128), steps=800, spawn_step=50, record=4,
             alphas=7)


@pytest.fixture(scope="module")
def small():
  return M.run(M.Config(**SMALL))


def test_registered():
  assert EXPERIMENTS["mode-connectivity"] is M


@pytest.mark.parametrize("key,value,message", [
    ("dataset", "cifar10", "unknown dataset 'cifar10'"),
    ("widths", "1", "widths must be integers >= 2"),
    ("spawn_step", "2000", r"spawn_step must lie in \[0, steps\)"),
    ("alphas", "2", "alphas must be at least 3"),
    ("lr", "0", "lr must be positive"),
    ("arch", "resnet", "unknown arch 'resnet'"),
])
def test_bad_config(key, value, message):
  with pytest.raises(ConfigError, match=message):
    M.run(configure(M.Config, {key: value}))


def test_barrier_is_the_height_above_the_chord():
  a = np.linspace(0, 1, 5)
  p = xr.DataArray([[1.0, 2.0, 3.0, 2.5, 2.0], [1.0, 0.5, 0.2, 0.5, 1.0]], dims=("pair", "alpha"),
                   coords={"alpha": a})
  np.testing.assert_allclose(M.barrier(p).values, [1.5, 0.0])


def test_spawned_children_start_from_the_checkpoint_and_differ_in_noise_only():
  ds = data.subset(data.digits(), n_train=100, n_test=20, seed=0)
  m = nn.mlp(ds.input_shape, 8, 1, 10)
  ckpt = m.init(jax.random.key(42))
  s = sweep.Sweep(lambda w: spawn_model(m, ckpt), ds, dict(seed=[1, 2], width=[8]),
                  hparams=dict(lr=0.1), batch_size=10, steps=3, record=[0])
  (g,) = sweep.initial_params(s)
  for leaf, ref in zip(jax.tree.leaves(g.params), jax.tree.leaves(ckpt)):
    np.testing.assert_array_equal(leaf[0], ref)
    np.testing.assert_array_equal(leaf[1], ref)
  _, (g,) = sweep.execute(s)
  assert not np.allclose(g.params[0]["W"][0], g.params[0]["W"][1])  # different minibatches
  with pytest.raises(ValueError, match="shapes"):
    spawn_model(nn.mlp(ds.input_shape, 9, 1, 10), ckpt).init(jax.random.key(0))


@pytest.mark.slow
def test_matching_removes_the_barrier_random_permutation_does_not(small):
  assert small.attrs["dataset"] == "mnist"
  assert small.barrier.dims == ("pair", "width", "path")
  checks = M.signature(small)
  assert len(checks) == 5
  assert all(c.passed for c in checks), [c.line() for c in checks]
  b = small.barrier
  assert float(b.sel(path="naive").min()) > 0.3
  assert float(b.sel(path="weight", width=128).max()) < 0.5 * float(b.sel(path="naive").min())


@pytest.mark.slow
def test_random_permutation_control_fails_the_matching_checks(small):
  """Read the control's barriers as if they were the matched ones: the signature fails."""
  b = small.barrier
  order = [list(M.METHODS).index(m) for m in ("naive", "random", "weight", "spawn")]
  swapped = small.assign(barrier=b.copy(data=b.values[:, :, order]))
  assert float(swapped.barrier.sel(path="weight").sum()) == float(b.sel(path="random").sum())
  checks = M.signature(swapped)
  assert not checks[1].passed and not checks[3].passed, [c.line() for c in checks]


@pytest.mark.slow
def test_summary_and_figures(small, tmp_path):
  rows = dict(M.summary(small))
  assert rows["width=16 loss barrier"].startswith("naive ")
  paths = M.figures(small, tmp_path)
  assert [pathlib.Path(p).name for p in paths] == ["linear_paths.png"]
  assert pathlib.Path(paths[0]).stat().st_size > 0


@pytest.mark.slow
@pytest.mark.optimized
def test_small_cnn_matching_removes_the_barrier():
  """arch='cnn': conv -> pool -> conv -> pool -> flatten -> dense, matched channel by channel."""
  cfg = M.Config(dataset="digits", per_class=50, pairs=2, arch="cnn", widths=(8, 32), steps=200,
                 batch_size=50, spawn_step=50, record=3, alphas=5)
  ds = M.run(cfg)
  assert ds.attrs["arch"] == "cnn"
  b = ds.barrier
  checks = M.signature(ds)
  assert checks[0].passed and checks[1].passed and checks[3].passed, [c.line() for c in checks]
  assert (b.sel(path="weight") < b.sel(path="naive")).all()


@pytest.mark.slow
def test_cli_resume_after_finishing_and_after_a_kill_gives_the_same_results(tmp_path):
  """`run --out DIR` prints its PASS/FAIL lines and figures; then `--resume`: the finished
  parts' parameters come from their checkpoints (the engine keeps them), so the barriers are
  the same."""
  sets = []
  for kv in ("dataset=digits", "per_class=10", "pairs=1", "widths=8,32", "steps=6",
             "spawn_step=2", "record=2", "alphas=3", "batch_size=20"):
    sets += ["--set", kv]
  out = tmp_path / "m"
  first = CliRunner().invoke(cli, ["run", "mode-connectivity", "--out", str(out), *sets])
  assert first.exit_code == 0, first.output
  lines = [l for l in first.output.splitlines() if l.startswith(("PASS", "FAIL"))]
  assert len(lines) == 5, first.output
  assert any("control: a random permutation" in l for l in lines)
  assert (out / "linear_paths.png").exists()
  ref = xr.load_dataset(out / "results.nc")
  again = CliRunner().invoke(cli, ["run", "mode-connectivity", "--out", str(out), "--resume",
                                   *sets])
  assert again.exit_code == 0, again.output
  np.testing.assert_array_equal(xr.load_dataset(out / "results.nc").barrier.values,
                                ref.barrier.values)
  # Killed midway: the main sweep finished and was checkpointed, the spawned part not yet
  # (a copy of the finished folder without the spawned parts' checkpoints and the results).
  half = tmp_path / "h"
  shutil.copytree(out, half)
  for part in half.glob("checkpoint-part-spawn*.npz"):
    part.unlink()
  (half / "results.nc").unlink()
  resumed = CliRunner().invoke(cli, ["run", "mode-connectivity", "--out", str(half), "--resume",
                                     *sets])
  assert resumed.exit_code == 0, resumed.output
  np.testing.assert_array_equal(xr.load_dataset(half / "results.nc").barrier.values,
                                ref.barrier.values)
