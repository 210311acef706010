"""Motions out and in: BVH files, joint-position archives and stick-figure renders.

* :func:`positions_to_bvh` poses the SMPL 22-joint skeleton along generated joint positions (bone
  lengths set to the motion's median bone lengths, rotations by
  :func:`~polydiff_motion.skeleton.inverse_kinematics`) and writes a BVH file in metres, y up, as
  Blender's importer reads it; :func:`read_motion_source` reads a motion back from such a file, a
  HumanML3D feature file (``.npy``) or a generated archive (``.npz``).
* :func:`positions_to_smpl` writes an AMASS-layout SMPL pose file (``poses``, ``trans``,
  ``betas``, ``mocap_framerate``, ``gender``; z up as AMASS stores it) when the user has a
  SMPL-family body-model file: the rotations pose the body model's own rest skeleton along the
  motion's bone directions, so ``formats.read_amass`` with the same model gives the joints back
  (with the model's bone lengths).
* :func:`render_gif` draws joint positions as a stick figure on a floor grid (orthographic view
  from the front-left, camera following the root), with Pillow.
"""

from __future__ import annotations

from pathlib import Path
import numpy as np

from .skeleton import SMPL22, SMPL22_NAMES, SMPL22_PARENTS, Skeleton, check_joint_names

__all__ = ["fitted_skeleton", "positions_to_bvh", "positions_to_smpl", "read_motion_source", "render_gif",
           "MotionSourceError"]


class MotionSourceError(ValueError):
    """A motion file that cannot be used; the message names the file and the reason."""


def fitted_skeleton(positions: np.ndarray) -> Skeleton:
    """The SMPL 22-joint skeleton with each bone's length set to its median length in ``positions``.

    Shapes:
        positions: (T, 22, 3)
    """
    positions = np.asarray(positions, dtype=np.float64)
    offsets = SMPL22.offsets.copy()
    for j, parent in enumerate(SMPL22_PARENTS):
        if parent < 0:
            offsets[j] = positions[0, 0]
            continue
        length = float(np.median(np.linalg.norm(positions[:, j] - positions[:, parent], axis=-1)))
        rest = np.linalg.norm(offsets[j])
        if rest > 0 and length > 0:
            offsets[j] = offsets[j] / rest * length
    return Skeleton(SMPL22_NAMES, SMPL22_PARENTS, offsets)


