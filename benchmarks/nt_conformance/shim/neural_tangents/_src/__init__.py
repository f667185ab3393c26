"""``neural_tangents._src``: the private modules NT's tests import."""
