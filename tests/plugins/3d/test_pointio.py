"""Point-cloud files: round trips through every format and the errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trimesh")

from polydiff_3d.pointio import PointError, read_points, write_points  # noqa: E402


@pytest.fixture
def cloud() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)


@pytest.mark.parametrize("suffix", [".ply", ".xyz", ".txt", ".npy", ".npz"])
def test_write_then_read_gives_the_same_points(tmp_path: Path, cloud, suffix):
    path = write_points(tmp_path / f"c{suffix}", cloud)
    back = read_points(path)
    assert back.dtype == np.float32 and back.shape == (50, 3)
    np.testing.assert_array_equal(back, cloud)
    with pytest.raises(FileExistsError):
        write_points(path, cloud)
    write_points(path, cloud[:20], overwrite=True)
    assert read_points(path).shape == (20, 3)


def test_ply_written_is_binary_little_endian(tmp_path: Path, cloud):
    raw = write_points(tmp_path / "c.ply", cloud).read_bytes()
    assert b"format binary_little_endian 1.0" in raw[:100] and b"element vertex 50" in raw[:100]
    assert len(raw) - raw.index(b"end_header\n") - len(b"end_header\n") == 50 * 3 * 4


def test_ascii_ply_point_cloud_and_mesh_vertices(tmp_path: Path):
    ascii_ply = tmp_path / "a.ply"
    rows = "\n".join(f"{i} {2 * i} {-i}" for i in range(20))
    ascii_ply.write_text("ply\nformat ascii 1.0\nelement vertex 20\nproperty float x\nproperty float y\n"
                         f"property float z\nend_header\n{rows}\n")
    points = read_points(ascii_ply)
    np.testing.assert_array_equal(points[:, 1], 2 * np.arange(20))
    import trimesh

    box = trimesh.creation.box()
    box.export(tmp_path / "box.ply")
    np.testing.assert_allclose(np.sort(read_points(tmp_path / "box.ply", min_points=8), axis=0),
                               np.sort(box.vertices, axis=0), atol=1e-6)


def test_xyz_with_normals_and_comments_uses_first_three_columns(tmp_path: Path):
    path = tmp_path / "n.xyz"
    path.write_text("# x y z nx ny nz\n" + "".join(f"{i} 0 1 0 0 1\n" for i in range(16)))
    points = read_points(path)
    np.testing.assert_array_equal(points, np.c_[np.arange(16), np.zeros(16), np.ones(16)])


def test_errors_name_the_file_and_reason(tmp_path: Path, cloud):
    bad = cloud.copy()
    bad[[3, 7], 1] = np.nan
    bad[9, 0] = np.inf
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(PointError, match=r"nan\.npy: 3 of 50 row\(s\) hold NaN"):
        read_points(tmp_path / "nan.npy")
    write_points(tmp_path / "few.xyz", cloud[:5])
    with pytest.raises(PointError, match=r"few\.xyz: 5 point\(s\); at least 16 needed"):
        read_points(tmp_path / "few.xyz")
    assert read_points(tmp_path / "few.xyz", min_points=5).shape == (5, 3)
    np.save(tmp_path / "flat.npy", np.zeros((20, 2)))
    with pytest.raises(PointError, match=r"flat\.npy: points must have shape \(N, 3\); got \(20, 2\)"):
        read_points(tmp_path / "flat.npy")
    np.savez(tmp_path / "k.npz", xyz=cloud)
    with pytest.raises(PointError, match=r"k\.npz: no array 'points'; present: xyz"):
        read_points(tmp_path / "k.npz")
    (tmp_path / "junk.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 99\n")
    with pytest.raises(PointError, match=r"junk\.ply: not a readable point cloud"):
        read_points(tmp_path / "junk.ply")
    with pytest.raises(PointError, match=r"c\.pcd: unknown point-cloud type '\.pcd'"):
        read_points(tmp_path / "c.pcd")
    with pytest.raises(PointError, match=r"w\.ply: 3 of 50 row"):
        write_points(tmp_path / "w.ply", bad)
    assert not (tmp_path / "w.ply").exists()
