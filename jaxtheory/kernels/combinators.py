"""Kernel maps of the combinators: branches summed or concatenated, layers frozen.

The infinite-width counterparts of :func:`jaxtheory.nn.core.fan_in_sum`,
:func:`~jaxtheory.nn.core.fan_in_concat` and :func:`~jaxtheory.nn.core.frozen`,
on the :class:`~jaxtheory.kernels.analytic.Kernel` of each branch (NT's
``FanInSum`` / ``FanInConcat`` conventions, neural-tangents 0.6.5).
"""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp

from jaxtheory.kernels import analytic
from jaxtheory.kernels.analytic import Kernel, KernelMap


def _layout(k: Kernel):
  """The spatial layout flag, ``None`` without spatial axes (both layouts are then the same)."""
  return k.diagonal_spatial if k.nspatial else None


def _same_shapes(ks, where: str) -> tuple:
  """The branches' kernels as a tuple, checked to share one shape and one layout."""
  ks = tuple(ks)
  if len({k.nngp.shape for k in ks}) != 1 or len({_layout(k) for k in ks}) != 1:
    raise ValueError(f"{where} needs kernels of one shape, got {[k.nngp.shape for k in ks]}")
  if len({k.joint_split for k in ks}) != 1:  # x1's and x2's examples cut at different places
    raise ValueError(f"{where} needs branches of one shape, but for x1 and x2 together they "
                     "hold different numbers of examples (a branch resizes or contracts the "
                     "batch axis)")
  return ks


def fan_in_sum() -> KernelMap:
  """Sum of independent centred Gaussian branches: kernels add."""

  def kernel(ks, ctx) -> Kernel:
    del ctx
    ks = _same_shapes(ks, "fan_in_sum")
    if len(ks) > 1 and not all(k.is_gaussian for k in ks):
      raise ValueError(
          "fan_in_sum: the kernel of a sum is the sum of kernels only for independent centred "
          "Gaussian branches; every branch must end in a dense or conv layer (got a branch "
          "ending in a nonlinearity, flatten or concatenation)")
    add = lambda xs: None if xs[0] is None else functools.reduce(operator.add, xs)
    return ks[0].replace(nngp=add([k.nngp for k in ks]),
                         ntk=None if any(k.ntk is None for k in ks) else add([k.ntk for k in ks]),
                         cov1=add([k.cov1 for k in ks]), cov2=add([k.cov2 for k in ks]),
                         is_gaussian=all(k.is_gaussian for k in ks),
                         wide=any(k.wide for k in ks))

  return kernel


def fan_in_prod() -> KernelMap:
  r"""Elementwise product of independent branches: :math:`K = \prod_i K_i` and, by the product
  rule, :math:`\Theta = \sum_i \Theta_i \prod_{j \ne i} K_j` (NT's ``FanInProd``; the branches
  must share no parameters, e.g. each ends in its own dense or conv layer). The product of
  several Gaussians is not Gaussian: a dense or conv layer must follow before a nonlinearity.
  """

  def kernel(ks, ctx) -> Kernel:
    del ctx
    ks = _same_shapes(ks, "fan_in_prod")
    prod = lambda xs: None if xs[0] is None else functools.reduce(operator.mul, xs)
    ntk = None
    if not any(k.ntk is None for k in ks):
      nngp_so_far, ntk = 1.0, 0.0
      for k in ks:
        ntk = ntk * k.nngp + nngp_so_far * k.ntk
        nngp_so_far = nngp_so_far * k.nngp
    return ks[0].replace(nngp=prod([k.nngp for k in ks]), ntk=ntk,
                         cov1=prod([k.cov1 for k in ks]), cov2=prod([k.cov2 for k in ks]),
                         is_gaussian=len(ks) == 1 and ks[0].is_gaussian,
                         wide=any(k.wide for k in ks))

  return kernel


def _block_diag(mats, pair_axes):
  """Concatenates along ``pair_axes`` (both copies) with zero off-diagonal blocks."""
  totals = {ax: sum(m.shape[ax] for m in mats) for ax in pair_axes}
  offs = dict.fromkeys(pair_axes, 0)
  out = 0.0
  for m in mats:
    widths = [(0, 0)] * m.ndim
    for ax in pair_axes:
      widths[ax] = (offs[ax], totals[ax] - offs[ax] - m.shape[ax])
      offs[ax] += m.shape[ax]
    out = out + jnp.pad(m, widths)
  return out


