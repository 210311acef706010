"""The SMPL 22-joint tree, rotation conversions and kinematics.

Conversions are checked by round trips and against rotations written out by hand; forward
kinematics against poses whose joint positions can be worked out on paper.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from polydiff_motion.skeleton import (  # noqa: E402
    BODY_PARTS,
    FACE_JOINTS,
    FOOT_JOINTS,
    SMPL22,
    SMPL22_NAMES,
    SMPL22_PARENTS,
    Skeleton,
    axis_angle_to_matrix,
    check_joint_names,
    forward_kinematics,
    inverse_kinematics,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    quaternion_to_matrix,
    rotation_6d_to_matrix,
    rotation_y,
)

F64 = torch.float64


def random_rotations(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return quaternion_to_matrix(torch.randn(*shape, 4, generator=g, dtype=F64))


# --- the tree -----------------------------------------------------------------------------------
def test_smpl22_tree_is_humanml3d():
    assert SMPL22.names == SMPL22_NAMES and len(SMPL22_NAMES) == 22
    assert SMPL22.parents == (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)
    assert SMPL22.parents == SMPL22_PARENTS
    assert SMPL22.children(9) == (12, 13, 14) and SMPL22.children(20) == ()
    assert SMPL22.index("head") == 15


def test_rest_pose_is_an_upright_adult_facing_plus_z_with_left_at_plus_x():
    rest = SMPL22.rest_positions()
    names = {n: rest[i] for i, n in enumerate(SMPL22_NAMES)}
    assert 1.5 < names["head"][1] < 1.8
    assert 0.0 <= rest[:, 1].min() < 0.05 and rest[:, 1].argmin() in (10, 11)
    assert names["left_hip"][0] > 0 > names["right_hip"][0]
    assert names["left_foot"][2] > names["left_ankle"][2]  # toes point forward
    for i, n in enumerate(SMPL22_NAMES):  # mirror symmetric
        if n.startswith("left_"):
            mirror = rest[SMPL22_NAMES.index("right_" + n[5:])]
            np.testing.assert_allclose(rest[i] * [-1, 1, 1], mirror)
    arm_span = names["left_wrist"][0] - names["right_wrist"][0]
    assert 1.2 < arm_span < 1.6
    assert not SMPL22.offsets.flags.writeable


def test_body_parts_and_foot_joints():
    assert sorted(BODY_PARTS["upper_body"] + BODY_PARTS["lower_body"]) == list(range(22))
    for side in ("left", "right"):
        assert all(SMPL22_NAMES[j].startswith(side) for j in BODY_PARTS[f"{side}_arm"] + BODY_PARTS[f"{side}_leg"])
    assert [SMPL22_NAMES[j] for j in BODY_PARTS["head"]] == ["neck", "head"]
    assert set(BODY_PARTS) == {"upper_body", "lower_body", "left_arm", "right_arm", "left_leg", "right_leg", "torso",
                               "head"}
    assert [SMPL22_NAMES[j] for j in FOOT_JOINTS] == ["left_ankle", "left_foot", "right_ankle", "right_foot"]
    assert [SMPL22_NAMES[j] for j in FACE_JOINTS] == ["right_hip", "left_hip", "right_shoulder", "left_shoulder"]


def test_skeleton_rejects_inconsistent_definitions():
    with pytest.raises(ValueError, match="one name, parent"):
        Skeleton(("a", "b"), (-1, 0), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="earlier joint"):
        Skeleton(("a", "b"), (-1, 1), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="unique"):
        Skeleton(("a", "a"), (-1, 0), np.zeros((2, 3)))


def test_check_joint_names_maps_a_reordering_and_names_the_source():
    names = list(reversed(SMPL22_NAMES))
    assert check_joint_names(names, "clip.npz") == tuple(range(21, -1, -1))
    with pytest.raises(ValueError, match=r"clip\.npz.*unknown joint name.*'jaw'.*valid names: pelvis"):
        check_joint_names([*SMPL22_NAMES[:-1], "jaw"], "clip.npz")
    with pytest.raises(ValueError, match=r"mocap\.bvh: expected 22 joints, got 21; missing: right_wrist"):
        check_joint_names(SMPL22_NAMES[:-1], "mocap.bvh")
    with pytest.raises(ValueError, match=r"src: .*more than once: 'head'"):
        check_joint_names([*SMPL22_NAMES, "head"], "src")
    assert check_joint_names(["head", "pelvis"], "src", subset=True) == (15, 0)


# --- rotations ----------------------------------------------------------------------------------
def test_rotation_y_by_hand():
    np.testing.assert_allclose(rotation_y(torch.tensor(math.pi / 2, dtype=F64)) @ torch.tensor([0, 0, 1.0], dtype=F64),
                               [1, 0, 0], atol=1e-15)
    angles = torch.linspace(-3, 3, 7, dtype=F64)
    axis_angle = torch.stack((torch.zeros_like(angles), angles, torch.zeros_like(angles)), -1)
    torch.testing.assert_close(rotation_y(angles), axis_angle_to_matrix(axis_angle))


def test_quaternion_conversions_by_hand_and_round_trip():
    s = math.sqrt(0.5)
    quarter_z = quaternion_to_matrix(torch.tensor([s, 0, 0, s], dtype=F64))
    torch.testing.assert_close(quarter_z, torch.tensor([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]], dtype=F64))
    rotations = random_rotations(500)
    q = matrix_to_quaternion(rotations)
    assert (q[:, 0] >= 0).all()
    torch.testing.assert_close(quaternion_to_matrix(q), rotations)
    half_turns = torch.diag_embed(torch.tensor([[1, -1, -1], [-1, 1, -1], [-1, -1, 1.0]], dtype=F64))
    torch.testing.assert_close(quaternion_to_matrix(matrix_to_quaternion(half_turns)), half_turns)


def test_6d_round_trip_and_gram_schmidt():
    rotations = random_rotations(3, 22)
    d6 = matrix_to_rotation_6d(rotations)
    assert d6.shape == (3, 22, 6)
    torch.testing.assert_close(d6[..., :3], rotations[..., :, 0])  # columns, as HumanML3D
    torch.testing.assert_close(rotation_6d_to_matrix(d6), rotations)
    # Any two independent vectors give a proper rotation.
    r = rotation_6d_to_matrix(torch.randn(100, 6, generator=torch.Generator().manual_seed(1), dtype=F64))
    torch.testing.assert_close(r @ r.transpose(-1, -2), torch.eye(3, dtype=F64).expand(100, 3, 3))
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(100, dtype=F64))


def test_axis_angle_round_trip_and_small_angles():
    g = torch.Generator().manual_seed(2)
    axis = torch.nn.functional.normalize(torch.randn(200, 3, generator=g, dtype=F64), dim=-1)
    angle = torch.rand(200, 1, generator=g, dtype=F64) * (math.pi - 1e-3)
    angle[:5] = torch.tensor([[0.0], [1e-9], [1e-5], [1e-3], [0.5]], dtype=F64)
    aa = axis * angle
    torch.testing.assert_close(matrix_to_axis_angle(axis_angle_to_matrix(aa)), aa)
    torch.testing.assert_close(axis_angle_to_matrix(torch.zeros(3, dtype=F64)), torch.eye(3, dtype=F64))
    torch.testing.assert_close(axis_angle_to_matrix(torch.tensor([0, 0, math.pi / 2], dtype=F64)),
                               torch.tensor([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]], dtype=F64))


# --- kinematics ---------------------------------------------------------------------------------
def test_identity_rotations_give_the_rest_pose():
    eye = torch.eye(3, dtype=F64).expand(22, 3, 3)
    np.testing.assert_allclose(forward_kinematics(eye).numpy(), SMPL22.rest_positions())
    moved = forward_kinematics(eye, torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    np.testing.assert_allclose(moved.numpy(), SMPL22.rest_positions() - SMPL22.offsets[0] + [1, 2, 3])


def test_lowering_the_left_arm_by_hand():
    rotations = torch.eye(3, dtype=F64).repeat(22, 1, 1)
    rotations[16] = axis_angle_to_matrix(torch.tensor([0, 0, -math.pi / 2], dtype=F64))  # left shoulder
    p = forward_kinematics(rotations).numpy()
    rest = SMPL22.rest_positions()
    np.testing.assert_allclose(p[:16], rest[:16])
    np.testing.assert_allclose(p[18], rest[16] + [0, -0.26, -0.02], atol=1e-12)
    np.testing.assert_allclose(p[20], rest[16] + [0, -0.515, -0.02], atol=1e-12)
    np.testing.assert_allclose(p[21], rest[21])


def test_forward_kinematics_batches_and_accepts_6d():
    rotations = random_rotations(4, 5, 22)
    root = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    p = forward_kinematics(rotations, root)
    assert p.shape == (4, 5, 22, 3)
    torch.testing.assert_close(p[..., 0, :], root)
    torch.testing.assert_close(forward_kinematics(matrix_to_rotation_6d(rotations), root, representation="6d"), p)
    torch.testing.assert_close(p[2, 3], forward_kinematics(rotations[2, 3], root[2, 3]))
    with pytest.raises(ValueError, match="representation must be one of 'matrix', '6d'"):
        forward_kinematics(rotations, root, representation="quaternion")
    with pytest.raises(ValueError, match="22 joints"):
        forward_kinematics(rotations[..., :21, :, :], root)


def test_inverse_kinematics_reproduces_positions_of_the_same_skeleton():
    rotations = random_rotations(6, 22, seed=4)
    root = torch.randn(6, 3, generator=torch.Generator().manual_seed(5), dtype=F64)
    p = forward_kinematics(rotations, root)
    local = inverse_kinematics(p)
    assert local.shape == (6, 22, 3, 3)
    torch.testing.assert_close(forward_kinematics(local, root), p)
    # Multi-child joints are fully determined; leaves carry no rotation.
    torch.testing.assert_close(local[:, 0], rotations[:, 0])
    torch.testing.assert_close(local[:, 20], torch.eye(3, dtype=F64).expand(6, 3, 3))
    rest = torch.as_tensor(SMPL22.rest_positions())
    torch.testing.assert_close(inverse_kinematics(rest), torch.eye(3, dtype=F64).expand(22, 3, 3))


def test_inverse_kinematics_handles_a_bone_reversed_from_rest():
    rest = torch.as_tensor(SMPL22.rest_positions()).clone()
    rest[18] = rest[16] - (rest[18] - rest[16])  # left elbow folded back through the shoulder
    local = inverse_kinematics(rest)
    assert torch.isfinite(local).all()
    p = forward_kinematics(local, rest[0])
    torch.testing.assert_close(p[18], rest[18])
