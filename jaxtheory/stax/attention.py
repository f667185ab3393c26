"""Global self-attention of :mod:`jaxtheory.stax` (NT's ``stax.GlobalSelfAttention``), with
its infinite-width kernel (:mod:`jaxtheory.kernels.attention`)."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxtheory.kernels import attention as katt, masking as kmasking
from jaxtheory.nn import core, masking
from jaxtheory.stax._core import _moved_axes, _name_layers, _Triple


class PositionalEmbedding(enum.Enum):
  """Positional embeddings of :func:`GlobalSelfAttention`: none, added to the input, or
  concatenated to it along the channels."""
  NONE = "NONE"
  SUM = "SUM"
  CONCAT = "CONCAT"


class AttentionMechanism(enum.Enum):
  """How :func:`GlobalSelfAttention` turns key-query dot products into attention weights."""
  SOFTMAX = "SOFTMAX"
  IDENTITY = "IDENTITY"
  ABS = "ABS"
  RELU = "RELU"

  def fn(self) -> Callable:
    return katt.mechanism_fn(self.value)


def GlobalSelfAttention(
    n_chan_out: int, n_chan_key: int, n_chan_val: int, n_heads: int,
    linear_scaling: bool = True, W_key_std: float = 1.0, W_value_std: float = 1.0,
    W_query_std: float = 1.0, W_out_std: float = 1.0, b_std: float | None = None,
    attention_mechanism: str = "SOFTMAX", pos_emb_type: str = "NONE",
    pos_emb_p_norm: float = 2, pos_emb_decay_fn: Callable | None = None,
    n_chan_pos_emb: int | None = None, W_pos_emb_std: float = 1.0, val_pos_emb: bool = False,
    batch_axis: int = 0, channel_axis: int = -1) -> _Triple:
  r"""Multi-head scaled dot-product self-attention over all positions, NTK-parametrized.

  Per head ``h``: keys ``K = x W_K``, queries ``Q = x W_Q`` and values
  ``V = x W_V`` (weights standard normal, each scaled by ``1 / sqrt(fan_in)``);
  weights ``phi(Q K^T * scale)`` with ``scale = W_query_std * W_key_std /
  (n_chan_key * c_in)`` under ``linear_scaling`` (``W_Q`` tied to ``W_K``), else
  ``1 / sqrt(n_chan_key)`` in place of ``1 / n_chan_key`` (independent ``W_Q``);
  the heads' outputs ``phi(...) V`` are concatenated and mapped by
  ``W_out * W_out_std * W_value_std`` to ``n_chan_out`` channels, plus
  ``b_std * b``. ``kernel_fn`` is the limit of infinitely many heads and key,
  query and value channels (:mod:`jaxtheory.kernels.attention`: closed forms for
  ``linear_scaling=True`` with any mechanism and for ``'IDENTITY'`` without).

  Args:
    n_chan_out: output channels.
    n_chan_key: key (and query) channels per head.
    n_chan_val: value channels per head.
    n_heads: number of heads.
    linear_scaling: see above.
    W_key_std: key weight scale (only ``W_key_std * W_query_std`` matters).
    W_value_std: value weight scale (only ``W_value_std * W_out_std`` matters).
    W_query_std: query weight scale.
    W_out_std: output weight scale.
    b_std: bias scale, ``None`` for no bias.
    attention_mechanism: ``'SOFTMAX'`` (over the keys), ``'IDENTITY'``, ``'ABS'`` or
      ``'RELU'``.
    pos_emb_type: ``'NONE'``, ``'SUM'`` (added to the input) or ``'CONCAT'`` (appended
      to its channels): a trainable standard-normal array per position and channel.
    pos_emb_p_norm: ``p`` of the distances between positions.
    pos_emb_decay_fn: maps the distance ``sum_a |s_a - t_a|**p`` between two positions
      to their embeddings' correlation (the embeddings are multiplied by the Cholesky
      factor of that matrix); ``None``: independent positions.
    n_chan_pos_emb: channels of the embeddings (``None``: the input's; with ``'SUM'``
      it must be the input's).
    W_pos_emb_std: the embeddings' scale.
    val_pos_emb: the values see the embeddings too (else only keys and queries).
    batch_axis: the input's batch axis.
    channel_axis: the input's channel axis; the other axes are the positions.

  Returns:
    ``(init_fn, apply_fn, kernel_fn)``; the parameters are NT's tuple
    ``(W_Q or None, W_K, W_V, W_out, b or None, pos_emb or None)`` with ``W_K``
    ``(n_heads, c_in, n_chan_key)``, ``W_V`` ``(n_heads, c_in, n_chan_val)`` and
    ``W_out`` ``(n_chan_val * n_heads, n_chan_out)`` (rows value-channel major).
  """
  pos = _choice(PositionalEmbedding, pos_emb_type, "pos_emb_type")
  mech = _choice(AttentionMechanism, attention_mechanism, "attention_mechanism")
  for name, v in (("n_chan_out", n_chan_out), ("n_chan_key", n_chan_key),
                  ("n_chan_val", n_chan_val), ("n_heads", n_heads)):
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
      raise ValueError(f"GlobalSelfAttention: {name} must be a positive integer, got {v!r}")
  QK_std, OV_std = W_query_std * W_key_std, W_out_std * W_value_std
  phi = katt.mechanism_fn(mech)

  def pe_channels(c_in):
    if pos == "SUM" and n_chan_pos_emb not in (None, c_in):
      raise ValueError(f"GlobalSelfAttention: pos_emb_type='SUM' adds the embeddings to the "
                       f"input, so n_chan_pos_emb must be None or the input's {c_in} channels, "
                       f"got {n_chan_pos_emb}")
    return c_in if n_chan_pos_emb is None else n_chan_pos_emb

  def init(key, spec, ctx):
    del ctx
    shape = spec.shape
    c_in = shape[-1]
    kq, kk, kv, ko, kb, kp = jax.random.split(key, 6)
    normal = lambda k, s: jax.random.normal(k, s, jnp.result_type(float))
    # NT draws the embeddings and the bias laid out as the input: drawn so, then moved here.
    laid = lambda k, s: _from_input_layout(normal(k, _to_input_layout_shape(s)))
    c_keys = c_vals = c_in
    pe = None
    if pos != "NONE":
      n_pe = pe_channels(c_in)
      pe = laid(kp, (1,) + tuple(shape[1:-1]) + (n_pe,))
      if pos == "CONCAT":
        c_keys += n_pe
        c_vals += n_pe if val_pos_emb else 0
    W_K = normal(kk, (n_heads, c_keys, n_chan_key))
    W_V = normal(kv, (n_heads, c_vals, n_chan_val))
    W_out = normal(ko, (n_chan_val * n_heads, n_chan_out))
    b = None if b_std is None else laid(kb, (1,) * (len(shape) - 1) + (n_chan_out,))
    W_Q = None if linear_scaling else normal(kq, (n_heads, c_keys, n_chan_key))
    params = (W_Q, W_K, W_V, W_out, b, pe)
    scales = jax.tree.map(lambda _: 1.0, params)
    return core.Spec(tuple(shape[:-1]) + (n_chan_out,)), params, scales

  def forward(params, x, mask):
    W_Q, W_K, W_V, W_out, b, pe = params
    n, sp, c_in = x.shape[0], x.shape[1:-1], x.shape[-1]
    T = math.prod(sp)
    x_vals = x
    if pe is not None:
      if pos_emb_decay_fn is not None:
        R = katt.position_covariance(sp, pos_emb_p_norm, pos_emb_decay_fn).astype(pe.dtype)
        L = jnp.linalg.cholesky(R)
        pe = (L @ pe.reshape(T, -1)).reshape(pe.shape)
      pe = jnp.broadcast_to(pe, (n,) + pe.shape[1:])
      if mask is not None:
        pe = jnp.where(jnp.broadcast_to(kmasking.collapse_channels(mask), pe.shape[:-1] + (1,)),
                       jnp.zeros((), pe.dtype), pe)
      pe = pe * W_pos_emb_std
      if pos == "SUM":
        x = x + pe
      else:
        x = jnp.concatenate([x, pe], axis=-1)
      if val_pos_emb:
        x_vals = x
    x, x_vals = x.reshape(n, T, -1), x_vals.reshape(n, T, -1)
    keys = jnp.einsum("ntc,hcd->hntd", x, W_K)
    queries = keys if W_Q is None else jnp.einsum("ntc,hcd->hntd", x, W_Q)
    values = jnp.einsum("ntc,hcd->hntd", x_vals, W_V)
    norm = x.shape[-1] * (n_chan_key if linear_scaling else math.sqrt(n_chan_key))
    logits = jnp.einsum("hnsd,hntd->hnst", queries, keys) * (QK_std / norm)
    if mask is not None:
      keys_masked = jnp.broadcast_to(jnp.all(mask, axis=-1), (n,) + sp).reshape(n, T)
      fill = jnp.finfo(logits.dtype).min if mech == "SOFTMAX" else 0
      logits = jnp.where(keys_masked[None, :, None, :], jnp.asarray(fill, logits.dtype), logits)
    heads = jnp.einsum("hnst,hntd->nsdh", phi(logits), values)
    heads = heads.reshape(n, T, n_chan_val * n_heads)
    y = heads @ W_out * (OV_std / math.sqrt(n_chan_val * n_heads * x_vals.shape[-1]))
    y = y.reshape((n,) + sp + (n_chan_out,))
    if b is not None:
      y = y + b_std * jnp.reshape(b, (1,) * (y.ndim - 1) + (n_chan_out,))
    return y

  def apply(params, x, feat, ctx):
    del ctx
    if feat.mask is not None:
      raise ValueError("GlobalSelfAttention does not take width-padded inputs (a width sweep "
                       "through it); use jaxtheory.nn's attention layers there")
    return forward(params, x, None), core.Feat()

  def masked_apply(params, x, mask, feat, ctx):
    del feat, ctx
    return forward(params, x, mask), core.Feat()

  kernel = katt.global_self_attention(
      linear_scaling=linear_scaling, mechanism=mech, QK_std=QK_std, OV_std=OV_std,
      b_std=b_std, pos_emb_type=pos, pos_emb_p_norm=pos_emb_p_norm,
      pos_emb_decay_fn=pos_emb_decay_fn, n_chan_pos_emb=n_chan_pos_emb,
      W_pos_emb_std=W_pos_emb_std, val_pos_emb=val_pos_emb)
  rule = (masking.Rule(lambda m, shape: kmasking.collapse_channels(m), remask=True,
                       apply=masked_apply)
          if (batch_axis, channel_axis) == (0, -1) else None)
  def _axes(ndim):
    return batch_axis % ndim, channel_axis % ndim

  def _to_input_layout_shape(shape):
    return jax.eval_shape(lambda a: jnp.moveaxis(a, (0, -1), _axes(a.ndim)),
                          jax.ShapeDtypeStruct(shape, jnp.float32)).shape

  def _from_input_layout(a):
    return jnp.moveaxis(a, _axes(a.ndim), (0, -1))

  def _to_input_layout(a):
    return jnp.moveaxis(a, (0, -1), _axes(a.ndim))

  layer = _moved_axes(core.Layer(init, apply, kernel), batch_axis, channel_axis)
  if (batch_axis, channel_axis) != (0, -1):
    layer = _params_laid_as_input(layer, _to_input_layout, _from_input_layout)
  return _Triple(layer, (batch_axis, channel_axis), mask=rule)


def _params_laid_as_input(layer: core.Layer, to_input: Callable, from_input: Callable) -> core.Layer:
  """``layer`` whose bias and positional embeddings (the last two parameters) are held laid out
  as its input (NT's), where the layer itself reads them batch first and channels last."""

  def move(params, fn):
    *w, b, pe = params
    return (*w, None if b is None else fn(jnp.asarray(b)), None if pe is None else fn(jnp.asarray(pe)))

  def init(key, spec, ctx):
    out, params, scales = layer.init(key, spec, ctx)
    return out, move(params, to_input), scales

  def apply(params, x, feat, ctx):
    return layer.apply(move(params, from_input), x, feat, ctx)

  return core.Layer(init, apply, layer.kernel)


def _choice(enum_type, value, name: str) -> str:
  """``value`` (a member or its name) as the member's name, or a clear error."""
  try:
    return enum_type(value.value if isinstance(value, enum_type) else value).value
  except ValueError:
    raise ValueError(f"GlobalSelfAttention: {name} must be one of "
                     f"{[m.value for m in enum_type]}, got {value!r}") from None


_name_layers(globals(), __name__)
