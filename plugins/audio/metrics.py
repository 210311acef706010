"""Speech-enhancement metrics: SI-SDR, wideband PESQ and ESTOI, per file and averaged.

The three metrics SGMSE+ and StoRM report, each following its published definition:

- **SI-SDR** (Le Roux et al. 2019, "SDR – half-baked or well done?"): both signals made zero-mean,
  the reference scaled by the optimal ``alpha = <s, s_hat> / ||s||^2`` and
  ``SI-SDR = 10 log10(||alpha s||^2 / ||alpha s - s_hat||^2)``. Computed here in float64 and
  clipped to ``±SI_SDR_CAP_DB`` (see there).
- **Wideband PESQ** (ITU-T P.862.2) through the ``pesq`` package, at 16 kHz (other rates are
  resampled first); MOS-LQO in about [1.04, 4.64].
- **ESTOI** (Jensen & Taal 2016) through ``pystoi.stoi(..., extended=True)``; about [0, 1].

Each metric returns a :class:`Score`, a ``float`` that also remembers why it is NaN when the
metric is undefined for its input (a silent reference, no utterance PESQ can detect, too little
speech for ESTOI), so batch evaluation records the reason instead of crashing.

:func:`evaluate_pairs` scores files on disk (clean, enhanced and optionally noisy) and reports a
file it cannot score by name with the reason while still scoring the rest; :func:`summarise`,
:func:`format_table` and :func:`write_csv` turn the per-file rows into a table and a CSV.

``soundfile``, ``scipy``, ``pesq`` and ``pystoi`` are imported inside the functions that need
them, so importing this module costs only numpy and torch.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from polydiff.score import Score

__all__ = [
    "SI_SDR_CAP_DB",
    "PESQ_RATE",
    "METRICS",
    "AUDIO_SUFFIXES",
    "Score",
    "Pair",
    "MetricSummary",
    "Summary",
    "si_sdr",
    "si_sdr_torch",
    "pesq_wb",
    "estoi",
    "evaluate_pairs",
    "pairs_from_folders",
    "summarise",
    "format_table",
    "write_csv",
]

SI_SDR_CAP_DB = 100.0
"""SI-SDR is clipped to ``[-SI_SDR_CAP_DB, +SI_SDR_CAP_DB]`` dB.

A perfect (scaled) copy has SI-SDR = +inf by definition and an estimate orthogonal to the
reference -inf; either would turn every mean it enters into ±inf. 100 dB lies above the ~98 dB
dynamic range of 16-bit PCM, so no stored estimate that differs audibly from the reference is
affected, while float rounding of an exact copy (which gives ~140 to 300 dB rather than inf)
lands on the same recognisable value.
"""

PESQ_RATE = 16000
"""The sampling rate wideband PESQ (P.862.2) is defined at."""

METRICS: tuple[str, ...] = ("si_sdr", "pesq", "estoi")
"""Row keys of the three metrics, in the order tables show them."""

AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3")
"""File suffixes :func:`pairs_from_folders` treats as audio (what soundfile reads)."""

_METRIC_LABELS = {"si_sdr": "SI-SDR (dB)", "pesq": "PESQ (WB)", "estoi": "ESTOI"}

Pair = tuple[str, str | os.PathLike[str], str | os.PathLike[str], str | os.PathLike[str] | None]
"""``(name, clean_path, estimate_path, noisy_path or None)``, one file to score."""


# --- input checks ----------------------------------------------------------------------------
def _as_signal(x: Any, what: str) -> np.ndarray:
    """A 1-D float64 copy of a mono signal (numpy array, torch tensor or sequence)."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    array = np.asarray(x)
    if array.ndim != 1:
        raise ValueError(f"{what} must be a 1-D mono signal, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{what} must hold real numbers, got {array.dtype}")
    return array.astype(np.float64)


