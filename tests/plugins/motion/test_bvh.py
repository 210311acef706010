"""Reading and writing BVH files.

A small hierarchy is written out by hand here with 90-degree rotations whose joint positions are
worked out on paper; random skeletons and rotations written in every rotation order must read
back to the same joint positions; Euler angles round-trip through matrices, at gimbal lock too;
each malformed file is checked for naming the file and the line at fault.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from polydiff_motion.bvh import (
    CHANNEL_NAMES,
    ORDERS,
    BVHError,
    BVHMotion,
    euler_to_matrix,
    matrix_to_euler,
    read_bvh,
    write_bvh,
)

# Hips carries the position; Spine -> Head chain and a Leg, each ending in an End Site; three
# different rotation orders. Frame 0 is the rest pose moved to (1, 2, 3); frame 1 turns Hips
# 90 degrees about z, Spine and Head 90 degrees about x, Leg 90 degrees about z.
SMALL = """\
HIERARCHY
ROOT Hips
{
\tOFFSET 0 0 0
\tCHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
\tJOINT Spine
\t{
\t\tOFFSET 0 10 0
\t\tCHANNELS 3 Zrotation Xrotation Yrotation
\t\tJOINT Head
\t\t{
\t\t\tOFFSET 0 5 0
\t\t\tCHANNELS 3 Xrotation Yrotation Zrotation
\t\t\tEnd Site
\t\t\t{
\t\t\t\tOFFSET 0 2 0
\t\t\t}
\t\t}
\t}
\tJOINT Leg
\t{
\t\tOFFSET 3 0 0
\t\tCHANNELS 3 Yrotation Xrotation Zrotation
\t\tEnd Site
\t\t{
\t\t\tOFFSET 0 -8 0
\t\t}
\t}
}
MOTION
Frames: 2
Frame Time: 0.04
1 2 3 0 0 0 0 0 0 0 0 0 0 0 0
10 0 0 90 0 0 0 90 0 90 0 0 0 0 90
"""
# Rz90 takes (x, y, z) to (-y, x, z), Rx90 to (x, -z, y). Frame 1: Spine = (10,0,0) + Rz90 (0,10,0);
# Head = Spine + Rz90 Rx90 (0,5,0); Head's end = Head + Rz90 Rx90 Rx90 (0,2,0);
# Leg = (10,0,0) + Rz90 (3,0,0); Leg's end = Leg + Rz90 Rz90 (0,-8,0).
SMALL_POSITIONS = np.array([
    [[1, 2, 3], [1, 12, 3], [1, 17, 3], [4, 2, 3]],
    [[10, 0, 0], [0, 0, 0], [0, 0, 5], [10, 3, 0]],
], dtype=float)
SMALL_END_SITES = np.array([[[1, 19, 3], [4, -6, 3]], [[2, 0, 5], [10, 11, 0]]], dtype=float)


def write_text(tmp_path: Path, text: str, name: str = "clip.bvh") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def two_joints(channels: str, values: str, child_offset: str = "0 1 0") -> str:
    """A root at the origin with one rotating child and an End Site at the child's offset."""
    n = len(channels.split())
    return (f"HIERARCHY\nROOT A\n{{\n OFFSET 0 0 0\n CHANNELS {n} {channels}\n JOINT B\n {{\n"
            f"  OFFSET {child_offset}\n  CHANNELS 0\n  End Site\n  {{\n   OFFSET 0 0 0\n  }}\n }}\n}}\n"
            f"MOTION\nFrames: 1\nFrame Time: 0.1\n{values}\n")


