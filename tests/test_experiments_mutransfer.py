"""Tests for the muTransfer experiment: muP's best learning rate transfers across widths, SP's drifts."""

import pathlib

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from jaxtheory.cli import cli
from jaxtheory.experiments import EXPERIMENTS, configure
from jaxtheory.experiments import mutransfer as M
from jaxtheory.errors import ConfigError

# Long training runs: compiled with XLA's default optimizations (tests/conftest.py).
pytestmark = pytest.mark.optimized

# The Flax MLP on digits under Adam, widths 16-256 (16x), 30 full-batch steps, 1/2-octave grid.
SMALL = dict(models=("mlp",), settings=("sp-adam", "mup-adam"), widths=(16, 64, 256), seeds=1,
             steps=30, adam_lr=(-9.0, -1.0), n_train=256, per_octave=2)
TINY = dict(models=("mlp",), settings=("sp-adam", "mup-adam"), widths=(8, 16), seeds=1, steps=6,
            coord_steps=2, adam_lr=(-6.0, -4.0), per_octave=1, n_train=32)
TINY_T = dict(TINY, transformer_widths=(8, 16), transformer_seeds=1, transformer_steps=6)


def test_registered():
  assert EXPERIMENTS["mutransfer"] is M


@pytest.mark.parametrize("key,value,message", [
    ("models", "cnn", "unknown model 'cnn'"),
    ("settings", "ntk-adam", "unknown setting 'ntk-adam'"),
    ("widths", "0,8", "widths must be distinct positive"),
    ("adam_lr", "-1,-3", "adam_lr must be two log2 learning rates"),
    ("coord_steps", "50", "coord_steps"),
    ("transformer_steps", "0", "transformer_steps"),
    ("transformer_widths", "9,18", "multiple of num_heads"),
    ("transformer_widths", "8,8", "transformer_widths must be distinct"),
    ("mlp_loss", "hinge", "mlp_loss must be 'mse' or 'xent'"),
    ("transformer_seeds", "0", "transformer_seeds must be a positive count"),
    ("transformer_seeds", "3,3", "transformer_seeds must be a positive count"),
    ("muon_models", "cnn", "unknown model 'cnn'"),
])
def test_bad_config(key, value, message):
  with pytest.raises(ConfigError, match=message):
    M.run(configure(M.Config, {key: value}))


def test_each_model_has_its_widths_and_base_width():
  cfg = configure(M.Config, {"widths": "16,64", "transformer_widths": "12,48"})
  assert [M.model_widths(cfg, m) for m in ("mlp", "transformer")] == [(16, 64), (12, 48)]
  assert [M.base_width(cfg, m) for m in ("mlp", "transformer")] == [16, 12]
  cfg = configure(M.Config, {"widths": "8,16", "transformer_widths": "none", "base_width": "4"})
  assert M.model_widths(cfg, "transformer") == (8, 16) and M.base_width(cfg, "transformer") == 4


def test_widths_given_in_any_order_train_and_read_ascending():
  cfg = configure(M.Config, {"widths": "64,16", "transformer_widths": "48,12,24"})
  assert [M.model_widths(cfg, m) for m in ("mlp", "transformer")] == [(16, 64), (12, 24, 48)]
  assert M.base_width(cfg, "transformer") == 12


def test_each_model_has_its_seeds():
  cfg = configure(M.Config, {"seeds": "11,12", "transformer_seeds": "4"})
  assert M.model_seeds(cfg, "mlp") == [11, 12]
  assert M.model_seeds(cfg, "transformer") == [11, 12, 13, 14]  # a count counts up from 11
  cfg = configure(M.Config, {"seeds": "3", "transformer_seeds": "5,7"})
  assert [M.model_seeds(cfg, m) for m in ("mlp", "transformer")] == [[0, 1, 2], [5, 7]]


def test_lr_grid_has_three_points_per_octave():
  g = M.log2_lrs(M.Config(), "adam")
  np.testing.assert_allclose(np.diff(g), 1 / 3)
  assert g[-1] - g[0] >= 8


