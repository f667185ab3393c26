"""Tests for jaxtheory.data: shapes, determinism, correctness against brute force, errors."""

import hashlib
import itertools

import numpy as np
import pytest

from jaxtheory import data
from jaxtheory.data import (LOADERS, DataError, Dataset, digits, files, gaussian_mixture,
                            load, low_rank_ground_truth, low_rank_matrix, modular_arithmetic,
                            one_hot_pairs, standardize, subset, teacher_student, validate,
                            with_label_noise)

SMALL = {
    "digits": {},
    "teacher-student": dict(n_train=32, n_test=16),
    "gaussian-mixture": dict(n_train=32, n_test=16),
    "modular-arithmetic": dict(p=11),
    "low-rank": dict(n=8, m=6),
}


def _equal(ds1, ds2):
  return all(np.array_equal(a, b) for a, b in zip(ds1[:4], ds2[:4])) and ds1[4:] == ds2[4:]


def _toy(**changes):
  ds = Dataset(np.zeros((4, 3), np.float32), np.array([0, 1, 2, 1], np.int32),
               np.zeros((2, 3), np.float32), np.array([0, 2], np.int32), 3, "toy")
  return ds._replace(**changes)


@pytest.fixture(scope="module")
def digits_ds():
  return digits()


# --- registry and container ---


def test_registry_names_round_trip():
  assert set(LOADERS) == {"digits", "teacher-student", "gaussian-mixture",
                          "modular-arithmetic", "low-rank", "mnist", "fashion-mnist", "mnist1d"}
  for name, kwargs in SMALL.items():
    ds = load(name, **kwargs)
    assert ds.name == name
    assert validate(ds) is ds


def test_init_reexports():
  for name in ["Dataset", "DataError", "validate", "subset", "with_label_noise",
               "standardize", "load", "LOADERS", "digits", "teacher_student",
               "gaussian_mixture", "modular_arithmetic", "one_hot_pairs", "low_rank_matrix",
               "low_rank_ground_truth"]:
    assert hasattr(data, name), name
  assert issubclass(DataError, ValueError)


def test_dataset_properties_and_repr():
  ds = teacher_student(n_train=8, n_test=4, input_dim=3, out_dim=2)
  assert ds.input_shape == (3,) and ds.out_dim == 2 and not ds.is_classification
  cls = gaussian_mixture(n_train=8, n_test=4, num_classes=3)
  assert cls.out_dim == 3 and cls.is_classification
  assert repr(ds) == ("Dataset(name='teacher-student', x_train=float32(8, 3), "
                      "y_train=float32(8, 2), x_test=float32(4, 3), y_test=float32(4, 2), "
                      "num_classes=None)")


@pytest.mark.parametrize("name", sorted(SMALL))
def test_deterministic_by_seed_and_different_across_seeds(name):
  a = load(name, seed=0, **SMALL[name])
  b = load(name, seed=0, **SMALL[name])
  c = load(name, seed=1, **SMALL[name])
  assert _equal(a, b)
  assert not _equal(a, c)


# --- teacher-student ---


@pytest.mark.parametrize("activation", ["relu", "tanh", "linear"])
def test_teacher_student_shapes(activation):
  ds = teacher_student(n_train=10, n_test=7, input_dim=5, out_dim=3, activation=activation)
  assert ds.x_train.shape == (10, 5) and ds.x_test.shape == (7, 5)
  assert ds.y_train.shape == (10, 3) and ds.y_test.shape == (7, 3)
  assert {a.dtype for a in ds[:4]} == {np.dtype(np.float32)}
  assert ds.num_classes is None


def test_teacher_student_linear_teacher_is_linear():
  ds = teacher_student(n_train=64, n_test=32, input_dim=5, out_dim=2, activation="linear")
  W, *_ = np.linalg.lstsq(ds.x_train.astype(np.float64), ds.y_train, rcond=None)
  np.testing.assert_allclose(ds.x_test @ W, ds.y_test, atol=1e-5)
  relu = teacher_student(n_train=64, n_test=32, input_dim=5, out_dim=2, activation="relu")
  W, *_ = np.linalg.lstsq(relu.x_train.astype(np.float64), relu.y_train, rcond=None)
  assert np.abs(relu.x_test @ W - relu.y_test).max() > 1e-2


