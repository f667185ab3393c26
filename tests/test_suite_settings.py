"""The suite's own settings (tests/conftest.py) hold inside tests and their subprocesses."""

import os
import subprocess
import sys

import jax
import numpy as np
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


_SWEEP = """
import sys
import numpy as np
from jaxtheory import data, nn, sweep
ds = data.gaussian_mixture(n_train=32, n_test=16, num_classes=3, input_dim=6, seed=0)
s = sweep.Sweep(lambda w: nn.mlp((6,), w, 2, 3), ds,
                dict(seed=[0, 1], width=[8, 32], lr=[0.01, 0.05]), "adam", steps=20, record=5)
np.save(sys.argv[1], sweep.run(s, progress=False).train_loss.values)
"""


@pytest.mark.optimized
def test_xla_defaults_train_to_the_suites_numbers(tmp_path):
  """The suite compiles with XLA:CPU's older fusion emitters (tests/conftest.py); a user's
  sweep compiles with XLA's defaults. Both train a sweep to the same losses, up to rounding."""
  flags = os.environ.get("JAXTHEORY_TEST_XLA_FLAGS", "")
  if not flags:
    pytest.skip("this jaxlib does not know the suite's XLA flags: the suite runs with defaults")
  assert flags in os.environ["XLA_FLAGS"]
  losses = {}
  for name, xla_flags in (("suite", os.environ["XLA_FLAGS"]),
                          ("default", os.environ["XLA_FLAGS"].replace(flags, "").strip())):
    out = tmp_path / f"{name}.npy"
    subprocess.run([sys.executable, "-c", _SWEEP, str(out)], check=True,
                   env={**os.environ, "XLA_FLAGS": xla_flags})
    losses[name] = np.load(out)
  assert np.isfinite(losses["default"]).all() and losses["default"].shape[:3] == (2, 2, 2)
  np.testing.assert_allclose(losses["suite"], losses["default"], rtol=1e-4)
