"""Battery of infinite-width networks for checking analytic NNGP/NTK kernels.

Pure Python + numpy on purpose: this module is imported both by the
neural-tangents 0.6.5 oracle scripts (``benchmarks/nt_oracle``, pinned side
environment) and by jaxtheory's own pytest suite (main environment).

A network ``spec`` is plain nested data that spells layers with the names and
keyword arguments of ``neural_tangents.stax`` (NT 0.6.5):

* ``("Dense", {"out_dim": 1, "W_std": 1.5, "b_std": 0.1, "parameterization": "ntk"})``
* ``("Relu", {})``, ``("Erf", {"a": 1., "b": 1., "c": 0.})``, ...
* ``("serial", [spec, ...])`` / ``("parallel", [spec, ...])`` -- combinators
  whose second element is a list of sub-specs (passed positionally).
* ``("ElementwiseNumerical", {"fn": "tanh", "deg": 25})`` -- ``fn`` is a *name*
  (see ``ELEMENTWISE_FNS``); each side maps it to its own function.

Only keyword arguments that differ from, or matter beyond, NT's defaults are
written out, except that ``Dense``/``Conv`` always spell ``W_std``, ``b_std``
and ``parameterization``. Inputs are channels-last; the batch axis is 0.

Stored references (``tests/data/nt_kernels.npz``) are produced by
``benchmarks/nt_oracle/make_references.py`` with keys
``f"{name}/{x1,x2,nngp,ntk,nngp11,ntk11}"`` plus ``"meta"`` (JSON string).
"""
from __future__ import annotations

import zlib
from typing import Any, Callable, Mapping

import numpy as np

__all__ = [
    "CASES", "BENCH_CASES", "ELEMENTWISE_FNS", "inputs", "bench_inputs",
    "case_by_name", "build", "layer_names",
]

# Names usable as ``ElementwiseNumerical(fn=...)``; value = numpy reference
# (each side substitutes its own jax version, e.g. ``jnp.tanh``).
ELEMENTWISE_FNS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
}


# ----------------------------------------------------------------------------
# Small spec helpers (produce plain data).
# ----------------------------------------------------------------------------

def serial(*layers):
  return ("serial", list(layers))


def parallel(*layers):
  return ("parallel", list(layers))


def Dense(out_dim, W_std=1.0, b_std=None, parameterization="ntk"):
  return ("Dense", {"out_dim": out_dim, "W_std": W_std, "b_std": b_std,
                    "parameterization": parameterization})


def Conv(out_chan, filter_shape, strides=None, padding="VALID", W_std=1.0,
         b_std=None, parameterization="ntk"):
  kw = {"out_chan": out_chan, "filter_shape": tuple(filter_shape),
        "padding": padding, "W_std": W_std, "b_std": b_std,
        "parameterization": parameterization}
  if strides is not None:
    kw["strides"] = tuple(strides)
  return ("Conv", kw)


def L(name, **kw):
  return (name, kw)


def _readout(W_std=1.0, b_std=0.1, parameterization="ntk"):
  return Dense(1, W_std, b_std, parameterization)


def _mlp(act, depth=2, width=256, W_std=1.5, b_std=0.1,
         parameterization="ntk"):
  hidden = []
  for _ in range(depth):
    hidden += [Dense(width, W_std, b_std, parameterization), act]
  return serial(*hidden, _readout(W_std, b_std, parameterization))


def _case(name, net, input_shape, n1=5, n2=4):
  return {"name": name, "net": net, "input_shape": tuple(input_shape),
          "n1": int(n1), "n2": int(n2)}


# ----------------------------------------------------------------------------
# The battery.
# ----------------------------------------------------------------------------

_V = (6,)          # vector input (MLPs)
_S1 = (7, 3)       # 1D signal: length 7, 3 channels
_S2 = (5, 4, 3)    # 2D image: 5 x 4, 3 channels

