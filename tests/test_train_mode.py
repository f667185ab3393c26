"""Models that train in a mode of their own: dropout and batch norm in linen, NNX and Equinox.

Each sweep is checked against the framework's own training loop written out
by hand (its apply with mutable batch statistics, its keys, optax SGD), run
by run, and its recorded metrics against the framework's evaluation mode.
"""

import warnings

import chex
import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxtheory import data as D
from jaxtheory import probes, sweep, train
from jaxtheory.errors import ConfigError
from jaxtheory.nn import Ctx, convops
from jaxtheory.nn.equinox import from_eqx
from jaxtheory.nn.flax import from_linen, from_nnx

D_IN, D_OUT, N, STEPS = 3, 2, 16, 4
SEEDS, LRS = [0, 1], [0.05, 0.2]


class LinenNet(nn.Module):
  width: int
  rate: float = 0.3

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Dense(self.width)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.8)(x)
    x = nn.Dropout(self.rate, deterministic=not train)(jnp.tanh(x))
    return nn.Dense(D_OUT)(x)


class NNXNet(nnx.Module):

  def __init__(self, width: int, *, rngs: nnx.Rngs, rate: float = 0.0):
    self.l1 = nnx.Linear(D_IN, width, rngs=rngs)
    self.bn = nnx.BatchNorm(width, momentum=0.8, rngs=rngs)
    self.drop = nnx.Dropout(rate, rngs=rngs)
    self.l2 = nnx.Linear(width, D_OUT, rngs=rngs)

  def __call__(self, x):
    return self.l2(self.drop(jnp.tanh(self.bn(self.l1(x)))))


def eqx_net(width: int, rate: float = 0.0):
  def build(key):
    k1, k2 = jax.random.split(key)
    return eqx.nn.Sequential([
        eqx.nn.Linear(D_IN, width, key=k1),
        eqx.nn.BatchNorm(width, "batch", momentum=0.8, mode="ema"),
        eqx.nn.Lambda(jnp.tanh), eqx.nn.Dropout(rate), eqx.nn.Linear(width, D_OUT, key=k2)])
  return build


def linen_model(w, rate=0.3):
  return from_linen(LinenNet(w, rate), (D_IN,), train_kwargs={"train": True},
                    eval_kwargs={"train": False})


def regression():
  return D.teacher_student(n_train=N, n_test=8, input_dim=D_IN, out_dim=D_OUT, seed=0)


def half_mse(out, y):
  return jnp.mean(0.5 * jnp.sum((out - y) ** 2, -1))


def step_key(seed: int, step: int):
  """The key of a run's step, as :func:`jaxtheory.train.train_key` documents it."""
  data_key = jax.random.fold_in(jax.random.key(seed), 2)
  return jax.random.fold_in(jax.random.fold_in(data_key, 2**32 - 1), step)


def run_sweep(build, width=8, **kw):
  ds = regression()
  s = sweep.Sweep(build, ds, dict(seed=SEEDS, width=[width], lr=LRS), "sgd", steps=STEPS,
                  record=[STEPS], loss="mse", **kw)
  res, groups = sweep.execute(s, progress=False)
  (g,) = groups
  return ds, res, g


def each_run(g):
  for j in range(len(g.runs)):
    yield (int(g.coords["seed"][j]), float(g.coords["lr"][j]),
           jax.tree.map(lambda a, j=j: a[j], g.params))


