"""The sweep engine: a whole grid of runs trained in one compiled program per width bucket.

>>> import jaxtheory as jt
>>> from jaxtheory import data, nn, sweep
>>> ds = data.gaussian_mixture(n_train=64, n_test=64, num_classes=3, input_dim=4)
>>> s = sweep.Sweep(model=lambda w: nn.mlp((4,), w, 1, 3), data=ds,
...                 grid=dict(seed=[0, 1], width=[8, 16], lr=[0.1, 0.3]), steps=20, record=5)
>>> res = sweep.run(s)
>>> res.train_loss.dims
('seed', 'width', 'lr', 'step')

How it runs: runs are grouped into width buckets (:func:`grid.buckets`); in
each bucket the model is built at the bucket's largest width and every run
passes its own width, seed and hyperparameters as traced scalars, so the
bucket compiles once. A model that cannot be padded (``Model.paddable`` is
false: Flax, Equinox, a user's own ``init``/``apply``) gets one bucket per
width, built at that width; its seeds and hyperparameters still run together.
The runs of a bucket execute by ``vmap``, ``lax.map``,
or ``lax.map`` over chunks of ``vmap`` (``chunked``); ``auto`` picks per
backend and model size (see :func:`choose_chunk`; measured in
``benchmarks/sweep_throughput.py``). Training advances in chunks of recording
points between which the host reports progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxtheory.data import Dataset, data_arrays, validate
from jaxtheory.errors import ConfigError
from jaxtheory.nn import PARAMETRIZATIONS, Ctx, Model
from jaxtheory.progress import reporter
from jaxtheory.schedules import scheduled
from jaxtheory.sweep import checkpoint as CK
from jaxtheory.sweep import grid as G
from jaxtheory.sweep import guard, outdir
from jaxtheory.sweep.results import to_dataset
from jaxtheory.train import (SWEEPABLE, Optimizer, Trainer, get_optimizer, schedule, segment, setup,
                             train_step)

STRATEGIES = ("auto", "vmap", "map", "chunked", "loop")


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A declarative sweep.

  Attributes:
    model: ``width -> Model`` building the network at a given width.
    data: the dataset (see :mod:`jaxtheory.data`).
    grid: ``axis -> values``; axes are ``seed``, ``width``, ``n_train``,
      ``label_noise``, ``gamma``, ``init_scale``, ``base_width`` (native models; see
      :class:`~jaxtheory.nn.Ctx`) and the optimizer's arguments
      (``lr``, ``weight_decay``, ``momentum``, ``rho``, ...). ``parametrization``
      (names) is a structural axis: :func:`run` runs one sweep per value and
      joins them (:func:`jaxtheory.sweep.run_over`), a compile each.
    optimizer: a name in :data:`jaxtheory.train.OPTIMIZERS` or an
      :class:`~jaxtheory.train.Optimizer`.
    hparams: fixed values of hyperparameters that are not swept.
    steps: optimizer steps per run.
    batch_size: minibatch size; ``None`` is full-batch gradient descent.
    record: recording schedule (see :func:`jaxtheory.train.schedule`).
    loss: ``'xent'`` or ``'mse'``; default by the data (classification or not).
    parametrization: ``'sp'``, ``'ntk'``, ``'mup'`` or ``'mf'``.
    metrics: extra recorded metrics ``name -> fn(params, apply, data)``.
    max_waste: bound on padded / ideal FLOPs within a bucket.
    dtype: ``'float32'`` or ``'float64'``.
    name: a label stored with the results.
    schedule: a learning-rate schedule in :data:`jaxtheory.schedules.SCHEDULES`
      (``'warmup_cosine'``, ``'step'``, ...); its parameters (``warmup``,
      ``decay_steps``, ...) join the optimizer's as fixed ``hparams`` or grid
      axes. ``None``: a constant learning rate.
  """
  model: Callable[[int], Model]
  data: Dataset
  grid: Mapping[str, Sequence]
  optimizer: str | Optimizer = "sgd"
  hparams: Mapping[str, float] = dataclasses.field(default_factory=dict)
  steps: int = 1000
  batch_size: int | None = None
  record: Any = 50
  loss: str | None = None
  parametrization: str = "sp"
  metrics: Mapping[str, Callable] = dataclasses.field(default_factory=dict)
  max_waste: float = 1.5
  dtype: str = "float32"
  name: str = "sweep"
  schedule: str | None = None


