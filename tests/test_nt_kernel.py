"""NT's ``Kernel`` object from ``stax`` kernel functions; ``diagonal_batch=False``; ``stax.layer``; ``Dropout``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import nt, stax


pytestmark = pytest.mark.usefixtures("x64")


def _xs(n1=6, n2=4, shape=(3,)):
  k1, k2 = jax.random.split(jax.random.key(0))
  return jax.random.normal(k1, (n1, *shape)), jax.random.normal(k2, (n2, *shape))


def _close(a, b, **kw):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), **kw)


def test_kernel_object_fields_and_names():
  _, _, kernel_fn = stax.serial(stax.Dense(64, b_std=0.1), stax.Relu())
  x1, x2 = _xs()
  k = kernel_fn(x1, x2)
  assert isinstance(k, nt.Kernel)
  assert k.shape1 == (6, 64) and k.shape2 == (4, 64)
  assert (k.batch_axis, k.channel_axis) == (0, 1)
  assert not k.is_gaussian and k.diagonal_batch and not bool(k.x1_is_x2)
  assert bool(kernel_fn(x1).x1_is_x2) and kernel_fn(x1).cov2 is None
  assert k.replace(is_gaussian=True).is_gaussian
  assert kernel_fn(x1, x2, "shape1") == (6, 64)  # get takes any field, as NT's
  assert stax.Dense(3)[0].__name__ == "Dense" and stax.Relu()[2].__name__ == "Relu"


@pytest.mark.parametrize("same", [True, False])
def test_kernel_fn_composes_on_kernels(same):
  block = stax.serial(stax.Dense(64, W_std=1.3, b_std=0.2), stax.Erf())
  _, _, kernel_fn = block
  _, _, twice = stax.serial(block, block)
  x1, x2 = _xs()
  x2 = None if same else x2
  a, b = kernel_fn(kernel_fn(x1, x2)), twice(x1, x2)
  for f in ("nngp", "ntk", "cov1"):
    _close(getattr(a, f), getattr(b, f), rtol=1e-12)
  assert (a.shape1, a.shape2, a.is_gaussian) == (b.shape1, b.shape2, b.is_gaussian)
  # nt.batch splits a Kernel input into blocks (Kernel.slice) and assembles the same result.
  batched = nt.batch(kernel_fn, batch_size=2, device_count=0)
  c = batched(batched(x1, x2))
  _close(c.nngp, b.nngp, rtol=1e-12)
  assert c.shape1 == b.shape1


@pytest.mark.parametrize("shape", [(3,), (4, 2)])
def test_diagonal_batch_false_holds_the_self_nngp(shape):
  layers = [stax.Dense(8), stax.Relu()] if len(shape) == 1 else [
      stax.Conv(8, (2,), padding="SAME"), stax.Relu()]
  _, _, kernel_fn = stax.serial(*layers)
  x1, x2 = _xs(shape=shape)
  full = kernel_fn(x1, x2, diagonal_batch=False)
  diag = kernel_fn(x1, x2)
  _close(full.cov1, kernel_fn(x1, None, "nngp"), rtol=1e-12)
  _close(full.cov2, kernel_fn(x2, None, "nngp"), rtol=1e-12)
  _close(full.nngp, diag.nngp, rtol=1e-12)
  assert full.cov1.shape[:2] == (6, 6) and not full.diagonal_batch
  # The batch diagonal of the full covariance is the diagonal-batch cov1.
  _close(jnp.moveaxis(jnp.diagonal(full.cov1, axis1=0, axis2=1), -1, 0), diag.cov1, rtol=1e-12)


def test_stax_layer_user_kernel_fn():

  @stax.layer
  def Double():
    init_fn = lambda key, input_shape: (input_shape, ())
    apply_fn = lambda params, x, **kw: 2 * x

    def kernel_fn(k, **kw):
      return k.replace(nngp=4 * k.nngp, cov1=4 * k.cov1,
                       cov2=None if k.cov2 is None else 4 * k.cov2,
                       ntk=None if k.ntk is None else 4 * k.ntk)

    return init_fn, apply_fn, kernel_fn

  assert Double()[0].__name__ == "Double"
  x1, x2 = _xs()
  _, apply_fn, k_user = stax.serial(stax.Dense(16), Double(), stax.Relu(), stax.Dense(1))
  _, _, k_ref = stax.serial(stax.Dense(16, W_std=2.0), stax.Relu(), stax.Dense(1))
  a, b = k_user(x1, x2), k_ref(x1, x2)
  _close(a.nngp, b.nngp, rtol=1e-12)
  _close(a.ntk, b.ntk, rtol=1e-12)


def test_dropout_kernel_against_monte_carlo():
  rate, width, samples = 0.6, 256, 1500
  init_fn, apply_fn, kernel_fn = stax.serial(
      stax.Dense(width, b_std=0.1), stax.Relu(), stax.Dropout(rate), stax.Dense(1, b_std=0.1))
  x1, _ = _xs(n1=4)

  def sample(key):
    k_init, k_drop = jax.random.split(key)
    _, params = init_fn(k_init, x1.shape)
    y = apply_fn(params, x1, rng=k_drop)
    return y @ y.T

  mc = jnp.mean(jax.jit(jax.vmap(sample))(jax.random.split(jax.random.key(1), samples)), 0)
  exact = kernel_fn(x1, None, "nngp")
  no_drop = stax.serial(stax.Dense(width, b_std=0.1), stax.Relu(), stax.Dense(1, b_std=0.1))[2]
  # Dropout raises the same-example entries by about 1/rate and leaves the others.
  assert np.all(np.diag(exact) > 1.3 * np.diag(no_drop(x1, None, "nngp")))
  _close(mc, exact, rtol=0.1, atol=0.05)


def test_dropout_rejects_bad_arguments():
  with pytest.raises(ValueError, match="keep probability"):
    stax.Dropout(0.0)
  init_fn, apply_fn, _ = stax.Dropout(0.5)
  with pytest.raises(ValueError, match="PRNG key"):
    apply_fn((), jnp.ones((2, 3)))
  _, apply_test, _ = stax.Dropout(0.5, mode="test")
  _close(apply_test((), jnp.ones((2, 3))), jnp.ones((2, 3)))


def test_standard_parameterization_width_scale_s():
  # NT's s: Dense(N, s=(1, s)) has s*N outputs; the next layer's NTK sees (s*N)/s inputs.
  s, n = 4, 8
  kw = dict(parameterization="standard", b_std=0.3)
  init_fn, apply_fn, k_s = stax.serial(stax.Dense(n, s=(1, s), **kw), stax.Relu(),
                                       stax.Dense(1, s=(s, 1), **kw))
  _, _, k_ref = stax.serial(stax.Dense(n, **kw), stax.Relu(), stax.Dense(1, **kw))
  x1, x2 = _xs()
  a, b = k_s(x1, x2), k_ref(x1, x2)
  _close(a.nngp, b.nngp, rtol=1e-12)
  _close(a.ntk, b.ntk, rtol=1e-12)
  assert init_fn(jax.random.key(0), x1.shape)[0] == (6, 1)
  # The empirical NTK (mean over initializations) agrees: the stored weights carry sqrt(s).
  ntk_fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,)))
  emp = jnp.mean(jnp.stack([ntk_fn(x1, x2, init_fn(jax.random.key(i), x1.shape)[1])
                            for i in range(60)]), 0)
  _close(emp, a.ntk, rtol=0.15, atol=0.15)


def test_tuple_inputs_with_x2_none_per_input():
  # NT writes x2=(None, None) for two inputs each compared with itself.
  init_fn, apply_fn, kernel_fn = stax.serial(
      stax.parallel(stax.Dense(8), stax.Dense(8)), stax.FanInSum(), stax.Dense(1))
  x1 = (jax.random.normal(jax.random.key(0), (4, 2)), jax.random.normal(jax.random.key(1), (4, 3)))
  _close(kernel_fn(x1, (None, None), "ntk"), kernel_fn(x1, None, "ntk"), rtol=0)
  mc = nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(0), 2, trace_axes=(-1,))
  _close(mc(x1, (None, None), "ntk"), mc(x1, None, "ntk"), rtol=1e-12)
