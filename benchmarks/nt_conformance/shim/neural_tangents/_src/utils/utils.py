"""``neural_tangents._src.utils.utils`` -> :mod:`jaxtheory.nt`."""

from jaxtheory import nt as _nt
from neural_tangents import _shim

_shim.forward(__name__, _nt)
