"""neural-tangents' top-level names, for porting NT code by changing its imports.

::

  import jaxtheory.nt as nt          # was: import neural_tangents as nt
  from jaxtheory.nt import stax      # was: from neural_tangents import stax

Covered: ``nt.stax`` (see :mod:`jaxtheory.stax` for the layers and what is
not covered), ``nt.empirical_ntk_fn``, ``nt.empirical_nngp_fn``,
``nt.empirical_kernel_fn``, ``nt.empirical_ntk_vp_fn``, ``nt.batch``
(:mod:`jaxtheory.kernels.batching`), ``nt.monte_carlo_kernel_fn`` (:mod:`jaxtheory.kernels.monte_carlo`),
``nt.predict`` (``gp_inference``, ``gradient_descent_mse``,
``gradient_descent_mse_ensemble``, ``gradient_descent``, ``max_learning_rate``),
``nt.linearize``, ``nt.taylor_expand``, ``nt.NtkImplementation`` and ``nt.Kernel``
(what ``stax`` kernel functions return, :mod:`jaxtheory.kernels.nt_kernel`); of NT's
``utils``, ``canonicalize_idx`` and ``slice_shape`` (for ``stax.Index``),
``axis_after_dot`` (for ``stax.DotGeneral``), ``zip_axes`` and ``unzip_axes`` (the full
spatial layout ``(h, h', w, w')`` to and from ``(h, w, h', w')``). Not
covered: ``nt.experimental``.
"""

import enum

from jaxtheory import stax
from jaxtheory.kernels import predict
from jaxtheory.kernels._spatial import unzip_axes, zip_axes
from jaxtheory.kernels.batching import batch
from jaxtheory.kernels.dot_general import axis_after_dot
from jaxtheory.kernels.empirical import (empirical_kernel_fn, empirical_nngp_fn, empirical_ntk_fn,
                                         empirical_ntk_vp_fn)
from jaxtheory.kernels.monte_carlo import monte_carlo_kernel_fn
from jaxtheory.kernels.nt_kernel import Kernel
from jaxtheory.kernels.taylor import linearize, taylor_expand
from jaxtheory.stax import canonicalize_idx, slice_shape


class NtkImplementation(enum.IntEnum):
  """NT's names for the empirical-NTK implementations (all accepted by ``empirical_ntk_fn``)."""
  AUTO = 0
  JACOBIAN_CONTRACTION = 1
  NTK_VECTOR_PRODUCTS = 2
  STRUCTURED_DERIVATIVES = 3


__all__ = ["Kernel", "NtkImplementation", "axis_after_dot", "batch", "canonicalize_idx", "empirical_kernel_fn",
           "empirical_nngp_fn", "empirical_ntk_fn", "empirical_ntk_vp_fn", "linearize",
           "monte_carlo_kernel_fn", "predict", "slice_shape", "stax", "taylor_expand", "unzip_axes",
           "zip_axes"]
