"""Texture images: a procedural collection, its data module, and two image denoisers.

* :func:`make_texture` draws one of six texture families (:data:`TEXTURE_LABELS`) with random
  two-colour palettes, frequencies, orientations and phases; :func:`write_texture_collection`
  stores a collection as ``<root>/<label>/<label>_00000.png`` and :func:`scan_textures` lists one.
* :class:`TextureDataModule` serves such a collection (or any folder of RGB images laid out the
  same way) as ``{"x0": (B, 3, S, S) in [-1, 1], "cond": (B,) label index}`` batches.
* :class:`TextureUNet` is a small pure-PyTorch U-Net with a class embedding whose extra index
  is the null class of classifier-free guidance.
* :class:`DiffusersUNet` wraps a ``diffusers.UNet2DModel`` so that it meets the core's denoiser
  contract, mapping the core's continuous time to the model's discrete timestep.

Which core schedule matches a DDPM-trained model
-------------------------------------------------

A ``UNet2DModel`` trained with diffusers' ``DDPMScheduler`` defaults (linear betas from 1e-4 to
0.02 over 1000 steps) saw ``x_k = sqrt(alphas_cumprod[k]) x0 + sqrt(1 - alphas_cumprod[k]) eps``
at timestep ``k``. :class:`polydiff.schedules.VPLinear` with its defaults
(``beta_start=1e-4, beta_end=0.02, num_train_steps=1000``) is that schedule in continuous time:
``alpha(t)^2`` interpolates ``log alphas_cumprod`` and equals ``alphas_cumprod[k]`` exactly at
``t = (k + 1) / 1000``. The simple map ``k = t * 999`` (the ``scaled`` timestep map) is therefore
off by less than one step: ``|alpha(k / 999) - sqrt(alphas_cumprod[k])| < 1.5e-3`` for every k
(largest near k = 250, 0.25 % relative). The ``matched`` map (:func:`diffusers_timestep`) removes
that difference by inverting ``alphas_cumprod``: it gives the (fractional) timestep whose
``alphas_cumprod`` equals the core schedule's ``alpha(t)^2``, ``k = 1000 t - 1`` for VPLinear,
and it also lets a DDPM-trained model be sampled on another VP schedule (e.g.
:class:`~polydiff.schedules.VPCosine`), each time matched by noise level.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from polydiff.denoiser import Denoiser
from polydiff.parameterization import Prediction
from polydiff.schedules import Schedule, VPLinear

__all__ = [
    "TEXTURE_LABELS", "IMAGE_SUFFIXES", "make_texture", "write_texture_collection", "scan_textures",
    "TextureDataModule", "TextureUNet", "DiffusersUNet", "TimestepMap", "TIMESTEP_MAPS", "ddpm_alphas_cumprod",
    "diffusers_timestep",
]

#: The procedural texture families, in a fixed order (their label indices in a generated collection
#: are alphabetical, see :class:`TextureDataModule`).
TEXTURE_LABELS: tuple[str, ...] = ("stripes", "checks", "dots", "noise", "waves", "gradient")

#: Image file suffixes :func:`scan_textures` lists.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")

TimestepMap = Literal["scaled", "matched"]
TIMESTEP_MAPS: tuple[str, ...] = get_args(TimestepMap)

# How many unusable images a warning names before it only counts the rest.
_NAMED = 5


# --- procedural textures ----------------------------------------------------------------------------
def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # tanh form: no overflow for large |z|


def _palette(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two random colours at least 0.5 apart in RGB, so every texture has visible contrast."""
    first = rng.uniform(0.0, 1.0, 3)
    second = rng.uniform(0.0, 1.0, 3)
    if np.linalg.norm(first - second) < 0.5:
        second = np.where(first < 0.5, first + 0.5, first - 0.5)  # 0.87 away
    return first, second


