r"""Function-space gradient descent on any loss (by an ODE solver) and its stability edge.

NT's ``nt.predict.gradient_descent`` and ``nt.predict.max_learning_rate``
(neural-tangents 0.6.5): kernels have NT's zipped layout and ``t`` counts
gradient-descent steps, as in :mod:`jaxtheory.kernels.predict`, whose
closed forms cover the MSE loss (and whose docstring explains the loss
normalization :func:`max_learning_rate` refers to).

References: Lee et al. (2019), "Wide Neural Networks of Any Depth Evolve as
Linear Models Under Gradient Descent", arXiv:1902.06720; Goh (2017), "Why
Momentum Really Works".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import ode
from jax.typing import ArrayLike

from jaxtheory.kernels._zipped import (Axes, _check_kernel, _k_to_2d, _layout, _out_from_2d,
                                       _out_to_2d, _test_shape)

Array = jax.Array


class ODEState(NamedTuple):
  """State of the function-space ODE solved by :func:`gradient_descent`.

  Attributes:
    fx_train: train-set outputs.
    fx_test: test-set outputs (``None``: not tracked).
    qx_train: train-set auxiliary variable (velocity, with momentum).
    qx_test: test-set auxiliary variable.
  """
  fx_train: Array | None = None
  fx_test: Array | None = None
  qx_train: Array | None = None
  qx_test: Array | None = None


def gradient_descent(
    loss: Callable[[Array, Array], Array],
    k_train_train: ArrayLike,
    y_train: ArrayLike,
    learning_rate: float = 1.,
    momentum: float | None = None,
    trace_axes: Axes = (-1,),
) -> Callable:
  r"""Function-space gradient flow [with momentum] on any loss, by an ODE solver.

  Solves :math:`\dot f_{\rm train} = -\Theta\,\nabla_f \mathcal L(f_{\rm train}, y)`,
  :math:`\dot f_{\rm test} = -\Theta_{*d}\nabla_f \mathcal L` in time
  ``learning_rate * t`` (Lee et al. 2019, sec. 2.2). With ``momentum``
  (heavy ball, :math:`\mu`) the continuous limit is solved in time
  ``sqrt(learning_rate) * t``: :math:`\ddot f = -\Theta\nabla\mathcal L -
  \frac{1 - \mu}{\sqrt{\eta}}\dot f` (NT's convention).

  Args:
    loss: ``loss(fx_train, y_train) -> scalar``; e.g. NT's MSE
      ``lambda f, y: 0.5 * jnp.mean((f - y) ** 2)``.
    k_train_train: train-train NTK (zipped layout).
    y_train: train targets.
    learning_rate: step size.
    momentum: ``None`` for plain gradient flow, else the momentum.
    trace_axes: axes along which kernels are :math:`\Theta \otimes I`.

  Returns:
    ``predict_fn(t=None, fx_train_or_state_0=0., fx_test_0=None,
    k_test_train=None)``; ``t`` must be increasing (``None``: infinity, may
    not converge). Passing an :class:`ODEState` returns an :class:`ODEState`.
  """
  y_train = jnp.asarray(y_train)
  k_train_train = jnp.asarray(k_train_train)
  lay = _layout(y_train, trace_axes)
  _check_kernel(k_train_train, lay, "k_train_train")
  k_dd = _k_to_2d(k_train_train)
  dtype = jnp.result_type(k_train_train, y_train)
  grad_loss = jax.grad(lambda f: loss(f, y_train))
  if momentum is not None:
    time_scale = learning_rate ** 0.5
    friction = (momentum - 1.) / time_scale
  else:
    time_scale, friction = learning_rate, None

  def predict_fn(t=None, fx_train_or_state_0=0., fx_test_0=None, k_test_train=None):
    """Outputs (or the full :class:`ODEState`) at increasing time[s] ``t``."""
    is_state = isinstance(fx_train_or_state_0, ODEState)
    if is_state:
      if fx_test_0 is not None:
        raise ValueError("pass fx_test_0 inside the ODEState, not separately")
      state = fx_train_or_state_0
    else:
      if fx_train_or_state_0 is None and fx_test_0 is None:
        raise ValueError("fx_train_0 and fx_test_0 are both None: nothing to predict")
      state = ODEState(fx_train_or_state_0, fx_test_0)
    if state.fx_test is not None and k_test_train is None:
      raise ValueError("fx_test_0 is given but k_test_train is None")
    if momentum is None and (state.qx_train is not None or state.qx_test is not None):
      raise ValueError("got momentum state variables while momentum is None")
    sample_test = None
    if state.fx_test is not None:
      sample_test = _check_kernel(k_test_train, lay, "k_test_train", square=False)
      k_td = _k_to_2d(jnp.asarray(k_test_train))
    test_shape = None if sample_test is None else _test_shape(lay, sample_test)
    fx_train = (jnp.zeros(y_train.shape, dtype) if state.fx_train is None else
                jnp.broadcast_to(state.fx_train, y_train.shape).astype(dtype))
    fx_test = (None if state.fx_test is None else
               jnp.broadcast_to(state.fx_test, test_shape).astype(dtype))
    qx_train = qx_test = None
    if momentum is not None:
      qx_train = (jnp.zeros_like(fx_train) if state.qx_train is None else
                  jnp.broadcast_to(state.qx_train, y_train.shape).astype(dtype))
      if fx_test is not None:
        qx_test = (jnp.zeros_like(fx_test) if state.qx_test is None else
                   jnp.broadcast_to(state.qx_test, test_shape).astype(dtype))
    state0 = ODEState(fx_train, fx_test, qx_train, qx_test)

    def force(f_train):
      g2 = _out_to_2d(grad_loss(f_train), lay)
      d_train = -_out_from_2d(k_dd @ g2, lay, lay.sample_shape)
      d_test = None if fx_test is None else -_out_from_2d(k_td @ g2, lay, sample_test)
      return d_train, d_test

    def rhs(st, _):
      d_train, d_test = force(st.fx_train)
      if momentum is None:
        return ODEState(d_train, d_test)
      d_qtrain = d_train + friction * st.qx_train
      d_qtest = None if d_test is None else d_test + friction * st.qx_test
      return ODEState(st.qx_train, st.qx_test, d_qtrain, d_qtest)

    t_arr = jnp.asarray(jnp.inf if t is None else t, dtype) * time_scale
    t_shape = t_arr.shape
    t_arr = t_arr.reshape(-1)
    # odeint evaluates at ts[0] = the initial time; prepend 0 (or -tiny when t[0] == 0).
    t0 = jnp.where(t_arr[0] == 0, -jnp.finfo(dtype).tiny, 0.).astype(dtype)[None]
    sol = ode.odeint(rhs, state0, jnp.concatenate([t0, t_arr]))
    sol = jax.tree.map(lambda x: x[1:].reshape(t_shape + x.shape[1:]), sol)
    if is_state:
      return sol
    if fx_train_or_state_0 is not None and fx_test_0 is None:
      return sol.fx_train
    if fx_train_or_state_0 is None:
      return sol.fx_test
    return sol.fx_train, sol.fx_test

  return predict_fn


def max_learning_rate(
    ntk_train_train: ArrayLike,
    y_train_size: int | None = None,
    momentum: float = 0.,
    eps: float = 1e-12,
) -> Array:
  r"""Largest stable learning rate of (momentum) GD on MSE in the linearized regime.

  For the loss :math:`\frac{1}{2N}\|f - y\|^2`, GD multiplies the residual by
  :math:`I - \frac{\eta}{N}\Theta`, a contraction iff
  :math:`\eta < 2N/\lambda_{\max}(\Theta)`; with heavy-ball momentum
  :math:`\mu` the bound is :math:`2(1+\mu)N/\lambda_{\max}` (Goh 2017, "Why
  Momentum Really Works").

  Args:
    ntk_train_train: train-train NTK (zipped layout).
    y_train_size: :math:`N`. ``None`` is the kernel's side length (NT: right
      when ``trace_axes=()``); NT's MSE wants ``y_train.size``,
      :func:`jaxtheory.train.mse` wants the number of examples.
    momentum: heavy-ball momentum.
    eps: guards a zero kernel.

  Returns:
    The maximal learning rate (a scalar array).

  >>> import jax.numpy as jnp
  >>> float(max_learning_rate(jnp.array([[2., 0.], [0., 4.]])))
  1.0
  """
  k = jnp.asarray(ntk_train_train)
  if k.ndim % 2 or k.ndim == 0 or k.shape[::2] != k.shape[1::2]:
    raise ValueError(f"ntk_train_train must be a square zipped kernel, got shape {k.shape}")
  k = _k_to_2d(k)
  n = k.shape[0] if y_train_size is None else y_train_size
  lam_max = jnp.linalg.eigvalsh(k)[-1]
  return 2 * (1 + momentum) * n / (lam_max + eps)
