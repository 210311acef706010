"""Demonstration datasets on disk: LeRobot datasets and zarr replay buffers, read and written.

Two layouts are understood, without the ``lerobot`` package:

- **LeRobot** datasets, written in format **v3.0** and read in v3.0 and v2.1 (and v2.0). The
  root holds ``meta/info.json`` (``codebase_version``, ``fps``, the path templates and the
  features with their ``dtype``, ``shape`` and ``names``). In v3.0 many episodes share one
  parquet file (``data/chunk-000/file-000.parquet``) and the per-episode metadata is itself a
  parquet table (``meta/episodes/chunk-000/file-000.parquet``); in v2.1 every episode has its own
  file (``data/chunk-000/episode_000000.parquet``) and the metadata is ``meta/episodes.jsonl``.
  Images of dtype ``image`` are PNG files kept inside the parquet (a struct of ``bytes`` and
  ``path``), so they come back bit-exact; images of dtype ``video`` (mp4 files) are not read.
- **zarr replay buffers** in the layout of Chi et al.'s Diffusion Policy (2023), zarr format 2:
  ``data/state`` (N, 5) agent x, y and block x, y, angle, ``data/action`` (N, 2), ``data/img``
  (N, 96, 96, 3) uint8, and ``meta/episode_ends`` (E,), the exclusive end row of every episode.
  A folder or a zip file (``.zarr.zip``) is read; ``.zip`` paths are also written as zip files.

Whatever the layout, episodes come back with the plugin's canonical observation features
(``agent_pos`` (2,), ``environment_state`` (16,), ``block_pose`` (3,), ``image`` uint8
(96, 96, 3)) and are checked: a missing key, observations and actions of different lengths,
action or feature sizes that change between episodes, a NaN or an infinity, or no episodes at
all raise a :class:`DatasetError` naming the dataset and the key, episode and frame.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .episodes import Episode

__all__ = [
    "DatasetError", "Dataset", "read_dataset", "write_lerobot", "write_zarr", "detect_format", "check_episodes",
    "FEATURES", "DEFAULT_TASK", "DEFAULT_FPS",
]

#: The canonical observation features, in the order episodes hold them.
FEATURES = ("agent_pos", "environment_state", "block_pose", "image")
DEFAULT_TASK = "Push the T-shaped block onto the target."
#: Push-T's control rate; a zarr replay buffer that does not record its rate is taken to run at it.
DEFAULT_FPS = 10

_STATE = "observation.state"
_ENV_STATE = "observation.environment_state"
_IMAGE = "observation.image"
_V3_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
_V3_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
_V3_EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
_V2_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
_CHUNKS_SIZE = 1000
#: LeRobot starts a new data file once the current one holds this many megabytes.
_DATA_FILE_MB = 100
_CORNER_NAMES = [f"corner{i}_{axis}" for i in range(8) for axis in ("x", "y")]


class DatasetError(ValueError):
    """A dataset that cannot be used as given; the message names the dataset and the problem."""


@dataclass
class Dataset:
    """Episodes read from disk.

    Attributes:
        episodes: the episodes, in the dataset's order.
        fps: frames per second.
        source: the path read.
        format: ``"lerobot-v3.0"``, ``"lerobot-v2.1"`` (the version the dataset declares) or
            ``"zarr"``.
    """

    episodes: list[Episode]
    fps: float
    source: str
    format: str

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def n_frames(self) -> int:
        return sum(len(e) for e in self.episodes)


# --- checks -------------------------------------------------------------------------------------
def check_episodes(episodes: Sequence[Episode], source: str | Path = "<episodes>") -> None:
    """Raise :class:`DatasetError` unless the episodes are consistent and finite.

    Every episode must have at least one frame, 2-d actions, one observation per action, the same
    observation features and per-frame sizes as the first episode, and no NaN or infinity in
    actions, rewards or floating-point observations.

    Args:
        episodes: the episodes to check.
        source: the dataset named in messages.

    Raises:
        DatasetError: naming the first offending episode (its position), key and frame.
    """
    if len(episodes) == 0:
        raise DatasetError(f"{source}: the dataset holds no episodes")
    first = episodes[0]
    keys = list(first.observations)
    for i, ep in enumerate(episodes):
        actions = np.asarray(ep.actions)
        if actions.ndim != 2:
            raise DatasetError(f"{source}: episode {i}: 'action' must be (frames, action_dim), got shape "
                               f"{actions.shape}")
        if len(actions) == 0:
            raise DatasetError(f"{source}: episode {i} has no frames")
        if actions.shape[1] != np.asarray(first.actions).shape[1]:
            raise DatasetError(f"{source}: episode {i}: 'action' has {actions.shape[1]} dimensions, episode 0 has "
                               f"{np.asarray(first.actions).shape[1]}")
        _check_finite(actions, source, i, "action")
        if set(ep.observations) != set(keys):
            missing = [k for k in keys if k not in ep.observations]
            extra = [k for k in ep.observations if k not in keys]
            what = (f"has no observation {missing[0]!r} (episode 0 has it)" if missing
                    else f"has an observation {extra[0]!r} that episode 0 lacks")
            raise DatasetError(f"{source}: episode {i} {what}")
        for key in keys:
            values = np.asarray(ep.observations[key])
            if values.ndim == 0 or len(values) != len(actions):
                got = "no time axis" if values.ndim == 0 else f"{len(values)} frames"
                raise DatasetError(f"{source}: episode {i}: observation {key!r} has {got} but 'action' has "
                                   f"{len(actions)}")
            ref = np.asarray(first.observations[key]).shape[1:]
            if values.shape[1:] != ref:
                raise DatasetError(f"{source}: episode {i}: observation {key!r} has per-frame shape "
                                   f"{values.shape[1:]}, episode 0 has {ref}")
            if values.dtype.kind == "f":
                _check_finite(values, source, i, key)
            elif values.dtype.kind not in "iub":
                raise DatasetError(f"{source}: episode {i}: observation {key!r} holds {values.dtype} values, "
                                   "not numbers")
        if ep.rewards is not None:
            rewards = np.asarray(ep.rewards)
            if rewards.shape != (len(actions),):
                raise DatasetError(f"{source}: episode {i}: 'reward' has shape {rewards.shape}, expected "
                                   f"({len(actions)},)")
            _check_finite(rewards, source, i, "reward")


def _check_finite(values: np.ndarray, source: str | Path, episode: int, key: str) -> None:
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        frame = int(np.flatnonzero(bad.reshape(len(values), -1).any(axis=1))[0])
        kind = "NaN" if np.isnan(values[frame]).any() else "an infinite value"
        raise DatasetError(f"{source}: episode {episode}, frame {frame}: {key!r} holds {kind}")


def _unknown_features(source: str | Path, wanted: Sequence[str], available: Sequence[str], note: str = "") -> None:
    missing = [f for f in wanted if f not in available]
    if missing:
        raise DatasetError(f"{source}: no feature {', '.join(map(repr, missing))} (this dataset provides: "
                           f"{', '.join(available) or 'none'}){note}")


# --- writing ------------------------------------------------------------------------------------
def _prepare_output(path: Path, overwrite: bool) -> Path:
    """A fresh temporary sibling of ``path`` to write into; :func:`_commit` moves it in place."""
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise DatasetError(f"{path} already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")


def _commit(tmp: Path, path: Path) -> None:
    # Written aside and swapped in, so a failed write never leaves a half dataset at ``path``.
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    os.replace(tmp, path)


def _discard(tmp: Path) -> None:
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp.exists():
        tmp.unlink()


def _with_environment_state(episodes: Sequence[Episode]) -> list[dict[str, np.ndarray]]:
    """Each episode's observations, with ``environment_state`` computed from ``block_pose``
    where only the latter is recorded."""
    out = []
    for ep in episodes:
        obs = dict(ep.observations)
        if "environment_state" not in obs and "block_pose" in obs:
            obs["environment_state"] = _corners(obs["block_pose"])
        out.append(obs)
    return out


def _require(path: Path, episodes: Sequence[Episode], keys: Sequence[str], what: str) -> None:
    for key in keys:
        if key not in episodes[0].observations:
            raise DatasetError(f"{path}: the episodes have no observation {key!r}, which {what} needs "
                               f"(they have: {', '.join(episodes[0].observations) or 'none'})")


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def _stats(values: np.ndarray) -> dict[str, list[Any]]:
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    return {"min": values.min(0).tolist(), "max": values.max(0).tolist(), "mean": values.mean(0).tolist(),
            "std": values.std(0).tolist(), "count": [len(values)]}


def _image_stats(images: np.ndarray, most: int = 1000) -> dict[str, list[Any]]:
    """Per-channel statistics in [0, 1], shaped (3, 1, 1) as LeRobot keeps them for images, from
    at most ``most`` evenly spaced frames (LeRobot also estimates them from a sample)."""
    if len(images) > most:
        images = images[np.linspace(0, len(images) - 1, most).round().astype(np.int64)]
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float32) / np.float32(255.0)
    mean = pixels.mean(0, dtype=np.float64)
    std = pixels.std(0, dtype=np.float64)

    def nest(v: np.ndarray) -> list[Any]:
        return [[[float(x)]] for x in v]

    return {"min": nest(pixels.min(0)), "max": nest(pixels.max(0)), "mean": nest(mean), "std": nest(std),
            "count": [len(images)]}


def write_lerobot(
    path: str | Path,
    episodes: Sequence[Episode],
    *,
    fps: int = DEFAULT_FPS,
    task: str = DEFAULT_TASK,
    overwrite: bool = False,
) -> Path:
    """Write episodes as a LeRobot dataset (format v3.0) with images kept as PNG in the parquet.

    Columns: ``observation.state`` (agent_pos), ``observation.environment_state`` (computed from
    ``block_pose`` when not recorded), ``observation.image`` (only when the episodes have
    images), ``action``, ``episode_index``, ``frame_index``, ``timestamp``, ``next.reward`` (when
    rewards are recorded), ``next.done``, ``next.success`` (true on the last frame of a
    successful episode), ``index`` and ``task_index``. ``block_pose`` has no LeRobot column and is
    not written. The per-episode metadata also records ``success``, ``max_coverage`` and ``seed``.

    Args:
        path: the dataset root to create.
        episodes: the episodes, all with ``agent_pos``.
        fps: frames per second (timestamps are ``frame_index / fps``).
        task: the task description every episode is given.
        overwrite: replace ``path`` if it exists.

    Returns:
        The dataset root.

    Raises:
        DatasetError: ``path`` exists and ``overwrite`` is false, or the episodes are
            inconsistent (see :func:`check_episodes`) or lack ``agent_pos``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    check_episodes(episodes, path)
    _require(path, episodes, ["agent_pos"], "observation.state")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    tmp = _prepare_output(path, overwrite)
    try:
        observations = _with_environment_state(episodes)
        has_env = "environment_state" in observations[0]
        has_image = "image" in observations[0]
        has_reward = all(ep.rewards is not None for ep in episodes)
        action_dim = int(np.asarray(episodes[0].actions).shape[1])

        features: dict[str, dict[str, Any]] = {
            _STATE: {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
        }
        if has_env:
            features[_ENV_STATE] = {"dtype": "float32", "shape": [16], "names": list(_CORNER_NAMES)}
        if has_image:
            h, w, c = np.asarray(observations[0]["image"]).shape[1:]
            features[_IMAGE] = {"dtype": "image", "shape": [int(h), int(w), int(c)],
                                "names": ["height", "width", "channels"]}
        features["action"] = {"dtype": "float32", "shape": [action_dim],
                              "names": ["x", "y"] if action_dim == 2 else None}
        scalars = {"episode_index": "int64", "frame_index": "int64", "timestamp": "float32"}
        if has_reward:
            scalars["next.reward"] = "float32"
        scalars.update({"next.done": "bool", "next.success": "bool", "index": "int64", "task_index": "int64"})
        for key, dtype in scalars.items():
            features[key] = {"dtype": dtype, "shape": [1], "names": None}

        arrow_types = {"float32": pa.float32(), "int64": pa.int64(), "bool": pa.bool_()}
        fields = []
        for key, spec in features.items():
            if spec["dtype"] == "image":
                fields.append(pa.field(key, pa.struct([("bytes", pa.binary()), ("path", pa.string())])))
            elif key in scalars:
                fields.append(pa.field(key, arrow_types[spec["dtype"]]))
            else:
                fields.append(pa.field(key, pa.list_(pa.float32(), spec["shape"][0])))
        schema = pa.schema(fields, metadata={"huggingface": json.dumps({"info": {"features": _hf_features(features)}})})

        def vectors(values: np.ndarray) -> Any:
            values = np.ascontiguousarray(values, dtype=np.float32)
            return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])

        (tmp / "data").mkdir(parents=True)
        rows: list[dict[str, Any]] = []
        pending: list[Any] = []
        pending_bytes = 0
        chunk, file = 0, 0
        start = 0

        def flush() -> None:
            nonlocal pending, pending_bytes, chunk, file
            if not pending:
                return
            target = tmp / _V3_DATA_PATH.format(chunk_index=chunk, file_index=file)
            target.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.concat_tables(pending), target)
            pending, pending_bytes = [], 0
            file += 1
            if file == _CHUNKS_SIZE:
                chunk, file = chunk + 1, 0

        for e, (ep, obs) in enumerate(zip(episodes, observations)):
            n = len(ep)
            frames = np.arange(n, dtype=np.int64)
            columns: dict[str, Any] = {_STATE: vectors(obs["agent_pos"])}
            if has_env:
                columns[_ENV_STATE] = vectors(obs["environment_state"])
            if has_image:
                png = [_png(img) for img in np.asarray(obs["image"])]
                columns[_IMAGE] = pa.StructArray.from_arrays(
                    [pa.array(png, pa.binary()), pa.array([None] * n, pa.string())], names=["bytes", "path"])
            columns["action"] = vectors(ep.actions)
            columns["episode_index"] = pa.array(np.full(n, e, dtype=np.int64))
            columns["frame_index"] = pa.array(frames)
            columns["timestamp"] = pa.array((frames / fps).astype(np.float32))
            if has_reward:
                columns["next.reward"] = pa.array(np.asarray(ep.rewards, dtype=np.float32))
            done = frames == n - 1
            columns["next.done"] = pa.array(done)
            columns["next.success"] = pa.array(done & bool(ep.success))
            columns["index"] = pa.array(start + frames)
            columns["task_index"] = pa.array(np.zeros(n, dtype=np.int64))
            table = pa.table(columns, schema=schema)
            if pending and pending_bytes + table.nbytes > _DATA_FILE_MB * 2**20:
                flush()
            pending.append(table)
            pending_bytes += table.nbytes

            row: dict[str, Any] = {
                "episode_index": e, "tasks": [task], "length": n,
                "data/chunk_index": chunk, "data/file_index": file,
                "dataset_from_index": start, "dataset_to_index": start + n,
                "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                "success": ep.success, "max_coverage": ep.max_coverage, "seed": ep.seed,
            }
            per_episode = {_STATE: obs["agent_pos"], "action": ep.actions}
            if has_env:
                per_episode[_ENV_STATE] = obs["environment_state"]
            for key, values in per_episode.items():
                for stat, value in _stats(values).items():
                    row[f"stats/{key}/{stat}"] = value
            rows.append(row)
            start += n
        flush()

        meta = tmp / "meta"
        (meta / "episodes" / "chunk-000").mkdir(parents=True)
        episode_types = {"success": pa.bool_(), "max_coverage": pa.float64(), "seed": pa.int64(),
                         "tasks": pa.list_(pa.string())}
        pq.write_table(pa.table({k: pa.array([r[k] for r in rows], episode_types.get(k)) for k in rows[0]}),
                       tmp / _V3_EPISODES_PATH.format(chunk_index=0, file_index=0))
        _write_tasks(meta / "tasks.parquet", [task])

        stats: dict[str, Any] = {}
        everything = {
            _STATE: np.concatenate([o["agent_pos"] for o in observations]),
            "action": np.concatenate([ep.actions for ep in episodes]),
        }
        if has_env:
            everything[_ENV_STATE] = np.concatenate([o["environment_state"] for o in observations])
        if has_reward:
            everything["next.reward"] = np.concatenate([ep.rewards for ep in episodes])
        frames = np.concatenate([np.arange(len(ep)) for ep in episodes])
        everything.update({
            "episode_index": np.concatenate([np.full(len(ep), e) for e, ep in enumerate(episodes)]),
            "frame_index": frames, "timestamp": frames / fps, "index": np.arange(start),
            "task_index": np.zeros(start),
        })
        for key, values in everything.items():
            stats[key] = _stats(values)
        if has_image:
            stats[_IMAGE] = _image_stats(np.concatenate([o["image"] for o in observations]))
        (meta / "stats.json").write_text(json.dumps(stats, indent=2))

        info = {
            "codebase_version": "v3.0",
            "robot_type": None,
            "total_episodes": len(episodes),
            "total_frames": start,
            "total_tasks": 1,
            "chunks_size": _CHUNKS_SIZE,
            "data_files_size_in_mb": _DATA_FILE_MB,
            "video_files_size_in_mb": 500,
            "fps": fps,
            "splits": {"train": f"0:{len(episodes)}"},
            "data_path": _V3_DATA_PATH,
            "video_path": _V3_VIDEO_PATH,
            "features": features,
        }
        (meta / "info.json").write_text(json.dumps(info, indent=4))
        _commit(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    return path


def _hf_features(features: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The Hugging Face ``datasets`` feature description LeRobot's loader expects in the parquet."""
    out: dict[str, Any] = {}
    for key, spec in features.items():
        if spec["dtype"] == "image":
            out[key] = {"_type": "Image"}
        elif spec["shape"] == [1] and spec["names"] is None:
            out[key] = {"dtype": spec["dtype"], "_type": "Value"}
        else:
            out[key] = {"feature": {"dtype": spec["dtype"], "_type": "Value"}, "length": spec["shape"][0],
                        "_type": "Sequence"}
    return out


def _write_tasks(target: Path, tasks: Sequence[str]) -> None:
    # LeRobot keeps tasks as a pandas frame indexed by the task text; pandas writes that index.
    try:
        import pandas as pd
    except ImportError:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"task_index": list(range(len(tasks))), "task": list(tasks)}), target)
        return
    frame = pd.DataFrame({"task_index": list(range(len(tasks)))}, index=pd.Index(list(tasks), name="task"))
    frame.to_parquet(target)


