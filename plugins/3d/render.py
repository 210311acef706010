"""A small pure-PyTorch rasteriser: cameras, a z-buffer with perspective-correct barycentrics,
shaded previews, point splats, turntable strips and depth images.

Conventions (OpenGL): a :class:`Camera` maps a world point ``p`` to camera coordinates
``R p + t``; the camera looks down its **-z** axis, x points right and y up in the image. The
depth of a point is its distance along the view axis, ``-z`` in camera coordinates (not the ray
length). Pixel coordinates are continuous ``(column, row)``: pixel ``(i, j)`` (row ``i``, column
``j``) covers ``[j, j + 1) x [i, i + 1)`` and is sampled at its centre ``(j + 0.5, i + 0.5)``; row
0 is the top of the image. The world is y up; meshes are expected near the unit sphere.

Faces with a vertex at or behind the near plane are dropped rather than clipped (the cameras
here orbit outside the shape). Both sides of every face are drawn; a pixel is covered when its
centre lies inside or on the edge of a triangle, and the nearest face wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Camera", "Fragments", "look_at", "orbit_cameras", "project", "rasterize", "interpolate", "shade_mesh",
    "render_points", "turntable_png", "depth_image", "back_project",
]

#: Depths at or below this are behind the camera for the rasteriser.
NEAR = 1e-4
# Candidate (face, pixel) pairs examined at once; bounds the rasteriser's memory (~40 bytes each).
_CHUNK_PAIRS = 1 << 21


@dataclass(frozen=True)
class Camera:
    """A square pinhole camera looking down its -z axis (OpenGL convention).

    Attributes:
        R: (3, 3) world-to-camera rotation.
        t: (3,) translation; camera coordinates are ``R p + t``.
        fov_deg: the full field of view, in degrees (vertical and horizontal: the image is square).
        size: the image's side in pixels.
    """

    R: Tensor
    t: Tensor
    fov_deg: float = 40.0
    size: int = 64

    @property
    def focal(self) -> float:
        """The focal length in pixels."""
        return self.size / 2 / math.tan(math.radians(self.fov_deg) / 2)

    @property
    def position(self) -> Tensor:
        """The camera's centre in world coordinates, (3,)."""
        return -self.R.T @ self.t


def _vec(value, name: str) -> Tensor:
    out = torch.as_tensor(np.asarray(value, dtype=np.float64) if not isinstance(value, Tensor) else value,
                          dtype=torch.float64)
    if out.shape != (3,):
        raise ValueError(f"{name} must be a 3-vector, got shape {tuple(out.shape)}")
    return out


def look_at(eye: Sequence[float] | Tensor, target: Sequence[float] | Tensor = (0.0, 0.0, 0.0),
            up: Sequence[float] | Tensor = (0.0, 1.0, 0.0), fov_deg: float = 40.0, size: int = 64) -> Camera:
    """A camera at ``eye`` looking at ``target`` with ``up`` as close to the image's up as it can be.

    Raises:
        ValueError: ``eye`` equals ``target``, or a non-positive size or field of view.
    """
    if size < 1 or not 0 < fov_deg < 180:
        raise ValueError(f"a camera needs size >= 1 and 0 < fov_deg < 180, got size={size}, fov_deg={fov_deg}")
    eye, target, up = _vec(eye, "eye"), _vec(target, "target"), _vec(up, "up")
    back = eye - target
    if back.norm() == 0:
        raise ValueError("the camera's eye and target coincide")
    z = back / back.norm()
    x = torch.linalg.cross(up, z)
    if x.norm() < 1e-9:  # looking along up: any perpendicular will do
        x = torch.linalg.cross(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64) if abs(z[2]) < 0.9
                               else torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), z)
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z]).float()
    return Camera(R, (-(R.double() @ eye)).float(), float(fov_deg), int(size))


