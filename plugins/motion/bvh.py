"""BVH (Biovision Hierarchy) motion files, read and written.

A BVH file has two sections. ``HIERARCHY`` describes the skeleton as nested blocks, each joint
with an ``OFFSET`` from its parent and the ``CHANNELS`` animated on it, leaves closed by an
``End Site`` that has an offset only::

    HIERARCHY
    ROOT Hips
    {
        OFFSET 0 0 0
        CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
        JOINT Spine
        {
            OFFSET 0 10 0
            CHANNELS 3 Zrotation Xrotation Yrotation
            End Site
            {
                OFFSET 0 5 0
            }
        }
    }
    MOTION
    Frames: 2
    Frame Time: 0.0333333
    0 90 0 0 0 0 0 0 0
    0 90 0 90 0 0 0 0 45

``MOTION`` gives the number of frames, the frame time in seconds and one line per frame holding
every channel's value, joint by joint in the order the hierarchy lists them.

Conventions, as the format defines them (column vectors throughout):

- Rotation channels are in degrees and compose *intrinsically in channel order*: a joint with
  ``Zrotation Xrotation Yrotation`` has the local rotation ``R = Rz(z) @ Rx(x) @ Ry(y)``.
- A joint's global rotation is ``G_j = G_parent @ R_j`` and its position
  ``p_j = p_parent + G_parent @ t_j``, where ``t_j`` is its ``OFFSET``, or, on a joint with
  position channels (the root, usually), the channel values in place of the offset's (an axis
  without a channel keeps the offset's value), as Blender and most readers take them.
- End Sites are not joints: they carry no channels and are kept apart, in
  :attr:`BVHMotion.end_sites`, so the writer can restore them and
  :meth:`BVHMotion.end_site_positions` can place them.

Lengths stay in the file's units (often centimetres); ``read_bvh(path, scale=0.01)`` converts
offsets and position channels on the way in. Malformed files raise :class:`BVHError` naming the
file and the line at fault.
"""

from __future__ import annotations

import math
import os
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "BVHError", "BVHMotion", "read_bvh", "write_bvh", "euler_to_matrix", "matrix_to_euler",
    "ORDERS", "DEFAULT_ORDER", "CHANNEL_NAMES",
]

#: The six Tait-Bryan rotation orders a writer may choose (each axis once).
ORDERS = ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX")
#: The order most tools write (``Zrotation Yrotation Xrotation``).
DEFAULT_ORDER = "ZYX"
_AXES = "XYZ"
_POSITION = ("Xposition", "Yposition", "Zposition")
_ROTATION = ("Xrotation", "Yrotation", "Zrotation")
#: The channel names BVH defines, in their canonical spelling.
CHANNEL_NAMES = _POSITION + _ROTATION
_CANONICAL = {name.upper(): name for name in CHANNEL_NAMES}
_KEYWORDS = {"HIERARCHY", "ROOT", "JOINT", "END", "OFFSET", "CHANNELS", "MOTION", "{", "}"}
#: Below this cosine of the middle angle the first and last axes are taken as aligned (gimbal
#: lock) and the last angle is set to zero; about sqrt(machine epsilon), where the error of
#: that choice and the noise of the general formula are both ~1e-8.
_GIMBAL_EPS = 1e-8


class BVHError(ValueError):
    """A BVH file that cannot be read; the message names the file and the line at fault."""


# --- Euler angles -------------------------------------------------------------------------------
def _check_order(order: str) -> str:
    upper = str(order).upper()
    if upper not in ORDERS:
        raise ValueError(f"unknown rotation order {order!r}; expected one of {', '.join(ORDERS)}")
    return upper


def _axis_rotation(axis: int, angle: np.ndarray) -> np.ndarray:
    """Right-handed rotations by ``angle`` (radians) about axis 0, 1 or 2; shape ``angle.shape + (3, 3)``."""
    c, s = np.cos(angle), np.sin(angle)
    i, j = (axis + 1) % 3, (axis + 2) % 3
    out = np.zeros(np.shape(angle) + (3, 3))
    out[..., axis, axis] = 1.0
    out[..., i, i] = c
    out[..., j, j] = c
    out[..., i, j] = -s
    out[..., j, i] = s
    return out