def test_linen_batch_norm_and_dropout_sweep_equals_a_plain_flax_loop():
  module = LinenNet(8)
  ds, res, g = run_sweep(lambda w: linen_model(w))
  x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
  for seed, lr, mine in each_run(g):
    init_key = jax.random.fold_in(jax.random.key(seed), 0)
    v = module.init({"params": init_key, "dropout": jax.random.fold_in(init_key, 1)}, x[:1])
    params, stats = v["params"], v["batch_stats"]
    for t in range(STEPS):
      def loss(p):
        out, upd = module.apply({"params": p, "batch_stats": stats}, x, train=True,
                                rngs={"dropout": jax.random.fold_in(step_key(seed, t), 0)},
                                mutable=["batch_stats"])
        return half_mse(out, y), upd["batch_stats"]
      grads, stats = jax.grad(loss, has_aux=True)(params)
      params = jax.tree.map(lambda a, d: a - lr * d, params, grads)
    chex.assert_trees_all_close(mine, {"params": params, "batch_stats": stats},
                                rtol=1e-5, atol=1e-6)
    # Recorded metrics evaluate: running statistics, no dropout.
    out = module.apply({"params": params, "batch_stats": stats}, jnp.asarray(ds.x_test),
                       train=False)
    got = res.test_loss.sel(seed=seed, lr=lr).isel(step=-1).item()
    np.testing.assert_allclose(got, half_mse(out, jnp.asarray(ds.y_test)), rtol=1e-5)
    # The state is not trained: the parameter norm counts the parameters alone.
    np.testing.assert_allclose(res.param_norm.sel(seed=seed, lr=lr).isel(step=-1).item(),
                               optax.tree.norm(params), rtol=1e-5)


def test_nnx_batch_norm_sweep_equals_nnx_training_mode():
  ds, res, g = run_sweep(lambda w: from_nnx(lambda rngs: NNXNet(w, rngs=rngs), (D_IN,)))
  x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
  for seed, lr, mine in each_run(g):
    module = NNXNet(8, rngs=nnx.Rngs(jax.random.fold_in(jax.random.key(seed), 0)))
    module.train()
    opt = nnx.Optimizer(module, optax.sgd(lr), wrt=nnx.Param)
    for _ in range(STEPS):
      grads = nnx.grad(lambda m: half_mse(m(x), y))(module)
      opt.update(module, grads)
    chex.assert_trees_all_close(mine["params"], nnx.state(module, nnx.Param), rtol=1e-5,
                                atol=1e-6)
    chex.assert_trees_all_close(mine["state"], nnx.state(module, nnx.BatchStat), rtol=1e-5,
                                atol=1e-6)
    module.eval()
    got = res.test_loss.sel(seed=seed, lr=lr).isel(step=-1).item()
    np.testing.assert_allclose(got, half_mse(module(jnp.asarray(ds.x_test)),
                                             jnp.asarray(ds.y_test)), rtol=1e-5)


