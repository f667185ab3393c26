r"""Noisy labels: training fits the noise and loses its early test accuracy; anchoring to init keeps it.

Hu, Li & Yu (2020), "Simple and effective regularization methods for training
on noisily labeled data with generalization guarantee" (ICLR). An
overparametrized network trained on labels of which a fraction is wrong first
learns the clean pattern (its test accuracy peaks early) and then memorizes the
wrong labels, and its test accuracy falls. Motivated by the NTK view that a
wide network trained from initialization stays close to it, they regularize
by the distance to initialization,
:math:`\frac{\lambda}{2}\|\theta - \theta_0\|^2`, which (like early stopping)
keeps the network from fitting the noise and keeps its test accuracy near the
peak. Here the regularizer is applied as a gradient term
:math:`\lambda(\theta - \theta_0)` (:func:`anchored_sgd`, swept as the
``anchor`` axis; ``anchor=0`` is plain SGD), and early stopping is read off
the recorded test curve (its peak).

The paper trains on CIFAR-10 and MNIST with 20-60% symmetric label noise.
Scaled down for a CPU: a balanced subset of MNIST (``per_class`` images per
class, default 100), average-pooled to 14x14, 40% of the training labels
replaced by another class at random (the engine's ``label_noise`` axis), an
MLP of 2 hidden layers of 256 units, minibatch SGD with momentum for
``steps`` steps. The grid is ``seed x label_noise x anchor``; clean labels
(``label_noise=0``) are the control: there is nothing to memorize and plain
training keeps its peak. The defaults (2 seeds, 8 runs) take about two minutes
on a 2-core CPU: with 40% noise plain SGD fits every noisy label and its test
accuracy falls from 78-81% (steps 68-103) to 60-62%; with :math:`\lambda = 0.1`
it ends at 73-74% (peak 77%) fitting 48-49% of the noisy labels (the clean
fraction is 60%); clean labels: 90% at the peak and at the end (anchored:
83-86%, the regularizer costs some clean accuracy).

>>> from jaxtheory.experiments import noisy_labels as nl
>>> cfg = nl.Config(dataset="digits", per_class=10, seeds=1, width=16, steps=5, record=3)
>>> nl.run(cfg).test_acc.dims
('seed', 'label_noise', 'anchor', 'step')
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import xarray as xr

from jaxtheory import data, nn, plots, sweep
from jaxtheory.experiments.check import Check, positive_ints, seed_list, timing_rows
from jaxtheory.errors import ConfigError
from jaxtheory.train import Optimizer

DATASETS = ("mnist", "fashion-mnist", "digits")


def anchor_to_init(strength) -> optax.GradientTransformation:
  r"""Adds :math:`\lambda(\theta - \theta_0)` to the gradient: the gradient of
  :math:`\frac{\lambda}{2}\|\theta-\theta_0\|^2`, :math:`\theta_0` the parameters at ``init``."""

  def init(params):
    return jax.tree.map(jnp.asarray, params)

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("anchor_to_init needs the parameters")
    return jax.tree.map(lambda g, p, p0: g + strength * (p - p0), updates, params, state), state

  return optax.GradientTransformation(init, update)


def _anchored(lr=0.05, anchor=0.0, momentum=0.9):
  return optax.chain(anchor_to_init(anchor), optax.sgd(lr, momentum=momentum))


anchored_sgd = Optimizer(_anchored, "sgd", "anchored_sgd",
                         hyper=dict(lr=0.05, anchor=0.0, momentum=0.9))
"""SGD with momentum on the loss plus :math:`\\frac{\\lambda}{2}\\|\\theta-\\theta_0\\|^2` (``anchor`` = λ)."""


@dataclasses.dataclass(frozen=True)
class Config:
  """The noisy-labels settings (every field overridable by ``--set key=value``).

  Attributes:
    dataset: ``'mnist'``, ``'fashion-mnist'`` or ``'digits'``.
    per_class: training examples per class (balanced), drawn at random.
    n_test: test examples.
    pool: average-pooling factor of the images (digits: ignored).
    data_seed: seed of the subset.
    seeds: number of seeds (each also draws its own noisy labels).
    noise: fraction of training labels replaced by another class (0 < noise < 1).
    anchor: strength of the distance-to-init regularizer compared with plain SGD.
    width: hidden width.
    depth: hidden layers.
    lr: learning rate.
    momentum: heavy-ball momentum.
    batch_size: minibatch size.
    steps: SGD steps.
    record: about this many log-spaced recording points.
  """
  dataset: str = "mnist"
  per_class: int = 100
  n_test: int = 2000
  pool: int = 2
  data_seed: int = 0
  seeds: int = 2
  noise: float = 0.4
  anchor: float = 0.1
  width: int = 256
  depth: int = 2
  lr: float = 0.05
  momentum: float = 0.9
  batch_size: int = 100
  steps: int = 3000
  record: int = 20


def _check(cfg: Config) -> None:
  if cfg.dataset not in DATASETS:
    raise ConfigError(f"unknown dataset {cfg.dataset!r}; available: {', '.join(DATASETS)}")
  positive_ints(cfg, "per_class", "n_test", "pool", "seeds", "width", "depth", "batch_size",
                "steps", "record")
  if not 0 < cfg.noise < 1:
    raise ConfigError(f"noise must lie strictly between 0 and 1, got {cfg.noise!r}")
  if cfg.anchor <= 0:
    raise ConfigError(f"anchor must be positive, got {cfg.anchor!r}")
  if cfg.lr <= 0:
    raise ConfigError(f"lr must be positive, got {cfg.lr!r}")


def load_data(cfg: Config) -> data.Dataset:
  """The balanced training subset of ``cfg.dataset`` (clean labels; the sweep adds the noise)."""
  return data.balanced(cfg.dataset, per_class=cfg.per_class, n_test=cfg.n_test,
                       seed=cfg.data_seed, pool=cfg.pool)


def run(cfg: Config, progress: Callable[[int, int, str], None] | None = None,
        **engine) -> xr.Dataset:
  """Trains the grid ``seed x label_noise (0, noise) x anchor (0, anchor)``.

  Returns:
    The results dataset, dims ``(seed, label_noise, anchor, step)``
    (``train_acc`` is on the noisy labels); the configuration as JSON in
    ``attrs['config']``.
  """
  _check(cfg)
  ds = load_data(cfg)
  s = sweep.Sweep(
      model=lambda w: nn.mlp(ds.input_shape, w, cfg.depth, ds.num_classes), data=ds,
      grid=dict(seed=seed_list(cfg.seeds), width=[cfg.width], label_noise=[0.0, cfg.noise],
                anchor=[0.0, cfg.anchor]),
      optimizer=anchored_sgd, hparams=dict(lr=cfg.lr, momentum=cfg.momentum),
      steps=cfg.steps, batch_size=cfg.batch_size, record=cfg.record, loss="xent",
      name="noisy-labels")
  res, groups = sweep.execute(s, params=engine.pop("return_params", False), progress=progress,
                              **engine)
  res = res.isel(width=0, drop=True)
  res.attrs["experiment"] = "noisy-labels"
  res.attrs["dataset"] = ds.name
  res.attrs["config"] = json.dumps(dataclasses.asdict(cfg))
  return res if groups is None else (res, groups)


# ----------------------------------------------------------------------------
# Reading the results.


def curves(ds: xr.Dataset) -> dict[tuple[int, float, float], dict[str, float]]:
  """Per run ``(seed, label_noise, anchor)``: test accuracy at its peak (early stopping),
  the peak's step, at the end; final training accuracy (on the noisy labels)."""
  out = {}
  for seed in ds.seed.values:
    for nz in ds.label_noise.values:
      for a in ds.anchor.values:
        r = ds.sel(seed=seed, label_noise=nz, anchor=a)
        acc = r.test_acc.values
        k = int(np.nanargmax(acc))
        out[(int(seed), float(nz), float(a))] = dict(
            peak=float(acc[k]), peak_step=float(r.step.values[k]), final=float(acc[-1]),
            train=float(r.train_acc.values[-1]))
  return out


