r"""Graph aggregation (neural-tangents' ``stax.Aggregate``): its patterns and its kernel map.

An aggregation layer replaces every vertex of a graph by the weighted sum of
its direct predecessors (Du et al. 2019, "Graph Neural Tangent Kernel: Fusing
Graph Neural Networks with Graph Kernels"). The vertices are the positions
along some spatial axes of the activation (the *aggregated* axes); each input
example ``n`` brings its own graph, the *pattern*, given in one of two formats:

* ``'DENSE'``: a weighted adjacency tensor ``A`` of shape ``(batch, *V, *V)``
  (``V`` the sizes of the aggregated axes): ``A[n, i, j]`` is the weight of the
  arc from tail ``i`` to head ``j``, and ``out[n, j] = sum_i x[n, i] A[n, i, j]``;
* ``'SPARSE'``: integer arcs of shape ``(batch, n_edges, K, 2)`` (``K`` the
  number of aggregated axes; ``(batch, n_edges, 2)`` when ``K == 1``), the
  trailing axis ``(tail, head)``, each of weight one (repeated arcs add up). An
  arc with a negative coordinate is padding and is dropped (no negative
  indexing).

The layer is linear and has no parameters, so the NNGP and the NTK both become
``A1^T K A2`` over the aggregated axes (per pair of examples, the other axes
untouched), the covariances ``cov1``/``cov2`` ``A1^T K A1`` / ``A2^T K A2``;
this needs all pairs of positions (``diagonal_spatial=False``). Sparse
patterns are turned into dense adjacency for the kernel (``O(V^2)`` memory,
as the kernel itself).

The pattern is an input of each call, not a parameter: it rides on the run
context (:func:`with_pattern`), ``pattern`` for ``apply`` and ``(pattern1,
pattern2)`` for the kernel of ``x1`` with ``x2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxtheory.kernels import analytic

DENSE, SPARSE = "DENSE", "SPARSE"


def implementation_of(implementation) -> str:
  """``'DENSE'`` or ``'SPARSE'`` (a string or an enum with that ``value``), checked."""
  name = getattr(implementation, "value", implementation)
  if name not in (DENSE, SPARSE):
    raise ValueError(f"Aggregate: implementation must be 'DENSE' or 'SPARSE', got "
                     f"{implementation!r}")
  return name


# ----------------------------------------------------------------------------
# The pattern on the run context.


def with_pattern(ctx, pattern):
  """``ctx`` (any dataclass run context) that also carries ``pattern`` (read by
  :func:`pattern_of`); ``pattern=None`` leaves ``ctx`` as it is."""
  if pattern is None:
    return ctx
  return analytic.ctx_with(ctx, "pattern", pattern)


def pattern_of(ctx):
  """The pattern the context carries, or ``None``."""
  return getattr(ctx, "pattern", None)


# ----------------------------------------------------------------------------
# Axes and patterns.


def axes(aggregate_axis, batch_axis: int, channel_axis: int,
         ndim: int) -> tuple[tuple[int, ...], int, int]:
  """``(aggregated axes, batch axis, channel axis)`` of an ``ndim``-dimensional activation,
  non-negative; the aggregated ones sorted (``None``: every axis but batch and channel)."""
  def canon(a, name):
    if not isinstance(a, int) or not -ndim <= a < ndim:
      raise ValueError(f"Aggregate: {name} {a!r} is out of range for a {ndim}-dimensional input")
    return a % ndim

  b, c = canon(batch_axis, "batch_axis"), canon(channel_axis, "channel_axis")
  if b == c:
    raise ValueError(f"Aggregate: batch_axis={batch_axis} and channel_axis={channel_axis} "
                     f"name the same axis of a {ndim}-dimensional input")
  if aggregate_axis is None:
    return tuple(a for a in range(ndim) if a not in (b, c)), b, c
  agg = (aggregate_axis,) if isinstance(aggregate_axis, int) else tuple(aggregate_axis)
  agg = tuple(sorted({canon(a, "aggregate_axis") for a in agg}))
  if b in agg or c in agg:
    raise ValueError(f"Aggregate: aggregate_axis={aggregate_axis!r} includes the batch axis "
                     f"({b}) or the channel axis ({c})")
  return agg, b, c


def dense_pattern(pattern, n: int, agg_shape: Sequence[int],
                  to_dense: Callable | None) -> jax.Array:
  """``to_dense(pattern)``, checked to be ``(n, *agg_shape, *agg_shape)``."""
  p = jnp.asarray(pattern if to_dense is None else to_dense(pattern))
  want = (n, *agg_shape, *agg_shape)
  if p.shape != want:
    raise ValueError(
        f"Aggregate: a dense pattern must have shape (batch, *aggregated sizes, *aggregated "
        f"sizes) = {want} for this input, got {p.shape}" + (
            "" if to_dense is None else " (after to_dense)"))
  return p


def sparse_arcs(pattern, n: int, agg_shape: Sequence[int]) -> tuple[jax.Array, jax.Array]:
  """``(tails, heads)``, each ``(n, n_edges)``: arcs of a sparse pattern as flat vertex
  indices into the aggregated axes (row-major), ``V = prod(agg_shape)`` for dropped arcs."""
  p = jnp.asarray(pattern)
  k = len(agg_shape)
  form = f"(batch, n_edges, {k}, 2)" + (" or (batch, n_edges, 2)" if k == 1 else "")
  if not jnp.issubdtype(p.dtype, jnp.integer):
    raise ValueError(f"Aggregate(implementation='SPARSE'): pattern must be an integer array "
                     f"of shape {form}, got dtype {p.dtype}")
  if k == 1 and p.ndim == 3:
    p = p[:, :, None, :]
  if p.ndim != 4 or p.shape[0] != n or p.shape[2] != k or p.shape[3] != 2:
    raise ValueError(f"Aggregate(implementation='SPARSE'): pattern must have shape {form} "
                     f"with batch {n} for this input, got {tuple(jnp.shape(pattern))}")
  valid = jnp.all(p >= 0, axis=(2, 3))

  def flat(idx):  # (n, E, K) -> (n, E); coordinates past a size wrap around
    out = jnp.zeros(idx.shape[:2], idx.dtype)
    for d, size in enumerate(agg_shape):
      out = out * size + idx[..., d] % size
    return out

  v = math.prod(agg_shape)
  return (jnp.where(valid, flat(p[..., 0]), v), jnp.where(valid, flat(p[..., 1]), v))


def sparse_to_dense(pattern, n: int, agg_shape: Sequence[int], dtype) -> jax.Array:
  """The dense adjacency ``(n, *agg_shape, *agg_shape)`` of a sparse pattern (arc counts)."""
  tails, heads = sparse_arcs(pattern, n, agg_shape)
  v = math.prod(agg_shape)
  flat = jnp.where(tails < v, tails * v + heads, v * v)
  count = lambda f: jax.ops.segment_sum(jnp.ones(f.shape, dtype), f, num_segments=v * v + 1)
  return jax.vmap(count)(flat)[:, :v * v].reshape((n, *agg_shape, *agg_shape))


def adjacency(pattern, n: int, agg_shape: Sequence[int], implementation: str,
              to_dense: Callable | None, dtype) -> jax.Array:
  """The dense ``(n, *agg_shape, *agg_shape)`` adjacency of a pattern of either format."""
  if implementation == SPARSE:
    return sparse_to_dense(pattern, n, agg_shape, dtype)
  return dense_pattern(pattern, n, agg_shape, to_dense).astype(dtype)


# ----------------------------------------------------------------------------
# The kernel map.


def _sandwich(m, a1, a2, spatial: Sequence[int], nspatial: int, bn: int):
  """``a1^T m a2`` over the spatial axes ``spatial`` of a full-layout covariance ``m``.

  ``m`` has ``bn`` batch axes (``(n1, n2)`` or one shared ``n``), then ``(p_d,
  q_d)`` per spatial axis ``d``; ``a1``/``a2`` are ``(n, *tails, *heads)``
  over the axes ``spatial``. Two batched matrix products (``a1`` batched over
  ``n1``, then ``a2`` over ``n2``) and one transpose back to ``m``'s layout:
  about twice as fast on CPU as a three-operand ``einsum``, whose contraction
  order moves the large operand between the products.
  """
  if m is None or m.ndim < bn:  # a scalar NTK placeholder
    return m
  k = len(spatial)
  labels = (["n1", "n2"] if bn == 2 else ["n"]) + [
      (side, d) for d in range(nspatial) for side in ("p", "q")]
  mat = lambda x, y, contract, batch: lax.dot_general(
      x, y, ((contract, tuple(range(1, k + 1))), ((batch,), (0,))),
      precision=lax.Precision.HIGHEST)
  p_axes = tuple(labels.index(("p", d)) for d in spatial)
  y = mat(m, a1, p_axes, 0)
  y_labels = [labels[0]] + [l for i, l in enumerate(labels[1:], 1) if i not in p_axes] + [
      ("P", d) for d in spatial]
  b2 = y_labels.index(labels[bn - 1])
  q_axes = tuple(y_labels.index(("q", d)) for d in spatial)
  z = mat(y, a2, q_axes, b2)
  z_labels = [y_labels[b2]] + [l for i, l in enumerate(y_labels) if i != b2 and i not in q_axes] \
      + [("Q", d) for d in spatial]
  head = {("p", d): ("P", d) for d in spatial} | {("q", d): ("Q", d) for d in spatial}
  return jnp.transpose(z, [z_labels.index(head.get(l, l)) for l in labels])


def aggregate(aggregate_axis=None, batch_axis: int = 0, channel_axis: int = -1,
              to_dense: Callable | None = None,
              implementation: str = DENSE) -> analytic.KernelMap:
  """The kernel map of an aggregation layer; the patterns come from ``ctx`` (:func:`pattern_of`).

  ``(pattern1, pattern2)`` aggregate the ``x1`` and ``x2`` sides: the NNGP and
  NTK become ``A1^T K A2``, ``cov1`` ``A1^T K A1`` and ``cov2`` ``A2^T K A2``
  (per example, over the aggregated axes). No pattern (or ``(None, None)``) is
  the identity. Needs the full spatial layout.
  """
  implementation = implementation_of(implementation)

  def kernel(k: analytic.Kernel, ctx) -> analytic.Kernel:
    pattern = pattern_of(ctx)
    p1, p2 = (None, None) if pattern is None else pattern
    if p1 is None and p2 is None:
      return k
    if p1 is None or p2 is None:
      raise NotImplementedError("Aggregate: the kernel needs both patterns (pattern1, pattern2) "
                                "or neither, got exactly one None")
    if k.diagonal_spatial and k.nspatial:
      raise analytic.NeedsFullSpatial("Aggregate")
    nspatial = k.nspatial
    agg, b, c = axes(aggregate_axis, batch_axis, channel_axis, nspatial + 2)
    spatial = tuple(a - (b < a) - (c < a) for a in agg)
    agg_shape = tuple(k.spatial_shape[d] for d in spatial)
    dtype = k.nngp.dtype
    a1 = adjacency(p1, k.nngp.shape[0], agg_shape, implementation, to_dense, dtype)
    a2 = adjacency(p2, k.nngp.shape[1], agg_shape, implementation, to_dense, dtype)
    pair = lambda m, x, y, bn: _sandwich(m, x, y, spatial, nspatial, bn)
    return k.replace(nngp=pair(k.nngp, a1, a2, 2), ntk=pair(k.ntk, a1, a2, 2),
                     cov1=pair(k.cov1, a1, a1, 1),
                     cov2=None if k.cov2 is None else pair(k.cov2, a2, a2, 1))

  return kernel
