"""Tests for kernels.predict, .dynamics and .taylor: closed forms against independent references.

References are computed with numpy/scipy (``solve``, ``expm``, explicit Euler,
affine maps of Gaussians) in float64, and against actually training a wide
network in NTK parametrization with plain gradient descent.
"""

import collections

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg

from jaxtheory import nn, train
from jaxtheory.kernels import dynamics, predict, taylor

TOL = 1e-9
Kernel = collections.namedtuple("Kernel", "nngp ntk")  # NT's kernel-object convention


def _psd_joint(n_train, n_test, seed=0, rank=None, shift=0.):
  """A random PSD kernel on train+test points, split into its blocks (numpy)."""
  rng = np.random.default_rng(seed)
  m = n_train + n_test
  phi = rng.normal(size=(m, rank or 2 * m))
  k = phi @ phi.T / phi.shape[1] + shift
  return k[:n_train, :n_train], k[n_train:, :n_train], k[n_train:, n_train:]


def _y(n, k=2, seed=1):
  return np.random.default_rng(seed).normal(size=(n, k))


# ----------------------------------------------------------------------------
# gp_inference


def test_gp_inference_matches_numpy(x64):
  nngp_dd, nngp_td, nngp_tt = _psd_joint(6, 4, seed=0)
  ntk_dd, ntk_td, ntk_tt = _psd_joint(6, 4, seed=3)
  y = _y(6)
  k_dd = Kernel(nngp=nngp_dd, ntk=ntk_dd)
  k_td = Kernel(nngp=nngp_td, ntk=ntk_td)
  k_tt = Kernel(nngp=nngp_tt, ntk=ntk_tt)
  predict_fn = predict.gp_inference(k_dd, y)
  out = predict_fn(None, k_td, k_tt)
  assert type(out).__name__ == "Gaussians" and out._fields == ("nngp", "ntk")

  # NNGP: mean K_td K^-1 y, covariance the Schur complement.
  np.testing.assert_allclose(out.nngp.mean, nngp_td @ np.linalg.solve(nngp_dd, y), rtol=TOL)
  np.testing.assert_allclose(out.nngp.covariance,
                             nngp_tt - nngp_td @ np.linalg.solve(nngp_dd, nngp_td.T),
                             rtol=1e-8, atol=TOL)
  # NTK ensemble at t = inf: f = f0_test + A (y - f0_train), A = Theta_td Theta^-1, f0 ~ N(0, K).
  a = ntk_td @ np.linalg.inv(ntk_dd)
  m = np.concatenate([-a, np.eye(4)], axis=1)  # f_test - A y = M f0
  k_joint = np.block([[nngp_dd, nngp_td.T], [nngp_td, nngp_tt]])
  np.testing.assert_allclose(out.ntk.mean, a @ y, rtol=1e-8)
  np.testing.assert_allclose(out.ntk.covariance, m @ k_joint @ m.T, rtol=1e-8, atol=TOL)
  # NTK-GP: the NNGP formulas with the NTK.
  ntkgp = predict_fn("ntkgp", k_td, k_tt)
  assert isinstance(ntkgp, predict.Gaussian)
  np.testing.assert_allclose(ntkgp.covariance,
                             ntk_tt - ntk_td @ np.linalg.solve(ntk_dd, ntk_td.T),
                             rtol=1e-8, atol=TOL)
  # Mean only, a single string get, and a tuple in a chosen order.
  np.testing.assert_allclose(predict_fn("ntk", k_td), a @ y, rtol=1e-8)
  both = predict_fn(("ntk", "nngp"), k_td)
  assert both._fields == ("ntk", "nngp")
  np.testing.assert_allclose(both.ntk, a @ y, rtol=1e-8)


