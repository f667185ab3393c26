"""Empirical NTK: every implementation against a brute-force Jacobian contraction (float64)."""

import chex
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtheory.nn as jn
from jaxtheory.kernels import empirical as E
from jaxtheory.kernels import structured
from jaxtheory.nn.flax import from_linen

IMPLS = ("jacobian", "ntvp", "structured")
TOL = dict(atol=1e-6, rtol=1e-6)


def _brute(f, params, x1, x2, trace_axes=(-1,), diagonal_axes=()):
  """Full ``jax.jacobian`` of the batch, contracted, then NT's trace / diagonal."""
  jac = jax.jit(jax.jacobian(f))  # one compile instead of hundreds of eager op dispatches
  J1, J2 = jac(params, x1), jac(params, x2)
  out1, out2 = f(params, x1), f(params, x2)
  d = out1.ndim
  K = sum(jnp.tensordot(a.reshape(out1.shape + (-1,)), b.reshape(out2.shape + (-1,)),
                        axes=((d,), (d,)))
          for a, b in zip(jax.tree.leaves(J1), jax.tree.leaves(J2)))  # (*out1, *out2)
  K = np.asarray(K)
  trace = sorted({a % d for a in trace_axes})
  diag = sorted({a % d for a in diagonal_axes})
  letters = "abcdefghijklmnopqrstuvw"
  s1, s2, out = [], [], []
  for i in range(d):
    a, b = letters[2 * i], letters[2 * i + 1]
    s1.append(a)
    s2.append(a if i in trace + diag else b)
    out += [] if i in trace else [a] if i in diag else [a, b]
  K = np.einsum(f"{''.join(s1)}{''.join(s2)}->{''.join(out)}", K)
  return K / np.prod([out1.shape[a] for a in trace])


def _inputs(n1, n2, shape, key=0):
  k1, k2 = jax.random.split(jax.random.key(key))
  return (jax.random.normal(k1, (n1, *shape)), jax.random.normal(k2, (n2, *shape)))


def _check_all(f, params, x1, x2, impls=IMPLS, **kw):
  ref = _brute(f, params, x1, x2, **kw)
  for impl in impls:
    K = jax.jit(lambda p, a, b: E.empirical_ntk(f, p, a, b, implementation=impl, **kw))(
        params, x1, x2)
    chex.assert_shape(K, ref.shape)
    np.testing.assert_allclose(K, ref, **TOL, err_msg=impl)


@pytest.mark.parametrize("parametrization", ["sp", "ntk"])
def test_mlp_all_implementations_match_brute_force(parametrization, x64):
  m = jn.mlp((3,), 6, 2, 2, activation=jn.tanh, b_std=0.3)
  ctx = jn.Ctx(parametrization)
  p = m.init(jax.random.key(0), ctx)
  x1, x2 = _inputs(3, 2, (3,))
  _check_all(lambda p, x: m.apply(p, x, ctx), p, x1, x2, trace_axes=())


@pytest.mark.parametrize("trace_axes,diagonal_axes,shape", [
    ((-1,), (), (4, 4)), ((), (), (4, 4, 3, 3)), ((), (0,), (4, 3, 3)),
    ((), (-1,), (4, 4, 3)), ((0,), (), (3, 3)), ((-1,), (0,), (4,)),
    ((0, 1), (), ()), ((1,), (0,), (4,))])
def test_trace_and_diagonal_axes_follow_nt(trace_axes, diagonal_axes, shape, x64):
  m = jn.mlp((5,), 10, 1, 3, b_std=0.1)
  p = m.init(jax.random.key(1))
  f = lambda p, x: m.apply(p, x)
  x1, _ = _inputs(4, 4, (5,))
  x2 = x1 + 0.1
  ref = _brute(f, p, x1, x2, trace_axes, diagonal_axes)
  assert ref.shape == shape
  for impl in IMPLS:
    K = E.empirical_ntk(f, p, x1, x2, implementation=impl, trace_axes=trace_axes,
                        diagonal_axes=diagonal_axes)
    np.testing.assert_allclose(K, ref, **TOL, err_msg=impl)
  # Traced axes are averaged, not summed (NT's convention).
  full = E.empirical_ntk(f, p, x1, x2, trace_axes=())
  np.testing.assert_allclose(E.empirical_ntk(f, p, x1, x2),
                             jnp.einsum("ijkk->ij", full) / 3, **TOL)