def test_equinox_batch_norm_sweep_equals_an_equinox_loop():
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    ds, res, g = run_sweep(lambda w: from_eqx(eqx_net(w), (D_IN,)))
  x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
  for seed, lr, mine in each_run(g):
    module, state = eqx.nn.make_with_state(eqx_net(8))(
        jax.random.fold_in(jax.random.key(seed), 0))
    params, static = eqx.partition(module, eqx.is_inexact_array,
                                   is_leaf=lambda x: isinstance(x, eqx.nn.StateIndex))

    for _ in range(STEPS):
      def loss(p, state):
        m = eqx.combine(p, static)
        out, state = jax.vmap(lambda e: m(e, state), axis_name="batch",
                              out_axes=(0, None))(x)
        return half_mse(out, y), state
      grads, state = jax.grad(loss, has_aux=True)(params, state)
      params = jax.tree.map(lambda a, d: a - lr * d, params, grads)
    chex.assert_trees_all_close(mine["params"], params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(jax.tree.leaves(mine["state"]), jax.tree.leaves(state),
                                rtol=1e-5, atol=1e-6)
    m = eqx.nn.inference_mode(eqx.combine(params, static))
    out = jax.vmap(lambda e: m(e, state)[0], axis_name="batch")(jnp.asarray(ds.x_test))
    got = res.test_loss.sel(seed=seed, lr=lr).isel(step=-1).item()
    np.testing.assert_allclose(got, half_mse(out, jnp.asarray(ds.y_test)), rtol=1e-5)


@pytest.mark.parametrize("kind", ["linen", "nnx", "eqx"])
def test_dropout_draws_a_fresh_mask_each_step_and_reproduces(kind):
  """Dropout changes training (against rate 0), the same sweep twice gives the same
  numbers, and the masks differ between steps (two steps' outputs on one batch)."""
  build = {"linen": lambda rate: (lambda w: linen_model(w, rate)),
           "nnx": lambda rate: (lambda w: from_nnx(
               lambda rngs: NNXNet(w, rngs=rngs, rate=rate), (D_IN,))),
           "eqx": lambda rate: (lambda w: from_eqx(eqx_net(w, rate), (D_IN,)))}[kind]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    a = run_sweep(build(0.5))[1].train_loss.values
    b = run_sweep(build(0.5))[1].train_loss.values
    c = run_sweep(build(0.0))[1].train_loss.values
    m = build(0.5)(8)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  x = jnp.asarray(regression().x_train)
  p = m.init(jax.random.key(0))
  y0 = m.train_apply(p, x, jax.random.key(1))[0]
  y1 = m.train_apply(p, x, jax.random.key(2))[0]
  assert not np.allclose(y0, y1)
  np.testing.assert_array_equal(y0, m.train_apply(p, x, jax.random.key(1))[0])


def test_minibatches_of_a_model_with_batch_statistics_are_full():
  """Its statistics would count a partial batch's missing examples: epochs drop it."""
  ds = D.teacher_student(n_train=10, n_test=4, input_dim=D_IN, out_dim=D_OUT, seed=0)
  data = {k: jnp.asarray(v) for k, v in
          dict(x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test).items()}
  for build, full in [(linen_model, True), (lambda w: from_linen(nn.Dense(D_OUT), (D_IN,)), False)]:
    tr = train.Trainer(build(4), "mse", "sgd", padded=False, batch_size=4)
    st = tr.init(dict(seed=0, lr=0.1), data)
    sizes = []
    for step in range(6):
      sizes.append(float(train._batch(tr, st._replace(step=jnp.asarray(step)), data)[2].sum()))
    assert sizes == ([4.0] * 6 if full else [4.0, 4.0, 2.0] * 2)


def test_what_batch_statistics_cannot_train_exactly_is_refused():
  ds = regression()
  base = dict(model=lambda w: linen_model(w), data=ds, optimizer="sgd",
              hparams={"lr": 0.1}, steps=2)
  with pytest.raises(ConfigError, match="trained full-batch would count the examples left out"):
    sweep.plan(sweep.Sweep(grid={"seed": [0], "width": [4], "n_train": [8, 16]}, **base))
  with pytest.raises(ConfigError, match="batch_size=32 is larger than the 16 training examples"):
    sweep.plan(sweep.Sweep(grid={"seed": [0], "width": [4]}, batch_size=32, **base))
  sweep.plan(sweep.Sweep(grid={"seed": [0], "width": [4], "n_train": [8, 16]}, batch_size=8,
                         **base))


def test_a_module_that_cannot_evaluate_says_how_to_make_it():
  class AlwaysBatchStats(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.BatchNorm(use_running_average=False)(nn.Dense(4)(x))

  class AlwaysDropout(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dropout(0.5, deterministic=False)(nn.Dense(4)(x))

  with pytest.raises(ValueError, match=r"updates its variables when it evaluates.*eval_kwargs"):
    from_linen(AlwaysBatchStats(), (D_IN,))
  with pytest.raises(ValueError, match=r"draws random numbers when it evaluates.*eval_kwargs"):
    from_linen(AlwaysDropout(), (D_IN,))
  with pytest.raises(ValueError, match="pass a factory key -> module"):
    from_eqx(eqx.nn.make_with_state(eqx_net(4))(jax.random.key(0))[0], (D_IN,))


def test_probes_read_a_batch_norm_model_in_evaluation_mode():
  m = linen_model(8)
  p = m.init(jax.random.key(0))
  x = jnp.asarray(regression().x_test)
  _, p = m.train_apply(p, x, jax.random.key(1))  # running statistics away from their init
  feats = probes.layer_features(m, p, x, where="all")
  assert len(feats) == 4  # Dense, BatchNorm, Dropout, Dense
  np.testing.assert_allclose(feats[-1], m.apply(p, x), rtol=1e-6)
  v = p["batch_stats"]["BatchNorm_0"]
  row = lambda a: a[None, :]
  h = x @ p["params"]["Dense_0"]["kernel"] + row(p["params"]["Dense_0"]["bias"])
  bn = p["params"]["BatchNorm_0"]
  want = ((h - row(v["mean"])) / jnp.sqrt(row(v["var"]) + 1e-5) * row(bn["scale"])
          + row(bn["bias"]))
  np.testing.assert_allclose(feats[1], want, rtol=1e-5, atol=1e-6)


def test_base_shapes_reparametrize_a_batch_norm_model_and_leave_its_statistics_alone():
  """At its base width every parametrization trains as SP (batch norm and dropout included);
  at twice the width muP differs, and the running statistics start where the module puts them."""
  from jaxtheory.nn.base_shapes import parametrize
  build = parametrize(lambda w: linen_model(w), base_width=8)
  ds = regression()

  def losses(width):
    s = sweep.Sweep(build, ds, dict(seed=[0], width=[width], parametrization=["sp", "mup"]),
                    "sgd", hparams={"lr": 0.1}, steps=STEPS, record=[STEPS], loss="mse",
                    batch_size=8)
    return sweep.run(s, progress=False).train_loss.isel(step=-1).values.ravel()

  sp, mup = losses(8)
  np.testing.assert_allclose(mup, sp, rtol=1e-6)
  sp, mup = losses(16)
  assert abs(mup - sp) > 1e-4
  p = build(16).init(jax.random.key(0), Ctx("mup"))
  stats = p["batch_stats"]["BatchNorm_0"]
  np.testing.assert_array_equal(stats["var"], np.ones(16))
  np.testing.assert_array_equal(stats["mean"], np.zeros(16))


def test_recorded_metrics_differentiate_the_parameters_and_not_the_statistics():
  """A Hessian recorded inside the sweep is the Hessian in the parameters alone (the running
  statistics are state, held fixed), equal to the dense one computed by hand."""
  from jax.flatten_util import ravel_pytree
  from jaxtheory.probes.curvature import sharpness_metric
  ds = regression()
  s = sweep.Sweep(lambda w: linen_model(w, 0.0), ds, dict(seed=[0], width=[4]), "sgd",
                  hparams={"lr": 0.1}, steps=3, record=[3], loss="mse",
                  metrics={"sharpness": sharpness_metric("mse", num_iters=30)})
  res, (g,) = sweep.execute(s, progress=False)
  p = jax.tree.map(lambda a: a[0], g.params)
  module, x, y = LinenNet(4, 0.0), jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
  flat, unravel = ravel_pytree(p["params"])
  loss = lambda f: half_mse(module.apply({"params": unravel(f), "batch_stats": p["batch_stats"]},
                                         x, train=False), y)
  top = np.linalg.eigvalsh(np.asarray(jax.hessian(loss)(flat), np.float64))[-1]
  np.testing.assert_allclose(res.sharpness.isel(step=-1).item(), top, rtol=1e-3)


class LinenCNN(nn.Module):

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3, 3))(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.8)(x))
    return nn.Dense(10)(nn.avg_pool(x, (2, 2), (2, 2)).reshape(x.shape[0], -1))


