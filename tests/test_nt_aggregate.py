"""``stax.Aggregate`` (NT's graph aggregation): apply, analytic kernel, patterns through
``nt.batch``, Monte Carlo and ``predict``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import nt, stax
from jaxtheory.kernels import predict


pytestmark = pytest.mark.usefixtures("x64")


def _close(a, b, **kw):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), **kw)


def _normal(seed, shape):
  return jax.random.normal(jax.random.key(seed), shape)


def _dense_of(arcs, n, sizes):
  """Numpy adjacency ``(n, *sizes, *sizes)`` of sparse arcs ``(n, E, K, 2)``; negatives dropped."""
  a = np.zeros((n, *sizes, *sizes))
  for i in range(n):
    for arc in np.asarray(arcs[i]):
      if (arc >= 0).all():
        a[(i, *arc[:, 0], *arc[:, 1])] += 1
  return a


def _arcs(seed, n, n_edges, sizes):
  """Random integer arcs ``(n, n_edges, K, 2)`` with about a fifth of them padding (-1)."""
  k1, k2 = jax.random.split(jax.random.key(seed))
  cols = [jax.random.randint(jax.random.fold_in(k1, d), (n, n_edges, 1, 2), 0, s)
          for d, s in enumerate(sizes)]
  arcs = jnp.concatenate(cols, axis=2)
  pad = jax.random.bernoulli(k2, 0.2, (n, n_edges))
  return jnp.where(pad[:, :, None, None], -1, arcs)


def test_apply_dense_is_the_weighted_sum_of_predecessors():
  x = _normal(0, (3, 2, 4, 5))  # NCHW
  init, apply, _ = stax.Aggregate(aggregate_axis=(2, 3), batch_axis=0, channel_axis=1)
  a = _normal(1, (3, 4, 5, 4, 5))
  shape, params = init(jax.random.key(0), x.shape)
  assert shape == x.shape
  _close(apply(params, x, pattern=a), np.einsum("ncij,nijkl->nckl", x, a), rtol=1e-12)
  _close(apply(params, x), x)  # no pattern: the identity
  # One axis (W) of several; the batch axis in the middle, channels first.
  xb = jnp.moveaxis(x, (0, 1), (2, 0))  # C H N W
  aw = _normal(2, (3, 5, 5))
  _, apply_w, _ = stax.Aggregate(aggregate_axis=3, batch_axis=2, channel_axis=0)
  _close(apply_w((), xb, pattern=aw), np.einsum("chnw,nwv->chnv", xb, aw), rtol=1e-12)
  # to_dense decodes the pattern on each call.
  _, apply_t, _ = stax.Aggregate(to_dense=lambda p: p[0])
  x1 = _normal(3, (3, 4, 2))
  a1 = _normal(4, (3, 4, 4))
  _close(apply_t((), x1, pattern=(a1, None)), np.einsum("nic,nij->njc", x1, a1), rtol=1e-12)


@pytest.mark.parametrize("shape, aggregate_axis, agg_sizes", [
    ((2, 5, 2), None, (5,)), ((2, 3, 4, 2), None, (3, 4)), ((2, 3, 4, 2), 2, (4,))])
def test_apply_sparse_equals_dense(shape, aggregate_axis, agg_sizes):
  x = _normal(0, shape)
  arcs = _arcs(1, 2, 9, agg_sizes)
  dense = _dense_of(arcs, 2, agg_sizes)
  _, apply_s, _ = stax.Aggregate(aggregate_axis, implementation="SPARSE")
  _, apply_d, _ = stax.Aggregate(aggregate_axis)
  _close(apply_s((), x, pattern=arcs), apply_d((), x, pattern=dense), rtol=1e-12, atol=1e-12)
  if len(agg_sizes) == 1:  # (batch, n_edges, 2) is accepted for one aggregated axis
    _close(apply_s((), x, pattern=arcs[:, :, 0, :]), apply_d((), x, pattern=dense),
           rtol=1e-12, atol=1e-12)


def test_kernel_is_a1t_k_a2_and_sparse_equals_dense():
  """Closed form: NNGP/NTK ``A1^T K A2``, ``cov1`` ``A1^T K A1``, ``cov2`` ``A2^T K A2``."""
  x1, x2 = _normal(0, (3, 4, 2)), _normal(1, (2, 4, 2))
  body = [stax.Dense(8, b_std=0.1), stax.Erf()]
  arcs1, arcs2 = _arcs(2, 3, 7, (4,)), _arcs(3, 2, 5, (4,))
  a1, a2 = _dense_of(arcs1, 3, (4,)), _dense_of(arcs2, 2, (4,))
  get = ("nngp", "ntk", "cov1", "cov2")
  k = stax.serial(*body)[2](x1, x2, get, diagonal_spatial=False)
  out = stax.serial(*body, stax.Aggregate())[2](x1, x2, get, pattern=(a1, a2))
  sandwich = lambda m, p, q, s: np.einsum(s, p, m, q)
  _close(out.nngp, sandwich(k.nngp, a1, a2, "aip,abij,bjq->abpq"), rtol=1e-10)
  _close(out.ntk, sandwich(k.ntk, a1, a2, "aip,abij,bjq->abpq"), rtol=1e-10)
  _close(out.cov1, sandwich(k.cov1, a1, a1, "aip,aij,ajq->apq"), rtol=1e-10)
  _close(out.cov2, sandwich(k.cov2, a2, a2, "aip,aij,ajq->apq"), rtol=1e-10)
  sparse = stax.serial(*body, stax.Aggregate(implementation="SPARSE"))[2]
  out_s = sparse(x1, x2, get, pattern=(arcs1, arcs2))
  for g in get:
    _close(getattr(out_s, g), getattr(out, g), rtol=1e-10)
  # No pattern: the identity.
  same = stax.serial(*body, stax.Aggregate())[2](x1, x2, get, pattern=(None, None),
                                                 diagonal_spatial=False)
  for g in get:
    _close(getattr(same, g), getattr(k, g))


def test_kernel_with_other_axes_and_full_batch():
  """Channels first, batch last, one of two spatial axes aggregated; ``diagonal_batch=False``."""
  x1, x2 = _normal(0, (2, 3, 4, 3)), _normal(1, (2, 3, 4, 2))  # C H W N
  a1, a2 = _normal(2, (3, 4, 4)), _normal(3, (2, 4, 4))
  layers = [stax.Dense(8, batch_axis=3, channel_axis=0), stax.Relu(),
            stax.Aggregate(aggregate_axis=2, batch_axis=3, channel_axis=0),
            stax.GlobalAvgPool(batch_axis=3, channel_axis=0)]
  kfn = stax.serial(*layers)[2]
  body = stax.serial(*layers[:2])[2]
  k = body(x1, x2, ("nngp", "ntk"), diagonal_spatial=False)  # (n1, n2, h, h', w, w')
  agg = np.einsum("awp,abhiwv,bvq->abhipq", a1, k.nngp, a2)
  out = kfn(x1, x2, ("nngp", "ntk"), pattern=(a1, a2))
  _close(out.nngp, agg.mean(axis=(2, 3, 4, 5)), rtol=1e-10)
  full = kfn(x1, x2, None, pattern=(a1, a2), diagonal_batch=False)
  diag = kfn(x1, x2, None, pattern=(a1, a2))
  _close(np.diagonal(full.cov1), diag.cov1, rtol=1e-10)
  _close(np.diagonal(full.cov2), diag.cov2, rtol=1e-10)
  self1 = kfn(x1, None, "nngp", pattern=(a1, a1))
  _close(full.cov1, self1, rtol=1e-10)


def test_kernel_matches_monte_carlo():
  x1, x2 = _normal(0, (3, 5, 3)), _normal(1, (2, 5, 3))
  a1 = jax.random.uniform(jax.random.key(2), (3, 5, 5))
  a2 = jax.random.uniform(jax.random.key(3), (2, 5, 5))
  init, apply, kfn = stax.serial(stax.Dense(256, W_std=1.5, b_std=0.1), stax.Relu(),
                                 stax.Aggregate(), stax.Dense(256), stax.Erf(),
                                 stax.GlobalAvgPool(), stax.Dense(16))
  exact = kfn(x1, x2, ("nngp", "ntk"), pattern=(a1, a2))
  mc = nt.monte_carlo_kernel_fn(init, apply, jax.random.key(5), 200)(
      x1, x2, ("nngp", "ntk"), pattern=(a1, a2))
  # 200 draws: about 4% (NNGP) and 0.5% (NTK) off; with the patterns transposed, 10% and 7%.
  for g, tol in (("nngp", 0.1), ("ntk", 0.02)):
    e, m = np.asarray(getattr(exact, g)), np.asarray(getattr(mc, g))
    assert np.abs(m - e).max() < tol * np.abs(e).max(), g


def test_patterns_are_cut_into_blocks():
  """``nt.batch`` and ``batch_size=`` cut ``pattern=(p1, p2)`` along with ``x1``/``x2``."""
  x1, x2 = _normal(0, (5, 4, 2)), _normal(1, (3, 4, 2))
  a1, a2 = _normal(2, (5, 4, 4)), _normal(3, (3, 4, 4))
  kfn = stax.serial(stax.Dense(8), stax.Relu(), stax.Aggregate(), stax.GlobalAvgPool())[2]
  get = ("nngp", "ntk", "cov1", "cov2")
  whole = kfn(x1, x2, get, pattern=(a1, a2))
  for out in (nt.batch(kfn, batch_size=2, device_count=0)(x1, x2, get, pattern=(a1, a2)),
              kfn(x1, x2, get, pattern=(a1, a2), batch_size=2)):
    for g in get:
      _close(getattr(out, g), getattr(whole, g), rtol=1e-10)
  same = kfn(x1, None, "nngp", pattern=(a1, a1))
  _close(nt.batch(kfn, batch_size=2, device_count=0)(x1, None, "nngp", pattern=(a1, a1)), same,
         rtol=1e-10)


def test_predict_combines_train_and_test_patterns():
  """NT's rule: the test-train kernel gets ``(pattern_test, pattern_train)``."""
  x_tr, x_te = _normal(0, (6, 4, 2)), _normal(1, (3, 4, 2))
  p_tr, p_te = _normal(2, (6, 4, 4)), _normal(3, (3, 4, 4))
  y = _normal(4, (6, 1))
  kfn = stax.serial(stax.Dense(8), stax.Relu(), stax.Aggregate(), stax.GlobalAvgPool(),
                    stax.Dense(1))[2]
  k_dd = kfn(x_tr, None, ("nngp", "ntk"), pattern=(p_tr, p_tr))
  k_td = kfn(x_te, x_tr, ("nngp", "ntk"), pattern=(p_te, p_tr))
  k_tt = kfn(x_te, None, "nngp", pattern=(p_te, p_te))
  want = predict.gp_inference(k_dd, y, diag_reg=1e-3)(k_test_train=k_td, k_test_test=k_tt)
  fn = predict.gradient_descent_mse_ensemble(kfn, x_tr, y, diag_reg=1e-3, pattern=(p_tr, p_tr))
  got = fn(x_test=x_te, compute_cov=True, pattern=(p_te, p_te))
  for g in ("nngp", "ntk"):
    _close(getattr(got, g).mean, getattr(want, g).mean, rtol=1e-8)
    _close(getattr(got, g).covariance, getattr(want, g).covariance, rtol=1e-8, atol=1e-12)


