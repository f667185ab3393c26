r"""Neural collapse: training past zero error collapses last-layer features onto a simplex ETF.

Papyan, Han & Donoho (2020), "Prevalence of neural collapse during the terminal
phase of deep learning training"; Han, Papyan & Donoho (2022), "Neural collapse
under MSE loss". A classifier trained well past the step where its training
error first reaches zero (the terminal phase of training, TPT) keeps changing:
within-class variability of its penultimate features vanishes relative to the
between-class spread (NC1), the centred class means become equinorm and
equiangular, a simplex equiangular tight frame (NC2), the readout aligns with
them (NC3) and the network's decision becomes the nearest-class-centre rule
(NC4). All four are recorded during training by
:func:`jaxtheory.probes.collapse.collapse_metric` (on the training set).

An MLP with weight decay is trained by full-batch SGD with momentum and MSE
on a class subset of a real image set: MNIST when its files are installed
(``jaxtheory data fetch mnist``), else scikit-learn's digits
(``dataset='auto'``; the one used is ``attrs['dataset']``). Classes are
balanced (``per_class`` examples each): with unequal counts the terminal
geometry is not an ETF. The grid is ``seed x lr``; the smallest learning rate
is the control: it reaches zero training error late or never, and its
features do not collapse. The defaults (MNIST classes 0-3 x 100 examples,
2 seeds x 2 learning rates, 10000 steps, a constant learning rate) take about
a minute on a 2-core CPU: zero error by step ~90, then NC1 falls ~400-700x
and the class means end 0.15-0.2 from a simplex ETF (0.63-0.75 at init).
``--preset papyan2020`` is the paper's setting (ten classes, step decay).

Declared range (measured): MNIST, any 3-10 of its classes, 10-100 examples per
class, width >= 64 up to 6 classes and >= 128 beyond (at width 64, ten classes
stall at ETF distance 0.30-0.37 after 12000 steps), about 10000 steps at lr
0.1 (constant, or 30000 with the step decay), MSE, any seeds. Six settings
nobody tuned (classes 1,3,5,7,9 / 0,2,4,6,8 / 3,5,8 / 2,3,5,8 / 0-7 / 0-9,
25-100 per class, widths 64-160, other seeds or subsets) all pass; ten classes
at half the budget (15000 steps with the decay) end at ETF distance 0.268.
With 2 classes NC2 has nothing to judge (two centred means are always
antipodal) and only NC1 is checked. Outside it: cross-entropy collapses more
slowly (4 classes x 20, 20000 steps: NC1 33x, ETF distance 0.245). Fragile, so
each check reports how many seeds show it (10000 steps, lr 0.1, constant):
Fashion-MNIST (width 128: classes 0-3, NC1 and NC2 in 2 of 2 seeds; classes
4-9 x 40, 1 of 1; classes 0-5, seeds 0-5, NC1 in 2 of 6 and NC2 in 0 of 6: at
lr 0.1 the terminal phase is unstable, one seed diverges and three lose zero
error again (99.7-99.8%, the ETF distance climbing back, e.g. 0.41 -> 0.70),
while at lr 0.03 all four seeds tried hold it but collapse too slowly for the
budget, NC1 47-94x and ETF distance 0.30-0.38; width 64: classes 0-5, NC1 2 of
2 and NC2 1 of 2; classes 0-3, 20000 steps, NC2 0 of 2) and digits (classes
0-3: 2 of 2 at width 128, NC2 in 1 of 2 at width 64; ten classes at width 128,
20 per class, 6000 steps with the step decay: NC1 60x, not collapsed). Runs
that never reach zero error are reported as not judged; runs that diverge,
stay stuck (loss not 10x below its start) or break down (train accuracy 20
points below its best) as optimization failures, and seeds that lose zero
error again as having left the terminal phase.

>>> from jaxtheory.experiments import neural_collapse as nc
>>> cfg = nc.Config(dataset="digits", classes=(0, 1, 2), per_class=10, seeds=1, width=8,
...                 steps=5, record=3)
>>> nc.run(cfg).collapse_metrics.dims
('seed', 'lr', 'step', 'collapse')
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import numpy as np
import xarray as xr

from jaxtheory import data, nn, plots, sweep
from jaxtheory.analysis import failed_runs, first_reached
from jaxtheory.experiments.check import Check, positive_ints, seed_list, skip, timing_rows
from jaxtheory.probes.collapse import collapse_metric
from jaxtheory.schedules import get_schedule, learning_rates
from jaxtheory.errors import ConfigError

DATASETS = ("auto", "mnist", "fashion-mnist", "digits")
# The recorded collapse metrics (names of jaxtheory.probes.collapse.NAMES), in order.
METRICS = ("nc1", "nc2_etf", "nc2_equinorm", "nc2_equiangle", "nc3", "nc4")


@dataclasses.dataclass(frozen=True)
class Config:
  """The neural-collapse settings (every field overridable by ``--set key=value``).

  Attributes:
    dataset: ``'auto'`` (MNIST if its files are installed, else digits),
      ``'mnist'``, ``'fashion-mnist'`` or ``'digits'``.
    classes: the class subset.
    per_class: training examples per class, drawn at random (balanced classes:
      with unequal counts the class means of the terminal phase are not a
      simplex ETF).
    data_seed: seed of the subset.
    seeds: a count ``k`` (seeds ``0..k-1``) or explicit seeds (``seeds=5,7``;
      ``[3]`` is seed 3 alone).
    width: hidden width of the MLP.
    depth: hidden layers.
    loss: ``'mse'`` (one-hot targets) or ``'xent'``.
    lrs: learning rates to sweep; the smallest is the control.
    momentum: heavy-ball momentum.
    weight_decay: L2 weight decay (``sgdw``: added to the gradient before momentum, as in
      PyTorch's SGD, not decoupled).
    schedule: the learning-rate schedule, a name in
      :data:`jaxtheory.schedules.SCHEDULES` with its default parameters:
      ``'constant'``, or ``'step'`` (Papyan et al.'s: the learning rate
      divided by 10 at 1/3 and 2/3 of the steps), ...; each learning rate of
      ``lrs`` is the schedule's initial one.
    steps: full-batch steps.
    record: about this many log-spaced recording points.
  """
  dataset: str = "auto"
  classes: tuple[int, ...] = (0, 1, 2, 3)
  per_class: int = 100
  data_seed: int = 0
  seeds: int | tuple[int, ...] = 2
  width: int = 64
  depth: int = 3
  loss: str = "mse"
  lrs: tuple[float, ...] = (1e-4, 0.1)
  momentum: float = 0.9
  weight_decay: float = 2e-4
  schedule: str = "constant"
  steps: int = 10000
  record: int = 40


# Named settings (``jaxtheory run neural-collapse --preset NAME``; ``--set`` overrides).
PRESETS: dict[str, dict] = {
    # Papyan, Han & Donoho (2020): all ten MNIST classes, balanced, SGD with momentum 0.9
    # and weight decay 5e-4, the learning rate divided by 10 at 1/3 and 2/3 of training,
    # trained far past zero training error; Han et al. (2022) the same under MSE. Scaled:
    # their VGG/ResNets on thousands of images per class for 350 epochs of minibatch SGD
    # become the default 3-hidden-layer MLP at width 128 on 100 per class, 30000
    # full-batch steps (~10000 at lr 0.1, where the terminal phase does its work). Width
    # 128, not 64: at 64 ten classes stall at ETF distance 0.30-0.37 (20 per class, 12000
    # steps, constant or step-decayed). Full form, measured (2 seeds; 1127 s wall on a
    # 2-core CPU shared with other jobs): zero error at step 152, NC1 5758x and 7818x
    # below init, ETF distance 0.837 -> 0.183 and 0.869 -> 0.185, NCC agreement 1.000;
    # the control (lr 1e-4) ends at 90-92% train accuracy, NC1 0.66. Reduced form (CI:
    # 10 per class, 9000 steps): zero error at step 26-33, NC1 1901x and 2952x, ETF
    # distance 0.215 and 0.229; at 6000 steps 0.250 and 0.261 (not yet).
    "papyan2020": dict(dataset="mnist", classes=tuple(range(10)), per_class=100, width=128,
                       depth=3, loss="mse", lrs=(1e-4, 0.1), momentum=0.9,
                       weight_decay=5e-4, schedule="step", seeds=2, steps=30000, record=40),
}


def _check(cfg: Config) -> None:
  seed_list(cfg.seeds)
  if cfg.dataset not in DATASETS:
    raise ConfigError(f"unknown dataset {cfg.dataset!r}; available: {', '.join(DATASETS)}")
  if cfg.loss not in ("mse", "xent"):
    raise ConfigError(f"unknown loss {cfg.loss!r}; available: mse, xent")
  positive_ints(cfg, "per_class", "width", "depth", "steps", "record")
  if len(cfg.classes) < 2:
    raise ConfigError(f"classes needs at least 2 classes, got {cfg.classes!r}")
  get_schedule(cfg.schedule)
  if not cfg.lrs or any(lr <= 0 for lr in cfg.lrs):
    raise ConfigError(f"lrs must be positive learning rates, got {cfg.lrs!r}")


def load_data(cfg: Config) -> data.Dataset:
  """The balanced class subset of ``cfg.dataset`` (``per_class`` training examples of each
  class, every test example of them); ``'auto'`` is MNIST, or digits without MNIST's files."""
  names = ("mnist", "digits") if cfg.dataset == "auto" else (cfg.dataset,)
  for i, name in enumerate(names):
    try:
      ds = data.load(name, classes=list(cfg.classes), seed=cfg.data_seed)
      return data.subset(ds, n_train=len(cfg.classes) * cfg.per_class, seed=cfg.data_seed,
                         balanced=True)
    except data.DataError:
      if i == len(names) - 1:
        raise
  raise AssertionError("unreachable")


def run(cfg: Config, progress: Callable[[int, int, str], None] | None = None,
        **engine) -> xr.Dataset:
  """Trains the grid ``seed x lr``, recording NC1-NC4 at every recording point.

  Args:
    cfg: the configuration.
    progress: ``progress(steps_done, steps_total, info)``, called as training advances.
    **engine: execution options of :func:`jaxtheory.sweep.run`.

  Returns:
    The results dataset, dims ``(seed, lr, step)``, and ``collapse_metrics``
    with a trailing ``collapse`` axis labelled by :data:`METRICS`; the dataset
    actually used in ``attrs['dataset']``, the configuration as JSON in
    ``attrs['config']``.
  """
  _check(cfg)
  ds = load_data(cfg)
  C = ds.num_classes
  s = sweep.Sweep(
      model=lambda w: nn.mlp(ds.input_shape, w, cfg.depth, C),
      data=ds, grid=dict(seed=seed_list(cfg.seeds), width=[cfg.width], lr=list(cfg.lrs)),
      optimizer="sgdw", hparams=dict(momentum=cfg.momentum, weight_decay=cfg.weight_decay),
      steps=cfg.steps, record=cfg.record, loss=cfg.loss,
      schedule=None if cfg.schedule == "constant" else cfg.schedule,
      metrics={"collapse_metrics": collapse_metric(C, which=METRICS)}, name="neural-collapse")
  res, groups = sweep.execute(s, params=engine.pop("return_params", False), progress=progress,
                              **engine)
  res = res.isel(width=0, drop=True).assign_coords(collapse=list(METRICS))
  res.attrs["experiment"] = "neural-collapse"
  res.attrs["config"] = json.dumps(dataclasses.asdict(cfg))
  return res if groups is None else (res, groups)


# ----------------------------------------------------------------------------
# Reading the results.


def zero_error_step(train_acc: xr.DataArray) -> float:
  """First recorded step with 100% training accuracy (dims ``(step,)``), or nan."""
  return first_reached(train_acc, 1.0)


def terminal_phase(ds: xr.Dataset) -> dict[tuple[int, float], dict[str, float]]:
  """Per run ``(seed, lr)``: the zero-error step, the final training accuracy, and each
  metric at initialization (``_init``), at the zero-error step (``_tpt``) and at the end."""
  out = {}
  for seed in ds.seed.values:
    for lr in ds.lr.values:
      run_ = ds.sel(seed=seed, lr=lr)
      t0 = zero_error_step(run_.train_acc)
      row = {"zero_error_step": t0, "last_step": float(ds.step[-1]),
             "final_train_acc": float(run_.train_acc.isel(step=-1))}
      for m in METRICS:
        curve = run_.collapse_metrics.sel(collapse=m)
        # numpy floats: a ratio with a zero (dead features) is inf or nan, not an exception.
        row[f"{m}_init"] = np.float64(curve.isel(step=0))
        row[f"{m}_tpt"] = np.float64(curve.sel(step=t0)) if np.isfinite(t0) else np.nan
        row[f"{m}_end"] = np.float64(curve.isel(step=-1))
      out[(int(seed), float(lr))] = row
  return out


def summary(ds: xr.Dataset) -> list[tuple[str, str]]:
  """Rows ``(label, value)``: per run, zero-error step and NC1-NC4 there and at the end."""
  rows = [("dataset", f"{ds.attrs.get('dataset')} classes "
                      f"{json.loads(ds.attrs['config'])['classes']}")]
  for (seed, lr), r in terminal_phase(ds).items():
    rows.append((f"seed={seed} lr={lr:g}",
                 f"100% train @ {r['zero_error_step']:.0f}; "
                 + ", ".join(f"{m} {r[f'{m}_tpt']:.3g} -> {r[f'{m}_end']:.3g}"
                             for m in ("nc1", "nc2_etf", "nc3", "nc4"))))
  rows += timing_rows(ds)
  return rows


def collapse_checks(ds: xr.Dataset, lr: float, nc1_drop: float = 100.0,
                    etf_max: float = 0.25, etf_drop: float = 2.0) -> list:
  """The two collapse checks for the runs of one learning rate (see :func:`signature`).

  Seeds whose training diverged, got stuck (training loss less than 10x
  below its first value) or broke down (train accuracy 20 points below its
  best at the end; :func:`jaxtheory.analysis.optimization_status`) fail as
  optimization failures; seeds that never reach zero training error in the
  budget are reported as such and not judged (when no seed does, the checks
  are skipped). Each check's measurement starts with how many of the seeds
  show it. With two classes the NC2 check is skipped: two centred class
  means are always antipodal.
  """
  runs = {s: r for (s, l), r in terminal_phase(ds).items() if l == lr}
  # A main run whose loss never fell 10x is stuck (e.g. at 50% train accuracy), not slow.
  # Breakdown is read from the accuracy alone: in the terminal phase weight decay holds the
  # loss at an equilibrium above its minimum (cross-entropy on MNIST: 3.4e-6 at its
  # lowest, 1.7e-4 at the end with 100% train accuracy), which a loss ratio calls a collapse.
  status = {k[0]: why for k, why in failed_runs(
      ds.sel(lr=lr).transpose("seed", ...), acc="train_acc", min_drop=10.0,
      collapse=np.inf).items()}
  judged = {s: r for s, r in runs.items()
            if s not in status and np.isfinite(r["zero_error_step"])}
  note = "".join(f"; seed {s}: optimization failure, {why}" for s, why in status.items())
  note += "".join(f"; seed {s}: zero training error not reached in {r['last_step']:.0f} steps "
                  f"(final train accuracy {100 * r['final_train_acc']:.1f}%, not judged)"
                  for s, r in runs.items() if s not in status and s not in judged)
  names = (f"lr={lr:g}: NC1 ends >= {nc1_drop:g}x below init, in the terminal phase",
           f"lr={lr:g}: class means approach a simplex ETF (distance ends <= {etf_max:g}, "
           f">= {etf_drop:g}x below init)")
  if not judged:
    return [Check(n, False, note[2:], skipped=not status) for n in names]
  num_classes = len(json.loads(ds.attrs.get("config", "{}")).get("classes", ()))
  with np.errstate(divide="ignore", invalid="ignore"):
    nc1 = {s: r["nc1_init"] / r["nc1_end"] for s, r in judged.items()}
    tpt = {s: r["nc1_tpt"] / r["nc1_end"] for s, r in judged.items()}
    etf = {s: r["nc2_etf_init"] / r["nc2_etf_end"] for s, r in judged.items()}
  # Still in the terminal phase at the end (a late instability that kills the
  # features would fake a collapse: NC1 = 0 when every feature is constant), and
  # NC1 not rising again after zero error. Collapse may begin before zero error.
  fit = {s: r["final_train_acc"] >= 1.0 for s, r in judged.items()}
  ok = not status
  nc1_seed = {s: bool(fit[s] and np.isfinite(v) and v >= nc1_drop and tpt[s] >= 1.0)
              for s, v in nc1.items()}
  etf_seed = {s: bool(fit[s] and r["nc2_etf_end"] <= etf_max and etf[s] >= etf_drop)
              for s, r in judged.items()}
  # Per-seed verdicts and how many of all the seeds show it (where the phenomenon is
  # fragile, the fraction is the measurement; the check holds only if every seed does).
  frac = lambda v: (f"{sum(v.values())} of {len(runs)} seeds"
                    + (f" ({len(runs) - len(v)} not judged)" if len(v) < len(runs) else "")
                    + ": ")
  # A seed that reached zero error and lost it did not hold the terminal phase (training
  # unstable at this learning rate), which says nothing about collapse within it.
  mark = lambda v, s: ("" if v[s] else " [not collapsed]" if fit[s] else
                       " [left the terminal phase: zero error lost, training unstable]")
  return [
      Check(names[0], bool(ok and all(nc1_seed.values())),
            frac(nc1_seed) + "; ".join(
                f"seed {s}: zero error at step {r['zero_error_step']:.0f}, final train "
                f"accuracy {100 * r['final_train_acc']:.1f}%, NC1 {r['nc1_init']:.3g} -> "
                f"{r['nc1_tpt']:.3g} (zero error) -> {r['nc1_end']:.3g} ({nc1[s]:.0f}x "
                f"below init, {tpt[s]:.0f}x after zero error){mark(nc1_seed, s)}"
                for s, r in judged.items()) + note),
      skip(names[1], "with 2 classes the centred class means are antipodal at every step "
                     "(a simplex ETF of two points): nothing to judge") if num_classes == 2 else
      Check(names[1], bool(ok and all(etf_seed.values())),
            frac(etf_seed) + "NC2 ETF distance init -> zero error -> end " + "; ".join(
                f"seed {s}: {r['nc2_etf_init']:.3g} -> {r['nc2_etf_tpt']:.3g} -> "
                f"{r['nc2_etf_end']:.3g} ({etf[s]:.1f}x){mark(etf_seed, s)}"
                for s, r in judged.items())
            + "; equinorm CV " + ", ".join(f"{r['nc2_equinorm_end']:.3g}"
                                           for r in judged.values())
            + "; equiangle std " + ", ".join(f"{r['nc2_equiangle_end']:.3g}"
                                             for r in judged.values())
            + "; NC3 " + ", ".join(f"{r['nc3_end']:.3g}" for r in judged.values())
            + "; NC4 " + ", ".join(f"{r['nc4_end']:.3f}" for r in judged.values()) + note),
  ]


def signature(ds: xr.Dataset, nc1_drop: float = 100.0, etf_max: float = 0.25,
              etf_drop: float = 2.0, control_nc1: float = 10.0) -> list:
  """The signature checks with their measured numbers.

  For every run of a learning rate above the smallest (:func:`collapse_checks`)
  that reaches zero training error in its budget: training error stays zero
  to the end; NC1 ends at least ``nc1_drop``-fold below its value at
  initialization and no higher than at the step where training error first
  reached zero (collapse may begin before zero error: Papyan et al.'s NC1
  falls from the start of training and keeps falling through the terminal
  phase); and the class means approach a simplex ETF: their distance to one
  (``nc2_etf``, between 0 and about 1.4) ends at most ``etf_max`` and at
  least ``etf_drop``-fold below its value at initialization. (In a short
  budget a deep net's means do not reach the ETF exactly: as in Papyan et
  al., the equinorm and equiangularity measures level off near 0.05-0.1.)

  The control is the smallest learning rate: it must spend at most half as
  much training time in the terminal phase as any main run (time: the sum of
  the learning rates over its steps, schedule included; none at all if it
  never fits) and collapse less, its final NC1 at least ``control_nc1`` times
  every main run's. A control that fits as early as the main runs is no
  control in this budget, and the check says so (fewer steps or a smaller
  learning rate). With one learning rate it is skipped.
  """
  lrs = sorted(float(v) for v in ds.lr.values)
  checks = []
  for lr in (lrs[1:] if len(lrs) >= 2 else lrs):
    checks += collapse_checks(ds, lr, nc1_drop, etf_max, etf_drop)
  name = "control: a small learning rate"
  if len(lrs) < 2:
    checks.append(skip(name, "needs at least two learning rates (the smallest is the control)"))
    return checks
  lr = lrs[0]
  tp = terminal_phase(ds)
  cfg = json.loads(ds.attrs.get("config", "{}"))
  steps = int(ds.step.values[-1])
  # The length of a terminal phase in training time: the sum of the learning rates of its
  # steps (SGD at rate lr for k steps moves as gradient flow for time lr * k, and weight
  # decay shrinks the weights by lr * wd per step), so 5000 steps at lr 1e-4 are the
  # training of 5 steps at lr 0.1, not half of a main run's 10000.
  rates = {float(l): learning_rates(cfg.get("schedule", "constant"), float(l),
                                    cfg.get("steps", steps)) for l in ds.lr.values}

  def tpt_time(r, lr):
    if not np.isfinite(r["zero_error_step"]):
      return 0.0
    return float(rates[float(lr)][int(r["zero_error_step"]):int(r["last_step"])].sum())
  runs = {s: r for (s, l), r in tp.items() if l == lr}
  main = {(s, l): r for (s, l), r in tp.items() if l != lr}
  main_time = min(tpt_time(r, l) for (s, l), r in main.items())
  main_len = min(r["last_step"] - r["zero_error_step"] for r in main.values())
  main_nc1 = max(r["nc1_end"] for r in main.values())
  ok = all(tpt_time(r, lr) <= 0.5 * main_time and r["nc1_end"] >= control_nc1 * main_nc1
           for r in runs.values())
  checks.append(Check(
      f"control lr={lr:g}: a terminal phase at most half as long as the main runs' in "
      f"training time (sum of lr; or none), and NC1 ending >= {control_nc1:g}x theirs",
      bool(ok),
      "; ".join(f"seed {s}: " + (f"zero error at step {r['zero_error_step']:.0f} "
                                 f"({r['last_step'] - r['zero_error_step']:.0f} steps of "
                                 f"terminal phase, training time {tpt_time(r, lr):.3g})"
                                 if np.isfinite(r["zero_error_step"]) else
                                 "no terminal phase")
                + f", final train accuracy {100 * r['final_train_acc']:.1f}%, NC1 "
                  f"{r['nc1_init']:.3g} -> {r['nc1_end']:.3g}, NC2 ETF distance "
                  f"{r['nc2_etf_init']:.3g} -> {r['nc2_etf_end']:.3g}"
                for s, r in runs.items())
      + f"; main runs: terminal phase >= {main_len:.0f} steps (training time "
        f">= {main_time:.3g}), NC1 <= {main_nc1:.3g}"))
  return checks


def figures(ds: xr.Dataset, out_dir: str | os.PathLike) -> list[str]:
  """NC1-NC4 against step (one line per learning rate), the zero-error step marked; accuracy."""
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  names = ("nc1", "nc2_etf", "nc3", "nc4")
  titles = ("NC1: Tr(Σ_W Σ_B⁺)/C", "NC2: distance to simplex ETF",
            "NC3: readout vs class means", "NC4: agreement with NCC")
  fig = plots.agg_figure((14.0, 3.4))
  axes = fig.subplots(1, 4)
  steps = ds.step.values
  tp = terminal_phase(ds)
  for k, lr in enumerate(ds.lr.values):
    for ax, m in zip(axes, names):
      runs = ds.collapse_metrics.sel(lr=lr, collapse=m)
      ax.plot(steps, runs.mean("seed").values, color=f"C{k}", lw=1.6, label=f"lr {lr:g}")
      ax.fill_between(steps, runs.min("seed").values, runs.max("seed").values,
                      color=f"C{k}", alpha=0.18, lw=0)
    t0 = [r["zero_error_step"] for (s, l), r in tp.items() if l == lr]
    t0 = [t for t in t0 if np.isfinite(t)]
    if t0:
      for ax in axes:
        ax.axvline(min(t0), color=f"C{k}", ls=":", lw=1)
  for ax, m, title in zip(axes, names, titles):
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    if m != "nc4":
      ax.set_yscale("log")
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel("step (dotted: 100% train accuracy)")
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize="small")
  path = os.path.join(out_dir, "collapse_vs_step.png")
  fig.savefig(path, dpi=130)
  ax = plots.metric_vs_step(ds, "train_acc", "lr")
  acc = os.path.join(out_dir, "train_acc_by_lr.png")
  ax.figure.savefig(acc, dpi=130)
  return [path, acc]