def orbit_cameras(n: int, *, radius: float = 2.6, elevation_deg: float = 20.0, fov_deg: float = 40.0,
                  size: int = 64, start_deg: float = 0.0) -> list[Camera]:
    """``n`` cameras looking at the origin from evenly spaced azimuths about the y axis.

    Azimuth 0 is on the +z axis and the azimuth grows towards +x; a positive elevation looks down.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    elevation = math.radians(elevation_deg)
    cameras = []
    for k in range(n):
        azimuth = math.radians(start_deg + 360.0 * k / n)
        eye = (radius * math.cos(elevation) * math.sin(azimuth), radius * math.sin(elevation),
               radius * math.cos(elevation) * math.cos(azimuth))
        cameras.append(look_at(eye, fov_deg=fov_deg, size=size))
    return cameras


def _to_camera(points: Tensor, camera: Camera) -> Tensor:
    return points @ camera.R.to(points).T + camera.t.to(points)


def project(points: Tensor, camera: Camera) -> tuple[Tensor, Tensor]:
    """Pixel coordinates and depths of world points.

    Shapes:
        points: (N, 3); returns pixels (N, 2) as continuous ``(column, row)`` and depth (N,)
        (negative behind the camera, where the pixels are meaningless).
    """
    cam = _to_camera(torch.as_tensor(points).float(), camera)
    depth = -cam[:, 2]
    f, c = camera.focal, camera.size / 2
    safe = torch.where(depth.abs() > 1e-12, depth, torch.full_like(depth, 1e-12))
    pixels = torch.stack([c + f * cam[:, 0] / safe, c - f * cam[:, 1] / safe], -1)
    return pixels, depth


@dataclass(frozen=True)
class Fragments:
    """What the rasteriser saw at every pixel.

    Attributes:
        face: (H, W) long, the visible face, -1 on the background.
        bary: (H, W, 3) perspective-correct barycentric coordinates of the visible point in its
            face (zeros on the background).
        depth: (H, W) depth along the view axis, ``inf`` on the background.
        faces: (F, 3) the faces rasterised, so per-vertex attributes can be interpolated.
    """

    face: Tensor
    bary: Tensor
    depth: Tensor
    faces: Tensor | None = None

    @property
    def mask(self) -> Tensor:
        """(H, W) bool, True on pixels that show a face."""
        return self.face >= 0


def _raster_triangles(xy: Tensor, inv_depth: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Z-buffer triangles given in pixel coordinates.

    Screen-space barycentrics interpolate ``1 / depth`` linearly, so the nearest triangle is
    the one with the largest interpolated ``inv_depth``. Faces are sorted by bounding-box area and
    processed in chunks whose candidate (face, pixel) pairs fit a fixed budget.

    Shapes:
        xy: (F, 3, 2) pixel coordinates; inv_depth: (F, 3). Returns face (H, W) long (-1 empty)
        and the winning inverse depth (H, W) (0 empty).
    """
    device = xy.device
    n_pix = height * width
    best = torch.zeros(n_pix, device=device)
    face_buf = torch.full((n_pix,), -1, dtype=torch.long, device=device)
    if xy.shape[0] == 0:
        return face_buf.view(height, width), best.view(height, width)
    # Pixel j is sampled at j + 0.5: the columns a face can cover are ceil(min - 0.5) .. floor(max - 0.5).
    lo = torch.ceil(xy.min(1).values - 0.5).clamp(min=0)
    hi = torch.floor(xy.max(1).values - 0.5)
    hi = torch.minimum(hi, torch.tensor([width - 1.0, height - 1.0], device=device))
    extent = (hi - lo + 1).clamp(min=0)
    e0, e1 = xy[:, 1] - xy[:, 0], xy[:, 2] - xy[:, 0]
    area = e0[:, 0] * e1[:, 1] - e0[:, 1] * e1[:, 0]
    keep = (extent.prod(1) > 0) & (area.abs() > 1e-12) & (inv_depth > 0).all(1)
    index = torch.nonzero(keep).squeeze(1)
    if index.numel() == 0:
        return face_buf.view(height, width), best.view(height, width)
    order = index[torch.argsort(extent[index].prod(1))]
    start = 0
    while start < order.numel():
        # Sizes grow along ``order``: the last face of a chunk has the largest box in it.
        stop = start + 1
        step = 1
        while stop < order.numel():
            nxt = min(stop + step, order.numel())
            w, h = extent[order[nxt - 1]].long().tolist()
            if (nxt - start) * w * h > _CHUNK_PAIRS:
                break
            stop, step = nxt, step * 2
        ids = order[start:stop]
        start = stop
        bw, bh = extent[ids].max(0).values.long().tolist()
        ox = torch.arange(bw, device=device, dtype=xy.dtype)
        oy = torch.arange(bh, device=device, dtype=xy.dtype)
        px = lo[ids, 0, None, None] + ox[None, None, :]  # (f, 1, bw)
        py = lo[ids, 1, None, None] + oy[None, :, None]  # (f, bh, 1)
        inside_box = (px <= hi[ids, 0, None, None]) & (py <= hi[ids, 1, None, None])
        cx, cy = px + 0.5, py + 0.5
        tri = xy[ids]
        a = area[ids][:, None, None]
        # Edge functions opposite each vertex, divided by the signed area: either winding works.
        w0 = ((tri[:, 1, 0, None, None] - cx) * (tri[:, 2, 1, None, None] - cy)
              - (tri[:, 1, 1, None, None] - cy) * (tri[:, 2, 0, None, None] - cx)) / a
        w1 = ((tri[:, 2, 0, None, None] - cx) * (tri[:, 0, 1, None, None] - cy)
              - (tri[:, 2, 1, None, None] - cy) * (tri[:, 0, 0, None, None] - cx)) / a
        w2 = 1 - w0 - w1
        eps = -1e-6
        inside = inside_box & (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
        inv = inv_depth[ids]
        z = w0 * inv[:, 0, None, None] + w1 * inv[:, 1, None, None] + w2 * inv[:, 2, None, None]
        f_idx, r_idx, c_idx = torch.nonzero(inside, as_tuple=True)
        if f_idx.numel() == 0:
            continue
        z = z[f_idx, r_idx, c_idx]
        pix = (py[f_idx, r_idx, 0].long() * width + px[f_idx, 0, c_idx].long())
        chunk_best = torch.zeros(n_pix, device=device).scatter_reduce(0, pix, z, "amax", include_self=True)
        win = (z == chunk_best[pix]) & (z > best[pix])
        face_buf[pix[win]] = ids[f_idx[win]]
        best = torch.maximum(best, chunk_best)
    return face_buf.view(height, width), best.view(height, width)


def _screen_bary(xy: Tensor, points: Tensor) -> Tensor:
    """Screen-space barycentrics of points in their triangles, (P, 3) from xy (P, 3, 2), points (P, 2)."""
    a, b, c = xy[:, 0], xy[:, 1], xy[:, 2]
    e0, e1 = b - a, c - a
    area = e0[:, 0] * e1[:, 1] - e0[:, 1] * e1[:, 0]
    d = points - a
    l1 = (d[:, 0] * e1[:, 1] - d[:, 1] * e1[:, 0]) / area
    l2 = (e0[:, 0] * d[:, 1] - e0[:, 1] * d[:, 0]) / area
    return torch.stack([1 - l1 - l2, l1, l2], -1)


def rasterize(vertices: Tensor, faces: Tensor, camera: Camera) -> Fragments:
    """Visible face, perspective-correct barycentrics and depth at every pixel.

    Shapes:
        vertices: (V, 3) float; faces: (F, 3) long; returns :class:`Fragments` of (H, W) with
        ``H = W = camera.size``.
    """
    vertices = torch.as_tensor(vertices).float()
    faces = torch.as_tensor(faces).long()
    size = camera.size
    pixels, depth = project(vertices, camera)
    xy, zz = pixels[faces], depth[faces]
    front = (zz > NEAR).all(1)
    inv = torch.where(front[:, None], 1.0 / zz.clamp(min=NEAR), torch.zeros_like(zz))
    face, best = _raster_triangles(xy, inv, size, size)
    bary = torch.zeros(size, size, 3)
    out_depth = torch.full((size, size), math.inf)
    mask = face >= 0
    if mask.any():
        rows, cols = torch.nonzero(mask, as_tuple=True)
        f = face[rows, cols]
        centres = torch.stack([cols.float() + 0.5, rows.float() + 0.5], -1)
        screen = _screen_bary(xy[f], centres)
        # Perspective correction: barycentrics in space are screen ones weighted by 1 / depth.
        weighted = screen * inv[f]
        total = weighted.sum(1, keepdim=True)
        bary[rows, cols] = weighted / total
        out_depth[rows, cols] = 1.0 / total.squeeze(1)
    return Fragments(face, bary, out_depth, faces)


def interpolate(fragments: Fragments, attr: Tensor, faces: Tensor | None = None) -> Tensor:
    """Interpolate an attribute at every pixel with the fragments' barycentrics.

    Args:
        fragments: from :func:`rasterize`.
        attr: per-vertex ``(V, C)`` or per face corner ``(F, 3, C)``.
        faces: (F, 3) long, for a per-vertex attribute (default: the fragments' own faces).

    Shapes:
        returns (H, W, C); zeros on the background.
    """
    attr = torch.as_tensor(attr)
    if attr.ndim == 2:
        faces = fragments.faces if faces is None else faces
        if faces is None:
            raise ValueError("a per-vertex attribute (V, C) needs the faces to interpolate")
        corner = attr[torch.as_tensor(faces).long()]
    elif attr.ndim == 3 and attr.shape[1] == 3:
        corner = attr
    else:
        raise ValueError(f"attr must be (V, C) per vertex or (F, 3, C) per face corner, got {tuple(attr.shape)}")
    height, width = fragments.face.shape
    out = torch.zeros(height, width, corner.shape[-1], dtype=corner.dtype)
    mask = fragments.mask
    f = fragments.face[mask]
    out[mask] = (corner[f] * fragments.bary[mask][..., None].to(corner.dtype)).sum(1)
    return out


def _face_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    tri = vertices[faces]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return n / n.norm(dim=1, keepdim=True).clamp(min=1e-12)


def shade_mesh(vertices: Tensor, faces: Tensor, camera: Camera, colour: Sequence[float] | Tensor | None = None,
               *, ambient: float = 0.3) -> Tensor:
    """A Lambert-shaded view of a mesh lit by a headlight (a light at the camera), white background.

    Both sides of a face are lit alike, so open or inconsistently wound meshes read well.

    Args:
        colour: (3,) one colour, (V, 3) per vertex, in [0, 1]; default a light grey.
        ambient: the light every visible surface gets.

    Shapes:
        vertices: (V, 3); faces: (F, 3); returns (H, W, 3) in [0, 1].
    """
    vertices = torch.as_tensor(vertices).float()
    faces = torch.as_tensor(faces).long()
    frags = rasterize(vertices, faces, camera)
    image = torch.ones(camera.size, camera.size, 3)
    mask = frags.mask
    if not mask.any():
        return image
    points = interpolate(frags, vertices, faces)[mask]
    normals = _face_normals(vertices, faces)[frags.face[mask]]
    to_eye = camera.position.float()[None] - points
    to_eye = to_eye / to_eye.norm(dim=1, keepdim=True).clamp(min=1e-12)
    light = (normals * to_eye).sum(1).abs()
    if colour is None:
        base = torch.full((points.shape[0], 3), 0.8)
    else:
        colour = torch.as_tensor(colour).float()
        if colour.shape == (3,):
            base = colour.expand(points.shape[0], 3)
        elif colour.ndim == 2 and colour.shape == (vertices.shape[0], 3):
            base = interpolate(frags, colour, faces)[mask]
        else:
            raise ValueError(f"colour must be (3,) or (V, 3) with V = {vertices.shape[0]}, got {tuple(colour.shape)}")
    image[mask] = (base * (ambient + (1 - ambient) * light)[:, None]).clamp(0, 1)
    return image


def render_points(points: Tensor, camera: Camera, *, radius_px: float = 1.5) -> Tensor:
    """Round splats of points, nearer ones darker and in front, on a white background.

    Shapes:
        points: (N, 3); returns (H, W, 3) in [0, 1].
    """
    points = torch.as_tensor(points).float()
    size = camera.size
    image = torch.ones(size * size, 3)
    pixels, depth = project(points, camera)
    front = depth > NEAR
    pixels, depth = pixels[front], depth[front]
    if depth.numel() == 0:
        return image.view(size, size, 3)
    r = int(math.ceil(radius_px))
    offsets = torch.arange(-r, r + 1, dtype=torch.float32)
    oy, ox = torch.meshgrid(offsets, offsets, indexing="ij")
    # Pixels whose centres lie within the radius of the point's (sub-pixel) position.
    col = torch.floor(pixels[:, 0, None]) + ox.flatten()[None]
    row = torch.floor(pixels[:, 1, None]) + oy.flatten()[None]
    near = ((col + 0.5 - pixels[:, 0, None]) ** 2 + (row + 0.5 - pixels[:, 1, None]) ** 2) <= radius_px ** 2
    near &= (col >= 0) & (col < size) & (row >= 0) & (row < size)
    p_idx, o_idx = torch.nonzero(near, as_tuple=True)
    pix = row[p_idx, o_idx].long() * size + col[p_idx, o_idx].long()
    d = depth[p_idx]
    zbuf = torch.full((size * size,), math.inf).scatter_reduce(0, pix, d, "amin", include_self=True)
    hit = torch.isfinite(zbuf)
    lo, hi = float(depth.min()), float(depth.max())
    shade = (zbuf[hit] - lo) / max(hi - lo, 1e-9)
    near_colour, far_colour = torch.tensor([0.10, 0.25, 0.55]), torch.tensor([0.70, 0.80, 0.92])
    image[hit] = near_colour + shade[:, None] * (far_colour - near_colour)
    return image.view(size, size, 3)


def _normalised(array: np.ndarray) -> tuple[np.ndarray, float]:
    centre = (array.min(0) + array.max(0)) / 2
    scale = float(np.linalg.norm(array - centre, axis=1).max()) or 1.0
    return centre, scale


def turntable_png(path: str | Path, *, mesh=None, points=None, views: int = 8, size: int = 128,
                  elevation_deg: float = 20.0) -> Path:
    """Write one PNG strip of ``views`` renders around the y axis (shaded mesh or point splats).

    The geometry is centred and scaled to the unit sphere for the picture (the input is left
    unchanged).

    Args:
        mesh: a ``trimesh.Trimesh`` (give this or ``points``).
        points: (N, 3) array or tensor.

    Returns:
        The path written.

    Raises:
        ValueError: neither or both of ``mesh`` and ``points`` given, or the geometry is empty.
    """
    from PIL import Image

    if (mesh is None) == (points is None):
        raise ValueError("turntable_png needs exactly one of mesh= or points=")
    if views < 1:
        raise ValueError(f"views must be at least 1, got {views}")
    if mesh is not None:
        vertices = np.asarray(mesh.vertices, dtype=np.float64)
        faces = np.asarray(mesh.faces, dtype=np.int64)
        if len(faces) == 0 or len(vertices) == 0:
            raise ValueError("turntable_png: the mesh has no faces")
        centre, scale = _normalised(vertices)
        vertices = torch.as_tensor((vertices - centre) / scale).float()
        faces = torch.as_tensor(faces)
    else:
        cloud = points.detach().cpu().numpy() if isinstance(points, Tensor) else np.asarray(points)
        cloud = np.asarray(cloud, dtype=np.float64)
        if cloud.ndim != 2 or cloud.shape[1] != 3 or len(cloud) == 0:
            raise ValueError(f"turntable_png: points must be a non-empty (N, 3) array, got shape {cloud.shape}")
        centre, scale = _normalised(cloud)
        cloud = torch.as_tensor((cloud - centre) / scale).float()
    frames = []
    for camera in orbit_cameras(views, elevation_deg=elevation_deg, size=size):
        frame = shade_mesh(vertices, faces, camera) if mesh is not None else render_points(
            cloud, camera, radius_px=max(1.0, size / 96))
        frames.append(frame)
    strip = (torch.cat(frames, 1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    path = Path(path)
    Image.fromarray(strip).save(path)
    return path


def depth_image(vertices: Tensor, faces: Tensor, camera: Camera) -> Tensor:
    """The depth along the view axis at every pixel, ``inf`` where no face is seen.

    Shapes:
        vertices: (V, 3); faces: (F, 3); returns (H, W).
    """
    return rasterize(vertices, faces, camera).depth


def back_project(depth: Tensor, camera: Camera) -> Tensor:
    """World points seen at the pixel centres of a depth image (finite pixels only, row-major).

    Shapes:
        depth: (H, W) with ``H = W = camera.size``; returns (M, 3), M the number of finite pixels.
    """
    depth = torch.as_tensor(depth).float()
    if depth.shape != (camera.size, camera.size):
        raise ValueError(f"the depth image is {tuple(depth.shape)} but the camera is {camera.size} pixels square")
    rows, cols = torch.nonzero(torch.isfinite(depth), as_tuple=True)
    d = depth[rows, cols]
    f, c = camera.focal, camera.size / 2
    cam = torch.stack([(cols.float() + 0.5 - c) * d / f, -(rows.float() + 0.5 - c) * d / f, -d], -1)
    return (cam - camera.t.float()) @ camera.R.float()
