"""Tests for jaxtheory.plots on small synthetic results."""

import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure

from jaxtheory import plots

PNG = b"\x89PNG\r\n\x1a\n"


def _results(widths=(8, 16, 32), lrs=(0.1, 0.3), seeds=3):
  rng = np.random.default_rng(0)
  steps = np.array([0, 1, 3, 10, 30, 100])
  shape = (seeds, len(widths), len(lrs), len(steps))
  decay = np.exp(-steps / 30.0) * (1 + 8 / np.asarray(widths, float))[None, :, None, None]
  loss = decay + 0.05 * rng.random(shape) + 0.01
  dims = ("seed", "width", "lr", "step")
  coords = dict(seed=np.arange(seeds), width=np.asarray(widths), lr=np.asarray(lrs), step=steps)
  return xr.Dataset({"train_loss": (dims, loss), "test_loss": (dims, loss + 0.1),
                     "train_acc": (dims, 1 - loss / 3), "test_acc": (dims, 0.9 - loss / 3),
                     "diverged": (dims, np.zeros(shape, bool))}, coords)


def test_metric_vs_step_one_line_per_value_and_title_names_fixed_axes():
  ds = _results()
  ax = plots.metric_vs_step(ds, "test_loss", color_by="width")
  assert len(ax.get_lines()) == 3
  assert ax.get_title() == "test loss by width (lr=0.1)"
  # The line of width 8 is the seed mean at lr=0.1.
  np.testing.assert_allclose(ax.get_lines()[0].get_ydata(),
                             ds.test_loss.isel(width=0, lr=0).mean("seed").values)
  assert [t.get_text() for t in ax.get_legend().get_texts()] == ["8", "16", "32"]
  ax = plots.metric_vs_step(ds, "train_acc", color_by="lr", logx=False)
  assert ax.get_title() == "train accuracy by lr (width=8)"
  assert ax.get_xscale() == "linear"


def test_metric_vs_step_draws_into_a_given_axes_and_uses_a_colorbar_for_many_lines():
  ds = _results(widths=tuple(range(1, 13)), lrs=(0.1,), seeds=1)
  fig = Figure()
  ax = fig.add_subplot()
  assert plots.metric_vs_step(ds, "train_loss", ax=ax) is ax
  assert len(ax.get_lines()) == 12 and ax.get_legend() is None
  assert len(fig.axes) == 2  # the plot and its colorbar


def test_final_vs_axis_mean_and_std_over_seeds():
  ds = _results()
  ax = plots.final_vs_axis(ds, "test_acc", axis="width")
  assert ax.get_xscale() == "log"
  assert ax.get_title() == "final test accuracy vs width (lr=0.1, step 100)"
  np.testing.assert_allclose(ax.get_lines()[0].get_ydata(),
                             ds.test_acc.isel(step=-1, lr=0).mean("seed").values)
  ax = plots.final_vs_axis(ds, "test_acc", axis="width", color_by="lr")
  assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0.1", "0.3"]


def test_unknown_metric_or_axis():
  ds = _results()
  with pytest.raises(ValueError, match="unknown metric 'loss'; the results have: train_loss"):
    plots.metric_vs_step(ds, "loss")
  with pytest.raises(ValueError, match="'depth' is not an axis of the results; axes: width, lr"):
    plots.final_vs_axis(ds, "test_loss", axis="depth")


def test_save_default_figures_writes_pngs(tmp_path):
  paths = plots.save_default_figures(_results(), tmp_path / "figs")
  names = sorted(p.rsplit("/", 1)[-1] for p in paths)
  assert names == sorted([
      "train_loss_by_width.png", "test_loss_by_width.png", "train_acc_by_width.png",
      "test_acc_by_width.png", "final_test_acc_vs_width.png", "test_acc_by_lr.png",
      "final_test_acc_vs_width_by_lr.png", "final_test_acc_vs_lr.png"])
  for p in paths:
    with open(p, "rb") as f:
      assert f.read(8) == PNG


