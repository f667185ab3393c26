"""Tests for the persistent compilation cache (jaxtheory.compile_cache)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One small sweep in a fresh process; prints JAX's cache hit / miss counts and stderr stays clean.
SCRIPT = """
import json
from jaxtheory import compile_cache, data, nn, sweep
import jax
counts = {"cache_hits": 0, "cache_misses": 0}
def listen(event, **kwargs):
  name = event.rsplit("/", 1)[-1]
  if event.startswith("/jax/compilation_cache/") and name in counts:
    counts[name] += 1
jax.monitoring.register_event_listener(listen)
ds = data.gaussian_mixture(n_train=32, n_test=32, num_classes=3, input_dim=4)
s = sweep.Sweep(model=lambda w: nn.mlp((4,), w, 1, 3), data=ds,
                grid=dict(seed=[0, 1], width=[8, 16]), steps=4, record=2)
sweep.run(s, progress=False)
print(json.dumps(dict(counts, dir=compile_cache.directory())))
"""


def _run(env_value, tmp_path):
  env = dict(os.environ, JAXTHEORY_COMPILATION_CACHE=env_value, JAX_PLATFORMS="cpu")
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path, text=True,
                       capture_output=True, timeout=600, check=False)
  assert res.returncode == 0, res.stderr
  return json.loads(res.stdout.strip().splitlines()[-1]), res.stderr


def test_second_run_loads_every_program_from_the_cache(tmp_path):
  cache = str(tmp_path / "cache")
  first, err1 = _run(cache, tmp_path)
  second, err2 = _run(cache, tmp_path)
  assert first["dir"] == second["dir"] == cache
  assert first["cache_misses"] > 0 and first["cache_hits"] == 0
  assert second["cache_misses"] == 0 and second["cache_hits"] == first["cache_misses"]
  assert os.listdir(cache)
  # XLA's spurious "Target machine feature ..." lines on loading a CPU program are silenced.
  assert "Target machine feature" not in err1 + err2


def test_cache_off_compiles_every_time(tmp_path):
  counts, _ = _run("off", tmp_path)
  assert counts == {"cache_hits": 0, "cache_misses": 0, "dir": None}


def test_default_cache_stays_off_when_jax_came_first_and_would_log(tmp_path):
  code = ("import jax, json\nimport jaxtheory\nfrom jaxtheory import compile_cache\n"
          "print(json.dumps([compile_cache.directory(), compile_cache.enable(%r)]))"
          % str(tmp_path / "asked"))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  for k in ("TF_CPP_MIN_LOG_LEVEL", "JAXTHEORY_COMPILATION_CACHE"):
    env.pop(k, None)
  res = subprocess.run([sys.executable, "-c", code], env=env, text=True, capture_output=True,
                       timeout=300, check=False)
  assert res.returncode == 0, res.stderr
  default, asked = json.loads(res.stdout.strip().splitlines()[-1])
  assert default is None and asked == str(tmp_path / "asked")
