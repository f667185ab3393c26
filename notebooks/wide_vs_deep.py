# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Wide vs deep: the block structure of layer-by-layer CKA
#
# Nguyen, Raghu & Kornblith (2021) compare every pair of layers of ResNets of growing width
# and depth by linear CKA. Large models (relative to their training set) show a *block*:
# a run of consecutive layers with nearly identical representations, dominated by their
# first principal component (removing it removes the block), different from seed to seed
# while the early layers agree. Small models show none. Here: residual MLPs on a small
# MNIST subset, the CKA matrices recorded inside the compiled sweep at init and after
# training, and the cross-seed matrices from the trained parameters.
#
# `jupytext --to notebook notebooks/wide_vs_deep.py` turns this file into a notebook.

# %%
import os

import numpy as np

from jaxtheory.experiments import wide_vs_deep as W
from jaxtheory.probes.similarity import find_block

# The test suite sets JT_NOTEBOOK_STEPS and gets a tiny problem (digits, no files needed).
SMALL = "JT_NOTEBOOK_STEPS" in os.environ
STEPS = int(os.environ.get("JT_NOTEBOOK_STEPS", 400))
cfg = W.Config(steps=STEPS)
if SMALL:
  cfg = W.Config(dataset="digits", per_class=10, n_probe=32, seeds=2, widths=(4, 8),
                 depths=(1, 3), steps=STEPS, record=2)
cfg

# %% [markdown]
# `run` returns dims (depth, seed, width, step): `cka` and `cka_nopc` (the CKA matrix before
# and after projecting every layer's first PC out) with trailing axes (layer, layer_b),
# `pc_share` per layer, and `cross_cka` (trained, against the next seed).

# %%
ds = W.run(cfg)
d, w = int(ds.depth.max()), int(ds.width.max())
L = d + 1
M = ds.cka.sel(depth=d, width=w).isel(seed=0, step=-1).values[:L, :L]
print(f"CKA matrix of the largest model (depth {d}, width {w}), seed 0, trained:")
print(np.round(M, 2))
for thr in (0.9, 0.95, 0.99):
  print(f"largest block at CKA >= {thr}: {find_block(M, thr)}")
for label, value in W.summary(ds):
  print(f"{label:>24}  {value}")

# %% [markdown]
# The signature checks: a block in the largest model, its first PC's share, its removal,
# the seeds' disagreement inside it, and the controls (the smallest model, and every model
# at init).

# %%
for check in W.signature(ds):
  print(check.line())

# %%
print(W.figures(ds, "runs/notebook-wide-vs-deep"))
