r"""Spectral bias: networks learn low frequencies first, in the order of their NTK's eigenvalues.

Two settings, trained as sweeps:

**(a) Sinusoids** (Rahaman et al. 2019, "On the spectral bias of neural
networks", ICML). A ReLU MLP regresses
:math:`y(x) = \sum_k \sin(2\pi k x + \varphi_k)` on a grid of ``n_points``
points of :math:`[0, 1)`. The Fourier power of the residual :math:`f - y` at
each target frequency ``k`` is recorded inside the compiled sweep
(:func:`jaxtheory.probes.spectra.fourier_power`); the step at which its
amplitude halves (power down 4x from step 0) rises with ``k``. The paper: 6
layers of 256 units, frequencies 5-50 with equal amplitudes, 200 points, Adam
for tens of thousands of steps. Scaled down: ``depth`` x ``width`` (default
4 x 256) in NTK parametrization, frequencies 1-8, 128 points, full-batch
gradient descent with momentum for ``steps`` (2000) steps, seeds trained as one
program. The infinite-width NTK of the same MLP (:func:`jaxtheory.kernels.kernel_fn`)
predicts the order: its Rayleigh quotient :math:`u_k^\top \Theta u_k / u_k^\top u_k`
on the sinusoid :math:`u_k` falls with ``k`` (the modes of a 1-D ReLU NTK decay
roughly like :math:`k^{-2}`), and gradient descent shrinks the residual along
eigenvalue :math:`\lambda` at rate :math:`\propto\lambda`. Controls, with no
learned features: the same gradient descent (learning rate, momentum, steps)
in function space with the NTK itself (kernel regression, which must order the
frequencies as the NTK does), and with a flat kernel, the NTK's mean
eigenvalue on every mode (the cause removed: every frequency halves at the
same step, no spectral bias).

**(b) Coordinate networks** (Tancik et al. 2020, "Fourier features let
networks learn high frequency functions in low dimensional domains",
NeurIPS). An MLP maps pixel coordinates to grey levels of an image, through
random Fourier features :math:`[\sin 2\pi Bx, \cos 2\pi Bx]`,
:math:`B \sim N(0, \sigma^2)` (:func:`jaxtheory.nn.fourier_mlp`). Trained on
every other pixel (rows and columns), it is tested on the held-out pixels:
small :math:`\sigma` underfits (a blurred image), large :math:`\sigma` fits the
training pixels and interpolates noise between them, and the test PSNR peaks
at an intermediate :math:`\sigma`. The paper: 512x512 natural images, 256
features of scale 1-100 (best near 10), 4 layers of 256 units, Adam, 2000 steps. Scaled down:
a ``image_size`` (48) pixel grey crop of scikit-learn's sample photograph
``china.jpg`` (ships with scikit-learn), 64 features, 3 x 128 units, Adam
for ``image_steps`` (500) steps; one sweep per :math:`\sigma`
(:func:`jaxtheory.sweep.run_over`; the features' scale is structural).
:math:`\sigma = 0` is the control: the plain MLP on raw coordinates (the
:math:`\sigma \to 0` limit of the features up to a linear map), which blurs:
it cannot fit even the training pixels, and its prediction on the full grid
keeps less of the image's high-frequency power than the best :math:`\sigma`
(:func:`jaxtheory.probes.spectra.radial_power`, recorded in the sweep). At
48 pixels the training grid resolves 12 cycles, so the best :math:`\sigma`
is near 1 (the paper's images resolve 128 and its best is near 10).

The defaults take about two minutes on a 2-core CPU. (a): the residual at
frequencies 1, 2, 4, 6, 8 halves at steps [91-134, 290-375, 551-627,
923-1050, 1546-1758] over three seeds, in the order of the NTK's eigenvalues
on them (6.55, 1.61, 0.40, 0.18, 0.10); kernel regression with the NTK halves
at [15, 48, 118, 290, 627] (the finite MLP is 3-8x slower but keeps the
order), the flat kernel at step 10 for all. (b): test PSNR 20.6 / 23.2 /
23.6 / 22.2 / 10.7 / 9.5 dB at sigma 0 / 0.3 / 1 / 3 / 10 / 30 (train PSNR
21.6 -> 146 dB); the plain MLP keeps 0.61 of the image's high-frequency
power, sigma = 1 0.94.

>>> from jaxtheory.experiments import spectral_bias as sb
>>> cfg = sb.Config(seeds=1, width=16, depth=2, steps=5, record=3, sigmas=(0.0, 3.0),
...                 image_size=16, image_width=16, image_steps=3)
>>> ds = sb.run(cfg)
>>> ds.residual_power.dims, ds.image_test_psnr.dims
(('seed', 'step', 'freq'), ('sigma', 'seed'))
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from scipy import stats

from jaxtheory import data, kernels, nn, plots, sweep
from jaxtheory.experiments.check import Check, positive_ints, seed_list, timing_rows
from jaxtheory.probes.spectra import fourier_power, radial_power
from jaxtheory.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Config:
  """The spectral-bias settings (every field overridable by ``--set key=value``).

  Attributes:
    seeds: number of seeds (or explicit seeds ``5,7``), in both parts.
    n_points: grid points of [0, 1) in part (a).
    freqs: the target's frequencies (cycles on [0, 1)), equal amplitudes, random phases.
    data_seed: seed of the phases.
    width: hidden width of the MLP of part (a).
    depth: hidden layers of the MLP of part (a).
    lr: learning rate of full-batch gradient descent with momentum (part (a)).
    momentum: heavy-ball momentum (part (a)).
    steps: steps of part (a).
    record: about this many log-spaced recording points (part (a)).
    sigmas: Fourier-feature scales of part (b); 0 is the plain MLP on raw coordinates.
    image_size: side of the image of part (b) in pixels (divides 384).
    num_fourier: Fourier features (each gives a sine and a cosine).
    image_width: hidden width of the coordinate MLP.
    image_depth: hidden layers of the coordinate MLP.
    image_lr: Adam learning rate of part (b).
    image_steps: full-batch Adam steps of part (b); 0 skips part (b).
  """
  seeds: int | tuple[int, ...] = 3
  n_points: int = 128
  freqs: tuple[int, ...] = (1, 2, 4, 6, 8)
  data_seed: int = 0
  width: int = 256
  depth: int = 4
  lr: float = 0.5
  momentum: float = 0.9
  steps: int = 2000
  record: int = 60
  sigmas: tuple[float, ...] = (0.0, 0.3, 1.0, 3.0, 10.0, 30.0)
  image_size: int = 48
  num_fourier: int = 64
  image_width: int = 128
  image_depth: int = 3
  image_lr: float = 1e-3
  image_steps: int = 500


def _check(cfg: Config) -> None:
  seed_list(cfg.seeds)
  positive_ints(cfg, "n_points", "width", "depth", "steps", "record", "num_fourier",
                "image_width", "image_depth")
  if not cfg.freqs or len(set(cfg.freqs)) != len(cfg.freqs) or any(
      k < 1 or 2 * k >= cfg.n_points for k in cfg.freqs):
    raise ConfigError(f"freqs must be distinct integers in [1, n_points/2), got {cfg.freqs!r}")
  if len(cfg.freqs) < 3:
    raise ConfigError(f"freqs needs at least 3 frequencies to order, got {cfg.freqs!r}")
  if cfg.lr <= 0 or cfg.image_lr <= 0:
    raise ConfigError(f"lr and image_lr must be positive, got {cfg.lr!r}, {cfg.image_lr!r}")
  if not 0 <= cfg.momentum < 1:
    raise ConfigError(f"momentum must lie in [0, 1), got {cfg.momentum!r}")
  if cfg.image_steps < 0:
    raise ConfigError(f"image_steps must be >= 0, got {cfg.image_steps!r}")
  if cfg.image_steps:
    if cfg.image_size < 8 or 384 % cfg.image_size or cfg.image_size % 2:
      raise ConfigError(f"image_size must be an even divisor of 384 (>= 8), e.g. 32, 48, 64; "
                        f"got {cfg.image_size!r}")
    if (not cfg.sigmas or any(s < 0 for s in cfg.sigmas)
        or len(set(cfg.sigmas)) != len(cfg.sigmas)):
      raise ConfigError(f"sigmas must be distinct numbers >= 0, got {cfg.sigmas!r}")


# ----------------------------------------------------------------------------
# Part (a): sinusoids.


def sinusoids(cfg: Config) -> data.Dataset:
  """The 1-D target on the grid ``i / n`` (train) and the midpoints between (test)."""
  freqs = np.asarray(cfg.freqs, np.float64)
  phase = np.random.default_rng(cfg.data_seed).uniform(0, 2 * np.pi, len(freqs))
  target = lambda t: np.sum(np.sin(2 * np.pi * freqs[:, None] * t[None] + phase[:, None]), 0)
  t = np.arange(cfg.n_points) / cfg.n_points
  tt = t + 0.5 / cfg.n_points
  col = lambda a: a[:, None].astype(np.float32)
  return data.Dataset(col(t), col(target(t)), col(tt), col(target(tt)), None, "sinusoids")


def residual_power_metric(freqs) -> Callable:
  """A recorded metric: Fourier power of the training residual ``f - y`` at ``freqs``.

  The training inputs must be a uniform grid of [0, 1) in order, so DFT index
  ``k`` is ``k`` cycles on [0, 1).
  """
  idx = jnp.asarray(freqs)

  def metric(params, apply, data):
    r = apply(params, data["x_train"]) - data["y_train"]
    return fourier_power(r)[idx]

  metric.dims = ("freq",)
  return metric


def _mlp(cfg: Config, width: int) -> nn.Model:
  return nn.mlp((1,), width, cfg.depth, 1, b_std=1.0)


def ntk_modes(cfg: Config, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  r"""The infinite-width NTK of the part-(a) MLP on ``x``: eigenvalues, eigenvectors, Rayleigh quotients.

  Returns:
    ``(lam, V, rayleigh)``: the Gram matrix's eigendecomposition (float64) and
    :math:`u_k^\top\Theta u_k/u_k^\top u_k` for :math:`u_k = \sin 2\pi k x` at
    every target frequency.
  """
  # _mlp's settings determine its kernel map: a later invocation loads the program.
  K = kernels.kernel_fn(_mlp(cfg, cfg.width), nn.Ctx("ntk"),
                        store_key=("spectral_bias._mlp", cfg.depth, cfg.width))(
                            jnp.asarray(x), get="ntk")
  K = np.asarray(K, np.float64)
  lam, V = np.linalg.eigh(K)
  t = np.asarray(x, np.float64)[:, 0]
  ray = []
  for k in cfg.freqs:
    u = np.sin(2 * np.pi * k * t)
    ray.append(u @ K @ u / (u @ u))
  return lam, V, np.asarray(ray)


def kernel_descent_power(lam: np.ndarray, V: np.ndarray, y: np.ndarray, freqs, lr: float,
                         momentum: float, record_steps: np.ndarray) -> np.ndarray:
  r"""Residual Fourier power of gradient descent with momentum on the kernel regression loss.

  Function-space heavy ball from :math:`f_0 = 0` on :math:`\frac{1}{2n}\|f - y\|^2`
  with kernel :math:`K = V\,\mathrm{diag}(\lambda)\,V^\top`:
  :math:`u_t = \beta u_{t-1} + \frac{1}{n} K r_t`, :math:`r_{t+1} = r_t - \eta u_t`
  (the linearized network trained as the sweep trains it), run mode by mode.

  Returns:
    ``(len(record_steps), len(freqs))`` powers of the residual at those steps.
  """
  n = len(y)
  c = V.T @ (-y)  # r_0 = f_0 - y
  u = np.zeros_like(c)
  rate = lam / n
  out, want, step = [], list(np.asarray(record_steps, int)), 0
  idx = np.asarray(freqs)
  for target in want:
    while step < target:
      u = momentum * u + rate * c
      c = c - lr * u
      step += 1
    out.append(np.asarray(fourier_power(jnp.asarray((V @ c)[:, None])))[idx])
  return np.stack(out)


def halving_steps(power: xr.DataArray) -> xr.DataArray:
  """The first recorded step where each frequency's residual amplitude is half its step-0 value."""
  ratio = power / power.isel(step=0)
  hit = ratio <= 0.25
  steps = power.step.astype(float)
  first = steps.where(hit).min("step")
  return first