def euler_to_matrix(angles: np.ndarray, order: str = DEFAULT_ORDER, *, degrees: bool = True) -> np.ndarray:
    """Rotation matrices from intrinsic Euler angles, BVH's convention.

    ``order="ZXY"`` with angles ``(z, x, y)`` gives ``Rz(z) @ Rx(x) @ Ry(y)``.

    Args:
        angles: the angles, in the order's axis order.
        order: one of :data:`ORDERS`.
        degrees: whether the angles are in degrees (BVH's unit) rather than radians.

    Shapes:
        angles: (..., 3) -> (..., 3, 3).
    """
    order = _check_order(order)
    angles = np.asarray(angles, dtype=np.float64)
    if angles.shape[-1:] != (3,):
        raise ValueError(f"angles must have a last axis of 3, got shape {angles.shape}")
    if degrees:
        angles = np.deg2rad(angles)
    out = _axis_rotation(_AXES.index(order[0]), angles[..., 0])
    for k in (1, 2):
        out = out @ _axis_rotation(_AXES.index(order[k]), angles[..., k])
    return out


def matrix_to_euler(matrices: np.ndarray, order: str = DEFAULT_ORDER, *, degrees: bool = True) -> np.ndarray:
    """Intrinsic Euler angles of rotation matrices, the inverse of :func:`euler_to_matrix`.

    The middle angle lies in [-90, 90] degrees, the others in (-180, 180]. At gimbal lock (middle
    angle +-90 degrees) only the sum or difference of the outer angles is defined; the last one is
    then set to zero.

    Args:
        matrices: rotation matrices (orthonormal, determinant +1; not checked here).
        order: one of :data:`ORDERS`.
        degrees: whether to return degrees rather than radians.

    Shapes:
        matrices: (..., 3, 3) -> (..., 3), in the order's axis order.
    """
    order = _check_order(order)
    m = np.asarray(matrices, dtype=np.float64)
    if m.shape[-2:] != (3, 3):
        raise ValueError(f"matrices must end in (3, 3), got shape {m.shape}")
    a, b, c = (_AXES.index(ch) for ch in order)
    # For R = Ra(al) Rb(be) Rc(ga): R[a, c] = s sin(be), with s = +1 for cyclic orders (XYZ, YZX,
    # ZXY) and -1 for the others; the outer angles come from the row a and the column c.
    s = 1.0 if (b - a) % 3 == 1 else -1.0
    cos_mid = np.hypot(m[..., a, a], m[..., a, b])
    mid = np.arctan2(s * m[..., a, c], cos_mid)
    first = np.arctan2(-s * m[..., b, c], m[..., c, c])
    last = np.arctan2(-s * m[..., a, b], m[..., a, a])
    # Locked: with the last angle zero, column b of R is Ra(al) e_b = cos(al) e_b + s sin(al) e_c.
    locked = cos_mid < _GIMBAL_EPS
    first = np.where(locked, np.arctan2(s * m[..., c, b], m[..., b, b]), first)
    last = np.where(locked, 0.0, last)
    out = np.stack([first, mid, last], axis=-1)
    return np.rad2deg(out) if degrees else out


