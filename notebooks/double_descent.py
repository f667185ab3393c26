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
# * a one-hidden-layer MLP trained to convergence (full-batch Adam, MSE on one-hot
#   targets) on 1000 MNIST digits pooled to 14x14, with 20% of the training labels
#   flipped, across widths: the 0-1 test error peaks near the width where the net first
#   fits every noisy label, at about `n x classes` parameters (Belkin et al. 2019), and
#   falls on both sides; without label noise the peak is gone.
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
STEPS = int(os.environ.get("JT_NOTEBOOK_STEPS", 1500))
cfg = dd.Config(steps=STEPS)
if SMALL:
  cfg = dd.Config(seeds=1, n_train=20, n_test=50, features=(5, 10, 20, 40, 80),
                  ridges=(0.0, 1e-2, 10.0), mlp_n_train=100, mlp_n_test=100, mlp_pool=4,
                  widths=(2, 8, 32), steps=STEPS, record=3)
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
# it; the optimal ridge and one ridge fixed at every `p` (the control) have no peak and
# still predict better than zero; with label noise
# the MLP's 0-1 test error peaks near the width where it starts to fit every noisy label
# and falls on both sides, and without label noise (the control) it does not.

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

# %% [markdown]
# The MLP's threshold in parameters: a one-hidden-layer net of width `w` on `d` inputs has
# `w (d + 1) + K (w + 1)` parameters. With MSE on one-hot targets it must fit `n K`
# numbers, and it first fits every noisy label near `n K` parameters.

# %%
c = dd.mlp_curves(ds)
for ln in ds.label_noise.values:
  w_int = dd.interpolation_width(c["train_acc"].sel(label_noise=ln))
  print(f"label noise {ln:g}: fits the training labels from width {w_int:g} "
        f"({dd.params_per_nk(ds, w_int):.2f} n K parameters)")
print((ds.num_params / (cfg.mlp_n_train * ds.attrs["mlp_num_classes"])).to_pandas().round(2))
