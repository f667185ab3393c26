"""Tests for learning-rate schedules (jaxtheory.schedules): optax's values, traced and swept."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtheory import data, nn, schedules, sweep, train
from jaxtheory.errors import ConfigError

STEPS = 60
# name, our parameters, optax's schedule with the same parameters.
CASES = [
    ("constant", dict(lr=0.3), optax.constant_schedule(0.3)),
    ("warmup_cosine", dict(lr=0.5, warmup=10.0, decay_steps=50.0, init_lr=0.05, end_lr=0.01),
     optax.warmup_cosine_decay_schedule(0.05, 0.5, 10, 50, 0.01)),
    ("warmup_cosine", dict(lr=0.5, warmup=0.0, decay_steps=40.0),
     optax.warmup_cosine_decay_schedule(0.0, 0.5, 0, 40, 0.0)),
    ("step", dict(lr=0.4, decay_every=7.0, decay_rate=0.5),
     optax.exponential_decay(0.4, 7, 0.5, staircase=True)),
    ("exponential", dict(lr=0.4, decay_steps=20.0, decay_rate=0.3),
     optax.exponential_decay(0.4, 20, 0.3)),
    ("linear", dict(lr=0.2, decay_steps=30.0, end_lr=0.02), optax.linear_schedule(0.2, 0.02, 30)),
]


def _lr_program(opt, steps=STEPS):
  """The learning rate an optimizer applies at each step (-update for a gradient of 1), as a
  function of its hyperparameters, which may be traced."""
  def run(hp):
    tx = opt.make(**hp)
    p = jnp.zeros(())

    def body(st, _):
      u, st = tx.update(jnp.ones(()), st, p)
      return st, -u
    return jax.lax.scan(body, tx.init(p), None, length=steps)[1]
  return run


def _applied_lrs(opt, hp):
  return np.asarray(jax.jit(_lr_program(opt))({k: jnp.float32(v) for k, v in hp.items()}))


@pytest.mark.parametrize("name, params, reference", CASES)
def test_applied_lr_equals_optax_schedule(name, params, reference):
  opt = schedules.scheduled(train.get_optimizer("sgd"), name, steps=STEPS)
  got = _applied_lrs(opt, params)
  want = np.array([reference(t) for t in range(STEPS)])
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)


def test_schedule_parameters_are_traced_axes_of_one_program():
  opt = schedules.scheduled(train.get_optimizer("momentum"), "warmup_cosine", steps=STEPS)
  assert opt.name == "momentum+warmup_cosine" and opt.hyper_names[:2] == ("lr", "momentum")
  hp = {k: jnp.float32(v) for k, v in opt.defaults.items()}
  hp = dict(hp, lr=jnp.float32(0.5), momentum=jnp.float32(0.0), decay_steps=jnp.float32(50))
  warmups = [0, 5, 20]
  lrs = jax.jit(jax.vmap(lambda w: _lr_program(opt)(dict(hp, warmup=w))))(
      jnp.array(warmups, jnp.float32))
  for w, got in zip(warmups, np.asarray(lrs)):
    ref = optax.warmup_cosine_decay_schedule(0.0, 0.5, w, 50, 0.0)
    np.testing.assert_allclose(got, [ref(t) for t in range(STEPS)], rtol=0, atol=1e-7)


def test_sweep_grids_lr_and_warmup_in_one_compile():
  ds = data.gaussian_mixture(n_train=32, n_test=32, num_classes=3, input_dim=4)
  s = sweep.Sweep(model=lambda w: nn.mlp((4,), w, 1, 3), data=ds, optimizer="sgd",
                  schedule="warmup_cosine",
                  grid=dict(seed=[0], width=[8, 16], lr=[0.1, 0.5], warmup=[0, 10]),
                  steps=20, record=5)
  res = sweep.run(s, progress=False)
  assert res.train_loss.dims == ("seed", "width", "lr", "warmup", "step")
  assert res.attrs["optimizer"] == "sgd+warmup_cosine"
  assert res.attrs["traces"] + res.attrs["programs_loaded"] == 1  # one program, built or loaded
  early = res.train_loss.isel(step=2, seed=0)  # a few steps in, while warmup=10 still warms up
  assert int(res.step[2]) < 10
  assert not np.allclose(early.sel(warmup=0), early.sel(warmup=10))  # the warmup changes training
  # The padded width 8 (built at 16) equals the width-8 bucket run alone.
  alone = sweep.run(dataclasses.replace(s, grid=dict(s.grid, width=[8])), progress=False)
  np.testing.assert_allclose(res.train_loss.sel(width=8), alone.train_loss.sel(width=8),
                             rtol=1e-5, atol=1e-6)


def test_unknown_schedule_is_one_sentence():
  with pytest.raises(ConfigError, match="unknown schedule 'cosin'; available: constant, "):
    schedules.scheduled(train.get_optimizer("sgd"), "cosin", steps=10)
