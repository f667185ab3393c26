"""Flax interop: wrapped linen and NNX modules behave exactly like the modules."""

import chex
import numpy as np
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

import jaxtheory.nn as jn
from jaxtheory.nn.flax import from_linen, from_nnx, linen_layer

D_IN, D_OUT = 3, 2


class LinenMLP(nn.Module):
  hidden: int = 16

  @nn.compact
  def __call__(self, x):
    x = jnp.tanh(nn.Dense(self.hidden)(x))
    return nn.Dense(D_OUT)(x)


class NNXMLP(nnx.Module):

  def __init__(self, hidden: int, *, rngs: nnx.Rngs):
    self.l1 = nnx.Linear(D_IN, hidden, rngs=rngs)
    self.l2 = nnx.Linear(hidden, D_OUT, rngs=rngs)

  def __call__(self, x):
    return self.l2(jnp.tanh(self.l1(x)))


def nnx_factory(rngs):
  return NNXMLP(16, rngs=rngs)


def data(n=8):
  kx, kw = jax.random.split(jax.random.key(42))
  x = jax.random.normal(kx, (n, D_IN))
  y = jnp.sin(x @ jax.random.normal(kw, (D_IN, D_OUT)))
  return x, y


def mse(pred, y):
  return jnp.mean((pred - y) ** 2)


# ----------------------------------------------------------------------------
# Same numbers as the module itself.


def test_linen_init_and_apply_match_module():
  module, key = LinenMLP(), jax.random.key(0)
  m = from_linen(module, (D_IN,))
  x, _ = data()
  params = m.init(key)
  chex.assert_trees_all_equal(params, module.init(key, jnp.zeros((1, D_IN))))
  chex.assert_trees_all_equal(m.apply(params, x), module.apply(params, x))
  assert m.apply(params, x).shape == (8, D_OUT)


def test_nnx_init_and_apply_match_module():
  key = jax.random.key(0)
  m = from_nnx(nnx_factory, (D_IN,))
  module = nnx_factory(nnx.Rngs(key))
  x, _ = data()
  params = m.init(key)
  chex.assert_trees_all_equal(params, nnx.state(module, nnx.Param))
  chex.assert_trees_all_equal(m.apply(params, x), module(x))


def test_nnx_instance_init_returns_its_params_whatever_the_key():
  module = nnx_factory(nnx.Rngs(3))
  m = from_nnx(module, (D_IN,))
  want = nnx.state(module, nnx.Param)
  chex.assert_trees_all_equal(m.init(jax.random.key(0)), want)
  chex.assert_trees_all_equal(m.init(jax.random.key(1)), want)


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_lr_scale_is_one_everywhere(kind):
  m = (from_linen(LinenMLP(), (D_IN,)) if kind == "linen"
       else from_nnx(nnx_factory, (D_IN,)))
  params, scales = m.init_with_lr_scale(jax.random.key(0))
  leaves = jax.tree.leaves(scales, is_leaf=lambda s: isinstance(s, jn.LRScale))
  assert len(leaves) == len(jax.tree.leaves(params)) == 4
  assert all(s == jn.LRScale(1.0, 1.0) for s in leaves)
  # Shaped like params: LRScale leaves sit exactly where the arrays are.
  jax.tree.map(lambda s, p: None, scales, params,
               is_leaf=lambda s: isinstance(s, jn.LRScale))


def test_linen_grads_match_module():
  module = LinenMLP()
  m = from_linen(module, (D_IN,))
  x, y = data()
  params = m.init(jax.random.key(0))
  ours = jax.grad(lambda p: mse(m.apply(p, x), y))(params)
  theirs = jax.grad(lambda p: mse(module.apply(p, x), y))(params)
  chex.assert_trees_all_equal(ours, theirs)


def test_nnx_grads_match_module():
  key = jax.random.key(0)
  m = from_nnx(nnx_factory, (D_IN,))
  x, y = data()
  ours = jax.grad(lambda p: mse(m.apply(p, x), y))(m.init(key))
  theirs = nnx.grad(lambda mod: mse(mod(x), y))(nnx_factory(nnx.Rngs(key)))
  chex.assert_trees_all_close(ours, theirs, rtol=0, atol=0)


