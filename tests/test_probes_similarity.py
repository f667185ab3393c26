"""Representation similarity: CKA invariances, HSIC estimators, minibatch CKA, mutual kNN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import nn
from jaxtheory.probes import over_runs
from jaxtheory.probes import similarity as S


pytestmark = pytest.mark.usefixtures("x64")


def _pair(n=64, d=12, noise=0.7, seed=0):
  rng = np.random.default_rng(seed)
  X = rng.standard_normal((n, d))
  Y = np.tanh(X @ rng.standard_normal((d, d + 3))) + noise * rng.standard_normal((n, d + 3))
  return jnp.asarray(X), jnp.asarray(Y)


def _orthogonal(d, seed=1):
  return jnp.asarray(np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))[0])


@pytest.mark.parametrize("kernel,unbiased", [("linear", False), ("linear", True),
                                             ("rbf", False), ("rbf", True)])
def test_cka_identity_and_invariances(kernel, unbiased):
  X, Y = _pair()
  f = jax.jit(lambda a, b: S.cka(a, b, kernel, unbiased))
  np.testing.assert_allclose(f(X, X), 1.0, atol=1e-12)
  base = f(X, Y)
  assert 0.05 < base < 0.99
  Q = _orthogonal(X.shape[1])
  np.testing.assert_allclose(f(3.7 * X @ Q, Y), base, atol=1e-10)
  np.testing.assert_allclose(f(X, 0.2 * Y @ _orthogonal(Y.shape[1], 2)), base, atol=1e-10)
  np.testing.assert_allclose(f(Y, X), base, atol=1e-12)  # symmetric
  # Padded widths: extra zero features change nothing.
  np.testing.assert_allclose(f(jnp.pad(X, ((0, 0), (0, 5))), Y), base, atol=1e-12)


def test_linear_cka_feature_and_gram_forms_agree_with_reference():
  X, Y = _pair(n=20, d=30)  # more features than examples: the Gram path
  Xs, Ys = X[:, :8], Y[:, :8]  # fewer: the feature path
  for a, b in ((X, Y), (Xs, Ys)):
    n = a.shape[0]
    H = np.eye(n) - 1.0 / n
    K, L = np.asarray(a @ a.T), np.asarray(b @ b.T)
    hs = lambda K, L: np.trace(K @ H @ L @ H) / (n - 1) ** 2
    ref = hs(K, L) / np.sqrt(hs(K, K) * hs(L, L))
    np.testing.assert_allclose(S.cka(a, b), ref, rtol=1e-10)
    np.testing.assert_allclose(S.hsic(jnp.asarray(K), jnp.asarray(L)), hs(K, L), rtol=1e-10)


def test_unbiased_hsic_formula_and_u_centering_agree():
  X, Y = _pair(n=9)
  K, L = S.linear_kernel(X), S.rbf_kernel(Y)
  n = K.shape[0]
  u = jnp.sum(S.center(K, True) * S.center(L, True)) / (n * (n - 3))
  np.testing.assert_allclose(S.hsic(K, L, unbiased=True), u, rtol=1e-10)
  # Unbiasedness: the mean over many small samples matches a large-sample estimate.
  rng = np.random.default_rng(0)
  Z = rng.standard_normal((4000, 3))
  W = Z[:, :1] ** 2 + 0.5 * rng.standard_normal((4000, 1))
  big = S.hsic(S.linear_kernel(Z[:2000]), S.linear_kernel(W[:2000]), True)
  small = jax.vmap(lambda z, w: S.hsic(S.linear_kernel(z), S.linear_kernel(w), True))(
      Z.reshape(500, 8, 3), W.reshape(500, 8, 1))
  biased = jax.vmap(lambda z, w: S.hsic(S.linear_kernel(z), S.linear_kernel(w), False))(
      Z.reshape(500, 8, 3), W.reshape(500, 8, 1))
  se = np.std(small) / np.sqrt(500)
  assert abs(np.mean(small) - big) < 4 * se
  assert abs(np.mean(biased) - big) > 4 * se  # the biased estimator is not


def test_minibatch_cka_matches_full_data_and_never_nans():
  X, Y = _pair(n=4096, d=10, noise=1.0)
  full = S.cka(X, Y, unbiased=True)
  f = jax.jit(S.minibatch_cka, static_argnums=(2,))
  np.testing.assert_allclose(f(X, Y, 256), full, atol=0.02)
  small = f(X, Y, 4)
  assert np.isfinite(small)
  np.testing.assert_allclose(small, full, atol=0.05)
  # The biased CKA averaged over batches of 8 is far off; the minibatch estimator is not.
  naive = np.mean(jax.vmap(S.cka)(X.reshape(-1, 8, 10), Y.reshape(-1, 8, 13)))
  assert abs(naive - full) > 0.1
  # Streaming by hand equals the one-call form.
  st = S.cka_init()
  for i in range(0, 1024, 64):
    st = S.cka_update(st, X[i:i + 64], Y[i:i + 64])
  np.testing.assert_allclose(S.cka_value(st), f(X[:1024], Y[:1024], 64), rtol=1e-12)
  # Degenerate batches: constant representations give 0, not NaN.
  zero = jnp.zeros((16, 3))
  assert S.minibatch_cka(zero, Y[:16], 4) == 0.0
  assert S.cka(zero, Y[:16]) == 0.0 and S.cka(zero, Y[:16], unbiased=True) == 0.0
  assert np.isfinite(S.minibatch_cka(X[:8], Y[:8], 4, kernel="rbf"))


def test_rbf_cka_sanity():
  X, Y = _pair()
  # Bandwidth to infinity: RBF CKA tends to linear CKA (Kornblith et al. 2019).
  np.testing.assert_allclose(S.cka(X, Y, "rbf", sigma_frac=200.0), S.cka(X, Y), atol=1e-3)
  # A monotone nonlinear map hurts linear CKA more than RBF CKA with a small bandwidth.
  Z = jnp.sin(3.0 * X)
  assert S.cka(X, Z, "rbf", sigma_frac=0.4) > S.cka(X, Z)
  # Independent representations: the biased estimate is inflated at n = 64, the unbiased
  # one is near 0, well below that of dependent representations.
  R = jax.random.normal(jax.random.key(0), Y.shape, Y.dtype)
  ind, dep = S.cka(X, R, "rbf", unbiased=True), S.cka(X, Y, "rbf", unbiased=True)
  assert abs(ind) < 0.1 < 0.3 < dep
  assert S.cka(X, R, "rbf") > ind + 0.1


def test_cka_matrix_is_pairwise_cka():
  X, Y = _pair(n=40)
  reps_a = [X, Y, X ** 2]
  reps_b = [Y, jnp.tanh(X)]
  for kw in ({}, {"unbiased": True}, {"kernel": "rbf"}):
    M = S.cka_matrix(reps_a, reps_b, **kw)
    ref = np.array([[S.cka(a, b, **kw) for b in reps_b] for a in reps_a])
    np.testing.assert_allclose(M, ref, atol=1e-12)
  self = S.cka_matrix(reps_a)
  np.testing.assert_allclose(np.diag(self), 1.0, atol=1e-12)
  np.testing.assert_allclose(self, self.T, atol=1e-12)


def test_mutual_knn():
  X, Y = _pair(n=80)
  np.testing.assert_allclose(S.mutual_knn(X, X, 5), 1.0)
  Q = _orthogonal(X.shape[1])
  np.testing.assert_allclose(S.mutual_knn(X, 2.0 * X @ Q, 5), 1.0)
  rng = np.random.default_rng(3)
  R = jnp.asarray(rng.standard_normal((80, 12)))
  dep, ind = S.mutual_knn(X, Y, 5), S.mutual_knn(X, R, 5)
  assert dep > 0.2
  assert ind < 0.2  # chance level is k / (n - 1) ~ 0.06
  # Hand count on a tiny example: 1-D points, one nearest neighbour each (no normalisation).
  a = jnp.array([[0.0], [1.0], [3.0], [7.0]])
  b = jnp.array([[0.0], [5.0], [6.0], [7.0]])
  # Similarity is the inner product: neighbours of a: 0->3, 1->3, 2->3, 3->2;
  # of b: 0->3, 1->3, 2->3, 3->2. All agree.
  np.testing.assert_allclose(S.mutual_knn(a, b, 1, normalize=False), 1.0)
  with pytest.raises(ValueError, match="k must lie"):
    S.mutual_knn(X, Y, 80)


def test_over_runs_equals_loop():
  seeds, widths, cap = [0, 1, 2], [4, 7], 7
  model = nn.mlp((5,), cap, 2, 3, activation=nn.tanh)
  x = jax.random.normal(jax.random.key(9), (32, 5))

  def reps(params, width):
    ctx = nn.Ctx(width=width)
    h1 = model.layer.apply(params[:2], x, nn.Feat(), ctx)  # dense + tanh: hidden layer 1
    return [h1[0], model.apply(params, x, ctx)]

  def probe(params, width, ref_params):
    a, b = reps(params, width), reps(ref_params, cap)
    return {"cka": S.cka_matrix(a, b), "rbf": S.cka(a[0], b[0], "rbf"),
            "mb": S.minibatch_cka(a[0], b[0], 8), "knn": S.mutual_knn(a[0], b[0], 4)}

  rows = [[model.init(jax.random.key(s), nn.Ctx(width=w)) for w in widths] for s in seeds]
  stack = lambda *xs: jnp.stack(xs)
  P = jax.tree.map(stack, *[jax.tree.map(stack, *r) for r in rows])
  W = jnp.broadcast_to(jnp.asarray(widths), (len(seeds), len(widths)))
  ref_params = model.init(jax.random.key(42), nn.Ctx(width=cap))
  out = jax.jit(lambda P, W: over_runs(probe, P, W, ref_params, batch_dims=2,
                                       in_axes=(0, 0, None)))(P, W)
  assert out["cka"].shape == (3, 2, 2, 2)
  one = jax.jit(probe)
  for i in range(len(seeds)):
    for j in range(len(widths)):
      ref = one(jax.tree.map(lambda a: a[i, j], P), W[i, j], ref_params)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i, j], b, atol=1e-10), out, ref)
  # Padded == unpadded: the width-4 network built at width 4 has the same CKA.
  small = nn.mlp((5,), 4, 2, 3, activation=nn.tanh)
  p4 = small.init(jax.random.key(1))
  h = small.layer.apply(p4[:2], x, nn.Feat(), nn.Ctx())[0]
  np.testing.assert_allclose(out["rbf"][1, 0], S.cka(h, reps(ref_params, cap)[0], "rbf"),
                             atol=1e-10)


# ----------------------------------------------------------------------------
# Block structure (Nguyen, Raghu & Kornblith 2021).


def _dominated(n=128, d=16, big=8.0, seed=0):
  """Features with one strong shared direction over examples (a dominant PC) plus noise."""
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((n, 1))
  X = big * z @ rng.standard_normal((1, d)) + rng.standard_normal((n, d))
  Y = big * z @ rng.standard_normal((1, d + 4)) + rng.standard_normal((n, d + 4))
  return jnp.asarray(X), jnp.asarray(Y)


def test_top_pc_matches_an_eigendecomposition():
  X, _ = _dominated()
  Xc = np.asarray(X) - np.asarray(X).mean(0)
  w, V = np.linalg.eigh(Xc @ Xc.T)
  pc = S.top_pc(X)
  np.testing.assert_allclose(float(pc.fraction), w[-1] / w.sum(), rtol=1e-6)
  np.testing.assert_allclose(abs(float(pc.direction @ V[:, -1])), 1.0, rtol=1e-6)
  # isotropic noise has no dominant component; constant features give 0, not NaN
  iso = jax.random.normal(jax.random.key(0), (256, 8))
  assert float(S.top_pc(iso).fraction) < 0.25
  assert float(S.top_pc(jnp.ones((10, 3))).fraction) == 0.0


def test_removing_the_shared_dominant_pc_removes_the_similarity():
  X, Y = _dominated()
  assert float(S.cka(X, Y)) > 0.9
  Xr, Yr = S.remove_top_pc(X), S.remove_top_pc(Y)
  u = S.top_pc(X).direction
  np.testing.assert_allclose(np.asarray(u @ Xr), 0.0, atol=1e-8)
  assert float(S.cka(Xr, Yr)) < 0.2
  # representations without a dominant PC keep most of their similarity
  A, B = _pair()
  assert float(S.cka(S.remove_top_pc(A), S.remove_top_pc(B))) > 0.5 * float(S.cka(A, B))


def test_find_block():
  M = np.full((8, 8), 0.5)
  M[3:7, 3:7] = 0.97
  np.fill_diagonal(M, 1.0)
  assert S.find_block(M, 0.95) == S.Block(3, 7)
  assert S.find_block(M, 0.95).size == 4
  assert S.find_block(M, 0.4) == S.Block(0, 8)
  assert S.find_block(M, 0.99) == S.Block(0, 1)  # single layers, the earliest
  M[4, 5] = M[5, 4] = 0.9  # one weak pair splits the block
  assert S.find_block(M, 0.95).size == 2
  assert S.find_block(M, 0.95, skip=4) == S.Block(5, 7)
  # a smooth band (CKA decaying with layer distance) has only short runs above a high threshold
  band = 0.97 ** np.abs(np.subtract.outer(np.arange(12), np.arange(12)))
  assert S.find_block(band, 0.95).size == 2
  with pytest.raises(ValueError, match="square"):
    S.find_block(np.ones((2, 3)), 0.9)
  with pytest.raises(ValueError, match="skip"):
    S.find_block(np.ones((3, 3)), 0.9, skip=3)


def test_layer_cka_within_across_and_padded():
  m = nn.residual_mlp((5,), 12, 3, 2)
  x = jax.random.normal(jax.random.key(2), (40, 5))
  pa, pb = m.init(jax.random.key(0)), m.init(jax.random.key(1))
  M = S.layer_cka(m, pa, x)
  assert M.shape == (4, 4)
  np.testing.assert_allclose(np.diag(M), 1.0, rtol=1e-6)
  np.testing.assert_allclose(M, M.T, rtol=1e-6)
  np.testing.assert_allclose(S.layer_cka(m, pa, x, params_b=pa), M, rtol=1e-6)
  C = S.layer_cka(m, pa, x, params_b=pb)
  assert C.shape == (4, 4) and float(C[0, 0]) < 1.0
  reps = S.layer_features(m, pa, x)
  np.testing.assert_allclose(C, S.cka_matrix(reps, S.layer_features(m, pb, x)), rtol=1e-6)
  np.testing.assert_allclose(S.layer_cka(m, pa, x, remove_pc=True),
                             S.cka_matrix([S.remove_top_pc(r) for r in reps]), rtol=1e-6)
  # a width-8 run inside the width-12 capacity equals the width-8 network built alone
  ctx = nn.Ctx(width=8)
  p8 = m.init(jax.random.key(0), ctx)
  small = nn.residual_mlp((5,), 8, 3, 2)
  q = jax.tree.map(lambda a, b: a[tuple(slice(0, k) for k in b.shape)], p8,
                   small.init(jax.random.key(0)))
  np.testing.assert_allclose(S.layer_cka(m, p8, x, ctx), S.layer_cka(small, q, x), rtol=1e-6)


def test_block_metric_records_what_layer_cka_computes():
  import xarray as xr
  from jaxtheory import data, sweep
  ds = data.subset(data.digits(), n_train=40, n_test=24, seed=0)
  s = sweep.Sweep(model=lambda w: nn.residual_mlp(ds.input_shape, w, 2, 10), data=ds,
                  grid=dict(seed=[0], width=[8]), hparams=dict(lr=0.05), steps=3, record=2,
                  metrics={"block": S.block_metric(16)}, dtype="float64")
  res, (g,) = sweep.execute(s, progress=False)
  res = S.split_block_metric(res)
  assert isinstance(res, xr.Dataset) and "block" not in res
  assert res.cka.dims[-2:] == ("layer", "layer_b") and res.pc_share.dims[-1] == "layer"
  p, ctx = jax.tree.map(lambda a: a[0], (g.params, g.ctx))
  x = jnp.asarray(ds.x_test[:16])
  end = res.isel(seed=0, width=0, step=-1)
  np.testing.assert_allclose(end.cka, S.layer_cka(g.model, p, x, ctx), rtol=1e-6)
  np.testing.assert_allclose(end.cka_nopc, S.layer_cka(g.model, p, x, ctx, remove_pc=True),
                             rtol=1e-5)
  np.testing.assert_allclose(end.pc_share, [S.top_pc(r).fraction
                                            for r in S.layer_features(g.model, p, x, ctx)],
                             rtol=1e-6)


def _knn_loop(Z, k):
  """Neighbour sets by a direct loop: each example's k most cosine-similar others."""
  Z = np.asarray(Z, np.float64).reshape(len(Z), -1)
  Z = Z / np.linalg.norm(Z, axis=1, keepdims=True)
  out = []
  for i in range(len(Z)):
    sims = [(float(Z[i] @ Z[j]), j) for j in range(len(Z)) if j != i]
    out.append({j for _, j in sorted(sims, reverse=True)[:k]})
  return out


