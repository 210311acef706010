"""Networks over windows of multivariate series: attention along time and across series.

The backbone, :class:`SpaceTimeTransformer`, sees a window as tokens ``(B, L, N)`` — ``L``
frames of ``N`` series ("nodes": grid cells of every variable, or a table's columns), each
token a few scalar features — and alternates self-attention along time (per node) with
self-attention across nodes (per frame), as CSDI's two-dimensional attention does (Tashiro et
al. 2021). Nodes carry a learned embedding, frames a sinusoidal embedding of their position in
physical time (which may be fractional, as DYffusion's interpolation times are), and every token
an embedding of its noise level.

Three heads use it, all of the same size for a given ``channels``/``layers``:

- :class:`ForecastDenoiser`: the diffusion denoiser ``denoiser(x, t, cond)`` over a whole
  window; entries at ``t = 0`` are the known (observed) ones and are flagged as such.
- :class:`FrameNet`: given frames at some physical times, predict frames at query times (the
  DYffusion interpolator and forecaster, and the deterministic baseline).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.broadcast import time_like

__all__ = ["SpaceTimeTransformer", "ForecastDenoiser", "FrameNet", "DYffusionNets"]


def sinusoidal(values: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal features (..., dim) of real values (...), as in Vaswani et al. 2017."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=values.device, dtype=torch.float32) / half)
    angles = values.float().unsqueeze(-1) * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class _Attention(nn.Module):
    def __init__(self, channels: int, heads: int, dropout: float):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        self.dropout = dropout

    def forward(self, h: Tensor) -> Tensor:
        """Self-attention over dim -2 of ``h`` (..., S, C), residual."""
        *lead, s, c = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(-1, s, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        a = a.transpose(1, 2).reshape(*lead, s, c)
        return h + self.out(a)


class _Block(nn.Module):
    """Time attention, node attention, feed-forward; the noise level enters before each."""

    def __init__(self, channels: int, heads: int, ff_mult: int, dropout: float):
        super().__init__()
        self.level = nn.Linear(channels, channels)
        self.time_attn = _Attention(channels, heads, dropout)
        self.node_attn = _Attention(channels, heads, dropout)
        self.ff = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, ff_mult * channels), nn.GELU(),
                                nn.Dropout(dropout), nn.Linear(ff_mult * channels, channels))

    def forward(self, h: Tensor, level: Tensor) -> Tensor:
        h = h + self.level(level)  # (B, L, N, C)
        h = self.time_attn(h.transpose(1, 2)).transpose(1, 2)  # attention along L, per node
        h = self.node_attn(h)  # attention along N, per frame
        return h + self.ff(h)


class SpaceTimeTransformer(nn.Module):
    """Alternating time and node attention over tokens ``(B, L, N)`` of scalar features.

    Args:
        max_nodes: the most series a model of this size can take (learned node embeddings).
        in_features: scalar features per token.
        out_features: outputs per token.
        channels: width of every token's representation.
        layers: number of (time attention, node attention, feed-forward) blocks.
        heads: attention heads.
        ff_mult: feed-forward expansion.
        dropout: dropout in attention and feed-forward (DYffusion's interpolator keeps it on
            when sampling, as its source of randomness).

    Shapes:
        feats: (B, L, N, in_features); frame_pos: (L,) or (B, L) physical frame times; level:
        (B,), (B, L) or (B, L, N) noise levels in [0, 1] (or ``None``); returns (B, L, N,
        out_features).
    """

    def __init__(self, max_nodes: int = 1024, in_features: int = 2, out_features: int = 1, channels: int = 64,
                 layers: int = 4, heads: int = 4, ff_mult: int = 2, dropout: float = 0.0):
        super().__init__()
        if max_nodes < 1 or channels < 2 or layers < 1:
            raise ValueError("max_nodes, channels and layers must be positive")
        self.max_nodes, self.channels = int(max_nodes), int(channels)
        self.inp = nn.Linear(in_features, channels)
        self.node = nn.Embedding(max_nodes, channels)
        nn.init.normal_(self.node.weight, std=0.02)
        self.pos = nn.Sequential(nn.Linear(channels, channels), nn.SiLU(), nn.Linear(channels, channels))
        self.lev = nn.Sequential(nn.Linear(channels, channels), nn.SiLU(), nn.Linear(channels, channels))
        self.blocks = nn.ModuleList(_Block(channels, heads, ff_mult, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(channels)
        self.head = nn.Linear(channels, out_features)
        # A zero output layer starts the model at "predict zero", the mean of standardised data.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, feats: Tensor, frame_pos: Tensor, level: Tensor | None = None) -> Tensor:
        b, length, n, _ = feats.shape
        if n > self.max_nodes:
            raise ValueError(f"{n} tokens per frame, but the network was built for at most {self.max_nodes}")
        h = self.inp(feats) + self.node.weight[:n]
        pos = frame_pos.to(feats.device).float()
        pos = pos.expand(b, length) if pos.ndim == 1 else pos
        h = h + self.pos(sinusoidal(pos * 10.0, self.channels))[:, :, None, :]
        if level is None:
            lev = torch.zeros(b, 1, 1, self.channels, device=feats.device, dtype=h.dtype)
        else:
            level = level.to(feats.device)
            while level.ndim < 3:
                level = level.unsqueeze(-1)
            lev = self.lev(sinusoidal(level * 1000.0, self.channels))
        for block in self.blocks:
            h = block(h, lev)
        return self.head(self.norm(h))


def _group(feats: Tensor, group: int) -> Tensor:
    """(B, L, N, F) -> (B, L, ceil(N / group), group * F): consecutive nodes share one token."""
    if group == 1:
        return feats
    b, length, n, f = feats.shape
    pad = (-n) % group
    if pad:
        feats = torch.cat([feats, feats.new_zeros(b, length, pad, f)], dim=2)
    return feats.reshape(b, length, (n + pad) // group, group * f)


def _check_nodes(n: int, max_nodes: int) -> None:
    if n > max_nodes:
        raise ValueError(f"the data has {n} series but the network was built for at most max_nodes={max_nodes}; "
                         "raise max_nodes or coarsen the data")


def _ungroup(out: Tensor, n: int) -> Tensor:
    """(B, L, T, group) -> (B, L, N)."""
    b, length = out.shape[:2]
    return out.reshape(b, length, -1)[:, :, :n]


class ForecastDenoiser(nn.Module):
    """The conditional diffusion denoiser over a window (CSDI-style).

    Called ``denoiser(x, t, cond)`` like every polydiff denoiser. Entries whose time is 0 are
    observed and given clean (the core's ``KnownValues(mode="clean")``), so a per-element time
    both conditions the network and, with one time per frame, gives rolling-diffusion windows.

    Args:
        prediction: what the network predicts (``eps``, ``x0`` or ``v``).
        group: consecutive nodes that share one token (e.g. 4 neighbouring cells of a grid
            row), which divides the cost of attention across nodes by ``group**2``.
        max_nodes, channels, layers, heads, ff_mult, dropout: see :class:`SpaceTimeTransformer`.

    Shapes:
        x: (B, L, N); t: (B,), (B, L) or (B, L, N); returns (B, L, N).
    """

    def __init__(self, prediction: Literal["eps", "x0", "v"] = "eps", max_nodes: int = 1024, channels: int = 64,
                 layers: int = 4, heads: int = 4, ff_mult: int = 2, dropout: float = 0.0, group: int = 1):
        super().__init__()
        if prediction not in ("eps", "x0", "v"):
            raise ValueError(f"unknown prediction {prediction!r}; valid: eps, x0, v")
        if group < 1:
            raise ValueError(f"group must be positive, got {group}")
        self.prediction = prediction
        self.group, self.max_nodes = int(group), int(max_nodes)
        tokens = -(-max_nodes // group)
        self.net = SpaceTimeTransformer(tokens, 3 * group, group, channels, layers, heads, ff_mult, dropout)

    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        _check_nodes(x.shape[2], self.max_nodes)
        level = time_like(t, x).expand_as(x).to(x.dtype)
        known = (level == 0).to(x.dtype)
        # The noise level is a per-entry input too: with several entries per token the token's
        # own level embedding cannot tell them apart.
        feats = _group(torch.stack([x, known, level], dim=-1), self.group)
        token_level = level if self.group == 1 else _group(level[..., None], self.group).mean(-1)
        frame_pos = torch.arange(x.shape[1], device=x.device, dtype=torch.float32) / 10.0
        return _ungroup(self.net(feats, frame_pos, token_level), x.shape[2])


class FrameNet(nn.Module):
    """Frames at given physical times in, frames at query times out.

    The DYffusion interpolator ``I(x_t, x_{t+h}, i) -> x_{t+i}`` and forecaster
    ``F(x_{t+i}, i) -> x_{t+h}``, and the deterministic baseline (context in, every horizon
    frame out), are all this network with different inputs and queries. Missing input values
    (``observed`` False) are zero with their flag off.

    Args:
        group: consecutive nodes per token (see :class:`ForecastDenoiser`).
        max_nodes, channels, layers, heads, ff_mult, dropout: see :class:`SpaceTimeTransformer`.

    Shapes:
        frames: (B, K, N); observed: (B, K, N) bool or None; positions: (K,) or (B, K);
        queries: (Q,) or (B, Q); level: (B,) or None; returns (B, Q, N).
    """

    prediction = "x0"

    def __init__(self, max_nodes: int = 1024, channels: int = 64, layers: int = 4, heads: int = 4, ff_mult: int = 2,
                 dropout: float = 0.0, group: int = 1):
        super().__init__()
        if group < 1:
            raise ValueError(f"group must be positive, got {group}")
        self.group, self.max_nodes = int(group), int(max_nodes)
        self.net = SpaceTimeTransformer(-(-max_nodes // group), 2 * group, group, channels, layers, heads, ff_mult,
                                        dropout)

    def forward(self, frames: Tensor, positions: Tensor, queries: Tensor, observed: Tensor | None = None,
                level: Tensor | None = None) -> Tensor:
        b, k, n = frames.shape
        _check_nodes(n, self.max_nodes)
        device = frames.device
        positions = torch.as_tensor(positions, device=device, dtype=torch.float32)
        queries = torch.as_tensor(queries, device=device, dtype=torch.float32)
        positions = positions.expand(b, k) if positions.ndim == 1 else positions
        queries = queries.expand(b, queries.shape[-1]) if queries.ndim == 1 else queries
        q = queries.shape[1]
        flag = torch.ones_like(frames) if observed is None else observed.to(frames.dtype)
        values = frames * flag
        feats = torch.cat([torch.stack([values, flag], -1), frames.new_zeros(b, q, n, 2)], dim=1)
        out = self.net(_group(feats, self.group), torch.cat([positions, queries], dim=1) / 10.0, level)
        return _ungroup(out, n)[:, k:]


class DYffusionNets(nn.Module):
    """DYffusion's two networks (Rühling Cachay et al. 2023), trained in two stages.

    Args:
        interpolator: the stochastic time-interpolator (keep ``dropout`` > 0: it is the
            source of the ensemble spread).
        forecaster: the forecaster.
    """

    prediction = "x0"

    def __init__(self, interpolator: FrameNet, forecaster: FrameNet):
        super().__init__()
        self.interpolator = interpolator
        self.forecaster = forecaster

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        raise TypeError("DYffusionNets is used through DYffusion.forecast, not called as a denoiser")
