"""Devices: the runs of a sweep split over every device (one mesh axis ``runs``), results fetched.

Runs never communicate, so a sharded sweep equals the single-device one; on
several hosts (``jax.distributed``) every process holds the same host values
and supplies the shards of its own devices.
"""

from __future__ import annotations

import jax
import numpy as np

def shard_runs(f, n_split: int, n_replicated: int):
  """``f`` applied per device to that device's share of the runs (leading axis).

  The first ``n_split`` arguments (states, hyperparameters) are split over a
  one-axis mesh of every device; the next ``n_replicated`` (data, intervals)
  are replicated.
  Runs never communicate, so the result equals the single-device one.
  """
  P = jax.sharding.PartitionSpec
  return jax.shard_map(f, mesh=mesh(), in_specs=(P("runs"),) * n_split + (P(),) * n_replicated,
                       out_specs=P("runs"), check_vma=False)


def mesh():
  return jax.make_mesh((jax.device_count(),), ("runs",), devices=jax.devices())


def place(tree, axis: str | None):
  """Puts arrays split over the runs mesh (``axis='runs'``) or replicated (``None``).

  Works across hosts (``jax.distributed``): every process holds the same host
  values and supplies the shards of its own devices.
  """
  if jax.device_count() == 1:
    return tree
  sharding = jax.sharding.NamedSharding(mesh(), jax.sharding.PartitionSpec(axis))

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



def peak_memory() -> float:
  """Peak memory so far: the devices' peak bytes in use where the backend reports
  it (GPU/TPU), else this process's peak resident set size (CPU)."""
  stats = [d.memory_stats() or {} for d in jax.local_devices()]
  peaks = [st.get("peak_bytes_in_use", 0) for st in stats]
  if any(peaks):
    return float(max(peaks))
  import resource  # pylint: disable=import-outside-toplevel
  return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)

