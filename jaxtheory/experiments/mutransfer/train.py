"""muTransfer's runs: the config, the two models, and the sweeps over parametrization x width x lr x seed."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable

import flax.linen as linen
import numpy as np
import xarray as xr

from jaxtheory import compile_cache, data, nn, probes, sweep
from jaxtheory.errors import ConfigError
from jaxtheory.experiments.check import positive_ints, seed_list
from jaxtheory.nn.base_shapes import parametrize
from jaxtheory.nn.flax import from_linen
from jaxtheory.progress import reporter
from jaxtheory.sweep.compose import chain_progress


MODELS = ("mlp", "transformer")
SETTINGS = ("sp-adam", "mup-adam", "sp-sgd", "mup-sgd", "sp-muon")
OPTIMIZERS = ("adam", "sgd", "muon")
TAIL = 0.2  # the final loss is the geometric mean of the records in the last 20% of training
EARLY = 3  # every step up to this one is recorded (the coordinate check's figure)


class FlaxMLP(linen.Module):
  """A linen MLP: ``depth`` ReLU layers of ``width`` units and a linear readout."""
  width: int
  depth: int
  out_dim: int

  @linen.compact
  def __call__(self, x):
    for _ in range(self.depth):
      x = linen.relu(linen.Dense(self.width)(x))
    return linen.Dense(self.out_dim)(x)


@dataclasses.dataclass(frozen=True)
class Config:
  """The muTransfer settings (every field overridable by ``--set key=value``).

  Attributes:
    models: ``'mlp'`` (Flax linen, digits) and/or ``'transformer'`` (native, modular addition).
    settings: ``<parametrization>-<optimizer>`` sweeps to run, from
      ``sp-adam``, ``mup-adam``, ``sp-sgd``, ``mup-sgd``, ``sp-muon`` (also
      ``mup-muon``).
    muon_models: the models that train the Muon settings (Muon is reported, not
      checked; the transformer's Muon sweep would add a third to its time).
    widths: hidden widths: the MLP's units (and the transformer's ``d_model``
      where ``transformer_widths`` is ``None``).
    transformer_widths: the transformer's ``d_model`` values (``None``: ``widths``).
    base_width: the width at which muP equals SP; ``None``: each model's smallest width.
    seeds: number of seeds (runs use seeds ``0..seeds-1``) or a list of seeds: the MLP's
      seeds, and the first of the transformer's.
    transformer_seeds: the transformer's seeds: a count ``k`` (``k`` seeds counting up from
      the first of ``seeds``: with ``seeds=11,12`` and 4, seeds 11-14) or a list of seeds.
    steps: full-batch optimizer steps.
    transformer_steps: the transformer's steps (``None``: ``steps``).
    transformer_sgd_steps: the transformer's steps under SGD (``None``: ``transformer_steps``);
      each setting is read at the end of its own training.
    per_octave: learning rates per factor of two (grid step ``1/per_octave`` in log2).
    adam_lr: ``lo,hi``: Adam's learning rates span ``2^lo .. 2^hi``.
    sgd_lr: ``lo,hi`` in log2 for SGD.
    muon_lr: ``lo,hi`` in log2 for Muon's learning rate (its vectors take Adam at 1e-3).
    coord_steps: the coordinate check reads each layer's change from init after this many
      steps (:func:`signature`); ``None``: at the end of each model's training.
    n_train: the MLP's training examples (digits, balanced-ish random subset).
    mlp_loss: the MLP's loss, ``'mse'`` (on one-hot labels) or ``'xent'``.
    depth: the MLP's hidden layers.
    p: the modulus of the transformer's task (``p^2`` pairs, vocabulary ``p + 1``).
    train_fraction: fraction of the pairs the transformer trains on.
    num_heads: the transformer's attention heads (a divisor of every width).
    mlp_ratio: the transformer MLP's hidden width over ``d_model``.
    data_seed: seed of the data subsets.
  """
  models: tuple[str, ...] = MODELS
  settings: tuple[str, ...] = SETTINGS
  muon_models: tuple[str, ...] = ("mlp",)
  widths: tuple[int, ...] = (16, 64, 256)
  transformer_widths: tuple[int, ...] | None = (8, 32, 128)
  base_width: int | None = None
  seeds: int | tuple[int, ...] = 2
  transformer_seeds: int | tuple[int, ...] = 4
  steps: int = 30
  transformer_steps: int | None = 60
  transformer_sgd_steps: int | None = None
  per_octave: int = 3
  adam_lr: tuple[float, ...] = (-10.0, -1.0)
  sgd_lr: tuple[float, ...] = (-5.0, 3.0)
  muon_lr: tuple[float, ...] = (-8.0, 1.0)
  coord_steps: int | None = None
  n_train: int = 256
  mlp_loss: str = "mse"
  depth: int = 2
  p: int = 23
  train_fraction: float = 0.5
  num_heads: int = 2
  mlp_ratio: int = 2
  data_seed: int = 0


def _check(cfg: Config) -> None:
  seed_list(cfg.seeds)
  try:
    seed_list(cfg.transformer_seeds)  # a count or a list of seeds, checked as ``seeds`` is
  except ConfigError:
    raise ConfigError(f"transformer_seeds must be a positive count or a list of distinct "
                      f"seeds >= 0, got {cfg.transformer_seeds!r}") from None
  positive_ints(cfg, "steps", "per_octave", "n_train", "depth", "p", "num_heads", "mlp_ratio")
  if cfg.coord_steps is not None:
    positive_ints(cfg, "coord_steps")
  for name, allowed in (("models", MODELS), ("settings", None), ("muon_models", MODELS)):
    values = getattr(cfg, name)
    if not values and name == "muon_models":
      continue
    if not values:
      raise ConfigError(f"{name} is empty; give at least one, e.g. {name}={values or 'mlp'}")
    if len(set(values)) != len(values):
      raise ConfigError(f"{name} repeat: {', '.join(values)}")
    for v in values:
      if allowed is not None and v not in allowed:
        raise ConfigError(f"unknown model {v!r}; available: {', '.join(MODELS)}")
  for s in cfg.settings:
    par, _, opt = s.partition("-")
    if par not in ("sp", "mup") or opt not in OPTIMIZERS:
      raise ConfigError(f"unknown setting {s!r}; available: {', '.join(SETTINGS)}, mup-muon")
  for name in ("widths", "transformer_widths"):
    ws = getattr(cfg, name)
    if ws is None and name == "transformer_widths":
      continue
    if not ws or any(w < 1 for w in ws) or len(set(ws)) != len(ws):
      raise ConfigError(f"{name} must be distinct positive integers, got {ws!r}")
  if cfg.base_width is not None and cfg.base_width < 1:
    raise ConfigError(f"base_width must be a positive integer or none, got {cfg.base_width!r}")
  muon = [st.partition("-")[2] == "muon" for st in cfg.settings]
  for model in cfg.models:
    if all(muon) and model not in cfg.muon_models:
      raise ConfigError(f"the {model} trains no setting: its only settings are Muon's and it is "
                        f"not in muon_models ({', '.join(cfg.muon_models) or 'none'}); add it "
                        f"(muon_models={','.join((*cfg.muon_models, model))}) or another setting")
  if any(muon) and not set(cfg.models) & set(cfg.muon_models):
    raise ConfigError(f"no model trains the Muon settings: none of models "
                      f"({', '.join(cfg.models)}) is in muon_models "
                      f"({', '.join(cfg.muon_models) or 'none'})")
  ws = model_widths(cfg, "transformer")
  if "transformer" in cfg.models and any(w % cfg.num_heads for w in ws):
    name = "widths" if cfg.transformer_widths is None else "transformer_widths"
    raise ConfigError(f"every width of the transformer must be a multiple of "
                      f"num_heads={cfg.num_heads}, got {name} {ws!r}")
  for opt in OPTIMIZERS:
    rng = getattr(cfg, f"{opt}_lr")
    if len(rng) != 2 or rng[0] > rng[1]:
      raise ConfigError(f"{opt}_lr must be two log2 learning rates lo,hi with lo <= hi "
                        f"(e.g. {opt}_lr=-10,-2), got {rng!r}")
  for name in ("transformer_steps", "transformer_sgd_steps"):
    if getattr(cfg, name) is not None:
      positive_ints(cfg, name)
  for model in cfg.models:
    least = min(model_steps(cfg, model, s.partition("-")[2]) for s in cfg.settings)
    if cfg.coord_steps is not None and cfg.coord_steps > least:
      raise ConfigError(f"coord_steps ({cfg.coord_steps}) must not exceed the {model}'s steps "
                        f"({least})")
  if cfg.mlp_loss not in ("mse", "xent"):
    raise ConfigError(f"mlp_loss must be 'mse' or 'xent', got {cfg.mlp_loss!r}")
  if not 0 < cfg.train_fraction < 1:
    raise ConfigError(f"train_fraction must lie in (0, 1), got {cfg.train_fraction!r}")


def model_widths(cfg: Config, model: str) -> tuple[int, ...]:
  """The widths a model trains at, ascending (``transformer_widths`` for the transformer if set).

  >>> model_widths(Config(widths=(64, 16)), "mlp")
  (16, 64)
  """
  if model == "transformer" and cfg.transformer_widths is not None:
    return tuple(sorted(cfg.transformer_widths))
  return tuple(sorted(cfg.widths))


def model_seeds(cfg: Config, model: str) -> list[int]:
  """The seeds a model trains at: ``seeds`` for the MLP; for the transformer
  ``transformer_seeds`` (a count counts up from the first of ``seeds``).

  >>> model_seeds(Config(seeds=(11, 12), transformer_seeds=4), "transformer")
  [11, 12, 13, 14]
  """
  first = seed_list(cfg.seeds)
  if model != "transformer":
    return first
  if isinstance(cfg.transformer_seeds, int):
    return list(range(first[0], first[0] + cfg.transformer_seeds))
  return seed_list(cfg.transformer_seeds)


def base_width(cfg: Config, model: str = "mlp") -> int:
  """The width at which a model's muP equals SP (its smallest width unless given)."""
  return min(model_widths(cfg, model)) if cfg.base_width is None else cfg.base_width


