"""Reading HumanML3D, AMASS and Human3.6M files.

Every fixture is built by hand in a temporary folder. The AMASS reader runs through smplx on a
synthetic SMPL model with one vertex per joint, an identity joint regressor and identity skinning
weights, so the joints are the template's vertices and a posed body can be worked out on paper.
Each malformed input is checked for naming the file and the field or line at fault.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from polydiff_motion.features import FEATURE_DIM
from polydiff_motion.formats import (
    H36M_17_FROM_32,
    MotionDataError,
    h36m_32_to_17,
    read_amass,
    read_h36m_2d,
    read_h36m_3d,
    read_humanml3d,
    read_keypoints_2d,
    read_stats,
)
from polydiff_motion.skeleton import SMPL22


# --- HumanML3D ----------------------------------------------------------------------------------
def _features(rows: int, value: float = 0.0) -> np.ndarray:
    return np.full((rows, FEATURE_DIM), value, dtype=np.float64)


@pytest.fixture
def humanml3d(tmp_path: Path) -> Path:
    for folder in ("new_joint_vecs", "new_joints", "texts"):
        (tmp_path / folder).mkdir()
    vecs, texts = tmp_path / "new_joint_vecs", tmp_path / "texts"
    np.save(vecs / "a.npy", _features(6, 0.5))
    np.save(tmp_path / "new_joints" / "a.npy", np.ones((7, 22, 3)))
    (texts / "a.txt").write_text("a person walks forward.#a/DET person/NOUN walk/VERB forward/ADV#0.0#0.0\n"
                                 "then turns left#then/ADV turn/VERB left/ADV#0.1#0.25\n")
    nan = _features(6)
    nan[3, 7] = np.nan
    np.save(vecs / "nan.npy", nan)
    np.save(vecs / "narrow.npy", np.zeros((6, 10)))
    np.save(vecs / "short.npy", _features(2))
    np.save(vecs / "badline.npy", _features(6))
    (texts / "badline.txt").write_text("fine#fine/ADJ#0.0#0.0\nbroken line without tags\n")
    np.save(vecs / "notext.npy", _features(6))
    np.save(vecs / "badjoints.npy", _features(6))
    np.save(tmp_path / "new_joints" / "badjoints.npy", np.ones((6, 21, 3)))
    for name in ("nan", "narrow", "short", "badjoints"):
        (texts / f"{name}.txt").write_text("x#x/X#0.0#0.0\n")
    ids = ["a", "missing", "nan", "narrow", "short", "badline", "notext", "badjoints"]
    (tmp_path / "train.txt").write_text("\n".join(ids) + "\n")
    np.save(tmp_path / "Mean.npy", np.arange(FEATURE_DIM, dtype=np.float64))
    np.save(tmp_path / "Std.npy", np.full(FEATURE_DIM, 2.0))
    return tmp_path


def test_humanml3d_reads_good_clip_and_reports_the_rest(humanml3d: Path) -> None:
    records = read_humanml3d(humanml3d, min_frames=4)
    assert [r.id for r in records] == ["a"]
    record = records[0]
    assert record.features.dtype == np.float32 and record.features.shape == (6, FEATURE_DIM)
    assert np.all(record.features == 0.5)
    assert record.joints.shape == (7, 22, 3)
    whole, part = record.captions
    # 0.0#0.0 is the whole clip: 6 rows at 20 fps are 0.3 s.
    assert (whole.text, whole.start_s, whole.end_s) == ("a person walks forward.", 0.0, pytest.approx(0.3))
    assert whole.tokens == ("a/DET", "person/NOUN", "walk/VERB", "forward/ADV")
    assert (part.text, part.start_s, part.end_s) == ("then turns left", 0.1, 0.25)
    assert record.frames(part) == slice(2, 5)
    assert record.frames(whole) == slice(0, 6)

    problems = dict(records.problems)
    assert [i for i, _ in records.problems] == ["missing", "nan", "narrow", "short", "badline", "notext",
                                                "badjoints"]
    assert "missing.npy" in problems["missing"] and "missing" in problems["missing"]
    assert "nan.npy" in problems["nan"] and "NaN" in problems["nan"] and "frame 3" in problems["nan"]
    assert "narrow.npy" in problems["narrow"] and "(6, 10)" in problems["narrow"]
    assert "short.npy" in problems["short"] and "minimum 4" in problems["short"]
    assert "badline.txt, line 2" in problems["badline"]
    assert "notext.txt" in problems["notext"]
    assert "new_joints" in problems["badjoints"] and "(6, 21, 3)" in problems["badjoints"]


def test_humanml3d_optional_text_and_default_minimum(humanml3d: Path) -> None:
    records = read_humanml3d(humanml3d, min_frames=4, require_text=False)
    assert [r.id for r in records] == ["a", "notext"]
    assert records[1].captions == () and records[1].joints is None
    # HumanML3D's own minimum of 40 frames rejects every 6-frame fixture clip.
    assert len(read_humanml3d(humanml3d)) == 0


def test_humanml3d_missing_split_names_file_and_lists_splits(humanml3d: Path) -> None:
    with pytest.raises(MotionDataError, match=r"test\.txt: no such split file; splits present: train"):
        read_humanml3d(humanml3d, split="test")


def test_humanml3d_caption_interval_errors(humanml3d: Path) -> None:
    (humanml3d / "texts" / "a.txt").write_text("ok#ok/X#0.0#0.0\nbackwards#b/X#0.5#0.2\n")
    records = read_humanml3d(humanml3d, min_frames=4)
    assert "a" not in [r.id for r in records]
    reason = dict(records.problems)["a"]
    assert "a.txt, line 2" in reason and "start < end" in reason


def test_read_stats(humanml3d: Path) -> None:
    stats = read_stats(humanml3d)
    assert stats.mean[:3] == [0.0, 1.0, 2.0] and stats.std[0] == 2.0
    np.save(humanml3d / "Std.npy", np.zeros(FEATURE_DIM))
    with pytest.raises(MotionDataError, match=r"Std\.npy: std must be positive"):
        read_stats(humanml3d)
    np.save(humanml3d / "Mean.npy", np.zeros(5))
    with pytest.raises(MotionDataError, match=r"Mean\.npy: field 'Mean' must have shape \(263\)"):
        read_stats(humanml3d)


# --- AMASS through smplx ------------------------------------------------------------------------
SMPL24_PARENTS = SMPL22.parents + (20, 21)


def _template() -> np.ndarray:
    rest = SMPL22.rest_positions()
    hands = rest[[20, 21]] + np.array([[0.1, 0.0, 0.0], [-0.1, 0.0, 0.0]])
    return np.concatenate([rest, hands])


def _write_model(path: Path) -> np.ndarray:
    """A SMPL .npz with one vertex per joint; returns the template (24, 3)."""
    template = _template()
    shapedirs = np.zeros((24, 3, 10))
    shapedirs[:, 2, 0] = template[:, 2]  # beta 0 scales z
    shapedirs[:, 0, 1] = 1.0  # beta 1 shifts x
    rng = np.random.default_rng(0)
    np.savez(path, v_template=template, shapedirs=shapedirs,
             # pose blend shapes move vertices but not joints, which SMPL regresses from the shaped rest body
             posedirs=rng.normal(size=(24, 3, 207)), J_regressor=np.eye(24), weights=np.eye(24),
             kintree_table=np.stack([np.array((0,) + SMPL24_PARENTS[1:]), np.arange(24)]),
             f=np.array([[0, 1, 2]]))
    return template


def _write_clip(path: Path, poses: np.ndarray, trans: np.ndarray, rate: float, betas: np.ndarray | None = None,
                **extra) -> None:
    fields = dict(poses=poses, trans=trans, betas=np.zeros(16) if betas is None else betas,
                  mocap_framerate=np.array(rate), gender=np.array("neutral"))
    fields.update(extra)
    np.savez(path, **{k: v for k, v in fields.items() if v is not None})


def _y_up(p: np.ndarray) -> np.ndarray:
    return np.stack([-p[..., 0], p[..., 2], p[..., 1]], -1)


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, np.ndarray]:
    pytest.importorskip("smplx")
    path = tmp_path / "SMPL_NEUTRAL.npz"
    return path, _write_model(path)


def test_amass_zero_pose_is_the_shaped_template(tmp_path: Path, model) -> None:
    path, template = model
    betas = np.zeros(16)
    betas[:2] = (0.5, 0.2)
    trans = np.array([[1.0, 2.0, 3.0]] * 2)
    _write_clip(tmp_path / "clip.npz", np.zeros((2, 156)), trans, 20.0, betas)
    out = read_amass(tmp_path / "clip.npz", path)
    shaped = template[:22] * [1.0, 1.0, 1.5] + [0.2, 0.0, 0.0] + trans[0]
    assert out.shape == (2, 22, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], _y_up(shaped), atol=1e-6)
    np.testing.assert_allclose(out[1], out[0])
    # A folder works too, picking SMPL_<GENDER>.npz.
    np.testing.assert_allclose(read_amass(tmp_path / "clip.npz", tmp_path), out)


def test_amass_known_rotations(tmp_path: Path, model) -> None:
    path, r = model
    poses = np.zeros((2, 165))
    poses[0, 4 * 3 + 0] = math.pi / 2  # left knee a quarter turn about x
    poses[1, 2] = math.pi / 2  # root a quarter turn about z
    poses[:, 66:] = 1.0  # jaw, eyes and hands play no part in the 22 body joints
    _write_clip(tmp_path / "clip.npz", poses, np.zeros((2, 3)), 20.0)
    out = read_amass(tmp_path / "clip.npz", path)

    def rx(v):
        return np.stack([v[..., 0], -v[..., 2], v[..., 1]], -1)

    def rz(v):
        return np.stack([-v[..., 1], v[..., 0], v[..., 2]], -1)

    knee = r[:22].copy()
    for j in (7, 10):  # left ankle and left foot hang below the knee
        knee[j] = r[4] + rx(r[j] - r[4])
    np.testing.assert_allclose(out[0], _y_up(knee), atol=1e-6)
    turned = r[0] + rz(r[:22] - r[0])
    np.testing.assert_allclose(out[1], _y_up(turned), atol=1e-6)


def test_amass_resamples(tmp_path: Path, model) -> None:
    path, template = model
    trans = np.zeros((7, 3))
    trans[:, 0] = np.arange(7)
    # 60 fps -> 20 fps takes every third frame.
    _write_clip(tmp_path / "sixty.npz", np.zeros((7, 156)), trans, 60.0)
    out = read_amass(tmp_path / "sixty.npz", path)
    np.testing.assert_allclose(-out[:, 0, 0] + out[0, 0, 0], [0.0, 3.0, 6.0], atol=1e-6)
    # 30 fps -> 20 fps interpolates half-way between frames; the old key spelling is accepted.
    np.savez(tmp_path / "thirty.npz", poses=np.zeros((7, 156)), trans=trans, betas=np.zeros(10),
             mocap_frame_rate=np.array(30.0), gender=np.array("neutral"))
    out = read_amass(tmp_path / "thirty.npz", path)
    np.testing.assert_allclose(-out[:, 0, 0] + out[0, 0, 0], [0.0, 1.5, 3.0, 4.5, 6.0], atol=1e-6)


@pytest.mark.parametrize(("change", "message"), [
    (dict(trans=None), r"clip\.npz: missing field 'trans'"),
    (dict(poses=np.zeros((3, 30))), r"clip\.npz: field 'poses' needs at least 66"),
    (dict(trans=np.zeros((2, 3))), r"clip\.npz: field 'trans' must have shape \(3, 3\)"),
    (dict(mocap_framerate=None), r"clip\.npz: missing field 'mocap_frame_rate'"),
    (dict(mocap_framerate=np.array(0.0)), r"clip\.npz: field 'mocap_framerate' must be positive"),
])
def test_amass_bad_clip_names_file_and_field(tmp_path: Path, model, change, message) -> None:
    path, _ = model
    fields = dict(poses=np.zeros((3, 156)), trans=np.zeros((3, 3)), betas=np.zeros(16),
                  mocap_framerate=np.array(20.0))
    fields.update(change)
    np.savez(tmp_path / "clip.npz", **{k: v for k, v in fields.items() if v is not None})
    with pytest.raises(MotionDataError, match=message):
        read_amass(tmp_path / "clip.npz", path)


def test_amass_bad_model_names_file_and_field(tmp_path: Path, model) -> None:
    path, _ = model
    _write_clip(tmp_path / "clip.npz", np.zeros((2, 156)), np.zeros((2, 3)), 20.0)
    with pytest.raises(MotionDataError, match=r"no body model for gender 'female'"):
        read_amass(tmp_path / "clip.npz", tmp_path, gender="female")
    with np.load(path) as data:
        fields = dict(data)
    del fields["J_regressor"]
    np.savez(tmp_path / "broken.npz", **fields)
    with pytest.raises(MotionDataError, match=r"broken\.npz: missing field 'J_regressor'"):
        read_amass(tmp_path / "clip.npz", tmp_path / "broken.npz")


# --- Human3.6M ----------------------------------------------------------------------------------
def test_h36m_3d(tmp_path: Path) -> None:
    walk = np.arange(2 * 32 * 3, dtype=np.float64).reshape(2, 32, 3)
    np.savez(tmp_path / "data_3d_h36m.npz", positions_3d={"S1": {"Walking": walk}})
    with pytest.raises(MotionDataError, match=r"data_3d_h36m\.npz: .*allow_pickle=True"):
        read_h36m_3d(tmp_path / "data_3d_h36m.npz")
    data = read_h36m_3d(tmp_path / "data_3d_h36m.npz", allow_pickle=True)
    np.testing.assert_array_equal(data["S1"]["Walking"], walk)
    seventeen = h36m_32_to_17(data["S1"]["Walking"])
    assert seventeen.shape == (2, 17, 3)
    np.testing.assert_array_equal(seventeen[0, :, 0], [3 * j for j in H36M_17_FROM_32])
    np.testing.assert_array_equal(seventeen[0, 13], walk[0, 19])  # left wrist


def test_h36m_3d_bad_array_names_subject_and_action(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", positions_3d={"S1": {"Walking": np.zeros((2, 17, 3))}})
    with pytest.raises(MotionDataError, match=r"bad\.npz: field \"positions_3d\['S1'\]\['Walking'\]\" must "
                                              r"have shape \(N, 32, 3\)"):
        read_h36m_3d(tmp_path / "bad.npz", allow_pickle=True)
    np.savez(tmp_path / "empty.npz", other=np.zeros(1))
    with pytest.raises(MotionDataError, match=r"empty\.npz: missing field 'positions_3d'"):
        read_h36m_3d(tmp_path / "empty.npz", allow_pickle=True)


def _write_2d(path: Path, cameras, metadata) -> None:
    np.savez(path, positions_2d={"S9": {"Sitting": cameras}}, metadata=metadata)


META = {"num_joints": 17, "keypoints_symmetry": [[4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16]]}


def test_h36m_2d(tmp_path: Path) -> None:
    cameras = [np.full((3, 17, 2), float(c)) for c in range(4)]
    _write_2d(tmp_path / "data_2d_h36m_gt.npz", cameras, META)
    with pytest.raises(MotionDataError, match=r"data_2d_h36m_gt\.npz: .*allow_pickle=True"):
        read_h36m_2d(tmp_path / "data_2d_h36m_gt.npz")
    data = read_h36m_2d(tmp_path / "data_2d_h36m_gt.npz", allow_pickle=True)
    assert data.num_joints == 17
    assert data.keypoints_symmetry == ((4, 5, 6, 11, 12, 13), (1, 2, 3, 14, 15, 16))
    views = data.positions["S9"]["Sitting"]
    assert len(views) == 4 and all(v.shape == (3, 17, 2) for v in views)
    assert views[2][0, 0, 0] == 2.0


def test_h36m_2d_errors(tmp_path: Path) -> None:
    _write_2d(tmp_path / "a.npz", [np.zeros((3, 16, 2))], META)
    with pytest.raises(MotionDataError, match=r"a\.npz: field \"positions_2d\['S9'\]\['Sitting'\]\[0\]\" must "
                                              r"have shape \(N, 17, 2\)"):
        read_h36m_2d(tmp_path / "a.npz", allow_pickle=True)
    _write_2d(tmp_path / "b.npz", [np.zeros((3, 17, 2))], {"num_joints": 17})
    with pytest.raises(MotionDataError, match=r"b\.npz: field 'metadata' lacks 'keypoints_symmetry'"):
        read_h36m_2d(tmp_path / "b.npz", allow_pickle=True)
    _write_2d(tmp_path / "c.npz", [np.zeros((3, 17, 2))], {"num_joints": 17, "keypoints_symmetry": [[1], [17]]})
    with pytest.raises(MotionDataError, match=r"c\.npz: .*keypoints_symmetry"):
        read_h36m_2d(tmp_path / "c.npz", allow_pickle=True)


# --- 2D keypoints -------------------------------------------------------------------------------
def test_keypoints_2d(tmp_path: Path) -> None:
    keypoints = np.arange(4 * 3 * 2, dtype=np.float64).reshape(4, 3, 2)
    confidence = np.ones((4, 3))
    confidence[1:4, 2] = 0.0
    confidence[0, 0] = 0.0
    np.savez(tmp_path / "kp.npz", keypoints=keypoints, confidence=confidence,
             joint_names=np.array(["head", "neck", "left_wrist"]))
    track = read_keypoints_2d(tmp_path / "kp.npz")
    np.testing.assert_array_equal(track.keypoints, keypoints)
    assert track.joint_names == ("head", "neck", "left_wrist")
    assert track.zero_confidence == {0: 1, 2: 3}
    assert track.describe_zero_confidence() == "head: 1 of 4 frames; left_wrist: 3 of 4 frames"
    np.savez(tmp_path / "bare.npz", keypoints=keypoints)
    bare = read_keypoints_2d(tmp_path / "bare.npz")
    assert bare.confidence is None and bare.joint_names is None and bare.zero_confidence == {}


@pytest.mark.parametrize(("fields", "message"), [
    (dict(points=np.zeros((2, 3, 2))), r"missing field 'keypoints'; fields present: points"),
    (dict(keypoints=np.zeros((2, 3, 3))), r"field 'keypoints' must have shape \(N, N, 2\)"),
    (dict(keypoints=np.zeros((2, 3, 2)), confidence=np.ones((2, 4))), r"field 'confidence' must have shape \(2, 3\)"),
    (dict(keypoints=np.zeros((2, 3, 2)), confidence=np.full((2, 3), 2.0)), r"field 'confidence' must lie in"),
    (dict(keypoints=np.full((2, 3, 2), np.nan)), r"field 'keypoints' contains NaN"),
    (dict(keypoints=np.zeros((2, 3, 2)), joint_names=np.array(["a", "b"])), r"field 'joint_names' must be 3"),
    (dict(keypoints=np.zeros((2, 3, 2)), joint_names=np.array([{"a": 1}], dtype=object)), r"holds pickled objects"),
])
def test_keypoints_2d_errors(tmp_path: Path, fields, message) -> None:
    np.savez(tmp_path / "kp.npz", **fields)
    with pytest.raises(MotionDataError, match=r"kp\.npz: " + message):
        read_keypoints_2d(tmp_path / "kp.npz")


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(MotionDataError, match=r"nothing\.npz: no such file"):
        read_keypoints_2d(tmp_path / "nothing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(MotionDataError, match=r"junk\.npz: not a readable \.npz file"):
        read_keypoints_2d(tmp_path / "junk.npz")
