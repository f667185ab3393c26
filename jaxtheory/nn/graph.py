"""Graph aggregation as an ``(init, apply, kernel)`` layer (NT's ``stax.Aggregate``).

Every vertex (a position along the aggregated axes) becomes the weighted sum
of its direct predecessors in the example's graph. The graph is an input of
each call, carried by the run context: ``apply`` reads ``pattern`` from
``ctx`` (:func:`jaxtheory.kernels.graph.with_pattern`), the kernel map
``(pattern1, pattern2)``. Pattern formats and the kernel:
:mod:`jaxtheory.kernels.graph`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxtheory.kernels import graph as kgraph
from jaxtheory.nn.core import Layer


def _dense(x, a, agg, b):
  """``out[n, ..., j, ...] = sum_i x[n, ..., i, ...] a[n, i, j]`` over the axes ``agg``."""
  heads = {ax: x.ndim + i for i, ax in enumerate(agg)}
  x_lab = list(range(x.ndim))
  a_lab = [b] + list(agg) + [heads[ax] for ax in agg]
  out = [heads.get(ax, ax) for ax in range(x.ndim)]
  return jnp.einsum(x, x_lab, a.astype(x.dtype), a_lab, out, precision=lax.Precision.HIGHEST)


def _sparse(x, pattern, agg, b):
  """The same sum as :func:`_dense`, arc by arc (``segment_sum``: ``O(V + E)``)."""
  rest = tuple(a for a in range(x.ndim) if a != b and a not in agg)
  order = (b, *agg, *rest)
  xt = jnp.transpose(x, order)
  n, agg_shape = xt.shape[0], xt.shape[1:1 + len(agg)]
  v = math.prod(agg_shape)
  flat = xt.reshape((n, v, -1))
  tails, heads = kgraph.sparse_arcs(pattern, n, agg_shape)
  # A zero row stands for the dropped arcs' tail; their heads (index v) are cut below.
  padded = jnp.concatenate([flat, jnp.zeros_like(flat[:, :1])], axis=1)
  messages = padded[jnp.arange(n)[:, None], tails]
  out = jax.vmap(lambda m, h: jax.ops.segment_sum(m, h, num_segments=v + 1))(messages, heads)
  out = out[:, :v].reshape(xt.shape)
  return jnp.transpose(out, tuple(order.index(a) for a in range(x.ndim)))


def aggregate(aggregate_axis=None, batch_axis: int = 0, channel_axis: int = -1,
              to_dense: Callable | None = None,
              implementation: str = kgraph.DENSE) -> Layer:
  """Aggregation over a graph per example (Du et al. 2019), without parameters.

  Args:
    aggregate_axis: the axes whose positions are the graph's vertices (an int
      or a sequence; ``None``: all axes but the batch and channel axes).
    batch_axis: the batch axis of the input.
    channel_axis: the channel axis of the input (infinite in the kernel).
    to_dense: ``'DENSE'`` only: applied to each pattern before use (a sparse
      encoding decoded on the fly); ``None`` is the identity.
    implementation: ``'DENSE'`` (an adjacency tensor ``(batch, *V, *V)``,
      matrix products) or ``'SPARSE'`` (integer arcs ``(batch, n_edges, K, 2)``,
      ``segment_sum``); see :mod:`jaxtheory.kernels.graph`.

  Returns:
    A :class:`~jaxtheory.nn.core.Layer` keeping its input's shape. ``apply``
    without a pattern in ``ctx`` is the identity.
  """
  implementation = kgraph.implementation_of(implementation)

  def init(key, spec, ctx):
    del key, ctx
    kgraph.axes(aggregate_axis, batch_axis, channel_axis, len(spec.shape))
    return spec, (), ()

  def apply(params, x, feat, ctx):
    del params
    pattern = kgraph.pattern_of(ctx)
    if pattern is None:
      return x, feat
    agg, b, _ = kgraph.axes(aggregate_axis, batch_axis, channel_axis, x.ndim)
    if implementation == kgraph.SPARSE:
      return _sparse(x, pattern, agg, b), feat
    agg_shape = tuple(x.shape[a] for a in agg)
    return _dense(x, kgraph.dense_pattern(pattern, x.shape[b], agg_shape, to_dense), agg, b), feat

  return Layer(init, apply, kgraph.aggregate(aggregate_axis, batch_axis, channel_axis, to_dense,
                                             implementation))
