"""Probes on Flax linen, NNX and Equinox models equal the same probes on the native model.

One native ``nn.mlp`` (two tanh hidden layers, a dense readout) and the same
network written in linen, in NNX and in Equinox, the native weights copied in:
layer features, penultimate features and readout, CKA across layers and the
neural-collapse metrics (direct, and recorded inside a sweep) must agree.
"""

import chex
import equinox as eqx
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxtheory.nn as jn
from jaxtheory import probes
from jaxtheory.nn.equinox import from_eqx
from jaxtheory.nn.flax import from_linen, from_nnx
from jaxtheory.probes import collapse as nc, similarity

D_IN, WIDTH, C, N = 5, 16, 3, 48
TOL = dict(rtol=1e-5, atol=1e-5)
KINDS = ["linen", "nnx", "eqx"]


class LinenMLP(linen.Module):
  width: int = WIDTH

  @linen.compact
  def __call__(self, x):
    for _ in range(2):
      x = jnp.tanh(linen.Dense(self.width)(x))
    return linen.Dense(C)(x)


class NNXMLP(nnx.Module):
  """Attributes named so that their (sorted) state order is not the call order."""

  def __init__(self, width: int = WIDTH, *, rngs: nnx.Rngs):
    self.head = nnx.Linear(width, C, rngs=rngs)
    self.l1 = nnx.Linear(D_IN, width, rngs=rngs)
    self.l2 = nnx.Linear(width, width, rngs=rngs)

  def __call__(self, x):
    return self.head(jnp.tanh(self.l2(jnp.tanh(self.l1(x)))))


def native_model():
  return jn.mlp((D_IN,), WIDTH, 2, C, activation=jn.tanh, b_std=1.0)


def foreign_model(kind, width=WIDTH):
  if kind == "linen":
    return from_linen(LinenMLP(width), (D_IN,))
  if kind == "nnx":
    return from_nnx(lambda rngs: NNXMLP(width, rngs=rngs), (D_IN,))
  return from_eqx(lambda key: eqx.nn.MLP(D_IN, C, width, 2, activation=jnp.tanh, key=key),
                  (D_IN,))


def to_foreign(kind, m, p):
  """The native params ``p`` (dense layers at 0, 2, 4) as params of the foreign model ``m``."""
  dense = [p[0], p[2], p[4]]
  if kind == "linen":
    return {"params": {f"Dense_{i}": {"kernel": d["W"], "bias": d["b"]}
                       for i, d in enumerate(dense)}}
  q = m.init(jax.random.key(1))
  if kind == "nnx":
    layer = {"l1": dense[0], "l2": dense[1], "head": dense[2]}
    return jax.tree_util.tree_map_with_path(
        lambda path, a: layer[path[0].key]["W" if path[1].key == "kernel" else "b"], q)
  return eqx.tree_at(lambda t: [a for l in t.layers for a in (l.weight, l.bias)], q,
                     [a for d in dense for a in (d["W"].T, d["b"])])


def to_native(kind, q):
  """The inverse of :func:`to_foreign`."""
  if kind == "linen":
    dense = [q["params"][f"Dense_{i}"] for i in range(3)]
    dense = [{"W": d["kernel"], "b": d["bias"]} for d in dense]
  elif kind == "nnx":
    dense = [{"W": q[k]["kernel"].get_value(), "b": q[k]["bias"].get_value()}
             for k in ("l1", "l2", "head")]
  else:
    dense = [{"W": l.weight.T, "b": l.bias} for l in q.layers]
  return (dense[0], (), dense[1], (), dense[2])


def inputs():
  kx, ky = jax.random.split(jax.random.key(7))
  return jax.random.normal(kx, (N, D_IN)), jax.random.randint(ky, (N,), 0, C)


@pytest.fixture(scope="module")
def native():
  m = native_model()
  return m, m.init(jax.random.key(0))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["hidden", "all"])
