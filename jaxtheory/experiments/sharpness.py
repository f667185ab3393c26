r"""Flat and sharp minima: SAM, larger learning rates and smaller batches end flatter.

Keskar et al. (2017), "On large-batch training for deep learning: generalization
gap and sharp minima" (ICLR): large batches reach sharper minima; Foret et al.
(2021), "Sharpness-aware minimization for efficiently improving generalization"
(ICLR): SAM with radius :math:`\rho` seeks flat ones; Jiang et al. (2020),
"Fantastic generalization measures and where to find them" (ICLR): sharpness
correlates with generalization better than most measures, though later work
(e.g. Andriushchenko et al. 2023) finds the correlation weak and
setting-dependent. Here the correlation is therefore a measured number with
its bootstrap confidence interval, not a check.

Setting: an MLP (``depth`` x ``width``) on a balanced MNIST subset (``n_train``
images at full resolution, flattened to 784 inputs) with MSE on one-hot targets, trained by
SAM (``optimizer='sam'``; :math:`\rho = 0` is plain SGD) over the grid
``seed x lr x rho`` in one program per batch size
(:func:`jaxtheory.sweep.run_over` over ``batch_size``; the largest is the whole
training set, gradient descent). Every run trains until it interpolates; the
minima are compared at the same train loss (a run above ``target_loss`` at the
end is not compared). At the end, the top Hessian eigenvalue (Lanczos) and the
Hessian trace (Hutchinson) of the training loss are measured for every run at
once (:func:`jaxtheory.probes.over_runs` on the sweep's parameters). The
papers train VGG/ResNets on CIFAR for hundreds of epochs; this is a CPU-sized
version of the same comparison.

Signature: raising :math:`\rho`, raising the learning rate and shrinking the
batch each lower the sharpness, in most matched pairs (same seed and other
hyperparameters) and by a median factor. Control: two seeds of the same
hyperparameters (no cause changed) differ by much less; the same criterion
applied to them fails.

The defaults (MNIST, 256 images, 2 x 64 units, 2 seeds x lr 0.1/0.3 x rho
0/0.05/0.1 x batch 8/256, 1000 steps) take about 2.5 minutes on a 2-core CPU;
16 of 24 runs reach train loss 0.01 (SAM at rho > 0 with batch 8 stays above
it). Median lambda_max ratios: rho 0.1 vs 0, 0.24 (4/4 pairs flatter); SGD lr
0.3 vs 0.1, 0.35 (4/4); SGD batch 8 vs 256, 0.60 (4/4); seed vs seed, 0.99
(4/8 below 1). Full-batch GD at lr 0.1 / 0.3 ends at lambda_max 19.7 / 6.8,
the edge of stability's 2/lr being 20 / 6.7. The rank
correlation of lambda_max with test error is -0.32 [-0.64, 0.19] over 16 runs,
of the trace -0.48 [-0.76, 0.05]: flatter is not measurably better here.

>>> from jaxtheory.experiments import sharpness as sh
>>> cfg = sh.Config(n_train=40, n_test=40, seeds=1, width=8, lrs=(0.1,), rhos=(0.0,),
...                 batch_sizes=(40,), steps=3, dataset="digits", lanczos_iters=4,
...                 trace_probes=2)
>>> sh.run(cfg).top_eigenvalue.dims
('batch_size', 'seed', 'lr', 'rho')
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from scipy import stats

from jaxtheory import data, nn, plots, probes, sweep
from jaxtheory.experiments.check import Check, positive_ints, seed_list, timing_rows
from jaxtheory.losses import mse
from jaxtheory.probes import curvature
from jaxtheory.errors import ConfigError

DATASETS = ("mnist", "fashion-mnist", "digits")


@dataclasses.dataclass(frozen=True)
class Config:
  """The sharpness settings (every field overridable by ``--set key=value``).

  Attributes:
    dataset: ``'mnist'``, ``'fashion-mnist'`` or ``'digits'``.
    n_train: training examples (balanced over classes).
    n_test: test examples.
    data_seed: seed of the subset.
    seeds: number of seeds (or explicit seeds ``5,7``).
    width: hidden width.
    depth: hidden layers.
    lrs: learning rates (a grid axis).
    rhos: SAM radii (a grid axis; 0 is plain SGD).
    batch_sizes: minibatch sizes (one sweep each); the largest should be ``n_train``.
    steps: optimizer steps.
    target_loss: runs are compared when their final train loss is at most this.
    lanczos_iters: Lanczos steps for the top Hessian eigenvalue.
    trace_probes: Hutchinson probes for the Hessian trace.
    bootstrap: bootstrap resamples for the rank correlation's interval.
  """
  dataset: str = "mnist"
  n_train: int = 256
  n_test: int = 1000
  data_seed: int = 0
  seeds: int | tuple[int, ...] = 2
  width: int = 64
  depth: int = 2
  lrs: tuple[float, ...] = (0.1, 0.3)
  rhos: tuple[float, ...] = (0.0, 0.05, 0.1)
  batch_sizes: tuple[int, ...] = (8, 256)
  steps: int = 1000
  target_loss: float = 0.01
  lanczos_iters: int = 20
  trace_probes: int = 20
  bootstrap: int = 2000


def _check(cfg: Config) -> None:
  if cfg.dataset not in DATASETS:
    raise ConfigError(f"unknown dataset {cfg.dataset!r}; available: {', '.join(DATASETS)}")
  seed_list(cfg.seeds)
  positive_ints(cfg, "n_train", "n_test", "width", "depth", "steps", "lanczos_iters",
                "bootstrap")
  if cfg.trace_probes < 2:
    raise ConfigError(f"trace_probes must be at least 2, got {cfg.trace_probes!r}")
  if not cfg.lrs or any(v <= 0 for v in cfg.lrs) or len(set(cfg.lrs)) != len(cfg.lrs):
    raise ConfigError(f"lrs must be distinct positive numbers, got {cfg.lrs!r}")
  if not cfg.rhos or any(v < 0 for v in cfg.rhos) or len(set(cfg.rhos)) != len(cfg.rhos):
    raise ConfigError(f"rhos must be distinct numbers >= 0, got {cfg.rhos!r}")
  if (not cfg.batch_sizes or len(set(cfg.batch_sizes)) != len(cfg.batch_sizes)
      or any(b < 1 or b > cfg.n_train for b in cfg.batch_sizes)):
    raise ConfigError(f"batch_sizes must be distinct integers in [1, n_train], "
                      f"got {cfg.batch_sizes!r}")
  if cfg.target_loss <= 0:
    raise ConfigError(f"target_loss must be positive, got {cfg.target_loss!r}")


def load_data(cfg: Config) -> data.Dataset:
  """The balanced training subset and ``n_test`` test examples (MNIST at full resolution)."""
  return data.balanced(cfg.dataset, n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.data_seed)


def curvature_probe(model: nn.Model, lanczos_iters: int, trace_probes: int) -> Callable:
  """``probe(params, ctx, x, y) -> (top eigenvalue, trace)`` of the MSE loss Hessian of one run
  on inputs ``x`` with one-hot targets ``y`` (arguments, so that the program holds no data)."""

  def probe(params, ctx, x, y):
    w = jnp.ones(x.shape[:1], jnp.float32)
    loss = lambda p: mse(model.apply(p, x, ctx), y, w)
    op = curvature.hessian(loss, params)
    top = curvature.top_eigenvalues(op, jax.random.key(0), 1, lanczos_iters)[0]
    tr, _ = curvature.hutchinson_trace(op, jax.random.key(1), trace_probes)
    return top, tr

  return probe


def run(cfg: Config, progress: Callable[[int, int, str], None] | None = None,
        **engine) -> xr.Dataset:
  r"""Trains ``seed x lr x rho`` per batch size; measures every run's curvature at the end.

  Args:
    cfg: the configuration.
    progress: ``progress(steps_done, steps_total, info)``, called as training advances.
    **engine: execution options of :func:`jaxtheory.sweep.run`.

  Returns:
    Dims ``(batch_size, seed, lr, rho)`` (and ``step`` for the curves):
    ``top_eigenvalue`` and ``hessian_trace`` of the final training loss,
    ``final_train_loss``, ``test_error`` (1 - test accuracy), ``converged``
    (final train loss at most ``target_loss``).
  """
  _check(cfg)
  ds = load_data(cfg)
  seeds = seed_list(cfg.seeds)
  C = ds.num_classes
  engine = {k: v for k, v in engine.items() if k != "return_params"}

  def make(bs):
    return sweep.Sweep(
        model=lambda w: nn.mlp(ds.input_shape, w, cfg.depth, C), data=ds,
        grid=dict(seed=seeds, width=[cfg.width], lr=list(cfg.lrs), rho=list(cfg.rhos)),
        optimizer="sam", steps=cfg.steps, batch_size=int(bs), record="log:12", loss="mse",
        name="sharpness")

  res, groups = sweep.execute_over("batch_size", [int(b) for b in sorted(cfg.batch_sizes)], make,
                                   progress=progress, **engine)
  res = res.isel(width=0, drop=True)
  x = jnp.asarray(ds.x_train)
  y = jax.nn.one_hot(jnp.asarray(ds.y_train), C)
  top = xr.full_like(res.train_loss.isel(step=-1, drop=True), np.nan, dtype=np.float64)
  tr = top.copy()
  for bs, gs in groups.items():
    for g in gs:
      probe = curvature_probe(g.model, cfg.lanczos_iters, cfg.trace_probes)
      t, h = probes.over_runs(probe, g.params, g.ctx, x, y, in_axes=(0, 0, None, None),
                              store_key=None if g.key is None else (
                                  g.key, "curvature_probe", cfg.lanczos_iters, cfg.trace_probes))
      for i in range(len(g.runs)):
        sel = dict(batch_size=bs, seed=g.coords["seed"][i], lr=g.coords["lr"][i],
                   rho=g.coords["rho"][i])
        top.loc[sel] = float(t[i])
        tr.loc[sel] = float(h[i])
  end = res.isel(step=-1, drop=True)
  res = res.assign(top_eigenvalue=top, hessian_trace=tr,
                   final_train_loss=end.train_loss, test_error=1.0 - end.test_acc,
                   converged=(end.train_loss <= cfg.target_loss) & ~end.diverged)
  res.attrs["experiment"] = "sharpness"
  res.attrs["dataset"] = ds.name
  res.attrs["target_loss"] = cfg.target_loss
  res.attrs["config"] = json.dumps(dataclasses.asdict(cfg))
  return res


# ----------------------------------------------------------------------------
# Reading the results.


def paired_ratios(ds: xr.Dataset, var: str, dim: str, low, high) -> np.ndarray:
  """``var`` at ``dim=high`` over ``var`` at ``dim=low``, for every matched pair of converged runs."""
  a, b = ds[var].sel({dim: low}), ds[var].sel({dim: high})
  ok = ds.converged.sel({dim: low}) & ds.converged.sel({dim: high})
  r = (b / a).where(ok)
  v = np.asarray(r.values, np.float64).ravel()
  return v[np.isfinite(v)]


def seed_ratios(ds: xr.Dataset, var: str) -> np.ndarray:
  """``var`` of each seed over the first seed's, same hyperparameters (converged pairs): the null."""
  s0 = ds.seed.values[0]
  out = []
  for s in ds.seed.values[1:]:
    ok = ds.converged.sel(seed=s0) & ds.converged.sel(seed=s)
    r = (ds[var].sel(seed=s) / ds[var].sel(seed=s0)).where(ok)
    out.append(np.asarray(r.values, np.float64).ravel())
  v = np.concatenate(out) if out else np.array([])
  return v[np.isfinite(v)]


