"""``neural_tangents`` for NT's own tests, backed by :mod:`jaxtheory.nt` (never the real NT)."""

from jaxtheory import nt as _nt
from neural_tangents import _shim

__version__ = "0.6.5+jaxtheory"

from neural_tangents import predict, stax  # noqa: E402,F401

_shim.forward(__name__, _nt)
