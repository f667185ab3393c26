"""Runs neural-tangents 0.6.5's own test suite against ``jaxtheory.nt``.

::

  python benchmarks/nt_conformance/run.py                 # every NT test file, NT's CPU settings
  python benchmarks/nt_conformance/run.py --large         # also the cases NT skips on CPU
  python benchmarks/nt_conformance/run.py --files tests/stax/combinators_test.py -k Dense
  python benchmarks/nt_conformance/run.py --python "$(which python)"   # an existing environment

Steps (each is skipped when its result is already there):

1. a virtualenv of its own (``.venv/`` here, gitignored) with jaxtheory
   installed editable from this checkout, plus the test dependencies of NT
   (``absl-py``, ``pytest``, ``more-itertools``), never neural-tangents itself;
2. NT 0.6.5's sdist from PyPI (``pip download --no-deps --no-binary :all:``)
   into ``.cache/``;
3. its ``tests/`` and ``examples/`` copied to ``.cache/work/`` with the test
   plumbing that current JAX removed rewritten (:data:`REWRITES`);
4. pytest over them with ``neural_tangents`` resolving to ``shim/`` (names
   forwarded to jaxtheory) and NT's settings: x64, rank promotion ``raise``,
   ``NT_NUM_GENERATED_CASES=4``, 8 host devices for the multi-device cases;
5. a table per test file: collected / passed / skipped by NT / failed, and
   the failures grouped by cause (exception type and first line).

``--ci`` runs the fixed part that CI runs (:data:`CI_CASES`, every one must
pass). ``--json PATH`` writes the per-test records. Exit code 0 unless the run itself
broke (failing NT tests are the measurement, not an error), or ``--min-pass``
is given and not reached.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
VERSION = "0.6.5"
SDIST = f"neural-tangents-{VERSION}.tar.gz"
TEST_DEPS = ("absl-py", "pytest", "more-itertools")
# NT's test folders run here; ``tests/experimental`` needs TensorFlow (NT's tf2jax converter).
TEST_DIRS = ("tests", "tests/stax")

# The fixed part CI runs (tests/test_nt_conformance.py): cases that must pass, about a minute
# (one case per feature; its costlier siblings run in the whole run).
CI_CASES = (
    "tests/batching_test.py::BatchTest::testSerial1",
    "tests/batching_test.py::BatchTest::testParallel0",
    "tests/batching_test.py::BatchTest::test_empirical_ntk_diagonal_outputs1",
    "tests/batching_test.py::BatchTest::test_jit_or_pmap_broadcast",
    "tests/monte_carlo_test.py::MonteCarloTest::test_batch_sample_once2",
    "tests/monte_carlo_test.py::MonteCarloTest::test_monte_carlo_vs_analytic_ntk3",
    "tests/empirical_test.py::EmpiricalNtkVpTest::test_ntk_vp_fn2",
    "tests/predict_test.py::PredictTest::testZeroTimeAgreement1",
    "tests/empirical_test.py::EmpiricalTest::testLinearization0",
    "tests/empirical_test.py::EmpiricalTest::testLinearization1",
    "tests/empirical_test.py::EmpiricalTest::testTaylorExpansion0",
    "tests/empirical_test.py::EmpiricalTest::testTaylorExpansion1",
    "tests/predict_test.py::IsOnCpuTest::test_is_on_cpu",
    "tests/stax/elementwise_test.py::AutodiffTest::test_issue_1230",
    "tests/stax/elementwise_test.py::AutodiffTest::test_issue_1232",
    # NT's Kernel object: composing kernel functions, tuple inputs, diagonal_batch=False.
    "tests/batching_test.py::BatchTest::test_parallel_in_out1",
    "tests/stax/requirements_test.py::DiagonalTest::test_diagonal_batch0",
    "tests/stax/requirements_test.py::DiagonalTest::test_diagonal_spatial0",
    # The requirement algebra, a sharded batch of Kernel inputs, NT's (W, b) parameters.
    "tests/stax/requirements_test.py::DiagonalClassTest::test_diagonal_compose_is_associative",
    "tests/batching_test.py::BatchTest::testAnalyticKernelComposeParallel",
    "tests/stax/linear_test.py::ConvTransposeTest::test_conv_transpose_circular0",
    # A constant array contracted with the input, with masks.
    "tests/stax/linear_test.py::DotGeneralTest::test_dot_general_mask",
    # Masking (mask_constant) through nested parallel Dense/Conv/Flatten/Dropout/GlobalAvgPool.
    "tests/stax/stax_test.py::ParallelInOutTest::test_nested_parallel0",
)

# Test plumbing only: JAX APIs that NT's tests use and current JAX removed.
REWRITES = (
    (r"\bfrom jax import tree_map\b", "from jax.tree_util import tree_map"),
    (r"\bjax\.tree_map\(", "jax.tree_util.tree_map("),
    (r"\bfrom jax\.core import Primitive\b", "from jax.extend.core import Primitive"),
)


def _log(msg: str) -> None:
  print(f"[nt_conformance] {msg}", file=sys.stderr, flush=True)


def ensure_venv(venv: str) -> str:
  """The python of ``venv``, created with jaxtheory and NT's test deps if absent."""
  python = os.path.join(venv, "bin", "python")
  probe = "import jaxtheory, absl, pytest, more_itertools"
  if os.path.exists(python) and subprocess.run([python, "-c", probe],
                                               capture_output=True).returncode == 0:
    return python
  _log(f"creating {venv} (jaxtheory editable + {', '.join(TEST_DEPS)})")
  subprocess.run([sys.executable, "-m", "venv", venv], check=True)
  subprocess.run([python, "-m", "pip", "install", "--quiet", "-e", REPO, *TEST_DEPS], check=True)
  return python


