"""Layers: dense, conv, pooling, nonlinearities, layer norm, embedding, attention.

Each constructor returns a :class:`~jaxtheory.nn.core.Layer`. Arguments named as
in neural-tangents mean what they mean there (``W_std``, ``b_std``,
``padding``, ``strides``). Every layer with an infinite-width limit carries its
analytic NNGP/NTK map (:mod:`jaxtheory.kernels.analytic`; nonlinearities:
:mod:`jaxtheory.kernels.nonlinear`); embeddings,
attention and Fourier features have ``kernel=None``. ``width_mult`` marks an output that scales with the
swept width: the layer is built at its capacity (``out_dim``) and, when the run
context carries a width ``w``, only the first ``width_mult * w`` features are
active. Leave it ``None`` for fixed-size outputs (the readout).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxtheory.errors import ConfigError
from jaxtheory.kernels import analytic, nonlinear, padding as pad
from jaxtheory.nn import convops
from jaxtheory.nn.core import (PARAMETRIZATIONS, Feat, Layer, Spec, apply_mask, out_feat,
                               stable_normal, trailing)
from jaxtheory.nn.param import (LRScale, attention_scale, bias_rule, role,
                                vector_lr, weight_rule, width_ratio)

_FLOAT = lambda: jnp.result_type(float)


def _check_positive_int(name, value):
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _draw_weight(key, shape, fin: Feat):
  """``stable_normal(key, shape)``, with the input axis (-2) indexed by active rank.

  Active input features need not be a prefix: after ``flatten`` or
  ``fan_in_concat`` they lie in several blocks. Folding each row's rank among
  the active features into the key (instead of its position) makes the active
  rows the very draws of the unpadded weight. With no mask, or a prefix mask,
  the active rows equal ``stable_normal(key, shape)``.
  """
  if fin.mask is None:
    return stable_normal(key, shape, _FLOAT())
  m = fin.mask.astype(jnp.int32)
  return stable_normal(key, shape, _FLOAT(), row_ids=jnp.cumsum(m) - m)


def _row_col_mask(W, fin: Feat, fout: Feat):
  """Zeroes padded rows (inputs, axis -2) and columns (outputs, axis -1)."""
  if fin.mask is not None:
    W = W * trailing(fin.mask.astype(W.dtype)[:, None], W.ndim)
  if fout.mask is not None:
    W = W * trailing(fout.mask.astype(W.dtype), W.ndim)
  return W


class _Affine:
  """The width bookkeeping shared by dense and conv layers."""

  def __init__(self, out_dim, W_std, b_std, width_mult, receptive=1, parametrization=None):
    if parametrization is not None and parametrization not in PARAMETRIZATIONS:
      raise ValueError(f"unknown parametrization {parametrization!r}; expected None or one of "
                       f"{', '.join(PARAMETRIZATIONS)}")
    self.out_dim, self.W_std, self.b_std = out_dim, W_std, b_std
    self.width_mult, self.receptive = width_mult, receptive
    self.parametrization = parametrization

  def ctx(self, ctx):
    """The run context with this layer's parametrization override applied."""
    if self.parametrization is None or self.parametrization == ctx.parametrization:
      return ctx
    return dataclasses.replace(ctx, parametrization=self.parametrization)

  def out_channels(self, ctx):
    """Finite output channels: the active width when swept, else the capacity."""
    if self.width_mult is None or ctx.width is None:
      return self.out_dim
    return self.width_mult * ctx.width

  def kernel(self, filter_shape=(), strides=(), padding="VALID", name="dense", transpose=False,
             shared=True):
    rule = lambda ctx: analytic.AffineRule(self.parametrization or ctx.parametrization,
                                           ctx.init_scale, self.out_channels(ctx),
                                           width_ratio(ctx))
    return analytic.affine(self.W_std, self.b_std, out_wide=self.width_mult is not None,
                           rule=rule, filter_shape=filter_shape, strides=strides,
                           padding=padding, name=name, transpose=transpose, shared=shared)

  def rules(self, fin: Feat, d_in: int, ctx):
    ctx = self.ctx(ctx)
    fout = out_feat(self.out_dim, self.width_mult, ctx)
    r = role(fin.wide, fout.wide)
    fan_in = self.receptive * fin.active(d_in)
    n = fout.active(self.out_dim) if r == "input" else fin.active(d_in)
    w = weight_rule(ctx, r, fan_in, n, self.W_std, width_ratio(ctx))
    # A bias lives on the output axis; its width is that axis' if wide, else the input's.
    n_b = fout.active(self.out_dim) if fout.wide else n
    b = None if self.b_std is None else bias_rule(ctx, r, n_b, self.b_std, width_ratio(ctx))
    return fout, w, b

  def init_params(self, key, w_shape, fin, d_in, ctx):
    fout, w, b = self.rules(fin, d_in, ctx)
    kW, kb = jax.random.split(key)
    W = _draw_weight(kW, w_shape, fin) * w.std
    W = _row_col_mask(W, fin, fout)
    params, scales = {"W": W}, {"W": w.lr}
    if b is not None:
      params["b"] = apply_mask(stable_normal(kb, (self.out_dim,), _FLOAT()) * b.std, fout)
      scales["b"] = b.lr
    return fout, params, scales

  def finish(self, params, y, fout, w, b):
    y = y * w.mult
    if b is not None:
      y = y + trailing(params["b"] * b.mult, y.ndim)
    return apply_mask(y, fout)


