# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Implicit low-rank bias of deep matrix factorization
#
# We observe 30% of the entries of a 30 x 30 rank-3 matrix and fit the observed ones with
# products `W_1 ... W_N` of N = 1 to 4 matrices, trained by gradient descent from a small
# initialization (Arora, Cohen, Hu & Luo 2019). Nothing in the loss asks for low rank, yet
# the deeper the product the lower the rank of what it learns, and the better it predicts
# the entries it never saw. Depth 1 is the control: it only moves the observed entries.
# A nuclear-norm minimization is the classical convex baseline.
#
# `jupytext --to notebook notebooks/matrix_completion.py` turns this file into a notebook.

# %%
import os

import numpy as np

from jaxtheory.experiments import matrix_completion as mc

# The test suite sets JT_NOTEBOOK_STEPS and gets a tiny problem.
SMALL = "JT_NOTEBOOK_STEPS" in os.environ
STEPS = int(os.environ.get("JT_NOTEBOOK_STEPS", 3000))
cfg = mc.Config(steps=STEPS)
if SMALL:
  cfg = mc.Config(n=8, rank=2, depths=(1, 2), seeds=1, steps=STEPS, record=10)
cfg

# %% [markdown]
# Depth changes the parameter pytree, so each depth is one sweep over seeds (one compiled
# program); `run` concatenates them along a `depth` axis.

# %%
ds = mc.run(cfg)
for label, value in mc.summary(ds):
  print(f"{label:>14}  {value}")

# %%
for check in mc.signature(ds):
  print(check.line())

# %% [markdown]
# Incremental learning: the steps at which each of the top singular values reaches half
# its final value (interpolated between recordings). Depth 1 learns them all at once;
# deeper products learn them one by one, largest first, depth 3 and 4 about equally spread
# (the depth factor cancels in the ratio of two half-times).

# %%
t = mc.stagger(ds)
print("true singular values:", np.round(ds.true_singular_values.values, 2))
for d in ds.depth.values:
  print(f"depth {d}: half-times {np.round(t.sel(depth=d).values, 1).tolist()}")

# %%
print(mc.figures(ds, "runs/notebook-matrix-completion"))
