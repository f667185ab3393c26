"""Parametrizations by base shapes: native roles reproduced, Flax and Equinox muP equal
native muP, and every parametrization equals SP at the base width."""

import chex
import equinox as eqx
import flax.linen as linen
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxtheory.nn as jn
from jaxtheory.errors import ConfigError
from jaxtheory.nn import base_shapes as bs
from jaxtheory.nn.equinox import from_eqx
from jaxtheory.nn.flax import from_linen, from_nnx

D_IN, D_OUT, WIDTH = 5, 3, 32
PARAMS = ("sp", "ntk", "mup", "mf")
is_lr = lambda s: isinstance(s, jn.LRScale)


def native(width, b_std=1.0):
  return jn.mlp((D_IN,), width, 2, D_OUT, b_std=b_std)


def native_ctx(p, width, base):
  return jn.Ctx(p) if base is None else jn.Ctx(p, width=width, base_width=base)


def data(n=16):
  kx, kw = jax.random.split(jax.random.key(7))
  x = jax.random.normal(kx, (n, D_IN))
  return x, jnp.tanh(x @ jax.random.normal(kw, (D_IN, D_OUT)))


@pytest.mark.parametrize("base", [None, 8])
@pytest.mark.parametrize("p", PARAMS)
def test_inference_on_native_mlp_reproduces_its_roles_multipliers_and_init(p, base):
  """The native MLP, seen only through its shapes (as a foreign model), gets back the
  roles, learning-rate multipliers, initial parameters and outputs of nn.param's rules."""
  wrapped = bs.parametrize(native, base)(WIDTH)
  roles = bs.roles(native, WIDTH)
  assert [(r["W"], r["b"]) for r in roles if r] == [
      ("input", "vector"), ("hidden", "vector"), ("output", "fixed")]
  key, x = jax.random.key(1), data()[0]
  ctx = native_ctx(p, WIDTH, base)
  want_p, want_lr = native(WIDTH).init_with_lr_scale(key, ctx)
  got_p, got_lr = wrapped.init_with_lr_scale(key, jn.Ctx(p))
  chex.assert_trees_all_close(got_lr, want_lr, rtol=1e-6)
  chex.assert_trees_all_close(got_p, want_p, rtol=1e-6, atol=1e-7)
  chex.assert_trees_all_close(wrapped.apply(got_p, x, jn.Ctx(p)),
                              native(WIDTH).apply(want_p, x, ctx), rtol=1e-5, atol=1e-6)


def test_base_shapes_ratios_and_equinox_layout():
  build = lambda w: from_eqx(lambda key: eqx.nn.MLP(D_IN, D_OUT, w, 2, key=key), (D_IN,))
  sp = jax.eval_shape(build(64).init, jax.random.key(0))
  other = jax.eval_shape(build(128).init, jax.random.key(0))
  base = jax.eval_shape(build(16).init, jax.random.key(0))
  shapes = bs.infer(sp, other, base, layout="out_in")
  got = [(l.weight.role, l.weight.ratio, l.bias.role, l.bias.ratio) for l in shapes.layers]
  assert got == [("input", 4.0, "vector", 4.0), ("hidden", 4.0, "vector", 4.0),
                 ("output", 4.0, "fixed", 1.0)]
  assert shapes.layers[1].weight.fan_in == 64 and shapes.layers[2].weight.n == 64
  # The Equinox adapter states its layout, so parametrize reads it without being told.
  assert build(8).layout == "out_in"
  got = bs.roles(build, 32)
  assert [(l.weight, l.bias) for l in got.layers] == [
      ("input", "vector"), ("hidden", "vector"), ("output", "fixed")]
  assert jax.tree.leaves(got) == jax.tree.leaves(bs.roles(build, 32, layout="out_in"))
  with pytest.raises(ValueError, match="states its weights are 'out_in'"):
    bs.parametrize(build, 16, layout="in_out")(32)
  with pytest.raises(ValueError, match="states its weights are 'in_out'"):
    bs.roles(linen_build, 32, layout="out_in")


