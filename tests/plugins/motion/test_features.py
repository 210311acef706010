"""HumanML3D's 263-d features: round trips, motions whose features are known by hand, contacts.

Motions are posed with the SMPL22 rest skeleton, moved and turned as a rigid body, so their root
velocities and headings are known exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from polydiff_motion.features import (  # noqa: E402
    FEATURE_DIM,
    FOOT_CONTACT,
    RIC,
    ROOT_LIN_VEL,
    ROOT_ROT_VEL,
    ROOT_Y,
    ROT,
    VEL,
    FeatureStats,
    canonicalize,
    features_to_positions,
    features_to_root,
    foot_contacts,
    positions_to_features,
)
from polydiff_motion.skeleton import (  # noqa: E402
    SMPL22,
    axis_angle_to_matrix,
    forward_kinematics,
    matrix_to_rotation_6d,
    rotation_y,
)

REST = SMPL22.rest_positions()
PELVIS = REST[0]


def rigid_motion(headings: np.ndarray, roots: np.ndarray) -> np.ndarray:
    """The rest pose turned to each heading (from +Z towards +X) about its pelvis, pelvis at roots."""
    turn = rotation_y(torch.as_tensor(headings)).numpy()  # (T, 3, 3)
    return np.einsum("tij,kj->tki", turn, REST - PELVIS) + roots[:, None]


def random_motion(frames: int = 40, seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    aa = 0.3 * torch.randn(frames, 22, 3, generator=g, dtype=torch.float64)
    # A steady turn of 0.2 rad per frame takes the heading through ±180° several times.
    aa[:, 0] = torch.stack((torch.zeros(frames), 0.2 * torch.arange(frames), torch.zeros(frames)), -1)
    rotations = axis_angle_to_matrix(aa)
    root = torch.cumsum(0.05 * torch.randn(frames, 3, generator=g, dtype=torch.float64), 0)
    return forward_kinematics(rotations, root + torch.tensor([2.0, 0.9, -1.0], dtype=torch.float64)).numpy(), rotations


def test_blocks_add_up_to_263():
    sizes = [s.stop - s.start for s in (ROOT_ROT_VEL, ROOT_LIN_VEL, ROOT_Y, RIC, ROT, VEL, FOOT_CONTACT)]
    assert sizes == [1, 2, 1, 63, 126, 66, 4] and sum(sizes) == FEATURE_DIM == 263


@pytest.mark.parametrize("forward_sigma", [0.0, 20.0])
def test_round_trip_recovers_canonical_positions(forward_sigma):
    positions, _ = random_motion()
    features = positions_to_features(positions, forward_sigma=forward_sigma)
    assert features.shape == (39, 263) and features.dtype == np.float32
    recovered = features_to_positions(features.astype(np.float64))
    assert recovered.shape == (39, 22, 3) and recovered.dtype == np.float64
    np.testing.assert_allclose(recovered, canonicalize(positions, forward_sigma=forward_sigma)[:-1], atol=2e-5)


def test_canonical_frame():
    positions, _ = random_motion()
    c = canonicalize(positions, forward_sigma=0.0)
    assert c[:, :, 1].min() == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(c[0, 0, [0, 2]], 0.0, atol=1e-12)
    across = c[0, 2] - c[0, 1] + c[0, 17] - c[0, 16]  # right minus left: -X when facing +Z
    assert across[2] == pytest.approx(0.0, abs=1e-12) and across[0] < 0
    # Bone lengths and relative layout are untouched.
    np.testing.assert_allclose(np.linalg.norm(c[:, 18] - c[:, 16], axis=-1), 0.26 * np.sqrt(1 + (0.02 / 0.26) ** 2))


def test_batched_torch_recovery_is_differentiable():
    positions, _ = random_motion(12)
    features = torch.as_tensor(positions_to_features(positions)).repeat(3, 1, 1).requires_grad_()
    recovered = features_to_positions(features)
    assert isinstance(recovered, torch.Tensor) and recovered.shape == (3, 11, 22, 3)
    recovered.sum().backward()
    assert torch.isfinite(features.grad).all()


def test_walking_straight_at_constant_speed():
    frames, speed, heading = 25, 0.07, 2.5  # facing away from +Z, beyond 90°
    direction = np.array([math.sin(heading), 0.0, math.cos(heading)])
    roots = PELVIS + np.arange(frames)[:, None] * speed * direction + [3.0, 0.2, 1.0]
    features = positions_to_features(rigid_motion(np.full(frames, heading), roots))
    np.testing.assert_allclose(features[:, ROOT_ROT_VEL], 0.0, atol=1e-6)
    np.testing.assert_allclose(features[:, ROOT_LIN_VEL], np.tile([0.0, speed], (frames - 1, 1)), atol=1e-6)
    np.testing.assert_allclose(features[:, ROOT_Y], PELVIS[1] - REST[:, 1].min(), atol=1e-6)
    # A rigid body in its own facing frame: the same pose every frame, every joint moving forward.
    np.testing.assert_allclose(features[:, RIC], np.tile(features[0, RIC], (frames - 1, 1)), atol=1e-6)
    forward = np.broadcast_to([0.0, 0.0, speed], (frames - 1, 22, 3))
    np.testing.assert_allclose(features[:, VEL].reshape(-1, 22, 3), forward, atol=1e-6)
    np.testing.assert_allclose(features[:, ROT], np.tile(matrix_to_rotation_6d(torch.eye(3)).numpy(), (frames - 1, 21)),
                               atol=1e-6)


def test_turning_in_place_at_constant_rate():
    frames, rate = 40, 0.3  # 12 rad in all: the heading wraps through ±180° twice
    headings = rate * np.arange(frames) + 1.0
    features = positions_to_features(rigid_motion(headings, np.tile(PELVIS, (frames, 1))), forward_sigma=0.0)
    # HumanML3D stores half the per-frame yaw change, with the sign of a turn from +X towards +Z.
    np.testing.assert_allclose(features[:, ROOT_ROT_VEL], -rate / 2, atol=1e-6)
    np.testing.assert_allclose(features[:, ROOT_LIN_VEL], 0.0, atol=1e-6)
    root, heading = features_to_root(features.astype(np.float64))
    np.testing.assert_allclose(heading, rate * np.arange(frames - 1), atol=1e-5)
    np.testing.assert_allclose(root[:, [0, 2]], 0.0, atol=1e-6)


def test_foot_contacts_planted_and_swinging():
    frames = 6
    positions = np.tile(REST, (frames, 1, 1))
    positions[:, [8, 11], 2] += 0.1 * np.arange(frames)[:, None]  # right foot swings forward at 2 m/s
    contacts = foot_contacts(positions)
    np.testing.assert_array_equal(contacts, np.tile([1.0, 1.0, 0.0, 0.0], (frames - 1, 1)))
    np.testing.assert_array_equal(positions_to_features(positions)[:, FOOT_CONTACT], contacts)
    # The threshold is a speed: 3 cm per frame is a slide at 20 fps but a step at 60 fps.
    slow = np.tile(REST, (frames, 1, 1))
    slow[:, [7, 10], 0] += 0.03 * np.arange(frames)[:, None]
    assert foot_contacts(slow, fps=20.0)[:, :2].all() and not foot_contacts(slow, fps=60.0)[:, :2].any()
    # A still foot held in the air is in contact by speed alone, not with a height test.
    lifted = np.tile(REST, (frames, 1, 1))
    lifted[:, [7, 10], 1] += 0.5
    assert foot_contacts(lifted)[:, :2].all()
    np.testing.assert_array_equal(foot_contacts(lifted, height_threshold=0.15),
                                  np.tile([0.0, 0.0, 1.0, 1.0], (frames - 1, 1)))


def test_given_rotations_fill_the_rotation_block():
    positions, rotations = random_motion(10)
    features = positions_to_features(positions, rotations=rotations.numpy())
    np.testing.assert_allclose(features[:, ROT], matrix_to_rotation_6d(rotations[:-1, 1:]).reshape(9, -1).numpy(),
                               atol=1e-6)
    # Inverse kinematics finds other rotations (no twist) but the same bone directions.
    solved = positions_to_features(positions)
    np.testing.assert_allclose(solved[:, :ROT.start], features[:, :ROT.start], atol=1e-6)
    with pytest.raises(ValueError, match=r"rotations must have shape \(10, 22, 3, 3\)"):
        positions_to_features(positions, rotations=rotations[:, :21].numpy())


def test_errors_name_the_problem():
    positions, _ = random_motion(5)
    with pytest.raises(ValueError, match=r"shape \(T, 22, 3\); got \(5, 21, 3\)"):
        positions_to_features(positions[:, :21])
    with pytest.raises(ValueError, match="at least 2 frames; got 1"):
        positions_to_features(positions[:1])
    bad = positions.copy()
    bad[2, 3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        positions_to_features(bad)
    with pytest.raises(ValueError, match=r"\(\.\.\., T >= 1, 263\); got \(4, 262\)"):
        features_to_positions(np.zeros((4, 262)))
    with pytest.raises(ValueError, match="NaN"):
        features_to_positions(np.full((4, 263), np.nan))


def test_feature_stats_follow_humanml3d_grouping(tmp_path):
    g = np.random.default_rng(0)
    sequences = [g.normal(size=(30, 263)) * np.linspace(0.5, 2.0, 263) + 1.0, g.normal(size=(20, 263))]
    stats = FeatureStats.from_features(sequences, feat_bias=5.0)
    data = np.concatenate(sequences)
    np.testing.assert_allclose(stats.mean, data.mean(0))
    std = np.asarray(stats.std)
    np.testing.assert_allclose(std[ROOT_LIN_VEL], data.std(0)[ROOT_LIN_VEL].mean() / 5.0)
    np.testing.assert_allclose(std[RIC], data.std(0)[RIC].mean())
    np.testing.assert_allclose(std[FOOT_CONTACT], data.std(0)[FOOT_CONTACT].mean() / 5.0)
    x = sequences[1].astype(np.float32)
    np.testing.assert_allclose(stats.denormalize(stats.normalize(x)), x, atol=1e-5)
    t = torch.as_tensor(x)
    torch.testing.assert_close(stats.normalize(t), torch.as_tensor(stats.normalize(x)))
    stats.save(tmp_path / "stats.json")
    assert FeatureStats.load(tmp_path / "stats.json") == stats
    assert isinstance(stats.to_dict()["mean"], list) and isinstance(stats.to_dict()["std"][0], float)
    # A constant dimension gets a tiny positive std rather than zero.
    assert min(FeatureStats.from_features([np.zeros((3, 263))]).std) > 0
    with pytest.raises(ValueError, match="no feature rows"):
        FeatureStats.from_features([])
    with pytest.raises(ValueError, match=r"\(T, 263\)"):
        FeatureStats.from_features([np.zeros((3, 262))])
