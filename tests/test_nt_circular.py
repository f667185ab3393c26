"""``'CIRCULAR'`` (periodic) padding of ``stax.Conv``, ``ConvTranspose`` and ``AvgPool``.

Apply against a direct periodic sum and against the adjoint of the circular
convolution; each kernel against the exact NNGP of one linear layer (its
empirical NTK in the weights, no sampling), both spatial layouts.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import nt, stax
from jaxtheory.kernels import padding


pytestmark = pytest.mark.usefixtures("x64")


def _same_lo(n, f, s):
  return padding.same_pads(n, f, s)[0]


@pytest.mark.parametrize("n,f,s", [(5, 3, 1), (5, 2, 2), (4, 4, 3), (1, 3, 1), (2, 4, 2)])
def test_circular_conv_is_the_periodic_sum(n, f, s):
  x = jax.random.normal(jax.random.key(0), (2, n, 3))
  init, apply, _ = stax.Conv(4, (f,), (s,), "CIRCULAR", b_std=None)
  _, params = init(jax.random.key(1), x.shape)
  y = np.asarray(apply(params, x))
  w = np.asarray(params[0]) / np.sqrt(3 * f)  # NTK parameterization, W_std = 1
  lo, m = _same_lo(n, f, s), -(-n // s)
  want = np.zeros((2, m, 4))
  for i, d in itertools.product(range(m), range(f)):
    want[:, i] += np.asarray(x)[:, (i * s + d - lo) % n] @ w[d]
  np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n,f,s", [(1, 1, 1), (2, 3, 2), (3, 4, 3), (2, 2, 4), (4, 3, 1)])
def test_circular_conv_transpose_is_the_adjoint_of_circular_conv(n, f, s):
  """Transposed = VJP of the circular conv with the filter flipped and its I/O swapped."""
  x = jax.random.normal(jax.random.key(0), (2, n, 3))
  init, apply_t, _ = stax.ConvTranspose(3, (f,), (s,), "CIRCULAR", b_std=None)
  _, params = init(jax.random.key(1), x.shape)
  y = apply_t(params, x)
  assert y.shape == (2, n * s, 3)
  w = jnp.flip(jnp.swapaxes(params[0], -1, -2), 0)
  _, apply_c, _ = stax.Conv(3, (f,), (s,), "CIRCULAR", b_std=None)
  _, vjp = jax.vjp(lambda z: apply_c((w, None), z), jnp.ones((2, n * s, 3)))
  np.testing.assert_allclose(y, vjp(x)[0], rtol=1e-12, atol=1e-12)


def _exact(layer, x1, x2):
  """A linear layer's NNGP is exactly its empirical NTK in the weights."""
  init, apply, kfn = layer
  _, params = init(jax.random.key(0), x1.shape)
  k = kfn(x1, x2, "nngp", diagonal_spatial=False)  # (n1, n2, h, h', w, w')
  emp = nt.empirical_ntk_fn(apply, trace_axes=(-1,), vmap_axes=0)(x1, x2, params)
  np.testing.assert_allclose(k, emp, rtol=1e-10, atol=1e-12)
  return k, kfn


@pytest.mark.parametrize("f,s", [((3, 2), (1, 2)), ((2, 4), (2, 3)),
                                 ((4, 3), (3, 1))])
def test_circular_kernels_equal_the_exact_nngp_of_one_layer(f, s):
  x1 = jax.random.normal(jax.random.key(0), (3, 5, 3, 2))
  x2 = jax.random.normal(jax.random.key(1), (2, 5, 3, 2))
  for layer in (stax.Conv(6, f, s, "CIRCULAR", b_std=None),
                stax.ConvTranspose(6, f, s, "CIRCULAR", b_std=None)):
    k, kfn = _exact(layer, x1, x2)
    diag = kfn(x1, x2, "nngp", diagonal_spatial=True)
    np.testing.assert_allclose(jnp.einsum("abiijj->abij", k), diag, rtol=1e-10, atol=1e-12)
  # Pooling after a 1x1 conv (its input covariance is then a full-spatial kernel).
  _exact(stax.serial(stax.Conv(6, (1, 1), b_std=None), stax.AvgPool(f, s, "CIRCULAR")), x1, x2)


@pytest.mark.optimized  # a Monte Carlo mean
def test_circular_network_ntk_matches_its_empirical_mean():
  """Through a nonlinearity: the analytic NTK against the mean of 64 empirical NTKs."""
  x1 = jax.random.normal(jax.random.key(0), (2, 4, 3, 2))
  x2 = jax.random.normal(jax.random.key(1), (3, 4, 3, 2))
  init, apply, kfn = stax.serial(stax.ConvTranspose(64, (3, 2), (2, 1), "CIRCULAR"), stax.Relu(),
                                 stax.Conv(64, (2, 3), (1, 2), "CIRCULAR"), stax.Relu(),
                                 stax.AvgPool((2, 2), (2, 1), "CIRCULAR"), stax.Flatten(),
                                 stax.Dense(1))
  mc = nt.monte_carlo_kernel_fn(init, apply, jax.random.key(2), 64, implementation=1)
  want, got = kfn(x1, x2, "ntk"), mc(x1, x2, "ntk")
  assert float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want)) < 0.05


def test_bad_padding_is_one_clear_error():
  with pytest.raises(ValueError, match="padding must be 'SAME', 'VALID' or 'CIRCULAR'"):
    stax.Conv(4, (3,), padding="REFLECT")
