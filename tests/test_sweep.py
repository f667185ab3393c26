"""The sweep engine: sweep == loop, padded == unpadded, one trace per bucket, labelled results."""

import contextlib
import json
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import data, nn, sweep, train
from jaxtheory.errors import ConfigError


@pytest.fixture(scope="module")
def mixture():
  return data.gaussian_mixture(n_train=48, n_test=32, num_classes=3, input_dim=5, seed=1)


def _mlp(depth=2, act=nn.tanh):
  return lambda w: nn.mlp((5,), w, depth, 3, activation=act)


def _reference(s: sweep.Sweep, width: int):
  """Independent loop baseline: the network BUILT at ``width`` (no padding), one run per call."""
  dt = jnp.float64 if s.dtype == "float64" else jnp.float32
  opt = train.get_optimizer(s.optimizer)
  tr = train.Trainer(s.model(width), s.loss or "xent", opt, parametrization=s.parametrization,
                     padded=False,
                     batch_size=s.batch_size, num_classes=s.data.num_classes)
  intervals = np.diff(train.schedule(s.steps, s.record), prepend=0).astype(np.int32)

  def one(**hp):
    with jax.enable_x64(dt == jnp.float64):
      d = train.data_arrays(s.data)
      hp = {**opt.defaults, **s.hparams, "width": width, **hp}
      hp = {k: jnp.asarray(v, jnp.int32 if k in ("seed", "width") else dt) for k, v in hp.items()}
      st = jax.jit(lambda h, d: train.setup(tr, h, d))(hp, d)
      _, m = _SEG(tr)(st, hp, d, intervals)
      return jax.device_get(m)

  return one


_SEGS = {}


def _SEG(tr):
  if id(tr) not in _SEGS:
    _SEGS[id(tr)] = (tr, jax.jit(lambda st, hp, d, iv: train.segment(tr, st, hp, d, iv)))
  return _SEGS[id(tr)][1]


def _assert_close(a, b, tol):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert a.shape == b.shape
  np.testing.assert_allclose(a, b, atol=tol, rtol=0)


@pytest.mark.parametrize("optimizer,param,extra", [
    ("adam", "sp", {}), ("sgd", "mup", {}), ("momentum", "ntk", {}),
    ("adamw", "mf", {"weight_decay": [0.0, 0.1]})])
def test_sweep_equals_loop_of_unpadded_runs_float64(mixture, optimizer, param, extra):
  lrs = [0.01, 0.05] if optimizer.startswith("adam") else [0.1, 0.5]
  s = sweep.Sweep(_mlp(), mixture, dict(seed=[0, 3], width=[6, 8, 11], lr=lrs, **extra),
                  optimizer=optimizer, steps=100, record=4, parametrization=param,
                  dtype="float64")
  res = sweep.run(s)
  assert res.attrs["traces"] + res.attrs["programs_loaded"] == 1
  assert eval(res.attrs["buckets"]) == [[6, 8, 11]]  # one bucket: padding really happens
  for w in (6, 11):
    ref = _reference(s, w)
    for seed in (0, 3):
      for lr in lrs:
        more = {k: v[-1] for k, v in extra.items()}
        m = ref(seed=seed, lr=lr, **more)
        sel = dict(seed=seed, width=w, lr=lr, **more)
        for name in ("train_loss", "test_loss", "param_norm", "train_acc"):
          _assert_close(res[name].sel(sel), m[name], 1e-10)


def test_sweep_equals_loop_float32_minibatch(mixture):
  s = sweep.Sweep(_mlp(act=nn.relu), mixture, dict(seed=[0, 1], width=[12, 16]),
                  optimizer="adam", hparams=dict(lr=0.01), steps=100, batch_size=10,
                  record="every:25")
  res = sweep.run(s)
  ref = _reference(s, 12)
  for seed in (0, 1):
    _assert_close(res.train_loss.sel(seed=seed, width=12), ref(seed=seed)["train_loss"], 1e-5)