def test_gp_inference_train_set_and_arrays(x64):
  k_dd, k_td, k_tt = _psd_joint(5, 3)
  y = _y(5)
  predict_fn = predict.gp_inference(k_dd, y)  # a plain array serves as nngp and ntk
  train_out = predict_fn("nngp", None, True)
  chex.assert_trees_all_close(train_out.mean, y)
  chex.assert_trees_all_close(train_out.covariance, np.zeros((5, 5)))
  chex.assert_trees_all_close(predict_fn("ntk", k_td), predict_fn("nngp", k_td))
  with pytest.raises(ValueError, match="needs both NNGP and NTK"):
    predict_fn("ntk", k_td, k_tt)


@pytest.mark.parametrize("absolute", [False, True])
def test_diag_reg_semantics(x64, absolute):
  k_dd, k_td, _ = _psd_joint(5, 3, rank=3)  # singular without regularization
  y = _y(5)
  reg = 0.1
  eps = reg if absolute else reg * np.trace(k_dd) / 5
  ref = k_td @ np.linalg.solve(k_dd + eps * np.eye(5), y)
  got = predict.gp_inference(k_dd, y, reg, absolute)("nngp", k_td)
  np.testing.assert_allclose(got, ref, rtol=1e-8)
  got_gd = predict.gradient_descent_mse(k_dd, y, diag_reg=reg,
                                        diag_reg_absolute_scale=absolute)(None, 0., 0., k_td)[1]
  np.testing.assert_allclose(got_gd, ref, rtol=1e-8)
  # Regularized train-set predictions: pass k_test_train = k_train_train.
  np.testing.assert_allclose(
      predict.gp_inference(k_dd, y, reg, absolute)("nngp", k_dd),
      k_dd @ np.linalg.solve(k_dd + eps * np.eye(5), y), rtol=1e-8)


# ----------------------------------------------------------------------------
# gradient_descent_mse


def test_gradient_descent_mse_limits_and_shapes(x64):
  k_dd, k_td, _ = _psd_joint(6, 4)
  y, f0, g0 = _y(6), _y(6, seed=2), _y(4, seed=3)
  predict_fn = predict.gradient_descent_mse(k_dd, y, learning_rate=0.5)
  ftr, fte = predict_fn(0., f0, g0, k_td)
  np.testing.assert_allclose(ftr, f0, atol=TOL)
  np.testing.assert_allclose(fte, g0, atol=TOL)
  ftr_inf, fte_inf = predict_fn(None, f0, g0, k_td)
  ref_te = g0 + k_td @ np.linalg.solve(k_dd, y - f0)  # kernel regression from f0
  np.testing.assert_allclose(ftr_inf, y, atol=TOL)
  np.testing.assert_allclose(fte_inf, ref_te, rtol=1e-8)
  ftr_big, fte_big = predict_fn(1e9, f0, g0, k_td)  # eigenbasis path at a huge time
  np.testing.assert_allclose(ftr_big, y, atol=1e-7)
  np.testing.assert_allclose(fte_big, ref_te, atol=1e-6)
  # Any array of times gives leading time axes.
  ts = jnp.array([[0., 1.], [2., 3.]])
  ftr_t, fte_t = predict_fn(ts, f0, g0, k_td)
  chex.assert_shape(ftr_t, (2, 2, 6, 2))
  chex.assert_shape(fte_t, (2, 2, 4, 2))
  np.testing.assert_allclose(fte_t[1, 0], predict_fn(2., f0, g0, k_td)[1], rtol=1e-12)
  # Only test (fx_train_0=None: train outputs start at 0, as in NT), only train.
  chex.assert_trees_all_close(predict_fn(2., None, g0, k_td), predict_fn(2., 0., g0, k_td)[1])
  chex.assert_trees_all_close(predict_fn(None, None, g0, k_td), predict_fn(None, 0., g0, k_td)[1])
  chex.assert_trees_all_close(predict_fn(2.), predict_fn(2., np.zeros((6, 2))))


