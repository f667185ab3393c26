"""``stax`` on any layout: Conv ``dimension_numbers``, ``batch_axis``/``channel_axis`` (as NT)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxtheory import stax
from jaxtheory.kernels import analytic
from linear_exact import jacobian_kernel


pytestmark = pytest.mark.usefixtures("x64")


def _close(a, b, **kw):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), **kw)


def _x(shape=(4, 3, 5, 2), seed=0):
  return jax.random.normal(jax.random.key(seed), shape)


def _net(dn):
  return stax.serial(stax.Conv(3, (2, 3), padding="SAME", b_std=0.1, dimension_numbers=dn),
                     stax.Relu(),
                     stax.Conv(2, (2, 3), strides=(1, 2), dimension_numbers=dn))


@pytest.mark.parametrize("spec,perm", [("NCHW", (0, 3, 1, 2)), ("CWNH", (3, 2, 0, 1))])
def test_conv_dimension_numbers_match_channels_last(spec, perm):
  """The same network on transposed inputs: transposed outputs, the same kernel (spatial H, W)."""
  x = _x()
  init_ref, apply_ref, kfn_ref = _net(None)
  init, apply, kfn = _net((spec, "OIHW", spec))
  xt = jnp.transpose(x, perm)
  shape_ref, params = init_ref(jax.random.key(1), x.shape)
  shape, drawn_t = init(jax.random.key(1), xt.shape)
  assert shape == tuple(shape_ref[i] for i in perm)
  # NT's parameters: the filter laid out as "OIHW", the bias shaped like the output (drawn in
  # that layout, as NT draws them). The same weights, transposed, give the transposed outputs.
  params_t = []
  for p, p_t in zip(params, drawn_t):
    if p == ():
      assert p_t == ()
      params_t.append(())
      continue
    (w, b), (w_t, b_t) = p, p_t
    assert w_t.shape == jnp.transpose(w, (3, 2, 0, 1)).shape
    assert (b is None) == (b_t is None)
    params_t.append((jnp.transpose(w, (3, 2, 0, 1)),
                     None if b is None else jnp.transpose(b, perm)))
    if b is not None:
      assert b_t.shape == params_t[-1][1].shape
  _close(apply(params_t, xt), jnp.transpose(apply_ref(params, x), perm), rtol=1e-12)
  # NT's convention: the kernel's spatial axes are in the output spec's order.
  order = (0, 1, 2, 3, 4, 5) if spec.index("H") < spec.index("W") else (0, 1, 4, 5, 2, 3)
  k, k_ref = kfn(xt, None, ("nngp", "ntk")), kfn_ref(x, None, ("nngp", "ntk"))
  for a, b in zip(k, k_ref):
    _close(a, jnp.transpose(b, order), rtol=1e-12)


def test_conv_apply_equals_lax_with_the_same_dimension_numbers():
  dn = ("NWHC", "HWIO", "NCWH")
  x = jnp.transpose(_x(), (0, 2, 1, 3))  # N, W=5, H=3, C; out N, C=4, W=3, H=3
  init, apply, kfn = stax.Conv(4, (2, 3), strides=(1, 2), padding="SAME", W_std=1.5,
                               dimension_numbers=dn)
  shape, params = init(jax.random.key(2), x.shape)
  y = apply(params, x)
  ref = lax.conv_general_dilated(x, params[0], (1, 2), "SAME", dimension_numbers=dn)
  _close(y, 1.5 / np.sqrt(2 * 3 * 2) * ref, rtol=1e-12)
  assert shape == y.shape == (4, 4, 3, 3)
  # NT's convention: the kernel's spatial axes are the output's (W then H here).
  k = kfn(x, None, "nngp")
  k_ref = stax.Conv(4, (2, 3), strides=(1, 2), padding="SAME", W_std=1.5)[2](
      jnp.transpose(x, (0, 2, 1, 3)), None, "nngp")
  assert k.shape == (4, 4, 3, 3, 3, 3)
  _close(k, jnp.transpose(k_ref, (0, 1, 4, 5, 2, 3)), rtol=1e-12)


def test_dense_and_pooling_batch_and_channel_axes():
  x = _x((3, 5, 4))  # H, N, C
  init, apply, kfn = stax.serial(stax.Dense(6, b_std=0.2, batch_axis=1, channel_axis=2),
                                 stax.Erf(),
                                 stax.AvgPool((2,), batch_axis=1, channel_axis=2),
                                 stax.GlobalAvgPool(batch_axis=1, channel_axis=2))
  init_r, apply_r, kfn_r = stax.serial(stax.Dense(6, b_std=0.2), stax.Erf(), stax.AvgPool((2,)),
                                       stax.GlobalAvgPool())
  xs = jnp.transpose(x, (1, 0, 2))
  shape, params = init(jax.random.key(4), x.shape)
  assert shape == (5, 6)
  _close(apply(params, x), apply_r(params, xs), rtol=1e-12)
  _close(kfn(x, None, "ntk"), kfn_r(xs, None, "ntk"), rtol=1e-12)  # kernel: unchanged
  # Channels before batch: GlobalAvgPool answers (channels, batch), as NT's.
  init_c, apply_c, _ = stax.serial(stax.Dense(6, batch_axis=1, channel_axis=0),
                                   stax.GlobalAvgPool(batch_axis=1, channel_axis=0))
  xc = jnp.transpose(x, (2, 1, 0))
  shape, params = init_c(jax.random.key(5), xc.shape)
  assert shape == (6, 5) == apply_c(params, xc).shape


def test_permute_spatial_both_layouts():
  x = _x((2, 3, 4, 2))
  for diag in (True, False):
    k = analytic.inputs_to_kernel(x, diagonal_spatial=diag)
    kt = analytic.inputs_to_kernel(jnp.transpose(x, (0, 2, 1, 3)), diagonal_spatial=diag)
    _close(analytic.permute_spatial(k, (1, 0)).nngp, kt.nngp)
    _close(analytic.permute_spatial(k, (1, 0)).cov1, kt.cov1)


def test_bad_dimension_numbers_are_refused():
  with pytest.raises(ValueError, match="do not describe a 2D convolution"):
    stax.Conv(3, (2, 2), dimension_numbers=("NCHW", "OIHW", "NCDW"))
  with pytest.raises(ValueError, match="do not describe a 1D convolution"):
    stax.Conv(3, (2,), dimension_numbers=("NCHW", "OIHW", "NCHW"))


def test_flatten_and_global_pool_outputs_are_diagonal_spatial_as_nt():
  """NT's Flatten/GlobalAvgPool answer diagonal_spatial=True (no spatial axes left): a network
  flattening images has the Kernel object of the dense network on flat inputs."""
  x = _x((3, 2, 2, 2))
  _, _, k_fc = stax.serial(stax.Dense(4, 1.5, 0.1), stax.Erf())
  _, _, k_bot = stax.serial(stax.Flatten(), stax.Dense(4, 1.5, 0.1), stax.Erf())
  a, b = k_bot(x), k_fc(x.reshape(3, -1))
  assert a.diagonal_spatial and b.diagonal_spatial
  _close(a.nngp, b.nngp, rtol=1e-12)
  _, _, k_pool = stax.serial(stax.Conv(3, (2, 2)), stax.Relu(), stax.GlobalAvgPool())
  assert k_pool(x).diagonal_spatial
  # Branches without spatial axes combine whatever layout each was computed in.
  _, _, k_sum = stax.serial(stax.FanOut(2), stax.parallel(
      stax.serial(stax.Conv(3, (2, 2)), stax.Relu(), stax.GlobalAvgPool(), stax.Dense(2)),
      stax.serial(stax.Flatten(), stax.Dense(2))), stax.FanInSum())
  assert k_sum(x, None, "nngp").shape == (3, 3)


@pytest.mark.parametrize("conv", [stax.Conv, stax.ConvTranspose, stax.ConvLocal],
                         ids=["conv", "conv_transpose", "conv_local"])
def test_convolutions_with_no_spatial_axes_are_dense_layers(conv):
  x1, x2 = (jax.random.normal(jax.random.key(k), (n, 3)) for k, n in ((0, 2), (1, 4)))
  net = stax.serial(conv(16, (), W_std=1.3, b_std=0.2), stax.Relu(), conv(1, ()))
  dense = stax.serial(stax.Dense(16, 1.3, 0.2), stax.Relu(), stax.Dense(1))
  for get in ("nngp", "ntk"):
    np.testing.assert_allclose(net[2](x1, x2, get), dense[2](x1, x2, get), rtol=1e-12)
  _, params = net[0](jax.random.key(2), x1.shape)
  np.testing.assert_allclose(net[1](params, x1), dense[1](params, x1), rtol=1e-12)


@pytest.mark.parametrize("conv", [stax.Conv, stax.ConvTranspose, stax.ConvLocal],
                         ids=["conv", "conv_transpose", "conv_local"])
def test_four_dimensional_convolutions_have_exact_kernels(conv):
  x1, x2 = (jax.random.normal(jax.random.key(k), (n, 3, 2, 2, 3, 2)) for k, n in ((0, 2), (1, 1)))
  init, apply, kernel_fn = conv(3, (2, 1, 2, 1), padding="SAME", W_std=1.3, b_std=0.2)
  _, params = init(jax.random.key(2), x1.shape)
  np.testing.assert_allclose(kernel_fn(x1, x2, "nngp", diagonal_spatial=False),
                             jacobian_kernel(apply, params, x1, x2), rtol=1e-10, atol=1e-12)


def test_flatten_with_batch_axes_anywhere():
  """NT's Flatten(batch_axis, batch_axis_out): the kernel is the batch-first Flatten's."""
  x = jax.random.normal(jax.random.key(0), (4, 3, 5, 2))  # H N W C
  ref = stax.serial(stax.Conv(8, (2, 2), padding="SAME"), stax.Relu(), stax.Flatten(),
                    stax.Dense(3))
  for out in (0, 1):
    net = stax.serial(stax.Conv(8, (2, 2), padding="SAME", dimension_numbers=("HNWC", "HWIO",
                                                                              "HNWC")),
                      stax.Relu(), stax.Flatten(1, out),
                      stax.Dense(3, batch_axis=out, channel_axis=1 - out))
    np.testing.assert_allclose(net[2](x, None, "ntk"), ref[2](jnp.swapaxes(x, 0, 1), None, "ntk"),
                               rtol=1e-12)
    _, flat = stax.Flatten(1, out)[:2]
    y = flat((), x)
    want = jnp.moveaxis(x, 1, 0).reshape(3, -1)
    np.testing.assert_array_equal(y, want if out == 0 else want.T)


def test_kernel_reports_the_output_layout_in_its_shapes():
  """NT's Kernel.shape1/shape2/batch_axis/channel_axis describe the last layer's layout."""
  x1 = jax.random.normal(jax.random.key(0), (4, 3, 5, 2))  # H N W C
  conv = stax.Conv(8, (2, 2), padding="SAME", dimension_numbers=("HNWC", "HWIO", "CNWH"))
  k = stax.serial(conv, stax.Relu())[2](x1, x1[:, :2])
  assert (k.shape1, k.shape2, k.batch_axis, k.channel_axis) == ((8, 3, 5, 4), (8, 2, 5, 4), 1, 0)
  net = stax.serial(conv, stax.Relu(), stax.Flatten(1, 1),
                    stax.Dense(7, batch_axis=1, channel_axis=0))
  got = net[2](x1, None, ("nngp", "shape1"))
  assert got.shape1 == (7, 3) and got.nngp.shape == (3, 3)
  assert stax.serial(conv, stax.GlobalAvgPool(1, 0))[2](x1, None).shape1 == (8, 3)
