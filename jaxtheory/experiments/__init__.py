"""Experiments: one module per phenomenon, runnable from the command line.

An experiment is a module with

* ``Config``: a frozen dataclass whose fields all have defaults and plain
  types (int, float, str, bool, ``int | None``, tuples of ints or floats);
* ``run(cfg, progress=None, **engine) -> xarray.Dataset`` (``engine``: options of
  :func:`jaxtheory.sweep.run` such as ``strategy``, ``checkpoint``, ``resume``);
* ``summary(ds) -> list[tuple[str, str]]``: rows of a summary table;
* a module docstring whose first line says what it shows;

and optionally

* ``signature(ds) -> list[Check]``: whether the phenomenon's signature
  appears, each check with the numbers it measured (the CLI prints
  PASS/FAIL lines);
* ``figures(ds, out_dir) -> list[str]``: its own PNGs (default:
  :func:`jaxtheory.plots.save_default_figures`).

>>> from jaxtheory.experiments import EXPERIMENTS, configure
>>> cfg = configure(EXPERIMENTS["width-sweep"].Config, {"widths": "16,32", "steps": "100"})
>>> cfg.widths, cfg.steps
((16, 32), 100)
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Mapping

from jaxtheory.experiments.check import Check
from jaxtheory.experiments import (double_descent, edge_of_stability, grokking, kernel_limit,
                                   lazy_rich, matrix_completion, mode_connectivity, mutransfer,
                                   neural_collapse, noisy_labels, platonic, separation, sharpness,
                                   spectral_bias, weight_decay_spectra, wide_vs_deep,
                                   width_sweep)
from jaxtheory.errors import ConfigError

EXPERIMENTS: dict[str, types.ModuleType] = {
    "width-sweep": width_sweep,
    "kernel-limit": kernel_limit,
    "grokking": grokking,
    "matrix-completion": matrix_completion,
    "double-descent": double_descent,
    "neural-collapse": neural_collapse,
    "edge-of-stability": edge_of_stability,
    "separation": separation,
    "mode-connectivity": mode_connectivity,
    "noisy-labels": noisy_labels,
    "spectral-bias": spectral_bias,
    "sharpness": sharpness,
    "lazy-rich": lazy_rich,
    "mutransfer": mutransfer,
    "wide-vs-deep": wide_vs_deep,
    "weight-decay-spectra": weight_decay_spectra,
    "platonic": platonic,
}

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
_NONE = ("none", "null", "")


def _parse_scalar(tp, text: str):
  """``text`` as a value of type ``tp``; raises ValueError when it is not one."""
  if tp is bool:
    if text.lower() in _TRUE:
      return True
    if text.lower() in _FALSE:
      return False
    raise ValueError(text)
  if tp is int:
    return int(text)
  if tp is float:
    return float(text)
  if tp is str:
    return text
  raise TypeError(f"unsupported config field type {tp!r}")


_DESCRIBE = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _parse(key: str, tp, text: str):
  """Parses one ``--set`` value against the field type ``tp``."""
  origin, args = typing.get_origin(tp), typing.get_args(tp)
  if origin in (typing.Union, types.UnionType) and set(args) == {int, tuple[int, ...]}:
    # A count or explicit values (``seeds=3`` or ``seeds=5,7``; ``[3]`` is the one value 3).
    body = text.strip()
    if "," in body or body[:1] + body[-1:] in ("[]", "()"):
      return _parse(key, tuple[int, ...], text)
    try:
      return int(body)
    except ValueError:
      raise ConfigError(f"{key} must be an integer count or a comma-separated list of "
                        f"integers (e.g. {key}=3 or {key}=5,7), got {text!r}") from None
  if origin in (typing.Union, types.UnionType):
    inner = [a for a in args if a is not type(None)]
    if len(inner) != 1 or len(args) != 2:
      raise TypeError(f"unsupported config field type {tp!r} for {key}")
    if text.strip().lower() in _NONE:
      return None
    if typing.get_origin(inner[0]) is tuple:  # values, or none (e.g. transformer_widths)
      return _parse(key, inner[0], text)
    try:
      return _parse_scalar(inner[0], text.strip())
    except ValueError:
      raise ConfigError(f"{key} must be {_DESCRIBE[inner[0]]} or none, got {text!r}") from None
  if origin is tuple:
    elem = args[0]
    if len(args) != 2 or args[1] is not Ellipsis:
      raise TypeError(f"unsupported config field type {tp!r} for {key}")
    body = text.strip()
    if body[:1] + body[-1:] in ("[]", "()"):
      body = body[1:-1]
    items = [t.strip() for t in body.split(",")] if body.strip() else []
    if items and items[-1] == "":  # a trailing comma, as in "16,"
      items = items[:-1]
    try:
      return tuple(_parse_scalar(elem, t) for t in items)
    except ValueError:
      example = "16,32,64" if elem is int else "0.1,0.3,1"
      raise ConfigError(f"{key} must be a comma-separated list of "
                        f"{_DESCRIBE[elem].split(' ', 1)[1]}s (e.g. {key}={example}), "
                        f"got {text!r}") from None
  try:
    return _parse_scalar(tp, text.strip() if tp is not str else text)
  except ValueError:
    raise ConfigError(f"{key} must be {_DESCRIBE[tp]}, got {text!r}") from None


def configure(cfg_cls: type, overrides: Mapping[str, str],
              preset: Mapping[str, object] | None = None):
  """Builds ``cfg_cls`` from its defaults and ``key -> text`` overrides.

  Texts are parsed against the dataclass field types: ``int``, ``float``,
  ``str``, ``bool`` (true/false/1/0/yes/no), ``int | None`` (``none`` for
  None), tuples of ints or floats (``16,32,64`` or ``[16,32,64]``) and
  ``int | tuple[int, ...]`` (a count ``3`` or values ``5,7``; ``[3]`` is the
  single value 3).

  Args:
    cfg_cls: a frozen config dataclass.
    overrides: field name -> value as typed on the command line.
    preset: field name -> value (typed) applied first, e.g. an entry of an
      experiment's ``PRESETS`` (a paper's settings); ``overrides`` win.

  Returns:
    The config instance.

  Raises:
    ConfigError: for an unknown key (listing the valid keys) or a value that
      does not parse as the field's type (saying the expected type).
  """
  hints = typing.get_type_hints(cfg_cls)
  fields = [f.name for f in dataclasses.fields(cfg_cls)]
  values = dict(preset or {})
  for key in values:
    if key not in fields:
      raise ConfigError(f"unknown config key {key!r} in the preset; valid keys: "
                        f"{', '.join(fields)}")
  for key, text in overrides.items():
    if key not in fields:
      raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(fields)}")
    values[key] = _parse(key, hints[key], text)
  return cfg_cls(**values)


def format_value(value) -> str:
  """A config value as typed after ``--set key=`` (tuples as ``16,32``, None as ``none``)."""
  if value is None:
    return "none"
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, tuple):
    return ",".join(format_value(v) for v in value)
  return repr(value) if isinstance(value, float) else str(value)


def _type_text(tp) -> str:
  origin, args = typing.get_origin(tp), typing.get_args(tp)
  if origin in (typing.Union, types.UnionType):
    return " or ".join("none" if a is type(None) else _type_text(a) for a in args)
  if origin is tuple:
    return f"list of {_type_text(args[0])}"
  return getattr(tp, "__name__", str(tp))


def _attributes(doc: str) -> dict[str, str]:
  """``name -> meaning`` from the ``Attributes:`` section of a Google-style docstring."""
  out, name, lines = {}, None, doc.splitlines()
  start = next((i for i, l in enumerate(lines) if l.strip() == "Attributes:"), None)
  if start is None:
    return out
  indent = None
  for line in lines[start + 1:]:
    if not line.strip():
      continue
    depth = len(line) - len(line.lstrip())
    if indent is None:
      indent = depth
    if depth < indent:  # the next section
      break
    key, colon, text = line.strip().partition(":")
    if depth == indent and colon and key.split(" ")[0].isidentifier():
      name = key.split(" ")[0]
      out[name] = text.strip()
    elif name is not None:
      out[name] += " " + line.strip()
  return out


def describe(cfg_cls: type) -> list[tuple[str, str, str, str]]:
  """``(key, type, default, meaning)`` of every field of a config dataclass.

  The meaning comes from the ``Attributes:`` section of its docstring.

  >>> describe(EXPERIMENTS["width-sweep"].Config)[1]
  ('widths', 'list of int', '16,32,64,128', 'hidden widths to sweep.')
  """
  hints = typing.get_type_hints(cfg_cls)
  meaning = _attributes(inspect.getdoc(cfg_cls) or "")
  cfg = cfg_cls()
  return [(f.name, _type_text(hints[f.name]), format_value(getattr(cfg, f.name)),
           meaning.get(f.name, "")) for f in dataclasses.fields(cfg_cls)]


__all__ = ["EXPERIMENTS", "Check", "configure", "describe", "format_value", "width_sweep"]
