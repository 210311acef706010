"""NCSN++-style U-Nets on complex spectrograms: the SGMSE+ score network and StoRM's predictor.

The backbone follows the choices of NCSN++ (Song et al. 2021) that SGMSE+ (Richter et al. 2023)
keeps for speech: residual blocks with GroupNorm and SiLU whose sum with the skip path is
rescaled by ``1/sqrt(2)``, a Gaussian Fourier embedding of ``log t`` injected in every residual
block, self-attention at the lowest resolution, and skip connections from every stage of the
encoder to the decoder. Deliberate simplifications, to keep the default small enough to train
on a CPU: downsampling by a strided convolution and upsampling by nearest-neighbour plus a
convolution (instead of FIR-filtered resampling), no progressive input/output pyramids, and the
time embedding applied as a FiLM scale and shift after the block's second normalisation (as in
Dhariwal & Nichol 2021) rather than as an added bias.

The networks take and return complex spectrograms ``(B, 1, F, T)``, the layout of
:class:`~polydiff_audio.stft.SpectrogramTransform`; real spectrograms in the two-channel layout
``(B, 2, F, T)`` (:func:`~polydiff_audio.stft.complex_to_channels`) are accepted too, and the
output always has the layout of the input. Any ``F`` and ``T`` work: the backbone pads both to a
multiple of ``2^(levels - 1)`` with zeros and crops its output back.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from polydiff.denoiser import Denoiser
from polydiff.parameterization import Prediction

from polydiff_audio.stft import channels_to_complex, complex_to_channels

__all__ = [
    "GaussianFourierEmbedding",
    "ResidualBlock",
    "AttentionBlock",
    "SpectrogramUNet",
    "SpectrogramScoreNet",
    "SpectrogramPredictor",
]

# Times are embedded through log t (SGMSE+ feeds t to NCSN++, which takes the log of its noise
# input); this floor keeps a t = 0 evaluation finite.
_LOG_T_FLOOR = 1e-5


def _groups(channels: int) -> int:
    """GroupNorm groups: NCSN++'s ``min(channels // 4, 32)``, reduced until it divides ``channels``."""
    groups = max(1, min(channels // 4, 32))
    while channels % groups:
        groups -= 1
    return groups


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features of a scalar (Tancik et al. 2020; NCSN++'s time embedding).

    ``[sin(2 pi w s), cos(2 pi w s)]`` with fixed frequencies ``w ~ N(0, scale^2)``, drawn from a
    fixed seed so that two networks built with the same arguments embed time identically.

    Args:
        size: number of frequencies (the embedding has ``2 * size`` features).
        scale: standard deviation of the frequencies (16 in NCSN++ and SGMSE+).

    Shapes:
        s: (B,); returns (B, 2 * size).
    """

    def __init__(self, size: int, scale: float = 16.0):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("freqs", torch.randn(size, generator=generator) * scale)

    def forward(self, s: Tensor) -> Tensor:
        angle = 2 * math.pi * s[:, None].to(self.freqs.dtype) * self.freqs[None, :]
        return torch.cat([angle.sin(), angle.cos()], dim=1)


class ResidualBlock(nn.Module):
    """GroupNorm–SiLU–conv twice, with FiLM time conditioning and a rescaled skip (NCSN++).

    The output is ``(skip(h) + branch(h)) / sqrt(2)``, which keeps the activations' variance from
    growing with depth (NCSN++'s ``skip_rescale``).

    Args:
        in_channels: input channels.
        out_channels: output channels (a 1x1 convolution matches the skip path when they differ).
        emb_dim: size of the time embedding, or ``None`` for a block without time input.
        dropout: dropout probability before the second convolution.

    Shapes:
        h: (B, in_channels, H, W); emb: (B, emb_dim) or None; returns (B, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_channels), in_channels, eps=1e-6)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(out_channels), out_channels, eps=1e-6)
        self.film = nn.Linear(emb_dim, 2 * out_channels) if emb_dim is not None else None
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, h: Tensor, emb: Tensor | None = None) -> Tensor:
        branch = self.conv1(F.silu(self.norm1(h)))
        branch = self.norm2(branch)
        if self.film is not None:
            if emb is None:
                raise ValueError("this residual block is time-conditioned: pass the time embedding")
            scale, shift = self.film(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
            branch = branch * (1 + scale) + shift
        branch = self.conv2(self.dropout(F.silu(branch)))
        return (self.skip(h) + branch) / math.sqrt(2.0)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all time-frequency positions, with a rescaled residual.

    Args:
        channels: feature channels (divisible by ``heads``).
        heads: number of attention heads (NCSN++ uses one).

    Shapes:
        h: (B, channels, H, W); returns the same.
    """

    def __init__(self, channels: int, heads: int = 1):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels cannot be split into {heads} attention heads")
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels), channels, eps=1e-6)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, h: Tensor) -> Tensor:
        b, c, height, width = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(b, 3, self.heads, c // self.heads, height * width).unbind(1)
        attended = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        attended = attended.transpose(-1, -2).reshape(b, c, height, width)
        return (h + self.out(attended)) / math.sqrt(2.0)


class _Stage(nn.Module):
    """A residual block, optionally followed by attention."""

    def __init__(self, block: ResidualBlock, attention: AttentionBlock | None):
        super().__init__()
        self.block = block
        self.attention = attention

    def forward(self, h: Tensor, emb: Tensor | None) -> Tensor:
        h = self.block(h, emb)
        return self.attention(h) if self.attention is not None else h


class _Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        return self.conv(h)


class _Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        return self.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))


class SpectrogramUNet(nn.Module):
    """The real-valued NCSN++-style U-Net both spectrogram networks are built on.

    Level ``i`` works at ``1/2^i`` of the input resolution in both axes with
    ``channels * channel_mult[i]`` features; the encoder has ``num_res_blocks`` residual blocks
    per level, the decoder one more (it also consumes the skip from each downsampling), and the
    bottleneck is residual block, attention, residual block (NCSN++'s middle).

    Args:
        in_channels: input feature maps.
        out_channels: output feature maps.
        channels: base width.
        channel_mult: width multiplier of each level; its length is the number of levels.
        num_res_blocks: residual blocks per level in the encoder.
        attention_levels: levels whose residual blocks are followed by self-attention
            (negative indices count from the lowest resolution, so ``(-1,)`` is the lowest); the
            bottleneck has attention when the lowest level is listed. Attention costs grow with
            the square of the positions, hence the default of the lowest level only.
        attention_heads: heads of every attention block.
        dropout: dropout probability inside the residual blocks.
        time_embedding: whether the network takes a time input (False for a predictive model).
        fourier_scale: scale of the Gaussian Fourier time features.

    Shapes:
        h: (B, in_channels, H, W), any H and W; t: (B,) or None; returns (B, out_channels, H, W).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2, 2, 2),
        num_res_blocks: int = 1,
        attention_levels: tuple[int, ...] = (-1,),
        attention_heads: int = 1,
        dropout: float = 0.0,
        time_embedding: bool = True,
        fourier_scale: float = 16.0,
    ):
        super().__init__()
        channel_mult = tuple(int(m) for m in channel_mult)
        levels = len(channel_mult)
        if levels < 1 or min(channel_mult) < 1:
            raise ValueError(f"channel_mult needs at least one positive multiplier, got {channel_mult}")
        if channels < 1 or num_res_blocks < 1:
            raise ValueError(f"need channels >= 1 and num_res_blocks >= 1, got {channels}, {num_res_blocks}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        bad = [level for level in attention_levels if not -levels <= level < levels]
        if bad:
            raise ValueError(f"attention_levels {bad} out of range for {levels} levels (valid: {-levels} .. {levels - 1})")
        attend = {level % levels for level in attention_levels}
        self.levels = levels
        self.in_channels = in_channels
        self.out_channels = out_channels

        emb_dim = 4 * channels if time_embedding else None
        self.embed = (
            nn.Sequential(
                GaussianFourierEmbedding(channels, fourier_scale),
                nn.Linear(2 * channels, emb_dim),
                nn.SiLU(),
                nn.Linear(emb_dim, emb_dim),
            )
            if time_embedding
            else None
        )

        def stage(cin: int, cout: int, level: int) -> _Stage:
            attention = AttentionBlock(cout, attention_heads) if level in attend else None
            return _Stage(ResidualBlock(cin, cout, emb_dim, dropout), attention)

        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips = [channels]
        width = channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(stage(width, channels * mult, level))
                width = channels * mult
                skips.append(width)
            if level != levels - 1:
                self.down.append(_Downsample(width))
                skips.append(width)

        self.middle = nn.ModuleList(
            [
                stage(width, width, levels - 1),
                _Stage(ResidualBlock(width, width, emb_dim, dropout), None),
            ]
        )

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(stage(width + skips.pop(), channels * mult, level))
                width = channels * mult
            if level != 0:
                self.up.append(_Upsample(width))

        self.head = nn.Sequential(
            nn.GroupNorm(_groups(width), width, eps=1e-6), nn.SiLU(), nn.Conv2d(width, out_channels, 3, padding=1)
        )
        # NCSN++ initialises its output convolution to (nearly) zero: the untrained network
        # predicts zero, not noise of unit size.
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    @property
    def multiple(self) -> int:
        """Both spatial sizes are padded to a multiple of this (``2^(levels - 1)``)."""
        return 2 ** (self.levels - 1)

    def forward(self, h: Tensor, t: Tensor | None = None) -> Tensor:
        if h.ndim != 4 or h.shape[1] != self.in_channels:
            raise ValueError(f"expected input of shape (B, {self.in_channels}, H, W), got {tuple(h.shape)}")
        emb = None
        if self.embed is not None:
            if t is None:
                raise ValueError("this network is time-conditioned: pass t")
            emb = self.embed(torch.log(t.clamp_min(_LOG_T_FLOOR)))
        height, width = h.shape[-2:]
        m = self.multiple
        h = F.pad(h, (0, -width % m, 0, -height % m))

        hs = [self.stem(h)]
        for module in self.down:
            hs.append(module(hs[-1], emb) if isinstance(module, _Stage) else module(hs[-1]))
        h = hs[-1]
        for module in self.middle:
            h = module(h, emb)
        for module in self.up:
            h = module(torch.cat([h, hs.pop()], dim=1), emb) if isinstance(module, _Stage) else module(h)
        return self.head(h)[..., :height, :width]


def _to_channels(spec: Tensor, name: str) -> tuple[Tensor, bool]:
    """A spectrogram as (B, 2, F, T) real, and whether it came in the complex layout."""
    if spec.is_complex():
        if spec.ndim != 4 or spec.shape[1] != 1:
            raise ValueError(f"{name} must be a complex spectrogram (B, 1, F, T), got {tuple(spec.shape)}")
        return complex_to_channels(spec), True
    if spec.ndim != 4 or spec.shape[1] != 2:
        raise ValueError(
            f"{name} must be a complex spectrogram (B, 1, F, T) or its real layout (B, 2, F, T), "
            f"got {spec.dtype} {tuple(spec.shape)}"
        )
    return spec, False


def _per_sample_time(t: Tensor | float, batch: int, device: torch.device) -> Tensor:
    """Times as a real (B,) float32 tensor."""
    t = torch.as_tensor(t, device=device)
    if t.is_complex():
        # Samplers cast times to the state's dtype; for a complex state the imaginary part is 0.
        t = t.real
    t = t.to(torch.float32)
    if t.numel() == 1:
        return t.reshape(1).expand(batch)
    if t.numel() == batch and t.shape[0] == batch:
        return t.reshape(batch)
    raise ValueError(f"expected one time per sample (B={batch},), got times of shape {tuple(t.shape)}")


class SpectrogramScoreNet(Denoiser):
    """The SGMSE+ denoiser: an NCSN++-style U-Net on ``[x_t, y]`` (Richter et al. 2023).

    Called as ``net(x_t, t, cond)`` with the diffusion state ``x_t`` and the noisy spectrogram
    ``y`` as ``cond`` (StoRM passes its predictor's estimate instead, Lemercier et al. 2023);
    their real and imaginary parts form the four input channels and the two output channels
    are the real and imaginary part of the prediction. SGMSE+ trains a score network with the
    loss ``|| sigma score + z ||^2``, which is ``DiffusionModule(loss_space="eps")`` on the
    default ``prediction="score"``; the conversions of :mod:`polydiff.parameterization` are
    elementwise with real coefficients, so they hold for complex tensors as they are.

    Args:
        prediction: what the network outputs (``score`` as in SGMSE+).
        channels, channel_mult, num_res_blocks, attention_levels, attention_heads, dropout,
        fourier_scale: the backbone's, see :class:`SpectrogramUNet`. The defaults make a small
            network that trains on a CPU; SGMSE+'s own is ``channels=128``,
            ``channel_mult=(1, 1, 2, 2, 2, 2, 2)``, ``num_res_blocks=2``.

    Shapes:
        x, cond: (B, 1, F, T) complex, or both (B, 2, F, T) real; t: (B,) or a scalar;
        returns the layout and shape of ``x``.
    """

    def __init__(
        self,
        prediction: Prediction = "score",
        channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2, 2, 2),
        num_res_blocks: int = 1,
        attention_levels: tuple[int, ...] = (-1,),
        attention_heads: int = 1,
        dropout: float = 0.0,
        fourier_scale: float = 16.0,
    ):
        super().__init__(prediction)
        self.backbone = SpectrogramUNet(
            in_channels=4,
            out_channels=2,
            channels=channels,
            channel_mult=channel_mult,
            num_res_blocks=num_res_blocks,
            attention_levels=attention_levels,
            attention_heads=attention_heads,
            dropout=dropout,
            time_embedding=True,
            fourier_scale=fourier_scale,
        )

    def forward(self, x: Tensor, t: Tensor | float, cond: Any = None) -> Tensor:
        if cond is None:
            raise ValueError("SpectrogramScoreNet is conditioned on the noisy spectrogram: pass it as cond")
        state, as_complex = _to_channels(x, "x")
        noisy, cond_complex = _to_channels(cond, "cond")
        if as_complex != cond_complex or state.shape != noisy.shape:
            raise ValueError(
                f"x and cond must have the same layout and shape, got {x.dtype} {tuple(x.shape)} and "
                f"{cond.dtype} {tuple(cond.shape)}"
            )
        t = _per_sample_time(t, x.shape[0], x.device)
        dtype = self.backbone.stem.weight.dtype
        out = self.backbone(torch.cat([state, noisy], dim=1).to(dtype), t)
        return channels_to_complex(out) if as_complex else out


class SpectrogramPredictor(nn.Module):
    """StoRM's predictive network: the clean spectrogram estimated from the noisy one in one pass.

    The same backbone as :class:`SpectrogramScoreNet` with the noisy spectrogram as its only
    input and no time input (Lemercier et al. 2023 train it with a plain MSE to the clean
    spectrogram; the diffusion model then regenerates from its estimate).

    Args:
        channels, channel_mult, num_res_blocks, attention_levels, attention_heads, dropout: the
            backbone's, see :class:`SpectrogramUNet`.
        residual: output ``y + backbone(y)``; the backbone's last layer starts at zero, so the
            untrained network passes the noisy input through and training only has to learn the
            correction. StoRM's predictor outputs the estimate directly (``False``), so an
            untrained one outputs zero instead of the input.

    Shapes:
        y: (B, 1, F, T) complex or (B, 2, F, T) real; returns the layout and shape of ``y``.
    """

    def __init__(
        self,
        channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2, 2, 2),
        num_res_blocks: int = 1,
        attention_levels: tuple[int, ...] = (-1,),
        attention_heads: int = 1,
        dropout: float = 0.0,
        residual: bool = False,
    ):
        super().__init__()
        self.residual = bool(residual)
        self.backbone = SpectrogramUNet(
            in_channels=2,
            out_channels=2,
            channels=channels,
            channel_mult=channel_mult,
            num_res_blocks=num_res_blocks,
            attention_levels=attention_levels,
            attention_heads=attention_heads,
            dropout=dropout,
            time_embedding=False,
        )

    def forward(self, y: Tensor) -> Tensor:
        noisy, as_complex = _to_channels(y, "y")
        noisy = noisy.to(self.backbone.stem.weight.dtype)
        out = self.backbone(noisy)
        if self.residual:
            out = noisy + out
        return channels_to_complex(out) if as_complex else out
