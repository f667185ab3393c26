"""A recorded metric: a function of one run's state that says which inputs it takes and names its axes.

The trainer records every metric of a sweep at each recording point; a metric
is ``fn(params, apply, data)`` (``apply(params, x)`` runs the network, ``data``
holds ``x_train``, ``y_train``, ``w_train``, ``x_test``, ``y_test``) and may
also take the run's :class:`~jaxtheory.nn.Ctx` (``ctx``) and the network
(``model``, built at its bucket's capacity width) when it declares them in
``inputs``. A metric returning an array names that array's axes in ``dims``
(they become dimensions of the results dataset).

>>> import jax.numpy as jnp
>>> from jaxtheory.metric import Metric
>>> m = Metric(lambda params, apply, d, ctx: jnp.zeros(3), dims=("layer",), inputs=("ctx",))
>>> m.dims, m(None, None, {}, ctx=None).shape
(('layer',), (3,))
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

from jaxtheory.errors import ConfigError

INPUTS = ("ctx", "model")  # what a metric may take besides (params, apply, data)


class Metric(NamedTuple):
  """A recorded metric and what it declares.

  Attributes:
    fn: ``fn(params, apply, data, **{name: value for name in inputs})``.
    dims: names of the axes of the array it returns (``()``: a scalar).
    inputs: the extra inputs it takes, among ``'ctx'`` and ``'model'``.
  """
  fn: Callable[..., Any]
  dims: tuple[str, ...] = ()
  inputs: tuple[str, ...] = ()

  def __call__(self, params, apply, data, ctx=None, model=None):
    given = {"ctx": ctx, "model": model}
    return self.fn(params, apply, data, **{k: given[k] for k in self.inputs})


def as_metric(fn: Metric | Callable) -> Metric:
  """A :class:`Metric` as is, or a plain function wrapped once.

  A plain function is ``fn(params, apply, data)``; for functions written
  before :class:`Metric`, a ``fn.dims`` attribute still names its axes and
  the keywords ``ctx`` / ``model`` in its signature still ask for those
  inputs (read here, once, when the sweep or trainer is built).

  Raises:
    ConfigError: ``fn`` is not callable or declares an unknown input.
  """
  if isinstance(fn, Metric):
    bad = [k for k in fn.inputs if k not in INPUTS]
    if bad:
      raise ConfigError(f"a metric's inputs are among {', '.join(INPUTS)}; got {bad[0]!r}")
    return fn
  if not callable(fn):
    raise ConfigError(f"a metric must be a function or a Metric, got {type(fn).__name__}")
  try:
    names = inspect.signature(fn).parameters
  except (TypeError, ValueError):  # builtins and some C callables have no signature
    names = {}
  return Metric(fn, tuple(getattr(fn, "dims", None) or ()), tuple(k for k in INPUTS if k in names))
