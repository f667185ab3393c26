"""Tests for jaxtheory.kernels.analytic (and .nonlinear) and the jaxtheory.stax facade.

Two kinds of evidence:

* the neural-tangents 0.6.5 oracle: every network of ``tests/kernel_battery.py``
  is built through :mod:`jaxtheory.stax` and its NNGP/NTK must match the stored
  NT references (``tests/data/nt_kernels.npz``) to 1e-6 in float64;
* checks that need no NT: Monte Carlo NNGPs and empirical NTKs of wide finite
  networks, quadrature against closed forms, blocks against whole, padded
  against unpadded widths, ``frozen``, ``gamma``, and the exact errors.
"""

import importlib.util
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import nn, stax
from jaxtheory.kernels import analytic as A
from jaxtheory.kernels import nonlinear as N

HERE = pathlib.Path(__file__).parent
# The env var lets one check a freshly generated reference file without replacing the stored one.
REFS = pathlib.Path(os.environ.get("JAXTHEORY_NT_REFS", HERE / "data" / "nt_kernels.npz"))


def _battery():
  spec = importlib.util.spec_from_file_location("kernel_battery", HERE / "kernel_battery.py")
  if spec is None or not (HERE / "kernel_battery.py").exists():
    return None
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


KB = _battery()
CASE_NAMES = [c["name"] for c in KB.CASES] if KB is not None else ["<no battery>"]


def _close(ours, ref, what, rtol=1e-6, skip_diagonal=False):
  ours, ref = np.asarray(ours), np.asarray(ref)
  assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
  assert np.all(np.isfinite(ours)), f"{what}: non-finite entries"
  finite = np.isfinite(ref)
  if skip_diagonal:
    finite &= ~np.eye(*ref.shape, dtype=bool)
  assert finite.mean() > 0.5, what
  scale = np.max(np.abs(ref[finite]))
  np.testing.assert_allclose(ours[finite], ref[finite], rtol=rtol, atol=rtol * scale,
                             err_msg=what)


# ----------------------------------------------------------------------------
# The neural-tangents oracle.


@pytest.mark.parametrize("name", CASE_NAMES)
def test_matches_neural_tangents(name, x64):
  if KB is None:
    pytest.skip("tests/kernel_battery.py is absent")
  if not REFS.exists():
    pytest.skip("tests/data/nt_kernels.npz (neural-tangents references) is absent")
  refs = np.load(REFS)
  if f"{name}/nngp" not in refs:
    pytest.skip(f"no NT reference stored for {name}")
  case = KB.case_by_name(name)
  _, _, kernel_fn = KB.build(case["net"], stax, {"tanh": jnp.tanh})
  x1, x2 = refs[f"{name}/x1"], refs[f"{name}/x2"]
  # One compiled program for both calls (compiling dominates the runtime).
  k12, k11 = jax.jit(lambda a, b: (kernel_fn(a, b), kernel_fn(a)))(x1, x2)
  _close(k12.nngp, refs[f"{name}/nngp"], f"{name} nngp")
  _close(k12.ntk, refs[f"{name}/ntk"], f"{name} ntk")
  # NT 0.6.5's RectifiedMonomial differentiates arccos at theta = 0 on the x1-vs-x1
  # diagonal: NaN or garbage there (e.g. a negative NTK). Ours is checked by quadrature.
  bad_diag = "RectifiedMonomial" in KB.layer_names(case["net"])
  _close(k11.nngp, refs[f"{name}/nngp11"], f"{name} nngp11", skip_diagonal=bad_diag)
  _close(k11.ntk, refs[f"{name}/ntk11"], f"{name} ntk11", skip_diagonal=bad_diag)


def test_battery_builds_through_stax():
  """Every battery spec builds and runs init/apply through the facade (no NT needed)."""
  if KB is None:
    pytest.skip("tests/kernel_battery.py is absent")
  names = set()
  for case in KB.CASES:
    names |= KB.layer_names(case["net"])
  missing = sorted(n for n in names if not hasattr(stax, n))
  assert not missing, f"jaxtheory.stax lacks {missing}"
  case = KB.case_by_name("resnet_mlp")
  init_fn, apply_fn, _ = KB.build(case["net"], stax, {"tanh": jnp.tanh})
  shape, params = init_fn(jax.random.key(0), (-1, *case["input_shape"]))
  assert shape == (-1, 1)
  x1, _ = KB.inputs(case)
  assert apply_fn(params, jnp.asarray(x1, jnp.float32)).shape == (case["n1"], 1)


