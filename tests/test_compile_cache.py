"""Tests for the persistent compilation cache (jaxtheory.compile_cache)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtheory import nn
from jaxtheory.kernels import analytic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One small sweep in a fresh process; prints JAX's cache hit / miss counts and stderr stays clean.
# The sweep records a float64 metric through an SVD: a LAPACK call, which a program loaded
# from the store (never lowered in its process) must still find.
SCRIPT = """
import json, sys
from jaxtheory import compile_cache, data, nn, sweep
import jax, jax.numpy as jnp
counts = {"cache_hits": 0, "cache_misses": 0}
def listen(event, **kwargs):
  name = event.rsplit("/", 1)[-1]
  if event.startswith("/jax/compilation_cache/") and name in counts:
    counts[name] += 1
jax.monitoring.register_event_listener(listen)
act = nn.activation(sys.argv[1])
top_sv = lambda params, apply, d: jnp.linalg.svd(apply(params, d["x_train"]), compute_uv=False)[0]
ds = data.gaussian_mixture(n_train=32, n_test=32, num_classes=3, input_dim=4)
s = sweep.Sweep(model=lambda w: nn.mlp((4,), w, 1, 3, activation=act), data=ds,
                grid=dict(seed=[0, 1], width=[8, 16]), steps=4, record=2, max_waste=0.0,
                metrics={"top_sv": top_sv}, dtype="float64")
res = sweep.run(s, progress=False)
print(json.dumps(dict(counts, dir=compile_cache.directory(), traces=res.attrs["traces"],
                      loaded=res.attrs["programs_loaded"], store=dict(compile_cache.stats),
                      loss=res.train_loss.values.tolist(), sv=res.top_sv.values.tolist())))