class EqxCNN(eqx.Module):
  conv: eqx.nn.Conv2d
  dense: eqx.nn.Linear

  def __init__(self, key):
    k1, k2 = jax.random.split(key)
    self.conv = eqx.nn.Conv2d(1, 4, 3, padding=1, key=k1)  # channels-first, lax's default
    self.dense = eqx.nn.Linear(4 * 8 * 8, 10, key=k2)

  def __call__(self, x):
    return self.dense(jnp.tanh(self.conv(jnp.moveaxis(x, -1, 0))).reshape(-1))


class NNXCNN(nnx.Module):

  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)  # holds lax's convolution itself
    self.dense = nnx.Linear(4 * 8 * 8, 10, rngs=rngs)

  def __call__(self, x):
    return self.dense(jnp.tanh(self.conv(x)).reshape(x.shape[0], -1))


@pytest.mark.parametrize("kind", ["linen", "eqx", "nnx"])
def test_convolutional_foreign_models_train_as_their_own_loops(kind):
  """Their convolutions take the loop-friendly derivative (jaxtheory.nn.convops) while the
  sweep traces them: the trained parameters equal the framework's plain loop."""
  ds = D.digits(flatten=False)
  steps, lr = 3, 0.1
  if kind == "linen":
    build = lambda w: from_linen(LinenCNN(), ds.input_shape, train_kwargs={"train": True},
                                 eval_kwargs={"train": False})
  elif kind == "eqx":
    build = lambda w: from_eqx(EqxCNN, ds.input_shape)
  else:
    build = lambda w: from_nnx(NNXCNN, ds.input_shape)
  s = sweep.Sweep(build, ds, dict(seed=[0], width=[4]), "sgd", hparams={"lr": lr},
                  steps=steps, record=[steps])
  _, (g,) = sweep.execute(s, progress=False)
  mine = jax.tree.map(lambda a: a[0], g.params)
  x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
  xent = lambda out: optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
  key = jax.random.fold_in(jax.random.key(0), 0)
  if kind == "linen":
    v = LinenCNN().init({"params": key, "dropout": jax.random.fold_in(key, 1)}, x[:1])
    params, stats = v["params"], v["batch_stats"]
    for _ in range(steps):
      def loss(p):
        out, upd = LinenCNN().apply({"params": p, "batch_stats": stats}, x, train=True,
                                    mutable=["batch_stats"])
        return xent(out), upd["batch_stats"]
      grads, stats = jax.grad(loss, has_aux=True)(params)
      params = jax.tree.map(lambda a, d: a - lr * d, params, grads)
    want = {"params": params, "batch_stats": stats}
  elif kind == "eqx":
    params, static = eqx.partition(EqxCNN(key), eqx.is_inexact_array)
    for _ in range(steps):
      grads = jax.grad(lambda p: xent(jax.vmap(eqx.combine(p, static))(x)))(params)
      params = jax.tree.map(lambda a, d: a - lr * d, params, grads)
    want = params
  else:
    graphdef, params = nnx.split(NNXCNN(nnx.Rngs(key)), nnx.Param)
    for _ in range(steps):
      grads = jax.grad(lambda p: xent(nnx.merge(graphdef, p)(x)))(params)
      params = jax.tree.map(lambda a, d: a - lr * d, params, grads)
    want = params
  chex.assert_trees_all_close(mine, want, rtol=2e-4, atol=1e-5)
  assert jax.lax.conv_general_dilated is convops.LAX_CONV  # routed only while traced
  m = build(4)
  traced = str(jax.make_jaxpr(lambda p: jnp.sum(m.train_apply(p, x[:2], key)[0]))(
      m.init(key)))
  assert "custom_jvp_call" in traced and "conv_general_dilated" in traced


