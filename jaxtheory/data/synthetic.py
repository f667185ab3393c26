"""Synthetic datasets: teacher-student, Gaussian mixtures, modular arithmetic, low-rank matrices.

Each generator draws its parts from independent seeded streams (the teacher,
the training inputs, the test inputs, ...), so changing a size never changes
the ground truth: ``teacher_student(n_train=100, seed=s)`` and
``teacher_student(n_train=1000, seed=s)`` share one teacher and test set, and
the smaller training set is a prefix of the larger one.
"""

from __future__ import annotations

import numpy as np

from jaxtheory.data.core import (Dataset, DataError, _check_choice, _check_fraction,
                                 _check_int, _check_real, _check_seed, _rng, validate)

_ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "linear": lambda z: z,
}

MODULAR_OPS = ("add", "sub", "mul", "div")


def teacher_student(n_train: int = 512, n_test: int = 512, input_dim: int = 16,
                    out_dim: int = 1, teacher_width: int = 32, noise: float = 0.0,
                    activation: str = "relu", seed: int = 0) -> Dataset:
  r"""Regression on a random one-hidden-layer teacher network.

  Inputs are standard Gaussian, :math:`x \sim \mathcal N(0, I_d)`, and targets

  .. math:: y = \phi(x W_1) W_2 + \sigma \varepsilon, \qquad
            W_1 \sim \mathcal N(0, 1/d), \; W_2 \sim \mathcal N(0, 1/k),

  with :math:`k` = ``teacher_width``, no biases, :math:`\varepsilon \sim
  \mathcal N(0, I)`. Noise (:math:`\sigma` = ``noise``) is added to the
  training targets only: the test targets are the clean teacher, so test
  error is the excess risk.

  Args:
    n_train: training examples.
    n_test: test examples.
    input_dim: input dimension ``d``.
    out_dim: target dimension.
    teacher_width: hidden units of the teacher ``k``.
    noise: standard deviation of the training-target noise.
    activation: the teacher's nonlinearity, ``'relu'``, ``'tanh'`` or ``'linear'``.
    seed: non-negative integer seed.

  Returns:
    A regression Dataset: ``x`` float32 ``(n, input_dim)``, ``y`` float32
    ``(n, out_dim)``.

  >>> teacher_student(n_train=8, n_test=4, input_dim=3).y_train.shape
  (8, 1)
  """
  n_train, n_test = _check_int("n_train", n_train), _check_int("n_test", n_test)
  input_dim, out_dim = _check_int("input_dim", input_dim), _check_int("out_dim", out_dim)
  teacher_width = _check_int("teacher_width", teacher_width)
  noise = _check_real("noise", noise)
  phi = _ACTIVATIONS[_check_choice("activation", activation, tuple(_ACTIVATIONS))]
  seed = _check_seed(seed)

  rng = _rng(seed, 0)
  W1 = rng.standard_normal((input_dim, teacher_width)) / np.sqrt(input_dim)
  W2 = rng.standard_normal((teacher_width, out_dim)) / np.sqrt(teacher_width)
  teacher = lambda x: phi(x @ W1) @ W2
  x_train = _rng(seed, 1).standard_normal((n_train, input_dim))
  x_test = _rng(seed, 2).standard_normal((n_test, input_dim))
  y_train = teacher(x_train) + noise * _rng(seed, 3).standard_normal((n_train, out_dim))
  y_test = teacher(x_test)
  f32 = lambda a: a.astype(np.float32)
  return validate(Dataset(f32(x_train), f32(y_train), f32(x_test), f32(y_test),
                          None, "teacher-student"))


