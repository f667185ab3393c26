r"""The platonic representation: the more competent the networks, the more their representations agree.

Huh, Cheung, Wang & Isola (2024), "The Platonic Representation Hypothesis"
(ICML). Networks trained on data converge towards a shared statistical model
of it: the better models are at their task, the more alike their
representations are, across architectures, sizes and seeds. Alignment is
measured by *mutual k-nearest neighbours* (their Sec. 2): for each of ``n``
inputs, the overlap of its ``k`` nearest neighbours (cosine similarity) in
the two representations,
:math:`m(f, g) = \frac1n\sum_i |N_f(i)\cap N_g(i)|/k`
(:func:`jaxtheory.probes.similarity.mutual_knn_matrix`), whose value for
unrelated representations is :math:`k/(n-1)`
(:func:`~jaxtheory.probes.similarity.mutual_knn_chance`). The paper compares
78 vision models (and language models) on 1024 images with ``k = 10``, and
finds that models solving more tasks align more with each other.

Setting, scaled down for a CPU: MLPs of ``depths`` hidden layers (default 1
and 2) and ``widths`` units (16, 64, 256), ``seeds`` seeds each, trained with
minibatch SGD on a balanced MNIST subset (``per_class`` images per class,
pooled to 14x14), every depth one sweep over seeds x widths; plus a Flax
linen MLP (``flax_depth`` x ``flax_width``, through
:func:`jaxtheory.nn.flax.from_linen`), trained by the same engine from the
same seeds. The penultimate representations of all these networks
(:func:`jaxtheory.probes.separation.layer_features`) are compared on
``n_eval`` held-out test images, ``k = 10``, once after training and once at
initialisation (the same networks before any step, from
:func:`jaxtheory.sweep.initial_params`).

The signature (:func:`signature`):

* alignment rises with competence: Spearman's :math:`\rho` between a pair's
  alignment and the lower of its two test accuracies, over all pairs of
  networks, with a bootstrap interval over networks
  (:func:`jaxtheory.analysis.pairwise_rank_correlation`), lies above zero;
* the largest networks agree more among themselves than the smallest do:
  mean alignment of pairs at the widest width minus that at the narrowest,
  at least ``margin``.

The control, the same networks untrained: their alignment does not rise with
their (chance-level) accuracy. What the control does *not* show, measured
and printed: untrained networks do align, far above chance and more the
wider they are (on 500 MNIST test images, two random ReLU MLPs of one hidden
layer align 0.14 at width 16 and 0.82 at width 1024, chance 0.02), because a
wide random network's features approach its NNGP kernel, a fixed function of
the inputs' geometry (Neal 1996; Lee et al. 2018). So "larger networks align
more" is by itself no evidence of learning; the size check is read together
with the competence check and with the untrained alignments printed beside
it. The summary also gives the rank correlation of the *untrained*
alignment with the *trained* accuracy: the part of the competence
correlation the architecture alone predicts.

The defaults (2 seeds x 3 widths x 2 depths MLPs and 2 Flax MLPs, 800 SGD
steps of batch 100 on 1000 images) take 41 s on a quiet 2-core CPU (12 s
again, its programs loaded from the compilation cache).

>>> from jaxtheory.experiments import platonic as pl
>>> cfg = pl.Config(dataset="digits", per_class=10, n_eval=40, k=3, seeds=1, widths=(8, 16),
...                 depths=(1,), flax_width=8, steps=5, record=2, bootstrap=10)
>>> pl.run(cfg).alignment.dims
('stage', 'model_a', 'model_b')
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import jax
import numpy as np
import xarray as xr

from jaxtheory import data, nn, plots, sweep
from jaxtheory.analysis import optimization_status, pairwise_rank_correlation
from jaxtheory.errors import ConfigError
from jaxtheory.experiments.check import Check, positive_ints, seed_list, skip, timing_rows
from jaxtheory.probes import over_runs
from jaxtheory.probes import similarity as S
from jaxtheory.probes.separation import layer_features

DATASETS = ("mnist", "fashion-mnist", "digits")
STAGES = ("trained", "init")


@dataclasses.dataclass(frozen=True)
class Config:
  """The platonic-representation settings (every field overridable by ``--set key=value``).

  Attributes:
    dataset: ``'mnist'``, ``'fashion-mnist'`` or ``'digits'``.
    per_class: training examples per class (balanced), drawn at random.
    pool: average-pooling factor of the images (2: 28x28 -> 14x14; digits: 1).
    data_seed: seed of the training subset and of the evaluation inputs.
    n_eval: test inputs the representations are compared on (balanced).
    k: nearest neighbours of the mutual k-NN alignment.
    seeds: number of seeds (runs use seeds ``0..seeds-1``) or explicit seeds.
    widths: hidden widths of the MLPs, swept in one program per depth.
    depths: hidden layers of the MLPs, one sweep each.
    flax_width: hidden width of the Flax linen MLP (0: no Flax model).
    flax_depth: hidden layers of the Flax linen MLP.
    lr: SGD learning rate.
    batch_size: minibatch size.
    steps: SGD steps.
    record: about this many log-spaced recording points.
    bootstrap: bootstrap resamples (over networks) of the rank correlations.
  """
  dataset: str = "mnist"
  per_class: int = 100
  pool: int = 2
  data_seed: int = 0
  n_eval: int = 500
  k: int = 10
  seeds: int | tuple[int, ...] = 2
  widths: tuple[int, ...] = (16, 64, 256)
  depths: tuple[int, ...] = (1, 2)
  flax_width: int = 64
  flax_depth: int = 2
  lr: float = 0.1
  batch_size: int = 100
  steps: int = 800
  record: int = 5
  bootstrap: int = 1000


def _check(cfg: Config) -> None:
  if cfg.dataset not in DATASETS:
    raise ConfigError(f"unknown dataset {cfg.dataset!r}; available: {', '.join(DATASETS)}")
  positive_ints(cfg, "per_class", "pool", "n_eval", "k", "batch_size", "steps", "record",
                "bootstrap", "flax_depth")
  seed_list(cfg.seeds)
  if not cfg.widths or any(w < 1 for w in cfg.widths) or len(set(cfg.widths)) != len(cfg.widths):
    raise ConfigError(f"widths must be distinct positive integers, got {cfg.widths!r}")
  if not cfg.depths or any(d < 1 for d in cfg.depths) or len(set(cfg.depths)) != len(cfg.depths):
    raise ConfigError(f"depths must be distinct positive integers, got {cfg.depths!r}")
  if cfg.flax_width < 0:
    raise ConfigError(f"flax_width must be >= 0 (0: no Flax model), got {cfg.flax_width!r}")
  if cfg.k >= cfg.n_eval:
    raise ConfigError(f"k must be below n_eval, got k={cfg.k}, n_eval={cfg.n_eval}")
  if cfg.lr <= 0:
    raise ConfigError(f"lr must be positive, got {cfg.lr!r}")


def linen_mlp(width: int, depth: int, classes: int):
  """A plain Flax linen MLP: flatten, ``depth`` x (Dense ``width``, ReLU), a Dense readout.

  Flax is imported here, on use, so that importing the experiments stays light.
  """
  import flax.linen as linen  # pylint: disable=import-outside-toplevel

  class LinenMLP(linen.Module):
    width: int
    depth: int
    classes: int

    @linen.compact
    def __call__(self, x):
      x = x.reshape(x.shape[0], -1)
      for _ in range(self.depth):
        x = linen.relu(linen.Dense(self.width)(x))
      return linen.Dense(self.classes)(x)

  return LinenMLP(width, depth, classes)


def load_data(cfg: Config) -> tuple[data.Dataset, np.ndarray]:
  """The balanced training subset (every test example for accuracy) and the evaluation inputs."""
  kw = {} if cfg.dataset == "digits" else dict(pool=cfg.pool)
  full = data.load(cfg.dataset, seed=cfg.data_seed, **kw)
  train = data.subset(full, n_train=full.num_classes * cfg.per_class, seed=cfg.data_seed,
                      balanced=True)
  n_eval = min(cfg.n_eval, len(full.x_test))
  if cfg.k >= n_eval:
    raise ConfigError(f"k must be below the {n_eval} evaluation inputs, got {cfg.k}")
  x_eval = data.subset(full, n_test=n_eval, seed=cfg.data_seed + 1,
                       balanced=True).x_test
  return train, np.asarray(x_eval)


def _neighbours(groups, x, k) -> list[np.ndarray]:
  """Per group, the ``(runs, n, k)`` neighbour sets of every run's penultimate features."""
  out = []
  for g in groups:
    fn = lambda p, c, g=g: S.knn_indices(layer_features(g.model, p, x, c)[-1], k)
    out.append(np.asarray(jax.jit(lambda P, C: over_runs(fn, P, C))(g.params, g.ctx)))
  return out


