"""Diffusion Policy as a :class:`~polydiff.module.DiffusionModule`, and the MSE behaviour-cloning baseline.

:class:`DiffusionPolicy` learns ``p(actions | observations)`` over action sequences of the
prediction horizon (Chi et al. 2023): the core's loop corrupts normalised action chunks and the
denoiser, conditioned on the observation history, predicts the noise. What the model learned
from its data (observation features and dimensions, horizons, and the min-max normalisers of
observations and actions) is ``data_info``, plain data kept in the checkpoint and in its recorded
model config, so :func:`polydiff.checkpoint.load_module` rebuilds a trained policy without the
dataset.

:meth:`DiffusionPolicy.predict_chunk` turns raw observations into a raw action chunk with any
core sampler (``ddpm`` over the full grid, ``ddim`` with few steps) or from a warm start (the
real-time-iteration scheme, :mod:`polydiff_policy.inference`).

:class:`RegressionPolicy` is the classic baseline Diffusion Policy improves on: the same
observation encoding and action chunks, one forward pass, trained with a mean-squared error; it
reuses this module's data handling and checkpoints, so it rolls out through the same commands.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from polydiff.module import DiffusionModule, SampleMetrics
from polydiff.schedules import Schedule, VPCosine
from polydiff_policy.nets import ImageEncoder, PolicyDenoiser

__all__ = ["DiffusionPolicy", "RegressionPolicy", "MLPActionHead", "ActionError", "check_data_info", "ENV_ID"]

#: The environment the bundled data and rollouts use (gym-pusht's id).
ENV_ID = "gym_pusht/PushT-v0"

_INFO_FIELDS = ("obs_features", "obs_dims", "action_dim", "obs_horizon", "horizon", "action_horizon",
                "obs_normalizer", "action_normalizer")


def check_data_info(info: Any) -> dict[str, Any]:
    """Validate a policy data description (from ``PolicyDataModule.info()`` or a checkpoint)."""
    if not isinstance(info, Mapping):
        raise ValueError(f"data_info must be a mapping, got {type(info).__name__}")
    missing = [k for k in _INFO_FIELDS if k not in info]
    if missing:
        raise ValueError(f"data_info lacks the fields {', '.join(missing)}")
    info = dict(info)
    if len(info["obs_features"]) != len(info["obs_dims"]):
        raise ValueError("data_info: obs_features and obs_dims differ in length")
    if not 1 <= int(info["action_horizon"]) <= int(info["horizon"]) - int(info["obs_horizon"]) + 1:
        raise ValueError(
            f"data_info: the action horizon {info['action_horizon']} must lie in [1, horizon - obs_horizon + 1] = "
            f"[1, {int(info['horizon']) - int(info['obs_horizon']) + 1}]"
        )
    return info


def _normalizer_tensors(state: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
    """(scale, offset) of a min-max normaliser's plain-data state: ``x_norm = x * scale + offset``."""
    scale = torch.as_tensor(state["scale"], dtype=torch.float32)
    offset = torch.as_tensor(state["offset"], dtype=torch.float32)
    return scale, offset


