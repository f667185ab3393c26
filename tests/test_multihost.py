"""Two processes on loopback (jax.distributed, CPU collectives) give the one-process results."""

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

WORKER = textwrap.dedent("""
    import sys, numpy as np, jax
    port, nproc, pid, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    if nproc > 1:
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
      jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                                 num_processes=nproc, process_id=pid)
    from jaxtheory import data, nn, sweep
    ds = data.gaussian_mixture(n_train=48, n_test=32, num_classes=3, input_dim=5, seed=1)
    s = sweep.Sweep(lambda w: nn.mlp((5,), w, 2, 3), ds,
                    dict(seed=[0, 1, 2], width=[8, 12], lr=[0.1, 0.2]), steps=30, record=4,
                    batch_size=16)
    r = sweep.run(s, strategy=sys.argv[5], chunk_size=2, checkpoint=out + ".ck.npz",
                  checkpoint_interval=0)
    assert r.attrs["devices"] == jax.device_count()
    np.save(f"{out}.{pid}.npy", np.stack([r.train_loss.values, r.test_loss.values]))
""")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["map", "vmap"])
def test_two_processes_equal_one_process(tmp_path, strategy):
  flags = os.environ.get("XLA_FLAGS", "")  # the suite's own XLA flags (tests/conftest.py)
  env = dict(os.environ, XLA_FLAGS=flags + " --xla_force_host_platform_device_count=2")
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(port), "2", str(i),
                             str(tmp_path / "multi"), strategy], env=env,
                            stderr=subprocess.PIPE) for i in range(2)]
  for p in procs:
    assert p.wait(timeout=600) == 0, p.stderr.read().decode()[-3000:]
  one_env = dict(os.environ, XLA_FLAGS=flags + " --xla_force_host_platform_device_count=1")
  subprocess.run([sys.executable, "-c", WORKER, "0", "1", "0", str(tmp_path / "single"), strategy],
                 env=one_env, check=True, timeout=600)
  single = np.load(tmp_path / "single.0.npy")
  for i in range(2):  # every process holds the whole result
    np.testing.assert_allclose(np.load(tmp_path / f"multi.{i}.npy"), single, rtol=1e-6, atol=0)
  assert (tmp_path / "multi.ck.npz").exists()  # written once, by process 0
