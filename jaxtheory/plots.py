"""Figures from sweep results (the ``xarray.Dataset`` of :func:`jaxtheory.sweep.run`).

Results have dims ``(seed, width, <swept hyperparameters...>, step)``. Every
figure averages over seeds and shows the spread across seeds; one swept axis
colours the lines (a colormap ordered by value) and every remaining axis is
held at its first value, which the title states.

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
  text = ", ".join(f"{d}={v:g}" if np.issubdtype(type(v), np.number) else f"{d}={v}"
                   for d, v in fixed.items())
  return da.isel({d: 0 for d in others}), text


def _colors(values: np.ndarray, cmap: str = "viridis"):
  """Colours ordered by value (log-spaced when the values span a decade or more)."""
  vals = np.asarray(values, float)
  if np.all(vals > 0) and vals.max() >= 10 * vals.min():
    norm = LogNorm(vals.min(), vals.max())
  else:
    norm = Normalize(vals.min(), vals.max() if vals.max() > vals.min() else vals.min() + 1)
  cm = colormaps[cmap]
  # Stop short of viridis' pale yellow end, which vanishes on white.
  return [cm(0.9 * float(norm(v))) for v in vals], norm, cm


def _fmt(v) -> str:
  return f"{v:g}" if np.issubdtype(type(v), np.number) else str(v)


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
  """One metric against training step: mean over seeds with a min-max band.

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
  ax = ax or _new_ax()
  values = da[color_by].values
  colors, norm, cm = _colors(values)
  steps = da["step"].values
  for v, c in zip(values, colors):
    runs = da.sel({color_by: v})
    mean = runs.mean("seed").values
    ax.plot(steps, mean, color=c, lw=1.6, label=_fmt(v))
    if runs.sizes.get("seed", 1) > 1:
      ax.fill_between(steps, runs.min("seed").values, runs.max("seed").values,
                      color=c, alpha=0.18, lw=0)
  plain = FuncFormatter(lambda v, _: f"{v:g}")
  if logx:
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.xaxis.set_major_formatter(plain)
  if metric.endswith("loss") and np.nanmin(da.values) > 0:
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
  """A metric at the last recorded step against a swept axis: mean +- std over seeds.

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
  ax = ax or _new_ax()
  x = da[axis].values
  groups = [(None, da, "C0")]
  if color_by is not None:
    values = da[color_by].values
    colors, norm, cm = _colors(values, "plasma")
    groups = [(v, da.sel({color_by: v}), c) for v, c in zip(values, colors)]
  for v, runs, c in groups:
    mean = runs.mean("seed").values if "seed" in runs.dims else runs.values
    std = runs.std("seed").values if "seed" in runs.dims else np.zeros_like(mean)
    ax.errorbar(x, mean, yerr=std, color=c, marker="o", ms=4, capsize=3, lw=1.6,
                label=None if v is None else _fmt(v))
  if np.all(x > 0):
    ax.set_xscale("log", base=2 if np.issubdtype(x.dtype, np.integer) else 10)
    ax.set_xticks(x, [_fmt(v) for v in x])
    ax.minorticks_off()
  step = int(ds["step"].values[-1])
  ax.set_xlabel(axis)
  ax.set_ylabel(f"final {_label(metric)}")
  n_seeds = da.sizes.get("seed", 1)
  extra = ", ".join(t for t in (fixed, f"step {step}") if t)
  ax.set_title(f"final {_label(metric)} vs {axis} ({extra})", fontsize="medium")
  ax.text(0.99, 0.01, f"mean ± std of {n_seeds} seed{'s' * (n_seeds != 1)}",
          transform=ax.transAxes, ha="right", va="bottom", fontsize="x-small", color="0.4")
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


def save_default_figures(ds: xr.Dataset, out_dir: str | os.PathLike) -> list[str]:
  """Writes the standard PNGs of a width sweep into ``out_dir``.

  Loss and accuracy curves coloured by width (train and test), the final test
  metric against width and, when the learning rate is swept, test curves
  coloured by learning rate at the widest width and the final test metric
  against width with one line per learning rate.

  Args:
    ds: sweep results.
    out_dir: folder for the PNG files (created if missing).

  Returns:
    The paths written.
  """
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  path = lambda name: os.path.join(out_dir, name)
  written = []
  has_width = "width" in ds.dims
  test = "test_acc" if "test_acc" in ds else "test_loss"
  if has_width:
    for metric in ("train_loss", "test_loss", "train_acc", "test_acc"):
      if metric in ds:
        written.append(save_figure(metric_vs_step(ds, metric, "width"), path(f"{metric}_by_width.png")))
    written.append(save_figure(final_vs_axis(ds, test, "width"), path(f"final_{test}_vs_width.png")))
  if "lr" in ds.dims:
    # The widest network, kept as a length-1 axis so the title names it.
    widest = ds.isel(width=[-1]) if has_width else ds
    written.append(save_figure(metric_vs_step(widest, test, "lr"), path(f"{test}_by_lr.png")))
    if has_width:
      written.append(save_figure(final_vs_axis(ds, test, "width", color_by="lr"),
                           path(f"final_{test}_vs_width_by_lr.png")))
  return written
