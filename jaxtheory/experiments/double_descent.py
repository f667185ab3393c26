r"""Double descent: test error peaks where the model just interpolates the training set.

Belkin, Hsu, Ma & Mandal (2019), "Reconciling modern machine-learning practice
and the classical bias-variance trade-off"; Mei & Montanari (2019), "The
generalization error of random features regression"; Nakkiran et al. (2020),
"Deep double descent" and Nakkiran, Venkat, Kakade & Ma (2021), "Optimal
regularization can mitigate double descent". Two sweeps:

* ``rf``: random-features regression on a teacher-student task (targets
  from a random one-hidden-layer ReLU teacher, Gaussian noise on the training
  targets only). A frozen random ReLU layer of ``p`` features (the swept
  width, :func:`jaxtheory.nn.random_features`) and a linear readout fitted by
  ridge regression in closed form on the features
  :math:`\Phi = \phi(XW)/\sqrt p` of the ``n`` training points,

  .. math:: \hat a_\lambda = \arg\min_a \tfrac1n\|\Phi a - y\|^2 + \lambda\|a\|^2
            = V\,\mathrm{diag}\big(s_i/(s_i^2 + n\lambda)\big)\,U^\top y ,

  with :math:`\Phi = U\,\mathrm{diag}(s)\,V^\top`; :math:`\lambda = 0` is the
  minimum-norm least-squares readout, the limit of gradient descent from a
  zero readout. The ridgeless test loss diverges at :math:`p = n` and falls
  on both sides; the optimal ridge removes the peak (Nakkiran et al. 2021)
  and so does a large ridge (the control). The fit is a recorded metric of
  the sweep (``steps = 0``), one float64 SVD per run for every ridge at once.
* ``mlp``: a one-hidden-layer ReLU MLP trained to convergence (full-batch
  Adam, MSE on one-hot targets, as in Belkin et al. 2019) on a fixed subset
  of ``n = 1000`` MNIST digits average-pooled to 14x14 (inputs standardized
  per pixel), with a fraction of its training labels flipped, over widths
  and ``label_noise``. The interpolation threshold is the first width whose
  training accuracy on the noisy labels reaches 99%; it sits near ``n K``
  parameters (``K`` classes), the number of targets an MSE fit must match.
  With 20% label noise the 0-1 test error peaks there and falls on both
  sides; without label noise (the control) there is no such peak. Measured
  with the defaults (mean of 3 seeds, 5000 test images): the noisy labels
  are fitted from width 48 (``0.99 n K`` parameters); the test error peaks
  at 48.2% at width 64 (``1.33 n K``), against 38.1% at width 24 and 35.8%
  at width 256, and the test loss peaks at width 64 too (1.15 against 0.62
  and 0.55); without noise the largest bump is 0.4 points and the test error
  falls from 27.2% (width 8) to 13.5% (width 256).

Each part is one sweep through :func:`jaxtheory.sweep.run` (grids ``seed x
features`` and ``seed x width x label_noise``); the results are merged into one
dataset, the random-features variables prefixed ``rf_``. The defaults take
about a minute on an idle 2-core CPU (64 s measured), mostly the MLP sweep
(and need ``jaxtheory data fetch mnist`` once).

Declared range (where the signature is expected; each check says SKIP, not
FAIL, outside what it can judge). Random features: ``n_train`` 40-200 with
``input_dim`` at most ``n_train / 4`` (with fewer examples per input
dimension no ridge predicts much better than zero and the ridge checks are
skipped as not learnable: n = 40, d = 20), training-target noise 0.25-0.5
(1.0 is borderline learnable at n = 40, d = 10), ``rf_activation``
relu, tanh or erf, any number of seeds, a feature grid that contains ``p =
n`` (the peak is read at the grid point nearest it). MLP: MNIST or
Fashion-MNIST, ``mlp_n_train`` 500-1000, label noise 0.15-0.25 with its
noiseless control, relu, tanh or gelu, any seeds; the width grid must reach
past the interpolation width (else the check is skipped, saying how much of
the noisy labels the widest net fits). At this size the peak is a few
points, so the test set is large (5000 images, where two standard errors of
a difference are ~2 points) and the margin is 3 points: on ten settings
(MNIST and Fashion-MNIST, 500-1000 examples, label noise 0.1-0.25, relu,
tanh and gelu, other seeds; five of them chosen after the margin was set)
every noisy run peaked within 2x of the interpolation width, 3.5-12.4 points
above both sides, and every control's bump stayed under half of it (0-3.9
points; tanh shows a small peak without noise, as Nakkiran et al. 2020 find
for some models). The checks pass on all ten. Label noise 0.1 is
borderline: 4.8 points at n = 1000 (3 seeds), but 2.4 points against a
2.2-point bump without noise at n = 500 (one seed, gelu). With 1000 test
images (``mlp_n_test=1000``) two standard errors are ~4.5 points, and the
margin grows to match.

>>> from jaxtheory.experiments import double_descent as dd
>>> ds = dd.run(dd.Config(part="rf", features=(6, 12, 24), seeds=1, n_train=12, n_test=16))
>>> ds.rf_test_loss.dims
('seed', 'features', 'ridge')
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import numpy as np
import xarray as xr

from jaxtheory import data, nn, plots, sweep
from jaxtheory.analysis import failed_runs, first_reached, peak
from jaxtheory.experiments.check import Check, positive_ints, seed_list, skip, timing_rows
from jaxtheory.probes.readout import ridge_metric
from jaxtheory.errors import ConfigError

PARTS = ("both", "rf", "mlp")


MLP_DATASETS = ("mnist", "fashion-mnist", "mnist1d", "digits")
# Inputs are standardized per coordinate on the training subset with this floor
# on the std (pixel units): near-empty border pixels would otherwise be scaled up
# a thousandfold and a test digit touching the border would blow up the test loss.
MIN_STD = 0.1


@dataclasses.dataclass(frozen=True)
class Config:
  """The double-descent settings (every field overridable by ``--set key=value``).

  Attributes:
    part: ``'both'``, ``'rf'`` (random features only) or ``'mlp'`` (MLP only).
    seeds: a count ``k`` (seeds ``0..k-1``) or explicit seeds (``seeds=5,7``;
      ``[3]`` is seed 3 alone).
    n_train: random features: training points (teacher-student regression).
    n_test: random features: test points.
    input_dim: random features: input dimension.
    noise: random features: std of the training-target noise.
    features: random features: numbers of features ``p`` to sweep (around ``n_train``).
    rf_activation: random features: the feature map's nonlinearity, a name of
      :data:`jaxtheory.nn.ACTIVATIONS` (``relu``, ``tanh``, ``erf``, ``gelu``, ...).
    ridges: random features: ridge strengths; ``0`` (ridgeless) must be one of
      them, the largest is the control.
    mlp_dataset: MLP: ``'mnist'``, ``'fashion-mnist'`` (files from ``jaxtheory
      data fetch NAME``), ``'mnist1d'`` or ``'digits'`` (offline).
    mlp_n_train: MLP: training examples (a fixed subset).
    mlp_n_test: MLP: test examples.
    mlp_pool: MLP: MNIST / Fashion-MNIST images average-pooled ``mlp_pool x
      mlp_pool`` (``2``: 14x14 inputs); ``1`` for the other datasets.
    mlp_activation: MLP: the hidden nonlinearity (a name of :data:`jaxtheory.nn.ACTIVATIONS`).
    widths: MLP: hidden widths to sweep (around ``n K / (d + K)``, the width
      with ``n K`` parameters).
    label_noises: MLP: fractions of flipped training labels (``0`` is the control).
    lr: MLP: Adam learning rate.
    steps: MLP: full-batch Adam steps.
    record: MLP: about this many log-spaced recording points.
  """
  part: str = "both"
  seeds: int | tuple[int, ...] = 3
  n_train: int = 100
  n_test: int = 500
  input_dim: int = 20
  noise: float = 0.5
  features: tuple[int, ...] = (10, 20, 40, 60, 80, 90, 100, 110, 125, 150, 200, 300, 500,
                               1000, 2000)
  ridges: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
  rf_activation: str = "relu"
  mlp_dataset: str = "mnist"
  mlp_n_train: int = 1000
  mlp_n_test: int = 5000
  mlp_pool: int = 2
  mlp_activation: str = "relu"
  widths: tuple[int, ...] = (8, 16, 24, 32, 48, 64, 96, 128, 256)
  label_noises: tuple[float, ...] = (0.0, 0.2)
  lr: float = 3e-3
  steps: int = 1500
  record: int = 8


# Named settings (``jaxtheory run double-descent --preset NAME``; ``--set`` overrides).
PRESETS: dict[str, dict] = {
    # Nakkiran, Venkat, Kakade & Ma (2021), "Optimal regularization can mitigate double
    # descent": random ReLU features with a ridge readout, ridgeless against optimally
    # tuned ridge, over the number of features. Scaled: their Fashion-MNIST inputs (n =
    # 500) are replaced by the random ReLU teacher of the ``rf`` part (n = 200, d = 20,
    # label noise 0.5), features up to 10 n, ridges on a log grid; 5 seeds.
    "nakkiran2021": dict(part="rf", n_train=200, n_test=1000, input_dim=20, noise=0.5,
                         features=(20, 50, 100, 150, 180, 200, 220, 250, 300, 400, 800, 2000),
                         ridges=(0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0),
                         rf_activation="relu", seeds=5),
}


def _check(cfg: Config) -> None:
  seed_list(cfg.seeds)
  if cfg.part not in PARTS:
    raise ConfigError(f"unknown part {cfg.part!r}; available: {', '.join(PARTS)}")
  for key in ("rf_activation", "mlp_activation"):
    nn.activation(getattr(cfg, key), key)
  positive_ints(cfg, "n_train", "n_test", "input_dim", "mlp_n_train", "mlp_n_test",
                "mlp_pool", "steps", "record")
  if cfg.part in ("both", "rf"):
    if 0.0 not in cfg.ridges or any(r < 0 for r in cfg.ridges):
      raise ConfigError(f"ridges must be >= 0 and include 0 (ridgeless), got {cfg.ridges!r}")
  if cfg.part in ("both", "mlp"):
    if cfg.mlp_dataset not in MLP_DATASETS:
      raise ConfigError(f"unknown mlp_dataset {cfg.mlp_dataset!r}; available: "
                        f"{', '.join(MLP_DATASETS)}")
    if cfg.mlp_pool != 1 and cfg.mlp_dataset not in ("mnist", "fashion-mnist"):
      raise ConfigError(f"mlp_pool={cfg.mlp_pool} pools MNIST and Fashion-MNIST images "
                        f"only; set mlp_pool=1 for {cfg.mlp_dataset}")
    if not cfg.label_noises or any(not 0 <= r < 1 for r in cfg.label_noises):
      raise ConfigError(f"label_noises must lie in [0, 1), got {cfg.label_noises!r}")


# ----------------------------------------------------------------------------
# The two sweeps.


def _run_rf(cfg: Config, progress, engine) -> xr.Dataset:
  ds = data.teacher_student(n_train=cfg.n_train, n_test=cfg.n_test, input_dim=cfg.input_dim,
                            noise=cfg.noise, seed=0)
  s = sweep.Sweep(
      model=lambda p: nn.random_features(ds.input_shape, p, ds.out_dim,
                                         activation=nn.activation(cfg.rf_activation)),
      data=ds, grid=dict(seed=seed_list(cfg.seeds), width=sorted(cfg.features)),
      steps=0, record="every:1", loss="mse", metrics={"rf": ridge_metric(cfg.ridges)},
      # No training steps: one bucket (one compilation) beats any padding waste.
      # float64: at p ~ n the smallest singular values that make the peak are
      # below float32's resolution of the SVD.
      max_waste=float("inf"), dtype="float64", name="double-descent-rf")
  res = sweep.run(s, progress=progress, **engine)
  rf = res.rf.isel(step=0, drop=True).rename(width="features")
  y_test = np.asarray(ds.y_test, np.float64)
  out = xr.Dataset({"rf_train_loss": rf.isel(split=0, drop=True),
                    "rf_test_loss": rf.isel(split=1, drop=True),
                    # The zero predictor's test loss: what a ridge too large to fit anything gets.
                    "rf_null_test_loss": 0.5 * float(np.mean(np.sum(y_test**2, -1)))},
                   attrs={k: v for k, v in res.attrs.items()})
  return out.assign_coords(ridge=np.asarray(cfg.ridges, np.float64))


def _mlp_data(cfg: Config) -> data.Dataset:
  """The MLP's training subset and test set, standardized per coordinate (std >= MIN_STD)."""
  kw = dict(pool=cfg.mlp_pool) if cfg.mlp_dataset in ("mnist", "fashion-mnist") else {}
  ds = data.load(cfg.mlp_dataset, n_train=cfg.mlp_n_train, n_test=cfg.mlp_n_test, **kw)
  return data.standardize(ds, min_std=MIN_STD)