def _rotated(size: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates about the image centre, rotated by ``angle``: (along, across)."""
    c = (np.arange(size) + 0.5) / size - 0.5
    v, u = np.meshgrid(c, c, indexing="ij")  # rows are y, columns x
    return u * math.cos(angle) + v * math.sin(angle), -u * math.sin(angle) + v * math.cos(angle)


def _stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    p, _ = _rotated(size, rng.uniform(0.0, math.pi))
    freq, phase = rng.uniform(3.0, 8.0), rng.uniform(0.0, 2 * math.pi)
    sharpness, duty = rng.uniform(2.0, 12.0), rng.uniform(-0.5, 0.5)
    return _sigmoid(sharpness * (np.sin(2 * math.pi * freq * p + phase) + duty))


def _checks(rng: np.random.Generator, size: int) -> np.ndarray:
    p, q = _rotated(size, rng.uniform(0.0, 0.5 * math.pi))
    freq, sharpness = rng.uniform(2.0, 6.0), rng.uniform(4.0, 16.0)
    phase_p, phase_q = rng.uniform(0.0, 2 * math.pi, 2)
    return _sigmoid(sharpness * np.sin(2 * math.pi * freq * p + phase_p) * np.sin(2 * math.pi * freq * q + phase_q))


def _dots(rng: np.random.Generator, size: int) -> np.ndarray:
    p, q = _rotated(size, rng.uniform(0.0, 0.5 * math.pi))
    freq = rng.uniform(3.0, 7.0)
    radius, softness = rng.uniform(0.2, 0.4), rng.uniform(0.02, 0.08)
    a, b = freq * p + rng.uniform(0.0, 1.0), freq * q + rng.uniform(0.0, 1.0)
    row = np.floor(b + 0.5)
    if rng.uniform() < 0.5:  # hexagonal packing: every other row shifted by half a cell
        a = a + 0.5 * np.mod(row, 2)
    distance = np.hypot(a - np.round(a), b - row)  # to the dot of this row's nearest cell (radius < 1/2)
    return _sigmoid((radius - distance) / softness)


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth value noise: random values on a periodic ``cells`` x ``cells`` lattice, smoothstep-blended."""
    lattice = rng.uniform(0.0, 1.0, (cells, cells))
    c = (np.arange(size) + 0.5) / size * cells
    i0 = np.floor(c).astype(int)
    f = c - i0
    f = f * f * (3.0 - 2.0 * f)
    i0, i1 = i0 % cells, (i0 + 1) % cells
    rows0, rows1 = lattice[i0], lattice[i1]  # (size, cells): rows along y
    top = rows0[:, i0] * (1 - f)[None, :] + rows0[:, i1] * f[None, :]
    bottom = rows1[:, i0] * (1 - f)[None, :] + rows1[:, i1] * f[None, :]
    return top * (1 - f)[:, None] + bottom * f[:, None]


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    cells = int(rng.integers(3, 7))
    octaves = [_value_noise(rng, size, cells * 2**k) * 0.5**k for k in range(3)]
    total = sum(octaves)
    lo, hi = total.min(), total.max()
    m = (total - lo) / max(hi - lo, 1e-12)
    return m ** rng.uniform(0.6, 1.6)


def _waves(rng: np.random.Generator, size: int) -> np.ndarray:
    p, q = _rotated(size, rng.uniform(0.0, math.pi))
    freq, wobble = rng.uniform(3.0, 7.0), rng.uniform(1.0, 3.0)
    amplitude, sharpness = rng.uniform(1.5, 4.0), rng.uniform(2.0, 10.0)
    phase, wobble_phase = rng.uniform(0.0, 2 * math.pi, 2)
    bend = amplitude * np.sin(2 * math.pi * wobble * q + wobble_phase)
    return _sigmoid(sharpness * np.sin(2 * math.pi * freq * p + bend + phase))


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    if rng.uniform() < 0.5:
        ramp, _ = _rotated(size, rng.uniform(0.0, 2 * math.pi))
    else:  # radial, about a random centre
        p, q = _rotated(size, 0.0)
        cx, cy = rng.uniform(-0.5, 0.5, 2)
        ramp = np.hypot(p - cx, q - cy)
    m = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-12)
    return m ** rng.uniform(0.5, 2.0)