def test_cnn_matches_brute_force(x64):
  m = jn.cnn((4, 4, 2), 3, 2, 2, b_std=0.2)
  p = m.init(jax.random.key(2))
  x1, x2 = _inputs(3, 2, (4, 4, 2))
  _check_all(lambda p, x: m.apply(p, x), p, x1, x2)


def test_transformer_matches_brute_force(x64):
  m = jn.transformer(vocab_size=5, seq_len=3, width=4, depth=1, num_heads=2, out_dim=2,
                     mlp_ratio=2)
  p = m.init(jax.random.key(3))
  x1 = jax.random.randint(jax.random.key(4), (3, 3), 0, 5)
  x2 = jax.random.randint(jax.random.key(5), (2, 3), 0, 5)
  # ntvp needs no jaxpr analysis; it is checked on the MLP, CNN and wrappers.
  _check_all(lambda p, x: m.apply(p, x), p, x1, x2, ("jacobian", "structured"),
             trace_axes=())


class _LinenNet(linen.Module):

  @linen.compact
  def __call__(self, x):
    x = linen.Conv(3, (3,), padding="SAME")(x[..., None])
    x = jax.nn.gelu(x).reshape(x.shape[0], -1)
    x = linen.LayerNorm()(linen.Dense(6)(x))
    return linen.Dense(2)(jnp.tanh(x))


def test_flax_linen_module_and_wrapped_model(x64):
  module = _LinenNet()
  x1, x2 = _inputs(3, 2, (4,))
  variables = module.init(jax.random.key(6), x1)
  _check_all(module.apply, variables, x1, x2, ("jacobian", "structured"), trace_axes=())
  m = from_linen(module, (4,))
  p = m.init(jax.random.key(6))
  np.testing.assert_allclose(E.empirical_ntk(lambda p, x: m.apply(p, x), p, x1, x2),
                             _brute(module.apply, variables, x1, x2), **TOL)


def test_structured_uses_gram_form_for_dense_layers(x64):
  """The interpreter finds every dense weight; biases fall back to Jacobians."""
  m = jn.mlp((5,), 8, 2, 1, b_std=0.1)
  p = m.init(jax.random.key(0), jn.Ctx("ntk"))
  g = lambda p, u: m.apply(p, u[None], jn.Ctx("ntk"))[0]
  x = jnp.ones((6, 5))
  side = structured._trace_side(g, p, x)
  leaves = jax.tree_util.tree_flatten_with_path(p)[0]
  names = {jax.tree_util.keystr(leaves[i][0]) for i in side.sites}
  assert names == {"[0]['W']", "[2]['W']", "[4]['W']"}
  plan = structured._plan(side, side, 6, 6, structured._Layout("free", False, ("trace",), 1))
  assert set(plan.values()) == {"gram"}


def test_x2_none_equals_x1(x64):
  m = jn.mlp((3,), 6, 1, 2, b_std=0.1)
  p = m.init(jax.random.key(0))
  f = lambda p, x: m.apply(p, x)
  x1, _ = _inputs(3, 1, (3,))
  for impl in IMPLS:
    np.testing.assert_allclose(E.empirical_ntk(f, p, x1, implementation=impl),
                               E.empirical_ntk(f, p, x1, x1, implementation=impl), **TOL)


@pytest.mark.parametrize("impl,kw", [
    ("jacobian", dict(trace_axes=())), ("ntvp", dict()),
    ("structured", dict()), ("structured", dict(diagonal_axes=(0,)))])