def _n_params(groups) -> list[int]:
  """Parameters of each run's network (active ones: padded entries are zero)."""
  out = []
  for g in groups:
    for i in range(len(g.runs)):
      out.append(int(sum(np.count_nonzero(np.asarray(a)[i]) for a in jax.tree.leaves(g.params))))
  return out


def run(cfg: Config, progress: Callable[[int, int, str], None] | None = None,
        **engine) -> xr.Dataset:
  """Trains every network, then compares all their representations, trained and untrained.

  Args:
    cfg: the configuration.
    progress: ``progress(steps_done, steps_total, info)``, called as training advances.
    **engine: execution options of :func:`jaxtheory.sweep.run` (``return_params``
      is not offered). A ``checkpoint`` path ``x.npz`` checkpoints the MLP
      sweeps to ``x-part-mlp-depth-<d>.npz`` and the Flax one to
      ``x-part-flax.npz``.

  Returns:
    The MLPs' training results (dims ``(depth, seed, width, step)``) with,
    over the ``model`` axis of every network (coords ``arch``,
    ``model_depth``, ``model_width``, ``model_seed``, ``n_params``),
    ``test_acc_final`` ``(stage, model)`` and ``alignment`` ``(stage,
    model_a, model_b)``, the mutual k-NN matrix; ``attrs['chance']`` is
    :math:`k/(n-1)`; the configuration as JSON in ``attrs['config']``.
  """
  _check(cfg)
  if engine.pop("return_params", False):
    raise ConfigError("platonic does not return parameters")
  ck = engine.pop("checkpoint", None)
  part = lambda name: None if ck is None else sweep.compose.part_path(ck, "part", name)
  ds, x_eval = load_data(cfg)
  K = ds.num_classes
  seeds = seed_list(cfg.seeds)
  common = dict(data=ds, optimizer="sgd", hparams=dict(lr=cfg.lr), batch_size=cfg.batch_size,
                steps=cfg.steps, record=cfg.record)
  make = lambda d: sweep.Sweep(lambda w: nn.mlp(ds.input_shape, w, d, K),
                               grid=dict(seed=seeds, width=list(cfg.widths)),
                               name=f"platonic-depth{d}", **common)
  res, groups = sweep.execute_over("depth", list(cfg.depths), make, progress=progress,
                                   checkpoint=part("mlp"), **engine)
  parts = [("mlp", d, make(d), groups[d], res.sel(depth=d)) for d in cfg.depths]
  if cfg.flax_width:
    fx = sweep.Sweep(lambda w: nn.flax.from_linen(linen_mlp(w, cfg.flax_depth, K),
                                                   ds.input_shape),
                     grid=dict(seed=seeds, width=[cfg.flax_width]), name="platonic-flax",
                     **common)
    fres, fgroups = sweep.execute(fx, progress=progress, checkpoint=part("flax"), **engine)
    parts.append(("flax-mlp", cfg.flax_depth, fx, fgroups, fres))
    for key in ("compile_seconds", "run_seconds"):
      res.attrs[key] = float(res.attrs.get(key, 0.0)) + float(fres.attrs.get(key, 0.0))

  x = jax.numpy.asarray(x_eval)
  meta = {k: [] for k in ("arch", "model_depth", "model_width", "model_seed", "n_params")}
  acc = {stage: [] for stage in STAGES}
  nbrs = {stage: [] for stage in STAGES}
  status = []
  for arch, depth, sw, trained, r in parts:
    untrained = sweep.initial_params(sw)
    nbrs["trained"] += _neighbours(trained, x, cfg.k)
    nbrs["init"] += _neighbours(untrained, x, cfg.k)
    for g in trained:
      for s, w in zip(g.coords["seed"], g.coords["width"]):
        run_ = r.sel(seed=s, width=w)
        meta["arch"].append(arch)
        meta["model_depth"].append(int(depth))
        meta["model_width"].append(int(w))
        meta["model_seed"].append(int(s))
        acc["trained"].append(float(run_.test_acc.isel(step=-1)))
        acc["init"].append(float(run_.test_acc.isel(step=0)))
        status.append(optimization_status(run_.train_loss.values, run_.train_acc.values,
                                          min_drop=None))
    meta["n_params"] += _n_params(trained)
  M = len(meta["arch"])
  align = np.stack([np.asarray(S.mutual_knn_matrix(np.concatenate(nbrs[st]), chunk=1))
                    for st in STAGES])
  coords = dict(stage=list(STAGES), model=np.arange(M), model_a=np.arange(M),
                model_b=np.arange(M), **{k: ("model", np.asarray(v)) for k, v in meta.items()})
  out = xr.Dataset({"alignment": (("stage", "model_a", "model_b"), align),
                    "test_acc_final": (("stage", "model"), np.array([acc[s] for s in STAGES])),
                    "train_status": ("model", np.asarray(status))}, coords=coords)
  res = res.merge(out)
  n = len(x_eval)
  res.attrs.update(experiment="platonic", dataset=ds.name, k=cfg.k, n_eval=n,
                   chance=S.mutual_knn_chance(n, cfg.k), bootstrap=cfg.bootstrap,
                   config=json.dumps(dataclasses.asdict(cfg)))
  return res