def flatter(r: np.ndarray, max_ratio: float, min_fraction: float) -> bool:
  """Whether most pairs got flatter: ``>= min_fraction`` of ratios below 1, median ``<= max_ratio``."""
  return bool(len(r) > 0 and np.mean(r < 1) >= min_fraction and np.median(r) <= max_ratio)


def rank_correlation(ds: xr.Dataset, var: str = "top_eigenvalue", n_boot: int = 2000,
                     seed: int = 0) -> tuple[float, float, float, int]:
  """Spearman's rho of ``var`` with test error over converged runs, and a 95% bootstrap interval.

  Returns:
    ``(rho, low, high, n)``: percentile interval over ``n_boot`` resamples of runs.
  """
  ok = np.asarray(ds.converged.values, bool).ravel()
  s = np.asarray(ds[var].values, np.float64).ravel()[ok]
  e = np.asarray(ds.test_error.values, np.float64).ravel()[ok]
  n = len(s)
  if n < 4:
    return float("nan"), float("nan"), float("nan"), n
  rho = float(stats.spearmanr(s, e).statistic)
  rng = np.random.default_rng(seed)
  boot = []
  for _ in range(n_boot):
    i = rng.integers(0, n, n)
    if np.ptp(s[i]) > 0 and np.ptp(e[i]) > 0:
      boot.append(stats.spearmanr(s[i], e[i]).statistic)
  lo, hi = np.percentile(boot, [2.5, 97.5]) if boot else (np.nan, np.nan)
  return rho, float(lo), float(hi), n