# ----------------------------------------------------------------------------
# Part (b): a coordinate network on an image.


def load_image(size: int) -> np.ndarray:
  """A ``size`` x ``size`` grey crop of scikit-learn's ``china.jpg`` in [0, 1] (area-downsampled)."""
  from sklearn.datasets import load_sample_image  # pylint: disable=import-outside-toplevel
  rgb = load_sample_image("china.jpg").astype(np.float64) / 255.0
  grey = rgb @ np.array([0.299, 0.587, 0.114])
  h, w = grey.shape
  top, left = (h - 384) // 2, (w - 384) // 2
  crop = grey[top:top + 384, left:left + 384]
  f = 384 // size
  return crop.reshape(size, f, size, f).mean((1, 3))


def image_data(size: int) -> tuple[data.Dataset, np.ndarray]:
  """Pixels with even row and column train, the rest test; coordinates in [0, 1)^2."""
  img = load_image(size)
  ii, jj = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  coords = np.stack([ii, jj], -1).reshape(-1, 2) / size
  train = ((ii % 2 == 0) & (jj % 2 == 0)).reshape(-1)
  v = img.reshape(-1, 1)
  f32 = lambda a: a.astype(np.float32)
  ds = data.Dataset(f32(coords[train]), f32(v[train]), f32(coords[~train]), f32(v[~train]),
                    None, "china.jpg")
  return ds, img


