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
2024)? By default only the MLP trains Muon (``muon_models``; the
transformer's Muon sweep took 83 s, a quarter of its time). Learning rates
are ``2^(lo + k/per_octave)`` over each optimizer's range. The best learning rate of a width is the argmin of the seed-mean of the
final training loss (the geometric mean of the records in the last 20% of
training, so one noisy record does not decide), averaged over 2/3 of an
octave on either side of each learning rate (see below); a diverged run
counts as an infinite loss. The drift exponent is the least-squares slope of
``log2(best lr)`` against ``log2(width)``.

The paper tunes GPT-3-like transformers on WikiText and ResNets on CIFAR-10;
scaled down to a 2-core CPU the default trains the MLP at widths 16, 64 and
256 and the transformer at 8, 32 and 128 (``transformer_widths``; each
model's muP base width is its smallest) with 2 seeds for the MLP and 4 for
the transformer (``transformer_seeds``, below), 28 learning rates per
Adam/Muon sweep and 25 per SGD sweep: the MLP for 30 full-batch steps, the
transformer for 60 (``transformer_steps``) on ``a + b mod 23`` (264 training
pairs): all 20 checks passing, 290 s on a quiet 2-core CPU (first
invocation, a fresh compilation cache; 222 s again, its programs loaded
from the cache; 374 s with the transformer's Muon sweep, 681 s with the
transformer at the former widths 12, 48 and 192, which the paragraphs after
the default's figures measured). The results' ``width`` and
``seed`` axes are the unions of the models' widths and seeds; a model's runs
are NaN at the others' (:func:`widths_of`, :func:`seeds_of`).
Each model has its own widths because the MLP's Adam transfer was fragile at
width 12 (held out, below) and the transformer's cost grows about as its
width squared (8-128 takes half the time of 12-192).
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
"Wider is better" (:func:`wider_is_better`) reads the records from the one
where every width is under way (10% below its initial loss) until one fits:
the widest width's seed-mean log loss averaged over those records must be
lower than the narrowest's beyond the seeds' noise (a one-sided Student
t-test at 95%; with the MLP's 2 seeds the bound is 2.92 standard errors, with
the transformer's 4 seeds 1.94), and no width's higher than the next narrower
one's beyond it, neither averaged nor at any record: the loss falls
monotonically with the width. Under muP the trajectories converge to their
infinite-width limit, so the gain per width step shrinks and the widest
pair's is the smallest (the transformer under SGD: -0.22 then -0.14 per width
step); a former rule that asked every pair to be lower beyond the noise
failed on its widest pair in about one 4-seed setting in ten (below). Under
muP with a base width the wider network also *starts*
lower (its readout is smaller at initialization); the check's line reports the
difference net of that initial one too.

The coordinate check judges each layer's *change from initialization*,
:math:`h_t - h_0` (its mean absolute coordinate, recorded inside the sweep by
:func:`jaxtheory.probes.coord_change_metric` from each run's own initial
parameters), at the end of each model's training (``coord_steps`` none: the
MLP's step 30, the transformer's 60; :func:`coord_step`), its width exponent
fitted over the model's widths but the narrowest (:func:`coord_widths`: the
MLP's 64 and 256, the transformer's 32 and 128): under muP no layer's
exponent may lie further than 0.25 from 0 beyond the seeds' noise (by more
than the one-sided t quantile at 95% times its standard error over the
seeds, :func:`coord_margin`); under SP, the control, some layer's must lie
above 0.25 beyond it. That change
is what muP promises to keep width-independent after any fixed number of
steps (Tensor Programs IV/V: every layer's features move by Theta(1) per
coordinate), and what SP lets grow at a fixed learning rate. The promise is
a limit in the width, approached with a finite-width part that is largest at
the narrowest width, here the base width (the transformer's 8: two heads of
4 dimensions); microsoft/mup's coordinate checks likewise read the trend at
large width. The activations themselves are not width-independent under
muP: the readout starts small (its output like ``width^-1/2`` relative to
the base width), so its size ``|f_0 + Delta f|`` has a negative exponent
while ``f_0`` still counts (the check's line prints those exponents too, not
judged; after 3 steps the transformer's readout read -0.24 to -0.53 at
``p >= 21``, the reason the transformer's check failed when it judged
activation sizes).

Why at the end and not at an early step (TP V reads the first 3 or 4): at
these widths the change at a fixed early step is not flat under muP. Over the
first steps it shrinks with the width (about like ``width^-1/2`` in every
layer of the transformer under SGD), then, while the loss falls fastest, a
small width-dependent delay reads as a large exponent; after 15 steps the
check passed or failed with where the best learning rate landed. At the end
of training over the wider widths muP's largest exponent read at most 0.24 on
every development and held-out run, SP's at least +0.95 (the default's MLP
under Adam; up to +4.05). The runs: ``DEVELOPMENT.md`` beside this module in the source tree.