def test_teacher_student_sizes_and_noise_keep_the_teacher():
  small = teacher_student(n_train=10, n_test=20, seed=3)
  big = teacher_student(n_train=50, n_test=20, seed=3)
  noisy = teacher_student(n_train=50, n_test=20, noise=0.5, seed=3)
  np.testing.assert_array_equal(small.x_train, big.x_train[:10])
  np.testing.assert_array_equal(small.y_train, big.y_train[:10])
  np.testing.assert_array_equal(big.x_test, noisy.x_test)
  np.testing.assert_array_equal(big.y_test, noisy.y_test)  # test targets stay clean
  resid = noisy.y_train - big.y_train
  assert 0.3 < resid.std() < 0.7


# --- gaussian mixture ---


def test_gaussian_mixture_shapes_balance_and_separation():
  ds = gaussian_mixture(n_train=4002, n_test=10, num_classes=3, input_dim=6, separation=5.0)
  assert ds.x_train.shape == (4002, 6) and ds.x_train.dtype == np.float32
  assert ds.y_train.shape == (4002,) and ds.y_train.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(ds.y_train), [1334] * 3)
  means = np.stack([ds.x_train[ds.y_train == c].mean(0) for c in range(3)])
  np.testing.assert_allclose(np.linalg.norm(means, axis=1), 5.0, rtol=0.05)
  same = gaussian_mixture(n_train=10, n_test=10, num_classes=3, input_dim=6,
                          separation=0.0)
  assert same.x_train.std() == pytest.approx(1.0, abs=0.5)


# --- modular arithmetic ---


def _brute(p, op):
  table = {}
  for a, b in itertools.product(range(p), repeat=2):
    if op == "add":
      table[a, b] = (a + b) % p
    elif op == "sub":
      table[a, b] = (a - b) % p
    elif op == "mul":
      table[a, b] = (a * b) % p
    elif b != 0:
      # c = a / b  <=>  c * b == a (mod p); unique since p is prime.
      (c,) = [c for c in range(p) if (c * b) % p == a]
      table[a, b] = c
  return table


@pytest.mark.parametrize("op,p", [("add", 7), ("sub", 7), ("mul", 11), ("div", 11),
                                  ("add", 6), ("mul", 4)])
def test_modular_arithmetic_labels_split_and_tokens(op, p):
  ds = modular_arithmetic(p=p, op=op, train_fraction=0.4, seed=2)
  table = _brute(p, op)
  assert ds.num_classes == p and ds.input_shape == (3,)
  assert ds.x_train.dtype == np.int32 and ds.y_train.dtype == np.int32
  seen = []
  for x, y in [(ds.x_train, ds.y_train), (ds.x_test, ds.y_test)]:
    assert np.all(x[:, 2] == p)  # the '=' token
    for (a, b, _), c in zip(x.tolist(), y.tolist()):
      assert table[a, b] == c
      seen.append((a, b))
  assert len(seen) == len(set(seen))  # train and test disjoint, no duplicates
  assert set(seen) == set(table)  # together they cover every pair
  assert len(ds.y_train) == round(0.4 * len(table))


def test_modular_arithmetic_default_and_nested_fractions():
  ds = modular_arithmetic()
  assert len(ds.y_train) + len(ds.y_test) == 97 ** 2
  small = modular_arithmetic(p=13, train_fraction=0.2, seed=5)
  big = modular_arithmetic(p=13, train_fraction=0.6, seed=5)
  np.testing.assert_array_equal(small.x_train, big.x_train[:len(small.x_train)])