def _mlp_sweep(cfg: Config) -> sweep.Sweep:
  ds = _mlp_data(cfg)
  model = lambda w: nn.mlp(ds.input_shape, w, 1, ds.out_dim,
                          activation=nn.activation(cfg.mlp_activation))
  return sweep.Sweep(
      model=model, data=ds, grid=dict(seed=seed_list(cfg.seeds), width=sorted(cfg.widths),
                                      label_noise=list(cfg.label_noises)),
      optimizer="adam", hparams=dict(lr=cfg.lr), steps=cfg.steps, record=cfg.record,
      loss="mse", max_waste=2.0, name="double-descent-mlp")


def _run_mlp(s: sweep.Sweep, progress, engine) -> xr.Dataset:
  ds, model, widths = s.data, s.model, list(s.grid["width"])
  res = sweep.run(s, progress=progress, **engine)
  res = res.assign_coords(num_params=("width", [model(w).num_params() for w in widths]))
  res.attrs.update(mlp_num_classes=ds.out_dim, mlp_input_dim=int(np.prod(ds.input_shape)),
                   mlp_n_test=int(ds.x_test.shape[0]))
  return res


def _engine_for(engine: dict, part: str) -> dict:
  """Engine options for one of the two sweeps: each gets its own checkpoint file."""
  if engine.get("checkpoint") is None:
    return engine
  return dict(engine, checkpoint=sweep.compose.part_path(engine["checkpoint"], "part", part))


