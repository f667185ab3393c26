# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Width sweeps in one compiled program
#
# We train an MLP on scikit-learn's digits at several widths and seeds, under two
# parametrizations (SP and muP), each sweep in one compiled program per width bucket.
# Then we look at how the best learning rate moves with width: under SP it drifts,
# under muP it should stay put (Yang et al. 2022, "Tensor Programs V").
#
# `jupytext --to notebook notebooks/width_sweep.py` turns this file into a notebook.

# %%
import os

from jaxtheory import data, nn, plots, sweep

STEPS = int(os.environ.get("JT_NOTEBOOK_STEPS", 300))  # the test suite runs this with fewer steps
WIDTHS = [32, 64, 128, 256]
LRS = [0.03, 0.1, 0.3, 1.0]

ds = data.digits()
print(ds)

# %% [markdown]
# One `Sweep` describes the whole grid. The model is a function of the width; the engine
# groups widths into buckets, builds each bucket at its largest width and runs the
# narrower ones inside it, exactly, by masking.

# %%
results = {}
for param in ("sp", "mup"):
  s = sweep.Sweep(model=lambda w: nn.mlp(ds.input_shape, w, 2, 10), data=ds,
                  grid=dict(seed=[0, 1], width=WIDTHS, lr=LRS), parametrization=param,
                  steps=STEPS, record="log:10")
  results[param] = sweep.run(s)
  print(param, "buckets:", results[param].attrs["buckets"],
        "compile %.1fs run %.1fs" % (results[param].attrs["compile_seconds"],
                                     results[param].attrs["run_seconds"]))

# %% [markdown]
# The results are an `xarray.Dataset` with dimensions (seed, width, lr, step).

# %%
final = {p: r.train_loss.isel(step=-1).mean("seed") for p, r in results.items()}
for p, f in final.items():
  best = f.fillna(float("inf")).idxmin("lr")
  print(p, "best lr per width:", dict(zip(WIDTHS, best.values.tolist())))

# %%
for p, r in results.items():
  paths = plots.save_default_figures(r, f"runs/notebook-width-sweep-{p}")
  print(p, paths[:2])