# --- the motion ---------------------------------------------------------------------------------
@dataclass
class BVHMotion:
    """A skeleton and its animation, as a BVH file holds them.

    Joints are in the file's depth-first order, so every parent comes before its children and the
    channels of joint ``j`` are a contiguous block of columns of :attr:`data`.

    Attributes:
        names: joint names.
        parents: each joint's parent index, -1 for the root.
        offsets: each joint's offset from its parent, in the file's units (times ``scale``).
        channels: each joint's channel names, in file order, spelled as in :data:`CHANNEL_NAMES`.
        frame_time: seconds per frame.
        data: the channel values, one row per frame (degrees for rotations).
        end_sites: ``(joint index, offset (3,))`` for every End Site, in file order.
        source: the file read, or ``"<memory>"``.

    Shapes:
        parents: (J,); offsets: (J, 3); data: (T, C) with C the total number of channels.
    """

    names: list[str]
    parents: np.ndarray
    offsets: np.ndarray
    channels: list[tuple[str, ...]]
    frame_time: float
    data: np.ndarray
    end_sites: list[tuple[int, np.ndarray]] = field(default_factory=list)
    source: str = "<memory>"

    def __post_init__(self) -> None:
        self.names = [str(n) for n in self.names]
        self.parents = np.asarray(self.parents, dtype=np.int64).reshape(-1)
        self.offsets = np.asarray(self.offsets, dtype=np.float64)
        self.channels = [tuple(_CANONICAL.get(str(c).upper(), str(c)) for c in ch) for ch in self.channels]
        self.data = np.asarray(self.data, dtype=np.float64)
        self.end_sites = [(int(j), np.asarray(o, dtype=np.float64).reshape(3)) for j, o in self.end_sites]
        self.frame_time = float(self.frame_time)
        n = len(self.names)
        if self.parents.shape != (n,) or self.offsets.shape != (n, 3) or len(self.channels) != n:
            raise ValueError(f"{n} names need parents ({n},), offsets ({n}, 3) and {n} channel lists; got "
                             f"{self.parents.shape}, {self.offsets.shape} and {len(self.channels)}")
        _check_parents(self.parents)
        for j, ch in enumerate(self.channels):
            unknown = [c for c in ch if c not in CHANNEL_NAMES]
            if unknown or len(set(ch)) != len(ch):
                what = f"unknown channel {unknown[0]!r}" if unknown else "a channel listed twice"
                raise ValueError(f"joint {self.names[j]!r} has {what}; channels are {', '.join(CHANNEL_NAMES)}")
        width = sum(len(ch) for ch in self.channels)
        if self.data.ndim != 2 or self.data.shape[1] != width:
            raise ValueError(f"data must be (frames, {width}) for these channels, got shape {self.data.shape}")
        if not (math.isfinite(self.frame_time) and self.frame_time > 0):
            raise ValueError(f"frame_time must be a positive number of seconds, got {self.frame_time}")
        for j, _ in self.end_sites:
            if not 0 <= j < n:
                raise ValueError(f"an End Site hangs from joint {j}, but there are {n} joints")

    @property
    def n_joints(self) -> int:
        return len(self.names)

    @property
    def n_frames(self) -> int:
        return len(self.data)

    @property
    def fps(self) -> float:
        """Frames per second, ``1 / frame_time``."""
        return 1.0 / self.frame_time

    def _columns(self) -> list[int]:
        """The first data column of every joint."""
        return np.concatenate([[0], np.cumsum([len(ch) for ch in self.channels])]).tolist()

    def local_rotations(self) -> np.ndarray:
        """Each joint's rotation relative to its parent, its rotation channels composed in channel order.

        Shapes:
            returns (T, J, 3, 3); identity for a joint without rotation channels.
        """
        out = np.broadcast_to(np.eye(3), (self.n_frames, self.n_joints, 3, 3)).copy()
        for j, start in enumerate(self._columns()[:-1]):
            for k, name in enumerate(self.channels[j]):
                if name in _ROTATION:
                    angle = np.deg2rad(self.data[:, start + k])
                    out[:, j] = out[:, j] @ _axis_rotation(_ROTATION.index(name), angle)
        return out

    def local_translations(self) -> np.ndarray:
        """Each joint's translation from its parent: its offset, with position channels in its place.

        Shapes:
            returns (T, J, 3).
        """
        out = np.broadcast_to(self.offsets, (self.n_frames, self.n_joints, 3)).copy()
        for j, start in enumerate(self._columns()[:-1]):
            for k, name in enumerate(self.channels[j]):
                if name in _POSITION:
                    out[:, j, _POSITION.index(name)] = self.data[:, start + k]
        return out

    def root_positions(self) -> np.ndarray:
        """The root's position in every frame. Shapes: returns (T, 3)."""
        return self.local_translations()[:, 0]

    def _forward(self) -> tuple[np.ndarray, np.ndarray]:
        local_r, local_t = self.local_rotations(), self.local_translations()
        rot, pos = np.empty_like(local_r), np.empty_like(local_t)
        for j, p in enumerate(self.parents):
            if p < 0:
                rot[:, j], pos[:, j] = local_r[:, j], local_t[:, j]
            else:
                rot[:, j] = rot[:, p] @ local_r[:, j]
                pos[:, j] = pos[:, p] + np.einsum("tik,tk->ti", rot[:, p], local_t[:, j])
        return rot, pos

    def global_rotations(self) -> np.ndarray:
        """Each joint's rotation in the world frame. Shapes: returns (T, J, 3, 3)."""
        return self._forward()[0]

    def global_positions(self) -> np.ndarray:
        """Each joint's position in the world frame, by forward kinematics. Shapes: returns (T, J, 3)."""
        return self._forward()[1]

    def end_site_positions(self) -> np.ndarray:
        """Each End Site's position in the world frame, in :attr:`end_sites` order. Shapes: returns (T, E, 3)."""
        rot, pos = self._forward()
        out = np.zeros((self.n_frames, len(self.end_sites), 3))
        for e, (j, offset) in enumerate(self.end_sites):
            out[:, e] = pos[:, j] + rot[:, j] @ offset
        return out

    def with_rotation_order(self, order: str) -> BVHMotion:
        """The same motion with every joint's rotation given as three channels in ``order``.

        Position channels are kept (put first, in X, Y, Z order); the poses are unchanged.
        """
        order = _check_order(order)
        rotation_names = tuple(f"{axis}rotation" for axis in order)
        local_r, local_t = self.local_rotations(), self.local_translations()
        channels, blocks = [], []
        for j in range(self.n_joints):
            kept = tuple(c for c in _POSITION if c in self.channels[j])
            channels.append(kept + rotation_names)
            blocks.append(local_t[:, j, [_POSITION.index(c) for c in kept]])
            blocks.append(matrix_to_euler(local_r[:, j], order))
        return BVHMotion(list(self.names), self.parents.copy(), self.offsets.copy(), channels, self.frame_time,
                         np.concatenate(blocks, axis=1), [(j, o.copy()) for j, o in self.end_sites], self.source)

    @classmethod
    def from_arrays(
        cls,
        names: Sequence[str],
        parents: Sequence[int] | np.ndarray,
        offsets: np.ndarray,
        rotations: np.ndarray,
        root_positions: np.ndarray,
        fps: float,
        *,
        order: str = DEFAULT_ORDER,
        end_sites: Sequence[tuple[int, Sequence[float]]] = (),
    ) -> BVHMotion:
        """A motion from joint rotations, as :func:`write_bvh` writes it.

        The root gets six channels (``Xposition Yposition Zposition`` and three rotations in
        ``order``), every other joint three rotations. Joints are put in depth-first order (each
        subtree contiguous, children in index order), as a BVH file lists them; ``names`` of the
        result gives the new order, which is the input's whenever that was depth-first already.

        Args:
            names: joint names.
            parents: parent indices, -1 for the root (only joint 0), each parent before its children.
            offsets: offsets from the parents; the root's is written as its OFFSET.
            rotations: local rotation matrices.
            root_positions: the root's position in every frame.
            fps: frames per second.
            order: the rotation order, one of :data:`ORDERS`.
            end_sites: ``(joint index, offset)`` pairs, joint indices in the input's order.

        Shapes:
            offsets: (J, 3); rotations: (T, J, 3, 3); root_positions: (T, 3).
        """
        order = _check_order(order)
        names = [str(n) for n in names]
        parents = np.asarray(parents, dtype=np.int64).reshape(-1)
        offsets = np.asarray(offsets, dtype=np.float64)
        rotations = np.asarray(rotations, dtype=np.float64)
        root_positions = np.asarray(root_positions, dtype=np.float64)
        n = len(names)
        if parents.shape != (n,) or offsets.shape != (n, 3):
            raise ValueError(f"{n} names need parents ({n},) and offsets ({n}, 3); got {parents.shape} and "
                             f"{offsets.shape}")
        if rotations.ndim != 4 or rotations.shape[1:] != (n, 3, 3):
            raise ValueError(f"rotations must be (frames, {n}, 3, 3), got shape {rotations.shape}")
        if root_positions.shape != (len(rotations), 3):
            raise ValueError(f"root_positions must be ({len(rotations)}, 3), got shape {root_positions.shape}")
        _check_parents(parents)
        for what, values in (("offsets", offsets), ("rotations", rotations), ("root_positions", root_positions)):
            if not np.isfinite(values).all():
                raise ValueError(f"{what} hold NaN or infinite values")
        gram = np.swapaxes(rotations, -1, -2) @ rotations
        if rotations.size and (np.abs(gram - np.eye(3)).max() > 1e-4 or np.linalg.det(rotations).min() < 0):
            raise ValueError("rotations must be rotation matrices (orthonormal with determinant +1)")
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps}")
        perm = _depth_first(parents)
        new_index = np.empty(n, dtype=np.int64)
        new_index[perm] = np.arange(n)
        new_parents = np.array([-1 if parents[j] < 0 else new_index[parents[j]] for j in perm], dtype=np.int64)
        rotation_names = tuple(f"{axis}rotation" for axis in order)
        angles = matrix_to_euler(rotations[:, perm], order)
        data = np.concatenate([root_positions, angles.reshape(len(rotations), 3 * n)], axis=1)
        return cls([names[j] for j in perm], new_parents, offsets[perm],
                   [_POSITION + rotation_names] + [rotation_names] * (n - 1), 1.0 / fps, data,
                   [(int(new_index[j]), np.asarray(o, dtype=np.float64)) for j, o in end_sites])


