"""A neural-tangents-compatible facade: ``stax`` names and signatures over :mod:`jaxtheory.nn`.

Every constructor returns ``(init_fn, apply_fn, kernel_fn)`` exactly as
neural-tangents 0.6.5's ``stax`` does (Novak et al. 2020), so NT code ports by
changing the import::

  from jaxtheory import stax
  init_fn, apply_fn, kernel_fn = stax.serial(
      stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu(), stax.Dense(1))
  out_shape, params = init_fn(jax.random.key(0), (-1, 10))
  y = apply_fn(params, x)
  k = kernel_fn(x1, x2, get=("nngp", "ntk"))    # namedtuple; get=None: NT's Kernel

* ``init_fn(key, input_shape) -> (output_shape, params)``; ``input_shape`` has
  a batch axis, which may be ``-1``. The parameters are NT's own draws: the
  same key gives the same network as NT 0.6.5 under the same JAX random stream
  (``serial`` and ``repeat`` split keys in a chain, ``parallel`` in one split,
  each layer draws standard normals in NT's layout). ``jaxtheory.nn``'s own
  models draw differently, so that widths nest (:func:`~jaxtheory.nn.stable_normal`).
  One exception, NT's own quirk: NT's ``ConvLocal`` in the standard
  parameterization ignores ``s[1]``; here it widens the output as ``Dense`` does.
* ``apply_fn(params, inputs, **kwargs)``; ``params`` are NT's: a tuple per
  ``serial``/``parallel``, ``(W, b)`` per ``Dense``/``Conv``/``ConvTranspose``
  (``W`` laid out as ``dimension_numbers[1]``, ``b`` shaped like the output
  with unit axes, ``None`` without a bias), ``()`` for layers without
  parameters; ``rng=`` feeds ``Dropout``, split per layer by ``serial`` and
  ``parallel`` as NT splits it (so the masks are NT's too).
* ``kernel_fn(x1_or_kernel, x2=None, get=None, **kwargs)``: NNGP and NTK of
  one output channel in NT's conventions (including the per-layer
  ``parameterization``, ``'ntk'`` or ``'standard'`` with its width scale
  ``s``), computed by :mod:`jaxtheory.kernels.analytic` (nonlinearities:
  :mod:`jaxtheory.kernels.nonlinear`). ``get=None`` returns NT's
  :class:`~jaxtheory.kernels.nt_kernel.Kernel` object (``.nngp``, ``.ntk``,
  ``.cov1``, ``.shape1``, ``.x1_is_x2``, ``.replace``, ...), a string that
  array, a tuple a namedtuple. A ``Kernel`` may be passed instead of inputs
  (``kernel_fn(kernel_fn(x))`` composes). ``diagonal_batch=False`` returns full
  self-covariances in ``cov1``/``cov2``; ``diagonal_spatial`` picks the layout;
  ``batch_size=`` computes in blocks (NT does this with ``nt.batch``).
* masking (NT's): ``apply_fn(params, x, mask_constant=c)`` and
  ``kernel_fn(x1, x2, mask_constant=c)`` treat entries equal to ``c`` as
  padding; ``apply_fn`` then returns a :class:`MaskedArray` (``unmask_fn``
  zeroes its masked entries). ``Dense`` and ``Conv`` (channels-last),
  ``ConvLocal``, ``AvgPool``, ``GlobalAvgPool`` (a mean over the unmasked positions),
  ``GlobalSelfAttention`` (masked keys are left out),
  ``Flatten``, the nonlinearities, ``Dropout``, ``Identity``, ``DotGeneral``
  and the fan-in/fan-out combinators follow masks
  (:mod:`jaxtheory.kernels.masking`); other layers refuse a masked input with
  ``NotImplementedError``.
* every layer's three functions carry its constructor's ``__name__``, and
  :func:`layer` turns NT-style user layers into layers that compose with these.

Covered: ``serial``, ``parallel``, ``Dense``, ``Conv`` (1D-3D, ``'SAME'`` /
``'VALID'``, strides), ``Relu``, ``ABRelu``, ``LeakyRelu``, ``Abs``, ``Erf``,
``Gelu``, ``Sin``, ``Cos``, ``Sign``, ``Exp``, ``ExpNormalized``, ``Identity``,
``Monomial``, ``RectifiedMonomial``, ``Rbf``, ``ElementwiseNumerical``,
``Flatten``, ``AvgPool``, ``GlobalAvgPool``, ``LayerNorm`` (channel axis), ``Aggregate``,
``FanOut``, ``FanInSum``, ``FanInConcat``, ``repeat``, ``Elementwise``,
``Gaussian``, ``Gabor``, ``Sigmoid_like``, ``Hermite``, ``Polynomial``,
``Dropout``, ``layer``, ``ConvTranspose``, ``ConvLocal`` (locally connected),
``GlobalSelfAttention`` (its kernel: linear scaling with any mechanism, or the identity
mechanism with square-root scaling; positional embeddings), ``Index`` (with ``Slice``),
``DotGeneral`` (a scalar, or an array contracted with the input; not the batch axis),
``SumPool``, ``GlobalSumPool``,
``FanInProd``, ``ImageResize`` (its kernel: linear and nearest). ``Conv`` takes ``dimension_numbers`` of any layout and
``Dense``, ``AvgPool``, ``GlobalAvgPool`` any ``batch_axis``/``channel_axis``;
``Conv``, ``ConvTranspose`` and ``AvgPool`` take ``'SAME'``, ``'VALID'`` and
``'CIRCULAR'`` padding (computed channels-last; the kernel's spatial axes follow the activation's, and
``kernel_fn`` reads its inputs with the first layer's batch and channel axes, as NT).

Not covered (a clear error, or simply absent): other ``batch_axis``/``channel_axis``
of ``Flatten`` and ``LayerNorm``; ``LayerNorm`` over
non-channel axes; ``BatchNorm`` (NT has none either); NT's ``requires``
decorator (its values, ``Bool`` and ``Diagonal``, are here: :mod:`jaxtheory.kernels.requirements`). ``nt.batch``,
``nt.predict``, ``nt.empirical_kernel_fn`` and
``nt.monte_carlo_kernel_fn`` are in :mod:`jaxtheory.nt`.
"""

