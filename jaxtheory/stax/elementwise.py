"""Nonlinearities of :mod:`jaxtheory.stax` (``Relu`` ... ``Polynomial``, ``Elementwise``), each
with its closed-form or numerical infinite-width kernel."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from jaxtheory.kernels import nonlinear
from jaxtheory.nn import core, layers as L
from jaxtheory.stax._core import _SAME, _SAME_REMASK, _Triple, _name_layers


def Relu(do_stabilize: bool = False) -> _Triple:
  del do_stabilize  # float64 kernels need no rescaling
  return _Triple(L.relu(), mask=_SAME)


def ABRelu(a: float, b: float, do_stabilize: bool = False) -> _Triple:
  del do_stabilize
  return _Triple(L.ab_relu(a, b), mask=_SAME)


def LeakyRelu(alpha: float, do_stabilize: bool = False) -> _Triple:
  del do_stabilize
  return _Triple(L.leaky_relu(alpha), mask=_SAME)


def Abs(do_stabilize: bool = False) -> _Triple:
  del do_stabilize
  return _Triple(L.ab_relu(-1.0, 1.0), mask=_SAME)


def Erf(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> _Triple:
  return _Triple(L.erf(a, b, c), mask=_SAME_REMASK)


def Gelu(approximate: bool = False) -> _Triple:
  """GELU; as in NT, ``approximate`` changes ``apply_fn`` only (the kernel is exact)."""
  lay = L.gelu(approximate)
  return _Triple(core.Layer(lay.init, lay.apply, nonlinear.gelu()), mask=_SAME)


def Sin(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> _Triple:
  return _Triple(L.sin(a, b, c), mask=_SAME_REMASK)


def Cos(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> _Triple:
  return _Triple(L.cos(a, b, c), mask=_SAME_REMASK)


def Sign() -> _Triple:
  return _Triple(L.sign(), mask=_SAME)


def Exp(a: float = 1.0, b: float = 1.0) -> _Triple:
  return _Triple(L.exp(a, b), mask=_SAME_REMASK)


def ExpNormalized(gamma: float = 1.0, shift: float = -1.0, do_clip: bool = False) -> _Triple:
  """The normalized Gaussian kernel; kernel-only, like NT's (``apply_fn`` raises)."""
  base = L.identity()

  def apply(params, x, feat, ctx):
    raise NotImplementedError("ExpNormalized has no finite-width apply_fn (as in NT)")

  return _Triple(core.Layer(base.init, apply, nonlinear.exp_normalized(gamma, shift, do_clip)),
                 mask=_SAME_REMASK)


def Monomial(degree: int) -> _Triple:
  return _Triple(L.monomial(degree), mask=_SAME)


def RectifiedMonomial(degree: int) -> _Triple:
  return _Triple(L.rectified_monomial(degree), mask=_SAME)


def Rbf(gamma: float = 1.0) -> _Triple:
  return _Triple(L.rbf(gamma), mask=_SAME_REMASK)


def ElementwiseNumerical(fn: Callable, deg: int,
                         df: Callable | None = None) -> _Triple:
  """Any elementwise ``fn`` with a Gauss-Hermite kernel of degree ``deg``."""
  return _Triple(L.elementwise(fn, deg=deg, df=df), mask=_SAME_REMASK)


def Gaussian(a: float = 1.0, b: float = -1.0) -> _Triple:
  """``a * exp(b * x ** 2)``, closed-form kernel."""
  return _Triple(L.gaussian(a, b), mask=_SAME_REMASK)


def Gabor() -> _Triple:
  """``exp(-x ** 2) * sin(x)``, closed-form kernel."""
  return _Triple(L.gabor(), mask=_SAME)


def Sigmoid_like() -> _Triple:
  """``0.5 * erf(x / 2.4020563531719796) + 0.5``: a sigmoid with an erf kernel (NT's constant)."""
  return Erf(a=0.5, b=1 / 2.4020563531719796, c=0.5)


def Hermite(degree: int) -> _Triple:
  """Normalized Hermite polynomial; inputs assumed to have unit variance (as in NT)."""
  return _Triple(L.hermite(degree), mask=_SAME_REMASK)


def Polynomial(coef: Sequence[float]) -> _Triple:
  """``sum_i coef[i] * x ** i`` with its closed-form kernel."""
  return _Triple(L.polynomial(coef), mask=_SAME)


def Elementwise(fn: Callable | None = None, nngp_fn: Callable | None = None,
                d_nngp_fn: Callable | None = None) -> _Triple:
  """A nonlinearity ``fn`` with its dual ``nngp_fn(cov12, var1, var2)`` (and optionally
  ``d_nngp_fn``, else the derivative of ``nngp_fn`` in ``cov12``)."""
  return _Triple(L.dual_elementwise(fn, nngp_fn, d_nngp_fn), mask=_SAME_REMASK)


_name_layers(globals(), __name__)
