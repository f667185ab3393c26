"""The package's names as the README writes them, each in a fresh interpreter."""

import subprocess
import sys

import pytest


def test_readme_names_resolve_after_import_jaxtheory():
  names = ("jaxtheory.limits.compare", "jaxtheory.nn.flax.from_linen",
           "jaxtheory.nn.flax.from_nnx")
  code = "import jaxtheory\n" + "".join(f"assert callable({n}), {n!r}\n" for n in names)
  res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, check=False)
  assert res.returncode == 0, res.stderr


def test_unknown_attribute_is_still_an_attribute_error():
  from jaxtheory import nn, sweep  # pylint: disable=import-outside-toplevel
  with pytest.raises(AttributeError, match="has no attribute 'limitz'"):
    sweep.limitz  # pylint: disable=pointless-statement
  with pytest.raises(AttributeError, match="has no attribute 'flaxx'"):
    nn.flaxx  # pylint: disable=pointless-statement
