"""Dropout as an ``(init, apply, kernel)`` layer (NT's ``stax.Dropout``).

The random mask needs a key at apply time: the run context carries it as
``ctx.rng`` (:func:`with_rng`), and a dropout layer draws its mask from that
key as given (NT's ``bernoulli(rng, rate, shape)``). Two dropout layers of one
network get independent masks because the combinators around them hand each
layer its own key: :func:`jaxtheory.stax.serial` and ``parallel`` split the key
per layer, as neural-tangents does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxtheory.kernels import analytic, linear_ops
from jaxtheory.nn.core import Ctx, Layer

@dataclasses.dataclass(frozen=True)
class RngCtx(Ctx):
  """A run context that also carries a PRNG key for stochastic layers (dropout).

  Attributes:
    rng: a PRNG key, or ``None``.
  """
  rng: Any = None


def with_rng(ctx: Ctx, rng) -> Ctx:
  """``ctx`` carrying ``rng`` (see :class:`RngCtx`)."""
  fields = {f.name: getattr(ctx, f.name) for f in dataclasses.fields(Ctx)}
  return RngCtx(**fields, rng=rng)


def dropout(rate: float, mode: str = "train") -> Layer:
  r"""Keeps each unit with probability ``rate`` and divides it by ``rate`` (train mode).

  ``mode='test'`` is the identity. In train mode ``apply`` needs a key in
  ``ctx.rng`` (a ``ValueError`` otherwise, as NT's). Kernel:
  :func:`jaxtheory.kernels.linear_ops.dropout`.

  Args:
    rate: the keep probability, in ``(0, 1]`` (NT's convention).
    mode: ``'train'`` or ``'test'``.
  """
  if mode not in ("train", "test"):
    raise ValueError(f"dropout mode must be 'train' or 'test', got {mode!r}")
  if not 0.0 < rate <= 1.0:
    raise ValueError(f"dropout rate (the keep probability) must be in (0, 1], got {rate!r}")

  def init(key, spec, ctx):
    del key, ctx
    return spec, (), ()

  def apply(params, x, feat, ctx):
    del params
    if mode == "test":
      return x, feat
    rng = getattr(ctx, "rng", None)
    if rng is None:
      raise ValueError("dropout in train mode needs a PRNG key: apply_fn(params, x, rng=key)")
    keep = jax.random.bernoulli(rng, rate, x.shape)
    return jnp.where(keep, x / rate, jnp.zeros_like(x)), feat

  kernel = analytic.identity() if mode == "test" else linear_ops.dropout(rate)
  return Layer(init, apply, kernel)