def test_mutual_knn_matrix_equals_a_direct_loop():
  rng = np.random.default_rng(5)
  n, k = 40, 6
  base = rng.standard_normal((n, 5))
  # Networks of different widths: related to a common base by different amounts.
  reps = [np.tanh(base @ rng.standard_normal((5, d))) + s * rng.standard_normal((n, d))
          for d, s in ((7, 0.1), (12, 0.5), (3, 0.0), (9, 2.0))]
  idx = jnp.stack([S.knn_indices(jnp.asarray(r), k) for r in reps])
  A = np.asarray(S.mutual_knn_matrix(idx))
  sets = [_knn_loop(r, k) for r in reps]
  for a in range(len(reps)):
    for b in range(len(reps)):
      direct = np.mean([len(sets[a][i] & sets[b][i]) / k for i in range(n)])
      np.testing.assert_allclose(A[a, b], direct, atol=1e-12)
      np.testing.assert_allclose(S.mutual_knn(reps[a], reps[b], k), direct, atol=1e-12)
  for a in range(len(reps)):  # nearest first, never itself
    assert all(set(np.asarray(idx[a, i]).tolist()) == sets[a][i] for i in range(n))
    assert not np.any(np.asarray(idx[a]) == np.arange(n)[:, None])
  np.testing.assert_allclose(np.diag(A), 1.0)
  np.testing.assert_allclose(A, A.T)
  assert len(np.unique(np.round(A[np.triu_indices(4, 1)], 6))) > 1  # not a constant
  np.testing.assert_allclose(S.mutual_knn_matrix(idx, chunk=1), A)
  np.testing.assert_allclose(S.mutual_knn_matrix(idx, chunk=3), A)
  with pytest.raises(ValueError, match=r"\(M, n, k\)"):
    S.mutual_knn_matrix(idx[0])


def test_mutual_knn_chance_level():
  """Independent random representations align at k / (n - 1) on average, not more."""
  n, k, M = 60, 5, 24
  X = jax.random.normal(jax.random.key(11), (M, n, 8))
  A = np.asarray(S.mutual_knn_matrix(jax.vmap(lambda x: S.knn_indices(x, k))(X)))
  off = A[np.triu_indices(M, 1)]
  chance = S.mutual_knn_chance(n, k)
  assert chance == pytest.approx(k / (n - 1))
  # The hypergeometric count has variance <= k * p, p = k / (n - 1); the mean of
  # the M(M-1)/2 pairs' means over n examples is within a few standard errors.
  se = np.sqrt(chance * (1 - chance) / k / n / len(off)) * np.sqrt(M)  # pairs share networks
  assert abs(off.mean() - chance) < 4 * se, (off.mean(), chance, se)
  with pytest.raises(ValueError, match="k must lie"):
    S.mutual_knn_chance(5, 5)
