"""The :class:`Dataset` container, its validation and the transforms every loader shares.

Datasets live in host memory as numpy arrays; a trainer moves them to devices
once. Every transform is a pure function ``Dataset -> Dataset`` whose
randomness comes from an explicit ``seed`` (``np.random.default_rng``), never
from global state, so ``subset(ds, n_train=100, seed=3)`` is the same array on
every machine.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxtheory.errors import DataError


class Dataset(NamedTuple):
  """A supervised dataset held in host memory as numpy arrays.

  Attributes:
    x_train: ``(n_train, *input_shape)`` float32 inputs (or int32 token ids).
    y_train: ``(n_train,)`` int32 class labels, or ``(n_train, out_dim)``
      float32 regression targets.
    x_test: ``(n_test, *input_shape)``, same dtype as ``x_train``.
    y_test: ``(n_test,)`` or ``(n_test, out_dim)``, same dtype as ``y_train``.
    num_classes: number of classes, or ``None`` for regression.
    name: the dataset's registry name (see :data:`jaxtheory.data.LOADERS`).
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int | None
  name: str

  @property
  def input_shape(self) -> tuple[int, ...]:
    """The shape of one input, ``x_train.shape[1:]``."""
    return tuple(self.x_train.shape[1:])

  @property
  def out_dim(self) -> int:
    """Network output size: ``num_classes``, or the regression target size."""
    if self.num_classes is not None:
      return self.num_classes
    return int(self.y_train.shape[-1])

  @property
  def is_classification(self) -> bool:
    """Whether the labels are integer classes (``num_classes`` is set)."""
    return self.num_classes is not None

  def __repr__(self) -> str:
    def arr(a):
      return f"{a.dtype}{tuple(a.shape)}" if isinstance(a, np.ndarray) else type(a).__name__
    return (f"Dataset(name={self.name!r}, x_train={arr(self.x_train)}, "
            f"y_train={arr(self.y_train)}, x_test={arr(self.x_test)}, "
            f"y_test={arr(self.y_test)}, num_classes={self.num_classes})")


# --- argument checks shared by the loaders (DataError, never TypeError) ---


def _check_int(name: str, value, minimum: int = 1) -> int:
  if (not isinstance(value, numbers.Integral) or isinstance(value, bool)
      or value < minimum):
    raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}.")
  return int(value)


def _check_seed(seed) -> int:
  if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
    raise DataError(f"seed must be a non-negative integer, got {seed!r}.")
  return int(seed)


def _check_real(name: str, value, minimum: float = 0.0) -> float:
  if (not isinstance(value, numbers.Real) or isinstance(value, bool)
      or not np.isfinite(value) or value < minimum):
    raise DataError(f"{name} must be a finite number >= {minimum:g}, got {value!r}.")
  return float(value)


def _check_fraction(name: str, value, closed: bool = False) -> float:
  """A number in the open interval (0, 1), or in [0, 1] when ``closed``."""
  ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
  if ok:
    ok = 0.0 <= value <= 1.0 if closed else 0.0 < value < 1.0
  if not ok:
    interval = "in [0, 1]" if closed else "strictly between 0 and 1"
    raise DataError(f"{name} must be a number {interval}, got {value!r}.")
  return float(value)


def _check_choice(name: str, value, choices: Sequence[str]) -> str:
  if value not in choices:
    options = ", ".join(repr(c) for c in choices)
    raise DataError(f"{name} must be one of {options}, got {value!r}.")
  return value


def _rng(seed: int, stream: int) -> np.random.Generator:
  """An independent generator per (seed, stream): what one draw does never shifts another."""
  return np.random.default_rng([seed, stream])


# --- validation ---


def _check_split(ds: Dataset, split: str):
  x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
  for field, a in ((f"x_{split}", x), (f"y_{split}", y)):
    if not isinstance(a, np.ndarray):
      raise DataError(f"{field} must be a numpy array, got {type(a).__name__}; "
                      f"wrap it with np.asarray.")
    if a.ndim == 0:
      raise DataError(f"{field} is a scalar; give it a leading example axis.")
  if len(x) == 0:
    raise DataError(f"x_{split} is empty; a Dataset needs at least one training "
                    f"and one test example.")
  if len(x) != len(y):
    raise DataError(f"x_{split} has {len(x)} examples but y_{split} has {len(y)}; "
                    f"give every input exactly one label.")
  if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
    raise DataError(f"x_{split} has dtype {x.dtype}; inputs must be floats or "
                    f"integer token ids.")
  for field, a in ((f"x_{split}", x), (f"y_{split}", y)):
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
      raise DataError(f"{field} contains NaN or inf; remove or impute those "
                      f"entries before building the Dataset.")
  if ds.num_classes is not None:
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
      raise DataError(f"y_{split} must be a 1-D integer array of class labels for "
                      f"a classification Dataset, got {y.dtype}{y.shape}; set "
                      f"num_classes=None for regression targets.")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= ds.num_classes:
      raise DataError(f"y_{split} has labels in [{lo}, {hi}] but num_classes="
                      f"{ds.num_classes}; relabel classes to 0..{ds.num_classes - 1} "
                      f"or raise num_classes.")
  elif not np.issubdtype(y.dtype, np.floating) or y.ndim != 2:
    raise DataError(f"y_{split} must be a 2-D float array (n, out_dim) for a "
                    f"regression Dataset, got {y.dtype}{y.shape}; set num_classes "
                    f"for integer class labels.")


