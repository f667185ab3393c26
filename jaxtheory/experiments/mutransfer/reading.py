"""Reading muTransfer's results: best learning rates, their drift, the coordinate check, the signature, the figures."""

from __future__ import annotations

import os

import numpy as np
import xarray as xr

from jaxtheory import plots, probes
from jaxtheory.analysis import drift_exponent, smoothed_argmin, transfer_cost, wider_is_better
from jaxtheory.experiments.check import Check, skip, timing_rows
from jaxtheory.experiments.mutransfer.train import TAIL


def _geomean(x: xr.DataArray, dim: str) -> xr.DataArray:
  """Geometric mean over ``dim``; a loss of exactly 0 gives 0 (without numpy's log(0) warning)."""
  with np.errstate(divide="ignore"):
    return np.exp(np.log(x).mean(dim))


def _trained_along(ds: xr.Dataset, model: str, dim: str) -> np.ndarray:
  """The values of ``dim`` at which one model has runs (the axis is the union of the models')."""
  loss = ds.train_loss.sel(model=model)
  seen = loss.notnull().any([k for k in loss.dims if k != dim])
  return ds[dim].values[seen.values]


def widths_of(ds: xr.Dataset, model: str) -> np.ndarray:
  """The widths one model trained at (models may train at different widths)."""
  return _trained_along(ds, model, "width")


def seeds_of(ds: xr.Dataset, model: str) -> np.ndarray:
  """The seeds one model trained at (models may train at different seeds)."""
  return _trained_along(ds, model, "seed")


def settings_of(ds: xr.Dataset, model: str) -> list[str]:
  """The settings one model trained (a model may skip some, e.g. Muon: ``muon_models``)."""
  return [str(s) for s in _trained_along(ds, model, "setting")]


def _several_widths(ds: xr.Dataset) -> bool:
  """Whether some model trained at more than one width (a width exponent can be fitted)."""
  return any(len(widths_of(ds, str(m))) > 1 for m in ds.model.values)


def base_width_of(ds: xr.Dataset, model: str) -> int:
  """The width at which a model's muP equals SP, from a run's attributes."""
  bw = np.atleast_1d(ds.attrs.get("base_width", -1))
  return int(bw[list(ds.model.values).index(model)] if len(bw) > 1 else bw[0])


def recorded(ds: xr.Dataset, model: str, setting: str | None = None) -> xr.Dataset:
  """The runs of one model at the steps it recorded and the widths and seeds it trained at
  (models may train for different steps, at different widths and seeds); with ``setting``,
  that setting's runs at the steps it recorded (optimizers may train for different steps)."""
  d = ds.sel(model=model, width=widths_of(ds, model), seed=seeds_of(ds, model))
  return _own_steps(d if setting is None else d.sel(setting=setting))


def _own_steps(d: xr.Dataset) -> xr.Dataset:
  """``d`` at the steps some of its runs recorded (the ``step`` axis is the union over models
  and settings)."""
  seen = d.train_loss.notnull().any([k for k in d.train_loss.dims if k != "step"])
  return d.isel(step=np.flatnonzero(seen.values))


def final_loss(ds: xr.Dataset) -> xr.DataArray:
  """Each run's smoothed final training loss; ``inf`` where it diverged.

  The geometric mean of the records in the last ``TAIL`` (20%) of each
  model's and setting's training, over dims ``(..., seed, width, lr_k)``.
  """
  kw = dict(coords="different", compat="equals", join="outer")
  if "model" in ds.dims:
    return xr.concat([final_loss(recorded(ds, m)) for m in ds.model.values], dim="model", **kw)
  if "setting" in ds.dims:
    runs = [_own_steps(ds.sel(setting=s)) for s in ds.setting.values]
    return xr.concat([final_loss(r) for r in runs if r.sizes["step"]],  # untrained: NaN
                     dim="setting", **kw)
  steps = ds.step.values
  tail = ds.train_loss.sel(step=steps[steps >= (1 - TAIL) * steps.max()])
  loss = _geomean(tail, "step")
  bad = ds.diverged.isel(step=-1).astype(bool) | ~np.isfinite(loss)
  return loss.where(~bad, np.inf)


SMOOTH = 2 / 3  # octaves on either side over which a loss-vs-lr curve is averaged


