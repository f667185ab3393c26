"""Convolution gradients inside loops on XLA:CPU: lax's convolution vs ``jaxtheory.nn.convops``.

On XLA:CPU the filter gradient of ``lax.conv_general_dilated`` is 10-100x slower
inside a loop body (``lax.scan``, ``fori_loop``) than alone, the input gradient ~10x
(jax-ml/jax#12868). ``nn.conv`` uses :mod:`jaxtheory.nn.convops` (same forward op,
derivatives that avoid the slow layouts). Printed, in one run:

* one conv layer (batch 128, 3x3 SAME, 16->16 channels, 8x8 / 14x14 images): forward,
  input gradient and filter gradient, alone (a jitted call) and per iteration of a
  ``lax.scan``, lax vs convops;
* one full-batch SGD step of ``nn.cnn`` (width 16, depth 3, 3x3 SAME, 128 random
  images): a Python loop of a jitted step vs the same step in ``lax.fori_loop`` (how
  :mod:`jaxtheory.train` runs steps), with lax's convolution ("old") and convops ("new").

    taskset -c 1 python benchmarks/conv_grad.py           # 8x8 and 14x14
    taskset -c 1 python benchmarks/conv_grad.py --sizes 8 14 28
"""

from __future__ import annotations

import argparse
import contextlib
import time

import jax
import jax.numpy as jnp
from jax import lax

from jaxtheory import nn
from jaxtheory.nn import convops


@contextlib.contextmanager
def lax_convolution():
  """Builds layers with lax's convolution (the op nn.conv used before convops)."""
  saved = convops.conv_general_dilated

  def plain(x, W, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
            dimension_numbers=None):
    return lax.conv_general_dilated(x, W, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers=dimension_numbers)

  convops.conv_general_dilated = plain
  try:
    yield
  finally:
    convops.conv_general_dilated = saved


def _time(f, *args, reps=3):
  jax.block_until_ready(f(*args))
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(f(*args))
    best = min(best, time.perf_counter() - t)
  return best


def one_layer(size, batch=128, chan=16, n=4):
  dn = convops.channels_last_dims(2)
  ops = {"lax": lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                      dimension_numbers=dn),
         "convops": lambda x, w: convops.conv_general_dilated(x, w, (1, 1), "SAME")}
  k = jax.random.split(jax.random.key(0), 3)
  xs = jax.random.normal(k[0], (n, batch, size, size, chan))
  gs = jax.random.normal(k[1], (n, batch, size, size, chan))
  ws = 0.1 * jax.random.normal(k[2], (n, 3, 3, chan, chan))
  print(f"one conv layer, {batch}x{size}x{size}x{chan} -> {chan}, 3x3 SAME "
        f"(ms: alone / per scan iteration)")
  for name, conv in ops.items():
    cells = []
    for part, f in [("forward", lambda x, g, w: conv(x, w)),
                    ("input grad", lambda x, g, w: jax.vjp(lambda x: conv(x, w), x)[1](g)[0]),
                    ("filter grad", lambda x, g, w: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])]:
      one = jax.jit(f)
      scan = jax.jit(lambda xs, gs, ws, f=f: lax.scan(
          lambda c, a: (c + f(*a).sum(), None), 0.0, (xs, gs, ws))[0])
      a = _time(lambda: [one(xs[i], gs[i], ws[i]) for i in range(n)]) / n
      b = _time(scan, xs, gs, ws) / n
      cells.append(f"{part} {a * 1e3:7.2f} / {b * 1e3:8.2f}")
    print(f"  {name:8s} " + " | ".join(cells))


def cnn_step(size, batch=128, width=16, depth=3, steps=10):
  k = jax.random.split(jax.random.key(1), 2)
  x = jax.random.normal(k[0], (batch, size, size, 1))
  y = jax.random.randint(k[1], (batch,), 0, 10)
  out = {}
  for name, ctx in [("old (lax)", lax_convolution()), ("new (convops)", contextlib.nullcontext())]:
    with ctx:
      model = nn.cnn((size, size, 1), width=width, depth=depth, out_dim=10)
    p = model.init(jax.random.key(0))
    loss = lambda p: -jnp.mean(jnp.take_along_axis(
        jax.nn.log_softmax(model.apply(p, x)), y[:, None], 1))
    step = lambda p: jax.tree.map(lambda a, g: a - 0.01 * g, p, jax.grad(loss)(p))
    jstep = jax.jit(step)

    def python_loop(p):
      for _ in range(steps):
        p = jstep(p)
      return p

    in_loop = jax.jit(lambda p: lax.fori_loop(0, steps, lambda i, p: step(p), p))
    out[name] = (_time(python_loop, p) / steps, _time(in_loop, p) / steps)
  print(f"nn.cnn width {width} depth {depth}, {batch} images {size}x{size}, one SGD step (ms)")
  for name, (a, b) in out.items():
    print(f"  {name:14s} python loop of a jitted step {a * 1e3:8.2f}   in fori_loop {b * 1e3:8.2f}"
          f"   (x{b / a:.1f})")
  (_, old), (py, new) = out["old (lax)"], out["new (convops)"]
  print(f"  in fori_loop: old / new = x{old / new:.1f}; new in loop / new python loop = "
        f"x{new / py:.2f}")


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--sizes", type=int, nargs="+", default=[8, 14])
  ap.add_argument("--steps", type=int, default=10)
  args = ap.parse_args()
  print(f"jax {jax.__version__}, {jax.devices()[0].platform}")
  for s in args.sizes:
    one_layer(s)
  for s in args.sizes:
    cnn_step(s, steps=args.steps)


if __name__ == "__main__":
  main()