# ----------------------------------------------------------------------------
# Reading the results.


def _pairs_of(ds: xr.Dataset, mask: np.ndarray, stage: str) -> np.ndarray:
  """Alignments of the distinct pairs of networks selected by ``mask``."""
  A = ds.alignment.sel(stage=stage).values
  idx = np.flatnonzero(mask)
  a, b = np.triu_indices(len(idx), 1)
  return A[idx[a], idx[b]]


def competence(ds: xr.Dataset, stage: str = "trained",
               acc_stage: str | None = None) -> tuple[float, float, float]:
  """Spearman's rho of a pair's alignment with the lower of its two test accuracies, and its interval.

  ``stage`` picks the representations, ``acc_stage`` (default: the same) the
  accuracies; the 95% interval is a bootstrap over networks.
  """
  acc = ds.test_acc_final.sel(stage=acc_stage or stage).values
  return pairwise_rank_correlation(ds.alignment.sel(stage=stage).values,
                                   np.minimum.outer(acc, acc),
                                   resamples=int(ds.attrs.get("bootstrap", 1000)))


def by_width(ds: xr.Dataset, stage: str) -> dict[int, float]:
  """Mean alignment of the pairs of MLPs of equal width (any depth and seed), per width."""
  mlp = ds.arch.values == "mlp"
  out = {}
  for w in np.unique(ds.model_width.values[mlp]):
    v = _pairs_of(ds, mlp & (ds.model_width.values == w), stage)
    if v.size:
      out[int(w)] = float(v.mean())
  return out


