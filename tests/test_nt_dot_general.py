"""``stax.DotGeneral`` with an array operand: its kernel is exact on a linear network."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import nt, stax
from jaxtheory.kernels import dot_general as kdot
from linear_exact import diagonal, jacobian_kernel


pytestmark = pytest.mark.usefixtures("x64")

_O = lambda *shape: jax.random.normal(jax.random.key(7), shape)

# (lhs, rhs, dimension_numbers) on (n, 4, 5, c) activations.
CASES = [
    (None, _O(4), (((1,), (0,)), ((), ()))),             # contract a spatial axis away
    (_O(6, 4), None, (((1,), (1,)), ((), ()))),          # lhs: a new leading axis, batch moves
    (None, _O(5, 7), (((2,), (0,)), ((), ()))),          # a spatial axis mapped to 7 positions
    (None, _O(4, 3), (((), ()), ((1,), (0,)))),          # a spatial axis paired (batch dims)
    (None, _O(3, 6), (((), ()), ((0,), (0,)))),          # one constant per example
    (_O(2, 5, 4), None, (((2, 1), (1, 2)), ((), ()))),   # both spatial axes contracted
]


@pytest.mark.parametrize("lhs,rhs,dn", CASES)
def test_dot_general_kernel_is_exact(lhs, rhs, dn):
  x1 = jax.random.normal(jax.random.key(0), (3, 4, 5, 2))
  x2 = jax.random.normal(jax.random.key(1), (3 if dn[1][0] == (0,) else 2, 4, 5, 2))
  init, apply, kfn = stax.serial(stax.Conv(3, (2, 2), padding="SAME", W_std=1.2),
                                 stax.DotGeneral(lhs=lhs, rhs=rhs, dimension_numbers=dn))
  out_shape, params = init(jax.random.key(2), x1.shape)
  other = rhs if lhs is None else lhs
  spec = kdot.Contraction.of(dn, 4, other.ndim, lhs is not None, 0, -1)
  ob, oc = spec.output_batch_channel()
  args = (other, x1) if lhs is not None else (x1, other)
  conv = stax.Conv(3, (2, 2), padding="SAME", W_std=1.2)[1]
  np.testing.assert_allclose(apply(params, x1), jax.lax.dot_general(
      *(a if a is other else conv(params[0], x1) for a in args), dn), rtol=1e-12)
  assert out_shape == apply(params, x1).shape
  exact = jacobian_kernel(apply, params, x1, x2, ob, oc)
  k = kfn(x1, x2, ("nngp", "ntk"), diagonal_spatial=False)
  np.testing.assert_allclose(k.nngp, exact, rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(k.ntk, exact, rtol=1e-9, atol=1e-12)
  if not any(a != 0 for a in spec.x_contract):  # no spatial contraction: diagonal works too
    kd = kfn(x1, x2, "nngp", diagonal_spatial=True)
    np.testing.assert_allclose(kd, diagonal(exact), rtol=1e-9, atol=1e-12)
  else:
    with pytest.raises(ValueError, match="all pairs of positions"):
      kfn(x1, x2, "nngp", diagonal_spatial=True)


def test_dot_general_masks_follow_neural_tangents_rule():
  """An output entry is masked when every input entry it sums over is (NT's own test)."""
  x = jnp.ones((4, 2, 3, 1))
  kfn = stax.DotGeneral(rhs=jnp.ones((4, 2, 3)), dimension_numbers=(((1,), (1,)), ((2,), (2,))))[2]
  get = lambda m1, m2: kfn(jnp.where(m1, 10.0, x), jnp.where(m2, 10.0, x), "nngp",
                           mask_constant=10.0)
  none, every = jnp.zeros_like(x, bool), jnp.ones_like(x, bool)
  np.testing.assert_allclose(get(none, none), 4.0)
  np.testing.assert_allclose(get(every, none), 0.0)
  half = jnp.concatenate([every[:2], none[2:]])
  k = get(half, none)
  np.testing.assert_allclose(k[:2], 0.0)
  np.testing.assert_allclose(k[2:], 4.0)


@pytest.mark.parametrize("lhs,rhs,dn", CASES)
def test_output_mask_of_a_broadcast_mask_equals_that_of_the_full_mask(lhs, rhs, dn):
  """A mask with unit spatial axes (one value per example) reads as its broadcast."""
  other = rhs if lhs is None else lhs
  spec = kdot.Contraction.of(dn, 4, other.ndim, lhs is not None, 0, -1)
  unit = jnp.array([True, False, False])[:, None, None, None]
  full = jnp.broadcast_to(unit, (3, 4, 5, 1))
  from_unit = kdot.output_mask(unit, other, spec)
  from_full = kdot.output_mask(full, other, spec)
  np.testing.assert_array_equal(jnp.broadcast_to(from_unit, from_full.shape), from_full)
  assert from_full[0].all() and not from_full[1:].any()


def test_dot_general_refuses_the_channel_and_batch_contractions():
  x = jnp.ones((2, 3, 4))
  # kernel_fn's batch_axis= / channel_axis= describe every activation (NT's): axis 1 is the
  # channel axis here, so contracting axis 2 is allowed.
  k = stax.DotGeneral(rhs=jnp.ones((4,)), dimension_numbers=(((2,), (0,)), ((), ())))[2](
      x, None, "nngp", channel_axis=1)
  np.testing.assert_allclose(k, 4 * 4.0)
  with pytest.raises(ValueError, match="channel axis"):
    stax.DotGeneral(rhs=jnp.ones((4,)), dimension_numbers=(((2,), (0,)), ((), ())))[2](
        x, None, "nngp")
  with pytest.raises(ValueError, match="no axis to become the output's batch"):
    stax.DotGeneral(rhs=jnp.ones((2,)), dimension_numbers=(((0,), (0,)), ((), ())))[2](
        jnp.ones((2, 3)), None, "nngp")


# Contractions of the batch axis on (3, 4, 5, c) activations: the output's first axis (the
# channel axis aside) becomes its batch axis, as in neural-tangents.
BATCH_CASES = [
    (None, _O(3, 6), (((0,), (0,)), ((), ()))),          # the new batch: the input's h
    (_O(6, 3), None, (((1,), (0,)), ((), ()))),          # the new batch: the operand's axis
    (None, _O(3, 4, 6), (((0, 1), (0, 1)), ((), ()))),   # with h: the new batch is w
]


@pytest.mark.parametrize("lhs,rhs,dn", BATCH_CASES)
def test_contracting_the_batch_axis_is_exact_against_itself_and_another_x2(lhs, rhs, dn):
  # The examples are mixed: each side's new variances need its own covariances, so a
  # different x2 is computed with x1 as one batch, each half mixed on its own.
  x1 = jax.random.normal(jax.random.key(0), (3, 4, 5, 2))
  x2 = jax.random.normal(jax.random.key(1), (3, 4, 5, 2))
  net = lambda: stax.serial(stax.Conv(3, (2, 2), padding="SAME", W_std=1.2),
                            stax.DotGeneral(lhs=lhs, rhs=rhs, dimension_numbers=dn))
  init, apply, kfn = net()
  _, params = init(jax.random.key(2), x1.shape)
  other = rhs if lhs is None else lhs
  out = kdot.Contraction.of(dn, 4, other.ndim, lhs is not None, 0, -1).output_axes()
  oc = out.index(("x", 3))
  ob = min(i for i in range(len(out)) if i != oc)
  exact = lambda a, b: np.asarray(jacobian_kernel(apply, params, a, b, ob, oc))
  full = dict(diagonal_spatial=False, diagonal_batch=False)
  for b in (None, x2):
    k = kfn(x1, b, ("nngp", "ntk", "cov1", "cov2"), **full)
    want = exact(x1, x1 if b is None else b)
    np.testing.assert_allclose(k.nngp, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(k.ntk, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(k.cov1, exact(x1, x1), rtol=1e-9, atol=1e-12)
    if b is not None:
      np.testing.assert_allclose(k.cov2, exact(x2, x2), rtol=1e-9, atol=1e-12)
  # A ReLU after it reads each side's new variances: the arc-cosine formula on the exact
  # covariances.
  relu = stax.serial(net(), stax.Relu())[2](x1, x2, "nngp", **full)
  nsp = exact(x1, x2).ndim // 2 - 1
  var = lambda x: np.einsum(exact(x, x), [0, 0] + [1 + d for d in range(nsp) for _ in "ab"],
                            [0] + [1 + d for d in range(nsp)])
  v1, v2 = var(x1), var(x2)
  norm = np.sqrt(np.einsum(v1, [0] + [2 + 2 * d for d in range(nsp)], v2,
                           [1] + [3 + 2 * d for d in range(nsp)], list(range(2 + 2 * nsp))))
  cos = np.clip(exact(x1, x2) / norm, -1, 1)
  theta = np.arccos(cos)
  np.testing.assert_allclose(relu, norm * (np.sin(theta) + (np.pi - theta) * cos) / (2 * np.pi),
                             rtol=1e-8, atol=1e-12)
  # In the diagonal layout (neural-tangents' rule) the new batch pair is a position pair
  # like the others: only each new example against its counterpart, every pair of axes
  # reduced to its diagonal; contracting a spatial axis as well is refused.
  if len(dn[0][0]) == 1:
    same_positions = lambda a: np.einsum(a, [i for i in range(a.ndim // 2) for _ in "ab"],
                                         list(range(a.ndim // 2)))
    kd = kfn(x1, x2, ("nngp", "cov1", "cov2"), diagonal_spatial=True, diagonal_batch=False)
    for got, want in zip(kd, (exact(x1, x2), exact(x1, x1), exact(x2, x2))):
      np.testing.assert_allclose(got, same_positions(want), rtol=1e-9, atol=1e-12)
    # It holds no (n1, n2) pair of batch axes, so another kernel_fn refuses it as its input.
    with pytest.raises(ValueError, match="cannot be an input"):
      stax.Relu()[2](kfn(x1, x2, diagonal_spatial=True, diagonal_batch=False))
  else:
    with pytest.raises(ValueError, match="all pairs of positions"):
      kfn(x1, x2, "nngp", diagonal_spatial=True, diagonal_batch=False)
  with pytest.raises(ValueError, match="use diagonal_batch=False"):
    kfn(x1, x2, "nngp", diagonal_spatial=False, diagonal_batch=True)
  with pytest.raises(ValueError, match="must each have 3 examples \\(got 3 and 2\\)"):
    kfn(x1, x2[:2], "nngp", **full)
  # Left unset, diagonal_batch becomes False (as for every layer that mixes examples).
  np.testing.assert_allclose(kfn(x1, x2, "nngp", diagonal_spatial=False), exact(x1, x2),
                             rtol=1e-9, atol=1e-12)


def test_contracting_the_batch_axis_carries_masks_per_half():
  # An output entry is masked when every input entry it sums over is; x1's and x2's
  # examples are mixed apart (each half on its own).
  x = jnp.ones((2, 3, 1))
  kfn = stax.DotGeneral(rhs=jnp.eye(2), dimension_numbers=(((0,), (0,)), ((), ())))[2]
  m1 = jnp.zeros_like(x, bool).at[0].set(True)  # x1's first example all masked
  k = kfn(jnp.where(m1, 10.0, x), x + 0.5, ("nngp", "cov1", "cov2"), mask_constant=10.0,
          diagonal_spatial=False, diagonal_batch=False)
  # Output (3, 1, 2): batch = the input's spatial axis, the operand's (identity) axis
  # spatial; identity picks example e at output position e.
  assert k.nngp.shape == (3, 3, 2, 2)
  np.testing.assert_allclose(k.nngp[:, :, 0, :], 0.0)   # x1's example 0 is masked
  np.testing.assert_allclose(k.nngp[:, :, 1, 1], 1.5)   # 1 * 1.5 per channel
  np.testing.assert_allclose(k.cov2[:, :, 0, 0], 2.25)


def test_axis_after_dot_follows_lax():
  x, o = jnp.zeros((2, 3, 4, 5)), jnp.zeros((4, 7, 2))
  y = jax.lax.dot_general(x, o, (((2,), (0,)), ((0,), (2,))))  # (2, 3, 5, 7)
  assert [y.shape[nt.axis_after_dot(a, (2,), (0,))] for a in (0, 1, 3)] == [2, 3, 5]
  y = jax.lax.dot_general(o, x, (((0,), (2,)), ((2,), (0,))))  # (2, 7, 3, 5)
  assert [y.shape[nt.axis_after_dot(a, (2,), (0,), o.ndim)] for a in (0, 1, 3)] == [2, 3, 5]


def test_zip_axes_interleaves_the_two_copies():
  x = jnp.arange(2 * 3 * 4 * 5 * 6).reshape(2, 3, 4, 5, 6)  # batch, then (h, w, h2, w2)
  z = nt.zip_axes(x, 1, 5)
  assert z.shape == (2, 3, 5, 4, 6)
  np.testing.assert_array_equal(z[1, 2, 3, 1, 4], x[1, 2, 1, 3, 4])
  np.testing.assert_array_equal(nt.unzip_axes(z, 1, 5), x)
  assert nt.unzip_axes(jnp.zeros((2, 3, 3, 4, 4)), 1).shape == (2, 3, 4, 3, 4)


def test_the_same_position_kernel_of_a_batch_contraction_refuses_what_it_cannot_hold():
  # diagonal_spatial=True keeps the new batch pair like a position pair (NT's kernel), which
  # only a network's output can be: a layer after the contraction, or another output that
  # keeps its batch pair, is refused clearly; per-example constants of the wrong count too.
  x1 = jax.random.normal(jax.random.key(0), (3, 4, 5, 2))
  dg = lambda: stax.DotGeneral(rhs=_O(3, 6), dimension_numbers=(((0,), (0,)), ((), ())))
  conv = lambda: stax.Conv(3, (2, 2), padding="SAME")
  diag = dict(diagonal_spatial=True, diagonal_batch=False)
  for net, match in (
      (stax.serial(conv(), dg(), stax.AvgPool((2, 2), padding="SAME")), "no layer may follow"),
      (stax.serial(conv(), dg(), stax.Relu()), "no layer may follow"),
      (stax.serial(conv(), stax.FanOut(2), stax.parallel(dg(), stax.Identity())),
       "every output of the network")):
    with pytest.raises(ValueError, match=match):
      net[2](x1, x1 + 1.0, "nngp", **diag)
    assert jax.tree.leaves(net[2](x1, x1 + 1.0, "nngp", diagonal_spatial=False))  # works
  assert stax.serial(conv(), dg())[2](x1, None, "nngp", **diag).shape == (4, 5, 6)
  per_example = stax.DotGeneral(rhs=_O(3, 4), dimension_numbers=(((), ()), ((0,), (0,))))
  with pytest.raises(ValueError, match="must each have 3 examples \\(got 3 and 2\\)"):
    stax.serial(conv(), per_example)[2](x1, x1[:2], "nngp", diagonal_batch=False)
