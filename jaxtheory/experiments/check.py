"""The signature check an experiment reports (PASS/FAIL with what it measured)."""

from typing import NamedTuple


class Check(NamedTuple):
  """One signature check of an experiment: what, whether it held, and the measured numbers."""
  name: str
  passed: bool
  measured: str

  def line(self) -> str:
    return f"{'PASS' if self.passed else 'FAIL'}  {self.name}: {self.measured}"
