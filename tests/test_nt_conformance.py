"""The fixed part of neural-tangents' own test suite that CI runs against ``jaxtheory.nt``.

``benchmarks/nt_conformance/run.py --ci`` fetches NT 0.6.5's sdist from PyPI,
runs the cases listed in its ``CI_CASES`` through the ``neural_tangents``
import shim, in this interpreter, and exits non-zero unless every one passes.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

_RUNNER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "benchmarks", "nt_conformance", "run.py")


def _runner():
  spec = importlib.util.spec_from_file_location("nt_conformance_run", _RUNNER)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_nt_conformance_fixed_part(tmp_path):
  run = _runner()
  cache = os.path.join(run.HERE, ".cache")
  try:
    run.ensure_sdist(cache, sys.executable)
  except subprocess.CalledProcessError as e:
    pytest.skip(f"could not fetch neural-tangents {run.VERSION}'s sdist from PyPI ({e})")
  report = tmp_path / "records.json"
  proc = subprocess.run(
      [sys.executable, _RUNNER, "--ci", "--python", sys.executable, "--cache", cache,
       "--work", str(tmp_path / "work"), "--json", str(report)],
      capture_output=True, text=True, timeout=900)
  assert report.exists(), proc.stdout + proc.stderr
  records = json.loads(report.read_text())
  outcomes = {case: records.get(case, {}).get("outcome", "not collected")
              for case in run.CI_CASES}
  failures = {case: (o, records.get(case, {}).get("cause")) for case, o in outcomes.items()
              if o != "passed"}
  assert not failures, failures
  assert proc.returncode == 0, proc.stdout + proc.stderr
