"""The Push-T task (gym-pusht) behind one small wrapper with the plugin's canonical observations.

A kinematic disc (the agent, radius 15 px) tracks an absolute target position through a PD
controller and pushes a T-shaped block; the task is solved when the block covers more than
95 % of the fixed goal T at :data:`GOAL_POSE`. :class:`PushT` wraps gym-pusht's environment
with

- the canonical per-frame features ``agent_pos`` (2,), ``environment_state`` (16,: the T's
  eight corners, x and y interleaved, as gym-pusht reports them), ``block_pose`` (3,: x, y and
  the angle wrapped to [0, 2π)) and, on request, ``image`` (96, 96, 3) uint8;
- actions clipped into the arena (gym-pusht does not clip, and the kinematic agent passes
  through walls);
- an episode that is done on success or after ``max_steps`` steps;
- an exact physical state (:meth:`PushT.get_state`, :meth:`PushT.set_state`) that sets the
  physics bodies directly, since gym-pusht's ``reset_to_state`` neither reproduces the state
  asked for nor leaves the bodies untouched.

:func:`agent_rollout` reproduces the agent's controller in numpy: the agent is kinematic, so
its path does not depend on the block, and a planner can predict it for many candidate target
sequences at once and only simulate contact with :meth:`PushT.advance`.

gym-pusht (and pygame, which it imports) is loaded on first use.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

__all__ = [
    "ENV_ID",
    "GOAL_POSE",
    "AGENT_RADIUS",
    "ARENA_SIZE",
    "SUBSTEPS",
    "PushT",
    "agent_rollout",
    "block_corners",
]

# pygame opens no window with the dummy video driver; set before gym-pusht imports pygame.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

#: gym-pusht's environment id.
ENV_ID = "gym_pusht/PushT-v0"
#: The goal pose of the block: x, y (pixels) and angle (radians); fixed by gym-pusht.
GOAL_POSE = (256.0, 256.0, math.pi / 4)
#: Radius of the agent's disc in pixels.
AGENT_RADIUS = 15.0
#: The arena is the square [0, ARENA_SIZE)² pixels, walled at 5 and 506.
ARENA_SIZE = 512.0
#: Physics substeps per control step (gym-pusht: dt = 0.01 at 10 Hz control).
SUBSTEPS = 10

# gym-pusht's controller: agent velocity += (K_P (target - position) - K_V velocity) DT.
_K_P = 100.0
_K_V = 20.0
_DT = 0.01

# The T's corners in the block's frame, in the order gym-pusht's ``environment_state`` lists
# them (the vertices of its two polygons as pymunk stores them: bar, then stem). The block's
# position is the middle of the bar's top edge, not its centre of gravity (0, 45).
_CORNERS = np.array(
    [[-60.0, 0.0], [60.0, 0.0], [60.0, 30.0], [-60.0, 30.0], [-15.0, 30.0], [15.0, 30.0], [15.0, 120.0], [-15.0, 120.0]]
)


def block_corners(x: Any, y: Any = None, angle: Any = None) -> np.ndarray:
    """The eight corners of the T at a pose, laid out like gym-pusht's ``environment_state``.

    Accepts either one array of poses ``(..., 3)`` (x, y, angle) or three broadcastable arrays
    ``x``, ``y``, ``angle``. The angle may be wrapped or not.

    Args:
        x: poses ``(..., 3)``, or the x coordinates when ``y`` and ``angle`` are given.
        y: the y coordinates (optional).
        angle: the angles in radians (optional).

    Returns:
        Corner coordinates ``[x0, y0, x1, y1, ..., x7, y7]`` in float64.

    Raises:
        ValueError: if only one of ``y`` and ``angle`` is given, or a single pose array does not
            end in 3.

    Shapes:
        x: (..., 3) -> (..., 16); or x, y, angle: broadcast shape (...) -> (..., 16).
    """
    if (y is None) != (angle is None):
        raise ValueError("block_corners takes either poses (..., 3) or all of x, y and angle")
    if y is None:
        poses = np.asarray(x, dtype=np.float64)
        if poses.ndim == 0 or poses.shape[-1] != 3:
            raise ValueError(f"block poses must have shape (..., 3) (x, y, angle); got {poses.shape}")
        x, y, angle = poses[..., 0], poses[..., 1], poses[..., 2]
    x, y, angle = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (x, y, angle)))
    cos, sin = np.cos(angle)[..., None], np.sin(angle)[..., None]
    # Same operation order as pymunk's Vec2d.rotated followed by the translation.
    cx = _CORNERS[:, 0] * cos - _CORNERS[:, 1] * sin + x[..., None]
    cy = _CORNERS[:, 0] * sin + _CORNERS[:, 1] * cos + y[..., None]
    return np.stack([cx, cy], axis=-1).reshape(*x.shape, 16)


def agent_rollout(
    position: np.ndarray, velocity: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The agent's path under gym-pusht's PD controller for a sequence of targets.

    The agent is kinematic (contacts never move it), so its path depends only on its start and
    the targets. The arithmetic is gym-pusht's, operation for operation, so the result matches
    the environment to the last bit.

    Args:
        position: start positions in pixels.
        velocity: start velocities in pixels per second.
        targets: the target of each control step (not clipped here).

    Returns:
        ``(positions, velocities)``: the position after each physics substep and the velocity
        the agent moved with during it (which is also its velocity at the end of the substep).

    Shapes:
        position, velocity: (..., 2); targets: (..., K, 2) -> each output (..., K, SUBSTEPS, 2).
    """
    targets = np.asarray(targets, dtype=np.float64)
    p = np.array(np.broadcast_to(position, targets.shape[:-2] + (2,)), dtype=np.float64)
    v = np.array(np.broadcast_to(velocity, targets.shape[:-2] + (2,)), dtype=np.float64)
    k = targets.shape[-2]
    positions = np.empty(targets.shape[:-2] + (k, SUBSTEPS, 2))
    velocities = np.empty_like(positions)
    for step in range(k):
        target = targets[..., step, :]
        for sub in range(SUBSTEPS):
            v = v + (_K_P * (target - p) - _K_V * v) * _DT
            p = p + v * _DT
            positions[..., step, sub, :] = p
            velocities[..., step, sub, :] = v
    return positions, velocities