def test_gradient_descent_mse_matches_euler(x64):
  """Closed form == explicit Euler on df/dt = -(lr/N) K (f - y), N = y.size (NT)."""
  k_dd, k_td, _ = _psd_joint(5, 3)
  y, f0, g0 = _y(5), _y(5, seed=2), _y(3, seed=3)
  lr, t, dt = 0.7, 6.0, 1e-4
  f, g = f0.copy(), g0.copy()
  for _ in range(int(round(t / dt))):
    r = f - y
    f = f - dt * lr / y.size * k_dd @ r
    g = g - dt * lr / y.size * k_td @ r
  ftr, fte = predict.gradient_descent_mse(k_dd, y, lr)(t, f0, g0, k_td)
  # Euler's global error is O(dt * lr * lambda_max / N) relative to the change.
  np.testing.assert_allclose(ftr, f, atol=1e-5)
  np.testing.assert_allclose(fte, g, atol=1e-5)
  assert np.abs(ftr - f0).max() > 1e-2  # the outputs did move


def test_trace_axes_block_diagonal_equivalence(x64):
  """A (n, n) kernel with trace_axes=(-1,) == its (n, n, k, k) block-diagonal form."""
  k_dd, k_td, k_tt = _psd_joint(4, 3)
  y, f0, g0 = _y(4, 3), _y(4, 3, seed=5), _y(3, 3, seed=6)
  eye = np.eye(3)
  full = lambda k: np.einsum("ij,ab->iajb", k, eye).transpose(0, 2, 1, 3)  # zipped
  p1 = predict.gradient_descent_mse(k_dd, y)
  p2 = predict.gradient_descent_mse(full(k_dd), y, trace_axes=())
  ts = jnp.array([0.5, 3.0])
  chex.assert_trees_all_close(p1(ts, f0, g0, k_td), p2(ts, f0, g0, full(k_td)), atol=TOL)
  chex.assert_trees_all_close(p1(None, f0, g0, k_td), p2(None, f0, g0, full(k_td)), atol=TOL)
  g1 = predict.gp_inference(k_dd, y)("nngp", k_td, k_tt)
  g2 = predict.gp_inference(full(k_dd), y, trace_axes=())("nngp", full(k_td), full(k_tt))
  chex.assert_trees_all_close(g2.mean, g1.mean, atol=TOL)
  chex.assert_trees_all_close(g2.covariance, full(g1.covariance), atol=TOL)
  # Trace axis in the middle: outputs (n, k, s) traced over k.
  y3 = np.random.default_rng(0).normal(size=(4, 3, 2))
  p3 = predict.gradient_descent_mse(full(k_dd)[..., :2, :2], y3, trace_axes=(1,))
  out = p3(1.5, 0., 0., full(k_td)[..., :2, :2])
  chex.assert_shape(out[1], (3, 3, 2))
  ref = predict.gradient_descent_mse(full(k_dd)[..., :2, :2], y3[:, 0], trace_axes=())
  # Normalization is y.size = 4*3*2 in the traced case and 4*2 in the reference: map times.
  chex.assert_trees_all_close(out[1][:, 0],
                              ref(1.5 * 8 / 24, 0., 0., full(k_td)[..., :2, :2])[1], atol=TOL)


def test_normalization_maps_train_mse_time(x64):
  """NT's 1/(2 n k) loss vs train.mse's 1/(2 n): t_NT = k * steps, or normalization=n."""
  k_dd, k_td, _ = _psd_joint(5, 3)
  n, k = 5, 4
  y, f0, g0 = _y(n, k), _y(n, k, seed=2), _y(3, k, seed=3)
  lr, steps = 0.02, 100
  grad_fn = jax.jit(jax.grad(lambda ff: train.mse(ff, jnp.asarray(y), jnp.ones(n))))
  f, g = f0.copy(), g0.copy()  # GD in function space with train.mse's gradient
  for _ in range(steps):
    grad = np.asarray(grad_fn(f))
    f, g = f - lr * k_dd @ grad, g - lr * k_td @ grad
  ours = predict.gradient_descent_mse(k_dd, y, lr, normalization=n)(steps, f0, g0, k_td)
  nt = predict.gradient_descent_mse(k_dd, y, lr)(steps * k, f0, g0, k_td)
  chex.assert_trees_all_close(ours, nt, atol=TOL)
  # Continuous vs discrete: O(lr lambda / n) apart; the unmapped NT time is far off.
  np.testing.assert_allclose(ours[0], f, atol=2e-3)
  wrong = predict.gradient_descent_mse(k_dd, y, lr)(steps, f0, g0, k_td)
  assert np.abs(wrong[0] - f).max() > 10 * np.abs(ours[0] - f).max()


