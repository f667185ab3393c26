"""``neural_tangents._src.empirical`` -> :mod:`jaxtheory.nt` and :mod:`jaxtheory.kernels.empirical`."""

from jaxtheory import nt as _nt
from jaxtheory.kernels import empirical as _empirical
from neural_tangents import _shim

# NT's tests run the empirical NTK with this implementation by default.
_DEFAULT_TESTING_NTK_IMPLEMENTATION = _nt.NtkImplementation.STRUCTURED_DERIVATIVES

_shim.forward(__name__, _nt, _empirical)