def test_layer_features(native, kind, where):
  m0, p = native
  m = foreign_model(kind)
  q = to_foreign(kind, m, p)
  x, _ = inputs()
  chex.assert_trees_all_close(m.apply(q, x), m0.apply(p, x), **TOL)
  want = probes.layer_features(m0, p, x, where=where)
  got = probes.layer_features(m, q, x, where=where)
  if where == "all":  # native 'all' also lists the activation layers' outputs
    want = want[::2]
  assert len(got) == len(want) == (2 if where == "hidden" else 3)
  chex.assert_trees_all_close(got, want, **TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_penultimate_and_readout(native, kind):
  m0, p = native
  m = foreign_model(kind)
  q = to_foreign(kind, m, p)
  x, _ = inputs()
  H0, ro0 = nc.penultimate(m0)(p, x)
  H, ro = jax.jit(nc.penultimate(m))(q, x)
  chex.assert_trees_all_close((H, ro), (H0, ro0), **TOL)
  chex.assert_trees_all_close(nc.readout(q, m, x), ro0, **TOL)
  apply = lambda params, x: m.apply(params, x)
  chex.assert_trees_all_close(nc.features_from_apply(apply, q, x, model=m),
                              nc.features_from_apply(lambda a, b: m0.apply(a, b), p, x), **TOL)
  with pytest.raises(ValueError, match="pass its model"):
    nc.features_from_apply(apply, q, x)


@pytest.mark.parametrize("kind", KINDS)
def test_layer_cka(native, kind):
  m0, p = native
  m = foreign_model(kind)
  q = to_foreign(kind, m, p)
  x, _ = inputs()
  chex.assert_trees_all_close(similarity.layer_cka(m, q, x, include_input=True),
                              similarity.layer_cka(m0, p, x, include_input=True), **TOL)
  # Two networks of one architecture: the foreign pair equals the native pair.
  p2 = m0.init(jax.random.key(3))
  chex.assert_trees_all_close(
      similarity.layer_cka(m, q, x, params_b=to_foreign(kind, m, p2), remove_pc=True),
      similarity.layer_cka(m0, p, x, params_b=p2, remove_pc=True), **TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_collapse_metrics(native, kind):
  m0, p = native
  m = foreign_model(kind)
  q = to_foreign(kind, m, p)
  x, y = inputs()
  H0, ro0 = nc.penultimate(m0)(p, x)
  H, ro = nc.penultimate(m)(q, x)
  want = nc.collapse_metrics(H0, y, C, W=ro0["W"], b=ro0["b"])
  chex.assert_trees_all_close(nc.collapse_metrics(H, y, C, W=ro["W"], b=ro["b"]), want, **TOL)
  # The recorded metric, as a sweep calls it (with the run's ctx and model).
  data = {"x_train": x, "y_train": y, "w_train": jnp.ones(N)}
  metric = nc.collapse_metric(C, which=nc.NAMES)
  got = jax.jit(lambda q: metric(q, lambda a, b: m.apply(a, b), data, ctx=jn.Ctx(), model=m))(q)
  chex.assert_trees_all_close(got, metric(p, lambda a, b: m0.apply(a, b), data),
                              rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(got, jnp.stack([want[k] for k in nc.NAMES]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_base_shape_model_at_its_base_width_reads_like_the_native_one(native, kind):
  """A model parametrized by base shapes (muP) keeps its probes; at the base width
  muP is SP, so they are the native model's."""
  from jaxtheory.nn.base_shapes import parametrize
  m0, p = native
  m = parametrize(lambda w: foreign_model(kind, w), base_width=WIDTH)(WIDTH)
  q = to_foreign(kind, foreign_model(kind), p)
  x, _ = inputs()
  ctx = jn.Ctx("mup")
  chex.assert_trees_all_close(nc.penultimate(m)(q, x, ctx), nc.penultimate(m0)(p, x), **TOL)
  chex.assert_trees_all_close(probes.layer_features(m, q, x, ctx),
                              probes.layer_features(m0, p, x), **TOL)


class LinenNormHead(linen.Module):

  @linen.compact
  def __call__(self, x):
    return linen.LayerNorm()(linen.Dense(C)(x))


class NNXNormHead(nnx.Module):

  def __init__(self, *, rngs):
    self.dense = nnx.Linear(D_IN, C, rngs=rngs)
    self.norm = nnx.LayerNorm(C, rngs=rngs)

  def __call__(self, x):
    return self.norm(self.dense(x))


@pytest.mark.parametrize("kind,match", [
    ("linen", "is a LayerNorm, not a linen.Dense"),
    ("nnx", "is a LayerNorm, not an nnx.Linear"),
    ("eqx", "is a Lambda, not an eqx.nn.Linear"),
])
def test_penultimate_of_a_model_without_dense_readout_raises(kind, match):
  m = {"linen": lambda: from_linen(LinenNormHead(), (D_IN,)),
       "nnx": lambda: from_nnx(lambda rngs: NNXNormHead(rngs=rngs), (D_IN,)),
       "eqx": lambda: from_eqx(lambda key: eqx.nn.Sequential(
           [eqx.nn.Linear(D_IN, C, key=key), eqx.nn.Lambda(jnp.tanh)]), (D_IN,))}[kind]()
  x, _ = inputs()
  with pytest.raises(ValueError, match=match):
    nc.penultimate(m)(m.init(jax.random.key(0)), x)


class LinenTied(linen.Module):
  """The readout is a tied embedding's attend, after the last Dense."""

  @linen.compact
  def __call__(self, x):
    emb = linen.Embed(C, WIDTH)
    return emb.attend(jnp.tanh(linen.Dense(WIDTH)(x)))


class NNXScaled(nnx.Module):

  def __init__(self, *, rngs):
    self.head = nnx.Linear(D_IN, C, rngs=rngs)

  def __call__(self, x):
    return 0.1 * self.head(x)


@pytest.mark.parametrize("kind", ["linen", "nnx", "eqx", "eqx-prelu"])
def test_penultimate_of_a_model_whose_output_is_not_its_last_dense_raises(kind):
  m = {"linen": lambda: from_linen(LinenTied(), (D_IN,)),
       "nnx": lambda: from_nnx(lambda rngs: NNXScaled(rngs=rngs), (D_IN,)),
       "eqx": lambda: from_eqx(lambda key: eqx.nn.MLP(D_IN, C, WIDTH, 2, key=key,
                                                      final_activation=jax.nn.softplus),
                               (D_IN,)),
       "eqx-prelu": lambda: from_eqx(lambda key: eqx.nn.MLP(
           D_IN, C, WIDTH, 2, key=key, final_activation=eqx.nn.PReLU(jnp.full((C,), 1.0))),
           (D_IN,))}[kind]()
  x, _ = inputs()
  with pytest.raises(ValueError, match="is not its last (Dense|Linear)'s output|is not H @ W"):
    nc.penultimate(m)(m.init(jax.random.key(0)), x)
  if kind != "nnx":  # traced, a change of shape or a final activation is still caught
    with pytest.raises(ValueError, match="is not its last|is not H @ W"):
      jax.jit(nc.penultimate(m))(m.init(jax.random.key(0)), x)


class LinenCast(linen.Module):
  """A bfloat16 readout cast back to float32: a new array of the same values."""

  @linen.compact
  def __call__(self, x):
    h = jnp.tanh(linen.Dense(WIDTH)(x))
    return linen.Dense(C, dtype=jnp.bfloat16)(h).astype(jnp.float32)


def test_penultimate_of_a_recast_readout_is_its_readout():
  m = from_linen(LinenCast(), (D_IN,))
  x, _ = inputs()
  p = m.init(jax.random.key(0))
  for f in (nc.penultimate(m), jax.jit(nc.penultimate(m))):
    H, ro = f(p, x)
    assert H.shape == (len(x), WIDTH) and ro["W"].shape == (WIDTH, C)


class MyLinear(nnx.Linear):
  """A subclass without its own ``__call__``."""


def test_nnx_features_leave_the_classes_as_they_were():
  linear, mlp = nnx.Linear.__dict__["__call__"], NNXMLP.__dict__["__call__"]
  m = from_nnx(lambda rngs: nnx.Sequential(NNXMLP(rngs=rngs), MyLinear(C, C, rngs=rngs)),
               (D_IN,))
  feats = m.features(m.init(jax.random.key(0)), inputs()[0], jn.Ctx())
  assert len(feats) == 5  # l1, l2, head, the NNXMLP block, MyLinear: in the order they return
  assert nnx.Linear.__dict__["__call__"] is linear and NNXMLP.__dict__["__call__"] is mlp
  assert "__call__" not in MyLinear.__dict__


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_collapse_metric_recorded_in_a_sweep_equals_the_native_model(kind):
  """NC metrics recorded inside a compiled sweep of a Flax model, at init and after
  training, equal the same metrics of the native model with those weights."""
  from jaxtheory import data as D, sweep
  ds = D.gaussian_mixture(n_train=30, n_test=6, num_classes=C, input_dim=D_IN, seed=0)
  steps, names = 3, ("nc1", "nc2_etf", "nc3", "nc4", "cdnv")
  s = sweep.Sweep(lambda w: foreign_model(kind, w), ds, dict(seed=[0], width=[WIDTH], lr=[0.1]),
                  "sgd", steps=steps, record=[0, steps], loss="xent",
                  metrics={"nc": nc.collapse_metric(C, which=names)})
  res, groups = sweep.execute(s, params=True)
  rec = res.nc.isel(seed=0, width=0, lr=0).values  # (step, collapse)
  assert rec.shape == (2, len(names)) and np.isfinite(rec).all()
  assert not np.allclose(rec[0], rec[1])  # training moved them
  m, m0 = foreign_model(kind), native_model()
  data = {k: jnp.asarray(v) for k, v in D.data_arrays(ds).items()}
  native_metric = nc.collapse_metric(C, which=names)
  p_init = to_native(kind, m.init(jax.random.fold_in(jax.random.key(0), 0)))
  p_final = to_native(kind, jax.tree.map(lambda a: a[0], groups[0].params))
  for i, p in enumerate([p_init, p_final]):
    want = native_metric(p, lambda a, b: m0.apply(a, b), data)
    np.testing.assert_allclose(rec[i], want, rtol=1e-4, atol=1e-5)