class RunGroup(NamedTuple):
  """The parameters of a group of runs that share one network (a width bucket).

  Attributes:
    runs: flat indices of the runs (rows of ``plan.index``).
    coords: ``axis -> value per run`` (seed, width, lr, ...).
    model: the network, built at the bucket's capacity width.
    ctx: the runs' contexts stacked on a leading axis (active width, gamma, ...):
      ``model.apply(params[i], x, ctx[i])`` is run ``i``'s network.
    params: the runs' parameters stacked on a leading axis (numpy).
  """
  runs: np.ndarray
  coords: dict[str, np.ndarray]
  model: Model
  ctx: Ctx
  params: Any

  def apply(self, params, x, ctx):
    """One run's network output (``params``, ``ctx`` of one run); ``jax.vmap`` it over runs."""
    return self.model.apply(params, x, ctx)


@dataclasses.dataclass
class Plan:
  """What :func:`run` will do: checked config, runs, buckets."""
  sweep: Sweep
  optimizer: Optimizer
  loss: str
  grid: dict[str, np.ndarray]
  flat: dict[str, np.ndarray]
  index: np.ndarray
  fixed: dict[str, float]
  buckets: list[list[int]]
  schedule: np.ndarray
  cost: dict[int, float]
  state_bytes: dict[int, tuple[int, float]] = dataclasses.field(default_factory=dict)


def _xla_flops(lowered) -> float:
  """FLOPs from XLA's cost analysis of a lowered program (0 where unavailable)."""
  try:
    cost = lowered.cost_analysis()
    return float(cost.get("flops", 0.0)) if cost else 0.0
  except Exception:  # cost analysis is best-effort across backends
    return 0.0


def _flops(model: Model, dtype, x_dtype=None) -> float:
  """Forward FLOPs of one example, from XLA's cost analysis (no compilation).

  ``x_dtype``: the inputs' dtype when it is not a float (token ids).
  """
  params = jax.eval_shape(model.init, jax.random.key(0))
  if x_dtype is None or np.issubdtype(x_dtype, np.floating):
    x_dtype = dtype
  x = jax.ShapeDtypeStruct((1, *model.input_shape), x_dtype)
  flops = _xla_flops(jax.jit(model.apply).lower(params, x))
  return flops or float(sum(math.prod(p.shape) for p in jax.tree.leaves(params)))


def plan(s: Sweep) -> Plan:
  """Validates a sweep and lays out its runs and buckets (no training)."""
  opt = get_optimizer(s.optimizer)
  if s.schedule is not None:
    opt = scheduled(opt, s.schedule, s.steps)
  allowed = SWEEPABLE + tuple(n for n in opt.hyper_names if n not in SWEEPABLE)
  if s.dtype not in ("float32", "float64"):
    raise ConfigError(f"dtype must be 'float32' or 'float64', got {s.dtype!r}")
  if s.batch_size is not None and (not isinstance(s.batch_size, int) or s.batch_size <= 0):
    raise ConfigError(f"batch_size must be a positive integer or None, got {s.batch_size!r}")
  ds = validate(s.data)
  sched = schedule(s.steps, s.record)
  for k in s.hparams:
    if k not in allowed:
      raise ConfigError(f"unknown hyperparameter {k!r}; known here: {', '.join(allowed)}")
  g = dict(s.grid)
  for axis, default in (("seed", 0), ("width", s.hparams.get("width"))):
    if axis not in g:
      if default is None:
        raise ConfigError("give the width to sweep, e.g. grid=dict(width=[64, 128])")
      g[axis] = [default]
  grid = G.normalize(g, allowed)
  n = ds.x_train.shape[0]
  if "n_train" in grid and grid["n_train"].max() > n:
    raise ConfigError(f"n_train {grid['n_train'].max()} exceeds the {n} training examples")
  if "label_noise" in grid and not ds.is_classification:
    raise ConfigError("label_noise needs a classification dataset")
  if "label_noise" in grid and (grid["label_noise"].min() < 0 or grid["label_noise"].max() > 1):
    raise ConfigError("label_noise must lie in [0, 1]")
  loss = s.loss or ("xent" if ds.is_classification else "mse")
  if loss not in ("xent", "mse"):
    raise ConfigError(f"unknown loss {loss!r}; available: xent, mse")
  if loss == "xent" and not ds.is_classification:
    raise ConfigError("cross-entropy needs a classification dataset; use loss='mse'")
  guard.check_hparams({k: v for k, v in s.hparams.items() if k != "width"})
  guard.check_hparams({k: v for k, v in grid.items() if k not in G.INT_AXES})
  fixed = dict(opt.defaults)
  fixed.update({k: float(v) for k, v in s.hparams.items() if k != "width"})
  dt = jnp.float64 if s.dtype == "float64" else jnp.float32
  with jax.enable_x64(s.dtype == "float64"):
    models = {int(w): _build(s, int(w), ds) for w in grid["width"]}
    # Sizes from shapes alone, before anything is lowered or compiled.
    state_bytes = {w: guard.run_state_bytes(m, opt, fixed, np.dtype(dt).itemsize)
                   for w, m in models.items()}
    guard.check_size(_runs_per_width(grid), state_bytes, len(sched), 7 + len(s.metrics))
    cost = {w: _flops(m, dt, ds.x_train.dtype) for w, m in models.items()}
  flat, index = G.expand(grid)
  if "base_width" in grid or "base_width" in fixed:
    if np.min(grid.get("base_width", fixed.get("base_width"))) <= 0:
      raise ConfigError("base_width must be positive")
    if not all(m.paddable for m in models.values()):
      raise ConfigError("base_width applies to native models; give a foreign model its base "
                        "width by nn.base_shapes.parametrize(build, base_width)")
  if all(m.paddable for m in models.values()):
    groups = G.buckets(grid["width"], cost.__getitem__, s.max_waste)
  else:  # Flax, Equinox or a user's own init/apply: built at each width, never padded
    groups = [[w] for w in sorted(models, reverse=True)]
  return Plan(s, opt, loss, grid, flat, index, fixed, groups, sched, cost, state_bytes)


