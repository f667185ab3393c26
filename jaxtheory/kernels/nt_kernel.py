r"""neural-tangents' ``Kernel`` object and its ``kernel_fn(x1_or_kernel, x2, get, ...)`` protocol.

The analytic recursions (:mod:`jaxtheory.kernels.analytic`) work on a lean
:class:`~jaxtheory.kernels.analytic.Kernel` (per-example variances only, no
shapes). neural-tangents 0.6.5 (Novak et al. 2020) returns a richer object
whose fields its users read and ``replace``: the input shapes ``shape1`` /
``shape2``, ``x1_is_x2``, ``is_gaussian``, the layout flags ``diagonal_batch``
/ ``diagonal_spatial``, and a ``kernel_fn`` accepts such an object in place of
inputs (``kernel_fn(kernel_fn(x))`` composes two networks). This module holds
that object (:class:`Kernel`) and :func:`kernel_fn`, which runs a layer's
kernel map on arrays or on :class:`Kernel` objects and answers in NT's layout:

* ``diagonal_batch=True``: ``cov1`` holds :math:`K(x_i, x_i)`, shape
  ``(n1, *S)``; ``False``: the full :math:`K(x_i, x_j)`, ``(n1, n1, *S)`` (the
  NNGP of ``x1`` with itself), likewise ``cov2``; unset (the default): ``True``
  unless a layer mixes examples (resizing or contracting the batch axis), which needs
  ``False``;
* ``diagonal_spatial``: see :func:`jaxtheory.kernels.analytic.kernel_fn`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxtheory.kernels import analytic, batching, graph, masking

Array = jax.Array

_STATIC = dict(static=True, pytree_node=False)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Kernel:
  """NNGP, NTK and covariances of a network's outputs, with NT's metadata.

  Attributes:
    nngp: covariance of the outputs on ``x1`` with those on ``x2``,
      ``(n1, n2, *S)``; ``S`` is ``(h, w, ...)`` when ``diagonal_spatial``
      else ``(h, h, w, w, ...)``.
    ntk: the NTK, shaped like ``nngp`` (``None``: not computed).
    cov1: covariance of ``x1`` with itself: ``(n1, *S)`` (``diagonal_batch``)
      or ``(n1, n1, *S)``.
    cov2: the same for ``x2``; ``None`` when ``x2`` is ``x1``.
    x1_is_x2: a boolean array: the two batches are the same inputs.
    is_gaussian: the outputs are centred Gaussian with i.i.d. channels (after
      a dense or conv layer, not after a nonlinearity).
    is_reversed: the spatial axes are stored reversed (never, here).
    is_input: NT's flag for its dropout layer (NT leaves it ``False``).
    diagonal_batch: ``cov1``/``cov2`` hold only the per-example variances.
    diagonal_spatial: only same-position covariances are stored.
    shape1: shape of the activations on ``x1`` (channels: the finite count).
    shape2: shape of the activations on ``x2``.
    batch_axis: the batch axis of the activations.
    channel_axis: the channel axis of the activations.
    mask1: masked positions of the activation of ``x1``, batch first and
      channels last (``None``: no masking; see :mod:`jaxtheory.kernels.masking`).
    mask2: the same for ``x2``.
  """
  nngp: Array
  ntk: Array | None
  cov1: Array
  cov2: Array | None
  x1_is_x2: Array
  is_gaussian: bool = dataclasses.field(metadata=_STATIC)
  is_reversed: bool = dataclasses.field(metadata=_STATIC)
  is_input: bool = dataclasses.field(metadata=_STATIC)
  diagonal_batch: bool = dataclasses.field(metadata=_STATIC)
  diagonal_spatial: bool = dataclasses.field(metadata=_STATIC)
  shape1: tuple[int, ...] | None = dataclasses.field(metadata=_STATIC)
  shape2: tuple[int, ...] | None = dataclasses.field(metadata=_STATIC)
  batch_axis: int = dataclasses.field(metadata=_STATIC)
  channel_axis: int = dataclasses.field(metadata=_STATIC)
  mask1: Array | None = None
  mask2: Array | None = None

  def replace(self, **kw) -> "Kernel":
    """A copy with the given fields replaced."""
    return dataclasses.replace(self, **kw)

  def asdict(self) -> dict[str, Any]:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

  def astuple(self) -> tuple[Any, ...]:
    return tuple(getattr(self, f.name) for f in dataclasses.fields(self))

  def slice(self, n1_slice: slice, n2_slice: slice) -> "Kernel":
    """The kernel of ``x1[n1_slice]`` and ``x2[n2_slice]``."""
    cov1 = self.cov1[n1_slice] if self.diagonal_batch else self.cov1[n1_slice, n1_slice]
    src2 = self.cov1 if self.cov2 is None else self.cov2
    cov2 = src2[n2_slice] if self.diagonal_batch else src2[n2_slice, n2_slice]
    ntk = self.ntk
    if ntk is not None and ntk.ndim >= 2:
      ntk = ntk[n1_slice, n2_slice]
    mask2 = self.mask1 if self.mask2 is None else self.mask2  # x2 is x1: so is its mask
    return self.replace(nngp=self.nngp[n1_slice, n2_slice], ntk=ntk, cov1=cov1, cov2=cov2,
                        mask1=None if self.mask1 is None else self.mask1[n1_slice],
                        mask2=None if mask2 is None else mask2[n2_slice]
                        ).with_batch_sizes(cov1.shape[0], cov2.shape[0])

  def with_batch_sizes(self, n1: int, n2: int) -> "Kernel":
    """This kernel with ``shape1``/``shape2`` saying ``n1``/``n2`` examples (on the batch axis)."""
    at = lambda shape, n: tuple(n if i == self.batch_axis % len(shape) else d
                                for i, d in enumerate(shape))
    return self.replace(shape1=at(self.shape1, n1), shape2=at(self.shape2, n2))

  @property
  def nspatial(self) -> int:
    """Number of spatial axes of the activations."""
    return len(self.shape1) - 2


def is_kernel(x) -> bool:
  return isinstance(x, Kernel)


# ----------------------------------------------------------------------------
# Conversions between NT's object and the analytic one.


def _batch_diagonal(cov: Array) -> Array:
  """``(n, n, *S) -> (n, *S)``: the per-example entries of a full batch covariance."""
  return jnp.moveaxis(jnp.diagonal(cov, axis1=0, axis2=1), -1, 0)


def _channels(k: Kernel):
  return k.shape1[k.channel_axis] if k.shape1 else 1


def _check_layout(k: Kernel) -> None:
  """An input ``Kernel``'s ``nngp`` must have its layout's axes: ``(n1, n2)`` and one
  (``diagonal_spatial``) or two per spatial axis."""
  if not k.shape1 or k.nngp is None:
    return
  nsp = len(k.shape1) - 2
  want = 2 + (nsp if k.diagonal_spatial else 2 * nsp)
  n1 = k.shape1[k.batch_axis % len(k.shape1)]
  n2 = n1 if not k.shape2 else k.shape2[k.batch_axis % len(k.shape2)]
  if jnp.ndim(k.nngp) != want or tuple(jnp.shape(k.nngp)[:2]) != (n1, n2):
    raise ValueError(
        f"this Kernel cannot be an input: its nngp has shape {tuple(jnp.shape(k.nngp))} where "
        f"its layout (diagonal_spatial={k.diagonal_spatial}, {nsp} spatial axes, {n1} and {n2} "
        f"examples) needs {want} axes starting ({n1}, {n2}). A kernel whose batch pair came "
        "from a spatial pair (DotGeneral contracting the batch axis with "
        "diagonal_spatial=True) keeps same-position entries only; compute it with "
        "diagonal_spatial=False to continue from it")


def _to_analytic(k: Kernel) -> tuple[analytic.Kernel, analytic.Kernel | None,
                                    analytic.Kernel | None]:
  """``(k12, k11, k22)``: the analytic kernel and, for ``diagonal_batch=False``,
  those of each batch with itself (``k22`` is ``None`` when ``x2`` is ``x1``)."""
  if k.is_reversed:
    raise ValueError("kernels with reversed spatial axes are not supported")
  _check_layout(k)
  if k.diagonal_batch:
    v1, v2 = k.cov1, k.cov2
  else:
    v1 = _batch_diagonal(k.cov1)
    v2 = None if k.cov2 is None else _batch_diagonal(k.cov2)
  ch = _channels(k)
  ntk = k.ntk
  if ntk is not None and ntk.ndim == 0:
    ntk = jnp.broadcast_to(ntk, k.nngp.shape)
  k12 = analytic.Kernel(k.nngp, ntk, v1, v2, ch, k.diagonal_spatial, k.is_gaussian, False,
                        k.x1_is_x2, k.mask1, k.mask2)
  if k.diagonal_batch:
    return k12, None, None
  yes = jnp.asarray(True)
  k11 = analytic.Kernel(k.cov1, None, v1, None, ch, k.diagonal_spatial, k.is_gaussian, False, yes,
                        k.mask1)
  k22 = None if k.cov2 is None else analytic.Kernel(k.cov2, None, v2, None, ch,
                                                   k.diagonal_spatial, k.is_gaussian, False, yes,
                                                   k.mask2)
  return k12, k11, k22


def _shape(ak: analytic.Kernel, n: int) -> tuple[int, ...]:
  ch = ak.channels if isinstance(ak.channels, int) else -1
  return (n, *ak.spatial_shape, ch)


def _from_analytic(k12: analytic.Kernel, k11: analytic.Kernel | None,
                   k22: analytic.Kernel | None, x1_is_x2, diagonal_batch: bool,
                   same: bool) -> Kernel:
  n1 = k12.nngp.shape[0]
  n2 = k12.nngp.shape[1]
  if diagonal_batch:
    cov1, cov2 = k12.cov1, (None if same else k12.cov2)
  else:
    cov1, cov2 = k11.nngp, (None if same else k22.nngp)
  shape1 = _shape(k12, n1)
  return Kernel(nngp=k12.nngp, ntk=k12.ntk, cov1=cov1, cov2=cov2,
                x1_is_x2=jnp.asarray(x1_is_x2, bool), is_gaussian=k12.is_gaussian,
                is_reversed=False, is_input=False, diagonal_batch=diagonal_batch,
                diagonal_spatial=k12.diagonal_spatial, shape1=shape1,
                shape2=_shape(k12, n2), batch_axis=0, channel_axis=len(shape1) - 1,
                mask1=k12.mask1, mask2=None if same else k12.mask2)


def x1_is_x2(x1, x2=None, eps: float = 1e-12):
  """Whether ``x2`` is ``x1`` (``None``, or equal entries up to ``eps``)."""
  if x2 is None or x1 is x2:
    return jnp.asarray(True)
  if jnp.shape(x1) != jnp.shape(x2):
    return jnp.asarray(False)
  return jnp.all(jnp.abs(jnp.asarray(x1) - jnp.asarray(x2)) < eps)


# ----------------------------------------------------------------------------
# kernel_fn.


def _is_leaf(x) -> bool:
  return isinstance(x, (Kernel, analytic.Kernel))


def _inputs(x1, x2, diagonal_batch, diagonal_spatial, compute_ntk, mask_constant=None):
  """Analytic kernels ``(k12, k11, k22)`` pytrees for arrays or NT kernels; entries of the
  arrays equal to ``mask_constant`` are masked (:mod:`jaxtheory.kernels.masking`)."""
  if jax.tree.leaves(x1, is_leaf=is_kernel) and all(
      is_kernel(l) for l in jax.tree.leaves(x1, is_leaf=is_kernel)):
    if x2 is not None:
      raise ValueError("kernel_fn got a Kernel and x2; pass x2=None with a Kernel")
    trip = jax.tree.map(_to_analytic, x1, is_leaf=is_kernel)
    pick = lambda i: jax.tree.map(lambda t: t[i], trip, is_leaf=lambda t: isinstance(t, tuple)
                                  and len(t) == 3 and isinstance(t[0], analytic.Kernel))
    same = jax.tree.map(lambda k: k.cov2 is None, x1, is_leaf=is_kernel)
    eq = jax.tree.map(lambda k: k.x1_is_x2, x1, is_leaf=is_kernel)
    db = {k.diagonal_batch for k in jax.tree.leaves(x1, is_leaf=is_kernel)}
    if not diagonal_batch and db != {False}:
      raise ValueError("diagonal_batch=False needs input kernels computed with "
                       "diagonal_batch=False (they hold only per-example variances)")
    return pick(0), pick(1) if not diagonal_batch else None, \
        pick(2) if not diagonal_batch else None, same, eq
  leaves1, tree = jax.tree.flatten(x1)
  # NT passes x2=(None, None) for two inputs compared with themselves.
  leaves2 = ([None] * len(leaves1) if x2 is None
             else jax.tree.leaves(x2, is_leaf=lambda v: v is None))
  if len(leaves2) != len(leaves1):
    raise ValueError(f"x1 and x2 must be the same pytree of inputs, got {len(leaves1)} and "
                     f"{len(leaves2)} arrays")
  def mk(a, b, ntk):
    a, m1 = masking.input_mask(a, mask_constant)
    b, m2 = (None, None) if b is None else masking.input_mask(b, mask_constant)
    eq = x1_is_x2(a, b)  # of the masked inputs (a NaN mask_constant is not unequal to itself)
    return analytic.inputs_to_kernel(a, b, diagonal_spatial=diagonal_spatial,
                                     compute_ntk=ntk).replace(x1_is_x2=eq, mask1=m1, mask2=m2)

  k12 = jax.tree.unflatten(tree, [mk(a, b, compute_ntk) for a, b in zip(leaves1, leaves2)])
  k11 = k22 = None
  if not diagonal_batch:
    k11 = jax.tree.unflatten(tree, [mk(a, None, False) for a in leaves1])
    if any(b is not None for b in leaves2):
      k22 = jax.tree.unflatten(tree, [mk(a if b is None else b, None, False)
                                      for a, b in zip(leaves1, leaves2)])
  same = jax.tree.unflatten(tree, [b is None for b in leaves2])
  eq = jax.tree.map(lambda k: k.x1_is_x2, k12, is_leaf=lambda k: isinstance(k, analytic.Kernel))
  return k12, k11, k22, same, eq


def _joint(layer, ctx, why, x1, x2, pattern, want_ntk, diagonal_spatial, mask_constant):
  """The kernel of a network that mixes examples, for ``x1`` against a different ``x2``:
  both computed as one batch (``x1``'s examples, then ``x2``'s), whose blocks are the
  kernel of ``x1`` with ``x2`` and the full covariances of each with itself
  (:class:`~jaxtheory.kernels.analytic.NeedsJointBatch`)."""
  if pattern is not None:
    raise ValueError(f"{why} mixes examples, which graph patterns do not support; compute "
                     "the kernel of x1 and x2 without pattern")
  if any(is_kernel(l) for l in jax.tree.leaves(x1, is_leaf=is_kernel)):
    k, n1, n2, eq = _joint_of_kernels(x1, why)
  else:
    k, n1, n2, eq = _joint_of_inputs(x1, x2, why, want_ntk, diagonal_spatial, mask_constant)
  c = analytic.ctx_with(analytic.ctx_with(ctx, "diagonal_batch", False), "joint_batch", True)
  # In a joint batch x1_is_x2 says whether x1's example i is x2's example i (dropout's
  # same-example entries); each example is itself anyway.
  split = None if n1 == n2 else n1
  out = layer.kernel(jax.tree.map(lambda a: a.replace(x1_is_x2=eq, joint_split=split), k,
                                  is_leaf=lambda a: isinstance(a, analytic.Kernel)), c)
  _check_from_spatial(out, ctx)
  return jax.tree.map(lambda a: _halves_kernel(a, eq), out,
                      is_leaf=lambda a: isinstance(a, analytic.Kernel))


def _joint_of_kernels(ks, why):
  """The joint batch's analytic kernels from NT ``Kernel`` inputs of ``x1`` against ``x2``
  computed with ``diagonal_batch=False``: ``[[cov1, nngp], [nngp^T, cov2]]``.

  The NTK's blocks of each batch with itself are not in an NT ``Kernel``; they are zeros
  here, which reach only the output's blocks of each batch with itself (every layer maps
  the blocks of a joint batch on their own), and those keep no NTK.
  """
  leaves = jax.tree.leaves(ks, is_leaf=is_kernel)
  if any(k.diagonal_batch for k in leaves):
    raise ValueError(f"{why} mixes examples: an input Kernel must hold the covariances among "
                     "each batch's examples; compute it with diagonal_batch=False")
  first = leaves[0]
  n1, n2 = first.cov1.shape[0], first.cov2.shape[0]

  def joint(k: Kernel) -> analytic.Kernel:
    k12, k11, k22 = _to_analytic(k)
    pairs = (k12.nngp.ndim - 2) // (1 if k.diagonal_spatial else 2)

    def swap(a):  # (n1, n2, S) -> (n2, n1, S'): the pair of every axis the other way round
      if k.diagonal_spatial:
        return jnp.swapaxes(a, 0, 1)
      return jnp.transpose(a, [1, 0] + [2 + 2 * i + j for i in range(pairs) for j in (1, 0)])

    def blocks(a11, a12, a22):
      return jnp.concatenate([jnp.concatenate([a11, a12], 1),
                              jnp.concatenate([swap(a12), a22], 1)], 0)

    ntk = None if k12.ntk is None else blocks(jnp.zeros_like(k11.nngp), k12.ntk,
                                               jnp.zeros_like(k22.nngp))
    masks = (k.mask1, k.mask2)
    mask = None
    if any(m is not None for m in masks):
      like = next(m for m in masks if m is not None)
      mask = jnp.concatenate([jnp.zeros((n,) + like.shape[1:], bool) if m is None else m
                              for m, n in zip(masks, (n1, n2))])
    return analytic.Kernel(blocks(k11.nngp, k12.nngp, k22.nngp), ntk,
                           jnp.concatenate([k12.cov1, k12.cov2]), None, k12.channels,
                           k.diagonal_spatial, k.is_gaussian, False, jnp.asarray(True), mask)

  return jax.tree.map(joint, ks, is_leaf=is_kernel), n1, n2, first.x1_is_x2


def _joint_of_inputs(x1, x2, why, want_ntk, diagonal_spatial, mask_constant):
  """The joint batch's analytic kernels of the arrays ``x1`` and ``x2``."""
  leaves1, tree = jax.tree.flatten(x1)
  leaves2 = jax.tree.leaves(x2, is_leaf=lambda v: v is None)
  n1 = {jnp.shape(a)[0] for a in leaves1}
  if (len(n1) != 1 or any(b is None or jnp.shape(b)[0] != jnp.shape(leaves2[0])[0]
                          or jnp.shape(a)[1:] != jnp.shape(b)[1:]
                          for a, b in zip(leaves1, leaves2))):
    raise ValueError(f"{why} mixes each batch's examples, so x1 and x2 must have the same "
                     "shape but for the number of examples (got " + ", ".join(
                         f"{jnp.shape(a)} and {None if b is None else jnp.shape(b)}"
                         for a, b in zip(leaves1, leaves2)) + ")")
  n1, n2 = n1.pop(), jnp.shape(leaves2[0])[0]
  both = jax.tree.unflatten(tree, [jnp.concatenate([a, b]) for a, b in zip(leaves1, leaves2)])
  k, _, _, _, _ = _inputs(both, None, True, diagonal_spatial, want_ntk, mask_constant)
  return k, n1, n2, x1_is_x2(leaves1[0], leaves2[0])


