r"""Monte Carlo estimates of the NNGP and NTK: empirical kernels averaged over initializations.

For a finite network ``(init_fn, apply_fn)`` the estimate from ``n`` draws of
the parameters :math:`\theta_s \sim` ``init_fn`` is

.. math::
   \hat K_n(x_1, x_2) = \frac1n \sum_{s=1}^n K_{\theta_s}(x_1, x_2),

where :math:`K_\theta` is the empirical NNGP :math:`f_\theta(x_1) f_\theta(x_2)^\top`
or NTK :math:`J_\theta(x_1) J_\theta(x_2)^\top`
(:func:`~jaxtheory.kernels.empirical.empirical_kernel_fn`). As the width
grows it converges to the analytic kernel (Neal 1994; Lee et al. 2018; Jacot et
al. 2018); for fixed width it converges in ``n`` to the expected finite-width
kernel. This is neural-tangents' ``nt.monte_carlo_kernel_fn`` (0.6.5): draw
``s`` uses the key ``split(key_{s-1})`` chain, each draw is one call of a
batched (:func:`~jaxtheory.kernels.batching.batch`) function of ``(x1, x2,
key)``, so memory holds one draw and the running sum.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import jax
import jax.extend.core as jex_core
import jax.numpy as jnp

from jaxtheory.kernels.batching import batch
from jaxtheory.kernels.empirical import empirical_kernel_fn

__all__ = ["monte_carlo_kernel_fn"]


def _sample_once_kernel_fn(kernel_fn: Callable, init_fn: Callable, batch_size: int = 0,
                           device_count: int = -1, store_on_device: bool = True,
                           apply_fn: Callable | None = None) -> Callable:
  """``fn(x1, x2, key, get, **apply_fn_kwargs)``: the empirical kernel of one draw.

  ``key`` is split into an init key and a key passed to ``apply_fn`` as
  ``rng`` (dropout). Blocks follow ``batch_size`` and ``device_count``, except
  that with ``x2=None`` a network that reads ``rng`` (``apply_fn``; all
  networks when it is not given) is computed as one block.
  """

  def sample_once(x1, x2, key, get, **apply_fn_kwargs):
    init_key, apply_key = jax.random.split(key)
    _, params = init_fn(init_key, jax.tree.map(lambda a: a.shape, x1))
    return kernel_fn(x1, x2, get, params, rng=apply_key, **apply_fn_kwargs)

  blocks = batch(sample_once, batch_size, device_count, store_on_device)
  # Dropout (the rng passed to apply_fn) draws its mask per position in the batch: with
  # x2=None an example must meet itself at one position, so such a network is one block.
  whole = batch(sample_once, batch_size, device_count, store_on_device, by_position=True)
  uses_rng = {}

  def batched(x1, x2, key, get, **apply_fn_kwargs):
    if x2 is not None:
      return blocks(x1, x2, key, get, **apply_fn_kwargs)
    if apply_fn is None:  # unknown network: one block is always right
      return whole(x1, x2, key, get, **apply_fn_kwargs)
    sig = (jax.tree.structure(x1), tuple(jnp.shape(a) for a in jax.tree.leaves(x1)),
           tuple(sorted(apply_fn_kwargs)))
    if sig not in uses_rng:
      uses_rng[sig] = _uses_rng(init_fn, apply_fn, x1, apply_fn_kwargs)
    return (whole if uses_rng[sig] else blocks)(x1, x2, key, get, **apply_fn_kwargs)

  return batched


def _uses_rng(init_fn: Callable, apply_fn: Callable, x, kwargs) -> bool:
  """Whether ``apply_fn(params, x, rng=key, **kwargs)`` reads ``key`` (traced, not run; when
  it cannot be traced apart from a run, assume it does: one block is always correct)."""
  shapes = jax.tree.map(lambda a: a.shape, x)
  spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), x)
  try:
    params = jax.eval_shape(lambda k: init_fn(k, shapes)[1], jax.random.key(0))
    closed = jax.make_jaxpr(lambda k, p, xs: apply_fn(p, xs, rng=k, **kwargs))(
        jax.random.key(0), params, spec)
  except Exception:  # pylint: disable=broad-except
    return True
  # The outputs that depend on the key (an equation's outputs depend on all of its inputs):
  # a key that is split but whose parts reach no output (a network without dropout) is unused.
  reached = {closed.jaxpr.invars[0]}
  for e in closed.jaxpr.eqns:
    if any(isinstance(v, jex_core.Var) and v in reached for v in e.invars):
      reached.update(e.outvars)
  return any(isinstance(v, jex_core.Var) and v in reached for v in closed.jaxpr.outvars)


def _canonical_n_samples(n_samples) -> tuple[set[int], bool]:
  """``(sample counts, returns a generator)``."""
  if isinstance(n_samples, int) and not isinstance(n_samples, bool):
    counts, generator = {n_samples}, False
  elif isinstance(n_samples, Iterable):
    counts, generator = set(n_samples), True
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in counts):
      raise ValueError(f"n_samples must contain only integers, got {n_samples}")
  else:
    raise TypeError(f"n_samples must be an integer or an iterable of integers, "
                    f"got {type(n_samples).__name__}")
  if not counts or any(n <= 0 for n in counts):
    raise ValueError(f"n_samples must be positive, got {n_samples}")
  return counts, generator


def monte_carlo_kernel_fn(init_fn: Callable, apply_fn: Callable, key: jax.Array,
                          n_samples: int | Iterable[int], batch_size: int = 0,
                          device_count: int = -1, store_on_device: bool = True,
                          trace_axes=(-1,), diagonal_axes=(), vmap_axes=None,
                          implementation: str | int = "auto", _j_rules: bool = True,
                          _s_rules: bool = True, _fwd: bool | None = None) -> Callable:
  """NT's ``monte_carlo_kernel_fn``: NNGP/NTK estimates averaged over ``n_samples`` inits.

  Args:
    init_fn: ``init_fn(key, input_shape) -> (output_shape, params)``.
    apply_fn: ``apply_fn(params, x, **kwargs)`` (receives ``rng=`` too).
    key: the key of the first draw.
    n_samples: the number of draws, or an iterable of counts: then the
      function returns a generator of the estimates at each count (one pass).
    batch_size: examples per block (:func:`~jaxtheory.kernels.batching.batch`).
    device_count: devices to spread blocks over (``-1``: all, ``0``: none).
    store_on_device: ``False`` keeps finished blocks in host memory.
    trace_axes: output axes averaged over.
    diagonal_axes: output axes kept once.
    vmap_axes: as in ``empirical_ntk_fn`` (the NTK only).
    implementation: the empirical NTK's implementation (the NTK only).
    _j_rules, _s_rules, _fwd: accepted for compatibility with NT and ignored.

  Returns:
    ``kernel_fn(x1, x2=None, get=None, **apply_fn_kwargs)``, with ``get`` as
    in ``empirical_kernel_fn`` (``None``: a namedtuple of ``nngp`` and
    ``ntk``), or a generator of those if ``n_samples`` is an iterable.

  Raises:
    ValueError / TypeError: bad ``n_samples``.
  """
  counts, generator = _canonical_n_samples(n_samples)
  empirical = empirical_kernel_fn(apply_fn, trace_axes, diagonal_axes, vmap_axes,
                                  implementation, _j_rules, _s_rules, _fwd)
  sample_once = _sample_once_kernel_fn(empirical, init_fn, batch_size, device_count,
                                       store_on_device, apply_fn)

  def running_means(x1, x2, get, apply_fn_kwargs):
    k, total = key, None
    for n in range(1, max(counts) + 1):
      k, draw_key = jax.random.split(k)
      draw = sample_once(x1, x2, draw_key, get, **apply_fn_kwargs)
      total = draw if total is None else jax.tree.map(lambda a, b: a + b, total, draw)
      if n in counts:
        yield jax.tree.map(lambda a, n=n: a / n, total)

  if generator:
    def kernel_fn(x1, x2=None, get=None, **apply_fn_kwargs):
      return running_means(x1, x2, get, apply_fn_kwargs)
  else:
    def kernel_fn(x1, x2=None, get=None, **apply_fn_kwargs):
      *_, mean = running_means(x1, x2, get, apply_fn_kwargs)
      return mean

  return kernel_fn
