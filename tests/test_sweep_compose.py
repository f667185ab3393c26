"""Sweeps over a structural axis: joined == separate runs; per-part checkpoints resume exactly."""

import numpy as np
import pytest
import xarray as xr

from jaxtheory import data, nn, sweep
from jaxtheory.errors import ConfigError

DS = data.teacher_student(n_train=16, n_test=8, input_dim=3, seed=0)


def make(depth):
  return sweep.Sweep(lambda w: nn.mlp(DS.input_shape, w, depth, 1), DS,
                     dict(seed=[0, 1], width=[4, 8]), "sgd", dict(lr=0.05), steps=30,
                     record="every:10", name=f"depth{depth}")


def quiet(*args):
  del args


def test_joined_equals_separate_runs():
  joined = sweep.run_over("depth", [1, 2], make, progress=quiet)
  assert joined.train_loss.dims == ("depth", "seed", "width", "step")
  for depth in (1, 2):
    alone = sweep.run(make(depth), progress=quiet)
    xr.testing.assert_allclose(joined.sel(depth=depth, drop=True).train_loss, alone.train_loss)
  assert joined.attrs["run_seconds"] > 0


def test_each_and_execute_over():
  res, groups = sweep.execute_over("depth", [1, 2], make, progress=quiet,
                                   each=lambda r: r.isel(width=0, drop=True))
  assert "width" not in res.dims
  assert set(groups) == {1, 2} and all(isinstance(g, list) and g for g in groups.values())


def test_progress_covers_every_part():
  seen = []
  sweep.run_over("depth", [1, 2, 3], make, progress=lambda d, t, info="": seen.append((d, t)))
  assert seen[-1][0] == seen[-1][1]  # ends at 100% of the whole
  assert len({t for _, t in seen}) == 1  # one total for the three parts


def test_killed_run_resumes_each_part_exactly(tmp_path):
  ckpt = tmp_path / "ck.npz"
  want = sweep.run_over("depth", [1, 2], make, progress=quiet)
  parts = []

  def killer(done, total, info=""):
    parts.append(done)
    if done > total // 2 + 5:  # inside the second part
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    sweep.run_over("depth", [1, 2], make, progress=killer, checkpoint=ckpt,
                   checkpoint_interval=0)
  assert (tmp_path / "ck-depth-1.npz").exists() and (tmp_path / "ck-depth-2.npz").exists()
  got = sweep.run_over("depth", [1, 2], make, progress=quiet, checkpoint=ckpt, resume=True)
  np.testing.assert_array_equal(got.train_loss.values, want.train_loss.values)
  np.testing.assert_array_equal(got.test_loss.values, want.test_loss.values)


@pytest.mark.parametrize("values,message", [([], "no values for 'depth'"),
                                            ([1, 1], "the values of 'depth' repeat")])
def test_bad_values(values, message):
  with pytest.raises(ConfigError, match=message):
    sweep.run_over("depth", values, make)


def test_part_path():
  assert sweep.compose.part_path("out/checkpoint.npz", "model", "mlp") == \
      "out/checkpoint-model-mlp.npz"
  assert sweep.compose.part_path("out/ck", "depth", 2) == "out/ck-depth-2.npz"
