"""Every error jaxtheory raises on purpose, in one hierarchy.

Each says in one sentence what is wrong and how to fix it, so the command line
can print it as a single ``error: ...`` line and the Python API can catch it by
kind. All are :class:`JaxtheoryError`; the ones about a user's input are also
:class:`ValueError` (as Python's own argument errors are)::

    JaxtheoryError
      ConfigError          a setting, grid or option that cannot run
        CheckpointError    a checkpoint that is corrupt, truncated or of another sweep
        OutputError        an output that cannot be written or read back
          FolderBusyError  an output folder another live run holds
      DataError            missing or malformed data

>>> from jaxtheory.errors import CheckpointError, ConfigError, JaxtheoryError
>>> issubclass(CheckpointError, ConfigError) and issubclass(ConfigError, JaxtheoryError)
True
"""

from __future__ import annotations


class JaxtheoryError(Exception):
  """Base of every error jaxtheory raises deliberately."""


class ConfigError(JaxtheoryError, ValueError):
  """A training, sweep or experiment configuration that cannot run."""


class DataError(JaxtheoryError, ValueError):
  """Missing or malformed data, with a sentence saying how to fix it."""


class CheckpointError(ConfigError):
  """A checkpoint that cannot be used (corrupt, truncated, or of another sweep)."""


class OutputError(ConfigError):
  """An output folder or file that cannot be written or read back (permissions, disk full, truncated)."""


class FolderBusyError(OutputError):
  """An output folder (or checkpoint) that another live run is writing."""