def _halves_kernel(a: analytic.Kernel, eq) -> Kernel:
  """The NT kernel of ``x1`` with ``x2`` (full batch layout) from a joint batch's kernel."""
  m = a.nngp.shape[0] // 2 if a.joint_split is None else a.joint_split
  ntk = a.ntk if a.ntk is None or a.ntk.ndim < 2 else a.ntk[:m, m:]
  shape1, shape2 = _shape(a, m), _shape(a, a.nngp.shape[0] - m)
  return Kernel(nngp=a.nngp[:m, m:], ntk=ntk, cov1=a.nngp[:m, :m], cov2=a.nngp[m:, m:],
                x1_is_x2=jnp.asarray(eq, bool), is_gaussian=a.is_gaussian, is_reversed=False,
                is_input=False, diagonal_batch=False, diagonal_spatial=a.diagonal_spatial,
                shape1=shape1, shape2=shape2, batch_axis=0, channel_axis=len(shape1) - 1,
                mask1=None if a.mask1 is None else a.mask1[:m],
                mask2=None if a.mask1 is None else a.mask1[m:])


def _flags(tree_of_inputs):
  """Static description of the inputs (part of the compilation cache key)."""
  leaves, tree = jax.tree.flatten(tree_of_inputs, is_leaf=is_kernel)
  desc = []
  for l in leaves:
    if is_kernel(l):
      desc.append(jax.tree.structure(l))
      desc.append(tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(l)))
    else:
      desc.append((jnp.shape(l), str(jnp.result_type(l))))
  return tree, tuple(desc)


