"""HumanML3D's 263-d per-frame motion features, their inverse and their normalisation.

Written from Guo et al. 2022, "Generating Diverse and Natural 3D Human Motions from Text" (the
HumanML3D data set), for the 22 joints of :data:`~polydiff_motion.skeleton.SMPL22`. A clip of
``T`` frames of global joint positions is first put in the canonical frame (:func:`canonicalize`:
the lowest joint of the clip on the floor y = 0, the first frame's root above the origin, the
first frame facing +Z) and becomes ``T - 1`` rows; row ``t`` holds

=========  ====  =====================================================================
slice      size  content
=========  ====  =====================================================================
0          1     root angular velocity about Y: **half** the yaw change from frame t to
                 t+1, in radians per frame (HumanML3D stores ``arcsin`` of the y component
                 of the heading quaternion's increment)
1:3        2     root linear velocity t -> t+1 in XZ, metres per frame, in the facing frame
                 of frame t+1
3          1     root height at frame t
4:67       63    joints 1..21 relative to the root's XZ (height kept absolute), in the
                 facing frame of frame t
67:193     126   local rotations of joints 1..21 at frame t in 6D (first two columns)
193:259    66    velocities t -> t+1 of all 22 joints, metres per frame, facing frame of t
259:263    4     contact labels of the left ankle, left foot, right ankle, right foot
=========  ====  =====================================================================

The facing direction is the horizontal perpendicular to the hips' and shoulders' across vectors,
smoothed over time with a Gaussian of ``forward_sigma`` frames (20 in HumanML3D). Velocities are
per frame, as in HumanML3D's 20 fps data; ``fps`` only converts the foot-contact speed threshold.

:func:`features_to_positions` inverts this from the root and ``4:67`` blocks alone (HumanML3D's
``recover_from_ric``): the heading is integrated from slice 0, the root's XZ from slice 1:3. The
rotation block is carried for models that want it but is not used for recovery.

Differences from HumanML3D's reference script, each for an exact round trip or robustness:
the rotation block comes from :func:`~polydiff_motion.skeleton.inverse_kinematics` (SMPL-style
local rotations: a joint turns the bones leaving it) or from rotations passed in, not from
HumanML3D's bone-ending convention; the initial alignment uses the same smoothed heading as the
features, so frame 0 has exactly zero heading; yaw increments are wrapped to (-π, π] (the
reference flips sign when the heading crosses ±180°); the skeleton is not retargeted to a
reference body.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from .skeleton import FACE_JOINTS, FOOT_JOINTS, inverse_kinematics, matrix_to_rotation_6d, rotation_y

__all__ = [
    "FEATURE_DIM",
    "NUM_JOINTS",
    "ROOT_ROT_VEL",
    "ROOT_LIN_VEL",
    "ROOT_Y",
    "RIC",
    "ROT",
    "VEL",
    "FOOT_CONTACT",
    "HUMANML3D_FOOT_SPEED",
    "FeatureStats",
    "canonicalize",
    "foot_contacts",
    "positions_to_features",
    "features_to_root",
    "features_to_positions",
]

NUM_JOINTS = 22
FEATURE_DIM = 263
ROOT_ROT_VEL = slice(0, 1)
ROOT_LIN_VEL = slice(1, 3)
ROOT_Y = slice(3, 4)
RIC = slice(4, 4 + 3 * (NUM_JOINTS - 1))
ROT = slice(RIC.stop, RIC.stop + 6 * (NUM_JOINTS - 1))
VEL = slice(ROT.stop, ROT.stop + 3 * NUM_JOINTS)
FOOT_CONTACT = slice(VEL.stop, VEL.stop + 4)
assert FOOT_CONTACT.stop == FEATURE_DIM

#: HumanML3D marks a foot joint in contact when its squared displacement per frame is below
#: 0.002 m² at 20 fps, i.e. when it moves slower than this many metres per second.
HUMANML3D_FOOT_SPEED = math.sqrt(0.002) * 20.0

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _check_positions(positions: Any, name: str = "positions", min_frames: int = 2) -> torch.Tensor:
    p = torch.as_tensor(np.asarray(positions) if not isinstance(positions, torch.Tensor) else positions)
    if p.ndim != 3 or p.shape[1:] != (NUM_JOINTS, 3):
        raise ValueError(f"{name} must have shape (T, {NUM_JOINTS}, 3); got {tuple(p.shape)}")
    if p.shape[0] < min_frames:
        raise ValueError(f"{name} needs at least {min_frames} frames; got {p.shape[0]}")
    p = p.detach().to("cpu", torch.float64)
    if not torch.isfinite(p).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return p


def _headings(p: torch.Tensor, forward_sigma: float) -> torch.Tensor:
    """Heading angle (from +Z towards +X) of each frame of (T, 22, 3) positions."""
    r_hip, l_hip, r_shoulder, l_shoulder = FACE_JOINTS
    across = p[:, r_hip] - p[:, l_hip] + p[:, r_shoulder] - p[:, l_shoulder]
    # forward = Y × across, horizontal by construction.
    forward = torch.stack((across[:, 2], -across[:, 0]), -1)
    forward = forward / torch.linalg.vector_norm(forward, dim=-1, keepdim=True).clamp_min(1e-12)
    if forward_sigma > 0:
        from scipy.ndimage import gaussian_filter1d

        forward = torch.from_numpy(gaussian_filter1d(forward.numpy(), forward_sigma, axis=0, mode="nearest"))
    return torch.atan2(forward[:, 0], forward[:, 1])


def _canonical(p: torch.Tensor, forward_sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical positions and each frame's heading in the canonical frame (0 at frame 0)."""
    heading = _headings(p, forward_sigma)
    shift = torch.stack((p[0, 0, 0], p[:, :, 1].min(), p[0, 0, 2]))
    turn = rotation_y(-heading[0])
    aligned = (p - shift) @ turn.T
    return aligned, heading - heading[0]