class ActionError(SampleMetrics):
    """Mean-squared error of sampled action chunks against the demonstrated ones (normalised units),
    over the whole chunk and over the actions that are executed."""

    def __init__(self, obs_horizon: int = 2, action_horizon: int = 8):
        self.obs_horizon, self.action_horizon = int(obs_horizon), int(action_horizon)

    def __call__(self, samples: Tensor, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        x0 = batch["x0"]
        start = self.obs_horizon - 1
        executed = slice(start, start + self.action_horizon)
        return {"action_mse": (samples - x0).square().mean(),
                "executed_mse": (samples[:, executed] - x0[:, executed]).square().mean()}


class DiffusionPolicy(DiffusionModule):
    """Diffusion Policy (Chi et al. 2023) over normalised action chunks.

    Args:
        denoiser: a :class:`~polydiff_policy.nets.ConditionalUnet1D` or
            :class:`~polydiff_policy.nets.TransformerDenoiser` (built from ``data_info``).
        schedule: the forward process (default: the cosine schedule Diffusion Policy uses).
        loss_space, weighting: as in :class:`~polydiff.module.DiffusionModule` (Diffusion Policy
            is the plain eps-space MSE: ``native`` with an eps denoiser and ``none``).
        ema_decay, ema_start: EMA of the weights, used for rollouts.
        sampler, sample_steps, grid: the default inference (DDIM with 10 steps).
        val_sample_batches: validation batches whose chunks are also sampled (action MSE).
        optimizer, lr_scheduler, lr_scheduler_interval: see the core module.
        data_info: what was learned from the data (set from the data module in ``setup`` when
            not given; recorded in checkpoints).
    """

    data_key = "policy"
    data_matching = ("obs_features", "obs_dims", "action_dim", "obs_horizon", "horizon", "image_feature")

    def __init__(
        self,
        denoiser: PolicyDenoiser,
        schedule: Schedule | None = None,
        loss_space: Literal["native", "eps", "x0", "v"] = "native",
        weighting: Literal["none", "snr", "min_snr"] = "none",
        ema_decay: float = 0.999,
        ema_start: int = 0,
        sampler: str = "ddim",
        sample_steps: int = 10,
        grid: str = "uniform",
        val_sample_batches: int = 1,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        data_info: dict[str, Any] | None = None,
    ):
        if not isinstance(denoiser, PolicyDenoiser):
            raise TypeError(f"denoiser must be a polydiff_policy.nets.PolicyDenoiser, got {type(denoiser).__name__}")
        super().__init__(
            denoiser=denoiser, schedule=schedule if schedule is not None else VPCosine(), loss_space=loss_space,
            weighting=weighting, ema_decay=ema_decay, ema_start=ema_start, sampler=sampler, sample_steps=sample_steps,
            grid=grid, val_sample_batches=val_sample_batches, optimizer=optimizer, lr_scheduler=lr_scheduler,
            lr_scheduler_interval=lr_scheduler_interval,
        )
        if data_info is not None:
            self.configure_data(data_info)

    # --- the data description ------------------------------------------------------------------
    def configure_data(self, info: Mapping[str, Any]) -> None:
        """Take the data description: build the network and the normalisers."""
        info = check_data_info(info)
        obs_dim = sum(int(d) for d in info["obs_dims"])
        self.denoiser.build(int(info["action_dim"]), obs_dim, int(info["obs_horizon"]), int(info["horizon"]),
                            image=bool(info.get("image_feature")))
        self.rebuild_ema()
        self.data_info = info
        obs_scale, obs_offset = _normalizer_tensors(info["obs_normalizer"]) if obs_dim else (torch.ones(0), torch.zeros(0))
        act_scale, act_offset = _normalizer_tensors(info["action_normalizer"])
        self.register_buffer("obs_scale", obs_scale, persistent=False)
        self.register_buffer("obs_offset", obs_offset, persistent=False)
        self.register_buffer("action_scale", act_scale, persistent=False)
        self.register_buffer("action_offset", act_offset, persistent=False)
        self.val_metrics = ActionError(int(info["obs_horizon"]), int(info["action_horizon"]))

    @property
    def obs_horizon(self) -> int:
        return int(self.require_info()["obs_horizon"])

    @property
    def horizon(self) -> int:
        return int(self.require_info()["horizon"])

    @property
    def action_horizon(self) -> int:
        return int(self.require_info()["action_horizon"])

    @property
    def action_dim(self) -> int:
        return int(self.require_info()["action_dim"])

    # --- batches -------------------------------------------------------------------------------
    def unpack_batch(self, batch: Any) -> dict[str, Any]:
        """A ``PolicyDataModule`` batch as ``x0`` (normalised actions) and the observation condition."""
        if not isinstance(batch, Mapping) or "action" not in batch or "obs" not in batch:
            raise TypeError("a policy batch is a mapping with 'obs' and 'action' (and 'image' for image policies)")
        cond = {"obs": batch["obs"]}
        if batch.get("image") is not None:
            cond["image"] = batch["image"]
        return {"x0": batch["action"], "cond": cond, "y": None, "loss_mask": None, "known": None}

    # --- normalisation -------------------------------------------------------------------------
    def normalize_obs(self, obs: Tensor) -> Tensor:
        """Raw low-dimensional observations (..., obs_dim) in the network's units."""
        return obs.to(self.obs_scale) * self.obs_scale + self.obs_offset

    def normalize_actions(self, actions: Tensor) -> Tensor:
        return actions.to(self.action_scale) * self.action_scale + self.action_offset

    def unnormalize_actions(self, actions: Tensor) -> Tensor:
        """Network-unit actions (..., action_dim) back in the environment's units."""
        return (actions.to(self.action_scale) - self.action_offset) / self.action_scale

    def condition(self, obs: Tensor, image: Tensor | None = None, *, use_ema: bool = True) -> Tensor:
        """Raw observation history to encoded per-frame features (computed once per chunk).

        Shapes:
            obs: (B, obs_horizon, obs_dim) raw; image: (B, obs_horizon, 3, H, W) in [0, 1];
            returns (B, obs_horizon, frame_features).
        """
        cond: dict[str, Tensor] = {"obs": self.normalize_obs(obs.to(self.device))}
        if image is not None:
            cond["image"] = image.to(self.device)
        with torch.no_grad():
            return self.sampling_denoiser(use_ema).encode_obs(cond)

    # --- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict_chunk(
        self,
        obs: Tensor,
        image: Tensor | None = None,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        start: Tensor | None = None,
        t_start: float | None = None,
        generator: torch.Generator | None = None,
        normalized: bool = False,
    ) -> Tensor:
        """An action chunk for a batch of observation histories.

        Args:
            obs, image: the raw observation history (see :meth:`condition`).
            sampler, steps: override the module's sampler and steps.
            start: a warm start in network units (B, horizon, action_dim); with ``t_start`` it is
                re-noised to that time and denoised from there on ``steps`` uniform steps
                (real-time iteration). ``None`` starts from pure noise.
            t_start: the time the warm start is re-noised to, in (0, t_max].
            generator: the source of the noise.
            normalized: return network units instead of environment units.

        Shapes:
            returns (B, horizon, action_dim).
        """
        cond = self.condition(obs, image)
        shape = (obs.shape[0], self.horizon, self.action_dim)
        steps = self.sample_steps if steps is None else int(steps)
        if start is None:
            chunk = self.sample(shape, cond=cond, sampler=sampler, steps=steps, generator=generator)
        else:
            if t_start is None or not 0.0 < t_start <= self.schedule.t_max:
                raise ValueError(f"a warm start needs t_start in (0, {self.schedule.t_max}], got {t_start}")
            t = torch.tensor(float(t_start), dtype=torch.float64)
            noise = torch.randn(shape, generator=generator, device=self.device, dtype=torch.float32)
            x = float(self.schedule.alpha(t)) * start.to(self.device, torch.float32) + float(self.schedule.sigma(t)) * noise
            grid = torch.linspace(float(t_start), 0.0, steps + 1, dtype=torch.float64)
            chunk = self.sample(x, cond=cond, sampler=sampler or "ddim", grid=grid, generator=generator)
        return chunk if normalized else self.unnormalize_actions(chunk)


