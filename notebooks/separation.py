# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # The law of data separation
#
# He & Su (2023) measure how well each layer of a network separates the classes by
# the *separation fuzziness* $D_l = \mathrm{Tr}(\Sigma_W^l \Sigma_B^{l+})$ of its
# features on the training set, and find that a well-trained network separates at a
# constant rate per layer: $D_l \approx \rho^l D_0$, so $\log D_l$ is a straight line in
# $l$. We train 6-layer MLPs on a balanced subset of Fashion-MNIST and record $D_l$ of
# every hidden layer inside the compiled sweep. The control is the same networks at
# initialization: random ReLU layers do not separate, and there $D_l$ *rises* with depth.
#
# `jupytext --to notebook notebooks/separation.py` turns this file into a notebook.

# %%
import os

import jax
import numpy as np

from jaxtheory.experiments import separation as sep
from jaxtheory.probes.separation import fisher_ratio, layer_features

# The test suite sets JT_NOTEBOOK_STEPS and gets a tiny problem (digits, no files needed).
SMALL = "JT_NOTEBOOK_STEPS" in os.environ
STEPS = int(os.environ.get("JT_NOTEBOOK_STEPS", 1500))
cfg = sep.Config(steps=STEPS)
if SMALL:
  cfg = sep.Config(dataset="digits", per_class=20, n_test=200, seeds=1, widths=(32,), depth=4,
                   steps=STEPS, record=4)
cfg

# %% [markdown]
# `run` returns an `xarray.Dataset` with dims (seed, width, step); `fuzziness` has a
# trailing `layer` axis, and `log_ratio` / `r2` are the straight-line fit of
# $\log D_l$ against $l$ at every recording point.

# %%
ds, groups = sep.run(cfg, return_params=True)
print("log D_l of seed 0 at init and at the end:")
print(np.log(ds.fuzziness.isel(width=0, seed=0, step=[0, -1])).to_pandas().round(2))
for label, value in sep.summary(ds):
  print(f"{label:>18}  {value}")

# %% [markdown]
# The signature: every run fits its training set, and after training $\log D_l$ is
# linear in $l$ ($R^2 \ge 0.9$) and falling ($\rho \le 0.9$); at initialization it is not.

# %%
for check in sep.signature(ds):
  print(check.line())

# %%
print(sep.figures(ds, "runs/notebook-separation"))

# %% [markdown]
# The same story in Fisher's scalar ratio $\mathrm{Tr}\,\Sigma_B / \mathrm{Tr}\,\Sigma_W$,
# computed here from the trained parameters with the probes (larger is more separated):
# it grows layer after layer in the trained networks.

# %%
data_ = sep.load_data(cfg)
g = groups[0]
for i in range(len(g.runs)):
  params, ctx = jax.tree.map(lambda a, i=i: a[i], (g.params, g.ctx))
  feats = layer_features(g.model, params, data_.x_train, ctx)
  ratios = [float(fisher_ratio(H, data_.y_train, data_.num_classes)) for H in feats]
  print(f"seed={g.coords['seed'][i]} width={g.coords['width'][i]}: Fisher ratio by layer",
        np.round(ratios, 3))
