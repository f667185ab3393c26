"""Generate reference NNGP/NTK kernels with neural-tangents 0.6.5.

Run in the side env (see setup_env.sh):

    benchmarks/nt_oracle/.venv/bin/python benchmarks/nt_oracle/make_references.py

Writes tests/data/nt_kernels.npz with, for every case in tests/kernel_battery.py,
keys f"{name}/x1", "/x2", "/nngp", "/ntk" (x1 vs x2), "/nngp11", "/ntk11"
(x1 vs None, i.e. x1 vs x1), all float64, plus "meta" (JSON string).
"""
import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                      "intra_op_parallelism_threads=1")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import kernel_battery as kb  # noqa: E402
import nt_import  # noqa: E402

nt = nt_import.load()
stax = nt.stax

JAX_FNS = {"tanh": jnp.tanh}


def compute(case):
  _, _, kernel_fn = kb.build(case["net"], stax, JAX_FNS)
  x1, x2 = kb.inputs(case)
  k12 = kernel_fn(jnp.asarray(x1), jnp.asarray(x2), ("nngp", "ntk"))
  k11 = kernel_fn(jnp.asarray(x1), None, ("nngp", "ntk"))
  out = {"x1": x1, "x2": x2,
         "nngp": k12.nngp, "ntk": k12.ntk,
         "nngp11": k11.nngp, "ntk11": k11.ntk}
  out = {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
  nonfinite = {}
  for k in ("nngp", "ntk", "nngp11", "ntk11"):
    bad = ~np.isfinite(out[k])
    if bad.any():
      # Only tolerated on the diagonal of x1-vs-x1 kernels (NT defect, e.g.
      # RectifiedMonomial's arccos at theta=0); stored as-is, listed in meta.
      if not (k.endswith("11") and not (bad & ~np.eye(*bad.shape,
                                                       dtype=bool)).any()):
        raise FloatingPointError(f"{case['name']}/{k}: {bad.sum()} non-finite")
      nonfinite[f"{case['name']}/{k}"] = "diagonal"
  return out, nonfinite


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--out", default=os.path.join(ROOT, "tests", "data",
                                               "nt_kernels.npz"))
  p.add_argument("--only", nargs="*", default=None, help="case names")
  args = p.parse_args()

  arrays, skipped, nonfinite = {}, {}, {}
  t0 = time.time()
  for case in kb.CASES:
    if args.only and case["name"] not in args.only:
      continue
    try:
      res, nf = compute(case)
    except Exception as e:  # record, keep going
      skipped[case["name"]] = f"{type(e).__name__}: {e}"[:300]
      print(f"SKIP {case['name']}: {skipped[case['name']]}", flush=True)
      continue
    nonfinite.update(nf)
    for k, v in res.items():
      arrays[f"{case['name']}/{k}"] = v
    print(f"ok   {case['name']:36s} nngp{res['nngp'].shape} "
          f"ntk[0,0]={res['ntk'][0, 0]:.6g}", flush=True)

  meta = {
      "neural_tangents": nt.__version__,
      "jax": jax.__version__,
      "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else "",
      "numpy": np.__version__,
      "python": platform.python_version(),
      "x64": True,
      "backend": jax.default_backend(),
      "n_cases": len(kb.CASES),
      "skipped": skipped,
      # keys whose NaN entries are NT 0.6.5 defects: compare finite entries.
      "nonfinite": nonfinite,
      "generator": "benchmarks/nt_oracle/make_references.py",
      "key_format": "{name}/{x1,x2,nngp,ntk,nngp11,ntk11}",
  }
  arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  np.savez_compressed(args.out, **arrays)
  print(f"wrote {args.out} ({os.path.getsize(args.out) / 1024:.1f} KiB, "
        f"{len(arrays) - 1} arrays, {len(skipped)} skipped) "
        f"in {time.time() - t0:.1f}s")


if __name__ == "__main__":
  main()
