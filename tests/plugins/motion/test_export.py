"""Motions out and in: BVH round trips, motion sources and their errors, stick-figure GIFs.

A procedural clip has fixed bone lengths, so the skeleton fitted to its positions is its own and
the BVH written from the positions must give them back (up to the file's printed precision).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from polydiff_motion.bvh import BVHMotion, read_bvh, write_bvh  # noqa: E402
from polydiff_motion.export import (  # noqa: E402
    MotionSourceError,
    fitted_skeleton,
    positions_to_bvh,
    read_motion_source,
    render_gif,
)
from polydiff_motion.features import FEATURE_DIM, positions_to_features  # noqa: E402
from polydiff_motion.procedural import FPS, compose  # noqa: E402
from polydiff_motion.skeleton import SMPL22, SMPL22_NAMES, SMPL22_PARENTS, check_joint_names  # noqa: E402


@pytest.fixture(scope="module")
def clip():
    return compose([("walk", {"duration": 1.0}), ("wave", {"side": "right"})], seed=5)


def _positions_of(path):
    motion = read_bvh(path)
    order = check_joint_names(motion.names, str(path))
    positions = np.zeros((motion.n_frames, 22, 3))
    positions[:, list(order)] = motion.global_positions()
    return motion, positions


def test_fitted_skeleton_recovers_the_clips_bones(clip):
    skeleton = fitted_skeleton(clip.positions)
    bones = np.linalg.norm(skeleton.offsets[1:], axis=-1)
    assert np.allclose(bones, np.linalg.norm(clip.offsets[1:], axis=-1), atol=1e-5)
    assert list(skeleton.names) == list(SMPL22_NAMES)


def test_bvh_round_trip_of_joint_positions(clip, tmp_path):
    path = positions_to_bvh(clip.positions, tmp_path / "walk.bvh", fps=FPS)
    assert path == tmp_path / "walk.bvh"
    motion, positions = _positions_of(path)
    assert motion.n_frames == len(clip.positions)
    assert motion.frame_time == pytest.approx(1 / FPS)
    assert np.abs(positions - clip.positions).max() < 1e-4
    # Metres, y up: the body stands about 1.7 m tall on the floor.
    height = positions[0, :, 1].max() - positions[0, :, 1].min()
    assert 1.3 < height < 2.0


def test_bvh_round_trip_of_the_rest_pose_moved_around(tmp_path):
    rest = SMPL22.rest_positions()
    t = np.arange(6, dtype=np.float64)
    positions = rest[None] + np.stack((0.1 * t, 0.0 * t, -0.05 * t), -1)[:, None]
    _, back = _positions_of(positions_to_bvh(positions, tmp_path / "rest.bvh"))
    assert np.abs(back - positions).max() < 1e-6


def test_positions_to_bvh_refuses_to_overwrite(clip, tmp_path):
    path = tmp_path / "walk.bvh"
    positions_to_bvh(clip.positions, path)
    first = path.read_bytes()
    with pytest.raises(FileExistsError):
        positions_to_bvh(clip.positions[:10], path)
    assert path.read_bytes() == first
    positions_to_bvh(clip.positions[:10], path, overwrite=True)
    assert read_bvh(path).n_frames == 10


def test_positions_to_bvh_checks_its_input(tmp_path):
    with pytest.raises(ValueError, match=r"\(T >= 1, 22, 3\)"):
        positions_to_bvh(np.zeros((4, 21, 3)), tmp_path / "a.bvh")
    bad = np.tile(SMPL22.rest_positions()[None], (3, 1, 1))
    bad[1, 4, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        positions_to_bvh(bad, tmp_path / "a.bvh")
    assert not (tmp_path / "a.bvh").exists()


# --- motion sources ------------------------------------------------------------------------------
def test_read_motion_source_from_bvh(clip, tmp_path):
    path = positions_to_bvh(clip.positions, tmp_path / "walk.bvh")
    features = read_motion_source(path)
    expected = positions_to_features(clip.positions, FPS)
    assert features.shape == (len(clip.positions) - 1, FEATURE_DIM)
    assert np.abs(features[:, :67] - expected[:, :67]).max() < 1e-3  # root and joint positions


def test_read_motion_source_from_npy_and_npz(tmp_path):
    features = np.random.default_rng(0).normal(size=(30, FEATURE_DIM)).astype(np.float32)
    np.save(tmp_path / "clip.npy", features)
    assert np.array_equal(read_motion_source(tmp_path / "clip.npy"), features)
    np.savez(tmp_path / "gen.npz", features=features, positions=np.zeros((30, 22, 3)))
    assert np.array_equal(read_motion_source(tmp_path / "gen.npz"), features)
    with open(tmp_path / "UPPER.NPY", "wb") as fh:
        np.save(fh, features.astype(np.float64))
    out = read_motion_source(tmp_path / "UPPER.NPY")
    assert out.dtype == np.float32 and out.shape == (30, FEATURE_DIM)


def _renamed_bvh(path, rename):
    rest = SMPL22.rest_positions()
    names = [rename.get(n, n) for n in SMPL22_NAMES]
    rotations = np.tile(np.eye(3), (3, 22, 1, 1))
    root = np.tile(rest[0], (3, 1))
    motion = BVHMotion.from_arrays(names, list(SMPL22_PARENTS), SMPL22.offsets, rotations, root, FPS)
    return write_bvh(path, motion)


@pytest.mark.parametrize(
    "name, make, pattern",
    [
        ("walk.txt", lambda p: p.write_text("walk"), r"unknown motion file type '\.txt'"),
        ("nan.npy", lambda p: np.save(p, np.full((5, FEATURE_DIM), np.nan, np.float32)), "NaN"),
        ("short.npy", lambda p: np.save(p, np.zeros((5, 262), np.float32)), r"\(T >= 1, 263\); got \(5, 262\)"),
        ("flat.npy", lambda p: np.save(p, np.zeros(263, np.float32)), r"\(T >= 1, 263\)"),
        ("empty.npy", lambda p: np.save(p, np.zeros((0, 263), np.float32)), r"\(T >= 1, 263\)"),
        ("objects.npy", lambda p: np.save(p, np.array([{"a": 1}], dtype=object)), "pickle"),
        ("broken.npy", lambda p: p.write_bytes(b"not numpy"), None),
        ("other.npz", lambda p: np.savez(p, motion=np.zeros((5, 263))), r"no field 'features' \(fields: motion\)"),
        ("names.bvh", lambda p: _renamed_bvh(p, {"left_knee": "LeftKnee"}), r"unknown joint name\(s\) 'LeftKnee'"),
        ("broken.bvh", lambda p: p.write_text("HIERARCHY\nROOT pelvis\n{\n"), None),
        ("missing.bvh", lambda p: None, None),
    ],
)
def test_read_motion_source_errors_name_the_file(tmp_path, name, make, pattern):
    path = tmp_path / name
    make(path)
    with pytest.raises(MotionSourceError, match=pattern) as excinfo:
        read_motion_source(path)
    assert str(path) in str(excinfo.value)


def test_read_motion_source_refuses_a_single_frame_bvh(tmp_path):
    path = positions_to_bvh(SMPL22.rest_positions()[None], tmp_path / "pose.bvh")
    with pytest.raises(MotionSourceError, match=r"pose\.bvh: a motion needs at least 2 frames"):
        read_motion_source(path)


def test_read_motion_source_resamples_other_frame_rates(clip, tmp_path):
    path = positions_to_bvh(clip.positions, tmp_path / "fast.bvh", fps=2 * FPS)
    features = read_motion_source(path, fps=FPS)
    assert abs(len(features) - len(clip.positions) / 2) <= 2


# --- GIF renders ---------------------------------------------------------------------------------
def test_render_gif_writes_one_frame_per_pose(clip, tmp_path):
    from PIL import Image

    positions = clip.positions[:12]
    path = render_gif(positions, tmp_path / "out" / "walk.gif", FPS, title="a person walks", size=96)
    assert path.exists()
    with Image.open(path) as image:
        assert image.format == "GIF"
        assert image.n_frames == 12
        assert image.size == (96, 96)
        assert image.info["duration"] == 50
        image.seek(0)
        first = np.asarray(image.convert("RGB"))
        image.seek(6)
        middle = np.asarray(image.convert("RGB"))
    assert (first != middle).any()
    assert (first < 100).any()  # the figure is drawn in dark colours on the light background


def test_render_gif_refuses_to_overwrite_and_checks_shapes(clip, tmp_path):
    path = tmp_path / "walk.gif"
    render_gif(clip.positions[:3], path, size=64)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="exists"):
        render_gif(clip.positions[:5], path, size=64)
    assert path.read_bytes() == before
    render_gif(clip.positions[:5], path, size=64, overwrite=True)
    from PIL import Image

    with Image.open(path) as image:
        assert image.n_frames == 5
    with pytest.raises(ValueError, match=r"\(T >= 1, 22, 3\)"):
        render_gif(np.zeros((3, 22, 2)), tmp_path / "bad.gif")
    assert not (tmp_path / "bad.gif").exists()


# --- SMPL pose files through a body model ---------------------------------------------------------
def _write_body_model(path: Path) -> None:
    """A SMPL-H-like .npz with one vertex per joint, its rest joints SMPL22's (plus two hand joints)."""
    from polydiff_motion.skeleton import SMPL22

    rest = SMPL22.rest_positions()
    template = np.concatenate([rest, rest[[20, 21]] + np.array([[0.1, 0.0, 0.0], [-0.1, 0.0, 0.0]])])
    parents = (0,) + SMPL22.parents[1:] + (20, 21)
    np.savez(path, v_template=template, shapedirs=np.zeros((24, 3, 10)), posedirs=np.zeros((24, 3, 207)),
             J_regressor=np.eye(24), weights=np.eye(24), kintree_table=np.stack([np.array(parents), np.arange(24)]),
             f=np.array([[0, 1, 2]]))


def test_smpl_pose_file_round_trips_through_the_body_model(tmp_path: Path):
    pytest.importorskip("smplx")
    from polydiff_motion.export import positions_to_smpl
    from polydiff_motion.formats import read_amass
    from polydiff_motion.procedural import compose

    model = tmp_path / "SMPL_NEUTRAL.npz"
    _write_body_model(model)
    clip = compose([("walk", {"duration": 2.0}), ("turn", {"side": "right", "angle": 90})], seed=5, vary_shape=False)
    out = positions_to_smpl(clip.positions, tmp_path / "clip.smpl.npz", model, 20.0)
    data = np.load(out)
    assert data["poses"].shape == (len(clip.positions), 156) and not data["poses"][:, 66:].any()
    assert data["trans"].shape == (len(clip.positions), 3)
    back = read_amass(out, model, fps=20.0)
    # The body model's rest skeleton is the clip's, so the joints come back exactly.
    np.testing.assert_allclose(back, clip.positions, atol=1e-5)
    with pytest.raises(FileExistsError):
        positions_to_smpl(clip.positions, out, model, 20.0)
