"""Tests for the wide-vs-deep experiment: block detection, its checks, a tiny run and the CLI."""

import pathlib

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from jaxtheory.cli import cli
from jaxtheory.experiments import EXPERIMENTS, configure
from jaxtheory.experiments import wide_vs_deep as W
from jaxtheory.errors import ConfigError

TINY = dict(dataset="digits", per_class=10, n_probe=32, widths=(4, 8), depths=(1, 3), steps=5,
            record=2)


def test_registered():
  assert EXPERIMENTS["wide-vs-deep"] is W


@pytest.mark.parametrize("key,value,message", [
    ("dataset", "cifar10", "unknown dataset 'cifar10'"),
    ("depths", "2,2", "depths must be distinct"),
    ("widths", "0", "widths must be positive"),
    ("n_probe", "2", "n_probe must be an integer >= 4"),
    ("lr", "0", "lr must be positive"),
    ("seeds", "0", "seeds must be a positive integer"),
])
def test_bad_config(key, value, message):
  with pytest.raises(ConfigError, match=message):
    W.run(configure(W.Config, {key: value}))


def _band(L, rho=0.9):
  """A smooth band: CKA decaying with layer distance, no block."""
  return rho ** np.abs(np.subtract.outer(np.arange(L), np.arange(L)))


def _block(L, start, stop, inside=0.98):
  M = _band(L)
  M[start:stop, start:stop] = inside
  np.fill_diagonal(M, 1.0)
  return M


def _results(big_block: bool, seeds=(0, 1), removal_kills_block=True, seeds_differ=True):
  """Hand-made results of depths (2, 9) x widths (8, 64): a block in the largest model or not."""
  depths, widths, steps, Lmax = [2, 9], [8, 64], [0, 10], 10
  shape = (2, len(seeds), 2, 2, Lmax, Lmax)
  cka, nopc = np.full(shape, np.nan), np.full(shape, np.nan)
  share = np.full(shape[:-1], np.nan)
  cross = np.full((2, len(seeds), 2, Lmax, Lmax), np.nan)
  for d, depth in enumerate(depths):
    L = depth + 1
    for w in range(2):
      for s in range(len(seeds)):
        end = _block(L, 3, 9) if (big_block and d == 1 and w == 1) else _band(L)
        cka[d, s, w, 0, :L, :L] = _band(L)
        cka[d, s, w, 1, :L, :L] = end
        gone = _band(L, 0.5) if removal_kills_block else end
        nopc[d, s, w, :, :L, :L] = gone
        share[d, s, w, :, :L] = 0.2
        if big_block and d == 1 and w == 1:
          share[d, s, w, 1, 3:9] = 0.8
        C = _band(L) * 0.9
        if seeds_differ and big_block and d == 1 and w == 1:
          C[3:9, 3:9] = 0.3
        cross[d, s, w, :L, :L] = C if len(seeds) > 1 else np.nan
  loss = np.broadcast_to(np.array([2.3, 0.01]), shape[:4])
  acc = np.broadcast_to(np.array([0.1, 1.0]), shape[:4])
  dims = ("depth", "seed", "width", "step")
  return xr.Dataset(
      {"cka": (dims + ("layer", "layer_b"), cka), "cka_nopc": (dims + ("layer", "layer_b"), nopc),
       "pc_share": (dims + ("layer",), share), "train_loss": (dims, loss),
       "train_acc": (dims, acc), "test_acc": (dims, acc),
       "cross_cka": (("depth", "seed", "width", "layer", "layer_b"), cross)},
      coords=dict(depth=depths, seed=list(seeds), width=widths, step=steps,
                  layer=np.arange(Lmax), layer_b=np.arange(Lmax)))


def _verdicts(ds, **kw):
  return {c.name.split(" (")[0]: ("SKIP" if c.skipped else c.passed)
          for c in W.signature(ds, **kw)}


