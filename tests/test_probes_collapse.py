"""Tests for jaxtheory.probes.collapse and jaxtheory.probes.separation.

Theory: on a simplex-ETF configuration (features = ETF class means + tiny
noise, readout = the means) every neural-collapse metric vanishes and NC4 is
one; on random features they are large. Reference: NC1 against an explicit
float64 ``Tr(Sigma_W pinv(Sigma_B)) / C``. Invariances: jit == eager,
``over_runs`` == loop, padded features == unpadded, masked examples ==
dropped examples, a padded NTK network's recorded metric == the unpadded one.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import nn
from jaxtheory.probes import over_runs
from jaxtheory.probes import collapse as nc
from jaxtheory.probes import separation as sep

C, D, PER = 5, 12, 16
N = C * PER
# One compile per shape instead of one per operation (eager mode is checked once below).
metrics = jax.jit(nc.collapse_metrics, static_argnums=2)


def _etf(C, d, seed):
  """Centred simplex-ETF means ``(C, d)`` with unit norms, in a random subspace."""
  U, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, C)))
  E = np.sqrt(C / (C - 1)) * (np.eye(C) - 1 / C)
  return (E @ U.T).astype(np.float32)


def _collapsed(seed, noise=1e-4, offset=3.0):
  M = _etf(C, D, seed)
  y = np.repeat(np.arange(C), PER)
  noise = noise * np.random.default_rng(seed + 1).normal(size=(N, D))
  H = offset + M[y] + noise  # a shared offset, like ReLU features
  return jnp.asarray(H, jnp.float32), jnp.asarray(y), jnp.asarray(M)


def _random(seed):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(N, D)), jnp.float32), jnp.repeat(jnp.arange(C), PER),
          jnp.asarray(rng.normal(size=(D, C)), jnp.float32))


def test_etf_configuration_is_collapsed():
  H, y, M = _collapsed(0)
  out = metrics(H, y, C, W=M.T, b=-(M.T.T @ jnp.full((D,), 3.0)))
  assert set(out) == set(nc.NAMES)
  for name in ("nc1", "cdnv", "nc3"):
    assert out[name] < 1e-6, (name, out[name])
  for name in ("nc2_equinorm", "nc2_equiangle", "nc2_cos_shift", "nc2_etf",
               "nc2_w_equinorm", "nc2_w_etf"):
    assert out[name] < 1e-3, (name, out[name])
  assert out["nc4"] == 1.0
  # The logits of an ETF readout agree with the NCC rule, and so does any
  # classifier whose argmax is the label on separable data.
  assert nc.ncc_agreement(H, y, jax.nn.one_hot(y, C), C) == 1.0


def test_random_features_are_not_collapsed():
  H, y, W = _random(1)
  out = metrics(H, y, C, W=W)
  assert out["nc1"] > 1.0
  assert out["cdnv"] > 1.0
  assert out["nc2_equinorm"] > 0.05
  assert out["nc2_equiangle"] > 0.05
  assert out["nc2_etf"] > 0.2
  assert out["nc3"] > 0.5
  assert out["nc4"] < 0.6


def test_nc1_matches_explicit_pinv_formula():
  rng = np.random.default_rng(0)
  M = rng.normal(size=(C, D))
  y = rng.integers(0, C, N)
  H = M[y] + rng.normal(size=(N, D))
  mu = np.stack([H[y == c].mean(0) for c in range(C)])
  g = H.mean(0)
  R = H - mu[y]
  Sw = R.T @ R / N
  Sb = (mu - g).T @ (mu - g) / C
  want = np.trace(Sw @ np.linalg.pinv(Sb)) / C
  with jax.enable_x64(True):
    got = nc.nc1(jnp.asarray(H), jnp.asarray(y), C)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_allclose(sep.fuzziness(jnp.asarray(H), jnp.asarray(y), C), C * want,
                               rtol=1e-10)
    var = np.array([np.mean(np.sum(R[y == c] ** 2, 1)) for c in range(C)])
    pairs = [(var[i] + var[j]) / (2 * np.sum((mu[i] - mu[j]) ** 2))
             for i in range(C) for j in range(C) if i != j]
    np.testing.assert_allclose(nc.cdnv(jnp.asarray(H), jnp.asarray(y), C), np.mean(pairs),
                               rtol=1e-10)


def test_invariances_padding_scale_and_masking():
  H, y, W = _random(2)
  H = H + jnp.eye(C)[y] @ jnp.asarray(np.random.default_rng(3).normal(size=(C, D)), jnp.float32)
  ref = metrics(H, y, C, W=W)
  # Zero-padded features (a padded width) and a padded readout.
  Hp = jnp.concatenate([H, jnp.zeros((N, 7))], 1)
  Wp = jnp.concatenate([W, jnp.zeros((7, C))], 0)
  chex.assert_trees_all_close(metrics(Hp, y, C, W=Wp), ref, rtol=1e-5, atol=1e-6)
  # A positive rescaling (a parametrization multiplier) changes nothing.
  chex.assert_trees_all_close(metrics(3.0 * H, y, C, W=0.5 * W), ref,
                              rtol=1e-5, atol=1e-6)
  # Masked examples == dropped examples (including a class left with none).
  keep = (jnp.arange(N) % 3 != 0) & (y != 4)
  idx = np.flatnonzero(np.asarray(keep))
  masked = metrics(H, y, C, W=W, weights=keep)
  dropped = metrics(H[idx], y[idx], C, W=W)
  chex.assert_trees_all_close(masked, dropped, rtol=1e-5, atol=1e-6)
  chex.assert_tree_all_finite(masked)


def test_jit_and_over_runs_match_loop():
  runs = [_random(s) for s in range(4, 8)]
  stack = jax.tree.map(lambda *a: jnp.stack(a).reshape(2, 2, *a[0].shape), *runs)
  fn = lambda H, y, W: nc.collapse_metrics(H, y, C, W=W)
  batched = jax.jit(lambda *a: over_runs(fn, *a, batch_dims=2))(*stack)
  first = jax.tree.map(lambda a: a[0, 0], stack)
  chex.assert_trees_all_close(fn(*first), metrics(first[0], first[1], C, W=first[2]), rtol=1e-5)
  for i in range(2):
    for j in range(2):
      H, y, W = jax.tree.map(lambda a: a[i, j], stack)
      chex.assert_trees_all_close(jax.tree.map(lambda a: a[i, j], batched),
                                  metrics(H, y, C, W=W), rtol=1e-5)


def test_bad_input():
  H, y, W = _random(5)
  with pytest.raises(ValueError, match="num_classes must be a static integer"):
    nc.nc1(H, y, 1)
  with pytest.raises(ValueError, match="labels must have shape"):
    nc.nc1(H, y[:-1], C)
  with pytest.raises(ValueError, match=r"W must have shape \(d, 5\)"):
    nc.collapse_metrics(H, y, C, W=W.T)
  with pytest.raises(ValueError, match="unknown collapse metric 'nc9'"):
    nc.collapse_metric(C, which="nc9")


def _mlp_data(seed, n=40, d=6):
  x = jnp.asarray(np.random.default_rng(seed).normal(size=(n, d)), jnp.float32)
  return {"x_train": x, "y_train": jnp.arange(n) % 3, "w_train": jnp.ones(n),
          "x_test": x[:10], "y_test": jnp.arange(10) % 3}


def _host_params(model, seed, width=None):
  """Random params of an mlp drawn on the host (no init compile), zero beyond ``width``."""
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32) / 3,
                        jax.eval_shape(model.init, jax.random.key(0)))
  if width is not None:  # hidden units beyond the active width are zero (padded weights stay zero)
    last = len(params) - 1
    for i, p in enumerate(params):
      if isinstance(p, dict):
        if i > 0:
          p["W"][width:] = 0
        if i < last:
          p["W"][:, width:] = 0
          p["b"][width:] = 0
  return jax.tree.map(jnp.asarray, params)


def test_penultimate_and_recorded_metric():
  m = nn.mlp((6,), width=10, depth=2, out_dim=3)
  p = _host_params(m, 0)
  data = _mlp_data(1)
  H, ro = jax.jit(nc.penultimate(m))(p, data["x_train"])
  assert H.shape == (40, 10) and ro["W"].shape == (10, 3)
  apply = lambda q, x: m.apply(q, x)
  chex.assert_trees_all_close(H @ ro["W"] + ro["b"][None], jax.jit(apply)(p, data["x_train"]),
                              atol=1e-5)
  chex.assert_trees_all_close(jax.jit(nc.features_from_apply, static_argnums=0)(
      apply, p, data["x_train"]), H, atol=1e-6)
  names = ("nc1", "nc3", "nc4", "cdnv")
  metric = jax.jit(lambda q, d: nc.collapse_metric(3, which=names)(q, apply, d))
  want = metrics(H, data["y_train"], 3, W=ro["W"], b=ro["b"])
  chex.assert_trees_all_close(metric(p, data), jnp.stack([want[k] for k in names]), rtol=1e-4)
  explicit = nc.collapse_metric(3, feature_fn=lambda q, x: nc.penultimate(m)(q, x)[0])
  chex.assert_trees_all_close(jax.jit(lambda q, d: explicit(q, apply, d))(p, data), want["nc1"],
                              rtol=1e-5)


def test_recorded_metric_padded_ntk_equals_unpadded():
  small, big = nn.mlp((6,), 6, 2, 3), nn.mlp((6,), 10, 2, 3)
  ctx_s, ctx_b = nn.Ctx("ntk", gamma=0.5), nn.Ctx("ntk", width=6, gamma=0.5)
  pb = _host_params(big, 0, width=6)
  ps = (pb[0] | {"W": pb[0]["W"][:, :6], "b": pb[0]["b"][:6]}, (),
        {"W": pb[2]["W"][:6, :6], "b": pb[2]["b"][:6]}, (), {"W": pb[4]["W"][:6], "b": pb[4]["b"]})
  data = _mlp_data(2)
  metric = nc.collapse_metric(3, which=nc.NAMES)
  got, want = jax.jit(lambda pb, ps, d: (
      metric(pb, lambda q, x: big.apply(q, x, ctx_b), d),
      metric(ps, lambda q, x: small.apply(q, x, ctx_s), d)))(pb, ps, data)
  chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------
# Separation.


def test_fuzziness_decays_geometrically_on_separating_features():
  M = 3.0 * _etf(C, D, 6)
  y = np.repeat(np.arange(C), PER)
  Z = np.random.default_rng(7).normal(size=(N, D)).astype(np.float32)
  Z = Z - (np.eye(C)[y].T @ Z / PER)[y]  # zero class means: the means stay M
  rho = 0.6
  feats = [M[y] + rho**l * Z for l in range(6)]  # within-class spread shrinks by rho per layer
  D_l = sep.fuzziness_curve(feats, y, C)
  assert jnp.all(jnp.diff(D_l) < 0)
  fit = sep.fit_log_linear(D_l)
  np.testing.assert_allclose(fit.ratio, rho**2, rtol=1e-3)  # D is quadratic in the spread
  assert fit.r2 > 0.9999
  F = jnp.stack([sep.fisher_ratio(h, y, C) for h in feats])
  assert jnp.all(jnp.diff(F) > 0)
  np.testing.assert_allclose(sep.log_fuzziness(feats[2], y, C), jnp.log(D_l[2]), rtol=1e-5)


def test_fit_log_linear_r2_drops_off_the_law():
  fit = sep.fit_log_linear(jnp.array([1.0, 0.1, 1.0, 0.1, 1.0]))
  assert fit.r2 < 0.2
  with pytest.raises(ValueError, match="at least 2 layers"):
    sep.fit_log_linear(jnp.array([1.0]))


def test_layer_features_of_mlp_and_cnn():
  m = nn.mlp((6,), width=10, depth=3, out_dim=3)
  p = _host_params(m, 0)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(7, 6)), jnp.float32)
  hidden, every = jax.jit(lambda q: (sep.layer_features(m, q, x), sep.layer_features(
      m, q, x, where="all", include_input=True)))(p)
  assert [h.shape for h in hidden] == [(7, 10)] * 3
  assert all(jnp.all(h >= 0) for h in hidden)  # post-ReLU
  assert [h.shape for h in every] == [(7, 6)] + [(7, 10)] * 6 + [(7, 3)]
  chex.assert_trees_all_close(every[-1], jax.jit(m.apply)(p, x), atol=1e-6)
  chex.assert_trees_all_close(hidden[1], every[4])
  c = nn.cnn((5, 5, 2), width=4, depth=2, out_dim=3, pool="flatten")
  hs = jax.eval_shape(lambda k: sep.layer_features(c, c.init(k), jnp.ones((3, 5, 5, 2))),
                      jax.random.key(0))
  assert [h.shape for h in hs] == [(3, 5, 5, 4)] * 2
  with pytest.raises(ValueError, match="where must be 'all' or 'hidden'"):
    sep.layer_features(m, p, x, where="post")
