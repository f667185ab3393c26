"""Output axes, einsum labels and parameter leaves shared by the empirical-NTK implementations.

Used by :mod:`~jaxtheory.kernels.empirical` (Jacobian contraction, NTK-vector
products, the driver) and :mod:`~jaxtheory.kernels.structured` (structured
derivatives); see :mod:`~jaxtheory.kernels.empirical` for NT's conventions on
``trace_axes`` and ``diagonal_axes``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

Axes = int | Sequence[int]


# ----------------------------------------------------------------------------
# Axes and einsum labels.


class _Layout(NamedTuple):
  """How each output axis enters the kernel.

  Attributes:
    unit: ``'free'`` (both unit axes kept) or ``'diag'`` (units paired).
    unit_trace: sum the paired unit axis away at the end.
    s_modes: per per-unit output axis, ``'free'``, ``'trace'`` or ``'diag'``.
    traced_size: product of the sizes of all traced axes (NT averages).
  """
  unit: str
  unit_trace: bool
  s_modes: tuple[str, ...]
  traced_size: int


class _Labels:
  """einsum sublists (integer labels) for side 1, side 2 and the output."""

  def __init__(self, layout: _Layout):
    self.u1, self.u2 = (0, 1) if layout.unit == "free" else (0, 0)
    self.s1, self.s2, s_out = [], [], []
    nxt = 2
    for mode in layout.s_modes:
      if mode == "free":
        self.s1.append(nxt)
        self.s2.append(nxt + 1)
        s_out += [nxt, nxt + 1]
        nxt += 2
      else:
        self.s1.append(nxt)
        self.s2.append(nxt)
        if mode == "diag":
          s_out.append(nxt)
        nxt += 1
    self.units = [self.u1, self.u2] if layout.unit == "free" else [self.u1]
    self.out = self.units + s_out
    self._next = nxt

  def extra(self, k: int, offset: int = 0) -> list[int]:
    """``k`` labels unused by the sides and the output."""
    return list(range(self._next + offset, self._next + offset + k))


def _canonical_axes(axes: Axes, ndim: int, name: str) -> tuple[int, ...]:
  axes = (axes,) if isinstance(axes, int) else tuple(axes)
  out = set()
  for a in axes:
    if not isinstance(a, int) or not -ndim <= a < ndim:
      raise ValueError(f"{name} entry {a!r} is out of range for outputs with {ndim} axes")
    out.add(a % ndim)
  return tuple(sorted(out))


def _layout(out_ndim: int, shape1, shape2, trace_axes, diagonal_axes,
            independent: bool) -> _Layout:
  """The layout for full outputs ``shape1``/``shape2`` (batch axis first)."""
  trace = _canonical_axes(trace_axes, out_ndim, "trace_axes")
  diag = _canonical_axes(diagonal_axes, out_ndim, "diagonal_axes")
  if set(trace) & set(diag):
    raise ValueError(f"trace_axes {trace} and diagonal_axes {diag} overlap")
  for a in trace + diag:
    if shape1[a] != shape2[a]:
      raise ValueError(
          f"outputs of x1 and x2 differ on traced/diagonal axis {a}: "
          f"{shape1[a]} != {shape2[a]} (shapes {shape1} and {shape2})")
  traced_size = math.prod(shape1[a] for a in trace)
  mode = lambda a: "trace" if a in trace else "diag" if a in diag else "free"
  if not independent:
    return _Layout("free", False, tuple(mode(a) for a in range(out_ndim)), traced_size)
  unit = "free" if mode(0) == "free" else "diag"
  return _Layout(unit, mode(0) == "trace", tuple(mode(a) for a in range(1, out_ndim)),
                 traced_size)


# ----------------------------------------------------------------------------
# Parameters as a list of leaves; only inexact leaves are differentiated.


def _split_params(params):
  leaves, treedef = jax.tree.flatten(params)
  diff = [i for i, l in enumerate(leaves)
          if jnp.issubdtype(jnp.result_type(l), jnp.inexact)]
  return leaves, treedef, diff


def _with(leaves, idx, values):
  leaves = list(leaves)
  for i, v in zip(idx, values):
    leaves[i] = v
  return leaves


def _basis(S, dtype):
  size = math.prod(S)
  return jnp.eye(size, dtype=dtype).reshape((size,) + tuple(S))


def _contract_jac(J1, J2, S_ndim, lab: _Labels):
  """``sum_p J1[u1, S, p] J2[u2, S, p]`` in the output layout."""
  p = lab.extra(J1.ndim - 1 - S_ndim)
  return jnp.einsum(J1, [lab.u1, *lab.s1, *p], J2, [lab.u2, *lab.s2, *p], lab.out)
