# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # The platonic representation: competent networks agree
#
# Huh, Cheung, Wang & Isola (2024) argue that networks trained on data converge towards a
# shared representation of it, and the more so the better they are at their task. They
# measure agreement by *mutual k-nearest neighbours*: for each input, how many of its k
# nearest neighbours in one network's representation are also among its k nearest in the
# other's. We train MLPs of several widths and depths from several seeds, and a Flax linen
# MLP, on MNIST; compare their penultimate representations on held-out images; and repeat
# the comparison with the same networks untrained (the control).
#
# `jupytext --to notebook notebooks/platonic.py` turns this file into a notebook.

# %%
import os

import jax
import numpy as np

from jaxtheory.experiments import platonic as pl
from jaxtheory.probes import similarity as S

# The test suite sets JT_NOTEBOOK_STEPS and gets a tiny problem (digits, no files needed).
SMALL = "JT_NOTEBOOK_STEPS" in os.environ
STEPS = int(os.environ.get("JT_NOTEBOOK_STEPS", 800))
cfg = pl.Config(steps=STEPS)
if SMALL:
  cfg = pl.Config(dataset="digits", per_class=20, n_eval=100, k=5, widths=(8, 32), depths=(1,),
                  flax_width=16, steps=STEPS, batch_size=50, record=2, bootstrap=200)
cfg

# %% [markdown]
# The metric first. Unrelated representations share `k/(n-1)` of their neighbours on
# average (the chance level); a representation and any rotation or rescaling of it share
# all of them.

# %%
X = jax.random.normal(jax.random.key(0), (6, 200, 16))
idx = jax.vmap(lambda x: S.knn_indices(x, 10))(X)
A = np.asarray(S.mutual_knn_matrix(idx))
print("random pairs:", A[np.triu_indices(6, 1)].mean().round(4),
      "chance:", round(S.mutual_knn_chance(200, 10), 4))
print("rescaled copy:", float(S.mutual_knn(X[0], 3.0 * X[0], 10)))

# %% [markdown]
# `run` trains every network (one sweep per depth, and one for the Flax model) and returns
# the alignment matrix of all pairs, trained and untrained, with each network's accuracy.

# %%
ds = pl.run(cfg)
for label, value in pl.summary(ds):
  print(f"{label:>34}  {value}")

# %% [markdown]
# The signature: the pairs of more accurate networks align more (a rank correlation, with
# a bootstrap interval over networks), and the widest networks agree more than the
# narrowest. The control: untrained networks' alignment does not follow their accuracy.
# It does rise with width: a wide random network's features approach a fixed kernel of
# the inputs, so size alone is no evidence of learning.

# %%
for check in pl.signature(ds):
  print(check.line())

# %%
print(pl.figures(ds, "runs/notebook-platonic"))
