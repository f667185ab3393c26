"""Planning a sweep: its checked configuration, runs, width buckets and their cost; no training.

:func:`plan` validates a :class:`Sweep` and lays out its runs (the grid
expanded to a flat index), its fixed hyperparameters and its width buckets
(:func:`jaxtheory.sweep.grid.buckets` over each width's forward FLOPs, from
XLA's cost analysis without compiling). :func:`choose_chunk` says how many
runs of a bucket to ``vmap`` together on this backend.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtheory.data import Dataset, validate
from jaxtheory.errors import ConfigError, JaxtheoryError
from jaxtheory.metric import takes_params0
from jaxtheory.nn import PARAMETRIZATIONS, Ctx, Model, foreign
from jaxtheory.schedules import scheduled
from jaxtheory.sweep import grid as G
from jaxtheory.sweep import guard
from jaxtheory.train import SWEEPABLE, Optimizer, get_optimizer, has_state, schedule

STRATEGIES = ("auto", "vmap", "map", "chunked", "loop")


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A declarative sweep.

  Attributes:
    model: ``width -> Model`` building the network at a given width.
    data: the dataset (see :mod:`jaxtheory.data`).
    grid: ``axis -> values``; axes are ``seed``, ``width``, ``n_train``,
      ``label_noise``, ``gamma``, ``init_scale``, ``base_width`` (native models; see
      :class:`~jaxtheory.nn.Ctx`) and the optimizer's arguments
      (``lr``, ``weight_decay``, ``momentum``, ``rho``, ...). ``parametrization``
      (names) is an axis too: its values share each width bucket's program,
      which chooses every width factor at run time (:class:`~jaxtheory.nn.Ctx`),
      and the results have it as their first dimension.
    optimizer: a name in :data:`jaxtheory.train.OPTIMIZERS` or an
      :class:`~jaxtheory.train.Optimizer`.
    hparams: fixed values of hyperparameters that are not swept.
    steps: optimizer steps per run.
    batch_size: minibatch size; ``None`` is full-batch gradient descent.
    record: recording schedule (see :func:`jaxtheory.train.schedule`).
    loss: ``'xent'`` or ``'mse'``; default by the data (classification or not).
    parametrization: ``'sp'``, ``'ntk'``, ``'mup'`` or ``'mf'`` (a grid axis
      ``parametrization`` overrides it).
    metrics: extra recorded metrics ``name -> fn(params, apply, data)``
      (:mod:`jaxtheory.metric`; one that factorizes several matrices should do so
      with :func:`jaxtheory.metric.in_turn`, or it can deadlock on CPU).
    max_waste: bound on padded / ideal FLOPs within a bucket.
    dtype: ``'float32'`` or ``'float64'``.
    name: a label stored with the results.
    schedule: a learning-rate schedule in :data:`jaxtheory.schedules.SCHEDULES`
      (``'warmup_cosine'``, ``'step'``, ...); its parameters (``warmup``,
      ``decay_steps``, ...) join the optimizer's as fixed ``hparams`` or grid
      axes. ``None``: a constant learning rate.
  """
  model: Callable[[int], Model]
  data: Dataset
  grid: Mapping[str, Sequence]
  optimizer: str | Optimizer = "sgd"
  hparams: Mapping[str, float] = dataclasses.field(default_factory=dict)
  steps: int = 1000
  batch_size: int | None = None
  record: Any = 50
  loss: str | None = None
  parametrization: str = "sp"
  metrics: Mapping[str, Callable] = dataclasses.field(default_factory=dict)
  max_waste: float = 1.5
  dtype: str = "float32"
  name: str = "sweep"
  schedule: str | None = None



@dataclasses.dataclass
class Plan:
  """What :func:`run` will do: checked config, runs, buckets."""
  sweep: Sweep
  optimizer: Optimizer
  loss: str
  grid: dict[str, np.ndarray]
  flat: dict[str, np.ndarray]
  index: np.ndarray
  fixed: dict[str, float]
  buckets: list[list[int]]
  schedule: np.ndarray
  cost: dict[int, float]
  state_bytes: dict[int, tuple[int, float]] = dataclasses.field(default_factory=dict)
  models: dict[int, Model] = dataclasses.field(default_factory=dict)  # as built, per width
  parametrization: str | tuple[str, ...] = "sp"  # the trainer's (a tuple: chosen per run)
  labels: dict[str, list] = dataclasses.field(default_factory=dict)  # axis -> coordinate labels

  def coords(self) -> dict[str, np.ndarray]:
    """The grid's coordinates as the results show them (names for ``parametrization``)."""
    return {a: np.asarray(self.labels[a]) if a in self.labels else v
            for a, v in self.grid.items()}


