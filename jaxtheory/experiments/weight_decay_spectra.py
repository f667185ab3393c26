r"""Weight decay sets the norm of normalized layers, :math:`\|W\| \propto \sqrt{\eta/\lambda}`, and lowers their ranks.

A weight followed by a normalization is *scale-invariant*: the network
computes the same function from :math:`cW` as from :math:`W`, and the
gradient is orthogonal to :math:`W` and scales as :math:`1/\|W\|`. Gradient
steps then only grow the norm and weight decay only shrinks it, until the two
balance in an equilibrium that forgets the initialization (van Laarhoven 2017,
"L2 regularization versus batch and weight normalization"; Wan et al. 2021,
"Spherical motion dynamics"; Kosson, Messmer & Jaggi 2024, "Rotational
equilibrium: how weight decay balances learning across neural networks").
With decoupled weight decay :math:`W \leftarrow W - \eta(u + \lambda W)`:

* AdamW, whose update :math:`u` has a norm independent of :math:`\|W\|`
  (:math:`\|u\|^2 \approx C_\mathrm{eff}`, at most the number of entries),
  balances :math:`2\eta\lambda\|W\|^2 = \eta^2 C_\mathrm{eff}`:
  :math:`\|W\| = \sqrt{\eta\, C_\mathrm{eff} / (2\lambda)}`, slope
  :math:`1/2` in :math:`\eta/\lambda`;
* SGD, whose update is the gradient, :math:`\|u\| = G/\|W\|`, balances
  :math:`2\eta\lambda\|W\|^4 = \eta^2 G^2`: :math:`\|W\| = (\eta G^2/(2\lambda))^{1/4}`,
  slope :math:`1/4`.

Both rotate :math:`W` by :math:`\sqrt{2\eta\lambda}` radians per step, so the
*function* a scale-invariant network learns depends on :math:`\eta\lambda`
and its *norm* on :math:`\eta/\lambda` (exactly so up to the readout: the map
:math:`(\eta, \lambda, W_0) \to (c\eta, \lambda/c, \sqrt c W_0)` for AdamW, or
:math:`(c^2\eta, \lambda/c^2, c W_0)` for SGD, rotates the same directions).
Only through :math:`C_\mathrm{eff}` (AdamW: how aligned successive updates
are) or :math:`G` (SGD) does :math:`\eta\lambda` reach the norm. Without
normalization (a plain MLP) the law has no reason to hold, and a previous try
on one found slope 0.64 with :math:`R^2` 0.7; here the readout, which is not
scale-invariant, is that contrast. Without weight decay (the control) there
is no equilibrium: the norm grows while the gradient is not negligible and
is otherwise frozen near its initial value, unrelated to :math:`\eta/\lambda`.

Weight decay also acts on the *spectra* of the layers: the more the weights
rotate away from their random initialization, the more their spectrum is the
learned, low-dimensional part, and the ranks fall with :math:`\lambda`
(Galanti et al. 2023, "SGD and weight decay secretly minimize the rank of
your neural network", for SGD). The control sets how to read that: its runs
share the learning rates, and their ranks change with :math:`\eta` alone
(Adam without weight decay collapses later layers onto one direction at the
largest ones), so the fall is measured at fixed :math:`\eta`, as the slope
:math:`d\log r/d\log\lambda`, which is zero for the control. It shows in the
effective rank (Roy & Vetterli 2007: the entropy of the whole spectrum); the
stable rank :math:`\|W\|_F^2/\|W\|_2^2`, one over the top singular value's
share, falls reliably in the first layer only (below).

The setting, sized for a CPU: a balanced MNIST subset (``per_class`` images
of each digit, pooled to 14x14), networks of ``depth`` hidden layers of
``width`` units whose every hidden weight (no bias) is followed by a layer
norm without gain (:func:`jaxtheory.nn.layer_norm`, ``affine=False``) and a
ReLU: a plain MLP (``mlp``) and a residual one (``resmlp``: the first layer,
then ``depth - 1`` blocks :math:`h + \mathrm{relu}(\mathrm{LN}(Wh))`), and a
linear readout with a bias. The grid is a product of :math:`\eta\lambda`
(``lr_times_wd``) and :math:`\eta/\lambda` (``lr_over_wd``), so the two vary
independently, times ``decay`` in {0, 1}: each run with weight decay has a
twin at the same learning rate without it, the control
(:data:`balanced_adamw`, optax's ``adamw`` with :math:`\beta_2` ``b2``;
minibatches of ``batch_size``). Each architecture is one compiled sweep
(joined along ``arch``); the SGD law comes from one more sweep of the plain
MLP (:data:`balanced_sgdw`, grid ``sgd_lr_times_wd x sgd_lr_over_wd``, its
variables prefixed ``sgd_``). The defaults keep :math:`\eta\lambda \cdot`
``steps`` :math:`\ge 9`, so every run with weight decay relaxes (in about
:math:`1/(2\eta\lambda)` steps) within the first half of training; the
equilibrium is the mean over the last ``tail`` (a quarter), and it is
checked to be stationary over the second half. Every weight's Frobenius
norm, stable and effective rank are recorded inside the
compiled sweep (:func:`jaxtheory.probes.spectra.layer_metric`).

The equilibrium needs gradient noise that does not vanish: a training set
the network can fit exactly breaks it. With 100 images per class, by step
1000 the smallest :math:`\eta\lambda` (0.003) runs had fitted all 1000 images
(train loss 0.001-0.005), Adam's update fell below its epsilon, weight decay
alone shrank the norm by :math:`e^{-\eta\lambda t}`, until the effective
learning rate :math:`\eta/\|W\|^2` grew large enough for a loss spike that
restored it (the periodic regime of Lobacheva et al. 2021, "On the periodic
behavior of neural network training with batch normalization and weight
decay"): no stationary norm (|growth| up to 2.9 over the second half). Hence
500 images per class and 3000 steps (38 epochs; the runs with weight decay
keep a train loss above 0.06).

The defaults (2 seeds, 104 runs of 3000 steps) take 82 s on a quiet 2-core
CPU (67 s again, its programs loaded from the compilation cache; 101 s
pinned to one core) and pass every check. Measured: AdamW :math:`k` = 0.497,
0.507, 0.502 (plain, layers 1-3) and 0.482, 0.490, 0.498 (residual), :math:`R^2 \ge 0.999`,
:math:`|k_2| \le 0.13`; SGD :math:`k` = 0.273, 0.275, 0.297 (:math:`R^2` 0.999),
a little above 1/4. The norm is stationary within |growth| 0.23 (plain: seed
1 at the smallest lr*wd and lr/wd, s.e. of its slope 0.024, a slow drift, not
noise) and 0.15 (residual), under check 1's bound of 1/4; the control's
runs grow with a median exponent of 0.48. (An earlier run, on another
machine and JAX release, gave 0.18: XLA's reductions differ with the CPU and
training amplifies that.) At a fixed learning rate
the effective rank falls with weight decay in every normalized layer of both
networks: :math:`d\log r/d\log\lambda` = -0.055, -0.065, -0.121 (plain,
layers 1-3) and -0.083, -0.114, -0.102 (residual), each at least 8.5 s.e.
from 0; over the layers' geometric mean -0.081 +- 0.005 and -0.100 +- 0.008,
the control's +0.003 +- 0.003 and +0.007 +- 0.008. The stable rank falls in
the first layer (-0.171, -0.188) and hardly in the others (-0.014 to
-0.036): with weight decay they sit at 5.5-6.8 across the grid, but for
the residual network's last block at the largest lr/wd (3.3-5.7). A
run with weight decay against its twin without it, at the same learning
rate, is not the measure: the median ratio is 0.63-0.78 in stable and
0.60-0.87 in effective rank here, but the twin collapses onto one direction
(stable rank below 2: Adam's update of a rank-one gradient is a rank-one
sign pattern, and nothing decays what those updates pile up) in 6 of the
residual network's 18 last-block cells, at the largest learning rates,
where the run with weight decay keeps 3-6 (ratio 2.9), and
at width 128 and above in most later-layer cells, where weight decay then
*raises* the rank (Galanti et al. compare SGD runs whose twins keep their
random initialization's rank). The networks differ in the layers that are
residual blocks: weight decay lowers their ranks less than the plain
network's (log ratio with/without, mean over layers 2-3: +0.198 +- 0.020
stable, +0.100 +- 0.007 effective); here all of it is that collapse (over
the cells where neither twin collapsed, -0.031 and -0.003).
Without weight decay the norm depends on the learning rate alone
(:math:`k \approx k_2` = 0.36-0.47): no law.

Declared range. Besides the defaults, nine settings: Fashion-MNIST at the
defaults, and at width 32 with 2 and with 3 normalized layers (3 seeds);
width 64 with 2; width 96 with 4, seeds 7, 8 and data subset 2; width 128
with 2 and with 4; width 256 with seeds 5, 6 and data subset 3, and with 2
layers on Fashion-MNIST, seeds 9, 10. The norm laws (checks 2, 3, 6) and
the control (7) held in all (AdamW :math:`k` 0.472-0.553,
:math:`R^2 \ge 0.99`, :math:`|k_2| \le 0.17`; SGD 0.261-0.310). The ranks
(4) fell in all: the geometric-mean slope -0.081 to -0.183, every layer's
effective rank at least 6.7 s.e. below 0, the control's within -0.6 to +1.2
s.e. of 0. At widths 96-256 Adam collapsed the residual network's later
blocks in 2-6 of 18 runs *with* weight decay too (the largest lr/wd), left
out; there the stable rank of the last block rises with :math:`\lambda`
(+0.162 +- 0.043 at width 128, 4 layers), one reason it is reported and not
judged. The fall is over a decade of :math:`\lambda`: on a grid of lr*wd
0.01 and 0.03 only (1500 steps, 300 images per class) a plain network of
width 32 fell by -0.019 +- 0.008, its first layer flat, and one of width 64
by -0.074 +- 0.009. The networks differ (5) in all, in the residual blocks:
+0.085 to +0.333 in log effective-rank ratio; the part left over the cells
where neither twin collapsed ranges from none (the defaults, -0.003) to all
of it (2 layers at widths 32 and 64, where nothing collapsed). With one
residual block (width 32, 2 layers, Fashion-MNIST) it is +0.085 +- 0.005;
averaged with the first layer, which the two networks share and where their
effects differ by -0.04 to +0.04, it was +0.022 +- 0.004, under the 0.05
floor. The equilibrium (1) needs a training set the runs cannot fit exactly
(above); at width 128 and depth 4 one residual layer-run has a slope of
-0.330 +- 0.120, which fails check 1 there; it held in the others.

>>> from jaxtheory.experiments import weight_decay_spectra as wds
>>> cfg = wds.Config(dataset="digits", per_class=10, seeds=1, width=8, depth=2, lr_times_wd=(0.01,),
...                  lr_over_wd=(0.01,), sgd=False, steps=4, record=5)
>>> wds.run(cfg).weight_norm.dims
('arch', 'seed', 'lr_times_wd', 'lr_over_wd', 'decay', 'step', 'layer')
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
import optax
import xarray as xr

from jaxtheory import data, nn, plots, sweep
from jaxtheory.analysis import PowerLaw, growth_exponent, power_law
from jaxtheory.errors import ConfigError
from jaxtheory.experiments.check import Check, positive_ints, seed_list, skip, timing_rows
from jaxtheory.nn import layers as L
from jaxtheory.probes.spectra import RECORDED, layer_metric
from jaxtheory.sweep.compose import part_path
from jaxtheory.train import Optimizer

DATASETS = ("mnist", "fashion-mnist", "digits")
ARCHS = ("mlp", "resmlp")
RANKS = ("stable_rank", "effective_rank")


def _balanced_adamw(lr_times_wd=1e-2, lr_over_wd=1e-2, decay=1.0, b1=0.9, b2=0.99):
  lr = jnp.sqrt(lr_times_wd * lr_over_wd)
  return optax.adamw(lr, b1=b1, b2=b2, weight_decay=decay * jnp.sqrt(lr_times_wd / lr_over_wd))


def _balanced_sgdw(lr_times_wd=1e-2, lr_over_wd=1.0, decay=1.0):
  lr = jnp.sqrt(lr_times_wd * lr_over_wd)
  return optax.chain(optax.add_decayed_weights(decay * jnp.sqrt(lr_times_wd / lr_over_wd)),
                     optax.sgd(lr))


balanced_adamw = Optimizer(_balanced_adamw, "adam", "balanced_adamw",
                           hyper=dict(lr_times_wd=1e-2, lr_over_wd=1e-2, decay=1.0, b1=0.9,
                                      b2=0.99))
r"""AdamW with :math:`\eta = \sqrt{pr}`, :math:`\lambda = d\sqrt{p/r}` from
``lr_times_wd`` :math:`p = \eta\lambda`, ``lr_over_wd`` :math:`r = \eta/\lambda`
and ``decay`` :math:`d` (1: on; 0: off at the same learning rate)."""

balanced_sgdw = Optimizer(_balanced_sgdw, "sgd", "balanced_sgdw",
                          hyper=dict(lr_times_wd=1e-2, lr_over_wd=1.0, decay=1.0))
"""SGD with decoupled weight decay, parametrized as :data:`balanced_adamw`."""


@dataclasses.dataclass(frozen=True)
class Config:
  """The weight-decay settings (every field overridable by ``--set key=value``).

  Attributes:
    dataset: ``'mnist'``, ``'fashion-mnist'`` or ``'digits'``.
    per_class: training examples per class (balanced), drawn at random.
    n_test: test examples.
    pool: average-pooling factor of the images (digits: ignored).
    data_seed: seed of the subset.
    seeds: number of seeds (a count) or the seeds themselves.
    archs: ``mlp`` (plain) and/or ``resmlp`` (residual), each its own sweep.
    width: hidden width.
    depth: hidden (normalized) layers.
    lr_times_wd: AdamW values of lr * weight decay (sets the rotation per step).
    lr_over_wd: AdamW values of lr / weight decay (sets the equilibrium norm).
    b2: AdamW's second-moment decay.
    sgd: also run SGD on the plain MLP (the 1/4 law).
    sgd_lr_times_wd: SGD values of lr * weight decay.
    sgd_lr_over_wd: SGD values of lr / weight decay.
    batch_size: minibatch size.
    steps: optimizer steps.
    record: evenly spaced recording points.
    tail: the last fraction of training over which the equilibrium is averaged.
  """
  dataset: str = "mnist"
  per_class: int = 500
  n_test: int = 500
  pool: int = 2
  data_seed: int = 0
  seeds: int | tuple[int, ...] = 2
  archs: tuple[str, ...] = ARCHS
  width: int = 64
  depth: int = 3
  lr_times_wd: tuple[float, ...] = (0.003, 0.01, 0.03)
  lr_over_wd: tuple[float, ...] = (0.0005, 0.005, 0.05)
  b2: float = 0.99
  sgd: bool = True
  sgd_lr_times_wd: tuple[float, ...] = (0.003, 0.006)
  sgd_lr_over_wd: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
  batch_size: int = 64
  steps: int = 3000
  record: int = 31
  tail: float = 0.25


def _check(cfg: Config) -> None:
  if cfg.dataset not in DATASETS:
    raise ConfigError(f"unknown dataset {cfg.dataset!r}; available: {', '.join(DATASETS)}")
  positive_ints(cfg, "per_class", "n_test", "pool", "width", "depth", "batch_size", "steps")
  seed_list(cfg.seeds)
  if not cfg.archs or any(a not in ARCHS for a in cfg.archs) or len(set(cfg.archs)) != len(cfg.archs):
    raise ConfigError(f"archs must be distinct names among {', '.join(ARCHS)}, got {cfg.archs!r}")
  grids = ("lr_times_wd", "lr_over_wd") + (("sgd_lr_times_wd", "sgd_lr_over_wd") if cfg.sgd else ())
  for name in grids:
    v = getattr(cfg, name)
    if not v or any(not x > 0 for x in v) or len(set(v)) != len(v):
      raise ConfigError(f"{name} must be distinct positive numbers, got {v!r} (weight decay "
                        "0, the control, is always run too)")
  if not isinstance(cfg.record, int) or cfg.record < 5:
    raise ConfigError(f"record must be an integer >= 5 (the equilibrium is read from the last "
                      f"recordings), got {cfg.record!r}")
  if not 0 < cfg.tail <= 0.5:
    raise ConfigError(f"tail must lie in (0, 0.5], got {cfg.tail!r}")


def load_data(cfg: Config) -> data.Dataset:
  """The balanced training subset of ``cfg.dataset`` and ``n_test`` test examples."""
  return data.balanced(cfg.dataset, per_class=cfg.per_class, n_test=cfg.n_test,
                       seed=cfg.data_seed, pool=cfg.pool)


def model(arch: str, input_shape, width: int, depth: int, out_dim: int) -> nn.Model:
  r"""The network ``arch`` with every hidden weight scale-invariant.

  A hidden layer is ``dense`` (no bias) -> layer norm without gain -> ReLU;
  ``'mlp'`` stacks ``depth`` of them, ``'resmlp'`` adds every one after the
  first to its input (:math:`h + \mathrm{relu}(\mathrm{LN}(Wh))`). The
  readout is a dense layer with a bias.
  """
  pre = [L.flatten()] if len(input_shape) != 1 else []
  block = lambda: [L.dense(width, b_std=None, width_mult=1), L.layer_norm(1e-5), L.relu()]
  if arch == "mlp":
    body = [layer for _ in range(depth) for layer in block()]
  else:
    body = block() + [nn.residual(*block()) for _ in range(depth - 1)]
  return nn.model(nn.serial(*pre, *body, L.dense(out_dim, b_std=0.0)), input_shape)


def _split(res: xr.Dataset, depth: int) -> xr.Dataset:
  """The recorded ``spectra`` array as one variable per statistic, ``layer`` numbered from 1."""
  spec = res["spectra"]
  out = res.drop_vars("spectra")
  dims = spec.dims[:-2] + ("layer",)
  for k, name in enumerate(RECORDED):
    out[name if name != "frobenius_norm" else "weight_norm"] = (dims, spec.values[..., k])
  return out.assign_coords(layer=np.arange(1, depth + 2))


def run(cfg: Config, progress: Callable[[int, int, str], None] | None = None,
        **engine) -> xr.Dataset:
  """Trains ``arch x seed x lr_times_wd x lr_over_wd x decay`` with AdamW (and SGD on the plain MLP).

  Args:
    cfg: the configuration.
    progress: ``progress(steps_done, steps_total, info)``, called as training advances.
    **engine: execution options of :func:`jaxtheory.sweep.run` (a checkpoint
      ``x.npz`` gets one file per sweep).

  Returns:
    The results dataset: dims ``(arch, seed, lr_times_wd, lr_over_wd, decay,
    step)`` with ``weight_norm``, ``stable_rank`` and ``effective_rank`` over
    a trailing ``layer`` axis (``1..depth`` normalized, ``depth + 1`` the
    readout), the losses and accuracies; with ``cfg.sgd`` the same of the SGD
    sweep prefixed ``sgd_`` over ``(seed, sgd_lr_times_wd, sgd_lr_over_wd,
    decay, step)``. The configuration as JSON in ``attrs['config']``.
  """
  _check(cfg)
  if engine.get("return_params"):
    raise ConfigError("weight-decay-spectra records what it reads; it does not return parameters")
  ds = load_data(cfg)
  seeds = seed_list(cfg.seeds)
  metrics = {"spectra": layer_metric()}

  def make(arch, opt=balanced_adamw, p=cfg.lr_times_wd, r=cfg.lr_over_wd, hparams=None):
    return sweep.Sweep(
        model=lambda w: model(arch, ds.input_shape, w, cfg.depth, ds.num_classes), data=ds,
        grid=dict(seed=seeds, width=[cfg.width], lr_times_wd=sorted(p), lr_over_wd=sorted(r),
                  decay=[0.0, 1.0]),
        optimizer=opt, hparams=dict(b2=cfg.b2) if hparams is None else hparams,
        steps=cfg.steps, batch_size=cfg.batch_size, record=f"linear:{cfg.record}", loss="xent",
        metrics=metrics, name=f"weight-decay-spectra-{arch}-{opt.name}")

  # One progress over every sweep: each part reports its own steps (all equal).
  n, parts = len(cfg.archs), len(cfg.archs) + int(cfg.sgd)
  p_adam = p_sgd = None
  if progress is not None:
    p_adam = lambda d, t, info="": progress(d, t * parts // n, info)
    p_sgd = lambda d, t, info="": progress(n * t + d, parts * t, f"{info} (sgd)".lstrip())
  engine = dict(engine)
  ck = engine.pop("checkpoint", None)
  res = sweep.run_over("arch", list(cfg.archs), make, progress=p_adam, checkpoint=ck,
                       each=lambda r: r.isel(width=0, drop=True), **engine)
  res = _split(res, cfg.depth)
  if cfg.sgd:
    opts = dict(engine)
    if ck is not None:
      opts["checkpoint"] = part_path(ck, "optimizer", "sgdw")
    s = make("mlp", balanced_sgdw, cfg.sgd_lr_times_wd, cfg.sgd_lr_over_wd, {})
    sg = sweep.run(s, progress=p_sgd, **opts)
    sg = _split(sg.isel(width=0, drop=True), cfg.depth)
    for key in ("compile_seconds", "run_seconds"):
      res.attrs[key] = float(res.attrs.get(key, 0.0)) + float(sg.attrs.get(key, 0.0))
    sg = sg.rename({"lr_times_wd": "sgd_lr_times_wd", "lr_over_wd": "sgd_lr_over_wd"})
    sg = sg.rename({v: f"sgd_{v}" for v in sg.data_vars})
    res = xr.merge([res, sg], combine_attrs="override", join="outer", compat="override")
  res.attrs["experiment"] = "weight-decay-spectra"
  res.attrs["dataset"] = ds.name
  res.attrs["config"] = json.dumps(dataclasses.asdict(cfg))
  return res


# ----------------------------------------------------------------------------
# Reading the results.


def _axes(sgd: bool) -> tuple[str, str, str]:
  """``(variable prefix, lr*wd axis, lr/wd axis)`` of the AdamW or the SGD sweep."""
  return ("sgd_", "sgd_lr_times_wd", "sgd_lr_over_wd") if sgd else ("", "lr_times_wd", "lr_over_wd")


def has_sgd(ds: xr.Dataset) -> bool:
  return "sgd_weight_norm" in ds


def equilibrium(ds: xr.Dataset, sgd: bool = False, tail: float | None = None) -> xr.Dataset:
  r"""Per run and layer: the statistics at the end of training and whether the norm is stationary.

  Args:
    ds: results of :func:`run`.
    sgd: read the SGD sweep (variables ``sgd_*``) instead of AdamW's.
    tail: the last fraction of training averaged (default: the config's).

  Returns:
    ``norm``, ``stable_rank``, ``effective_rank`` and ``train_loss``
    averaged over the recordings in the last ``tail`` of training, and
    ``growth``: :math:`d\log\|W\|/d\log t` fitted over the second half of
    training (0 at equilibrium, 1/2 for a norm growing like :math:`\sqrt t`),
    and ``growth_se``, its standard error from the norm's fluctuations.
  """
  pre, _, _ = _axes(sgd)
  if tail is None:
    tail = json.loads(ds.attrs.get("config", "{}")).get("tail", 0.25)
  steps = ds.step.values
  last = steps >= (1 - tail) * steps[-1]
  half = steps >= 0.5 * steps[-1]
  out = xr.Dataset({
      "norm": ds[pre + "weight_norm"].isel(step=last).mean("step"),
      "stable_rank": ds[pre + "stable_rank"].isel(step=last).mean("step"),
      "effective_rank": ds[pre + "effective_rank"].isel(step=last).mean("step"),
      "train_loss": ds[pre + "train_loss"].isel(step=last).mean("step"),
  })
  w = ds[pre + "weight_norm"].isel(step=half)
  out["growth"], out["growth_se"] = xr.apply_ufunc(
      lambda c: growth_exponent(c, w.step.values, stderr=True), w,
      input_core_dims=[["step"]], output_core_dims=[[], []], vectorize=True)
  return out


def law_fits(ds: xr.Dataset, sgd: bool = False, decay: float = 1.0) -> dict[tuple[str, int], PowerLaw]:
  r"""The equilibrium norm's power law :math:`\|W\| \propto (\eta/\lambda)^{k}(\eta\lambda)^{k_2}`.

  Fitted per architecture and layer over the runs with ``decay`` (each seed
  a point; ``decay=0``, the control, is fitted against the :math:`\eta/\lambda`
  and :math:`\eta\lambda` of its twin with weight decay); ``exponents`` is
  ``(k, k2)`` (``k2`` NaN with one value of :math:`\eta\lambda`). The grid
  is a product in :math:`\log(\eta/\lambda) \times \log(\eta\lambda)`, so
  ``k`` is also the plain log-log slope in :math:`\eta/\lambda`, and ``k2``
  measures how far the norm depends on anything but :math:`\eta/\lambda`.
  Keys ``(arch, layer)`` (arch ``'mlp'`` for SGD); the readout (the last
  layer) is fitted too, as the contrast.
  """
  _, p_ax, r_ax = _axes(sgd)
  eq = equilibrium(ds, sgd).sel(decay=decay)
  out = {}
  for arch in (["mlp"] if sgd else [str(a) for a in ds.arch.values]):
    e = eq if sgd else eq.sel(arch=arch)
    for layer in ds.layer.values:
      n = e.norm.sel(layer=layer)
      r, p = e[r_ax].broadcast_like(n).values, e[p_ax].broadcast_like(n).values
      if e.sizes[p_ax] > 1:
        out[(arch, int(layer))] = power_law(n.values, r, p)
      else:
        f = power_law(n.values, r)
        out[(arch, int(layer))] = f._replace(exponents=(f.exponents[0], np.nan))
  return out


def rank_fits(ds: xr.Dataset, kind: str, decay: float = 1.0,
              collapse: float = 2.0) -> dict[tuple[str, int], PowerLaw]:
  r"""How a rank depends on the learning rate and weight decay: :math:`r \propto \eta^a\lambda^b`.

  Fitted per architecture and normalized layer over the seeds and grid cells
  of the runs with ``decay`` (:math:`\eta = \sqrt{pr}` and
  :math:`\lambda = \sqrt{p/r}` from ``lr_times_wd`` :math:`p` and
  ``lr_over_wd`` :math:`r`; ``decay=0``, the control, against the
  :math:`\lambda` of its twin, which it never applied). ``exponents`` is
  ``(a, b)``: :math:`b = d\log r / d\log\lambda` at fixed :math:`\eta`,
  with its standard error in ``stderr``. Keys ``(arch, layer)``, and
  ``(arch, 0)`` for the geometric mean of the rank over the normalized
  layers (one fit, so its standard error holds the layers' correlation).
  Runs that collapsed onto one direction (:func:`collapsed`) are left out
  (``n`` counts the others; from layer 0, a run collapsed in any layer):
  their rank is set by Adam's collapse at the largest learning rates, which
  more weight decay undoes. NaN exponents when the grid cannot separate
  :math:`\lambda` from :math:`\eta` (one value of either axis).
  """
  eq = equilibrium(ds).sel(decay=decay)
  lr = np.sqrt(eq.lr_times_wd * eq.lr_over_wd)
  wd = np.sqrt(eq.lr_times_wd / eq.lr_over_wd)
  gone = collapsed(ds, decay, collapse).sel(layer=_layers(ds))
  out = {}
  for arch in ds.arch.values:
    r = eq[kind].sel(arch=arch, layer=_layers(ds)).where(~gone.sel(arch=arch))
    # Layer 0: the geometric mean over the normalized layers, of the runs collapsed in none.
    for layer, y in [(0, np.exp(np.log(r).mean("layer", skipna=False)))] + [
        (int(l), r.sel(layer=l)) for l in _layers(ds)]:
      out[(str(arch), layer)] = power_law(y.values, lr.broadcast_like(y).values,
                                          wd.broadcast_like(y).values)
  return out


def rank_ratios(ds: xr.Dataset, kind: str) -> xr.DataArray:
  """Rank with weight decay over rank without it (same lr), per arch, seed, grid cell and layer."""
  eq = equilibrium(ds)[kind]
  return eq.sel(decay=1.0, drop=True) / eq.sel(decay=0.0, drop=True)


def collapsed(ds: xr.Dataset, decay: float, collapse: float = 2.0) -> xr.DataArray:
  """Whether the runs with ``decay`` (1: with weight decay, 0: without) collapsed onto one direction.

  Per architecture, seed, grid cell and layer: the equilibrium stable rank
  is below ``collapse`` (2: the top singular direction holds over half of
  the squared Frobenius norm).
  """
  return equilibrium(ds).stable_rank.sel(decay=decay, drop=True) < collapse


def twin_collapsed(ds: xr.Dataset, collapse: float = 2.0) -> xr.DataArray:
  """Whether the twin without weight decay collapsed onto one direction (:func:`collapsed`).

  At the larger learning rates Adam without weight decay does this to the
  later layers: its update of a rank-one gradient is rank one (a sign
  pattern ``sign(u) sign(v)^T``), and nothing decays what those updates
  pile up. The run with weight decay mostly keeps a stable rank of 3-5
  there (not always: at width 128 and above some collapse too), and then
  the twin's rank is the lower one: comparing them measures the collapse
  rather than what weight decay does to the spectrum.
  """
  return collapsed(ds, 0.0, collapse)


def _layers(ds: xr.Dataset) -> np.ndarray:
  """The normalized (scale-invariant) layers: all but the readout."""
  return ds.layer.values[:-1]


def _fmt_fit(f: PowerLaw) -> str:
  return f"k {f.exponents[0]:.3f} (k2 {f.exponents[1]:+.3f}), R^2 {f.r2:.3f}"


def summary(ds: xr.Dataset) -> list[tuple[str, str]]:
  """Rows ``(label, value)`` per architecture: norm laws, ranks' slopes and ratios, training."""
  rows = [("dataset", f"{ds.attrs.get('dataset')}, {len(_layers(ds))} normalized layers + readout")]
  eq = equilibrium(ds)
  for arch in ds.arch.values:
    e = eq.sel(arch=arch)
    fits = law_fits(ds)
    for layer in ds.layer.values:
      tag = "readout" if layer == ds.layer.values[-1] else f"layer {layer}"
      rows.append((f"{arch} AdamW {tag}", "norm ~ (lr/wd)^k (lr*wd)^k2: "
                   + _fmt_fit(fits[(str(arch), int(layer))])))
    for kind in RANKS:
      slopes = rank_fits(ds, kind)
      rows.append((f"{arch} {kind} d log r / d log wd", ", ".join(
          f"{'mean' if l == 0 else f'layer {l}'}: {f.exponents[1]:+.3f} +- {f.stderr[1]:.3f}"
          for (a, l), f in slopes.items() if a == arch)))
      q = rank_ratios(ds, kind).sel(arch=arch).mean("seed")
      rows.append((f"{arch} {kind} with/without wd", ", ".join(
          f"layer {l}: {float(q.sel(layer=l).min()):.2f}-{float(q.sel(layer=l).max()):.2f}"
          for l in _layers(ds))))
    rows.append((f"{arch} final train loss", f"with wd {float(e.train_loss.sel(decay=1.0).min()):.3f}"
                 f"-{float(e.train_loss.sel(decay=1.0).max()):.3f}, without "
                 f"{float(e.train_loss.sel(decay=0.0).min()):.3f}-"
                 f"{float(e.train_loss.sel(decay=0.0).max()):.3f}"))
  if has_sgd(ds):
    for (arch, layer), f in law_fits(ds, sgd=True).items():
      tag = "readout" if layer == ds.layer.values[-1] else f"layer {layer}"
      rows.append((f"mlp SGD {tag}", "norm ~ (lr/wd)^k (lr*wd)^k2: " + _fmt_fit(f)))
  rows += timing_rows(ds)
  return rows


def _equilibrium_check(ds: xr.Dataset, max_growth: float, z: float) -> Check:
  with_wd = 1.0 in ds.decay.values
  eq = equilibrium(ds).sel(layer=_layers(ds))
  if with_wd:
    eq = eq.sel(decay=[1.0])
  g = np.abs(eq.growth)
  # Over only beyond the noise of the slope: at the largest learning rates the norm fluctuates
  # 10-20% from one record to the next, and a slope fitted through it is uncertain.
  over = g - z * eq.growth_se.fillna(0) > max_growth
  parts = []
  for arch in ds.arch.values:
    ga, oa = g.sel(arch=arch), over.sel(arch=arch)
    i = np.unravel_index(int(np.nanargmax(ga.values)), ga.shape)
    parts.append(f"{arch}: max |growth| {float(ga.values[i]):.3f} +- "
                 f"{float(eq.growth_se.sel(arch=arch).values[i]):.3f}, {int(oa.sum())} of "
                 f"{ga.size} layer-runs over beyond the noise")
  div = bool(ds.diverged.isel(step=-1).sel(decay=eq.decay).any())
  name = (f"{'with weight decay' if with_wd else 'without weight decay (control)'} the norm of "
          f"every normalized layer reaches an equilibrium (|d log||W|| / d log t| <= "
          f"{max_growth:g} over the second half, beyond {z:g} s.e. of the slope in none)")
  return Check(name, not bool(over.any()) and not div,
               "; ".join(parts) + ("; a run diverged" if div else ""))


def _law_holds(f: PowerLaw, k0: float, k_tol: float, min_r2: float, max_k2: float) -> bool:
  """The law at one layer: exponent ``k0 +- k_tol``, ``R^2 >= min_r2``, ``|k2| <= max_k2`` (if fitted)."""
  k, k2 = f.exponents
  return bool(np.isfinite(k) and abs(k - k0) <= k_tol and f.r2 >= min_r2
              and (not np.isfinite(k2) or abs(k2) <= max_k2))


def _rank_check(ds: xr.Dataset, decay: float, z: float, collapse: float, compare: bool) -> Check:
  """Check 4 of :func:`signature`, on the runs with ``decay`` (``compare``: the control's too)."""
  who = "with weight decay" if decay else "without weight decay (control), against the twins' wd"
  name = (f"{who}, at fixed lr the effective rank falls with wd in each network: d log rank / "
          f"d log wd < 0 by over {z:g} s.e. for its geometric mean over the normalized layers, "
          f"and > {z:g} s.e. in none of them (fitted over seeds and cells; runs collapsed onto one "
          f"direction, stable rank < {collapse:g}, left out while at most half of a layer's)")
  if ds.sizes["lr_times_wd"] < 2 or ds.sizes["lr_over_wd"] < 2:
    return skip(name, "one value of lr*wd or of lr/wd: wd cannot be varied at fixed lr")
  fits = {kind: rank_fits(ds, kind, decay, collapse) for kind in RANKS}
  size = ds.sizes["seed"] * ds.sizes["lr_times_wd"] * ds.sizes["lr_over_wd"]
  ok, unfit = True, False
  for (arch, layer), f in fits["effective_rank"].items():
    b, se = f.exponents[1], f.stderr[1]
    if layer and 2 * (size - f.n) > size:
      ok = False  # most of the layer's runs collapsed: collapse is what happens to it
    elif f.n < 6:  # 3 parameters: at least 3 residual degrees of freedom for the standard error
      unfit |= layer == 0
    elif layer == 0:
      ok &= b + z * se < 0
    else:
      ok &= not b - z * se > 0

  def slopes(fs: dict, arch: str) -> str:
    return ", ".join(f"{'mean' if l == 0 else f'L{l}'} {f.exponents[1]:+.3f} +- {f.stderr[1]:.3f}"
                     + (f" ({size - f.n} of {size} collapsed, left out)" if f.n < size else "")
                     for (a, l), f in fs.items() if a == arch)

  parts = [f"{arch} effective: {slopes(fits['effective_rank'], arch)}; stable (not judged): "
           f"{slopes(fits['stable_rank'], arch)}" for arch in ds.arch.values]
  if compare:
    ctl = rank_fits(ds, "effective_rank", 0.0, collapse)
    parts.append("control (no wd) effective, mean: " + ", ".join(
        f"{a} {f.exponents[1]:+.3f} +- {f.stderr[1]:.3f}" for (a, l), f in ctl.items() if l == 0))
  if ok and unfit:
    return skip(name, "too few runs left to fit the slope: " + "; ".join(parts))
  return Check(name, ok, "; ".join(parts))


def signature(ds: xr.Dataset, k_tol: float = 0.1, min_r2: float = 0.9, max_growth: float = 0.25,
              max_k2: float = 0.2, rank_z: float = 2.0, collapse: float = 2.0,
              sgd_k_tol: float = 0.1, sgd_min_r2: float = 0.8,
              growth_z: float = 2.0) -> list[Check]:
  r"""The signature checks with their measured numbers.

  1. With weight decay every normalized layer's norm is stationary over the
     second half of training, :math:`|d\log\|W\|/d\log t| \le` ``max_growth``
     (an equilibrium; no run diverged). The bound, 1/4, is halfway between a
     stationary norm (0) and one growing freely like :math:`\sqrt t` (1/2,
     a scale-invariant weight without decay while its gradient does not
     vanish): the check tells which of the two a run is closer to. A
     balanced norm still drifts a little as training goes on (the update
     statistics that set it change as the loss falls): measured at the
     defaults, -0.227 in the slowest layer-run, the smallest lr*wd and lr/wd,
     whose norm fell from 0.87 to 0.76 over the second half after falling
     from 8.1 in the first. A run counts as over only where its slope lies
     beyond the bound by more than ``growth_z`` standard errors (from the
     norm's fluctuations about the fitted line): at the largest learning
     rates the norm fluctuates 10-20% from one record to the next (measured
     at width 128 x depth 4: the residual network's last layer at lr*wd 0.03
     and lr/wd 0.05 fell with a slope of -0.33 +- 0.12, every other
     layer-run within 0.19 of 0).
  2. AdamW: the equilibrium norm of every normalized layer of each network
     follows :math:`(\eta/\lambda)^k` with :math:`|k - 1/2| \le` ``k_tol``
     and :math:`R^2 \ge` ``min_r2`` (at fixed :math:`\eta\lambda`).
  3. ... depending on :math:`\eta/\lambda` rather than on
     :math:`\eta\lambda`: :math:`|k_2| \le` ``max_k2``.
  4. Among the runs with weight decay, at a fixed learning rate, the
     effective rank falls with weight decay in each network: the slope
     :math:`b = d\log r/d\log\lambda` (:func:`rank_fits`, over seeds and
     grid cells) of the geometric mean of the normalized layers' effective
     ranks is below 0 by more than ``rank_z`` standard errors, and no
     layer's is above 0 by as much. Taken at fixed :math:`\eta` because the
     control's ranks change with its learning rate alone: at fixed
     :math:`\eta` the control, which never applied :math:`\lambda`, has
     :math:`b \approx 0` (reported on the line). The stable ranks are
     reported, not judged: set by the few largest singular values, they fall
     in the first layer but stay near 5-7 in later ones, and rise with
     :math:`\lambda` in layers that Adam nearly collapses. Runs collapsed
     onto one direction (stable rank below ``collapse``,
     :func:`collapsed`) are left out while they are at most half of a
     layer's runs; beyond that the check fails (there collapse is what
     happens to the layer). Skipped with one value of either grid axis
     (:math:`\lambda` cannot vary at fixed :math:`\eta`) or fewer than 6
     runs left to fit.
  5. The effect on the ranks differs between the plain and the residual
     network, in the layers that are residual blocks (:func:`arch_difference`).
  6. SGD (plain MLP): :math:`(\eta/\lambda)^k` with
     :math:`|k - 1/4| \le` ``sgd_k_tol``, :math:`R^2 \ge` ``sgd_min_r2``.
  7. Control: the twins without weight decay do not follow the law of 2-3
     in any normalized layer (their norm depends on the learning rate alone,
     so as much on :math:`\eta\lambda` as on :math:`\eta/\lambda`).

  Given the control alone (``ds.sel(decay=[0.0])``), 1-4 are judged on its
  runs (against their twins' :math:`\eta/\lambda`, :math:`\eta\lambda`). Comparisons
  the grid cannot make (one value of an axis, one network, one seed for 5,
  no SGD sweep) are skipped.
  """
  control_only = 1.0 not in ds.decay.values
  both = {0.0, 1.0} <= set(ds.decay.values.tolist())
  dec = 0.0 if control_only else 1.0
  checks = [_equilibrium_check(ds, max_growth, growth_z)]
  who = "without weight decay (control)" if control_only else "AdamW"
  name2 = (f"{who}: the equilibrium norm of every normalized layer scales as (lr/wd)^k, "
           f"k = 1/2 +- {k_tol:g}, R^2 >= {min_r2:g}")
  name3 = f"{who}: the norm depends on lr/wd, not on lr*wd (|k2| <= {max_k2:g})"
  if ds.sizes["lr_over_wd"] < 2:
    checks += [skip(name2, "one value of lr/wd"), skip(name3, "one value of lr/wd")]
  else:
    mine = {k: f for k, f in law_fits(ds, decay=dec).items() if k[1] in _layers(ds)}
    checks.append(Check(name2, all(_law_holds(f, 0.5, k_tol, min_r2, np.inf)
                                   for f in mine.values()),
                        "; ".join(f"{a} layer {l}: k {f.exponents[0]:.3f}, R^2 {f.r2:.3f}"
                                  for (a, l), f in mine.items())))
    if ds.sizes["lr_times_wd"] < 2:
      checks.append(skip(name3, "one value of lr*wd"))
    else:
      checks.append(Check(name3, all(abs(f.exponents[1]) <= max_k2 for f in mine.values()),
                          "; ".join(f"{a} layer {l}: k2 {f.exponents[1]:+.3f} (k "
                                    f"{f.exponents[0]:.3f})" for (a, l), f in mine.items())))
  checks.append(_rank_check(ds, dec, rank_z, collapse, compare=both))
  checks.append(arch_difference(ds, collapse=collapse))
  name6 = (f"SGD: the equilibrium norm scales as (lr/wd)^k, k = 1/4 +- {sgd_k_tol:g}, "
           f"R^2 >= {sgd_min_r2:g}")
  fits = ({k: f for k, f in law_fits(ds, sgd=True).items() if k[1] in _layers(ds)}
          if has_sgd(ds) and not control_only and ds.sizes["sgd_lr_over_wd"] >= 2 else None)
  if fits is None:
    checks.append(skip(name6, "no SGD sweep with weight decay and two values of lr/wd"))
  elif any(not np.isfinite(f.exponents[0]) for f in fits.values()):
    checks.append(skip(name6, "too few SGD runs to fit a line with its R^2 (needs 3)"))
  else:
    checks.append(Check(name6, all(_law_holds(f, 0.25, sgd_k_tol, sgd_min_r2, np.inf)
                                   for f in fits.values()),
                        "; ".join(f"layer {l}: k {f.exponents[0]:.3f}, R^2 {f.r2:.3f}"
                                  for (_, l), f in fits.items())))
  name7 = ("control, no weight decay: the norm does not follow the law (k, k2, R^2 as above, "
           "against the twins' lr/wd and lr*wd) in any normalized layer")
  if not both or ds.sizes["lr_over_wd"] < 2:
    checks.append(skip(name7, "needs runs with and without weight decay, two values of lr/wd"))
  else:
    fits = {k: f for k, f in law_fits(ds, decay=0.0).items() if k[1] in _layers(ds)}
    checks.append(Check(name7, not any(_law_holds(f, 0.5, k_tol, min_r2, max_k2)
                                       for f in fits.values()),
                        "; ".join(f"{a} layer {l}: k {f.exponents[0]:.3f}, k2 "
                                  f"{f.exponents[1]:+.3f}, R^2 {f.r2:.3f}"
                                  for (a, l), f in fits.items())))
  return checks


def rank_effect(ds: xr.Dataset, kind: str, collapse: float | None = None) -> xr.DataArray:
  r"""How much weight decay lowers a rank: :math:`\log(\text{with}/\text{without})`, grid-mean.

  Per architecture, seed and normalized layer, the mean over the grid cells
  of the log ratio of :func:`rank_ratios` (negative: weight decay lowers it);
  with ``collapse``, over the cells where neither twin collapsed
  (:func:`collapsed`) only.
  """
  q = np.log(rank_ratios(ds, kind).sel(layer=_layers(ds)))
  if collapse is not None:
    gone = collapsed(ds, 0.0, collapse) | collapsed(ds, 1.0, collapse)
    q = q.where(~gone.sel(layer=_layers(ds)))
  return q.mean([d for d in q.dims if d not in ("arch", "seed", "layer")])


def arch_difference(ds: xr.Dataset, min_diff: float = 0.05, z: float = 2.0,
                    collapse: float = 2.0) -> Check:
  r"""Whether weight decay lowers the ranks by different amounts in the plain and residual network.

  For each rank, the effect :math:`e` (:func:`rank_effect`) per seed,
  averaged over the normalized layers after the first: those are the
  residual blocks of the residual network, while its first layer is the
  same layer as the plain network's (measured, their effects there differ
  by -0.09 to +0.13 in log stable-rank ratio and -0.04 to +0.04 in
  effective, with either sign). The networks differ when their seed means differ by
  more than ``z`` standard errors (from the seeds' spread) and by at least
  ``min_diff`` (5% in the ratio), for either rank. Measured, weight decay
  lowers the blocks' effective rank less than the plain layers' (log ratio
  +0.085 to +0.333). Part or all of that is Adam's collapse: without weight
  decay it collapses the residual network's last block at the largest
  learning rates (more often than the plain network's last layer), and weight
  decay prevents it. The line also gives the difference over the cells where
  neither twin collapsed (``collapse``, :func:`collapsed`): -0.003 at the
  defaults (all of it collapse) and +0.011 to +0.134 elsewhere. Skipped
  with one network, one seed, one normalized layer, or no runs with and
  without weight decay.
  """
  name = (f"the effect of weight decay on the ranks differs between the plain and the residual "
          f"network (|difference| > {z:g} s.e. and >= {min_diff:g} in log ratio)")
  if "arch" not in ds.dims or set(ds.arch.values.tolist()) != set(ARCHS):
    return skip(name, "needs both networks")
  if ds.sizes["seed"] < 2:
    return skip(name, "one seed: no spread to compare the difference with")
  if not {0.0, 1.0} <= set(ds.decay.values.tolist()):
    return skip(name, "needs runs with and without weight decay")
  blocks = _layers(ds)[1:]  # the layers that are residual blocks in the residual network
  if not blocks.size:
    return skip(name, "one normalized layer: no residual block")
  ok, parts = False, []
  n_gone = int((collapsed(ds, 0.0, collapse) | collapsed(ds, 1.0, collapse)).sel(
      layer=_layers(ds)).sum())
  for kind in RANKS:
    e = rank_effect(ds, kind)
    per_seed = e.sel(layer=blocks).mean("layer")
    m, r = per_seed.sel(arch="mlp"), per_seed.sel(arch="resmlp")
    d = float(r.mean() - m.mean())
    se = float(np.sqrt(m.var(ddof=1) / m.size + r.var(ddof=1) / r.size))
    ok |= abs(d) > z * se and abs(d) >= min_diff
    layers = ", ".join(f"L{l} {float(np.exp(e.sel(arch='mlp', layer=l).mean())):.2f}/"
                       f"{float(np.exp(e.sel(arch='resmlp', layer=l).mean())):.2f}"
                       for l in _layers(ds))
    kept = rank_effect(ds, kind, collapse).sel(layer=blocks).mean("layer")
    dk = float(kept.sel(arch="resmlp").mean() - kept.sel(arch="mlp").mean())
    parts.append(f"{kind}: plain {float(np.exp(m.mean())):.3f}x, residual "
                 f"{float(np.exp(r.mean())):.3f}x, difference {d:+.3f} +- {se:.3f} "
                 f"(per layer plain/residual: {layers}"
                 + (f"; {dk:+.3f} over the cells where neither twin collapsed" if n_gone else "")
                 + ")")
  return Check(name, ok, "; ".join(parts))


def figures(ds: xr.Dataset, out_dir: str | os.PathLike) -> list[str]:
  """The norm laws (log-log, per network and SGD), norms along training, ranks with and without decay."""
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  panels = [(str(a), False) for a in ds.arch.values] + ([("mlp", True)] if has_sgd(ds) else [])
  fig = plots.agg_figure((4.2 * len(panels), 3.8))
  axes = np.atleast_1d(fig.subplots(1, len(panels)))
  for ax, (arch, sgd) in zip(axes, panels):
    _, p_ax, r_ax = _axes(sgd)
    eq = equilibrium(ds, sgd).sel(decay=1.0)
    if not sgd:
      eq = eq.sel(arch=arch)
    n = eq.norm.mean("seed")
    r = n[r_ax].values
    for j, layer in enumerate(_layers(ds)):
      for i, p in enumerate(n[p_ax].values):
        ax.loglog(r, n.sel({p_ax: p, "layer": layer}).values, "o-" if i == 0 else "s--",
                  color=f"C{j}", ms=3, lw=0.8,
                  label=f"layer {layer}" if i == 0 else None)
    k = 0.25 if sgd else 0.5
    ref = n.sel(layer=_layers(ds)[0]).mean(p_ax).values
    ax.loglog(r, ref[0] * (r / r[0]) ** k, "k:", lw=1.0, label=f"slope {k:g}")
    ax.set_xlabel("lr / wd")
    ax.set_title(f"{arch} {'SGD' if sgd else 'AdamW'}: equilibrium ||W||_F", fontsize="medium")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="x-small")
  path = os.path.join(out_dir, "norm_law.png")
  fig.savefig(path, dpi=130)
  paths.append(path)

  fig = plots.agg_figure((4.2 * ds.sizes["arch"], 3.6))
  axes = np.atleast_1d(fig.subplots(1, ds.sizes["arch"]))
  layer = _layers(ds)[-1]
  for ax, arch in zip(axes, ds.arch.values):
    w = ds.weight_norm.sel(arch=arch, layer=layer).mean("seed")
    for i, p in enumerate(w.lr_times_wd.values):
      for r in w.lr_over_wd.values:
        for dec, ls in ((1.0, "-"), (0.0, ":")):
          ax.plot(w.step, w.sel(lr_times_wd=p, lr_over_wd=r, decay=dec), ls, color=f"C{i}",
                  lw=0.8, label=f"lr*wd {p:g}" if (r == w.lr_over_wd.values[0] and dec) else None)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(f"{arch}: ||W|| of layer {layer} (dotted: no wd)", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
  path = os.path.join(out_dir, "norm_vs_step.png")
  fig.savefig(path, dpi=130)
  paths.append(path)

  fig = plots.agg_figure((8.5, 3.4 * ds.sizes["arch"]))
  axes = np.asarray(fig.subplots(ds.sizes["arch"], 2)).reshape(ds.sizes["arch"], 2)
  eq = equilibrium(ds)
  for row, arch in zip(axes, ds.arch.values):
    for ax, kind in zip(row, RANKS):
      e = eq[kind].sel(arch=arch).mean(["seed", "lr_over_wd"])
      for j, l in enumerate(_layers(ds)):
        for dec, ls in ((1.0, "o-"), (0.0, "x:")):
          ax.semilogx(e.lr_times_wd, e.sel(layer=l, decay=dec), ls, color=f"C{j}", ms=4,
                      label=f"layer {l}" + ("" if dec else " (no wd)"))
      ax.set_xlabel("lr * wd (no wd: same lr)")
      ax.set_title(f"{arch}: {kind.replace('_', ' ')}", fontsize="medium")
      ax.grid(alpha=0.3)
  axes[0, 0].legend(fontsize="x-small", ncol=2)
  path = os.path.join(out_dir, "ranks.png")
  fig.savefig(path, dpi=130)
  paths.append(path)
  return paths
