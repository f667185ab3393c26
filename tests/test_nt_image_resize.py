"""``stax.ImageResize``: apply is ``jax.image.resize``; the kernel is exact on a linear network."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import stax
from linear_exact import diagonal, jacobian_kernel


pytestmark = pytest.mark.usefixtures("x64")


@pytest.mark.parametrize("shape,method,antialias", [
    ((-1, 7, 3, -1), "linear", True),      # grow one axis, shrink the other (antialiased)
    ((-1, 2, 9, -1), "bilinear", False),
    ((-1, 8, -1, -1), "nearest", True),
])
def test_image_resize_kernel_is_exact(shape, method, antialias):
  x1 = jax.random.normal(jax.random.key(0), (3, 4, 5, 2))
  x2 = jax.random.normal(jax.random.key(1), (2, 4, 5, 2))
  init, apply, kfn = stax.serial(stax.Conv(3, (2, 2), padding="SAME", W_std=1.2, b_std=0.3),
                                 stax.ImageResize(shape, method, antialias))
  out_shape, params = init(jax.random.key(2), x1.shape)
  conv = stax.Conv(3, (2, 2), padding="SAME", W_std=1.2, b_std=0.3)[1]
  want = jax.image.resize(conv(params[0], x1), out_shape, method, antialias=antialias)
  np.testing.assert_allclose(apply(params, x1), want, rtol=1e-12)
  exact = jacobian_kernel(apply, params, x1, x2)
  k = kfn(x1, x2, ("nngp", "ntk"), diagonal_spatial=False)
  np.testing.assert_allclose(k.nngp, exact, rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(k.ntk, exact, rtol=1e-9, atol=1e-12)
  if method == "nearest":  # a selection: the diagonal layout suffices
    np.testing.assert_allclose(kfn(x1, x2, "nngp", diagonal_spatial=True), diagonal(exact),
                               rtol=1e-9, atol=1e-12)
  else:
    with pytest.raises(ValueError, match="all pairs of positions"):
      kfn(x1, x2, "nngp", diagonal_spatial=True)


def test_image_resize_refuses_what_has_no_kernel():
  x = jnp.ones((2, 4, 3))
  with pytest.raises(ValueError, match="channel axis"):
    stax.ImageResize((-1, 4, 6), "linear")[2](x, None, "nngp")
  with pytest.raises(NotImplementedError, match="'linear' and 'nearest'"):
    stax.ImageResize((-1, 8, -1), "cubic")[2](x, None, "nngp")
  with pytest.raises(ValueError, match="unknown method"):
    stax.ImageResize((-1, 8, -1), "bicubical")