def _normalize_get(get):
  """``(names, single)``: any of the :class:`Kernel` fields (NT's ``get``), one or a tuple."""
  names, single = ((get,), True) if isinstance(get, str) else (tuple(get), False)
  fields = tuple(f.name for f in dataclasses.fields(Kernel))
  for g in names:
    if g not in fields:
      raise ValueError(f"get must name fields of Kernel ({', '.join(fields)}), got {g!r}")
  return names, single


def _pattern_pair(pattern):
  """NT's ``pattern=(pattern1, pattern2)`` for ``x1`` and ``x2`` as arrays; ``None`` if both are."""
  if pattern is None:
    return None
  if not (isinstance(pattern, (tuple, list)) and len(pattern) == 2):
    raise ValueError("kernel_fn's pattern must be a pair (pattern1, pattern2) for x1 and x2 "
                     f"(None for no pattern), got {type(pattern).__name__}")
  if pattern[0] is None and pattern[1] is None:
    return None
  return tuple(None if p is None else jnp.asarray(p) for p in pattern)


def _pattern_ctxs(ctx, pattern, same: bool):
  """Contexts for the kernels of ``x1`` with ``x2``, ``x1`` with itself and ``x2`` with itself
  (``same``: ``x2`` is ``x1``, and a missing ``pattern2`` is ``pattern1``)."""
  if pattern is None:
    return ctx, ctx, ctx
  p1, p2 = pattern
  if p2 is None and same:
    p2 = p1
  return (graph.with_pattern(ctx, (p1, p2)), graph.with_pattern(ctx, (p1, p1)),
          graph.with_pattern(ctx, (p2, p2)))


