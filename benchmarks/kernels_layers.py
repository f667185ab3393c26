"""Analytic kernels of NT's newer layers and ``nt.batch``, ours against neural-tangents 0.6.5.

The same networks are built from each side's ``stax`` (ours: ``jaxtheory.stax``
on current JAX; NT's: the pinned side environment of ``benchmarks/nt_oracle``,
built by its ``setup_env.sh``) and timed in fresh subprocesses, float32, CPU,
compile excluded (median of repeated calls; the first call is reported apart).
Memory is reported twice:

* ``work MiB``: the computation's own working memory, the most that resident
  memory rises above its level before a call while the call runs (sampled
  every 0.2 ms from ``/proc/self/statm`` over 3 calls, in a process of its
  own, not the timed one: there large buffers go back to the system when
  freed, ``MALLOC_MMAP_THRESHOLD_=65536``, so each call starts from the same
  level). This is what bounds the problem size.
* ``peak MiB``: the growth of peak RSS over a baseline taken after the inputs
  exist; it includes compiling, and so the compiler's own memory, which differs
  between the two JAX versions more than between the two libraries.

* ``attention``: 1x1 conv (64) -> ``GlobalSelfAttention`` (softmax, linear
  scaling, SUM positional embeddings) -> ReLU -> global average pool -> dense,
  on 48 sequences of length 24;
* ``conv_transpose``: two strided ``ConvTranspose`` (64, 3x3, stride 2, SAME)
  with ReLU, global average pool, dense, on 12 images 4x4x3;
* ``dropout``: dense (512) -> ReLU -> ``Dropout(0.8)`` -> dense, on 1000 x 64;
* ``aggregate``: dense (128) -> ``Aggregate`` over a random graph of 24
  vertices -> ReLU -> dense on the vertices, on 64 graphs;
* ``batch``: ``nt.batch(kernel_fn, batch_size=25)`` of the conv net of
  ``benchmarks/kernels.py`` (two 64-channel 3x3 SAME convs, global average
  pooling) on 100 images 8x8x3: x1 against itself in 16 blocks.

Every network's NNGP and NTK, x1 against itself. Prints a table and, per
network, NT's time over ours (the median of ``--rounds`` alternating rounds,
and the range of the per-round ratios: a ratio whose range straddles 1 is
inside the noise) and NT's working memory over ours.

    python benchmarks/kernels_layers.py [--quick] [--rounds 3] [--cases attention batch]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NT_PY = os.path.join(HERE, "nt_oracle", ".venv", "bin", "python")
CASES = ("attention", "conv_transpose", "dropout", "aggregate", "batch")


def build(case, stax):
  """``(kernel_fn, x1, kwargs)`` of one benchmark network, from either side's ``stax``."""
  import numpy as np
  rng = np.random.default_rng(0)
  f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
  if case == "attention":
    net = stax.serial(
        stax.Conv(64, (1,), padding="SAME"),
        stax.GlobalSelfAttention(64, 64, 16, 4, linear_scaling=True,
                                 attention_mechanism="SOFTMAX", pos_emb_type="SUM",
                                 b_std=0.1),
        stax.Relu(), stax.GlobalAvgPool(), stax.Dense(1))
    return net[2], f32(48, 24, 8), {}
  if case == "conv_transpose":
    net = stax.serial(
        stax.ConvTranspose(64, (3, 3), (2, 2), "SAME", W_std=1.3, b_std=0.05), stax.Relu(),
        stax.ConvTranspose(64, (3, 3), (2, 2), "SAME", W_std=1.3, b_std=0.05), stax.Relu(),
        stax.GlobalAvgPool(), stax.Dense(1))
    return net[2], f32(12, 4, 4, 3), {}
  if case == "dropout":
    net = stax.serial(stax.Dense(512, 1.0, 0.05), stax.Relu(), stax.Dropout(0.8),
                      stax.Dense(1, 1.0, 0.05))
    return net[2], f32(1000, 64), {}
  if case == "aggregate":
    n, v = 64, 24
    pattern = (rng.random((n, v, v)) < 0.3).astype(np.float32)
    net = stax.serial(stax.Dense(128, 1.0, 0.05), stax.Aggregate(), stax.Relu(),
                      stax.Dense(1, 1.0, 0.05))
    return net[2], f32(n, v, 4), {"pattern": (pattern, pattern)}
  if case == "batch":
    net = stax.serial(stax.Conv(64, (3, 3), padding="SAME", W_std=1.0, b_std=0.05), stax.Relu(),
                      stax.Conv(64, (3, 3), padding="SAME", W_std=1.0, b_std=0.05), stax.Relu(),
                      stax.GlobalAvgPool(), stax.Dense(10, 1.0, 0.05))
    return net[2], f32(100, 8, 8, 3), {}
  raise KeyError(case)


