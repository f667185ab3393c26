"""Sweep results as a labelled N-d dataset (xarray), saved as netCDF.

Dimensions are the grid's axes (``seed``, ``width``, then every swept
hyperparameter in grid order) and ``step``; every recorded metric is a data
variable; the sweep's configuration and execution facts are attributes.
``diverged`` flags, per record, a run frozen after a non-finite value (its
metrics keep their last finite values; its parameters, where kept, may be
non-finite: see :mod:`jaxtheory.train`) and ``diverged_step`` (per run, NaN
when it never diverged) the step where that happened.
Files are written atomically (an owned temporary file + rename, see
:mod:`jaxtheory.sweep.outdir`), so an interrupted or failed save never leaves
a half-written result nor damages the previous one.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import numpy as np
import xarray as xr

from jaxtheory.metric import as_metric
from jaxtheory.sweep import outdir


def to_dataset(plan, metrics: dict[str, np.ndarray], info: dict[str, Any]) -> xr.Dataset:
  """Scatters per-run metric traces ``[run, record]`` into the grid's N-d layout."""
  axes = list(plan.grid)
  shape = tuple(len(plan.grid[a]) for a in axes) + (len(plan.schedule),)
  data_vars = {}
  declared = {k: as_metric(f).dims for k, f in dict(plan.sweep.metrics).items()}
  for name, per_run in metrics.items():
    if name == "diverged_step":  # one value per run: its last record holds it
      arr = np.full(shape[:-1], np.nan)
      last = per_run[:, -1].astype(np.float64)
      arr[tuple(plan.index.T)] = np.where(last < 0, np.nan, last)
      data_vars[name] = (axes, arr)
      continue
    extra = per_run.shape[2:]
    arr = np.full(shape + extra, False if per_run.dtype == bool else np.nan,
                  dtype=bool if per_run.dtype == bool else np.float64)
    arr[tuple(plan.index.T)] = per_run
    data_vars[name] = (axes + ["step"] + metric_dims(name, declared.get(name, ()), len(extra)), arr)
  coords = plan.coords()
  coords["step"] = plan.schedule.astype(np.int64)
  s = plan.sweep
  attrs = {
      "name": s.name,
      "optimizer": plan.optimizer.name,
      "loss": plan.loss,
      "parametrization": ",".join(plan.labels.get("parametrization", [s.parametrization])),
      "steps": int(s.steps),
      "batch_size": -1 if s.batch_size is None else int(s.batch_size),
      "dataset": s.data.name,
      "dtype": s.dtype,
      "fixed_hparams": json.dumps(plan.fixed),
      "buckets": json.dumps(info["buckets"]),
      "strategy": json.dumps(info["strategy"]),
      "traces": int(info["traces"]),
      "programs_loaded": int(info["loaded"]),
      "compile_seconds": float(info["compile_s"]),
      "run_seconds": float(info["run_s"]),
      "backend": info["backend"],
      "devices": int(info["devices"]),
      "memory_estimate_bytes": float(info["memory"]),
      "peak_memory_bytes": float(info.get("peak", 0.0)),
  }
  return xr.Dataset(data_vars, coords, attrs)


def metric_dims(name: str, dims: tuple[str, ...], ndim: int) -> list[str]:
  """Names of a recorded metric's own axes: the ``dims`` it declares (see
  :class:`~jaxtheory.metric.Metric`), else ``<name>_0, <name>_1, ...`` (a
  metric may return any fixed-shape array)."""
  dims = list(dims or [f"{name}_{i}" for i in range(ndim)])
  if len(dims) != ndim:
    raise ValueError(f"metric {name!r} declares dims {tuple(dims)} but returns {ndim} axes")
  return dims


def to_grid(plan, runs, values, dims=()) -> xr.DataArray:
  """Per-run values (leading axis over ``runs``, flat run indices) laid out on the grid.

  ``values`` may cover a subset of the runs (e.g. one bucket); the others are NaN.
  """
  values = np.asarray(values)
  axes = list(plan.grid)
  extra = values.shape[1:]
  dims = list(dims) or [f"dim_{i}" for i in range(len(extra))]
  arr = np.full(tuple(len(plan.grid[a]) for a in axes) + extra, np.nan,
                np.result_type(values.dtype, np.float64))
  arr[tuple(plan.index[np.asarray(runs)].T)] = values
  return xr.DataArray(arr, plan.coords(), axes + dims)


def save(ds: xr.Dataset, path: str | os.PathLike) -> str:
  """Writes ``ds`` to ``path`` (netCDF4/HDF5 via h5netcdf) atomically.

  The file is encoded in memory, then written through an owned temporary
  file, so a full disk or a permission error is one :class:`OutputError`
  and the previous file at ``path`` stays intact.
  """
  path = os.fspath(path)
  data = ds.to_netcdf(engine="h5netcdf")
  return outdir.write_bytes(path, data, "results file")


def load(path: str | os.PathLike) -> xr.Dataset:
  """Opens a saved result fully into memory.

  Raises:
    OutputError: the file is missing, unreadable, truncated or not a netCDF file.
  """
  path = os.fspath(path)
  try:
    with open(path, "rb") as f:
      blob = f.read()
  except OSError as e:
    raise outdir.OutputError(f"cannot read the results file {path}: {outdir.reason(e)}") from None
  try:
    with xr.open_dataset(io.BytesIO(blob), engine="h5netcdf") as ds:
      return ds.load()
  except (OSError, ValueError, KeyError) as e:
    raise outdir.OutputError(f"the results file {path} is truncated or not a netCDF file "
                             f"({type(e).__name__}); run the sweep again to rewrite it") from None
