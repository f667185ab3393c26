"""Whether a traced program may run two matrix factorizations at once.

On CPU, XLA's batched LAPACK kernels block a thread of the pool that runs the
program until their pieces are done; independent ones side by side can take
every thread and deadlock. :func:`factorizations_in_turn` reads a jaxpr and
says whether each factorization depends (through data) on the one before.
"""

import jax

FACTORIZATIONS = {"svd", "eigh", "cholesky", "qr", "householder_product", "lu", "schur", "eig",
                  "triangular_solve", "tridiagonal", "tridiagonal_solve", "hessenberg"}


def _subjaxprs(eqn):
  for v in eqn.params.values():
    for x in (v if isinstance(v, (tuple, list)) else (v,)):
      if isinstance(x, jax.extend.core.ClosedJaxpr):
        yield x.jaxpr
      elif isinstance(x, jax.extend.core.Jaxpr):
        yield x


def _contains(jaxpr) -> bool:
  return any(e.primitive.name in FACTORIZATIONS or any(_contains(j) for j in _subjaxprs(e))
             for e in jaxpr.eqns)


def factorizations_in_turn(closed) -> tuple[int, bool]:
  """``(count, ordered)`` over the top-level equations of ``closed`` (a ClosedJaxpr).

  An equation counts as a factorization when it is one or calls one (a nested
  jaxpr containing one); ``ordered``: each depends on the previous one.
  """
  deps, nodes, ordered = {}, [], True
  for eqn in closed.jaxpr.eqns:
    d = set()
    for v in eqn.invars:
      if isinstance(v, jax.extend.core.Var):
        d |= deps.get(v, set())
    if eqn.primitive.name in FACTORIZATIONS or any(_contains(j) for j in _subjaxprs(eqn)):
      ordered &= not nodes or nodes[-1] in d
      nodes.append(len(nodes))
      d = d | {nodes[-1]}
    for v in eqn.outvars:
      deps[v] = d
  return len(nodes), ordered
