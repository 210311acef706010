"""Reading and writing demonstration datasets: LeRobot v3.0 and v2.1, zarr replay buffers.

Round trips compare every value exactly (float32 and PNG images are lossless); the v2.1 dataset
is laid out by hand here, file by file, as LeRobot's older releases wrote it; each bad input
is checked for naming the dataset and the key, episode or frame at fault.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("zarr")
Image = pytest.importorskip("PIL.Image")

from polydiff_policy.episodes import Episode  # noqa: E402
from polydiff_policy.formats import (  # noqa: E402
    DatasetError,
    check_episodes,
    detect_format,
    read_dataset,
    write_lerobot,
    write_zarr,
)

LENGTHS = (5, 3, 7)


def make_episode(length: int, seed: int, *, image: bool = True, corners: bool = True) -> Episode:
    """Random canonical features; ``environment_state`` is arbitrary numbers unless ``corners``
    (then the block's corners, which needs the environment's geometry)."""
    rng = np.random.default_rng(seed)
    pose = np.c_[rng.uniform(100, 400, (length, 2)), rng.uniform(0, 2 * np.pi, length)].astype(np.float32)
    obs = {"agent_pos": rng.uniform(0, 512, (length, 2)).astype(np.float32), "block_pose": pose}
    if corners:
        from polydiff_policy.pusht import block_corners

        obs["environment_state"] = block_corners(pose.astype(np.float64)).astype(np.float32)
    else:
        obs["environment_state"] = rng.uniform(0, 512, (length, 16)).astype(np.float32)
    if image:
        obs["image"] = rng.integers(0, 256, (length, 96, 96, 3), dtype=np.uint8)
    return Episode(obs, rng.uniform(0, 512, (length, 2)).astype(np.float32), success=seed % 2 == 1,
                   max_coverage=0.5 + seed / 10, seed=100 + seed,
                   rewards=rng.uniform(0, 1, length).astype(np.float32))


def make_episodes(*, image: bool = True, corners: bool = False) -> list[Episode]:
    return [make_episode(n, i, image=image, corners=corners) for i, n in enumerate(LENGTHS)]


def assert_same(written: list[Episode], read: list[Episode], features: list[str]) -> None:
    assert [len(e) for e in read] == [len(e) for e in written]
    for a, b in zip(written, read):
        assert list(b.observations) == features
        for key in features:
            assert b.observations[key].dtype == a.observations[key].dtype
            np.testing.assert_array_equal(b.observations[key], a.observations[key])
        np.testing.assert_array_equal(b.actions, a.actions)
        np.testing.assert_array_equal(b.rewards, a.rewards)
        assert (b.success, b.seed, b.max_coverage) == (a.success, a.seed, a.max_coverage)


# --- LeRobot v3.0 -------------------------------------------------------------------------------
def test_lerobot_round_trip_is_exact(tmp_path):
    episodes = make_episodes()
    root = write_lerobot(tmp_path / "ds", episodes, fps=10)
    dataset = read_dataset(root)
    assert dataset.format == "lerobot-v3.0" and dataset.fps == 10 and dataset.source == str(root)
    # block_pose has no LeRobot column; the other features come back bit for bit.
    assert_same(episodes, dataset.episodes, ["agent_pos", "environment_state", "image"])


def test_lerobot_layout_follows_v3(tmp_path):
    episodes = make_episodes()
    root = write_lerobot(tmp_path / "ds", episodes, fps=10)
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert (info["total_episodes"], info["total_frames"], info["fps"]) == (3, 15, 10)
    assert info["splits"] == {"train": "0:3"}
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["features"]["observation.state"]["shape"] == [2]
    assert info["features"]["observation.environment_state"]["shape"] == [16]
    assert info["features"]["observation.image"] == {"dtype": "image", "shape": [96, 96, 3],
                                                     "names": ["height", "width", "channels"]}
    data = pq.read_table(root / "data" / "chunk-000" / "file-000.parquet")
    assert data.column("episode_index").to_pylist() == [0] * 5 + [1] * 3 + [2] * 7
    assert data.column("frame_index").to_pylist() == [*range(5), *range(3), *range(7)]
    assert data.column("index").to_pylist() == list(range(15))
    np.testing.assert_allclose(data.column("timestamp").to_numpy()[:5], np.arange(5) / 10)
    # next.done on each episode's last frame; next.success there only for successful episodes.
    assert np.flatnonzero(data.column("next.done").to_numpy(zero_copy_only=False)).tolist() == [4, 7, 14]
    assert np.flatnonzero(data.column("next.success").to_numpy(zero_copy_only=False)).tolist() == [7]
    png = data.column("observation.image")[6].as_py()
    assert png["bytes"].startswith(b"\x89PNG") and png["path"] is None
    decoded = np.asarray(Image.open(io.BytesIO(png["bytes"])))
    np.testing.assert_array_equal(decoded, episodes[1].observations["image"][1])
    meta = pq.read_table(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert [(m["episode_index"], m["length"], m["dataset_from_index"], m["dataset_to_index"]) for m in meta] == [
        (0, 5, 0, 5), (1, 3, 5, 8), (2, 7, 8, 15)]
    tasks = pq.read_table(root / "meta" / "tasks.parquet").to_pylist()
    assert tasks == [{"task_index": 0, "task": "Push the T-shaped block onto the target."}]
    stats = json.loads((root / "meta" / "stats.json").read_text())
    actions = np.concatenate([e.actions for e in episodes])
    np.testing.assert_allclose(stats["action"]["min"], actions.min(0), rtol=1e-6)
    np.testing.assert_allclose(stats["action"]["max"], actions.max(0), rtol=1e-6)
    assert np.asarray(stats["observation.image"]["mean"]).shape == (3, 1, 1)


def test_lerobot_without_images_or_rewards(tmp_path):
    episodes = make_episodes(image=False)
    for e in episodes:
        e.rewards = None
    root = write_lerobot(tmp_path / "ds", episodes)
    info = json.loads((root / "meta" / "info.json").read_text())
    assert "observation.image" not in info["features"] and "next.reward" not in info["features"]
    dataset = read_dataset(root, features=["agent_pos"])
    assert [list(e.observations) for e in dataset.episodes] == [["agent_pos"]] * 3
    assert all(e.rewards is None for e in dataset.episodes)


def test_lerobot_writer_computes_corners_from_block_pose(tmp_path):
    from polydiff_policy.pusht import block_corners

    episodes = make_episodes(image=False)
    for e in episodes:
        del e.observations["environment_state"]
    dataset = read_dataset(write_lerobot(tmp_path / "ds", episodes), features=["environment_state"])
    for a, b in zip(episodes, dataset.episodes):
        np.testing.assert_allclose(b.observations["environment_state"], block_corners(a.observations["block_pose"]),
                                   rtol=1e-6)


# --- LeRobot v2.1, laid out by hand -------------------------------------------------------------
def _png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def write_v21(root: Path, episodes: list[Episode], *, image_dtype: str = "image", state_dim: int = 2) -> None:
    """One parquet file per episode, ``meta/episodes.jsonl`` and ``meta/tasks.jsonl``; variable-
    length lists, as the ``datasets`` library wrote them."""
    features = {
        "observation.state": {"dtype": "float32", "shape": [state_dim], "names": None},
        "observation.environment_state": {"dtype": "float32", "shape": [16], "names": None},
        "observation.image": {"dtype": image_dtype, "shape": [96, 96, 3], "names": ["height", "width", "channel"]},
        "action": {"dtype": "float32", "shape": [2], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "next.success": {"dtype": "bool", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    info = {"codebase_version": "v2.1", "robot_type": None, "total_episodes": len(episodes),
            "total_frames": sum(map(len, episodes)), "total_tasks": 1, "total_videos": 0, "total_chunks": 1,
            "chunks_size": 1000, "fps": 10, "splits": {"train": f"0:{len(episodes)}"},
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
            "features": features}
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    (root / "meta" / "tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "push"}) + "\n")
    lines = [json.dumps({"episode_index": e, "tasks": ["push"], "length": len(ep)}) for e, ep in enumerate(episodes)]
    (root / "meta" / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    (root / "data" / "chunk-000").mkdir(parents=True)
    start = 0
    for e, ep in enumerate(episodes):
        n = len(ep)
        obs = ep.observations
        state = obs["agent_pos"] if state_dim == 2 else np.concatenate([obs["agent_pos"], obs["block_pose"]], axis=1)
        table = pa.table({
            "observation.state": pa.array(state.tolist(), pa.list_(pa.float32())),
            "observation.environment_state": pa.array(obs["environment_state"].tolist(), pa.list_(pa.float32())),
            "observation.image": pa.array([{"bytes": _png(im), "path": None} for im in obs["image"]],
                                          pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "action": pa.array(ep.actions.tolist(), pa.list_(pa.float32())),
            "episode_index": pa.array([e] * n, pa.int64()),
            "frame_index": pa.array(range(n), pa.int64()),
            "timestamp": pa.array(np.arange(n, dtype=np.float32) / 10),
            "next.reward": pa.array(ep.rewards),
            "next.success": pa.array([bool(ep.success) and t == n - 1 for t in range(n)]),
            "index": pa.array(range(start, start + n), pa.int64()),
            "task_index": pa.array([0] * n, pa.int64()),
        })
        # Rows out of order: the reader sorts by frame_index.
        table = table.take(pa.array(np.random.default_rng(e).permutation(n)))
        pq.write_table(table, root / "data" / "chunk-000" / f"episode_{e:06d}.parquet")
        start += n


def test_lerobot_v21_written_by_hand_is_read(tmp_path):
    episodes = make_episodes()
    write_v21(tmp_path / "v21", episodes)
    assert detect_format(tmp_path / "v21") == "lerobot"
    dataset = read_dataset(tmp_path / "v21")
    assert dataset.format == "lerobot-v2.1" and dataset.fps == 10
    for e in episodes:  # v2.1 keeps no seed or coverage; success comes from next.success
        e.seed = e.max_coverage = None
    assert_same(episodes, dataset.episodes, ["agent_pos", "environment_state", "image"])


def test_lerobot_five_value_state_gives_agent_and_block(tmp_path):
    episodes = make_episodes(corners=True)
    write_v21(tmp_path / "v21", episodes, state_dim=5)
    dataset = read_dataset(tmp_path / "v21", features=["block_pose", "agent_pos"])
    for a, b in zip(episodes, dataset.episodes):
        assert list(b.observations) == ["block_pose", "agent_pos"]
        np.testing.assert_array_equal(b.observations["agent_pos"], a.observations["agent_pos"])
        np.testing.assert_array_equal(b.observations["block_pose"], a.observations["block_pose"])


def test_video_backed_images_are_refused_by_name(tmp_path):
    write_v21(tmp_path / "v21", make_episodes(), image_dtype="video")
    with pytest.raises(DatasetError, match=r"v21.*'observation\.image'.*video.*not supported"):
        read_dataset(tmp_path / "v21")
    dataset = read_dataset(tmp_path / "v21", features=["agent_pos"])  # the low-dimensional part still reads
    assert len(dataset) == 3


# --- zarr ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["buffer.zarr", "buffer.zarr.zip"])
def test_zarr_round_trip_is_exact(tmp_path, name):
    episodes = make_episodes()
    path = write_zarr(tmp_path / name, episodes, fps=10)
    dataset = read_dataset(path)
    assert dataset.format == "zarr" and dataset.fps == 10
    assert_same(episodes, dataset.episodes, ["agent_pos", "environment_state", "block_pose", "image"])


def test_zarr_layout_is_chi_et_al(tmp_path):
    import zarr

    episodes = make_episodes()
    path = write_zarr(tmp_path / "buffer.zarr", episodes)
    assert (path / ".zgroup").is_file() and (path / "data" / "state" / ".zarray").is_file()  # zarr format 2
    root = zarr.open_group(path, mode="r")
    np.testing.assert_array_equal(root["meta/episode_ends"][:], [5, 8, 15])
    assert root["meta/episode_ends"].dtype == np.int64
    assert root["data/state"].shape == (15, 5) and root["data/state"].dtype == np.float32
    np.testing.assert_array_equal(root["data/state"][5:8, 2:], episodes[1].observations["block_pose"])
    assert root["data/img"].shape == (15, 96, 96, 3) and root["data/img"].dtype == np.uint8
    assert root["data/action"].shape == (15, 2)
    names = zipfile.ZipFile(write_zarr(tmp_path / "b.zarr.zip", episodes)).namelist()
    assert "meta/episode_ends/.zarray" in names and len(names) == len(set(names))


def test_zarr_without_environment_state_computes_corners(tmp_path):
    from polydiff_policy.pusht import block_corners

    episodes = make_episodes(image=False)
    for e in episodes:
        del e.observations["environment_state"]
    dataset = read_dataset(write_zarr(tmp_path / "b.zarr", episodes))
    for a, b in zip(episodes, dataset.episodes):
        np.testing.assert_allclose(b.observations["environment_state"], block_corners(a.observations["block_pose"]),
                                   rtol=1e-6)


def test_zarr_angles_are_wrapped(tmp_path):
    episodes = make_episodes(image=False)
    episodes[0].observations["block_pose"][:, 2] -= 2 * np.pi  # as an unwrapped recording would hold
    dataset = read_dataset(write_zarr(tmp_path / "b.zarr", episodes), features=["block_pose"])
    angles = dataset.episodes[0].observations["block_pose"][:, 2]
    np.testing.assert_allclose(angles, episodes[0].observations["block_pose"][:, 2] + 2 * np.pi, atol=1e-5)
    assert ((angles >= 0) & (angles < 2 * np.pi)).all()


def test_a_zip_of_the_folder_is_read(tmp_path):
    episodes = make_episodes(image=False)
    folder = write_zarr(tmp_path / "pusht.zarr", episodes)
    target = tmp_path / "pusht.zarr.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for file in folder.rglob("*"):
            if file.is_file():
                archive.write(file, file.relative_to(tmp_path).as_posix())  # paths start with pusht.zarr/
    assert_same(episodes, read_dataset(target).episodes, ["agent_pos", "environment_state", "block_pose"])


# --- overwriting --------------------------------------------------------------------------------
@pytest.mark.parametrize("writer, name", [(write_lerobot, "ds"), (write_zarr, "b.zarr"), (write_zarr, "b.zarr.zip")])
def test_writers_refuse_to_overwrite(tmp_path, writer, name):
    episodes = make_episodes(image=False)
    path = writer(tmp_path / name, episodes)
    with pytest.raises(DatasetError, match=rf"{name} already exists.*overwrite=True"):
        writer(tmp_path / name, episodes[:1])
    assert len(read_dataset(path)) == 3  # untouched
    writer(tmp_path / name, episodes[:1], overwrite=True)
    assert len(read_dataset(path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no partial files left behind


def test_a_failed_write_leaves_nothing(tmp_path):
    episodes = make_episodes(image=False)
    del episodes[0].observations["block_pose"]
    for e in episodes[1:]:
        del e.observations["block_pose"]
    with pytest.raises(DatasetError, match="block_pose"):
        write_zarr(tmp_path / "b.zarr", episodes)
    assert list(tmp_path.iterdir()) == []


# --- errors -------------------------------------------------------------------------------------
def test_unknown_layout_and_missing_path(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(DatasetError, match=r"folder: unknown dataset layout"):
        read_dataset(tmp_path / "folder")
    (tmp_path / "file.csv").write_text("a,b\n")
    with pytest.raises(DatasetError, match=r"file\.csv: unknown dataset layout"):
        read_dataset(tmp_path / "file.csv")
    with pytest.raises(DatasetError, match=r"nothing: no such file"):
        read_dataset(tmp_path / "nothing")


def test_empty_datasets(tmp_path):
    with pytest.raises(DatasetError, match=r"out: the dataset holds no episodes"):
        write_lerobot(tmp_path / "out", [])
    import zarr

    root = zarr.open_group(tmp_path / "e.zarr", mode="w", zarr_format=2)
    root.create_group("data").create_array("action", shape=(0, 2), dtype="float32")
    root.create_group("meta").create_array("episode_ends", shape=(0,), dtype="int64")
    with pytest.raises(DatasetError, match=r"e\.zarr: the dataset holds no episodes"):
        read_dataset(tmp_path / "e.zarr")


def test_missing_feature_and_action_are_named(tmp_path):
    path = write_zarr(tmp_path / "b.zarr", make_episodes(image=False))
    with pytest.raises(DatasetError, match=r"b\.zarr: no feature 'image' \(this dataset provides: agent_pos"):
        read_dataset(path, features=["agent_pos", "image"])
    import shutil

    shutil.rmtree(path / "data" / "action")
    with pytest.raises(DatasetError, match=r"b\.zarr: no 'data/action'"):
        read_dataset(path)
    root = write_lerobot(tmp_path / "ds", make_episodes(image=False))
    info = json.loads((root / "meta" / "info.json").read_text())
    del info["features"]["action"]
    (root / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"ds: no 'action' feature"):
        read_dataset(root)


def test_missing_column_in_a_data_file_is_named(tmp_path):
    root = write_lerobot(tmp_path / "ds", make_episodes(image=False))
    file = root / "data" / "chunk-000" / "file-000.parquet"
    pq.write_table(pq.read_table(file).drop_columns(["observation.environment_state"]), file)
    with pytest.raises(DatasetError, match=r"ds: data/chunk-000/file-000\.parquet has no column "
                                           r"'observation\.environment_state'"):
        read_dataset(root)


def test_mismatched_lengths_are_named(tmp_path):
    episodes = make_episodes(image=False)
    episodes[1].observations["agent_pos"] = episodes[1].observations["agent_pos"][:2]
    with pytest.raises(DatasetError, match=r"out: episode 1: observation 'agent_pos' has 2 frames but 'action' has 3"):
        write_lerobot(tmp_path / "out", episodes)
    import zarr

    path = write_zarr(tmp_path / "b.zarr", make_episodes(image=False))
    root = zarr.open_group(path, mode="r+")
    root["meta/episode_ends"][:] = np.array([5, 8, 14])
    with pytest.raises(DatasetError, match=r"b\.zarr: meta/episode_ends ends at 14, but 'data/action' has 15 rows"):
        read_dataset(path)
    root["meta/episode_ends"][:] = np.array([5, 5, 15])
    with pytest.raises(DatasetError, match=r"b\.zarr: episode 1: meta/episode_ends does not increase"):
        read_dataset(path)


def test_lerobot_metadata_length_disagreeing_with_the_data(tmp_path):
    root = tmp_path / "v21"
    write_v21(root, make_episodes())
    lines = (root / "meta" / "episodes.jsonl").read_text().splitlines()
    lines[2] = json.dumps({"episode_index": 2, "tasks": ["push"], "length": 9})
    (root / "meta" / "episodes.jsonl").write_text("\n".join(lines))
    with pytest.raises(DatasetError, match=r"v21: episode 2: the metadata says 9 frames, the data holds 7"):
        read_dataset(root)


def test_mismatched_dimensions_are_named(tmp_path):
    episodes = make_episodes(image=False)
    episodes[2].actions = np.zeros((7, 3), dtype=np.float32)
    with pytest.raises(DatasetError, match=r"out: episode 2: 'action' has 3 dimensions, episode 0 has 2"):
        write_zarr(tmp_path / "out", episodes)
    episodes = make_episodes(image=False)
    episodes[1].observations["environment_state"] = np.zeros((3, 8), dtype=np.float32)
    with pytest.raises(DatasetError, match=r"episode 1: observation 'environment_state' has per-frame shape \(8,\)"):
        check_episodes(episodes, "demo")
    episodes = make_episodes(image=False)
    del episodes[2].observations["block_pose"]
    with pytest.raises(DatasetError, match=r"demo: episode 2 has no observation 'block_pose'"):
        check_episodes(episodes, "demo")


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "an infinite value")])
def test_non_finite_values_name_episode_frame_and_key(tmp_path, bad, word):
    episodes = make_episodes(image=False)
    episodes[1].actions[2, 0] = bad
    with pytest.raises(DatasetError, match=rf"out: episode 1, frame 2: 'action' holds {word}"):
        write_lerobot(tmp_path / "out", episodes)
    # Written by another tool: the reader finds it too.
    import zarr

    path = write_zarr(tmp_path / "b.zarr", make_episodes(image=False))
    root = zarr.open_group(path, mode="r+")
    state = root["data/state"][:]
    state[5 + 2, 3] = bad  # episode 1, frame 2, block y
    root["data/state"][:] = state
    with pytest.raises(DatasetError, match=rf"b\.zarr: episode 1, frame 2: 'block_pose' holds {word}"):
        read_dataset(path, features=["block_pose"])


def test_unsupported_lerobot_version(tmp_path):
    root = write_lerobot(tmp_path / "ds", make_episodes(image=False))
    info = json.loads((root / "meta" / "info.json").read_text())
    info["codebase_version"] = "v1.6"
    (root / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"ds: LeRobot codebase_version 'v1.6' is not supported"):
        read_dataset(root)