def summary(ds: xr.Dataset) -> list[tuple[str, str]]:
  """Rows: sharpness, trace and test error per setting (seed means); the measured correlation."""
  rows = [("dataset", f"{ds.attrs.get('dataset')}, {int(ds.converged.sum())} of "
                      f"{ds.converged.size} runs at train loss <= {ds.attrs.get('target_loss')}")]
  m = ds.mean("seed")
  for bs in ds.batch_size.values:
    for lr in ds.lr.values:
      for rho in ds.rho.values:
        r = m.sel(batch_size=bs, lr=lr, rho=rho)
        rows.append((f"batch={int(bs)} lr={float(lr):g} rho={float(rho):g}",
                     f"lambda_max {float(r.top_eigenvalue):.3g}, trace "
                     f"{float(r.hessian_trace):.3g}, test error "
                     f"{100 * float(r.test_error):.1f}%, train loss "
                     f"{float(r.final_train_loss):.2g}"))
  cfg = json.loads(ds.attrs.get("config", "{}"))
  for var in ("top_eigenvalue", "hessian_trace"):
    rho, lo, hi, n = rank_correlation(ds, var, cfg.get("bootstrap", 2000))
    rows.append((f"Spearman({var}, test error)", f"{rho:.2f} [95% CI {lo:.2f}, {hi:.2f}], "
                                                  f"{n} runs (measured, not a check)"))
  rows += timing_rows(ds)
  return rows


