"""``neural_tangents._src.batching`` -> :mod:`jaxtheory.kernels.batching`."""

from jaxtheory.kernels import batching as _batching
from neural_tangents import _shim

_shim.forward(__name__, _batching)
