"""Tests for the lazy-vs-rich experiment and the library pieces it added.

The library: :func:`jaxtheory.nn.antisymmetric` (zero output at init, the
layer's tangent kernel, padded == unpadded), ``weight_movement`` and
``kernel_alignment_centered`` of :func:`jaxtheory.limits.compare`,
:func:`jaxtheory.data.coordinate_product`.
The experiment: its signature on a reduced sweep (gammas 0.01, 0.1, 1 at width
128), its control (gammas 0.01-0.03: nothing moves, the rich checks fail),
one seed, one gamma, the CLI.
"""

import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from jaxtheory import data, limits, nn, sweep
from jaxtheory.cli import cli
from jaxtheory.errors import ConfigError, DataError
from jaxtheory.experiments import EXPERIMENTS, configure
from jaxtheory.experiments import lazy_rich as LR
from jaxtheory.kernels import analytic
from jaxtheory.probes.similarity import cka_from_grams

# Measured (2-core CPU, shared): every check passes; weight slopes 0.87-0.89, NTK slopes
# 1.67-1.68; at gamma 0.01 weights move 0.02, NTK 0.004, deviation 0.007; at gamma 1 the NTK
# moves 8-10, centred alignment 0.08-0.11 -> 0.14-0.15, test loss 0.17-0.19x the lazy one.
REDUCED = dict(gammas=(0.01, 0.1, 1.0), seeds=2, width=128, steps=500, record=5, n_probe=48)
CONTROL = dict(REDUCED, gammas=(0.01, 0.02, 0.03))
TINY = dict(seeds=1, width=8, n_train=16, n_test=8, input_dim=4, steps=4, record=2, n_probe=4)


# ----------------------------------------------------------------------------
# Library pieces.


def _base(width=16):
  return nn.serial(nn.dense(width, width_mult=1), nn.gelu(), nn.dense(1))


@pytest.mark.parametrize("p", ["ntk", "mf"])
def test_antisymmetric_is_zero_at_init_with_the_layers_tangent_kernel(p):
  x = jax.random.normal(jax.random.key(1), (6, 3))
  ctx = nn.Ctx(p, gamma=0.1)
  base, anti = nn.model(_base(), (3,)), nn.model(nn.antisymmetric(_base()), (3,))
  q = anti.init(jax.random.key(0), ctx)
  np.testing.assert_array_equal(anti.apply(q, x, ctx), 0.0)
  chex.assert_trees_all_equal(q[0], q[1])
  k_base = limits.training_ntk(base, base.init(jax.random.key(0), ctx), ctx, x)
  k_anti = limits.training_ntk(anti, q, ctx, x)
  np.testing.assert_allclose(k_anti, k_base, rtol=1e-5, atol=1e-6)
  # One gradient step moves the copies apart and the output off zero.
  g = jax.grad(lambda q: jnp.sum(anti.apply(q, x, ctx) - 1.0) ** 2)(q)
  q1 = jax.tree.map(lambda a, b: a - 0.1 * b, q, g)
  assert float(jnp.abs(anti.apply(q1, x, ctx)).max()) > 0
  assert not np.allclose(jax.tree.leaves(q1[0])[0], jax.tree.leaves(q1[1])[0])


def test_antisymmetric_kernel_has_zero_nngp_and_the_layers_ntk():
  x = jax.random.normal(jax.random.key(2), (5, 3))
  k = analytic.kernel_fn(nn.model(nn.antisymmetric(_base()), (3,)), nn.Ctx("ntk"))(
      x, None, ("nngp", "ntk"))
  k0 = analytic.kernel_fn(nn.model(_base(), (3,)), nn.Ctx("ntk"))(x, None, ("nngp", "ntk"))
  np.testing.assert_array_equal(k.nngp, 0.0)
  np.testing.assert_allclose(k.ntk, k0.ntk, rtol=1e-6)


def test_antisymmetric_padded_equals_unpadded():
  x = jax.random.normal(jax.random.key(3), (4, 3))
  big, small = nn.model(nn.antisymmetric(_base(10)), (3,)), nn.model(nn.antisymmetric(_base(6)), (3,))
  ctx_big, ctx_small = nn.Ctx("mf", width=6, gamma=0.5), nn.Ctx("mf", gamma=0.5)
  qb, qs = big.init(jax.random.key(0), ctx_big), small.init(jax.random.key(0), ctx_small)
  loss = lambda m, c: lambda q: jnp.sum(jnp.sin(m.apply(q, x, c) + x[:, :1]))
  for _ in range(3):  # a few SGD steps keep the padded entries at zero
    qb = jax.tree.map(lambda a, g: a - 0.5 * g, qb, jax.grad(loss(big, ctx_big))(qb))
    qs = jax.tree.map(lambda a, g: a - 0.5 * g, qs, jax.grad(loss(small, ctx_small))(qs))
  np.testing.assert_allclose(big.apply(qb, x, ctx_big), small.apply(qs, x, ctx_small), rtol=1e-5,
                             atol=1e-6)
  for a, b in zip(jax.tree.leaves(qb), jax.tree.leaves(qs)):
    block = tuple(slice(0, n) for n in b.shape)
    np.testing.assert_allclose(a[block], b, rtol=1e-5, atol=1e-6)
    outside = np.asarray(a).copy()
    outside[block] = 0.0
    assert not outside.any()


