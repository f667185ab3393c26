"""Tests for progress reporting (jaxtheory.progress) in sweep.run and sweep.run_over."""

import pytest

from jaxtheory import data, nn, progress, sweep

DS = data.gaussian_mixture(n_train=32, n_test=32, num_classes=3, input_dim=4)


def _sweep(depth=1, name="tiny"):
  return sweep.Sweep(model=lambda w: nn.mlp((4,), w, depth, 3), data=DS,
                     grid=dict(seed=[0, 1], width=[8, 16]), steps=6, record=2, name=name)


def test_progress_true_prints_lines_and_a_summary_outside_a_terminal(capsys):
  sweep.run(_sweep(), progress=True)
  out, err = capsys.readouterr()
  assert out == ""
  lines = err.strip().splitlines()
  assert lines[0].startswith("tiny: compiling width<=")
  assert any("/24 run-steps" in line for line in lines[:-1])  # 4 runs x 6 steps
  assert lines[-1].startswith("tiny: 24 run-steps in ") and "compiling" in lines[-1]
  assert "run-steps/s" in lines[-1]


@pytest.mark.parametrize("arg", [False, None])
def test_progress_is_silent_when_silenced_or_not_a_terminal(arg, capsys):
  sweep.run(_sweep(), progress=arg)
  assert capsys.readouterr() == ("", "")


def test_run_over_shows_one_bar_over_its_parts(capsys):
  sweep.run_over("depth", [1, 2], _sweep, progress=True)
  lines = capsys.readouterr().err.strip().splitlines()
  assert any(line.endswith("(depth=2)") or "(depth=2)," in line for line in lines)
  assert lines[-1].startswith("sweep over depth: 48 run-steps in ")
  assert sum("run-steps in" in line for line in lines) == 1  # one summary, not one per part


def test_env_silences_the_default(monkeypatch):
  monkeypatch.setenv(progress.ENV, "off")
  with progress.reporter(None, "x") as report:
    assert isinstance(report, progress._PassThrough)  # pylint: disable=protected-access


def test_bad_progress_argument():
  with pytest.raises(TypeError, match="progress must be None, True, False or a function"):
    with progress.reporter("yes", "x"):
      pass
