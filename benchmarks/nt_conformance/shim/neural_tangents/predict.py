"""``neural_tangents.predict`` -> :mod:`jaxtheory.kernels.predict`."""

from jaxtheory.kernels import predict as _predict
from neural_tangents import _shim

_shim.forward(__name__, _predict)