def _peak_mib():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mib():
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _RssSampler:
  """The highest resident memory seen while the ``with`` block runs (a polling thread)."""

  def __enter__(self):
    import threading
    self.high, self._stop = _rss_mib(), threading.Event()

    def poll():
      while not self._stop.is_set():
        self.high = max(self.high, _rss_mib())
        time.sleep(2e-4)

    self._thread = threading.Thread(target=poll, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.high = max(self.high, _rss_mib())


def worker(side, case, repeats, mode):
  """Times one network on one side (``mode='time'``) or samples its memory (``'memory'``);
  prints one JSON line."""
  import jax
  import numpy as np
  if side == "nt":
    sys.path.insert(0, os.path.join(HERE, "nt_oracle"))
    import nt_import
    nt = nt_import.load()
  else:
    sys.path.insert(0, ROOT)
    from jaxtheory import nt
  kernel_fn, x1, kw = build(case, nt.stax)
  x1 = jax.device_put(x1)
  get = ("nngp", "ntk")
  if case == "batch":
    fn = nt.batch(kernel_fn, batch_size=25)
    call = lambda: fn(x1, None, get)
  else:
    jitted = jax.jit(lambda x, kw: kernel_fn(x, None, get, **kw))
    call = lambda: jitted(x1, kw)
  base = _peak_mib()
  t0 = time.perf_counter()
  jax.block_until_ready(call())
  first = time.perf_counter() - t0
  times, work = [], []
  for _ in range(repeats):
    out = None
    if mode == "time":  # no sampling thread here: it would compete for the cores
      t0 = time.perf_counter()
      out = jax.block_until_ready(call())
      times.append(time.perf_counter() - t0)
      continue
    gc.collect()
    before = _rss_mib()
    with _RssSampler() as rss:
      out = jax.block_until_ready(call())
    work.append(rss.high - before)
  print(json.dumps({"seconds": statistics.median(times) if times else None,
                    "first_call_s": first, "peak_mib": _peak_mib() - base,
                    "work_mib": max(work) if work else None,
                    "checksum": [float(np.asarray(a, np.float64).sum()) for a in
                                 jax.tree_util.tree_leaves(out)]}))


def measure(side, case, repeats, memory: bool = True):
  """Fresh processes: one times the calls and, with ``memory``, one samples their memory (with
  large buffers returned to the system when freed, which would change the timing)."""
  py = NT_PY if side == "nt" else sys.executable
  out = {}
  modes = (("time", {}), ("memory", {"MALLOC_MMAP_THRESHOLD_": "65536"}))
  for mode, extra in modes if memory else modes[:1]:
    cmd = [py, "-W", "ignore", os.path.abspath(__file__), "--worker", side, case,
           "--repeats", str(repeats if mode == "time" else 3), "--mode", mode]
    env = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode or not lines:
      return {"error": (r.stderr or r.stdout).strip().splitlines()[-1:] or ["?"]}
    rec = json.loads(lines[-1])
    if mode == "time":
      out = rec
    else:
      out["work_mib"] = rec["work_mib"]
  return out


def _median_round(recs):
  """The round with the median time; an error if any failed."""
  bad = [r for r in recs if "error" in r]
  if bad:
    return bad[0]
  return sorted(recs, key=lambda r: r["seconds"])[len(recs) // 2]


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="3 timed repeats instead of 7")
  p.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES)
  p.add_argument("--worker", nargs=2, metavar=("SIDE", "CASE"), help=argparse.SUPPRESS)
  p.add_argument("--repeats", type=int, default=7)
  p.add_argument("--rounds", type=int, default=3,
                 help="alternating rounds of fresh processes per side (median reported)")
  p.add_argument("--mode", default="time", choices=("time", "memory"), help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:
    worker(*args.worker, args.repeats, args.mode)
    return
  repeats = 3 if args.quick else args.repeats
  if not os.path.exists(NT_PY):
    print("NT side environment missing: run benchmarks/nt_oracle/setup_env.sh first",
          file=sys.stderr)
  print(f"{'network':<16}{'ours ms':>10}{'NT ms':>10}{'NT/ours':>9}{'per round':>11}"
        f"{'work MiB ours/NT':>18}{'NT/ours':>9}{'peak MiB ours/NT':>18}{'first s ours/NT':>17}"
        "  same values")
  for case in args.cases:
    # Rounds alternate the two sides (ours, NT, ours, NT, ...), so that load that comes and goes
    # on the machine falls on both; each side's time is the median over rounds.
    # Memory does not vary between rounds: it is sampled in the first only.
    rounds = {"ours": [], "nt": []}
    for i in range(args.rounds):
      rounds["ours"].append(measure("ours", case, repeats, memory=i == 0))
      rounds["nt"].append(measure("nt", case, repeats, memory=i == 0) if os.path.exists(NT_PY)
                          else {"error": ["no side env"]})
    work = {side: rounds[side][0].get("work_mib") for side in rounds}
    ours, nt = (dict(_median_round(rounds[side]), work_mib=work[side]) for side in ("ours", "nt"))
    if "error" in ours:
      print(f"{case:<16}ours failed: {ours['error']}")
      continue
    row = f"{case:<16}{ours['seconds'] * 1e3:>10.2f}"
    if "error" in nt:
      print(row + f"  NT failed: {nt['error']}")
      continue
    same = all(abs(a - b) <= 1e-3 * max(1.0, abs(b))
               for a, b in zip(ours["checksum"], nt["checksum"]))
    ratios = [b["seconds"] / a["seconds"] for a, b in zip(rounds["ours"], rounds["nt"])
              if "error" not in a and "error" not in b]
    spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else ""
    print(row + f"{nt['seconds'] * 1e3:>10.2f}{nt['seconds'] / ours['seconds']:>9.2f}{spread:>11}"
          f"{ours['work_mib']:>10.1f}/{nt['work_mib']:<7.1f}"
          f"{nt['work_mib'] / max(ours['work_mib'], 0.1):>9.2f}"
          f"{ours['peak_mib']:>10.1f}/{nt['peak_mib']:<7.1f}"
          f"{ours['first_call_s']:>9.2f}/{nt['first_call_s']:<7.2f}  {same}")


if __name__ == "__main__":
  main()