def high_frequency_metric(size: int) -> Callable:
  """A recorded metric: radial Fourier power of the prediction on the full pixel grid."""
  ii, jj = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  grid = jnp.asarray(np.stack([ii, jj], -1).reshape(-1, 2) / size, jnp.float32)

  def metric(params, apply, data):
    del data
    return radial_power(apply(params, grid).reshape(size, size))

  metric.dims = ("radius",)
  return metric


def _band(size: int) -> tuple[int, int]:
  """High frequencies the training pixels still resolve: radii in [size/8, size/4)."""
  return size // 8, size // 4


def psnr(mse2: np.ndarray) -> np.ndarray:
  """PSNR in dB of images in [0, 1] from the engine's loss (half the mean squared error)."""
  return -10 * np.log10(2 * np.asarray(mse2, np.float64))


def _image_part(cfg: Config, seeds, progress, engine) -> xr.Dataset:
  ds, img = image_data(cfg.image_size)
  metric = high_frequency_metric(cfg.image_size)

  def make(sigma):
    sigma = float(sigma)
    if sigma == 0.0:
      model = lambda w: nn.mlp((2,), w, cfg.image_depth, 1)
    else:
      model = lambda w: nn.fourier_mlp(2, w, cfg.image_depth, 1, cfg.num_fourier, sigma)
    return sweep.Sweep(model=model, data=ds, grid=dict(seed=seeds, width=[cfg.image_width]),
                       optimizer="adam", hparams=dict(lr=cfg.image_lr), steps=cfg.image_steps,
                       record=[0, cfg.image_steps], loss="mse", metrics={"radial": metric},
                       name="spectral-bias-image")

  res = sweep.run_over("sigma", [float(s) for s in cfg.sigmas], make, progress=progress,
                       **engine)
  end = res.isel(step=-1, width=0, drop=True)
  lo, hi = _band(cfg.image_size)
  truth = np.asarray(radial_power(jnp.asarray(img)))
  kept = end.radial.isel(radius=slice(lo, hi)).sum("radius") / truth[lo:hi].sum()
  out = xr.Dataset({
      "image_train_psnr": (("sigma", "seed"), psnr(end.train_loss.transpose("sigma", "seed"))),
      "image_test_psnr": (("sigma", "seed"), psnr(end.test_loss.transpose("sigma", "seed"))),
      "image_hf_kept": kept.transpose("sigma", "seed"),
      "image_radial": end.radial.transpose("sigma", "seed", "radius"),
      "image_true_radial": (("radius",), truth),
      "image": (("row", "col"), img),
  }, coords={"sigma": res.sigma.values, "seed": res.seed.values})
  out.attrs["image_mean_psnr"] = float(-10 * np.log10(np.var(ds.y_test)))
  out.attrs["image_compile_seconds"] = res.attrs.get("compile_seconds", float("nan"))
  out.attrs["image_run_seconds"] = res.attrs.get("run_seconds", float("nan"))
  return out


