"""Grokking: with weight decay, modular addition generalizes long after the training set is fit.

Power et al. (2022), "Grokking: generalization beyond overfitting on small
algorithmic datasets"; Nanda et al. (2023), "Progress measures for grokking
via mechanistic interpretability". A network learns ``c = a + b mod p`` from a
fraction of the ``p^2`` pairs by full-batch AdamW. With weight decay it first
memorizes the training pairs (train accuracy ~100%, test at chance) and only
much later generalizes; without weight decay it stays memorized within the
same budget (the control). Meanwhile the token embedding concentrates its
norm on a few Fourier frequencies of the token axis (Nanda et al.'s key
frequencies), a progress measure recorded here as ``fourier_sparsity``.

The network is an MLP on learned token embeddings (``model='mlp'``, fast) or
a one-layer transformer (``model='transformer'``, :func:`jaxtheory.nn.transformer`,
much slower per step and to grok). The grid is ``seed x weight_decay`` in one
compiled program. The defaults (p = 97, 35% of pairs, 3 seeds x weight decay
{0, 1}, 2000 steps) take 2-4 minutes on a busy 2-core CPU: memorized by step
~100, grokked by ~900. On a CPU the transformer wants a smaller problem:
``model=transformer p=31 train_fraction=0.5 width=64 lr=3e-3 steps=5000
seeds=1`` memorizes by step ~60 and reaches 95% test accuracy by ~3700 (with
loss spikes at this learning rate), in about 5 minutes.

>>> from jaxtheory.experiments import grokking
>>> cfg = grokking.Config(p=7, seeds=1, steps=10, record=3, width=8, embed_dim=4)
>>> grokking.run(cfg).test_acc.dims
('seed', 'weight_decay', 'step')
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
from jaxtheory.analysis import first_reached
from jaxtheory.probes.spectra import fourier_sparsity
from jaxtheory.experiments.check import positive_ints
from jaxtheory.train import ConfigError

MODELS = ("mlp", "transformer")


@dataclasses.dataclass(frozen=True)
class Config:
  """The grokking settings (every field overridable by ``--set key=value``).

  Attributes:
    p: the modulus.
    op: ``'add'``, ``'sub'``, ``'mul'`` or ``'div'``.
    train_fraction: fraction of the pairs used for training.
    data_seed: seed of the train/test split.
    model: ``'mlp'`` (token embeddings, one hidden layer) or ``'transformer'``.
    width: hidden width of the MLP, or the transformer's model width.
    embed_dim: the MLP's token-embedding size.
    depth: transformer blocks.
    num_heads: transformer attention heads.
    seeds: number of seeds; runs use seeds ``0..seeds-1``.
    weight_decays: AdamW weight decays to sweep (0 is the control).
    lr: AdamW learning rate.
    b2: AdamW's second-moment decay (0.98 as in Nanda et al.).
    steps: full-batch optimizer steps.
    record: about this many log-spaced recording points.
    fourier_k: frequencies counted by the Fourier-sparsity measure.
  """
  p: int = 97
  op: str = "add"
  train_fraction: float = 0.35
  data_seed: int = 0
  model: str = "mlp"
  width: int = 128
  embed_dim: int = 32
  depth: int = 1
  num_heads: int = 4
  seeds: int = 3
  weight_decays: tuple[float, ...] = (0.0, 1.0)
  lr: float = 1e-2
  b2: float = 0.98
  steps: int = 2000
  record: int = 40
  fourier_k: int = 5


def _check(cfg: Config) -> None:
  if cfg.model not in MODELS:
    raise ConfigError(f"unknown model {cfg.model!r}; available: {', '.join(MODELS)}")
  positive_ints(cfg, "seeds", "width", "embed_dim", "depth", "num_heads", "steps", "record",
                "fourier_k")
  if not cfg.weight_decays:
    raise ConfigError("weight_decays is empty; give at least one, e.g. weight_decays=0,1")
  if any(wd < 0 for wd in cfg.weight_decays):
    raise ConfigError(f"weight decays must be >= 0, got {cfg.weight_decays!r}")
  if cfg.model == "transformer" and cfg.width % cfg.num_heads:
    raise ConfigError(f"the transformer's width {cfg.width} must be a multiple of "
                      f"num_heads {cfg.num_heads}")


# ----------------------------------------------------------------------------
# Models on the tokens [a, b, =].


def _model(cfg: Config, width: int) -> nn.Model:
  if cfg.model == "mlp":
    return nn.token_mlp(cfg.p + 1, 3, cfg.embed_dim, width, cfg.p)
  return nn.transformer(cfg.p + 1, 3, width, cfg.depth, cfg.num_heads, out_dim=cfg.p)


# ----------------------------------------------------------------------------
# The progress measure.


def token_embedding(params, vocab_size: int) -> jax.Array:
  """The token-embedding matrix ``(vocab_size, d)`` of a parameter pytree.

  The first 2-D leaf (in tree order) named ``W`` with ``vocab_size`` rows: the
  :func:`jaxtheory.nn.embedding` table of the MLP or the transformer above.

  Raises:
    ValueError: when there is none.
  """
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = getattr(path[-1], "key", None) if path else None
    if name == "W" and len(leaf.shape) == 2 and leaf.shape[0] == vocab_size:
      return leaf
  raise ValueError(f"no embedding table with {vocab_size} rows among the parameters")


def _metrics(p: int, k: int) -> dict[str, Callable]:
  def sparsity(params, apply, d):
    del apply, d
    return fourier_sparsity(token_embedding(params, p + 1)[:p], k)

  return {"fourier_sparsity": sparsity}


# ----------------------------------------------------------------------------
# The experiment.


def run(cfg: Config, progress: Callable[[int, int, str], None] | None = None,
        **engine) -> xr.Dataset:
  """Trains the grid ``seed x weight_decay`` and returns its results.

  Args:
    cfg: the configuration.
    progress: ``progress(steps_done, steps_total, info)``, called as training advances.
    **engine: execution options of :func:`jaxtheory.sweep.run`; with
      ``return_params=True`` the final parameters come back too.

  Returns:
    The results dataset, dims ``(seed, weight_decay, step)``: losses,
    accuracies, ``param_norm`` and ``fourier_sparsity``; the configuration as
    JSON in ``attrs['config']``. With ``return_params``, ``(dataset, groups)``
    as from :func:`jaxtheory.sweep.run`.
  """
  _check(cfg)
  ds = data.modular_arithmetic(cfg.p, cfg.op, cfg.train_fraction, seed=cfg.data_seed)
  s = sweep.Sweep(
      model=lambda w: _model(cfg, w), data=ds,
      grid=dict(seed=list(range(cfg.seeds)), width=[cfg.width],
                weight_decay=list(cfg.weight_decays)),
      optimizer="adamw", hparams=dict(lr=cfg.lr, b2=cfg.b2), steps=cfg.steps,
      record=cfg.record, metrics=_metrics(cfg.p, cfg.fourier_k), name="grokking")
  out = sweep.run(s, progress=progress, **engine)
  res, groups = out if engine.get("return_params") else (out, None)
  res = res.isel(width=0, drop=True)
  res.attrs["experiment"] = "grokking"
  res.attrs["config"] = json.dumps(dataclasses.asdict(cfg))
  return res if groups is None else (res, groups)


# ----------------------------------------------------------------------------
# Reading the results.


def grokking_times(ds: xr.Dataset, train_at: float = 0.99,
                   test_at: float = 0.95) -> dict[float, tuple[float, float]]:
  """``weight_decay -> (step train acc >= train_at, step test acc >= test_at)``, seed means."""
  mean = ds.mean("seed")
  return {float(wd): (first_reached(mean.train_acc.sel(weight_decay=wd), train_at),
                      first_reached(mean.test_acc.sel(weight_decay=wd), test_at))
          for wd in ds.weight_decay.values}


def summary(ds: xr.Dataset) -> list[tuple[str, str]]:
  """Rows ``(label, value)``: per weight decay, final train/test accuracy (mean over
  seeds), the steps where they reach 99% / 95%, and the Fourier sparsity."""
  rows = []
  times = grokking_times(ds)
  for wd, (t_tr, t_te) in times.items():
    d = ds.sel(weight_decay=wd).isel(step=-1).mean("seed")
    rows.append((f"weight_decay={wd:g}",
                 f"acc {100 * d.train_acc.item():.1f}% / {100 * d.test_acc.item():.1f}%   "
                 f"99% train @ {t_tr:.0f}, 95% test @ {t_te:.0f}   "
                 f"Fourier sparsity {d.fourier_sparsity.item():.2f}"))
  rows.append(("compile", f"{ds.attrs.get('compile_seconds', float('nan')):.1f} s"))
  rows.append(("run", f"{ds.attrs.get('run_seconds', float('nan')):.1f} s"))
  return rows


def signature(ds: xr.Dataset, min_ratio: float = 5.0) -> list:
  """Grokking with weight decay (test >= 95% at least ``min_ratio`` x later than train >= 99%),
  none without it, and the embedding's Fourier sparsity rising where it groks."""
  from jaxtheory.experiments.check import Check
  times = grokking_times(ds)
  last = int(ds.step[-1])
  checks = []
  sparsity = ds.fourier_sparsity.mean("seed")
  for wd, (t_tr, t_te) in times.items():
    if wd == 0:
      continue
    ratio = t_te / t_tr if t_tr > 0 else float("nan")
    checks.append(Check(
        f"weight_decay={wd:g} groks: 95% test >= {min_ratio:g}x later than 99% train",
        bool(np.isfinite(ratio) and ratio >= min_ratio),
        f"train 99% at step {t_tr:.0f}, test 95% at step {t_te:.0f} "
        f"(ratio {ratio:.1f}; budget {last} steps)"))
    s = sparsity.sel(weight_decay=wd)
    s0, s1 = float(s.isel(step=0)), float(s.isel(step=-1))
    checks.append(Check(
        f"weight_decay={wd:g}: the embedding's Fourier sparsity at least doubles",
        s1 >= 2 * s0, f"top-k power fraction {s0:.2f} at init -> {s1:.2f} at the end"))
  if 0.0 in times:
    t_tr, t_te = times[0.0]
    best = float(ds.test_acc.sel(weight_decay=0.0).mean("seed").max())
    checks.append(Check(
        "control weight_decay=0 memorizes without grokking in the same budget",
        bool(np.isfinite(t_tr) and not np.isfinite(t_te)),
        f"train 99% at step {t_tr:.0f}, best test accuracy {100 * best:.1f}% "
        f"within {last} steps"))
  else:
    checks.append(Check("control weight_decay=0 memorizes without grokking", False,
                        "no weight_decay=0 run in the grid"))
  return checks