def positions_to_bvh(positions: np.ndarray, path: str | Path, fps: float = 20.0, *, overwrite: bool = False) -> Path:
    """Write joint positions of the SMPL 22-joint skeleton as a BVH file (module docstring).

    Shapes:
        positions: (T, 22, 3) global positions in metres, y up.

    Raises:
        ValueError: a wrong shape or non-finite values.
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    import torch

    from .bvh import BVHMotion, write_bvh
    from .skeleton import inverse_kinematics

    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 3 or positions.shape[1:] != (22, 3) or len(positions) == 0:
        raise ValueError(f"positions must have shape (T >= 1, 22, 3); got {positions.shape}")
    if not np.isfinite(positions).all():
        raise ValueError("positions contain NaN or infinite values")
    skeleton = fitted_skeleton(positions)
    rotations = inverse_kinematics(torch.from_numpy(positions), skeleton).numpy()
    # End sites above the head and beyond the wrists and feet, so viewers draw those bones' ends.
    end_sites = [(15, np.array([0.0, 0.1, 0.0])), (20, np.array([0.08, 0.0, 0.0])), (21, np.array([-0.08, 0.0, 0.0])),
                 (10, np.array([0.0, 0.0, 0.05])), (11, np.array([0.0, 0.0, 0.05]))]
    motion = BVHMotion.from_arrays(list(SMPL22_NAMES), list(SMPL22_PARENTS), skeleton.offsets, rotations,
                                   positions[:, 0], fps, end_sites=end_sites)
    return write_bvh(path, motion, overwrite=overwrite)


def positions_to_smpl(positions: np.ndarray, path: str | Path, model_path: str | Path, fps: float = 20.0, *,
                      gender: str = "neutral", overwrite: bool = False) -> Path:
    """Write joint positions as an AMASS-layout SMPL pose file (module docstring).

    The body model's rest joints (its joint regressor applied to its template, shape 0) give the
    skeleton; :func:`~polydiff_motion.skeleton.inverse_kinematics` gives each joint's rotation
    along the motion's bones; the root's orientation and ``trans`` are turned into AMASS's z-up
    frame. ``poses`` holds the 22 body joints' axis-angles followed by zeros for the hands
    (156 values, SMPL-H's layout, which :func:`~polydiff_motion.formats.read_amass` reads).

    Shapes:
        positions: (T, 22, 3) global positions in metres, y up.

    Raises:
        MotionDataError: an unusable body-model file (named).
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    import torch

    from .formats import AMASS_Z_UP_TO_Y_UP, MotionDataError, _find_body_model, _load_body_model
    from .skeleton import inverse_kinematics, matrix_to_axis_angle

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 3 or positions.shape[1:] != (22, 3) or len(positions) == 0:
        raise ValueError(f"positions must have shape (T >= 1, 22, 3); got {positions.shape}")
    model_file = _find_body_model(Path(model_path), gender)
    model = _load_body_model(model_file)
    parents = [int(p) for p in model["parents"][:22]]
    if parents[1:] != list(SMPL22_PARENTS[1:]):
        raise MotionDataError(f"{model_file}: its first 22 joints do not follow SMPL's kinematic tree")
    rest = (model["J_regressor"] @ model["v_template"]).numpy()[:22]
    offsets = np.array([rest[j] - (rest[p] if p >= 0 else 0.0) for j, p in enumerate(SMPL22_PARENTS)])
    skeleton = Skeleton(SMPL22_NAMES, SMPL22_PARENTS, offsets)
    rotations = inverse_kinematics(torch.from_numpy(positions), skeleton)  # (T, 22, 3, 3), y up
    to_z_up = torch.from_numpy(AMASS_Z_UP_TO_Y_UP.T.copy())
    rotations[:, 0] = to_z_up @ rotations[:, 0]
    poses = np.zeros((len(positions), 156))
    poses[:, :66] = matrix_to_axis_angle(rotations).reshape(len(positions), 66).numpy()
    trans = positions[:, 0] @ AMASS_Z_UP_TO_Y_UP - rest[0]  # (M^T p)^T = p^T M
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        np.savez(fh, poses=poses, trans=trans, betas=np.zeros(16), mocap_framerate=np.array(float(fps)),
                 gender=np.array(gender))
    tmp.replace(path)
    return path


def read_motion_source(path: str | Path, fps: float = 20.0) -> np.ndarray:
    """HumanML3D features (T, 263) of a motion file: a BVH with the SMPL joint names (resampled to
    ``fps`` when its frame rate differs), a HumanML3D
    feature file (``.npy``, (T, 263)), or an archive written by ``generate`` (``.npz`` with
    ``features``).

    Raises:
        MotionSourceError: an unreadable file, an unknown suffix, wrong joint names or shapes, or
            NaN values, named in the message.
    """
    from .features import FEATURE_DIM, positions_to_features

    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".bvh":
            from .bvh import read_bvh

            motion = read_bvh(path)
            order = check_joint_names(motion.names, str(path))
            positions = np.zeros((motion.n_frames, 22, 3))
            positions[:, list(order)] = motion.global_positions()
            if motion.n_frames < 2:
                raise MotionSourceError(f"{path}: a motion needs at least 2 frames; the file has {motion.n_frames}")
            if abs(motion.fps - fps) > 1e-6 * fps:  # resample to the model's frame rate
                times = np.arange(motion.n_frames) / motion.fps
                new_times = np.arange(int(np.floor(times[-1] * fps + 1e-9)) + 1) / fps
                flat = positions.reshape(motion.n_frames, -1)
                positions = np.stack([np.interp(new_times, times, flat[:, k]) for k in range(flat.shape[1])], -1)
                positions = positions.reshape(len(new_times), 22, 3)
                if len(positions) < 2:
                    raise MotionSourceError(f"{path}: shorter than two frames at {fps} fps")
            return positions_to_features(positions, fps)
        if suffix in (".npy", ".npz"):
            if suffix == ".npz":
                with np.load(path, allow_pickle=False) as archive:
                    if "features" not in archive:
                        raise MotionSourceError(f"{path}: no field 'features' (fields: {', '.join(archive.files)})")
                    data = archive["features"]
            else:
                data = np.load(path, allow_pickle=False)
            features = np.asarray(data, dtype=np.float32)
            if features.ndim != 2 or features.shape[1] != FEATURE_DIM or len(features) == 0:
                raise MotionSourceError(f"{path}: features must have shape (T >= 1, {FEATURE_DIM}); got {features.shape}")
            if not np.isfinite(features).all():
                raise MotionSourceError(f"{path}: features contain NaN or infinite values")
            return features
    except MotionSourceError:
        raise
    except (OSError, ValueError) as exc:
        raise MotionSourceError(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)) from None
    raise MotionSourceError(f"{path}: unknown motion file type {suffix!r}; use .bvh, .npy (HumanML3D features) or .npz")


