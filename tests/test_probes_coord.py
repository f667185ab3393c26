"""The coordinate check: flat in width under muP, growing under SP, for native, Flax and
Equinox models (the foreign ones parametrized by their base shapes)."""

import equinox as eqx
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import data, nn, probes, sweep
from jaxtheory.nn import base_shapes as bs
from jaxtheory.nn.equinox import from_eqx
from jaxtheory.nn.flax import from_linen

D_IN, WIDTHS, STEPS = 8, [64, 256, 1024], 3


class LinenMLP(linen.Module):
  width: int

  @linen.compact
  def __call__(self, x):
    for _ in range(2):
      x = linen.relu(linen.Dense(self.width)(x))
    return linen.Dense(1)(x)


BUILDS = {
    "native": lambda w: nn.mlp((D_IN,), w, 2, 1, b_std=0.1),
    "linen": bs.parametrize(lambda w: from_linen(LinenMLP(w), (D_IN,))),
    "eqx": bs.parametrize(lambda w: from_eqx(
        lambda key: eqx.nn.MLP(D_IN, 1, w, 2, activation=jax.nn.relu, key=key), (D_IN,)),
        layout="out_in"),
}


def _coords(kind):
  """SP and muP in one sweep (``parametrization`` as a grid axis)."""
  ds = data.teacher_student(n_train=64, n_test=8, input_dim=D_IN, seed=0)
  s = sweep.Sweep(BUILDS[kind], ds, dict(parametrization=["sp", "mup"], seed=[0, 1],
                                         width=WIDTHS), "sgd", dict(lr=0.05),
                  steps=STEPS, record="every:1", loss="mse",
                  metrics={"coord": probes.coord_metric()}, max_waste=float("inf"))
  return sweep.run(s, progress=False).coord


@pytest.mark.parametrize("kind", ["native", "linen", "eqx"])
def test_coord_check_flat_under_mup_growing_under_sp(kind, tmp_path):
  coord = _coords(kind)
  mup, sp = coord.sel(parametrization="mup"), coord.sel(parametrization="sp")
  assert mup.sizes["layer"] == 3  # two hidden pre-activations and the output
  e_mup = probes.coord_check(mup, tmp_path / "mup.png")
  e_sp = probes.coord_check(sp)
  assert (tmp_path / "mup.png").stat().st_size > 1000
  hidden = dict(layer=slice(0, 2))
  # muP: hidden coordinates flat at every step; the output never grows (it starts
  # like width^-1/2, muP's readout init, and becomes O(1) as it trains).
  assert float(np.abs(e_mup.isel(hidden)).max()) < 0.1, e_mup.values
  assert float(e_mup.isel(layer=2).max()) < 0.1, e_mup.values
  # SP: the same learning rate makes the output grow with the width (Equinox's
  # uniform init is sqrt(3) smaller, so the least there).
  last = e_sp.isel(step=-1)
  assert float(last.isel(layer=2)) > 0.3, e_sp.values
  assert float(last.isel(layer=2)) > float(e_mup.isel(step=-1, layer=2)) + 0.3
  # At init SP's hidden coordinates are O(1) too: the growth is training's.
  assert float(np.abs(e_sp.isel(step=0, **hidden)).max()) < 0.1


def test_sizes_of_a_native_mlp_by_hand():
  m = nn.mlp((D_IN,), 16, 1, 2, b_std=0.0)
  params = m.init(jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (5, D_IN))
  h = x @ params[0]["W"]
  want = [jnp.mean(jnp.abs(h)), jnp.mean(jnp.abs(jax.nn.relu(h) @ params[2]["W"]))]
  np.testing.assert_allclose(probes.coord.sizes(m, params, x), want, rtol=1e-5)
  moved = jax.tree.map(lambda a: a * 1.5, params)
  np.testing.assert_allclose(probes.coord.change_sizes(m, params, moved, x)[0],
                             0.5 * want[0], rtol=1e-5)


def test_padded_coordinates_do_not_count():
  m = nn.mlp((D_IN,), 32, 1, 2)
  ctx = nn.Ctx(width=16)
  x = jax.random.normal(jax.random.key(1), (5, D_IN))
  small = nn.mlp((D_IN,), 16, 1, 2)
  np.testing.assert_allclose(probes.coord.sizes(m, m.init(jax.random.key(0), ctx), x, ctx),
                             probes.coord.sizes(small, small.init(jax.random.key(0)), x),
                             rtol=1e-5)


def _change_sweep(kind, widths, seeds, parametrization="mup", opt="adam", lr=0.01):
  ds = data.teacher_student(n_train=64, n_test=8, input_dim=D_IN, seed=0)
  return sweep.Sweep(BUILDS[kind], ds, dict(seed=seeds, width=widths), opt, dict(lr=lr),
                     steps=STEPS, record="every:1", loss="mse", parametrization=parametrization,
                     metrics={"change": probes.coord_change_metric()},
                     max_waste=float("inf")), ds


def _change_of_one_run(kind, width, seed):
  """``change_sizes`` from a run's initial and final parameters, its sweep trained alone
  (``initial_params`` then ``execute``: the second takes the first's init program)."""
  s, ds = _change_sweep(kind, [width], [seed])
  (g0,), (g,) = sweep.initial_params(s), sweep.execute(s, progress=False).groups
  one = lambda tree: jax.tree.map(lambda a: a[0], tree)
  return probes.coord.change_sizes(g.model, one(g0.params), one(g.params),
                                   ds.x_train, one(g.ctx))


@pytest.mark.parametrize("kind", ["native", "linen", "eqx"])
def test_recorded_change_from_init_is_change_sizes_of_the_run(kind):
  """The metric's ``params0`` is the run's own initialization: its record after the last
  step equals ``change_sizes`` between the run's initial and final parameters (for the
  native MLP the sweep pads width 16 into width 64's program; the reference is trained
  unpadded), and it is exactly 0 at step 0."""
  s, _ = _change_sweep(kind, [16, 64], [0, 1])
  res = sweep.run(s, progress=False)
  if kind == "native":
    assert len(sweep.plan(s).buckets) == 1  # both widths in one padded program
  change = res.change
  assert change.sizes["layer"] == 3
  assert float(np.abs(change.isel(step=0)).max()) == 0.0
  assert float(change.isel(step=-1).min()) > 0
  for w, seed in [(16, 1), (64, 0)]:
    np.testing.assert_allclose(change.sel(width=w, seed=seed).isel(step=-1),
                               _change_of_one_run(kind, w, seed), rtol=2e-4)


@pytest.mark.parametrize("opt,lr", [("sgd", 0.05), ("adam", 0.01)])
def test_change_from_init_flat_under_mup_readout_included(opt, lr):
  """muP keeps every layer's change from init width-independent, the readout's too (whose
  size starts like width^-1/2); under SP at the same lr the readout's change grows."""
  exps = {}
  for par in ("sp", "mup"):
    s, _ = _change_sweep("native", WIDTHS, [0, 1], par, opt, lr)
    change = sweep.run(s, progress=False).change.isel(step=slice(1, None))  # 0 at step 0
    exps[par] = probes.coord_exponents(change)
  assert float(np.abs(exps["mup"]).max()) < 0.15, exps["mup"].values
  assert float(exps["sp"].isel(step=-1, layer=2)) > 0.3, exps["sp"].values