def write_zarr(
    path: str | Path,
    episodes: Sequence[Episode],
    *,
    fps: int = DEFAULT_FPS,
    overwrite: bool = False,
) -> Path:
    """Write episodes as a zarr replay buffer (zarr format 2) in Chi et al.'s layout.

    Arrays: ``data/state`` (N, 5) float32 (agent x, y, block x, y, angle), ``data/action``
    (N, A) float32, ``data/img`` (N, H, W, 3) uint8 when the episodes have images,
    ``data/environment_state`` (N, 16) float32 when recorded, ``data/reward`` (N,) float32 when
    every episode has rewards, and ``meta/episode_ends`` (E,) int64. The root's attributes keep
    ``fps`` and each episode's ``success``, ``max_coverage`` and ``seed``. A path ending in
    ``.zip`` is written as a zip file.

    Args:
        path: the store to create (a folder, conventionally ``*.zarr``, or ``*.zarr.zip``).
        episodes: the episodes, all with ``agent_pos`` and ``block_pose``.
        fps: frames per second, kept as an attribute.
        overwrite: replace ``path`` if it exists.

    Returns:
        The store's path.

    Raises:
        DatasetError: ``path`` exists and ``overwrite`` is false, or the episodes are
            inconsistent (see :func:`check_episodes`) or lack ``agent_pos`` or ``block_pose``.
    """
    import numcodecs
    import zarr

    path = Path(path)
    check_episodes(episodes, path)
    _require(path, episodes, ["agent_pos", "block_pose"], "data/state")
    tmp = _prepare_output(path, overwrite)
    folder = tmp.with_name(tmp.name + ".zarr") if path.suffix == ".zip" else tmp
    try:
        compressor = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
        attributes = {
            "fps": fps,
            "episodes": {
                "success": [None if ep.success is None else bool(ep.success) for ep in episodes],
                "max_coverage": [None if ep.max_coverage is None else float(ep.max_coverage) for ep in episodes],
                "seed": [None if ep.seed is None else int(ep.seed) for ep in episodes],
            },
        }
        root = zarr.open_group(folder, mode="w-", zarr_format=2, attributes=attributes)
        data, meta = root.create_group("data"), root.create_group("meta")

        def put(group: Any, name: str, values: np.ndarray, chunk_rows: int) -> None:
            chunks = (min(chunk_rows, max(len(values), 1)), *values.shape[1:])
            array = group.create_array(name, shape=values.shape, dtype=values.dtype, chunks=chunks,
                                       compressors=compressor)
            array[...] = values

        obs = [ep.observations for ep in episodes]
        state = np.concatenate([np.concatenate([o["agent_pos"], o["block_pose"]], axis=1) for o in obs])
        put(data, "state", state.astype(np.float32), 4096)
        put(data, "action", np.concatenate([ep.actions for ep in episodes]).astype(np.float32), 4096)
        if "environment_state" in obs[0]:
            env = np.concatenate([o["environment_state"] for o in obs])
            put(data, "environment_state", env.astype(np.float32), 4096)
        if "image" in obs[0]:
            put(data, "img", np.concatenate([o["image"] for o in obs]).astype(np.uint8), 128)
        if all(ep.rewards is not None for ep in episodes):
            put(data, "reward", np.concatenate([ep.rewards for ep in episodes]).astype(np.float32), 4096)
        put(meta, "episode_ends", np.cumsum([len(ep) for ep in episodes]).astype(np.int64), 4096)
        if folder != tmp:
            _zip_folder(folder, tmp)
            shutil.rmtree(folder)
        _commit(tmp, path)
    except BaseException:
        _discard(folder)
        _discard(tmp)
        raise
    return path


