"""Every notebook in notebooks/ (jupytext percent scripts) runs top to bottom on small settings."""

import pathlib
import runpy

import pytest

NOTEBOOKS = pathlib.Path(__file__).parent.parent / "notebooks"
# JT_NOTEBOOK_STEPS per notebook: small enough for CI, large enough to draw every figure.
STEPS = {"width_sweep": 5, "grokking": 30, "matrix_completion": 30, "double_descent": 30,
         "neural_collapse": 60, "edge_of_stability": 60, "separation": 60,
         "mode_connectivity": 60, "kernel_limit": 20, "noisy_labels": 60,
         "spectral_bias": 60, "sharpness": 40, "lazy_rich": 60, "mutransfer": 6,
         "wide_vs_deep": 5,
         "weight_decay_spectra": 200, "platonic": 60}


def test_every_notebook_is_listed():
  assert {p.stem for p in NOTEBOOKS.glob("*.py")} == set(STEPS)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n != "width_sweep"
                                  else n for n in STEPS])
def test_notebook_runs(name, tmp_path, monkeypatch):
  monkeypatch.setenv("JT_NOTEBOOK_STEPS", str(STEPS[name]))
  monkeypatch.chdir(tmp_path)
  runpy.run_path(str(NOTEBOOKS / f"{name}.py"), run_name="__main__")
  assert list((tmp_path / "runs").glob("*/*.png"))
