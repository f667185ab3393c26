"""Checks of a sweep before anything compiles, and the fingerprint of what computes it.

* :func:`check_hparams`: every hyperparameter value (fixed or swept) is a
  finite real number inside its domain (learning rates and weight decay
  ``>= 0``, momenta in ``[0, 1]``, ``gamma > 0``, ...).
* :func:`check_options`: the execution options of :func:`jaxtheory.sweep.run`.
* :func:`check_size`: a memory estimate from parameter shapes alone (no
  compilation), refusing with the numbers a sweep that cannot fit: one run
  too large for the machine, or all runs' states and results together.
* :func:`computation`: hashes of the jaxprs of the model (init and apply),
  the optimizer (init and update) and every metric function at a bucket's
  capacity, for the checkpoint fingerprint: they change with anything that
  changes what is computed (activation, ``W_std``, an optimizer's closed-over
  constants, a metric's body), not only with shapes.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jaxtheory.sweep import checkpoint as CK
from jaxtheory.errors import ConfigError
from jaxtheory.train import Trainer, init_params, trainable

# Domains of the hyperparameters jaxtheory knows; any other must be finite.
_NON_NEGATIVE = ("lr", "adam_lr", "weight_decay", "rho", "eps", "init_scale")
_UNIT = ("momentum", "b1", "b2", "beta", "label_noise")
_POSITIVE = ("gamma",)


def check_hparams(values: Mapping[str, Any]) -> None:
  """Checks ``name -> value or values`` of hyperparameters (fixed or swept).

  Raises:
    ConfigError: a value that is not a real number, not finite, or outside
      its domain, naming the hyperparameter and the value.
  """
  for name, v in values.items():
    vals = [v] if np.isscalar(v) or getattr(v, "ndim", 1) == 0 else list(np.ravel(v))
    for x in vals:
      if isinstance(x, (bool, np.bool_, str, bytes)) or not isinstance(x, (int, float, np.number)):
        raise ConfigError(f"hyperparameter {name} must be a number, got {x!r}")
      if not math.isfinite(float(x)):
        raise ConfigError(f"hyperparameter {name} must be finite, got {x!r}")
      x = float(x)
      if (name in _NON_NEGATIVE or name.endswith("_lr")) and x < 0:
        raise ConfigError(f"hyperparameter {name} must be >= 0, got {x:g}")
      if name in _UNIT and not 0 <= x <= 1:
        raise ConfigError(f"hyperparameter {name} must lie in [0, 1], got {x:g}")
      if name in _POSITIVE and x <= 0:
        raise ConfigError(f"hyperparameter {name} must be > 0, got {x:g}")


def _positive_int(name: str, v, allow_none: bool = False) -> None:
  if v is None and allow_none:
    return
  if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
    raise ConfigError(f"{name} must be a positive integer{' or None' if allow_none else ''}, "
                      f"got {v!r}")


def _finite(name: str, v, lower: float, strict: bool, allow_none: bool = False) -> None:
  if v is None and allow_none:
    return
  ok = not isinstance(v, bool) and isinstance(v, (int, float, np.number))
  if ok:
    ok = math.isfinite(float(v)) and (float(v) > lower if strict else float(v) >= lower)
  if not ok:
    rel = ">" if strict else ">="
    raise ConfigError(f"{name} must be a finite number {rel} {lower:g}"
                      f"{' or None' if allow_none else ''}, got {v!r}")


def check_options(strategy, chunk_size, record_chunks, checkpoint_interval, memory_budget,
                  strategies) -> None:
  """Checks the execution options of :func:`jaxtheory.sweep.run` (one sentence each)."""
  if strategy not in strategies:
    raise ConfigError(f"unknown strategy {strategy!r}; available: {', '.join(strategies)}")
  _positive_int("chunk_size", chunk_size, allow_none=True)
  _positive_int("record_chunks", record_chunks)
  _finite("checkpoint_interval", checkpoint_interval, 0.0, strict=False)
  _finite("memory_budget", memory_budget, 0.0, strict=True, allow_none=True)


def available_memory() -> tuple[float, str]:
  """``(bytes, where)``: the smaller of host RAM and the first device's memory limit."""
  try:
    host = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
  except (ValueError, OSError, AttributeError):
    host = math.inf
  best, where = host, "this machine's memory"
  try:
    dev = float((jax.local_devices()[0].memory_stats() or {}).get("bytes_limit", 0))
  except Exception:  # memory statistics are best-effort across backends
    dev = 0.0
  if 0 < dev < best:
    best, where = dev, f"the {jax.default_backend()} device's memory"
  return best, where