def coordinate_product(n_train: int = 256, n_test: int = 512, input_dim: int = 16,
                       relevant: int = 2, noise: float = 0.0, seed: int = 0) -> Dataset:
  r"""Regression on the product of a few input coordinates: a target that needs its features.

  Inputs are standard Gaussian, :math:`x \sim \mathcal N(0, I_d)`, and targets

  .. math:: y = \prod_{i=1}^{k} x_i + \sigma \varepsilon

  with :math:`k` = ``relevant`` of the :math:`d` = ``input_dim`` coordinates
  (unit variance for every :math:`k`). For :math:`k \ge 2` the target is a
  degree-:math:`k` Hermite polynomial of a :math:`k`-dimensional projection of
  the input: a rotation-invariant kernel needs :math:`n \sim d^k` examples
  to learn it, while a network that learns the relevant directions needs far
  fewer (Ghorbani et al. 2020, "When do neural networks outperform kernel
  methods?"; Damian, Lee & Soltanolkotabi 2022). Noise (:math:`\sigma` =
  ``noise``) is added to the training targets only.

  Args:
    n_train: training examples.
    n_test: test examples.
    input_dim: input dimension ``d``.
    relevant: coordinates the target depends on (``1 <= relevant <= input_dim``).
    noise: standard deviation of the training-target noise.
    seed: non-negative integer seed.

  Returns:
    A regression Dataset: ``x`` float32 ``(n, input_dim)``, ``y`` float32 ``(n, 1)``.

  >>> coordinate_product(n_train=8, n_test=4, input_dim=5).y_train.shape
  (8, 1)
  """
  n_train, n_test = _check_int("n_train", n_train), _check_int("n_test", n_test)
  input_dim, relevant = _check_int("input_dim", input_dim), _check_int("relevant", relevant)
  if relevant > input_dim:
    raise DataError(f"relevant must be at most input_dim ({input_dim}), got {relevant}")
  noise, seed = _check_real("noise", noise), _check_seed(seed)
  x_train = _rng(seed, 1).standard_normal((n_train, input_dim))
  x_test = _rng(seed, 2).standard_normal((n_test, input_dim))
  target = lambda x: np.prod(x[:, :relevant], axis=1, keepdims=True)
  y_train = target(x_train) + noise * _rng(seed, 3).standard_normal((n_train, 1))
  f32 = lambda a: a.astype(np.float32)
  return validate(Dataset(f32(x_train), f32(y_train), f32(x_test), f32(target(x_test)),
                          None, "coordinate-product"))


def gaussian_mixture(n_train: int = 512, n_test: int = 512, num_classes: int = 4,
                     input_dim: int = 16, separation: float = 2.0,
                     seed: int = 0) -> Dataset:
  r"""Classification of isotropic Gaussian clusters.

  Class means :math:`\mu_c` are uniformly random directions scaled to norm
  ``separation``; an example of class :math:`c` is :math:`\mu_c + \mathcal
  N(0, I_d)`. Classes are balanced (counts differ by at most one) and the
  examples are shuffled.

  Args:
    n_train: training examples.
    n_test: test examples.
    num_classes: number of clusters (>= 2).
    input_dim: input dimension ``d``.
    separation: norm of every class mean (>= 0; 0 makes the classes identical).
    seed: non-negative integer seed.

  Returns:
    A classification Dataset: ``x`` float32 ``(n, input_dim)``, ``y`` int32 ``(n,)``.
  """
  n_train, n_test = _check_int("n_train", n_train), _check_int("n_test", n_test)
  num_classes = _check_int("num_classes", num_classes, 2)
  input_dim = _check_int("input_dim", input_dim)
  separation, seed = _check_real("separation", separation), _check_seed(seed)

  g = _rng(seed, 0).standard_normal((num_classes, input_dim))
  means = separation * g / np.linalg.norm(g, axis=1, keepdims=True)

  def draw(n, stream):
    rng = _rng(seed, stream)
    y = rng.permutation(np.arange(n) % num_classes).astype(np.int32)
    x = means[y] + rng.standard_normal((n, input_dim))
    return x.astype(np.float32), y

  x_train, y_train = draw(n_train, 1)
  x_test, y_test = draw(n_test, 2)
  return validate(Dataset(x_train, y_train, x_test, y_test, num_classes,
                          "gaussian-mixture"))