# ----------------------------------------------------------------------------
# Monte Carlo: wide random networks.


def _mc_outputs(model, x, ctx, n_seeds):
  def one(key):
    return model.apply(model.init(key, ctx), x, ctx)
  return jax.vmap(one)(jax.random.split(jax.random.key(1), n_seeds))  # (seeds, n, out)


@pytest.mark.parametrize("arch", ["mlp_erf", pytest.param("cnn_relu_gap", marks=pytest.mark.slow)])
def test_nngp_is_the_output_covariance_of_wide_networks(arch):
  """E[f(x) f(x')] over random inits approaches the NNGP (Lee et al. 2018; Novak et al. 2019)."""
  ctx = nn.Ctx("sp")

  def build(W_std):
    if arch == "mlp_erf":
      return nn.mlp((5,), width=256, depth=2, out_dim=32, activation=nn.erf, W_std=W_std,
                    b_std=0.2)
    return nn.cnn((6, 2), width=64, depth=2, out_dim=32, filter_shape=(3,), W_std=W_std,
                  b_std=0.1)

  model = build(1.5)
  x = jax.random.normal(jax.random.key(2), (4, *model.input_shape))
  f = _mc_outputs(model, x, ctx, 64)
  emp = jnp.einsum("sio,sjo->ij", f, f) / (f.shape[0] * f.shape[2])
  nngp = A.kernel_fn(model, ctx)(x, get="nngp")
  err = jnp.max(jnp.abs(emp - nngp)) / jnp.max(jnp.abs(nngp))
  assert err < 0.1, err
  # The check can fail: the NNGP of another W_std is visibly off.
  other = A.kernel_fn(build(1.2), ctx)(x, get="nngp")
  assert jnp.max(jnp.abs(emp - other)) / jnp.max(jnp.abs(nngp)) > 0.2


@pytest.mark.parametrize("parametrization", ["ntk", pytest.param("sp", marks=pytest.mark.slow)])
def test_ntk_is_the_empirical_ntk_of_a_wide_network(parametrization):
  """J J^T (weighted by the LR multipliers) approaches the analytic NTK, frozen layer included."""
  ctx = nn.Ctx(parametrization)
  width = 1024
  layer = nn.serial(nn.dense(width, 1.3, 0.1, width_mult=1), nn.relu(),
                    nn.frozen(nn.dense(width, 1.2, 0.2, width_mult=1)), nn.erf(),
                    nn.dense(1, 1.1, 0.1))
  model = nn.model(layer, (3,))
  x = jax.random.normal(jax.random.key(3), (4, 3))
  params, lr = model.init_with_lr_scale(jax.random.key(4), ctx)
  jac = jax.jacrev(lambda p: model.apply(p, x, ctx)[:, 0])(params)
  lr_sgd = jax.tree.map(lambda s: s.sgd, lr, is_leaf=lambda s: isinstance(s, nn.LRScale))
  emp = sum(jnp.einsum("i...,j...->ij", j, j) * s
            for j, s in zip(jax.tree.leaves(jac), jax.tree.leaves(lr_sgd)))
  ntk = A.kernel_fn(model, ctx)(x, get="ntk")
  err = jnp.max(jnp.abs(emp - ntk)) / jnp.max(jnp.abs(ntk))
  assert err < 0.1, err
  # The check can fail: without freezing, the middle layer adds a visible amount.
  thawed = nn.model(nn.serial(nn.dense(width, 1.3, 0.1, width_mult=1), nn.relu(),
                              nn.dense(width, 1.2, 0.2, width_mult=1), nn.erf(),
                              nn.dense(1, 1.1, 0.1)), (3,))
  ntk_thawed = A.kernel_fn(thawed, ctx)(x, get="ntk")
  assert jnp.max(jnp.abs(emp - ntk_thawed)) / jnp.max(jnp.abs(ntk)) > 0.2