def _checked_pair(estimate: Any, reference: Any) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Both signals as 1-D float64 arrays of equal length, and why a metric is undefined (or None)."""
    est = _as_signal(estimate, "estimate")
    ref = _as_signal(reference, "reference")
    if est.shape != ref.shape:
        raise ValueError(f"estimate and reference differ in length: {est.size} and {ref.size} samples")
    return est, ref, _undefined_reason(est, ref)


def _undefined_reason(estimate: np.ndarray, reference: np.ndarray) -> str | None:
    """Why no metric is defined for this pair, or None."""
    if reference.size == 0 or estimate.size == 0:
        return "empty signal"
    if not np.all(np.isfinite(reference)):
        return "non-finite samples in the reference"
    if not np.all(np.isfinite(estimate)):
        return "non-finite samples in the estimate"
    if not np.any(reference - reference.mean()):
        return "silent reference"
    return None


# --- SI-SDR ----------------------------------------------------------------------------------
def si_sdr(estimate: Any, reference: Any) -> Score:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019, Eqs. 3-4).

    Both signals are made zero-mean, the reference ``s`` is scaled by
    ``alpha = <s, s_hat> / ||s||^2`` and ``10 log10(||alpha s||^2 / ||alpha s - s_hat||^2)``
    is returned, clipped to ``±SI_SDR_CAP_DB`` so a perfect copy gives ``+SI_SDR_CAP_DB``.

    Args:
        estimate: the enhanced signal ``s_hat``, 1-D.
        reference: the clean signal ``s``, 1-D, same length.

    Returns:
        The SI-SDR; NaN with a reason for a silent reference or estimate, or non-finite input.

    Raises:
        ValueError: if the signals are not 1-D or differ in length.
    """
    est, ref, reason = _checked_pair(estimate, reference)
    if reason is not None:
        return Score.undefined(reason)
    est = est - est.mean()
    ref = ref - ref.mean()
    alpha = (ref @ est) / (ref @ ref)
    target = alpha * ref
    residual = est - target
    target_energy = float(target @ target)
    residual_energy = float(residual @ residual)
    if target_energy == 0.0 and residual_energy == 0.0:
        return Score.undefined("silent estimate")
    if residual_energy == 0.0:
        return Score(SI_SDR_CAP_DB)
    if target_energy == 0.0:
        return Score(-SI_SDR_CAP_DB)
    # A difference of logs cannot overflow where the ratio of two tiny or huge energies could.
    value = 10.0 * (math.log10(target_energy) - math.log10(residual_energy))
    return Score(min(max(value, -SI_SDR_CAP_DB), SI_SDR_CAP_DB))


def si_sdr_torch(estimate: Tensor, reference: Tensor) -> Tensor:
    """Batched SI-SDR in dB, the same definition and clipping as :func:`si_sdr`.

    Meant for validation during training; computed in float64 (the energies of long signals
    lose digits in float32) and returned in the inputs' floating dtype. Undefined entries (a
    silent reference, or silent estimate) are NaN.

    Args:
        estimate: enhanced signals.
        reference: clean signals.

    Shapes:
        estimate, reference: (..., S), the same shape; returns (...).
    """
    if estimate.shape != reference.shape:
        raise ValueError(
            f"estimate and reference differ in shape: {tuple(estimate.shape)} and {tuple(reference.shape)}"
        )
    if not (estimate.is_floating_point() and reference.is_floating_point()):
        raise TypeError(f"si_sdr_torch needs real floating-point tensors, got {estimate.dtype} and {reference.dtype}")
    dtype = torch.promote_types(estimate.dtype, reference.dtype)
    est = estimate.double()
    ref = reference.double()
    est = est - est.mean(dim=-1, keepdim=True)
    ref = ref - ref.mean(dim=-1, keepdim=True)
    # A silent reference makes alpha 0/0 = NaN, which propagates to a NaN result as intended.
    alpha = (ref * est).sum(dim=-1, keepdim=True) / ref.square().sum(dim=-1, keepdim=True)
    target = alpha * ref
    target_energy = target.square().sum(dim=-1)
    residual_energy = (est - target).square().sum(dim=-1)
    # log10(0) = -inf gives ±inf for a perfect or orthogonal estimate (clipped below) and
    # -inf - -inf = NaN when both vanish (silent estimate), matching the numpy version.
    value = 10.0 * (torch.log10(target_energy) - torch.log10(residual_energy))
    return value.clamp(-SI_SDR_CAP_DB, SI_SDR_CAP_DB).to(dtype)


