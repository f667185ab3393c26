"""Sweep throughput: the engine's automatic choice vs what a user would write instead.

One run, same machine, printed side by side for a range of shapes, SGD, no
metrics but those of step 0 and the end: MLPs (deep ones, many runs) and a small CNN
(``nn.cnn``, 3x3 SAME convolutions, the images as 8x8x1) on the digits data
(1347 x 64, 10 classes), and a one-block transformer (``nn.transformer``, 4
heads) on modular addition mod 97:

* ``auto``      the engine's automatic strategy (``jaxtheory.sweep.run``);
* ``vmap``/``map``/``chunk4``  the engine forced to one strategy (chunks of 4 runs);
* ``jax-loop``  a Python loop of separately jitted single runs (plain JAX), each
  measuring what the engine records at step 0 and at the end (its schedule
  always holds both): loss and accuracy on train and test, the parameter norm;
* ``jax-vmap``  a plain ``jax.vmap`` of that single run over seeds;
* ``torch-loop`` / ``torch-vmap``  PyTorch (CPU) loop of runs and a
  ``torch.func`` vmapped ensemble, when torch is installed (``pip install .[bench]``);
  MLP shapes only; they measure the same records (the ensemble run by run, on the meta
  module's parameters).

Times exclude compilation (JAX contenders run once to warm up; the engine
reports its execution time apart from compilation). Timings are noisy on a
shared machine (the same table run twice once gave 2.97 s then 1.76 s for one
cell), so every contender of a shape is timed ``--repeats`` times (default 5),
*interleaved* (round r times each contender once, in a rotated order, so a
slow spell hits all of them), and the table prints the median with the
spread (min-max) in brackets; the matmul peak is measured the same way, in
the same rounds. ``auto/best`` is the median of the per-round ratios, with
``~`` where its range includes 1 (the difference is inside the noise). Also printed:
achieved FLOP/s of ``auto`` (XLA's count of one training step of one run)
as a fraction of the machine's measured matmul peak, and the executed / ideal FLOPs of the engine's width buckets for a
geometric width grid 16..1024.

    python benchmarks/sweep_throughput.py            # full table (over 30 min on 2 CPU cores with torch)
    python benchmarks/sweep_throughput.py --quick    # two small shapes
    python benchmarks/sweep_throughput.py --repeats 9
    python benchmarks/sweep_throughput.py --only cnn
"""

from __future__ import annotations

import argparse

import jaxtheory  # noqa: F401  (before jax: quiets XLA's CPU cache-loading log lines)
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtheory import data, nn, sweep
from timing import cell, interleaved, ratio_cell, timed

SHAPES = [  # name, architecture, width, runs, steps, batch size (None = full batch), depth
    ("tiny  w=16 full", "mlp", 16, 32, 300, None, 2),
    ("small w=64 full", "mlp", 64, 32, 200, None, 2),
    ("mid  w=128 mb64", "mlp", 128, 32, 300, 64, 2),
    ("wide w=256 full", "mlp", 256, 16, 100, None, 2),
    ("wide w=512 full", "mlp", 512, 8, 50, None, 2),
    ("wide w=512 mb128", "mlp", 512, 8, 200, 128, 2),
    ("deep d=6 w=64", "mlp", 64, 16, 200, None, 6),
    ("many 128 w=16", "mlp", 16, 128, 200, None, 2),
    ("cnn c=16 mb128", "cnn", 16, 8, 100, 128, 2),
    ("tfm d=32 mb256", "transformer", 32, 8, 100, 256, 1),
]


def setup(arch: str, depth: int):
  """``(dataset, width -> Model)`` of one architecture."""
  if arch == "mlp":
    ds = data.digits()
    return ds, lambda w: nn.mlp(ds.input_shape, w, depth, ds.out_dim)
  if arch == "cnn":
    ds = data.digits(flatten=False)
    return ds, lambda w: nn.cnn(ds.input_shape, w, depth, ds.out_dim, pool="flatten",
                                downsample=2)
  ds = data.modular_arithmetic(97)
  return ds, lambda w: nn.transformer(98, ds.input_shape[0], w, depth, 4, out_dim=97)