class _Stop(Exception):
  pass


def test_stopped_and_resumed_equals_uninterrupted(tmp_path):
  """The running statistics, dropout keys and minibatch order live in the checkpointed run
  state: a sweep stopped mid-training and resumed ends with the same numbers and params."""
  ds = regression()
  s = sweep.Sweep(lambda w: linen_model(w), ds, dict(seed=SEEDS, width=[8], lr=LRS), "momentum",
                  hparams={"momentum": 0.9}, steps=40, batch_size=4, record="every:4",
                  loss="mse")
  ref, (g_ref,) = sweep.execute(s, progress=False)
  ck = tmp_path / "ck.npz"

  stopped = []

  def stop(done, total, info=""):
    if total // 2 <= done < total:
      stopped.append((done, total))
      raise _Stop
  with pytest.raises(_Stop):
    sweep.run(s, checkpoint=ck, checkpoint_interval=0, record_chunks=5, progress=stop)
  assert stopped and ck.exists()
  seen = []
  res, (g,) = sweep.execute(s, checkpoint=ck, resume=True, record_chunks=5,
                            progress=lambda done, total, info="": seen.append(done))
  assert [d for d in seen if d][0] == stopped[0][0]  # it went on from the checkpoint
  for m in ("train_loss", "test_loss", "param_norm"):
    np.testing.assert_array_equal(res[m].values, ref[m].values)
  chex.assert_trees_all_equal(g.params, g_ref.params)