CASES: list[dict[str, Any]] = [
    # --- MLP depth / bias / parameterization ------------------------------
    _case("linear_d0", serial(Dense(1, 1.5, 0.1)), _V),
    _case("relu_d1", _mlp(L("Relu"), depth=1), _V),
    _case("relu_d2", _mlp(L("Relu"), depth=2), _V, 6, 5),
    _case("relu_d3_nobias", _mlp(L("Relu"), depth=3, W_std=1.3, b_std=None),
          _V),
    _case("relu_d5", _mlp(L("Relu"), depth=5, W_std=1.2, b_std=0.3), _V, 4, 3),
    _case("relu_d2_standard",
          serial(Dense(64, 1.4, 0.2, "standard"), L("Relu"),
                 Dense(32, 1.1, 0.3, "standard"), L("Relu"),
                 Dense(1, 0.9, 0.1, "standard")), _V),
    _case("erf_d2_standard_nobias",
          serial(Dense(48, 1.0, None, "standard"), L("Erf"),
                 Dense(16, 2.0, None, "standard"), L("Erf"),
                 Dense(1, 1.0, None, "standard")), _V),
    _case("relu_d2_mixed_param",
          serial(Dense(40, 1.5, 0.1, "standard"), L("Relu"),
                 Dense(40, 1.5, 0.1, "ntk"), L("Relu"),
                 Dense(1, 1.0, 0.05, "standard")), _V),
    # --- activations (depth-2 MLPs) ----------------------------------------
    _case("abrelu", _mlp(L("ABRelu", a=-0.3, b=1.2)), _V),
    _case("leakyrelu", _mlp(L("LeakyRelu", alpha=0.1)), _V),
    _case("erf_default", _mlp(L("Erf")), _V),
    _case("erf_abc", _mlp(L("Erf", a=2.0, b=0.7, c=0.3)), _V),
    _case("gelu_exact", _mlp(L("Gelu", approximate=False)), _V),
    _case("sin_abc", _mlp(L("Sin", a=1.3, b=0.8, c=0.5), W_std=1.0), _V),
    _case("cos_abc", _mlp(L("Cos", a=0.9, b=1.1, c=-0.4), W_std=1.0), _V),
    _case("sign", _mlp(L("Sign"), depth=1), _V),
    _case("identity", _mlp(L("Identity"), depth=2), _V),
    _case("monomial_1", _mlp(L("Monomial", degree=1), W_std=1.0), _V),
    _case("monomial_2", _mlp(L("Monomial", degree=2), W_std=1.0), _V),
    _case("monomial_3", _mlp(L("Monomial", degree=3), W_std=0.8, b_std=0.05),
          _V),
    # RectifiedMonomial: NT 0.6.5 returns NaN on the diagonal of x1-vs-x1
    # kernels (arccos at theta=0), and with depth >= 2 that NaN poisons every
    # entry, so only depth-1 nets; references keep the NaN diagonal.
    _case("rectmono_0", _mlp(L("RectifiedMonomial", degree=0), depth=1), _V),
    _case("rectmono_1", _mlp(L("RectifiedMonomial", degree=1), depth=1), _V),
    _case("rectmono_2",
          _mlp(L("RectifiedMonomial", degree=2), depth=1, W_std=1.0), _V),
    _case("rbf", _mlp(L("Rbf", gamma=0.5), W_std=1.0), _V),
    _case("exp", _mlp(L("Exp", a=0.8, b=0.5), W_std=1.0, b_std=0.1), _V),
    _case("exp_normalized",
          _mlp(L("ExpNormalized", gamma=1.0, shift=-1.0), W_std=1.0), _V),
    _case("numerical_tanh",
          _mlp(L("ElementwiseNumerical", fn="tanh", deg=25), W_std=1.2), _V),
    _case("mixed_acts_d3",
          serial(Dense(128, 1.5, 0.1), L("Erf"), Dense(128, 1.4, 0.2),
                 L("Relu"), Dense(128, 1.0, 0.1), L("Gelu", approximate=False),
                 _readout()), _V),
    # --- LayerNorm ---------------------------------------------------------
    _case("layernorm_mlp",
          serial(Dense(64, 1.5, 0.3), L("LayerNorm", axis=-1), L("Relu"),
                 Dense(64, 1.2, 0.1), L("LayerNorm", axis=-1), L("Erf"),
                 _readout()), _V),
    # --- Conv 1D -----------------------------------------------------------
    _case("conv1d_same_flatten",
          serial(Conv(16, (3,), padding="SAME", W_std=1.4, b_std=0.2),
                 L("Relu"), L("Flatten"), _readout()), _S1),
    _case("conv1d_valid_stride2_flatten",
          serial(Conv(16, (3,), strides=(2,), padding="VALID", W_std=1.3,
                      b_std=0.1), L("Erf"), L("Flatten"), _readout()), _S1),
    _case("conv1d_same_gap_standard_nobias",
          serial(Conv(8, (2,), padding="SAME", W_std=1.5, b_std=None,
                      parameterization="standard"), L("Relu"),
                 Conv(8, (3,), padding="SAME", W_std=1.2, b_std=None,
                      parameterization="standard"), L("Relu"),
                 L("GlobalAvgPool"),
                 Dense(1, 1.0, None, "standard")), _S1),
    _case("conv1d_avgpool_gap",
          serial(Conv(16, (3,), padding="SAME", W_std=1.4, b_std=0.1),
                 L("Relu"), L("AvgPool", window_shape=(2,)),
                 Conv(16, (2,), padding="VALID", W_std=1.4, b_std=0.1),
                 L("Relu"), L("GlobalAvgPool"), _readout()), _S1),
    # --- Conv 2D -----------------------------------------------------------
    _case("conv2d_same_flatten",
          serial(Conv(8, (3, 3), padding="SAME", W_std=1.5, b_std=0.1),
                 L("Relu"),
                 Conv(8, (3, 3), padding="SAME", W_std=1.5, b_std=0.1),
                 L("Relu"), L("Flatten"), _readout()), _S2, 4, 3),
    _case("conv2d_valid_flatten_nobias",
          serial(Conv(8, (2, 3), padding="VALID", W_std=1.3, b_std=None),
                 L("Relu"), L("Flatten"), Dense(1, 1.0, None)), _S2, 4, 3),
    _case("conv2d_valid_gap",
          serial(Conv(8, (3, 2), padding="VALID", W_std=1.5, b_std=0.2),
                 L("Relu"),
                 Conv(8, (2, 2), padding="VALID", W_std=1.5, b_std=0.2),
                 L("Relu"), L("GlobalAvgPool"), _readout()), _S2, 4, 3),
    _case("conv2d_same_gap",
          serial(Conv(8, (3, 3), padding="SAME", W_std=1.5, b_std=0.05),
                 L("Relu"),
                 Conv(8, (3, 3), padding="SAME", W_std=1.5, b_std=0.05),
                 L("Relu"), L("GlobalAvgPool"), _readout()), _S2, 4, 3),
    _case("conv2d_same_gap_standard",
          serial(Conv(8, (3, 3), padding="SAME", W_std=1.4, b_std=0.1,
                      parameterization="standard"), L("Relu"),
                 Conv(6, (2, 2), padding="SAME", W_std=1.4, b_std=0.1,
                      parameterization="standard"), L("Relu"),
                 L("GlobalAvgPool"), Dense(1, 1.0, 0.1, "standard")),
          _S2, 4, 3),
    _case("conv2d_strided_same_gap",
          serial(Conv(8, (3, 3), strides=(2, 1), padding="SAME", W_std=1.5,
                      b_std=0.1), L("Erf"), L("GlobalAvgPool"), _readout()),
          _S2, 4, 3),
    _case("conv2d_avgpool_valid_flatten",
          serial(Conv(8, (3, 3), padding="SAME", W_std=1.5, b_std=0.1),
                 L("Relu"),
                 L("AvgPool", window_shape=(2, 2), strides=(2, 2),
                   padding="VALID"),
                 L("Flatten"), _readout()), _S2, 4, 3),
    _case("conv2d_avgpool_same_gap",
          serial(Conv(8, (2, 2), padding="VALID", W_std=1.5, b_std=0.1),
                 L("Relu"),
                 L("AvgPool", window_shape=(3, 2), strides=(1, 1),
                   padding="SAME"),
                 L("GlobalAvgPool"), _readout()), _S2, 4, 3),
    _case("conv2d_layernorm_gap",
          serial(Conv(8, (3, 3), padding="SAME", W_std=1.5, b_std=0.3),
                 L("LayerNorm", axis=-1), L("Relu"),
                 Conv(8, (2, 2), padding="VALID", W_std=1.5, b_std=0.1),
                 L("Relu"), L("GlobalAvgPool"), _readout()), _S2, 4, 3),
    # --- branching ---------------------------------------------------------
    # NT's FanInSum needs every branch to be Gaussian (pre-activation), so the
    # residual stream forks right after a Dense/Conv, not after a Relu.
    _case("resnet_mlp",
          serial(Dense(64, 1.5, 0.1),
                 L("FanOut", num=2),
                 parallel(serial(Dense(64, 1.4, 0.1), L("Relu"),
                                 Dense(64, 1.4, 0.1)),
                          L("Identity")),
                 L("FanInSum"), L("Relu"), _readout()), _V),
    _case("resnet_conv2d",
          serial(Conv(8, (3, 3), padding="SAME", W_std=1.5, b_std=0.1),
                 L("FanOut", num=2),
                 parallel(serial(Conv(8, (3, 3), padding="SAME", W_std=1.4,
                                      b_std=0.1), L("Relu"),
                                 Conv(8, (3, 3), padding="SAME", W_std=1.4,
                                      b_std=0.1)),
                          L("Identity")),
                 L("FanInSum"), L("Relu"), L("GlobalAvgPool"), _readout()),
          _S2, 4, 3),
    _case("concat_mlp",
          serial(L("FanOut", num=2),
                 parallel(serial(Dense(64, 1.5, 0.1), L("Relu")),
                          serial(Dense(32, 1.2, 0.2), L("Erf"))),
                 L("FanInConcat", axis=-1), _readout()), _V),
    _case("concat_conv1d_gap",
          serial(Conv(8, (3,), padding="SAME", W_std=1.5, b_std=0.1),
                 L("Relu"),
                 L("FanOut", num=3),
                 parallel(serial(Conv(8, (3,), padding="SAME", W_std=1.3,
                                      b_std=0.1), L("Relu")),
                          serial(Conv(8, (1,), padding="SAME", W_std=1.3,
                                      b_std=0.1), L("Erf")),
                          L("Identity")),
                 L("FanInConcat", axis=-1), L("GlobalAvgPool"), _readout()),
          _S1),
]