# ----------------------------------------------------------------------------
# Flax and Equinox MLPs under muP by base shapes equal the native muP MLP.


class LinenMLP(linen.Module):
  width: int

  @linen.compact
  def __call__(self, x):
    for i in range(2):
      x = linen.relu(linen.Dense(self.width, name=f"l{i}")(x))
    return linen.Dense(D_OUT, name="l2")(x)


class Heads(linen.Module):
  """Self-attention with 4 heads: a width that 4 does not divide fails Flax's own assertion."""
  width: int

  @linen.compact
  def __call__(self, x):
    h = linen.Dense(self.width)(x)[:, None, :]
    return linen.Dense(D_OUT)(linen.MultiHeadDotProductAttention(4)(h)[:, 0])


def linen_build(w):
  return from_linen(LinenMLP(w), (D_IN,))


def eqx_build(w):
  return from_eqx(lambda key: eqx.nn.MLP(D_IN, D_OUT, w, 2, activation=jax.nn.relu, key=key),
                  (D_IN,))


def to_linen(p):
  return {"params": {f"l{i}": {"kernel": p[2 * i]["W"], "bias": p[2 * i]["b"]} for i in range(3)}}


def from_linen_params(q):
  layers = [{"W": q["params"][f"l{i}"]["kernel"], "b": q["params"][f"l{i}"]["bias"]}
            for i in range(3)]
  return (layers[0], (), layers[1], (), layers[2])


def eqx_converters():
  template = eqx_build(WIDTH).init(jax.random.key(0))
  get = lambda q: [x for l in q.layers for x in (l.weight, l.bias)]

  def to(p):
    vals = [x for i in range(3) for x in (p[2 * i]["W"].T, p[2 * i]["b"])]
    return eqx.tree_at(get, template, vals)

  def back(q):
    v = get(q)
    layers = [{"W": v[2 * i].T, "b": v[2 * i + 1]} for i in range(3)]
    return (layers[0], (), layers[1], (), layers[2])

  return to, back


def _train(m, params, lr_mult, ctx, tx, steps=100):
  x, y = data()
  tx = optax.chain(tx, bs.scale_by_lr_mult(lr_mult))
  loss = lambda p: jnp.mean(jnp.sum((m.apply(p, x, ctx) - y) ** 2, -1))

  def step(_, c):
    p, s = c
    u, s = tx.update(jax.grad(loss)(p), s, p)
    return optax.apply_updates(p, u), s

  return jax.jit(lambda p: jax.lax.fori_loop(0, steps, step, (p, tx.init(p)))[0])(params)