def test_bad_patterns_and_axes_are_refused():
  x = _normal(0, (3, 4, 2))
  _, apply, kfn = stax.Aggregate()
  with pytest.raises(ValueError, match=r"dense pattern must have shape .*\(3, 4, 4\)"):
    apply((), x, pattern=jnp.ones((3, 4, 5)))
  with pytest.raises(ValueError, match=r"dense pattern must have shape"):
    apply((), x, pattern=jnp.ones((2, 4, 4)))  # wrong batch
  with pytest.raises(ValueError, match=r"dense pattern must have shape"):
    kfn(x, None, "nngp", pattern=(jnp.ones((3, 3, 3)), jnp.ones((3, 3, 3))))
  with pytest.raises(ValueError, match="pair"):
    kfn(x, None, "nngp", pattern=jnp.ones((3, 4, 4)))
  _, apply_s, kfn_s = stax.Aggregate(implementation="SPARSE")
  with pytest.raises(ValueError, match=r"shape \(batch, n_edges, 1, 2\)"):
    apply_s((), x, pattern=jnp.zeros((3, 5, 1, 3), jnp.int32))
  with pytest.raises(ValueError, match="integer"):
    apply_s((), x, pattern=jnp.zeros((3, 5, 2)))
  with pytest.raises(ValueError, match=r"shape \(batch, n_edges, 1, 2\)"):
    kfn_s(x, None, "nngp", pattern=(jnp.zeros((2, 5, 2), jnp.int32),) * 2)
  with pytest.raises(ValueError, match="implementation"):
    stax.Aggregate(implementation="BLOCKED")
  init, apply_c, _ = stax.Aggregate(aggregate_axis=(1, 2))
  with pytest.raises(ValueError, match="channel axis"):
    init(jax.random.key(0), x.shape)
  with pytest.raises(NotImplementedError, match="both patterns"):
    kfn(x, _normal(1, (2, 4, 2)), "nngp", pattern=(jnp.ones((3, 4, 4)), None))