def dense(out_dim: int, W_std: float = 1.0, b_std: float | None = None,
          width_mult: float | None = None, parametrization: str | None = None) -> Layer:
  """Fully connected layer on the last axis: ``y = mult * x @ W + b_mult * b``.

  Args:
    out_dim: output features (the capacity when ``width_mult`` is set).
    W_std: weight scale (NT's meaning: init std ``W_std / sqrt(fan_in)`` in SP).
    b_std: bias scale; ``None`` means no bias (as in NT).
    width_mult: the output has ``width_mult * width`` active features.
    parametrization: overrides ``ctx.parametrization`` for this layer (init,
      apply, learning-rate multipliers and kernel), e.g. NT's per-layer
      ``parameterization``; ``None`` follows the context.
  """
  _check_positive_int("out_dim", out_dim)
  aff = _Affine(out_dim, W_std, b_std, width_mult, parametrization=parametrization)

  def init(key, spec, ctx):
    d_in = spec.shape[-1]
    fout, params, scales = aff.init_params(key, (d_in, out_dim), spec.feat, d_in, ctx)
    return Spec(spec.shape[:-1] + (out_dim,), fout), params, scales

  def apply(params, x, feat, ctx):
    _check_float_input("dense", x)
    fout, w, b = aff.rules(feat, x.shape[-1], ctx)
    return aff.finish(params, x @ params["W"], fout, w, b), fout

  return Layer(init, apply, aff.kernel())


def _check_float_input(layer: str, x) -> None:
  """Integer inputs (token ids) would be multiplied as numbers: refuse them at trace time."""
  if not jnp.issubdtype(x.dtype, jnp.inexact):
    raise ConfigError(f"a {layer} layer got {x.dtype} inputs (token ids?); embed them first "
                      "(nn.embedding) or convert the data to floats")


_SPATIAL = "DHW"


def _check_conv_input(name: str, filter_shape, shape) -> None:
  if len(shape) != len(filter_shape) + 2:
    raise ValueError(
        f"{name} with a {len(filter_shape)}D filter needs inputs (batch, "
        f"{len(filter_shape)} spatial axes, channels), got shape {shape[1:]} per example")


def _conv_dims(nspatial):
  """Channels-last specs with ``nspatial`` spatial axes (any number, 0 included)."""
  s = _SPATIAL[len(_SPATIAL) - nspatial:] if nspatial <= 3 else "ABEFGJKLMPQRSTUVXYZ"[:nspatial]
  if len(s) != nspatial:
    raise ValueError(f"conv supports up to 19 spatial dimensions, got {nspatial}")
  return ("N" + s + "C", s + "IO", "N" + s + "C")


