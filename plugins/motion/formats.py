"""Readers for the motion data sets' on-disk layouts: HumanML3D, AMASS and Human3.6M.

Every reader checks what it loads and raises :class:`MotionDataError` (a ``ValueError``) whose
message names the file and the field or line at fault. The HumanML3D reader is the exception
for per-clip faults: one broken clip among thousands should not stop training, so it skips the
clip and records ``(id, reason)`` in the ``problems`` attribute of the list it returns.

- :func:`read_humanml3d`, :func:`read_stats`: the HumanML3D folder (``new_joint_vecs/``,
  ``new_joints/``, ``texts/``, ``<split>.txt``, ``Mean.npy``, ``Std.npy``).
- :func:`read_amass`: an AMASS ``.npz`` of SMPL-H / SMPL-X parameters turned into 22 joint
  positions through the ``smplx`` package and a body-model file the user supplies.
- :func:`read_h36m_3d`, :func:`read_h36m_2d`, :func:`h36m_32_to_17`: the VideoPose3D
  ``data_3d_h36m.npz`` / ``data_2d_h36m_*.npz`` files. These hold pickled Python objects, and
  unpickling runs code chosen by whoever wrote the file, so both readers refuse unless called
  with ``allow_pickle=True`` for a file you trust.
- :func:`read_keypoints_2d`: polydiff's own pickle-free 2D keypoint ``.npz``.
"""

from __future__ import annotations

import contextlib
import io
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from .features import FEATURE_DIM, NUM_JOINTS, FeatureStats

__all__ = [
    "MotionDataError",
    "Caption",
    "MotionRecord",
    "HumanML3DSplit",
    "read_humanml3d",
    "read_split_ids",
    "read_stats",
    "HUMANML3D_FPS",
    "AMASS_Z_UP_TO_Y_UP",
    "read_amass",
    "H36M_17_FROM_32",
    "H36M_17_NAMES",
    "H36M2D",
    "h36m_32_to_17",
    "read_h36m_3d",
    "read_h36m_2d",
    "Keypoints2D",
    "read_keypoints_2d",
]

#: HumanML3D's frame rate; caption intervals are in seconds at this rate.
HUMANML3D_FPS = 20.0


class MotionDataError(ValueError):
    """A motion file that cannot be read; the message names the file and the field or line."""


