"""Tests for the spectral-bias experiment: low frequencies first in the NTK's order; Fourier features."""

import pathlib

import jax.numpy as jnp
import numpy as np
import pytest
from click.testing import CliRunner

from jaxtheory.cli import cli
from jaxtheory.experiments import EXPERIMENTS, configure
from jaxtheory.experiments import spectral_bias as SB
from jaxtheory.probes.spectra import fourier_power, radial_power
from jaxtheory.errors import ConfigError

# Frequencies 1, 2, 4 on 64 points, 3 x 64 NTK MLP, 800 steps: halving steps ~[90, 230, 500]
# (NTK regression [13, 50, 127]); a 32-pixel crop, sigma 0 / 1 / 30: test PSNR ~17 / 23 / 9 dB.
SMALL = dict(seeds=2, width=64, depth=3, steps=800, record=30, freqs=(1, 2, 4), n_points=64,
             sigmas=(0.0, 1.0, 30.0), image_size=32, image_width=64, image_depth=2,
             image_steps=300, num_fourier=32)


@pytest.fixture(scope="module")
def small():
  return SB.run(SB.Config(**SMALL))


def test_registered():
  assert EXPERIMENTS["spectral-bias"] is SB


@pytest.mark.parametrize("key,value,message", [
    ("freqs", "1,2", "at least 3 frequencies"),
    ("freqs", "1,2,64", "freqs must be distinct integers"),
    ("momentum", "1", "momentum must lie in"),
    ("image_size", "50", "image_size must be an even divisor of 384"),
    ("sigmas", "1,-1,3", "sigmas must be distinct numbers >= 0"),
    ("seeds", "0", "seeds must be a positive integer"),
])
def test_bad_config(key, value, message):
  with pytest.raises(ConfigError, match=message):
    SB.run(configure(SB.Config, {key: value}))


def test_residual_metric_reads_each_frequency():
  """The recorded metric is the DFT power of f - y at the asked frequencies of the grid."""
  n = 32
  t = jnp.arange(n)[:, None] / n
  y = jnp.sin(2 * jnp.pi * 3 * t)
  apply = lambda p, x: p * jnp.sin(2 * jnp.pi * 5 * x)
  P = SB.residual_power_metric((3, 5, 7))(2.0, apply, {"x_train": t, "y_train": y})
  np.testing.assert_allclose(P, [n ** 2 / 2, 4 * n ** 2 / 2, 0.0], atol=1e-3)
  np.testing.assert_allclose(P, fourier_power(apply(2.0, t) - y)[jnp.array([3, 5, 7])])


def test_kernel_descent_matches_the_dense_recursion():
  """The mode-by-mode heavy ball equals iterating u = b u + K r / n, r -= lr u with the matrix."""
  rng = np.random.default_rng(0)
  n = 16
  A = rng.normal(size=(n, n))
  K = A @ A.T / n
  lam, V = np.linalg.eigh(K)
  y = np.sin(2 * np.pi * 2 * np.arange(n) / n) + 0.3 * np.sin(2 * np.pi * 5 * np.arange(n) / n)
  got = SB.kernel_descent_power(lam, V, y, (2, 5), 0.3, 0.9, np.array([0, 7, 40]))
  r, u, want = -y.copy(), np.zeros(n), []
  for step in range(41):
    if step in (0, 7, 40):
      want.append(np.asarray(fourier_power(jnp.asarray(r[:, None])))[[2, 5]])
    u = 0.9 * u + K @ r / n
    r = r - 0.3 * u
  np.testing.assert_allclose(got, np.stack(want), rtol=1e-4, atol=1e-8)


def test_order_reading():
  f = np.array([1, 2, 4, 8])
  assert SB.rises([10, 30, 90, 400], f, 1000)
  assert not SB.rises([10, 10, 10, 10], f, 1000)           # no order (flat kernel)
  assert not SB.rises([400, 90, 30, 10], f, 1000)          # high frequencies first
  assert not SB.rises([np.nan] * 4, f, 1000)               # nothing halved (a run at init)
  assert SB.rises([10, 30, 90, np.nan], f, 1000)           # the highest not within budget


def test_radial_power_sees_blur():
  img = np.asarray(SB.load_image(32))
  assert img.shape == (32, 32) and 0 <= img.min() and img.max() <= 1
  blurred = (img + np.roll(img, 1, 0) + np.roll(img, 1, 1) + np.roll(img, (1, 1), (0, 1))) / 4
  P, Pb = np.asarray(radial_power(img)), np.asarray(radial_power(blurred))
  np.testing.assert_allclose(P.sum(), np.sum(np.abs(np.fft.fft2(img - img.mean())) ** 2),
                             rtol=0.2)  # corners beyond the last ring are left out
  assert Pb[8:].sum() < 0.6 * P[8:].sum()


@pytest.mark.slow
def test_signature_and_controls(small):
  checks = SB.signature(small)
  assert len(checks) == 6
  assert all(c.passed for c in checks), [c.line() for c in checks]
  h = small.halving.values
  assert np.all(np.diff(h, axis=-1) > 0)
  assert np.all(np.diff(small.kernel_halving.values) > 0)
  # the flat kernel (the cause removed) and the runs at init fail the spectral-bias reading
  freqs, budget = small.freq.values, float(small.step[-1])
  assert not SB.rises(small.flat_halving.values, freqs, budget)
  at_init = SB.halving_steps(small.residual_power.isel(step=[0]))
  assert not any(SB.rises(at_init.sel(seed=s).values, freqs, budget) for s in small.seed)
  flat = small.assign(halving=small.flat_halving.expand_dims(seed=small.seed))
  assert not SB.signature(flat)[0].passed
  # sigma -> 0: the plain MLP blurs and tests worse than the intermediate sigma
  psnr = small.image_test_psnr.mean("seed")
  assert float(psnr.sel(sigma=1.0)) > float(psnr.sel(sigma=0.0)) + 2
  assert float(psnr.sel(sigma=1.0)) > float(psnr.sel(sigma=30.0)) + 5
  kept = small.image_hf_kept.mean("seed")
  assert float(kept.sel(sigma=0.0)) < 0.8 * float(kept.sel(sigma=1.0))


@pytest.mark.slow
def test_summary_and_figures(small, tmp_path):
  rows = dict(SB.summary(small))
  assert rows["frequencies"] == "1, 2, 4"
  assert rows["seed=0 halving steps"].startswith("[")
  assert "PSNR" in rows["sigma=1"]
  paths = SB.figures(small, tmp_path)
  assert [pathlib.Path(p).name for p in paths] == ["spectral_bias.png", "coordinate_network.png"]
  assert all(pathlib.Path(p).stat().st_size > 0 for p in paths)


def test_cli_prints_pass_fail_lines(tmp_path):
  out = tmp_path / "s"
  args = ["run", "spectral-bias", "--out", str(out)]
  for kv in ("seeds=1", "width=16", "depth=2", "steps=20", "record=5", "n_points=32",
             "image_steps=0"):
    args += ["--set", kv]
  res = CliRunner().invoke(cli, args)
  assert res.exit_code == 0, res.output
  lines = [l for l in res.output.splitlines() if l.startswith(("PASS", "FAIL"))]
  assert len(lines) == 4, res.output
  assert any("flat kernel" in l for l in lines)
  assert (out / "results.nc").exists() and (out / "spectral_bias.png").exists()
