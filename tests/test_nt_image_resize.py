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
  with pytest.raises(ValueError, match="all pairs of positions"):  # as neural-tangents
    kfn(x1, x2, "nngp", diagonal_spatial=True)


def test_image_resize_refuses_what_has_no_kernel():
  x = jnp.ones((2, 4, 3))
  with pytest.raises(ValueError, match="channel axis"):
    stax.ImageResize((-1, 4, 6), "linear")[2](x, None, "nngp")
  with pytest.raises(NotImplementedError, match="'linear' and 'nearest'"):
    stax.ImageResize((-1, 8, -1), "cubic")[2](x, None, "nngp")
  with pytest.raises(ValueError, match="unknown method"):
    stax.ImageResize((-1, 8, -1), "bicubical")


def _batch_resized(size, method):
  conv = stax.Conv(3, (2,), padding="SAME", W_std=1.2, b_std=0.3)
  return stax.serial(conv, stax.ImageResize((size, -1, -1), method))


@pytest.mark.parametrize("size", [3, 7])
def test_nearest_resize_of_the_batch_axis_is_exact_against_another_x2(size):
  # Nearest selects examples: the NNGP, the NTK and both sides' variances are exact.
  x1 = jax.random.normal(jax.random.key(0), (5, 4, 2))
  x2 = jax.random.normal(jax.random.key(1), (3, 4, 2))
  init, apply, kfn = _batch_resized(size, "nearest")
  _, params = init(jax.random.key(2), x1.shape)
  # As in neural-tangents: per-example covariances are refused when asked for, and not
  # chosen when the caller leaves diagonal_batch unset.
  with pytest.raises(ValueError, match="use diagonal_batch=False"):
    kfn(x1, x2, "nngp", diagonal_spatial=False, diagonal_batch=True)
  k = kfn(x1, x2, ("nngp", "ntk", "cov1", "cov2"), diagonal_spatial=False)
  assert k.cov1.shape[:2] == (size, size)
  exact = jacobian_kernel(apply, params, x1, x2)
  assert exact.shape[:2] == (size, size)
  np.testing.assert_allclose(k.nngp, exact, rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(k.ntk, exact, rtol=1e-9, atol=1e-12)
  for cov, x in ((k.cov1, x1), (k.cov2, x2)):  # (n, n, h, h'): x with itself
    np.testing.assert_allclose(cov, jacobian_kernel(apply, params, x, x), rtol=1e-9,
                               atol=1e-12)
  # A ReLU after it reads each side's selected variances: the arc-cosine formula on the
  # exact covariances.
  relu = stax.serial(_batch_resized(size, "nearest"), stax.Relu())[2](
      x1, x2, "nngp", diagonal_spatial=False, diagonal_batch=False)
  var = lambda x: np.einsum("aapq->apq", np.asarray(jacobian_kernel(apply, params, x, x)))
  v1, v2 = np.einsum("app->ap", var(x1)), np.einsum("app->ap", var(x2))
  norm = np.sqrt(v1[:, None, :, None] * v2[None, :, None, :])
  cos = np.clip(np.asarray(exact) / norm, -1, 1)
  theta = np.arccos(cos)
  np.testing.assert_allclose(relu, norm * (np.sin(theta) + (np.pi - theta) * cos) / (2 * np.pi),
                             rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("size", [3, 8])
def test_linear_resize_of_the_batch_axis_is_exact_with_itself_and_another_x2(size):
  # Linear mixes examples: exact against x1 itself (the NNGP holds all their covariances,
  # so the new variances are its diagonal, and the ReLU after it reads them), and against
  # a different x2, of as many examples or not (computed with x1 as one batch, each part
  # resized on its own).
  x1 = jax.random.normal(jax.random.key(0), (5, 4, 2))
  init, apply, kfn = _batch_resized(size, "linear")
  _, params = init(jax.random.key(2), x1.shape)
  exact = jacobian_kernel(apply, params, x1, x1)
  full = dict(diagonal_spatial=False, diagonal_batch=False)
  k = kfn(x1, None, ("nngp", "cov1"), **full)
  np.testing.assert_allclose(k.nngp, exact, rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(k.cov1, exact, rtol=1e-9, atol=1e-12)
  relu = stax.serial(_batch_resized(size, "linear"), stax.Relu())[2](x1, None, "nngp", **full)
  var = np.moveaxis(np.diagonal(exact, 0, 0, 1), -1, 0)  # (size, h, h')
  diag = lambda a: np.diagonal(a, 0, 1, 2)  # same-position entries, (size, h)
  # ReLU of a centred Gaussian: E[relu(u)^2] = var / 2 on the (example, position) diagonal.
  np.testing.assert_allclose(diag(np.diagonal(relu, 0, 0, 1).transpose(2, 0, 1)),
                             diag(var) / 2, rtol=1e-9)
  x2 = jax.random.normal(jax.random.key(1), (5, 4, 2))
  x3 = x2[:3]  # fewer examples: x1's 5 and x3's 3 each resized to `size`
  for b in (x2, x3):
    k = kfn(x1, b, ("nngp", "ntk", "cov1", "cov2"), **full)
    np.testing.assert_allclose(k.nngp, jacobian_kernel(apply, params, x1, b), rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_allclose(k.ntk, k.nngp, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(k.cov1, exact, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(k.cov2, jacobian_kernel(apply, params, b, b), rtol=1e-9,
                               atol=1e-12)
  # A ReLU after it reads each side's own new variances: the arc-cosine formula.
  relu = stax.serial(_batch_resized(size, "linear"), stax.Relu())[2](x1, x3, "nngp", **full)
  var = lambda x: np.einsum("aapp->ap", np.asarray(jacobian_kernel(apply, params, x, x)))
  norm = np.sqrt(var(x1)[:, None, :, None] * var(x3)[None, :, None, :])
  cos = np.clip(np.asarray(k.nngp) / norm, -1, 1)
  theta = np.arccos(cos)
  np.testing.assert_allclose(relu, norm * (np.sin(theta) + (np.pi - theta) * cos) / (2 * np.pi),
                             rtol=1e-8, atol=1e-12)
  with pytest.raises(ValueError, match="must agree beyond the batch axis"):
    kfn(x1, x2[:, :3], "nngp", **full)


def test_batch_resize_with_blocks_or_per_example_kernels_is_refused_clearly():
  x1 = jax.random.normal(jax.random.key(0), (4, 4, 2))
  conv = stax.Conv(3, (2,), padding="SAME")
  _, _, kfn = stax.serial(conv, stax.ImageResize((2, -1, -1), "nearest"))
  with pytest.raises(ValueError, match="cannot be computed in blocks"):
    kfn(x1, None, "nngp", batch_size=2)
  # A Kernel input keeps its own layout when diagonal_batch is unset, so a per-example one
  # cannot feed a batch resize, and a full-batch one can.
  _, _, resize = stax.ImageResize((2, -1, -1), "nearest")
  with pytest.raises(ValueError, match="compute it with diagonal_batch=False"):
    resize(conv[2](x1, None))
  full = conv[2](x1, None, diagonal_spatial=False, diagonal_batch=False)
  out = resize(full)
  assert not out.diagonal_batch and out.cov1.shape[:2] == (2, 2)
  np.testing.assert_allclose(out.nngp, kfn(x1, None, "nngp", diagonal_spatial=False),
                             rtol=1e-12)


def test_a_kernel_of_two_batches_continues_through_layers_that_mix_examples():
  # A Kernel of x1 against a different x2 (diagonal_batch=False) holds each side's covariances
  # among its own examples: a network continued from it through a batch resize or a batch
  # contraction equals the whole network on the inputs (x2 with as many examples and fewer),
  # NTK and masks included.
  x1 = jax.random.normal(jax.random.key(0), (3, 4, 5, 2)).at[0, 1].set(10.0)
  x2 = jax.random.normal(jax.random.key(1), (3, 4, 5, 2)).at[2, 3, 1].set(10.0)
  head = stax.serial(stax.Conv(3, (2, 2), padding="SAME", W_std=1.3, b_std=0.2), stax.Relu())
  contract = stax.DotGeneral(rhs=jax.random.normal(jax.random.key(3), (3, 6)),
                             dimension_numbers=(((0,), (0,)), ((), ())))
  tails = [stax.serial(contract, stax.Dense(4), stax.Relu(), stax.Flatten(), stax.Dense(1)),
           stax.serial(stax.ImageResize((5, 4, 5, -1), "linear"), stax.Dense(3), stax.Relu(),
                       stax.Dense(2), stax.GlobalAvgPool())]
  get = ("nngp", "ntk", "cov1", "cov2")
  full = dict(diagonal_spatial=False, diagonal_batch=False)
  for i, tail in enumerate(tails):
    for b in ((x2, x2[:2]) if i else (x2,)):  # a contraction needs as many examples
      for mask in (None, 10.0):
        want = stax.serial(head, tail)[2](x1, b, get, mask_constant=mask, **full)
        k = head[2](x1, b, mask_constant=mask, **full)
        got = tail[2](k, None, get, **full)
        for g, w in zip(got, want):
          np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-13)
  with pytest.raises(ValueError, match="compute it with diagonal_batch=False"):
    tails[1][2](head[2](x1, x2, diagonal_spatial=False), None, "nngp", diagonal_spatial=False)


def test_a_joint_batch_keeps_each_side_its_own_masks_dropout_and_refuses_batch_wide_layers():
  # Against a different x2 a linear batch resize computes x1 and x2 as one batch: each side's
  # covariances must equal its kernel with itself (the network's output on x1 does not depend
  # on x2), masks and dropout's same-example entries included.
  x1 = jax.random.normal(jax.random.key(0), (4, 3, 2)).at[0, 1].set(10.0)
  x2 = jax.random.normal(jax.random.key(1), (4, 3, 2))
  full = dict(diagonal_batch=False, diagonal_spatial=False)
  resize = lambda: stax.ImageResize((5, -1, -1), "linear")
  # x2 of as many examples as x1 or fewer; two resizes in a row (the second one's halves
  # are the first one's output, of equal length).
  for net in (stax.serial(stax.Dense(3), resize()),
              stax.serial(stax.Dense(3), stax.Dropout(0.5), resize()),
              stax.serial(stax.Dense(3), resize(), stax.Dropout(0.5)),
              stax.serial(stax.Dense(3), resize(), stax.Relu(),
                          stax.ImageResize((3, -1, -1), "linear"))):
    kfn = net[2]
    for mc, b in ((None, x2), (10.0, x2), (None, x2[:3]), (10.0, x2[:3])):
      k = kfn(x1, b, ("nngp", "cov1", "cov2"), mask_constant=mc, **full)
      np.testing.assert_allclose(k.cov1, kfn(x1, None, "nngp", mask_constant=mc, **full),
                                 rtol=1e-12, atol=1e-12)
      np.testing.assert_allclose(k.cov2, kfn(b, None, "nngp", mask_constant=mc, **full),
                                 rtol=1e-12, atol=1e-12)
    # The same inputs passed twice: the same kernel as x2=None (dropout's masks are shared).
    np.testing.assert_allclose(kfn(x2, x2 + 0.0, "nngp", **full), kfn(x2, None, "nngp", **full),
                               rtol=1e-12, atol=1e-12)
  # Layers that act on the whole batch would mix x1's half with x2's: refused, clearly
  # (with x1 alone they work).
  for net in (stax.serial(stax.Dense(3), stax.Index(stax.Slice[:3]), resize()),
              stax.serial(stax.FanOut(2), stax.parallel(stax.Dense(3), stax.Dense(3)),
                          stax.FanInConcat(axis=0), resize()),
              stax.serial(stax.Dense(3), stax.LayerNorm(axis=(0, 1, 2)), resize())):
    net[2](x1, None, "nngp", **full)
    with pytest.raises(ValueError, match="acts across the whole batch"):
      net[2](x1, x2, "nngp", **full)


def test_a_joint_batch_of_unequal_halves_keeps_its_split_through_user_layers_and_branches():
  # x1 of 5 examples, x2 of 3: a layer written in NT's protocol, and an output branch that
  # never mixes examples, keep the cut at x1's count (each side's covariances equal its
  # kernel with itself); branches cut at different places are not summed.
  x1 = jax.random.normal(jax.random.key(0), (5, 4, 2))
  x3 = jax.random.normal(jax.random.key(1), (3, 4, 2))
  full = dict(diagonal_batch=False, diagonal_spatial=False)

  @stax.layer
  def Scale2():
    def kernel_fn(k, **kw):
      del kw
      return k.replace(nngp=4 * k.nngp, ntk=None if k.ntk is None else 4 * k.ntk,
                       cov1=4 * k.cov1, cov2=None if k.cov2 is None else 4 * k.cov2)
    return (lambda key, s: (s, ())), (lambda p, x, **kw: 2.0 * x), kernel_fn

  resize = lambda: stax.ImageResize((4, -1, -1), "linear")
  for net in (stax.serial(stax.Dense(3), Scale2(), resize()),
              stax.serial(stax.Dense(3), stax.FanOut(2), stax.parallel(resize(), Scale2()))):
    kfn = net[2]
    k = jax.tree.leaves(kfn(x1, x3, ("nngp", "cov1", "cov2"), **full))
    alone1, alone3 = (jax.tree.leaves(kfn(x, None, "nngp", **full)) for x in (x1, x3))
    for nngp, cov1, cov2, a1, a3 in zip(k[0::3], k[1::3], k[2::3], alone1, alone3):
      assert nngp.shape[:2] == (a1.shape[0], a3.shape[0])
      np.testing.assert_allclose(cov1, a1, rtol=1e-12, atol=1e-12)
      np.testing.assert_allclose(cov2, a3, rtol=1e-12, atol=1e-12)
  net = stax.serial(stax.Dense(3), stax.FanOut(2),
                    stax.parallel(stax.serial(resize(), stax.Dense(3)), stax.Dense(3)),
                    stax.FanInSum())
  with pytest.raises(ValueError, match="hold different numbers of examples"):
    net[2](x1, x3, "nngp", **full)
