# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Gradient descent at the edge of stability
#
# Cohen et al. (2021): under full-batch gradient descent with step size `lr`, the
# sharpness (the top eigenvalue of the loss Hessian) first rises during training
# (progressive sharpening) until it reaches `2/lr`, the largest curvature GD on a
# quadratic can survive. It then hovers there while the loss keeps falling, with
# spikes. We train a tanh MLP with MSE on a few hundred MNIST-1D examples at several
# learning rates in one compiled sweep; the sharpness is measured by Lanczos inside
# the training program every few steps. Learning rates are fractions of `2/S0`, with
# `S0` the sharpness at initialization (measured first), so every run starts below its
# edge whatever the architecture. The smallest learning rate is the control: its `2/lr`
# is far above anything the sharpness reaches within the budget.
#
# `jupytext --to notebook notebooks/edge_of_stability.py` turns this file into a notebook.

# %%
import os

import numpy as np

from jaxtheory.experiments import edge_of_stability as eos

# The test suite sets JT_NOTEBOOK_STEPS and gets a tiny problem.
SMALL = "JT_NOTEBOOK_STEPS" in os.environ
# Steps of the largest learning rate; the smaller one trains proportionally longer (the same
# time lr * steps), so the sweep runs 4000 steps in all.
STEPS = int(os.environ.get("JT_NOTEBOOK_STEPS", 3000))
cfg = eos.Config(steps=STEPS)
if SMALL:
  cfg = eos.Config(n_train=64, width=16, seeds=1, lrs=(0.05, 0.8), steps=STEPS,
                   sharpness_every=10, lanczos_iters=8)
cfg

# %% [markdown]
# `run` returns an `xarray.Dataset` with dims (seed, lr, step): losses, accuracies,
# `sharpness`, and the threshold `2/lr`; `lr` holds the step sizes actually used and
# `attrs['initial_sharpness']` the `S0` they were set from.

# %%
ds = eos.run(cfg)
ratio = (ds.sharpness * ds.lr / 2).mean("seed")
print("sharpness x lr / 2 (mean over seeds), every 10th recording:")
print(ratio.isel(step=slice(None, None, 10)).to_pandas().T.round(2))
for label, value in eos.summary(ds):
  print(f"{label:>28}  {value}")

# %% [markdown]
# The signature, per learning rate: the sharpness rises to `2/lr`, reaches it and turns
# back, hovers within 10% of it, and the loss keeps falling non-monotonically; the control
# never reaches its `2/lr`. A run that never reaches its edge in the budget is reported as
# such (SKIP), not as a failure of the phenomenon.

# %%
for check in eos.signature(ds):
  print(check.line())

# %%
print(eos.figures(ds, "runs/notebook-edge-of-stability"))

# %% [markdown]
# At the edge the loss is no longer monotone: the number of recording intervals over which
# it went up, before and after the sharpness first reached 90% of `2/lr`.

# %%
for (seed, lr), st in eos.eos_stats(ds).items():
  loss = ds.train_loss.sel(seed=seed, lr=lr).values
  onset = st["onset"]
  before = np.diff(loss[ds.step.values <= onset]) if np.isfinite(onset) else np.diff(loss)
  after = st["rises"] if np.isfinite(onset) else 0
  print(f"seed={seed} lr={lr:g}: onset at step {onset:.0f}; the loss rose over "
        f"{int((before > 0).sum())} intervals before it and {after} after")
