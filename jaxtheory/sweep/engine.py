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
points between which the host reports progress. On CPU with several cores,
every bucket's programs start compiling before the first bucket trains, up
to 8 at a time (:func:`jaxtheory.compile_cache.compile_pool`).

The parts, one job each: :mod:`~jaxtheory.sweep.planning` (the checked
configuration, runs, buckets and their cost), :mod:`~jaxtheory.sweep.devices`
(sharding runs over devices, fetching results),
:mod:`~jaxtheory.sweep.loop` (the execution loop over buckets and memory
groups), :mod:`~jaxtheory.sweep.checkpoint` (saving, locking and resuming);
this module holds the entry points.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import jax
import xarray as xr

from jaxtheory import compile_cache
from jaxtheory.data import data_arrays
from jaxtheory.errors import ConfigError
from jaxtheory.progress import reporter
from jaxtheory.sweep import checkpoint as CK
from jaxtheory.sweep import guard
from jaxtheory.sweep.devices import fetch, place
from jaxtheory.sweep.loop import (RunGroup, _Bucket, _computations, execute_plan,
                                  records_per_segment, start_compiling)
from jaxtheory.sweep.planning import STRATEGIES, Plan, Sweep, choose_chunk, plan, _runs_per_width

__all__ = ["STRATEGIES", "Plan", "RunGroup", "Sweep", "SweepResult", "choose_chunk",
           "compile_ahead", "execute", "fetch", "initial_params", "plan", "run"]


def run(s: Sweep, *, strategy: str = "auto", chunk_size: int | None = None,
        progress: bool | Callable[[int, int, str], None] | None = None,
        record_chunks: int = 20, checkpoint: str | os.PathLike | None = None,
        resume: bool = False, checkpoint_interval: float = 60.0,
        memory_budget: float | None = None, **removed) -> xr.Dataset:
  """Trains every run of the sweep and returns the labelled results.

  :func:`execute` runs the same and also returns every run's final parameters.

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
      chunk boundary) and whenever a bucket finishes: the finished runs'
      metrics and the state of the unfinished ones (not the finished runs'
      parameters, which :func:`execute` keeps).
    resume: continue from ``checkpoint`` if it exists (finished buckets are
      not recomputed). Without ``resume`` an existing checkpoint is an error,
      never overwritten.
    checkpoint_interval: seconds between checkpoints (0: every chunk).
    memory_budget: bytes the sweep may hold. Each bucket's runs are split into
      groups that fit (one compiled program serves all of them); a run that
      cannot fit alone is a :class:`ConfigError`. ``None``: no limit.

  Returns:
    An ``xarray.Dataset`` with dims ``(seed, width, <other axes>, step)``.
  """
  if "return_params" in removed:
    raise ConfigError("sweep.run returns the dataset only; for the final parameters too, call "
                      "sweep.execute(s, ...), which returns SweepResult(dataset, groups)")
  if removed:
    raise TypeError(f"run() got an unexpected keyword argument {next(iter(removed))!r}")
  return execute(s, params=False, strategy=strategy, chunk_size=chunk_size, progress=progress,
                 record_chunks=record_chunks, checkpoint=checkpoint, resume=resume,
                 checkpoint_interval=checkpoint_interval, memory_budget=memory_budget).dataset


class SweepResult(NamedTuple):
  """What :func:`execute` returns: the results and the runs' final parameters.

  A named tuple, so ``ds, groups = sweep.execute(s)`` unpacks it.

  Attributes:
    dataset: the labelled results, as :func:`run` returns them.
    groups: every run's final parameters as a list of :class:`RunGroup` (one
      per bucket and memory group; for probes and kernels over the trained
      sweep, see :func:`jaxtheory.probes.over_runs`); ``None`` when
      :func:`execute` was called with ``params=False``.
  """
  dataset: xr.Dataset
  groups: list[RunGroup] | None