def run(cfg: Config, progress: Callable[[int, int, str], None] | None = None,
        **engine) -> xr.Dataset:
  r"""Trains part (a) (seeds in one sweep) and part (b) (seeds x sigma); the kernel controls.

  Args:
    cfg: the configuration.
    progress: ``progress(steps_done, steps_total, info)``, called as training advances.
    **engine: execution options of :func:`jaxtheory.sweep.run`.

  Returns:
    Dims ``(seed, step, freq)``: ``residual_power`` (the MLP's), ``halving``
    (step each frequency's residual amplitude halves, NaN if never),
    ``ntk_rayleigh`` (the NTK's eigenvalue on each sinusoid),
    ``kernel_power`` / ``kernel_halving`` (kernel regression with the NTK)
    and ``flat_power`` / ``flat_halving`` (the flat kernel); with
    ``image_steps > 0``, dims ``(sigma, seed)``: ``image_train_psnr``,
    ``image_test_psnr``, ``image_hf_kept`` (the prediction's high-frequency
    power over the image's) and the radial spectra.
  """
  _check(cfg)
  seeds = seed_list(cfg.seeds)
  ds = sinusoids(cfg)
  s = sweep.Sweep(model=lambda w: _mlp(cfg, w), data=ds,
                  grid=dict(seed=seeds, width=[cfg.width]), optimizer="momentum",
                  hparams=dict(lr=cfg.lr, momentum=cfg.momentum), steps=cfg.steps,
                  record=f"log:{cfg.record}", loss="mse", parametrization="ntk",
                  metrics={"residual_power": residual_power_metric(cfg.freqs)},
                  name="spectral-bias")
  engine = {k: v for k, v in engine.items() if k != "return_params"}
  res = sweep.run(s, progress=progress, **engine).isel(width=0, drop=True)
  res = res.assign_coords(freq=np.asarray(cfg.freqs))
  lam, V, ray = ntk_modes(cfg, ds.x_train)
  y = np.asarray(ds.y_train, np.float64)[:, 0]
  steps = res.step.values
  kp = kernel_descent_power(lam, V, y, cfg.freqs, cfg.lr, cfg.momentum, steps)
  flat = np.full_like(lam, lam.mean())
  fp = kernel_descent_power(flat, V, y, cfg.freqs, cfg.lr, cfg.momentum, steps)
  dims = ("step", "freq")
  res = res.assign(
      halving=halving_steps(res.residual_power),
      ntk_rayleigh=("freq", ray),
      kernel_power=(dims, kp), flat_power=(dims, fp))
  res = res.assign(kernel_halving=halving_steps(res.kernel_power),
                   flat_halving=halving_steps(res.flat_power))
  if cfg.image_steps:
    img = _image_part(cfg, seeds, progress, engine)
    for key in ("compile", "run"):
      res.attrs[f"{key}_seconds"] = (res.attrs.get(f"{key}_seconds", 0.0)
                                     + img.attrs.pop(f"image_{key}_seconds"))
    res = res.merge(img, combine_attrs="override")
    res.attrs["image_mean_psnr"] = img.attrs["image_mean_psnr"]
  res.attrs["experiment"] = "spectral-bias"
  res.attrs["config"] = json.dumps(dataclasses.asdict(cfg))
  return res


