"""A PhysDiff-style physics projection inside the sampling loop (Yuan et al. 2023).

PhysDiff projects the denoiser's clean estimate onto physically plausible motion at some
denoising steps (by imitating it in a simulator) and lets the sampler continue from the
projection. This module does the projection with kinematic constraints instead of a simulator,
on HumanML3D features (:mod:`polydiff_motion.features`), and offers it as the core's per-step
callback (:class:`PhysicsProjection`), so it works with every sampler and every motion model:

1. **Ground contact.** A foot joint is planted where the motion's own foot-contact channel is on
   and the joint is near the motion's ground level (HumanML3D's labels are speed-only and also
   fire at the top of a jump). On every frame with a planted foot the whole body is moved
   vertically so that the lowest planted foot joint rests on the floor (removing floating and
   sinking during support); on the frames between (steps, flight, jumps) the vertical shift is
   interpolated from the neighbouring supported frames, so a jump keeps its shape. The shift is
   smoothed over a few frames (so that switching the supporting foot does not jolt the body),
   and any penetration left is removed.
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


def _interpolate_gaps(values: Tensor, known: Tensor) -> Tensor:
    """(B, T) values kept where ``known``, linearly interpolated between known frames elsewhere
    (held constant before the first and after the last; 0 where a row has none)."""
    out = torch.zeros_like(values)
    frames = torch.arange(values.shape[1], dtype=values.dtype, device=values.device)
    for b in range(values.shape[0]):
        idx = torch.nonzero(known[b]).flatten()
        if idx.numel() == 0:
            continue
        xs, ys = frames[idx], values[b, idx]
        right = torch.searchsorted(xs, frames).clamp(1, max(1, xs.numel() - 1))
        left = right - 1
        if xs.numel() == 1:
            out[b] = ys[0]
            continue
        span = (xs[right] - xs[left]).clamp_min(1e-12)
        w = ((frames - xs[left]) / span).clamp(0.0, 1.0)
        out[b] = ys[left] + w * (ys[right] - ys[left])
    return out


@torch.no_grad()
def project_features(
    features: Tensor,
    mask: Tensor | None = None,
    *,
    floor: float = 0.0,
    contact_threshold: float = 0.5,
    plant_height: float = 0.15,
    height_sigma: float = 1.0,
    ground: bool = True,
    skating: bool = True,
) -> Tensor:
    """The physics projection of denormalised HumanML3D features (module docstring).

    Args:
        features: motions in HumanML3D's units (denormalised).
        mask: valid frames (default: all); padded frames are returned unchanged.
        floor: the floor's height (metres, y up).
        contact_threshold: a foot joint's contact label is on where its channel exceeds this.
        plant_height: a labelled foot joint counts as planted only within this many metres of
            the joint's own ground level (the 5th percentile of its labelled heights in the motion).
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
    feet = list(FOOT_JOINTS)

    # A foot joint is planted where its contact channel is on and it is near the motion's own
    # ground level (a low percentile of that joint's labelled heights): HumanML3D's labels are
    # speed-only, so they also fire at the top of a jump, where the feet stop for a moment.
    heights = positions[..., 1]  # (B, T, 22)
    foot_heights = heights[..., feet]
    labelled = (work[..., FOOT_CONTACT] > contact_threshold) & valid[..., None]
    level = foot_heights.new_full((batch, len(feet)), floor)
    for b in range(batch):
        for j in range(len(feet)):
            on = labelled[b, :, j]
            if bool(on.any()):
                level[b, j] = torch.quantile(foot_heights[b, on, j], 0.05)
    planted = labelled & (foot_heights - level[:, None, :] < plant_height)

    if ground:
        lowest = heights.min(dim=-1).values
        planted_low = torch.where(planted, foot_heights, torch.full_like(foot_heights, float("inf"))).min(-1).values
        supported = planted.any(dim=-1)
        dy = _interpolate_gaps(torch.where(supported, floor - planted_low, torch.zeros_like(lowest)), supported & valid)
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