"""


def _run(env_value, tmp_path, activation="relu", prelude=""):
  env = dict(os.environ, JAXTHEORY_COMPILATION_CACHE=env_value, JAX_PLATFORMS="cpu")
  for k in ("TF_CPP_MIN_LOG_LEVEL", "JAXTHEORY_EXECUTABLE_STORE"):
    env.pop(k, None)
  res = subprocess.run([sys.executable, "-c", prelude + SCRIPT, activation], env=env, cwd=tmp_path,
                       text=True, capture_output=True, timeout=600, check=False)
  assert res.returncode == 0, res.stderr
  return json.loads(res.stdout.strip().splitlines()[-1]), res.stderr


def test_second_run_loads_its_programs_and_compiles_nothing(tmp_path):
  cache = str(tmp_path / "cache")
  first, err1 = _run(cache, tmp_path)
  second, err2 = _run(cache, tmp_path)
  assert first["dir"] == second["dir"] == cache
  # First: two width buckets (max_waste=0), each traced, compiled and stored: its decisions
  # (strategy, memory groups), its initialisation and its training segment.
  assert first["cache_misses"] > 0 and first["cache_hits"] == 0
  assert first["traces"] == 2 and first["loaded"] == 0 and first["store"]["stored"] == 2 * 3
  # Second: both buckets' programs come whole from the store: no training program is traced,
  # and what JAX still compiles (small host-side programs) comes from its own cache.
  assert second["traces"] == 0 and second["loaded"] == 2 and second["store"] == {"hits": 2 * 3}
  assert second["cache_misses"] == 0 and 0 < second["cache_hits"] < first["cache_misses"]
  assert second["loss"] == first["loss"] and second["sv"] == first["sv"]  # bit for bit
  assert len(os.listdir(os.path.join(cache, "executables"))) == 2 * 3
  # XLA's spurious "Target machine feature ..." lines on loading a CPU program are silenced.
  assert "Target machine feature" not in err1 + err2


def test_programs_jax_loaded_from_its_cache_are_not_stored(tmp_path):
  # XLA:CPU writes a program it loaded from a cache back without its machine code: stored,
  # it would fail in the next process ("Function <fusion> not found"). Here the store is
  # emptied while JAX's cache is kept, so the second run's programs all come from JAX's cache.
  cache = str(tmp_path / "cache")
  first, _ = _run(cache, tmp_path)
  for name in os.listdir(os.path.join(cache, "executables")):
    os.remove(os.path.join(cache, "executables", name))
  second, _ = _run(cache, tmp_path)
  assert second["traces"] == 2 and second["cache_misses"] == 0
  assert second["store"] == {"misses": 2 * 3, "from_jax_cache": 2 * 2, "stored": 2}  # decisions only
  third, _ = _run(cache, tmp_path)  # a new process: nothing it loads lacks its code
  assert third["store"].get("unloadable", 0) == 0 and third["traces"] == 2
  assert third["loss"] == second["loss"] == first["loss"] and third["sv"] == first["sv"]


def test_a_new_version_stores_the_programs_that_jax_already_cached(tmp_path):
  # A new jaxtheory version makes every store key new while most programs' computations are
  # unchanged, so JAX's cache holds them under their usual keys. Loaded from there they could
  # not be stored (see above) and every later invocation would trace them again; they are
  # compiled afresh for the store instead, once per version.
  cache = str(tmp_path / "cache")
  first, _ = _run(cache, tmp_path)
  new_version = "from jaxtheory import compile_cache; compile_cache._SOURCE = '0123456789abcdef'\n"
  second, _ = _run(cache, tmp_path, prelude=new_version)
  assert second["traces"] == 2 and second["loaded"] == 0
  assert second["store"].get("from_jax_cache", 0) == 0 and second["store"]["stored"] == 2 * 3
  third, _ = _run(cache, tmp_path, prelude=new_version)
  assert third["traces"] == 0 and third["loaded"] == 2 and third["store"] == {"hits": 2 * 3}
  assert third["loss"] == second["loss"] == first["loss"] and third["sv"] == first["sv"]


def test_a_changed_computation_never_loads_a_stored_program(tmp_path):
  cache = str(tmp_path / "cache")
  relu, _ = _run(cache, tmp_path, "relu")
  tanh, _ = _run(cache, tmp_path, "tanh")  # same shapes, another model: its own programs
  assert tanh["loaded"] == 0 and tanh["traces"] == 2
  # Its initialisations are relu's programs (the activation is not in them) under new store
  # keys: compiled afresh (JAX's cache would serve them without machine code) and stored, so
  # that a later tanh run loads everything from the store.
  assert tanh["store"]["stored"] == 2 * 3 and tanh["store"].get("from_jax_cache", 0) == 0
  assert tanh["loss"] != relu["loss"]
  again, _ = _run(cache, tmp_path, "tanh")
  assert again["traces"] == 0 and again["store"] == {"hits": 2 * 3}
  assert again["loss"] == tanh["loss"]


def test_one_program_under_two_store_keys_is_compiled_once_and_stored_twice(tmp_path):
  # A relu and a tanh sweep in one process are different computations (other store keys) with
  # the same initialisation programs (the activation is not in them): the second takes the
  # first's compiled ones, and a later process loads every program of both from the store.
  cache = str(tmp_path / "cache")
  code = SCRIPT.replace("res = sweep.run(s, progress=False)",
                        "relu = sweep.run(s, progress=False)\n"
                        "import dataclasses\n"
                        "tanh = lambda w: nn.mlp((4,), w, 1, 3, activation=nn.activation('tanh'))\n"
                        "res = sweep.run(dataclasses.replace(s, model=tanh), progress=False)")
  env = dict(os.environ, JAXTHEORY_COMPILATION_CACHE=cache, JAX_PLATFORMS="cpu")
  for k in ("TF_CPP_MIN_LOG_LEVEL", "JAXTHEORY_EXECUTABLE_STORE"):
    env.pop(k, None)
  runs = []
  for _ in range(2):
    res = subprocess.run([sys.executable, "-c", code, "relu"], env=env, cwd=tmp_path, text=True,
                         capture_output=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr
    runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
  first, second = runs
  assert first["store"]["same_program"] == 2 and first["store"]["stored"] == 2 * 2 * 3 - 2
  assert second["store"] == {"hits": 2 * 2 * 3} and second["traces"] == 0
  assert second["loss"] == first["loss"]


def test_store_is_on_with_the_cache_and_off_when_asked(tmp_path):
  code = "from jaxtheory import compile_cache\nprint(compile_cache.executables_enabled())"
  for store, expected in ((None, "True"), ("off", "False")):
    env = dict(os.environ, JAXTHEORY_COMPILATION_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
    env.pop("JAXTHEORY_EXECUTABLE_STORE", None)
    if store is not None:
      env["JAXTHEORY_EXECUTABLE_STORE"] = store
    res = subprocess.run([sys.executable, "-c", code], env=env, text=True, capture_output=True,
                         timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == expected


def test_a_folder_shared_with_a_process_without_filelock_keeps_caching(tmp_path):
  # JAX's own size bound (on only with filelock installed) reads every entry's access-time file
  # before each write: entries written without one (an environment without filelock) made every
  # later write fail ("FileNotFoundError: ...-atime" warnings, nothing stored). jaxtheory bounds
  # the folder itself, so both kinds of process cache alike.
  cache = tmp_path / "cache"
  _run(str(cache), tmp_path, prelude="import sys; sys.modules['filelock'] = None\n")
  entries = lambda: {n for n in os.listdir(cache) if n.endswith("-cache")}
  before = entries()
  counts, err = _run(str(cache), tmp_path, activation="tanh")  # new programs to write
  assert "Error writing persistent compilation cache entry" not in err, err
  assert counts["cache_misses"] > 0 and entries() > before


def test_cache_folder_is_bounded_oldest_first_at_most_once_an_interval(tmp_path):
  from jaxtheory import compile_cache
  for i in range(5):
    (tmp_path / f"jit_f-{i}-cache").write_bytes(b"x" * 100)
    (tmp_path / f"jit_f-{i}-atime").write_bytes(b"t" * 8)
    os.utime(tmp_path / f"jit_f-{i}-cache", (1000 + i, 1000 + i))
  compile_cache.bound_jax_cache(str(tmp_path), max_bytes=250)
  left = sorted(n for n in os.listdir(tmp_path) if n.startswith("jit_"))
  assert left == ["jit_f-3-atime", "jit_f-3-cache", "jit_f-4-atime", "jit_f-4-cache"]
  (tmp_path / "jit_f-5-cache").write_bytes(b"x" * 100)
  compile_cache.bound_jax_cache(str(tmp_path), max_bytes=250)  # within the hour: not again
  assert (tmp_path / "jit_f-3-cache").exists()
  compile_cache.bound_jax_cache(str(tmp_path), max_bytes=250, every_s=0.0)
  assert not (tmp_path / "jit_f-3-cache").exists() and (tmp_path / "jit_f-5-cache").exists()


def test_cache_off_compiles_every_time(tmp_path):
  counts, _ = _run("off", tmp_path)
  assert counts["cache_hits"] == counts["cache_misses"] == 0 and counts["dir"] is None
  assert counts["traces"] == 2 and counts["loaded"] == 0 and counts["store"] == {}


def test_default_cache_stays_off_when_jax_came_first_and_would_log(tmp_path):
  code = ("import jax, json\nimport jaxtheory\nfrom jaxtheory import compile_cache\n"
          "print(json.dumps([compile_cache.directory(), compile_cache.enable(%r)]))"
          % str(tmp_path / "asked"))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  for k in ("TF_CPP_MIN_LOG_LEVEL", "JAXTHEORY_COMPILATION_CACHE"):
    env.pop(k, None)
  res = subprocess.run([sys.executable, "-c", code], env=env, text=True, capture_output=True,
                       timeout=300, check=False)
  assert res.returncode == 0, res.stderr
  default, asked = json.loads(res.stdout.strip().splitlines()[-1])
  assert default is None and asked == str(tmp_path / "asked")


def test_store_refuses_what_another_process_cannot_run_and_drops_what_it_cannot_read(
    tmp_path, monkeypatch):
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jaxtheory import compile_cache  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(compile_cache, "directory", lambda: str(tmp_path))
  monkeypatch.delenv(compile_cache.STORE_ENV, raising=False)

  def with_callback(x):
    jax.debug.callback(lambda v: None, x)  # a pointer into this process
    return 2 * x

  x = np.ones(3, np.float32)
  assert not compile_cache.store_executable("cb", {}, {"f": jax.jit(with_callback).lower(x).compile()})
  assert not os.path.exists(tmp_path / "executables" / "cb.pkl")
  assert compile_cache.store_executable("ok", {"n": 1}, {"f": jax.jit(lambda v: 2 * v).lower(x).compile()})
  got = compile_cache.load_executable("ok")
  assert got.values == {"n": 1} and np.array_equal(got.executable("f")(x), 2 * x)
  (tmp_path / "executables" / "bad.pkl").write_bytes(b"not a pickle")
  assert compile_cache.load_executable("bad") is None
  assert not (tmp_path / "executables" / "bad.pkl").exists()
  assert compile_cache.load_executable("absent") is None


class _Unset:
  """A sentinel compared by identity, like Equinox's for an unset field."""


