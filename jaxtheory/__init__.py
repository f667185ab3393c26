"""jaxtheory: a JAX toolkit for the science of deep learning.

Subpackages: :mod:`jaxtheory.nn` (models, parametrizations), :mod:`jaxtheory.train`
(one run), :mod:`jaxtheory.sweep` (grids of runs), :mod:`jaxtheory.data`,
:mod:`jaxtheory.plots`, :mod:`jaxtheory.experiments`. Importing jaxtheory turns on
the persistent compilation cache (:mod:`jaxtheory.compile_cache`).
"""

from jaxtheory import compile_cache

compile_cache.quiet_loader_logs()  # before jax loads: it reads the log level once

# pylint: disable=wrong-import-position
from jaxtheory import data, nn, sweep, train

compile_cache.enable()

__version__ = "0.1.0"