def log2_lrs(cfg: Config, optimizer: str) -> np.ndarray:
  """The learning-rate grid of an optimizer in log2: ``lo, lo + 1/per_octave, ..., hi``.

  >>> log2_lrs(Config(adam_lr=(-3.0, -2.0), per_octave=3), "adam")
  array([-3.        , -2.66666667, -2.33333333, -2.        ])
  """
  lo, hi = getattr(cfg, f"{optimizer}_lr")
  k = int(np.floor((hi - lo) * cfg.per_octave + 1e-9))
  return lo + np.arange(k + 1) / cfg.per_octave


def load_data(cfg: Config, model: str) -> data.Dataset:
  """The task of a model: a standardized digits subset (MLP) or modular addition (transformer)."""
  if model == "mlp":
    ds = data.digits(seed=cfg.data_seed)
    ds = data.subset(ds, n_train=min(cfg.n_train, len(ds.y_train)), n_test=64, seed=cfg.data_seed)
    return data.standardize(ds)
  return data.modular_arithmetic(p=cfg.p, op="add", train_fraction=cfg.train_fraction,
                                 seed=cfg.data_seed)


def builder(cfg: Config, model: str, ds: data.Dataset) -> tuple[Callable[[int], nn.Model], dict]:
  """``(width -> Model, fixed hyperparameters)`` of a model, with muP's base width."""
  bw = base_width(cfg, model)
  if model == "mlp":
    build = lambda w: from_linen(FlaxMLP(w, cfg.depth, ds.num_classes), ds.input_shape)
    return parametrize(build, base_width=bw), {}
  build = lambda w: nn.transformer(cfg.p + 1, 3, w, 1, cfg.num_heads, out_dim=cfg.p,
                                   mlp_ratio=cfg.mlp_ratio)
  return build, {"base_width": float(bw)}


