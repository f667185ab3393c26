"""Dataset transforms: balanced class subsets, standardization with a floor on the std."""

import numpy as np
import pytest

from jaxtheory import data


@pytest.fixture(scope="module")
def digits():
  return data.load("digits")


@pytest.mark.parametrize("n", [10, 37, 100, 500])
def test_counts_differ_by_at_most_one(digits, n):
  sub = data.subset(digits, n_train=n, balanced=True, seed=3)
  counts = np.bincount(sub.y_train, minlength=10)
  assert counts.sum() == n and counts.max() - counts.min() <= 1


def test_nested_in_n_and_seeded(digits):
  small = data.subset(digits, n_train=30, balanced=True, seed=1)
  big = data.subset(digits, n_train=90, balanced=True, seed=1)
  np.testing.assert_array_equal(small.x_train, big.x_train[:30])
  other = data.subset(digits, n_train=30, balanced=True, seed=2)
  assert not np.array_equal(small.x_train, other.x_train)


def test_with_a_class_subset_and_a_class_that_runs_out(digits):
  sub = data.subset(digits, n_train=40, classes=[3, 7], balanced=True)
  np.testing.assert_array_equal(np.bincount(sub.y_train), [20, 20])
  # Asking for more than the smallest class holds: that class gives all it has.
  x = np.zeros((13, 2), np.float32)
  y = np.array([0] * 10 + [1] * 3, np.int32)
  ds = data.Dataset(x, y, x[:2], y[:2], 2, "toy")
  counts = np.bincount(data.subset(ds, n_train=8, balanced=True).y_train)
  np.testing.assert_array_equal(counts, [5, 3])


def test_errors(digits):
  with pytest.raises(data.DataError, match="balanced must be True or False"):
    data.subset(digits, n_train=10, balanced="yes")
  reg = data.teacher_student(n_train=8, n_test=4, input_dim=2)
  with pytest.raises(data.DataError, match="balanced=True needs a classification dataset"):
    data.subset(reg, n_train=4, balanced=True)


def test_standardize_floors_the_std():
  x = np.array([[0.0, 1.0], [0.0, 3.0], [0.0, 5.0], [0.01, 7.0]], np.float32)
  ds = data.Dataset(x, np.arange(4) % 2, x, np.arange(4) % 2, 2, "toy")
  plain = data.standardize(ds)
  np.testing.assert_allclose(plain.x_train.std(0), [1.0, 1.0], rtol=1e-5)
  floored = data.standardize(ds, min_std=0.5)
  # The nearly constant column is divided by 0.5, not by its std of 0.0043.
  np.testing.assert_allclose(floored.x_train[:, 0], (x[:, 0] - 0.0025) / 0.5, rtol=1e-5)
  np.testing.assert_allclose(floored.x_train[:, 1], plain.x_train[:, 1], rtol=1e-6)
  const = ds._replace(x_train=np.ones_like(x), x_test=np.ones_like(x))
  assert np.all(data.standardize(const).x_test == 0)  # centred, not scaled: no NaN
  with pytest.raises(data.DataError, match="min_std must be a finite number >= 0"):
    data.standardize(ds, min_std=-1.0)
