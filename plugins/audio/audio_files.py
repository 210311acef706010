"""Reading, writing and checking audio files through soundfile (libsndfile).

Every waveform that crosses this module's interface is a float32 tensor shaped
``(channels, samples)`` with values in [-1, 1]. Files at any sample rate are resampled on read
with an exact rational polyphase filter, so ``read_audio(path, rate=16000)`` gives the same
result for a 8, 22.05 or 48 kHz file as a resampler that knows nothing about the file would.

Bad input is reported as :class:`AudioError`, which names the file and the reason, so that a
caller processing a folder can report each bad file and go on with the others.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioError",
    "check_audio",
    "find_audio_files",
    "read_audio",
    "resample",
    "write_audio",
]

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3")
"""File name endings :func:`find_audio_files` lists (those libsndfile reads, where it can)."""

# libsndfile's format names for the endings above; MP3 is readable only from libsndfile 1.1 on.
_FORMAT_OF_EXTENSION = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}

SILENCE_DBFS = -80.0
"""RMS level (dB relative to full scale) below which a signal counts as silent."""

CLIP_LEVEL = 0.999
"""Magnitude at or above which a sample counts as clipped (16-bit full scale is 0.99997)."""

CLIP_FRACTION = 0.001
"""Fraction of clipped samples (0.1 %) from which a signal counts as clipped."""


class AudioError(ValueError):
    """A file (or in-memory signal) that cannot be used as audio, with the reason.

    Args:
        path: the file (or a label such as ``"<input>"`` for an in-memory signal).
        reason: why it cannot be used, in words a user can act on.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type[AudioError], tuple[str, str]]:
        # DataLoader workers pickle exceptions back to the main process; keep both fields.
        return (type(self), (self.path, self.reason))


def resample(wav: torch.Tensor, orig_rate: int, rate: int) -> torch.Tensor:
    """Resample along the last axis by the exact rational factor ``rate / orig_rate``.

    Uses :func:`scipy.signal.resample_poly` (polyphase FIR, Kaiser window) with the factor
    reduced by the greatest common divisor, so 22050 -> 16000 Hz is up 320, down 441 with no
    rounding of the rate.

    Args:
        wav: the signal.
        orig_rate: its sample rate in Hz.
        rate: the wanted sample rate in Hz.

    Returns:
        The resampled signal, float32, ``ceil(samples * rate / orig_rate)`` samples long.

    Shapes:
        wav: ``(..., samples)`` -> ``(..., samples')``.
    """
    if orig_rate <= 0 or rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} -> {rate}")
    if orig_rate == rate:
        return wav.to(torch.float32)
    from scipy.signal import resample_poly

    divisor = math.gcd(int(orig_rate), int(rate))
    up, down = int(rate) // divisor, int(orig_rate) // divisor
    # float64 for the filter: resample_poly accumulates long FIR sums.
    out = resample_poly(wav.detach().cpu().numpy().astype(np.float64), up, down, axis=-1)
    return torch.from_numpy(out.astype(np.float32))


