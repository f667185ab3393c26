r"""The coordinate check (Yang et al. 2021, "Tensor Programs V", Sec. 4 and App. D.1).

Under muP every layer's activations keep a width-independent *coordinate*
size, :math:`\frac{1}{n d}\sum_{i,j} |h_{ij}|` over ``n`` examples and ``d``
features, at init and after any number of steps; under SP they grow with the
width once training starts (like ``width^{1/2}`` to ``width^1`` after a few
steps at a fixed learning rate). Plotting the per-layer size against the width
at each of the first few steps, or fitting its width exponent, shows at a
glance whether a parametrization (or an implementation of one) is right.

What muP promises is about the *change from initialization*: after any fixed
number of steps, every layer's :math:`h_t - h_0` has width-independent
coordinates (Tensor Programs IV's maximal feature learning, V's desiderata),
while under SP at a fixed learning rate it grows with the width. The
activations themselves are width-independent under muP for hidden layers,
but not for the readout: muP initializes it small (its output starts like
``width^-1/2`` relative to a base width), so the size of the network output
is :math:`|f_0 + \Delta f|` and keeps a negative exponent until the
(width-independent) change dominates. :func:`change_sizes` and
:func:`coord_change_metric` measure the change; :func:`sizes` and
:func:`coord_metric` the activations (what the ``mup`` package plots by
default, its ``l1`` statistic).

Written for one run and recorded inside a sweep, like every probe here:

>>> from jaxtheory import data, nn, probes, sweep  # doctest: +SKIP
>>> s = sweep.Sweep(lambda w: nn.mlp((8,), w, 2, 1), data.teacher_student(input_dim=8),
...                 dict(width=[64, 256, 1024], seed=[0, 1]), "sgd", dict(lr=0.05),
...                 steps=4, record="every:1", loss="mse", parametrization="mup",
...                 metrics={"coord": probes.coord_metric()})  # doctest: +SKIP
>>> res = sweep.run(s)  # doctest: +SKIP
>>> probes.coord_check(res.coord, "coord.png")  # exponents per (step, layer)  # doctest: +SKIP

and the change from init with ``metrics={"change": probes.coord_change_metric()}``
(its record at step 0 is 0 up to float rounding; fit exponents from step 1 on).

Activations come from :func:`jaxtheory.probes.layer_features` for native
``serial`` models (the output of every layer that has parameters) and from
``Model.features`` for Flax and Equinox models (every submodule's output;
:mod:`jaxtheory.nn.flax`, :mod:`jaxtheory.nn.equinox`), also when they are
parametrized by :mod:`jaxtheory.nn.base_shapes`. Padded features are exactly
zero, so the mean runs over the features that are not zero for every example
(a padded sweep measures what the unpadded one does).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtheory.nn import Ctx, Model
from jaxtheory.probes.separation import layer_features
from jaxtheory.metric import Metric

Array = jax.Array


def activations(model: Model, params: Any, x: jax.typing.ArrayLike, ctx: Ctx = Ctx()) -> list:
  """Each layer's activations ``(n, ...)``, in order, ending with the network output.

  Native ``serial`` models: the output of every top-level layer that has
  parameters (pre-activations and the readout). Foreign models: their
  ``Model.features``.
  """
  x = jnp.asarray(x)
  if model.features is not None:
    return list(model.features(params, x, ctx))
  outs = layer_features(model, params, x, ctx, where="all")
  return [h for h, p in zip(outs, params) if jax.tree.leaves(p)]


def _coordinate_size(h: Array) -> Array:
  h = h.reshape(h.shape[0], -1)
  active = jnp.maximum(jnp.sum(jnp.any(h != 0, axis=0)), 1)
  return jnp.sum(jnp.abs(h)) / (h.shape[0] * active)


def sizes(model: Model, params: Any, x: jax.typing.ArrayLike, ctx: Ctx = Ctx()) -> Array:
  """Mean absolute coordinate per layer, a vector ``(layers,)`` (see the module doc)."""
  return jnp.stack([_coordinate_size(h) for h in activations(model, params, x, ctx)])


def change_sizes(model: Model, params0: Any, params: Any, x: jax.typing.ArrayLike,
                 ctx: Ctx = Ctx()) -> Array:
  """Mean absolute coordinate of each layer's *change* ``h(params) - h(params0)``.

  For one run from its initial and trained parameters (e.g.
  :func:`jaxtheory.sweep.initial_params` and ``sweep.execute(...)``
  mapped by :func:`jaxtheory.probes.over_runs`); inside a sweep,
  :func:`coord_change_metric` records it at every recording point. The mean
  runs over the features that are non-zero for some example before or after
  (padded features are zero in both, so they do not count; a layer
  initialized at zero, such as a zero readout, still counts all its own).
  """
  h0 = activations(model, params0, x, ctx)
  h1 = activations(model, params, x, ctx)
  out = []
  for a, b in zip(h0, h1):
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    active = jnp.maximum(jnp.sum(jnp.any((a != 0) | (b != 0), axis=0)), 1)
    out.append(jnp.sum(jnp.abs(b - a)) / (a.shape[0] * active))
  return jnp.stack(out)


def coord_metric(split: str = "x_train", max_examples: int | None = 256) -> Metric:
  """A recorded sweep metric: :func:`sizes` on the data (``dims=("layer",)``).

  Args:
    split: ``'x_train'`` or ``'x_test'``.
    max_examples: use the first examples only (the check needs few).
  """

  def fn(params, apply, d, ctx, model):
    del apply
    x = d[split] if max_examples is None else d[split][:max_examples]
    return sizes(model, params, x, ctx)

  return Metric(fn, ("layer",), inputs=("ctx", "model"))


def coord_change_metric(split: str = "x_train", max_examples: int | None = 256) -> Metric:
  """A recorded sweep metric: :func:`change_sizes` from the run's own init (``dims=("layer",)``).

  The metric takes the run's initial parameters (the ``params0`` input of
  :class:`~jaxtheory.metric.Metric`; the sweep keeps a copy of them in each
  run's state), so its record at step ``t`` is the mean absolute coordinate
  of :math:`h_t - h_0` per layer, 0 at step 0 (up to float rounding: the
  two passes may be compiled differently, ~1e-8 in float32). What muP holds
  width-independent (see the module doc).

  Args:
    split: ``'x_train'`` or ``'x_test'``.
    max_examples: use the first examples only (the check needs few).
  """

  def fn(params, apply, d, ctx, model, params0):
    del apply
    x = d[split] if max_examples is None else d[split][:max_examples]
    return change_sizes(model, params0, params, x, ctx)

  return Metric(fn, ("layer",), inputs=("ctx", "model", "params0"))


def coord_exponents(coord, width_dim: str = "width", average: tuple[str, ...] = ("seed",),
                    stderr: bool = False):
  """The fitted width exponent of every layer's coordinate size.

  Args:
    coord: an ``xarray.DataArray`` of :func:`coord_metric` or
      :func:`coord_change_metric` (dims include ``width`` and ``layer``), e.g.
      ``results.coord`` (a change is 0 at step 0: its exponent there is NaN).
    width_dim: the width dimension.
    average: dims averaged (in log space) before the fit, where present.
    stderr: also return the slope's standard error from the spread over
      ``average`` (the runs at different widths are independent draws, so
      the variance of each width's mean log size propagates through the
      least-squares weights; NaN with a single draw).

  Returns:
    ``slope`` of ``log size`` against ``log width``, an ``xarray.DataArray``
    over the remaining dims (``layer``, ``step``, ...); with ``stderr``,
    ``(slope, standard error)``.
  """
  with np.errstate(divide="ignore"):  # a change of 0 (step 0): log -inf, exponent NaN
    logs = np.log(coord)
  dims = [d for d in average if d in logs.dims]
  means = logs.mean(dims, skipna=False) if dims else logs
  w = np.log(means[width_dim].values.astype(float))
  wc = w - w.mean()
  centered = means - means.mean(width_dim)
  wx = type(coord)(wc, dims=(width_dim,), coords={width_dim: means[width_dim].values})
  with np.errstate(invalid="ignore"):
    slope = (centered * wx).sum(width_dim, skipna=False) / float(wc @ wc)
  if not stderr:
    return slope
  n = int(np.prod([logs.sizes[d] for d in dims])) if dims else 1
  var = (logs.var(dims, ddof=1, skipna=False) / n) if dims and n > 1 else means * np.nan
  return slope, np.sqrt((var * wx**2).sum(width_dim, skipna=False)) / float(wc @ wc)


def coord_check(coord, path=None, title: str | None = None):
  """Width exponents per layer (:func:`coord_exponents`) and, with ``path``, the figure (:func:`plot`).

  Returns:
    The exponents, an ``xarray.DataArray`` over ``layer`` (and ``step``, ...):
    about 0 at every step under muP; positive after the first steps under SP.
  """
  if path is not None:
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    plt.close(plot(coord, path, title=title))
  return coord_exponents(coord)


def plot(coord, path=None, step_dim: str = "step", title: str | None = None):
  """mup's coordinate-check figure: size vs width per layer, one panel per step.

  Args:
    coord: as for :func:`coord_exponents` (averaged over ``seed`` if present).
    path: save the figure there (PNG) if given.
    step_dim: the steps dimension (one panel each).
    title: the figure title.

  Returns:
    The matplotlib figure.
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  c = coord.mean("seed") if "seed" in coord.dims else coord
  steps = c[step_dim].values if step_dim in c.dims else [None]
  fig, axes = plt.subplots(1, len(steps), figsize=(3 * len(steps), 3), squeeze=False,
                           sharey=True)
  for ax, s in zip(axes[0], steps):
    cs = c if s is None else c.sel({step_dim: s})
    for l in cs.layer.values:
      ax.loglog(cs.width.values, cs.sel(layer=l).values, "o-", label=f"layer {l}")
    ax.set_xlabel("width")
    ax.set_title("init" if s == 0 else f"step {s}" if s is not None else "")
  axes[0][0].set_ylabel("mean |coordinate|")
  axes[0][-1].legend(fontsize="small")
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  if path is not None:
    fig.savefig(path, dpi=100)
  return fig
