"""Trustworthy sweeps: no silent wrong result, no lost result, no traceback.

Each class of failure through the Python API and the command line: the exact
one-sentence message, and that nothing that existed was lost or changed.
"""

import errno
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from click.testing import CliRunner

from jaxtheory import data, nn, sweep
from jaxtheory.cli import cli
from jaxtheory.data import DataError, files
from jaxtheory.sweep import outdir
from jaxtheory.errors import ConfigError
from jaxtheory.train import Optimizer, _all_finite

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--set", "widths=8", "--set", "seeds=1", "--set", "steps=6", "--set", "record=3"]


def _cli(*args):
  kw = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner).parameters else {}
  return CliRunner(**kw).invoke(cli, list(args))


def _one_line_error(res, *fragments):
  assert res.exit_code == 2, (res.stdout, res.stderr)
  assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
  for f in fragments:
    assert f in res.stderr, res.stderr


def _ds(seed=1):
  return data.gaussian_mixture(n_train=48, n_test=32, num_classes=3, input_dim=5, seed=seed)


def _small(steps=10, act=nn.relu, W_std=1.0, ds=None, optimizer="sgd", metrics=None, **kw):
  ds = ds or _ds()
  return sweep.Sweep(lambda w: nn.mlp((5,), w, 1, 3, activation=act, W_std=W_std), ds,
                     dict(seed=[0, 1], width=[8, 16]), optimizer=optimizer, steps=steps,
                     record="every:5", metrics=metrics or {}, **kw)


