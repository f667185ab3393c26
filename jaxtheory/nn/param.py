r"""Parametrizations: how init variance, forward multipliers and LRs scale with width.

Every weight is stored as ``w`` and used as ``W = mult * w`` with
``w ~ N(0, std^2)`` at init; its learning rate is multiplied by ``lr``. This is
the abc-parametrization of Yang & Hu (2021, "Tensor Programs IV"): for a layer
with (active) fan-in ``fan_in``, width ``n`` and ``sigma = W_std * init_scale``,

========  ======  ===========================  =======================  ==================
param     role    mult                         std                      lr (SGD, Adam)
========  ======  ===========================  =======================  ==================
``sp``    any     1                            sigma / sqrt(fan_in)     1, 1
``ntk``   any     sigma / sqrt(fan_in)         1                        1, 1
``mup``   input   sqrt(n)                      sigma / sqrt(fan_in n)   1, 1/sqrt(n)
``mup``   hidden  1                            sigma / sqrt(fan_in)     1, 1/fan_in
``mup``   output  1 / sqrt(fan_in)             sigma / sqrt(fan_in)     1, 1/sqrt(fan_in)
``mf``    input   sigma / sqrt(fan_in)         1                        n, 1
``mf``    hidden  sigma / sqrt(fan_in)         1                        n, 1/sqrt(n)
``mf``    output  sigma / (sqrt(fan_in) sqrt n) 1                       n, 1
========  ======  ===========================  =======================  ==================

Roles come from which axes scale with the width: ``input`` reads a fixed axis
and writes a wide one, ``hidden`` reads and writes wide axes, ``output`` reads a
wide axis and writes a fixed one; a layer with neither (``fixed``) follows SP.
``mup`` is muP in the form with SGD learning rates independent of width
(Tensor Programs IV, Table 1; TP V, Table 3 for Adam); ``mf`` is the mean-field
/ muP-equivalent NTK-form of Bordelon & Pehlevan (2022): NTK hidden layers, a
readout divided by an extra ``sqrt(n)``, learning rate multiplied by ``n``.
Biases follow the NT convention (``b = b_std * beta``, ``beta ~ N(0, 1)``
under NTK/mf; ``b ~ N(0, b_std^2)`` under SP) and are input-like under muP.

The richness ``gamma`` of :class:`jaxtheory.nn.Ctx` divides the network output
and multiplies every SGD learning rate by ``gamma^2`` (Adam: ``gamma``), so
small ``gamma`` is the lazy regime (Chizat, Oyallon & Bach 2019).

Every width-dependent number here is computed from active counts (mask sums),
never from a shape, so a padded network computes exactly what the network
built at its active width does.

**Base width** (``Ctx.base_width``, microsoft/mup's convention). With a base
width ``n_0`` every width factor above is taken relative to it: with
``r = width / n_0``, ``f`` the fan-in, ``f_0 = f / r`` for a layer reading a
wide axis (``f_0 = f`` otherwise) and ``sigma`` as above,

========  ======  ===================  =====================  ===================================
param     role    mult                 std                    lr (SGD, Adam)
========  ======  ===================  =====================  ===================================
``sp``    any     1                    sigma / sqrt(f)        1, 1
``ntk``   any     sigma / sqrt(f)      1                      f_0 / sigma^2, sqrt(f_0) / sigma
``mup``   input   sqrt(r)              sigma / sqrt(f r)      1, 1/sqrt(r)
``mup``   hidden  1                    sigma / sqrt(f)        1, 1/r
``mup``   output  1 / sqrt(r)          sigma / sqrt(f)        1, 1/sqrt(r)
``mf``    input   sigma / sqrt(f)      1                      r f_0 / sigma^2, sqrt(f_0) / sigma
``mf``    hidden  sigma / sqrt(f)      1                      r f_0 / sigma^2, sqrt(f_0 / r) / sigma
``mf``    output  sigma / sqrt(f r)    1                      r f_0 / sigma^2, sqrt(f_0) / sigma
========  ======  ===================  =====================  ===================================

so at ``r = 1`` every parametrization has SP's initial function and SP's
first update (the effective weight ``mult * w`` and its change ``mult * lr``
(Adam) or ``mult^2 * lr`` (SGD) per unit gradient are SP's), and as
``r`` grows each scales as its own row of the first table (``mf`` and ``mup``
then have the same effective updates; TP V, Table 3 and Sec. 5 for the base
shapes; Bordelon & Pehlevan 2022 for ``mf``). Biases keep SP's form
(``b ~ N(0, b_std^2)``, mult 1) with learning-rate factors ``(r, 1)`` on a
wide axis under ``mup``/``mf`` (under ``mup`` in the equivalent form mult
``sqrt(r)``, std ``b_std / sqrt(r)``, lr ``(1, 1/sqrt(r))``), and
norm gains ``(r, 1)``; attention scores are scaled by ``1/sqrt(d_head r)``
under ``mup``/``mf``. ``base_width=None`` (the default) is the absolute first
table. :mod:`jaxtheory.nn.base_shapes` applies these tables to any model (Flax,
Equinox) by comparing its parameter shapes at two widths.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class LRScale(NamedTuple):
  """Per-parameter learning-rate multipliers for SGD-like and Adam-like optimizers."""
  sgd: Any
  adam: Any


class Rule(NamedTuple):
  mult: Any
  std: Any
  lr: LRScale


def _per_parametrization(rule):
  """``rule(ctx, ...)`` for a context whose parametrization may be chosen at run time.

  With ``ctx.parametrization`` a tuple of names and ``ctx.choice`` a traced
  index, the rule is computed under each name and the chosen values are
  selected (``jnp.where``), so one program serves every parametrization of a
  sweep and each run gets exactly the numbers its own parametrization gives.
  """
  def chosen(ctx, *args, **kwargs):
    names = ctx.parametrization
    if isinstance(names, str):
      return rule(ctx, *args, **kwargs)
    outs = [rule(dataclasses.replace(ctx, parametrization=n, choice=None), *args, **kwargs)
            for n in names]

    def pick(*values):
      out = values[-1]
      for i in range(len(values) - 2, -1, -1):
        out = jnp.where(ctx.choice == i, values[i], out)
      return out
    return jax.tree.map(pick, *outs)

  chosen.__name__, chosen.__doc__ = rule.__name__, rule.__doc__
  chosen.__wrapped__ = rule
  return chosen


def role(in_wide: bool, out_wide: bool) -> str:
  """The role of a weight reading/writing fixed or wide axes."""
  return {(False, True): "input", (True, True): "hidden",
          (True, False): "output", (False, False): "fixed"}[(in_wide, out_wide)]


def width_ratio(ctx):
  """``ctx.width / ctx.base_width``, or ``None`` without a base width (absolute table).

  Raises:
    ValueError: a base width without ``ctx.width`` (the width the model runs at).
  """
  base = getattr(ctx, "base_width", None)
  if base is None:
    return None
  if ctx.width is None:
    raise ValueError("ctx.base_width needs ctx.width (the width the model runs at), "
                     "e.g. Ctx('mup', width=256, base_width=64)")
  return jnp.asarray(ctx.width, jnp.result_type(float)) / base


def _rs(x):
  return jax.lax.rsqrt(jnp.asarray(x, jnp.result_type(float)))


def _relative_weight_rule(p: str, role_: str, fan_in, sigma, r) -> Rule:
  """The base-width table of the module docstring (SP at ``r = 1``)."""
  f = jnp.asarray(fan_in, jnp.result_type(float))
  r = jnp.asarray(r, jnp.result_type(float))
  sp_std = sigma * _rs(f)
  if p == "sp" or (role_ == "fixed" and p == "mup"):
    return Rule(1.0, sp_std, LRScale(1.0, 1.0))
  f0 = f if role_ in ("input", "fixed") else f / r
  s = jnp.where(sigma == 0, 1.0, sigma)  # W_std = 0: a dead weight, keep the LR finite
  ntk_lr = LRScale(f0 / s**2, jnp.sqrt(f0) / s)
  if p == "ntk" or role_ == "fixed":
    return Rule(sigma * _rs(f), 1.0, ntk_lr)
  if p == "mup":
    if role_ == "input":
      return Rule(jnp.sqrt(r), sp_std * _rs(r), LRScale(1.0, _rs(r)))
    if role_ == "hidden":
      return Rule(1.0, sp_std, LRScale(1.0, 1 / r))
    return Rule(_rs(r), sp_std, LRScale(1.0, _rs(r)))
  if p == "mf":
    sgd = r * ntk_lr.sgd
    if role_ == "input":
      return Rule(sigma * _rs(f), 1.0, LRScale(sgd, ntk_lr.adam))
    if role_ == "hidden":
      return Rule(sigma * _rs(f), 1.0, LRScale(sgd, ntk_lr.adam * _rs(r)))
    return Rule(sigma * _rs(f) * _rs(r), 1.0, LRScale(sgd, ntk_lr.adam))
  raise ValueError(f"unknown parametrization {p!r}")


@_per_parametrization
def weight_rule(ctx, role_: str, fan_in, n, W_std: float, ratio=None) -> Rule:
  """Multiplier, init std and LR multipliers of a weight.

  Args:
    ctx: the run context (parametrization, init_scale).
    role_: ``'input'``, ``'hidden'``, ``'output'`` or ``'fixed'``.
    fan_in: active fan-in (kernel size times active input channels).
    n: active size of the wide axis the layer touches (its output for an
      input layer, its input otherwise); ignored for ``'fixed'``.
    W_std: the layer's weight scale (NT's meaning).
    ratio: ``width / base_width`` (:func:`width_ratio`) for the base-width
      table; ``None``: the absolute table.
  """
  p = ctx.parametrization
  sigma = W_std * ctx.init_scale
  if ratio is not None:
    return _relative_weight_rule(p, role_, fan_in, sigma, ratio)
  rs = _rs
  one = 1.0
  if p == "sp" or (role_ == "fixed" and p == "mup"):
    return Rule(one, sigma * rs(fan_in), LRScale(one, one))
  if p == "ntk" or role_ == "fixed":
    return Rule(sigma * rs(fan_in), one, LRScale(one, one))
  if p == "mup":
    if role_ == "input":
      return Rule(1 / rs(n), sigma * rs(fan_in) * rs(n), LRScale(one, rs(n)))
    if role_ == "hidden":
      return Rule(one, sigma * rs(fan_in), LRScale(one, rs(fan_in) ** 2))
    return Rule(rs(fan_in), sigma * rs(fan_in), LRScale(one, rs(fan_in)))
  if p == "mf":
    n_ = jnp.asarray(n, jnp.result_type(float))
    if role_ == "input":
      return Rule(sigma * rs(fan_in), one, LRScale(n_, one))
    if role_ == "hidden":
      return Rule(sigma * rs(fan_in), one, LRScale(n_, rs(n)))
    return Rule(sigma * rs(fan_in) * rs(n), one, LRScale(n_, one))
  raise ValueError(f"unknown parametrization {p!r}")


@_per_parametrization
def bias_rule(ctx, role_: str, n, b_std: float, ratio=None) -> Rule:
  """Multiplier, init std and LR multipliers of a bias (see module docstring).

  ``ratio``: ``width / base_width`` for the base-width table, else ``None``.
  """
  p = ctx.parametrization
  one = 1.0
  out_wide = role_ in ("input", "hidden")
  if ratio is not None:
    r = jnp.asarray(ratio, jnp.result_type(float))
    if p == "mup" and out_wide:
      return Rule(jnp.sqrt(r), b_std * _rs(r), LRScale(one, _rs(r)))
    if p == "mf" and out_wide:
      return Rule(one, b_std, LRScale(r, one))
    return Rule(one, b_std, LRScale(one, one))
  if p == "sp":
    return Rule(one, b_std, LRScale(one, one))
  if p == "ntk":
    return Rule(b_std, one, LRScale(one, one))
  if p == "mup":
    if out_wide:
      sq = jnp.sqrt(jnp.asarray(n, jnp.result_type(float)))
      return Rule(sq, b_std / sq, LRScale(one, 1 / sq))
    return Rule(one, b_std, LRScale(one, one))
  if p == "mf":
    # A bias on a wide axis moves its features by O(1) only with the width's LR
    # multiplier; the readout's bias moves the output directly, so it keeps LR 1
    # (with n it would destabilise gradient descent as the width grows).
    n_ = jnp.asarray(n, jnp.result_type(float)) if out_wide else one
    return Rule(b_std, one, LRScale(n_, one))
  raise ValueError(f"unknown parametrization {p!r}")


@_per_parametrization
def vector_lr(ctx, n, ratio=None) -> LRScale:
  """LR multipliers of width-sized vectors that are not biases (norm gains).

  ``ratio``: ``width / base_width`` (then ``ratio`` replaces ``n``), else ``None``.
  """
  if ctx.parametrization in ("mup", "mf"):
    return LRScale(jnp.asarray(n if ratio is None else ratio, jnp.result_type(float)), 1.0)
  return LRScale(1.0, 1.0)


@_per_parametrization
def attention_scale(ctx, head_dim, ratio=None):
  """Query-key scaling: ``1/sqrt(d_head)`` (SP, NTK) or ``1/d_head`` (muP, mf).

  With ``ratio = width / base_width`` muP and mf use ``1/sqrt(d_head ratio)``
  (``1/sqrt(d_head)`` at the base width, ``~1/d_head`` beyond).
  """
  d = jnp.asarray(head_dim, jnp.result_type(float))
  if ctx.parametrization not in ("mup", "mf"):
    return jax.lax.rsqrt(d)
  return 1 / d if ratio is None else jax.lax.rsqrt(d * ratio)


def family_multipliers(scales, family: str):
  """One optimizer family's learning-rate multipliers (``'sgd'`` or ``'adam'``) of a
  tree of :class:`LRScale`, as float arrays (the tree of the parameters)."""
  return jax.tree.map(lambda s: jnp.asarray(getattr(s, family), jnp.result_type(float)), scales,
                      is_leaf=lambda s: isinstance(s, LRScale))


def rescale_lr_for_gamma(scales, ctx):
  """Applies the richness ``gamma`` to a tree of :class:`LRScale` leaves."""
  g = ctx.gamma
  if isinstance(g, (int, float)) and g == 1.0:
    return scales
  return jax.tree.map(
      lambda s: LRScale(s.sgd * g**2, s.adam * g), scales,
      is_leaf=lambda s: isinstance(s, LRScale))
