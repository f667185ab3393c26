# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Weight decay, the norm of normalized layers, and their spectra
#
# A weight followed by a normalization is scale-invariant: the network computes the
# same function from $cW$ as from $W$. Its gradient is orthogonal to $W$, so gradient
# steps only grow $\|W\|$ while weight decay shrinks it, until the two balance
# (van Laarhoven 2017; Wan et al. 2021; Kosson et al. 2024, "rotational equilibrium").
# With AdamW, whose update has a fixed size, the balance is
# $\|W\| = \sqrt{\eta C/(2\lambda)}$: slope $1/2$ in $\eta/\lambda$. With SGD, whose
# update shrinks as $1/\|W\|$, it is $\|W\| \propto (\eta/\lambda)^{1/4}$. Both rotate $W$
# by $\sqrt{2\eta\lambda}$ per step, so $\eta\lambda$ sets what is learned and
# $\eta/\lambda$ the norm. We sweep the two independently, on a plain and a residual MLP
# whose hidden weights each feed a layer norm without gain, and record every layer's
# norm, stable rank and effective rank inside the compiled sweep. The control: the
# same runs without weight decay.
#
# `jupytext --to notebook notebooks/weight_decay_spectra.py` turns this file into a notebook.

# %%
import os

import numpy as np

from jaxtheory.experiments import weight_decay_spectra as wds

# The test suite sets JT_NOTEBOOK_STEPS and gets a tiny problem (digits, no files needed).
SMALL = "JT_NOTEBOOK_STEPS" in os.environ
STEPS = int(os.environ.get("JT_NOTEBOOK_STEPS", wds.Config.steps))
cfg = wds.Config(steps=STEPS)
if SMALL:
  cfg = wds.Config(dataset="digits", per_class=20, n_test=200, seeds=1, width=16, depth=2,
                   lr_times_wd=(0.02,), lr_over_wd=(0.001, 0.01), sgd_lr_times_wd=(0.02,),
                   sgd_lr_over_wd=(0.1, 1.0), steps=STEPS, record=6)
cfg

# %% [markdown]
# `run` returns an `xarray.Dataset` with dims (arch, seed, lr_times_wd, lr_over_wd, decay,
# step) and a trailing `layer` axis (the last layer is the readout, which is *not*
# scale-invariant); the SGD sweep's variables carry the prefix `sgd_`.

# %%
ds = wds.run(cfg)
eq = wds.equilibrium(ds)
print("equilibrium ||W|| of the plain MLP (seed mean), with weight decay:")
print(eq.norm.sel(arch="mlp", decay=1.0).mean("seed").to_dataframe().norm.unstack("layer").round(3))
for label, value in wds.summary(ds):
  print(f"{label:>32}  {value}")

# %% [markdown]
# The signature: an equilibrium in every run with weight decay; AdamW's norm grows as
# $(\eta/\lambda)^{1/2}$, hardly depending on $\eta\lambda$; at a fixed learning rate the
# ranks fall with weight decay (the effective rank of every layer, the stable rank of the first;
# runs that Adam collapsed onto one direction left out); the plain and residual networks differ in
# how much; SGD's exponent is $1/4$; and without weight decay there is no equilibrium.

# %%
for check in wds.signature(ds):
  print(check.line())

# %%
print(wds.figures(ds, "runs/notebook-weight-decay-spectra"))

# %% [markdown]
# The exponents per layer, plain and residual: the normalized layers follow the law, the
# readout (last layer), whose scale the network does see, does not.

# %%
for (arch, layer), fit in wds.law_fits(ds).items():
  k, k2 = fit.exponents
  print(f"{arch:>7} layer {layer}: k {k:.3f}, k2 {k2:+.3f}, R^2 {fit.r2:.3f}")
print("d log rank / d log wd at fixed lr, runs with weight decay (NaN: the grid cannot vary wd at"
      " fixed lr):")
for kind in wds.RANKS:
  print(kind, {key: round(f.exponents[1], 3) for key, f in wds.rank_fits(ds, kind).items()})
print("rank with / without weight decay, seed and grid mean:")
for kind in wds.RANKS:
  print(kind, np.exp(wds.rank_effect(ds, kind).mean("seed")).round(3).to_pandas())
print("twins without weight decay collapsed onto one direction (stable rank < 2), of",
      wds.twin_collapsed(ds).isel(layer=0).size, "per layer:")
print(wds.twin_collapsed(ds).sum(["seed", "lr_times_wd", "lr_over_wd"]).to_pandas())
