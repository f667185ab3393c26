"""Scale and reliability: throughput vs devices, checkpoint overhead, resume time.

* sweep throughput (run-steps per second, compile excluded) with 1, 2, 4 and 8
  devices (forced host devices on CPU: one process per count, since XLA fixes
  the device count at start-up; on a GPU machine, its real devices);
* checkpoint overhead: the same sweep with checkpoints at the default interval
  (60 s), and at every chunk (the worst case), as a percentage of run time;
* resume time: from a checkpoint written half-way, the time to load it and
  recompile, and the total time to finish.

    python benchmarks/scale.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

WORKER = r"""
import json, sys, time
from jaxtheory import data, nn, sweep
ds = data.digits()
s = sweep.Sweep(lambda w: nn.mlp(ds.input_shape, w, 2, 10), ds,
                dict(seed=list(range(16)), width=[128], lr=[0.05, 0.1]), steps=1500,
                batch_size=128, record="every:75")
kw = json.loads(sys.argv[1])
t = time.perf_counter()
res = sweep.run(s, **kw)
print(json.dumps(dict(wall=time.perf_counter() - t, run=res.attrs["run_seconds"],
                      compile=res.attrs["compile_seconds"], devices=res.attrs["devices"],
                      runs=int(res.train_loss.size // res.sizes["step"]), steps=1500)))
"""


def worker(kw: dict, devices: int | None = None) -> dict:
  env = dict(os.environ)
  if devices:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  out = subprocess.run([sys.executable, "-c", WORKER, json.dumps(kw)], env=env, check=True,
                       capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main():
  print("sweep: 32 runs (16 seeds x 2 lr) of a width-128 MLP on digits, 1500 SGD steps, batch 128\n")
  print(f"{'devices':>7s} {'run s':>7s} {'run-steps/s':>12s} {'speed-up':>8s}")
  base = None
  for d in (1, 2, 4, 8):
    r = worker(dict(strategy="auto"), d)
    rate = r["runs"] * r["steps"] / r["run"]
    base = base or rate
    print(f"{r['devices']:7d} {r['run']:7.2f} {rate:12.0f} {rate / base:8.2f}")
  with tempfile.TemporaryDirectory() as tmp:
    best = lambda make: min((worker(make(i)) for i in range(2)), key=lambda r: r["run"])
    plain = best(lambda i: {})
    default = best(lambda i: dict(checkpoint=os.path.join(tmp, f"a{i}.npz")))
    every = worker(dict(checkpoint=os.path.join(tmp, "b.npz"), checkpoint_interval=0))
    print(f"\ncheckpoint overhead (run time): none {plain['run']:.2f}s, default interval "
          f"{default['run']:.2f}s ({100 * (default['run'] / plain['run'] - 1):+.1f}%), every chunk "
          f"{every['run']:.2f}s ({100 * (every['run'] / plain['run'] - 1):+.1f}%)")
    # Resume: kill a checkpointing run half-way (by time), then resume it.
    ck = os.path.join(tmp, "c.npz")
    p = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(
        dict(checkpoint=ck, checkpoint_interval=0))], stdout=subprocess.DEVNULL)
    time.sleep(plain["wall"] * 0.6)
    p.kill()
    p.wait()
    t = time.perf_counter()
    r = worker(dict(checkpoint=ck, resume=True))
    print(f"resume: {time.perf_counter() - t:.2f}s wall to finish from the checkpoint "
          f"(of which compile + restore {r['compile']:.2f}s); a fresh run takes "
          f"{plain['wall']:.2f}s wall")


if __name__ == "__main__":
  main()
