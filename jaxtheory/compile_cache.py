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
sweep's cost-estimate and probe programs). The folder is bounded to 4 GiB, the
oldest entries removed first, by jaxtheory itself at most once an hour (see
:func:`bound_jax_cache`), not by JAX's own size bound: that one reads an access-time
file of every entry before every write, which costs O(entries) per compilation
and fails every write in a folder shared with a process that ran without it.

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

JAX's cache starts from a lowered program, so every invocation still traces
and lowers everything it runs (a third to a half of a sweep's compile time
once XLA's share is a cache load). Above it sits a store of whole
executables that callers key themselves, before tracing:
:func:`store_executable` / :func:`load_executable`, in the ``executables``
subfolder of the cache folder, keyed by what the caller says determines the
program plus :func:`environment` (jax, jaxlib, backend, devices, every JAX
setting, ``XLA_FLAGS`` and the digest of jaxtheory's own source, so that a
new version or a changed setting never loads a stale program). The sweep
engine keys each width bucket's programs by its computation (the jaxprs of
model, optimizer and metrics), so a second invocation of the same sweep
skips tracing and lowering its training programs. It is on with the cache
(``JAXTHEORY_EXECUTABLE_STORE=off`` turns it off alone), and off on several
devices or processes.

On CPU the sweep engine compiles the programs that run once (its buckets'
initialisations) with XLA's older fusion emitters (:func:`run_once_options`),
about 40% faster to compile; its training programs keep XLA's default
emitters, which ran them 5-20% faster. ``JAXTHEORY_XLA_OPTIONS=off`` keeps
XLA's defaults everywhere; a jaxlib that no longer knows an option compiles
without it.

