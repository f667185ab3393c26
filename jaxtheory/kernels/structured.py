r"""Structured derivatives: the empirical NTK from Gram matrices at every dense/conv layer.

The ``'structured'`` implementation of :func:`jaxtheory.kernels.empirical.empirical_ntk`
(Novak et al. 2022, "Fast Finite Width Neural Tangent Kernel"). A weight ``W``
that enters the network once, as ``y = dot_general(a, W)`` (or a convolution),
contributes

.. math::
   \Theta_W(i, j) = \sum_{s, t} (a_{i,s} \cdot a_{j,t}) (g_{i,s} \cdot g_{j,t}),

summed over its weight-sharing positions ``s, t``, with ``g = \partial f /
\partial y``. This module is a jaxpr interpreter: it finds such weights
(:func:`_trace_side`: the "sites"), re-evaluates ``f`` equation by equation
adding a zero perturbation at every site (:func:`_run`), reads ``a`` and ``g``
off one VJP (:func:`_structured_features`), picks the Gram or the Jacobian form
per site by FLOP count (:func:`_plan`) and contracts (:func:`_structured_contract`).
Every other parameter takes the Jacobian route.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jcore

from jaxtheory.kernels._axes import _basis, _contract_jac, _Labels, _Layout, _split_params, _with


class _Site(NamedTuple):
  """A weight used once, as an operand of a dense or conv layer.

  Index tuples refer to ``a`` (the other operand, or its patches for a conv)
  and ``y`` (the layer output): ``a_c`` are contracted against the weight,
  ``a_pos``/``y_pos`` are the weight-sharing positions (in matching order),
  ``y_f`` the weight's free (output-feature) axes.
  """
  leaf: int
  path: tuple[int, ...]
  eqn: Any
  w_pos: int
  kind: str
  a_c: tuple[int, ...]
  a_pos: tuple[int, ...]
  y_pos: tuple[int, ...]
  y_f: tuple[int, ...]
  y_shape: tuple[int, ...]
  y_dtype: Any
  P: int
  C: int
  F: int

  def signature(self):
    return (self.kind, self.w_pos, self.a_c, self.a_pos, self.y_pos, self.y_f, self.C,
            self.F)


# custom_jvp_call: the value is its call_jaxpr's (nn.conv's convolution is one, see
# jaxtheory.nn.convops); only values are read through it here.
_CALLS = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr",
          "core_call": "call_jaxpr", "custom_jvp_call": "call_jaxpr"}


def _inner(eqn):
  """The closed jaxpr of a plain call (``jit``, ``custom_jvp_call``), else ``None``."""
  key = _CALLS.get(eqn.primitive.name)
  inner = eqn.params.get(key) if key else None
  return inner if isinstance(inner, jcore.ClosedJaxpr) else None


def _is_var(v):
  return not isinstance(v, jcore.Literal)


def _site_of(leaf, path, eqn, k) -> _Site | None:
  """The site of weight operand ``k`` of ``eqn``, or ``None`` (no Gram form)."""
  name = eqn.primitive.name
  y = eqn.outvars[0].aval
  a = eqn.invars[1 - k].aval
  if name == "dot_general":
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    if lb or rb:
      return None
    ac = tuple(lc) if k == 1 else tuple(rc)
    wc = tuple(rc) if k == 1 else tuple(lc)
    w_ndim = eqn.invars[k].aval.ndim
    a_free = tuple(d for d in range(a.ndim) if d not in ac)
    n_wf = w_ndim - len(wc)
    if k == 1:
      y_pos, y_f = tuple(range(len(a_free))), tuple(range(len(a_free), y.ndim))
    else:
      y_f, y_pos = tuple(range(n_wf)), tuple(range(n_wf, y.ndim))
    C = math.prod(a.shape[d] for d in ac)
    return _Site(leaf, path, eqn, k, "dot", ac, a_free, y_pos, y_f, tuple(y.shape),
                 y.dtype, math.prod(a.shape[d] for d in a_free), C,
                 math.prod(y.shape[d] for d in y_f))
  if name == "conv_general_dilated" and k == 1:
    p = eqn.params
    if p["feature_group_count"] != 1 or p["batch_group_count"] != 1:
      return None
    out_spec = p["dimension_numbers"].out_spec
    feat = out_spec[1]
    pos = tuple(d for d in range(y.ndim) if d != feat)
    w = eqn.invars[1].aval
    C = math.prod(w.shape) // y.shape[feat]
    return _Site(leaf, path, eqn, 1, "conv", (feat,), pos, pos, (feat,), tuple(y.shape),
                 y.dtype, math.prod(y.shape[d] for d in pos), C, y.shape[feat])
  return None


def _find_sites(closed, diff: Sequence[int]) -> dict[int, _Site]:
  """Weights used exactly once, as the weight of a dense/conv equation."""
  uses = {i: [] for i in diff}

  def walk(jaxpr, alias, path):
    for i, eqn in enumerate(jaxpr.eqns):
      ins = [alias.get(v) if _is_var(v) else None for v in eqn.invars]
      inner = _inner(eqn)
      if inner is not None and any(l is not None for l in ins):
        walk(inner.jaxpr, {iv: l for iv, l in zip(inner.jaxpr.invars, ins)
                           if l is not None}, path + (i,))
        continue
      for k, l in enumerate(ins):
        if l is not None:
          uses[l].append((path + (i,), eqn, k))
    for v in jaxpr.outvars:
      if _is_var(v) and v in alias:
        uses[alias[v]].append(None)

  invars = closed.jaxpr.invars
  walk(closed.jaxpr, {invars[i]: i for i in diff}, ())
  sites = {}
  for leaf, us in uses.items():
    if len(us) != 1 or us[0] is None:
      continue
    path, eqn, k = us[0]
    other = eqn.invars[1 - k] if len(eqn.invars) == 2 else None
    if other is None or (_is_var(other) and other in invars[:len(invars)]
                         and invars.index(other) in uses):
      continue
    site = _site_of(leaf, path, eqn, k)
    if site is not None:
      sites[leaf] = site
  return sites


def _run(closed, args, sites: dict, deltas: dict):
  """Evaluates ``closed`` on ``args``, adding ``deltas[path]`` at the sites.

  Returns the outputs and the non-weight operand of every site.
  """
  prefixes = {p[:k] for p in sites for k in range(1, len(p))}
  a_vals = {}

  def ev(jaxpr, consts, vals, path):
    env = {}
    read = lambda v: v.val if isinstance(v, jcore.Literal) else env[v]
    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, vals))
    for i, eqn in enumerate(jaxpr.eqns):
      here = path + (i,)
      invals = [read(v) for v in eqn.invars]
      inner = _inner(eqn)
      if inner is not None and here in prefixes:
        outs = ev(inner.jaxpr, inner.consts, invals, here)
      else:
        ans = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
        outs = list(ans) if eqn.primitive.multiple_results else [ans]
        if here in sites:
          a_vals[here] = invals[1 - sites[here].w_pos]
          outs = [outs[0] + deltas[here]]
      env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]

  outs = ev(closed.jaxpr, closed.consts, args, ())
  return outs, a_vals


def _patches(site: _Site, a):
  p = site.eqn.params
  dn = p["dimension_numbers"]
  w_shape = site.eqn.invars[1].aval.shape
  filt = tuple(w_shape[d] for d in dn.rhs_spec[2:])
  return lax.conv_general_dilated_patches(
      a, filt, p["window_strides"], p["padding"], p["lhs_dilation"], p["rhs_dilation"],
      dimension_numbers=dn)


class _Side(NamedTuple):
  closed: Any
  sites: dict
  S: tuple[int, ...]


def _trace_side(g, params, U) -> _Side:
  leaves, treedef, diff = _split_params(params)
  spec = lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a))
  u_leaves = [jax.ShapeDtypeStruct(jnp.shape(a)[1:], jnp.result_type(a))
              for a in jax.tree.leaves(U)]
  u_tree = jax.tree.structure(U)

  def flat(*args):
    ps = jax.tree.unflatten(treedef, args[:len(leaves)])
    out = g(ps, jax.tree.unflatten(u_tree, args[len(leaves):]))
    if not isinstance(out, jax.Array):
      raise TypeError(f"f must return one array, got {type(out).__name__}")
    return out

  closed, out = jax.make_jaxpr(flat, return_shape=True)(
      *[spec(l) for l in leaves], *u_leaves)
  return _Side(closed, _find_sites(closed, diff), tuple(out.shape))


def _plan(side1: _Side, side2: _Side, m1: int, m2: int, layout: _Layout) -> dict:
  """``{leaf: 'gram' | 'jac'}`` for the sites both sides share.

  The contribution of a site is the four-factor sum
  ``sum a1[u1, s, c] g1[u1, o1, s, f] a2[u2, t, c] g2[u2, o2, t, f]``; the
  Gram form contracts ``(a1 a2)(g1 g2)``, the Jacobian form ``(a1 g1)(a2 g2)``
  (per-example Jacobians). Whichever takes fewer FLOPs wins.
  """
  M = m1 * m2 if layout.unit == "free" else m1
  o1, o2 = math.prod(side1.S), math.prod(side2.S)
  Q = 1
  for mode, a, b in zip(layout.s_modes, side1.S, side2.S):
    Q *= a * b if mode == "free" else a
  plan = {}
  for leaf, s1 in side1.sites.items():
    s2 = side2.sites.get(leaf)
    if s2 is None or s1.signature() != s2.signature():
      continue
    P1, P2, C, F = s1.P, s2.P, s1.C, s1.F
    gram_cost = M * P1 * P2 * (C + min(o1, o2) * F) + M * Q * max(P1, P2) * F
    jac_cost = (m1 * o1 * P1 + m2 * o2 * P2) * C * F + M * Q * C * F
    plan[leaf] = "gram" if gram_cost <= jac_cost else "jac"
  return plan


def _a_sub(site: _Site, pos, c):
  sub = [None] * (len(site.a_c) + len(site.a_pos))
  for d, l in zip(site.a_c + site.a_pos, list(c) + list(pos)):
    sub[d] = l
  return sub


def _y_sub(site: _Site, pos, f):
  sub = [None] * (len(site.y_pos) + len(site.y_f))
  for d, l in zip(site.y_pos + site.y_f, list(pos) + list(f)):
    sub[d] = l
  return sub


def _structured_features(g, params, U, side: _Side, plan: dict):
  """Per unit: ``(a, g)`` for Gram sites, Jacobians ``J[u, *S, ...]`` otherwise.

  A Jacobian site's ``J`` is laid out as ``(*S, *a_c, *y_f)`` (for a conv:
  patch features, then output channels), the same on both sides; every
  other parameter's ``J`` is laid out as the parameter.
  """
  leaves, treedef, diff = _split_params(params)
  direct = [i for i in diff if i not in plan]
  sites = {side.sites[l].path: side.sites[l] for l in plan}
  S = side.S

  def per_unit(u):
    u_leaves = jax.tree.leaves(u)

    def fun(dvals, deltas):
      outs, a_vals = _run(side.closed, _with(leaves, direct, dvals) + u_leaves, sites,
                          deltas)
      return outs[0], a_vals

    deltas0 = {p: jnp.zeros(s.y_shape, s.y_dtype) for p, s in sites.items()}
    out, pullback, a_vals = jax.vjp(fun, [leaves[i] for i in direct], deltas0,
                                    has_aux=True)
    d_ct, delta_ct = jax.vmap(pullback)(_basis(S, out.dtype))
    feats = {i: ct.reshape(S + ct.shape[1:]) for i, ct in zip(direct, d_ct)}
    for p, s in sites.items():
      a = a_vals[p] if s.kind == "dot" else _patches(s, a_vals[p])
      feats[s.leaf] = (a, delta_ct[p].reshape(S + s.y_shape))
    return feats

  feats = jax.vmap(per_unit)(U)
  for p, s in sites.items():
    if plan[s.leaf] == "jac":
      A, G = feats[s.leaf]
      n = 1 + len(S)
      pos = list(range(n, n + len(s.a_pos)))
      c = list(range(n + len(pos), n + len(pos) + len(s.a_c)))
      f = list(range(n + len(pos) + len(c), n + len(pos) + len(c) + len(s.y_f)))
      u, ss = 0, list(range(1, 1 + len(S)))
      feats[s.leaf] = jnp.einsum(A, [u, *_a_sub(s, pos, c)], G, [u, *ss, *_y_sub(s, pos, f)],
                                 [u, *ss, *c, *f])
  return feats


def _contract_gram(site: _Site, A1, G1, A2, G2, lab: _Labels):
  n_pos, n_c, n_f = len(site.a_pos), len(site.a_c), len(site.y_f)
  pos1, pos2 = lab.extra(n_pos), lab.extra(n_pos, n_pos)
  c, f = lab.extra(n_c, 2 * n_pos), lab.extra(n_f, 2 * n_pos + n_c)
  AA = jnp.einsum(A1, [lab.u1, *_a_sub(site, pos1, c)], A2, [lab.u2, *_a_sub(site, pos2, c)],
                  lab.units + pos1 + pos2)
  return jnp.einsum(G1, [lab.u1, *lab.s1, *_y_sub(site, pos1, f)], AA,
                    lab.units + pos1 + pos2, G2, [lab.u2, *lab.s2, *_y_sub(site, pos2, f)],
                    lab.out, optimize="optimal")


def _structured_contract(F1, F2, side: _Side, plan, lab, dtype, weights=None):
  out = jnp.zeros((), dtype)
  for leaf, f1 in F1.items():
    if plan.get(leaf) == "gram":
      term = _contract_gram(side.sites[leaf], *f1, *F2[leaf], lab)
    else:
      term = _contract_jac(f1, F2[leaf], len(side.S), lab)
    out = out + (term if weights is None else weights[leaf] * term)
  return out
