"""Compile time of every default experiment, first and second invocation, with the persistent cache.

Each experiment runs twice as ``jaxtheory run NAME`` (the command a user types,
figures included), each time in a fresh process sharing one fresh compilation
cache folder. Compile time is what JAX reports through ``jax.monitoring``:
tracing to a jaxpr, lowering to StableHLO and the XLA backend compile (which,
on the second invocation, is a load from the cache). Printed per experiment:

* ``trace / lower / xla`` seconds of the first invocation, ``trace / lower / load`` of the
  second, each the sum of its events' durations;
* ``compile 1st`` and ``compile 2nd``: the wall seconds during which any of them ran (the
  union of the events' intervals: the sweep engine compiles its buckets' programs on as
  many threads as there are cores, so XLA's durations can overlap, and nested traces do),
  and their ratio (goal: 2nd <= 10% of 1st);
* ``wall 1st`` and the compile share of it (goal: <= 25%);
* the second invocation's hits in JAX's cache (hits/programs compiled) and in
  jaxtheory's executable store (entries loaded whole: bucket programs and
  decisions, never traced or lowered).

    python benchmarks/compile.py                          # every experiment (over an hour on 2 CPU cores)
    python benchmarks/compile.py matrix-completion width-sweep
    python benchmarks/compile.py --no-plots --set steps=100 width-sweep
    python benchmarks/compile.py --where kernel-limit     # and where each run's time goes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

# Runs in the child: import jaxtheory before jax (as the console script does), count, run the CLI.
CHILD = r"""
import collections, contextlib, io, json, sys, time
t0 = time.perf_counter()
import jaxtheory
from jaxtheory import cli
import jax, os, traceback
secs, events = collections.defaultdict(float), collections.Counter()
where = collections.defaultdict(float)  # (event, jaxtheory call site) -> seconds

def site():
  frames = [f for f in traceback.extract_stack() if "/jaxtheory/" in f.filename
            and not f.filename.endswith(("/cli.py", "/compose.py"))]
  return " < ".join(f"{f.filename.split('/jaxtheory/')[-1]}:{f.lineno} {f.name}"
                    for f in frames[-3:][::-1])

LABEL = {"jaxpr_trace_duration": "trace", "jaxpr_to_mlir_module_duration": "lower",
         "backend_compile_duration": "xla"}

spans = []  # (start, end) of every trace, lowering and XLA compile, on any thread

def listen(e, s, **k):
  secs[e] += s
  label = LABEL.get(e.rsplit("/", 1)[-1])
  if label:
    now = time.perf_counter()
    spans.append((now - s, now))
  if label and os.environ.get("COMPILE_WHERE"):
    where[(label, site())] += s

def union(spans):
  total, end = 0.0, -1e300
  for a, b in sorted(spans):
    if b > end:
      total += b - max(a, end)
      end = b
  return total

jax.monitoring.register_event_duration_secs_listener(listen)
jax.monitoring.register_event_listener(lambda e, **k: events.update([e]))
out = io.StringIO()
with contextlib.redirect_stdout(out):
  try:
    cli.main(sys.argv[1:])
  except SystemExit as e:
    if e.code:
      raise
wall = time.perf_counter() - t0
print("COMPILE_JSON " + json.dumps(dict(
    wall=wall, busy=union(spans), trace=secs["/jax/core/compile/jaxpr_trace_duration"],
    lower=secs["/jax/core/compile/jaxpr_to_mlir_module_duration"],
    xla=secs["/jax/core/compile/backend_compile_duration"],
    hits=events["/jax/compilation_cache/cache_hits"],
    misses=events["/jax/compilation_cache/cache_misses"],
    store=jaxtheory.compile_cache.stats["hits"],
    where=sorted(([s, e, w] for (e, w), s in where.items()), reverse=True)[:12])))
"""

def experiment_names() -> list[str]:
  """Every experiment ``jaxtheory list`` shows (imported here, not in the measured children)."""
  from jaxtheory.experiments import EXPERIMENTS  # pylint: disable=import-outside-toplevel
  return list(EXPERIMENTS)


def invoke(name: str, cache: str, out: str, extra: list[str], where: bool = False) -> dict:
  """One ``jaxtheory run NAME`` in a fresh process; its compile and wall seconds."""
  env = dict(os.environ, JAXTHEORY_COMPILATION_CACHE=cache, COMPILE_WHERE="1" if where else "")
  res = subprocess.run([sys.executable, "-c", CHILD, "run", name, "--out", out, *extra],
                       env=env, capture_output=True, text=True, check=False)
  lines = [l for l in res.stdout.splitlines() if l.startswith("COMPILE_JSON ")]
  if res.returncode != 0 or not lines:
    raise RuntimeError(f"{name} failed:\n{res.stderr[-3000:]}")
  if res.stderr.strip():
    print(f"  {name} stderr: {res.stderr.strip()[:400]}", file=sys.stderr)
  r = json.loads(lines[-1].split(" ", 1)[1])
  r["compile"] = r["busy"]
  return r


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("names", nargs="*", default=None,
                  help="experiments to measure (default: every one)")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="passed to every run (e.g. steps=100 for a quick look)")
  ap.add_argument("--no-plots", action="store_true")
  ap.add_argument("--where", action="store_true",
                  help="also print where each invocation's compile time goes: the jaxtheory "
                       "call sites (innermost first) of its largest trace, lowering and XLA "
                       "events")
  args = ap.parse_args()
  args.names = args.names or experiment_names()
  extra = [a for kv in args.set for a in ("--set", kv)] + ["--no-plots"] * args.no_plots
  head = (f"{'experiment':<19}{'trace':>7}{'lower':>7}{'xla':>7}{'compile 1st':>13}"
          f"{'trace':>7}{'lower':>7}{'load':>7}{'compile 2nd':>13}{'2nd/1st':>9}{'wall 1st':>10}{'share':>7}{'wall 2nd':>10}"
          f"{'hits 2nd':>10}{'store 2nd':>10}")
  rows = []
  for name in args.names:
    with tempfile.TemporaryDirectory() as tmp:
      cache = os.path.join(tmp, "cache")
      a = invoke(name, cache, os.path.join(tmp, "a"), extra, args.where)
      b = invoke(name, cache, os.path.join(tmp, "b"), extra, args.where)
    rows.append(f"{name:<19}{a['trace']:>7.1f}{a['lower']:>7.1f}{a['xla']:>7.1f}"
                f"{a['compile']:>12.1f}s{b['trace']:>7.1f}{b['lower']:>7.1f}{b['xla']:>7.1f}"
                f"{b['compile']:>12.2f}s{b['compile'] / a['compile']:>9.1%}"
                f"{a['wall']:>9.1f}s{a['compile'] / a['wall']:>7.0%}{b['wall']:>9.1f}s"
                f"{b['hits']:>5}/{b['hits'] + b['misses']:<4}{b['store']:>10}")
    print(rows[-1], file=sys.stderr, flush=True)
    for which, r in (("1st", a), ("2nd", b)) if args.where else ():
      print(f"  {which} invocation, largest call sites:", file=sys.stderr)
      for sec, event, site in r["where"]:
        print(f"    {sec:6.2f} s {event:<7} {site}", file=sys.stderr, flush=True)
  print("compile = the wall seconds during which JAX was tracing, lowering or compiling (a cache "
        "load on the 2nd run), from jax.monitoring's events, time when several ran at once "
        "counted once; trace/lower/xla: their summed durations; each invocation a fresh process")
  print(head)
  print("\n".join(rows))


if __name__ == "__main__":
  main()
