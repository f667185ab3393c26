"""Learning-rate schedules whose every parameter is a traced number, so a sweep can grid them.

optax's schedule constructors branch in Python on their step counts
(``if transition_steps <= 0``), so a warmup length or decay horizon cannot be
a traced sweep axis there. Each schedule here computes optax's formula with
``jnp`` only (tested equal to optax's own schedule to 1e-7 at every step) and
takes its parameters as keyword arguments; :func:`scheduled` turns an
optimizer into one whose learning rate follows the schedule, with the
schedule's parameters added to the optimizer's hyperparameters (sweepable
like ``lr``).

=================  ====================================================  ==========================================
name               parameters (defaults)                                 optax equivalent
=================  ====================================================  ==========================================
``constant``       ``lr``                                                ``constant_schedule(lr)``
``warmup_cosine``  ``lr``, ``warmup=0``, ``decay_steps=steps``,          ``warmup_cosine_decay_schedule(init_lr,
                   ``init_lr=0``, ``end_lr=0``                           lr, warmup, decay_steps, end_lr)``
``step``           ``lr``, ``decay_every=steps/3``, ``decay_rate=0.1``   ``exponential_decay(lr, decay_every,
                                                                         decay_rate, staircase=True)``
``exponential``    ``lr``, ``decay_steps=steps``, ``decay_rate=0.1``     ``exponential_decay(lr, decay_steps,
                                                                         decay_rate)``
``linear``         ``lr``, ``decay_steps=steps``, ``end_lr=0``           ``linear_schedule(lr, end_lr, decay_steps)``
=================  ====================================================  ==========================================

``steps`` is the run's number of optimizer steps (the sweep passes it).

>>> from jaxtheory import schedules, train
>>> opt = schedules.scheduled(train.get_optimizer("sgd"), "warmup_cosine", steps=1000)
>>> opt.name, opt.defaults["warmup"], opt.defaults["decay_steps"]
('sgd+warmup_cosine', 0.0, 1000.0)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxtheory.errors import ConfigError
from jaxtheory.train import Optimizer, get_optimizer


def constant(count, lr):
  """``lr`` at every step."""
  return jnp.zeros_like(jnp.asarray(count, jnp.result_type(float))) + lr


def linear(count, lr, decay_steps, end_lr=0.0):
  """From ``lr`` to ``end_lr`` linearly over ``decay_steps`` steps, then ``end_lr``."""
  frac = jnp.clip(count, 0, decay_steps) / jnp.maximum(decay_steps, 1)
  return jnp.where(decay_steps > 0, lr + (end_lr - lr) * frac, lr)


def warmup_cosine(count, lr, warmup, decay_steps, init_lr=0.0, end_lr=0.0):
  """Linear warmup from ``init_lr`` to ``lr`` over ``warmup`` steps, then a cosine to ``end_lr``
  at step ``decay_steps`` (which counts the warmup, as in optax)."""
  up = init_lr + (lr - init_lr) * jnp.clip(count, 0, warmup) / jnp.maximum(warmup, 1)
  span = jnp.maximum(decay_steps - warmup, 1)
  t = jnp.clip(count - warmup, 0, span) / span
  down = end_lr + (lr - end_lr) * 0.5 * (1 + jnp.cos(jnp.pi * t))
  return jnp.where(count < warmup, up, down)


def exponential(count, lr, decay_steps, decay_rate=0.1):
  """``lr * decay_rate ** (count / decay_steps)``."""
  return lr * decay_rate ** (count / jnp.maximum(decay_steps, 1))


def step(count, lr, decay_every, decay_rate=0.1):
  """``lr * decay_rate ** floor(count / decay_every)``: multiplied by ``decay_rate`` every
  ``decay_every`` steps."""
  return lr * decay_rate ** jnp.floor(count / jnp.maximum(decay_every, 1))


# Each schedule's parameters besides ``count`` and ``lr``, with their defaults;
# ``None`` is a horizon that defaults from the run's number of steps.
_PARAMS: dict[str, dict[str, float | None]] = {
    "constant": {},
    "warmup_cosine": {"warmup": None, "decay_steps": None, "init_lr": 0.0, "end_lr": 0.0},
    "step": {"decay_every": None, "decay_rate": 0.1},
    "exponential": {"decay_steps": None, "decay_rate": 0.1},
    "linear": {"decay_steps": None, "end_lr": 0.0},
}

SCHEDULES: dict[str, Callable] = {
    "constant": constant,
    "warmup_cosine": warmup_cosine,
    "step": step,
    "exponential": exponential,
    "linear": linear,
}


def _defaults(schedule: str, steps: int) -> dict[str, float]:
  """The schedule's declared parameters with their defaults for a run of ``steps`` steps."""
  horizon = {"decay_steps": float(steps), "decay_every": float(max(1, steps // 3)),
             "warmup": 0.0}
  return {k: horizon[k] if v is None else float(v) for k, v in _PARAMS[schedule].items()}


def get_schedule(name: str) -> Callable:
  """The schedule function named ``name`` in :data:`SCHEDULES` (a ``ConfigError`` if none)."""
  if name not in SCHEDULES:
    raise ConfigError(f"unknown schedule {name!r}; available: {', '.join(SCHEDULES)}")
  return SCHEDULES[name]


def learning_rates(schedule: str, lr: float, steps: int) -> np.ndarray:
  """The learning rate of each of ``steps`` steps under ``schedule`` with its default
  parameters, in float64 (for reading results, e.g. the training time ``sum(lr)`` of a span).

  >>> learning_rates("step", 0.1, 6).round(6).tolist()  # divided by 10 at 1/3 and 2/3
  [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
  """
  fn = get_schedule(schedule)
  with jax.enable_x64(True):
    count = jnp.arange(steps, dtype=jnp.float64)
    return np.asarray(fn(count, float(lr), **_defaults(schedule, steps)))


def scheduled(opt: Optimizer, schedule: str, steps: int) -> Optimizer:
  """``opt`` with its learning rate following ``schedule`` (a name in :data:`SCHEDULES`).

  The returned spec declares ``opt``'s hyperparameters plus the schedule's
  (all traced, sweepable); ``lr`` is the peak (initial) learning rate.

  Args:
    opt: an optimizer spec that declares ``lr``.
    schedule: the schedule's name.
    steps: the number of optimizer steps of a run (the default horizon).

  Returns:
    An :class:`~jaxtheory.train.Optimizer` named ``'<opt>+<schedule>'``.
  """
  fn = get_schedule(schedule)
  opt = get_optimizer(opt)
  if "lr" not in opt.hyper:
    raise ConfigError(f"optimizer {opt.name!r} has no learning rate 'lr' to schedule")
  extra = _defaults(schedule, steps)
  clash = sorted(set(extra) & set(opt.hyper))
  if clash:
    raise ConfigError(f"schedule {schedule!r} and optimizer {opt.name!r} both take {clash[0]!r}")

  def make(**hp):  # called with every declared field; a direct call may leave some to defaults
    sched = {k: hp.pop(k, v) for k, v in extra.items()}
    lr = hp.pop("lr", opt.hyper["lr"])
    return opt.make(lr=lambda count: fn(count, lr, **sched), **hp)

  return opt._replace(make=make, name=f"{opt.name}+{schedule}", hyper={**opt.hyper, **extra})