@pytest.fixture(scope="module")
def small_sweep(mixture):
  s = sweep.Sweep(_mlp(), mixture, dict(seed=[0, 1, 2], width=[8, 12]), steps=30, record=4,
                  dtype="float64")
  return s, sweep.run(s, strategy="vmap")


@pytest.mark.parametrize("strategy", ["map", "chunked", "loop", "auto"])
def test_strategies_agree(small_sweep, strategy):
  s, ref = small_sweep
  res = sweep.run(s, strategy=strategy, chunk_size=4)
  _assert_close(res.train_loss, ref.train_loss, 1e-12)
  assert res.attrs["traces"] + res.attrs["programs_loaded"] == 1


def test_one_trace_per_bucket_and_hyperparameters_are_traced(mixture):
  s = sweep.Sweep(_mlp(), mixture,
                  dict(seed=[0, 1], width=[4, 8, 64, 96], lr=[0.05, 0.1, 0.2],
                       init_scale=[0.5, 1.0], gamma=[0.5, 1.0]),
                  steps=5, record=2)
  res = sweep.run(s)
  groups = eval(res.attrs["buckets"])
  assert len(groups) >= 2
  assert res.attrs["traces"] + res.attrs["programs_loaded"] == len(groups)
  assert res.train_loss.dims == ("seed", "width", "lr", "init_scale", "gamma", "step")
  assert not res.train_loss.isnull().any()


def test_identical_results_for_identical_config(mixture):
  s = sweep.Sweep(_mlp(), mixture, dict(seed=[0, 1], width=[8, 16]), steps=20, record=3,
                  batch_size=16)
  a, b = sweep.run(s), sweep.run(s)
  np.testing.assert_array_equal(a.train_loss.values, b.train_loss.values)
  assert not np.array_equal(a.train_loss.sel(seed=0).values, a.train_loss.sel(seed=1).values)


def test_buckets_bound_padded_flops():
  cost = lambda w: float(w) ** 2
  widths = [16, 32, 64, 128, 256, 512, 1024]
  groups = sweep.buckets(widths, cost, 1.5)
  assert sorted(w for g in groups for w in g) == widths
  for g in groups:
    assert len(g) * cost(max(g)) <= 1.5 * sum(cost(w) for w in g) + 1e-9
  assert sweep.padded_flops_ratio(groups, cost) <= 1.5
  dense = list(range(100, 131, 2))
  assert len(sweep.buckets(dense, cost, 1.5)) == 1


def test_n_train_sweep_equals_truncated_dataset(mixture):
  s = sweep.Sweep(_mlp(), mixture, dict(width=[8], n_train=[20, 48]), steps=30, record=3,
                  dtype="float64")
  res = sweep.run(s)
  small = mixture._replace(x_train=mixture.x_train[:20], y_train=mixture.y_train[:20])
  ref = sweep.run(sweep.Sweep(**{**s.__dict__, "data": small, "grid": dict(width=[8])}))
  _assert_close(res.train_loss.sel(n_train=20, seed=0), ref.train_loss.sel(seed=0), 1e-10)
  _assert_close(res.test_loss.sel(n_train=20, seed=0), ref.test_loss.sel(seed=0), 1e-10)


def test_label_noise_axis(mixture):
  s = sweep.Sweep(_mlp(), mixture, dict(width=[8], label_noise=[0.0, 0.5]), steps=40, record=2)
  res = sweep.run(s)
  clean = sweep.run(sweep.Sweep(**{**s.__dict__, "grid": dict(width=[8])}))
  _assert_close(res.train_loss.sel(label_noise=0.0), clean.train_loss, 0)
  final = res.train_acc.isel(step=-1, seed=0, width=0)
  assert float(final.sel(label_noise=0.5)) < float(final.sel(label_noise=0.0))


