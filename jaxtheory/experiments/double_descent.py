r"""Double descent: test error peaks where the model just interpolates the training set.

Belkin, Hsu, Ma & Mandal (2019), "Reconciling modern machine-learning practice
and the classical bias-variance trade-off"; Mei & Montanari (2019), "The
generalization error of random features regression"; Nakkiran et al. (2020),
"Deep double descent" and Nakkiran, Venkat, Kakade & Ma (2021), "Optimal
regularization can mitigate double descent". Two sweeps:

* ``rf``: random-features regression on a teacher-student task (targets
  from a random one-hidden-layer ReLU teacher, Gaussian noise on the training
  targets only). A frozen random ReLU layer of ``p`` features (the swept
  width, :func:`jaxtheory.nn.random_features`) and a linear readout fitted by
  ridge regression in closed form on the features
  :math:`\Phi = \phi(XW)/\sqrt p` of the ``n`` training points,

  .. math:: \hat a_\lambda = \arg\min_a \tfrac1n\|\Phi a - y\|^2 + \lambda\|a\|^2
            = V\,\mathrm{diag}\big(s_i/(s_i^2 + n\lambda)\big)\,U^\top y ,

  with :math:`\Phi = U\,\mathrm{diag}(s)\,V^\top`; :math:`\lambda = 0` is the
  minimum-norm least-squares readout, the limit of gradient descent from a
  zero readout. The ridgeless test loss diverges at :math:`p = n` and falls
  on both sides; the optimal ridge removes the peak (Nakkiran et al. 2021)
  and so does a large ridge (the control). The fit is a recorded metric of
  the sweep (``steps = 0``), one float64 SVD per run for every ridge at once.
* ``mlp``: a one-hidden-layer ReLU MLP trained to convergence (full-batch
  Adam, MSE on one-hot targets) on a small digits subset with a fraction of
  its training labels flipped, over widths and ``label_noise``. With noise
  the test loss peaks near the width where the network starts to fit every
  (noisy) training label and falls beyond it; without label noise (the
  control) the bump is much smaller. (At this size the 0-1 test error falls
  with width without a peak: the narrowest nets are bottlenecked rather than
  overfit. The summary reports it.)

Each part is one sweep through :func:`jaxtheory.sweep.run` (grids ``seed x
features`` and ``seed x width x label_noise``); the results are merged into one
dataset, the random-features variables prefixed ``rf_``. The defaults take
one to two minutes on an idle 2-core CPU, mostly the MLP sweep.

>>> from jaxtheory.experiments import double_descent as dd
>>> ds = dd.run(dd.Config(part="rf", features=(6, 12, 24), seeds=1, n_train=12, n_test=16))
>>> ds.rf_test_loss.dims
('seed', 'features', 'ridge')
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import numpy as np
import xarray as xr

from jaxtheory import data, nn, plots, sweep
from jaxtheory.analysis import first_reached, peak
from jaxtheory.experiments.check import Check, positive_ints
from jaxtheory.probes.readout import ridge_metric
from jaxtheory.train import ConfigError

PARTS = ("both", "rf", "mlp")


@dataclasses.dataclass(frozen=True)
class Config:
  """The double-descent settings (every field overridable by ``--set key=value``).

  Attributes:
    part: ``'both'``, ``'rf'`` (random features only) or ``'mlp'`` (MLP only).
    seeds: number of seeds; runs use seeds ``0..seeds-1``.
    n_train: random features: training points (teacher-student regression).
    n_test: random features: test points.
    input_dim: random features: input dimension.
    noise: random features: std of the training-target noise.
    features: random features: numbers of features ``p`` to sweep (around ``n_train``).
    ridges: random features: ridge strengths; ``0`` (ridgeless) must be one of
      them, the largest is the control.
    mlp_dataset: MLP: ``'digits'`` or ``'mnist1d'`` (both offline).
    mlp_n_train: MLP: training examples.
    widths: MLP: hidden widths to sweep.
    label_noises: MLP: fractions of flipped training labels (``0`` is the control).
    lr: MLP: Adam learning rate.
    steps: MLP: full-batch Adam steps.
    record: MLP: about this many log-spaced recording points.
  """
  part: str = "both"
  seeds: int = 3
  n_train: int = 100
  n_test: int = 500
  input_dim: int = 20
  noise: float = 0.5
  features: tuple[int, ...] = (10, 20, 40, 60, 80, 90, 100, 110, 125, 150, 200, 300, 500,
                               1000, 2000)
  ridges: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
  mlp_dataset: str = "digits"
  mlp_n_train: int = 200
  widths: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128)
  label_noises: tuple[float, ...] = (0.0, 0.2)
  lr: float = 3e-3
  steps: int = 2000
  record: int = 8


def _check(cfg: Config) -> None:
  if cfg.part not in PARTS:
    raise ConfigError(f"unknown part {cfg.part!r}; available: {', '.join(PARTS)}")
  positive_ints(cfg, "seeds", "n_train", "n_test", "input_dim", "mlp_n_train", "steps", "record")
  if cfg.part in ("both", "rf"):
    if len(cfg.features) < 3:
      raise ConfigError(f"features needs at least 3 values around n_train={cfg.n_train}, "
                        f"got {cfg.features!r}")
    if 0.0 not in cfg.ridges or any(r < 0 for r in cfg.ridges):
      raise ConfigError(f"ridges must be >= 0 and include 0 (ridgeless), got {cfg.ridges!r}")
  if cfg.part in ("both", "mlp"):
    if cfg.mlp_dataset not in ("digits", "mnist1d"):
      raise ConfigError(f"unknown mlp_dataset {cfg.mlp_dataset!r}; available: digits, mnist1d")
    if len(cfg.widths) < 3:
      raise ConfigError(f"widths needs at least 3 values, got {cfg.widths!r}")
    if not cfg.label_noises or any(not 0 <= r < 1 for r in cfg.label_noises):
      raise ConfigError(f"label_noises must lie in [0, 1), got {cfg.label_noises!r}")


# ----------------------------------------------------------------------------
# The two sweeps.


def _run_rf(cfg: Config, progress, engine) -> xr.Dataset:
  ds = data.teacher_student(n_train=cfg.n_train, n_test=cfg.n_test, input_dim=cfg.input_dim,
                            noise=cfg.noise, seed=0)
  s = sweep.Sweep(
      model=lambda p: nn.random_features(ds.input_shape, p, ds.out_dim),
      data=ds, grid=dict(seed=list(range(cfg.seeds)), width=sorted(cfg.features)),
      steps=0, record="every:1", loss="mse", metrics={"rf": ridge_metric(cfg.ridges)},
      # No training steps: one bucket (one compilation) beats any padding waste.
      # float64: at p ~ n the smallest singular values that make the peak are
      # below float32's resolution of the SVD.
      max_waste=float("inf"), dtype="float64", name="double-descent-rf")
  res = sweep.run(s, progress=progress, **engine)
  rf = res.rf.isel(step=0, drop=True).rename(width="features")
  out = xr.Dataset({"rf_train_loss": rf.isel(split=0, drop=True),
                    "rf_test_loss": rf.isel(split=1, drop=True)},
                   attrs={k: v for k, v in res.attrs.items()})
  return out.assign_coords(ridge=np.asarray(cfg.ridges, np.float64))


def _run_mlp(cfg: Config, progress, engine) -> xr.Dataset:
  ds = data.load(cfg.mlp_dataset, n_train=cfg.mlp_n_train)
  s = sweep.Sweep(
      model=lambda w: nn.mlp(ds.input_shape, w, 1, ds.out_dim),
      data=ds, grid=dict(seed=list(range(cfg.seeds)), width=sorted(cfg.widths),
                         label_noise=list(cfg.label_noises)),
      optimizer="adam", hparams=dict(lr=cfg.lr), steps=cfg.steps, record=cfg.record,
      loss="mse", max_waste=2.0, name="double-descent-mlp")
  return sweep.run(s, progress=progress, **engine)


def _engine_for(engine: dict, part: str) -> dict:
  """Engine options for one of the two sweeps: each gets its own checkpoint file."""
  if engine.get("checkpoint") is None:
    return engine
  root, ext = os.path.splitext(os.fspath(engine["checkpoint"]))
  return dict(engine, checkpoint=f"{root}-{part}{ext or '.npz'}")


def run(cfg: Config, progress: Callable[[int, int, str], None] | None = None,
        **engine) -> xr.Dataset:
  """Runs the random-features sweep and/or the MLP sweep and merges their results.

  Args:
    cfg: the configuration.
    progress: ``progress(steps_done, steps_total, info)``, called as training advances.
    **engine: execution options of :func:`jaxtheory.sweep.run`; a
      ``checkpoint`` path ``x.npz`` becomes ``x-rf.npz`` and ``x-mlp.npz``.

  Returns:
    A dataset with ``rf_train_loss``, ``rf_test_loss`` (dims ``(seed,
    features, ridge)``) and/or the MLP sweep's metrics (dims ``(seed, width,
    label_noise, step)``); the configuration as JSON in ``attrs['config']``.
  """
  _check(cfg)
  parts = []
  seconds = {"compile_seconds": 0.0, "run_seconds": 0.0}
  if cfg.part in ("both", "rf"):
    parts.append(_run_rf(cfg, progress, _engine_for(engine, "rf")))
  if cfg.part in ("both", "mlp"):
    parts.append(_run_mlp(cfg, progress, _engine_for(engine, "mlp")))
  for p in parts:
    for k in seconds:
      seconds[k] += float(p.attrs.get(k, 0.0))
  res = xr.merge(parts, combine_attrs="drop")
  res.attrs.update(parts[-1].attrs)
  res.attrs.update(seconds)
  if cfg.part in ("both", "rf"):
    res.attrs["rf_dataset"] = "teacher-student"
  if cfg.part in ("both", "mlp"):
    res.attrs["mlp_dataset"] = cfg.mlp_dataset
  res.attrs["experiment"] = "double-descent"
  res.attrs["config"] = json.dumps(dataclasses.asdict(cfg))
  return res


# ----------------------------------------------------------------------------
# Reading the results.


def rf_curves(ds: xr.Dataset) -> dict[str, xr.DataArray]:
  """Test loss vs number of features (median over seeds): ridgeless, optimal ridge, largest ridge.

  The optimal ridge is chosen per number of features and seed (an oracle on
  the test loss, as in Nakkiran et al. 2021).
  """
  t = ds.rf_test_loss
  return {"ridgeless": t.sel(ridge=0.0).median("seed"),
          "optimal ridge": t.min("ridge").median("seed"),
          f"ridge {float(t.ridge.max()):g}": t.sel(ridge=t.ridge.max()).median("seed")}


def mlp_curves(ds: xr.Dataset) -> dict[str, xr.DataArray]:
  """Final test loss, test error and train accuracy (on the noisy labels), means over seeds."""
  final = ds.isel(step=-1).mean("seed")
  return {"test_loss": final.test_loss, "test_error": 1.0 - final.test_acc,
          "train_acc": final.train_acc}


def interpolation_width(train_acc: xr.DataArray, at: float = 0.99) -> float:
  """First width whose final training accuracy (on the noisy labels) reaches ``at`` (or nan)."""
  return first_reached(train_acc, at, dim="width")


def summary(ds: xr.Dataset) -> list[tuple[str, str]]:
  """Rows ``(label, value)``: the curves' peaks and the compile / run seconds."""
  rows = []
  if "rf_test_loss" in ds:
    n = json.loads(ds.attrs["config"])["n_train"]
    p = ds.features.values
    for name, c in rf_curves(ds).items():
      i, prom = peak(c.values, log=True)
      rows.append((f"RF {name}", f"peak at p={p[i]} (n={n}): test loss {float(c[i]):.3g}, "
                                 f"{10**prom:.2f}x above both sides; "
                                 f"min {float(c.min()):.3g} at p={p[int(np.argmin(c.values))]}"))
  if "test_acc" in ds:
    c = mlp_curves(ds)
    w = ds.width.values
    for ln in ds.label_noise.values:
      loss, err = c["test_loss"].sel(label_noise=ln), c["test_error"].sel(label_noise=ln)
      i, prom = peak(loss.values)
      rows.append((f"MLP label_noise={ln:g}",
                   f"test loss {' '.join(f'{v:.3f}' for v in loss.values)} over widths "
                   f"{','.join(map(str, w))}: bump {prom:.3f} at width {w[i]}; "
                   f"fits the labels from width "
                   f"{interpolation_width(c['train_acc'].sel(label_noise=ln)):g}"))
      rows.append((f"MLP label_noise={ln:g} error",
                   f"test error {' '.join(f'{100 * v:.1f}' for v in err.values)}%"))
  rows.append(("compile", f"{ds.attrs.get('compile_seconds', float('nan')):.1f} s"))
  rows.append(("run", f"{ds.attrs.get('run_seconds', float('nan')):.1f} s"))
  return rows