def _fake(best_sp, best_mup, widths=(16, 64, 256), n_lr=12):
  """A results dataset whose loss curves have their minima at the given grid indices."""
  k = np.arange(n_lr)
  loss = np.stack([[[(1.0 + 0.1 * (k - b) ** 2) * 0.5 ** j for j, b in enumerate(best)]
                    for best in (best_sp, best_mup)]])  # (model, setting, width, lr_k)
  loss = np.broadcast_to(loss[:, :, None, :, :, None], (1, 2, 1, len(widths), n_lr, 3))
  loss = loss * np.array([1.0, 0.5, 0.3])  # training lowers every curve
  dims = ("model", "setting", "seed", "width", "lr_k", "step")
  coords = dict(model=["mlp"], setting=["sp-adam", "mup-adam"], seed=[0], width=list(widths),
                lr_k=k, step=[0, 8, 10], layer=[0, 1])
  coord = np.ones((1, 2, 1, len(widths), n_lr, 3, 2))
  coord[:, 0] *= np.array(widths, float)[:, None, None, None] ** 0.5  # SP grows
  change = coord * 0.1
  change[..., 0, :] = 0.0  # no change at init
  return xr.Dataset({"train_loss": (dims, loss.copy()),
                     "diverged": (dims, np.zeros(loss.shape, bool)),
                     "coord": ((*dims, "layer"), coord),
                     "coord_change": ((*dims, "layer"), change),
                     "log2_lr": (("setting", "lr_k"), np.stack([-10 + k / 3] * 2))},
                    coords=coords, attrs=dict(base_width=16, coord_steps=10))


def test_signature_reads_transfer_and_drift():
  """Synthetic curves: muP's minima move by at most one grid step, SP's by 6 (2 octaves)."""
  ds = _fake(best_sp=(8, 5, 2), best_mup=(5, 5, 6))
  t = M.transfer(ds)
  assert t[("mlp", "mup-adam")]["shift"] == 1 and t[("mlp", "sp-adam")]["shift"] == 3
  np.testing.assert_allclose(t[("mlp", "sp-adam")]["exponent"], -0.5)
  checks = {c.name.split(":")[1].strip()[:20]: c for c in M.signature(ds)}
  assert all(c.passed for c in checks.values()), [c.line() for c in checks.values()]
  # The control: muP's curves shifted like SP's fail the transfer check.
  bad = M.signature(_fake(best_sp=(8, 5, 2), best_mup=(8, 5, 2)))
  assert not bad[0].passed and "transfers" in bad[0].name


def _seeds(ds, factors):
  """``ds`` with one seed per factor (multiplying its losses and coordinate sizes)."""
  runs = ["train_loss", "coord", "coord_change"]
  out = xr.concat([ds[runs] * f for f in factors], dim="seed")
  out = out.assign_coords(seed=np.arange(len(factors))).transpose(*ds.coord.dims)
  out["diverged"] = xr.zeros_like(out.train_loss, dtype=bool)
  out["log2_lr"] = ds.log2_lr
  return out.assign_attrs(ds.attrs)


def test_transfer_two_steps_off_is_judged_against_the_seeds_noise():
  """A width whose argmin lies 2 grid steps from the median passes only if the learning rate
  within one step is not worse for it beyond the seeds' noise; 3 steps off always fails."""
  k = np.arange(12)
  ds = _seeds(_fake(best_sp=(8, 5, 2), best_mup=(5, 5, 7)), [1.0] * 4)
  mup = dict(setting=1, width=2)
  # A flat basin around 7 whose seeds disagree by ~10% per point: the seed mean's smoothed
  # argmin is 7, two steps from the median 5, and 6 is as good within the noise.
  jitter = np.exp(0.1 * np.random.default_rng(1).standard_normal((4, 12)))
  flat = (1.0 + 0.02 * (k - 7) ** 2) * jitter  # (seed, lr_k)
  ds["train_loss"][mup] = flat[:, :, None] * np.array([1.0, 0.5, 0.3])
  r = M.transfer(ds)[("mlp", "mup-adam")]
  assert r["shift"] == 2 and not r["cost"][2].worse, r
  check = [c for c in M.signature(ds) if "transfers" in c.name][0]
  assert check.passed and "within noise" in check.measured, check.line()
  # The same argmin, with every seed clearly worse within one step of the median: fails.
  steep = (1.0 + 0.5 * (k - 7) ** 2) * np.array([1.0, 1.01, 0.99, 1.02])[:, None]
  ds["train_loss"][mup] = steep[:, :, None] * np.array([1.0, 0.5, 0.3])
  r = M.transfer(ds)[("mlp", "mup-adam")]
  assert r["shift"] == 2 and r["cost"][2].worse
  assert not [c for c in M.signature(ds) if "transfers" in c.name][0].passed
  # 3 steps off: fails whatever the noise; that is also how SP's drift passes the control.
  assert not M.reading.transfers(dict(r, index=np.array([5.0, 5.0, 8.0]),
                                      cost=[r["cost"][0]] * 3))
  assert [c for c in M.signature(ds) if "control: under SP the best lr" in c.name][0].passed