def summary(ds: xr.Dataset) -> list[tuple[str, str]]:
  """Rows ``(label, value)``: per run, test accuracy peak -> end and the final train accuracy."""
  rows = [("dataset", str(ds.attrs.get("dataset")))]
  for (seed, nz, a), c in curves(ds).items():
    rows.append((f"seed={seed} noise={nz:g} anchor={a:g}",
                 f"test acc peak {100 * c['peak']:.1f}% @ {c['peak_step']:.0f} -> end "
                 f"{100 * c['final']:.1f}%; train acc (noisy labels) {100 * c['train']:.1f}%"))
  rows += timing_rows(ds)
  return rows


def signature(ds: xr.Dataset, min_drop: float = 0.05, min_gain: float = 0.05,
              max_clean_drop: float = 0.02) -> list[Check]:
  """The signature checks with their measured numbers, per seed.

  With noisy labels (``label_noise`` > 0): plain training (``anchor=0``) fits
  the noisy training labels (train accuracy >= 1 - noise/2, more than the
  clean fraction) and its test accuracy ends at least ``min_drop`` below its
  peak; with the distance-to-init regularizer (largest ``anchor``) the final
  test accuracy beats plain training's by at least ``min_gain``, without
  fitting the noise (train accuracy <= 1 - noise/2); early stopping (the
  peak of plain training) beats its end by ``min_drop`` (the first check).
  Control, clean labels: plain training ends within ``max_clean_drop`` of
  its peak.
  """
  c = curves(ds)
  seeds = [int(s) for s in ds.seed.values]
  nz = float(ds.label_noise.values.max())
  a = float(ds.anchor.values.max())
  fit_level = 1 - nz / 2
  plain = {s: c[(s, nz, 0.0)] for s in seeds}
  reg = {s: c[(s, nz, a)] for s in seeds}
  clean = {s: c[(s, 0.0, 0.0)] for s in seeds}
  return [
      Check(f"noise {nz:g}: plain training fits the noisy labels (train acc >= "
            f"{100 * fit_level:g}%) and its test accuracy falls >= {100 * min_drop:g} points "
            "after an early peak", all(p["train"] >= fit_level and p["peak"] - p["final"] >= min_drop
                                       for p in plain.values()),
            "; ".join(f"seed {s}: train {100 * p['train']:.1f}%, test peak {100 * p['peak']:.1f}% "
                      f"@ step {p['peak_step']:.0f} -> {100 * p['final']:.1f}%"
                      for s, p in plain.items())),
      Check(f"noise {nz:g}: anchoring to init (lambda {a:g}) keeps the accuracy (final >= plain "
            f"+ {100 * min_gain:g} points) without fitting the noise",
            all(r["final"] - plain[s]["final"] >= min_gain and r["train"] <= fit_level
                for s, r in reg.items()),
            "; ".join(f"seed {s}: final {100 * r['final']:.1f}% vs plain "
                      f"{100 * plain[s]['final']:.1f}% (peak {100 * r['peak']:.1f}%), train "
                      f"{100 * r['train']:.1f}%" for s, r in reg.items())),
      Check(f"control, clean labels: plain training keeps its peak (falls < "
            f"{100 * max_clean_drop:g} points)",
            all(p["peak"] - p["final"] < max_clean_drop for p in clean.values()),
            "; ".join(f"seed {s}: test peak {100 * p['peak']:.1f}% -> {100 * p['final']:.1f}%, "
                      f"train {100 * p['train']:.1f}%" for s, p in clean.items())),
  ]


def figures(ds: xr.Dataset, out_dir: str | os.PathLike) -> list[str]:
  """Test and training accuracy against step, per label noise and anchor (mean over seeds)."""
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  fig = plots.agg_figure((11.0, 3.8))
  ax_te, ax_tr = fig.subplots(1, 2)
  steps = ds.step.values
  k = 0
  for nz in ds.label_noise.values:
    for a in ds.anchor.values:
      r = ds.sel(label_noise=nz, anchor=a)
      label = f"noise {nz:g}, anchor {a:g}"
      ls = "-" if nz > 0 else ":"
      ax_te.plot(steps, r.test_acc.mean("seed"), ls, color=f"C{k}", label=label)
      ax_tr.plot(steps, r.train_acc.mean("seed"), ls, color=f"C{k}", label=label)
      k += 1
  for ax, title in ((ax_te, "test accuracy"), (ax_tr, "training accuracy (noisy labels)")):
    ax.set_xscale("symlog", linthresh=10.0)
    ax.set_xlim(left=0)
    ax.set_xlabel("step")
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
  ax_te.legend(fontsize="small")
  path = os.path.join(out_dir, "accuracy_vs_step.png")
  fig.savefig(path, dpi=130)
  return [path]
