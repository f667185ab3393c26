r"""Curvature of a loss: Hessian and Gauss-Newton products, top eigenvalues, trace, spectral density.

Everything is written for ONE network and is jittable with fixed iteration
counts and an explicit ``key``, so :func:`jaxtheory.probes.over_runs` (``vmap``
or ``lax.map``) runs it over every seed and width of a sweep in one call.

The curvature matrix is never formed. :func:`hessian` and :func:`gauss_newton`
return an :class:`Operator`: a matrix-vector product on the flat vector of the
selected parameters. The estimators take an operator:

* :func:`lanczos` (full reorthogonalisation) and :func:`top_eigenvalues`,
* :func:`power_iteration` (largest-magnitude eigenvalue),
* :func:`hutchinson_trace` (estimate and standard error),
* :func:`spectral_density` (stochastic Lanczos quadrature, Ghorbani et al. 2019).

>>> import jax, jax.numpy as jnp
>>> A = jnp.diag(jnp.arange(1.0, 6.0))
>>> op = hessian(lambda x: 0.5 * x @ A @ x, jnp.zeros(5))
>>> float(top_eigenvalues(op, jax.random.key(0), k=1, num_iters=5)[0])  # doctest: +ELLIPSIS
5.0...

A parameter subset (one layer, only weights, ...) is chosen with ``select``: a
pytree of Python booleans shaped like (a prefix of) ``params``, or a
predicate ``select(path, leaf) -> bool`` over :func:`jax.tree_util.keystr`-able
key paths. The operator is then the principal sub-block of the curvature on
those leaves (the others held fixed).

Padded width sweeps: padded parameters do not enter the loss at all (their
activations are masked to exact zeros), so the curvature is exactly zero on
them: top eigenvalues and the trace are those of the active network (an extra
eigenvalue 0 aside). The spectral density, however, counts the padded
coordinates as a point mass at 0; pass ``mask`` (a pytree of 0/1 or booleans
marking the active parameters, e.g. from :func:`active_mask`) to draw probe
vectors on the active coordinates only, which makes the density that of the
active network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxtheory.losses import LOSSES

Array = jax.Array
PyTree = Any


class Operator(NamedTuple):
  """A symmetric linear operator on the flat vector of the selected parameters.

  Attributes:
    matvec: ``v -> M v`` on flat vectors of length ``dim``.
    dim: the number of selected parameters (static).
    mask: ``None`` or a flat 0/1 vector marking the active coordinates; probe
      vectors are drawn on them only (padded sweeps).
    unravel: flat vector -> pytree shaped like the full ``params`` (zeros on
      the leaves that were not selected).
    dtype: dtype of the flat vectors.
  """
  matvec: Callable[[Array], Array]
  dim: int
  mask: Array | None
  unravel: Callable[[Array], PyTree]
  dtype: Any


class Lanczos(NamedTuple):
  """The result of ``m`` Lanczos steps: ``V^T M V = T`` (tridiagonal).

  Attributes:
    alpha: diagonal of ``T``, shape ``(m,)``.
    beta: off-diagonal of ``T``, shape ``(m - 1,)``.
    basis: the orthonormal Lanczos vectors ``V``, shape ``(m, dim)``.
  """
  alpha: Array
  beta: Array
  basis: Array

  def tridiagonal(self) -> Array:
    """The ``(m, m)`` matrix ``T``."""
    return jnp.diag(self.alpha) + jnp.diag(self.beta, 1) + jnp.diag(self.beta, -1)


class Density(NamedTuple):
  """A spectral density estimate (stochastic Lanczos quadrature).

  Attributes:
    grid: points ``t`` where the density is evaluated, shape ``(num_points,)``.
    density: the Gaussian-broadened density on ``grid`` (integrates to ~1).
    nodes: Ritz values ``theta`` per probe, shape ``(num_probes, num_iters)``.
    weights: quadrature weights ``tau`` per probe (each row sums to 1).
  """
  grid: Array
  density: Array
  nodes: Array
  weights: Array


# ----------------------------------------------------------------------------
# Products with the curvature.


def hvp(loss_fn: Callable[[PyTree], Array], params: PyTree, v: PyTree) -> PyTree:
  r"""Hessian-vector product :math:`\nabla^2 L(\theta)\, v` by forward-over-reverse.

  ``jvp`` of ``grad``: one forward and one backward pass, in pytrees.

  Args:
    loss_fn: ``params -> scalar``.
    params: the point :math:`\theta`.
    v: a tangent shaped like ``params``.

  Returns:
    :math:`H v`, shaped like ``params``.
  """
  return jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]


def ggn_vp(fn: Callable[[PyTree], Array], out_loss: Callable[[Array], Array], params: PyTree,
           v: PyTree) -> PyTree:
  r"""Generalised Gauss-Newton product :math:`J^\top H_{\mathrm{out}} J v`.

  With :math:`L(\theta) = \ell(f(\theta))`, :math:`J = \partial f/\partial\theta`
  and :math:`H_{\mathrm{out}} = \nabla^2_z \ell(z)` at :math:`z = f(\theta)`
  (Schraudolph 2002; Martens 2014). The GGN is positive semi-definite for
  convex :math:`\ell` and drops the term :math:`\sum_k \partial_k\ell\,\nabla^2 f_k`
  of the Hessian.

  Args:
    fn: ``params -> outputs`` (e.g. ``lambda p: apply(p, x)``).
    out_loss: ``outputs -> scalar`` (e.g. ``lambda z: mse(z, y, w)``).
    params: the point.
    v: a tangent shaped like ``params``.
  """
  z, Jv = jax.jvp(fn, (params,), (v,))
  HJv = jax.jvp(jax.grad(out_loss), (z,), (Jv,))[1]
  return jax.vjp(fn, params)[1](HJv)[0]


def _split(params: PyTree, select, mask):
  """``(selected leaves, rebuild(selected) -> params, flat mask or None)``."""
  leaves_p, treedef = jax.tree_util.tree_flatten_with_path(params)
  if select is None:
    chosen = [True] * len(leaves_p)
  elif callable(select):
    chosen = [bool(select(path, leaf)) for path, leaf in leaves_p]
  else:
    try:
      full = jax.tree.broadcast(select, params)
    except (ValueError, TypeError) as e:
      raise ValueError("select must be a pytree of booleans shaped like (a prefix of) params, "
                       f"or a predicate select(path, leaf) -> bool: {e}") from None
    chosen = []
    for s in jax.tree.leaves(full):
      if not isinstance(s, (bool, np.bool_)):
        raise ValueError(f"select leaves must be Python booleans (static), got {type(s).__name__}")
      chosen.append(bool(s))
  if not any(chosen):
    raise ValueError("select chose no parameters")
  leaves = [l for _, l in leaves_p]
  sel = [l for l, c in zip(leaves, chosen) if c]

  def rebuild(new_sel):
    it = iter(new_sel)
    return jax.tree_util.tree_unflatten(treedef, [next(it) if c else l
                                                  for l, c in zip(leaves, chosen)])

  flat_mask = None
  if mask is not None:
    m_leaves = jax.tree.leaves(jax.tree.broadcast(mask, params))
    m_sel = [jnp.broadcast_to(m, jnp.shape(l)) for m, l, c in zip(m_leaves, leaves, chosen) if c]
    flat_mask = jnp.concatenate([jnp.ravel(m) for m in m_sel])
  return sel, rebuild, flat_mask


def _operator(make_matvec, params, select, mask) -> Operator:
  sel, rebuild, flat_mask = _split(params, select, mask)
  x0, unravel_sel = ravel_pytree(sel)
  f_of_flat = lambda x: rebuild(unravel_sel(x))
  matvec_tree = make_matvec(f_of_flat, x0)
  zeros = jax.tree.map(jnp.zeros_like, params)
  _, rebuild_zero, _ = _split(zeros, select, None)
  if flat_mask is not None:
    flat_mask = flat_mask.astype(x0.dtype)
    inner = matvec_tree
    matvec_tree = lambda v: flat_mask * inner(flat_mask * v)
  return Operator(matvec_tree, int(x0.size), flat_mask,
                  lambda v: rebuild_zero(unravel_sel(v)), x0.dtype)


def hessian(loss_fn: Callable[[PyTree], Array], params: PyTree, select=None,
            mask: PyTree | None = None) -> Operator:
  r"""The Hessian :math:`\nabla^2 L(\theta)` (restricted to ``select``) as an operator.

  Products are forward-over-reverse (:func:`jax.linearize` of the gradient:
  the forward and backward passes are linearised once and each product then
  costs about one more backward pass).

  Args:
    loss_fn: ``params -> scalar``.
    params: the point :math:`\theta`.
    select: ``None`` (every leaf), a pytree of Python booleans shaped like
      (a prefix of) ``params``, or ``select(path, leaf) -> bool``.
    mask: optional pytree (prefix) of 0/1 marking active parameters (padding).

  Returns:
    An :class:`Operator` on the flat vector of the selected leaves.
  """

  def make(f_of_flat, x0):
    return jax.linearize(jax.grad(lambda x: loss_fn(f_of_flat(x))), x0)[1]

  return _operator(make, params, select, mask)


def gauss_newton(fn: Callable[[PyTree], Array], out_loss: Callable[[Array], Array],
                 params: PyTree, select=None, mask: PyTree | None = None) -> Operator:
  r"""The generalised Gauss-Newton matrix :math:`J^\top H_{\mathrm{out}} J` as an operator.

  See :func:`ggn_vp`. ``J`` is linearised once (``jax.linearize``) and
  transposed (:func:`jax.linear_transpose`); :math:`H_{\mathrm{out}}` is the
  linearised gradient of ``out_loss`` at the outputs.

  Args:
    fn: ``params -> outputs``.
    out_loss: ``outputs -> scalar``.
    params: the point.
    select: parameter subset, as in :func:`hessian`.
    mask: active parameters, as in :func:`hessian`.
  """

  def make(f_of_flat, x0):
    z, J = jax.linearize(lambda x: fn(f_of_flat(x)), x0)
    JT = jax.linear_transpose(J, x0)
    H = jax.linearize(jax.grad(out_loss), z)[1]
    return lambda v: JT(H(J(v)))[0]

  return _operator(make, params, select, mask)


def active_mask(fn: Callable[[PyTree], Array], params: PyTree, key) -> PyTree:
  """Boolean pytree marking the parameters that ``fn``'s output depends on.

  For padded width sweeps (the ``mask`` of :func:`hessian`): padded
  parameters never reach the output (their activations are masked to exact
  zeros), so their gradient is exactly zero at ANY point. This takes the
  gradient of a random projection of ``fn(params + noise)``; an active
  parameter has a nonzero gradient almost surely (unless, e.g., a ReLU unit is
  dead on every input given).

  Args:
    fn: ``params -> outputs`` of one run (e.g. ``lambda p: apply(p, x)``).
    params: the run's parameters (at the capacity width).
    key: PRNG key for the perturbation and the projection.
  """
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves) + 1)
  noisy = jax.tree.unflatten(treedef, [
      l + 0.1 * jax.random.normal(k, jnp.shape(l), jnp.result_type(l))
      for l, k in zip(leaves, keys[1:])])
  out = fn(noisy)
  r = jax.random.normal(keys[0], jnp.shape(out), jnp.result_type(out))
  g = jax.grad(lambda p: jnp.sum(fn(p) * r))(noisy)
  return jax.tree.map(lambda a: a != 0, g)


# ----------------------------------------------------------------------------
# Estimators.


def _probe(op: Operator, key, rademacher: bool = False) -> Array:
  if rademacher:
    v = jax.random.rademacher(key, (op.dim,), op.dtype)
  else:
    v = jax.random.normal(key, (op.dim,), op.dtype)
  return v if op.mask is None else v * op.mask


def _orth(V, w):
  """``w`` orthogonalised twice against the rows of ``V`` ("twice is enough")."""
  for _ in range(2):
    w = w - V.T @ (V @ w)
  return w


def _restart_vector(V, key, mask):
  r = _orth(V, jax.random.normal(key, V.shape[1:], V.dtype) * mask)
  return _divide(r, jnp.linalg.norm(r))


def _divide(w, b):
  return w / jnp.where(b > 0, b, 1.0)


def _next_vector_cond(broke, w, b, V, key, mask):
  """The next Lanczos vector: ``w / b``, or a fresh random one orthogonal to ``V`` if ``broke``."""
  return jax.lax.cond(broke, lambda: _restart_vector(V, key, mask), lambda: _divide(w, b))


@jax.custom_jvp
def _next_vector(broke, w, b, V, key, mask):
  """:func:`_next_vector_cond`, mapped over runs without drawing a restart at every step."""
  return _next_vector_mapped(broke, w, b, V, key, mask)


@_next_vector.defjvp
def _next_vector_jvp(primals, tangents):
  # Differentiated, it is the plain conditional (custom_vmap has no derivative rules).
  return jax.jvp(_next_vector_cond, primals, tangents)


@jax.custom_batching.custom_vmap
def _next_vector_mapped(broke, w, b, V, key, mask):
  return _next_vector_cond(broke, w, b, V, key, mask)


@_next_vector_mapped.def_vmap
def _next_vector_vmap(axis_size, in_batched, broke, w, b, V, key, mask):
  # Mapped over runs, a lax.cond on a per-run predicate becomes a select that draws and
  # orthogonalises a restart vector for every run at every step. Restarts are rare: draw
  # them only at a step where some run broke down.
  axes = [0 if batched else None for batched in in_batched]
  plain = jax.vmap(_divide, in_axes=axes[1:3], axis_size=axis_size)(w, b)

  def restarted():
    fresh = jax.vmap(_restart_vector, in_axes=axes[3:], axis_size=axis_size)(V, key, mask)
    where = jnp.broadcast_to(broke, (axis_size,))[:, None]
    return jnp.where(where, fresh, plain)

  return jax.lax.cond(jnp.any(broke), restarted, lambda: plain), True


def lanczos(op: Operator, key, num_iters: int = 20, v0: Array | None = None) -> Lanczos:
  r"""``num_iters`` Lanczos steps with full reorthogonalisation.

  Builds an orthonormal basis :math:`V` of the Krylov space
  :math:`\{v_0, Mv_0, \dots, M^{m-1}v_0\}` and the tridiagonal
  :math:`T = V^\top M V` (Lanczos 1950). Every new vector is
  orthogonalised twice against all previous ones ("twice is enough", Parlett),
  so Ritz values do not duplicate. When the Krylov space is exhausted
  (:math:`\beta_j \approx 0`) the process restarts from a fresh random vector
  orthogonal to the basis and sets :math:`\beta_j = 0` (``T`` becomes block
  diagonal and stays exact). ``num_iters`` is capped at ``op.dim``.

  Args:
    op: the symmetric operator.
    key: PRNG key for the start (and restart) vectors.
    num_iters: Lanczos steps ``m`` (static).
    v0: optional start vector (flat); random Gaussian otherwise.

  Returns:
    A :class:`Lanczos` with ``alpha (m,)``, ``beta (m-1,)``, ``basis (m, dim)``.
  """
  m = int(min(num_iters, op.dim))
  if m < 1:
    raise ValueError(f"num_iters must be >= 1, got {num_iters}")
  k0, key = jax.random.split(key)
  v = _probe(op, k0) if v0 is None else jnp.asarray(v0, op.dtype)
  v = v / jnp.linalg.norm(v)
  eps = jnp.finfo(op.dtype).eps
  # One spare row: step j writes v_{j+1} into row j + 1 unconditionally.
  V = jnp.zeros((m + 1, op.dim), op.dtype).at[0].set(v)

  mask = jnp.ones((), op.dtype) if op.mask is None else op.mask

  def body(j, carry):
    V, alpha, beta = carry
    vj = V[j]
    w = op.matvec(vj)
    a = jnp.vdot(vj, w)
    scale = jnp.linalg.norm(w)
    w = _orth(V, w)  # rows > j are still zero: this is against v_0..v_j
    b = jnp.linalg.norm(w)
    # Invariant subspace found: restart with a random vector orthogonal to V.
    broke = b <= 1e3 * eps * jnp.maximum(scale, jnp.finfo(op.dtype).tiny)
    nxt = _next_vector(broke, w, b, V, jax.random.fold_in(key, j), mask)
    return V.at[j + 1].set(nxt), alpha.at[j].set(a), beta.at[j].set(jnp.where(broke, 0.0, b))

  alpha = jnp.zeros((m,), op.dtype)
  beta = jnp.zeros((m,), op.dtype)
  V, alpha, beta = jax.lax.fori_loop(0, m, body, (V, alpha, beta))
  V = V[:m]
  return Lanczos(alpha, beta[:m - 1], V)


def _ritz(lz: Lanczos):
  theta, U = jnp.linalg.eigh(lz.tridiagonal())
  return theta, U


def top_eigenvalues(op: Operator, key, k: int = 1, num_iters: int = 20,
                    return_vectors: bool = False):
  r"""The ``k`` largest eigenvalues (Ritz values of a :func:`lanczos` run), descending.

  Extreme eigenvalues converge first (Kaniel-Paige theory); ``num_iters``
  of 2-3 times ``k`` plus ~20 is usually ample for well-separated top
  eigenvalues, as in PyHessian (Yao et al. 2020), which runs the same
  iteration per model.

  Args:
    op: symmetric operator (e.g. :func:`hessian`).
    key: PRNG key.
    k: how many (static, ``<= num_iters``).
    num_iters: Lanczos steps (static).
    return_vectors: also return the Ritz vectors as pytrees shaped like
      ``params`` (leading axis ``k``).

  Returns:
    ``(k,)`` eigenvalues, or ``(eigenvalues, vectors)``.
  """
  m = min(num_iters, op.dim)
  if k > m:
    raise ValueError(f"k={k} exceeds the number of Lanczos steps {m}")
  lz = lanczos(op, key, num_iters)
  theta, U = _ritz(lz)
  vals = theta[::-1][:k]
  if not return_vectors:
    return vals
  vecs = (lz.basis.T @ U[:, ::-1][:, :k]).T
  return vals, jax.vmap(op.unravel)(vecs)


def power_iteration(op: Operator, key, num_iters: int = 20):
  r"""The largest-magnitude eigenvalue by power iteration.

  :math:`v \leftarrow Mv/\|Mv\|`, eigenvalue the Rayleigh quotient
  :math:`v^\top M v`. Converges like :math:`|\lambda_2/\lambda_1|^{t}`: use
  :func:`top_eigenvalues` (Lanczos) when the top gap is small, and note that
  a Hessian with a large negative eigenvalue returns that one.

  Args:
    op: symmetric operator.
    key: PRNG key for the start vector.
    num_iters: iterations (static).

  Returns:
    ``(eigenvalue, eigenvector)``, the vector a pytree shaped like ``params``.
  """
  v = _probe(op, key)
  v = v / jnp.linalg.norm(v)

  def body(_, v):
    w = op.matvec(v)
    n = jnp.linalg.norm(w)
    return jnp.where(n > 0, w / jnp.where(n > 0, n, 1.0), v)

  v = jax.lax.fori_loop(0, num_iters, body, v)
  return jnp.vdot(v, op.matvec(v)), op.unravel(v)


def hutchinson_trace(op: Operator, key, num_samples: int = 100):
  r"""Hutchinson's trace estimate and its standard error.

  :math:`\mathrm{tr}(M) \approx \frac1S\sum_{s} z_s^\top M z_s` with
  Rademacher :math:`z_s` (Hutchinson 1989); the standard error is the sample
  standard deviation over :math:`\sqrt S`. For a Hessian,
  :math:`\mathrm{Var}(z^\top M z) = 2\sum_{i\ne j} M_{ij}^2`.

  Args:
    op: symmetric operator.
    key: PRNG key.
    num_samples: probe vectors ``S`` (static, ``>= 2``).

  Returns:
    ``(estimate, standard_error)``.
  """
  if num_samples < 2:
    raise ValueError(f"num_samples must be >= 2 for a standard error, got {num_samples}")

  def body(i, acc):
    z = _probe(op, jax.random.fold_in(key, i), rademacher=True)
    q = jnp.vdot(z, op.matvec(z))
    return acc[0] + q, acc[1] + q * q

  zero = jnp.zeros((), op.dtype)
  s1, s2 = jax.lax.fori_loop(0, num_samples, body, (zero, zero))
  mean = s1 / num_samples
  var = jnp.maximum(s2 / num_samples - mean ** 2, 0.0) * num_samples / (num_samples - 1)
  return mean, jnp.sqrt(var / num_samples)


def spectral_density(op: Operator, key, num_iters: int = 50, num_probes: int = 4,
                     grid: Array | None = None, num_points: int = 512,
                     sigma: float | Array | None = None) -> Density:
  r"""Eigenvalue density by stochastic Lanczos quadrature (Ghorbani et al. 2019).

  For each of ``num_probes`` Gaussian start vectors a ``num_iters``-step
  Lanczos run gives Ritz values :math:`\theta_i` and weights
  :math:`\tau_i = (U_{1i})^2` (squared first components of the eigenvectors of
  ``T``): the Gauss quadrature of the spectral measure
  :math:`\frac1n\sum_k \delta_{\lambda_k}` seen from the probe (Golub & Meurant;
  Lin, Saad & Yang 2016). The density is

  .. math:: \phi_\sigma(t) = \frac{1}{n_v}\sum_{v=1}^{n_v}\sum_{i=1}^{m}
            \tau^{(v)}_i\, \frac{1}{\sqrt{2\pi}\sigma}
            e^{-(t-\theta^{(v)}_i)^2/(2\sigma^2)}.

  Args:
    op: symmetric operator.
    key: PRNG key.
    num_iters: Lanczos steps per probe (static).
    num_probes: probe vectors (static).
    grid: points where to evaluate; default ``num_points`` points spanning the
      Ritz values with a margin of ``5 sigma`` (traced, so it may differ
      between runs of a sweep).
    num_points: size of the default grid (static).
    sigma: Gaussian width; default 1% of the Ritz-value range.

  Returns:
    A :class:`Density`.
  """
  keys = jax.random.split(key, num_probes)

  def one(k):
    theta, U = _ritz(lanczos(op, k, num_iters))
    return theta, U[0] ** 2

  nodes, weights = jax.lax.map(one, keys)
  lo, hi = jnp.min(nodes), jnp.max(nodes)
  span = jnp.maximum(hi - lo, jnp.maximum(jnp.abs(hi), 1.0) * 1e-3)
  sigma = 0.01 * span if sigma is None else jnp.asarray(sigma, op.dtype)
  if grid is None:
    grid = jnp.linspace(lo - 5 * sigma, hi + 5 * sigma, num_points, dtype=op.dtype)
  grid = jnp.asarray(grid, op.dtype)
  g = jnp.exp(-0.5 * ((grid[:, None] - nodes.ravel()[None, :]) / sigma) ** 2)
  g = g / (jnp.sqrt(2 * jnp.pi) * sigma)
  density = g @ weights.ravel() / num_probes
  return Density(grid, density, nodes, weights)


def density_cdf(d: Density, t: Array) -> Array:
  r"""The cumulative spectral distribution :math:`F(t)` of an SLQ estimate.

  :math:`F(t) = \frac{1}{n_v}\sum_v \sum_i \tau^{(v)}_i \mathbf 1[\theta^{(v)}_i \le t]`
  (the un-broadened quadrature), at every point of ``t``.
  """
  t = jnp.asarray(t)
  below = (d.nodes[None] <= t.reshape(-1, 1, 1)).astype(d.weights.dtype)
  out = jnp.sum(below * d.weights[None], axis=(1, 2)) / d.nodes.shape[0]
  return out.reshape(t.shape)


# ----------------------------------------------------------------------------
# Sharpness as a recorded metric of a sweep.


def sharpness_metric(loss: str | Callable, num_iters: int = 20, on: str = "train",
                     seed: int = 0, curvature: str = "hessian") -> Callable:
  r"""A recorded metric: top eigenvalue of the loss Hessian (the sharpness).

  Sharpness :math:`\lambda_{\max}(\nabla^2 L)` tracks progressive sharpening
  and the edge of stability (Cohen et al. 2021: under GD with step size
  :math:`\eta` it rises to :math:`2/\eta`). Use it as
  ``Sweep(metrics={"sharpness": sharpness_metric("mse")}, record="every:10")``:
  it is then computed inside the compiled training program at every
  recording point, for every run.

  Args:
    loss: ``'mse'``, ``'xent'`` (as the sweep's loss) or
      ``loss(outputs, labels, weights) -> scalar``.
    num_iters: Lanczos steps (static).
    on: ``'train'`` (weighted by ``data['w_train']``, i.e. the active examples
      of a data-size sweep) or ``'test'``.
    seed: the fixed key of the Lanczos start vector (the metric is then a
      deterministic function of the parameters).
    curvature: ``'hessian'`` or ``'ggn'`` (Gauss-Newton).

  Returns:
    ``fn(params, apply, data) -> scalar``.
  """
  loss_fn = LOSSES[loss] if isinstance(loss, str) and loss in LOSSES else loss
  if not callable(loss_fn):
    raise ValueError(f"unknown loss {loss!r}; available: {', '.join(LOSSES)} or a callable")
  if on not in ("train", "test"):
    raise ValueError(f"on must be 'train' or 'test', got {on!r}")
  if curvature not in ("hessian", "ggn"):
    raise ValueError(f"curvature must be 'hessian' or 'ggn', got {curvature!r}")

  def fn(params, apply, data):
    x, y = data[f"x_{on}"], data[f"y_{on}"]
    w = data["w_train"] if on == "train" else jnp.ones(y.shape[:1], jnp.result_type(float))
    if curvature == "hessian":
      op = hessian(lambda p: loss_fn(apply(p, x), y, w), params)
    else:
      op = gauss_newton(lambda p: apply(p, x), lambda z: loss_fn(z, y, w), params)
    return top_eigenvalues(op, jax.random.key(seed), 1, num_iters)[0]

  return fn