def test_coordinate_check_is_judged_against_the_seeds_noise():
  """muP's exponent beyond the bound fails only beyond the seeds' noise; SP's growth must be
  beyond it."""
  base = _fake(best_sp=(8, 5, 2), best_mup=(5, 5, 6))
  ds = base.copy(deep=True)
  ds.attrs["coord_steps"] = -1
  widths = np.array([16, 64, 256], float)[:, None, None]
  ds["coord_change"][dict(setting=1, layer=1)] *= widths ** 0.35  # muP's readout grows: +0.35
  quiet = _seeds(ds, [1.0, 1.01, 0.99, 1.0])
  coord = lambda d: [c for c in M.signature(d) if "coordinate" in c.name]
  assert not coord(quiet)[0].passed  # +0.35 with seeds agreeing to 1%: beyond 0.25
  # The same means, each run off by a factor e^+-0.15 (seeds disagree by ~30% at a width):
  # the exponent's standard error is 0.15 * 0.59 = 0.088, and +0.35 is within noise of 0.25.
  a = 0.15
  sign = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [-1, 1, 1, -1]], float)  # (width, seed)
  noisy = quiet.copy(deep=True)
  noisy["coord_change"] = noisy.coord_change * xr.DataArray(
      np.exp(a * sign), dims=("width", "seed"), coords=dict(width=noisy.width, seed=noisy.seed))
  noisy["coord_change"][dict(width=0)] = quiet.coord_change.isel(width=0)  # not fitted
  e, se = M.coord_exponents(noisy, stderr=True)
  muP = dict(model="mlp", setting="mup-adam", step=10, layer=1)
  np.testing.assert_allclose([float(e.sel(muP)), float(se.sel(muP))], [0.35, 0.15 * 0.589], atol=2e-3)
  flat = coord(noisy)[0]
  assert flat.passed and "+0.35 +- 0.09" in flat.measured, flat.line()
  assert coord(noisy)[1].passed  # SP's +0.5: 0.5 - 1.94 * 0.088 > 0.25
  # SP's +0.5 growth (the fake's) stands out of 1% noise: the control passes.
  assert coord(quiet)[1].passed


def test_coordinate_check_judges_the_change_from_init():
  """muP's readout activations start like width^-1/2 (not judged); its change from init is."""
  ds = _fake(best_sp=(8, 5, 2), best_mup=(5, 5, 6))
  shrink = np.array([16, 64, 256], float)[:, None, None] ** -0.5  # (width, lr_k, step)
  ds["coord"][dict(setting=1, layer=1)] *= shrink
  coord = lambda d: [c for c in M.signature(d) if "coordinate" in c.name]
  checks = coord(ds)
  assert len(checks) == 2 and all(c.passed for c in checks), [c.line() for c in checks]
  assert "-0.50" in checks[0].measured  # muP's: the activations' size is printed, not judged
  ds["coord_change"][dict(setting=1, layer=1)] *= shrink
  assert not coord(ds)[0].passed  # muP's change shrinking with the width fails
  ds["coord_change"][dict(setting=0)] = ds.coord_change.sel(setting="mup-adam").values
  assert not coord(ds)[1].passed  # SP's change not growing fails the control
  # Results recorded before coord_change existed: skipped, not judged on sizes.
  assert all(c.skipped for c in coord(ds.drop_vars("coord_change")))


