"""jaxtheory: a JAX toolkit for the science of deep learning.

Subpackages: :mod:`jaxtheory.nn` (models, parametrizations), :mod:`jaxtheory.train`
(one run), :mod:`jaxtheory.sweep` (grids of runs), :mod:`jaxtheory.data`,
:mod:`jaxtheory.plots`, :mod:`jaxtheory.experiments`, :mod:`jaxtheory.kernels`,
:mod:`jaxtheory.probes`, :mod:`jaxtheory.limits` (finite width beside its kernel limit). Importing jaxtheory turns on
the persistent compilation cache (:mod:`jaxtheory.compile_cache`).
"""

from jaxtheory import compile_cache

compile_cache.quiet_loader_logs()  # before jax loads: it reads the log level once

# pylint: disable=wrong-import-position
from jaxtheory import data, nn, sweep, train

compile_cache.enable()

__version__ = "0.1.0"


def __getattr__(name: str):
  # Modules over kernels and probes load on first use, so importing jaxtheory stays light.
  if name in ("limits", "kernels", "probes", "experiments", "plots", "stax", "nt"):
    import importlib  # pylint: disable=import-outside-toplevel
    return importlib.import_module(f"jaxtheory.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