@pytest.mark.parametrize("optimizer", sorted(train.OPTIMIZERS))
def test_every_optimizer_trains_and_is_exact_under_padding(mixture, optimizer):
  hp = dict(lr=0.02) if optimizer in ("adam", "adamw", "muon") else dict(lr=0.2)
  s = sweep.Sweep(_mlp(), mixture, dict(width=[6, 9]), optimizer=optimizer, hparams=hp,
                  steps=100, record=3, dtype="float64")
  res = sweep.run(s)
  loss = res.train_loss.sel(seed=0)
  assert float(loss.isel(step=-1, width=1)) < 0.8 * float(loss.isel(step=0, width=1))
  _assert_close(res.train_loss.sel(width=6, seed=0), _reference(s, 6)(seed=0)["train_loss"], 1e-10)


def test_divergent_run_is_flagged_and_frozen(mixture):
  s = sweep.Sweep(_mlp(act=nn.relu), mixture, dict(width=[8], lr=[0.1, 1e6]), steps=30, record=4)
  res = sweep.run(s)
  assert bool(res.diverged.sel(lr=1e6).isel(step=-1, seed=0))
  assert not bool(res.diverged.sel(lr=0.1).any())
  assert np.isfinite(res.param_norm.sel(lr=1e6)).all()


def test_results_roundtrip_netcdf(tmp_path, mixture):
  s = sweep.Sweep(_mlp(), mixture, dict(seed=[0, 1], width=[8], lr=[0.1, 0.2]), steps=5, record=2)
  res = sweep.run(s)
  path = sweep.save(res, tmp_path / "r.nc")
  back = sweep.load(path)
  np.testing.assert_array_equal(back.train_loss.values, res.train_loss.values)
  assert list(back.lr.values) == [0.1, 0.2]
  assert back.attrs["optimizer"] == "sgd"


@pytest.mark.parametrize("grid,message", [
    (dict(width=[0, 8]), "width must be positive"),
    (dict(width=[8.5]), "width must be integers"),
    (dict(width=[]), "has no values"),
    (dict(width=[8], foo=[1]), "unknown sweep axis 'foo'"),
    (dict(width=[8], n_train=[1000]), "exceeds the 48 training examples"),
    (dict(width=[8, 8]), "duplicate values"),
    ({}, "give the width to sweep"),
])
def test_bad_grids_raise_config_error(mixture, grid, message):
  with pytest.raises(ConfigError, match=message):
    sweep.plan(sweep.Sweep(_mlp(), mixture, grid, steps=3))


def test_model_data_mismatch_is_a_clear_error(mixture):
  with pytest.raises(ConfigError, match=r"expects inputs of shape \(7,\)"):
    sweep.plan(sweep.Sweep(lambda w: nn.mlp((7,), w, 1, 3), mixture, dict(width=[8])))
  with pytest.raises(ConfigError, match=r"outputs shape \(4,\)"):
    sweep.plan(sweep.Sweep(lambda w: nn.mlp((5,), w, 1, 4), mixture, dict(width=[8])))
  with pytest.raises(ConfigError, match="unknown optimizer 'adamm'"):
    sweep.plan(sweep.Sweep(_mlp(), mixture, dict(width=[8]), optimizer="adamm"))
  with pytest.raises(ConfigError, match="unknown strategy"):
    sweep.run(sweep.Sweep(_mlp(), mixture, dict(width=[8]), steps=1), strategy="fast")


def test_choose_chunk_policy():
  assert sweep.choose_chunk(64, 1e3, "gpu") == 64
  assert sweep.choose_chunk(64, 1e12, "cpu") == 1
  assert sweep.choose_chunk(64, 1e3, "cpu") == 64
  assert 1 < sweep.choose_chunk(64, 20e6, "cpu") < 64
  assert sweep.choose_chunk(64, 40e6, "cpu", minibatch=True) > sweep.choose_chunk(64, 40e6, "cpu")
  # Convolutions mapped over runs become grouped ones, slow on CPU unless tiny: a budget of
  # their own (measured: 34 MFLOP per run-step vmapped best, 111 and 355 MFLOP one at a time).
  assert sweep.choose_chunk(64, 1e3, "cpu", convolutional=True) == 64
  assert sweep.choose_chunk(8, 34e6, "cpu", convolutional=True) == 5
  assert sweep.choose_chunk(8, 111e6, "cpu", convolutional=True) == 1
  assert sweep.choose_chunk(8, 355e6, "cpu", convolutional=True, matmuls=40) == 1
  assert sweep.choose_chunk(64, 1e9, "gpu", convolutional=True) == 64
  # The CPU thresholds are per matrix product: a deeper net (more products of the same size)
  # vmaps more runs than a shallow one with the same FLOPs per step.
  assert sweep.choose_chunk(64, 200e6, "cpu", matmuls=20) == 3
  assert sweep.choose_chunk(64, 200e6, "cpu", matmuls=8) == sweep.choose_chunk(64, 200e6, "cpu") == 1


