# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # muTransfer: the best learning rate across widths, SP vs muP
#
# Yang et al. (2022, "Tensor Programs V") tune a small network and reuse its
# hyperparameters on a wide one. That works in the maximal-update parametrization
# (muP), where every layer's update keeps its size as the width grows, and fails in
# the standard one (SP), where the best learning rate falls with the width (for Adam
# roughly like 1/width). We sweep width x learning rate x seed for a Flax MLP on
# digits (muP by base shapes) and a tiny native transformer on modular addition,
# under SP and muP with Adam and SGD, and Muon in SP (the MLP; `muon_models` adds the transformer).
#
# `jupytext --to notebook notebooks/mutransfer.py` turns this file into a notebook.

# %%
import os

from jaxtheory.experiments import mutransfer as mt

# The test suite sets JT_NOTEBOOK_STEPS and gets a tiny problem.
SMALL = "JT_NOTEBOOK_STEPS" in os.environ
STEPS = int(os.environ.get("JT_NOTEBOOK_STEPS", 30))
cfg = mt.Config(steps=STEPS)
if SMALL:
  cfg = mt.Config(models=("mlp",), settings=("sp-adam", "mup-adam"), widths=(8, 16), seeds=1,
                  steps=STEPS, coord_steps=2, adam_lr=(-6.0, -4.0), per_octave=1, n_train=32)
cfg

# %% [markdown]
# `run` returns an `xarray.Dataset` with dims (model, setting, seed, width, lr_k, step);
# `log2_lr` gives each setting's learning rate per `lr_k`. The summary lists the best
# learning rate of every width (argmin of the seed-mean final training loss) and the
# drift exponent, the slope of log2(best lr) against log2(width).

# %%
ds = mt.run(cfg)
for label, value in mt.summary(ds):
  print(f"{label:>22}  {value}")

# %% [markdown]
# The signature: under muP the best learning rate stays within one grid step (a third
# of an octave) of its median over widths, and an octave below it (where the loss falls
# smoothly, away from the edge of stability) wider is better beyond the seeds' noise;
# under SP (the control) it drifts. The coordinate check, read at that same learning
# rate at `coord_steps` (by default the end of training) over the widths but the
# narrowest (`coord_widths`), judges each layer's change from its own
# initialization, h_t - h_0: flat in the width under muP (what muP promises; muP's
# readout activations themselves start like width^-1/2, printed but not judged), growing
# under SP. At the default size (the MLP at widths 16-256 with 2 seeds, the transformer at
# 8-128 on a + b mod 23 for 60 steps with 4 seeds, `transformer_seeds`) every check passes.

# %%
for check in mt.signature(ds):
  print(check.line())

# %%
print(mt.figures(ds, "runs/notebook-mutransfer"))
