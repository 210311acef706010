"""Text-annotated motion clips from a HumanML3D folder, as padded batches, and the DataModule.

Following HumanML3D's ``Text2MotionDatasetV2`` (Guo et al. 2022), a training item is one
caption of a clip drawn at random and a random window of the frames it describes: at most
``max_frames`` frames, cut down to a multiple of 4 (HumanML3D's ``unit_length``; its extra coin
flip that sometimes drops one more unit is left out). Features are normalised with the
dataset's ``Mean.npy`` / ``Std.npy``; each caption is encoded once, by a sentence encoder from
:mod:`~polydiff_motion.text`, and cached in ``<root>/text_embeddings.npz``.

Randomness comes only from ``numpy.random.default_rng([seed, epoch, index])``, so an item is
the same in every run and every worker process; validation and test items always use epoch 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .features import FEATURE_DIM, FeatureStats
from .formats import HUMANML3D_FPS, MotionRecord, read_humanml3d, read_stats
from .text import EmbeddingCache, get_encoder

__all__ = ["MotionClips", "EpochSampler", "MotionDataModule", "collate_motion", "crop_length", "CACHE_NAME",
           "UNIT_LENGTH"]

#: Crops are a multiple of this many frames (HumanML3D's ``unit_length``).
UNIT_LENGTH = 4
#: The text-embedding cache, beside the data set's files.
CACHE_NAME = "text_embeddings.npz"


def crop_length(length: int, max_frames: int) -> int:
    """The frames a crop of a ``length``-frame segment keeps: at most ``max_frames``, a multiple of 4."""
    return min(length, max_frames) // UNIT_LENGTH * UNIT_LENGTH


class MotionClips(Dataset):
    """(caption, crop) items of some HumanML3D records, normalised.

    Args:
        records: the clips.
        stats: the normalisation statistics.
        embeddings: caption text -> (D,) float32 embedding; must hold every caption's text.
        max_frames: the longest crop.
        min_frames: captions of a sub-interval shorter than this are not used.
        seed: the seed of the crops and caption draws.

    Items are dicts: ``x0`` (L, 263) float32 normalised, ``length`` int, ``text`` (D,) float32,
    ``caption`` str, where L = :func:`crop_length`. An item is indexed by ``index`` (epoch 0) or
    by ``(epoch, index)``, as :class:`EpochSampler` yields them.

    Attributes:
        problems: ``(id, reason)`` of the records left out because no caption was usable.
        options: per kept record, its usable ``(caption text, first frame, end frame)``.
    """

    def __init__(self, records: Sequence[MotionRecord], stats: FeatureStats, embeddings: dict[str, np.ndarray], *,
                 max_frames: int = 196, min_frames: int = 40, seed: int = 0, fps: float = HUMANML3D_FPS):
        _check_frames(max_frames, min_frames)
        self.max_frames, self.min_frames, self.seed = int(max_frames), int(min_frames), int(seed)
        self.ids: list[str] = []
        self.features: list[np.ndarray] = []
        self.options: list[list[tuple[str, int, int]]] = []
        self.problems: list[tuple[str, str]] = []
        self.embeddings = embeddings
        for record in records:
            options = []
            for caption in record.captions:
                span = record.frames(caption, fps)
                # HumanML3D drops sub-interval captions too short to learn from, as it drops short clips.
                if span.stop - span.start >= max(self.min_frames, UNIT_LENGTH):
                    options.append((caption.text, span.start, span.stop))
            if not options:
                self.problems.append((record.id, f"no caption covers {self.min_frames} frames or more"))
                continue
            self.ids.append(record.id)
            self.features.append(stats.normalize(np.asarray(record.features, dtype=np.float32)).astype(np.float32))
            self.options.append(options)
        missing = {text for options in self.options for text, _, _ in options} - set(embeddings)
        if missing:
            raise KeyError(f"no embedding for {len(missing)} caption(s), e.g. {sorted(missing)[0]!r}")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = (0, key) if isinstance(key, (int, np.integer)) else key
        index = int(index)
        rng = np.random.default_rng([self.seed, int(epoch), index])
        text, first, end = self.options[index][int(rng.integers(len(self.options[index])))]
        length = crop_length(end - first, self.max_frames)
        start = first + int(rng.integers(end - first - length + 1))
        return {"x0": torch.from_numpy(self.features[index][start:start + length]),
                "length": length,
                "text": torch.from_numpy(self.embeddings[text]),
                "caption": text}


def collate_motion(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack items, zero-padding ``x0`` to the batch's longest crop.

    Shapes:
        x0: (B, T, 263) float32; mask: (B, T) bool, True on valid frames; length: (B,) int64;
        text: (B, D) float32; caption: list of B str. T is the largest length in the batch.
    """
    lengths = torch.tensor([item["length"] for item in items], dtype=torch.int64)
    longest = int(lengths.max()) if len(items) else 0
    x0 = torch.zeros(len(items), longest, FEATURE_DIM, dtype=torch.float32)
    for row, item in enumerate(items):
        x0[row, :item["length"]] = item["x0"]
    return {"x0": x0,
            "mask": torch.arange(longest)[None, :] < lengths[:, None],
            "length": lengths,
            "text": torch.stack([item["text"] for item in items]),
            "caption": [item["caption"] for item in items]}