_UNSET = _Unset()


@jax.tree_util.register_static
class _Tagged:
  """A static pytree node whose equality needs the very sentinel object it holds."""

  def __init__(self, tag=_UNSET):
    self.tag = tag

  def __eq__(self, other):
    return isinstance(other, _Tagged) and self.tag is other.tag

  def __hash__(self):
    return 0


def test_store_refuses_a_program_whose_tree_structure_does_not_survive_pickling(
    tmp_path, monkeypatch):
  """An Equinox model's sentinel unpickles to a new object: its outputs could not be rebuilt."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jaxtheory import compile_cache  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(compile_cache, "directory", lambda: str(tmp_path))
  monkeypatch.delenv(compile_cache.STORE_ENV, raising=False)
  x = np.ones(3, np.float32)
  tagged = jax.jit(lambda v: (2 * v, _Tagged())).lower(x).compile()
  assert not compile_cache.store_executable("tagged", {}, {"f": tagged})
  assert compile_cache.load_executable("tagged") is None
  # (a program of its own: one JAX's cache served carries no machine code and is not stored)
  plain = jax.jit(lambda v: (3 * v - 0.5, _Tagged(None))).lower(x).compile()
  assert compile_cache.store_executable("plain", {}, {"f": plain}), dict(compile_cache.stats)
  out, tag = compile_cache.load_executable("plain").executable("f")(x)
  assert np.array_equal(out, 3 * x - 0.5) and tag.tag is None


# The kernel predictors' factorizations (compile_cache.stored_jit) in a fresh process: a second
# process loads them from the store, untraced; another regularizer mode is another program.
PREDICT = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
from jaxtheory import compile_cache
from jaxtheory.kernels import predict
k = jax.random.normal(jax.random.key(0), (6, 5))
k = k @ k.T
fn = predict.gradient_descent_mse(k, jnp.ones((6, 1)), 0.1, diag_reg=1e-3,
                                  diag_reg_absolute_scale=sys.argv[1] == "absolute")
out = fn(np.array([1.0, 10.0]), jnp.zeros((6, 1)))
print(json.dumps(dict(store=dict(compile_cache.stats), out=np.asarray(out).tolist())))
"""


