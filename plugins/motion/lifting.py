"""2D-to-3D human pose lifting with several hypotheses: DiffPose, DDHPose's bone split, a baseline.

A lifter sees a window of 2D keypoints of the 22 SMPL joints (HumanML3D's order) with a
confidence per joint, and predicts the 3D pose of every frame of the window. The diffusion lifter
(:class:`LiftingDiffusion`, DiffPose, Gong et al. 2023) denoises the 3D pose window conditioned on
the 2D input and so draws as many hypotheses as asked; with ``bone_space`` it diffuses bone
lengths and bone directions instead of joint positions (DDHPose's disentanglement, Cai et al.
2024) and puts the joints back by forward kinematics along the SMPL tree. Hypotheses are
aggregated by their mean or by joint-wise reprojection selection (D3DP's JPMA, Shan et al. 2023).
:class:`DeterministicLifter` is the same network trained by plain regression, the baseline.

Conventions (recorded in every checkpoint under ``"lifting"`` and used by ``polydiff motion lift``):

- camera coordinates follow OpenCV: x right, y down, z forward (away from the camera), metres;
- the 2D input is in **normalised camera coordinates** ``(x / z, y / z)``, i.e. pixels with the
  principal point subtracted and divided by the focal length (``(u - cx) / fx``, ``(v - cy) / fy``),
  so a model does not depend on an image size or a focal length; ``lift --focal F --center CX CY``
  converts pixel keypoints;
- the 3D output is root-relative: joint positions in camera coordinates minus the pelvis';
- a joint with zero confidence is missing: its keypoint is zeroed and its flag is 0 in the
  network's input (training drops joints at random in the same way).

Training pairs come from HumanML3D's ``new_joints/<id>.npy`` (T, 22, 3) (y up, metres): a random
window of a clip is seen by a random pinhole camera (yaw all around the subject, elevation,
distance, focal length; the camera looks at the window's mean pelvis position), projected, and
perturbed by Gaussian pixel noise and randomly missing joints. Validation and test windows use
cameras, noise and missing joints drawn from fixed seeds, so every run sees the same ones.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from polydiff.denoiser import Denoiser
from polydiff.module import DiffusionModule, SampleMetrics
from polydiff.schedules import Schedule, VPCosine

from .data import EpochSampler
from .commands import _fail
from .formats import MotionDataError, read_split_ids
from .nets import sinusoidal_embedding
from .skeleton import SMPL22, SMPL22_NAMES, SMPL22_PARENTS, check_joint_names

__all__ = [
    "NUM_JOINTS",
    "NORMALIZATION",
    "Aggregate",
    "look_at",
    "orbit_camera",
    "project",
    "positions_to_bones",
    "bones_to_positions",
    "pose_to_state",
    "state_to_pose",
    "state_dim",
    "read_joint_clips",
    "LiftingWindows",
    "LiftingDataModule",
    "LiftingTransformer",
    "LiftingError",
    "LiftingDiffusion",
    "DeterministicLifter",
    "check_lifting_info",
    "estimate_translation",
    "aggregate_hypotheses",
    "evaluate_lifter",
    "load_lifter",
    "lift_command",
]

#: Joints a lifter works on: HumanML3D's SMPL skeleton (:data:`~polydiff_motion.skeleton.SMPL22_NAMES`).
NUM_JOINTS = len(SMPL22_NAMES)
#: The 2D input convention, as recorded in checkpoints.
NORMALIZATION = "camera"
_CAMERA_AXES = "x right, y down, z forward (OpenCV), metres"
_FOCAL_CONVENTION = ("keypoints are normalised camera coordinates (x/z, y/z) = ((u - cx) / fx, (v - cy) / fy); "
                     "training focal lengths only scale the pixel noise")
_TARGET = "root-relative joint positions (pelvis at the origin) in camera coordinates, metres"
#: Positions are divided by this (metres) in the diffusion state, giving about unit variance.
POSE_SCALE = 0.4
#: Bone lengths enter the bone-space state as ``(length / rest length - 1) / LENGTH_SCALE``.
LENGTH_SCALE = 0.05
_REST_LENGTHS = np.linalg.norm(SMPL22.offsets[1:], axis=-1)

Aggregate = Literal["mean", "reprojection", "pose"]
_AGGREGATES = ("mean", "reprojection", "pose")
_INFO_KEYS = ("joints", "joint_names", "window", "normalization")


# --- cameras ------------------------------------------------------------------------------------
def look_at(position: np.ndarray, target: np.ndarray, up: Sequence[float] = (0.0, 1.0, 0.0)) -> np.ndarray:
    """World-to-camera rotation of a camera at ``position`` looking at ``target``, OpenCV axes.

    The rows are the camera's right, down and forward directions in world coordinates, so a world
    point ``p`` has camera coordinates ``R @ (p - position)``. ``up`` is the world's up (y).

    Shapes:
        position, target: (..., 3) -> (..., 3, 3)

    Raises:
        ValueError: the camera looks along ``up`` (no horizon to orient it by).
    """
    position, target = np.asarray(position, np.float64), np.asarray(target, np.float64)
    forward = target - position
    forward = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    right = np.cross(forward, np.broadcast_to(np.asarray(up, np.float64), forward.shape))
    norm = np.linalg.norm(right, axis=-1, keepdims=True)
    if (norm < 1e-9).any():
        raise ValueError("the camera looks straight along the up direction; its orientation is undefined")
    right = right / norm
    down = np.cross(forward, right)
    return np.stack((right, down, forward), axis=-2)


def orbit_camera(target: np.ndarray, yaw: float, elevation: float, distance: float) -> tuple[np.ndarray, np.ndarray]:
    """A camera on a sphere around ``target`` (y up), looking at it.

    The camera sits at ``target + distance * (cos(e) sin(yaw), sin(e), cos(e) cos(yaw))``: yaw 0
    is in front of a body facing +z, positive elevation is above the target, angles in radians.

    Returns:
        (rotation (3, 3) as in :func:`look_at`, position (3,)).
    """
    target = np.asarray(target, np.float64)
    direction = np.array([math.cos(elevation) * math.sin(yaw), math.sin(elevation),
                          math.cos(elevation) * math.cos(yaw)])
    position = target + distance * direction
    return look_at(position, target), position


def project(points: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """Pinhole projection of camera-coordinate points to normalised camera coordinates ``(x/z, y/z)``.

    Shapes:
        points: (..., 3) -> (..., 2)
    """
    return points[..., :2] / points[..., 2:3]


# --- the pose representation -------------------------------------------------------------------
def positions_to_bones(positions: Tensor) -> tuple[Tensor, Tensor]:
    """Bone lengths and unit directions along the SMPL22 tree (bone ``j - 1`` ends at joint ``j``).

    A zero-length bone gets a zero direction.

    Shapes:
        positions: (..., 22, 3) -> lengths (..., 21), directions (..., 21, 3)
    """
    parents = list(SMPL22_PARENTS[1:])
    bones = positions[..., 1:, :] - positions[..., parents, :]
    lengths = torch.linalg.vector_norm(bones, dim=-1)
    return lengths, bones / lengths.clamp_min(1e-12)[..., None]


def bones_to_positions(lengths: Tensor, directions: Tensor, root: Tensor | None = None) -> Tensor:
    """Joint positions by forward kinematics of the bone offsets ``length * direction``.

    Args:
        lengths, directions: as :func:`positions_to_bones` returns them (directions are used as given).
        root: the pelvis position; the origin when ``None``.

    Shapes:
        lengths: (..., 21); directions: (..., 21, 3); root: (..., 3) -> (..., 22, 3)
    """
    offsets = lengths[..., None] * directions
    start = torch.zeros_like(offsets[..., 0, :]) if root is None else root.to(offsets).expand_as(offsets[..., 0, :])
    joints = [start]
    for j, p in enumerate(SMPL22_PARENTS[1:], start=1):
        joints.append(joints[p] + offsets[..., j - 1, :])
    return torch.stack(joints, dim=-2)


def state_dim(bone_space: bool) -> int:
    """Numbers per frame of the diffusion state: 21 x (length, direction) or 21 joints x 3."""
    return (NUM_JOINTS - 1) * (4 if bone_space else 3)


def pose_to_state(positions: Tensor, bone_space: bool) -> Tensor:
    """Root-relative poses as the diffusion state (the pelvis, always at the origin, is left out).

    Positions: the 21 other joints divided by :data:`POSE_SCALE`. Bone space: per bone
    ``(length / rest - 1) / LENGTH_SCALE`` and the unit direction.

    Shapes:
        positions: (..., 22, 3) -> (..., state_dim(bone_space))
    """
    positions = positions - positions[..., :1, :]
    if not bone_space:
        return (positions[..., 1:, :] / POSE_SCALE).flatten(-2)
    lengths, directions = positions_to_bones(positions)
    rest = torch.as_tensor(_REST_LENGTHS, dtype=positions.dtype, device=positions.device)
    return torch.cat(((lengths / rest - 1.0)[..., None] / LENGTH_SCALE, directions), dim=-1).flatten(-2)


def state_to_pose(state: Tensor, bone_space: bool) -> Tensor:
    """The inverse of :func:`pose_to_state`; sampled directions are normalised first.

    Shapes:
        state: (..., state_dim(bone_space)) -> (..., 22, 3), pelvis at the origin.
    """
    if not bone_space:
        joints = state.unflatten(-1, (NUM_JOINTS - 1, 3)) * POSE_SCALE
        return torch.cat((torch.zeros_like(joints[..., :1, :]), joints), dim=-2)
    bones = state.unflatten(-1, (NUM_JOINTS - 1, 4))
    rest = torch.as_tensor(_REST_LENGTHS, dtype=state.dtype, device=state.device)
    lengths = ((1.0 + LENGTH_SCALE * bones[..., 0]) * rest).clamp_min(0.0)
    directions = torch.nn.functional.normalize(bones[..., 1:], dim=-1)
    return bones_to_positions(lengths, directions)


# --- data ---------------------------------------------------------------------------------------
def read_joint_clips(root: str | Path, split: str) -> tuple[list[str], list[np.ndarray], list[tuple[str, str]]]:
    """The 3D joint positions of one split of a HumanML3D folder.

    Args:
        root: the folder with ``new_joints/<id>.npy`` (T, 22, 3) and ``<split>.txt``.
        split: ``train``, ``val`` or ``test``.

    Returns:
        (ids, clips as float32 (T, 22, 3) arrays, problems): clips that are missing, unreadable,
        of the wrong shape, with fewer than 2 frames or non-finite values are skipped and listed
        as ``(id, reason)``.

    Raises:
        MotionDataError: ``root`` or the split file is missing.
    """
    root = Path(root)
    ids, clips, problems = [], [], []
    for clip in read_split_ids(root, split):
        path = root / "new_joints" / f"{clip}.npy"
        try:
            joints = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            problems.append((clip, f"{path}: missing"))
            continue
        except (OSError, ValueError) as error:
            problems.append((clip, f"{path}: not a readable .npy file ({error})"))
            continue
        if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3) or len(joints) < 2:
            problems.append((clip, f"{path}: joints must have shape (T >= 2, {NUM_JOINTS}, 3); got {joints.shape}"))
            continue
        if not np.isfinite(joints).all():
            problems.append((clip, f"{path}: NaN or infinite values"))
            continue
        ids.append(clip)
        clips.append(joints.astype(np.float32))
    return ids, clips, problems


class LiftingWindows(Dataset):
    """(2D keypoints, confidence, 3D target) windows seen by random or fixed-seed cameras.

    Args:
        clips: world joint positions (T, 22, 3), y up, metres.
        window: frames per item; shorter clips repeat their last frame.
        noise_px: standard deviation of the Gaussian keypoint noise, in pixels.
        missing_joint_prob: probability that a joint is missing in a frame (zero confidence).
        distance: camera distance range from the look-at point, metres.
        elevation_deg: camera elevation range, degrees (positive: above the look-at point).
        focal_px: focal length range, pixels (only scales the noise; see the module docstring).
        seed: the seed of every random draw.
        fixed: evaluation mode: ``windows_per_clip`` evenly spaced windows per clip, each with
            its own fixed camera, noise and missing joints; otherwise one random window per clip
            and item (an item is indexed by ``index`` or by ``(epoch, index)``).
        windows_per_clip: windows per clip in evaluation mode.

    Items are dicts: ``keypoints`` (W, 22, 2) and ``confidence`` (W, 22) float32 (missing joints
    zero in both), ``target`` (W, 22, 3) float32 root-relative camera-coordinate positions.
    """

    def __init__(self, clips: Sequence[np.ndarray], *, window: int = 16, noise_px: float = 4.0,
                 missing_joint_prob: float = 0.05, distance: Sequence[float] = (3.0, 6.0),
                 elevation_deg: Sequence[float] = (-10.0, 30.0), focal_px: Sequence[float] = (800.0, 1600.0),
                 seed: int = 0, fixed: bool = False, windows_per_clip: int = 4):
        if window < 1:
            raise ValueError(f"window must be positive, got {window}")
        if noise_px < 0 or not 0.0 <= missing_joint_prob < 1.0:
            raise ValueError(f"need noise_px >= 0 and missing_joint_prob in [0, 1); got {noise_px}, {missing_joint_prob}")
        for name, (lo, hi) in (("distance", distance), ("focal_px", focal_px)):
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be a range 0 < low <= high, got {(lo, hi)}")
        if not -90 < elevation_deg[0] <= elevation_deg[1] < 90:
            raise ValueError(f"elevation_deg must lie within (-90, 90), got {tuple(elevation_deg)}")
        self.clips = list(clips)
        self.window, self.noise_px, self.missing = int(window), float(noise_px), float(missing_joint_prob)
        self.distance, self.focal = tuple(map(float, distance)), tuple(map(float, focal_px))
        self.elevation = tuple(math.radians(float(e)) for e in elevation_deg)
        self.seed, self.fixed = int(seed), bool(fixed)
        self.items: list[tuple[int, int]] = []
        if self.fixed:
            for c, clip in enumerate(self.clips):
                last = max(len(clip) - self.window, 0)
                count = min(int(windows_per_clip), last // max(self.window // 2, 1) + 1)
                starts = np.unique(np.linspace(0, last, max(count, 1)).round().astype(int))
                self.items += [(c, int(s)) for s in starts]

    def __len__(self) -> int:
        return len(self.items) if self.fixed else len(self.clips)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        epoch, index = (0, key) if isinstance(key, (int, np.integer)) else key
        index = int(index)
        if self.fixed:
            c, start = self.items[index]
            rng = np.random.default_rng([self.seed, 7, index])
        else:
            c = index
            rng = np.random.default_rng([self.seed, int(epoch), index])
            start = int(rng.integers(max(len(self.clips[c]) - self.window, 0) + 1))
        return self.render(self.clips[c], start, rng)

    def render(self, clip: np.ndarray, start: int, rng: np.random.Generator) -> dict[str, Tensor]:
        """One window of ``clip`` from ``start``, with a camera, noise and missing joints from ``rng``."""
        frames = np.minimum(np.arange(start, start + self.window), len(clip) - 1)
        world = clip[frames].astype(np.float64)
        rotation, position = orbit_camera(world[:, 0].mean(axis=0), rng.uniform(0, 2 * math.pi),
                                          rng.uniform(*self.elevation), rng.uniform(*self.distance))
        camera = (world - position) @ rotation.T
        focal = rng.uniform(*self.focal)
        keypoints = project(camera) + rng.normal(0.0, self.noise_px / focal, size=camera.shape[:-1] + (2,))
        confidence = (rng.random(camera.shape[:-1]) >= self.missing).astype(np.float64)
        keypoints *= confidence[..., None]
        target = camera - camera[:, :1]
        return {"keypoints": torch.from_numpy(keypoints.astype(np.float32)),
                "confidence": torch.from_numpy(confidence.astype(np.float32)),
                "target": torch.from_numpy(target.astype(np.float32))}


class LiftingDataModule(pl.LightningDataModule):
    """2D-3D training pairs made from the 3D joints of a HumanML3D folder (see :class:`LiftingWindows`).

    Batches are dicts: ``keypoints`` (B, W, 22, 2), ``confidence`` (B, W, 22), ``target``
    (B, W, 22, 3), float32. Skipped clips (see :func:`read_joint_clips`) are reported in a
    warning naming each, and kept in ``problems``.

    Args:
        root: the HumanML3D folder (``new_joints/``, ``train.txt``, ``val.txt``, ``test.txt``).
        window: frames per window.
        batch_size: windows per batch.
        noise_px, missing_joint_prob, distance, elevation_deg, focal_px: the synthetic cameras
            and 2D detections (see :class:`LiftingWindows`).
        eval_windows: windows per clip in validation and test.
        seed: the seed of the training draws; validation and test use fixed seeds derived from it.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        root: str,
        window: int = 16,
        batch_size: int = 64,
        noise_px: float = 4.0,
        missing_joint_prob: float = 0.05,
        distance: tuple[float, float] = (3.0, 6.0),
        elevation_deg: tuple[float, float] = (-10.0, 30.0),
        focal_px: tuple[float, float] = (800.0, 1600.0),
        eval_windows: int = 4,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        if batch_size < 1 or num_workers < 0 or eval_windows < 1:
            raise ValueError(f"need batch_size >= 1, eval_windows >= 1 and num_workers >= 0; got {batch_size}, "
                             f"{eval_windows}, {num_workers}")
        self.root, self.window, self.batch_size = str(root), int(window), int(batch_size)
        self.options = {"window": int(window), "noise_px": float(noise_px),
                        "missing_joint_prob": float(missing_joint_prob), "distance": tuple(distance),
                        "elevation_deg": tuple(elevation_deg), "focal_px": tuple(focal_px)}
        LiftingWindows([], **self.options)  # check the options now, before any data is read
        self.eval_windows, self.seed, self.num_workers = int(eval_windows), int(seed), int(num_workers)
        self.datasets: dict[str, LiftingWindows] = {}
        self.ids: dict[str, list[str]] = {}
        #: per split, ``(id, reason)`` of every clip left out.
        self.problems: dict[str, list[tuple[str, str]]] = {}

    def dataset(self, split: str) -> LiftingWindows:
        """The windows of a split (read on first use); ``train`` is random, the others fixed."""
        if split not in self.datasets:
            ids, clips, problems = read_joint_clips(self.root, split)
            self.problems[split] = problems
            if problems:
                lines = "".join(f"\n  {clip}: {reason}" for clip, reason in problems)
                warnings.warn(f"{self.root}: skipped {len(problems)} clip(s) of the {split} split:{lines}",
                              stacklevel=2)
            if not clips:
                raise ValueError(f"{self.root}: no usable clips in the {split} split")
            salt = {"train": 0, "val": 1, "test": 2}.get(split, 3)
            self.ids[split] = ids
            self.datasets[split] = LiftingWindows(clips, **self.options, seed=self.seed * 4 + salt,
                                                  fixed=split != "train", windows_per_clip=self.eval_windows)
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        for split in ("test",) if stage == "test" else ("train", "val"):
            self.dataset(split)

    def info(self) -> dict[str, Any]:
        """Plain data a lifter keeps in its checkpoint: what its inputs and outputs mean."""
        return {
            "joints": NUM_JOINTS,
            "joint_names": list(SMPL22_NAMES),
            "window": self.window,
            "normalization": NORMALIZATION,
            "focal_convention": _FOCAL_CONVENTION,
            "camera_axes": _CAMERA_AXES,
            "target": _TARGET,
            "noise_px": self.options["noise_px"],
            "missing_joint_prob": self.options["missing_joint_prob"],
            "focal_px": list(self.options["focal_px"]),
            "dataset": Path(self.root).name,
        }

    def _loader(self, split: str) -> DataLoader:
        dataset = self.dataset(split)
        sampler = EpochSampler(len(dataset), self.seed) if split == "train" else None
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, drop_last=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


