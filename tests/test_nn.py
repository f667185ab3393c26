"""Tests for jaxtheory.nn: padded == unpadded, init scales, bad input.

The central invariance (ARCHITECTURE.md, "Padded widths"): a network built at a
capacity ``BIG`` and run at active width ``SMALL`` by ``Ctx(p, width=SMALL)``
computes exactly what the network built at ``SMALL`` computes -- outputs,
gradients and parameters after 100 optimizer steps -- and its padded
parameters are exactly zero at init and stay zero.

Runtime: every distinct weight shape costs a compile of its random draws
(about half a second on CPU), so sizes reuse ``SMALL`` and ``BIG`` wherever a
size is free (input features, readout size, vocabulary, sequence length).
"""

from collections.abc import Callable
import re
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtheory import nn

PARAMS = nn.PARAMETRIZATIONS
SMALL, BIG = 6, 10  # active width and capacity: one bucket (BIG < 2 SMALL); multiples of HEADS
HEADS = 2
D_IN = BIG  # input features (and conv input channels)
D_OUT = SMALL  # readout size
VOCAB = SEQ = BIG  # token vocabulary and sequence length
BATCH = 4
TOL64, TOL32 = 1e-10, 1e-5


# ----------------------------------------------------------------------------
# Comparing a padded tree with an unpadded one.


def _block_rows(n_active, n_capacity, repeats=1, extra=0):
  """Active indices of an axis laid out as ``repeats`` blocks of ``n_capacity`` features.

  The first ``n_active`` features of each block are active; ``extra`` always
  active features follow (a fixed-size branch of a concatenation).
  """
  block = np.arange(n_capacity) < n_active
  return np.flatnonzero(np.concatenate([np.tile(block, repeats), np.ones(extra, bool)]))


def assert_padded_equals(big, small, atol, rows=None):
  """Asserts that ``big`` (padded) restricted to its active entries equals ``small``.

  Every leaf's active block is the leading corner of the shape of the
  corresponding ``small`` leaf, except that ``rows`` may give, per leaf path
  (``jax.tree_util.keystr``), the active indices of axis 0 for layouts where
  active features are not a prefix (after ``flatten`` or ``fan_in_concat``).
  Every entry of ``big`` outside the active block must be exactly zero.

  Args:
    big: a pytree of arrays from the network built at the capacity.
    small: the same pytree from the network built at the active width.
    atol: the largest allowed absolute difference on the active block.
    rows: optional ``{path: indices}`` for non-prefix layouts of axis 0.
  """
  rows = rows or {}
  assert jax.tree.structure(big) == jax.tree.structure(small)
  padded_somewhere = False
  for (path, b), s in zip(jax.tree_util.tree_leaves_with_path(big), jax.tree.leaves(small)):
    name = jax.tree_util.keystr(path)
    b, s = np.asarray(b), np.asarray(s)
    assert b.dtype == s.dtype, name
    assert b.ndim == s.ndim, name
    idx = [np.arange(n) for n in s.shape]
    if name in rows:
      idx[0] = rows[name]
    assert all(len(i) == n for i, n in zip(idx, s.shape)), name
    block = np.ix_(*idx)
    np.testing.assert_allclose(b[block], s, rtol=0, atol=atol, err_msg=name)
    outside = b.copy()
    outside[block] = 0
    assert not np.any(outside), f"{name}: padded entries are not exactly zero"
    padded_somewhere |= b.shape != s.shape
  assert padded_somewhere, "nothing was padded: the test would be vacuous"


def test_padded_comparison_can_fail():
  """The checker rejects a wrong active block, a non-zero padded entry, no padding."""
  small = {"W": jnp.ones((2, 3))}
  big = {"W": jnp.zeros((4, 5)).at[:2, :3].set(1.0)}
  assert_padded_equals(big, small, 0.0)
  with pytest.raises(AssertionError):
    assert_padded_equals({"W": big["W"].at[1, 2].add(1e-3)}, small, 1e-4)
  with pytest.raises(AssertionError, match="not exactly zero"):
    assert_padded_equals({"W": big["W"].at[3, 4].set(1e-30)}, small, 0.0)
  with pytest.raises(AssertionError, match="nothing was padded"):
    assert_padded_equals(small, small, 0.0)
  rows = {"['W']": np.array([0, 2])}  # active rows 0 and 2, not a prefix
  assert_padded_equals({"W": big["W"].at[1].set(0.0).at[2, :3].set(1.0)}, small, 0.0, rows)
  with pytest.raises(AssertionError):
    assert_padded_equals(big, small, 0.0, rows)