def _gib(b: float) -> str:
  return f"{b / 2**30:.3g} GiB" if b >= 2**27 else f"{b / 2**20:.3g} MiB"


def run_state_bytes(shapes: Any, optimizer, fixed: Mapping[str, float], itemsize: int,
                    params0: bool = False) -> tuple[int, float]:
  """``(parameters, bytes)`` of one run's state: parameters, gradients, optimizer state.

  From the parameter ``shapes`` alone (the optimizer state by
  ``jax.eval_shape``): nothing is allocated or compiled. ``params0``: the
  state also keeps the initial parameters (a metric declares them).
  """
  n = int(sum(math.prod(x.shape) for x in jax.tree.leaves(shapes)))
  try:
    kw = {k: v for k, v in fixed.items() if k in optimizer.hyper_names}
    opt = jax.eval_shape(optimizer.make(**kw).init, shapes)
    slots = sum(math.prod(x.shape) for x in jax.tree.leaves(opt)) / max(n, 1)
  except Exception:  # an optimizer that cannot be built from its defaults alone
    slots = 2.0
  return n, float(n * itemsize * (3 + slots + bool(params0)))


def check_size(runs_per_width: Mapping[int, int], per_run: Mapping[int, tuple[int, float]],
               records: int, metrics: int, memory_budget: float | None = None) -> float:
  """Refuses a sweep that cannot fit in memory; returns the estimated bytes.

  Args:
    runs_per_width: how many runs train at each width.
    per_run: ``width -> (parameters, state bytes)`` of one run (:func:`run_state_bytes`).
    records: recorded steps per run; ``metrics``: recorded metrics per step.
    memory_budget: bytes the run may hold at once (``None``: every run of a
      bucket is held at once, the engine's default).

  Raises:
    ConfigError: the estimate exceeds the memory of this machine, with the numbers.
  """
  avail, where = available_memory()
  w_max = max(per_run, key=lambda w: per_run[w][1])
  n_max, one = per_run[w_max]
  if one > avail:
    raise ConfigError(
        f"one run of width {w_max} has {n_max:,} parameters and needs at least {_gib(one)} "
        f"for them, their gradients and the optimizer state, more than {where} "
        f"({_gib(avail)}); use smaller widths")
  runs = int(sum(runs_per_width.values()))
  results = float(runs) * records * max(metrics, 1) * 8
  states = one if memory_budget is not None else float(
      sum(runs_per_width[w] * per_run[w][1] for w in runs_per_width))
  if results + states > avail:
    raise ConfigError(
        f"the sweep of {runs:,} runs needs at least {_gib(states)} for their states and "
        f"{_gib(results)} for their recorded metrics, more than {where} ({_gib(avail)}); "
        "sweep fewer values" + ("" if memory_budget is not None else
                                 " or pass a memory budget to train in groups"))
  return results + states


def estimate(p) -> dict[str, float]:
  """What a :class:`~jaxtheory.sweep.Plan` will do: runs, run-steps, FLOPs, state bytes.

  FLOPs are XLA's forward cost of one example at each bucket's capacity
  (``p.cost``) times 3 for a training step over a batch, plus one forward pass
  over the training and test sets per recorded step.
  """
  s = p.sweep
  n_tr, n_te = s.data.x_train.shape[0], s.data.x_test.shape[0]
  batch = s.batch_size or n_tr
  flops, states = 0.0, 0.0
  for members in p.buckets:
    cap = max(members)
    runs = int(np.isin(p.flat["width"], members).sum())
    flops += runs * p.cost[cap] * (3.0 * batch * s.steps + len(p.schedule) * (n_tr + n_te))
    states += runs * p.state_bytes.get(cap, (0, 0.0))[1]
  return dict(runs=float(len(p.index)), run_steps=float(len(p.index)) * s.steps, flops=flops,
              state_bytes=states)