def canonicalize(positions: Any, *, forward_sigma: float = 20.0) -> np.ndarray:
    """Global joint positions in HumanML3D's canonical frame.

    The clip is shifted so that its lowest joint is at y = 0 and the first frame's root at
    x = z = 0, and turned about Y so that the first frame faces +Z; this is the frame that
    :func:`features_to_positions` returns.

    Shapes:
        positions: (T, 22, 3) -> (T, 22, 3) float64
    """
    aligned, _ = _canonical(_check_positions(positions, min_frames=1), forward_sigma)
    return aligned.numpy()


def foot_contacts(positions: Any, fps: float = 20.0, *, speed_threshold: float = HUMANML3D_FOOT_SPEED,
                  height_threshold: float | None = None) -> np.ndarray:
    """Contact labels of the four foot joints from their speed and, optionally, their height.

    A joint is in contact from frame t to t+1 when it moves slower than ``speed_threshold``
    metres per second and, if ``height_threshold`` is given, is lower than that many metres at
    frame t (heights measured from y = 0). HumanML3D uses the speed test alone.

    Shapes:
        positions: (T, 22, 3) -> (T - 1, 4) float32, columns in :data:`FOOT_JOINTS` order
    """
    p = _check_positions(positions)
    feet = p[:, list(FOOT_JOINTS)]
    step = ((feet[1:] - feet[:-1]) ** 2).sum(-1)
    contact = step < (speed_threshold / fps) ** 2
    if height_threshold is not None:
        contact &= feet[:-1, :, 1] < height_threshold
    return contact.numpy().astype(np.float32)


