"""Segment-wise processing of long signals: exact for identity, linear, bounded batches."""

from __future__ import annotations

import pytest
import torch

from polydiff_audio.segments import crossfade_ramp, process_in_segments, segment_starts

SEGMENT, OVERLAP = 100, 20  # hop 80


def _signal(samples: int, channels: int = 2) -> torch.Tensor:
    return torch.randn(channels, samples, generator=torch.Generator().manual_seed(samples))


@pytest.mark.parametrize("samples", [1, 37, 99, 100, 101, 180, 181, 260, 1234])
@pytest.mark.parametrize("overlap", [0, OVERLAP, SEGMENT // 2])
def test_identity_is_exact(samples, overlap):
    wav = _signal(samples)
    out = process_in_segments(wav, lambda x: x, segment_samples=SEGMENT, overlap_samples=overlap, max_batch=3)
    torch.testing.assert_close(out, wav, atol=1e-6, rtol=0)


def test_segments_cover_the_signal_without_padding():
    # 180 = one hop past a full segment: the grid fits exactly; at 181 a third segment, moved back
    # to end at the last sample, covers the one sample left over.
    assert segment_starts(180, SEGMENT, OVERLAP) == [0, 80]
    assert segment_starts(181, SEGMENT, OVERLAP) == [0, 80, 81]
    assert segment_starts(50, SEGMENT, OVERLAP) == [0]
    ramp = crossfade_ramp(OVERLAP)
    torch.testing.assert_close(ramp + ramp.flip(0), torch.ones(OVERLAP, dtype=torch.float64))


def test_gain_passes_through():
    wav = _signal(1234)
    out = process_in_segments(wav, lambda x: 2 * x, segment_samples=SEGMENT, overlap_samples=OVERLAP)
    torch.testing.assert_close(out, 2 * wav, atol=1e-6, rtol=0)


def test_crossfade_weights_sum_to_one():
    wav = _signal(1234)
    out = process_in_segments(wav, lambda x: x + 1, segment_samples=SEGMENT, overlap_samples=OVERLAP)
    torch.testing.assert_close(out, wav + 1, atol=1e-6, rtol=0)


def test_crossfade_blends_neighbours():
    calls = []

    def alternate(batch):
        calls.append(len(calls))
        return torch.full_like(batch, float(len(calls) % 2))  # 1, 0, 1, ... per segment

    out = process_in_segments(torch.zeros(1, 260), alternate, segment_samples=SEGMENT, overlap_samples=OVERLAP,
                              max_batch=1)
    fade = out[0, 80:100]  # segment 0 (value 1) fades out while segment 1 (value 0) fades in
    assert bool((fade[1:] < fade[:-1]).all()) and 0 < float(fade.min()) and float(fade.max()) < 1
    assert bool((out[0, :80] == 1).all()) and bool((out[0, 100:160] == 0).all())


def test_batches_are_bounded_whatever_the_length():
    """Peak memory: fn never sees more than max_batch segments of segment_samples samples."""
    seen: dict[int, list[tuple[int, ...]]] = {}
    for samples in (1_000, 40_000):
        shapes = seen.setdefault(samples, [])

        def record(batch, shapes=shapes):
            shapes.append(tuple(batch.shape))
            return batch

        wav = _signal(samples)
        out = process_in_segments(wav, record, segment_samples=SEGMENT, overlap_samples=OVERLAP, max_batch=4)
        torch.testing.assert_close(out, wav, atol=1e-6, rtol=0)
        n = len(segment_starts(samples, SEGMENT, OVERLAP))
        assert len(shapes) == -(-n // 4)
    assert max(s[0] for s in seen[40_000]) == max(s[0] for s in seen[1_000]) == 4
    assert {s[1:] for shapes in seen.values() for s in shapes} == {(2, SEGMENT)}


def test_short_file_is_one_call_at_its_own_length():
    shapes = []
    wav = _signal(42)
    process_in_segments(wav, lambda x: shapes.append(tuple(x.shape)) or x, segment_samples=SEGMENT,
                        overlap_samples=OVERLAP)
    assert shapes == [(1, 2, 42)]


def test_bad_arguments_are_reported():
    wav = _signal(300)
    with pytest.raises(ValueError, match="overlap_samples"):
        process_in_segments(wav, lambda x: x, segment_samples=SEGMENT, overlap_samples=51)
    with pytest.raises(ValueError, match="channels, samples"):
        process_in_segments(wav[0], lambda x: x, segment_samples=SEGMENT, overlap_samples=OVERLAP)
    with pytest.raises(ValueError, match="shaped like its input"):
        process_in_segments(wav, lambda x: x[..., :-1], segment_samples=SEGMENT, overlap_samples=OVERLAP)
