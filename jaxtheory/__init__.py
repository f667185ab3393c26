"""jaxtheory: a JAX toolkit for the science of deep learning.

Subpackages: :mod:`jaxtheory.nn` (models, parametrizations), :mod:`jaxtheory.train`
(one run), :mod:`jaxtheory.sweep` (grids of runs), :mod:`jaxtheory.data`,
:mod:`jaxtheory.plots`, :mod:`jaxtheory.experiments`.
"""

from jaxtheory import data, nn, sweep, train

__version__ = "0.1.0"
