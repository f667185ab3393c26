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
transformer's Muon sweep took 83 s, a quarter of its time). Learning rates are ``2^(lo + k/per_octave)`` over each optimizer's
range. The best learning rate of a width is the argmin of the seed-mean of the
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

Why at the end and not at a step early in training (TP V reads the first 3 or
4): at a fixed early step the change under muP is not flat at these widths.
Over the first steps it *shrinks* with the width in this task, like
``width^-1/2`` in every layer of the transformer under SGD, also at an octave
lower learning rate, at widths 48-768 and without layer norms (step-1 change
of the readout at lr 2^-2: 0.096, 0.066, 0.036 at widths 48, 192, 768), and in
the MLP under SGD at step 1 (-0.31); then, while the loss falls fastest, a
small width-dependent delay reads as a large exponent. On two development runs
of the transformer (muP only, 4 seeds, every 5th step of 120 recorded: seeds
0-3 with ``data_seed=0``, seeds 5-8 with ``data_seed=5``), at the check's
learning rate under SGD, the exponents over widths 12-192 run from -0.2 to
-0.6 in every layer at steps 1-5, cross zero near step 15 and reach +0.3 to
+0.5 in the embeddings from step 20 to 60; over 48-192 alone they go through a
hump (+0.29 to +0.38 at step 20 in every layer but the readout), then settle:
within 0.22 of flat at step 30, within 0.18 at step 60, within 0.13 at step
100 (a run at widths 24-192, base width 24: between 96 and 192 alone still
+0.28 to +0.38 at step 20, within 0.10 at step 60). Under Adam every layer is
flat from a quarter of training on. The former rule, after 15 steps over all
widths, sat at the crossing: it passed or failed with where the best learning
rate landed (seeds 13-16 with ``data_seed=4``: median best 2^1.00, read at
2^0, the readout -0.34). Re-read from the saved results of the default and of
three transformer-alone runs (seeds 11-14, 13-16, 21-24 with ``data_seed`` 3,
4, 6; the last muP only), muP-SGD's largest |exponent| was, by rule: after 15
steps over 12-192, 0.21, 0.18, 0.34, 0.19 (one fails); after 15 steps over
48-192, 0.44, 0.47, 0.29, 0.34 (all fail: the hump); at the end over 12-192,
0.40, 0.39, 0.29, 0.45 (all fail: width 12 lags, its training loss above the
others'); at the end over 48-192, 0.14, 0.12, 0.10, 0.16, and a grid step
either side of the check's learning rate 0.09 to 0.15 (under Adam 0.17, 0.16,
0.13, 0.15; either side 0.12 to 0.17), while SP's largest exponent there was
+2.58, +2.37, +1.91 (Adam) and +3.85, +3.11, +3.38 (SGD), a grid step either
side at least +1.59. So the end of training over the wider widths is the rule.
Wider widths alone (24, 48, 96, 192, base width 24, seeds 0-3) did not help at
step 15 (readout -0.23) nor at the end over all four (+0.36; +0.21 over
48-192), and wider was no longer better beyond the noise on the widest pair at
60 steps (SGD -0.025 +- 0.029, Adam -0.26 +- 0.15 per width step). Averaging
the change over a window of steps was not pursued: around step 15 the
exponents change sign within 10 steps, so a window averages a crossing, not a
plateau. Reading at a fixed learning rate instead of an octave below the best
was not needed: at the end over the wider widths a grid step either way moved
no muP exponent past 0.17.

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

