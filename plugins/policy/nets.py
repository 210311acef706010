"""Noise-prediction networks of Diffusion Policy (Chi et al. 2023) and their observation encoders.

Both denoisers follow the core's contract, ``denoiser(x, t, cond)``, on action sequences
``x`` of shape (B, horizon, action_dim). The condition is the observation history: a mapping with
``obs`` (B, obs_horizon, obs_dim), the normalised low-dimensional features, and optionally
``image`` (B, obs_horizon, 3, H, W) in [0, 1]; or that history already encoded by
:meth:`PolicyDenoiser.encode_obs` (a (B, C) tensor), so that a sampler's many network calls encode
the observations once.

* :class:`ConditionalUnet1D` — the CNN variant: a 1D temporal U-Net whose residual blocks are
  FiLM-modulated (per-channel scale and bias) by the diffusion time and the observation
  features.
* :class:`TransformerDenoiser` — the transformer variant: action tokens attend to themselves and,
  by cross-attention, to a time token and one token per observation frame.
* :class:`ImageEncoder` — a small ResNet-style CNN with GroupNorm and a spatial-softmax readout
  (Diffusion Policy's choices for its ResNet-18, at a size that trains on a CPU and needs no
  pretrained weights).

The data-dependent sizes (action and observation dimensions, horizons, whether images are used)
are set by :meth:`PolicyDenoiser.build` from the data description, so the same YAML config serves
any dataset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from polydiff.denoiser import Denoiser
from polydiff.parameterization import Prediction

__all__ = [
    "PolicyDenoiser", "ConditionalUnet1D", "TransformerDenoiser", "ImageEncoder", "TimeEmbedding",
]


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of the diffusion time followed by an MLP.

    The time t in [0, 1] is scaled by 1000 so the frequencies match the usual discrete-step
    embeddings (a 100- or 1000-step model sees the same features as its integer steps).
    """

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"the time embedding needs an even size, got {dim}")
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 4), nn.Mish(), nn.Linear(dim * 4, dim))

    def forward(self, t: Tensor) -> Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half - 1, 1))
        angles = 1000.0 * t.float().reshape(-1, 1) * freqs
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))


class _ResidualBlock2d(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(min(groups, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(min(groups, cout), cout)
        self.skip = (nn.Identity() if stride == 1 and cin == cout
                     else nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.GroupNorm(min(groups, cout), cout)))

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(h)) + self.skip(x))


