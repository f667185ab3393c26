"""Timing helpers shared by the benchmarks: warmed-up timers, interleaved rounds, medians.

A figure from a shared machine moves between runs (a slow spell, another
process). So contenders are timed *interleaved*: round ``r`` calls every timer
once, starting at a rotated position, and each figure is the median of its
rounds with the min-max spread beside it. A ratio whose per-round spread
contains 1 is inside the noise.
"""

from __future__ import annotations

import time

import numpy as np


def timed(fn):
  """``fn`` warmed up (compiled), as a function returning the seconds of one call."""
  fn()

  def once():
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
  return once


def interleaved(timers: dict, repeats: int) -> dict[str, np.ndarray]:
  """``name -> per-round values`` of ``repeats`` interleaved rounds (rotated order)."""
  names = list(timers)
  out = {k: [] for k in names}
  for r in range(repeats):
    for k in names[r % len(names):] + names[:r % len(names)]:
      out[k].append(timers[k]())
  return {k: np.asarray(v) for k, v in out.items()}


def cell(v: np.ndarray, scale: float = 1.0, unit: str = "s", digits: int = 2) -> str:
  """Median and min-max of ``v * scale``: ``1.23s[1.20-1.31]``."""
  v = np.asarray(v) * scale
  return f"{np.median(v):.{digits}f}{unit}[{v.min():.{digits}f}-{v.max():.{digits}f}]"


def ratio_cell(r: np.ndarray) -> str:
  """Median per-round ratio, ``~`` when its spread contains 1 (inside the noise), and min-max."""
  noise = "~" if r.min() <= 1.0 <= r.max() else " "
  return f"{np.median(r):5.2f}{noise}[{r.min():.2f}-{r.max():.2f}]"
