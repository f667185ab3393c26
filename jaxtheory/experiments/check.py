"""The signature check an experiment reports (PASS/FAIL with what it measured)."""

from typing import NamedTuple

from jaxtheory.errors import ConfigError


class Check(NamedTuple):
  """One signature check of an experiment: what, whether it held, and the measured numbers.

  A ``skipped`` check was not judged (``passed`` is then False): the grid
  lacks what it compares (one seed, one learning rate), the run never got
  where the check looks (an edge not reached in the budget), or training
  failed (see :func:`jaxtheory.analysis.optimization_status`), so the
  phenomenon's absence cannot be read from it. Its line starts ``SKIP``.
  """
  name: str
  passed: bool
  measured: str
  skipped: bool = False

  def line(self) -> str:
    tag = "SKIP" if self.skipped else "PASS" if self.passed else "FAIL"
    return f"{tag}  {self.name}: {self.measured}"


def skip(name: str, why: str) -> Check:
  """A check that was not judged, saying why."""
  return Check(name, False, why, skipped=True)


def timing_rows(ds) -> list[tuple[str, str]]:
  """The summary rows every experiment ends with: compile and run seconds of its sweeps."""
  return [(key, f"{ds.attrs.get(f'{key}_seconds', float('nan')):.1f} s")
          for key in ("compile", "run")]


def seed_list(seeds) -> list[int]:
  """The seeds of a ``seeds`` config field: a count ``k`` (seeds ``0..k-1``) or explicit seeds.

  >>> seed_list(3), seed_list((5, 7))
  ([0, 1, 2], [5, 7])
  """
  if isinstance(seeds, bool):
    raise ConfigError(f"seeds must be a count or a list of seeds, got {seeds!r}")
  if isinstance(seeds, int):
    if seeds < 1:
      raise ConfigError(f"seeds must be a positive integer, got {seeds!r} (or a list of "
                        f"seeds, e.g. seeds=5,7)")
    return list(range(seeds))
  out = [int(s) for s in seeds]
  if not out or any(s < 0 for s in out) or len(set(out)) != len(out):
    raise ConfigError(f"seeds must be a positive count or distinct seeds >= 0, got {seeds!r}")
  return out


def positive_ints(cfg, *names: str) -> None:
  """Raises :class:`ConfigError` unless every named field of ``cfg`` is an integer >= 1."""
  for name in names:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ConfigError(f"{name} must be a positive integer, got {v!r}")
