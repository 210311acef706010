"""Windows of demonstrations for visuomotor policy learning, their normalisers and the DataModule.

Following Diffusion Policy (Chi et al. 2023), a training item is a window of ``horizon``
consecutive frames of one episode: the first ``obs_horizon`` frames are the observations the
policy conditions on and all ``horizon`` actions are what it predicts; at run time the
``action_horizon`` actions from the current (last observed) frame on are executed. Windows may
run past an episode's borders, padded with its first frame before the start (up to
``obs_horizon - 1`` frames) and its last frame after the end (up to ``action_horizon - 1``), so
that the first frame is an observation and the last action is executed.

Low-dimensional features (``agent_pos``, ``environment_state``, ``block_pose``) are concatenated
in the order given and, like the actions, scaled per dimension from the training episodes'
range to [-1, 1]. Images are given as float32 in [0, 1], channels first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from .episodes import Episode
from .formats import FEATURES, DatasetError, check_episodes, read_dataset

__all__ = ["Normalizer", "PolicyWindows", "PolicyDataModule", "concat_features", "images_to_tensor", "window_frames",
           "window_starts", "ENV_ID", "RANGE_EPS"]

ENV_ID = "gym_pusht/PushT-v0"
#: A dimension whose training range is narrower than this is only shifted, not scaled (as in
#: Diffusion Policy's normaliser), so a constant feature does not blow up.
RANGE_EPS = 1e-4
_LOW_DIM = tuple(f for f in FEATURES if f != "image")


# --- features -----------------------------------------------------------------------------------
def concat_features(observations: Mapping[str, Any], features: Sequence[str]) -> np.ndarray:
    """The low-dimensional features of one frame or of many, side by side as float32.

    Args:
        observations: feature name -> array; a frame's values (D_f,) or frames' (T, D_f).
        features: the names, in order.

    Returns:
        (..., sum of D_f) float32; with no features, (..., 0) for the frames' leading shape.

    Raises:
        KeyError: a feature is missing.
    """
    parts = []
    for name in features:
        if name not in observations:
            raise KeyError(f"no observation feature {name!r} (have: {', '.join(observations) or 'none'})")
        parts.append(np.asarray(observations[name], dtype=np.float32))
    if not parts:
        return np.zeros((0,), dtype=np.float32)
    return np.concatenate(parts, axis=-1)


def images_to_tensor(images: Any) -> torch.Tensor:
    """uint8 images channels-last as float32 in [0, 1], channels first.

    Shapes:
        images: (..., H, W, C) uint8 -> (..., C, H, W) float32
    """
    if isinstance(images, torch.Tensor):
        return images.movedim(-1, -3).to(torch.float32).div(255.0)
    images = np.asarray(images)
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(images, -1, -3), dtype=np.float32) / np.float32(255.0))


# --- normaliser ---------------------------------------------------------------------------------
class Normalizer:
    """Per-dimension min-max scaling to [-1, 1], Diffusion Policy's ``limits`` normaliser.

    ``normalize(x) = x * scale + offset`` with ``scale = 2 / (max - min)`` and
    ``offset = -1 - min * scale``; a dimension whose range is below :data:`RANGE_EPS` keeps
    ``scale = 1`` and is shifted so that its minimum maps to 0.

    Args:
        low: the per-dimension minimum.
        high: the per-dimension maximum.

    Shapes:
        low, high: (D,); data: (..., D).
    """

    def __init__(self, low: Sequence[float], high: Sequence[float]):
        low_a = np.asarray(low, dtype=np.float64).reshape(-1)
        high_a = np.asarray(high, dtype=np.float64).reshape(-1)
        if low_a.shape != high_a.shape:
            raise ValueError(f"low and high differ in size ({low_a.size} and {high_a.size})")
        if not (np.isfinite(low_a).all() and np.isfinite(high_a).all()):
            raise ValueError("a normaliser's limits must be finite")
        if (high_a < low_a).any():
            d = int(np.flatnonzero(high_a < low_a)[0])
            raise ValueError(f"dimension {d}: max {high_a[d]} is below min {low_a[d]}")
        self.low, self.high = low_a, high_a
        span = high_a - low_a
        flat = span < RANGE_EPS
        self.scale = np.where(flat, 1.0, 2.0 / np.where(flat, 1.0, span))
        self.offset = np.where(flat, -low_a, -1.0 - low_a * self.scale)

    @classmethod
    def fit(cls, values: Any) -> Normalizer:
        """The normaliser of ``values`` (..., D), over every leading position."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 0:
            raise ValueError("cannot fit a normaliser to a scalar")
        flat = values.reshape(int(np.prod(values.shape[:-1])), values.shape[-1])
        if len(flat) == 0:
            raise ValueError("cannot fit a normaliser to no values")
        if not np.isfinite(flat).all():
            raise ValueError("cannot fit a normaliser to NaN or infinite values")
        return cls(flat.min(0), flat.max(0))

    @property
    def dim(self) -> int:
        return int(self.low.size)

    def _params(self, x: Any) -> tuple[Any, Any]:
        if isinstance(x, torch.Tensor):
            dtype = x.dtype if x.is_floating_point() else torch.float32
            return (torch.as_tensor(self.scale, dtype=dtype, device=x.device),
                    torch.as_tensor(self.offset, dtype=dtype, device=x.device))
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
        return self.scale.astype(dtype), self.offset.astype(dtype)

    def normalize(self, x: Any) -> Any:
        """Data (..., D), numpy or torch, to the normalised range (same kind, float)."""
        x = x if isinstance(x, torch.Tensor) else np.asarray(x)
        self._check(x)
        scale, offset = self._params(x)
        return x * scale + offset

    def unnormalize(self, y: Any) -> Any:
        """Normalised values (..., D), numpy or torch, back to data units."""
        y = y if isinstance(y, torch.Tensor) else np.asarray(y)
        self._check(y)
        scale, offset = self._params(y)
        return (y - offset) / scale

    def _check(self, x: Any) -> None:
        if x.shape[-1:] != (self.dim,):
            raise ValueError(f"expected a last dimension of {self.dim}, got shape {tuple(x.shape)}")

    def state_dict(self) -> dict[str, list[float]]:
        """Plain lists (``min``, ``max``, and the derived ``scale`` and ``offset``) for checkpoints."""
        return {"min": self.low.tolist(), "max": self.high.tolist(), "scale": self.scale.tolist(),
                "offset": self.offset.tolist()}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Sequence[float]]) -> Normalizer:
        return cls(state["min"], state["max"])

    def __repr__(self) -> str:
        return f"Normalizer(dim={self.dim})"


