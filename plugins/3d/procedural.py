"""Procedural shape families for the 3D demo corpus, built offline from parametric primitives.

Each category is a small grammar of boxes, cylinders, cones, tori and lathed profiles whose sizes,
proportions and optional parts are drawn from ranges, so a category holds thousands of distinct
shapes with a recognisable family resemblance:

* ``chair``: seat, four legs (square or round), a backrest (solid or slatted), optional arms;
* ``table``: top (rectangular or round), four legs or a pedestal with a foot;
* ``lamp``: base disc, stem (straight or bent at an elbow), a conical or cylindrical shade;
* ``vase``: a lathed profile (body, shoulder, neck, lip) with random radii and heights;
* ``mug``: a lathed cup with a wall thickness, a handle (a half torus), optional saucer.

Shapes are y up, resting on y = 0, roughly a metre or less in size (a mug about 10 cm: scale is
part of what tells categories apart before normalisation). Parts are concatenated, not fused:
the surface is what point sampling needs, and a mesh boolean library is not required.

``make_shape(category, seed)`` is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["CATEGORIES", "make_shape", "sample_surface", "normalize_points", "NORMALIZATIONS"]

#: The shape families, in a fixed order (their class indices).
CATEGORIES: tuple[str, ...] = ("chair", "table", "lamp", "vase", "mug")

#: Point-cloud normalisations: ``unit_sphere`` centres on the bounding-box centre and scales the
#: farthest point to radius 1; ``unit_box`` centres likewise and scales the longest bounding-box
#: side to 2 (coordinates in [-1, 1]); ``none`` leaves the points as they are.
NORMALIZATIONS: tuple[str, ...] = ("unit_sphere", "unit_box", "none")


def _trimesh():
    import trimesh

    return trimesh


def _box(size: Sequence[float], centre: Sequence[float]):
    mesh = _trimesh().creation.box(extents=np.asarray(size, dtype=float))
    mesh.apply_translation(np.asarray(centre, dtype=float))
    return mesh


def _cylinder(radius: float, height: float, centre: Sequence[float], *, sections: int = 24, axis: str = "y"):
    trimesh = _trimesh()
    mesh = trimesh.creation.cylinder(radius=radius, height=height, sections=sections)
    if axis == "y":  # trimesh's cylinders run along z
        mesh.apply_transform(trimesh.transformations.rotation_matrix(-math.pi / 2, [1, 0, 0]))
    elif axis == "x":
        mesh.apply_transform(trimesh.transformations.rotation_matrix(math.pi / 2, [0, 1, 0]))
    mesh.apply_translation(np.asarray(centre, dtype=float))
    return mesh


def _lathe(profile: np.ndarray, *, sections: int = 32):
    """A surface of revolution about y of a (radius, height) polyline (open at both ends)."""
    trimesh = _trimesh()
    radius, height = profile[:, 0], profile[:, 1]
    angles = np.linspace(0.0, 2 * math.pi, sections, endpoint=False)
    vertices = np.stack([np.outer(radius, np.cos(angles)), np.repeat(height[:, None], sections, 1),
                         np.outer(radius, np.sin(angles))], -1).reshape(-1, 3)
    faces = []
    for i in range(len(profile) - 1):
        for j in range(sections):
            a, b = i * sections + j, i * sections + (j + 1) % sections
            c, d = a + sections, b + sections
            faces += [(a, c, b), (b, c, d)]
    return trimesh.Trimesh(vertices=vertices, faces=np.asarray(faces), process=True)


def _chair(rng: np.random.Generator):
    width, depth = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6)
    seat_h, seat_t = rng.uniform(0.4, 0.5), rng.uniform(0.03, 0.07)
    leg = rng.uniform(0.025, 0.05)
    parts = [_box((width, seat_t, depth), (0, seat_h, 0))]
    round_legs = rng.random() < 0.4
    for sx in (-1, 1):
        for sz in (-1, 1):
            centre = (sx * (width / 2 - leg), (seat_h - seat_t / 2) / 2, sz * (depth / 2 - leg))
            parts.append(_cylinder(leg * 0.6, seat_h - seat_t / 2, centre) if round_legs
                         else _box((leg, seat_h - seat_t / 2, leg), centre))
    back_h = rng.uniform(0.3, 0.55)
    top = seat_h + seat_t / 2
    if rng.random() < 0.5:
        parts.append(_box((width, back_h, 0.03), (0, top + back_h / 2, -depth / 2 + 0.015)))
    else:
        slats = int(rng.integers(2, 6))
        parts.append(_box((width, 0.05, 0.03), (0, top + back_h - 0.025, -depth / 2 + 0.015)))
        for k in range(slats):
            x = (k + 0.5) / slats * width - width / 2
            parts.append(_box((0.025, back_h - 0.05, 0.025), (x, top + (back_h - 0.05) / 2, -depth / 2 + 0.015)))
    if rng.random() < 0.3:  # arms
        arm_h = rng.uniform(0.18, 0.26)
        for sx in (-1, 1):
            parts.append(_box((0.04, 0.03, depth), (sx * (width / 2 - 0.02), top + arm_h, 0)))
            parts.append(_box((0.03, arm_h, 0.03), (sx * (width / 2 - 0.02), top + arm_h / 2, depth / 2 - 0.03)))
    return parts


def _table(rng: np.random.Generator):
    height, top_t = rng.uniform(0.65, 0.8), rng.uniform(0.03, 0.06)
    parts = []
    if rng.random() < 0.6:
        width, depth = rng.uniform(0.8, 1.8), rng.uniform(0.6, 1.0)
        parts.append(_box((width, top_t, depth), (0, height - top_t / 2, 0)))
        half = (width / 2, depth / 2)
    else:
        radius = rng.uniform(0.4, 0.7)
        parts.append(_cylinder(radius, top_t, (0, height - top_t / 2, 0), sections=40))
        half = (radius / math.sqrt(2), radius / math.sqrt(2))
    if rng.random() < 0.65:
        leg = rng.uniform(0.04, 0.07)
        for sx in (-1, 1):
            for sz in (-1, 1):
                parts.append(_box((leg, height - top_t, leg),
                                  (sx * (half[0] - leg), (height - top_t) / 2, sz * (half[1] - leg))))
    else:
        parts.append(_cylinder(rng.uniform(0.04, 0.08), height - top_t, (0, (height - top_t) / 2, 0)))
        parts.append(_cylinder(rng.uniform(0.2, 0.35), 0.03, (0, 0.015, 0), sections=32))
    return parts


def _lamp(rng: np.random.Generator):
    trimesh = _trimesh()
    base_r, base_h = rng.uniform(0.08, 0.15), rng.uniform(0.02, 0.05)
    stem_h, stem_r = rng.uniform(0.3, 0.6), rng.uniform(0.008, 0.02)
    parts = [_cylinder(base_r, base_h, (0, base_h / 2, 0), sections=32),
             _cylinder(stem_r, stem_h, (0, base_h + stem_h / 2, 0), sections=12)]
    top = np.array([0.0, base_h + stem_h, 0.0])
    if rng.random() < 0.4:  # bent arm
        reach = rng.uniform(0.1, 0.25)
        parts.append(_cylinder(stem_r, reach, (reach / 2, top[1], 0), sections=12, axis="x"))
        top = top + np.array([reach, 0.0, 0.0])
    shade_h = rng.uniform(0.12, 0.25)
    low, high = rng.uniform(0.08, 0.18), rng.uniform(0.04, 0.12)
    if rng.random() < 0.5:
        high = low  # cylindrical shade
    shade = _lathe(np.array([[low, 0.0], [high, shade_h]]), sections=32)
    shade.apply_translation(top + np.array([0.0, -shade_h * 0.3, 0.0]))
    parts.append(shade)
    parts.append(trimesh.creation.icosphere(subdivisions=1, radius=0.03).apply_translation(top))
    return parts


def _vase(rng: np.random.Generator):
    height = rng.uniform(0.2, 0.5)
    foot, belly, shoulder, neck, lip = (rng.uniform(0.03, 0.07), rng.uniform(0.06, 0.14), rng.uniform(0.05, 0.12),
                                        rng.uniform(0.02, 0.05), rng.uniform(0.03, 0.07))
    belly_at, shoulder_at = rng.uniform(0.25, 0.45), rng.uniform(0.55, 0.75)
    profile = np.array([[0.0, 0.0], [foot, 0.0], [belly, belly_at * height], [shoulder, shoulder_at * height],
                        [neck, 0.88 * height], [lip, height]])
    return [_lathe(profile)]


def _mug(rng: np.random.Generator):
    trimesh = _trimesh()
    radius, height, wall = rng.uniform(0.035, 0.05), rng.uniform(0.08, 0.12), rng.uniform(0.004, 0.008)
    taper = rng.uniform(0.85, 1.1)
    profile = np.array([[0.0, 0.0], [radius * taper, 0.0], [radius, height], [radius - wall, height],
                        [(radius - wall) * taper, wall], [0.0, wall]])
    parts = [_lathe(profile)]
    handle = trimesh.creation.torus(major_radius=height * 0.28, minor_radius=rng.uniform(0.005, 0.009),
                                    major_sections=24, minor_sections=8)
    handle.apply_transform(trimesh.transformations.rotation_matrix(math.pi / 2, [1, 0, 0]))
    handle.apply_translation((radius + height * 0.12, height * 0.5, 0.0))
    parts.append(handle)
    if rng.random() < 0.3:  # saucer
        parts.append(_cylinder(radius * 2.0, 0.006, (0, -0.003, 0), sections=40))
    return parts


_BUILDERS = {"chair": _chair, "table": _table, "lamp": _lamp, "vase": _vase, "mug": _mug}


def make_shape(category: str, seed: int):
    """One procedural shape of ``category`` (see :data:`CATEGORIES`) as a ``trimesh.Trimesh``.

    Deterministic in ``(category, seed)``; the shape rests on y = 0.

    Raises:
        ValueError: an unknown category (the valid ones are named).
    """
    if category not in _BUILDERS:
        raise ValueError(f"unknown category {category!r}; valid: {', '.join(CATEGORIES)}")
    rng = np.random.default_rng([CATEGORIES.index(category), int(seed)])
    mesh = _trimesh().util.concatenate(_BUILDERS[category](rng))
    mesh.apply_translation((0.0, -float(mesh.bounds[0, 1]), 0.0))
    return mesh


def sample_surface(mesh, count: int, seed: int = 0) -> np.ndarray:
    """``count`` points drawn uniformly by area on the mesh's surface.

    Shapes:
        returns (count, 3) float32.

    Raises:
        ValueError: a mesh without faces or of zero area, or ``count`` below 1.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if len(mesh.faces) == 0 or not mesh.area > 0:
        raise ValueError("the mesh has no surface to sample (no faces or zero area)")
    points, _ = _trimesh().sample.sample_surface(mesh, int(count), seed=int(seed))
    return np.asarray(points, dtype=np.float32)


def normalize_points(points: np.ndarray, mode: str = "unit_sphere") -> tuple[np.ndarray, np.ndarray, float]:
    """Centre and scale a point cloud (see :data:`NORMALIZATIONS`).

    Returns:
        ``(normalised points, centre (3,), scale)`` with ``points = normalised * scale + centre``.

    Raises:
        ValueError: an unknown mode, an empty cloud, non-finite values or a cloud of one point.
    """
    if mode not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {mode!r}; valid: {', '.join(NORMALIZATIONS)}")
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise ValueError(f"points must have shape (N >= 1, 3); got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("points contain NaN or infinite values")
    if mode == "none":
        return points.astype(np.float32), np.zeros(3), 1.0
    centre = (points.min(0) + points.max(0)) / 2
    centred = points - centre
    scale = float(np.linalg.norm(centred, axis=1).max()) if mode == "unit_sphere" else float(np.ptp(points, 0).max() / 2)
    if scale <= 0:
        raise ValueError("all points coincide: the cloud cannot be scaled")
    return (centred / scale).astype(np.float32), centre, scale
