"""The min-max normaliser, padded policy windows and the policy DataModule.

Windows are checked against padding worked out by hand on short episodes whose values give
their frame numbers away; the normaliser against its defining limits.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytorch_lightning")

from polydiff_policy.data import (  # noqa: E402
    RANGE_EPS,
    Normalizer,
    PolicyDataModule,
    PolicyWindows,
    concat_features,
    images_to_tensor,
    window_frames,
    window_starts,
)
from polydiff_policy.episodes import Episode  # noqa: E402
from polydiff_policy.formats import DatasetError  # noqa: E402


def counting_episode(length: int, first: int = 0, *, image: bool = False) -> Episode:
    """Frame t (counted from ``first``) has agent_pos (t, 2t), environment_state 16 × t + k,
    action (10 t, 0) and an image filled with t."""
    t = np.arange(first, first + length, dtype=np.float32)
    obs = {"agent_pos": np.c_[t, 2 * t], "environment_state": t[:, None] + np.arange(16, dtype=np.float32)}
    if image:
        obs["image"] = np.broadcast_to(t.astype(np.uint8)[:, None, None, None], (length, 4, 5, 3)).copy()
    return Episode(obs, np.c_[10 * t, np.zeros_like(t)])


# --- normaliser ---------------------------------------------------------------------------------
def test_normalizer_maps_the_range_to_minus_one_one():
    rng = np.random.default_rng(0)
    x = rng.uniform([-5, 100], [3, 612], (200, 2))
    norm = Normalizer.fit(x)
    y = norm.normalize(x)
    np.testing.assert_allclose(y.min(0), [-1, -1], atol=1e-12)
    np.testing.assert_allclose(y.max(0), [1, 1], atol=1e-12)
    np.testing.assert_allclose(norm.normalize(np.array([x.min(0), x.max(0)])), [[-1, -1], [1, 1]], atol=1e-12)
    np.testing.assert_allclose(norm.unnormalize(y), x, rtol=1e-12)


def test_normalizer_by_hand_and_a_flat_dimension_is_only_shifted():
    norm = Normalizer.fit(np.array([[0.0, 3.0, 7.0], [4.0, 3.0, 7.0 + RANGE_EPS / 2]]))
    np.testing.assert_allclose(norm.scale, [0.5, 1.0, 1.0])
    np.testing.assert_allclose(norm.offset, [-1.0, -3.0, -7.0])
    np.testing.assert_allclose(norm.normalize(np.array([2.0, 3.0, 8.0])), [0.0, 0.0, 1.0])


def test_normalizer_on_torch_and_its_state_round_trip():
    norm = Normalizer.fit(np.array([[0.0, -2.0], [10.0, 2.0]]))
    x = torch.tensor([[5.0, 0.0], [10.0, -2.0]], dtype=torch.float64)
    y = norm.normalize(x)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float64
    torch.testing.assert_close(y, torch.tensor([[0.0, 0.0], [1.0, -1.0]], dtype=torch.float64))
    torch.testing.assert_close(norm.unnormalize(y), x)
    state = json.loads(json.dumps(norm.state_dict()))  # plain data
    assert state["min"] == [0.0, -2.0] and state["max"] == [10.0, 2.0]
    assert state["scale"] == [0.2, 0.5] and state["offset"] == [-1.0, 0.0]
    again = Normalizer.from_state_dict(state)
    np.testing.assert_array_equal(again.normalize(x.numpy()), y.numpy())
    with pytest.raises(ValueError, match="last dimension of 2"):
        norm.normalize(np.zeros((4, 3)))


# --- features -----------------------------------------------------------------------------------
def test_concat_features_and_images():
    obs = {"agent_pos": np.array([1.0, 2.0]), "environment_state": np.arange(16.0), "block_pose": np.zeros(3)}
    out = concat_features(obs, ["environment_state", "agent_pos"])
    assert out.dtype == np.float32 and out.shape == (18,)
    np.testing.assert_array_equal(out[-2:], [1, 2])
    with pytest.raises(KeyError, match="'image'"):
        concat_features(obs, ["image"])
    images = np.zeros((2, 4, 5, 3), dtype=np.uint8)
    images[1, 0, 0] = [255, 0, 51]
    tensor = images_to_tensor(images)
    assert tensor.shape == (2, 3, 4, 5) and tensor.dtype == torch.float32
    torch.testing.assert_close(tensor[1, :, 0, 0], torch.tensor([1.0, 0.0, 0.2]))


# --- windows ------------------------------------------------------------------------------------
def test_window_starts_and_frames_by_hand():
    # Diffusion Policy's defaults: 16 frames, 2 observed, 8 executed.
    assert list(window_starts(10, 2, 16, 8)) == [-1, 0, 1]
    np.testing.assert_array_equal(window_frames(1, 10, 16), [1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9, 9, 9, 9, 9])
    np.testing.assert_array_equal(window_frames(-1, 10, 16), [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9, 9, 9])
    assert list(window_starts(30, 2, 16, 8)) == list(range(-1, 22))
    # Too short for the range: the first window still counts.
    assert list(window_starts(3, 2, 16, 8)) == [-1]
    np.testing.assert_array_equal(window_frames(-1, 3, 16), [0, 0, 1] + [2] * 13)
    assert list(window_starts(5, 3, 4, 2)) == [-2, -1, 0, 1, 2]


def test_three_frame_episode_gives_exact_padded_windows():
    # Values 0, 1, 2 normalise to -1, 0, 1; the action's second dimension is flat (0 stays 0).
    windows = PolicyWindows([counting_episode(3)], obs_features=["agent_pos"], obs_horizon=2, horizon=4,
                            action_horizon=2)
    assert len(windows) == 2  # starts -1 and 0
    first, second = windows[0], windows[1]
    torch.testing.assert_close(first["obs"], torch.tensor([[-1.0, -1.0], [-1.0, -1.0]]))
    torch.testing.assert_close(first["action"], torch.tensor([[-1.0, 0.0], [-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]))
    torch.testing.assert_close(second["obs"], torch.tensor([[-1.0, -1.0], [0.0, 0.0]]))
    torch.testing.assert_close(second["action"], torch.tensor([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 0.0]]))
    assert set(first) == {"obs", "action"}


def test_windows_across_episodes_never_mix_them():
    # Episode 1's frames are numbered 100 on, so any frame from episode 0 would show.
    episodes = [counting_episode(4), counting_episode(6, first=100)]
    windows = PolicyWindows(episodes, obs_features=["agent_pos", "environment_state"], obs_horizon=2, horizon=5,
                            action_horizon=3)
    assert windows.obs_dim == 18 and windows.action_dim == 2
    # Starts -1..(L - 5 + 2): episode 0 gives -1..1, episode 1 gives -1..3.
    assert windows.windows.tolist() == [[0, -1], [0, 0], [0, 1], [1, -1], [1, 0], [1, 1], [1, 2], [1, 3]]
    for i in range(len(windows)):
        e, start = windows.windows[i]
        expected = window_frames(int(start), len(episodes[e]), 5) + (100 if e else 0)
        item = windows[i]
        frames = windows.obs_normalizer.unnormalize(item["obs"].double().numpy())[:, 0]
        np.testing.assert_allclose(frames, expected[:2], atol=1e-4)
        actions = windows.action_normalizer.unnormalize(item["action"].double().numpy())[:, 0] / 10
        np.testing.assert_allclose(actions, expected, atol=1e-3)
    item = windows[7]  # episode 1 from frame 3: 3, 4, 5, 5, 5
    np.testing.assert_array_equal(windows.frames(7), [3, 4, 5, 5, 5])
    assert item["obs"].shape == (2, 18) and item["action"].shape == (5, 2) and item["obs"].dtype == torch.float32


def test_windows_with_images():
    windows = PolicyWindows([counting_episode(3, image=True)], obs_features=["agent_pos"], image_feature="image",
                            obs_horizon=2, horizon=4, action_horizon=2)
    item = windows[1]  # frames 0, 1 observed
    assert item["image"].shape == (2, 3, 4, 5) and item["image"].dtype == torch.float32
    torch.testing.assert_close(item["image"][:, 0, 0, 0], torch.tensor([0.0, 1.0 / 255]))
    only_images = PolicyWindows([counting_episode(3, image=True)], obs_features=[], image_feature="image",
                                obs_horizon=2, horizon=4, action_horizon=2)
    assert only_images.obs_dim == 0 and only_images[0]["obs"].shape == (2, 0)


def test_given_normalizers_are_used():
    norm = Normalizer([0.0, 0.0], [100.0, 100.0])
    windows = PolicyWindows([counting_episode(3)], obs_features=["agent_pos"], obs_horizon=1, horizon=2,
                            action_horizon=1, obs_normalizer=norm, action_normalizer=norm)
    torch.testing.assert_close(windows[0]["obs"], torch.tensor([[-1.0, -1.0]]))
    torch.testing.assert_close(windows[1]["action"], torch.tensor([[-0.8, -1.0], [-0.6, -1.0]]))


def test_windows_refuse_short_episodes_and_bad_horizons():
    episodes = [counting_episode(5), counting_episode(1)]
    with pytest.raises(DatasetError, match=r"demo: episode 1 has 1 frames, fewer than the observation horizon 2"):
        PolicyWindows(episodes, obs_features=["agent_pos"], source="demo")
    with pytest.raises(ValueError, match="exceeds horizon 8"):
        PolicyWindows(episodes[:1], obs_features=["agent_pos"], obs_horizon=2, horizon=8, action_horizon=8)
    with pytest.raises(DatasetError, match=r"no observation 'block_pose'"):
        PolicyWindows(episodes[:1], obs_features=["block_pose"])


# --- data module --------------------------------------------------------------------------------
def write_buffer(path, lengths, *, image=False):
    from polydiff_policy.formats import write_zarr

    episodes = []
    for i, n in enumerate(lengths):
        ep = counting_episode(n, first=10 * i, image=image)
        ep.observations["block_pose"] = np.c_[ep.observations["agent_pos"], np.zeros(n, dtype=np.float32)]
        episodes.append(ep)
    return write_zarr(path, episodes), episodes


def test_data_module_split_batches_and_info(tmp_path):
    pytest.importorskip("zarr")
    path, episodes = write_buffer(tmp_path / "demo.zarr", [6, 7, 8, 9, 10, 11], image=True)
    dm = PolicyDataModule(str(path), obs_features=["agent_pos", "environment_state"], image_feature="image",
                          obs_horizon=2, horizon=6, action_horizon=3, batch_size=4, val_episodes=2, seed=1)
    dm.setup()
    assert len(dm.split["val"]) == 2 and sorted(dm.split["train"] + dm.split["val"]) == list(range(6))
    train = [episodes[i] for i in dm.split["train"]]
    # Normalisers come from the training episodes only.
    actions = np.concatenate([e.actions for e in train])
    np.testing.assert_allclose(dm.datasets["train"].action_normalizer.low, actions.min(0))
    np.testing.assert_allclose(dm.datasets["train"].action_normalizer.high, actions.max(0))
    assert dm.datasets["val"].action_normalizer is dm.datasets["train"].action_normalizer
    # Windows: starts -1..(L - 6 + 2) per episode.
    assert len(dm.datasets["train"]) == sum(len(e) - 2 for e in train)
    batch = next(iter(dm.train_dataloader()))
    assert batch["obs"].shape == (4, 2, 18) and batch["action"].shape == (4, 6, 2)
    assert batch["image"].shape == (4, 2, 3, 4, 5)
    assert np.abs(dm.datasets["train"].actions).max() == 1.0 and np.abs(dm.datasets["train"].obs).max() == 1.0
    info = dm.info()
    assert json.loads(json.dumps(info)) == info  # plain data
    assert info["env"] == "gym_pusht/PushT-v0"
    assert info["obs_features"] == ["agent_pos", "environment_state"] and info["obs_dims"] == [2, 16]
    assert (info["image_feature"], info["image_shape"], info["action_dim"]) == ("image", [3, 4, 5], 2)
    assert (info["obs_horizon"], info["horizon"], info["action_horizon"], info["fps"]) == (2, 6, 3, 10.0)
    assert info["dataset"] == "demo.zarr" and info["format"] == "zarr"
    assert Normalizer.from_state_dict(info["action_normalizer"]).high.tolist() == actions.max(0).tolist()


def test_data_module_validation_counts(tmp_path):
    pytest.importorskip("zarr")
    dm = PolicyDataModule("unused", val_episodes=0.05)
    assert [dm.n_val(n) for n in (1, 2, 10, 40, 100)] == [0, 1, 1, 2, 5]
    assert PolicyDataModule("unused", val_episodes=0).n_val(100) == 0
    assert PolicyDataModule("unused", val_episodes=3).n_val(3) == 2
    path, _ = write_buffer(tmp_path / "one.zarr", [5])
    dm = PolicyDataModule(str(path), obs_horizon=2, horizon=4, action_horizon=2)
    dm.setup()
    assert dm.split == {"train": [0], "val": []} and dm.val_dataloader() == []
    # The same seed gives the same split.
    path, _ = write_buffer(tmp_path / "many.zarr", [5] * 20)
    splits = []
    for _ in range(2):
        dm = PolicyDataModule(str(path), obs_horizon=2, horizon=4, action_horizon=2, val_episodes=0.2, seed=3)
        dm.setup()
        splits.append(dm.split["val"])
    assert splits[0] == splits[1] and len(splits[0]) == 4


def test_data_module_names_a_too_short_episode(tmp_path):
    pytest.importorskip("zarr")
    path, _ = write_buffer(tmp_path / "short.zarr", [6, 1, 6])
    dm = PolicyDataModule(str(path), obs_horizon=2, horizon=4, action_horizon=2)
    with pytest.raises(DatasetError, match=r"short\.zarr: episode 1 has 1 frames, fewer than the observation "
                                           r"horizon 2"):
        dm.setup()


def test_data_module_checks_its_arguments():
    with pytest.raises(ValueError, match="unknown feature 'pixels'"):
        PolicyDataModule("x", obs_features=["pixels"])
    with pytest.raises(ValueError, match="give images as image_feature"):
        PolicyDataModule("x", obs_features=["image"])
    with pytest.raises(ValueError, match="val_episodes"):
        PolicyDataModule("x", val_episodes=2.5)
    with pytest.raises(ValueError, match="exceeds horizon"):
        PolicyDataModule("x", obs_horizon=4, horizon=8, action_horizon=8)
