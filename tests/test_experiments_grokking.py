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

# Reduced problems, one per model, each a single compiled sweep of seed 0 x weight
# decay {0, 1}. MLP: memorizes by step ~110, groks by ~1300, about 10 s of training.
# Transformer (the default one-block d_model=32 network, no layer norm): memorizes
# by ~160, groks by ~3000 (87% test at 2640, 100% at 3500), about 50 s of training
# on a 2-core CPU.
SMALL = {
    "mlp": {"models": ("mlp",), "p": 41, "train_fraction": 0.45, "mlp_width": 64,
            "embed_dim": 16, "mlp_lr": 1e-2, "weight_decays": (0.0, 1.0), "b2": 0.98,
            "seeds": 1, "steps": 3000, "record": 30, "fourier_k": 4},
    "transformer": {"models": ("transformer",), "p": 31, "train_fraction": 0.5,
                    "transformer_lr": 1e-2, "weight_decays": (0.0, 1.0), "b2": 0.99,
                    "seeds": 1, "steps": 4000, "record": 30, "fourier_k": 4},
}


@pytest.fixture(scope="module", params=list(SMALL))
def small(request):
  return G.run(G.Config(**SMALL[request.param]), progress=lambda *a: None)


def test_registered():
  assert EXPERIMENTS["grokking"] is G


@pytest.mark.parametrize("model", G.MODELS)
def test_token_embedding_is_found_in_either_model(model):
  cfg = G.Config(p=7, mlp_width=8, embed_dim=4, d_model=8, num_heads=2)
  net = G._model(cfg, model, 8)
  params = jax.eval_shape(net.init, jax.random.key(0))  # shapes only: no compilation
  E = G.token_embedding(params, cfg.p + 1)
  assert E.shape == (cfg.p + 1, 8 if model == "transformer" else cfg.embed_dim)
  x = jax.ShapeDtypeStruct((1, 3), jnp.int32)
  assert jax.eval_shape(net.apply, params, x).shape == (1, cfg.p)
  with pytest.raises(ValueError, match="no embedding table with 99 rows"):
    G.token_embedding(params, 99)


def test_models_parse_from_the_command_line():
  assert configure(G.Config, {"models": "mlp"}).models == ("mlp",)
  assert configure(G.Config, {"models": "mlp,transformer"}).models == G.MODELS
  assert G.Config().models == G.MODELS


@pytest.mark.parametrize("key,value,message", [
    ("models", "cnn", "unknown model 'cnn'; available: mlp, transformer"),
    ("models", "", "models is empty; give at least one of mlp, transformer"),
    ("models", "mlp,mlp", "models repeat: mlp, mlp"),
    ("weight_decays", "-1", "weight decays must be >= 0"),
    ("weight_decays", "", "weight_decays is empty"),
    ("seeds", "0", "seeds must be a positive integer, got 0"),
    ("d_model", "30", "the transformer's d_model 30 must be a multiple of num_heads 4"),
    ("transformer_lr", "0", "transformer_lr must be > 0, got 0.0"),
])
def test_bad_config(key, value, message):
  with pytest.raises(ConfigError, match=message):
    G.run(configure(G.Config, {key: value}))


@pytest.mark.slow
def test_weight_decay_groks_and_the_control_does_not(small):
  model = str(small.model.values[0])
  assert small.test_acc.dims == ("model", "seed", "weight_decay", "step")
  checks = {c.name: c for c in G.signature(small)}
  assert len(checks) == 3
  assert all(c.passed for c in checks.values()), [c.line() for c in checks.values()]
  times = G.grokking_times(small)
  t_train, t_test = times[model, 1.0]
  assert t_test >= 5 * t_train
  # The control: memorizes, never generalizes.
  assert np.isfinite(times[model, 0.0][0]) and np.isnan(times[model, 0.0][1])
  assert float(small.test_acc.sel(weight_decay=0.0).max()) < 0.5
  # The progress measure rises more where it groks.
  final = small.fourier_sparsity.isel(step=-1).mean("seed").sel(model=model)
  assert float(final.sel(weight_decay=1.0)) > 1.5 * float(final.sel(weight_decay=0.0))


@pytest.mark.slow
def test_signature_fails_without_weight_decay_in_the_grid(small):
  model = str(small.model.values[0])
  control = small.sel(weight_decay=[0.0])
  lines = [c.line() for c in G.signature(control)]
  assert f"FAIL  {model} groks with weight decay: no weight_decay > 0 run in the grid" in lines
  # The cause removed: the run without weight decay, labelled as if it had some, fails
  # the grokking check (it memorizes and never generalizes).
  relabelled = control.assign_coords(weight_decay=[1.0])
  groks = [c for c in G.signature(relabelled) if "groks:" in c.name]
  assert len(groks) == 1 and not groks[0].passed, groks
  assert "test 95% at step nan" in groks[0].measured
  only_wd = small.sel(weight_decay=[1.0])
  lines = [c.line() for c in G.signature(only_wd)]
  assert (f"FAIL  {model} control weight_decay=0 memorizes without grokking: "
          "no weight_decay=0 run in the grid") in lines


@pytest.mark.slow
def test_summary_and_figures(small, tmp_path):
  model = str(small.model.values[0])
  rows = dict(G.summary(small))
  assert rows[f"{model} weight_decay=1"].startswith("acc 100.0% / ")
  paths = G.figures(small, tmp_path)
  assert [pathlib.Path(p).name for p in paths] == ["accuracy_by_weight_decay.png",
                                                    "fourier_sparsity.png"]
  assert all(pathlib.Path(p).stat().st_size > 0 for p in paths)


def test_cli_runs_both_models(tmp_path):
  out = tmp_path / "g"
  res = CliRunner().invoke(cli, ["run", "grokking", "--out", str(out), "--set", "p=11",
                               "--set", "mlp_width=8", "--set", "embed_dim=4",
                               "--set", "d_model=8", "--set", "num_heads=2",
                               "--set", "seeds=1", "--set", "steps=20", "--set", "record=4"])
  assert res.exit_code == 0, res.output
  lines = [l for l in res.output.splitlines() if l.startswith(("PASS", "FAIL"))]
  assert len(lines) == 6, res.output
  for model in G.MODELS:
    assert any(f"{model} control weight_decay=0" in l for l in lines)
  assert (out / "results.nc").exists() and (out / "accuracy_by_weight_decay.png").exists()
