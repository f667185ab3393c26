"""Output folders and files: ownership by a lock, atomic writes, one-sentence errors.

A sweep's output (``results.nc``, ``checkpoint.npz``, ``config.json``,
figures) must never be lost or mixed with another run's:

* :func:`lock` holds an exclusive ``fcntl`` lock for as long as a run writes
  into a folder (or a checkpoint); a second run is refused at once with a
  sentence naming the holder (pid, host, start time). The kernel drops the
  lock when its process dies, however it dies, so a killed run never leaves
  a folder locked.
* :func:`write_atomic` writes a temporary file named after its owner
  (``<name>.<pid>.<token>.<host>.tmp``), flushes it to disk and renames it
  over the target, so a reader sees the old or the new file, never a torn
  one; the owner removes its temporary on any error, and
  :func:`sweep_stale` removes those of dead processes on this host only,
  never a live process's in-flight file.
* Files are created with mode ``0o666`` minus the umask, like any other file.
* Operating-system failures (permissions, a full disk, a path under a file)
  become :class:`OutputError`, one sentence saying what was not written and
  that the previous file is intact.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import io
import json
import os
import re
import secrets
import socket
from collections.abc import Callable, Iterator

from jaxtheory.errors import FolderBusyError, OutputError


def reason(e: OSError) -> str:
  """The operating system's words for ``e`` (``'No space left on device'``)."""
  return e.strerror or (os.strerror(e.errno) if e.errno else str(e))


def _host() -> str:
  return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def ensure_dir(folder: str | os.PathLike, what: str = "the output folder") -> str:
  """Creates ``folder`` (and parents) if needed; checks that files can be created in it.

  Raises:
    OutputError: the folder cannot be created (e.g. a path under a file) or
      is not writable.
  """
  folder = os.path.abspath(os.fspath(folder))
  try:
    os.makedirs(folder, exist_ok=True)
  except FileExistsError:
    raise OutputError(f"cannot use {folder} as {what}: a file of that name is in the way") from None
  except OSError as e:
    raise OutputError(f"cannot create {what} {folder}: {reason(e)}") from None
  probe = _temp_name(os.path.join(folder, ".write-probe"))
  try:
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    os.remove(probe)
  except OSError as e:
    raise OutputError(f"cannot write into {what} {folder}: {reason(e)}") from None
  return folder


def _temp_name(path: str) -> str:
  return f"{path}.{os.getpid()}.{secrets.token_hex(4)}.{_host()}.tmp"


def _owner(name: str) -> tuple[int, str] | None:
  """``(pid, host)`` of a temporary named by :func:`_temp_name`, else None."""
  m = re.fullmatch(r".+\.(\d+)\.[0-9a-f]{8}\.([A-Za-z0-9-]+)\.tmp", name)
  return (int(m.group(1)), m.group(2)) if m else None


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by someone else
    return True
  return True


def sweep_stale(folder: str | os.PathLike) -> list[str]:
  """Removes temporaries left in ``folder`` by dead processes of this host; returns them.

  A temporary of a live process, of another host (a shared file system) or
  not named by this module is left alone.
  """
  folder = os.fspath(folder)
  removed = []
  try:
    names = os.listdir(folder)
  except OSError:
    return removed
  host = _host()
  for name in names:
    owner = _owner(name)
    if owner is None or owner[1] != host or owner[0] == os.getpid() or _alive(owner[0]):
      continue
    with contextlib.suppress(OSError):
      os.remove(os.path.join(folder, name))
      removed.append(name)
  return removed


class _FdFile(io.RawIOBase):
  """A seekable binary file over a descriptor whose writes go through ``os.write``."""

  def __init__(self, fd: int):
    super().__init__()
    self.fd = fd

  def writable(self):
    return True

  def seekable(self):
    return True

  def write(self, b):
    return os.write(self.fd, b)

  def seek(self, offset, whence=os.SEEK_SET):
    return os.lseek(self.fd, offset, whence)

  def tell(self):
    return os.lseek(self.fd, 0, os.SEEK_CUR)


def write_atomic(path: str | os.PathLike, write: Callable[[io.BufferedIOBase], None],
                 what: str = "file") -> str:
  """Writes ``path`` by ``write(file)`` into an owned temporary, fsync, rename.

  Raises:
    OutputError: any operating-system failure (the previous ``path``, if
      any, is left as it was and the temporary is removed).
  """
  path = os.path.abspath(os.fspath(path))
  if not os.path.isdir(os.path.dirname(path)):  # (the write itself says if it cannot write)
    ensure_dir(os.path.dirname(path), f"the folder of the {what}")
  tmp = _temp_name(path)
  try:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
      with io.BufferedWriter(_FdFile(fd), 1 << 20) as f:
        write(f)
        f.flush()
        os.fsync(fd)
    finally:
      with contextlib.suppress(OSError):
        os.close(fd)
    os.replace(tmp, path)
  except OSError as e:
    kept = " (the previous one is intact)" if os.path.exists(path) else ""
    raise OutputError(f"cannot write the {what} {path}: {reason(e)}{kept}") from None
  finally:
    with contextlib.suppress(OSError):
      os.remove(tmp)
  return path


def write_bytes(path: str | os.PathLike, data: bytes | memoryview, what: str = "file") -> str:
  """:func:`write_atomic` of a bytes object."""
  return write_atomic(path, lambda f: f.write(data), what)


def _holder(fd: int) -> str:
  try:
    info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    return f"pid {info['pid']} on {info['host']}, started {info['start']}"
  except (OSError, ValueError, KeyError, TypeError):
    return "holder unknown"


@contextlib.contextmanager
def lock(path: str | os.PathLike, what: str) -> Iterator[str]:
  """Holds an exclusive lock on file ``path`` (created, removed on release).

  Args:
    path: the lock file, e.g. ``<out>/.lock``.
    what: what it guards, for the message (``'the output folder runs/x'``).

  Raises:
    FolderBusyError: another live process holds it (naming pid, host and
      start time).
    OutputError: the lock file cannot be created.
  """
  import fcntl  # pylint: disable=import-outside-toplevel  # POSIX only
  path = os.path.abspath(os.fspath(path))
  ensure_dir(os.path.dirname(path))
  while True:
    try:
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
      raise OutputError(f"cannot create the lock file {path}: {reason(e)}") from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      held = _holder(fd)
      os.close(fd)
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise OutputError(f"cannot lock {path}: {reason(e)}") from None
      raise FolderBusyError(f"{what} is in use by another run ({held}); wait for it to "
                            "finish or choose another output") from None
    try:  # a releasing holder may have removed the file we opened: lock the new one
      same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
      same = False
    if same:
      break
    os.close(fd)
  try:
    start = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(dict(pid=os.getpid(), host=socket.gethostname(),
                                  start=start)).encode(), 0)
  except OSError:
    pass  # the lock holds without the note; a refused run then says "holder unknown"
  try:
    yield path
  finally:
    with contextlib.suppress(OSError):
      os.remove(path)
    os.close(fd)
