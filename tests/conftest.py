"""Suite-wide settings: implicit rank promotion is an error, and one compilation cache serves the run.

Rank promotion is an error, as in neural-tangents' and equinox's suites. A
conftest module is imported by every pytest process, xdist workers included,
and the environment variable carries the setting into the subprocesses tests
start (the CLI, notebooks, multi-host workers), so it holds however the suite
is run and wherever the package's code runs.

Many tests build the same small programs (the same tiny MLP on the same data,
one fixture per worker, a CLI run and its resumed twin), so the whole run
shares one persistent compilation cache: a fresh folder made by the first
process (the xdist controller), inherited by the workers and subprocesses
through ``JAXTHEORY_COMPILATION_CACHE``, and removed at the end. A run starts
from an empty cache, so nothing carries over between runs; a folder the
caller set in that variable (or ``off``) is used as given. The cache changes
how long a compile takes, never what it computes.
"""

import os
import shutil
import subprocess
import sys
import tempfile

# XLA logs a spurious error line per program it loads from the cache on CPU
# (see jaxtheory.compile_cache); its C++ log level is read once, when jaxlib loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# XLA:CPU compiles the suite's small programs 1.5-4x faster with its older (non-MLIR) fusion
# emitters and one codegen thread (xdist's workers already use every core). The programs
# compute the same numbers up to float rounding and run up to ~20% slower (larger training
# steps), far less than the compile time saved: even the long-training test files ran faster
# (tests/test_nn.py 90 -> 53 s, nt_attention + checkpoint + base_shapes 149 -> 124 s, one
# core). The sweep engine uses these emitters for its initialisations only (compile_cache).
# Probed once, by the first process, in a subprocess: a jaxlib that does not know a flag
# aborts, and the suite then runs without them.
_FAST_COMPILE = "--xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1"
if "JAXTHEORY_TEST_XLA_FLAGS" not in os.environ:
  _probe = subprocess.run(
      [sys.executable, "-c", "import jax; jax.jit(lambda x: x + 1)(1.0).block_until_ready()"],
      env={**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "") + " " + _FAST_COMPILE},
      capture_output=True, check=False)
  os.environ["JAXTHEORY_TEST_XLA_FLAGS"] = _FAST_COMPILE if _probe.returncode == 0 else ""
if os.environ["JAXTHEORY_TEST_XLA_FLAGS"] not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " "
                             + os.environ["JAXTHEORY_TEST_XLA_FLAGS"]).strip()

import jax  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position

os.environ["JAX_NUMPY_RANK_PROMOTION"] = "raise"
# xdist's workers already use every core: a sweep compiles its programs one at a time here
# (the tests of compiling side by side set their own number of threads).
os.environ.setdefault("JAXTHEORY_COMPILE_THREADS", "1")
jax.config.update("jax_numpy_rank_promotion", "raise")

_CACHE = "JAXTHEORY_COMPILATION_CACHE"
_made = []


def pytest_configure(config):
  del config
  if _CACHE not in os.environ and "PYTEST_XDIST_WORKER" not in os.environ:
    _made.append(tempfile.mkdtemp(prefix="jaxtheory-test-cache-"))
    os.environ[_CACHE] = _made[0]


def pytest_unconfigure(config):
  del config
  for path in _made:
    shutil.rmtree(path, ignore_errors=True)


def pytest_runtest_setup(item):
  """How hard XLA optimizes the programs a test compiles (set before its fixtures run).

  Most tests compile small programs and run them briefly, so compiling is most of
  their time: they run with ``jax_disable_most_optimizations`` (LLVM at level 0,
  about a third off their time). Tests marked ``optimized`` (long training runs,
  Monte Carlo estimates, the comparison with the default compilation) keep XLA's
  default: unoptimized, they run up to 3x longer. The setting changes how fast a
  program runs, not what it computes; the environment variable carries it into the
  subprocesses a test starts.
  """
  fast_compile = item.get_closest_marker("optimized") is None
  jax.config.update("jax_disable_most_optimizations", fast_compile)
  os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1" if fast_compile else "0"


@pytest.fixture
def x64():
  """Runs one test in float64 (within the test only: a worker-wide switch would leak into
  the other tests it runs). A file all in float64 says ``pytestmark = pytest.mark.usefixtures("x64")``."""
  with jax.enable_x64(True):
    yield