def test_batch_size_blocks_equal_unbatched(impl, kw, x64):
  m = jn.mlp((3,), 6, 1, 2, b_std=0.1)
  p = m.init(jax.random.key(7))
  f = lambda p, x: m.apply(p, x)
  x1, x2 = _inputs(5, 3, (3,))
  x2 = x1 if "diagonal_axes" in kw else x2  # 5 = 2 + 2 + 1: a ragged last block
  ref = E.empirical_ntk(f, p, x1, x2, implementation=impl, **kw)
  K = E.empirical_ntk(f, p, x1, x2, implementation=impl, batch_size=2, **kw)
  np.testing.assert_allclose(K, ref, **TOL)


def test_vmap_over_stacked_params_equals_loop(x64):
  m = jn.mlp((3,), 6, 1, 2, b_std=0.1)
  ctx = jn.Ctx("ntk")
  stacked = jax.vmap(lambda k: m.init(k, ctx))(jax.random.split(jax.random.key(0), 3))
  f = lambda p, x: m.apply(p, x, ctx)
  x1, x2 = _inputs(3, 2, (3,))
  for impl, bs in (("jacobian", None), ("ntvp", None), ("structured", 2)):
    K = jax.vmap(lambda p: E.empirical_ntk(f, p, x1, x2, implementation=impl,
                                           batch_size=bs))(stacked)
    loop = [E.empirical_ntk(f, jax.tree.map(lambda a: a[i], stacked), x1, x2,
                            implementation=impl) for i in range(3)]
    np.testing.assert_allclose(K, np.stack(loop), **TOL, err_msg=impl)


@pytest.mark.parametrize("build", [
    lambda w: jn.mlp((3,), w, 2, 2, b_std=0.2),
    lambda w: jn.cnn((3, 3, 2), w, 1, 2, b_std=0.2),
])
def test_padded_width_equals_unpadded_model(build, x64):
  """Sweep layout: parameters of several widths stacked at one capacity, vmapped."""
  widths = (3, 5)
  big = build(8)
  x1, x2 = _inputs(3, 2, big.input_shape)

  def ntk(w, key):
    ctx = jn.Ctx("ntk", width=w)
    p = big.init(key, ctx)
    return E.empirical_ntk(lambda p, x: big.apply(p, x, ctx), p, x1, x2, trace_axes=())

  keys = jax.random.split(jax.random.key(0), len(widths))
  K = jax.jit(jax.vmap(ntk))(jnp.array(widths), keys)  # as a sweep runs it
  for i, w in enumerate(widths):
    small = build(w)
    ps = small.init(keys[i], jn.Ctx("ntk"))
    ref = E.empirical_ntk(lambda p, x: small.apply(p, x, jn.Ctx("ntk")), ps, x1, x2,
                          trace_axes=())
    np.testing.assert_allclose(K[i], ref, **TOL)


def test_nt_compatible_wrappers(x64):
  m = jn.mlp((3,), 6, 1, 2, b_std=0.1)
  p = m.init(jax.random.key(0))
  f = lambda p, x, scale=1.0: m.apply(p, x) * scale
  x1, x2 = _inputs(3, 2, (3,))
  ref = _brute(f, p, x1, x2, trace_axes=())
  for impl, vmap_axes in ((0, None), (1, 0), (2, None), (3, 0), ("STRUCTURED", None)):
    ntk_fn = E.empirical_ntk_fn(f, trace_axes=(), vmap_axes=vmap_axes,
                                implementation=impl)
    np.testing.assert_allclose(ntk_fn(x1, x2, p), ref, **TOL)
  # Keyword arguments: shared, or split as (for x1, for x2).
  ntk_fn = E.empirical_ntk_fn(f, trace_axes=(), vmap_axes=0)
  np.testing.assert_allclose(ntk_fn(x1, x2, p, scale=2.0), 4 * ref, **TOL)
  np.testing.assert_allclose(ntk_fn(x1, x2, p, scale=(2.0, 3.0)), 6 * ref, **TOL)
  # Pytree outputs: one kernel per output.
  two = lambda p, x: {"a": m.apply(p, x), "b": 2 * m.apply(p, x)}
  out = E.empirical_ntk_fn(two, vmap_axes=0)(x1, x2, p)
  np.testing.assert_allclose(out["b"], 4 * out["a"], **TOL)
  np.testing.assert_allclose(out["a"], _brute(f, p, x1, x2), **TOL)
  # NNGP: outputs' inner product, averaged over the traced axis.
  nngp = E.empirical_nngp_fn(f)(x1, x2, p)
  np.testing.assert_allclose(nngp, f(p, x1) @ f(p, x2).T / 2, **TOL)
  nngp = E.empirical_nngp_fn(f, trace_axes=(), diagonal_axes=(0,))(x1, None, p)
  np.testing.assert_allclose(nngp, jnp.einsum("ik,il->ikl", f(p, x1), f(p, x1)), **TOL)


