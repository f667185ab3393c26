"""Name forwarding for the ``neural_tangents`` import shim (conformance runs only).

Every shim module forwards attribute lookups to jaxtheory modules. Two pieces
of plumbing keep one missing feature from hiding a whole test file:

* a name jaxtheory does not provide resolves to a :class:`Missing`
  placeholder, which raises ``NotImplementedError`` naming it when used;
* while pytest collects (NT builds layers in ``@parameters`` lists at import),
  an exception raised by a forwarded function is not raised but returned as a
  :class:`Failed` value, which re-raises it in the test that uses the value
  (also when the test passes it on to a forwarded function).

Either way the test that needs the feature fails with its cause, and only it.
After collection every call goes straight to jaxtheory.
"""

import functools
import sys
import types

PREFIX = "jaxtheory lacks "
COLLECTING = [True]


class Failed:
  """An exception raised while building a test's parameters; re-raised on use."""

  def __init__(self, exc: BaseException):
    self._exc = exc

  def _raise(self, *args, **kwargs):
    raise self._exc

  __call__ = __iter__ = __getitem__ = __len__ = _raise

  def __getattr__(self, name):
    if name.startswith("__"):
      raise AttributeError(name)
    raise self._exc

  def __repr__(self):
    return f"<failed: {type(self._exc).__name__}>"


class Missing:
  """Stands for an NT name with no jaxtheory counterpart; raises when used."""

  def __init__(self, path: str):
    self._path = path

  def __call__(self, *args, **kwargs):
    exc = NotImplementedError(PREFIX + self._path)
    if COLLECTING[0]:
      return Failed(exc)
    raise exc

  def __getattr__(self, name):
    if name.startswith("__"):
      raise AttributeError(name)
    return Missing(f"{self._path}.{name}")

  def __iter__(self):
    raise NotImplementedError(PREFIX + self._path)

  def __getitem__(self, key):
    return Missing(f"{self._path}[{key!r}]")

  def __repr__(self):
    return f"<missing {self._path}>"


def _guard(fn):
  """``fn`` that, during collection, returns its exception (or a failed argument) as :class:`Failed`."""
  if not callable(fn) or isinstance(fn, (type, types.ModuleType)):
    return fn

  @functools.wraps(fn)
  def guarded(*args, **kwargs):
    for v in (*args, *kwargs.values()):
      if isinstance(v, Failed):
        return v if COLLECTING[0] else v._raise()
    if not COLLECTING[0]:
      return fn(*args, **kwargs)
    try:
      return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 -- re-raised in the test that uses it
      return Failed(exc)

  return guarded


def forward(module_name: str, *targets) -> None:
  """Makes ``module_name`` resolve unknown names in ``targets``, else to :class:`Missing`."""
  module = sys.modules[module_name]
  guarded = {}  # one wrapper per name: NT's tests compare layers by identity (phi == stax.ABRelu)

  def __getattr__(name):
    for target in targets:
      if hasattr(target, name):
        value = getattr(target, name)
        if guarded.get(name, (None,))[0] is not value:
          guarded[name] = (value, _guard(value))
        return guarded[name][1]
    if name.startswith("__"):
      raise AttributeError(name)
    return Missing(f"{module_name}.{name}")

  module.__getattr__ = __getattr__
