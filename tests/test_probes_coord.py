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
