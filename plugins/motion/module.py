"""Text-to-motion diffusion (MDM, Tevet et al. 2023) on normalised HumanML3D features.

:class:`MotionDiffusion` trains an ``x0``-predicting denoiser (by default
:class:`~polydiff_motion.nets.MotionTransformer`) with the core's diffusion loss on the valid
frames, plus MDM's geometric losses on the joint positions recovered from the denormalised
prediction. It keeps the data description (feature statistics, text encoder, frame limits) from
the data module and records it in checkpoints, so a checkpoint alone generates motions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from polydiff.module import DiffusionModule
from polydiff.parameterization import convert
from polydiff.schedules import Schedule, VPCosine

from .features import FEATURE_DIM, FOOT_CONTACT, features_to_positions
from .skeleton import FOOT_JOINTS

__all__ = ["MotionDiffusion", "check_data_info"]


def _chain(callbacks: list[Callable[[Any], Tensor | None]]) -> Callable[[Any], Tensor | None] | None:
    """One per-step callback running several in turn, each seeing the previous one's estimate."""
    if not callbacks:
        return None
    if len(callbacks) == 1:
        return callbacks[0]

    def run(info: Any) -> Tensor | None:
        from dataclasses import replace

        changed = None
        for callback in callbacks:
            out = callback(info if changed is None else replace(info, denoised=changed))
            if out is not None:
                changed = out
        return changed

    return run

_INFO_KEYS = ("feature_dim", "fps", "max_frames", "min_frames", "text_dim", "text_encoder", "mean", "std", "dataset")
#: Fields that must agree between a model and the data it is trained further on.
_MATCHING_KEYS = ("feature_dim", "text_dim", "text_encoder", "mean", "std")


