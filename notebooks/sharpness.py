# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Flat and sharp minima
#
# Keskar et al. (2017) found that large-batch SGD ends in sharper minima than
# small-batch SGD; Foret et al. (2021) built SAM to seek flat ones; Jiang et al. (2020)
# found sharpness among the better predictors of generalization, a claim later work
# found weak. We train MLPs on an MNIST subset with SAM (radius $\rho$; $\rho = 0$ is
# plain SGD) over learning rates, radii and batch sizes, every setting until it
# interpolates, and measure the top Hessian eigenvalue and the Hessian trace of every
# run's training loss at the end, all runs at once. The control compares seeds at the
# same hyperparameters: no cause changed, no flattening.
#
# `jupytext --to notebook notebooks/sharpness.py` turns this file into a notebook.

# %%
import os

from jaxtheory.experiments import sharpness as sh

# The test suite sets JT_NOTEBOOK_STEPS and gets a tiny problem (digits, no files needed).
SMALL = "JT_NOTEBOOK_STEPS" in os.environ
STEPS = int(os.environ.get("JT_NOTEBOOK_STEPS", 1000))
cfg = sh.Config(steps=STEPS)
if SMALL:
  cfg = sh.Config(dataset="digits", n_train=64, n_test=100, width=16, lrs=(0.1, 0.3),
                  rhos=(0.0, 0.1), batch_sizes=(64,), steps=STEPS, target_loss=10.0,
                  lanczos_iters=6, trace_probes=4, bootstrap=100)
cfg

# %% [markdown]
# `run` returns dims (batch_size, seed, lr, rho): `top_eigenvalue` and `hessian_trace`
# of the final training loss, `test_error`, and `converged` (the run reached the
# target train loss, so minima are compared at the same loss).

# %%
ds = sh.run(cfg)
for label, value in sh.summary(ds):
  print(f"{label:>36}  {value}")

# %% [markdown]
# The signature, over matched pairs of runs: the larger $\rho$, for plain SGD the
# larger learning rate and the smaller batch each end flatter; seed against seed does
# not. The rank correlation of sharpness with test error (in the summary above) is a
# measurement with its bootstrap interval, not a check.

# %%
for check in sh.signature(ds):
  print(check.line())

# %%
print(sh.figures(ds, "runs/notebook-sharpness"))

# %% [markdown]
# The edge of stability bounds full-batch gradient descent: its sharpness cannot stay
# above $2/\eta$. How close the full-batch SGD runs end to that bound:

# %%
full = ds.sel(batch_size=ds.batch_size.max(), rho=0.0)
for lr in full.lr.values:
  lam = float(full.top_eigenvalue.sel(lr=lr).mean())
  print(f"lr {float(lr):g}: lambda_max {lam:.3g}, 2/lr {2 / float(lr):.3g}")
