# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Training on noisy labels: memorization, early stopping, and anchoring to init
#
# With a fraction of the training labels wrong, an overparametrized network first learns
# the clean pattern (test accuracy peaks early), then memorizes the wrong labels and its
# test accuracy falls. Hu, Li & Yu (2020) regularize by the distance to initialization,
# $\frac{\lambda}{2}\|\theta-\theta_0\|^2$ (motivated by the NTK: a wide network that
# stays near its initialization is a kernel machine, and a kernel machine with a ridge
# does not interpolate noise); like early stopping, it keeps the accuracy. We train an
# MLP on MNIST with 40% of the labels replaced, with and without the regularizer, and on
# clean labels (the control), all in one sweep.
#
# `jupytext --to notebook notebooks/noisy_labels.py` turns this file into a notebook.

# %%
import os

import numpy as np

from jaxtheory.experiments import noisy_labels as nl

# The test suite sets JT_NOTEBOOK_STEPS and gets a tiny problem (digits, no files needed).
SMALL = "JT_NOTEBOOK_STEPS" in os.environ
STEPS = int(os.environ.get("JT_NOTEBOOK_STEPS", 3000))
cfg = nl.Config(steps=STEPS)
if SMALL:
  cfg = nl.Config(dataset="digits", per_class=30, n_test=300, seeds=1, width=32, steps=STEPS,
                  batch_size=50, record=6)
cfg

# %% [markdown]
# `run` returns an `xarray.Dataset` with dims (seed, label_noise, anchor, step); the
# training accuracy is measured on the noisy labels the network is trained on.

# %%
ds = nl.run(cfg)
print(ds.test_acc.mean("seed").isel(step=slice(None, None, 3)).to_dataframe()["test_acc"]
      .unstack("step").round(3))
for label, value in nl.summary(ds):
  print(f"{label:>28}  {value}")

# %% [markdown]
# The signature: with noisy labels, plain training fits them and loses its early test
# accuracy; anchoring to init ends well above it without fitting the noise; early
# stopping is the peak itself. With clean labels nothing is lost.

# %%
for check in nl.signature(ds):
  print(check.line())

# %%
print(nl.figures(ds, "runs/notebook-noisy-labels"))

# %% [markdown]
# How much of the noise each network fits: its training accuracy on the noisy labels
# against the fraction of clean labels. A network that learned only the clean pattern
# is right on the clean 60% and wrong on (almost all of) the rest.

# %%
nz = float(ds.label_noise.max())
for a in ds.anchor.values:
  acc = float(ds.train_acc.sel(label_noise=nz, anchor=a).isel(step=-1).mean())
  print(f"anchor {a:g}: train accuracy on noisy labels {100 * acc:.1f}% "
        f"(clean fraction {100 * (1 - nz):.0f}%, memorized {100 * max(acc - (1 - nz), 0) / nz:.0f}% "
        "of the wrong labels)")
print(np.round(ds.test_acc.sel(label_noise=nz).isel(step=-1).mean("seed").values, 3))