def validate(ds: Dataset) -> Dataset:
  """Checks a Dataset's invariants and returns it unchanged.

  Checked: arrays are numpy, splits are non-empty, inputs and labels have the
  same length, train and test agree on input shape and dtype, floats are
  finite, class labels lie in ``[0, num_classes)`` (classification) and
  regression targets are ``(n, out_dim)`` floats.

  Args:
    ds: the dataset to check.

  Returns:
    ``ds`` itself.

  Raises:
    DataError: naming the first violated invariant and how to fix it.

  >>> import numpy as np
  >>> ds = Dataset(np.zeros((2, 3), np.float32), np.array([0, 1], np.int32),
  ...              np.zeros((1, 3), np.float32), np.array([1], np.int32), 2, "toy")
  >>> validate(ds).input_shape
  (3,)
  """
  if not isinstance(ds, Dataset):
    raise DataError(f"expected a Dataset, got {type(ds).__name__}; build one with "
                    f"jaxtheory.data.Dataset(x_train, y_train, x_test, y_test, "
                    f"num_classes, name).")
  if ds.num_classes is not None and (
      not isinstance(ds.num_classes, numbers.Integral)
      or isinstance(ds.num_classes, bool) or ds.num_classes < 1):
    raise DataError(f"num_classes must be a positive integer or None (regression), "
                    f"got {ds.num_classes!r}.")
  if not isinstance(ds.name, str):
    raise DataError(f"name must be a string, got {type(ds.name).__name__}.")
  _check_split(ds, "train")
  _check_split(ds, "test")
  if ds.x_train.shape[1:] != ds.x_test.shape[1:]:
    raise DataError(f"x_train has input shape {ds.x_train.shape[1:]} but x_test has "
                    f"{ds.x_test.shape[1:]}; both splits must share one input shape.")
  if ds.x_train.dtype != ds.x_test.dtype:
    raise DataError(f"x_train is {ds.x_train.dtype} but x_test is {ds.x_test.dtype}; "
                    f"cast both splits to one dtype.")
  if ds.y_train.shape[1:] != ds.y_test.shape[1:]:
    raise DataError(f"y_train has target shape {ds.y_train.shape[1:]} but y_test has "
                    f"{ds.y_test.shape[1:]}; both splits must share one target shape.")
  return ds


# --- transforms ---


def subset(ds: Dataset, n_train: int | None = None, n_test: int | None = None,
           classes: Sequence[int] | None = None, seed: int = 0,
           balanced: bool = False) -> Dataset:
  """A random subset of a dataset, optionally restricted to some classes.

  Examples are drawn without replacement from a seeded permutation, one per
  split, so for a fixed seed a smaller ``n_train`` is a prefix of a larger one
  (nested training sets for sample-size sweeps) and ``n_test`` never changes
  which training examples are picked.

  Args:
    ds: a dataset.
    n_train: training examples to keep (``None``: all, in the original order).
    n_test: test examples to keep (``None``: all, in the original order).
    classes: classification only; the original labels to keep. They are
      relabelled ``classes[i] -> i`` in the order given.
    seed: non-negative integer seed.
    balanced: classification only; draw the same number of examples from
      every class (counts differ by at most one when ``n`` is not a multiple
      of the number of classes, or by what a class lacks), still nested in
      ``n`` for a fixed seed.

  Returns:
    The subset, with ``num_classes = len(classes)`` when ``classes`` is given.

  Raises:
    DataError: for more examples than available, bad or repeated classes, or
      ``classes`` on a regression dataset.
  """
  seed = _check_seed(seed)
  if not isinstance(balanced, (bool, np.bool_)):
    raise DataError(f"balanced must be True or False, got {balanced!r}")
  if balanced and not ds.is_classification:
    raise DataError(f"balanced=True needs a classification dataset, but {ds.name!r} is "
                    f"regression; drop the balanced argument.")
  x_tr, y_tr, x_te, y_te = ds.x_train, ds.y_train, ds.x_test, ds.y_test
  num_classes = ds.num_classes
  if classes is not None:
    if not ds.is_classification:
      raise DataError(f"classes= needs a classification dataset, but {ds.name!r} "
                      f"is regression; drop the classes argument.")
    classes = [_check_int("each class in classes", c, 0) for c in classes]
    if not classes:
      raise DataError("classes is empty; pass at least one class label.")
    if len(set(classes)) != len(classes):
      raise DataError(f"classes has repeated labels {classes}; list each class once.")
    bad = [c for c in classes if c >= ds.num_classes]
    if bad:
      raise DataError(f"classes {bad} are not labels of {ds.name!r}, which has "
                      f"num_classes={ds.num_classes}; pick labels in "
                      f"0..{ds.num_classes - 1}.")
    relabel = np.full(ds.num_classes, -1, np.int32)
    relabel[classes] = np.arange(len(classes), dtype=np.int32)
    keep_tr, keep_te = relabel[y_tr] >= 0, relabel[y_te] >= 0
    x_tr, y_tr = x_tr[keep_tr], relabel[y_tr[keep_tr]]
    x_te, y_te = x_te[keep_te], relabel[y_te[keep_te]]
    num_classes = len(classes)

  def pick(x, y, n, split, stream):
    if n is None:
      return x, y
    n = _check_int(f"n_{split}", n)
    if n > len(x):
      raise DataError(f"n_{split}={n} exceeds the {len(x)} {split} examples "
                      f"available; pass n_{split} <= {len(x)}.")
    perm = _rng(seed, stream).permutation(len(x))
    if balanced:
      # Order by each example's rank within its class (in the permuted order),
      # then by position: every prefix takes from all classes in turn.
      yp = y[perm]
      rank = np.empty(len(perm), np.int64)
      for c in np.unique(yp):
        at = np.flatnonzero(yp == c)
        rank[at] = np.arange(len(at))
      perm = perm[np.lexsort((np.arange(len(perm)), rank))]
    idx = perm[:n]
    return x[idx], y[idx]

  x_tr, y_tr = pick(x_tr, y_tr, n_train, "train", 0)
  x_te, y_te = pick(x_te, y_te, n_test, "test", 1)
  return validate(Dataset(x_tr, y_tr, x_te, y_te, num_classes, ds.name))


