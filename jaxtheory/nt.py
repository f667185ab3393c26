"""neural-tangents' top-level names, for porting NT code by changing its imports.

::

  import jaxtheory.nt as nt          # was: import neural_tangents as nt
  from jaxtheory.nt import stax      # was: from neural_tangents import stax

Covered: ``nt.stax`` (see :mod:`jaxtheory.stax` for the layers and what is
not covered), ``nt.empirical_ntk_fn``, ``nt.empirical_nngp_fn``,
``nt.empirical_kernel_fn``-style use through those two, ``nt.predict``
(``gp_inference``, ``gradient_descent_mse``, ``gradient_descent_mse_ensemble``,
``gradient_descent``, ``max_learning_rate``), ``nt.linearize``,
``nt.taylor_expand`` and ``nt.NtkImplementation``. Not covered: ``nt.batch``
(use ``kernel_fn(..., batch_size=...)`` / ``empirical_ntk(..., batch_size=...)``),
``nt.monte_carlo_kernel_fn``, ``nt.experimental``.
"""

import enum

from jaxtheory import stax
from jaxtheory.kernels import predict
from jaxtheory.kernels.empirical import empirical_nngp_fn, empirical_ntk_fn
from jaxtheory.kernels.taylor import linearize, taylor_expand


class NtkImplementation(enum.IntEnum):
  """NT's names for the empirical-NTK implementations (all accepted by ``empirical_ntk_fn``)."""
  AUTO = 0
  JACOBIAN_CONTRACTION = 1
  NTK_VECTOR_PRODUCTS = 2
  STRUCTURED_DERIVATIVES = 3


__all__ = ["NtkImplementation", "empirical_nngp_fn", "empirical_ntk_fn", "linearize", "predict",
           "stax", "taylor_expand"]
