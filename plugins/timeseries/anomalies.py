"""Labelled anomaly injection for multivariate series: four documented kinds of anomaly.

Anomaly-detection benchmarks need series whose anomalies are known exactly. Following the
synthetic-anomaly taxonomies used to evaluate multivariate detectors (point, contextual and
collective anomalies; Lai et al. 2021, "Revisiting Time Series Outlier Detection: Definitions
and Benchmarks"; and the injected anomalies of Schmidl et al. 2022, "Anomaly Detection in Time
Series: A Comprehensive Evaluation"), :func:`inject_anomalies` adds non-overlapping events of the
kinds in :data:`ANOMALY_TYPES` to a copy of a ``(T, D)`` array and returns per-step labels and
the list of :class:`AnomalyEvent`.

Sizes are relative to each channel's robust scale (:func:`channel_scales`), the robust standard
deviation of its one-step changes, so the same ``magnitude`` means the same difficulty for a
smooth field probe, a noisy sensor or a trending series alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ANOMALY_TYPES", "AnomalyEvent", "channel_scales", "inject_anomalies"]

ANOMALY_TYPES: tuple[str, ...] = ("spike", "level_shift", "variance_change", "correlation_break")

# Makes the median absolute deviation an unbiased estimate of a Gaussian's standard deviation.
_MAD_TO_STD = 1.4826
_SPIKE_MAX_LENGTH = 3


@dataclass(frozen=True)
class AnomalyEvent:
    """One injected anomaly.

    Attributes:
        start: first anomalous row (inclusive).
        stop: end row (exclusive); ``stop - start`` is the labelled length.
        kind: one of :data:`ANOMALY_TYPES`.
        channels: the columns it changed, in increasing order.
        magnitude: the severity it was injected with (the ``magnitude`` argument of
            :func:`inject_anomalies`; each kind's docstring entry says what it scales).
    """

    start: int
    stop: int
    kind: str
    channels: tuple[int, ...]
    magnitude: float

    @property
    def length(self) -> int:
        """Number of labelled rows."""
        return self.stop - self.start


def channel_scales(values: np.ndarray) -> np.ndarray:
    """Robust scale of each channel: ``1.4826 × MAD`` of its first differences.

    One-step changes rather than the values themselves are used so that a trend or a slow
    oscillation (which would dominate the spread of the values) does not inflate the scale:
    the scale measures the step-to-step variability a detector sees. Differences touching a
    NaN are ignored. A channel whose MAD is 0 (e.g. piecewise constant) falls back to the
    standard deviation of its differences, and to 1 if that is 0 or undefined too.

    Args:
        values: ``(T, D)`` array.

    Returns:
        ``(D,)`` float64 array of positive scales.

    Raises:
        ValueError: if ``values`` is not 2-D.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"values must be 2-D (time, channel); got shape {values.shape}")
    diffs = np.diff(values, axis=0)
    scales = np.ones(values.shape[1])
    for channel in range(values.shape[1]):
        d = diffs[:, channel]
        d = d[np.isfinite(d)]
        if d.size == 0:
            continue
        mad = _MAD_TO_STD * np.median(np.abs(d - np.median(d)))
        if mad > 0:
            scales[channel] = mad
        elif d.std() > 0:
            scales[channel] = d.std()
    return scales


def _fitting_kinds(count: int, kinds: Sequence[str]) -> list[str]:
    """The kinds of ``count`` events: every kind equally often (cyclically), in kind order."""
    return [kinds[i % len(kinds)] for i in range(count)]


def _minimum_length(kind: str, min_length: int) -> int:
    return 1 if kind == "spike" else min_length


def _max_fitting(available: int, kinds: Sequence[str], min_length: int, min_gap: int, limit: int) -> int:
    """The most events (at most ``limit``) whose shortest lengths and gaps fit in ``available`` rows."""
    need = -min_gap
    for n, kind in enumerate(_fitting_kinds(limit, kinds)):
        need += _minimum_length(kind, min_length) + min_gap
        if need > available:
            return n
    return limit


def _donor_starts(column: np.ndarray, start: int, length: int, separation: int) -> np.ndarray:
    """Starts ``s'`` of donor windows for a correlation break of ``[start, start + length)``.

    A donor window needs finite values on ``[s' - 1, s' + length)`` (its reference row and its
    values) and must lie at least ``separation`` rows away from the anomalous segment.
    """
    total = column.size
    candidates = np.arange(1, total - length + 1)
    far = (candidates + length + separation <= start) | (candidates >= start + length + separation)
    candidates = candidates[far]
    if candidates.size == 0:
        return candidates
    bad = np.concatenate([[0], np.cumsum(~np.isfinite(column))])
    # Non-finite rows within [s' - 1, s' + length).
    bad_in_window = bad[candidates + length] - bad[candidates - 1]
    return candidates[bad_in_window == 0]


