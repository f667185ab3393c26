"""Kernel limit: finite networks against their infinite-width NTK, lazy vs rich, and the muP coordinate check.

Three comparisons, two sweeps over parametrization x width x seed, each with
its own checkpoint file: the kernel comparison in NTK and mean-field
parametrization, and the coordinate check in SP and muP. The parametrizations
of a sweep share its compiled program, which pads every width (exactly) to the
widest, since at these sizes compiling a program per width costs more than the
padded FLOPs (the defaults, when each parametrization was a sweep of its own:
18 s compile + 32 s run, against 73 s + 10 s with a program per width, on a
2-core CPU).

1. NTK parametrization, full-batch gradient descent on the squared error: the
   networks approach the closed-form NTK prediction as width grows, their
   deviation falling like ``width^(-1/2)``, and their kernel barely moves
   (Jacot et al. 2018; Lee et al. 2019).
2. The same networks in mean-field parametrization (Mei et al. 2018;
   Bordelon & Pehlevan 2022): the kernel keeps moving by O(1) at every width
   and the networks leave the kernel (lazy) regime.
3. The muP coordinate check (Yang et al. 2021, "Tensor Programs V"): the
   average size of every layer's activations after a few SGD steps, against
   width, stays flat under muP and grows under standard parametrization.

Defaults (5 widths x 3 seeds, 150 steps, on a 64-example teacher-student
regression) take a few minutes on a 2-core CPU.
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
from jaxtheory.experiments.check import Check, positive_ints, seed_list, timing_rows
from jaxtheory.sweep.compose import part_path
from jaxtheory.probes.separation import layer_features
from jaxtheory import limits
from jaxtheory.errors import ConfigError
from jaxtheory.metric import Metric


@dataclasses.dataclass(frozen=True)
class Config:
  """The kernel-limit experiment's settings (each overridable by ``--set key=value``).

  Attributes:
    widths: hidden widths (at least 2; 4 or more for the exponent fits).
    seeds: number of seeds.
    depth: hidden layers of the MLP.
    activation: its nonlinearity, a name of :data:`jaxtheory.nn.ACTIVATIONS`
      (``relu``, ``tanh``, ``erf``, ``gelu``, ...); each has an analytic
      infinite-width kernel.
    n_train: training examples of the teacher-student regression.
    n_test: test examples.
    input_dim: input dimension.
    lr: gradient-descent learning rate (kernel sweeps).
    steps: gradient-descent steps (kernel sweeps).
    rich: the parametrization compared with NTK: ``'mf'`` or ``'mup'``.
    coord_steps: SGD steps of the coordinate check.
    coord_lr: its learning rate.
  """
  widths: tuple[int, ...] = (64, 128, 256, 512, 1024)
  seeds: int = 3
  depth: int = 2
  activation: str = "relu"
  n_train: int = 64
  n_test: int = 64
  input_dim: int = 8
  lr: float = 0.5
  steps: int = 150
  rich: str = "mf"
  coord_steps: int = 4
  coord_lr: float = 0.05


def _check(cfg: Config):
  if len(cfg.widths) < 2:
    raise ConfigError("widths needs at least two widths, e.g. widths=64,256")
  if cfg.rich not in ("mf", "mup"):
    raise ConfigError(f"rich must be 'mf' or 'mup', got {cfg.rich!r}")
  positive_ints(cfg, "seeds")
  nn.activation(cfg.activation)


def coordinate_size(hidden_width: int) -> Callable:
  """A recorded metric: mean absolute activation per coordinate, per layer (``dims=("layer",)``).

  Padded coordinates are zero, so the mean is taken over the active ones:
  an activation with ``hidden_width`` (capacity) features has ``ctx.width``
  active ones.
  """
  def fn(params, apply, d, ctx, model):
    del apply
    feats = layer_features(model, params, d["x_train"], ctx, where="all")
    sizes = []
    for h in feats:
      h = h.reshape(h.shape[0], -1)
      active = h.shape[1] if (ctx.width is None or h.shape[1] != hidden_width) else ctx.width
      sizes.append(jnp.sum(jnp.abs(h)) / (h.shape[0] * active))
    return jnp.stack(sizes)
  return Metric(fn, ("layer",), inputs=("ctx", "model"))


def run(cfg: Config, progress=None, **engine) -> xr.Dataset:
  """Runs the two sweeps; returns one dataset (see the module doc).

  The kernel comparison has dims ``(parametrization, seed, width, step)``; the
  coordinate check ``coord_size`` has ``(coord_parametrization, seed, width,
  coord_step, layer)``.
  """
  _check(cfg)
  ds = data.teacher_student(n_train=cfg.n_train, n_test=cfg.n_test, input_dim=cfg.input_dim,
                            seed=0)
  act = nn.activation(cfg.activation)
  b_std = 0.1
  model = lambda w: nn.mlp(ds.input_shape, w, cfg.depth, ds.out_dim, act, b_std=b_std)
  grid = dict(seed=seed_list(cfg.seeds), width=list(cfg.widths))
  # NTK and mean-field parametrization share the kernel comparison's program (a
  # parametrization axis; each run is compared with its own limit).
  kern = _drop_probe(limits.compare(sweep.Sweep(
      model, ds, dict(parametrization=["ntk", cfg.rich], **grid), "sgd", dict(lr=cfg.lr),
      steps=cfg.steps, record="log:15", loss="mse", max_waste=float("inf"), name="kernel-limit"),
      kernel_key=("nn.mlp", ds.input_shape, cfg.depth, ds.out_dim, cfg.activation, b_std),
      progress=progress, **engine))
  # SP and muP share the coordinate check's program (a parametrization axis).
  opts = dict(engine)
  if opts.get("checkpoint") is not None:
    opts["checkpoint"] = part_path(opts["checkpoint"], "coord", "check")
  coords = sweep.run(sweep.Sweep(
      model, ds, dict(parametrization=["sp", "mup"], **grid), "sgd", dict(lr=cfg.coord_lr),
      steps=cfg.coord_steps, record="every:1", loss="mse",
      metrics={"coord_size": coordinate_size(max(cfg.widths))}, max_waste=float("inf"),
      name="coord-check"), progress=progress, **opts)
  cs = coords.coord_size.rename(step="coord_step", parametrization="coord_parametrization")
  out = kern.assign(coord_size=cs)
  for key in ("compile_seconds", "run_seconds"):
    out.attrs[key] = kern.attrs[key] + coords.attrs[key]
  out.attrs["experiment"] = "kernel-limit"
  out.attrs["config"] = json.dumps(dataclasses.asdict(cfg))
  return out


def _drop_probe(x: xr.Dataset) -> xr.Dataset:
  # The per-run NTK matrices and outputs are large and only feed the summaries.
  return x.drop_vars(["ntk_probe", "f_train", "f_test"])


def _exponents(ds: xr.Dataset):
  out = {}
  ntk = ds.sel(parametrization="ntk")
  out["dev_ntk"] = limits.width_exponent(ntk.dev_ntk)
  out["movement_ntk"] = limits.width_exponent(ntk.kernel_movement)
  rich = ds.isel(parametrization=1)
  out["movement_rich"] = limits.width_exponent(rich.kernel_movement)
  last = ds.coord_size.isel(coord_step=-1).mean("seed")
  w = np.log(ds.width.values.astype(float))
  for p in ("sp", "mup"):
    v = np.log(last.sel(coord_parametrization=p).values)  # (width, layer)
    out[f"coord_{p}"] = [float(np.polyfit(w, v[:, l], 1)[0]) for l in range(v.shape[1])]
  return out


def signature(ds: xr.Dataset) -> list[Check]:
  """Checks: deviation ~ width^-1/2 under NTK; kernel moves O(1) in the rich regime; muP coords flat."""
  e = _exponents(ds)
  rich = ds.parametrization.values[1]
  mv_rich = float(ds.kernel_movement.isel(parametrization=1, step=-1).mean("seed").min())
  mv_ntk = float(ds.kernel_movement.sel(parametrization="ntk").isel(step=-1, width=-1)
                 .mean("seed"))
  sp_max, mup_max = max(e["coord_sp"]), max(abs(v) for v in e["coord_mup"])
  return [
      Check("NTK: network-to-kernel deviation falls like width^-1/2",
            abs(e["dev_ntk"] + 0.5) <= 0.2, f"fitted exponent {e['dev_ntk']:.2f}"),
      Check("NTK: kernel movement falls with width",
            e["movement_ntk"] < -0.3, f"exponent {e['movement_ntk']:.2f}, "
            f"movement {mv_ntk:.3f} at the widest"),
      Check(f"{rich}: the kernel keeps moving at every width",
            abs(e["movement_rich"]) < 0.15 and mv_rich > 3 * mv_ntk,
            f"exponent {e['movement_rich']:.2f}, movement >= {mv_rich:.3f}"),
      Check("muP coordinate check: activations flat in width under muP, growing under SP",
            mup_max < 0.1 and sp_max > 0.3,
            f"max |exponent| muP {mup_max:.2f}, max exponent SP {sp_max:.2f}"),
  ]


def summary(ds: xr.Dataset) -> list[tuple[str, str]]:
  rows = []
  last = ds.isel(step=-1).mean("seed")
  for p in ds.parametrization.values:
    for w in ds.width.values:
      pt = last.sel(parametrization=p, width=w)
      dev = f"dev(lin) {float(pt.dev_linear):.3g}"
      if "dev_ntk" in pt and np.isfinite(float(pt.dev_ntk)):
        dev += f"  dev(NTK) {float(pt.dev_ntk):.3g}"
      rows.append((f"{p} width={w}", f"loss {float(pt.train_loss):.4f} / "
                   f"{float(pt.test_loss):.4f}   {dev}   kernel moved "
                   f"{float(pt.kernel_movement):.3g}"))
  rows += timing_rows(ds)
  return rows


def figures(ds: xr.Dataset, out_dir) -> list[str]:
  """Deviation and kernel movement vs width (log-log), and the coordinate check."""
  os.makedirs(out_dir, exist_ok=True)
  written = []
  last = ds.isel(step=-1)
  fig, axes = plots.new_figure(2, figsize=(10, 4))
  for p in ds.parametrization.values:
    for ax, var, label in zip(axes, ("dev_linear", "kernel_movement"),
                              (f"{p} vs its kernel at init", str(p))):
      v = last[var].sel(parametrization=p)
      ax.errorbar(ds.width, v.mean("seed"), v.std("seed"), marker="o", label=label)
  w = ds.width.values.astype(float)
  if "dev_ntk" in ds:
    v = last.dev_ntk.sel(parametrization="ntk")
    axes[0].errorbar(ds.width, v.mean("seed"), v.std("seed"), marker="s", ls="--",
                     label="ntk vs infinite-width NTK")
    ref = float(v.mean("seed")[0]) * (w / w[0]) ** -0.5
    axes[0].plot(w, ref, "k:", label="width^-1/2")
  axes[0].set_title("test-output deviation from the kernel prediction")
  axes[1].set_title("relative kernel movement ||Θ_t - Θ_0|| / ||Θ_0||")
  for ax in axes:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width")
    ax.legend()
  written.append(plots.save_figure(fig, os.path.join(out_dir, "kernel_limit_vs_width.png")))
  cs = ds.coord_size.isel(coord_step=-1).mean("seed")
  fig, axes = plots.new_figure(2, figsize=(10, 4), sharey=True)
  for ax, p in zip(axes, ("sp", "mup")):
    for l in range(cs.sizes["layer"]):
      ax.plot(ds.width, cs.sel(coord_parametrization=p).isel(layer=l), marker="o",
              label=f"layer {l}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width")
    ax.set_title(f"coordinate check ({p}), step {int(ds.coord_step[-1])}")
  axes[0].set_ylabel("mean |activation|")
  axes[1].legend(fontsize=7)
  written.append(plots.save_figure(fig, os.path.join(out_dir, "coord_check.png")))
  return written