def test_auto_chunk_pads_the_runs_least():
  from jaxtheory.sweep.planning import _strategy_chunk
  # 16 runs with room for chunks of 3: chunks of 2 (16 runs), not of 3 (18, two padded).
  assert _strategy_chunk("auto", 16, 200e6, None, matmuls=20) == ("chunked", 2)
  assert _strategy_chunk("auto", 17, 40e6, None) == ("chunked", 6)  # 18 rather than 21
  assert _strategy_chunk("auto", 32, 60e6, None) == ("chunked", 4)


def test_auto_strategy_runs_convolutional_nets_one_at_a_time_on_cpu_unless_tiny():
  ds = data.digits(flatten=False)
  grid = dict(seed=[0, 1, 2, 3], width=[4])
  small = ds._replace(x_train=ds.x_train[:64], y_train=ds.y_train[:64])
  cnn = lambda d, w: sweep.Sweep(lambda _: nn.cnn(d.input_shape, w, 1, 10), d,
                                 dict(grid, width=[w]), steps=1, record=[1])
  mlp = sweep.Sweep(lambda w: nn.mlp((64,), w, 1, 10), data.digits(), grid, steps=1, record=[1])
  assert sweep.run(cnn(small, 4), progress=False).attrs["strategy"] == '["vmap:4"]'
  assert sweep.run(cnn(ds, 32), progress=False).attrs["strategy"] == '["map:1"]'
  assert sweep.run(mlp, progress=False).attrs["strategy"] == '["vmap:4"]'


def test_user_metric_is_recorded_in_the_compiled_loop(mixture):
  import jax.numpy as jnp

  def margin(params, apply, d):
    f = apply(params, d["x_test"])
    return jnp.mean(jnp.max(f, -1) - jnp.min(f, -1))

  s = sweep.Sweep(_mlp(), mixture, dict(width=[8]), steps=20, record="every:10",
                  metrics={"margin": margin})
  res = sweep.run(s)
  assert list(res.step.values) == [0, 10, 20]
  assert res.margin.dims == ("seed", "width", "step")
  m = res.margin.isel(seed=0, width=0)
  assert float(m.isel(step=-1)) != float(m.isel(step=0))



@pytest.mark.parametrize("strategy", ["map", "vmap"])
def test_divergent_run_leaves_its_batch_bitwise_unchanged(mixture, strategy):
  base = dict(seed=[0, 1], width=[8, 12])
  s = sweep.Sweep(_mlp(act=nn.relu), mixture, dict(base, lr=[0.1, 0.3, 1e6]), steps=30, record=4)
  bad = sweep.run(s, strategy=strategy)
  good = sweep.run(sweep.Sweep(**{**s.__dict__, "grid": dict(base, lr=[0.1, 0.3])}),
                   strategy=strategy)
  assert bool(bad.diverged.sel(lr=1e6).isel(step=-1).all())
  for m in ("train_loss", "test_loss", "param_norm"):
    np.testing.assert_array_equal(bad[m].sel(lr=[0.1, 0.3]).values, good[m].values)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4097])
def test_minibatch_permutation_is_a_bijection_per_epoch(n):
  from jaxtheory.train import _permute
  perms = [np.asarray(jax.jit(_permute)(jnp.arange(n), jnp.int32(n), jax.random.key(e)))
           for e in range(2)]
  for p in perms:
    assert sorted(p.tolist()) == list(range(n))
  if n > 8:
    assert not np.array_equal(perms[0], perms[1])


