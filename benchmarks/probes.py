"""Probe throughput over a sweep: one ``over_runs`` call vs a Python loop of jitted calls.

A sweep of ``seeds x widths`` MLPs, stored padded at the capacity width (as
:mod:`jaxtheory.sweep` holds them), is probed two ways:

* ``over_runs``: the one-run probe mapped over the ``(seed, width)`` axes in
  one compiled call, vectorised (``vmap``) or sequential (``lax.map``);
* ``bucketed``: one ``over_runs`` call per width (its seeds), each at its
  own width: what a sweep's width buckets give when widths are 2x apart;
* ``loop``: what a user would otherwise write (and what PyHessian does per
  model): each network built at its own width, one jitted call per run in a
  Python loop (one compilation per width, excluded from the timing).

Probes: the top Hessian eigenvalue of the training loss (Lanczos, 20 steps,
as in a sharpness sweep) and linear CKA between each run's hidden layers and
those of a reference network (``cka_matrix``). Compilation is excluded
everywhere; each figure is the best of ``repeats`` timed calls.

Run: ``python benchmarks/probes.py [--quick]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxtheory import nn, train
from jaxtheory.probes import over_runs
from jaxtheory.probes import curvature as C
from jaxtheory.probes import similarity as S


def _best(f, repeats):
  jax.block_until_ready(f())  # compile / warm up
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(f())
    ts.append(time.perf_counter() - t0)
  return min(ts)


def _hidden(model, params, x, ctx, depth):
  """Each hidden post-activation of an MLP and its output.

  ``serial`` zips layers with parameters, so applying the root layer to the
  first ``2 i`` parameter entries runs the first ``i`` (dense, activation) pairs.
  """
  hid = [model.layer.apply(params[:2 * i], x, nn.Feat(), ctx)[0] for i in range(1, depth + 1)]
  return hid + [model.apply(params, x, ctx)]


def run(quick: bool = False, repeats: int = 3) -> dict:
  """Times both probes both ways; returns seconds per sweep and the speed-ups.

  Args:
    quick: a small configuration (seconds) for smoke tests.
    repeats: timed calls per figure (the best is kept).

  Returns:
    ``{"config": ..., "sharpness": {...}, "cka": {...}}`` with seconds for
    padded ``vmap`` and ``map`` (``lax.map``) over all runs, ``bucketed``
    (one ``over_runs`` call per width over its seeds, unpadded) and ``loop``;
    ``speedup_padded`` = loop / best padded, ``speedup_bucketed`` = loop /
    bucketed.
  """
  seeds, widths = ([0, 1], [16, 32]) if quick else (list(range(8)), [64, 128, 256, 512])
  n, d, classes, depth, iters = (64, 8, 4, 2, 20) if quick else (256, 32, 10, 2, 20)
  cap = max(widths)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((n, d)), jnp.float32)
  y = jnp.asarray(rng.integers(0, classes, n))
  w8 = jnp.ones((n,), jnp.float32)
  make = lambda w: nn.mlp((d,), w, depth, classes)
  big = make(cap)
  rows = [[big.init(jax.random.key(s), nn.Ctx(width=w)) for w in widths] for s in seeds]
  stack = lambda *xs: jnp.stack(xs)
  P = jax.tree.map(stack, *[jax.tree.map(stack, *r) for r in rows])
  Wd = jnp.broadcast_to(jnp.asarray(widths), (len(seeds), len(widths)))
  key = jax.random.key(0)
  ref_reps = _hidden(big, big.init(jax.random.key(99)), x, nn.Ctx(), depth)

  def sharp(model, params, ctx, ref):
    del ref
    loss = lambda p: train.cross_entropy(model.apply(p, x, ctx), y, w8)
    return C.top_eigenvalues(C.hessian(loss, params), key, 1, iters)[0]

  def cka(model, params, ctx, ref):
    return S.cka_matrix(_hidden(model, params, x, ctx, depth), ref)

  out = {"config": dict(seeds=len(seeds), widths=widths, capacity=cap, examples=n, depth=depth,
                        lanczos_iters=iters, backend=jax.default_backend(),
                        devices=str(jax.devices()[0]))}
  small = {w: make(w) for w in widths}
  small_params = {(s, w): small[w].init(jax.random.key(s)) for s in seeds for w in widths}
  for name, probe in (("sharpness", sharp), ("cka", cka)):
    # The reference representations are an argument, not a closed-over constant
    # (XLA would constant-fold their Gram matrices at compile time).
    one = lambda p, w, ref, probe=probe: probe(big, p, nn.Ctx(width=w), ref)
    f_vmap = jax.jit(lambda P, W, ref, one=one: over_runs(one, P, W, ref, batch_dims=2,
                                                          in_axes=(0, 0, None)))
    f_map = jax.jit(lambda P, W, ref, one=one: over_runs(one, P, W, ref, batch_dims=2,
                                                         in_axes=(0, 0, None), chunk=1))
    per_width = {w: jax.jit(lambda p, ref, m=small[w], probe=probe: probe(m, p, nn.Ctx(), ref))
                 for w in widths}
    # Bucketed: one over_runs call per width (all seeds), each at its own width, as a
    # sweep's width buckets hold them (no padding waste).
    per_bucket = {w: jax.jit(lambda P, ref, m=small[w], probe=probe: over_runs(
        lambda p: probe(m, p, nn.Ctx(), ref), P)) for w in widths}
    seed_stacks = {w: jax.tree.map(stack, *[small_params[(s, w)] for s in seeds])
                   for w in widths}

    def loop(per_width=per_width):
      return [per_width[w](small_params[(s, w)], ref_reps) for s in seeds for w in widths]

    def bucketed(per_bucket=per_bucket):
      return [per_bucket[w](seed_stacks[w], ref_reps) for w in widths]

    for w in widths:  # compile every width once, outside the timing
      jax.block_until_ready(per_width[w](small_params[(seeds[0], w)], ref_reps))
    t_vmap = _best(lambda: f_vmap(P, Wd, ref_reps), repeats)
    t_map = _best(lambda: f_map(P, Wd, ref_reps), repeats)
    t_bucket = _best(bucketed, repeats)
    t_loop = _best(loop, repeats)
    # The batched values are the loop's (padded == unpadded up to float32 roundoff).
    a = np.asarray(f_vmap(P, Wd, ref_reps)).reshape(len(seeds) * len(widths), -1)
    b = np.stack([np.ravel(v) for v in loop()])
    out[name] = dict(vmap_s=t_vmap, map_s=t_map, bucketed_s=t_bucket, loop_s=t_loop,
                     speedup_padded=t_loop / min(t_vmap, t_map),
                     speedup_bucketed=t_loop / t_bucket,
                     max_rel_diff=float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-6))))
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--repeats", type=int, default=3)
  args = ap.parse_args()
  res = run(args.quick, args.repeats)
  c = res["config"]
  print(f"{c['seeds']} seeds x widths {c['widths']} (capacity {c['capacity']}), "
        f"{c['examples']} examples, depth {c['depth']}, backend {c['backend']}")
  for name in ("sharpness", "cka"):
    r = res[name]
    print(f"{name:10s} padded over_runs: vmap {r['vmap_s'] * 1e3:8.1f} ms, lax.map "
          f"{r['map_s'] * 1e3:8.1f} ms | per-width over_runs {r['bucketed_s'] * 1e3:8.1f} ms | "
          f"loop {r['loop_s'] * 1e3:8.1f} ms | loop/padded {r['speedup_padded']:5.2f}x, "
          f"loop/per-width {r['speedup_bucketed']:5.2f}x | max rel diff {r['max_rel_diff']:.1e}")


if __name__ == "__main__":
  main()
