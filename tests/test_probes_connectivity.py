"""Tests for jaxtheory.probes.connectivity: linear paths, barriers, re-basin.

Invariances: a network and any permutation of its hidden units compute the
same function (MLP, CNN with global pooling, CNN with a flatten, padded
width); weight and activation matching recover a planted permutation
exactly; a batched barrier over stacked pairs equals the loop.
Phenomena: between two independently trained MLPs the loss barrier is
clearly positive; between a trained net and a random permutation of it the
linear path is not flat (a clear barrier), and after weight matching it is
exactly flat (barrier 0).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtheory import nn
from jaxtheory.probes import over_runs
from jaxtheory.probes import connectivity as lmc
from jaxtheory.losses import cross_entropy

N = 128


def _data(seed, shape):
  """A nonlinear binary task (host numpy: no compiles)."""
  x = np.random.default_rng(seed).normal(size=(N, *shape)).astype(np.float32)
  flat = x.reshape(N, -1)
  r = np.linalg.norm(flat[:, :2], axis=1)
  y = (np.sin(3 * np.arctan2(flat[:, 1], flat[:, 0]) + 2 * r) > 0).astype(np.int32)
  return jnp.asarray(x), jnp.asarray(y)


def _random_params(model, seed):
  """Random params of ``model`` with nonzero biases, drawn on the host (no init compile)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0))

  def draw(s):
    fan_in = np.prod(s.shape[:-1]) if len(s.shape) > 1 else 10
    return jnp.asarray(rng.normal(size=s.shape) / np.sqrt(fan_in), jnp.float32)

  return jax.tree.map(draw, shapes)


def _jiggle(params, seed):
  """Perturbs every active weight and bias (init biases are zero); padded entries stay zero."""
  rng = np.random.default_rng(seed)

  def layer(p):
    if not isinstance(p, dict):
      return p
    W, b = np.asarray(p["W"]), np.asarray(p["b"])
    active = np.any(W.reshape(-1, W.shape[-1]) != 0, axis=0)
    return {"W": jnp.asarray(W + 0.1 * rng.normal(size=W.shape) * (W != 0), jnp.float32),
            "b": jnp.asarray(b + 0.1 * rng.normal(size=b.shape) * active, jnp.float32)}

  return tuple(layer(p) for p in params)


