r"""Linear mode connectivity: MLPs from different seeds connect linearly once their units are matched.

Frankle, Dziugaite, Roy & Carbin (2020), "Linear mode connectivity and the
lottery ticket hypothesis"; Entezari, Sedghi, Saukh & Neyshabur (2022), "The
role of permutation invariance in linear mode connectivity of neural
networks"; Ainsworth, Hayase & Srinivasa (2023), "Git Re-Basin". Two networks
trained from different initializations are separated by a loss barrier on the
straight line between their weights,
:math:`B = \max_\alpha [\mathcal L((1-\alpha)\theta_A + \alpha\theta_B) -
((1-\alpha)\mathcal L(\theta_A) + \alpha\mathcal L(\theta_B))]`. Entezari et
al. conjecture that most of it is an artefact of the permutation symmetry of
hidden units: after permuting B's units to match A's, the barrier nearly
vanishes, more so the wider the network. Ainsworth et al. find the matching by
*weight matching* (a coordinate descent over linear assignment problems) and
show near-zero barriers for MNIST MLPs. Frankle et al. show that two children
spawned from one checkpoint and trained with different SGD noise (minibatch
order) stay linearly connected (for MNIST networks, from initialization on).

Setting, scaled down for a CPU: the papers train MLPs of 3 hidden layers of
512 units on all of MNIST for tens of epochs. Here ``depth`` hidden layers
(default 2) of several widths (default 16, 64, 256), on a balanced subset of
MNIST (``per_class`` images per class, default 200) average-pooled to 14x14,
minibatch SGD for ``steps`` steps; seeds x widths train as one sweep, and the
runs with seeds ``2i`` and ``2i+1`` form pair ``i``. Per pair and width, the
training loss along the line from A to B (``alphas`` points) is measured

* naively (``path='naive'``),
* after weight matching (``'weight'``: :func:`jaxtheory.probes.connectivity.weight_matching`),
* after a uniformly random permutation of B's units (``'random'``, the control:
  the same kind of transformation, carrying no alignment).

``arch='cnn'`` runs the same on a small CNN instead: ``depth`` 3x3
convolutions of ``width`` channels, each followed by ReLU and 2x2 average
pooling, a flatten and a dense readout (:func:`jaxtheory.nn.cnn` with
``downsample=2``); weight matching permutes each convolution's output
channels, carried through the pooling and the flatten into the readout's
rows.

Spawning (``'spawn'``): one network of the largest width trained to step
``spawn_step`` from seed 0, then two children per pair trained from that
checkpoint to ``steps`` with different minibatch orders
(:func:`jaxtheory.probes.connectivity.spawn_model`).

The defaults (2 pairs x widths 16, 64, 256, 2000 steps of batch 100) take
about a minute of training on a 2-core CPU (three minutes of wall time with
compilation on a loaded machine). Measured: naive training-loss barriers
1.8-3.4 / 1.2-1.3 / 0.8-0.9 nats at widths 16 / 64 / 256; after weight
matching 0.29-0.35 / 0.12-0.18 / 0.10 (3.3x lower from width 16 to 256);
after a random permutation 1.6-2.9 / 1.0-1.1 / 0.9-1.1, as naive; spawned
children (step 100) 0.000, their path convex.

>>> from jaxtheory.experiments import mode_connectivity as mc
>>> cfg = mc.Config(dataset="digits", per_class=10, pairs=1, widths=(8,), steps=5,
...                 spawn_step=2, record=2, alphas=3)
>>> mc.run(cfg).barrier.dims
('pair', 'width', 'path')
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
from jaxtheory.experiments.check import Check, positive_ints, timing_rows
from jaxtheory.probes import over_runs
from jaxtheory.probes import connectivity as C
from jaxtheory.errors import ConfigError
from jaxtheory.losses import accuracy, cross_entropy

DATASETS = ("mnist", "fashion-mnist", "digits")
METHODS = ("naive", "weight", "random", "spawn")
ARCHS = ("mlp", "cnn")


@dataclasses.dataclass(frozen=True)
class Config:
  """The mode-connectivity settings (every field overridable by ``--set key=value``).

  Attributes:
    dataset: ``'mnist'``, ``'fashion-mnist'`` or ``'digits'``.
    per_class: training examples per class (balanced), drawn at random.
    pool: average-pooling factor of the images (2: 28x28 -> 14x14; digits: 1).
    data_seed: seed of the subset.
    pairs: independent pairs of networks; runs use seeds ``0..2*pairs-1``.
    arch: ``'mlp'`` (``depth`` dense hidden layers of ``width`` units) or
      ``'cnn'`` (``depth`` 3x3 SAME convolutions of ``width`` channels, each
      followed by ReLU and 2x2 average pooling, then a flatten and a dense
      readout; the images as ``(side, side, 1)``).
    widths: hidden widths (channels of the CNN), swept in one program.
    depth: hidden layers.
    lr: SGD learning rate.
    batch_size: minibatch size (the SGD noise that spawned children differ in).
    steps: SGD steps.
    spawn_step: the step of the shared checkpoint the spawned children start from.
    record: about this many log-spaced recording points.
    alphas: points on each linear path (end points included).
  """
  dataset: str = "mnist"
  per_class: int = 200
  pool: int = 2
  data_seed: int = 0
  pairs: int = 2
  arch: str = "mlp"
  widths: tuple[int, ...] = (16, 64, 256)
  depth: int = 2
  lr: float = 0.1
  batch_size: int = 100
  steps: int = 2000
  spawn_step: int = 100
  record: int = 10
  alphas: int = 11


def _check(cfg: Config) -> None:
  if cfg.dataset not in DATASETS:
    raise ConfigError(f"unknown dataset {cfg.dataset!r}; available: {', '.join(DATASETS)}")
  if cfg.arch not in ARCHS:
    raise ConfigError(f"unknown arch {cfg.arch!r}; available: {', '.join(ARCHS)}")
  positive_ints(cfg, "per_class", "pool", "pairs", "depth", "batch_size", "steps", "record")
  if not cfg.widths or any(w < 2 for w in cfg.widths):
    raise ConfigError(f"widths must be integers >= 2, got {cfg.widths!r}")
  if not 0 <= cfg.spawn_step < cfg.steps:
    raise ConfigError(f"spawn_step must lie in [0, steps), got {cfg.spawn_step!r}")
  if cfg.alphas < 3:
    raise ConfigError(f"alphas must be at least 3 (a path needs an interior point), "
                      f"got {cfg.alphas!r}")
  if cfg.lr <= 0:
    raise ConfigError(f"lr must be positive, got {cfg.lr!r}")


def load_data(cfg: Config) -> data.Dataset:
  """The balanced training subset of ``cfg.dataset`` (pooled), every test example.

  For ``arch='cnn'`` the flat images become ``(side, side, 1)``.
  """
  ds = data.balanced(cfg.dataset, per_class=cfg.per_class, seed=cfg.data_seed, pool=cfg.pool)
  if cfg.arch == "cnn":
    side = int(round(np.sqrt(np.prod(ds.input_shape))))
    image = lambda x: x.reshape(len(x), side, side, 1)
    ds = ds._replace(x_train=image(ds.x_train), x_test=image(ds.x_test))
  return ds


def network(cfg: Config, input_shape, num_classes: int) -> Callable[[int], nn.Model]:
  """``width -> Model`` of ``cfg.arch`` (see :class:`Config`)."""
  if cfg.arch == "cnn":
    return lambda w: nn.cnn(input_shape, w, cfg.depth, num_classes, pool="flatten",
                            downsample=2)
  return lambda w: nn.mlp(input_shape, w, cfg.depth, num_classes)


def _paths(model, x, y, A, B, perms, ctx, alphas, key):
  """Training loss and error along the line A -> B: naive, matched by ``perms``, randomly
  permuted.

  ONE pair (``over_runs`` maps it over pairs): returns ``(3, alphas)`` arrays.
  """
  w = jnp.ones(y.shape, jnp.result_type(float))

  def fn(p):
    f = model.apply(p, x, ctx)
    return cross_entropy(f, y, w), 1 - accuracy(f, y, w)

  spec = C.permutation_spec(A)
  matched = C.apply_permutation(B, perms, spec)
  shuffled = C.apply_permutation(B, C.random_permutation(key, B, spec, width=ctx.width), spec)
  out = [C.path(fn, A, b, alphas=alphas) for b in (B, matched, shuffled)]
  return jnp.stack([o[0] for o in out]), jnp.stack([o[1] for o in out])


def _pair_paths(groups, cfg: Config, ds: data.Dataset, alphas) -> dict[int, tuple]:
  """``width -> (loss, err)`` paths of every pair, each ``(pair, method, alpha)``."""
  x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
  out = {}
  for g in groups:
    for w in np.unique(g.coords["width"]):
      idx = {int(s): i for i, s in enumerate(g.coords["seed"]) if g.coords["width"][i] == w}
      a = np.array([idx[2 * i] for i in range(cfg.pairs)])
      b = np.array([idx[2 * i + 1] for i in range(cfg.pairs)])
      take = lambda t, rows: jax.tree.map(lambda v: jnp.asarray(v)[rows], t)
      keys = jax.random.split(jax.random.key(int(w)), cfg.pairs)
      A, B, ctx = take(g.params, a), take(g.params, b), take(g.ctx, a)
      # Weight matching runs on the host (scipy's assignment), pair by pair, outside the
      # program: a program holding a host callback cannot be stored for a later process.
      perms = [C.weight_matching(*(jax.tree.map(lambda v: v[i], t) for t in (A, B)),
                                 width=None if ctx.width is None else ctx.width[i])
               for i in range(cfg.pairs)]
      perms = jax.tree.map(lambda *p: jnp.stack(p), *perms)
      # The data are arguments, not constants of the program (smaller to compile and load).
      fn = lambda A, B, P, ctx, key, xs, ys, g=g: _paths(g.model, xs, ys, A, B, P, ctx, alphas,
                                                          key)
      out[int(w)] = over_runs(fn, A, B, perms, ctx, keys, x, y,
                              in_axes=(0, 0, 0, 0, 0, None, None), chunk=1,
                              store_key=None if g.key is None else (g.key, "paths", len(alphas)))
  return out


def run(cfg: Config, progress: Callable[[int, int, str], None] | None = None,
        **engine) -> xr.Dataset:
  """Trains the pairs at every width and the spawned children; measures every linear path.

  Args:
    cfg: the configuration.
    progress: ``progress(steps_done, steps_total, info)``, called as training advances.
    **engine: execution options of :func:`jaxtheory.sweep.run` (``return_params``
      is not offered: the parameters are used here and dropped). A
      ``checkpoint`` path ``x.npz`` checkpoints the three sweeps (pairs, trunk,
      spawned children) to ``x-part-<name>.npz``.

  Returns:
    The training results of the main sweep (dims ``(seed, width, step)``),
    with ``loss_path`` and ``err_path`` (training loss and error along each
    path, dims ``(pair, width, path, alpha)``; ``'spawn'`` only at the
    largest width), ``barrier`` and ``err_barrier`` (``(pair, width, path)``),
    and ``spawn_test_acc`` of the children. The configuration as JSON in
    ``attrs['config']``.
  """
  _check(cfg)
  if engine.pop("return_params", False):
    raise ConfigError("mode-connectivity does not return parameters")
  ck = engine.pop("checkpoint", None)
  part = lambda name: dict(engine, checkpoint=None if ck is None else
                           sweep.compose.part_path(ck, "part", name))
  ds = load_data(cfg)
  K = ds.num_classes
  mlp = network(cfg, ds.input_shape, K)
  alphas = np.linspace(0.0, 1.0, cfg.alphas)
  common = dict(data=ds, optimizer="sgd", hparams=dict(lr=cfg.lr), batch_size=cfg.batch_size,
                record=cfg.record)
  seeds = list(range(2 * cfg.pairs))
  res, groups = sweep.execute(sweep.Sweep(mlp, grid=dict(seed=seeds, width=list(cfg.widths)),
                                          steps=cfg.steps, name="mode-connectivity", **common),
                              progress=progress, **part("main"))
  paths = _pair_paths(groups, cfg, ds, alphas)
  # Spawning: a trunk trained to spawn_step, then children that differ in minibatch order only.
  wmax = max(cfg.widths)
  trunk_sweep = sweep.Sweep(mlp, grid=dict(seed=[0], width=[wmax]),
                            steps=max(cfg.spawn_step, 0), name="trunk", **common)
  if cfg.spawn_step > 0:
    _, (trunk,) = sweep.execute(trunk_sweep, **part("trunk"))
  else:
    (trunk,) = sweep.initial_params(trunk_sweep)
  ckpt = jax.tree.map(lambda a: a[0], trunk.params)
  kids_res, (kids,) = sweep.execute(
      sweep.Sweep(lambda w: C.spawn_model(mlp(w), ckpt), grid=dict(seed=[s + 1 for s in seeds],
                                                                    width=[wmax]),
                  steps=cfg.steps - cfg.spawn_step, name="spawn", **common),
      **part("spawn"))
  kid_paths = _pair_paths([kids._replace(coords=dict(kids.coords, seed=kids.coords["seed"] - 1))],
                          cfg, ds, alphas)[wmax]

  widths = sorted(paths)
  methods = list(METHODS)
  loss = np.full((cfg.pairs, len(widths), len(methods), len(alphas)), np.nan)
  err = np.full_like(loss, np.nan)
  for j, w in enumerate(widths):
    loss[:, j, :3], err[:, j, :3] = (np.asarray(v) for v in paths[w])
  loss[:, -1, 3], err[:, -1, 3] = (np.asarray(v)[:, 0] for v in kid_paths)
  coords = dict(pair=np.arange(cfg.pairs), width=widths, path=methods, alpha=alphas)
  dims = ("pair", "width", "path", "alpha")
  out = xr.Dataset({"loss_path": (dims, loss), "err_path": (dims, err)}, coords=coords)
  out["barrier"] = barrier(out.loss_path)
  out["err_barrier"] = barrier(out.err_path)
  out["spawn_test_acc"] = ("spawn_seed", kids_res.test_acc.isel(width=0, step=-1).values)
  res = res.merge(out)
  for key in ("compile_seconds", "run_seconds"):
    res.attrs[key] = float(res.attrs.get(key, 0.0)) + float(kids_res.attrs.get(key, 0.0))
  res.attrs["experiment"] = "mode-connectivity"
  res.attrs["dataset"] = ds.name
  res.attrs["arch"] = cfg.arch
  res.attrs["config"] = json.dumps(dataclasses.asdict(cfg))
  return res


# ----------------------------------------------------------------------------
# Reading the results.


def barrier(path: xr.DataArray) -> xr.DataArray:
  """Barrier of paths along their ``alpha`` axis (the height above the chord, maximised)."""
  a = path.alpha
  return (path - ((1 - a) * path.isel(alpha=0) + a * path.isel(alpha=-1))).max("alpha")


def _fmt(v) -> str:
  return ", ".join(f"{x:.3f}" for x in np.ravel(v))


def summary(ds: xr.Dataset) -> list[tuple[str, str]]:
  """Rows ``(label, value)``: per width, the loss barriers of each method; the spawned pairs."""
  rows = [("dataset", f"{ds.attrs.get('dataset')}, {ds.attrs.get('arch', 'mlp')}; final train/test acc by width "
                      + ", ".join(f"{int(w)}: {100 * float(ds.train_acc.sel(width=w).isel(step=-1).mean()):.1f}/"
                                  f"{100 * float(ds.test_acc.sel(width=w).isel(step=-1).mean()):.1f}%"
                                  for w in ds.width.values))]
  for w in ds.width.values:
    b = ds.barrier.sel(width=w)
    rows.append((f"width={int(w)} loss barrier",
                 "; ".join(f"{m} {_fmt(b.sel(path=m).values)}" for m in METHODS[:3])))
  wmax = ds.width.values.max()
  rows.append((f"spawned width={int(wmax)}",
               f"loss barrier {_fmt(ds.barrier.sel(width=wmax, path='spawn').values)}, "
               f"error barrier {_fmt(ds.err_barrier.sel(width=wmax, path='spawn').values)}"))
  rows += timing_rows(ds)
  return rows


def signature(ds: xr.Dataset, min_naive: float = 0.1, matched_fraction: float = 0.25,
              width_drop: float = 1.5, max_spawn: float = 0.05) -> list[Check]:
  """The signature checks with their measured numbers (loss barriers on the training set).

  * every pair at every width has a naive barrier of at least ``min_naive``
    nats (different seeds are not linearly connected as they are);
  * after weight matching, the widest pairs' barriers are at most
    ``matched_fraction`` of their naive barriers;
  * the mean matched barrier falls at least ``width_drop``-fold from the
    narrowest to the widest width;
  * control: a random permutation of B's units fails the matching check: its
    barrier stays above ``matched_fraction`` of the naive one, and above the
    matched one, in every pair and width;
  * children spawned from a shared checkpoint: barrier at most ``max_spawn``
    nats and at most ``matched_fraction`` of the naive barrier at that width.
  """
  b = ds.barrier
  naive, matched, rand = (b.sel(path=m) for m in ("naive", "weight", "random"))
  widths = ds.width.values
  lo, hi = widths.min(), widths.max()
  per_w = lambda v: "; ".join(f"w {int(w)}: {_fmt(v.sel(width=w).values)}" for w in widths)
  spawn = b.sel(width=hi, path="spawn")
  checks = [
      Check(f"naive linear paths between seeds have a barrier (>= {min_naive:g} nats in every "
            "pair and width)", bool((naive >= min_naive).all()), "naive barrier " + per_w(naive)),
      Check(f"weight matching removes most of it at the widest width (<= {matched_fraction:g} "
            "x naive)", bool((matched.sel(width=hi) <= matched_fraction * naive.sel(width=hi)).all()),
            f"width {int(hi)}: matched {_fmt(matched.sel(width=hi).values)} vs naive "
            f"{_fmt(naive.sel(width=hi).values)}"),
  ]
  if len(widths) >= 2:
    m_lo, m_hi = float(matched.sel(width=lo).mean()), float(matched.sel(width=hi).mean())
    checks.append(Check(
        f"the matched barrier falls with width (>= {width_drop:g}x from {int(lo)} to {int(hi)})",
        bool(m_hi * width_drop <= m_lo), "matched barrier " + per_w(matched)
        + f"; mean {m_lo:.3f} -> {m_hi:.3f} ({m_lo / max(m_hi, 1e-12):.1f}x)"))
  else:
    checks.append(Check("the matched barrier falls with width", False, "needs two widths"))
  checks += [
      Check(f"control: a random permutation does not align (barrier > {matched_fraction:g} x naive "
            "and > matched, in every pair and width)",
            bool(((rand > matched_fraction * naive) & (rand > matched)).all()),
            "random barrier " + per_w(rand)),
      Check(f"children spawned from a shared checkpoint connect linearly (barrier <= "
            f"{max_spawn:g} and <= {matched_fraction:g} x naive)",
            bool(((spawn <= max_spawn) & (spawn <= matched_fraction * naive.sel(width=hi))).all()),
            f"width {int(hi)}: spawned {_fmt(spawn.values)} (error barrier "
            f"{_fmt(ds.err_barrier.sel(width=hi, path='spawn').values)}), naive "
            f"{_fmt(naive.sel(width=hi).values)}"),
  ]
  return checks


def figures(ds: xr.Dataset, out_dir: str | os.PathLike) -> list[str]:
  """Loss along the paths at each width (mean over pairs); barriers against width."""
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  widths = ds.width.values
  fig = plots.agg_figure((4.0 * (len(widths) + 1), 3.6))
  axes = fig.subplots(1, len(widths) + 1)
  a = ds.alpha.values
  for ax, w in zip(axes, widths):
    for k, m in enumerate(METHODS):
      p = ds.loss_path.sel(width=w, path=m)
      if np.isfinite(p.values).any():
        ax.plot(a, p.mean("pair").values, color=f"C{k}", label=m)
        ax.fill_between(a, p.min("pair").values, p.max("pair").values, color=f"C{k}", alpha=0.15)
    ax.set_title(f"width {int(w)}", fontsize="medium")
    ax.set_xlabel("alpha (A -> B)")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("training loss")
  axes[len(widths) - 1].legend(fontsize="small")
  ax = axes[-1]
  for k, m in enumerate(METHODS[:3]):
    v = ds.barrier.sel(path=m)
    ax.errorbar(widths, v.mean("pair").values, yerr=v.std("pair").values, color=f"C{k}",
                marker="o", label=m, capsize=2)
  ax.set_xscale("log", base=2)
  ax.set_yscale("symlog", linthresh=1e-2)
  ax.set_ylim(bottom=0)
  ax.set_xlabel("width")
  ax.set_title("loss barrier", fontsize="medium")
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small")
  path = os.path.join(out_dir, "linear_paths.png")
  fig.savefig(path, dpi=130)
  return [path]