def test_ntk_with_a_base_width_is_the_empirical_ntk_of_a_wide_network():
  """Under 'ntk' with a base width the LR-weighted J J^T of a wide net approaches the analytic NTK.

  The weights train with LR f0 / sigma^2 (f0 the fan-in at the base width) and the biases take
  SP's form, so the NTK is SP's at the base widths and stays finite as the width grows.
  """
  width, base = 1024, 16
  ctx = nn.Ctx("ntk", width=width, base_width=base)
  model = nn.model(nn.serial(nn.dense(width, 1.3, 0.3, width_mult=1), nn.relu(),
                             nn.dense(width, 1.2, 0.2, width_mult=1), nn.erf(),
                             nn.dense(1, 1.1, 0.4)), (3,))
  x = jax.random.normal(jax.random.key(3), (4, 3))
  params, lr = model.init_with_lr_scale(jax.random.key(4), ctx)
  jac = jax.jacrev(lambda p: model.apply(p, x, ctx)[:, 0])(params)
  lr_sgd = jax.tree.map(lambda s: s.sgd, lr, is_leaf=lambda s: isinstance(s, nn.LRScale))
  emp = sum(jnp.einsum("i...,j...->ij", j, j) * s
            for j, s in zip(jax.tree.leaves(jac), jax.tree.leaves(lr_sgd)))
  ntk = A.kernel_fn(model, ctx)(x, get="ntk")
  err = jnp.max(jnp.abs(emp - ntk)) / jnp.max(jnp.abs(ntk))
  assert err < 0.1, err
  # The check can fail: the NTK without the base width is visibly off.
  plain = A.kernel_fn(model, nn.Ctx("ntk"))(x, get="ntk")
  assert jnp.max(jnp.abs(emp - plain)) / jnp.max(jnp.abs(ntk)) > 0.2
  # The base width leaves the NNGP alone, under every parametrization.
  for p in ("ntk", "mup", "mf"):
    np.testing.assert_allclose(A.kernel_fn(model, nn.Ctx(p, width=width, base_width=base))(
        x, get="nngp"), A.kernel_fn(model, nn.Ctx(p))(x, get="nngp"), rtol=1e-6)
  with pytest.raises(ValueError, match="base_width needs ctx.width"):
    A.kernel_fn(model, nn.Ctx("ntk", base_width=base))(x, get="ntk")


# ----------------------------------------------------------------------------
# Closed forms, quadrature, layouts, batching.


def _gaussian_kernel(n=5, d=4, key=0):
  x = jax.random.normal(jax.random.key(key), (n, d))
  k = A.inputs_to_kernel(x[:3], x[3:])
  return A.affine(1.3, 0.4, out_wide=False)(k, None)