def _stored_then_loaded_then_another(script: str, args: tuple[str, str], tmp_path) -> dict:
  """Runs ``script`` in three fresh processes sharing one cache, with ``args[0]``, ``args[0]``
  again and ``args[1]``: the first stores its one program, the second loads it whole (same
  output, bit for bit), the third (another program) stores its own. Returns the first's
  record."""
  env = dict(os.environ, JAXTHEORY_COMPILATION_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
  env.pop("JAXTHEORY_EXECUTABLE_STORE", None)
  runs = []
  for arg in (args[0], args[0], args[1]):
    res = subprocess.run([sys.executable, "-c", script, arg], env=env, text=True,
                         capture_output=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
  first, second, other = runs
  assert first["store"] == {"misses": 1, "stored": 1}
  assert second["store"] == {"hits": 1} and second["out"] == first["out"]  # bit for bit
  assert other["store"] == {"misses": 1, "stored": 1} and other["out"] != first["out"]
  return first


def test_predictor_factorizations_load_from_the_store_in_a_later_process(tmp_path):
  _stored_then_loaded_then_another(PREDICT, ("relative", "absolute"), tmp_path)


def test_programs_that_run_once_get_the_cpu_options_unless_turned_off(monkeypatch):
  from jaxtheory import compile_cache  # pylint: disable=import-outside-toplevel
  if jax.default_backend() != "cpu":
    pytest.skip("the library's own compiler options are for XLA:CPU")
  monkeypatch.delenv(compile_cache.OPTIONS_ENV, raising=False)
  assert compile_cache.run_once_options() == compile_cache.CPU_RUN_ONCE_OPTIONS
  # The caller's options are kept, and win over ours.
  assert compile_cache.run_once_options({"xla_cpu_use_fusion_emitters": True, "a": 1}) == {
      "xla_cpu_use_fusion_emitters": True, "a": 1}
  assert compile_cache.environment()["options"] == repr(compile_cache.CPU_RUN_ONCE_OPTIONS)
  monkeypatch.setenv(compile_cache.OPTIONS_ENV, "off")
  assert compile_cache.run_once_options() is None
  assert compile_cache.run_once_options({"a": 1}) == {"a": 1}


def test_an_option_this_jaxlib_does_not_know_is_dropped_not_fatal(monkeypatch):
  from jaxtheory import compile_cache  # pylint: disable=import-outside-toplevel
  if jax.default_backend() != "cpu":
    pytest.skip("the library's own compiler options are for XLA:CPU")
  monkeypatch.delenv(compile_cache.OPTIONS_ENV, raising=False)
  monkeypatch.setattr(compile_cache, "CPU_RUN_ONCE_OPTIONS",
                      {"xla_cpu_use_fusion_emitters": False, "xla_no_such_option_here": 1})
  monkeypatch.setattr(compile_cache, "_UNKNOWN", set())
  lowered = jax.jit(lambda x: 2 * x + 1).lower(jax.numpy.arange(3.0))
  exe = compile_cache.compile_lowered(lowered, compile_cache.run_once_options())
  assert list(exe(jax.numpy.arange(3.0))) == [1.0, 3.0, 5.0]
  assert compile_cache._UNKNOWN == {"xla_no_such_option_here"}  # pylint: disable=protected-access
  assert compile_cache.run_once_options() == {"xla_cpu_use_fusion_emitters": False}
  # An option the caller chose is the caller's to get right: its error is not swallowed.
  with pytest.raises(Exception, match="No such compile option"):
    compile_cache.compile_lowered(lowered, {"xla_also_unknown": 1})


# A probe mapped over a sweep's runs (probes.over_runs with store_key) in a fresh process: a
# second process loads it from the store, untraced; another key is another program.
OVER_RUNS = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
from jaxtheory import compile_cache
from jaxtheory.probes import over_runs
w = jax.random.normal(jax.random.key(0), (3, 4, 2))
x = jnp.arange(20.0).reshape(5, 4) / 10
power = int(sys.argv[1])
out = over_runs(lambda wi, xs: jnp.sum((xs @ wi) ** power, 0), w, x, in_axes=(0, None),
                store_key=("a probe", power))
print(json.dumps(dict(store=dict(compile_cache.stats), out=np.asarray(out).tolist())))
"""


def test_a_probe_over_runs_with_a_store_key_loads_from_the_store_in_a_later_process(tmp_path):
  first = _stored_then_loaded_then_another(OVER_RUNS, ("2", "3"), tmp_path)
  w = np.asarray(jax.random.normal(jax.random.key(0), (3, 4, 2)))  # as the child draws it
  x = np.arange(20.0).reshape(5, 4) / 10
  np.testing.assert_allclose(first["out"], [np.sum((x @ wi) ** 2, 0) for wi in w], rtol=1e-5)


# An analytic kernel with a store_key (what kernel-limit passes) in fresh processes: the
# second loads it whole, untraced (its layout chosen while the first traced it); another
# key (here another depth) is another program.
ANALYTIC = """
import json, sys
import jax.numpy as jnp, numpy as np
from jaxtheory import compile_cache, nn
from jaxtheory.kernels import analytic
depth = int(sys.argv[1])
m = nn.mlp((3,), 8, depth, 1, nn.activation("relu"))
x = jnp.arange(12.0).reshape(4, 3) / 10
k = analytic.kernel_fn(m, nn.Ctx("ntk"), store_key=("an mlp", depth))(x, None, "ntk")
print(json.dumps(dict(store=dict(compile_cache.stats), out=np.asarray(k).tolist())))
"""


def test_an_analytic_kernel_with_a_store_key_loads_from_the_store_in_a_later_process(tmp_path):
  first = _stored_then_loaded_then_another(ANALYTIC, ("2", "3"), tmp_path)
  m = nn.mlp((3,), 8, 2, 1, nn.activation("relu"))
  x = jnp.arange(12.0).reshape(4, 3) / 10
  np.testing.assert_allclose(first["out"], analytic.kernel_fn(m, nn.Ctx("ntk"))(x, None, "ntk"),
                             rtol=1e-6)


def test_programs_alike_in_text_but_not_in_calling_convention_are_not_shared():
  # Two probes that each ignore a different argument lower to the same text (JAX drops the
  # unused argument, which the loaded executable remembers): each is compiled for itself.
  # Probes alike in everything share one compiled program.
  from jaxtheory import compile_cache
  from jaxtheory.probes import over_runs
  if not compile_cache.executables_enabled():
    pytest.skip("the executable store is off")
  tag = os.urandom(8).hex()  # store keys of this run only
  a = jnp.arange(6.0).reshape(2, 3)
  b = a + 10
  np.testing.assert_array_equal(over_runs(lambda p, q: jnp.sum(p), a, b, store_key=(tag, "p")),
                                [3.0, 12.0])
  np.testing.assert_array_equal(over_runs(lambda p, q: jnp.sum(q), a, b, store_key=(tag, "q")),
                                [33.0, 42.0])
  shared = compile_cache.stats["same_program"]
  outs = [over_runs(lambda p, q: [jnp.sum(q) * 2], a, b, store_key=(tag, name))
          for name in ("r", "s")]
  assert compile_cache.stats["same_program"] == shared + 1
  assert all(isinstance(o, list) and np.array_equal(o[0], [66.0, 84.0]) for o in outs)