def test_minibatch_epochs_visit_every_example_once(mixture):
  seen = []
  from jaxtheory.train import RunState, Trainer, _batch
  tr = Trainer(nn.mlp((5,), 4, 1, 3), "xent", train.get_optimizer("sgd"), batch_size=10,
               num_classes=3, padded=False)
  n_active = 37
  w = (jnp.arange(48) < n_active).astype(jnp.float32)
  st = RunState(None, None, None, jnp.arange(48), w, jax.random.key_data(jax.random.key(0)),
                jnp.int32(0), jnp.bool_(True))
  d = {"x_train": jnp.arange(48.0)[:, None] * jnp.ones((1, 5))}
  for step in range(4):  # ceil(37 / 10) = 4 batches per epoch
    x, y, wb = _batch(tr, st._replace(step=jnp.int32(step)), d)
    seen += [int(i) for i, v in zip(y, wb) if v > 0]
  assert sorted(seen) == list(range(n_active))


def test_memory_budget_splits_runs_into_groups_with_equal_results(mixture):
  s = sweep.Sweep(_mlp(), mixture, dict(seed=[0, 1, 2, 3, 4], width=[8, 12]), steps=20,
                  record=3)
  whole = sweep.run(s)
  from jaxtheory.sweep import loop
  per_run = loop._memory_per_run(
      loop._Bucket(sweep.plan(s), [8, 12], train.data_arrays(mixture), "auto", None, None,
                     1).tr, dict(seed=jnp.int32(0), width=jnp.int32(8), lr=jnp.float32(0.1)),
      train.data_arrays(mixture))
  data_bytes = sum(v.size * v.dtype.itemsize for v in jax.tree.leaves(train.data_arrays(mixture)))
  split = sweep.run(s, memory_budget=data_bytes + 3.5 * per_run)
  assert "x4groups" in split.attrs["strategy"]  # 10 runs, 3 per group
  assert split.attrs["traces"] + split.attrs["programs_loaded"] == 1
  # The same runs at another vmap batch size (3 per group, not 10): XLA's CPU kernels may tile a
  # batch of 3 and one of 10 differently, which moves a few results by an ulp on some CPUs (CI
  # measured 1.2e-7 absolute). Same programs up to float32 rounding, so not bitwise.
  np.testing.assert_allclose(split.train_loss.values, whole.train_loss.values, rtol=1e-5, atol=0)
  with pytest.raises(ConfigError, match="needs about .* MiB but the memory budget is"):
    sweep.run(s, memory_budget=data_bytes + 0.5 * per_run)


def test_array_metrics_and_returned_params_match_the_recorded_outputs(mixture):
  """A metric may return an array (its axes are named by ``fn.dims``); the returned
  final and initial parameters reproduce the recorded outputs at the last and first step."""
  from jaxtheory.probes import over_runs

  def f_test(params, apply, d):
    return apply(params, d["x_test"])
  f_test.dims = ("example", "output")
  s = sweep.Sweep(_mlp(), mixture, dict(width=[8, 12, 32], seed=[0, 1]), steps=20, record=5,
                  metrics={"f_test": f_test})
  res, groups = sweep.execute(s)
  assert res.f_test.dims == ("seed", "width", "step", "example", "output")
  assert res.f_test.shape == (2, 3, len(res.step), 32, 3)
  p = sweep.plan(s)
  x = jnp.asarray(mixture.x_test, jnp.float32)
  for step, gs in ((-1, groups), (0, sweep.initial_params(s))):
    assert sorted(np.concatenate([g.runs for g in gs]).tolist()) == list(range(6))
    for g in gs:
      f = over_runs(lambda pr, c: g.apply(pr, x, c), g.params, g.ctx)
      grid = sweep.to_grid(p, g.runs, f, ("example", "output"))
      for j, r in enumerate(g.runs):
        seed, width = (p.grid[a][i] for a, i in zip(p.grid, p.index[r]))
        assert g.coords["width"][j] == width and g.coords["seed"][j] == seed
        want = res.f_test.sel(seed=seed, width=width).isel(step=step).values
        np.testing.assert_allclose(f[j], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grid.sel(seed=seed, width=width).values, want,
                                   rtol=1e-5, atol=1e-6)


