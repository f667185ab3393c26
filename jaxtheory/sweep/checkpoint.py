"""Checkpoints of a running sweep: atomic, fingerprinted, resumable.

A checkpoint is one ``.npz`` file holding the metrics of every finished run,
and for the bucket in progress its position (chunk index), the full state of
its runs (parameters, optimizer state, RNG, step, divergence flags) and the
metrics recorded so far. It is written to a temporary file, flushed to disk
and renamed over the old one, so a kill at any instant leaves either the old
or the new checkpoint, never a torn one. A fingerprint of everything that
shapes the computation (grid, schedule, hyperparameters, data, parameter
shapes, strategy, devices) guards against resuming a different sweep.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from typing import Any

import jax
import numpy as np

from jaxtheory.errors import CheckpointError


def fingerprint(parts: dict[str, Any]) -> str:
  """A stable hash of JSON-able parts (arrays are hashed by their bytes)."""

  def enc(o):
    if isinstance(o, np.ndarray):
      return {"shape": list(o.shape), "dtype": str(o.dtype),
              "sha": hashlib.sha256(np.ascontiguousarray(o).tobytes()).hexdigest()}
    if isinstance(o, (np.integer, np.floating)):
      return o.item()
    raise TypeError(type(o))

  return hashlib.sha256(json.dumps(parts, sort_keys=True, default=enc).encode()).hexdigest()


def save(path: str, fp: str, done: dict[int, dict[str, np.ndarray]], bucket: int,
         chunk: int, states: Any | None, outs: list[dict[str, np.ndarray]]) -> None:
  """Writes a checkpoint atomically (temporary file, fsync, rename)."""
  arrays: dict[str, np.ndarray] = {}
  runs = sorted(done)
  arrays["done_runs"] = np.asarray(runs, np.int64)
  names = sorted(done[runs[0]]) if runs else []
  for k in names:
    arrays[f"done/{k}"] = np.stack([done[r][k] for r in runs])
  leaves = [] if states is None else jax.tree.leaves(states)
  for i, leaf in enumerate(leaves):
    arrays[f"state/{i}"] = np.asarray(leaf)
  for c, out in enumerate(outs):
    for k, v in out.items():
      arrays[f"out/{c}/{k}"] = np.asarray(v)
  meta = dict(fingerprint=fp, bucket=bucket, chunk=chunk, n_state=len(leaves),
              n_out=len(outs), metrics=names)
  arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
  d = os.path.dirname(os.path.abspath(path))
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".npz.tmp", dir=d)
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def remove_stale_temporaries(path: str) -> None:
  """Deletes temporary files left by a save that was killed before its rename."""
  d = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(d):
    for name in os.listdir(d):
      if name.endswith(".npz.tmp"):
        os.remove(os.path.join(d, name))


def load(path: str, fp: str, state_like: Any | None = None) -> dict[str, Any]:
  """Reads a checkpoint written by :func:`save` for the sweep with fingerprint ``fp``.

  Raises:
    CheckpointError: the file is corrupt or truncated, or belongs to another sweep.
  """
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("meta").tobytes().decode())
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError,
          UnicodeDecodeError) as e:
    raise CheckpointError(
        f"the checkpoint {path} is corrupt or truncated ({type(e).__name__}); "
        "remove it to start the sweep over") from None
  if meta.get("fingerprint") != fp:
    raise CheckpointError(
        f"the checkpoint {path} belongs to a different sweep (its configuration, data or "
        "devices changed); use another output folder or remove it")
  done = {int(r): {k: arrays[f"done/{k}"][i] for k in meta["metrics"]}
          for i, r in enumerate(arrays["done_runs"])}
  outs = []
  for c in range(meta["n_out"]):
    prefix = f"out/{c}/"
    outs.append({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
  leaves = [arrays[f"state/{i}"] for i in range(meta["n_state"])]
  return dict(done=done, bucket=meta["bucket"], chunk=meta["chunk"], outs=outs,
              leaves=leaves)


def load_fingerprint(path: str) -> str:
  """The fingerprint stored in a checkpoint (for tools and tests)."""
  with np.load(path, allow_pickle=False) as z:
    return json.loads(z["meta"].tobytes().decode())["fingerprint"]


def restore_states(leaves, like):
  """Rebuilds the state pytree of ``like`` (e.g. ``jax.eval_shape`` output) from leaves."""
  treedef = jax.tree.structure(like)
  ref = jax.tree.leaves(like)
  if len(ref) != len(leaves) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(ref, leaves)):
    raise CheckpointError("the checkpoint's run states do not match this sweep; remove it")
  return jax.tree.unflatten(treedef, [np.asarray(l, r.dtype) for l, r in zip(leaves, ref)])
