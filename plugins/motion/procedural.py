"""An offline demo corpus: procedural human motions on SMPL22 with templated captions.

Every clip is a sequence of one to three *actions* from a small grammar (:data:`ACTIONS`), each a
function of time returning local joint rotations plus how the root moves; consecutive actions are
cross-faded over :data:`BLEND_SECONDS` and the root is integrated across the whole clip. Clips are
20 fps, y up, metres, posed on a copy of :data:`~polydiff_motion.skeleton.SMPL22` whose bone lengths
are scaled by up to ±10 % per clip.

Ground contact, the way it is done here:

- *Height*: every frame the body is shifted vertically so that its lowest foot joint (ankles and
  toe bases) is exactly at y = 0, then an action's airborne height (a jump's ballistic arc) is
  added on top; no foot joint is ever below the floor.
- *Sliding*: each action declares per frame which foot is planted (left, right, both or none).
  The root's horizontal step from frame t-1 to t is chosen so that the planted foot's anchor
  (midpoint of its ankle and toe base; when both are declared planted, the lower foot's, or
  their mean when level within 5 mm) keeps its world position; only with no planted foot (a jump's flight) does the root follow the action's
  declared velocity. Gaits keep the stance foot flat (ankle = hip - knee about the lateral axis)
  and move the stance foot backwards at constant speed relative to the hip (the hip angle is the
  arcsine of a linear sweep; the swing is a cubic Hermite whose end speeds match the stance), so
  the root's speed stays continuous at each foot switch and the planted foot does not slide at
  all in straight gaits. Turning rotates the foot about its anchor, so ankle and toe slide by a
  few millimetres per frame there; :func:`foot_skate` measures it.

Measured with :func:`foot_skate` on ``generate_corpus(100, seed=0)`` (horizontal speed of the
ankle and toe of every planted foot): straight walking at most 0.003 m/s (float32 rounding);
outside the 0.3 s blends mean 0.003 m/s, max 0.18 m/s (turns); within blends mean 0.07 m/s,
max 2.4 m/s, where a gait is cut to a standing action in 0.3 s and the landing foot is dragged.

Captions come from per-action verb-phrase templates (:data:`TEMPLATES`), joined to a subject and
to each other with "then", "and then", ", after that"; they name the side of sided actions, speed
words for gaits and counts for repeated jumps and kicks. The last template of each action is held
out: :func:`split_corpus` keeps it out of the training and validation captions.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .skeleton import SMPL22, Skeleton

__all__ = [
    "FPS",
    "BLEND_SECONDS",
    "ACTIONS",
    "TEMPLATES",
    "HELD_OUT_PAIRS",
    "MotionClip",
    "CorpusSplit",
    "sample_params",
    "compose",
    "generate_corpus",
    "split_corpus",
    "foot_skate",
    "pos_tag",
    "write_humanml3d",
]

FPS = 20.0
BLEND_SECONDS = 0.3
GRAVITY = 9.81
_DEG = math.pi / 180.0
_ANKLES, _TOES = (7, 8), (10, 11)
_FOOT = (7, 10, 8, 11)
L_HIP, R_HIP, SPINE1, L_KNEE, R_KNEE, SPINE2, L_ANKLE, R_ANKLE, SPINE3 = 1, 2, 3, 4, 5, 6, 7, 8, 9
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW = 16, 17, 18, 19
L_WRIST, R_WRIST = 20, 21
_SIGN = {"left": 1.0, "right": -1.0}  # the body's left side is at +X

#: Consecutive action pairs that occur only in the test split.
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = (("walk", "jump"), ("wave", "kick"), ("run", "turn"),
                                              ("crouch", "raise_arms"))


# --- rotations (numpy, vectorised over frames) --------------------------------------------------
def _axis_rotation(angle: np.ndarray, axis: int) -> np.ndarray:
    angle = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(angle), np.sin(angle)
    out = np.zeros(angle.shape + (3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    out[..., axis, axis] = 1.0
    out[..., i, i], out[..., j, j], out[..., i, j], out[..., j, i] = c, c, -s, s
    return out


def _rx(a: np.ndarray) -> np.ndarray:
    return _axis_rotation(a, 0)


def _ry(a: np.ndarray) -> np.ndarray:
    return _axis_rotation(a, 1)


def _rz(a: np.ndarray) -> np.ndarray:
    return _axis_rotation(a, 2)


def _orthonormalize(m: np.ndarray) -> np.ndarray:
    """Gram-Schmidt on the first two columns: the 6D representation's projection (Zhou et al. 2019)."""
    a1, a2 = m[..., :, 0], m[..., :, 1]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    a2 = a2 - (b1 * a2).sum(-1, keepdims=True) * b1
    b2 = a2 / np.linalg.norm(a2, axis=-1, keepdims=True)
    return np.stack((b1, b2, np.cross(b1, b2)), axis=-1)