def with_label_noise(ds: Dataset, rate: float, seed: int) -> Dataset:
  """Replaces a fraction ``rate`` of the training labels by random different labels.

  Exactly ``round(rate * n_train)`` examples, chosen without replacement, get
  a label drawn uniformly from the ``num_classes - 1`` classes other than
  their own. Test labels stay clean, so test error measures generalization of
  the clean rule.

  Args:
    ds: a classification dataset.
    rate: fraction of training labels to corrupt, in ``[0, 1]``.
    seed: non-negative integer seed.

  Returns:
    The dataset with noisy ``y_train``.

  Raises:
    DataError: for a regression dataset, a rate outside ``[0, 1]``, or fewer
      than two classes.
  """
  if not ds.is_classification:
    raise DataError(f"label noise needs a classification dataset, but {ds.name!r} "
                    f"is regression; add noise to regression targets instead "
                    f"(e.g. teacher_student(noise=...)).")
  rate, seed = _check_fraction("rate", rate, closed=True), _check_seed(seed)
  n = len(ds.y_train)
  k = int(round(rate * n))
  if k == 0:
    return ds
  if ds.num_classes < 2:
    raise DataError(f"label noise needs at least 2 classes, {ds.name!r} has "
                    f"{ds.num_classes}.")
  rng = _rng(seed, 0)
  idx = rng.choice(n, size=k, replace=False)
  # A shift in 1..C-1 mod C is uniform over the other C-1 labels.
  shift = rng.integers(1, ds.num_classes, size=k)
  y = ds.y_train.copy()
  y[idx] = (y[idx] + shift) % ds.num_classes
  return ds._replace(y_train=y.astype(np.int32))


def standardize(ds: Dataset, min_std: float = 0.0) -> Dataset:
  """Zero-mean, unit-variance inputs, per input coordinate, using train statistics.

  Coordinates that are constant on the training set (e.g. border pixels) are
  centered but not scaled, so no NaN appears. A coordinate that is almost
  constant (a pixel inked in one training image of a thousand) would be
  scaled up enormously and blow up on a test image that inks it: ``min_std``
  floors the std divided by.

  Args:
    ds: a dataset with float inputs.
    min_std: the smallest std divided by, in input units (``0``: none).

  Returns:
    The dataset with float32 standardized ``x_train`` and ``x_test``.

  Raises:
    DataError: for integer (token) inputs.
  """
  if not np.issubdtype(ds.x_train.dtype, np.floating):
    raise DataError(f"standardize needs float inputs, but {ds.name!r} has "
                    f"{ds.x_train.dtype} token ids; embed or one-hot them first "
                    f"(e.g. one_hot_pairs).")
  min_std = _check_real("min_std", min_std)
  x = ds.x_train.astype(np.float64)
  mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), min_std)
  std = np.where(std > 0, std, 1.0)
  scale = lambda a: ((a.astype(np.float64) - mean) / std).astype(np.float32)
  return ds._replace(x_train=scale(ds.x_train), x_test=scale(ds.x_test))


def data_arrays(ds: Dataset, dtype=None) -> dict[str, jax.Array]:
  """Device arrays of a dataset: ``x_train``, ``y_train``, ``x_test``, ``y_test``.

  Float inputs and targets are cast to ``dtype`` (default: JAX's default float,
  float64 under ``jax.enable_x64``); integer labels and token ids stay integers.
  """
  dtype = dtype or jnp.result_type(float)
  cast = lambda a: jnp.asarray(a, dtype) if np.issubdtype(a.dtype, np.floating) else jnp.asarray(a)
  return {"x_train": cast(ds.x_train), "y_train": cast(ds.y_train),
          "x_test": cast(ds.x_test), "y_test": cast(ds.y_test)}