# ----------------------------------------------------------------------------
# One network per layer type: a wide input layer, the layer(s) under test, a readout.


class Case(NamedTuple):
  """A network family: ``build(width)`` at any width, one input shape.

  Attributes:
    build: width -> root layer (hidden widths marked with ``width_mult``).
    input_shape: the shape of one example.
    int_inputs: inputs are token ids in ``[0, VOCAB)``.
    rows: ``(w, W) -> {path: active indices of axis 0}`` for non-prefix layouts.
  """
  build: Callable[[int], nn.Layer]
  input_shape: tuple[int, ...]
  int_inputs: bool = False
  rows: Callable[[int, int], dict] | None = None


def _mlp_with(act: Callable[[], nn.Layer], b_std=0.1) -> Case:
  return Case(lambda W: nn.serial(
      nn.dense(W, b_std=b_std, width_mult=1), act(),
      nn.dense(W, b_std=b_std, width_mult=1), act(),
      nn.dense(D_OUT, b_std=b_std)), (D_IN,))


def _conv(filter_shape, spatial):
  # SAME, VALID with stride 2 and SAME with stride 2, then global average pooling.
  stride = (2,) * len(filter_shape)
  return Case(lambda W: nn.serial(
      nn.conv(W, filter_shape, padding="SAME", b_std=0.1, width_mult=1), nn.relu(),
      nn.conv(W, filter_shape, strides=stride, padding="VALID", b_std=0.1, width_mult=1),
      nn.tanh(),
      nn.conv(W, filter_shape, strides=stride, padding="SAME", width_mult=1), nn.relu(),
      nn.global_avg_pool(), nn.dense(D_OUT, b_std=0.1)), (*spatial, D_IN))


def _layer_norm(affine):
  return Case(lambda W: nn.serial(
      nn.dense(W, b_std=0.1, width_mult=1), nn.layer_norm(affine=affine),
      nn.dense(W, width_mult=1), nn.relu(), nn.layer_norm(affine=affine),
      nn.dense(D_OUT, b_std=0.1)), (D_IN,))


ACTIVATIONS = {
    "relu": nn.relu,
    "ab_relu": lambda: nn.ab_relu(-0.5, 2.0),
    "leaky_relu": lambda: nn.leaky_relu(0.1),
    "erf": lambda: nn.erf(2.0, 0.5, 0.3),  # erf(0) + 0.3 != 0: masking matters
    "tanh": nn.tanh,
    "gelu": nn.gelu,
    "gelu_tanh": lambda: nn.gelu(approximate=True),
    "sigmoid": nn.sigmoid,  # sigmoid(0) != 0
    "sin": lambda: nn.sin(1.0, 2.0, 0.5),  # sin(0.5) != 0
    "identity": nn.identity,
    "user_cos": lambda: nn.elementwise(jnp.cos),  # cos(0) != 0
}