def model_steps(cfg: Config, model: str, opt: str | None = None) -> int:
  """The full-batch steps a model trains for under optimizer ``opt``: ``steps``, for the
  transformer ``transformer_steps`` if set, and under SGD ``transformer_sgd_steps`` if set.

  >>> cfg = Config(transformer_sgd_steps=120)
  >>> [model_steps(cfg, m, opt) for m, opt in (("mlp", "sgd"), ("transformer", "adam"),
  ...                                          ("transformer", "sgd"))]
  [30, 60, 120]
  """
  if model == "transformer":
    if opt == "sgd" and cfg.transformer_sgd_steps is not None:
      return cfg.transformer_sgd_steps
    if cfg.transformer_steps is not None:
      return cfg.transformer_steps
  return cfg.steps


def record_steps(cfg: Config, model: str = "mlp", opt: str | None = None) -> list[int]:
  """Every one of the first ``EARLY`` steps and ``coord_steps`` (the coordinate check; the last
  step where it is none), then a few to the end."""
  steps = model_steps(cfg, model, opt)
  coord = steps if cfg.coord_steps is None else cfg.coord_steps
  tail = np.linspace((1 - TAIL) * steps, steps, 4)
  mid = np.array([steps / 4, steps / 2])
  return sorted({*range(min(coord, EARLY) + 1), coord,
                 *np.round(np.r_[mid, tail]).astype(int).tolist()})


