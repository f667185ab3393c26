"""jaxtheory.nn.convops: lax's convolution with loop-friendly derivatives on CPU, equal to it."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxtheory.nn import convops

# (spatial dims, strides, padding, lhs dilation, rhs dilation): 1D/2D/3D, strided, SAME/VALID/
# explicit padding, dilated input (transposed convolutions) and dilated filters.
CASES = [c for c in itertools.product([1, 2, 3], [1, 2], ["SAME", "VALID", "explicit"], [1, 2],
                                      [1, 2])
         if not (c[3] > 1 and c[2] != "explicit") and (c[0] < 3 or (c[3] == 1 and c[4] == 1))]


def _args(n, st, pad, ld, rd):
  pad = ((1, 2),) * n if pad == "explicit" else pad
  return (st,) * n, pad, (ld,) * n, (rd,) * n


def _results(conv, x, W, dx, dW):
  y = conv(x, W)
  ct = jnp.cos(jnp.arange(y.size, dtype=y.dtype)).reshape(y.shape)
  return {
      "value": y,
      "vjp": jax.vjp(conv, x, W)[1](ct),
      "jvp": jax.jvp(conv, (x, W), (dx, dW)),
      "vmap": jax.vmap(conv, (0, None))(jnp.stack([x, 2 * x]), W),
      "jit grad": jax.jit(jax.grad(lambda x, W: jnp.sum(jnp.sin(conv(x, W))), (0, 1)))(x, W),
      "hvp": jax.jvp(jax.grad(lambda W: jnp.sum(jnp.tanh(conv(x, W)))), (W,), (dW,)),
      "scan grad": lax.scan(lambda c, s: (c + jax.grad(
          lambda W: jnp.sum(jnp.sin(conv(s * x, W))))(W), None), jnp.zeros_like(W),
          jnp.arange(1.0, 3.0, dtype=x.dtype))[0],
  }


def _check(case, dtype, rtol, atol):
  n = case[0]
  st, pad, ld, rd = _args(*case)
  dims = convops.channels_last_dims(n)
  k = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(k[0], (2,) + (7, 6, 5)[:n] + (3,), dtype)
  W = jax.random.normal(k[1], (3, 2, 2)[:n] + (3, 4), dtype)
  dx, dW = jax.random.normal(k[2], x.shape, dtype), jax.random.normal(k[3], W.shape, dtype)
  new = lambda x, W: convops.conv_general_dilated(x, W, st, pad, ld, rd)
  ref = lambda x, W: lax.conv_general_dilated(x, W, st, pad, ld, rd, dimension_numbers=dims)
  got, want = _results(new, x, W, dx, dW), _results(ref, x, W, dx, dW)
  for name in want:
    for a, b in zip(jax.tree.leaves(got[name]), jax.tree.leaves(want[name])):
      assert a.dtype == b.dtype == dtype
      np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * float(jnp.max(jnp.abs(b))),
                                 err_msg=name)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_lax_float64(x64, case):
  _check(case, jnp.float64, 1e-12, 1e-12)


@pytest.mark.parametrize("case", [(2, 1, "SAME", 1, 1), (1, 2, "VALID", 1, 2),
                                  (3, 2, "explicit", 1, 1)], ids=str)
def test_matches_lax_float32(case):
  _check(case, jnp.float32, 1e-5, 1e-5)


@pytest.mark.parametrize("strides,padding", [((1, 1), "SAME"), ((2, 1), "VALID"),
                                             ((2, 2), "SAME")])
def test_conv_transpose_matches_lax(x64, strides, padding):
  k = jax.random.split(jax.random.key(1), 3)
  x = jax.random.normal(k[0], (2, 4, 5, 3), jnp.float64)
  W = jax.random.normal(k[1], (3, 2, 3, 2), jnp.float64)
  new = lambda x, W: convops.conv_transpose(x, W, strides, padding)
  ref = lambda x, W: lax.conv_transpose(x, W, strides, padding,
                                        dimension_numbers=convops.channels_last_dims(2))
  y = ref(x, W)
  ct = jax.random.normal(k[2], y.shape, jnp.float64)
  for a, b in zip(jax.tree.leaves((new(x, W), jax.vjp(new, x, W)[1](ct))),
                  jax.tree.leaves((y, jax.vjp(ref, x, W)[1](ct)))):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)



@pytest.mark.parametrize("dims", [None, ("NHWC", "HWIO", "NHWC"), ("NHWC", "OIHW", "NCHW"),
                                  ("NCH", "OIH", "NCH")], ids=str)
@pytest.mark.parametrize("strides,padding", [(1, "SAME"), (2, "VALID"), (1, "explicit")])
def test_lax_signature_stands_in_for_lax_in_any_layout(x64, dims, strides, padding):
  """Channels-first (lax's default, Equinox's), channels-last (Flax's) and mixed layouts:
  the same values and derivatives as lax's convolution."""
  n = 1 if dims is not None and len(dims[0]) == 3 else 2
  lhs, rhs = (dims or ("NCHW", "OIHW", "NCHW"))[:2]
  sizes = dict(N=2, C=3, I=3, O=4, H=7, W=6)
  x_shape = tuple(sizes[c] for c in lhs)
  W_shape = tuple(dict(sizes, H=3, W=2)[c] for c in rhs)
  k = jax.random.split(jax.random.key(2), 2)
  x, W = (jax.random.normal(k[0], x_shape, jnp.float64),
          jax.random.normal(k[1], W_shape, jnp.float64))
  pad = ((1, 2),) * n if padding == "explicit" else padding
  ref = lambda x, W: lax.conv_general_dilated(x, W, (strides,) * n, pad, dimension_numbers=dims)
  new = lambda x, W: convops.lax_signature(x, W, (strides,) * n, pad, dimension_numbers=dims)
  np.testing.assert_allclose(new(x, W), ref(x, W), rtol=1e-12)
  loss = lambda conv: lambda x, W: jnp.sum(jnp.sin(conv(x, W)))
  for a, b in zip(jax.grad(loss(new), (0, 1))(x, W), jax.grad(loss(ref), (0, 1))(x, W)):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_lax_signature_leaves_grouped_convolutions_to_lax():
  x, W = jnp.ones((1, 5, 4)), jnp.ones((3, 2, 4))
  got = convops.lax_signature(x, W, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"),
                              feature_group_count=2)
  want = lax.conv_general_dilated(x, W, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"),
                                  feature_group_count=2)
  np.testing.assert_array_equal(got, want)


def test_foreign_modules_are_routed_only_while_traced():
  """Inside the block (and only in its thread) lax's name computes convops' convolution;
  lax's own function is back when the last block ends, whatever happened inside."""
  import threading
  from jaxtheory.nn import foreign
  original = lax.conv_general_dilated
  x, W = jnp.ones((1, 5, 3)), jnp.ones((2, 3, 4))
  traced = lambda: str(jax.make_jaxpr(jax.grad(lambda W: jnp.sum(lax.conv_general_dilated(
      x, W, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC")))))(W))
  other = []
  with foreign.loop_friendly_convolutions():
    with foreign.loop_friendly_convolutions():
      assert "custom_jvp_call" in traced()
    assert "custom_jvp_call" in traced()
    t = threading.Thread(target=lambda: other.append(traced()))
    t.start()
    t.join()
  assert "custom_jvp_call" not in other[0]  # another thread keeps lax's convolution
  assert lax.conv_general_dilated is original is convops.LAX_CONV
  assert "custom_jvp_call" not in traced()
  with pytest.raises(RuntimeError):
    with foreign.loop_friendly_convolutions():
      raise RuntimeError
  assert lax.conv_general_dilated is original