def conv(out_chan: int, filter_shape: Sequence[int], strides: Sequence[int] | None = None,
         padding: str = "VALID", W_std: float = 1.0, b_std: float | None = None,
         width_mult: float | None = None, parametrization: str | None = None) -> Layer:
  """Convolution over channels-last inputs ``(batch, *spatial, channels)``.

  1D, 2D or 3D by the length of ``filter_shape``; ``padding`` is ``'SAME'``,
  ``'VALID'`` or ``'CIRCULAR'`` (periodic, :mod:`jaxtheory.kernels.padding`). Fan-in is ``prod(filter_shape) * active input channels``.
  The convolution is ``lax.conv_general_dilated`` with derivatives that stay fast inside
  loops on CPU (:mod:`jaxtheory.nn.convops`).
  ``parametrization`` overrides ``ctx.parametrization`` for this layer (see
  :func:`dense`).
  """
  return _conv_like("conv", convops.conv_general_dilated, out_chan, filter_shape, strides, padding,
                    W_std, b_std, width_mult, parametrization)


def conv_transpose(out_chan: int, filter_shape: Sequence[int],
                   strides: Sequence[int] | None = None, padding: str = "VALID",
                   W_std: float = 1.0, b_std: float | None = None,
                   width_mult: float | None = None, parametrization: str | None = None) -> Layer:
  """Transposed convolution (``lax.conv_transpose``) over channels-last inputs.

  The output grows by the strides (``'SAME'`` and ``'CIRCULAR'``: ``n * stride``
  positions).
  Fan-in is ``prod(filter_shape) * active input channels``, as in :func:`conv`;
  the kernel is :func:`jaxtheory.kernels.analytic.affine` with ``transpose=True``.
  """
  return _conv_like("conv_transpose", convops.conv_transpose, out_chan, filter_shape, strides,
                    padding, W_std, b_std, width_mult, parametrization, transpose=True)


def conv_local(out_chan: int, filter_shape: Sequence[int], strides: Sequence[int] | None = None,
               padding: str = "VALID", W_std: float = 1.0, b_std: float | None = None,
               width_mult: float | None = None, parametrization: str | None = None) -> Layer:
  """Locally connected layer (an unshared convolution): a separate filter and bias per output
  position (``lax.conv_general_dilated_local``), over channels-last inputs.

  Arguments as in :func:`conv`. ``W`` is ``(*out_spatial, c_in * prod(filter_shape),
  out_chan)`` (lax's layout: the input channel is the slow index), ``b`` is
  ``(*out_spatial, out_chan)``. In the limit, positions no longer covary
  (:func:`jaxtheory.kernels.analytic.affine` with ``shared=False``); each position's
  variance is a convolution's.
  """
  _check_positive_int("out_chan", out_chan)
  filter_shape = tuple(filter_shape)
  strides = tuple(strides) if strides is not None else (1,) * len(filter_shape)
  pad.check(padding)
  dims = _conv_dims(len(filter_shape))
  receptive = math.prod(filter_shape)
  aff = _Affine(out_chan, W_std, b_std, width_mult, receptive, parametrization)
  spatial = tuple(range(1, len(filter_shape) + 1))

  def _conv(x, W):
    if padding == "CIRCULAR":  # periodic input, then VALID: SAME's output shape
      x, p = pad.wrap(x, spatial, filter_shape, strides), "VALID"
    else:
      p = padding
    return lax.conv_general_dilated_local(x, W, strides, p, filter_shape,
                                          dimension_numbers=dims)

  def out_spatial(shape):
    probe = jax.ShapeDtypeStruct(filter_shape + (shape[-1], out_chan), _FLOAT())
    x = jax.ShapeDtypeStruct(shape, _FLOAT())
    p = "SAME" if padding == "CIRCULAR" else padding
    return jax.eval_shape(lambda x, w: lax.conv_general_dilated(
        x, w, strides, p, dimension_numbers=dims), x, probe).shape[1:-1]

  def init(key, spec, ctx):
    _check_conv_input("conv_local", filter_shape, spec.shape)
    c_in = spec.shape[-1]
    out_sp = out_spatial(spec.shape)
    fout, w, b = aff.rules(spec.feat, c_in, ctx)
    kW, kb = jax.random.split(key)
    # Drawn with the input channel on axis -2 (as conv's filters, so padded input channels
    # are masked rows), then laid out as lax wants: (*out, c_in * prod(filter), out).
    W = _draw_weight(kW, out_sp + (receptive, c_in, out_chan), spec.feat) * w.std
    W = _row_col_mask(W, spec.feat, fout)
    W = jnp.swapaxes(W, -3, -2).reshape(out_sp + (c_in * receptive, out_chan))
    params, scales = {"W": W}, {"W": w.lr}
    if b is not None:
      params["b"] = apply_mask(stable_normal(kb, out_sp + (out_chan,), _FLOAT()) * b.std, fout)
      scales["b"] = b.lr
    return Spec((spec.shape[0],) + out_sp + (out_chan,), fout), params, scales

  def apply(params, x, feat, ctx):
    _check_float_input("conv_local", x)
    fout, w, b = aff.rules(feat, x.shape[-1], ctx)
    y = _conv(x, params["W"]) * w.mult
    if b is not None:
      y = y + params["b"][None] * b.mult
    return apply_mask(y, fout), fout

  return Layer(init, apply, aff.kernel(filter_shape, strides, padding, "conv_local",
                                       shared=False))


