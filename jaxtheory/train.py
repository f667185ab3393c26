"""Training ONE run: losses, optimizers, the step, metric schedules, the compiled loop.

Everything here is written for a single run with its hyperparameters as traced
scalars (``hp``: a :class:`Hyper` of 0-d arrays, whose optimizer fields the
:class:`Optimizer` spec declares), so :mod:`jaxtheory.sweep` can
``vmap``/``lax.map`` it over a whole grid without retracing. A
:class:`Trainer` is the program of one run, built from a model, a loss, an
optimizer spec and a set of :class:`~jaxtheory.metric.Metric`:

* :meth:`Trainer.init` ``(hp, data) -> RunState`` (init, per-run labels and data mask),
* :meth:`Trainer.step` ``(state, hp, data) -> state``: one optimizer step,
* :meth:`Trainer.measure` ``(state, hp, data) -> metrics``,
* :meth:`Trainer.segment` ``(state, hp, data, intervals) -> (state, metrics)``: a
  ``lax.scan`` over recording points; between two points it takes the
  interval's number of optimizer steps (a ``fori_loop``) and then records
  every metric, all inside the compiled program.

The module functions :func:`setup`, :func:`train_step`, :func:`measure` and
:func:`segment` are the same, with the trainer as first argument.

A run whose loss or recorded metrics become non-finite is frozen and flagged
(``diverged``) from the record where the first non-finite value appears; its
recorded metrics keep their last finite values and ``diverged_step`` says at
which step it diverged. Nothing leaks into other runs of a batch.

Each step checks its loss, which it computes anyway, not every parameter: an
update that makes a weight non-finite almost always makes the next step's
loss non-finite (a NaN in a weight reaches every output it feeds), and that
step freezes the run, holding those parameters: a diverged run's parameters
may be non-finite. What the loss does not see (an embedding row no token of
the minibatch uses, a ``-inf`` bias before a ReLU, batch norm's running
statistics) is caught at the next record, which checks every parameter; its
``diverged_step`` is then that record's step. A check of every parameter after every
step, a reduction over all of them, cost 12% of a step of 8 width-512 MLPs
(minibatches of 128) and 20% of 32 width-128 MLPs (minibatches of 64) on a
2-core CPU (``benchmarks/sweep_throughput.py``), where XLA's reductions run
on one core.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtheory.data import data_arrays  # noqa: F401 (re-exported)
from jaxtheory.errors import ConfigError
from jaxtheory.losses import LOSSES, accuracy, cross_entropy, mse  # noqa: F401 (re-exported)
from jaxtheory.metric import Metric, after, as_metric, takes_params0
from jaxtheory.nn import Ctx, Model, family_multipliers
from jaxtheory.nn.core import with_state, without_state

Array = jax.Array

# ----------------------------------------------------------------------------
# Optimizers. An optimizer spec declares its hyperparameters (names and
# defaults): those are the fields of ``Hyper.opt``, traced, sweepable and
# checkpointed by name. Its factory takes them as keyword arguments; ``family``
# says which LR multipliers of the parametrization apply (SGD-like or
# Adam-like scale invariance) and ``lr_mult`` adds its own per-tensor ones.


class Optimizer(NamedTuple):
  """An optimizer spec: an optax factory, the hyperparameters it declares, its LR multipliers.

  Attributes:
    make: ``make(**hyper) -> optax.GradientTransformation``, called with every
      declared hyperparameter (traced scalars).
    family: ``'sgd'`` or ``'adam'``: which per-layer LR multipliers of the
      parametrization apply (see :mod:`jaxtheory.nn.param`).
    name: for labels and error messages.
    hyper: the declared hyperparameters, ``name -> default``. ``None``
      (specs written before declarations) is read once from ``make``'s
      keyword defaults by :func:`get_optimizer`.
    lr_mult: ``lr_mult(params0) -> tree`` of per-tensor learning-rate
      multipliers (from the run's initial parameters), applied to the updates
      on top of the parametrization's; ``None``: none.
  """
  make: Callable[..., optax.GradientTransformation]
  family: str
  name: str
  hyper: Mapping[str, float] | None = None
  lr_mult: Callable[[Any], Any] | None = None

  @property
  def hyper_names(self) -> tuple[str, ...]:
    return tuple(_declared(self))

  @property
  def defaults(self) -> dict[str, Any]:
    return dict(_declared(self))


def _declared(opt: Optimizer) -> Mapping[str, float]:
  """The spec's declared hyperparameters; for an undeclared spec, ``make``'s keyword defaults."""
  if opt.hyper is not None:
    return opt.hyper
  params = inspect.signature(opt.make).parameters.values()
  missing = [p.name for p in params if p.default is inspect.Parameter.empty]
  if missing:
    raise ConfigError(f"optimizer {opt.name!r}: declare its hyperparameters with defaults, "
                      f"Optimizer(make, family, name, hyper={{...}}); {missing[0]!r} has none")
  return {p.name: p.default for p in params}


def _sgd(lr):
  return optax.sgd(lr)


def _momentum(lr, momentum):
  return optax.sgd(lr, momentum=momentum)


def _adam(lr, b1, b2, eps):
  return optax.adam(lr, b1=b1, b2=b2, eps=eps)


def _adamw(lr, weight_decay, b1, b2, eps):
  return optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)


def _sgdw(lr, weight_decay, momentum):
  # L2 decay added to the gradient before momentum (PyTorch's SGD weight_decay), not
  # decoupled from it as in AdamW.
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.sgd(lr, momentum=momentum))


def _sam(lr, rho, momentum):
  """SAM (Foret et al. 2021) from ``optax.contrib.sam``, one update per step."""
  adv = optax.chain(optax.contrib.normalize(), optax.sgd(rho))
  return optax.contrib.sam(optax.sgd(lr, momentum=momentum), adv, sync_period=2,
                           opaque_mode=True)


def _muon(lr, beta, weight_decay, adam_lr):
  """Muon (``optax.contrib.scale_by_muon``) on 2-D weights, Adam elsewhere.

  optax's own ``muon`` rescales updates by ``sqrt(max(1, fan_out/fan_in))``
  read from the *shape*, which a padded width sweep must not do; here the
  Newton-Schulz orthogonalization is optax's and the width factor is the
  spec's ``lr_mult`` hook, :func:`muon_shape_scale`, from *active* fan-in/fan-out.
  """
  dims = lambda u: jax.tree.map(lambda _: optax.contrib.MuonDimensionNumbers(), u)
  muon_tx = optax.chain(optax.contrib.scale_by_muon(beta=beta, weight_dimension_numbers=dims),
                        optax.add_decayed_weights(weight_decay),
                        optax.scale_by_learning_rate(lr))
  adam_tx = optax.adam(adam_lr)
  labels = lambda params: jax.tree.map(lambda p: "muon" if p.ndim == 2 else "adam", params)
  return optax.partition({"muon": muon_tx, "adam": adam_tx}, labels)


def muon_shape_scale(params0) -> Any:
  """Muon's width-transfer factor ``sqrt(max(1, fan_out/fan_in))`` from ACTIVE sizes.

  Active rows/columns are those with a nonzero initial weight (padded ones are
  exactly zero; a Gaussian draw is never exactly zero).
  """

  def one(p):
    if p.ndim != 2:
      return jnp.ones((), p.dtype)
    fan_in = jnp.sum(jnp.any(p != 0, axis=1))
    fan_out = jnp.sum(jnp.any(p != 0, axis=0))
    return jnp.sqrt(jnp.maximum(1.0, fan_out / jnp.maximum(fan_in, 1)))

  return jax.tree.map(one, params0)


_ADAM = dict(b1=0.9, b2=0.999, eps=1e-8)
OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": Optimizer(_sgd, "sgd", "sgd", dict(lr=0.1)),
    "momentum": Optimizer(_momentum, "sgd", "momentum", dict(lr=0.1, momentum=0.9)),
    "sgdw": Optimizer(_sgdw, "sgd", "sgdw", dict(lr=0.1, weight_decay=1e-4, momentum=0.0)),
    "adam": Optimizer(_adam, "adam", "adam", dict(lr=1e-3, **_ADAM)),
    "adamw": Optimizer(_adamw, "adam", "adamw", dict(lr=1e-3, weight_decay=1e-2, **_ADAM)),
    "sam": Optimizer(_sam, "sgd", "sam", dict(lr=0.1, rho=0.05, momentum=0.0)),
    "muon": Optimizer(_muon, "adam", "muon",
                      dict(lr=0.02, beta=0.95, weight_decay=0.0, adam_lr=1e-3),
                      lr_mult=muon_shape_scale),
}


def get_optimizer(opt: str | Optimizer) -> Optimizer:
  """The spec of a name in :data:`OPTIMIZERS`, or a spec with its hyperparameters declared.

  This is the boundary where names become specs; a spec without ``hyper``
  gets it declared here, once, from its factory's keyword defaults.
  """
  if isinstance(opt, Optimizer):
    return opt if opt.hyper is not None else opt._replace(hyper=dict(_declared(opt)))
  if opt not in OPTIMIZERS:
    raise ConfigError(f"unknown optimizer {opt!r}; available: {', '.join(OPTIMIZERS)}")
  return OPTIMIZERS[opt]


# ----------------------------------------------------------------------------
# Hyperparameters of one run.

RUN_FIELDS = ("seed", "width", "n_train", "label_noise", "gamma", "init_scale", "base_width",
              "parametrization")
# The parametrization is swept by name (the engine turns the names into indices).
SWEEPABLE = RUN_FIELDS[:-1]


class Hyper(NamedTuple):
  """One run's hyperparameters: a pytree of 0-d arrays (a leading axis when batched over runs).

  The run's own fields are fixed; ``opt`` holds exactly the optimizer spec's
  declared hyperparameters. A field that is ``None`` is not set (its default
  applies: all ``n_train`` examples, no label noise, ``gamma = init_scale = 1``,
  no base width).

  Attributes:
    seed: the run's random seed.
    width: its active width (``None``: the model's own).
    n_train: how many training examples it uses (a prefix).
    label_noise: the fraction of training labels flipped.
    gamma: the richness (see :class:`~jaxtheory.nn.Ctx`).
    init_scale: the initial-weights multiplier.
    base_width: the width that width factors are relative to.
    parametrization: with a trainer choosing among several parametrizations
      at run time, the index of this run's (see :class:`~jaxtheory.nn.Ctx`).
    opt: ``name -> value`` of the optimizer spec's declared hyperparameters.
  """
  seed: Any
  width: Any = None
  n_train: Any = None
  label_noise: Any = None
  gamma: Any = None
  init_scale: Any = None
  base_width: Any = None
  parametrization: Any = None
  opt: Mapping[str, Any] = {}

  @classmethod
  def of(cls, values: Mapping[str, Any], optimizer: Optimizer) -> Hyper:
    """From named values (the CLI's and the grid's names): run fields and the spec's fields.

    Declared optimizer fields that are not given take the spec's defaults.

    Raises:
      ConfigError: a name is neither a run field nor declared by the spec.
    """
    declared = _declared(optimizer)
    bad = [k for k in values if k not in RUN_FIELDS and k not in declared]
    if bad:
      raise ConfigError(f"unknown hyperparameter {bad[0]!r}; known here: "
                        f"{', '.join(RUN_FIELDS + tuple(declared))}")
    float_t = jnp.result_type(float)
    opt = {k: values[k] if k in values else jnp.asarray(v, float_t) for k, v in declared.items()}
    return cls(**{k: values[k] for k in RUN_FIELDS if k in values}, opt=opt)


def _hyper(tr: Trainer, hp: Hyper | Mapping[str, Any]) -> Hyper:
  return hp if isinstance(hp, Hyper) else Hyper.of(hp, tr.optimizer)


# ----------------------------------------------------------------------------
# Recording schedules.


def schedule(steps: int, record: int | str | Sequence[int] = 50) -> np.ndarray:
  """The steps at which metrics are recorded (always including 0 and ``steps``).

  Args:
    steps: total optimizer steps.
    record: an int ``n`` (about ``n`` log-spaced points), ``'every:k'``,
      ``'log:n'``, ``'linear:n'``, or an explicit sequence of steps.
  """
  if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
    raise ConfigError(f"steps must be a non-negative integer, got {steps!r}")
  if steps > 2**31 - 1:  # the step counter is an int32 in the compiled program
    raise ConfigError(f"steps must be at most {2**31 - 1} (2^31 - 1), got {steps}")
  if isinstance(record, str):
    kind, _, num = record.partition(":")
    try:
      num = int(num)
    except ValueError:
      raise ConfigError(f"record must look like 'every:K', 'log:N' or 'linear:N', got {record!r}") from None
    if num <= 0:
      raise ConfigError(f"record count must be positive, got {record!r}")
    if kind == "every":
      pts = np.arange(0, steps + 1, num)
    elif kind == "log":
      pts = np.unique(np.round(np.geomspace(1, max(steps, 1), num)).astype(int))
    elif kind == "linear":
      pts = np.round(np.linspace(0, steps, num)).astype(int)
    else:
      raise ConfigError(f"record must be 'every:K', 'log:N' or 'linear:N', got {record!r}")
  elif isinstance(record, (int, np.integer)):
    return schedule(steps, f"log:{int(record)}")
  else:
    pts = np.asarray(list(record), dtype=int)
    if pts.size and (pts.min() < 0 or pts.max() > steps):
      raise ConfigError(f"record steps must lie in [0, {steps}]")
  pts = pts[pts <= steps]  # steps=0 records step 0 only (and trains no step)
  return np.unique(np.concatenate([[0], pts, [steps]])).astype(np.int32)


# ----------------------------------------------------------------------------
# One run.

@dataclasses.dataclass(frozen=True)
class Trainer:
  """The program of one run: init, step, measure; hyperparameters come in ``hp``.

  Attributes:
    model: the network, built at the capacity width of its bucket.
    loss: a loss function ``loss(outputs, labels, weights)``, or a name in
      :data:`jaxtheory.losses.LOSSES` (``'mse'``, ``'xent'``).
    optimizer: an :class:`Optimizer` spec.
    parametrization: ``'sp'``, ``'ntk'``, ``'mup'`` or ``'mf'``; a tuple of
      them chooses per run, by the index ``hp.parametrization``.
    padded: whether ``hp.width`` is passed to the model as the active width.
    batch_size: ``None`` for full-batch gradient descent.
    num_classes: for label noise and accuracy (``None``: regression).
    metrics: extra metrics ``(name, Metric)`` (plain functions are wrapped
      by :func:`jaxtheory.metric.as_metric` when the trainer is built); a
      metric gets ``(params, apply, data)`` where ``apply(params, x)`` runs the
      network and ``data`` is the dict of arrays (``x_train``, ``y_train``,
      ``w_train``, ``x_test``, ``y_test``), and the inputs it declares: the
      run's :class:`~jaxtheory.nn.Ctx` (``ctx``), the network (``model``),
      the run's initial parameters (``params0``: kept in the run's state,
      :attr:`RunState.params0`, only when some metric declares it).
  """
  model: Model
  loss: str | Callable
  optimizer: Optimizer
  parametrization: str | tuple[str, ...] = dataclasses.field(default="sp", kw_only=True)
  padded: bool = dataclasses.field(default=True, kw_only=True)
  batch_size: int | None = dataclasses.field(default=None, kw_only=True)
  num_classes: int | None = dataclasses.field(default=None, kw_only=True)
  metrics: tuple[tuple[str, Metric], ...] = dataclasses.field(default=(), kw_only=True)

  def __post_init__(self):
    # The boundary: names and plain functions become functions and typed values once.
    if isinstance(self.loss, str):
      if self.loss not in LOSSES:
        raise ConfigError(f"unknown loss {self.loss!r}; available: {', '.join(LOSSES)}")
      object.__setattr__(self, "loss", LOSSES[self.loss])
    object.__setattr__(self, "optimizer", get_optimizer(self.optimizer))
    object.__setattr__(self, "metrics", tuple((k, as_metric(f)) for k, f in self.metrics))

  @property
  def keeps_params0(self) -> bool:
    """Whether a metric takes the run's initial parameters (the state then keeps a copy)."""
    return takes_params0(m for _, m in self.metrics)

  def ctx(self, hp: Hyper | Mapping[str, Array]) -> Ctx:
    hp = _hyper(self, hp)
    base = hp.base_width  # width factors relative to it need the run's width
    return Ctx(self.parametrization, hp.width if self.padded or base is not None else None,
               1.0 if hp.gamma is None else hp.gamma,
               1.0 if hp.init_scale is None else hp.init_scale, base, hp.parametrization)

  def tx(self, hp: Hyper | Mapping[str, Array]) -> optax.GradientTransformationExtraArgs:
    return optax.with_extra_args_support(self.optimizer.make(**_hyper(self, hp).opt))

  def apply(self, params, x, hp):
    return self.model.apply(params, x, self.ctx(hp))

  def init(self, hp, data) -> RunState:
    """Initial state of one run (see :func:`setup`)."""
    return setup(self, hp, data)

  def step(self, st: RunState, hp, data) -> RunState:
    """One optimizer step (see :func:`train_step`)."""
    return train_step(self, st, hp, data)

  def measure(self, st: RunState, hp, data) -> dict[str, Array]:
    """Every recorded metric (see :func:`measure`)."""
    return measure(self, st, hp, data)

  def segment(self, st: RunState, hp, data, intervals: Array):
    """Steps and records (see :func:`segment`)."""
    return segment(self, st, hp, data, intervals)


class RunState(NamedTuple):
  """Everything one run carries between steps (all arrays: checkpointable)."""
  params: Any
  opt_state: Any
  lr_mult: Any      # per-parameter LR multipliers (parametrization x family)
  labels: Array     # training labels after label noise
  weights: Array    # 1 for active training examples (data-size sweeps)
  key: Array        # raw uint32 key data of the run (for minibatch order)
  step: Array
  ok: Array         # False once the run diverged (then frozen)
  last: Any = None  # the last finite recorded metrics (NaN before the first record)
  diverged_step: Array | None = None  # step of the first non-finite loss or metric; -1: none
  params0: Any = None  # the initial parameters, kept when a metric declares ``params0``


def init_params(tr: Trainer, key: Array, ctx: Ctx) -> tuple[Any, Any]:
  """A run's initial parameters and per-tensor learning-rate multipliers (same tree)."""
  params, scales = tr.model.init_with_lr_scale(key, ctx)
  lr_mult = family_multipliers(scales, tr.optimizer.family)
  if tr.optimizer.lr_mult is not None:  # the spec's own per-tensor multipliers
    lr_mult = jax.tree.map(jnp.multiply, lr_mult, tr.optimizer.lr_mult(params))
  return params, lr_mult


def setup(tr: Trainer, hp: Hyper | Mapping[str, Array], data: Mapping[str, Array]) -> RunState:
  """Initial state of one run from its hyperparameters."""
  hp = _hyper(tr, hp)
  key = jax.random.key(hp.seed)
  ctx = tr.ctx(hp)
  params, lr_mult = init_params(tr, jax.random.fold_in(key, 0), ctx)
  n = data["y_train"].shape[0]
  n_train = n if hp.n_train is None else hp.n_train
  weights = (jnp.arange(n) < n_train).astype(jnp.result_type(float))
  labels = data["y_train"]
  if tr.num_classes is not None and hp.label_noise is not None:
    kf, kl = jax.random.split(jax.random.fold_in(key, 1))
    flip = jax.random.uniform(kf, (n,)) < hp.label_noise
    shift = jax.random.randint(kl, (n,), 1, tr.num_classes)
    labels = jnp.where(flip, (labels + shift) % tr.num_classes, labels)
  opt_state = tr.tx(hp).init(trainable(tr.model, params))
  if tr.model.train_mode is not None:  # multipliers of the trained leaves only
    lr_mult = without_state(tr.model.state_mask(params), lr_mult)
  st = RunState(params, opt_state, lr_mult, labels, weights,
                jax.random.key_data(jax.random.fold_in(key, 2)),
                jnp.zeros((), jnp.int32), jnp.ones((), bool),
                params0=params if tr.keeps_params0 else None)
  shapes = jax.eval_shape(lambda st, hp, d: measure(tr, st, hp, d), st, hp, data)
  last = {k: jnp.full(v.shape, jnp.nan if jnp.issubdtype(v.dtype, jnp.inexact) else 0, v.dtype)
          for k, v in shapes.items() if k != "diverged"}
  return st._replace(last=last, diverged_step=jnp.full((), -1, jnp.int32))


def _hold_finite(st: RunState, m: dict[str, Array]) -> tuple[RunState, dict[str, Array]]:
  """Flags divergence on the record of the first non-finite metric or parameter (state leaves
  such as running statistics included); holds the last finite metrics."""
  # Non-float metrics (the diverged flag) are skipped; metrics of non-finite parameters are not kept.
  finite = _all_finite((list(m.values()), st.params))
  ok = st.ok & finite
  # A failed step froze the run before counting itself (step + 1); non-finite
  # metrics of a state that stepped fine belong to that state's step.
  at = jnp.where(st.ok, st.step, st.step + 1)
  dstep = jnp.where((st.diverged_step < 0) & ~ok, at, st.diverged_step)
  last = {k: jnp.where(finite, m[k], v) for k, v in st.last.items()}
  out = dict(last, diverged=~ok, diverged_step=dstep)
  return st._replace(ok=ok, last=last, diverged_step=dstep), out


def _permute(i: Array, n: Array, key) -> Array:
  """A pseudorandom bijection of ``[0, n)`` applied to ``i`` (``n`` may be traced).

  A 4-round Feistel network on the smallest even number of bits covering
  ``n``, with cycle walking back into range. It makes minibatch indices of
  epoch-wise sampling without replacement in O(batch) work per step, instead
  of sorting all ``n`` examples.
  """
  u32 = jnp.uint32
  n = n.astype(u32)
  bits = jnp.maximum(32 - jax.lax.clz(jnp.maximum(n, 2) - 1), 2).astype(u32)
  half = (bits + 1) // 2
  mask = (u32(1) << half) - 1
  keys = jax.random.bits(key, (4,), u32)

  def feistel(x):
    for r in range(4):
      left, right = x >> half, x & mask
      h = (right * u32(0x85EBCA6B)) ^ keys[r]
      h = (h ^ (h >> 13)) * u32(0xC2B2AE35)
      x = (right << half) | (left ^ ((h ^ (h >> 16)) & mask))
    return x

  x = jax.lax.while_loop(lambda x: jnp.any(x >= n),
                         lambda x: jnp.where(x >= n, feistel(x), x), feistel(i.astype(u32)))
  return x.astype(jnp.int32)


def _batch(tr: Trainer, st: RunState, data):
  x, y, w = data["x_train"], st.labels, st.weights
  if tr.batch_size is None:
    return x, y, w
  B = tr.batch_size
  # Active examples are the first n_active (data-size sweeps use prefixes).
  n_active = jnp.sum(w).astype(jnp.int32)
  # The last batch of an epoch is partial, its missing examples weighted 0; a
  # model with state (batch statistics) would count them, so it drops that batch.
  per_epoch = (jnp.maximum(n_active // B, 1) if has_state(tr.model, st.params)
               else (n_active + B - 1) // B)
  epoch, b = st.step // per_epoch, st.step % per_epoch
  key = jax.random.fold_in(jax.random.wrap_key_data(st.key), epoch)
  # Epoch-wise sampling without replacement; the last batch of an epoch is partial.
  pos = b * B + jnp.arange(B)
  valid = pos < n_active
  idx = _permute(jnp.where(valid, pos, 0), n_active, key)
  return x[idx], y[idx], valid.astype(w.dtype) * w[idx]


def _all_finite(tree) -> Array:
  """Whether every entry of every leaf is finite (a boolean scalar).

  Leaves that are not floats are skipped (always finite). One sum over all
  entries, each scaled by ``1 / (2 * entries * leaves)`` so that no finite
  tree can overflow it: a NaN or an infinity anywhere makes the sum
  non-finite (IEEE sums propagate both, in every lane of a vectorized
  reduction, unlike ``max``, which is why the check is a sum). How each
  leaf is summed is what it costs: see :func:`_scaled_sum`.
  """
  leaves = [l for l in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.result_type(l), jnp.inexact) and jnp.size(l)]
  if not leaves:
    return jnp.asarray(True)
  return jnp.isfinite(sum(_scaled_sum(jnp.asarray(l), len(leaves)) for l in leaves))


def _scaled_sum(l: Array, n_leaves: int) -> Array:
  """``sum(l) / (2 * l.size * n_leaves)``, non-finite exactly when an entry of ``l`` is.

  The ``n_leaves`` leaves of a tree add up to at most half the dtype's
  largest value, so a finite tree never overflows. A leaf of two or more
  axes is summed as a matrix-vector product over its last axis (a vector of
  ``1 / (2 d)``), then its rows. XLA:CPU rewrites large reductions into one
  over windows of 32 entries and a small one after it (its tree reduction
  pass), and it does not vectorize those windowed loops: the plain sum cost
  about a nanosecond per entry, 15% of a step of 32 vmapped width-128 MLPs
  with minibatches of 64 when every step checked its parameters (one core,
  1.49 s against 1.26 s unchecked; steps now check their loss only), and
  as much mapped run by run (1.12 s against 0.94 s). The product runs in
  the vectorized dot kernels and leaves a reduction over rows only: 1.31 s
  and 0.99 s. A product still propagates NaN and infinities as long as the
  vector's entries are not zero (a matrix-vector kernel may skip a column
  whose factor is zero, and XLA:CPU flushes subnormals to zero), hence the
  plain sum when ``1 / (2 d)`` is below the dtype's smallest normal number;
  ``HIGHEST`` precision keeps a GPU or TPU from rounding a large finite
  entry to an infinity in bfloat16 or TF32.
  """
  d = l.shape[-1] if l.ndim >= 2 else 0
  if d == 0 or 0.5 / d < jnp.finfo(l.dtype).tiny:
    return jnp.sum(l * (0.5 / (l.size * n_leaves)))
  rows = jax.lax.dot_general(l, jnp.full((d,), 0.5 / d, l.dtype),
                             (((l.ndim - 1,), (0,)), ((), ())),
                             precision=jax.lax.Precision.HIGHEST)
  return jnp.sum(rows * (1.0 / (rows.size * n_leaves)))


def train_key(st: RunState) -> Array:
  """The key of a run's training step ``st.step`` (dropout masks: :class:`~jaxtheory.nn.TrainMode`).

  ``fold_in(fold_in(k, 2**32 - 1), step)`` of the run's data key ``k``
  (:attr:`RunState.key`), whose keys ``fold_in(k, epoch)`` order the
  minibatches (an epoch count never reaches ``2**32 - 1``).
  """
  k = jax.random.wrap_key_data(st.key)
  return jax.random.fold_in(jax.random.fold_in(k, 2**32 - 1), st.step)


def trainable(model: Model, params):
  """``params`` with the state leaves (:class:`~jaxtheory.nn.TrainMode`) as ``None``.

  What gradients, the optimizer and the learning-rate multipliers see: state
  (running statistics, counters) is carried apart and never differentiated.
  """
  if model.train_mode is None:
    return params
  return without_state(model.state_mask(params), params)


def train_step(tr: Trainer, st: RunState, hp, data) -> RunState:
  """One optimizer step; a non-finite loss freezes the run instead (see the module doc).

  A model with a train mode (dropout, batch norm: :class:`~jaxtheory.nn.TrainMode`)
  computes its loss in that mode, with the key :func:`train_key`; the
  optimizer steps the parameters but not the state leaves, which take the
  values that forward pass gives them (the running statistics).
  """
  hp = _hyper(tr, hp)
  x, y, w = _batch(tr, st, data)
  tx = tr.tx(hp)
  if tr.model.train_mode is None:
    loss_fn = lambda p: tr.loss(tr.apply(p, x, hp), y, w)
    loss, grads = jax.value_and_grad(loss_fn)(st.params)
    updates, opt_state = tx.update(grads, st.opt_state, st.params,
                                   grad_fn=lambda p, _: jax.grad(loss_fn)(p))
    updates = jax.tree.map(jnp.multiply, updates, st.lr_mult)
    params = optax.apply_updates(st.params, updates)
  else:
    key, mask = train_key(st), tr.model.state_mask(st.params)

    def loss_new(t):
      out, new = tr.model.train_apply(with_state(mask, t, st.params), x, key, tr.ctx(hp))
      return tr.loss(out, y, w), new

    t0 = trainable(tr.model, st.params)
    (loss, new), grads = jax.value_and_grad(loss_new, has_aux=True)(t0)
    updates, opt_state = tx.update(grads, st.opt_state, t0,
                                   grad_fn=lambda t, _: jax.grad(lambda u: loss_new(u)[0])(t))
    updates = jax.tree.map(jnp.multiply, updates, st.lr_mult)
    params = with_state(mask, optax.apply_updates(t0, updates), new)
  ok = st.ok & jnp.isfinite(loss)  # the loss only (see the module doc)
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
  return st._replace(params=keep(params, st.params), opt_state=keep(opt_state, st.opt_state),
                     step=st.step + ok.astype(jnp.int32), ok=ok)


def has_state(model: Model, params) -> bool:
  """Whether ``model`` has state leaves in ``params`` (e.g. batch norm's running statistics)."""
  return model.train_mode is not None and any(jax.tree.leaves(model.state_mask(params)))


def measure(tr: Trainer, st: RunState, hp, data) -> dict[str, Array]:
  """Every recorded metric of one run at its current state."""
  hp = _hyper(tr, hp)
  apply = lambda p, x: tr.apply(p, x, hp)
  f_tr, f_te = apply(st.params, data["x_train"]), apply(st.params, data["x_test"])
  w_te = jnp.ones(data["y_test"].shape[:1], f_te.dtype)
  loss = tr.loss
  out = {"train_loss": loss(f_tr, st.labels, st.weights),
         "test_loss": loss(f_te, data["y_test"], w_te)}
  if tr.num_classes is not None:
    out["train_acc"] = accuracy(f_tr, st.labels, st.weights)
    out["test_acc"] = accuracy(f_te, data["y_test"], w_te)
  out["param_norm"] = optax.tree.norm(trainable(tr.model, st.params))
  d = dict(data, y_train=st.labels, w_train=st.weights)
  ctx = tr.ctx(hp)
  # Metrics see the trained parameters alone; a model with state holds it (Model.bind_state).
  trained, model = tr.model.bind_state(st.params)
  if model is not tr.model:  # params0 keeps its own (initial) state
    apply = lambda p, x: model.apply(p, x, ctx)
  # One metric after another: two metrics' matrix factorizations side by side
  # can deadlock XLA's CPU thread pool (see jaxtheory.metric).
  prev = None
  for name, metric in tr.metrics:
    params = trained if prev is None else after(trained, prev)
    out[name] = prev = jnp.asarray(metric(params, apply, d, ctx=ctx, model=model,
                                          params0=st.params0))
  out["diverged"] = ~st.ok
  return out


def segment(tr: Trainer, st: RunState, hp, data, intervals: Array):
  """Runs ``intervals[i]`` steps then records, for each ``i``: ``(state, metrics[len])``."""
  hp = _hyper(tr, hp)

  def body(s, n_steps):
    s = jax.lax.fori_loop(0, n_steps, lambda _, s: train_step(tr, s, hp, data), s)
    return _hold_finite(s, measure(tr, s, hp, data))

  return jax.lax.scan(body, st, intervals)
