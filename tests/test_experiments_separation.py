"""Tests for the law-of-data-separation experiment: the law after training, its control at init."""

import pathlib

import jax
import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from jaxtheory import data, nn, sweep
from jaxtheory.cli import cli
from jaxtheory.experiments import EXPERIMENTS, configure
from jaxtheory.experiments import separation as S
from jaxtheory.probes.separation import fuzziness_curve, fuzziness_metric, layer_features
from jaxtheory.errors import ConfigError

# Fashion-MNIST (CI fetches it), 50 images per class, 6 hidden layers of 64, 400 steps:
# log D_l falls linearly with l (rho ~0.4-0.5, R^2 > 0.95); at init rho ~1.2.
SMALL = dict(per_class=50, n_test=500, seeds=2, widths=(64,), steps=400, record=5)


@pytest.fixture(scope="module")
def small():
  return S.run(S.Config(**SMALL))


def test_registered():
  assert EXPERIMENTS["separation"] is S


@pytest.mark.parametrize("key,value,message", [
    ("dataset", "cifar10", "unknown dataset 'cifar10'"),
    ("loss", "hinge", "unknown loss 'hinge'"),
    ("depth", "2", "depth must be at least 3"),
    ("widths", "0", "widths must be positive"),
    ("lr", "0", "lr must be positive"),
])
def test_bad_config(key, value, message):
  with pytest.raises(ConfigError, match=message):
    S.run(configure(S.Config, {key: value}))


def test_law_fit_recovers_a_geometric_decay():
  layers = np.arange(1, 7)
  D = xr.DataArray(np.stack([5.0 * 0.4 ** layers, 2.0 * 1.3 ** layers,
                             np.array([1.0, 3.0, 0.5, 4.0, 0.2, 2.0])]),
                   dims=("seed", "layer"), coords={"layer": layers})
  fit = S.law_fit(D)
  np.testing.assert_allclose(np.exp(fit.log_ratio.values[:2]), [0.4, 1.3], rtol=1e-5)
  np.testing.assert_allclose(fit.r2.values[:2], 1.0, atol=1e-5)
  assert fit.r2.values[2] < 0.5
  assert S.law_holds(0.4, 0.99, 0.9, 0.9) and not S.law_holds(1.3, 1.0, 0.9, 0.9)
  assert not S.law_holds(0.4, 0.5, 0.9, 0.9) and not S.law_holds(np.nan, 1.0, 0.9, 0.9)


def test_recorded_fuzziness_is_exact_under_padding():
  """Runs of widths 8 and 12 in one padded bucket record the D_l of their own networks."""
  ds = data.subset(data.digits(), n_train=60, n_test=30, seed=0)
  s = sweep.Sweep(model=lambda w: nn.mlp(ds.input_shape, w, 3, 10), data=ds,
                  grid=dict(seed=[0], width=[8, 12]), hparams=dict(lr=0.05), steps=5, record=2,
                  metrics={"fuzziness": fuzziness_metric(10)})
  res, groups = sweep.execute(s)
  assert res.fuzziness.dims == ("seed", "width", "step", "layer")
  (g,) = groups
  for i, w in enumerate(g.coords["width"]):
    p, ctx = jax.tree.map(lambda a, i=i: a[i], (g.params, g.ctx))
    unpadded = nn.mlp(ds.input_shape, int(w), 3, 10)
    q = jax.tree.map(lambda a, b: a[tuple(slice(0, n) for n in b.shape)], p,
                     unpadded.init(jax.random.key(0)))
    direct = fuzziness_curve(layer_features(unpadded, q, ds.x_train), ds.y_train, 10)
    np.testing.assert_allclose(res.fuzziness.sel(width=w).isel(seed=0, step=-1), direct,
                               rtol=1e-3)
    np.testing.assert_allclose(direct, fuzziness_curve(layer_features(g.model, p, ds.x_train, ctx),
                                                       ds.y_train, 10), rtol=1e-3)


@pytest.mark.slow
def test_law_after_training_not_at_init(small):
  assert small.attrs["dataset"] == "fashion-mnist"
  assert small.fuzziness.dims == ("seed", "width", "step", "layer")
  checks = S.signature(small)
  assert len(checks) == 3
  assert all(c.passed for c in checks), [c.line() for c in checks]
  end = small.isel(step=-1)
  assert float(np.exp(end.log_ratio).max()) < 0.7
  assert float(end.r2.min()) >= 0.9
  init = small.isel(step=0)
  assert float(np.exp(init.log_ratio).min()) > 1.0  # random ReLU layers do not separate


@pytest.mark.slow
def test_control_at_init_fails_the_signature(small):
  """The networks at initialization (the control) do not pass the law's check."""
  at_init = S.signature(small.isel(step=[0]))
  assert not at_init[0].passed and not at_init[1].passed, [c.line() for c in at_init]
  assert "rho 1." in at_init[1].measured


@pytest.mark.slow
def test_summary_and_figures(small, tmp_path):
  rows = dict(S.summary(small))
  assert rows["dataset"] == "fashion-mnist, 6 hidden layers"
  assert rows["seed=0 width=64"].startswith("train/test acc 100.0/")
  paths = S.figures(small, tmp_path)
  assert [pathlib.Path(p).name for p in paths] == ["separation_law.png", "train_acc.png"]
  assert all(pathlib.Path(p).stat().st_size > 0 for p in paths)


def test_cli_prints_pass_fail_lines(tmp_path):
  out = tmp_path / "s"
  args = ["run", "separation", "--out", str(out)]
  for kv in ("dataset=digits", "per_class=10", "widths=8", "depth=3", "seeds=1", "steps=10",
             "record=3"):
    args += ["--set", kv]
  res = CliRunner().invoke(cli, args)
  assert res.exit_code == 0, res.output
  lines = [l for l in res.output.splitlines() if l.startswith(("PASS", "FAIL"))]
  assert len(lines) == 3, res.output
  assert any("control at init" in l for l in lines)
  assert (out / "results.nc").exists() and (out / "separation_law.png").exists()