def test_layers_refuse_what_only_a_model_can_train():
  """A layer has no training mode: batch norm or dropout inside one would train as
  parameters, or not at all; the error says to wrap the module whole."""
  from jaxtheory.nn.equinox import eqx_layer
  from jaxtheory.nn.flax import linen_layer, nnx_layer
  import jaxtheory.nn as jn
  with pytest.raises(ValueError, match="wrap the module whole with from_linen"):
    jn.model(linen_layer(LinenNet(4), eval_kwargs={"train": False}), (D_IN,)).init(
        jax.random.key(0))
  with pytest.raises(ValueError, match="wrap it whole with from_nnx"):
    nnx_layer(lambda rngs: NNXNet(4, rngs=rngs))
  with pytest.raises(ValueError, match="wrap it whole with from_eqx"):
    eqx_layer(eqx_net(4))
  with pytest.raises(ValueError, match="no train_kwargs switch it to training"):
    from_linen(LinenNet(4), (D_IN,), eval_kwargs={"train": False})


@pytest.mark.parametrize("opt", ["adamw", "sgdw", "muon"])
def test_the_optimizer_never_touches_the_running_statistics(opt):
  """With weight decay (and Muon's shape-dependent update), a step's state is exactly the
  forward pass's new statistics: no decay, no update, no learning-rate multiplier."""
  m = linen_model(8)
  ds = regression()
  data = {k: jnp.asarray(getattr(ds, k)) for k in ("x_train", "y_train", "x_test", "y_test")}
  tr = train.Trainer(m, "mse", opt, padded=False)
  st = tr.init(dict(seed=0, lr=0.1, weight_decay=0.5), data)
  new = tr.step(st, dict(seed=0, lr=0.1, weight_decay=0.5), data)
  _, want = m.train_apply(st.params, data["x_train"], train.train_key(st))
  chex.assert_trees_all_equal(new.params["batch_stats"], want["batch_stats"])
  assert not np.allclose(new.params["params"]["Dense_0"]["kernel"],
                         st.params["params"]["Dense_0"]["kernel"])


def test_nnx_values_sown_during_training_are_not_state():
  class Sows(nnx.Module):
    def __init__(self, rngs):
      self.l1, self.bn = nnx.Linear(D_IN, 4, rngs=rngs), nnx.BatchNorm(4, rngs=rngs)
      self.l2 = nnx.Linear(4, D_OUT, rngs=rngs)

    def __call__(self, x):
      h = self.bn(self.l1(x))
      self.sow(nnx.Intermediate, "h", h)
      return self.l2(h)

  _, res, _ = run_sweep(lambda w: from_nnx(Sows, (D_IN,)))
  assert np.isfinite(res.train_loss.values).all()