def test_coordinate_product():
  ds = data.coordinate_product(n_train=50, n_test=20, input_dim=6, relevant=3, seed=4)
  assert ds.x_train.shape == (50, 6) and ds.y_train.shape == (50, 1) and ds.num_classes is None
  np.testing.assert_allclose(ds.y_train[:, 0], np.prod(ds.x_train[:, :3], axis=1), rtol=1e-5)
  np.testing.assert_allclose(ds.y_test[:, 0], np.prod(ds.x_test[:, :3], axis=1), rtol=1e-5)
  noisy = data.coordinate_product(n_train=50, n_test=20, input_dim=6, relevant=3, seed=4,
                                  noise=0.5)
  np.testing.assert_array_equal(noisy.x_train, ds.x_train)
  np.testing.assert_array_equal(noisy.y_test, ds.y_test)  # clean test targets
  assert not np.allclose(noisy.y_train, ds.y_train)
  with pytest.raises(DataError, match="relevant must be at most input_dim"):
    data.coordinate_product(input_dim=2, relevant=3)


def test_compare_weight_movement_and_centred_alignment():
  ds = data.coordinate_product(n_train=12, n_test=6, input_dim=3, seed=0)
  s = sweep.Sweep(lambda w: nn.model(nn.antisymmetric(_base(w)), (3,)), ds,
                  dict(seed=[0], width=[6, 8], gamma=[0.1, 1.0]), "sgd", dict(lr=0.5),
                  steps=6, record=3, loss="mse", parametrization="mf")
  res, groups = limits.execute(s, n_probe=6, progress=False)
  assert res.weight_movement.dims == ("seed", "width", "gamma")
  init = {int(r): jax.tree.map(lambda a, j=j: np.asarray(a[j]), g.params)
          for g in sweep.initial_params(s) for j, r in enumerate(g.runs)}
  plan = sweep.plan(s)
  for g in groups:
    for j, r in enumerate(g.runs):
      p0, p1 = init[int(r)], jax.tree.map(lambda a, j=j: np.asarray(a[j]), g.params)
      num = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(p1),
                                                               jax.tree.leaves(p0))))
      den = np.sqrt(sum(np.sum(b**2) for b in jax.tree.leaves(p0)))
      want = num / den
      got = res.weight_movement.values[tuple(plan.index[r])]
      assert got == pytest.approx(want, rel=1e-5) and got > 0
  th = res.ntk_probe.isel(seed=0, width=0, gamma=1, step=-1).values  # width 6, in the bucket of 8
  y = ds.y_train[:6]
  want = float(cka_from_grams(jnp.asarray(th), jnp.asarray(y @ y.T)))
  got = float(res.kernel_alignment_centered.isel(seed=0, width=0, gamma=1, step=-1))
  assert got == pytest.approx(want, rel=1e-5)
  # A tenth of the richness moves the weights about a tenth as far.
  ratio = (res.weight_movement.sel(gamma=0.1) / res.weight_movement.sel(gamma=1.0)).values
  assert np.all((ratio > 0.05) & (ratio < 0.2)), ratio


# ----------------------------------------------------------------------------
# The experiment.


def test_registered():
  assert EXPERIMENTS["lazy-rich"] is LR


@pytest.mark.parametrize("key,value,message", [
    ("gammas", "0,1", "gammas must be positive"),
    ("gammas", "1,1", "gammas must be distinct"),
    ("activation", "swish", "unknown activation 'swish'"),
    ("relevant", "20", "relevant must be at most input_dim"),
    ("lr", "0", "lr must be positive"),
    ("n_probe", "1", "n_probe must be an integer >= 2"),
    ("seeds", "0", "seeds must be a positive integer"),
    ("width", "0", "width must be a positive integer"),
])
def test_bad_config(key, value, message):
  with pytest.raises(ConfigError, match=message):
    LR.run(configure(LR.Config, {key: value}))


