"""A persistent compilation cache, on by default: compile a program once, reuse it in every process.

XLA programs compiled by jaxtheory (and by anything else in the process) are
written to ``$JAXTHEORY_DATA/jax-cache`` (default ``~/.cache/jaxtheory/jax-cache``,
next to the datasets) and loaded instead of recompiled when a later run
builds the same program. ``JAXTHEORY_COMPILATION_CACHE=PATH`` moves it,
``JAXTHEORY_COMPILATION_CACHE=off`` disables it; the command line takes
``jaxtheory run ... --compilation-cache PATH|off``. A folder the user set
with ``jax.config.update('jax_compilation_cache_dir', ...)`` is left alone.

It is switched on when ``jaxtheory`` is imported, not at the first
``sweep.run``: JAX initialises its cache at the first compilation of the
process, so a cache enabled later would be ignored whenever a probe, kernel or
user ``jit`` compiled first. Every program is cached, however quick to compile
(JAX's default skips programs compiled in under a second, which are most of a
sweep's cost-estimate and probe programs); where the ``filelock`` package is
installed the folder is bounded to 4 GiB (least recently used entries go first).

On CPU, loading a cached program makes XLA log an error line per program
("Target machine feature +prefer-no-gather is not supported on the host
machine", openxla/xla#44565, jax-ml/jax#38445): the features it names are
LLVM tuning preferences, not instruction sets, and the program loads and runs
correctly. The line comes from XLA's C++ logging, which reads
``TF_CPP_MIN_LOG_LEVEL`` once when jaxlib loads, so importing jaxtheory before
jax sets it to 3 (fatal only) unless the user chose a level. When jax was
imported first with a lower level, the default cache stays off (it would fill
the output with these lines); ``JAXTHEORY_COMPILATION_CACHE=PATH`` or
:func:`enable` with a path still turns it on.
"""

from __future__ import annotations

import importlib.util
import os
import sys

ENV = "JAXTHEORY_COMPILATION_CACHE"
OFF = ("off", "none", "false", "0", "no")
MAX_BYTES = 4 * 2**30


def default_dir() -> str:
  """``$JAXTHEORY_DATA/jax-cache``, else ``$XDG_CACHE_HOME/jaxtheory/jax-cache`` (``~/.cache/...``)."""
  # The same root as jaxtheory.data.data_dir, computed here because this runs before jax loads.
  root = os.environ.get("JAXTHEORY_DATA")
  if root:
    root = os.path.expanduser(root)
  else:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    root = os.path.join(cache, "jaxtheory")
  return os.path.join(root, "jax-cache")


def quiet_loader_logs() -> None:
  """Silences XLA's spurious CPU cache-loading error lines (see the module docstring).

  Effective only before jaxlib is imported and when the user has not set
  ``TF_CPP_MIN_LOG_LEVEL``; a no-op otherwise.
  """
  if "jaxlib" not in sys.modules and not _off(os.environ.get(ENV, "")):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _quiet() -> bool:
  """Whether XLA's C++ log level hides error lines (it is read once, when jaxlib loads)."""
  try:
    return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")) >= 3
  except ValueError:
    return False


def _off(value: str) -> bool:
  return value.strip().lower() in OFF


def enable(path: str | os.PathLike | None = None) -> str | None:
  """Turns the persistent compilation cache on (or off) for this process.

  Args:
    path: the cache folder, or ``'off'`` to disable the cache. ``None``:
      ``$JAXTHEORY_COMPILATION_CACHE`` when set, else :func:`default_dir`, and
      a folder already set in ``jax.config`` is kept.

  Returns:
    The folder in use, or ``None`` when the cache is off (also when the
    folder cannot be created: the cache is an optimisation, never an error).

  >>> import os
  >>> folder = directory()  # set by importing jaxtheory
  >>> folder is None or os.path.isdir(folder)
  True
  """
  import jax  # pylint: disable=import-outside-toplevel
  if path is None:
    env = os.environ.get(ENV, "").strip()
    if not env and jax.config.jax_compilation_cache_dir:  # the user's own choice
      return jax.config.jax_compilation_cache_dir
    if not env and not _quiet():
      # jax was imported first, so XLA would print two error lines per cached CPU program
      # loaded; the cache then waits to be asked for (environment variable or enable(path)).
      return None
    path = env or default_dir()
  path = os.fspath(path)
  if _off(path):
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  path = os.path.expanduser(path)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  if importlib.util.find_spec("filelock") is not None:  # JAX's eviction needs it
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
  return path


def directory() -> str | None:
  """The cache folder in use, or ``None`` when the cache is off."""
  import jax  # pylint: disable=import-outside-toplevel
  if not jax.config.jax_enable_compilation_cache:
    return None
  return jax.config.jax_compilation_cache_dir
