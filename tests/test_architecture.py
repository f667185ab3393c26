"""The layering of the package, checked by import-linter's contracts in pyproject.toml."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=str(pythonpath))
  code = ("import sys; from importlinter.cli import lint_imports; "
          "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")
  return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=300, check=False)


def test_import_contracts_hold():
  r = _lint(ROOT, ROOT)
  assert r.returncode == 0, r.stdout + r.stderr
  assert "0 broken" in r.stdout


def test_import_contracts_catch_an_upward_import(tmp_path):
  # A copy of the package in which a layer (nn) imports one above it (sweep).
  shutil.copytree(ROOT / "jaxtheory", tmp_path / "jaxtheory",
                  ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
  core = tmp_path / "jaxtheory" / "nn" / "core.py"
  core.write_text(core.read_text() + "\nfrom jaxtheory import sweep  # an upward import\n")
  r = _lint(tmp_path, tmp_path)
  assert r.returncode != 0
  assert "BROKEN" in r.stdout and "jaxtheory.nn.core -> jaxtheory.sweep" in r.stdout, r.stdout
