"""The exact kernel of a network that is linear in its standard-normal parameters.

For one NTK-parametrized layer (or a stack of linear maps after one), the output is
linear in parameters drawn i.i.d. N(0, 1), so its NNGP, and its NTK, are the Gram matrix of
the Jacobian in the parameters: an exact reference for analytic kernels of linear layers.
"""

import jax
import jax.numpy as jnp


def jacobian_kernel(apply, params, x1, x2, batch_axis=0, channel_axis=-1):
  """``sum_theta dy(x1)/dtheta dy(x2)/dtheta`` of output channel 0, in NT's full layout
  ``(n1, n2, h, h', w, w', ...)``, spatial axes in the output's order."""
  def jac(x):
    y = lambda p: jnp.take(jnp.moveaxis(apply(p, x), (batch_axis, channel_axis), (0, -1)), 0,
                           axis=-1)
    j = jax.jacobian(y)(params)
    sp = y(params).shape
    return jnp.concatenate([a.reshape(sp + (-1,)) for a in jax.tree.leaves(j)], -1)
  j1, j2 = jac(x1), jac(x2)
  nsp = j1.ndim - 2
  return jnp.einsum(j1, [0] + list(range(2, 2 + nsp)) + [99], j2,
                    [1] + list(range(2 + nsp, 2 + 2 * nsp)) + [99],
                    [0, 1] + [a for d in range(nsp) for a in (2 + d, 2 + nsp + d)])


def diagonal(k):
  """Same-position entries of a full-layout kernel ``(n1, n2, h, h', w, w', ...)``."""
  nsp = (k.ndim - 2) // 2
  return jnp.einsum(k, [0, 1] + [2 + d for d in range(nsp) for _ in range(2)],
                    [0, 1] + [2 + d for d in range(nsp)])