_MAKERS = {"stripes": _stripes, "checks": _checks, "dots": _dots, "noise": _noise, "waves": _waves,
           "gradient": _gradient}


def make_texture(label: str, seed: int, size: int = 64) -> np.ndarray:
    """One procedural texture, deterministic per ``(label, seed)``.

    Each family blends a random two-colour palette by a pattern drawn with random frequency,
    orientation, phase and edge sharpness: ``stripes`` (a soft square wave along a direction),
    ``checks`` (a rotated checkerboard), ``dots`` (discs on a square or hexagonal lattice),
    ``noise`` (three octaves of smooth value noise), ``waves`` (stripes bent by a sine across them)
    and ``gradient`` (a linear or radial ramp). Patterns are functions of continuous image
    coordinates, so one ``(label, seed)`` drawn at two sizes shows the same texture.

    Args:
        label: one of :data:`TEXTURE_LABELS`.
        seed: a non-negative integer.
        size: the side in pixels.

    Returns:
        A float32 array in [0, 1].

    Shapes:
        returns: (size, size, 3).

    Raises:
        ValueError: an unknown label (the valid ones are listed), a negative seed or a size below 2.
    """
    if label not in _MAKERS:
        raise ValueError(f"unknown texture label {label!r}; valid: {', '.join(TEXTURE_LABELS)}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if int(size) != size or size < 2:
        raise ValueError(f"size must be an integer of at least 2, got {size!r}")
    rng = np.random.default_rng([TEXTURE_LABELS.index(label), int(seed)])
    first, second = _palette(rng)
    m = _MAKERS[label](rng, int(size))[..., None]
    image = first * (1.0 - m) + second * m
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _texture_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def write_texture_collection(
    root: str | os.PathLike,
    per_label: int,
    *,
    size: int = 64,
    seed: int = 0,
    overwrite: bool = False,
) -> list[tuple[str, Path]]:
    """Write ``per_label`` textures of every family as ``<root>/<label>/<label>_00000.png``.

    Image ``i`` of a label uses a seed derived from ``(seed, i)``, so collections written with the
    same arguments are identical.

    Args:
        root: the collection folder (created if missing).
        per_label: images per label.
        size: image side in pixels.
        seed: the collection's seed.
        overwrite: allow writing into a non-empty ``root``; earlier ``<label>_NNNNN.png`` files of
            the labels are removed first, anything else is left alone.

    Returns:
        ``(label, path)`` for every image written, in the order :func:`scan_textures` lists them.

    Raises:
        FileExistsError: ``root`` is not empty and ``overwrite`` is False.
        ValueError: ``per_label`` is below 1.
    """
    from PIL import Image

    if int(per_label) != per_label or per_label < 1:
        raise ValueError(f"per_label must be a positive integer, got {per_label!r}")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"the texture collection root {root} is a file, not a folder")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"the texture collection root {root} is not empty; pass overwrite=True to write into it")
        for label in TEXTURE_LABELS:
            for old in (root / label).glob(f"{label}_[0-9][0-9][0-9][0-9][0-9].png"):
                old.unlink()
    written = []
    for label in sorted(TEXTURE_LABELS):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(int(per_label)):
            pixels = make_texture(label, _texture_seed(seed, i), size)
            path = folder / f"{label}_{i:05d}.png"
            Image.fromarray(np.round(pixels * 255.0).astype(np.uint8)).save(path)
            written.append((label, path))
    return written


