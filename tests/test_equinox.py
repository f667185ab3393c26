"""Equinox interop: a wrapped eqx.Module behaves exactly like the module."""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import pytest

import jaxtheory.nn as jn
from jaxtheory.nn.equinox import eqx_layer, from_eqx

D_IN, D_OUT = 3, 2


def mlp_factory(width=16):
  return lambda key: eqx.nn.MLP(D_IN, D_OUT, width, 1, activation=jnp.tanh, key=key)


def data(n=8):
  kx, kw = jax.random.split(jax.random.key(42))
  x = jax.random.normal(kx, (n, D_IN))
  return x, jnp.sin(x @ jax.random.normal(kw, (D_IN, D_OUT)))


def test_init_and_apply_match_module():
  m = from_eqx(mlp_factory(), (D_IN,))
  key = jax.random.key(3)
  module = mlp_factory()(key)
  params = m.init(key)
  chex.assert_trees_all_equal(params, eqx.partition(module, eqx.is_inexact_array)[0])
  x, _ = data()
  chex.assert_trees_all_equal(m.apply(params, x), jax.vmap(module)(x))
  assert not m.paddable
  assert m.output_shape() == (D_OUT,)
  assert m.num_params() == D_IN * 16 + 16 + 16 * D_OUT + D_OUT


def test_instance_init_returns_its_params_whatever_the_key():
  module = mlp_factory()(jax.random.key(0))
  m = from_eqx(module, (D_IN,))
  chex.assert_trees_all_equal(m.init(jax.random.key(1)), m.init(jax.random.key(2)),
                              eqx.filter(module, eqx.is_inexact_array))


def test_batched_module_is_not_vmapped():
  m = from_eqx(lambda key: eqx.nn.Lambda(lambda x: x.sum(0, keepdims=True)), (D_IN,),
               batched=True)
  x, _ = data()
  chex.assert_trees_all_equal(m.apply(m.init(jax.random.key(0)), x), x.sum(0, keepdims=True))


def test_lr_scale_is_one_everywhere():
  _, scales = from_eqx(mlp_factory(), (D_IN,)).init_with_lr_scale(jax.random.key(0))
  leaves = jax.tree.leaves(scales)
  assert len(leaves) == 2 * 4 and all(v == 1.0 for v in leaves)


def test_vmapped_seeds_equal_loop():
  m = from_eqx(mlp_factory(), (D_IN,))
  x, _ = data()
  keys = jax.random.split(jax.random.key(0), 3)
  outs = jax.jit(jax.vmap(lambda k: m.apply(m.init(k), x)))(keys)
  loop = jnp.stack([m.apply(m.init(k), x) for k in keys])
  chex.assert_trees_all_close(outs, loop, rtol=1e-6, atol=1e-6)
  assert not jnp.allclose(outs[0], outs[1])


def test_adam_matches_plain_equinox_loop():
  """20 Adam steps through our Model equal the idiomatic eqx.filter_value_and_grad loop."""
  x, y = data()
  key, tx, steps = jax.random.key(5), optax.adam(1e-2), 20
  m = from_eqx(mlp_factory(), (D_IN,))
  loss = lambda p: jnp.mean((m.apply(p, x) - y) ** 2)
  params = m.init(key)
  opt = tx.init(params)
  for _ in range(steps):
    u, opt = tx.update(jax.grad(loss)(params), opt, params)
    params = optax.apply_updates(params, u)

  module = mlp_factory()(key)
  e_loss = lambda mod: jnp.mean((jax.vmap(mod)(x) - y) ** 2)
  e_opt = tx.init(eqx.filter(module, eqx.is_inexact_array))
  for _ in range(steps):
    g = eqx.filter_grad(e_loss)(module)
    u, e_opt = tx.update(g, e_opt, eqx.filter(module, eqx.is_inexact_array))
    module = eqx.apply_updates(module, u)
  assert loss(params) < 0.5 * loss(m.init(key))
  chex.assert_trees_all_close(params, eqx.filter(module, eqx.is_inexact_array),
                              rtol=1e-6, atol=1e-7)


