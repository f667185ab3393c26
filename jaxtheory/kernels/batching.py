"""Any kernel function, computed in blocks of examples and over all local devices.

``batch(kernel_fn, batch_size, device_count, store_on_device)`` is
neural-tangents' ``nt.batch`` (0.6.5): the returned function has
``kernel_fn``'s signature ``(x1, x2=None, *args, **kwargs)`` and returns the
same kernel, computed as a grid of ``batch_size x batch_size`` blocks:

* rows of blocks (``x1``) are spread over ``device_count`` devices with
  ``jax.shard_map``, one block per device; columns (``x2``) run one after the
  other, so memory holds one block per device plus the result;
* ``store_on_device=False`` moves every finished block to host memory, so only
  the result's size is bounded by host RAM, not device memory;
* each block shape compiles once: ``x1`` and ``x2`` are padded (with copies of
  their first example) to whole blocks and the padding is cut from the result,
  so any ``n1`` and ``n2`` work, not only multiples of the block size.

It works for analytic ``kernel_fn``\\ s (:mod:`jaxtheory.stax`), empirical ones
(``empirical_ntk_fn``, ``empirical_nngp_fn``, ``empirical_kernel_fn``) and
Monte Carlo estimates: every array of the output must have the axes
``(n1, n2, ...)``, an output field named ``cov1`` the axes ``(n1, ...)`` and one
named ``cov2`` ``(n2, ...)``. Inputs ``x1``/``x2`` may be pytrees of arrays that
share their leading axis. Array arguments in ``args``/``kwargs`` (parameters,
keys) are passed to every block; all others are static.

>>> import jax.numpy as jnp
>>> from jaxtheory import stax
>>> _, _, kernel_fn = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
>>> x = jnp.linspace(-1., 1., 30).reshape(10, 3)
>>> k = batch(kernel_fn, batch_size=4)(x, None, "nngp")
>>> bool(jnp.allclose(k, kernel_fn(x, None, "nngp"), atol=1e-6))  # float32 rounding
True
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ["batch"]

PyTree = Any


def batch(kernel_fn: Callable, batch_size: int = 0, device_count: int = -1,
          store_on_device: bool = True, *, by_position: bool = False) -> Callable:
  """``kernel_fn`` computed in blocks of examples, in parallel over local devices.

  Args:
    kernel_fn: ``kernel_fn(x1, x2, *args, **kwargs)`` returning a pytree of
      ``(n1, n2, ...)`` arrays (fields ``cov1``/``cov2``: ``(n1, ...)`` /
      ``(n2, ...)``).
    batch_size: examples of ``x1`` and of ``x2`` per block; ``0`` means one
      block per device along ``x1`` and all of ``x2`` (blocks of ``x1``'s size
      when ``x2`` is ``x1``). Where ``x2`` is not ``x1``, blocks of ``x2`` hold
      one example more than those of ``x1`` (a padding copy): a kernel that
      compares its two inputs (dropout in train mode) then never mistakes a
      block of ``x2`` for one of ``x1``. Such a kernel still takes two blocks
      of equal entries for the same examples where ``x1`` repeats a whole
      block of examples at another block's place (tiled data), and, called
      under ``jit``, where a different ``x2`` of ``x1``'s size shares a block
      with it; there compute it unbatched or with a ``batch_size`` that does
      not align the repeats.
    device_count: devices to spread the rows of blocks over; ``-1`` all local
      devices, ``0`` none (plain ``jit`` on the default device).
    store_on_device: ``False`` moves finished blocks to host memory (the CPU)
      as they are computed.
    by_position: the network draws randomness per position in its batch
      (dropout). With ``x2=None`` the kernel is then computed as one block, one
      draw for all of ``x1``: blocks would draw ``x1``'s masks anew for every
      pair of blocks, and the estimate would not be symmetric. An ``rng``
      keyword argument (dropout in an empirical kernel) turns this on.

  Returns:
    A function with ``kernel_fn``'s signature and result.

  Raises:
    ValueError: a negative ``batch_size`` or a ``device_count`` below ``-1``.
  """
  if not isinstance(batch_size, int) or batch_size < 0:
    raise ValueError(f"batch_size must be a non-negative integer, got {batch_size!r}")
  if not isinstance(device_count, int) or device_count < -1:
    raise ValueError(f"device_count must be -1, 0 or a positive integer, got {device_count!r}")

  compiled = {}  # one compiled block function per static arguments and device count

  @functools.wraps(kernel_fn)
  def batched_kernel_fn(x1, x2=None, *args, **kwargs):
    n_dev = _n_devices(device_count)
    if x2 is not None and not jax.tree.leaves(x2):
      x2 = None  # NT's x2=(None, None): two inputs, each compared with itself
    kernels = jax.tree.leaves(x1, is_leaf=_is_kernel)
    if kernels and all(_is_kernel(k) for k in kernels):
      if x2 is not None:
        raise ValueError("batch: a Kernel input takes x2=None")
      call, arrays, _ = _block_call(kernel_fn, args, kwargs)
      return _kernel_blocks(call, x1, arrays, batch_size, store_on_device)
    x1_in, x2_in = x1, x2
    x1, x2, fn, kwargs, names = _with_pairs(kernel_fn, x1, x2, kwargs)
    call, arrays, key = _block_call(fn, args, kwargs)
    key = None if key is None else (key, names)
    n1 = _batch_size_of(x1, "x1")
    n2 = n1 if x2 is None else _batch_size_of(x2, "x2")
    size = batch_size
    if x2 is None and (by_position or kwargs.get("rng") is not None):
      n_dev, size = 1, 0
    b1 = size or -(-n1 // n_dev)
    # A kernel that treats x1 and x2 as the same examples when they are equal (dropout's
    # shared mask on the diagonal) decides it per block. Where x2 is x1, blocks are aligned
    # squares, so the diagonal's entries lie on their own blocks' diagonals; where it is not,
    # no block is square, so no block of columns can equal one of rows.
    same = _same_inputs(x1_in, x2_in)
    b2 = size or (b1 if same is not False else n2)
    if same is False and b2 == b1:
      b2 += 1
    n_dev = min(n_dev, -(-n1 // b1))
    if n_dev == 1 and b1 >= n1 and b2 >= n2:  # one block: no padding, no copies
      out = _cached(compiled, None if key is None else (key, 1),
                    lambda: jax.jit(call))(x1, x2, arrays)
      return out if store_on_device else _to_host(out)
    run = _cached(compiled, None if key is None else (key, n_dev),
                  lambda: jax.jit(call) if n_dev == 1 else _sharded(call, n_dev))
    x2_ = x1 if x2 is None else x2
    rows = []
    for i in range(0, n1, b1 * n_dev):
      group = _rows(x1, i, b1 * n_dev)
      cols = []
      for j in range(0, n2, b2):
        # One block at a time: blocks dispatched asynchronously run side by side, each
        # with its own working memory, which would grow with the number of blocks.
        block = jax.block_until_ready(run(group, _rows(x2_, j, b2), arrays))
        _check_block(block, b1 * n_dev, b2)
        block = _cut(block, min(b1 * n_dev, n1 - i), min(b2, n2 - j))
        cols.append(block if store_on_device else jax.device_get(block))
      rows.append(_concat(cols, axis=1, store_on_device=store_on_device))
    out = _concat(rows, axis=0, store_on_device=store_on_device)
    if x2 is None:
      out = _drop_cov2(out)
    out = _set_x1_is_x2(_fix_shapes(out), same)
    return out if store_on_device else _to_host(out)

  return batched_kernel_fn


def _same_inputs(x1, x2, eps: float = 1e-12):
  """Whether ``x2`` is ``x1`` as a kernel function tells (``None``, the same object, or
  entries equal up to ``eps``, NaN padding equal to NaN): ``True``, ``False``, or a traced
  boolean where ``batch`` is called under ``jit`` with inputs of the same shapes."""
  if x2 is None or x2 is x1:
    return True
  l1, l2 = jax.tree.leaves(x1), jax.tree.leaves(x2)
  if len(l1) != len(l2) or any(jnp.shape(a) != jnp.shape(b) for a, b in zip(l1, l2)):
    return False

  def equal(a, b):
    a, b = jnp.asarray(a), jnp.asarray(b)
    if not jnp.issubdtype(a.dtype, jnp.inexact):
      return jnp.all(a == b)
    return jnp.all((jnp.abs(a - b) < eps) | (jnp.isnan(a) & jnp.isnan(b)))

  eq = jnp.all(jnp.asarray([equal(a, b) for a, b in zip(l1, l2)]))
  return eq if isinstance(eq, jax.core.Tracer) else bool(eq)


def _with_pairs(kernel_fn, x1, x2, kwargs):
  """NT's per-example keyword pairs (``pattern=(p1, p2)``) made part of the inputs.

  A keyword argument (other than ``rng``) whose value is a pair of arrays with the
  leading axes of ``x1`` and of ``x2`` (``p2`` may be ``None`` when ``x2`` is) is cut
  into blocks with the inputs: ``x1`` becomes ``(x1, {name: p1})``, ``x2`` likewise.

  Returns:
    ``(x1, x2, fn, kwargs, names)``: the inputs, ``fn`` unpacking them into
    ``kernel_fn``'s call, the other keyword arguments and the pairs' names.
  """
  n1 = _batch_size_of(x1, "x1")
  n2 = n1 if x2 is None else _batch_size_of(x2, "x2")

  def rows(a, n):
    return _is_array(a) and jnp.ndim(a) >= 1 and jnp.shape(a)[0] == n

  names = tuple(k for k, v in kwargs.items()
                if k != "rng" and isinstance(v, tuple) and len(v) == 2 and rows(v[0], n1)
                and (rows(v[1], n2) or (v[1] is None and x2 is None)))
  if not names:
    return x1, x2, kernel_fn, kwargs, names
  first = {k: kwargs[k][0] for k in names}
  x1 = (x1, first)
  x2 = None if x2 is None else (x2, {k: kwargs[k][1] for k in names})
  rest = {k: v for k, v in kwargs.items() if k not in names}

  def fn(a, b, *args, **kw):
    a, e1 = a
    b, e2 = (None, e1) if b is None else b  # x2 is x1: so are the pairs' second halves
    return kernel_fn(a, b, *args, **kw, **{k: (e1[k], e2[k]) for k in names})

  return x1, x2, fn, rest, names


def _set_x1_is_x2(out, same):
  """Blocks compare row blocks with column blocks; NT's ``x1_is_x2`` compares the wholes."""
  if isinstance(out, (list, tuple)) and not hasattr(out, "_fields"):
    return type(out)(_set_x1_is_x2(o, same) for o in out)
  if not hasattr(out, "x1_is_x2") or not hasattr(out, "replace"):
    return out
  return out.replace(x1_is_x2=jnp.asarray(same))


