"""Analytic kernels are differentiable: inputs, ``W_std`` and ``b_std``, forward and reverse mode.

Every closed-form nonlinearity and every pooling layer, at ``x1 != x2`` and at
``x1 = x2`` (where the duals take square roots of vanishing Gram determinants
and arc-cosines at correlation one), against central finite differences in
float64, and reverse mode against forward mode. NT's counterparts: ``AutodiffTest``
(``test_autodiff``, ``test_issue_123``) in ``tests/stax/elementwise_test.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import nn, stax


PHIS = {
    "relu": stax.Relu,
    "leaky_relu": lambda: stax.LeakyRelu(0.1),
    "ab_relu": lambda: stax.ABRelu(-0.5, 1.5),
    "abs": stax.Abs,
    "erf": lambda: stax.Erf(1.2, 0.8, 0.1),
    "gelu": stax.Gelu,
    "sin": lambda: stax.Sin(1.0, 1.5, 0.3),
    "cos": stax.Cos,
    "sign": stax.Sign,
    "exp": lambda: stax.Exp(1.0, 0.5),
    "exp_normalized": lambda: stax.ExpNormalized(1.5),
    "rbf": lambda: stax.Rbf(0.7),
    "monomial_2": lambda: stax.Monomial(2),
    "monomial_3": lambda: stax.Monomial(3),
    "rectified_monomial_0": lambda: stax.RectifiedMonomial(0),
    "rectified_monomial_1": lambda: stax.RectifiedMonomial(1),
    "rectified_monomial_2": lambda: stax.RectifiedMonomial(2),
    "numerical_cos": lambda: stax.ElementwiseNumerical(jnp.cos, 25),
}
# Smooth in (x1, x2) even where x1 = x2 is perturbed on one side only (the
# arc-cosine family has a kink there: its NTK goes like |x1 - x2|).
SMOOTH = ("erf", "gelu", "sin", "cos", "exp", "exp_normalized", "rbf", "monomial_2", "monomial_3")
GET = ("nngp", "ntk")


def _inputs(shape1=(3, 4), shape2=(2, 4)):
  x1 = jax.random.normal(jax.random.key(1), shape1)
  x2 = jax.random.normal(jax.random.key(2), shape2)
  return x1, x2


def _two_layer(phi):
  return stax.serial(stax.Dense(1, 1.5, 0.1), phi(), stax.Dense(1, 1.2, 0.1), phi(),
                     stax.Dense(1, 0.9, 0.05))[2]


def _all_finite(tree):
  return all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(tree))


def _dot(a, b):
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _check_derivatives(fn, args, tangents=None, fd=True, eps=1e-5, rtol=1e-6):
  """Forward mode against central differences, reverse mode against forward mode.

  Along random tangents ``v`` (or the given ones): ``jvp`` equals
  ``(fn(x + eps v) - fn(x - eps v)) / 2 eps`` where ``fd`` says so (a bool, or
  a pytree prefix of the output), and ``<u, jvp(v)> = <vjp(u), v>`` for a random
  cotangent ``u`` (reverse mode is the transpose of forward mode). Everything
  is one compiled program plus one for the differences. Returns the jvps.
  """
  keys = iter(jax.random.split(jax.random.key(7), 64))
  rand = lambda t: jax.tree.map(lambda a: jax.random.normal(next(keys), jnp.shape(a)), t)
  tangents = [rand(args)] if tangents is None else tangents
  u = rand(jax.eval_shape(fn, *args))

  @jax.jit
  def derivatives(args, tangents, u):
    out, lin = jax.linearize(fn, *args)
    ts = [lin(*v) for v in tangents]
    return out, ts, jax.linear_transpose(lin, *args)(u)

  out, ts, ct = derivatives(args, tangents, u)
  assert _all_finite((out, ts, ct))
  for v, t in zip(tangents, ts):
    lhs, rhs = float(_dot(u, t)), float(_dot(ct, v))
    assert abs(lhs - rhs) <= 1e-9 * (abs(lhs) + abs(rhs) + 1e-12), (lhs, rhs)
  if fd is not False:
    steps = jnp.array([eps, -eps])
    shifted = jax.jit(jax.vmap(lambda s, v: fn(*jax.tree.map(lambda a, d: a + s * d, args, v)),
                               in_axes=(0, None)))
    for v, t in zip(tangents, ts):
      pm = shifted(steps, v)
      num = jax.tree.map(lambda y: (y[0] - y[1]) / (2 * eps), pm)
      mask = jax.tree.map(lambda m, y: jax.tree.map(lambda _: m, y), fd, num) if fd is not True \
          else jax.tree.map(lambda _: True, num)
      for ours, ref, m in zip(jax.tree.leaves(t), jax.tree.leaves(num), jax.tree.leaves(mask)):
        if m:
          scale = float(jnp.max(jnp.abs(ref))) + 1e-12
          np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * scale)
  return ts


@pytest.mark.parametrize("name", list(PHIS))
def test_nonlinearity_kernel_derivatives(name, x64):
  """Each closed-form dual, two layers deep: ``x1 != x2``, ``x2 = None`` and ``x2 = x1``.

  ``x2 = x1`` is passed explicitly and moved on its own (NT's ``same_inputs=True``):
  the arc-cosine family has a kink there (its NTK goes like ``|x1 - x2|``), so only
  the smooth duals take finite differences there; all must be finite with
  reverse mode the transpose of forward mode.
  """
  kf = _two_layer(PHIS[name])
  x1, x2 = _inputs()
  fn = lambda a, b, c: (kf(a, b, GET), kf(a, None, GET), kf(a, c, GET))
  k = jax.random.split(jax.random.key(5), 3)
  v, w, z = (jax.random.normal(kk, x.shape) for kk, x in zip(k, (x1, x2, x1)))
  # Tangent 1 moves x1 and its copy alike (both sides of x2 = x1 together); tangent 2 apart.
  (t_same, t_apart) = _check_derivatives(fn, (x1, x2, x1), [(v, w, v), (v, w, z)],
                                         fd=(True, True, name in SMOOTH))
  for g in GET:  # moving both sides of (x1, x1) is moving the one input of (x1, None)
    np.testing.assert_allclose(getattr(t_same[2], g), getattr(t_same[1], g), rtol=1e-8, atol=1e-10)
  assert float(jnp.max(jnp.abs(t_apart[2].nngp - t_same[2].nngp))) > 0


@pytest.mark.parametrize("name", ["relu", "erf"])
def test_second_order_derivatives(name, x64):
  kf = _two_layer(PHIS[name])
  x1, x2 = _inputs((2, 3), (2, 3))
  v = jax.random.normal(jax.random.key(6), x1.shape)
  d = lambda a: jax.jvp(lambda a_: kf(a_, x2, GET), (a,), (v,))[1]
  _check_derivatives(d, (x1,), rtol=1e-5)


def _conv_relu_flatten():
  return stax.serial(stax.Conv(1, (3, 3)), stax.Relu(), stax.Flatten())[2]


@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_conv_relu_flatten_value_and_grad_at_x1_equal_x2(get, x64):
  """NT's issue 123: ``value_and_grad`` was all-``nan`` at ``x1 = x2``."""
  kf = _conv_relu_flatten()
  scalar = jax.jit(lambda a, b: kf(a, b, get)[0, 0])
  zeros = jnp.zeros((1, 8, 8, 3))
  v, (g1, g2) = jax.value_and_grad(scalar, argnums=(0, 1))(zeros, zeros)
  np.testing.assert_allclose(v, scalar(zeros, zeros))
  np.testing.assert_array_equal(g1, 0.0)
  np.testing.assert_array_equal(g2, 0.0)
  x = jnp.cos(jax.random.normal(jax.random.key(3), (1, 8, 8, 3)))
  v, (g1, g2) = jax.value_and_grad(scalar, argnums=(0, 1))(x, x)
  fwd = jax.jacfwd(scalar, argnums=(0, 1))(x, x)
  assert _all_finite((g1, g2)) and float(jnp.max(jnp.abs(g1))) > 0
  np.testing.assert_allclose(g1, fwd[0], rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(g2, fwd[1], rtol=1e-9, atol=1e-12)
  # Moving both sides together keeps the correlation at one: smooth, so FD apply.
  _check_derivatives(lambda a: kf(a, a, get)[0, 0], (x,))


POOLS = {
    "avg_pool_valid": lambda: stax.AvgPool((2, 2)),
    "avg_pool_strided": lambda: stax.AvgPool((2, 2), (2, 2)),
    "avg_pool_same": lambda: stax.AvgPool((3, 3), (1, 2), "SAME"),
    "global_avg_pool": stax.GlobalAvgPool,
}


@pytest.mark.parametrize("pool", list(POOLS))
def test_pooling_kernel_derivatives(pool, x64):
  kf = stax.serial(stax.Conv(1, (2, 2), padding="SAME", W_std=1.3, b_std=0.1), stax.Relu(),
                   POOLS[pool](), stax.Flatten(), stax.Dense(1, 1.1, 0.1))[2]
  x1, x2 = _inputs((2, 4, 4, 2), (2, 4, 4, 2))
  _check_derivatives(lambda a, b: (kf(a, b, GET), kf(a, None, GET)), (x1, x2))


def _net_of_stds(kind):
  x1, x2 = _inputs((3, 4, 4, 2), (2, 4, 4, 2)) if kind == "conv_pool" else _inputs()

  def fn(W_std, b_std):
    if kind == "relu_mlp":
      layers = [stax.Dense(1, W_std, b_std), stax.Relu(), stax.Dense(1, W_std, b_std)]
    elif kind == "erf_standard":
      layers = [stax.Dense(5, W_std, b_std, parameterization="standard"), stax.Erf(),
                stax.Dense(3, W_std, b_std, parameterization="standard")]
    else:
      layers = [stax.Conv(1, (2, 2), padding="SAME", W_std=W_std, b_std=b_std), stax.Gelu(),
                stax.AvgPool((2, 2)), stax.Flatten(), stax.Dense(1, W_std, b_std)]
    return stax.serial(*layers)[2](x1, x2, GET)

  return fn


@pytest.mark.parametrize("kind", ["relu_mlp", "erf_standard", "conv_pool"])
def test_W_std_and_b_std_gradients_match_finite_differences(kind, x64):
  fn = _net_of_stds(kind)
  _check_derivatives(fn, (1.3, 0.2))
  g_W, g_b = jax.grad(lambda w, b: jnp.sum(fn(w, b).ntk), argnums=(0, 1))(1.3, 0.2)
  assert float(g_W) > 0 and float(g_b) > 0


def test_model_kernel_gradients_through_nn(x64):
  """The same maps behind :func:`jaxtheory.kernels.analytic.kernel_fn` of an ``nn`` model."""
  from jaxtheory.kernels import analytic

  model = nn.model(nn.serial(nn.conv(4, (2, 2), padding="SAME", b_std=0.1), nn.relu(),
                             nn.global_avg_pool(), nn.dense(1)), (4, 4, 2))
  kf = analytic.kernel_fn(model, nn.Ctx("ntk"))
  x1, x2 = _inputs((2, 4, 4, 2), (3, 4, 4, 2))
  _check_derivatives(lambda a, b: (kf(a, b, GET), kf(a, None, GET)), (x1, x2))