@pytest.mark.parametrize("name,closed,fn,deg,tol", [
    ("erf", N.erf(1.5, 0.7, 0.2), lambda x: 1.5 * jax.scipy.special.erf(0.7 * x) + 0.2, 60, 1e-7),
    ("gelu", N.gelu(), lambda x: jax.nn.gelu(x, approximate=False), 60, 1e-7),
    ("sin", N.sin(1.2, 0.9, 0.3), lambda x: 1.2 * jnp.sin(0.9 * x + 0.3), 60, 1e-7),
    ("rbf", N.rbf(0.4), lambda x: jnp.sqrt(2.0) * jnp.sin(jnp.sqrt(0.8) * x + jnp.pi / 4), 60, 1e-7),
    ("monomial3", N.monomial(3), lambda x: x ** 3, 10, 1e-10),
    ("gaussian", N.gaussian(1.3, -0.7), lambda x: 1.3 * jnp.exp(-0.7 * x ** 2), 80, 1e-7),
    ("gaussian_growing", N.gaussian(0.8, 0.1), lambda x: 0.8 * jnp.exp(0.1 * x ** 2), 80, 1e-6),
    ("gabor", N.gabor(), lambda x: jnp.exp(-x ** 2) * jnp.sin(x), 160, 1e-7),
    ("polynomial", N.polynomial([0.5, -1.0, 0.3, 0.2]),
     lambda x: 0.5 - x + 0.3 * x ** 2 + 0.2 * x ** 3, 10, 1e-10),
    ("polynomial_even", N.polynomial([0.0, 0.0, 0.0, 0.0, 1.5]), lambda x: 1.5 * x ** 4, 10, 1e-10),
    ("dual_erf", N.dual(lambda c, q1, q2: (2 / jnp.pi) * jnp.arcsin(
        2 * c / jnp.sqrt((1 + 2 * q1) * (1 + 2 * q2)))), jax.scipy.special.erf, 120, 1e-7),
    # Kinks: the rule converges like 1/deg (the NTK integrates a step function).
    ("rectified_monomial2", N.rectified_monomial(2), lambda x: jnp.where(x > 0, x * x, 0.0),
     100, (1e-3, 1e-2)),
    ("relu", N.relu(), jax.nn.relu, 100, (1e-2, 0.1)),
    ("ab_relu", N.ab_relu(-0.4, 1.3), lambda x: jnp.where(x > 0, 1.3 * x, -0.4 * x), 100,
     (1e-2, 0.3)),
])
def test_quadrature_equals_closed_form(name, closed, fn, deg, tol, x64):
  """Gauss-Hermite (NT's ElementwiseNumerical) agrees with each closed form; kinks converge slowly."""
  k = _gaussian_kernel()
  a = closed(k, None)
  b = N.gauss_hermite(fn, deg)(k, None)
  tol_nngp, tol_ntk = (tol, tol) if isinstance(tol, float) else tol
  for f in ("nngp", "ntk", "cov1", "cov2"):
    x, y = getattr(a, f), getattr(b, f)
    t = tol_ntk if f == "ntk" else tol_nngp
    assert jnp.max(jnp.abs(x - y)) <= t * jnp.max(jnp.abs(x)), (name, f)


def test_diagonal_and_full_spatial_layouts_agree(x64):
  """The cheap same-position layout gives what the full one does when no pooling follows."""
  layer = nn.serial(nn.conv(4, (3, 2), padding="SAME", b_std=0.1), nn.gelu(),
                    nn.conv(4, (2, 2), strides=(2, 1), b_std=0.1), nn.erf(), nn.flatten(),
                    nn.dense(1, b_std=0.1))
  x = jax.random.normal(jax.random.key(0), (3, 5, 4, 2))
  y = jax.random.normal(jax.random.key(1), (2, 5, 4, 2))
  ctx = nn.Ctx("ntk")
  outs = [jax.jit(lambda a, b, d=d: layer.kernel(A.inputs_to_kernel(a, b, diagonal_spatial=d),
                                                 ctx))(x, y) for d in (True, False)]
  for f in ("nngp", "ntk", "cov1", "cov2"):
    np.testing.assert_allclose(getattr(outs[0], f), getattr(outs[1], f), rtol=1e-12, err_msg=f)
  with pytest.raises(A.NeedsFullSpatial):
    nn.serial(nn.conv(4, (3, 2)), nn.relu(), nn.global_avg_pool()).kernel(
        A.inputs_to_kernel(x, y, diagonal_spatial=True), ctx)


@pytest.mark.parametrize("with_x2", [False, True])
def test_batched_equals_unbatched(with_x2, x64):
  model = nn.cnn((5, 4, 2), width=8, depth=1, out_dim=1, filter_shape=(2, 2))
  fn = A.kernel_fn(model, nn.Ctx("ntk"))
  x1 = jax.random.normal(jax.random.key(0), (5, 5, 4, 2))
  x2 = jax.random.normal(jax.random.key(1), (3, 5, 4, 2)) if with_x2 else None
  get = ("nngp", "ntk", "cov1", "cov2")
  whole = fn(x1, x2, get)
  blocks = fn(x1, x2, get, batch_size=2)  # 5 and 3 rows: ragged last blocks
  for f in get:
    if f == "cov2" and not with_x2:
      assert whole.cov2 is None and blocks.cov2 is None
      continue
    np.testing.assert_allclose(getattr(blocks, f), getattr(whole, f), rtol=1e-12, err_msg=f)