def _is_prime(p: int) -> bool:
  return p >= 2 and all(p % q for q in range(2, int(p ** 0.5) + 1))


def modular_table(p: int, op: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """All operand pairs of ``a op b mod p`` and their results, ``a``-major.

  Args:
    p: the modulus (a prime for ``'div'``).
    op: ``'add'``, ``'sub'``, ``'mul'`` or ``'div'`` (``b != 0``, ``c = a b^{-1}``).

  Returns:
    ``(a, b, c)``, three int64 vectors of length ``p**2`` (``p*(p-1)`` for div).
  """
  a, b = (g.ravel() for g in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
  if op == "div":
    a, b = a[b != 0], b[b != 0]
    inverse = np.array([0] + [pow(int(v), -1, p) for v in range(1, p)])
    return a, b, (a * inverse[b]) % p
  c = {"add": a + b, "sub": a - b, "mul": a * b}[op] % p
  return a, b, c


def modular_arithmetic(p: int = 97, op: str = "add", train_fraction: float = 0.3,
                       seed: int = 0) -> Dataset:
  """The grokking task: learn ``c = a op b mod p`` from a fraction of the table.

  As in Power et al. (2022), "Grokking: generalization beyond overfitting on
  small algorithmic datasets". Every pair ``(a, b)`` in ``[0, p)^2`` appears
  once (``b != 0`` for ``'div'``), as the token sequence ``[a, b, p]`` where
  ``p`` is the ``'='`` token, so the vocabulary has ``p + 1`` tokens. A seeded
  permutation of the pairs puts the first ``round(train_fraction * N)`` in the
  training set and the rest in the test set (nested in ``train_fraction``).

  Args:
    p: the modulus (>= 2; a prime for ``'div'``, whose inverses need a field).
    op: ``'add'``, ``'sub'``, ``'mul'`` or ``'div'``.
    train_fraction: fraction of the pairs used for training, in (0, 1).
    seed: non-negative integer seed.

  Returns:
    A classification Dataset with ``num_classes = p``: ``x`` int32 ``(n, 3)``
    token ids, ``y`` int32 ``(n,)``. Use :func:`one_hot_pairs` for MLPs.

  >>> ds = modular_arithmetic(p=5, op="add", train_fraction=0.5)
  >>> ds.x_train.shape[1], ds.num_classes, len(ds.y_train) + len(ds.y_test)
  (3, 5, 25)
  """
  p = _check_int("p", p, 2)
  op = _check_choice("op", op, MODULAR_OPS)
  if op == "div" and not _is_prime(p):
    raise DataError(f"op='div' needs a prime modulus so every b != 0 has an inverse, "
                    f"got p={p}; use a prime such as 97 or 113.")
  train_fraction = _check_fraction("train_fraction", train_fraction)
  seed = _check_seed(seed)

  a, b, c = modular_table(p, op)
  n = len(c)
  n_train = int(round(train_fraction * n))
  if not 0 < n_train < n:
    raise DataError(f"train_fraction={train_fraction} splits the {n} pairs of p={p} "
                    f"into {n_train} train and {n - n_train} test; pick a fraction "
                    f"that leaves both non-empty.")
  tokens = np.stack([a, b, np.full_like(a, p)], axis=1).astype(np.int32)
  perm = _rng(seed, 0).permutation(n)
  tr, te = perm[:n_train], perm[n_train:]
  c = c.astype(np.int32)
  return validate(Dataset(tokens[tr], c[tr], tokens[te], c[te], p, "modular-arithmetic"))


def one_hot_pairs(ds: Dataset, p: int) -> Dataset:
  """Converts ``[a, b, =]`` token inputs to float32 ``[onehot(a), onehot(b)]`` of shape ``(2p,)``.

  Args:
    ds: a :func:`modular_arithmetic` dataset (int token inputs of shape ``(3,)``).
    p: its modulus.

  Returns:
    The dataset with float32 inputs of shape ``(2 * p,)``; labels unchanged.

  >>> one_hot_pairs(modular_arithmetic(p=5), 5).input_shape
  (10,)
  """
  p = _check_int("p", p, 2)
  if not np.issubdtype(ds.x_train.dtype, np.integer) or ds.input_shape != (3,):
    raise DataError(f"one_hot_pairs needs int token inputs of shape (3,) as made by "
                    f"modular_arithmetic, got {ds.x_train.dtype}{ds.input_shape}.")
  eye = np.eye(p, dtype=np.float32)

  def encode(x, split):
    if x[:, :2].min() < 0 or x[:, :2].max() >= p:
      raise DataError(f"x_{split} has operands outside [0, {p}); pass the p the "
                      f"dataset was built with.")
    return np.concatenate([eye[x[:, 0]], eye[x[:, 1]]], axis=1)

  return ds._replace(x_train=encode(ds.x_train, "train"), x_test=encode(ds.x_test, "test"))


def low_rank_ground_truth(n: int = 20, m: int = 20, rank: int = 2, seed: int = 0) -> np.ndarray:
  r"""The ``n x m`` rank-``rank`` matrix behind :func:`low_rank_matrix` for the same seed.

  :math:`M = U V^\top / \sqrt{r}` with :math:`U, V` standard Gaussian, so the
  entries have unit variance.

  Args:
    n: rows.
    m: columns.
    rank: rank ``r`` (<= min(n, m)).
    seed: non-negative integer seed.

  Returns:
    float32 ``(n, m)`` matrix.
  """
  n, m, rank = _check_int("n", n), _check_int("m", m), _check_int("rank", rank)
  if rank > min(n, m):
    raise DataError(f"rank={rank} exceeds min(n, m)={min(n, m)}; an n x m matrix "
                    f"has rank at most min(n, m).")
  seed = _check_seed(seed)
  rng = _rng(seed, 0)
  U = rng.standard_normal((n, rank))
  V = rng.standard_normal((m, rank))
  return (U @ V.T / np.sqrt(rank)).astype(np.float32)


def low_rank_matrix(n: int = 20, m: int = 20, rank: int = 2,
                    observed_fraction: float = 0.3, seed: int = 0) -> Dataset:
  """Matrix completion as regression: predict entries of a low-rank matrix from their indices.

  The setting of implicit low-rank bias in deep matrix factorization (Arora et
  al. 2019, "Implicit regularization in deep matrix factorization"). The
  training set is ``round(observed_fraction * n * m)`` entries drawn without
  replacement; the test set is every other entry. The matrix itself is
  :func:`low_rank_ground_truth` ``(n, m, rank, seed)``, independent of
  ``observed_fraction``.

  Args:
    n: rows.
    m: columns.
    rank: rank of the matrix (<= min(n, m)).
    observed_fraction: fraction of entries observed, in (0, 1).
    seed: non-negative integer seed.

  Returns:
    A regression Dataset: ``x`` int32 ``(k, 2)`` (row, column) indices, ``y``
    float32 ``(k, 1)`` entry values.
  """
  M = low_rank_ground_truth(n, m, rank, seed)
  observed_fraction = _check_fraction("observed_fraction", observed_fraction)
  total = n * m
  k = int(round(observed_fraction * total))
  if not 0 < k < total:
    raise DataError(f"observed_fraction={observed_fraction} observes {k} of the "
                    f"{total} entries; pick a fraction that leaves both observed "
                    f"and unobserved entries.")
  perm = _rng(seed, 1).permutation(total)
  rows, cols = np.divmod(perm, m)
  idx = np.stack([rows, cols], axis=1).astype(np.int32)
  vals = M[rows, cols][:, None]
  return validate(Dataset(idx[:k], vals[:k], idx[k:], vals[k:], None, "low-rank"))