def _runs_per_width(grid) -> dict[int, int]:
  per = math.prod(len(v) for k, v in grid.items() if k != "width")
  return {int(w): per for w in grid["width"]}


def _build(s: Sweep, width: int, ds: Dataset) -> Model:
  m = s.model(width)
  if not isinstance(m, Model):
    raise ConfigError(f"sweep.model(width) must return a jaxtheory Model, got {type(m).__name__}")
  if tuple(m.input_shape) != tuple(ds.input_shape):
    raise ConfigError(f"the model expects inputs of shape {tuple(m.input_shape)} but the "
                      f"dataset {ds.name!r} has inputs of shape {tuple(ds.input_shape)}")
  out = m.output_shape()
  if out != (ds.out_dim,):
    raise ConfigError(f"the model outputs shape {out} per example but the dataset "
                      f"{ds.name!r} needs ({ds.out_dim},)")
  return m


def choose_chunk(num_runs: int, flops_per_run_step: float, backend: str | None = None,
                 minibatch: bool = False) -> int:
  """How many runs to ``vmap`` together (chunks are then ``lax.map``-ed).

  On accelerators all runs are vmapped (one wide program). On CPU, vmapping
  pays while one run's step is too small to keep the cores busy (per-op
  overhead dominates) and loses once it is large enough, where ``lax.map``
  keeps each run's working set in cache (measured on a 2-core CPU: vmap over 64 MLP seeds
  ran 0.5-1.5x a Python loop, lax.map beat both). So a CPU chunk holds about
  ``_CPU_CHUNK_FLOPS`` of work per step: 300 MFLOP for full-batch steps and
  1 GFLOP for minibatch steps (a minibatch's working set is small, so
  vmapping pays up to larger models). Both thresholds come from
  ``benchmarks/sweep_throughput.py`` on a 2-core CPU (the best of vmap /
  chunks of 4 / lax.map for MLPs of width 16 to 512).
  """
  backend = backend or jax.default_backend()
  if backend != "cpu":
    return num_runs
  budget = _CPU_CHUNK_FLOPS["minibatch" if minibatch else "full"]
  return int(max(1, min(num_runs, budget // max(flops_per_run_step, 1.0))))


_CPU_CHUNK_FLOPS = {"full": 300e6, "minibatch": 1e9}


def _strategy_chunk(strategy: str, num_runs: int, flops_per_run: float,
                    chunk_size: int | None, minibatch: bool = False) -> tuple[str, int]:
  if strategy not in STRATEGIES:
    raise ConfigError(f"unknown strategy {strategy!r}; available: {', '.join(STRATEGIES)}")
  if strategy == "vmap":
    return "vmap", num_runs
  if strategy in ("map", "loop"):
    return strategy, 1
  if strategy == "chunked":
    return "chunked", int(chunk_size or max(1, num_runs // 4))
  c = choose_chunk(num_runs, flops_per_run, minibatch=minibatch)
  return ("vmap" if c >= num_runs else "map" if c == 1 else "chunked"), c


def _lowered_step(tr: Trainer, hp1, data):
  """``(state shapes, lowered train step)`` of one run: lowering, no compilation."""
  st = jax.eval_shape(lambda h: setup(tr, h, data), hp1)
  return st, jax.jit(lambda s, h, d: train_step(tr, s, h, d)).lower(st, hp1, data)


def _step_flops(tr: Trainer, hp1, data) -> float:
  """FLOPs of one training step of one run (XLA cost analysis, no compilation)."""
  st, lowered = _lowered_step(tr, hp1, data)
  return _xla_flops(lowered) or 3.0 * 2 * sum(math.prod(l.shape) for l in jax.tree.leaves(st.params))


def _shard_runs(f, n_split: int, n_replicated: int):
  """``f`` applied per device to that device's share of the runs (leading axis).

  The first ``n_split`` arguments (states, hyperparameters) are split over a
  one-axis mesh of every device; the next ``n_replicated`` (data, intervals)
  are replicated.
  Runs never communicate, so the result equals the single-device one.
  """
  P = jax.sharding.PartitionSpec
  return jax.shard_map(f, mesh=_mesh(), in_specs=(P("runs"),) * n_split + (P(),) * n_replicated,
                       out_specs=P("runs"), check_vma=False)


def _mesh():
  return jax.make_mesh((jax.device_count(),), ("runs",), devices=jax.devices())


def _place(tree, axis: str | None):
  """Puts arrays split over the runs mesh (``axis='runs'``) or replicated (``None``).

  Works across hosts (``jax.distributed``): every process holds the same host
  values and supplies the shards of its own devices.
  """
  if jax.device_count() == 1:
    return tree
  sharding = jax.sharding.NamedSharding(_mesh(), jax.sharding.PartitionSpec(axis))

  def put(a):
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

  return jax.tree.map(put, tree)


def fetch(tree):
  """Host numpy copies of (possibly multi-host sharded) arrays; every process gets all."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return jax.tree.map(lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True)),
                      tree)


def run(s: Sweep, *, strategy: str = "auto", chunk_size: int | None = None,
        progress: bool | Callable[[int, int, str], None] | None = None,
        record_chunks: int = 20, checkpoint: str | os.PathLike | None = None,
        resume: bool = False, checkpoint_interval: float = 60.0,
        memory_budget: float | None = None, return_params: bool = False):
  """Trains every run of the sweep and returns the labelled results.

  Args:
    s: the sweep.
    strategy: ``'auto'``, ``'vmap'``, ``'map'``, ``'chunked'`` or ``'loop'``
      (a Python loop over separately jitted runs: the baseline).
    chunk_size: runs per vmapped chunk for ``'chunked'``.
    progress: ``None``: a progress bar and a summary line in terminals and
      notebooks; ``True``: also in files and pipes; ``False``: silent; or a
      function called as ``progress(steps_done, steps_total, info)`` (see
      :mod:`jaxtheory.progress`).
    record_chunks: the host regains control (progress, checkpoints) about
      this many times per run.
    checkpoint: path of a checkpoint file (``.npz``). The sweep state is saved
      there atomically at least every ``checkpoint_interval`` seconds (at a
      chunk boundary) and whenever a bucket finishes.
    resume: continue from ``checkpoint`` if it exists (finished buckets are
      not recomputed). Without ``resume`` an existing checkpoint is an error,
      never overwritten.
    checkpoint_interval: seconds between checkpoints (0: every chunk).
    memory_budget: bytes the sweep may hold. Each bucket's runs are split into
      groups that fit (one compiled program serves all of them); a run that
      cannot fit alone is a :class:`ConfigError`. ``None``: no limit.
    return_params: also return every run's final parameters, as a list of
      :class:`RunGroup` (one per bucket and memory group), for probes and
      kernels over the trained sweep (see :func:`jaxtheory.probes.over_runs`).

  Returns:
    An ``xarray.Dataset`` with dims ``(seed, width, <other axes>, step)``, or
    ``(dataset, groups)`` with ``return_params``.
  """
  guard.check_options(strategy, chunk_size, record_chunks, checkpoint_interval, memory_budget,
                      STRATEGIES)
  if "parametrization" in s.grid:  # structural: one sweep per value, joined along it
    from jaxtheory.sweep.compose import run_over  # pylint: disable=import-outside-toplevel
    values = [s.grid["parametrization"]] if isinstance(s.grid["parametrization"], str) else list(
        s.grid["parametrization"])
    bad = [v for v in values if v not in PARAMETRIZATIONS]
    if bad:
      raise ConfigError(f"unknown parametrization {bad[0]!r}; expected one of "
                        f"{', '.join(PARAMETRIZATIONS)}")
    rest = {k: v for k, v in s.grid.items() if k != "parametrization"}
    make = lambda v: dataclasses.replace(s, grid=rest, parametrization=v, name=f"{s.name}-{v}")
    return run_over("parametrization", values, make, progress=progress, checkpoint=checkpoint,
                    strategy=strategy, chunk_size=chunk_size, record_chunks=record_chunks,
                    resume=resume, checkpoint_interval=checkpoint_interval,
                    memory_budget=memory_budget, return_params=return_params)
  with _owned(checkpoint) as checkpoint, reporter(progress, s.name) as report:
    p = plan(s)
    guard.check_size(_runs_per_width(p.grid), p.state_bytes, len(p.schedule),
                     7 + len(s.metrics), memory_budget)
    est = guard.estimate(p)
    if est["flops"] > guard.LONG_PLAN_FLOPS:  # say what is coming before a long compile
      report(0, int(est["run_steps"]), f"compiling; planned {guard.describe(est)}")
    with jax.enable_x64(s.dtype == "float64"):
      ck = None if checkpoint is None else _Ckpt(os.fspath(checkpoint), resume,
                                                  checkpoint_interval)
      groups = [] if return_params else None
      ds = _run(p, strategy, chunk_size, report, record_chunks, ck, memory_budget, groups)
    report.close(ds)
  return (ds, groups) if return_params else ds


def initial_params(s: Sweep, memory_budget: float | None = None) -> list[RunGroup]:
  """Every run's parameters at initialisation (no training), grouped as in :func:`run`.

  The same compiled initialisation as :func:`run`, so these are exactly the
  parameters a run of the sweep starts from.
  """
  p = plan(s)
  out = []
  with jax.enable_x64(s.dtype == "float64"):
    data = data_arrays(s.data)
    data_b = _place(data, None)
    for members in p.buckets:
      bk = _Bucket(p, members, data, "vmap", None, memory_budget, 1)
      init = jax.jit(jax.vmap(lambda h, d: setup(bk.tr, h, d), in_axes=(0, None)))
      for runs, hps in bk.groups():
        out.append(bk.run_group(p, runs, hps, fetch(init(hps, data_b).params)))
  return out


@contextlib.contextmanager
def _owned(checkpoint):
  """Checks the checkpoint's folder is writable and holds its lock for the whole run."""
  if checkpoint is None:
    yield None
    return
  path = os.path.abspath(os.fspath(checkpoint))
  outdir.ensure_dir(os.path.dirname(path), "the checkpoint's folder")
  if jax.process_index() != 0:  # one writer; the others hold the same values
    yield path
    return
  with outdir.lock(path + ".lock", f"the checkpoint {path}"):
    yield path


class _Ckpt:
  """Where and how often to checkpoint; what was loaded on resume."""

  def __init__(self, path, resume, interval):
    self.path, self.resume, self.interval = path, resume, float(interval)
    self.saved, self.fp, self.last = None, None, time.perf_counter()

  def open(self, fp):
    self.fp = fp
    CK.remove_stale_temporaries(self.path)
    if os.path.exists(self.path):
      if not self.resume:
        raise CK.CheckpointError(
            f"a checkpoint already exists at {self.path}; resume it or remove it")
      self.saved = CK.load(self.path, fp)

  def due(self):
    due = time.perf_counter() - self.last >= self.interval
    if jax.process_count() > 1:  # every process must agree (saving gathers states)
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      due = bool(multihost_utils.broadcast_one_to_all(np.asarray(due)))
    return due

  def save(self, *args):
    if jax.process_index() == 0:  # one writer; every process holds the same values
      CK.save(self.path, self.fp, *args)
    self.last = time.perf_counter()


def _fingerprint(p: Plan, strategy, chunk_size, K, data, memory_budget) -> dict[str, str]:
  """Everything that determines the results, part by part (see :mod:`jaxtheory.sweep.guard`)."""
  s = p.sweep
  per_bucket = {}
  float_t = jnp.result_type(float)
  for members in p.buckets:
    cap = int(max(members))
    tr = Trainer(_build(s, cap, s.data), p.loss, p.optimizer, s.parametrization,
                 len(members) > 1, s.batch_size, s.data.num_classes, tuple(s.metrics.items()))
    r = int(np.flatnonzero(np.isin(p.flat["width"], members))[0])
    hp1 = {k: jnp.asarray(v[r], jnp.int32 if k in G.INT_AXES else float_t)
           for k, v in p.flat.items()}
    hp1.update({k: jnp.asarray(v, float_t) for k, v in p.fixed.items() if k not in hp1})
    per_bucket[cap] = guard.computation(tr, hp1, data)
  general = {f"the {k} values": v.tolist() for k, v in p.grid.items()}
  general.update({f"hyperparameter {k}": v for k, v in p.fixed.items()})
  general.update({
      "the recording schedule": p.schedule.tolist(), "the loss": p.loss,
      "the parametrization": s.parametrization, "steps": s.steps, "batch_size": s.batch_size,
      "dtype": s.dtype, "the width buckets": p.buckets, "the metric names": sorted(s.metrics),
      "the data": {k: np.asarray(v) for k, v in data.items()},
      "the execution (strategy, chunk size, devices, memory budget)": dict(
          strategy=strategy, chunk_size=chunk_size, K=K, devices=jax.device_count(),
          memory_budget=memory_budget)})
  return guard.fingerprint(general, per_bucket)


def _memory_per_run(tr: Trainer, hp1, data) -> float:
  """Bytes one run holds while stepping: its state twice plus XLA's temporaries."""
  st, lowered = _lowered_step(tr, hp1, data)
  state_bytes = sum(math.prod(l.shape) * l.dtype.itemsize for l in jax.tree.leaves(st))
  temp = getattr(lowered.compile().memory_analysis(), "temp_size_in_bytes", 0) or 0
  return float(2 * state_bytes + temp)


class _Bucket:
  """One width bucket: its trainer, runs, strategy, memory groups and compiled programs."""

  def __init__(self, p: Plan, members, data, strategy, chunk_size, memory_budget, K):
    s = p.sweep
    float_t = jnp.result_type(float)
    self.cap = max(members)
    # A bucket of one width needs no masks: build it unpadded (fewer ops per step).
    self.tr = Trainer(_build(s, self.cap, s.data), p.loss, p.optimizer, s.parametrization,
                      len(members) > 1, s.batch_size, s.data.num_classes,
                      tuple(s.metrics.items()))
    self.runs = np.flatnonzero(np.isin(p.flat["width"], members))
    hps = {k: np.asarray(v[self.runs]) for k, v in p.flat.items()}
    for k, v in p.fixed.items():
      hps.setdefault(k, np.full((len(self.runs),), v))
    self.hps = {k: jnp.asarray(v, jnp.int32 if k in G.INT_AXES else float_t)
                for k, v in hps.items()}
    hp1 = jax.tree.map(lambda a: a[0], self.hps)
    R = len(self.runs)
    self.group = R
    self.memory = None
    if memory_budget is not None:
      per_run = _memory_per_run(self.tr, hp1, data)
      data_bytes = sum(v.size * v.dtype.itemsize for v in jax.tree.leaves(data))
      fits = int((memory_budget - data_bytes) // per_run)
      if fits < 1:
        raise ConfigError(
            f"one run of width {self.cap} needs about {(per_run + data_bytes) / 2**20:.1f} MiB "
            f"but the memory budget is {memory_budget / 2**20:.1f} MiB")
      self.group = min(R, fits)
      self.memory = data_bytes + self.group * per_run
    self.strat, self.chunk = _strategy_chunk(
        strategy, self.group, _step_flops(self.tr, hp1, data) if strategy == "auto" else 0,
        chunk_size, s.batch_size is not None)
    n_dev = jax.device_count()
    # Each device takes an equal share of a group, a multiple of the vmapped chunk.
    unit = -(-self.group // n_dev) if self.strat == "vmap" else self.chunk
    self.padded_group = -(-self.group // (n_dev * unit)) * n_dev * unit
    self.traces, self.K, self._compiled = [0], K, None

  def groups(self):
    """``(run indices, hyperparameters padded to the group size)`` per memory group."""
    for g0 in range(0, len(self.runs), self.group):
      idx = np.arange(g0, min(g0 + self.group, len(self.runs)))
      take = np.concatenate([idx, np.repeat(idx[-1:], self.padded_group - len(idx))])
      yield self.runs[idx], jax.tree.map(lambda a: a[take], self.hps)

  def run_group(self, p: Plan, runs, hps, params) -> RunGroup:
    n = len(runs)
    take = lambda a: np.asarray(a)[:n]
    ctx = jax.vmap(self.tr.ctx)(jax.tree.map(lambda a: jnp.asarray(a)[:n], hps))
    return RunGroup(np.asarray(runs), {k: v[runs] for k, v in p.flat.items()}, self.tr.model,
                    ctx, jax.tree.map(take, params))

  def per_run(self, st, hp, d, iv):
    self.traces[0] += 1  # runs at trace time only: counts compilations
    return segment(self.tr, st, hp, d, iv)

  def programs(self, hps, data):
    """Compiled ``(init, segment)`` for a group, built once per bucket."""
    if self._compiled is None:
      tr, chunk = self.tr, self.chunk
      # lax.map, not vmap: a vmapped threefry init takes seconds longer to compile.
      init_f = lambda hs, d: jax.lax.map(lambda h: setup(tr, h, d), hs)
      if self.strat == "vmap":
        f = jax.vmap(self.per_run, in_axes=(0, 0, None, None))
      else:
        f = lambda st, hp, d, iv: jax.lax.map(lambda a: self.per_run(a[0], a[1], d, iv),
                                              (st, hp), batch_size=None if chunk == 1 else chunk)
      if jax.device_count() > 1:
        init_f, f = _shard_runs(init_f, 1, 1), _shard_runs(f, 2, 2)
      init = jax.jit(init_f)
      st = jax.eval_shape(init, hps, data)
      iv = _place(np.zeros(self.K, np.int32), None)
      self._compiled = init, jax.jit(f).lower(st, hps, data, iv).compile()
    return self._compiled


def _run(p: Plan, strategy, chunk_size, progress, record_chunks, ck: _Ckpt | None = None,
         memory_budget: float | None = None, groups: list | None = None):
  s = p.sweep
  data = data_arrays(s.data)
  intervals = np.diff(p.schedule, prepend=0).astype(np.int32)
  K = max(1, math.ceil(len(intervals) / max(1, record_chunks)))
  if ck is not None:
    if strategy == "loop":
      raise ConfigError("checkpointing needs a compiled strategy, not 'loop'")
    ck.open(_fingerprint(p, strategy, chunk_size, K, data, memory_budget))
  saved = ck.saved if ck is not None else None
  n_chunks = math.ceil(len(intervals) / K)
  intervals = np.concatenate([intervals, np.zeros(n_chunks * K - len(intervals), np.int32)])
  total_steps = int(s.steps) * len(p.index)
  done = 0
  metrics_by_run: dict[int, dict[str, np.ndarray]] = {}
  info: dict[str, Any] = {"buckets": [], "strategy": [], "traces": 0, "compile_s": 0.0,
                          "run_s": 0.0, "backend": jax.default_backend(),
                          "devices": jax.device_count(), "memory": 0.0}
  data_b = _place(data, None)
  unit = -1  # index of a (bucket, memory group): the checkpoint's unit of progress
  # Final params of finished units, saved with every checkpoint so that a resumed sweep can
  # return them (return_params) without retraining (leaves; restored against eval_shape).
  finals: dict[int, Any] = dict(saved["finals"]) if saved is not None else {}
  for members in p.buckets:
    bk = _Bucket(p, members, data, strategy, chunk_size, memory_budget, K)
    info["buckets"].append(sorted(members))
    info["strategy"].append(f"{bk.strat}:{bk.chunk}" + (
        f"x{-(-len(bk.runs) // bk.group)}groups" if bk.group < len(bk.runs) else ""))
    info["memory"] = max(info["memory"], bk.memory or 0.0)
    t0 = time.perf_counter()
    for runs, hps in bk.groups():
      unit += 1
      if saved is not None and unit < saved["bucket"]:  # finished before the interruption
        if groups is not None:
          if unit not in finals:
            raise ConfigError("return_params cannot return the parameters of runs that finished "
                              "before the interruption: the checkpoint predates saved final "
                              "parameters; remove it to train again")
          # Only shapes are needed to rebuild the params tree: trace init, no compile.
          like = jax.eval_shape(lambda h, d: jax.lax.map(lambda a: setup(bk.tr, a, d), h),
                                hps, data_b).params
          groups.append(bk.run_group(p, runs, hps, CK.restore_states(finals[unit], like)))
        metrics_by_run.update({int(r): saved["done"][int(r)] for r in runs})
        done += int(s.steps) * len(runs)
        continue
      if bk.strat == "loop":
        done = _run_loop(bk, runs, hps, data, intervals, K, n_chunks, metrics_by_run, done,
                         lambda d: progress(d, total_steps, f"width<={bk.cap}"), groups, p)
        continue
      hps = _place(hps, "runs")
      t_c = time.perf_counter()
      progress(done, total_steps, f"compiling width<={bk.cap}")
      init, seg = bk.programs(hps, data_b)
      states = init(hps, data_b)
      info["compile_s"] += time.perf_counter() - t_c
      outs, start = [], 0
      if saved is not None and unit == saved["bucket"] and saved["chunk"] > 0:
        states = _place(CK.restore_states(saved["leaves"], states), "runs")
        outs, start = list(saved["outs"]), saved["chunk"]
        done += int(intervals[:start * K].sum()) * len(runs)
      for c in range(start, n_chunks):
        iv = intervals[c * K:(c + 1) * K]
        states, m = seg(states, hps, data_b, _place(iv, None))
        outs.append(fetch(m))
        done += int(iv.sum()) * len(runs)
        progress(done, total_steps, f"width<={bk.cap}")
        if ck is not None and c + 1 < n_chunks and ck.due():
          ck.save(metrics_by_run, unit, c + 1, fetch(states), outs, finals)
      for j, r in enumerate(runs):
        metrics_by_run[int(r)] = {k: np.concatenate([o[k][j] for o in outs]) for k in outs[0]}
      final = fetch(states.params) if groups is not None or ck is not None else None
      if groups is not None:
        groups.append(bk.run_group(p, runs, hps, final))
      if ck is not None:
        finals[unit] = jax.tree.leaves(final)
        ck.save(metrics_by_run, unit + 1, 0, None, [], finals)
    info["run_s"] += time.perf_counter() - t0
    info["traces"] += bk.traces[0]
  info["run_s"] -= info["compile_s"]
  info["peak"] = _peak_memory()
  n_rec = len(p.schedule)
  metrics = {k: np.stack([metrics_by_run[r][k][:n_rec] for r in range(len(p.index))])
             for k in metrics_by_run[0]}
  return to_dataset(p, metrics, info)


def _peak_memory() -> float:
  """Peak memory so far: the devices' peak bytes in use where the backend reports
  it (GPU/TPU), else this process's peak resident set size (CPU)."""
  stats = [d.memory_stats() or {} for d in jax.local_devices()]
  peaks = [st.get("peak_bytes_in_use", 0) for st in stats]
  if any(peaks):
    return float(max(peaks))
  import resource  # pylint: disable=import-outside-toplevel
  return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def _run_loop(bk: _Bucket, runs, hps, data, intervals, K, n_chunks, metrics_by_run, done,
              report, groups=None, p=None):
  """The baseline: a Python loop over separately jitted single runs."""
  if bk._compiled is None:
    bk._compiled = (jax.jit(lambda h, d: setup(bk.tr, h, d)), jax.jit(bk.per_run))
  init, seg = bk._compiled
  finals = []
  for j, r in enumerate(runs):
    hp = jax.tree.map(lambda a: a[j], hps)
    st, outs = init(hp, data), []
    for c in range(n_chunks):
      st, m = seg(st, hp, data, intervals[c * K:(c + 1) * K])
      outs.append(fetch(m))
      done += int(intervals[c * K:(c + 1) * K].sum())
      report(done)
    metrics_by_run[int(r)] = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    finals.append(fetch(st.params))
  if groups is not None:
    groups.append(bk.run_group(p, runs, hps, jax.tree.map(lambda *a: np.stack(a), *finals)))
  return done