def test_get_conventions_jit_and_vmap(x64):
  model = nn.mlp((3,), width=8, depth=1, out_dim=2)
  fn = A.kernel_fn(model, nn.Ctx("ntk"))
  x = jax.random.normal(jax.random.key(0), (4, 3))
  both = fn(x)
  assert both._fields == ("nngp", "ntk") and both.nngp.shape == (4, 4)
  assert fn(x, get="ntk").shape == (4, 4)
  np.testing.assert_allclose(jax.jit(lambda a: fn(a, get="nngp"))(x), both.nngp, rtol=1e-12)
  xs = jnp.stack([x, 2 * x])
  vm = jax.vmap(lambda a: fn(a, get="nngp"))(xs)
  np.testing.assert_allclose(vm[0], both.nngp, rtol=1e-12)
  np.testing.assert_allclose(vm[1], fn(2 * x, get="nngp"), rtol=1e-12)
  with pytest.raises(ValueError, match="get must name"):
    fn(x, get="nngpp")


def test_padded_width_gives_the_kernel_of_the_active_width(x64):
  """Under 'sp' the NTK depends on finite widths: Ctx(width=w) at capacity W equals width w."""
  x = jax.random.normal(jax.random.key(0), (4, 3))
  big = nn.mlp((3,), width=10, depth=2, out_dim=1)
  small = nn.mlp((3,), width=6, depth=2, out_dim=1)
  a = A.kernel_fn(big, nn.Ctx("sp", width=6))(x)
  b = A.kernel_fn(small, nn.Ctx("sp"))(x)
  c = A.kernel_fn(big, nn.Ctx("sp"))(x)
  np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-12)
  np.testing.assert_allclose(a.nngp, b.nngp, rtol=1e-12)
  assert not np.allclose(c.ntk, b.ntk)
  # The width may be traced (one program for all widths).
  w_ntk = jax.jit(lambda w: A.kernel_fn(big, nn.Ctx("sp", width=w))(x, get="ntk"))(6)
  np.testing.assert_allclose(w_ntk, b.ntk, rtol=1e-12)


def test_frozen_and_gamma(x64):
  x = jax.random.normal(jax.random.key(0), (4, 3))
  rf = nn.random_features((3,), num_features=16, out_dim=1)
  k = A.kernel_fn(rf, nn.Ctx("ntk"))(x)
  # Only the bias-free readout trains: its NTK is the NNGP of the features times W_std^2 = NNGP.
  np.testing.assert_allclose(k.ntk, k.nngp, rtol=1e-12)
  ksp = A.kernel_fn(rf, nn.Ctx("sp"))(x)
  np.testing.assert_allclose(ksp.ntk, 16 * ksp.nngp, rtol=1e-12)
  frozen_only = A.kernel_fn(nn.frozen(nn.dense(4, b_std=0.3)), nn.Ctx("ntk"))(x, get="ntk")
  assert np.all(frozen_only == 0)
  g = A.kernel_fn(rf, nn.Ctx("ntk", gamma=2.0))(x)
  np.testing.assert_allclose(g.nngp, k.nngp / 4, rtol=1e-12)
  np.testing.assert_allclose(g.ntk, k.ntk / 4, rtol=1e-12)


def test_init_scale_multiplies_W_std(x64):
  x = jax.random.normal(jax.random.key(0), (4, 3))
  a = A.kernel_fn(nn.mlp((3,), 8, 1, 1, W_std=1.0, b_std=None), nn.Ctx("ntk", init_scale=1.5))(x)
  b = A.kernel_fn(nn.mlp((3,), 8, 1, 1, W_std=1.5, b_std=None), nn.Ctx("ntk"))(x)
  np.testing.assert_allclose(a.nngp, b.nngp, rtol=1e-12)


# ----------------------------------------------------------------------------
# Errors.


def test_layers_without_a_limit_are_named():
  tr = nn.transformer(vocab_size=5, seq_len=3, width=8, depth=1, num_heads=2)
  assert nn.embedding(5, 4).kernel is None
  with pytest.raises(ValueError, match="'embedding' has no infinite-width"):
    A.kernel_fn(tr)(jnp.zeros((2, 3), jnp.int32))
  with pytest.raises(ValueError, match="'causal_self_attention' has no infinite-width"):
    A.kernel_fn(nn.causal_self_attention(2))
  with pytest.raises(ValueError, match="'fourier_features' has no infinite-width"):
    A.kernel_fn(nn.serial(nn.fourier_features(4), nn.dense(1)))(jnp.ones((2, 3)))


