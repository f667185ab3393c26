"""Datasets: the :class:`Dataset` container, transforms, synthetic generators and real loaders.

MNIST and Fashion-MNIST need their files (``jaxtheory data fetch mnist``, see
:mod:`jaxtheory.data.sources`); everything else loads offline.

>>> from jaxtheory import data
>>> ds = data.load("modular-arithmetic", p=7, op="add", train_fraction=0.5)
>>> ds.num_classes, ds.input_shape
(7, (3,))
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from jaxtheory.data.core import (Dataset, DataError, data_arrays, standardize, subset, validate,
                                 with_label_noise)
from jaxtheory.data.files import data_dir, read_idx, write_idx
from jaxtheory.data.real import digits, fashion_mnist, mnist, mnist1d
from jaxtheory.data.sources import FetchResult, fetch, status
from jaxtheory.data.synthetic import (MODULAR_OPS, coordinate_product, gaussian_mixture,
                                      low_rank_ground_truth,
                                      low_rank_matrix, modular_arithmetic, modular_table,
                                      one_hot_pairs, teacher_student)

# For the command line (`jaxtheory data NAME`); library code should call the functions.
LOADERS: dict[str, Callable[..., Dataset]] = {
    "digits": digits,
    "mnist": mnist,
    "fashion-mnist": fashion_mnist,
    "mnist1d": mnist1d,
    "teacher-student": teacher_student,
    "gaussian-mixture": gaussian_mixture,
    "modular-arithmetic": modular_arithmetic,
    "low-rank": low_rank_matrix,
}


def load(name: str, **kwargs) -> Dataset:
  """Loads a dataset by its registry name, with the loader's keyword arguments.

  Args:
    name: a key of :data:`LOADERS`.
    **kwargs: keyword arguments of that loader.

  Returns:
    The validated Dataset.

  Raises:
    DataError: for an unknown name, an argument the loader does not accept,
      or an invalid argument value (never a bare TypeError).
  """
  if name not in LOADERS:
    raise DataError(f"unknown dataset {name!r}; available: {', '.join(sorted(LOADERS))}.")
  fn = LOADERS[name]
  accepted = list(inspect.signature(fn).parameters)
  unknown = [k for k in kwargs if k not in accepted]
  if unknown:
    raise DataError(f"dataset {name!r} got unknown argument(s) {', '.join(unknown)}; "
                    f"accepted: {', '.join(accepted)}.")
  try:
    return fn(**kwargs)
  except TypeError as e:  # e.g. a comparison with a value of the wrong type
    raise DataError(f"bad argument for dataset {name!r} ({e}); accepted: "
                    f"{', '.join(accepted)}.") from e


def balanced(name: str, *, per_class: int | None = None, n_train: int | None = None,
             n_test: int | None = None, seed: int = 0, pool: int | None = None) -> Dataset:
  """A class-balanced training subset of a registered classification dataset.

  The dataset is loaded (with ``seed``; with ``pool`` where its loader
  average-pools images, ignored by the others) and subset by
  :func:`subset` with ``balanced=True`` and the same ``seed``, so a given
  seed picks the same examples whichever experiment asks.

  Args:
    name: a key of :data:`LOADERS`.
    per_class: training examples per class; or
    n_train: training examples in all (``None`` with ``per_class=None``: all).
    n_test: test examples to keep, at most those there are (``None``: all).
    seed: non-negative integer seed of the loader and the subset.
    pool: the image loaders' average-pooling factor (``None``: theirs).

  Returns:
    The balanced subset.

  Raises:
    DataError: for an unknown dataset or bad arguments.

  >>> ds = balanced("digits", per_class=5, n_test=20)
  >>> len(ds.y_train), len(ds.y_test)
  (50, 20)
  """
  if per_class is not None and n_train is not None:
    raise DataError("balanced: give per_class or n_train, not both.")
  kw = {}
  if pool is not None and name in LOADERS and "pool" in inspect.signature(LOADERS[name]).parameters:
    kw["pool"] = pool
  ds = load(name, seed=seed, **kw)
  if per_class is not None:
    n_train = ds.num_classes * per_class
  n_test = None if n_test is None else min(n_test, len(ds.y_test))
  return subset(ds, n_train=n_train, n_test=n_test, seed=seed, balanced=True)


__all__ = [
    "Dataset", "DataError", "FetchResult", "LOADERS", "MODULAR_OPS", "balanced",
    "coordinate_product",
    "data_dir", "digits",
    "fashion_mnist", "fetch", "gaussian_mixture", "load", "low_rank_ground_truth",
    "low_rank_matrix", "mnist", "mnist1d", "modular_arithmetic", "modular_table",
    "one_hot_pairs", "read_idx", "standardize", "status", "subset", "teacher_student",
    "validate", "with_label_noise", "write_idx",
]
