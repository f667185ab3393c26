r"""The kernel of a constant ``lax.dot_general`` with the activation (neural-tangents'
``DotGeneral`` with an array operand).

The layer computes :math:`y = x \cdot_{\mathrm{dn}} o` (or :math:`o \cdot_{\mathrm{dn}} x`)
for a fixed array :math:`o`; it is linear in :math:`x` and leaves the channel axis
alone, so each channel's covariance transforms as

.. math::
  K'(x, x')_{a b} = \sum_{c, c'} o_{a c}\, o_{b c'}\, K(x, x')_{c c'}

where :math:`c, c'` run over the contracted input positions and :math:`a, b` over the
output positions: an einsum of the kernel with two copies of :math:`o`, one per side.
A spatial axis of the input paired with an axis of :math:`o` (a ``lax.dot_general``
batch axis) stays, weighted entrywise; the batch axis may be paired too (one constant
per example); the operand's free axes become new spatial axes. Contracting the batch axis
mixes examples: the output's first axis (the channel axis aside) becomes its batch axis, and
the new variances need the covariances among the old examples (``diagonal_batch=False``;
:class:`~jaxtheory.kernels.analytic.NeedsJointBatch` for ``x1`` against a different ``x2``).
In the diagonal layout
(same-position entries only) both copies share their labels, which is exact unless a
spatial axis is contracted (then :class:`~jaxtheory.kernels.analytic.NeedsFullSpatial`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxtheory.kernels import analytic, masking

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Contraction:
  """Which axes of the input and of the operand a ``lax.dot_general`` pairs.

  Attributes:
    ndim_x: the input's rank (batch, channel and spatial axes).
    ndim_o: the operand's rank.
    is_lhs: the operand is ``lax.dot_general``'s left argument.
    x_contract, o_contract: contracted axes, pairwise.
    x_batch, o_batch: batch (paired, kept) axes, pairwise.
    batch_axis, channel_axis: the input's batch and channel axes (non-negative).
  """
  ndim_x: int
  ndim_o: int
  is_lhs: bool
  x_contract: tuple[int, ...]
  o_contract: tuple[int, ...]
  x_batch: tuple[int, ...]
  o_batch: tuple[int, ...]
  batch_axis: int
  channel_axis: int

  @staticmethod
  def of(dimension_numbers, ndim_x: int, ndim_o: int, is_lhs: bool, batch_axis: int,
         channel_axis: int) -> "Contraction":
    """Checked: the channel axis is free, the batch axis is not contracted."""
    try:
      (lc, rc), (lb, rb) = dimension_numbers
    except (TypeError, ValueError):
      raise ValueError("DotGeneral: dimension_numbers must be ((lhs_contracting, "
                       "rhs_contracting), (lhs_batch, rhs_batch)), got "
                       f"{dimension_numbers!r}") from None
    (oc, xc), (ob, xb) = ((lc, rc), (lb, rb)) if is_lhs else ((rc, lc), (rb, lb))
    mod = lambda axes, n: tuple(int(a) % n for a in axes)
    xc, xb, oc, ob = mod(xc, ndim_x), mod(xb, ndim_x), mod(oc, ndim_o), mod(ob, ndim_o)
    b, c = batch_axis % ndim_x, channel_axis % ndim_x
    if b == c:
      raise ValueError(f"DotGeneral: batch_axis={batch_axis} and channel_axis={channel_axis} "
                       f"name the same axis of a {ndim_x}-dimensional input")
    if len(xc) != len(oc) or len(xb) != len(ob):
      raise ValueError(f"DotGeneral: dimension_numbers {dimension_numbers!r} pair different "
                       "numbers of axes")
    if c in xc + xb:
      raise ValueError(f"DotGeneral: the channel axis ({c}) can be neither contracted nor "
                       "batched: its kernel treats channels as infinitely many i.i.d. copies")
    spec = Contraction(ndim_x, ndim_o, is_lhs, xc, oc, xb, ob, b, c)
    if spec.contracts_batch and len(spec.output_axes()) < 2:
      raise ValueError(f"DotGeneral: contracting the batch axis ({b}) leaves no axis but the "
                       "channels: there is no axis to become the output's batch")
    return spec

  @property
  def contracts_batch(self) -> bool:
    """The batch axis is contracted: examples are mixed, and the output's first axis (the
    channel axis aside) becomes its batch axis, as in neural-tangents."""
    return self.batch_axis in self.x_contract

  @property
  def x_spatial(self) -> tuple[int, ...]:
    """The input's spatial axes, in order (the kernel's spatial axes)."""
    return tuple(a for a in range(self.ndim_x) if a not in (self.batch_axis, self.channel_axis))

  def output_axes(self) -> list[tuple[str, int]]:
    """``lax.dot_general``'s output axes: ``('x', axis)`` or ``('o', axis)``, in order."""
    x_free = [("x", a) for a in range(self.ndim_x) if a not in self.x_contract + self.x_batch]
    o_free = [("o", a) for a in range(self.ndim_o) if a not in self.o_contract + self.o_batch]
    return [("x", a) for a in self.x_batch] + (o_free + x_free if self.is_lhs
                                               else x_free + o_free)

  def output_batch_channel(self) -> tuple[int, int]:
    """The output's batch and channel axes."""
    out = self.output_axes()
    return out.index(("x", self.batch_axis)), out.index(("x", self.channel_axis))

  def einsum_args(self, n_batch: int, diagonal: bool):
    """Sublists for ``einsum(K, K_labels, o, o_left, o, o_right, out)``.

    ``n_batch``: the kernel's batch axes (2: ``nngp``, 1: ``cov1``). With ``n_batch=1``
    and ``diagonal``, ``einsum(a, K_labels, o, o_left, out)`` maps a single
    activation-like array ``(n, *spatial)`` (masks) instead of a covariance. When the
    batch axis is contracted (:attr:`contracts_batch`) its labels are contracted with the
    operand's axis, and the output's first axis (the channel axis aside) takes their
    place, as a pair of labels (``x1``'s side, ``x2``'s side) for ``n_batch=2``.
    """
    sp = self.x_spatial
    nsp = len(sp)
    batch = (0, 1) if n_batch == 2 else (0, 0)
    first = 2
    left = {a: first + 2 * d for d, a in enumerate(sp)}
    right = {a: first + 2 * d + (0 if diagonal else 1) for d, a in enumerate(sp)}
    free0 = first + 2 * nsp
    o_free = [a for a in range(self.ndim_o) if a not in self.o_contract + self.o_batch]
    free_l = {a: free0 + 2 * i for i, a in enumerate(o_free)}
    free_r = {a: free0 + 2 * i + (0 if diagonal else 1) for i, a in enumerate(o_free)}

    def o_labels(side_map, free_map, b):
      labels = []
      for a in range(self.ndim_o):
        if a in self.o_contract + self.o_batch:  # paired with an input axis, the batch's too
          xa = (self.x_contract[self.o_contract.index(a)] if a in self.o_contract
                else self.x_batch[self.o_batch.index(a)])
          labels.append(b if xa == self.batch_axis else side_map[xa])
        else:
          labels.append(free_map[a])
      return labels

    k_labels = list(batch[:n_batch]) + [l for a in sp for l in
                                        ((left[a],) if diagonal else (left[a], right[a]))]
    # A contracted batch leaves no batch labels: the first output axis becomes the batch.
    out = [] if self.contracts_batch else list(batch[:n_batch])
    for kind, a in self.output_axes():
      if kind == "x" and a in (self.batch_axis, self.channel_axis):
        continue
      l, r = (left[a], right[a]) if kind == "x" else (free_l[a], free_r[a])
      new_batch = not out and n_batch == 2  # only with a contracted batch
      out += [l] if diagonal and not new_batch else [l, r]
    o_left = o_labels(left, free_l, batch[0])
    o_right = o_labels(right, free_r, batch[1] if n_batch == 2 else batch[0])
    return k_labels, o_left, o_right, out