@contextlib.contextmanager
def _cancel_compiles_on_error():
  """Cancels the programs still queued ahead when the sweeps stop with an error."""
  try:
    yield
  except BaseException:
    compile_cache.cancel_queued()
    raise


def run(cfg: Config, progress: Callable[[int, int, str], None] | None = None,
        **engine) -> xr.Dataset:
  """Trains every model and setting over ``seed x width x lr``.

  Args:
    cfg: the configuration.
    progress: ``progress(steps_done, steps_total, info)``, called as training advances.
    **engine: execution options of :func:`jaxtheory.sweep.run` (not ``return_params``).

  Returns:
    The results dataset, dims ``(model, setting, seed, width, lr_k, step)``
    (``lr_k`` indexes each optimizer's grid; ``log2_lr`` over
    ``(setting, lr_k)`` gives its value), with the engine's metrics,
    ``coord`` (the per-layer coordinate size, a trailing ``layer`` axis) and
    ``coord_change`` (the per-layer coordinate size of the change from the
    run's initialization, :func:`jaxtheory.probes.coord_change_metric`); the
    configuration as JSON in ``attrs['config']``.
  """
  _check(cfg)
  if engine.get("return_params"):
    raise ConfigError("mutransfer does not return parameters; run its sweeps directly")
  checkpoint = engine.pop("checkpoint", None)
  parts = {}
  # One sweep per model and optimizer: its parametrizations are a grid axis, so SP
  # and muP share each width bucket's program (one compile for both).
  pars_of = {}  # optimizer -> its parametrizations, in the settings' order
  for st in cfg.settings:
    par, _, opt = st.partition("-")
    pars_of.setdefault(opt, []).append(par)
  jobs = [(m, opt, pars) for m in cfg.models for opt, pars in pars_of.items()
          if opt != "muon" or m in cfg.muon_models]
  sweeps, options = [], []
  for model, opt, pars in jobs:
    ds = load_data(cfg, model)
    build, fixed = builder(cfg, model, ds)
    if opt == "muon":
      fixed = dict(fixed, adam_lr=1e-3)
    sweeps.append(sweep.Sweep(
        build, ds, dict(parametrization=pars, seed=model_seeds(cfg, model),
                        width=list(model_widths(cfg, model)), lr=list(2.0 ** log2_lrs(cfg, opt))),
        opt, fixed, steps=model_steps(cfg, model, opt), record=record_steps(cfg, model, opt),
        metrics={"coord": probes.coord_metric(), "coord_change": probes.coord_change_metric()},
        loss=cfg.mlp_loss if model == "mlp" else None,
        name=f"mutransfer-{model}-{opt}"))
    opts = dict(engine)
    if checkpoint is not None:
      root, ext = os.path.splitext(os.fspath(checkpoint))
      opts["checkpoint"] = f"{root}-{model}-{opt}{ext or '.npz'}"
    options.append(opts)
    # Every sweep's programs compile side by side (on several cores) before the first trains.
    sweep.compile_ahead(sweeps[-1], **opts)
  with reporter(progress, "mutransfer") as report, _cancel_compiles_on_error():
    for k, ((model, opt, pars), s, opts) in enumerate(zip(jobs, sweeps, options)):
      lrs = log2_lrs(cfg, opt)
      name = f"{'/'.join(pars)}-{opt}"
      opts = dict(opts, progress=chain_progress(
          lambda d, t, info="", m=model, st=name: report(d, t, f"{info} ({m} {st})".lstrip()),
          k, len(jobs)))
      res = sweep.run(s, **opts)
      res = res.rename(lr="lr_k").assign_coords(lr_k=np.arange(len(lrs)))
      res = res.assign_coords(layer=np.arange(res.sizes["layer"]))
      res["log2_lr"] = ("lr_k", lrs)
      for j, par in enumerate(pars):
        part = res.isel(parametrization=j, drop=True)
        # The shared program's time, split evenly among the settings it ran.
        part.attrs = dict(res.attrs, parametrization=par, **{
            key: float(res.attrs.get(key, 0.0)) / len(pars)
            for key in ("compile_seconds", "run_seconds")})
        parts[(model, f"{par}-{opt}")] = part.expand_dims(model=[model],
                                                           setting=[f"{par}-{opt}"])
    parts = [parts[(m, st)] for m in cfg.models for st in cfg.settings if (m, st) in parts]
    # Settings of a model share its layers (their learning-rate grids may differ: outer
    # join); models differ in their number of layers (only ``coord`` and ``coord_change``
    # are padded with NaN) and may differ in their widths (a model's runs are NaN at the
    # widths of the others; :func:`widths_of` reads a model's own).
    kw = dict(join="outer", combine_attrs="override", coords="different", compat="equals")
    per_model = [xr.concat([p for p in parts if p.model.item() == m], "setting", **kw)
                 for m in cfg.models]
    # In the settings' order (the outer join sorts a union; a setting no model trained: NaN).
    out = xr.concat(per_model, "model", **kw).reindex(setting=list(cfg.settings))
    report.close(out)
  for key in ("compile_seconds", "run_seconds"):
    out.attrs[key] = float(sum(float(p.attrs.get(key, 0.0)) for p in parts))
  out = out.transpose("model", "setting", "seed", "width", "lr_k", "step", ...)
  # One grid per setting, NaN for a model that did not train it (muon_models).
  out["log2_lr"] = out.log2_lr.max("model") if "model" in out.log2_lr.dims else out.log2_lr
  out.attrs["experiment"] = "mutransfer"
  out.attrs["base_width"] = np.array([base_width(cfg, m) for m in cfg.models])
  out.attrs["coord_steps"] = -1 if cfg.coord_steps is None else cfg.coord_steps  # -1: the end
  out.attrs["per_octave"] = cfg.per_octave
  out.attrs["config"] = json.dumps(dataclasses.asdict(cfg))
  return out


# ----------------------------------------------------------------------------
# Reading the results.
