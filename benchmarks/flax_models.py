"""Sweeps of Flax models with dropout and batch norm: the engine vs the training loops a Flax user writes.

A linen MLP (dense -> batch norm -> ReLU -> dropout, twice, dense readout) and
a linen CNN (two 3x3 convolutions with batch norm, average pooling, dropout,
dense) on the digits data (1347 x 64, 10 classes; 8x8x1 images for the CNN),
minibatches of 64, SGD with momentum, a grid of seeds x learning rates, each
swept as one ``jaxtheory.sweep.run`` (``from_linen(..., train_kwargs=...,
eval_kwargs=...)``) and by:

* ``flax-loop``   the Flax tutorial's loop: a jitted ``train_step(state, batch,
  key)`` on a ``TrainState`` with ``batch_stats``, a Python loop over steps,
  then over runs;
* ``flax-scan``   one jitted function per run that trains with ``lax.fori_loop``
  (no per-step dispatch), looped over runs;
* ``flax-vmap``   that function ``jax.vmap``-ed over all runs.

Every contender records what the engine records at step 0 and at the end
(loss and accuracy on train and test in evaluation mode, the parameter norm).
Times exclude compilation (each contender runs once to warm up; the engine
reports its execution time apart from compilation); each figure is the median
of ``--repeats`` interleaved rounds with its min-max spread (``timing.py``);
``auto/best`` is the median per-round ratio against the fastest other
contender, ``~`` where its spread includes 1 (inside the noise).

    python benchmarks/flax_models.py [--repeats 5] [--only cnn]
"""

from __future__ import annotations

import argparse

import jaxtheory  # noqa: F401  (before jax: quiets XLA's CPU cache-loading log lines)
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from jaxtheory import data, sweep
from jaxtheory.nn.flax import from_linen
from timing import cell, interleaved, ratio_cell, timed

BATCH, MOMENTUM = 64, 0.9


class MLP(nn.Module):
  width: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    for _ in range(2):
      x = nn.Dense(self.width)(x)
      x = nn.BatchNorm(use_running_average=not train)(x)
      x = nn.Dropout(0.1, deterministic=not train)(nn.relu(x))
    return nn.Dense(10)(x)


class CNN(nn.Module):
  width: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    for _ in range(2):
      x = nn.Conv(self.width, (3, 3))(x)
      x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    x = nn.avg_pool(x, (2, 2), (2, 2)).reshape(x.shape[0], -1)
    return nn.Dense(10)(nn.Dropout(0.1, deterministic=not train)(x))


SHAPES = [  # name, module, width, seeds, learning rates, steps
    ("mlp w=128", MLP, 128, 4, (0.01, 0.03, 0.1, 0.3), 300),
    ("cnn w=16", CNN, 16, 2, (0.03, 0.1), 100),
]


def dataset(module):
  return data.digits(flatten=module is not CNN)


def engine_timer(ds, module, width, seeds, lrs, steps):
  build = lambda w: from_linen(module(w), ds.input_shape, train_kwargs={"train": True},
                               eval_kwargs={"train": False})
  s = sweep.Sweep(build, ds, dict(seed=list(range(seeds)), width=[width], lr=list(lrs)),
                  "momentum", hparams=dict(momentum=MOMENTUM), steps=steps, batch_size=BATCH,
                  record=[steps])

  def once():
    res = sweep.run(s, record_chunks=1, progress=False)
    once.info = res.attrs["strategy"]
    return float(res.attrs["run_seconds"])
  once()
  return once


class _State(train_state.TrainState):
  batch_stats: dict