def test_coordinate_check_reads_the_wider_widths_at_coord_step():
  """The exponent is fitted over the widths but the narrowest, at coord_steps (none: the end)."""
  ds = _fake(best_sp=(8, 5, 2), best_mup=(5, 5, 6))
  ds.attrs["coord_steps"] = -1  # none: each model's last step
  assert M.coord_step(ds, "mlp") == 10 and M.coord_widths(ds, "mlp").tolist() == [64, 256]
  coord = lambda d: [c for c in M.signature(d) if "coordinate" in c.name]
  ds["coord_change"][dict(setting=1, width=0)] *= 3.0  # muP's narrowest width off: not fitted
  checks = coord(ds)
  assert all(c.passed for c in checks), [c.line() for c in checks]
  assert "after 10 steps, widths 64-256" in checks[0].measured
  ds["coord_change"][dict(setting=1, width=2, step=2)] *= 0.25  # muP's widest at step 10: -1
  assert not coord(ds)[0].passed
  ds.attrs["coord_steps"] = 8  # read at step 8, before it
  assert M.coord_step(ds, "mlp") == 8 and coord(ds)[0].passed
  cfg = M.Config(models=("mlp",), steps=30)
  assert cfg.coord_steps is None and M.record_steps(cfg)[-1] == 30


def test_wider_is_better_reads_the_trend_within_the_seeds_noise():
  steps = np.array([0, 1, 2, 4, 8, 16])
  t = np.arange(len(steps))
  # Three widths that leave a plateau (steps 0-1) and then fall, wider faster; two seeds.
  rate = np.array([0.1, 0.2, 0.25])[:, None]
  base = 3.0 * np.exp(-rate * np.maximum(t - 1, 0))  # (width, step)
  noise = np.array([1.0, 1.03])[:, None, None]  # the seeds differ by 3%
  r = M.wider_is_better(base[None] * noise, steps)
  assert r.ok and r.steps == [4, 8, 16] and np.all(r.diff < 0), (r.steps, r.diff)
  assert np.isclose(r.span, r.diff.sum()) and r.span_se > 0
  # The plateau is not judged: a wider net 1% worse there does not fail.
  bumped = base.copy()
  bumped[2, 1] *= 1.01
  assert M.wider_is_better(bumped[None] * noise, steps)[0]
  # The widest net worse than the next at one judged step, beyond the seeds' spread: fails.
  worse = base.copy()
  worse[2, 4] = 1.2 * worse[1, 4]
  assert not M.wider_is_better(worse[None] * noise, steps)[0]
  # Within the spread of the seeds (a noisy widest pair) it passes; with one seed any rise fails.
  spread = base[None] * noise
  spread[:, 2, 4] = spread[:, 1, 4] * np.array([0.99, 1.03])
  assert M.wider_is_better(spread, steps)[0]
  assert not M.wider_is_better(spread[1:], steps)[0]  # the seed whose widest net is worse
  # Equal widths are not better on average.
  same = np.broadcast_to(base[:1], base.shape)[None] * noise
  assert not M.wider_is_better(same, steps)[0]
  # Monotone, not every step significant: the widest pair equal (a width at its limit) passes,
  # the widest pair worse on average beyond the seeds' noise fails, though the span is lower.
  limit = base.copy()
  limit[2] = limit[1]
  assert M.wider_is_better(limit[None] * noise, steps)[0]
  seeds = np.array([1.0, 1.01, 0.99])[:, None, None]
  back = base.copy()
  back[2] = base[1] * 1.03
  r = M.wider_is_better(back[None] * seeds, steps)
  assert not r.ok and r.span < -3 * r.span_se and r.diff[1] > 0, r
  # Equal widths with independent seed noise (a null): not better beyond the noise.
  rng = np.random.default_rng(0)
  null = np.broadcast_to(base[:1], base.shape)[None] * np.exp(0.05 * rng.standard_normal((3, 3, 6)))
  assert not M.wider_is_better(null, steps)[0]
  # A width that diverges before the others are under way fails instead of being skipped.
  broken = np.array(base)[None] * noise
  broken[:, 0, 1:] = np.inf
  assert M.wider_is_better(broken, steps)[0] is False
  # Nothing to judge: one width, or every width fits at once.
  assert M.wider_is_better(base[None, :1] * noise, steps)[0] is None
  assert M.wider_is_better(np.full((1, 2, 3), 1.0) * [1.0, 1e-4, 1e-5], np.arange(3))[0] is None


