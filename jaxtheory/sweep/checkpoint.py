"""Checkpoints of a running sweep: atomic, fingerprinted, resumable.

A checkpoint is one ``.npz`` file holding the metrics of every finished run,
and for the bucket in progress its position (chunk index), the full state of
its runs (parameters, optimizer state, RNG, step, divergence flags) and the
metrics recorded so far. It is written to a temporary file, flushed to disk
and renamed over the old one, so a kill at any instant leaves either the old
or the new checkpoint, never a torn one. A fingerprint of everything that
determines the result (grid, schedule, hyperparameters, data content, the
jaxprs of the model, optimizer and metric functions, strategy, devices) is
stored part by part, so resuming a different sweep is refused with the parts
that changed named.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import zipfile
from typing import Any

import jax
import numpy as np

from jaxtheory.errors import CheckpointError
from jaxtheory.sweep import outdir


def digest(o: Any) -> str:
  """A stable sha256 of the JSON-able ``o`` (arrays hashed by their bytes)."""
  def enc(o):
    if isinstance(o, np.ndarray):
      return {"shape": list(o.shape), "dtype": str(o.dtype),
              "sha": hashlib.sha256(np.ascontiguousarray(o).tobytes()).hexdigest()}
    if isinstance(o, (np.integer, np.floating, np.bool_)):
      return o.item()
    raise TypeError(type(o))

  return hashlib.sha256(json.dumps(o, sort_keys=True, default=enc).encode()).hexdigest()


def fingerprint(parts: dict[str, Any]) -> dict[str, str]:
  """A stable hash of each of the JSON-able ``parts`` (arrays are hashed by their bytes).

  The keys name the parts in words (``'the model'``, ``"metric 'acc'"``), so
  a mismatch can say what changed.
  """
  return {name: digest(part) for name, part in parts.items()}


def changed(old: dict[str, str] | str, new: dict[str, str]) -> list[str]:
  """The names of the parts that differ between two fingerprints."""
  if not isinstance(old, dict):  # a checkpoint of an older jaxtheory: one opaque hash
    return ["the jaxtheory version that wrote it"]
  return [k for k in list(new) + [k for k in old if k not in new] if old.get(k) != new.get(k)]


def save(path: str, fp: dict[str, str], done: dict[int, dict[str, np.ndarray]], bucket: int,
         chunk: int, states: Any | None, outs: list[dict[str, np.ndarray]],
         finals: dict[int, Any] | None = None) -> None:
  """Writes a checkpoint atomically (owned temporary file, fsync, rename).

  ``finals`` maps a finished unit (bucket and memory group) to its runs' final
  parameters, so that a resumed sweep can return them (``return_params``)
  without training those runs again.

  Raises:
    OutputError: the file cannot be written (e.g. the disk is full); the
      previous checkpoint is left intact.
  """
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
  final_leaves = {}
  for unit, params in (finals or {}).items():
    final_leaves[int(unit)] = jax.tree.leaves(params)
    for i, leaf in enumerate(final_leaves[int(unit)]):
      arrays[f"final/{int(unit)}/{i}"] = np.asarray(leaf)
  meta = dict(fingerprint=fp, bucket=bucket, chunk=chunk, n_state=len(leaves),
              n_out=len(outs), metrics=names,
              finals=[[u, len(v)] for u, v in sorted(final_leaves.items())])
  arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
  outdir.write_atomic(path, lambda f: np.savez(f, **arrays), "checkpoint")


def remove_stale_temporaries(path: str) -> list[str]:
  """Deletes temporaries that dead processes left next to ``path`` (never a live one's)."""
  return outdir.sweep_stale(os.path.dirname(os.path.abspath(path)))


def _read(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """``(meta, arrays)`` of a checkpoint file, or a one-sentence CheckpointError."""
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except OSError as e:
    if e.errno is not None:
      raise CheckpointError(f"cannot read the checkpoint {path}: {outdir.reason(e)}") from None
    raise CheckpointError(f"the checkpoint {path} is corrupt or truncated (OSError); "
                          "remove it to start the sweep over") from None
  except (ValueError, EOFError, zipfile.BadZipFile) as e:
    raise CheckpointError(
        f"the checkpoint {path} is corrupt or truncated ({type(e).__name__}); "
        "remove it to start the sweep over") from None
  try:
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    for k in ("fingerprint", "bucket", "chunk", "n_state", "n_out", "metrics"):
      meta[k]  # pylint: disable=pointless-statement
  except (KeyError, ValueError, TypeError, UnicodeDecodeError):
    raise CheckpointError(f"{path} is not a jaxtheory sweep checkpoint (it lacks the sweep's "
                          "metadata); remove it or choose another output") from None
  return meta, arrays


def load(path: str, fp: dict[str, str], state_like: Any | None = None) -> dict[str, Any]:
  """Reads a checkpoint written by :func:`save` for the sweep with fingerprint ``fp``.

  Raises:
    CheckpointError: the file is unreadable, corrupt or truncated, not a
      checkpoint, or belongs to another sweep (naming what changed).
  """
  del state_like
  meta, arrays = _read(path)
  diff = changed(meta["fingerprint"], fp)
  if diff:
    raise CheckpointError(
        f"the checkpoint {path} belongs to a different sweep ({', '.join(diff)} changed); "
        "resume with the settings it was started with, or use another output folder")
  try:
    done = {int(r): {k: arrays[f"done/{k}"][i] for k in meta["metrics"]}
            for i, r in enumerate(arrays["done_runs"])}
    outs = []
    for c in range(meta["n_out"]):
      prefix = f"out/{c}/"
      outs.append({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
    leaves = [arrays[f"state/{i}"] for i in range(meta["n_state"])]
    # Checkpoints written before final parameters were kept have no "finals".
    finals = {int(u): [arrays[f"final/{u}/{i}"] for i in range(n)]
              for u, n in meta.get("finals", [])}
  except (KeyError, IndexError, TypeError, ValueError):
    raise CheckpointError(f"the checkpoint {path} is incomplete (arrays are missing); "
                          "remove it to start the sweep over") from None
  return dict(done=done, bucket=meta["bucket"], chunk=meta["chunk"], outs=outs,
              leaves=leaves, finals=finals)


def load_fingerprint(path: str) -> dict[str, str]:
  """The fingerprint stored in a checkpoint (for tools and tests)."""
  return _read(path)[0]["fingerprint"]


def restore_states(leaves, like):
  """Rebuilds the state pytree of ``like`` (e.g. ``jax.eval_shape`` output) from leaves."""
  treedef = jax.tree.structure(like)
  ref = jax.tree.leaves(like)
  if len(ref) != len(leaves) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(ref, leaves)):
    raise CheckpointError("the checkpoint's run states do not match this sweep; remove it")
  return jax.tree.unflatten(treedef, [np.asarray(l, r.dtype) for l, r in zip(leaves, ref)])


@contextlib.contextmanager
def owned(checkpoint):
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


class Checkpointer:
  """Where and how often to checkpoint; what was loaded on resume."""

  def __init__(self, path, resume, interval):
    self.path, self.resume, self.interval = path, resume, float(interval)
    self.saved, self.fp, self.last = None, None, time.perf_counter()

  def open(self, fp):
    self.fp = fp
    remove_stale_temporaries(self.path)
    if os.path.exists(self.path):
      if not self.resume:
        raise CheckpointError(
            f"a checkpoint already exists at {self.path}; resume it or remove it")
      self.saved = load(self.path, fp)

  def due(self):
    due = time.perf_counter() - self.last >= self.interval
    if jax.process_count() > 1:  # every process must agree (saving gathers states)
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      due = bool(multihost_utils.broadcast_one_to_all(np.asarray(due)))
    return due

  def save(self, *args):
    if jax.process_index() == 0:  # one writer; every process holds the same values
      save(self.path, self.fp, *args)
    self.last = time.perf_counter()

