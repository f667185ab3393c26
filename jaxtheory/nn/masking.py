"""Layers that carry masks: padding marked in the inputs, followed through a network.

neural-tangents' masking (``apply_fn(params, x, mask_constant=c)``,
``kernel_fn(x1, x2, mask_constant=c)``): input entries equal to ``c`` are
masked; every layer receives its input with masked entries zeroed and maps the
input's mask to its output's; the finite network returns a
:class:`MaskedArray`. :func:`masked` gives a layer that behaviour, in ``apply``
and in its kernel map, from a :class:`Rule`; the combinators (``serial``,
``parallel``, ``fan_out``) pass masks through untouched. The kernel side is
:mod:`jaxtheory.kernels.masking`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxtheory.kernels import analytic, masking as kmasking
from jaxtheory.nn import core


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MaskedArray:
  """An activation and which of its entries are masked (neural-tangents' ``MaskedArray``).

  Attributes:
    masked_value: the activation.
    mask: booleans broadcastable to it, ``True`` where an entry is masked.
  """
  masked_value: Any
  mask: Any


def is_masked(x) -> bool:
  return isinstance(x, MaskedArray)


def has_mask(x) -> bool:
  """Whether an activation (or a pytree of them) holds a :class:`MaskedArray`."""
  return any(is_masked(l) for l in jax.tree.leaves(x, is_leaf=is_masked))


def _split(x):
  """``(values with masked entries zeroed, masks)`` of a pytree of activations."""
  def value(a):
    if not is_masked(a):
      return a
    return jnp.where(a.mask, jnp.zeros((), a.masked_value.dtype), a.masked_value)

  return (jax.tree.map(value, x, is_leaf=is_masked),
          jax.tree.map(lambda a: a.mask if is_masked(a) else None, x, is_leaf=is_masked))


def unmask(x):
  """Plain arrays with masked entries zeroed (neural-tangents' ``unmask_fn`` on outputs)."""
  return _split(x)[0]


def mask_inputs(x, mask_constant):
  """Inputs (a pytree of arrays) as :class:`MaskedArray` s: entries equal to ``mask_constant``."""
  def one(a):
    if is_masked(a):
      return a
    value, mask = kmasking.input_mask(a, mask_constant)
    return MaskedArray(value, mask)

  return jax.tree.map(one, x, is_leaf=is_masked)


class Rule(NamedTuple):
  """How a layer treats masks.

  Attributes:
    mask_fn: ``mask_fn(mask, shape)``: the output's mask from the input's
      (``(n, *spatial, c)``, ``c`` the channels or 1; a tuple of them for layers
      with several inputs, ``None`` for an unmasked one) and the input
      activation's shape (a tuple of shapes; ``None`` in a kernel map, where
      only the mask's own shape is known).
    remask: zero the kernel's covariances at masked positions after the layer
      (layers that can make a zero input nonzero).
    apply: ``apply(params, x, mask, feat, ctx)``, for a layer whose
      computation depends on the mask (``None``: the layer's own ``apply`` on
      the zeroed input).
    kernel_mask_fn: ``kernel_mask_fn(mask, k, ctx)``, the output's mask in a kernel
      map when it depends on the layer's input kernel ``k`` or the run context
      (``None``: ``mask_fn(mask, None)``).
  """
  mask_fn: Callable
  remask: bool = False
  apply: Callable | None = None
  kernel_mask_fn: Callable | None = None


def identity_rule(remask: bool = False) -> Rule:
  """Elementwise layers: the mask is unchanged."""
  return Rule(lambda mask, shape: mask, remask)


def _map_masks(fn, masks, shapes):
  """``fn`` on a mask (skipping ``None``) or on a tuple of them (multi-input layers)."""
  if isinstance(masks, tuple):
    return fn(masks, shapes)
  return None if masks is None else fn(masks, shapes)


def masked(layer: core.Layer, rule: Rule | None, name: str) -> core.Layer:
  """``layer`` that follows masks by ``rule`` (``None``: a clear error on a masked input)."""

  def refuse():
    return NotImplementedError(
        f"{name} does not support masked inputs (mask_constant): its treatment of padding is "
        "not defined here; remove the mask before it or leave mask_constant unset")

  def apply(params, x, feat, ctx):
    if not has_mask(x):
      return layer.apply(params, x, feat, ctx)
    if rule is None:
      raise refuse()
    values, masks = _split(x)
    if rule.apply is not None:
      y, f = rule.apply(params, values, masks, feat, ctx)
    else:
      y, f = layer.apply(params, values, feat, ctx)
    shapes = jax.tree.map(jnp.shape, values)
    out = _map_masks(rule.mask_fn, masks, shapes)
    return (y if out is None else MaskedArray(y, out)), f

  def kernel(k, ctx):
    is_k = lambda v: isinstance(v, analytic.Kernel)
    leaves = jax.tree.leaves(k, is_leaf=is_k)
    if all(l.mask1 is None and l.mask2 is None for l in leaves):
      return layer.kernel(k, ctx)
    if rule is None:
      raise refuse()
    out = layer.kernel(k, ctx)
    m1 = jax.tree.map(lambda l: l.mask1, k, is_leaf=is_k)
    m2 = jax.tree.map(lambda l: l.mask2, k, is_leaf=is_k)
    fn = (rule.mask_fn if rule.kernel_mask_fn is None
          else lambda m, shapes: rule.kernel_mask_fn(m, k, ctx))
    out = out.replace(mask1=_map_masks(fn, m1, None), mask2=_map_masks(fn, m2, None))
    return kmasking.remask(out, name) if rule.remask else out

  return core.Layer(layer.init, apply, None if layer.kernel is None else kernel)
