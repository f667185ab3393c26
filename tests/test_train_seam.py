"""The typed seam between the sweep engine and the trainer: optimizer specs that declare their
hyperparameters, per-tensor learning-rate multipliers, metrics that declare inputs and axes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtheory import data, nn, sweep, train
from jaxtheory.errors import ConfigError
from jaxtheory.metric import Metric, as_metric
from factorization_order import factorizations_in_turn

quiet = lambda *a: None


@pytest.fixture(scope="module")
def mixture():
  return data.gaussian_mixture(n_train=24, n_test=16, num_classes=3, input_dim=4, seed=2)


def _sweep(ds, grid, optimizer="sgd", **kw):
  return sweep.Sweep(lambda w: nn.mlp((4,), w, 1, 3), ds, dict(seed=[0], width=[6], **grid),
                     optimizer, steps=4, record=2, **kw)


def _shrunk_sgd(lr, shrink):
  return optax.chain(optax.add_decayed_weights(shrink), optax.sgd(lr))


def test_a_custom_spec_declares_a_hyperparameter_the_engine_sweeps(mixture):
  mine = train.Optimizer(_shrunk_sgd, "sgd", "shrunk", hyper=dict(lr=0.1, shrink=0.0))
  res = sweep.run(_sweep(mixture, dict(shrink=[0.0, 2.0]), mine), progress=quiet)
  assert res.train_loss.dims == ("seed", "width", "shrink", "step")
  plain = sweep.run(_sweep(mixture, {}), progress=quiet)
  np.testing.assert_allclose(res.train_loss.sel(shrink=0.0).values, plain.train_loss.values,
                             rtol=1e-6)
  final = res.param_norm.isel(step=-1, seed=0, width=0)
  assert float(final.sel(shrink=2.0)) < float(final.sel(shrink=0.0))
  with pytest.raises(ConfigError, match="unknown sweep axis 'rho'.* lr, shrink"):
    sweep.plan(_sweep(mixture, dict(rho=[0.1]), mine))


def test_hyper_holds_the_run_fields_and_exactly_the_declared_ones():
  opt = train.get_optimizer("momentum")
  hp = train.Hyper.of(dict(seed=jnp.int32(0), width=jnp.int32(8), lr=jnp.float32(0.3)), opt)
  assert set(hp.opt) == {"lr", "momentum"} and float(hp.opt["momentum"]) == pytest.approx(0.9)
  assert hp.gamma is None and int(hp.width) == 8
  with pytest.raises(ConfigError, match="unknown hyperparameter 'rho'"):
    train.Hyper.of(dict(seed=0, rho=0.1), opt)


def test_per_tensor_lr_multiplier_hook_equals_a_manual_scaling(mixture):
  half = lambda params: jax.tree.map(lambda p: jnp.full((), 0.5, p.dtype), params)
  hooked = train.get_optimizer("sgd")._replace(name="sgd-half", lr_mult=half)
  a = sweep.run(_sweep(mixture, {}, hooked, hparams=dict(lr=0.2)), progress=quiet)
  b = sweep.run(_sweep(mixture, {}, "sgd", hparams=dict(lr=0.1)), progress=quiet)
  np.testing.assert_allclose(a.train_loss.values, b.train_loss.values, rtol=1e-6)
  assert a.train_loss.values[..., -1] < a.train_loss.values[..., 0]  # it did train


def test_a_metric_declares_its_inputs_and_axes(mixture):
  def widths(params, apply, d, ctx):
    del params, apply, d
    return jnp.full((2,), ctx.width, jnp.float32)

  m = Metric(widths, dims=("copy",), inputs=("ctx",))
  s = sweep.Sweep(lambda w: nn.mlp((4,), w, 1, 3), mixture, dict(seed=[0], width=[4, 6]),
                  steps=2, record=1, metrics={"w": m}, max_waste=10.0)
  res = sweep.run(s, progress=quiet)
  assert res.w.dims == ("seed", "width", "step", "copy")
  np.testing.assert_array_equal(res.w.isel(seed=0, step=-1).values, [[4, 4], [6, 6]])


def test_plain_functions_are_wrapped_once_at_the_boundary():
  def f(params, apply, d, model):
    return 0.0
  f.dims = ("a",)
  m = as_metric(f)
  assert m.dims == ("a",) and m.inputs == ("model",) and as_metric(m) is m
  with pytest.raises(ConfigError, match="inputs are among"):
    as_metric(Metric(f, inputs=("hp",)))


def test_a_metric_may_take_the_runs_initial_parameters(mixture):
  """``params0`` is the run's own initialization, kept in its state only when asked for."""
  def moved(params, apply, d, params0):
    del apply, d
    return sum(jnp.sum(jnp.abs(a - b)) for a, b in zip(jax.tree.leaves(params),
                                                        jax.tree.leaves(params0)))

  assert as_metric(moved).inputs == ("params0",)
  s = sweep.Sweep(lambda w: nn.mlp((4,), w, 1, 3), mixture, dict(seed=[0, 1], width=[4, 6]),
                  steps=2, record=1, metrics={"moved": moved}, max_waste=10.0)
  res, groups = sweep.execute(s, progress=quiet)
  assert float(res.moved.isel(step=0).max()) == 0.0  # exactly: the very initial arrays
  init = {int(r): jax.tree.map(lambda a, j=j: a[j], g.params)
          for g in sweep.initial_params(s) for j, r in enumerate(g.runs)}
  for g in groups:
    for j, r in enumerate(g.runs):
      want = moved(jax.tree.map(lambda a, j=j: a[j], g.params), None, None, init[int(r)])
      got = res.moved.isel(step=-1).sel(seed=g.coords["seed"][j], width=g.coords["width"][j])
      np.testing.assert_allclose(got, want, rtol=1e-5)
  tr = lambda metrics: train.Trainer(nn.mlp((4,), 6, 1, 3), "xent", train.get_optimizer("sgd"),
                                     num_classes=3, metrics=metrics)
  d = data.data_arrays(mixture)
  hp = dict(seed=jnp.int32(0), width=jnp.int32(6), lr=jnp.float32(0.1))
  assert train.setup(tr(()), hp, d).params0 is None  # no copy unless a metric asks
  assert train.setup(tr((("moved", moved),)), hp, d).params0 is not None


def test_metrics_are_measured_one_after_another(mixture):
  # Two metrics' factorizations side by side can deadlock XLA's CPU pool.
  top = lambda params, apply, d: jnp.linalg.svdvals(params[0]["W"])[0]
  gram = lambda params, apply, d: jnp.linalg.eigvalsh(params[0]["W"] @ params[0]["W"].T)[-1]
  tr = train.Trainer(nn.mlp((4,), 6, 1, 3), "xent", train.get_optimizer("sgd"), num_classes=3,
                     metrics=(("top", top), ("gram", gram)))
  d = data.data_arrays(mixture)
  hp = dict(seed=jnp.int32(0), width=jnp.int32(6), lr=jnp.float32(0.1))
  st = train.setup(tr, hp, d)
  hlo = jax.jit(lambda st: train.measure(tr, st, hp, d)).lower(st).compile().as_text()
  assert factorizations_in_turn(hlo) == [(2, True)]