def scan_textures(root: str | os.PathLike) -> list[tuple[str, Path]]:
    """The images of a collection laid out as ``<root>/<label>/<name>.png`` (or ``.jpg``).

    Labels are the names of ``root``'s sub-folders (hidden ones skipped); nothing is opened.

    Returns:
        ``(label, path)`` pairs sorted by label, then file name.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"the texture collection root {root} is not a folder")
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                found.append((folder.name, path))
    return found


# --- the data module -------------------------------------------------------------------------------
class _Unusable(Exception):
    """An image that cannot be read or is not RGB; the message says why."""


def _load_square(path: Path, side: int) -> np.ndarray:
    """An RGB image resized so its shorter side is ``side`` and centre-cropped to a square (uint8)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode != "RGB":
                raise _Unusable(f"mode {image.mode}, not RGB")
            width, height = image.size
            scale = side / min(width, height)
            new = (max(side, round(width * scale)), max(side, round(height * scale)))
            if new != image.size:
                image = image.resize(new, Image.Resampling.LANCZOS)
            left, top = (new[0] - side) // 2, (new[1] - side) // 2
            image = image.crop((left, top, left + side, top + side))
            return np.asarray(image, dtype=np.uint8).copy()
    except _Unusable:
        raise
    except (OSError, SyntaxError, ValueError) as exc:  # PIL reports broken files with all three
        raise _Unusable(f"cannot be read ({type(exc).__name__})") from None


class _TextureSet(Dataset):
    """Items of preloaded square images: a random or central ``size`` crop, flips and rotations."""

    def __init__(self, images: Tensor, labels: Tensor, size: int, augment: bool):
        self.images, self.labels, self.size, self.augment = images, labels, size, augment

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image = self.images[index]
        margin = image.shape[-1] - self.size
        if self.augment:
            top, left = (int(v) for v in torch.randint(0, margin + 1, (2,)))
        else:
            top = left = margin // 2
        image = image[:, top:top + self.size, left:left + self.size]
        if self.augment:
            # A mirror and a quarter-turn count cover all eight symmetries of the square.
            if bool(torch.rand(()) < 0.5):
                image = image.flip(-1)
            image = torch.rot90(image, int(torch.randint(0, 4, ())), dims=(1, 2))
        x0 = image.float() / 127.5 - 1.0
        return {"x0": x0.contiguous(), "cond": self.labels[index]}