# --- windows ------------------------------------------------------------------------------------
def window_frames(start: int, length: int, horizon: int) -> np.ndarray:
    """The episode frames a window starting at ``start`` (may be negative) reads: ``start``,
    ..., ``start + horizon - 1``, clamped to the episode ``[0, length - 1]`` (border padding)."""
    return np.clip(np.arange(start, start + horizon), 0, length - 1)


def window_starts(length: int, obs_horizon: int, horizon: int, action_horizon: int) -> range:
    """The first frames of an episode's windows (Diffusion Policy's padded sampling).

    From ``-(obs_horizon - 1)`` (the episode's first frame is the last observed one) to
    ``length - horizon + action_horizon - 1`` (the window ends ``action_horizon - 1`` frames
    after the episode's last frame). An episode too short for that range (fewer than
    ``horizon - action_horizon - obs_horizon + 2`` frames) still gives its first window.
    """
    first = -(obs_horizon - 1)
    last = max(length - horizon + action_horizon - 1, first)
    return range(first, last + 1)


class PolicyWindows(torch.utils.data.Dataset):
    """Every padded window of ``horizon`` frames of some episodes, normalised.

    Args:
        episodes: the episodes, each at least ``obs_horizon`` frames long.
        obs_features: low-dimensional observation features, concatenated in this order.
        image_feature: the image observation (``None``: no images).
        obs_horizon: observed frames per window (the first frames).
        horizon: frames (actions) per window.
        action_horizon: actions executed per prediction; windows end up to
            ``action_horizon - 1`` frames after an episode.
        obs_normalizer, action_normalizer: the normalisers (default: fitted to these episodes).
        source: the dataset named in error messages.

    Items are dicts of tensors: ``obs`` (obs_horizon, obs_dim) float32 normalised, ``action``
    (horizon, A) float32 normalised, and with an image feature ``image`` (obs_horizon, 3, H, W)
    float32 in [0, 1].

    Raises:
        DatasetError: an episode is shorter than ``obs_horizon``, a feature is missing, or the
            episodes are inconsistent (see :func:`~polydiff_policy.formats.check_episodes`).
        ValueError: the horizons do not fit together.
    """

    def __init__(
        self,
        episodes: Sequence[Episode],
        *,
        obs_features: Sequence[str] = ("agent_pos", "environment_state"),
        image_feature: str | None = None,
        obs_horizon: int = 2,
        horizon: int = 16,
        action_horizon: int = 8,
        obs_normalizer: Normalizer | None = None,
        action_normalizer: Normalizer | None = None,
        source: str | Path = "<episodes>",
    ):
        _check_horizons(obs_horizon, horizon, action_horizon)
        self.obs_features, self.image_feature = list(obs_features), image_feature
        self.obs_horizon, self.horizon, self.action_horizon = int(obs_horizon), int(horizon), int(action_horizon)
        check_episodes(episodes, source)
        wanted = [*self.obs_features, *([image_feature] if image_feature else [])]
        for name in wanted:
            if name not in episodes[0].observations:
                raise DatasetError(f"{source}: the episodes have no observation {name!r} "
                                   f"(they have: {', '.join(episodes[0].observations) or 'none'})")
        for e, ep in enumerate(episodes):
            if len(ep) < self.obs_horizon:
                raise DatasetError(f"{source}: episode {e} has {len(ep)} frames, fewer than the observation horizon "
                                   f"{self.obs_horizon}")
        lengths = np.array([len(ep) for ep in episodes], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.lengths = lengths
        obs = np.concatenate([concat_features(ep.observations, self.obs_features).reshape(len(ep), -1)
                              if self.obs_features else np.zeros((len(ep), 0)) for ep in episodes]).astype(np.float32)
        actions = np.concatenate([np.asarray(ep.actions, dtype=np.float32) for ep in episodes])
        self.obs_normalizer = obs_normalizer or Normalizer.fit(obs)
        self.action_normalizer = action_normalizer or Normalizer.fit(actions)
        if self.obs_normalizer.dim != obs.shape[1]:
            raise ValueError(f"the observation normaliser has {self.obs_normalizer.dim} dimensions, the features "
                             f"{self.obs_features} have {obs.shape[1]}")
        if self.action_normalizer.dim != actions.shape[1]:
            raise ValueError(f"the action normaliser has {self.action_normalizer.dim} dimensions, the actions "
                             f"have {actions.shape[1]}")
        # Scaled in float64 so that the range's ends land exactly on -1 and 1; kept as numpy, where
        # indexing a few rows per item is much cheaper than with small torch ops.
        self.obs = self.obs_normalizer.normalize(obs.astype(np.float64)).astype(np.float32)
        self.actions = self.action_normalizer.normalize(actions.astype(np.float64)).astype(np.float32)
        self.images: np.ndarray | None = None
        if image_feature:
            images = np.concatenate([np.asarray(ep.observations[image_feature]) for ep in episodes])
            if images.dtype != np.uint8 or images.ndim != 4:
                raise DatasetError(f"{source}: observation {image_feature!r} must be uint8 frames (T, H, W, C), got "
                                   f"{images.dtype} {images.shape[1:]}")
            self.images = np.ascontiguousarray(images)
        rows = [(e, s) for e, n in enumerate(lengths.tolist())
                for s in window_starts(n, self.obs_horizon, self.horizon, self.action_horizon)]
        #: (episode, first frame) of every window; the first frame may be negative.
        self.windows = np.array(rows, dtype=np.int64).reshape(-1, 2)

    @property
    def obs_dim(self) -> int:
        return int(self.obs.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    def __len__(self) -> int:
        return len(self.windows)

    def frames(self, i: int) -> np.ndarray:
        """The episode frames window ``i`` reads (with the border padding)."""
        e, start = self.windows[i]
        return window_frames(int(start), int(self.lengths[e]), self.horizon)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        e = int(self.windows[i, 0])
        rows = self.frames(i) + self.offsets[e]
        item = {"obs": torch.from_numpy(self.obs[rows[:self.obs_horizon]]),
                "action": torch.from_numpy(self.actions[rows])}
        if self.images is not None:
            item["image"] = images_to_tensor(self.images[rows[:self.obs_horizon]])
        return item


def _check_horizons(obs_horizon: int, horizon: int, action_horizon: int) -> None:
    if obs_horizon < 1:
        raise ValueError(f"obs_horizon must be at least 1, got {obs_horizon}")
    if action_horizon < 1:
        raise ValueError(f"action_horizon must be at least 1, got {action_horizon}")
    if obs_horizon - 1 + action_horizon > horizon:
        raise ValueError(f"the executed actions must fit in the window: obs_horizon - 1 + action_horizon = "
                         f"{obs_horizon - 1 + action_horizon} exceeds horizon {horizon}")


# --- data module --------------------------------------------------------------------------------
class PolicyDataModule(pl.LightningDataModule):
    """Demonstrations from a LeRobot dataset or zarr replay buffer, as padded windows.

    Whole episodes are held out for validation, chosen by a shuffle seeded with ``seed``; the
    normalisers are fitted on the training episodes. Batches are dicts: ``obs`` (B, obs_horizon,
    obs_dim) and ``action`` (B, horizon, A), both normalised to [-1, 1] on the training range,
    and with an image feature ``image`` (B, obs_horizon, 3, H, W) in [0, 1].

    Args:
        path: the dataset (see :func:`~polydiff_policy.formats.read_dataset`).
        obs_features: low-dimensional observation features, concatenated in this order.
        image_feature: the image observation (``None``: none).
        obs_horizon: observed frames per window.
        horizon: predicted actions per window.
        action_horizon: actions executed per prediction (bounds the padding after an episode).
        batch_size: windows per batch.
        val_episodes: held-out episodes, a fraction below 1 or a count from 1 on; at least one
            when the dataset has two or more episodes (unless 0), and never all.
        num_workers: DataLoader workers.
        seed: the seed of the validation split.
    """

    def __init__(
        self,
        path: str,
        obs_features: Sequence[str] = ("agent_pos", "environment_state"),
        image_feature: str | None = None,
        obs_horizon: int = 2,
        horizon: int = 16,
        action_horizon: int = 8,
        batch_size: int = 256,
        val_episodes: float = 0.05,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        obs_features = list(obs_features)
        unknown = [f for f in [*obs_features, image_feature] if f is not None and f not in FEATURES]
        if unknown:
            raise ValueError(f"unknown feature {unknown[0]!r}; the features are {', '.join(FEATURES)}")
        wrong = [f for f in obs_features if f not in _LOW_DIM]
        if wrong:
            raise ValueError(f"obs_features takes low-dimensional features ({', '.join(_LOW_DIM)}), not {wrong[0]!r}; "
                             "give images as image_feature")
        if image_feature is not None and image_feature in _LOW_DIM:
            raise ValueError(f"image_feature must be an image feature, not {image_feature!r}")
        if len(set(obs_features)) != len(obs_features):
            raise ValueError(f"obs_features repeats a feature: {obs_features}")
        if not obs_features and image_feature is None:
            raise ValueError("give at least one observation feature or an image feature")
        _check_horizons(obs_horizon, horizon, action_horizon)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if val_episodes < 0 or (val_episodes >= 1 and val_episodes != int(val_episodes)):
            raise ValueError(f"val_episodes must be a fraction in [0, 1) or a whole count, got {val_episodes}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be non-negative, got {num_workers}")
        self.path, self.obs_features, self.image_feature = str(path), obs_features, image_feature
        self.obs_horizon, self.horizon, self.action_horizon = int(obs_horizon), int(horizon), int(action_horizon)
        self.batch_size, self.val_episodes = int(batch_size), float(val_episodes)
        self.num_workers, self.seed = int(num_workers), int(seed)
        self.datasets: dict[str, PolicyWindows] = {}
        self.split: dict[str, list[int]] = {}
        self.fps: float | None = None
        self.format: str | None = None

    def n_val(self, n_episodes: int) -> int:
        """How many of ``n_episodes`` are held out."""
        if self.val_episodes == 0 or n_episodes < 2:
            return 0
        n = round(self.val_episodes * n_episodes) if self.val_episodes < 1 else int(self.val_episodes)
        return min(max(n, 1), n_episodes - 1)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        features = [*self.obs_features, *([self.image_feature] if self.image_feature else [])]
        dataset = read_dataset(self.path, features=features)
        episodes = dataset.episodes
        for e, ep in enumerate(episodes):
            if len(ep) < self.obs_horizon:
                raise DatasetError(f"{self.path}: episode {e} has {len(ep)} frames, fewer than the observation "
                                   f"horizon {self.obs_horizon}")
        order = np.random.default_rng(self.seed).permutation(len(episodes))
        n_val = self.n_val(len(episodes))
        self.split = {"train": sorted(order[n_val:].tolist()), "val": sorted(order[:n_val].tolist())}
        options = dict(obs_features=self.obs_features, image_feature=self.image_feature, obs_horizon=self.obs_horizon,
                       horizon=self.horizon, action_horizon=self.action_horizon, source=self.path)
        train = PolicyWindows([episodes[i] for i in self.split["train"]], **options)
        self.datasets["train"] = train
        if n_val:
            self.datasets["val"] = PolicyWindows([episodes[i] for i in self.split["val"]], **options,
                                                 obs_normalizer=train.obs_normalizer,
                                                 action_normalizer=train.action_normalizer)
        self.fps, self.format = dataset.fps, dataset.format
        first = episodes[0].observations
        self._obs_dims = [int(np.asarray(first[f]).reshape(len(episodes[0]), -1).shape[1]) for f in self.obs_features]
        self._image_shape = None
        if self.image_feature is not None:
            _, height, width, channels = np.asarray(first[self.image_feature]).shape
            self._image_shape = [int(channels), int(height), int(width)]

    def info(self) -> dict[str, Any]:
        """Plain data a policy keeps in its checkpoint to observe and act like this data."""
        self.setup()
        train = self.datasets["train"]
        return {
            "env": ENV_ID,
            "obs_features": list(self.obs_features),
            "obs_dims": list(self._obs_dims),
            "image_feature": self.image_feature,
            "image_shape": self._image_shape,
            "action_dim": train.action_dim,
            "obs_horizon": self.obs_horizon,
            "horizon": self.horizon,
            "action_horizon": self.action_horizon,
            "fps": self.fps,
            "obs_normalizer": train.obs_normalizer.state_dict(),
            "action_normalizer": train.action_normalizer.state_dict(),
            "dataset": Path(self.path).name,
            "format": self.format,
        }

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader("train", True)

    def val_dataloader(self) -> Any:
        self.setup()
        # No held-out episodes: an empty list tells Lightning there is nothing to validate.
        return self._loader("val", False) if "val" in self.datasets else []