# ----------------------------------------------------------------------------
# Transformations: vmap over seeds, jit.


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_vmapped_seeds_equal_loop(kind):
  m = (from_linen(LinenMLP(), (D_IN,)) if kind == "linen"
       else from_nnx(nnx_factory, (D_IN,)))
  x, _ = data()
  keys = jax.random.split(jax.random.key(0), 3)

  @jax.jit
  @jax.vmap
  def run(key):
    return m.apply(m.init(key), x)

  outs = run(keys)
  chex.assert_shape(outs, (3, 8, D_OUT))
  loop = jnp.stack([m.apply(m.init(k), x) for k in keys])
  chex.assert_trees_all_close(outs, loop, rtol=1e-6, atol=1e-6)
  assert not jnp.allclose(outs[0], outs[1])  # Seeds do differ.


# ----------------------------------------------------------------------------
# Training: 20 steps of Adam equal the plain Flax loop.

STEPS, LR = 20, 1e-2


def _train(loss, params, steps=STEPS):
  tx = optax.adam(LR)

  @jax.jit
  def step(params, opt):
    val, g = jax.value_and_grad(loss)(params)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), opt, val

  opt, losses = tx.init(params), []
  for _ in range(steps):
    params, opt, val = step(params, opt)
    losses.append(val)
  return params, jnp.array(losses + [loss(params)])


def test_linen_adam_matches_plain_flax_loop():
  module = LinenMLP()
  m = from_linen(module, (D_IN,))
  x, y = data()
  params0 = m.init(jax.random.key(0))
  ours, ours_losses = _train(lambda p: mse(m.apply(p, x), y), params0)
  theirs, their_losses = _train(lambda p: mse(module.apply(p, x), y),
                                module.init(jax.random.key(0), x[:1]))
  assert ours_losses[-1] < 0.5 * ours_losses[0]
  chex.assert_trees_all_close(ours, theirs, rtol=0, atol=0)
  chex.assert_trees_all_close(ours_losses, their_losses, rtol=0, atol=0)


def test_nnx_adam_matches_plain_flax_loop():
  m = from_nnx(nnx_factory, (D_IN,))
  x, y = data()
  ours, ours_losses = _train(lambda p: mse(m.apply(p, x), y),
                             m.init(jax.random.key(0)))

  module = nnx_factory(nnx.Rngs(jax.random.key(0)))
  optimizer = nnx.Optimizer(module, optax.adam(LR), wrt=nnx.Param)

  @nnx.jit
  def step(module, optimizer):
    val, g = nnx.value_and_grad(lambda mod: mse(mod(x), y))(module)
    optimizer.update(module, g)
    return val

  their_losses = [step(module, optimizer) for _ in range(STEPS)]
  their_losses.append(mse(module(x), y))
  assert ours_losses[-1] < 0.5 * ours_losses[0]
  chex.assert_trees_all_close(ours, nnx.state(module, nnx.Param), rtol=0, atol=0)
  chex.assert_trees_all_close(ours_losses, jnp.array(their_losses), rtol=0, atol=0)


# ----------------------------------------------------------------------------
# Composition and token inputs.


def test_linen_layer_composes_with_native_layers():
  m = jn.model(jn.serial(linen_layer(nn.Dense(5)), jn.relu(), jn.dense(D_OUT)), (D_IN,))
  x, _ = data()
  params = m.init(jax.random.key(0))
  hidden = jax.nn.relu(nn.Dense(5).apply(params[0], x))
  want, _ = jn.dense(D_OUT).apply(params[2], hidden, jn.Feat(), jn.Ctx())
  chex.assert_trees_all_close(m.apply(params, x), want)
  chex.assert_shape(want, (8, D_OUT))


def test_linen_token_model_with_int_inputs():
  m = from_linen(nn.Embed(10, 4), (6,), input_dtype=jnp.int32)
  tokens = jnp.arange(12).reshape(2, 6) % 10
  params = m.init(jax.random.key(0))
  chex.assert_trees_all_equal(m.apply(params, tokens),
                              params["params"]["embedding"][tokens])


# ----------------------------------------------------------------------------
# Bad input: the exact error a user gets.


