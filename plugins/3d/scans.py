"""Partial observations for shape completion, depth images, and the real meshes CGAL's demos ship.

* :func:`partial_from_mesh`: what a camera sees of a mesh. The surface is sampled densely, the
  samples are projected (orthographic along a direction, or perspective from an eye point) onto a
  pixel grid, and a z-buffer keeps, in each pixel, the samples within a depth tolerance of the
  nearest one. Each sample also occludes the pixels next to its own (a 3 x 3 splat), so back
  faces do not show through pixels that no front sample happened to land in.
* :func:`partial_by_plane`: the cut PVD uses for completion: the points farthest along a
  direction are removed.
* :func:`backproject_depth` / :func:`read_depth`: a depth image to points with the pinhole model.
* :func:`cgal_meshes`: the meshes in the data tarball of Debian's ``libcgal-demo`` package.
"""

from __future__ import annotations

import gzip
import json
import os
import tarfile
from pathlib import Path

import numpy as np

__all__ = ["partial_from_mesh", "partial_by_plane", "backproject_depth", "read_depth", "cgal_meshes",
           "CGAL_DATA_ENV", "CGAL_BASE_FOLDERS", "DepthError"]

#: The environment variable that points :func:`cgal_meshes` to other data (a folder or a tarball).
CGAL_DATA_ENV = "POLYDIFF_CGAL_DATA"
#: Where Debian's ``libcgal-demo`` puts its tarballs (its README.Debian).
CGAL_BASE_FOLDERS: tuple[str, ...] = ("/usr/share/doc/libcgal-demo",)

_MESH_SUFFIXES = (".off", ".obj", ".ply", ".stl")


class DepthError(ValueError):
    """A depth file that cannot be used; the message names the file and the reason."""


def _unit(vector, name: str) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64).reshape(-1)
    if vector.shape != (3,) or not np.isfinite(vector).all() or not np.linalg.norm(vector) > 0:
        raise ValueError(f"{name} must be a finite non-zero 3-vector; got {vector}")
    return vector / np.linalg.norm(vector)


