# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Double descent
#
# Test error against model size falls, rises to a peak where the model can just
# interpolate its training set, and falls again beyond it (Belkin et al. 2019;
# Nakkiran et al. 2020). We see it twice, each a single sweep:
#
# * random-features regression (Mei & Montanari 2019): a frozen random ReLU layer of `p`
#   features and a ridge readout fitted in closed form; the ridgeless test loss diverges
#   at `p = n`, and the optimal ridge removes the peak (Nakkiran et al. 2021);
# * a one-hidden-layer MLP trained to convergence on digits with 20% of its training
#   labels flipped, across widths; without label noise the peak nearly disappears.
#
# `jupytext --to notebook notebooks/double_descent.py` turns this file into a notebook.

# %%
import os

import jax
import numpy as np

from jaxtheory import data, nn
from jaxtheory.experiments import double_descent as dd
from jaxtheory.probes.collapse import features_from_apply

# The test suite sets JT_NOTEBOOK_STEPS and gets a tiny problem.
SMALL = "JT_NOTEBOOK_STEPS" in os.environ
STEPS = int(os.environ.get("JT_NOTEBOOK_STEPS", 2000))
cfg = dd.Config(steps=STEPS)
if SMALL:
  cfg = dd.Config(seeds=1, n_train=20, n_test=50, features=(5, 10, 20, 40, 80),
                  ridges=(0.0, 1e-2, 10.0), mlp_n_train=60, widths=(2, 8, 32), steps=STEPS,
                  record=3)
cfg

# %% [markdown]
# `run` returns one `xarray.Dataset`: the random-features test loss with dims
# (seed, features, ridge), and the MLP sweep's curves with dims
# (seed, width, label_noise, step).

# %%
ds = dd.run(cfg)
print(ds.rf_test_loss.median("seed").to_pandas().round(3))
for label, value in dd.summary(ds):
  print(f"{label:>26}  {value}")

# %% [markdown]
# The signature: the ridgeless peak sits at `p ~ n` and the curve falls on both sides of
# it; the optimal ridge and a large ridge (the control) have no peak; with label noise
# the MLP's test loss peaks near the width where it starts to fit every noisy label.

# %%
for check in dd.signature(ds):
  print(check.line())

# %%
print(dd.figures(ds, "runs/notebook-double-descent"))

# %% [markdown]
# Where the peak comes from: at `p = n` the feature matrix is square and its smallest
# singular value nearly vanishes, so the min-norm readout has a huge norm and fits the
# label noise with wild coefficients. The ridge bounds `1 / s_min`.

# %%
n = cfg.n_train
d = data.teacher_student(n_train=n, n_test=cfg.n_test, input_dim=cfg.input_dim,
                         noise=cfg.noise)
for p in (n // 2, n, 2 * n):
  m = nn.random_features(d.input_shape, p, 1)
  params = m.init(jax.random.key(0))
  Phi = np.asarray(features_from_apply(m.apply, params, d.x_train)) / np.sqrt(p)
  s = np.linalg.svd(Phi, compute_uv=False)
  print(f"p={p:4d}: smallest nonzero singular value {s[min(n, p) - 1]:.2e}")
