"""``neural_tangents._src.monte_carlo`` -> :mod:`jaxtheory.kernels.monte_carlo`."""

from jaxtheory.kernels import monte_carlo as _monte_carlo
from neural_tangents import _shim

_shim.forward(__name__, _monte_carlo)
