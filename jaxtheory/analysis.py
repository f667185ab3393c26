"""Reading curves out of a sweep's results: when a metric first reaches a level, where it peaks.

Also the readings of a width x learning-rate sweep (hyperparameter transfer):
the best point of a loss-vs-lr curve averaged over its neighbours
(:func:`smoothed_argmin`), the drift of the best learning rate with the
width (:func:`drift_exponent`), what a learning rate tuned at another width
costs beyond the seeds' noise (:func:`transfer_cost`), and whether a wider network trains better
beyond the seeds' noise (:func:`wider_is_better`).

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

from typing import NamedTuple

import numpy as np
import xarray as xr


def first_reached(curve: xr.DataArray, threshold: float, dim: str = "step",
                  below: bool = False, interpolate: bool = False) -> float | np.ndarray:
  """The first coordinate along ``dim`` where ``curve >= threshold`` (``<=`` when ``below``).

  Args:
    curve: values along ``dim`` (and possibly other dims, reduced elementwise).
    threshold: the level.
    dim: the axis searched, e.g. ``'step'`` or ``'width'``.
    below: look for the first value at or under the threshold instead.
    interpolate: return the crossing linearly interpolated between the last
      coordinate before it and the first at it, instead of that first
      coordinate (which is only as fine as the recording grid: two curves
      crossing within one recording interval would read as a tie).

  Returns:
    The coordinate value as a float (nan where never reached); an array over
    the other dims (in their order) when ``curve`` has more than ``dim``.

  >>> loss = xr.DataArray([[3.0, 1.0, 0.1], [3.0, 2.0, 1.5]], dims=("seed", "step"),
  ...                     coords={"step": [0, 5, 50]})
  >>> first_reached(loss, 1.0, below=True)
  array([ 5., nan])
  >>> first_reached(loss, 2.0, below=True, interpolate=True)
  array([2.5, 5. ])
  """
  c = curve.transpose(..., dim)
  v = np.asarray(c.values, np.float64)
  hit = v <= threshold if below else v >= threshold
  coord = np.asarray(c[dim].values, np.float64)
  i = np.argmax(hit, -1)
  at = coord[i]
  if interpolate:
    j = np.maximum(i - 1, 0)
    v1 = np.take_along_axis(v, i[..., None], -1)[..., 0]
    v0 = np.take_along_axis(v, j[..., None], -1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
      frac = np.where((i > 0) & (v1 != v0), (threshold - v0) / (v1 - v0), 1.0)
    at = coord[j] + np.clip(frac, 0.0, 1.0) * (coord[i] - coord[j])
  out = np.where(hit.any(-1), at, np.nan)
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


def optimization_status(loss, acc=None, *, diverged: bool = False,
                        min_drop: float | None = 10.0, collapse: float = 10.0,
                        acc_drop: float = 0.2) -> str:
  """Whether one run's training worked: ``'ok'``, or what went wrong, in words.

  A signature check reads a phenomenon from a trained run; a run whose
  training failed shows no phenomenon for a reason that has nothing to do
  with it. Failures, checked in this order:

  * diverged: ``diverged`` (the engine's flag) or a non-finite loss;
  * not converged: the final loss is not ``min_drop`` times below the first
    (``None``: not checked, for runs that are meant to learn slowly);
  * collapsed: the final loss is ``collapse`` times above the lowest loss of
    the run and has given back at least half of its fall on a log scale
    (it ends above the geometric mean of the first and the lowest loss), or
    the final accuracy ``acc_drop`` below the best one (training that fitted
    and then broke down). A loss that fell from 2 to 1e-5 and ends at 2e-4
    (Adam's spikes near a perfect fit) has not broken down.

  Args:
    loss: the training loss along the steps (1-D).
    acc: optional training accuracy along the same steps.
    diverged: the run was flagged as diverged.
    min_drop: how many times the loss must fall from the first recording.
    collapse: how many times above its minimum the final loss may sit.
    acc_drop: how far below its best the final accuracy may sit.

  Returns:
    ``'ok'`` or a short description starting ``'diverged'``, ``'not converged'``
    or ``'collapsed'``.

  >>> optimization_status([1.0, 0.1, 0.01])
  'ok'
  >>> optimization_status([1.0, 0.9, 0.8])
  'not converged: loss 1 -> 0.8 (1.2x lower, needs 10x)'
  >>> optimization_status([1.0, 0.001, 0.5])
  'collapsed: loss 0.5 at the end, 5e+02x its minimum 0.001'
  >>> optimization_status([2.0, 1e-5, 2e-4])
  'ok'
  >>> optimization_status([1.0, np.nan])
  'diverged: non-finite loss'
  """
  c = np.asarray(loss, np.float64).ravel()
  if diverged or not np.isfinite(c).all():
    return "diverged: non-finite loss" if not diverged else "diverged (flagged by the engine)"
  first, last, low = c[0], c[-1], c.min()
  if last > collapse * low and last > 0 and last > np.sqrt(first * low):
    return (f"collapsed: loss {last:.3g} at the end, {last / max(low, 1e-300):.2g}x its "
            f"minimum {low:.3g}")
  if acc is not None:
    a = np.asarray(acc, np.float64).ravel()
    if np.isfinite(a).all() and a.max() - a[-1] > acc_drop:
      return (f"collapsed: train accuracy {100 * a[-1]:.1f}% at the end, best "
              f"{100 * a.max():.1f}%")
  if min_drop is not None and not last * min_drop <= first:
    return (f"not converged: loss {first:.3g} -> {last:.3g} "
            f"({first / last if last > 0 else np.inf:.2g}x lower, needs {min_drop:g}x)")
  return "ok"


def failed_runs(ds: xr.Dataset, loss: str = "train_loss", acc: str | None = None,
                **kw) -> dict[tuple, str]:
  """:func:`optimization_status` of every run of a results dataset, the failed ones only.

  Args:
    ds: results with a ``step`` axis (and ``diverged`` if the engine recorded it).
    loss: the loss variable.
    acc: an accuracy variable, or None.
    **kw: thresholds of :func:`optimization_status`.

  Returns:
    ``{run coordinates (in ``ds[loss]``'s dim order, ``step`` left out): reason}``.

  >>> ds = xr.Dataset({"train_loss": (("seed", "step"), [[1.0, 0.01], [1.0, 0.9]])})
  >>> failed_runs(ds.assign_coords(seed=[3, 4]))
  {(4,): 'not converged: loss 1 -> 0.9 (1.1x lower, needs 10x)'}
  """
  da = ds[loss].transpose(..., "step")
  dims = da.dims[:-1]
  out = {}
  for idx in np.ndindex(*da.shape[:-1]):
    sel = dict(zip(dims, idx))
    key = tuple(v.item() if hasattr(v, "item") else v
                for v in (da[d].values[i] if d in da.coords else i for d, i in sel.items()))
    a = ds[acc].isel(sel).values if acc is not None else None
    div = False
    if "diverged" in ds:
      dv = ds["diverged"]
      dv = dv.isel({d: i for d, i in sel.items() if d in dv.dims})
      div = bool(np.asarray(dv.values).any())
    status = optimization_status(da.isel(sel).values, a, diverged=div, **kw)
    if status != "ok":
      out[key] = status
  return out


class PowerLaw(NamedTuple):
  """A least-squares power law :math:`y = A\\,\\prod_j x_j^{k_j}` fitted in log space.

  Attributes:
    exponents: :math:`k_j`, one per regressor.
    prefactor: :math:`A`.
    r2: coefficient of determination of the fit of :math:`\\log y`.
    n: number of points fitted.
    stderr: the standard error of each exponent, from the residuals
      (:math:`\\hat\\sigma^2 (A^\\top A)^{-1}` with :math:`n - p` degrees of freedom).
  """
  exponents: tuple[float, ...]
  prefactor: float
  r2: float
  n: int
  stderr: tuple[float, ...] = ()


def power_law(y, *xs) -> PowerLaw:
  r"""Fits :math:`\log y = \log A + \sum_j k_j \log x_j` by least squares.

  With one regressor this is the slope of a log-log plot; with several, each
  :math:`k_j` is the exponent at fixed values of the others (e.g. the
  dependence of a weight norm on :math:`\eta/\lambda` at fixed
  :math:`\eta\lambda`). Points with a non-finite or non-positive value are
  left out.

  Args:
    y: positive values (any shape).
    *xs: positive regressors, each broadcastable to ``y``'s shape.

  Returns:
    A :class:`PowerLaw`; NaN exponents when fewer points than parameters + 1
    remain or a regressor does not vary.

  >>> fit = power_law([1.0, 2.0, 4.0], [1.0, 4.0, 16.0])
  >>> round(fit.exponents[0], 6), round(fit.prefactor, 6), round(fit.r2, 6)
  (0.5, 1.0, 1.0)
  """
  y = np.asarray(y, np.float64)
  cols = [np.broadcast_to(np.asarray(x, np.float64), y.shape).ravel() for x in xs]
  y = y.ravel()
  ok = np.isfinite(y) & (y > 0)
  for c in cols:
    ok &= np.isfinite(c) & (c > 0)
  nan = PowerLaw(tuple(np.nan for _ in xs), np.nan, np.nan, int(ok.sum()), tuple(np.nan for _ in xs))
  if ok.sum() < len(xs) + 2:
    return nan
  ly = np.log(y[ok])
  A = np.stack([np.log(c[ok]) for c in cols] + [np.ones(ok.sum())], axis=1)
  if np.linalg.matrix_rank(A) < A.shape[1]:
    return nan
  coef, *_ = np.linalg.lstsq(A, ly, rcond=None)
  resid = ly - A @ coef
  var = np.sum((ly - ly.mean()) ** 2)
  r2 = 1.0 - np.sum(resid ** 2) / var if var > 0 else np.nan
  cov = np.sum(resid ** 2) / (len(ly) - A.shape[1]) * np.linalg.inv(A.T @ A)
  return PowerLaw(tuple(float(c) for c in coef[:-1]), float(np.exp(coef[-1])), float(r2),
                  int(ok.sum()), tuple(float(np.sqrt(v)) for v in np.diag(cov)[:-1]))


def growth_exponent(curve, steps, stderr: bool = False):
  r"""The log-log slope :math:`d\log y / d\log t` of a positive curve (least squares).

  0 for a stationary curve, 1/2 for one that grows like :math:`\sqrt t`.
  Steps :math:`\le 0` are left out. With ``stderr``, ``(slope, standard
  error)``: how far the curve's own fluctuations leave the slope uncertain.

  >>> round(growth_exponent([1.0, 2.0, 3.0], [1.0, 4.0, 9.0]), 6)
  0.5
  """
  t = np.asarray(steps, np.float64)
  y = np.asarray(curve, np.float64)
  f = power_law(y[t > 0], t[t > 0])
  return (float(f.exponents[0]), float(f.stderr[0])) if stderr else float(f.exponents[0])


def pairwise_rank_correlation(matrix, score, *, resamples: int = 1000, level: float = 0.95,
                              seed: int = 0) -> tuple[float, float, float]:
  r"""Spearman's rank correlation of a pairwise quantity with a per-pair score, and its interval.

  ``matrix[a, b]`` is a property of the pair of items ``a != b`` (e.g. the
  alignment of two networks' representations) and ``score[a, b]`` the
  quantity it is ranked against (e.g. the lower of the two networks'
  accuracies). Spearman's :math:`\rho` is taken over the distinct pairs
  ``a < b``. The pairs share items, so they are not independent draws: the
  interval is a percentile bootstrap over *items* (resample the items with
  replacement, keep the pairs of two distinct draws of distinct items,
  recompute :math:`\rho`), which carries the dependence between the pairs
  of one item (as in bootstraps of dyadic data, e.g. Davison & Hinkley 1997,
  Ch. 3.8).

  Args:
    matrix: ``(M, M)`` pairwise values (only ``a < b`` is read).
    score: ``(M, M)`` pairwise scores.
    resamples: bootstrap resamples.
    level: the interval's coverage.
    seed: seed of the resampling.

  Returns:
    ``(rho, low, high)``; NaN where fewer than three pairs or a constant
    variable leave :math:`\rho` undefined (resamples where it is undefined are
    dropped).

  >>> m = np.array([[1, .2, .3], [.2, 1, .5], [.3, .5, 1]])
  >>> pairwise_rank_correlation(m, m, resamples=20)[0]
  1.0
  """
  from scipy import stats  # pylint: disable=import-outside-toplevel

  matrix, score = np.asarray(matrix, np.float64), np.asarray(score, np.float64)
  M = matrix.shape[0]
  if matrix.shape != (M, M) or score.shape != (M, M):
    raise ValueError(f"matrix and score must both be (M, M), got {matrix.shape} and {score.shape}")

  def rho(items):
    a, b = np.triu_indices(len(items), 1)
    a, b = items[a], items[b]
    keep = a != b
    x, y = matrix[a[keep], b[keep]], score[a[keep], b[keep]]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
      return np.nan
    return float(stats.spearmanr(x, y).statistic)

  r = rho(np.arange(M))
  rng = np.random.default_rng(seed)
  boot = np.array([rho(rng.integers(0, M, M)) for _ in range(resamples)])
  boot = boot[np.isfinite(boot)]
  if not np.isfinite(r) or boot.size == 0:
    return r, np.nan, np.nan
  lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
  return r, float(lo), float(hi)


def _smoothed_log(curve: np.ndarray, half: int) -> np.ndarray:
  """Running mean of ``log(curve)`` over ``2 half + 1`` points along the last axis; ``inf``
  where a window holds a diverged point (``inf``) or is cut by an end of the grid."""
  curve = np.asarray(curve, np.float64)
  with np.errstate(divide="ignore"):
    logs = np.log(np.where(np.isfinite(curve), curve, np.inf))
  if not half:
    return logs
  n = logs.shape[-1]
  out = np.full_like(logs, np.inf)
  for i in range(half, n - half):  # only full windows: a cut one would average fewer points
    out[..., i] = logs[..., i - half:i + half + 1].mean(-1)
  return out


def smoothed_argmin(curve: np.ndarray, half: int = 0) -> float:
  """Index of the minimum of a loss-vs-lr curve after a running mean of its log over ``2 half + 1`` points.

  Only windows inside the grid count (the best is at least ``half`` points
  from either end); a diverged point (``inf``) makes every window that holds
  it ``inf``; NaN if no window trains.

  >>> smoothed_argmin(np.array([4.0, 2.0, 1.1, 1.0, 1.2, 3.0, 9.0]), half=1)
  3.0
  >>> smoothed_argmin(np.array([2.0, 1.0, 1.0, 1.1, 0.9, np.inf]), half=1)  # not 4, by a divergence
  3.0
  """
  logs = _smoothed_log(curve, half)
  if not np.isfinite(logs).any():
    return np.nan
  return float(np.nanargmin(np.where(np.isfinite(logs), logs, np.nan)))


class TransferCost(NamedTuple):
  """What a learning rate chosen elsewhere costs one width (:func:`transfer_cost`)."""
  k: int            # the learning rate used: the best of the seed mean within the tolerance
  excess: float     # seed-mean smoothed log loss there minus at the width's own best
  stderr: float     # its standard error over the seeds (paired: same seed at both)
  worse: bool       # excess beyond the seeds' noise (one-sided t-test)


def transfer_cost(curves: np.ndarray, best: int, target: float, half: int = 0,
                  tolerance: float = 1.0, level: float = 0.95) -> TransferCost:
  r"""Whether using a learning rate near ``target`` instead of a run's own best loses beyond the seeds' noise.

  The question hyperparameter transfer answers in practice: tuned at one
  width (``target``, e.g. the median best over widths), does the learning
  rate serve another width as well as that width's own best? Near the best
  the loss-vs-lr curve is flat and its argmin moves between seeds; a best
  learning rate two grid steps from ``target`` may be a draw of the seeds,
  and this tells the two apart.

  Each seed's curve is smoothed as in :func:`smoothed_argmin`. Among the grid
  points within ``tolerance`` of ``target``, the one with the lowest seed-mean
  smoothed log loss is compared with ``best`` seed by seed (the same seed,
  i.e. the same initialisation and data order, at both learning rates: a
  paired test). It is *worse* when the mean difference exceeds the one-sided
  Student :math:`t` quantile at ``level`` (:math:`n-1` degrees of freedom)
  times its standard error; with one seed, when it is positive; always when
  a seed diverges there and not at ``best``.

  Args:
    curves: final losses ``(seed, lr)`` of one width (``inf``: diverged).
    best: the width's own best index (e.g. :func:`smoothed_argmin` of the seed mean).
    target: the index to transfer from (may be fractional, e.g. a median).
    half: the smoothing half-window, as in :func:`smoothed_argmin`.
    tolerance: grid steps around ``target`` that count as transferring.
    level: the test's level.

  >>> c = np.array([[3.0, 1.0, 1.02, 2.0], [3.0, 1.05, 1.0, 2.0]])  # flat between 1 and 2
  >>> transfer_cost(c, best=1, target=3, tolerance=1).worse  # 2 is within 1 of 3, as good as 1
  False
  >>> transfer_cost(c, best=1, target=3.5, tolerance=0.5).worse  # only 3 counts: 2x the loss
  True
  """
  from scipy import stats  # pylint: disable=import-outside-toplevel
  logs = _smoothed_log(np.atleast_2d(curves), half)  # (seed, lr)
  n = logs.shape[0]
  near = [k for k in range(logs.shape[1]) if abs(k - target) <= tolerance + 1e-9]
  with np.errstate(invalid="ignore"):
    means = [logs[:, k].mean() for k in near]
  k = near[int(np.argmin(means))] if near else int(best)
  with np.errstate(invalid="ignore"):
    d = logs[:, k] - logs[:, int(best)]
  if k == int(best):
    return TransferCost(k, 0.0, 0.0, False)
  if not np.all(np.isfinite(d)):
    return TransferCost(k, float("inf"), float("nan"), True)
  excess = float(d.mean())
  if n < 2:
    return TransferCost(k, excess, float("nan"), excess > 0)
  se = float(d.std(ddof=1) / np.sqrt(n))
  return TransferCost(k, excess, se, bool(excess > stats.t.ppf(level, n - 1) * se))


def drift_exponent(log2_best: np.ndarray, widths: np.ndarray) -> float:
  r"""Least-squares slope of :math:`\log_2 \mathrm{lr}^*` against :math:`\log_2 \mathrm{width}`.

  ``-1``: the best learning rate falls like ``1/width``; ``0``: it transfers.

  >>> round(drift_exponent(np.array([-3.0, -5.0, -7.0]), np.array([16, 64, 256])), 6)
  -1.0
  """
  ok = np.isfinite(log2_best)
  if ok.sum() < 2:
    return float("nan")
  x = np.log2(np.asarray(widths, float))[ok]
  return float(np.polyfit(x, np.asarray(log2_best)[ok], 1)[0])


class WiderIsBetter(NamedTuple):
  """What :func:`wider_is_better` measured (log-loss differences are wider minus narrower)."""
  ok: bool | None
  steps: list  # the judged steps
  mean: np.ndarray  # seed-mean (geometric) curves, (width, step)
  diff: np.ndarray  # mean log-loss change per width pair over the judged records
  se: np.ndarray  # its standard error over the seeds
  from_init: np.ndarray  # ``diff`` minus the same change at initialization
  span: float  # the widest minus the narrowest width's mean log loss over the judged records
  span_se: float  # its standard error


def wider_is_better(curves: np.ndarray, steps: np.ndarray, progress: float = 0.1,
                    floor: float = 0.01, level: float = 0.95) -> WiderIsBetter:
  r"""Whether the training loss falls monotonically with the width, beyond the seeds' noise.

  Judged on :math:`\log` loss, from the first record at which every width's
  seed-mean loss is at least ``progress`` below its initial value (on the
  initial plateau the widths are equal up to noise) until some width fits
  the training set (its loss below ``floor`` times the initial; past that
  the losses of a memorized set are noise). With Student's :math:`t` over
  the seeds (:math:`2(n-1)` degrees of freedom for ``n`` seeds), it passes if

  * the widest width is better than the narrowest: the seed mean of its log
    loss averaged over the judged records is lower, by more than the
    one-sided quantile at ``level`` times the standard error of the
    difference (with one seed: lower);
  * no width is worse than the next narrower one: neither that average
    higher beyond the one-sided quantile times its standard error, nor the
    log loss at any judged record beyond the two-sided quantile times that
    record's standard error (with one seed: neither higher at all).

  Monotone, not every step significant: as the widths approach their limit
  (muP's promise) the gain per width step shrinks, so the widest pair's
  difference is the smallest and the least certain; each pair's change is
  returned with its standard error for the reader.

  A width that diverges, or has not left the plateau when another has fitted,
  fails.

  Args:
    curves: losses ``(seed, width, step)``, widths ascending (``inf``: diverged).
    steps: the recorded steps.

  Returns:
    :class:`WiderIsBetter`; ``ok`` is None when no record can be judged
    (one width, every width fits at once, or none leaves its plateau).

  >>> steps = np.arange(5)
  >>> decay = np.array([0.8, 0.6, 0.59])[:, None]  # per step; the widest pair barely differs
  >>> curves = 2.0 * decay ** steps * np.array([1.0, 1.1])[:, None, None]  # two seeds
  >>> r = wider_is_better(curves, steps)
  >>> bool(r.ok), r.steps, np.round(r.diff, 2).tolist(), round(r.span, 2)
  (True, [1, 2, 3, 4], [-0.72, -0.04], -0.76)
  """
  from scipy import stats  # pylint: disable=import-outside-toplevel
  with np.errstate(divide="ignore", invalid="ignore"):
    logs = np.log(curves)
  mean = np.exp(logs.mean(0))
  empty = np.array([])
  if curves.shape[1] < 2:
    return WiderIsBetter(None, [], mean, empty, empty, empty, np.nan, np.nan)
  init = mean[:, 0]
  under_way = np.all(mean <= (1 - progress) * init[:, None], axis=0)
  fitted = np.any(mean < floor * init.max(), axis=0)
  judged = []
  for j in range(1, len(steps)):
    if fitted[j]:
      break
    if under_way[j] or judged:
      judged.append(j)
  if not judged:
    broken = not np.all(np.isfinite(mean))
    return WiderIsBetter(False if broken else None, [], mean, empty, empty, empty, np.nan, np.nan)
  n = curves.shape[0]
  window = logs[:, :, judged]
  with np.errstate(invalid="ignore"):
    d = np.diff(window.mean(0), axis=0)  # (width pair, record): wider - narrower
    area = window.mean(2)  # (seed, width)
    diff = np.diff(area.mean(0))
    span = float(area[:, -1].mean() - area[:, 0].mean())
    init_gap = np.diff(logs[:, :, 0].mean(0))
    if n > 1:
      var = window.var(0, ddof=1)
      step_bound = stats.t.ppf(0.5 + level / 2, 2 * (n - 1)) * np.sqrt((var[1:] + var[:-1]) / n)
      v = area.var(0, ddof=1)
      se = np.sqrt((v[1:] + v[:-1]) / n)
      span_se = float(np.sqrt((v[-1] + v[0]) / n))
      q = stats.t.ppf(level, 2 * (n - 1))
    else:
      step_bound, se, span_se, q = np.zeros_like(d), np.zeros_like(diff), 0.0, 0.0
  ok = bool(np.all(np.isfinite(d)) and np.all(d <= step_bound) and np.all(diff <= q * se)
            and span < -q * span_se)
  return WiderIsBetter(ok, [int(steps[j]) for j in judged], mean, diff, se, diff - init_gap,
                       span, span_se)