@pytest.mark.parametrize("framework", ["linen", "eqx"])
@pytest.mark.parametrize("opt, lr", [("sgd", 0.05), ("adam", 3e-3)])
def test_flax_and_equinox_mlps_under_mup_equal_native_mup(framework, opt, lr):
  """Same draws (the native SP init, moved into the foreign layout), then the same
  muP init and, after 100 steps of SGD or Adam, the same parameters (1e-6, float32)."""
  build, (to, back) = ((linen_build, (to_linen, from_linen_params)) if framework == "linen"
                       else (eqx_build, eqx_converters()))
  key, ctx = jax.random.key(3), jn.Ctx("mup")
  nat = native(WIDTH)
  sp_draws = nat.init(key, jn.Ctx("sp"))
  want, want_lr = nat.init_with_lr_scale(key, ctx)

  shape = lambda w: jax.eval_shape(build(w).init, jax.random.key(0))
  layout = "in_out" if framework == "linen" else "out_in"
  shapes = bs.infer(shape(WIDTH), shape(2 * WIDTH), None, layout)
  got, _, got_lr = bs.reparametrize(to(sp_draws), shapes, ctx)
  chex.assert_trees_all_close(back(got), want, rtol=1e-6, atol=1e-7)

  m = bs.parametrize(build, layout=layout)(WIDTH)
  tx = optax.sgd(lr) if opt == "sgd" else optax.adam(lr)
  trained = _train(m, got, bs.family(got_lr, opt), ctx, tx)
  trained_native = _train(nat, want, bs.family(want_lr, opt), ctx, tx)
  moved = jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), trained_native, want)
  assert max(jax.tree.leaves(moved)) > 1e-2  # training did move the parameters
  chex.assert_trees_all_close(back(trained), trained_native, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------
# At the base width every parametrization is SP (init and first update).


def _first_updates(m, ctx, key, x, y):
  """Outputs at init and after one SGD step and one Adam step."""
  params, scales = m.init_with_lr_scale(key, ctx)
  loss = lambda p: jnp.mean(jnp.sum((m.apply(p, x, ctx) - y) ** 2, -1))
  g = jax.grad(loss)(params)
  outs = [m.apply(params, x, ctx)]
  # Adam is invariant to a gradient's scale (NTK and mf store w = W / mult) only up to eps.
  for name, tx in (("sgd", optax.sgd(0.1)), ("adam", optax.adam(1e-2, eps=1e-20))):
    tx = optax.chain(tx, bs.scale_by_lr_mult(bs.family(scales, name)))
    u, _ = tx.update(g, tx.init(params), params)
    outs.append(m.apply(optax.apply_updates(params, u), x, ctx))
  return outs


@pytest.mark.parametrize("kind", ["native", "linen"])
@pytest.mark.parametrize("p", ["ntk", "mup", "mf"])
def test_at_the_base_width_every_parametrization_is_sp(kind, p):
  x, y = data()
  key, base = jax.random.key(0), 16
  if kind == "native":
    m, ctx, ctx_sp = native(base), jn.Ctx(p, width=base, base_width=base), jn.Ctx("sp")
  else:
    m, ctx, ctx_sp = bs.parametrize(linen_build, base)(base), jn.Ctx(p), jn.Ctx("sp")
  got, want = _first_updates(m, ctx, key, x, y), _first_updates(m, ctx_sp, key, x, y)
  assert not jnp.allclose(want[0], want[1])  # the step changes the function
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
  # ... and away from it, it is not SP.
  m2 = native(4 * base) if kind == "native" else bs.parametrize(linen_build, base)(4 * base)
  ctx2 = jn.Ctx(p, width=4 * base, base_width=base) if kind == "native" else ctx
  assert not jnp.allclose(_first_updates(m2, ctx2, key, x, y)[1],
                          _first_updates(m2, ctx_sp, key, x, y)[1], atol=1e-4)


# ----------------------------------------------------------------------------
# Bad input.


def test_bad_input_raises():
  with pytest.raises(ValueError, match="layout must be one of in_out, out_in"):
    bs.parametrize(linen_build, layout="io")
  with pytest.raises(ValueError, match="base_width must be a positive integer or None"):
    bs.parametrize(linen_build, base_width=0)
  with pytest.raises(ValueError, match="no parameter changes shape with the width"):
    bs.parametrize(lambda w: from_linen(linen.Dense(D_OUT), (D_IN,)))(8)
  m = bs.parametrize(linen_build, 8)(16)
  with pytest.raises(ValueError, match="ctx.width and ctx.base_width must be None"):
    m.init(jax.random.key(0), jn.Ctx("mup", width=16))
  with pytest.raises(ValueError, match=r"ctx.base_width needs ctx.width"):
    native(8).init(jax.random.key(0), jn.Ctx("mup", base_width=8))


# ----------------------------------------------------------------------------
# Sweeps: base_width as a hyperparameter of native models.


def test_native_sweep_with_base_width_runs_sp_at_the_base_width():
  """muP with base_width=16 trains the width-16 run (padded inside the width-32 bucket)
  exactly as SP does, and the width-32 run differently."""
  from jaxtheory import data as D, sweep
  ds = D.teacher_student(n_train=32, n_test=8, input_dim=D_IN, out_dim=D_OUT, seed=0)
  run = lambda p, hp: sweep.run(sweep.Sweep(
      lambda w: native(w, b_std=0.5), ds, dict(width=[16, 32]), "adam",
      dict(lr=1e-2, **hp), steps=20, record=[1, 20], loss="mse", parametrization=p,
      max_waste=2.0))
  mup = run("mup", dict(base_width=16)).train_loss.isel(seed=0)
  sp = run("sp", {}).train_loss.isel(seed=0)
  padded = sweep.Sweep(native, ds, dict(width=[16, 32]), steps=1, max_waste=2.0)
  assert sweep.plan(padded).buckets == [[32, 16]]
  chex.assert_trees_all_close(mup.sel(width=16).values, sp.sel(width=16).values, rtol=1e-5)
  assert abs(float(mup.sel(width=32)[-1]) - float(sp.sel(width=32)[-1])) > 1e-4


def test_base_width_for_a_foreign_model_is_a_config_error():
  from jaxtheory import data as D, sweep
  ds = D.teacher_student(n_train=8, n_test=8, input_dim=D_IN, out_dim=D_OUT, seed=0)
  s = sweep.Sweep(linen_build, ds, dict(width=[8]), hparams=dict(base_width=8), steps=1)
  with pytest.raises(ConfigError, match="base_width applies to native models"):
    sweep.plan(s)


def test_a_multi_head_bias_is_a_vector():
  """Flax attention's query/key/value biases are (heads, head_dim): named bias, so vectors."""
  build = lambda w: from_linen(Heads(w), (D_IN,))
  got = bs.roles(build, 16)["params"]["MultiHeadDotProductAttention_0"]
  assert {k: (v["kernel"], v["bias"]) for k, v in got.items()} == {
      "query": ("hidden", "vector"), "key": ("hidden", "vector"),
      "value": ("hidden", "vector"), "out": ("hidden", "vector")}


class EqxEmbed(eqx.Module):
  """Tokens -> an Equinox embedding (its weight (vocab, width), whatever the layout) -> Linear."""
  emb: eqx.nn.Embedding
  out: eqx.nn.Linear

  def __init__(self, w, key):
    a, b = jax.random.split(key)
    self.emb, self.out = eqx.nn.Embedding(20, w, key=a), eqx.nn.Linear(w, D_OUT, key=b)

  def __call__(self, t):
    return self.out(jax.vmap(self.emb)(t).mean(0))


def test_an_embedding_table_is_an_input_in_every_framework():
  got = bs.roles(lambda w: from_eqx(lambda k: EqxEmbed(w, k), (5,), input_dtype=jnp.int32), 16)
  assert (got.emb.weight, got.out.weight, got.out.bias) == ("input", "output", "fixed")
  got = bs.roles(lambda w: from_nnx(lambda rngs: NNXAttention(w, rngs), (3, D_IN)), 8)
  # NNX paths end in the variable's .value; the (heads, head_dim) biases are vectors.
  assert {k: got["att"][k]["bias"].get_value() for k in ("query", "key", "value")} == dict.fromkeys(
      ("query", "key", "value"), "vector")
  assert got["att"]["query"]["kernel"].get_value() == "hidden"


class NNXAttention(nnx.Module):

  def __init__(self, w, rngs):
    self.inp = nnx.Linear(D_IN, w, rngs=rngs)
    self.att = nnx.MultiHeadAttention(2, w, decode=False, rngs=rngs)

  def __call__(self, x):
    return self.att(self.inp(x))


def test_what_a_plain_foreign_model_cannot_do_is_a_config_error_before_training():
  """Traced inside the sweep, init_scale or a parametrization would be silently ignored (the
  runs train as SP, labelled otherwise); planning asks each model with concrete values."""
  from jaxtheory import data as D, sweep
  ds = D.teacher_student(n_train=8, n_test=8, input_dim=D_IN, out_dim=D_OUT, seed=0)
  plan = lambda build=linen_build, **kw: sweep.plan(sweep.Sweep(build, ds, steps=1, **kw))
  with pytest.raises(ConfigError, match="at width 8 cannot run parametrization 'sp' at "
                     "init_scale 2: .*init cannot be rescaled"):
    plan(grid=dict(width=[8, 16], init_scale=[1.0, 2.0]))
  with pytest.raises(ConfigError, match="init_scale 3"):
    plan(grid=dict(width=[8]), hparams=dict(init_scale=3.0))
  with pytest.raises(ConfigError, match="cannot run parametrization 'mup'.*base_shapes"):
    plan(grid=dict(width=[8], parametrization=["sp", "mup"]))
  with pytest.raises(ConfigError, match="widths 8 and 16 has the same parameter shapes"):
    plan(lambda w: linen_build(8), grid=dict(width=[8, 16]))
  # A module in place of the function, or one that fails at some width: named, one line.
  with pytest.raises(ConfigError, match=r"must be a function width -> Model .*got a Flax "
                     r"module \(LinenMLP\)"):
    plan(LinenMLP(8), grid=dict(width=[8]))
  with pytest.raises(ConfigError, match=r"sweep.model\(8\) failed: ValueError: no 8"):
    plan(lambda w: (_ for _ in ()).throw(ValueError(f"no {w}")), grid=dict(width=[8]))
  with pytest.raises(ConfigError, match=r"sweep.model\(6\) failed: AssertionError: Memory "
                     r"dimension \(6\) must be divisible"):
    plan(lambda w: from_linen(Heads(w), (D_IN,)), grid=dict(width=[8, 6]))
  from jaxtheory.nn import foreign, model  # a user's own init/apply, failing only when traced
  own = lambda w: model(foreign.layer(lambda p, x: x @ p[:, :D_OUT],
                                      lambda k: jnp.zeros((D_IN + 1, w)), "own"), (D_IN,),
                        paddable=False)
  with pytest.raises(ConfigError, match="built at width 8 fails to initialize: TypeError"):
    plan(own, grid=dict(width=[8]))
  with pytest.raises(ValueError, match="build.width. must return a jaxtheory Model.*got "
                     "LinenMLP"):
    bs.parametrize(lambda w: LinenMLP(w))(8)
  # Wrapped by base shapes it takes them all; a native model was never asked.
  plan(bs.parametrize(linen_build), grid=dict(width=[8, 16], init_scale=[1.0, 2.0],
                                               parametrization=["sp", "mup"]))
  plan(native, grid=dict(width=[8, 16], init_scale=[1.0, 2.0]))


def test_parametrization_as_a_grid_axis_equals_separate_sweeps():
  from jaxtheory import data as D, sweep
  ds = D.teacher_student(n_train=16, n_test=8, input_dim=D_IN, out_dim=D_OUT, seed=0)
  make = lambda grid, p="sp": sweep.Sweep(native, ds, grid, "sgd", dict(lr=0.1), steps=5,
                                          record=[5], loss="mse", parametrization=p)
  both = sweep.run(make(dict(parametrization=["sp", "mup"], width=[8])), progress=False)
  assert both.train_loss.dims[0] == "parametrization"
  one = sweep.run(make(dict(width=[8]), "mup"), progress=False)
  chex.assert_trees_all_close(both.train_loss.sel(parametrization="mup").values,
                              one.train_loss.values, rtol=1e-6)
  assert not np.allclose(both.train_loss.sel(parametrization="sp").values,
                         one.train_loss.values)
  with pytest.raises(ConfigError, match="unknown parametrization 'mu'"):
    sweep.run(make(dict(parametrization=["mu"], width=[8])), progress=False)
