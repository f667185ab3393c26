"""``neural_tangents._src.utils``."""
