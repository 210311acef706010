"""Texturing a UV-mapped mesh with an image diffusion model run on several views at once.

The views are rendered by :mod:`.render`; every foreground pixel knows the UV coordinate it shows
(:func:`view_maps`). A view is carried to the texture by :func:`project_to_texture` and a texture
back to the views by :func:`render_texture`. Three ways of sampling the views are offered by
:func:`texture_mesh`:

* ``independent``: each view is denoised on its own and the results are projected to UV space
  afterwards (the baseline: seams where the views disagree);
* ``sync``: :class:`SyncMVD` (Liu et al. 2024, "Text-Guided Texturing by Synchronized Multi-View
  Diffusion"): at every step the clean estimates of all views are projected to one texture with
  view-angle weights and rendered back, so every view continues from a shared texture;
* ``texgen``: :class:`TexGen`, a persistent texture updated each step as a running blend, in the
  spirit of Huo et al. 2024 ("TexGen: Text-Guided 3D Texture Generation with Multi-view Sampling
  and Resampling"); its docstring says what is and is not taken from that paper.

Conventions: UV coordinates lie in [0, 1] with v pointing up (the OBJ / trimesh convention); a
texture is a (C, T, T) tensor whose row 0 is the top of the image (v = 1), texel ``(i, j)``
centred at ``u = (j + 0.5) / T``, ``v = 1 - (i + 0.5) / T``. Textures and views are in the
model's value range (``background`` is given in it too); :func:`write_textured` maps that range
to image bytes. In this module ``V`` counts views, not vertices, except in :class:`UVMesh`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from polydiff.samplers import KnownValues, StepInfo

from .render import Camera, _raster_triangles, interpolate, rasterize

__all__ = ["texture_noise", 
    "TextureError", "UVMesh", "unwrap", "uv_demo_mesh", "ViewMaps", "view_maps", "project_to_texture",
    "render_texture", "seam_disagreement", "SyncMVD", "TexGen", "TextureResult", "TEXTURE_MODES", "texture_mesh",
    "write_textured",
]

TextureMode = Literal["sync", "texgen", "independent"]
#: The ways :func:`texture_mesh` samples the views.
TEXTURE_MODES: tuple[str, ...] = get_args(TextureMode)


class TextureError(ValueError):
    """A mesh that cannot be textured; the message names the mesh and the reason."""


@dataclass(frozen=True)
class UVMesh:
    """A triangle mesh with a UV coordinate at every face corner.

    Attributes:
        vertices: (V, 3) float.
        faces: (F, 3) long, wound counter-clockwise seen from outside (trimesh's convention;
            the view weights of :func:`view_maps` use the normals this winding gives).
        uv: (F, 3, 2) float in [0, 1], v up.
        name: what error messages call the mesh.
    """

    vertices: Tensor
    faces: Tensor
    uv: Tensor
    name: str = "mesh"

    @classmethod
    def from_trimesh(cls, mesh, *, name: str = "mesh") -> "UVMesh":
        """The UV mesh of a ``trimesh.Trimesh`` whose visual carries per-vertex UVs.

        Raises:
            TextureError: the mesh has no faces or no UV coordinates (the message names it).
        """
        faces = np.asarray(mesh.faces, dtype=np.int64)
        if len(faces) == 0:
            raise TextureError(f"{name}: the mesh has no faces to texture")
        uv = getattr(mesh.visual, "uv", None)
        if uv is None or len(uv) == 0:
            raise TextureError(f"{name}: the mesh has no UV coordinates; unwrap it first (--unwrap)")
        uv = np.asarray(uv, dtype=np.float32)
        if uv.shape != (len(mesh.vertices), 2):
            raise TextureError(f"{name}: {len(uv)} UV coordinates for {len(mesh.vertices)} vertices")
        return cls(torch.as_tensor(np.asarray(mesh.vertices, dtype=np.float32)), torch.as_tensor(faces),
                   torch.as_tensor(uv[faces]), name)


def unwrap(mesh, *, name: str = "mesh"):
    """A copy of a ``trimesh.Trimesh`` with UV coordinates from an xatlas atlas (seams split vertices).

    Raises:
        TextureError: the mesh has no faces.
    """
    if len(mesh.faces) == 0:
        raise TextureError(f"{name}: the mesh has no faces to unwrap")
    return mesh.unwrap()


def uv_demo_mesh(seed: int = 0, *, sections: int = 48, rings: int = 24):
    """A lathed vase-like body of revolution about y with cylindrical UVs, for the demo.

    ``u`` is the angle over 2 pi (the seam column of vertices is duplicated so u runs from 0 to
    1), ``v`` the height from the bottom (0) to the rim (1). Open at both ends; centred on the
    origin and scaled into the unit sphere; faces wound outward. The visual is a
    ``TextureVisuals`` with a plain grey image. Deterministic in ``seed``.

    Returns:
        ``trimesh.Trimesh``.
    """
    import trimesh
    from PIL import Image
    from scipy.interpolate import CubicSpline

    rng = np.random.default_rng(int(seed))
    heights = np.linspace(0.0, 1.0, 6)
    radii = np.array([rng.uniform(0.25, 0.4), rng.uniform(0.45, 0.7), rng.uniform(0.5, 0.75),
                      rng.uniform(0.3, 0.5), rng.uniform(0.18, 0.3), rng.uniform(0.25, 0.4)])
    y = np.linspace(0.0, 1.0, rings + 1)
    r = np.clip(CubicSpline(heights, radii)(y), 0.08, None) * rng.uniform(0.9, 1.2)
    height = rng.uniform(1.2, 1.6)
    theta = np.linspace(0.0, 2 * math.pi, sections + 1)
    yy = (y - 0.5) * height
    vertices = np.stack([np.outer(r, np.cos(theta)), np.repeat(yy[:, None], sections + 1, 1),
                         np.outer(r, np.sin(theta))], -1).reshape(-1, 3)
    scale = np.linalg.norm(vertices, axis=1).max()
    vertices = vertices / scale * 0.95
    uv = np.stack(np.meshgrid(theta / (2 * math.pi), y, indexing="xy"), -1).reshape(-1, 2)
    i, j = np.meshgrid(np.arange(rings), np.arange(sections), indexing="ij")
    a = (i * (sections + 1) + j).ravel()
    b, c = a + 1, a + sections + 1
    d = c + 1
    faces = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])
    image = Image.new("RGB", (64, 64), (200, 200, 200))
    visual = trimesh.visual.TextureVisuals(uv=uv, image=image)
    return trimesh.Trimesh(vertices=vertices, faces=faces, visual=visual, process=False)


@dataclass(frozen=True)
class ViewMaps:
    """Per view, what each pixel shows of the UV mesh.

    Attributes:
        uv: (V, H, W, 2) the UV coordinate at each pixel (zeros on the background).
        mask: (V, H, W) bool, True on the mesh.
        weight: (V, H, W) ``max(0, cos(normal, to-camera)) ** sharpness`` on the mesh, 0 elsewhere.
    """

    uv: Tensor
    mask: Tensor
    weight: Tensor

    @property
    def views(self) -> int:
        return self.uv.shape[0]

    @property
    def size(self) -> int:
        return self.uv.shape[1]


def view_maps(uv_mesh: UVMesh, cameras: Sequence[Camera], *, sharpness: float = 1.0) -> ViewMaps:
    """Rasterise the mesh in every view and record UVs, the mask and view-angle weights.

    Raises:
        ValueError: no cameras, or cameras of different sizes.
    """
    if len(cameras) == 0:
        raise ValueError("view_maps needs at least one camera")
    sizes = {c.size for c in cameras}
    if len(sizes) != 1:
        raise ValueError(f"all cameras must have one image size, got {sorted(sizes)}")
    if sharpness < 0:
        raise ValueError(f"sharpness must be non-negative, got {sharpness}")
    vertices, faces = uv_mesh.vertices.float(), uv_mesh.faces.long()
    tri = vertices[faces]
    normals = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = normals / normals.norm(dim=1, keepdim=True).clamp(min=1e-12)
    uvs, masks, weights = [], [], []
    for camera in cameras:
        frags = rasterize(vertices, faces, camera)
        mask = frags.mask
        uvs.append(interpolate(frags, uv_mesh.uv.float()))
        points = interpolate(frags, vertices, faces)
        to_eye = camera.position.float() - points
        to_eye = to_eye / to_eye.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        cos = (normals[frags.face.clamp(min=0)] * to_eye).sum(-1).clamp(min=0)
        weights.append(torch.where(mask, cos ** sharpness, torch.zeros_like(cos)))
        masks.append(mask)
    return ViewMaps(torch.stack(uvs), torch.stack(masks), torch.stack(weights))


def _check_images(images: Tensor, maps: ViewMaps, name: str = "images") -> None:
    if images.ndim != 4 or images.shape[0] != maps.views or images.shape[2:] != maps.uv.shape[1:3]:
        raise ValueError(f"{name} must be (V, C, H, W) = ({maps.views}, C, {maps.size}, {maps.size}), "
                         f"got {tuple(images.shape)}")


def _splat(images: Tensor, maps: ViewMaps, tex_size: int) -> tuple[Tensor, Tensor]:
    """Per-view weighted sums of colours and weights splatted bilinearly into texels.

    Each foreground pixel lands at its continuous texel position and is shared among the four
    nearest texel centres with bilinear weights times its view weight (positions past the edge
    are clamped to the border texels, as sampling with ``padding_mode="border"`` reads them).

    Shapes:
        images: (V, C, H, W); returns sums (V, C, T, T) and weights (V, T, T).
    """
    _check_images(images, maps)
    T = int(tex_size)
    if T < 1:
        raise ValueError(f"tex_size must be at least 1, got {tex_size}")
    n_views, channels = images.shape[:2]
    view, rows, cols = torch.nonzero(maps.mask & (maps.weight > 0), as_tuple=True)
    colours = images.permute(0, 2, 3, 1)[view, rows, cols].float()  # (P, C)
    w = maps.weight[view, rows, cols].float()
    uv = maps.uv[view, rows, cols].float()
    gx = uv[:, 0] * T - 0.5
    gy = (1 - uv[:, 1]) * T - 0.5
    x0, y0 = torch.floor(gx), torch.floor(gy)
    fx, fy = gx - x0, gy - y0
    sums = torch.zeros(n_views * T * T, channels)
    weights = torch.zeros(n_views * T * T)
    for dx, dy, bw in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi = (x0 + dx).clamp(0, T - 1).long()
        yi = (y0 + dy).clamp(0, T - 1).long()
        index = view * T * T + yi * T + xi
        ww = bw * w
        weights.index_add_(0, index, ww)
        sums.index_add_(0, index, colours * ww[:, None])
    return (sums.view(n_views, T, T, channels).permute(0, 3, 1, 2).to(images.dtype),
            weights.view(n_views, T, T).to(images.dtype))


def project_to_texture(images: Tensor, maps: ViewMaps, tex_size: int) -> tuple[Tensor, Tensor]:
    """The view-angle weighted mean of the views' foreground pixels in UV space.

    Pixels are splatted bilinearly (see the module's texel convention) with weight
    ``bilinear x view weight``; texels no pixel reaches keep weight 0 and value 0. For the views to
    share texels, a texel should be about a pixel in size on the surface (``tex_size`` near the
    views' side for an atlas that fills the UV square).

    Shapes:
        images: (V, C, H, W); returns texture (C, T, T) and weight (T, T).
    """
    sums, weights = _splat(images, maps, tex_size)
    total = weights.sum(0)
    texture = sums.sum(0) / total.clamp(min=1e-12)
    return torch.where(total > 0, texture, torch.zeros_like(texture)), total


def _sample(texture: Tensor, maps: ViewMaps) -> Tensor:
    """Bilinear texture lookups at every pixel's UV, (V, C, H, W)."""
    grid = torch.stack([maps.uv[..., 0] * 2 - 1, 1 - maps.uv[..., 1] * 2], -1).to(texture.dtype)
    batch = texture.unsqueeze(0).expand(maps.views, *texture.shape)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)


def texture_noise(maps: ViewMaps, channels: int, tex_size: int, generator: torch.Generator | None = None) -> Tensor:
    """Start noise for the views drawn once in texture space (SyncMVD's initialisation).

    A ``(C, T, T)`` standard-normal texture is looked up at every foreground pixel with the
    nearest texel (bilinear lookups would average neighbours and shrink the variance), so the
    views start from the same noise wherever they see the same surface; background pixels get
    their own independent noise.

    Shapes:
        returns (V, C, H, W), unit variance everywhere.
    """
    noise_tex = torch.randn((channels, tex_size, tex_size), generator=generator)
    grid = torch.stack([maps.uv[..., 0] * 2 - 1, 1 - maps.uv[..., 1] * 2], -1).to(noise_tex.dtype)
    batch = noise_tex.unsqueeze(0).expand(maps.views, *noise_tex.shape)
    views = F.grid_sample(batch, grid, mode="nearest", padding_mode="border", align_corners=False)
    own = torch.randn(views.shape, generator=generator)
    return torch.where(maps.mask[:, None], views, own)


def render_texture(texture: Tensor, maps: ViewMaps, background: float | Tensor = 1.0) -> Tensor:
    """The views of the textured mesh: bilinear lookups at the pixels' UVs, ``background`` elsewhere.

    Shapes:
        texture: (C, T, T); background: a number or (C,); returns (V, C, H, W).
    """
    if texture.ndim != 3 or texture.shape[1] != texture.shape[2]:
        raise ValueError(f"texture must be (C, T, T), got {tuple(texture.shape)}")
    views = _sample(texture, maps)
    back = torch.as_tensor(background, dtype=views.dtype).reshape(-1, 1, 1)
    return torch.where(maps.mask[:, None], views, back.expand_as(views[0]))


def _render_seen(texture: Tensor, seen: Tensor, maps: ViewMaps) -> tuple[Tensor, Tensor]:
    """Lookups that use only seen texels (renormalised bilinear weights) and where they exist.

    Shapes:
        texture: (C, T, T); seen: (T, T) bool; returns values (V, C, H, W) and covered (V, H, W).
    """
    seen_f = seen.to(texture.dtype)
    num = _sample(texture * seen_f, maps)
    den = _sample(seen_f[None], maps)[:, 0]
    covered = maps.mask & (den > 1e-6)
    return num / den.clamp(min=1e-6)[:, None], covered


def seam_disagreement(images: Tensor, maps: ViewMaps, tex_size: int) -> float:
    """How much the views disagree about the texels they share.

    Each view is projected on its own (:func:`project_to_texture`'s splat); on every texel seen by
    at least two views, the weighted mean over views of the squared deviation of each view's
    colour from the texel's weighted mean colour (squares averaged over channels); the result
    is the plain mean over those texels. 0 when all views agree; NaN when no texel is seen twice.

    Shapes:
        images: (V, C, H, W).
    """
    sums, weights = _splat(images.double(), maps, tex_size)
    colours = sums / weights.clamp(min=1e-12)[:, None]
    total = weights.sum(0)
    mean = sums.sum(0) / total.clamp(min=1e-12)
    shared = (weights > 0).sum(0) >= 2
    if not shared.any():
        return float("nan")
    dev = ((colours - mean[None]) ** 2).mean(1)  # (V, T, T)
    per_texel = (weights * dev).sum(0) / total.clamp(min=1e-12)
    return float(per_texel[shared].mean())


def _background_like(background: float | Tensor, x: Tensor) -> Tensor:
    return torch.as_tensor(background, dtype=x.dtype, device=x.device).reshape(-1, 1, 1).expand(*x.shape[1:])


class SyncMVD:
    """Per-step callback synchronising the views through one texture (SyncMVD, Liu et al. 2024).

    The batch is the ``V`` views. At every step the clean estimates ``info.denoised`` are
    projected to a texture with view-angle weights (:func:`project_to_texture`) and rendered back;
    the callback returns the renders on the foreground pixels the texture covers, the view's own
    estimate on foreground pixels whose texels no view saw, and ``background`` elsewhere. What
    is taken from the paper: the weighted projection / re-render of the clean estimate at every
    step. Not taken: its latent-space details and the reference attention between views (a
    property of the denoiser, not of the sampling loop).

    Args:
        maps: the views' maps (:func:`view_maps`).
        tex_size: the side of the shared texture (about the views' side; see
            :func:`project_to_texture`).
        background: the value of background pixels (a number or per channel).

    Attributes:
        texture: (C, T, T) the last step's texture (``None`` before the first step).
        weight: (T, T) its accumulated weights.
    """

    def __init__(self, maps: ViewMaps, *, tex_size: int, background: float | Tensor = 1.0):
        self.maps = maps
        self.tex_size = int(tex_size)
        self.background = background
        self.texture: Tensor | None = None
        self.weight: Tensor | None = None

    def __call__(self, info: StepInfo) -> Tensor:
        denoised = info.denoised
        _check_images(denoised, self.maps, "the denoised views")
        texture, weight = project_to_texture(denoised, self.maps, self.tex_size)
        self.texture, self.weight = texture, weight
        rendered, covered = _render_seen(texture, weight > 0, self.maps)
        out = torch.where(covered[:, None], rendered.to(denoised.dtype), denoised)
        return torch.where(self.maps.mask[:, None], out, _background_like(self.background, denoised))


class TexGen:
    """Per-step callback with a persistent texture blended over the steps (after TexGen, Huo et al. 2024).

    The callback keeps a texture and a confidence map across the steps of one sampling run
    (both are reset at step 0). At every step the clean estimates are projected
    (:func:`project_to_texture`, weights ``w``); the old confidence is multiplied by ``decay``
    and the texture becomes the confidence-weighted mean of the old texture and the new
    projection, the confidence ``decay * confidence + w``. ``decay = 1`` weighs every step
    alike; smaller values let the sharper late estimates dominate.

    The callback returns, on foreground pixels whose texels have confidence, the render ``r`` of
    the texture; elsewhere on the mesh the view's own estimate; ``background`` off the mesh.

    ``resample_noise=True`` changes what covered pixels get. A callback can only replace the
    clean estimate ``x0``; the sampler then takes the noise estimate ``(x - alpha x0) / sigma``,
    so replacing ``x0`` by ``r`` leaves the view's disagreement with the texture in that noise. With
    the option the callback returns ``own + lam (r - own)`` with
    ``lam = 1 / (1 - alpha sigma' / (alpha' sigma))`` (primes at ``t_next``), the ``x0`` for which
    a deterministic DDIM step lands on ``alpha' r + sigma' eps_own``: the texture's render carrying
    the view's own noise estimate instead of the disagreement. ``lam`` is 1 at the last step and
    is capped at ``max_push``. It is exact for DDIM with ``eta = 0`` and an approximation for other
    samplers; pixels of texels nobody saw keep their own estimate, so their noise is left free.

    What is and is not TexGen: taken are the texture kept and updated across steps and the idea
    of making the noise agree with the texture; not taken are its view-by-view sequential
    sampling, its attention-guided multi-view sampling and its text-and-texture guided noise
    resampling, which need the denoiser's internals.

    Args:
        maps: the views' maps.
        tex_size: the texture's side.
        background: the value of background pixels.
        decay: the factor on the old confidence at each step, in (0, 1].
        resample_noise: return the DDIM-consistent push described above.
        schedule: the sampler's schedule (needed by ``resample_noise``).
        max_push: the cap on ``lam``.

    Attributes:
        texture: (C, T, T) the persistent texture; confidence: (T, T).
    """

    def __init__(self, maps: ViewMaps, *, tex_size: int, background: float | Tensor = 1.0, decay: float = 0.5,
                 resample_noise: bool = False, schedule: Any = None, max_push: float = 3.0):
        if not 0 < decay <= 1:
            raise ValueError(f"decay must lie in (0, 1], got {decay}")
        if resample_noise and schedule is None:
            raise ValueError("TexGen(resample_noise=True) needs the sampler's schedule")
        if max_push < 1:
            raise ValueError(f"max_push must be at least 1, got {max_push}")
        self.maps = maps
        self.tex_size = int(tex_size)
        self.background = background
        self.decay = float(decay)
        self.resample_noise = bool(resample_noise)
        self.schedule = schedule
        self.max_push = float(max_push)
        self.texture: Tensor | None = None
        self.confidence: Tensor | None = None

    def _push(self, info: StepInfo, like: Tensor) -> Tensor:
        t = info.t.to(torch.float64)
        t_next = info.t_next.to(torch.float64)
        a, s = self.schedule.alpha(t), self.schedule.sigma(t)
        a_next, s_next = self.schedule.alpha(t_next), self.schedule.sigma(t_next)
        ratio = a * s_next / (a_next * s).clamp(min=1e-30)
        lam = torch.where(ratio < 1, 1 / (1 - ratio).clamp(min=1e-12), torch.full_like(ratio, math.inf))
        return lam.clamp(1.0, self.max_push).to(like.dtype)

    def __call__(self, info: StepInfo) -> Tensor:
        denoised = info.denoised
        _check_images(denoised, self.maps, "the denoised views")
        projection, weight = project_to_texture(denoised, self.maps, self.tex_size)
        if info.index == 0 or self.texture is None or self.texture.shape != projection.shape:
            self.texture, self.confidence = torch.zeros_like(projection), torch.zeros_like(weight)
        old = self.confidence * self.decay
        total = old + weight
        blend = (old * self.texture + weight * projection) / total.clamp(min=1e-12)
        self.texture = torch.where(total > 0, blend, self.texture)
        self.confidence = total
        rendered, covered = _render_seen(self.texture, total > 0, self.maps)
        rendered = rendered.to(denoised.dtype)
        if self.resample_noise:
            rendered = denoised + self._push(info, denoised) * (rendered - denoised)
        out = torch.where(covered[:, None], rendered, denoised)
        return torch.where(self.maps.mask[:, None], out, _background_like(self.background, denoised))


@dataclass(frozen=True)
class TextureResult:
    """What :func:`texture_mesh` made.

    Attributes:
        texture: (C, T, T) in the views' value range, without holes.
        views: (V, C, H, W) the sampled views.
        seam: :func:`seam_disagreement` of the views at the synchronisation size.
        coverage: the fraction of the UV charts' texels (at the synchronisation size) that some
            view saw.
        contrast: the standard deviation of the seen texels' values, averaged over channels: a
            texture averaged flat by disagreeing views has a low seam and a low contrast too.
    """

    texture: Tensor
    views: Tensor
    seam: float
    coverage: float
    contrast: float = 0.0


def _chart_mask(uv_mesh: UVMesh, size: int) -> Tensor:
    """(T, T) bool: texels whose centres fall inside a face's UV triangle."""
    uv = uv_mesh.uv.float()
    xy = torch.stack([uv[..., 0] * size, (1 - uv[..., 1]) * size], -1)
    face, _ = _raster_triangles(xy, torch.ones(xy.shape[:2]), size, size)
    return face >= 0


def _fill_nearest(texture: Tensor, seen: Tensor, fallback: float | Tensor) -> Tensor:
    """Unseen texels take the value of the nearest seen texel (``fallback`` if none is seen)."""
    if not seen.any():
        value = torch.as_tensor(fallback, dtype=texture.dtype).reshape(-1, 1, 1)
        return value.expand_as(texture).clone()
    from scipy.ndimage import distance_transform_edt

    _, (rows, cols) = distance_transform_edt(~seen.cpu().numpy(), return_indices=True)
    return texture[:, torch.as_tensor(rows), torch.as_tensor(cols)]


def texture_mesh(
    sample_fn: Callable[..., Tensor],
    uv_mesh: UVMesh,
    cameras: Sequence[Camera],
    *,
    mode: TextureMode = "sync",
    tex_size: int = 256,
    channels: int = 3,
    background: float = 1.0,
    generator: torch.Generator | None = None,
    sharpness: float = 1.0,
    sync_size: int | None = None,
    decay: float = 0.5,
    resample_noise: bool = False,
    schedule: Any = None,
    value_range: tuple[float, float] | None = (-1.0, 1.0),
    shared_noise: bool = True,
) -> TextureResult:
    """Sample the views of a mesh with an image model and bake them into one texture.

    Args:
        sample_fn: ``sample_fn(start, known, callback, generator) -> (V, C, H, W)``, usually
            wrapping :meth:`polydiff.module.DiffusionModule.sample` with the condition, steps
            and guidance; ``start`` is the shape to sample, or the start noise itself (the
            synchronised modes draw it in texture space, :func:`texture_noise`).
        uv_mesh: the mesh.
        cameras: the ``V`` views (one image size).
        mode: one of :data:`TEXTURE_MODES` (see the module's docstring).
        tex_size: the side of the returned texture.
        channels: the images' channels.
        background: the value of background pixels, fixed through ``KnownValues(mode="replace")``.
        generator: the source of the sampler's randomness.
        sharpness: the exponent on the view-angle weights.
        sync_size: the texture side used while sampling, for the seam and the coverage
            (default: the views' side, texels about a pixel in size).
        decay, resample_noise, schedule: :class:`TexGen`'s options (``mode="texgen"``).
        shared_noise: in the synchronised modes, start every view from one noise texture
            (:func:`texture_noise`, as SyncMVD does) rather than from independent noise.
        value_range: the sampled views are clamped to this range (the images' own, as DDPM clips
            its samples) before they are projected and compared; ``None`` leaves them as sampled.

    Returns:
        :class:`TextureResult`. The texture is the projection of the final views at
        ``tex_size`` where a view reaches a texel, elsewhere the projection at ``sync_size``
        (holes filled from the nearest seen texel) upsampled bilinearly.

    Shapes:
        views: (V, C, H, W) with ``H = W = cameras[0].size``; texture (C, tex_size, tex_size).
    """
    if mode not in TEXTURE_MODES:
        raise ValueError(f"unknown texturing mode {mode!r}; valid: {', '.join(TEXTURE_MODES)}")
    if channels < 1:
        raise ValueError(f"channels must be at least 1, got {channels}")
    maps = view_maps(uv_mesh, cameras, sharpness=sharpness)
    if not maps.mask.any():
        raise TextureError(f"{uv_mesh.name}: no camera sees the mesh")
    size = maps.size
    sync = int(sync_size) if sync_size is not None else size
    shape = (maps.views, channels, size, size)
    values = torch.full(shape, float(background))
    known = KnownValues(values=values, mask=~maps.mask[:, None].expand(shape).clone(), mode="replace")
    if mode == "sync":
        callback = SyncMVD(maps, tex_size=sync, background=background)
    elif mode == "texgen":
        callback = TexGen(maps, tex_size=sync, background=background, decay=decay,
                          resample_noise=resample_noise, schedule=schedule)
    else:
        callback = None
    if mode == "independent" or not shared_noise:
        start: tuple[int, ...] | Tensor = shape
    else:
        start = texture_noise(maps, channels, sync, generator)
    views = sample_fn(start, known, callback, generator)
    if tuple(views.shape) != shape:
        raise ValueError(f"sample_fn returned {tuple(views.shape)} for the shape {shape}")
    views = torch.where(maps.mask[:, None], views.float(), values)
    if value_range is not None:  # the images' range, as DDPM clips its samples
        views = views.clamp(*value_range)
    coarse, coarse_w = project_to_texture(views, maps, sync)
    charts = _chart_mask(uv_mesh, sync)
    coverage = float((charts & (coarse_w > 0)).sum() / charts.sum().clamp(min=1))
    seam = seam_disagreement(views, maps, sync)
    seen = charts & (coarse_w > 0)
    contrast = float(coarse[:, seen].std(dim=1).mean()) if int(seen.sum()) > 1 else 0.0
    filled = _fill_nearest(coarse, coarse_w > 0, background)
    if tex_size == sync:
        texture = filled
    else:
        up = F.interpolate(filled[None], size=(tex_size, tex_size), mode="bilinear", align_corners=False)[0]
        fine, fine_w = project_to_texture(views, maps, tex_size)
        texture = torch.where(fine_w > 0, fine, up)
    return TextureResult(texture, views, seam, coverage, contrast)


def _texture_image(texture: Tensor, value_range: tuple[float, float]):
    from PIL import Image

    texture = torch.as_tensor(texture).detach().float().cpu()
    if texture.ndim != 3 or texture.shape[0] not in (1, 3, 4):
        raise ValueError(f"texture must be (C, T, T) with C in 1, 3, 4; got {tuple(texture.shape)}")
    lo, hi = value_range
    if not hi > lo:
        raise ValueError(f"value_range must be increasing, got {value_range}")
    pixels = ((texture - lo) / (hi - lo)).clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, 2)
    return Image.fromarray(pixels)