class TextureDataModule(pl.LightningDataModule):
    """A folder of texture images, ``<root>/<label>/<name>.png``, as class-conditional batches.

    Images are loaded once in :meth:`setup`: each is resized so its shorter side is the stored
    side and centre-cropped to a square. Without augmentation the stored side is ``size``; with it,
    ``ceil(1.125 size)``, and training items are random ``size`` crops of it (showing 89 % of the
    texture's side) under a random flip and quarter turn, while validation items are its central
    crop, at the same scale. Label indices follow the alphabetical order of the labels
    (:meth:`info`). A random ``val_fraction`` of the images (at least one when there are two or
    more, never all) is held out, chosen by ``seed``.

    Images that cannot be read, or are not RGB, are skipped with one warning naming the first few
    and counting the rest.

    Batches are dicts ``{"x0": (B, 3, size, size) float in [-1, 1], "cond": (B,) long}``.

    Args:
        root: the collection folder (see :func:`write_texture_collection`).
        size: side of the images served, in pixels.
        batch_size: images per batch.
        val_fraction: fraction of the images held out for validation, in [0, 1).
        num_workers: DataLoader workers.
        seed: the seed of the validation split.
        augment: random crops, flips and quarter turns in training.
    """

    def __init__(
        self,
        root: str,
        size: int = 32,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        num_workers: int = 0,
        seed: int = 0,
        augment: bool = True,
    ):
        super().__init__()
        if int(size) != size or size < 4:
            raise ValueError(f"size must be an integer of at least 4, got {size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be non-negative, got {num_workers}")
        self.root = Path(root)
        self.size, self.batch_size = int(size), int(batch_size)
        self.val_fraction, self.num_workers = float(val_fraction), int(num_workers)
        self.seed, self.augment = int(seed), bool(augment)
        self.train_set: _TextureSet | None = None
        self.val_set: _TextureSet | None = None
        self._files: list[tuple[str, Path]] | None = None

    @property
    def stored_side(self) -> int:
        """Side of the images kept in memory (larger than ``size`` when cropping randomly)."""
        return math.ceil(1.125 * self.size) if self.augment else self.size

    def _scan(self) -> list[tuple[str, Path]]:
        if self._files is None:
            files = scan_textures(self.root)
            if not files:
                raise ValueError(f"no images in the texture collection {self.root}: expected "
                                 f"<label>/<name>{{{','.join(IMAGE_SUFFIXES)}}} files under it")
            self._files = files
        return self._files

    def info(self) -> dict[str, Any]:
        """``{"labels": [...], "size": size, "channels": 3}``; label ``i`` is ``cond == i``."""
        return {"labels": sorted({label for label, _ in self._scan()}), "size": self.size, "channels": 3}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        files = self._scan()
        labels = self.info()["labels"]
        index = {label: i for i, label in enumerate(labels)}
        images, classes, problems = [], [], []
        for label, path in files:
            try:
                images.append(_load_square(path, self.stored_side))
            except _Unusable as exc:
                problems.append(f"{label}/{path.name} ({exc})")
                continue
            classes.append(index[label])
        if problems:
            named = ", ".join(problems[:_NAMED])
            more = f", and {len(problems) - _NAMED} more" if len(problems) > _NAMED else ""
            warnings.warn(f"{self.root}: skipped {len(problems)} of {len(files)} images: {named}{more}", stacklevel=2)
        if not images:
            raise ValueError(f"none of the {len(files)} images in the texture collection {self.root} could be used")
        pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        targets = torch.tensor(classes, dtype=torch.long)
        n = len(images)
        n_val = round(n * self.val_fraction)
        if self.val_fraction > 0 and n >= 2:
            n_val = max(n_val, 1)
        n_val = min(n_val, n - 1)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        val, train = order[:n_val], order[n_val:]
        self.train_set = _TextureSet(pixels[train], targets[train], self.size, self.augment)
        self.val_set = _TextureSet(pixels[val], targets[val], self.size, False)

    def _loader(self, dataset: _TextureSet, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader | list:
        self.setup("validate")
        return self._loader(self.val_set, False) if len(self.val_set) else []


# --- the U-Net --------------------------------------------------------------------------------------
def _groups(channels: int, most: int = 8) -> int:
    """The largest GroupNorm group count up to ``most`` that divides ``channels``."""
    return max(g for g in range(1, most + 1) if channels % g == 0)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the embedding applied as a scale and shift after the second norm."""

    def __init__(self, cin: int, cout: int, emb_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class _SelfAttention(nn.Module):
    """Single-head self-attention over the pixels of the lowest resolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        mixed = F.scaled_dot_product_attention(q, k, v)  # (b, hw, c)
        return x + self.out(mixed.transpose(-1, -2).reshape(b, c, h, w))


def _per_sample_time(t: Tensor | float, x: Tensor, who: str) -> Tensor:
    """One time per sample, (B,), from a number, a (B,) tensor or a (B, 1, ...) tensor."""
    t = torch.as_tensor(t, device=x.device)
    batch = x.shape[0]
    if t.ndim == 0:
        return t.expand(batch)
    if t.shape[0] != batch or t[0].numel() != 1:
        raise ValueError(f"{who} takes one time per sample, shape ({batch},); got {tuple(t.shape)}")
    return t.reshape(batch)


class TextureUNet(Denoiser):
    """A small class-conditional U-Net for RGB images (DDPM's design at a CPU-friendly size).

    Each resolution has one residual block (GroupNorm, SiLU, 3x3 convolutions) on the way down
    and one, after concatenating the skip connection, on the way up; the lowest resolution adds
    self-attention between two residual blocks. The time ``t`` in [0, 1] is scaled by 1000 and
    embedded sinusoidally (so features match a 1000-step model's), passed through an MLP and
    added to a learned class embedding; each residual block turns the sum into a per-channel
    scale and shift. Class ``num_labels`` is the null class: classifier-free guidance and
    condition dropout use it, and ``cond=None`` means it for every sample.

    Args:
        num_labels: number of real classes.
        channels: width of the first resolution.
        channel_mult: width multiplier of each resolution (its length is the number of
            resolutions; each after the first halves the side).
        prediction: what the network predicts.

    Shapes:
        x: (B, 3, H, W) with H and W divisible by ``2 ** (len(channel_mult) - 1)``;
        t: (B,) or a number; cond: (B,) long in [0, num_labels] or ``None``; returns (B, 3, H, W).
    """

    def __init__(self, num_labels: int = 6, channels: int = 32, channel_mult: Sequence[int] = (1, 2, 2),
                 prediction: Prediction = "eps"):
        super().__init__(prediction=prediction)
        if num_labels < 1:
            raise ValueError(f"num_labels must be positive, got {num_labels}")
        if channels < 2 or channels % 2:
            raise ValueError(f"channels must be an even number of at least 2, got {channels}")
        mult = [int(m) for m in channel_mult]
        if not mult or min(mult) < 1:
            raise ValueError(f"channel_mult must be a non-empty list of positive integers, got {list(channel_mult)}")
        self.num_labels, self.channels, self.channel_mult = int(num_labels), int(channels), tuple(mult)
        emb_dim = 4 * channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_embedding = nn.Embedding(num_labels + 1, emb_dim)
        widths = [channels * m for m in mult]
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        previous = channels
        for i, width in enumerate(widths):
            self.down.append(_ResBlock(previous, width, emb_dim))
            self.downsample.append(nn.Conv2d(width, width, 3, stride=2, padding=1) if i < len(widths) - 1 else nn.Identity())
            previous = width
        self.mid1 = _ResBlock(previous, previous, emb_dim)
        self.mid_attention = _SelfAttention(previous)
        self.mid2 = _ResBlock(previous, previous, emb_dim)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(widths))):
            self.up.append(_ResBlock(previous + widths[i], widths[i], emb_dim))
            self.upsample.append(nn.Conv2d(widths[i], widths[i], 3, padding=1) if i > 0 else nn.Identity())
            previous = widths[i]
        self.out = nn.Sequential(nn.GroupNorm(_groups(previous), previous), nn.SiLU(), nn.Conv2d(previous, 3, 3, padding=1))

    @property
    def null_label(self) -> int:
        """The class index of the null condition."""
        return self.num_labels

    def drop_cond(self, cond: Tensor | None, mask: Tensor) -> Tensor | None:
        """``cond`` with the null class where ``mask`` is True (a new tensor)."""
        if cond is None:
            return None
        return torch.where(mask.to(cond.device), torch.full_like(cond, self.null_label), cond)

    def _time_features(self, t: Tensor) -> Tensor:
        half = self.channels // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half - 1, 1))
        angles = 1000.0 * t.float()[:, None] * freqs
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        factor = 2 ** (len(self.channel_mult) - 1)
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"TextureUNet takes (B, 3, H, W) images with H and W divisible by {factor}, "
                             f"got {tuple(x.shape)}")
        t = _per_sample_time(t, x, "TextureUNet")
        if cond is None:
            cond = torch.full((x.shape[0],), self.null_label, dtype=torch.long, device=x.device)
        elif cond.shape != (x.shape[0],) or cond.dtype.is_floating_point:
            raise ValueError(f"cond must hold one integer label per sample, shape ({x.shape[0]},); "
                             f"got {cond.dtype} of shape {tuple(cond.shape)}")
        elif bool(((cond < 0) | (cond > self.null_label)).any()):
            raise ValueError(f"cond labels must lie in [0, {self.null_label}] ({self.null_label} is the null class), "
                             f"got {cond.min().item()}..{cond.max().item()}")
        emb = self.time_mlp(self._time_features(t).to(x.dtype)) + self.label_embedding(cond.long())
        h = self.stem(x)
        skips = []
        for block, down in zip(self.down, self.downsample):
            h = block(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid2(self.mid_attention(self.mid1(h, emb)), emb)
        for block, up in zip(self.up, self.upsample):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if not isinstance(up, nn.Identity):
                # Convolving before the nearest-neighbour upsampling costs a quarter as much as after.
                h = F.interpolate(up(h), scale_factor=2.0, mode="nearest")
        return self.out(h)


# --- diffusers models --------------------------------------------------------------------------------
def ddpm_alphas_cumprod(beta_start: float = 1e-4, beta_end: float = 0.02, num_train_timesteps: int = 1000) -> Tensor:
    """``alphas_cumprod`` of DDPM's linear betas (diffusers' ``beta_schedule="linear"``), float64.

    Shapes:
        returns: (num_train_timesteps,); index k is timestep k.
    """
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    if num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be positive, got {num_train_timesteps}")
    betas = torch.linspace(beta_start, beta_end, int(num_train_timesteps), dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def diffusers_timestep(t: Tensor | float, schedule: Schedule, alphas_cumprod: Tensor) -> Tensor:
    """The (fractional) discrete timestep whose noise level equals the core schedule's at ``t``.

    Solves ``alphas_cumprod[k] = schedule.alpha(t)^2`` for k, interpolating ``log alphas_cumprod``
    linearly between integer timesteps, and clamps to ``[0, N - 1]`` (times less noisy than
    timestep 0 map to 0, times noisier than the last to ``N - 1``). For
    :class:`~polydiff.schedules.VPLinear` with the model's own betas this is ``k = N t - 1``.
    Only variance-preserving schedules (``alpha^2 + sigma^2 = 1``) are matched meaningfully.

    Args:
        t: core times in [0, 1].
        schedule: the core schedule the sampler runs on.
        alphas_cumprod: the model's training ``alphas_cumprod`` (decreasing), e.g. a
            ``DDPMScheduler``'s or :func:`ddpm_alphas_cumprod`'s.

    Shapes:
        t: any; alphas_cumprod: (N,); returns float64 shaped like ``t``.
    """
    t = torch.as_tensor(t, dtype=torch.float64)
    log_ac = torch.log(torch.as_tensor(alphas_cumprod, dtype=torch.float64, device=t.device))
    if log_ac.ndim != 1 or log_ac.numel() < 2:
        raise ValueError(f"alphas_cumprod must be a 1-d tensor of at least two steps, got shape {tuple(log_ac.shape)}")
    target = 2.0 * torch.log(schedule.alpha(t).to(t.device))
    rising = -log_ac  # increasing in k
    upper = torch.searchsorted(rising.contiguous(), (-target).contiguous().reshape(-1)).clamp(1, log_ac.numel() - 1)
    lower = upper - 1
    frac = ((target.reshape(-1) - log_ac[lower]) / (log_ac[upper] - log_ac[lower])).clamp(0.0, 1.0)
    return (lower + frac).reshape(t.shape)


class DiffusersUNet(Denoiser):
    """A ``diffusers.UNet2DModel`` as a polydiff denoiser.

    ``forward(x, t, cond)`` turns the core's continuous time into the model's discrete timestep
    (``timestep_map``), passes ``cond`` as ``class_labels`` when the model has a class embedding,
    and returns the model's ``sample`` (the first half of its channels when it predicts a
    learned variance too, as improved-DDPM models do). See the module docstring for which core
    schedule matches a DDPM-trained model.

    Args:
        model: the ``UNet2DModel`` (or a compatible module); exactly one of ``model`` and
            ``pretrained`` is given.
        pretrained: a local folder saved by ``save_pretrained`` (or a pipeline folder holding it
            under ``unet/``); it is loaded with ``local_files_only=True`` and never downloaded.
        prediction: what the model predicts: ``eps`` (diffusers' ``epsilon``), ``v``
            (``v_prediction``) or ``x0`` (``sample``).
        num_train_timesteps: the number of discrete timesteps the model was trained on.
        timestep_map: ``scaled``: ``k = t (N - 1)``; ``matched``: the k whose ``alphas_cumprod``
            equals ``schedule.alpha(t)^2`` (:func:`diffusers_timestep`).
        beta_start: first training beta (linear betas; ``matched`` only).
        beta_end: last training beta (``matched`` only).
        schedule: the core schedule sampled with (``matched`` only; default
            ``VPLinear(beta_start, beta_end, num_train_timesteps)``).
        null_label: the class index the model was trained with as the null condition, needed for
            classifier-free guidance with a class-conditional model.

    Shapes:
        x: (B, C, H, W); t: (B,) or a number; cond: (B,) long or ``None``; returns (B, C, H, W).
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        pretrained: str | None = None,
        prediction: Prediction = "eps",
        num_train_timesteps: int = 1000,
        timestep_map: TimestepMap = "scaled",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        schedule: Schedule | None = None,
        null_label: int | None = None,
    ):
        super().__init__(prediction=prediction)
        if (model is None) == (pretrained is None):
            raise ValueError("give DiffusersUNet exactly one of model (a UNet2DModel) and pretrained (a local folder)")
        if timestep_map not in TIMESTEP_MAPS:
            raise ValueError(f"unknown timestep_map {timestep_map!r}; valid: {', '.join(TIMESTEP_MAPS)}")
        if num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be at least 2, got {num_train_timesteps}")
        if model is None:
            model = self._load(Path(pretrained))
        if not isinstance(model, nn.Module) or not hasattr(model, "config"):
            raise TypeError(f"model must be a diffusers UNet2DModel, got {type(model).__name__}")
        self.model = model
        self.num_train_timesteps = int(num_train_timesteps)
        self.timestep_map = timestep_map
        self.null_label = None if null_label is None else int(null_label)
        self.schedule = None
        if timestep_map == "matched":
            self.schedule = schedule if schedule is not None else VPLinear(beta_start, beta_end, num_train_timesteps)
            self.register_buffer("alphas_cumprod", ddpm_alphas_cumprod(beta_start, beta_end, num_train_timesteps),
                                 persistent=False)

    @staticmethod
    def _load(folder: Path) -> nn.Module:
        if not folder.is_dir():
            raise FileNotFoundError(f"pretrained folder {folder} does not exist (DiffusersUNet loads local folders only)")
        from diffusers import UNet2DModel

        subfolder = None
        if not (folder / "config.json").is_file() and (folder / "unet" / "config.json").is_file():
            subfolder = "unet"
        return UNet2DModel.from_pretrained(folder, subfolder=subfolder, local_files_only=True)

    @property
    def has_class_embedding(self) -> bool:
        """Whether the wrapped model takes class labels."""
        return getattr(self.model, "class_embedding", None) is not None

    def timesteps(self, t: Tensor) -> Tensor:
        """The model's (fractional) timesteps for core times ``t`` (float64, shaped like ``t``)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if self.timestep_map == "scaled":
            return t * (self.num_train_timesteps - 1)
        return diffusers_timestep(t, self.schedule, self.alphas_cumprod)

    def drop_cond(self, cond: Tensor | None, mask: Tensor) -> Tensor | None:
        """``cond`` with ``null_label`` where ``mask`` is True."""
        if cond is None:
            return None
        if self.null_label is None:
            raise ValueError("the wrapped model has no null class for classifier-free guidance or condition "
                             "dropout; pass null_label (the class index it was trained with as 'no class')")
        return torch.where(mask.to(cond.device), torch.full_like(cond, self.null_label), cond)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        t = _per_sample_time(t, x, "DiffusersUNet")
        steps = self.timesteps(t).to(device=x.device, dtype=torch.float32)
        labels = None
        if self.has_class_embedding:
            if cond is None:
                if self.null_label is None:
                    raise ValueError("the wrapped model is class-conditional: pass cond, or null_label for cond=None")
                cond = torch.full((x.shape[0],), self.null_label, dtype=torch.long, device=x.device)
            labels = cond
        elif cond is not None:
            raise ValueError("the wrapped model has no class embedding, so it cannot take cond; pass cond=None")
        out = self.model(x, steps, class_labels=labels, return_dict=False)[0]
        if out.shape[1] == 2 * x.shape[1]:  # a learned variance after the prediction (improved DDPM)
            out = out[:, : x.shape[1]]
        return out
