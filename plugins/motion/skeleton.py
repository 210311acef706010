"""The 22-joint SMPL kinematic tree of HumanML3D, rotation conversions and kinematics.

Conventions used throughout the motion plugin:

- metres, y up; a body in its rest pose faces +Z and its left side is at +X (SMPL's frame);
- rotation matrices act on column vectors; a quaternion is ``(w, x, y, z)``;
- the 6D rotation representation (Zhou et al. 2019, "On the Continuity of Rotation
  Representations in Neural Networks") is the first two *columns* of the matrix, as in HumanML3D
  (pytorch3d uses rows instead);
- local rotations follow SMPL/BVH: joint ``j``'s global rotation is ``G[j] = G[parent] @ R[j]``
  and a child ``c`` sits at ``p[c] = p[j] + G[j] @ offset[c]``, so ``R[j]`` turns the bones that
  leave ``j``; the root's local rotation is its global orientation.

:data:`SMPL22` carries a hand-set adult rest pose (T-pose, about 1.7 m) close to SMPL's neutral
body; it is a default for rendering and inverse kinematics, not a fitted body model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

__all__ = [
    "Skeleton",
    "SMPL22",
    "SMPL22_NAMES",
    "SMPL22_PARENTS",
    "BODY_PARTS",
    "LEFT_FOOT",
    "RIGHT_FOOT",
    "FOOT_JOINTS",
    "FACE_JOINTS",
    "check_joint_names",
    "forward_kinematics",
    "inverse_kinematics",
    "rotation_6d_to_matrix",
    "matrix_to_rotation_6d",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "rotation_y",
]

SMPL22_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
)
SMPL22_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)

#: Left ankle and left foot (toe base), the joints HumanML3D tests for ground contact.
LEFT_FOOT = (7, 10)
#: Right ankle and right foot.
RIGHT_FOOT = (8, 11)
#: The four contact joints in HumanML3D's order: left ankle, left foot, right ankle, right foot.
FOOT_JOINTS = LEFT_FOOT + RIGHT_FOOT
#: Right hip, left hip, right shoulder, left shoulder: HumanML3D's joints for the facing direction.
FACE_JOINTS = (2, 1, 17, 16)

#: Joint groups for body-part editing. The pelvis belongs to both ``lower_body`` and ``torso``;
#: ``upper_body`` and ``lower_body`` partition the 22 joints.
BODY_PARTS: dict[str, tuple[int, ...]] = {
    "upper_body": (3, 6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21),
    "lower_body": (0, 1, 2, 4, 5, 7, 8, 10, 11),
    "left_arm": (13, 16, 18, 20),
    "right_arm": (14, 17, 19, 21),
    "left_leg": (1, 4, 7, 10),
    "right_leg": (2, 5, 8, 11),
    "torso": (0, 3, 6, 9),
    "head": (12, 15),
}


@dataclass(frozen=True, eq=False)
class Skeleton:
    """A kinematic tree: joint names, parent indices and rest offsets.

    Args:
        names: one name per joint.
        parents: each joint's parent index, ``-1`` for the root; a parent precedes its children.
        offsets: (J, 3) rest offset of each joint from its parent in metres; the root's row is
            its rest position.

    Raises:
        ValueError: the three disagree in length, or the tree is not topologically ordered.
    """

    names: tuple[str, ...]
    parents: tuple[int, ...]
    offsets: np.ndarray

    def __post_init__(self) -> None:
        names, parents = tuple(self.names), tuple(int(p) for p in self.parents)
        offsets = np.array(self.offsets, dtype=np.float64)
        if offsets.shape != (len(names), 3) or len(parents) != len(names):
            raise ValueError(f"a skeleton needs one name, parent and (3,) offset per joint; got {len(names)} names, "
                             f"{len(parents)} parents and offsets of shape {offsets.shape}")
        if len(set(names)) != len(names):
            raise ValueError("joint names must be unique")
        if not parents or parents[0] != -1 or any(not 0 <= p < j for j, p in enumerate(parents) if j > 0):
            raise ValueError("parents must start with -1 and name an earlier joint for every other joint; "
                             f"got {parents}")
        offsets.setflags(write=False)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "parents", parents)
        object.__setattr__(self, "offsets", offsets)

    @property
    def num_joints(self) -> int:
        return len(self.names)

    def children(self, joint: int) -> tuple[int, ...]:
        """The joints whose parent is ``joint``, in index order."""
        return tuple(j for j, p in enumerate(self.parents) if p == joint)

    def index(self, name: str) -> int:
        """The index of a joint by name."""
        return check_joint_names([name], "Skeleton.index", self, subset=True)[0]

    def rest_positions(self) -> np.ndarray:
        """(J, 3) global joint positions of the rest pose."""
        positions = np.zeros_like(self.offsets)
        for j, p in enumerate(self.parents):
            positions[j] = self.offsets[j] + (positions[p] if p >= 0 else 0.0)
        return positions


def _smpl22_offsets() -> np.ndarray:
    # Mirror-symmetric, rounded from SMPL's neutral joint regressor; toes 2 cm above the floor.
    left = {
        "left_hip": (0.07, -0.085, 0.0), "left_knee": (0.01, -0.385, 0.0), "left_ankle": (0.0, -0.42, -0.03),
        "left_foot": (0.015, -0.06, 0.12), "left_collar": (0.075, 0.12, -0.01),
        "left_shoulder": (0.115, 0.045, -0.01), "left_elbow": (0.26, 0.0, -0.02), "left_wrist": (0.255, 0.0, 0.0),
    }
    centre = {"pelvis": (0.0, 0.97, 0.0), "spine1": (0.0, 0.11, -0.02), "spine2": (0.0, 0.135, 0.01),
              "spine3": (0.0, 0.055, 0.0), "neck": (0.0, 0.215, -0.02), "head": (0.0, 0.09, 0.05)}
    table = dict(centre)
    for name, (x, y, z) in left.items():
        table[name] = (x, y, z)
        table["right" + name[4:]] = (-x, y, z)
    return np.array([table[name] for name in SMPL22_NAMES])


#: HumanML3D's 22-joint SMPL skeleton with a hand-set adult T-pose.
SMPL22 = Skeleton(SMPL22_NAMES, SMPL22_PARENTS, _smpl22_offsets())


def check_joint_names(names: Sequence[str], source: str, skeleton: Skeleton = SMPL22, *,
                      subset: bool = False) -> tuple[int, ...]:
    """Check a source's joint names against a skeleton and map them onto it.

    Args:
        names: the source's joint names, in the source's order.
        source: what the names came from (a file, a dataset), quoted in the error.
        skeleton: the skeleton they must match.
        subset: accept a subset of the skeleton's joints instead of all of them.

    Returns:
        For each source joint, its index in ``skeleton``.

    Raises:
        ValueError: the count is wrong, or a name is unknown, repeated or missing; the message
            names ``source`` and lists the valid names.
    """
    names = [str(n) for n in names]
    known = {n: i for i, n in enumerate(skeleton.names)}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"{source}: unknown joint name(s) {', '.join(map(repr, unknown))}; "
                         f"valid names: {', '.join(skeleton.names)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{source}: joint name(s) given more than once: {', '.join(map(repr, repeated))}")
    if not subset and len(names) != skeleton.num_joints:
        missing = [n for n in skeleton.names if n not in names]
        raise ValueError(f"{source}: expected {skeleton.num_joints} joints, got {len(names)}; "
                         f"missing: {', '.join(missing)}")
    return tuple(known[n] for n in names)


# --- rotation conversions -----------------------------------------------------------------------
def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """Gram-Schmidt on the two columns of the 6D representation (Zhou et al. 2019, Sec. 4.2).

    Shapes:
        d6: (..., 6) -> (..., 3, 3)
    """
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-1)


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """The first two columns of a rotation matrix, column after column.

    Shapes:
        matrix: (..., 3, 3) -> (..., 6)
    """
    return torch.cat((matrix[..., :, 0], matrix[..., :, 1]), dim=-1)


def quaternion_to_matrix(quaternion: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of a (not necessarily unit) quaternion ``(w, x, y, z)``.

    Shapes:
        quaternion: (..., 4) -> (..., 3, 3)
    """
    w, x, y, z = torch.nn.functional.normalize(quaternion, dim=-1).unbind(-1)
    rows = (
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    )
    return torch.stack(rows, dim=-1).reshape(*quaternion.shape[:-1], 3, 3)


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """Unit quaternion ``(w, x, y, z)`` with ``w >= 0`` of a rotation matrix.

    Each of the four candidate formulas divides by the component it solves for; taking the one
    with the largest component (Shepperd 1978) keeps the division well-conditioned.

    Shapes:
        matrix: (..., 3, 3) -> (..., 4)
    """
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    candidates = torch.stack((
        torch.stack((1 + m00 + m11 + m22, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                     m[..., 1, 0] - m[..., 0, 1]), -1),
        torch.stack((m[..., 2, 1] - m[..., 1, 2], 1 + m00 - m11 - m22, m[..., 0, 1] + m[..., 1, 0],
                     m[..., 0, 2] + m[..., 2, 0]), -1),
        torch.stack((m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m00 + m11 - m22,
                     m[..., 1, 2] + m[..., 2, 1]), -1),
        torch.stack((m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                     1 - m00 - m11 + m22), -1),
    ), dim=-2)  # row k is 4 q_k q (before scaling), largest when |q_k| is
    best = torch.stack((1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22),
                       -1).argmax(-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = torch.nn.functional.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula for a rotation vector (axis times angle in radians).

    Shapes:
        axis_angle: (..., 3) -> (..., 3, 3)
    """
    half = 0.5 * torch.linalg.vector_norm(axis_angle, dim=-1, keepdim=True)
    # sin(h)/(2h) -> 1/2 at h = 0; the series keeps the gradient finite there.
    small = half < 1e-4
    safe = torch.where(small, torch.ones_like(half), half)
    scale = torch.where(small, 0.5 - half * half / 12, torch.sin(safe) / (2 * safe))
    return quaternion_to_matrix(torch.cat((torch.cos(half), axis_angle * scale), dim=-1))


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation vector with angle in [0, π] of a rotation matrix.

    Shapes:
        matrix: (..., 3, 3) -> (..., 3)
    """
    q = matrix_to_quaternion(matrix)
    sin_half = torch.linalg.vector_norm(q[..., 1:], dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, q[..., :1])
    small = sin_half < 1e-6
    scale = torch.where(small, 2.0 / q[..., :1].clamp_min(1e-12), angle / torch.where(small, 1.0, sin_half))
    return q[..., 1:] * scale


def rotation_y(angle: torch.Tensor) -> torch.Tensor:
    """Right-handed rotation about +Y by ``angle`` radians (+Z turns towards +X).

    Shapes:
        angle: (...) -> (..., 3, 3)
    """
    angle = torch.as_tensor(angle)
    c, s = torch.cos(angle), torch.sin(angle)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack((c, zero, s, zero, one, zero, -s, zero, c), dim=-1).reshape(*angle.shape, 3, 3)


# --- kinematics ---------------------------------------------------------------------------------
def forward_kinematics(rotations: torch.Tensor, root_translation: torch.Tensor | None = None,
                       skeleton: Skeleton = SMPL22, *,
                       representation: Literal["matrix", "6d"] = "matrix") -> torch.Tensor:
    """Global joint positions from local joint rotations and the root's position.

    Args:
        rotations: local rotations (module docstring), as matrices or in 6D.
        root_translation: the root joint's global position; ``None`` keeps its rest position.
        skeleton: bone offsets and tree.
        representation: ``"matrix"`` or ``"6d"``.

    Shapes:
        rotations: (..., J, 3, 3) or (..., J, 6); root_translation: (..., 3) -> (..., J, 3)

    Raises:
        ValueError: unknown representation or a joint count other than the skeleton's.
    """
    if representation == "6d":
        rotations = rotation_6d_to_matrix(rotations)
    elif representation != "matrix":
        raise ValueError(f"representation must be one of 'matrix', '6d'; got {representation!r}")
    if rotations.shape[-3:] != (skeleton.num_joints, 3, 3):
        raise ValueError(f"expected rotations for {skeleton.num_joints} joints, got shape {tuple(rotations.shape)}")
    offsets = torch.tensor(skeleton.offsets.copy(), dtype=rotations.dtype, device=rotations.device)
    batch = rotations.shape[:-3]
    root = offsets[0].expand(*batch, 3) if root_translation is None else root_translation.to(rotations)
    glob: list[torch.Tensor] = []
    pos: list[torch.Tensor] = []
    for j, p in enumerate(skeleton.parents):
        if p < 0:
            glob.append(rotations[..., j, :, :])
            pos.append(root.expand(*batch, 3))
        else:
            glob.append(glob[p] @ rotations[..., j, :, :])
            pos.append(pos[p] + (glob[p] @ offsets[j, :, None])[..., 0])
    return torch.stack(pos, dim=-2)


def _unit(v: torch.Tensor, eps: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    return v / norm.clamp_min(eps), norm[..., 0] > eps


def _shortest_arc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The smallest rotation taking unit ``a`` to unit ``b``; (..., 3), (..., 3) -> (..., 3, 3)."""
    v = torch.linalg.cross(a, b, dim=-1)
    c = (a * b).sum(-1)
    zero = torch.zeros_like(c)
    k = torch.stack((zero, -v[..., 2], v[..., 1], v[..., 2], zero, -v[..., 0], -v[..., 1], v[..., 0], zero),
                    -1).reshape(*c.shape, 3, 3)
    eye = torch.eye(3, dtype=a.dtype, device=a.device).expand_as(k)
    opposite = c < -1 + 1e-9
    rotation = eye + k + k @ k / torch.where(opposite, 1.0, 1 + c)[..., None, None]
    # Antiparallel: a half turn about any axis perpendicular to a.
    helper = torch.where(a[..., :1].abs() < 0.9, torch.tensor([1.0, 0.0, 0.0]).to(a),
                         torch.tensor([0.0, 1.0, 0.0]).to(a))
    axis, _ = _unit(torch.linalg.cross(a, helper, dim=-1))
    half_turn = 2 * axis[..., :, None] * axis[..., None, :] - eye
    return torch.where(opposite[..., None, None], half_turn, rotation)


def _kabsch(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The rotation R minimising sum ||R s_k - t_k||²; (..., K, 3), (..., K, 3) -> (..., 3, 3)."""
    h = source.transpose(-1, -2) @ target
    u, _, vh = torch.linalg.svd(h)
    v = vh.transpose(-1, -2)
    d = torch.sign(torch.linalg.det(v @ u.transpose(-1, -2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    fix = torch.diag_embed(torch.stack((torch.ones_like(d), torch.ones_like(d), d), -1))
    return v @ fix @ u.transpose(-1, -2)


def inverse_kinematics(positions: torch.Tensor, skeleton: Skeleton = SMPL22) -> torch.Tensor:
    """Local rotations that pose ``skeleton`` along the bone directions of ``positions``.

    A joint with one child gets the smallest rotation (no twist) that turns the rest bone onto
    the observed one; a joint with several children (pelvis, spine3) the least-squares rotation
    of its rest bones onto the observed ones (Kabsch); a leaf joint the identity. Bone lengths come
    from the skeleton, so ``forward_kinematics(inverse_kinematics(p), p[..., 0, :])`` gives back
    ``p`` exactly when ``p`` was posed with the same skeleton, and bone directions otherwise.

    Shapes:
        positions: (..., J, 3) -> (..., J, 3, 3)
    """
    if positions.shape[-2:] != (skeleton.num_joints, 3):
        raise ValueError(f"expected positions for {skeleton.num_joints} joints, got shape {tuple(positions.shape)}")
    offsets = torch.tensor(skeleton.offsets.copy(), dtype=positions.dtype, device=positions.device)
    batch = positions.shape[:-2]
    eye = torch.eye(3, dtype=positions.dtype, device=positions.device).expand(*batch, 3, 3)
    glob: list[torch.Tensor] = [eye] * skeleton.num_joints
    local: list[torch.Tensor] = [eye] * skeleton.num_joints
    for j, p in enumerate(skeleton.parents):
        parent_glob = glob[p] if p >= 0 else eye
        children = skeleton.children(j)
        # Observed bones in the parent's frame, where the rest bones live when the local rotation is I.
        observed = [(parent_glob.transpose(-1, -2) @ (positions[..., c, :] - positions[..., j, :])[..., None])[..., 0]
                    for c in children]
        if len(children) == 1:
            rest, _ = _unit(offsets[children[0]])
            target, ok = _unit(observed[0])
            rotation = torch.where(ok[..., None, None], _shortest_arc(rest.expand_as(target), target), eye)
        elif len(children) > 1:
            rest = torch.stack([offsets[c] for c in children], -2).expand(*batch, len(children), 3)
            rotation = _kabsch(rest, torch.stack(observed, -2))
        else:
            rotation = eye
        local[j] = rotation
        glob[j] = parent_glob @ rotation
    return torch.stack(local, dim=-3)