def per_octave(ds: xr.Dataset) -> int:
  """Learning rates per octave: the run's ``per_octave``, else read from the spacing of ``log2_lr``."""
  if "per_octave" in ds.attrs:
    return int(ds.attrs["per_octave"])
  step = np.nanmin(np.diff(np.asarray(ds.log2_lr).reshape(-1, ds.sizes["lr_k"]), axis=-1))
  return max(1, int(round(1 / step)))


def smoothing(ds: xr.Dataset) -> int:
  """Grid points on either side averaged when reading the best learning rate (``SMOOTH`` octaves)."""
  return max(1, int(round(SMOOTH * per_octave(ds))))


def best_lr(ds: xr.Dataset, loss: xr.DataArray | None = None) -> xr.DataArray:
  """Index ``k`` of the best learning rate per (model, setting, width).

  The argmin over the grid of the seed-mean final loss (the mean over seeds
  in log space), averaged in log over :data:`SMOOTH` (2/3) of an octave on
  either side (5 grid points at 3 per octave; at least 3): a single noisy
  point or a flat basin does not decide, and a learning rate next to one
  that diverged does not count as best. NaN where every window diverged.
  Measured on the defaults and a held-out run: without the averaging, one
  width of one muP setting per run landed 2 grid steps from the others (a
  flat basin: width 256's final loss 0.036-0.049 over 2^-1.33 .. 2^0).
  ``loss``: :func:`final_loss` of ``ds`` if already computed.
  """
  mean = _geomean(final_loss(ds) if loss is None else loss, "seed")
  half = smoothing(ds)
  return xr.apply_ufunc(lambda c: smoothed_argmin(c, half), mean, input_core_dims=[["lr_k"]],
                        vectorize=True)


def transfer(ds: xr.Dataset, tolerance: float = 1.0, level: float = 0.95
             ) -> dict[tuple[str, str], dict]:
  """Per (model, setting): best log2 lr per width, its drift exponent and spread in grid steps.

  ``widths``: the model's widths, which the other entries follow.
  ``shift``: the largest distance, in grid steps, of a width's best learning
  rate from the median over widths (``inf`` if some width has no trainable
  learning rate); ``edge``: a best learning rate whose averaging window
  (:func:`smoothing`) reaches an end of the grid. ``cost``: per width, what
  the best learning rate within ``tolerance`` grid steps of that median costs
  it against its own best, and whether beyond the seeds' noise at ``level``
  (:func:`jaxtheory.analysis.transfer_cost`; None where some width has no
  trainable learning rate).
  """
  loss = final_loss(ds)
  k = best_lr(ds, loss)
  h = smoothing(ds)
  out = {}
  for m in ds.model.values:
    widths, seeds = widths_of(ds, str(m)), seeds_of(ds, str(m))
    for s in settings_of(ds, str(m)):
      idx = k.sel(model=m, setting=s, width=widths).values
      grid = ds.log2_lr.sel(setting=s).values
      n = int(np.isfinite(grid).sum())
      log2 = np.array([grid[int(i)] if np.isfinite(i) else np.nan for i in idx])
      finite = bool(np.isfinite(idx).all())
      shift = float(np.max(_off(idx))) if finite else np.inf
      cost = None
      if finite:
        curves = loss.sel(model=m, setting=s, seed=seeds).isel(lr_k=slice(0, n))
        cost = [transfer_cost(curves.sel(width=w).transpose("seed", "lr_k").values, int(i),
                              float(np.median(idx)), h, tolerance, level)
                for w, i in zip(widths, idx)]
      out[(str(m), str(s))] = dict(
          index=idx, log2=log2, exponent=drift_exponent(log2, widths), shift=shift,
          edge=bool(np.any((idx <= h) | (idx >= n - 1 - h))), lr_k=idx, widths=widths,
          cost=cost)
  return out