def _xla_flops(lowered) -> float:
  """FLOPs from XLA's cost analysis of a lowered program (0 where unavailable)."""
  try:
    cost = lowered.cost_analysis()
    return float(cost.get("flops", 0.0)) if cost else 0.0
  except Exception:  # cost analysis is best-effort across backends
    return 0.0


def _flops(model: Model, params, dtype, x_dtype=None) -> float:
  """Forward FLOPs of one example, counted on the traced program (nothing is lowered).

  ``params``: the parameter shapes; ``x_dtype``: the inputs' dtype when it is
  not a float (token ids). JAX's roofline count of the jaxpr (within 2.5% of
  XLA's cost analysis on an MLP, a CNN, a transformer, a residual MLP and
  random features, and a third of the time or less); XLA's cost analysis
  where it fails; the number of parameters where both do.
  """
  if x_dtype is None or np.issubdtype(x_dtype, np.floating):
    x_dtype = dtype
  x = jax.ShapeDtypeStruct((1, *model.input_shape), x_dtype)
  try:
    from jax.experimental import roofline  # pylint: disable=import-outside-toplevel
    flops = float(roofline.roofline(model.apply)(params, x)[1].unfused_flops)
  except Exception:  # pylint: disable=broad-except  # an experimental API: best effort
    flops = _xla_flops(jax.jit(model.apply).lower(params, x))
  return flops or float(sum(math.prod(p.shape) for p in jax.tree.leaves(params)))


def plan(s: Sweep) -> Plan:
  """Validates a sweep and lays out its runs and buckets (no training)."""
  opt = get_optimizer(s.optimizer)
  if s.schedule is not None:
    opt = scheduled(opt, s.schedule, s.steps)
  allowed = SWEEPABLE + tuple(n for n in opt.hyper_names if n not in SWEEPABLE)
  parametrization, labels = _parametrizations(s)
  if labels:  # the axis holds indices into the names, chosen at run time
    allowed += ("parametrization",)
  if s.dtype not in ("float32", "float64"):
    raise ConfigError(f"dtype must be 'float32' or 'float64', got {s.dtype!r}")
  if s.batch_size is not None and (not isinstance(s.batch_size, int) or s.batch_size <= 0):
    raise ConfigError(f"batch_size must be a positive integer or None, got {s.batch_size!r}")
  ds = validate(s.data)
  sched = schedule(s.steps, s.record)
  for k in s.hparams:
    if k not in allowed:
      raise ConfigError(f"unknown hyperparameter {k!r}; known here: {', '.join(allowed)}")
  g = dict(s.grid)
  if labels:
    g["parametrization"] = list(range(len(labels["parametrization"])))
  for axis, default in (("seed", 0), ("width", s.hparams.get("width"))):
    if axis not in g:
      if default is None:
        raise ConfigError("give the width to sweep, e.g. grid=dict(width=[64, 128])")
      g[axis] = [default]
  grid = G.normalize(g, allowed)
  n = ds.x_train.shape[0]
  if "n_train" in grid and grid["n_train"].max() > n:
    raise ConfigError(f"n_train {grid['n_train'].max()} exceeds the {n} training examples")
  if "label_noise" in grid and not ds.is_classification:
    raise ConfigError("label_noise needs a classification dataset")
  if "label_noise" in grid and (grid["label_noise"].min() < 0 or grid["label_noise"].max() > 1):
    raise ConfigError("label_noise must lie in [0, 1]")
  loss = s.loss or ("xent" if ds.is_classification else "mse")
  if loss not in ("xent", "mse"):
    raise ConfigError(f"unknown loss {loss!r}; available: xent, mse")
  if loss == "xent" and not ds.is_classification:
    raise ConfigError("cross-entropy needs a classification dataset; use loss='mse'")
  guard.check_hparams({k: v for k, v in s.hparams.items() if k != "width"})
  guard.check_hparams({k: v for k, v in grid.items() if k not in G.INT_AXES})
  fixed = dict(opt.defaults)
  fixed.update({k: float(v) for k, v in s.hparams.items() if k != "width"})
  dt = jnp.float64 if s.dtype == "float64" else jnp.float32
  with jax.enable_x64(s.dtype == "float64"):
    models = {int(w): _built(s.model, int(w)) for w in grid["width"]}
    # Sizes from shapes alone (one trace of init per width), before anything is lowered.
    shapes = {w: _checked_shapes(m, ds, w) for w, m in models.items()}
    keeps0 = takes_params0(s.metrics.values())
    state_bytes = {w: guard.run_state_bytes(shapes[w], opt, fixed, np.dtype(dt).itemsize, keeps0)
                   for w in models}
    guard.check_size(_runs_per_width(grid), state_bytes, len(sched), 7 + len(s.metrics))
    cost = {w: _flops(m, shapes[w], dt, ds.x_train.dtype) for w, m in models.items()}
  if any(has_state(m, shapes[w]) for w, m in models.items()):
    _check_batch_statistics(s, grid, ds)
  flat, index = G.expand(grid)
  if "base_width" in grid or "base_width" in fixed:
    if np.min(grid.get("base_width", fixed.get("base_width"))) <= 0:
      raise ConfigError("base_width must be positive")
    if not all(m.paddable for m in models.values()):
      raise ConfigError("base_width applies to native models; give a foreign model its base "
                        "width by nn.base_shapes.parametrize(build, base_width)")
  _check_foreign(models, shapes, parametrization, grid, fixed)
  if all(m.paddable for m in models.values()):
    groups = G.buckets(grid["width"], cost.__getitem__, s.max_waste)
  else:  # Flax, Equinox or a user's own init/apply: built at each width, never padded
    groups = [[w] for w in sorted(models, reverse=True)]
  return Plan(s, opt, loss, grid, flat, index, fixed, groups, sched, cost, state_bytes, models,
              parametrization, labels)