Transfer is judged against the seeds' noise (:func:`transfers`): every
width's best learning rate within one grid step of the median best over
widths, or within two with the best learning rate within one step not worse
for that width beyond the seeds' noise (a paired t-test at 95% on the
smoothed log loss, :func:`jaxtheory.analysis.transfer_cost`: the same seed
at both learning rates). The control is the same check failing under SP
(its spreads are 5 to 11 grid steps). Near the best, the loss-vs-lr curve
is flat and its argmin moves with the seeds: on seeds 41-44 with
``data_seed=8`` (below) width 48's argmin under muP-Adam lay 2 grid steps
from the median while the learning rate one step nearer cost it +0.014 in
log loss, with a standard error of 0.10.

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
the transformer's 8, 32, 128; drift exponent):

* MLP, Adam: muP 2^-5.33, 2^-5.00, 2^-5.00 (+0.08); SP 2^-5.33, 2^-6.67,
  2^-8.67 (-0.83). SGD: muP 2^-1.00, 2^-0.67, 2^-1.00 (0.00); SP 2^-1.00,
  2^-1.33, 2^-4.00 (-0.75).
* transformer (4 seeds), Adam: muP 2^-3.67, 2^-4.33, 2^-3.67 (0.00; width
  32 two grid steps off, +0.060 +- 0.067 in log loss one step nearer: within
  the noise); SP 2^-3.67, 2^-6.67, 2^-6.67 (-0.75). SGD: muP 2^1.67 at every
  width (0.00); SP 2^1.67, 2^0.00, 2^-1.67 (-0.83).
* Muon in SP (measured, not judged): MLP 2^-3.33, 2^-4.00, 2^-5.00 (-0.42),
  and with ``muon_models=mlp,transformer`` the transformer 2^-2.67, 2^-3.33,
  2^-4.00 (-0.33): between SP Adam/SGD and muP.
* wider is better under muP (mean log-loss change widest minus narrowest;
  per width step): MLP Adam -1.44 +- 0.04 (-0.90, -0.54), SGD -1.15 +- 0.03
  (-0.67, -0.48); transformer Adam -0.91 +- 0.06 (-0.42, -0.49), SGD -0.37
  +- 0.02 (-0.23, -0.14).
* coordinate check, the change from init at the end of training over the
  wider widths (MLP step 30, widths 64-256; transformer step 60, widths
  32-128): under muP within 0.19 of flat in every layer (MLP Adam -0.01,
  -0.01, -0.19; SGD -0.06, -0.04, -0.17; transformer Adam -0.12, -0.09,
  -0.04, -0.02, -0.15; SGD +0.13, +0.18, +0.03, +0.04, +0.01); under SP its
  largest exponent +0.95 (MLP Adam), +1.65 (MLP SGD), +2.43 (transformer
  Adam), +4.05 (transformer SGD).

All 20 checks pass (290 s). Held out from choosing the rules (fresh data
subsets and seeds, both models, Adam and SGD): seeds 31,
32 with ``data_seed=7`` and seeds 41, 42 with ``data_seed=8`` pass 20 of 20
(the transformer's muP spreads 0 and 1 grid step under Adam, 1 and 1 under
SGD; SP's best Adam learning rate falls to 2^-9.00 at width 128, -1.25;
the narrowest wider-is-better span -0.290 +- 0.017, SGD; muP's largest
coordinate exponent 0.21), and seeds 91, 92 with ``data_seed=14`` 20 of 20.
Where it is fragile: the transformer's wider-is-better under SGD on its
widest pair (-0.03 to -0.14 per width step over eight 4-seed settings, hence
the monotone-span rule), and Adam's transfer at the narrowest width of a
flat loss-vs-lr curve (hence the noise clause and 4 transformer seeds: on
every pair of its seeds, 6 of 69 failed a check; on every triple, 2 of 60).
Every former default, search and failure behind these choices, with its
numbers: ``DEVELOPMENT.md`` beside this module in the source tree.

>>> from jaxtheory.experiments import mutransfer as mt
>>> cfg = mt.Config(models=("mlp",), widths=(8, 16), seeds=1, steps=4, settings=("mup-adam",),
...                 adam_lr=(-6.0, -5.0), per_octave=1, n_train=32, coord_steps=2)
>>> mt.run(cfg).train_loss.dims
('model', 'setting', 'seed', 'width', 'lr_k', 'step')
"""

# train.py runs the sweeps; reading.py reads their results (the checks, the summary, the figures).
from jaxtheory.analysis import (  # noqa: F401
    drift_exponent, smoothed_argmin, transfer_cost, wider_is_better)
from jaxtheory.experiments.mutransfer.reading import (  # noqa: F401
    SMOOTH, base_width_of, best_lr, coord_exponents, coord_margin, coord_step, coord_widths,
    figures, final_loss, per_octave, recorded, seeds_of, settings_of, signature, smoothing,
    stable_lr, summary, summary_title, transfer, transfers, widths_of)
from jaxtheory.experiments.mutransfer.train import (  # noqa: F401
    EARLY, MODELS, OPTIMIZERS, SETTINGS, TAIL, Config, FlaxMLP, base_width, builder, load_data,
    log2_lrs, model_seeds, model_steps, model_widths, record_steps, run)