def test_ntk_under_mup_is_refused_but_nngp_is_given(x64):
  m = nn.mlp((3,), width=8, depth=2, out_dim=1, b_std=0.5)
  x = jax.random.normal(jax.random.key(0), (4, 3))
  for p in ("mup", "mf"):
    with pytest.raises(ValueError, match="no kernel limit: feature learning"):
      A.kernel_fn(m, nn.Ctx(p))(x)
    nngp = A.kernel_fn(m, nn.Ctx(p))(x, get="nngp")
    # The readout's weight variance is O(1/width): only its bias survives.
    np.testing.assert_allclose(nngp, 0.25 * np.ones((4, 4)), rtol=1e-12)
  with pytest.raises(ValueError, match="no kernel limit"):
    m.layer.kernel(A.inputs_to_kernel(x), nn.Ctx("mup"))


def test_bad_inputs_give_clear_errors(x64):
  x = jnp.ones((2, 3))
  with pytest.raises(ValueError, match="relu: its kernel needs a centred Gaussian input"):
    A.kernel_fn(nn.serial(nn.relu(), nn.dense(1)))(x)
  with pytest.raises(ValueError, match=r"model expects inputs of shape \(batch, 4\)"):
    A.kernel_fn(nn.mlp((4,), 8, 1, 1))(x)
  with pytest.raises(ValueError, match="every branch must end in a dense or conv"):
    A.kernel_fn(nn.serial(nn.dense(4), nn.relu(), nn.residual(nn.dense(4))))(x)
  with pytest.raises(ValueError, match="parameterization must be 'ntk' or 'standard'"):
    stax.Dense(1, parameterization="mup")
  with pytest.raises(ValueError, match="do not describe a 2D convolution"):
    stax.Conv(1, (3, 3), dimension_numbers=("NCHW", "OIHW", "NCDW"))
  with pytest.raises(ValueError, match="batch_axis_out must be 0 or 1"):
    stax.Flatten(batch_axis_out=2)
  with pytest.raises(ValueError, match="unknown parametrization"):
    nn.dense(3, parametrization="xyz")


def test_stax_facade_matches_nn_and_ntk_convention(x64):
  """stax triples: shapes with -1, per-layer parameterization, kernel_fn(get=None)."""
  init_fn, apply_fn, kernel_fn = stax.serial(
      stax.Dense(16, W_std=1.5, b_std=0.1, parameterization="standard"), stax.Relu(),
      stax.Dense(1, W_std=1.2, b_std=0.1))
  shape, params = init_fn(jax.random.key(0), (-1, 3))
  assert shape == (-1, 1)
  x = jax.random.normal(jax.random.key(1), (4, 3))
  assert apply_fn(params, x).shape == (4, 1)
  k = kernel_fn(x, None)  # get=None: NT's Kernel object, as in neural-tangents
  assert k.nngp.shape == k.ntk.shape == (4, 4)
  assert kernel_fn(x, None, ("nngp", "ntk"))._fields == ("nngp", "ntk")
  # By hand: standard first layer (NTK = d * K0 + 1 ...) then an 'ntk' readout.
  k0 = x @ x.T / 3
  n1 = 1.5 ** 2 * k0 + 0.01
  t1 = 3 * k0 + 1.0
  q = jnp.diag(n1)
  root = jnp.sqrt(jnp.maximum(q[:, None] * q[None] - n1 ** 2, 0))
  theta = jnp.arctan2(root, n1)
  relu = (root + (jnp.pi - theta) * n1) / (2 * jnp.pi)
  dot = (jnp.pi - theta) / (2 * jnp.pi)
  nngp = 1.44 * relu + 0.01
  # arccos near the diagonal amplifies rounding to ~sqrt(eps): 1e-8, not 1e-15.
  np.testing.assert_allclose(k.nngp, nngp, rtol=1e-8)
  np.testing.assert_allclose(k.ntk, nngp + 1.44 * t1 * dot, rtol=1e-8)