def check_data_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a motion data description, checked (see the plugin's interface notes)."""
    if not isinstance(info, Mapping):
        raise TypeError(f"data_info must be a mapping, got {type(info).__name__}")
    missing = [k for k in _INFO_KEYS if k not in info]
    if missing:
        raise ValueError(f"data_info lacks {', '.join(missing)}")
    info = dict(info)
    dim = int(info["feature_dim"])
    if dim != FEATURE_DIM or len(info["mean"]) != dim or len(info["std"]) != dim:
        raise ValueError(f"data_info: feature_dim, mean and std must all have {FEATURE_DIM} entries")
    if min(float(s) for s in info["std"]) <= 0:
        raise ValueError("data_info: std must be positive")
    if not 1 <= int(info["min_frames"]) <= int(info["max_frames"]):
        raise ValueError(f"data_info: need 1 <= min_frames <= max_frames, got {info['min_frames']}, {info['max_frames']}")
    return info


class _Recorder:
    """Calls a denoiser and keeps its last input and output, so the geometric losses reuse the
    very prediction the core's loss was taken on (same times, noise and dropped conditions)."""

    def __init__(self, denoiser: nn.Module):
        self.denoiser = denoiser
        self.x_t = self.t = self.prediction = None

    def __call__(self, x_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        self.x_t, self.t = x_t, t
        self.prediction = self.denoiser(x_t, t, cond)
        return self.prediction

    def drop_cond(self, cond: Any, mask: Tensor) -> Any:
        from polydiff.denoiser import drop_condition

        return getattr(self.denoiser, "drop_cond", drop_condition)(cond, mask)


class MotionDiffusion(DiffusionModule):
    """MDM's text-to-motion diffusion model.

    The loss is the core's diffusion loss on the valid frames plus (Tevet et al. 2023, eq. 2-4)
    ``position_weight * L_pos + velocity_weight * L_vel + foot_contact_weight * L_foot``: the
    mean squared error of the global joint positions recovered (by
    :func:`~polydiff_motion.features.features_to_positions`) from the denormalised ``x0``
    prediction against those of the data, of their frame-to-frame differences, and the squared
    per-frame displacement of the predicted foot joints on frames where the data's contact
    labels say that foot is planted. Each is averaged over valid frames (pairs of valid frames
    for the last two). MDM's released text-to-motion models train without them, hence the
    zero defaults.

    Args:
        denoiser: an ``x0``-predicting network such as
            :class:`~polydiff_motion.nets.MotionTransformer`.
        schedule: the forward process (default: the cosine schedule MDM uses).
        loss_space, weighting: as in :class:`~polydiff.module.DiffusionModule` (MDM: the plain
            x0-space MSE, ``native`` and ``none``).
        cond_dropout: probability of training a sample with the null text (MDM: 0.1).
        ema_decay, ema_start: EMA of the weights, used for sampling.
        sampler, sample_steps, grid, guidance: the default inference (MDM's guidance scale is 2.5).
        position_weight, velocity_weight, foot_contact_weight: weights of the geometric losses.
        optimizer, lr_scheduler, lr_scheduler_interval: see the core module.
        data_info: the data description (set from the data module in ``setup`` when not given;
            recorded in checkpoints).
    """

    data_key = "motion"
    data_matching = _MATCHING_KEYS

    def __init__(
        self,
        denoiser: nn.Module,
        schedule: Schedule | None = None,
        loss_space: Literal["native", "eps", "x0", "v"] = "native",
        weighting: Literal["none", "snr", "min_snr"] = "none",
        cond_dropout: float = 0.1,
        ema_decay: float = 0.999,
        ema_start: int = 0,
        sampler: str = "ddim",
        sample_steps: int = 50,
        grid: str = "auto",
        guidance: float = 2.5,
        position_weight: float = 0.0,
        velocity_weight: float = 0.0,
        foot_contact_weight: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        data_info: dict[str, Any] | None = None,
    ):
        super().__init__(
            denoiser=denoiser, schedule=schedule if schedule is not None else VPCosine(), loss_space=loss_space,
            weighting=weighting, cond_dropout=cond_dropout, ema_decay=ema_decay, ema_start=ema_start, sampler=sampler,
            sample_steps=sample_steps, grid=grid, guidance=guidance, optimizer=optimizer, lr_scheduler=lr_scheduler,
            lr_scheduler_interval=lr_scheduler_interval,
        )
        weights = (position_weight, velocity_weight, foot_contact_weight)
        if min(weights) < 0:
            raise ValueError(f"the geometric loss weights must be non-negative, got {weights}")
        self.position_weight, self.velocity_weight, self.foot_contact_weight = (float(w) for w in weights)
        self.register_buffer("feature_mean", None, persistent=False)
        self.register_buffer("feature_std", None, persistent=False)
        self.last_geometric: dict[str, Tensor] = {}
        if data_info is not None:
            self.configure_data(data_info)

    # --- the data description ------------------------------------------------------------------
    def configure_data(self, info: Mapping[str, Any]) -> None:
        """Take the data description: check it against the network and keep the statistics."""
        info = check_data_info(info)
        for key in ("feature_dim", "text_dim"):
            size = getattr(self.denoiser, key, None)
            if size is not None and int(size) != int(info[key]):
                raise ValueError(f"the data's {key} {info[key]} differs from the network's {size}")
        limit = getattr(self.denoiser, "max_frames", None)
        if limit is not None and int(info["max_frames"]) > int(limit):
            raise ValueError(f"the data has motions of up to {info['max_frames']} frames; the network takes {limit}")
        device = next(self.denoiser.parameters(), torch.empty(0)).device
        self.feature_mean = torch.tensor(info["mean"], dtype=torch.float32, device=device)
        self.feature_std = torch.tensor(info["std"], dtype=torch.float32, device=device)
        self.data_info = info

    def normalize(self, features: Tensor) -> Tensor:
        """Shapes: (..., 263) -> (..., 263), in the network's units."""
        self.require_info()
        return (features - self.feature_mean.to(features)) / self.feature_std.to(features)

    def denormalize(self, features: Tensor) -> Tensor:
        """Shapes: (..., 263) -> (..., 263), in HumanML3D's units."""
        self.require_info()
        return features * self.feature_std.to(features) + self.feature_mean.to(features)

    # --- batches and the loss ------------------------------------------------------------------
    def unpack_batch(self, batch: Any) -> dict[str, Any]:
        """A motion batch (``x0``, ``mask``, ``text``; see the interface notes) for the core loop."""
        if not isinstance(batch, Mapping) or not {"x0", "mask", "text"} <= set(batch):
            raise TypeError("a motion batch is a mapping with 'x0', 'mask' and 'text'")
        mask = batch["mask"].to(torch.bool)
        return {"x0": batch["x0"], "cond": {"text": batch["text"], "mask": mask}, "y": None, "loss_mask": mask,
                "known": None}

    @property
    def uses_geometry(self) -> bool:
        return max(self.position_weight, self.velocity_weight, self.foot_contact_weight) > 0

    def geometric_losses(self, denoised: Tensor, x0: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """MDM's position, velocity and foot-contact losses of a clean estimate, on valid frames.

        Shapes:
            denoised, x0: (B, T, 263) normalised; mask: (B, T) bool; returns scalars.
        """
        mask = mask.to(device=x0.device, dtype=torch.bool)
        truth = self.denormalize(x0.float())
        pred_pos = features_to_positions(self.denormalize(denoised.float()))
        true_pos = features_to_positions(truth)
        m = mask.float()
        position = ((pred_pos - true_pos).square().mean(dim=(-1, -2)) * m).sum() / m.sum().clamp(min=1.0)
        pairs = (mask[:, 1:] & mask[:, :-1]).float()
        pred_step = pred_pos[:, 1:] - pred_pos[:, :-1]
        true_step = true_pos[:, 1:] - true_pos[:, :-1]
        velocity = ((pred_step - true_step).square().mean(dim=(-1, -2)) * pairs).sum() / pairs.sum().clamp(min=1.0)
        # Contact labels of frame t describe the move t -> t+1 (HumanML3D), so they gate that step.
        contact = (truth[:, :-1, FOOT_CONTACT] > 0.5).float() * pairs[..., None]
        foot_speed = pred_step[:, :, list(FOOT_JOINTS)].square().sum(dim=-1)
        foot = (foot_speed * contact).sum() / (pairs.sum() * len(FOOT_JOINTS)).clamp(min=1.0)
        return {"position": position, "velocity": velocity, "foot_contact": foot}

    def compute_loss(
        self,
        batch: Mapping[str, Any],
        *,
        denoiser: nn.Module | None = None,
        generator: torch.Generator | None = None,
        drop_cond: bool = True,
    ) -> Tensor:
        """The core's diffusion loss plus the weighted geometric losses (see the class docstring)."""
        recorder = _Recorder(self.denoiser if denoiser is None else denoiser)
        loss = super().compute_loss(batch, denoiser=recorder, generator=generator, drop_cond=drop_cond)
        if not self.uses_geometry:
            self.last_geometric = {}
            return loss
        denoised = convert(recorder.prediction, self.native_prediction, "x0", recorder.x_t, recorder.t,
                           self.schedule, None)
        terms = self.geometric_losses(denoised, batch["x0"], batch["loss_mask"])
        self.last_geometric = {k: v.detach() for k, v in terms.items()}
        return (loss + self.position_weight * terms["position"] + self.velocity_weight * terms["velocity"]
                + self.foot_contact_weight * terms["foot_contact"])

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        n = batch["x0"].shape[0]
        for name, value in self.last_geometric.items():
            self.log(f"train/{name}", value, batch_size=n)
        return loss

    # --- generation ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        text_embeddings: Tensor,
        lengths: Tensor,
        *,
        guidance: float | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        generator: torch.Generator | None = None,
        known: tuple[Tensor, Tensor] | None = None,
        callback: Callable[[Any], Tensor | None] | None = None,
        physics: bool | Mapping[str, Any] = False,
    ) -> Tensor:
        """Motions for a batch of sentence embeddings, in HumanML3D's (denormalised) units.

        Args:
            text_embeddings: sentence embeddings from the data's text encoder.
            lengths: frames of each motion, in [1, max_frames].
            guidance, steps, sampler: override the module's settings.
            generator: the source of all randomness, for reproducible motions.
            known: ``(values, mask)`` of known entries in HumanML3D's units, for editing (see
                :mod:`~polydiff_motion.control`); re-noised and imposed after every step.
            callback: a per-step callback of the core's samplers (e.g. a
                :class:`~polydiff_motion.control.TimelineComposer`), run before the projection.
            physics: apply :class:`~polydiff_motion.physics.PhysicsProjection` (``True``, or its
                keyword arguments).

        Shapes:
            text_embeddings: (B, D); lengths: (B,); known: (B, T, 263) values and a mask
            broadcastable to them, T = max(lengths); returns (B, max(lengths), 263) with the
            frames past each length zero.
        """
        from polydiff.samplers import KnownValues

        info = self.require_info()
        text = torch.as_tensor(text_embeddings, device=self.device, dtype=torch.float32)
        lengths = torch.as_tensor(lengths, device=self.device).long().reshape(-1)
        if text.ndim != 2 or text.shape[1] != int(info["text_dim"]) or lengths.shape[0] != text.shape[0]:
            raise ValueError(f"need text embeddings (B, {info['text_dim']}) and lengths (B,); got "
                             f"{tuple(text.shape)} and {tuple(lengths.shape)}")
        limit = int(getattr(self.denoiser, "max_frames", info["max_frames"]))
        if lengths.numel() == 0 or int(lengths.min()) < 1 or int(lengths.max()) > limit:
            raise ValueError(f"lengths must lie in [1, {limit}]")
        frames = int(lengths.max())
        shape = (text.shape[0], frames, int(info["feature_dim"]))
        mask = torch.arange(frames, device=self.device)[None] < lengths[:, None]
        known_values = None
        if known is not None:
            values, known_mask = known
            values = torch.as_tensor(values, device=self.device, dtype=torch.float32)
            if tuple(values.shape) != shape:
                raise ValueError(f"known values must have shape {shape}; got {tuple(values.shape)}")
            known_values = KnownValues(self.normalize(values), torch.as_tensor(known_mask, device=self.device).bool())
        callbacks = [callback] if callback is not None else []
        if physics:
            from .physics import PhysicsProjection

            options = dict(physics) if isinstance(physics, Mapping) else {}
            callbacks.append(PhysicsProjection(self.normalize, self.denormalize, mask, **options))
        x = self.sample(shape, cond={"text": text, "mask": mask}, sampler=sampler, steps=steps, guidance=guidance,
                        generator=generator, known=known_values, callback=_chain(callbacks))
        return torch.where(mask[..., None], self.denormalize(x), torch.zeros((), device=x.device, dtype=x.dtype))

    @torch.no_grad()
    def generate_timeline(
        self,
        timeline: Any,
        interval_embeddings: Tensor,
        joined_embedding: Tensor,
        *,
        samples: int = 1,
        margin: float = 0.25,
        guidance: float | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        generator: torch.Generator | None = None,
        physics: bool | Mapping[str, Any] = False,
    ) -> Tensor:
        """Motions following a multi-track timeline (STMC; see :mod:`~polydiff_motion.control`).

        Args:
            timeline: a checked :class:`~polydiff_motion.control.Timeline`.
            interval_embeddings: the embedding of each interval's prompt, in order.
            joined_embedding: the embedding of :attr:`Timeline.joined_text` (frames no interval covers).
            samples: motions to draw for the timeline.
            margin: the crops' margin in seconds (blended transitions).
            guidance, steps, sampler, generator, physics: as in :meth:`generate`.

        Shapes:
            interval_embeddings: (n_intervals, D); joined_embedding: (D,); returns
            (samples, frames, 263), frames = duration x fps.
        """
        from .control import TimelineComposer

        info = self.require_info()
        fps = float(info["fps"])
        frames = timeline.frames(fps)
        limit = int(getattr(self.denoiser, "max_frames", info["max_frames"]))
        if not 1 <= frames <= limit:
            raise ValueError(f"the timeline lasts {frames} frames; the model generates 1 to {limit} "
                             f"({limit / fps:.1f} s)")
        scale = self.guidance if guidance is None else guidance
        composer = TimelineComposer(self.sampling_denoiser(), self.schedule, timeline,
                                    torch.as_tensor(interval_embeddings, dtype=torch.float32), fps,
                                    guidance=scale, margin=margin, batch=samples)
        joined = torch.as_tensor(joined_embedding, dtype=torch.float32).reshape(1, -1).expand(samples, -1)
        lengths = torch.full((samples,), frames, dtype=torch.long)
        return self.generate(joined, lengths, guidance=scale, steps=steps, sampler=sampler, generator=generator,
                             callback=composer, physics=physics)

    @staticmethod
    def to_positions(features: Tensor, lengths: Tensor) -> Tensor:
        """Global joint positions of denormalised features, zero past each length.

        Shapes:
            features: (B, T, 263); lengths: (B,); returns (B, T, 22, 3).
        """
        positions = features_to_positions(features)
        lengths = torch.as_tensor(lengths, device=features.device).reshape(-1, 1)
        mask = torch.arange(features.shape[1], device=features.device)[None] < lengths
        return torch.where(mask[..., None, None], positions, torch.zeros((), device=positions.device, dtype=positions.dtype))
