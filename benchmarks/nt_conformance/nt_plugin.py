"""pytest plugin for the conformance run: NT's test plumbing and a JSON record of outcomes.

Loaded by ``run.py`` with ``-p nt_plugin``. It

* refuses to run unless ``neural_tangents`` is the shim of this folder;
* ends the shim's collection phase (see ``shim/neural_tangents/_shim.py``);
* marks absl flags as parsed (NT's tests read ``FLAGS`` at import, which
  ``absltest.main`` would otherwise parse);
* with ``NT_CONFORMANCE_LARGE=1``, turns NT's ``test_utils.skip_test`` (the
  "large tests are skipped on CPU" switch) into a no-op;
* writes every test's outcome, and the first line of its exception, to the
  JSON file named by ``NT_CONFORMANCE_REPORT`` (rewritten after every case).
"""

import json
import os
import re
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
_RECORDS = {}


def pytest_configure(config):
  import neural_tangents
  shim = os.path.join(_HERE, "shim")
  if not os.path.abspath(neural_tangents.__file__).startswith(shim + os.sep):
    raise pytest.UsageError(f"neural_tangents resolves to {neural_tangents.__file__}, not the "
                            f"jaxtheory shim in {shim}; refusing to run")
  from absl import flags
  flags.FLAGS.mark_as_parsed()


def pytest_collection_finish(session):
  from neural_tangents import _shim
  _shim.COLLECTING[0] = False
  if os.environ.get("NT_CONFORMANCE_LARGE") == "1":
    test_utils = sys.modules.get("tests.test_utils")
    if test_utils is not None:
      test_utils.skip_test = lambda *args, **kwargs: None


def _first_line(text: str) -> str:
  for line in str(text).splitlines():
    if line.strip():
      return line.strip()[:300]
  return ""


def _cause(report) -> str:
  longrepr = report.longrepr
  crash = getattr(longrepr, "reprcrash", None)
  if crash is not None:
    return _first_line(crash.message)
  if isinstance(longrepr, tuple) and len(longrepr) == 3:
    return _first_line(longrepr[2])
  return _first_line(str(longrepr))


def _collect_cause(report) -> str:
  """The exception line of a collection error (its report starts with a generic header)."""
  lines = [l.strip() for l in str(report.longrepr).splitlines()]
  errors = [l for l in lines if re.match(r"^(E\s+)?[\w.]+(Error|Exception|Exit)\b", l)]
  return (errors[-1].removeprefix("E").strip() if errors else _first_line(report.longrepr))[:300]


def pytest_collectreport(report):
  if report.failed:
    _RECORDS[report.nodeid] = dict(outcome="error", when="collect", cause=_collect_cause(report))


def pytest_runtest_logreport(report):
  rec = _RECORDS.setdefault(report.nodeid, dict(outcome="passed", when="call", cause="",
                                                seconds=0.0))
  rec["seconds"] = rec.get("seconds", 0.0) + report.duration
  if rec["outcome"] == "passed":
    if report.skipped:
      rec.update(outcome="skipped", when=report.when, cause=_cause(report))
    elif report.failed:
      rec.update(outcome="failed", when=report.when, cause=_cause(report))
  if report.when == "teardown":
    _write()  # after every case: a run stopped midway keeps what it measured


def _write():
  path = os.environ.get("NT_CONFORMANCE_REPORT")
  if path:
    with open(path + ".tmp", "w") as f:
      json.dump(_RECORDS, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def pytest_sessionfinish(session):
  _write()