def test_one_hot_pairs():
  ds = modular_arithmetic(p=7, op="mul", train_fraction=0.5)
  oh = one_hot_pairs(ds, 7)
  assert oh.input_shape == (14,) and oh.x_train.dtype == np.float32
  np.testing.assert_array_equal(oh.x_train[:, :7].argmax(1), ds.x_train[:, 0])
  np.testing.assert_array_equal(oh.x_test[:, 7:].argmax(1), ds.x_test[:, 1])
  assert np.all(oh.x_train.sum(1) == 2)
  np.testing.assert_array_equal(oh.y_train, ds.y_train)


# --- low rank ---


def test_low_rank_matrix_rank_entries_and_split():
  n, m, r = 12, 9, 3
  M = low_rank_ground_truth(n, m, r, seed=4)
  assert M.shape == (n, m) and M.dtype == np.float32
  assert np.linalg.matrix_rank(M.astype(np.float64), tol=1e-4) == r
  ds = low_rank_matrix(n, m, r, observed_fraction=0.25, seed=4)
  assert ds.x_train.dtype == np.int32 and ds.input_shape == (2,)
  assert ds.y_train.shape == (27, 1) and ds.y_test.shape == (n * m - 27, 1)
  idx = np.concatenate([ds.x_train, ds.x_test])
  vals = np.concatenate([ds.y_train, ds.y_test])[:, 0]
  np.testing.assert_array_equal(M[idx[:, 0], idx[:, 1]], vals)
  assert len({tuple(i) for i in idx.tolist()}) == n * m  # disjoint and covering
  other = low_rank_matrix(n, m, r, observed_fraction=0.7, seed=4)
  np.testing.assert_array_equal(
      M[other.x_train[:, 0], other.x_train[:, 1]], other.y_train[:, 0])


# --- digits ---


def test_digits_shapes_range_and_stratification(digits_ds):
  ds = digits_ds
  assert ds.num_classes == 10 and ds.input_shape == (64,)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  assert len(ds.y_train) + len(ds.y_test) == 1797
  assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
  counts = np.bincount(np.concatenate([ds.y_train, ds.y_test]), minlength=10)
  np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=10),
                                np.round(0.25 * counts).astype(int))
  images = digits(flatten=False)
  assert images.input_shape == (8, 8, 1)
  np.testing.assert_array_equal(images.x_train.reshape(-1, 64), ds.x_train)
  other = digits(test_fraction=0.5, seed=7)
  np.testing.assert_array_equal(np.bincount(other.y_test, minlength=10),
                                np.round(0.5 * counts).astype(int))


# --- transforms ---


def test_subset_sizes_nesting_and_determinism(digits_ds):
  a = subset(digits_ds, n_train=50, n_test=20, seed=1)
  assert len(a.y_train) == 50 and len(a.y_test) == 20
  assert _equal(a, subset(digits_ds, n_train=50, n_test=20, seed=1))
  assert not _equal(a, subset(digits_ds, n_train=50, n_test=20, seed=2))
  b = subset(digits_ds, n_train=100, seed=1)
  np.testing.assert_array_equal(a.x_train, b.x_train[:50])
  np.testing.assert_array_equal(b.x_test, digits_ds.x_test)
  # Each kept example is one of the original ones, with its label.
  rows = {r.tobytes(): y for r, y in zip(digits_ds.x_train, digits_ds.y_train)}
  assert all(rows[r.tobytes()] == y for r, y in zip(a.x_train, a.y_train))


def test_subset_classes_relabels(digits_ds):
  sub = subset(digits_ds, classes=[7, 3])
  assert sub.num_classes == 2
  np.testing.assert_array_equal(sub.x_train, digits_ds.x_train[np.isin(digits_ds.y_train,
                                                                        [3, 7])])
  orig = digits_ds.y_test[np.isin(digits_ds.y_test, [3, 7])]
  np.testing.assert_array_equal(sub.y_test, np.where(orig == 7, 0, 1))
  assert sub.y_train.dtype == np.int32
  small = subset(digits_ds, n_train=10, classes=[1, 2, 5], seed=0)
  assert len(small.y_train) == 10 and set(small.y_train.tolist()) <= {0, 1, 2}


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.37, 1.0])
def test_label_noise_exact_rate_and_always_different(rate):
  ds = gaussian_mixture(n_train=301, n_test=50, num_classes=5)
  noisy = with_label_noise(ds, rate, seed=3)
  changed = noisy.y_train != ds.y_train
  assert changed.sum() == round(rate * 301)  # a flipped label is never its old self
  np.testing.assert_array_equal(noisy.y_test, ds.y_test)
  np.testing.assert_array_equal(noisy.x_train, ds.x_train)
  assert noisy.y_train.dtype == np.int32 and validate(noisy) is noisy
  if 0 < rate:
    assert _equal(noisy, with_label_noise(ds, rate, seed=3))
    assert not _equal(noisy, with_label_noise(ds, rate, seed=4))