def execute(s: Sweep, *, params: bool = True, strategy: str = "auto",
            chunk_size: int | None = None,
            progress: bool | Callable[[int, int, str], None] | None = None,
            record_chunks: int = 20, checkpoint: str | os.PathLike | None = None,
            resume: bool = False, checkpoint_interval: float = 60.0,
            memory_budget: float | None = None) -> SweepResult:
  """Trains every run of the sweep; returns the results and the final parameters.

  Args:
    s: the sweep.
    params: keep every run's final parameters (``SweepResult.groups``; a diverged
      run's are those it froze with, possibly non-finite: :mod:`jaxtheory.train`);
      ``False`` keeps none (``groups`` is ``None``), as :func:`run` does.
      A checkpoint keeps the final parameters of finished runs only where
      they are kept (``params=True``), so that resuming it returns them
      without training again; one written with ``params=False`` (or by
      :func:`run`) keeps metrics and the state of unfinished runs, and
      resuming it here with ``params=True`` is an error once some runs
      finished before the interruption.
    strategy, chunk_size, progress, record_chunks, checkpoint, resume,
      checkpoint_interval, memory_budget: as in :func:`run`.

  Returns:
    A :class:`SweepResult` ``(dataset, groups)``.
  """
  guard.check_options(strategy, chunk_size, record_chunks, checkpoint_interval, memory_budget,
                      STRATEGIES)
  with CK.owned(checkpoint) as checkpoint, reporter(progress, s.name) as report:
    ahead = _STARTED.pop(id(s), None)  # (sweep, plan, computations) from compile_ahead
    p, comps = (ahead[1], ahead[2]) if ahead is not None and ahead[0] is s else (plan(s), None)
    guard.check_size(_runs_per_width(p.grid), p.state_bytes, len(p.schedule),
                     7 + len(s.metrics), memory_budget)
    est = guard.estimate(p)
    if est["flops"] > guard.LONG_PLAN_FLOPS:  # say what is coming before a long compile
      report(0, int(est["run_steps"]), f"compiling; planned {guard.describe(est)}")
    with jax.enable_x64(s.dtype == "float64"):
      ck = None if checkpoint is None else CK.Checkpointer(os.fspath(checkpoint), resume,
                                                  checkpoint_interval)
      groups = [] if params else None
      ds = execute_plan(p, strategy, chunk_size, report, record_chunks, ck, memory_budget, groups,
                        comps)
    report.close(ds)
  return SweepResult(ds, groups)


def compile_ahead(s: Sweep, *, strategy: str = "auto", chunk_size: int | None = None,
                  record_chunks: int = 20, memory_budget: float | None = None,
                  resume: bool = False, **run_options) -> None:
  """Starts compiling a sweep's programs on background threads.

  It plans the sweep and lowers its programs here (seconds for a large
  sweep) and returns while XLA compiles them. The first :func:`run` or
  :func:`execute` later in this process that needs one of these programs
  (the same sweep with the same options, or another with equal programs)
  takes it instead of compiling it. For sweeps
  run one after another (:func:`run_over` does this for its parts): their
  programs compile side by side, as many at a time as the process has CPU
  cores (XLA compiles a program on one core), while the first one trains.
  Within one sweep the engine already starts every width bucket's programs
  together. The programs, and so the results, are the same either way.

  Nothing starts on one core, off CPU, for ``strategy='loop'``, without
  the executable store (the programs are found by its keys; see
  :mod:`jaxtheory.compile_cache`), or to ``resume`` (a resumed sweep may
  have nothing left to compile).

  Args:
    s: the sweep.
    strategy, chunk_size, record_chunks, memory_budget, resume: as :func:`run` will get them.
    **run_options: :func:`run`'s other options (``progress``, ``checkpoint``,
      ``checkpoint_interval``), which do not change the programs: ignored.
  """
  unknown = set(run_options) - {"progress", "checkpoint", "checkpoint_interval"}
  if unknown:
    raise TypeError(f"compile_ahead() got an unexpected keyword argument {min(unknown)!r}")
  guard.check_options(strategy, chunk_size, record_chunks, 0.0, memory_budget, STRATEGIES)
  if (resume or strategy == "loop" or compile_cache.compile_pool() is None
      or not compile_cache.executables_enabled()):
    return
  p = plan(s)
  with jax.enable_x64(s.dtype == "float64"):
    data = data_arrays(s.data)
    comps = _computations(p, data)
    K = records_per_segment(p, record_chunks)
    buckets = [_Bucket(p, members, data, strategy, chunk_size, memory_budget, K,
                       comps.get(int(max(members)))) for members in p.buckets]
    start_compiling(buckets, 0, place(data, None), ahead=True)
  _STARTED[id(s)] = (s, p, comps)  # the run takes them: not planned or traced twice


# Sweeps compile_ahead has planned, by identity (the sweep is held, so its id stays its own),
# until their run takes the plan and computations.
_STARTED: dict[int, tuple[Sweep, Plan, dict]] = {}


def initial_params(s: Sweep, memory_budget: float | None = None, *,
                   planned: Plan | None = None) -> list[RunGroup]:
  """Every run's parameters at initialisation (no training), grouped as in :func:`run`.

  The same compiled initialisation as :func:`run`, so these are exactly the
  parameters a run of the sweep starts from. ``planned``: ``plan(s)``, when
  the caller has made it already.
  """
  p = plan(s) if planned is None else planned
  if p.sweep is not s:
    raise ConfigError("initial_params: planned must be the plan of this sweep, plan(s)")
  out = []
  with jax.enable_x64(s.dtype == "float64"):
    data = data_arrays(s.data)
    data_b = place(data, None)
    comps = _computations(p, data) if compile_cache.executables_enabled() else {}
    for members in p.buckets:
      bk = _Bucket(p, members, data, "vmap", None, memory_budget, 1,
                   comps.get(int(max(members))))
      init = None
      for runs, hps in bk.groups():
        if init is None:
          init = bk.init_program(hps, data_b)()[0]
        out.append(bk.run_group(p, runs, hps, fetch(init(hps, data_b).params)))
  return out

