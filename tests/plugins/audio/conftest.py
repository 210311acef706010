"""Shared helpers of the audio plugin's tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

RATE = 16000


def _synthetic_speech(seconds: float = 2.0, rate: int = RATE) -> np.ndarray:
    """A voiced, speech-like test signal: a gliding harmonic series gated at syllable rate."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140.0 + 30.0 * np.sin(2 * np.pi * 0.7 * t) + 5.0 * np.sin(2 * np.pi * 5.0 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 21))
    syllables = np.maximum(np.sin(2 * np.pi * 4.0 * t), 0.0) ** 1.5
    x = voiced * syllables
    return 0.5 * x / np.abs(x).max()


@pytest.fixture(scope="session")
def synthetic_speech() -> Callable[..., np.ndarray]:
    """``synthetic_speech(seconds=2.0, rate=16000)``: a speech-like test signal needing no tools."""
    return _synthetic_speech
