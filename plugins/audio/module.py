"""Lightning modules for diffusion speech enhancement: SGMSE+ and StoRM.

:class:`SGMSEModule` is the core's :class:`~polydiff.module.DiffusionModule` on compressed complex
spectrograms (Richter et al. 2023): the Ornstein–Uhlenbeck VE bridge from the clean spectrogram
toward the noisy one, a score network conditioned on the noisy spectrogram, the loss
``|| sigma score + z ||^2`` (``loss_space="eps"`` on a ``score`` network) and predictor–corrector
sampling with 30 reverse steps. :class:`StoRMModule` (Lemercier et al. 2023) adds a predictive
network whose one-pass estimate replaces the noisy spectrogram as the diffusion model's
condition and the bridge's end point, so a few reverse steps suffice.

Both read the waveform batches of :class:`~polydiff_audio.data.PairedAudioDataModule` and compute
their own STFT, and both :meth:`~SGMSEModule.enhance` waveforms of any length and channel count
in bounded memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, get_args

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from polydiff.ema import EMA
from polydiff.module import DiffusionModule, LossSpace, LrInterval, SampleMetrics, Weighting
from polydiff.samplers import evaluations
from polydiff.schedules import OUVEBridge, Schedule

from polydiff_audio.metrics import si_sdr_torch
from polydiff_audio.nets import SpectrogramPredictor, SpectrogramScoreNet
from polydiff_audio.segments import process_in_segments
from polydiff_audio.stft import SpectrogramTransform

__all__ = ["EnhancementMetrics", "Normalize", "SGMSEModule", "StoRMModule"]

Normalize = Literal["noisy", "none"]

# SGMSE+'s reverse-diffusion predictor with one annealed Langevin corrector step at snr 0.5.
_SGMSE_PC_OPTIONS: dict[str, Any] = {"snr": 0.5, "corrector_steps": 1, "predictor": "euler_maruyama"}
# Floor of the normalisation gain, so that a silent input stays silent instead of dividing by 0.
_MIN_PEAK = 1e-8


class EnhancementMetrics(SampleMetrics):
    """SI-SDR of the enhanced waveform against the clean one, and its gain over the noisy input.

    Reads ``batch["transform"]`` (the module's :class:`SpectrogramTransform`) to invert the
    sampled spectrograms and ``batch["clean"]``/``batch["noisy"]`` for the references, as
    :meth:`SGMSEModule.unpack_batch` provides them. Files with a silent reference (undefined
    SI-SDR) are left out of the mean.

    Shapes:
        samples: (B, 1, F, T) complex; batch["clean"], batch["noisy"]: (B, 1, S).
    """

    def __call__(self, samples: Tensor, batch: Mapping[str, Any]) -> dict[str, Tensor | float]:
        clean = batch["clean"]
        enhanced = batch["transform"].inverse(samples, clean.shape[-1]).to(clean.dtype)
        si_sdr = si_sdr_torch(enhanced, clean).flatten()
        si_sdr_noisy = si_sdr_torch(batch["noisy"].to(clean.dtype), clean).flatten()
        return {"si_sdr": si_sdr.nanmean(), "si_sdr_improvement": (si_sdr - si_sdr_noisy).nanmean()}


class SGMSEModule(DiffusionModule):
    """SGMSE+: score-based speech enhancement in the complex STFT domain (Richter et al. 2023).

    Training: ``x0 = transform(clean)``, ``y = cond = transform(noisy)`` (both divided by the
    noisy waveform's peak when ``normalize="noisy"``, as SGMSE+ does), then the core's loss.
    Sampling starts from the bridge's prior ``y + sigma(1) z`` and runs the configured sampler
    with ``sampler_options`` (SGMSE+: PC, reverse-diffusion predictor, one Langevin corrector step
    at snr 0.5, 30 steps = 60 network evaluations).

    Args:
        denoiser: the score network ``net(x_t, t, y)`` (default:
            :class:`~polydiff_audio.nets.SpectrogramScoreNet`).
        transform: the compressed STFT (default: SGMSE+'s settings).
        schedule: default :class:`~polydiff.schedules.OUVEBridge` (gamma 1.5, sigma 0.05..0.5).
        loss_space, weighting, min_snr_gamma, cond_dropout, ema_decay, ema_start, sampler,
            sample_steps, grid, guidance, val_sample_batches, optimizer, lr_scheduler,
            lr_scheduler_interval: as in :class:`~polydiff.module.DiffusionModule`, with
            SGMSE+'s defaults.
        sampler_options: the sampler's own options (default for ``pc``: snr 0.5, one corrector
            step, ``euler_maruyama`` predictor; none for other samplers).
        val_metrics: metrics on sampled validation spectrograms, e.g. :class:`EnhancementMetrics`;
            ``None`` skips sampling in validation.
        val_sample_steps: reverse steps when sampling in validation (few, to keep it cheap).
        normalize: ``noisy`` divides each example (and each channel in :meth:`enhance`) by the
            noisy waveform's peak, and multiplies the result back; ``none`` leaves levels as
            they are.
        rate: the sample rate in Hz the model works at; callers resample to it.
        segment_seconds: :meth:`enhance` processes longer inputs in segments of this length.
        overlap_seconds: crossfade between neighbouring segments, at most half a segment.
        segment_batch: the most segments (times channels) enhanced at once.
    """

    def __init__(
        self,
        denoiser: nn.Module | None = None,
        transform: SpectrogramTransform | None = None,
        schedule: Schedule | None = None,
        loss_space: LossSpace = "eps",
        weighting: Weighting = "none",
        min_snr_gamma: float = 5.0,
        cond_dropout: float = 0.0,
        ema_decay: float = 0.999,
        ema_start: int = 0,
        sampler: str = "pc",
        sample_steps: int = 30,
        grid: str = "auto",
        guidance: float = 1.0,
        sampler_options: dict[str, Any] | None = None,
        val_metrics: SampleMetrics | None = None,
        val_sample_batches: int = 1,
        val_sample_steps: int = 5,
        normalize: Normalize = "noisy",
        rate: int = 16000,
        segment_seconds: float = 4.0,
        overlap_seconds: float = 0.5,
        segment_batch: int = 4,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: LrInterval = "step",
    ):
        super().__init__(
            denoiser=denoiser if denoiser is not None else SpectrogramScoreNet(),
            schedule=schedule if schedule is not None else OUVEBridge(),
            loss_space=loss_space,
            weighting=weighting,
            min_snr_gamma=min_snr_gamma,
            cond_dropout=cond_dropout,
            ema_decay=ema_decay,
            ema_start=ema_start,
            sampler=sampler,
            sampler_options=(dict(_SGMSE_PC_OPTIONS) if sampler == "pc" else {})
            if sampler_options is None else sampler_options,
            sample_steps=sample_steps,
            grid=grid,
            guidance=guidance,
            val_metrics=val_metrics,
            val_sample_batches=val_sample_batches,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            lr_scheduler_interval=lr_scheduler_interval,
        )
        if not self.schedule.has_bridge:
            raise ValueError(f"{type(self).__name__} needs a bridge schedule (e.g. OUVEBridge), got {self.schedule!r}")
        self.transform = transform if transform is not None else SpectrogramTransform()
        if int(val_sample_steps) != val_sample_steps or val_sample_steps < 1:
            raise ValueError(f"val_sample_steps must be a positive integer, got {val_sample_steps!r}")
        self.val_sample_steps = int(val_sample_steps)
        if normalize not in get_args(Normalize):
            raise ValueError(f"unknown normalize {normalize!r}; valid: {', '.join(get_args(Normalize))}")
        self.normalize = normalize
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = int(rate)
        self.segment_samples = max(self.transform.min_samples, math.ceil(segment_seconds * rate))
        self.overlap_samples = round(overlap_seconds * rate)
        if not 0 <= 2 * self.overlap_samples <= self.segment_samples:
            raise ValueError(
                f"overlap_seconds must lie in [0, segment_seconds / 2], got {overlap_seconds} and {segment_seconds}"
            )
        if int(segment_batch) != segment_batch or segment_batch < 1:
            raise ValueError(f"segment_batch must be a positive integer, got {segment_batch!r}")
        self.segment_batch = int(segment_batch)

    def setup(self, stage: str) -> None:
        """Check that the data module delivers audio at the model's rate (a config mismatch)."""
        super().setup(stage)
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        data_rate = getattr(datamodule, "rate", None)
        if data_rate is not None and int(data_rate) != self.rate:
            raise ValueError(
                f"the data module reads audio at {data_rate} Hz but the model works at {self.rate} Hz; "
                f"set data.init_args.rate and model.init_args.rate to the same value"
            )

    # --- batches -------------------------------------------------------------------------------
    def _peak(self, noisy: Tensor) -> Tensor:
        """Per-example gain dividing the signals (1 for ``normalize="none"``).

        Shapes:
            noisy: (B, C, S); returns (B, 1, 1).
        """
        if self.normalize == "none":
            return torch.ones(noisy.shape[0], 1, 1, dtype=noisy.dtype, device=noisy.device)
        return noisy.abs().amax(dim=(1, 2), keepdim=True).clamp_min(_MIN_PEAK)

    def unpack_batch(self, batch: Any) -> dict[str, Any]:
        """Waveform pairs to the spectrogram batch the core reads.

        Returns:
            ``x0 = transform(clean)``, ``y = cond = transform(noisy)`` (complex), the
            (normalised) waveforms as ``clean`` and ``noisy``, ``name``, and ``transform`` (for
            :class:`EnhancementMetrics`).

        Shapes:
            batch["clean"], batch["noisy"]: (B, 1, S) real; x0, y, cond: (B, 1, F, T) complex.
        """
        if not isinstance(batch, Mapping) or "clean" not in batch or "noisy" not in batch:
            keys = ", ".join(map(str, batch)) if isinstance(batch, Mapping) else type(batch).__name__
            raise KeyError(f"{type(self).__name__} expects batches with 'clean' and 'noisy' waveforms, got {keys}")
        clean, noisy = batch["clean"], batch["noisy"]
        if clean.shape != noisy.shape or clean.ndim != 3:
            raise ValueError(
                f"clean and noisy must both be (B, C, S) waveforms, got {tuple(clean.shape)} and {tuple(noisy.shape)}"
            )
        peak = self._peak(noisy)
        clean, noisy = clean / peak, noisy / peak
        y = self.transform(noisy)
        return {
            "x0": self.transform(clean),
            "y": y,
            "cond": y,
            "loss_mask": None,
            "known": None,
            "clean": clean,
            "noisy": noisy,
            "name": batch.get("name"),
            "transform": self.transform,
        }

    # --- validation ----------------------------------------------------------------------------
    def validation_loss(self, parts: Mapping[str, Any], generator: torch.Generator) -> Tensor:
        """The loss logged as ``val/loss``: the training loss with the EMA weights."""
        return self.compute_loss(parts, denoiser=self.sampling_denoiser(), generator=generator, drop_cond=False)

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        parts = self.unpack_batch(batch)
        x0 = parts["x0"]
        n = x0.shape[0]
        generator = self._val_generator(batch_idx, dataloader_idx, x0.device)
        self.log("val/loss", self.validation_loss(parts, generator), prog_bar=True, sync_dist=True, batch_size=n)
        if self.val_metrics is None or batch_idx >= self.val_sample_batches:
            return
        samples = self.enhance_spectrogram(parts["y"], steps=self.val_sample_steps, generator=generator)
        for name, value in self.val_metrics(samples, parts).items():
            self.log(f"val/{name}", value, sync_dist=True, batch_size=n)

    # --- sampling ------------------------------------------------------------------------------
    def network_evaluations(self, steps: int | None = None) -> int:
        """Network evaluations one call of :meth:`enhance_spectrogram` spends (per segment batch)."""
        steps = self.sample_steps if steps is None else steps
        corrector = int(self.sampler_options.get("corrector_steps", 1))
        return evaluations(self.sampler, steps, guidance=self.guidance, corrector_steps=corrector)

    @torch.no_grad()
    def enhance_spectrogram(
        self, y: Tensor, *, steps: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """The clean spectrogram sampled given the noisy one, starting from ``y + sigma(1) z``.

        Shapes:
            y: (B, 1, F, T) complex; returns (B, 1, F, T) complex.
        """
        return self.sample(tuple(y.shape), cond=y, y=y, steps=steps, generator=generator)

    @torch.no_grad()
    def enhance(
        self, noisy_wav: Tensor, *, steps: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Enhance waveforms at :attr:`rate`: STFT, reverse diffusion, inverse STFT.

        Every channel is enhanced on its own (stereo as two mono signals), normalised by its
        peak when ``normalize="noisy"``; signals longer than ``segment_seconds`` are processed in
        overlapping segments crossfaded back together
        (:func:`~polydiff_audio.segments.process_in_segments`), so memory does not grow with
        the length. All randomness comes from ``generator`` (on the module's device), so a
        seeded generator reproduces the output exactly.

        Args:
            noisy_wav: the noisy signal(s).
            steps: reverse steps (default: ``sample_steps``).
            generator: source of the sampling noise.

        Returns:
            The enhanced waveform(s), with the input's shape, dtype and device.

        Shapes:
            noisy_wav: (C, S) or (B, C, S); returns the same shape.

        Raises:
            ValueError: for another shape, or a signal shorter than the STFT accepts.
        """
        if noisy_wav.ndim not in (2, 3) or not noisy_wav.is_floating_point():
            raise ValueError(
                f"expected real waveforms of shape (C, S) or (B, C, S), got {noisy_wav.dtype} {tuple(noisy_wav.shape)}"
            )
        if noisy_wav.shape[-1] < self.transform.min_samples:
            raise ValueError(
                f"a signal of {noisy_wav.shape[-1]} samples is shorter than one STFT frame needs "
                f"({self.transform.min_samples} samples)"
            )
        batched = noisy_wav if noisy_wav.ndim == 3 else noisy_wav.unsqueeze(0)
        wav = batched.to(device=self.device, dtype=torch.float32)

        def enhance_segments(segments: Tensor) -> Tensor:
            count, channels, samples = segments.shape
            mono = segments.reshape(count * channels, 1, samples)
            enhanced = self.enhance_spectrogram(self.transform(mono), steps=steps, generator=generator)
            return self.transform.inverse(enhanced, samples).reshape(count, channels, samples)

        outputs = []
        for signal in wav:
            # One gain per channel over the whole file, so segments keep their relative levels.
            peak = self._peak(signal.unsqueeze(1)).reshape(-1, 1)
            out = process_in_segments(
                signal / peak,
                enhance_segments,
                segment_samples=self.segment_samples,
                overlap_samples=self.overlap_samples,
                max_batch=self.segment_batch,
            )
            outputs.append(out * peak)
        result = torch.stack(outputs).to(device=noisy_wav.device, dtype=noisy_wav.dtype)
        return result if noisy_wav.ndim == 3 else result.squeeze(0)


class StoRMModule(SGMSEModule):
    """StoRM: stochastic regeneration from a predictive estimate (Lemercier et al. 2023).

    A predictive network ``D`` maps the noisy spectrogram ``y`` to an estimate ``D(y)`` of the
    clean one; the diffusion model is conditioned on ``D(y)`` and its bridge drifts toward
    ``D(y)`` instead of ``y``, so sampling starts from ``D(y) + sigma(1) z`` and only has to
    remove the predictor's residual distortions, which takes a few steps. Both networks are
    trained jointly, the diffusion loss back-propagating into the predictor through ``D(y)``
    as in the paper; the loss is

        ``predictor_weight * mean |D(y) - x0|^2 + diffusion loss``

    with ``predictor_weight = 1`` (the paper's equal weighting of the two terms; both are means
    of squared errors of unit-scale spectrograms, so they are of comparable size).

    The default is 8 reverse steps, 17 network evaluations with the predictor's one pass, under a
    third of SGMSE+'s 60.

    Args:
        predictor: the predictive network ``D(y)`` (default:
            :class:`~polydiff_audio.nets.SpectrogramPredictor`); its EMA is used for sampling,
            like the denoiser's.
        predictor_weight: weight of the predictive MSE in the total loss.
        sample_steps: reverse steps (StoRM needs few).
        other arguments: as in :class:`SGMSEModule`.
    """

    def __init__(
        self,
        denoiser: nn.Module | None = None,
        predictor: nn.Module | None = None,
        predictor_weight: float = 1.0,
        transform: SpectrogramTransform | None = None,
        schedule: Schedule | None = None,
        loss_space: LossSpace = "eps",
        weighting: Weighting = "none",
        min_snr_gamma: float = 5.0,
        cond_dropout: float = 0.0,
        ema_decay: float = 0.999,
        ema_start: int = 0,
        sampler: str = "pc",
        sample_steps: int = 8,
        grid: str = "auto",
        guidance: float = 1.0,
        sampler_options: dict[str, Any] | None = None,
        val_metrics: SampleMetrics | None = None,
        val_sample_batches: int = 1,
        val_sample_steps: int = 4,
        normalize: Normalize = "noisy",
        rate: int = 16000,
        segment_seconds: float = 4.0,
        overlap_seconds: float = 0.5,
        segment_batch: int = 4,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: LrInterval = "step",
    ):
        super().__init__(
            denoiser=denoiser,
            transform=transform,
            schedule=schedule,
            loss_space=loss_space,
            weighting=weighting,
            min_snr_gamma=min_snr_gamma,
            cond_dropout=cond_dropout,
            ema_decay=ema_decay,
            ema_start=ema_start,
            sampler=sampler,
            sample_steps=sample_steps,
            grid=grid,
            guidance=guidance,
            sampler_options=sampler_options,
            val_metrics=val_metrics,
            val_sample_batches=val_sample_batches,
            val_sample_steps=val_sample_steps,
            normalize=normalize,
            rate=rate,
            segment_seconds=segment_seconds,
            overlap_seconds=overlap_seconds,
            segment_batch=segment_batch,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            lr_scheduler_interval=lr_scheduler_interval,
        )
        self.predictor = predictor if predictor is not None else SpectrogramPredictor()
        if predictor_weight < 0:
            raise ValueError(f"predictor_weight must be non-negative, got {predictor_weight}")
        self.predictor_weight = float(predictor_weight)
        self.predictor_ema = EMA(self.predictor, decay=ema_decay)

    # --- the loss ------------------------------------------------------------------------------
    def loss_terms(
        self,
        batch: Mapping[str, Any],
        *,
        denoiser: nn.Module | None = None,
        predictor: nn.Module | None = None,
        generator: torch.Generator | None = None,
        drop_cond: bool = True,
    ) -> dict[str, Tensor]:
        """The two terms of the loss and their weighted sum.

        Returns:
            ``{"predictive": mean |D(y) - x0|^2, "diffusion": the core's loss around D(y),
            "total": predictor_weight * predictive + diffusion}``, scalars.
        """
        predictor = self.predictor if predictor is None else predictor
        x0 = batch["x0"]
        estimate = predictor(batch["y"])
        predictive = (estimate - x0).abs().square().mean()
        diffusion = super().compute_loss(
            {**batch, "cond": estimate, "y": estimate}, denoiser=denoiser, generator=generator, drop_cond=drop_cond
        )
        return {
            "predictive": predictive,
            "diffusion": diffusion,
            "total": self.predictor_weight * predictive + diffusion,
        }

    def compute_loss(
        self,
        batch: Mapping[str, Any],
        *,
        denoiser: nn.Module | None = None,
        generator: torch.Generator | None = None,
        drop_cond: bool = True,
    ) -> Tensor:
        """The total loss of :meth:`loss_terms` (with the trained predictor)."""
        return self.loss_terms(batch, denoiser=denoiser, generator=generator, drop_cond=drop_cond)["total"]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        parts = self.unpack_batch(batch)
        terms = self.loss_terms(parts)
        n = parts["x0"].shape[0]
        self.log("train/loss", terms["total"], prog_bar=True, batch_size=n)
        self.log("train/predictive_loss", terms["predictive"], batch_size=n)
        self.log("train/diffusion_loss", terms["diffusion"], batch_size=n)
        return terms["total"]

    def validation_loss(self, parts: Mapping[str, Any], generator: torch.Generator) -> Tensor:
        terms = self.loss_terms(
            parts, denoiser=self.sampling_denoiser(), predictor=self.sampling_predictor(), generator=generator,
            drop_cond=False,
        )
        n = parts["x0"].shape[0]
        self.log("val/predictive_loss", terms["predictive"], sync_dist=True, batch_size=n)
        self.log("val/diffusion_loss", terms["diffusion"], sync_dist=True, batch_size=n)
        return terms["total"]

    # --- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        # The base optimises the denoiser only; StoRM trains both networks with one optimiser.
        params = list(self.denoiser.parameters()) + list(self.predictor.parameters())
        optimizer = self.optimizer_factory(params)
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        config = {"scheduler": scheduler, "interval": self.lr_scheduler_interval}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = "val/loss"
        return {"optimizer": optimizer, "lr_scheduler": config}

    def update_ema(self, step: int | None = None) -> None:
        step = self.global_step if step is None else step
        super().update_ema(step)
        if step < self.ema_start:
            self.predictor_ema.reset(self.predictor)
        else:
            self.predictor_ema.update(self.predictor)

    def sampling_predictor(self, use_ema: bool = True) -> nn.Module:
        """The predictor sampling uses: its EMA once updated, else the trained one."""
        if use_ema and int(self.predictor_ema.num_updates) > 0:
            return self.predictor_ema.module
        return self.predictor

    # --- sampling ------------------------------------------------------------------------------
    def network_evaluations(self, steps: int | None = None) -> int:
        """Network evaluations of one :meth:`enhance_spectrogram` call: the predictor's one pass
        plus the diffusion's (none for ``steps=0``)."""
        return 1 if steps == 0 else 1 + super().network_evaluations(steps)

    @torch.no_grad()
    def enhance_spectrogram(
        self, y: Tensor, *, steps: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """The predictor's estimate, regenerated by the short reverse diffusion from
        ``D(y) + sigma(1) z``; ``steps=0`` returns the estimate itself (the predictive model
        alone, one network evaluation).

        Shapes:
            y: (B, 1, F, T) complex; returns (B, 1, F, T) complex.
        """
        predictor = self.sampling_predictor()
        was_training = predictor.training
        predictor.eval()
        try:
            estimate = predictor(y.to(self.device))
        finally:
            predictor.train(was_training)
        if steps == 0:
            return estimate
        return self.sample(tuple(estimate.shape), cond=estimate, y=estimate, steps=steps, generator=generator)
