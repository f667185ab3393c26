r"""The law of data separation: class fuzziness layer by layer (He & Su 2023).

He & Su (2023, "A law of data separation in deep learning", PNAS) measure how
well the features ``h_i`` of layer ``l`` separate ``C`` classes by the
*separation fuzziness*

.. math::
  D_l = \mathrm{Tr}(\Sigma_W \Sigma_B^+), \qquad
  \Sigma_W = \frac1N \sum_i (h_i - \mu_{y_i})(h_i - \mu_{y_i})^\top, \quad
  \Sigma_B = \frac1C \sum_c (\mu_c - \mu_G)(\mu_c - \mu_G)^\top,

(``C`` times Papyan's NC1, see :mod:`jaxtheory.probes.collapse`) and find that
in a well-trained network it decays geometrically with depth,
:math:`D_l \approx \rho^l D_0`: :math:`\log D_l` is linear in ``l``, with a
fitted slope :math:`\log\rho < 0` and :math:`R^2` close to one.
:func:`fuzziness_curve` computes :math:`D_l` over the layers returned by
:func:`layer_features`, :func:`fit_log_linear` fits the law.
:func:`fisher_ratio` is the classical scalar alternative
:math:`\mathrm{Tr}\,\Sigma_B / \mathrm{Tr}\,\Sigma_W` (larger is more separated).

All functions are for ONE network and jittable with a static number of
classes; features padded with zero columns give the unpadded values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxtheory.nn import Ctx, Feat, Model
from jaxtheory.probes.collapse import _within_over_between, class_stats
from jaxtheory.metric import Metric

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def fuzziness(H: ArrayLike, labels: ArrayLike, num_classes: int,
              weights: ArrayLike | None = None, rtol: float | None = None) -> Array:
  r"""Separation fuzziness :math:`D = \mathrm{Tr}(\Sigma_W \Sigma_B^+)` (He & Su 2023, eq. 1).

  Args:
    H: features ``(n, ...)`` (flattened to ``(n, d)``).
    labels: integer labels ``(n,)``.
    num_classes: static number of classes.
    weights: optional example weights ``(n,)``.
    rtol: relative cutoff of the pseudo-inverse (default :math:`\sqrt\epsilon`).

  >>> import jax.numpy as jnp
  >>> H = jnp.array([[2., 0.], [0., 0.], [-2., 0.], [0., 0.]])
  >>> round(float(fuzziness(H, jnp.array([0, 0, 1, 1]), 2)), 5)
  1.0
  """
  return _within_over_between(class_stats(H, labels, num_classes, weights), rtol)


def log_fuzziness(H: ArrayLike, labels: ArrayLike, num_classes: int,
                  weights: ArrayLike | None = None, rtol: float | None = None) -> Array:
  """``log D``, the quantity that the law says is linear in depth."""
  return jnp.log(fuzziness(H, labels, num_classes, weights, rtol))


def fisher_ratio(H: ArrayLike, labels: ArrayLike, num_classes: int,
                 weights: ArrayLike | None = None) -> Array:
  r"""Fisher's trace ratio :math:`\mathrm{Tr}\,\Sigma_B / \mathrm{Tr}\,\Sigma_W`."""
  st = class_stats(H, labels, num_classes, weights)
  between = jnp.sum(st.centred_means**2) / st.num_present
  within = jnp.sum(st.weights * jnp.sum(st.resid**2, -1))
  return between / within


def fuzziness_curve(features: Sequence[ArrayLike], labels: ArrayLike, num_classes: int,
                    weights: ArrayLike | None = None, rtol: float | None = None) -> Array:
  """:math:`D_l` for each entry of ``features`` (e.g. :func:`layer_features`), shape ``(L,)``."""
  return jnp.stack([fuzziness(H, labels, num_classes, weights, rtol) for H in features])


class LogLinearFit(NamedTuple):
  """Least-squares fit of ``log D_l = intercept + slope * l``.

  Attributes:
    slope: :math:`\\log\\rho`; negative when fuzziness decays with depth.
    intercept: :math:`\\log D_0` of the fit.
    r2: coefficient of determination of the fit (1 is a perfect law).
    ratio: :math:`\\rho = e^{\\text{slope}}`, the per-layer decay ratio.
  """
  slope: Array
  intercept: Array
  r2: Array
  ratio: Array


def fit_log_linear(values: ArrayLike, layers: ArrayLike | None = None) -> LogLinearFit:
  """Fits :math:`\\log D_l` linearly in ``l`` (He & Su 2023, Fig. 1).

  Args:
    values: positive ``(L,)`` fuzziness values (``L >= 2``).
    layers: ``(L,)`` layer indices; default ``0, 1, ..., L-1``.

  Returns:
    A :class:`LogLinearFit`.

  >>> import jax.numpy as jnp
  >>> fit = fit_log_linear(2.0 * 0.5 ** jnp.arange(5.0))
  >>> round(float(fit.ratio), 4), round(float(fit.r2), 4)
  (0.5, 1.0)
  """
  y = jnp.log(jnp.asarray(values))
  if y.ndim != 1 or y.shape[0] < 2:
    raise ValueError(f"values must be a vector of at least 2 layers, got shape {y.shape}")
  l = jnp.arange(y.shape[0], dtype=y.dtype) if layers is None else jnp.asarray(layers, y.dtype)
  lc, yc = l - l.mean(), y - y.mean()
  slope = (lc @ yc) / (lc @ lc)
  intercept = y.mean() - slope * l.mean()
  ss_res = jnp.sum((yc - slope * lc) ** 2)
  ss_tot = jnp.sum(yc**2)
  r2 = 1 - ss_res / jnp.where(ss_tot > 0, ss_tot, 1)
  return LogLinearFit(slope, intercept, r2, jnp.exp(slope))


