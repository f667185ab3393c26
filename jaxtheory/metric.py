"""A recorded metric: a function of one run's state that says which inputs it takes and names its axes.

The trainer records every metric of a sweep at each recording point; a metric
is ``fn(params, apply, data)`` (``apply(params, x)`` runs the network, ``data``
holds ``x_train``, ``y_train``, ``w_train``, ``x_test``, ``y_test``) and may
also take the run's :class:`~jaxtheory.nn.Ctx` (``ctx``), the network
(``model``, built at its bucket's capacity width) and the run's parameters at
initialization (``params0``: the very arrays it started from, so that a metric
can measure the change from init, e.g.
:func:`jaxtheory.probes.coord.coord_change_metric`) when it declares them in
``inputs``. A sweep whose metrics ask for ``params0`` keeps one more copy of
every run's parameters in its state. A metric returning an array names that array's axes in ``dims``
(they become dimensions of the results dataset).

The trainer computes a sweep's metrics one after another, and a metric that
factorizes several matrices (SVD, eigh, Cholesky, QR, solves) should do so
with :func:`in_turn`: on CPU, XLA's LAPACK kernels split a batch (one matrix
per run of a vmapped sweep) over the same thread pool that runs the program
and block until their pieces are done, so as many independent factorizations
as the pool has threads can each wait on work that no free thread is left to
run, and the program hangs for good (seen with four layers' SVDs on two cores).

>>> import jax.numpy as jnp
>>> from jaxtheory.metric import Metric
>>> m = Metric(lambda params, apply, d, ctx: jnp.zeros(3), dims=("layer",), inputs=("ctx",))
>>> m.dims, m(None, None, {}, ctx=None).shape
(('layer',), (3,))
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxtheory.errors import ConfigError

INPUTS = ("ctx", "model", "params0")  # what a metric may take besides (params, apply, data)


class Metric(NamedTuple):
  """A recorded metric and what it declares.

  Attributes:
    fn: ``fn(params, apply, data, **{name: value for name in inputs})``.
    dims: names of the axes of the array it returns (``()``: a scalar).
    inputs: the extra inputs it takes, among ``'ctx'``, ``'model'`` and
      ``'params0'`` (the run's initial parameters, same tree as ``params``).
  """
  fn: Callable[..., Any]
  dims: tuple[str, ...] = ()
  inputs: tuple[str, ...] = ()

  def __call__(self, params, apply, data, ctx=None, model=None, params0=None):
    given = {"ctx": ctx, "model": model, "params0": params0}
    return self.fn(params, apply, data, **{k: given[k] for k in self.inputs})


def as_metric(fn: Metric | Callable) -> Metric:
  """A :class:`Metric` as is, or a plain function wrapped once.

  A plain function is ``fn(params, apply, data)``; for functions written
  before :class:`Metric`, a ``fn.dims`` attribute still names its axes and
  the keywords ``ctx`` / ``model`` / ``params0`` in its signature still ask for those
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


def takes_params0(metrics: Iterable[Metric | Callable]) -> bool:
  """Whether some metric takes the run's initial parameters (its runs then keep a copy)."""
  return any("params0" in as_metric(m).inputs for m in metrics)


def after(x: Any, y: Any) -> Any:
  """``x`` itself, but computed from ``y`` too, so nothing that reads it can start before ``y``.

  Every numeric leaf of ``x`` gets an exact zero added that XLA must compute
  from ``y`` (``0 * nan_to_num(y)``: 0 even where ``y`` is not finite), a data
  dependence that compiled programs keep. (An optimization barrier does not
  order work on CPU: XLA drops it before the program is split into tasks.)
  The values are those of ``x``; numeric leaves are copied once.
  """
  leaves = [l for l in jax.tree.leaves(y) if jnp.size(l) and jnp.issubdtype(jnp.result_type(l),
                                                                           jnp.number)]
  if not leaves:  # nothing to wait for
    return x
  zero = 0 * jnp.nan_to_num(jnp.ravel(leaves[0])[0])
  tie = lambda a: a + zero.astype(a.dtype) if jnp.issubdtype(a.dtype, jnp.number) else a
  return jax.tree.map(tie, x)


def in_turn(fn: Callable[[Any], Any], xs: Sequence[Any]) -> list[Any]:
  """``[fn(x) for x in xs]``, each call starting only once the previous result is computed.

  The order is enforced by data dependence (:func:`after`), so XLA cannot run
  two of the calls at once. Use it for matrix factorizations inside a
  compiled program (see the module docstring): run side by side, batched
  LAPACK calls can exhaust the CPU thread pool and deadlock. The values are
  those of the plain list comprehension.

  >>> import jax, jax.numpy as jnp
  >>> Ws = [jnp.eye(3), 2 * jnp.eye(2)]
  >>> [s.tolist() for s in jax.jit(lambda Ws: in_turn(jnp.linalg.svdvals, Ws))(Ws)]
  [[1.0, 1.0, 1.0], [2.0, 2.0]]
  """
  out = []
  for x in xs:
    out.append(fn(after(x, out[-1]) if out else x))
  return out
