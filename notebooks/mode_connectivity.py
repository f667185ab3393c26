# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Linear mode connectivity and permutation symmetry
#
# Two MLPs trained on MNIST from different random seeds reach about the same loss, yet
# the straight line between their weights climbs over a loss barrier (Frankle et al.
# 2020). Entezari et al. (2022) conjecture that the barrier is mostly an artefact of the
# permutation symmetry of hidden units; Ainsworth et al. (2023, Git Re-Basin) align the
# units of B to those of A by *weight matching* and find the barrier nearly gone. We
# train pairs of MLPs at several widths in one sweep, and measure the training loss
# along the line naively, after weight matching, and after a random permutation (the
# control). Children spawned from one early checkpoint, differing only in their SGD
# noise, are connected without matching (Frankle et al.'s stability to SGD noise).
#
# `jupytext --to notebook notebooks/mode_connectivity.py` turns this file into a notebook.

# %%
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxtheory import nn
from jaxtheory.experiments import mode_connectivity as mc
from jaxtheory.probes import connectivity as C

# The test suite sets JT_NOTEBOOK_STEPS and gets a tiny problem (digits, no files needed).
SMALL = "JT_NOTEBOOK_STEPS" in os.environ
STEPS = int(os.environ.get("JT_NOTEBOOK_STEPS", 2000))
cfg = mc.Config(steps=STEPS)
if SMALL:
  cfg = mc.Config(dataset="digits", per_class=30, pairs=1, widths=(8, 16), steps=STEPS,
                  spawn_step=STEPS // 4, batch_size=50, record=3, alphas=5)
cfg

# %% [markdown]
# `run` returns the training curves (dims seed, width, step) with `loss_path` along each
# linear path, dims (pair, width, path, alpha), and the barriers (pair, width, path).

# %%
ds = mc.run(cfg)
print(ds.barrier.mean("pair").to_pandas().round(3))
for label, value in mc.summary(ds):
  print(f"{label:>22}  {value}")

# %% [markdown]
# The signature: a naive barrier between seeds; weight matching removes most of it at
# the widest width, more the wider the net; a random permutation does not; spawned
# children connect.

# %%
for check in mc.signature(ds):
  print(check.line())

# %%
print(mc.figures(ds, "runs/notebook-mode-connectivity"))

# %% [markdown]
# Weight matching recovers a planted permutation exactly: permute the hidden units of a
# network at random, and matching finds the inverse, so the barrier of the pair is zero.

# %%
data_ = mc.load_data(cfg)
m = nn.mlp(data_.input_shape, 32, cfg.depth, data_.num_classes)
A = m.init(jax.random.key(0))
B = C.apply_permutation(A, C.random_permutation(jax.random.key(1), A))
perms = C.weight_matching(A, B)
loss = lambda p: jnp.mean((m.apply(p, data_.x_train) - m.apply(A, data_.x_train)) ** 2)
print("barrier before matching:", float(C.barrier(loss, A, B)),
      "after:", float(C.barrier(loss, A, C.apply_permutation(B, perms))))
print("recovered the planted permutation:",
      all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in
          zip(jax.tree.leaves(C.apply_permutation(B, perms)), jax.tree.leaves(A))))