def test_save_default_figures_without_lr_or_accuracy(tmp_path):
  ds = _results(lrs=(0.1,)).isel(lr=0, drop=True)[["train_loss", "test_loss"]]
  paths = plots.save_default_figures(ds, tmp_path)
  assert sorted(p.rsplit("/", 1)[-1] for p in paths) == [
      "final_test_loss_vs_width.png", "test_loss_by_width.png", "train_loss_by_width.png"]


def _three_axes():
  """Results of a width x lr x parametrization sweep (3 seeds), one run diverged."""
  base = _results(widths=(8, 16, 32), lrs=(0.01, 10**-1.5, 0.1))
  ds = xr.concat([base, base * 1.1], dim=xr.DataArray(["sp", "mup"], dims="parametrization"))
  ds = ds.transpose("seed", "width", "lr", "parametrization", "step")
  ds["test_acc"][0, 2, 2, 1, -1] = np.nan
  ds["diverged"] = ds["diverged"].astype(bool)
  ds["diverged"][0, 2, 2, 1, :] = True
  ds.attrs.update(optimizer="sgd", parametrization="sp", fixed_hparams='{"momentum": 0.9}',
                  dataset="digits", steps=100, batch_size=-1)
  return ds


def _texts(fig):
  """Everything a reader sees on a figure: titles, labels, tick labels, legends."""
  out = [fig.get_suptitle()] if fig.get_suptitle() else []
  for ax in fig.axes:
    out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    out += [t.get_text() for t in ax.get_xticklabels()]
    leg = ax.get_legend()
    if leg is not None:
      out += [leg.get_title().get_text()] + [t.get_text() for t in leg.get_texts()]
  return out


def test_every_swept_axis_of_a_three_axis_sweep_appears_in_the_default_figures():
  ds = _three_axes()
  figs = plots.default_figures(ds)
  for axis in ("width", "lr", "parametrization"):
    assert f"final_test_acc_vs_{axis}" in figs  # a final-vs-axis figure for every axis
    for value in ds[axis].values:
      label = plots._fmt(value)  # pylint: disable=protected-access
      # every value is shown: a panel of its own, a legend entry or a tick, in every figure
      for name, fig in figs.items():
        texts = " | ".join(_texts(fig))
        assert f"{axis}={label}" in texts or label in _texts(fig) or \
            any(t.startswith(label + " (") for t in _texts(fig)), (name, axis, label)
  # Curves by width: one panel per (lr, parametrization), each titled with its values.
  titles = [ax.get_title() for ax in figs["test_loss_by_width"].axes if ax.get_title()]
  assert sorted(titles) == sorted(f"test loss by width (lr={plots._fmt(l)}, parametrization={p})"  # pylint: disable=protected-access
                                  for l in ds.lr.values for p in ("sp", "mup"))
  # The loss-vs-lr figure is coloured by width; the fixed settings are in the title.
  fig = figs["final_test_acc_vs_lr"]
  assert fig.axes[0].get_legend().get_title().get_text() == "width"
  # (the parametrization is swept, so the title leaves it to the panels)
  assert fig.get_suptitle() == "sgd, momentum=0.9 | digits, 100 steps, full batch"


def test_ticks_are_readable_and_diverged_runs_are_marked():
  ds = _three_axes()
  ax = plots.final_vs_axis(ds.isel(parametrization=[1]), "test_acc", axis="lr", color_by="width")
  assert [t.get_text() for t in ax.get_xticklabels()] == ["0.01", "0.0316", "0.1"]
  assert "x: 1 diverged run (not in the mean)" in ax.texts[0].get_text()
  crosses = [l for l in ax.get_lines() if l.get_marker() == "x"]
  assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [0.1]
  ax = plots.metric_vs_step(ds.isel(parametrization=[1], lr=[2]), "test_acc", "width")
  assert [t.get_text() for t in ax.get_legend().get_texts()] == ["8", "16", "32 (1 diverged)"]
  assert "band: min-max" in ax.texts[0].get_text()
