# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Grokking modular addition
#
# A small network learns `c = a + b mod p` from 35% of the `p^2` pairs with full-batch
# AdamW (Power et al. 2022). With weight decay it first memorizes the training pairs
# and generalizes only much later; without weight decay it stays memorized. We follow
# Nanda et al. (2023) and watch a progress measure along the way: how much of the token
# embedding's norm sits on a few Fourier frequencies of the token axis.
#
# Every seed and weight decay trains in one compiled program (the sweep engine).
# `jupytext --to notebook notebooks/grokking.py` turns this file into a notebook.

# %%
import os

import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxtheory import probes
from jaxtheory.experiments import grokking

# The test suite sets JT_NOTEBOOK_STEPS and gets a tiny problem.
SMALL = "JT_NOTEBOOK_STEPS" in os.environ
STEPS = int(os.environ.get("JT_NOTEBOOK_STEPS", 2000))
cfg = grokking.Config(steps=STEPS)
if SMALL:
  cfg = grokking.Config(p=31, train_fraction=0.5, width=32, embed_dim=8, seeds=1,
                        steps=STEPS, record=8, fourier_k=3)
cfg

# %% [markdown]
# `run` returns an `xarray.Dataset` with dims (seed, weight_decay, step); with
# `return_params=True` it also returns every run's final parameters.

# %%
ds, groups = grokking.run(cfg, return_params=True)
for label, value in grokking.summary(ds):
  print(f"{label:>16}  {value}")

# %% [markdown]
# The signature: with weight decay, test accuracy reaches 95% many times later than
# train accuracy reaches 99%; the control (no weight decay) never gets there.

# %%
for check in grokking.signature(ds):
  print(check.line())

# %%
out = "runs/notebook-grokking"
print(grokking.figures(ds, out))

# %% [markdown]
# The Fourier spectrum of the final embeddings: after grokking, the power sits on a
# handful of key frequencies; the memorizing network's embedding stays spread out.

# %%
g = groups[0]
fig = Figure(figsize=(8, 3), layout="constrained")
FigureCanvasAgg(fig)
axes = fig.subplots(1, len(g.runs), sharey=True, squeeze=False)[0]
for i, ax in enumerate(axes):
  params = jax.tree.map(lambda a, i=i: a[i], g.params)
  E = grokking.token_embedding(params, cfg.p + 1)[:cfg.p]
  power = np.asarray(probes.spectra.fourier_power(E))[1:]
  ax.bar(np.arange(1, len(power) + 1), power / power.sum(), color="C0")
  wd, seed = g.coords["weight_decay"][i], g.coords["seed"][i]
  top = 1 + np.argsort(power)[::-1][:cfg.fourier_k]
  ax.set_title(f"weight decay {wd:g}, seed {seed}: top {sorted(top.tolist())}",
               fontsize="small")
  ax.set_xlabel("frequency")
axes[0].set_ylabel("fraction of embedding power")
fig.savefig(f"{out}/embedding_spectrum.png", dpi=120)