def random_rotations(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform random rotation matrices from normalised Gaussian quaternions."""
    q = rng.normal(size=shape + (4,))
    w, x, y, z = np.moveaxis(q / np.linalg.norm(q, axis=-1, keepdims=True), -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def reference_positions(parents, offsets, rotations, root_positions) -> np.ndarray:
    """Forward kinematics written independently of the module, joint by joint and frame by frame."""
    frames, joints = rotations.shape[:2]
    out = np.zeros((frames, joints, 3))
    for t in range(frames):
        glob = [None] * joints
        for j in range(joints):
            p = parents[j]
            if p < 0:
                glob[j], out[t, j] = rotations[t, j], root_positions[t]
            else:
                glob[j] = glob[p] @ rotations[t, j]
                out[t, j] = out[t, p] + glob[p] @ offsets[j]
    return out


# --- reading a hand-written file ------------------------------------------------------------------
def test_small_file_structure(tmp_path):
    motion = read_bvh(write_text(tmp_path, SMALL))
    assert motion.names == ["Hips", "Spine", "Head", "Leg"]
    assert motion.parents.tolist() == [-1, 0, 1, 0]
    np.testing.assert_array_equal(motion.offsets, [[0, 0, 0], [0, 10, 0], [0, 5, 0], [3, 0, 0]])
    assert motion.channels[0] == ("Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation", "Yrotation")
    assert motion.channels[2] == ("Xrotation", "Yrotation", "Zrotation")
    assert motion.data.shape == (2, 15) and motion.n_frames == 2 and motion.n_joints == 4
    assert motion.frame_time == 0.04 and motion.fps == pytest.approx(25.0)
    assert [j for j, _ in motion.end_sites] == [2, 3]
    np.testing.assert_array_equal(motion.end_sites[1][1], [0, -8, 0])
    np.testing.assert_array_equal(motion.root_positions(), [[1, 2, 3], [10, 0, 0]])
    assert motion.source == str(tmp_path / "clip.bvh")


def test_small_file_positions_by_hand(tmp_path):
    motion = read_bvh(write_text(tmp_path, SMALL))
    np.testing.assert_allclose(motion.global_positions(), SMALL_POSITIONS, atol=1e-12)
    np.testing.assert_allclose(motion.end_site_positions(), SMALL_END_SITES, atol=1e-12)
    rz90 = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]])
    np.testing.assert_allclose(motion.local_rotations()[1, 0], rz90, atol=1e-12)
    np.testing.assert_allclose(motion.local_rotations()[0], np.broadcast_to(np.eye(3), (4, 3, 3)), atol=0)


@pytest.mark.parametrize(("channels", "values", "expected"), [
    # Rz(90) Rx(90) (0,1,0): Rx first takes y to z, which Rz leaves alone.
    ("Zrotation Xrotation Yrotation", "90 90 0", [0, 0, 1]),
    # Rx(90) Rz(90) (0,1,0): Rz first takes y to -x, which Rx leaves alone.
    ("Xrotation Zrotation Yrotation", "90 90 0", [-1, 0, 0]),
    # Ry(90) Rx(90) (0,1,0) = Ry(90) (0,0,1) = (1,0,0).
    ("Yrotation Xrotation", "90 90", [1, 0, 0]),
])
def test_rotation_channels_compose_in_channel_order(tmp_path, channels, values, expected):
    motion = read_bvh(write_text(tmp_path, two_joints(channels, values)))
    np.testing.assert_allclose(motion.global_positions()[0, 1], expected, atol=1e-12)


def test_position_channels_replace_the_offset_on_any_joint(tmp_path):
    text = SMALL.replace("CHANNELS 3 Zrotation Xrotation Yrotation",
                         "CHANNELS 6 Zrotation Xposition Yposition Zposition Xrotation Yrotation")
    text = text.replace("1 2 3 0 0 0 0 0 0", "1 2 3 0 0 0 0 0 7 0 0 0")
    text = text.replace("10 0 0 90 0 0 0 90", "10 0 0 90 0 0 0 0 7 0 90")
    motion = read_bvh(write_text(tmp_path, text))
    positions = motion.global_positions()
    # Spine sits at (0, 7, 0) from Hips instead of its offset (0, 10, 0); Head follows it.
    np.testing.assert_allclose(positions[0, 1:3], [[1, 9, 3], [1, 14, 3]], atol=1e-12)
    np.testing.assert_allclose(positions[1, 1:3], [[3, 0, 0], [3, 0, 5]], atol=1e-12)


def test_partial_position_channels_keep_the_other_axes(tmp_path):
    motion = read_bvh(write_text(tmp_path, two_joints("Yposition Zrotation", "4 90", child_offset="2 0 0")
                                 .replace("OFFSET 0 0 0\n CHANNELS", "OFFSET 5 6 7\n CHANNELS")))
    np.testing.assert_allclose(motion.root_positions(), [[5, 4, 7]])
    np.testing.assert_allclose(motion.global_positions()[0, 1], [5, 6, 7], atol=1e-12)


def test_loose_formatting_is_read(tmp_path):
    text = ("hierarchy\r\nROOT Hips {\r\n OFFSET 0 0 0 CHANNELS 3 xposition YPOSITION Zposition\r\n"
            " JOINT left hip { OFFSET 1 0 0 CHANNELS 1 Zrotation End Site { OFFSET 1 0 0 } }\r\n}\r\n"
            "MOTION\r\nFrames:\t2\r\nFrame  Time: 0.5\r\n\r\n0 0 0 0\r\n1 1 1 90\r\n\r\n")
    motion = read_bvh(write_text(tmp_path, text))
    assert motion.names == ["Hips", "left hip"] and motion.channels[0] == ("Xposition", "Yposition", "Zposition")
    np.testing.assert_allclose(motion.end_site_positions()[1, 0], [2, 2, 1], atol=1e-12)


def test_scale_converts_lengths_only(tmp_path):
    path = write_text(tmp_path, SMALL)
    motion, metres = read_bvh(path), read_bvh(path, scale=0.01)
    np.testing.assert_allclose(metres.global_positions(), 0.01 * motion.global_positions(), atol=1e-14)
    np.testing.assert_allclose(metres.end_site_positions(), 0.01 * SMALL_END_SITES, atol=1e-14)
    np.testing.assert_array_equal(metres.local_rotations(), motion.local_rotations())
    with pytest.raises(ValueError, match="scale"):
        read_bvh(path, scale=0)


# --- Euler angles --------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ORDERS)
def test_euler_matches_elementary_rotations(order):
    angles = np.array([30.0, -50.0, 120.0])
    expected = np.eye(3)
    for axis, angle in zip(order, angles):
        c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
        expected = expected @ {"X": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
                               "Y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
                               "Z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]
    np.testing.assert_allclose(euler_to_matrix(angles, order), expected, atol=1e-14)
    np.testing.assert_allclose(matrix_to_euler(expected, order), angles, atol=1e-10)


@pytest.mark.parametrize("order", ORDERS)
def test_euler_round_trip_random(order):
    rotations = random_rotations(np.random.default_rng(0), (500,))
    angles = matrix_to_euler(rotations, order)
    np.testing.assert_allclose(euler_to_matrix(angles, order), rotations, atol=1e-12)
    assert np.all(np.abs(angles[:, 1]) <= 90) and np.all(np.abs(angles[:, [0, 2]]) <= 180)
    radians = matrix_to_euler(rotations, order, degrees=False)
    np.testing.assert_allclose(euler_to_matrix(radians, order, degrees=False), rotations, atol=1e-12)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("distance", [0.0, 1e-9, 1e-6, 1e-3])
@pytest.mark.parametrize("sign", [1, -1])
def test_euler_round_trip_near_gimbal_lock(order, distance, sign):
    rng = np.random.default_rng(1)
    angles = np.c_[rng.uniform(-180, 180, 50), np.full(50, sign * (90 - distance)), rng.uniform(-180, 180, 50)]
    rotations = euler_to_matrix(angles, order)
    recovered = matrix_to_euler(rotations, order)
    np.testing.assert_allclose(euler_to_matrix(recovered, order), rotations, atol=1e-7)
    np.testing.assert_allclose(recovered[:, 1], angles[:, 1], atol=1e-6)


def test_unknown_order_lists_the_valid_ones():
    with pytest.raises(ValueError, match="XYZ, XZY, YXZ, YZX, ZXY, ZYX"):
        euler_to_matrix(np.zeros(3), "XYX")


# --- round trips ---------------------------------------------------------------------------------
def random_skeleton(rng: np.random.Generator, joints: int = 7, frames: int = 6):
    parents = np.array([-1] + [int(rng.integers(0, j)) for j in range(1, joints)])
    offsets = rng.normal(scale=20.0, size=(joints, 3))
    rotations = random_rotations(rng, (frames, joints))
    root = rng.normal(scale=100.0, size=(frames, 3))
    return [f"joint{j}" for j in range(joints)], parents, offsets, rotations, root


@pytest.mark.parametrize("order", ORDERS)
def test_arrays_round_trip_every_order(tmp_path, order):
    names, parents, offsets, rotations, root = random_skeleton(np.random.default_rng(ORDERS.index(order)))
    path = write_bvh(tmp_path / "out.bvh", (names, parents, offsets, rotations, root, 30.0), order=order)
    motion = read_bvh(path)
    assert motion.channels[0] == ("Xposition", "Yposition", "Zposition") + tuple(f"{a}rotation" for a in order)
    assert all(ch == tuple(f"{a}rotation" for a in order) for ch in motion.channels[1:])
    assert motion.fps == pytest.approx(30.0, rel=1e-12)
    # The writer may list joints depth-first; compare joint by joint through the names.
    index = [motion.names.index(n) for n in names]
    expected = reference_positions(parents, offsets, rotations, root)
    np.testing.assert_allclose(motion.global_positions()[:, index], expected, atol=1e-4)
    np.testing.assert_allclose(motion.local_rotations()[:, index], rotations, atol=1e-7)
    np.testing.assert_allclose(motion.root_positions(), root, atol=1e-6)


def test_default_order_is_zyx(tmp_path):
    names, parents, offsets, rotations, root = random_skeleton(np.random.default_rng(5), joints=3, frames=2)
    motion = read_bvh(write_bvh(tmp_path / "out.bvh", (names, parents, offsets, rotations, root, 24)))
    assert motion.channels[1] == ("Zrotation", "Yrotation", "Xrotation")


def test_non_depth_first_input_is_reordered():
    parents = [-1, 0, 0, 1]  # joint 3 hangs from joint 1, so depth-first is 0, 1, 3, 2
    rotations = random_rotations(np.random.default_rng(2), (2, 4))
    offsets = np.eye(4, 3)
    motion = BVHMotion.from_arrays(["a", "b", "c", "d"], parents, offsets, rotations, np.zeros((2, 3)), 10,
                                   end_sites=[(2, [0, 0, 1])])
    assert motion.names == ["a", "b", "d", "c"] and motion.parents.tolist() == [-1, 0, 1, 0]
    assert motion.end_sites[0][0] == 3
    expected = reference_positions(np.array(parents), offsets, rotations, np.zeros((2, 3)))
    np.testing.assert_allclose(motion.global_positions(), expected[:, [0, 1, 3, 2]], atol=1e-12)


def test_file_round_trip_keeps_everything(tmp_path):
    motion = read_bvh(write_text(tmp_path, SMALL))
    again = read_bvh(write_bvh(tmp_path / "again.bvh", motion))
    assert again.names == motion.names and again.channels == motion.channels
    np.testing.assert_array_equal(again.parents, motion.parents)
    np.testing.assert_array_equal(again.offsets, motion.offsets)
    np.testing.assert_array_equal(again.data, motion.data)
    assert again.frame_time == motion.frame_time
    assert [j for j, _ in again.end_sites] == [j for j, _ in motion.end_sites]
    for (_, a), (_, b) in zip(again.end_sites, motion.end_sites):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(again.end_site_positions(), SMALL_END_SITES, atol=1e-12)


def test_values_read_with_up_to_ten_digits_are_written_back_exactly(tmp_path):
    motion = read_bvh(write_text(tmp_path, SMALL))
    motion.data = np.round(np.random.default_rng(4).uniform(-180, 180, motion.data.shape), 6)
    motion.frame_time = 1 / 30
    again = read_bvh(write_bvh(tmp_path / "again.bvh", motion))
    np.testing.assert_array_equal(again.data, motion.data)
    assert again.frame_time == motion.frame_time


def test_a_file_without_frames(tmp_path):
    text = SMALL.replace("Frames: 2", "Frames: 0").rsplit("0.04", 1)[0] + "0.04\n"
    motion = read_bvh(write_text(tmp_path, text))
    assert motion.data.shape == (0, 15) and motion.global_positions().shape == (0, 4, 3)
    assert read_bvh(write_bvh(tmp_path / "again.bvh", motion)).data.shape == (0, 15)


@pytest.mark.parametrize("order", ["XYZ", "yzx"])
def test_rewriting_a_file_in_another_order(tmp_path, order):
    motion = read_bvh(write_text(tmp_path, SMALL))
    again = read_bvh(write_bvh(tmp_path / "again.bvh", motion, order=order))
    assert again.channels[0][:3] == ("Xposition", "Yposition", "Zposition")
    assert again.channels[3] == tuple(f"{a}rotation" for a in order.upper())
    np.testing.assert_allclose(again.global_positions(), SMALL_POSITIONS, atol=1e-9)
    np.testing.assert_allclose(again.end_site_positions(), SMALL_END_SITES, atol=1e-9)


def test_existing_file_is_refused_unless_overwrite(tmp_path):
    motion = read_bvh(write_text(tmp_path, SMALL))
    target = write_text(tmp_path, "keep me", name="taken.bvh")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_bvh(target, motion)
    assert target.read_text() == "keep me"
    write_bvh(target, motion, overwrite=True)
    assert read_bvh(target).names == motion.names
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_writer_rejects_bad_arrays(tmp_path):
    names, parents, offsets, rotations, root = random_skeleton(np.random.default_rng(3), joints=3, frames=2)
    with pytest.raises(ValueError, match="rotation matrices"):
        write_bvh(tmp_path / "a.bvh", (names, parents, offsets, 2 * rotations, root, 30))
    with pytest.raises(ValueError, match="parent"):
        write_bvh(tmp_path / "a.bvh", (names, [-1, 2, 0], offsets, rotations, root, 30))
    with pytest.raises(ValueError, match="NaN"):
        write_bvh(tmp_path / "a.bvh", (names, parents, offsets, rotations, root * np.nan, 30))
    with pytest.raises(ValueError, match="cannot be written"):
        write_bvh(tmp_path / "a.bvh", (["a", "b{", "c"], parents, offsets, rotations, root, 30))
    assert not (tmp_path / "a.bvh").exists()


# --- malformed files -----------------------------------------------------------------------------
def _replace_line(text: str, number: int, new: str | None) -> str:
    lines = text.splitlines()
    if new is None:
        del lines[number - 1]
    else:
        lines[number - 1] = new
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("text", "line", "match"), [
    pytest.param(SMALL.split("MOTION")[0], 29, "without a MOTION", id="missing-motion"),
    pytest.param(SMALL.replace("Frames: 2", "Frames: 3"), 31, "3 frames declared but 2", id="too-few-frames"),
    pytest.param(SMALL.replace("Frames: 2", "Frames: 1"), 34, "more data lines", id="too-many-frames"),
    pytest.param(_replace_line(SMALL, 34, "10 0 0 90 0 0 0 90 0 90 0 0 0 0"), 34, "14 values", id="short-line"),
    pytest.param(_replace_line(SMALL, 33, "1 2 3 0 0 0 0 0 0 0 0 0 0 0 0 0"), 33, "16 values", id="long-line"),
    pytest.param(SMALL.replace("CHANNELS 3 Xrotation", "CHANNELS 3 Wrotation"), 13, "unknown channel 'Wrotation'",
                 id="unknown-channel"),
    pytest.param(SMALL.replace("CHANNELS 3 Yrotation Xrotation Zrotation", "CHANNELS 4 Yrotation Xrotation Zrotation"),
                 24, "declares 4 channels but lists 3", id="channel-count"),
    pytest.param(_replace_line(SMALL, 19, None), 29, "unbalanced braces: ROOT 'Hips' opened at line 2",
                 id="missing-close-brace"),
    pytest.param(_replace_line(SMALL, 29, "}\n}"), 30, "unbalanced braces: this '}' closes no block",
                 id="extra-close-brace"),
    pytest.param(_replace_line(SMALL, 34, "10 0 0 90 0 0 nan 90 0 90 0 0 0 0 90"), 34, "'nan', not a finite",
                 id="nan-value"),
    pytest.param(_replace_line(SMALL, 33, "1 2 3 0 0 0 0 x 0 0 0 0 0 0 0"), 33, "'x' is not a number",
                 id="not-a-number"),
    pytest.param(SMALL.replace("OFFSET 0 5 0", "OFFSET 0 nan 0"), 12, "not a finite number", id="nan-offset"),
    pytest.param(SMALL.replace("Frame Time: 0.04", "Frame Time: -1"), 32, "frame time", id="bad-frame-time"),
    pytest.param(SMALL.replace("Frame Time: 0.04\n", ""), 32, "'Frame Time:'", id="no-frame-time"),
    pytest.param(SMALL.replace("HIERARCHY\n", ""), 1, "expected 'HIERARCHY'", id="no-hierarchy"),
    pytest.param(SMALL.replace("\t\tOFFSET 3 0 0\n", ""), 23, "needs OFFSET and CHANNELS", id="no-offset"),
    pytest.param(SMALL.replace("}\nMOTION", "}\njunk\nMOTION"), 30, "expected MOTION after the hierarchy, found 'junk'",
                 id="junk-before-motion"),
])
def test_malformed_files_name_the_file_and_line(tmp_path, text, line, match):
    path = write_text(tmp_path, text, name="bad file.bvh")
    with pytest.raises(BVHError, match=re.escape(f"{path}, line {line}: ") + ".*" + re.escape(match)):
        read_bvh(path)


def test_bvh_error_is_a_value_error():
    assert issubclass(BVHError, ValueError)
    assert set(CHANNEL_NAMES) == {f"{a}{k}" for a in "XYZ" for k in ("position", "rotation")}