def positions_to_features(positions: Any, fps: float = 20.0, *, rotations: Any = None,
                          forward_sigma: float = 20.0, foot_speed: float = HUMANML3D_FOOT_SPEED,
                          foot_height: float | None = None) -> np.ndarray:
    """HumanML3D features of a clip of global joint positions (module docstring).

    Args:
        positions: global joint positions of :data:`~polydiff_motion.skeleton.SMPL22`, y up.
        fps: frame rate, used only for the foot-contact speed threshold.
        rotations: local joint rotations (T, 22, 3, 3) to store in the rotation block; by default
            they are solved from the positions by :func:`~polydiff_motion.skeleton.inverse_kinematics`.
            The pelvis's rotation is not stored, so world-frame and canonical rotations agree.
        forward_sigma: Gaussian smoothing of the facing direction in frames; 0 disables it.
        foot_speed, foot_height: the thresholds of :func:`foot_contacts`.

    Returns:
        (T - 1, 263) float32.

    Raises:
        ValueError: the wrong shape, fewer than 2 frames, or NaN / infinite values.
    """
    p, heading = _canonical(_check_positions(positions), forward_sigma)
    n = p.shape[0] - 1
    if rotations is None:
        local = inverse_kinematics(p)
    else:
        local = torch.as_tensor(np.asarray(rotations) if not isinstance(rotations, torch.Tensor) else rotations)
        local = local.detach().to("cpu", torch.float64)
        if local.shape != (p.shape[0], NUM_JOINTS, 3, 3):
            raise ValueError(f"rotations must have shape ({p.shape[0]}, {NUM_JOINTS}, 3, 3); got {tuple(local.shape)}")
        if not torch.isfinite(local).all():
            raise ValueError("rotations contains NaN or infinite values")
    # The facing frame turns the world by -heading so that the body faces +Z.
    to_facing = rotation_y(-heading)  # (T, 3, 3)
    turn = torch.remainder(heading[1:] - heading[:-1] + math.pi, 2 * math.pi) - math.pi
    root_rot_vel = -0.5 * turn
    root = p[:, 0]
    root_lin_vel = (to_facing[1:] @ (root[1:] - root[:-1])[..., None])[..., 0][:, [0, 2]]
    root_y = root[:-1, 1]
    centred = p - torch.stack((root[:, 0], torch.zeros_like(root[:, 0]), root[:, 2]), -1)[:, None]
    ric = (to_facing[:, None] @ centred[..., None])[..., 0][:-1, 1:]
    rot = matrix_to_rotation_6d(local[:-1, 1:])
    vel = (to_facing[:-1, None] @ (p[1:] - p[:-1])[..., None])[..., 0]
    contact = torch.from_numpy(foot_contacts(p.numpy(), fps, speed_threshold=foot_speed,
                                             height_threshold=foot_height)).to(torch.float64)
    out = torch.cat((root_rot_vel[:, None], root_lin_vel, root_y[:, None], ric.reshape(n, -1), rot.reshape(n, -1),
                     vel.reshape(n, -1), contact), dim=-1)
    return out.numpy().astype(np.float32)


def _as_features(features: Any) -> tuple[torch.Tensor, bool]:
    is_numpy = not isinstance(features, torch.Tensor)
    f = torch.as_tensor(np.asarray(features)) if is_numpy else features
    if f.ndim < 2 or f.shape[-1] != FEATURE_DIM or f.shape[-2] < 1:
        raise ValueError(f"features must have shape (..., T >= 1, {FEATURE_DIM}); got {tuple(f.shape)}")
    if not f.is_floating_point():
        f = f.to(torch.get_default_dtype())
    if not torch.isfinite(f).all():
        raise ValueError("features contain NaN or infinite values")
    return f, is_numpy


