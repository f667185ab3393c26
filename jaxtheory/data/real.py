"""Real datasets that ship with the install (no network access needed)."""

from __future__ import annotations

import numpy as np

from jaxtheory.data.core import (Dataset, DataError, _check_fraction, _check_seed, _rng,
                                 validate)


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int):
  """Train/test indices holding ``round(test_fraction * n_c)`` of each class ``c`` out for test."""
  rng = _rng(seed, 0)
  train, test = [], []
  for c in np.unique(y):
    idx = rng.permutation(np.flatnonzero(y == c))
    k = int(round(test_fraction * len(idx)))
    test.append(idx[:k])
    train.append(idx[k:])
  # Shuffle so that consecutive examples (minibatches) mix the classes.
  return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def digits(test_fraction: float = 0.25, seed: int = 0, flatten: bool = True) -> Dataset:
  """scikit-learn's handwritten digits: 1797 8x8 grayscale images, 10 classes.

  Bundled with scikit-learn, so it loads offline. Pixels (0..16 in the source)
  are scaled to ``[0, 1]``. The split is stratified: each class contributes
  ``round(test_fraction * n_class)`` test examples, chosen by ``seed``.

  Args:
    test_fraction: fraction of each class held out for testing, in (0, 1).
    seed: non-negative integer seed of the split.
    flatten: ``True`` for ``(64,)`` vectors, ``False`` for channels-last
      ``(8, 8, 1)`` images.

  Returns:
    A classification Dataset with ``num_classes = 10``, float32 inputs and
    int32 labels.
  """
  test_fraction = _check_fraction("test_fraction", test_fraction)
  seed = _check_seed(seed)
  if not isinstance(flatten, (bool, np.bool_)):
    raise DataError(f"flatten must be True or False, got {flatten!r}.")
  try:
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise DataError("the digits dataset needs scikit-learn; install it with "
                    "`pip install scikit-learn`.") from e
  raw = load_digits()
  x = (raw.images / 16.0).astype(np.float32)
  x = x.reshape(len(x), -1) if flatten else x[..., None]
  y = raw.target.astype(np.int32)
  tr, te = _stratified_split(y, test_fraction, seed)
  if len(tr) == 0 or len(te) == 0:
    raise DataError(f"test_fraction={test_fraction} leaves an empty split; pick a "
                    f"fraction that holds out some but not all of each class.")
  return validate(Dataset(x[tr], y[tr], x[te], y[te], 10, "digits"))
