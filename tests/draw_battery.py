"""Networks whose initial parameters must be neural-tangents' own draws, key for key.

Imported by the NT 0.6.5 oracle (``benchmarks/nt_oracle/make_draws.py``, its
pinned side environment) and by ``tests/test_nt_draws.py``: ``networks(stax)``
builds the same networks from either ``stax`` module.
"""
from __future__ import annotations

KEY = 7  # the init key, PRNGKey(KEY)
INPUT_KEY = 3  # the inputs, normal(PRNGKey(INPUT_KEY), shape)
APPLY_KEY = 5  # apply_fn(params, x, rng=PRNGKey(APPLY_KEY)): Dropout's masks


def networks(stax) -> dict:
  """``name -> ((init_fn, apply_fn, kernel_fn), input shape)``."""
  return {
      "dense_relu": (stax.serial(stax.Dense(8, 1.5, 0.1), stax.Relu(), stax.Dense(3, 2.0, 0.05)),
                     (4, 5)),
      "standard": (stax.serial(stax.Dense(8, 1.5, 0.1, parameterization="standard"), stax.Erf(),
                               stax.Dense(3, parameterization="standard")), (4, 5)),
      "conv_transpose": (stax.serial(stax.Conv(4, (3, 2), (1, 2), "SAME", 1.3, 0.2), stax.Relu(),
                                     stax.ConvTranspose(2, (2, 2), (2, 1), "VALID", 1.0, 0.3),
                                     stax.Flatten(), stax.Dense(2)), (2, 6, 7, 3)),
      "conv_channels_first": (stax.Conv(3, (2, 3), b_std=0.1,
                                        dimension_numbers=("NCHW", "OIHW", "NHWC")),
                              (2, 3, 5, 6)),
      "conv_1d_standard": (stax.serial(stax.Conv(3, (3,), padding="CIRCULAR", b_std=0.1,
                                                 parameterization="standard"),
                                       stax.GlobalAvgPool(), stax.Dense(2)), (2, 6, 2)),
      "width_scale_s": (stax.serial(
          stax.Dense(4, 1.3, 0.2, parameterization="standard", s=(2, 3)), stax.Relu(),
          stax.Conv(3, (2,), W_std=0.7, b_std=0.1, parameterization="standard", s=(3, 2)),
          stax.Flatten(), stax.Dense(2, parameterization="standard", s=(2, 1))), (2, 5, 3)),
      "conv_local": (stax.serial(stax.ConvLocal(3, (2, 2), b_std=0.2), stax.Relu()),
                     (2, 5, 5, 2)),
      "conv_local_channels_first": (stax.ConvLocal(3, (2, 2), b_std=0.2, dimension_numbers=(
          "NCHW", "OIHW", "NCHW")), (2, 2, 5, 4)),
      "conv_local_filter_order": (stax.ConvLocal(3, (2, 2), b_std=0.2, dimension_numbers=(
          "NHWC", "WHIO", "NHWC")), (2, 5, 4, 2)),
      "parallel": (stax.serial(stax.FanOut(2),
                               stax.parallel(stax.Dense(4, b_std=0.1),
                                             stax.serial(stax.Relu(), stax.Dense(4))),
                               stax.FanInSum()), (3, 5)),
      "repeat": (stax.repeat(stax.serial(stax.Dense(5, b_std=0.1), stax.Relu()), 3), (2, 5)),
      "dropout": (stax.serial(
          stax.Dense(8, b_std=0.1), stax.Dropout(0.6), stax.Relu(), stax.FanOut(2),
          stax.parallel(stax.serial(stax.Dense(4), stax.Dropout(0.5)), stax.Dropout(0.7)),
          stax.FanInConcat(), stax.repeat(stax.serial(stax.Dense(12), stax.Dropout(0.8)), 2),
          stax.Dense(2)), (3, 5)),
      "attention_channels_first": (stax.GlobalSelfAttention(
          4, 3, 2, 2, b_std=0.1, pos_emb_type="SUM", batch_axis=0, channel_axis=1), (2, 3, 5)),
      "attention": (stax.serial(stax.GlobalSelfAttention(4, 3, 2, 2, b_std=0.1), stax.Flatten()),
                    (2, 5, 3)),
  }
