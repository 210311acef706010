"""Tests of the Push-T wrapper (corners, exact state, clipping) and of the scripted expert."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("gym_pusht")

from polydiff_policy.pusht import GOAL_POSE, PushT, agent_rollout, block_corners  # noqa: E402


@pytest.fixture
def env():
    env = PushT()
    yield env
    env.close()


def _gym_env():
    import gymnasium as gym
    import gym_pusht  # noqa: F401

    from polydiff_policy.pusht import ENV_ID

    return gym.make(ENV_ID, obs_type="environment_state_agent_pos").unwrapped


def test_block_corners_by_hand():
    # At angle 0 the corners are the T's local vertices shifted by the position.
    corners = block_corners(np.array([100.0, 200.0, 0.0])).reshape(8, 2)
    assert np.allclose(corners[[0, 1, 6, 7]], [[40, 200], [160, 200], [115, 320], [85, 320]])
    # A quarter turn maps local (x, y) to (-y, x).
    turned = block_corners(0.0, 0.0, math.pi / 2).reshape(8, 2)
    assert np.allclose(turned[6], [-120.0, 15.0])
    # Vectorised over leading axes, and the three-argument form agrees with the pose form.
    poses = np.random.default_rng(0).uniform(0, 6, size=(4, 5, 3))
    assert block_corners(poses).shape == (4, 5, 16)
    assert np.array_equal(block_corners(poses), block_corners(poses[..., 0], poses[..., 1], poses[..., 2]))
    with pytest.raises(ValueError):
        block_corners(np.zeros(2))


def test_corners_match_environment_state_after_reset_and_steps(env):
    ref = _gym_env()
    rng = np.random.default_rng(1)
    for seed in (0, 5):
        obs = env.reset(seed=seed)
        raw, _ = ref.reset(seed=seed)
        assert np.allclose(obs["environment_state"], raw["environment_state"], atol=1e-9)
        for _ in range(30):
            action = obs["block_pose"][:2] + rng.normal(0.0, 40.0, 2)
            obs, *_ = env.step(action)
            raw, *_ = ref.step(np.clip(action, 10, 502))
            assert np.allclose(obs["environment_state"], raw["environment_state"], atol=1e-9)
            assert np.allclose(obs["agent_pos"], raw["agent_pos"])
    assert 0.0 <= obs["block_pose"][2] < 2 * math.pi
    ref.close()


def test_set_state_clone_continues_identically(env):
    obs = env.reset(seed=11)
    push_point = obs["block_pose"][:2] + [0.0, 45.0]  # the block's centre of gravity at angle 0
    for _ in range(5):
        obs, *_ = env.step(push_point)
    clone = PushT()
    clone.reset(seed=0)
    clone.set_state(env.get_state())
    assert np.array_equal(clone.get_state(), env.get_state())
    start = obs["block_pose"].copy()
    for k in range(20):
        action = push_point + 25.0 * np.array([math.cos(k), math.sin(k)])
        a, *_ = env.step(action)
        b, *_ = clone.step(action)
        assert np.abs(a["environment_state"] - b["environment_state"]).max() < 0.05
    assert np.linalg.norm(a["block_pose"][:2] - start[:2]) > 5.0  # the steps did push the block
    clone.close()


def test_advance_matches_step(env):
    env.reset(seed=7)
    sim = PushT()
    sim.reset(seed=0)
    start = env.get_state()
    rng = np.random.default_rng(2)
    targets = np.clip(start[4:6] + np.cumsum(rng.normal(0.0, 15.0, (25, 2)), axis=0), 10, 502)
    for t in targets:
        env.step(t)
    positions, velocities = agent_rollout(start[:2], start[2:4], targets)
    sim.set_state(start)
    for v in velocities:
        sim.advance(v)
    assert np.array_equal(sim.get_state(), env.get_state())
    assert np.array_equal(positions[-1, -1], env.get_state()[:2])
    sim.close()


def test_actions_are_clipped_and_checked(env):
    env.reset(seed=0)
    _, _, _, info = env.step([-100.0, 900.0])
    assert np.array_equal(info["action"], [10.0, 502.0])
    for _ in range(30):
        obs, *_ = env.step([-100.0, 900.0])
    assert np.all(obs["agent_pos"] >= 9.0) and np.all(obs["agent_pos"] <= 503.0)
    with pytest.raises(ValueError):
        env.step([np.nan, 1.0])
    with pytest.raises(RuntimeError):
        PushT().step([1.0, 1.0])


def test_goal_pose_has_full_coverage_and_step_limit(env):
    env.reset(seed=0)
    state = env.get_state()
    state[4:10] = [*GOAL_POSE[:2], GOAL_POSE[2], 0.0, 0.0, 0.0]
    state[:4] = [50.0, 50.0, 0.0, 0.0]
    env.set_state(state)
    assert env.coverage == pytest.approx(1.0)
    _, reward, done, info = env.step([50.0, 50.0])
    assert done and info["success"] and reward == 1.0

    short = PushT(max_steps=3)
    short.reset(seed=0)
    dones = [short.step([50.0, 50.0])[2] for _ in range(3)]
    assert dones == [False, False, True]
    short.close()


def test_expert_episode_succeeds_with_consistent_arrays():
    from polydiff_policy.expert import run_expert_episode

    episode = run_expert_episode(3)
    n = len(episode)
    assert episode.success and episode.max_coverage > 0.95 and episode.seed == 3
    assert 0 < n <= 300
    assert episode.actions.shape == (n, 2) and episode.actions.dtype == np.float32
    assert episode.rewards.shape == (n,)
    shapes = {k: v.shape for k, v in episode.observations.items()}
    assert shapes == {"agent_pos": (n, 2), "environment_state": (n, 16), "block_pose": (n, 3)}
    assert np.all((episode.actions >= 10) & (episode.actions <= 502))
    assert np.linalg.norm(np.diff(episode.actions, axis=0), axis=1).max() < 60.0
    # Observation t is the state before action t: corners and pose agree frame by frame.
    corners = block_corners(episode.observations["block_pose"].astype(np.float64))
    assert np.allclose(corners, episode.observations["environment_state"], atol=1e-3)
    # Deterministic given the seeds.
    again = run_expert_episode(3)
    assert np.array_equal(again.actions, episode.actions)