def _parametrizations(s: Sweep) -> tuple[str | tuple[str, ...], dict[str, list[str]]]:
  """``(the trainer's parametrization, axis labels)`` of a sweep.

  A ``parametrization`` grid axis of names becomes indices into them: the
  trainer gets the tuple of names (one name stays static) and the results
  are labelled with the names.

  Raises:
    ConfigError: an unknown or repeated name, or an empty axis.
  """
  if "parametrization" not in s.grid:
    if s.parametrization not in PARAMETRIZATIONS:
      raise ConfigError(f"unknown parametrization {s.parametrization!r}; expected one of "
                        f"{', '.join(PARAMETRIZATIONS)}")
    return s.parametrization, {}
  v = s.grid["parametrization"]
  names = [v] if isinstance(v, str) else list(v)
  bad = [n for n in names if not isinstance(n, str) or n not in PARAMETRIZATIONS]
  if bad or not names:
    raise ConfigError(f"unknown parametrization {(bad or [None])[0]!r}; expected one of "
                      f"{', '.join(PARAMETRIZATIONS)}")
  if len(set(names)) != len(names):
    raise ConfigError(f"sweep axis 'parametrization' has duplicate values: {names}")
  return (names[0] if len(names) == 1 else tuple(names)), {"parametrization": names}