def _check_parents(parents: np.ndarray) -> None:
    n = len(parents)
    if n == 0:
        raise ValueError("a skeleton needs at least one joint")
    if parents[0] != -1:
        raise ValueError(f"joint 0 must be the root (parent -1), its parent is {parents[0]}")
    for j in range(1, n):
        if not 0 <= parents[j] < j:
            raise ValueError(f"joint {j} has parent {parents[j]}; every joint but the root needs a parent "
                             "listed before it")


def _depth_first(parents: np.ndarray) -> list[int]:
    children: list[list[int]] = [[] for _ in parents]
    for j, p in enumerate(parents):
        if p >= 0:
            children[p].append(j)
    order, stack = [], [0]
    while stack:
        j = stack.pop()
        order.append(j)
        stack.extend(reversed(children[j]))
    return order


# --- reading ------------------------------------------------------------------------------------
def read_bvh(path: str | os.PathLike, *, scale: float = 1.0) -> BVHMotion:
    """Read a BVH file.

    Args:
        path: the file.
        scale: multiplies every length (offsets and position channels), e.g. 0.01 for a file in
            centimetres to get metres; rotations are unchanged.

    Raises:
        BVHError: the file is malformed: a missing section or keyword, unbalanced braces, an
            unknown channel, a count of frames or values that disagrees with the data, a value
            that is not a finite number. The message names the file and the line.
    """
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale}")
    source = str(path)
    text = Path(path).read_text(encoding="utf-8-sig", errors="replace")
    motion = _Parser(text.splitlines(), source).parse()
    if scale != 1.0:
        motion.offsets *= scale
        for _, offset in motion.end_sites:
            offset *= scale
        start = 0
        for ch in motion.channels:
            for k, name in enumerate(ch):
                if name in _POSITION:
                    motion.data[:, start + k] *= scale
            start += len(ch)
    return motion