def read_audio(
    path: str | os.PathLike[str],
    *,
    rate: int | None = 16000,
    start: int = 0,
    stop: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Read an audio file, resampled to ``rate``.

    Args:
        path: any file libsndfile reads (WAV, FLAC, OGG, MP3, ...).
        rate: the sample rate to return, in Hz; ``None`` keeps the file's own rate.
        start: first frame to read, counted at the file's own rate.
        stop: frame after the last to read, at the file's own rate; ``None`` reads to the end.

    Returns:
        ``(wav, original_rate)``: the float32 waveform in [-1, 1] and the file's sample rate.

    Shapes:
        wav: ``(channels, samples)``; a mono file gives ``(1, samples)``.

    Raises:
        AudioError: the file is missing, is not audio, cannot be decoded, or holds no samples.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "no such file" if not path.exists() else "not a regular file")
    try:
        data, original_rate = sf.read(path, start=start, stop=stop, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        # libsndfile says "Format not recognised" for text and other non-audio files.
        raise AudioError(path, f"not readable as audio ({exc})") from None
    if data.size == 0:
        raise AudioError(path, "empty: the file holds no audio samples")
    wav = torch.from_numpy(np.ascontiguousarray(data.T))
    if rate is not None:
        wav = resample(wav, original_rate, rate)
    return wav, int(original_rate)


def write_audio(
    path: str | os.PathLike[str],
    wav: torch.Tensor | np.ndarray,
    rate: int,
    *,
    subtype: str | None = "PCM_16",
    overwrite: bool = False,
) -> Path:
    """Write a waveform; never replaces an existing file unless ``overwrite`` is set.

    The format follows the file name's ending (``.wav``, ``.flac``, ``.ogg``, ...); missing
    parent folders are created. Samples outside [-1, 1] would wrap around in an integer format,
    so they are clipped, with a warning naming the file.

    Args:
        path: where to write.
        wav: the signal, float, values in [-1, 1].
        rate: its sample rate in Hz.
        subtype: the libsndfile sample format (``"PCM_16"``, ``"PCM_24"``, ``"FLOAT"``, ...);
            for a format that does not support it (OGG Vorbis, MP3) the format's default is used.
        overwrite: replace an existing file.

    Returns:
        The path written.

    Shapes:
        wav: ``(channels, samples)`` or ``(samples,)``.

    Raises:
        FileExistsError: the file exists and ``overwrite`` is false.
        ValueError: the signal is empty or holds NaN or infinite values, or the ending names
            no format libsndfile writes.
    """
    import soundfile as sf

    path = Path(path)
    data = wav.detach().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    if data.ndim == 1:
        data = data[None]
    if data.ndim != 2 or data.shape[-1] == 0:
        raise ValueError(
            f"{path}: expected a non-empty (channels, samples) signal, got shape {tuple(data.shape)}"
        )
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: refusing to write a signal holding NaN or infinite values")
    file_format = _FORMAT_OF_EXTENSION.get(path.suffix.lower()) or path.suffix.lstrip(".").upper()
    if file_format not in sf.available_formats():
        raise ValueError(
            f"{path}: unknown audio format {path.suffix!r}; use one of {', '.join(AUDIO_EXTENSIONS)}"
        )
    if subtype is not None and not sf.check_format(file_format, subtype):
        subtype = None
    data = data.astype(np.float32 if data.dtype != np.float64 else np.float64)
    outside = int((np.abs(data) > 1.0).sum())
    if outside:
        log.warning("%s: clipping %d samples outside [-1, 1] before writing", path, outside)
        data = np.clip(data, -1.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Mode "x" makes the no-overwrite rule atomic: another process cannot slip a file in between
    # a check and the write.
    try:
        handle = open(path, "wb" if overwrite else "xb")  # noqa: SIM115 - closed below, removed on failure
    except FileExistsError:
        raise FileExistsError(
            f"{path}: refusing to overwrite an existing file (pass overwrite=True)"
        ) from None
    try:
        with handle:
            sf.write(handle, data.T, int(rate), subtype=subtype, format=file_format)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def check_audio(
    wav: torch.Tensor,
    rate: int,
    *,
    min_samples: int,
    path: str | os.PathLike[str] = "<input>",
    silence_dbfs: float = SILENCE_DBFS,
    clip_level: float = CLIP_LEVEL,
    clip_fraction: float = CLIP_FRACTION,
) -> None:
    """Raise :class:`AudioError` if a signal is unusable as speech input.

    The checks, in order: empty; NaN or infinite values; shorter than ``min_samples`` (e.g. one
    STFT frame); silent (RMS below ``silence_dbfs``, all zeros included); clipped (at least
    ``clip_fraction`` of the samples at ``|x| >= clip_level``). Unreadable files are reported by
    :func:`read_audio` already.

    Args:
        wav: the signal, values nominally in [-1, 1].
        rate: its sample rate in Hz (for durations in the messages).
        min_samples: the fewest samples the caller can process.
        path: the file the signal came from, named in the error.
        silence_dbfs: RMS level in dBFS below which the signal is silent.
        clip_level: magnitude counted as full scale.
        clip_fraction: fraction of full-scale samples that makes a signal clipped.

    Shapes:
        wav: ``(channels, samples)`` or ``(samples,)``.

    Raises:
        AudioError: naming ``path`` and the failed check.
    """
    samples = wav.shape[-1] if wav.ndim else 0
    if wav.numel() == 0:
        raise AudioError(path, "empty: no audio samples")
    if not torch.isfinite(wav).all():
        raise AudioError(path, "holds NaN or infinite sample values")
    if samples < min_samples:
        raise AudioError(
            path,
            f"too short: {samples} samples ({samples / rate * 1000:.1f} ms) at {rate} Hz, "
            f"fewer than the {min_samples} needed for one STFT frame",
        )
    x = wav.to(torch.float64)
    rms = float(x.square().mean().sqrt())
    level = 20 * math.log10(rms) if rms > 0 else -math.inf
    if level < silence_dbfs:
        what = "all samples are zero" if rms == 0 else f"RMS level {level:.1f} dBFS"
        raise AudioError(path, f"silent: {what} (below {silence_dbfs:g} dBFS)")
    clipped = float((x.abs() >= clip_level).to(torch.float64).mean())
    if clipped >= clip_fraction:
        raise AudioError(
            path,
            f"clipped: {clipped * 100:.2f}% of samples at full scale (|x| >= {clip_level:g}; "
            f"the limit is {clip_fraction * 100:g}%)",
        )


def find_audio_files(
    folder: str | os.PathLike[str],
    *,
    recursive: bool = False,
    extensions: Iterable[str] = AUDIO_EXTENSIONS,
) -> list[Path]:
    """List the audio files in a folder, sorted by path.

    Endings are matched case-insensitively; an ending whose format this libsndfile cannot read
    (MP3 before libsndfile 1.1) is left out. Hidden files (``.name``) are skipped.

    Args:
        folder: the folder to list.
        recursive: also list sub-folders.
        extensions: file name endings to list, with the dot.

    Returns:
        The files, sorted.

    Raises:
        NotADirectoryError: ``folder`` is not a folder.
    """
    import soundfile as sf

    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    readable = sf.available_formats()
    wanted = {
        ext.lower()
        for ext in extensions
        if _FORMAT_OF_EXTENSION.get(ext.lower(), ext.lstrip(".").upper()) in readable
    }
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p for p in candidates if p.suffix.lower() in wanted and not p.name.startswith(".") and p.is_file()
    )
