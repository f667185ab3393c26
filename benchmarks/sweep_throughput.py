"""Sweep throughput: the engine's automatic choice vs what a user would write instead.

One run, same machine, printed side by side for a range of MLP shapes on the
digits data (1347 x 64, 10 classes), SGD, no metrics but the final ones:

* ``auto``      the engine's automatic strategy (``jaxtheory.sweep.run``);
* ``vmap``/``map``/``chunk4``  the engine forced to one strategy (chunks of 4 runs);
* ``jax-loop``  a Python loop of separately jitted single runs (plain JAX);
* ``jax-vmap``  a plain ``jax.vmap`` of that single run over seeds;
* ``torch-loop`` / ``torch-vmap``  PyTorch (CPU) loop of runs and a
  ``torch.func`` vmapped ensemble, when torch is installed (``pip install .[bench]``).

Times exclude compilation (JAX contenders run once to warm up; the engine
reports its execution time apart from compilation). Also printed:
achieved FLOP/s of ``auto`` as a fraction of the machine's measured matmul
peak, and the executed / ideal FLOPs of the engine's width buckets for a
geometric width grid 16..1024.

    python benchmarks/sweep_throughput.py            # full table (~10 min on 2 CPU cores)
    python benchmarks/sweep_throughput.py --quick    # two small shapes
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtheory import data, nn, sweep

SHAPES = [  # name, width, runs, steps, batch size (None = full batch)
    ("tiny  w=16 full", 16, 32, 300, None),
    ("small w=64 full", 64, 32, 200, None),
    ("mid  w=128 mb64", 128, 32, 300, 64),
    ("wide w=256 full", 256, 16, 100, None),
    ("wide w=512 full", 512, 8, 50, None),
    ("wide w=512 mb128", 512, 8, 200, 128),
]
DEPTH = 2


def _timeit(fn, repeat=2):
  fn()  # warm-up: compiles
  best = np.inf
  for _ in range(repeat):
    t = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t)
  return best


def matmul_peak(n=2048):
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  t = _timeit(lambda: f(a).block_until_ready(), repeat=5)
  return 2 * n**3 / t


def mlp_flops(width, d_in, d_out, batch):
  """FLOPs of one SGD step (forward + backward ~ 3x forward matmuls)."""
  fwd = 2 * batch * (d_in * width + (DEPTH - 1) * width * width + width * d_out)
  return 3 * fwd


# ----------------------------------------------------------------------------
# Contenders.


def engine(ds, width, runs, steps, batch, strategy, chunk_size=None):
  s = sweep.Sweep(lambda w: nn.mlp(ds.input_shape, w, DEPTH, 10), ds,
                  dict(seed=list(range(runs)), width=[width]), hparams=dict(lr=0.1),
                  steps=steps, batch_size=batch, record=[steps])
  # The engine compiles inside run() and reports execution time separately;
  # best of two, as for the JAX contenders.
  t = []
  for _ in range(2):
    res = sweep.run(s, strategy=strategy, chunk_size=chunk_size, record_chunks=1)
    t.append(float(res.attrs["run_seconds"]))
  return min(t), {"strategy": res.attrs["strategy"]}


def _jax_single(ds, width, steps, batch):
  m = nn.mlp(ds.input_shape, width, DEPTH, 10)
  x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
  tx = optax.sgd(0.1)

  def loss(p, xb, yb):
    return optax.softmax_cross_entropy_with_integer_labels(m.apply(p, xb), yb).mean()

  def run(seed):
    key = jax.random.key(seed)
    p = m.init(key)
    st = tx.init(p)

    def step(i, c):
      p, st = c
      if batch is None:
        xb, yb = x, y
      else:
        idx = jax.random.randint(jax.random.fold_in(key, i), (batch,), 0, x.shape[0])
        xb, yb = x[idx], y[idx]
      g = jax.grad(loss)(p, xb, yb)
      u, st = tx.update(g, st, p)
      return optax.apply_updates(p, u), st

    p, _ = jax.lax.fori_loop(0, steps, step, (p, st))
    return loss(p, x, y)

  return run


def jax_loop(ds, width, runs, steps, batch):
  f = jax.jit(_jax_single(ds, width, steps, batch))
  return _timeit(lambda: [f(s).block_until_ready() for s in range(runs)])


def jax_vmap(ds, width, runs, steps, batch):
  f = jax.jit(jax.vmap(_jax_single(ds, width, steps, batch)))
  seeds = jnp.arange(runs)
  return _timeit(lambda: f(seeds).block_until_ready())


def _torch_parts(ds, width):
  import torch
  torch.set_num_threads(2)
  x = torch.tensor(ds.x_train)
  y = torch.tensor(ds.y_train, dtype=torch.long)

  def make(seed):
    torch.manual_seed(seed)
    layers, d = [], ds.input_shape[0]
    for _ in range(DEPTH):
      layers += [torch.nn.Linear(d, width), torch.nn.ReLU()]
      d = width
    return torch.nn.Sequential(*layers, torch.nn.Linear(d, 10))

  return torch, x, y, make


def torch_loop(ds, width, runs, steps, batch):
  torch, x, y, make = _torch_parts(ds, width)

  def go():
    for s in range(runs):
      net = make(s)
      opt = torch.optim.SGD(net.parameters(), lr=0.1)
      g = torch.Generator().manual_seed(s)
      for _ in range(steps):
        if batch is None:
          xb, yb = x, y
        else:
          idx = torch.randint(0, x.shape[0], (batch,), generator=g)
          xb, yb = x[idx], y[idx]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xb), yb).backward()
        opt.step()

  return _timeit(go, repeat=1)


def torch_vmap(ds, width, runs, steps, batch):
  torch, x, y, make = _torch_parts(ds, width)
  from torch.func import functional_call, grad, stack_module_state, vmap

  def go():
    nets = [make(s) for s in range(runs)]
    params, _ = stack_module_state(nets)
    base = make(0).to("meta")
    loss = lambda p, xb, yb: torch.nn.functional.cross_entropy(functional_call(base, p, (xb,)), yb)
    g_fn = vmap(grad(loss), in_dims=(0, None, None) if batch is None else (0, 0, 0))
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
      if batch is None:
        gs = g_fn(params, x, y)
      else:
        idx = torch.randint(0, x.shape[0], (runs, batch), generator=gen)
        gs = g_fn(params, x[idx], y[idx])
      with torch.no_grad():
        for k in params:
          params[k] -= 0.1 * gs[k]

  return _timeit(go, repeat=1)


def padded_flops_ratio():
  ds = data.digits()
  widths = [16, 32, 64, 128, 256, 512, 1024]
  s = sweep.Sweep(lambda w: nn.mlp(ds.input_shape, w, DEPTH, 10), ds, dict(width=widths), steps=1)
  p = sweep.plan(s)
  return p.buckets, sweep.padded_flops_ratio(p.buckets, p.cost.__getitem__)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="two small shapes only")
  ap.add_argument("--no-torch", action="store_true")
  args = ap.parse_args()
  shapes = SHAPES[:2] if args.quick else SHAPES
  try:
    import torch  # noqa: F401
    have_torch = not args.no_torch
  except ImportError:
    have_torch = False
  ds = data.digits()
  peak = matmul_peak()
  print(f"backend={jax.default_backend()} devices={jax.device_count()} jax={jax.__version__}")
  print(f"matmul peak (2048^2 float32): {peak / 1e9:.1f} GFLOP/s")
  cols = ["auto", "vmap", "map", "chunk4", "jax-loop", "jax-vmap"] + (["torch-loop", "torch-vmap"] if have_torch else [])
  print(f"\n{'shape':18s} {'runs':>4s} {'steps':>5s} " + " ".join(f"{c:>10s}" for c in cols)
        + f" {'auto/best':>9s} {'GFLOP/s':>8s} {'%peak':>6s}  chosen")
  for name, width, runs, steps, batch in shapes:
    t = {}
    t["auto"], info = engine(ds, width, runs, steps, batch, "auto")
    t["vmap"], _ = engine(ds, width, runs, steps, batch, "vmap")
    t["map"], _ = engine(ds, width, runs, steps, batch, "map")
    t["chunk4"], _ = engine(ds, width, runs, steps, batch, "chunked", 4)
    t["jax-loop"] = jax_loop(ds, width, runs, steps, batch)
    t["jax-vmap"] = jax_vmap(ds, width, runs, steps, batch)
    if have_torch:
      t["torch-loop"] = torch_loop(ds, width, runs, steps, batch)
      t["torch-vmap"] = torch_vmap(ds, width, runs, steps, batch)
    best_alt = min(v for k, v in t.items() if k not in ("auto", "vmap", "map", "chunk4"))
    n = ds.x_train.shape[0] if batch is None else batch
    flops = mlp_flops(width, 64, 10, n) * steps * runs
    gflops = flops / t["auto"] / 1e9
    print(f"{name:18s} {runs:4d} {steps:5d} " + " ".join(f"{t[c]:9.2f}s" for c in cols)
          + f" {t['auto'] / best_alt:9.2f} {gflops:8.1f} {100 * gflops * 1e9 / peak:5.0f}%  {info['strategy']}")
  groups, ratio = padded_flops_ratio()
  print(f"\nwidth buckets for 16..1024 (x2): {groups}; executed/ideal FLOPs = {ratio:.2f}")
  print("auto/best < 1 means the engine beat every alternative (jax-loop, jax-vmap, torch).")


if __name__ == "__main__":
  main()
