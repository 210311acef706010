"""The procedural shape families, surface sampling and point-cloud normalisation."""

from __future__ import annotations

import numpy as np
import pytest

trimesh = pytest.importorskip("trimesh")

from polydiff_3d.procedural import CATEGORIES, make_shape, normalize_points, sample_surface  # noqa: E402


def _distance_to_surface(mesh, points: np.ndarray) -> np.ndarray:
    """Brute-force distance of each point to the nearest triangle (no spatial index needed)."""
    triangles = mesh.triangles
    out = []
    for p in points:
        closest = trimesh.triangles.closest_point(triangles, np.repeat(p[None], len(triangles), 0))
        out.append(np.linalg.norm(closest - p, axis=1).min())
    return np.asarray(out)


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_category_builds_deterministic_grounded_shapes(category):
    a, b, other = make_shape(category, 7), make_shape(category, 7), make_shape(category, 8)
    assert len(a.faces) > 50 and a.area > 0
    np.testing.assert_array_equal(a.vertices, b.vertices)
    assert a.vertices.shape != other.vertices.shape or not np.allclose(a.vertices, other.vertices)
    assert abs(a.bounds[0, 1]) < 1e-9  # rests on the floor
    assert np.isfinite(a.vertices).all()


def test_categories_differ_in_size_as_the_objects_do():
    heights = {c: np.median([make_shape(c, s).extents[1] for s in range(12)]) for c in CATEGORIES}
    assert heights["mug"] < 0.15 < heights["vase"] < heights["table"]
    assert 0.6 < heights["table"] < 0.85 and heights["chair"] > heights["table"] * 0.9


def test_unknown_category_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown category 'sofa'; valid: chair, table, lamp, vase, mug"):
        make_shape("sofa", 0)


def test_sampled_points_lie_on_the_surface_and_are_reproducible():
    mesh = make_shape("vase", 3)
    points = sample_surface(mesh, 400, seed=1)
    assert points.shape == (400, 3) and points.dtype == np.float32
    np.testing.assert_array_equal(points, sample_surface(mesh, 400, seed=1))
    assert _distance_to_surface(mesh, points[:40]).max() < 1e-5


def test_sampling_refuses_empty_meshes_and_counts():
    with pytest.raises(ValueError, match="no surface to sample"):
        sample_surface(trimesh.Trimesh(vertices=np.zeros((0, 3)), faces=np.zeros((0, 3), dtype=int)), 10)
    with pytest.raises(ValueError, match="count must be at least 1"):
        sample_surface(make_shape("mug", 0), 0)


def test_normalisations_by_hand():
    points = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 4.0, 0.0], [2.0, 4.0, 2.0]])
    unit, centre, scale = normalize_points(points, "unit_sphere")
    np.testing.assert_allclose(centre, [1.0, 2.0, 1.0])
    assert scale == pytest.approx(np.sqrt(1 + 4 + 1))
    assert np.linalg.norm(unit, axis=1).max() == pytest.approx(1.0)
    np.testing.assert_allclose(unit * scale + centre, points, atol=1e-6)
    box, centre, scale = normalize_points(points, "unit_box")
    assert scale == pytest.approx(2.0) and np.abs(box).max() == pytest.approx(1.0)
    same, centre, scale = normalize_points(points, "none")
    np.testing.assert_allclose(same, points)
    assert scale == 1.0 and not centre.any()


@pytest.mark.parametrize("bad, message", [
    (np.zeros((0, 3)), r"shape \(N >= 1, 3\)"),
    (np.array([[np.nan, 0.0, 0.0]]), "NaN"),
    (np.ones((5, 3)), "all points coincide"),
])
def test_normalisation_refuses_bad_clouds(bad, message):
    with pytest.raises(ValueError, match=message):
        normalize_points(bad)
    with pytest.raises(ValueError, match="unknown normalisation 'cube'"):
        normalize_points(np.eye(3), "cube")