def test_vmap_axes_none_handles_batch_coupling(x64):
  """Without the independence assumption, cross-example terms are kept."""
  m = jn.mlp((3,), 6, 1, 2)
  p = m.init(jax.random.key(0))
  f = lambda p, x: m.apply(p, x) - jnp.mean(m.apply(p, x), 0, keepdims=True)  # couples the batch
  x1, x2 = _inputs(3, 2, (3,))
  ref = _brute(f, p, x1, x2)
  for impl in ("jacobian", "ntvp", "structured"):
    K = E.empirical_ntk(f, p, x1, x2, implementation=impl, vmap_axes=None)
    np.testing.assert_allclose(K, ref, **TOL)


def test_bad_input_errors():
  m = jn.mlp((3,), 4, 1, 1)
  p = m.init(jax.random.key(0))
  f = lambda p, x: m.apply(p, x)
  x = jnp.ones((2, 3))
  with pytest.raises(ValueError, match="unknown implementation 'fast'"):
    E.empirical_ntk(f, p, x, implementation="fast")
  with pytest.raises(ValueError, match="unknown implementation 7"):
    E.empirical_ntk_fn(f, implementation=7)
  with pytest.raises(ValueError, match="same per-example shape"):
    E.empirical_ntk(f, p, x, jnp.ones((2, 4)))
  with pytest.raises(ValueError, match="different dtypes"):
    E.empirical_ntk(f, p, x, jnp.ones((2, 3), jnp.int32))
  with pytest.raises(ValueError, match="overlap"):
    E.empirical_ntk(f, p, x, trace_axes=(-1,), diagonal_axes=(1,))
  with pytest.raises(ValueError, match="out of range"):
    E.empirical_ntk(f, p, x, trace_axes=(2,))
  with pytest.raises(ValueError, match="differ on traced/diagonal axis 0: 2 != 3"):
    E.empirical_ntk(f, p, x, jnp.ones((3, 3)), diagonal_axes=(0,))
  with pytest.raises(ValueError, match="batch_size must be a positive integer"):
    E.empirical_ntk(f, p, x, batch_size=0)
  with pytest.raises(ValueError, match="leading batch axis of size 2"):
    E.empirical_ntk(lambda p, x: f(p, x).sum(), p, x)


@pytest.mark.parametrize("impl", ["jacobian", "ntvp", "structured"])
def test_param_weights_give_the_learning_rate_weighted_kernel(impl):
  """``param_weights`` w: sum_p w_p J_p J_p^T, checked leaf by leaf against brute force."""
  with jax.enable_x64(True):
    m = jn.mlp((3,), 6, 2, 2, b_std=0.1)
    ctx = jn.Ctx("ntk")
    params = m.init(jax.random.key(0), ctx)
    x1 = jax.random.normal(jax.random.key(1), (4, 3))
    x2 = jax.random.normal(jax.random.key(2), (3, 3))
    f = lambda p, x: m.apply(p, x, ctx)
    leaves, treedef = jax.tree.flatten(params)
    ws = [float(i % 3) for i in range(len(leaves))]  # includes 0 (a frozen leaf)
    J1 = jax.jacobian(f)(params, x1)
    J2 = jax.jacobian(f)(params, x2)
    want = sum(w * np.einsum("akp,bkp->ab", a.reshape(a.shape[:2] + (-1,)),
                             b.reshape(b.shape[:2] + (-1,))) / 2
               for w, a, b in zip(ws, jax.tree.leaves(J1), jax.tree.leaves(J2)))
    got = E.empirical_ntk(
        f, params, x1, x2, implementation=impl,
        param_weights=jax.tree.unflatten(treedef, ws))
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="tree structure of params"):
      E.empirical_ntk(f, params, x1, param_weights=[1.0])


