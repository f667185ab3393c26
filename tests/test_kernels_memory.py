"""Working memory of analytic kernels: XLA's temporaries, in units of one kernel-sized buffer.

The kernel of a network holds a few ``(n1, n2, *S)`` arrays at a time; these
tests bound how many (compiled, never run: ``memory_analysis`` of the program),
so that a formulation which makes XLA keep extra kernel-sized copies (a
zero-padded copy per conv offset, a dilated copy per transposed conv, a
shared square root and angle per nonlinearity) fails here rather than in a
user's out-of-memory error.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import nt
from jaxtheory.nt import stax


def _temp_buffers(kernel_fn, x, buffer_shape) -> float:
  f = jax.jit(lambda x: kernel_fn(x, None, ("nngp", "ntk")))
  temp = f.lower(x).compile().memory_analysis().temp_size_in_bytes
  return temp / (np.prod(buffer_shape) * 4)


def test_relu_kernel_keeps_one_intermediate_per_layer():
  n = 400
  _, _, kernel_fn = stax.serial(*[stax.Dense(256, 1.5, 0.1), stax.Relu()] * 3, stax.Dense(1))
  x = jnp.asarray(np.random.default_rng(0).standard_normal((n, 16)), jnp.float32)
  # Each ReLU's angle, which its NNGP and NTK share (XLA fuses the cheap NTK recursion
  # into one pass at the end, so the angles stay live); before, also each layer's Gram
  # root sqrt(q1 q2 - c^2): 6 buffers.
  assert _temp_buffers(kernel_fn, x, (n, n)) <= 3.5


@pytest.mark.parametrize("transpose", [False, True])
def test_conv_kernels_make_no_padded_or_dilated_copies(transpose):
  layer = (lambda: stax.ConvTranspose(8, (3, 3), (2, 2), "SAME")) if transpose else (
      lambda: stax.Conv(8, (3, 3), padding="SAME"))
  _, _, kernel_fn = stax.serial(layer(), stax.Relu(), layer(), stax.Relu(), stax.GlobalAvgPool(),
                                stax.Dense(1))
  n, side = 6, 4 if transpose else 8
  x = jnp.asarray(np.random.default_rng(0).standard_normal((n, side, side, 3)), jnp.float32)
  out = 4 * side if transpose else side
  # The last conv's NNGP and NTK, the angle of the ReLU after it and its results: about
  # 4.5 kernel-sized buffers. Zero-padded copies per offset made it 18 (conv); the
  # dilated copy of the input's covariance 6 (transposed).
  assert _temp_buffers(kernel_fn, x, (n, n, out, out, out, out)) <= 5.5


def test_batch_computes_one_block_at_a_time(monkeypatch):
  _, _, kernel_fn = stax.serial(stax.Conv(8, (3, 3), padding="SAME"), stax.Relu(),
                                stax.GlobalAvgPool(), stax.Dense(1))
  x = np.random.default_rng(1).standard_normal((12, 6, 6, 2)).astype(np.float32)
  calls = []
  ready = jax.block_until_ready

  def counting(k):
    calls.append(k)
    return ready(k)

  batched = nt.batch(kernel_fn, batch_size=4, device_count=0)
  monkeypatch.setattr(jax, "block_until_ready", counting)
  out = batched(x, None, "nngp")
  monkeypatch.undo()
  assert len(calls) >= 9  # every one of the 3 x 3 blocks waited for before the next
  np.testing.assert_allclose(out, kernel_fn(x, None, "nngp"), rtol=2e-5, atol=1e-6)
