"""Import neural-tangents 0.6.5 in the pinned side environment.

NT 0.6.5's ``neural_tangents/__init__.py`` imports ``neural_tangents.experimental``,
which pulls in ``tf2jax``/TensorFlow. We install NT with ``--no-deps`` and
replace that sub-package by an empty module in ``sys.modules`` before the first
import, so the (pure-JAX) stax / empirical / predict modules load.

This file is only ever used by scripts under ``benchmarks/nt_oracle`` running in
``benchmarks/nt_oracle/.venv``; the jaxtheory package must never import it.
"""
import sys
import types


def load():
  """Returns the ``neural_tangents`` module (stubbing ``.experimental``)."""
  if "neural_tangents" in sys.modules:
    return sys.modules["neural_tangents"]
  name = "neural_tangents.experimental"
  if name not in sys.modules:
    stub = types.ModuleType(name)
    stub.__doc__ = "Empty stub: NT's TensorFlow-only experimental module."
    stub.__path__ = []  # make it look like a package
    sys.modules[name] = stub
  import neural_tangents  # noqa: E402
  return neural_tangents



def __getattr__(attr):
  # ``from nt_import import nt`` convenience.
  if attr == "nt":
    return load()
  raise AttributeError(attr)
