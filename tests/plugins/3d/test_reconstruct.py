"""Surfaces from points: a sampled sphere comes back as a closed sphere at the stated offset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("skimage")
trimesh = pytest.importorskip("trimesh")

from polydiff_3d.metrics import chamfer_distance  # noqa: E402
from polydiff_3d.reconstruct import reconstruct_surface, write_mesh  # noqa: E402


def sphere_points(count: int, seed: int = 0) -> np.ndarray:
    points = np.random.default_rng(seed).normal(size=(count, 3))
    return 0.5 * points / np.linalg.norm(points, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def points() -> np.ndarray:
    return sphere_points(2048)


def test_distance_surface_is_a_closed_sphere_offset_by_the_radius(points):
    radius = 0.08
    mesh = reconstruct_surface(points, radius=radius, resolution=48)
    assert mesh.is_watertight and len(mesh.split(only_watertight=False)) == 1
    assert mesh.metadata["radius"] == pytest.approx(radius)
    assert mesh.volume > 0  # outward normals
    norms = np.linalg.norm(mesh.vertices, axis=1)
    # The envelope of balls of radius r around points on a sphere of radius 0.5: at 0.5 + r over
    # the points, dipping between them; no inner wall (that would sit near 0.5 - r).
    assert np.median(norms) == pytest.approx(0.5 + radius, abs=0.01)
    assert norms.min() > 0.5 and norms.max() < 0.5 + radius + 0.01


def test_default_radius_seals_the_shell_and_closing_lands_on_the_points(points):
    envelope = reconstruct_surface(points, resolution=48)
    radius = envelope.metadata["radius"]
    spacing = np.median(np.sort(np.linalg.norm(points[:, None] - points[None], axis=-1), axis=1)[:, 1])
    assert 2 * spacing <= radius <= 6 * spacing + 1e-9
    assert np.linalg.norm(envelope.vertices, axis=1).min() > 0.5  # sealed: no inner wall
    closed = reconstruct_surface(points, resolution=48, method="closing")
    assert closed.is_watertight
    assert np.median(np.linalg.norm(closed.vertices, axis=1)) == pytest.approx(0.5, abs=0.01)
    on_surface = trimesh.sample.sample_surface(closed, 2048, seed=0)[0]
    # Chamfer (squared distances, both ways) between the surface and the input: about 1e-3 here,
    # against 0.02 for a sphere of radius 0.6.
    assert chamfer_distance(on_surface, points) < 2e-3
    assert chamfer_distance(on_surface * 1.2, points) > 1e-2


def test_stray_points_are_dropped_as_small_components(points):
    cloud = np.vstack([points, [[0.9, 0.0, 0.0]]])
    kept = reconstruct_surface(cloud, radius=0.08, resolution=48, min_component=0.0)
    assert np.linalg.norm(kept.vertices, axis=1).max() > 0.9  # the speck around the stray point
    assert len(kept.split(only_watertight=False)) == 2
    mesh = reconstruct_surface(cloud, radius=0.08, resolution=48, min_component=0.05)
    assert len(mesh.split(only_watertight=False)) == 1
    assert np.linalg.norm(mesh.vertices, axis=1).max() < 0.6


def test_bad_points_are_refused(points):
    with pytest.raises(ValueError, match="at least 8 needed"):
        reconstruct_surface(points[:5])
    bad = points.copy()
    bad[4] = np.nan
    with pytest.raises(ValueError, match="1 of 2048 row"):
        reconstruct_surface(bad)
    with pytest.raises(ValueError, match="unknown method 'ball'; valid: distance, closing"):
        reconstruct_surface(points, method="ball")
    with pytest.raises(ValueError, match="no surface"):
        plane = np.c_[np.random.default_rng(0).uniform(size=(400, 2)), np.zeros(400)]
        reconstruct_surface(plane, method="closing", resolution=32)


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".off", ".stl", ".glb"])
def test_write_mesh_round_trip(tmp_path: Path, suffix):
    mesh = trimesh.creation.icosphere(2)
    path = write_mesh(tmp_path / f"m{suffix}", mesh)
    back = trimesh.load(path, force="mesh")
    assert len(back.faces) == len(mesh.faces)
    assert back.volume == pytest.approx(mesh.volume, rel=1e-5)
    with pytest.raises(FileExistsError):
        write_mesh(path, mesh)
    with pytest.raises(ValueError, match=r"m\.xyz: unknown mesh type"):
        write_mesh(tmp_path / "m.xyz", mesh)
