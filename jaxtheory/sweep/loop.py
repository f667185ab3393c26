"""Executing a planned sweep: per width bucket, compiled programs over groups of runs, chunk by chunk.

A :class:`_Bucket` holds one width bucket's trainer, runs, strategy
(``vmap``, ``lax.map``, chunks, or a Python loop) and memory groups, and
compiles its ``(init, segment)`` programs once. :func:`execute_plan` walks
the buckets and their groups, advancing ``K`` recording points per compiled
call, reporting progress and saving checkpoints between calls; what every
bucket shares travels in one :class:`Job`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from jaxtheory import compile_cache
from jaxtheory.data import data_arrays
from jaxtheory.errors import ConfigError
from jaxtheory.nn import Ctx, Model
from jaxtheory.sweep import checkpoint as CK
from jaxtheory.sweep import grid as G
from jaxtheory.sweep import guard
from jaxtheory.sweep.devices import fetch, peak_memory, place, shard_runs
from jaxtheory.sweep.planning import Plan, _strategy_chunk, _xla_flops
from jaxtheory.sweep.results import to_dataset
from jaxtheory.train import Hyper, Trainer, segment, setup, train_step


class RunGroup(NamedTuple):
  """The parameters of a group of runs that share one network (a width bucket).

  Attributes:
    runs: flat indices of the runs (rows of ``plan.index``).
    coords: ``axis -> value per run`` (seed, width, lr, ...).
    model: the network, built at the bucket's capacity width.
    ctx: the runs' contexts stacked on a leading axis (active width, gamma, ...):
      ``model.apply(params[i], x, ctx[i])`` is run ``i``'s network.
    params: the runs' parameters stacked on a leading axis (numpy).
    key: what names the group's network for the executable store (its bucket's
      computation: the model's and trainer's programs), or ``None`` when the
      store is off; a probe of the network alone can be stored under it
      (:func:`jaxtheory.probes.over_runs`'s ``store_key``).
  """
  runs: np.ndarray
  coords: dict[str, np.ndarray]
  model: Model
  ctx: Ctx
  params: Any
  key: str | None = None

  def apply(self, params, x, ctx):
    """One run's network output (``params``, ``ctx`` of one run); ``jax.vmap`` it over runs."""
    return self.model.apply(params, x, ctx)


@dataclasses.dataclass
class Job:
  """One sweep's execution: what every bucket shares, and what it has produced so far.

  Attributes:
    plan: the planned sweep.
    data: the dataset's arrays on the host.
    intervals: optimizer steps before each recording point, padded with zeros
      to a whole number of chunks.
    K: recording points per compiled call (a chunk).
    report: ``report(steps_done, info)``.
    metrics: ``run -> {metric: values per record}`` of the finished runs.
    groups: the final parameters of the finished groups (``None``: keep none).
    done: optimizer steps taken over all runs.
  """
  plan: Plan
  data: dict[str, Any]
  intervals: np.ndarray
  K: int
  report: Callable[[int, str], None]
  metrics: dict[int, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
  groups: list[RunGroup] | None = None
  done: int = 0

  @property
  def n_chunks(self) -> int:
    return len(self.intervals) // self.K

  def chunk(self, c: int) -> np.ndarray:
    """The intervals of chunk ``c``."""
    return self.intervals[c * self.K:(c + 1) * self.K]


def _trainer(p: Plan, members) -> Trainer:
  """The trainer of a width bucket, built at its largest width.

  A bucket of one width needs no masks: it is built unpadded (fewer ops per step).
  """
  s = p.sweep
  return Trainer(p.models[int(max(members))], p.loss, p.optimizer,
                 parametrization=p.parametrization, padded=len(members) > 1,
                 batch_size=s.batch_size, num_classes=s.data.num_classes,
                 metrics=tuple(s.metrics.items()))


def _lowered_step(tr: Trainer, hp1, data):
  """``(state shapes, lowered train step)`` of one run: lowering, no compilation."""
  st = jax.eval_shape(lambda h: setup(tr, h, data), hp1)
  return st, jax.jit(lambda s, h, d: train_step(tr, s, h, d)).lower(st, hp1, data)


def _step_cost(tr: Trainer, hp1, data) -> tuple[float, bool, int]:
  """``(FLOPs, convolutional, matmuls)`` of one training step of one run: XLA's cost
  analysis of the lowered step (no compilation), whether it has a convolution, and
  how many matrix products (``dot_general``) it has."""
  st, lowered = _lowered_step(tr, hp1, data)
  flops = _xla_flops(lowered) or 3.0 * 2 * sum(math.prod(l.shape) for l in jax.tree.leaves(st.params))
  text = lowered.as_text()
  return flops, "stablehlo.convolution" in text, text.count("stablehlo.dot_general")


# A bucket's initialisation runs once and costs mostly the compilation of its threefry draws;
# LLVM's level-1 pipeline compiles it about 40% faster, to the same bits (tests/test_sweep.py
# checks them against the default pipeline). The training programs keep the default.
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


def compile_init(f: Callable, *args):
  """``jax.jit(f)`` compiled for ``args`` with :data:`INIT_COMPILER_OPTIONS` (and, on CPU,
  :func:`jaxtheory.compile_cache.run_once_options`)."""
  return compile_cache.compile_lowered(jax.jit(f).lower(*args),
                                       compile_cache.run_once_options(INIT_COMPILER_OPTIONS))


def _computations(p: Plan, data) -> dict[int, dict[str, Any]]:
  """``capacity -> guard.computation`` of every width bucket (traced, not compiled)."""
  per_bucket = {}
  float_t = jnp.result_type(float)
  for members in p.buckets:
    tr = _trainer(p, members)
    r = int(np.flatnonzero(np.isin(p.flat["width"], members))[0])
    hp1 = {k: jnp.asarray(v[r], jnp.int32 if k in G.INT_AXES else float_t)
           for k, v in p.flat.items()}
    hp1.update({k: jnp.asarray(v, float_t) for k, v in p.fixed.items() if k not in hp1})
    per_bucket[int(max(members))] = guard.computation(tr, Hyper.of(hp1, tr.optimizer), data)
  return per_bucket


def _fingerprint(p: Plan, strategy, chunk_size, K, data, memory_budget,
                 per_bucket: dict[int, dict[str, Any]]) -> dict[str, str]:
  """Everything that determines the results, part by part (see :mod:`jaxtheory.sweep.guard`)."""
  s = p.sweep
  general = {f"the {k} values": v.tolist() for k, v in p.grid.items()}
  general.update({f"hyperparameter {k}": v for k, v in p.fixed.items()})
  general.update({
      "the recording schedule": p.schedule.tolist(), "the loss": p.loss,
      "the parametrization": p.parametrization, "steps": s.steps, "batch_size": s.batch_size,
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


def _aval(a) -> list:
  return [list(np.shape(a)), str(a.dtype if hasattr(a, "dtype") else np.asarray(a).dtype)]


def _computation_key(p: Plan, tr: Trainer, computation, data) -> str:
  """What a bucket's programs depend on, known before tracing them (see :class:`_Bucket`).

  The bucket's computation (jaxprs of model, optimizer and metrics), the
  trainer's settings, the data's shapes and dtypes (not their values: those
  are arguments) and :func:`jaxtheory.compile_cache.environment`.
  """
  return CK.digest({
      "environment": compile_cache.environment(), "computation": computation,
      "trainer": dict(loss=p.loss, parametrization=tr.parametrization, padded=tr.padded,
                      batch_size=tr.batch_size, num_classes=tr.num_classes,
                      metrics=[k for k, _ in tr.metrics]),
      "data": {k: _aval(v) for k, v in data.items()}})


class _Bucket:
  """One width bucket: its trainer, runs, strategy, memory groups and compiled programs.

  With ``computation`` given (and the compilation cache on), the bucket's
  decisions (strategy, chunk, memory groups) and each compiled program come
  from the executable store when an earlier process stored them, and go
  there once made: decisions keyed by the computation and the execution
  options, each program by the computation, its name and what shapes it
  (the group's hyperparameters; the segment's strategy, chunk and ``K``).
  """

  def __init__(self, p: Plan, members, data, strategy, chunk_size, memory_budget, K,
               computation: dict[str, Any] | None = None):
    s = p.sweep
    float_t = jnp.result_type(float)
    self.cap = max(members)
    self.members = list(members)
    self.tr = _trainer(p, members)
    self.runs = np.flatnonzero(np.isin(p.flat["width"], members))
    hps = {k: np.asarray(v[self.runs]) for k, v in p.flat.items()}
    for k, v in p.fixed.items():
      hps.setdefault(k, np.full((len(self.runs),), v))
    # Named values become the typed hyperparameters here, once; on the host (numpy), so that
    # selecting a group's runs is not a device program (place() puts them on the devices).
    self.hps = Hyper.of({k: np.asarray(v, np.int32 if k in G.INT_AXES else float_t)
                         for k, v in hps.items()}, p.optimizer)
    self.traces, self.K, self._compiled, self._pending = [0], K, None, None
    self.key = (None if computation is None or strategy == "loop"
                or not compile_cache.executables_enabled()
                else _computation_key(p, self.tr, computation, data))
    self.loaded = False  # whether the training program came from the executable store
    decisions = None if self.key is None else CK.digest(
        [self.key, "decisions", jax.tree.map(_aval, dict(self.hps._asdict())),
         dict(strategy=strategy, chunk_size=chunk_size, memory_budget=memory_budget,
              devices=jax.device_count())])
    stored = None if decisions is None else compile_cache.load_executable(decisions)
    if stored is not None:
      (self.group, self.memory, self.strat, self.chunk,
       self.padded_group) = stored.values["decisions"]
      return
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
    flops, convolutional, matmuls = (_step_cost(self.tr, hp1, data) if strategy == "auto"
                                     else (0, False, None))
    self.strat, self.chunk = _strategy_chunk(strategy, self.group, flops, chunk_size,
                                             s.batch_size is not None, convolutional, matmuls)
    n_dev = jax.device_count()
    # Each device takes an equal share of a group, a multiple of the vmapped chunk.
    unit = -(-self.group // n_dev) if self.strat == "vmap" else self.chunk
    self.padded_group = -(-self.group // (n_dev * unit)) * n_dev * unit
    if decisions is not None:
      compile_cache.store_executable(decisions, {"decisions": (
          self.group, self.memory, self.strat, self.chunk, self.padded_group)}, {})

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
                    ctx, jax.tree.map(take, params), self.key)

  def per_run(self, st, hp, d, iv):
    self.traces[0] += 1  # runs at trace time only: counts compilations
    return segment(self.tr, st, hp, d, iv)

  def _program(self, name: str, hps, lower: Callable[[], Any], *shaped_by,
               options: dict | None = None, pool=None,
               ahead: bool = False) -> Callable[[], tuple[Any, bool]]:
    """Starts the compiled program ``name`` (from the store, or ``lower()`` compiled on
    ``pool``); returns a function that waits for ``(program, loaded)``."""
    key = None if self.key is None else CK.digest(
        [self.key, name, jax.tree.map(_aval, dict(hps._asdict())), *shaped_by])
    return compile_cache.start_build(key, name, lower, options, pool, ahead)

  def _init_f(self):
    tr = self.tr
    # lax.map, not vmap: a vmapped threefry init takes seconds longer to compile.
    init_f = lambda hs, d: jax.lax.map(lambda h: setup(tr, h, d), hs)
    return shard_runs(init_f, 1, 1) if jax.device_count() > 1 else init_f

  def init_program(self, hps, data, pool=None,
                   ahead: bool = False) -> Callable[[], tuple[Any, bool]]:
    """Starts the compiled initialisation of a group's runs, ``init(hps, data) -> states``."""
    return self._program("init", hps, lambda: jax.jit(self._init_f()).lower(hps, data),
                         options=compile_cache.run_once_options(INIT_COMPILER_OPTIONS),
                         pool=pool, ahead=ahead)

  def start(self, hps, data, pool=None, ahead: bool = False) -> None:
    """Starts making ``(init, segment)`` for the bucket's groups (loaded from the store, or
    lowered here and compiled on ``pool``); :meth:`programs` waits for them."""
    if self._compiled is not None or self._pending is not None:
      return
    chunk = self.chunk
    if self.strat == "vmap":
      f = jax.vmap(self.per_run, in_axes=(0, 0, None, None))
    else:
      f = lambda st, hp, d, iv: jax.lax.map(lambda a: self.per_run(a[0], a[1], d, iv),
                                            (st, hp), batch_size=None if chunk == 1 else chunk)
    if jax.device_count() > 1:
      f = shard_runs(f, 2, 2)

    def lower_segment():
      st = jax.eval_shape(jax.jit(self._init_f()), hps, data)
      iv = place(np.zeros(self.K, np.int32), None)
      return jax.jit(f).lower(st, hps, data, iv)

    # The segment first: on a pool, the larger compilation starts first.
    seg = self._program("segment", hps, lower_segment, self.strat, chunk, self.K, pool=pool,
                        ahead=ahead)
    self._pending = (self.init_program(hps, data, pool, ahead), seg)

  def programs(self, hps, data):
    """Compiled ``(init, segment)`` for a group, built (or loaded) once per bucket."""
    if self._compiled is None:
      self.start(hps, data)
      (init, _), (seg, self.loaded) = self._pending[0](), self._pending[1]()
      self._compiled, self._pending = (init, seg), None
    return self._compiled


def records_per_segment(p: Plan, record_chunks: int) -> int:
  """``K``: the recording points one call of a bucket's compiled segment advances through."""
  return max(1, math.ceil(len(p.schedule) / max(1, record_chunks)))


def execute_plan(p: Plan, strategy: str, chunk_size: int | None,
                 progress: Callable[[int, int, str], None], record_chunks: int,
                 ck: CK.Checkpointer | None = None, memory_budget: float | None = None,
                 groups: list | None = None,
                 comps: dict[int, dict[str, Any]] | None = None) -> xr.Dataset:
  """Trains every run of a planned sweep; returns its results dataset.

  Args:
    p: the plan.
    strategy, chunk_size, record_chunks, memory_budget: as in :func:`jaxtheory.sweep.run`.
    progress: ``progress(steps_done, steps_total, info)``.
    ck: where to checkpoint and what was loaded on resume (``None``: no checkpoint).
    groups: a list that receives every group's final parameters (``None``: keep none).
    comps: ``_computations(p, data)`` when the caller has them already.
  """
  s = p.sweep
  data = data_arrays(s.data)
  intervals = np.diff(p.schedule, prepend=0).astype(np.int32)
  K = records_per_segment(p, record_chunks)
  if ck is not None and strategy == "loop":
    raise ConfigError("checkpointing needs a compiled strategy, not 'loop'")
  # The buckets' computations key the checkpoint and the stored executables.
  if comps is None:
    comps = (_computations(p, data) if ck is not None or (
        strategy != "loop" and compile_cache.executables_enabled()) else {})
  if ck is not None:
    ck.open(_fingerprint(p, strategy, chunk_size, K, data, memory_budget, comps))
  saved = ck.saved if ck is not None else None
  n_chunks = math.ceil(len(intervals) / K)
  intervals = np.concatenate([intervals, np.zeros(n_chunks * K - len(intervals), np.int32)])
  total_steps = int(s.steps) * len(p.index)
  job = Job(p, data, intervals, K, lambda done, info: progress(done, total_steps, info),
            groups=groups)
  info: dict[str, Any] = {"buckets": [], "strategy": [], "traces": 0, "loaded": 0,
                          "compile_s": 0.0,
                          "run_s": 0.0, "backend": jax.default_backend(),
                          "devices": jax.device_count(), "memory": 0.0}
  data_b = place(data, None)
  # Final params of finished units (their leaves), saved with every checkpoint of a sweep that
  # keeps them (``groups``), so that its resumption can return them without training those
  # runs again. A sweep that keeps none adds none (they are most of a checkpoint's bytes),
  # and carries on those a checkpoint already holds.
  finals: dict[int, Any] = dict(saved["finals"]) if saved is not None else {}
  buckets = [_Bucket(p, members, data, strategy, chunk_size, memory_budget, K,
                     comps.get(int(max(members)))) for members in p.buckets]
  job.report(job.done, f"compiling width<={buckets[0].cap}")
  t_c = time.perf_counter()
  try:
    start_compiling(buckets, saved["bucket"] if saved is not None else 0, data_b)
    lowering = time.perf_counter() - t_c  # counted as compilation, not training
    info["compile_s"] += lowering
    info["run_s"] += lowering
    _train_buckets(p, buckets, job, info, ck, saved, finals, groups, data_b, intervals, K,
                   n_chunks)
  except BaseException:
    compile_cache.cancel_queued()  # nothing left to compile for a run that stopped
    raise
  info["run_s"] -= info["compile_s"]
  info["peak"] = peak_memory()
  n_rec = len(p.schedule)
  metrics = {k: np.stack([job.metrics[r][k][:n_rec] for r in range(len(p.index))])
             for k in job.metrics[0]}
  return to_dataset(p, metrics, info)


def start_compiling(buckets: list[_Bucket], first_unit: int, data_b,
                    ahead: bool = False) -> None:
  """Starts compiling the programs of every bucket from memory group ``first_unit`` on, as
  many at a time as :func:`jaxtheory.compile_cache.compile_pool` has threads (XLA compiles
  a program on one core). With one thread, nothing starts: each bucket compiles when it is
  reached. ``ahead``: for a later run of the same sweep (the programs wait, by their
  executable-store keys, for the first run that asks for them)."""
  pool = compile_cache.compile_pool()
  if pool is None:
    return
  unit = 0
  for bk in buckets:
    n = -(-len(bk.runs) // bk.group)  # its memory groups, the checkpoint's units
    if bk.strat != "loop" and unit + n > first_unit:
      _, hps = next(bk.groups())
      bk.start(place(hps, "runs"), data_b, pool, ahead)
    unit += n


def _train_buckets(p: Plan, buckets: list[_Bucket], job: Job, info: dict[str, Any],
                   ck: CK.Checkpointer | None, saved, finals: dict[int, Any],
                   groups: list | None, data_b, intervals, K: int, n_chunks: int) -> None:
  """Trains the buckets in turn, memory group by memory group, checkpointing as it goes."""
  s = p.sweep
  unit = -1  # index of a (bucket, memory group): the checkpoint's unit of progress
  for bk in buckets:
    info["buckets"].append(sorted(bk.members))
    info["strategy"].append(f"{bk.strat}:{bk.chunk}" + (
        f"x{-(-len(bk.runs) // bk.group)}groups" if bk.group < len(bk.runs) else ""))
    info["memory"] = max(info["memory"], bk.memory or 0.0)
    t0 = time.perf_counter()
    for runs, hps in bk.groups():
      unit += 1
      if saved is not None and unit < saved["bucket"]:  # finished before the interruption
        if groups is not None:
          if unit not in finals:
            raise ConfigError("sweep.execute cannot return the parameters of runs that finished "
                              "before the interruption: the checkpoint keeps none (written by "
                              "sweep.run, by sweep.execute(params=False) or by an older "
                              "jaxtheory); resume it as it was written, or remove it to train "
                              "again")
          # Only shapes are needed to rebuild the params tree: trace init, no compile.
          like = jax.eval_shape(lambda h, d: jax.lax.map(lambda a: setup(bk.tr, a, d), h),
                                hps, data_b).params
          groups.append(bk.run_group(p, runs, hps, CK.restore_states(finals[unit], like)))
        job.metrics.update({int(r): saved["done"][int(r)] for r in runs})
        job.done += int(s.steps) * len(runs)
        continue
      if bk.strat == "loop":
        _run_loop(job, bk, runs, hps)
        continue
      hps = place(hps, "runs")
      t_c = time.perf_counter()
      job.report(job.done, f"compiling width<={bk.cap}")
      init, seg = bk.programs(hps, data_b)
      states = init(hps, data_b)
      info["compile_s"] += time.perf_counter() - t_c
      outs, start = [], 0
      if saved is not None and unit == saved["bucket"] and saved["chunk"] > 0:
        states = place(CK.restore_states(saved["leaves"], states), "runs")
        outs, start = list(saved["outs"]), saved["chunk"]
        job.done += int(intervals[:start * K].sum()) * len(runs)
      for c in range(start, n_chunks):
        iv = job.chunk(c)
        states, m = seg(states, hps, data_b, place(iv, None))
        outs.append(fetch(m))
        job.done += int(iv.sum()) * len(runs)
        job.report(job.done, f"width<={bk.cap}")
        if ck is not None and c + 1 < n_chunks and ck.due():
          ck.save(job.metrics, unit, c + 1, fetch(states), outs, finals)
      for j, r in enumerate(runs):
        job.metrics[int(r)] = {k: np.concatenate([o[k][j] for o in outs]) for k in outs[0]}
      if groups is not None:
        final = fetch(states.params)
        groups.append(bk.run_group(p, runs, hps, final))
        finals[unit] = jax.tree.leaves(final)
      if ck is not None:
        ck.save(job.metrics, unit + 1, 0, None, [], finals)
    info["run_s"] += time.perf_counter() - t0
    info["traces"] += bk.traces[0]
    info["loaded"] += bk.loaded


def _run_loop(job: Job, bk: _Bucket, runs, hps) -> None:
  """The baseline: a Python loop over separately jitted single runs."""
  if bk._compiled is None:
    hp0 = jax.tree.map(lambda a: a[0], hps)
    bk._compiled = (compile_init(lambda h, d: setup(bk.tr, h, d), hp0, job.data),
                    jax.jit(bk.per_run))
  init, seg = bk._compiled
  finals = []
  for j, r in enumerate(runs):
    hp = jax.tree.map(lambda a: a[j], hps)
    st, outs = init(hp, job.data), []
    for c in range(job.n_chunks):
      st, m = seg(st, hp, job.data, job.chunk(c))
      outs.append(fetch(m))
      job.done += int(job.chunk(c).sum())
      job.report(job.done, f"width<={bk.cap}")
    job.metrics[int(r)] = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    finals.append(fetch(st.params))
  if job.groups is not None:
    job.groups.append(bk.run_group(job.plan, runs, hps,
                                   jax.tree.map(lambda *a: np.stack(a), *finals)))