def _conv_like(name: str, op: Callable, out_chan, filter_shape, strides, padding, W_std, b_std,
               width_mult, parametrization, transpose: bool = False) -> Layer:
  """A convolution or transposed convolution ``op(x, W, strides, padding, dimension_numbers=)``."""
  _check_positive_int("out_chan", out_chan)
  filter_shape = tuple(filter_shape)
  strides = tuple(strides) if strides is not None else (1,) * len(filter_shape)
  pad.check(padding)
  dims = _conv_dims(len(filter_shape))
  aff = _Affine(out_chan, W_std, b_std, width_mult, math.prod(filter_shape), parametrization)
  spatial = tuple(range(1, len(filter_shape) + 1))

  def _conv(x, W):
    if padding != "CIRCULAR":
      return op(x, W, strides, padding, dimension_numbers=dims)
    if not transpose:  # periodic input, then VALID: SAME's output shape
      return op(pad.wrap(x, spatial, filter_shape, strides), W, strides, "VALID",
                dimension_numbers=dims)
    y = op(x, W, strides, "VALID", dimension_numbers=dims)  # folded onto n * stride positions
    return pad.fold(y, spatial, [n * st for n, st in zip(x.shape[1:-1], strides)])

  def init(key, spec, ctx):
    _check_conv_input(name, filter_shape, spec.shape)
    c_in = spec.shape[-1]
    fout, params, scales = aff.init_params(key, filter_shape + (c_in, out_chan),
                                           spec.feat, c_in, ctx)
    out_shape = jax.eval_shape(
        _conv, jax.ShapeDtypeStruct(spec.shape, _FLOAT()),
        jax.ShapeDtypeStruct(filter_shape + (c_in, out_chan), _FLOAT())).shape
    return Spec(out_shape, fout), params, scales

  def apply(params, x, feat, ctx):
    _check_float_input(name, x)
    fout, w, b = aff.rules(feat, x.shape[-1], ctx)
    return aff.finish(params, _conv(x, params["W"]), fout, w, b), fout

  return Layer(init, apply, aff.kernel(filter_shape, strides, padding, name,
                                       transpose=transpose))


def _stateless(fn: Callable, feat_fn: Callable | None = None, kernel=None) -> Layer:
  """A parameter-free layer from ``fn(x, feat, ctx) -> y`` and its kernel map."""

  def init(key, spec, ctx):
    del key
    out = jax.eval_shape(lambda x: fn(x, spec.feat, ctx),
                         jax.ShapeDtypeStruct(spec.shape, _FLOAT()))
    feat = spec.feat if feat_fn is None else feat_fn(spec.feat, spec.shape)
    return Spec(out.shape, feat), (), ()

  def apply(params, x, feat, ctx):
    del params
    return fn(x, feat, ctx), (feat if feat_fn is None else feat_fn(feat, x.shape))

  return Layer(init, apply, kernel)


def flatten() -> Layer:
  """Flattens all but the batch axis (channels-last order)."""

  def feat_fn(feat, shape):
    if feat.mask is None:
      return feat
    return Feat(feat.wide, jnp.broadcast_to(feat.mask, shape[1:]).reshape(-1))

  return _stateless(lambda x, f, c: x.reshape(x.shape[0], -1), feat_fn, analytic.flatten())