CASES = {
    "dense_bias": _mlp_with(nn.erf),
    "dense_nobias": _mlp_with(nn.erf, b_std=None),
    **{f"act_{k}": _mlp_with(a) for k, a in ACTIVATIONS.items()},
    "conv1d": _conv((3,), (9,)),
    "conv2d": _conv((3, 3), (7, 6)),
    # 9 positions -> SAME -> 9 -> VALID stride 2 -> 4 positions of W channels.
    "flatten": Case(lambda W: nn.serial(
        nn.conv(W, (3,), padding="SAME", b_std=0.1, width_mult=1), nn.relu(),
        nn.conv(W, (3,), strides=(2,), width_mult=1), nn.relu(), nn.flatten(),
        nn.dense(W, b_std=0.1, width_mult=1), nn.relu(), nn.dense(D_OUT)), (9, D_IN),
        rows=lambda w, W: {"[5]['W']": _block_rows(w, W, repeats=4)}),
    "avg_pool": Case(lambda W: nn.serial(
        nn.conv(W, (3,), padding="SAME", b_std=0.1, width_mult=1), nn.sigmoid(),
        nn.avg_pool((2,)), nn.conv(W, (3,), width_mult=1), nn.relu(),
        nn.avg_pool((2,), strides=(1,), padding="SAME"), nn.global_avg_pool(),
        nn.dense(D_OUT)), (9, D_IN)),
    "global_avg_pool": Case(lambda W: nn.serial(
        nn.conv(W, (3,), padding="SAME", b_std=0.1, width_mult=1), nn.sigmoid(),
        nn.global_avg_pool(), nn.dense(W, b_std=0.1, width_mult=1), nn.relu(),
        nn.dense(D_OUT, b_std=0.1)), (9, D_IN)),
    "layer_norm": _layer_norm(False),
    "layer_norm_affine": _layer_norm(True),
    "embedding": Case(lambda W: nn.serial(
        nn.embedding(VOCAB, W, width_mult=1), nn.positional_embedding(),
        nn.dense(W, b_std=0.1, width_mult=1), nn.tanh(), nn.global_avg_pool(),
        nn.dense(D_OUT, b_std=0.1)), (SEQ,), int_inputs=True),
    "attention": Case(lambda W: nn.serial(
        nn.embedding(VOCAB, W, width_mult=1), nn.positional_embedding(),
        nn.causal_self_attention(HEADS), nn.layer_norm(affine=True),
        nn.causal_self_attention(HEADS), nn.take_last(), nn.dense(D_OUT, b_std=0.1)),
        (SEQ,), int_inputs=True),
    "residual": Case(lambda W: nn.serial(
        nn.dense(W, b_std=0.1, width_mult=1),
        nn.residual(nn.layer_norm(), nn.dense(W, b_std=0.1, width_mult=1), nn.gelu(),
                    nn.dense(W, width_mult=1)),
        nn.sigmoid(), nn.dense(D_OUT, b_std=0.1)), (D_IN,)),
    # A wide, a wide and a fixed-size branch: the concatenation's active features
    # are not a prefix, so the dense layer reading it has active rows in 3 blocks.
    "concat": Case(lambda W: nn.serial(
        nn.dense(W, b_std=0.1, width_mult=1), nn.relu(), nn.fan_out(3),
        nn.parallel(nn.dense(W, b_std=0.1, width_mult=1),
                    nn.serial(nn.dense(W, width_mult=1), nn.tanh()),
                    nn.dense(D_OUT)),
        nn.fan_in_concat(), nn.dense(W, b_std=0.1, width_mult=1), nn.relu(),
        nn.dense(D_OUT, b_std=0.1)),
        (D_IN,), rows=lambda w, W: {"[5]['W']": _block_rows(w, W, repeats=2, extra=D_OUT)}),
    "fan_in_sum": Case(lambda W: nn.serial(
        nn.dense(W, b_std=0.1, width_mult=1), nn.fan_out(2),
        nn.parallel(nn.dense(W, width_mult=1),
                    nn.serial(nn.sigmoid(), nn.dense(W, b_std=0.1, width_mult=1))),
        nn.fan_in_sum(), nn.relu(), nn.dense(D_OUT, b_std=0.1)), (D_IN,)),
}


def _data(input_shape, int_inputs, batch):
  """Inputs (token ids or normals) and regression targets of size ``D_OUT``."""
  kx, kt = jax.random.split(jax.random.key(1))
  if int_inputs:
    x = jax.random.randint(kx, (batch, *input_shape), 0, VOCAB)
  else:
    x = jax.random.normal(kx, (batch, *input_shape), jnp.result_type(float))
  return x, jax.random.normal(kt, (batch, D_OUT), jnp.result_type(float))


def _mse(y, t):
  return 0.5 * jnp.mean((y - t) ** 2)