def test_hermite_kernel_on_unit_variance_inputs(x64):
  """``He_n / sqrt(n!)`` on unit-variance pre-activations: ``c^n``, against quadrature."""
  x = jax.random.normal(jax.random.key(0), (5, 4))
  x = x / jnp.sqrt(jnp.mean(x ** 2, -1, keepdims=True))
  k = A.affine(1.0, None, out_wide=False)(A.inputs_to_kernel(x[:3], x[3:]), None)
  np.testing.assert_allclose(k.cov1, 1.0, rtol=1e-12)
  for degree in (0, 1, 3):
    _, apply_fn, _ = stax.Hermite(degree)
    a = N.hermite(degree)(k, None)
    b = N.gauss_hermite(lambda u: apply_fn((), u), 20)(k, None)
    for f in ("nngp", "ntk", "cov1", "cov2"):
      np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-9, atol=1e-12)


def test_new_elementwise_layers_through_stax(x64):
  """Closed forms of the stax facade's Gaussian, Sigmoid_like, Polynomial and Elementwise.

  Each equals a Gauss-Hermite kernel of its own ``apply_fn``; ``Elementwise`` with
  and without ``d_nngp_fn`` equals ``Erf``; ``Sigmoid_like`` is NT's erf-sigmoid.
  """
  x1 = jax.random.normal(jax.random.key(1), (3, 4))
  x2 = jax.random.normal(jax.random.key(2), (2, 4))
  erf_nngp = lambda c, q1, q2: (2 / jnp.pi) * jnp.arcsin(2 * c / jnp.sqrt((1 + 2 * q1) * (1 + 2 * q2)))
  erf_dot = lambda c, q1, q2: (4 / jnp.pi) / jnp.sqrt((1 + 2 * q1) * (1 + 2 * q2) - 4 * c ** 2)
  ref = stax.serial(stax.Dense(1, 1.4, 0.2), stax.Erf(), stax.Dense(1))[2](x1, x2)
  for phi in (stax.Elementwise(jax.scipy.special.erf, erf_nngp),
              stax.Elementwise(jax.scipy.special.erf, erf_nngp, erf_dot)):
    out = stax.serial(stax.Dense(1, 1.4, 0.2), phi, stax.Dense(1))[2](x1, x2)
    np.testing.assert_allclose(out.nngp, ref.nngp, rtol=1e-10)
    np.testing.assert_allclose(out.ntk, ref.ntk, rtol=1e-10)
  for phi in (stax.Gaussian(1.2, -0.5), stax.Gabor(), stax.Sigmoid_like(),
              stax.Polynomial([0.1, 1.0, -0.4])):
    _, apply_fn, _ = phi
    num = stax.ElementwiseNumerical(lambda u: apply_fn((), u), deg=160)
    a = stax.serial(stax.Dense(1, 1.4, 0.2), phi, stax.Dense(1))[2](x1, x2)
    b = stax.serial(stax.Dense(1, 1.4, 0.2), num, stax.Dense(1))[2](x1, x2)
    np.testing.assert_allclose(a.nngp, b.nngp, rtol=1e-7)
    np.testing.assert_allclose(a.ntk, b.ntk, rtol=1e-7)
  y = jnp.linspace(-3, 3, 7)[:, None]
  _, apply_fn, _ = stax.Sigmoid_like()
  np.testing.assert_allclose(apply_fn((), y), jax.nn.sigmoid(y), atol=0.02)
  assert stax.Elementwise(None, erf_nngp)[0](jax.random.key(0), x1.shape) == (x1.shape, ())
  with pytest.raises(NotImplementedError, match="no finite-width function"):
    stax.Elementwise(None, erf_nngp)[1]((), x1)
  with pytest.raises(ValueError, match="no infinite-width"):
    stax.Elementwise(jnp.tanh)[2](x1)