def _parts(ds, module, width):
  """The pieces every Flax contender shares: init, a train step, the records."""
  net = module(width)
  x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
  x_te, y_te = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)

  def init(seed, lr):
    v = net.init(jax.random.key(seed), x[:1], train=False)
    return _State.create(apply_fn=net.apply, params=v["params"], batch_stats=v["batch_stats"],
                         tx=optax.sgd(lr, MOMENTUM))

  def step(state, i, key):
    idx = jax.random.randint(jax.random.fold_in(key, i), (BATCH,), 0, x.shape[0])

    def loss(p):
      out, upd = net.apply({"params": p, "batch_stats": state.batch_stats}, x[idx], train=True,
                           rngs={"dropout": jax.random.fold_in(key, -i - 1)},
                           mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(out, y[idx]).mean(), upd

    grads, upd = jax.grad(loss, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads, batch_stats=upd["batch_stats"])

  def record(state):
    out = []
    for xs, ys in ((x, y), (x_te, y_te)):
      f = net.apply({"params": state.params, "batch_stats": state.batch_stats}, xs, train=False)
      out += [optax.softmax_cross_entropy_with_integer_labels(f, ys).mean(),
              jnp.mean(jnp.argmax(f, -1) == ys)]
    return jnp.stack(out + [optax.tree.norm(state.params)])

  return init, step, record


def flax_loop(ds, module, width, seeds, lrs, steps):
  init, step, record = _parts(ds, module, width)
  jstep, jrecord = jax.jit(step), jax.jit(record)
  runs = [(s, lr) for s in range(seeds) for lr in lrs]
  # One state per learning rate: the step is compiled once per optimizer (lr is static in it).
  states = {(s, lr): init(s, lr) for s, lr in runs}

  def go():
    out = []
    for (s, lr) in runs:
      state, key = states[(s, lr)], jax.random.key(s + 1000)
      first = jrecord(state)
      for i in range(steps):
        state = jstep(state, i, key)
      out.append(jnp.stack([first, jrecord(state)]).block_until_ready())
    return out
  return timed(go)


def _single(ds, module, width, steps):
  init, step, record = _parts(ds, module, width)

  def run(seed, lr):
    state, key = init(seed, lr), jax.random.key(seed + 1000)
    first = record(state)
    state = jax.lax.fori_loop(0, steps, lambda i, st: step(st, i, key), state)
    return jnp.stack([first, record(state)])
  return run


def flax_scan(ds, module, width, seeds, lrs, steps):
  f = jax.jit(_single(ds, module, width, steps))
  runs = [(s, lr) for s in range(seeds) for lr in lrs]
  return timed(lambda: [f(s, lr).block_until_ready() for s, lr in runs])


def flax_vmap(ds, module, width, seeds, lrs, steps):
  f = jax.jit(jax.vmap(_single(ds, module, width, steps)))
  s = jnp.repeat(jnp.arange(seeds), len(lrs))
  lr = jnp.tile(jnp.asarray(lrs, jnp.float32), seeds)
  return timed(lambda: f(s, lr).block_until_ready())


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds per shape")
  ap.add_argument("--only", default="", help="shapes whose name contains this (e.g. cnn)")
  args = ap.parse_args()
  print(f"backend={jax.default_backend()} devices={jax.device_count()} jax={jax.__version__}; "
        f"median [min-max] of {args.repeats} interleaved rounds")
  others = ["flax-loop", "flax-scan", "flax-vmap"]
  cols = ["auto"] + others
  print(f"\n{'shape':10s} {'runs':>4s} {'steps':>5s} " + " ".join(f"{c:>19s}" for c in cols)
        + f" {'auto/best':>17s}  chosen")
  for name, module, width, seeds, lrs, steps in SHAPES:
    if args.only not in name:
      continue
    ds = dataset(module)
    timers = {"auto": engine_timer(ds, module, width, seeds, lrs, steps),
              "flax-loop": flax_loop(ds, module, width, seeds, lrs, steps),
              "flax-scan": flax_scan(ds, module, width, seeds, lrs, steps),
              "flax-vmap": flax_vmap(ds, module, width, seeds, lrs, steps)}
    t = interleaved(timers, args.repeats)
    best = min(others, key=lambda k: np.median(t[k]))
    print(f"{name:10s} {seeds * len(lrs):4d} {steps:5d} "
          + " ".join(f"{cell(t[c]):>19s}" for c in cols)
          + f" {ratio_cell(t['auto'] / t[best])}  {timers['auto'].info} (best other: {best})")
  print("auto/best < 1: the engine beat every Flax loop; ~: the per-round ratios include 1.")


if __name__ == "__main__":
  main()