def signature(ds: xr.Dataset, rf_ratio: float = 2.0, rf_flat: float = 1.2,
              mlp_bump: float = 0.1) -> list:
  """The signature checks with their measured numbers.

  Random features: the ridgeless test loss peaks at ``n/2 <= p <= 2n`` and
  falls by at least ``rf_ratio`` on both sides; with the optimal ridge and
  with the largest ridge (the control) no bump exceeds ``rf_flat``. MLP: with
  label noise the test loss (MSE, the trained risk) has a bump of at least
  ``mlp_bump`` within a factor 2 of the width where the net starts to fit
  every noisy training label; without label noise (the control) the bump is
  under half of that. (In this small setting the 0-1 test error falls with
  width without a peak: the narrowest nets are bottlenecked, not overfit; the
  summary reports it.)
  """
  checks = []
  if "rf_test_loss" in ds:
    n = json.loads(ds.attrs["config"])["n_train"]
    p = ds.features.values
    curves = rf_curves(ds)
    names = list(curves)
    i, prom = peak(curves["ridgeless"].values, log=True)
    c = curves["ridgeless"].values
    checks.append(Check(
        f"RF ridgeless: test loss peaks near p = n = {n} and falls >= {rf_ratio:g}x on both sides",
        bool(n / 2 <= p[i] <= 2 * n and 10**prom >= rf_ratio),
        f"peak at p={p[i]} (loss {c[i]:.3g}), {10**prom:.1f}x above the lower side; "
        f"loss {c[0]:.3g} at p={p[0]}, {c[-1]:.3g} at p={p[-1]}"))
    for name, label in ((names[1], "the optimal ridge removes the peak"),
                        (names[2], f"control {names[2]}: no peak")):
      j, prom_j = peak(curves[name].values, log=True)
      checks.append(Check(
          f"RF {label} (bump < {rf_flat:g}x)", bool(10**prom_j < rf_flat),
          f"largest bump {10**prom_j:.2f}x at p={p[j]} (ridgeless {10**prom:.1f}x); "
          f"test loss at p={p[i]}: {float(curves[name][i]):.3g}"))
  if "test_acc" in ds:
    c = mlp_curves(ds)
    w = ds.width.values
    noisy = [ln for ln in ds.label_noise.values if ln > 0]
    for ln in noisy:
      loss = c["test_loss"].sel(label_noise=ln).values
      i, prom = peak(loss)
      w_int = interpolation_width(c["train_acc"].sel(label_noise=ln))
      near = bool(np.isfinite(w_int) and w_int / 2 <= w[i] <= 2 * w_int)
      checks.append(Check(
          f"MLP label_noise={ln:g}: test loss peaks within 2x of the interpolation width "
          f"(bump >= {mlp_bump:g})",
          bool(prom >= mlp_bump and near),
          f"bump {prom:.3f} at width {w[i]} (test loss {loss[i]:.3f}; {loss[0]:.3f} at "
          f"width {w[0]}, {loss[-1]:.3f} at {w[-1]}); fits the noisy labels from width "
          f"{w_int:g}"))
    if 0.0 in ds.label_noise.values and noisy:
      i0, prom0 = peak(c["test_loss"].sel(label_noise=0.0).values)
      prom_noisy = max(peak(c["test_loss"].sel(label_noise=ln).values)[1] for ln in noisy)
      checks.append(Check(
          "MLP control label_noise=0: a much smaller peak (< half)",
          bool(prom0 < 0.5 * prom_noisy),
          f"bump {prom0:.3f} at width {w[i0]} vs {prom_noisy:.3f} with label noise"))
    else:
      checks.append(Check("MLP control label_noise=0: a much smaller peak", False,
                          "needs label_noise=0 and a positive label noise in the grid"))
  return checks


