r"""Lazy vs rich training: the richness gamma decides whether a network moves its features.

Chizat, Oyallon & Bach (2019), "On lazy training in differentiable
programming": a model scaled as :math:`\alpha f(\theta)` and trained with a
learning rate :math:`\propto 1/\alpha^2` follows the same function-space
dynamics at init for every :math:`\alpha`, but its parameters move by
:math:`O(1/\alpha)`; as :math:`\alpha \to \infty` it trains like its
linearization (kernel regression with the tangent kernel at init, the NTK of
Jacot et al. 2018). Geiger, Spigler, Jacot & Wyart (2020), "Disentangling
feature and lazy training in deep neural networks", sweep this scale at fixed
width and find the crossover between the two regimes; Bordelon & Pehlevan
(2022), "Self-consistent dynamical field theory of kernel evolution in wide
neural networks", name :math:`\gamma_0 = 1/\alpha` the richness of the
mean-field parametrization and show the kernel moving by :math:`O(\gamma_0)`
or more. Here :math:`\gamma` is :class:`jaxtheory.nn.Ctx`'s ``gamma`` under the
mean-field parametrization (``'mf'``): the output is divided by
:math:`\gamma` and every SGD learning rate multiplied by :math:`\gamma^2`
(on top of mean field's factor ``width``), the prescription of Chizat et al.
and Bordelon & Pehlevan, so every :math:`\gamma` starts from the same kernel
and trains in comparable time; ``lr`` is the base rate before those factors.

The setting: full-batch gradient descent on the squared error, a network of
``depth`` hidden GELU layers of ``width`` units, on a target where features
matter: :math:`y = x_1 x_2` of Gaussian inputs in ``input_dim`` = 16
dimensions (:func:`jaxtheory.data.coordinate_product`). A rotation-invariant
kernel needs :math:`n \sim d^2` examples for it (Ghorbani et al. 2020, "When
do neural networks outperform kernel methods?"); a network that learns the two
relevant directions needs fewer. Every network is centred by the
antisymmetric trick (:func:`jaxtheory.nn.antisymmetric`, Chizat et al.
Sec. 2.3): its output is zero at init, so small :math:`\gamma` is not an
output of size :math:`1/\gamma`. One sweep over ``seed x gamma`` runs
through :func:`jaxtheory.limits.compare`, which records the tangent kernel on
``n_probe`` training inputs inside the compiled scan and sets each run beside
the gradient-flow prediction of its own initial kernel. Measured per run:

* ``weight_movement`` :math:`\|\theta_T - \theta_0\| / \|\theta_0\|` and
  ``kernel_movement`` :math:`\|\Theta_T - \Theta_0\|_F / \|\Theta_0\|_F`, and
  their power laws in :math:`\gamma` (slope fitted per seed). At small
  :math:`\gamma` the weights move :math:`\propto \gamma`; the kernel moves
  :math:`\propto \gamma^2` there, because the antisymmetric pair's
  first-order kernel changes cancel (ReLU adds discrete activation flips);
* ``dev_linear``: relative distance of the test outputs from the initial-NTK
  gradient-flow prediction;
* ``kernel_alignment_centered``: the centred kernel-target alignment
  :math:`\langle H\Theta H, Hyy^\top H\rangle / (\|H\Theta H\| \|Hyy^\top H\|)`
  of the final kernel on the probe inputs (Cortes, Mohri & Rostamizadeh
  2012; Baratin et al. 2021 see alignment rise as features are learned);
* the test error.

The control is the lazy end of the sweep: at the smallest :math:`\gamma`
nothing moves and the network is its kernel; a sweep over small
:math:`\gamma` only (e.g. ``gammas=0.01,0.02,0.03``) still shows the power
laws but fails every rich check. The published settings (CIFAR/MNIST, large
networks) are scaled down to 256 examples and a 16-dimensional synthetic
task. The defaults (6 gammas from 0.01 to 3, 2 seeds, width 256, 1000 steps)
take 28 s on a quiet 2-core CPU (21 s again, its programs loaded from the
compilation cache), and every check passes: weights move 0.026 ->
2.4 (slope 0.78-0.79, :math:`R^2` 0.99) and the NTK 0.0064 -> 32 (slope
1.48-1.49) from gamma 0.01 to 3; at gamma 0.01 the test outputs are within
1% of the initial-NTK gradient flow, at gamma 3 0.81-0.83 off it; centred
alignment 0.074-0.081 -> 0.119-0.121 (1.5-1.6x); test loss 0.16-0.18 (lazy)
-> 0.041-0.044 (rich, 0.23-0.27x). The control sweep ``gammas=0.01,0.02,0.03``
(width 128, 500 steps) gives slopes 1.01 (weights) and 2.00 (NTK) and fails
the three rich checks (NTK moved 0.03, alignment 1.02-1.03x, test loss
0.95-0.96x).

>>> from jaxtheory.experiments import lazy_rich as lr
>>> cfg = lr.Config(gammas=(0.1, 1.0), seeds=1, width=8, n_train=16, n_test=8, steps=4,
...                 record=2, n_probe=4)
>>> lr.run(cfg, progress=False).weight_movement.dims
('seed', 'gamma')
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import numpy as np
import xarray as xr

from jaxtheory import data, limits, nn, plots, sweep
from jaxtheory.analysis import failed_runs, power_law
from jaxtheory.errors import ConfigError
from jaxtheory.experiments.check import Check, positive_ints, seed_list, skip, timing_rows

ACTIVATIONS = {"gelu": nn.gelu, "relu": nn.relu}


@dataclasses.dataclass(frozen=True)
class Config:
  """The lazy-vs-rich settings (every field overridable by ``--set key=value``).

  Attributes:
    gammas: the richness values swept (positive; output divided by gamma,
      learning rates multiplied by gamma^2).
    seeds: a count ``k`` (seeds ``0..k-1``) or explicit seeds (``seeds=5,7``;
      ``seeds=[3]`` is the one seed 3).
    width: hidden width (fixed).
    depth: hidden layers.
    activation: ``'gelu'`` or ``'relu'``.
    input_dim: input dimension of the task.
    relevant: coordinates whose product is the target.
    n_train: training examples.
    n_test: test examples.
    noise: standard deviation of the training-target noise.
    data_seed: seed of the data.
    lr: base learning rate of full-batch gradient descent (times width x
      gamma^2 per the mean-field parametrization and the richness).
    steps: gradient-descent steps.
    record: about this many log-spaced recording points.
    n_probe: training inputs on which the tangent kernel is recorded.
    dtype: ``'float32'`` or ``'float64'``.
  """
  gammas: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
  seeds: int | tuple[int, ...] = 2
  width: int = 256
  depth: int = 1
  activation: str = "gelu"
  input_dim: int = 16
  relevant: int = 2
  n_train: int = 256
  n_test: int = 512
  noise: float = 0.0
  data_seed: int = 0
  lr: float = 1.0
  steps: int = 1000
  record: int = 8
  n_probe: int = 64
  dtype: str = "float32"


def _check(cfg: Config) -> None:
  if not cfg.gammas or any(not np.isfinite(g) or g <= 0 for g in cfg.gammas):
    raise ConfigError(f"gammas must be positive numbers, got {cfg.gammas!r}")
  if len(set(cfg.gammas)) != len(cfg.gammas):
    raise ConfigError(f"gammas must be distinct, got {cfg.gammas!r}")
  positive_ints(cfg, "width", "depth", "input_dim", "relevant", "n_train", "n_test", "steps",
                "record")
  seed_list(cfg.seeds)
  if cfg.activation not in ACTIVATIONS:
    raise ConfigError(f"unknown activation {cfg.activation!r}; available: "
                      f"{', '.join(ACTIVATIONS)}")
  if cfg.relevant > cfg.input_dim:
    raise ConfigError(f"relevant must be at most input_dim ({cfg.input_dim}), got "
                      f"{cfg.relevant!r}")
  if cfg.lr <= 0:
    raise ConfigError(f"lr must be positive, got {cfg.lr!r}")
  if not isinstance(cfg.n_probe, int) or cfg.n_probe < 2:
    raise ConfigError(f"n_probe must be an integer >= 2, got {cfg.n_probe!r}")


def load_data(cfg: Config) -> data.Dataset:
  """The task: the product of ``relevant`` of ``input_dim`` Gaussian coordinates."""
  return data.coordinate_product(n_train=cfg.n_train, n_test=cfg.n_test,
                                 input_dim=cfg.input_dim, relevant=cfg.relevant,
                                 noise=cfg.noise, seed=cfg.data_seed)


def network(cfg: Config, width: int) -> nn.Model:
  """The centred network: an MLP without biases, antisymmetrically doubled (output 0 at init)."""
  m = nn.mlp((cfg.input_dim,), width, cfg.depth, 1, activation=ACTIVATIONS[cfg.activation],
             b_std=None)
  return nn.model(nn.antisymmetric(m.layer), m.input_shape)


def run(cfg: Config, progress: Callable[[int, int, str], None] | None = None,
        **engine) -> xr.Dataset:
  """Trains the grid ``seed x gamma`` and sets every run beside its initial-NTK prediction.

  Args:
    cfg: the configuration.
    progress: ``progress(steps_done, steps_total, info)``, called as training advances.
    **engine: execution options of :func:`jaxtheory.sweep.run`.

  Returns:
    The results dataset, dims ``(seed, gamma, step)``, with the variables of
    :func:`jaxtheory.limits.compare` (``dev_linear``, ``kernel_movement``,
    ``kernel_alignment``, ``weight_movement``, ``ntk_probe``, outputs);
    the configuration as JSON in ``attrs['config']``.
  """
  _check(cfg)
  ds = load_data(cfg)
  s = sweep.Sweep(
      model=lambda w: network(cfg, w), data=ds,
      grid=dict(seed=seed_list(cfg.seeds), width=[cfg.width],
                gamma=[float(g) for g in sorted(cfg.gammas)]),
      optimizer="sgd", hparams=dict(lr=cfg.lr), steps=cfg.steps, record=cfg.record, loss="mse",
      parametrization="mf", dtype=cfg.dtype, name="lazy-rich")
  res = limits.compare(s, n_probe=cfg.n_probe, progress=progress, **engine)
  res = res.isel(width=0, drop=True)
  res.attrs["experiment"] = "lazy-rich"
  res.attrs["dataset"] = ds.name
  res.attrs["width"] = cfg.width
  res.attrs["config"] = json.dumps(dataclasses.asdict(cfg))
  return res


# ----------------------------------------------------------------------------
# Reading the results.


def measurements(ds: xr.Dataset) -> dict[str, xr.DataArray]:
  """Per ``(seed, gamma)`` at the end of training: movements, deviation, alignment, losses."""
  end = ds.isel(step=-1)
  return dict(weight=ds.weight_movement, kernel=end.kernel_movement, dev=end.dev_linear,
              align=end.kernel_alignment_centered,
              align0=ds.kernel_alignment_centered.isel(step=0),
              test=end.test_loss, train=end.train_loss)


def slopes(ds: xr.Dataset, var: xr.DataArray) -> dict[int, tuple[float, float]]:
  """Per seed, the power law of ``var`` (dims ``seed, gamma``) in gamma: ``(slope, R^2)``."""
  g = ds.gamma.values.astype(float)
  out = {}
  for s in ds.seed.values:
    v = var.sel(seed=s).values.astype(float)
    ok = np.isfinite(v) & (v > 0)
    fit = power_law(v[ok], g[ok])
    out[int(s)] = (fit.exponents[0], fit.r2)
  return out


def summary(ds: xr.Dataset) -> list[tuple[str, str]]:
  """Rows ``(label, value)``: per gamma (mean over seeds) movements, deviation, alignment, losses."""
  m = {k: v.mean("seed") for k, v in measurements(ds).items()}
  rows = [("task", f"{ds.attrs.get('dataset')}, width {ds.attrs.get('width')}, "
                   f"mean-field, {len(ds.seed)} seed(s)")]
  for g in ds.gamma.values:
    p = {k: float(v.sel(gamma=g)) for k, v in m.items()}
    rows.append((f"gamma={g:g}",
                 f"weights moved {p['weight']:.3g}, NTK moved {p['kernel']:.3g}, off the "
                 f"initial-NTK flow {p['dev']:.3g}, alignment {p['align0']:.3f} -> "
                 f"{p['align']:.3f}, train/test loss {p['train']:.4f}/{p['test']:.4f}"))
  if len(ds.gamma) >= 2:
    for name, var in (("weight movement", "weight"), ("NTK movement", "kernel")):
      fits = slopes(ds, measurements(ds)[var])
      rows.append((f"{name} ~ gamma^a", ", ".join(f"seed {s}: a = {a:.2f} (R^2 {r2:.3f})"
                                                   for s, (a, r2) in fits.items())))
  rows += timing_rows(ds)
  return rows


def signature(ds: xr.Dataset, min_slope: float = 0.5, min_r2: float = 0.9,
              lazy_move: float = 0.05, lazy_dev: float = 0.05, rich_move: float = 0.5,
              rich_dev: float = 0.2, min_align_gain: float = 1.2,
              max_test_ratio: float = 0.7, min_drop: float = 5.0) -> list[Check]:
  r"""The signature checks with their measured numbers, per seed.

  With :math:`\gamma_{lo}` and :math:`\gamma_{hi}` the smallest and largest
  swept gamma:

  1. weight movement grows as a power of gamma: per seed, a log-log fit over
     every gamma with slope >= ``min_slope`` and :math:`R^2 \ge` ``min_r2``
     (at least three gammas);
  2. the same for the NTK movement;
  3. lazy end (the control): at :math:`\gamma_{lo}` weights and NTK move by
     less than ``lazy_move`` and the test outputs stay within ``lazy_dev``
     of the gradient-flow prediction with the initial NTK;
  4. rich end: at :math:`\gamma_{hi}` the NTK moves by at least ``rich_move``
     and the outputs leave the initial-NTK prediction by ``rich_dev``;
  5. the final kernel's alignment with the target at :math:`\gamma_{hi}` is
     ``min_align_gain`` times that at :math:`\gamma_{lo}`;
  6. features matter: the test loss at :math:`\gamma_{hi}` is at most
     ``max_test_ratio`` times that at :math:`\gamma_{lo}`.

  Checks 4-6 compare regimes and need two gammas (SKIP otherwise) and runs
  whose training worked (loss down ``min_drop`` x, no divergence; SKIP
  otherwise). A sweep over small gammas only is the control: checks 1-3 hold
  and 4-6 fail.
  """
  m = measurements(ds)
  gammas = ds.gamma.values.astype(float)
  seeds = [int(s) for s in ds.seed.values]
  lo, hi = float(gammas.min()), float(gammas.max())
  at = lambda k, g, s: float(m[k].sel(gamma=g, seed=s))
  checks = []
  for name, var in (("weight movement", "weight"), ("NTK movement", "kernel")):
    title = (f"{name} grows as a power of gamma (slope >= {min_slope:g}, "
             f"R^2 >= {min_r2:g}, per seed)")
    if len(gammas) < 3:
      checks.append(skip(title, f"{len(gammas)} gamma(s): a power law needs three or more"))
      continue
    fits = slopes(ds, m[var])
    checks.append(Check(title, all(a >= min_slope and r2 >= min_r2 for a, r2 in fits.values()),
                        "; ".join(f"seed {s}: slope {a:.2f}, R^2 {r2:.3f}"
                                  for s, (a, r2) in fits.items())
                        + f"; at gamma {lo:g}..{hi:g}: "
                        + ", ".join(f"{float(m[var].sel(gamma=g).mean('seed')):.3g}"
                                    for g in gammas)))
  checks.append(Check(
      f"lazy end, gamma {lo:g}: weights and NTK stay put (moved < {lazy_move:g}) and the "
      f"network follows gradient flow with its initial NTK (deviation < {lazy_dev:g})",
      all(at("weight", lo, s) < lazy_move and at("kernel", lo, s) < lazy_move
          and at("dev", lo, s) < lazy_dev for s in seeds),
      "; ".join(f"seed {s}: weights {at('weight', lo, s):.3g}, NTK {at('kernel', lo, s):.3g}, "
                f"deviation {at('dev', lo, s):.3g}" for s in seeds)))
  rich = [
      f"rich end, gamma {hi:g}: the NTK moves (>= {rich_move:g}) and the network leaves the "
      f"initial-NTK prediction (deviation >= {rich_dev:g})",
      f"kernel-target alignment of the final NTK rises in the rich regime "
      f"(gamma {hi:g} >= {min_align_gain:g}x gamma {lo:g})",
      f"features matter: test loss at gamma {hi:g} <= {max_test_ratio:g}x that at gamma {lo:g}"]
  if len(gammas) < 2:
    return checks + [skip(t, "one gamma: no regimes to compare") for t in rich]
  failed = failed_runs(ds.sel(gamma=[lo, hi]).transpose("seed", "gamma", ...),
                       min_drop=min_drop)
  if failed:
    why = "training failed: " + "; ".join(f"seed {k[0]} gamma {k[1]:g}: {v}"
                                           for k, v in failed.items())
    return checks + [skip(t, why) for t in rich]
  return checks + [
      Check(rich[0], all(at("kernel", hi, s) >= rich_move and at("dev", hi, s) >= rich_dev
                         for s in seeds),
            "; ".join(f"seed {s}: NTK moved {at('kernel', hi, s):.3g} (gamma {lo:g}: "
                      f"{at('kernel', lo, s):.3g}), deviation {at('dev', hi, s):.3g}"
                      for s in seeds)),
      Check(rich[1], all(at("align", hi, s) >= min_align_gain * at("align", lo, s)
                         for s in seeds),
            "; ".join(f"seed {s}: {at('align', hi, s):.3f} vs {at('align', lo, s):.3f} "
                      f"({at('align', hi, s) / at('align', lo, s):.2f}x; at init "
                      f"{at('align0', hi, s):.3f})" for s in seeds)),
      Check(rich[2], all(at("test", hi, s) <= max_test_ratio * at("test", lo, s) for s in seeds),
            "; ".join(f"seed {s}: {at('test', hi, s):.4f} vs {at('test', lo, s):.4f} "
                      f"({at('test', hi, s) / at('test', lo, s):.2f}x; train "
                      f"{at('train', hi, s):.4f} vs {at('train', lo, s):.4f})" for s in seeds)),
  ]


def figures(ds: xr.Dataset, out_dir: str | os.PathLike) -> list[str]:
  """Movements, deviation from the initial-NTK flow, alignment and losses against gamma."""
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  m = measurements(ds)
  g = ds.gamma.values.astype(float)
  fig = plots.agg_figure((15.0, 3.8))
  ax_mv, ax_dev, ax_al, ax_loss = fig.subplots(1, 4)
  for k, s in enumerate(ds.seed.values):
    pick = lambda v, s=s: m[v].sel(seed=s).values
    first = k == 0
    ax_mv.plot(g, pick("weight"), "o-", color="C0", label="weights" if first else None)
    ax_mv.plot(g, pick("kernel"), "s-", color="C1", label="NTK" if first else None)
    ax_dev.plot(g, pick("dev"), "o-", color="C2")
    ax_al.plot(g, pick("align"), "o-", color="C3", label="final" if first else None)
    ax_al.plot(g, pick("align0"), ":", color="C3", label="init" if first else None)
    ax_loss.plot(g, pick("test"), "o-", color="C4", label="test" if first else None)
    ax_loss.plot(g, pick("train"), "x--", color="C5", label="train" if first else None)
  ax_mv.set_title("relative movement at the end", fontsize="medium")
  ax_dev.set_title("test outputs vs initial-NTK flow", fontsize="medium")
  ax_al.set_title("kernel-target alignment", fontsize="medium")
  ax_loss.set_title("loss at the end", fontsize="medium")
  for ax in (ax_mv, ax_dev, ax_al, ax_loss):
    ax.set_xscale("log")
    ax.set_xlabel("richness gamma")
    ax.grid(alpha=0.3)
  for ax in (ax_mv, ax_dev, ax_loss):
    ax.set_yscale("log")
  for ax in (ax_mv, ax_al, ax_loss):
    ax.legend(fontsize="small")
  path = os.path.join(out_dir, "lazy_rich_vs_gamma.png")
  fig.savefig(path, dpi=130)
  ax = plots.metric_vs_step(ds, "kernel_movement", "gamma")
  curve = os.path.join(out_dir, "kernel_movement.png")
  ax.figure.savefig(curve, dpi=130)
  return [path, curve]
