"""``stax.ConvTranspose``: apply against ``lax.conv_transpose``, the kernel against its mean."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxtheory import stax


pytestmark = pytest.mark.usefixtures("x64")


def _close(a, b, **kw):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), **kw)


def _exact_nngp(x1, x2, filter_shape, strides, padding, W_std, b_std):
  """E[y(x1) y(x2)] of one output channel, W ~ N(0, W_std^2 / fan_in), from the Jacobian in W."""
  c = x1.shape[-1]
  dims = ("NHC", "HIO", "NHC") if len(filter_shape) == 1 else ("NHWC", "HWIO", "NHWC")
  w0 = jnp.zeros(tuple(filter_shape) + (c, 1))
  f = lambda x: lambda w: lax.conv_transpose(x, w, strides, padding, dimension_numbers=dims)
  j1 = jax.jacobian(f(x1))(w0).reshape(*x1.shape[:1], -1, w0.size)  # (n, positions, params)
  j2 = jax.jacobian(f(x2))(w0).reshape(*x2.shape[:1], -1, w0.size)
  fan_in = c * np.prod(filter_shape)
  k = W_std ** 2 / fan_in * jnp.einsum("apk,bqk->abpq", j1, j2) + b_std ** 2
  out_sp = f(x1)(w0).shape[1:-1]
  # (n1, n2, P, P') -> NT's (n1, n2, h, h', w, w') layout.
  k = k.reshape(k.shape[:2] + out_sp + out_sp)
  if len(out_sp) == 2:
    k = jnp.transpose(k, (0, 1, 2, 4, 3, 5))
  return k


@pytest.mark.parametrize("filter_shape,strides,padding",
                         [((3,), (2,), "SAME"), ((2,), (3,), "VALID"), ((2, 3), (2, 1), "SAME")])
def test_conv_transpose_kernel_is_exact_for_one_layer(filter_shape, strides, padding):
  shape = (4,) * len(filter_shape) + (2,)
  x1 = jax.random.normal(jax.random.key(0), (2,) + shape)
  x2 = jax.random.normal(jax.random.key(1), (3,) + shape)
  init, apply, kfn = stax.ConvTranspose(5, filter_shape, strides, padding, W_std=1.3, b_std=0.2)
  k = kfn(x1, x2, ("nngp", "ntk"), diagonal_spatial=False)
  ref = _exact_nngp(x1, x2, filter_shape, strides, padding, 1.3, 0.2)
  _close(k.nngp, ref, rtol=1e-10, atol=1e-12)
  _close(k.ntk, ref, rtol=1e-10, atol=1e-12)  # one NTK-parametrized layer: NTK = NNGP
  # diagonal_spatial=True holds the same-position entries.
  kd = kfn(x1, x2, "nngp", diagonal_spatial=True)
  idx = [np.arange(n) for n in kd.shape[2:]]
  diag = ref[(Ellipsis,) + tuple(i for a in np.ix_(*idx) for i in (a, a))] if len(idx) == 1 else \
      jnp.einsum("abhhww->abhw", ref)
  _close(kd, diag, rtol=1e-10, atol=1e-12)
  # apply is lax.conv_transpose with NT's NTK scaling.
  shape_out, params = init(jax.random.key(2), x1.shape)
  dims = ("NHC", "HIO", "NHC") if len(filter_shape) == 1 else ("NHWC", "HWIO", "NHWC")
  y = lax.conv_transpose(x1, params[0], strides, padding, dimension_numbers=dims)
  b = params[1]  # NT's bias: the output's rank, unit axes but the channels
  assert b.shape == (1,) * (y.ndim - 1) + (y.shape[-1],)
  _close(apply(params, x1), 1.3 / np.sqrt(2 * np.prod(filter_shape)) * y + 0.2 * b, rtol=1e-12)
  assert shape_out == y.shape


def test_conv_transpose_channels_first():
  x = jax.random.normal(jax.random.key(0), (2, 3, 5))  # N, C, H
  init, apply, kfn = stax.ConvTranspose(4, (3,), (2,), "SAME",
                                        dimension_numbers=("NCH", "OIH", "NCH"))
  init_r, apply_r, kfn_r = stax.ConvTranspose(4, (3,), (2,), "SAME")
  xt = jnp.transpose(x, (0, 2, 1))
  shape, params = init(jax.random.key(1), x.shape)
  assert shape == (2, 4, 10)
  w, b = params  # NT's filter layout, "OIH" here; the reference layer's is "HIO"
  assert w.shape == (4, 3, 3) and b is None
  _close(apply(params, x), jnp.transpose(apply_r((jnp.transpose(w, (2, 1, 0)), b), xt), (0, 2, 1)),
         rtol=1e-12)
  _close(kfn(x, None, "nngp"), kfn_r(xt, None, "nngp"), rtol=1e-12)
