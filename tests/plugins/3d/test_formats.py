"""Reading shape collections: the folder layout, mesh formats and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

trimesh = pytest.importorskip("trimesh")

from polydiff_3d.formats import ShapeError, load_mesh, scan_shapes, write_procedural_collection  # noqa: E402
from polydiff_3d.procedural import CATEGORIES, make_shape  # noqa: E402


@pytest.mark.parametrize("suffix", [".obj", ".ply", ".off", ".stl", ".glb"])
def test_every_format_round_trips_the_surface(tmp_path: Path, suffix):
    mesh = make_shape("table", 4)
    path = tmp_path / f"t{suffix}"
    mesh.export(path)
    back = load_mesh(path)
    assert back.area == pytest.approx(mesh.area, rel=1e-4)
    np.testing.assert_allclose(back.bounds, mesh.bounds, atol=1e-5)


def test_collection_layouts_and_category_errors(tmp_path: Path):
    written = write_procedural_collection(tmp_path / "shapes", 2, seed=3)
    assert len(written) == 2 * len(CATEGORIES)
    files = scan_shapes(tmp_path / "shapes")
    assert [(f.category, f.id) for f in files] == sorted((f.category, f.id) for f in written)
    assert all(f.split is None for f in files)
    # ModelNet's <category>/<split>/<shape> layout.
    modelnet = tmp_path / "modelnet" / "chair" / "test"
    modelnet.mkdir(parents=True)
    make_shape("chair", 0).export(modelnet / "chair_0001.off")
    (modelnet / "notes.txt").write_text("not a mesh")
    (found,) = scan_shapes(tmp_path / "modelnet")
    assert (found.category, found.split, found.id) == ("chair", "test", "chair_0001")
    with pytest.raises(ShapeError, match="no category 'sofa'; present: chair"):
        scan_shapes(tmp_path / "modelnet", ["sofa"])
    with pytest.raises(ShapeError, match="no such folder"):
        scan_shapes(tmp_path / "nothing")
    with pytest.raises(FileExistsError):
        write_procedural_collection(tmp_path / "shapes", 1)


def test_bad_mesh_files_are_named(tmp_path: Path):
    broken = tmp_path / "broken.ply"
    broken.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 99\n")
    with pytest.raises(ShapeError, match=r"broken\.ply"):
        load_mesh(broken)
    empty = tmp_path / "empty.obj"
    empty.write_text("# nothing here\n")
    with pytest.raises(ShapeError, match=r"empty\.obj: 0 triangle"):
        load_mesh(empty)
    flat = tmp_path / "flat.obj"
    flat.write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    with pytest.raises(ShapeError, match="zero surface area"):
        load_mesh(flat)
    with pytest.raises(ShapeError, match=r"unknown mesh type '\.xyz'"):
        load_mesh(tmp_path / "cloud.xyz")
