"""Pure-function networks: layers, combinators, parametrizations, model constructors."""

from jaxtheory.nn.core import (Ctx, Feat, Layer, Model, PARAMETRIZATIONS, Spec, TrainMode,
                               antisymmetric, fan_in_concat, fan_in_prod, fan_in_sum, fan_out,
                               frozen, identity_layer, model, parallel, residual, serial,
                               stable_normal)
from jaxtheory.nn.layers import (ab_relu, avg_pool, causal_self_attention, conv, conv_local,
                                 conv_transpose,
                                 cos, dense, elementwise, embedding, erf, exp, flatten,
                                 fourier_features,
                                 gelu, global_avg_pool, identity, layer_norm, leaky_relu,
                                 monomial, positional_embedding, rbf, rectified_monomial, relu,
                                 sigmoid, sign, sin, take_last, tanh)
from jaxtheory.nn.models import (ACTIVATIONS, activation, cnn, deep_linear, fourier_mlp, mlp,
                                 random_features, residual_mlp, token_mlp, transformer)
from jaxtheory.nn.param import LRScale, family_multipliers


def __getattr__(name: str):
  # `flax` imports Flax: loaded on first use, so importing jaxtheory stays light.
  if name == "flax":
    import importlib  # pylint: disable=import-outside-toplevel
    return importlib.import_module("jaxtheory.nn.flax")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
