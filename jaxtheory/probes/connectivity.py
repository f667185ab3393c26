r"""Linear mode connectivity and permutation alignment ("re-basin").

Linear paths. Frankle et al. (2020, "Linear mode connectivity and the lottery
ticket hypothesis") evaluate a network on the segment
:math:`\theta(\alpha) = (1-\alpha)\theta_A + \alpha\theta_B`; Entezari et al.
(2022, "The role of permutation invariance in linear mode connectivity") define
its *barrier*

.. math::
  B(\theta_A, \theta_B) = \max_{\alpha\in[0,1]}
  \big[\mathcal L(\theta(\alpha)) - ((1-\alpha)\mathcal L(\theta_A) + \alpha\mathcal L(\theta_B))\big],

estimated on a grid of ``num`` values of :math:`\alpha`. For an accuracy pass
the error ``1 - acc``. :func:`path` and :func:`barrier` are written for ONE
pair and map over stacked pairs with :func:`jaxtheory.probes.over_runs`.

Permutations. Hidden units between two dense/conv layers can be permuted
without changing the function. Ainsworth, Hayase & Srinivasa (2023, "Git
Re-Basin") align network B to network A before interpolating, by

* **weight matching** (their Alg. 1): coordinate descent over the hidden
  layers, each step maximising :math:`\sum_\ell \langle W^A_\ell, P_\ell W^B_\ell
  P_{\ell-1}^\top\rangle` over one :math:`P_\ell` with the others fixed, a linear
  assignment problem (``scipy.optimize.linear_sum_assignment``, on the host);
* **activation matching** (their Sec. 3.1, after Li et al. 2016 and Tatro et
  al. 2020): per layer, the assignment maximising the summed Pearson
  correlation of the matched units' activations on data.

Both run on the host through ``jax.pure_callback``, so they are jittable and
map (sequentially) over stacked pairs. The permutation structure is derived
from the params of a flat serial model (``nn.mlp``, ``nn.cnn``,
``nn.deep_linear``, ``nn.random_features``): one *group* of units per pair of
consecutive dense/conv layers, permuting the output axis of the first (weight
and bias) and the input axis of the second. Parameter-free layers between them
must act on each unit separately (elementwise nonlinearities, pooling, a
non-affine layer norm); a channels-last ``flatten`` of conv features into a
dense layer is detected from the shapes. A layer with other parameters between
two dense/conv layers (an affine layer norm, attention) and nested combinators
(residual blocks) raise a ``ValueError``.

Padded widths. Only *active* units are permuted: the first ``width`` units of
every group when ``width`` is given (the ``Ctx(width=...)`` of the run), else
the units with a nonzero weight or bias in either network (padded units are
exactly zero at init and stay zero). Inactive units stay in place, so a padded
network stays padded and computes the same function under its mask.

A permutation ``p`` of a group maps unit ``k`` of the result to unit ``p[k]``
of the input (``W_out[:, k] = W[:, p[k]]``); matching B to A returns the ``p``
with ``apply_permutation(params_b, p) ~ params_a``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from jaxtheory.nn import Ctx, Feat, Model

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
Params = Any

# ----------------------------------------------------------------------------
# Linear paths and barriers.


def interpolate(params_a: Params, params_b: Params, alphas: ArrayLike) -> Params:
  r""":math:`(1-\alpha)\theta_A + \alpha\theta_B`, stacked over ``alphas`` on a new leading axis.

  A scalar ``alpha`` gives a single pytree.

  >>> import jax.numpy as jnp
  >>> interpolate({"w": jnp.zeros(2)}, {"w": jnp.ones(2)}, jnp.array([0., .5]))["w"]
  Array([[0. , 0. ],
         [0.5, 0.5]], dtype=float32)
  """
  alphas = jnp.asarray(alphas)

  def mix(a, b):
    t = alphas.reshape(alphas.shape + (1,) * jnp.ndim(a)).astype(jnp.result_type(a, float))
    lead = (1,) * alphas.ndim  # explicit broadcasting over the alphas' axes
    return (1 - t) * jnp.reshape(a, lead + jnp.shape(a)) + t * jnp.reshape(b, lead + jnp.shape(b))

  return jax.tree.map(mix, params_a, params_b)


def path(fn: Callable, params_a: Params, params_b: Params, num: int = 11,
         alphas: ArrayLike | None = None, chunk: int | None = None) -> Any:
  """``fn`` along the linear path from ``params_a`` to ``params_b``.

  Args:
    fn: ``fn(params) -> pytree`` (a loss, an accuracy, a dict of both).
    params_a, params_b: the end points (same structure).
    num: number of equally spaced ``alpha`` in ``[0, 1]`` (static).
    alphas: explicit ``alpha`` values instead of ``num``.
    chunk: ``None`` vectorises every ``alpha``; an integer evaluates that
      many at a time (``lax.map``), bounding memory.

  Returns:
    ``fn``'s outputs with a leading ``alpha`` axis.
  """
  alphas = jnp.linspace(0.0, 1.0, num) if alphas is None else jnp.asarray(alphas)
  one = lambda t: fn(interpolate(params_a, params_b, t))
  if chunk is None:
    return jax.vmap(one)(alphas)
  return jax.lax.map(one, alphas, batch_size=chunk)


def barrier_from_path(values: Any, alphas: ArrayLike) -> Any:
  r"""Barrier of values along a path that starts at ``alpha=0`` and ends at ``alpha=1``.

  :math:`\max_k [v_k - ((1-\alpha_k) v_0 + \alpha_k v_{-1})]`, per leaf of ``values``.
  """
  alphas = jnp.asarray(alphas)

  def one(v):
    t = alphas.reshape(alphas.shape + (1,) * (v.ndim - 1))
    return jnp.max(v - ((1 - t) * v[:1] + t * v[-1:]), axis=0)

  return jax.tree.map(one, values)


def barrier(fn: Callable, params_a: Params, params_b: Params, num: int = 11,
            chunk: int | None = None) -> Any:
  r"""Loss barrier of the linear path (Entezari et al. 2022, Def. 1).

  :math:`\max_\alpha [\mathcal L(\theta(\alpha)) - ((1-\alpha)\mathcal L(\theta_A)
  + \alpha\mathcal L(\theta_B))]` over ``num`` equally spaced ``alpha``
  (``>= 2``; the end points included, so the barrier is ``>= 0``). For stacked
  pairs: ``over_runs(lambda a, b: barrier(fn, a, b), A, B)``.

  Args:
    fn: ``fn(params) -> scalar`` (or pytree of scalars), e.g.
      ``lambda p: cross_entropy(model.apply(p, x), y, w)``.
    params_a, params_b: the end points.
    num: grid size (static).
    chunk: see :func:`path`.

  >>> import jax.numpy as jnp
  >>> loss = lambda p: jnp.sum(p["w"] ** 2 * (1 - p["w"] ** 2))
  >>> round(float(barrier(loss, {"w": -jnp.ones(())}, {"w": jnp.ones(())}, num=3)), 6)
  0.0
  """
  if not isinstance(num, int) or num < 2:
    raise ValueError(f"num must be an integer >= 2, got {num!r}")
  alphas = jnp.linspace(0.0, 1.0, num)
  return barrier_from_path(path(fn, params_a, params_b, alphas=alphas, chunk=chunk), alphas)


# ----------------------------------------------------------------------------
# Permutation structure of a serial model.


class Group(NamedTuple):
  """One permutable set of hidden units.

  Attributes:
    producer: index (into the serial's params tuple) of the dense/conv layer
      whose output axis (weight axis -1 and bias) holds the units.
    consumer: index of the dense/conv layer reading them (weight axis -2).
    size: number of units (the capacity).
    repeat: the consumer's fan-in is ``repeat * size``: a channels-last
      ``flatten`` of ``repeat`` spatial positions lies in between (else 1).
  """
  producer: int
  consumer: int
  size: int
  repeat: int = 1


PermSpec = tuple[Group, ...]


def _kind(p) -> str:
  if not jax.tree.leaves(p):
    return "free"
  if isinstance(p, dict) and "W" in p and set(p) <= {"W", "b"} and jnp.ndim(p["W"]) >= 2:
    return "affine"
  if isinstance(p, (tuple, list)):
    return "nested"
  return "other"


def permutation_spec(params: Params) -> PermSpec:
  """The permutable hidden-unit groups of a flat serial model, from its params.

  Raises:
    ValueError: for params that are not a serial's tuple, nested combinators,
      a parametrised non-dense/conv layer between two dense/conv layers, fewer
      than two dense/conv layers, or inconsistent shapes.

  >>> import jax
  >>> from jaxtheory import nn
  >>> permutation_spec(nn.mlp((3,), 8, 2, 2).init(jax.random.key(0)))
  (Group(producer=0, consumer=2, size=8, repeat=1), Group(producer=2, consumer=4, size=8, repeat=1))
  """
  if not isinstance(params, tuple):
    raise ValueError("permutation alignment needs the params of a serial model (a tuple), "
                     f"got {type(params).__name__}")
  kinds = [_kind(p) for p in params]
  for i, k in enumerate(kinds):
    if k == "nested":
      raise ValueError(
          f"layer {i} is a nested combinator (residual, parallel or nested serial); permutation "
          "alignment supports only flat serial stacks of dense/conv layers")
  affine = [i for i, k in enumerate(kinds) if k == "affine"]
  if len(affine) < 2:
    raise ValueError("permutation alignment needs at least two dense/conv layers (one hidden "
                     f"layer); found {len(affine)}")
  groups = []
  for i, j in zip(affine[:-1], affine[1:]):
    for k in range(i + 1, j):
      if kinds[k] == "other":
        keys = sorted(params[k]) if isinstance(params[k], dict) else type(params[k]).__name__
        raise ValueError(
            f"layer {k} between dense/conv layers {i} and {j} has parameters {keys} (an affine "
            "layer norm, attention, ...): its units cannot be permuted with theirs; permutation "
            "alignment supports only parameter-free layers between dense/conv layers")
    size = jnp.shape(params[i]["W"])[-1]
    fan_in = jnp.shape(params[j]["W"])[-2]
    if fan_in % size:
      raise ValueError(f"layer {j} reads {fan_in} features but layer {i} writes {size} units")
    if "b" in params[i] and jnp.shape(params[i]["b"]) != (size,):
      raise ValueError(f"layer {i} has bias shape {jnp.shape(params[i]['b'])}, expected ({size},)")
    groups.append(Group(i, j, size, fan_in // size))
  return tuple(groups)


def _take_in(W, p, g: Group, xp):
  """Permutes the consumer's input axis (-2) of ``W`` by ``p`` (blocks of ``g.size``)."""
  if g.repeat == 1:
    return xp.take(W, p, axis=-2)
  sh = W.shape
  W = W.reshape(sh[:-2] + (g.repeat, g.size, sh[-1]))
  return xp.take(W, p, axis=-2).reshape(sh)


def apply_permutation(params: Params, perms: Sequence[ArrayLike],
                      spec: PermSpec | None = None) -> Params:
  """Params of the same function with the hidden units of each group permuted.

  Unit ``k`` of the result is unit ``perms[g][k]`` of ``params``. Jittable
  (the permutations may be traced); ``spec`` defaults to
  :func:`permutation_spec` of ``params``.
  """
  spec = permutation_spec(params) if spec is None else spec
  if len(perms) != len(spec):
    raise ValueError(f"got {len(perms)} permutations for {len(spec)} groups of units")
  out = list(params)
  for g, p in zip(spec, perms):
    p = jnp.asarray(p)
    if p.shape != (g.size,):
      raise ValueError(f"the permutation of layer {g.producer}'s units must have shape "
                       f"({g.size},), got {p.shape}")
    prod = dict(out[g.producer])
    prod["W"] = jnp.take(prod["W"], p, axis=-1)
    if "b" in prod:
      prod["b"] = jnp.take(prod["b"], p, axis=0)
    out[g.producer] = prod
    cons = dict(out[g.consumer])
    cons["W"] = _take_in(jnp.asarray(cons["W"]), p, g, jnp)
    out[g.consumer] = cons
  return tuple(out)


def active_units(params: Params, spec: PermSpec | None = None,
                 width: ArrayLike | None = None) -> tuple[Array, ...]:
  """Boolean masks of the active units of each group (jittable).

  ``width`` given: the first ``width`` units (every hidden layer of our
  models has ``width_mult=1``). Otherwise the units with any nonzero
  incoming weight, bias or outgoing weight.
  """
  spec = permutation_spec(params) if spec is None else spec
  if width is not None:
    return tuple(jnp.arange(g.size) < width for g in spec)
  masks = []
  for g in spec:
    Wp, Wc = params[g.producer]["W"], params[g.consumer]["W"]
    m = jnp.any(Wp.reshape(-1, g.size) != 0, axis=0)
    if "b" in params[g.producer]:
      m = m | (params[g.producer]["b"] != 0)
    Wc = Wc.reshape(Wc.shape[:-2] + (g.repeat, g.size, Wc.shape[-1]))
    m = m | jnp.any(jnp.moveaxis(Wc, -2, 0).reshape(g.size, -1) != 0, axis=1)
    masks.append(m)
  return tuple(masks)


def random_permutation(key, params: Params, spec: PermSpec | None = None,
                       width: ArrayLike | None = None) -> tuple[Array, ...]:
  """Uniformly random permutations of the active units of each group (jittable).

  Inactive units (see :func:`active_units`) stay in place.
  """
  spec = permutation_spec(params) if spec is None else spec
  masks = active_units(params, spec, width)
  perms = []
  for i, (g, m) in enumerate(zip(spec, masks)):
    u = jax.random.uniform(jax.random.fold_in(key, i), (g.size,))
    idx = jnp.arange(g.size)
    order = jnp.argsort(jnp.where(m, u, 2.0 + idx))  # active (shuffled), then inactive
    slots = jnp.argsort(jnp.where(m, idx, g.size + idx))  # active positions, then inactive
    perms.append(jnp.zeros((g.size,), jnp.int32).at[slots].set(order.astype(jnp.int32)))
  return tuple(perms)


def _spec_of_pair(params_a, params_b, spec):
  spec = permutation_spec(params_a) if spec is None else spec
  sa, sb = jax.tree.map(jnp.shape, params_a), jax.tree.map(jnp.shape, params_b)
  if jax.tree.structure(params_a) != jax.tree.structure(params_b) or sa != sb:
    raise ValueError("the two networks must have params of the same structure and shapes")
  return spec


def _assign(S: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Maximum-weight assignment restricted to the active units (others fixed)."""
  idx = np.flatnonzero(mask)
  p = np.arange(S.shape[0])
  if idx.size:
    _, cols = linear_sum_assignment(S[np.ix_(idx, idx)], maximize=True)
    p[idx] = idx[cols]
  return p


def _host(fn, spec, *args):
  """``fn(*args)`` on the host: called directly on concrete arrays (no program to compile),
  through ``jax.pure_callback`` under ``jit``/``vmap``."""
  if not any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(args)):
    return tuple(jnp.asarray(p) for p in fn(*args))
  out = tuple(jax.ShapeDtypeStruct((g.size,), jnp.int32) for g in spec)
  return jax.pure_callback(fn, out, *args, vmap_method="sequential")


# ----------------------------------------------------------------------------
# Weight matching.


def _wm_similarity(gi, spec, A, B, perms, outgoing=True):
  """``S[i, j]``: how well unit ``j`` of B (others permuted) matches unit ``i`` of A."""
  g = spec[gi]
  prev = next((h for h in range(len(spec)) if spec[h].consumer == g.producer), None)
  nxt = next((h for h in range(len(spec)) if spec[h].producer == g.consumer), None)
  Wa, Wb = A[g.producer]["W"], B[g.producer]["W"]
  if prev is not None:
    Wb = _take_in(Wb, perms[prev], spec[prev], np)
  S = Wa.reshape(-1, g.size).T @ Wb.reshape(-1, g.size)
  if "b" in A[g.producer]:
    S = S + np.outer(A[g.producer]["b"], B[g.producer]["b"])
  if not outgoing:
    return S
  Wa, Wb = A[g.consumer]["W"], B[g.consumer]["W"]
  if nxt is not None:
    Wb = np.take(Wb, perms[nxt], axis=-1)
  shape = Wa.shape[:-2] + (g.repeat, g.size, Wa.shape[-1])
  Wa = np.moveaxis(Wa.reshape(shape), -2, 0).reshape(g.size, -1)
  Wb = np.moveaxis(Wb.reshape(shape), -2, 0).reshape(g.size, -1)
  return S + Wa @ Wb.T


def weight_matching(params_a: Params, params_b: Params, spec: PermSpec | None = None,
                    width: ArrayLike | None = None, max_iter: int = 100,
                    seed: int = 0, init: str = "forward") -> tuple[Array, ...]:
  r"""Permutations aligning B's hidden units to A's by weight matching (Git Re-Basin, Alg. 1).

  Maximises :math:`\sum_\ell \langle W^A_\ell, P_\ell W^B_\ell P_{\ell-1}^\top\rangle`
  (biases included) by coordinate descent: in a random order of the groups
  (``seed``), each permutation is replaced by the solution of its linear
  assignment problem given the others, until a full sweep changes nothing or
  ``max_iter`` sweeps. Only active units are matched (see
  :func:`active_units`: ``width``, or the nonzero units of either network).

  The descent finds a local optimum. Ainsworth et al. start it from the
  identity (``init='identity'``); the default ``init='forward'`` starts it from
  one forward pass matching each layer's incoming weights and bias given the
  previous layer's permutation, which recovers a planted permutation of a
  network exactly whenever the incoming weight vectors of its units are
  distinct, where the identity start can stall (narrow layers, few inputs).

  Jittable and vmappable (a host callback, run sequentially over a batch).

  Args:
    params_a, params_b: the two networks (same structure and shapes).
    spec: permutation structure (default: :func:`permutation_spec` of A).
    width: the active width of every group (default: inferred).
    max_iter: maximum number of sweeps over the groups.
    seed: seed of the random group order.
    init: ``'forward'`` or ``'identity'``.

  Returns:
    One ``int32`` permutation per group; ``apply_permutation(params_b, perms)``
    is B aligned to A.
  """
  if init not in ("forward", "identity"):
    raise ValueError(f"init must be 'forward' or 'identity', got {init!r}")
  spec = _spec_of_pair(params_a, params_b, spec)
  ma, mb = active_units(params_a, spec, width), active_units(params_b, spec, width)
  masks = tuple(a | b for a, b in zip(ma, mb))
  layers = sorted({g.producer for g in spec} | {g.consumer for g in spec})
  pick = lambda params: {i: dict(params[i]) for i in layers}

  def host(A, B, masks):
    A = jax.tree.map(lambda a: np.asarray(a, np.float64), A)
    B = jax.tree.map(lambda a: np.asarray(a, np.float64), B)
    masks = [np.asarray(m) for m in masks]
    perms = [np.arange(g.size) for g in spec]
    if init == "forward":
      # Match incoming weights layer by layer, given the previous layer's match; the
      # outgoing term is left out because the next permutation is still unknown.
      for gi in range(len(spec)):
        S = _wm_similarity(gi, spec, A, B, perms, outgoing=False)
        perms[gi] = _assign(S, masks[gi])
    rng = np.random.default_rng(seed)
    for _ in range(max_iter):
      changed = False
      for gi in rng.permutation(len(spec)):
        S = _wm_similarity(gi, spec, A, B, perms)
        new = _assign(S, masks[gi])
        rows = np.arange(spec[gi].size)
        gain = S[rows, new].sum() - S[rows, perms[gi]].sum()
        if gain > 1e-12 * max(1.0, abs(S[rows, perms[gi]].sum())):
          perms[gi], changed = new, True
      if not changed:
        break
    return tuple(p.astype(np.int32) for p in perms)

  return _host(host, spec, pick(params_a), pick(params_b), masks)


# ----------------------------------------------------------------------------
# Activation matching.


def hidden_activations(model: Model, params: Params, x: ArrayLike, ctx: Ctx = Ctx(),
                       spec: PermSpec | None = None) -> tuple[Array, ...]:
  """The activations each group's consumer reads, as ``(samples, units)`` per group.

  Spatial positions (conv features, or the blocks of a flatten) count as
  samples. A serial's ``apply`` zips its layers with its params, so
  ``params[:k]`` runs the first ``k`` layers.
  """
  spec = permutation_spec(params) if spec is None else spec
  x = jnp.asarray(x)
  return tuple(model.layer.apply(params[:g.consumer], x, Feat(), ctx)[0].reshape(-1, g.size)
               for g in spec)


def _correlation(Za: Array, Zb: Array, eps: float = 1e-8) -> Array:
  """Pearson correlations ``(units_a, units_b)``; constant units correlate 0."""
  za = Za - Za.mean(0, keepdims=True)
  zb = Zb - Zb.mean(0, keepdims=True)
  za = za / (jnp.sqrt(jnp.mean(za**2, 0, keepdims=True)) + eps)
  zb = zb / (jnp.sqrt(jnp.mean(zb**2, 0, keepdims=True)) + eps)
  return jnp.matmul(za.T, zb, precision=jax.lax.Precision.HIGHEST) / Za.shape[0]


def activation_matching(model: Model, params_a: Params, params_b: Params, x: ArrayLike,
                        ctx: Ctx = Ctx(), spec: PermSpec | None = None,
                        width: ArrayLike | None = None) -> tuple[Array, ...]:
  """Permutations aligning B to A by correlating hidden activations on ``x``.

  For each group, the assignment maximising the summed Pearson correlation
  between unit ``k`` of A and unit ``p[k]`` of B over the examples (and
  spatial positions) of ``x`` (Ainsworth et al. 2023, Sec. 3.1; Li et al.
  2016). The groups are independent: B's activations do not depend on the
  permutations. Only active units are matched (see :func:`active_units`).
  Jittable and vmappable.

  Args:
    model: the serial model of both networks.
    params_a, params_b: the two networks.
    x: inputs ``(n, *input_shape)``.
    ctx: run context (padded width, parametrization).
    spec: permutation structure (default: from ``params_a``).
    width: active width (default: inferred from nonzero params).

  Returns:
    One ``int32`` permutation per group.
  """
  spec = _spec_of_pair(params_a, params_b, spec)
  ma, mb = active_units(params_a, spec, width), active_units(params_b, spec, width)
  masks = tuple(a | b for a, b in zip(ma, mb))
  acts_a = hidden_activations(model, params_a, x, ctx, spec)
  acts_b = hidden_activations(model, params_b, x, ctx, spec)
  corrs = tuple(_correlation(a, b) for a, b in zip(acts_a, acts_b))

  def host(corrs, masks):
    return tuple(_assign(np.asarray(c, np.float64), np.asarray(m)).astype(np.int32)
                 for c, m in zip(corrs, masks))

  return _host(host, spec, corrs, masks)


# ----------------------------------------------------------------------------
# Spawning: children of a shared checkpoint (stability to SGD noise).


def spawn_model(model: Model, params: Params) -> Model:
  """``model`` whose ``init`` returns ``params`` (a shared checkpoint) for every key.

  Frankle et al. (2020) test a network's *stability to SGD noise*: train it
  to step ``k``, spawn two children from that checkpoint that differ only in
  their SGD noise (minibatch order), train both and measure the barrier
  between them. In a sweep, ``Sweep(model=lambda w: spawn_model(m, ckpt), ...,
  grid=dict(seed=[1, 2]))`` trains such children: the engine's ``seed`` then
  draws only the data order. ``params`` must have the shapes ``model`` builds
  (one width, unpadded); the per-layer learning-rate scales are the model's own.

  >>> import jax
  >>> from jaxtheory import nn
  >>> m = nn.mlp((3,), 4, 1, 2)
  >>> p = m.init(jax.random.key(7))
  >>> q = spawn_model(m, p).init(jax.random.key(0))
  >>> bool(jax.tree.all(jax.tree.map(lambda a, b: (a == b).all(), p, q)))
  True
  """
  inner = model.layer
  fixed = jax.tree.map(jnp.asarray, params)

  def init(key, spec, ctx):
    out, own, scales = inner.init(key, spec, ctx)
    if jax.tree.map(jnp.shape, own) != jax.tree.map(jnp.shape, fixed):
      raise ValueError("spawn_model: the checkpoint's params do not have the shapes of the "
                       "model's (build the model at the checkpoint's width)")
    return out, jax.tree.map(lambda a, b: jnp.asarray(a, b.dtype), fixed, own), scales

  return model._replace(layer=inner._replace(init=init))
