r"""The infinite-width kernel of global self-attention (Hron et al. 2020, "Infinite attention:
NNGP and NTK for deep attention networks"; neural-tangents' ``GlobalSelfAttention``).

Every position of an activation attends to every position of the same input. In the
limit of infinitely many heads and key/query/value channels, with NTK-parametrized
weights, two scalings of the logits have closed forms:

* **linear scaling** (logits divided by the key width :math:`d_k`, key and query
  weights tied): the logits converge to the deterministic
  :math:`\sigma_{QK}^2 K_{st}(x)`, so the attention weights are
  :math:`G_{st}(x) = \phi(\sigma_{QK}^2 K(x))_{st}` (``phi`` the softmax over the
  keys ``t``, or ``relu``/``abs``/identity) and

  .. math::
    K'_{ss'}(x, x') = \sigma_{OV}^2 \sum_{t t'} G_{st}(x) G_{s't'}(x') K_{tt'}(x, x') + b^2,
    \qquad
    \Theta' = \sigma_{OV}^2\, G\,\Theta\, G' + b^2 + 2 (K' - b^2),

  where the last term is the value and output weights' own contribution;
* **square-root scaling** (:math:`1/\sqrt{d_k}`, independent keys and queries) with
  the identity mechanism: the logits stay Gaussian and

  .. math::
    K'_{ss'} = \sigma_{QK}^2 \sigma_{OV}^2 \Big(\sum_{tt'} K_{tt'} K_{tt'}\Big) K_{ss'} + b^2.

Positional embeddings (``'SUM'`` or ``'CONCAT'``, a trainable standard-normal array per
position and channel, correlated across positions by ``pos_emb_decay_fn``) add their
covariance :math:`R` to the keys' and queries' input kernel (and, with
``val_pos_emb``, the values'): :math:`w_x K + w_p R`, with :math:`w_p =`
``W_pos_emb_std**2`` for ``'SUM'``, and both weights scaled by the channel shares for
``'CONCAT'``. :math:`R_{st}` is ``decay(sum_a |s_a - t_a|**p)`` (``None``: the identity).

Kernels need the full spatial covariance (:class:`~jaxtheory.kernels.analytic.NeedsFullSpatial`);
masked key positions are left out of the softmax (NT's masking).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxtheory.kernels import analytic, masking
from jaxtheory.kernels._spatial import unzip_axes, zip_axes

Array = jax.Array

MECHANISMS = ("SOFTMAX", "IDENTITY", "ABS", "RELU")
POSITIONAL_EMBEDDINGS = ("NONE", "SUM", "CONCAT")


def mechanism_fn(mechanism: str) -> Callable:
  """The map from logits to attention weights (softmax over the last axis, the keys)."""
  return {"SOFTMAX": lambda g: jax.nn.softmax(g, axis=-1), "IDENTITY": lambda g: g,
          "ABS": jnp.abs, "RELU": jax.nn.relu}[mechanism]


def position_covariance(spatial_shape, p_norm: float, decay_fn: Callable | None) -> Array:
  """``R`` of the positional embeddings, ``(T, T)`` over the ``T`` flattened positions:
  ``decay_fn(sum_a |s_a - t_a|**p_norm)``, or the identity when ``decay_fn`` is ``None``."""
  size = math.prod(spatial_shape)
  if decay_fn is None:
    return jnp.eye(size)
  coords = np.indices(spatial_shape).reshape(len(spatial_shape), size).T.astype(float)
  dist = np.sum(np.abs(coords[:, None, :] - coords[None, :, :]) ** p_norm, axis=-1)
  return jnp.asarray(decay_fn(jnp.asarray(dist)), jnp.result_type(float))


def _flat(m: Array, bn: int) -> Array:
  """``(*batch, h, h', w, w') -> (*batch, T, T)`` with ``T = h * w``."""
  t = math.prod(m.shape[bn::2])
  return unzip_axes(m, bn).reshape(m.shape[:bn] + (t, t))


def _unflat(m: Array, bn: int, spatial_shape) -> Array:
  """The inverse of :func:`_flat`."""
  return zip_axes(m.reshape(m.shape[:bn] + tuple(spatial_shape) * 2), bn)


def global_self_attention(*, linear_scaling: bool, mechanism: str, QK_std: float,
                          OV_std: float, b_std: float | None, pos_emb_type: str = "NONE",
                          pos_emb_p_norm: float = 2, pos_emb_decay_fn: Callable | None = None,
                          n_chan_pos_emb: int | None = None, W_pos_emb_std: float = 1.0,
                          val_pos_emb: bool = False) -> analytic.KernelMap:
  """Kernel map of global self-attention over all positions (see the module docstring).

  Args:
    linear_scaling: logits divided by the key width with tied keys and queries
      (any ``mechanism``); ``False``: by its square root (``'IDENTITY'`` only).
    mechanism: ``'SOFTMAX'``, ``'IDENTITY'``, ``'ABS'`` or ``'RELU'``.
    QK_std: ``W_query_std * W_key_std``.
    OV_std: ``W_out_std * W_value_std``.
    b_std: the output bias scale (``None``: no bias).
    pos_emb_type: ``'NONE'``, ``'SUM'`` or ``'CONCAT'``.
    pos_emb_p_norm: the ``p`` of the position distances.
    pos_emb_decay_fn: distance -> covariance of the embeddings (``None``: independent
      per position).
    n_chan_pos_emb: channels of a ``'CONCAT'`` embedding (``None``: the input's).
    W_pos_emb_std: the embeddings' scale.
    val_pos_emb: the values see the embeddings too (else only keys and queries).
  """
  if mechanism not in MECHANISMS:
    raise ValueError(f"attention_mechanism must be one of {MECHANISMS}, got {mechanism!r}")
  if pos_emb_type not in POSITIONAL_EMBEDDINGS:
    raise ValueError(f"pos_emb_type must be one of {POSITIONAL_EMBEDDINGS}, got "
                     f"{pos_emb_type!r}")
  b2 = 0.0 if b_std is None else b_std ** 2
  phi = mechanism_fn(mechanism)

  def weights(channels):
    """``(w_x, w_p)``: the shares of the input's and the embeddings' covariances."""
    if pos_emb_type == "NONE":
      return 1.0, 0.0
    if pos_emb_type == "SUM":
      return 1.0, W_pos_emb_std ** 2
    n_pe = channels if n_chan_pos_emb is None else n_chan_pos_emb
    return channels / (channels + n_pe), W_pos_emb_std ** 2 * n_pe / (channels + n_pe)

  def kernel(k: analytic.Kernel, ctx) -> analytic.Kernel:
    del ctx
    if not linear_scaling and mechanism != "IDENTITY":
      raise NotImplementedError(
          f"GlobalSelfAttention: with linear_scaling=False (logits scaled by 1/sqrt(d_key)) the "
          f"{mechanism} mechanism has no closed-form kernel; use 'IDENTITY' or "
          "linear_scaling=True")
    if k.diagonal_spatial:
      raise analytic.NeedsFullSpatial("GlobalSelfAttention")
    sp = k.spatial_shape
    # A position whose channels are all masked is masked (NT's attention collapses them so).
    collapse = lambda m: None if m is None else masking.collapse_channels(m)
    k = k.replace(mask1=collapse(k.mask1), mask2=collapse(k.mask2))
    m11, m12, m22 = masking.products(k, "GlobalSelfAttention")
    K11, K12 = _flat(k.cov1, 1), _flat(k.nngp, 2)
    K22 = None if k.cov2 is None else _flat(k.cov2, 1)
    th = None if k.ntk is None else _flat(k.ntk, 2)

    w_x, w_p = weights(k.channels)
    R = position_covariance(sp, pos_emb_p_norm, pos_emb_decay_fn).astype(K12.dtype)

    def interp(K, m, bn):
      if K is None or pos_emb_type == "NONE":
        return K
      r = jnp.broadcast_to(R.reshape((1,) * bn + R.shape), K.shape)
      if m is not None:
        r = jnp.where(_flat(m, bn), jnp.zeros((), r.dtype), r)
      return w_x * K + w_p * r

    K11i, K12i, K22i = interp(K11, m11, 1), interp(K12, m12, 2), interp(K22, m22, 1)
    th_i = interp(th, m12, 2)
    value = (lambda raw, mixed: mixed) if val_pos_emb else (lambda raw, mixed: raw)

    if linear_scaling:
      key_mask1, key_mask2 = (None if m is None else m.reshape(m.shape[0], -1)
                              for m in masking.position_masks(k, "GlobalSelfAttention"))

      def attention(Ki, key_mask):
        logits = QK_std * Ki
        if key_mask is not None:
          fill = jnp.finfo(logits.dtype).min if mechanism == "SOFTMAX" else 0
          logits = jnp.where(key_mask[:, None, :], jnp.asarray(fill, logits.dtype), logits)
        return phi(logits)

      G1 = attention(K11i, key_mask1)
      G2 = G1 if K22 is None else attention(K22i, key_mask2)
      both = lambda M: OV_std ** 2 * jnp.einsum("ist,jru,ijtu->ijsr", G1, G2, M)
      nngp = both(value(K12, K12i)) + b2
      cov1 = OV_std ** 2 * jnp.einsum("ist,iru,itu->isr", G1, G1, value(K11, K11i)) + b2
      cov2 = None if K22 is None else (
          OV_std ** 2 * jnp.einsum("ist,iru,itu->isr", G2, G2, value(K22, K22i)) + b2)
      ntk = None if th is None else both(value(th, th_i)) + b2 + 2 * (nngp - b2)
    else:
      std2 = (QK_std * OV_std) ** 2
      total = lambda a, b: jnp.sum(a * b, axis=(-2, -1), keepdims=True)
      d12 = total(K12i, value(K12, K12i))
      nngp = std2 * d12 * K12i + b2
      cov1 = std2 * total(K11i, value(K11, K11i)) * K11i + b2
      cov2 = None if K22 is None else std2 * total(K22i, value(K22, K22i)) * K22i + b2
      ntk = None
      if th is not None:
        if val_pos_emb or pos_emb_type == "NONE":
          cross = 2 * total(K12i, th_i)
        else:
          cross = total(K12i, th) + total(K12, th_i)
        ntk = std2 * (cross * K12i + d12 * (th_i + 4 * K12i)) + b2

    return k.replace(nngp=_unflat(nngp, 2, sp), ntk=None if ntk is None else _unflat(ntk, 2, sp),
                     cov1=_unflat(cov1, 1, sp),
                     cov2=None if cov2 is None else _unflat(cov2, 1, sp), is_gaussian=True)

  return kernel
