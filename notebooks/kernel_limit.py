# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # The kernel limit: lazy NTK networks, rich mean-field networks, the muP coordinate check
#
# Jacot et al. (2018) showed that an infinitely wide network in the NTK parametrization
# trained by gradient descent on the squared error is a linear model in its parameters:
# its kernel, the NTK, stays fixed, and the network's outputs follow the closed-form
# kernel gradient flow. Lee et al. (2019) found that finite networks approach that
# prediction, their deviation falling like `width^-1/2`. In the mean-field parametrization
# (Mei et al. 2018; Bordelon & Pehlevan 2022) the kernel moves by O(1) at every width:
# the network learns features. Yang et al. (2021, Tensor Programs V) check a
# parametrization by the size of every layer's activations after a few SGD steps against
# width: flat under muP, growing under standard parametrization.
#
# `jupytext --to notebook notebooks/kernel_limit.py` turns this file into a notebook.

# %%
import os

import jax
import numpy as np

from jaxtheory import data, kernels, nn
from jaxtheory.experiments import kernel_limit as kl

# The test suite sets JT_NOTEBOOK_STEPS and gets a tiny problem.
SMALL = "JT_NOTEBOOK_STEPS" in os.environ
STEPS = int(os.environ.get("JT_NOTEBOOK_STEPS", 150))
cfg = kl.Config(steps=STEPS)
if SMALL:
  cfg = kl.Config(widths=(32, 64), seeds=1, n_train=16, n_test=16, steps=STEPS, coord_steps=2)
cfg

# %% [markdown]
# Four sweeps over seed x width (NTK and mean-field training, each set beside its
# linearized and infinite-width predictions by `limits.compare`; SP and muP
# coordinate checks), joined in one dataset.

# %%
ds = kl.run(cfg)
last = ds.isel(step=-1).mean("seed")
print(last[["dev_linear", "kernel_movement"]].to_dataframe().round(4))
for label, value in kl.summary(ds):
  print(f"{label:>16}  {value}")

# %% [markdown]
# The signature: under NTK the deviation from the infinite-width prediction falls like
# `width^-1/2` and the kernel barely moves; under mean-field it moves at every width;
# the muP coordinates are flat in width while SP's grow. (With two widths and one seed,
# as in the test suite's tiny run, the fits are rough.)

# %%
for check in kl.signature(ds):
  print(check.line())

# %%
print(kl.figures(ds, "runs/notebook-kernel-limit"))

# %% [markdown]
# The analytic kernel itself: the NTK of the architecture at infinite width
# (`kernels.kernel_fn`) against the empirical NTK of finite networks at initialization
# (`kernels.empirical_ntk`, three seeds per width). Their relative difference falls
# like `width^-1/2`.

# %%
ts = data.teacher_student(n_train=cfg.n_train, n_test=cfg.n_test, input_dim=cfg.input_dim,
                          seed=0)
x = ts.x_train[:16]
ctx = nn.Ctx("ntk")
for w in ((64, 256) if SMALL else (64, 256, 1024)):
  m = nn.mlp(ts.input_shape, w, cfg.depth, ts.out_dim, b_std=0.1)
  exact = np.asarray(kernels.kernel_fn(m, ctx)(x, get="ntk"))
  errs = []
  for seed in range(2 if SMALL else 3):
    emp = kernels.empirical_ntk(lambda p, x_, m=m: m.apply(p, x_, ctx),
                                m.init(jax.random.key(seed), ctx), x)
    errs.append(np.linalg.norm(np.asarray(emp) - exact) / np.linalg.norm(exact))
  print(f"width {w:5d}: |Theta_emp - Theta_inf| / |Theta_inf| = {np.mean(errs):.3f} "
        f"+- {np.std(errs):.3f}")