def _fmt_w(d: dict[int, float]) -> str:
  return ", ".join(f"{w}: {v:.3f}" for w, v in d.items())


def summary(ds: xr.Dataset) -> list[tuple[str, str]]:
  """Rows ``(label, value)``: accuracies, alignment by width trained and untrained, chance, Flax."""
  acc = ds.test_acc_final
  rows = [("dataset", f"{ds.attrs.get('dataset')}; {ds.sizes['model']} networks compared on "
                      f"{ds.attrs['n_eval']} test inputs, k={ds.attrs['k']}"),
          ("chance level k/(n-1)", f"{ds.attrs['chance']:.4f}")]
  names = [f"{a} d{d} w{w}" for a, d, w in zip(ds.arch.values, ds.model_depth.values,
                                                 ds.model_width.values)]
  for name in dict.fromkeys(names):
    sel = np.array([n == name for n in names])
    rows.append((name, f"test acc {100 * acc.sel(stage='trained').values[sel].mean():.1f}% "
                       f"(init {100 * acc.sel(stage='init').values[sel].mean():.1f}%), "
                       f"{int(ds.n_params.values[sel][0])} params"))
  for stage in STAGES:
    rows.append((f"{stage}: alignment by width", _fmt_w(by_width(ds, stage))))
  flax = ds.arch.values == "flax-mlp"
  if flax.any():
    for stage in STAGES:
      A = ds.alignment.sel(stage=stage).values
      rows.append((f"{stage}: flax vs MLPs",
                   f"mean {A[np.ix_(flax, ~flax)].mean():.3f} (by MLP width "
                   + ", ".join(f"{int(w)}: {A[np.ix_(flax, (ds.model_width.values == w) & ~flax)].mean():.3f}"
                               for w in np.unique(ds.model_width.values[~flax])) + ")"))
  for label, st, acc_st in (("trained", "trained", None), ("init", "init", None),
                            ("init alignment vs trained acc", "init", "trained")):
    r, lo, hi = competence(ds, st, acc_st)
    rows.append((f"rho {label}", f"{r:.3f} [{lo:.3f}, {hi:.3f}]"))
  rows += timing_rows(ds)
  return rows