def axis_after_dot(axis: int, contracting_dims: Sequence[int], batch_dims: Sequence[int],
                   lhs_ndim: int | None = None) -> int:
  """Where a free or batch axis of one ``lax.dot_general`` operand lands in the output.

  Args:
    axis: the axis of the operand (non-negative), not a contracted one.
    contracting_dims: that operand's contracted axes.
    batch_dims: that operand's batch axes (they lead the output, in this order).
    lhs_ndim: ``None`` if the operand is the left one; else the left operand's rank (its
      free axes come first).

  Returns:
    The output axis (NT's ``utils.axis_after_dot``).
  """
  if axis in batch_dims:
    return list(batch_dims).index(axis)
  before = sum(1 for a in contracting_dims if a < axis)
  after_batch = sum(1 for a in batch_dims if a > axis)
  lhs_free = 0 if lhs_ndim is None else lhs_ndim - len(batch_dims) - len(contracting_dims)
  return axis - before + after_batch + lhs_free


def with_input_axes(ctx, axes: tuple[int, int]):
  """``ctx`` (a dataclass run context) that also says where the activations keep their batch
  and channel axes (neural-tangents' ``kernel_fn(..., batch_axis=, channel_axis=)``, which
  states them for every layer); read by :func:`input_axes_of`."""
  return analytic.ctx_with(ctx, "input_axes", tuple(axes))


