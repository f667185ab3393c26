"""Tests for the command line (jaxtheory.cli) and experiment configuration parsing."""

import dataclasses
import inspect
import json
import os
import subprocess
import sys

import pytest
import xarray as xr
from click.testing import CliRunner

from jaxtheory.cli import cli
from jaxtheory.data import LOADERS
from jaxtheory.experiments import EXPERIMENTS, configure, width_sweep
from jaxtheory.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ("dataset, widths, seeds, depth, activation, parametrization, optimizer, lr, lrs, "
        "steps, batch_size, record")


def _runner() -> CliRunner:
  # click < 8.2 mixes stderr into stdout unless told not to (8.2 removed the argument).
  if "mix_stderr" in inspect.signature(CliRunner).parameters:
    return CliRunner(mix_stderr=False)
  return CliRunner()


def _invoke(*args):
  return _runner().invoke(cli, list(args))


def test_list_shows_experiments():
  res = _invoke("list")
  assert res.exit_code == 0, res.output
  assert "width-sweep" in res.output
  assert "Width sweep" in res.output  # the module's one-line docstring


def test_data_list_shows_every_loader():
  res = _invoke("data", "list")
  assert res.exit_code == 0, res.output
  for name in LOADERS:
    assert name in res.output


@pytest.mark.parametrize("args, message", [
    (["run", "nope"], "unknown experiment 'nope'; available: width-sweep"),
    (["run", "width-sweep", "--set", "depht=3"], f"unknown config key 'depht'; valid keys: {KEYS}"),
    (["run", "width-sweep", "--set", "steps=abc"], "steps must be an integer, got 'abc'"),
    (["run", "width-sweep", "--set", "widths=16,x"],
     "widths must be a comma-separated list of integers (e.g. widths=16,32,64), got '16,x'"),
    (["run", "width-sweep", "--set", "steps"], "--set expects KEY=VALUE, got 'steps'"),
    (["run", "width-sweep", "--set", "activation=foo"],
     "unknown activation 'foo'; available: relu, tanh, erf, gelu, sigmoid, sin, identity"),
    (["run", "width-sweep", "--set", "widths=0,16", "--set", "steps=5"],
     "width must be positive, got 0"),
    (["run", "width-sweep", "--set", "dataset=cifar10"],
     "unknown dataset 'cifar10'; available: digits, fashion-mnist, gaussian-mixture, low-rank, "
     "mnist, mnist1d, modular-arithmetic, teacher-student."),
    (["run", "width-sweep", "--set", "optimizer=adamm", "--set", "steps=5"],
     "unknown optimizer 'adamm'; available: sgd, momentum, sgdw, adam, adamw, sam, muon"),
    (["run", "width-sweep", "--set", "widths=8", "--set", "steps=5", "--memory-budget", "0.01"],
     "one run of width 8 needs about"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
  res = _runner().invoke(cli, args + ["--out", str(tmp_path / "out")])
  assert res.exit_code == 2, res.output
  assert res.stderr.startswith(f"error: {message}") and res.stderr.count("\n") == 1
  assert res.stdout == ""
  assert not (tmp_path / "out").exists()


def test_bad_strategy_is_a_usage_error():
  res = _invoke("run", "width-sweep", "--strategy", "fast")
  assert res.exit_code == 2
  assert "'fast' is not one of" in res.stderr


def test_run_writes_results_figures_and_config(tmp_path):
  out = tmp_path / "ws"
  cmd = [sys.executable, "-m", "jaxtheory", "run", "width-sweep", "--set", "steps=20",
         "--set", "widths=8,16", "--set", "seeds=2", "--out", str(out)]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
  assert proc.returncode == 0, proc.stderr
  with xr.open_dataset(out / "results.nc", engine="h5netcdf") as ds:
    assert ds.test_acc.dims == ("seed", "width", "step")
    assert list(ds.width.values) == [8, 16] and list(ds.seed.values) == [0, 1]
    assert int(ds.step[-1]) == 20
  for png in ("train_loss_by_width.png", "test_loss_by_width.png", "test_acc_by_width.png",
              "final_test_acc_vs_width.png"):
    assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
  cfg = json.loads((out / "config.json").read_text())
  assert cfg["experiment"] == "width-sweep"
  assert cfg["config"]["widths"] == [8, 16] and cfg["config"]["steps"] == 20
  assert "width=16" in proc.stdout and "compile" in proc.stdout
  assert str(out / "results.nc") in proc.stdout


def test_configure_parses_field_types():
  cfg = configure(width_sweep.Config, {"widths": "[8, 16]", "lrs": "0.1,1e-2", "seeds": "3",
                                       "batch_size": "64", "activation": "tanh"})
  assert cfg.widths == (8, 16) and cfg.lrs == (0.1, 0.01) and cfg.seeds == 3
  assert cfg.batch_size == 64 and cfg.activation == "tanh"
  assert configure(width_sweep.Config, {"batch_size": "none"}).batch_size is None
  assert configure(width_sweep.Config, {"lrs": ""}).lrs == ()
  assert configure(width_sweep.Config, {}) == width_sweep.Config()


@pytest.mark.parametrize("overrides, message", [
    ({"lr": "fast"}, "lr must be a number, got 'fast'"),
    ({"batch_size": "all"}, "batch_size must be an integer or none, got 'all'"),
    ({"lrs": "0.1;0.2"},
     "lrs must be a comma-separated list of numbers (e.g. lrs=0.1,0.3,1), got '0.1;0.2'"),
])
def test_configure_errors(overrides, message):
  with pytest.raises(ConfigError) as e:
    configure(width_sweep.Config, overrides)
  assert str(e.value) == message


def test_every_experiment_follows_the_protocol():
  for module in EXPERIMENTS.values():
    cfg = module.Config()  # every field has a default
    with pytest.raises(dataclasses.FrozenInstanceError):
      setattr(cfg, dataclasses.fields(cfg)[0].name, None)
    assert callable(module.run) and callable(module.summary) and module.__doc__


def test_resume_and_refusal_to_overwrite(tmp_path):
  out = tmp_path / "run"
  args = ["run", "width-sweep", "--set", "steps=10", "--set", "widths=8", "--set", "seeds=1",
          "--no-plots", "--out", str(out)]
  first = _invoke(*args)
  assert first.exit_code == 0, first.output
  again = _invoke(*args)
  assert again.exit_code == 2
  assert "already holds a run; pass --resume" in again.stderr
  resumed = _invoke(*args, "--resume")
  assert resumed.exit_code == 0, resumed.output
  nores = _invoke("run", "width-sweep", "--resume")
  assert nores.exit_code == 2 and "--resume needs the --out folder" in nores.stderr


def test_a_part_checkpoint_of_a_multi_sweep_experiment_is_not_overwritten(tmp_path):
  out = tmp_path / "run"
  out.mkdir()
  (out / "checkpoint-depth-2.npz").write_bytes(b"earlier work")
  res = _invoke("run", "matrix-completion", "--out", str(out), "--no-plots")
  assert res.exit_code == 2
  assert "already holds a run; pass --resume" in res.stderr
  assert (out / "checkpoint-depth-2.npz").read_bytes() == b"earlier work"


def test_corrupt_checkpoint_is_exit_2_and_left_alone(tmp_path):
  out = tmp_path / "run"
  args = ["run", "width-sweep", "--set", "steps=10", "--set", "widths=8", "--set", "seeds=1",
          "--no-plots", "--out", str(out)]
  assert _invoke(*args).exit_code == 0
  ck = out / "checkpoint.npz"
  ck.write_bytes(ck.read_bytes()[:100])
  res = _invoke(*args, "--resume")
  assert res.exit_code == 2
  assert res.stderr.startswith(f"error: the checkpoint {ck} is corrupt or truncated")
  assert len(ck.read_bytes()) == 100


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_run_name_help_lists_every_setting(name):
  from jaxtheory.cli import _plain  # pylint: disable=import-outside-toplevel
  from jaxtheory.experiments import describe  # pylint: disable=import-outside-toplevel
  res = _invoke("run", name, "--help")
  assert res.exit_code == 0, res.output
  text = " ".join(res.output.split())
  module = EXPERIMENTS[name]
  assert " ".join(_plain(module.__doc__.strip().splitlines()[0]).split()) in text
  rows = describe(module.Config)
  assert [r[0] for r in rows] == [f.name for f in dataclasses.fields(module.Config)]
  for key, kind, default, meaning in rows:
    assert meaning, f"{name}: Config field {key} has no line in its Attributes section"
    assert f" {key} {' '.join(_plain(meaning).split())} [{kind}; default: {default}" in text
  if "\n\nDeclared range" in module.__doc__:  # where its signature is expected
    assert "Declared range" in text


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_show_prints_the_defaults_as_a_command_line(name):
  import shlex  # pylint: disable=import-outside-toplevel
  res = _invoke("show", name)
  assert res.exit_code == 0, res.output
  words = shlex.split(res.output)
  assert words[:3] == ["jaxtheory", "run", name] and words[3::2] == ["--set"] * (len(words[3:]) // 2)
  sets = dict(w.split("=", 1) for w in words[4::2])
  assert configure(EXPERIMENTS[name].Config, sets) == EXPERIMENTS[name].Config()


@pytest.mark.parametrize("args, hint", [
    (["run", "widht-sweep"], "; did you mean 'width-sweep'?"),
    (["show", "grokin"], "; did you mean 'grokking'?"),
    (["run", "width-sweep", "--set", "depht=3"], "; did you mean 'depth'?"),
    (["run", "width-sweep", "--set", "activation=rleu"], "; did you mean 'relu'?"),
    (["run", "width-sweep", "--set", "dataset=minst"], " Did you mean 'mnist'?"),
])
def test_unknown_names_get_did_you_mean(args, hint, tmp_path):
  res = _runner().invoke(cli, args + (["--out", str(tmp_path / "o")] if args[0] == "run" else []))
  assert res.exit_code == 2, res.output
  assert res.stderr.rstrip("\n").endswith(hint) and res.stderr.count("\n") == 1


def test_plot_redraws_the_figures_of_a_saved_run(tmp_path):
  from jaxtheory import sweep  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, os.path.join(ROOT, "tests"))
  from test_plots import _three_axes  # pylint: disable=import-outside-toplevel
  ds = _three_axes().isel(lr=[0, 1], width=[0, 1])  # small: the figures, not their size
  sweep.save(ds.drop_vars("diverged"), str(tmp_path / "results.nc"))
  res = _invoke("plot", str(tmp_path), "--out", str(tmp_path / "figs"))
  assert res.exit_code == 0, res.output
  written = [line.split(" ", 1)[1] for line in res.output.splitlines()]
  assert "final_test_acc_vs_parametrization.png" in [os.path.basename(p) for p in written]
  assert all(os.path.getsize(p) > 0 for p in written) and len(written) == 11
  res = _invoke("plot", str(tmp_path / "nothing"))
  assert res.exit_code == 2 and "results.nc does not exist" in res.stderr


@pytest.mark.parametrize("raised,one_line", [
    (ConfigError("lr must be >= 0, got -1"), True),
    (OSError(28, "No space left on device"), True),
    (ValueError("operands could not be broadcast together"), False),
])
def test_run_reports_bad_input_in_one_line_and_bugs_with_their_traceback(
    raised, one_line, tmp_path, monkeypatch):
  """A user's mistake is one ``error:`` line; an exception jaxtheory did not raise on purpose
  (here a plain ValueError from inside the run) is a bug and is not dressed up as one."""

  def run(cfg, **kwargs):
    raise raised

  monkeypatch.setattr(width_sweep, "run", run)
  res = CliRunner().invoke(cli, ["run", "width-sweep", "--out", str(tmp_path / "o")])
  assert res.exit_code != 0
  if one_line:
    assert res.output.strip().splitlines()[-1].startswith("error:"), res.output
    assert not isinstance(res.exception, type(raised)) or isinstance(res.exception, SystemExit)
  else:
    assert res.exception is raised
    assert "error:" not in res.output
  assert not (tmp_path / "o").exists()  # nothing of a run that never trained stays behind


def test_summary_and_checks_print_brackets_as_text(capsys):
  # A measured value such as "[3]" or "[not collapsed]" must not be read as rich markup.
  import types
  from jaxtheory.cli import _print_summary
  from jaxtheory.experiments.check import Check
  module = types.SimpleNamespace(
      summary=lambda ds: [("[bold]seeds[/bold]", "rank 2 [not collapsed] [red]x[/red]")],
      signature=lambda ds: [Check("collapse", False, "seed 1 [not collapsed]")])
  _print_summary(module, xr.Dataset(coords={"seed": [3]}), "demo", ["runs/[red]a/f.png"])
  out = capsys.readouterr().out
  for text in ("[bold]seeds[/bold]", "[not collapsed] [red]x[/red]", "seed 1 [not collapsed]",
               "runs/[red]a/f.png"):
    assert text in out, out


def test_strict_exits_3_when_a_check_fails_after_writing_the_results(tmp_path):
  # Two steps cannot converge: matrix-completion's checks FAIL. Without --strict that is a
  # finding (status 0); with it, status 3 for scripts and CI (a crash is 1), the results written
  # first.
  sets = ["--set", "steps=2", "--set", "depths=1,2", "--no-plots"]
  plain = _invoke("run", "matrix-completion", "--out", str(tmp_path / "a"), *sets)
  assert plain.exit_code == 0, plain.output
  assert "FAIL" in plain.output
  strict = _invoke("run", "matrix-completion", "--out", str(tmp_path / "b"), "--strict", *sets)
  assert strict.exit_code == 3, strict.output
  assert "signature check" in strict.stderr and "failed (--strict)" in strict.stderr
  assert (tmp_path / "b" / "results.nc").exists()
