# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Spectral bias
#
# Rahaman et al. (2019) fit a sum of sinusoids with a ReLU MLP and watch the
# residual's Fourier spectrum: the low frequencies are learned first. In the kernel
# regime the reason is the network's NTK: gradient descent shrinks the residual along
# each eigenvector at a rate proportional to its eigenvalue, and the NTK's eigenvalues
# fall with frequency. Tancik et al. (2020) turn this around: random Fourier features
# of scale $\sigma$ in front of an MLP widen the kernel's spectrum, so a coordinate
# network can fit an image's detail; too small a $\sigma$ blurs, too large a $\sigma$
# fits the training pixels and interpolates noise between them.
#
# `jupytext --to notebook notebooks/spectral_bias.py` turns this file into a notebook.

# %%
import os

import numpy as np

from jaxtheory.experiments import spectral_bias as sb

# The test suite sets JT_NOTEBOOK_STEPS and gets a tiny problem.
SMALL = "JT_NOTEBOOK_STEPS" in os.environ
STEPS = int(os.environ.get("JT_NOTEBOOK_STEPS", 2000))
cfg = sb.Config(steps=STEPS)
if SMALL:
  cfg = sb.Config(seeds=1, width=32, depth=2, steps=STEPS, record=10, n_points=32,
                  freqs=(1, 2, 4), sigmas=(0.0, 1.0, 30.0), image_size=16, image_width=32,
                  image_depth=2, image_steps=STEPS, num_fourier=16)
cfg

# %% [markdown]
# `run` trains both parts as sweeps. `residual_power` is the Fourier power of the
# training residual at each target frequency, recorded inside the compiled program;
# `halving` is the step its amplitude first falls to half its initial value.
# `kernel_*` is gradient descent in function space with the MLP's infinite-width NTK
# (same learning rate and momentum), `flat_*` the same with every eigenvalue set to
# the NTK's mean.

# %%
ds = sb.run(cfg)
for label, value in sb.summary(ds):
  print(f"{label:>26}  {value}")

# %% [markdown]
# The signature: in every seed the halving step rises with frequency, in the order of
# the NTK's eigenvalues on the sinusoids; kernel regression with the NTK has the same
# order, the flat kernel none. For the image, the test PSNR on held-out pixels peaks
# at an intermediate $\sigma$, and the plain MLP ($\sigma \to 0$) blurs.

# %%
for check in sb.signature(ds):
  print(check.line())

# %%
print(sb.figures(ds, "runs/notebook-spectral-bias"))

# %% [markdown]
# How much faster each frequency goes for the NTK than for the finite network, and how
# the eigenvalues fall with frequency (a 1-D ReLU NTK decays roughly like $k^{-2}$):

# %%
k = ds.freq.values
lam = ds.ntk_rayleigh.values
print("log-log slope of the NTK eigenvalue against frequency:",
      round(float(np.polyfit(np.log(k), np.log(lam), 1)[0]), 2))
print("MLP halving step / NTK regression halving step:",
      np.round(ds.halving.mean("seed").values / ds.kernel_halving.values, 2))