def input_axes_of(ctx) -> tuple[int, int] | None:
  """The ``(batch_axis, channel_axis)`` the context carries, or ``None``."""
  return getattr(ctx, "input_axes", None)


def kernel_map(other: Array, spec: Callable[[int, Any], Contraction]) -> analytic.KernelMap:
  """Kernel map of ``lax.dot_general`` with the constant ``other`` (see the module docstring);
  ``spec(ndim, ctx)`` is the contraction for inputs of rank ``ndim`` in the run ``ctx``."""

  def kernel(k: analytic.Kernel, ctx) -> analytic.Kernel:
    spec_ = spec(k.nspatial + 2, ctx)
    if spec_.contracts_batch:
      return _contract_batch(k, ctx, other.astype(k.nngp.dtype), spec_)
    contracts_space = any(a != spec_.batch_axis for a in spec_.x_contract)
    if k.diagonal_spatial and contracts_space and k.nspatial:
      raise analytic.NeedsFullSpatial("DotGeneral (contracting a spatial axis)")
    split = analytic.joint_split(k, ctx)
    if spec_.batch_axis in spec_.x_batch:  # per-example constants: one per example
      axis = spec_.o_batch[spec_.x_batch.index(spec_.batch_axis)]
      _check_examples(k, split, other.shape[axis],
                      f"DotGeneral pairs the batch axis with the operand's axis {axis}")
    o = _per_example(other.astype(k.nngp.dtype), spec_, split)

    def apply(m, bn):
      if m is None or m.ndim < bn:  # a scalar NTK placeholder
        return m
      kl, ol, orr, out = spec_.einsum_args(bn, k.diagonal_spatial)
      return jnp.einsum(m, kl, o, ol, o, orr, out, precision=lax.Precision.HIGHEST)

    return analytic._map(k, apply)

  return kernel


def _check_examples(k: analytic.Kernel, split: int | None, size: int, what: str) -> None:
  """A ``ValueError`` unless ``x1`` and ``x2`` (the halves of a joint batch cut at ``split``,
  or the kernel's two batch axes) each have ``size`` examples, one per entry of the operand's
  axis that ``what`` pairs with the batch."""
  n = k.nngp.shape[0]
  sizes = tuple(dict.fromkeys(k.nngp.shape[:2] if split is None else (split, n - split)))
  if any(s != size for s in sizes):
    raise ValueError(f"{what} ({size} entries), so x1 and x2 must each have {size} examples "
                     f"(got {' and '.join(map(str, sizes))})")


