"""Bounded-memory processing of long recordings: overlapping segments, crossfaded back together.

An enhancement network's memory grows with the length of what it is given (the U-Net's
activations, and attention quadratically), so a long recording run in one piece exhausts the
memory of any machine sooner or later. :func:`process_in_segments` cuts the signal into
overlapping segments of fixed length, runs the model on at most ``max_batch`` of them at a
time, and joins the results with complementary raised-cosine crossfades, so that the extra
memory depends on the segment length and batch size only, never on the file's length.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

__all__ = ["segment_starts", "crossfade_ramp", "process_in_segments"]


def segment_starts(num_samples: int, segment_samples: int, overlap_samples: int) -> list[int]:
    """Start positions of the segments covering ``num_samples`` samples.

    Segments advance by ``hop = segment_samples - overlap_samples``; the last one is moved back
    to end exactly at the signal's end, so no segment reaches past it and none holds padding
    (it then overlaps its predecessor by more than ``overlap_samples``). A signal no longer than
    one segment is a single segment starting at 0.
    """
    if num_samples <= segment_samples:
        return [0]
    hop = segment_samples - overlap_samples
    count = math.ceil((num_samples - segment_samples) / hop) + 1
    return [k * hop for k in range(count - 1)] + [num_samples - segment_samples]


def crossfade_ramp(length: int, *, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """Fade-in ``r(n) = sin^2(pi/2 (n + 1/2) / length)``, ``n = 0 .. length - 1``.

    The matching fade-out is ``1 - r(n) = cos^2(...)``, so a crossfade has unit gain everywhere
    (a partition of unity: constant signals and identity processing pass unchanged), and the
    half-sample offset keeps both weights strictly inside (0, 1), symmetric about the middle.

    Shapes:
        returns (length,).
    """
    n = torch.arange(length, dtype=torch.float64, device=device)
    return torch.sin(0.5 * math.pi * (n + 0.5) / max(length, 1)).square().to(dtype)


def process_in_segments(
    wav: Tensor,
    fn: Callable[[Tensor], Tensor],
    *,
    segment_samples: int,
    overlap_samples: int,
    max_batch: int = 4,
) -> Tensor:
    """Apply ``fn`` to a long signal segment by segment and overlap-add the results.

    The signal is cut into segments of ``segment_samples`` samples overlapping by at least
    ``overlap_samples`` (see :func:`segment_starts`); ``fn`` receives batches of at most
    ``max_batch`` segments. Where two segments overlap, the earlier one fades out and the later
    one fades in over ``overlap_samples`` samples with complementary raised-cosine weights
    (:func:`crossfade_ramp`) summing to one, so for ``fn`` the identity the output equals the
    input up to rounding, and any linear ``fn`` that acts the same on every segment (a gain) is
    reproduced exactly. A signal no longer than one segment is passed to ``fn`` whole, at its own
    length; otherwise every call sees exactly ``segment_samples`` samples (no padding).

    Peak extra memory is one batch of segments and its output, independent of the signal's
    length; the output buffer is the size of the input.

    Args:
        wav: the signal, channels first.
        fn: maps a batch of segments to processed segments of the same shape.
        segment_samples: length of each segment.
        overlap_samples: length of each crossfade, at most ``segment_samples // 2`` so that only
            neighbouring segments ever overlap; 0 butts segments together without a fade.
        max_batch: the most segments handed to ``fn`` in one call.

    Returns:
        The processed signal, with ``wav``'s dtype and device.

    Shapes:
        wav: (C, S); ``fn``: (N, C, s) -> (N, C, s) with N <= max_batch and
        ``s = min(S, segment_samples)``; returns (C, S).

    Raises:
        ValueError: for bad sizes, a ``wav`` that is not (C, S), or ``fn`` changing the shape.
    """
    if wav.ndim != 2:
        raise ValueError(f"expected a signal of shape (channels, samples), got {tuple(wav.shape)}")
    if int(segment_samples) != segment_samples or segment_samples < 1:
        raise ValueError(f"segment_samples must be a positive integer, got {segment_samples!r}")
    if int(overlap_samples) != overlap_samples or not 0 <= 2 * overlap_samples <= segment_samples:
        raise ValueError(
            f"overlap_samples must be an integer in [0, segment_samples // 2 = {segment_samples // 2}], "
            f"got {overlap_samples!r}"
        )
    if int(max_batch) != max_batch or max_batch < 1:
        raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
    channels, samples = wav.shape
    if samples == 0:
        return wav.clone()
    if samples <= segment_samples:
        return _checked(fn, wav.unsqueeze(0)).squeeze(0).to(dtype=wav.dtype, device=wav.device)

    starts = segment_starts(samples, segment_samples, overlap_samples)
    ramp = crossfade_ramp(overlap_samples, dtype=wav.dtype, device=wav.device)
    out = torch.zeros_like(wav)
    for first in range(0, len(starts), max_batch):
        chunk = starts[first : first + max_batch]
        batch = torch.stack([wav[:, s : s + segment_samples] for s in chunk])
        processed = _checked(fn, batch).to(dtype=wav.dtype, device=wav.device)
        for j, start in enumerate(chunk):
            k = first + j
            weight = torch.ones(segment_samples, dtype=wav.dtype, device=wav.device)
            if k > 0:
                # The fade-in sits where the previous segment fades out: its last overlap samples.
                # Before it this segment is not used (only the shifted last segment has such a part).
                fade_at = starts[k - 1] + segment_samples - overlap_samples - start
                weight[:fade_at] = 0
                weight[fade_at : fade_at + overlap_samples] = ramp
            if k < len(starts) - 1:
                weight[segment_samples - overlap_samples :] = 1 - ramp
            out[:, start : start + segment_samples] += weight * processed[j]
    return out


def _checked(fn: Callable[[Tensor], Tensor], batch: Tensor) -> Tensor:
    result = fn(batch)
    if not isinstance(result, Tensor) or result.shape != batch.shape:
        got = tuple(result.shape) if isinstance(result, Tensor) else type(result).__name__
        raise ValueError(f"fn must return segments shaped like its input {tuple(batch.shape)}, got {got}")
    return result