def test_metric_dims_must_match_the_returned_array(mixture):
  def bad(params, apply, d):
    return apply(params, d["x_test"])
  bad.dims = ("example",)
  s = sweep.Sweep(_mlp(), mixture, dict(width=[8]), steps=2, record=1, metrics={"bad": bad})
  with pytest.raises(ValueError, match="declares dims"):
    sweep.run(s)


def test_metric_may_ask_for_the_run_context_and_model(mixture):
  def active_width(params, apply, d, ctx, model):
    assert model.input_shape == (5,)
    return jnp.asarray(ctx.width, jnp.float32)
  s = sweep.Sweep(_mlp(), mixture, dict(width=[8, 12]), steps=2, record=1,
                  metrics={"active_width": active_width})
  res = sweep.run(s)
  np.testing.assert_array_equal(res.active_width.isel(seed=0, step=-1).values, [8, 12])


def test_token_models_sweep():
  """Models reading integer token ids (embeddings) plan and train (their cost is
  estimated with integer inputs)."""
  ds = data.modular_arithmetic(p=7, op="add", train_fraction=0.5)
  s = sweep.Sweep(lambda w: nn.transformer(8, 3, w, 1, 2, out_dim=7), ds,
                  dict(width=[8, 12]), "adamw", steps=3, record=1)
  res = sweep.run(s)
  assert np.isfinite(res.train_loss.values).all()


@pytest.mark.optimized  # compared with the default compilation
def test_initialisation_compiled_for_speed_draws_the_same_bits():
  """Buckets compile their initialisation with ``INIT_COMPILER_OPTIONS`` (faster to compile):
  every parameter of every architecture must equal, bit for bit, the default compilation's."""
  from jaxtheory.sweep import loop  # pylint: disable=import-outside-toplevel
  models = [nn.mlp((10,), 24, 2, 3), nn.cnn((8, 8, 1), 6, 2, 3),
            nn.transformer(11, 5, 16, 1, 2, 11)]
  seeds = jnp.arange(3)
  for m in models:
    f = lambda s, m=m: jax.lax.map(lambda k: m.init(jax.random.key(k)), s)
    want = jax.jit(f)(seeds)
    got = loop.compile_init(f, seeds)(seeds)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


class _CompilingThreads:
  """The names of the threads XLA compiles on while ``listening`` (a jax.monitoring listener,
  registered once per process)."""
  registered, names = False, None

  @classmethod
  def start(cls) -> None:
    if not cls.registered:
      jax.monitoring.register_event_duration_secs_listener(cls._note)
      cls.registered = True
    cls.names = []

  @classmethod
  def stop(cls) -> list[str]:
    names, cls.names = cls.names, None
    return names

  @classmethod
  def _note(cls, event, secs, **kwargs):
    del secs, kwargs
    if cls.names is not None and event.endswith("backend_compile_duration"):
      cls.names.append(threading.current_thread().name)


@contextlib.contextmanager
def _nothing_into_jax_cache():
  """JAX's persistent cache (on for the suite) takes no program meanwhile: every program of
  a sweep not compiled before in this run is compiled, not loaded."""
  was = jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1e9)
  try:
    yield
  finally:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", was)


