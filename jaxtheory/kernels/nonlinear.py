r"""Kernel maps of elementwise nonlinearities: the dual of each activation.

For an activation ``f`` and a centred Gaussian pre-activation ``(u, v) ~ N(0,
[[q1, c], [c, q2]])`` (the output of a dense or conv layer, whose channels are
i.i.d.), the dual ``T(c, q1, q2) = (E[f(u) f(v)], E[f'(u) f'(v)])`` maps the
NNGP to the next layer's; the NTK follows from Price's theorem:
``dT/dc = E[f'(u) f'(v)]``, so :math:`\Theta' = \Theta \cdot E[f' f']` (Jacot et
al. 2018). Closed forms: ReLU and the arc-cosine family (Cho & Saul 2009), erf
(Williams 1997), GELU, sin/cos, sign, exp, the RBF dual, monomials; any other
``f`` by Gauss-Hermite quadrature. Conventions are those of neural-tangents
0.6.5 (see :mod:`jaxtheory.kernels.analytic`, whose :class:`Kernel` these maps
transform).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from jax import lax

from jaxtheory.kernels._spatial import spread as _spread, variances as _variances
from jaxtheory.kernels.analytic import Kernel, KernelMap

Array = jax.Array

Transform = Callable[[Array, Array, Array, bool], tuple[Array, Array | None]]


_TINY = 1e-30


@jax.custom_jvp
def _safe_sqrt(x):
  r"""``sqrt(max(x, 0))`` whose derivative is zero where ``x <= 1e-30``.

  The duals below take square roots of Gram determinants such as
  :math:`q_1q_2 - c^2`, which vanish (to first order in every direction) at
  ``x1 = x2``; there the plain derivative is ``inf * 0 = nan``. The terms these
  roots enter cancel at that point (Price's theorem gives a finite
  :math:`\partial T / \partial c`), so a zero derivative is the right one (as
  NT's ``_sqrt``).
  """
  return jnp.sqrt(jnp.maximum(x, 0.0))


@_safe_sqrt.defjvp
def _safe_sqrt_jvp(primals, tangents):
  x, = primals
  x_dot, = tangents
  positive = x > _TINY
  root = jnp.sqrt(jnp.where(positive, x, 1.0))
  return _safe_sqrt(x), jnp.where(positive, x_dot / (2 * root), jnp.zeros_like(x_dot))


def _gram_root(c, prod):
  r"""``sqrt(prod - c^2)``, exactly zero where the correlation is one up to rounding.

  At ``x1 = x2`` the two sides of :math:`q_1q_2 - c^2` are computed by
  different reductions, so the difference is rounding noise whose square root
  (``~1e-8`` relative in float64) would put the kernel a noise-sized step off
  its kink there, in value (the NTK) and in derivative. Below
  ``16 eps * prod`` the root is taken as zero; elsewhere this is
  :func:`_safe_sqrt`.
  """
  det = prod - c ** 2
  tol = 16 * jnp.finfo(jnp.result_type(det)).eps * prod
  return _safe_sqrt(jnp.where(det > tol, det, jnp.zeros_like(det)))


@jax.custom_jvp
def _angle(root, c):
  r"""The angle :math:`\theta = \arctan2(\sqrt{q_1q_2 - c^2}, c)`, ``pi/2`` where both vanish.

  The derivative :math:`(c\,\dot r - r\,\dot c)/(r^2 + c^2)` has its
  denominator floored, so zero-variance inputs (``r = c = 0``) get a zero
  derivative instead of ``nan`` (NT's ``_arctan2`` with ``fill_zero``).
  """
  # arctan2(r, 0) = pi/2 for every r > 0: the fix is made on the operand, so the angle
  # is one array that needs neither root nor c after it (XLA would keep both for a
  # select on the result).
  return jnp.arctan2(jnp.where(c == 0, 1.0, root), c)


@_angle.defjvp
def _angle_jvp(primals, tangents):
  root, c = primals
  root_dot, c_dot = tangents
  denom = jnp.maximum(root ** 2 + c ** 2, _TINY)
  return _angle(root, c), (c * root_dot - root * c_dot) / denom


def _sin_cos_half_turn(theta):
  r"""``(sin(theta), cos(theta))`` for ``theta`` in ``[0, pi]``, by Taylor polynomials.

  With :math:`\varphi = \pi/2 - \theta \in [-\pi/2, \pi/2]`,
  :math:`\sin\theta = \cos\varphi` and :math:`\cos\theta = \sin\varphi`; the series
  are cut where the next term is below the dtype's rounding (float64: terms up to
  :math:`\varphi^{23}`, float32: :math:`\varphi^{13}`; off by at most 2 ulp). XLA's CPU
  ``sin`` and ``cos``, written for any argument, made the ReLU's kernel half again as slow.
  """
  phi = jnp.pi / 2 - theta
  p2 = phi * phi
  top = 24 if jnp.finfo(jnp.result_type(theta)).bits > 32 else 14
  sin_phi, cos_phi = 0.0, 0.0
  for k in range(top, 0, -2):  # Horner in phi^2, highest terms first
    cos_phi = 1.0 - p2 * cos_phi / ((k - 1) * k)
    sin_phi = 1.0 - p2 * sin_phi / (k * (k + 1))
  return cos_phi, phi * sin_phi


def elementwise(transform: Transform, name: str, keeps_gaussian: bool = False) -> KernelMap:
  """Kernel map of an elementwise nonlinearity given its dual ``transform``.

  Args:
    transform: ``(c, q1, q2, need_dot) -> (E[f f], E[f' f'] or None)``, all
      broadcasting arrays.
    name: layer name for error messages.
    keeps_gaussian: the map is linear (the identity), so the output is still
      a centred Gaussian.
  """

  def kernel(k: Kernel, ctx) -> Kernel:
    del ctx
    if not k.is_gaussian:
      raise ValueError(
          f"{name}: its kernel needs a centred Gaussian input with i.i.d. channels, i.e. a "
          "dense or conv layer right before it (not the raw inputs, a flatten, a channel "
          "concatenation or another nonlinearity)")
    ds = k.diagonal_spatial
    v1 = _variances(k.cov1, ds)
    v2 = v1 if k.cov2 is None else _variances(k.cov2, ds)
    nngp, dot = transform(k.nngp, _spread(v1, True, 2, ds), _spread(v2, False, 2, ds),
                          k.ntk is not None)
    cov1, _ = transform(k.cov1, _spread(v1, True, 1, ds), _spread(v1, False, 1, ds), False)
    cov2 = None
    if k.cov2 is not None:
      cov2, _ = transform(k.cov2, _spread(v2, True, 1, ds), _spread(v2, False, 1, ds), False)
    ntk = None if k.ntk is None else k.ntk * dot
    return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2,
                     is_gaussian=k.is_gaussian and keeps_gaussian)

  return kernel


def ab_relu(a: float, b: float) -> KernelMap:
  r"""``a min(x, 0) + b max(x, 0)``: the arc-cosine kernel of degree 1 (Cho & Saul 2009).

  With :math:`\theta = \arccos(c / \sqrt{q_1 q_2})`,

  .. math::
    T = \frac{(a-b)^2}{2\pi}\sqrt{q_1q_2 - c^2}
        + \Big(\frac{a^2+b^2}{2} - \frac{(a-b)^2}{2\pi}\theta\Big) c,\qquad
    \dot T = \frac{a^2+b^2}{2} - \frac{(a-b)^2}{2\pi}\theta .
  """

  def transform(c, q1, q2, need_dot):
    theta = _angle(_gram_root(c, q1 * q2), c)  # pi/2 where both vanish (zero variance), as NT
    factor = (a - b) ** 2 / (2 * jnp.pi)
    dot = (a ** 2 + b ** 2) / 2 - factor * theta
    # sqrt(q1 q2 - c^2) and c read back from theta (sqrt(q1 q2) from the per-example
    # roots): theta is then the one kernel-sized array both results read, and c is free
    # once theta exists (XLA keeps every array that two fusions share in memory).
    scale = _safe_sqrt(q1) * _safe_sqrt(q2)
    sin, cos = _sin_cos_half_turn(theta)
    return scale * (factor * sin + dot * cos), (dot if need_dot else None)

  return elementwise(transform, "ab_relu")


def relu() -> KernelMap:
  """``max(x, 0)``: :func:`ab_relu` with ``a=0, b=1`` (Cho & Saul 2009)."""
  return ab_relu(0.0, 1.0)


def erf(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> KernelMap:
  r"""``a erf(b x) + c`` (Williams 1997, "Computing with infinite networks").

  With :math:`\tilde q = b^2 q`, :math:`\tilde c = b^2 c_{12}`:
  :math:`T = a^2 \frac{2}{\pi}\arcsin\frac{2\tilde c}{\sqrt{(1+2\tilde q_1)(1+2\tilde q_2)}} + c^2`,
  :math:`\dot T = a^2 b^2 \frac{4}{\pi}\big((1+2\tilde q_1)(1+2\tilde q_2) - 4\tilde c^2\big)^{-1/2}`.
  """
  shift = c

  def transform(cc, q1, q2, need_dot):
    cc, q1, q2 = b ** 2 * cc, b ** 2 * q1, b ** 2 * q2
    prod = (1 + 2 * q1) * (1 + 2 * q2)
    root = _safe_sqrt(prod - 4 * cc ** 2)
    nngp = a ** 2 * (2 / jnp.pi) * jnp.arctan2(2 * cc, root) + shift ** 2
    dot = a ** 2 * b ** 2 * (4 / jnp.pi) / root if need_dot else None
    return nngp, dot

  return elementwise(transform, "erf")


def gelu() -> KernelMap:
  r"""Exact GELU ``x Phi(x)`` (Tsuchida, Pearce et al. 2021, arXiv:2002.08517).

  With :math:`\Delta^2 = (1+q_1)(1+q_2) - c^2`,

  .. math::
    T = \frac c4 + \frac{1}{2\pi}\Big(c \arctan\frac{c}{\Delta}
        + \frac{c^2 + q_1 q_2 \Delta^2}{(1+q_1)(1+q_2)\Delta}\Big),

  and :math:`\dot T = \partial T/\partial c` (Price's theorem), taken by
  forward-mode differentiation of this closed form.
  """

  def nngp_fn(c, q1, q2):
    pp1 = (1 + q1) * (1 + q2)
    delta2 = pp1 - c ** 2
    delta = _safe_sqrt(delta2)
    out = (c ** 2 + q1 * q2 * delta2) / (pp1 * delta) + c * jnp.arctan2(c, delta)
    return out / (2 * jnp.pi) + c / 4

  def transform(c, q1, q2, need_dot):
    c, q1, q2 = jnp.broadcast_arrays(c, q1, q2)
    if not need_dot:
      return nngp_fn(c, q1, q2), None
    return jax.jvp(lambda c_: nngp_fn(c_, q1, q2), (c,), (jnp.ones_like(c),))

  return elementwise(transform, "gelu")


def sin(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> KernelMap:
  r"""``a sin(b x + c)``: from :math:`\sin u \sin v = \frac12(\cos(u-v) - \cos(u+v))`,

  .. math::
    T = \frac{a^2}{2}\Big(e^{-\frac{b^2}{2}(q_1+q_2-2c_{12})}
        - \cos(2c)\, e^{-\frac{b^2}{2}(q_1+q_2+2c_{12})}\Big),\quad
    \dot T = \frac{a^2b^2}{2}\Big(e^{-\frac{b^2}{2}(q_1+q_2-2c_{12})}
        + \cos(2c)\, e^{-\frac{b^2}{2}(q_1+q_2+2c_{12})}\Big).
  """
  phase = c

  def transform(cc, q1, q2, need_dot):
    s = q1 + q2
    e1 = jnp.exp(b ** 2 * (cc - s / 2))
    e2 = jnp.exp(-b ** 2 * (cc + s / 2)) * np.cos(2 * phase)
    nngp = a ** 2 / 2 * (e1 - e2)
    return nngp, (a ** 2 * b ** 2 / 2 * (e1 + e2) if need_dot else None)

  return elementwise(transform, "sin")


def cos(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> KernelMap:
  """``a cos(b x + c) = a sin(b x + c + pi/2)``; see :func:`sin`."""
  return sin(a, b, c + np.pi / 2)


def sign() -> KernelMap:
  r"""``sign(x)``: :math:`T = 1 - 2\theta/\pi` (arc-cosine kernel of degree 0, times 4 minus 1).

  :math:`\dot T = 0` away from ``c = +-sqrt(q1 q2)`` (NT's convention: the
  NTK is zero).
  """

  def transform(c, q1, q2, need_dot):
    root = _gram_root(c, q1 * q2)
    theta = _angle(root, c)
    return 1 - 2 * theta / jnp.pi, (jnp.zeros_like(c) if need_dot else None)

  return elementwise(transform, "sign")


def exp(a: float = 1.0, b: float = 1.0) -> KernelMap:
  r"""``a exp(b x)``: :math:`T = a^2 e^{b^2 (q_1 + q_2)/2 + b^2 c}`, :math:`\dot T = b^2 T`."""

  def transform(c, q1, q2, need_dot):
    t = a ** 2 * jnp.exp(b ** 2 * ((q1 + q2) / 2 + c))
    return t, (b ** 2 * t if need_dot else None)

  return elementwise(transform, "exp")


def exp_normalized(gamma: float = 1.0, shift: float = -1.0, do_clip: bool = False) -> KernelMap:
  r"""The normalized Gaussian kernel (Shankar et al. 2020, "Neural kernels without tangents").

  :math:`T = \sqrt{q_1q_2}\,\exp\big(\gamma(\rho + \text{shift})\big)` with
  :math:`\rho = c/\sqrt{q_1 q_2}` (clipped to [-1, 1] if ``do_clip``),
  :math:`\dot T = \gamma \exp(\gamma(\rho + \text{shift}))`. Kernel-only (no
  finite-width function has this dual).
  """

  def transform(c, q1, q2, need_dot):
    root = jnp.sqrt(jnp.maximum(q1 * q2, 1e-30))
    rho = c / root
    if do_clip:
      rho = jnp.clip(rho, -1, 1)
    e = jnp.exp(gamma * (rho + shift))
    return root * e, (gamma * e if need_dot else None)

  return elementwise(transform, "exp_normalized")


def rbf(gamma: float = 1.0) -> KernelMap:
  r"""``sqrt(2) sin(sqrt(2 gamma) x + pi/4)``, the dual of the RBF kernel (Rahimi & Recht 2007).

  :math:`T = e^{-\gamma(q_1 + q_2 - 2c)}`, :math:`\dot T = 2\gamma T`.
  """

  def transform(c, q1, q2, need_dot):
    t = jnp.exp(gamma * (2 * c - q1 - q2))
    return t, (2 * gamma * t if need_dot else None)

  return elementwise(transform, "rbf")


def _monomial_moment(n: int, c, prod):
  r""":math:`E[u^n v^n] = \sum_{j \equiv n (2)} \frac{(n!)^2}{j!\,((n-j)/2)!^2\,2^{n-j}} c^j (q_1q_2)^{(n-j)/2}`.

  The Hermite expansion of :math:`x^n` and Mehler's formula (Isserlis' theorem).
  """
  if n < 0:
    return jnp.zeros_like(c)
  out = 0.0
  for j in range(n % 2, n + 1, 2):
    m = (n - j) // 2
    coef = math.factorial(n) ** 2 / (math.factorial(j) * math.factorial(m) ** 2 * 2 ** (n - j))
    out = out + coef * c ** j * prod ** m
  return out + jnp.zeros_like(c)


def monomial(degree: int) -> KernelMap:
  """``x**degree``: Gaussian moments in closed form (see :func:`_monomial_moment`).

  :math:`\\dot T = n^2 E[u^{n-1} v^{n-1}]`.
  """
  _check_degree(degree)

  def transform(c, q1, q2, need_dot):
    prod = q1 * q2
    t = _monomial_moment(degree, c, prod)
    return t, (degree ** 2 * _monomial_moment(degree - 1, c, prod) if need_dot else None)

  return elementwise(transform, f"monomial({degree})")


def _check_degree(degree):
  if not isinstance(degree, int) or isinstance(degree, bool) or degree < 0:
    raise ValueError(f"degree must be a non-negative integer, got {degree!r}")


def _arccos_kernel(n: int, rho):
  r"""Normalized arc-cosine kernel :math:`\kappa_n(\rho) = E[\sigma_n(u)\sigma_n(v)]` of unit Gaussians.

  :math:`\sigma_n(x) = \mathbb 1[x \ge 0] x^n`, so :math:`\kappa_n = J_n(\theta)/2\pi`
  (Cho & Saul 2009) with :math:`\kappa_0 = (\pi-\theta)/2\pi`,
  :math:`\kappa_1 = (\sin\theta + (\pi-\theta)\cos\theta)/2\pi` and, by
  Gaussian integration by parts, for :math:`n \ge 2`
  :math:`\kappa_n = (2n-1)\rho\,\kappa_{n-1} + (n-1)^2(1-\rho^2)\kappa_{n-2}`.
  """
  # A where-clip, not jnp.clip, whose derivative is halved at the bounds.
  rho = jnp.where(rho > 1, 1.0, jnp.where(rho < -1, -1.0, rho))
  root = _gram_root(rho, jnp.ones_like(rho))
  theta = _angle(root, rho)
  k0 = (jnp.pi - theta) / (2 * jnp.pi)
  if n == 0:
    return k0
  k1 = (root + (jnp.pi - theta) * rho) / (2 * jnp.pi)
  for m in range(2, n + 1):
    k0, k1 = k1, (2 * m - 1) * rho * k1 + (m - 1) ** 2 * (1 - rho ** 2) * k0
  return k1


def rectified_monomial(degree: int) -> KernelMap:
  r"""``(x >= 0) x**degree``: the arc-cosine kernel of degree n (Cho & Saul 2009).

  :math:`T = (q_1q_2)^{n/2}\kappa_n(\rho)`, :math:`\dot T = n^2 (q_1q_2)^{(n-1)/2}\kappa_{n-1}(\rho)`
  (zero for ``n = 0``, as in NT), with :math:`\kappa_n` from :func:`_arccos_kernel`.
  """
  _check_degree(degree)

  def transform(c, q1, q2, need_dot):
    prod = q1 * q2
    root = _safe_sqrt(prod)
    rho = jnp.where(root > 0, c / jnp.where(root > 0, root, 1.0), 0.0)
    t = root ** degree * _arccos_kernel(degree, rho)
    dot = None
    if need_dot:
      dot = (jnp.zeros_like(t) if degree == 0 else
             degree ** 2 * root ** (degree - 1) * _arccos_kernel(degree - 1, rho))
    return t, dot

  return elementwise(transform, f"rectified_monomial({degree})")


def _derivative(fn):
  return lambda x: jax.jvp(fn, (x,), (jnp.ones_like(x),))[1]


def gauss_hermite(fn: Callable, deg: int = 25, df: Callable | None = None,
                  name: str = "elementwise") -> KernelMap:
  r"""Any elementwise ``fn`` by 2D Gauss-Hermite quadrature (NT's ``ElementwiseNumerical``).

  Writing :math:`u = \sqrt{2q_1}\,x`, :math:`v = \frac{c}{\sqrt{q_1/2}}x + \sqrt{2(q_2 - c^2/q_1)}\,y`
  (a Cholesky factor of the covariance), with nodes/weights :math:`(x_i, w_i)`
  of the physicists' Hermite rule of degree ``deg``,

  .. math:: E[f(u) f(v)] \approx \frac1\pi\sum_{ij} w_i w_j\, f(u(x_i))\, f(v(x_i, y_j)),

  and the NTK uses the same rule for :math:`E[f'(u) f'(v)]` (``df``, by default
  forward-mode differentiation of ``fn``). Exact for polynomials of degree
  ``< 2 deg``; smooth functions converge fast, kinks (ReLU) slowly.
  """
  if not isinstance(deg, int) or deg < 1:
    raise ValueError(f"deg must be a positive integer, got {deg!r}")
  xs_np, ws_np = scipy.special.roots_hermite(deg)
  df = _derivative(fn) if df is None else df

  def integrate(f, c, q1, q2):
    dtype = jnp.result_type(c, q1, q2)
    xs, ws = jnp.asarray(xs_np, dtype), jnp.asarray(ws_np, dtype)
    c, q1, q2 = jnp.broadcast_arrays(c, q1, q2)
    s1 = jnp.sqrt(jnp.maximum(q1 / 2, 1e-30))
    a_coef = c / s1
    b_coef = _safe_sqrt(2 * (q2 - c ** 2 / jnp.maximum(q1, 1e-30)))
    u_scale = _safe_sqrt(2 * q1)
    y_nodes = xs.reshape((deg,) + (1,) * c.ndim)
    y_weights = ws.reshape((deg,) + (1,) * c.ndim)

    def step(acc, xw):
      x, w = xw
      fu = f(u_scale * x)
      fv = f(a_coef[None] * x + b_coef[None] * y_nodes)  # (deg, *shape): all y nodes at once
      return acc + w * fu * jnp.sum(y_weights * fv, axis=0), None

    acc, _ = lax.scan(step, jnp.zeros(c.shape, dtype), (xs, ws))
    return acc / jnp.pi

  def transform(c, q1, q2, need_dot):
    return integrate(fn, c, q1, q2), (integrate(df, c, q1, q2) if need_dot else None)

  return elementwise(transform, name)


def dual(nngp_fn: Callable, d_nngp_fn: Callable | None = None, name: str = "elementwise") -> KernelMap:
  r"""The kernel map of a nonlinearity given its dual as a function (NT's ``Elementwise``).

  Args:
    nngp_fn: ``(cov12, var1, var2) -> E[f(u) f(v)]`` for scalars (applied
      elementwise with ``jnp.vectorize``).
    d_nngp_fn: ``(cov12, var1, var2) -> E[f'(u) f'(v)]``; by default
      :math:`\partial\,\mathrm{nngp\_fn} / \partial\,\mathrm{cov12}` by
      autodiff (Price's theorem).
    name: layer name for error messages.
  """
  t = jnp.vectorize(nngp_fn)
  d = jnp.vectorize(jax.grad(nngp_fn) if d_nngp_fn is None else d_nngp_fn)

  def transform(c, q1, q2, need_dot):
    c, q1, q2 = jnp.broadcast_arrays(c, q1, q2)
    return t(c, q1, q2), (d(c, q1, q2) if need_dot else None)

  return elementwise(transform, name)


def gaussian(a: float = 1.0, b: float = -1.0) -> KernelMap:
  r"""``a exp(b x^2)``: :math:`E[e^{b(u^2 + v^2)}] = \det(I - 2b\Sigma)^{-1/2}`, so

  .. math::
    T = a^2 \big((1 - 2bq_1)(1 - 2bq_2) - 4b^2c^2\big)^{-1/2},\qquad
    \dot T = \partial T/\partial c = 4a^2b^2\, c\, \big(\cdots\big)^{-3/2}.
  """

  def transform(c, q1, q2, need_dot):
    det = _safe_sqrt((1 - 2 * b * q1) * (1 - 2 * b * q2) - 4 * b ** 2 * c ** 2)
    nngp = a ** 2 / det
    return nngp, (4 * a ** 2 * b ** 2 * c / det ** 3 if need_dot else None)

  return elementwise(transform, "gaussian")


def hermite(degree: int) -> KernelMap:
  r"""The normalized Hermite polynomial :math:`He_n(x)/\sqrt{n!}` on unit-variance inputs.

  For unit variances :math:`E[h_n(u) h_n(v)] = c^n` (Mehler's formula), so
  :math:`T = c^n`, :math:`\dot T = n c^{n-1}` (zero for ``n = 0``). As NT's
  ``Hermite``, the variances are assumed to be one (e.g. after a layer norm),
  not checked.
  """
  _check_degree(degree)

  def transform(c, q1, q2, need_dot):
    del q1, q2
    dot = None
    if need_dot:
      dot = jnp.zeros_like(c) if degree == 0 else degree * c ** (degree - 1)
    return c ** degree, dot

  return elementwise(transform, f"hermite({degree})")


def _double_factorial_odd(m: int) -> int:
  """``(m - 1)!!`` for even ``m`` (the ``m``-th moment of a unit Gaussian), 0 for odd ``m``."""
  return 0 if m % 2 else math.prod(range(m - 1, 0, -2))


def _gaussian_moment(i: int, j: int, c, q1, q2):
  r""":math:`E[u^i v^j]` of a centred Gaussian pair (Isserlis' theorem).

  Pair ``k`` factors of ``u`` with ``k`` of ``v`` (each pair gives ``c``), the
  rest among themselves:
  :math:`\sum_k \binom ik\binom jk k!\, c^k\, (i-k-1)!!\, q_1^{(i-k)/2}\, (j-k-1)!!\, q_2^{(j-k)/2}`.
  """
  out = jnp.zeros_like(c)
  if i < 0 or j < 0:
    return out
  for k in range(min(i, j) + 1):
    w = (math.comb(i, k) * math.comb(j, k) * math.factorial(k)
         * _double_factorial_odd(i - k) * _double_factorial_odd(j - k))
    if w:
      out = out + w * c ** k * q1 ** ((i - k) // 2) * q2 ** ((j - k) // 2)
  return out


def polynomial(coef) -> KernelMap:
  r"""``sum_i coef[i] x^i`` (NT's ``Polynomial``): Gaussian moments in closed form.

  :math:`T = \sum_{ij} a_i a_j E[u^i v^j]`,
  :math:`\dot T = \sum_{ij} i j\, a_i a_j E[u^{i-1} v^{j-1}]`
  (see :func:`_gaussian_moment`).
  """
  coef = [float(a) for a in np.asarray(coef, dtype=float).reshape(-1)]

  def transform(c, q1, q2, need_dot):
    c, q1, q2 = jnp.broadcast_arrays(c, q1, q2)
    terms = [(i, j, a * b) for i, a in enumerate(coef) for j, b in enumerate(coef) if a and b]
    nngp = sum((w * _gaussian_moment(i, j, c, q1, q2) for i, j, w in terms), jnp.zeros_like(c))
    dot = None
    if need_dot:
      dot = sum((i * j * w * _gaussian_moment(i - 1, j - 1, c, q1, q2) for i, j, w in terms),
                jnp.zeros_like(c))
    return nngp, dot

  return elementwise(transform, "polynomial")


def gabor() -> KernelMap:
  r"""``exp(-x^2) sin(x)`` (NT's ``Gabor``).

  With :math:`w = (u, v) \sim N(0, \Sigma)`,
  :math:`E[e^{-w^\top w + i t^\top w}] = \det(I + 2\Sigma)^{-1/2} e^{-\frac12 t^\top \Sigma (I + 2\Sigma)^{-1} t}`
  and :math:`\sin u \sin v = \frac12(\cos(u - v) - \cos(u + v))`, so with
  :math:`D = (1 + 2q_1)(1 + 2q_2) - 4c^2` and :math:`S = q_1 + q_2 + 4(q_1q_2 - c^2)`,

  .. math:: T = \frac{1}{2\sqrt D}\Big(e^{-\frac{S - 2c}{2D}} - e^{-\frac{S + 2c}{2D}}\Big),

  and :math:`\dot T = \partial T / \partial c` by forward-mode differentiation (Price's theorem).
  """

  def nngp_fn(c, q1, q2):
    det = (1 + 2 * q1) * (1 + 2 * q2) - 4 * c ** 2
    s = q1 + q2 + 4 * (q1 * q2 - c ** 2)
    return (jnp.exp(-(s - 2 * c) / (2 * det)) - jnp.exp(-(s + 2 * c) / (2 * det))) / (2 * jnp.sqrt(det))

  def transform(c, q1, q2, need_dot):
    c, q1, q2 = jnp.broadcast_arrays(c, q1, q2)
    if not need_dot:
      return nngp_fn(c, q1, q2), None
    return jax.jvp(lambda c_: nngp_fn(c_, q1, q2), (c,), (jnp.ones_like(c),))

  return elementwise(transform, "gabor")