# ----------------------------------------------------------------------------
# Reading the results.


def _spearman(a, b) -> float:
  """Spearman's rank correlation; 0 when either side is constant (no order to read)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(stats.spearmanr(a, b).statistic) if np.ptp(a) > 0 and np.ptp(b) > 0 else 0.0


def _order(halving: np.ndarray, freqs: np.ndarray, budget: float) -> tuple[float, float]:
  """``(rank correlation of halving step with frequency, last / first halving step)``.

  A frequency that never halved counts as halving after the budget (ties among those).
  """
  h = np.where(np.isfinite(halving), halving, 2.0 * budget + 1.0)
  rho = _spearman(freqs, h)
  first = max(h[0], 1.0)
  return float(rho), float(h[-1] / first)


def rises(halving, freqs, budget, min_rho: float = 0.9, min_ratio: float = 3.0) -> bool:
  """Whether halving steps rise with frequency: rank correlation >= ``min_rho``, last/first >= ``min_ratio``.

  The lowest frequency must halve within the budget.
  """
  halving = np.asarray(halving, np.float64)
  if not np.isfinite(halving[0]):
    return False
  rho, ratio = _order(halving, np.asarray(freqs), budget)
  return rho >= min_rho and ratio >= min_ratio


def _fmt_steps(h) -> str:
  return "[" + ", ".join("-" if not np.isfinite(v) else f"{v:.0f}" for v in h) + "]"


def summary(ds: xr.Dataset) -> list[tuple[str, str]]:
  """Rows ``(label, value)``: halving steps per seed and of the kernels; PSNR per sigma."""
  freqs = ds.freq.values
  rows = [("frequencies", ", ".join(str(int(k)) for k in freqs)),
          ("NTK eigenvalue on each", ", ".join(f"{v:.3g}" for v in ds.ntk_rayleigh.values))]
  for seed in ds.seed.values:
    r = ds.sel(seed=seed)
    rows.append((f"seed={int(seed)} halving steps",
                 f"{_fmt_steps(r.halving.values)}; final train loss "
                 f"{float(r.train_loss.isel(step=-1)):.3g}"))
  rows.append(("NTK regression halving", _fmt_steps(ds.kernel_halving.values)))
  rows.append(("flat kernel halving", _fmt_steps(ds.flat_halving.values)))
  if "image_test_psnr" in ds:
    for sigma in ds.sigma.values:
      r = ds.sel(sigma=sigma)
      rows.append((f"sigma={float(sigma):g}",
                   f"train/test PSNR {float(r.image_train_psnr.mean()):.1f}/"
                   f"{float(r.image_test_psnr.mean()):.1f} dB, high frequencies kept "
                   f"{float(r.image_hf_kept.mean()):.2f}"))
  rows += timing_rows(ds)
  return rows


def signature(ds: xr.Dataset, min_rho: float = 0.9, min_ratio: float = 3.0,
              min_gain_db: float = 1.0, min_fit_db: float = 3.0, blur_db: float = 3.0,
              max_blur_kept: float = 0.9) -> list[Check]:
  """The signature checks with their measured numbers.

  Part (a), per seed: every frequency's residual halves in rank order of
  frequency (Spearman ``>= min_rho`` between frequency and halving step, the
  highest halving ``>= min_ratio`` times later than the lowest; a run at init
  halves nothing); the NTK's eigenvalues predict that order (Spearman
  ``>= min_rho`` between halving step and :math:`1/\\lambda_k`). Controls:
  kernel regression with the NTK orders the frequencies as the NTK does; the
  flat kernel does not show spectral bias. Part (b), per seed: test PSNR peaks
  at an interior sigma, ``>= min_gain_db`` above both ends and ``>= min_fit_db``
  above predicting the mean grey level (a network at init does not); the
  control (sigma = 0, the plain MLP) blurs: its train PSNR is ``>= blur_db``
  below that of the sigma best on test, its test PSNR below, and its
  prediction keeps at most ``max_blur_kept`` times the best sigma's share of
  the image's high-frequency power (radii ``size/8`` to ``size/4``).
  """
  freqs = ds.freq.values
  budget = float(ds.step.values[-1])
  inv = 1.0 / ds.ntk_rayleigh.values
  seeds = [int(s) for s in ds.seed.values]
  per = {s: ds.halving.sel(seed=s).values for s in seeds}
  order = {s: _order(h, freqs, budget) for s, h in per.items()}
  pred = {s: _spearman(np.where(np.isfinite(h), h, 2 * budget + 1), inv) for s, h in per.items()}
  kh, fh = ds.kernel_halving.values, ds.flat_halving.values
  k_order, f_order = _order(kh, freqs, budget), _order(fh, freqs, budget)
  k_pred = _spearman(np.where(np.isfinite(kh), kh, 2 * budget + 1), inv)
  checks = [
      Check(f"(a) each seed learns low frequencies first (halving step rises with frequency: "
            f"Spearman >= {min_rho:g}, highest/lowest >= {min_ratio:g}x)",
            all(rises(h, freqs, budget, min_rho, min_ratio) for h in per.values()),
            "; ".join(f"seed {s}: steps {_fmt_steps(per[s])}, Spearman {order[s][0]:.2f}, "
                      f"{order[s][1]:.1f}x" for s in seeds)),
      Check(f"(a) the NTK's eigenvalues predict the order (Spearman of halving step with "
            f"1/lambda_k >= {min_rho:g} in each seed)",
            all(np.isfinite(per[s][0]) and pred[s] >= min_rho for s in seeds),
            "NTK eigenvalue on each frequency " + ", ".join(f"{v:.3g}" for v in
                                                            ds.ntk_rayleigh.values)
            + "; " + ", ".join(f"seed {s}: {pred[s]:.2f}" for s in seeds)),
      Check("(a) control, kernel regression with the NTK (no learned features): the NTK's order",
            rises(kh, freqs, budget, min_rho, min_ratio) and k_pred >= min_rho,
            f"steps {_fmt_steps(kh)}, Spearman with frequency {k_order[0]:.2f}, "
            f"with 1/lambda {k_pred:.2f}, {k_order[1]:.1f}x"),
      Check("(a) control, flat kernel (every mode the NTK's mean eigenvalue): no spectral bias",
            not rises(fh, freqs, budget, min_rho, min_ratio),
            f"steps {_fmt_steps(fh)}, highest/lowest {f_order[1]:.1f}x"),
  ]
  if "image_test_psnr" in ds:
    checks += _image_checks(ds, min_gain_db, min_fit_db, blur_db, max_blur_kept)
  return checks


def _image_checks(ds, min_gain_db, min_fit_db, blur_db, max_blur_kept) -> list[Check]:
  sig = ds.sigma.values
  test = ds.image_test_psnr.transpose("sigma", "seed").values
  train = ds.image_train_psnr.transpose("sigma", "seed").values
  kept = ds.image_hf_kept.transpose("sigma", "seed").values
  floor = float(ds.attrs.get("image_mean_psnr", np.nan))
  seeds = [int(s) for s in ds.seed.values]
  name = "(b) test PSNR on held-out pixels peaks at an intermediate sigma in each seed"
  if len(sig) < 3:
    return [Check(name, False, f"needs >= 3 sigmas, got {len(sig)}", skipped=True)]
  lines, ok = [], True
  for j, s in enumerate(seeds):
    b = int(np.nanargmax(test[:, j]))
    gain = min(test[b, j] - test[0, j], test[b, j] - test[-1, j])
    ok &= bool(0 < b < len(sig) - 1 and gain >= min_gain_db
               and test[b, j] >= floor + min_fit_db)
    lines.append(f"seed {s}: best sigma {sig[b]:g} ({test[b, j]:.1f} dB), "
                 f"{test[b, j] - test[0, j]:+.1f} dB over sigma {sig[0]:g}, "
                 f"{test[b, j] - test[-1, j]:+.1f} dB over sigma {sig[-1]:g} "
                 f"(train {train[-1, j]:.1f} dB there)")
  checks = [Check(f"{name} (>= {min_gain_db:g} dB above both ends, >= {min_fit_db:g} dB above "
                  f"the mean image's {floor:.1f} dB)", bool(ok), "; ".join(lines))]
  mean = test.mean(1)
  b = int(np.argmax(mean))
  ctrl = "(b) control sigma -> 0 (the plain MLP) blurs"
  if sig[0] != 0.0:
    checks.append(Check(ctrl, False, "sigma 0 (the plain MLP) is not in the grid", skipped=True))
  else:
    blurred = all(train[b, j] - train[0, j] >= blur_db and test[b, j] > test[0, j]
                  and kept[0, j] <= max_blur_kept * kept[b, j] for j in range(len(seeds)))
    checks.append(Check(
        f"{ctrl}: it fits even its training pixels >= {blur_db:g} dB worse than the best "
        f"sigma, tests worse, and keeps <= {max_blur_kept:g}x its high-frequency power",
        bool(blurred),
        f"sigma 0: train/test {train[0].mean():.1f}/{mean[0]:.1f} dB, keeps "
        f"{kept[0].mean():.2f} of the image's high-frequency power; best sigma {sig[b]:g}: "
        f"{train[b].mean():.1f}/{mean[b]:.1f} dB, keeps {kept[b].mean():.2f}"))
  return checks


def figures(ds: xr.Dataset, out_dir: str | os.PathLike) -> list[str]:
  """Residual power per frequency along training (MLP, NTK regression); PSNR against sigma."""
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  fig = plots.agg_figure((12.0, 3.8))
  ax_mlp, ax_k, ax_h = fig.subplots(1, 3)
  steps = np.maximum(ds.step.values, 1)
  rel = ds.residual_power / ds.residual_power.isel(step=0)
  krel = ds.kernel_power / ds.kernel_power.isel(step=0)
  for i, k in enumerate(ds.freq.values):
    ax_mlp.plot(steps, np.sqrt(rel.isel(freq=i).mean("seed")), color=f"C{i}", label=f"k={k}")
    ax_k.plot(steps, np.sqrt(krel.isel(freq=i)), color=f"C{i}", label=f"k={k}")
  for ax, title in ((ax_mlp, "MLP: residual amplitude / init"),
                    (ax_k, "NTK regression: residual amplitude")):
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(0.5, color="k", lw=0.6, ls=":")
    ax.set_xlabel("step")
    ax.set_title(title, fontsize="medium")
    ax.legend(fontsize="x-small")
  for s in ds.seed.values:
    ax_h.plot(ds.freq.values, ds.halving.sel(seed=s).values, "o-", ms=3, label=f"MLP seed {s}")
  ax_h.plot(ds.freq.values, ds.kernel_halving.values, "k--", label="NTK regression")
  ax_h.plot(ds.freq.values, ds.flat_halving.values, "k:", label="flat kernel")
  ax_h.set_yscale("log")
  ax_h.set_xlabel("frequency k")
  ax_h.set_title("step the residual halves", fontsize="medium")
  ax_h.legend(fontsize="x-small")
  for ax in (ax_mlp, ax_k, ax_h):
    ax.grid(alpha=0.3)
  path = os.path.join(out_dir, "spectral_bias.png")
  fig.savefig(path, dpi=130)
  paths = [path]
  if "image_test_psnr" in ds:
    fig = plots.agg_figure((9.0, 3.8))
    ax_p, ax_img = fig.subplots(1, 2)
    x = np.where(ds.sigma.values > 0, ds.sigma.values, ds.sigma.values[ds.sigma.values > 0].min()
                 / 3 if (ds.sigma.values > 0).any() else 1.0)
    ax_p.plot(x, ds.image_test_psnr.mean("seed"), "o-", label="test (held-out pixels)")
    ax_p.plot(x, ds.image_train_psnr.mean("seed"), "s--", label="train")
    ax_p.set_xscale("log")
    ax_p.set_xlabel("Fourier feature scale sigma (leftmost: plain MLP)")
    ax_p.set_ylabel("PSNR (dB)")
    ax_p.legend(fontsize="x-small")
    ax_p.grid(alpha=0.3)
    ax_img.imshow(ds.image.values, cmap="gray", vmin=0, vmax=1)
    ax_img.set_title("target image", fontsize="medium")
    ax_img.axis("off")
    p2 = os.path.join(out_dir, "coordinate_network.png")
    fig.savefig(p2, dpi=130)
    paths.append(p2)
  return paths
