"""Probes of trained networks, written for one run and mapped over a sweep (:func:`over_runs`).

* :mod:`~jaxtheory.probes.curvature`: Hessian / Gauss-Newton products, Lanczos top
  eigenvalues, Hutchinson trace, spectral density, sharpness as a recorded metric;
* :mod:`~jaxtheory.probes.similarity`: HSIC, linear / RBF CKA (minibatch too), mutual k-NN
  (batched over networks);
* :mod:`~jaxtheory.probes.spectra`: singular values, stable / effective rank, power-law exponent,
  Fourier power and sparsity of an embedding;
* :mod:`~jaxtheory.probes.readout`: closed-form ridge / min-norm linear readouts on features;
* :mod:`~jaxtheory.probes.collapse`: neural-collapse metrics NC1-NC4, CDNV;
* :mod:`~jaxtheory.probes.separation`: per-layer features, separation fuzziness;
* :mod:`~jaxtheory.probes.coord`: the coordinate check (per-layer activation size and its change
  from init vs width);
* :mod:`~jaxtheory.probes.connectivity`: linear-path barriers, weight / activation matching.
"""

from jaxtheory.probes import (collapse, connectivity, coord, curvature, readout, separation,
                              similarity, spectra)
from jaxtheory.probes.batch import over_runs
from jaxtheory.probes.collapse import collapse_metric, collapse_metrics, penultimate
from jaxtheory.probes.connectivity import (activation_matching, apply_permutation, barrier,
                                           interpolate, permutation_spec, weight_matching)
from jaxtheory.probes.curvature import (gauss_newton, hessian, hutchinson_trace, hvp, lanczos,
                                        power_iteration, sharpness_metric, spectral_density,
                                        top_eigenvalues)
from jaxtheory.probes.readout import ridge_losses, ridge_metric
from jaxtheory.probes.coord import coord_change_metric, coord_check, coord_exponents, coord_metric
from jaxtheory.probes.separation import fit_log_linear, fuzziness, layer_features
from jaxtheory.probes.similarity import (cka, cka_matrix, hsic, knn_indices, minibatch_cka,
                                         mutual_knn, mutual_knn_chance, mutual_knn_matrix)
from jaxtheory.probes.spectra import fourier_power, fourier_sparsity
from jaxtheory.probes.spectra import summary as weight_spectra