@pytest.mark.parametrize("n", [0, 1, 3])
def test_repeat_equals_serial(n, x64):
  """NT's ``repeat``: same outputs as ``serial(*[layer] * n)`` from the same key, same kernels."""
  block = stax.serial(stax.Dense(3, b_std=0.1), stax.Relu(), stax.Dense(3), stax.Gelu())
  x1 = jnp.cos(jax.random.normal(jax.random.key(1), (2, 3)))
  x2 = jax.random.normal(jax.random.key(2), (4, 3))
  init_s, apply_s, kernel_s = stax.Identity() if n == 0 else stax.serial(*[block] * n)
  init_r, apply_r, kernel_r = stax.repeat(block, n)
  key = jax.random.key(3)
  shape_s, p_s = init_s(key, x1.shape)
  shape_r, p_r = init_r(key, x1.shape)
  assert shape_s == shape_r
  np.testing.assert_allclose(apply_r(p_r, x1), apply_s(p_s, x1), rtol=1e-12)
  get = ("nngp", "ntk", "cov1", "cov2")
  for a, b in zip(kernel_r(x1, x2, get), kernel_s(x1, x2, get)):
    np.testing.assert_allclose(a, b, rtol=1e-12)
  if n:
    assert jax.tree.leaves(p_r)[0].shape[0] == n
  with pytest.raises(ValueError, match="changes the shape|maps shape"):
    stax.repeat(stax.Dense(5), 2)[0](key, (2, 3))


@pytest.mark.parametrize("normalize_edges", [False, True])
def test_avg_pool_kernel_is_the_pooling_matrix_sandwich(normalize_edges, x64):
  """Pooling is a linear map ``P`` on positions, so ``K' = P K P^T``; ``P`` read off ``apply``."""
  window, strides, h, w = (3, 2), (2, 1), 5, 4
  k = A.affine(1.2, 0.3, out_wide=False, filter_shape=(2, 2), padding="SAME")(
      A.inputs_to_kernel(jax.random.normal(jax.random.key(0), (2, h, w, 3)),
                         jax.random.normal(jax.random.key(1), (3, h, w, 3))), None)
  _, apply_fn, _ = stax.AvgPool(window, strides, "SAME", normalize_edges=normalize_edges)
  basis = jnp.eye(h * w).reshape(h * w, h, w, 1)
  P = apply_fn((), basis)[..., 0].reshape(h * w, -1).T  # (out positions, in positions)
  if normalize_edges:  # edge windows average fewer inputs: rows still sum to one
    np.testing.assert_allclose(P.sum(1), 1.0, rtol=1e-12)
  else:
    assert float(P.sum(1).min()) < 1.0
  pooled = nn.avg_pool(window, strides, "SAME", normalize_edges).kernel(k, None)
  oh, ow = pooled.spatial_shape
  full = jnp.transpose(k.nngp, (0, 1, 2, 4, 3, 5)).reshape(2, 3, h * w, h * w)
  ref = jnp.einsum("pa,ijab,qb->ijpq", P, full, P).reshape(2, 3, oh, ow, oh, ow)
  np.testing.assert_allclose(pooled.nngp, jnp.transpose(ref, (0, 1, 2, 4, 3, 5)), rtol=1e-10)


def test_diagonal_spatial_true_is_the_diagonal_of_the_full_kernel(x64):
  """NT's ``kernel_fn(..., diagonal_spatial=True)``: same-position entries only, ``(n1, n2, h, w)``."""
  _, _, kf = stax.serial(stax.Conv(4, (2, 2), padding="SAME", b_std=0.1), stax.Relu(),
                         stax.Conv(4, (3, 2), padding="SAME"))
  x1 = jax.random.normal(jax.random.key(0), (2, 4, 3, 2))
  x2 = jax.random.normal(jax.random.key(1), (3, 4, 3, 2))
  full = kf(x1, x2, ("nngp", "ntk", "cov1"))
  diag = kf(x1, x2, ("nngp", "ntk", "cov1"), diagonal_spatial=True)
  assert full.nngp.shape == (2, 3, 4, 4, 3, 3) and diag.nngp.shape == (2, 3, 4, 3)
  take = lambda m: jnp.diagonal(jnp.diagonal(m, axis1=-4, axis2=-3), axis1=-3, axis2=-2)
  for f in ("nngp", "ntk", "cov1"):
    np.testing.assert_allclose(getattr(diag, f), take(getattr(full, f)), rtol=1e-12)
  blocked = kf(x1, x2, "nngp", diagonal_spatial=True, batch_size=2)
  np.testing.assert_allclose(blocked, diag.nngp, rtol=1e-12)
  _, _, pooled = stax.serial(stax.Conv(4, (2, 2)), stax.Relu(), stax.GlobalAvgPool())
  with pytest.raises(ValueError, match="diagonal_spatial=True: global_avg_pool needs"):
    pooled(x1, x2, "nngp", diagonal_spatial=True)