def _frame(forward: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    helper = np.array([0.0, 1.0, 0.0]) if abs(forward[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    right = np.cross(forward, helper)
    right /= np.linalg.norm(right)
    return right, np.cross(right, forward)


def partial_from_mesh(mesh, *, direction=(0.0, 0.0, 1.0), eye=None, points: int | None = 2048,
                      samples: int = 40_000, resolution: int | None = None, tolerance: float = 2.0,
                      seed: int = 0) -> np.ndarray:
    """The part of a mesh's surface a camera sees, as a point cloud (module docstring).

    Args:
        mesh: a ``trimesh.Trimesh``.
        direction: from the mesh towards an orthographic camera (``(0, 0, 1)``: seen from +z,
            looking down). Ignored when ``eye`` is given.
        eye: the position of a perspective camera looking at the centre of the mesh's bounding
            box; it must be in front of every sample.
        points: how many visible points to return, drawn without replacement (all of them when
            fewer are visible, or when ``None``).
        samples: surface samples drawn before the visibility test.
        resolution: pixels along each side of the z-buffer; default ``sqrt(samples / 16)``, so that
            a face-on surface gets a few samples a pixel.
        tolerance: how far behind the nearest sample of its pixel a sample may lie and still be
            seen, in pixel widths (at the sample's depth for a perspective camera).
        seed: seeds the surface sampling and the final draw.

    Shapes:
        returns (M, 3) float32, M <= ``points``.

    Raises:
        ValueError: a mesh without surface, a zero direction, an eye inside the mesh's extent, or
            non-positive counts.
    """
    import trimesh

    if samples < 1 or (points is not None and points < 1):
        raise ValueError(f"samples and points must be positive; got {samples} and {points}")
    if len(mesh.faces) == 0 or not mesh.area > 0:
        raise ValueError("the mesh has no surface to see (no faces or zero area)")
    resolution = int(resolution or max(8, int(np.sqrt(samples / 16))))
    cloud, _ = trimesh.sample.sample_surface(mesh, int(samples), seed=int(seed))
    cloud = np.asarray(cloud, dtype=np.float64)
    if eye is None:
        forward = -_unit(direction, "direction")
        right, up = _frame(forward)
        u, v, depth = cloud @ right, cloud @ up, cloud @ forward
    else:
        eye = np.asarray(eye, dtype=np.float64)
        forward = _unit(mesh.bounds.mean(axis=0) - eye, "the eye's offset from the mesh centre")
        right, up = _frame(forward)
        rel = cloud - eye
        depth = rel @ forward
        if not depth.min() > 0:
            raise ValueError(f"eye {eye.tolist()} is not in front of the whole mesh; move it farther away")
        u, v = rel @ right / depth, rel @ up / depth
    span = max(float(np.ptp(u)), float(np.ptp(v)), 1e-12)
    pixel = span / resolution * (1 + 1e-9)
    col = np.minimum(((u - u.min()) / pixel).astype(int), resolution - 1)
    row = np.minimum(((v - v.min()) / pixel).astype(int), resolution - 1)
    nearest = np.full((resolution + 2, resolution + 2), np.inf)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            np.minimum.at(nearest, (row + 1 + dr, col + 1 + dc), depth)
    footprint = pixel if eye is None else pixel * depth
    visible = depth <= nearest[row + 1, col + 1] + tolerance * footprint
    seen = cloud[visible]
    if points is not None and len(seen) > points:
        seen = seen[np.sort(np.random.default_rng(seed).choice(len(seen), points, replace=False))]
    return seen.astype(np.float32)


def partial_by_plane(points, normal, fraction: float) -> np.ndarray:
    """Remove the ``fraction`` of the points farthest along ``normal`` (a plane cut, as in PVD).

    Shapes:
        points: (N, 3); returns (N - round(fraction * N), 3) in the input's order and dtype.

    Raises:
        ValueError: points that are not (N, 3), a zero normal, or ``fraction`` outside [0, 1).
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3); got {points.shape}")
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1); got {fraction}")
    height = points.astype(np.float64) @ _unit(normal, "normal")
    keep = len(points) - int(round(fraction * len(points)))
    return points[np.sort(np.argsort(height, kind="stable")[:keep])]


def backproject_depth(depth, fx: float, fy: float, cx: float, cy: float, *, depth_scale: float = 1.0,
                      cam_to_world=None) -> np.ndarray:
    """The points a depth image sees, with the pinhole model (OpenCV's camera axes).

    The pixel in row ``v`` and column ``u`` with depth ``z`` (times ``depth_scale``) is the camera
    point ``((u - cx) z / fx, (v - cy) z / fy, z)``: x right, y down, z forward, pixel centres at
    integer coordinates. Pixels with zero, negative, NaN or infinite depth are skipped.

    Args:
        depth: the depth image.
        fx, fy, cx, cy: the intrinsics in pixels.
        depth_scale: multiplies the stored values (0.001 for millimetres to metres).
        cam_to_world: a (4, 4) rigid transform applied to the camera points.

    Shapes:
        depth: (H, W); returns (M, 3) float32 in row-major pixel order, M <= H * W.

    Raises:
        ValueError: a depth that is not 2-D, non-positive focal lengths, or a transform that is
            not a finite (4, 4) array.
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must have shape (H, W); got {depth.shape}")
    if not (fx > 0 and fy > 0):
        raise ValueError(f"focal lengths must be positive; got fx={fx}, fy={fy}")
    z = depth * depth_scale
    v, u = np.nonzero(np.isfinite(z) & (z > 0))
    z = z[v, u]
    camera = np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=1)
    if cam_to_world is not None:
        transform = np.asarray(cam_to_world, dtype=np.float64)
        if transform.shape != (4, 4) or not np.isfinite(transform).all():
            raise ValueError(f"cam_to_world must be a finite (4, 4) array; got shape {transform.shape}")
        camera = camera @ transform[:3, :3].T + transform[:3, 3]
    return camera.astype(np.float32)


def read_depth(path: str | Path, *, depth_scale: float | None = None) -> np.ndarray:
    """A depth image from a 16-bit PNG or an NPY file, in the units after ``depth_scale``.

    Args:
        path: ``.png`` (16-bit greyscale, as Kinect-style sensors and most RGB-D data sets store
            depth) or ``.npy`` (a 2-D array).
        depth_scale: multiplies the stored values; default 0.001 for PNG (millimetres to metres)
            and 1 for NPY.

    Shapes:
        returns (H, W) float32; zero marks a missing value (and NaN stays NaN).

    Raises:
        DepthError: an unknown suffix, an unreadable file, a PNG that is not 16-bit greyscale, or
            an array that is not 2-D.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".npy"):
        raise DepthError(f"{path}: unknown depth type {suffix!r}; read: .png (16-bit), .npy")
    try:
        if suffix == ".png":
            from PIL import Image

            with Image.open(path) as image:
                mode = image.mode
                values = np.asarray(image)
        else:
            values = np.load(path, allow_pickle=False)
    except Exception as error:  # Pillow and numpy raise many kinds for a broken file
        raise DepthError(f"{path}: not a readable depth image ({type(error).__name__}: {error})") from None
    if suffix == ".png" and not mode.startswith("I"):
        raise DepthError(f"{path}: a {mode!r} image; depth PNGs are 16-bit greyscale")
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.number):
        raise DepthError(f"{path}: depth must be a 2-D numeric array; got shape {values.shape}, dtype {values.dtype}")
    scale = depth_scale if depth_scale is not None else (0.001 if suffix == ".png" else 1.0)
    return (values.astype(np.float64) * scale).astype(np.float32)


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "polydiff" / "cgal"


def _safe_parts(name: str) -> tuple[str, ...] | None:
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or any(p in ("..", "") for p in parts):
        return None
    return parts


def _is_mesh_name(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(_MESH_SUFFIXES) or lower.endswith(tuple(s + ".gz" for s in _MESH_SUFFIXES))


def _unpack(source: Path, cache: Path) -> list[Path]:
    """The mesh files of ``source`` (a folder, a tarball, or one file) as plain files on disk:
    tarball members and gzipped files are read into memory and written under ``cache``."""
    if source.is_dir():
        found = []
        for path in sorted(source.rglob("*")):
            if path.is_file() and (path.name.endswith((".tar.gz", ".tgz", ".tar"))):
                found += _unpack(path, cache)
            elif path.is_file() and _is_mesh_name(path.name):
                found += _unpack(path, cache)
        return found
    if source.name.endswith((".tar.gz", ".tgz", ".tar")):
        stat = source.stat()
        target = cache / f"{source.name}-{stat.st_size}-{stat.st_mtime_ns}"
        listing = target / ".members.json"
        if listing.is_file():
            return [target / m for m in json.loads(listing.read_text())]
        members = []
        with tarfile.open(source) as archive:
            for member in archive:
                parts = _safe_parts(member.name)
                if not member.isfile() or parts is None or not _is_mesh_name(member.name):
                    continue
                data = archive.extractfile(member).read()
                if member.name.lower().endswith(".gz"):
                    data, parts = gzip.decompress(data), parts[:-1] + (parts[-1][:-3],)
                out = target.joinpath(*parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
                members.append("/".join(parts))
        target.mkdir(parents=True, exist_ok=True)
        listing.write_text(json.dumps(members))
        return [target / m for m in members]
    if source.name.lower().endswith(".gz"):
        stat = source.stat()
        out = cache / f"gz-{stat.st_size}-{stat.st_mtime_ns}" / source.name[:-3]
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(gzip.decompress(source.read_bytes()))
        return [out]
    return [source] if _is_mesh_name(source.name) else []


def cgal_meshes(root: str | Path | None = None, *, min_faces: int = 1000, cache: str | Path | None = None) -> list[Path]:
    """Real meshes from CGAL's demo data, as files that :func:`polydiff_3d.formats.load_mesh` reads.

    The data comes from ``root``, else from the folder or tarball named by the environment
    variable :data:`CGAL_DATA_ENV`, else from :data:`CGAL_BASE_FOLDERS`, where Debian's
    ``libcgal-demo`` installs ``data.tar.gz`` (about 150 OFF/PLY/STL meshes). Tarball members and
    gzipped files are read into memory and written as plain files under ``cache`` (default
    ``$XDG_CACHE_HOME/polydiff/cgal``); the face counts found are kept there too, so only the first
    call loads every mesh (some seconds).

    Args:
        root: a folder (searched recursively for meshes and tarballs), a tarball, or a mesh file.
        min_faces: keep meshes with at least this many triangles after trimesh's triangulation.
        cache: where unpacked files and face counts are kept.

    Returns:
        The meshes trimesh loads with at least ``min_faces`` triangles, sorted; an empty list when
        no data is there (the package not installed).
    """
    from .formats import ShapeError, load_mesh

    if root is None:
        root = os.environ.get(CGAL_DATA_ENV) or next((f for f in CGAL_BASE_FOLDERS if Path(f).is_dir()), None)
        if root is None:
            return []
    root = Path(root)
    if not root.exists():
        return []
    cache = Path(cache) if cache is not None else _default_cache()
    counts_file = cache / "faces.json"
    try:
        counts = json.loads(counts_file.read_text()) if counts_file.is_file() else {}
    except ValueError:
        counts = {}
    kept, changed = [], False
    for path in _unpack(root, cache):
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in counts:
            try:
                counts[key] = len(load_mesh(path).faces)
            except (ShapeError, OSError):
                counts[key] = 0
            changed = True
        if counts[key] >= min_faces:
            kept.append(path)
    if changed:
        cache.mkdir(parents=True, exist_ok=True)
        counts_file.write_text(json.dumps(counts))
    return sorted(kept)
