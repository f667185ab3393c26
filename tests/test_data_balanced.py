"""Balanced class subsets: equal counts per class, nested in n, clear errors."""

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