def kernel_fn(layer, ctx) -> Callable:
  r"""neural-tangents' ``kernel_fn`` of a layer (what ``stax`` layers return).

  Args:
    layer: a layer with a kernel map (``layer.kernel(k, ctx)`` on
      :class:`jaxtheory.kernels.analytic.Kernel`).
    ctx: the run context.

  Returns:
    ``fn(x1_or_kernel, x2=None, get=None, *, diagonal_batch=None,
    diagonal_spatial=None, batch_size=None, pattern=None)``. ``diagonal_batch``
    ``None`` is ``True`` unless a layer needs the covariances between examples
    (then ``False``; asking ``True`` then raises ``ValueError``). ``x1_or_kernel`` is an array
    ``(n1, ..., channels)``, a pytree of arrays (for layers taking several
    inputs), or a :class:`Kernel` (pytree) from another ``kernel_fn``, in which
    case ``x2`` must be ``None``. ``get=None`` returns a :class:`Kernel`, a
    string that field's array, a tuple a namedtuple of those fields.
    ``diagonal_spatial`` ``None`` chooses the layout (diagonal when no layer
    needs more and the output has no spatial axes), ``True`` asks for
    same-position entries only (a layer that needs the others raises, except
    pooling right after a locally connected layer, whose positions do not
    covary), ``False`` for all pairs of positions.
    ``pattern=(pattern1, pattern2)``: the graphs of ``x1`` and ``x2`` for
    aggregation layers (:mod:`jaxtheory.kernels.graph`), carried by the
    context; ``x1`` with itself uses ``pattern1`` on both sides.
  """
  if layer.kernel is None:
    raise analytic.no_kernel_error(layer)
  compiled = {}
  from_spatial = set()  # signatures whose kernel is NT's same-position one (SAME_POSITIONS)

  def has_kernel(x1) -> bool:  # kernel_fn's input is a Kernel (pytree), not arrays
    return is_kernel(x1) or (not hasattr(x1, "shape") and any(
        is_kernel(l) for l in jax.tree.leaves(x1, is_leaf=is_kernel)))

  def compute(x1, x2, pattern, want_ntk, diagonal_batch, diagonal_spatial, mask_constant=None):
    if diagonal_spatial == SAME_POSITIONS:
      c = analytic.ctx_with(ctx, "batch_from_spatial", True)
      return _same_positions(compute_in(c, x1, x2, pattern, want_ntk, diagonal_batch, False,
                                        mask_constant))
    return compute_in(ctx, x1, x2, pattern, want_ntk, diagonal_batch, diagonal_spatial,
                      mask_constant)

  def compute_in(ctx, x1, x2, pattern, want_ntk, diagonal_batch, diagonal_spatial,
                 mask_constant):
    k12, k11, k22, same, eq = _inputs(x1, x2, diagonal_batch, diagonal_spatial, want_ntk,
                                      mask_constant)
    # A layer that can only follow NT's full-batch layout (resizing or contracting the batch
    # axis) reads it.
    c12, c11, c22 = _pattern_ctxs(analytic.ctx_with(ctx, "diagonal_batch", diagonal_batch),
                                  pattern, all(jax.tree.leaves(same)))
    try:
      out12 = layer.kernel(k12, c12)
    except analytic.NeedsJointBatch as e:
      return _joint(layer, ctx, e, x1, x2, pattern, want_ntk, diagonal_spatial, mask_constant)
    _check_from_spatial(out12, ctx)
    out11 = None if k11 is None else layer.kernel(k11, c11)
    out22 = None if k22 is None else layer.kernel(k22, c22)
    # Outputs and inputs may be different pytrees (fan-out, fan-in); the flags of
    # the first input apply to every output.
    same0 = jax.tree.leaves(same)[0]
    eq0 = jax.tree.leaves(eq)[0]
    is_a = lambda k: isinstance(k, analytic.Kernel)
    leaves12, tree = jax.tree.flatten(out12, is_leaf=is_a)
    leaves11 = [None] * len(leaves12) if out11 is None else jax.tree.leaves(out11, is_leaf=is_a)
    leaves22 = ([None] * len(leaves12) if out22 is None
                else jax.tree.leaves(out22, is_leaf=is_a))
    return jax.tree.unflatten(tree, [
        _from_analytic(a, b, c, eq0, diagonal_batch, same0)
        for a, b, c in zip(leaves12, leaves11, leaves22)])

  def choose_layout(x1, x2, pattern, diagonal_batch, mask_constant):
    spec = lambda t: jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)),
                                  t)
    try:
      out = jax.eval_shape(lambda a, b, p: compute(a, b, p, False, diagonal_batch, True,
                                                   mask_constant),
                           spec(x1), spec(x2), spec(pattern))
    except analytic.NeedsFullSpatial:
      return False
    return all(k.nngp.ndim == 2 for k in jax.tree.leaves(out, is_leaf=is_kernel))

  full_batch = {}  # per call signature, whether a layer needs diagonal_batch=False

  def signature(x1, x2, pattern, want_ntk, diagonal_spatial, mask_constant):
    return (_flags(x1), None if x2 is None else _flags(x2), _flags(pattern), want_ntk,
            diagonal_spatial, _flags(mask_constant))

  def needs_full_batch(x1, x2, pattern, want_ntk, diagonal_spatial, mask_constant) -> bool:
    """Whether a layer mixes examples (traced, not run; remembered per signature)."""
    sig = signature(x1, x2, pattern, want_ntk, diagonal_spatial, mask_constant)
    if sig not in full_batch:
      spec = lambda t: jax.tree.map(
          lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), t)
      diag = bool(diagonal_spatial)  # None: the full layout, which every layer accepts
      try:
        jax.eval_shape(lambda a, b, p: compute(a, b, p, want_ntk, True, diag, mask_constant),
                       spec(x1), spec(x2), spec(pattern))
        full_batch[sig] = False
      except analytic.NeedsFullBatch:
        full_batch[sig] = True
      except analytic.NeedsFullSpatial:
        full_batch[sig] = False  # a layout error, reported by the computation itself
    return full_batch[sig]

  def run(x1, x2, pattern, want_ntk, diagonal_batch, diagonal_spatial, mask_constant):
    if diagonal_batch is None:  # the caller did not choose: per-example unless a layer needs more
      sig = signature(x1, x2, pattern, want_ntk, diagonal_spatial, mask_constant)
      if sig not in full_batch:
        try:
          out = run(x1, x2, pattern, want_ntk, True, diagonal_spatial, mask_constant)
        except analytic.NeedsFullBatch:
          full_batch[sig] = True
        else:
          full_batch[sig] = False
          return out
      diagonal_batch = not full_batch[sig]
    key = (_flags(x1), None if x2 is None else _flags(x2), _flags(pattern), want_ntk,
           diagonal_batch, diagonal_spatial, _flags(mask_constant))
    if diagonal_spatial is True and key in from_spatial:
      return run(x1, x2, pattern, want_ntk, diagonal_batch, SAME_POSITIONS, mask_constant)
    if key not in compiled:
      if diagonal_spatial is None:
        diag = choose_layout(x1, x2, pattern, diagonal_batch, mask_constant)
      elif diagonal_spatial == SAME_POSITIONS:
        diag = SAME_POSITIONS
      else:
        diag = bool(diagonal_spatial)
      compiled[key] = jax.jit(functools.partial(compute, want_ntk=want_ntk,
                                                diagonal_batch=diagonal_batch,
                                                diagonal_spatial=diag))
    try:
      return compiled[key](x1, x2, pattern, mask_constant=mask_constant)
    except analytic.BatchFromSpatial:
      if diagonal_spatial is not True or has_kernel(x1):
        raise
      from_spatial.add(key)
      return run(x1, x2, pattern, want_ntk, diagonal_batch, SAME_POSITIONS, mask_constant)

  def fn(x1, x2=None, get=None, *, diagonal_batch: bool | None = None,
         diagonal_spatial: bool | None = None, batch_size: int | None = None,
         mask_constant=None, pattern=None, out_axes=None, **kwargs):
    if mask_constant is not None:
      mask_constant = jnp.asarray(mask_constant)
      if mask_constant.ndim or not jnp.issubdtype(mask_constant.dtype, jnp.number):
        raise TypeError("kernel_fn's mask_constant must be a number (or None), got "
                        f"shape {mask_constant.shape} of {mask_constant.dtype}")
    if kwargs:
      raise TypeError(f"kernel_fn got unsupported keyword arguments {sorted(kwargs)}")
    if any(hasattr(l, "masked_value") for l in jax.tree.leaves(
        (x1, x2), is_leaf=lambda v: hasattr(v, "masked_value"))):
      raise TypeError("kernel_fn takes arrays (or Kernels); mark padding with mask_constant= "
                      "instead of passing a MaskedArray")
    pattern = _pattern_pair(pattern)
    names, single = (None, False) if get is None else _normalize_get(get)
    want_ntk = names is None or "ntk" in names
    from_kernel = has_kernel(x1)
    if not from_kernel:
      x1 = jax.tree.map(jnp.asarray, x1)
      x2 = None if x2 is None else jax.tree.map(jnp.asarray, x2)
    if diagonal_batch is None and from_kernel:  # the input kernels' layout
      diagonal_batch = all(k.diagonal_batch for k in jax.tree.leaves(x1, is_leaf=is_kernel))
    diagonal_batch = None if diagonal_batch is None else bool(diagonal_batch)
    if batch_size is not None and not from_kernel and needs_full_batch(
        x1, x2, pattern, want_ntk, diagonal_spatial, mask_constant):
      raise ValueError("kernel_fn(batch_size=...): a layer mixes examples (ImageResize or "
                       "DotGeneral of the batch axis), so the kernel cannot be computed in "
                       "blocks of examples; call kernel_fn without batch_size")
    try:
      if batch_size is not None and not from_kernel:
        out = batching.batch(
            lambda a, b, pattern=None: run(a, b, pattern, want_ntk, diagonal_batch,
                                           diagonal_spatial, mask_constant),
            batch_size, 0)(x1, x2, pattern=pattern)
      else:
        out = run(x1, x2, pattern, want_ntk, diagonal_batch, diagonal_spatial, mask_constant)
    except analytic.NeedsFullSpatial as e:
      raise ValueError(f"diagonal_spatial=True: {e} needs the covariances of all pairs of "
                       "positions; use diagonal_spatial=False") from None
    except analytic.NeedsFullBatch as e:
      if from_kernel:
        raise ValueError(f"{e} mixes examples and needs the covariances between them, which "
                         "the input Kernel does not hold (it was computed with "
                         "diagonal_batch=True); compute it with diagonal_batch=False") from None
      raise ValueError(f"diagonal_batch=True: {e} mixes examples and needs the covariances "
                       "between them; use diagonal_batch=False (or leave it unset)") from None
    if out_axes is not None:
      out = laid_out(out, out_axes)
    return select(out, get)

  return fn