def test_stable_lr_is_an_octave_below_the_median_best():
  ds = _fake(best_sp=(8, 5, 2), best_mup=(5, 6, 6)).assign_attrs(per_octave=3)
  assert M.stable_lr(ds, "mlp", "mup-adam") == 3  # median 6, minus 3 grid steps
  assert M.stable_lr(ds, "mlp", "sp-adam") == 3  # SP is read at muP's learning rate
  low = _fake(best_sp=(2, 2, 2), best_mup=(2, 2, 2)).assign_attrs(per_octave=3)
  assert M.stable_lr(low, "mlp", "mup-adam") == 0  # not below the grid


def test_one_lucky_run_does_not_move_the_best_lr():
  """The best lr reads the loss averaged over 2/3 of an octave each side, not one point."""
  ds = _fake(best_sp=(8, 5, 2), best_mup=(5, 5, 5)).assign_attrs(per_octave=3)
  ds["train_loss"][dict(setting=1, width=2, lr_k=10)] *= 0.2  # below the true minimum
  curve = M.reading._geomean(M.final_loss(ds), "seed").sel(setting="mup-adam").isel(model=0, width=2)
  assert M.smoothed_argmin(curve.values) == 10  # the raw argmin follows the lucky point
  assert M.transfer(ds)[("mlp", "mup-adam")]["index"].tolist() == [5, 5, 5]


def test_diverged_runs_count_as_infinite_loss():
  ds = _fake(best_sp=(8, 5, 2), best_mup=(5, 5, 5))
  ds["diverged"][dict(setting=1, width=0, lr_k=5)] = True
  assert np.isinf(M.final_loss(ds).isel(setting=1, width=0, lr_k=5)).all()
  # The diverged point spoils the windows around it (two grid points each side at 3 per octave).
  assert M.transfer(ds)[("mlp", "mup-adam")]["index"][0] in (2, 8)


def test_one_width_skips_the_comparisons():
  checks = M.signature(_fake(best_sp=(3,), best_mup=(3,), widths=(16,)))
  assert all(c.skipped for c in checks if "transfer" in c.name or "drift" in c.name
             or "wider" in c.name or "coordinate" in c.name), [c.line() for c in checks]