def _temporaries(folder):
  return sorted(n for n in os.listdir(folder) if n.endswith(".tmp"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished tiny CLI run (results.nc, config.json, checkpoint.npz), copied per test."""
  out = tmp_path_factory.mktemp("trust") / "run"
  res = _cli("run", "width-sweep", *TINY, "--no-plots", "--out", str(out))
  assert res.exit_code == 0, res.stderr
  return out


def _copy(finished, tmp_path):
  out = tmp_path / "run"
  shutil.copytree(finished, out)
  return out


# --- 1. a fingerprint of everything that determines a result ---


def _momentum_sgd(beta):
  return Optimizer(lambda lr: optax.sgd(lr, momentum=beta), "sgd", "mine", hyper=dict(lr=0.1))


def _mean_out(params, apply, d):
  return jnp.mean(apply(params, d["x_test"]))


def _max_out(params, apply, d):
  return jnp.max(apply(params, d["x_test"]))


@pytest.mark.parametrize("change, named", [
    (dict(act=nn.tanh), "the model's computation"),
    (dict(W_std=1.5), "the model's computation"),
    (dict(optimizer=_momentum_sgd(0.5)), "the optimizer's computation"),
    (dict(metrics={"out": _max_out}), "the computation of metric 'out'"),
    (dict(ds=_ds(seed=2)), "the data"),
])
def test_resume_after_a_changed_setting_names_it(tmp_path, change, named):
  ck = tmp_path / "ck.npz"
  base = dict(optimizer=_momentum_sgd(0.9), metrics={"out": _mean_out})
  sweep.run(_small(**base), checkpoint=ck, checkpoint_interval=0)
  before = ck.read_bytes()
  with pytest.raises(sweep.CheckpointError, match=f"belongs to a different sweep .*{named}"):
    sweep.run(_small(**dict(base, **change)), checkpoint=ck, resume=True)
  assert ck.read_bytes() == before
  assert sweep.run(_small(**base), checkpoint=ck, resume=True).attrs["traces"] == 0


def test_multi_part_checkpoints_name_the_changed_part(tmp_path):
  def make(act):
    return lambda depth: sweep.Sweep(lambda w: nn.mlp((5,), w, depth, 3, activation=act), _ds(),
                                     dict(seed=[0], width=[8]), steps=5, record="every:5")

  ck = tmp_path / "ck.npz"
  sweep.run_over("depth", [1, 2], make(nn.relu), checkpoint=ck, progress=False)
  parts = sorted(tmp_path.glob("ck-depth-*.npz"))
  assert [p.name for p in parts] == ["ck-depth-1.npz", "ck-depth-2.npz"]
  before = [p.read_bytes() for p in parts]
  with pytest.raises(sweep.CheckpointError, match=r"ck-depth-1.npz belongs to a different sweep "
                     r"\(the model's computation"):
    sweep.run_over("depth", [1, 2], make(nn.tanh), checkpoint=ck, resume=True, progress=False)
  assert [p.read_bytes() for p in parts] == before


def test_cli_resume_after_a_changed_setting_names_it(finished, tmp_path):
  out = _copy(finished, tmp_path)
  before = {p: (out / p).read_bytes() for p in ("results.nc", "config.json", "checkpoint.npz")}
  res = _cli("run", "width-sweep", *TINY, "--set", "activation=tanh", "--no-plots",
             "--out", str(out), "--resume")
  _one_line_error(res, "--resume with other settings than the run in",
                  'activation was "relu", now "tanh"')
  assert {p: (out / p).read_bytes() for p in before} == before


# --- 2. ownership of an output folder ---


def test_cli_resume_with_nothing_to_resume_keeps_the_results(finished, tmp_path):
  out = _copy(finished, tmp_path)
  (out / "checkpoint.npz").unlink()
  before = (out / "results.nc").read_bytes(), (out / "config.json").read_bytes()
  res = _cli("run", "width-sweep", *TINY, "--no-plots", "--out", str(out), "--resume")
  _one_line_error(res, f"nothing to resume in {out}: it holds finished results but no checkpoint")
  res = _cli("run", "width-sweep", *TINY, "--strategy", "loop", "--out", str(out), "--resume")
  _one_line_error(res, "--strategy loop keeps no checkpoint, so it cannot --resume")
  assert ((out / "results.nc").read_bytes(), (out / "config.json").read_bytes()) == before


_HOLD = textwrap.dedent("""
    import sys, time
    from jaxtheory.sweep import outdir
    with outdir.lock(sys.argv[1], "x"):
      print("held", flush=True)
      time.sleep(120)
""")


def test_a_second_run_into_a_busy_folder_is_refused_naming_the_holder(tmp_path):
  out = tmp_path / "run"
  out.mkdir()
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
  holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out / ".lock")],
                            stdout=subprocess.PIPE, text=True, env=env)
  try:
    assert holder.stdout.readline().strip() == "held"
    res = _cli("run", "width-sweep", *TINY, "--no-plots", "--out", str(out))
    _one_line_error(res, f"the output folder {out} is in use by another run (pid {holder.pid} on ",
                    "started ", "wait for it to finish or choose another output")
    assert not (out / "results.nc").exists()
    # The Python API owns its checkpoint the same way.
    with outdir.lock(tmp_path / "ck.npz.lock", "x"):
      with pytest.raises(sweep.FolderBusyError, match=f"pid {os.getpid()} on "):
        sweep.run(_small(), checkpoint=tmp_path / "ck.npz")
    assert not (tmp_path / "ck.npz").exists()
  finally:
    holder.kill()  # SIGKILL: its lock file stays, its lock does not
    holder.wait()
  res = _cli("run", "width-sweep", *TINY, "--no-plots", "--out", str(out))
  assert res.exit_code == 0, res.stderr


_KILLED_WRITE = textwrap.dedent("""
    import sys, time
    import xarray as xr
    from jaxtheory import sweep
    from jaxtheory.sweep import outdir
    write = outdir._FdFile.write
    def stall(self, b):
      write(self, bytes(b)[:64])
      print("writing", flush=True)
      time.sleep(120)
    outdir._FdFile.write = stall
    sweep.save(xr.Dataset({"a": ("x", [1.0, 2.0])}), sys.argv[1])
""")


def test_temporaries_of_a_killed_write_are_swept_and_a_live_ones_kept(finished, tmp_path):
  out = _copy(finished, tmp_path)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
  p = subprocess.Popen([sys.executable, "-c", _KILLED_WRITE, str(out / "results.nc")],
                       stdout=subprocess.PIPE, text=True, env=env)
  assert p.stdout.readline().strip() == "writing"
  live = _temporaries(out)
  assert len(live) == 1 and str(p.pid) in live[0]
  assert outdir.sweep_stale(out) == [] and _temporaries(out) == live  # its owner is alive
  p.send_signal(signal.SIGKILL)
  p.wait()
  before = (out / "results.nc").read_bytes()
  assert before == (finished / "results.nc").read_bytes()  # the old results are whole
  res = _cli("run", "width-sweep", *TINY, "--no-plots", "--out", str(out), "--resume")
  assert res.exit_code == 0, res.stderr
  assert _temporaries(out) == []
  # Python API: the next checkpointed run sweeps them too.
  (tmp_path / "py").mkdir()
  stale = tmp_path / "py" / f"ck.npz.{p.pid}.0123abcd.{outdir._host()}.tmp"
  stale.write_bytes(b"partial")
  sweep.run(_small(steps=5), checkpoint=tmp_path / "py" / "ck.npz")
  assert not stale.exists()


# --- 3. validation before any compile ---


def _plan_must_not_compile(monkeypatch):
  from jaxtheory.sweep import planning  # pylint: disable=import-outside-toplevel

  def refuse(*a, **k):
    raise AssertionError("compiled before validating")

  monkeypatch.setattr(planning, "_flops", refuse)


@pytest.mark.parametrize("grid, hparams, steps, message", [
    (dict(seed=[2**31 - 1], width=[8]), {}, 2**31 - 1, None),
    (dict(seed=[2**31], width=[8]), {}, 10, "seed must be at most 2147483647"),
    (dict(seed=[2**32], width=[8]), {}, 10, "seed must be at most 2147483647"),
    (dict(seed=[0], width=[8]), {}, 2**31, "steps must be at most 2147483647"),
    (dict(seed=[0], width=[8]), {}, 3 * 10**9, "steps must be at most 2147483647"),
    (dict(seed=[0], width=[10**9]), {}, 10, "one run of width 1000000000 has "),
    (dict(seed=list(range(10**4)), width=[4096], lr=list(np.linspace(0.01, 1, 100))), {}, 10,
     "the sweep of 1,000,000 runs needs at least"),
    (dict(seed=[0], width=[8]), dict(lr=float("nan")), 10, "hyperparameter lr must be finite"),
    (dict(seed=[0], width=[8]), dict(lr=float("inf")), 10, "hyperparameter lr must be finite"),
    (dict(seed=[0], width=[8]), dict(lr=-0.1), 10, "hyperparameter lr must be >= 0, got -0.1"),
    (dict(seed=[0], width=[8], lr=[0.1, -0.5]), {}, 10, "hyperparameter lr must be >= 0"),
    (dict(seed=[0], width=[8], lr=[0.1, float("nan")]), {}, 10,
     "sweep axis 'lr' must be finite"),
    (dict(seed=[0], width=[8]), dict(lr="fast"), 10, "hyperparameter lr must be a number"),
])
def test_bad_values_are_refused_before_any_compile(monkeypatch, grid, hparams, steps, message):
  if message is None:
    p = sweep.plan(sweep.Sweep(lambda w: nn.mlp((5,), w, 1, 3), _ds(), grid, hparams=hparams,
                               steps=steps, record=3))
    assert p.grid["seed"].tolist() == [2**31 - 1] and p.schedule[-1] == 2**31 - 1
    return
  _plan_must_not_compile(monkeypatch)
  s = sweep.Sweep(lambda w: nn.mlp((5,), w, 1, 3), _ds(), grid, hparams=hparams, steps=steps,
                  record=3)
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    sweep.plan(s)


def test_seeds_at_the_32_bit_limit_are_distinct_runs():
  s = sweep.Sweep(lambda w: nn.mlp((5,), w, 1, 3), _ds(), dict(seed=[0, 2**31 - 1], width=[8]),
                  steps=0)
  res = sweep.run(s)
  norms = res.param_norm.values[:, 0, 0]
  assert norms[0] != norms[1]
  assert res.step.values.tolist() == [0]  # steps=0 trains nothing


class _Stop(Exception):
  pass


def test_a_long_plan_shows_its_estimate_before_compiling():
  calls = []

  def stop(*a):
    calls.append(a)
    raise _Stop

  s = sweep.Sweep(lambda w: nn.mlp((5,), w, 1, 3), _ds(), dict(seed=list(range(100)),
                                                              width=[512, 1024]), steps=10**6)
  with pytest.raises(_Stop):
    sweep.run(s, progress=stop)
  assert calls[0][:2] == (0, 200 * 10**6)
  assert calls[0][2].startswith("compiling; planned 200 runs, 200,000,000 run-steps, about ")
  assert "FLOP" in calls[0][2] and "of run states" in calls[0][2]
  with pytest.raises(_Stop):
    sweep.run(_small(), progress=stop)
  assert "planned" not in calls[1][2]


@pytest.mark.parametrize("opts, message", [
    (dict(chunk_size=-3), "chunk_size must be a positive integer or None, got -3"),
    (dict(memory_budget=float("nan")), "memory_budget must be a finite number > 0"),
    (dict(record_chunks=0), "record_chunks must be a positive integer, got 0"),
    (dict(checkpoint_interval=-1.0), "checkpoint_interval must be a finite number >= 0"),
    (dict(strategy="fast"), "unknown strategy 'fast'"),
])
def test_bad_engine_options_are_one_sentence(monkeypatch, opts, message):
  _plan_must_not_compile(monkeypatch)
  with pytest.raises(ConfigError, match=message):
    sweep.run(_small(), **opts)


def test_token_ids_into_a_dense_model_are_refused():
  ds = data.modular_arithmetic(p=7)
  s = sweep.Sweep(lambda w: nn.mlp((3,), w, 1, ds.out_dim), ds, dict(width=[8]), steps=1)
  with pytest.raises(ConfigError, match=r"a dense layer got int\d+ inputs \(token ids\?\)"):
    sweep.plan(s)


@pytest.mark.parametrize("sets, message", [
    (["--set", "lr=-0.1"], "hyperparameter lr must be >= 0, got -0.1"),
    (["--set", "lr=nan"], "hyperparameter lr must be finite"),
    (["--set", "lrs=0.1,inf"], "sweep axis 'lr' must be finite"),
    (["--set", "steps=3000000000"], "steps must be at most 2147483647"),
    (["--set", "widths=1000000000"], "one run of width 1000000000 has"),
    (["--set", "seeds=100000", "--set", "widths=4096"], "the sweep of 100,000 runs needs"),
    (["--memory-budget", "nan"], "memory_budget must be a finite number > 0"),
])
def test_cli_bad_values_are_one_line_and_leave_no_folder(tmp_path, sets, message):
  out = tmp_path / "out"
  res = _cli("run", "width-sweep", "--set", "steps=5", *sets, "--no-plots", "--out", str(out))
  _one_line_error(res, message)
  assert not out.exists()


# --- 4. every failure one sentence, nothing damaged ---


def _disk_full_after(monkeypatch, n_ok=0, only=None):
  """Makes owned-file writes fail with ENOSPC after ``n_ok`` whole files (optionally only
  writes whose first bytes start with ``only``)."""
  write, seen = outdir._FdFile.write, {"files": 0}

  def full(self, b):
    if not hasattr(self, "hit"):  # the first write of a new file
      seen["files"] += 1
      self.hit = only is None or bytes(b[:len(only)]) == only
    if self.hit and seen["files"] > n_ok:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return write(self, b)

  monkeypatch.setattr(outdir._FdFile, "write", full)


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(monkeypatch, tmp_path):
  ck = tmp_path / "ck.npz"
  _disk_full_after(monkeypatch, n_ok=1)
  with pytest.raises(sweep.OutputError, match=f"cannot write the checkpoint {ck}: No space left "
                     r"on device \(the previous one is intact\)"):
    sweep.run(_small(), checkpoint=ck, checkpoint_interval=0)
  assert _temporaries(tmp_path) == [] and not (tmp_path / "ck.npz.lock").exists()
  monkeypatch.undo()
  resumed = sweep.run(_small(), checkpoint=ck, resume=True)
  np.testing.assert_array_equal(resumed.train_loss.values, sweep.run(_small()).train_loss.values)


def test_disk_full_while_writing_results_keeps_the_old_ones(monkeypatch, finished, tmp_path):
  out = _copy(finished, tmp_path)
  before = (out / "results.nc").read_bytes()
  _disk_full_after(monkeypatch, only=b"\x89HDF")
  res = _cli("run", "width-sweep", *TINY, "--no-plots", "--out", str(out), "--resume")
  _one_line_error(res, f"cannot write the results file {out / 'results.nc'}: No space left on "
                  "device (the previous one is intact)")
  assert (out / "results.nc").read_bytes() == before and _temporaries(out) == []
  with pytest.raises(sweep.OutputError, match="No space left on device"):
    sweep.save(sweep.load(out / "results.nc"), out / "results.nc")
  assert (out / "results.nc").read_bytes() == before


def test_disk_full_during_a_checkpoint_through_the_cli(monkeypatch, tmp_path):
  out = tmp_path / "run"
  _disk_full_after(monkeypatch, n_ok=1)  # config.json is written, the checkpoint is not
  res = _cli("run", "width-sweep", *TINY, "--no-plots", "--out", str(out))
  _one_line_error(res, f"cannot write the checkpoint {out / 'checkpoint.npz'}: No space left")
  assert not out.exists()  # the run never finished a checkpoint: nothing of it stays


def test_read_only_or_blocked_output_folders_fail_before_training(monkeypatch, tmp_path):
  _plan_must_not_compile(monkeypatch)
  (tmp_path / "file").write_text("x")
  res = _cli("run", "width-sweep", *TINY, "--out", str(tmp_path / "file" / "run"))
  _one_line_error(res, f"cannot create the output folder {tmp_path / 'file' / 'run'}: "
                  "Not a directory")
  with pytest.raises(sweep.OutputError, match="a file of that name is in the way"):
    sweep.run(_small(), checkpoint=tmp_path / "file" / "ck.npz")
  ro = tmp_path / "ro"
  ro.mkdir()
  real_open = os.open

  def denied(path, *a, **k):  # root ignores mode bits: inject what a read-only folder does
    if os.fspath(path).startswith(str(ro)):
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    return real_open(path, *a, **k)

  monkeypatch.setattr(os, "open", denied)
  res = _cli("run", "width-sweep", *TINY, "--out", str(ro))
  _one_line_error(res, f"cannot write into the output folder {ro}: Permission denied")
  with pytest.raises(sweep.OutputError, match="cannot write into the checkpoint's folder"):
    sweep.run(_small(), checkpoint=ro / "ck.npz")
  assert os.listdir(ro) == []


def test_unreadable_files_are_one_sentence(monkeypatch, tmp_path):
  nc = tmp_path / "r.nc"
  sweep.save(sweep.run(_small(steps=5)), nc)
  nc.write_bytes(nc.read_bytes()[:700])
  with pytest.raises(sweep.OutputError, match="is truncated or not a netCDF file"):
    sweep.load(nc)
  with pytest.raises(sweep.OutputError, match="cannot read the results file .*No such file"):
    sweep.load(tmp_path / "none.nc")
  ck = tmp_path / "ck.npz"
  np.savez(ck, a=np.zeros(3))
  with pytest.raises(sweep.CheckpointError, match="is not a jaxtheory sweep checkpoint"):
    sweep.run(_small(steps=5), checkpoint=ck, resume=True)
  folder = tmp_path / "mnist"
  folder.mkdir()
  real = os.listdir
  monkeypatch.setattr(os, "listdir", lambda p=".": (_ for _ in ()).throw(
      PermissionError(errno.EACCES, "Permission denied")) if str(p) == str(folder) else real(p))
  with pytest.raises(DataError, match=f"cannot read the data folder {folder}: Permission denied"):
    files.read_set("mnist", str(tmp_path))


# --- 5. divergence: flagged on the record of the first non-finite value ---


def _nan_after(threshold):
  def fn(params, apply, d):
    return jnp.where(optax.tree.norm(params) > threshold, jnp.nan, 1.0)
  return fn


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_finiteness_check_finds_one_bad_entry_anywhere(bad):
  # XLA:CPU's vectorized max does not propagate NaN from every lane: the check maps NaN to
  # inf before reducing, so a NaN in lane 0 of a large leaf is still found.
  check = jax.jit(_all_finite)
  rng = np.random.default_rng(0)
  for n in (1, 7, 300_001):
    for pos in {0, 1 % n, n // 2, n - 1}:
      x = rng.normal(size=(2, n)).astype(np.float32)
      x[1, pos] = bad
      tree = {"w": x, "b": np.ones(3, np.float64), "empty": np.zeros((0, 4), np.float32),
              "count": np.arange(3)}
      assert not bool(check(tree)), (n, pos)
      assert np.asarray(jax.vmap(check)({"w": x, "b": np.ones((2, 3))})).tolist() == [True, False]
  assert bool(check({"w": rng.normal(size=(5, 5)), "empty": np.zeros((0,)), "count": np.arange(2)}))
  assert bool(check({"w": np.full(4, np.finfo(np.float32).max, np.float32)}))  # large but finite


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_finiteness_check_of_matrices_finds_one_bad_entry_anywhere(bad):
  # Leaves of two or more axes are summed as a matrix-vector product over their last axis:
  # a bad entry in any row and column, of a leaf alone or vmapped over runs, is still found.
  check = jax.jit(_all_finite)
  rng = np.random.default_rng(1)
  for shape in ((1, 1), (5, 1), (1, 300), (64, 129), (3, 3, 4, 16)):
    for flat in {0, 1 % np.prod(shape), np.prod(shape) // 2, np.prod(shape) - 1}:
      x = rng.normal(size=(3, *shape)).astype(np.float32)
      x[2].flat[flat] = bad
      tree = {"w": x, "b": np.ones(3, np.float32)}
      assert not bool(check(tree)), (shape, flat)
      assert np.asarray(jax.vmap(check)(tree)).tolist() == [True, True, False], (shape, flat)
  big = np.finfo(np.float32).max
  assert bool(check({"w": np.full((2, 300), big, np.float32), "v": np.full(9, -big, np.float32)}))
  assert bool(jax.vmap(check)({"w": np.full((2, 3, 300), big, np.float32)}).all())


def test_divergence_is_flagged_on_the_first_non_finite_record_and_values_are_held():
  ds = data.teacher_student(n_train=32, n_test=16, input_dim=4, seed=0)
  make = lambda metrics: sweep.Sweep(
      lambda w: nn.mlp((4,), w, 1, 1), ds, dict(seed=[0, 1], width=[8], lr=[0.05, 0.5, 50.0]),
      steps=40, record="every:2", metrics=metrics)
  raw = sweep.run(make({}))  # the same runs without the guard metric
  threshold = 1.5 * float(raw.param_norm.values[..., 0].max())
  res = sweep.run(make({"guard": _nan_after(threshold)}))
  for name in ("train_loss", "test_loss", "param_norm", "guard"):
    assert np.isfinite(res[name].values).all(), name  # frozen runs keep finite values
  div, steps = res.diverged.values, res.step.values
  assert div[..., -1].any() and not div[..., -1].all()
  for idx in np.ndindex(div.shape[:-1]):
    norm, raw_div = raw.param_norm.values[idx], raw.diverged.values[idx]
    bad = raw_div | (norm > threshold)  # where the guard metric would first be NaN
    if not bad.any():
      assert not div[idx].any() and np.isnan(res.diverged_step.values[idx])
      continue
    first = int(np.argmax(bad))
    assert first > 0 and not div[idx][:first].any() and div[idx][first:].all(), (idx, first)
    assert steps[first - 1] < res.diverged_step.values[idx] <= steps[first]
    for name in ("train_loss", "param_norm"):
      held = res[name].values[idx]
      np.testing.assert_array_equal(held[first:], held[first])  # frozen from there on
      if not raw_div[first]:  # flagged by the guard: the last finite record's values, held
        np.testing.assert_array_equal(held[first], held[first - 1])


def test_cli_divergence_and_steps_zero(tmp_path):
  res = _cli("run", "width-sweep", "--set", "widths=8", "--set", "seeds=1", "--set",
             "lrs=0.1,1e30", "--set", "steps=30", "--no-plots", "--out", str(tmp_path / "a"))
  assert res.exit_code == 0, res.stderr
  ds = sweep.load(tmp_path / "a" / "results.nc")
  assert np.isfinite(ds.train_loss.values).all()
  assert ds.diverged.values[0, 0, 1, -1] and not ds.diverged.values[0, 0, 0].any()
  assert np.isnan(ds.diverged_step.values[0, 0, 0]) and ds.diverged_step.values[0, 0, 1] >= 1
  res = _cli("run", "width-sweep", *TINY, "--set", "steps=0", "--no-plots",
             "--out", str(tmp_path / "b"))
  assert res.exit_code == 0, res.stderr
  assert sweep.load(tmp_path / "b" / "results.nc").step.values.tolist() == [0]


# --- 6. files respect the umask ---


def test_result_files_respect_the_umask(tmp_path):
  old = os.umask(0o027)
  try:
    out = tmp_path / "run"
    res = _cli("run", "width-sweep", *TINY, "--out", str(out))
    assert res.exit_code == 0, res.stderr
  finally:
    os.umask(old)
  made = [p for p in os.listdir(out)]
  assert {"results.nc", "config.json", "checkpoint.npz"} <= set(made)
  assert any(p.endswith(".png") for p in made)
  for p in made:
    assert os.stat(out / p).st_mode & 0o777 == 0o640, p
  assert json.loads((out / "config.json").read_text())["experiment"] == "width-sweep"


def test_a_record_flags_a_non_finite_parameter_the_loss_does_not_read():
  """Steps check their loss only; a record checks every parameter (state leaves included), so a
  non-finite parameter that leaves the metrics finite (an unread embedding row, a running
  statistic) still flags the run there, its metrics held at the last record's."""
  from jaxtheory import train  # pylint: disable=import-outside-toplevel
  ds = data.gaussian_mixture(n_train=12, n_test=6, num_classes=3, input_dim=4, seed=0)
  tr = train.Trainer(nn.mlp((4,), 8, 1, 3), "xent", "sgd", num_classes=3)
  arrays = train.data_arrays(ds)
  hp = dict(seed=0, lr=0.1)
  st = tr.init(hp, arrays)
  st, first = train._hold_finite(st, tr.measure(st, hp, arrays))  # pylint: disable=protected-access
  assert not bool(first["diverged"])
  metrics = {k: jnp.zeros_like(v) for k, v in first.items()
             if k not in ("diverged", "diverged_step")}  # finite, as an unread parameter leaves them
  bad = st._replace(params=jax.tree.map(lambda a: a.at[(0,) * a.ndim].set(jnp.inf), st.params),
                    step=jnp.asarray(5, jnp.int32))
  held, out = train._hold_finite(bad, metrics)  # pylint: disable=protected-access
  assert bool(out["diverged"]) and int(out["diverged_step"]) == 5 and not bool(held.ok)
  np.testing.assert_array_equal(out["train_loss"], first["train_loss"])
