"""Paired-folder DataModule: shapes, aligned crops, name matching and bad pairs reported by name."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from polydiff_audio.audio_files import AudioError
from polydiff_audio.data import PairedAudioDataModule, PairedAudioDataset, pair_files

RATE = 16000
OFFSET = 0.25  # noisy = clean + OFFSET, so any misaligned crop shows as a non-constant difference
LENGTHS = {"train": [24000, 40000, 33000, 9000], "valid": [20000, 12000], "test": [16000]}


def _write_pair(folder: Path, name: str, samples: int, rng: np.random.Generator, rate: int = RATE) -> None:
    clean = 0.3 * rng.standard_normal(samples).astype(np.float32)  # no two crops look alike
    for role, data in (("clean", clean), ("noisy", clean + OFFSET)):
        (folder / role).mkdir(parents=True, exist_ok=True)
        sf.write(folder / role / f"{name}.wav", data, rate, subtype="FLOAT")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, lengths in LENGTHS.items():
        for i, samples in enumerate(lengths):
            _write_pair(tmp_path / "denoise" / split, f"{split}_{i}", samples, rng)
    return tmp_path


def test_batches_have_the_documented_shapes(corpus):
    dm = PairedAudioDataModule(str(corpus), task="denoise", segment_seconds=1.0, batch_size=3)
    dm.setup("fit")

    batch = next(iter(dm.train_dataloader()))
    assert batch["clean"].shape == batch["noisy"].shape == (3, 1, RATE)
    assert batch["clean"].dtype == torch.float32
    assert len(batch["name"]) == 3 and all(name.startswith("train_") for name in batch["name"])

    valid = list(dm.val_dataloader())
    assert [b["clean"].shape for b in valid] == [(1, 1, 20000), (1, 1, 12000)]  # whole files
    assert [b["name"] for b in valid] == [["valid_0"], ["valid_1"]]
    test = next(iter(dm.test_dataloader()))
    assert test["noisy"].shape == (1, 1, 16000)


def test_training_crops_take_the_same_offset_in_clean_and_noisy(corpus):
    torch.manual_seed(0)
    dm = PairedAudioDataModule(str(corpus), task="denoise", segment_seconds=1.0)
    dm.setup("fit")
    dataset = dm.datasets["train"]

    starts = set()
    for _ in range(5):
        for index in range(len(dataset)):
            item = dataset[index]
            clean, noisy = item["clean"][0], item["noisy"][0]
            real = clean != 0  # the 9000-sample file is zero-padded at the end, in both
            assert torch.allclose(noisy[real] - clean[real], torch.full_like(clean[real], OFFSET), atol=1e-6)
            assert torch.all(noisy[~real] == 0)
            if item["name"] == "train_1":
                full, _ = sf.read(corpus / "denoise/train/clean/train_1.wav", dtype="float32")
                start = int(np.flatnonzero(full == clean[0].item())[0])
                assert np.array_equal(full[start : start + RATE], clean.numpy())
                starts.add(start)
    assert len(starts) > 1  # the crop offset is random


def test_short_files_are_padded_to_the_segment(corpus):
    dataset = PairedAudioDataset(
        pair_files(corpus / "denoise/train/clean", corpus / "denoise/train/noisy"), segment_samples=RATE
    )
    item = dataset[3]  # 9000 samples
    assert item["clean"].shape == (1, RATE)
    assert torch.all(item["clean"][0, 9000:] == 0) and torch.all(item["clean"][0, :9000] != 0)


def test_other_rates_are_resampled_and_crops_stay_aligned(tmp_path):
    _write_pair(tmp_path / "train", "slow", 12000, np.random.default_rng(1), rate=8000)
    dataset = PairedAudioDataset(
        pair_files(tmp_path / "train/clean", tmp_path / "train/noisy"), segment_samples=RATE
    )
    item = dataset[0]
    assert item["clean"].shape == (1, RATE)  # 1.5 s at 8 kHz is 24000 samples at 16 kHz, cropped
    whole = PairedAudioDataset(dataset.pairs)[0]
    assert whole["clean"].shape == (1, 24000)
    # Resampling is linear, so noisy - clean is the resampled constant: OFFSET away from the edges.
    difference = (whole["noisy"] - whole["clean"])[0, 400:-400]
    assert torch.allclose(difference, torch.full_like(difference, OFFSET), atol=1e-3)


def test_unmatched_names_are_listed(corpus):
    (corpus / "denoise/test/noisy/test_0.wav").rename(corpus / "denoise/test/noisy/test_zero.wav")
    dm = PairedAudioDataModule(str(corpus), task="denoise")
    with pytest.raises(ValueError, match="unmatched") as info:
        dm.setup("test")
    assert "test_0" in str(info.value) and "test_zero" in str(info.value)


def test_missing_split_folder_names_the_expected_layout(corpus):
    dm = PairedAudioDataModule(str(corpus))  # task=None: corpus itself has no train/
    with pytest.raises(FileNotFoundError, match=r"\{train,valid,test\}.*found folders: denoise"):
        dm.setup("fit")


def test_length_mismatch_raises_for_evaluation_and_is_skipped_in_training(corpus, caplog):
    rng = np.random.default_rng(2)
    for split in ("train", "valid"):
        sf.write(
            corpus / f"denoise/{split}/noisy/{split}_0.wav",
            rng.standard_normal(5000).astype(np.float32),
            RATE,
            subtype="FLOAT",
        )
    dm = PairedAudioDataModule(str(corpus), task="denoise", segment_seconds=0.5, batch_size=4)
    dm.setup("fit")

    with pytest.raises(AudioError, match="5000 samples, but its clean file") as info:
        next(iter(dm.val_dataloader()))
    assert info.value.path.endswith("valid_0.wav")

    with caplog.at_level(logging.WARNING, logger="polydiff_audio.data"):
        names = [name for batch in dm.train_dataloader() for name in batch["name"]]
    assert "train_0" not in names and len(names) == 4  # replaced by another usable pair
    warnings = [r.getMessage() for r in caplog.records if r.name == "polydiff_audio.data"]
    assert len(warnings) == 1 and "skipping training pair 'train_0'" in warnings[0]  # once, by name


def test_max_files_limits_each_split(corpus):
    dm = PairedAudioDataModule(str(corpus), task="denoise", max_files=2)
    dm.setup()
    assert [len(dm.datasets[s]) for s in ("train", "valid", "test")] == [2, 2, 1]
    with pytest.raises(ValueError, match="max_files"):
        PairedAudioDataModule(str(corpus), max_files=0)