def stable_lr(ds: xr.Dataset, model: str, setting: str, t: dict | None = None) -> float:
  """Index of the learning rate at which widths are compared: an octave below the best.

  The median over widths of the best learning rate of the setting's muP twin
  (of the setting itself where it has none), minus one octave (``per_octave``
  grid steps; not below the grid's first), NaN where no learning rate trains.
  The best learning rate trains at the edge of stability, where the loss
  spikes at steps that vary with the width and the seed (measured: full-batch
  SGD on digits at the best lr jumps 2-6x between records); an octave below,
  the loss falls smoothly and the comparison between widths is one of their
  trajectories, not of the timing of their spikes. ``t``: :func:`transfer` of
  ``ds`` if already computed.
  """
  t = transfer(ds) if t is None else t
  opt = setting.partition("-")[2]
  idx = t.get((model, f"mup-{opt}"), t[(model, setting)])["index"]
  if not np.isfinite(idx).all():
    return float("nan")
  return float(max(int(np.median(idx)) - per_octave(ds), 0))


def coord_widths(ds: xr.Dataset, model: str) -> np.ndarray:
  """The widths the coordinate check fits its exponents over: the model's widths but the
  narrowest where it has at least three (muP's promise is about the limit of large width; the
  narrowest, the base width by default, carries the largest finite-width part)."""
  ws = widths_of(ds, model)
  return ws[1:] if len(ws) >= 3 else ws


def coord_step(ds: xr.Dataset, model: str, setting: str | None = None) -> int:
  """The step at which the coordinate check reads one model (one setting of it): the run's
  ``coord_steps``, or the last step where that is none (stored as -1; results without it:
  step 3)."""
  k = int(ds.attrs.get("coord_steps", 3))
  return int(recorded(ds, model, setting).step.max()) if k < 0 else k


def coord_exponents(ds: xr.Dataset, var: str = "coord_change", stderr: bool = False,
                    t: dict | None = None):
  """Width exponent of each layer's coordinate size at each model's steps up to :func:`coord_step`.

  ``var``: ``'coord_change'``, the size of each layer's change from
  initialization (what muP holds width-independent; its steps from 1 on,
  being 0 at step 0), or ``'coord'``, the size of the activations (steps
  from 0). Fitted over :func:`coord_widths` (the model's widths but the
  narrowest, where it has three or more). At each (model, setting) the
  learning rate is :func:`stable_lr` (an octave below muP's best), so SP and
  muP are compared at the same learning rate. NaN at steps a model did not
  record. With ``stderr``, ``(exponents, standard errors over the seeds)``
  (:func:`jaxtheory.probes.coord_exponents`). ``t``: :func:`transfer` of ``ds``, where the
  caller has it.
  """
  t = transfer(ds) if t is None else t
  first = 1 if var == "coord_change" else 0
  out, errs = [], []
  for m in ds.model.values:
    m = str(m)
    rows, row_errs = [], []
    own = settings_of(ds, m)
    for s in ds.setting.values:
      trained = str(s) in own
      steps = [i for i in recorded(ds, m, str(s)).step.values
               if first <= i <= coord_step(ds, m, str(s))] if trained else []
      k = stable_lr(ds, m, str(s), t) if trained else np.nan
      c = ds[var].sel(model=m, setting=s, step=steps, width=coord_widths(ds, m),
                      seed=seeds_of(ds, m))
      if np.isfinite(k) and c.sizes["width"] > 1:
        e, se = probes.coord_exponents(c.isel(lr_k=int(k)).dropna("layer", how="all"),
                                       stderr=True)
      else:
        e = se = xr.full_like(c.isel(lr_k=0, seed=0, width=0), np.nan)
      rows.append(e.reindex(layer=ds.layer.values))
      row_errs.append(se.reindex(layer=ds.layer.values))
    for acc, r in ((out, rows), (errs, row_errs)):
      acc.append(xr.concat(r, dim=ds.setting, coords="different", compat="equals", join="outer"))
  join = lambda a: xr.concat(a, dim=ds.model, coords="different", compat="equals", join="outer")
  return (join(out), join(errs)) if stderr else join(out)


