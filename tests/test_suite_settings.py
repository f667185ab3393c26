"""The suite's own settings (tests/conftest.py) hold inside tests and their subprocesses."""

import os
import subprocess
import sys

import jax
import pytest


_FLAG = "jax_disable_most_optimizations"


def _in_subprocess() -> bool:
  code = f"import jax; print(jax.config.values[{_FLAG!r}])"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True).stdout
  return out.strip() == "True"


def test_unmarked_tests_compile_with_most_optimizations_off():
  assert jax.config.values[_FLAG]
  assert os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] == "1" and _in_subprocess()


@pytest.mark.optimized
def test_optimized_tests_compile_with_xla_defaults():
  assert not jax.config.values[_FLAG]
  assert not _in_subprocess()


def test_rank_promotion_is_an_error():
  with pytest.raises(ValueError, match="rank_promotion"):
    jax.numpy.ones(3) + jax.numpy.ones((2, 3))