def _fake(move_hi, align_hi, test_hi, gammas=(0.01, 0.1, 1.0), seeds=(0, 1)):
  """A results dataset with the variables the checks read, as a sweep would record them."""
  g = np.asarray(gammas)
  shape = (len(seeds), len(g), 2)
  scale = (g / g.max())[None, :, None]
  grow = np.concatenate([np.zeros(shape[:2] + (1,)), np.ones(shape[:2] + (1,))], axis=-1)
  train = np.tile(np.array([0.5, 0.01]), shape[:2] + (1,))
  lo = lambda hi: np.where(scale < 1, 1.0, hi)
  dims = ("seed", "gamma", "step")
  return xr.Dataset({
      "weight_movement": (dims[:2], np.tile(g * 2.0, (len(seeds), 1))),
      "kernel_movement": (dims, grow * move_hi * scale**2),
      "dev_linear": (dims, grow * np.minimum(scale, 1.0) * 0.5),
      "kernel_alignment_centered": (dims, 0.1 * np.where(grow > 0, lo(align_hi), 1.0)),
      "test_loss": (dims, 0.2 * np.where(grow > 0, lo(test_hi), 1.0)),
      "train_loss": (dims, train), "diverged": (dims, np.zeros(shape, bool)),
  }, coords=dict(seed=list(seeds), gamma=g, step=[0, 100]))


def test_signature_logic_on_recorded_numbers():
  checks = LR.signature(_fake(move_hi=8.0, align_hi=1.5, test_hi=0.3))
  assert [c.passed for c in checks] == [True] * 6, [c.line() for c in checks]
  assert "slope 1.00" in checks[0].measured and "slope 2.00" in checks[1].measured
  # Nothing moves at the top and nothing is gained: the rich checks fail, the rest hold.
  lazy = LR.signature(_fake(move_hi=0.01, align_hi=1.0, test_hi=1.0))
  assert [c.passed for c in lazy] == [True, True, True, False, False, False]
  # Training that failed at either end is not judged.
  bad = _fake(move_hi=8.0, align_hi=1.5, test_hi=0.3)
  bad["train_loss"][:] = 0.5
  assert all(c.skipped for c in LR.signature(bad)[3:])


@pytest.mark.slow
def test_one_seed_and_one_gamma():
  ds = LR.run(LR.Config(gammas=(0.1, 1.0, 3.0), **TINY), progress=False)
  assert ds.kernel_movement.dims == ("seed", "gamma", "step")
  assert list(ds.seed.values) == [0] and "width" not in ds.dims
  lines = [c.line() for c in LR.signature(ds)]
  assert len(lines) == 6 and all("seed 0" in l for l in lines if not l.startswith("SKIP")), lines
  one = LR.run(LR.Config(gammas=(0.5,), **TINY), progress=False)
  checks = LR.signature(one)
  assert [c.skipped for c in checks] == [True, True, False, True, True, True]
  assert "one gamma" in checks[-1].measured
  assert dict(LR.summary(one))["gamma=0.5"].startswith("weights moved")


@pytest.fixture(scope="module")
def reduced():
  return LR.run(LR.Config(**REDUCED), progress=False)


@pytest.mark.slow
def test_signature_on_a_reduced_sweep(reduced):
  checks = LR.signature(reduced)
  assert len(checks) == 6
  assert all(c.passed for c in checks), [c.line() for c in checks]
  m = LR.measurements(reduced)
  # At the lazy end weights move about as gamma (twice gamma, relatively) and the NTK far less.
  assert float(m["weight"].sel(gamma=0.01).max()) < 0.05
  assert float(m["kernel"].sel(gamma=0.01).max()) < 0.01


@pytest.mark.slow
def test_summary_and_figures(reduced, tmp_path):
  rows = dict(LR.summary(reduced))
  assert rows["gamma=0.01"].startswith("weights moved")
  assert "seed 1: a = " in rows["NTK movement ~ gamma^a"]
  paths = LR.figures(reduced, tmp_path)
  assert [pathlib.Path(p).name for p in paths] == ["lazy_rich_vs_gamma.png",
                                                   "kernel_movement.png"]
  assert all(pathlib.Path(p).stat().st_size > 0 for p in paths)


@pytest.mark.slow
def test_control_small_gammas_fail_the_rich_checks():
  """Gammas 0.01-0.03: slopes still measured, nothing moves, every rich check fails."""
  checks = LR.signature(LR.run(LR.Config(**CONTROL), progress=False))
  lines = [c.line() for c in checks]
  assert not any(c.skipped for c in checks), lines
  assert checks[2].passed, lines  # the lazy end holds
  assert not any(c.passed for c in checks[3:]), lines
  assert "slope" in checks[0].measured and "slope" in checks[1].measured


def test_cli_prints_pass_fail_lines(tmp_path):
  out = tmp_path / "lr"
  args = ["run", "lazy-rich", "--out", str(out)]
  for kv in ("gammas=0.1,1,3", "seeds=1", "width=8", "n_train=16", "n_test=8", "input_dim=4",
             "steps=4", "record=2", "n_probe=4"):
    args += ["--set", kv]
  res = CliRunner().invoke(cli, args)
  assert res.exit_code == 0, res.output
  lines = [l for l in res.output.splitlines() if l.startswith(("PASS", "FAIL", "SKIP"))]
  assert len(lines) == 6, res.output
  assert any("lazy end" in l for l in lines)
  assert (out / "results.nc").exists() and (out / "lazy_rich_vs_gamma.png").exists()
