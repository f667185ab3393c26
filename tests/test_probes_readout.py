"""Linear readouts on fixed features: closed form == least squares, padding and weights exact."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory.probes import readout as R


@pytest.mark.parametrize("n,p", [(12, 5), (12, 12), (12, 30)])
def test_ridge_readout_matches_lstsq_and_ignores_zero_columns(n, p):
  with jax.enable_x64(True):
    k = jax.random.split(jax.random.key(0), 4)
    Phi, Phi_t = jax.random.normal(k[0], (n, p)), jax.random.normal(k[1], (7, p))
    y, y_t = jax.random.normal(k[2], (n, 2)), jax.random.normal(k[3], (7, 2))
    ridges = (0.0, 0.1, 3.0)
    got = np.asarray(R.ridge_losses(Phi, y, Phi_t, y_t, ridges))
    for j, lam in enumerate(ridges):
      P, Y = np.asarray(Phi), np.asarray(y)
      if lam == 0:
        a = np.linalg.lstsq(P, Y, rcond=None)[0]  # the minimum-norm solution
      else:
        a = np.linalg.solve(P.T @ P + n * lam * np.eye(p), P.T @ Y)
      loss = lambda F, T: 0.5 * np.mean(np.sum((F @ a - T) ** 2, -1))
      np.testing.assert_allclose(got[:, j], [loss(P, Y), loss(np.asarray(Phi_t), y_t)],
                                 rtol=1e-8, atol=1e-12)
    padded = R.ridge_losses(jnp.pad(Phi, ((0, 0), (0, 9))), y,
                            jnp.pad(Phi_t, ((0, 0), (0, 9))), y_t, ridges)
    np.testing.assert_allclose(np.asarray(padded), got, rtol=1e-8, atol=1e-12)
    # Weights: a 0-weight example is the same as a dropped one.
    w = jnp.ones(n).at[-2:].set(0.0)
    masked = R.ridge_losses(Phi, y, Phi_t, y_t, ridges, weights=w)
    dropped = R.ridge_losses(Phi[:-2], y[:-2], Phi_t, y_t, ridges)
    np.testing.assert_allclose(np.asarray(masked), np.asarray(dropped), rtol=1e-6, atol=1e-12)