from __future__ import annotations

from jaxtheory.kernels.nt_kernel import Kernel  # noqa: F401 (NT's stax name)
from jaxtheory.kernels.requirements import Bool, Diagonal  # noqa: F401 (NT's stax names)
from jaxtheory.nn.indexing import canonicalize_idx, slice_shape  # noqa: F401 (nt imports them)
from jaxtheory.nn.masking import MaskedArray  # noqa: F401 (NT's stax name)
from jaxtheory.stax.attention import (  # noqa: F401
    AttentionMechanism, GlobalSelfAttention, PositionalEmbedding)
from jaxtheory.stax.combinators import (  # noqa: F401
    FanInConcat, FanInProd, FanInSum, FanOut, Identity, layer, parallel, repeat, serial, unmask_fn)
from jaxtheory.stax.elementwise import (  # noqa: F401
    ABRelu, Abs, Cos, Elementwise, ElementwiseNumerical, Erf, Exp, ExpNormalized, Gabor, Gaussian,
    Gelu, Hermite, LeakyRelu, Monomial, Polynomial, Rbf, RectifiedMonomial, Relu, Sigmoid_like,
    Sign, Sin)
from jaxtheory.stax.linear import (  # noqa: F401
    Aggregate, AvgPool, Conv, ConvLocal, ConvTranspose, Dense, DotGeneral, Dropout, Flatten,
    GlobalAvgPool, GlobalSumPool, ImageResize, Index, LayerNorm, Slice, SumPool)