def _load_npz(path: Path, *, allow_pickle: bool = False) -> dict[str, Any]:
    """All arrays of an ``.npz`` file, read eagerly so the file is closed on return."""
    if not path.is_file():
        raise MotionDataError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):  # np.load would otherwise try to unpickle it
        raise MotionDataError(f"{path}: not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=allow_pickle) as data:
            return {key: data[key] for key in data.files}
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise MotionDataError(f"{path}: holds pickled objects; pass allow_pickle=True only for a file you "
                                  "trust, since unpickling can run arbitrary code") from error
        raise MotionDataError(f"{path}: not a readable .npz file ({error})") from error
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise MotionDataError(f"{path}: not a readable .npz file ({error})") from error


def _field(data: dict[str, Any], key: str, path: Path) -> Any:
    if key not in data:
        raise MotionDataError(f"{path}: missing field {key!r}; fields present: {', '.join(sorted(data)) or 'none'}")
    return data[key]


def _float_array(value: Any, path: Path, name: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """``value`` as a finite float array of ``shape`` (``None`` matches any size)."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise MotionDataError(f"{path}: field {name!r} is not numeric ({error})") from error
    want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
    if array.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape)):
        raise MotionDataError(f"{path}: field {name!r} must have shape {want}; got {array.shape}")
    if not np.isfinite(array).all():
        raise MotionDataError(f"{path}: field {name!r} contains NaN or infinite values")
    return array


# --- HumanML3D ----------------------------------------------------------------------------------
class Caption(NamedTuple):
    """One description of a clip, or of the part of it from ``start_s`` to ``end_s`` seconds.

    A whole-clip caption (HumanML3D writes ``0.0#0.0``) gets ``start_s = 0`` and ``end_s`` the
    clip's duration, ``len(features) / 20`` s.
    """

    text: str
    start_s: float
    end_s: float
    tokens: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class MotionRecord:
    """One HumanML3D clip.

    Shapes:
        features: (T, 263) float32; joints: (T or T + 1, 22, 3) float32 or ``None``
        (HumanML3D's ``new_joints`` keep the frame that the features' velocities consume).
    """

    id: str
    features: np.ndarray
    captions: tuple[Caption, ...]
    joints: np.ndarray | None = None

    def frames(self, caption: Caption, fps: float = HUMANML3D_FPS) -> slice:
        """The feature rows a caption covers, ``int(start * fps) : int(end * fps)`` as HumanML3D cuts them."""
        return slice(int(caption.start_s * fps), min(int(caption.end_s * fps), len(self.features)))


class HumanML3DSplit(list):
    """The records :func:`read_humanml3d` read, a ``list[MotionRecord]``.

    Attributes:
        problems: ``(id, reason)`` for every clip that was skipped, in split order; the reason
            names the file and the field or line at fault.
    """

    def __init__(self, records: list[MotionRecord] = (), problems: list[tuple[str, str]] = ()) -> None:
        super().__init__(records)
        self.problems: list[tuple[str, str]] = list(problems)


def _read_captions(path: Path, num_rows: int, fps: float) -> tuple[Caption, ...]:
    """Parse ``text#tok/POS tok/POS#start#end`` lines; raises MotionDataError naming the line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise MotionDataError(f"{path}: cannot be read ({error})") from error
    captions = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.rstrip("\n").split("#")
        if len(parts) != 4:
            raise MotionDataError(f"{path}, line {number}: expected 'text#tokens#start#end' (4 fields separated "
                                  f"by '#'), got {len(parts)} field(s)")
        text, tokens, start, end = parts
        try:
            start_s, end_s = float(start), float(end)
        except ValueError as error:
            raise MotionDataError(f"{path}, line {number}: start/end must be numbers, got {start!r} and {end!r}") \
                from error
        # HumanML3D's loader reads NaN tags as 0, i.e. as the whole clip.
        start_s, end_s = (0.0 if math.isnan(start_s) else start_s), (0.0 if math.isnan(end_s) else end_s)
        if start_s == 0.0 and end_s == 0.0:
            end_s = num_rows / fps
        elif not 0.0 <= start_s < end_s:
            raise MotionDataError(f"{path}, line {number}: interval must satisfy 0 <= start < end; "
                                  f"got start {start_s} and end {end_s}")
        if not text.strip():
            raise MotionDataError(f"{path}, line {number}: empty caption text")
        captions.append(Caption(text.strip(), start_s, end_s, tuple(tokens.split())))
    if not captions:
        raise MotionDataError(f"{path}: no captions")
    return tuple(captions)


def _read_clip(root: Path, clip: str, min_frames: int, require_text: bool, fps: float) -> MotionRecord:
    path = root / "new_joint_vecs" / f"{clip}.npy"
    if not path.is_file():
        raise MotionDataError(f"{path}: missing")
    try:
        features = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise MotionDataError(f"{path}: not a readable .npy file ({error})") from error
    if features.ndim != 2 or features.shape[1] != FEATURE_DIM:
        raise MotionDataError(f"{path}: features must have shape (T, {FEATURE_DIM}); got {features.shape}")
    if len(features) < min_frames:
        raise MotionDataError(f"{path}: {len(features)} frames, fewer than the minimum {min_frames}")
    features = features.astype(np.float32)
    if not np.isfinite(features).all():
        rows = np.flatnonzero(~np.isfinite(features).all(axis=1))
        raise MotionDataError(f"{path}: NaN or infinite values in {len(rows)} frame(s), first at frame {rows[0]}")
    joints = None
    joints_path = root / "new_joints" / f"{clip}.npy"
    if joints_path.is_file():
        try:
            joints = np.load(joints_path, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as error:
            raise MotionDataError(f"{joints_path}: not a readable .npy file ({error})") from error
        if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3) or len(joints) not in (len(features),
                                                                                       len(features) + 1):
            raise MotionDataError(f"{joints_path}: joints must have shape (T or T + 1, {NUM_JOINTS}, 3) with "
                                  f"T = {len(features)} feature frames; got {joints.shape}")
        if not np.isfinite(joints).all():
            raise MotionDataError(f"{joints_path}: NaN or infinite values")
    text_path = root / "texts" / f"{clip}.txt"
    if text_path.is_file():
        captions = _read_captions(text_path, len(features), fps)
    elif require_text:
        raise MotionDataError(f"{text_path}: missing")
    else:
        captions = ()
    return MotionRecord(clip, features, captions, joints)


def read_humanml3d(root: str | Path, split: str = "train", *, min_frames: int = 40, require_text: bool = True,
                   fps: float = HUMANML3D_FPS) -> HumanML3DSplit:
    """The clips of one split of a HumanML3D folder.

    Args:
        root: the folder holding ``new_joint_vecs/<id>.npy`` (T, 263), optionally
            ``new_joints/<id>.npy`` (T + 1, 22, 3), ``texts/<id>.txt`` and ``<split>.txt``.
        split: the id list to read, ``<root>/<split>.txt``, one id a line.
        min_frames: clips with fewer feature rows are skipped (HumanML3D's loader uses 40).
            HumanML3D's loader also drops clips of 200 rows or more; this reader keeps them.
        require_text: skip clips without a caption file.
        fps: frame rate of the features, which converts caption times to rows.

    Returns:
        The records in split order. Clips whose files are missing or unreadable, have the wrong
        width, NaN or infinite values, fewer than ``min_frames`` rows or a malformed caption line
        are skipped and listed as ``(id, reason)`` in the result's ``problems`` attribute.

    Raises:
        MotionDataError: ``root`` or the split file is missing.
    """
    root = Path(root)
    ids = read_split_ids(root, split)
    result = HumanML3DSplit()
    for clip in ids:
        try:
            result.append(_read_clip(root, clip, min_frames, require_text, fps))
        except MotionDataError as error:
            result.problems.append((clip, str(error)))
    return result


def read_split_ids(root: str | Path, split: str) -> list[str]:
    """The clip ids of one split of a HumanML3D folder, ``<root>/<split>.txt`` (one id a line).

    Raises:
        MotionDataError: ``root`` or the split file is missing (the splits present are named).
    """
    root = Path(root)
    if not root.is_dir():
        raise MotionDataError(f"{root}: no such folder")
    split_path = root / f"{split}.txt"
    if not split_path.is_file():
        available = sorted(p.stem for p in root.glob("*.txt"))
        raise MotionDataError(f"{split_path}: no such split file; splits present: {', '.join(available) or 'none'}")
    return [line.strip() for line in split_path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_stats(root: str | Path) -> FeatureStats:
    """HumanML3D's normalisation statistics, ``<root>/Mean.npy`` and ``<root>/Std.npy``, each (263,).

    Raises:
        MotionDataError: a file is missing or unreadable, has the wrong shape, holds NaN, or a
            std is not positive.
    """
    root = Path(root)
    arrays = {}
    for name in ("Mean", "Std"):
        path = root / f"{name}.npy"
        if not path.is_file():
            raise MotionDataError(f"{path}: missing")
        try:
            value = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise MotionDataError(f"{path}: not a readable .npy file ({error})") from error
        arrays[name] = _float_array(value, path, name, (FEATURE_DIM,))
    bad = np.flatnonzero(arrays["Std"] <= 0)
    if len(bad):
        raise MotionDataError(f"{root / 'Std.npy'}: std must be positive; not at dimension(s) {bad[:10].tolist()}")
    return FeatureStats([float(v) for v in arrays["Mean"]], [float(v) for v in arrays["Std"]])


# --- AMASS through smplx ------------------------------------------------------------------------
#: AMASS is Z-up; HumanML3D's ``raw_pose_processing`` maps ``(x, y, z) -> (-x, z, y)`` (a proper
#: rotation, half a turn about (0, 1, 1)/√2) to reach the y-up frame. Acts on column vectors.
AMASS_Z_UP_TO_Y_UP = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])

_MODEL_PREFIXES = ("SMPLX", "SMPLH", "SMPL")


def _find_body_model(model_path: Path, gender: str) -> Path:
    if model_path.is_file():
        return model_path
    if model_path.is_dir():
        for prefix in _MODEL_PREFIXES:
            for ext in ("npz", "pkl"):
                for folder in (model_path, model_path / prefix.lower()):
                    candidate = folder / f"{prefix}_{gender.upper()}.{ext}"
                    if candidate.is_file():
                        return candidate
        raise MotionDataError(f"{model_path}: no body model for gender {gender!r}; looked for "
                              f"{{SMPL,SMPLH,SMPLX}}_{gender.upper()}.{{npz,pkl}} here and in smpl/, smplh/, smplx/")
    raise MotionDataError(f"{model_path}: no such body-model file or folder")


def _load_body_model(path: Path) -> dict[str, Any]:
    """The arrays ``smplx.lbs.lbs`` needs from a SMPL-family body-model file, as float64 tensors.

    ``.npz`` models are read with numpy (smplx's own SMPL loader opens ``.pkl`` files only, and
    would cut SMPL-H's 16 shape coefficients to 10); ``.pkl`` models go through ``smplx.SMPL``,
    which needs ``chumpy``.
    """
    import torch

    if path.suffix == ".pkl":
        import smplx

        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a warning for 10-beta models
            model = smplx.SMPL(model_path=str(path), num_betas=300)
        return {"v_template": model.v_template.double(), "shapedirs": model.shapedirs.double(),
                "posedirs": model.posedirs.double(), "J_regressor": model.J_regressor.double(),
                "parents": model.parents, "weights": model.lbs_weights.double()}
    data = _load_npz(path)
    v_template = _float_array(_field(data, "v_template", path), path, "v_template", (None, 3))
    num_vertices = len(v_template)
    kintree = np.asarray(_field(data, "kintree_table", path))
    if kintree.ndim != 2 or kintree.shape[0] != 2 or kintree.shape[1] < NUM_JOINTS:
        raise MotionDataError(f"{path}: field 'kintree_table' must have shape (2, J) with J >= {NUM_JOINTS}; "
                              f"got {kintree.shape}")
    num_joints = kintree.shape[1]
    shapedirs = _float_array(_field(data, "shapedirs", path), path, "shapedirs", (num_vertices, 3, None))
    posedirs = _float_array(_field(data, "posedirs", path), path, "posedirs", (num_vertices, 3, 9 * (num_joints - 1)))
    regressor = _float_array(_field(data, "J_regressor", path), path, "J_regressor", (num_joints, num_vertices))
    weights = _float_array(_field(data, "weights", path), path, "weights", (num_vertices, num_joints))
    parents = kintree[0].astype(np.int64)
    parents[0] = -1
    if any(not 0 <= p < j for j, p in enumerate(parents) if j > 0):
        raise MotionDataError(f"{path}: field 'kintree_table' must list a parent before each child; got {parents}")
    as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    return {"v_template": as_tensor(v_template), "shapedirs": as_tensor(shapedirs),
            "posedirs": as_tensor(posedirs.reshape(-1, posedirs.shape[-1]).T), "J_regressor": as_tensor(regressor),
            "parents": torch.as_tensor(parents), "weights": as_tensor(weights)}


def read_amass(npz_path: str | Path, model_path: str | Path, *,
               gender: Literal["neutral", "male", "female"] | None = "neutral", fps: float = 20.0) -> np.ndarray:
    """The 22 body-joint positions of an AMASS clip, y up, resampled to ``fps``.

    The joints are SMPL's forward kinematics (``smplx.lbs.lbs``) of the clip's shape and body
    pose, so they depend only on the first 66 pose values (root and 21 body joints) that SMPL,
    SMPL-H (156 values) and SMPL-X (165 values) share; hand, jaw and eye values are not used.
    Positions are computed at the capture rate and linearly interpolated at ``k / fps`` seconds
    for every ``k`` that stays inside the clip, which picks exact frames for an integer rate
    ratio (HumanML3D takes every ``rate / 20``-th frame).

    Args:
        npz_path: AMASS file with ``poses`` (T, 156 | 165), ``trans`` (T, 3), ``betas`` (B,),
            ``mocap_framerate`` or ``mocap_frame_rate`` and ``gender``.
        model_path: a body-model file (``SMPL*_<GENDER>.npz``; ``.pkl`` works through smplx
            but needs ``chumpy``) or a folder holding one for ``gender``.
        gender: which model to look for in a folder; ``None`` takes the clip's ``gender`` field.
        fps: output frame rate.

    Shapes:
        -> (T', 22, 3) float32, T' = floor(duration * fps) + 1

    Raises:
        MotionDataError: a missing or malformed field of the AMASS file or the model file.
        ImportError: smplx is not installed.
    """
    import torch

    npz_path, model_path = Path(npz_path), Path(model_path)
    data = _load_npz(npz_path)
    poses = _float_array(_field(data, "poses", npz_path), npz_path, "poses", (None, None))
    if poses.shape[1] < 3 * NUM_JOINTS:
        raise MotionDataError(f"{npz_path}: field 'poses' needs at least {3 * NUM_JOINTS} values per frame "
                              f"(156 for SMPL-H, 165 for SMPL-X); got {poses.shape}")
    if len(poses) == 0:
        raise MotionDataError(f"{npz_path}: field 'poses' has no frames")
    trans = _float_array(_field(data, "trans", npz_path), npz_path, "trans", (len(poses), 3))
    betas = _float_array(_field(data, "betas", npz_path), npz_path, "betas", (None,))
    rate_key = "mocap_framerate" if "mocap_framerate" in data else "mocap_frame_rate"
    rate = float(_float_array(_field(data, rate_key, npz_path), npz_path, rate_key, ()))
    if rate <= 0:
        raise MotionDataError(f"{npz_path}: field {rate_key!r} must be positive; got {rate}")
    if fps <= 0:
        raise ValueError(f"fps must be positive; got {fps}")
    if gender is None:
        gender = str(np.asarray(_field(data, "gender", npz_path)).item())
        gender = gender.decode() if isinstance(gender, bytes) else gender
    if gender not in ("neutral", "male", "female"):
        raise MotionDataError(f"{npz_path}: gender must be one of 'neutral', 'male', 'female'; got {gender!r}")

    try:
        from smplx.lbs import lbs
    except ImportError as error:
        raise ImportError("read_amass needs the smplx package: pip install smplx") from error
    model = _load_body_model(_find_body_model(model_path, gender))
    num_betas = model["shapedirs"].shape[-1]
    shape = torch.zeros(1, num_betas, dtype=torch.float64)
    shape[0, :min(num_betas, len(betas))] = torch.as_tensor(betas[:num_betas])
    num_model_joints = model["J_regressor"].shape[0]
    joints = []
    for start in range(0, len(poses), 512):
        chunk = torch.as_tensor(poses[start:start + 512, :3 * NUM_JOINTS], dtype=torch.float64)
        full = torch.cat((chunk, chunk.new_zeros(len(chunk), 3 * (num_model_joints - NUM_JOINTS))), dim=1)
        _, j = lbs(shape.expand(len(chunk), -1), full, model["v_template"], model["shapedirs"], model["posedirs"],
                   model["J_regressor"], model["parents"], model["weights"])
        joints.append(j[:, :NUM_JOINTS].numpy())
    positions = np.concatenate(joints) + trans[:, None, :]

    duration = (len(positions) - 1) / rate
    times = np.arange(math.floor(duration * fps + 1e-9) + 1) / fps
    source = times * rate
    lo = np.clip(np.floor(source + 1e-9).astype(int), 0, len(positions) - 1)
    hi = np.minimum(lo + 1, len(positions) - 1)
    weight = np.clip(source - lo, 0.0, 1.0)[:, None, None]
    resampled = (1 - weight) * positions[lo] + weight * positions[hi]
    return (resampled @ AMASS_Z_UP_TO_Y_UP.T).astype(np.float32)


# --- Human3.6M (VideoPose3D layout) -------------------------------------------------------------
#: The 17 of Human3.6M's 32 joints kept for evaluation (VideoPose3D's ``remove_joints``).
H36M_17_FROM_32 = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)
H36M_17_NAMES = (
    "hip", "right_hip", "right_knee", "right_foot", "left_hip", "left_knee", "left_foot", "spine", "thorax",
    "neck_nose", "head", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow",
    "right_wrist",
)
_PICKLE_REFUSAL = ("{path}: Human3.6M .npz files store Python objects with pickle, and unpickling runs code "
                   "chosen by whoever wrote the file; pass allow_pickle=True only for a file you trust")


def h36m_32_to_17(positions: np.ndarray) -> np.ndarray:
    """Keep the 17 evaluation joints of 32-joint Human3.6M poses.

    Shapes:
        positions: (..., 32, C) -> (..., 17, C)
    """
    positions = np.asarray(positions)
    if positions.ndim < 2 or positions.shape[-2] != 32:
        raise ValueError(f"positions must have shape (..., 32, C); got {positions.shape}")
    return positions[..., H36M_17_FROM_32, :]


def _object_dict(data: dict[str, Any], key: str, path: Path) -> dict:
    value = _field(data, key, path)
    value = value.item() if isinstance(value, np.ndarray) and value.dtype == object and value.shape == () else value
    if not isinstance(value, dict):
        raise MotionDataError(f"{path}: field {key!r} must hold a dict; got {type(value).__name__}")
    return value


def read_h36m_3d(npz_path: str | Path, *, allow_pickle: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """VideoPose3D's ``data_3d_h36m.npz``: ``positions_3d[subject][action]`` of 32 joints in metres.

    Args:
        npz_path: the file.
        allow_pickle: the file holds a pickled dict; unpickling can run arbitrary code, so it is
            only done when this is ``True``.

    Returns:
        ``{subject: {action: (T, 32, 3) float32}}``; :func:`h36m_32_to_17` keeps the evaluation joints.

    Raises:
        MotionDataError: ``allow_pickle`` is false, the field is missing, or an array has the
            wrong shape or non-finite values (named by subject and action).
    """
    path = Path(npz_path)
    if not allow_pickle:
        raise MotionDataError(_PICKLE_REFUSAL.format(path=path))
    positions = _object_dict(_load_npz(path, allow_pickle=True), "positions_3d", path)
    result: dict[str, dict[str, np.ndarray]] = {}
    for subject, actions in positions.items():
        if not isinstance(actions, dict):
            raise MotionDataError(f"{path}: field 'positions_3d[{subject!r}]' must be a dict of actions")
        result[str(subject)] = {
            str(action): _float_array(array, path, f"positions_3d[{subject!r}][{action!r}]", (None, 32, 3))
            .astype(np.float32) for action, array in actions.items()}
    return result


@dataclass(frozen=True, eq=False)
class H36M2D:
    """VideoPose3D's detected or projected 2D keypoints.

    Attributes:
        positions: ``{subject: {action: [(T, J, 2) float32 per camera]}}``, pixel coordinates as stored.
        keypoints_symmetry: the left and the right joint indices, which a horizontal flip swaps.
        num_joints: ``J``.
    """

    positions: dict[str, dict[str, list[np.ndarray]]]
    keypoints_symmetry: tuple[tuple[int, ...], tuple[int, ...]]
    num_joints: int


def read_h36m_2d(npz_path: str | Path, *, allow_pickle: bool = False) -> H36M2D:
    """VideoPose3D's ``data_2d_h36m_<detector>.npz``: ``positions_2d`` and ``metadata``.

    Args:
        npz_path: the file.
        allow_pickle: as for :func:`read_h36m_3d`.

    Raises:
        MotionDataError: ``allow_pickle`` is false, a field is missing, the metadata lacks
            ``num_joints`` or ``keypoints_symmetry``, or a camera's array is not (T, J, 2) finite.
    """
    path = Path(npz_path)
    if not allow_pickle:
        raise MotionDataError(_PICKLE_REFUSAL.format(path=path))
    data = _load_npz(path, allow_pickle=True)
    metadata = _object_dict(data, "metadata", path)
    for key in ("num_joints", "keypoints_symmetry"):
        if key not in metadata:
            raise MotionDataError(f"{path}: field 'metadata' lacks {key!r}")
    try:
        num_joints = int(metadata["num_joints"])
        left, right = (tuple(int(i) for i in side) for side in metadata["keypoints_symmetry"])
    except (TypeError, ValueError) as error:
        raise MotionDataError(f"{path}: field 'metadata' needs an integer 'num_joints' and 'keypoints_symmetry' "
                              f"as two lists of joint indices ({error})") from error
    if any(not 0 <= i < num_joints for i in left + right) or len(left) != len(right):
        raise MotionDataError(f"{path}: field 'metadata[\"keypoints_symmetry\"]' must pair equally many joint "
                              f"indices below num_joints = {num_joints}; got {left} and {right}")
    positions: dict[str, dict[str, list[np.ndarray]]] = {}
    for subject, actions in _object_dict(data, "positions_2d", path).items():
        if not isinstance(actions, dict):
            raise MotionDataError(f"{path}: field 'positions_2d[{subject!r}]' must be a dict of actions")
        positions[str(subject)] = {}
        for action, cameras in actions.items():
            if isinstance(cameras, np.ndarray) and cameras.dtype != object:
                cameras = list(cameras)
            positions[str(subject)][str(action)] = [
                _float_array(view, path, f"positions_2d[{subject!r}][{action!r}][{c}]", (None, num_joints, 2))
                .astype(np.float32) for c, view in enumerate(cameras)]
    return H36M2D(positions, (left, right), num_joints)


# --- polydiff's 2D keypoints --------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Keypoints2D:
    """A 2D keypoint track as :func:`read_keypoints_2d` reads it.

    Attributes:
        keypoints: (T, J, 2) float32.
        confidence: (T, J) float32 in [0, 1], or ``None`` when the file has none.
        joint_names: one name per joint, or ``None``.
        zero_confidence: ``{joint index: number of frames}`` for every joint with zero
            confidence in at least one frame (undetected); empty without confidences.
    """

    keypoints: np.ndarray
    confidence: np.ndarray | None
    joint_names: tuple[str, ...] | None
    zero_confidence: dict[int, int] = field(default_factory=dict)

    def describe_zero_confidence(self) -> str:
        """A one-line summary such as ``"left_wrist: 3 of 10 frames"``; empty when none."""
        total = len(self.keypoints)
        names = self.joint_names or tuple(f"joint {j}" for j in range(self.keypoints.shape[1]))
        return "; ".join(f"{names[j]}: {n} of {total} frames" for j, n in self.zero_confidence.items())


def read_keypoints_2d(npz_path: str | Path) -> Keypoints2D:
    """polydiff's 2D keypoint file: ``keypoints`` (T, J, 2), optional ``confidence`` (T, J) and
    ``joint_names`` (J,) strings, read without pickle.

    Raises:
        MotionDataError: a missing or malformed field, named in the message.
    """
    path = Path(npz_path)
    data = _load_npz(path)
    keypoints = _float_array(_field(data, "keypoints", path), path, "keypoints", (None, None, 2)).astype(np.float32)
    frames, joints = keypoints.shape[:2]
    if frames == 0 or joints == 0:
        raise MotionDataError(f"{path}: field 'keypoints' must have at least one frame and one joint; "
                              f"got {keypoints.shape}")
    confidence, zero = None, {}
    if "confidence" in data:
        confidence = _float_array(data["confidence"], path, "confidence", (frames, joints)).astype(np.float32)
        if (confidence < 0).any() or (confidence > 1).any():
            raise MotionDataError(f"{path}: field 'confidence' must lie in [0, 1]; got values in "
                                  f"[{confidence.min()}, {confidence.max()}]")
        counts = (confidence == 0).sum(axis=0)
        zero = {int(j): int(counts[j]) for j in np.flatnonzero(counts)}
    names = None
    if "joint_names" in data:
        raw = np.asarray(data["joint_names"])
        if raw.dtype.kind not in "US" or raw.shape != (joints,):
            raise MotionDataError(f"{path}: field 'joint_names' must be {joints} strings; got {raw.dtype} array of "
                                  f"shape {raw.shape}")
        names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in raw.tolist())
        if len(set(names)) != len(names):
            raise MotionDataError(f"{path}: field 'joint_names' repeats a name")
    return Keypoints2D(keypoints, confidence, names, zero)