def test_buckets_compile_together_on_threads_to_the_same_results(monkeypatch):
  """With more than one core every bucket's programs start compiling before the first bucket
  trains, as many at a time as there are cores, on a pool's threads; the results equal, bit
  for bit, those of one core (each bucket compiled in the main thread when it is reached)."""
  from jaxtheory import compile_cache  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv(compile_cache.STORE_ENV, "off")  # compile, do not load
  ds = data.gaussian_mixture(n_train=32, n_test=16, num_classes=3, input_dim=4, seed=0)
  s = sweep.Sweep(model=lambda w: nn.mlp((4,), w, 1, 3), data=ds,
                  grid=dict(seed=[0, 1], width=[4, 64], lr=[0.1, 0.3]), steps=6, record=3)
  assert len(sweep.plan(s).buckets) == 2
  out = {}
  try:
    with _nothing_into_jax_cache():
      for workers in (1, 3):
        monkeypatch.setattr(compile_cache, "compile_workers", lambda w=workers: w)
        monkeypatch.setattr(compile_cache, "_POOL", [])  # a pool of that many threads
        _CompilingThreads.start()
        out[workers] = sweep.run(s, progress=False)
        out[workers, "threads"] = _CompilingThreads.stop()
  finally:
    _CompilingThreads.stop()
  on_pool = lambda names: sum(n.startswith("jaxtheory-compile") for n in names)
  assert on_pool(out[1, "threads"]) == 0
  assert on_pool(out[3, "threads"]) == 4, out[3, "threads"]  # init and segment of each bucket
  for k in ("train_loss", "test_loss", "param_norm"):
    np.testing.assert_array_equal(out[1][k].values, out[3][k].values)


def test_run_over_compiles_its_parts_ahead_and_each_part_takes_its_own(monkeypatch):
  """run_over starts every part's programs before the first part trains; each part's run takes
  the programs started for it (none is left over, none compiles twice), to the same results as
  a run on one core."""
  from jaxtheory import compile_cache  # pylint: disable=import-outside-toplevel
  if not compile_cache.executables_enabled():
    pytest.skip("programs are started ahead by their executable-store keys: the store is off")
  ds = data.gaussian_mixture(n_train=24, n_test=8, num_classes=3, input_dim=5, seed=1)
  make = lambda depth: sweep.Sweep(lambda w: nn.mlp((5,), w, depth, 3), ds,
                                   dict(seed=[0, 1], width=[5, 40]), "sgd", dict(lr=0.2),
                                   steps=5, record=5)
  out = {}
  try:
    with _nothing_into_jax_cache():
      for workers in (3, 1):  # the parallel run first: nothing is in the store yet
        monkeypatch.setattr(compile_cache, "compile_workers", lambda w=workers: w)
        monkeypatch.setattr(compile_cache, "_POOL", [])
        if workers == 1:  # compile again, in the main thread, rather than load
          monkeypatch.setenv(compile_cache.STORE_ENV, "off")
        stored = compile_cache.stats["stored"]
        _CompilingThreads.start()
        out[workers] = sweep.run_over("depth", [1, 2], make, progress=False)
        out[workers, "threads"] = _CompilingThreads.stop()
        out[workers, "stored"] = compile_cache.stats["stored"] - stored
        assert not compile_cache._AHEAD  # pylint: disable=protected-access
  finally:
    _CompilingThreads.stop()
  # 2 parts x 2 buckets x (init, segment), all on the pool, each once (stored once, with
  # the buckets' decisions); on one core all 8 again, in the main thread
  on_pool = lambda names: sum(n.startswith("jaxtheory-compile") for n in names)
  assert on_pool(out[3, "threads"]) == 8, out[3, "threads"]
  assert out[3, "stored"] == 8 + 4 and out[1, "stored"] == 0
  assert on_pool(out[1, "threads"]) == 0 and len(out[1, "threads"]) >= 8
  for k in ("train_loss", "test_loss", "param_norm"):
    np.testing.assert_array_equal(out[1][k].values, out[3][k].values)


def test_a_run_over_that_fails_leaves_nothing_queued_or_started_ahead(monkeypatch, tmp_path):
  """A part that fails (here: its checkpoint exists and resume is off) cancels the later parts'
  queued compilations and forgets their programs: no process waits on them to exit."""
  from jaxtheory import compile_cache  # pylint: disable=import-outside-toplevel
  if not compile_cache.executables_enabled():
    pytest.skip("programs are started ahead by their executable-store keys: the store is off")
  monkeypatch.setattr(compile_cache, "compile_workers", lambda: 2)
  monkeypatch.setattr(compile_cache, "_POOL", [])
  ds = data.gaussian_mixture(n_train=20, n_test=8, num_classes=3, input_dim=3, seed=2)
  make = lambda depth: sweep.Sweep(lambda w: nn.mlp((3,), w, depth, 3), ds,
                                   dict(seed=[0], width=[6, 30]), "sgd", dict(lr=0.1),
                                   steps=3, record=3)
  ck = tmp_path / "ck.npz"
  (tmp_path / "ck-depth-1.npz").write_bytes(b"")  # the first part's checkpoint exists
  with pytest.raises(Exception, match="exists"):
    sweep.run_over("depth", [1, 2, 3], make, progress=False, checkpoint=ck)
  assert not compile_cache._AHEAD  # pylint: disable=protected-access
  queued = list(compile_cache._QUEUED)  # pylint: disable=protected-access
  assert all(f.cancelled() or f.running() for f in queued)


