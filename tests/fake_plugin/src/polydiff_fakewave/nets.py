"""A tiny 1-D convolutional denoiser."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from polydiff.denoiser import Denoiser
from polydiff.parameterization import Prediction


class TinyConvDenoiser(Denoiser):
    """Two convolutions with the time added as a channel bias.

    Args:
        channels: hidden channels.
        prediction: what the network predicts.

    Shapes:
        x: (B, 1, L); t: (B,); returns (B, 1, L).
    """

    def __init__(self, channels: int = 16, prediction: Prediction = "eps"):
        super().__init__(prediction=prediction)
        self.inp = nn.Conv1d(1, channels, 3, padding=1)
        self.time = nn.Linear(1, channels)
        self.out = nn.Conv1d(channels, 1, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1)
        t = t.expand(x.shape[0]) if t.numel() == 1 else t
        h = self.inp(x) + self.time(t[:, None])[:, :, None]
        return self.out(torch.nn.functional.silu(h))
