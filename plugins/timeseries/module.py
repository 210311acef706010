"""Forecasting and anomaly-detection models behind one interface.

Every model is a :class:`TimeSeriesModel`: it trains on windows from
:class:`~polydiff_timeseries.data.WindowDataModule`, keeps the data's layout and
standardisation in its checkpoint, and forecasts with ``forecast(context, samples=S)`` returning
``(B, S, H, N)`` samples in standardised units.

- :class:`ConditionalDiffusion` — CSDI-style conditional Gaussian diffusion (Tashiro et al.
  2021): the window's observed context is handed to the denoiser clean at time 0 through the
  core's known-values mask, and only the rest is denoised. Training masks are chosen by a
  strategy (forecast, CSDI's random and mixed, ImDiffusion's grating). With ``rolling_prob`` > 0
  it also trains with one noise level per frame, later frames noisier, which
  ``forecast(rolling=True)`` samples with (rolling diffusion, Ruhe et al. 2024).
- :class:`ImDiffusionDetector` — ImDiffusion (Chen et al. 2023): a conditional diffusion model
  trained to impute grating-masked windows; the anomaly score of a time step is its imputation
  error averaged over an ensemble of denoising steps. The threshold is chosen on validation
  data in every validation pass and kept in the checkpoint.
- :class:`DYffusion` — Rühling Cachay et al. 2023: a stochastic time-interpolator and a
  forecaster, trained one after the other; sampling walks physical time steps, optionally on an
  accelerated schedule (fewer interpolation times).
- :class:`Deterministic` — the baseline: the same backbone trained with MSE to output every
  horizon frame at once; also the forecast-residual anomaly detector.

Each is a :class:`~polydiff.module.DiffusionModule` so checkpoints load through
:func:`polydiff.checkpoint.load_module`; DYffusion and the deterministic model override the loss
and sampling because their "diffusion" is not the Gaussian one.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor, nn

from polydiff.module import DiffusionModule
from polydiff.samplers import KnownValues, StepInfo
from polydiff.schedules import Schedule

__all__ = ["TimeSeriesModel", "ConditionalDiffusion", "ImDiffusionDetector", "DYffusion", "Deterministic",
           "MaskStrategy", "rolling_times"]

MaskStrategy = Literal["forecast", "random", "mixed", "grating"]


def rolling_times(progress: Tensor, width: Tensor | float, frames: int) -> Tensor:
    """Per-frame noise levels of a rolling window: later frames noisier.

    Frame ``k`` of ``frames`` is at ``clip(tau - width (1 - k / (frames - 1)), 0, 1)`` with
    ``tau = (1 + width) progress``: at progress 1 every frame is at 1, at 0 every frame is
    clean, and in between the earliest frames are cleanest (Ruhe et al. 2024).

    Shapes:
        progress: (...); width: () or (...); returns (..., frames).
    """
    progress = torch.as_tensor(progress, dtype=torch.float64)
    width = torch.as_tensor(width, dtype=torch.float64, device=progress.device)
    k = torch.arange(frames, dtype=torch.float64, device=progress.device)
    frac = k / max(frames - 1, 1)
    tau = ((1 + width) * progress)[..., None]
    times = (tau - (width[..., None] if width.ndim else width) * (1 - frac)).clamp(0.0, 1.0)
    # Rounding leaves times like 1e-16 where a frame should be clean; at such a time sigma is
    # nearly 0 and the noise estimate (x - alpha x0) / sigma overflows.
    return torch.where(times < 1e-9, torch.zeros_like(times), times)


class TimeSeriesModel(DiffusionModule):
    """What every time-series model shares: data description, validation forecasts, checkpoints.

    Attributes:
        data_info: the training data's layout, standardisation, context and horizon (plain
            data, from :meth:`WindowDataModule.info`), saved in checkpoints as
            ``checkpoint["timeseries"]``.
    """

    data_info: dict[str, Any] | None = None
    val_samples: int = 8

    # --- data description ---------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        info = self.datamodule_info()
        if info is not None:
            if self.data_info is not None and self.data_info.get("layout") != info["layout"]:
                raise ValueError("the data's variables or shapes differ from those this model was trained on")
            self.data_info = info

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["timeseries"] = self.data_info

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.data_info = checkpoint.get("timeseries")

    def _info(self, key: str) -> Any:
        if self.data_info is None:
            raise RuntimeError(f"{type(self).__name__} has no data description yet: train it on a WindowDataModule "
                               "or load it from a checkpoint")
        return self.data_info[key]

    @property
    def context(self) -> int:
        return int(self._info("context"))

    @property
    def horizon(self) -> int:
        return int(self._info("horizon"))

    def _check_horizon(self, horizon: int | None) -> int:
        trained = self.horizon
        horizon = trained if horizon is None else int(horizon)
        if horizon < 1:
            raise ValueError(f"horizon must be positive, got {horizon}")
        if horizon > trained:
            raise ValueError(f"horizon {horizon} is longer than the {trained} frames this model was trained to forecast")
        return horizon

    def _context_input(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """The last ``self.context`` frames as (values with 0 for NaN, observed mask)."""
        c = self.context
        if context.ndim != 3:
            raise ValueError(f"context must be (batch, frames, series), got shape {tuple(context.shape)}")
        if context.shape[1] < c:
            raise ValueError(f"the model needs {c} context frames, got {context.shape[1]}")
        context = context[:, context.shape[1] - c:].to(self.device, torch.float32)
        observed = torch.isfinite(context)
        return torch.where(observed, context, torch.zeros_like(context)), observed

    # --- interface ----------------------------------------------------------------------------
    def forecast(self, context: Tensor, *, samples: int = 1, horizon: int | None = None,
                 generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """Forecast samples in standardised units.

        Shapes:
            context: (B, C', N) with C' >= the trained context (the last frames are used; NaN
            where missing); returns (B, S, H, N).
        """
        raise NotImplementedError

    def network_evaluations(self, **options: Any) -> int:
        """Network calls one forecast costs per sample."""
        raise NotImplementedError

    # --- validation ---------------------------------------------------------------------------
    def validation_loss(self, parts: dict[str, Any], generator: torch.Generator) -> Tensor:
        return self.compute_loss(parts, denoiser=self.sampling_denoiser(), generator=generator, drop_cond=False)

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluation_step(batch, batch_idx, dataloader_idx, "val")

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluation_step(batch, batch_idx, dataloader_idx, "test")

    def _evaluation_step(self, batch: Any, batch_idx: int, dataloader_idx: int, prefix: str) -> None:
        parts = self.unpack_batch(batch)
        x0 = parts["x0"]
        generator = self._val_generator(batch_idx, dataloader_idx, x0.device)
        self.log(f"{prefix}/loss", self.validation_loss(parts, generator), prog_bar=True, batch_size=x0.shape[0])
        if self.val_samples <= 0 or batch_idx >= self.val_sample_batches or self.context == 0:
            return
        from polydiff_timeseries.metrics import forecast_scores

        c = self.context
        ctx = torch.where(batch["observed"][:, :c], x0[:, :c], torch.full_like(x0[:, :c], float("nan")))
        fc = self.forecast(ctx, samples=self.val_samples, generator=generator)
        truth = torch.where(batch["observed"][:, c:], x0[:, c:], torch.full_like(x0[:, c:], float("nan")))
        scores = forecast_scores(fc.transpose(0, 1).cpu().numpy(), truth.cpu().numpy())
        for key in ("crps", "mse"):
            self.log(f"{prefix}/{key}", float(scores[key]), batch_size=x0.shape[0])


class ConditionalDiffusion(TimeSeriesModel):
    """CSDI-style conditional Gaussian diffusion over windows (see the module docstring).

    Args:
        denoiser: a :class:`~polydiff_timeseries.nets.ForecastDenoiser` (or any denoiser that
            reads entries at time 0 as known).
        schedule: the forward process (default: VP-linear).
        mask_strategy: which entries are given as known in training: ``forecast`` (the
            context frames), ``random`` (each window hides a random fraction of its observed
            values, CSDI), ``mixed`` (forecast or random, half each), ``grating`` (alternate
            chunks of ``grating_width`` frames, ImDiffusion).
        grating_width: frames per chunk of the grating masks.
        rolling_prob: fraction of training windows whose target frames get one noise level each,
            later frames noisier (needed for ``forecast(rolling=True)``).
        rolling_width: how far apart the first and last target frame's noise levels are, in
            units of the whole noise range.
        val_samples: forecast samples per window for the validation CRPS (0 skips it).
        kwargs: the :class:`~polydiff.module.DiffusionModule` arguments (loss, EMA, sampler,
            optimiser, ...).
    """

    def __init__(self, denoiser: nn.Module, schedule: Schedule | None = None, mask_strategy: MaskStrategy = "forecast",
                 grating_width: int = 4, rolling_prob: float = 0.0, rolling_width: float = 1.0, val_samples: int = 8,
                 **kwargs: Any):
        super().__init__(denoiser, schedule, **kwargs)
        if mask_strategy not in get_args(MaskStrategy):
            raise ValueError(f"unknown mask_strategy {mask_strategy!r}; valid: {', '.join(get_args(MaskStrategy))}")
        if grating_width < 1:
            raise ValueError(f"grating_width must be positive, got {grating_width}")
        if not 0.0 <= rolling_prob <= 1.0 or rolling_width < 0:
            raise ValueError("rolling_prob must lie in [0, 1] and rolling_width be non-negative")
        self.mask_strategy = mask_strategy
        self.grating_width = int(grating_width)
        self.rolling_prob, self.rolling_width = float(rolling_prob), float(rolling_width)
        self.val_samples = int(val_samples)

    # --- masks --------------------------------------------------------------------------------
    def grating_mask(self, length: int, phase: int, device: Any = None) -> Tensor:
        """Frames hidden by grating mask ``phase`` (0 or 1): alternate chunks of ``grating_width``.

        The two phases are complementary: every frame is hidden by exactly one of them.
        """
        chunk = torch.arange(length, device=device) // self.grating_width
        return (chunk % 2) == phase

    def known_region(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Entries given to the model as known (before intersecting with what is observed).

        Shapes:
            x0: (B, L, N); returns (B, L, N) bool.
        """
        b, length, n = x0.shape
        device = x0.device
        strategy = self.mask_strategy if self.training else ("grating" if self.mask_strategy == "grating" else "forecast")
        frames = torch.arange(length, device=device)
        forecast = (frames < self.context).view(1, length, 1).expand(b, length, n)
        if strategy == "forecast":
            return forecast
        if strategy == "grating":
            phase = torch.randint(0, 2, (b,), generator=generator, device=device) if self.training else \
                torch.arange(b, device=device) % 2
            hidden = torch.stack([self.grating_mask(length, 1, device), self.grating_mask(length, 0, device)])
            return ~hidden[phase].view(b, length, 1).expand(b, length, n)
        ratio = torch.rand(b, 1, 1, generator=generator, device=device)
        random = torch.rand(b, length, n, generator=generator, device=device) >= ratio
        if strategy == "random":
            return random
        pick = torch.rand(b, 1, 1, generator=generator, device=device) < 0.5
        return torch.where(pick, forecast, random)

    def unpack_batch(self, batch: Any) -> dict[str, Any]:
        parts = super().unpack_batch(batch)
        x0 = parts["x0"]
        observed = parts.get("observed")
        observed = torch.ones_like(x0, dtype=torch.bool) if observed is None else observed.bool()
        region = self.known_region(x0)
        known = region & observed
        parts.update(observed=observed, known_mask=known, loss_mask=observed & ~region,
                     known=KnownValues(x0, known, mode="clean"))
        return parts

    # --- training times (the core puts the known entries at t = 0) ---------------------------
    def sample_times(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        b, length, n = x0.shape
        t = self.schedule.sample_t(b, generator=generator, device=x0.device).to(torch.float64)
        times = t.view(b, 1, 1).expand(b, length, n).clone()
        c = self.context if self.data_info is not None else 0
        if self.training and self.rolling_prob > 0 and self.mask_strategy in ("forecast", "mixed") and length - c > 1:
            roll = torch.rand(b, generator=generator, device=x0.device) < self.rolling_prob
            width = self.rolling_width * torch.rand(b, generator=generator, device=x0.device, dtype=torch.float64)
            progress = torch.rand(b, generator=generator, device=x0.device, dtype=torch.float64)
            frames = rolling_times(progress, width, length - c) * float(self.schedule.t_max)
            staggered = torch.cat([frames[:, :1].expand(b, c), frames], dim=1)  # context frames are known anyway
            times = torch.where(roll.view(b, 1, 1), staggered.view(b, length, 1).expand(b, length, n), times)
        return times

    # --- forecasting --------------------------------------------------------------------------
    def rolling_grid(self, steps: int, length: int) -> Tensor:
        """A per-frame time grid (steps + 1, 1, length) for rolling sampling of the target frames."""
        c = self.context
        progress = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        frames = rolling_times(progress, self.rolling_width, length - c) * float(self.schedule.t_max)
        grid = torch.cat([frames[:, :1].expand(steps + 1, c), frames], dim=1)
        return grid.view(steps + 1, 1, length)

    @torch.no_grad()
    def forecast(self, context: Tensor, *, samples: int = 1, horizon: int | None = None,
                 generator: torch.Generator | None = None, rolling: bool = False, sampler: str | None = None,
                 steps: int | None = None, **options: Any) -> Tensor:
        """Forecast samples (see :meth:`TimeSeriesModel.forecast`).

        Args:
            rolling: sample with one noise level per frame (later frames noisier); the model
                should have been trained with ``rolling_prob`` > 0.
            sampler, steps: override the configured sampler and its number of steps.
            options: the sampler's own options.
        """
        h = self._check_horizon(horizon)
        values, observed = self._context_input(context)
        b, c, n = values.shape
        length = c + self.horizon
        x_known = torch.zeros(b, length, n, device=self.device)
        mask = torch.zeros(b, length, n, dtype=torch.bool, device=self.device)
        x_known[:, :c], mask[:, :c] = values, observed
        x_known = x_known.repeat_interleave(samples, 0)
        mask = mask.repeat_interleave(samples, 0)
        steps = self.sample_steps if steps is None else int(steps)
        grid = self.rolling_grid(steps, length) if rolling else None
        out = self.sample((b * samples, length, n), known=KnownValues(x_known, mask, mode="clean"),
                          generator=generator, sampler=sampler, steps=steps, grid=grid, **options)
        return out[:, c:c + h].reshape(b, samples, h, n)

    def network_evaluations(self, *, sampler: str | None = None, steps: int | None = None, **options: Any) -> int:
        from polydiff.samplers import evaluations

        return evaluations(sampler or self.sampler, self.sample_steps if steps is None else steps)


class ImDiffusionDetector(ConditionalDiffusion):
    """ImDiffusion: anomaly scores from grating-mask imputation errors across denoising steps.

    Trained like :class:`ConditionalDiffusion` with ``mask_strategy="grating"`` on windows of
    ``horizon`` frames (``context`` 0). Scoring slides windows by half their length, imputes
    each under two complementary masks (grating or random, ``score_mask``), keeps each window's
    central half (its edges are extrapolations), records the model's clean estimate at every
    denoising step, and scores a time step by its squared imputation error (mean over its observed series), averaged over the
    last ``ensemble_fraction`` of the steps: the ensemble over steps of Chen et al. 2023, with
    their vote replaced by the mean so the score stays continuous for AUROC/AUPRC.

    Each validation pass scores the validation split and sets the threshold: the F1-maximising
    one (without point adjustment) when the split has labelled anomalies, else the
    ``threshold_quantile`` of its scores (the split is then taken as normal data). It is kept in
    the checkpoint (``data_info["threshold"]``) for ``polydiff timeseries detect``.

    Args:
        score_mask: the masks imputed when scoring: ``grating`` (the two complementary grating
            masks of whole frames) or ``random`` (two complementary random halves of the
            entries of each window), ImDiffusion's two masking strategies.
        center: subtract from each window, series by series, the mean of its known entries (in
            training and scoring), so a trend that carries the test data beyond the training
            range does not look anomalous everywhere (instance normalisation).
        ensemble_fraction: the share of the last denoising steps whose errors are averaged.
        threshold_quantile: the unsupervised rule's quantile.
        kwargs: :class:`ConditionalDiffusion`'s arguments.
    """

    def __init__(self, denoiser: nn.Module, schedule: Schedule | None = None, mask_strategy: MaskStrategy = "grating",
                 score_mask: Literal["grating", "random"] = "grating", center: bool = True,
                 ensemble_fraction: float = 0.5, threshold_quantile: float = 0.99, **kwargs: Any):
        kwargs.setdefault("val_samples", 0)
        super().__init__(denoiser, schedule, mask_strategy=mask_strategy, **kwargs)
        if not 0.0 < ensemble_fraction <= 1.0:
            raise ValueError(f"ensemble_fraction must lie in (0, 1], got {ensemble_fraction}")
        if not 0.0 < threshold_quantile < 1.0:
            raise ValueError(f"threshold_quantile must lie in (0, 1), got {threshold_quantile}")
        if score_mask not in ("grating", "random"):
            raise ValueError(f"unknown score_mask {score_mask!r}; valid: grating, random")
        self.score_mask = score_mask
        self.center = bool(center)
        self.ensemble_fraction, self.threshold_quantile = float(ensemble_fraction), float(threshold_quantile)

    @torch.no_grad()
    def anomaly_scores(self, values: Tensor, *, steps: int | None = None, generator: torch.Generator | None = None,
                       batch_windows: int = 64) -> Tensor:
        """Anomaly score per time step of a standardised series.

        Shapes:
            values: (T, N), NaN where missing; returns (T,) float64.
        """
        length = self.horizon
        total, n = values.shape
        if total < length:
            raise ValueError(f"the series has {total} frames, fewer than the model's window of {length}")
        # Windows overlap by half and each scores only its central half (plus the outer quarter
        # at the series' ends): an imputed chunk at a window's edge is an extrapolation, whose
        # error on normal data was 10-15 times the interior's in the machine.csv benchmark.
        stride = max(1, length // 2)
        starts = list(range(0, total - length + 1, stride))
        if starts[-1] + length < total:
            starts.append(total - length)
        quarter = length // 4
        offset = torch.arange(length)
        steps = self.sample_steps if steps is None else int(steps)
        keep = max(1, int(round(self.ensemble_fraction * steps)))
        score_sum = torch.zeros(total, dtype=torch.float64)
        count = torch.zeros(total, dtype=torch.float64)
        values = values.to(self.device, torch.float32)
        jobs = [(s, phase) for s in starts for phase in (0, 1)]
        masks = {}  # per window, the two complementary hidden-entry masks
        for s in starts:
            if self.score_mask == "grating":
                first = self.grating_mask(length, 0)[:, None].expand(length, n)
            else:
                first = torch.rand(length, n, generator=None if generator is None or generator.device.type != "cpu"
                                   else generator) < 0.5
            masks[s] = (first, ~first)
        for i in range(0, len(jobs), batch_windows):
            chunk = jobs[i:i + batch_windows]
            x = torch.stack([values[s:s + length] for s, _ in chunk])
            observed = torch.isfinite(x)
            x = torch.where(observed, x, torch.zeros_like(x))
            hidden = torch.stack([masks[s][phase] for s, phase in chunk]).to(x.device)  # (W, L, N)
            known = observed & ~hidden
            if self.center:
                x = x - _known_mean(x, known)
            errors: list[Tensor] = []

            def record(info: StepInfo) -> None:
                errors.append(((info.denoised - x) ** 2 * (observed & hidden)).sum(-1))

            self.sample(tuple(x.shape), known=KnownValues(x, known, mode="clean"), generator=generator,
                        steps=steps, callback=record)
            err = torch.stack(errors[-keep:]).mean(0).double().cpu()  # (W, L)
            per = (observed & hidden).sum(-1).clamp(min=1).double().cpu()
            frame_hidden = hidden.any(-1).cpu()
            for (s, _), e, p, hmask in zip(chunk, err, per, frame_hidden):
                central = (offset >= quarter) & (offset < length - quarter)
                if s == starts[0]:
                    central |= offset < quarter
                if s == starts[-1]:
                    central |= offset >= length - quarter
                hmask = hmask & central
                idx = torch.arange(s, s + length)[hmask]
                score_sum[idx] += (e / p)[hmask]
                count[idx] += 1
        return score_sum / count.clamp(min=1)

    def unpack_batch(self, batch: Any) -> dict[str, Any]:
        parts = super().unpack_batch(batch)
        if self.center:
            x0 = parts["x0"] - _known_mean(parts["x0"], parts["known_mask"])
            parts.update(x0=x0, known=KnownValues(x0, parts["known_mask"], mode="clean"))
        return parts

    def on_validation_epoch_end(self) -> None:
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None or not hasattr(datamodule, "split_series"):
            return
        values, labels = datamodule.split_series("val")
        if values.shape[0] < self.horizon:
            return
        generator = torch.Generator(device=self.device).manual_seed(12345)
        scores = self.anomaly_scores(torch.from_numpy(values), generator=generator).numpy()
        self.data_info = {**(self.data_info or {}), "threshold": choose_threshold(scores, labels, self.threshold_quantile)}
        if labels is not None and labels.any() and not labels.all():
            from polydiff_timeseries.metrics import auprc

            self.log("val/auprc", float(auprc(scores, labels)))


def _known_mean(x: Tensor, known: Tensor) -> Tensor:
    """Per window and series, the mean of the known entries (0 where none is known).

    Shapes:
        x, known: (B, L, N); returns (B, 1, N).
    """
    weight = known.to(x.dtype)
    return (x * weight).sum(1, keepdim=True) / weight.sum(1, keepdim=True).clamp(min=1.0)


def choose_threshold(scores: np.ndarray, labels: np.ndarray | None, quantile: float) -> dict[str, Any]:
    """The detection threshold and the rule that chose it (see :class:`ImDiffusionDetector`)."""
    from polydiff_timeseries.metrics import best_f1_threshold, quantile_threshold

    if labels is not None and labels.any() and not labels.all():
        return {"value": float(best_f1_threshold(scores, labels)), "rule": "best F1 (unadjusted) on validation labels"}
    return {"value": float(quantile_threshold(scores, quantile)), "rule": f"{quantile:g} quantile of validation scores"}


class Deterministic(TimeSeriesModel):
    """The deterministic baseline: the backbone trained with MSE to output the horizon at once.

    Also a forecast-residual anomaly detector (:meth:`anomaly_scores`). ``forecast`` returns a
    single member (``S = 1``) whatever ``samples`` is asked, so its CRPS is its MAE.

    Args:
        denoiser: a :class:`~polydiff_timeseries.nets.FrameNet`.
        threshold_quantile: the unsupervised threshold rule's quantile (anomaly use).
        val_samples: 1 computes validation CRPS/MSE, 0 skips it.
        kwargs: the :class:`~polydiff.module.DiffusionModule` arguments (EMA, optimiser, ...).
    """

    def __init__(self, denoiser: nn.Module, val_samples: int = 1, threshold_quantile: float = 0.99, **kwargs: Any):
        super().__init__(denoiser, **kwargs)
        self.val_samples = int(val_samples)
        self.threshold_quantile = float(threshold_quantile)

    def _predict(self, net: nn.Module, ctx: Tensor, observed: Tensor) -> Tensor:
        c = ctx.shape[1]
        positions = torch.arange(-c + 1, 1, device=ctx.device, dtype=torch.float32)
        queries = torch.arange(1, self.horizon + 1, device=ctx.device, dtype=torch.float32)
        return net(ctx, positions, queries, observed=observed)

    def compute_loss(self, batch: Any, *, denoiser: nn.Module | None = None, generator: torch.Generator | None = None,
                     drop_cond: bool = True) -> Tensor:
        net = self.denoiser if denoiser is None else denoiser
        x0, observed = batch["x0"], batch["observed"].bool()
        c = self.context
        pred = self._predict(net, x0[:, :c], observed[:, :c])
        mask = observed[:, c:].float()
        return ((pred - x0[:, c:]) ** 2 * mask).sum() / mask.sum().clamp(min=1.0)

    @torch.no_grad()
    def forecast(self, context: Tensor, *, samples: int = 1, horizon: int | None = None,
                 generator: torch.Generator | None = None, **options: Any) -> Tensor:
        if options:
            raise ValueError(f"the deterministic forecaster has no sampling options (got {', '.join(sorted(options))})")
        h = self._check_horizon(horizon)
        values, observed = self._context_input(context)
        was = self.training
        self.eval()
        try:
            out = self._predict(self.sampling_denoiser(), values, observed)
        finally:
            self.train(was)
        return out[:, :h].unsqueeze(1)

    def network_evaluations(self, **options: Any) -> int:
        return 1

    @torch.no_grad()
    def anomaly_scores(self, values: Tensor, *, batch_windows: int = 256, **options: Any) -> Tensor:
        """Forecast-residual score per time step: mean squared error over the observed series of
        the forecast from the preceding context (the first ``context`` steps score 0).

        Shapes:
            values: (T, N) standardised, NaN where missing; returns (T,) float64.
        """
        c, h = self.context, self.horizon
        total = values.shape[0]
        scores = torch.zeros(total, dtype=torch.float64)
        starts = list(range(c, total, h))
        values = values.to(self.device, torch.float32)
        for i in range(0, len(starts), batch_windows):
            chunk = starts[i:i + batch_windows]
            ctx = torch.stack([values[s - c:s] for s in chunk])
            fc = self.forecast(ctx)[:, 0]
            for s, f in zip(chunk, fc):
                stop = min(s + h, total)
                truth = values[s:stop]
                ok = torch.isfinite(truth)
                err = torch.where(ok, (f[:stop - s] - truth) ** 2, torch.zeros_like(truth))
                scores[s:stop] = (err.sum(-1) / ok.sum(-1).clamp(min=1)).double().cpu()
        return scores

    def on_validation_epoch_end(self) -> None:
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None or not hasattr(datamodule, "split_series") or datamodule.label_column is None:
            return
        values, labels = datamodule.split_series("val")
        if labels is None or values.shape[0] <= self.context:
            return
        scores = self.anomaly_scores(torch.from_numpy(values)).numpy()
        self.data_info = {**(self.data_info or {}), "threshold": choose_threshold(scores, labels, self.threshold_quantile)}


class DYffusion(TimeSeriesModel):
    """DYffusion: a stochastic interpolator and a forecaster, trained in two stages.

    Stage 1 (the first ``interpolator_steps`` optimiser steps) trains the interpolator
    ``I(context, x_{t+h}, i) -> x_{t+i}`` for ``i`` in 1..h-1; stage 2 trains the forecaster
    ``F(context, x_{t+i}, i) -> x_{t+h}`` on inputs drawn from the (frozen, dropout-on)
    interpolator, ``i`` in 0..h-1 (``x_{t+0}`` is the last context frame). Sampling (their
    Algorithm 2) walks the interpolation times ``i_0 = 0 < i_1 < ...``: forecast ``x_{t+h}``
    from the current state, then move the state to ``i_{n+1}`` with the interpolator, by cold
    sampling (``x + I(.., i_{n+1}) - I(.., i_n)``) or directly; the lead times between are read
    from the interpolator given the final forecast. The ensemble spread comes from the
    interpolator's dropout, kept on when sampling.

    Args:
        denoiser: a :class:`~polydiff_timeseries.nets.DYffusionNets`.
        interpolator_steps: optimiser steps of stage 1; stage 2 follows.
        sampling_steps: interpolation times used when sampling (default: all ``h`` physical
            steps; fewer is DYffusion's accelerated schedule).
        cold_sampling: the cold-sampling update (Bansal et al. 2022) instead of the direct one.
        val_samples: forecast samples per validation window (0 skips the validation CRPS).
        kwargs: the :class:`~polydiff.module.DiffusionModule` arguments (EMA, optimiser, ...).
    """

    def __init__(self, denoiser: nn.Module, interpolator_steps: int = 1000, sampling_steps: int | None = None,
                 cold_sampling: bool = True, val_samples: int = 8, **kwargs: Any):
        super().__init__(denoiser, **kwargs)
        if not hasattr(denoiser, "interpolator") or not hasattr(denoiser, "forecaster"):
            raise TypeError("DYffusion needs a denoiser with .interpolator and .forecaster (DYffusionNets)")
        if interpolator_steps < 0:
            raise ValueError(f"interpolator_steps must be non-negative, got {interpolator_steps}")
        if sampling_steps is not None and sampling_steps < 1:
            raise ValueError(f"sampling_steps must be positive, got {sampling_steps}")
        self.interpolator_steps = int(interpolator_steps)
        self.sampling_steps = sampling_steps
        self.cold_sampling = bool(cold_sampling)
        self.val_samples = int(val_samples)

    @property
    def stage(self) -> str:
        if self.horizon < 2:
            return "forecaster"  # nothing to interpolate between adjacent frames
        return "interpolator" if self.global_step < self.interpolator_steps else "forecaster"

    def _positions(self, c: int, device: Any) -> Tensor:
        return torch.arange(-c + 1, 1, device=device, dtype=torch.float32)

    def _interpolate(self, net: nn.Module, ctx: Tensor, ctx_obs: Tensor, end: Tensor, times: Tensor) -> Tensor:
        """``I(context, x_{t+h}, i)`` for query times ``times`` (Q,) or (B, 1); returns (B, Q, N)."""
        b, c, n = ctx.shape
        h = float(self.horizon)
        frames = torch.cat([ctx, end[:, None]], 1)
        obs = torch.cat([ctx_obs, torch.ones_like(end[:, None], dtype=torch.bool)], 1)
        positions = torch.cat([self._positions(c, ctx.device), torch.tensor([h], device=ctx.device)])
        return net(frames, positions, times, observed=obs)

    def _forecast_step(self, net: nn.Module, ctx: Tensor, ctx_obs: Tensor, state: Tensor, time: Tensor) -> Tensor:
        """``F(context, x_{t+i}, i) -> x_{t+h}``; ``time`` (B,); returns (B, N)."""
        b, c, n = ctx.shape
        frames = torch.cat([ctx, state[:, None]], 1)
        obs = torch.cat([ctx_obs, torch.ones_like(state[:, None], dtype=torch.bool)], 1)
        positions = torch.cat([self._positions(c, ctx.device).expand(b, c), time.view(b, 1).float()], 1)
        queries = torch.full((b, 1), float(self.horizon), device=ctx.device)
        return net(frames, positions, queries, observed=obs)[:, 0]

    def compute_loss(self, batch: Any, *, denoiser: nn.Module | None = None, generator: torch.Generator | None = None,
                     drop_cond: bool = True) -> Tensor:
        nets = self.denoiser if denoiser is None else denoiser
        x0, observed = batch["x0"], batch["observed"].bool()
        c, h = self.context, self.horizon
        b = x0.shape[0]
        ctx, ctx_obs, future, fut_obs = x0[:, :c], observed[:, :c], x0[:, c:], observed[:, c:]
        if self.stage == "interpolator":
            i = torch.randint(1, h, (b,), generator=generator, device=x0.device)
            pred = self._interpolate(nets.interpolator, ctx, ctx_obs, future[:, -1], i.view(b, 1).float())[:, 0]
            target, mask = future[torch.arange(b), i - 1], fut_obs[torch.arange(b), i - 1]
        else:
            i = torch.randint(0, h, (b,), generator=generator, device=x0.device)
            with torch.no_grad():
                was = nets.interpolator.training
                nets.interpolator.train()  # DYffusion trains the forecaster on stochastic interpolations
                mid = self._interpolate(nets.interpolator, ctx, ctx_obs, future[:, -1], i.clamp(min=1).view(b, 1).float())[:, 0]
                nets.interpolator.train(was)
            state = torch.where((i == 0).view(b, 1), ctx[:, -1], mid)
            pred = self._forecast_step(nets.forecaster, ctx, ctx_obs, state, i)
            target, mask = future[:, -1], fut_obs[:, -1]
        mask = mask.float()
        return ((pred - target) ** 2 * mask).sum() / mask.sum().clamp(min=1.0)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        self.log("train/stage", float(self.stage == "forecaster"))
        return loss

    def interpolation_times(self, steps: int | None = None) -> list[int]:
        """The interpolation times ``i_n`` sampling visits (0 first)."""
        h = self.horizon
        steps = self.sampling_steps if steps is None else steps
        if steps is None or steps >= h:
            return list(range(h))
        return sorted(set(int(round(v)) for v in np.linspace(0, h - 1, steps)))

    @torch.no_grad()
    def forecast(self, context: Tensor, *, samples: int = 1, horizon: int | None = None,
                 generator: torch.Generator | None = None, steps: int | None = None, **options: Any) -> Tensor:
        """Forecast samples (see :meth:`TimeSeriesModel.forecast`); ``steps`` overrides
        ``sampling_steps``."""
        if options:
            raise ValueError(f"DYffusion has no sampler options other than steps (got {', '.join(sorted(options))}); "
                             "rolling and --sampler apply to the conditional diffusion forecaster")
        hq = self._check_horizon(horizon)
        h = self.horizon
        values, observed = self._context_input(context)
        b, c, n = values.shape
        ctx = values.repeat_interleave(samples, 0)
        obs = observed.repeat_interleave(samples, 0)
        bs = ctx.shape[0]
        nets = self.sampling_denoiser()
        # Without a generator the seed comes from (and advances) the global RNG, so calls differ.
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        was = nets.training
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            nets.eval()
            nets.interpolator.train()  # Monte Carlo dropout: DYffusion's source of randomness
            try:
                times = self.interpolation_times(steps)
                state = ctx[:, -1]
                end = state
                for k, i in enumerate(times):
                    end = self._forecast_step(nets.forecaster, ctx, obs, state, torch.full((bs,), float(i), device=ctx.device))
                    if k + 1 == len(times):
                        break
                    nxt = float(times[k + 1])
                    moved = self._interpolate(nets.interpolator, ctx, obs, end, torch.tensor([nxt], device=ctx.device))[:, 0]
                    if self.cold_sampling:
                        here = ctx[:, -1] if i == 0 else self._interpolate(
                            nets.interpolator, ctx, obs, end, torch.tensor([float(i)], device=ctx.device))[:, 0]
                        state = state + moved - here
                    else:
                        state = moved
                if h > 1:
                    # One query per call, as in training (query frames attend to each other):
                    # the h - 1 lead times are folded into the batch.
                    leads = torch.arange(1, h, device=ctx.device, dtype=torch.float32)
                    k = h - 1
                    mids = self._interpolate(nets.interpolator, ctx.repeat_interleave(k, 0), obs.repeat_interleave(k, 0),
                                             end.repeat_interleave(k, 0), leads.repeat(bs).view(bs * k, 1))
                    out = torch.cat([mids.view(bs, k, n), end[:, None]], 1)
                else:
                    out = end[:, None]
            finally:
                nets.train(was)
        return out[:, :hq].reshape(b, samples, hq, n)

    def network_evaluations(self, *, steps: int | None = None, **options: Any) -> int:
        times = self.interpolation_times(steps)
        calls = len(times) + (len(times) - 1) * (2 if self.cold_sampling else 1)
        if self.cold_sampling and times and times[0] == 0 and len(times) > 1:
            calls -= 1  # I(.., 0) is the last context frame, not a network call
        return calls + self.horizon - 1  # the lead times between, one interpolation each

