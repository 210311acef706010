"""The complex-spectrogram representation of SGMSE+ and StoRM, and its exact inverse.

SGMSE+ (Richter et al. 2023) and StoRM (Lemercier et al. 2023) diffuse in the complex STFT
domain after an amplitude compression ``c(X) = beta |X|^alpha e^{i angle X}`` with
``alpha = 0.5`` and ``beta = 0.15``: the square root lifts the quiet time-frequency bins that
carry most of the perceptually relevant detail, and the scale brings the coefficients to roughly
unit range for the diffusion noise levels the Ornstein–Uhlenbeck bridge uses. The STFT itself
matches theirs: ``n_fft = 510`` (exactly 256 frequency bins, a power of two for the U-Net),
hop 128, a periodic Hann window, frames centred with reflect padding, and no normalisation of
the transform (their ``beta`` was tuned for the unnormalised STFT).

Networks consume real tensors, so this module also converts between the complex layout
``(B, C, F, T)`` users hold and the real layout ``(B, 2C, F, T)`` (real and imaginary part of
each audio channel side by side), and pads the frame axis to the multiple a U-Net needs.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "Window",
    "WINDOWS",
    "PadMode",
    "PAD_MODES",
    "SpectrogramTransform",
    "complex_to_channels",
    "channels_to_complex",
    "pad_frames",
    "crop_frames",
]

Window = Literal["hann", "sqrthann"]
WINDOWS: tuple[str, ...] = get_args(Window)
PadMode = Literal["reflect", "constant"]
PAD_MODES: tuple[str, ...] = get_args(PadMode)


class SpectrogramTransform:
    """Compressed complex STFT and its exact inverse (SGMSE+, Richter et al. 2023, Sec. IV).

    ``forward`` computes ``beta |X|^alpha e^{i angle X}`` of the STFT ``X``; ``inverse`` undoes
    the compression and the STFT, so ``inverse(forward(wav), S)`` returns ``wav`` up to rounding.
    Instances are immutable; build a new one to change a setting.

    Args:
        n_fft: FFT size; ``n_fft // 2 + 1`` frequency bins (510 gives 256, SGMSE+'s choice).
        hop_length: samples between frames (128 in SGMSE+, 75 % overlap).
        window: ``hann`` (periodic Hann, SGMSE+'s default) or ``sqrthann`` (its square root,
            SGMSE+'s alternative); both satisfy the overlap-add condition the inverse needs.
        alpha: amplitude compression exponent, in (0, 1]; 1 disables the compression.
        beta: scale applied after the compression.
        pad_mode: how the signal is extended by ``n_fft // 2`` samples at each end to centre
            the frames: ``reflect`` (torch's and SGMSE+'s default; needs more than
            ``n_fft // 2`` samples) or ``constant`` (zeros; works for any length).
    """

    def __init__(
        self,
        n_fft: int = 510,
        hop_length: int = 128,
        window: Window = "hann",
        alpha: float = 0.5,
        beta: float = 0.15,
        pad_mode: PadMode = "reflect",
    ):
        if int(n_fft) != n_fft or n_fft < 2:
            raise ValueError(f"n_fft must be an integer >= 2, got {n_fft!r}")
        if int(hop_length) != hop_length or not 1 <= hop_length <= n_fft:
            raise ValueError(f"hop_length must be an integer in [1, n_fft={n_fft}], got {hop_length!r}")
        if window not in WINDOWS:
            raise ValueError(f"unknown window {window!r}; valid: {', '.join(WINDOWS)}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"unknown pad_mode {pad_mode!r}; valid: {', '.join(PAD_MODES)}")
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.window = window
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.pad_mode = pad_mode
        object.__setattr__(self, "_frozen", True)

    def __setattr__(self, name, value):  # immutable once constructed, like the core's schedules
        if getattr(self, "_frozen", False):
            raise AttributeError(f"{type(self).__name__} is immutable; build a new one instead")
        super().__setattr__(name, value)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_fft={self.n_fft}, hop_length={self.hop_length}, "
            f"window={self.window!r}, alpha={self.alpha}, beta={self.beta}, pad_mode={self.pad_mode!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpectrogramTransform):
            return NotImplemented
        return repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))

    # --- sizes ---------------------------------------------------------------------------------
    @property
    def num_bins(self) -> int:
        """Number of frequency bins ``F = n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    def num_frames(self, num_samples: int) -> int:
        """Number of frames ``T = 1 + num_samples // hop_length`` of a centred STFT."""
        return 1 + int(num_samples) // self.hop_length

    @property
    def min_samples(self) -> int:
        """The shortest signal :meth:`forward` accepts (reflect padding needs ``n_fft // 2 + 1``)."""
        return self.n_fft // 2 + 1 if self.pad_mode == "reflect" else 1

    def make_window(self, *, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        """The analysis (and synthesis) window, length ``n_fft``."""
        # Periodic, as torch.stft expects for a window that tiles exactly under overlap-add.
        hann = torch.hann_window(self.n_fft, periodic=True, dtype=dtype, device=device)
        return hann.sqrt() if self.window == "sqrthann" else hann

    # --- amplitude compression -----------------------------------------------------------------
    def compress(self, spec: Tensor) -> Tensor:
        """``beta |X|^alpha e^{i angle X}`` elementwise (SGMSE+'s amplitude compression).

        Shapes:
            spec: complex, any shape; returns the same shape and dtype.
        """
        _check_complex(spec, "compress")
        if self.alpha == 1.0:
            return spec * self.beta
        # torch.polar keeps exact zeros at zero (angle(0) = 0), where |X|^(alpha-1) X would be 0 * inf.
        return torch.polar(self.beta * spec.abs().pow(self.alpha), spec.angle())

    def decompress(self, spec: Tensor) -> Tensor:
        """The inverse of :meth:`compress`: ``(|S| / beta)^(1/alpha) e^{i angle S}``.

        Shapes:
            spec: complex, any shape; returns the same shape and dtype.
        """
        _check_complex(spec, "decompress")
        if self.alpha == 1.0:
            return spec / self.beta
        return torch.polar((spec.abs() / self.beta).pow(1.0 / self.alpha), spec.angle())

    # --- the transform -------------------------------------------------------------------------
    def forward(self, wav: Tensor) -> Tensor:
        """Compressed complex spectrogram of a batch of (multi-channel) waveforms.

        Args:
            wav: real waveforms.

        Returns:
            ``beta |X|^alpha e^{i angle X}`` of the STFT ``X``, complex64 for float32 input
            (complex128 for float64).

        Shapes:
            wav: (B, C, S); returns (B, C, F, T) with ``F = n_fft // 2 + 1`` and
            ``T = 1 + S // hop_length``.

        Raises:
            ValueError: for a tensor that is not (B, C, S) real audio, or a signal shorter than
                :attr:`min_samples`.
        """
        if wav.ndim != 3 or wav.is_complex() or not wav.is_floating_point():
            raise ValueError(
                f"expected real floating-point waveforms of shape (B, C, S), got {wav.dtype} {tuple(wav.shape)}"
            )
        batch, channels, samples = wav.shape
        if samples < self.min_samples:
            raise ValueError(
                f"a signal of {samples} samples is too short for a centred STFT with n_fft={self.n_fft} and "
                f"pad_mode={self.pad_mode!r}: it needs at least {self.min_samples} samples"
            )
        window = self.make_window(dtype=wav.dtype, device=wav.device)
        spec = torch.stft(
            wav.reshape(batch * channels, samples),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=window,
            center=True,
            pad_mode=self.pad_mode,
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        return self.compress(spec.reshape(batch, channels, *spec.shape[-2:]))

    __call__ = forward

    def inverse(self, spec: Tensor, length: int) -> Tensor:
        """Waveforms from compressed spectrograms: undoes the compression, then the STFT.

        Args:
            spec: a compressed complex spectrogram as :meth:`forward` returns it.
            length: the number of samples of the original signal (the frame count alone
                leaves up to ``hop_length - 1`` samples undetermined).

        Shapes:
            spec: (B, C, F, T) complex; returns (B, C, length) real.
        """
        if spec.ndim != 4 or not spec.is_complex():
            raise ValueError(f"expected a complex spectrogram of shape (B, C, F, T), got {spec.dtype} {tuple(spec.shape)}")
        if spec.shape[2] != self.num_bins:
            raise ValueError(f"expected {self.num_bins} frequency bins for n_fft={self.n_fft}, got {spec.shape[2]}")
        if int(length) != length or length < 1:
            raise ValueError(f"length must be a positive integer, got {length!r}")
        batch, channels, bins, frames = spec.shape
        linear = self.decompress(spec).reshape(batch * channels, bins, frames)
        window = self.make_window(dtype=linear.real.dtype, device=spec.device)
        wav = torch.istft(
            linear,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=window,
            center=True,
            normalized=False,
            onesided=True,
            length=int(length),
        )
        return wav.reshape(batch, channels, int(length))


def _check_complex(spec: Tensor, what: str) -> None:
    if not spec.is_complex():
        raise TypeError(f"{what} needs a complex tensor, got {spec.dtype}")


# --- layouts ---------------------------------------------------------------------------------
def complex_to_channels(spec: Tensor) -> Tensor:
    """Real layout of a complex spectrogram: real and imaginary part of each channel in turn.

    Channel ``2c`` holds the real part of audio channel ``c`` and ``2c + 1`` its imaginary part.

    Shapes:
        spec: (B, C, F, T) complex; returns (B, 2C, F, T) real.
    """
    if spec.ndim < 2 or not spec.is_complex():
        raise ValueError(f"expected a complex tensor (B, C, ...), got {spec.dtype} {tuple(spec.shape)}")
    return torch.stack([spec.real, spec.imag], dim=2).flatten(1, 2)


def channels_to_complex(channels: Tensor) -> Tensor:
    """The inverse of :func:`complex_to_channels`.

    Shapes:
        channels: (B, 2C, F, T) real; returns (B, C, F, T) complex.
    """
    if channels.ndim < 2 or channels.is_complex() or channels.shape[1] % 2:
        raise ValueError(
            f"expected a real tensor (B, 2C, ...) with an even channel count, got {channels.dtype} "
            f"{tuple(channels.shape)}"
        )
    return torch.complex(channels[:, 0::2], channels[:, 1::2])


# --- frame padding ---------------------------------------------------------------------------
def pad_frames(spec: Tensor, multiple: int) -> tuple[Tensor, int]:
    """Zero-pad the last (frame) axis to a multiple of ``multiple``.

    A U-Net that halves the frame axis ``k`` times needs ``T`` divisible by ``2^k``; SGMSE+ pads
    with zeros (silence) at the end for the same reason. Returns the padded tensor and the
    original frame count for :func:`crop_frames`; the input is never modified.

    Shapes:
        spec: (..., T), real or complex; returns (..., T') with ``T' = ceil(T / multiple) * multiple``.
    """
    if int(multiple) != multiple or multiple < 1:
        raise ValueError(f"multiple must be a positive integer, got {multiple!r}")
    frames = spec.shape[-1]
    missing = -frames % int(multiple)
    if missing == 0:
        return spec, frames
    return F.pad(spec, (0, missing)), frames


def crop_frames(spec: Tensor, frames: int) -> Tensor:
    """Undo :func:`pad_frames`: keep the first ``frames`` frames.

    Shapes:
        spec: (..., T') with ``T' >= frames``; returns (..., frames).
    """
    if frames > spec.shape[-1]:
        raise ValueError(f"cannot crop {spec.shape[-1]} frames to {frames}")
    return spec[..., :frames]
