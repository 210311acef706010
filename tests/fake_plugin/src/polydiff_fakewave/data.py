"""Random sine waves, shaped (batch, 1, length) like a mono signal."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset


class SineWaves(Dataset):
    """Deterministic sine waves with random frequency and phase.

    Args:
        num: number of examples.
        length: samples per wave.
        seed: seed of the frequencies and phases.
    """

    def __init__(self, num: int, length: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        freq = 1.0 + 3.0 * torch.rand(num, 1, generator=g)
        phase = 2 * math.pi * torch.rand(num, 1, generator=g)
        grid = torch.linspace(0.0, 1.0, length)
        self.waves = torch.sin(2 * math.pi * freq * grid + phase).unsqueeze(1)

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x0": self.waves[index]}


class WaveDataModule(pl.LightningDataModule):
    """Train/val/test/predict loaders of :class:`SineWaves`.

    Args:
        num_train: training examples.
        num_val: validation (and test, predict) examples.
        length: samples per wave.
        batch_size: batch size.
    """

    def __init__(self, num_train: int = 64, num_val: int = 16, length: int = 32, batch_size: int = 16):
        super().__init__()
        self.num_train = num_train
        self.num_val = num_val
        self.length = length
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(SineWaves(self.num_train, self.length, 0), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(SineWaves(self.num_val, self.length, 1), batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()
