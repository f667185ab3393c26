"""Kernels against neural-tangents 0.6.5, in one run: time per kernel entry and peak memory.

Ours (this environment, current JAX): the analytic NNGP+NTK and the empirical
NTK (structured derivatives, Jacobian contraction, and the naive
``jax.jacobian`` rewrite) from :mod:`benchmarks.kernels_empirical`. NT's (the
pinned side environment of ``benchmarks/nt_oracle``, built by its
``setup_env.sh``): its analytic ``kernel_fn`` and the three empirical
implementations, with ``vmap_axes=0`` (its fastest setting) and NT's default
``None``. Same networks (3 dense layers of width 512 + ReLU on 100 x 32
inputs; two 64-channel 3x3 SAME convs + ReLU, global average pooling and a
dense readout on 20 x 8x8x3 inputs), float32, CPU, every measurement in its
own subprocess, compile excluded, median of repeated calls.

    python benchmarks/kernels.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import kernels_empirical  # noqa: E402  pylint: disable=wrong-import-position

NT_PY = os.path.join(HERE, "nt_oracle", ".venv", "bin", "python")
NT_CASE = {"mlp": "bench_mlp", "cnn": "bench_cnn"}


def nt_results(quick: bool) -> dict:
  """NT's figures from its side environment (``{}`` with a note if it is not built)."""
  if not os.path.exists(NT_PY):
    print("NT side environment missing: run benchmarks/nt_oracle/setup_env.sh", file=sys.stderr)
    return {}
  out = {}
  for axes in ("0", "none"):
    cmd = [NT_PY, "-W", "ignore", os.path.join(HERE, "nt_oracle", "bench_nt.py"),
           "--vmap-axes", axes] + (["--quick"] if quick else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if r.returncode:
      print(f"NT benchmark failed: {r.stderr[-400:]}", file=sys.stderr)
      continue
    data = json.loads(r.stdout)
    for key, v in data.items():
      if isinstance(v, dict) and "seconds" in v:
        out[f"{key}@vmap_axes={axes}"] = v
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true")
  args = p.parse_args()
  ours = kernels_empirical.run(args.quick, contenders=("analytic", "structured", "jacobian",
                                                       "naive"), verbose=False)
  nt = nt_results(args.quick)
  print(f"{'network / implementation':<48}{'ms':>10}{'us/entry':>10}{'peak MiB':>10}")
  for key, r in list(ours.items()) + [(f"NT {k}", v) for k, v in nt.items()]:
    if "error" in r:
      print(f"{key:<48}  error")
      continue
    mib = r.get("peak_mib", r.get("peak_rss_mib", float("nan")))
    print(f"{key:<48}{r['seconds'] * 1e3:>10.2f}{r['per_entry_s'] * 1e6:>10.3f}{mib:>10.1f}")
  for case in ("mlp", "cnn"):
    emp = [v["seconds"] for k, v in nt.items() if k.startswith(NT_CASE[case])
           and "analytic" not in k and "seconds" in v]
    ana = [v["seconds"] for k, v in nt.items() if k.startswith(NT_CASE[case])
           and "analytic" in k and "seconds" in v]
    ours_emp = ours.get(f"{case}/structured", {}).get("seconds")
    ours_ana = ours.get(f"{case}/analytic", {}).get("seconds")
    if emp and ours_emp:
      print(f"{case}: NT's best empirical NTK / ours = {min(emp) / ours_emp:.2f}x")
    if ana and ours_ana:
      print(f"{case}: NT's analytic kernel / ours = {min(ana) / ours_ana:.2f}x")


if __name__ == "__main__":
  main()
