"""``PointDiffusion``: the diffusion module for point clouds, with its data description.

The module is the core's :class:`~polydiff.module.DiffusionModule` with the shape data's
description (categories, points per cloud, normalisation centre and scale) taken from the data
module, recorded in checkpoints, and used to turn generated clouds back into the data's units.
Generation is class-conditional with classifier-free guidance when the network has classes;
completion fixes observed points through the core's known-values mask (PVD's shape completion).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from polydiff.module import DiffusionModule, LossSpace, SampleMetrics, Weighting
from polydiff.samplers import KnownValues
from polydiff.schedules import Schedule, VPLinear

__all__ = ["PointDiffusion", "TextureDiffusion", "check_data_info"]

_INFO_KEYS = ("categories", "points", "normalization", "centre", "scale")


def check_data_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a shape data description, checked."""
    if not isinstance(info, Mapping):
        raise TypeError(f"data_info must be a mapping, got {type(info).__name__}")
    missing = [k for k in _INFO_KEYS if k not in info]
    if missing:
        raise ValueError(f"data_info lacks {', '.join(missing)}")
    info = dict(info)
    if len(info["centre"]) != 3 or not float(info["scale"]) > 0:
        raise ValueError("data_info: centre must have 3 entries and scale must be positive")
    if not info["categories"]:
        raise ValueError("data_info: no categories")
    return info