SAME_POSITIONS = "same positions"  # run's diagonal_spatial for analytic.BatchFromSpatial


def _check_from_spatial(out, ctx) -> None:
  """In the pass for :class:`~jaxtheory.kernels.analytic.BatchFromSpatial`, every output must
  come straight from a contraction of the batch axis, as in neural-tangents (its diagonal
  layout has no place for the batch pair of any other output)."""
  if getattr(ctx, "batch_from_spatial", False) and not all(
      k.batch_from_spatial for k in jax.tree.leaves(
          out, is_leaf=lambda a: isinstance(a, analytic.Kernel))):
    raise ValueError("diagonal_spatial=True: with DotGeneral contracting the batch axis, every "
                     "output of the network must be such a contraction's (its new batch pair "
                     "is kept like a position pair); use diagonal_spatial=False")


def _same_positions(k):
  """The same-position entries of full-layout kernels whose batch pair came from a spatial
  pair (:class:`~jaxtheory.kernels.analytic.BatchFromSpatial`): every pair of axes, the
  batch pair included, reduced to its diagonal, as neural-tangents' diagonal layout holds
  them."""
  def diag(a):
    if a is None or jnp.ndim(a) < 2:  # a scalar NTK placeholder
      return a
    pairs = jnp.ndim(a) // 2
    return jnp.einsum(a, [i for i in range(pairs) for _ in "ab"], list(range(pairs)))

  def one(kk):
    return dataclasses.replace(kk, nngp=diag(kk.nngp), ntk=diag(kk.ntk), cov1=diag(kk.cov1),
                               cov2=diag(kk.cov2), diagonal_spatial=True)

  return jax.tree.map(one, k, is_leaf=is_kernel)


