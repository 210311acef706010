"""A PhysDiff-style physics projection inside the sampling loop (Yuan et al. 2023).

PhysDiff projects the denoiser's clean estimate onto physically plausible motion at some
denoising steps (by imitating it in a simulator) and lets the sampler continue from the
projection. This module does the projection with kinematic constraints instead of a simulator,
on HumanML3D features (:mod:`polydiff_motion.features`), and offers it as the core's per-step
callback (:class:`PhysicsProjection`), so it works with every sampler and every motion model:

1. **Ground contact.** On every frame where the motion's own foot-contact channels say a foot is
   planted, the whole body is moved vertically so that the lowest planted foot joint rests on
   the floor (removing floating and sinking during support); on the remaining frames (flight,
   jumps) it is only raised where some joint is below the floor (penetration). The vertical
   shift is smoothed over a few frames (so that switching the supporting foot does not jolt the
   body), and any penetration left after smoothing is removed.
2. **Foot skating.** On every step ``t -> t+1`` where a foot joint is planted, the root's
   horizontal step is corrected by the mean horizontal slide of the planted foot joints, so that
   a planted foot stays where it is (the pose of the body is unchanged; the whole body moves
   with the corrected root).

Both are written back into every channel they affect (root height, root velocity, joint
positions relative to the root, joint velocities), so the result is a consistent feature
vector. A simulator-based imitation step is not included: the projection is closed-form,
deterministic and costs a fraction of one denoiser call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .features import FEATURE_DIM, FOOT_CONTACT, RIC, ROOT_LIN_VEL, ROOT_Y, VEL, features_to_positions, features_to_root
from .skeleton import FOOT_JOINTS, rotation_y

__all__ = ["project_features", "PhysicsProjection"]

_NUM_JOINTS = 22


def _smooth(values: Tensor, valid: Tensor, sigma: float) -> Tensor:
    """Gaussian smoothing along time of (B, T) values, over valid frames only (edges renormalised)."""
    if sigma <= 0:
        return values
    radius = max(1, int(round(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, device=values.device, dtype=values.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    w = valid.to(values.dtype)
    pad = (radius, radius)
    num = torch.nn.functional.conv1d(torch.nn.functional.pad((values * w)[:, None], pad), kernel.view(1, 1, -1))
    den = torch.nn.functional.conv1d(torch.nn.functional.pad(w[:, None], pad), kernel.view(1, 1, -1))
    return torch.where(valid, (num / den.clamp_min(1e-12))[:, 0], values)


@torch.no_grad()
def project_features(
    features: Tensor,
    mask: Tensor | None = None,
    *,
    floor: float = 0.0,
    contact_threshold: float = 0.5,
    height_sigma: float = 1.0,
    ground: bool = True,
    skating: bool = True,
) -> Tensor:
    """The physics projection of denormalised HumanML3D features (module docstring).

    Args:
        features: motions in HumanML3D's units (denormalised).
        mask: valid frames (default: all); padded frames are returned unchanged.
        floor: the floor's height (metres, y up).
        contact_threshold: a foot joint is planted where its contact channel exceeds this.
        height_sigma: Gaussian smoothing of the vertical correction, in frames (0: none).
        ground, skating: apply the ground-contact and the foot-skating corrections.

    Shapes:
        features: (B, T, 263) or (T, 263); mask: (B, T) or (T,) bool; returns the same shape.

    Raises:
        ValueError: features that are not (..., 263) or hold NaN or infinite values.
    """
    single = features.ndim == 2
    f = features[None] if single else features
    if f.ndim != 3 or f.shape[-1] != FEATURE_DIM:
        raise ValueError(f"features must have shape (B, T, {FEATURE_DIM}) or (T, {FEATURE_DIM}); got {tuple(features.shape)}")
    if not torch.isfinite(f).all():
        raise ValueError("features contain NaN or infinite values")
    batch, frames = f.shape[:2]
    valid = torch.ones(batch, frames, dtype=torch.bool, device=f.device) if mask is None else (
        mask[None] if single else mask).to(device=f.device, dtype=torch.bool)
    if valid.shape != (batch, frames):
        raise ValueError(f"mask must have shape {(batch, frames)}; got {tuple(valid.shape)}")
    work = f.double().clone()
    positions = features_to_positions(work)  # (B, T, 22, 3)
    planted = (work[..., FOOT_CONTACT] > contact_threshold) & valid[..., None]  # (B, T, 4)
    feet = list(FOOT_JOINTS)

    if ground:
        heights = positions[..., 1]  # (B, T, 22)
        lowest = heights.min(dim=-1).values
        planted_low = torch.where(planted, heights[..., feet], torch.full_like(heights[..., feet], float("inf"))).min(-1).values
        supported = planted.any(dim=-1)
        dy = torch.where(supported, floor - planted_low, torch.zeros_like(lowest))
        dy = _smooth(dy, valid, height_sigma)
        dy = dy + (floor - (lowest + dy)).clamp_min(0.0)
        dy = torch.where(valid, dy, torch.zeros_like(dy))
        work[..., ROOT_Y.start] += dy
        ric = work[..., RIC].reshape(batch, frames, _NUM_JOINTS - 1, 3)
        ric[..., 1] += dy[..., None]
        work[..., RIC] = ric.reshape(batch, frames, -1)
        vel = work[..., VEL].reshape(batch, frames, _NUM_JOINTS, 3)
        step_dy = torch.zeros_like(dy)
        step_dy[:, :-1] = torch.where(valid[:, 1:] & valid[:, :-1], dy[:, 1:] - dy[:, :-1], torch.zeros_like(dy[:, 1:]))
        vel[..., 1] += step_dy[..., None]
        work[..., VEL] = vel.reshape(batch, frames, -1)
        positions = positions.clone()
        positions[..., 1] += dy[..., None]

    if skating and frames > 1:
        pairs = valid[:, 1:] & valid[:, :-1]  # step t -> t+1
        slide = positions[:, 1:, feet][..., [0, 2]] - positions[:, :-1, feet][..., [0, 2]]  # (B, T-1, 4, 2)
        gate = (planted[:, :-1] & pairs[..., None]).to(work.dtype)  # contact at t describes t -> t+1
        count = gate.sum(-1, keepdim=True)
        correction = (slide * gate[..., None]).sum(-2) / count.clamp_min(1.0)  # (B, T-1, 2)
        correction = torch.where(count > 0, correction, torch.zeros_like(correction))
        c3 = torch.stack((correction[..., 0], torch.zeros_like(correction[..., 0]), correction[..., 1]), -1)
        _, heading = features_to_root(work)
        # Root step t -> t+1 is stored at feature frame t in the facing frame of t+1; joint
        # velocities of frame t in the facing frame of t.
        to_next = rotation_y(-heading[:, 1:]).to(work.dtype)
        to_this = rotation_y(-heading[:, :-1]).to(work.dtype)
        root_fix = (to_next @ c3[..., None])[..., 0]
        work[:, :-1, ROOT_LIN_VEL.start] -= root_fix[..., 0]
        work[:, :-1, ROOT_LIN_VEL.start + 1] -= root_fix[..., 2]
        vel_fix = (to_this @ c3[..., None])[..., 0]
        vel = work[..., VEL].reshape(batch, frames, _NUM_JOINTS, 3)
        vel[:, :-1] -= vel_fix[:, :, None]
        work[..., VEL] = vel.reshape(batch, frames, -1)

    out = torch.where(valid[..., None], work.to(f.dtype), f)
    return out[0] if single else out


class PhysicsProjection:
    """The projection as a per-step sampler callback (see :class:`polydiff.samplers.StepInfo`).

    Projects the clean estimate of every step from ``start`` (a fraction of the steps) on;
    PhysDiff found late projection steps the most useful, since early estimates are too blurred to
    say which foot is planted. The last step's estimate is the sample, so the output is always
    projected when the last step is included.

    Args:
        normalize, denormalize: the model's feature normalisation (e.g. ``model.normalize``).
        mask: (B, T) valid frames of the batch being sampled.
        start: project from step ``round(start * steps)`` on (0: every step; 1: the last only).
        every: project every ``every``-th step from ``start`` (the last step always).
        options: keyword arguments of :func:`project_features`.
    """

    def __init__(self, normalize: Callable[[Tensor], Tensor], denormalize: Callable[[Tensor], Tensor],
                 mask: Tensor | None = None, *, start: float = 0.5, every: int = 1, **options: Any):
        if not 0.0 <= start <= 1.0:
            raise ValueError(f"start must lie in [0, 1]; got {start}")
        if every < 1:
            raise ValueError(f"every must be at least 1; got {every}")
        self.normalize, self.denormalize, self.mask = normalize, denormalize, mask
        self.start, self.every, self.options = float(start), int(every), options
        self.calls = 0

    def active(self, index: int, steps: int) -> bool:
        first = min(steps - 1, int(round(self.start * steps)))
        return index == steps - 1 or (index >= first and (index - first) % self.every == 0)

    def __call__(self, info: Any) -> Tensor | None:
        if not self.active(info.index, info.steps):
            return None
        self.calls += 1
        projected = project_features(self.denormalize(info.denoised), self.mask, **self.options)
        return self.normalize(projected).to(info.denoised.dtype)