def test_tiny_run_of_both_models_summary_and_figures(tmp_path):
  # Two models with different numbers of layers: only ``coord`` has a layer axis (NaN
  # beyond a model's own layers); the other results keep their axes. One setting keeps it short.
  # The transformer trains for more steps than the MLP, at other widths: each model is read
  # at its own records, widths and seeds, with its own base width.
  ds = M.run(M.Config(**dict(TINY, models=("mlp", "transformer"), settings=("mup-adam",), p=5,
                             transformer_steps=10, transformer_widths=(12, 16),
                             transformer_seeds=(1,))))
  assert ds.train_loss.dims == ("model", "setting", "seed", "width", "lr_k", "step")
  assert ds.width.values.tolist() == [8, 12, 16]
  assert ds.seed.values.tolist() == [0, 1]
  assert M.seeds_of(ds, "mlp").tolist() == [0] and M.seeds_of(ds, "transformer").tolist() == [1]
  assert M.recorded(ds, "mlp").seed.values.tolist() == [0]
  assert M.widths_of(ds, "mlp").tolist() == [8, 16]
  assert M.widths_of(ds, "transformer").tolist() == [12, 16]
  assert [M.base_width_of(ds, m) for m in ("mlp", "transformer")] == [8, 12]
  assert M.recorded(ds, "mlp").step.values.max() == 6
  assert M.recorded(ds, "transformer").step.values.max() == 10
  assert M.recorded(ds, "transformer").width.values.tolist() == [12, 16]
  for m in ("mlp", "transformer"):
    own = M.final_loss(ds).sel(model=m, width=M.widths_of(ds, m), seed=M.seeds_of(ds, m))
    assert np.isfinite(own).all()
  assert M.transfer(ds)[("transformer", "mup-adam")]["widths"].tolist() == [12, 16]
  assert ds.log2_lr.dims == ("setting", "lr_k")
  assert ds.coord.dims[-1] == "layer" and ds.coord_change.dims == ds.coord.dims
  # Each model at its own seed (the MLP's 0, the transformer's 1): NaN at the other's.
  finite = np.isfinite(ds.coord.isel(step=0, lr_k=0, setting=0).sel(width=16)).any("seed")
  assert finite.sum("layer").values.tolist() == [3, 5]  # MLP: 2 hidden + output
  change = ds.coord_change.isel(lr_k=0, setting=0).sel(width=16).max("seed")
  assert np.isfinite(change).sum("layer").isel(step=0).values.tolist() == [3, 5]
  # The change from the run's own init: 0 at step 0 up to float32 rounding (the two passes
  # are fused differently in the compiled step: ~1e-8 measured on the transformer).
  assert float(np.abs(change.isel(step=0)).max()) < 1e-6
  assert float(change.sel(step=2).min()) > 0
  rows = dict(M.summary(ds))
  assert "mlp mup-adam" in rows and "drift exponent" in rows["transformer mup-adam"]
  assert rows["transformer widths"] == "12, 16 (muP base width 12); 1 seed(s)"
  assert rows["mlp widths"].endswith("; 1 seed(s)")
  assert M.summary_title(ds) == ("mlp step 6, mean of 1 seed(s); "
                                 "transformer step 10, mean of 1 seed(s)")
  assert len(M.signature(ds)) == 6  # per model: transfer, wider is better, coordinate check
  paths = M.figures(ds, tmp_path)
  assert [pathlib.Path(p).name for p in paths] == ["mutransfer_mlp.png",
                                                    "mutransfer_transformer.png",
                                                    "coord_check.png"]


def test_a_model_outside_muon_models_skips_muon_and_is_read_without_it(tmp_path):
  # By default only the MLP trains Muon (the transformer's would add a third to its time):
  # the results keep the settings' order, NaN where a model did not train a setting, and
  # the reading (summary, checks, figures) passes over it.
  assert M.Config().muon_models == ("mlp",)
  cfg = M.Config(**dict(TINY_T, models=("mlp", "transformer"), p=5, transformer_steps=6,
                        settings=("sp-muon", "mup-adam"), muon_lr=(-6.0, -4.0)))
  ds = M.run(cfg)
  assert ds.setting.values.tolist() == ["sp-muon", "mup-adam"]
  assert M.settings_of(ds, "mlp") == ["sp-muon", "mup-adam"]
  assert M.settings_of(ds, "transformer") == ["mup-adam"]
  assert ds.train_loss.sel(model="transformer", setting="sp-muon").isnull().all()
  rows = dict(M.summary(ds))
  assert "mlp sp-muon" in rows and "transformer sp-muon" not in rows
  assert "transformer mup-adam" in rows and M.summary_title(ds).count("step 6") == 2
  assert sorted(M.transfer(ds)) == [("mlp", "mup-adam"), ("mlp", "sp-muon"),
                                    ("transformer", "mup-adam")]
  assert len(M.signature(ds)) == 6
  assert len(M.figures(ds, tmp_path)) == 3
  with pytest.raises(ConfigError, match="the transformer trains no setting"):
    M.run(M.Config(**dict(TINY_T, models=("transformer",), settings=("sp-muon",))))
  with pytest.raises(ConfigError, match="no model trains the Muon settings"):
    M.run(M.Config(**dict(TINY_T, models=("transformer",), settings=("mup-adam", "sp-muon"))))
  # The first model need not train every setting: each setting's grid is read from its runs.
  swapped = M.run(M.Config(**dict(TINY_T, models=("transformer", "mlp"), p=5, steps=4,
                                  settings=("sp-muon", "mup-adam"), muon_lr=(-6.0, -5.0))))
  assert swapped.log2_lr.sel(setting="sp-muon").values[:2].tolist() == [-6.0, -5.0]
  assert sorted(M.transfer(swapped)) == [("mlp", "mup-adam"), ("mlp", "sp-muon"),
                                         ("transformer", "mup-adam")]
  both = M.run(M.Config(**dict(TINY_T, models=("transformer",), p=5, settings=("sp-muon",),
                               muon_lr=(-6.0, -5.0), muon_models=("mlp", "transformer"))))
  assert M.settings_of(both, "transformer") == ["sp-muon"]


