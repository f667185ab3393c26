# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Grokking modular addition, with an MLP and a transformer
#
# A small network learns `c = a + b mod 97` from 30% of the `97^2` pairs with
# full-batch AdamW (Power et al. 2022). With weight decay it first memorizes the
# training pairs and generalizes only much later; without weight decay it stays
# memorized. We follow Nanda et al. (2023) and watch a progress measure along the
# way: how much of the token embedding's norm sits on a few Fourier frequencies of
# the token axis.
#
# Two networks see the same split: an MLP on token embeddings and a one-block
# transformer (no layer norm, as in Nanda et al.). Each trains every seed and
# weight decay in one compiled program (the sweep engine); `sweep.run_over` joins
# the two along a `model` axis. `jupytext --to notebook notebooks/grokking.py`
# turns this file into a notebook.

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
STEPS = int(os.environ.get("JT_NOTEBOOK_STEPS", grokking.Config().steps))
cfg = grokking.Config(steps=STEPS)
if SMALL:
  cfg = grokking.Config(p=23, train_fraction=0.5, mlp_width=32, embed_dim=8, d_model=16,
                        num_heads=2, seeds=1, steps=STEPS, record=8, fourier_k=3)
cfg

# %% [markdown]
# `run` returns an `xarray.Dataset` with dims (model, seed, weight_decay, step);
# with `return_params=True` it also returns every run's final parameters, per model.

# %%
ds, groups = grokking.run(cfg, return_params=True)
for label, value in grokking.summary(ds):
  print(f"{label:>28}  {value}")

# %% [markdown]
# The signature, per model and seed: with weight decay, test accuracy reaches 95% many
# times later than train accuracy reaches 99% (the check reports the fraction of seeds
# that grok); the control (no weight decay) never gets there in the same number of steps.

# %%
for check in grokking.signature(ds):
  print(check.line())

# %%
out = "runs/notebook-grokking"
print(grokking.figures(ds, out))

# %% [markdown]
# The Fourier spectrum of the final embeddings: after grokking, the power sits on a
# handful of key frequencies; the memorizing network's embedding stays spread out.
# Each model finds its own key frequencies.

# %%
runs = [(m, g, i) for m, gs in groups.items() for g in gs for i in range(len(g.runs))]
fig = Figure(figsize=(4 * len(runs) // len(groups), 2.6 * len(groups)), layout="constrained")
FigureCanvasAgg(fig)
axes = fig.subplots(len(groups), len(runs) // len(groups), sharey=True, squeeze=False).ravel()
for ax, (m, g, i) in zip(axes, runs):
  params = jax.tree.map(lambda a, i=i: a[i], g.params)
  E = grokking.token_embedding(params, cfg.p + 1)[:cfg.p]
  power = np.asarray(probes.spectra.fourier_power(E))[1:]
  ax.bar(np.arange(1, len(power) + 1), power / power.sum(), color="C0")
  wd, seed = g.coords["weight_decay"][i], g.coords["seed"][i]
  top = 1 + np.argsort(power)[::-1][:cfg.fourier_k]
  ax.set_title(f"{m}, weight decay {wd:g}, seed {seed}: top {sorted(top.tolist())}",
               fontsize="small")
  ax.set_xlabel("frequency")
axes[0].set_ylabel("fraction of embedding power")
fig.savefig(f"{out}/embedding_spectrum.png", dpi=120)