def run(cfg: Config, progress: Callable[[int, int, str], None] | None = None,
        **engine) -> xr.Dataset:
  """Runs the random-features sweep and/or the MLP sweep and merges their results.

  Args:
    cfg: the configuration.
    progress: ``progress(steps_done, steps_total, info)``, called as training advances.
    **engine: execution options of :func:`jaxtheory.sweep.run`; a
      ``checkpoint`` path ``x.npz`` becomes ``x-part-rf.npz`` and ``x-part-mlp.npz``.

  Returns:
    A dataset with ``rf_train_loss``, ``rf_test_loss`` (dims ``(seed,
    features, ridge)``) and/or the MLP sweep's metrics (dims ``(seed, width,
    label_noise, step)``, each width's parameter count in the coordinate
    ``num_params``); the configuration as JSON in ``attrs['config']``.
  """
  _check(cfg)
  parts = []
  seconds = {"compile_seconds": 0.0, "run_seconds": 0.0}
  mlp = _mlp_sweep(cfg) if cfg.part in ("both", "mlp") else None
  if mlp is not None and cfg.part == "both":  # compiles beside the random features' sweep
    sweep.compile_ahead(mlp, **_engine_for(engine, "mlp"))
  if cfg.part in ("both", "rf"):
    parts.append(_run_rf(cfg, progress, _engine_for(engine, "rf")))
  if mlp is not None:
    parts.append(_run_mlp(mlp, progress, _engine_for(engine, "mlp")))
  for p in parts:
    for k in seconds:
      seconds[k] += float(p.attrs.get(k, 0.0))
  res = xr.merge(parts, combine_attrs="drop")
  res.attrs.update(parts[-1].attrs)
  res.attrs.update(seconds)
  if cfg.part in ("both", "rf"):
    res.attrs["rf_dataset"] = "teacher-student"
  if cfg.part in ("both", "mlp"):
    res.attrs["mlp_dataset"] = cfg.mlp_dataset
  res.attrs["experiment"] = "double-descent"
  res.attrs["config"] = json.dumps(dataclasses.asdict(cfg))
  return res


