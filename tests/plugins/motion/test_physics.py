"""The kinematic physics projection: ground contact, foot skating, and its per-step schedule.

Motions are procedural clips (a walk with a turn, a jump) turned into HumanML3D features, then
spoiled by hand: lifted or sunk by 5 cm (every height channel moved), or given a horizontal
slide on the root's velocity while a foot is planted. The projection is translation-invariant
in height and removes any common slide of the planted feet, so the projection of the spoiled
motion must equal the projection of the clean one, with the feet on the floor and the planted
feet still.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from polydiff_motion.features import (  # noqa: E402
    FEATURE_DIM,
    FOOT_CONTACT,
    RIC,
    ROOT_LIN_VEL,
    ROOT_Y,
    VEL,
    features_to_positions,
    features_to_root,
    positions_to_features,
)
from polydiff_motion.metrics import foot_skate, penetration  # noqa: E402
from polydiff_motion.physics import PhysicsProjection, project_features  # noqa: E402
from polydiff_motion.procedural import FPS, compose  # noqa: E402
from polydiff_motion.skeleton import FOOT_JOINTS, rotation_y  # noqa: E402

FEET = list(FOOT_JOINTS)


@pytest.fixture(scope="module")
def walk() -> torch.Tensor:
    clip = compose([("walk", {"duration": 2.0, "speed": 1.2}), ("turn", {"side": "left", "angle": 90})], seed=3)
    return torch.from_numpy(positions_to_features(clip.positions, FPS, rotations=clip.rotations)).double()


@pytest.fixture(scope="module")
def jump() -> torch.Tensor:
    clip = compose([("jump", {"height": 0.3, "count": 1})], seed=4)
    return torch.from_numpy(positions_to_features(clip.positions, FPS, rotations=clip.rotations)).double()


def _shift_height(features: torch.Tensor, dy: float) -> torch.Tensor:
    out = features.clone()
    out[..., ROOT_Y] += dy
    ric = out[..., RIC].reshape(*out.shape[:-1], 21, 3).clone()
    ric[..., 1] += dy
    out[..., RIC] = ric.reshape(*out.shape[:-1], 63)
    return out


def _planted(features: torch.Tensor) -> torch.Tensor:
    return features[..., FOOT_CONTACT] > 0.5


def _planted_slide(features: torch.Tensor) -> torch.Tensor:
    """Per step t -> t+1 with a planted foot joint: the mean horizontal slide of the planted joints (m)."""
    p = features_to_positions(features)[:, FEET][..., [0, 2]]
    step = p[1:] - p[:-1]  # (T-1, 4, 2)
    gate = _planted(features)[:-1].to(step.dtype)
    count = gate.sum(-1)
    mean = (step * gate[..., None]).sum(-2) / count.clamp_min(1)[..., None]
    return mean[count > 0]


def _slide(features: torch.Tensor, speed: float = 0.03) -> torch.Tensor:
    """Add a horizontal slide (metres per frame, sideways in the facing frame) to every step
    that starts on a frame with a planted foot joint."""
    out = features.clone()
    gate = _planted(features).any(-1)
    gate[-1] = False
    out[gate, ROOT_LIN_VEL.start] += speed
    return out


def test_the_clip_has_planted_feet_and_stands_on_the_floor(walk):
    planted = _planted(walk)
    assert planted.any(-1).float().mean() > 0.5
    heights = features_to_positions(walk)[..., 1]
    assert abs(float(heights.min())) < 1e-6


@pytest.mark.parametrize("dy", [0.05, -0.05])
def test_lifted_or_sunk_motion_comes_back_to_the_floor(walk, dy):
    spoiled = _shift_height(walk, dy)
    before = features_to_positions(spoiled)[..., 1]
    assert abs(float(before.min()) - dy) < 1e-6
    out = project_features(spoiled, height_sigma=0.0, skating=False)
    heights = features_to_positions(out)[..., 1]
    supported = _planted(walk).any(-1)
    # On every frame with a planted foot joint, the lowest joint rests on the floor.
    assert torch.allclose(heights[supported].min(-1).values, torch.zeros(int(supported.sum()), dtype=heights.dtype),
                          atol=1e-9)
    assert float(heights.min()) > -1e-9
    assert penetration(features_to_positions(out).numpy()).max < 1e-9
    # Only heights changed: horizontal positions as before.
    assert torch.allclose(features_to_positions(out)[..., [0, 2]], features_to_positions(walk)[..., [0, 2]])


def test_smoothed_ground_correction_leaves_no_penetration(walk):
    sunk = _shift_height(walk, -0.05)
    assert penetration(features_to_positions(sunk).numpy()).max > 0.049
    out = project_features(sunk)
    positions = features_to_positions(out).numpy()
    assert penetration(positions).max < 1e-9
    supported = _planted(walk).any(-1).numpy()
    assert np.abs(positions[supported][..., 1].min(-1)).mean() < 0.01


def test_sunk_motion_projects_like_the_clean_one(walk):
    out = project_features(_shift_height(walk, -0.05), height_sigma=0.0)
    assert torch.allclose(out, project_features(walk, height_sigma=0.0), atol=1e-9)


def test_lifted_motion_projects_like_the_clean_one(walk):
    assert (~_planted(walk).any(-1)).sum() >= 1  # the walk-to-turn blend has a frame without contact labels
    out = project_features(_shift_height(walk, 0.05), height_sigma=0.0)
    assert torch.allclose(out, project_features(walk, height_sigma=0.0), atol=1e-6)


def test_contact_less_frames_are_not_pulled_down(jump):
    planted = _planted(jump).any(-1)
    assert not planted.all()
    out = project_features(jump, height_sigma=0.0, skating=False)
    heights = features_to_positions(out)[..., 1].min(-1).values
    before = features_to_positions(jump)[..., 1].min(-1).values
    assert torch.allclose(heights[~planted], before[~planted])


def test_jump_apex_stays_in_the_air(jump):
    before = features_to_positions(jump)[..., 1].min(-1).values
    assert float(before.max()) > 0.29
    after = features_to_positions(project_features(jump))[..., 1].min(-1).values
    assert float(after.max()) > 0.25


def test_sliding_planted_feet_are_stopped(walk):
    slid = _slide(walk)
    before = _planted_slide(slid).norm(dim=-1)
    assert float(before.mean()) > 0.025
    out = project_features(slid, ground=False)
    after = _planted_slide(out).norm(dim=-1)
    assert float(after.max()) < 1e-9
    # The projection removes the planted feet's common slide, whatever it was: the slid motion
    # and the clean one project to the same motion.
    assert torch.allclose(features_to_positions(out), features_to_positions(project_features(walk, ground=False)),
                          atol=1e-9)
    skate_before = foot_skate(features_to_positions(slid).numpy(), FPS)
    skate_after = foot_skate(features_to_positions(out).numpy(), FPS)
    assert skate_after.ratio < skate_before.ratio
    assert skate_after.speed < skate_before.speed - 0.3  # the slide added 0.6 m/s


def test_projection_keeps_the_features_consistent(walk):
    """Joint velocity channels stay the facing-frame differences of the recovered positions."""
    spoiled = _shift_height(walk, 0.04)
    out = project_features(spoiled)
    assert not torch.allclose(out[:, ROOT_LIN_VEL], walk[:, ROOT_LIN_VEL])  # the walk's own small slides
    positions = features_to_positions(out)
    _, heading = features_to_root(out)
    step = positions[1:] - positions[:-1]
    local = (rotation_y(-heading[:-1])[:, None] @ step[..., None])[..., 0]
    vel = out[:-1, VEL].reshape(-1, 22, 3)
    assert torch.allclose(vel, local, atol=1e-6)
    assert torch.equal(out[:, FOOT_CONTACT], spoiled[:, FOOT_CONTACT])


def test_batches_padding_and_dtype(walk, jump):
    frames = min(len(walk), len(jump))
    spoiled = torch.stack((_shift_height(_slide(walk[:frames]), 0.05), _shift_height(jump[:frames], -0.05))).float()
    mask = torch.ones(2, frames, dtype=torch.bool)
    mask[1, frames - 10:] = False
    out = project_features(spoiled, mask)
    assert out.shape == spoiled.shape and out.dtype == torch.float32
    assert torch.equal(out[1, frames - 10:], spoiled[1, frames - 10:])  # padding untouched
    single = project_features(spoiled[0])
    assert single.shape == (frames, FEATURE_DIM)
    assert torch.allclose(single, out[0], atol=1e-6)
    alone = project_features(spoiled[1, : frames - 10])
    assert torch.allclose(alone, out[1, : frames - 10], atol=1e-5)
    assert torch.equal(project_features(spoiled[1], mask[1]), out[1])
    assert not torch.equal(out[0], spoiled[0])


def test_projection_does_not_modify_its_input(walk):
    spoiled = _shift_height(walk, 0.05)
    copy = spoiled.clone()
    project_features(spoiled)
    assert torch.equal(spoiled, copy)


def test_projection_is_idempotent(walk, jump):
    once = project_features(_shift_height(_slide(walk), 0.05))
    twice = project_features(once)
    p1, p2 = features_to_positions(once), features_to_positions(twice)
    assert float((p1 - p2).abs().max()) < 0.01  # the smoothed height correction is not quite idempotent
    for motion in (walk, jump):
        exact = project_features(_shift_height(_slide(motion), 0.05), height_sigma=0.0)
        assert torch.allclose(project_features(exact, height_sigma=0.0), exact, atol=1e-8)


def test_projection_checks_its_input():
    with pytest.raises(ValueError, match=r"\(B, T, 263\) or \(T, 263\)"):
        project_features(torch.zeros(5, 100))
    bad = torch.zeros(5, FEATURE_DIM)
    bad[2, 7] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        project_features(bad)
    with pytest.raises(ValueError, match=r"mask must have shape \(1, 5\)"):
        project_features(torch.zeros(5, FEATURE_DIM), torch.ones(4, dtype=torch.bool))


# --- the per-step callback -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "start, every, expected",
    [
        (0.5, 1, [5, 6, 7, 8, 9]),
        (0.5, 3, [5, 8, 9]),
        (0.0, 4, [0, 4, 8, 9]),
        (1.0, 1, [9]),
        (0.0, 1, list(range(10))),
        (0.34, 2, [3, 5, 7, 9]),
    ],
)
def test_projection_schedule(start, every, expected):
    projection = PhysicsProjection(lambda f: f, lambda f: f, start=start, every=every)
    assert [i for i in range(10) if projection.active(i, 10)] == expected


def test_projection_schedule_checks_its_arguments():
    with pytest.raises(ValueError, match="start must lie in"):
        PhysicsProjection(lambda f: f, lambda f: f, start=1.5)
    with pytest.raises(ValueError, match="every must be at least 1"):
        PhysicsProjection(lambda f: f, lambda f: f, every=0)


def test_projection_callback_works_in_normalised_units(walk):
    mean, std = 0.3, 2.0
    projection = PhysicsProjection(lambda f: (f - mean) / std, lambda f: f * std + mean, start=0.5,
                                   height_sigma=0.0, skating=False)
    spoiled = _shift_height(walk, 0.05).float()[None]
    denoised = (spoiled - mean) / std
    info = SimpleNamespace(index=2, steps=10, denoised=denoised)
    assert projection(info) is None and projection.calls == 0
    info.index = 7
    out = projection(info)
    assert projection.calls == 1 and out.dtype == torch.float32
    expected = project_features(spoiled, height_sigma=0.0, skating=False)
    assert torch.allclose(out * std + mean, expected, atol=1e-5)