def test_checks_pass_on_a_block_and_fail_without_one():
  ok = W.signature(_results(True))
  assert all(c.passed for c in ok), "\n".join(c.line() for c in ok)
  assert "6/10 (layers 3-8)" in ok[1].measured and "at init 1/10" in ok[1].measured
  no = W.signature(_results(False))
  assert [c.passed for c in no] == [True, False, False, False, False, True, True], \
      "\n".join(c.line() for c in no)
  # a block that survives removing PC1, or that seeds share, fails those checks only
  keep = W.signature(_results(True, removal_kills_block=False))
  assert [c.passed for c in keep] == [True, True, True, False, True, True, True]
  same = W.signature(_results(True, seeds_differ=False))
  assert [c.passed for c in same] == [True, True, True, True, False, True, True]


def test_control_fails_when_the_small_model_or_init_has_a_block():
  ds = _results(True)
  ds["cka"][0, :, 0, 1, :3, :3] = 0.99  # the smallest model (3 layers) entirely one block
  ds["cka"][1, :, 1, 0, 3:9, 3:9] = 0.99  # the largest model already blocked at init
  checks = W.signature(ds)
  assert not checks[-2].passed and "seed 0: 3/3" in checks[-2].measured
  assert not checks[-1].passed and "0.6" in checks[-1].measured


def test_one_seed_skips_the_seed_comparison():
  checks = W.signature(_results(True, seeds=(0,)))
  assert checks[4].skipped and "one seed" in checks[4].measured
  assert all(c.passed for i, c in enumerate(checks) if i != 4)


@pytest.fixture(scope="module")
def tiny():
  return W.run(W.Config(seeds=1, **TINY), progress=False)


@pytest.mark.slow
def test_tiny_run_with_one_seed(tiny, tmp_path):
  assert tiny.cka.dims == ("depth", "seed", "width", "step", "layer", "layer_b")
  assert tiny.sizes["layer"] == 4 and list(tiny.depth.values) == [1, 3]
  for depth in (1, 3):
    M = tiny.cka.sel(depth=depth).isel(seed=0, step=-1).values
    L = depth + 1
    np.testing.assert_allclose(np.diagonal(M[:, :L, :L], axis1=-2, axis2=-1), 1.0, rtol=1e-4)
    assert np.isnan(M[:, L:, :]).all()
    assert ((tiny.pc_share.sel(depth=depth).values[..., :L] > 0)
            & (tiny.pc_share.sel(depth=depth).values[..., :L] <= 1)).all()
  assert np.isnan(tiny.cross_cka.values).all()  # one seed: no cross-seed pair
  checks = W.signature(tiny)
  assert len(checks) == 7
  rows = dict(W.summary(tiny))
  assert rows["dataset"] == "digits" and "depth=3 width=8 seed=0" in rows
  paths = W.figures(tiny, tmp_path)
  assert [pathlib.Path(p).name for p in paths] == ["cka_grid.png", "block_largest.png"]


@pytest.mark.slow
def test_cli_runs_it(tmp_path):
  out = tmp_path / "w"
  args = ["run", "wide-vs-deep", "--out", str(out)]
  for k, v in {**TINY, "widths": "4,8", "depths": "1,3", "seeds": "2"}.items():
    args += ["--set", f"{k}={v}"]
  res = CliRunner().invoke(cli, args)
  assert res.exit_code == 0, res.output
  lines = [l for l in res.output.splitlines() if l.startswith(("PASS", "FAIL", "SKIP"))]
  assert len(lines) == 7, res.output
  ds = xr.open_dataset(out / "results.nc")
  C = ds.cross_cka.sel(depth=3, width=8).values  # seed 0 vs seed 1, trained from different inits
  assert np.isfinite(C[:, :4, :4]).all() and (C[:, :4, :4] < 1 - 1e-6).any()
  assert (out / "cka_grid.png").exists() and (out / "block_largest.png").exists()
