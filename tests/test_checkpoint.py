"""Checkpoint and resume: killed at random points, a resumed sweep equals an uninterrupted one."""

import random
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from jaxtheory import data, nn, sweep
from jaxtheory.errors import ConfigError

SCRIPT = textwrap.dedent("""
    import sys
    from jaxtheory import data, nn, sweep
    ds = data.gaussian_mixture(n_train=256, n_test=64, num_classes=3, input_dim=8, seed=2)
    s = sweep.Sweep(lambda w: nn.mlp((8,), w, 2, 3), ds,
                    dict(seed=[0, 1, 2], width=[16, 24, 128], lr=[0.05, 0.2]),
                    steps=int(sys.argv[3]), record="every:50", batch_size=32)
    res = sweep.run(s, checkpoint=sys.argv[1], resume=True, checkpoint_interval=0,
                    record_chunks=40)
    sweep.save(res, sys.argv[2])
""")


def _sweep_process(ck, out, steps):
  return subprocess.Popen([sys.executable, "-c", SCRIPT, str(ck), str(out), str(steps)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
@pytest.mark.optimized
def test_killed_and_resumed_sweeps_equal_uninterrupted(tmp_path):
  steps = 2000
  ref_out = tmp_path / "ref.nc"
  t = time.perf_counter()
  p = _sweep_process(tmp_path / "ref.npz", ref_out, steps)
  assert p.wait(timeout=900) == 0, p.stderr.read().decode()
  full = time.perf_counter() - t
  ref = sweep.load(ref_out)
  rng = random.Random(0)
  for trial in range(3):
    ck, out = tmp_path / f"ck{trial}.npz", tmp_path / f"out{trial}.nc"
    kills = 0
    while True:
      p = _sweep_process(ck, out, steps)
      try:
        code = p.wait(timeout=rng.uniform(0.3, 0.9) * full) if kills < 2 else p.wait(timeout=900)
      except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
        if out.exists():  # killed after its atomic save: the result is whole
          break
        if ck.exists():  # whatever was on disk at the kill is a whole checkpoint
          sweep.checkpoint.load(str(ck), sweep.checkpoint.load_fingerprint(str(ck)))
        continue
      assert code == 0, p.stderr.read().decode()
      break
    res = sweep.load(out)
    for m in ("train_loss", "test_loss", "param_norm", "train_acc"):
      np.testing.assert_array_equal(res[m].values, ref[m].values)


def _small(steps=20, **kw):
  ds = data.gaussian_mixture(n_train=48, n_test=32, num_classes=3, input_dim=5, seed=1)
  return sweep.Sweep(lambda w: nn.mlp((5,), w, 1, 3), ds, dict(seed=[0, 1], width=[8, 64]),
                     steps=steps, record="every:5", **kw)


def test_checkpointing_does_not_change_results_and_resume_skips_finished_work(tmp_path):
  s = _small()
  plain = sweep.run(s)
  ck = tmp_path / "ck.npz"
  first = sweep.run(s, checkpoint=ck, checkpoint_interval=0)
  np.testing.assert_array_equal(first.train_loss.values, plain.train_loss.values)
  again = sweep.run(s, checkpoint=ck, resume=True)  # everything finished: nothing recomputed
  np.testing.assert_array_equal(again.train_loss.values, plain.train_loss.values)
  assert again.attrs["traces"] == 0


class _Stop(Exception):
  pass


def test_resume_returns_the_params_of_finished_runs(tmp_path):
  """sweep.execute after a resume: the finished units' final params come from the checkpoint,
  equal to an uninterrupted sweep's, whether it finished or was stopped between buckets."""
  s = _small()
  ref_res, ref = sweep.execute(s, progress=False)
  same = lambda a, b: all(np.array_equal(np.asarray(u), np.asarray(v))
                          for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  # 1. The sweep finished; resuming it recomputes nothing and returns the same params.
  ck = tmp_path / "done.npz"
  sweep.execute(s, checkpoint=ck, progress=False)
  res, groups = sweep.execute(s, checkpoint=ck, resume=True, progress=False)
  assert res.attrs["traces"] == 0
  assert [g.runs.tolist() for g in groups] == [g.runs.tolist() for g in ref]
  for g, r in zip(groups, ref):
    assert same(g.params, r.params) and same(g.ctx, r.ctx)
    np.testing.assert_array_equal(g.coords["width"], r.coords["width"])
  np.testing.assert_array_equal(res.train_loss.values, ref_res.train_loss.values)

  # 2. Stopped after the first bucket: it comes from the checkpoint, the second is trained.
  def stop(done, total, info=""):
    if "compiling width<=64" in info:
      raise _Stop
  ck = tmp_path / "half.npz"
  with pytest.raises(_Stop):
    sweep.execute(s, checkpoint=ck, checkpoint_interval=0, progress=stop)
  res, groups = sweep.execute(s, checkpoint=ck, resume=True, progress=False)
  for g, r in zip(groups, ref):
    assert same(g.params, r.params)
  np.testing.assert_array_equal(res.train_loss.values, ref_res.train_loss.values)


def test_a_sweep_that_keeps_no_params_checkpoints_none(tmp_path):
  """sweep.run's checkpoint holds metrics, not the finished runs' parameters (most of the bytes
  otherwise); it resumes as it was written, and asking it for parameters is a clear error."""
  s = _small()
  ref = sweep.run(s, progress=False)
  ck, kept = tmp_path / "metrics.npz", tmp_path / "params.npz"
  sweep.run(s, checkpoint=ck, progress=False)
  sweep.execute(s, checkpoint=kept, progress=False)
  assert not [k for k in np.load(ck).files if k.startswith("final/")]
  assert [k for k in np.load(kept).files if k.startswith("final/")]
  assert ck.stat().st_size < kept.stat().st_size / 2
  again = sweep.run(s, checkpoint=ck, resume=True, progress=False)
  assert again.attrs["traces"] == 0
  np.testing.assert_array_equal(again.train_loss.values, ref.train_loss.values)
  with pytest.raises(ConfigError, match="the checkpoint keeps none"):
    sweep.execute(s, checkpoint=ck, resume=True, progress=False)
  # Resumed by a sweep that keeps none, a checkpoint that holds parameters keeps them.
  sweep.run(s, checkpoint=kept, resume=True, progress=False)
  assert [k for k in np.load(kept).files if k.startswith("final/")]


def test_existing_checkpoint_is_never_overwritten_without_resume(tmp_path):
  ck = tmp_path / "ck.npz"
  sweep.run(_small(), checkpoint=ck)
  before = ck.read_bytes()
  with pytest.raises(sweep.CheckpointError, match="a checkpoint already exists"):
    sweep.run(_small(), checkpoint=ck)
  with pytest.raises(sweep.CheckpointError, match="belongs to a different sweep"):
    sweep.run(_small(steps=25), checkpoint=ck, resume=True)
  assert ck.read_bytes() == before


def test_corrupt_or_truncated_checkpoint_is_a_clear_error(tmp_path):
  ck = tmp_path / "ck.npz"
  sweep.run(_small(), checkpoint=ck)
  blob = ck.read_bytes()
  ck.write_bytes(blob[: len(blob) // 2])
  with pytest.raises(sweep.CheckpointError, match="is corrupt or truncated"):
    sweep.run(_small(), checkpoint=ck, resume=True)
  assert ck.read_bytes() == blob[: len(blob) // 2]