# ----------------------------------------------------------------------------
# Reading the results.


def fixed_ridge(ds: xr.Dataset) -> float:
  """The one positive ridge with the lowest test loss (median over seeds) at the number of
  features nearest ``n_train``: the single regularization strength that the control applies
  at every ``p``."""
  n = json.loads(ds.attrs["config"])["n_train"]
  p = ds.features.values
  t = ds.rf_test_loss.median("seed").isel(features=int(np.argmin(np.abs(p - n))))
  t = t.sel(ridge=t.ridge > 0)
  return float(t.ridge[int(np.argmin(t.values))]) if t.sizes["ridge"] else float("nan")


def rf_curves(ds: xr.Dataset) -> dict[str, xr.DataArray]:
  """Test loss vs number of features (median over seeds): ridgeless, optimal ridge, the fixed
  ridge of :func:`fixed_ridge`, largest ridge.

  The optimal ridge is chosen per number of features and seed (an oracle on
  the test loss, as in Nakkiran et al. 2021).
  """
  t = ds.rf_test_loss
  out = {"ridgeless": t.sel(ridge=0.0).median("seed"),
         "optimal ridge": t.min("ridge").median("seed")}
  lam = fixed_ridge(ds)
  if np.isfinite(lam):
    out[f"fixed ridge {lam:g}"] = t.sel(ridge=lam).median("seed")
  out[f"ridge {float(t.ridge.max()):g}"] = t.sel(ridge=t.ridge.max()).median("seed")
  return out


