"""Grids: the cartesian product of swept axes, its validation, and width buckets.

A grid is an ordered mapping ``axis -> values``. ``seed`` and ``width`` are
always axes (a single value if not swept); every other axis is a traced
hyperparameter (learning rate, weight decay, ``n_train``, ``label_noise``,
``gamma``, ``init_scale``, any optimizer argument).

Widths run together by padding to the largest width of their *bucket*;
:func:`buckets` groups widths so that the FLOPs actually executed stay within
``max_waste`` times the unpadded ideal (ARCHITECTURE.md, "Padded widths").
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from jaxtheory.errors import ConfigError

INT_AXES = ("seed", "width", "n_train")
# Integer axes are traced as int32 (jax.random.key takes the seed as one): a
# larger value would wrap around (seed 2**32 would silently be seed 0).
INT_MAX = 2**31 - 1


def normalize(grid: Mapping[str, Sequence], allowed: Sequence[str]) -> dict[str, np.ndarray]:
  """Checks a grid and returns it as ``axis -> 1-D array``: parametrization, seed, width first.

  Raises:
    ConfigError: an unknown axis, an empty axis, duplicate values, or
      non-positive / non-integer widths, seeds or sample counts, integers
    beyond :data:`INT_MAX`, non-numbers or non-finite values.
  """
  if not grid:
    raise ConfigError("the grid is empty: give at least one axis, e.g. width=[64, 128]")
  out = {}
  for name, values in grid.items():
    if name not in allowed:
      raise ConfigError(f"unknown sweep axis {name!r}; sweepable here: {', '.join(allowed)}")
    vals = [values] if np.isscalar(values) else list(values)
    if not vals:
      raise ConfigError(f"sweep axis {name!r} has no values")
    try:
      repeats = len(set(vals)) != len(vals)
    except TypeError:
      raise ConfigError(f"sweep axis {name!r} must be a list of numbers, got {vals!r}") from None
    if repeats:
      raise ConfigError(f"sweep axis {name!r} has duplicate values: {vals}")
    if name in INT_AXES:
      for v in vals:
        try:
          integral = not isinstance(v, (bool, str, bytes)) and float(v).is_integer()
        except (TypeError, ValueError, OverflowError):
          integral = False
        if not integral:
          raise ConfigError(f"{name} must be integers, got {v!r}")
        if int(v) < (0 if name == "seed" else 1):
          raise ConfigError(f"{name} must be {'non-negative' if name == 'seed' else 'positive'}, got {v!r}")
        if int(v) > INT_MAX:
          raise ConfigError(f"{name} must be at most {INT_MAX} (2^31 - 1: the compiled program "
                            f"holds it as a 32-bit integer), got {int(v)}")
      arr = np.asarray([int(v) for v in vals], np.int64)
    else:
      try:
        if any(isinstance(v, (bool, str, bytes)) for v in vals):
          raise TypeError
        arr = np.asarray([float(v) for v in vals], np.float64)
      except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"sweep axis {name!r} must be numbers, got {vals}") from None
      if not np.all(np.isfinite(arr)):
        raise ConfigError(f"sweep axis {name!r} must be finite, got {vals}")
    out[name] = arr
  lead = ("parametrization", "seed", "width")
  order = [a for a in lead if a in out] + [a for a in out if a not in lead]
  return {a: out[a] for a in order}


def expand(grid: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """All configurations: ``(values per axis as flat arrays, index tuples)``.

  Returns:
    ``flat[axis][r]`` is the value of run ``r``; ``index[r]`` its position in
    the grid (``len(grid)`` integers).
  """
  axes = list(grid)
  index = np.asarray(list(itertools.product(*[range(len(grid[a])) for a in axes])),
                     np.int64).reshape(-1, len(axes))
  flat = {a: grid[a][index[:, i]] for i, a in enumerate(axes)}
  return flat, index


def buckets(widths: Sequence[int], cost: Callable[[int], float],
            max_waste: float = 1.5) -> list[list[int]]:
  """Groups widths (largest first) so each bucket's padded cost <= ``max_waste`` x ideal.

  A bucket runs every member at the capacity of its largest width; its waste
  is ``len(members) * cost(capacity) / sum(cost(member))``.
  """
  rest = sorted({int(w) for w in widths}, reverse=True)
  out = []
  while rest:
    cap, members = rest[0], [rest[0]]
    ideal = cost(cap)
    for w in rest[1:]:
      c = cost(w)
      if (len(members) + 1) * cost(cap) <= max_waste * (ideal + c):
        members.append(w)
        ideal += c
      else:
        break
    rest = rest[len(members):]
    out.append(members)
  return out


def padded_flops_ratio(groups: Sequence[Sequence[int]], cost: Callable[[int], float]) -> float:
  """Executed FLOPs over the unpadded ideal for a bucketing (equal runs per width)."""
  executed = sum(len(g) * cost(max(g)) for g in groups)
  ideal = sum(cost(w) for g in groups for w in g)
  return executed / ideal if ideal else math.nan
