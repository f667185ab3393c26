"""Curve readers: first crossing over any axis, peak prominence."""


import numpy as np
import pytest
import xarray as xr

from jaxtheory.analysis import first_reached, peak


def test_peak_prominence():
  assert peak(np.array([1.0, 2.0, 3.0]))[1] == 0.0  # monotone: no peak
  assert peak(np.array([4.0, 2.0, 9.0, 5.0, 1.0])) == (2, 7.0)
  i, prom = peak(np.array([1.0, 100.0, 10.0]), log=True)
  assert i == 1 and prom == pytest.approx(1.0)
  # Non-finite points are skipped, not read as peaks.
  assert peak(np.array([5.0, np.nan, 1.0, np.inf, 3.0, 0.5])) == (4, 2.0)
  assert peak(np.array([np.nan, np.nan])) == (0, 0.0)
  with pytest.raises(ValueError, match="1-D"):
    peak(np.ones((2, 2)))


def test_peak_matches_the_definition_on_random_curves():
  rng = np.random.default_rng(0)
  for _ in range(50):
    c = rng.random(int(rng.integers(1, 12)))
    prom = [min(c[i] - c[:i + 1].min(), c[i] - c[i:].min()) for i in range(len(c))]
    i, p = peak(c)
    assert p == pytest.approx(max(prom))
    if max(prom) > 0:
      assert prom[i] == pytest.approx(max(prom))


def test_first_reached_over_any_axis_and_batch():
  acc = xr.DataArray([[0.2, 0.99, 1.0], [0.1, 0.5, 0.9]], dims=("seed", "width"),
                     coords={"width": [8, 16, 32]})
  np.testing.assert_array_equal(first_reached(acc, 0.99, dim="width"), [16.0, np.nan])
  assert first_reached(acc.isel(seed=0), 1.0, dim="width") == 32.0
  # The searched axis need not come last; other dims keep their order.
  np.testing.assert_array_equal(first_reached(acc.T, 0.99, dim="width"), [16.0, np.nan])
  loss = xr.DataArray([3.0, 1.0, 2.0, 0.5], dims="step", coords={"step": [0, 1, 10, 100]})
  assert first_reached(loss, 1.0, below=True) == 1.0
  assert np.isnan(first_reached(loss, 0.1, below=True))


def test_optimization_status_names_each_failure():
  from jaxtheory.analysis import optimization_status
  assert optimization_status([1.0, 0.5, 0.05]) == "ok"
  assert optimization_status([1.0, 0.5, 0.2]).startswith("not converged: loss 1 -> 0.2")
  assert optimization_status([1.0, 0.5, 0.2], min_drop=None) == "ok"
  assert optimization_status([1.0, 1e-3, 0.5]).startswith("collapsed: loss 0.5 at the end")
  assert optimization_status([1.0, 1e-3, 1e-3], acc=[0.1, 1.0, 0.5]).startswith(
      "collapsed: train accuracy 50.0% at the end, best 100.0%")
  assert optimization_status([1.0, np.inf]) == "diverged: non-finite loss"
  assert optimization_status([1.0, 0.01], diverged=True).startswith("diverged")


def test_failure_detector_fires_on_deliberately_broken_runs():
  """A real sweep: a step size far past stability diverges, a zero one never converges,
  a sound one is left alone."""
  from jaxtheory import data, nn, sweep
  from jaxtheory.analysis import failed_runs
  ds = data.gaussian_mixture(n_train=64, n_test=32, num_classes=3, seed=0)
  s = sweep.Sweep(model=lambda w: nn.mlp(ds.input_shape, w, 1, ds.out_dim), data=ds,
                  grid=dict(seed=[0], width=[16], lr=[0.0, 0.5, 1e4]), optimizer="sgd",
                  steps=300, record=5, loss="mse")
  res = sweep.run(s).isel(width=0, seed=0, drop=True)
  failed = failed_runs(res, acc="train_acc")
  assert set(failed) == {(0.0,), (1e4,)}, failed
  assert failed[0.0,].startswith("not converged")
  assert failed[1e4,].startswith("diverged")


def test_pairwise_rank_correlation():
  from jaxtheory.analysis import pairwise_rank_correlation
  rng = np.random.default_rng(0)
  M = 12
  skill = rng.uniform(size=M)
  pair_skill = np.minimum.outer(skill, skill)
  noise = rng.normal(size=(M, M))
  noise = (noise + noise.T) / 2
  related = pair_skill + 0.05 * noise
  rho, lo, hi = pairwise_rank_correlation(related, pair_skill, resamples=300)
  assert rho > 0.8 and 0 < lo <= rho <= hi
  # Pairs unrelated to the score: the interval covers zero.
  rho, lo, hi = pairwise_rank_correlation(noise, pair_skill, resamples=300)
  assert lo < 0 < hi
  # Exact on a hand example (Spearman of the 3 distinct pairs).
  m = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0]], float)
  assert pairwise_rank_correlation(m, -m, resamples=10)[0] == pytest.approx(-1.0)
  r = pairwise_rank_correlation(np.ones((3, 3)), m, resamples=10)
  assert np.isnan(r).all()
  with pytest.raises(ValueError, match=r"\(M, M\)"):
    pairwise_rank_correlation(np.ones((3, 3)), np.ones((2, 2)))