def _check_foreign(models: dict[int, Model], shapes: dict, parametrization, grid, fixed):
  """Refuses what a foreign model (built per width, its own init) would silently not do.

  Its init and layers take only what its adapter honours: a plain Flax or
  Equinox module runs SP at ``init_scale`` 1, while one wrapped by
  :func:`jaxtheory.nn.base_shapes.parametrize` takes any. Traced inside the
  sweep these could not be checked (the run would train as SP, labelled
  otherwise), so each model is asked here once, with concrete values. Also
  refused: two widths built to the same parameter shapes (the width never
  reached the model).
  """
  plain = {w: m for w, m in models.items() if not m.paddable}
  if not plain:
    return
  names = parametrization if isinstance(parametrization, tuple) else (parametrization,)
  scales = [float(v) for v in np.unique(grid.get("init_scale", [fixed.get("init_scale", 1.0)]))]
  asked = [(n, c) for n in names for c in scales if (n, c) != ("sp", 1.0)]  # SP at 1: any runs
  for w, m in plain.items():
    for name, scale in asked:
      try:
        jax.eval_shape(lambda k, m=m, c=Ctx(name, init_scale=scale): m.init(k, c),
                       jax.random.key(0))
      except foreign.UnsupportedCtx as e:
        raise ConfigError(f"the model built at width {w} cannot run parametrization "
                          f"{name!r} at init_scale {scale:g}: {e}") from None
  seen = {}
  for w in sorted(plain):
    sig = tuple(tuple(a.shape) for a in jax.tree.leaves(shapes[w]))
    if sig in seen:
      raise ConfigError(f"the model built at widths {seen[sig]} and {w} has the same "
                        f"parameter shapes: does sweep.model(width) pass the width to the "
                        f"module it builds?")
    seen[sig] = w


def _runs_per_width(grid) -> dict[int, int]:
  per = math.prod(len(v) for k, v in grid.items() if k != "width")
  return {int(w): per for w in grid["width"]}


def _check_batch_statistics(s: Sweep, grid, ds: Dataset):
  """Refuses what a model with state (batch norm) cannot train exactly.

  Its batch statistics count every example of a batch, weighted or not: a
  full batch must hold only active examples, and a minibatch must fit in them
  (minibatch epochs then drop their partial last batch).
  """
  n = ds.y_train.shape[0]
  n_train = np.asarray(grid.get("n_train", s.hparams.get("n_train", n)))
  if s.batch_size is None and np.any(n_train < n):
    raise ConfigError(
        f"a model with batch statistics (batch norm) trained full-batch would count the "
        f"examples left out by n_train={n_train.min()} of {n} in its statistics; give the "
        f"sweep a batch_size")
  if s.batch_size is not None and s.batch_size > n_train.min():
    raise ConfigError(
        f"batch_size={s.batch_size} is larger than the {n_train.min()} training examples; a "
        f"model with batch statistics (batch norm) needs full minibatches")


def _built(build, width: int) -> Model:
  """``build(width)``; a module given in place of the function, or one that fails to build at
  this width, is a :class:`ConfigError` that names it."""
  import flax.linen  # pylint: disable=import-outside-toplevel  # a core dependency
  from flax import nnx  # pylint: disable=import-outside-toplevel
  if isinstance(build, (Model, flax.linen.Module, nnx.Module)):
    what = "a jaxtheory Model" if isinstance(build, Model) else "a Flax module"
    raise ConfigError(f"sweep.model must be a function width -> Model (e.g. lambda w: "
                      f"nn.flax.from_linen(MLP(w), input_shape)), got {what} "
                      f"({type(build).__name__})")
  try:
    return build(width)
  except JaxtheoryError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # the user's builder: name the width
    raise ConfigError(f"sweep.model({width}) failed: {type(e).__name__}: {e}") from e


def _checked_shapes(m: Model, ds: Dataset, width: int):
  """The parameter shapes of ``sweep.model(width)``, checked against the dataset."""
  if not isinstance(m, Model):
    raise ConfigError(f"sweep.model(width) must return a jaxtheory Model, got {type(m).__name__}")
  if tuple(m.input_shape) != tuple(ds.input_shape):
    raise ConfigError(f"the model expects inputs of shape {tuple(m.input_shape)} but the "
                      f"dataset {ds.name!r} has inputs of shape {tuple(ds.input_shape)}")
  try:
    out, params = m.shapes()
  except JaxtheoryError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # e.g. a Flax module's own assertion
    if m.paddable:
      raise  # a native model: a bug, with its traceback
    raise ConfigError(f"the model built at width {width} fails to initialize: "
                      f"{type(e).__name__}: {e}") from e
  if out != (ds.out_dim,):
    raise ConfigError(f"the model outputs shape {out} per example but the dataset "
                      f"{ds.name!r} needs ({ds.out_dim},)")
  return params