def _view(positions: np.ndarray, azimuth: float, elevation: float) -> np.ndarray:
    """Orthographic screen coordinates (x right, y up) of (..., 3) points."""
    a, e = np.deg2rad(azimuth), np.deg2rad(elevation)
    right = np.array([np.cos(a), 0.0, -np.sin(a)])
    forward = np.array([np.sin(a), 0.0, np.cos(a)])
    up = np.array([0.0, 1.0, 0.0])
    view_up = np.cos(e) * up - np.sin(e) * forward
    return np.stack((positions @ right, positions @ view_up), -1)


def render_gif(positions: np.ndarray, path: str | Path, fps: float = 20.0, *, title: str = "", size: int = 320,
               azimuth: float = 35.0, elevation: float = 15.0, overwrite: bool = False) -> Path:
    """A stick-figure animation of joint positions as a GIF (module docstring).

    Shapes:
        positions: (T, 22, 3) in metres, y up.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    from PIL import Image, ImageDraw

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 3 or positions.shape[1:] != (22, 3) or len(positions) == 0:
        raise ValueError(f"positions must have shape (T >= 1, 22, 3); got {positions.shape}")
    scale = size / 2.6  # 2.6 m of the scene across the image
    left = {1, 4, 7, 10, 13, 16, 18, 20}
    frames = []
    for t in range(len(positions)):
        centre = positions[t, 0] * np.array([1.0, 0.0, 1.0])
        screen = _view(positions[t] - centre, azimuth, elevation)
        to_px = lambda p: (size / 2 + p[0] * scale, size * 0.8 - p[1] * scale)  # noqa: E731
        image = Image.new("RGB", (size, size), (250, 250, 250))
        draw = ImageDraw.Draw(image)
        # The floor grid, fixed in the world (it scrolls as the body moves).
        for k in np.arange(-3.0, 3.01, 0.5):
            for line in (((k, -3.0), (k, 3.0)), ((-3.0, k), (3.0, k))):
                a = np.array([line[0][0] - centre[0] % 0.5, 0.0, line[0][1] - centre[2] % 0.5])
                b = np.array([line[1][0] - centre[0] % 0.5, 0.0, line[1][1] - centre[2] % 0.5])
                pa, pb = _view(np.stack((a, b)), azimuth, elevation)
                draw.line((to_px(pa), to_px(pb)), fill=(215, 215, 215), width=1)
        for j, parent in enumerate(SMPL22_PARENTS):
            if parent < 0:
                continue
            colour = (200, 60, 50) if j in left else (40, 90, 200) if j not in (3, 6, 9, 12, 15) else (60, 60, 60)
            draw.line((to_px(screen[parent]), to_px(screen[j])), fill=colour, width=3)
        head = to_px(screen[15])
        draw.ellipse((head[0] - 6, head[1] - 6, head[0] + 6, head[1] + 6), outline=(60, 60, 60), width=2)
        if title:
            draw.text((6, 6), title[:60], fill=(20, 20, 20))
        draw.text((6, size - 16), f"{t / fps:5.2f} s", fill=(90, 90, 90))
        frames.append(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(round(1000 / fps)), loop=0)
    return path
