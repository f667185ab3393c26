# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Neural collapse in the terminal phase of training
#
# Papyan, Han & Donoho (2020) found that classifiers trained far past zero training
# error keep organising their last-layer features: each class collapses to its mean
# (NC1), the centred class means form a simplex equiangular tight frame (NC2), the
# readout aligns with them (NC3) and the network classifies by the nearest class centre
# (NC4). We train an MLP with weight decay and MSE on a class subset of MNIST (digits
# when the MNIST files are not installed) and record all four along training, inside the
# compiled sweep, at every seed and learning rate. The smallest learning rate is the
# control: it reaches zero training error late or never, and its features do not
# collapse.
#
# `jupytext --to notebook notebooks/neural_collapse.py` turns this file into a notebook.

# %%
import os

import jax
import numpy as np

from jaxtheory.experiments import neural_collapse as nc
from jaxtheory.probes.collapse import class_stats, penultimate

# The test suite sets JT_NOTEBOOK_STEPS and gets a tiny problem.
SMALL = "JT_NOTEBOOK_STEPS" in os.environ
STEPS = int(os.environ.get("JT_NOTEBOOK_STEPS", 10000))
cfg = nc.Config(steps=STEPS)
if SMALL:
  cfg = nc.Config(dataset="digits", classes=(0, 1, 2), per_class=20, seeds=1, width=16,
                  steps=STEPS, record=8)
cfg

# %% [markdown]
# `run` returns an `xarray.Dataset` with dims (seed, lr, step); `collapse_metrics` has a
# trailing `collapse` axis (nc1, nc2_etf, nc2_equinorm, nc2_equiangle, nc3, nc4).

# %%
ds, groups = nc.run(cfg, return_params=True)
print("dataset:", ds.attrs["dataset"])
print(ds.collapse_metrics.sel(lr=max(cfg.lrs)).mean("seed").isel(step=slice(None, None, 4))
      .to_pandas().round(4))
for label, value in nc.summary(ds):
  print(f"{label:>16}  {value}")

# %% [markdown]
# The signature: in the terminal phase (zero training error to the end) NC1 ends at least
# 100-fold below its value at initialization and does not rise after zero error, and the
# class means end close to a simplex ETF (distance <= 0.25, at least 2x closer than at
# initialization); the control spends less time in the terminal phase and collapses less.

# %%
for check in nc.signature(ds):
  print(check.line())

# %%
print(nc.figures(ds, "runs/notebook-neural-collapse"))

# %% [markdown]
# The collapsed geometry itself: cosines between the centred class means of the final
# network approach `-1/(C-1)` (a simplex ETF), and their norms become equal.

# %%
g = groups[0]
data_ = nc.load_data(cfg)
features = penultimate(g.model)
C = data_.num_classes
for i in range(len(g.runs)):
  params = jax.tree.map(lambda a, i=i: a[i], g.params)
  ctx = jax.tree.map(lambda a, i=i: a[i], g.ctx)
  H, _ = features(params, data_.x_train, ctx)
  M = np.asarray(class_stats(H, data_.y_train, C).centred_means)
  norms = np.linalg.norm(M, axis=1)
  cos = (M @ M.T) / np.outer(norms, norms)
  off = cos[~np.eye(C, dtype=bool)]
  print(f"lr={g.coords['lr'][i]:g} seed={g.coords['seed'][i]}: cosines "
        f"{off.mean():.3f} +- {off.std():.3f} (ETF: {-1 / (C - 1):.3f}); "
        f"norm CV {norms.std() / norms.mean():.3f}")