def choose_chunk(num_runs: int, flops_per_run_step: float, backend: str | None = None,
                 minibatch: bool = False, convolutional: bool = False,
                 matmuls: int | None = None) -> int:
  """How many runs to ``vmap`` together (chunks are then ``lax.map``-ed).

  On accelerators all runs are vmapped (one wide program). On CPU, vmapping
  pays while one run's operations are too small to keep the cores busy
  (per-op overhead dominates) and loses once they are large enough, where
  ``lax.map`` keeps each run's working set in cache (measured on a 2-core
  CPU: vmap over 64 MLP seeds ran 0.5-1.5x a Python loop, lax.map beat
  both). What matters is the size of each operation, not of the whole step:
  a deeper net of the same width has more products of the same size. So a
  CPU chunk holds about ``_CPU_CHUNK_FLOPS`` of work per step *per 8 matrix
  products* (the forward and backward products of an MLP with two hidden
  layers, on which the thresholds were measured): 300 MFLOP for full-batch
  steps and 1 GFLOP for minibatch steps (a minibatch's working set is small,
  so vmapping pays up to larger models). Both thresholds come from
  ``benchmarks/sweep_throughput.py`` on a 2-core CPU (the best of vmap /
  chunks of 4 / lax.map for MLPs of width 16 to 512; at depth 6, chunks of
  4 beat ``lax.map``, which a per-step threshold chose). A ``convolutional``
  step (one with a convolution) gets a budget of its own, ``_CPU_CONV_CHUNK_FLOPS``
  (200 MFLOP, not scaled by its products): mapped over runs, a convolution
  becomes a grouped one, which XLA:CPU runs slower than the runs one by one
  once each run's convolutions are more than tiny. Measured on ``nn.cnn``
  on the 8x8 digits, 8 runs, seconds for vmap / chunks of 4 / ``lax.map``:
  16 channels, minibatches of 128 (34 MFLOP per run-step): 1.44 / 1.47 /
  1.60; 32 channels (111 MFLOP): 1.62 / 1.49 / 1.22; 16 channels, full
  batch (355 MFLOP): 2.84 / 2.60 / 2.28.

  Args:
    num_runs: runs in the group.
    flops_per_run_step: FLOPs of one training step of one run.
    backend: ``'cpu'``, ``'gpu'``, ...; default: JAX's default backend.
    minibatch: the step uses a minibatch.
    convolutional: the step has a convolution.
    matmuls: matrix products (``dot_general``) in one step; ``None``: 8.
  """
  backend = backend or jax.default_backend()
  if backend != "cpu":
    return num_runs
  if convolutional:
    return int(max(1, min(num_runs, _CPU_CONV_CHUNK_FLOPS // max(flops_per_run_step, 1.0))))
  budget = _CPU_CHUNK_FLOPS["minibatch" if minibatch else "full"] * max(matmuls or 8, 1) / 8
  return int(max(1, min(num_runs, budget // max(flops_per_run_step, 1.0))))


_CPU_CHUNK_FLOPS = {"full": 300e6, "minibatch": 1e9}
_CPU_CONV_CHUNK_FLOPS = 200e6


def _strategy_chunk(strategy: str, num_runs: int, flops_per_run: float,
                    chunk_size: int | None, minibatch: bool = False,
                    convolutional: bool = False, matmuls: int | None = None) -> tuple[str, int]:
  if strategy not in STRATEGIES:
    raise ConfigError(f"unknown strategy {strategy!r}; available: {', '.join(STRATEGIES)}")
  if strategy == "vmap":
    return "vmap", num_runs
  if strategy in ("map", "loop"):
    return strategy, 1
  if strategy == "chunked":
    return "chunked", int(chunk_size or max(1, num_runs // 4))
  c = choose_chunk(num_runs, flops_per_run, minibatch=minibatch, convolutional=convolutional,
                   matmuls=matmuls)
  if 1 < c < num_runs:  # the chunk in [c/2, c] that pads the runs least (16 runs: 2, not 3)
    c = min(range(c, (c + 1) // 2 - 1, -1), key=lambda k: -(-num_runs // k) * k)
  return ("vmap" if c >= num_runs else "map" if c == 1 else "chunked"), c