def test_predict_is_jittable_and_cache_safe(x64):
  k_dd, k_td, _ = _psd_joint(5, 3)
  y = _y(5)
  predict_fn = predict.gradient_descent_mse(k_dd, y)
  jitted = jax.jit(lambda t, f0: predict_fn(t, f0, 0., k_td))
  a = jitted(1.0, jnp.zeros((5, 2)))  # first use (factorization) under jit
  b = predict_fn(1.0, jnp.zeros((5, 2)), 0., k_td)  # the cache holds no tracer
  chex.assert_trees_all_close(a, b, atol=TOL)
  built_inside = jax.jit(lambda k, t: predict.gradient_descent_mse(k, y)(t, 0., 0., k_td))
  chex.assert_trees_all_close(built_inside(k_dd, 1.0), b, atol=TOL)
  inf = jax.jit(lambda k: predict.gp_inference(k, y)("nngp", k_td))(k_dd)
  chex.assert_trees_all_close(inf, k_td @ np.linalg.solve(k_dd, y), atol=1e-8)


def test_bad_shapes_raise(x64):
  k_dd, k_td, _ = _psd_joint(5, 3)
  y = _y(5)
  with pytest.raises(ValueError, match=r"k_train_train must be square with shape \(5, 5\)"):
    predict.gradient_descent_mse(k_dd[:4], y)
  with pytest.raises(ValueError, match=r"k_train_train must have shape \(4, 4\)"):
    predict.gradient_descent_mse(k_dd, y[:4])
  with pytest.raises(ValueError, match="k_train_train must have shape"):
    predict.gp_inference(k_dd[:, :4], y)
  predict_fn = predict.gradient_descent_mse(k_dd, y)
  with pytest.raises(ValueError, match="k_test_train is None"):
    predict_fn(1., 0., 0.)
  with pytest.raises(ValueError, match=r"k_test_train must have shape"):
    predict_fn(1., 0., 0., k_td[:, :4])
  with pytest.raises(ValueError, match="nothing to predict"):
    predict_fn(1., None, None)
  with pytest.raises(ValueError, match="trace_axes"):
    predict.gradient_descent_mse(k_dd, y, trace_axes=(2,))
  with pytest.raises(ValueError, match="get must be among"):
    predict.gp_inference(k_dd, y)("ntkk", k_td)
  with pytest.raises(ValueError, match="square zipped kernel"):
    dynamics.max_learning_rate(k_td)


# ----------------------------------------------------------------------------
# Ensembles of infinite-width networks, with an analytic kernel.


def _linear_kernel_fn(b_std=0.3, depth=2):
  """NNGP/NTK of a deep linear network in NTK parametrization with biases.

  Layer l: K_l = x.x'/d + b^2 (l = 1), K_{l} = K_{l-1} + b^2 (identity
  activation, W_std = 1); NTK_l = NTK_{l-1} + K_l. Not proportional to the NNGP.
  """

  def kernel_fn(x1, x2, get):
    x2 = x1 if x2 is None else x2
    k = x1 @ x2.T / x1.shape[1] + b_std**2
    ntk = k
    for _ in range(depth):
      k = k + b_std**2
      ntk = ntk + k
    out = Kernel(nngp=k, ntk=ntk)
    return getattr(out, get) if isinstance(get, str) else out

  return kernel_fn


