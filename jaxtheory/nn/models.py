"""Model constructors: MLP, residual MLP, CNN, tiny transformer, deep linear net, random features, Fourier-feature MLP.

Each returns a :class:`~jaxtheory.nn.core.Model` built at ``width`` (the
capacity). Its hidden widths scale with the swept width, so the same model
runs any narrower width ``w <= width`` exactly by ``Ctx(width=w)``.

Every model except :func:`transformer` and :func:`fourier_mlp` (embeddings,
attention and random Fourier features have no infinite-width kernel) has
analytic NNGP and NTK kernels: ``jaxtheory.kernels.analytic.kernel_fn(model,
ctx)``; under ``'sp'`` the NTK uses the model's finite widths (or
``ctx.width``), as neural-tangents' standard parameterization does.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence

from jaxtheory.errors import ConfigError
from jaxtheory.nn import layers as L
from jaxtheory.nn.core import Layer, Model, frozen, model, residual, serial

Activation = Callable[[], Layer]

# The nonlinearities a configuration can name (configs hold plain strings): each has
# a closed-form or Gauss-Hermite infinite-width kernel, so a model built from any of
# them also has its NNGP/NTK limit.
ACTIVATIONS: dict[str, Activation] = {
    "relu": L.relu, "tanh": L.tanh, "erf": L.erf, "gelu": L.gelu,
    "sigmoid": L.sigmoid, "sin": L.sin, "identity": L.identity,
}


def activation(name: str, key: str = "activation") -> Activation:
  """The activation layer constructor called ``name`` (a key of :data:`ACTIVATIONS`).

  >>> activation("tanh") is L.tanh
  True

  Args:
    name: the activation's name.
    key: the setting it came from, named in the error message.

  Raises:
    ConfigError: for an unknown name, listing the known ones (and the nearest).
  """
  if name in ACTIVATIONS:
    return ACTIVATIONS[name]
  close = difflib.get_close_matches(str(name), list(ACTIVATIONS), n=1, cutoff=0.6)
  hint = f" Did you mean {close[0]!r}?" if close else ""
  raise ConfigError(f"unknown {key} {name!r}; available: {', '.join(ACTIVATIONS)}.{hint}")


def _check(name, value, minimum=1):
  if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def mlp(input_shape: Sequence[int], width: int, depth: int, out_dim: int,
        activation: Activation = L.relu, W_std: float = 1.0,
        b_std: float | None = 0.0, out_W_std: float | None = None) -> Model:
  """``depth`` hidden layers of ``width`` units, then a linear readout.

  Inputs of any shape are flattened first.

  >>> import jax
  >>> m = mlp((4,), width=8, depth=2, out_dim=3)
  >>> m.apply(m.init(jax.random.key(0)), jax.numpy.ones((5, 4))).shape
  (5, 3)
  """
  _check("width", width)
  _check("depth", depth, 0)
  _check("out_dim", out_dim)
  hidden = []
  for _ in range(depth):
    hidden += [L.dense(width, W_std, b_std, width_mult=1), activation()]
  out_W = W_std if out_W_std is None else out_W_std
  pre = [L.flatten()] if len(input_shape) != 1 else []
  return model(serial(*pre, *hidden, L.dense(out_dim, out_W, b_std)), input_shape)


def residual_mlp(input_shape: Sequence[int], width: int, depth: int, out_dim: int,
                 activation: Activation = L.relu, W_std: float = 1.0,
                 branch_std: float = 1.0, b_std: float | None = 0.0) -> Model:
  r"""A linear embedding to ``width`` units, ``depth`` residual blocks, then a linear readout.

  Block ``l`` is pre-activation with a one-layer branch (He et al. 2016,
  "Identity mappings in deep residual networks"):
  :math:`h_{l} = h_{l-1} + W_l\,\phi(h_{l-1}) + b_l`, with
  :math:`W_l` of std ``branch_std / sqrt(width)``. No normalisation: the
  residual stream's scale grows by about :math:`1 + \text{branch\_std}^2/2`
  per ReLU block at initialisation. Inputs of any shape are flattened first.
  The hidden features of :func:`jaxtheory.probes.layer_features` are the
  embedding and the stream after every block (``depth + 1`` of them).

  >>> import jax
  >>> m = residual_mlp((4,), width=8, depth=3, out_dim=2)
  >>> m.apply(m.init(jax.random.key(0)), jax.numpy.ones((5, 4))).shape
  (5, 2)
  """
  _check("width", width)
  _check("depth", depth, 0)
  _check("out_dim", out_dim)
  pre = [L.flatten()] if len(input_shape) != 1 else []
  blocks = [residual(activation(), L.dense(width, branch_std, b_std, width_mult=1))
            for _ in range(depth)]
  return model(serial(*pre, L.dense(width, W_std, b_std, width_mult=1), *blocks,
                      L.dense(out_dim, W_std, b_std)), input_shape)


def deep_linear(input_dim: int, width: int, depth: int, out_dim: int,
                W_std: float = 1.0) -> Model:
  """A product of ``depth`` matrices, no biases, no nonlinearity (``depth >= 1``)."""
  _check("depth", depth, 1)
  hidden = [L.dense(width, W_std, None, width_mult=1) for _ in range(depth - 1)]
  return model(serial(*hidden, L.dense(out_dim, W_std, None)), (input_dim,))


def random_features(input_shape: Sequence[int], num_features: int, out_dim: int,
                    activation: Activation = L.relu, W_std: float = 1.0,
                    b_std: float | None = None) -> Model:
  """Fixed random first layer (``num_features`` wide, the swept width) and a trained readout."""
  pre = [L.flatten()] if len(input_shape) != 1 else []
  feats = frozen(L.dense(num_features, W_std, b_std, width_mult=1))
  return model(serial(*pre, feats, activation(), L.dense(out_dim, 1.0, None)),
               input_shape)


def fourier_mlp(input_dim: int, width: int, depth: int, out_dim: int,
                num_fourier: int = 64, fourier_scale: float = 10.0,
                activation: Activation = L.relu, b_std: float | None = 0.0) -> Model:
  """Coordinate MLP on fixed random Fourier features (Tancik et al. 2020)."""
  net = mlp((2 * num_fourier,), width, depth, out_dim, activation, b_std=b_std)
  return model(serial(L.fourier_features(num_fourier, fourier_scale), net.layer),
               (input_dim,))


def cnn(input_shape: Sequence[int], width: int, depth: int, out_dim: int,
        filter_shape: Sequence[int] = (3, 3), activation: Activation = L.relu,
        pool: str = "global", W_std: float = 1.0, b_std: float | None = 0.0,
        downsample: int = 1) -> Model:
  """``depth`` SAME convolutions of ``width`` channels, pooling, linear readout.

  ``pool`` is ``'global'`` (global average pooling) or ``'flatten'``.
  ``downsample > 1`` average-pools every convolution's output over windows of
  that size (stride the same, VALID), as in LeNet-style networks.
  Inputs are channels-last ``(*spatial, channels)``.

  >>> import jax
  >>> m = cnn((8, 8, 1), width=4, depth=2, out_dim=3, pool="flatten", downsample=2)
  >>> m.apply(m.init(jax.random.key(0)), jax.numpy.ones((5, 8, 8, 1))).shape
  (5, 3)
  """
  _check("depth", depth, 1)
  _check("downsample", downsample)
  if len(input_shape) != len(filter_shape) + 1:
    raise ValueError(
        f"cnn with a {len(filter_shape)}D filter needs inputs (*spatial, channels) "
        f"with {len(filter_shape)} spatial axes, got input_shape {tuple(input_shape)}")
  body = []
  for _ in range(depth):
    body += [L.conv(width, filter_shape, padding="SAME", W_std=W_std, b_std=b_std,
                    width_mult=1), activation()]
    if downsample > 1:
      body.append(L.avg_pool((downsample,) * len(filter_shape)))
  if pool not in ("global", "flatten"):
    raise ValueError(f"pool must be 'global' or 'flatten', got {pool!r}")
  head = L.global_avg_pool() if pool == "global" else L.flatten()
  return model(serial(*body, head, L.dense(out_dim, W_std, b_std)), input_shape)


def token_mlp(vocab_size: int, seq_len: int, embed_dim: int, width: int,
              out_dim: int, activation: Activation = L.relu) -> Model:
  """Token ids ``(batch, seq_len)`` -> concatenated embeddings -> one hidden layer -> logits.

  The MLP of grokking studies on modular arithmetic (tokens ``[a, b, =]``).

  >>> import jax
  >>> m = token_mlp(6, 3, 4, 8, 5)
  >>> m.apply(m.init(jax.random.key(0)), jax.numpy.array([[1, 2, 5]])).shape
  (1, 5)
  """
  _check("width", width)
  return model(serial(L.embedding(vocab_size, embed_dim), L.flatten(),
                      L.dense(width, b_std=0.0, width_mult=1), activation(),
                      L.dense(out_dim, b_std=0.0)), (seq_len,))


def transformer(vocab_size: int, seq_len: int, width: int, depth: int, num_heads: int,
                out_dim: int | None = None, mlp_ratio: int = 4,
                activation: Activation = L.relu, layer_norm: bool = True) -> Model:
  """A tiny pre-LN decoder-only transformer reading the last position.

  Token ids ``(batch, seq_len)`` -> logits ``(batch, out_dim)`` (default
  ``vocab_size``); used for modular arithmetic (grokking). Only the last
  position is read, so the last block's MLP runs on that position alone (the
  same function, a ``seq_len``-th of that MLP's cost).

  Args:
    vocab_size: number of token ids.
    seq_len: tokens per example.
    width: the model width ``d_model`` (a multiple of ``num_heads``).
    depth: transformer blocks.
    num_heads: attention heads.
    out_dim: logits per example (default ``vocab_size``).
    mlp_ratio: the MLP's hidden width is ``mlp_ratio * width``.
    activation: the MLP's nonlinearity.
    layer_norm: pre-LN blocks and a final layer norm; ``False`` drops every
      layer norm, as in the grokking transformer of Nanda et al. (2023).

  >>> import jax
  >>> m = transformer(6, 3, width=8, depth=1, num_heads=2, out_dim=5, layer_norm=False)
  >>> m.apply(m.init(jax.random.key(0)), jax.numpy.array([[1, 2, 5]])).shape
  (1, 5)
  """
  _check("depth", depth, 1)
  norm = (lambda: [L.layer_norm(1e-5)]) if layer_norm else list
  layers = [L.embedding(vocab_size, width, width_mult=1), L.positional_embedding()]
  for i in range(depth):
    layers.append(residual(*norm(), L.causal_self_attention(num_heads)))
    if i == depth - 1:
      layers.append(L.take_last())
    layers.append(residual(*norm(), L.dense(mlp_ratio * width, b_std=0.0, width_mult=mlp_ratio),
                           activation(), L.dense(width, b_std=0.0, width_mult=1)))
  layers += [*norm(), L.dense(out_dim or vocab_size)]
  return model(serial(*layers), (seq_len,))