# --- the network --------------------------------------------------------------------------------
class LiftingTransformer(Denoiser):
    """An ``x0``-predicting transformer over the frames of a window, conditioned on 2D keypoints.

    Each frame is one token: the noisy state of the frame, its 2D keypoints (centred on the
    window's mean confident keypoint and divided by the window's RMS spread, so the network sees
    the same pose at every distance; the centre and log spread are added as three more inputs)
    and the 22 confidence flags, embedded by one linear layer, plus the diffusion time
    (sinusoids of ``1000 t`` through a two-layer MLP) and a sinusoidal frame position. Missing
    joints (zero confidence) are zeroed, whatever their keypoints hold.

    The output width depends on the pose representation, so the owning module calls
    :meth:`build` with it before use.

    Args:
        dim: token width.
        layers: encoder layers.
        heads: attention heads (must divide ``dim``).
        ff: width of the feed-forward blocks.
        dropout: dropout in the encoder.
        max_frames: the longest window the position encoding covers.

    Shapes:
        x: (B, W, S); t: (B,) or a scalar; cond: ``{"keypoints": (B, W, 22, 2), "confidence":
        (B, W, 22)}``; returns (B, W, S).
    """

    def __init__(self, dim: int = 128, layers: int = 4, heads: int = 4, ff: int = 256, dropout: float = 0.0,
                 max_frames: int = 243):
        super().__init__(prediction="x0")
        if dim < 2 or dim % 2 or dim % heads:
            raise ValueError(f"dim must be even and divisible by heads; got dim={dim}, heads={heads}")
        if min(layers, ff, max_frames) < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError("layers, ff and max_frames must be positive and dropout in [0, 1)")
        self.dim, self.max_frames, self.state_dim = int(dim), int(max_frames), 0
        self.time_mlp = nn.Sequential(nn.Linear(self.dim, self.dim), nn.SiLU(), nn.Linear(self.dim, self.dim))
        self.register_buffer("position", sinusoidal_embedding(torch.arange(self.max_frames), self.dim), persistent=False)
        layer = nn.TransformerEncoderLayer(self.dim, heads, ff, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(self.dim)
        self.input_proj: nn.Linear | None = None
        self.output: nn.Linear | None = None

    def build(self, state_dim: int) -> None:
        """Make the input and output layers for a state of ``state_dim`` numbers per frame."""
        self.state_dim = int(state_dim)
        self.input_proj = nn.Linear(self.state_dim + 3 * NUM_JOINTS + 3, self.dim)
        self.output = nn.Linear(self.dim, self.state_dim)

    @staticmethod
    def condition_features(keypoints: Tensor, confidence: Tensor) -> Tensor:
        """Per-frame conditioning features (see the class docstring).

        Shapes:
            keypoints: (B, W, J, 2); confidence: (B, W, J) -> (B, W, 3 J + 3)
        """
        flag = (confidence > 0).to(keypoints.dtype)
        points = keypoints * flag[..., None]
        count = flag.sum(dim=(1, 2)).clamp_min(1.0)
        centre = points.sum(dim=(1, 2)) / count[:, None]
        spread = (((points - centre[:, None, None]) ** 2).sum(-1) * flag).sum(dim=(1, 2)) / count
        spread = spread.sqrt().clamp_min(1e-3)
        rel = (points - centre[:, None, None]) / spread[:, None, None, None] * flag[..., None]
        b, w = keypoints.shape[:2]
        extra = torch.cat((centre, spread.log()[:, None]), dim=-1)[:, None].expand(b, w, 3)
        return torch.cat((rel.flatten(-2), flag, extra), dim=-1)

    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        if self.input_proj is None or self.output is None:
            raise RuntimeError("LiftingTransformer.build(state_dim) has not been called")
        if not isinstance(cond, Mapping) or "keypoints" not in cond or "confidence" not in cond:
            raise TypeError("the lifting condition is a mapping with 'keypoints' (B, W, 22, 2) and 'confidence' (B, W, 22)")
        b, w, s = x.shape
        if s != self.state_dim or w > self.max_frames:
            raise ValueError(f"state of shape {tuple(x.shape)} does not fit (B, W <= {self.max_frames}, {self.state_dim})")
        keypoints, confidence = cond["keypoints"].to(x.device), cond["confidence"].to(x.device)
        if keypoints.shape != (b, w, NUM_JOINTS, 2) or confidence.shape != (b, w, NUM_JOINTS):
            raise ValueError(f"keypoints {tuple(keypoints.shape)} and confidence {tuple(confidence.shape)} do not fit "
                             f"({b}, {w}, {NUM_JOINTS}, 2) and ({b}, {w}, {NUM_JOINTS})")
        t = torch.as_tensor(t, device=x.device).reshape(-1)
        t = t.expand(b) if t.numel() == 1 else t
        dtype = self.input_proj.weight.dtype
        features = self.condition_features(keypoints.to(dtype), confidence.to(dtype))
        h = self.input_proj(torch.cat((x.to(dtype), features), dim=-1))
        h = h + self.time_mlp(sinusoidal_embedding(1000.0 * t, self.dim).to(dtype))[:, None] + self.position[:w].to(dtype)
        return self.output(self.norm(self.encoder(h))).to(x.dtype)


# --- the modules --------------------------------------------------------------------------------
def check_lifting_info(info: Any) -> dict[str, Any]:
    """A checked copy of a lifting data description (``LiftingDataModule.info()`` or a checkpoint's)."""
    if not isinstance(info, Mapping):
        raise ValueError(f"data_info must be a mapping, got {type(info).__name__}")
    missing = [k for k in _INFO_KEYS if k not in info]
    if missing:
        raise ValueError(f"data_info lacks {', '.join(missing)}")
    info = dict(info)
    if int(info["joints"]) != NUM_JOINTS or list(info["joint_names"]) != list(SMPL22_NAMES):
        raise ValueError(f"data_info: a lifter works on the {NUM_JOINTS} SMPL joints in HumanML3D's order")
    if info["normalization"] != NORMALIZATION:
        raise ValueError(f"data_info: unknown 2D normalization {info['normalization']!r}; this version reads "
                         f"{NORMALIZATION!r}")
    if int(info["window"]) < 1:
        raise ValueError(f"data_info: window must be positive, got {info['window']}")
    return info


class LiftingError(SampleMetrics):
    """MPJPE (millimetres) of sampled pose windows against the batch's targets, in validation."""

    def __init__(self, bone_space: bool):
        self.bone_space = bool(bone_space)

    def __call__(self, samples: Tensor, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        pose = state_to_pose(samples.float(), self.bone_space)
        target = batch["target"].float()
        target = target - target[..., :1, :]
        return {"mpjpe_mm": 1000.0 * torch.linalg.vector_norm(pose - target, dim=-1).mean()}


class LiftingDiffusion(DiffusionModule):
    """Conditional diffusion over 3D pose windows given 2D keypoints (DiffPose; DDHPose with ``bone_space``).

    The state is :func:`pose_to_state` of the root-relative target window; the denoiser predicts
    it clean (``x0``) from the noisy state and the 2D keypoints with their confidences. The loss
    is the core's diffusion loss.

    Args:
        denoiser: a :class:`LiftingTransformer` (built here for the chosen representation).
        bone_space: diffuse bone lengths and directions instead of joint positions.
        schedule: the forward process (default: cosine).
        loss_space, weighting: as in :class:`~polydiff.module.DiffusionModule`.
        ema_decay, ema_start: EMA of the weights, used for lifting.
        sampler, sample_steps, grid: the default inference.
        hypotheses: hypotheses drawn by default (``lift --hypotheses``).
        aggregate: how :meth:`lift`'s hypotheses are combined by default (``mean`` or ``reprojection``).
        val_sample_batches: validation batches that are also sampled (logged as ``val/mpjpe_mm``).
        optimizer, lr_scheduler, lr_scheduler_interval: see the core module.
        data_info: the data description (set from the data module when not given; recorded in
            checkpoints under ``"lifting"``).
    """

    #: A regression lifter gives one hypothesis.
    deterministic = False

    data_key = "lifting"
    data_matching = ("joints", "joint_names", "window", "normalization")

    def __init__(
        self,
        denoiser: LiftingTransformer,
        bone_space: bool = False,
        schedule: Schedule | None = None,
        loss_space: Literal["native", "eps", "x0", "v"] = "native",
        weighting: Literal["none", "snr", "min_snr"] = "none",
        ema_decay: float = 0.999,
        ema_start: int = 0,
        sampler: str = "ddim",
        sample_steps: int = 10,
        grid: str = "auto",
        hypotheses: int = 5,
        aggregate: Aggregate = "mean",
        val_sample_batches: int = 1,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        data_info: dict[str, Any] | None = None,
    ):
        if not isinstance(denoiser, LiftingTransformer):
            raise TypeError(f"denoiser must be a polydiff_motion.lifting.LiftingTransformer, got {type(denoiser).__name__}")
        if int(hypotheses) < 1:
            raise ValueError(f"hypotheses must be positive, got {hypotheses}")
        if aggregate not in _AGGREGATES:
            raise ValueError(f"unknown aggregate {aggregate!r}; valid: {', '.join(_AGGREGATES)}")
        denoiser.build(state_dim(bool(bone_space)))
        super().__init__(
            denoiser=denoiser, schedule=schedule if schedule is not None else VPCosine(), loss_space=loss_space,
            weighting=weighting, ema_decay=ema_decay, ema_start=ema_start, sampler=sampler, sample_steps=sample_steps,
            grid=grid, val_metrics=LiftingError(bone_space), val_sample_batches=val_sample_batches,
            optimizer=optimizer, lr_scheduler=lr_scheduler, lr_scheduler_interval=lr_scheduler_interval,
        )
        self.bone_space = bool(bone_space)
        self.hypotheses, self.aggregate = int(hypotheses), aggregate
        if data_info is not None:
            self.configure_data(data_info)

    # --- the data description ------------------------------------------------------------------
    def configure_data(self, info: Mapping[str, Any]) -> None:
        info = check_lifting_info(info)
        if int(info["window"]) > self.denoiser.max_frames:
            raise ValueError(f"the data's window of {info['window']} frames exceeds the network's {self.denoiser.max_frames}")
        self.data_info = info

    @property
    def window(self) -> int:
        return int(self.require_info()["window"])

    # --- batches -------------------------------------------------------------------------------
    def unpack_batch(self, batch: Any) -> dict[str, Any]:
        """A :class:`LiftingDataModule` batch as the state ``x0`` and the 2D condition (``target`` kept)."""
        if not isinstance(batch, Mapping) or not {"keypoints", "confidence", "target"} <= set(batch):
            raise TypeError("a lifting batch is a mapping with 'keypoints', 'confidence' and 'target'")
        return {"x0": pose_to_state(batch["target"], self.bone_space),
                "cond": {"keypoints": batch["keypoints"], "confidence": batch["confidence"]},
                "y": None, "loss_mask": None, "known": None, "target": batch["target"]}

    # --- lifting -------------------------------------------------------------------------------
    @torch.no_grad()
    def lift_windows(self, keypoints: Tensor, confidence: Tensor, *, hypotheses: int | None = None,
                     steps: int | None = None, sampler: str | None = None, generator: torch.Generator | None = None,
                     batch_size: int = 512) -> Tensor:
        """Hypotheses for a batch of windows of the model's length (or shorter).

        Shapes:
            keypoints: (N, W, 22, 2); confidence: (N, W, 22); returns (H, N, W, 22, 3)
            root-relative positions in metres (H = 1 for a deterministic lifter).
        """
        h = 1 if self.deterministic else int(self.hypotheses if hypotheses is None else hypotheses)
        if h < 1:
            raise ValueError(f"hypotheses must be positive, got {h}")
        keypoints = torch.as_tensor(keypoints, dtype=torch.float32, device=self.device)
        confidence = torch.as_tensor(confidence, dtype=torch.float32, device=self.device)
        n, w = keypoints.shape[:2]
        kp = keypoints[None].expand(h, *keypoints.shape).reshape(h * n, *keypoints.shape[1:])
        cf = confidence[None].expand(h, *confidence.shape).reshape(h * n, *confidence.shape[1:])
        size = state_dim(self.bone_space)
        parts = []
        for first in range(0, h * n, batch_size):
            rows = slice(first, min(first + batch_size, h * n))
            cond = {"keypoints": kp[rows], "confidence": cf[rows]}
            state = self.sample((rows.stop - rows.start, w, size), cond=cond, steps=steps, sampler=sampler,
                                generator=generator)
            parts.append(state_to_pose(state.float(), self.bone_space))
        return torch.cat(parts).reshape(h, n, w, NUM_JOINTS, 3)

    @torch.no_grad()
    def lift(self, keypoints: Tensor | np.ndarray, confidence: Tensor | np.ndarray | None = None, *,
             hypotheses: int | None = None, steps: int | None = None, sampler: str | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        """3D pose hypotheses for a 2D keypoint track of any length, by sliding windows.

        Windows of the model's length start every half window (the last one ends at the last
        frame); each frame takes its pose from the window it is most central in, so every
        hypothesis is one sample per frame, not an average of samples. A track shorter than the
        window is padded by repeating its last frame.

        Args:
            keypoints: normalised camera coordinates (see the module docstring).
            confidence: per joint, 0 for a missing joint; all ones when ``None``.
            hypotheses: how many (default: the module's; always 1 for a deterministic lifter).
            steps, sampler: override the module's sampling settings.
            generator: the source of all randomness.

        Shapes:
            keypoints: (T, 22, 2); confidence: (T, 22); returns (H, T, 22, 3), root-relative, metres.
        """
        keypoints = torch.as_tensor(np.asarray(keypoints), dtype=torch.float32)
        if keypoints.ndim != 3 or keypoints.shape[1:] != (NUM_JOINTS, 2) or len(keypoints) == 0:
            raise ValueError(f"keypoints must be (T >= 1, {NUM_JOINTS}, 2), got {tuple(keypoints.shape)}")
        confidence = (torch.ones(keypoints.shape[:2]) if confidence is None
                      else torch.as_tensor(np.asarray(confidence), dtype=torch.float32))
        if confidence.shape != keypoints.shape[:2]:
            raise ValueError(f"confidence must be {tuple(keypoints.shape[:2])}, got {tuple(confidence.shape)}")
        if not (torch.isfinite(keypoints).all() and torch.isfinite(confidence).all()):
            raise ValueError("keypoints and confidence must be finite")
        frames, window = len(keypoints), self.window
        starts, owner, offset = _window_plan(frames, window)
        index = torch.minimum(torch.as_tensor(starts)[:, None] + torch.arange(window), torch.tensor(frames - 1))
        poses = self.lift_windows(keypoints[index], confidence[index], hypotheses=hypotheses, steps=steps,
                                  sampler=sampler, generator=generator)
        return poses[:, torch.as_tensor(owner), torch.as_tensor(offset)].cpu()


def _window_plan(frames: int, window: int) -> tuple[list[int], list[int], list[int]]:
    """Window starts, and for each frame the window it is most central in and its offset there."""
    last = max(frames - window, 0)
    starts = sorted(set(range(0, last + 1, max(window // 2, 1))) | {last})
    centres = np.asarray(starts) + (window - 1) / 2
    owner = [int(np.argmin(np.abs(centres - f))) for f in range(frames)]
    return starts, owner, [f - starts[o] for f, o in enumerate(owner)]


class DeterministicLifter(LiftingDiffusion):
    """The regression baseline: the same network, called with a zero state at t = 0, trained by MSE.

    Same data, representation, checkpoints and commands as :class:`LiftingDiffusion`; it gives
    one hypothesis, the network's estimate of the mean pose.

    Args:
        denoiser, bone_space, ema_decay, ema_start, val_sample_batches, optimizer, lr_scheduler,
        lr_scheduler_interval, data_info: as in :class:`LiftingDiffusion`.
    """

    deterministic = True

    def __init__(
        self,
        denoiser: LiftingTransformer,
        bone_space: bool = False,
        ema_decay: float = 0.999,
        ema_start: int = 0,
        val_sample_batches: int = 1,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        data_info: dict[str, Any] | None = None,
    ):
        super().__init__(denoiser, bone_space=bone_space, ema_decay=ema_decay, ema_start=ema_start, hypotheses=1,
                         aggregate="mean", val_sample_batches=val_sample_batches, optimizer=optimizer,
                         lr_scheduler=lr_scheduler, lr_scheduler_interval=lr_scheduler_interval, data_info=data_info)

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
        """The regression's estimate (no sampling: ``sampler``, ``steps`` and noise are ignored)."""
        shape = tuple(shape_or_x.shape) if isinstance(shape_or_x, Tensor) else tuple(shape_or_x)
        was_training = self.training
        self.eval()
        try:
            return self._regress(self.sampling_denoiser(use_ema), cond, shape)
        finally:
            self.train(was_training)


# --- aggregation --------------------------------------------------------------------------------
def estimate_translation(pose: Tensor, keypoints: Tensor, confidence: Tensor | None = None) -> Tensor:
    """The camera-coordinate position of the pelvis that best explains the 2D keypoints.

    With the root-relative pose ``P`` and normalised keypoints ``(u, v)``, the projection of
    ``P_j + tau`` is ``(u_j, v_j)`` when ``tau_x - u_j tau_z = u_j Z_j - X_j`` and
    ``tau_y - v_j tau_z = v_j Z_j - Y_j``; ``tau`` solves these 2J equations by least squares,
    each joint weighted by its confidence (missing joints drop out).

    Shapes:
        pose: (..., J, 3); keypoints: (..., J, 2); confidence: (..., J) -> (..., 3)
    """
    pose, keypoints = pose.double(), keypoints.double().expand(*pose.shape[:-1], 2)
    weight = (torch.ones(pose.shape[:-1], dtype=torch.float64) if confidence is None
              else confidence.double().expand(pose.shape[:-1])).to(pose.device)
    u, v = keypoints[..., 0], keypoints[..., 1]
    zero, one = torch.zeros_like(u), torch.ones_like(u)
    rows = torch.cat((torch.stack((one, zero, -u), -1), torch.stack((zero, one, -v), -1)), dim=-2)
    rhs = torch.cat((u * pose[..., 2] - pose[..., 0], v * pose[..., 2] - pose[..., 1]), dim=-1)
    w = torch.cat((weight, weight), dim=-1)
    a = rows.transpose(-1, -2) @ (rows * w[..., None])
    b = (rows * (w * rhs)[..., None]).sum(-2)
    # A tiny ridge keeps frames without (enough) confident joints solvable; they get a pose 1 m
    # ahead of the camera instead of a singular system.
    ridge = 1e-9 * torch.eye(3, dtype=torch.float64, device=pose.device)
    prior = torch.tensor([0.0, 0.0, 1e-9], dtype=torch.float64, device=pose.device)
    return torch.linalg.solve(a + ridge, b + prior).float()


def aggregate_hypotheses(hypotheses: Tensor, keypoints: Tensor, confidence: Tensor | None = None,
                         method: Aggregate = "mean") -> tuple[Tensor, Tensor]:
    """One pose per frame from several hypotheses, and its estimated pelvis position.

    ``mean``: the joint-wise mean. ``reprojection`` (D3DP's JPMA): each hypothesis is placed by
    :func:`estimate_translation`, and each joint of each frame is taken from the hypothesis whose
    reprojection of that joint is closest to the keypoint; joints with zero confidence take the
    mean. ``pose``: each frame takes the whole pose of the hypothesis whose placed reprojection
    is closest to the keypoints (confidence-weighted mean error over joints), so the chosen
    joints always belong together. The pelvis position returned is
    :func:`estimate_translation` of the result.

    Shapes:
        hypotheses: (H, T, J, 3) root-relative; keypoints: (T, J, 2); confidence: (T, J);
        returns pose (T, J, 3) and translation (T, 3).

    Raises:
        ValueError: unknown method.
    """
    if method not in _AGGREGATES:
        raise ValueError(f"unknown aggregate {method!r}; valid: {', '.join(_AGGREGATES)}")
    hypotheses = hypotheses.float()
    keypoints = keypoints.float().to(hypotheses.device)
    confidence = (torch.ones(keypoints.shape[:-1]) if confidence is None else confidence.float()).to(hypotheses.device)
    mean = hypotheses.mean(dim=0)
    if method == "mean" or len(hypotheses) == 1:
        pose = mean
    else:
        translation = estimate_translation(hypotheses, keypoints, confidence)  # (H, T, 3)
        placed = hypotheses + translation[..., None, :]
        depth = placed[..., 2:3].clamp_min(1e-6)
        error = torch.linalg.vector_norm(placed[..., :2] / depth - keypoints, dim=-1)  # (H, T, J)
        if method == "pose":
            frame_error = (error * confidence).sum(-1) / confidence.sum(-1).clamp_min(1e-12)  # (H, T)
            best = frame_error.argmin(dim=0)  # (T,)
            pose = hypotheses[best, torch.arange(hypotheses.shape[1], device=hypotheses.device)]
        else:
            best = error.argmin(dim=0)
            pose = torch.gather(hypotheses, 0, best[None, ..., None].expand(1, *best.shape, 3))[0]
            pose = torch.where((confidence > 0)[..., None], pose, mean)
    return pose, estimate_translation(pose, keypoints, confidence)


# --- evaluation ---------------------------------------------------------------------------------
def evaluate_lifter(
    model: LiftingDiffusion,
    data: LiftingDataModule | Sequence[Mapping[str, Any]],
    *,
    hypotheses: int = 5,
    aggregates: Sequence[str] = _AGGREGATES,
    split: str = "test",
    steps: int | None = None,
    seed: int = 0,
    limit: int | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """MPJPE and P-MPJPE (millimetres) of a lifter's aggregated poses, and its best-hypothesis MPJPE.

    Args:
        model: a lifter, in eval mode.
        data: a :class:`LiftingDataModule` (its fixed-camera windows of ``split``) or records,
            mappings with ``keypoints`` (T, 22, 2), optional ``confidence`` (T, 22) and
            ``target`` (T, 22, 3) camera-coordinate positions (lifted by sliding windows).
        hypotheses: hypotheses per window (1 for a deterministic lifter).
        aggregates: the aggregations to score (``mean``, ``reprojection``).
        split: the data module's split.
        steps: sampling steps (default: the model's).
        seed: the seed of the sampling noise.
        limit: score at most this many windows (or records).
        batch_size: windows lifted together.

    Returns:
        ``frames``, ``hypotheses``, for each aggregation ``<name>_mpjpe_mm`` and
        ``<name>_p_mpjpe_mm`` (root-relative MPJPE, and after Procrustes alignment per frame),
        ``best_mpjpe_mm`` (per frame the closest hypothesis, :func:`~polydiff_motion.metrics.multi_hypothesis_mpjpe`
        ``"best"``) and ``hypothesis_mpjpe_mm`` (the expected error of one hypothesis).
    """
    from .metrics import mpjpe, multi_hypothesis_mpjpe, p_mpjpe

    for name in aggregates:
        if name not in _AGGREGATES:
            raise ValueError(f"unknown aggregate {name!r}; valid: {', '.join(_AGGREGATES)}")
    generator = torch.Generator().manual_seed(int(seed))
    model = model.eval()
    hyps, kps, confs, targets = [], [], [], []
    if isinstance(data, LiftingDataModule):
        dataset = data.dataset(split)
        count = len(dataset) if limit is None else min(int(limit), len(dataset))
        for first in range(0, count, batch_size):
            items = [dataset[i] for i in range(first, min(first + batch_size, count))]
            kp = torch.stack([it["keypoints"] for it in items])
            cf = torch.stack([it["confidence"] for it in items])
            out = model.lift_windows(kp, cf, hypotheses=hypotheses, steps=steps, generator=generator).cpu()
            hyps.append(out.flatten(1, 2))
            kps.append(kp.flatten(0, 1))
            confs.append(cf.flatten(0, 1))
            targets.append(torch.stack([it["target"] for it in items]).flatten(0, 1))
    else:
        records = list(data)[:limit] if limit is not None else list(data)
        for record in records:
            kp = torch.as_tensor(np.asarray(record["keypoints"]), dtype=torch.float32)
            cf = record.get("confidence")
            cf = torch.ones(kp.shape[:2]) if cf is None else torch.as_tensor(np.asarray(cf), dtype=torch.float32)
            hyps.append(model.lift(kp, cf, hypotheses=hypotheses, steps=steps, generator=generator))
            kps.append(kp)
            confs.append(cf)
            targets.append(torch.as_tensor(np.asarray(record["target"]), dtype=torch.float32))
    if not hyps:
        raise ValueError("nothing to evaluate: no windows or records")
    all_hyps, kp, cf = torch.cat(hyps, dim=1), torch.cat(kps), torch.cat(confs)
    target = torch.cat(targets)
    target = (target - target[:, :1]).numpy()
    result: dict[str, float] = {"frames": int(len(target)), "hypotheses": int(all_hyps.shape[0])}
    for name in aggregates:
        pose, _ = aggregate_hypotheses(all_hyps, kp, cf, name)  # type: ignore[arg-type]
        result[f"{name}_mpjpe_mm"] = 1000.0 * mpjpe(pose.numpy(), target)
        result[f"{name}_p_mpjpe_mm"] = 1000.0 * p_mpjpe(pose.numpy(), target)
    result["best_mpjpe_mm"] = 1000.0 * multi_hypothesis_mpjpe(all_hyps.numpy(), target, "best")
    result["hypothesis_mpjpe_mm"] = 1000.0 * multi_hypothesis_mpjpe(all_hyps.numpy(), target, "mean")
    return result


# --- the command --------------------------------------------------------------------------------
def _warn(message: str) -> None:
    print(f"polydiff motion: warning: {message}", file=sys.stderr)


def load_lifter(path: str | Path, device: str = "cpu") -> LiftingDiffusion:
    """A trained lifter (diffusion or deterministic) with its data description, in eval mode.

    Raises:
        polydiff.checkpoint.CheckpointError: not a lifting checkpoint of this plugin (a
            text-to-motion checkpoint is named as such).
    """
    from polydiff.checkpoint import CheckpointError, load_checkpoint, load_module

    checkpoint = load_checkpoint(path, plugin="motion")
    if not isinstance(checkpoint.get("lifting"), dict):
        kind = "a text-to-motion checkpoint" if isinstance(checkpoint.get("motion"), dict) else "not a lifting checkpoint"
        raise CheckpointError(f"{path} is {kind}, not a 2D-to-3D lifter (train one with 'polydiff motion fit -c lift')")
    del checkpoint
    model = load_module(path, plugin="motion", expect=LiftingDiffusion, require=("lifting",))
    return model.to(device).eval()


def _read_track(path: Path, focal: Sequence[float] | None, center: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (T, 22, 2) in normalised camera coordinates, SMPL order, and confidences (T, 22)."""
    from .formats import read_keypoints_2d

    track = read_keypoints_2d(path)
    keypoints, joints = track.keypoints.astype(np.float64), track.keypoints.shape[1]
    confidence = np.ones(keypoints.shape[:2]) if track.confidence is None else track.confidence.astype(np.float64)
    if joints != NUM_JOINTS:
        raise MotionDataError(f"{path}: {joints} joints, but a lifter takes the {NUM_JOINTS} SMPL joints "
                              f"({', '.join(SMPL22_NAMES)})")
    if track.joint_names is not None:
        try:
            order = check_joint_names(track.joint_names, str(path))
        except ValueError as error:
            raise MotionDataError(str(error)) from None
        keypoints[:, list(order)] = keypoints.copy()
        confidence[:, list(order)] = confidence.copy()
    if focal is not None:
        fx, fy = (focal[0], focal[0]) if len(focal) == 1 else focal[:2]
        keypoints = (keypoints - np.asarray(center, np.float64)) / np.array([fx, fy])
    present = confidence > 0
    if not present.any():
        raise MotionDataError(f"{path}: no joint has a non-zero confidence in any frame")
    largest = float(np.abs(keypoints[present]).max())
    if focal is None and largest > 10:
        raise MotionDataError(f"{path}: keypoints up to {largest:.4g} look like pixels; lift reads normalised camera "
                              "coordinates (x/z, y/z) unless --focal and --center give the camera's intrinsics")
    keypoints[~present] = 0.0
    return keypoints.astype(np.float32), confidence.astype(np.float32)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write through a temporary file in the same folder, so a failed write leaves nothing half-done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".npz", dir=path.parent)
    os.close(handle)
    try:
        np.savez(temporary, **arrays)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def lift_command(argv: Sequence[str]) -> int:
    """``polydiff motion lift --ckpt L.ckpt --keypoints clip.npz --hypotheses 5 -o clip3d.npz``.

    Reads each keypoint file (:func:`~polydiff_motion.formats.read_keypoints_2d`; 22 SMPL joints,
    reordered by ``joint_names`` when the file has them), lifts it, and writes an ``.npz`` with
    ``hypotheses`` (H, T, 22, 3), the aggregated ``pose`` (T, 22, 3) (root-relative camera
    coordinates, metres), ``translation`` (T, 3) (its estimated pelvis position), ``aggregate``
    and ``joint_names``. Zero-confidence joints are given to the model as missing; frames
    with no confident joint are lifted from the surrounding frames, with a warning.

    Exit status: 0 success; 1 the checkpoint or a keypoint file could not be used, or an output
    exists (named; the other files are still lifted); 2 a usage error.
    """
    parser = argparse.ArgumentParser(
        prog="polydiff motion lift",
        description="Lift 2D keypoint tracks of the 22 SMPL joints to 3D poses with a trained lifter. Keypoints are "
                    "normalised camera coordinates (x/z, y/z) unless --focal and --center convert pixels.",
    )
    parser.add_argument("--ckpt", type=Path, required=True, help="a checkpoint of 'polydiff motion fit -c lift'")
    parser.add_argument("--keypoints", type=Path, nargs="+", required=True, help="2D keypoint .npz file(s)")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="output .npz for one input; a folder (one <name>.npz per input) for several")
    parser.add_argument("--hypotheses", type=int, default=None, help="hypotheses to draw (default: the model's)")
    parser.add_argument("--aggregate", choices=_AGGREGATES, default=None,
                        help="how hypotheses become one pose (default: the model's)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--focal", type=float, nargs="+", default=None, metavar="F",
                        help="focal length in pixels (fx, or fx fy) of pixel keypoints")
    parser.add_argument("--center", type=float, nargs=2, default=None, metavar=("CX", "CY"),
                        help="principal point in pixels of pixel keypoints")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    try:
        opts = parser.parse_args(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    if opts.hypotheses is not None and opts.hypotheses < 1:
        _fail("--hypotheses must be at least 1")
        return 2
    if opts.steps is not None and opts.steps < 1:
        _fail("--steps must be at least 1")
        return 2
    if (opts.focal is None) != (opts.center is None) or (opts.focal is not None and
                                                          (len(opts.focal) > 2 or min(opts.focal) <= 0)):
        _fail("pixel keypoints need both --focal (one or two positive values) and --center")
        return 2
    single = len(opts.keypoints) == 1
    if single:
        outputs = [opts.output]
    else:
        stems = [p.stem for p in opts.keypoints]
        repeated = sorted({s for s in stems if stems.count(s) > 1})
        if repeated:
            _fail(f"several inputs are named {', '.join(repeated)}; their outputs would collide in {opts.output}")
            return 2
        if opts.output.exists() and not opts.output.is_dir():
            _fail(f"{opts.output} is a file; with several inputs -o names a folder")
            return 2
        outputs = [opts.output / f"{s}.npz" for s in stems]

    from polydiff.checkpoint import CheckpointError

    failed = 0
    todo = []
    for source, target in zip(opts.keypoints, outputs):
        if target.exists() and not opts.overwrite:
            _fail(f"{target} exists; pass --overwrite to replace it (input {source} not lifted)")
            failed += 1
        elif target.is_dir():
            _fail(f"{target} is a folder, not an output file")
            failed += 1
        else:
            todo.append((source, target))
    if not todo:
        return 1
    try:
        model = load_lifter(opts.ckpt, opts.device)
    except CheckpointError as error:
        _fail(str(error))
        return 1
    method = opts.aggregate or model.aggregate
    for source, target in todo:
        try:
            keypoints, confidence = _read_track(source, opts.focal, opts.center)
        except MotionDataError as error:
            _fail(str(error))
            failed += 1
            continue
        empty = int((confidence.max(axis=1) == 0).sum())
        if empty:
            _warn(f"{source}: {empty} of {len(confidence)} frame(s) have no confident joint; their poses come from "
                  "the surrounding frames only")
        generator = torch.Generator(device=model.device).manual_seed(opts.seed)
        try:
            hyps = model.lift(keypoints, confidence, hypotheses=opts.hypotheses, steps=opts.steps, generator=generator)
            pose, translation = aggregate_hypotheses(hyps, torch.from_numpy(keypoints), torch.from_numpy(confidence),
                                                     method)
            _save_npz(target, {"hypotheses": hyps.numpy().astype(np.float32), "pose": pose.numpy().astype(np.float32),
                               "translation": translation.numpy().astype(np.float32),
                               "aggregate": np.array(method), "joint_names": np.array(SMPL22_NAMES)})
        except (OSError, ValueError, RuntimeError) as error:
            _fail(f"{source}: {error}")
            failed += 1
            continue
        print(f"{target}: {hyps.shape[1]} frames, {hyps.shape[0]} hypotheses, {method} aggregate")
    return 1 if failed else 0
