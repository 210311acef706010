"""Point-cloud denoisers in pure PyTorch: a point-voxel network (after PVD's PVCNN).

PVD and LION build on PVCNN, whose voxelisation and trilinear devoxelisation are custom CUDA
kernels; that extension is what breaks their installs. Here both are ordinary tensor operations:

* **voxelise**: each point's features are averaged into the cell of a ``r^3`` grid that holds it
  (``index_add_`` of features and counts: a scatter mean), after the cloud is centred on its mean
  and scaled so its farthest point sits inside the grid (PVCNN's normalisation);
* **3D convolutions** on the grid (GroupNorm, SiLU, the time and class embedding added);
* **devoxelise**: each point reads the grid back by trilinear interpolation
  (``grid_sample`` on the 5D grid);

plus a per-point MLP branch, summed with the voxel branch (one PVConv). A max-pooled global
feature is broadcast back to every point before the head. The network sees the cloud as a set:
it is equivariant to permutations of the points (tested).

Conditioning: a class index per cloud (``cond`` of shape (B,), long); index ``num_classes`` is
the null class that classifier-free guidance and condition dropout use. ``num_classes = 0`` is an
unconditional network (``cond`` must then be ``None``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.denoiser import Denoiser

__all__ = ["PointVoxelDenoiser", "voxelize", "devoxelize", "timestep_embedding"]


def timestep_embedding(t: Tensor, dim: int, scale: float = 1000.0) -> Tensor:
    """Sinusoidal features of ``t * scale``. Shapes: t (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (t.float() * scale)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def _grid_coords(points: Tensor) -> Tensor:
    """Points mapped into [0, 1]^3 by PVCNN's normalisation: centre on the mean, scale the farthest
    point to radius 0.5 (with a small margin). Shapes: (B, N, 3) -> (B, N, 3)."""
    centred = points - points.mean(dim=1, keepdim=True)
    radius = centred.norm(dim=-1).amax(dim=1).clamp_min(1e-6)[:, None, None]
    return (centred / (2.0 * radius) * 0.98 + 0.5).clamp(0.0, 1.0)


def voxelize(features: Tensor, coords: Tensor, resolution: int) -> Tensor:
    """Scatter-mean of point features into a ``resolution^3`` grid.

    Args:
        features: (B, C, N) per-point features.
        coords: (B, N, 3) in [0, 1]^3 (see :func:`_grid_coords`).
        resolution: grid side ``r``.

    Shapes:
        returns (B, C, r, r, r), indexed ``[b, c, x, y, z]``; empty cells are 0.
    """
    b, c, n = features.shape
    r = int(resolution)
    cell = (coords * r).long().clamp(0, r - 1)
    flat = (cell[..., 0] * r + cell[..., 1]) * r + cell[..., 2]  # (B, N)
    flat = flat + torch.arange(b, device=features.device)[:, None] * (r**3)
    sums = features.new_zeros(c, b * r**3)
    sums.index_add_(1, flat.reshape(-1), features.permute(1, 0, 2).reshape(c, -1))
    counts = features.new_zeros(b * r**3)
    counts.index_add_(0, flat.reshape(-1), features.new_ones(b * n))
    grid = sums / counts.clamp_min(1.0)
    return grid.reshape(c, b, r, r, r).permute(1, 0, 2, 3, 4)


def devoxelize(grid: Tensor, coords: Tensor) -> Tensor:
    """Trilinear read of a grid at the points.

    Shapes:
        grid: (B, C, r, r, r) indexed ``[b, c, x, y, z]``; coords: (B, N, 3) in [0, 1]^3;
        returns (B, C, N).
    """
    # Cell centres sit at (i + 0.5) / r; grid_sample with align_corners=False uses the same.
    loc = coords * 2.0 - 1.0
    # grid_sample's last coordinate indexes the first spatial axis's *last* dimension (W): reverse.
    loc = loc.flip(-1)[:, :, None, None, :]  # (B, N, 1, 1, 3) as (z, y, x) -> (W, H, D)
    out = F.grid_sample(grid, loc.to(grid.dtype), mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, :, 0, 0]


class _PVConv(nn.Module):
    """One point-voxel convolution: voxel branch (two 3D convs) + point branch (MLP), summed."""

    def __init__(self, c_in: int, c_out: int, resolution: int, emb_dim: int, groups: int = 8):
        super().__init__()
        self.resolution = int(resolution)
        self.conv1 = nn.Conv3d(c_in, c_out, 3, padding=1)
        self.norm1 = nn.GroupNorm(min(groups, c_out), c_out)
        self.conv2 = nn.Conv3d(c_out, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(min(groups, c_out), c_out)
        self.emb = nn.Linear(emb_dim, c_out)
        self.point = nn.Sequential(nn.Conv1d(c_in, c_out, 1), nn.GroupNorm(min(groups, c_out), c_out), nn.SiLU(),
                                   nn.Conv1d(c_out, c_out, 1))
        self.out_norm = nn.GroupNorm(min(groups, c_out), c_out)

    def forward(self, features: Tensor, coords: Tensor, emb: Tensor) -> Tensor:
        grid = voxelize(features, coords, self.resolution)
        h = F.silu(self.norm1(self.conv1(grid)))
        h = h + self.emb(emb)[:, :, None, None, None]
        h = F.silu(self.norm2(self.conv2(h)))
        voxel = devoxelize(h, coords)
        return F.silu(self.out_norm(voxel + self.point(features)))


class PointVoxelDenoiser(Denoiser):
    """A PVCNN-style denoiser of point clouds, class-conditional with a null class.

    Args:
        num_classes: number of classes (0: unconditional).
        channels: channels of the PVConv blocks, in order (a U-shaped list is usual).
        resolutions: voxel grid side of each block (same length as ``channels``).
        emb_dim: width of the time/class embedding.
        prediction: what the network predicts (``eps`` as in PVD).

    Shapes:
        x: (B, N, 3); t: (B,); cond: (B,) long class indices or ``None``; returns (B, N, 3).
    """

    def __init__(
        self,
        num_classes: int = 0,
        channels: tuple[int, ...] = (64, 128, 128, 64),
        resolutions: tuple[int, ...] = (16, 8, 8, 16),
        emb_dim: int = 128,
        prediction: str = "eps",
    ):
        super().__init__(prediction=prediction)
        if len(channels) != len(resolutions) or not channels:
            raise ValueError(f"channels {tuple(channels)} and resolutions {tuple(resolutions)} must have the same "
                             "non-zero length")
        if num_classes < 0:
            raise ValueError(f"num_classes must be non-negative, got {num_classes}")
        self.num_classes = int(num_classes)
        self.emb_dim = int(emb_dim)
        self.time = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label = nn.Embedding(self.num_classes + 1, emb_dim) if self.num_classes else None
        self.stem = nn.Conv1d(3, channels[0], 1)
        blocks, c_prev, skips = [], channels[0], []
        half = len(channels) // 2
        for i, (c, r) in enumerate(zip(channels, resolutions)):
            c_in = c_prev + (skips[len(channels) - 1 - i] if i >= len(channels) - half and len(channels) > 1 else 0)
            blocks.append(_PVConv(c_in, c, r, emb_dim))
            skips.append(c)
            c_prev = c
        self.blocks = nn.ModuleList(blocks)
        self._half = half
        self.glob = nn.Sequential(nn.Linear(c_prev, c_prev), nn.SiLU())
        self.head = nn.Sequential(nn.Conv1d(2 * c_prev, c_prev, 1), nn.GroupNorm(min(8, c_prev), c_prev), nn.SiLU(),
                                  nn.Conv1d(c_prev, 3, 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def embed(self, t: Tensor, cond: Any) -> Tensor:
        """The time (and class) embedding. Shapes: t (B,), cond (B,) -> (B, emb_dim)."""
        emb = self.time(timestep_embedding(t, self.emb_dim))
        if self.label is not None:
            if cond is None:
                cond = torch.full((t.shape[0],), self.num_classes, dtype=torch.long, device=t.device)
            cond = torch.as_tensor(cond, device=t.device).long().reshape(-1)
            if cond.numel() != t.shape[0]:
                raise ValueError(f"cond must hold one class index per cloud ({t.shape[0]}), got {cond.numel()}")
            if (cond < 0).any() or (cond > self.num_classes).any():
                raise ValueError(f"class indices must lie in [0, {self.num_classes}] ({self.num_classes} is the null "
                                 f"class); got {cond.tolist()}")
            emb = emb + self.label(cond)
        elif cond is not None:
            raise ValueError("this network is unconditional (num_classes = 0) but was given a condition")
        return emb

    def drop_cond(self, cond: Any, mask: Tensor) -> Any:
        """Dropped conditions become the null class (index ``num_classes``)."""
        if cond is None:
            return None
        cond = torch.as_tensor(cond).long()
        return torch.where(mask.to(cond.device), torch.full_like(cond, self.num_classes), cond)

    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        if x.ndim != 3 or x.shape[-1] != 3:
            raise ValueError(f"expected point clouds of shape (B, N, 3), got {tuple(x.shape)}")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        t = t.reshape(x.shape[0], -1)[:, 0]  # per-element times (completion) share one value per cloud's free points
        emb = self.embed(t, cond)
        coords = _grid_coords(x.detach())
        h = self.stem(x.transpose(1, 2))
        skips = []
        n_blocks = len(self.blocks)
        for i, block in enumerate(self.blocks):
            if i >= n_blocks - self._half and n_blocks > 1:
                h = torch.cat([h, skips[n_blocks - 1 - i]], dim=1)
            h = block(h, coords, emb)
            skips.append(h)
        g = self.glob(h.amax(dim=2))[:, :, None].expand_as(h)
        return self.head(torch.cat([h, g], dim=1)).transpose(1, 2)