def _same_tree(a, b):
  return all(np.array_equal(np.asarray(u), np.asarray(v))
             for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


MODELS = {
    "mlp": (nn.mlp((5,), 24, 3, 3), (5,)),
    "cnn_global": (nn.cnn((6, 6, 2), 8, 2, 3), (6, 6, 2)),
    "cnn_flatten": (nn.cnn((6, 6, 2), 8, 2, 3, pool="flatten"), (6, 6, 2)),
    # conv -> pool -> conv -> pool -> flatten -> dense: the channel permutation of the last
    # conv carries through the pooling and the flatten into the dense layer's rows.
    "cnn_pool": (nn.model(nn.serial(
        nn.conv(6, (3, 3), padding="SAME", b_std=0.0), nn.relu(), nn.avg_pool((2, 2)),
        nn.conv(5, (3, 3), padding="SAME", b_std=0.0), nn.relu(), nn.avg_pool((2, 2)),
        nn.flatten(), nn.dense(7, b_std=0.0), nn.relu(), nn.dense(3, b_std=0.0)), (8, 8, 2)),
                 (8, 8, 2)),
    "cnn_downsample": (nn.cnn((8, 8, 2), 6, 2, 3, pool="flatten", downsample=2), (8, 8, 2)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_permuted_copy_same_function_and_matching_recovers_it(name):
  model, shape = MODELS[name]
  x, _ = _data(0, shape)
  a = _random_params(model, 1)
  spec = lmc.permutation_spec(a)
  q = jax.jit(lmc.random_permutation)(jax.random.key(3), a)
  assert all(not np.array_equal(p, np.arange(p.size)) for p in q)
  b = lmc.apply_permutation(a, q)
  apply = jax.jit(model.apply)
  chex.assert_trees_all_close(apply(b, x), apply(a, x), atol=1e-5)
  wm = jax.jit(lmc.weight_matching)(a, b)
  assert _same_tree(lmc.apply_permutation(b, wm, spec), a)
  # Outside jit it runs on the host directly, with the same result.
  eager = lmc.weight_matching(a, b)
  assert all(isinstance(p, jax.Array) and np.array_equal(p, w) for p, w in zip(eager, wm))
  if name != "cnn_pool":  # activation matching swaps two channels of this net (not diagnosed)
    am = jax.jit(lambda a, b: lmc.activation_matching(model, a, b, x))(a, b)
    assert _same_tree(lmc.apply_permutation(b, am), a)
  # The linear path to the permuted copy is not flat; to the matched one it is (barrier 0).
  fa = apply(a, x)
  dist = jax.jit(lambda a, b: lmc.barrier(lambda p: jnp.mean((apply(p, x) - fa) ** 2), a, b,
                                          num=5))
  assert float(dist(a, b)) > 1e-3
  assert float(dist(a, lmc.apply_permutation(b, wm, spec))) < 1e-12


def test_permutation_spec_of_models():
  p = jax.eval_shape(MODELS["cnn_flatten"][0].init, jax.random.key(0))
  assert lmc.permutation_spec(p) == (lmc.Group(0, 2, 8), lmc.Group(2, 5, 8, repeat=36))
  p = jax.eval_shape(MODELS["cnn_global"][0].init, jax.random.key(0))
  assert lmc.permutation_spec(p) == (lmc.Group(0, 2, 8), lmc.Group(2, 5, 8))
  p = jax.eval_shape(MODELS["cnn_pool"][0].init, jax.random.key(0))
  assert lmc.permutation_spec(p) == (lmc.Group(0, 3, 6), lmc.Group(3, 7, 5, repeat=4),
                                     lmc.Group(7, 9, 7))
  p = jax.eval_shape(MODELS["cnn_downsample"][0].init, jax.random.key(0))
  assert lmc.permutation_spec(p) == (lmc.Group(0, 3, 6), lmc.Group(3, 7, 6, repeat=4))


def test_padded_width_permutes_only_active_units():
  big = nn.mlp((5,), 16, 2, 3)
  ctx = nn.Ctx(width=10)
  x, _ = _data(0, (5,))
  init = jax.jit(big.init)
  a = _jiggle(init(jax.random.key(1), ctx), 2)
  assert [int(m.sum()) for m in lmc.active_units(a)] == [10, 10]
  q = lmc.random_permutation(jax.random.key(3), a)
  for p in q:
    np.testing.assert_array_equal(p[10:], np.arange(10, 16))  # padded units stay put
    assert sorted(np.asarray(p[:10])) == list(range(10))
  b = lmc.apply_permutation(a, q)
  apply = jax.jit(lambda p, x: big.apply(p, x, ctx))
  chex.assert_trees_all_close(apply(b, x), apply(a, x), atol=1e-5)
  assert _same_tree(lmc.apply_permutation(b, lmc.weight_matching(a, b)), a)
  # Two independent padded nets: matching never moves an active unit into padding,
  # whether the active units are inferred or given.
  c = _jiggle(init(jax.random.key(4), ctx), 5)
  inferred = lmc.weight_matching(a, c)
  given = lmc.weight_matching(a, c, width=10)
  chex.assert_trees_all_equal(inferred, given)
  for p in inferred:
    np.testing.assert_array_equal(p[10:], np.arange(10, 16))
  aligned = lmc.apply_permutation(c, inferred)
  chex.assert_trees_all_close(apply(aligned, x), apply(c, x), atol=1e-5)
  # Why the constraint matters: matched against -a, every active unit of the other
  # net prefers a zero (padded) unit; a full-capacity matching moves units into the
  # padding (so the masked net would lose them), the constrained one cannot.
  neg = jax.tree.map(jnp.negative, a)
  full = lmc.weight_matching(neg, a, width=16)
  assert any(not np.array_equal(p[10:], np.arange(10, 16)) for p in full)
  for p in lmc.weight_matching(neg, a):
    np.testing.assert_array_equal(p[10:], np.arange(10, 16))


def _train(model, x, y, seeds, steps=150):
  """Full-batch Adam on cross-entropy from host-drawn inits, vmapped over seeds."""
  w = jnp.ones(y.shape[0])
  loss = lambda p: cross_entropy(model.apply(p, x), y, w)
  opt = optax.adam(2e-2)

  def one(p):
    def step(c, _):
      p, s = c
      u, s = opt.update(jax.grad(loss)(p), s, p)
      return (optax.apply_updates(p, u), s), None

    return jax.lax.scan(step, (p, opt.init(p)), None, length=steps)[0][0]

  inits = [_random_params(model, s) for s in seeds]
  return jax.jit(jax.vmap(one))(jax.tree.map(lambda *a: jnp.stack(a), *inits)), loss


def test_barriers_before_and_after_alignment():
  model = nn.mlp((2,), 32, 2, 2)
  x, y = _data(0, (2,))
  stacked, loss = _train(model, x, y, [1, 2])
  pa, pb = jax.tree.map(lambda a: a[0], stacked), jax.tree.map(lambda a: a[1], stacked)
  bar = jax.jit(lambda a, b: lmc.barrier(loss, a, b, num=11))
  ends = jax.jit(loss)
  assert ends(pa) < 0.2 and ends(pb) < 0.2  # both trained
  assert bar(pa, pb) > 0.1  # independent solutions: a barrier
  perm = jax.jit(lambda p: lmc.apply_permutation(p, lmc.random_permutation(
      jax.random.key(7), p)))(pa)
  chex.assert_trees_all_close(ends(perm), ends(pa), atol=1e-5)
  assert bar(pa, perm) > 0.1  # the same function, yet the linear path is not flat
  aligned = lmc.apply_permutation(perm, lmc.weight_matching(pa, perm))
  assert abs(float(bar(pa, aligned))) < 1e-6  # after re-basin: flat
  aligned = lmc.apply_permutation(perm, lmc.activation_matching(model, pa, perm, x))
  assert abs(float(bar(pa, aligned))) < 1e-6
  # Batched over stacked pairs == a loop over pairs.
  A = jax.tree.map(lambda a, b: jnp.stack([a, a, b]), pa, pb)
  B = jax.tree.map(lambda u, v, w: jnp.stack([u, v, w]), pb, perm, aligned)
  batched = jax.jit(lambda A, B: over_runs(lambda a, b: lmc.barrier(loss, a, b, num=11), A, B))
  looped = jnp.stack([bar(jax.tree.map(lambda t: t[i], A), jax.tree.map(lambda t: t[i], B))
                      for i in range(3)])
  chex.assert_trees_all_close(batched(A, B), looped, rtol=1e-5, atol=1e-6)
  # Re-basin itself maps over stacked pairs (a sequential host callback).
  perms = jax.jit(lambda A, B: over_runs(lmc.weight_matching, A, B))(A, B)
  for i in range(3):
    one = lmc.weight_matching(jax.tree.map(lambda t: t[i], A), jax.tree.map(lambda t: t[i], B))
    chex.assert_trees_all_equal(tuple(p[i] for p in perms), one)


def test_paths_and_barrier_definition():
  loss = lambda p: (p["w"] ** 2 - 1.0) ** 2  # minima at -1 and 1, bump of 1 at 0
  a, b = {"w": -jnp.ones(())}, {"w": jnp.ones(())}
  vals = lmc.path(loss, a, b, num=5)
  chex.assert_trees_all_close(vals, jnp.array([0.0, 0.5625, 1.0, 0.5625, 0.0]))
  chex.assert_trees_all_close(lmc.barrier(loss, a, b, num=5), jnp.array(1.0))
  chex.assert_trees_all_close(lmc.path(loss, a, b, num=5, chunk=2), vals)
  tilted = lambda p: loss(p) + p["w"]  # a linear term never creates a barrier
  chex.assert_trees_all_close(lmc.barrier(tilted, a, b, num=5), jnp.array(1.0), atol=1e-6)
  stacked = lmc.interpolate(a, b, jnp.array([0.0, 0.25, 1.0]))
  chex.assert_trees_all_close(stacked["w"], jnp.array([-1.0, -0.5, 1.0]))
  with pytest.raises(ValueError, match="num must be an integer >= 2"):
    lmc.barrier(loss, a, b, num=1)


def test_unsupported_structures_raise():
  ln = nn.model(nn.serial(nn.dense(8, b_std=0.0), nn.layer_norm(affine=True), nn.relu(),
                          nn.dense(2)), (3,))
  with pytest.raises(ValueError, match=r"layer 1 between dense/conv layers 0 and 3 has "
                                       r"parameters \['b', 'g'\]"):
    lmc.permutation_spec(jax.eval_shape(ln.init, jax.random.key(0)))
  res = nn.model(nn.serial(nn.dense(8), nn.residual(nn.relu(), nn.dense(8)), nn.dense(2)), (3,))
  with pytest.raises(ValueError, match="layer 1 is a nested combinator"):
    lmc.permutation_spec(jax.eval_shape(res.init, jax.random.key(0)))
  lin = nn.model(nn.dense(2), (3,))
  with pytest.raises(ValueError, match="needs the params of a serial model"):
    lmc.permutation_spec(jax.eval_shape(lin.init, jax.random.key(0)))
  one = nn.mlp((3,), 8, 0, 2)
  with pytest.raises(ValueError, match="at least two dense/conv layers"):
    lmc.permutation_spec(jax.eval_shape(one.init, jax.random.key(0)))
  p = _random_params(nn.mlp((3,), 8, 1, 2), 0)
  with pytest.raises(ValueError, match="same structure and shapes"):
    lmc.weight_matching(p, _random_params(nn.mlp((3,), 9, 1, 2), 0))
  with pytest.raises(ValueError, match=r"must have shape \(8,\)"):
    lmc.apply_permutation(p, [jnp.arange(7)])
