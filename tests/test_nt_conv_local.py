"""``stax.ConvLocal``: apply against an explicit loop over positions, the kernel exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxtheory import nt, stax
from linear_exact import jacobian_kernel


# Long runs and Monte Carlo estimates: compiled with XLA's default optimizations.
pytestmark = [pytest.mark.usefixtures("x64"), pytest.mark.optimized]


def _close(a, b, **kw):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), **kw)


@pytest.mark.parametrize("filter_shape,strides,padding",
                         [((2, 3), (1, 2), "SAME"), ((3,), (2,), "VALID"),
                          ((2, 2), (1, 1), "CIRCULAR")])
def test_conv_local_apply_and_kernel_are_exact(filter_shape, strides, padding):
  nsp = len(filter_shape)
  shape = (5, 4)[:nsp] + (3,)
  x1 = jax.random.normal(jax.random.key(0), (2,) + shape)
  x2 = jax.random.normal(jax.random.key(1), (3,) + shape)
  init, apply, kfn = stax.ConvLocal(6, filter_shape, strides, padding, W_std=1.3, b_std=0.2)
  out_shape, params = init(jax.random.key(2), x1.shape)
  W, b = params
  y = apply(params, x1)
  assert y.shape == out_shape
  assert W.shape == out_shape[1:-1] + (3 * int(np.prod(filter_shape)), 6)
  assert b.shape == (1,) + out_shape[1:]

  # apply: at each output position its own filter on its patch (channel-major patches).
  xp = x1
  if padding == "CIRCULAR":
    from jaxtheory.kernels import padding as pad
    xp = pad.wrap(x1, tuple(range(1, nsp + 1)), filter_shape, strides)
  else:
    pads = lax.padtype_to_pads(shape[:-1], filter_shape, strides, padding)
    xp = jnp.pad(x1, ((0, 0),) + tuple(pads) + ((0, 0),))
  ref = np.zeros(y.shape)
  for pos in np.ndindex(*out_shape[1:-1]):
    sl = tuple(slice(p * s, p * s + f) for p, s, f in zip(pos, strides, filter_shape))
    patch = jnp.moveaxis(xp[(slice(None),) + sl], -1, 1).reshape(x1.shape[0], -1)
    ref[(slice(None),) + pos] = patch @ W[pos]
  ref = 1.3 / np.sqrt(3 * np.prod(filter_shape)) * ref + 0.2 * b
  _close(y, ref, rtol=1e-12, atol=1e-12)

  # kernel: exact (one NTK-parametrized layer: NNGP = NTK = the Jacobian's Gram matrix).
  exact = jacobian_kernel(apply, params, x1, x2)
  k = kfn(x1, x2, ("nngp", "ntk"), diagonal_spatial=False)
  _close(k.nngp, exact, rtol=1e-10, atol=1e-12)
  _close(k.ntk, exact, rtol=1e-10, atol=1e-12)
  # The diagonal layout holds the same-position entries, which are Conv's.
  kd = kfn(x1, x2, "nngp", diagonal_spatial=True)
  kc = stax.Conv(6, filter_shape, strides, padding, W_std=1.3, b_std=0.2)[2](
      x1, x2, "nngp", diagonal_spatial=True)
  _close(kd, kc, rtol=1e-12)
  diag = exact
  for _ in range(nsp):
    diag = jnp.diagonal(diag, axis1=2, axis2=3)
  _close(kd, diag, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("parameterization", ["standard"])  # "ntk": the exact test above
def test_deep_conv_local_kernel_matches_monte_carlo(parameterization):
  x1 = jax.random.normal(jax.random.key(0), (2, 5, 4, 2))
  x2 = jax.random.normal(jax.random.key(1), (3, 5, 4, 2))
  body = stax.serial(
      stax.ConvLocal(128, (2, 3), (1, 2), "CIRCULAR", W_std=1.3, b_std=0.2,
                     parameterization=parameterization),
      stax.Relu(),
      stax.ConvLocal(128, (2, 2), padding="SAME", W_std=1.1, b_std=0.1,
                     parameterization=parameterization),
      stax.AvgPool((2, 2)), stax.Flatten())
  # NNGP: averaged over the many output channels; NTK: of one readout. The estimator's own
  # spread at 64 samples, over keys 2-7: 2.6-3.9% of the largest entry (NNGP), 1.0-2.5% (NTK);
  # a wrong factor or a missing term in the kernel is far beyond 6%.
  for get, net in (("nngp", body), ("ntk", stax.serial(body, stax.Dense(1)))):
    init, apply, kfn = net
    exact = kfn(x1, x2, get)
    est = nt.monte_carlo_kernel_fn(init, apply, jax.random.key(2), n_samples=64)(x1, x2, get)
    assert np.abs(np.asarray(est - exact)).max() < 0.06 * np.abs(np.asarray(exact)).max(), get
