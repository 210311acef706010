"""Paired clean/noisy speech folders (the VoiceBank-DEMAND layout) as a LightningDataModule.

Layout::

    root/[task/]train/clean/p226_001.wav     root/[task/]train/noisy/p226_001.wav
    root/[task/]valid/clean/...              root/[task/]valid/noisy/...
    root/[task/]test/clean/...               root/[task/]test/noisy/...

Pairs are matched by file name without its ending (``a.wav`` pairs with ``a.flac``); any format
and rate soundfile reads is accepted and resampled to ``rate``. Only file lists are built up
front; audio is read in ``__getitem__``, so a corpus of any size costs no memory until used.

Batches are waveforms only; the model computes its own STFT::

    {"clean": (B, 1, S), "noisy": (B, 1, S), "name": [B file names without ending]}

Multichannel files are averaged to mono.

Bad pairs: a pair whose files cannot be read, hold NaN/infinite values, or differ in length,
sample rate or channel count is reported by name. During training it is skipped with a
logged warning (once per pair) and the next usable pair is returned in its place, so one bad
file does not stop a long run; for validation and testing it raises :class:`AudioError`, so a
metric is never silently computed on fewer files than the user gave.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from .audio_files import AudioError, find_audio_files, read_audio

__all__ = ["SPLITS", "PairedAudioDataModule", "PairedAudioDataset", "pair_files"]

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "valid", "test")
"""Split folder names, as in VoiceBank-DEMAND recipes (SGMSE+'s ``train/valid/test``)."""

_MAX_LISTED = 10  # names shown in an error before "... and N more"


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def pair_files(clean_dir: str | Path, noisy_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """Match the audio files of two folders by name.

    Args:
        clean_dir: folder of clean (target) files.
        noisy_dir: folder of noisy (input) files.

    Returns:
        ``(name, clean_path, noisy_path)`` sorted by name; ``name`` is the file name without
        its ending.

    Raises:
        FileNotFoundError: a folder is missing.
        ValueError: some names have no partner in the other folder, two files in one folder
            share a name (``a.wav`` and ``a.flac``), or the folders hold no audio; the message
            lists the names.
    """
    folders = {"clean": Path(clean_dir), "noisy": Path(noisy_dir)}
    by_name: dict[str, dict[str, Path]] = {}
    for role, folder in folders.items():
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: missing; expected a folder of {role} audio files")
        files: dict[str, Path] = {}
        duplicates = []
        for path in find_audio_files(folder):
            if path.stem in files:
                duplicates.append(path.stem)
            files[path.stem] = path
        if duplicates:
            raise ValueError(
                f"{folder}: several files share a name (differing only in ending): "
                f"{_listing(sorted(set(duplicates)))}"
            )
        by_name[role] = files
    clean, noisy = by_name["clean"], by_name["noisy"]
    only_clean = sorted(set(clean) - set(noisy))
    only_noisy = sorted(set(noisy) - set(clean))
    if only_clean or only_noisy:
        parts = []
        if only_clean:
            parts.append(f"{len(only_clean)} only in {folders['clean']}: {_listing(only_clean)}")
        if only_noisy:
            parts.append(f"{len(only_noisy)} only in {folders['noisy']}: {_listing(only_noisy)}")
        raise ValueError("clean and noisy files must pair by name; unmatched: " + "; ".join(parts))
    if not clean:
        raise ValueError(
            f"{folders['clean']} and {folders['noisy']}: no audio files (.wav, .flac, .ogg, .mp3)"
        )
    return [(name, clean[name], noisy[name]) for name in sorted(clean)]


class PairedAudioDataset(Dataset):
    """Clean/noisy pairs read lazily, as random crops (training) or whole files (evaluation).

    Args:
        pairs: ``(name, clean_path, noisy_path)`` as :func:`pair_files` gives them.
        rate: sample rate to return, in Hz.
        segment_samples: crop length for training; ``None`` returns whole files.
        skip_bad: on a bad pair, warn and return the next usable pair instead of raising.

    Shapes:
        item["clean"], item["noisy"]: ``(1, segment_samples)``, or ``(1, samples)`` for whole
        files.
    """

    def __init__(
        self,
        pairs: list[tuple[str, Path, Path]],
        *,
        rate: int = 16000,
        segment_samples: int | None = None,
        skip_bad: bool = False,
    ) -> None:
        if segment_samples is not None and segment_samples < 1:
            raise ValueError(f"segment_samples must be positive, got {segment_samples}")
        self.pairs = list(pairs)
        self.rate = rate
        self.segment_samples = segment_samples
        self.skip_bad = skip_bad
        # Per process: each DataLoader worker learns about bad pairs on its own.
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not self.skip_bad:
            return self._load(index)
        for step in range(len(self.pairs)):
            candidate = (index + step) % len(self.pairs)
            if candidate in self._bad:
                continue
            try:
                return self._load(candidate)
            except AudioError as exc:
                self._bad.add(candidate)
                log.warning("skipping training pair %r: %s", self.pairs[candidate][0], exc)
        raise RuntimeError(f"none of the {len(self.pairs)} training pairs is usable; see the warnings above")

    def _load(self, index: int) -> dict[str, Any]:
        import soundfile as sf

        name, clean_path, noisy_path = self.pairs[index]
        infos = {}
        for path in (clean_path, noisy_path):
            try:
                infos[path] = sf.info(str(path))
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise AudioError(path, f"not readable as audio ({exc})") from None
        clean_info, noisy_info = infos[clean_path], infos[noisy_path]
        for field, unit in (("samplerate", " Hz"), ("frames", " samples"), ("channels", " channels")):
            c, n = getattr(clean_info, field), getattr(noisy_info, field)
            if c != n:
                raise AudioError(noisy_path, f"{n}{unit}, but its clean file {clean_path} has {c}{unit}")
        if clean_info.frames == 0:
            raise AudioError(clean_path, "empty: the file holds no audio samples")

        start, stop = 0, None
        same_rate = clean_info.samplerate == self.rate
        if self.segment_samples is not None and same_rate and clean_info.frames > self.segment_samples:
            # Read just the crop: the same frames from both files keeps them aligned.
            start = int(torch.randint(0, clean_info.frames - self.segment_samples + 1, ()).item())
            stop = start + self.segment_samples
        clean, _ = read_audio(clean_path, rate=self.rate, start=start, stop=stop)
        noisy, _ = read_audio(noisy_path, rate=self.rate, start=start, stop=stop)
        clean, noisy = clean.mean(dim=0, keepdim=True), noisy.mean(dim=0, keepdim=True)
        for path, wav in ((clean_path, clean), (noisy_path, noisy)):
            if not torch.isfinite(wav).all():
                raise AudioError(path, "holds NaN or infinite sample values")

        if self.segment_samples is not None:
            length = clean.shape[-1]
            if length > self.segment_samples:  # a resampled file, read whole
                offset = int(torch.randint(0, length - self.segment_samples + 1, ()).item())
                clean = clean[..., offset : offset + self.segment_samples]
                noisy = noisy[..., offset : offset + self.segment_samples]
            elif length < self.segment_samples:
                pad = self.segment_samples - length
                clean = torch.nn.functional.pad(clean, (0, pad))
                noisy = torch.nn.functional.pad(noisy, (0, pad))
        return {"clean": clean, "noisy": noisy, "name": name}


class PairedAudioDataModule(pl.LightningDataModule):
    """Paired clean/noisy speech in the VoiceBank-DEMAND layout.

    Training batches are random crops of ``segment_seconds`` taken at the same offset in the
    clean and the noisy file (shorter files are zero-padded at the end); validation and test
    batches are whole files, one per batch.

    Args:
        root: the corpus folder (e.g. the output of ``polydiff audio make-demo-data``).
        task: sub-folder of ``root`` holding the splits (``"denoise"``, ``"dereverb"``);
            ``None`` when ``root`` itself holds ``train/valid/test``.
        rate: sample rate in Hz; files at other rates are resampled.
        segment_seconds: length of the training crops.
        batch_size: training batch size.
        num_workers: DataLoader worker processes.
        max_files: use at most this many pairs per split (the first by name), for quick runs.

    Shapes:
        batch["clean"], batch["noisy"]: ``(batch, 1, samples)``; ``batch["name"]``: list of str.
    """

    def __init__(
        self,
        root: str,
        task: str | None = None,
        rate: int = 16000,
        segment_seconds: float = 2.0,
        batch_size: int = 8,
        num_workers: int = 0,
        max_files: int | None = None,
    ) -> None:
        super().__init__()
        if rate <= 0 or segment_seconds <= 0 or batch_size < 1 or num_workers < 0:
            raise ValueError(
                f"need rate > 0, segment_seconds > 0, batch_size >= 1, num_workers >= 0; got rate={rate}, "
                f"segment_seconds={segment_seconds}, batch_size={batch_size}, num_workers={num_workers}"
            )
        if max_files is not None and max_files < 1:
            raise ValueError(f"max_files must be at least 1 (or None for all), got {max_files}")
        self.save_hyperparameters()
        self.root = Path(root)
        self.task = task
        self.rate = rate
        self.segment_samples = max(1, math.ceil(segment_seconds * rate))
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.max_files = max_files
        self.datasets: dict[str, PairedAudioDataset] = {}

    @property
    def split_root(self) -> Path:
        """The folder holding ``train/``, ``valid/`` and ``test/``."""
        return self.root / self.task if self.task else self.root

    def pairs(self, split: str) -> list[tuple[str, Path, Path]]:
        """The ``(name, clean, noisy)`` pairs of one split, limited to ``max_files``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        folder = self.split_root / split
        if not folder.is_dir():
            found = (
                sorted(p.name for p in self.split_root.iterdir() if p.is_dir())
                if self.split_root.is_dir()
                else []
            )
            raise FileNotFoundError(
                f"{folder}: missing; expected {self.split_root}/{{train,valid,test}}/{{clean,noisy}}/ "
                f"(found folders: {', '.join(found) or 'none'})"
            )
        pairs = pair_files(folder / "clean", folder / "noisy")
        return pairs[: self.max_files] if self.max_files else pairs

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",), "predict": ("test",)}
        splits = wanted.get(stage, SPLITS) if stage else SPLITS
        for split in splits:
            if split in self.datasets:
                continue
            training = split == "train"
            self.datasets[split] = PairedAudioDataset(
                self.pairs(split),
                rate=self.rate,
                segment_samples=self.segment_samples if training else None,
                skip_bad=training,
            )

    def _dataset(self, split: str) -> PairedAudioDataset:
        if split not in self.datasets:
            self.setup({"train": "fit", "valid": "validate", "test": "test"}[split])
        return self.datasets[split]

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            self._dataset(split),
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", 1, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", 1, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", 1, shuffle=False)
