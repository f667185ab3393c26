"""``neural_tangents._src.utils.rules``: NT's structured-derivative rule tables (none in jaxtheory)."""

from neural_tangents import _shim

_shim.forward(__name__)