def _init_apply_grad(m, ctx, x, t):
  # Eager on purpose: each op compiles once per shape and then serves every case
  # and parametrization; a jit per case and parametrization is several times slower.
  params = m.init(jax.random.key(0), ctx)
  grads = jax.grad(lambda q: _mse(m.apply(q, x, ctx), t))(params)
  return params, m.apply(params, x, ctx), grads


def _check_case(case: Case, p: str, atol: float, dtype):
  small = nn.model(case.build(SMALL), case.input_shape)
  big = nn.model(case.build(BIG), case.input_shape)
  x, t = _data(case.input_shape, case.int_inputs, BATCH)
  ps, ys, gs = _init_apply_grad(small, nn.Ctx(p), x, t)
  pb, yb, gb = _init_apply_grad(big, nn.Ctx(p, width=jnp.asarray(SMALL)), x, t)
  rows = case.rows(SMALL, BIG) if case.rows else None
  assert ys.dtype == dtype
  chex.assert_tree_all_finite((ys, gs))
  np.testing.assert_allclose(yb, ys, rtol=0, atol=atol)
  assert_padded_equals(pb, ps, atol, rows)
  assert_padded_equals(gb, gs, atol, rows)
  # Gradients must be non-trivial, or "equal gradients" proves little.
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(gs)) > 1e-3


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("p", PARAMS)
def test_padded_equals_unpadded_float64(x64, name, p):
  _check_case(CASES[name], p, TOL64, jnp.float64)


@pytest.mark.parametrize("p", PARAMS)
def test_padded_equals_unpadded_float32(p):
  _check_case(CASES["concat"], p, TOL32, jnp.float32)


# ----------------------------------------------------------------------------
# Model constructors: parameters after 100 optimizer steps agree.