def mlp_curves(ds: xr.Dataset) -> dict[str, xr.DataArray]:
  """Final test error, test loss and train accuracy (on the noisy labels), means over seeds."""
  final = ds.isel(step=-1).mean("seed")
  return {"test_error": 1.0 - final.test_acc, "test_loss": final.test_loss,
          "train_acc": final.train_acc}


def interpolation_width(train_acc: xr.DataArray, at: float = 0.99) -> float:
  """First width whose final training accuracy (on the noisy labels) reaches ``at`` (or nan)."""
  return first_reached(train_acc, at, dim="width")


def params_per_nk(ds: xr.Dataset, width: float) -> float:
  """A width's parameter count over ``n K`` (training examples x classes); nan for nan."""
  if not np.isfinite(width):
    return float("nan")
  n = json.loads(ds.attrs["config"])["mlp_n_train"]
  return float(ds.num_params.sel(width=int(width))) / (n * ds.attrs["mlp_num_classes"])


def mlp_peak_margin(error: float, n_test: int, floor: float = 0.03) -> float:
  """The least rise of the test error over both sides that counts as a peak.

  ``floor``, or twice the standard error of the difference of two error
  rates near ``error`` measured on ``n_test`` examples (as if independent,
  which overstates it for two nets judged on the same examples), whichever is
  larger: 3 points on 5000 test examples, 4.4 on 1000 at 45% error.
  """
  return max(floor, 2.0 * float(np.sqrt(2.0 * error * (1.0 - error) / n_test)))


def _mlp_peak(ds: xr.Dataset, curve: xr.DataArray) -> dict:
  """Where a curve over widths peaks, and its lowest values left and right of the peak."""
  c, w = curve.values, ds.width.values
  i, prom = peak(c)
  left = int(np.argmin(c[:i + 1]))
  right = i + int(np.argmin(c[i:]))
  return dict(curve=c, width=int(w[i]), value=float(c[i]), prominence=prom,
              left_width=int(w[left]), left=float(c[left]),
              right_width=int(w[right]), right=float(c[right]))


def _mlp_rows(ds: xr.Dataset, ln: float) -> tuple[dict, dict, float]:
  """Test-error peak, test-loss peak and interpolation width at one label noise."""
  c = {k: v.sel(label_noise=ln) for k, v in mlp_curves(ds).items()}
  return (_mlp_peak(ds, c["test_error"]), _mlp_peak(ds, c["test_loss"]),
          interpolation_width(c["train_acc"]))


def summary(ds: xr.Dataset) -> list[tuple[str, str]]:
  """Rows ``(label, value)``: the curves' peaks and the compile / run seconds."""
  rows = []
  if "rf_test_loss" in ds:
    n = json.loads(ds.attrs["config"])["n_train"]
    p = ds.features.values
    for name, c in rf_curves(ds).items():
      i, prom = peak(c.values, log=True)
      rows.append((f"RF {name}", f"peak at p={p[i]} (n={n}): test loss {float(c[i]):.3g}, "
                                 f"{10**prom:.2f}x above both sides; "
                                 f"min {float(c.min()):.3g} at p={p[int(np.argmin(c.values))]}"))
  if "test_acc" in ds:
    w = ds.width.values
    rows.append(("MLP widths", f"{','.join(map(str, w))} (params / nK "
                               f"{' '.join(f'{params_per_nk(ds, x):.2g}' for x in w)})"))
    for ln in ds.label_noise.values:
      err, loss, w_int = _mlp_rows(ds, ln)
      rows.append((f"MLP label_noise={ln:g} error",
                   f"test error {' '.join(f'{100 * v:.1f}' for v in err['curve'])}%: "
                   f"peak {100 * err['value']:.1f}% at width {err['width']}, "
                   f"+{100 * err['prominence']:.1f} points over both sides "
                   f"({100 * err['left']:.1f}% at {err['left_width']}, "
                   f"{100 * err['right']:.1f}% at {err['right_width']})"))
      rows.append((f"MLP label_noise={ln:g} loss",
                   f"test loss {' '.join(f'{v:.3f}' for v in loss['curve'])}: "
                   f"peak {loss['value']:.3f} at width {loss['width']}, +{loss['prominence']:.3f} "
                   f"({loss['left']:.3f} at {loss['left_width']}, {loss['right']:.3f} at "
                   f"{loss['right_width']})"))
      rows.append((f"MLP label_noise={ln:g} fit",
                   f"train accuracy >= 99% from width {w_int:g} "
                   f"(params = {params_per_nk(ds, w_int):.2f} nK)"))
  rows += timing_rows(ds)
  return rows


