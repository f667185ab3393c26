"""``stax.Index``, ``stax.Slice`` and NT's ``utils.canonicalize_idx`` / ``slice_shape``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import nt, stax


pytestmark = pytest.mark.usefixtures("x64")


def _close(a, b, **kw):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), **kw)


def test_canonicalize_idx_and_slice_shape():
  S = stax.Slice
  assert nt.canonicalize_idx(S[0], 3) == (0, slice(None), slice(None))
  assert nt.canonicalize_idx(S[...], 2) == (slice(None), slice(None))
  assert nt.canonicalize_idx(S[::2, 1, ...], 4) == (slice(None, None, 2), 1, slice(None),
                                                     slice(None))
  assert nt.canonicalize_idx(S[..., 1], 3) == (slice(None), slice(None), 1)
  assert nt.canonicalize_idx(S[:, 0, :], 3) == (slice(None), 0, slice(None))
  x = np.zeros((6, 3, 4, 5))
  for idx in (S[:, ::-2, ...], S[::2, 1, ...], S[:3, 1, 2], S[1:2:-1, 1, 2], S[..., 1::2]):
    assert nt.slice_shape(x.shape, idx) == x[idx].shape
  assert nt.slice_shape((-1, 3, 4), S[:, 1:]) == (-1, 2, 4)
  with pytest.raises(ValueError, match="unknown size"):
    nt.slice_shape((-1, 3), S[::2])


@pytest.mark.parametrize("idx", [stax.Slice[:, ::-2, ...], stax.Slice[::2, 1, ...],
                                 stax.Slice[1:4, 1, 2:]])
def test_index_kernel_is_the_indexed_kernel(idx):
  """Indexing activations indexes their kernel: the same batch/spatial entries (closed form)."""
  x1 = jax.random.normal(jax.random.key(1), (5, 3, 4, 2))
  x2 = jax.random.normal(jax.random.key(2), (4, 3, 4, 2))
  body = [stax.Conv(8, (2, 3), padding="SAME", b_std=0.1), stax.Relu()]
  _, _, kfn_body = stax.serial(*body)
  init, apply, kfn = stax.serial(*body, stax.Index(idx))
  full = kfn_body(x1, x2, ("nngp", "ntk", "cov1", "cov2"), diagonal_spatial=False)
  out = kfn(x1, x2, ("nngp", "ntk", "cov1", "cov2"), diagonal_spatial=False)
  b, *sp = nt.canonicalize_idx(idx, 4)[:3]
  pairs = tuple(i for i in sp for _ in range(2))
  _close(out.nngp, full.nngp[(b, b) + pairs])
  _close(out.ntk, full.ntk[(b, b) + pairs])
  _close(out.cov1, full.cov1[(b,) + pairs])
  _close(out.cov2, full.cov2[(b,) + pairs])
  shape, params = init(jax.random.key(0), x1.shape)
  y = apply(params, x1)
  assert shape == y.shape == stax.serial(*body)[1](params[:2], x1)[idx].shape


def test_index_refuses_channels_and_integer_batch():
  x = jax.random.normal(jax.random.key(1), (3, 4, 2))
  for idx in (stax.Slice[..., 1], stax.Slice[0]):
    _, apply, kfn = stax.serial(stax.Conv(4, (2,)), stax.Index(idx))
    with pytest.raises(NotImplementedError):
      kfn(x, None, "nngp")