def coord_margin(ds: xr.Dataset, model: str, level: float = 0.95) -> float:
  """Standard errors of a coordinate exponent that count as the seeds' noise: Student's one-sided
  ``t`` quantile at ``level`` with ``widths x (seeds - 1)`` degrees of freedom (0 with one seed)."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  dof = len(coord_widths(ds, model)) * (len(seeds_of(ds, model)) - 1)
  return float(stats.t.ppf(level, dof)) if dof > 0 else 0.0


def _fmt_best(r: dict) -> str:
  return ", ".join(f"{w}: 2^{v:.2f}" if np.isfinite(v) else f"{w}: none"
                   for w, v in zip(r["widths"], r["log2"]))


def _pm(se, digits: int, one_seed: bool) -> str:
  """`` +- se`` to ``digits`` decimals; nothing with one seed (no noise estimate)."""
  return "" if one_seed else f" +- {float(se):.{digits}f}"


def _off(index: np.ndarray) -> np.ndarray:
  """Each width's distance, in grid steps, of its best learning rate from the median best."""
  return np.abs(index - np.median(index))


def transfers(r: dict, tolerance: float = 1.0, max_shift: float = 2.0) -> bool:
  """Whether one setting's best learning rate transfers across widths (an entry of :func:`transfer`).

  Every width's best lies within ``tolerance`` grid steps of the median best
  over widths, or within ``max_shift`` with the best learning rate within
  ``tolerance`` of the median not worse for it beyond the seeds' noise
  (``r["cost"]``). False where some width has no trainable learning rate.
  """
  if r["cost"] is None:
    return False
  return bool(all(d <= tolerance or (d <= max_shift and not c.worse)
                  for d, c in zip(_off(r["index"]), r["cost"])))


def _fmt_cost(r: dict, tolerance: float) -> str:
  """The widths whose best lr lies beyond ``tolerance`` grid steps of the median best, with
  what the best lr within it costs them (seed-mean smoothed log loss, +- its standard error)."""
  if r["cost"] is None:
    return ""
  far = [(w, d, c) for w, d, c in zip(r["widths"], _off(r["index"]), r["cost"]) if d > tolerance]
  if not far:
    return ""
  return "; the median's lr costs " + ", ".join(
      f"width {w} ({d:g} steps off) {c.excess:+.3f}"
      + (f" +- {c.stderr:.3f}" if np.isfinite(c.stderr) else "")
      + (" in log loss, beyond the seeds' noise" if c.worse else " in log loss, within noise")
      for w, d, c in far)


def summary_title(ds: xr.Dataset) -> str:
  """The summary table's title: each model's last step and number of seeds (the
  results' ``step`` and ``seed`` axes are the unions of the models')."""
  def steps(m):
    last = {s: int(recorded(ds, m, s).step[-1]) for s in settings_of(ds, m)}
    if len(set(last.values())) == 1:
      return f"step {next(iter(last.values()))}"
    return "steps " + ", ".join(f"{s} {n}" for s, n in last.items())
  return "; ".join(f"{m} {steps(str(m))}, mean of {len(seeds_of(ds, str(m)))} seed(s)"
                   for m in ds.model.values)


def summary(ds: xr.Dataset) -> list[tuple[str, str]]:
  """Rows ``(label, value)``: per model and setting, the best lr per width and the drift exponent."""
  t = transfer(ds)
  rows = [(f"{m} widths", f"{', '.join(str(w) for w in widths_of(ds, str(m)))} (muP base "
                          f"width {base_width_of(ds, str(m))}); "
                          f"{len(seeds_of(ds, str(m)))} seed(s)")
          for m in ds.model.values]
  ce = coord_exponents(ds, t=t) if "coord_change" in ds else None
  for (m, s), r in t.items():
    n_div = int(recorded(ds, m, s).diverged.isel(step=-1).fillna(0).astype(bool).sum())
    n = int(len(seeds_of(ds, m)) * len(r["widths"]) *
            np.isfinite(ds.log2_lr.sel(setting=s)).sum())
    coord = ("" if ce is None else f"; largest coord exponent of the change from init "
             f"{float(ce.sel(model=m, setting=s, step=coord_step(ds, m, s)).max()):+.2f}")
    rows.append((f"{m} {s}", f"best lr {_fmt_best(r)}; drift exponent "
                             f"{r['exponent']:+.2f}; spread {r['shift']:g} grid steps"
                             f"{' (at the grid edge)' if r['edge'] else ''}; diverged "
                             f"{n_div}/{n}{coord}"))
  rows += timing_rows(ds)
  return rows


