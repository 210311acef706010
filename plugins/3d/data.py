"""Point clouds from a shape collection, for training: the data module and the stated protocol.

Protocol (PointFlow's, Yang et al. 2019, which PVD and LION follow):

* every shape is turned into a dense cloud once: ``cache_points`` (default 8,192) points drawn
  uniformly by area on a mesh's surface (PointFlow ships 15,000), or a point file's own points;
* each training example is a random subset of ``points`` (default 2,048) of them, drawn afresh
  every time the shape is seen;
* ``normalization: global`` (PointFlow's default for generation): one centre (the mean of all
  training points) and one scale (the standard deviation of all their coordinates, a single number
  over the three axes) for the whole training set, so relative sizes within a category survive;
  ``per_shape``: each cloud centred on its bounding box and scaled to radius 1 (useful when
  categories of very different sizes are trained together).
  The centre and scale are part of the data description and go into checkpoints, so generated
  clouds are written back in the data's own units.
* evaluation (:mod:`polydiff_3d.evaluation`) compares 2,048-point clouds with both sets scaled
  into the unit bounding box, as LION reports.

Collections (see :mod:`polydiff_3d.formats`): ``<root>/<category>/<shape>``,
``<root>/<category>/<split>/<shape>`` (ModelNet, and ShapeNetCore.v2.PC15k's ``.npy`` clouds),
or ``<root>/<split>/<category>/<shape>`` (the demo corpus). With splits on disk they are used;
otherwise shapes are split by a stable hash of their id. Files that cannot be used are skipped
with one warning naming them and the reason.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from .formats import ShapeError, ShapeFile, scan_collection, shape_points

__all__ = ["ShapeDataModule", "PointCloudSet", "Normalization", "split_of"]

Normalization = Literal["global", "per_shape"]


def split_of(shape_id: str, val_fraction: float, test_fraction: float) -> str:
    """A stable split for a shape without one on disk, from a hash of its id."""
    h = int(hashlib.sha1(shape_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if h < test_fraction:
        return "test"
    if h < test_fraction + val_fraction:
        return "val"
    return "train"


class PointCloudSet(Dataset):
    """Dense clouds (already normalised) and their class indices; items are random subsets.

    Shapes:
        clouds: (S, M, 3); items: ``{"x0": (points, 3), "cond": ()}``.
    """

    def __init__(self, clouds: np.ndarray, labels: np.ndarray, points: int, *, fixed: bool = False, seed: int = 0):
        self.clouds = torch.as_tensor(clouds, dtype=torch.float32)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.points = int(points)
        self.fixed = fixed
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.clouds)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        cloud = self.clouds[index]
        generator = torch.Generator().manual_seed(self.seed * 100_003 + index) if self.fixed else None
        pick = torch.randperm(len(cloud), generator=generator)[: self.points]
        return {"x0": cloud[pick], "cond": self.labels[index]}


class ShapeDataModule(pl.LightningDataModule):
    """Point clouds sampled from a mesh or point-cloud collection (module docstring's protocol).

    Args:
        root: the collection.
        categories: the categories to use (default: all); their order gives the class indices.
        points: points per training cloud.
        cache_points: points sampled once per shape, from which training clouds are drawn.
        normalization: ``global`` or ``per_shape`` (module docstring).
        batch_size: clouds per batch.
        val_fraction, test_fraction: split shares for collections without splits on disk.
        max_shapes: use at most this many training shapes per category (None: all).
        num_workers: data loader workers.
        seed: seed of the surface sampling and of the fixed validation subsets.
    """

    def __init__(
        self,
        root: str,
        categories: list[str] | None = None,
        points: int = 2048,
        cache_points: int = 8192,
        normalization: Normalization = "global",
        batch_size: int = 16,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        max_shapes: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        if normalization not in ("global", "per_shape"):
            raise ValueError(f"unknown normalization {normalization!r}; valid: global, per_shape")
        if points < 16 or cache_points < points:
            raise ValueError(f"need 16 <= points <= cache_points; got points={points}, cache_points={cache_points}")
        self.root = Path(root)
        self.categories = list(categories) if categories else None
        self.points = int(points)
        self.cache_points = int(cache_points)
        self.normalization = normalization
        self.batch_size = int(batch_size)
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.max_shapes = max_shapes
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.skipped: list[str] = []
        self._splits: dict[str, tuple[np.ndarray, np.ndarray, list[ShapeFile]]] | None = None
        self._info: dict[str, Any] | None = None

    # --- loading -------------------------------------------------------------------------------
    def _load(self) -> None:
        if self._splits is not None:
            return
        files = scan_collection(self.root, categories=self.categories)
        categories = self.categories or sorted({f.category for f in files})
        by_split: dict[str, list[ShapeFile]] = {"train": [], "val": [], "test": []}
        for f in files:
            split = f.split if f.split in by_split else split_of(f"{f.category}/{f.id}", self.val_fraction,
                                                                 self.test_fraction)
            by_split[split].append(f)
        if self.max_shapes is not None:
            kept = []
            for c in categories:
                kept += [f for f in by_split["train"] if f.category == c][: self.max_shapes]
            by_split["train"] = kept
        raw: dict[str, tuple[list[np.ndarray], list[int], list[ShapeFile]]] = {}
        for split, members in by_split.items():
            clouds, labels, used = [], [], []
            for k, f in enumerate(members):
                try:
                    cloud = shape_points(f.path, self.cache_points, seed=self.seed * 7919 + k)
                except ShapeError as error:
                    self.skipped.append(str(error))
                    continue
                clouds.append(cloud)
                labels.append(categories.index(f.category))
                used.append(f)
            raw[split] = (clouds, labels, used)
        if self.skipped:
            shown = "; ".join(self.skipped[:10])
            more = f" (and {len(self.skipped) - 10} more)" if len(self.skipped) > 10 else ""
            warnings.warn(f"skipped {len(self.skipped)} shape file(s): {shown}{more}", stacklevel=2)
        if not raw["train"][0]:
            raise ShapeError(f"{self.root}: no usable training shapes")
        train = np.stack(raw["train"][0])
        if self.normalization == "global":
            centre = train.reshape(-1, 3).mean(0)
            scale = float(train.reshape(-1, 3).std())
        else:
            centre, scale = np.zeros(3), 1.0
        self._info = {
            "categories": list(categories),
            "points": self.points,
            "normalization": self.normalization,
            "centre": [float(v) for v in centre],
            "scale": scale,
        }
        self._splits = {}
        for split, (clouds, labels, used) in raw.items():
            if not clouds:
                self._splits[split] = (np.zeros((0, self.cache_points, 3), np.float32), np.zeros(0, np.int64), [])
                continue
            arr = np.stack(clouds)
            self._splits[split] = (self.normalize(arr), np.asarray(labels, np.int64), used)

    def normalize(self, clouds: np.ndarray) -> np.ndarray:
        """Clouds in the data's units -> the network's (the protocol's normalisation)."""
        clouds = np.asarray(clouds, dtype=np.float64)
        if self.normalization == "per_shape":
            lo, hi = clouds.min(axis=-2, keepdims=True), clouds.max(axis=-2, keepdims=True)
            centred = clouds - (lo + hi) / 2
            radius = np.linalg.norm(centred, axis=-1).max(axis=-1)[..., None, None]
            return (centred / np.maximum(radius, 1e-12)).astype(np.float32)
        info = self.info()
        return ((clouds - np.asarray(info["centre"])) / info["scale"]).astype(np.float32)

    def info(self) -> dict[str, Any]:
        """The data description: categories, points, normalisation with its centre and scale."""
        if self._info is None:
            self._load()
        assert self._info is not None
        return self._info

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray, list[ShapeFile]]:
        """``(clouds (S, cache_points, 3) normalised, labels (S,), files)`` of a split."""
        self._load()
        assert self._splits is not None
        if name not in self._splits:
            raise ValueError(f"unknown split {name!r}; valid: train, val, test")
        return self._splits[name]

    # --- Lightning -----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self._load()

    def train_dataloader(self) -> DataLoader:
        clouds, labels, _ = self.split("train")
        return DataLoader(PointCloudSet(clouds, labels, self.points), batch_size=self.batch_size, shuffle=True,
                          drop_last=len(clouds) >= self.batch_size, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        clouds, labels, _ = self.split("val")
        if len(clouds) == 0:
            clouds, labels, _ = self.split("train")
            clouds, labels = clouds[: self.batch_size], labels[: self.batch_size]
        return DataLoader(PointCloudSet(clouds, labels, self.points, fixed=True, seed=self.seed),
                          batch_size=self.batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        clouds, labels, _ = self.split("test")
        return DataLoader(PointCloudSet(clouds, labels, self.points, fixed=True, seed=self.seed),
                          batch_size=self.batch_size, num_workers=self.num_workers)