def _is_kernel(x) -> bool:
  """An NT ``Kernel`` (duck-typed: ``nngp`` and ``slice``)."""
  return hasattr(x, "slice") and hasattr(x, "nngp")


def _kernel_blocks(call, ks, arrays, batch_size: int, store_on_device: bool):
  """``call`` on blocks ``k.slice(rows, cols)`` of NT ``Kernel`` inputs (a pytree), assembled.

  Blocks are sliced from the input kernels (NT's ``Kernel.slice``), on one device.
  """
  leaves = jax.tree.leaves(ks, is_leaf=_is_kernel)
  n1, n2 = leaves[0].nngp.shape[:2]
  b1 = batch_size or n1
  b2 = batch_size or n2
  if not all(getattr(k, "diagonal_batch", True) for k in leaves):
    b1, b2 = n1, n2  # full batch covariances do not split into blocks
  rows = []
  for i in range(0, n1, b1):
    cols = []
    for j in range(0, n2, b2):
      block = jax.tree.map(lambda k: k.slice(slice(i, i + b1), slice(j, j + b2)), ks,
                           is_leaf=_is_kernel)
      block = jax.block_until_ready(call(block, None, arrays))  # one block at a time
      cols.append(block if store_on_device else jax.device_get(block))
    rows.append(_concat(cols, axis=1, store_on_device=store_on_device))
  out = _fix_shapes(_concat(rows, axis=0, store_on_device=store_on_device))
  if leaves[0].cov2 is None:
    out = _drop_cov2(out)
  return out if store_on_device else _to_host(out)