def _fmt(r: np.ndarray) -> str:
  if not len(r):
    return "no converged pairs"
  return (f"{int(np.sum(r < 1))}/{len(r)} pairs flatter, median ratio {np.median(r):.2f} "
          f"(range {r.min():.2f}-{r.max():.2f})")


def signature(ds: xr.Dataset, max_ratio: float = 0.8, min_fraction: float = 0.75) -> list[Check]:
  """The signature checks with their measured numbers.

  For each cause, over matched pairs of converged runs (same seed and other
  hyperparameters): the top Hessian eigenvalue at the flat end over that at the
  sharp end is below 1 in ``>= min_fraction`` of pairs with median ``<=
  max_ratio`` (and the trace's ratio is reported). The cause's ends: SAM
  largest rho vs rho = 0 (at every lr and batch); for plain SGD (rho = 0, the
  setting of Keskar et al.), largest vs smallest lr and smallest vs largest
  batch.
  The control: seed against seed at the same hyperparameters fails the same
  criterion. Unconverged runs are left out; an axis with one value is SKIP.
  """
  checks = []
  sgd = ds.sel(rho=[0.0]) if 0.0 in ds.rho.values else ds
  axes = (("rho", "SAM (largest rho vs rho = 0)", 0, -1, ds),
          ("lr", "SGD with a larger learning rate", 0, -1, sgd),
          ("batch_size", "SGD with a smaller batch (vs the largest)", -1, 0, sgd))
  for dim, what, i_sharp, i_flat, part in axes:
    name = f"{what} reaches flatter minima (lambda_max ratio < 1 in >= {min_fraction:.0%} of " \
           f"pairs, median <= {max_ratio:g})"
    vals = ds[dim].values
    if len(vals) < 2:
      checks.append(Check(name, False, f"one {dim} in the grid", skipped=True))
      continue
    r = paired_ratios(part, "top_eigenvalue", dim, vals[i_sharp], vals[i_flat])
    t = paired_ratios(part, "hessian_trace", dim, vals[i_sharp], vals[i_flat])
    if not len(r):
      checks.append(Check(name, False, f"no matched pair of runs at train loss <= "
                          f"{ds.attrs.get('target_loss')} (train longer)", skipped=True))
      continue
    checks.append(Check(name, flatter(r, max_ratio, min_fraction),
                        f"{dim} {vals[i_flat]:g} vs {vals[i_sharp]:g}: lambda_max {_fmt(r)}; "
                        f"trace {_fmt(t)}"))
  name = "control, seed vs seed at the same hyperparameters: not flatter by the same criterion"
  if ds.sizes["seed"] < 2:
    checks.append(Check(name, False, "one seed in the grid", skipped=True))
  else:
    r = seed_ratios(ds, "top_eigenvalue")
    if not len(r):
      checks.append(Check(name, False, "no converged pair of seeds", skipped=True))
      return checks
    checks.append(Check(name, len(r) > 0 and not flatter(r, max_ratio, min_fraction),
                        f"lambda_max {_fmt(r)}"))
  return checks


