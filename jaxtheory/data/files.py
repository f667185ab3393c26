"""Data files on disk: the data directory, IDX parsing and SHA-256 verification.

The real image sets (MNIST, Fashion-MNIST) are four IDX files each, raw or
gzipped, kept under ``<data dir>/<set name>/``. The data directory is
``$JAXTHEORY_DATA`` when set, else ``$XDG_CACHE_HOME/jaxtheory`` (default
``~/.cache/jaxtheory``); Fashion-MNIST is also found where Debian's
``dataset-fashion-mnist`` package installs it. Every file is checked before
use (magic number, size against its header, expected shape, SHA-256 of the
uncompressed bytes), so a damaged file is reported by name with what is wrong,
never as an exception from deep inside numpy. :mod:`jaxtheory.data.sources`
puts the files there.

IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a
type code (0x08 ubyte, 0x09 byte, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64), the number of dimensions ``r``, then ``r`` big-endian uint32
sizes and the row-major big-endian payload.

>>> import os, tempfile, numpy as np
>>> path = os.path.join(tempfile.mkdtemp(), "toy-idx1-ubyte.gz")
>>> write_idx(path, np.arange(5, dtype=np.uint8))
>>> read_idx(path)
array([0, 1, 2, 3, 4], dtype=uint8)
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from typing import NamedTuple

import numpy as np

from jaxtheory.data.core import DataError

IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
             0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_CODES = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}


class IdxFile(NamedTuple):
  """One IDX file of a dataset: its name (without ``.gz``), array shape and SHA-256.

  The checksum is of the *uncompressed* bytes, so a raw file and any gzip of it
  (the Debian package recompresses Fashion-MNIST) verify alike.
  """

  name: str
  shape: tuple[int, ...]
  sha256: str


# The official files (http://yann.lecun.com/exdb/mnist/, https://github.com/zalandoresearch/fashion-mnist).
# Checksums of the uncompressed files, as widely published; the npm and Debian copies match them.
IDX_SETS: dict[str, tuple[IdxFile, ...]] = {
    "mnist": (
        IdxFile("train-labels-idx1-ubyte", (60000,),
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        IdxFile("train-images-idx3-ubyte", (60000, 28, 28),
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        IdxFile("t10k-labels-idx1-ubyte", (10000,),
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
        IdxFile("t10k-images-idx3-ubyte", (10000, 28, 28),
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    ),
    "fashion-mnist": (
        IdxFile("train-labels-idx1-ubyte", (60000,),
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        IdxFile("train-images-idx3-ubyte", (60000, 28, 28),
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        IdxFile("t10k-labels-idx1-ubyte", (10000,),
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
        IdxFile("t10k-images-idx3-ubyte", (10000, 28, 28),
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    ),
}

# Where system packages install a set (Debian/Ubuntu: `apt install dataset-fashion-mnist`).
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "mnist": (),
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist",),
}


def data_dir() -> str:
  """The default data directory: ``$JAXTHEORY_DATA``, else ``$XDG_CACHE_HOME/jaxtheory`` (``~/.cache/jaxtheory``)."""
  if os.environ.get("JAXTHEORY_DATA"):
    return os.path.expanduser(os.environ["JAXTHEORY_DATA"])
  cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(cache, "jaxtheory")


def fetch_command(name: str, root: str | None = None, force: bool = False) -> str:
  """The shell command that installs set ``name`` (into ``root`` when not the default)."""
  cmd = f"jaxtheory data fetch {name}"
  if root is not None:
    cmd += f" --dir {root}"
  return cmd + (" --force" if force else "")


def sha256_bytes(data: bytes) -> str:
  """Hex SHA-256 of ``data``."""
  return hashlib.sha256(data).hexdigest()


# --- IDX ---


def _corrupt(path: str, what: str, hint: str | None) -> DataError:
  return DataError(f"{path} is corrupt: {what}" + (f"; {hint}." if hint else "."))


def read_bytes(path: str, hint: str | None = None) -> bytes:
  """The uncompressed contents of ``path`` (gunzipped when the name ends in ``.gz``).

  Raises:
    DataError: for an unreadable file or a bad or truncated gzip stream.
  """
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise DataError(f"cannot read {path}: {e.strerror or e}.") from e
  if not path.endswith(".gz"):
    return raw
  if raw[:2] != b"\x1f\x8b":
    raise _corrupt(path, f"not a gzip file (it starts with {raw[:2].hex() or 'nothing'}, "
                         f"gzip starts with 1f8b)", hint)
  try:
    return gzip.decompress(raw)
  except EOFError as e:
    raise _corrupt(path, "truncated gzip stream (the file ends before the compressed "
                         "data does)", hint) from e
  except (OSError, zlib.error) as e:
    raise _corrupt(path, f"bad gzip data ({e})", hint) from e


def parse_idx(data: bytes, path: str = "<bytes>", hint: str | None = None) -> np.ndarray:
  """Parses the bytes of an IDX file into a native-endian numpy array.

  Args:
    data: the uncompressed file contents.
    path: the file's name, for error messages.
    hint: what the user should do about a bad file, appended to errors.

  Returns:
    The array, with the shape and dtype given by the header.

  Raises:
    DataError: for a bad magic number, a payload shorter (truncated) or
      longer than the header declares.
  """
  if len(data) < 4:
    raise _corrupt(path, f"{len(data)} bytes, too short for an IDX header", hint)
  zero, code, ndim = struct.unpack(">HBB", data[:4])
  if zero != 0 or code not in IDX_TYPES:
    raise _corrupt(path, f"bad magic number 0x{data[:4].hex()} (an IDX file starts with "
                         f"0x0000, a type code 08/09/0b/0c/0d/0e and its rank)", hint)
  header = 4 + 4 * ndim
  if len(data) < header:
    raise _corrupt(path, f"truncated header ({len(data)} bytes, the {ndim} dimensions "
                         f"need {header})", hint)
  shape = struct.unpack(f">{ndim}I", data[4:header])
  dtype = IDX_TYPES[code]
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  got = len(data) - header
  dims = "x".join(map(str, shape)) or "scalar"
  if got < expected:
    raise _corrupt(path, f"truncated payload: the header declares {dims} {dtype.name} "
                         f"({expected} bytes) but only {got} follow", hint)
  if got > expected:
    raise _corrupt(path, f"wrong size: {got - expected} bytes beyond the {expected} the "
                         f"header ({dims} {dtype.name}) declares", hint)
  return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(
      dtype.newbyteorder("="), copy=False)


def read_idx(path: str, shape: tuple[int, ...] | None = None, sha256: str | None = None,
             hint: str | None = None) -> np.ndarray:
  """Reads an IDX file (raw, or gzip when the name ends in ``.gz``), checking it.

  Args:
    path: the file.
    shape: if given, the shape the file must hold.
    sha256: if given, the hex SHA-256 the uncompressed contents must have.
    hint: what the user should do about a bad file, appended to errors.

  Returns:
    The array.

  Raises:
    DataError: naming the file and what is wrong with it (bad gzip, bad magic,
      truncated or oversized payload, unexpected shape, checksum mismatch).
  """
  data = read_bytes(path, hint)
  array = parse_idx(data, path, hint)
  if shape is not None and array.shape != tuple(shape):
    raise _corrupt(path, f"it holds shape {array.shape}, expected {tuple(shape)}", hint)
  if sha256 is not None:
    got = sha256_bytes(data)
    if got != sha256:
      raise _corrupt(path, f"SHA-256 checksum mismatch (got {got}, expected {sha256})", hint)
  return array


def write_idx(path: str, array: np.ndarray) -> None:
  """Writes ``array`` as an IDX file, gzipped when ``path`` ends in ``.gz``."""
  array = np.asarray(array)
  code = _IDX_CODES.get(array.dtype.newbyteorder("="))
  if code is None:
    raise DataError(f"IDX cannot hold dtype {array.dtype}; use one of "
                    f"{', '.join(str(d) for d in _IDX_CODES)}.")
  data = (struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
          + array.astype(IDX_TYPES[code], copy=False).tobytes())
  with open(path, "wb") as f:
    f.write(gzip.compress(data, compresslevel=6, mtime=0) if path.endswith(".gz") else data)


# --- a set of IDX files in a directory ---


def find_file(folder: str, name: str) -> str | None:
  """``folder/name`` or ``folder/name.gz`` (raw preferred), or None."""
  for candidate in (name, name + ".gz"):
    path = os.path.join(folder, candidate)
    if os.path.isfile(path):
      return path
  return None


def candidate_dirs(name: str, root: str | None = None) -> list[str]:
  """Where set ``name`` is looked for: ``root/name`` alone when ``root`` is given, else the default data dir then system dirs."""
  if root is not None:
    return [os.path.join(root, name)]
  return [os.path.join(data_dir(), name), *SYSTEM_DIRS.get(name, ())]


def locate(name: str, root: str | None = None) -> str | None:
  """The first candidate directory holding any file of set ``name``, or None.

  Raises:
    DataError: a candidate directory exists but cannot be read (it is not
      reported as missing: fetching again would not help).
  """
  for folder in candidate_dirs(name, root):
    try:
      os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
      continue
    except OSError as e:
      raise DataError(f"cannot read the data folder {folder}: {e.strerror or e}; fix its "
                      "permissions or point $JAXTHEORY_DATA elsewhere.") from None
    if any(find_file(folder, f.name) for f in IDX_SETS[name]):
      return folder
  return None


def missing_message(name: str, root: str | None = None) -> str:
  where = " or ".join(candidate_dirs(name, root))
  return (f"dataset {name!r} is not present (looked in {where}); get it with "
          f"`{fetch_command(name, root)}`.")


def read_set(name: str, root: str | None = None, folder: str | None = None,
             hint: str | None = None) -> dict[str, np.ndarray]:
  """Reads and verifies every IDX file of set ``name``.

  Args:
    name: a key of :data:`IDX_SETS`.
    root: the data directory (``None``: the default one and system dirs).
    folder: read exactly this folder instead of searching.
    hint: what to do about a bad file (default: delete it and fetch again).

  Returns:
    ``{file name: array}`` for the files of :data:`IDX_SETS` ``[name]``.

  Raises:
    DataError: if the set is absent (saying how to fetch it), incomplete, or
      any file is corrupt (naming the file and the problem).
  """
  folder = folder or locate(name, root)
  if folder is None:
    raise DataError(missing_message(name, root))
  paths = {}
  for spec in IDX_SETS[name]:
    paths[spec.name] = find_file(folder, spec.name)
    if paths[spec.name] is None:
      raise DataError(f"dataset {name!r} in {folder} is incomplete: {spec.name} (or "
                      f"{spec.name}.gz) is missing; get it with `{fetch_command(name, root)}`.")
  hint = hint or f"delete it and run `{fetch_command(name, root)}`"
  return {spec.name: read_idx(paths[spec.name], spec.shape, spec.sha256, hint)
          for spec in IDX_SETS[name]}