def _fk(rotations: np.ndarray, offsets: np.ndarray, parents: Sequence[int]) -> np.ndarray:
    """(T, J, 3, 3) local rotations -> (T, J, 3) positions with the root at the origin."""
    glob = np.empty_like(rotations)
    pos = np.zeros(rotations.shape[:2] + (3,))
    for j, p in enumerate(parents):
        if p < 0:
            glob[:, j] = rotations[:, j]
        else:
            glob[:, j] = glob[:, p] @ rotations[:, j]
            pos[:, j] = pos[:, p] + glob[:, p] @ offsets[j]
    return pos


def _smooth(x: np.ndarray) -> np.ndarray:
    """Smootherstep on [0, 1], clamped: zero first and second derivatives at both ends."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * x * (x * (6 * x - 15) + 10)


# --- the action grammar -------------------------------------------------------------------------
@dataclass
class _Frames:
    """What an action does at each of n frames (internal).

    rotations (n, 22, 3, 3) local, the root's without heading; contact (n, 2) planted weight of
    the left and right foot (anchor mix), zero for none; velocity (n, 2) body-frame (lateral,
    forward) metres per second used when no foot is planted; yaw_rate (n,) radians per second;
    air (n,) height above the grounded pose in metres.
    """

    rotations: np.ndarray
    contact: np.ndarray
    velocity: np.ndarray
    yaw_rate: np.ndarray
    air: np.ndarray


def _neutral(t: np.ndarray) -> _Frames:
    n = len(t)
    rot = np.broadcast_to(np.eye(3), (n, 22, 3, 3)).copy()
    rot[:, L_SHOULDER] = _rz(np.full(n, -75 * _DEG))
    rot[:, R_SHOULDER] = _rz(np.full(n, 75 * _DEG))
    rot[:, L_ELBOW] = _ry(np.full(n, -10 * _DEG))
    rot[:, R_ELBOW] = _ry(np.full(n, 10 * _DEG))
    contact = np.full((n, 2), 0.5)
    return _Frames(rot, contact, np.zeros((n, 2)), np.zeros(n), np.zeros(n))


def _set_leg(f: _Frames, side: str, hip: np.ndarray, knee: np.ndarray, ankle: np.ndarray | None = None) -> None:
    """Hip flexion forward, knee flexion, ankle (default: the foot kept flat), radians."""
    h, k, a = (L_HIP, L_KNEE, L_ANKLE) if side == "left" else (R_HIP, R_KNEE, R_ANKLE)
    f.rotations[:, h] = _rx(-hip)
    f.rotations[:, k] = _rx(knee)
    f.rotations[:, a] = _rx(hip - knee if ankle is None else ankle)


def _set_arm(f: _Frames, side: str, elevation: np.ndarray, swing: np.ndarray | float = 0.0,
             elbow_flex: np.ndarray | float = 10 * _DEG, elbow_up: np.ndarray | float = 0.0) -> None:
    """Elevation in the frontal plane (-75° down, 0 horizontal, 90° up), forward swing, elbow."""
    s = _SIGN[side]
    shoulder, elbow = (L_SHOULDER, L_ELBOW) if side == "left" else (R_SHOULDER, R_ELBOW)
    n = len(f.rotations)
    f.rotations[:, shoulder] = _rx(-np.broadcast_to(swing, (n,))) @ _rz(s * np.broadcast_to(elevation, (n,)))
    f.rotations[:, elbow] = _rz(s * np.broadcast_to(elbow_up, (n,))) @ _ry(-s * np.broadcast_to(elbow_flex, (n,)))


def _lean(f: _Frames, angle: np.ndarray) -> None:
    for j in (SPINE1, SPINE2, SPINE3):
        f.rotations[:, j] = _rx(np.asarray(angle) / 3)


def _leg_length(skeleton: Skeleton) -> float:
    return float(-skeleton.offsets[L_KNEE, 1] - skeleton.offsets[L_ANKLE, 1])


def _gait_phase(phase: np.ndarray, step: float, leg: float, knee_swing: float) -> tuple[np.ndarray, ...]:
    """Hip, knee and stance flag of one leg at gait phase (cycles); stance is the first half.

    In stance the ankle moves from +step/2 to -step/2 (ahead of / behind the hip) at constant
    speed; the swing is a cubic Hermite from -step/2 to +step/2 with the same end speeds, so
    the root's speed is continuous when the planted foot changes.
    """
    u = np.mod(phase, 1.0)
    stance = u < 0.5
    s = np.where(stance, 2 * u, 2 * u - 1)
    x = np.where(stance, 0.5 - s, -4 * s**3 + 6 * s**2 - s - 0.5) * step
    hip = np.arcsin(np.clip(x / leg, -0.95, 0.95))
    knee = np.where(stance, 0.0, knee_swing * np.sin(np.pi * s) ** 2)
    return hip, knee, stance


_GAITS = {  # base cadence (steps/s), knee flexion in swing, arm swing, trunk lean, elbow flexion, max step/leg
    "walk": (1.8, 40 * _DEG, 20 * _DEG, 3 * _DEG, 15 * _DEG, 0.9),
    "jog": (2.6, 70 * _DEG, 30 * _DEG, 8 * _DEG, 70 * _DEG, 1.1),
    "run": (3.0, 95 * _DEG, 40 * _DEG, 12 * _DEG, 85 * _DEG, 1.2),
}


def _gait(kind: str, t: np.ndarray, p: dict, skeleton: Skeleton, *, step_scale: float = 1.0,
          yaw_rate: np.ndarray | None = None) -> _Frames:
    cadence, knee_swing, arm, lean, elbow, max_step = _GAITS[kind]
    leg = _leg_length(skeleton)
    speed = float(p.get("speed", 0.0))
    cadence = max(cadence, speed / (max_step * leg)) if speed > 0 else cadence
    step = speed / cadence if speed > 0 else 0.12 * step_scale
    phase = 0.5 * cadence * t  # one gait cycle is two steps
    f = _neutral(t)
    hip_l, knee_l, stance_l = _gait_phase(phase, step, leg, knee_swing)
    hip_r, knee_r, _ = _gait_phase(phase + 0.5, step, leg, knee_swing)
    _set_leg(f, "left", hip_l, knee_l)
    _set_leg(f, "right", hip_r, knee_r)
    swing = np.sin(2 * np.pi * phase) * arm * float(p.get("amplitude", 1.0))
    _set_arm(f, "left", np.full(len(t), -75 * _DEG), -swing, elbow)
    _set_arm(f, "right", np.full(len(t), -75 * _DEG), swing, elbow)
    _lean(f, np.full(len(t), lean))
    f.contact = np.stack((stance_l, ~stance_l), -1).astype(np.float64)
    f.velocity[:, 1] = speed
    if yaw_rate is not None:
        f.yaw_rate = yaw_rate
    return f


def _walk(t, p, sk):
    return _gait("walk", t, p, sk)


def _jog(t, p, sk):
    return _gait("jog", t, p, sk)


def _run(t, p, sk):
    return _gait("run", t, p, sk)


def _turn(t, p, sk):
    angle = _SIGN[p["side"]] * p["angle"] * _DEG  # turning left faces towards +X: positive heading
    d = p["turn_seconds"]
    x = np.clip(t / d, 0.0, 1.0)
    rate = angle / d * 30 * x**2 * (1 - x) ** 2  # derivative of the smootherstep
    return _gait("walk", t, {"speed": 0.0}, sk, step_scale=0.5, yaw_rate=rate)


def _idle(t, p, sk):
    f = _neutral(t)
    _lean(f, 2 * _DEG * np.sin(2 * np.pi * 0.3 * t) * p.get("amplitude", 1.0))
    return f


def _jump(t, p, sk):
    f = _neutral(t)
    prep = 0.35
    flight = 2 * math.sqrt(2 * p["height"] / GRAVITY)
    cycle = 2 * prep + flight
    k = np.clip(np.floor(t / cycle), 0, p["count"] - 1)
    u = np.where(t < 0, 0.0, t - k * cycle)
    u = np.where(t >= p["count"] * cycle, cycle, u)
    in_flight = (u > prep) & (u < prep + flight)
    crouch = np.where(u <= prep, np.sin(np.pi * u / prep) ** 2,
                      np.where(in_flight, 0.0, np.sin(np.pi * np.clip(u - prep - flight, 0, prep) / prep) ** 2))
    s = np.clip((u - prep) / flight, 0.0, 1.0)
    f.air = np.where(in_flight, 4 * p["height"] * s * (1 - s), 0.0)
    for side in ("left", "right"):
        _set_leg(f, side, 55 * _DEG * crouch, 95 * _DEG * crouch)
        _set_arm(f, side, np.full(len(t), -75 * _DEG), -40 * _DEG * crouch + 30 * _DEG * np.sin(np.pi * s) * in_flight)
    _lean(f, 25 * _DEG * crouch)
    f.contact[in_flight] = 0.0
    return f


def _ramp(t: np.ndarray, duration: float, rise: float) -> np.ndarray:
    """0 -> 1 over ``rise`` seconds at the start, 1 -> 0 over the last ``rise`` seconds."""
    return _smooth(t / rise) * _smooth((duration - t) / rise)


def _wave(t, p, sk):
    f = _neutral(t)
    r = _ramp(t, p["duration"], 0.4)
    osc = 30 * _DEG * np.sin(2 * np.pi * 1.8 * t)
    _set_arm(f, p["side"], -75 * _DEG + r * 95 * _DEG, 0.0, 10 * _DEG, r * (90 * _DEG + osc))
    return f


def _raise_arms(t, p, sk):
    f = _neutral(t)
    r = _ramp(t, p["duration"], 0.6)
    sides = ("left", "right") if p["side"] == "both" else (p["side"],)
    for side in sides:
        _set_arm(f, side, -75 * _DEG + r * 160 * _DEG * p.get("amplitude", 1.0), 0.0, 10 * _DEG * (1 - r))
    return f


def _kick(t, p, sk):
    f = _neutral(t)
    u = np.clip(t - 0.2, 0.0, float(p["count"]))
    active = (t > 0.2) & (t < 0.2 + p["count"])
    u = np.mod(u, 1.0) * active
    hip = 75 * _DEG * p.get("amplitude", 1.0) * np.sin(np.pi * u) ** 2
    knee = 70 * _DEG * np.sin(2 * np.pi * u) ** 2
    other = "right" if p["side"] == "left" else "left"
    _set_leg(f, p["side"], hip, knee, 20 * _DEG * np.sin(np.pi * u) ** 2)
    for side in ("left", "right"):
        _set_arm(f, side, np.full(len(t), -50 * _DEG))
    _lean(f, -10 * _DEG * np.sin(np.pi * u) ** 2)
    f.contact[:] = (1.0, 0.0) if other == "left" else (0.0, 1.0)
    return f


def _crouch(t, p, sk):
    f = _neutral(t)
    r = _ramp(t, p["duration"], 0.6)
    for side in ("left", "right"):
        _set_leg(f, side, 85 * _DEG * r, 115 * _DEG * r)
        _set_arm(f, side, np.full(len(t), -75 * _DEG), 35 * _DEG * r, 10 * _DEG + 30 * _DEG * r)
    _lean(f, 30 * _DEG * r)
    return f


def _seated(t: np.ndarray, r: np.ndarray) -> _Frames:
    f = _neutral(t)
    for side in ("left", "right"):
        _set_leg(f, side, 90 * _DEG * r, 90 * _DEG * r)
        _set_arm(f, side, np.full(len(t), -75 * _DEG), 0.0, 10 * _DEG + 40 * _DEG * r)
    _lean(f, 35 * _DEG * np.sin(np.pi * r) + 5 * _DEG * r)
    return f


def _sit_down(t, p, sk):
    return _seated(t, _smooth(t / (0.7 * p["duration"])))


def _stand_up(t, p, sk):
    return _seated(t, 1.0 - _smooth(t / (0.7 * p["duration"])))


#: Action name -> function ``(times in seconds, params, skeleton) -> _Frames``.
ACTIONS: dict[str, Callable[[np.ndarray, dict, Skeleton], _Frames]] = {
    "idle": _idle, "walk": _walk, "jog": _jog, "run": _run, "turn": _turn, "jump": _jump, "wave": _wave,
    "sit_down": _sit_down, "stand_up": _stand_up, "kick": _kick, "crouch": _crouch, "raise_arms": _raise_arms,
}

_SPEEDS = {"walk": (0.8, 1.8), "jog": (1.8, 2.6), "run": (2.6, 3.6)}


def _min_duration(name: str, p: dict) -> float:
    if name == "jump":
        return p["count"] * (0.7 + 2 * math.sqrt(2 * p["height"] / GRAVITY)) + 0.3
    if name == "kick":
        return p["count"] + 0.5
    if name == "turn":
        return p["turn_seconds"] + 0.3
    return 1.0


def sample_params(name: str, rng: np.random.Generator) -> dict[str, Any]:
    """Random parameters of an action: speed, side, angle, height, count, amplitude, duration (s).

    Raises:
        ValueError: an unknown action, listing the valid names.
    """
    if name not in ACTIONS:
        raise ValueError(f"unknown action {name!r}; valid actions: {', '.join(ACTIONS)}")
    p: dict[str, Any] = {"amplitude": float(rng.uniform(0.8, 1.2))}
    if name in _SPEEDS:
        p["speed"] = float(rng.uniform(*_SPEEDS[name]))
        p["duration"] = float(rng.uniform(1.5, 4.0))
    elif name == "turn":
        p["side"] = str(rng.choice(["left", "right"]))
        p["angle"] = float(rng.choice([45, 90, 135, 180]))
        p["turn_seconds"] = 0.6 + p["angle"] / 120
    elif name == "jump":
        p["height"] = float(rng.uniform(0.15, 0.45))
        p["count"] = int(rng.integers(1, 4))
    elif name in ("wave", "kick"):
        p["side"] = str(rng.choice(["left", "right"]))
        if name == "kick":
            p["count"] = int(rng.integers(1, 3))
    elif name == "raise_arms":
        p["side"] = str(rng.choice(["left", "right", "both"]))
    p.setdefault("duration", float(rng.uniform(1.5, 3.0)))
    p["duration"] = max(p["duration"], _min_duration(name, p))
    return p


# --- composition --------------------------------------------------------------------------------
@dataclass(frozen=True)
class MotionClip:
    """One generated clip.

    Attributes:
        positions: (T, 22, 3) float32 global joint positions, metres, y up.
        rotations: (T, 22, 3, 3) float32 local rotations (the root's is its global orientation);
            ``forward_kinematics(rotations, root, Skeleton(..., offsets))`` gives ``positions``.
        root: (T, 3) float32 root (pelvis) position.
        captions: three paraphrases.
        actions: ``(name, params, start_frame, end_frame)`` per action, end exclusive.
        offsets: (22, 3) bone offsets of this clip's body.
        contact: (T, 2) bool, the left / right foot planted (its anchor held) from frame t-1 to t.
        templates: per caption, the template keys ``"action/index"`` it used.
        id: the clip's identifier in a corpus.
    """

    positions: np.ndarray
    rotations: np.ndarray
    root: np.ndarray
    captions: list[str]
    actions: list[tuple[str, dict, int, int]]
    offsets: np.ndarray
    contact: np.ndarray
    templates: list[tuple[str, ...]] = field(default_factory=list)
    id: str = ""

    @property
    def skeleton(self) -> Skeleton:
        return Skeleton(SMPL22.names, SMPL22.parents, self.offsets)


def _vary_skeleton(rng: np.random.Generator) -> Skeleton:
    """SMPL22 with bone lengths scaled per body part, every factor within ±10 %."""
    overall = rng.uniform(0.93, 1.07)
    scale = np.ones(22)
    for part in (("spine1", "spine2", "spine3", "neck", "head"), ("left_hip", "left_knee", "left_ankle", "left_foot"),
                 ("left_collar", "left_shoulder", "left_elbow", "left_wrist")):
        factor = np.clip(overall * rng.uniform(0.97, 1.03), 0.9, 1.1)
        for name in part:
            for joint in {name, name.replace("left", "right")}:
                scale[SMPL22.index(joint)] = factor
    scale[0] = scale[SMPL22.index("left_knee")]
    return Skeleton(SMPL22.names, SMPL22.parents, SMPL22.offsets * scale[:, None])


def compose(actions: Sequence[tuple[str, dict[str, Any] | None]], *, seed: int = 0, vary_shape: bool = True,
            heading: float | None = None) -> MotionClip:
    """One clip from a list of actions, cross-faded and with its root integrated (module docstring).

    Args:
        actions: ``(name, params)`` pairs; missing params (or ``None``) are drawn by
            :func:`sample_params`, given ones override them.
        seed: seeds the missing params, the body shape, the start position and heading, captions.
        vary_shape: scale bone lengths by up to ±10 %; otherwise use SMPL22 as is.
        heading: initial facing in radians from +Z towards +X; random by default.
    """
    rng = np.random.default_rng(seed)
    filled = []
    for name, given in actions:
        p = sample_params(name, rng)
        p.update(given or {})
        p["duration"] = max(p["duration"], _min_duration(name, p))
        filled.append((name, p))
    skeleton = _vary_skeleton(rng) if vary_shape else SMPL22
    heading0 = float(rng.uniform(-math.pi, math.pi)) if heading is None else float(heading)
    start_xz = rng.uniform(-1.0, 1.0, 2)
    bounds = np.round(np.cumsum([0.0] + [p["duration"] for _, p in filled]) * FPS).astype(int)
    n = int(bounds[-1])
    frames = np.arange(n, dtype=np.float64)
    half = BLEND_SECONDS * FPS / 2
    weights = np.zeros((len(filled), n))
    for k in range(len(filled)):
        rise = _smooth((frames + 0.5 - (bounds[k] - half)) / (2 * half)) if k > 0 else np.ones(n)
        fall = 1 - _smooth((frames + 0.5 - (bounds[k + 1] - half)) / (2 * half)) if k < len(filled) - 1 else np.ones(n)
        weights[k] = rise * fall
    weights /= weights.sum(0, keepdims=True)
    rot = np.zeros((n, 22, 3, 3))
    contact, velocity, yaw_rate, air = np.zeros((n, 2)), np.zeros((n, 2)), np.zeros(n), np.zeros(n)
    dominant = weights.argmax(0)
    for k, (name, p) in enumerate(filled):
        f = ACTIONS[name]((frames - bounds[k]) / FPS, p, skeleton)
        w = weights[k]
        rot += w[:, None, None, None] * f.rotations
        velocity += w[:, None] * f.velocity
        yaw_rate += w * f.yaw_rate
        air += w * f.air
        contact[dominant == k] = f.contact[dominant == k]
    rot = _orthonormalize(rot)

    body = _fk(rot, skeleton.offsets, skeleton.parents)  # root at the origin, facing +Z
    yaw = heading0 + np.concatenate(([0.0], np.cumsum(yaw_rate[1:]) / FPS))
    turn = _ry(yaw)
    rel = np.einsum("tij,tkj->tki", turn, body)
    lift = -rel[:, list(_FOOT), 1].min(1) + air
    anchor_l = rel[:, list((7, 10)), :].mean(1)
    anchor_r = rel[:, list((8, 11)), :].mean(1)
    root = np.zeros((n, 3))
    root[0, [0, 2]] = start_xz
    # "Both feet planted" holds only the lower foot (both when level within 5 mm): after a blend
    # out of a gait the other foot may still be landing, and holding the feet's mean would drag the
    # grounded one.
    height_l = rel[:, [7, 10], 1].min(1) + lift
    height_r = rel[:, [8, 11], 1].min(1) + lift
    both = (contact[:, 0] > 0) & (contact[:, 1] > 0)
    contact[both] = np.stack((height_l <= height_r + 0.005, height_r <= height_l + 0.005), -1)[both]
    for t in range(1, n):
        c = contact[t]
        if c.sum() > 0:
            a_prev = (c[0] * anchor_l[t - 1] + c[1] * anchor_r[t - 1]) / c.sum()
            a_now = (c[0] * anchor_l[t] + c[1] * anchor_r[t]) / c.sum()
            step = a_prev - a_now
        else:
            step = turn[t] @ np.array([velocity[t, 0], 0.0, velocity[t, 1]]) / FPS
        root[t, [0, 2]] = root[t - 1, [0, 2]] + step[[0, 2]]
    root[:, 1] = lift
    positions = rel + root[:, None]
    rot[:, 0] = turn @ rot[:, 0]
    spans = [(name, p, int(bounds[k]), int(bounds[k + 1])) for k, (name, p) in enumerate(filled)]
    captions, templates = _captions(spans, rng)
    return MotionClip(positions.astype(np.float32), rot.astype(np.float32), root.astype(np.float32), captions, spans,
                      skeleton.offsets.copy(), contact > 0, templates)


# --- captions -----------------------------------------------------------------------------------
_SUBJECTS = ("a person", "someone", "the figure", "a man", "a human")
_CONNECTORS = (" then ", ", then ", " and then ", ", after that ")
_COUNTS = {1: "once", 2: "twice", 3: "three times"}

#: Verb-phrase templates per action; fields: {adv} speed word, {side}, {count}, {angle}, {arms}.
#: The last one of each list is held out for the test split.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "idle": ("stands still", "waits in place", "stands idle for a moment", "remains standing"),
    "walk": ("walks forward{adv}", "strolls ahead{adv}", "walks straight{adv}", "takes a walk forward{adv}"),
    "jog": ("jogs forward{adv}", "jogs ahead{adv}", "runs at a light pace{adv}", "trots forward{adv}"),
    "run": ("runs forward{adv}", "sprints ahead{adv}", "runs straight{adv}", "dashes forward{adv}"),
    "turn": ("turns {side}", "turns to the {side} by {angle} degrees", "rotates {angle} degrees to the {side}",
             "pivots to the {side}"),
    "jump": ("jumps {count}", "jumps up {count}", "hops in place {count}", "leaps upward {count}"),
    "wave": ("waves with the {side} hand", "raises the {side} hand and waves", "waves the {side} hand",
             "greets by waving the {side} hand"),
    "sit_down": ("sits down", "takes a seat", "lowers down into a sitting pose", "sits"),
    "stand_up": ("stands up", "gets up", "rises to standing", "stands back up"),
    "kick": ("kicks with the {side} leg {count}", "kicks {count} with the {side} foot",
             "does a {side} leg kick {count}", "kicks the {side} leg forward {count}"),
    "crouch": ("crouches down", "squats down", "bends the knees and crouches", "ducks down low"),
    "raise_arms": ("raises {arms}", "lifts {arms} up", "raises {arms} overhead", "puts {arms} up in the air"),
}


def _held_out_template(name: str) -> int:
    return len(TEMPLATES[name]) - 1


def _speed_word(name: str, p: dict) -> str:
    if name not in _SPEEDS:
        return ""
    low, high = _SPEEDS[name]
    x = (p["speed"] - low) / (high - low)
    return " slowly" if x < 0.33 else " quickly" if x > 0.67 else ""


def _render(name: str, p: dict, index: int) -> str:
    side = p.get("side", "")
    arms = "both arms" if side == "both" else f"the {side} arm"
    return TEMPLATES[name][index].format(adv=_speed_word(name, p), side=side, count=_COUNTS.get(p.get("count", 1), ""),
                                         angle=int(p.get("angle", 0)), arms=arms)


def _caption(spans: Sequence[tuple], rng: np.random.Generator, allow_held_out: bool) -> tuple[str, tuple[str, ...]]:
    parts, keys = [], []
    for name, p, _, _ in spans:
        count = len(TEMPLATES[name]) if allow_held_out else _held_out_template(name)
        index = int(rng.integers(count))
        parts.append(_render(name, p, index))
        keys.append(f"{name}/{index}")
    text = str(rng.choice(_SUBJECTS)) + " " + parts[0]
    for part in parts[1:]:
        text += str(rng.choice(_CONNECTORS)) + part
    return text, tuple(keys)


def _captions(spans, rng, allow_held_out: bool = True, n: int = 3) -> tuple[list[str], list[tuple[str, ...]]]:
    out = [_caption(spans, rng, allow_held_out) for _ in range(n)]
    return [c for c, _ in out], [k for _, k in out]


# --- corpus -------------------------------------------------------------------------------------
def _sample_sequence(rng: np.random.Generator) -> list[str]:
    """1-3 action names; ``stand_up`` only (and always) right after ``sit_down``, no action twice in a row."""
    names: list[str] = []
    for _ in range(int(rng.integers(1, 4))):
        prev = names[-1] if names else None
        if prev == "sit_down":
            names.append("stand_up")
        else:
            names.append(str(rng.choice([a for a in ACTIONS if a not in (prev, "stand_up")])))
    return names


def generate_corpus(n: int, *, seed: int = 0, min_seconds: float = 2.1, max_seconds: float = 9.8) -> list[MotionClip]:
    """``n`` procedural clips of 1-3 actions, each between ``min_seconds`` and ``max_seconds`` long.

    The default shortest clip (2.1 s, 42 frames) keeps 41 feature frames, above HumanML3D's
    40-frame minimum (features lose one frame to the velocities).

    Deterministic given ``seed``; clip ``i`` has id ``f"{i:06d}"``.
    """
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds; got {min_seconds}, {max_seconds}")
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        clip_seed = int(rng.integers(2**31))
        sub = np.random.default_rng(clip_seed)
        names = _sample_sequence(sub)
        plan = [(name, sample_params(name, sub)) for name in names]
        while len(plan) > 1 and sum(p["duration"] for _, p in plan) > max_seconds:
            plan.pop()
        total = sum(p["duration"] for _, p in plan)
        if total > max_seconds:  # a single long action: shorten it as far as its content allows
            plan[0][1]["duration"] = max(max_seconds, _min_duration(*plan[0]))
            if plan[0][1]["duration"] > max_seconds:
                plan = [("idle", {"duration": max_seconds})]
        elif total < min_seconds:
            plan[-1][1]["duration"] += min_seconds - total
        clips.append(replace(compose(plan, seed=clip_seed + 1), id=f"{i:06d}"))
    return clips


def _pairs(clip: MotionClip) -> set[tuple[str, str]]:
    names = [a[0] for a in clip.actions]
    return set(zip(names[:-1], names[1:]))


@dataclass(frozen=True)
class CorpusSplit:
    """Train / validation / test clips; train and val captions use no held-out template."""

    train: list[MotionClip]
    val: list[MotionClip]
    test: list[MotionClip]


def split_corpus(clips: Sequence[MotionClip], *, test_fraction: float = 0.1, val_fraction: float = 0.1,
                 seed: int = 0) -> CorpusSplit:
    """Split clips so that the test split holds out action combinations and caption templates.

    Every clip with a consecutive pair in :data:`HELD_OUT_PAIRS` goes to test (even beyond
    ``test_fraction``); random clips fill the test split up to ``test_fraction``; ``val_fraction``
    of the rest is validation. Train and validation captions that used a held-out template (the
    last template of each action in :data:`TEMPLATES`) are re-drawn from the other templates, so
    those templates only appear in test captions. The input clips are not modified.
    """
    if not 0 <= test_fraction < 1 or not 0 <= val_fraction < 1:
        raise ValueError(f"fractions must be in [0, 1); got test={test_fraction}, val={val_fraction}")
    rng = np.random.default_rng(seed)
    held = set(HELD_OUT_PAIRS)
    forced = [i for i, c in enumerate(clips) if _pairs(c) & held]
    rest = [i for i in rng.permutation(len(clips)) if i not in set(forced)]
    extra = max(0, int(round(test_fraction * len(clips))) - len(forced))
    test_ids = set(forced) | set(int(i) for i in rest[:extra])
    rest = [int(i) for i in rest[extra:]]
    n_val = int(round(val_fraction * len(clips)))
    val_ids = set(rest[:n_val])

    def recaption(i: int) -> MotionClip:
        clip = clips[i]
        captions, templates = list(clip.captions), list(clip.templates)
        sub = np.random.default_rng([seed, i])
        for k, keys in enumerate(templates):
            if any(int(key.split("/")[1]) == _held_out_template(key.split("/")[0]) for key in keys):
                captions[k], templates[k] = _caption(clip.actions, sub, allow_held_out=False)
        return replace(clip, captions=captions, templates=templates)

    order = range(len(clips))
    return CorpusSplit(train=[recaption(i) for i in order if i not in test_ids and i not in val_ids],
                       val=[recaption(i) for i in order if i in val_ids],
                       test=[clips[i] for i in order if i in test_ids])


def foot_skate(positions: np.ndarray, contact: np.ndarray, fps: float = FPS) -> np.ndarray:
    """Horizontal speed (m/s) of each planted foot joint, frame t-1 -> t, where it is planted.

    Args:
        positions: (T, 22, 3) global joint positions.
        contact: (T-1, 2) booleans, left / right foot planted during step t -> t+1.

    Returns:
        A flat array of speeds of the ankle and toe base of every planted foot.
    """
    step = np.linalg.norm(np.diff(positions[:, list(_FOOT)][..., [0, 2]], axis=0), axis=-1) * fps  # (T-1, 4)
    mask = np.repeat(np.asarray(contact, dtype=bool), 2, axis=1)
    return step[mask]


# --- HumanML3D layout ---------------------------------------------------------------------------
_POS = {
    "DET": {"a", "an", "the"}, "ADP": {"to", "with", "by", "in", "into", "at", "of", "for", "on"},
    "ADV": {"slowly", "quickly", "forward", "ahead", "straight", "then", "once", "twice", "up", "down", "back",
            "overhead", "still", "upward", "low", "after", "that"},
    "NUM": {"three", "45", "90", "135", "180"}, "CCONJ": {"and"}, "PRON": {"someone"},
    "ADJ": {"left", "right", "both", "light", "sitting", "idle"},
    "NOUN": {"person", "man", "human", "figure", "hand", "arm", "arms", "leg", "foot", "knees", "degrees",
             "times", "walk", "pace", "seat", "pose", "place", "moment", "kick", "air", "standing"},
}


def pos_tag(text: str) -> str:
    """HumanML3D's ``word/POS`` token string from a tiny rule-based tagger.

    Words are lower-cased and stripped of punctuation; closed-class words come from small
    lists, other words ending in "s" count as VERB (the templates are third-person verb
    phrases), anything else is OTHER. Not a linguistic tagger: it only fills the field.
    """
    tokens = []
    for word in text.lower().replace(",", " ").replace(".", " ").split():
        tag = next((t for t, words in _POS.items() if word in words), None)
        if tag is None:
            tag = "VERB" if word.endswith("s") else "OTHER"
        tokens.append(f"{word}/{tag}")
    return " ".join(tokens)


def write_humanml3d(root: str | Path, clips: Sequence[MotionClip], *, overwrite: bool = False,
                    split: CorpusSplit | None = None) -> CorpusSplit:
    """Write clips in HumanML3D's on-disk layout and return the split used.

    Writes ``new_joints/<id>.npy`` (canonicalised positions), ``new_joint_vecs/<id>.npy`` (263-d
    features with the clip's own rotations), ``texts/<id>.txt`` (``caption#tokens#0.0#0.0``),
    ``train.txt``, ``val.txt``, ``test.txt``, ``all.txt`` and ``Mean.npy`` / ``Std.npy`` from the
    training split. Captions are the split's (held-out templates only in test).

    Args:
        split: the split to write; :func:`split_corpus` of ``clips`` by default.

    Raises:
        FileExistsError: ``root`` exists and is not empty, and ``overwrite`` is false.
    """
    from .features import FeatureStats, canonicalize, positions_to_features

    root = Path(root)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{root} exists and is not empty; pass overwrite=True to replace it")
        for sub in ("new_joints", "new_joint_vecs", "texts"):
            shutil.rmtree(root / sub, ignore_errors=True)
    split = split_corpus(clips) if split is None else split
    for sub in ("new_joints", "new_joint_vecs", "texts"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    train_features = []
    for part in ("train", "val", "test"):
        for clip in getattr(split, part):
            features = positions_to_features(clip.positions, FPS, rotations=clip.rotations)
            if part == "train":
                train_features.append(features)
            np.save(root / "new_joints" / f"{clip.id}.npy", canonicalize(clip.positions).astype(np.float32))
            np.save(root / "new_joint_vecs" / f"{clip.id}.npy", features)
            lines = [f"{c}#{pos_tag(c)}#0.0#0.0" for c in clip.captions]
            (root / "texts" / f"{clip.id}.txt").write_text("\n".join(lines) + "\n")
        ids = [c.id for c in getattr(split, part)]
        (root / f"{part}.txt").write_text("".join(f"{i}\n" for i in ids))
    all_ids = sorted(c.id for part in (split.train, split.val, split.test) for c in part)
    (root / "all.txt").write_text("".join(f"{i}\n" for i in all_ids))
    stats = FeatureStats.from_features(train_features)
    np.save(root / "Mean.npy", np.asarray(stats.mean, dtype=np.float32))
    np.save(root / "Std.npy", np.asarray(stats.std, dtype=np.float32))
    return split
