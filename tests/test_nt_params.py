"""``stax`` parameters are NT's: ``(W, b)`` tuples in NT's layouts, so code written for NT's params runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxtheory import stax

pytestmark = pytest.mark.usefixtures("x64")


def _close(a, b):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)


def test_dense_params_are_tuples_and_apply_is_ntks_formula():
  init, apply, _ = stax.serial(stax.Dense(5, W_std=1.5, b_std=0.1), stax.Relu(),
                               stax.Dense(2, W_std=0.8))
  x = jax.random.normal(jax.random.key(0), (3, 4))
  _, params = init(jax.random.key(1), x.shape)
  (w1, b1), relu, (w2, b2) = params
  assert (w1.shape, b1.shape, relu, w2.shape, b2) == ((4, 5), (1, 5), (), (5, 2), None)
  # NT user code edits the tuples; apply reads them with the NTK parameterization.
  w1 = 2.0 * w1
  h = jax.nn.relu(1.5 / np.sqrt(4) * x @ w1 + 0.1 * b1)
  _close(apply(((w1, b1), (), (w2, None)), x), 0.8 / np.sqrt(5) * h @ w2)


def test_dense_bias_on_another_channel_axis_has_the_inputs_rank():
  init, apply, _ = stax.Dense(3, b_std=0.5, batch_axis=0, channel_axis=1)
  x = jax.random.normal(jax.random.key(0), (2, 4, 6))
  _, (w, b) = init(jax.random.key(1), x.shape)
  assert w.shape == (4, 3) and b.shape == (1, 3, 1)
  want = jnp.einsum("bcs,cd->bds", x, w) / np.sqrt(4) + 0.5 * b
  _close(apply((w, b), x), want)


@pytest.mark.parametrize("dn", [None, ("NCHW", "OIHW", "NCHW"), ("NHWC", "HWIO", "NCHW"),
                                ("CHWN", "IWHO", "NHWC")])
def test_conv_filter_is_laid_out_as_the_rhs_spec(dn):
  lhs = "NHWC" if dn is None else dn[0]
  x = jax.random.normal(jax.random.key(0), tuple({"N": 2, "H": 5, "W": 4, "C": 3}[c] for c in lhs))
  init, apply, _ = stax.Conv(6, (3, 2), (1, 2), "SAME", W_std=1.2, b_std=0.3,
                             dimension_numbers=dn)
  shape, (w, b) = init(jax.random.key(1), x.shape)
  rhs, out = ("HWIO", "NHWC") if dn is None else dn[1:]
  sizes = dict(O=6, I=3, **dict(zip([c for c in rhs if c not in "IO"], (3, 2))))
  assert w.shape == tuple(sizes[c] for c in rhs)
  assert b.shape == tuple(6 if c == "C" else 1 for c in out)
  ref = lax.conv_general_dilated(x, w, (1, 2), "SAME", dimension_numbers=dn or (lhs, rhs, out))
  _close(apply((w, b), x), 1.2 / np.sqrt(3 * 3 * 2) * ref + 0.3 * b)
  assert shape == ref.shape


def test_conv_transpose_is_the_vjp_of_conv_with_ntks_standard_tuples():
  """NT's own check: a transposed conv equals the VJP of a conv with the filter's I/O
  swapped and its spatial axis flipped, both applied to ``(W, 0.)``."""
  x = jax.random.normal(jax.random.key(0), (2, 3, 4))
  init, apply_t, _ = stax.ConvTranspose(5, (3,), (2,), "CIRCULAR", parameterization="standard")
  _, (w, b) = init(jax.random.key(1), x.shape)
  assert w.shape == (3, 4, 5) and b is None
  _, apply_c, _ = stax.Conv(4, (3,), (2,), "CIRCULAR", parameterization="standard")
  flipped = jnp.flip(jnp.swapaxes(w, 1, 2), 0)
  _, vjp = jax.vjp(lambda z: apply_c((flipped, 0.0), z), jnp.ones((2, 6, 5)))
  _close(apply_t((w, 0.0), x), vjp(x)[0])


def test_wrong_params_say_what_is_expected():
  init, apply, _ = stax.Dense(3)
  with pytest.raises(TypeError, match=r"NT's \(W, b\)"):
    apply(jnp.ones((4, 3)), jnp.ones((2, 4)))