def _dropout_net(rate=0.5):
  from jaxtheory import stax
  return stax.serial(stax.Dense(64), stax.Relu(), stax.Dropout(rate), stax.Dense(3))


@pytest.mark.parametrize("typed", [False, True])
def test_rng_of_distinct_inputs_is_split_as_nt(typed):
  # An `rng` keyword (dropout) gives x1 the key and a distinct x2 `fold_in(key, 1)`; inputs
  # equal to x1 (even as another array) get the same key, as x2=None does.
  init_fn, apply_fn, _ = _dropout_net()
  x1 = jax.random.normal(jax.random.key(0), (3, 5))
  x2 = jax.random.normal(jax.random.key(1), (2, 5))
  _, params = init_fn(jax.random.key(2), x1.shape)
  key = jax.random.key(3) if typed else jax.random.PRNGKey(3)
  kernel_fn = E.empirical_kernel_fn(apply_fn)
  f1 = apply_fn(params, x1, rng=key)
  f2 = apply_fn(params, x2, rng=jax.random.fold_in(key, 1))
  np.testing.assert_allclose(kernel_fn(x1, x2, "nngp", params, rng=key), f1 @ f2.T / 3,
                             rtol=1e-6)
  ntk = E.empirical_ntk_fn(apply_fn, implementation="jacobian")
  brute = _brute(lambda p, x: apply_fn(p, x, rng=key), params, x1, x1 + 0.0)
  for x_again in (None, x1 + 0.0):
    np.testing.assert_allclose(kernel_fn(x1, x_again, "nngp", params, rng=key), f1 @ f1.T / 3,
                               rtol=1e-6)
    np.testing.assert_allclose(ntk(x1, x_again, params, rng=key), brute, rtol=1e-6)
  # Distinct inputs of x1's shape are told apart by value, under jit too; NaN padding is
  # equal to itself.
  x3 = x1.at[0, 0].add(1.0)
  keys = jax.jit(E._dropout_keys)(key, x1, x3)
  assert not np.array_equal(jax.random.key_data(keys[0]), jax.random.key_data(keys[1]))
  nan = x1.at[0, 0].set(jnp.nan)
  keys = jax.jit(E._dropout_keys)(key, nan, nan + 0.0)
  np.testing.assert_array_equal(jax.random.key_data(keys[0]), jax.random.key_data(keys[1]))
  # A pair of equal keys for distinct inputs is mended; a pair for the same inputs is unified.
  pair = E._dropout_keys((key, key), x1, x3)
  assert not np.array_equal(jax.random.key_data(pair[0]), jax.random.key_data(pair[1]))
  pair = E._dropout_keys((key, jax.random.fold_in(key, 7)), x1, x1 + 0.0)
  np.testing.assert_array_equal(jax.random.key_data(pair[0]), jax.random.key_data(pair[1]))


def test_monte_carlo_ntk_with_dropout_matches_analytic_across_inputs():
  # Distinct x1 and x2 draw independent dropout masks, so the Monte Carlo cross-kernel
  # converges to the analytic one, which dropout leaves unchanged off the diagonal. With one
  # shared mask it would be about 1/rate = 5 times too large.
  from jaxtheory import nt
  init_fn, apply_fn, kernel_fn = _dropout_net(0.2)
  x1 = jax.random.normal(jax.random.key(0), (3, 5))
  x2 = jax.random.normal(jax.random.key(1), (2, 5))
  mc = nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(4), 96, vmap_axes=0)
  exact = kernel_fn(x1, x2, "ntk")
  err = jnp.linalg.norm(mc(x1, x2, "ntk") - exact) / jnp.linalg.norm(exact)
  assert err < 0.2, float(err)
