"""Progress of sweeps: a bar in terminals and notebooks, plain lines when asked, a one-line summary.

Everything that trains (:func:`jaxtheory.sweep.run`, :func:`~jaxtheory.sweep.run_over`,
:func:`jaxtheory.limits.compare`, every experiment's ``run``) takes
``progress``:

* ``None`` (default): a bar (rich) while compiling and running, with run-steps
  per second and the time left, then one summary line, when stderr is a
  terminal or the code runs in a notebook; nothing otherwise (logs, pipes, tests);
* ``True``: the same, and in a file or pipe a plain line every few seconds;
* ``False``: nothing;
* a function ``progress(steps_done, steps_total, info)``: called instead.

``JAXTHEORY_PROGRESS=off`` silences the default everywhere.

>>> from jaxtheory import progress
>>> with progress.reporter(False, "sweep") as report:
...   report(10, 100, "width<=64")
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

ENV = "JAXTHEORY_PROGRESS"

ProgressArg = bool | None | Callable[[int, int, str], None]


def _silent(done: int, total: int, info: str = "") -> None:
  del done, total, info


def _interactive() -> bool:
  """Whether a live bar can be drawn: stderr is a terminal, or this is a notebook."""
  from rich.console import Console  # pylint: disable=import-outside-toplevel
  console = Console(stderr=True)
  return console.is_terminal or console.is_jupyter


def _seconds(s: float) -> str:
  if s < 60:
    return f"{s:.1f} s"
  return f"{int(s // 60)} min {int(s % 60):02d} s"


class Bar:
  """Shows ``(steps_done, steps_total, info)`` updates; ``info`` starting with ``compiling``
  marks compilation, which the run-steps-per-second rate leaves out.

  Args:
    name: the label in front of the bar and summary.
    live: draw a rich bar (terminal, notebook); else print plain lines.
    every: seconds between plain lines.
  """

  def __init__(self, name: str, live: bool, every: float = 10.0):
    self.name, self.live, self.every = name, live, every
    self.start = time.perf_counter()
    self.compile_s, self._compile_from = 0.0, None
    self.done, self.total, self.info = 0, 0, "compiling"
    self._ran, self._last_line = 0, -float("inf")
    self._bar = self._task = None
    if live:
      from rich.console import Console  # pylint: disable=import-outside-toplevel
      from rich.progress import (BarColumn, MofNCompleteColumn, Progress,  # pylint: disable=import-outside-toplevel
                                 TextColumn, TimeElapsedColumn)
      self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("run-steps {task.fields[rate]}"), TimeElapsedColumn(),
                           TextColumn("{task.fields[left]}"),
                           console=Console(stderr=True), transient=True)
      self._bar.start()
      self._task = self._bar.add_task(f"{name}: compiling", total=None, rate="", left="")
    self._compile_from = time.perf_counter()

  def rate(self) -> float:
    """Run-steps per second so far, compilation excluded (0 before any ran)."""
    running = time.perf_counter() - self.start - self.compile_s
    if self._compile_from is not None:
      running -= time.perf_counter() - self._compile_from
    return self._ran / running if running > 0 and self._ran else 0.0

  def __call__(self, done: int, total: int, info: str = "") -> None:
    now = time.perf_counter()
    compiling = info.startswith("compiling")
    if self._compile_from is not None and not compiling:
      self.compile_s += now - self._compile_from
      self._compile_from = None
    elif compiling and self._compile_from is None:
      self._compile_from = now
    self._ran += max(0, done - self.done) if not compiling else 0
    self.done, self.total, self.info = done, total, info
    rate = self.rate()
    left = (total - done) / rate if rate > 0 else None
    rate_s = f"{rate:,.0f}/s" if rate else ""
    left_s = f"{_seconds(left)} left" if left is not None and not compiling else ""
    label = f"{self.name}: {info}" if info else self.name
    if self._bar is not None:
      self._bar.update(self._task, completed=done, total=total, description=label,
                       rate=rate_s, left=left_s)
    elif compiling or now - self._last_line >= self.every or done >= total:
      self._last_line = now
      parts = [label, f"{done:,}/{total:,} run-steps", rate_s and f"{rate_s}", left_s]
      print(", ".join(p for p in parts if p), file=sys.stderr, flush=True)

  def close(self, ds: Any = None) -> None:
    """Removes the bar and prints the summary line (times from ``ds.attrs`` when given)."""
    if self._bar is not None:
      self._bar.stop()
    print(self.summary(ds), file=sys.stderr, flush=True)

  def summary(self, ds: Any = None) -> str:
    """``name: N run-steps in T (C compiling, R run-steps/s)``."""
    wall = time.perf_counter() - self.start
    attrs = getattr(ds, "attrs", {}) or {}
    compile_s = float(attrs.get("compile_seconds", self.compile_s))
    run_s = float(attrs.get("run_seconds", wall - compile_s))
    rate = f", {self.done / run_s:,.0f} run-steps/s" if run_s > 0 and self.done else ""
    return (f"{self.name}: {self.done:,} run-steps in {_seconds(wall)} "
            f"({_seconds(compile_s)} compiling{rate})")


class _PassThrough:
  """A user's callback (or silence), with the ``close`` a :class:`Bar` has."""

  def __init__(self, fn: Callable[[int, int, str], None]):
    self.fn = fn

  def __call__(self, done: int, total: int, info: str = "") -> None:
    self.fn(done, total, info)

  def close(self, ds: Any = None) -> None:
    del ds


@contextlib.contextmanager
def reporter(progress: ProgressArg, name: str) -> Iterator[Bar | _PassThrough]:
  """The progress callback for ``progress`` (see the module docstring) as a context.

  On success call ``report.close(ds)`` for the summary line; on an error the
  bar is removed without one.
  """
  if callable(progress) and not isinstance(progress, bool):
    yield _PassThrough(progress)
    return
  off = os.environ.get(ENV, "").strip().lower() in ("off", "0", "false", "no")
  if progress is False or (progress is None and (off or not _interactive())):
    yield _PassThrough(_silent)
    return
  if progress is not None and progress is not True:
    raise TypeError(f"progress must be None, True, False or a function, got {progress!r}")
  bar = Bar(name, live=_interactive())
  try:
    yield bar
  finally:
    if bar._bar is not None and bar._bar.live.is_started:  # pylint: disable=protected-access
      bar._bar.stop()  # pylint: disable=protected-access
