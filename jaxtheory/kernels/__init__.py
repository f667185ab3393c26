"""Infinite-width kernels (NNGP/NTK), empirical NTKs and kernel predictions.

* :mod:`~jaxtheory.kernels.analytic`: the NNGP/NTK recursions every layer of
  :mod:`jaxtheory.nn` carries; :func:`kernel_fn` of a model;
* :mod:`~jaxtheory.kernels.nonlinear`: the duals of elementwise nonlinearities;
* :mod:`~jaxtheory.kernels.combinators`: fan-in (sum, concatenation) and
  frozen layers;
* :mod:`~jaxtheory.kernels.empirical`: the finite-width NTK, by Jacobian
  contraction, NTK-vector products or structured derivatives
  (:mod:`~jaxtheory.kernels.structured`, a jaxpr interpreter);
* :mod:`~jaxtheory.kernels.predict`: GP inference, closed-form MSE
  gradient-flow dynamics;
* :mod:`~jaxtheory.kernels.dynamics`: gradient descent on any loss (an ODE) and
  the largest stable learning rate;
* :mod:`~jaxtheory.kernels.taylor`: linearization and Taylor expansion in the
  parameters.

Comparing a sweep with its kernel limit is :mod:`jaxtheory.limits`.
"""

from jaxtheory.kernels import (analytic, combinators, dynamics, empirical, nonlinear, predict,
                               structured, taylor)
from jaxtheory.kernels.analytic import Kernel, kernel_fn
from jaxtheory.kernels.empirical import (empirical_nngp, empirical_nngp_fn, empirical_ntk,
                                         empirical_ntk_fn)
from jaxtheory.kernels.predict import (gp_inference, gradient_descent_mse,
                                       gradient_descent_mse_ensemble)
from jaxtheory.kernels.taylor import linearize, taylor_expand
