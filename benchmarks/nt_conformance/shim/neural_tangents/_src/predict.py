"""``neural_tangents._src.predict`` -> :mod:`jaxtheory.kernels.predict`."""

import jax

from jaxtheory.kernels import predict as _predict
from neural_tangents import _shim


def _is_on_cpu(x) -> bool:
  """Test helper: whether every array of ``x`` lives on a CPU device."""
  def on_cpu(a):
    devices = getattr(a, "devices", None)
    return devices is None or all(d.platform == "cpu" for d in devices())
  return all(on_cpu(a) for a in jax.tree_util.tree_leaves(x))


_shim.forward(__name__, _predict)