def test_empirical_ntk_with_batch_axes_anywhere_and_patterns():
  """NT's ``test_vmap_axes`` setting: inputs whose batch axis is not leading (no shared
  leading axis, so no vmap shortcut), an ``x2`` of ``None``\\ s, and ``pattern=`` split
  ``(for x1, for x2)``; the kernel equals that of the batch-first network."""
  xa, xb = _normal(0, (3, 2)), _normal(1, (4, 3, 2))  # (n, c) and (h, n, c)
  p = _normal(2, (3, 4, 4))
  init, apply, _ = stax.parallel(
      stax.Dense(3), stax.serial(stax.Dense(3, batch_axis=1), stax.Relu(),
                                 stax.Aggregate(aggregate_axis=0, batch_axis=1)))
  _, params = init(jax.random.key(0), (xa.shape, xb.shape))
  _, apply_first, _ = stax.parallel(
      stax.Dense(3), stax.serial(stax.Dense(3), stax.Relu(), stax.Aggregate()))
  ntk = nt.empirical_ntk_fn(apply)((xa, xb), (None, None), params, pattern=(p, p))
  ref = nt.empirical_ntk_fn(apply_first)((xa, jnp.moveaxis(xb, 1, 0)), None, params,
                                         pattern=(p, p))
  _close(ntk[0], ref[0], rtol=1e-10)
  _close(ntk[1], np.transpose(ref[1], (2, 3, 0, 1)), rtol=1e-10, atol=1e-12)