def test_label_noise_uses_every_other_class():
  ds = gaussian_mixture(n_train=3000, n_test=10, num_classes=4)
  noisy = with_label_noise(ds, 1.0, seed=0)
  for c in range(4):
    new = noisy.y_train[ds.y_train == c]
    assert set(new.tolist()) == set(range(4)) - {c}


def test_standardize(digits_ds):
  st = standardize(digits_ds)
  assert st.x_train.dtype == np.float32 and np.all(np.isfinite(st.x_train))
  np.testing.assert_allclose(st.x_train.mean(0), 0.0, atol=1e-5)
  std = st.x_train.std(0)
  varying = digits_ds.x_train.std(0) > 0
  assert not varying.all()  # constant pixels exist and stay finite
  np.testing.assert_allclose(std[varying], 1.0, rtol=1e-4)
  x_tr, x_te = digits_ds.x_train.astype(np.float64), digits_ds.x_test.astype(np.float64)
  sd = np.where(varying, x_tr.std(0), 1.0)
  np.testing.assert_allclose(st.x_test, (x_te - x_tr.mean(0)) / sd, rtol=1e-6, atol=1e-6)


# --- errors: the exact message a user gets ---


@pytest.mark.parametrize("fn,kwargs,message", [
    (teacher_student, dict(n_train=0), "n_train must be an integer >= 1, got 0."),
    (teacher_student, dict(n_test=2.5), "n_test must be an integer >= 1, got 2.5."),
    (teacher_student, dict(noise=-1.0), "noise must be a finite number >= 0, got -1.0."),
    (teacher_student, dict(activation="gelu"),
     "activation must be one of 'relu', 'tanh', 'linear', got 'gelu'."),
    (teacher_student, dict(seed=-1), "seed must be a non-negative integer, got -1."),
    (gaussian_mixture, dict(num_classes=1), "num_classes must be an integer >= 2, got 1."),
    (gaussian_mixture, dict(separation=float("nan")),
     "separation must be a finite number >= 0, got nan."),
    (modular_arithmetic, dict(p=1), "p must be an integer >= 2, got 1."),
    (modular_arithmetic, dict(op="pow"),
     "op must be one of 'add', 'sub', 'mul', 'div', got 'pow'."),
    (modular_arithmetic, dict(p=12, op="div"),
     "op='div' needs a prime modulus so every b != 0 has an inverse, got p=12; "
     "use a prime such as 97 or 113."),
    (modular_arithmetic, dict(train_fraction=1.0),
     "train_fraction must be a number strictly between 0 and 1, got 1.0."),
    (modular_arithmetic, dict(p=2, train_fraction=0.1),
     "train_fraction=0.1 splits the 4 pairs of p=2 into 0 train and 4 test; pick a "
     "fraction that leaves both non-empty."),
    (low_rank_matrix, dict(n=3, m=4, rank=4),
     "rank=4 exceeds min(n, m)=3; an n x m matrix has rank at most min(n, m)."),
    (low_rank_matrix, dict(observed_fraction=0),
     "observed_fraction must be a number strictly between 0 and 1, got 0."),
    (low_rank_matrix, dict(n=2, m=2, observed_fraction=0.01),
     "observed_fraction=0.01 observes 0 of the 4 entries; pick a fraction that leaves "
     "both observed and unobserved entries."),
    (digits, dict(test_fraction=0.0),
     "test_fraction must be a number strictly between 0 and 1, got 0.0."),
    (digits, dict(flatten="yes"), "flatten must be True or False, got 'yes'."),
])
def test_loader_argument_errors(fn, kwargs, message):
  with pytest.raises(DataError) as e:
    fn(**kwargs)
  assert str(e.value) == message