class _Parser:
    """Tokens of the hierarchy, one line at a time, so the motion lines are never tokenised."""

    def __init__(self, lines: list[str], source: str) -> None:
        self.lines, self.source = lines, source
        self.row = 0
        self.pending: deque[tuple[str, int]] = deque()
        self.names: list[str] = []
        self.parents: list[int] = []
        self.offsets: list[tuple[float, float, float]] = []
        self.channels: list[tuple[str, ...]] = []
        self.end_sites: list[tuple[int, np.ndarray]] = []

    def error(self, line: int, message: str) -> BVHError:
        return BVHError(f"{self.source}, line {line}: {message}")

    def peek(self) -> tuple[str | None, int]:
        while not self.pending and self.row < len(self.lines):
            self.row += 1
            for token in self.lines[self.row - 1].replace("{", " { ").replace("}", " } ").split():
                self.pending.append((token, self.row))
        return self.pending[0] if self.pending else (None, max(len(self.lines), 1))

    def take(self) -> tuple[str | None, int]:
        token = self.peek()
        if self.pending:
            self.pending.popleft()
        return token

    def expect(self, word: str, context: str) -> int:
        token, line = self.take()
        if token is None or token.upper() != word.upper():
            raise self.error(line, f"expected {word!r} {context}, found {_describe(token)}")
        return line

    def number(self, context: str) -> float:
        token, line = self.take()
        try:
            value = float(token) if token is not None else None
        except ValueError:
            value = None
        if value is None:
            raise self.error(line, f"expected a number {context}, found {_describe(token)}")
        if not math.isfinite(value):
            raise self.error(line, f"{context} is {token}, not a finite number")
        return value

    def rest_of_line(self, line: int) -> list[str]:
        words = []
        while self.pending and self.pending[0][1] == line and self.pending[0][0] not in "{}":
            words.append(self.pending.popleft()[0])
        return words

    def parse(self) -> BVHMotion:
        self.expect("HIERARCHY", "at the start of the file")
        line = self.expect("ROOT", "after HIERARCHY")
        self.joint("ROOT", -1, line)
        token, line = self.take()
        key = token.upper() if token is not None else None
        if key != "MOTION":
            if token is None:
                problem = "the file ends without a MOTION section"
            elif token == "}":
                problem = "unbalanced braces: this '}' closes no block"
            elif key == "ROOT":
                problem = "a second ROOT; only files with one skeleton are read"
            else:
                problem = f"expected MOTION after the hierarchy, found {_describe(token)}"
            raise self.error(line, problem)
        if self.pending:
            raise self.error(line, f"unexpected {_describe(self.pending[0][0])} after MOTION")
        return self.motion(line)

    def joint(self, kind: str, parent: int, opened: int) -> None:
        words = self.rest_of_line(opened)
        if not words:
            raise self.error(opened, f"{kind} without a name")
        name = " ".join(words)
        self.expect("{", f"to open {kind} {name!r}")
        j = len(self.names)
        self.names.append(name)
        self.parents.append(parent)
        self.offsets.append((0.0, 0.0, 0.0))
        offset: tuple[float, float, float] | None = None
        channels: tuple[str, ...] | None = None
        has_children = False
        while True:
            token, line = self.take()
            key = token.upper() if token is not None else None
            if key == "OFFSET":
                if offset is not None or has_children:
                    raise self.error(line, f"OFFSET of {name!r} repeated or after its children")
                offset = tuple(self.number(f"in the OFFSET of {name!r}") for _ in range(3))
            elif key == "CHANNELS":
                if channels is not None or has_children:
                    raise self.error(line, f"CHANNELS of {name!r} repeated or after its children")
                channels = self.channel_list(name)
                self.channels.append(channels)
            elif key in ("JOINT", "END"):
                if offset is None or channels is None:
                    raise self.error(line, f"{kind} {name!r} needs OFFSET and CHANNELS before its children")
                has_children = True
                if key == "JOINT":
                    self.joint("JOINT", j, line)
                else:
                    self.end_site(j, line)
            elif token == "}":
                break
            elif token is None or key in ("MOTION", "ROOT"):
                raise self.error(line, f"unbalanced braces: {kind} {name!r} opened at line {opened} is not closed "
                                       f"before {'the end of the file' if token is None else key}")
            else:
                raise self.error(line, f"unexpected {_describe(token)} in {kind} {name!r}")
        if offset is None or channels is None:
            raise self.error(line, f"{kind} {name!r} has no {'OFFSET' if offset is None else 'CHANNELS'}")
        self.offsets[j] = offset

    def channel_list(self, name: str) -> tuple[str, ...]:
        token, line = self.take()
        if token is None or not token.isdigit():
            raise self.error(line, f"expected the number of CHANNELS of {name!r}, found {_describe(token)}")
        count, found = int(token), []
        for _ in range(count):
            token, line = self.take()
            if token is None or token.upper() in _KEYWORDS:
                raise self.error(line, f"CHANNELS of {name!r} declares {count} channels but lists {len(found)}")
            if token.upper() not in _CANONICAL:
                raise self.error(line, f"unknown channel {token!r} in {name!r} (BVH channels are "
                                       f"{', '.join(CHANNEL_NAMES)})")
            if _CANONICAL[token.upper()] in found:
                raise self.error(line, f"channel {token!r} listed twice for {name!r}")
            found.append(_CANONICAL[token.upper()])
        return tuple(found)

    def end_site(self, parent: int, opened: int) -> None:
        self.expect("Site", "after End")
        self.rest_of_line(opened)
        self.expect("{", "to open an End Site")
        line = self.expect("OFFSET", f"in the End Site of {self.names[parent]!r}")
        offset = np.array([self.number(f"in the End Site OFFSET of {self.names[parent]!r}") for _ in range(3)])
        token, line = self.take()
        if token != "}":
            raise self.error(line, f"expected '}}' to close the End Site of {self.names[parent]!r} (opened at line "
                                   f"{opened}), found {_describe(token)}")
        self.end_sites.append((parent, offset))

    def motion(self, motion_line: int) -> BVHMotion:
        rows = [(i + 1, text) for i, text in enumerate(self.lines[motion_line:], start=motion_line) if text.strip()]
        headers = []
        for label, key in (("Frames:", "FRAMES"), ("Frame Time:", "FRAMETIME")):
            if not rows:
                raise self.error(max(len(self.lines), 1), f"the MOTION section has no {label!r} line")
            line, text = rows.pop(0)
            head, _, value = text.partition(":")
            if "".join(head.split()).upper() != key or len(value.split()) != 1:
                raise self.error(line, f"expected {label!r} and one number, found {text.strip()!r}")
            headers.append((line, value.strip()))
        (frames_line, frames_text), (time_line, time_text) = headers
        if not frames_text.isdigit():
            raise self.error(frames_line, f"the number of frames must be a whole number, found {frames_text!r}")
        n_frames = int(frames_text)
        try:
            frame_time = float(time_text)
        except ValueError:
            frame_time = math.nan
        if not (math.isfinite(frame_time) and frame_time > 0):
            raise self.error(time_line, f"the frame time must be a positive number of seconds, found {time_text!r}")
        if len(rows) != n_frames:
            if len(rows) > n_frames:
                raise self.error(rows[n_frames][0], f"more data lines than the {n_frames} frames declared at line "
                                                    f"{frames_line}")
            raise self.error(frames_line, f"{n_frames} frames declared but {len(rows)} data lines follow")
        width = sum(len(ch) for ch in self.channels)
        values = [text.split() for _, text in rows]
        for (line, _), row in zip(rows, values):
            if len(row) != width:
                raise self.error(line, f"{len(row)} values on a frame line; the hierarchy declares {width} channels")
        try:
            data = np.array(values, dtype=np.float64).reshape(n_frames, width)
        except ValueError:
            for (line, _), row in zip(rows, values):
                for token in row:
                    try:
                        float(token)
                    except ValueError:
                        raise self.error(line, f"{token!r} is not a number") from None
            raise
        bad = ~np.isfinite(data)
        if bad.any():
            frame = int(np.flatnonzero(bad.any(axis=1))[0])
            token = values[frame][int(np.flatnonzero(bad[frame])[0])]
            raise self.error(rows[frame][0], f"frame {frame} holds {token!r}, not a finite number")
        return BVHMotion(self.names, np.array(self.parents), np.array(self.offsets, dtype=np.float64).reshape(-1, 3),
                         self.channels, frame_time, data, self.end_sites, self.source)


