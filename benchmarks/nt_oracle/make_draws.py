"""Record neural-tangents 0.6.5's initial parameters for ``tests/draw_battery.py``.

Run in the side env (see setup_env.sh):

    benchmarks/nt_oracle/.venv/bin/python benchmarks/nt_oracle/make_draws.py

Writes tests/data/nt_draws.npz: for every network and both of JAX's threefry
streams (``partitionable`` True, today's default, and False, the default until
JAX 0.5), keys ``f"{name}/{stream}/leaf{i}"`` (the parameter leaves, in tree
order) and ``f"{name}/{stream}/out"`` (``apply_fn`` on the battery's inputs and key).
"""
import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import draw_battery  # noqa: E402
import nt_import  # noqa: E402

nt = nt_import.load()


def main():
  out = {}
  for partitionable in (True, False):
    jax.config.update("jax_threefry_partitionable", partitionable)
    stream = "partitionable" if partitionable else "legacy"
    for name, ((init_fn, apply_fn, _), shape) in draw_battery.networks(nt.stax).items():
      _, params = init_fn(jax.random.PRNGKey(draw_battery.KEY), shape)
      x = jax.random.normal(jax.random.PRNGKey(draw_battery.INPUT_KEY), shape)
      for i, leaf in enumerate(jax.tree_util.tree_leaves(params)):
        out[f"{name}/{stream}/leaf{i}"] = np.asarray(leaf)
      rng = jax.random.PRNGKey(draw_battery.APPLY_KEY)  # Dropout's masks
      out[f"{name}/{stream}/out"] = np.asarray(apply_fn(params, x, rng=rng))
  out["meta"] = np.asarray(json.dumps({"neural_tangents": nt.__version__, "jax": jax.__version__}))
  path = os.path.join(ROOT, "tests", "data", "nt_draws.npz")
  np.savez_compressed(path, **out)
  print(f"wrote {path}: {len(out) - 1} arrays")


if __name__ == "__main__":
  main()