def _ignore_contacts(arbiter: Any, space: Any, data: Any) -> None:
    return None


def _direct_physics(env: Any) -> tuple[Any, ...] | None:
    """Chipmunk's own velocity setter and space step with their handles, or None if unavailable.

    A planner runs thousands of substeps per decision, and pymunk's Python wrappers (attribute
    checks, a lock, post-step callback bookkeeping that gym-pusht never uses) cost twice the
    physics itself. Calling the C functions directly gives bit-identical results; if a pymunk
    version lays its internals out differently, :meth:`PushT.advance` uses the public API.
    """
    try:
        from pymunk._chipmunk import lib

        return lib.cpBodySetVelocity, lib.cpSpaceStep, env.agent._body, env.space._space
    except (ImportError, AttributeError):
        return None


class PushT:
    """gym-pusht's Push-T with canonical observations, clipped actions and an exact state.

    Args:
        image: also observe the 96 × 96 RGB frame (``image``); costs a render per step.
        render_size: side in pixels of the frames :meth:`render` returns (``None``: gym-pusht's
            default, 680).
        action_clip: ``(low, high)`` bounds, in pixels, applied to both action coordinates.
        max_steps: the episode is done after this many steps.

    Raises:
        ValueError: for a non-positive ``render_size`` or ``max_steps``, or empty clip bounds.
    """

    def __init__(
        self,
        image: bool = False,
        render_size: int | None = None,
        action_clip: tuple[float, float] = (10.0, 502.0),
        max_steps: int = 300,
    ) -> None:
        low, high = (float(a) for a in action_clip)
        if not low < high:
            raise ValueError(f"action_clip must be (low, high) with low < high; got {action_clip!r}")
        if render_size is not None and int(render_size) <= 0:
            raise ValueError(f"render_size must be a positive number of pixels; got {render_size!r}")
        if int(max_steps) <= 0:
            raise ValueError(f"max_steps must be positive; got {max_steps!r}")
        import gymnasium as gym
        import gym_pusht  # noqa: F401  (registers the environment)

        size = {}
        if render_size is not None:
            size = {"visualization_width": int(render_size), "visualization_height": int(render_size)}
        self.image = bool(image)
        self.action_clip = (low, high)
        self.max_steps = int(max_steps)
        # The bare environment: gymnasium's wrappers would only add checks and a second time limit.
        self._env = gym.make(
            ENV_ID, obs_type="pixels_agent_pos" if self.image else "state", render_mode="rgb_array", **size
        ).unwrapped
        self._ready = False
        self._direct: tuple[Any, ...] | None = None
        self._coverage: float | None = None
        self.steps = 0

    @property
    def coverage(self) -> float:
        """The fraction of the goal T the block covers now."""
        self._check_ready()
        if self._coverage is None:
            self._coverage = float(self._env._get_coverage())
        return self._coverage

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        """Start an episode from gym-pusht's random initial state for ``seed``; returns its observation."""
        obs, _ = self._env.reset(seed=None if seed is None else int(seed))
        # gym-pusht counts contact points in a Python callback after every contact solve, only
        # for its info["n_contacts"] (which we do not report); a no-op halves the cost of
        # contact-rich physics and changes nothing else.
        self._env.collision_handeler.post_solve = _ignore_contacts
        self._direct = _direct_physics(self._env)
        self._ready = True
        self.steps = 0
        self._coverage = float(self._env._get_coverage())
        return self._observe(obs)

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, dict[str, Any]]:
        """Apply one absolute target position (clipped into ``action_clip``).

        Args:
            action: the agent's target ``(x, y)`` in pixels.

        Returns:
            ``(observation, reward, done, info)``: ``reward`` is gym-pusht's
            ``clip(coverage / 0.95, 0, 1)``; ``done`` is success or the step limit; ``info`` has
            ``coverage`` (float), ``success`` (bool), ``truncated`` (bool: the step limit ended
            the episode) and ``action`` (the clipped target that was applied).

        Raises:
            RuntimeError: before the first :meth:`reset`.
            ValueError: if the action is not two finite numbers.
        """
        self._check_ready()
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (2,) or not np.isfinite(action).all():
            raise ValueError(f"an action must be two finite numbers (x, y); got {action!r}")
        action = np.clip(action, *self.action_clip)
        obs, reward, terminated, _, info = self._env.step(action)
        self.steps += 1
        self._coverage = float(info["coverage"])
        success = bool(terminated)
        truncated = not success and self.steps >= self.max_steps
        out = {"coverage": self._coverage, "success": success, "truncated": truncated, "action": action}
        return self._observe(obs), float(reward), success or truncated, out

    def observe(self) -> dict[str, np.ndarray]:
        """The canonical observation of the current state (e.g. after :meth:`set_state`)."""
        self._check_ready()
        return self._observe(self._env.get_obs())

    def render(self) -> np.ndarray:
        """A frame for videos, with the last target marked: uint8 ``(H, W, 3)``."""
        self._check_ready()
        return np.asarray(self._env.render(), dtype=np.uint8)

    def get_state(self) -> np.ndarray:
        """The full physical state as float64 (10,).

        Layout: agent x, y, vx, vy; block x, y, angle (not wrapped), vx, vy, angular velocity.
        The block's velocity is that of its centre of gravity, as pymunk stores it.
        """
        self._check_ready()
        agent, block = self._env.agent, self._env.block
        return np.array(
            [*agent.position, *agent.velocity, *block.position, block.angle, *block.velocity, block.angular_velocity],
            dtype=np.float64,
        )

    def set_state(self, state: Any) -> None:
        """Put the bodies into a state from :meth:`get_state`; the step count is kept.

        Raises:
            RuntimeError: before the first :meth:`reset`.
            ValueError: if ``state`` is not 10 finite numbers.
        """
        self._check_ready()
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (10,) or not np.isfinite(state).all():
            raise ValueError(f"a PushT state must be 10 finite numbers (see PushT.get_state); got shape {state.shape}")
        s = state.tolist()
        agent, block = self._env.agent, self._env.block
        agent.position = (s[0], s[1])
        agent.velocity = (s[2], s[3])
        # Setting the angle rotates the body about its centre of gravity, which moves its origin:
        # angle first, then the position.
        block.angle = s[6]
        block.position = (s[4], s[5])
        block.velocity = (s[7], s[8])
        block.angular_velocity = s[9]
        # Coverage costs a polygon intersection; planners that set states often rarely ask for it.
        self._coverage = None

    def advance(self, agent_velocities: Any) -> tuple[float, float, float, float, float, float]:
        """Run physics substeps with the agent's velocity prescribed (no reward, no bookkeeping).

        For planners: with velocities from :func:`agent_rollout` this moves the bodies exactly as
        :meth:`step` would (targets are not clipped here; clip them before the rollout).

        Args:
            agent_velocities: the agent's velocity for each substep, in pixels per second.

        Returns:
            The block's state afterwards: ``(x, y, angle, vx, vy, angular_velocity)`` (angle not
            wrapped; the velocity is that of the centre of gravity). The block stops as soon as
            contact ends (gym-pusht's space has zero damping), so a zero velocity means no contact
            in the last substep.

        Shapes:
            agent_velocities: (n, 2), usually (SUBSTEPS, 2) for one control step.
        """
        env = self._env
        velocities = np.asarray(agent_velocities, dtype=np.float64).tolist()
        if self._direct is not None:
            set_velocity, step, agent, space = self._direct
            for v in velocities:
                set_velocity(agent, v)
                step(space, _DT)
        else:
            agent, space = env.agent, env.space
            for vx, vy in velocities:
                agent.velocity = (vx, vy)
                space.step(_DT)
        self._coverage = None
        block = env.block
        x, y = block.position
        vx, vy = block.velocity
        return x, y, block.angle, vx, vy, block.angular_velocity

    def close(self) -> None:
        """Release gym-pusht's resources."""
        self._env.close()

    def __enter__(self) -> PushT:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_ready(self) -> None:
        if not self._ready:
            raise RuntimeError("PushT has no state yet: call reset() first")

    def _observe(self, raw: Any) -> dict[str, np.ndarray]:
        env = self._env
        x, y = env.block.position
        angle = env.block.angle
        obs = {
            "agent_pos": np.array(env.agent.position, dtype=np.float64),
            "environment_state": block_corners(x, y, angle),
            "block_pose": np.array([x, y, angle % (2 * np.pi)], dtype=np.float64),
        }
        if self.image:
            obs["image"] = np.asarray(raw["pixels"], dtype=np.uint8)
        return obs
