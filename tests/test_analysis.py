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