def inject_anomalies(
    values: np.ndarray,
    *,
    count: int,
    kinds: Sequence[str] = ANOMALY_TYPES,
    min_length: int = 5,
    max_length: int = 40,
    magnitude: float = 4.0,
    start: int = 0,
    min_gap: int = 20,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[AnomalyEvent]]:
    """Add ``count`` labelled anomalies to a copy of a multivariate series.

    Sizes use each channel's robust scale ``σ_c`` (:func:`channel_scales`: 1.4826 × the median
    absolute deviation of its first differences, over the whole input, NaNs ignored). The kinds:

    * ``"spike"``: a short excursion, 1 to 3 rows (its labelled length is its actual length,
      regardless of ``min_length``), adding ``±magnitude · σ_c`` (sign drawn per channel) to
      each of a random set of ``1 .. max(1, D // 2)`` channels.
    * ``"level_shift"``: a constant offset of ``±magnitude/2 · σ_c`` (sign drawn per channel)
      over the whole segment, on a random set of ``1 .. max(1, D // 2)`` channels. Half a
      spike's size, since a sustained offset is seen on many rows at once.
    * ``"variance_change"``: a noise burst on a random set of ``1 .. max(1, D // 2)`` channels:
      independent Gaussian noise of standard deviation ``σ_c · sqrt((k² − 1) / 2)``, with
      ``k = 1 + magnitude/2``, is added over the segment, so that the standard deviation of the
      one-step changes grows by the factor ``k`` (for changes that were white with scale
      ``σ_c``) while the local mean is kept. Noise is added rather than the deviations from a
      local mean amplified, because a smooth series deviates so little from its local mean that
      amplifying the deviations would hardly change it.
    * ``"correlation_break"``: one channel's segment is replaced by the same channel's values
      from a donor window of the same length elsewhere in the series (at least
      ``max(min_gap, length)`` rows from the segment, anywhere in ``[1, T)``, all finite),
      shifted so that the rows just before the two windows coincide:
      ``out[s + i] = x[s' + i] − x[s' − 1] + x[s − 1]``. Each value and step stays plausible
      for that channel, but its relation to the other channels breaks. Needs ``D >= 2``: for a
      single channel this kind is skipped and the remaining kinds are used. An event whose
      segment has no finite row before it on any channel, or no donor window, becomes a
      ``level_shift`` or ``variance_change`` of the same length instead.

    Events are spread over the kinds as evenly as possible (cyclically, then shuffled); the
    non-spike lengths are drawn uniformly from ``[min_length, max_length]`` (shortened if
    needed to fit); events never overlap, are at least ``min_gap`` rows apart, and lie in
    ``[max(start, 1), T)`` (row 0 is never anomalous, as a correlation break is anchored on
    the row before it). NaNs stay NaN and no new NaN is made. Rows and channels outside the
    events are copied exactly.

    Args:
        values: ``(T, D)`` array (float dtypes are kept; others become float64). Not modified.
        count: number of events.
        kinds: the kinds to use, a subset of :data:`ANOMALY_TYPES`.
        min_length: shortest non-spike event.
        max_length: longest non-spike event.
        magnitude: severity, in units of the channels' robust scales (see the kinds).
        start: first row that may be anomalous (e.g. the end of a clean training part).
        min_gap: fewest normal rows between two events.
        seed: seed of every random choice; the same arguments give the same output.

    Returns:
        ``(out, labels, events)``: the new ``(T, D)`` array, ``(T,)`` int8 labels (1 inside an
        event, 0 elsewhere) and the events sorted by start.

    Raises:
        ValueError: if ``values`` is not 2-D, a kind is unknown, ``count`` events cannot fit
            (the message says how many can), or another argument is out of range.
    """
    x = np.asarray(values)
    if x.ndim != 2:
        raise ValueError(f"values must be 2-D (time, channel); got shape {x.shape}")
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
    out = x.astype(dtype, copy=True)
    total, channels = out.shape
    kinds = tuple(dict.fromkeys([kinds] if isinstance(kinds, str) else kinds))
    unknown = [k for k in kinds if k not in ANOMALY_TYPES]
    if unknown or not kinds:
        raise ValueError(f"unknown anomaly kinds {unknown or list(kinds)}; valid kinds are {list(ANOMALY_TYPES)}")
    for name, value, minimum in (("count", count, 0), ("min_length", min_length, 1), ("min_gap", min_gap, 0),
                                 ("start", start, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < min_length:
        raise ValueError(f"max_length must be an integer >= min_length = {min_length}; got {max_length!r}")
    if not np.isfinite(magnitude) or magnitude <= 0:
        raise ValueError(f"magnitude must be finite and > 0; got {magnitude!r}")
    usable = tuple(k for k in kinds if not (k == "correlation_break" and channels < 2))
    if not usable:
        raise ValueError("kinds holds only 'correlation_break', which needs at least 2 channels; values has 1")
    labels = np.zeros(total, dtype=np.int8)
    if count == 0:
        return out, labels, []

    lower = max(int(start), 1)
    available = total - lower
    fits = _max_fitting(max(available, 0), usable, min_length, min_gap, count)
    if fits < count:
        raise ValueError(
            f"count={count} anomalies do not fit in rows [{lower}, {total}) with min_length={min_length} and "
            f"min_gap={min_gap}; at most {fits} fit"
        )

    rng = np.random.default_rng(seed)
    event_kinds = [usable[i] for i in rng.permutation([usable.index(k) for k in _fitting_kinds(count, usable)])]
    lengths = np.array(
        [
            rng.integers(1, _SPIKE_MAX_LENGTH + 1) if k == "spike" else rng.integers(min_length, max_length + 1)
            for k in event_kinds
        ]
    )
    floors = np.array([_minimum_length(k, min_length) for k in event_kinds])
    budget = available - (count - 1) * min_gap
    if lengths.sum() > budget:
        # Cap the longest events (never below their minimum) at the largest cap that fits;
        # the check above guarantees that some cap does.
        for cap in range(int(lengths.max()), 0, -1):
            capped = np.maximum(np.minimum(lengths, cap), floors)
            if capped.sum() <= budget:
                break
        lengths = capped
    # Spread the spare rows over the count + 1 gaps uniformly at random (stars and bars).
    spare = available - lengths.sum() - (count - 1) * min_gap
    cuts = np.sort(rng.integers(0, spare + 1, size=count))
    extra = np.diff(np.concatenate([[0], cuts]))
    starts = lower + np.cumsum(extra) + np.concatenate([[0], np.cumsum(lengths[:-1] + min_gap)])

    source = x.astype(np.float64)
    scales = channel_scales(source)
    events = []
    for kind, s, length in zip(event_kinds, starts.tolist(), lengths.tolist()):
        stop = s + length
        if kind == "correlation_break":
            options = []
            for channel in range(channels):
                if np.isfinite(source[s - 1, channel]):
                    donors = _donor_starts(source[:, channel], s, length, max(min_gap, length))
                    if donors.size:
                        options.append((channel, donors))
            if options:
                channel, donors = options[rng.integers(len(options))]
                donor = int(donors[rng.integers(donors.size)])
                segment = source[donor:donor + length, channel] - source[donor - 1, channel] + source[s - 1, channel]
                keep_nan = np.isnan(source[s:stop, channel])
                out[s:stop, channel] = np.where(keep_nan, np.nan, segment)
                events.append(AnomalyEvent(s, stop, kind, (channel,), float(magnitude)))
                labels[s:stop] = 1
                continue
            kind = ("level_shift", "variance_change")[rng.integers(2)]
        chosen = np.sort(rng.choice(channels, size=rng.integers(1, max(1, channels // 2) + 1), replace=False))
        block = out[s:stop, chosen].astype(np.float64)
        if kind == "spike":
            block += rng.choice([-1.0, 1.0], size=chosen.size) * magnitude * scales[chosen]
        elif kind == "level_shift":
            block += rng.choice([-1.0, 1.0], size=chosen.size) * (magnitude / 2) * scales[chosen]
        else:
            factor = 1.0 + magnitude / 2
            block += rng.standard_normal(block.shape) * scales[chosen] * np.sqrt((factor**2 - 1) / 2)
        out[s:stop, chosen] = block
        events.append(AnomalyEvent(s, stop, kind, tuple(int(c) for c in chosen), float(magnitude)))
        labels[s:stop] = 1
    return out, labels, events
