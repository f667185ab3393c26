"""Curvature probes: exact on quadratics, dense references on small nets, sweeps == loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxtheory import data, nn, sweep, train
from jaxtheory.probes import over_runs
from jaxtheory.probes import curvature as C


pytestmark = pytest.mark.usefixtures("x64")


def _quadratic(eigs, seed=0):
  n = len(eigs)
  Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
  A = jnp.asarray((Q * np.asarray(eigs)) @ Q.T)
  return A, C.hessian(lambda x: 0.5 * x @ A @ x, jnp.zeros(n))


def _spectrum(n=120, seed=0):
  rng = np.random.default_rng(seed)
  return np.concatenate([[10.0, 8.0, 6.5, 5.0, 4.0], rng.uniform(-1.0, 1.0, n - 5)])


def test_top_eigenvalues_exact_on_quadratic():
  eigs = _spectrum()
  _, op = _quadratic(eigs)
  A = np.asarray(_quadratic(eigs)[0])

  @jax.jit
  def run(key):
    top = C.top_eigenvalues(op, key, k=5, num_iters=40, return_vectors=True)
    return top, C.power_iteration(op, jax.random.fold_in(key, 1), num_iters=150)

  (top, vecs), (lam, vec) = run(jax.random.key(0))
  np.testing.assert_allclose(top, np.sort(eigs)[::-1][:5], atol=1e-5)
  np.testing.assert_allclose(A @ np.asarray(vecs[0]), top[0] * np.asarray(vecs[0]), atol=1e-5)
  np.testing.assert_allclose(lam, 10.0, atol=1e-5)
  np.testing.assert_allclose(abs(np.vdot(vec, vecs[0])), 1.0, atol=1e-5)


def test_lanczos_restarts_when_krylov_space_is_exhausted():
  # Three distinct eigenvalues: the Krylov space of any start vector has dimension 3.
  eigs = np.array([3.0] * 4 + [2.0] * 3 + [-1.0] * 5)
  _, op = _quadratic(eigs)
  lz = jax.jit(lambda k: C.lanczos(op, k, num_iters=12))(jax.random.key(0))
  V = np.asarray(lz.basis)
  np.testing.assert_allclose(V @ V.T, np.eye(12), atol=1e-10)  # still orthonormal
  np.testing.assert_allclose(np.linalg.eigvalsh(lz.tridiagonal()), np.sort(eigs), atol=1e-10)
  assert np.sum(np.asarray(lz.beta) == 0) >= 2  # decoupled blocks


def test_lanczos_over_runs_restarts_each_run_as_if_alone():
  # Krylov spaces exhausted every 2 and 3 steps, and never: mapped over runs (restart vectors
  # drawn only at steps where some run broke down), mapped twice, and one run at a time agree.
  spectra = [[3.0] * 6 + [-1.0] * 6, [3.0] * 4 + [2.0] * 3 + [-1.0] * 5, np.arange(1.0, 13.0)]
  As = jnp.stack([_quadratic(e, seed=i)[0] for i, e in enumerate(spectra)])
  keys = jax.random.split(jax.random.key(1), 3)

  def one(A, key):
    lz = C.lanczos(C.hessian(lambda x: 0.5 * x @ A @ x, jnp.zeros(12)), key, num_iters=12)
    return lz.alpha, lz.beta, lz.basis

  alone = [jax.jit(one)(A, k) for A, k in zip(As, keys)]
  mapped = jax.jit(jax.vmap(one))(As, keys)
  twice = jax.jit(jax.vmap(jax.vmap(one)))(As[None], keys[None])
  shared = jax.jit(jax.vmap(one, in_axes=(0, None)))(As, keys[0])  # one key for every run
  for i, eigs in enumerate(spectra):
    for got in (mapped, jax.tree.map(lambda a: a[0], twice)):
      for a, b in zip(alone[i], got):
        np.testing.assert_allclose(b[i], a, atol=1e-12)
    alpha, beta, _ = (t[i] for t in shared)
    T = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
    np.testing.assert_allclose(np.linalg.eigvalsh(T), np.sort(eigs), atol=1e-10)
  # Restarts (beta = 0) every 2 steps, every 3 (until an eigenspace runs out), never.
  assert [int(np.sum(np.asarray(a[1]) == 0)) for a in alone] == [5, 4, 0]


def test_lanczos_is_differentiable_alone_and_mapped():
  def top(s):
    A = s * jnp.diag(jnp.arange(1.0, 5.0))
    lz = C.lanczos(C.hessian(lambda x: 0.5 * x @ A @ x, jnp.zeros(4)), jax.random.key(0), num_iters=4)
    return jnp.linalg.eigvalsh(lz.tridiagonal())[-1]  # = 4 s

  np.testing.assert_allclose(jax.grad(top)(2.0), 4.0, rtol=1e-10)
  np.testing.assert_allclose(jax.jacfwd(top)(2.0), 4.0, rtol=1e-10)
  np.testing.assert_allclose(jax.vmap(jax.grad(top))(jnp.array([1.0, 3.0])), [4.0, 4.0], rtol=1e-10)


def test_hutchinson_trace_within_three_standard_errors():
  eigs = _spectrum()
  _, op = _quadratic(eigs)
  est, se = jax.jit(lambda k: C.hutchinson_trace(op, k, num_samples=200))(jax.random.key(3))
  assert se > 0
  assert abs(est - eigs.sum()) < 3 * se


def test_slq_density_matches_eigenvalue_histogram():
  rng = np.random.default_rng(1)
  eigs = np.concatenate([rng.uniform(0.0, 1.0, 300), rng.uniform(2.0, 3.0, 100)])
  _, op = _quadratic(eigs, seed=1)
  d = jax.jit(lambda k: C.spectral_density(op, k, num_iters=60, num_probes=8,
                                           num_points=800))(jax.random.key(0))
  np.testing.assert_allclose(d.weights.sum(1), 1.0, atol=1e-10)
  assert abs(np.trapezoid(d.density, d.grid) - 1.0) < 1e-3
  t = np.linspace(-0.2, 3.2, 60)
  exact = np.mean(eigs[None, :] <= t[:, None], axis=1)
  np.testing.assert_allclose(C.density_cdf(d, t), exact, atol=0.06)
  # The broadened density puts the right mass in each band (3/4 and 1/4).
  g = np.asarray(d.grid)
  low = np.trapezoid(np.where(g < 1.5, d.density, 0.0), g)
  np.testing.assert_allclose(low, 0.75, atol=0.03)


def _small_net(seed=0, loss="mse", classes=2):
  model = nn.mlp((3,), 5, 1, classes, activation=nn.tanh, b_std=0.5)
  params = model.init(jax.random.key(seed))
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((12, 3)))
  y = (jnp.asarray(rng.integers(0, classes, 12)) if loss == "xent"
       else jnp.asarray(rng.standard_normal((12, classes))))
  w = jnp.ones(12)
  f = lambda p: model.apply(p, x)
  out_loss = lambda z: train.LOSSES[loss](z, y, w)
  return params, f, out_loss


def _dense(op):
  return np.asarray(jax.jit(lambda: jax.vmap(op.matvec)(jnp.eye(op.dim)))())


def test_hvp_and_top_eigenvalue_match_dense_hessian():
  params, f, out_loss = _small_net()
  loss = lambda p: out_loss(f(p))
  flat, unravel = ravel_pytree(params)
  v = jax.random.normal(jax.random.key(5), flat.shape, flat.dtype)

  @jax.jit
  def run(params, v):
    H = jax.hessian(lambda v: loss(unravel(v)))(ravel_pytree(params)[0])
    Hv = ravel_pytree(C.hvp(loss, params, unravel(v)))[0]
    op = C.hessian(loss, params)
    dense = jax.vmap(op.matvec)(jnp.eye(op.dim))
    key = jax.random.key(0)
    return (H, Hv, dense, C.top_eigenvalues(op, key, 3, op.dim),
            C.top_eigenvalues(op, key, 1, 20))

  H, Hv, dense, top3, top1 = map(np.asarray, run(params, v))
  np.testing.assert_allclose(Hv, H @ np.asarray(v), atol=1e-12)
  np.testing.assert_allclose(dense, H, atol=1e-12)
  ref = np.sort(np.linalg.eigvalsh(H))[::-1]
  np.testing.assert_allclose(top3, ref[:3], atol=1e-9)
  np.testing.assert_allclose(top1, ref[:1], rtol=1e-6)


def test_parameter_subset_is_the_principal_block():
  params, f, out_loss = _small_net()
  loss = lambda p: out_loss(f(p))
  flat, unravel = ravel_pytree(params)
  H = np.asarray(jax.jit(jax.hessian(lambda v: loss(unravel(v))))(flat))
  # Coordinates of the first layer's weight in the flat vector.
  marker = jax.tree.map(jnp.zeros_like, params)
  marker[0]["W"] = jnp.ones_like(marker[0]["W"])
  idx = np.flatnonzero(np.asarray(ravel_pytree(marker)[0]))
  block = H[np.ix_(idx, idx)]
  pred = lambda path, _: jax.tree_util.keystr(path) == "[0]['W']"
  tree = ({"W": True, "b": False}, False, {"W": False, "b": False})

  @jax.jit
  def run(params):
    ops = [C.hessian(loss, params, select=sel) for sel in (pred, tree)]
    dense = [jax.vmap(op.matvec)(jnp.eye(op.dim)) for op in ops]
    return dense, C.top_eigenvalues(ops[0], jax.random.key(0), 1, 15, return_vectors=True)

  dense, (top, vecs) = run(params)
  for d in dense:
    np.testing.assert_allclose(d, block, atol=1e-12)
  np.testing.assert_allclose(top, np.linalg.eigvalsh(block)[-1:], atol=1e-9)
  # Ritz vectors come back as full pytrees, zero outside the subset.
  assert vecs[2]["W"].shape == (1,) + params[2]["W"].shape
  assert not np.any(np.asarray(vecs[2]["W"]))
  with pytest.raises(ValueError, match="chose no parameters"):
    C.hessian(loss, params, select=lambda path, _: False)


@pytest.mark.parametrize("loss", ["mse", "xent"])
def test_gauss_newton_equals_dense_jt_h_j(loss):
  params, f, out_loss = _small_net(1, loss, classes=3)
  flat, unravel = ravel_pytree(params)
  v = jax.random.normal(jax.random.key(2), flat.shape, flat.dtype)

  @jax.jit
  def run(params, v):
    z = f(params)
    J = jax.jacobian(lambda v: f(unravel(v)))(ravel_pytree(params)[0]).reshape(z.size, -1)
    Hz = jax.hessian(out_loss)(z).reshape(z.size, z.size)
    op = C.gauss_newton(f, out_loss, params)
    gv = ravel_pytree(C.ggn_vp(f, out_loss, params, unravel(v)))[0]
    return (J.T @ Hz @ J, jax.vmap(op.matvec)(jnp.eye(op.dim)), gv,
            C.top_eigenvalues(op, jax.random.key(0), 1, 25))

  G, dense, gv, top = map(np.asarray, run(params, v))
  np.testing.assert_allclose(dense, G, atol=1e-12)
  np.testing.assert_allclose(gv, G @ np.asarray(v), atol=1e-12)
  ev = np.linalg.eigvalsh(G)
  assert ev.min() > -1e-10  # PSD
  np.testing.assert_allclose(top, ev[-1:], rtol=1e-8)


def _stacked(model_fn, seeds, widths, cap):
  model = model_fn(cap)
  rows = [[model.init(jax.random.key(s), nn.Ctx(width=w)) for w in widths] for s in seeds]
  stack = lambda *xs: jnp.stack(xs)
  return model, jax.tree.map(stack, *[jax.tree.map(stack, *r) for r in rows])


def test_over_runs_equals_loop_and_padded_equals_unpadded():
  seeds, widths, cap = [0, 1], [3, 5, 7], 7
  model_fn = lambda w: nn.mlp((3,), w, 2, 2, activation=nn.tanh, b_std=0.3)
  model, P = _stacked(model_fn, seeds, widths, cap)
  rng = np.random.default_rng(0)
  x, y = jnp.asarray(rng.standard_normal((10, 3))), jnp.asarray(rng.standard_normal((10, 2)))
  W = jnp.broadcast_to(jnp.asarray(widths), (len(seeds), len(widths)))

  def probe(params, width, key):
    loss = lambda p: train.mse(model.apply(p, x, nn.Ctx(width=width)), y, jnp.ones(10))
    op = C.hessian(loss, params)
    d = C.spectral_density(op, key, num_iters=10, num_probes=2, num_points=16)
    return {"top": C.top_eigenvalues(op, key, 2, 15), "trace": C.hutchinson_trace(op, key, 8),
            "density": d.density}

  key = jax.random.key(7)
  batched = jax.jit(lambda P, W: over_runs(probe, P, W, key, batch_dims=2,
                                           in_axes=(0, 0, None)))(P, W)
  one = jax.jit(probe)
  for i in range(len(seeds)):
    for j in range(len(widths)):
      ref = one(jax.tree.map(lambda a: a[i, j], P), W[i, j], key)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i, j], b, rtol=1e-9, atol=1e-12),
                   batched, ref)

  # Padded == unpadded: Lanczos on the padded net from the embedded start vector gives the
  # same tridiagonal matrix as on the network built at the active width.
  i, j = 1, 0
  w = widths[j]
  small = model_fn(w)
  p_small = small.init(jax.random.key(seeds[i]))
  p_pad = jax.tree.map(lambda a: a[i, j], P)
  embed = lambda s, c: jnp.zeros_like(c).at[tuple(slice(0, n) for n in s.shape)].set(s)
  np.testing.assert_allclose(ravel_pytree(jax.tree.map(embed, p_small, p_pad))[0],
                             ravel_pytree(p_pad)[0], atol=0)
  loss_s = lambda p: train.mse(small.apply(p, x), y, jnp.ones(10))
  loss_p = lambda p: train.mse(model.apply(p, x, nn.Ctx(width=w)), y, jnp.ones(10))
  v_small = jax.tree.map(lambda a: jax.random.normal(jax.random.key(a.size), a.shape), p_small)
  v_pad = ravel_pytree(jax.tree.map(embed, v_small, p_pad))[0]
  mask = jax.tree.map(lambda a: a != 0, jax.tree.map(embed, jax.tree.map(jnp.ones_like, p_small),
                                                     p_pad))
  found = jax.jit(lambda p: C.active_mask(lambda q: model.apply(q, x, nn.Ctx(width=w)), p, key))(
      p_pad)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), found, mask)
  a = jax.jit(lambda p, v: C.lanczos(C.hessian(loss_s, p), key, 10, v0=v))(
      p_small, ravel_pytree(v_small)[0])
  b = jax.jit(lambda p, m, v: C.lanczos(C.hessian(loss_p, p, mask=m), key, 10, v0=v))(
      p_pad, mask, v_pad)
  np.testing.assert_allclose(a.alpha, b.alpha, atol=1e-10)
  np.testing.assert_allclose(a.beta, b.beta, atol=1e-10)


def test_sharpness_metric_in_a_sweep_equals_after_the_fact():
  ds = data.gaussian_mixture(n_train=24, n_test=8, num_classes=3, input_dim=4, seed=2)
  model_fn = lambda w: nn.mlp((4,), w, 1, 3, activation=nn.tanh)
  metric = C.sharpness_metric("xent", num_iters=20)
  s = sweep.Sweep(model_fn, ds, dict(seed=[0, 1], width=[4, 6]), steps=12, record="every:6",
                  hparams=dict(lr=0.5), metrics={"sharpness": metric}, dtype="float64")
  res = sweep.run(s)
  assert eval(res.attrs["buckets"]) == [[4, 6]]  # padded: one program for both widths
  # The same runs replayed step by step; the sharpness recomputed after the fact, both by
  # the metric and by an independent dense Hessian.
  d = train.data_arrays(ds)
  tr = train.Trainer(model_fn(6), "xent", train.get_optimizer("sgd"), num_classes=3)
  step = jax.jit(lambda st, hp: train.train_step(tr, st, hp, d))

  @jax.jit
  def after(st, hp):
    apply = lambda p, x: tr.apply(p, x, hp)
    flat, unravel = ravel_pytree(st.params)
    H = jax.hessian(lambda v: train.cross_entropy(apply(unravel(v), d["x_train"]), st.labels,
                                                   st.weights))(flat)
    dd = dict(d, y_train=st.labels, w_train=st.weights)
    return jnp.linalg.eigvalsh(H)[-1], metric(st.params, apply, dd)

  for w in (4, 6):
    for seed in (0, 1):
      hp = {"seed": jnp.asarray(seed, jnp.int32), "width": jnp.asarray(w, jnp.int32),
            "lr": jnp.asarray(0.5)}
      st = jax.jit(lambda hp: train.setup(tr, hp, d))(hp)
      for t in range(13):
        if t % 6 == 0:
          rec = float(res.sharpness.sel(seed=seed, width=w, step=t))
          dense, again = after(st, hp)
          np.testing.assert_allclose(rec, dense, rtol=1e-6)
          np.testing.assert_allclose(rec, again, rtol=1e-9)
        st = step(st, hp)


def test_bad_inputs():
  _, op = _quadratic(np.arange(6.0))
  with pytest.raises(ValueError, match="exceeds the number of Lanczos steps"):
    C.top_eigenvalues(op, jax.random.key(0), k=5, num_iters=3)
  with pytest.raises(ValueError, match="num_samples"):
    C.hutchinson_trace(op, jax.random.key(0), num_samples=1)
  with pytest.raises(ValueError, match="unknown loss"):
    C.sharpness_metric("hinge")
  with pytest.raises(ValueError, match="Python booleans"):
    C.hessian(lambda x: jnp.sum(x ** 2), jnp.zeros(3), select=jnp.ones(3, bool))