# --- PESQ and ESTOI --------------------------------------------------------------------------
def _resample(x: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy's default Kaiser anti-aliasing filter)."""
    if rate == target_rate:
        return x
    from scipy.signal import resample_poly

    divisor = math.gcd(int(rate), int(target_rate))
    return resample_poly(x, target_rate // divisor, rate // divisor)


def _check_rate(rate: Any) -> int:
    if int(rate) != rate or rate <= 0:
        raise ValueError(f"rate must be a positive integer number of samples per second, got {rate!r}")
    return int(rate)


def pesq_wb(estimate: Any, reference: Any, rate: int = PESQ_RATE) -> Score:
    """Wideband PESQ (ITU-T P.862.2) MOS-LQO through the ``pesq`` package.

    Signals at other rates are resampled to 16 kHz first. PESQ aligns the two signals itself,
    so their lengths may differ.

    Args:
        estimate: the enhanced (degraded) signal, 1-D.
        reference: the clean signal, 1-D.
        rate: the sampling rate of both signals in Hz.

    Returns:
        The score (about 1.04 to 4.64); NaN with the reason for input PESQ refuses (no
        utterance detected, too short) or that is silent or non-finite.
    """
    import pesq as pesq_package

    rate = _check_rate(rate)
    est = _as_signal(estimate, "estimate")
    ref = _as_signal(reference, "reference")
    reason = _undefined_reason(est, ref)
    if reason is not None:
        return Score.undefined(reason)
    est = _resample(est, rate, PESQ_RATE)
    ref = _resample(ref, rate, PESQ_RATE)
    try:
        value = pesq_package.pesq(PESQ_RATE, ref, est, mode="wb")
    except pesq_package.PesqError as error:  # NoUtterancesError, BufferTooShortError, ...
        # The package passes its C messages on as bytes.
        detail = error.args[0] if error.args else type(error).__name__
        detail = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
        return Score.undefined(f"PESQ refused the input ({detail})")
    return Score(float(value))


def estoi(estimate: Any, reference: Any, rate: int) -> Score:
    """Extended short-time objective intelligibility (Jensen & Taal 2016) through ``pystoi``.

    Args:
        estimate: the enhanced signal, 1-D.
        reference: the clean signal, 1-D, same length.
        rate: the sampling rate of both signals in Hz (pystoi resamples to 10 kHz itself).

    Returns:
        The score (about 0 to 1); NaN with the reason when the reference is silent or holds
        fewer than 30 frames (~0.4 s) of speech once pystoi drops its silent frames (pystoi
        itself would return 1e-5 with a warning, a value that averages in unnoticed).

    Raises:
        ValueError: if the signals are not 1-D or differ in length.
    """
    from pystoi import stoi

    rate = _check_rate(rate)
    est, ref, reason = _checked_pair(estimate, reference)
    if reason is not None:
        return Score.undefined(reason)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(stoi(ref, est, rate, extended=True))
    messages = [str(w.message) for w in caught]
    if any("Not enough STFT frames" in m for m in messages):
        return Score.undefined("less than 30 frames (~0.4 s) of speech after pystoi removes silent frames")
    if not math.isfinite(value):
        return Score.undefined("ESTOI is not finite" + (f" ({messages[0]})" if messages else ""))
    return Score(value)


# --- scoring files ---------------------------------------------------------------------------
class _PairFailure(Exception):
    """A file pair that cannot be scored; the message is the reason reported for it."""


def _read_audio(path: str | os.PathLike[str], what: str) -> tuple[np.ndarray, int]:
    """Samples as float64 (channels, samples) and the rate; every failure as _PairFailure."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise _PairFailure(f"{what} file {path.name!r} does not exist")
    try:
        data, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError, OSError, ValueError) as error:
        raise _PairFailure(f"cannot read {what} file {path.name!r}: {error}") from None
    if data.shape[0] == 0:
        raise _PairFailure(f"{what} file {path.name!r} is empty")
    if not np.all(np.isfinite(data)):
        raise _PairFailure(f"{what} file {path.name!r} holds non-finite samples")
    return data.T, int(rate)


def _match(
    other: np.ndarray,
    other_rate: int,
    clean: np.ndarray,
    clean_rate: int,
    what: str,
    *,
    max_mismatch_s: float,
    resample: bool,
    notes: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Bring ``other`` to the clean file's rate and length, or raise _PairFailure saying why."""
    if other.shape[0] != clean.shape[0]:
        raise _PairFailure(f"{what} has {other.shape[0]} channels, clean has {clean.shape[0]}")
    if other_rate != clean_rate:
        if not resample:
            raise _PairFailure(f"{what} rate {other_rate} Hz differs from clean rate {clean_rate} Hz")
        other = _resample(other.T, other_rate, clean_rate).T
        notes.append(f"{what} resampled from {other_rate} Hz to {clean_rate} Hz")
    difference = abs(other.shape[1] - clean.shape[1])
    # Less than one hop of difference is STFT framing or codec padding; more means the files
    # are not the same utterance, and trimming would score a misalignment.
    limit = max_mismatch_s * clean_rate
    if difference and difference >= limit:
        raise _PairFailure(
            f"{what} has {other.shape[1]} samples, clean has {clean.shape[1]} "
            f"(differ by {difference / clean_rate * 1e3:.1f} ms, at least {max_mismatch_s * 1e3:g} ms)"
        )
    if difference:
        notes.append(f"{what} and clean trimmed to the shorter by {difference} samples")
    length = min(other.shape[1], clean.shape[1])
    return other[:, :length], clean[:, :length]


def _score_channels(
    estimate: np.ndarray, clean: np.ndarray, rate: int, notes: list[str], what: str
) -> dict[str, float]:
    """The three metrics, averaged over channels; NaN reasons appended to ``notes``."""
    scores: dict[str, list[Score]] = {name: [] for name in METRICS}
    for est_channel, clean_channel in zip(estimate, clean):
        scores["si_sdr"].append(si_sdr(est_channel, clean_channel))
        scores["pesq"].append(pesq_wb(est_channel, clean_channel, rate))
        scores["estoi"].append(estoi(est_channel, clean_channel, rate))
    result = {}
    metrics_by_reason: dict[str, list[str]] = {}
    for name, values in scores.items():
        reasons = sorted({v.reason for v in values if v.reason is not None})
        for reason in reasons:
            metrics_by_reason.setdefault(reason, []).append(name)
        # One undefined channel leaves the file's score undefined rather than quietly one-channel.
        result[name] = float(np.mean(values)) if not reasons else math.nan
    notes.extend(f"{what} {', '.join(names)}: {reason}" for reason, names in metrics_by_reason.items())
    return result


def _empty_row(name: str) -> dict[str, Any]:
    row: dict[str, Any] = {"name": name, "status": "failed"}
    for prefix in ("", "noisy_", "delta_"):
        row.update({prefix + metric: None for metric in METRICS})
    row["notes"] = ""
    return row


def evaluate_pairs(
    pairs: Iterable[Pair],
    *,
    max_mismatch_s: float = 0.01,
    resample: bool = True,
) -> list[dict[str, Any]]:
    """Score enhanced files against clean ones (and the noisy inputs, when given).

    Every pair gets one row, in order. A pair that cannot be scored (unreadable, empty or
    non-finite file, different channel count, a rate that differs with ``resample=False``, a
    length that differs by ``max_mismatch_s`` or more) gets ``status == "failed"`` and the
    reason in ``notes``; the remaining pairs are still scored. Lengths that differ by less are
    trimmed to the shorter, and other files are resampled to the clean file's rate, both noted.
    Multi-channel files are scored per channel and averaged.

    Args:
        pairs: ``(name, clean_path, estimate_path, noisy_path or None)`` tuples.
        max_mismatch_s: the length difference (seconds) below which two files count as the
            same utterance and are trimmed; 10 ms is about one STFT hop.
        resample: resample estimate and noisy files whose rate differs from the clean file's;
            when False such a pair is reported as failed.

    Returns:
        One dict per pair with keys ``name``, ``status`` (``"ok"`` or ``"failed"``),
        ``si_sdr``, ``pesq``, ``estoi`` (the estimate against clean), ``noisy_si_sdr``, ...
        (the noisy input against clean), ``delta_si_sdr``, ... (estimate minus noisy) and
        ``notes`` (the failure or NaN reasons and any trimming, ``"; "``-separated). A value
        is ``None`` where it does not apply (a failed pair, no noisy file) and NaN where the
        metric is undefined (the reason is in ``notes``).
    """
    if max_mismatch_s < 0:
        raise ValueError(f"max_mismatch_s must be non-negative, got {max_mismatch_s}")
    rows = []
    for pair in pairs:
        name, clean_path, estimate_path, noisy_path = pair
        row = _empty_row(str(name))
        notes: list[str] = []
        try:
            clean, rate = _read_audio(clean_path, "clean")
            estimate, estimate_rate = _read_audio(estimate_path, "estimate")
            options = {"max_mismatch_s": max_mismatch_s, "resample": resample, "notes": notes}
            estimate, clean_for_estimate = _match(estimate, estimate_rate, clean, rate, "estimate", **options)
            noisy = clean_for_noisy = None
            if noisy_path is not None:
                noisy, noisy_rate = _read_audio(noisy_path, "noisy")
                noisy, clean_for_noisy = _match(noisy, noisy_rate, clean, rate, "noisy", **options)
            scores = _score_channels(estimate, clean_for_estimate, rate, notes, "estimate")
            if noisy is not None:
                noisy_scores = _score_channels(noisy, clean_for_noisy, rate, notes, "noisy")
                for metric in METRICS:
                    scores["noisy_" + metric] = noisy_scores[metric]
                    scores["delta_" + metric] = scores[metric] - noisy_scores[metric]
            # Filled in only once everything succeeded, so a failed row never holds partial scores.
            row.update(scores, status="ok")
        except _PairFailure as failure:
            notes.append(str(failure))
        except Exception as error:  # a batch run reports an unexpected failure and goes on
            notes.append(f"unexpected {type(error).__name__}: {error}")
        row["notes"] = "; ".join(notes)
        rows.append(row)
    return rows


def pairs_from_folders(
    clean_dir: str | os.PathLike[str],
    estimate_dir: str | os.PathLike[str],
    noisy_dir: str | os.PathLike[str] | None = None,
) -> list[Pair]:
    """Pair every audio file in ``clean_dir`` with the file of the same name in the others.

    A missing counterpart still yields a pair, so :func:`evaluate_pairs` reports it by name.

    Args:
        clean_dir: folder of clean references (files with a suffix in :data:`AUDIO_SUFFIXES`).
        estimate_dir: folder of enhanced files with the same names.
        noisy_dir: folder of noisy inputs with the same names, or None.

    Returns:
        ``(name, clean_path, estimate_path, noisy_path or None)`` sorted by name.
    """
    clean_dir, estimate_dir = Path(clean_dir), Path(estimate_dir)
    if not clean_dir.is_dir():
        raise NotADirectoryError(f"clean folder {str(clean_dir)!r} does not exist")
    names = sorted(p.name for p in clean_dir.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    return [
        (name, clean_dir / name, estimate_dir / name, None if noisy_dir is None else Path(noisy_dir) / name)
        for name in names
    ]


# --- summaries -------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricSummary:
    """The mean of one column over the scored files.

    Attributes:
        mean: mean of the finite values (NaN when there are none).
        count: number of finite values averaged.
        nan: number of scored files where the metric was undefined (excluded from the mean).
    """

    mean: float
    count: int
    nan: int


@dataclass(frozen=True)
class Summary:
    """Means over the rows of :func:`evaluate_pairs`.

    Attributes:
        files: number of rows.
        failed: ``(name, reason)`` of each pair that could not be scored.
        metrics: per column (``si_sdr``, ``noisy_pesq``, ``delta_estoi``, ...) present in any
            scored row, its :class:`MetricSummary`.
    """

    files: int
    failed: tuple[tuple[str, str], ...]
    metrics: dict[str, MetricSummary]

    @property
    def scored(self) -> int:
        """Number of pairs that were scored."""
        return self.files - len(self.failed)


def summarise(rows: Sequence[dict[str, Any]]) -> Summary:
    """Means with counts over per-file rows; NaNs are excluded from the means and counted.

    Args:
        rows: rows as :func:`evaluate_pairs` returns them.

    Returns:
        The :class:`Summary`; ``dataclasses.asdict`` gives a JSON-ready dict.
    """
    failed = tuple((str(r["name"]), str(r.get("notes", ""))) for r in rows if r.get("status") != "ok")
    scored = [r for r in rows if r.get("status") == "ok"]
    metrics = {}
    for prefix in ("", "noisy_", "delta_"):
        for metric in METRICS:
            key = prefix + metric
            values = [float(r[key]) for r in scored if r.get(key) is not None]
            if not values:
                continue
            finite = [v for v in values if math.isfinite(v)]
            mean = math.fsum(finite) / len(finite) if finite else math.nan
            metrics[key] = MetricSummary(mean=mean, count=len(finite), nan=len(values) - len(finite))
    return Summary(files=len(rows), failed=failed, metrics=metrics)


def format_table(summary: Summary) -> str:
    """A plain-text table of a :class:`Summary` for the terminal.

    One line per metric (mean, count, NaN count), then its noisy-input and delta lines when
    present, then the failed files with their reasons.
    """
    lines = [f"{'':<16}{'mean':>10}{'n':>7}{'NaN':>6}"]
    for metric in METRICS:
        for prefix, label in (("", _METRIC_LABELS[metric]), ("noisy_", "  noisy input"), ("delta_", "  improvement")):
            entry = summary.metrics.get(prefix + metric)
            if entry is None:
                continue
            sign = "+" if prefix == "delta_" else ""
            mean = f"{entry.mean:{sign}.3f}" if math.isfinite(entry.mean) else "n/a"
            lines.append(f"{label:<16}{mean:>10}{entry.count:>7}{entry.nan:>6}")
    lines.append(f"{summary.files} files: {summary.scored} scored, {len(summary.failed)} failed")
    lines.extend(f"  FAILED {name}: {reason}" for name, reason in summary.failed)
    return "\n".join(lines)


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write per-file rows to a CSV file, refusing to replace an existing file unless asked.

    Columns are the union of the rows' keys in first-seen order; ``None`` is written as an
    empty cell and NaN as ``nan``.

    Args:
        rows: rows as :func:`evaluate_pairs` returns them.
        path: the CSV file to create (its folder is created when missing).
        overwrite: replace an existing file.

    Returns:
        The path written.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    # Mode "x" makes the existence check and the creation one step, so no race can clobber a file.
    try:
        handle = open(path, "w" if overwrite else "x", newline="", encoding="utf-8")
    except FileExistsError:
        raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True to replace it") from None
    with handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path
