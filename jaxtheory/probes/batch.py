"""Running a per-model probe over a whole sweep: every seed and width in one call.

A probe is written for ONE network (``fn(params, *args) -> pytree``). A sweep
holds many: parameters stacked on leading axes (e.g. ``(seed, width)``), all at
the padded capacity of their bucket. :func:`over_runs` maps the probe over
those leading axes in one compiled program (``jax.jit``: a probe's own loops,
such as Lanczos, are not dispatched op by op), either vectorised (``vmap``) or
as a sequential ``lax.map`` (bounded memory), chunked in between.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtheory import compile_cache
from jaxtheory.metric import after


_PROGRAMS: dict = {}  # over_runs' programs from the executable store, in this process


def over_runs(fn: Callable, *args: Any, batch_dims: int = 1, in_axes: Any = 0,
              chunk: int | None = None, store_key: Any = None) -> Any:
  """``fn`` applied to every run stacked on the leading ``batch_dims`` axes.

  Args:
    fn: a probe of one run, ``fn(*args_of_one_run) -> pytree of arrays``.
    *args: pytrees; those mapped (see ``in_axes``) carry ``batch_dims``
      leading run axes of equal sizes.
    batch_dims: how many leading axes index runs (2 for ``(seed, width)``).
    in_axes: as in :func:`jax.vmap` (per argument): ``0`` maps an argument,
      ``None`` shares it between runs.
    chunk: ``None`` vectorises every run at once; an integer ``c`` maps
      sequentially over groups of ``c`` runs (``lax.map`` with that batch
      size), trading speed for memory; ``1`` is a plain sequential map.
    store_key: names ``fn`` for the executable store
      (:func:`jaxtheory.compile_cache.stored_call`), so that a later process
      loads the compiled program instead of tracing and compiling it again:
      a value whose ``repr`` determines what ``fn`` computes (e.g. a sweep
      group's :attr:`~jaxtheory.sweep.RunGroup.key` and the probe's
      settings). ``fn`` must then close over no arrays (pass them as shared
      arguments). ``None``: compiled in this process only.

  Returns:
    The outputs of ``fn`` with the ``batch_dims`` run axes in front.
  """
  if not isinstance(batch_dims, int) or batch_dims < 1:
    raise ValueError(f"batch_dims must be a positive integer, got {batch_dims!r}")
  axes = in_axes if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
  if len(axes) != len(args):
    raise ValueError(f"in_axes has {len(axes)} entries for {len(args)} arguments")
  mapped = [a for a, ax in zip(args, axes) if ax is not None]
  if not mapped:
    raise ValueError("over_runs needs at least one mapped argument (in_axes=0)")
  leaves = jax.tree.leaves(mapped)
  if not leaves:
    raise ValueError("the mapped arguments hold no arrays")
  lead = tuple(jnp.shape(leaves[0])[:batch_dims])
  for leaf in leaves:
    if tuple(jnp.shape(leaf)[:batch_dims]) != lead:
      raise ValueError(
          f"every mapped array needs the same {batch_dims} leading run axes; got "
          f"{tuple(jnp.shape(leaf)[:batch_dims])} and {lead}")
  if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
    raise ValueError(f"chunk must be a positive integer or None, got {chunk!r}")
  n = math.prod(lead)
  # Shared arguments made only of arrays are arguments of the one compiled program; any other
  # (a number the probe may use as a size, a function, a string) is closed over, as given.
  traced = {i: a for i, (a, ax) in enumerate(zip(args, axes))
            if ax is None and all(_is_array(l) for l in jax.tree.leaves(a))}
  static = {i: a for i, (a, ax) in enumerate(zip(args, axes)) if ax is None and i not in traced}
  per_run = tuple(a for a, ax in zip(args, axes) if ax is not None)

  def program(per_run, traced):
    def one(mapped_args):
      it = iter(mapped_args)
      full = [traced[i] if i in traced else static[i] if i in static else next(it)
              for i in range(len(args))]
      return fn(*full)

    flat = jax.tree.map(lambda a: jnp.reshape(a, (n,) + jnp.shape(a)[batch_dims:]), per_run)
    if chunk is None:
      out = jax.vmap(one)(flat)
    elif chunk == 1 or n % chunk == 0:
      out = jax.lax.map(one, flat, batch_size=None if chunk == 1 else chunk)
    else:
      # The last, partial chunk after the others (lax.map would run it beside them: two probes'
      # matrix factorizations side by side can deadlock XLA's CPU pool, see jaxtheory.metric).
      k = n - n % chunk
      head = jax.lax.map(one, jax.tree.map(lambda a: a[:k], flat), batch_size=chunk)
      tail = jax.vmap(one)(after(jax.tree.map(lambda a: a[k:], flat), head))
      out = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), head, tail)
    return jax.tree.map(lambda a: jnp.reshape(a, lead + a.shape[1:]), out)

  if store_key is None or static:
    return jax.jit(program)(per_run, traced)
  return compile_cache.stored_call(jax.jit(program), "over_runs",
                                   [store_key, batch_dims, chunk, axes], _PROGRAMS,
                                   (per_run, traced), {})


def _is_array(x) -> bool:
  return isinstance(x, (jax.Array, np.ndarray))
