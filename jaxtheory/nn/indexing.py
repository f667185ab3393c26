"""NT's index helpers ``utils.canonicalize_idx`` and ``slice_shape``, used by ``stax.Index``."""

from __future__ import annotations

from collections.abc import Sequence


def canonicalize_idx(idx, ndim: int) -> tuple:
  """``idx`` (as in ``x[idx]``) as one entry per axis of an ``ndim``-dimensional array.

  NT's ``utils.canonicalize_idx``: a single ``int``, ``slice`` or ``...``
  indexes the leading axis; an ``Ellipsis`` expands to as many ``slice(None)``
  as the axes it stands for; missing trailing entries are ``slice(None)``.

  Args:
    idx: an ``int``, ``slice``, ``...`` or a tuple of those (``stax.Slice[...]``).
    ndim: number of axes of the indexed array.

  Returns:
    A tuple of ``int`` and ``slice``, one per axis (integers drop their axis).
  """
  if idx is Ellipsis or isinstance(idx, (int, slice)):
    idx = (idx,)
  idx = tuple(idx)
  if sum(i is Ellipsis for i in idx) > 1:
    raise IndexError(f"an index can only have a single ellipsis ('...'), got {idx}")
  if Ellipsis in idx:
    at = idx.index(Ellipsis)
    idx = idx[:at] + (slice(None),) * (ndim - len(idx) + 1) + idx[at + 1:]
  if len(idx) > ndim:
    raise IndexError(f"too many indices ({len(idx)}) for an array of {ndim} axes")
  return idx + (slice(None),) * (ndim - len(idx))


def slice_shape(shape: Sequence[int], idx) -> tuple[int, ...]:
  """The shape of ``x[idx]`` for ``x`` of ``shape``; an axis of unknown size (``-1`` or
  ``None``) stays unknown if ``idx`` leaves it whole (NT's ``utils.slice_shape``)."""
  full = canonicalize_idx(idx, len(shape))
  out = []
  for a, (i, n) in enumerate(zip(full, shape)):
    if n is None or n < 0:
      if i != slice(None):
        raise ValueError(f"cannot index axis {a} of unknown size {n} with {i}; give init_fn "
                         f"an input shape with a known size at axis {a}")
      out.append(n)
    elif isinstance(i, slice):
      out.append(len(range(*i.indices(n))))
    else:
      if not -n <= i < n:
        raise IndexError(f"index {i} is out of bounds for axis {a} of size {n}")
  return tuple(out)