def _describe(token: str | None) -> str:
    return "the end of the file" if token is None else repr(token)


# --- writing ------------------------------------------------------------------------------------
def write_bvh(
    path: str | os.PathLike,
    motion: BVHMotion | tuple,
    *,
    order: str | None = None,
    overwrite: bool = False,
    precision: int = 10,
) -> Path:
    """Write a BVH file.

    Args:
        path: the file to write.
        motion: a :class:`BVHMotion`, written with its own channels unless ``order`` is given, or
            a tuple ``(names, parents, offsets, rotations (T, J, 3, 3), root_positions (T, 3),
            fps)`` as :meth:`BVHMotion.from_arrays` takes it.
        order: the rotation order to write, one of :data:`ORDERS`; for arrays the default is
            :data:`DEFAULT_ORDER`, for a :class:`BVHMotion` its own channels.
        overwrite: replace an existing file; otherwise one is refused.
        precision: significant digits of every number (the frame time is written exactly);
            10 keeps angles to ~1e-8 degrees and reproduces any value read with up to 10 digits.

    Returns:
        The path written.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        ValueError: the arrays do not describe a skeleton and its rotations, or a name cannot be
            written (empty, holding braces or line breaks).
    """
    path = Path(path)
    if not isinstance(motion, BVHMotion):
        if not isinstance(motion, (tuple, list)) or len(motion) != 6:
            raise ValueError("motion must be a BVHMotion or a tuple (names, parents, offsets, rotations, "
                             "root_positions, fps)")
        motion = BVHMotion.from_arrays(*motion, order=order or DEFAULT_ORDER)
    elif order is not None:
        motion = motion.with_rotation_order(order)
    for name in motion.names:
        if not name or " ".join(name.split()) != name or "{" in name or "}" in name:
            raise ValueError(f"joint name {name!r} cannot be written to a BVH file (it must be non-empty, without "
                             "braces, line breaks or repeated spaces)")
    if not np.isfinite(motion.data).all() or not np.isfinite(motion.offsets).all():
        raise ValueError("the motion holds NaN or infinite values")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    fmt = f".{int(precision)}g"
    text = _hierarchy_text(motion, fmt)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.write(f"MOTION\nFrames: {motion.n_frames}\nFrame Time: {motion.frame_time!r}\n")
            for row in motion.data:
                f.write(" ".join(format(v, fmt) for v in row.tolist()))
                f.write("\n")
        # Written aside and swapped in, so a failed write never leaves half a file at ``path``.
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _hierarchy_text(motion: BVHMotion, fmt: str) -> str:
    children: list[list[int]] = [[] for _ in motion.names]
    for j, p in enumerate(motion.parents.tolist()):
        if p >= 0:
            children[p].append(j)
    sites: list[list[np.ndarray]] = [[] for _ in motion.names]
    for j, offset in motion.end_sites:
        sites[j].append(offset)
    lines = ["HIERARCHY"]

    def numbers(values: np.ndarray) -> str:
        return " ".join(format(v, fmt) for v in values.tolist())

    def block(j: int, depth: int) -> None:
        pad = "\t" * depth
        lines.append(f"{pad}{'ROOT' if depth == 0 else 'JOINT'} {motion.names[j]}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}\tOFFSET {numbers(motion.offsets[j])}")
        lines.append(f"{pad}\tCHANNELS {len(motion.channels[j])}" + "".join(f" {c}" for c in motion.channels[j]))
        for child in children[j]:
            block(child, depth + 1)
        for offset in sites[j]:
            lines.extend([f"{pad}\tEnd Site", f"{pad}\t{{", f"{pad}\t\tOFFSET {numbers(offset)}", f"{pad}\t}}"])
        lines.append(f"{pad}}}")

    block(0, 0)
    return "\n".join(lines) + "\n"