def test_load_errors():
  with pytest.raises(DataError) as e:
    load("cifar10")
  assert str(e.value) == ("unknown dataset 'cifar10'; available: digits, fashion-mnist, "
                          "gaussian-mixture, low-rank, mnist, mnist1d, modular-arithmetic, "
                          "teacher-student.")
  with pytest.raises(DataError) as e:
    load("digits", test_size=0.2)
  assert str(e.value) == ("dataset 'digits' got unknown argument(s) test_size; accepted: "
                          "test_fraction, seed, flatten, n_train, n_test, classes, label_noise, standardize.")
  with pytest.raises(DataError) as e:
    load("modular-arithmetic", p="97")
  assert str(e.value) == "p must be an integer >= 2, got '97'."
  with pytest.raises(DataError) as e:
    load("gaussian-mixture", separation=None)
  assert str(e.value) == "separation must be a finite number >= 0, got None."


@pytest.mark.parametrize("changes,message", [
    (dict(y_train=np.array([0, 1, 2], np.int32)),
     "x_train has 4 examples but y_train has 3; give every input exactly one label."),
    (dict(x_test=np.full((2, 3), np.nan, np.float32)),
     "x_test contains NaN or inf; remove or impute those entries before building the "
     "Dataset."),
    (dict(y_train=np.array([0, 1, 3, 1], np.int32)),
     "y_train has labels in [0, 3] but num_classes=3; relabel classes to 0..2 or raise "
     "num_classes."),
    (dict(y_test=np.array([-1, 0], np.int32)),
     "y_test has labels in [-1, 0] but num_classes=3; relabel classes to 0..2 or raise "
     "num_classes."),
    (dict(x_train=np.zeros((0, 3), np.float32), y_train=np.zeros((0,), np.int32)),
     "x_train is empty; a Dataset needs at least one training and one test example."),
    (dict(x_train=[[0.0] * 3] * 4),
     "x_train must be a numpy array, got list; wrap it with np.asarray."),
    (dict(x_test=np.zeros((2, 4), np.float32)),
     "x_train has input shape (3,) but x_test has (4,); both splits must share one input "
     "shape."),
    (dict(y_train=np.zeros((4,), np.float32)),
     "y_train must be a 1-D integer array of class labels for a classification Dataset, "
     "got float32(4,); set num_classes=None for regression targets."),
    (dict(num_classes=None),
     "y_train must be a 2-D float array (n, out_dim) for a regression Dataset, got "
     "int32(4,); set num_classes for integer class labels."),
    (dict(num_classes=0),
     "num_classes must be a positive integer or None (regression), got 0."),
])
def test_validate_errors(changes, message):
  with pytest.raises(DataError) as e:
    validate(_toy(**changes))
  assert str(e.value) == message


