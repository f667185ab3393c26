r"""Empirical (finite-width) neural tangent kernels: exact, fast and batched.

For a network ``f(params, x) -> (batch, *out)`` the empirical NTK is

.. math::
   \Theta(x_1, x_2) = \sum_p \frac{\partial f(x_1)}{\partial p}
                             \frac{\partial f(x_2)}{\partial p}^\top ,

the kernel of the linearized network (Jacot et al. 2018; Lee et al. 2019).
Conventions follow neural-tangents (NT, Novak et al. 2022, "Fast Finite Width
Neural Tangent Kernel"): output axes in ``trace_axes`` are *averaged* over
(the trace divided by the axis size), axes in ``diagonal_axes`` appear once,
all other axes appear twice, interleaved: outputs ``(n, k)`` give a kernel
``(n1, n2)`` for ``trace_axes=(-1,)`` and ``(n1, n2, k, k)`` for
``trace_axes=()``. The empirical NNGP ``f(x_1) f(x_2)^T`` uses the same layout.

Three implementations compute the same numbers:

* ``'jacobian'``: per-example Jacobians (``jacrev``), contracted leaf by leaf;
* ``'ntvp'``: NTK-vector products, a VJP on one side then a JVP on the other;
* ``'structured'``: Gram matrices at every dense/conv layer. A weight ``W``
  that enters the network once, as ``y = dot_general(a, W)`` (or a
  convolution), contributes

  .. math::
     \Theta_W(i, j) = \sum_{s, t} (a_{i,s} \cdot a_{j,t}) (g_{i,s} \cdot g_{j,t}),

  summed over its weight-sharing positions ``s, t`` (one for a dense layer on
  vectors, every pixel for a convolution; ``a`` are input patches), where
  ``g = \partial f / \partial y``. ``a`` and ``g`` are read off the jaxpr of
  ``f``: it is re-evaluated equation by equation, a zero perturbation
  ``delta`` is added to the output of every such layer and ``g`` is the VJP
  with respect to the ``delta``. Each layer takes the Gram form or the
  explicit per-example Jacobian, whichever costs fewer FLOPs; every other
  parameter (biases, gains, weights used twice or inside custom-derivative
  functions) takes the Jacobian route (:mod:`jaxtheory.kernels.structured`).
  ``'auto'`` is ``'structured'``.

By default (``vmap_axes=0``) examples are assumed independent (no batch
norm): ``f(params, x)[i]`` depends on ``x[i]`` only, as for every model of
:mod:`jaxtheory.nn`. ``vmap_axes=None`` drops the assumption (NT's default)
at the price of treating the whole batch as one example.

Everything is a pure function of traced arrays: it jits, and it vmaps over
stacked parameters (seeds and padded widths of a sweep).

>>> import jax, jax.numpy as jnp
>>> f = lambda p, x: jnp.tanh(x @ p["W1"]) @ p["W2"]
>>> p = {"W1": jnp.ones((3, 4)) / 2, "W2": jnp.ones((4, 2)) / 4}
>>> empirical_ntk(f, p, jnp.ones((5, 3))).shape
(5, 5)
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxtheory.kernels._axes import (Axes, _basis, _contract_jac, _Labels, _Layout, _layout,
                                     _split_params, _with)
from jaxtheory.kernels.structured import (_plan, _structured_contract, _structured_features,
                                          _trace_side)

__all__ = ["IMPLEMENTATIONS", "empirical_kernel_fn", "empirical_nngp", "empirical_nngp_fn",
           "empirical_ntk", "empirical_ntk_fn", "empirical_ntk_vp_fn"]

Array = jax.Array
PyTree = Any

IMPLEMENTATIONS = ("auto", "jacobian", "ntvp", "structured")
# NT's ``NtkImplementation`` enum values.
_NT_IMPLEMENTATIONS = {0: "auto", 1: "jacobian", 2: "ntvp", 3: "structured"}


# ----------------------------------------------------------------------------
# Implementation 1: Jacobian contraction.


def _jacobian_features(g, params, U):
  leaves, treedef, diff = _split_params(params)

  def g_diff(dvals, u):
    return g(jax.tree.unflatten(treedef, _with(leaves, diff, dvals)), u)

  jac = jax.vmap(jax.jacrev(g_diff), in_axes=(None, 0))([leaves[i] for i in diff], U)
  return jac


def _jacobian_contract(J1, J2, S_ndim, lab, dtype, weights=None):
  out = jnp.zeros((), dtype)
  for k, (j1, j2) in enumerate(zip(J1, J2)):
    term = _contract_jac(j1, j2, S_ndim, lab)
    out = out + (term if weights is None else weights[k] * term)
  return out


# ----------------------------------------------------------------------------
# Implementation 2: NTK-vector products.


def _ntvp_kernel(g1, g2, params, U1, U2, S1, S2, layout: _Layout, lab: _Labels,
                 weights=None):
  """``K[u1, u2, S1, S2]`` from one VJP (side 2) and one JVP (side 1) per column."""
  leaves, treedef, diff = _split_params(params)
  dvals = [leaves[i] for i in diff]
  tree = lambda dv: jax.tree.unflatten(treedef, _with(leaves, diff, dv))
  gd1 = lambda dv, u: g1(tree(dv), u)
  gd2 = lambda dv, u: g2(tree(dv), u)
  out2 = jax.eval_shape(gd2, dvals, jax.tree.map(lambda a: a[0], U2))
  basis = _basis(S2, out2.dtype)

  def vjp_rows(u2):
    _, pullback = jax.vjp(lambda dv: gd2(dv, u2), dvals)
    rows = jax.vmap(lambda e: pullback(e)[0])(basis)  # (|S2|, *params)
    if weights is not None:
      rows = [weights[i] * r for i, r in zip(diff, rows)]
    return rows

  def jvp_cols(f1, vs):
    return jax.vmap(lambda v: jax.jvp(f1, (dvals,), (v,))[1])(vs)

  n_s = len(S1)
  s1_full = [lab.s1[k] for k in range(n_s)]
  s2_full = [lab.s2[k] for k in range(n_s)]
  if layout.unit == "free":
    f1 = lambda dv: jax.vmap(lambda u: gd1(dv, u))(U1)

    def per_unit2(u2):
      return jvp_cols(f1, vjp_rows(u2))  # (|S2|, m1, *S1)

    K = jax.vmap(per_unit2)(U2)  # (m2, |S2|, m1, *S1)
    K = K.reshape((K.shape[0],) + tuple(S2) + K.shape[2:])
    return jnp.einsum(K, [lab.u2, *s2_full, lab.u1, *s1_full], lab.out)

  def pair(u1, u2):
    return jvp_cols(lambda dv: gd1(dv, u1), vjp_rows(u2))  # (|S2|, *S1)

  K = jax.vmap(pair)(U1, U2)
  K = K.reshape((K.shape[0],) + tuple(S2) + tuple(S1))
  return jnp.einsum(K, [lab.u1, *s2_full, *s1_full], lab.out)


# ----------------------------------------------------------------------------
# Driver: units, blocks, implementations.


def _implementation(implementation) -> str:
  if isinstance(implementation, int) and not isinstance(implementation, bool):
    if implementation in _NT_IMPLEMENTATIONS:
      return _NT_IMPLEMENTATIONS[implementation]
  elif isinstance(implementation, str) and implementation.lower() in IMPLEMENTATIONS:
    return implementation.lower()
  raise ValueError(
      f"unknown implementation {implementation!r}; expected one of {IMPLEMENTATIONS} "
      f"or an NT NtkImplementation value 0-3")


def _param_dtype(params):
  leaves = [l for l in jax.tree.leaves(params)
            if jnp.issubdtype(jnp.result_type(l), jnp.inexact)]
  return jnp.result_type(*leaves) if leaves else jnp.result_type(float)


def _kernel_block(impl, g1, g2, params, U1, U2, same, layout, dtype, weights=None):
  """The kernel between two stacks of units, in the output layout.

  ``g1`` maps a unit of ``U1`` to its output, ``g2`` one of ``U2``; ``same``
  says ``U1 is U2`` and ``g1 is g2`` (side 2 is not recomputed).
  """
  m1 = jax.tree.leaves(U1)[0].shape[0]
  m2 = jax.tree.leaves(U2)[0].shape[0]
  lab = _Labels(layout)
  first = lambda U: jax.tree.map(lambda a: a[0], U)
  if impl == "ntvp":
    S1 = jax.eval_shape(g1, params, first(U1)).shape
    S2 = jax.eval_shape(g2, params, first(U2)).shape
    return _ntvp_kernel(g1, g2, params, U1, U2, S1, S2, layout, lab, weights)
  if impl == "jacobian":
    S = jax.eval_shape(g1, params, first(U1)).shape
    J1 = _jacobian_features(g1, params, U1)
    J2 = J1 if same else _jacobian_features(g2, params, U2)
    wd = None if weights is None else [weights[i] for i in _split_params(params)[2]]
    return _jacobian_contract(J1, J2, len(S), lab, dtype, wd)
  side1 = _trace_side(g1, params, U1)
  side2 = side1 if same else _trace_side(g2, params, U2)
  plan = _plan(side1, side2, m1, m2, layout)
  F1 = _structured_features(g1, params, U1, side1, plan)
  F2 = F1 if same else _structured_features(g2, params, U2, side2, plan)
  return _structured_contract(F1, F2, side1, plan, lab, dtype, weights)


def _pad_blocks(U, b):
  """``(n, ...) -> (ceil(n / b), b, ...)``, padding with copies of example 0."""
  def pad(a):
    n = a.shape[0]
    nb = -(-n // b)
    extra = nb * b - n
    if extra:
      a = jnp.concatenate([a, jnp.broadcast_to(a[:1], (extra,) + a.shape[1:])])
    return a.reshape((nb, b) + a.shape[1:])
  return jax.tree.map(pad, U)


def _blocked(impl, g1, g2, params, U1, U2, same, layout, dtype, b, weights=None):
  """The kernel computed block by block with ``lax.map`` (one compiled body)."""
  n1 = jax.tree.leaves(U1)[0].shape[0]
  n2 = jax.tree.leaves(U2)[0].shape[0]
  B1 = _pad_blocks(U1, b)
  if layout.unit == "diag":
    B2 = B1 if same else _pad_blocks(U2, b)
    K = lax.map(lambda ub: _kernel_block(impl, g1, g2, params, ub[0], ub[1], same,
                                         layout, dtype, weights), (B1, B2))
    return K.reshape((-1,) + K.shape[2:])[:n1]
  B2 = _pad_blocks(U2, b)
  K = lax.map(lambda u1: lax.map(
      lambda u2: _kernel_block(impl, g1, g2, params, u1, u2, False, layout, dtype, weights),
      B2), B1)
  nb1, nb2 = K.shape[:2]
  K = jnp.moveaxis(K, 2, 1)  # (nb1, b, nb2, b, ...)
  K = K.reshape((nb1 * b, nb2 * b) + K.shape[4:])
  return K[:n1, :n2]


def _check_inputs(x1, x2, independent: bool):
  l1, l2 = jax.tree.leaves(x1), jax.tree.leaves(x2)
  if jax.tree.structure(x1) != jax.tree.structure(x2):
    raise ValueError("x1 and x2 must have the same tree structure, got "
                     f"{jax.tree.structure(x1)} and {jax.tree.structure(x2)}")
  if not l1:
    raise ValueError("x1 has no arrays")
  for a, b in zip(l1, l2):
    a_shape, b_shape = jnp.shape(a), jnp.shape(b)
    if not a_shape or not b_shape:
      raise ValueError("inputs need a leading batch axis; got a scalar")
    if independent and a_shape[1:] != b_shape[1:]:
      raise ValueError(
          f"x1 and x2 must have the same per-example shape, got {a_shape[1:]} and "
          f"{b_shape[1:]} (full shapes {a_shape} and {b_shape})")
    if jnp.result_type(a) != jnp.result_type(b):
      raise ValueError(f"x1 and x2 have different dtypes: {jnp.result_type(a)} and "
                       f"{jnp.result_type(b)}")
  # Without the independence shortcut the inputs need no common batch axis (NT's
  # in_axes may put it anywhere in each array).
  for x, name in ((l1, "x1"), (l2, "x2")) if independent else ():
    sizes = {jnp.shape(a)[0] for a in x}
    if len(sizes) != 1:
      raise ValueError(f"the arrays of {name} disagree on the batch size: {sorted(sizes)}")


def empirical_ntk(f: Callable, params: PyTree, x1: PyTree, x2: PyTree | None = None, *,
                  implementation: str | int = "auto", trace_axes: Axes = (-1,),
                  diagonal_axes: Axes = (), batch_size: int | None = None,
                  vmap_axes: int | None = 0, param_weights: PyTree | None = None) -> Array:
  r"""The empirical NTK :math:`\sum_p J_1 J_2^\top` of ``f`` at ``params``.

  Args:
    f: ``f(params, x) -> (batch, *out)``, any function of a parameter pytree
      and a batch (e.g. ``lambda p, x: model.apply(p, x, ctx)`` or a flax
      ``module.apply``); it must return one array.
    params: the parameters (a pytree; only its float leaves are parameters).
    x1: a batch of inputs (an array or pytree of arrays, leading batch axis).
    x2: a second batch with the same per-example shape; ``None`` means
      ``x1`` (and saves the second pass).
    implementation: ``'auto'``, ``'jacobian'``, ``'ntvp'``, ``'structured'``
      or NT's ``NtkImplementation`` value 0-3. All give the same kernel.
    trace_axes: output axes averaged over (NT's convention: the trace divided
      by the axis size). Default: the last (logit) axis.
    diagonal_axes: output axes kept once (only the diagonal); ``(0,)`` gives
      the per-example kernel ``Theta(x_i, x_i)`` (needs ``n1 == n2``).
    batch_size: compute the kernel in blocks of ``batch_size`` examples of
      ``x1`` and of ``x2`` with ``lax.map`` (bounded memory, one compiled
      block); the result equals the unblocked kernel.
    vmap_axes: ``0`` (default): examples are independent along axis 0 of
      ``x`` and of the output. ``None``: no assumption (slower, exact for
      any ``f``, e.g. batch norm); not combinable with ``batch_size``.
    param_weights: optional pytree like ``params`` of one scalar per leaf,
      giving :math:`\sum_p w_p J_{1,p} J_{2,p}^\top`: the kernel that gradient
      descent with per-parameter learning-rate multipliers ``w`` follows (a
      parametrization's multipliers; 0 for a frozen leaf).

  Returns:
    The kernel, of shape ``(n1, n2, ...)`` with NT's layout: traced axes
    absent, diagonal axes once, other output axes twice (interleaved).

  Raises:
    ValueError: bad implementation name, mismatched inputs, bad axes.
  """
  impl = _implementation(implementation)
  return _ntk(f, f, params, x1, x2, impl, trace_axes, diagonal_axes, batch_size,
              vmap_axes, param_weights)


def _leaf_weights(params, param_weights):
  """One scalar weight per leaf of ``params`` (``None``: unweighted)."""
  if param_weights is None:
    return None
  treedef = jax.tree.structure(params)
  try:
    ws = treedef.flatten_up_to(param_weights)
  except (ValueError, TypeError):
    raise ValueError("param_weights must have the tree structure of params") from None
  ws = [jnp.asarray(w) for w in ws]
  for w in ws:
    if w.ndim:
      raise ValueError(f"param_weights must hold one scalar per parameter leaf, got shape "
                       f"{w.shape}")
  return ws


def _ntk(f1, f2, params, x1, x2, impl, trace_axes, diagonal_axes, batch_size, vmap_axes,
         param_weights=None):
  """:func:`empirical_ntk` with ``f1`` applied to ``x1`` and ``f2`` to ``x2``."""
  weights = _leaf_weights(params, param_weights)
  if impl == "auto":
    impl = "structured"
  if vmap_axes not in (0, None):
    raise NotImplementedError(f"vmap_axes must be 0 or None, got {vmap_axes!r}")
  independent = vmap_axes == 0
  same = x2 is None and f1 is f2
  if x2 is None:
    x2 = x1
  _check_inputs(x1, x2, independent)
  fx1 = jax.eval_shape(f1, params, x1)
  fx2 = fx1 if same else jax.eval_shape(f2, params, x2)
  for fx, x in ((fx1, x1), (fx2, x2)):
    if not isinstance(fx, jax.ShapeDtypeStruct):
      raise TypeError("f must return one array; for pytree outputs use empirical_ntk_fn")
    n = jnp.shape(jax.tree.leaves(x)[0])[0]
    if independent and (fx.ndim == 0 or fx.shape[0] != n):
      raise ValueError(
          f"with vmap_axes=0, f(params, x) must have a leading batch axis of size {n}, "
          f"got output shape {fx.shape}")
  if fx1.ndim != fx2.ndim:
    raise ValueError(f"outputs for x1 and x2 differ in rank: {fx1.shape} and {fx2.shape}")
  layout = _layout(fx1.ndim, fx1.shape, fx2.shape, trace_axes, diagonal_axes, independent)
  if independent and layout.unit == "diag" and fx1.shape[0] != fx2.shape[0]:
    raise ValueError(f"batch axis 0 is traced or diagonal, so x1 and x2 need the same "
                     f"batch size, got {fx1.shape[0]} and {fx2.shape[0]}")
  dtype = _param_dtype(params)

  if independent:
    unit = lambda f: (lambda p, u: f(p, jax.tree.map(lambda a: a[None], u))[0])
    g1 = unit(f1)
    g2 = g1 if f2 is f1 else unit(f2)
    U1, U2 = x1, x2
  else:
    g1, g2 = f1, f2
    U1, U2 = (jax.tree.map(lambda a: a[None], x) for x in (x1, x2))

  if batch_size is not None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
      raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not independent:
      raise ValueError("batch_size needs independent examples (vmap_axes=0)")
    K = _blocked(impl, g1, g2, params, U1, U2, same, layout, dtype, batch_size, weights)
  else:
    K = _kernel_block(impl, g1, g2, params, U1, U2, same, layout, dtype, weights)

  if not independent:
    K = K[0, 0]
  elif layout.unit_trace:
    K = jnp.sum(K, axis=0)
  return K / layout.traced_size


def empirical_nngp(f: Callable, params: PyTree, x1: PyTree, x2: PyTree | None = None, *,
                   trace_axes: Axes = (-1,), diagonal_axes: Axes = ()) -> Array:
  """The empirical NNGP ``f(x1) f(x2)^T`` in NT's layout (traced axes averaged).

  Args:
    f: ``f(params, x) -> (batch, *out)``.
    params: the parameters.
    x1: a batch of inputs.
    x2: a second batch; ``None`` means ``x1``.
    trace_axes: output axes averaged over.
    diagonal_axes: output axes kept once.

  Returns:
    The kernel, laid out as :func:`empirical_ntk`'s.
  """
  out1 = f(params, x1)
  out2 = out1 if x2 is None else f(params, x2)
  layout = _layout(out1.ndim, out1.shape, out2.shape, trace_axes, diagonal_axes, False)
  lab = _Labels(layout)
  K = jnp.einsum(out1[None], [lab.u1, *lab.s1], out2[None], [lab.u2, *lab.s2], lab.out)
  return K[0, 0] / layout.traced_size


# ----------------------------------------------------------------------------
# neural-tangents-compatible wrappers.


def _split_kwargs(kwargs, x1, x2):
  """NT's rule for ``apply_fn``'s keywords when ``x2`` is given.

  A 2-tuple value is ``(for x1, for x2)``; anything else is shared, except
  ``rng`` (dropout): distinct inputs must see independent draws and the same
  inputs the same one, so a single key ``k`` becomes ``(k, fold_in(k, 1))``
  unless ``x1`` equals ``x2``, and a pair of keys is mended the same way.
  """
  if x2 is None:
    k1 = {k: v[0] if isinstance(v, tuple) and len(v) == 2 else v for k, v in kwargs.items()}
    return k1, k1
  k1, k2 = {}, {}
  for k, v in kwargs.items():
    if k == "rng" and v is not None:
      k1[k], k2[k] = _dropout_keys(v, x1, x2)
    elif isinstance(v, tuple) and len(v) == 2:
      k1[k], k2[k] = v
    else:
      k1[k] = k2[k] = v
  return k1, k2


def _same_inputs(x1, x2) -> jax.Array:
  """Whether two input pytrees hold the same values (a traced boolean; NaN padding, as a
  ``mask_constant``, equals itself)."""
  l1, l2 = jax.tree.leaves(x1), jax.tree.leaves(x2)
  if len(l1) != len(l2) or any(jnp.shape(a) != jnp.shape(b) for a, b in zip(l1, l2)):
    return jnp.asarray(False)
  return jnp.all(jnp.asarray([jnp.array_equal(a, b, equal_nan=True) for a, b in zip(l1, l2)]))


def _dropout_keys(key, x1, x2):
  """``(key1, key2)`` with ``key1 == key2`` exactly when ``x1`` equals ``x2``."""
  same = _same_inputs(x1, x2)
  if isinstance(key, tuple) and len(key) == 2:
    key1, key2 = key
    clash = jnp.all(jax.random.key_data(key1) == jax.random.key_data(key2))  # typed or raw
    key2 = lax.select(clash, jax.random.fold_in(key2, 1), key2)
  else:
    key1, key2 = key, jax.random.fold_in(key, 1)
  return key1, lax.select(same, key1, key2)


def _vmap_axes(vmap_axes):
  """NT's ``vmap_axes`` -> (0 or None, kwargs batched along axis 0).

  ``vmap_axes`` only tells which axes are independent, it never changes the
  kernel: a pytree of axes that are all ``0`` is the fast path ``0``; any other
  axes (or ``None`` inside the pytree) fall back to ``None``, the exact
  computation without the independence assumption.
  """
  if vmap_axes is None:
    return None, {}
  if isinstance(vmap_axes, tuple) and len(vmap_axes) == 3:
    in_axes, out_axes, kw_axes = vmap_axes
  else:
    in_axes, out_axes, kw_axes = vmap_axes, vmap_axes, {}
  kw_axes = dict(kw_axes or {})
  axes = jax.tree.leaves((in_axes, out_axes, list(kw_axes.values())),
                         is_leaf=lambda a: a is None)
  if any(a != 0 for a in axes):
    return None, {}
  return 0, kw_axes


def empirical_ntk_fn(f: Callable, trace_axes: Axes = (-1,), diagonal_axes: Axes = (),
                     vmap_axes=None, implementation: str | int = "auto", _j_rules: bool = True,
                     _s_rules: bool = True, _fwd: bool | None = None) -> Callable:
  """NT's ``empirical_ntk_fn``: returns ``ntk_fn(x1, x2, params, **apply_kwargs)``.

  Args:
    f: ``f(params, x, **kwargs)``; a pytree output gives a pytree of kernels
      (one per output, no cross terms, as in NT).
    trace_axes: output axes averaged over.
    diagonal_axes: output axes kept once.
    vmap_axes: ``None`` (no assumption, NT's default), ``0`` (examples
      independent along axis 0) or ``(0, 0, {kwarg: 0})`` (also as pytrees
      of zeros). Other axes give the same kernel as ``None`` (computed
      without the independence shortcut).
    implementation: ``'auto'``, ``'jacobian'``, ``'ntvp'``, ``'structured'``
      or NT's enum value 0-3 (``0`` AUTO, ``1`` JACOBIAN_CONTRACTION, ``2``
      NTK_VECTOR_PRODUCTS, ``3`` STRUCTURED_DERIVATIVES).
    _j_rules, _s_rules, _fwd: NT's internal tuning switches of its structured
      derivatives; accepted for compatibility and ignored (they do not change
      the kernel).

  Returns:
    ``ntk_fn(x1, x2, params, **apply_fn_kwargs)``; ``x2=None`` means ``x1``.
    A keyword value given as a 2-tuple is split ``(for x1, for x2)``.
  """
  del _j_rules, _s_rules, _fwd
  impl = _implementation(implementation)
  axis, kw_axes = _vmap_axes(vmap_axes)

  def ntk_fn(x1, x2, params, **apply_fn_kwargs):
    if x2 is not None and not jax.tree.leaves(x2):
      x2 = None  # NT's x2 of Nones, e.g. [(None, None), None]: x2 is x1
    k1, k2 = _split_kwargs(apply_fn_kwargs, x1, x2)
    # Keyword arguments batched along axis 0 travel with the inputs.
    X1 = (x1, {k: v for k, v in k1.items() if k in kw_axes})
    X2 = None if x2 is None else (x2, {k: v for k, v in k2.items() if k in kw_axes})
    static1 = {k: v for k, v in k1.items() if k not in kw_axes}
    static2 = {k: v for k, v in k2.items() if k not in kw_axes}
    call1 = lambda p, X: f(p, X[0], **X[1], **static1)
    call2 = call1
    if any(static2[k] is not static1[k] for k in static1):
      call2 = lambda p, X: f(p, X[0], **X[1], **static2)
    run = lambda c1, c2: _ntk(c1, c2, params, X1, X2, impl, trace_axes, diagonal_axes,
                              None, axis)
    out = jax.eval_shape(call1, params, X1)
    if isinstance(out, jax.ShapeDtypeStruct):
      return run(call1, call2)
    # Pytree outputs: one kernel per output (NT ignores cross terms too).
    pick = lambda call, i: (lambda p, X: jax.tree.leaves(call(p, X))[i])
    n_out, tree = len(jax.tree.leaves(out)), jax.tree.structure(out)
    kernels = [run(pick(call1, i), pick(call1, i) if call2 is call1 else pick(call2, i))
               for i in range(n_out)]
    return jax.tree.unflatten(tree, kernels)

  return ntk_fn


def empirical_nngp_fn(f: Callable, trace_axes: Axes = (-1,),
                      diagonal_axes: Axes = ()) -> Callable:
  """NT's ``empirical_nngp_fn``: returns ``nngp_fn(x1, x2, params, **apply_kwargs)``.

  The NNGP is ``f(x1) f(x2)^T`` averaged over ``trace_axes``; a pytree output
  gives a pytree of kernels (one per output).
  """

  def nngp_fn(x1, x2, params, **apply_fn_kwargs):
    k1, k2 = _split_kwargs(apply_fn_kwargs, x1, x2)
    out1 = f(params, x1, **k1)
    out2 = out1 if x2 is None else f(params, x2, **k2)
    return jax.tree.map(
        lambda a, b: empirical_nngp(lambda p, x: x, None, a, b, trace_axes=trace_axes,
                                    diagonal_axes=diagonal_axes), out1, out2)

  return nngp_fn


def empirical_kernel_fn(f: Callable, trace_axes: Axes = (-1,), diagonal_axes: Axes = (),
                        vmap_axes=None, implementation: str | int = "auto",
                        _j_rules: bool = True, _s_rules: bool = True,
                        _fwd: bool | None = None) -> Callable:
  """NT's ``empirical_kernel_fn``: the empirical NNGP and NTK behind one ``get``.

  Args:
    f: ``f(params, x, **kwargs)``.
    trace_axes: output axes averaged over.
    diagonal_axes: output axes kept once.
    vmap_axes: as in :func:`empirical_ntk_fn` (the NTK only).
    implementation: as in :func:`empirical_ntk_fn` (the NTK only).
    _j_rules, _s_rules, _fwd: accepted for compatibility with NT and ignored.

  Returns:
    ``kernel_fn(x1, x2, get, params, **apply_fn_kwargs)``: ``get`` ``'nngp'``
    or ``'ntk'`` gives that kernel, a tuple of them a namedtuple with those
    fields, ``None`` both (``nngp``, ``ntk``).

  >>> import jax.numpy as jnp
  >>> f = lambda p, x: jnp.tanh(x @ p)
  >>> k = empirical_kernel_fn(f)(jnp.ones((3, 2)), None, None, jnp.ones((2, 4)))
  >>> k.nngp.shape, k.ntk.shape
  ((3, 3), (3, 3))
  """
  fns = dict(nngp=empirical_nngp_fn(f, trace_axes, diagonal_axes),
             ntk=empirical_ntk_fn(f, trace_axes, diagonal_axes, vmap_axes, implementation,
                                  _j_rules, _s_rules, _fwd))

  def kernel_fn(x1, x2, get=None, params=None, **apply_fn_kwargs):
    names = ("nngp", "ntk") if get is None else (get,) if isinstance(get, str) else tuple(get)
    for g in names:
      if g not in fns:
        raise ValueError(f"get must be among ('nngp', 'ntk'), got {g!r}")
    out = {g: fns[g](x1, x2, params, **apply_fn_kwargs) for g in names}
    if isinstance(get, str):
      return out[get]
    return _empirical_kernel_type(names)(**out)

  return kernel_fn


@functools.lru_cache(maxsize=None)
def _empirical_kernel_type(names: tuple[str, ...]):
  return collections.namedtuple("EmpiricalKernel", names)


def empirical_ntk_vp_fn(f: Callable, x1: PyTree, x2: PyTree | None, params: PyTree,
                        **apply_fn_kwargs) -> Callable:
  r"""NT's ``empirical_ntk_vp_fn``: :math:`v \mapsto \Theta(x_1, x_2)\, v` without the NTK.

  One VJP of ``f`` at ``x2`` gives :math:`J_2^\top v` (a parameter pytree); one
  JVP at ``x1`` maps it to :math:`J_1 J_2^\top v`: the cost of two passes, the
  memory of one VJP, whatever the number of outputs.

  Args:
    f: ``f(params, x, **kwargs)``.
    x1: inputs of the output side.
    x2: inputs of the cotangent side; ``None`` means ``x1``.
    params: the parameters.
    **apply_fn_kwargs: passed to ``f``; a 2-tuple value is ``(for x1, for x2)``.

  Returns:
    ``ntk_vp_fn(cotangents)``, ``cotangents`` shaped like ``f(params, x2)``,
    returning an array shaped like ``f(params, x1)``.

  >>> import jax.numpy as jnp
  >>> f = lambda p, x: x @ p
  >>> vp = empirical_ntk_vp_fn(f, jnp.ones((2, 3)), None, jnp.ones((3, 4)))
  >>> vp(jnp.ones((2, 4))).shape
  (2, 4)
  """
  k1, k2 = _split_kwargs(apply_fn_kwargs, x1, x2)
  x2 = x1 if x2 is None else x2

  def ntk_vp_fn(cotangents):
    _, pullback = jax.vjp(lambda p: f(p, x2, **k2), params)
    (tangents,) = pullback(cotangents)
    return jax.jvp(lambda p: f(p, x1, **k1), (params,), (tangents,))[1]

  return ntk_vp_fn