class EpochSampler(Sampler):
    """Shuffled ``(epoch, index)`` keys, a new order and new crops each epoch.

    The epoch advances by one per pass; Lightning's ``set_epoch`` (called before each training
    epoch) sets it outright, so a resumed run draws what the uninterrupted one would have.
    """

    def __init__(self, size: int, seed: int = 0):
        self.size, self.seed, self.epoch = int(size), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        self.epoch += 1
        order = np.random.default_rng([self.seed, epoch]).permutation(self.size)
        return iter([(epoch, int(i)) for i in order])


def _check_frames(max_frames: int, min_frames: int) -> None:
    if min_frames < UNIT_LENGTH:
        raise ValueError(f"min_frames must be at least {UNIT_LENGTH}, got {min_frames}")
    if max_frames < min_frames:
        raise ValueError(f"max_frames must be at least min_frames ({min_frames}), got {max_frames}")


#: Skipped clips named one per line in the warning; the rest are counted.
_LISTED = 10


def _warn_problems(root: str, split: str, problems: Sequence[tuple[str, str]]) -> None:
    if problems:
        lines = "".join(f"\n  {clip}: {reason}" for clip, reason in problems[:_LISTED])
        if len(problems) > _LISTED:
            lines += f"\n  ... and {len(problems) - _LISTED} more (all listed in the data module's problems)"
        warnings.warn(f"{root}: skipped {len(problems)} clip(s) of the {split} split:{lines}", stacklevel=3)


class MotionDataModule(pl.LightningDataModule):
    """Captioned motion from a HumanML3D folder, as padded batches of random crops.

    Batches are dicts: ``x0`` (B, T, 263) normalised features zero-padded to the batch's longest
    crop T <= ``max_frames``, ``mask`` (B, T) bool, ``length`` (B,) int64, ``text`` (B, D)
    float32 caption embeddings and ``caption`` the B caption strings. Skipped clips (see
    :func:`~polydiff_motion.formats.read_humanml3d`) are reported in a warning naming each
    and kept in ``problems``.

    Args:
        root: the HumanML3D folder (``new_joint_vecs/``, ``texts/``, ``train.txt``, ``val.txt``,
            ``test.txt``, ``Mean.npy``, ``Std.npy``).
        text_encoder: the caption encoder's name (see :func:`~polydiff_motion.text.get_encoder`).
        max_frames: the longest crop (HumanML3D: 196 frames, 9.8 s).
        min_frames: shorter clips and sub-interval captions are left out (HumanML3D: 40).
        batch_size: items per batch.
        num_workers: DataLoader workers.
        seed: the seed of the shuffles, caption draws and crops.
    """

    def __init__(
        self,
        root: str,
        text_encoder: str = "minilm",
        max_frames: int = 196,
        min_frames: int = 40,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        _check_frames(max_frames, min_frames)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be non-negative, got {num_workers}")
        self.encoder = get_encoder(text_encoder)
        self.root, self.text_encoder = str(root), text_encoder
        self.max_frames, self.min_frames = int(max_frames), int(min_frames)
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)
        self.cache = EmbeddingCache(Path(self.root) / CACHE_NAME)
        self.datasets: dict[str, MotionClips] = {}
        self.records: dict[str, list[MotionRecord]] = {}
        #: per split, ``(id, reason)`` of every clip left out.
        self.problems: dict[str, list[tuple[str, str]]] = {}
        self._stats: FeatureStats | None = None

    @property
    def stats(self) -> FeatureStats:
        """The dataset's normalisation statistics (``Mean.npy`` / ``Std.npy``)."""
        if self._stats is None:
            self._stats = read_stats(self.root)
        return self._stats

    def _load(self, split: str) -> None:
        if split in self.datasets:
            return
        records = read_humanml3d(self.root, split, min_frames=self.min_frames)
        texts = list(dict.fromkeys(c.text for r in records for c in r.captions))
        embeddings = dict(zip(texts, self.cache.encode(self.encoder, texts)))
        dataset = MotionClips(records, self.stats, embeddings, max_frames=self.max_frames,
                              min_frames=self.min_frames, seed=self.seed)
        self.problems[split] = [*records.problems, *dataset.problems]
        _warn_problems(self.root, split, self.problems[split])
        if not len(dataset):
            raise ValueError(f"{self.root}: no usable clips in the {split} split")
        self.records[split], self.datasets[split] = list(records), dataset

    def setup(self, stage: str | None = None) -> None:
        for split in ("test",) if stage == "test" else ("train", "val"):
            self._load(split)

    def test_records(self) -> list[MotionRecord]:
        """The test split's records as read (features not normalised, every caption)."""
        self._load("test")
        return self.records["test"]

    def info(self) -> dict[str, Any]:
        """Plain data a motion model keeps in its checkpoint to generate like this data."""
        return {
            "feature_dim": FEATURE_DIM,
            "fps": int(HUMANML3D_FPS),
            "max_frames": self.max_frames,
            "min_frames": self.min_frames,
            "text_dim": int(self.encoder.dim),
            "text_encoder": self.encoder.name,
            "mean": list(self.stats.mean),
            "std": list(self.stats.std),
            "dataset": Path(self.root).name,
        }

    def _loader(self, split: str, train: bool) -> DataLoader:
        self._load(split)
        dataset = self.datasets[split]
        sampler = EpochSampler(len(dataset), self.seed) if train else None
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, collate_fn=collate_motion,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