# Benchmark networks (float32 inputs).
BENCH_CASES: list[dict[str, Any]] = [
    _case("bench_mlp",
          serial(Dense(512, 1.0, 0.05), L("Relu"),
                 Dense(512, 1.0, 0.05), L("Relu"),
                 Dense(1, 1.0, 0.05)),
          (32,), 100, 100),
    _case("bench_cnn",
          serial(Conv(64, (3, 3), padding="SAME", W_std=1.0, b_std=0.05),
                 L("Relu"),
                 Conv(64, (3, 3), padding="SAME", W_std=1.0, b_std=0.05),
                 L("Relu"), L("GlobalAvgPool"),
                 Dense(10, 1.0, 0.05)),
          (8, 8, 3), 20, 20),
]


# ----------------------------------------------------------------------------
# Inputs and utilities.
# ----------------------------------------------------------------------------

def _seed(name: str) -> int:
  return zlib.crc32(name.encode("utf-8"))


def inputs(case: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
  """Deterministic float64 inputs ``(x1, x2)`` of shapes (n, *input_shape)."""
  rng = np.random.default_rng(_seed(case["name"]))
  shape = tuple(case["input_shape"])
  x1 = rng.standard_normal((case["n1"],) + shape)
  x2 = rng.standard_normal((case["n2"],) + shape)
  return x1, x2


def bench_inputs(case: Mapping[str, Any]) -> np.ndarray:
  """float32 benchmark inputs ``x1`` of shape (n1, *input_shape)."""
  return inputs(case)[0].astype(np.float32)


def case_by_name(name: str) -> dict[str, Any]:
  for c in CASES + BENCH_CASES:
    if c["name"] == name:
      return c
  raise KeyError(name)


def layer_names(spec) -> set[str]:
  """All layer names used in a spec (including combinators)."""
  name, arg = spec
  out = {name}
  if name in ("serial", "parallel"):
    for s in arg:
      out |= layer_names(s)
  return out


def build(spec, namespace: Any, fns: Mapping[str, Callable] | None = None):
  """Builds a network from ``spec`` with ``getattr(namespace, name)(**kw)``.

  ``namespace`` is e.g. ``neural_tangents.stax``; ``serial``/``parallel`` are
  called with positional sub-layers. ``fns`` maps ``ElementwiseNumerical``
  function names to callables (defaults to ``ELEMENTWISE_FNS``, which are
  numpy and NOT traceable -- pass jax versions).
  """
  fns = ELEMENTWISE_FNS if fns is None else fns
  name, arg = spec
  if name in ("serial", "parallel"):
    return getattr(namespace, name)(*(build(s, namespace, fns) for s in arg))
  kw = dict(arg)
  if name == "ElementwiseNumerical" and isinstance(kw.get("fn"), str):
    kw["fn"] = fns[kw["fn"]]
  return getattr(namespace, name)(**kw)


def _check():
  names = [c["name"] for c in CASES + BENCH_CASES]
  assert len(names) == len(set(names)), "duplicate case names"


_check()
