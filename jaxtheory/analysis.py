"""Reading curves out of a sweep's results: when a metric first reaches a level, where it peaks.

The experiments' signature checks are statements about curve shapes ("test
accuracy reaches 95% five times later than train accuracy reaches 99%", "the
test loss peaks near the interpolation threshold"). These helpers make them
one line each, over any labelled axis (``step``, ``width``, ...).

>>> import xarray as xr
>>> acc = xr.DataArray([0.1, 0.5, 0.99, 1.0], dims="step", coords={"step": [0, 10, 100, 1000]})
>>> first_reached(acc, 0.99)
100.0
>>> peak(np.array([3.0, 2.0, 5.0, 1.0]))
(2, 3.0)
"""

from __future__ import annotations

import numpy as np
import xarray as xr


def first_reached(curve: xr.DataArray, threshold: float, dim: str = "step",
                  below: bool = False) -> float | np.ndarray:
  """The first coordinate along ``dim`` where ``curve >= threshold`` (``<=`` when ``below``).

  Args:
    curve: values along ``dim`` (and possibly other dims, reduced elementwise).
    threshold: the level.
    dim: the axis searched, e.g. ``'step'`` or ``'width'``.
    below: look for the first value at or under the threshold instead.

  Returns:
    The coordinate value as a float (nan where never reached); an array over
    the other dims (in their order) when ``curve`` has more than ``dim``.

  >>> loss = xr.DataArray([[3.0, 1.0, 0.1], [3.0, 2.0, 1.5]], dims=("seed", "step"),
  ...                     coords={"step": [0, 5, 50]})
  >>> first_reached(loss, 1.0, below=True)
  array([ 5., nan])
  """
  c = curve.transpose(..., dim)
  v = np.asarray(c.values, np.float64)
  hit = v <= threshold if below else v >= threshold
  coord = np.asarray(c[dim].values, np.float64)
  out = np.where(hit.any(-1), coord[np.argmax(hit, -1)], np.nan)
  return float(out) if out.ndim == 0 else out


def peak(curve, log: bool = False) -> tuple[int, float]:
  """``(index, prominence)`` of a 1-D curve's most prominent interior peak.

  The prominence of point ``i`` is how far it rises above the lowest point on
  each side, the smaller of the two: ``min(c[i] - min(c[:i+1]), c[i] - min(c[i:]))``
  (on ``log10(c)`` when ``log``), so a monotone curve has prominence 0 and a
  double-descent curve the height of its bump. Non-finite points are skipped;
  with no bump the index is that of the largest value.

  >>> peak(np.array([3.0, 2.0, 1.0]))
  (0, 0.0)
  >>> peak(np.array([1.0, 100.0, 10.0]), log=True)
  (1, 1.0)
  """
  c = np.asarray(curve, np.float64)
  if c.ndim != 1:
    raise ValueError(f"peak needs a 1-D curve, got shape {c.shape}")
  with np.errstate(divide="ignore", invalid="ignore"):
    c = np.log10(c) if log else c
  c = np.where(np.isfinite(c), c, np.nan)
  if not np.isfinite(c).any():
    return 0, 0.0
  best, where = 0.0, int(np.nanargmax(c))
  lo_left = np.fmin.accumulate(c)
  lo_right = np.fmin.accumulate(c[::-1])[::-1]
  prom = np.minimum(c - lo_left, c - lo_right)
  if np.nanmax(prom) > 0:
    where = int(np.nanargmax(prom))
    best = float(prom[where])
  return where, best