def _zip_folder(folder: Path, target: Path) -> None:
    """Zip a store's files with paths relative to its root (the layout zarr's ZipStore reads)."""
    # Chunks are compressed already; storing them keeps random access cheap.
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(folder).as_posix())


# --- reading ------------------------------------------------------------------------------------
def detect_format(path: str | Path) -> str:
    """The layout of ``path``: ``"lerobot"`` or ``"zarr"``.

    A folder with ``meta/info.json`` is a LeRobot dataset; a folder named ``*.zarr`` or holding
    ``meta/episode_ends`` (or zarr metadata), and a ``.zip`` file, are zarr replay buffers.

    Raises:
        DatasetError: the path does not exist or is neither.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / "meta" / "info.json").is_file():
            return "lerobot"
        if path.suffix == ".zarr" or (path / "meta" / "episode_ends").exists() or (path / ".zgroup").is_file() \
                or (path / "zarr.json").is_file():
            return "zarr"
        raise DatasetError(f"{path}: unknown dataset layout (neither a LeRobot dataset with meta/info.json nor a zarr "
                           "replay buffer with meta/episode_ends)")
    if path.name.endswith(".zip"):
        return "zarr"
    raise DatasetError(f"{path}: unknown dataset layout; give a LeRobot dataset folder, a zarr replay buffer folder "
                       "or a .zarr.zip file")


def read_dataset(path: str | Path, *, features: Sequence[str] | None = None) -> Dataset:
    """Read a LeRobot dataset (v3.0, v2.1) or a zarr replay buffer, detecting which.

    LeRobot ``observation.state`` becomes ``agent_pos`` when it has 2 values; with 5 values it
    is Push-T's state and gives ``agent_pos`` and ``block_pose``. ``observation.environment_state``
    becomes ``environment_state`` and ``observation.image`` (or a single ``observation.images.*``)
    ``image``. A zarr buffer's ``data/state`` gives ``agent_pos`` and ``block_pose`` (angle wrapped
    to [0, 2π)), ``data/environment_state`` (or the block's corners computed from its pose)
    ``environment_state``, and ``data/img`` ``image``.

    Args:
        path: the dataset root, zarr folder or ``.zarr.zip``.
        features: the canonical features to read (default: every one the dataset provides).

    Returns:
        The episodes with the requested features, checked with :func:`check_episodes`.

    Raises:
        DatasetError: unknown layout, a requested feature or the actions missing, images stored as
            video, inconsistent lengths or sizes, NaN or infinite values, or no episodes; the
            message names the dataset and the key, episode and frame.
    """
    path = Path(path)
    if features is not None:
        features = list(features)
    kind = detect_format(path)
    if kind == "lerobot":
        dataset = _read_lerobot(path, features)
    else:
        dataset = _read_zarr(path, features)
    check_episodes(dataset.episodes, path)
    return dataset


def _load_json(path: Path, source: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{source}: cannot read {path.relative_to(source)} ({exc})") from None


def _read_lerobot(root: Path, wanted: list[str] | None) -> Dataset:
    import pyarrow as pa
    import pyarrow.parquet as pq

    info = _load_json(root / "meta" / "info.json", root)
    version = str(info.get("codebase_version", ""))
    specs = info.get("features")
    if not isinstance(specs, dict):
        raise DatasetError(f"{root}: meta/info.json has no 'features'")
    if "action" not in specs:
        raise DatasetError(f"{root}: no 'action' feature (features: {', '.join(specs)})")

    # Which column gives which canonical feature.
    columns: dict[str, str] = {}
    state = specs.get(_STATE)
    state_dim = _size(state) if state is not None else None
    if state_dim == 2:
        columns["agent_pos"] = _STATE
    elif state_dim == 5:
        columns["agent_pos"] = columns["block_pose"] = _STATE
    env = specs.get(_ENV_STATE)
    if env is not None and _size(env) == 16:
        columns["environment_state"] = _ENV_STATE
    elif state_dim == 5:
        columns["environment_state"] = _STATE
    image_keys = [k for k in specs if k == _IMAGE or k.startswith("observation.images.")]
    image_key = _IMAGE if _IMAGE in image_keys else (image_keys[0] if len(image_keys) == 1 else None)
    if image_key is not None:
        columns["image"] = image_key
    available = [f for f in FEATURES if f in columns]
    if wanted is None:
        wanted = available
    note = ""
    if state is not None and state_dim not in (2, 5):
        note = f"; its {_STATE!r} has {state_dim} values, not 2 (agent_pos) or 5 (agent_pos and block_pose)"
    elif len(image_keys) > 1 and image_key is None:
        note = f"; it has several image keys ({', '.join(image_keys)}) and none is {_IMAGE!r}"
    _unknown_features(root, wanted, available, note)
    if "image" in wanted and specs[columns["image"]].get("dtype") == "video":
        raise DatasetError(f"{root}: {columns['image']!r} is stored as video (dtype 'video'), which is not supported; "
                           "read it without images (features without 'image') or convert its frames to dtype 'image'")

    keep = sorted({columns[f] for f in wanted} | {"action"})
    extra = [k for k in ("next.reward", "next.success") if k in specs]
    if version.startswith("v3"):
        files, lengths, meta = _v3_files(root, info)
        fmt = f"lerobot-{version}"
    elif version in ("v2.0", "v2.1"):
        files, lengths, meta = _v2_files(root, info)
        fmt = f"lerobot-{version}"
    else:
        raise DatasetError(f"{root}: LeRobot codebase_version {version or '(missing)'!r} is not supported "
                           "(v3.0, v2.1 and v2.0 are)")

    tables = []
    for file in files:
        try:
            present = set(pq.read_schema(file).names)
        except (OSError, pa.ArrowInvalid) as exc:
            raise DatasetError(f"{root}: cannot read {file.relative_to(root)} ({exc})") from None
        need = [*keep, "episode_index", "frame_index"]
        missing = [k for k in need if k not in present]
        if missing:
            raise DatasetError(f"{root}: {file.relative_to(root)} has no column {missing[0]!r}")
        tables.append(pq.read_table(file, columns=need + [k for k in extra if k in present]))
    if not tables:
        raise DatasetError(f"{root}: the dataset holds no episodes")
    table = pa.concat_tables(tables, promote_options="default")
    if table.num_rows == 0:
        raise DatasetError(f"{root}: the dataset holds no episodes")

    episode_index = table["episode_index"].to_numpy()
    frame_index = table["frame_index"].to_numpy()
    order = np.lexsort((frame_index, episode_index))
    table = table.take(pa.array(order))
    episode_index, frame_index = episode_index[order], frame_index[order]
    ids, starts, counts = np.unique(episode_index, return_index=True, return_counts=True)

    arrays: dict[str, np.ndarray] = {}
    for key in keep:
        if key == columns.get("image"):
            arrays[key] = _images(table[key], specs[key], root, key, episode_index, frame_index)
        else:
            arrays[key] = _vectors(table[key], _size(specs[key]), root, key)
    reward = (table["next.reward"].to_numpy(zero_copy_only=False).astype(np.float32)
              if "next.reward" in table.column_names else None)
    success = (np.asarray(table["next.success"].to_numpy(zero_copy_only=False), dtype=bool)
               if "next.success" in table.column_names else None)

    episodes = []
    for ep_id, start, n in zip(ids.tolist(), starts.tolist(), counts.tolist()):
        frames = frame_index[start:start + n]
        if not np.array_equal(frames, np.arange(n)):
            gap = int(np.flatnonzero(frames != np.arange(n))[0])
            raise DatasetError(f"{root}: episode {ep_id}: frame_index is not 0..{n - 1} (position {gap} holds "
                               f"{int(frames[gap])})")
        if ep_id in lengths and lengths[ep_id] != n:
            raise DatasetError(f"{root}: episode {ep_id}: the metadata says {lengths[ep_id]} frames, the data "
                               f"holds {n}")
        rows = slice(start, start + n)
        obs: dict[str, np.ndarray] = {}
        for name in wanted:
            values = arrays[columns[name]][rows]
            if columns[name] == _STATE and state_dim == 5:
                if name == "agent_pos":
                    values = values[:, :2]
                elif name == "block_pose":
                    values = _wrap_pose(values[:, 2:5])
                else:
                    values = _corners(values[:, 2:5])
            obs[name] = np.array(values)
        ep_meta = meta.get(ep_id, {})
        ep_success = ep_meta.get("success")
        if ep_success is None and success is not None:
            ep_success = bool(success[rows].any())
        episodes.append(Episode(
            observations=obs,
            actions=np.array(arrays["action"][rows], dtype=np.float32),
            success=ep_success,
            max_coverage=ep_meta.get("max_coverage"),
            seed=ep_meta.get("seed"),
            rewards=None if reward is None else reward[rows].copy(),
        ))
    missing = sorted(set(lengths) - set(ids.tolist()))
    if missing:
        raise DatasetError(f"{root}: episode {missing[0]} is listed in the metadata but has no frames in the data")
    return Dataset(episodes, float(info.get("fps", DEFAULT_FPS)), str(root), fmt)


def _size(spec: dict[str, Any]) -> int:
    return int(math.prod(int(s) for s in spec.get("shape", [1])))


def _v3_files(root: Path, info: dict[str, Any]) -> tuple[list[Path], dict[int, int], dict[int, dict[str, Any]]]:
    """Data files, episode lengths and our per-episode extras from v3.0 metadata."""
    import pyarrow.parquet as pq

    template = str(info.get("data_path") or _V3_DATA_PATH)
    meta_files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    lengths: dict[int, int] = {}
    extras: dict[int, dict[str, Any]] = {}
    files: list[Path] = []
    for meta_file in meta_files:
        table = pq.read_table(meta_file)
        rows = table.to_pylist()
        for row in rows:
            e = int(row["episode_index"])
            if "length" in row:
                lengths[e] = int(row["length"])
            extras[e] = {k: row[k] for k in ("success", "max_coverage", "seed") if row.get(k) is not None}
            if "data/chunk_index" in row and "data/file_index" in row:
                file = root / template.format(chunk_index=int(row["data/chunk_index"]),
                                              file_index=int(row["data/file_index"]))
                if not file.is_file():
                    raise DatasetError(f"{root}: episode {e}'s data file {file.relative_to(root)} is missing")
                if file not in files:
                    files.append(file)
    if not files:
        files = sorted((root / "data").glob("chunk-*/file-*.parquet"))
    return files, lengths, extras


def _v2_files(root: Path, info: dict[str, Any]) -> tuple[list[Path], dict[int, int], dict[int, dict[str, Any]]]:
    """Data files and episode lengths from v2.x metadata (``meta/episodes.jsonl``)."""
    template = str(info.get("data_path") or _V2_DATA_PATH)
    chunks_size = int(info.get("chunks_size", _CHUNKS_SIZE))
    listing = root / "meta" / "episodes.jsonl"
    lengths: dict[int, int] = {}
    files: list[Path] = []
    if listing.is_file():
        for number, line in enumerate(listing.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                e = int(row["episode_index"])
            except (ValueError, KeyError, TypeError):
                raise DatasetError(f"{root}: meta/episodes.jsonl line {number} is not an episode record") from None
            if "length" in row:
                lengths[e] = int(row["length"])
            file = root / template.format(episode_chunk=e // chunks_size, episode_index=e)
            if not file.is_file():
                raise DatasetError(f"{root}: episode {e}'s data file {file.relative_to(root)} is missing")
            files.append(file)
    else:
        files = sorted((root / "data").glob("chunk-*/episode_*.parquet"))
    return files, lengths, {}


def _vectors(column: Any, size: int, root: Path, key: str) -> np.ndarray:
    """A list (or fixed-size list, or scalar) column as a float array (rows, size)."""
    import pyarrow as pa

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise DatasetError(f"{root}: {key!r} is empty at row {row}")
    n = len(column)
    while any(test(column.type) for test in (pa.types.is_list, pa.types.is_fixed_size_list, pa.types.is_large_list)):
        column = column.flatten()
    values = column.to_numpy(zero_copy_only=False)
    if values.size != n * size:
        raise DatasetError(f"{root}: {key!r} holds {values.size} values in {n} rows, not {size} per row")
    return values.reshape(n, size).astype(np.float32 if values.dtype.kind == "f" else np.float64)


def _images(column: Any, spec: dict[str, Any], root: Path, key: str, episodes: np.ndarray,
            frames: np.ndarray) -> np.ndarray:
    """PNG structs (``bytes``, ``path``) or nested arrays as uint8 (rows, H, W, C)."""
    import pyarrow as pa

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    shape = tuple(int(s) for s in spec.get("shape", ()))
    if pa.types.is_struct(column.type):
        from PIL import Image

        data = column.field("bytes").to_pylist() if column.type.get_field_index("bytes") >= 0 else [None] * len(column)
        paths = column.field("path").to_pylist() if column.type.get_field_index("path") >= 0 else [None] * len(column)
        out = None
        for i, (blob, rel) in enumerate(zip(data, paths)):
            where = f"{root}: episode {int(episodes[i])}, frame {int(frames[i])}: {key!r}"
            try:
                if blob is not None:
                    image = Image.open(io.BytesIO(blob))
                elif rel:
                    image = Image.open(root / rel)
                else:
                    raise DatasetError(f"{where} has neither image bytes nor a path")
                pixels = np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)
            except (OSError, ValueError) as exc:
                if isinstance(exc, DatasetError):
                    raise
                raise DatasetError(f"{where} is not a readable image ({exc})") from None
            if out is None:
                out = np.empty((len(column), *pixels.shape), dtype=np.uint8)
            if pixels.shape != out.shape[1:]:
                raise DatasetError(f"{where} has shape {pixels.shape}, earlier frames {out.shape[1:]}")
            out[i] = pixels
        return out if out is not None else np.empty((0, *shape), dtype=np.uint8)
    values = _vectors(column, int(math.prod(shape)), root, key)
    return values.reshape(len(values), *shape).astype(np.uint8)


def _wrap_pose(pose: np.ndarray) -> np.ndarray:
    pose = np.array(pose, dtype=np.float32)
    pose[:, 2] = np.mod(pose[:, 2], 2 * np.pi)
    return pose


def _corners(pose: np.ndarray) -> np.ndarray:
    from .pusht import block_corners

    pose = np.asarray(pose, dtype=np.float64)
    return np.asarray(block_corners(pose[:, 0], pose[:, 1], pose[:, 2]), dtype=np.float32)


def _open_zarr(path: Path) -> tuple[Any, Any]:
    """(root group holding ``meta/episode_ends``, store to close or ``None``)."""
    import zarr

    store = None
    try:
        if path.is_file():
            # A zip of the store's folder holds the store one level (or more) down.
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
            prefix = next((name[: -len(tail)] for name in sorted(names, key=len)
                           for tail in ("meta/episode_ends/.zarray", "meta/episode_ends/zarr.json")
                           if name.endswith(tail)), "")
            store = zarr.storage.ZipStore(path, mode="r")
            group = zarr.open_group(store, mode="r", path=prefix.rstrip("/") or None)
        else:
            group = zarr.open_group(path, mode="r")
    except Exception as exc:  # zarr and zipfile raise several kinds for a store they cannot parse
        if store is not None:
            store.close()
        raise DatasetError(f"{path}: not a readable zarr store ({type(exc).__name__}: {exc})") from None
    return group, store


def _read_zarr(path: Path, wanted: list[str] | None) -> Dataset:
    group, store = _open_zarr(path)
    try:
        if "meta" not in group or "episode_ends" not in group["meta"]:
            raise DatasetError(f"{path}: not a replay buffer: no 'meta/episode_ends'")
        if "data" not in group:
            raise DatasetError(f"{path}: not a replay buffer: no 'data' group")
        data = group["data"]
        keys = [name for name, _ in data.arrays()]
        if "action" not in keys:
            raise DatasetError(f"{path}: no 'data/action' (data holds: {', '.join(keys) or 'nothing'})")
        available = []
        if "state" in keys:
            available += ["agent_pos", "environment_state", "block_pose"]
        elif "environment_state" in keys:
            available += ["environment_state"]
        if "img" in keys:
            available.append("image")
        available = [f for f in FEATURES if f in available]
        if wanted is None:
            wanted = available
        _unknown_features(path, wanted, available)

        ends = np.asarray(group["meta"]["episode_ends"][...]).astype(np.int64).reshape(-1)
        actions = np.asarray(data["action"][...], dtype=np.float32)
        if actions.ndim == 1:
            actions = actions[:, None]
        n = len(actions)
        if len(ends) == 0:
            raise DatasetError(f"{path}: the dataset holds no episodes (meta/episode_ends is empty)")
        starts = np.concatenate([[0], ends[:-1]])
        short = np.flatnonzero(ends <= starts)
        if len(short):
            e = int(short[0])
            raise DatasetError(f"{path}: episode {e}: meta/episode_ends does not increase ({int(starts[e])} to "
                               f"{int(ends[e])}), the episode would have no frames")
        arrays: dict[str, np.ndarray] = {"action": actions}
        if any(f in wanted for f in ("agent_pos", "block_pose")) or (
                "environment_state" in wanted and "environment_state" not in keys):
            state = np.asarray(data["state"][...], dtype=np.float32)
            if state.ndim != 2 or state.shape[1] < 5:
                raise DatasetError(f"{path}: 'data/state' has shape {state.shape}, expected (N, 5): agent x, y, "
                                   "block x, y, angle")
            arrays["state"] = state
        if "environment_state" in wanted:
            arrays["environment_state"] = (np.asarray(data["environment_state"][...], dtype=np.float32)
                                           if "environment_state" in keys else _corners(arrays["state"][:, 2:5]))
        if "image" in wanted:
            arrays["img"] = np.asarray(data["img"][...])
        for key, values in arrays.items():
            where = "data/" + key if key != "environment_state" or "environment_state" in keys else "data/state"
            if len(values) != n:
                raise DatasetError(f"{path}: {where!r} has {len(values)} rows, 'data/action' has {n}")
        if int(ends[-1]) != n:
            raise DatasetError(f"{path}: meta/episode_ends ends at {int(ends[-1])}, but 'data/action' has {n} rows")
        reward = np.asarray(data["reward"][...], dtype=np.float32) if "reward" in keys else None
        attrs = dict(group.attrs)
        fps = float(attrs.get("fps", DEFAULT_FPS))
        extras = attrs.get("episodes") or {}

        def extra(name: str, e: int) -> Any:
            values = extras.get(name)
            return values[e] if isinstance(values, list) and e < len(values) else None

        episodes = []
        for e, (start, end) in enumerate(zip(starts.tolist(), ends.tolist())):
            obs: dict[str, np.ndarray] = {}
            for name in wanted:
                if name == "agent_pos":
                    obs[name] = arrays["state"][start:end, :2].copy()
                elif name == "block_pose":
                    obs[name] = _wrap_pose(arrays["state"][start:end, 2:5])
                elif name == "environment_state":
                    obs[name] = arrays["environment_state"][start:end].copy()
                else:
                    obs[name] = np.ascontiguousarray(arrays["img"][start:end])
            episodes.append(Episode(obs, actions[start:end].copy(), success=extra("success", e),
                                    max_coverage=extra("max_coverage", e), seed=extra("seed", e),
                                    rewards=None if reward is None else reward[start:end].copy()))
    finally:
        if store is not None:
            store.close()
    return Dataset(episodes, fps, str(path), "zarr")
