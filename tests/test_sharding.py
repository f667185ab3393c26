"""Runs sharded over several (forced host) devices equal the single-device sweep.

Bitwise in most runs; to float tolerance in general, because XLA:CPU may split
a matmul's reduction across threads differently when 8 virtual devices share
2 cores (seen as 1-ulp differences with the chunked strategy under load).
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest


SCRIPT = textwrap.dedent("""
    import sys, numpy as np, jax
    from jaxtheory import data, nn, sweep
    n = int(sys.argv[3])
    assert jax.device_count() == n, jax.device_count()
    ds = data.gaussian_mixture(n_train=48, n_test=32, num_classes=3, input_dim=5, seed=1)
    s = sweep.Sweep(lambda w: nn.mlp((5,), w, 2, 3), ds,
                    dict(seed=[0, 1, 2], width=[8, 12], lr=[0.1, 0.2]), steps=30, record=4)
    r = sweep.run(s, strategy=sys.argv[2], chunk_size=2)
    assert r.attrs["devices"] == n
    np.save(sys.argv[1], np.stack([r.train_loss.values, r.test_loss.values]))
""")


def _run(tmp_path, strategy, devices):
  out = tmp_path / f"d{devices}.npy"
  env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "")
             + f" --xla_force_host_platform_device_count={devices}")
  subprocess.run([sys.executable, "-c", SCRIPT, str(out), strategy, str(devices)], check=True,
                 env=env, timeout=600)
  return np.load(out)


@pytest.mark.parametrize("strategy", ["vmap", "map", "chunked"])
def test_sharded_over_8_devices_equals_single_device(tmp_path, strategy):
  # Both sides in fresh processes: XLA fixes the device count at start-up.
  np.testing.assert_allclose(_run(tmp_path, strategy, 8), _run(tmp_path, strategy, 1),
                             rtol=1e-6, atol=0)