class PointDiffusion(DiffusionModule):
    """Diffusion over point clouds (B, N, 3), class-conditional with a null class.

    Args:
        denoiser: a point denoiser (e.g. :class:`~polydiff_3d.nets.PointVoxelDenoiser`); its
            ``num_classes`` must cover the data's categories (0: unconditional).
        schedule: the forward process (default: DDPM's linear VP schedule, as PVD).
        data_info: the data description (set from the data module in ``setup`` when not given;
            recorded in checkpoints).
        Other arguments: as :class:`~polydiff.module.DiffusionModule`.
    """

    data_key = "shapes"
    data_matching = ("categories", "normalization")

    def __init__(
        self,
        denoiser: nn.Module,
        schedule: Schedule | None = None,
        loss_space: LossSpace = "native",
        weighting: Weighting = "none",
        cond_dropout: float = 0.1,
        ema_decay: float = 0.999,
        ema_start: int = 0,
        sampler: str = "ddim",
        sampler_options: dict[str, Any] | None = None,
        sample_steps: int = 50,
        grid: str = "auto",
        guidance: float = 1.0,
        val_metrics: SampleMetrics | None = None,
        val_sample_batches: int = 1,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        data_info: dict[str, Any] | None = None,
    ):
        super().__init__(
            denoiser=denoiser, schedule=schedule if schedule is not None else VPLinear(), loss_space=loss_space,
            weighting=weighting, cond_dropout=cond_dropout, ema_decay=ema_decay, ema_start=ema_start,
            sampler=sampler, sampler_options=sampler_options, sample_steps=sample_steps, grid=grid, guidance=guidance,
            val_metrics=val_metrics, val_sample_batches=val_sample_batches, optimizer=optimizer,
            lr_scheduler=lr_scheduler, lr_scheduler_interval=lr_scheduler_interval,
        )
        if data_info is not None:
            self.configure_data(data_info)

    # --- the data description ------------------------------------------------------------------
    def configure_data(self, info: Mapping[str, Any]) -> None:
        """Take the data description: check that the network has a class per category."""
        info = check_data_info(info)
        classes = int(getattr(self.denoiser, "num_classes", 0))
        if classes and classes < len(info["categories"]):
            raise ValueError(f"the network has {classes} classes but the data has {len(info['categories'])} "
                             f"categories ({', '.join(info['categories'])}); raise the denoiser's num_classes")
        self.data_info = info

    @property
    def categories(self) -> list[str]:
        return list(self.require_info()["categories"])

    @property
    def conditional(self) -> bool:
        return int(getattr(self.denoiser, "num_classes", 0)) > 0

    def class_index(self, category: str | None) -> int | None:
        """The class index of a category name (``None`` for unconditional); a clear error otherwise."""
        if category is None:
            return None
        categories = self.categories
        if category not in categories:
            raise ValueError(f"unknown category {category!r}; this model knows: {', '.join(categories)}")
        if not self.conditional:
            raise ValueError(f"this model is unconditional (trained on {', '.join(categories)}); drop the category")
        return categories.index(category)

    def to_data_units(self, clouds: Tensor) -> Tensor:
        """Network units -> the data's units (``global`` normalisation; ``per_shape`` stays unit)."""
        info = self.require_info()
        centre = torch.tensor(info["centre"], dtype=clouds.dtype, device=clouds.device)
        return clouds * float(info["scale"]) + centre

    def to_network_units(self, clouds: Tensor) -> Tensor:
        info = self.require_info()
        centre = torch.tensor(info["centre"], dtype=clouds.dtype, device=clouds.device)
        return (clouds - centre) / float(info["scale"])

    # --- batches -------------------------------------------------------------------------------
    def unpack_batch(self, batch: Any) -> dict[str, Any]:
        parts = super().unpack_batch(batch)
        if not self.conditional:
            parts["cond"] = None
        return parts

    # --- generation ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        count: int,
        *,
        category: str | None = None,
        points: int | None = None,
        guidance: float | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        generator: torch.Generator | None = None,
        known: KnownValues | None = None,
        callback: Any = None,
    ) -> Tensor:
        """``count`` clouds in the data's units.

        Shapes:
            returns (count, points, 3).
        """
        n = int(points or self.require_info()["points"])
        index = self.class_index(category)
        cond = None
        if self.conditional:
            value = self.denoiser.num_classes if index is None else index  # null class: unconditional
            cond = torch.full((count,), value, dtype=torch.long, device=self.device)
        g = self.guidance if guidance is None else guidance
        if cond is None or index is None:
            g = 1.0
        out = self.sample((count, n, 3), cond=cond, guidance=g, steps=steps, sampler=sampler, generator=generator,
                          known=known, callback=callback)
        return self.to_data_units(out)

    @torch.no_grad()
    def complete(
        self,
        partial: Sequence[Tensor],
        *,
        category: str | None = None,
        points: int | None = None,
        guidance: float | None = None,
        steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Complete partial clouds (data units): the observed points are kept fixed, the rest denoised.

        PVD's completion with the core's known-values mask in ``replace`` mode: each cloud's first
        ``M`` points are the observation (subsampled to at most half of ``points``), re-noised to
        the current level after every step; the network sees the whole cloud and fills the rest.

        Shapes:
            partial: clouds (M_i, 3); returns (len(partial), points, 3), the observed points first.
        """
        n = int(points or self.require_info()["points"])
        count = len(partial)
        values = torch.zeros(count, n, 3, device=self.device)
        mask = torch.zeros(count, n, 1, dtype=torch.bool, device=self.device)
        for i, cloud in enumerate(partial):
            cloud = torch.as_tensor(cloud, dtype=torch.float32, device=self.device)
            keep = min(len(cloud), n // 2)
            if keep < len(cloud):
                pick = torch.randperm(len(cloud), generator=generator, device="cpu")[:keep].to(self.device)
                cloud = cloud[pick]
            values[i, :keep] = self.to_network_units(cloud)
            mask[i, :keep] = True
        known = KnownValues(values=values, mask=mask.expand(count, n, 3), mode="replace")
        return self.generate(count, category=category, points=n, guidance=guidance, steps=steps, generator=generator,
                             known=known)


class TextureDiffusion(DiffusionModule):
    """The texture image denoiser's module: the core's loop with the labels recorded.

    The data description (``labels``, image ``size``, ``channels``) comes from
    :class:`~polydiff_3d.images.TextureDataModule` and goes into checkpoints, so ``polydiff 3d
    texture --label stripes`` can name a class. Images are (B, C, S, S) in [-1, 1]; the condition
    is a label index, and index ``len(labels)`` (the network's ``num_labels``) is the null label.

    Args: as :class:`~polydiff.module.DiffusionModule`, plus ``data_info``.
    """

    data_key = "textures"
    data_matching = ("labels", "channels")

    def __init__(
        self,
        denoiser: nn.Module,
        schedule: Schedule | None = None,
        loss_space: LossSpace = "native",
        weighting: Weighting = "none",
        cond_dropout: float = 0.1,
        ema_decay: float = 0.999,
        ema_start: int = 0,
        sampler: str = "ddim",
        sampler_options: dict[str, Any] | None = None,
        sample_steps: int = 30,
        grid: str = "auto",
        guidance: float = 2.0,
        val_metrics: SampleMetrics | None = None,
        val_sample_batches: int = 1,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        data_info: dict[str, Any] | None = None,
    ):
        super().__init__(
            denoiser=denoiser, schedule=schedule, loss_space=loss_space, weighting=weighting,
            cond_dropout=cond_dropout, ema_decay=ema_decay, ema_start=ema_start, sampler=sampler,
            sampler_options=sampler_options, sample_steps=sample_steps, grid=grid, guidance=guidance,
            val_metrics=val_metrics, val_sample_batches=val_sample_batches, optimizer=optimizer,
            lr_scheduler=lr_scheduler, lr_scheduler_interval=lr_scheduler_interval,
        )
        if data_info is not None:
            self.configure_data(data_info)

    def configure_data(self, info: Mapping[str, Any]) -> None:
        """Take the labels and image size; the network must have a class per label."""
        if not isinstance(info, Mapping) or not {"labels", "size", "channels"} <= set(info):
            raise ValueError("a texture data description needs labels, size and channels")
        info = {"labels": list(info["labels"]), "size": int(info["size"]), "channels": int(info["channels"])}
        classes = int(getattr(self.denoiser, "num_labels", 0))
        if classes and classes < len(info["labels"]):
            raise ValueError(f"the network has {classes} labels but the data has {len(info['labels'])} "
                             f"({', '.join(info['labels'])}); raise the denoiser's num_labels")
        self.data_info = info

    @property
    def conditional(self) -> bool:
        return int(getattr(self.denoiser, "num_labels", 0)) > 0

    @property
    def null_label(self) -> int:
        return int(getattr(self.denoiser, "num_labels", 0))

    def label_index(self, label: str | None) -> int | None:
        """The index of a label name (``None``: unconditional); a clear error for an unknown one."""
        if label is None:
            return None
        labels = list(self.require_info()["labels"])
        if label not in labels:
            raise ValueError(f"unknown texture label {label!r}; this model knows: {', '.join(labels)}")
        if not self.conditional:
            raise ValueError("this texture model is unconditional; drop --label")
        return labels.index(label)
