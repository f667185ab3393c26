"""Tests for the matrix-completion experiment: model, baseline, signature and its control."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from jaxtheory.cli import cli
from jaxtheory.experiments import EXPERIMENTS, configure
from jaxtheory.experiments import matrix_completion as MC
from jaxtheory.nn import Ctx
from jaxtheory.train import ConfigError

SMALL = dict(n=20, rank=3, observed_fraction=0.5, depths=(1, 2, 3), seeds=1, steps=2000,
             record=150)


@pytest.fixture(scope="module")
def small():
  return MC.run(MC.Config(**SMALL))


def test_registered():
  assert EXPERIMENTS["matrix-completion"] is MC


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_factorization_is_the_product_of_its_factors(depth):
  n, m = 4, 5
  f = MC.factorization(n, m, depth, width=3)
  params = f.init(jax.random.key(depth))
  Ws = jax.tree.leaves(params)
  assert len(Ws) == depth
  W = Ws[0]
  for V in Ws[1:]:
    W = W @ V
  idx = MC._all_entries(n, m)
  np.testing.assert_allclose(np.asarray(f.apply(params, idx)).reshape(n, m), W, rtol=1e-5,
                             atol=1e-6)


def test_init_scale_is_the_end_to_end_scale():
  """Factors scaled by ``init_scale ** (1/depth)`` start every depth from a product of
  about the same size."""
  idx = MC._all_entries(20, 20)
  norms = []
  for depth in (1, 2, 3):
    f = MC.factorization(20, 20, depth)
    params = f.init(jax.random.key(0), Ctx(init_scale=1e-3 ** (1 / depth)))
    norms.append(float(jnp.linalg.norm(f.apply(params, idx))))
  assert max(norms) / min(norms) < 10, norms


def test_half_times():
  steps = np.arange(6)
  sv = xr.DataArray(np.array([[0, 4, 8, 8, 8, 8], [0, 0, 1, 2, 4, 4]], float).T,
                    {"step": steps}, ("step", "sv"))
  np.testing.assert_array_equal(MC.half_times(sv, 2), [1, 3])


@pytest.mark.parametrize("key,value,message", [
    ("depths", "", "depths must be positive integers"),
    ("depths", "1,1", "depths must be distinct"),
    ("rank", "40", "rank 40 exceeds n 30"),
    ("init_scale", "0", "init_scale must be positive"),
])
def test_bad_config(key, value, message):
  with pytest.raises(ConfigError, match=message):
    MC.run(configure(MC.Config, {key: value}))


@pytest.mark.slow
def test_deep_factorizations_find_low_rank_and_depth_one_does_not(small):
  checks = MC.signature(small)
  assert all(c.passed for c in checks), [c.line() for c in checks]
  final = small.isel(step=-1).mean("seed")
  # The control: depth 1 moves only the observed entries, so recovers nothing.
  assert float(final.rel_error.sel(depth=1)) > 0.95
  assert float(final.effective_rank.sel(depth=1)) > 3 * SMALL["rank"]
  assert float(final.rel_error.sel(depth=3)) < 0.1
  assert abs(float(final.effective_rank.sel(depth=3)) - SMALL["rank"]) < 0.5
  # ...and learns every singular value at once.
  t = MC.stagger(small)
  np.testing.assert_allclose(t.sel(depth=1).values, t.sel(depth=1).values[0])
  # Signature checks computed on the control alone fail.
  alone = MC.signature(small.sel(depth=[1]))
  assert [c.passed for c in alone] == [False]


@pytest.mark.slow
def test_summary_and_figures(small, tmp_path):
  rows = dict(MC.summary(small))
  assert set(rows) >= {"depth=1", "depth=2", "depth=3", "nuclear norm"}
  paths = MC.figures(small, tmp_path)
  assert {pathlib.Path(p).name for p in paths} == {
      "rel_error_by_depth.png", "effective_rank_by_depth.png", "train_loss_by_depth.png",
      "singular_values.png"}



def test_cli_prints_pass_fail_lines(tmp_path):
  out = tmp_path / "mc"
  res = CliRunner().invoke(cli, ["run", "matrix-completion", "--out", str(out), "--set", "n=6",
                               "--set", "rank=2", "--set", "depths=1,2", "--set", "seeds=1",
                               "--set", "steps=20", "--set", "record=5"])
  assert res.exit_code == 0, res.output
  lines = [l for l in res.output.splitlines() if l.startswith(("PASS", "FAIL"))]
  assert len(lines) == 5, res.output
  assert (out / "results.nc").exists() and (out / "singular_values.png").exists()