# name -> (build(width), integer inputs, rows(w, W) for non-prefix layouts)
MODELS = {
    "mlp": (lambda W: nn.mlp((D_IN,), W, depth=2, out_dim=D_OUT, activation=nn.tanh,
                             b_std=0.1), False, None),
    "deep_linear": (lambda W: nn.deep_linear(D_IN, W, depth=3, out_dim=D_OUT), False, None),
    "random_features": (lambda W: nn.random_features((D_IN,), W, D_OUT, b_std=0.1),
                        False, None),
    "fourier_mlp": (lambda W: nn.fourier_mlp(2, W, depth=2, out_dim=D_OUT,
                                             num_fourier=D_IN // 2, fourier_scale=1.0),
                    False, None),
    "cnn": (lambda W: nn.cnn((9, D_IN), W, depth=2, out_dim=D_OUT, filter_shape=(3,),
                             b_std=0.1), False, None),
    # serial(conv, act, conv, act, flatten, dense): the readout reads 9 blocks of W channels.
    "cnn_flatten": (lambda W: nn.cnn((9, D_IN), W, depth=2, out_dim=D_OUT, filter_shape=(3,),
                                     pool="flatten", b_std=0.1),
                    False, lambda w, W: {"[5]['W']": _block_rows(w, W, repeats=9)}),
    "transformer": (lambda W: nn.transformer(VOCAB, SEQ, W, depth=1, num_heads=HEADS,
                                             out_dim=D_OUT, mlp_ratio=2), True, None),
    "token_mlp": (lambda W: nn.token_mlp(VOCAB, SEQ, 4, W, D_OUT), True, None),
}

# name -> (optimizer, the LRScale field that scales its updates)
OPTIMIZERS = {
    "sgd": (lambda: optax.sgd(0.05), "sgd"),
    "momentum": (lambda: optax.sgd(0.02, momentum=0.9), "sgd"),
    "adam": (lambda: optax.adam(0.01), "adam"),
    "adamw": (lambda: optax.adamw(0.01, weight_decay=0.1), "adam"),
}


def _training_runs():
  """(model, parametrization, optimizer): every (parametrization, optimizer) pair once.

  Each model gets 2-3 distinct parametrizations and optimizers. The full
  product would compile 112 training loops, minutes on a CPU.
  """
  models, opts = list(MODELS), list(OPTIMIZERS)
  return [(models[k % len(models)], PARAMS[k % 4], opts[(k // 4 + k) % 4]) for k in range(16)]


def test_training_runs_cover_every_pair():
  runs = _training_runs()
  assert {(p, o) for _, p, o in runs} == {(p, o) for p in PARAMS for o in OPTIMIZERS}
  assert {m for m, _, _ in runs} == set(MODELS)


def train(model, ctx, opt, which, params, scales, x, t, steps=100):
  """``steps`` full-batch steps of ``opt`` on the MSE of ``model``, from ``params``.

  Each update is multiplied by the parametrization's per-parameter learning
  rate multiplier (the ``which`` field of every :class:`nn.LRScale`).
  """
  scale = jax.tree.map(lambda s: getattr(s, which), scales,
                       is_leaf=lambda s: isinstance(s, nn.LRScale))
  loss = lambda q: _mse(model.apply(q, x, ctx), t)

  def step(_, state):
    q, s = state
    u, s = opt.update(jax.grad(loss)(q), s, q)
    u = jax.tree.map(lambda a, c: a * c, u, scale)
    return optax.apply_updates(q, u), s

  return jax.lax.fori_loop(0, steps, step, (params, opt.init(params)))[0]


def _check_training(name, p, opt_name, atol):
  build, int_inputs, rows_fn = MODELS[name]
  make, which = OPTIMIZERS[opt_name]
  small, big = build(SMALL), build(BIG)
  x, t = _data(small.input_shape, int_inputs, 8)
  init_s, scales_s = small.init_with_lr_scale(jax.random.key(0), nn.Ctx(p))
  init_b, scales_b = big.init_with_lr_scale(jax.random.key(0),
                                            nn.Ctx(p, width=jnp.asarray(SMALL)))

  @jax.jit
  def run(ps, ss, pb, sb, w):  # the active width is traced, as in a sweep
    return (train(small, nn.Ctx(p), make(), which, ps, ss, x, t),
            train(big, nn.Ctx(p, width=w), make(), which, pb, sb, x, t))

  trained_s, trained_b = run(init_s, scales_s, init_b, scales_b, SMALL)
  rows = rows_fn(SMALL, BIG) if rows_fn else None
  chex.assert_tree_all_finite(trained_s)
  moved = max(float(jnp.max(jnp.abs(a - b)))
              for a, b in zip(jax.tree.leaves(trained_s), jax.tree.leaves(init_s)))
  assert moved > 1e-2, "training did not move the parameters"
  assert_padded_equals(init_b, init_s, atol, rows)
  assert_padded_equals(trained_b, trained_s, atol, rows)


@pytest.mark.parametrize("name,p,opt", _training_runs())
def test_trained_padded_equals_unpadded_float64(x64, name, p, opt):
  _check_training(name, p, opt, TOL64)


@pytest.mark.parametrize("name,p,opt", [("mlp", "mup", "adam")])
def test_trained_padded_equals_unpadded_float32(name, p, opt):
  _check_training(name, p, opt, TOL32)


# ----------------------------------------------------------------------------
# Init scales of the parametrizations.


def test_sp_dense_init_variance_uses_active_fan_in():
  W_std, fan_in, cap = 1.5, 300, 700
  _, p, _ = nn.dense(500, W_std=W_std).init(jax.random.key(0), nn.Spec((1, fan_in)),
                                            nn.Ctx("sp"))
  np.testing.assert_allclose(jnp.var(p["W"]), W_std**2 / fan_in, rtol=0.03)
  np.testing.assert_allclose(jnp.mean(p["W"]), 0.0, atol=0.01 * W_std / fan_in**0.5)
  # A layer reading a padded input of capacity ``cap`` with ``fan_in`` active
  # features: the variance comes from the active fan-in (the mask's sum).
  feat = nn.Feat(True, jnp.arange(cap) < fan_in)
  _, p, _ = nn.dense(500, W_std=W_std).init(jax.random.key(0), nn.Spec((1, cap), feat),
                                            nn.Ctx("sp", width=fan_in))
  np.testing.assert_allclose(jnp.var(p["W"][:fan_in]), W_std**2 / fan_in, rtol=0.03)
  assert not np.any(p["W"][fan_in:])


def test_ntk_stores_standard_normals_and_matches_sp_function():
  _, p, _ = nn.dense(500, W_std=1.5).init(jax.random.key(0), nn.Spec((1, 300)), nn.Ctx("ntk"))
  np.testing.assert_allclose(jnp.var(p["W"]), 1.0, rtol=0.03)
  np.testing.assert_allclose(jnp.mean(p["W"]), 0.0, atol=0.01)
  m = nn.mlp((D_IN,), BIG, depth=2, out_dim=D_OUT, W_std=1.3, b_std=0.2)
  x, _ = _data((D_IN,), False, 16)
  key = jax.random.key(0)
  p_sp, p_ntk = m.init(key, nn.Ctx("sp")), m.init(key, nn.Ctx("ntk"))
  assert float(jnp.max(jnp.abs(p_sp[2]["W"] - p_ntk[2]["W"]))) > 0.1  # stored differently
  y_sp, y_ntk = m.apply(p_sp, x, nn.Ctx("sp")), m.apply(p_ntk, x, nn.Ctx("ntk"))
  assert float(jnp.std(y_sp)) > 0.1
  np.testing.assert_allclose(y_ntk, y_sp, rtol=1e-4, atol=1e-5)


def test_readout_output_scale_shrinks_as_inverse_sqrt_width():
  """Output std at init: O(1) in SP and NTK, O(1/sqrt(n)) in muP and mf.

  So going from width 32 to 512 leaves SP's output scale alone and divides
  muP's and mf's by sqrt(512 / 32) = 4.
  """
  x = jax.random.normal(jax.random.key(1), (64, 16))

  def output_std(p, width):
    m = nn.mlp((16,), width, depth=1, out_dim=64, b_std=None)
    ys = [m.apply(m.init(jax.random.key(s), nn.Ctx(p)), x, nn.Ctx(p)) for s in range(4)]
    return float(jnp.std(jnp.stack(ys)))

  ratio = {p: output_std(p, 512) / output_std(p, 32) for p in PARAMS}
  np.testing.assert_allclose(ratio["sp"], 1.0, rtol=0.2)
  np.testing.assert_allclose(ratio["ntk"], ratio["sp"], rtol=1e-4)
  np.testing.assert_allclose(ratio["mup"] / ratio["sp"], 0.25, rtol=0.3)
  np.testing.assert_allclose(ratio["mf"] / ratio["sp"], 0.25, rtol=0.3)


# ----------------------------------------------------------------------------
# Bad input: the exact error a user gets.


def _abstract_init(m):
  # Shapes and dtypes only: these tests are about errors, not numbers.
  return jax.eval_shape(m.init, jax.random.key(0))


@pytest.mark.parametrize("out_dim", [0, -3, 2.5])
def test_dense_rejects_bad_out_dim(out_dim):
  with pytest.raises(ValueError, match=r"out_dim must be a positive integer, got " +
                     re.escape(repr(out_dim))):
    nn.dense(out_dim)


def test_ctx_rejects_unknown_parametrization():
  with pytest.raises(ValueError, match=r"unknown parametrization 'foo'; expected one of "
                     r"sp, ntk, mup, mf"):
    nn.Ctx(parametrization="foo")


def test_apply_rejects_wrong_input_shape():
  m = nn.mlp((5,), 8, depth=1, out_dim=2)
  params = jax.tree.map(jnp.zeros_like, _abstract_init(m))
  assert m.apply(params, jnp.ones((3, 5))).shape == (3, 2)
  with pytest.raises(ValueError, match=re.escape("model expects inputs of shape (batch, 5)")
                     + r" but got \(3, 4\)"):
    m.apply(params, jnp.ones((3, 4)))
  m2 = nn.cnn((6, 5, 2), 4, depth=1, out_dim=2)
  with pytest.raises(ValueError, match=re.escape("(batch, 6, 5, 2)")):
    m2.apply(_abstract_init(m2), jnp.ones((3, 6, 5)))


def test_conv_rejects_wrong_input_rank():
  with pytest.raises(ValueError, match=r"conv with a 2D filter needs inputs"):
    _abstract_init(nn.model(nn.conv(4, (3, 3)), (8, 3)))
  with pytest.raises(ValueError, match=r"conv with a 1D filter needs inputs"):
    _abstract_init(nn.model(nn.conv(4, (3,)), (8, 8, 3)))


def test_attention_rejects_width_not_multiple_of_heads():
  with pytest.raises(ValueError, match=r"d_model 10 is not a multiple of num_heads 3"):
    _abstract_init(nn.model(nn.serial(nn.embedding(VOCAB, 10), nn.causal_self_attention(3)),
                            (4,)))


@pytest.mark.parametrize("p", ["mup", "mf"])
def test_feature_learning_parametrizations_train_alike_at_every_width(p):
  """muP and mean-field with biases: the same learning rate trains widths 64 and 1024
  to nearly the same loss (a width-consistent limit); before the readout bias of mf
  kept LR 1, its LR grew with the width and width 1024 diverged."""
  from jaxtheory import data, sweep
  ds = data.teacher_student(n_train=32, n_test=8, input_dim=4, seed=0)
  s = sweep.Sweep(lambda w: nn.mlp((4,), w, 2, 1, b_std=0.5), ds, dict(width=[64, 1024]),
                  "sgd", dict(lr=0.5), steps=60, record=2, loss="mse", parametrization=p,
                  max_waste=1.0)
  loss = sweep.run(s).train_loss.isel(seed=0, step=-1).values
  assert np.isfinite(loss).all()
  np.testing.assert_allclose(loss[1], loss[0], rtol=0.35)


@pytest.mark.parametrize("layer_norm", [True, False])
def test_transformer_matches_a_reference_forward_pass(layer_norm):
  """One block, with and without layer norms, against the formulas written out; the
  last block's MLP runs on the last position only, which must not change the output."""
  V, T, D, H, out = 7, 3, 8, 2, 5
  m = nn.transformer(V, T, D, depth=1, num_heads=H, out_dim=out, mlp_ratio=2,
                     layer_norm=layer_norm)
  p = m.init(jax.random.key(0))
  leaves, tree = jax.tree.flatten(p)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  p = jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, a.shape) for k, a in zip(keys, leaves)])
  E, P = p[0]["W"], p[1]["P"]
  attn = next(leaf for leaf in jax.tree.leaves(p[2], is_leaf=lambda t: isinstance(t, dict))
              if isinstance(leaf, dict))
  mlp = [leaf for leaf in jax.tree.leaves(p[4], is_leaf=lambda t: isinstance(t, dict))
         if isinstance(leaf, dict)]
  U = p[-1]["W"]

  def ln(h):
    if not layer_norm:
      return h
    mu = h.mean(-1, keepdims=True)
    return (h - mu) / jnp.sqrt(((h - mu) ** 2).mean(-1, keepdims=True) + 1e-5)

  x = jax.random.randint(jax.random.key(2), (4, T), 0, V)
  h = E[x] + P[None]
  a = ln(h)
  q, k, v = (jnp.einsum("btd,dhe->bthe", a, attn[n]) for n in "qkv")
  s = jnp.einsum("bqhe,bkhe->bhqk", q, k) / jnp.sqrt(D // H)
  s = jnp.where(jnp.tril(jnp.ones((1, 1, T, T), bool)), s, -jnp.inf)
  o = jnp.einsum("bhqk,bkhe->bqhe", jax.nn.softmax(s, -1), v)
  h = (h + jnp.einsum("bqhe,hed->bqd", o, attn["o"]))[:, -1]
  h = h + jax.nn.relu(ln(h) @ mlp[0]["W"] + mlp[0]["b"][None]) @ mlp[1]["W"] + mlp[1]["b"][None]
  chex.assert_trees_all_close(m.apply(p, x), ln(h) @ U, rtol=1e-5, atol=1e-5)


def test_num_params_counts_every_scalar():
  m = nn.mlp((5,), 7, 2, 3)
  assert m.num_params() == (5 * 7 + 7) + (7 * 7 + 7) + (7 * 3 + 3)
  params = m.init(jax.random.key(0))
  assert m.num_params() == sum(x.size for x in jax.tree.leaves(params))
