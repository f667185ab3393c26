"""``neural_tangents.stax`` -> :mod:`jaxtheory.stax`."""

from jaxtheory import stax as _stax
from neural_tangents import _shim

_shim.forward(__name__, _stax)