def signature(ds: xr.Dataset, rf_ratio: float = 2.0, rf_flat: float = 1.2,
              mlp_margin: float = 0.03, rf_r2: float = 0.1) -> list:
  """The signature checks with their measured numbers.

  Random features: the ridgeless test loss peaks at ``n/2 <= p <= 2n`` and
  falls by at least ``rf_ratio`` on both sides; with the optimal ridge (per
  ``p``) and with the control, one ridge fixed at every ``p`` (the best at
  ``p = n``, :func:`fixed_ridge`), no bump exceeds ``rf_flat``, and each still
  predicts: its test loss at ``p = n`` explains at least ``rf_r2`` of the
  zero predictor's (a ridge so large that the readout is zero has a flat
  curve for no reason of interest). Where even the best ridge explains less
  than that (too few examples for the task), both are skipped as not
  learnable. MLP: with
  label noise the 0-1 test error (mean over seeds) peaks within a factor 2 of
  the interpolation width, the first width whose training accuracy on the
  noisy labels reaches 99%, and falls on both sides by at least
  :func:`mlp_peak_margin`: ``mlp_margin`` (a fraction: 0.03 is 3 points) or
  two standard errors of the difference of two error rates on the test set,
  whichever is larger, so a small test set needs a larger peak. Without
  label noise (the control) the bump is under half the noisy one: label
  noise is what makes the peak (a smaller one can appear without it, as in
  Nakkiran et al. 2020, e.g. with tanh), the smallest noisy peak that passed
  if several did. The control is skipped when no noisy peak passed: a flat
  curve says nothing without a peak to compare it with.
  """
  checks = []
  if "rf_test_loss" in ds and ds.sizes["features"] < 3:
    checks.append(skip("RF: test loss peaks near p = n and each ridge removes it",
                       f"a peak needs at least 3 feature counts, got "
                       f"{','.join(map(str, ds.features.values))}"))
  elif "rf_test_loss" in ds:
    n = json.loads(ds.attrs["config"])["n_train"]
    p = ds.features.values
    curves = rf_curves(ds)
    i, prom = peak(curves["ridgeless"].values, log=True)
    c = curves["ridgeless"].values
    checks.append(Check(
        f"RF ridgeless: test loss peaks near p = n = {n} and falls >= {rf_ratio:g}x on both sides",
        bool(n / 2 <= p[i] <= 2 * n and 10**prom >= rf_ratio),
        f"peak at p={p[i]} (loss {c[i]:.3g}), {10**prom:.1f}x above the lower side; "
        f"loss {c[0]:.3g} at p={p[0]}, {c[-1]:.3g} at p={p[-1]}"))
    null = float(ds.rf_null_test_loss) if "rf_null_test_loss" in ds else float("nan")
    k = int(np.argmin(np.abs(p - n)))
    r2_best = 1 - float(curves["optimal ridge"][k]) / null
    lam = fixed_ridge(ds)
    for name, label in (("optimal ridge", "the optimal ridge removes the peak"),
                        (f"fixed ridge {lam:g}",
                         f"control: one ridge ({lam:g}, the best at p = n) removes the peak "
                         f"at every p")):
      title = (f"RF {label} (bump < {rf_flat:g}x) and still predicts (test loss at p = n "
               f"<= {1 - rf_r2:g}x the zero predictor's)")
      if name not in curves:
        checks.append(skip(title, "needs a ridge > 0 in the grid"))
        continue
      j, prom_j = peak(curves[name].values, log=True)
      r2 = 1 - float(curves[name][k]) / null
      measured = (f"largest bump {10**prom_j:.2f}x at p={p[j]} (ridgeless {10**prom:.1f}x); "
                  f"test loss at p={p[k]}: {float(curves[name][k]):.3g}, zero predictor "
                  f"{null:.3g} (explains {100 * r2:.0f}% of it)")
      if not r2_best >= rf_r2:
        # The best ridge at p = n predicts barely better than zero: a flat curve there
        # cannot tell removing the peak from predicting nothing.
        checks.append(skip(title, f"not learnable at n = {n}: the best ridge explains "
                                  f"{100 * r2_best:.0f}% of the zero predictor's loss; "
                                  + measured))
        continue
      checks.append(Check(title, bool(10**prom_j < rf_flat and r2 >= rf_r2), measured))
  if "test_acc" in ds:
    few = (f"a peak needs at least 3 widths, got {','.join(map(str, ds.width.values))}"
           if ds.sizes["width"] < 3 else None)
    noisy = [ln for ln in ds.label_noise.values if ln > 0]
    failed = failed_runs(ds.transpose("label_noise", "width", "seed", ...), acc="train_acc",
                         min_drop=None)
    n_test = (ds.attrs["mlp_n_test"] if "mlp_n_test" in ds.attrs
              else json.loads(ds.attrs["config"])["mlp_n_test"])
    found = {}  # label noise -> prominence, of the noisy peaks that pass

    def failure(ln):  # "" or the failed runs at one label noise
      broken = [f"width {w} seed {s}: {why}" for (l, w, s), why in failed.items() if l == ln]
      return "optimization failure: " + "; ".join(broken) if broken else ""

    for ln in noisy:
      err, loss, w_int = _mlp_rows(ds, ln)
      near = bool(np.isfinite(w_int) and w_int / 2 <= err["width"] <= 2 * w_int)
      margin = mlp_peak_margin(err["value"], n_test, mlp_margin)
      name = (f"MLP label_noise={ln:g}: test error peaks within 2x of the interpolation width "
              f"and falls >= {100 * margin:.1f} points on both sides (>= {100 * mlp_margin:g}, "
              f"and >= 2 standard errors on {n_test} test examples)")
      why = failure(ln)
      if why:
        checks.append(Check(name, False, why))
        continue
      if not np.isfinite(w_int):
        fit = mlp_curves(ds)["train_acc"].sel(label_noise=ln)
        checks.append(skip(name, f"interpolation threshold not in the width grid: the widest "
                                 f"net (width {int(ds.width[-1])}) fits "
                                 f"{100 * float(fit[-1]):.1f}% of the noisy training labels "
                                 f"(threshold: 99%); give wider widths or more steps"))
        continue
      if few:
        checks.append(skip(name, few))
        continue
      if err["prominence"] >= margin and near:
        found[ln] = err["prominence"]
      checks.append(Check(
          name, bool(err["prominence"] >= margin and near),
          f"peak {100 * err['value']:.1f}% at width {err['width']} "
          f"({params_per_nk(ds, err['width']):.2f} nK params), "
          f"{100 * err['left']:.1f}% at {err['left_width']}, "
          f"{100 * err['right']:.1f}% at {err['right_width']}; train accuracy >= 99% from width "
          f"{w_int:g} ({params_per_nk(ds, w_int):.2f} nK); test loss peak {loss['value']:.3f} "
          f"at width {loss['width']} (+{loss['prominence']:.3f})"))
    control = "MLP control label_noise=0: test error bump < half the noisy one"
    if 0.0 in ds.label_noise.values and noisy and few:
      checks.append(skip(control, few))
    elif 0.0 in ds.label_noise.values and noisy and failure(0.0):
      checks.append(Check(control, False, failure(0.0)))
    elif 0.0 in ds.label_noise.values and noisy and not found:
      # Without a peak to compare with, a flat control shows nothing (a run at
      # initialization is flat with and without label noise).
      checks.append(skip(control, "no peak with label noise passed its check to compare with"))
    elif 0.0 in ds.label_noise.values and noisy:
      err0, _, _ = _mlp_rows(ds, 0.0)
      # The smallest peak that passed: the control must stay under half of every one.
      ln_min = min(found, key=found.get)
      prom_noisy = found[ln_min]
      w = ds.width.values
      checks.append(Check(
          control,
          bool(err0["prominence"] < 0.5 * prom_noisy),
          f"bump {100 * err0['prominence']:.1f} points at width {err0['width']} vs "
          f"{100 * prom_noisy:.1f} with label noise {ln_min:g}; test error "
          f"{100 * err0['curve'][0]:.1f}% at width {w[0]}, {100 * err0['curve'][-1]:.1f}% at "
          f"{w[-1]}"))
    else:
      checks.append(skip("MLP control label_noise=0: no test error peak",
                         "needs label_noise=0 and a positive label noise in the grid"))
  return checks


