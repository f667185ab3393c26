r"""Weight spectra: singular values, stable and effective rank, heavy-tail exponents; Fourier spectra.

Written for ONE parameter pytree and mapped over a sweep with
:func:`jaxtheory.probes.over_runs`. Every leaf with ``ndim >= 2`` is read as a
matrix ``(fan_in, out)``: a dense weight as is, a convolution kernel
``(*spatial, in, out)`` reshaped to ``(prod(spatial) * in, out)``.

Padded widths need no mask: padded rows and columns are exactly zero, which
only adds zero singular values. Those change none of the quantities below
(spectral norm, stable rank, effective rank, and the power-law fit, which
ignores zero eigenvalues), so each equals its unpadded value.

>>> import jax.numpy as jnp
>>> s = singular_values(jnp.diag(jnp.array([3.0, 2.0, 1.0])))
>>> s.tolist()
[3.0, 2.0, 1.0]
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxtheory.metric import in_turn

Array = jax.Array
PyTree = Any


def as_matrix(W: Array) -> Array:
  """A weight as a ``(fan_in, out)`` matrix (conv kernels ``(*spatial, in, out)`` flattened)."""
  W = jnp.asarray(W)
  if W.ndim < 2:
    raise ValueError(f"a weight matrix needs ndim >= 2, got shape {W.shape}")
  return W.reshape(-1, W.shape[-1])


def matrices(params: PyTree, select=None) -> dict[str, Array]:
  """Every weight matrix of ``params`` (leaves with ``ndim >= 2``) by its key path.

  Args:
    params: a parameter pytree of ONE run.
    select: optional ``select(path, leaf) -> bool`` further restricting leaves.

  Returns:
    ``{jax.tree_util.keystr(path): (fan_in, out) matrix}`` in tree order.
  """
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    if jnp.ndim(leaf) >= 2 and (select is None or select(path, leaf)):
      out[jax.tree_util.keystr(path)] = as_matrix(leaf)
  return out


def singular_values(W: Array) -> Array:
  """Singular values of one weight (as :func:`as_matrix`), descending."""
  return jnp.linalg.svd(as_matrix(W), compute_uv=False)


def spectral_norm(s: Array) -> Array:
  r"""Largest singular value :math:`\sigma_1` (``s``: singular values)."""
  return jnp.max(s)


def stable_rank(s: Array) -> Array:
  r"""Stable rank :math:`\|W\|_F^2/\|W\|_2^2 = \sum_i\sigma_i^2/\sigma_1^2` (0 for a zero matrix).

  At most the rank, and robust to tiny singular values (Rudelson & Vershynin 2007).
  """
  top = jnp.max(s) ** 2
  return jnp.where(top > 0, jnp.sum(s ** 2) / jnp.where(top > 0, top, 1.0), 0.0)


def effective_rank(s: Array) -> Array:
  r"""Effective rank (Roy & Vetterli 2007): :math:`\exp H(p)`, :math:`p_i = \sigma_i/\sum_j\sigma_j`.

  :math:`H(p) = -\sum_i p_i\log p_i` (with :math:`0\log 0 = 0`); equals
  :math:`r` for :math:`r` equal nonzero singular values.
  """
  tot = jnp.sum(s)
  p = s / jnp.where(tot > 0, tot, 1.0)
  ent = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
  return jnp.where(tot > 0, jnp.exp(ent), 0.0)


def esd(s: Array) -> Array:
  r"""Eigenvalues :math:`\lambda_i = \sigma_i^2` of :math:`W^\top W` (the ESD up to a scale)."""
  return s ** 2


def _active(lam: Array) -> Array:
  """Eigenvalues above the numerical-rank tolerance (padded/rank-deficient ones are not)."""
  tol = jnp.max(lam) * lam.shape[0] * jnp.finfo(lam.dtype).eps
  return lam > jnp.maximum(tol, jnp.finfo(lam.dtype).tiny)


def powerlaw_alpha(lam: Array, k: int | float | None = None, k_min: int = 10) -> Array:
  r"""Power-law exponent :math:`\alpha` of the tail of a spectrum, :math:`\rho(\lambda)\sim\lambda^{-\alpha}`.

  Heavy-tailed self-regularisation (Martin & Mahoney 2021) reads training
  quality off the exponent of the ESD tail: :math:`\alpha \lesssim 2` very
  heavy-tailed, :math:`2 \lesssim \alpha \lesssim 4` typical of well-trained
  layers, large for random (Marchenko-Pastur) weights.

  With the tail the ``k`` largest eigenvalues and :math:`x_{\min}=\lambda_{(k)}`,
  the Hill / maximum-likelihood estimator is

  .. math:: \hat\alpha = 1 + \frac{k-1}{\sum_{i=1}^{k}\log(\lambda_{(i)}/x_{\min})}

  (``k-1`` exceedances of :math:`x_{\min}`; the continuous power-law MLE of
  Clauset, Shalizi & Newman 2009). Without ``k``, :math:`x_{\min}` is chosen as
  in Clauset et al. and WeightWatcher: the tail size ``k >= k_min`` whose fit
  minimises the Kolmogorov-Smirnov distance to the tail's empirical CDF
  (an ``O(n^2)`` scan, vectorised).

  Zero (padded) and numerically-zero eigenvalues are ignored.

  Args:
    lam: eigenvalues (e.g. :func:`esd` of singular values), any order, ``>= 0``.
    k: tail size: an int, a float in (0, 1] (that fraction of the nonzero
      eigenvalues, traced count), or ``None`` to choose by KS distance.
    k_min: smallest tail considered by the KS scan (static).

  Returns:
    :math:`\hat\alpha`; NaN when the tail has fewer than 2 (KS: ``k_min``)
    nonzero eigenvalues.
  """
  lam = jnp.sort(jnp.asarray(lam))[::-1]
  n = lam.shape[0]
  act = _active(lam)
  n_act = jnp.sum(act)
  safe = jnp.where(act, lam, 1.0)
  logs = jnp.log(safe)
  nan = jnp.asarray(jnp.nan, lam.dtype)
  if k is not None:
    if isinstance(k, float):
      if not 0 < k <= 1:
        raise ValueError(f"a fractional k must lie in (0, 1], got {k}")
      kk = jnp.ceil(k * n_act).astype(jnp.int32)
    else:
      kk = jnp.asarray(k, jnp.int32)
    kk = jnp.minimum(kk, n_act)
    idx = jnp.arange(n)
    log_min = logs[jnp.clip(kk - 1, 0, n - 1)]
    s = jnp.sum(jnp.where(idx < kk, logs - log_min, 0.0))
    alpha = 1.0 + (kk - 1) / jnp.where(s > 0, s, 1.0)
    return jnp.where((kk >= 2) & (s > 0), alpha, nan)
  # KS scan over candidate x_min = lam[j] (tail lam[0..j], size j + 1).
  i = jnp.arange(n)[None, :]
  j = jnp.arange(n)[:, None]
  in_tail = (i <= j) & act[None, :]
  rel = jnp.where(in_tail, logs[None, :] - logs[:, None], 0.0)  # log(lam_i / x_min)
  kk = jnp.arange(1, n + 1)
  s = jnp.sum(rel, axis=1)
  a = 1.0 + (kk - 1) / jnp.where(s > 0, s, 1.0)
  fit = 1.0 - jnp.exp(-(a[:, None] - 1.0) * rel)  # fitted CDF at lam_i
  # Tail sorted descending: lam_i is the (j - i + 1)-th smallest of j + 1 values.
  emp_hi = (j - i + 1) / kk[:, None]
  emp_lo = (j - i) / kk[:, None]
  ks = jnp.max(jnp.where(in_tail, jnp.maximum(jnp.abs(emp_hi - fit), jnp.abs(emp_lo - fit)),
                         0.0), axis=1)
  ok = (kk >= max(k_min, 2)) & (kk <= n_act) & (s > 0)
  best = jnp.argmin(jnp.where(ok, ks, jnp.inf))
  return jnp.where(jnp.any(ok), a[best], nan)


def summary(params: PyTree, select=None, k: int | float | None = None,
            k_min: int = 10) -> dict[str, dict[str, Array]]:
  r"""Per-layer spectral statistics of every weight matrix of ONE run.

  Args:
    params: parameters (leaves with ``ndim >= 2`` are read as matrices).
    select: optional ``select(path, leaf) -> bool``.
    k, k_min: the power-law tail (see :func:`powerlaw_alpha`).

  Returns:
    ``{layer: {"spectral_norm", "frobenius_norm", "stable_rank",
    "effective_rank", "alpha", "alpha_weighted"}}`` where
    ``alpha_weighted`` is :math:`\hat\alpha\log_{10}\lambda_{\max}` (Martin,
    Peng & Mahoney 2021).
  """
  out = {}
  mats = matrices(params, select)
  for name, s in zip(mats, in_turn(jnp.linalg.svdvals, list(mats.values()))):
    lam = esd(s)
    alpha = powerlaw_alpha(lam, k, k_min)
    out[name] = {
        "spectral_norm": spectral_norm(s),
        "frobenius_norm": jnp.sqrt(jnp.sum(lam)),
        "stable_rank": stable_rank(s),
        "effective_rank": effective_rank(s),
        "alpha": alpha,
        "alpha_weighted": alpha * jnp.log10(jnp.max(lam)),
    }
  return out


RECORDED = ("frobenius_norm", "stable_rank", "effective_rank")
"""The statistics :func:`layer_metric` records, in its last axis' order."""