def test_optimizers_of_one_model_train_for_their_own_steps():
  """The transformer under SGD trains longer (transformer_sgd_steps): each setting is read at
  its own records, its final loss at the end of its own training."""
  ds = M.run(M.Config(**dict(TINY, models=("transformer",), settings=("mup-adam", "mup-sgd"),
                             p=5, transformer_widths=(12, 16), transformer_seeds=(0,),
                             transformer_steps=6, transformer_sgd_steps=10, sgd_lr=(-2.0, -1.0),
                             coord_steps=None)))
  assert [int(M.recorded(ds, "transformer", s).step.max()) for s in ("mup-adam", "mup-sgd")] \
      == [6, 10]
  assert [M.coord_step(ds, "transformer", s) for s in ("mup-adam", "mup-sgd")] == [6, 10]
  assert np.isnan(ds.train_loss.sel(setting="mup-adam", step=10)).all()  # Adam stopped at 6
  for s in ("mup-adam", "mup-sgd"):  # read at its own end, not NaN past Adam's
    grid = np.flatnonzero(np.isfinite(ds.log2_lr.sel(setting=s).values))
    assert not M.final_loss(ds).sel(setting=s).isel(lr_k=grid).isnull().any()
  assert M.summary_title(ds) == "transformer steps mup-adam 6, mup-sgd 10, mean of 1 seed(s)"
  lines = {c.name.split(":")[0] + c.name.split(":")[1][:20]: c.measured for c in M.signature(ds)
           if "coordinate" in c.name}
  assert [v.split(",")[0] for v in lines.values()] == ["after 6 steps", "after 10 steps"], lines
  with pytest.raises(ConfigError, match=r"coord_steps \(8\) must not exceed the transformer's "
                                        r"steps \(6\)"):
    M.run(M.Config(**dict(TINY, models=("transformer",), settings=("mup-adam", "mup-sgd"),
                          transformer_steps=6, transformer_sgd_steps=10, coord_steps=8)))


@pytest.mark.slow
def test_signature_passes_on_a_reduced_config_and_sp_is_the_control():
  ds = M.run(M.Config(**SMALL))
  checks = M.signature(ds)
  lines = [c.line() for c in checks]
  assert all(c.passed for c in checks), lines
  t = M.transfer(ds)
  assert t[("mlp", "sp-adam")]["exponent"] < -0.5, lines
  # The control: SP's best lr does not pass muP's transfer check.
  assert t[("mlp", "sp-adam")]["shift"] > 1
  # The coordinate check judges the change from init at the end of training (coord_steps none)
  # over widths 64-256; SP's change would fail muP's flatness there (a layer beyond 0.25).
  ce = M.coord_exponents(ds).isel(model=0, step=-1)
  assert int(ce.step) == 30 and M.coord_widths(ds, "mlp").tolist() == [64, 256]
  assert float(np.abs(ce.sel(setting="sp-adam")).max()) > 0.25, ce.values
  assert float(np.abs(ce.sel(setting="mup-adam")).max()) <= 0.25, ce.values


def test_cli_prints_pass_fail_lines(tmp_path):
  out = tmp_path / "m"
  args = ["run", "mutransfer", "--out", str(out)]
  for k, v in TINY.items():
    args += ["--set", f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"]
  res = CliRunner().invoke(cli, args)
  assert res.exit_code == 0, res.output
  lines = [l for l in res.output.splitlines() if l.startswith(("PASS", "FAIL", "SKIP"))]
  assert len(lines) == 5, res.output
  assert "mutransfer: mlp step 6, mean of 1 seed(s)" in res.output
  assert (out / "results.nc").exists() and (out / "mutransfer_mlp.png").exists()
