"""Partial scans: what a camera sees, plane cuts, depth images, and CGAL's bundled meshes."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

trimesh = pytest.importorskip("trimesh")

from polydiff_3d.formats import load_mesh  # noqa: E402
from polydiff_3d.scans import (CGAL_DATA_ENV, DepthError, backproject_depth, cgal_meshes,  # noqa: E402
                               partial_by_plane, partial_from_mesh, read_depth)


def test_cube_seen_from_above_shows_its_top_face_only():
    cube = trimesh.creation.box((1.0, 1.0, 1.0))
    seen = partial_from_mesh(cube, direction=(0, 0, 1), points=None, samples=20_000)
    # The top face holds a sixth of the samples; the sides add only a rim within the tolerance.
    assert 20_000 / 6 * 0.9 < len(seen) < 20_000 / 6 * 1.4
    assert seen[:, 2].min() > 0.5 - 0.1
    top = np.abs(seen[:, 2] - 0.5) < 1e-6
    assert top.mean() > 0.8 and not (seen[:, 2] < 0).any()
    # The whole top face is covered, corner to corner.
    assert seen[top][:, :2].min() < -0.45 and seen[top][:, :2].max() > 0.45
    below = partial_from_mesh(cube, direction=(0, 0, -1), points=256)
    assert below.shape == (256, 3) and below[:, 2].max() < -0.4


def test_perspective_eye_sees_the_near_half_of_a_sphere():
    sphere = trimesh.creation.icosphere(4, radius=0.5)
    seen = partial_from_mesh(sphere, eye=(3.0, 0.0, 0.0), points=1024, seed=1)
    assert seen.shape == (1024, 3) and seen[:, 0].min() > 0.0
    with pytest.raises(ValueError, match="not in front"):
        partial_from_mesh(sphere, eye=(0.1, 0.0, 0.0))


def test_plane_cut_removes_the_stated_fraction_farthest_along_the_normal():
    points = np.random.default_rng(0).uniform(-1, 1, size=(1000, 3))
    kept = partial_by_plane(points, normal=(0, 2, 0), fraction=0.25)
    assert kept.shape == (750, 3)
    removed = np.setdiff1d(points[:, 1], kept[:, 1])
    assert kept[:, 1].max() < removed.min()
    # The input's order is kept.
    index = np.flatnonzero(np.isin(points[:, 1], kept[:, 1]))
    np.testing.assert_array_equal(points[index], kept)
    assert len(partial_by_plane(points, (1, 1, 1), 0.0)) == 1000
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\)"):
        partial_by_plane(points, (0, 0, 1), 1.0)


def test_depth_of_a_plane_projected_by_hand_backprojects_to_its_points():
    fx = fy = 10.0
    cx, cy = 3.5, 2.5
    height, width = 6, 8
    # Camera points on the plane z = 2, one through each pixel centre: x = (u - cx) * z / fx.
    v, u = np.mgrid[0:height, 0:width]
    expected = np.stack([(u - cx) * 2 / fx, (v - cy) * 2 / fy, np.full(u.shape, 2.0)], -1).reshape(-1, 3)
    # Projecting them by hand gives back their pixels and a depth image of 2s.
    np.testing.assert_allclose(fx * expected[:, 0] / expected[:, 2] + cx, u.ravel())
    depth = np.full((height, width), 2000.0)  # millimetres
    depth[0, 0] = 0.0
    depth[1, 1] = np.nan
    points = backproject_depth(depth, fx, fy, cx, cy, depth_scale=0.001)
    valid = np.ones(height * width, bool)
    valid[[0, width + 1]] = False
    np.testing.assert_allclose(points, expected[valid], atol=1e-6)
    pose = np.eye(4)
    pose[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    pose[:3, 3] = [1, 2, 3]
    moved = backproject_depth(depth, fx, fy, cx, cy, depth_scale=0.001, cam_to_world=pose)
    np.testing.assert_allclose(moved, expected[valid] @ pose[:3, :3].T + pose[:3, 3], atol=1e-6)


def test_read_depth_png_in_millimetres_and_npy(tmp_path: Path):
    from PIL import Image

    millimetres = np.array([[0, 1000, 2500], [65535, 7, 0]], dtype=np.uint16)
    Image.fromarray(millimetres).save(tmp_path / "d.png")
    np.testing.assert_allclose(read_depth(tmp_path / "d.png"), millimetres / 1000.0, rtol=1e-6)
    np.save(tmp_path / "d.npy", millimetres.astype(np.float32) / 1000)
    np.testing.assert_allclose(read_depth(tmp_path / "d.npy"), millimetres / 1000.0, rtol=1e-6)
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "grey8.png")
    with pytest.raises(DepthError, match=r"grey8\.png: a 'L' image; depth PNGs are 16-bit"):
        read_depth(tmp_path / "grey8.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DepthError, match=r"broken\.png: not a readable depth image"):
        read_depth(tmp_path / "broken.png")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    with pytest.raises(DepthError, match=r"cube\.npy: depth must be a 2-D"):
        read_depth(tmp_path / "cube.npy")


def _off_bytes(mesh) -> bytes:
    return trimesh.exchange.off.export_off(mesh).encode()


def test_cgal_meshes_from_a_tarball_and_gzipped_files(tmp_path: Path, monkeypatch):
    big = trimesh.creation.icosphere(3)  # 1280 faces
    small = trimesh.creation.box()
    data = tmp_path / "pkg" / "data.tar.gz"
    data.parent.mkdir()
    with tarfile.open(data, "w:gz") as archive:
        for name, payload in [("data/meshes/big.off", _off_bytes(big)), ("data/meshes/small.off", _off_bytes(small)),
                              ("data/meshes/zipped.off.gz", gzip.compress(_off_bytes(big))),
                              ("data/meshes/broken.off", b"OFF\n3 1 0\n0 0 0\n"), ("data/notes.txt", b"hi")]:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    (tmp_path / "pkg" / "loose.off.gz").write_bytes(gzip.compress(_off_bytes(big)))
    monkeypatch.setenv(CGAL_DATA_ENV, str(tmp_path / "pkg"))
    found = cgal_meshes(cache=tmp_path / "cache")
    assert sorted(p.name for p in found) == ["big.off", "loose.off", "zipped.off"]
    for path in found:
        assert len(load_mesh(path).faces) == 1280
    assert [p.name for p in cgal_meshes(cache=tmp_path / "cache", min_faces=1281)] == []
    assert cgal_meshes(tmp_path / "nothing", cache=tmp_path / "cache") == []


@pytest.mark.slow
def test_cgal_demo_meshes_load(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(CGAL_DATA_ENV, raising=False)
    found = cgal_meshes(cache=tmp_path)
    if not found:
        pytest.skip("libcgal-demo is not installed")
    assert len(found) > 10
    for path in found[:: max(1, len(found) // 8)]:
        assert len(load_mesh(path).faces) >= 1000