def laid_out(k, axes):
  """An NT ``Kernel`` (pytree) whose ``shape1``/``shape2``/``batch_axis``/``channel_axis``
  describe activations laid out with ``axes = (batch_axis, channel_axis)`` (the kernel's own
  arrays do not depend on the layout)."""
  def one(kk):
    if not isinstance(kk, Kernel) or not kk.shape1:
      return kk
    ndim = len(kk.shape1)
    b, c = (a % ndim for a in axes)
    if b == c or (b, c) == (0, ndim - 1):
      return kk

    def move(shape):
      out = list(shape[1:-1])
      for i, d in sorted([(b, shape[0]), (c, shape[-1])]):
        out.insert(i, d)
      return tuple(out)

    return dataclasses.replace(kk, shape1=move(kk.shape1),
                               shape2=None if kk.shape2 is None else move(kk.shape2),
                               batch_axis=b, channel_axis=c)

  return jax.tree.map(one, k, is_leaf=is_kernel)


def select(out, get):
  """What ``kernel_fn(..., get)`` returns from its :class:`Kernel` (pytree) ``out``: ``out``
  itself (``get=None``), one field's array (a string) or a namedtuple of fields (a tuple)."""
  if get is None:
    return out
  names, single = _normalize_get(get)
  if single:
    return jax.tree.map(lambda k: getattr(k, names[0]), out, is_leaf=is_kernel)
  cls = analytic._kernels_type(names)
  return jax.tree.map(lambda k: cls(*(getattr(k, g) for g in names)), out, is_leaf=is_kernel)


def foreign_kernel_map(kernel_fn: Callable) -> analytic.KernelMap:
  """The analytic kernel map of an NT-style ``kernel_fn(kernel: Kernel, **kw) -> Kernel``.

  Used for layers users write in NT's protocol (``stax.layer``): the analytic
  kernel is shown to ``kernel_fn`` as a :class:`Kernel` (``diagonal_batch``,
  channels last) and its answer converted back.
  """

  def kernel(k: analytic.Kernel, ctx) -> analytic.Kernel:
    del ctx
    same = k.cov2 is None
    eq = same if k.x1_is_x2 is None else k.x1_is_x2
    nt = _from_analytic(k, None, None, eq, True, same)
    out = kernel_fn(nt)
    if not is_kernel(out):
      raise TypeError(f"a layer's kernel_fn must return a Kernel, got {type(out).__name__}")
    k12, _, _ = _to_analytic(out)
    if k.joint_split is not None and k12.nngp.shape[0] != k.nngp.shape[0]:
      raise ValueError("a layer written with stax.layer changed the number of examples, which "
                       "kernel_fn cannot follow while it computes x1 and x2 as one batch")
    return k12.replace(wide=k.wide, joint_split=k.joint_split)

  return kernel