@pytest.mark.parametrize("opt,base_width", [("sgd", None), ("adam", 8.0)])
def test_parametrizations_chosen_at_run_time_equal_their_own_sweeps(opt, base_width):
  """A parametrization axis shares each bucket's program and gives every run its own numbers."""
  ds = data.teacher_student(n_train=16, n_test=8, input_dim=5, seed=0)
  names = ["sp", "ntk", "mup", "mf"]
  hp = dict(lr=0.01) if base_width is None else dict(lr=0.01, base_width=base_width)
  make = lambda grid, p="sp": sweep.Sweep(
      lambda w: nn.mlp((5,), w, 2, 1, b_std=0.1), ds, grid, opt, hp, steps=4, record=[2, 4],
      loss="mse", parametrization=p, max_waste=4.0)
  grid = dict(seed=[0, 1], width=[8, 16], gamma=[1.0, 0.5])
  both = sweep.run(make(dict(grid, parametrization=names)), progress=False)
  assert both.train_loss.dims[:3] == ("parametrization", "seed", "width")
  assert list(both.parametrization.values) == names
  assert both.attrs["parametrization"] == "sp,ntk,mup,mf"
  assert json.loads(both.attrs["buckets"]) == [[8, 16]]
  assert both.attrs["traces"] + both.attrs["programs_loaded"] == 1  # one program for all four
  # Two of the four against their own sweeps here, the other two in the other case (CI time).
  for name in (names[::2] if opt == "sgd" else names[1::2]):
    one = sweep.run(make(grid, name), progress=False)
    for var in ("train_loss", "test_loss", "param_norm"):
      np.testing.assert_allclose(both[var].sel(parametrization=name).values, one[var].values,
                                 rtol=2e-6, atol=0, err_msg=f"{name} {var}")
  # They really differ (the selection is not stuck on one of them), except at the
  # base width, where each equals SP, and mf under Adam, which is muP in another form.
  finals = both.train_loss.isel(step=-1, seed=0, gamma=0)
  distinct = 4 if opt == "sgd" else 3
  assert len({round(float(v), 6) for v in finals.sel(width=16).values}) == distinct, finals.values
  if base_width is not None:
    np.testing.assert_allclose(finals.sel(width=8).values, finals.sel(width=8)[0].values, rtol=1e-5)


def test_a_parametrization_axis_is_checked_and_kernels_need_one():
  ds = data.teacher_student(n_train=8, n_test=8, input_dim=3, seed=0)
  make = lambda values: sweep.Sweep(lambda w: nn.mlp((3,), w, 1, 1), ds,
                                    dict(width=[4], parametrization=values), steps=1, loss="mse")
  for values, match in ((["sp", "sp"], "duplicate"), (["sp", 1.0], "unknown parametrization 1.0"),
                        ([], "unknown parametrization None")):
    with pytest.raises(ConfigError, match=match):
      sweep.plan(make(values))
  with pytest.raises(ValueError, match="needs choice="):
    nn.Ctx(("sp", "mup"))
  from jaxtheory.kernels import analytic  # pylint: disable=import-outside-toplevel
  ctx = nn.Ctx(("sp", "ntk"), choice=jnp.asarray(1))
  with pytest.raises(ValueError, match="one parametrization"):
    analytic.kernel_fn(nn.mlp((3,), 4, 1, 1), ctx)(jnp.ones((2, 3)))
