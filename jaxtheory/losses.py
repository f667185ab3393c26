"""Losses of one run: weighted means over examples.

The weights ``w`` mask the inactive examples of a data-size sweep and the
padding of a last minibatch, so a loss of a padded batch equals the loss of the
examples it holds.

>>> import jax.numpy as jnp
>>> from jaxtheory.losses import accuracy, mse
>>> f, y, w = jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([0, 0]), jnp.array([1.0, 1.0])
>>> float(accuracy(f, y, w)), float(mse(f, y, w))
(0.5, 0.5)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def mse(f: Array, y: Array, w: Array) -> Array:
  r"""Half squared error summed over outputs, averaged over examples.

  :math:`\frac{1}{\sum_i w_i} \sum_i w_i \frac12 \|f_i - y_i\|^2`. NT's closed forms
  divide by ``y.size`` (examples x outputs) instead; see
  :mod:`jaxtheory.kernels.predict` (``normalization=n``) for the exact mapping.
  """
  if y.ndim == f.ndim - 1:  # integer labels: regress on one-hot targets
    y = jax.nn.one_hot(y, f.shape[-1], dtype=f.dtype)
  per = 0.5 * jnp.sum((f - y) ** 2, axis=-1)
  return jnp.sum(w * per) / jnp.sum(w)


def cross_entropy(f: Array, y: Array, w: Array) -> Array:
  """Softmax cross-entropy with integer labels, averaged over examples."""
  per = optax.softmax_cross_entropy_with_integer_labels(f, y)
  return jnp.sum(w * per) / jnp.sum(w)


def accuracy(f: Array, y: Array, w: Array) -> Array:
  """Fraction of correctly classified examples (integer labels)."""
  return jnp.sum(w * (jnp.argmax(f, -1) == y)) / jnp.sum(w)


LOSSES: dict[str, Callable] = {"mse": mse, "xent": cross_entropy}
