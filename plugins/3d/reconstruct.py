"""Triangle meshes from point clouds: a distance field on a grid and marching cubes.

The unsigned distance ``d(x)`` from each grid node to the nearest point (a k-d tree) is thresholded
at ``radius``: nodes with ``d > radius`` that connect to the border of the grid are *outside*,
everything else (the shell of thickness ``2 * radius`` around the points and any cavity it
encloses) is *inside*. Two surfaces are offered:

* ``"distance"``: the boundary of the inside, i.e. the outer envelope of the union of balls of
  ``radius`` around the points: one closed surface, offset about ``radius`` outward from the
  points (a sampled sphere of radius R gives a sphere of radius about ``R + radius``).
* ``"closing"``: the same inside eroded again by ``radius`` (a morphological closing), so the
  surface passes through the points rather than ``radius`` outside them; it needs a cloud sampled
  from a closed surface, since an open sheet erodes away.

``radius`` must exceed the largest gap in the sampling, or the outside leaks through the gap into
the interior and the shell stays hollow (the ``"distance"`` surface then has an inner wall as well,
and ``"closing"`` finds nothing). An i.i.d. uniform sample of a closed surface needs four to five
times the median nearest-neighbour spacing, more than a fixed rule of thumb gives; so the default
radius is the smallest of :data:`RADIUS_FACTORS` times that spacing at which the shell encloses a
cavity (of at least :data:`CAVITY_FRACTION` of the shell's volume), or :data:`DEFAULT_FACTOR` times it when none does (an open surface). The radius used is
recorded in ``mesh.metadata["radius"]``.

Marching cubes is scikit-image's (Lewiner et al. 2003). Afterwards, connected components with
fewer than ``min_component`` of the faces are dropped (specks from stray points), and the mesh is
smoothed lightly with Taubin's non-shrinking filter (trimesh's ``filter_taubin``, λ = 0.5,
ν = 0.53, ``smooth_iterations`` passes), which removes the voxel staircase without moving the
surface by more than a fraction of a grid cell.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["METHODS", "MIN_POINTS", "reconstruct_surface", "write_mesh", "MESH_WRITE_SUFFIXES"]

#: The surfaces :func:`reconstruct_surface` builds (module docstring).
METHODS: tuple[str, ...] = ("distance", "closing")
#: The fewest points a surface is built from.
MIN_POINTS: int = 8
#: The multiples of the median nearest-neighbour spacing tried, smallest first, for the default radius.
RADIUS_FACTORS: tuple[float, ...] = (2.0, 3.0, 4.0, 5.0, 6.0)
#: A cavity counts (the shell is sealed) when it holds this fraction of the shell's grid nodes;
#: a leaking shell still encloses small pockets between the balls.
CAVITY_FRACTION: float = 0.05
#: The multiple used when none of :data:`RADIUS_FACTORS` encloses a cavity (an open surface).
DEFAULT_FACTOR: float = 3.0
#: The mesh formats :func:`write_mesh` writes (through trimesh).
MESH_WRITE_SUFFIXES: tuple[str, ...] = (".ply", ".obj", ".glb", ".off", ".stl")


def _check_points(points) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3); got {points.shape}")
    bad = int((~np.isfinite(points)).any(axis=1).sum())
    if bad:
        raise ValueError(f"points: {bad} of {len(points)} row(s) hold NaN or infinite values")
    if len(points) < MIN_POINTS:
        raise ValueError(f"points: {len(points)} given; at least {MIN_POINTS} needed for a surface")
    if not np.ptp(points, axis=0).max() > 0:
        raise ValueError("points: all points coincide; no surface to build")
    return points


def _median_spacing(points: np.ndarray) -> float:
    from scipy.spatial import cKDTree

    distances, _ = cKDTree(points).query(points, k=2)
    spacing = float(np.median(distances[:, 1]))
    if not spacing > 0:
        # Over half the points are duplicates; the mean of the non-zero gaps still gives a scale.
        positive = distances[:, 1][distances[:, 1] > 0]
        spacing = float(positive.mean())
    return spacing


def reconstruct_surface(points, *, resolution: int = 64, radius: float | None = None,
                        method: Literal["distance", "closing"] = "distance", min_component: float = 0.01,
                        smooth_iterations: int = 5):
    """A closed triangle mesh around a point cloud (the method in the module docstring).

    Args:
        points: the cloud.
        resolution: grid nodes along the longest side of the cloud's padded bounding box; the cost
            grows with its cube (64: about 0.3 s, 128: a few seconds).
        radius: the distance from the points at which the envelope is drawn (and about the largest
            gap bridged), in the units of the points; default: chosen from the spacing of the
            points (module docstring). Raised to one grid cell if smaller.
        method: ``"distance"`` (the envelope at ``radius``) or ``"closing"`` (through the points).
        min_component: connected components with fewer than this fraction of the faces are dropped.
        smooth_iterations: Taubin smoothing passes (0: none).

    Shapes:
        points: (N, 3), N >= :data:`MIN_POINTS`.

    Returns:
        A ``trimesh.Trimesh`` with outward-facing normals.

    Raises:
        ValueError: points that are not a finite (N, 3) array of at least :data:`MIN_POINTS`
            distinct points, an unknown method, a resolution below 8, a non-positive radius, or no
            surface found (``"closing"`` on an open sheet or too small a ``radius``).
    """
    import trimesh
    from scipy import ndimage
    from scipy.spatial import cKDTree
    from skimage.measure import marching_cubes

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if resolution < 8:
        raise ValueError(f"resolution must be at least 8; got {resolution}")
    points = _check_points(points)
    lo, hi = points.min(axis=0), points.max(axis=0)
    spacing = _median_spacing(points)
    if radius is not None and not float(radius) > 0:
        raise ValueError(f"radius must be positive; got {radius}")
    largest = float(radius) if radius is not None else RADIUS_FACTORS[-1] * spacing
    # The grid spans the cloud plus the radius plus two cells, so its border is outside.
    cell = (float((hi - lo).max()) + 2 * largest) / (resolution - 5)
    pad = max(largest, cell) + 2 * cell
    origin = lo - pad
    counts = np.ceil((hi - lo + 2 * pad) / cell).astype(int) + 1
    axes = [origin[i] + cell * np.arange(counts[i]) for i in range(3)]
    nodes = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    bound = pad
    distance, _ = cKDTree(points).query(nodes, distance_upper_bound=bound)
    distance = np.minimum(distance, bound).reshape(counts)

    def outside_at(r: float) -> np.ndarray:
        labels, _ = ndimage.label(distance > r)
        faces = (labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1])
        border = np.unique(np.concatenate([f.ravel() for f in faces]))
        return np.isin(labels, border[border > 0])

    if radius is not None:
        radius = max(float(radius), cell)
        outside = outside_at(radius)
    else:
        for factor in RADIUS_FACTORS + (None,):
            radius = max((factor or DEFAULT_FACTOR) * spacing, cell)
            outside = outside_at(radius)
            cavity = int(((distance > radius) & ~outside).sum())
            if factor is None or cavity >= CAVITY_FRACTION * int((distance <= radius).sum()):
                break
    if method == "distance":
        # Positive outside, negative inside; enclosed cavities are pushed inside.
        field = np.where(outside, distance - radius, np.minimum(distance - radius, -0.5 * cell))
        level = 0.0
    else:
        # Erosion by the radius: the depth of each node below the envelope, measured to the nearest
        # outside node. That overshoots by up to a cell, but so does the envelope's own
        # discretisation; on a sampled sphere the level below puts the surface within a fifth of
        # a cell outside the points, as a closing should be.
        depth = ndimage.distance_transform_edt(~outside, sampling=cell)
        field = -depth
        level = -radius
        # A shell around an open sheet is about 2 * radius thick: eroding it by radius leaves at
        # most slivers of a cell, not a surface.
        if not depth.max() > radius + cell:
            raise ValueError(f"no surface: nothing is deeper than radius {radius:.4g} inside the envelope "
                             "(an open sheet of points, or a radius below the largest gap)")
    verts, faces, _, _ = marching_cubes(field, level=level, spacing=(cell, cell, cell))
    mesh = trimesh.Trimesh(verts + origin, faces, process=True)
    if len(mesh.faces) == 0:
        raise ValueError("no surface found; try a larger radius")
    parts = mesh.split(only_watertight=False)
    if len(parts) > 1:
        keep = [p for p in parts if len(p.faces) >= min_component * len(mesh.faces)]
        mesh = trimesh.util.concatenate(keep)
    if smooth_iterations > 0:
        trimesh.smoothing.filter_taubin(mesh, lamb=0.5, nu=0.53, iterations=int(smooth_iterations))
    if mesh.volume < 0:
        mesh.invert()
    mesh.metadata["radius"] = radius
    return mesh


def write_mesh(path: str | Path, mesh, *, overwrite: bool = False) -> Path:
    """Write a mesh through trimesh; the suffix picks the format (:data:`MESH_WRITE_SUFFIXES`).

    Returns:
        The path written.

    Raises:
        FileExistsError: the file exists and ``overwrite`` is false.
        ValueError: an unknown suffix, or a mesh without faces.
    """
    path = Path(path)
    if path.suffix.lower() not in MESH_WRITE_SUFFIXES:
        raise ValueError(f"{path}: unknown mesh type {path.suffix!r}; write one of {', '.join(MESH_WRITE_SUFFIXES)}")
    if len(getattr(mesh, "faces", [])) == 0:
        raise ValueError(f"{path}: the mesh has no faces; nothing written")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    mesh.export(path)
    return path
