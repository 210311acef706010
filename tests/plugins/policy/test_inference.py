"""ChunkRunner: observation history, receding horizon, and real-time iteration's warm starts.

Most tests drive the runner with a fake model that records every ``predict_chunk`` call and
returns chunks whose values give away which call and which action they are (call ``k``, action
``i``, dimension ``d``: ``100 k + 10 i + d``), so the executed actions, the warm starts and the
histories are checked against values worked out by hand. A real DiffusionPolicy with a
point-mass denoiser (it always predicts the same chunk) checks the runner end to end.
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from polydiff_policy.data import Normalizer  # noqa: E402
from polydiff_policy.inference import MODES, ChunkRunner  # noqa: E402
from polydiff_policy.module import DiffusionPolicy  # noqa: E402
from polydiff_policy.nets import PolicyDenoiser  # noqa: E402


class FakeModel:
    """What ChunkRunner needs of a policy, recording the calls; chunks are 100 k + 10 i + d."""

    def __init__(self, obs_horizon=2, horizon=8, action_horizon=3, action_dim=2, t_max=0.9, image_feature=None,
                 discrete=None, features=("agent_pos",)):
        self.obs_horizon, self.horizon = obs_horizon, horizon
        self.action_horizon, self.action_dim = action_horizon, action_dim
        self.schedule = SimpleNamespace(t_max=t_max)
        self.device = torch.device("cpu")
        self.info = {"obs_features": list(features), "image_feature": image_feature}
        self.calls: list[dict] = []
        # Values for discrete dimensions (sign alternating per call), to check the snapping.
        self.discrete = discrete or []

    def require_info(self):
        return self.info

    def chunk(self, k: int) -> torch.Tensor:
        i = torch.arange(self.horizon, dtype=torch.float32)[:, None]
        d = torch.arange(self.action_dim, dtype=torch.float32)[None, :]
        out = (100.0 * k + 10.0 * i + d)[None].clone()
        for dim in self.discrete:
            out[..., dim] = 0.4 * (-1) ** k * (1 + i[:, 0] / 100)
        return out

    def predict_chunk(self, obs, image=None, **kwargs):
        self.calls.append({"obs": obs.clone(), "image": None if image is None else image.clone(), **kwargs})
        return self.chunk(len(self.calls) - 1)

    def unnormalize_actions(self, actions):
        return actions * 2.0 + 1.0


def frame(t: int) -> dict:
    return {"agent_pos": np.array([t, -t], dtype=np.float64), "block_pose": np.array([7.0, 7.0, 7.0])}


def run(runner: ChunkRunner, steps: int, start: int = 0) -> np.ndarray:
    return np.stack([runner.act(frame(t)) for t in range(start, start + steps)])


# --- receding horizon -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["ddim", "ddpm", "rti"])
def test_a_new_chunk_every_action_horizon_steps_executing_from_the_current_frame(mode):
    model = FakeModel(obs_horizon=2, horizon=8, action_horizon=3)
    runner = ChunkRunner(model, mode, 2)
    actions = run(runner, 7)
    assert len(model.calls) == 3  # at steps 0, 3 and 6
    # Call k executes its actions 1, 2, 3 (obs_horizon - 1 on), unnormalised (x 2 + 1).
    expected = [[2 * (100 * k + 10 * i + d) + 1 for d in range(2)] for k, i in
                [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3), (2, 1)]]
    np.testing.assert_array_equal(actions, expected)
    assert len(runner.latencies) == 3 and all(x >= 0 for x in runner.latencies)


def test_action_horizon_override_and_a_longer_observation_horizon():
    model = FakeModel(obs_horizon=3, horizon=8, action_horizon=2)
    runner = ChunkRunner(model, "ddim", 2, action_horizon=5)  # at most 8 - 3 + 1 = 6
    actions = run(runner, 6)
    assert len(model.calls) == 2
    # Actions 2..6 of call 0, then action 2 of call 1.
    np.testing.assert_array_equal(actions[:, 0], [2 * (10 * i) + 1 for i in (2, 3, 4, 5, 6)] + [2 * 120 + 1])


def test_the_first_observation_fills_the_history():
    model = FakeModel(obs_horizon=3, horizon=8, action_horizon=2)
    runner = ChunkRunner(model, "ddim", 2)
    run(runner, 5)
    obs = [c["obs"] for c in model.calls]
    assert [tuple(o.shape) for o in obs] == [(1, 3, 2)] * 3 and all(o.dtype == torch.float32 for o in obs)
    # Steps 0, 2, 4: histories (0, 0, 0), (0, 1, 2), (2, 3, 4).
    assert obs[0][0, :, 0].tolist() == [0, 0, 0]
    assert obs[1][0, :, 0].tolist() == [0, 1, 2] and obs[1][0, :, 1].tolist() == [0, -1, -2]
    assert obs[2][0, :, 0].tolist() == [2, 3, 4]
    assert all(c["image"] is None for c in model.calls)


def test_features_are_concatenated_in_the_policy_order_and_missing_ones_named():
    model = FakeModel(obs_horizon=1, horizon=2, action_horizon=1, features=("block_pose", "agent_pos"))
    runner = ChunkRunner(model, "ddim", 1)
    runner.act(frame(4))
    assert model.calls[0]["obs"][0, 0].tolist() == [7, 7, 7, 4, -4]
    runner.reset()
    with pytest.raises(KeyError, match=r"no feature 'block_pose'; the policy observes \['block_pose', 'agent_pos'\]"):
        runner.act({"agent_pos": np.zeros(2)})


def test_images_are_stacked_channels_first_in_zero_one():
    model = FakeModel(obs_horizon=2, horizon=4, action_horizon=1, image_feature="image")
    runner = ChunkRunner(model, "ddim", 1)
    for t in range(2):
        image = np.zeros((4, 5, 3), dtype=np.uint8)
        image[1, 2] = [255, 51, t]
        runner.act({**frame(t), "image": image})
    image = model.calls[1]["image"]
    assert image.shape == (1, 2, 3, 4, 5) and image.dtype == torch.float32
    torch.testing.assert_close(image[0, :, :, 1, 2], torch.tensor([[1.0, 0.2, 0.0], [1.0, 0.2, 1 / 255]]))
    assert float(image.sum()) == pytest.approx(2 * 1.2 + 1 / 255)
    torch.testing.assert_close(model.calls[0]["image"][0, 0], model.calls[0]["image"][0, 1])  # first one repeated


def test_an_image_only_policy_gets_an_empty_low_dimensional_history():
    model = FakeModel(obs_horizon=2, horizon=4, action_horizon=1, image_feature="image", features=())
    runner = ChunkRunner(model, "ddim", 1)
    runner.act({"image": np.zeros((4, 5, 3), dtype=np.uint8)})
    assert model.calls[0]["obs"].shape == (1, 2, 0) and model.calls[0]["image"].shape == (1, 2, 3, 4, 5)


def test_reset_forgets_the_episode():
    model = FakeModel()
    runner = ChunkRunner(model, "rti", 2)
    run(runner, 4)
    runner.reset()
    assert runner.previous is None and not runner.queue and not runner.history
    runner.act(frame(50))
    assert model.calls[-1]["obs"][0, :, 0].tolist() == [50, 50]
    assert "start" not in model.calls[-1]  # a new episode starts cold


# --- the inference modes ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["ddim", "ddpm"])
def test_sampling_modes_start_every_chunk_from_noise(mode):
    model = FakeModel()
    runner = ChunkRunner(model, mode, 4, cold_steps=9)
    run(runner, 7)
    for call in model.calls:
        assert call["sampler"] == mode and call["steps"] == 4 and call["normalized"] is True
        assert "start" not in call and call["generator"] is runner.generator
    assert runner.cold == [True, True, True] and runner.t_start is None


def test_rti_first_chunk_cold_then_warm_from_the_shifted_previous_chunk():
    model = FakeModel(obs_horizon=2, horizon=8, action_horizon=3, t_max=0.9)
    runner = ChunkRunner(model, "rti", 2, cold_steps=7)
    run(runner, 7)
    first, second, third = model.calls
    assert first["sampler"] == "ddim" and first["steps"] == 7 and "start" not in first
    assert runner.cold == [True, False, False]
    # Default t_start: t_max * steps / reference_steps = 0.9 * 2 / 10.
    assert runner.t_start == pytest.approx(0.18)
    for k, call in ((1, second), (2, third)):
        assert call["sampler"] == "ddim" and call["steps"] == 2 and call["t_start"] == pytest.approx(0.18)
        assert call["normalized"] is True and call["generator"] is runner.generator
        # The previous chunk (call k - 1) shifted by 3, its last action (i = 7) repeated.
        i = [3, 4, 5, 6, 7, 7, 7, 7]
        expected = torch.tensor([[100.0 * (k - 1) + 10 * j + d for d in range(2)] for j in i])[None]
        torch.testing.assert_close(call["start"], expected, rtol=0, atol=0)
    # The warm start is a copy: the runner's previous chunk is not changed by it.
    assert runner.previous[0, 0, 0].item() == 200.0


@pytest.mark.parametrize("steps, reference, t_max, expected", [(1, 10, 1.0, 0.1), (3, 10, 0.9946, 0.29838),
                                                                (5, 5, 0.9, 0.9), (2, 20, 0.8, 0.08)])
def test_rti_default_t_start(steps, reference, t_max, expected):
    runner = ChunkRunner(FakeModel(t_max=t_max), "rti", steps, reference_steps=reference)
    assert runner.t_start == pytest.approx(expected)
    assert ChunkRunner(FakeModel(t_max=t_max), "rti", steps, t_start=0.05).t_start == 0.05


def test_rti_discrete_dimensions_are_scaled_in_the_warm_start_and_snapped_in_the_output():
    model = FakeModel(obs_horizon=2, horizon=6, action_horizon=2, discrete=[1])
    runner = ChunkRunner(model, "rti", 2, discrete_dims=[1], discrete_scale=3.0)
    actions = run(runner, 5)
    # Call k's discrete values are 0.4 (-1)^k (1 + i/100): snapped to (-1)^k, then unnormalised.
    np.testing.assert_array_equal(actions[:, 1], [3, 3, -1, -1, 3])
    np.testing.assert_array_equal(actions[:, 0], [2 * v + 1 for v in (10, 20, 110, 120, 210)])
    # The warm start: the snapped previous chunk, shifted by 2, its discrete dimension times 3.
    start = model.calls[1]["start"][0]
    torch.testing.assert_close(start[:, 1], torch.full((6,), 3.0))
    torch.testing.assert_close(start[:, 0], torch.tensor([20.0, 30, 40, 50, 50, 50]))
    torch.testing.assert_close(model.calls[2]["start"][0, :, 1], torch.full((6,), -3.0))
    assert runner.previous[0, :, 1].tolist() == [1.0] * 6  # call 2: snapped to +1


def test_discrete_dimensions_are_snapped_in_every_mode():
    model = FakeModel(discrete=[0])
    actions = run(ChunkRunner(model, "ddim", 2, discrete_dims=[0]), 4)
    np.testing.assert_array_equal(actions[:, 0], [3, 3, 3, -1])


def test_the_generator_is_seeded_per_episode():
    class Noisy(FakeModel):
        def predict_chunk(self, obs, image=None, **kwargs):
            super().predict_chunk(obs, image, **kwargs)
            return torch.randn(1, self.horizon, self.action_dim, generator=kwargs["generator"])

    runner = ChunkRunner(Noisy(), "ddim", 2, seed=5)
    a = run(runner, 6)
    runner.reset()
    np.testing.assert_array_equal(run(runner, 6), a)
    runner.reset(seed=6)
    assert not np.array_equal(run(runner, 6), a)
    runner.reset(seed=5)
    np.testing.assert_array_equal(run(runner, 6), a)


# --- argument checks --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (("ddim_fast", 2), {}, r"unknown inference mode 'ddim_fast'; valid: ddpm, ddim, rti"),
        (("ddim", 0), {}, "steps must be a positive integer, got 0"),
        (("ddim", 2.5), {}, "steps must be a positive integer, got 2.5"),
        (("ddim", 2), {"action_horizon": 0},
         r"action_horizon must lie in \[1, 7\] for horizon 8 and obs_horizon 2, got 0"),
        (("ddim", 2), {"action_horizon": 8}, r"action_horizon must lie in \[1, 7\]"),
        (("rti", 4), {"reference_steps": 3}, r"reference_steps \(3\) must be at least the RTI steps \(4\)"),
        (("rti", 2), {"t_start": 0.0}, r"t_start must lie in \(0, 0.9\], got 0.0"),
        (("rti", 2), {"t_start": 1.2}, r"t_start must lie in \(0, 0.9\], got 1.2"),
        (("rti", 2), {"discrete_dims": [2]}, r"discrete_dims \[2\] out of range for 2 action dimensions"),
        (("rti", 2), {"discrete_dims": [-1]}, r"out of range"),
        (("rti", 2), {"discrete_scale": 0.0}, "discrete_scale must be positive"),
    ],
)
def test_bad_arguments_are_refused(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ChunkRunner(FakeModel(), *args, **kwargs)
    assert MODES == ("ddpm", "ddim", "rti")


def test_rti_cold_steps_are_checked_like_steps():
    with pytest.raises(ValueError, match="cold_steps"):
        ChunkRunner(FakeModel(), "rti", 2, cold_steps=0)


# --- with a real policy -----------------------------------------------------------------------------
A, TO, H, NA = 2, 2, 8, 3
ACT_NORM = Normalizer([10.0, 20.0], [500.0, 480.0])
INFO = {"env": "gym_pusht/PushT-v0", "obs_features": ["agent_pos"], "obs_dims": [2], "image_feature": None,
        "action_dim": A, "obs_horizon": TO, "horizon": H, "action_horizon": NA,
        "obs_normalizer": Normalizer([0.0, -100.0], [100.0, 0.0]).state_dict(),
        "action_normalizer": ACT_NORM.state_dict()}
POINT = (torch.linspace(-0.9, 0.9, H * A).reshape(H, A)).tolist()


class PointMass(PolicyDenoiser):
    """Predicts the same clean chunk whatever it sees: the exact denoiser of constant data."""

    def __init__(self, value: list):
        super().__init__(prediction="x0")
        self.value = value

    def _build(self, frame_features: int) -> None:
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, cond=None):
        self.encode_obs(cond)
        return torch.as_tensor(self.value, dtype=x.dtype).expand_as(x) + 0 * self.dummy


@pytest.mark.parametrize("mode", ["ddim", "ddpm", "rti"])
def test_a_real_policy_with_an_exact_denoiser_executes_its_chunk(mode):
    policy = DiffusionPolicy(PointMass(POINT), data_info=copy.deepcopy(INFO)).eval()
    calls = []
    predict = policy.predict_chunk

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return predict(*args, **kwargs)

    policy.predict_chunk = spy
    runner = ChunkRunner(policy, mode, 2, cold_steps=3)
    actions = run(runner, 2 * NA)
    executed = ACT_NORM.unnormalize(np.array(POINT))[TO - 1:TO - 1 + NA]
    np.testing.assert_allclose(actions, np.concatenate([executed, executed]), atol=1e-3)
    if mode == "rti":
        # The warm start is the exact chunk shifted: the denoiser's answer, again.
        shifted = torch.tensor(POINT)[list(range(NA, H)) + [H - 1] * NA]
        torch.testing.assert_close(calls[1]["start"][0], shifted, atol=1e-5, rtol=0)
        assert calls[1]["t_start"] == pytest.approx(policy.schedule.t_max * 2 / 10)


def test_a_real_untrained_policy_gives_finite_actions_reproducibly():
    torch.manual_seed(0)
    from polydiff_policy.nets import ConditionalUnet1D

    policy = DiffusionPolicy(ConditionalUnet1D(down_dims=[8, 16], kernel_size=3, groups=4, time_dim=8),
                             data_info=copy.deepcopy(INFO)).eval()
    runner = ChunkRunner(policy, "rti", 2, cold_steps=2, seed=3)
    a = run(runner, 7)
    assert a.shape == (7, 2) and np.isfinite(a).all()
    assert runner.cold == [True, False, False]
    runner.reset()
    np.testing.assert_array_equal(run(runner, 7), a)
    assert not math.isnan(runner.t_start)