A program that JAX itself loaded from its cache is never stored: XLA:CPU
writes such a program back without its machine code (its object files are
not kept after loading), and in a new process it fails at its first call
with "Function <fusion> not found". So the store takes only programs this
process compiled (JAX's cache-hit events are watched around each build),
and on CPU it neither stores nor loads a program without object files. That
alone would keep a program out of the store for good once JAX's cache held it:
after a new jaxtheory version (a new source digest, every store key new),
every program whose computation did not change would come from JAX's cache
in every invocation, traced and lowered each time. Programs bound for the
store are therefore compiled with an option that changes nothing compiled but
JAX's cache key, once per version and store key (:func:`fresh_options`); the
same program under a second store key in one process (two sweeps sharing an
initialisation) is taken from the first, not compiled again.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import pickle
import sys
import tempfile
import threading
import time
from typing import Any, NamedTuple

ENV = "JAXTHEORY_COMPILATION_CACHE"
OFF = ("off", "none", "false", "0", "no")
MAX_BYTES = 4 * 2**30
EXECUTABLES_MAX_BYTES = 2**30
# Hits, misses and stores of the executable store in this process (what the tests count).
stats: collections.Counter = collections.Counter()


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
  bound_jax_cache(path)
  return path


def bound_jax_cache(path: str, max_bytes: int = MAX_BYTES, every_s: float = 3600.0) -> None:
  """Keeps JAX's cache folder under ``max_bytes``, the oldest entries removed first.

  Runs at most once per ``every_s`` seconds per folder (a stamp file's
  modification time says when it last ran), so that starting a process does
  not stat thousands of entries every time. Removes each entry's ``-atime``
  file too (JAX writes one where its own size bound was turned on).
  """
  stamp = os.path.join(path, ".jaxtheory-bounded")
  try:
    if time.time() - os.stat(stamp).st_mtime < every_s:
      return
  except OSError:
    pass
  try:
    with open(stamp, "w"):
      pass
  except OSError:
    return
  _bound(path, max_bytes, "-cache", "-atime")


def directory() -> str | None:
  """The cache folder in use, or ``None`` when the cache is off."""
  import jax  # pylint: disable=import-outside-toplevel
  if not jax.config.jax_enable_compilation_cache:
    return None
  return jax.config.jax_compilation_cache_dir


def _source_digest() -> str:
  """sha256 over jaxtheory's own ``.py`` files (names and contents), computed once per process."""
  global _SOURCE  # pylint: disable=global-statement
  if _SOURCE is None:
    root = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
      dirs.sort()
      for f in sorted(files):
        if f.endswith(".py"):
          path = os.path.join(folder, f)
          h.update(os.path.relpath(path, root).encode() + b"\0")
          with open(path, "rb") as fh:
            h.update(fh.read() + b"\0")
    _SOURCE = h.hexdigest()
  return _SOURCE


_SOURCE: str | None = None


def environment() -> dict[str, Any]:
  """What every compiled program depends on besides its own computation.

  Versions (jax, jaxlib, jaxtheory's source digest), the backend and its
  devices, every JAX setting as in effect here (thread-local ones such as
  ``jax.enable_x64`` included), ``XLA_FLAGS`` and jaxtheory's compiler options
  (:func:`run_once_options`).
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jaxlib  # pylint: disable=import-outside-toplevel
  settings = {}
  for name, value in jax.config.values.items():
    try:
      value = getattr(jax.config, name)
    except Exception:  # pylint: disable=broad-except  # some settings are write-only
      pass
    settings[name] = repr(value)
  return {"jaxtheory source": _source_digest(), "jax": jax.__version__,
          "jaxlib": jaxlib.__version__, "backend": jax.default_backend(),
          "devices": [f"{d.platform}:{d.device_kind}" for d in jax.devices()],
          "processes": jax.process_count(), "settings": settings,
          "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "options": repr(run_once_options())}


def executables_enabled() -> bool:
  """Whether the executable store is in use (the cache on, one device, one process)."""
  return _executables_dir() is not None


STORE_ENV = "JAXTHEORY_EXECUTABLE_STORE"


def _executables_dir() -> str | None:
  import jax  # pylint: disable=import-outside-toplevel
  if _off(os.environ.get(STORE_ENV, "")):
    return None
  folder = directory()
  if folder is None or jax.device_count() != 1 or jax.process_count() != 1:
    return None
  return os.path.join(folder, "executables")


class Stored(NamedTuple):
  """An entry of the executable store: its values, and its executables loaded on demand."""
  values: dict[str, Any]
  payloads: dict[str, Any]

  def executable(self, name: str):
    """The stored executable ``name`` (a ``jax.stages.Compiled``), or ``None`` if it cannot load."""
    from jax.experimental import serialize_executable  # pylint: disable=import-outside-toplevel
    try:
      if not _self_contained(self.payloads[name][0]):
        stats["unloadable"] += 1
        return None
      _prepare_loading()
      return serialize_executable.deserialize_and_load(*self.payloads[name])
    except Exception:  # pylint: disable=broad-except
      stats["unloadable"] += 1
      return None


def load_executable(key: str) -> Stored | None:
  """The entry :func:`store_executable` stored under ``key``; ``None`` if absent.

  Its executables load when asked for (:meth:`Stored.executable`). A missing
  or unreadable entry is a miss (and an unreadable one is removed): the store
  is an optimisation, never an error.
  """
  folder = _executables_dir()
  if folder is None:
    return None
  path = os.path.join(folder, key + ".pkl")
  try:
    with open(path, "rb") as f:
      entry = pickle.load(f)
    stored = Stored(entry["values"], entry["executables"])
  except Exception as e:  # pylint: disable=broad-except
    stats["misses"] += 1
    if not isinstance(e, FileNotFoundError):
      try:
        os.remove(path)
      except OSError:
        pass
    return None
  try:
    os.utime(path)  # recently used: kept longest
  except OSError:
    pass
  stats["hits"] += 1
  return stored


def store_executable(key: str, values: dict[str, Any],
                     executables: dict[str, Any]) -> bool:
  """Stores picklable ``values`` and compiled ``executables`` (``jax.stages.Compiled``).

  Returns whether they were stored under ``key``: an executable that cannot be
  serialized (e.g. one with closed-over constants) is not, silently. The
  folder is bounded to :data:`EXECUTABLES_MAX_BYTES`, least recently used
  entries removed first.
  """
  folder = _executables_dir()
  if folder is None:
    return False
  from jax.experimental import serialize_executable  # pylint: disable=import-outside-toplevel
  if any(not _portable(v) for v in executables.values()):
    return False
  try:
    payloads = {k: serialize_executable.serialize(v) for k, v in executables.items()}
    if not all(_self_contained(p[0]) for p in payloads.values()):
      stats["not_self_contained"] += 1
      return False
    if not _trees_round_trip(payloads):
      stats["not_picklable"] += 1
      return False
  except Exception:  # pylint: disable=broad-except
    return False
  if not _write_entry(folder, key, {"values": dict(values), "executables": payloads}):
    return False
  stats["stored"] += 1
  return True


def _write_entry(folder: str, key: str, entry: dict) -> bool:
  """Writes a store entry atomically (a whole file or none); bounds the folder."""
  tmp = None
  try:
    blob = pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
      f.write(blob)
    os.replace(tmp, os.path.join(folder, key + ".pkl"))
  except Exception:  # pylint: disable=broad-except
    if tmp is not None and os.path.exists(tmp):
      os.remove(tmp)
    return False
  _bound(folder, EXECUTABLES_MAX_BYTES)
  return True


OPTIONS_ENV = "JAXTHEORY_XLA_OPTIONS"
# XLA:CPU compiles a program 1.3-3x faster with its older fusion emitters than with its MLIR
# ones (its default), but they ran training steps 5-20% slower (benchmarks/sweep_throughput.py
# --quick, MLP width 64, with JAXTHEORY_XLA_OPTIONS=off for the comparison): the sweep uses
# them only for the programs that run once, its initialisations.
CPU_RUN_ONCE_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
_UNKNOWN: set = set()  # options of CPU_RUN_ONCE_OPTIONS (and FRESH_OPTION) this jaxlib rejected


def run_once_options(options: dict | None = None) -> dict | None:
  """Compiler options for a program that runs once: ``options`` plus, on CPU,
  :data:`CPU_RUN_ONCE_OPTIONS` (they change how fast XLA compiles, not what the
  program computes). ``JAXTHEORY_XLA_OPTIONS=off`` keeps XLA's defaults; the
  caller's options win."""
  import jax  # pylint: disable=import-outside-toplevel
  if _off(os.environ.get(OPTIONS_ENV, "")) or jax.default_backend() != "cpu":
    return options
  merged = {k: v for k, v in CPU_RUN_ONCE_OPTIONS.items() if k not in _UNKNOWN}
  merged.update(options or {})
  return merged or None


# An XLA option that only bounds how many buffers a debug dump lists: it changes nothing
# compiled, but it is part of JAX's cache key. See :func:`fresh_options`.
FRESH_OPTION = "xla_debug_buffer_assignment_show_max"


def fresh_options(options: dict | None = None, key: str = "") -> dict | None:
  """``options`` for a program bound for the executable store under ``key``, which JAX's
  cache never serves.

  A program JAX loads from its own cache cannot be stored (on CPU it is
  written back without its machine code), so a program that missed the store
  but that JAX's cache holds under its usual key would never reach the store:
  after every new jaxtheory version, or for a second store key whose program
  another key's compiled (a sweep whose initialisation another sweep shares),
  each invocation would trace, lower and load it again. Compiled with
  :data:`FRESH_OPTION` set to a value drawn from jaxtheory's source digest and
  ``key``, its key in JAX's cache is its own, so XLA compiles it (once per
  version and store key) and the store takes it.
  """
  if FRESH_OPTION in _UNKNOWN:
    return options
  value = hashlib.sha256((_source_digest() + key).encode()).hexdigest()
  return {**(options or {}), FRESH_OPTION: 1000 + int(value[:6], 16)}


def compile_lowered(lowered, options: dict | None = None):
  """``lowered.compile(compiler_options=options)``. An option of
  :data:`CPU_RUN_ONCE_OPTIONS` (or :data:`FRESH_OPTION`) that this jaxlib does not
  know is dropped (for the rest of the process) instead of failing the compilation."""
  try:
    return lowered.compile(compiler_options=options)
  except Exception as e:  # pylint: disable=broad-except
    unknown = [k for k in (*CPU_RUN_ONCE_OPTIONS, FRESH_OPTION)
               if k in (options or {}) and f"No such compile option: '{k}'" in str(e)]
    if not unknown:
      raise
    _UNKNOWN.update(unknown)
    return compile_lowered(lowered, {k: v for k, v in options.items() if k not in unknown})


def start_build(key: str | None, name: str, lower, compiler_options: dict | None = None,
                pool=None, ahead: bool = False):
  """Starts making a program; returns a function that waits for ``(program, loaded)``.

  The program is the executable stored as ``name`` under ``key`` (``None``:
  no store), else ``lower()`` compiled (with :func:`fresh_options`, so that
  JAX's cache does not serve it from an earlier version) and stored under
  ``key``. One that JAX still loaded from its own cache (its store entry lost
  within one version) is not stored: such a program is written back without
  its machine code on CPU and could not run in another process.
  ``lower()`` traces and lowers here, in the calling thread (tracing reads
  its thread's JAX settings, such as ``enable_x64``), and XLA's compilation,
  which releases the GIL, runs on ``pool`` (a ``concurrent.futures``
  executor; ``None``: here, now). Programs started together on a pool of
  ``n`` threads compile ``n`` at a time, to the same executables. With
  ``ahead`` (and a ``key``) the program is also left for a later call with
  the same key, which takes it instead of starting again: a sweep started
  ahead of its run (:func:`jaxtheory.sweep.engine.compile_ahead`).
  """
  import jax  # pylint: disable=import-outside-toplevel
  if key is not None:
    started = _AHEAD.pop(key, None)
    if started is not None:
      return started
    stored = load_executable(key)
    exe = None if stored is None else stored.executable(name)
    if exe is not None:
      if ahead:
        _AHEAD[key] = lambda: (exe, True)
      return lambda: (exe, True)
  lowered = lower()
  x64 = jax.config.jax_enable_x64  # this thread's setting

  store = key is not None and executables_enabled()
  options = fresh_options(compiler_options, key) if store else compiler_options

  def build():
    # The same program under another key (another sweep with the same step), compiled
    # earlier in this process: taken as it is (FRESH_OPTION changes nothing compiled).
    same = _program_digest(lowered, options, x64) if store else None
    if same is not None:
      exe = _stored_again(same, key, name)
      if exe is not None:
        return exe, False
    with _watch_cache_hits() as hits, jax.enable_x64(x64):
      exe = compile_lowered(lowered, options)
    if key is not None:
      if hits[0]:
        stats["from_jax_cache"] += 1
      elif store_executable(key, {}, {name: exe}) and same is not None:
        _STORED_HERE[same] = (key, name)
    return exe, False

  if pool is None:
    done = build()
    waiter = lambda: done
  else:
    future = pool.submit(build)
    _QUEUED.add(future)
    future.add_done_callback(_QUEUED.discard)
    waiter = future.result
  if ahead and key is not None:
    _AHEAD[key] = waiter
  return waiter


def stored_jit(fn, static_argnames: tuple[str, ...] = ()):
  """``jax.jit(fn)`` whose compiled programs go to the executable store.

  A later process that calls it with arguments of the same shapes, dtypes
  and static values loads the program without tracing or lowering it. The
  key is taken before tracing: ``fn``'s module and name, those of the
  arguments, and :func:`environment` (which holds jaxtheory's own source, so
  an edited ``fn`` misses). So only for jaxtheory's own functions of their
  arguments alone (no closed-over state that varies). Called with a tracer,
  or with the store off, it is ``jax.jit(fn)``. Static arguments are passed by
  keyword. Inside a trace with concrete arguments only, the program runs now
  and its result is a constant of the trace.
  """
  import functools  # pylint: disable=import-outside-toplevel

  import jax  # pylint: disable=import-outside-toplevel
  jitted = jax.jit(fn, static_argnames=static_argnames)
  name = f"{fn.__module__}.{fn.__qualname__}"
  programs = {}  # key -> program, in this process

  @functools.wraps(fn)
  def call(*args, **kwargs):
    static = {k: kwargs.pop(k) for k in static_argnames if k in kwargs}
    return stored_call(jitted, name, sorted(static.items()), programs, args, kwargs, static)

  return call


def stored_call(jitted, name: str, key: Any, programs: dict, args: tuple, kwargs: dict,
                static: dict | None = None):
  """``jitted(*args, **kwargs, **static)``, its program from the executable store when there.

  The store key is ``name``, ``key`` (which must determine the computation
  together with :func:`environment`, which holds jaxtheory's own source: never
  a closure that varies, and the ``static`` arguments' values) and the
  arguments' tree and shapes. ``programs`` (a dict) keeps the programs made in
  this process. With the store off, or a tracer among the arguments, it is
  ``jitted(*args, **kwargs, **static)``.
  """
  import jax  # pylint: disable=import-outside-toplevel
  static = static or {}
  leaves, tree = jax.tree.flatten((args, kwargs))
  if not executables_enabled() or any(isinstance(l, jax.core.Tracer) for l in leaves):
    return jitted(*args, **kwargs, **static)
  avals = [(a.shape, str(a.dtype), a.weak_type) for a in map(jax.typeof, leaves)]
  digest = hashlib.sha256(repr([environment(), name, str(tree), avals, key]).encode()).hexdigest()
  if digest not in programs:
    programs[digest] = start_build(digest, name,
                                   lambda: jitted.lower(*args, **kwargs, **static))()[0]
  return programs[digest](*args, **kwargs)


_AHEAD: dict[str, Any] = {}  # programs started ahead of their sweep, by key, until taken
_POOL: list = []
_QUEUED: set = set()  # compilations on the pool, not yet finished
# Programs this process compiled and stored: digest of their lowered text -> (store key, name).
_STORED_HERE: dict[str, tuple[str, str]] = {}


def _program_digest(lowered, options: dict | None, x64: bool) -> str | None:
  """What makes two lowered programs one executable: the program text, the compiler options
  (but :data:`FRESH_OPTION`, which changes nothing compiled), and the calling convention a
  loaded executable keeps, which the text does not show (the argument and result pytrees,
  weak types, donations and which unused arguments were dropped). ``None`` where JAX does
  not say which arguments it kept: then the program is not shared."""
  import jax  # pylint: disable=import-outside-toplevel
  kept = getattr(getattr(lowered, "_lowering", None), "compile_args", {}).get("kept_var_idx")
  if kept is None:
    return None
  args = [(a.shape, str(a.dtype), getattr(getattr(a, "_aval", None), "weak_type", None),
           a.donated) for a in jax.tree.leaves(lowered.args_info)]
  outs = [(o.shape, str(o.dtype), getattr(o, "weak_type", None))
          for o in jax.tree.leaves(lowered.out_info)]
  rest = sorted((k, v) for k, v in (options or {}).items() if k != FRESH_OPTION)
  return hashlib.sha256(repr([lowered.as_text(), rest, x64, str(lowered.in_tree),
                              str(lowered.out_tree), args, outs, sorted(kept)]).encode()).hexdigest()


def _stored_again(same: str, key: str, name: str):
  """The program stored earlier in this process with the digest ``same``, stored under
  ``key`` as ``name`` too and loaded; ``None`` if there is none (or it cannot be read)."""
  if same not in _STORED_HERE:
    return None
  first_key, first_name = _STORED_HERE[same]
  folder = _executables_dir()
  try:
    with open(os.path.join(folder, first_key + ".pkl"), "rb") as f:
      payload = pickle.load(f)["executables"][first_name]
  except Exception:  # pylint: disable=broad-except
    return None
  exe = Stored({}, {name: payload}).executable(name)
  if exe is None or not _write_entry(folder, key, {"values": {}, "executables": {name: payload}}):
    return None
  stats["same_program"] += 1
  return exe


def cancel_queued() -> None:
  """Cancels the compilations queued on the pool that have not started and forgets the
  programs started ahead: what a run that stops with an error calls, since the pool's
  threads finish their queue before the process can exit."""
  for future in list(_QUEUED):
    future.cancel()
  _AHEAD.clear()


def compile_pool():
  """The process's threads for compiling (:func:`compile_workers` of them, made on first
  use), or ``None`` where that is one: programs then compile when they are needed."""
  if not _POOL:
    import concurrent.futures  # pylint: disable=import-outside-toplevel
    n = compile_workers()
    _POOL.append(None if n < 2 else concurrent.futures.ThreadPoolExecutor(
        n, thread_name_prefix="jaxtheory-compile"))
  return _POOL[0]


THREADS_ENV = "JAXTHEORY_COMPILE_THREADS"


def compile_workers() -> int:
  """How many programs to compile at once: ``$JAXTHEORY_COMPILE_THREADS`` if set (1: one at
  a time, when needed); else on CPU the cores this process may use (at most 8), elsewhere
  1, since an accelerator's compiler times candidate kernels on the device, where
  concurrent compilations would disturb each other's timings and choices."""
  import jax  # pylint: disable=import-outside-toplevel
  given = os.environ.get(THREADS_ENV, "").strip()
  if given:
    try:
      return max(1, int(given))
    except ValueError:
      from jaxtheory.errors import ConfigError  # pylint: disable=import-outside-toplevel
      raise ConfigError(f"{THREADS_ENV} must be a positive integer, got {given!r}") from None
  if jax.default_backend() != "cpu":
    return 1
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    cores = os.cpu_count() or 1
  return max(1, min(cores, 8))


_local = threading.local()
_LISTENING = []


def _on_event(event: str, **kwargs) -> None:
  del kwargs
  counter = getattr(_local, "hits", None)
  if counter is not None and event == "/jax/compilation_cache/cache_hits":
    counter[0] += 1


@contextlib.contextmanager
def _watch_cache_hits():
  """Counts JAX's persistent-cache hits in this thread while the block runs (a one-item list)."""
  if not _LISTENING:
    import jax  # pylint: disable=import-outside-toplevel
    jax.monitoring.register_event_listener(_on_event)
    _LISTENING.append(True)
  outer, _local.hits = getattr(_local, "hits", None), [0]
  try:
    yield _local.hits
  finally:
    if outer is not None:
      outer[0] += _local.hits[0]
    _local.hits = outer


def _self_contained(serialized: bytes) -> bool:
  """Whether a serialized program carries its machine code (on CPU: at least one object file).

  An XLA:CPU program written back after being loaded from a cache has its
  kernels' names but not their code; it would fail at its first call in a
  new process. Other backends are not checked.
  """
  import jax  # pylint: disable=import-outside-toplevel
  return jax.default_backend() != "cpu" or b"\x7fELF" in serialized


def _trees_round_trip(payloads: dict) -> bool:
  """Whether the programs' input and output tree structures come back equal from pickle.

  They are pickled with each program; a structure whose node data holds an
  object compared by identity (e.g. Equinox's sentinel for an unset field)
  unpickles to a different structure, and the loaded program could not
  rebuild its outputs. Such an entry is not stored. Only the structures are
  round-tripped, not the serialized programs.
  """
  trees = {k: p[1:] for k, p in payloads.items()}
  try:
    return pickle.loads(pickle.dumps(trees, protocol=pickle.HIGHEST_PROTOCOL)) == trees
  except Exception:  # pylint: disable=broad-except
    return False


def _portable(compiled) -> bool:
  """Whether a compiled program can run in another process: no host callbacks, no effects."""
  # pylint: disable-next=protected-access
  unloaded = getattr(compiled._executable, "_unloaded_executable", None)
  return unloaded is not None and not any(getattr(unloaded, a, None) for a in (
      "host_callbacks", "ordered_effects", "unordered_effects"))


_PREPARED = False


def _prepare_loading() -> None:
  """Readies the process for programs it did not lower itself (once per process).

  jaxlib fills its table of LAPACK routines (linear algebra on CPU) only
  when it lowers a program that calls one; a loaded program that calls one
  first would jump through an empty table and crash. Lowering a 1x1
  Cholesky fills it (a lowering only, nothing compiles).
  """
  global _PREPARED  # pylint: disable=global-statement
  if not _PREPARED:
    import jax  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    if jax.default_backend() == "cpu":
      jax.jit(jax.numpy.linalg.cholesky).lower(np.ones((1, 1), np.float32))
    _PREPARED = True


def _bound(folder: str, max_bytes: int, suffix: str = ".pkl", companion: str | None = None) -> None:
  """Removes the least recently used entries (files ending in ``suffix``, each with its
  ``companion`` file if named) until the folder holds at most ``max_bytes``."""
  try:
    entries = [(e.stat().st_mtime, e.stat().st_size, e.path) for e in os.scandir(folder)
               if e.name.endswith(suffix)]
  except OSError:
    return
  total = sum(size for _, size, _ in entries)
  for _, size, path in sorted(entries):
    if total <= max_bytes:
      break
    try:
      os.remove(path)
      total -= size
    except OSError:
      continue
    if companion is not None:
      try:
        os.remove(path[:-len(suffix)] + companion)
      except OSError:
        pass
