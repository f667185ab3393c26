r"""Neural collapse: NC1-NC4 and CDNV of one network's penultimate features.

Papyan, Han & Donoho (2020, "Prevalence of neural collapse during the terminal
phase of deep learning training") observe four properties of the last-layer
features ``h_i`` (rows of ``H``, labels ``y_i`` in ``C`` classes) late in
training. With the class means :math:`\mu_c`, the global mean :math:`\mu_G`,
the centred means :math:`\tilde\mu_c = \mu_c - \mu_G` (rows of ``M``) and

.. math::
  \Sigma_W = \frac1N \sum_i (h_i - \mu_{y_i})(h_i - \mu_{y_i})^\top, \qquad
  \Sigma_B = \frac1C \sum_c \tilde\mu_c \tilde\mu_c^\top,

* NC1, within-class variability collapse: :math:`\mathrm{Tr}(\Sigma_W \Sigma_B^+)/C \to 0`;
* NC2, convergence to a simplex ETF: the norms :math:`\|\tilde\mu_c\|` become
  equal (``nc2_equinorm``: their coefficient of variation) and the cosines
  between centred means all equal :math:`-1/(C-1)` (``nc2_equiangle``: their
  standard deviation; ``nc2_cos_shift``: the mean of
  :math:`|\cos + 1/(C-1)|`); Han, Papyan & Donoho (2022) measure both at once as
  ``nc2_etf`` :math:`= \| MM^\top/\|MM^\top\|_F - (I - \mathbf{1}\mathbf{1}^\top/C)/\sqrt{C-1}\|_F`;
* NC3, self-duality of the readout ``W`` (``(d, C)`` in our layout):
  :math:`\| W^\top/\|W\|_F - M/\|M\|_F \|_F^2 \to 0`;
* NC4, the network's decision becomes the nearest-class-centre (NCC) rule:
  the fraction of examples where :math:`\arg\max_c f_c(x)` equals
  :math:`\arg\min_c \|h - \mu_c\|` tends to 1.

Galanti, Gyorgy & Hutter (2022, "On the role of neural collapse in transfer
learning") use the class-distance normalised variance

.. math::
  \mathrm{CDNV}(c, c') = \frac{\mathrm{Var}_c + \mathrm{Var}_{c'}}{2 \|\mu_c - \mu_{c'}\|^2},
  \qquad \mathrm{Var}_c = \mathbb{E}_{i \in c} \|h_i - \mu_c\|^2,

averaged over pairs ``c != c'`` (``cdnv``).

Every function is written for ONE network, takes the number of classes as a
static integer and is jittable; example ``weights`` (0/1 masks of a data-size
sweep, or any non-negative weights) weight every average. Classes with no
(weighted) example are left out of every class average, so a minibatch that
misses a class still gives finite numbers. Features may have any trailing
shape (flattened to ``(n, d)``); features padded with zero columns (a padded
width) give exactly the unpadded metrics, and every metric is invariant to
rescaling ``H`` by a positive constant.

:func:`penultimate` runs a model up to its readout (a native ``serial``, or a
Flax linen / NNX / Equinox model through its ``Model.penultimate``: the input
of its last submodule, which must be a dense layer); :func:`collapse_metric`
wraps the bundle as a recorded metric of a sweep.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxtheory.nn import Ctx, Feat, Model
from jaxtheory.metric import Metric

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

# Measurements, not training: full float32 matmuls even where the backend would use TF32.
_mm = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)

NAMES = ("nc1", "nc2_equinorm", "nc2_equiangle", "nc2_cos_shift", "nc2_etf",
         "nc2_w_equinorm", "nc2_w_etf", "nc3", "nc4", "cdnv")


class ClassStats(NamedTuple):
  """First and second moments of features per class (one network).

  Attributes:
    counts: ``(C,)`` weighted number of examples per class.
    present: ``(C,)`` boolean, classes with a positive count.
    global_mean: ``(d,)`` :math:`\\mu_G`, the weighted mean of all features.
    centred_means: ``(C, d)`` :math:`\\mu_c - \\mu_G` (zero rows for absent classes).
    resid: ``(n, d)`` :math:`h_i - \\mu_{y_i}`.
    weights: ``(n,)`` example weights normalised to sum to one.
    raw_weights: ``(n,)`` the example weights as given (ones by default).
    class_var: ``(C,)`` :math:`\\mathrm{Var}_c = \\mathbb{E}_{i\\in c}\\|h_i - \\mu_c\\|^2`.
  """
  counts: Array
  present: Array
  global_mean: Array
  centred_means: Array
  resid: Array
  weights: Array
  class_var: Array
  raw_weights: Array

  @property
  def num_present(self) -> Array:
    return jnp.sum(self.present)


def _flat(H: ArrayLike) -> Array:
  H = jnp.asarray(H)
  if not jnp.issubdtype(H.dtype, jnp.floating):
    H = H.astype(jnp.result_type(float))
  return H.reshape(H.shape[0], -1)


def _check_classes(num_classes):
  if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
    raise ValueError(f"num_classes must be a static integer >= 2, got {num_classes!r}")


def class_stats(H: ArrayLike, labels: ArrayLike, num_classes: int,
                weights: ArrayLike | None = None) -> ClassStats:
  """Class means, residuals and per-class variances of features ``H``.

  Features are centred by the global mean before the class means are taken,
  so the centred means sum to (float) zero even when the features share a
  large offset (post-ReLU features do).

  Args:
    H: features ``(n, ...)``, flattened to ``(n, d)``.
    labels: integer labels ``(n,)`` in ``[0, num_classes)``.
    num_classes: static number of classes ``C``.
    weights: optional ``(n,)`` non-negative example weights (a 0/1 mask).

  Returns:
    A :class:`ClassStats`.
  """
  _check_classes(num_classes)
  H = _flat(H)
  n = H.shape[0]
  labels = jnp.asarray(labels)
  if labels.shape != (n,):
    raise ValueError(f"labels must have shape ({n},) to match H, got {labels.shape}")
  raw = jnp.ones((n,), H.dtype) if weights is None else jnp.asarray(weights, H.dtype)
  w = raw / jnp.sum(raw)
  mu_G = _mm(w, H)
  Hc = H - mu_G[None]
  A = jax.nn.one_hot(labels, num_classes, dtype=H.dtype) * w[:, None]  # (n, C)
  counts = jnp.sum(A, 0)
  present = counts > 0
  safe = jnp.where(present, counts, 1)
  M = _mm(A.T, Hc) / safe[:, None]
  resid = Hc - M[labels]
  class_var = _mm(A.T, jnp.sum(resid**2, -1)) / safe
  return ClassStats(counts * jnp.sum(raw), present, mu_G, M, resid, w, class_var, raw)


def _rtol(dtype) -> float:
  return float(np.sqrt(np.finfo(dtype).eps))


def _within_over_between(st: ClassStats, rtol: float | None = None) -> Array:
  r""":math:`\mathrm{Tr}(\Sigma_W \Sigma_B^+)` without forming a ``d x d`` matrix.

  With the thin SVD :math:`M = U S V^\top` of the centred means
  (``C x d``), :math:`\Sigma_B = V S^2 V^\top / C'` (``C'`` present classes), so
  :math:`\mathrm{Tr}(\Sigma_W\Sigma_B^+) = C' \sum_k v_k^\top \Sigma_W v_k / s_k^2`,
  summing over singular values above ``rtol * s_max`` (default
  :math:`\sqrt{\epsilon}` of the dtype; a cutoff independent of ``d`` keeps
  padded == unpadded). Cost :math:`O(ndC + dC^2)`.
  """
  M = st.centred_means
  rtol = _rtol(M.dtype) if rtol is None else rtol
  _, s, Vt = jnp.linalg.svd(M, full_matrices=False)
  keep = s > rtol * s[0]
  proj = _mm(st.resid, Vt.T)  # (n, k)
  q = _mm(st.weights, proj**2)  # v_k^T Sigma_W v_k
  return st.num_present * jnp.sum(jnp.where(keep, q / jnp.where(keep, s, 1) ** 2, 0))


def _pair_mask(present: Array) -> Array:
  C = present.shape[0]
  return present[:, None] & present[None, :] & ~jnp.eye(C, dtype=bool)


def _cv(x: Array, mask: Array) -> Array:
  """Coefficient of variation (std / mean) of ``x`` over ``mask``."""
  k = jnp.sum(mask)
  mean = jnp.sum(jnp.where(mask, x, 0)) / k
  var = jnp.sum(jnp.where(mask, (x - mean) ** 2, 0)) / k
  return jnp.sqrt(var) / mean


def _etf_distance(V: Array, present: Array) -> Array:
  """``|| V V^T / ||V V^T||_F - (I - 11^T/C) / sqrt(C - 1) ||_F`` over present rows."""
  k = jnp.sum(present)
  G = _mm(V, V.T)
  pm = (present[:, None] & present[None, :]).astype(V.dtype)
  E = (jnp.eye(V.shape[0], dtype=V.dtype) - 1 / k) * pm
  return jnp.linalg.norm(G / jnp.linalg.norm(G) - E / jnp.sqrt(k - 1))


def _cosines(V: Array) -> Array:
  norms = jnp.linalg.norm(V, axis=-1)
  Vn = V / jnp.where(norms > 0, norms, 1)[:, None]
  return _mm(Vn, Vn.T)


def nc1(H: ArrayLike, labels: ArrayLike, num_classes: int, weights: ArrayLike | None = None,
        rtol: float | None = None) -> Array:
  r"""NC1 :math:`= \mathrm{Tr}(\Sigma_W \Sigma_B^+) / C` (Papyan et al. 2020, Fig. 6).

  ``C`` counts the classes present. ``rtol`` is the relative cutoff of the
  pseudo-inverse (default :math:`\sqrt{\epsilon}`).

  >>> import jax.numpy as jnp
  >>> H = jnp.array([[1., 0.], [1., 0.], [-1., 0.], [-1., 0.]])
  >>> float(nc1(H, jnp.array([0, 0, 1, 1]), 2))
  0.0
  """
  st = class_stats(H, labels, num_classes, weights)
  return _within_over_between(st, rtol) / st.num_present


def equinorm(H: ArrayLike, labels: ArrayLike, num_classes: int,
             weights: ArrayLike | None = None) -> Array:
  r"""NC2 equinorm: std / mean of :math:`\|\mu_c - \mu_G\|` over classes."""
  st = class_stats(H, labels, num_classes, weights)
  return _cv(jnp.linalg.norm(st.centred_means, axis=-1), st.present)


def equiangularity(H: ArrayLike, labels: ArrayLike, num_classes: int,
                   weights: ArrayLike | None = None) -> tuple[Array, Array]:
  r"""NC2 equiangularity of the centred class means.

  Returns:
    ``(std, shift)``: the standard deviation of :math:`\cos(\tilde\mu_c,
    \tilde\mu_{c'})` over pairs ``c != c'``, and the mean of
    :math:`|\cos + 1/(C-1)|` (zero for a simplex ETF; Papyan et al., Fig. 5).
  """
  st = class_stats(H, labels, num_classes, weights)
  return _angles(st.centred_means, st.present)


def _angles(V, present):
  pairs = _pair_mask(present)
  k = jnp.sum(pairs)
  cos = _cosines(V)
  mean = jnp.sum(jnp.where(pairs, cos, 0)) / k
  std = jnp.sqrt(jnp.sum(jnp.where(pairs, (cos - mean) ** 2, 0)) / k)
  shift = jnp.sum(jnp.where(pairs, jnp.abs(cos + 1 / (jnp.sum(present) - 1)), 0)) / k
  return std, shift


def etf_distance(H: ArrayLike, labels: ArrayLike, num_classes: int,
                 weights: ArrayLike | None = None) -> Array:
  r"""NC2 as one number (Han, Papyan & Donoho 2022):
  :math:`\| MM^\top/\|MM^\top\|_F - (I - \mathbf{1}\mathbf{1}^\top/C)/\sqrt{C-1}\|_F`."""
  st = class_stats(H, labels, num_classes, weights)
  return _etf_distance(st.centred_means, st.present)


def self_duality(H: ArrayLike, labels: ArrayLike, W: ArrayLike, num_classes: int,
                 weights: ArrayLike | None = None) -> Array:
  r"""NC3 :math:`= \| W^\top/\|W\|_F - M/\|M\|_F \|_F^2` for a readout ``W`` of shape ``(d, C)``.

  Rows of absent classes are dropped from both. Multipliers of a
  parametrization (a positive scalar on ``W``) do not change it.
  """
  st = class_stats(H, labels, num_classes, weights)
  return _self_duality(st, W)


def _self_duality(st: ClassStats, W):
  Wt = jnp.asarray(W, st.centred_means.dtype).reshape(-1, st.present.shape[0]).T
  Wt = Wt * st.present[:, None]
  M = st.centred_means
  return jnp.sum((Wt / jnp.linalg.norm(Wt) - M / jnp.linalg.norm(M)) ** 2)


def ncc_predict(H: ArrayLike, means: ArrayLike, present: ArrayLike | None = None) -> Array:
  """Nearest-class-centre labels: ``argmin_c ||h - means[c]||`` (absent classes never win)."""
  H = _flat(H)
  means = jnp.asarray(means, H.dtype)
  d2 = jnp.sum(means**2, -1)[None, :] - 2 * _mm(H, means.T)  # ||h||^2 is common to all classes
  if present is not None:
    d2 = jnp.where(jnp.asarray(present)[None, :], d2, jnp.inf)
  return jnp.argmin(d2, -1)


def ncc_agreement(H: ArrayLike, labels: ArrayLike, logits: ArrayLike, num_classes: int,
                  weights: ArrayLike | None = None) -> Array:
  """NC4: weighted fraction of examples where ``argmax(logits)`` is the NCC label.

  Class centres come from ``(H, labels)``; the rule is evaluated on the same
  examples. ``logits`` are the network's outputs ``(n, C)``.
  """
  st = class_stats(H, labels, num_classes, weights)
  return _ncc_agreement(st, H, logits)


def _ncc_agreement(st: ClassStats, H, logits):
  H = _flat(H)
  pred = ncc_predict(H - st.global_mean[None], st.centred_means, st.present)
  agree = (pred == jnp.argmax(logits, -1)).astype(st.weights.dtype)
  # Raw 0/1 weights sum exactly, so full agreement gives exactly 1.
  return jnp.sum(st.raw_weights * agree) / jnp.sum(st.raw_weights)


def cdnv(H: ArrayLike, labels: ArrayLike, num_classes: int,
         weights: ArrayLike | None = None) -> Array:
  r"""Class-distance normalised variance averaged over pairs (Galanti et al. 2022).

  :math:`\frac{1}{C(C-1)} \sum_{c \ne c'} \frac{\mathrm{Var}_c + \mathrm{Var}_{c'}}{2\|\mu_c - \mu_{c'}\|^2}`.
  """
  return _cdnv(class_stats(H, labels, num_classes, weights))


def _cdnv(st: ClassStats):
  M = st.centred_means
  sq = jnp.sum(M**2, -1)
  dist2 = sq[:, None] + sq[None, :] - 2 * _mm(M, M.T)
  pairs = _pair_mask(st.present)
  v = (st.class_var[:, None] + st.class_var[None, :]) / (2 * jnp.where(pairs, dist2, 1))
  return jnp.sum(jnp.where(pairs, v, 0)) / jnp.sum(pairs)


def collapse_metrics(H: ArrayLike, labels: ArrayLike, num_classes: int,
                     W: ArrayLike | None = None, b: ArrayLike | None = None,
                     logits: ArrayLike | None = None, weights: ArrayLike | None = None,
                     rtol: float | None = None) -> dict[str, Array]:
  """Every neural-collapse metric of one network, from one pass over ``H``.

  Args:
    H: penultimate features ``(n, ...)``.
    labels: integer labels ``(n,)``.
    num_classes: static ``C``.
    W: the readout ``(d, C)``; enables ``nc3``, ``nc2_w_equinorm``, ``nc2_w_etf``
      and (with ``b``) ``nc4`` from ``logits = H @ W + b``.
    b: the readout bias ``(C,)`` (optional).
    logits: the network's outputs ``(n, C)`` for ``nc4``; overrides ``W, b``
      (pass them when the readout carries a parametrization multiplier).
    weights: example weights ``(n,)``.
    rtol: pseudo-inverse cutoff of ``nc1``.

  Returns:
    A dict with the keys of :data:`NAMES` that the arguments allow: ``nc1``,
    ``nc2_equinorm``, ``nc2_equiangle``, ``nc2_cos_shift``, ``nc2_etf``,
    ``cdnv`` always; ``nc2_w_equinorm``, ``nc2_w_etf``, ``nc3`` with ``W``;
    ``nc4`` with ``W`` or ``logits``.
  """
  if W is not None and jnp.shape(W)[-1] != num_classes:
    raise ValueError(f"W must have shape (d, {num_classes}), got {jnp.shape(W)}")
  st = class_stats(H, labels, num_classes, weights)
  M, present = st.centred_means, st.present
  std, shift = _angles(M, present)
  out = {"nc1": _within_over_between(st, rtol) / st.num_present,
         "nc2_equinorm": _cv(jnp.linalg.norm(M, axis=-1), present),
         "nc2_equiangle": std, "nc2_cos_shift": shift,
         "nc2_etf": _etf_distance(M, present)}
  if W is not None:
    W = jnp.asarray(W, M.dtype)
    Wt = W.reshape(-1, num_classes).T
    out["nc2_w_equinorm"] = _cv(jnp.linalg.norm(Wt, axis=-1), present)
    out["nc2_w_etf"] = _etf_distance(Wt * present[:, None], present)
    out["nc3"] = _self_duality(st, W)
    if logits is None:
      logits = _mm(_flat(H), W.reshape(-1, num_classes)) + (
          0 if b is None else jnp.asarray(b)[None])
  if logits is not None:
    out["nc4"] = _ncc_agreement(st, H, logits)
  out["cdnv"] = _cdnv(st)
  return out


# ----------------------------------------------------------------------------
# Features before the readout (serial and foreign models), and a recorded metric.


def _truncate_last(params: Any) -> tuple[Any, dict]:
  """``(params without the readout, readout params)`` of a (nested) serial.

  A serial's ``apply`` zips its layers with its params, so a params tuple one
  entry short runs every layer but the last. Nested serials (e.g.
  ``fourier_mlp``) are descended through their last entry.
  """
  if not isinstance(params, tuple) or not params:
    raise ValueError("penultimate needs the params of a serial model (a non-empty tuple)")
  last = params[-1]
  if isinstance(last, dict) and "W" in last:
    return params[:-1], last
  if isinstance(last, tuple) and last:
    inner, readout = _truncate_last(last)
    return params[:-1] + (inner,), readout
  raise ValueError(
      "the last layer of this model is not a dense readout (its params are "
      f"{jax.tree.map(jnp.shape, last)!r}); penultimate features are undefined")


def _check_serial(params: Any, who: str):
  if not isinstance(params, tuple):
    raise ValueError(
        f"{who} needs the params of a serial model (a tuple), got a "
        f"{type(params).__name__}; for a Flax or Equinox model pass its model "
        f"(model=..., read through Model.penultimate)")


def readout(params: Any, model: Model | None = None, x: ArrayLike | None = None,
            ctx: Ctx = Ctx()) -> dict:
  """The readout's params ``{"W": (d, C), "b": (C,)}`` of a serial model.

  A foreign model (Flax linen, NNX, Equinox) finds its readout by running, so
  pass ``model`` and a batch ``x`` for it: the readout is then its last
  submodule's kernel and bias (:func:`penultimate`).
  """
  if model is not None and model.penultimate is not None:
    if x is None:
      raise ValueError("the readout of a Flax or Equinox model is found by running it: pass x")
    return model.penultimate(params, jnp.asarray(x), ctx)[1]
  _check_serial(params, "readout")
  return _truncate_last(params)[1]


def penultimate(model: Model) -> Callable:
  """A function ``(params, x, ctx=Ctx()) -> (features, readout_params)``.

  Runs every layer of a serial model but its dense readout, with the run
  context (padded width, parametrization) of ``ctx``; features are not divided
  by ``ctx.gamma``. ``readout_params`` is the readout's ``{"W", "b"}`` dict.

  A Flax linen, NNX or Equinox model (:func:`jaxtheory.nn.flax.from_linen`,
  :func:`~jaxtheory.nn.flax.from_nnx`, :func:`~jaxtheory.nn.equinox.from_eqx`)
  is read through its ``Model.penultimate``: the features are the input of
  its last submodule (in call order; the last layer of an ``eqx.nn.MLP`` or
  ``eqx.nn.Sequential``), the readout that submodule's kernel ``(d, C)`` and
  bias; a ``ValueError`` says so when it is not a dense layer
  (``linen.Dense``, ``nnx.Linear``, ``eqx.nn.Linear``).

  >>> import jax
  >>> from jaxtheory import nn
  >>> m = nn.mlp((4,), width=8, depth=2, out_dim=3)
  >>> H, ro = penultimate(m)(m.init(jax.random.key(0)), jax.numpy.ones((5, 4)))
  >>> H.shape, ro["W"].shape
  ((5, 8), (8, 3))
  """
  if model.penultimate is not None:

    def foreign(params, x, ctx: Ctx = Ctx()):
      return model.penultimate(params, jnp.asarray(x), ctx)

    return foreign

  def features(params, x, ctx: Ctx = Ctx()):
    _check_serial(params, "penultimate")
    body, ro = _truncate_last(params)
    H, _ = model.layer.apply(body, jnp.asarray(x), Feat(), ctx)
    return H, ro

  return features


def features_from_apply(apply: Callable, params: Any, x: ArrayLike, *,
                        model: Model | None = None, ctx: Ctx | None = None) -> Array:
  """Penultimate features, up to a positive scalar, from the network's own ``apply``.

  The dense readout's weight is swapped for the identity and its bias for
  zero, so ``apply`` returns ``c * H`` with ``c`` the readout multiplier of
  the parametrization divided by ``gamma`` (``c = 1`` in SP). Every metric of
  this module is invariant to that scalar, and ``apply`` carries the run's
  context (padded width, parametrization), so this is what a recorded metric
  of a sweep uses (it only sees ``apply(params, x)``).

  A foreign model cannot have its readout swapped (linen checks the shapes of
  its params, and NNX and Equinox params do not say which layer runs last),
  so for a Flax linen, NNX or Equinox model pass ``model`` (and the run's
  ``ctx``, default ``Ctx()``): the features are then its
  ``Model.penultimate``'s, exactly ``H`` (see :func:`penultimate`), and
  ``apply`` is not used.

  Args:
    apply: ``apply(params, x)``, the network with its run context.
    params: its parameters.
    x: inputs ``(n, *input_shape)``.
    model: the model; needed for a foreign model, ignored for a native one.
    ctx: the run context of a foreign model.

  Returns:
    The features ``(n, d)`` (a multiple ``c * H`` for native models).
  """
  if model is not None and model.penultimate is not None:
    return model.penultimate(params, jnp.asarray(x), Ctx() if ctx is None else ctx)[0]
  _check_serial(params, "features_from_apply")
  body, ro = _truncate_last(params)
  d = ro["W"].shape[-2]
  eye = {"W": jnp.eye(d, dtype=ro["W"].dtype)}
  if "b" in ro:
    eye["b"] = jnp.zeros((d,), ro["b"].dtype)
  return apply(_replace_last(params, eye), x)


def _replace_last(params, new):
  last = params[-1]
  if isinstance(last, dict) and "W" in last:
    return params[:-1] + (new,)
  return params[:-1] + (_replace_last(last, new),)


def collapse_metric(num_classes: int, feature_fn: Callable | None = None,
                    which: str | Sequence[str] = "nc1", split: str = "train") -> Metric:
  """A recorded metric ``fn(params, apply, data) -> array`` for ``Sweep(metrics=...)``.

  Args:
    num_classes: static ``C``.
    feature_fn: ``(params, x) -> features``; default
      :func:`features_from_apply` (exact for any parametrization and padded
      width, up to a scalar the metrics ignore); for a Flax linen, NNX or
      Equinox model, its ``Model.penultimate`` (see :func:`penultimate`).
    which: a name in :data:`NAMES`, or a sequence of names (then the metric
      is the vector of those values, in that order).
    split: ``'train'`` (training labels after label noise, weighted by the
      active-example mask) or ``'test'``.

  Returns:
    The metric function (it takes the run's ``ctx`` and ``model``). ``nc3``
    reads the readout ``W`` from ``params`` (a foreign model's from its last
    dense submodule); ``nc4`` compares ``apply(params, x)`` with the NCC rule.
  """
  _check_classes(num_classes)
  names = (which,) if isinstance(which, str) else tuple(which)
  for name in names:
    if name not in NAMES:
      raise ValueError(f"unknown collapse metric {name!r}; expected one of {', '.join(NAMES)}")
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")

  def metric(params, apply, data, ctx=None, model=None):
    x, y = data[f"x_{split}"], data[f"y_{split}"]
    w = data.get("w_train") if split == "train" else None
    if model is not None and model.penultimate is not None:  # Flax / Equinox
      H, ro = model.penultimate(params, jnp.asarray(x), Ctx() if ctx is None else ctx)
      H = H if feature_fn is None else feature_fn(params, x)
      W = ro["W"]
    else:
      H = features_from_apply(apply, params, x) if feature_fn is None else feature_fn(params, x)
      W = readout(params)["W"]
    logits = apply(params, x) if "nc4" in names else None
    out = collapse_metrics(H, y, num_classes, W=W, logits=logits, weights=w)
    vals = [out[n] for n in names]
    return vals[0] if isinstance(which, str) else jnp.stack(vals)

  # the axis name in a sweep's results (entries: ``which``)
  return Metric(metric, () if isinstance(which, str) else ("collapse",),
                inputs=("ctx", "model"))