def ensure_sdist(cache: str, python: str) -> str:
  """The path of NT's sdist in ``cache``, downloaded from PyPI if absent."""
  path = os.path.join(cache, SDIST)
  if not os.path.exists(path):
    os.makedirs(cache, exist_ok=True)
    _log(f"downloading {SDIST} from PyPI")
    subprocess.run([python, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
                    ":all:", f"neural-tangents=={VERSION}", "-d", cache], check=True)
  return path


def prepare_tests(sdist: str, work: str) -> str:
  """Extracts ``tests/`` and ``examples/`` into ``work`` (fresh) with :data:`REWRITES`."""
  prefix = f"neural-tangents-{VERSION}/"
  if os.path.exists(work):
    shutil.rmtree(work)
  os.makedirs(work)
  with tarfile.open(sdist) as tar:
    for member in tar.getmembers():
      name = member.name[len(prefix):] if member.name.startswith(prefix) else ""
      if not member.isfile() or not name.startswith(("tests/", "examples/")):
        continue
      data = tar.extractfile(member).read().decode()
      if name.endswith(".py"):
        for pattern, repl in REWRITES:
          data = re.sub(pattern, repl, data)
      dest = os.path.join(work, name)
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      with open(dest, "w") as f:
        f.write(data)
  return work


def default_files(work: str) -> list[str]:
  files = []
  for d in TEST_DIRS:
    files += sorted(os.path.join(d, f) for f in os.listdir(os.path.join(work, d))
                    if f.endswith("_test.py"))
  return files