def signature(ds: xr.Dataset, margin: float = 0.05) -> list[Check]:
  """The signature checks with their measured numbers.

  * competence: Spearman's rho of the trained networks' pairwise alignment
    with the pair's lower test accuracy has a 95% bootstrap interval (over
    networks) above zero;
  * size: the mean alignment of pairs of the widest MLPs exceeds that of the
    narrowest by at least ``margin`` (SKIP with one width, or where a width
    has no pair: one seed and one depth);
  * control: the untrained networks' alignment does not rise with their
    accuracy (the interval's lower end is not above zero); the untrained
    alignment by width and the chance level are printed beside it.

  Networks whose training failed (:func:`jaxtheory.analysis.optimization_status`)
  make the trained checks SKIP.
  """
  chance = float(ds.attrs["chance"])
  failed = [f"{a} d{d} w{w} seed {s}: {st}" for a, d, w, s, st in zip(
      ds.arch.values, ds.model_depth.values, ds.model_width.values, ds.model_seed.values,
      ds.train_status.values) if st != "ok"]
  name_c = "alignment rises with competence (Spearman rho of pair alignment vs lower test " \
           "accuracy, 95% bootstrap interval above 0)"
  widths = sorted(by_width(ds, "trained"))
  all_w = np.unique(ds.model_width.values[ds.arch.values == "mlp"])
  name_s = (f"the widest networks align more than the narrowest (by >= {margin:g})")
  checks = []
  if failed:
    checks.append(skip(name_c, "training failed: " + "; ".join(failed)))
    checks.append(skip(name_s, "training failed: " + "; ".join(failed)))
  else:
    r, lo, hi = competence(ds)
    acc = ds.test_acc_final.sel(stage="trained").values
    checks.append(Check(name_c, bool(lo > 0),
                        f"rho {r:.3f} [{lo:.3f}, {hi:.3f}] over {ds.sizes['model']} networks "
                        f"(test acc {100 * acc.min():.1f}-{100 * acc.max():.1f}%)"))
    if len(all_w) < 2:
      checks.append(skip(name_s, "needs two widths"))
    elif all_w.min() not in widths or all_w.max() not in widths:
      checks.append(skip(name_s, "a width has a single network (needs two seeds or depths)"))
    else:
      t, u = by_width(ds, "trained"), by_width(ds, "init")
      lo_w, hi_w = int(all_w.min()), int(all_w.max())
      gap = t[hi_w] - t[lo_w]
      checks.append(Check(name_s, bool(gap >= margin),
                          f"trained alignment by width {_fmt_w(t)} (gap {gap:.3f}); untrained "
                          f"{_fmt_w(u)} (gap {u[hi_w] - u[lo_w]:.3f}); chance {chance:.4f}"))
  r, lo, hi = competence(ds, "init")
  acc0 = ds.test_acc_final.sel(stage="init").values
  checks.append(Check(
      "control: untrained networks' alignment does not rise with their accuracy (interval "
      "not above 0)", bool(not lo > 0),
      f"rho {r:.3f} [{lo:.3f}, {hi:.3f}] (test acc {100 * acc0.min():.1f}-"
      f"{100 * acc0.max():.1f}%); untrained alignment by width {_fmt_w(by_width(ds, 'init'))}, "
      f"chance {chance:.4f}"))
  return checks


def figures(ds: xr.Dataset, out_dir: str | os.PathLike) -> list[str]:
  """The alignment matrices (trained, untrained); alignment against the pair's accuracy."""
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  fig = plots.agg_figure((14.0, 4.2))
  axes = fig.subplots(1, 3)
  labels = [f"{'F' if a != 'mlp' else ''}d{d}w{w}s{s}" for a, d, w, s in zip(
      ds.arch.values, ds.model_depth.values, ds.model_width.values, ds.model_seed.values)]
  for ax, stage in zip(axes[:2], STAGES):
    im = ax.imshow(ds.alignment.sel(stage=stage).values, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize="xx-small")
    ax.set_yticks(range(len(labels)), labels, fontsize="xx-small")
    ax.set_title(f"mutual {ds.attrs['k']}-NN alignment, {stage}", fontsize="medium")
  fig.colorbar(im, ax=axes[1], fraction=0.046)
  ax = axes[2]
  iu = np.triu_indices(ds.sizes["model"], 1)
  for k, stage in enumerate(STAGES):
    acc = ds.test_acc_final.sel(stage=stage).values
    ax.scatter(100 * np.minimum.outer(acc, acc)[iu], ds.alignment.sel(stage=stage).values[iu],
               s=10, color=f"C{k}", label=stage)
  ax.axhline(float(ds.attrs["chance"]), color="k", lw=0.8, ls=":", label="chance k/(n-1)")
  ax.set_xlabel("lower test accuracy of the pair (%)")
  ax.set_ylabel("alignment")
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small")
  path = os.path.join(out_dir, "alignment.png")
  fig.savefig(path, dpi=130)
  return [path]