def figures(ds: xr.Dataset, out_dir: str | os.PathLike) -> list[str]:
  """Train/test accuracy vs step per weight decay; Fourier sparsity vs step."""
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  wds = ds.weight_decay.values
  fig = plots.agg_figure((4.0 * len(wds), 3.4))
  axes = fig.subplots(1, len(wds), sharey=True, squeeze=False)[0]
  steps = ds.step.values
  for ax, wd in zip(axes, wds):
    for metric, color in (("train_acc", "C0"), ("test_acc", "C3")):
      runs = ds[metric].sel(weight_decay=wd)
      ax.plot(steps, runs.mean("seed").values, color=color, lw=1.6,
              label=metric.replace("_acc", ""))
      ax.fill_between(steps, runs.min("seed").values, runs.max("seed").values, color=color,
                      alpha=0.18, lw=0)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.set_title(f"weight decay {wd:g}", fontsize="medium")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel(f"accuracy (mean of {ds.sizes['seed']} seeds, band min-max)")
  axes[0].legend(fontsize="small")
  acc = os.path.join(out_dir, "accuracy_by_weight_decay.png")
  fig.savefig(acc, dpi=130)
  ax = plots.metric_vs_step(ds, "fourier_sparsity", "weight_decay")
  four = os.path.join(out_dir, "fourier_sparsity.png")
  ax.figure.savefig(four, dpi=130)
  return [acc, four]