def run_pytest(python: str, work: str, files: list[str], large: bool, k: str | None,
               cases: int, report: str) -> int:
  env = dict(os.environ)
  env.update(
      PYTHONPATH=os.pathsep.join([os.path.join(HERE, "shim"), HERE, work]),
      JAX_ENABLE_X64="1",
      JAX_NUMPY_RANK_PROMOTION="raise",
      JAX_PLATFORMS=env.get("JAX_PLATFORMS", "cpu"),
      NT_NUM_GENERATED_CASES=str(cases),
      NT_CONFORMANCE_LARGE="1" if large else "0",
      NT_CONFORMANCE_REPORT=report,
      XLA_FLAGS=(env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip(),
      PYTHONWARNINGS="ignore",
  )
  cmd = [python, "-m", "pytest", "-p", "nt_plugin", "-p", "no:cacheprovider", "-q",
         "--no-header", "-rN", "--tb=native", "--continue-on-collection-errors",
         "-o", "addopts=", "-o", "python_files=*_test.py", "--rootdir", work, *files]
  if k:
    cmd += ["-k", k]
  log = os.path.join(work, "pytest.log")
  _log(" ".join(cmd[2:]))
  _log(f"pytest output (tracebacks): {log}")
  with open(log, "w") as f:
    return subprocess.run(cmd, cwd=work, env=env, stdout=f, stderr=subprocess.STDOUT).returncode


def large_cases(path: str) -> list[str]:
  """The node ids that a CPU run's records show NT skipping as large."""
  with open(path) as f:
    records = json.load(f)
  ids = [n for n, r in records.items()
         if r["outcome"] == "skipped" and "Skipping large tests" in r["cause"]]
  if not ids:
    raise SystemExit(f"{path} records no case that NT skips as large")
  return ids


def _file_of(nodeid: str) -> str:
  return nodeid.split("::")[0]


def _cause_key(cause: str) -> str:
  """A failure's cause without the numbers and shapes that differ case by case."""
  cause = re.sub(r"0x[0-9a-f]+", "0x..", cause)
  cause = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", cause)
  return cause[:160]


def summarize(records: dict, files: list[str]) -> tuple[str, dict]:
  """A markdown table per file and the failures grouped by cause."""
  rows = collections.OrderedDict((_file_of(f), collections.Counter()) for f in files)
  causes = collections.Counter()
  examples = {}
  for nodeid, rec in records.items():
    counts = rows.setdefault(_file_of(nodeid), collections.Counter())
    outcome = rec["outcome"]
    if rec["when"] == "collect":
      counts["collection errors"] += 1
    else:
      counts["collected"] += 1
    counts[outcome] += 1
    if outcome in ("failed", "error"):
      key = _cause_key(rec["cause"])
      causes[key] += 1
      examples.setdefault(key, nodeid)
  total = collections.Counter()
  lines = ["| file | collected | passed | skipped by NT | failed | collection errors |",
           "|---|---:|---:|---:|---:|---:|"]
  for f, c in rows.items():
    failed = c["failed"] + c["error"] - c["collection errors"]
    lines.append(f"| {f} | {c['collected']} | {c['passed']} | {c['skipped']} | {failed} | "
                 f"{c['collection errors']} |")
    total.update(c)
  failed = total["failed"] + total["error"] - total["collection errors"]
  ran = total["collected"] - total["skipped"]
  rate = 100.0 * total["passed"] / ran if ran else 0.0
  lines.append(f"| **total** | {total['collected']} | {total['passed']} | {total['skipped']} | "
               f"{failed} | {total['collection errors']} |")
  lines.append("")
  lines.append(f"Passed {total['passed']} of {ran} cases that ran ({rate:.1f}%); "
               f"{total['skipped']} skipped by NT.")
  lines.append("")
  lines.append("Failures by cause (count, cause, one test):")
  lines.append("")
  for key, n in causes.most_common():
    lines.append(f"- {n} x `{key}` (e.g. `{examples[key]}`)")
  stats = dict(collected=total["collected"], passed=total["passed"], skipped=total["skipped"],
               failed=failed, collection_errors=total["collection errors"], pass_rate=rate)
  return "\n".join(lines), stats


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--large", action="store_true",
                 help="also run the cases NT skips on CPU (test_utils.skip_test)")
  p.add_argument("-k", help="pytest -k expression")
  p.add_argument("--files", nargs="+", help="NT test files, e.g. tests/stax/combinators_test.py")
  p.add_argument("--python", help="use this interpreter instead of the runner's own venv "
                 "(it must have jaxtheory, absl-py, pytest, more-itertools, and not neural-tangents)")
  p.add_argument("--venv", default=os.path.join(HERE, ".venv"))
  p.add_argument("--cache", default=os.path.join(HERE, ".cache"))
  p.add_argument("--cases", type=int, default=4, help="NT_NUM_GENERATED_CASES (NT's CI: 4)")
  p.add_argument("--work", help="where NT's tests are unpacked (default: CACHE/work)")
  p.add_argument("--ci", action="store_true",
                 help="run only the fixed part CI runs (CI_CASES); implies --min-pass all")
  p.add_argument("--json", help="write the per-test records here (also while the run goes on, "
                 "so a run stopped midway keeps the cases it finished)")
  p.add_argument("--large-of", metavar="JSON",
                 help="run only the cases that a CPU run's --json records show NT skipping as "
                 "large (implies --large)")
  p.add_argument("--min-pass", type=int, help="exit 1 unless at least this many cases pass")
  args = p.parse_args(argv)

  python = args.python or ensure_venv(args.venv)
  sdist = ensure_sdist(args.cache, python)
  work = prepare_tests(sdist, args.work or os.path.join(args.cache, "work"))
  files = args.files or (list(CI_CASES) if args.ci else default_files(work))
  if args.json:  # written by pytest, which runs in the work folder
    args.json = os.path.abspath(args.json)
  if args.large_of:
    if args.json == os.path.abspath(args.large_of):
      raise SystemExit("--json must not overwrite the --large-of records it reads")
    files, args.large = large_cases(args.large_of), True
  if args.ci and args.min_pass is None:
    args.min_pass = len(CI_CASES)
  with tempfile.TemporaryDirectory() as tmp:
    report = args.json or os.path.join(tmp, "report.json")
    if os.path.exists(report):
      os.remove(report)  # never read an earlier run's records
    rc = run_pytest(python, work, files, args.large, args.k, args.cases, report)
    if not os.path.exists(report):
      _log(f"pytest wrote no report (exit code {rc})")
      return 2
    with open(report) as f:
      records = json.load(f)
  table, stats = summarize(records, files)
  print(table)
  print()
  print(json.dumps(stats))
  if args.min_pass is not None and stats["passed"] < args.min_pass:
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
