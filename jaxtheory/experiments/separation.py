r"""The law of data separation: trained MLPs separate classes geometrically, layer by layer.

He & Su (2023), "A law of data separation in deep learning" (PNAS). The
separation fuzziness of layer ``l``,
:math:`D_l = \mathrm{Tr}(\Sigma_W^l \Sigma_B^{l+})` (within-class over
between-class covariance of the layer's features on the training set, see
:mod:`jaxtheory.probes.separation`), decays geometrically with depth in a
well-trained network, :math:`D_l \approx \rho^l D_0`: :math:`\log D_l` is
linear in ``l`` with :math:`R^2` close to one and a fitted per-layer ratio
:math:`\rho < 1`. At initialization there is no such law: ReLU layers with
random weights do not separate the classes, and the fuzziness of a random
network rises with depth (``rho > 1``).

The paper trains feedforward networks (e.g. 8 hidden layers of 100 units) on
the whole of Fashion-MNIST with SGD for hundreds of epochs. Scaled down for a
CPU: a balanced subset of Fashion-MNIST (``per_class`` training images of each
class, default 100 of each of the 10 classes), ``depth`` hidden layers of
``width`` units (default 6 x 100), full-batch SGD with momentum, MSE on one-hot
targets and a little weight decay for ``steps`` steps (default 1500), seeds x
widths trained as one sweep.
:math:`D_l` of every hidden layer is recorded inside the compiled sweep
(:func:`jaxtheory.probes.separation.fuzziness_metric`), so the law is seen
forming along training. The control is the same networks at initialization
(the sweep's step 0): their fuzziness must not follow the law.
``dataset='digits'`` (scikit-learn's 8x8 digits, no files needed) serves small
runs. The defaults (2 seeds) take about a minute on a 2-core CPU: both runs fit
the training set, and :math:`D_l` falls from ~6 at layer 1 to ~0.02-0.03 at
layer 6, :math:`\rho` 0.32-0.37 with :math:`R^2` 0.97-0.98 (seeds 2 and 3: 0.32-0.34,
0.985-0.988); at init :math:`\rho` is 1.16-1.23. With cross-entropy and a smaller
learning rate (``loss=xent``, ``lr=0.01``, 3000 steps) the decay is much weaker
(:math:`\rho` 0.85-0.92) and less regular (:math:`R^2` 0.43-0.99 over three seeds).

>>> from jaxtheory.experiments import separation as sep
>>> cfg = sep.Config(dataset="digits", per_class=10, seeds=1, widths=(8,), depth=3, steps=5,
...                  record=3)
>>> sep.run(cfg).fuzziness.dims
('seed', 'width', 'step', 'layer')
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import numpy as np
import xarray as xr

from jaxtheory import data, nn, plots, sweep
from jaxtheory.experiments.check import Check, positive_ints, seed_list, timing_rows
from jaxtheory.probes.separation import fit_log_linear, fuzziness_metric
from jaxtheory.errors import ConfigError

DATASETS = ("fashion-mnist", "mnist", "digits")


@dataclasses.dataclass(frozen=True)
class Config:
  """The data-separation settings (every field overridable by ``--set key=value``).

  Attributes:
    dataset: ``'fashion-mnist'``, ``'mnist'`` or ``'digits'``.
    per_class: training examples per class (balanced), drawn at random.
    n_test: test examples (for the reported test accuracy).
    data_seed: seed of the subset.
    seeds: number of seeds; runs use seeds ``0..seeds-1``.
    widths: hidden widths, swept in one program.
    depth: hidden layers (the law is fitted over their ``depth`` features).
    loss: ``'mse'`` (one-hot targets) or ``'xent'``.
    lr: learning rate of full-batch SGD.
    momentum: heavy-ball momentum.
    weight_decay: L2 weight decay (``sgdw``: added to the gradient before momentum, as in
      PyTorch's SGD, not decoupled).
    steps: full-batch steps.
    record: about this many log-spaced recording points.
  """
  dataset: str = "fashion-mnist"
  per_class: int = 100
  n_test: int = 1000
  data_seed: int = 0
  seeds: int = 2
  widths: tuple[int, ...] = (100,)
  depth: int = 6
  loss: str = "mse"
  lr: float = 0.1
  momentum: float = 0.9
  weight_decay: float = 5e-4
  steps: int = 1500
  record: int = 10


def _check(cfg: Config) -> None:
  if cfg.dataset not in DATASETS:
    raise ConfigError(f"unknown dataset {cfg.dataset!r}; available: {', '.join(DATASETS)}")
  positive_ints(cfg, "per_class", "n_test", "seeds", "steps", "record")
  if cfg.depth < 3:
    raise ConfigError(f"depth must be at least 3 (a line through fewer layers fits "
                      f"trivially), got {cfg.depth!r}")
  if not cfg.widths or any(w < 1 for w in cfg.widths):
    raise ConfigError(f"widths must be positive integers, got {cfg.widths!r}")
  if cfg.loss not in ("mse", "xent"):
    raise ConfigError(f"unknown loss {cfg.loss!r}; available: mse, xent")
  if cfg.lr <= 0:
    raise ConfigError(f"lr must be positive, got {cfg.lr!r}")


def load_data(cfg: Config) -> data.Dataset:
  """The balanced training subset of ``cfg.dataset`` (every class) and ``n_test`` test examples."""
  return data.balanced(cfg.dataset, per_class=cfg.per_class, n_test=cfg.n_test,
                       seed=cfg.data_seed)


def run(cfg: Config, progress: Callable[[int, int, str], None] | None = None,
        **engine) -> xr.Dataset:
  r"""Trains the grid ``seed x width``, recording the fuzziness of every hidden layer.

  Args:
    cfg: the configuration.
    progress: ``progress(steps_done, steps_total, info)``, called as training advances.
    **engine: execution options of :func:`jaxtheory.sweep.run`.

  Returns:
    The results dataset, dims ``(seed, width, step)``, with ``fuzziness``
    (``D_l``, a trailing ``layer`` axis numbered from 1) and the log-linear
    fit of every run at every recording point: ``log_ratio`` (the slope
    :math:`\log\rho` per layer) and ``r2``. The configuration as JSON in
    ``attrs['config']``.
  """
  _check(cfg)
  ds = load_data(cfg)
  C = ds.num_classes
  s = sweep.Sweep(
      model=lambda w: nn.mlp(ds.input_shape, w, cfg.depth, C),
      data=ds, grid=dict(seed=seed_list(cfg.seeds), width=list(cfg.widths)),
      optimizer="sgdw", hparams=dict(lr=cfg.lr, momentum=cfg.momentum,
                                     weight_decay=cfg.weight_decay),
      steps=cfg.steps, record=cfg.record, loss=cfg.loss,
      metrics={"fuzziness": fuzziness_metric(C)}, name="separation")
  res, groups = sweep.execute(s, params=engine.pop("return_params", False), progress=progress,
                              **engine)
  res = res.assign_coords(layer=np.arange(1, cfg.depth + 1))
  res = res.merge(law_fit(res.fuzziness))
  res.attrs["experiment"] = "separation"
  res.attrs["dataset"] = ds.name
  res.attrs["config"] = json.dumps(dataclasses.asdict(cfg))
  return res if groups is None else (res, groups)


# ----------------------------------------------------------------------------
# Reading the results.


def law_fit(fuzziness: xr.DataArray) -> xr.Dataset:
  """The least-squares line through ``log D_l`` against ``l``, for every run and step.

  Args:
    fuzziness: ``D_l`` with a ``layer`` axis (and any others).

  Returns:
    ``log_ratio`` (slope: :math:`\\log\\rho`) and ``r2``, over the other axes.
  """
  f = fuzziness.transpose(..., "layer")
  v = np.asarray(f.values, np.float64).reshape(-1, f.sizes["layer"])
  slope, r2 = np.full(len(v), np.nan), np.full(len(v), np.nan)
  layers = np.asarray(f.layer.values, np.float64)
  for i, row in enumerate(v):
    if np.all(np.isfinite(row)) and np.all(row > 0):
      fit = fit_log_linear(row, layers)
      slope[i], r2[i] = float(fit.slope), float(fit.r2)
  shape = f.shape[:-1]
  coords = {d: f[d] for d in f.dims[:-1] if d in f.coords}
  return xr.Dataset({"log_ratio": (f.dims[:-1], slope.reshape(shape)),
                     "r2": (f.dims[:-1], r2.reshape(shape))}, coords=coords)


def _runs(ds: xr.Dataset):
  """``((seed, width), one run)`` for every run of the grid."""
  for seed in ds.seed.values:
    for width in ds.width.values:
      yield (int(seed), int(width)), ds.sel(seed=seed, width=width)


def law_holds(ratio: float, r2: float, max_ratio: float, min_r2: float) -> bool:
  """The law at one point: fuzziness decays (``rho <= max_ratio``) log-linearly (``R^2 >= min_r2``)."""
  return bool(np.isfinite(ratio) and np.isfinite(r2) and ratio <= max_ratio and r2 >= min_r2)


def summary(ds: xr.Dataset) -> list[tuple[str, str]]:
  """Rows ``(label, value)``: per run, accuracy and the law's fit at init and at the end."""
  rows = [("dataset", f"{ds.attrs.get('dataset')}, {len(ds.layer)} hidden layers")]
  for (seed, width), r in _runs(ds):
    a, b = r.isel(step=0), r.isel(step=-1)
    rows.append((f"seed={seed} width={width}",
                 f"train/test acc {100 * float(b.train_acc):.1f}/{100 * float(b.test_acc):.1f}%; "
                 f"rho {np.exp(float(a.log_ratio)):.3f} -> {np.exp(float(b.log_ratio)):.3f}, "
                 f"R^2 {float(a.r2):.3f} -> {float(b.r2):.3f}, D_1 -> D_L "
                 f"{float(b.fuzziness[0]):.3g} -> {float(b.fuzziness[-1]):.3g}"))
  rows += timing_rows(ds)
  return rows


def signature(ds: xr.Dataset, min_r2: float = 0.9, max_ratio: float = 0.9,
              min_train_acc: float = 0.99) -> list[Check]:
  """The signature checks with their measured numbers.

  Per run (every seed and width), at the end of training: the network fits
  its training set (accuracy >= ``min_train_acc``: the law is a statement
  about well-trained networks), and ``log D_l`` falls linearly with ``l``,
  with :math:`R^2 \\ge` ``min_r2`` and a per-layer ratio
  :math:`\\rho \\le` ``max_ratio``. The control: the same networks at
  initialization do not follow the law (for every run, ``rho > max_ratio``
  or ``R^2 < min_r2``; random ReLU layers have ``rho > 1``).
  """
  runs = dict(_runs(ds))
  acc = {k: float(r.train_acc.isel(step=-1)) for k, r in runs.items()}
  law = {k: (float(np.exp(r.log_ratio.isel(step=-1))), float(r.r2.isel(step=-1)))
         for k, r in runs.items()}
  law0 = {k: (float(np.exp(r.log_ratio.isel(step=0))), float(r.r2.isel(step=0)))
          for k, r in runs.items()}
  name = lambda k: f"seed {k[0]} width {k[1]}"
  ratios = np.array([v[0] for v in law.values()])
  return [
      Check(f"every run fits its training set (train accuracy >= {100 * min_train_acc:g}%)",
            all(a >= min_train_acc for a in acc.values()),
            "; ".join(f"{name(k)}: {100 * a:.1f}%" for k, a in acc.items())),
      Check(f"after training, log D_l falls linearly with depth in every run "
            f"(R^2 >= {min_r2:g}, rho <= {max_ratio:g})",
            all(law_holds(*v, max_ratio, min_r2) for v in law.values()),
            "; ".join(f"{name(k)}: rho {v[0]:.3f}, R^2 {v[1]:.3f}" for k, v in law.items())
            + f"; rho {ratios.mean():.3f} +- {ratios.std():.3f} over runs "
            f"(D falls {1 / np.mean(ratios):.2f}x per layer)"),
      Check("control at init: no law of separation (fuzziness does not decay log-linearly)",
            not any(law_holds(*v, max_ratio, min_r2) for v in law0.values()),
            "; ".join(f"{name(k)}: rho {v[0]:.3f}, R^2 {v[1]:.3f}" for k, v in law0.items())),
  ]


def figures(ds: xr.Dataset, out_dir: str | os.PathLike) -> list[str]:
  """``D_l`` against layer at init and at the end (fits dashed); rho and R^2 along training."""
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  fig = plots.agg_figure((12.0, 3.8))
  ax_law, ax_rho, ax_r2 = fig.subplots(1, 3)
  layers = ds.layer.values
  for k, ((seed, width), r) in enumerate(_runs(ds)):
    for j, (where, ls) in enumerate(((0, ":"), (-1, "-"))):
      p = r.isel(step=where)
      ax_law.plot(layers, p.fuzziness.values, ls, marker="o", color=f"C{k}", ms=3,
                  label=f"seed {seed} w {width}" + (" (init, dotted)" if j == 0 and k == 0 else ""))
      fit_b = np.log(p.fuzziness.values).mean() - float(p.log_ratio) * layers.mean()
      ax_law.plot(layers, np.exp(fit_b + float(p.log_ratio) * layers), "--", color=f"C{k}",
                  lw=0.8, alpha=0.6)
    ax_rho.plot(r.step.values, np.exp(r.log_ratio.values), color=f"C{k}")
    ax_r2.plot(r.step.values, r.r2.values, color=f"C{k}")
  ax_law.set_yscale("log")
  ax_law.set_xlabel("hidden layer l")
  ax_law.set_title("separation fuzziness D_l", fontsize="medium")
  ax_law.legend(fontsize="x-small")
  ax_rho.axhline(1.0, color="k", lw=0.6)
  ax_rho.set_title("per-layer ratio rho along training", fontsize="medium")
  ax_r2.set_title("R^2 of log D_l vs l along training", fontsize="medium")
  ax_r2.set_ylim(-0.05, 1.05)
  for ax in (ax_rho, ax_r2):
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.set_xlabel("step")
  for ax in (ax_law, ax_rho, ax_r2):
    ax.grid(alpha=0.3)
  path = os.path.join(out_dir, "separation_law.png")
  fig.savefig(path, dpi=130)
  ax = plots.metric_vs_step(ds, "train_acc", "width")
  acc = os.path.join(out_dir, "train_acc.png")
  ax.figure.savefig(acc, dpi=130)
  return [path, acc]