def _per_example(o: Array, spec: Contraction, split: int | None) -> Array:
  """The operand for a joint batch whose first ``split`` examples are ``x1``'s
  (:func:`~jaxtheory.kernels.analytic.joint_split`): with the batch axis paired with one of
  its axes (per-example constants), that axis repeated, since x1's examples then x2's meet
  the same constants; else ``o``."""
  if split is None or spec.batch_axis not in spec.x_batch:
    return o
  return jnp.concatenate([o, o], axis=spec.o_batch[spec.x_batch.index(spec.batch_axis)])


def _contract_batch(k: analytic.Kernel, ctx, o: Array, spec: Contraction) -> analytic.Kernel:
  """The kernel after contracting the batch axis with ``o``: the output's first axis becomes
  the batch (``nngp`` and ``ntk`` contracted on both sides; ``cov1`` their new diagonal)."""
  what = "DotGeneral (contracting the batch axis)"
  if getattr(ctx, "diagonal_batch", False):
    raise analytic.NeedsFullBatch(what)
  if k.diagonal_spatial:
    # The new batch pair needs both sides' positions of the axis that becomes it; a
    # contracted spatial axis needs all pairs (refused in the diagonal layout, as NT).
    if any(a != spec.batch_axis for a in spec.x_contract):
      raise analytic.NeedsFullSpatial("DotGeneral (contracting a spatial axis)")
    raise analytic.BatchFromSpatial(what)
  if k.cov2 is not None:  # x1 against a different x2: x1's own covariances are not here
    raise analytic.NeedsJointBatch(what)
  kl, ol, orr, out = spec.einsum_args(2, k.diagonal_spatial)
  split = analytic.joint_split(k, ctx)
  axis = spec.o_contract[spec.x_contract.index(spec.batch_axis)]
  _check_examples(k, split, o.shape[axis], f"{what} sums the examples against the operand's "
                  f"axis {axis}")

  def contract(m):
    if m is None or m.ndim < 2:  # a scalar NTK placeholder
      return m
    one = lambda b: jnp.einsum(b, kl, o, ol, o, orr, out, precision=lax.Precision.HIGHEST)
    return one(m) if split is None else analytic.by_halves(one, m, (0, 1), split)

  nngp = contract(k.nngp)
  cov1 = jnp.moveaxis(jnp.diagonal(nngp, axis1=0, axis2=1), -1, 0)
  return k.replace(nngp=nngp, ntk=contract(k.ntk), cov1=cov1, cov2=None, joint_split=None,
                   batch_from_spatial=bool(getattr(ctx, "batch_from_spatial", False)))


def output_mask(mask: Array, other: Array, spec: Contraction, split: int | None = None) -> Array:
  """The output's mask from the kernel's ``(n, *spatial, c)`` input mask: an output entry is
  masked unless some unmasked input entry meets a nonzero operand entry. ``split``: the
  batch holds ``x1``'s first ``split`` examples then ``x2``'s
  (:func:`~jaxtheory.kernels.analytic.joint_split`), each part mixed on its own."""
  kept = (~masking.whole_positions(mask, "DotGeneral")[..., 0]).astype(jnp.float32)
  o = (other != 0).astype(jnp.float32)
  kl, ol, _, out = spec.einsum_args(1, True)
  if split is None or not spec.contracts_batch:
    return (jnp.einsum(kept, kl, _per_example(o, spec, split), ol, out) == 0)[..., None]
  hit = analytic.by_halves(lambda h: jnp.einsum(h, kl, o, ol, out), kept, (0,), split)
  return (hit == 0)[..., None]


def apply_mask(mask: Array, shape: Sequence[int], other: Array, dimension_numbers,
               is_lhs: bool, channel_axis: int) -> Array:
  """The output's mask from the activation-layout mask of an input of ``shape`` (NT's rule)."""
  full = list(shape)
  full[channel_axis] = mask.shape[channel_axis]
  kept = (~jnp.broadcast_to(mask, full)).astype(jnp.float32)
  o = (other != 0).astype(jnp.float32)
  args = (o, kept) if is_lhs else (kept, o)
  return lax.dot_general(*args, dimension_numbers) == 0
