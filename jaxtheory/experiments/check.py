"""The signature check an experiment reports (PASS/FAIL with what it measured)."""

from typing import NamedTuple

from jaxtheory.train import ConfigError


class Check(NamedTuple):
  """One signature check of an experiment: what, whether it held, and the measured numbers."""
  name: str
  passed: bool
  measured: str

  def line(self) -> str:
    return f"{'PASS' if self.passed else 'FAIL'}  {self.name}: {self.measured}"


def timing_rows(ds) -> list[tuple[str, str]]:
  """The summary rows every experiment ends with: compile and run seconds of its sweeps."""
  return [(key, f"{ds.attrs.get(f'{key}_seconds', float('nan')):.1f} s")
          for key in ("compile", "run")]


def positive_ints(cfg, *names: str) -> None:
  """Raises :class:`ConfigError` unless every named field of ``cfg`` is an integer >= 1."""
  for name in names:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ConfigError(f"{name} must be a positive integer, got {v!r}")