def matmul_peak_timer(n=2048):
  """One timing of an ``n x n`` float32 matmul, as FLOP/s (call it in every round)."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  once = timed(lambda: f(a).block_until_ready())
  return lambda: 2 * n**3 / once()


def step_flops(ds, make, width, batch):
  """XLA's FLOP count of one SGD step of one run (forward and backward)."""
  m = make(width)
  n = ds.x_train.shape[0] if batch is None else batch
  x, y = jnp.asarray(ds.x_train[:n]), jnp.asarray(ds.y_train[:n])
  p = m.init(jax.random.key(0))
  loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(m.apply(p, x), y).mean()
  step = lambda p: jax.tree.map(lambda a, g: a - 0.1 * g, p, jax.grad(loss)(p))
  cost = jax.jit(step).lower(p).cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost["flops"])


# ----------------------------------------------------------------------------
# Contenders.


def engine_timer(ds, make, width, runs, steps, batch, strategy, chunk_size=None):
  """The engine forced to ``strategy``: each call runs the sweep and returns its
  execution seconds (the engine reports compilation apart); the chosen strategy
  is in ``.info``."""
  s = sweep.Sweep(make, ds, dict(seed=list(range(runs)), width=[width]), hparams=dict(lr=0.1),
                  steps=steps, batch_size=batch, record=[steps])

  def once():
    res = sweep.run(s, strategy=strategy, chunk_size=chunk_size, record_chunks=1,
                    progress=False)
    once.info = res.attrs["strategy"]
    return float(res.attrs["run_seconds"])
  once()  # warm-up, as for the other contenders
  return once


def _jax_single(ds, make, width, steps, batch):
  m = make(width)
  x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
  x_te, y_te = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)
  tx = optax.sgd(0.1)

  def loss(p, xb, yb):
    return optax.softmax_cross_entropy_with_integer_labels(m.apply(p, xb), yb).mean()

  def record(p):
    # What the engine records at every recorded step: loss and accuracy on train and test.
    out = []
    for xs, ys in ((x, y), (x_te, y_te)):
      f = m.apply(p, xs)
      out += [optax.softmax_cross_entropy_with_integer_labels(f, ys).mean(),
              jnp.mean(jnp.argmax(f, -1) == ys)]
    return jnp.stack(out + [optax.tree.norm(p)])

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

    first = record(p)
    p, _ = jax.lax.fori_loop(0, steps, step, (p, st))
    # The engine's benchmark sweeps record at step 0 and at the end (its schedule always
    # holds both), so the contenders measure both too.
    return jnp.stack([first, record(p)])

  return run


def jax_loop(ds, make, width, runs, steps, batch):
  f = jax.jit(_jax_single(ds, make, width, steps, batch))
  return timed(lambda: [f(s).block_until_ready() for s in range(runs)])


def jax_vmap(ds, make, width, runs, steps, batch):
  f = jax.jit(jax.vmap(_jax_single(ds, make, width, steps, batch)))
  seeds = jnp.arange(runs)
  return timed(lambda: f(seeds).block_until_ready())


def _torch_parts(ds, width, depth):
  import torch
  torch.set_num_threads(2)
  x = torch.tensor(ds.x_train)
  y = torch.tensor(ds.y_train, dtype=torch.long)
  sets = ((x, y), (torch.tensor(ds.x_test), torch.tensor(ds.y_test, dtype=torch.long)))

  def record(apply, params):
    # What the engine records at step 0 and at the end: loss and accuracy on train and test.
    with torch.no_grad():
      out = []
      for xs, ys in sets:
        f = apply(xs)
        out += [torch.nn.functional.cross_entropy(f, ys), (f.argmax(-1) == ys).float().mean()]
      return out + [torch.sqrt(sum((p**2).sum() for p in params))]

  def make(seed):
    torch.manual_seed(seed)
    layers, d = [], ds.input_shape[0]
    for _ in range(depth):
      layers += [torch.nn.Linear(d, width), torch.nn.ReLU()]
      d = width
    return torch.nn.Sequential(*layers, torch.nn.Linear(d, 10))

  return torch, x, y, make, record


def torch_loop(ds, width, depth, runs, steps, batch):
  torch, x, y, make, record = _torch_parts(ds, width, depth)

  def go():
    for s in range(runs):
      net = make(s)
      record(net, list(net.parameters()))
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
      record(net, list(net.parameters()))

  return timed(go)


