r"""Wide vs deep: the block structure of layer-by-layer CKA in large residual networks.

Nguyen, Raghu & Kornblith (2021), "Do wide and deep networks learn the same
things? Uncovering how neural network representations vary with width and
depth" (ICLR), train ResNets of growing width and depth on CIFAR-10/100 and
compare every pair of layers by linear CKA (Kornblith et al. 2019). Large
models, wide or deep relative to the size of the training set (less data
brings it at smaller sizes), show a *block structure*: a contiguous run of
layers whose representations are all nearly identical (CKA close to 1), a
square on the diagonal of the CKA heatmap. Inside the block the
representations are dominated by their first principal component (PC):
removing it from every layer removes the block; the block differs between
seeds (its layers have low cross-seed CKA) while the layers before it agree
across seeds. Small models show no block. Nguyen, Raghu & Kornblith (2022),
"On the origins of the block structure phenomenon", trace the dominant PC to
a few *dominant datapoints*.

Scaled down for a CPU: residual MLPs (:func:`jaxtheory.nn.residual_mlp`: a
linear embedding to ``width`` units, ``depth`` pre-activation ReLU blocks
:math:`h_l = h_{l-1} + W_l\,\mathrm{relu}(h_{l-1}) + b_l`, no normalisation)
instead of ResNets with batch norm; a small balanced subset of MNIST
(``per_class`` images per class, pooled to 14x14) instead of CIFAR's 50000;
full-batch SGD with momentum. Every pair ``width x depth`` of ``widths`` and
``depths`` is trained for ``seeds`` seeds, one sweep per depth
(:func:`jaxtheory.sweep.run_over`; seeds and widths vmapped inside it).
Inside each compiled sweep, at every recording point (step 0 is the
initialisation), the sweep records on ``n_probe`` test images the linear CKA
matrix of the ``depth + 1`` hidden representations (the embedding and the
stream after every block), the same matrix after projecting each
representation's first PC out, and the first PC's share of variance in every
layer (:func:`jaxtheory.probes.similarity.block_metric`). After training, the
cross-seed CKA matrices (layers of seed ``s`` against layers of the next seed)
come from the trained parameters (:func:`jaxtheory.probes.similarity.layer_cka`).

The block (:func:`jaxtheory.probes.similarity.find_block`) is the longest run
of consecutive layers whose pairwise CKA all reach ``threshold`` (0.95); a
model *has a block* when that run spans at least ``min_frac`` (half) of its
layers. The threshold is high because CKA between neighbouring layers of a
residual stream is high anyway: at initialisation the CKA matrix is a smooth
band decaying away from the diagonal, whose runs above 0.95 are short.

**The phenomenon did not appear at this scale.** The default run (2 seeds,
depths 3 and 12, widths 16 and 256, 500 MNIST images, 400 steps; 53 s on a
quiet 2-core CPU, 31 s again with its programs loaded from the cache)
trains every run to 99.8-100% training accuracy (test 77-90%), but the
largest model (depth 12, width 256) has runs of only 5/13 and 4/13 layers
at CKA >= 0.95 (3/13 and 4/13 at init); their first PC holds 26-30% of the
variance (25-33% outside), and removing it leaves their CKA at 0.97-0.98.
What does hold: the late layers of the large model differ between seeds
(cross-seed CKA 0.67 in the late run vs 0.82-0.84 in the early layers). The
control at init fails for a reason in the detector, not the networks: a
4-layer model reaches ``min_frac`` with two adjacent layers (3/4 of the
depth-3 width-256 model are above 0.95 at init). Exploration before it: with
lr 0.02 and 28x28 inputs, one width-256 depth-12 seed ended with 12 of 13
layers at CKA >= 0.95, but with a first-PC share of only 0.36-0.46 and a
mean CKA of 0.96 after removing it (not the paper's block), the other seed
did not train; plain (non-residual) depth-12 MLPs at lr 0.05 failed to train
and their collapsed layers had first-PC shares up to 0.98. A later search (30
settings: pre-LN and batch-norm residual MLPs, post-activation ResNet-v1-style
blocks with batch norm, weight decay 5e-4 to 5e-3, 100-500 images of MNIST or
Fashion-MNIST, depths 12 and 24, widths 256 and 1024) found one partial
effect: post-activation batch-norm residual MLPs at lr 0.1 without warmup, on
100 images, grow late runs of 7-9 of 13 layers at CKA >= 0.95 with a
first-PC share of 0.6-0.9, carried by one class whose activations are 7-25x
larger than the others' (not by an image statistic such as the background,
the 2022 paper's dominant datapoints). Removing the first PC leaves the CKA
inside those runs at 0.92-0.99, so they are not the paper's block; a
200-step warmup removes them, and at depth 24 a class often fails to train.
A third search tried the paper's setting at small scale, outside the
library (a standalone script; ``jaxtheory.nn`` has no batch norm): CIFAR-style
ResNet-v1 (3x3 stem conv, BN, ReLU; 3 stages of ``n`` post-activation basic
blocks, conv-BN-ReLU-conv-BN plus shortcut then ReLU, ``16k/32k/64k``
channels, stride 2 and a 1x1 conv-BN projection entering stages 2 and 3;
global average pooling, linear readout), batch norm with batch statistics
(the probe batch's at evaluation), minibatch SGD with momentum 0.9, lr 0.1
with a cosine decay, weight decay 5e-4 on the weights, random 2-pixel shifts,
one seed, Fashion-MNIST unless noted, images pooled to 14x14 unless noted,
CKA and first-PC shares on 256 test images at the stem and after every block
(``3n + 1`` layers). Per setting: the longest run at CKA >= 0.95 (at init),
the first-PC share in it, its mean CKA before -> after removing the first PC,
the end-of-training minibatch accuracy:

* n=3 k=1, 500 images, 100 epochs: 4/10 (3/10), share 0.25, 0.98 -> 0.96, 95%.
* n=6 k=1, 500 images, 100 epochs: 6/19 (5/19), share 0.32 (0.54 at most, in
  stage 2), 0.99 -> 0.97, 89%.
* the same without shifts, 150 epochs: 6/19, share 0.22 (0.28 at most),
  0.98 -> 0.97, 100%.
* the same with MNIST (shifts, 100 epochs): 5/19, share 0.14, 0.98 -> 0.98, 100%.
* n=9 k=1, 500 images, 100 epochs: 6/28 (7/28), share 0.82 (0.6-0.88 over
  layers 7-21), 0.99 -> 0.98 (at 0.9: 8 layers, 0.97 -> 0.87), 68%; the same
  for 200 epochs: 6/28 (layers 4-9), share 0.42 (0.6-0.81 over layers 12-22,
  where the CKA is a smooth band), 0.99 -> 0.98, 87%.
* n=3 k=4, 250 images, batch 64, 100 epochs: 3/10 (3/10), share 0.78 (0.65-0.89
  over layers 4-6), 0.98 -> 0.97 (at 0.9: 4 layers, 0.97 -> 0.90), 84%.
* n=6 k=2, 250 images, batch 64, 100 epochs: 5/19 (8/19), share 0.66 (up to
  0.88), 0.98 -> 0.95, 69%.
* 7x7 images, 250 images, batch 64: n=3 k=1, 100 epochs: 3/10 (3/10), share
  0.37, 0.98 -> 0.96, 80%; n=3 k=4, 200 epochs: 3/10 (3/10), share 0.57,
  0.97 -> 0.95, 82%.

A dominant first PC (share 0.6-0.9) appears only in the larger models that
had not fitted their data (68-87% minibatch accuracy); the fitted ones stay
at 0.14-0.28. Nowhere does removing it remove a run of similar layers: the
CKA matrices are smooth bands, and deep post-activation BN ResNets already
have runs of 5-8 layers at CKA >= 0.95 at initialisation, so the 0.95
detector is not discriminative for them. Why the step was slow here: on
XLA:CPU the filter gradient of a convolution inside a loop body (the
``fori_loop`` of :func:`jaxtheory.train`) runs about 100x slower than the
same jitted step alone (1.3 s against 10 ms at batch 128, 14x14, 16 to 16
channels; jax-ml/jax#12868), so these runs used a Python loop over a jitted
step (0.08 s per step for n=1 k=1). Not tried: CIFAR (not available
offline), more seeds, longer training of the large models to a fit with
shifts on, eval-mode batch norm with running statistics.
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

from jaxtheory import data, nn, plots, sweep
from jaxtheory.analysis import optimization_status
from jaxtheory.experiments.check import Check, positive_ints, seed_list, skip, timing_rows
from jaxtheory.probes import over_runs
from jaxtheory.probes.similarity import block_metric, find_block, layer_cka, split_block_metric
from jaxtheory.errors import ConfigError

DATASETS = ("mnist", "fashion-mnist", "digits")


@dataclasses.dataclass(frozen=True)
class Config:
  """The wide-vs-deep settings (every field overridable by ``--set key=value``).

  Attributes:
    dataset: ``'mnist'``, ``'fashion-mnist'`` or ``'digits'``.
    per_class: training examples per class (balanced), drawn at random.
    n_probe: test examples the CKA matrices and principal components are computed on.
    pool: average-pooling factor of the images (digits: ignored).
    data_seed: seed of the subset.
    seeds: number of seeds, or explicit seeds (``5,7``).
    widths: widths of the residual stream, swept in one program per depth.
    depths: residual blocks; one sweep per depth.
    branch_std: weight scale of every block's branch (std ``branch_std / sqrt(width)``).
    lr: learning rate of full-batch SGD.
    momentum: heavy-ball momentum.
    steps: full-batch steps.
    record: about this many log-spaced recording points.
  """
  dataset: str = "mnist"
  per_class: int = 50
  n_probe: int = 256
  pool: int = 2
  data_seed: int = 0
  seeds: int | tuple[int, ...] = 2
  widths: tuple[int, ...] = (16, 256)
  depths: tuple[int, ...] = (3, 12)
  branch_std: float = 1.0
  lr: float = 0.01
  momentum: float = 0.9
  steps: int = 400
  record: int = 4


def _check(cfg: Config) -> None:
  if cfg.dataset not in DATASETS:
    raise ConfigError(f"unknown dataset {cfg.dataset!r}; available: {', '.join(DATASETS)}")
  positive_ints(cfg, "per_class", "pool", "steps", "record")
  if isinstance(cfg.n_probe, bool) or not isinstance(cfg.n_probe, int) or cfg.n_probe < 4:
    raise ConfigError(f"n_probe must be an integer >= 4, got {cfg.n_probe!r}")
  seed_list(cfg.seeds)
  if not cfg.widths or any(w < 1 for w in cfg.widths):
    raise ConfigError(f"widths must be positive integers, got {cfg.widths!r}")
  if not cfg.depths or any(d < 1 for d in cfg.depths) or len(set(cfg.depths)) != len(cfg.depths):
    raise ConfigError(f"depths must be distinct positive integers, got {cfg.depths!r}")
  if cfg.lr <= 0:
    raise ConfigError(f"lr must be positive, got {cfg.lr!r}")
  if cfg.branch_std <= 0:
    raise ConfigError(f"branch_std must be positive, got {cfg.branch_std!r}")


def load_data(cfg: Config) -> data.Dataset:
  """The balanced training subset and ``n_probe`` test images (the CKA probe set)."""
  ds = data.balanced(cfg.dataset, per_class=cfg.per_class, n_test=cfg.n_probe,
                     seed=cfg.data_seed, pool=cfg.pool)
  if cfg.n_probe > len(ds.y_test):
    raise ConfigError(f"n_probe={cfg.n_probe} exceeds the {len(ds.y_test)} test examples of "
                      f"{cfg.dataset}")
  return ds


def _cross_seed(groups, x) -> dict[tuple[int, int], np.ndarray]:
  """``(seed, width) -> (L, L)`` CKA of that run's layers against those of the next seed's run."""
  out = {}
  for g in groups:
    seeds, widths = np.asarray(g.coords["seed"]), np.asarray(g.coords["width"])
    order = sorted(set(seeds.tolist()))
    if len(order) < 2:
      continue
    a, b, keys = [], [], []
    for i, (s, w) in enumerate(zip(seeds, widths)):
      nxt = order[(order.index(s) + 1) % len(order)]
      j = np.flatnonzero((seeds == nxt) & (widths == w))
      if len(j):
        a.append(i)
        b.append(int(j[0]))
        keys.append((int(s), int(w)))
    if not a:
      continue
    take = lambda tree, idx: jax.tree.map(lambda v: jnp.asarray(v)[np.asarray(idx)], tree)
    fn = lambda pa, ca, pb, cb, m=g.model: layer_cka(m, pa, x, ca, pb, cb)
    mats = np.asarray(jax.jit(lambda *t, fn=fn: over_runs(fn, *t))(
        take(g.params, a), take(g.ctx, a), take(g.params, b), take(g.ctx, b)))
    out.update({k: m for k, m in zip(keys, mats)})
  return out


def run(cfg: Config, progress: Callable[[int, int, str], None] | None = None,
        **engine) -> xr.Dataset:
  """Trains ``depth x seed x width`` residual MLPs, recording their layer-by-layer CKA.

  Args:
    cfg: the configuration.
    progress: ``progress(steps_done, steps_total, info)``, called as training advances.
    **engine: execution options of :func:`jaxtheory.sweep.run`.

  Returns:
    The results dataset, dims ``(depth, seed, width, step)`` with ``cka`` and
    ``cka_nopc`` (trailing ``layer``, ``layer_b``: the CKA matrix before and
    after removing every layer's first PC), ``pc_share`` (``layer``) and
    ``cross_cka`` (``(depth, seed, width, layer, layer_b)``, after training,
    against the next seed; NaN with one seed). Layer 0 is the embedding,
    layer ``l`` the stream after block ``l``; a shallower model's missing
    layers are NaN. The configuration as JSON in ``attrs['config']``. With
    ``return_params=True``, ``(dataset, {depth: groups})``.
  """
  _check(cfg)
  want_params = engine.pop("return_params", False)
  ds = load_data(cfg)
  metrics = {"block": block_metric()}
  make = lambda depth: sweep.Sweep(
      model=lambda w: nn.residual_mlp(ds.input_shape, w, depth, ds.num_classes,
                                      branch_std=cfg.branch_std),
      data=ds, grid=dict(seed=seed_list(cfg.seeds), width=list(cfg.widths)),
      optimizer="momentum", hparams=dict(lr=cfg.lr, momentum=cfg.momentum),
      steps=cfg.steps, record=cfg.record, loss="xent", metrics=metrics,
      name=f"wide-vs-deep-depth{depth}")

  res, groups = sweep.execute_over("depth", list(cfg.depths), make, progress=progress,
                                   each=split_block_metric, **engine)
  x = jnp.asarray(ds.x_test)
  cross = np.full((len(cfg.depths), res.sizes["seed"], res.sizes["width"], res.sizes["layer"],
                   res.sizes["layer"]), np.nan)
  for d, depth in enumerate(cfg.depths):
    for (s, w), m in _cross_seed(groups[depth], x).items():
      si, wi = list(res.seed.values).index(s), list(res.width.values).index(w)
      cross[d, si, wi, :m.shape[0], :m.shape[1]] = m
  res["cross_cka"] = (("depth", "seed", "width", "layer", "layer_b"), cross)
  res.attrs["experiment"] = "wide-vs-deep"
  res.attrs["dataset"] = ds.name
  res.attrs["config"] = json.dumps(dataclasses.asdict(cfg))
  return (res, groups) if want_params else res


# ----------------------------------------------------------------------------
# Reading the results.


def _matrix(r: xr.DataArray, depth: int) -> np.ndarray:
  """The ``(depth + 1)``-square of a padded CKA matrix."""
  L = int(depth) + 1
  return np.asarray(r.values, np.float64)[:L, :L]


def block_of(ds: xr.Dataset, depth: int, seed: int, width: int, step: int = -1,
             threshold: float = 0.95, var: str = "cka"):
  """The :func:`~jaxtheory.probes.similarity.find_block` block of one run at one recording point."""
  M = _matrix(ds[var].sel(depth=depth, seed=seed, width=width).isel(step=step), depth)
  return find_block(M, threshold)


def _runs(ds: xr.Dataset):
  for d in ds.depth.values:
    for s in ds.seed.values:
      for w in ds.width.values:
        yield int(d), int(s), int(w)


def _pairs_mean(M: np.ndarray, start: int, stop: int) -> float:
  """Mean CKA over the distinct pairs of layers ``start..stop-1`` (nan for a single layer)."""
  sub = M[start:stop, start:stop]
  n = stop - start
  return float((sub.sum() - np.trace(sub)) / (n * n - n)) if n > 1 else float("nan")


def measure(ds: xr.Dataset, threshold: float = 0.95) -> dict[tuple[int, int, int], dict]:
  """Per run ``(depth, seed, width)``: its block at init and at the end, and what is inside it.

  Keys of each entry: ``layers`` (``depth + 1``), ``block0`` / ``block``
  (:class:`~jaxtheory.probes.similarity.Block` at init / at the end),
  ``frac0`` / ``frac`` (block size over layers), ``share_in`` / ``share_out``
  (mean first-PC share of variance inside / outside the final block),
  ``cka_in`` / ``cka_in_nopc`` (mean pairwise CKA inside the final block before
  / after removing the first PC), ``frac_nopc`` (block fraction of the
  PC-removed matrix), ``cross_in`` / ``cross_early`` (mean cross-seed CKA of the
  block's layers / of the layers before it, layer ``i`` against layer ``i`` of
  the next seed; at least the embedding), ``status`` (training, from
  :func:`jaxtheory.analysis.optimization_status`).
  """
  out = {}
  for depth, seed, width in _runs(ds):
    r = ds.sel(depth=depth, seed=seed, width=width)
    L = depth + 1
    M0, M = _matrix(r.cka.isel(step=0), depth), _matrix(r.cka.isel(step=-1), depth)
    Mr = _matrix(r.cka_nopc.isel(step=-1), depth)
    b0, b = find_block(M0, threshold), find_block(M, threshold)
    share = np.asarray(r.pc_share.isel(step=-1).values, np.float64)[:L]
    inside = np.zeros(L, bool)
    inside[b.start:b.stop] = True
    C = np.asarray(r.cross_cka.values, np.float64)[:L, :L]
    diag = np.diag(C)
    early = diag[:max(b.start, 1)]
    out[(depth, seed, width)] = dict(
        layers=L, block0=b0, block=b, frac0=b0.size / L, frac=b.size / L,
        share_in=float(share[inside].mean()),
        share_out=float(share[~inside].mean()) if (~inside).any() else float("nan"),
        cka_in=_pairs_mean(M, b.start, b.stop), cka_in_nopc=_pairs_mean(Mr, b.start, b.stop),
        frac_nopc=find_block(Mr, threshold).size / L,
        cross_in=float(diag[inside].mean()), cross_early=float(early.mean()),
        status=optimization_status(r.train_loss.values, r.train_acc.values, min_drop=10.0),
        train_acc=float(r.train_acc.isel(step=-1)), test_acc=float(r.test_acc.isel(step=-1)))
  return out


def summary(ds: xr.Dataset) -> list[tuple[str, str]]:
  """Rows ``(label, value)``: per run, accuracy, block at init -> end, first-PC share, seed agreement."""
  rows = [("dataset", f"{ds.attrs.get('dataset')}")]
  for (depth, seed, width), m in measure(ds).items():
    b = m["block"]
    rows.append((f"depth={depth} width={width} seed={seed}",
                 f"train/test acc {100 * m['train_acc']:.1f}/{100 * m['test_acc']:.1f}%; block "
                 f"{m['block0'].size}/{m['layers']} -> {b.size}/{m['layers']} (layers "
                 f"{b.start}-{b.stop - 1}); PC1 share in/out {m['share_in']:.2f}/"
                 f"{m['share_out']:.2f}; CKA in block {m['cka_in']:.2f} -> {m['cka_in_nopc']:.2f} "
                 f"without PC1; cross-seed in block {m['cross_in']:.2f}, early "
                 f"{m['cross_early']:.2f}"))
  rows += timing_rows(ds)
  return rows


def signature(ds: xr.Dataset, threshold: float = 0.95, min_frac: float = 0.5,
              min_share: float = 0.5, min_cka_drop: float = 0.2,
              min_seed_gap: float = 0.1) -> list[Check]:
  """The signature checks with their measured numbers, per seed.

  The largest model is the deepest at the largest width, the smallest the
  shallowest at the smallest width. A model has a block when
  :func:`~jaxtheory.probes.similarity.find_block` at ``threshold`` spans at
  least ``min_frac`` of its layers.

  1. Training worked in every run (:func:`jaxtheory.analysis.optimization_status`).
  2. After training the largest model has a block in every seed.
  3. Its block's layers are dominated by their first PC (mean share of
     variance >= ``min_share``).
  4. Removing the first PC removes the block: the mean pairwise CKA inside
     it falls by at least ``min_cka_drop`` and the PC-removed matrix has no
     block.
  5. The block differs between seeds while early layers agree: mean
     cross-seed CKA of the block's layers is at least ``min_seed_gap``
     below that of the layers before it (SKIP with one seed).
  6. Control: the smallest model has no block after training (SKIP when it
     is the largest), and no model has one at initialisation.

  Checks 2-5 are SKIP when the largest model failed to train.
  """
  m = measure(ds, threshold)
  seeds = [int(s) for s in ds.seed.values]
  big = (int(ds.depth.max()), int(ds.width.max()))
  small = (int(ds.depth.min()), int(ds.width.min()))
  runs_big = {s: m[(big[0], s, big[1])] for s in seeds}
  bad = {k: v["status"] for k, v in m.items() if v["status"] != "ok"}
  checks = [Check("every run trains (loss falls 10x, no divergence or collapse)", not bad,
                  "; ".join(f"depth {k[0]} seed {k[1]} width {k[2]}: {v}" for k, v in bad.items())
                  or f"all {len(m)} runs ok")]
  name_big = f"largest model (depth {big[0]}, width {big[1]})"
  failed = [s for s, v in runs_big.items() if v["status"] != "ok"]
  blk = lambda v: f"{v['block'].size}/{v['layers']} (layers {v['block'].start}-{v['block'].stop - 1})"
  if failed:
    why = f"the {name_big} did not train (seeds {failed}); its representations say nothing"
    checks += [skip(n, why) for n in ("block", "first PC", "PC removal", "seeds")]
  else:
    checks.append(Check(
        f"the {name_big} has a block after training (pairwise CKA >= {threshold:g} over >= "
        f"{min_frac:g} of its layers)",
        all(v["frac"] >= min_frac for v in runs_big.values()),
        "; ".join(f"seed {s}: {blk(v)}, at init {v['block0'].size}/{v['layers']}"
                  for s, v in runs_big.items())))
    checks.append(Check(
        f"its block is dominated by the first principal component (share of variance >= "
        f"{min_share:g})",
        all(v["share_in"] >= min_share for v in runs_big.values()),
        "; ".join(f"seed {s}: PC1 share {v['share_in']:.2f} in the block, {v['share_out']:.2f} "
                  f"outside" for s, v in runs_big.items())))
    checks.append(Check(
        f"removing the first PC removes the block (CKA in it falls by >= {min_cka_drop:g}, "
        f"no block left)",
        all(v["cka_in"] - v["cka_in_nopc"] >= min_cka_drop and v["frac_nopc"] < min_frac
            for v in runs_big.values()),
        "; ".join(f"seed {s}: CKA {v['cka_in']:.2f} -> {v['cka_in_nopc']:.2f}, block "
                  f"{v['frac']:.2f} -> {v['frac_nopc']:.2f} of layers"
                  for s, v in runs_big.items())))
    name = (f"the block differs between seeds while early layers agree (cross-seed CKA in the "
            f"block >= {min_seed_gap:g} below the early layers')")
    if len(seeds) < 2:
      checks.append(skip(name, "one seed: nothing to compare across seeds"))
    else:
      checks.append(Check(
          name, all(v["cross_early"] - v["cross_in"] >= min_seed_gap for v in runs_big.values()),
          "; ".join(f"seed {s} vs next: block {v['cross_in']:.2f}, early {v['cross_early']:.2f}"
                    for s, v in runs_big.items())))
  ctrl = "control: the smallest model has no block after training"
  if small == big:
    checks.append(skip(ctrl, "one depth and one width: no smaller model to compare"))
  else:
    runs_small = {s: m[(small[0], s, small[1])] for s in seeds}
    checks.append(Check(
        f"{ctrl} (depth {small[0]}, width {small[1]})",
        all(v["frac"] < min_frac for v in runs_small.values()),
        "; ".join(f"seed {s}: {blk(v)}" for s, v in runs_small.items())))
  at_init = {k: v["frac0"] for k, v in m.items()}
  checks.append(Check(
      "control at init: no model has a block",
      all(f < min_frac for f in at_init.values()),
      f"largest block fraction at init {max(at_init.values()):.2f} (depth "
      f"{max(at_init, key=at_init.get)[0]}, width {max(at_init, key=at_init.get)[2]})"))
  return checks


def figures(ds: xr.Dataset, out_dir: str | os.PathLike) -> list[str]:
  """CKA heatmaps of seed 0: every depth x width at the end; the largest model at init, without PC1 and across seeds."""
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  seed = int(ds.seed.values[0])
  depths, widths = [int(d) for d in ds.depth.values], [int(w) for w in ds.width.values]
  fig = plots.agg_figure((2.6 * len(widths) + 0.6, 2.4 * len(depths) + 0.4))
  axes = np.asarray(fig.subplots(len(depths), len(widths), squeeze=False))
  for i, d in enumerate(depths):
    for j, w in enumerate(widths):
      M = _matrix(ds.cka.sel(depth=d, seed=seed, width=w).isel(step=-1), d)
      im = axes[i, j].imshow(M, vmin=0, vmax=1, origin="lower", cmap="magma")
      axes[i, j].set_title(f"depth {d}, width {w}", fontsize="small")
  fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="linear CKA")
  grid = os.path.join(out_dir, "cka_grid.png")
  fig.savefig(grid, dpi=110)
  d, w = max(depths), max(widths)
  r = ds.sel(depth=d, seed=seed, width=w)
  panels = [("at init", _matrix(r.cka.isel(step=0), d)),
            ("trained", _matrix(r.cka.isel(step=-1), d)),
            ("trained, PC1 removed", _matrix(r.cka_nopc.isel(step=-1), d)),
            ("trained, vs next seed", _matrix(r.cross_cka, d))]
  fig = plots.agg_figure((14.0, 3.6))
  axes = fig.subplots(1, 5)
  for ax, (title, M) in zip(axes, panels):
    im = ax.imshow(M, vmin=0, vmax=1, origin="lower", cmap="magma")
    ax.set_title(title, fontsize="small")
    ax.set_xlabel("layer")
  fig.colorbar(im, ax=list(axes[:4]), shrink=0.8)
  ax = axes[4]
  L = d + 1
  ax.plot(np.arange(L), r.pc_share.isel(step=0).values[:L], ":o", ms=3, label="init")
  ax.plot(np.arange(L), r.pc_share.isel(step=-1).values[:L], "-o", ms=3, label="trained")
  ax.set_ylim(0, 1)
  ax.set_xlabel("layer")
  ax.set_title("PC1 share of variance", fontsize="small")
  ax.legend(fontsize="x-small")
  ax.grid(alpha=0.3)
  fig.suptitle(f"depth {d}, width {w}, seed {seed}", fontsize="medium")
  big = os.path.join(out_dir, "block_largest.png")
  fig.savefig(big, dpi=110)
  return [grid, big]
