# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Lazy vs rich training
#
# Chizat, Oyallon & Bach (2019) showed that a network whose output is scaled up by
# $\alpha$ (here: divided by the richness $\gamma = 1/\alpha$), trained with a learning
# rate scaled by $\gamma^2$, starts from the same function-space dynamics for every
# $\gamma$ but moves its parameters only by $O(\gamma)$: as $\gamma \to 0$ it trains like
# its linearization, kernel regression with the tangent kernel at init ("lazy"). At
# larger $\gamma$ (Geiger et al. 2020; Bordelon & Pehlevan 2022, mean-field
# parametrization) the kernel moves and the network learns features ("rich").
#
# We sweep $\gamma$ at a fixed width on a task where features matter, $y = x_1 x_2$ with
# 16-dimensional Gaussian inputs, recording the tangent kernel inside the compiled
# sweep. Every network is centred by the antisymmetric trick (output zero at init).
#
# `jupytext --to notebook notebooks/lazy_rich.py` turns this file into a notebook.

# %%
import os

import numpy as np

from jaxtheory import plots
from jaxtheory.experiments import lazy_rich as lr

# The test suite sets JT_NOTEBOOK_STEPS and gets a tiny problem.
SMALL = "JT_NOTEBOOK_STEPS" in os.environ
STEPS = int(os.environ.get("JT_NOTEBOOK_STEPS", 1000))
cfg = lr.Config(steps=STEPS)
if SMALL:
  cfg = lr.Config(gammas=(0.01, 0.1, 1.0), seeds=1, width=32, n_train=64, n_test=64,
                  steps=STEPS, record=4, n_probe=8)
cfg

# %% [markdown]
# `run` returns an `xarray.Dataset` with dims (seed, gamma, step): the losses, the
# tangent kernel on the probe inputs (`ntk_probe`), its relative movement and its
# alignment with the target, the distance of the test outputs from the gradient-flow
# prediction of the initial kernel (`dev_linear`) and, per run, how far the weights
# travelled (`weight_movement`).

# %%
ds = lr.run(cfg)
for label, value in lr.summary(ds):
  print(f"{label:>24}  {value}")

# %% [markdown]
# The signature: weights and kernel move as powers of $\gamma$; at the smallest
# $\gamma$ nothing moves and the network is its initial-kernel prediction; at the
# largest the kernel moves by $O(1)$, aligns with the target, and the test error drops.

# %%
for check in lr.signature(ds):
  print(check.line())

# %%
print(lr.figures(ds, "runs/notebook-lazy-rich"))

# %% [markdown]
# Along training: the lazy networks stay on their kernel's prediction, the rich ones
# leave it early, as their kernel starts to move.

# %%
ax = plots.metric_vs_step(ds, "dev_linear", "gamma")
ax.set_yscale("symlog", linthresh=1e-3)
print(plots.save_figure(ax, "runs/notebook-lazy-rich/dev_linear.png"))

# %% [markdown]
# What the rich kernel learned: the share of the centred target $y$ in the top
# eigenvectors of the final tangent kernel on the probe inputs, at each end of the sweep.
# A kernel that has learned the relevant directions puts the target in its top modes.

# %%
y = lr.load_data(cfg).y_train[: ds.sizes["probe_1"], 0]
y = y - y.mean()
for g in (ds.gamma.values.min(), ds.gamma.values.max()):
  for when, step in (("init", 0), ("end", -1)):
    K = ds.ntk_probe.sel(gamma=g).isel(seed=0, step=step).values
    n = len(K)
    H = np.eye(n) - 1.0 / n
    _, vecs = np.linalg.eigh(H @ K @ H)
    top = vecs[:, ::-1][:, :3]
    share = float(np.sum((top.T @ y) ** 2) / np.sum(y**2))
    print(f"gamma={g:g} {when}: {100 * share:.0f}% of y in the top 3 kernel eigenvectors")