def avg_pool(window_shape: Sequence[int], strides: Sequence[int] | None = None,
             padding: str = "VALID", normalize_edges: bool = False,
             normalize: bool = True) -> Layer:
  """Average pooling over spatial axes (NT's ``AvgPool``).

  Divides by the window size, or with ``normalize_edges`` by the number of
  non-padding inputs in each window (differs only for ``'SAME'`` padding;
  ``'CIRCULAR'`` windows are always full). ``normalize=False`` sums instead
  (NT's ``SumPool``).
  """
  window_shape = tuple(window_shape)
  strides = tuple(strides) if strides is not None else window_shape

  pad.check(padding)

  size = math.prod(window_shape) if normalize else 1

  def fn(x, feat, ctx):
    win = (1,) + window_shape + (1,)
    st = (1,) + strides + (1,)
    if padding == "CIRCULAR":  # every window full: periodic input, then VALID
      x = pad.wrap(x, range(1, x.ndim - 1), window_shape, strides)
      return lax.reduce_window(x, 0.0, lax.add, win, st, "VALID") / size
    s = lax.reduce_window(x, 0.0, lax.add, win, st, padding)
    if not (normalize_edges and normalize):
      return s / size
    counts = lax.reduce_window(jnp.ones(x.shape[1:-1], x.dtype), 0.0, lax.add, window_shape,
                               strides, padding)
    return s / counts.reshape((1,) + counts.shape + (1,))

  return _stateless(fn, kernel=analytic.avg_pool(window_shape, strides, padding,
                                                 normalize_edges, normalize))


def global_avg_pool(normalize: bool = True) -> Layer:
  """Mean over all spatial axes: ``(batch, *spatial, C) -> (batch, C)``; ``normalize=False``:
  the sum (NT's ``GlobalSumPool``)."""
  reduce = jnp.mean if normalize else jnp.sum
  return _stateless(lambda x, f, c: reduce(x, axis=tuple(range(1, x.ndim - 1))),
                    kernel=analytic.global_avg_pool(normalize))


def take_last() -> Layer:
  """Keeps the last position of a sequence: ``(batch, T, C) -> (batch, C)``."""
  return _stateless(lambda x, f, c: x[:, -1], kernel=analytic.take_last())


def _activation(fn: Callable[[jax.Array], jax.Array], kernel) -> Layer:
  """An elementwise nonlinearity with a closed-form kernel map."""
  return _stateless(lambda x, feat, ctx: apply_mask(fn(x), feat), kernel=kernel)


def elementwise(fn: Callable[[jax.Array], jax.Array], *, deg: int = 25,
                df: Callable[[jax.Array], jax.Array] | None = None) -> Layer:
  """Any elementwise nonlinearity ``fn``; inactive features stay exactly zero.

  Its kernel is computed by Gauss-Hermite quadrature of degree ``deg`` (NT's
  ``ElementwiseNumerical``; see :func:`jaxtheory.kernels.nonlinear.gauss_hermite`),
  the NTK with ``df`` (default: the derivative of ``fn`` by autodiff).
  """
  name = getattr(fn, "__name__", "elementwise")
  return _activation(fn, nonlinear.gauss_hermite(fn, deg, df, name))


def relu() -> Layer:
  return _activation(jax.nn.relu, nonlinear.relu())


def ab_relu(a: float, b: float) -> Layer:
  """``a * min(x, 0) + b * max(x, 0)`` (NT's ``ABRelu``)."""
  return _activation(lambda x: a * jnp.minimum(x, 0) + b * jnp.maximum(x, 0),
                     nonlinear.ab_relu(a, b))


def leaky_relu(alpha: float) -> Layer:
  return ab_relu(alpha, 1.0)