# ----------------------------------------------------------------------------
# Per-layer features of a serial model.


def _prefix_outputs(model: Model, params: Any, x: Array, ctx: Ctx) -> list[Array]:
  """The output of every top-level layer of a serial model.

  In one pass through the layers (``Layer.outputs``, traced once); for a root
  layer without it, a serial's ``apply`` zips its layers with its params, so
  ``params[:k]`` runs the first ``k`` layers.
  """
  if not isinstance(params, tuple) or not params:
    raise ValueError("layer_features needs the params of a serial model (a non-empty tuple)")
  if model.layer.outputs is not None:
    return model.layer.outputs(params, x, Feat(), ctx)
  return [model.layer.apply(params[:k], x, Feat(), ctx)[0] for k in range(1, len(params) + 1)]


def _has_params(p) -> bool:
  return bool(jax.tree.leaves(p))


def layer_features(model: Model, params: Any, x: ArrayLike, ctx: Ctx = Ctx(),
                   where: str = "hidden", include_input: bool = False) -> list[Array]:
  """Activations of a serial model, layer by layer, for ONE network.

  Args:
    model: a model whose root layer is a ``serial`` (``nn.mlp``, ``nn.cnn``, ...),
      or a Flax linen / NNX / Equinox model (read through its ``Model.features``: ``'all'``
      is every submodule's output, ``'hidden'`` the input of every submodule
      but the first).
    params: its parameters.
    x: inputs ``(n, *input_shape)``.
    ctx: the run context (padded width, parametrization).
    where: ``'all'``: the output of every top-level layer (the last is the
      network output before the ``1/gamma`` of ``Model.apply``);
      ``'hidden'``: one representation per parametrised layer except the
      readout, taken after the parameter-free, shape-preserving layers that
      follow it (its nonlinearity), i.e. the post-activation features of each
      hidden layer, as in He & Su (2023).
    include_input: prepend ``x`` itself (layer 0).

  Returns:
    A list of arrays ``(n, ...)``.

  >>> import jax
  >>> from jaxtheory import nn
  >>> m = nn.mlp((4,), width=8, depth=3, out_dim=2)
  >>> hs = layer_features(m, m.init(jax.random.key(0)), jax.numpy.ones((5, 4)))
  >>> [h.shape for h in hs]
  [(5, 8), (5, 8), (5, 8)]
  """
  if where not in ("all", "hidden"):
    raise ValueError(f"where must be 'all' or 'hidden', got {where!r}")
  x = jnp.asarray(x)
  if model.features is not None:  # Flax / NNX / Equinox: 'all' its layers' outputs, 'hidden'
    # the inputs of its layers after the first (the post-activation hidden features).
    feats = (model.features(params, x, ctx) if where == "all"
             else model.features(params, x, ctx, inputs=True)[1:])
    return ([x] if include_input else []) + list(feats)
  outs = _prefix_outputs(model, params, x, ctx)
  if where == "all":
    feats = outs
  else:
    feats = []
    last_param = max((i for i, p in enumerate(params) if _has_params(p)), default=-1)
    i = 0
    while i < last_param:
      if not _has_params(params[i]):
        i += 1
        continue
      j = i
      while (j + 1 < last_param and not _has_params(params[j + 1])
             and outs[j + 1].shape == outs[j].shape):
        j += 1
      feats.append(outs[j])
      i = j + 1
  return ([x] if include_input else []) + list(feats)


def fuzziness_metric(num_classes: int, split: str = "train", rtol: float | None = None):
  """A recorded metric ``fn(params, apply, data, model, ctx) -> (L,)`` for ``Sweep(metrics=...)``.

  :math:`D_l` of every hidden layer (:func:`layer_features` with
  ``where='hidden'``) of the run's serial model, recorded inside the compiled
  sweep so the law can be watched forming along training.

  Args:
    num_classes: static ``C``.
    split: ``'train'`` (training labels after label noise, weighted by the
      active-example mask) or ``'test'``.
    rtol: pseudo-inverse cutoff.

  Returns:
    The metric function, its axis named ``layer`` in a sweep's results.
  """
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")

  def metric(params, apply, data, ctx, model):
    del apply
    x, y = data[f"x_{split}"], data[f"y_{split}"]
    w = data.get("w_train") if split == "train" else None
    return fuzziness_curve(layer_features(model, params, x, ctx), y, num_classes, w, rtol)

  return Metric(metric, ("layer",), inputs=("ctx", "model"))