# ----------------------------------------------------------------------------
# neural-tangents' private entry points (its tests call them directly).


def _serial(kernel_fn: Callable, batch_size: int, store_on_device: bool = True) -> Callable:
  """Blocks of ``batch_size`` on one device (``batch(..., device_count=0)``)."""
  return batch(kernel_fn, batch_size, 0, store_on_device)


def _parallel(kernel_fn: Callable, use_serial: bool = True,
              dropout_in_analytic_kernel: bool = False, device_count: int = -1) -> Callable:
  """Rows of ``x1`` spread over devices, one block per device (``batch(..., 0, device_count)``)."""
  del use_serial, dropout_in_analytic_kernel
  return batch(kernel_fn, 0, device_count)


def _jit_or_pmap_broadcast(kernel_fn: Callable, device_count: int = -1) -> Callable:
  """``kernel_fn`` jitted (``device_count=0``) or mapped over axis 0 of ``x1`` on devices.

  Array arguments are passed to every call, others are static. Mapped over
  devices, every output gains a leading device axis (array arguments returned
  unchanged come back stacked once per device), as with ``jax.pmap``.
  """

  def fn(x1, x2=None, *args, **kwargs):
    call, arrays, _ = _block_call(kernel_fn, args, kwargs)
    if device_count == 0:
      return jax.jit(call)(x1, x2, arrays)
    n = _batch_size_of(x1, "x1")
    mesh = Mesh(np.array(jax.local_devices()[:n]), ("d",))
    per_device = lambda a, b, c: jax.tree.map(lambda o: o[None],
                                              call(jax.tree.map(lambda l: l[0], a), b, c))
    f = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P("d"), P(), P()),
                              out_specs=P("d"), check_vma=False))
    whole = NamedSharding(mesh, P())
    return f(jax.device_put(x1, NamedSharding(mesh, P("d"))), jax.device_put(x2, whole),
             jax.device_put(arrays, whole))

  return fn