def _ensemble_reference(kernel_fn, x_train, x_test, y, g, tau_over_n):
  """Mean/cov of f_t = f0 + Th_{.d} Th^-1 (I - e^{-Th tau/N}) (y - f0_d), f0 ~ N(0, K)."""
  k_all = kernel_fn(np.concatenate([x_train, x_test]), None, "nngp")
  th_all = kernel_fn(np.concatenate([x_train, x_test]), None, g)
  n = len(x_train)
  th_dd, th_td = th_all[:n, :n], th_all[n:, :n]
  e = scipy.linalg.expm(-th_dd * tau_over_n)
  a_train = np.eye(n) - e
  a_test = th_td @ np.linalg.solve(th_dd, a_train)
  res = {}
  for name, a, rows in (("train", a_train, slice(0, n)), ("test", a_test, slice(n, None))):
    sel = np.eye(len(k_all))[rows]
    m = sel - np.concatenate([a, np.zeros((a.shape[0], len(x_test)))], axis=1)  # f0 part
    res[name] = (a @ y, m @ k_all @ m.T)
  return res


def test_ensemble_matches_gaussian_affine_map(x64):
  rng = np.random.default_rng(0)
  x_train, x_test = rng.normal(size=(6, 12)), rng.normal(size=(4, 12))  # full-rank kernels
  y = _y(6)
  kernel_fn = _linear_kernel_fn()
  lr, t = 0.5, 7.0
  predict_fn = predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y, lr)
  for g in ("nngp", "ntk"):
    ref = _ensemble_reference(kernel_fn, x_train, x_test, y, g, lr * t / y.size)
    test = predict_fn(t, x_test, g, compute_cov=True)
    np.testing.assert_allclose(test.mean, ref["test"][0], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(test.covariance, ref["test"][1], rtol=1e-7, atol=1e-9)
    tr = predict_fn(t, None, g, compute_cov=True)
    np.testing.assert_allclose(tr.mean, ref["train"][0], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(tr.covariance, ref["train"][1], rtol=1e-7, atol=1e-9)
  # Time arrays, namedtuple output, and t = None == gp_inference.
  both = predict_fn(jnp.array([[1., 2., 3.]]), x_test, None, compute_cov=True)
  chex.assert_shape(both.ntk.mean, (1, 3, 4, 2))
  chex.assert_shape(both.nngp.covariance, (1, 3, 4, 4))
  np.testing.assert_allclose(both.ntk.mean[0, 1], predict_fn(2., x_test, "ntk"), rtol=1e-10)
  inf = predict_fn(None, x_test, "ntk", compute_cov=True)
  big = predict_fn(1e8, x_test, "ntk", compute_cov=True)
  chex.assert_trees_all_close(inf, big, atol=1e-6)
  ks = kernel_fn(np.concatenate([x_train, x_test]), None, ("nngp", "ntk"))
  gp = predict.gp_inference(Kernel(ks.nngp[:6, :6], ks.ntk[:6, :6]), y)(
      "ntk", Kernel(ks.nngp[6:, :6], ks.ntk[6:, :6]), ks.nngp[6:, 6:])
  chex.assert_trees_all_close(inf, gp, atol=1e-9)


# ----------------------------------------------------------------------------
# gradient_descent (ODE) and max_learning_rate


def test_gradient_descent_ode_matches_closed_form(x64):
  k_dd, k_td, _ = _psd_joint(4, 2)
  y, f0, g0 = _y(4), _y(4, seed=2), _y(2, seed=3)
  nt_mse = lambda f, yy: 0.5 * jnp.mean((f - yy) ** 2)
  ts = jnp.array([0., 2., 5.])
  ode = dynamics.gradient_descent(nt_mse, k_dd, y, 0.8)(ts, f0, g0, k_td)
  closed = predict.gradient_descent_mse(k_dd, y, 0.8)(ts, f0, g0, k_td)
  chex.assert_trees_all_close(ode, closed, atol=1e-6)
  # Heavy-ball momentum converges to the same fixed point on the train set.
  mom = dynamics.gradient_descent(nt_mse, k_dd, y, 1.0, momentum=0.5)(jnp.array([400.]), f0)
  np.testing.assert_allclose(mom[0], y, atol=1e-4)


def test_max_learning_rate_is_the_stability_edge(x64):
  k_dd, _, _ = _psd_joint(6, 0)
  n, y = 6, _y(6)
  lr_max = float(dynamics.max_learning_rate(k_dd, y_train_size=n))
  np.testing.assert_allclose(lr_max, 2 * n / np.linalg.eigvalsh(k_dd)[-1], rtol=1e-10)

  def final_residual(lr):  # GD in function space on train.mse (normalization n)
    f = np.zeros_like(y)
    for _ in range(2000):
      f = f - lr / n * k_dd @ (f - y)
    return np.abs(f - y).max()

  assert final_residual(0.98 * lr_max) < 1.0
  assert final_residual(1.02 * lr_max) > 1e3


# ----------------------------------------------------------------------------
# Linearization


def test_taylor_expand_and_linearize(x64):
  params = {"a": jnp.array([0.3, -0.2]), "b": jnp.array(0.7)}
  f = lambda p, x: (p["a"] @ x) ** 3 * p["b"] + jnp.sin(p["b"])
  x = jnp.array([1.0, 2.0])
  p = {"a": jnp.array([0.5, 0.1]), "b": jnp.array(0.2)}
  f_lin = taylor.linearize(f, params)
  d = jax.tree.map(lambda u, v: u - v, p, params)
  jvp = jax.jvp(lambda q: f(q, x), (params,), (d,))[1]
  np.testing.assert_allclose(f_lin(p, x), f(params, x) + jvp, rtol=1e-12)
  np.testing.assert_allclose(taylor.taylor_expand(f, params, 1)(p, x), f_lin(p, x), rtol=1e-12)
  np.testing.assert_allclose(taylor.taylor_expand(f, params, 0)(p, x), f(params, x))
  # A degree-4 polynomial in (a, b) is reproduced exactly by its 4th-order expansion.
  poly = lambda p, x: (p["a"] @ x) ** 3 * p["b"]
  np.testing.assert_allclose(taylor.taylor_expand(poly, params, 4)(p, x), poly(p, x),
                             rtol=1e-12)
  assert abs(taylor.taylor_expand(poly, params, 3)(p, x) - poly(p, x)) > 1e-3
  # Degree 2 of sin around 0.3 at 0.5.
  s2 = taylor.taylor_expand(lambda q, _: jnp.sin(q), jnp.array(0.3), 2)(jnp.array(0.5), None)
  np.testing.assert_allclose(s2, np.sin(.3) + np.cos(.3) * .2 - np.sin(.3) * .02, rtol=1e-12)
  with pytest.raises(ValueError, match="degree"):
    taylor.taylor_expand(f, params, -1)


# ----------------------------------------------------------------------------
# Closed form vs a trained wide network


WIDTH, N_TRAIN, N_TEST, D_IN, D_OUT, STEPS, X_MAX = 4096, 5, 3, 3, 2, 300, 0.01


def _empirical_ntk(f, params, x):
  """Brute-force NTK: the full Jacobian, contracted over every parameter; zipped (M, M, k, k)."""
  jac = jax.jacobian(lambda p: f(p, x))(params)
  flat = jnp.concatenate([j.reshape(x.shape[0] * D_OUT, -1)
                          for j in jax.tree.leaves(jac)], axis=1)
  k = (flat @ flat.T).reshape(x.shape[0], D_OUT, x.shape[0], D_OUT)
  return k.transpose(0, 2, 1, 3)


def _train_gd(apply, params, x_train, x_test, y, lr, steps):
  """``steps`` of optax.sgd(lr) on train.mse in a fori_loop; outputs at the end."""
  opt = optax.sgd(lr)
  w = jnp.ones(x_train.shape[0])

  def body(_, carry):
    p, st = carry
    g = jax.grad(lambda q: train.mse(apply(q, x_train), y, w))(p)
    u, st = opt.update(g, st, p)
    return optax.apply_updates(p, u), st

  p, _ = jax.lax.fori_loop(0, steps, body, (params, opt.init(params)))
  return apply(p, x_train), apply(p, x_test)


def test_closed_form_tracks_wide_network_training(x64):
  """Lee et al. (2019): a wide NTK-parametrized net trained by GD follows the linear dynamics.

  The net is a one-hidden-layer ReLU MLP of width 4096 (cheap enough to train
  in float64 on CPU). Errors are measured on the *change* of the outputs
  ``f_t - f_0`` (the part the theory predicts). Two sources separate them:
  (i) time discretization, GD's ``(1 - x)^s`` vs the flow's ``e^{-x s}`` per
  eigenmode, ``x = lr lambda / n``, a relative error at most ``x_max / 2``
  (0.5% at ``x_max = 0.01``); (ii) the NTK moving during training, relative
  ``O(1/sqrt(width))`` (1.6% at width 4096 times an O(0.1) constant; measured
  ~0.15%). ``rel < 1e-2`` bounds their sum with margin, and a wrong loss
  normalization (a factor ``k = 2`` in time) fails it by far. The linearized
  net has no (ii): it matches the closed form of the *discrete* dynamics to
  round-off, and the continuous closed form within (i).
  """
  x = jax.random.normal(jax.random.key(1), (N_TRAIN + N_TEST, D_IN))
  y = jax.random.normal(jax.random.key(2), (N_TRAIN, D_OUT))
  x_train, x_test = x[:N_TRAIN], x[N_TRAIN:]
  model = nn.mlp((D_IN,), WIDTH, 1, D_OUT, b_std=0.5)
  ctx = nn.Ctx("ntk")
  params = model.init(jax.random.key(0), ctx)
  f = lambda p, xx: model.apply(p, xx, ctx)

  k = jax.jit(_empirical_ntk, static_argnums=0)(f, params, x)
  k_dd, k_td = k[:N_TRAIN, :N_TRAIN], k[N_TRAIN:, :N_TRAIN]
  lr = X_MAX / 2 * float(dynamics.max_learning_rate(k_dd, y_train_size=N_TRAIN))
  f0_train, f0_test = f(params, x_train), f(params, x_test)
  predict_fn = predict.gradient_descent_mse(k_dd, y, lr, trace_axes=(), normalization=N_TRAIN)
  pred = predict_fn(STEPS, f0_train, f0_test, k_td)

  def rel(got, want, start):
    return float(jnp.linalg.norm((got - start) - (want - start)) / jnp.linalg.norm(want - start))

  run = jax.jit(_train_gd, static_argnums=(0, 6))
  net = run(f, params, x_train, x_test, y, lr, STEPS)
  assert float(jnp.linalg.norm(pred[0] - f0_train) / jnp.linalg.norm(y - f0_train)) > 0.3
  err_net = [rel(net[i], pred[i], f0) for i, f0 in enumerate((f0_train, f0_test))]
  assert max(err_net) < 1e-2, err_net
  wrong = predict.gradient_descent_mse(k_dd, y, lr, trace_axes=())(STEPS, f0_train, f0_test, k_td)
  assert rel(net[0], wrong[0], f0_train) > 0.1  # NT's normalization, unmapped

  # The linearized network, trained by the same GD loop.
  f_lin = lambda p, xx, p0: taylor.linearize(f, p0)(p, xx)
  lin = run(lambda p, xx: f_lin(p, xx, params), params, x_train, x_test, y, lr, STEPS)
  err_lin = [rel(lin[i], pred[i], f0) for i, f0 in enumerate((f0_train, f0_test))]
  assert max(err_lin) < X_MAX / 2, err_lin
  # Discrete GD on a linear model is gradient flow with K' = -(n/lr) log(I - lr K/n) on the
  # train set and K_td' = K_td K^-1 K' (same eigenvectors): exact, so only round-off remains.
  k2 = np.asarray(k_dd.transpose(0, 2, 1, 3).reshape(N_TRAIN * D_OUT, -1))
  lam, v = np.linalg.eigh(k2)
  k2_disc = (v * (-N_TRAIN / lr * np.log1p(-lr * lam / N_TRAIN))) @ v.T
  ktd2 = np.asarray(k_td.transpose(0, 2, 1, 3).reshape(N_TEST * D_OUT, -1))
  ktd2_disc = ktd2 @ np.linalg.solve(k2, k2_disc)
  zip_ = lambda m, a, b: m.reshape(a, D_OUT, b, D_OUT).transpose(0, 2, 1, 3)
  exact = predict.gradient_descent_mse(zip_(k2_disc, N_TRAIN, N_TRAIN), y, lr, trace_axes=(),
                                       normalization=N_TRAIN)(
      STEPS, f0_train, f0_test, zip_(ktd2_disc, N_TEST, N_TRAIN))
  err_exact = [rel(lin[i], exact[i], f0) for i, f0 in enumerate((f0_train, f0_test))]
  assert max(err_exact) < 1e-8, err_exact
  assert max(err_exact) < 1e-4 * max(err_net)


def test_mse_float32_targets_take_the_float64_kernels_dtype(x64):
  """NT: float32 ``y_train`` with a float64 kernel predicts in float64 at any ``t`` (or None)."""
  k_dd, k_td, _ = _psd_joint(4, 3, seed=7)
  y = jnp.asarray(np.random.default_rng(0).normal(size=(4, 2)), jnp.float32)
  fn = predict.gradient_descent_mse(jnp.asarray(k_dd), y)
  f0, g0 = jnp.zeros((4, 2), jnp.float32), jnp.zeros((3, 2), jnp.float32)
  for t in (None, jnp.inf, 2.0):
    tr, te = fn(t, f0, g0, jnp.asarray(k_td))
    assert tr.dtype == te.dtype == jnp.float64, t
  np.testing.assert_allclose(fn(None, f0), fn(jnp.inf, f0), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("trace_axes", [(0, -1), (0, 1, 2)])
def test_mse_trace_axes_with_the_batch_axis(x64, trace_axes):
  """The batch axis traced like any other (NT): the kernel pairs y_train's remaining axes."""
  rng = np.random.default_rng(1)
  n, a, c = 2, 3, 4
  y, f0 = rng.normal(size=(n, a, c)), rng.normal(size=(n, a, c))
  kept = [ax for ax in range(3) if ax not in {t % 3 for t in trace_axes}]
  m = int(np.prod([y.shape[ax] for ax in kept]))
  phi = rng.normal(size=(m, 2 * m))
  k = phi @ phi.T / phi.shape[1]  # kernel over the kept axes (axis 1, or none: 1x1)
  t, lr = 3.0, 0.5
  fn = predict.gradient_descent_mse(jnp.asarray(k.reshape(())) if not kept else jnp.asarray(k),
                                    jnp.asarray(y), lr, trace_axes=trace_axes)
  out = fn(t, jnp.asarray(f0))
  # Reference: the flow on the kept axis, independently for every traced index.
  move = lambda v: np.moveaxis(v, kept, range(len(kept))).reshape(m, -1)
  e = scipy.linalg.expm(-k * lr * t / y.size)
  ref = move(y) + e @ (move(f0) - move(y))
  np.testing.assert_allclose(move(np.asarray(out)), ref, rtol=1e-10)
  assert out.shape == y.shape
  np.testing.assert_allclose(fn(None, jnp.asarray(f0)), y)
