r"""Edge of stability: under full-batch GD the sharpness rises to 2/eta and hovers there.

Cohen, Kaur, Li, Kolter & Talwalkar (2021), "Gradient descent on neural
networks typically occurs at the edge of stability". Gradient descent with
step size :math:`\eta` on a quadratic diverges along any direction of
curvature above :math:`2/\eta`. On neural network losses the sharpness
:math:`\lambda_{\max}(\nabla^2 L)` first rises during training (progressive
sharpening) until it reaches :math:`2/\eta`; then, instead of diverging, GD
keeps the sharpness hovering at :math:`2/\eta` while the loss keeps falling
over long time scales, non-monotonically (the edge of stability).

A tanh MLP is trained by full-batch GD with MSE on one-hot targets of a few
hundred examples (MNIST-1D by default, offline) at several learning rates (the
grid axis ``lr``, all in one compiled program), the sharpness measured every
``sharpness_every`` steps by Lanczos inside the training program
(:func:`jaxtheory.probes.curvature.sharpness_metric`). Learning rates are
given as fractions of :math:`2/S_0`, with :math:`S_0` the sharpness at
initialization (measured first, by the same Lanczos, on the sweep's own
initial parameters): a net whose curvature at init is already above
:math:`2/\eta` cannot show progressive sharpening, and :math:`S_0` varies
two-fold between activations. The smallest learning rate is the control:
its threshold :math:`2/\eta` is never reached within the budget, and the
loss falls monotonically. The defaults (256 examples, 2 seeds x learning
rates 0.05, 0.6, 0.8 of :math:`2/S_0 \approx 0.17`, 4000 steps, the
sharpness every 10 steps) take about a minute on a 2-core CPU; every check
passes for tanh. ReLU's sharpness first falls to about half of
:math:`S_0` and sharpens slowly: at 0.8 it reaches the edge and hovers
(loss non-monotone in one seed of two), at 0.6 it does not reach it within
4000 steps.

Declared range: tanh (or erf) MLPs of depth 2 on MNIST-1D or MNIST
subsets of 256-1000 examples, relative learning rates 0.6-0.8 of 2/S0 with
the control at 0.05, 2000-4000 steps; any number of seeds. With ReLU, on
digits, or at relative learning rates below ~0.6, the edge may not be
reached within the budget (progressive sharpening takes longer the smaller
the step): such runs are reported as "not reached in budget" (SKIP), not as
a failure of the phenomenon.

>>> from jaxtheory.experiments import edge_of_stability as eos
>>> cfg = eos.Config(n_train=20, width=8, seeds=1, lrs=(0.01, 0.1), steps=4,
...                  sharpness_every=2, lanczos_iters=4)
>>> eos.run(cfg).sharpness.dims
('seed', 'lr', 'step')
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
import xarray as xr

from jaxtheory import data, nn, plots, sweep
from jaxtheory.analysis import optimization_status
from jaxtheory.experiments.check import Check, positive_ints, seed_list, skip, timing_rows
from jaxtheory.probes.batch import over_runs
from jaxtheory.probes.curvature import sharpness_metric
from jaxtheory.data import data_arrays
from jaxtheory.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Config:
  """The edge-of-stability settings (every field overridable by ``--set key=value``).

  Attributes:
    dataset: ``'digits'``, ``'mnist1d'``, ``'mnist'`` or ``'fashion-mnist'``.
    n_train: training examples (a seeded subset).
    standardize: standardize the inputs (per coordinate, train statistics).
    data_seed: seed of the subset.
    width: hidden width.
    depth: hidden layers.
    activation: tanh, relu, gelu or erf.
    seeds: a count ``k`` (seeds ``0..k-1``) or explicit seeds (``seeds=5,7``;
      ``[3]`` is seed 3 alone).
    lrs: GD learning rates; the smallest is the control. With
      ``relative_lrs`` each is a fraction of :math:`2/S_0`, the step size at
      which the initial network would already sit at the edge (see
      :func:`initial_sharpness`), so progressive sharpening has room to show
      whatever the architecture's curvature at initialization.
    relative_lrs: read ``lrs`` as fractions of :math:`2/S_0` (``False``:
      absolute step sizes).
    steps: full-batch GD steps.
    sharpness_every: steps between recordings (loss and sharpness).
    lanczos_iters: Lanczos iterations per sharpness estimate.
  """
  dataset: str = "mnist1d"
  n_train: int = 256
  standardize: bool = False
  data_seed: int = 0
  width: int = 64
  depth: int = 2
  activation: str = "tanh"
  seeds: int | tuple[int, ...] = 2
  lrs: tuple[float, ...] = (0.05, 0.6, 0.8)
  relative_lrs: bool = True
  steps: int = 4000
  sharpness_every: int = 10
  lanczos_iters: int = 20


# Named settings (``jaxtheory run edge-of-stability --preset NAME``; ``--set`` overrides).
PRESETS: dict[str, dict] = {
    # Cohen, Kaur, Li, Kolter & Talwalkar (2021), their Figure 1 setting: a tanh network
    # with two hidden layers of width 200, MSE, full-batch GD on 5000 CIFAR-10 examples.
    # Scaled: CIFAR-10 is not available offline, so 1000 MNIST digits (standardized);
    # learning rates as fractions of 2/S0 (theirs: absolute, chosen for CIFAR-10).
    # Measured on its reduced form (256 examples, width 64, 2000 steps, one seed): the
    # sharpness falls from 0.8 of 2/lr at init and does not return to the edge within the
    # budget (reported SKIP: not reached in budget); the full budget is untested.
    "cohen2021": dict(dataset="mnist", n_train=1000, standardize=True, width=200, depth=2,
                      activation="tanh", seeds=2, lrs=(0.05, 0.6, 0.8), relative_lrs=True,
                      steps=3000, sharpness_every=20, lanczos_iters=20),
}


def _check(cfg: Config) -> None:
  seed_list(cfg.seeds)
  if cfg.dataset not in ("digits", "mnist1d", "mnist", "fashion-mnist"):
    raise ConfigError(f"unknown dataset {cfg.dataset!r}; available: digits, mnist1d, mnist, "
                      f"fashion-mnist")
  nn.activation(cfg.activation)
  positive_ints(cfg, "n_train", "width", "depth", "steps", "sharpness_every",
                "lanczos_iters")
  if not cfg.lrs or any(lr <= 0 for lr in cfg.lrs):
    raise ConfigError(f"lrs must be positive learning rates, got {cfg.lrs!r}")


def run(cfg: Config, progress: Callable[[int, int, str], None] | None = None,
        **engine) -> xr.Dataset:
  """Trains the grid ``seed x lr`` by full-batch GD, recording loss and sharpness.

  Args:
    cfg: the configuration.
    progress: ``progress(steps_done, steps_total, info)``, called as training advances.
    **engine: execution options of :func:`jaxtheory.sweep.run`.

  Returns:
    The results dataset, dims ``(seed, lr, step)``: losses, accuracies and
    ``sharpness``; the configuration as JSON in ``attrs['config']``.
  """
  _check(cfg)
  ds = data.load(cfg.dataset, n_train=cfg.n_train, seed=cfg.data_seed,
                 standardize=cfg.standardize)
  act = nn.activation(cfg.activation)
  metric = sharpness_metric("mse", num_iters=cfg.lanczos_iters)
  s = sweep.Sweep(
      model=lambda w: nn.mlp(ds.input_shape, w, cfg.depth, ds.out_dim, activation=act),
      data=ds, grid=dict(seed=seed_list(cfg.seeds), width=[cfg.width], lr=list(cfg.lrs)),
      optimizer="sgd", steps=cfg.steps, record=f"every:{cfg.sharpness_every}", loss="mse",
      metrics={"sharpness": metric}, name="edge-of-stability")
  s0 = float("nan")
  if cfg.relative_lrs:
    s0 = float(np.median(initial_sharpness(dataclasses.replace(
        s, grid=dict(s.grid, lr=[1.0])), metric)))
    if not np.isfinite(s0) or s0 <= 0:
      raise ConfigError(f"the sharpness at initialization is {s0:g}; relative learning rates "
                        f"need a positive one (set relative_lrs=false and give step sizes)")
    lrs = [float(f"{f * 2.0 / s0:.4g}") for f in cfg.lrs]
    s = dataclasses.replace(s, grid=dict(s.grid, lr=lrs))
  res, groups = sweep.execute(s, params=engine.pop("return_params", False), progress=progress,
                              **engine)
  res = res.isel(width=0, drop=True)
  res["threshold"] = 2.0 / res.lr
  res.attrs["initial_sharpness"] = s0
  res.attrs["experiment"] = "edge-of-stability"
  res.attrs["config"] = json.dumps(dataclasses.asdict(cfg))
  return res if groups is None else (res, groups)


def initial_sharpness(s: sweep.Sweep, metric) -> np.ndarray:
  """The sharpness of every run of ``s`` at initialization (run order), one compiled call
  per width bucket, with the same ``metric`` the sweep records."""
  d = data_arrays(s.data)
  d["w_train"] = jnp.ones(d["y_train"].shape[:1], d["x_train"].dtype)
  out = []
  for g in sweep.initial_params(s):
    out.append(over_runs(lambda prm, c, g=g: metric(prm, lambda p, x: g.model.apply(p, x, c), d),
                         g.params, g.ctx))
  return np.concatenate([np.asarray(v) for v in out])


# ----------------------------------------------------------------------------
# Reading the results.


def eos_stats(ds: xr.Dataset, reach: float = 0.9, edge: float = 0.98,
              turn: float = 0.02) -> dict[tuple[int, float], dict[str, float]]:
  r"""Per run ``(seed, lr)``: how the sharpness :math:`S` compares with :math:`2/\eta`.

  ``onset`` is the first recorded step where :math:`S\eta/2` rises to ``reach``
  from below (nan if never): a run that starts at or above ``reach`` must
  first leave it, so its onset is the return after the dip, not step 0.
  ``low_ratio`` is the lowest :math:`S\eta/2` before the onset (the start of
  progressive sharpening). After it, ``median_ratio`` is the median of
  :math:`S\eta/2` and ``within_10`` the fraction of recordings within 10% of
  :math:`2/\eta`; ``edge_step`` is the first step with :math:`S\eta/2 \ge`
  ``edge`` (the edge itself, nan if never), ``edge_fraction`` the fraction of
  the recordings after the onset that come after it, and ``turns_back``
  whether the sharpness later falls ``turn`` (in units of :math:`2/\eta`)
  below its running maximum: a sharpness still climbing monotonically has
  not stopped at the edge. ``loss_onset``/``loss_end`` are the training loss,
  ``rises`` the number and ``increases`` the fraction of recording intervals
  over which the loss went up (over the whole run when the onset never
  comes), ``status`` the run's :func:`jaxtheory.analysis.optimization_status`
  (divergence and collapse only).
  """
  out = {}
  for seed in ds.seed.values:
    for lr in ds.lr.values:
      r = ds.sel(seed=seed, lr=lr)
      S = r.sharpness.values * lr / 2.0
      loss = r.train_loss.values
      steps = r.step.values
      left = np.flatnonzero(~(S >= reach))  # nan counts as below
      k = int(left[0]) if left.size else len(S)
      hit = np.flatnonzero(S[k:] >= reach)
      i0 = k + int(hit[0]) if hit.size else None
      low = S[k:i0 + 1] if i0 is not None else S[k:] if k < len(S) else S
      diverged = bool(np.asarray(r.diverged.values).any()) if "diverged" in r else False
      row = {"init_ratio": float(S[0]), "low_ratio": float(np.nanmin(low)),
             "max_ratio": float(np.nanmax(S)),
             "max_step": float(steps[int(np.nanargmax(S))]),
             "onset": float(steps[i0]) if i0 is not None else float("nan"),
             "loss_init": float(loss[0]), "loss_end": float(loss[-1]),
             "diverged": diverged,
             "status": optimization_status(loss, diverged=diverged, min_drop=None)}
      if i0 is not None and i0 < len(S) - 1:
        after = S[i0:]
        at_edge = np.flatnonzero(after >= edge)
        e = int(at_edge[0]) if at_edge.size else None
        tail = after[e:] if e is not None else after[:0]
        row.update(median_ratio=float(np.median(after)),
                   within_10=float(np.mean(np.abs(after - 1) <= 0.1)),
                   edge_step=float(steps[i0 + e]) if e is not None else float("nan"),
                   edge_fraction=float(len(tail) / len(after)),
                   turns_back=bool(tail.size and np.any(np.fmax.accumulate(tail) - tail
                                                        >= turn)),
                   loss_onset=float(loss[i0]),
                   increases=float(np.mean(np.diff(loss[i0:]) > 0)),
                   rises=int(np.sum(np.diff(loss[i0:]) > 0)))
      else:
        row.update(median_ratio=float("nan"), within_10=float("nan"),
                   edge_step=float("nan"), edge_fraction=0.0, turns_back=False,
                   loss_onset=float("nan"), increases=float(np.mean(np.diff(loss) > 0)),
                   rises=int(np.sum(np.diff(loss) > 0)))
      out[(int(seed), float(lr))] = row
  return out


def summary(ds: xr.Dataset) -> list[tuple[str, str]]:
  """Rows ``(label, value)``: per learning rate, sharpness relative to 2/eta and the loss."""
  rows = []
  s0 = float(ds.attrs.get("initial_sharpness", float("nan")))
  if np.isfinite(s0):
    cfg = json.loads(ds.attrs["config"])
    rows.append(("initial sharpness S0", f"{s0:.4g}: 2/S0 = {2 / s0:.4g}; lrs "
                 f"{', '.join(f'{f:g}' for f in cfg['lrs'])} of it"))
  for (seed, lr), r in eos_stats(ds).items():
    rows.append((f"seed={seed} lr={lr:g} (2/lr={2 / lr:g})",
                 f"S*lr/2 {r['init_ratio']:.2f} at init, lowest {r['low_ratio']:.2f}, "
                 f"max {r['max_ratio']:.2f}, "
                 f"reaches 0.9 at step {r['onset']:.0f}, then median {r['median_ratio']:.2f} "
                 f"({100 * r['within_10']:.0f}% within 10%); loss {r['loss_init']:.3g} -> "
                 f"{r['loss_end']:.3g}, rising over {100 * r['increases']:.0f}% of intervals"))
  rows += timing_rows(ds)
  return rows


def eos_checks(ds: xr.Dataset, lr: float, start_below: float = 0.7, within: float = 0.7,
               min_rises: int = 3, min_edge_fraction: float = 0.25) -> list:
  """The three edge-of-stability checks for the runs of one ``lr`` (see :func:`signature`).

  A run whose training diverged or collapsed fails with that reason; a run
  that never reaches ``0.9 * 2/lr`` in its budget is not judged (its checks
  are skipped, saying so): the edge was not reached, which says nothing
  about what happens there. The checks judge the runs that reached it.
  """
  stats = {s: r for (s, l), r in eos_stats(ds).items() if l == lr}
  broken = {s: r["status"] for s, r in stats.items() if r["status"] != "ok"}
  runs = {s: r for s, r in stats.items() if np.isfinite(r["onset"]) and s not in broken}
  unreached = [s for s in stats if s not in runs and s not in broken]
  names = (f"lr={lr:g}: progressive sharpening up to 2/lr={2 / lr:g}",
           f"lr={lr:g}: sharpness then reaches 2/lr and hovers within 10% of it",
           f"lr={lr:g}: the loss keeps falling, non-monotonically")
  note = ""
  if unreached:
    note = "; 0.9 * 2/lr not reached in budget (not judged): " + ", ".join(
        f"seed {s} (max S*lr/2 {stats[s]['max_ratio']:.2f} at step "
        f"{stats[s]['max_step']:.0f} of {float(ds.step[-1]):.0f})" for s in unreached)
  if broken:
    note += "; optimization failed: " + ", ".join(f"seed {s}: {w}" for s, w in broken.items())
  if not runs:
    return [Check(n, False, note[2:], skipped=not broken) for n in names]
  sharpen = all(r["low_ratio"] < start_below for r in runs.values())
  hover = all(abs(r["median_ratio"] - 1) <= 0.1 and r["within_10"] >= within
              and r["edge_fraction"] >= min_edge_fraction and r["turns_back"]
              for r in runs.values())
  falls = all(r["loss_end"] < r["loss_onset"] and r["rises"] >= min_rises
              for r in runs.values())
  ok = not broken
  return [
      Check(names[0], bool(ok and sharpen),
            "; ".join(f"seed {s}: S*lr/2 {r['init_ratio']:.2f} at init, lowest "
                      f"{r['low_ratio']:.2f}, reaches 0.9 at step {r['onset']:.0f}"
                      for s, r in runs.items()) + note),
      Check(names[1], bool(ok and hover),
            "; ".join(f"seed {s}: reaches 2/lr at step {r['edge_step']:.0f} "
                      f"({100 * r['edge_fraction']:.0f}% of the time after onset, needs "
                      f"{100 * min_edge_fraction:.0f}%), "
                      f"{'turns back' if r['turns_back'] else 'never turns back'}; "
                      f"median S*lr/2 {r['median_ratio']:.3f}, "
                      f"{100 * r['within_10']:.0f}% of recordings within 10%"
                      for s, r in runs.items()) + note),
      Check(names[2], bool(ok and falls),
            "; ".join(f"seed {s}: loss {r['loss_onset']:.3g} at onset -> {r['loss_end']:.3g}, "
                      f"rising over {r['rises']} intervals ({100 * r['increases']:.0f}%)"
                      for s, r in runs.items()) + note),
  ]


def signature(ds: xr.Dataset, start_below: float = 0.7, within: float = 0.7,
              min_rises: int = 3, min_edge_fraction: float = 0.25) -> list:
  r"""The signature checks with their measured numbers.

  For every learning rate above the smallest, in every seed that reaches
  :math:`0.9 \cdot 2/\eta` within its budget (:func:`eos_checks`; seeds that
  do not are reported as "not reached in budget" and, when none does, the
  checks are skipped): the sharpness is at some point below ``start_below``
  :math:`\cdot 2/\eta` and then rises to :math:`0.9 \cdot 2/\eta`
  (progressive sharpening); it then reaches :math:`2/\eta` (within 2%) early
  enough that at least ``min_edge_fraction`` of the recordings after the onset
  come after it, turns back at least once (a sharpness still climbing
  monotonically through :math:`0.9`-:math:`1.0 \cdot 2/\eta` is not hovering),
  and from the onset on its median is within 10% of :math:`2/\eta` and at
  least ``within`` of the recordings are; the loss keeps falling (lower at the
  end than at the onset) but rises over at least ``min_rises`` recording
  intervals (non-monotonically). A run that diverged or collapsed fails as an
  optimization failure. The control (smallest learning rate) never reaches
  :math:`0.9 \cdot 2/\eta`; with one learning rate it is skipped.
  """
  lrs = sorted(float(v) for v in ds.lr.values)
  checks = []
  main = lrs[1:] if len(lrs) >= 2 else lrs
  for lr in main:
    checks += eos_checks(ds, lr, start_below, within, min_rises, min_edge_fraction)
  if len(lrs) >= 2:
    lr = lrs[0]
    runs = {s: r for (s, l), r in eos_stats(ds).items() if l == lr}
    checks.append(Check(
        f"control lr={lr:g}: 2/lr={2 / lr:g} is never reached",
        all(r["max_ratio"] < 0.9 for r in runs.values()),
        "; ".join(f"seed {s}: max S*lr/2 {r['max_ratio']:.2f}, loss rising over "
                  f"{r['rises']} intervals" for s, r in runs.items())))
  else:
    checks.append(skip("control: a small learning rate",
                       "needs at least two learning rates (the smallest is the control)"))
  return checks


def figures(ds: xr.Dataset, out_dir: str | os.PathLike) -> list[str]:
  """Sharpness (dashed: 2/eta), sharpness relative to 2/eta, and the training loss, per lr."""
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  fig = plots.agg_figure((14.0, 3.8))
  ax1, ax2, ax3 = fig.subplots(1, 3)
  steps = ds.step.values
  for k, lr in enumerate(ds.lr.values):
    for j, seed in enumerate(ds.seed.values):
      r = ds.sel(lr=lr, seed=seed)
      style = dict(color=f"C{k}", lw=1.2, alpha=1 if j == 0 else 0.5,
                   label=f"lr {lr:g}" if j == 0 else None)
      ax1.plot(steps, r.sharpness.values, **style)
      ax2.plot(steps, r.sharpness.values * lr / 2, **style)
      ax3.plot(steps, r.train_loss.values, **style)
    ax1.axhline(2 / lr, color=f"C{k}", ls="--", lw=1)
  ax2.axhline(1.0, color="k", ls="--", lw=1)
  ax2.axhspan(0.9, 1.1, color="0.5", alpha=0.15, lw=0)
  ax1.set_yscale("log")
  ax1.set_ylabel("sharpness λ_max (dashed: 2/lr)")
  ax2.set_ylabel("sharpness × lr / 2 (band: ±10%)")
  ax3.set_ylabel("training loss")
  ax3.set_yscale("log")
  for ax in (ax1, ax2, ax3):
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  ax1.legend(fontsize="small")
  ax2.set_title(f"full-batch GD on {ds.attrs.get('dataset')} ({ds.sizes['seed']} seeds)",
                fontsize="medium")
  path = os.path.join(out_dir, "sharpness_and_loss.png")
  fig.savefig(path, dpi=130)
  return [path]
