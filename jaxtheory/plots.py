"""Figures from sweep results (the ``xarray.Dataset`` of :func:`jaxtheory.sweep.run`).

Results have dims ``(seed, width, <swept hyperparameters...>, step)``. Every
figure shows the mean over seeds with the seeds' min-max range (a band around
curves, bars on final values: one convention everywhere). One swept axis
colours the lines (viridis ordered by value, its pale yellow end left out so
every line reads on white); a single-panel function holds every other axis at
its first value and says so in its title, while :func:`default_figures` draws
one panel per value of every other axis, so no swept value is left out.
Diverged runs (NaN/inf, flagged ``diverged``) are left out of the means and
marked: an ``x`` under the final value, ``(k diverged)`` in a curve's legend.

Figures are drawn with matplotlib's Agg canvas, never pyplot, so nothing opens
a window or accumulates in pyplot's global figure list. Pass ``ax`` (e.g. from
``plt.subplots()``) to draw into a figure of your own, such as in a notebook.

>>> import numpy as np, xarray as xr
>>> ds = xr.Dataset({"test_loss": (("seed", "width", "step"), np.ones((2, 3, 4)))},
...                 coords=dict(seed=[0, 1], width=[8, 16, 32], step=[0, 1, 10, 100]))
>>> ax = metric_vs_step(ds, "test_loss")
>>> ax.get_title()
'test loss by width'
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

_REDUCED = ("seed", "step")
_MAX_LEGEND = 8  # more lines than this get a colorbar instead of a legend


def agg_figure(figsize=(6.0, 4.2)) -> Figure:
  """An empty figure on the Agg canvas (no pyplot: nothing opens or accumulates)."""
  fig = Figure(figsize=figsize, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def new_figure(ncols: int = 1, figsize=(6.0, 4.2), **kw):
  """``(fig, axes)``: an Agg figure with ``ncols`` axes side by side."""
  fig = agg_figure(figsize)
  return fig, fig.subplots(1, ncols, **kw)


def _new_ax(figsize=(6.0, 4.2)) -> Axes:
  return agg_figure(figsize).add_subplot()


def _label(name: str) -> str:
  return name.replace("_acc", " accuracy").replace("_", " ")


def _check(ds: xr.Dataset, metric: str, axis: str | None) -> None:
  if metric not in ds.data_vars:
    raise ValueError(f"unknown metric {metric!r}; the results have: {', '.join(ds.data_vars)}")
  if axis is not None and axis not in ds[metric].dims:
    swept = [d for d in ds[metric].dims if d not in _REDUCED]
    raise ValueError(f"{axis!r} is not an axis of the results; axes: {', '.join(swept)}")


def _fix_others(da: xr.DataArray, keep: Sequence[str]) -> tuple[xr.DataArray, str]:
  """Selects the first value of every swept axis not in ``keep``; says which in words."""
  others = [d for d in da.dims if d not in keep and d not in _REDUCED]
  fixed = {d: da[d].values[0] for d in others}
  text = ", ".join(f"{d}={_fmt(v)}" for d, v in fixed.items())
  return da.isel({d: 0 for d in others}), text


def _diverged(ds: xr.Dataset, da: xr.DataArray) -> xr.DataArray:
  """Per run of ``da`` (its step axis reduced), whether it diverged: flagged, or NaN/inf."""
  final = da.isel(step=-1) if "step" in da.dims else da
  bad = ~np.isfinite(final)
  if "diverged" in ds.data_vars:
    flag = ds["diverged"]
    flag = flag.isel(step=-1) if "step" in flag.dims else flag
    flag = flag.sel({d: final[d].values for d in flag.dims if d in final.coords})
    bad = bad | flag.astype(bool).drop_vars([c for c in flag.coords if c not in final.coords])
  return bad


def _colors(values: np.ndarray, cmap: str = "viridis"):
  """Colours ordered by value (log-spaced when the values span a decade or more)."""
  vals = np.asarray(values)
  vals = vals.astype(float) if _numeric(vals) else np.arange(len(vals), dtype=float)
  if np.all(vals > 0) and vals.max() >= 10 * vals.min():
    norm = LogNorm(vals.min(), vals.max())
  else:
    norm = Normalize(vals.min(), vals.max() if vals.max() > vals.min() else vals.min() + 1)
  cm = colormaps[cmap]
  # Stop short of viridis' pale yellow end, which vanishes on white.
  return [cm(_TOP * float(norm(v))) for v in vals], norm, cm


_TOP = 0.85  # the last usable fraction of a colormap on white


def _numeric(values) -> bool:
  return np.issubdtype(np.asarray(values).dtype, np.number)


def _fmt(v) -> str:
  """A short readable number: integers as such, else 3 significant digits (0.0316, 3e-05)."""
  if isinstance(v, (bool, np.bool_)) or not np.issubdtype(type(v), np.number):
    return str(v)
  v = float(v)
  if np.isfinite(v) and v == round(v) and abs(v) < 1e6:
    return str(int(v))
  return f"{v:.3g}"


def _two_five(v, _) -> str:
  """Labels the minor log ticks 2x and 5x a power of ten only (the rest would crowd)."""
  if v <= 0:
    return ""
  return f"{v:g}" if round(v / 10 ** np.floor(np.log10(v))) in (2, 5) else ""


def _legend_or_colorbar(ax: Axes, by: str, values, norm, cm) -> None:
  if len(values) <= _MAX_LEGEND:
    ax.legend(title=by, fontsize="small", title_fontsize="small")
  else:
    ax.figure.colorbar(ScalarMappable(norm=norm, cmap=cm), ax=ax, label=by)


def metric_vs_step(ds: xr.Dataset, metric: str, color_by: str = "width",
                   ax: Axes | None = None, logx: bool = True) -> Axes:
  """One metric against training step: mean over seeds with the seeds' min-max band.

  Args:
    ds: sweep results.
    metric: a data variable, e.g. ``'test_loss'``.
    color_by: the swept axis whose values get one line each.
    ax: axes to draw into; a new Agg figure when ``None``.
    logx: symmetric-log step axis (linear below 1, so step 0 stays visible).

  Returns:
    The axes.

  Raises:
    ValueError: for an unknown metric or axis.
  """
  _check(ds, metric, color_by)
  da, fixed = _fix_others(ds[metric], (color_by,))
  bad = _diverged(ds, da)
  ax = ax or _new_ax()
  values = da[color_by].values
  colors, norm, cm = _colors(values)
  steps = da["step"].values
  for v, c in zip(values, colors):
    runs = da.sel({color_by: v})
    mean = runs.mean("seed").values
    k = int(bad.sel({color_by: v}).sum())
    ax.plot(steps, mean, color=c, lw=1.6, label=_fmt(v) + (f" ({k} diverged)" if k else ""))
    if runs.sizes.get("seed", 1) > 1:
      ax.fill_between(steps, runs.min("seed").values, runs.max("seed").values,
                      color=c, alpha=0.18, lw=0)
  plain = FuncFormatter(lambda v, _: _fmt(v))
  if logx:
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.xaxis.set_major_formatter(plain)
  if metric.endswith("loss") and np.nanmin(da.values, initial=np.inf) > 0:
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(FuncFormatter(_two_five))
  ax.set_xlabel("step")
  ax.set_ylabel(_label(metric))
  n_seeds = da.sizes.get("seed", 1)
  title = f"{_label(metric)} by {color_by}" + (f" ({fixed})" if fixed else "")
  ax.set_title(title, fontsize="medium")
  if n_seeds > 1:
    ax.text(0.99, 0.01, f"mean of {n_seeds} seeds, band: min-max", transform=ax.transAxes,
            ha="right", va="bottom", fontsize="x-small", color="0.4")
  ax.grid(alpha=0.3, which="major")
  _legend_or_colorbar(ax, color_by, values, norm, cm)
  return ax


def final_vs_axis(ds: xr.Dataset, metric: str, axis: str = "width", ax: Axes | None = None,
                  color_by: str | None = None) -> Axes:
  """A metric at the last recorded step against a swept axis: mean and min-max over seeds.

  Args:
    ds: sweep results.
    metric: a data variable, e.g. ``'test_acc'``.
    axis: the swept axis on the (log) x axis.
    ax: axes to draw into; a new Agg figure when ``None``.
    color_by: optionally another swept axis drawn as one line per value.

  Returns:
    The axes.

  Raises:
    ValueError: for an unknown metric or axis.
  """
  _check(ds, metric, axis)
  if color_by is not None:
    _check(ds, metric, color_by)
  keep = (axis,) if color_by is None else (axis, color_by)
  da, fixed = _fix_others(ds[metric].isel(step=-1), keep)
  bad = _diverged(ds, da)
  ax = ax or _new_ax()
  x = da[axis].values
  xs = x if _numeric(x) else np.arange(len(x))
  groups = [(None, da, bad, "C0")]
  if color_by is not None:
    values = da[color_by].values
    colors, norm, cm = _colors(values)
    groups = [(v, da.sel({color_by: v}), bad.sel({color_by: v}), c)
              for v, c in zip(values, colors)]
  n_bad = 0
  for v, runs, b, c in groups:
    seeds = "seed" in runs.dims
    mean = runs.mean("seed").values if seeds else runs.values
    lo = runs.min("seed").values if seeds else mean
    hi = runs.max("seed").values if seeds else mean
    ax.errorbar(xs, mean, yerr=np.nan_to_num(np.stack([mean - lo, hi - mean])), color=c,
                marker="o", ms=4, capsize=3, lw=1.6, label=None if v is None else _fmt(v))
    k = b.sum("seed").values if "seed" in b.dims else b.values.astype(int)
    n_bad += int(k.sum())
    hit = k > 0
    if hit.any():  # under the curve, at the bottom of the panel: these runs are not in the mean
      ax.plot(xs[hit], np.full(hit.sum(), 0.03), "x", color=c, ms=8, mew=2,
              transform=ax.get_xaxis_transform(), clip_on=False)
  if _numeric(x) and np.all(x > 0):
    ax.set_xscale("log", base=2 if np.issubdtype(x.dtype, np.integer) else 10)
  ax.set_xticks(xs, [_fmt(v) for v in x])
  ax.minorticks_off()
  step = int(ds["step"].values[-1])
  ax.set_xlabel(axis)
  ax.set_ylabel(f"final {_label(metric)}")
  n_seeds = da.sizes.get("seed", 1)
  extra = ", ".join(t for t in (fixed, f"step {step}") if t)
  ax.set_title(f"final {_label(metric)} vs {axis} ({extra})", fontsize="medium")
  note = f"mean of {n_seeds} seed{'s' * (n_seeds != 1)}" + (", bars: min-max" * (n_seeds > 1))
  if n_bad:
    note += f"; x: {n_bad} diverged run{'s' * (n_bad != 1)} (not in the mean)"
  ax.text(0.99, 0.01, note, transform=ax.transAxes, ha="right", va="bottom",
          fontsize="x-small", color="0.4")
  ax.grid(alpha=0.3)
  if color_by is not None:
    _legend_or_colorbar(ax, color_by, values, norm, cm)
  return ax


def save_figure(fig_or_ax, path: str) -> str:
  """Writes a figure (or the figure of an Axes) as PNG and frees its artists."""
  fig = getattr(fig_or_ax, "figure", fig_or_ax)
  fig.savefig(path, dpi=130)
  fig.clear()  # drop the artists now; Agg figures are never registered with pyplot
  return path


_METRICS = ("train_loss", "test_loss", "train_acc", "test_acc")


def _swept(ds: xr.Dataset) -> list[str]:
  """The swept axes of the results (dims of its metrics but seed and step), in order."""
  var = next((m for m in _METRICS if m in ds), next(iter(ds.data_vars)))
  return [d for d in ds[var].dims if d not in _REDUCED]


def settings_title(ds: xr.Dataset) -> str:
  """The fixed settings of a sweep in words: optimizer, parametrization, the fixed
  hyperparameters (those not swept), data, steps, batch."""
  a = ds.attrs
  parts = [str(a[k]) for k in ("optimizer", "parametrization") if k in a and k not in ds.dims]
  try:
    fixed = json.loads(a.get("fixed_hparams", "{}"))
  except (TypeError, ValueError):
    fixed = {}
  parts += [f"{k}={_fmt(v)}" for k, v in fixed.items() if k not in ds.dims]
  run = [str(a["dataset"])] if "dataset" in a else []
  if "steps" in a:
    run.append(f"{int(a['steps'])} steps")
  if "batch_size" in a:
    run.append("full batch" if int(a["batch_size"]) < 0 else f"batch {int(a['batch_size'])}")
  return ", ".join(parts) + (" | " + ", ".join(run) if run else "")


def facets(ds: xr.Dataset, draw, keep: Sequence[str], panel=(4.6, 3.4)) -> Figure:
  """One panel per combination of values of the swept axes not in ``keep``.

  Args:
    ds: sweep results.
    draw: ``draw(sub, ax)`` draws one panel; ``sub`` holds one value of every
      other swept axis as a length-1 axis (so a panel's title names it).
    keep: the swept axes every panel shows in full.
    panel: the size of one panel (inches).

  Returns:
    The figure, titled with the sweep's fixed settings (:func:`settings_title`).
  """
  others = [d for d in _swept(ds) if d not in keep]
  combos = list(itertools.product(*(range(ds.sizes[d]) for d in others)))
  ncols = min(len(combos), 2 if len(combos) == 4 else 3)
  nrows = -(-len(combos) // ncols)
  fig = agg_figure((panel[0] * ncols, panel[1] * nrows + 0.4))
  axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
  for ax, combo in zip(axes, combos):
    draw(ds.isel({d: [i] for d, i in zip(others, combo)}), ax)
  for ax in axes[len(combos):]:
    fig.delaxes(ax)
  title = settings_title(ds)
  if title:
    fig.suptitle(title, fontsize="medium")
  return fig


def default_figures(ds: xr.Dataset) -> dict[str, Figure]:
  """The standard figures of a sweep, by file name (without ``.png``).

  Every swept axis is shown: curves of each metric coloured by width and the
  final test metric against width, with one panel per value of every other
  axis; and for every other swept axis ``h`` (learning rate, weight decay,
  parametrization, ...): the final test metric against ``h`` coloured by
  width, against width coloured by ``h``, and test curves coloured by ``h``.

  Args:
    ds: sweep results.

  Returns:
    ``name -> figure``.
  """
  out = {}
  swept = _swept(ds)
  test = "test_acc" if "test_acc" in ds else "test_loss"
  has_width = "width" in swept
  if has_width:
    for metric in _METRICS:
      if metric in ds:
        out[f"{metric}_by_width"] = facets(
            ds, lambda sub, ax, m=metric: metric_vs_step(sub, m, "width", ax=ax), ("width",))
    out[f"final_{test}_vs_width"] = facets(
        ds, lambda sub, ax: final_vs_axis(sub, test, "width", ax=ax), ("width",))
  for h in swept:
    if h == "width":
      continue
    colour = "width" if has_width else None
    out[f"final_{test}_vs_{h}"] = facets(
        ds, lambda sub, ax, h=h: final_vs_axis(sub, test, h, ax=ax, color_by=colour),
        (h, "width"))
    if has_width:
      out[f"final_{test}_vs_width_by_{h}"] = facets(
          ds, lambda sub, ax, h=h: final_vs_axis(sub, test, "width", ax=ax, color_by=h),
          ("width", h))
    out[f"{test}_by_{h}"] = facets(
        ds, lambda sub, ax, h=h: metric_vs_step(sub, test, h, ax=ax), (h,))
  return out


def save_default_figures(ds: xr.Dataset, out_dir: str | os.PathLike) -> list[str]:
  """Writes :func:`default_figures` as PNGs into ``out_dir`` (created if missing).

  Args:
    ds: sweep results.
    out_dir: folder for the PNG files.

  Returns:
    The paths written.
  """
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  return [save_figure(fig, os.path.join(out_dir, f"{name}.png"))
          for name, fig in default_figures(ds).items()]
