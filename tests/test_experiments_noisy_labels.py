"""Tests for the noisy-labels experiment: memorization after an early peak, anchoring, clean control."""

import pathlib

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from click.testing import CliRunner

from jaxtheory.cli import cli
from jaxtheory.experiments import EXPERIMENTS, configure
from jaxtheory.experiments import noisy_labels as N
from jaxtheory.errors import ConfigError

# MNIST (CI fetches it), 50 images per class pooled to 14x14, 40% wrong labels, width 128,
# 1500 steps, one seed: plain SGD memorizes the noise and falls from a 76% peak (step 65)
# to 57%; anchoring ends at 73.5% fitting 54% of the noisy labels; clean labels keep 85%.
SMALL = dict(per_class=50, n_test=1000, seeds=1, width=128, steps=1500, record=15)


@pytest.fixture(scope="module")
def small():
  return N.run(N.Config(**SMALL))


def test_registered():
  assert EXPERIMENTS["noisy-labels"] is N


@pytest.mark.parametrize("key,value,message", [
    ("dataset", "cifar10", "unknown dataset 'cifar10'"),
    ("noise", "0", "noise must lie strictly between 0 and 1"),
    ("anchor", "0", "anchor must be positive"),
    ("lr", "-1", "lr must be positive"),
])
def test_bad_config(key, value, message):
  with pytest.raises(ConfigError, match=message):
    N.run(configure(N.Config, {key: value}))


def test_anchor_adds_the_gradient_of_the_distance_to_init():
  p0 = {"w": jnp.array([1.0, -2.0])}
  tx = N.anchor_to_init(0.5)
  state = tx.init(p0)
  p = {"w": jnp.array([3.0, 0.0])}
  g, _ = tx.update({"w": jnp.zeros(2)}, state, p)
  np.testing.assert_allclose(g["w"], 0.5 * (p["w"] - p0["w"]))
  # A full step of the optimizer pulls towards the initial parameters, not towards zero.
  opt = N.anchored_sgd.make(lr=0.1, anchor=1.0, momentum=0.0)
  upd, _ = opt.update({"w": jnp.zeros(2)}, opt.init(p0), p)
  np.testing.assert_allclose(optax.apply_updates(p, upd)["w"], [2.8, -0.2], rtol=1e-6)
  with pytest.raises(ValueError, match="needs the parameters"):
    tx.update({"w": jnp.zeros(2)}, state)


@pytest.mark.slow
def test_noise_is_memorized_after_an_early_peak_anchoring_keeps_it(small):
  assert small.attrs["dataset"] == "mnist"
  checks = N.signature(small)
  assert len(checks) == 3
  assert all(c.passed for c in checks), [c.line() for c in checks]
  c = N.curves(small)
  assert c[(0, 0.4, 0.0)]["peak_step"] < 0.5 * float(small.step[-1])  # an early peak


@pytest.mark.slow
def test_clean_labels_control_fails_the_signature(small):
  clean = N.signature(small.sel(label_noise=[0.0]))
  assert not clean[0].passed, clean[0].line()


@pytest.mark.slow
def test_summary_and_figures(small, tmp_path):
  rows = dict(N.summary(small))
  assert rows["seed=0 noise=0.4 anchor=0"].startswith("test acc peak ")
  paths = N.figures(small, tmp_path)
  assert [pathlib.Path(p).name for p in paths] == ["accuracy_vs_step.png"]
  assert pathlib.Path(paths[0]).stat().st_size > 0


def test_cli_prints_pass_fail_lines(tmp_path):
  out = tmp_path / "n"
  args = ["run", "noisy-labels", "--out", str(out)]
  for kv in ("dataset=digits", "per_class=10", "width=8", "seeds=1", "steps=10", "record=3",
             "batch_size=20"):
    args += ["--set", kv]
  res = CliRunner().invoke(cli, args)
  assert res.exit_code == 0, res.output
  lines = [l for l in res.output.splitlines() if l.startswith(("PASS", "FAIL"))]
  assert len(lines) == 3, res.output
  assert any("control, clean labels" in l for l in lines)
  assert (out / "results.nc").exists() and (out / "accuracy_vs_step.png").exists()