class MLPActionHead(PolicyDenoiser):
    """The behaviour-cloning baseline's network: observation features to a whole action chunk.

    Declared as an ``x0`` predictor that ignores the noisy input and the time, so it fits the
    denoiser contract (and the policy's data handling) while being a plain regression model.

    Args:
        hidden: widths of the hidden layers.
        dropout: dropout after each hidden layer.
        image_encoder: see :class:`~polydiff_policy.nets.PolicyDenoiser`.
    """

    def __init__(self, hidden: list[int] | tuple[int, ...] = (512, 512, 512), dropout: float = 0.0,
                 image_encoder: ImageEncoder | None = None):
        super().__init__(prediction="x0", image_encoder=image_encoder)
        if not hidden:
            raise ValueError("hidden must name at least one layer width")
        self.hidden, self.dropout = [int(h) for h in hidden], float(dropout)

    def _build(self, frame_features: int) -> None:
        layers: list[nn.Module] = []
        width = frame_features * self.obs_horizon
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.Mish(), nn.Dropout(self.dropout)]
            width = h
        layers.append(nn.Linear(width, self.horizon * self.action_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        features = self.encode_obs(cond)
        return self.mlp(features.reshape(features.shape[0], -1).float()).reshape(-1, self.horizon, self.action_dim).to(x.dtype)


class RegressionPolicy(DiffusionPolicy):
    """Behaviour cloning with a mean-squared error on action chunks (the MLP baseline).

    Same data, normalisation, chunks and receding-horizon execution as :class:`DiffusionPolicy`;
    the network maps the observation history straight to the chunk, so the multimodal
    demonstrations (going around the block either way) are averaged.

    Args:
        denoiser: an :class:`MLPActionHead` (any :class:`PolicyDenoiser` works: it is called with
            zeros and t = 0).
        ema_decay, ema_start, optimizer, lr_scheduler, lr_scheduler_interval, data_info: as in
            :class:`DiffusionPolicy`.
    """

    def __init__(
        self,
        denoiser: PolicyDenoiser,
        ema_decay: float = 0.999,
        ema_start: int = 0,
        val_sample_batches: int = 1,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        data_info: dict[str, Any] | None = None,
    ):
        super().__init__(denoiser, ema_decay=ema_decay, ema_start=ema_start, val_sample_batches=val_sample_batches,
                         optimizer=optimizer, lr_scheduler=lr_scheduler, lr_scheduler_interval=lr_scheduler_interval,
                         data_info=data_info)

    def _regress(self, net: nn.Module, cond: Any, shape: tuple[int, ...]) -> Tensor:
        zeros = torch.zeros(shape, device=self.device)
        return net(zeros, torch.zeros(shape[0], device=self.device), cond)

    def compute_loss(self, batch: Mapping[str, Any], *, denoiser: nn.Module | None = None,
                     generator: torch.Generator | None = None, drop_cond: bool = True) -> Tensor:
        net = self.denoiser if denoiser is None else denoiser
        x0 = batch["x0"]
        return (self._regress(net, batch["cond"], tuple(x0.shape)) - x0).square().mean()

    @torch.no_grad()
    def sample(self, shape_or_x: Any, *, cond: Any = None, generator: torch.Generator | None = None,
               use_ema: bool = True, **unused: Any) -> Tensor:
        """The regression's chunk (no sampling: ``sampler``, ``steps`` and noise are ignored)."""
        shape = tuple(shape_or_x.shape) if isinstance(shape_or_x, Tensor) else tuple(shape_or_x)
        return self._regress(self.sampling_denoiser(use_ema), cond, shape)

    @torch.no_grad()
    def predict_chunk(self, obs: Tensor, image: Tensor | None = None, *, normalized: bool = False, **unused: Any) -> Tensor:
        cond = self.condition(obs, image)
        chunk = self.sample((obs.shape[0], self.horizon, self.action_dim), cond=cond)
        return chunk if normalized else self.unnormalize_actions(chunk)