def test_transform_errors():
  reg = teacher_student(n_train=8, n_test=4)
  with pytest.raises(DataError) as e:
    with_label_noise(reg, 0.1, seed=0)
  assert str(e.value) == ("label noise needs a classification dataset, but "
                          "'teacher-student' is regression; add noise to regression "
                          "targets instead (e.g. teacher_student(noise=...)).")
  cls = _toy()
  with pytest.raises(DataError) as e:
    with_label_noise(cls, 1.5, seed=0)
  assert str(e.value) == "rate must be a number in [0, 1], got 1.5."
  with pytest.raises(DataError) as e:
    subset(cls, n_train=5)
  assert str(e.value) == ("n_train=5 exceeds the 4 train examples available; pass "
                          "n_train <= 4.")
  with pytest.raises(DataError) as e:
    subset(cls, classes=[0, 3])
  assert str(e.value) == ("classes [3] are not labels of 'toy', which has num_classes=3; "
                          "pick labels in 0..2.")
  with pytest.raises(DataError) as e:
    subset(cls, classes=[1, 1])
  assert str(e.value) == "classes has repeated labels [1, 1]; list each class once."
  with pytest.raises(DataError) as e:
    subset(reg, classes=[0])
  assert str(e.value) == ("classes= needs a classification dataset, but 'teacher-student' "
                          "is regression; drop the classes argument.")
  with pytest.raises(DataError) as e:
    standardize(modular_arithmetic(p=5))
  assert str(e.value) == ("standardize needs float inputs, but 'modular-arithmetic' has "
                          "int32 token ids; embed or one-hot them first (e.g. "
                          "one_hot_pairs).")
  with pytest.raises(DataError) as e:
    one_hot_pairs(reg, 5)
  assert str(e.value) == ("one_hot_pairs needs int token inputs of shape (3,) as made by "
                          "modular_arithmetic, got float32(16,).")
  with pytest.raises(DataError) as e:
    one_hot_pairs(modular_arithmetic(p=7), 5)
  assert str(e.value) == ("x_train has operands outside [0, 5); pass the p the dataset "
                          "was built with.")


# --- pooled MNIST / Fashion-MNIST images ---


@pytest.fixture
def tiny_idx(monkeypatch, tmp_path):
  """A 6x6-image stand-in for MNIST in ``tmp_path/mnist`` (its spec replaces the real one)."""
  rng = np.random.default_rng(0)
  arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (8, 6, 6), dtype=np.uint8),
            "train-labels-idx1-ubyte": (np.arange(8) % 10).astype(np.uint8),
            "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 6, 6), dtype=np.uint8),
            "t10k-labels-idx1-ubyte": (np.arange(4) % 10).astype(np.uint8)}
  (tmp_path / "mnist").mkdir()
  spec = []
  for name, a in arrays.items():
    path = tmp_path / "mnist" / name
    data.write_idx(str(path), a)
    spec.append(files.IdxFile(name, a.shape, hashlib.sha256(path.read_bytes()).hexdigest()))
  monkeypatch.setitem(files.IDX_SETS, "mnist", tuple(spec))
  return str(tmp_path), arrays


def test_mnist_pool_averages_blocks(tiny_idx):
  root, arrays = tiny_idx
  full = data.mnist(data_dir=root, flatten=False)
  for pool in (2, 3):
    ds = data.mnist(data_dir=root, pool=pool)
    assert ds.input_shape == ((6 // pool) ** 2,)
    x = arrays["train-images-idx3-ubyte"].astype(np.float64) / 255
    k = 6 // pool
    brute = [[x[:, i * pool:(i + 1) * pool, j * pool:(j + 1) * pool].mean((1, 2))
              for j in range(k)] for i in range(k)]
    np.testing.assert_allclose(ds.x_train, np.moveaxis(np.array(brute), 2, 0).reshape(8, -1),
                               rtol=1e-6)
  img = data.mnist(data_dir=root, pool=2, flatten=False, n_train=5)
  assert img.input_shape == (3, 3, 1) and len(img.y_train) == 5
  assert data.mnist(data_dir=root, pool=1).x_train.shape == (8, 36)
  np.testing.assert_array_equal(data.mnist(data_dir=root, pool=6).x_train[:, 0],
                                full.x_train.mean((1, 2, 3)))


@pytest.mark.parametrize("pool,message", [
    (0, "pool must be a positive integer (1: full resolution), got 0."),
    (2.0, "pool must be a positive integer (1: full resolution), got 2.0."),
    (True, "pool must be a positive integer (1: full resolution), got True."),
    (4, "pool=4 does not divide the 6x6 images of 'mnist'; pick one of 1, 2, 3, 6."),
])
def test_mnist_pool_errors(tiny_idx, pool, message):
  with pytest.raises(DataError) as e:
    load("mnist", data_dir=tiny_idx[0], pool=pool)
  assert str(e.value) == message


def test_pool_is_an_option_of_the_image_sets_only():
  with pytest.raises(DataError, match="dataset 'digits' got unknown argument"):
    load("digits", pool=2)