def figures(ds: xr.Dataset, out_dir: str | os.PathLike) -> list[str]:
  """Random features: test loss vs p per ridge; MLP: test error, loss, train accuracy vs width."""
  import matplotlib
  import matplotlib.ticker
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  if "rf_test_loss" in ds:
    n = json.loads(ds.attrs["config"])["n_train"]
    fig = plots.agg_figure((6.0, 4.2))
    ax = fig.subplots()
    p = ds.features.values
    ridges = ds.ridge.values
    cmap = matplotlib.colormaps["viridis"]
    for k, r in enumerate(ridges):
      ax.plot(p, ds.rf_test_loss.sel(ridge=r).median("seed").values, marker="o", ms=3,
              color=cmap(k / max(1, len(ridges) - 1)), label=f"ridge {r:g}")
    ax.plot(p, rf_curves(ds)["optimal ridge"].values, color="k", ls="--", lw=1.5,
            label="optimal ridge")
    ax.axvline(n, color="0.5", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of random features p")
    ax.set_ylabel(f"test loss (median of {ds.sizes['seed']} seeds)")
    ax.set_title(f"random-features regression, n = {n}", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
    paths.append(os.path.join(out_dir, "rf_test_loss_vs_features.png"))
    fig.savefig(paths[-1], dpi=130)
  if "test_acc" in ds:
    c = mlp_curves(ds)
    fig = plots.agg_figure((12.0, 3.6))
    axes = fig.subplots(1, 3)
    w = ds.width.values
    for k, ln in enumerate(ds.label_noise.values):
      for ax, key, scale in zip(axes, ("test_error", "test_loss", "train_acc"), (100, 1, 100)):
        ax.plot(w, scale * c[key].sel(label_noise=ln).values, marker="o", ms=3,
                color=f"C{k}", label=f"label noise {ln:g}")
      w_int = interpolation_width(c["train_acc"].sel(label_noise=ln))
      if ln > 0 and np.isfinite(w_int):
        for ax in axes:
          ax.axvline(w_int, color=f"C{k}", ls=":", lw=1)
    labels = ("test error (%)", "test loss (MSE)", "train accuracy on noisy labels (%)")
    cfg = json.loads(ds.attrs["config"])
    for ax, label in zip(axes, labels):
      ax.set_xscale("log", base=2)
      ax.set_xlabel("hidden width (dotted: fits the noisy labels)")
      ax.set_ylabel(label)
      ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    # Parameters are affine in the width: a top axis in units of n K.
    slope, icpt = np.polyfit(w, ds.num_params.values, 1)
    nk = cfg["mlp_n_train"] * ds.attrs["mlp_num_classes"]
    top = axes[0].secondary_xaxis("top", functions=(lambda x: (slope * x + icpt) / nk,
                                                    lambda r: (r * nk - icpt) / slope))
    ratios = [r for r in 2.0 ** np.arange(-6, 7) if params_per_nk(ds, w[0]) <= r
              <= params_per_nk(ds, w[-1])]
    top.set_xticks(ratios, [f"{r:g}" for r in ratios], fontsize="small")
    top.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    top.set_xlabel("parameters / (n K)", fontsize="small")
    fig.suptitle(f"one-hidden-layer MLP on {ds.attrs.get('mlp_dataset', '')}, "
                 f"n = {cfg['mlp_n_train']}, K = {ds.attrs['mlp_num_classes']}, mean of "
                 f"{ds.sizes['seed']} seeds", fontsize="medium")
    paths.append(os.path.join(out_dir, "mlp_test_error_vs_width.png"))
    fig.savefig(paths[-1], dpi=130)
  return paths
