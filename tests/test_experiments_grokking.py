"""Tests for the grokking experiment: progress measure, signature and its control, the CLI."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from click.testing import CliRunner

from jaxtheory.cli import cli
from jaxtheory.experiments import EXPERIMENTS, configure
from jaxtheory.experiments import grokking as G
from jaxtheory.train import ConfigError

# Memorizes by step ~110 and groks by ~1300: about 10 s of training on a 2-core CPU
# (plus compilation).
SMALL = dict(p=41, train_fraction=0.45, width=64, embed_dim=16, seeds=1, steps=3000, record=30,
             fourier_k=4)


@pytest.fixture(scope="module")
def small():
  return G.run(G.Config(**SMALL))


def test_registered():
  assert EXPERIMENTS["grokking"] is G


@pytest.mark.parametrize("model", ["mlp", "transformer"])
def test_token_embedding_is_found_in_either_model(model):
  cfg = G.Config(p=7, model=model, width=8, embed_dim=4, num_heads=2)
  net = G._model(cfg, cfg.width)
  params = jax.eval_shape(net.init, jax.random.key(0))  # shapes only: no compilation
  E = G.token_embedding(params, cfg.p + 1)
  assert E.shape == (cfg.p + 1, cfg.width if model == "transformer" else cfg.embed_dim)
  x = jax.ShapeDtypeStruct((1, 3), jnp.int32)
  assert jax.eval_shape(net.apply, params, x).shape == (1, cfg.p)
  with pytest.raises(ValueError, match="no embedding table with 99 rows"):
    G.token_embedding(params, 99)


@pytest.mark.parametrize("key,value,message", [
    ("model", "cnn", "unknown model 'cnn'; available: mlp, transformer"),
    ("weight_decays", "-1", "weight decays must be >= 0"),
    ("weight_decays", "", "weight_decays is empty"),
    ("seeds", "0", "seeds must be a positive integer, got 0"),
])
def test_bad_config(key, value, message):
  with pytest.raises(ConfigError, match=message):
    G.run(configure(G.Config, {key: value}))


@pytest.mark.slow
def test_weight_decay_groks_and_the_control_does_not(small):
  checks = {c.name: c for c in G.signature(small)}
  assert all(c.passed for c in checks.values()), [c.line() for c in checks.values()]
  times = G.grokking_times(small)
  t_train, t_test = times[1.0]
  assert t_test >= 5 * t_train
  # The control: memorizes as fast, never generalizes.
  assert np.isfinite(times[0.0][0]) and np.isnan(times[0.0][1])
  assert float(small.test_acc.sel(weight_decay=0.0).max()) < 0.2
  # The progress measure rises only where it groks.
  final = small.fourier_sparsity.isel(step=-1).mean("seed")
  assert float(final.sel(weight_decay=1.0)) > 1.5 * float(final.sel(weight_decay=0.0))


@pytest.mark.slow
def test_signature_fails_without_weight_decay_in_the_grid(small):
  control = small.sel(weight_decay=[0.0])
  assert not any(c.passed for c in G.signature(control) if "control" not in c.name)
  only_wd = small.sel(weight_decay=[1.0])
  lines = [c.line() for c in G.signature(only_wd)]
  assert ("FAIL  control weight_decay=0 memorizes without grokking: "
          "no weight_decay=0 run in the grid") in lines


@pytest.mark.slow
def test_summary_and_figures(small, tmp_path):
  rows = dict(G.summary(small))
  assert rows["weight_decay=1"].startswith("acc 100.0% / ")
  paths = G.figures(small, tmp_path)
  assert [pathlib.Path(p).name for p in paths] == ["accuracy_by_weight_decay.png",
                                                    "fourier_sparsity.png"]
  assert all(pathlib.Path(p).stat().st_size > 0 for p in paths)



def test_cli_prints_pass_fail_lines(tmp_path):
  out = tmp_path / "g"
  res = CliRunner().invoke(cli, ["run", "grokking", "--out", str(out), "--set", "p=11",
                               "--set", "width=8", "--set", "embed_dim=4", "--set", "seeds=1",
                               "--set", "steps=20", "--set", "record=4"])
  assert res.exit_code == 0, res.output
  lines = [l for l in res.output.splitlines() if l.startswith(("PASS", "FAIL"))]
  assert len(lines) == 3, res.output
  assert any("control weight_decay=0" in l for l in lines)
  assert (out / "results.nc").exists() and (out / "accuracy_by_weight_decay.png").exists()