def test_kernel_inputs_take_patterns_too():
  """``kernel_fn(kernel, pattern=...)`` on NT ``Kernel`` inputs equals the whole network's."""
  x1, x2 = _normal(0, (3, 4, 2)), _normal(1, (2, 4, 2))
  a1, a2 = _normal(2, (3, 4, 4)), _normal(3, (2, 4, 4))
  head, tail = [stax.Dense(8), stax.Relu()], [stax.Aggregate(), stax.GlobalAvgPool()]
  whole = stax.serial(*head, *tail)[2](x1, x2, None, pattern=(a1, a2))
  k = stax.serial(*head)[2](x1, x2, None, diagonal_spatial=False)
  out = stax.serial(*tail)[2](k, pattern=(a1, a2))
  for g in ("nngp", "ntk", "cov1", "cov2"):
    _close(getattr(out, g), getattr(whole, g), rtol=1e-10)
  with pytest.raises(NotImplementedError, match="both patterns"):
    stax.serial(*tail)[2](k, pattern=(a1, None))  # x2 is not x1: pattern2 is needed


@pytest.mark.parametrize("spatial", [(0,), (1,), (0, 2), (0, 1, 2)])
@pytest.mark.parametrize("bn", [1, 2])
def test_sandwich_over_any_aggregated_axes_is_a1t_m_a2(spatial, bn):
  """The two batched products equal the closed form over any subset of 3 spatial axes."""
  from jaxtheory.kernels import graph
  sizes, n1, n2 = (2, 3, 4), 3, 2
  batch = (n1, n2) if bn == 2 else (n1,)
  m = _normal(0, batch + tuple(s for s in sizes for _ in range(2)))
  agg = tuple(sizes[d] for d in spatial)
  a1 = _normal(1, (n1, *agg, *agg))
  a2 = _normal(2, (n2 if bn == 2 else n1, *agg, *agg))
  letters = iter("cdefghijklmnopqrstuvwxyz")
  m_lab, out_lab, t1, h1, t2, h2 = [], [], [], [], [], []
  for d in range(3):
    p, q = next(letters), next(letters)
    m_lab += [p, q]
    if d in spatial:
      P, Q = next(letters), next(letters)
      t1.append(p), h1.append(P), t2.append(q), h2.append(Q)
      out_lab += [P, Q]
    else:
      out_lab += [p, q]
  bm = "ab" if bn == 2 else "a"
  b2 = "b" if bn == 2 else "a"
  expr = (f"{bm}{''.join(m_lab)},a{''.join(t1 + h1)},{b2}{''.join(t2 + h2)}"
          f"->{bm}{''.join(out_lab)}")
  want = np.einsum(expr, m, a1, a2)
  _close(graph._sandwich(jnp.asarray(m), jnp.asarray(a1), jnp.asarray(a2), spatial, 3, bn),
         want, rtol=1e-10)