# ----------------------------------------------------------------------------
# Helpers.


def _n_devices(device_count: int) -> int:
  available = jax.local_device_count()
  if device_count == -1:
    return available
  if device_count == 0:
    return 1
  if device_count > available:
    raise ValueError(f"device_count={device_count} but only {available} local devices exist")
  return device_count


def _is_array(x) -> bool:
  return isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct))


def _block_call(kernel_fn, args, kwargs):
  """``(call, arrays, key)``: ``call(x1, x2, arrays)`` with the array arguments traced and
  the rest closed over; ``key`` identifies the static part (``None`` if unhashable)."""
  leaves, tree = jax.tree.flatten((args, kwargs))
  where = tuple(i for i, leaf in enumerate(leaves) if _is_array(leaf))
  arrays = [leaves[i] for i in where]
  static = tuple(None if i in where else leaf for i, leaf in enumerate(leaves))
  try:
    key = hash((tree, where, static)) and (tree, where, static)
  except TypeError:
    key = None

  def call(x1, x2, arrs):
    full = list(static)
    for i, a in zip(where, arrs):
      full[i] = a
    a, k = jax.tree.unflatten(tree, full)
    return kernel_fn(x1, x2, *a, **k)

  return call, arrays, key


def _cached(cache: dict, key, build: Callable):
  """``build()``, memoized in ``cache`` under ``key`` (not at all when ``key`` is ``None``)."""
  if key is None:
    return build()
  if key not in cache:
    cache[key] = build()
  return cache[key]


def _batch_size_of(x, name: str) -> int:
  sizes = {jnp.shape(a)[0] if jnp.ndim(a) else None for a in jax.tree.leaves(x)}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(f"the arrays of {name} must share a leading batch axis, got sizes "
                     f"{sorted(map(str, sizes))}")
  return sizes.pop()


def _rows(x, start: int, size: int):
  """Rows ``[start, start + size)`` of every leaf, padded with copies of its first row."""
  def take(a):
    a = jnp.asarray(a[start:start + size])  # slice first: host inputs move block by block
    extra = size - a.shape[0]
    if extra:
      a = jnp.concatenate([a, jnp.broadcast_to(a[:1], (extra,) + a.shape[1:])])
    return a
  return jax.tree.map(take, x)


def _fields(out):
  """Field names of a namedtuple or dataclass output, else ``None``."""
  if hasattr(out, "_fields"):
    return out._fields
  fields = getattr(out, "__dataclass_fields__", None)
  return tuple(fields) if fields else None


# Fields of a kernel that are blocks of the result: ``(n1, n2, ...)``, or per row of blocks
# (``x1``'s: ``cov1``, ``mask1``) or per column (``x2``'s); any other field (``x1_is_x2``,
# static metadata) is the same for every block and passes through.
_ROW_FIELDS = ("cov1", "mask1")
_COL_FIELDS = ("cov2", "mask2")
_BLOCK_FIELDS = ("nngp", "ntk") + _ROW_FIELDS + _COL_FIELDS


def _map_kernel(out, fn, other=lambda a: a):
  """Applies ``fn(leaf, field)`` to the arrays of ``out`` (field: its name, or ``None``);
  ``other`` to the arrays of fields that are not blocks (``x1_is_x2``, masks)."""
  fields = _fields(out)
  if fields is not None:
    vals = {f: ((fn(v, f) if f in _BLOCK_FIELDS else other(v)) if _is_array(v) else v)
            for f, v in ((f, getattr(out, f)) for f in fields)}
    return out._replace(**vals) if hasattr(out, "_replace") else type(out)(**vals)
  if isinstance(out, (list, tuple, dict)):
    return jax.tree.map(lambda o: _map_kernel(o, fn, other), out,
                        is_leaf=lambda o: o is not out)
  return fn(out, None) if _is_array(out) else out


