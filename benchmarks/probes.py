"""Probe throughput over a sweep: one ``over_runs`` call vs a Python loop of jitted calls.

A sweep of ``seeds x widths`` MLPs, stored padded at the capacity width (as
:mod:`jaxtheory.sweep` holds them), is probed two ways:

* ``over_runs``: the one-run probe mapped over the ``(seed, width)`` axes in
  one compiled call, vectorised (``vmap``) or sequential (``lax.map``);
* ``per width``: one ``over_runs`` call per width (its seeds), each at its
  own width, vectorised or sequential: what a sweep's width buckets give
  when widths are 2x apart;
* ``loop``: what a user would otherwise write (and what PyHessian does per
  model): each network built at its own width, one jitted call per run in a
  Python loop (one compilation per width, excluded from the timing).

Probes: the top Hessian eigenvalue of the training loss (Lanczos, 20 steps,
as in a sharpness sweep) and linear CKA between each run's hidden layers and
those of a reference network (``cka_matrix``). Compilation is excluded
everywhere. The contenders are timed interleaved (``timing.interleaved``):
each figure is the median of ``--repeats`` rounds with its min-max, and
``loop/x`` is the median per-round ratio (``~``: its spread contains 1, the
difference is inside the noise).

Run: ``python benchmarks/probes.py [--quick] [--repeats N]``.
"""

from __future__ import annotations

import argparse

import jaxtheory  # noqa: F401  (before jax: quiets XLA's CPU cache-loading log lines)
import jax
import jax.numpy as jnp
import numpy as np

from jaxtheory import nn, train
from jaxtheory.probes import over_runs
from jaxtheory.probes import curvature as C
from jaxtheory.probes import similarity as S
from timing import cell, interleaved, ratio_cell, timed


def _hidden(model, params, x, ctx, depth):
  """Each hidden post-activation of an MLP and its output.

  ``serial`` zips layers with parameters, so applying the root layer to the
  first ``2 i`` parameter entries runs the first ``i`` (dense, activation) pairs.
  """
  hid = [model.layer.apply(params[:2 * i], x, nn.Feat(), ctx)[0] for i in range(1, depth + 1)]
  return hid + [model.apply(params, x, ctx)]


def run(quick: bool = False, repeats: int = 5) -> dict:
  """Times both probes every way, interleaved; returns per-round seconds.

  Args:
    quick: a small configuration (seconds) for smoke tests.
    repeats: interleaved rounds.

  Returns:
    ``{"config": ..., "sharpness": {...}, "cka": {...}}``, each probe with
    per-round seconds of ``padded vmap`` and ``padded map`` (one ``over_runs``
    over all runs at the capacity), ``width vmap`` and ``width map`` (one
    ``over_runs`` per width over its seeds) and ``loop``, and
    ``max_rel_diff`` between the padded and the loop's values.
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
    # Per width: one over_runs call per width (all seeds), each at its own width, as a
    # sweep's width buckets hold them (no padding waste); vectorised or sequential.
    per_bucket = {c: {w: jax.jit(lambda P, ref, m=small[w], probe=probe, c=c: over_runs(
        lambda p: probe(m, p, nn.Ctx(), ref), P, chunk=c)) for w in widths} for c in (None, 1)}
    seed_stacks = {w: jax.tree.map(stack, *[small_params[(s, w)] for s in seeds])
                   for w in widths}

    def loop(per_width=per_width):
      return jax.block_until_ready(
          [per_width[w](small_params[(s, w)], ref_reps) for s in seeds for w in widths])

    def bucketed(c, per_bucket=per_bucket):
      return jax.block_until_ready([per_bucket[c][w](seed_stacks[w], ref_reps) for w in widths])

    t = interleaved({
        "padded vmap": timed(lambda f=f_vmap: jax.block_until_ready(f(P, Wd, ref_reps))),
        "padded map": timed(lambda f=f_map: jax.block_until_ready(f(P, Wd, ref_reps))),
        "width vmap": timed(lambda b=bucketed: b(None)),
        "width map": timed(lambda b=bucketed: b(1)),
        "loop": timed(loop)}, repeats)
    # The batched values are the loop's (padded == unpadded up to float32 roundoff).
    a = np.asarray(f_vmap(P, Wd, ref_reps)).reshape(len(seeds) * len(widths), -1)
    b = np.stack([np.ravel(v) for v in loop()])
    out[name] = dict(t, max_rel_diff=float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-6))))
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
  args = ap.parse_args()
  res = run(args.quick, args.repeats)
  c = res["config"]
  print(f"{c['seeds']} seeds x widths {c['widths']} (capacity {c['capacity']}), "
        f"{c['examples']} examples, depth {c['depth']}, backend {c['backend']}; "
        f"median [min-max] of {args.repeats} interleaved rounds, ms")
  cols = ("padded vmap", "padded map", "width vmap", "width map", "loop")
  print(f"{'probe':10s} " + " ".join(f"{k:>22s}" for k in cols)
        + "".join(f"{'loop/' + k:>22s}" for k in cols[:4]) + "  max rel diff")
  for name in ("sharpness", "cka"):
    r = res[name]
    print(f"{name:10s} " + " ".join(f"{cell(r[k], 1e3, '', 1):>22s}" for k in cols)
          + "".join(f"{ratio_cell(r['loop'] / r[k]):>22s}" for k in cols[:4])
          + f"  {r['max_rel_diff']:.1e}")
  print("loop/x > 1: x (one compiled call) is faster than the loop of jitted calls; "
        "~: inside the noise.")


if __name__ == "__main__":
  main()
