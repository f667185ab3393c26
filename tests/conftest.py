"""Suite-wide JAX settings: implicit rank promotion is an error, as in neural-tangents' and equinox's suites.

A conftest module is imported by every pytest process, xdist workers included,
and the environment variable carries the setting into the subprocesses tests
start (the CLI, notebooks, multi-host workers), so it holds however the suite
is run and wherever the package's code runs.
"""

import os

import jax

os.environ["JAX_NUMPY_RANK_PROMOTION"] = "raise"
jax.config.update("jax_numpy_rank_promotion", "raise")