def layer_metric(select=None):
  r"""A sweep metric recording :data:`RECORDED` for every weight matrix, inside the compiled run.

  For :class:`jaxtheory.sweep.Sweep` ``metrics``: ``fn(params, apply, data)``
  returns an array ``(matrices, 3)`` (matrices in :func:`matrices` order,
  i.e. network order for ``serial`` models) of the Frobenius norm
  :math:`\|W\|_F`, the :func:`stable_rank` and the :func:`effective_rank`.
  Padded rows and columns are zero, so padded runs record their unpadded values.

  Args:
    select: optional ``select(path, leaf) -> bool`` restricting the matrices.

  >>> import jax
  >>> from jaxtheory import nn
  >>> m = nn.mlp((4,), 8, 2, 3)
  >>> layer_metric()(m.init(jax.random.key(0)), None, None).shape
  (3, 3)
  """

  def fn(params, apply, data):
    del apply, data
    rows = []
    for s in in_turn(jnp.linalg.svdvals, list(matrices(params, select).values())):
      rows.append(jnp.stack([jnp.sqrt(jnp.sum(s ** 2)), stable_rank(s), effective_rank(s)]))
    return jnp.stack(rows)

  return fn


# ----------------------------------------------------------------------------
# Fourier spectra of a representation along an ordered (cyclic) axis, e.g. the
# token embedding of modular arithmetic.


