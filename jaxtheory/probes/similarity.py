r"""Representation similarity: CKA, HSIC, minibatch CKA, mutual nearest neighbours.

Written for ONE pair of representations (``(n, ...)`` arrays of ``n``
examples; trailing axes are flattened into features) and mapped over a sweep
with :func:`jaxtheory.probes.over_runs`. Padded widths need no care: zero
feature columns change neither a linear nor an RBF Gram matrix, so every
quantity here is exactly the unpadded one.

* HSIC (Gretton et al. 2005), biased :math:`\mathrm{tr}(KHLH)/(n-1)^2` and
  unbiased (Song et al. 2012);
* CKA (Kornblith et al. 2019), :math:`\mathrm{HSIC}(K,L)/\sqrt{\mathrm{HSIC}(K,K)\,\mathrm{HSIC}(L,L)}`,
  with linear or RBF kernels, and layer-by-layer :func:`cka_matrix`;
* minibatch CKA (Nguyen et al. 2021): unbiased HSIC summed over minibatches,
  as a streaming accumulator (:func:`cka_init`, :func:`cka_update`,
  :func:`cka_value`) or in one call (:func:`minibatch_cka`);
* mutual k-nearest-neighbour alignment (Huh et al. 2024);
* the block structure of layer-by-layer CKA (Nguyen, Raghu & Kornblith 2021):
  CKA matrices of a network's layers (:func:`layer_cka`, between two networks
  too), the first principal component's share of a representation
  (:func:`top_pc`), the representation without it (:func:`remove_top_pc`), and
  the largest block of mutually similar consecutive layers (:func:`find_block`).

>>> import jax
>>> X = jax.random.normal(jax.random.key(0), (32, 8))
>>> round(float(cka(X, 2.0 * X)), 5)
1.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxtheory.metric import Metric
from jaxtheory.nn import Ctx
from jaxtheory.probes.separation import layer_features

Array = jax.Array


def _flat(x) -> Array:
  x = jnp.asarray(x)
  if x.ndim < 1:
    raise ValueError("a representation needs a leading axis of examples")
  return x.reshape(x.shape[0], -1)


def _safe_ratio(num, den_sq):
  """``num / sqrt(den_sq)``, and 0 where the denominator is not positive (no NaN)."""
  ok = den_sq > 0
  return jnp.where(ok, num / jnp.sqrt(jnp.where(ok, den_sq, 1.0)), 0.0)


# ----------------------------------------------------------------------------
# Kernels and centering.


def linear_kernel(x) -> Array:
  """Gram matrix :math:`XX^\\top` of ``(n, ...)`` features."""
  X = _flat(x)
  return X @ X.T


def rbf_kernel(x, sigma_frac: float = 0.8) -> Array:
  r"""RBF Gram matrix :math:`\exp(-\|x_i-x_j\|^2 / (2\sigma^2))`.

  As in Kornblith et al. (2019), :math:`\sigma` is ``sigma_frac`` times the
  median distance between distinct examples (a bandwidth that is invariant
  to isotropic scaling of the representation).
  """
  X = _flat(x)
  sq = jnp.sum(X * X, axis=1)
  d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2 * X @ X.T, 0.0)
  iu = np.triu_indices(X.shape[0], 1)  # static: distinct pairs
  med = jnp.median(jnp.sqrt(d2[iu]))
  s2 = (sigma_frac * med) ** 2
  return jnp.exp(-d2 / (2 * jnp.where(s2 > 0, s2, 1.0)))


def center(K: Array, unbiased: bool = False) -> Array:
  r"""Double centering :math:`HKH`, or U-centering for unbiased estimates.

  U-centering (Szekely & Rizzo 2014) zeroes the diagonal and sets
  :math:`\tilde K_{ij} = K_{ij} - \frac{1}{n-2}\sum_l K_{il}
  - \frac{1}{n-2}\sum_k K_{kj} + \frac{1}{(n-1)(n-2)}\sum_{kl} K_{kl}`
  (with the diagonal of ``K`` removed first), so that
  :math:`\langle\tilde K, \tilde L\rangle / (n(n-3))` is Song et al.'s
  unbiased HSIC.
  """
  n = K.shape[0]
  if not unbiased:
    K = K - jnp.mean(K, axis=0, keepdims=True)
    return K - jnp.mean(K, axis=1, keepdims=True)
  if n < 4:
    raise ValueError(f"unbiased HSIC needs at least 4 examples, got {n}")
  eye = jnp.eye(n, dtype=bool)
  K = jnp.where(eye, 0.0, K)
  row = jnp.sum(K, axis=1, keepdims=True) / (n - 2)
  col = jnp.sum(K, axis=0, keepdims=True) / (n - 2)
  tot = jnp.sum(K) / ((n - 1) * (n - 2))
  return jnp.where(eye, 0.0, K - row - col + tot)


def hsic(K: Array, L: Array, unbiased: bool = False) -> Array:
  r"""Hilbert-Schmidt independence criterion of two Gram matrices.

  Biased (Gretton et al. 2005): :math:`\mathrm{tr}(KHLH)/(n-1)^2`.
  Unbiased (Song et al. 2012), with :math:`\tilde K, \tilde L` the Gram
  matrices with zeroed diagonals:

  .. math:: \frac{1}{n(n-3)}\Big[\mathrm{tr}(\tilde K\tilde L)
            + \frac{\mathbf 1^\top\tilde K\mathbf 1\,\mathbf 1^\top\tilde L\mathbf 1}{(n-1)(n-2)}
            - \frac{2}{n-2}\mathbf 1^\top\tilde K\tilde L\mathbf 1\Big].

  Args:
    K, L: ``(n, n)`` Gram matrices.
    unbiased: which estimator (unbiased needs ``n >= 4``).
  """
  n = K.shape[0]
  if not unbiased:
    return jnp.sum(center(K) * L) / (n - 1) ** 2
  Kt = jnp.where(jnp.eye(n, dtype=bool), 0.0, K)
  Lt = jnp.where(jnp.eye(n, dtype=bool), 0.0, L)
  if n < 4:
    raise ValueError(f"unbiased HSIC needs at least 4 examples, got {n}")
  s = (jnp.sum(Kt * Lt) + jnp.sum(Kt) * jnp.sum(Lt) / ((n - 1) * (n - 2))
       - 2.0 / (n - 2) * jnp.sum(Kt.sum(0) * Lt.sum(0)))
  return s / (n * (n - 3))


def cka_from_grams(K: Array, L: Array, unbiased: bool = False) -> Array:
  """CKA of two Gram matrices (0 where either is constant, never NaN)."""
  Kc, Lc = center(K, unbiased), center(L, unbiased)
  return _safe_ratio(jnp.sum(Kc * Lc), jnp.sum(Kc * Kc) * jnp.sum(Lc * Lc))


def cka(x, y, kernel: str = "linear", unbiased: bool = False, sigma_frac: float = 0.8) -> Array:
  r"""Centered kernel alignment (Kornblith et al. 2019).

  :math:`\mathrm{CKA}(K,L) = \mathrm{HSIC}(K,L)/\sqrt{\mathrm{HSIC}(K,K)\,\mathrm{HSIC}(L,L)}`.
  Linear CKA is invariant to orthogonal transforms and isotropic scaling of
  either representation (not to arbitrary invertible linear maps). The
  biased linear case uses features, :math:`\|Y_c^\top X_c\|_F^2 /
  (\|X_c^\top X_c\|_F\,\|Y_c^\top Y_c\|_F)`, whichever of ``n`` or the
  feature counts is smaller.

  Args:
    x, y: representations ``(n, ...)`` of the same ``n`` examples.
    kernel: ``'linear'`` or ``'rbf'`` (bandwidth: :func:`rbf_kernel`).
    unbiased: use the unbiased HSIC (needs ``n >= 4``).
    sigma_frac: RBF bandwidth as a fraction of the median distance.

  Returns:
    A scalar in [0, 1] (the unbiased estimate may stray slightly outside);
    0 when a representation is constant.
  """
  X, Y = _flat(x), _flat(y)
  if X.shape[0] != Y.shape[0]:
    raise ValueError(f"representations of different numbers of examples: {X.shape[0]} "
                     f"and {Y.shape[0]}")
  if kernel == "linear":
    n, dx, dy = X.shape[0], X.shape[1], Y.shape[1]
    if not unbiased and max(dx, dy) < n:
      X = X - X.mean(0, keepdims=True)
      Y = Y - Y.mean(0, keepdims=True)
      num = jnp.sum((Y.T @ X) ** 2)
      return _safe_ratio(num, jnp.sum((X.T @ X) ** 2) * jnp.sum((Y.T @ Y) ** 2))
    return cka_from_grams(linear_kernel(X), linear_kernel(Y), unbiased)
  if kernel == "rbf":
    return cka_from_grams(rbf_kernel(X, sigma_frac), rbf_kernel(Y, sigma_frac), unbiased)
  raise ValueError(f"kernel must be 'linear' or 'rbf', got {kernel!r}")


def cka_matrix(reps_a: Sequence, reps_b: Sequence | None = None, kernel: str = "linear",
               unbiased: bool = False, sigma_frac: float = 0.8) -> Array:
  """CKA between every layer of ``reps_a`` and every layer of ``reps_b``.

  Each Gram matrix is formed and centred once; the matrix is then one
  contraction of the stacked centred Grams.

  Args:
    reps_a: representations ``(n, ...)`` (a list, one per layer).
    reps_b: another list; ``None`` compares ``reps_a`` with itself.
    kernel, unbiased, sigma_frac: as in :func:`cka`.

  Returns:
    ``(len(reps_a), len(reps_b))`` CKA values.
  """
  gram = {"linear": linear_kernel, "rbf": lambda r: rbf_kernel(r, sigma_frac)}.get(kernel)
  if gram is None:
    raise ValueError(f"kernel must be 'linear' or 'rbf', got {kernel!r}")
  Ka = jnp.stack([center(gram(r), unbiased) for r in reps_a])
  Kb = Ka if reps_b is None else jnp.stack([center(gram(r), unbiased) for r in reps_b])
  if Ka.shape[1] != Kb.shape[1]:
    raise ValueError("representations of different numbers of examples")
  num = jnp.einsum("aij,bij->ab", Ka, Kb)
  na, nb = jnp.einsum("aij,aij->a", Ka, Ka), jnp.einsum("bij,bij->b", Kb, Kb)
  return _safe_ratio(num, na[:, None] * nb[None, :])


# ----------------------------------------------------------------------------
# Minibatch (streaming) CKA.


class CKAState(NamedTuple):
  """Running sums of unbiased HSIC over minibatches."""
  xy: Array
  xx: Array
  yy: Array


def cka_init(dtype=None) -> CKAState:
  """An empty accumulator."""
  z = jnp.zeros((), dtype or jnp.result_type(float))
  return CKAState(z, z, z)


def cka_update(state: CKAState, x, y, kernel: str = "linear",
               sigma_frac: float = 0.8) -> CKAState:
  """Adds one minibatch (``n >= 4`` examples) of both representations."""
  if kernel == "linear":
    K, L = linear_kernel(x), linear_kernel(y)
  elif kernel == "rbf":
    K, L = rbf_kernel(x, sigma_frac), rbf_kernel(y, sigma_frac)
  else:
    raise ValueError(f"kernel must be 'linear' or 'rbf', got {kernel!r}")
  return CKAState(state.xy + hsic(K, L, True), state.xx + hsic(K, K, True),
                  state.yy + hsic(L, L, True))


def cka_value(state: CKAState) -> Array:
  r"""Minibatch CKA (Nguyen et al. 2021).

  .. math:: \frac{\sum_b \mathrm{HSIC}_1(K_b, L_b)}
            {\sqrt{\sum_b \mathrm{HSIC}_1(K_b,K_b)\,\sum_b \mathrm{HSIC}_1(L_b,L_b)}}

  Each :math:`\mathrm{HSIC}_1` is unbiased, so the sums converge to the
  population values as batches accumulate, whatever the batch size, and
  the ratio converges to the full-data (population) CKA. A non-positive
  denominator (possible for the unbiased self-terms of a few tiny batches)
  gives 0, never NaN.
  """
  return _safe_ratio(state.xy, state.xx * state.yy)


def minibatch_cka(x, y, batch_size: int, kernel: str = "linear",
                  sigma_frac: float = 0.8) -> Array:
  """Minibatch CKA over consecutive batches of ``batch_size`` (a remainder is dropped).

  Args:
    x, y: representations ``(n, ...)``.
    batch_size: examples per minibatch (static, ``>= 4``).
    kernel, sigma_frac: as in :func:`cka`.
  """
  X, Y = _flat(x), _flat(y)
  if batch_size < 4:
    raise ValueError(f"batch_size must be >= 4 (unbiased HSIC), got {batch_size}")
  nb = X.shape[0] // batch_size
  if nb < 1:
    raise ValueError(f"{X.shape[0]} examples make no batch of {batch_size}")
  Xb = X[:nb * batch_size].reshape(nb, batch_size, -1)
  Yb = Y[:nb * batch_size].reshape(nb, batch_size, -1)
  st = jax.lax.scan(lambda s, b: (cka_update(s, b[0], b[1], kernel, sigma_frac), None),
                    cka_init(X.dtype), (Xb, Yb))[0]
  return cka_value(st)


# ----------------------------------------------------------------------------
# Mutual nearest neighbours.


def knn_indices(x, k: int = 10, normalize: bool = True) -> Array:
  r"""The ``k`` nearest other examples of each example in ONE representation, ``(n, k)``.

  Nearness is the inner product of the features, of the L2-normalised
  features (cosine similarity) with ``normalize``, as in Huh et al. (2024);
  an example is never its own neighbour. Zero feature columns (padded units)
  change no inner product, so a padded network gives its unpadded network's
  neighbours. Map it over stacked networks with
  :func:`jaxtheory.probes.over_runs` and compare the sets with
  :func:`mutual_knn_matrix`.

  Args:
    x: a representation ``(n, ...)`` (trailing axes are flattened).
    k: neighbours (static, ``1 <= k < n``).
    normalize: L2-normalise each example's features first.

  Returns:
    ``int32`` indices ``(n, k)``, nearest first.
  """
  X = _flat(x)
  n = X.shape[0]
  if not 0 < k < n:
    raise ValueError(f"k must lie in [1, {n - 1}] for {n} examples, got {k}")
  if normalize:
    nz = jnp.linalg.norm(X, axis=1, keepdims=True)
    X = X / jnp.where(nz > 0, nz, 1.0)
  S = jnp.matmul(X, X.T, precision=jax.lax.Precision.HIGHEST)
  S = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, S)
  return jax.lax.top_k(S, k)[1].astype(jnp.int32)


def knn_overlap(idx_a: Array, idx_b: Array) -> Array:
  r"""Mutual k-NN alignment of two neighbour sets ``(n, k)``: :math:`\frac1n\sum_i |N_A(i)\cap N_B(i)|/k`.

  The indices within a row are distinct (as :func:`knn_indices` returns them),
  so the intersection's size is the number of equal entries of the two rows.
  """
  idx_a, idx_b = jnp.asarray(idx_a), jnp.asarray(idx_b)
  if idx_a.shape != idx_b.shape or idx_a.ndim != 2:
    raise ValueError(f"neighbour sets must both be (n, k), got {idx_a.shape} and {idx_b.shape}")
  k = idx_a.shape[1]
  hits = jnp.sum(idx_a[:, :, None] == idx_b[:, None, :], axis=(1, 2))
  return jnp.mean(hits / k)


def mutual_knn(x, y, k: int = 10, normalize: bool = True) -> Array:
  r"""Mutual k-nearest-neighbour alignment (Huh et al. 2024).

  For each example :math:`i`, :math:`N_X(i)` is the set of its ``k`` nearest
  other examples in representation ``x`` (by inner product of the
  L2-normalised features, i.e. cosine similarity, as in the paper), and
  likewise :math:`N_Y(i)`; the alignment is
  :math:`\frac1n\sum_i |N_X(i)\cap N_Y(i)|/k`, in [0, 1]. Two representations
  whose neighbour sets are independent and uniformly random score
  :func:`mutual_knn_chance` on average.

  Args:
    x, y: representations ``(n, ...)`` of the same examples.
    k: neighbours (static, ``< n``).
    normalize: L2-normalise each example's features first.
  """
  return knn_overlap(knn_indices(x, k, normalize), knn_indices(y, k, normalize))


def mutual_knn_matrix(neighbours: Array, chunk: int | None = None) -> Array:
  r"""Mutual k-NN alignment between every pair of ``M`` networks, ``(M, M)``.

  Batched: the neighbour sets of each network are found once
  (:func:`knn_indices`, mapped over the networks), and the ``M^2`` overlaps
  are one vectorised comparison, ``M * n * k^2`` per row of the matrix. The
  diagonal is 1 and the matrix is symmetric.

  Args:
    neighbours: stacked neighbour sets ``(M, n, k)`` of the same ``n``
      examples (networks of different widths, depths or libraries may be
      concatenated: only the indices are compared).
    chunk: ``None`` computes all rows at once; an integer maps over groups of
      that many rows (``lax.map``), bounding memory to ``chunk * M * n * k^2``.

  Returns:
    The ``(M, M)`` alignment matrix.

  >>> import jax
  >>> X = jax.random.normal(jax.random.key(0), (3, 20, 4))
  >>> A = mutual_knn_matrix(jax.vmap(lambda x: knn_indices(x, 3))(X))
  >>> A.shape, float(A[0, 0]), bool(A[0, 1] == A[1, 0])
  ((3, 3), 1.0, True)
  """
  N = jnp.asarray(neighbours)
  if N.ndim != 3:
    raise ValueError(f"neighbours must be stacked sets (M, n, k), got shape {N.shape}")
  row = lambda a: jax.vmap(lambda b: knn_overlap(a, b))(N)
  if chunk is None:
    return jax.vmap(row)(N)
  return jax.lax.map(row, N, batch_size=None if chunk == 1 else chunk)


def mutual_knn_chance(n: int, k: int) -> float:
  r"""The expected mutual k-NN alignment of unrelated representations, :math:`k/(n-1)`.

  If :math:`N_Y(i)` is a uniformly random ``k``-subset of the :math:`n-1`
  other examples, independent of :math:`N_X(i)`, each of the ``k`` members of
  :math:`N_X(i)` lies in it with probability :math:`k/(n-1)`, so
  :math:`E|N_X(i)\cap N_Y(i)|/k = k/(n-1)` (the hypergeometric mean).

  >>> mutual_knn_chance(1001, 10)
  0.01
  """
  if not 0 < k < n:
    raise ValueError(f"k must lie in [1, {n - 1}] for {n} examples, got {k}")
  return k / (n - 1)


# ----------------------------------------------------------------------------
# Block structure (Nguyen, Raghu & Kornblith 2021).


class TopPC(NamedTuple):
  """The first principal component of a representation."""
  fraction: Array
  direction: Array


def top_pc(x, iters: int = 64) -> TopPC:
  r"""The first principal component of ``(n, ...)`` features and its share of their variance.

  With :math:`X_c` the example-centred features and :math:`K = X_cX_c^\top`,
  the share is :math:`\lambda_1(K)/\mathrm{tr}\,K` and the direction is the
  unit eigenvector :math:`u_1 \in \mathbb R^n` (the first PC's scores over
  the examples, normalised). Found by ``iters`` steps of power iteration on
  :math:`K`, started from the examples' centred squared norms (dense
  eigensolvers are slow on a CPU, and this runs inside compiled sweeps):
  when :math:`\lambda_1 \gg \lambda_2`, the case of interest, it converges
  fast; when the top eigenvalues are close it returns a vector of their
  span whose Rayleigh quotient is at most :math:`\lambda_1` (the share is
  then slightly underestimated). Constant features give share 0.

  Args:
    x: features ``(n, ...)`` (flattened to ``(n, d)``).
    iters: power iterations (static).

  Returns:
    ``TopPC(fraction, direction)``: a scalar in [0, 1] and an ``(n,)`` unit vector.

  >>> import jax, jax.numpy as jnp
  >>> z = jax.random.normal(jax.random.key(0), (64, 1))
  >>> X = jnp.concatenate([10 * z, jax.random.normal(jax.random.key(1), (64, 3))], axis=1)
  >>> bool(top_pc(X).fraction > 0.9)
  True
  """
  X = _flat(x)
  X = X - X.mean(0, keepdims=True)
  K = X @ X.T
  v0 = jnp.sum(X * X, axis=1)
  v0 = v0 - v0.mean() + 1e-3 * jnp.arange(X.shape[0], dtype=X.dtype) / X.shape[0]

  def unit(v):
    nv = jnp.linalg.norm(v)
    return v / jnp.where(nv > 0, nv, 1.0)

  u = jax.lax.fori_loop(0, iters, lambda _, v: unit(K @ v), unit(v0))
  tr = jnp.trace(K)
  frac = jnp.where(tr > 0, (u @ K @ u) / jnp.where(tr > 0, tr, 1.0), 0.0)
  return TopPC(frac, u)


def remove_top_pc(x, iters: int = 64) -> Array:
  r"""Centred ``(n, d)`` features with their first principal component projected out.

  :math:`(I - u_1u_1^\top)X_c`, with :math:`u_1` from :func:`top_pc`: the
  representation Nguyen et al. (2021, Sec. 5) compare after removing the
  dominant component, which carries the block structure.
  """
  X = _flat(x)
  X = X - X.mean(0, keepdims=True)
  u = top_pc(X, iters).direction
  return X - u[:, None] * (u @ X)[None, :]


def layer_cka(model, params, x, ctx=None, params_b=None, ctx_b=None,
              remove_pc: bool = False, include_input: bool = False) -> Array:
  """Linear CKA between the hidden layers of a network (or of two networks of one architecture).

  The representations are :func:`jaxtheory.probes.layer_features` (``where='hidden'``)
  on the inputs ``x``.

  Args:
    model: a serial model (``nn.mlp``, ``nn.residual_mlp``, ...) or a Flax
      linen / NNX / Equinox model (its ``Model.features``).
    params, ctx: the network (``ctx`` defaults to ``nn.Ctx()``).
    params_b, ctx_b: a second network of the same model (e.g. another seed):
      the matrix is then layers of the first against layers of the second.
    remove_pc: project each representation's first principal component out
      first (:func:`remove_top_pc`).
    include_input: also compare the inputs (layer 0).

  Returns:
    ``(L, L)`` CKA values.
  """
  ctx = Ctx() if ctx is None else ctx
  prep = remove_top_pc if remove_pc else (lambda r: r)
  reps = [prep(r) for r in layer_features(model, params, x, ctx, include_input=include_input)]
  if params_b is None:
    return cka_matrix(reps)
  ctx_b = ctx if ctx_b is None else ctx_b
  reps_b = [prep(r) for r in layer_features(model, params_b, x, ctx_b,
                                            include_input=include_input)]
  return cka_matrix(reps, reps_b)


def _probe_inputs(data, n: int | None, split: str):
  x = data[f"x_{split}"]
  return x if n is None else x[:n]


def block_metric(n: int | None = None, split: str = "test"):
  """One recorded metric with everything the block structure needs, the features computed once.

  Returns ``(2 L + 1, L)`` per record (``L`` hidden layers): rows ``0..L-1``
  the linear CKA matrix of the hidden layers (:func:`layer_cka`), rows
  ``L..2L-1`` the CKA matrix after removing every layer's first principal
  component (:func:`remove_top_pc`), row ``2L`` the first PC's share of
  variance per layer (:func:`top_pc`), all on the first ``n`` examples of
  ``split`` (all for ``None``), recorded inside the compiled sweep (step 0 is
  the initialisation).
  :func:`split_block_metric` turns it into those three variables.
  """
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")

  def metric(params, apply, data, model, ctx):
    del apply
    reps = [_flat(r) for r in layer_features(model, params, _probe_inputs(data, n, split), ctx)]
    reps = [r - r.mean(0, keepdims=True) for r in reps]
    pcs = [top_pc(r) for r in reps]
    stripped = [r - p.direction[:, None] * (p.direction @ r)[None, :] for r, p in zip(reps, pcs)]
    share = jnp.stack([p.fraction for p in pcs])
    return jnp.concatenate([cka_matrix(reps), cka_matrix(stripped), share[None, :]], axis=0)

  return Metric(metric, ("block_row", "layer"), inputs=("model", "ctx"))


def split_block_metric(ds, name: str = "block"):
  """Replaces a recorded :func:`block_metric` ``name`` of a results dataset by
  ``cka``, ``cka_nopc`` (axes ``layer``, ``layer_b``) and ``pc_share`` (``layer``)."""
  v = ds[name]
  L = v.sizes["layer"]
  rows = lambda a, b: v.isel(block_row=slice(a, b)).rename(block_row="layer", layer="layer_b")
  out = ds.drop_vars(name)
  out["cka"] = rows(0, L).drop_vars([c for c in ("layer", "layer_b") if c in v.coords])
  out["cka_nopc"] = rows(L, 2 * L).drop_vars([c for c in ("layer", "layer_b") if c in v.coords])
  out["pc_share"] = v.isel(block_row=2 * L)
  idx = np.arange(L)
  return out.assign_coords(layer=idx, layer_b=idx)


class Block(NamedTuple):
  """A run of consecutive layers (``start`` to ``stop - 1``) whose pairwise CKA all reach a threshold."""
  start: int
  stop: int

  @property
  def size(self) -> int:
    return self.stop - self.start


def find_block(M, threshold: float, skip: int = 0) -> Block:
  r"""The largest block of consecutive layers that are all similar to each other.

  The block is the longest run of consecutive layers
  :math:`a, a+1, \dots, b-1` with :math:`M_{ij} \ge` ``threshold`` for every
  pair :math:`i, j` in it (the contiguous square of high CKA on the diagonal
  of Nguyen et al.'s heatmaps); ties go to the earliest. A single layer is
  always a block of size 1. Host-side (numpy), for reading results.

  Args:
    M: a square ``(L, L)`` similarity matrix (e.g. :func:`cka_matrix`).
    threshold: the similarity every pair of the block must reach.
    skip: ignore the first ``skip`` layers (e.g. the embedding).

  Returns:
    ``Block(start, stop)``, indices into ``M``.

  >>> import numpy as np
  >>> M = np.full((6, 6), 0.3); M[2:5, 2:5] = 0.95; np.fill_diagonal(M, 1.0)
  >>> find_block(M, 0.9)
  Block(start=2, stop=5)
  """
  M = np.asarray(M, np.float64)
  if M.ndim != 2 or M.shape[0] != M.shape[1]:
    raise ValueError(f"find_block needs a square matrix, got shape {M.shape}")
  L = M.shape[0]
  if not 0 <= skip < L:
    raise ValueError(f"skip must lie in [0, {L - 1}], got {skip}")
  ok = M >= threshold
  best = Block(skip, skip + 1)
  for a in range(skip, L):
    b = a + 1
    while b < L and ok[b, a:b + 1].all() and ok[a:b + 1, b].all():
      b += 1
    if b - a > best.size:
      best = Block(a, b)
  return best