def torch_vmap(ds, width, depth, runs, steps, batch):
  torch, x, y, make, record = _torch_parts(ds, width, depth)
  from torch.func import functional_call, grad, stack_module_state, vmap

  def go():
    nets = [make(s) for s in range(runs)]
    params, _ = stack_module_state(nets)
    base = make(0).to("meta")
    loss = lambda p, xb, yb: torch.nn.functional.cross_entropy(functional_call(base, p, (xb,)), yb)
    g_fn = vmap(grad(loss), in_dims=(0, None, None) if batch is None else (0, 0, 0))
    records = lambda: [record(lambda xs: functional_call(base, {k: v[r] for k, v in params.items()},
                                                         (xs,)), [v[r] for v in params.values()])
                       for r in range(runs)]
    records()
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
    records()

  return timed(go)


def padded_flops_ratio():
  ds = data.digits()
  widths = [16, 32, 64, 128, 256, 512, 1024]
  s = sweep.Sweep(lambda w: nn.mlp(ds.input_shape, w, 2, 10), ds, dict(width=widths), steps=1)
  p = sweep.plan(s)
  return p.buckets, sweep.padded_flops_ratio(p.buckets, p.cost.__getitem__)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true", help="two small shapes only")
  ap.add_argument("--no-torch", action="store_true")
  ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds per shape")
  ap.add_argument("--only", default="", help="shapes whose name contains this (e.g. cnn)")
  args = ap.parse_args()
  shapes = [sh for sh in (SHAPES[:2] if args.quick else SHAPES) if args.only in sh[0]]
  try:
    import torch  # noqa: F401
    have_torch = not args.no_torch
  except ImportError:
    have_torch = False
  peak_timer = matmul_peak_timer()
  print(f"backend={jax.default_backend()} devices={jax.device_count()} jax={jax.__version__}; "
        f"median [min-max] of {args.repeats} interleaved rounds")
  engines = ["auto", "vmap", "map", "chunk4"]
  others = ["jax-loop", "jax-vmap"] + (["torch-loop", "torch-vmap"] if have_torch else [])
  cols = engines + others
  print(f"\n{'shape':18s} {'runs':>4s} {'steps':>5s} " + " ".join(f"{c:>19s}" for c in cols)
        + f" {'auto/best':>17s} {'GFLOP/s':>8s} {'%peak':>11s}  chosen")
  peaks = []
  for name, arch, width, runs, steps, batch, depth in shapes:
    ds, make = setup(arch, depth)
    timers = {"auto": engine_timer(ds, make, width, runs, steps, batch, "auto"),
              "vmap": engine_timer(ds, make, width, runs, steps, batch, "vmap"),
              "map": engine_timer(ds, make, width, runs, steps, batch, "map"),
              "chunk4": engine_timer(ds, make, width, runs, steps, batch, "chunked", 4),
              "jax-loop": jax_loop(ds, make, width, runs, steps, batch),
              "jax-vmap": jax_vmap(ds, make, width, runs, steps, batch)}
    torch_here = have_torch and arch == "mlp"
    if torch_here:
      timers["torch-loop"] = torch_loop(ds, width, depth, runs, steps, batch)
      timers["torch-vmap"] = torch_vmap(ds, width, depth, runs, steps, batch)
    timers["peak"] = peak_timer
    t = interleaved(timers, args.repeats)
    peak = t.pop("peak")
    peaks.append(peak)
    best_alt = min((k for k in others if k in t), key=lambda k: np.median(t[k]))
    ratio = t["auto"] / t[best_alt]
    flops = step_flops(ds, make, width, batch) * steps * runs
    gflops = flops / np.median(t["auto"]) / 1e9
    pct = 100 * flops / t["auto"] / peak  # per round, against that round's peak
    print(f"{name:18s} {runs:4d} {steps:5d} "
          + " ".join(f"{cell(t[c]) if c in t else '-':>19s}" for c in cols)
          + f" {ratio_cell(ratio)}"
          + f" {gflops:8.1f} {np.median(pct):4.0f}%[{pct.min():.0f}-{pct.max():.0f}]"
          + f"  {timers['auto'].info} (best other: {best_alt})")
  peaks = np.concatenate(peaks) / 1e9
  print(f"\nmatmul peak (2048^2 float32), every round: median {np.median(peaks):.1f} "
        f"[{peaks.min():.1f}-{peaks.max():.1f}] GFLOP/s")
  groups, ratio = padded_flops_ratio()
  print(f"width buckets for 16..1024 (x2): {groups}; executed/ideal FLOPs = {ratio:.2f}")
  print("auto/best < 1: the engine beat every alternative (jax-loop, jax-vmap, torch); "
        "~: the range of per-round ratios includes 1 (inside the noise).")


if __name__ == "__main__":
  main()
