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


__all__ = [
    "Dataset", "DataError", "FetchResult", "LOADERS", "MODULAR_OPS", "coordinate_product",
    "data_dir", "digits",
    "fashion_mnist", "fetch", "gaussian_mixture", "load", "low_rank_ground_truth",
    "low_rank_matrix", "mnist", "mnist1d", "modular_arithmetic", "modular_table",
    "one_hot_pairs", "read_idx", "standardize", "status", "subset", "teacher_student",
    "validate", "with_label_noise", "write_idx",
]
