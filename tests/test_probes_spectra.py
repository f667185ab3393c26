"""Weight spectra: constructed matrices, ranks, power-law exponents, sweeps == loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import nn
from jaxtheory.probes import over_runs
from jaxtheory.probes import spectra as S
from factorization_order import factorizations_in_turn


pytestmark = pytest.mark.usefixtures("x64")


def _with_singular_values(s, rows, cols, seed=0):
  rng = np.random.default_rng(seed)
  U = np.linalg.qr(rng.standard_normal((rows, rows)))[0][:, :len(s)]
  V = np.linalg.qr(rng.standard_normal((cols, cols)))[0][:, :len(s)]
  return jnp.asarray((U * np.asarray(s)) @ V.T)


def test_singular_values_of_constructed_matrices():
  s = np.array([5.0, 3.0, 2.0, 0.5])
  W = _with_singular_values(s, 10, 7)
  np.testing.assert_allclose(S.singular_values(W)[:4], s, atol=1e-12)
  np.testing.assert_allclose(S.singular_values(W)[4:], 0.0, atol=1e-12)
  np.testing.assert_allclose(S.spectral_norm(S.singular_values(W)), 5.0, atol=1e-12)
  # A conv kernel (*spatial, in, out) is read as (prod(spatial) * in, out).
  K = jnp.asarray(np.random.default_rng(1).standard_normal((3, 3, 2, 4)))
  np.testing.assert_allclose(S.singular_values(K),
                             np.linalg.svd(np.asarray(K).reshape(18, 4), compute_uv=False),
                             rtol=1e-12)
  with pytest.raises(ValueError, match="ndim >= 2"):
    S.singular_values(jnp.ones(3))


def test_matrices_selects_weights_of_a_cnn():
  m = nn.cnn((6, 6, 2), 4, 2, 3)
  mats = S.matrices(m.init(jax.random.key(0)))
  assert [v.shape for v in mats.values()] == [(18, 4), (36, 4), (4, 3)]
  only_first = S.matrices(m.init(jax.random.key(0)),
                          select=lambda path, _: jax.tree_util.keystr(path).startswith("[0]"))
  assert list(only_first) == ["[0]['W']"]


@pytest.mark.parametrize("r", [1, 3, 6])
def test_stable_and_effective_rank_of_rank_r_matrices(r):
  flat = S.singular_values(_with_singular_values(np.full(r, 2.0), 12, 9))
  np.testing.assert_allclose(S.stable_rank(flat), r, rtol=1e-10)
  np.testing.assert_allclose(S.effective_rank(flat), r, rtol=1e-10)
  # Unequal singular values: stable rank sum s^2 / s_1^2, effective rank exp(entropy).
  s = np.linspace(3.0, 1.0, r)
  sv = S.singular_values(_with_singular_values(s, 12, 9))
  np.testing.assert_allclose(S.stable_rank(sv), np.sum(s ** 2) / 9.0, rtol=1e-10)
  p = s / s.sum()
  np.testing.assert_allclose(S.effective_rank(sv), np.exp(-np.sum(p * np.log(p))), rtol=1e-10)
  assert S.stable_rank(sv) <= S.effective_rank(sv) + 1e-12 <= r + 1e-9
  assert S.stable_rank(jnp.zeros(4)) == 0 and S.effective_rank(jnp.zeros(4)) == 0


@pytest.mark.parametrize("alpha", [2.0, 3.0, 4.5])
def test_powerlaw_exponent_of_pareto_samples(alpha):
  rng = np.random.default_rng(int(alpha * 10))
  # Density p(x) ~ x^{-alpha} on x >= 1, plus a bulk below x = 1 the KS scan must cut off.
  tail = (1.0 - rng.random(1500)) ** (-1.0 / (alpha - 1.0))
  bulk = rng.uniform(0.0, 0.6, 1500)
  lam = jnp.asarray(rng.permutation(np.concatenate([tail, bulk])))
  f = jax.jit(S.powerlaw_alpha, static_argnums=(1,))
  tol = 4 * (alpha - 1.0) / np.sqrt(1500)  # ~ 4 standard errors of the MLE
  np.testing.assert_allclose(f(lam, None), alpha, atol=tol)
  np.testing.assert_allclose(f(lam, 1500), alpha, atol=tol)
  np.testing.assert_allclose(f(lam, 0.25), alpha, atol=1.5 * tol)  # 750 of the 3000
  # Zeros (padding) are ignored.
  np.testing.assert_allclose(f(jnp.pad(lam, (0, 500)), 0.25), f(lam, 0.25), rtol=1e-12)
  assert np.isnan(f(jnp.array([2.0, 1.0, 0.0]), None))  # too few for the KS scan


def test_summary_over_runs_equals_loop_and_padded_equals_unpadded():
  seeds, widths, cap = [0, 1], [5, 8, 12], 12
  model_fn = lambda w: nn.mlp((6,), w, 2, 3)
  model = model_fn(cap)
  rows = [[model.init(jax.random.key(s), nn.Ctx(width=w)) for w in widths] for s in seeds]
  stack = lambda *xs: jnp.stack(xs)
  P = jax.tree.map(stack, *[jax.tree.map(stack, *r) for r in rows])
  probe = lambda p: S.summary(p, k_min=3)
  out = jax.jit(lambda P: over_runs(probe, P, batch_dims=2))(P)
  chunked = jax.jit(lambda P: over_runs(probe, P, batch_dims=2, chunk=2))(P)
  assert set(out) == {"[0]['W']", "[2]['W']", "[4]['W']"}
  one = jax.jit(probe)
  for i in range(len(seeds)):
    for j in range(len(widths)):
      ref = one(jax.tree.map(lambda a: a[i, j], P))
      for o in (out, chunked):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i, j], b, rtol=1e-10), o, ref)
  # The width-5 run equals the network built at width 5 (zero rows/columns are ignored).
  small = jax.jit(probe)(model_fn(5).init(jax.random.key(1)))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a[1, 0], b, rtol=1e-10), out, small)
  assert np.all(out["[2]['W']"]["stable_rank"] >= 1.0)
  assert np.all(out["[2]['W']"]["effective_rank"] <= np.asarray(widths)[None, :] + 1e-9)


def test_fourier_power_is_parseval_and_sparsity_reads_frequencies():
  p, d = 13, 6
  E = jax.random.normal(jax.random.key(0), (p, d))
  P = S.fourier_power(E)
  assert P.shape == (p // 2 + 1,)
  np.testing.assert_allclose(float(P.sum()), p * float(jnp.sum(E ** 2)), rtol=1e-5)
  t = jnp.arange(p)
  pure = jnp.stack([jnp.cos(2 * jnp.pi * 4 * t / p), jnp.sin(2 * jnp.pi * 4 * t / p),
                    jnp.cos(2 * jnp.pi * 2 * t / p) + 3.0], axis=1)  # the constant is ignored
  assert float(S.fourier_sparsity(pure, 2)) == pytest.approx(1.0, abs=1e-5)
  assert float(S.fourier_sparsity(pure, 1)) < 0.99
  # A random embedding spreads its power: top 2 of 6 frequencies hold well under 1.
  assert 2 / 6 - 0.05 < float(S.fourier_sparsity(E, 2)) < 0.8


def test_several_matrices_are_factorized_one_at_a_time():
  # Side by side, batched LAPACK calls can deadlock XLA's CPU thread pool (seen
  # with a vmapped sweep recording four layers' spectra on two cores).
  model = nn.mlp((6,), 8, 3, 3)
  P = jax.vmap(lambda k: model.init(k))(jax.random.split(jax.random.key(0), 4))
  hlo = lambda f: jax.jit(jax.vmap(f)).lower(P).compile().as_text()
  for probe in (S.layer_metric(), lambda p, *_: S.summary(p, k_min=3)):
    assert factorizations_in_turn(hlo(lambda p: probe(p, None, None))) == [(4, True)]
  free = lambda p: [jnp.linalg.svdvals(W) for W in S.matrices(p).values()]
  assert factorizations_in_turn(hlo(free)) == [(4, False)]


def test_a_partial_last_chunk_waits_for_the_others():
  model = nn.mlp((6,), 8, 3, 3)
  P = jax.vmap(lambda k: model.init(k))(jax.random.split(jax.random.key(0), 5))
  probe = lambda p: S.summary(p, k_min=3)
  program = jax.jit(lambda P: over_runs(probe, P, chunk=2))
  # The loop over full chunks and the last chunk's four SVDs, in turn.
  assert factorizations_in_turn(program.lower(P).compile().as_text()) == [(4, True), (5, True)]
  out, ref = program(P), jax.jit(lambda P: over_runs(probe, P))(P)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10), out, ref)
