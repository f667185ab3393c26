"""Time neural-tangents 0.6.5 on the benchmark networks of tests/kernel_battery.py.

Run with the side env's python (see setup_env.sh):

    benchmarks/nt_oracle/.venv/bin/python benchmarks/nt_oracle/bench_nt.py [--quick]

Measurements (one fresh subprocess each, so compile caches and peak RSS don't
leak between them), for every BENCH_CASE, float32, x1 vs x1 (x2=None):

* ``analytic``: ``jit(kernel_fn)(x1, None, ("nngp", "ntk"))``;
* ``empirical_<impl>``: ``jit(empirical_ntk_fn(apply_fn, trace_axes=(-1,),
  vmap_axes=<--vmap-axes>, implementation=<impl>))(x1, None, params)`` with
  impl in JACOBIAN_CONTRACTION, NTK_VECTOR_PRODUCTS, STRUCTURED_DERIVATIVES;
  params from NT's ``init_fn(PRNGKey(0), x1.shape)``.

Each one is compiled + run once (warm-up, reported as ``first_call_s``), then
timed ``--repeats`` times with ``block_until_ready``; ``seconds`` is the median.
``per_entry_s = seconds / (n1 * n1)``. ``peak_rss_mib`` is the growth of
``getrusage(RUSAGE_SELF).ru_maxrss`` over a baseline taken after imports, data
and parameter creation (it includes XLA compilation memory).

Prints one JSON object to stdout: {"meta": {...}, "<case>/<impl>": {...}, ...}.
Progress goes to stderr.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

IMPLS = ("analytic", "empirical_jacobian_contraction",
         "empirical_ntk_vector_products", "empirical_structured_derivatives")


def _maxrss_mib():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB


def worker(case_name, impl, repeats, vmap_axes):
  sys.path.insert(0, HERE)
  sys.path.insert(0, os.path.join(ROOT, "tests"))
  import jax
  import numpy as np
  import kernel_battery as kb
  import nt_import
  nt = nt_import.load()

  case = kb.case_by_name(case_name)
  x1 = jax.device_put(np.asarray(kb.bench_inputs(case), dtype=np.float32))
  init_fn, apply_fn, kernel_fn = kb.build(case["net"], nt.stax)

  if impl == "analytic":
    fn = jax.jit(lambda x: kernel_fn(x, None, ("nngp", "ntk")))
    args = (x1,)
  else:
    _, params = init_fn(jax.random.PRNGKey(0), x1.shape)
    params = jax.block_until_ready(params)
    name = impl[len("empirical_"):].upper()
    ntk_fn = nt.empirical_ntk_fn(
        apply_fn, trace_axes=(-1,), vmap_axes=vmap_axes,
        implementation=getattr(nt.NtkImplementation, name))
    fn = jax.jit(lambda x, p: ntk_fn(x, None, p))
    args = (x1, params)

  base = _maxrss_mib()
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  peak = _maxrss_mib() - base
  n1 = x1.shape[0]
  sec = statistics.median(times)
  leaves = jax.tree_util.tree_leaves(out)
  res = {
      "seconds": sec,
      "per_entry_s": sec / (n1 * n1),
      "peak_rss_mib": round(peak, 2),
      "first_call_s": first,
      "min_s": min(times),
      "repeats": repeats,
      "n1": n1, "n2": n1,
      "input_shape": list(case["input_shape"]),
      "dtype": "float32",
      "out_shapes": [list(l.shape) for l in leaves],
      "out_checksum": [float(np.asarray(l, np.float64).sum()) for l in leaves],
  }
  if impl != "analytic":
    res["vmap_axes"] = vmap_axes
  print(json.dumps(res))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true",
                 help="3 timed repeats instead of --repeats")
  p.add_argument("--repeats", type=int, default=7)
  p.add_argument("--cases", nargs="*", default=None)
  p.add_argument("--impls", nargs="*", default=list(IMPLS), choices=IMPLS)
  p.add_argument("--vmap-axes", default="none", choices=("none", "0"),
                 help="vmap_axes for empirical_ntk_fn (NT default: none)")
  p.add_argument("--timeout", type=float, default=900.0)
  p.add_argument("--worker", nargs=2, metavar=("CASE", "IMPL"),
                 help=argparse.SUPPRESS)
  args = p.parse_args()
  repeats = 3 if args.quick else max(5, args.repeats)
  vmap_axes = None if args.vmap_axes == "none" else 0

  if args.worker:  # the parent passes the final repeat count explicitly
    worker(args.worker[0], args.worker[1], args.repeats, vmap_axes)
    return

  sys.path.insert(0, os.path.join(ROOT, "tests"))
  import kernel_battery as kb
  cases = [c["name"] for c in kb.BENCH_CASES
           if args.cases is None or c["name"] in args.cases]

  results = {}
  for case in cases:
    for impl in args.impls:
      cmd = [sys.executable, "-W", "ignore", os.path.abspath(__file__),
             "--worker", case, impl, "--repeats", str(repeats),
             "--vmap-axes", args.vmap_axes]
      key = f"{case}/{impl}"
      print(f"[bench_nt] {key} ...", file=sys.stderr, flush=True)
      try:
        r = subprocess.run(cmd, capture_output=True, text=True,
                           timeout=args.timeout)
      except subprocess.TimeoutExpired:
        results[key] = {"error": f"timeout after {args.timeout}s"}
        continue
      line = [l for l in r.stdout.splitlines() if l.startswith("{")]
      if r.returncode != 0 or not line:
        results[key] = {"error": (r.stderr or r.stdout)[-800:]}
      else:
        results[key] = json.loads(line[-1])
      print(f"[bench_nt] {key}: {json.dumps(results[key])[:200]}",
            file=sys.stderr, flush=True)

  import platform
  meta = {"tool": "neural_tangents", "version": "0.6.5",
          "python": platform.python_version(), "repeats": repeats,
          "vmap_axes": args.vmap_axes, "cpu_count": os.cpu_count(),
          "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", ""),
          "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
  try:
    out = subprocess.run(
        [sys.executable, "-c", "import jax; print(jax.__version__, "
         "jax.default_backend(), jax.devices()[0].device_kind)"],
        capture_output=True, text=True, timeout=120).stdout.split()
    meta.update(jax=out[0], backend=out[1], device=" ".join(out[2:]))
  except Exception:  # pragma: no cover
    pass
  print(json.dumps({"meta": meta, **results}, indent=1))


if __name__ == "__main__":
  main()