def figures(ds: xr.Dataset, out_dir: str | os.PathLike) -> list[str]:
  """Random features: test loss vs p per ridge; MLP: test error and train accuracy vs width."""
  import matplotlib
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  if "rf_test_loss" in ds:
    n = json.loads(ds.attrs["config"])["n_train"]
    fig = plots.agg_figure((6.0, 4.2))
    ax = fig.subplots()
    p = ds.features.values
    ridges = ds.ridge.values
    cmap = matplotlib.colormaps["viridis"]
    for k, r in enumerate(ridges):
      ax.plot(p, ds.rf_test_loss.sel(ridge=r).median("seed").values, marker="o", ms=3,
              color=cmap(k / max(1, len(ridges) - 1)), label=f"ridge {r:g}")
    ax.plot(p, rf_curves(ds)["optimal ridge"].values, color="k", ls="--", lw=1.5,
            label="optimal ridge")
    ax.axvline(n, color="0.5", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of random features p")
    ax.set_ylabel(f"test loss (median of {ds.sizes['seed']} seeds)")
    ax.set_title(f"random-features regression, n = {n}", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
    paths.append(os.path.join(out_dir, "rf_test_loss_vs_features.png"))
    fig.savefig(paths[-1], dpi=130)
  if "test_acc" in ds:
    c = mlp_curves(ds)
    fig = plots.agg_figure((12.0, 3.6))
    axes = fig.subplots(1, 3)
    w = ds.width.values
    for k, ln in enumerate(ds.label_noise.values):
      for ax, key, scale in zip(axes, ("test_loss", "test_error", "train_acc"), (1, 100, 100)):
        ax.plot(w, scale * c[key].sel(label_noise=ln).values, marker="o", ms=3,
                color=f"C{k}", label=f"label noise {ln:g}")
    labels = ("test loss (MSE)", "test error (%)", "train accuracy on noisy labels (%)")
    for ax, label in zip(axes, labels):
      ax.set_xscale("log", base=2)
      ax.set_xlabel("hidden width")
      ax.set_ylabel(label)
      ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    axes[0].set_title(f"one-hidden-layer MLP on {ds.attrs.get('mlp_dataset', '')}, "
                      f"mean of {ds.sizes['seed']} seeds", fontsize="medium")
    paths.append(os.path.join(out_dir, "mlp_test_loss_vs_width.png"))
    fig.savefig(paths[-1], dpi=130)
  return paths