def erf(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
  """``a * erf(b * x) + c`` (NT's ``Erf``)."""
  return _activation(lambda x: a * jax.scipy.special.erf(b * x) + c, nonlinear.erf(a, b, c))


def tanh(deg: int = 25) -> Layer:
  """``tanh``; kernel by Gauss-Hermite quadrature of degree ``deg``."""
  return elementwise(jnp.tanh, deg=deg, df=lambda x: 1 - jnp.tanh(x) ** 2)


def gelu(approximate: bool = False) -> Layer:
  """GELU; exact (erf-based) by default, as NT's ``Gelu``.

  The exact GELU has a closed-form kernel; the tanh approximation's kernel is
  computed by quadrature.
  """
  fn = lambda x: jax.nn.gelu(x, approximate=approximate)
  if approximate:
    return elementwise(fn)
  return _activation(fn, nonlinear.gelu())


def sigmoid(deg: int = 25) -> Layer:
  """The logistic function; kernel by Gauss-Hermite quadrature of degree ``deg``."""
  return elementwise(jax.nn.sigmoid, deg=deg)


def sin(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
  """``a * sin(b * x + c)`` (NT's ``Sin``)."""
  return _activation(lambda x: a * jnp.sin(b * x + c), nonlinear.sin(a, b, c))


def cos(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
  """``a * cos(b * x + c)`` (NT's ``Cos``)."""
  return _activation(lambda x: a * jnp.cos(b * x + c), nonlinear.cos(a, b, c))


def sign() -> Layer:
  """``sign(x)`` (NT's ``Sign``; its NTK is zero)."""
  return _activation(jnp.sign, nonlinear.sign())


def exp(a: float = 1.0, b: float = 1.0) -> Layer:
  """``a * exp(b * x)`` (NT's ``Exp``)."""
  return _activation(lambda x: a * jnp.exp(b * x), nonlinear.exp(a, b))


def monomial(degree: int) -> Layer:
  """``x ** degree`` (NT's ``Monomial``)."""
  kernel = nonlinear.monomial(degree)
  return _activation(lambda x: x ** degree, kernel)


def rectified_monomial(degree: int) -> Layer:
  """``(x >= 0) * x ** degree`` (NT's ``RectifiedMonomial``)."""
  kernel = nonlinear.rectified_monomial(degree)
  return _activation(lambda x: jnp.where(x >= 0, x ** degree, 0.0).astype(x.dtype), kernel)


def rbf(gamma: float = 1.0) -> Layer:
  """``sqrt(2) sin(sqrt(2 gamma) x + pi/4)``, whose NNGP is an RBF kernel (NT's ``Rbf``)."""
  return _activation(lambda x: jnp.sqrt(2.0) * jnp.sin(jnp.sqrt(2.0 * gamma) * x + jnp.pi / 4),
                     nonlinear.rbf(gamma))


def gaussian(a: float = 1.0, b: float = -1.0) -> Layer:
  """``a * exp(b * x ** 2)`` (NT's ``Gaussian``)."""
  return _activation(lambda x: a * jnp.exp(b * x ** 2), nonlinear.gaussian(a, b))


def gabor() -> Layer:
  """``exp(-x ** 2) * sin(x)`` (NT's ``Gabor``)."""
  return _activation(lambda x: jnp.exp(-x ** 2) * jnp.sin(x), nonlinear.gabor())


def hermite(degree: int) -> Layer:
  """The normalized Hermite polynomial ``He_n(x) / sqrt(n!)`` (NT's ``Hermite``; unit-variance inputs)."""
  kernel = nonlinear.hermite(degree)
  p = np.polynomial.hermite_e.herme2poly([0] * degree + [1])[::-1]
  norm = math.sqrt(math.factorial(degree))
  return _activation(lambda x: jnp.polyval(jnp.asarray(p, x.dtype), x) / norm, kernel)


def polynomial(coef: Sequence[float]) -> Layer:
  """``sum_i coef[i] * x ** i`` (NT's ``Polynomial``; numpy's coefficient order)."""
  kernel = nonlinear.polynomial(coef)
  c = np.asarray(coef, dtype=float).reshape(-1)[::-1]
  return _activation(lambda x: jnp.polyval(jnp.asarray(c, x.dtype), x) if c.size
                     else jnp.zeros_like(x), kernel)


def dual_elementwise(fn: Callable | None, nngp_fn: Callable | None,
                     d_nngp_fn: Callable | None = None) -> Layer:
  """A nonlinearity given with its dual (NT's ``Elementwise``).

  ``fn`` (``None``: no finite-width ``apply``) and ``nngp_fn(cov12, var1, var2)
  = E[fn(u) fn(v)]`` (``None``: no kernel); see
  :func:`jaxtheory.kernels.nonlinear.dual`.
  """
  if fn is None and nngp_fn is None:
    raise ValueError("dual_elementwise needs fn or nngp_fn (else the layer does nothing)")
  name = getattr(fn if fn is not None else nngp_fn, "__name__", "elementwise")
  kernel = None if nngp_fn is None else nonlinear.dual(nngp_fn, d_nngp_fn, name)

  def apply_fn(x):
    if fn is None:
      raise NotImplementedError(f"{name}: no finite-width function was given (fn=None)")
    return fn(x)

  # Elementwise keeps the shape: init needs no fn (NT's kernel-only layers still init).
  lay = _activation(apply_fn, kernel)
  return Layer(lambda key, spec, ctx: (spec, (), ()), lay.apply, lay.kernel)


def identity() -> Layer:
  """The identity as an activation (a deep linear network); its kernel is the identity."""
  return _activation(lambda x: x, analytic.identity())


def layer_norm(eps: float = 1e-12, affine: bool = False) -> Layer:
  """Normalizes the last axis over its *active* features (NT's ``LayerNorm``).

  With ``affine=True`` a gain (init 1) and bias (init 0) follow.
  """

  def normalize(x, feat):
    n = feat.active(x.shape[-1])
    xm = apply_mask(x, feat)
    mu = jnp.sum(xm, -1, keepdims=True) / n
    var = jnp.sum(apply_mask((x - mu) ** 2, feat), -1, keepdims=True) / n
    return apply_mask((x - mu) * lax.rsqrt(var + eps), feat)

  def init(key, spec, ctx):
    del key
    if not affine:
      return spec, (), ()
    d = spec.shape[-1]
    lr = (vector_lr(ctx, spec.feat.active(d), width_ratio(ctx)) if spec.feat.wide
          else LRScale(1.0, 1.0))
    params = {"g": apply_mask(jnp.ones((d,), _FLOAT()), spec.feat),
              "b": jnp.zeros((d,), _FLOAT())}
    return spec, params, {"g": lr, "b": lr}

  def apply(params, x, feat, ctx):
    y = normalize(x, feat)
    if affine:
      y = y * trailing(params["g"], y.ndim) + trailing(params["b"], y.ndim)
    return y, feat

  return Layer(init, apply, analytic.layer_norm(eps, affine,
                                                parametrization=lambda ctx: ctx.parametrization))


def embedding(vocab_size: int, dim: int, W_std: float = 1.0,
              width_mult: float | None = None) -> Layer:
  """Token embedding: integer inputs ``(batch, T)`` to ``(batch, T, dim)``."""
  _check_positive_int("vocab_size", vocab_size)
  _check_positive_int("dim", dim)

  def rules(ctx):
    fout = out_feat(dim, width_mult, ctx)
    r = role(False, fout.wide)
    return fout, weight_rule(ctx, r, 1, fout.active(dim), W_std, width_ratio(ctx))

  def init(key, spec, ctx):
    fout, w = rules(ctx)
    W = apply_mask(stable_normal(key, (vocab_size, dim), _FLOAT()) * w.std, fout)
    return Spec(spec.shape + (dim,), fout), {"W": W}, {"W": w.lr}

  def apply(params, x, feat, ctx):
    fout, w = rules(ctx)
    if not jnp.issubdtype(x.dtype, jnp.integer):
      raise TypeError(f"embedding expects integer token ids, got {x.dtype}")
    return jnp.take(params["W"], x, axis=0) * w.mult, fout

  return Layer(init, apply)


def positional_embedding(W_std: float = 1.0) -> Layer:
  """Adds a learned embedding per position to ``(batch, T, dim)`` inputs."""

  def rules(feat, d, ctx):
    return weight_rule(ctx, role(False, feat.wide), 1, feat.active(d), W_std,
                       width_ratio(ctx))

  def init(key, spec, ctx):
    T, d = spec.shape[-2:]
    w = rules(spec.feat, d, ctx)
    P = apply_mask(stable_normal(key, (T, d), _FLOAT()) * w.std, spec.feat)
    return spec, {"P": P}, {"P": w.lr}

  def apply(params, x, feat, ctx):
    w = rules(feat, x.shape[-1], ctx)
    return apply_mask(x + trailing(params["P"] * w.mult, x.ndim), feat), feat

  return Layer(init, apply)


def causal_self_attention(num_heads: int, W_std: float = 1.0) -> Layer:
  """Multi-head causal self-attention on ``(batch, T, d_model)``.

  Query, key, value and output weights are stored per head,
  ``(d_model, heads, d_head)``, so padding ``d_model`` pads each head's
  dimension and a padded model equals the unpadded one exactly. The active
  width must be a multiple of ``num_heads``. Scores are scaled by
  ``1/sqrt(d_head)`` (SP, NTK) or ``1/d_head`` (muP, mf).
  """
  _check_positive_int("num_heads", num_heads)
  H = num_heads

  def feats(feat: Feat, D: int, ctx):
    dh = D // H
    if feat.mask is None:
      return Feat(feat.wide), dh
    n_head = feat.active(D) // H
    return Feat(feat.wide, jnp.broadcast_to(jnp.arange(dh) < n_head, (H, dh))), n_head

  def rules(feat, D, ctx):
    r = role(feat.wide, feat.wide)
    d = feat.active(D)
    return weight_rule(ctx, r, d, d, W_std, width_ratio(ctx))

  def init(key, spec, ctx):
    D = spec.shape[-1]
    if D % H:
      raise ValueError(f"d_model {D} is not a multiple of num_heads {H}")
    fh, _ = feats(spec.feat, D, ctx)
    w = rules(spec.feat, D, ctx)
    ks = jax.random.split(key, 4)
    params = {}
    for k, name in zip(ks[:3], "qkv"):
      W = stable_normal(k, (D, H, D // H), _FLOAT()) * w.std
      if spec.feat.mask is not None:
        W = W * spec.feat.mask[:, None, None] * fh.mask[None]
      params[name] = W
    Wo = stable_normal(ks[3], (H, D // H, D), _FLOAT()) * w.std
    if spec.feat.mask is not None:
      Wo = Wo * fh.mask[..., None] * spec.feat.mask[None, None]
    params["o"] = Wo
    return spec, params, {n: w.lr for n in params}

  def apply(params, x, feat, ctx):
    B, T, D = x.shape
    fh, n_head = feats(feat, D, ctx)
    w = rules(feat, D, ctx)
    q, k, v = (jnp.einsum("btd,dhe->bthe", x, params[n]) * w.mult for n in "qkv")
    s = jnp.einsum("bqhe,bkhe->bhqk", q, k) * attention_scale(ctx, n_head, width_ratio(ctx))
    causal = jnp.tril(jnp.ones((T, T), bool))
    s = jnp.where(trailing(causal, s.ndim), s, -jnp.inf)
    a = jax.nn.softmax(s, axis=-1)
    o = jnp.einsum("bhqk,bkhe->bqhe", a, v)
    y = jnp.einsum("bqhe,hed->bqd", o, params["o"]) * w.mult
    return apply_mask(y, feat), feat

  return Layer(init, apply)


def fourier_features(num: int, scale: float = 1.0) -> Layer:
  """Fixed random Fourier features ``[sin(2 pi x B), cos(2 pi x B)]`` (Tancik et al. 2020).

  ``B ~ N(0, scale^2)`` of shape ``(d_in, num)`` is a parameter with learning
  rate zero; the output has ``2 * num`` features.
  """
  _check_positive_int("num", num)

  def init(key, spec, ctx):
    B = jax.random.normal(key, (spec.shape[-1], num), _FLOAT()) * scale
    zero = LRScale(0.0, 0.0)
    return Spec(spec.shape[:-1] + (2 * num,)), {"B": B}, {"B": zero}

  def apply(params, x, feat, ctx):
    z = 2 * jnp.pi * x @ lax.stop_gradient(params["B"])
    return jnp.concatenate([jnp.sin(z), jnp.cos(z)], -1), Feat()

  return Layer(init, apply)
