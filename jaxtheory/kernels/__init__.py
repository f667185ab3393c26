"""Infinite-width kernels (NNGP/NTK), empirical NTKs and kernel predictions.

* :mod:`~jaxtheory.kernels.analytic`: the NNGP/NTK recursions every layer of
  :mod:`jaxtheory.nn` carries; :func:`kernel_fn` of a model;
* :mod:`~jaxtheory.kernels.empirical`: the finite-width NTK, by Jacobian
  contraction, NTK-vector products or structured derivatives;
* :mod:`~jaxtheory.kernels.predict`: GP inference, closed-form gradient-flow
  dynamics, linearization.

Comparing a sweep with its kernel limit is :mod:`jaxtheory.sweep.limits`.
"""

from jaxtheory.kernels import analytic, empirical, predict
from jaxtheory.kernels.analytic import Kernel, kernel_fn
from jaxtheory.kernels.empirical import (empirical_nngp, empirical_nngp_fn, empirical_ntk,
                                         empirical_ntk_fn)
from jaxtheory.kernels.predict import (gp_inference, gradient_descent_mse,
                                       gradient_descent_mse_ensemble, linearize, taylor_expand)