def signature(ds: xr.Dataset, tolerance: float = 1.0, max_shift: float = 2.0,
              level: float = 0.95, floor: float = 0.01, coord_flat: float = 0.25
              ) -> list[Check]:
  """The signature checks with their measured numbers, per model and optimizer.

  * muP transfers (:func:`transfers`): every width's best learning rate lies
    within ``tolerance`` grid steps of the median best over widths, or
    within ``max_shift`` and the best learning rate within ``tolerance`` of
    the median is not worse for it beyond the seeds' noise (a paired t-test
    at ``level`` on the smoothed log loss,
    :func:`jaxtheory.analysis.transfer_cost`). Near the best the loss-vs-lr
    curve is flat and its argmin moves with the seeds: measured on the
    transformer under muP-Adam (seeds 41-44, data seed 8), width 48's argmin
    lay 2 grid steps from the median while its loss one step away was worse
    by only +0.014 in log loss, with a standard error of 0.10.
  * control, SP drifts: the same check fails under SP (the drift exponent is
    printed; for Adam about -1). Measured: SP's spreads are 5 to 11 grid
    steps.
  * muP, wider is better: at :func:`stable_lr` (an octave below the median
    best learning rate), from the record at which every width is under way
    until some width fits the training set (its loss below ``floor`` times
    the initial loss; past that the losses of a memorized set are noise,
    ~1e-5), the widest width's seed-mean log loss averaged over those
    records is lower than the narrowest's beyond the seeds' noise, and no
    width's is higher than the next narrower one's beyond it, neither on
    average nor at any record, t-tests at ``level`` (:func:`wider_is_better`).
    Monotone, not every width step significant: under muP the widths approach
    their limit, so the gain per width step shrinks (measured on the default,
    per width step: the MLP -0.90 then -0.54 under Adam, the transformer
    under SGD -0.22 then -0.14) and the widest pair's is the least certain.
  * coordinate check at :func:`stable_lr` at :func:`coord_step` (the end of
    each model's training by default), judged on each layer's *change from
    initialization* ``h_t - h_0`` (its mean absolute coordinate,
    ``coord_change``), its width exponent fitted over :func:`coord_widths`
    (the widths but the narrowest): under muP no layer's exponent lies
    further than ``coord_flat`` from 0 beyond the seeds' noise; the control,
    under SP some layer's exponent lies above it beyond the noise (the same
    check fails by growth). Beyond the noise:
    by more than :func:`coord_margin` (the one-sided t quantile at ``level``)
    times the exponent's standard error over the seeds. Measured over 18
    saved runs: muP's largest |exponent| 0.09-0.26 with standard errors
    0.01-0.18 (systematic at these widths: the MLP's readout change under
    muP-Adam is -0.19 +- 0.04 at widths 64-256), SP's largest +0.91 to +4.5.
    That change is what muP promises to keep width-independent (Tensor
    Programs IV/V: every layer's features move by Theta(1) per coordinate
    after any fixed number of steps, none blows up, none vanishes), and what
    SP lets grow with the width at a fixed learning rate. The promise is a
    limit in the width: the narrowest width (the base width) carries the
    largest finite-width part, hence left out of the fit; and in the middle of
    training, while the loss falls fastest, a small width-dependent delay
    reads as a large exponent (measured on the transformer under SGD over
    widths 12-192: -0.2 to -0.6 at steps 1-5, +0.3 to +0.5 in the embeddings
    at steps 20-30; between widths 96 and 192 alone still +0.28 to +0.38 at
    step 20), while at the end the wider widths have settled (see the module
    doc). The activations themselves are not a width-independent quantity
    under muP for every layer: muP starts the readout small (relative to the
    base width its output scales like ``width^-1/2`` at init), so the output's
    size is ``|f_0 + Delta f|`` and its exponent stays negative while ``f_0``
    still counts. The line also prints the activations' size exponents
    (``coord``), not judged.

  Muon (``sp-muon``) is reported in :func:`summary`, without a check.
  """
  t = transfer(ds, tolerance, level)
  checks = []
  one_lr = ds.sizes["lr_k"] < 2
  ce, ce_err = (coord_exponents(ds, stderr=True, t=t)
                if _several_widths(ds) and "coord_change" in ds else (None, None))
  ce_size = coord_exponents(ds, "coord", t=t) if ce is not None else None
  for m in ds.model.values:
    m = str(m)
    widths = widths_of(ds, m)
    one_width = len(widths) < 2
    one_seed = len(seeds_of(ds, m)) < 2
    for opt in ("adam", "sgd"):
      mu, sp = t.get((m, f"mup-{opt}")), t.get((m, f"sp-{opt}"))
      name = f"{m} {opt}"
      if mu is not None:
        title = (f"{name}: under muP the best lr transfers (every width's best within "
                 f"{tolerance:g} grid step of the median best, or within {max_shift:g} and the "
                 f"best lr within {tolerance:g} step not worse for it beyond the seeds' noise, "
                 f"paired t-test at {level:.0%})")
        if one_width or one_lr:
          checks.append(skip(title, "needs at least two widths and two learning rates"))
        else:
          checks.append(Check(title, transfers(mu, tolerance, max_shift),
                              f"best lr {_fmt_best(mu)}; spread {mu['shift']:g} steps; "
                              f"drift exponent {mu['exponent']:+.2f}"
                              f"{'; at the grid edge' if mu['edge'] else ''}"
                              f"{_fmt_cost(mu, tolerance)}"))
        title = (f"{name}: under muP at a fixed lr wider is better (an octave below the best lr, "
                 f"from the step every width is under way until one fits: the widest's mean log "
                 f"loss lower than the narrowest's beyond the seeds' noise, no width's higher than "
                 f"the next narrower's beyond it, on average or at any step, t-tests at "
                 f"{level:.0%})")
        k = stable_lr(ds, m, f"mup-{opt}", t)
        if one_width or not np.isfinite(k):
          checks.append(skip(title, "needs at least two widths and a trainable learning rate"))
        else:
          run_ = recorded(ds, m, f"mup-{opt}").isel(lr_k=int(k))
          steps = run_.step.values
          curves = run_.train_loss.where(~run_.diverged.astype(bool), np.inf)
          w = wider_is_better(curves.transpose("seed", "width", "step").values, steps,
                              floor=floor, level=level)
          ok, judged, mean = w.ok, w.steps, w.mean
          grid = ds.log2_lr.sel(setting=f"mup-{opt}").values
          best = float(np.median(mu["index"]))
          lr_text = (f"at lr 2^{float(grid[int(k)]):.2f} ({(best - k) / per_octave(ds):.2f} "
                     f"octaves below the median best)")
          if ok is None:
            checks.append(skip(title, f"{lr_text} no step between leaving the initial plateau "
                                      f"and fitting the training set"))
          elif not judged:
            checks.append(Check(title, False, f"{lr_text}: a width diverged or never left its "
                                              f"plateau"))
          else:
            at = lambda step: ", ".join(f"{w}: {v:.4g}" for w, v in zip(
                widths, mean[:, list(steps).index(step)]))
            pm = lambda e: _pm(e, 3, one_seed)
            checks.append(Check(title, ok, f"{lr_text}, steps {judged[0]}-{judged[-1]} judged; "
                                f"at step {judged[0]}: {at(judged[0])}; at step {judged[-1]}: "
                                f"{at(judged[-1])}; mean log-loss change widest minus "
                                f"narrowest {w.span:+.3f}{pm(w.span_se)}, per width step "
                                + ", ".join(f"{v:+.3f}{pm(e)}" for v, e in zip(w.diff, w.se))
                                + " (minus the change at init: "
                                + ", ".join(f"{v:+.3f}" for v in w.from_init) + ")"
                                + ("; one seed: no noise to judge against, judged on the "
                                   "means" if one_seed else "")))
      if sp is not None:
        title = f"{name} control: under SP the best lr drifts (the transfer check fails)"
        if one_width or one_lr:
          checks.append(skip(title, "needs at least two widths and two learning rates"))
        else:
          checks.append(Check(title, not transfers(sp, tolerance, max_shift),
                              f"best lr {_fmt_best(sp)}; spread {sp['shift']:g} steps; "
                              f"drift exponent {sp['exponent']:+.2f}"
                              f"{'; at the grid edge' if sp['edge'] else ''}"
                              f"{_fmt_cost(sp, tolerance)}"))
      for par in ("mup", "sp"):
        if (m, f"{par}-{opt}") not in t:
          continue
        title = (f"{name}: coordinate check, change from init flat under muP "
                 f"(no layer's |exponent| above {coord_flat:g} beyond the seeds' noise)"
                 if par == "mup" else
                 f"{name} control: coordinate check, change from init grows under SP "
                 f"(some layer's exponent above {coord_flat:g} beyond the seeds' noise)")
        if one_width:
          checks.append(skip(title, "needs at least two widths"))
          continue
        if ce is None:
          checks.append(skip(title, "the results hold no coord_change (recorded by an older "
                                    "version); run again"))
          continue
        at = coord_step(ds, m, f"{par}-{opt}")
        where = dict(model=m, setting=f"{par}-{opt}", step=at)
        e = ce.sel(where).dropna("layer")
        err, z = ce_err.sel(where).sel(layer=e.layer), coord_margin(ds, m, level)
        margin = z * err.fillna(0)
        size = ce_size.sel(where).dropna("layer")
        ok = bool(len(e) and (np.all(np.abs(e) - margin <= coord_flat) if par == "mup"
                              else np.any(e - margin > coord_flat)))
        cw = coord_widths(ds, m)
        pm = lambda se: _pm(se, 2, one_seed)
        noise = ("one seed: no noise to judge against, judged on the exponents" if one_seed
                 else f"beyond noise: more than {z:.2f} standard errors")
        checks.append(Check(title, ok, f"after {at} steps, widths {cw[0]}-"
                            f"{cw[-1]}, per layer: "
                            + ", ".join(f"{float(v):+.2f}{pm(se)}" for v, se in
                                        zip(e.values, err.values))
                            + f" ({noise}); the activations' size (not judged): "
                            + ", ".join(f"{float(v):+.2f}" for v in size.values)))
  return checks