def test_layer_composes_with_native_layers():
  m = jn.model(jn.serial(eqx_layer(lambda key: eqx.nn.Linear(D_IN, 5, key=key)), jn.relu(),
                         jn.dense(D_OUT)), (D_IN,))
  x, _ = data()
  params = m.init(jax.random.key(0))
  hidden = jax.nn.relu(x @ params[0].weight.T + params[0].bias[None])
  want, _ = jn.dense(D_OUT).apply(params[2], hidden, jn.Feat(), jn.Ctx())
  chex.assert_trees_all_close(m.apply(params, x), want, rtol=1e-6)


def test_width_sweep_equals_separate_runs():
  """One bucket per width; each run's trained parameters equal a plain loop at that width."""
  from jaxtheory import data as D, sweep
  widths, seeds, lr, steps = [4, 8], [0, 1], 0.1, 5
  build = lambda w: from_eqx(mlp_factory(w), (D_IN,))
  ds = D.teacher_student(n_train=16, n_test=8, input_dim=D_IN, out_dim=D_OUT, seed=0)
  s = sweep.Sweep(build, ds, dict(seed=seeds, width=widths), "sgd", dict(lr=lr),
                  steps=steps, record=[steps], loss="mse")
  assert sweep.plan(s).buckets == [[8], [4]]
  _, groups = sweep.execute(s)
  x, y = jnp.asarray(ds.x_train, jnp.float32), jnp.asarray(ds.y_train, jnp.float32)
  n = 0
  for g in groups:
    for j in range(len(g.runs)):
      m = build(int(g.coords["width"][j]))
      loss = lambda p: jnp.mean(0.5 * jnp.sum((m.apply(p, x) - y) ** 2, -1))
      p = m.init(jax.random.fold_in(jax.random.key(int(g.coords["seed"][j])), 0))
      for _ in range(steps):
        p = jax.tree.map(lambda a, d: a - lr * d, p, jax.grad(loss)(p))
      chex.assert_trees_all_close(jax.tree.map(lambda a: a[j], g.params), p,
                                  rtol=1e-5, atol=1e-6)
      n += 1
  assert n == len(widths) * len(seeds)


# ----------------------------------------------------------------------------
# Bad input: the exact error a user gets.


@pytest.mark.parametrize("ctx, match", [
    (jn.Ctx(parametrization="mup"), "only supports parametrization 'sp', got 'mup'"),
    (jn.Ctx(width=8), "cannot be padded, so ctx.width must be None"),
    (jn.Ctx(init_scale=2.0), "ctx.init_scale must be 1.0"),
])
def test_bad_ctx_raises(ctx, match):
  m = from_eqx(mlp_factory(), (D_IN,))
  with pytest.raises(ValueError, match=match):
    m.init(jax.random.key(0), ctx)


class _IntBuffer(eqx.Module):
  w: jax.Array
  counts: jax.Array

  def __call__(self, x):
    return x @ self.w


def test_integer_arrays_raise():
  module = _IntBuffer(jnp.ones((D_IN, D_OUT)), jnp.zeros((3,), jnp.int32))
  with pytest.raises(ValueError, match=r"arrays that are not float parameters \(int32\)"):
    from_eqx(module, (D_IN,))


def test_not_a_module_raises():
  with pytest.raises(TypeError, match="expects an eqx.Module or a factory"):
    from_eqx(3, (D_IN,))


def test_layer_features_of_an_equinox_mlp_equal_the_native_ones():
  from jaxtheory import probes
  native = jn.mlp((D_IN,), 16, 2, D_OUT, activation=jn.tanh, b_std=1.0)
  p = native.init(jax.random.key(0))
  m = from_eqx(lambda key: eqx.nn.MLP(D_IN, D_OUT, 16, 2, activation=jnp.tanh, key=key),
               (D_IN,))
  q = m.init(jax.random.key(1))
  q = eqx.tree_at(lambda t: [x for l in t.layers for x in (l.weight, l.bias)], q,
                  [x for i in range(3) for x in (p[2 * i]["W"].T, p[2 * i]["b"])])
  x, _ = data(32)
  want = probes.layer_features(native, p, x, where="hidden")
  got = probes.layer_features(m, q, x, where="hidden")
  assert len(got) == len(want) == 2
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(m.apply(q, x), native.apply(p, x), rtol=1e-5, atol=1e-6)