def figures(ds: xr.Dataset, out_dir: str | os.PathLike) -> list[str]:
  """Sharpness against rho / lr per batch size; test error against sharpness."""
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  fig = plots.agg_figure((12.0, 3.8))
  ax_rho, ax_tr, ax_err = fig.subplots(1, 3)
  m = ds.where(ds.converged).mean("seed")
  k = 0
  for bs in ds.batch_size.values:
    for lr in ds.lr.values:
      r = m.sel(batch_size=bs, lr=lr)
      lab = f"batch {int(bs)}, lr {float(lr):g}"
      ax_rho.plot(ds.rho.values, r.top_eigenvalue, "o-", color=f"C{k}", label=lab)
      ax_tr.plot(ds.rho.values, r.hessian_trace, "o-", color=f"C{k}", label=lab)
      k += 1
  for ax, title in ((ax_rho, "top Hessian eigenvalue"), (ax_tr, "Hessian trace")):
    ax.set_yscale("log")
    ax.set_xlabel("SAM rho")
    ax.set_title(title, fontsize="medium")
    ax.legend(fontsize="x-small")
  ok = np.asarray(ds.converged.values, bool).ravel()
  s = np.asarray(ds.top_eigenvalue.values).ravel()
  e = np.asarray(ds.test_error.values).ravel()
  ax_err.scatter(s[ok], 100 * e[ok], s=12)
  ax_err.set_xscale("log")
  ax_err.set_xlabel("top Hessian eigenvalue")
  ax_err.set_ylabel("test error (%)")
  ax_err.set_title("test error vs sharpness (converged runs)", fontsize="medium")
  for ax in (ax_rho, ax_tr, ax_err):
    ax.grid(alpha=0.3)
  path = os.path.join(out_dir, "sharpness.png")
  fig.savefig(path, dpi=130)
  return [path]