All 20 checks pass (290 s). The paragraphs below measured the former
default, the transformer at 12, 48, 192 (681 s); its figures: transformer
Adam muP 2^-4.67, 2^-4.67, 2^-4.33 (+0.08), SP down to 2^-9.33 (-1.17);
SGD muP 2^1.33 at every width, SP -0.92; Muon in SP -0.25.

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
coordinate check by the former rule, after 15 steps over all widths, 4 pairs,
-0.28 in the readout or +0.28 to +0.34 in the embeddings), 5 of the 8 triples,
neither set of 4. Read a grid step above or below the check's learning rate
(as if the median best had landed a step off), the sets of 4 failed 2 of 4
times (the second run: muP-SGD's readout -0.32 at 2^0; wider is better under
SGD -0.060 +- 0.035 on the widest pair at 2^0.67). Longer training did not
help: at 90 or 120 steps the wider nets separate more under SGD (the second
run: -0.15 to -0.25 per width step on the widest pair at 90 steps, -0.46 to
-1.46 at 120) but Adam's transfer failed on the first run (width 12 at 2^-5.33
against 2^-4.67 and 2^-4.33), and SGD's best learning rate fell, moving its
coordinate check (the former rule) to the readout's failing side (-0.32).
Validated without further changes, the transformer alone (seeds counting up
from the setting's first): seeds 11-14 with ``data_seed=3`` passed 10 of 10
(with 2 seeds 7); seeds 13-16 with ``data_seed=4`` 9 of 10 (with 2 seeds 8); a
fresh setting, seeds 21-24 with ``data_seed=6``, muP settings only, 6 of 6.
Wider is better now passed everywhere (SGD's widest pair -0.092 +- 0.035,
-0.076 +- 0.024, -0.130 +- 0.018 per width step against a bound of 1.94
standard errors; Adam -0.66 to -1.08). muP-SGD's coordinate check, by the
former rule, failed again on seeds 13-16: its median best learning rate was
2^1.00, the check read at 2^0, the readout's change -0.34 (every other layer
within 0.08); on the other two the median best was 2^1.33 and the readout
-0.18, -0.19. Hence the rule above (the end of training, the wider widths),
chosen on these runs and the default, under which they pass 10, 10 and 6 of
their checks. Held out from choosing it (fresh runs, Adam and SGD settings,
Muon left out): seeds 31, 32 (the transformer's 31-34) with ``data_seed=7``,
both models, 20 of 20 (the former rule 17 of 20: the MLP's readout -0.29 under
Adam and under SGD, the transformer's under SGD -0.33); muP's largest
|exponent| 0.19 and 0.16 (MLP Adam, SGD), 0.13 and 0.24 (transformer Adam,
SGD: the embeddings, near the bound; a grid step either side 0.24, 0.23); SP's
largest +1.04, +1.66, +2.71, +3.71. The transformer alone on seeds 41-44 with
``data_seed=8``: 9 of 10, every coordinate check passing (muP 0.16 Adam, 0.09
SGD; SP +2.91, +3.62) and Adam's transfer failing (width 48's best learning
rate 2^-4.67 against 2^-4.00 and 2^-3.67, 2 grid steps from the median). Over
the six settings the transformer's muP-SGD check at the end read 0.09 to 0.24,
the closest to its bound of the coordinate checks.

Hence the checks judged against the seeds' noise (the transfer by a paired
test of the loss, the coordinate check by the exponent's standard error,
above). Re-read on the 18 saved runs of this history, every transfer,
drift, coordinate check and control passes; the seeds 41-44 transfer above
now passes (+0.014 +- 0.104 in log loss one step nearer the median), and
the 0.24 exponent reads +0.24 +- 0.07. Validated on two fresh settings, both
models, Adam and SGD: seeds 61, 62 (the transformer's 61-64) with
``data_seed=11``, 19 of 20, and seeds 71, 72 (71-74) with ``data_seed=12``,
20 of 20 (1106 s and 1223 s, one core each, side by side). The one failure
was the transformer's wider is better under SGD on its widest pair, under the
former rule (every pair lower beyond the noise): -0.029 +- 0.033 per width
step over steps 30-60 (width 192 leaves the plateau later at 2^0, 2.80
against 48's 2.74 at step 30, then passes it, 1.92 against 2.09 at step 60).
That pair is the signature's weakest: over the eight 4-seed settings at the
default 60 steps its change per width step at the check's learning rate
reads -0.03 to -0.14 (mean about -0.10) against standard errors of
0.02-0.04, so about one setting in ten fell inside the seeds' noise. Longer
SGD training did not remove it (``transformer_sgd_steps=120``: seeds 0-3
and 61-64 with ``data_seed=11`` pass, -1.12 +- 0.20 and -1.08 +- 0.16; seeds
11-14 with ``data_seed=3`` fail at -0.17 +- 0.18, one seed's width 192 not
yet past its transition), nor would a few more seeds on that setting (its
mean -0.03 needs a standard error of 0.015, about 20 seeds); nor reading
only the last 20% of the judged records (-0.088 +- 0.054). Hence the rule
above: monotone over the widths, the span beyond the noise (that setting:
widest minus narrowest -0.265 +- 0.033, no pair worse beyond the noise).
Re-read under it, every saved run with 4 or more transformer seeds passes
all its checks, and so do two more fresh settings run after the change,
both models, Adam and SGD: seeds 81, 82 (81-84) with ``data_seed=13`` and
91, 92 (91-94) with ``data_seed=14``, 20 of 20 each; on the second the
transformer's widest pair under SGD read -0.024 +- 0.019 (the former rule
would have failed it again), its span -0.243 +- 0.016. Read on every subset
of 3 of the transformer's seeds (11 saved runs, 60 subsets), 2 subsets
failed a check (Adam's transfer); on every pair of them (9 runs, 69 pairs),
6 failed: hence 4 seeds.

Then the transformer's widths moved from 12, 48, 192 to 8, 32, 128, which
halves the default's time (the transformer's cost grows about as its width
squared). Under the rules above, at 8-128: the transformer alone passed 10
of 10 on seeds 0-3 (333 s; Adam's muP transfer within the noise clause,
width 32 2 grid steps from the median at +0.060 +- 0.067 in log loss) and
on seeds 81-84 with ``data_seed=13`` (327 s; Adam's spread 0), and the
whole experiment 20 of 20 on seeds 91, 92 (91-94) with ``data_seed=14``
(384 s; muP spreads 1 step under Adam and SGD). Two settings held out at the
former widths, run again at 8-128 (Adam and SGD, both models): seeds 31, 32
with ``data_seed=7`` and seeds 41, 42 with ``data_seed=8`` (which had failed
Adam's transfer at 12-192) both pass 20 of 20. The transformer's muP spreads
0 and 1 step (Adam), 1 and 1 (SGD); SP's best Adam lr falls to 2^-9.00 at
width 128 on both (-1.25); the narrowest wider-is-better span is SGD's
-0.290 +- 0.017; muP's largest coordinate exponent 0.21 (SGD, an
embedding).

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