def describe(est: Mapping[str, float]) -> str:
  """One line for a plan's :func:`estimate`."""
  return (f"{est['runs']:,.0f} runs, {est['run_steps']:,.0f} run-steps, about "
          f"{est['flops']:.2g} FLOP, {_gib(est['state_bytes'])} of run states")


# A plan above this many FLOPs (minutes on a CPU) shows its estimate before compiling.
LONG_PLAN_FLOPS = 1e13


def _key_safe(c):
  if jax.dtypes.issubdtype(getattr(c, "dtype", np.float32), jax.dtypes.prng_key):
    c = jax.random.key_data(c)
  return np.asarray(c)


def _jaxpr(fn: Callable, *args) -> dict[str, Any]:
  """The printed jaxpr of ``fn(*args)`` and its constants (memory addresses removed)."""
  closed = jax.make_jaxpr(fn)(*args)
  text = re.sub(r" at 0x[0-9a-fA-F]+", "", str(closed.jaxpr))
  return {"jaxpr": text, "consts": [_key_safe(c) for c in closed.consts]}


def computation(tr: Trainer, hp1: Mapping[str, jax.Array], data: Mapping[str, jax.Array]
                ) -> dict[str, dict[str, Any]]:
  """Jaxprs of what one run computes: ``{'model': ..., 'optimizer': ..., "metric 'm'": ...}``.

  Traced only (``jax.make_jaxpr``), never compiled; the values of traced
  hyperparameters are not in them (the fingerprint holds those separately),
  constants closed over by the functions are.
  """
  key = jax.random.key(0)
  init = lambda k, hp: init_params(tr, k, tr.ctx(hp))  # with the learning-rate multipliers
  params = jax.eval_shape(init, key, hp1)[0]
  out = {"model": [_jaxpr(init, key, hp1),
                   _jaxpr(lambda p, hp, x: tr.apply(p, x, hp), params, hp1, data["x_train"])]}
  if tr.model.train_mode is not None:
    out["model"].append(_jaxpr(lambda p, hp, x: tr.model.train_apply(p, x, key, tr.ctx(hp)),
                               params, hp1, data["x_train"]))

  def opt(p, hp):
    tx = tr.tx(hp)
    state = tx.init(p)
    return tx.update(p, state, p, grad_fn=lambda q, _: q)

  out["optimizer"] = [tr.optimizer.name, tr.optimizer.family,
                      _jaxpr(opt, trainable(tr.model, params), hp1)]
  d = dict(data, w_train=jax.numpy.ones(data["y_train"].shape[:1]))

  def metric(fn, p, hp, d):  # as train.measure calls it: the state bound into the model
    t, m = tr.model.bind_state(p)
    return fn(t, lambda q, x: m.apply(q, x, tr.ctx(hp)), d, ctx=tr.ctx(hp), model=m, params0=p)

  for name, fn in tr.metrics:
    out[f"metric {name!r}"] = _jaxpr(lambda p, hp, d, fn=fn: metric(fn, p, hp, d), params, hp1, d)
  return out


def fingerprint(general: Mapping[str, Any], per_bucket: Mapping[int, dict[str, Any]]
                ) -> dict[str, str]:
  """Part-by-part fingerprint: the ``general`` parts plus each computation part over buckets."""
  parts = dict(general)
  names = sorted({n for comp in per_bucket.values() for n in comp})
  for n in names:
    label = ("the model's computation (init/apply)" if n == "model" else
             "the optimizer's computation" if n == "optimizer" else f"the computation of {n}")
    parts[label] = {str(cap): comp.get(n) for cap, comp in per_bucket.items()}
  return CK.fingerprint(parts)