@pytest.mark.parametrize("kind", ["linen", "nnx"])
@pytest.mark.parametrize("ctx, match", [
    (jn.Ctx(parametrization="mup"), "only supports parametrization 'sp', got 'mup'"),
    (jn.Ctx(width=8), "cannot be padded, so ctx.width must be None"),
    (jn.Ctx(init_scale=2.0), "ctx.init_scale must be 1.0"),
])
def test_bad_ctx_raises(kind, ctx, match):
  m = (from_linen(LinenMLP(), (D_IN,)) if kind == "linen"
       else from_nnx(nnx_factory, (D_IN,)))
  with pytest.raises(ValueError, match=match):
    m.init(jax.random.key(0), ctx)
  params = m.init(jax.random.key(0))
  if ctx.init_scale == 1.0:  # init_scale only matters at init.
    with pytest.raises(ValueError, match=match):
      m.apply(params, data()[0], ctx)


def test_linen_sample_input_shape_checked():
  with pytest.raises(ValueError, match=r"sample_input must have shape \(batch, 3\)"):
    from_linen(LinenMLP(), (D_IN,), sample_input=jnp.zeros((2, 4)))


# ----------------------------------------------------------------------------
# Width sweeps: a model that cannot be padded is built at each width.


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_width_sweep_of_a_flax_model_equals_separate_runs(kind):
  """No flag, no error: one bucket per width, seeds and learning rates batched inside
  it, and every run's trained parameters equal a plain optax loop at that width."""
  from jaxtheory import data as D, sweep
  widths, seeds, lrs, steps = [8, 16], [0, 1], [0.05, 0.2], 5
  build = ((lambda w: from_linen(LinenMLP(w), (D_IN,))) if kind == "linen" else
           (lambda w: from_nnx(lambda rngs: NNXMLP(w, rngs=rngs), (D_IN,))))
  ds = D.teacher_student(n_train=16, n_test=8, input_dim=D_IN, out_dim=D_OUT, seed=0)
  s = sweep.Sweep(build, ds, dict(seed=seeds, width=widths, lr=lrs), "sgd", steps=steps,
                  record=[steps], loss="mse")
  assert sweep.plan(s).buckets == [[16], [8]]
  res, groups = sweep.execute(s)
  assert len(groups) == 2 and all(len(g.runs) == len(seeds) * len(lrs) for g in groups)
  x, y = jnp.asarray(ds.x_train, jnp.float32), jnp.asarray(ds.y_train, jnp.float32)
  checked = 0
  for g in groups:
    for j in range(len(g.runs)):
      seed, w, lr = (g.coords[k][j] for k in ("seed", "width", "lr"))
      m = build(int(w))
      loss = lambda p: jnp.mean(0.5 * jnp.sum((m.apply(p, x) - y) ** 2, -1))
      p = m.init(jax.random.fold_in(jax.random.key(int(seed)), 0))
      for _ in range(steps):
        p = jax.tree.map(lambda a, d: a - lr * d, p, jax.grad(loss)(p))
      mine = jax.tree.map(lambda a: a[j], g.params)
      chex.assert_trees_all_close(mine, p, rtol=1e-5, atol=1e-6)
      got = res.train_loss.sel(seed=seed, width=w, lr=lr).isel(step=-1).item()
      np.testing.assert_allclose(got, loss(p), rtol=1e-5)
      checked += 1
  assert checked == len(widths) * len(seeds) * len(lrs)


# ----------------------------------------------------------------------------
# Probes read a Flax model's layers as they read the equivalent native model's.


class LinenMLP2(nn.Module):

  @nn.compact
  def __call__(self, x):
    for _ in range(2):
      x = jnp.tanh(nn.Dense(16)(x))
    return nn.Dense(D_OUT)(x)


def test_layer_features_of_a_flax_model_equal_the_native_ones():
  from jaxtheory import probes
  native = jn.mlp((D_IN,), 16, 2, D_OUT, activation=jn.tanh, b_std=1.0)
  p = native.init(jax.random.key(0))
  flax_params = {"params": {f"Dense_{i}": {"kernel": p[2 * i]["W"], "bias": p[2 * i]["b"]}
                            for i in range(3)}}
  m = from_linen(LinenMLP2(), (D_IN,))
  x, _ = data(32)
  want = probes.layer_features(native, p, x, where="hidden")
  got = probes.layer_features(m, flax_params, x, where="hidden")
  assert len(got) == len(want) == 2
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
  outs = probes.layer_features(m, flax_params, x, where="all")  # every Dense's output
  chex.assert_trees_all_close(outs[-1], native.apply(p, x), rtol=1e-5, atol=1e-6)
