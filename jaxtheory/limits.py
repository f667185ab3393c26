r"""Finite width against its limit: a sweep's networks side by side with their kernels.

Trained by full-batch gradient descent on the squared error, a network of
width :math:`n` in NTK parametrization follows its linearization to within
:math:`O(n^{-1/2})`, and the linearization follows the infinite-width NTK
(Jacot et al. 2018; Lee et al. 2019): the closed form

.. math:: f_t = y + e^{-\eta t \Theta / n_{\rm train}} (f_0 - y)

on the training set (and its test-set counterpart). In mean-field / muP
(and as the richness :math:`\gamma` grows) the kernel itself moves during
training, by :math:`O(1)` however wide the network, and the network leaves
the kernel regime (Chizat et al. 2019; Yang & Hu 2021).

:func:`compare` runs a sweep with the recordings this needs (train and test
outputs, the empirical NTK on a probe set) and returns, per run and recorded
step:

* ``dev_linear``: :math:`\|f_t - f^{\rm lin}_t\| / \|f^{\rm lin}_t\|` on the
  test set, where :math:`f^{\rm lin}` is the closed-form gradient flow with
  the run's own empirical NTK at initialization (the lazy-training
  prediction);
* ``dev_ntk`` (NTK parametrization): the same against the analytic
  infinite-width NTK, started from the run's own initial outputs;
* ``kernel_movement``: :math:`\|\Theta_t - \Theta_0\|_F / \|\Theta_0\|_F`;
* ``kernel_alignment``: kernel-target alignment :math:`\langle \Theta_t,
  YY^\top\rangle_F / (\|\Theta_t\|_F \|YY^\top\|_F)` (Cristianini et al. 2002);
* ``kernel_alignment_centered``: the same between the centred kernels
  :math:`H\Theta_t H` and :math:`HYY^\top H` (Cortes, Mohri & Rostamizadeh
  2012; the CKA of :func:`jaxtheory.probes.similarity.cka_from_grams`), blind
  to the constant part of the kernel that dominates the uncentred one;
* ``ntk_init_error`` (NTK parametrization): :math:`\|\Theta_0 -
  \Theta_\infty\|_F / \|\Theta_\infty\|_F` on the training set;
* ``weight_movement`` (at the end of training, no step axis): the relative
  distance the parameters travelled, :math:`\|\theta_T - \theta_0\| /
  \|\theta_0\|` over all of them (Chizat, Oyallon & Bach 2019: it is
  :math:`O(1/\alpha)` for a model scaled by :math:`\alpha`, so
  :math:`O(\gamma)` here; padded entries are zero and stay zero);

and :func:`width_exponent` fits the power law of any of them against width.

Every NTK here is the one that drives training: each parameter's Jacobian
is weighted by its learning-rate multiplier (a frozen layer contributes
nothing; mean-field multiplies the learning rate by the width).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from jaxtheory.kernels import analytic, empirical, predict
from jaxtheory.nn import Ctx, family_multipliers
from jaxtheory.probes import over_runs, similarity
from jaxtheory.sweep.engine import (RunGroup, Sweep, SweepResult, initial_params, plan,
                                    execute as execute_sweep)
from jaxtheory.data import data_arrays
from jaxtheory.errors import ConfigError
from jaxtheory.train import get_optimizer
from jaxtheory.metric import Metric


def _outputs(key: str, dims: Sequence[str]):
  def fn(params, apply, d):
    return apply(params, d[key])
  return Metric(fn, tuple(dims))


def _lr_weights(model, ctx: Ctx):
  """Per-parameter SGD learning-rate multipliers of one run (the NTK's weights)."""
  return family_multipliers(model.lr_scale(ctx), "sgd")


def training_ntk(model, params, ctx: Ctx, x1, x2=None, implementation="auto"):
  r"""The NTK that gradient descent on ``model`` follows: :math:`\sum_p m_p J_p J_p^\top`.

  ``m_p`` is parameter ``p``'s learning-rate multiplier (the parametrization's
  and the richness ``gamma``'s); the kernel is of the network's output (which
  ``gamma`` divides), averaged over output channels.
  """
  f = lambda p, x: model.apply(p, x, ctx)
  return empirical.empirical_ntk(f, params, x1, x2, implementation=implementation,
                                 param_weights=_lr_weights(model, ctx))


def _probe_ntk(x_probe, implementation):
  def fn(params, apply, d, ctx, model):
    del apply, d
    return training_ntk(model, params, ctx, x_probe, None, implementation)
  return Metric(fn, ("probe_1", "probe_2"), inputs=("ctx", "model"))


def _check(s: Sweep):
  p = plan(s)
  if p.loss != "mse":
    raise ConfigError("the kernel comparison needs the squared error (loss='mse')")
  if get_optimizer(s.optimizer).name != "sgd" or s.batch_size is not None:
    raise ConfigError("the kernel comparison needs full-batch gradient descent "
                      "(optimizer='sgd', batch_size=None)")
  for axis in ("n_train", "label_noise", "weight_decay"):
    if axis in p.grid or (axis == "weight_decay" and p.fixed.get(axis, 0.0)):
      raise ConfigError(f"the kernel comparison does not support a {axis} axis")
  return p


def _targets(ds, dtype):
  y = np.asarray(ds.y_train)
  if ds.is_classification:
    y = np.eye(ds.out_dim)[y]
  return jnp.asarray(y, dtype)


def _rel(a, b, axes):
  num, den = np.linalg.norm(a - b, axis=axes), np.linalg.norm(b, axis=axes)
  with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0: equal (a centred net at init)
    return np.where(num == 0, 0.0, num / den)


def compare(s: Sweep, *, n_probe: int = 16, implementation: str = "auto",
            analytic_kernel: bool | None = None, kernel_key: Any = None,
            **engine) -> xr.Dataset:
  """Runs ``s`` and sets each run beside its kernel predictions (see the module doc).

  :func:`execute` does the same and also returns the runs' final parameters.

  Args:
    s: a full-batch SGD sweep on the squared error; a ``parametrization``
      grid axis compares several parametrizations, which share the training
      programs (each run is compared with its own parametrization's kernel).
    n_probe: the first ``n_probe`` training inputs carry the recorded
      empirical NTK (movement, alignment).
    implementation: the empirical NTK's implementation
      (:func:`jaxtheory.kernels.empirical.empirical_ntk`).
    analytic_kernel: also compare with the infinite-width NTK (default: the
      runs in NTK parametrization, where the network has one; ``dev_ntk`` is
      NaN for the others).
    kernel_key: ``None``, or a value that determines the model's kernel map
      (the settings it is built from; never for a kernel the user wrote): a
      later invocation then loads the analytic kernels' programs from the
      executable store (``store_key`` of
      :func:`jaxtheory.kernels.analytic.kernel_fn`).
    **engine: execution options of :func:`jaxtheory.sweep.run`.

  Returns:
    The sweep's results with ``f_train``, ``f_test``, ``ntk_probe`` and the
    comparison variables added.
  """
  return execute(s, n_probe=n_probe, implementation=implementation,
                 analytic_kernel=analytic_kernel, kernel_key=kernel_key, **engine).dataset


def execute(s: Sweep, *, n_probe: int = 16, implementation: str = "auto",
            analytic_kernel: bool | None = None, kernel_key: Any = None,
            **engine) -> SweepResult:
  """:func:`compare`, also returning every run's final parameters.

  Args: as :func:`compare`.

  Returns:
    A :class:`~jaxtheory.sweep.SweepResult`: :func:`compare`'s dataset and the
    final parameters as from :func:`jaxtheory.sweep.execute`.
  """
  p = _check(s)
  if not isinstance(n_probe, int) or n_probe < 2:
    raise ConfigError(f"n_probe must be an integer >= 2, got {n_probe!r}")
  dtype = jnp.float64 if s.dtype == "float64" else jnp.float32
  n_probe = min(n_probe, len(s.data.y_train))
  with jax.enable_x64(s.dtype == "float64"):
    x_probe = data_arrays(s.data, dtype)["x_train"][:n_probe]
  metrics = dict(s.metrics, f_train=_outputs("x_train", ("train_example", "output")),
                 f_test=_outputs("x_test", ("test_example", "output")),
                 ntk_probe=_probe_ntk(x_probe, implementation))
  res, groups = execute_sweep(dataclasses.replace(s, metrics=metrics), **engine)
  with jax.enable_x64(s.dtype == "float64"):
    init = initial_params(s, planned=p)
    _add_predictions(res, s, p, init, implementation, analytic_kernel, dtype, kernel_key)
    _add_kernel_dynamics(res, s, n_probe, dtype)
    _add_weight_movement(res, p, init, groups)
  return SweepResult(res, groups)


def _lrs(p, runs):
  if "lr" in p.flat:
    return np.asarray(p.flat["lr"])[runs]
  return np.full(len(runs), p.fixed["lr"])


def _add_predictions(res, s, p, groups: list[RunGroup], implementation, analytic_kernel, dtype,
                     kernel_key=None):
  """Adds ``dev_linear`` (and ``dev_ntk``, ``ntk_init_error``) per run and step."""
  d = data_arrays(s.data, dtype)
  x_tr, x_te = d["x_train"], d["x_test"]
  x_all = jnp.concatenate([x_tr, x_te])
  y = _targets(s.data, dtype)
  n = y.shape[0]
  steps = res.step.values
  f_tr, f_te = res.f_train.values, res.f_test.values
  dims = res.train_loss.dims
  dev = np.full(f_te.shape[:-2], np.nan)
  dev_inf = np.full_like(dev, np.nan)
  init_err = np.full(dev.shape[:-1], np.nan)
  # Each run's parametrization (a grid axis of them shares the training programs);
  # the analytic kernel of each that is compared (by default NTK parametrization's).
  names = p.labels.get("parametrization", [s.parametrization])
  which = (np.asarray(p.flat["parametrization"], int) if "parametrization" in p.flat
           else np.zeros(len(p.index), int))
  kernels = {}
  for i, name in enumerate(names):
    if analytic_kernel or (analytic_kernel is None and name == "ntk"):
      width = int(max(p.grid["width"]))  # a standard parametrization's NTK depends on it
      k_fn = analytic.kernel_fn(s.model(width), Ctx(name),
                                store_key=None if kernel_key is None else (kernel_key, width))
      kernels[i] = (k_fn(x_tr, None, "ntk"), k_fn(x_te, x_tr, "ntk"))
  for g in groups:
    # The lazy prediction of every run of the group, from its own kernel at initialization:
    # the train and test rows against the train columns, as one kernel (one trace).
    th = over_runs(lambda prm, c, xa, xt: training_ntk(g.model, prm, c, xa, xt, implementation),
                   g.params, g.ctx, x_all, x_tr, in_axes=(0, 0, None, None), chunk=1,
                   store_key=None if g.key is None else (g.key, "training_ntk", implementation))
    th_trtr, th_tetr = th[:, :n], th[:, n:]
    lrs = _lrs(p, g.runs)
    for j, r in enumerate(g.runs):
      idx = tuple(p.index[r])
      f0_tr, f0_te = f_tr[idx][0], f_te[idx][0]
      fn = predict.gradient_descent_mse(th_trtr[j], y, float(lrs[j]), normalization=n)
      dev[idx] = _rel(f_te[idx], np.asarray(fn(steps, f0_tr, f0_te, th_tetr[j])[1]), (-2, -1))
      if int(which[r]) in kernels:
        k_trtr, k_tetr = kernels[int(which[r])]
        fn = predict.gradient_descent_mse(k_trtr, y, float(lrs[j]), normalization=n)
        dev_inf[idx] = _rel(f_te[idx], np.asarray(fn(steps, f0_tr, f0_te, k_tetr)[1]),
                            (-2, -1))
        init_err[idx] = float(jnp.linalg.norm(th_trtr[j] - k_trtr) / jnp.linalg.norm(k_trtr))
  res["dev_linear"] = (dims, dev)
  if kernels:
    res["dev_ntk"] = (dims, dev_inf)
    res["ntk_init_error"] = (dims[:-1], init_err)


def _sq_norms(tree) -> np.ndarray:
  """Squared norm of each run's parameters (stacked on a leading axis), in float64."""
  return sum(np.sum(np.square(np.asarray(a, np.float64)).reshape(len(a), -1), axis=1)
             for a in jax.tree.leaves(tree))


def _add_weight_movement(res, p, init: list[RunGroup], final: list[RunGroup]):
  """Adds ``weight_movement`` = ``||theta_T - theta_0|| / ||theta_0||`` per run (no step axis)."""
  start = {int(r): jax.tree.map(lambda a, j=j: np.asarray(a[j]), g.params)
           for g in init for j, r in enumerate(g.runs)}
  dims = res.train_loss.dims[:-1]
  out = np.full(tuple(res.sizes[d] for d in dims), np.nan)
  for g in final:
    p0 = jax.tree.map(lambda *a: np.stack(a), *[start[int(r)] for r in g.runs])
    moved = _sq_norms(jax.tree.map(lambda a, b: np.asarray(a, np.float64) - b, g.params, p0))
    rel = np.sqrt(moved / _sq_norms(p0))
    for j, r in enumerate(g.runs):
      out[tuple(p.index[r])] = rel[j]
  res["weight_movement"] = (dims, out)


def _add_kernel_dynamics(res, s, n_probe, dtype):
  th = res.ntk_probe.values
  th0 = th[..., :1, :, :]
  res["kernel_movement"] = (res.train_loss.dims,
                            _rel(th, np.broadcast_to(th0, th.shape), (-2, -1)))
  y = np.asarray(_targets(s.data, dtype))[:n_probe]
  yy = y @ y.T
  num = np.einsum("...ij,ij->...", th, yy)
  res["kernel_alignment"] = (res.train_loss.dims,
                             num / (np.linalg.norm(th, axis=(-2, -1)) * np.linalg.norm(yy)))
  flat = jnp.asarray(th.reshape((-1,) + th.shape[-2:]))
  centred = jax.vmap(lambda k: similarity.cka_from_grams(k, jnp.asarray(yy, flat.dtype)))(flat)
  res["kernel_alignment_centered"] = (res.train_loss.dims,
                                      np.asarray(centred).reshape(th.shape[:-2]))


def width_exponent(da: xr.DataArray, step: int = -1) -> float:
  """Slope of ``log(mean over seeds)`` against ``log(width)`` at a recorded step.

  Other axes than seed and width must be selected away first.
  """
  v = da.isel(step=step) if "step" in da.dims else da
  v = v.mean("seed") if "seed" in v.dims else v
  extra = [d for d in v.dims if d != "width"]
  if extra:
    raise ValueError(f"select the axes {extra} first (e.g. da.sel(lr=0.1))")
  w = v.width.values.astype(float)
  return float(np.polyfit(np.log(w), np.log(np.asarray(v.values, float)), 1)[0])