def figures(ds: xr.Dataset, out_dir: str | os.PathLike) -> list[str]:
  """Loss vs learning rate per width (one panel per model and setting); coordinate checks."""
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  loss = _geomean(final_loss(ds), "seed")
  t = transfer(ds)
  paths = []
  for m in ds.model.values:
    settings = settings_of(ds, str(m))
    fig = plots.agg_figure((3.4 * len(settings), 3.2))
    axes = np.atleast_1d(fig.subplots(1, len(settings), squeeze=False)[0])
    for ax, s in zip(axes, settings):
      x = ds.log2_lr.sel(setting=s).values
      for j, w in enumerate(widths_of(ds, str(m))):
        y = loss.sel(model=m, setting=s, width=w).values
        ax.plot(x, np.where(np.isfinite(y), y, np.nan), "o-", ms=2.5, color=f"C{j}",
                label=f"width {w}")
        b = t[(str(m), str(s))]["log2"][j]
        if np.isfinite(b):
          ax.axvline(b, color=f"C{j}", lw=0.7, ls=":")
      ax.set_yscale("log")
      ax.set_xlabel("log2 learning rate")
      ax.set_title(f"{m} {s}", fontsize="medium")
      ax.grid(alpha=0.3)
    axes[0].set_ylabel("final train loss (seed mean)")
    axes[0].legend(fontsize="x-small")
    path = os.path.join(out_dir, f"mutransfer_{m}.png")
    fig.savefig(path, dpi=110)
    paths.append(path)
  if _several_widths(ds) and "coord_change" in ds:
    ce = coord_exponents(ds)
    fig = plots.agg_figure((4.0 * len(ds.model), 3.2))
    axes = np.atleast_1d(fig.subplots(1, len(ds.model), squeeze=False)[0])
    for ax, m in zip(axes, ds.model.values):
      own = settings_of(ds, str(m))
      for j, s in enumerate(ds.setting.values):
        if str(s) not in own:
          continue
        e = ce.sel(model=m, setting=s).dropna("layer", how="all")
        ax.plot(e.step.values, e.max("layer").values, "o-", color=f"C{j}", label=str(s))
      ax.axhline(0, color="k", lw=0.6)
      ax.set_xlabel("step")
      ax.set_title(f"{m}: largest width exponent of the change from init", fontsize="medium")
      ax.grid(alpha=0.3)
    axes[0].legend(fontsize="x-small")
    path = os.path.join(out_dir, "coord_check.png")
    fig.savefig(path, dpi=110)
    paths.append(path)
  return paths