def _root(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    half_turn = f[..., ROOT_ROT_VEL.start]
    # The heading of frame t sums the increments before it; frame 0 faces +Z by construction.
    heading = -2 * torch.cumsum(torch.cat((torch.zeros_like(half_turn[..., :1]), half_turn[..., :-1]), -1), -1)
    step = torch.zeros(*f.shape[:-1], 3, dtype=f.dtype, device=f.device)
    step[..., 1:, 0] = f[..., :-1, ROOT_LIN_VEL.start]
    step[..., 1:, 2] = f[..., :-1, ROOT_LIN_VEL.start + 1]
    # Step t-1 -> t was expressed in frame t's facing frame; turn it back to the world.
    step = (rotation_y(heading) @ step[..., None])[..., 0]
    root = torch.cumsum(step, dim=-2)
    root[..., 1] = f[..., ROOT_Y.start]
    return root, heading


def features_to_root(features: ArrayT) -> tuple[ArrayT, ArrayT]:
    """The root's global position and heading integrated from the root features.

    Shapes:
        features: (..., T, 263) -> root (..., T, 3), heading (..., T) in radians from +Z
        towards +X
    """
    f, is_numpy = _as_features(features)
    root, heading = _root(f)
    return (root.numpy(), heading.numpy()) if is_numpy else (root, heading)


def features_to_positions(features: ArrayT) -> ArrayT:
    """Global joint positions recovered from HumanML3D features (``recover_from_ric``).

    Returns the same kind of array (numpy or torch) and dtype as given; differentiable in torch.

    Shapes:
        features: (..., T, 263) -> (..., T, 22, 3)

    Raises:
        ValueError: the last dimension is not 263, there are no frames, or values are not finite.
    """
    f, is_numpy = _as_features(features)
    root, heading = _root(f)
    ric = f[..., RIC].reshape(*f.shape[:-1], NUM_JOINTS - 1, 3)
    joints = (rotation_y(heading)[..., None, :, :] @ ric[..., None])[..., 0]
    joints = joints + torch.stack((root[..., 0], torch.zeros_like(root[..., 0]), root[..., 2]), -1)[..., None, :]
    positions = torch.cat((root[..., None, :], joints), dim=-2)
    return positions.numpy() if is_numpy else positions


# --- normalisation ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureStats:
    """Per-dimension mean and standard deviation of HumanML3D features, as plain lists.

    ``normalize(x) = (x - mean) / std``. :meth:`from_features` follows HumanML3D's
    ``cal_mean_variance``: within each block of the feature (root rotation velocity, root linear
    velocity, root height, positions, rotations, joint velocities, contacts) every dimension gets
    the block's average std, and the root and contact blocks' std is divided by ``feat_bias`` so
    that they weigh more in a loss on normalised features.
    """

    mean: list[float]
    std: list[float]

    def __post_init__(self) -> None:
        if len(self.mean) != FEATURE_DIM or len(self.std) != FEATURE_DIM:
            raise ValueError(f"mean and std need {FEATURE_DIM} values; got {len(self.mean)} and {len(self.std)}")
        if not all(s > 0 for s in self.std):
            raise ValueError("every std must be positive")

    @classmethod
    def from_features(cls, sequences: Iterable[Any], *, feat_bias: float = 5.0, eps: float = 1e-8) -> FeatureStats:
        """Statistics over all rows of all sequences, each (T, 263).

        Raises:
            ValueError: no rows, or a sequence of the wrong width.
        """
        rows = []
        for sequence in sequences:
            sequence = np.asarray(sequence, dtype=np.float64)
            if sequence.ndim != 2 or sequence.shape[1] != FEATURE_DIM:
                raise ValueError(f"each sequence must have shape (T, {FEATURE_DIM}); got {sequence.shape}")
            rows.append(sequence)
        data = np.concatenate(rows) if rows else np.zeros((0, FEATURE_DIM))
        if len(data) == 0:
            raise ValueError("no feature rows to compute statistics from")
        mean, std = data.mean(0), data.std(0)
        for block, bias in ((ROOT_ROT_VEL, feat_bias), (ROOT_LIN_VEL, feat_bias), (ROOT_Y, feat_bias), (RIC, 1.0),
                            (ROT, 1.0), (VEL, 1.0), (FOOT_CONTACT, feat_bias)):
            std[block] = std[block].mean() / bias
        return cls([float(m) for m in mean], [float(max(s, eps)) for s in std])

    def _arrays(self, x: ArrayT) -> tuple[Any, Any]:
        if isinstance(x, torch.Tensor):
            return (torch.tensor(self.mean, dtype=x.dtype, device=x.device),
                    torch.tensor(self.std, dtype=x.dtype, device=x.device))
        return np.asarray(self.mean, dtype=x.dtype), np.asarray(self.std, dtype=x.dtype)

    def normalize(self, features: ArrayT) -> ArrayT:
        """Shapes: (..., 263) -> (..., 263)."""
        mean, std = self._arrays(features)
        return (features - mean) / std

    def denormalize(self, features: ArrayT) -> ArrayT:
        """Shapes: (..., 263) -> (..., 263)."""
        mean, std = self._arrays(features)
        return features * std + mean

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> FeatureStats:
        return cls([float(v) for v in state["mean"]], [float(v) for v in state["std"]])

    def save(self, path: str | Path) -> None:
        """Write the statistics as JSON ``{"mean": [...], "std": [...]}``."""
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        return cls.from_dict(json.loads(Path(path).read_text()))
