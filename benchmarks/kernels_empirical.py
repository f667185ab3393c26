"""Empirical NTK: time and peak memory of each implementation.

Two networks, float32, kernel of x1 against itself (``x2=None``), traced over
the logits (``trace_axes=(-1,)``), so an ``n x n`` kernel:

* ``mlp``: ``nn.mlp((32,), 512, 2, 1, b_std=0.05)`` under ``Ctx('ntk')``
  (Dense(512)-Relu-Dense(512)-Relu-Dense(1)) on 100 x 32 inputs;
* ``cnn``: conv 64 3x3 SAME, relu, conv 64 3x3 SAME, relu, global average
  pool, dense 10 (``nn.cnn((8, 8, 3), 64, 2, 10)``) on 20 x 8x8x3 inputs.

Contenders: ``analytic`` (the infinite-width NNGP and NTK of the same
architecture, :func:`jaxtheory.kernels.analytic.kernel_fn`, jitted once per
shape), ``jaxtheory.kernels.empirical.empirical_ntk`` with
``implementation`` in ``structured`` (= ``auto``), ``jacobian``, ``ntvp``,
``structured`` with ``batch_size`` blocks, and ``naive``: the plain rewrite
``jax.jacobian`` of the whole batch contracted with ``einsum`` (what one
writes without a library).

Each contender runs in a fresh subprocess: jit, one warm-up call (compile,
reported as ``first_s``), then ``repeats`` timed calls with
``block_until_ready``; ``seconds`` is the median, ``per_entry_s`` =
``seconds / n^2``. ``peak_mib`` is the growth of ``ru_maxrss`` over a
baseline taken after imports, parameters and inputs exist (it includes XLA
compilation memory).

    python benchmarks/kernels_empirical.py           # full table
    python benchmarks/kernels_empirical.py --quick   # 5 repeats, fewer contenders
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

CASES = ("mlp", "cnn")
CONTENDERS = ("analytic", "structured", "jacobian", "ntvp", "structured_bs", "naive")
QUICK_CONTENDERS = ("structured", "jacobian", "naive")


def _maxrss_mib():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _setup(case):
  import jax
  import jax.numpy as jnp

  from jaxtheory import nn
  if case == "mlp":
    model, ctx = nn.mlp((32,), 512, 2, 1, b_std=0.05), nn.Ctx("ntk")
    x = jax.random.normal(jax.random.key(1), (100, 32), jnp.float32)
  elif case == "cnn":
    model, ctx = nn.cnn((8, 8, 3), 64, 2, 10), nn.Ctx()
    x = jax.random.normal(jax.random.key(1), (20, 8, 8, 3), jnp.float32)
  else:
    raise ValueError(f"unknown case {case!r}")
  params = jax.block_until_ready(model.init(jax.random.key(0), ctx))
  return (lambda p, x: model.apply(p, x, ctx)), params, x


def _naive(f, params, x):
  import jax
  import jax.numpy as jnp
  J = jax.jacobian(f)(params, x)
  n, k = jax.eval_shape(f, params, x).shape
  return sum(jnp.einsum("iap,jap->ij", j.reshape(n, k, -1), j.reshape(n, k, -1))
             for j in jax.tree.leaves(J)) / k


def worker(case, contender, repeats):
  """Times one contender; prints one JSON line."""
  import jax

  from jaxtheory.kernels.empirical import empirical_ntk
  f, params, x = _setup(case)
  if contender == "naive":
    fn = jax.jit(lambda p, x: _naive(f, p, x))
  elif contender == "analytic":  # the infinite-width NTK (+ NNGP) of the same network
    from jaxtheory import nn
    from jaxtheory.kernels.analytic import kernel_fn
    model = {"mlp": nn.mlp((32,), 512, 2, 1, b_std=0.05),
             "cnn": nn.cnn((8, 8, 3), 64, 2, 10, b_std=0.05)}[case]
    k_fn = kernel_fn(model, nn.Ctx("ntk"))
    fn = jax.jit(lambda p, x: k_fn(x, None, ("nngp", "ntk")).ntk)
  else:
    impl, bs = contender, None
    if contender == "structured_bs":
      impl, bs = "structured", x.shape[0] // 4
    fn = jax.jit(lambda p, x: empirical_ntk(f, p, x, implementation=impl, batch_size=bs))
  base = _maxrss_mib()
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(params, x))
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(params, x))
    times.append(time.perf_counter() - t0)
  n = x.shape[0]
  sec = statistics.median(times)
  print(json.dumps({
      "seconds": sec, "per_entry_s": sec / (n * n), "min_s": min(times),
      "first_s": first, "peak_mib": round(_maxrss_mib() - base, 1),
      "repeats": repeats, "n": n, "checksum": float(out.sum())}))


def run(quick: bool = False, cases=CASES, contenders=None, repeats: int | None = None,
        timeout: float = 900.0, verbose: bool = True) -> dict:
  """Runs every (case, contender) in its own subprocess.

  Args:
    quick: fewer contenders and 5 repeats.
    cases: networks to time (``'mlp'``, ``'cnn'``).
    contenders: implementations (default: all, or a subset when quick).
    repeats: timed calls per contender (>= 5).
    timeout: seconds allowed per subprocess.
    verbose: print progress and the table.

  Returns:
    ``{"<case>/<contender>": {"seconds", "per_entry_s", "peak_mib", ...}}``
    (or ``{"error": ...}``).
  """
  contenders = contenders or (QUICK_CONTENDERS if quick else CONTENDERS)
  repeats = max(5, repeats or (5 if quick else 9))
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ)
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  results = {}
  for case in cases:
    for c in contenders:
      key = f"{case}/{c}"
      cmd = [sys.executable, "-W", "ignore", os.path.abspath(__file__), "--worker", case,
             c, "--repeats", str(repeats)]
      try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
        results[key] = (json.loads(lines[-1]) if r.returncode == 0 and lines
                        else {"error": (r.stderr or r.stdout)[-600:]})
      except subprocess.TimeoutExpired:
        results[key] = {"error": f"timeout after {timeout}s"}
      if verbose:
        print(f"  {key}: {json.dumps(results[key])[:160]}", file=sys.stderr, flush=True)
  if verbose:
    print(table(results))
  return results


def table(results: dict) -> str:
  """A text table of :func:`run`'s results."""
  rows = [f"{'case/contender':<26}{'median ms':>11}{'us/entry':>10}{'peak MiB':>10}"
          f"{'compile s':>11}"]
  for key, r in results.items():
    if "error" in r:
      rows.append(f"{key:<26}  error: {r['error'].splitlines()[-1][:60]}")
    else:
      rows.append(f"{key:<26}{r['seconds'] * 1e3:>11.2f}{r['per_entry_s'] * 1e6:>10.3f}"
                  f"{r['peak_mib']:>10.1f}{r['first_s']:>11.2f}")
  return "\n".join(rows)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true")
  p.add_argument("--repeats", type=int, default=None)
  p.add_argument("--cases", nargs="*", default=list(CASES))
  p.add_argument("--contenders", nargs="*", default=None)
  p.add_argument("--worker", nargs=2, metavar=("CASE", "CONTENDER"), help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.worker:
    worker(*args.worker, max(5, args.repeats or 9))
    return
  run(args.quick, tuple(args.cases), tuple(args.contenders) if args.contenders else None,
      args.repeats)


if __name__ == "__main__":
  main()