def write_textured(path: str | Path, mesh, texture: Tensor, *, value_range: tuple[float, float] = (-1.0, 1.0),
                   overwrite: bool = False) -> None:
    """Write a textured mesh as GLB (``.glb``) or OBJ with its MTL and PNG (``.obj``).

    Args:
        mesh: a :class:`UVMesh` (written with a vertex per face corner) or a ``trimesh.Trimesh``
            with UVs.
        texture: (C, T, T), C in 1, 3, 4; row 0 is the top of the image (v = 1).
        value_range: the texture values mapped to black and white.
        overwrite: replace an existing file.

    Raises:
        FileExistsError: the file exists and ``overwrite`` is False.
        TextureError: a trimesh without UVs.
        ValueError: another suffix, or a texture of the wrong shape.
    """
    import trimesh

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".glb", ".obj"):
        raise ValueError(f"{path.name}: textured meshes are written as .glb or .obj, not {suffix or 'no suffix'}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists; pass overwrite=True to replace it")
    image = _texture_image(texture, value_range)
    if isinstance(mesh, UVMesh):
        corners = mesh.faces.shape[0] * 3
        vertices = mesh.vertices[mesh.faces].reshape(corners, 3).detach().cpu().numpy()
        faces = np.arange(corners).reshape(-1, 3)
        uv = mesh.uv.reshape(corners, 2).detach().cpu().numpy()
    else:
        if getattr(mesh.visual, "uv", None) is None or len(mesh.faces) == 0:
            raise TextureError(f"{path.name}: the mesh has no faces or no UV coordinates; unwrap it first (--unwrap)")
        vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
        uv = np.asarray(mesh.visual.uv)
    material = trimesh.visual.material.SimpleMaterial(image=image)
    visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    out = trimesh.Trimesh(vertices=vertices, faces=faces, visual=visual, process=False)
    out.export(path)