def _cut(block, m1: int, m2: int):
  def cut(a, field):
    if field in _ROW_FIELDS:
      return a[:m1]
    if field in _COL_FIELDS:
      return a[:m2]
    return a[:m1, :m2]
  return _map_kernel(block, cut)


def _check_block(block, rows: int, cols: int) -> None:
  """A block of ``rows x cols`` examples must give a kernel of that many (else it is cut wrong)."""
  for a, field in _leaves(block):
    if field in ("nngp", "ntk") and a.ndim >= 2 and a.shape[:2] != (rows, cols):
      raise ValueError(
          f"batch: a block of {rows} x {cols} examples gave a kernel of {a.shape[0]} x "
          f"{a.shape[1]}: the kernel function changes the number of examples (e.g. "
          "FanInConcat along the batch axis), so it cannot be computed in blocks; call it "
          "without batch_size / nt.batch")


def _leaves(out) -> list:
  """``[(array, field), ...]`` of ``out``, in :func:`_map_kernel`'s order."""
  found = []
  _map_kernel(out, lambda a, f: found.append((a, f)) or a)
  return found


def _concat(blocks: list, axis: int, store_on_device: bool):
  """Concatenates block outputs: kernels along ``axis``; ``cov1`` rows, ``cov2`` columns."""
  if len(blocks) == 1:
    return blocks[0]
  cat = jnp.concatenate if store_on_device else np.concatenate
  per_block = [_leaves(b) for b in blocks]
  joined = []
  for i, (first, field) in enumerate(per_block[0]):
    if (field in _ROW_FIELDS and axis == 1) or (field in _COL_FIELDS and axis == 0):
      joined.append(first)  # the same for every block of a row (column)
    else:
      joined.append(cat([leaves[i][0] for leaves in per_block],
                        axis=0 if field in _ROW_FIELDS + _COL_FIELDS else axis))
  it = iter(joined)
  return _fix_shapes(_map_kernel(blocks[0], lambda a, f: next(it)))


def _fix_shapes(out):
  """NT kernels record their batch sizes in ``shape1``/``shape2``: those of the whole."""
  if isinstance(out, (list, tuple)) and not hasattr(out, "_fields"):
    return type(out)(_fix_shapes(o) for o in out)
  if getattr(out, "shape1", None) is None or not hasattr(out, "with_batch_sizes"):
    return out
  return out.with_batch_sizes(out.nngp.shape[0], out.nngp.shape[1])


def _drop_cov2(out):
  """``x2=None`` was computed as ``x2=x1``; the result says ``cov2=None`` as the unbatched one."""
  if isinstance(out, (list, tuple)) and not hasattr(out, "_fields"):
    return type(out)(_drop_cov2(o) for o in out)
  fields = _fields(out)
  if fields is None or "cov2" not in fields:
    return out
  drop = dict(cov2=None, **({"mask2": None} if "mask2" in fields else {}))
  return out._replace(**drop) if hasattr(out, "_replace") else out.replace(**drop)


def _to_host(out):
  cpu = jax.devices("cpu")[0]
  return jax.tree.map(lambda a: jax.device_put(a, cpu) if _is_array(a) else a, out)


def _sharded(call, n_dev: int):
  """``call`` over a group of ``n_dev`` row blocks of ``x1``, one per device.

  Compiled once per input signature: the tree (with a ``Kernel``'s static
  fields, e.g. its ``shape2``, which fix the output's) and the leaves' shapes.
  """
  mesh = Mesh(np.array(jax.local_devices()[:n_dev]), ("d",))
  compiled = {}

  def run(x1, x2, arrays):
    leaves, tree = jax.tree.flatten((x1, x2, arrays))
    sig = (tree, tuple((np.shape(a), np.result_type(a)) for a in leaves))
    if sig not in compiled:
      local = jax.tree.map(
          lambda a: jax.ShapeDtypeStruct((a.shape[0] // n_dev,) + a.shape[1:], a.dtype), x1)
      specs = _map_kernel(jax.eval_shape(call, local, x2, arrays),
                          lambda a, f: P() if f in _COL_FIELDS else P("d"), lambda a: P())
      compiled[sig] = jax.jit(jax.shard_map(call, mesh=mesh, in_specs=(P("d"), P(), P()),
                                            out_specs=specs, check_vma=False))
    split, whole = NamedSharding(mesh, P("d")), NamedSharding(mesh, P())
    out = compiled[sig](jax.device_put(x1, split), jax.device_put(x2, whole),
                        jax.device_put(arrays, whole))
    return jax.device_put(out, jax.local_devices()[0])  # gathered: the result lives on one device

  return run
