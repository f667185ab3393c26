"""Sweeps over a structural choice: one sweep per value, results joined along a new axis.

Depth, model family or data set change the *program*, not
just its inputs, so they cannot share one compiled sweep. :func:`run_over`
runs one :class:`~jaxtheory.sweep.Sweep` per value (each with its own
checkpoint file, so a killed job resumes where it stopped) and concatenates
the labelled results along a new dimension. With several CPU cores the
parts' programs start compiling together before the first part trains
(:func:`~jaxtheory.sweep.compile_ahead`), as many at a time as there are
cores; a resumed run compiles each part when it is reached.

>>> from jaxtheory import data, nn, sweep
>>> ds = data.teacher_student(n_train=8, n_test=8, input_dim=3)
>>> make = lambda depth: sweep.Sweep(lambda w: nn.mlp(ds.input_shape, w, depth, 1), ds,
...                                  dict(seed=[0], width=[4]), "sgd", dict(lr=0.1), steps=2)
>>> sweep.run_over("depth", [1, 2], make, progress=lambda *a: None).train_loss.dims
('depth', 'seed', 'width', 'step')
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import xarray as xr

from jaxtheory import compile_cache
from jaxtheory.progress import reporter
from jaxtheory.sweep.engine import Sweep, SweepResult, compile_ahead, execute, run
from jaxtheory.errors import ConfigError

_SECONDS = ("compile_seconds", "run_seconds")


def part_path(checkpoint: str | os.PathLike, dim: str, value: Any) -> str:
  """The checkpoint file of one part: ``x.npz`` -> ``x-<dim>-<value>.npz``."""
  root, ext = os.path.splitext(os.fspath(checkpoint))
  return f"{root}-{dim}-{value}{ext or '.npz'}"


def chain_progress(progress: Callable | None, k: int, parts: int) -> Callable | None:
  """Progress of part ``k`` of ``parts`` (each reporting its own total) as progress of the whole."""
  if progress is None:
    return None
  return lambda done, total, info="": progress(k * total + done, parts * total, info)


def run_over(dim: str, values: Sequence, make_sweep: Callable[[Any], Sweep], *,
             runner: Callable[..., Any] = run, progress: bool | Callable | None = None,
             checkpoint: str | os.PathLike | None = None,
             each: Callable[[xr.Dataset], xr.Dataset] | None = None, **engine) -> xr.Dataset:
  """Runs ``make_sweep(v)`` for every ``v`` in ``values``; joins the results along ``dim``.

  Args:
    dim: name of the new dimension (``'depth'``, ``'model'``, ...).
    values: its coordinate values (distinct).
    make_sweep: builds the sweep of one value.
    runner: what runs one sweep: :func:`jaxtheory.sweep.run` or anything with
      its signature returning a dataset (e.g. :func:`jaxtheory.limits.compare`).
    progress: one bar over all parts (``None``, ``True``, ``False`` as in
      :func:`jaxtheory.sweep.run`), or ``progress(steps_done, steps_total, info)``.
    checkpoint: a path ``x.npz``; part ``v`` checkpoints to ``x-<dim>-<v>.npz``
      (see :func:`part_path`), so ``resume=True`` skips finished parts.
    each: applied to every part's dataset before joining, e.g. to drop a
      one-value axis whose value differs between parts.
    **engine: the other options of ``runner``.

  Returns:
    The concatenated dataset (``dim`` first; variables a part lacks are NaN
    there), with ``compile_seconds`` / ``run_seconds`` summed over parts.
    :func:`execute_over` also returns the parts' final parameters.
  """
  runner_ = lambda s, **o: SweepResult(runner(s, **o), None)
  return _over(dim, values, make_sweep, runner_, progress, checkpoint, each, engine,
               ahead=runner is run).dataset


def execute_over(dim: str, values: Sequence, make_sweep: Callable[[Any], Sweep], *,
                 params: bool = True, progress: bool | Callable | None = None,
                 checkpoint: str | os.PathLike | None = None,
                 each: Callable[[xr.Dataset], xr.Dataset] | None = None,
                 **engine) -> SweepResult:
  """:func:`run_over` with :func:`jaxtheory.sweep.execute` per part: results and parameters.

  Args:
    dim, values, make_sweep, progress, checkpoint, each: as in :func:`run_over`.
    params: keep the final parameters (else ``groups`` is ``None``).
    **engine: the other options of :func:`jaxtheory.sweep.execute`.

  Returns:
    A :class:`~jaxtheory.sweep.SweepResult` whose ``dataset`` is
    :func:`run_over`'s and whose ``groups`` are ``{value: groups of that part}``.
  """
  runner = lambda s, **o: execute(s, params=params, **o)
  out = _over(dim, values, make_sweep, runner, progress, checkpoint, each, engine, ahead=True)
  return out if params else SweepResult(out.dataset, None)


def _over(dim, values, make_sweep, runner, progress, checkpoint, each, engine,
          ahead: bool = False) -> SweepResult:
  values = list(values)
  if not values:
    raise ConfigError(f"run_over: no values for {dim!r}")
  if len({repr(v) for v in values}) != len(values):
    raise ConfigError(f"run_over: the values of {dim!r} repeat: {values!r}")
  parts, groups = [], {}
  sweeps = {}
  if (ahead and len(values) > 1 and not engine.get("resume")
      and compile_cache.compile_pool() is not None and compile_cache.executables_enabled()):
    sweeps = {repr(v): make_sweep(v) for v in values}
    for s in sweeps.values():
      compile_ahead(s, **engine)
  with reporter(progress, f"sweep over {dim}") as report:
    try:
      for k, v in enumerate(values):
        part_report = lambda d, t, info="", v=v: report(d, t, f"{info} ({dim}={v})".lstrip())
        opts = dict(engine, progress=chain_progress(part_report, k, len(values)))
        if checkpoint is not None:
          opts["checkpoint"] = part_path(checkpoint, dim, v)
        s = sweeps[repr(v)] if sweeps else make_sweep(v)
        part, groups[v] = runner(s, **opts)
        parts.append(part if each is None else each(part))
    except BaseException:
      compile_cache.cancel_queued()  # the later parts' programs started ahead
      raise
    res = xr.concat(parts, dim=xr.DataArray(values, dims=dim, name=dim), join="outer",
                    data_vars="all", coords="minimal", compat="override",
                    combine_attrs="override")
    for key in _SECONDS:
      if all(key in p.attrs for p in parts):
        res.attrs[key] = float(sum(float(p.attrs[key]) for p in parts))
    report.close(res)
  return SweepResult(res, groups)
