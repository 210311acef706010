"""Point clouds for training: collection layouts, splits, PointFlow's normalisations and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trimesh")

from polydiff_3d.data import ShapeDataModule, split_of  # noqa: E402
from polydiff_3d.formats import (  # noqa: E402
    ShapeError,
    scan_collection,
    shape_points,
    write_demo_collection,
    write_procedural_collection,
)
from polydiff_3d.procedural import make_shape  # noqa: E402

torch.set_num_threads(1)

SMALL = {"points": 32, "cache_points": 64, "batch_size": 4}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """Split-first demo collection: 10 chairs and 10 vases, 8/1/1 per split."""
    root = tmp_path_factory.mktemp("data") / "shapes"
    counts = write_demo_collection(root, 10, categories=["chair", "vase"])
    assert counts == {"train": 16, "val": 2, "test": 2}
    return root


def test_split_first_layout_is_detected(demo: Path):
    files = scan_collection(demo)
    assert len(files) == 20
    assert {(f.split, f.category) for f in files} == {(s, c) for s in ("train", "val", "test")
                                                      for c in ("chair", "vase")}
    assert all(f.path.parent == demo / f.split / f.category for f in files)
    assert [f.id for f in scan_collection(demo, split="val")] == ["chair_00008", "vase_00008"]
    dm = ShapeDataModule(str(demo), **SMALL)
    clouds, labels, used = dm.split("train")
    assert clouds.shape == (16, 64, 3) and clouds.dtype == np.float32
    assert sorted(labels.tolist()) == [0] * 8 + [1] * 8
    assert all(dm.info()["categories"][label] == f.category for label, f in zip(labels, used))
    assert len(dm.split("val")[0]) == 2 and len(dm.split("test")[0]) == 2
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        dm.split("dev")


def test_global_normalisation_and_info(demo: Path):
    dm = ShapeDataModule(str(demo), **SMALL)
    info = dm.info()
    assert set(info) == {"categories", "points", "normalization", "centre", "scale"}
    assert info["categories"] == ["chair", "vase"] and info["points"] == 32 and info["normalization"] == "global"
    train = dm.split("train")[0].reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(train.mean(0), 0.0, atol=1e-5)
    # PointFlow's scale: the standard deviation of all raw coordinates as one flat list (about their
    # single mean), so the normalised coordinates' spread is at most 1 (equal when the axes' means agree).
    raw_train = train * info["scale"] + np.asarray(info["centre"])
    assert info["scale"] == pytest.approx(raw_train.reshape(-1).std(), rel=1e-5)
    assert 0.5 < train.std() <= 1.0 + 1e-6
    # The recorded centre and scale map the normalised clouds back onto the shapes' own points.
    raw = shape_points(dm.split("train")[2][0].path, 64, seed=0)
    back = dm.split("train")[0][0] * info["scale"] + np.asarray(info["centre"])
    np.testing.assert_allclose(back, raw, atol=1e-4)
    # Categories restrict and order the classes.
    only = ShapeDataModule(str(demo), categories=["vase"], **SMALL)
    assert only.info()["categories"] == ["vase"] and set(only.split("train")[1].tolist()) == {0}


def test_per_shape_normalisation_has_radius_one(demo: Path):
    dm = ShapeDataModule(str(demo), normalization="per_shape", **SMALL)
    clouds = dm.split("train")[0]
    radius = np.linalg.norm(clouds, axis=-1).max(axis=-1)
    np.testing.assert_allclose(radius, 1.0, atol=1e-5)
    centre = (clouds.min(axis=1) + clouds.max(axis=1)) / 2
    np.testing.assert_allclose(centre, 0.0, atol=1e-5)
    with pytest.raises(ValueError, match="valid: global, per_shape"):
        ShapeDataModule(str(demo), normalization="unit")


def test_loaders_draw_subsets_and_validation_is_fixed(demo: Path):
    dm = ShapeDataModule(str(demo), **SMALL)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["x0"].shape == (4, 32, 3) and batch["cond"].shape == (4,)
    first, second = next(iter(dm.val_dataloader())), next(iter(dm.val_dataloader()))
    torch.testing.assert_close(first["x0"], second["x0"])
    # Each item is a subset of its dense cloud.
    dense = torch.as_tensor(dm.split("val")[0][0])
    gaps = (first["x0"][0][:, None, :] - dense[None]).abs().amax(-1).amin(-1)
    assert gaps.max() < 1e-6


def test_category_split_layout(tmp_path: Path):
    for split, seeds in (("train", range(3)), ("test", range(3, 5))):
        folder = tmp_path / "chair" / split
        folder.mkdir(parents=True)
        for s in seeds:
            make_shape("chair", s).export(folder / f"chair_{s:04d}.off")
    dm = ShapeDataModule(str(tmp_path), **SMALL)
    assert len(dm.split("train")[0]) == 3 and len(dm.split("test")[0]) == 2 and len(dm.split("val")[0]) == 0
    assert [f.id for f in dm.split("test")[2]] == ["chair_0003", "chair_0004"]
    # With no validation shapes on disk the validation loader falls back to training clouds.
    assert len(next(iter(dm.val_dataloader()))["x0"]) == 3


def test_flat_layout_uses_a_stable_hash_split(tmp_path: Path):
    root = tmp_path / "flat"
    write_procedural_collection(root, 4)
    kwargs = dict(SMALL, val_fraction=0.25, test_fraction=0.25)
    dm = ShapeDataModule(str(root), **kwargs)
    seen = {}
    for split in ("train", "val", "test"):
        for f in dm.split(split)[2]:
            assert split_of(f"{f.category}/{f.id}", 0.25, 0.25) == split
            seen[(f.category, f.id)] = split
    assert len(seen) == 20 and set(seen.values()) == {"train", "val", "test"}
    again = ShapeDataModule(str(root), **kwargs)
    assert {(f.category, f.id): s for s in ("train", "val", "test") for f in again.split(s)[2]} == seen
    assert split_of("chair/x", 0.1, 0.1) == split_of("chair/x", 0.1, 0.1)
    assert split_of("chair/x", 0.0, 1.0) == "test" and split_of("chair/x", 0.0, 0.0) == "train"


def test_broken_mesh_is_skipped_with_a_warning(tmp_path: Path):
    root = tmp_path / "shapes"
    write_demo_collection(root, 10, categories=["chair"])
    bad = root / "train" / "chair" / "broken_0001.ply"
    bad.write_bytes(b"\x00\xff garbage \x13\x37" * 40)
    dm = ShapeDataModule(str(root), **SMALL)
    with pytest.warns(UserWarning, match=r"skipped 1 shape file.*broken_0001\.ply"):
        clouds, _, used = dm.split("train")
    assert len(clouds) == 8 and bad not in [f.path for f in used]
    assert len(dm.skipped) == 1 and "broken_0001.ply" in dm.skipped[0]


def test_point_file_shapes_are_read(tmp_path: Path):
    rng = np.random.default_rng(0)
    stored = {}
    for k in range(3):
        path = tmp_path / "pc" / "plane" / f"p{k}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        stored[path.stem] = (rng.normal(size=(3000, 3)) * (k + 1)).astype(np.float32)
        np.save(path, stored[path.stem])
    picked = shape_points(tmp_path / "pc" / "plane" / "p0.npy", 500, seed=1)
    assert picked.shape == (500, 3)
    assert len(np.unique(picked, axis=0)) == 500  # a subset without repeats when the file has enough
    dm = ShapeDataModule(str(tmp_path / "pc"), val_fraction=0.0, test_fraction=0.0, **SMALL)
    clouds, labels, used = dm.split("train")
    assert clouds.shape == (3, 64, 3) and labels.tolist() == [0, 0, 0]
    info = dm.info()
    for cloud, f in zip(clouds, used):
        back = cloud * info["scale"] + np.asarray(info["centre"])
        d = np.abs(back[:, None, :] - stored[f.id][None]).max(-1).min(-1)
        assert d.max() < 1e-4  # every training point is one of the file's points


def test_unknown_category_errors(demo: Path, tmp_path: Path):
    dm = ShapeDataModule(str(demo), categories=["chair", "sofa"], **SMALL)
    with pytest.raises(ShapeError, match="sofa"):
        dm.setup("fit")
    write_procedural_collection(tmp_path / "flat", 1)
    with pytest.raises(ShapeError, match="no category 'sofa'; present: chair"):
        ShapeDataModule(str(tmp_path / "flat"), categories=["sofa"], **SMALL).info()
    with pytest.raises(ValueError, match="points"):
        ShapeDataModule(str(demo), points=64, cache_points=32)