def fourier_power(E: Array) -> Array:
  r"""Power of each frequency of the token axis of an embedding ``E`` (``(p, d)``).

  :math:`P_k = \sum_j |\hat E_{kj}|^2` with :math:`\hat E = \mathrm{DFT}(E)`
  along tokens, for :math:`k = 0, \dots, \lfloor p/2 \rfloor`; a frequency and
  its conjugate :math:`p - k` are one (their powers summed), so
  :math:`\sum_k P_k = p\,\|E\|_F^2` (Parseval).

  >>> t = jnp.arange(8.0)
  >>> E = jnp.stack([jnp.cos(2 * jnp.pi * 3 * t / 8), jnp.ones(8)], axis=1)
  >>> [round(float(x)) for x in fourier_power(E)]
  [64, 0, 0, 32, 0]
  """
  p = E.shape[0]
  P = jnp.sum(jnp.abs(jnp.fft.rfft(E, axis=0)) ** 2, axis=-1)
  k = jnp.arange(P.shape[0])
  return P * jnp.where((k == 0) | (2 * k == p), 1.0, 2.0)


def fourier_sparsity(E: Array, k: int = 5) -> Array:
  r"""Fraction of an embedding's non-constant Fourier power in its top ``k`` frequencies.

  Nanda et al. (2023): a network that groks modular addition represents tokens
  by :math:`\cos(2\pi f a/p), \sin(2\pi f a/p)` for a few key frequencies
  :math:`f`, so the embedding's power concentrates on them. With
  :math:`P_f` from :func:`fourier_power` (the constant frequency 0, which any
  bias absorbs, left out),

  .. math:: s_k = \max_{|S| = k} \sum_{f \in S} P_f \Big/ \sum_{f \ge 1} P_f ,

  about :math:`k/\lfloor p/2 \rfloor` for a random embedding and 1 when it uses
  ``k`` frequencies or fewer.
  """
  P = fourier_power(E)[1:]
  top = jax.lax.top_k(P, min(k, P.shape[0]))[0]
  return jnp.sum(top) / jnp.maximum(jnp.sum(P), jnp.finfo(P.dtype).tiny)


def radial_power(img: Array) -> Array:
  r"""Power of a 2-D array's (e.g. an image's) spatial frequencies, summed over rings of radius ``r``.

  :math:`P_r = \sum_{\lfloor |\omega| + 1/2 \rfloor = r} |\hat I_\omega|^2` over the
  2-D DFT of the mean-removed array, for integer radii
  :math:`r = 0, \dots, \lfloor \min(h, w)/2 \rfloor` (frequencies in cycles per
  side; corners beyond the last ring are left out). Blur removes power from
  the large radii.

  >>> t = jnp.arange(8.0)
  >>> img = jnp.cos(2 * jnp.pi * 2 * t / 8)[:, None] * jnp.ones((1, 8))
  >>> [round(float(x)) for x in radial_power(img)]
  [0, 0, 2048, 0, 0]
  """
  img = jnp.asarray(img)
  h, w = img.shape
  F = jnp.abs(jnp.fft.fft2(img - jnp.mean(img))) ** 2
  fy = jnp.fft.fftfreq(h) * h
  fx = jnp.fft.fftfreq(w) * w
  r = jnp.floor(jnp.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) + 0.5).astype(jnp.int32)
  n = min(h, w) // 2 + 1
  return jnp.zeros(n, F.dtype).at[r.reshape(-1)].add(F.reshape(-1), mode="drop")