def fan_in_concat(axis: int = -1) -> KernelMap:
  r"""Concatenation of independent branches along ``axis`` of the activations.

  Along channels the kernel is the channel-weighted average
  :math:`K = \sum_i C_i K_i / \sum_i C_i` (no longer i.i.d. across channels,
  so not Gaussian-i.i.d.); along a spatial axis the covariance is
  block-diagonal (branches are independent; NT's ``FanInConcat``), and so it is between
  the examples of different branches along the batch axis.
  """

  def kernel(ks, ctx) -> Kernel:
    ks = tuple(ks)
    k0 = ks[0]
    ndim = k0.nspatial + 2
    ax = axis % ndim
    if len({_layout(k) for k in ks}) != 1 or len({k.nspatial for k in ks}) != 1:
      raise ValueError("fan_in_concat needs kernels of one layout")
    if ax == 0:
      analytic.refuse_joint(ctx, "fan_in_concat along the batch axis")
      return _concat_batch(ks)
    ntks = None if any(k.ntk is None for k in ks) else [k.ntk for k in ks]
    if ax == ndim - 1:
      if len({k.nngp.shape for k in ks}) != 1:
        raise ValueError(f"fan_in_concat along channels needs equal spatial shapes, got "
                         f"{[k.nngp.shape for k in ks]}")
      chans = [k.channels for k in ks]
      if all(isinstance(c, int) for c in chans) and len(set(chans)) == 1:
        weights = [1.0 / len(ks)] * len(ks)
      else:
        weights = [c / sum(chans) for c in chans]
      avg = lambda ms: None if ms is None or ms[0] is None else sum(w * m for w, m in zip(weights, ms))
      return k0.replace(nngp=avg([k.nngp for k in ks]), ntk=avg(ntks),
                        cov1=avg([k.cov1 for k in ks]), cov2=avg([k.cov2 for k in ks]),
                        channels=sum(chans), is_gaussian=False, wide=any(k.wide for k in ks))
    if not all(k.is_gaussian for k in ks):
      raise ValueError("fan_in_concat along a spatial axis needs centred Gaussian branches "
                       "(each ending in a dense or conv layer)")
    a = ax - 1

    def cat(ms, bn):
      if ms is None or ms[0] is None:
        return None
      if k0.diagonal_spatial:
        return jnp.concatenate(ms, axis=bn + a)
      return _block_diag(ms, (bn + 2 * a, bn + 2 * a + 1))

    return k0.replace(nngp=cat([k.nngp for k in ks], 2), ntk=cat(ntks, 2),
                      cov1=cat([k.cov1 for k in ks], 1), cov2=cat([k.cov2 for k in ks], 1),
                      is_gaussian=True, wide=any(k.wide for k in ks))

  return kernel


def _concat_batch(ks) -> Kernel:
  """Independent centred Gaussian branches stacked along the batch axis: block-diagonal
  covariances between examples of different branches (NT's ``FanInConcat(axis=0)``)."""
  if not all(k.is_gaussian for k in ks):
    raise ValueError("fan_in_concat along the batch axis needs centred Gaussian branches "
                     "(each ending in a dense or conv layer)")
  if len({k.nngp.shape[2:] for k in ks}) != 1:
    raise ValueError("fan_in_concat along the batch axis needs equal spatial shapes, got "
                     f"{[k.nngp.shape[2:] for k in ks]}")
  k0 = ks[0]
  pair = lambda ms: None if ms[0] is None else _block_diag(ms, (0, 1))
  stack = lambda ms: None if ms[0] is None else jnp.concatenate(ms, axis=0)
  ntks = None if any(k.ntk is None for k in ks) else [k.ntk for k in ks]
  return k0.replace(nngp=pair([k.nngp for k in ks]), ntk=None if ntks is None else pair(ntks),
                    cov1=stack([k.cov1 for k in ks]), cov2=stack([k.cov2 for k in ks]),
                    is_gaussian=True, wide=any(k.wide for k in ks))


def frozen(kernel: KernelMap) -> KernelMap:
  r"""The kernel map of a layer whose parameters are not trained.

  The NTK of any of our layers is affine in its input NTK,
  :math:`\Theta' = A(\Theta) + B`, with :math:`B` the contribution of the
  layer's own parameters; freezing removes :math:`B`:
  :math:`A(\Theta) = \Theta'(\Theta) - \Theta'(0)`.
  """

  def frozen_kernel(k, ctx):
    out = kernel(k, ctx)
    is_k = lambda x: isinstance(x, Kernel)
    if all(x.ntk is None for x in jax.tree.leaves(out, is_leaf=is_k)):
      return out
    zero = jax.tree.map(lambda x: x.replace(ntk=None if x.ntk is None else jnp.zeros_like(x.ntk)),
                        k, is_leaf=is_k)
    own = kernel(zero, ctx)
    return jax.tree.map(lambda o, b: o.replace(ntk=o.ntk - b.ntk), out, own, is_leaf=is_k)

  return frozen_kernel