class ImageEncoder(nn.Module):
    """A small ResNet-style image encoder with a spatial-softmax readout.

    GroupNorm instead of BatchNorm (EMA weights and small batches make batch statistics
    unreliable) and a spatial softmax that turns each of ``keypoints`` feature maps into an
    expected (x, y) position, as Diffusion Policy does for its ResNet-18 (Chi et al. 2023, §3.3).

    Args:
        channels: widths of the stem and of the three residual stages.
        keypoints: number of spatial-softmax keypoints; the output has ``2 * keypoints`` features
            followed by a linear layer to ``features``.
        features: output size.
        groups: GroupNorm groups.

    Shapes:
        images: (N, 3, H, W) in [0, 1]; returns (N, features).
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64, 64), keypoints: int = 32, features: int = 64,
                 groups: int = 8):
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"channels must give the stem and three stage widths, got {list(channels)}")
        c0, c1, c2, c3 = (int(c) for c in channels)
        self.stem = nn.Sequential(nn.Conv2d(3, c0, 5, stride=2, padding=2, bias=False), nn.GroupNorm(min(groups, c0), c0), nn.ReLU())
        self.stages = nn.Sequential(_ResidualBlock2d(c0, c1, 1, groups), _ResidualBlock2d(c1, c2, 2, groups),
                                    _ResidualBlock2d(c2, c3, 2, groups))
        self.keypoint_maps = nn.Conv2d(c3, keypoints, 1)
        self.out = nn.Linear(2 * keypoints, features)
        self.features = int(features)

    def forward(self, images: Tensor) -> Tensor:
        h = self.keypoint_maps(self.stages(self.stem(images * 2.0 - 1.0)))
        n, k, hh, ww = h.shape
        attention = torch.softmax(h.reshape(n, k, hh * ww), dim=-1).reshape(n, k, hh, ww)
        ys = torch.linspace(-1.0, 1.0, hh, device=h.device, dtype=h.dtype)
        xs = torch.linspace(-1.0, 1.0, ww, device=h.device, dtype=h.dtype)
        expected_x = (attention.sum(dim=2) * xs).sum(dim=-1)
        expected_y = (attention.sum(dim=3) * ys).sum(dim=-1)
        return self.out(torch.cat([expected_x, expected_y], dim=-1))


class PolicyDenoiser(Denoiser):
    """What both Diffusion Policy networks share: the data-dependent build and the observation encoding.

    Args:
        prediction: what the network predicts (Diffusion Policy predicts ``eps``).
        image_encoder: the encoder used when the data has an image feature (a default
            :class:`ImageEncoder` is made if ``None``); ignored for low-dimensional data.
    """

    def __init__(self, prediction: Prediction = "eps", image_encoder: ImageEncoder | None = None):
        super().__init__(prediction=prediction)
        # Kept only when the data has images (build drops it otherwise), so a configured but
        # unused encoder is neither saved nor optimised.
        self.image_encoder: ImageEncoder | None = image_encoder
        self.built = False
        self.action_dim = self.obs_dim = self.obs_horizon = self.horizon = 0
        self.uses_image = False

    # --- sizes from the data -------------------------------------------------------------------
    def build(self, action_dim: int, obs_dim: int, obs_horizon: int, horizon: int, image: bool = False) -> "PolicyDenoiser":
        """Create the layers whose sizes come from the data. Calling it again with the same sizes
        does nothing; other sizes are an error."""
        sizes = (int(action_dim), int(obs_dim), int(obs_horizon), int(horizon), bool(image))
        if self.built:
            if sizes != (self.action_dim, self.obs_dim, self.obs_horizon, self.horizon, self.uses_image):
                raise ValueError(
                    f"the network was built for (action_dim, obs_dim, obs_horizon, horizon, image) = "
                    f"{(self.action_dim, self.obs_dim, self.obs_horizon, self.horizon, self.uses_image)}, not {sizes}"
                )
            return self
        if min(sizes[:4]) < 1 and not (sizes[1] == 0 and image):
            raise ValueError(f"action_dim, obs_dim, obs_horizon and horizon must be positive, got {sizes[:4]}")
        self.action_dim, self.obs_dim, self.obs_horizon, self.horizon, self.uses_image = sizes
        if image:
            self.image_encoder = self.image_encoder if self.image_encoder is not None else ImageEncoder()
        else:
            self.image_encoder = None
        self._build(self.frame_features)
        self.built = True
        return self

    @property
    def frame_features(self) -> int:
        """Features of one encoded observation frame."""
        return self.obs_dim + (self.image_encoder.features if self.image_encoder is not None else 0)

    def _build(self, frame_features: int) -> None:
        raise NotImplementedError

    def encode_obs(self, cond: Any) -> Tensor:
        """The observation history as per-frame features, (B, obs_horizon, frame_features).

        ``cond`` is the mapping of the module docstring, or an already encoded tensor (returned
        as it is).
        """
        if not self.built:
            raise RuntimeError(f"{type(self).__name__}.build(...) must be called before use")
        if isinstance(cond, Tensor):
            return cond
        if not isinstance(cond, Mapping) or "obs" not in cond:
            raise TypeError("the condition must be a mapping with 'obs' (and 'image' for image policies)")
        obs = cond["obs"]
        if obs.ndim != 3 or obs.shape[1] != self.obs_horizon or obs.shape[2] != self.obs_dim:
            raise ValueError(
                f"observations of shape {tuple(obs.shape)} do not fit the network, which expects "
                f"(B, {self.obs_horizon}, {self.obs_dim})"
            )
        parts = [obs.float()]
        if self.image_encoder is not None:
            images = cond.get("image")
            if images is None:
                raise ValueError("this policy observes images: the condition needs an 'image' entry")
            b, n = images.shape[:2]
            feats = self.image_encoder(images.reshape(b * n, *images.shape[2:]).float())
            parts.append(feats.reshape(b, n, -1))
        return torch.cat(parts, dim=-1)

    def drop_cond(self, cond: Any, mask: Tensor) -> Any:
        raise NotImplementedError("Diffusion Policy does not train an unconditional model (cond_dropout must be 0)")


class _FiLMResidualBlock(nn.Module):
    """Two Conv1d-GroupNorm-Mish blocks, the first output FiLM-modulated by the condition."""

    def __init__(self, cin: int, cout: int, cond_dim: int, kernel_size: int, groups: int):
        super().__init__()
        pad = kernel_size // 2
        self.block1 = nn.Sequential(nn.Conv1d(cin, cout, kernel_size, padding=pad), nn.GroupNorm(groups, cout), nn.Mish())
        self.block2 = nn.Sequential(nn.Conv1d(cout, cout, kernel_size, padding=pad), nn.GroupNorm(groups, cout), nn.Mish())
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * cout))
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        scale, bias = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        h = self.block1(x) * (1.0 + scale) + bias
        return self.block2(h) + self.skip(x)


class ConditionalUnet1D(PolicyDenoiser):
    """Diffusion Policy's CNN denoiser: a 1D temporal U-Net with FiLM conditioning.

    The global condition is the time embedding concatenated with the flattened observation
    features of all ``obs_horizon`` frames; every residual block turns it into a per-channel
    scale and bias (FiLM, Perez et al. 2018). The sequence is halved at each level but the last
    and restored on the way up with skip connections.

    Args:
        down_dims: channel widths of the levels (Diffusion Policy uses 256, 512, 1024; the default
            is a CPU-sized network).
        kernel_size: temporal kernel of the convolutions.
        groups: GroupNorm groups.
        time_dim: size of the diffusion-time embedding.
        prediction: what the network predicts.
        image_encoder: see :class:`PolicyDenoiser`.

    Shapes:
        x: (B, horizon, action_dim); t: (B,); returns (B, horizon, action_dim).
    """

    def __init__(self, down_dims: Sequence[int] = (64, 128, 256), kernel_size: int = 5, groups: int = 8,
                 time_dim: int = 64, prediction: Prediction = "eps", image_encoder: ImageEncoder | None = None):
        super().__init__(prediction=prediction, image_encoder=image_encoder)
        if not down_dims or any(int(d) % groups for d in down_dims):
            raise ValueError(f"down_dims must be non-empty multiples of groups={groups}, got {list(down_dims)}")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.down_dims = [int(d) for d in down_dims]
        self.kernel_size, self.groups, self.time_dim = int(kernel_size), int(groups), int(time_dim)

    def _build(self, frame_features: int) -> None:
        if self.horizon % (2 ** (len(self.down_dims) - 1)):
            raise ValueError(
                f"the prediction horizon {self.horizon} must be divisible by {2 ** (len(self.down_dims) - 1)} "
                f"for a U-Net with {len(self.down_dims)} levels"
            )
        k, g = self.kernel_size, self.groups
        cond_dim = self.time_dim + frame_features * self.obs_horizon
        self.time_embedding = TimeEmbedding(self.time_dim)
        dims = [self.action_dim, *self.down_dims]
        self.down = nn.ModuleList()
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            last = i == len(self.down_dims) - 1
            self.down.append(nn.ModuleList([
                _FiLMResidualBlock(cin, cout, cond_dim, k, g), _FiLMResidualBlock(cout, cout, cond_dim, k, g),
                nn.Conv1d(cout, cout, 3, stride=2, padding=1) if not last else nn.Identity(),
            ]))
        mid = self.down_dims[-1]
        self.mid = nn.ModuleList([_FiLMResidualBlock(mid, mid, cond_dim, k, g), _FiLMResidualBlock(mid, mid, cond_dim, k, g)])
        self.up = nn.ModuleList()
        for cout, cin in zip(reversed(self.down_dims[:-1]), reversed(self.down_dims[1:])):
            self.up.append(nn.ModuleList([
                _FiLMResidualBlock(cin * 2, cout, cond_dim, k, g), _FiLMResidualBlock(cout, cout, cond_dim, k, g),
                nn.ConvTranspose1d(cout, cout, 4, stride=2, padding=1),
            ]))
        first = self.down_dims[0]
        self.final = nn.Sequential(nn.Conv1d(first, first, k, padding=k // 2), nn.GroupNorm(g, first), nn.Mish(),
                                   nn.Conv1d(first, self.action_dim, 1))

    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        features = self.encode_obs(cond)
        b = x.shape[0]
        t = torch.as_tensor(t, device=x.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(b)
        global_cond = torch.cat([self.time_embedding(t).to(x.dtype), features.reshape(b, -1).to(x.dtype)], dim=-1)
        h = x.transpose(1, 2)
        skips = []
        for block1, block2, downsample in self.down:
            h = block2(block1(h, global_cond), global_cond)
            skips.append(h)
            h = downsample(h)
        for block in self.mid:
            h = block(h, global_cond)
        for block1, block2, upsample in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            h = upsample(block2(block1(h, global_cond), global_cond))
        return self.final(h).transpose(1, 2)


class TransformerDenoiser(PolicyDenoiser):
    """Diffusion Policy's transformer denoiser (the time-series diffusion transformer).

    Action tokens (a linear embedding plus a learned position) are the decoder's input; a time
    token and one token per observation frame, passed through a small encoder, are its memory.
    With ``causal`` each action token attends only to itself and earlier ones, and only to the
    time token and the observation tokens up to its own frame, as in Chi et al.'s variant. With
    ``encoder_layers > 0`` the condition encoder attends over all frames first (also as there),
    so each observation token already carries the whole history; with the default MLP encoder
    an action token sees no observation frame after its own.

    Args:
        dim: token width.
        heads: attention heads.
        layers: decoder layers.
        encoder_layers: layers of the condition encoder (0: an MLP).
        dropout: attention and feed-forward dropout.
        causal: causal attention masks (see above).
        prediction: what the network predicts.
        image_encoder: see :class:`PolicyDenoiser`.

    Shapes:
        x: (B, horizon, action_dim); t: (B,); returns (B, horizon, action_dim).
    """

    def __init__(self, dim: int = 128, heads: int = 4, layers: int = 4, encoder_layers: int = 0, dropout: float = 0.1,
                 causal: bool = True, prediction: Prediction = "eps", image_encoder: ImageEncoder | None = None):
        super().__init__(prediction=prediction, image_encoder=image_encoder)
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.dim, self.heads, self.layers, self.encoder_layers = int(dim), int(heads), int(layers), int(encoder_layers)
        self.dropout, self.causal = float(dropout), bool(causal)

    def _build(self, frame_features: int) -> None:
        d = self.dim
        self.time_embedding = TimeEmbedding(d)
        self.action_in = nn.Linear(self.action_dim, d)
        self.obs_in = nn.Linear(frame_features, d)
        self.action_pos = nn.Parameter(torch.zeros(1, self.horizon, d))
        self.cond_pos = nn.Parameter(torch.zeros(1, 1 + self.obs_horizon, d))
        if self.encoder_layers > 0:
            layer = nn.TransformerEncoderLayer(d, self.heads, 4 * d, self.dropout, activation="gelu", batch_first=True, norm_first=True)
            self.cond_encoder: nn.Module = nn.TransformerEncoder(layer, self.encoder_layers, enable_nested_tensor=False)
        else:
            self.cond_encoder = nn.Sequential(nn.Linear(d, 4 * d), nn.Mish(), nn.Linear(4 * d, d))
        layer = nn.TransformerDecoderLayer(d, self.heads, 4 * d, self.dropout, activation="gelu", batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, self.layers)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, self.action_dim)
        nn.init.normal_(self.action_pos, std=0.02)
        nn.init.normal_(self.cond_pos, std=0.02)
        if self.causal:
            h, n = self.horizon, self.obs_horizon
            self.register_buffer("self_mask", torch.triu(torch.ones(h, h, dtype=torch.bool), diagonal=1), persistent=False)
            # Action k sits at frame k of the window; it may see the time token and observation
            # frames 0..k (all of them once k >= obs_horizon - 1).
            frames = torch.arange(n).unsqueeze(0) > torch.arange(h).unsqueeze(1)
            self.register_buffer("memory_mask", torch.cat([torch.zeros(h, 1, dtype=torch.bool), frames], dim=1), persistent=False)
        else:
            self.self_mask = self.memory_mask = None

    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        features = self.encode_obs(cond)
        b = x.shape[0]
        t = torch.as_tensor(t, device=x.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(b)
        memory = torch.cat([self.time_embedding(t).unsqueeze(1), self.obs_in(features.float())], dim=1) + self.cond_pos
        memory = self.cond_encoder(memory)
        tokens = self.action_in(x.float()) + self.action_pos
        out = self.decoder(tokens, memory, tgt_mask=self.self_mask, memory_mask=self.memory_mask)
        return self.head(self.norm(out)).to(x.dtype)
