"""A scripted Push-T teacher: a sampling planner over push motions.

Each decision samples candidate pushes: a contact point on one of the T's eight edges, a push
direction within ±0.6 rad of straight in, a push length (log-uniform, 2–120 px), a speed
(4–20 px per step) and 0–2 pause steps at the end, which let the lagging controller finish the
push. The agent reaches the start of a push along the shortest path around the block inflated
by a clearance (a visibility graph over the inflated T's convex corners), then pushes in a
straight line. Every candidate is simulated from the current state: the agent is kinematic, so
its whole path is computed at once for all candidates (:func:`~polydiff_policy.pusht.agent_rollout`)
and the physics engine only runs, in a second environment, from the first step that comes near
the block until contact is over. A candidate's cost at step ``t`` is the mean distance of the
T's corners to the goal's corners plus a small cost per step; the best candidates are refined
by perturbing their parameters, and the best one is executed up to the step of its lowest cost
before planning again.

Randomness comes only from a generator seeded per episode, so an episode is reproducible from
its seeds; different planner seeds solve the same start in different ways (rotating either way,
going round the block either way), which makes the demonstrations multimodal.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np

from polydiff_policy.episodes import Episode
from polydiff_policy.pusht import AGENT_RADIUS, GOAL_POSE, PushT, agent_rollout, block_corners

__all__ = ["run_expert_episode", "generate_demonstrations"]

# The T's outline in the block's frame, and its two rectangles (bar, stem) as (low, high) corners.
_OUTLINE = np.array(
    [[-60.0, 0.0], [60.0, 0.0], [60.0, 30.0], [15.0, 30.0], [15.0, 120.0], [-15.0, 120.0], [-15.0, 30.0], [-60.0, 30.0]]
)
_RECTS = np.array([[[-60.0, 0.0], [60.0, 30.0]], [[-15.0, 30.0], [15.0, 120.0]]])
_EDGE_START = _OUTLINE
_EDGE_VECTOR = np.roll(_OUTLINE, -1, axis=0) - _OUTLINE
# Unit normals (e_y, -e_x) of edges e: with this vertex order they point out of the T.
_EDGE_NORMAL = np.stack([_EDGE_VECTOR[:, 1], -_EDGE_VECTOR[:, 0]], axis=1)
_EDGE_NORMAL /= np.linalg.norm(_EDGE_NORMAL, axis=1, keepdims=True)
# The convex corners of the T (the others are never on a shortest path round it), as the
# directions in which they are inflated.
_CONVEX = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [1.0, 1.0], [-1.0, 1.0], [-1.0, 1.0]])
_CONVEX_AT = np.array([[-60.0, 0.0], [60.0, 0.0], [60.0, 30.0], [15.0, 120.0], [-15.0, 120.0], [-60.0, 30.0]])
_GOAL_CORNERS = block_corners(np.array(GOAL_POSE)).reshape(8, 2)


@dataclass(frozen=True)
class _Settings:
    """The planner's knobs (distances in pixels, speeds in pixels per control step)."""

    samples: int = 48
    refine_parents: int = 4
    refine_children: int = 4
    max_angle: float = 0.6
    min_length: float = 2.0
    max_length: float = 120.0
    min_speed: float = 4.0
    max_speed: float = 20.0
    max_pause: int = 2
    approach_speed: float = 15.0
    # The agent's surface starts a push this far from the edge.
    gap: float = 2.0
    # Paths keep the agent's surface this far from the block; waypoints sit further out.
    clearance: float = 4.0
    waypoint_clearance: float = 12.0
    step_cost: float = 0.05
    extra_rounds: int = 2
    arena: tuple[float, float] = (10.0, 502.0)


def _to_local(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    c, s = math.cos(pose[2]), math.sin(pose[2])
    dx, dy = points[..., 0] - pose[0], points[..., 1] - pose[1]
    return np.stack([c * dx + s * dy, -s * dx + c * dy], axis=-1)


def _to_world(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    c, s = math.cos(pose[2]), math.sin(pose[2])
    x, y = points[..., 0], points[..., 1]
    return np.stack([c * x - s * y + pose[0], s * x + c * y + pose[1]], axis=-1)


def _distance_to_t(local: np.ndarray) -> np.ndarray:
    """Distance from points in the block's frame to the T (0 inside). Shapes: (..., 2) -> (...)."""
    q = local[..., None, :]
    gap = np.maximum(np.maximum(_RECTS[:, 0] - q, q - _RECTS[:, 1]), 0.0)
    return np.sqrt((gap**2).sum(-1)).min(-1)


def _segment_hits_box(a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Whether segments a->b cross the open boxes [lo, hi] (slab test). Shapes broadcast over (..., 2)."""
    d = b - a
    flat = np.abs(d) < 1e-12
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (lo - a) / d
        t2 = (hi - a) / d
    inside = (a > lo) & (a < hi)
    t_in = np.where(flat, np.where(inside, -np.inf, np.inf), np.minimum(t1, t2))
    t_out = np.where(flat, np.where(inside, np.inf, -np.inf), np.maximum(t1, t2))
    enter = np.maximum(t_in.max(-1), 0.0)
    leave = np.minimum(t_out.min(-1), 1.0)
    return enter < leave - 1e-9


def _segment_hits_t(a: np.ndarray, b: np.ndarray, inflate: np.ndarray) -> np.ndarray:
    """Whether segments (block frame) come within ``inflate`` of the T, counting corners as square."""
    r = np.asarray(inflate)[..., None]
    hit = np.zeros(np.broadcast_shapes(a.shape[:-1], b.shape[:-1], r.shape[:-1]), dtype=bool)
    for lo, hi in _RECTS:
        hit |= _segment_hits_box(a, b, lo - r, hi + r)
    return hit


def _resample(path: np.ndarray, spacing: float) -> np.ndarray:
    """Points every ``spacing`` along a polyline (excluding its start, always ending at its end)."""
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    total = seg.sum()
    if total < 1e-9:
        return np.empty((0, 2))
    at = np.arange(1, max(1, math.ceil(total / spacing - 1e-9)) + 1) * spacing
    at[-1] = total
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    return np.stack([np.interp(at, arc, path[:, 0]), np.interp(at, arc, path[:, 1])], axis=1)


class _Planner:
    """Plans pushes for one episode; ``sim`` is a second environment used for look-ahead."""

    def __init__(self, sim: PushT, rng: np.random.Generator, settings: _Settings = _Settings()) -> None:
        self.sim = sim
        self.rng = rng
        self.cfg = settings

    # Candidate parameters are a dict of arrays: edge, u, angle, length, speed, pause.
    def _sample(self, n: int) -> dict[str, np.ndarray]:
        cfg, rng = self.cfg, self.rng
        return {
            "edge": rng.integers(0, 8, n),
            "u": rng.uniform(0.05, 0.95, n),
            "angle": rng.uniform(-cfg.max_angle, cfg.max_angle, n),
            "length": np.exp(rng.uniform(math.log(cfg.min_length), math.log(cfg.max_length), n)),
            "speed": rng.uniform(cfg.min_speed, cfg.max_speed, n),
            "pause": rng.integers(0, cfg.max_pause + 1, n),
        }

    def _perturb(self, params: dict[str, np.ndarray], parents: np.ndarray, children: int) -> dict[str, np.ndarray]:
        cfg, rng = self.cfg, self.rng
        p = {k: np.repeat(v[parents], children) for k, v in params.items()}
        n = len(p["edge"])
        p["u"] = np.clip(p["u"] + rng.normal(0.0, 0.08, n), 0.0, 1.0)
        p["angle"] = np.clip(p["angle"] + rng.normal(0.0, 0.1, n), -cfg.max_angle, cfg.max_angle)
        p["length"] = np.clip(p["length"] * np.exp(rng.normal(0.0, 0.25, n)), cfg.min_length, cfg.max_length)
        p["speed"] = np.clip(p["speed"] + rng.normal(0.0, 1.5, n), cfg.min_speed, cfg.max_speed)
        p["pause"] = np.clip(p["pause"] + rng.integers(-1, 2, n) * (rng.random(n) < 0.3), 0, cfg.max_pause)
        return p

    def _routes(self, agent_local: np.ndarray, entries: np.ndarray) -> list[np.ndarray]:
        """Shortest paths (block frame) from the agent to each entry point round the inflated T."""
        cfg = self.cfg
        r_vis = AGENT_RADIUS + cfg.clearance
        r_way = AGENT_RADIUS + cfg.waypoint_clearance
        nodes = np.concatenate([agent_local[None], _CONVEX_AT + r_way * _CONVEX])
        m = len(nodes)
        # A segment leaving the agent may come as close as the agent already is.
        r0 = float(np.clip(_distance_to_t(agent_local) - 0.5, 0.0, r_vis))
        inflate = np.full((m, m), r_vis)
        inflate[0, :] = inflate[:, 0] = r0
        blocked = _segment_hits_t(nodes[:, None], nodes[None, :], inflate)
        length = np.where(blocked, np.inf, np.linalg.norm(nodes[:, None] - nodes[None, :], axis=-1))
        dist = length[0].copy()
        dist[0] = 0.0
        pred = np.zeros(m, dtype=int)
        for _ in range(m - 1):
            via = dist[:, None] + length
            best = via.argmin(0)
            better = via[best, np.arange(m)] < dist - 1e-9
            dist = np.where(better, via[best, np.arange(m)], dist)
            pred = np.where(better, best, pred)
        r_entry = np.clip(_distance_to_t(entries) - 0.5, 0.0, r_vis)
        r_last = np.broadcast_to(r_entry, (m, len(entries))).copy()
        r_last[0] = np.minimum(r_last[0], r0)
        seen = ~_segment_hits_t(nodes[:, None], entries[None], r_last)
        total = np.where(seen, dist[:, None] + np.linalg.norm(nodes[:, None] - entries[None], axis=-1), np.inf)
        last = total.argmin(0)
        routes = []
        for i, node in enumerate(last.tolist()):
            if not np.isfinite(total[node, i]):
                node = 0  # no clear way: go straight and let the simulation judge it
            chain = []
            while node != 0:
                chain.append(node)
                node = int(pred[node])
            routes.append(np.concatenate([nodes[[0] + chain[::-1]], entries[i : i + 1]]))
        return routes

    def _targets(self, state: np.ndarray, params: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[int]]:
        """Each candidate's target sequence (world frame, clipped into the arena) and push end step."""
        cfg = self.cfg
        pose = state[4:7]
        edge = params["edge"]
        normal = _EDGE_NORMAL[edge]
        contact = _EDGE_START[edge] + params["u"][:, None] * _EDGE_VECTOR[edge]
        start = contact + normal * (AGENT_RADIUS + cfg.gap)
        entry = contact + normal * (AGENT_RADIUS + max(cfg.clearance, cfg.gap) + 1.0)
        c, s = np.cos(params["angle"]), np.sin(params["angle"])
        inward = -normal
        direction = np.stack([c * inward[:, 0] - s * inward[:, 1], s * inward[:, 0] + c * inward[:, 1]], axis=1)
        end = start + direction * (cfg.gap + params["length"])[:, None]
        routes = self._routes(_to_local(state[:2], pose), entry)
        out, pushed = [], []
        for i, route in enumerate(routes):
            approach = _resample(route, cfg.approach_speed)
            push = _resample(np.stack([entry[i], start[i], end[i]]), float(params["speed"][i]))
            hold = np.repeat(end[i : i + 1], int(params["pause"][i]), axis=0)
            local = np.concatenate([approach, push, hold])
            out.append(np.clip(_to_world(local, pose), *cfg.arena))
            pushed.append(len(approach) + len(push))
        return out, pushed

    def _evaluate(
        self, state: np.ndarray, params: dict[str, np.ndarray]
    ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, float]:
        """Simulate each candidate from ``state``.

        Returns:
            The target sequences, each one's lowest cost and the step where it is reached, and
            the current corner error.
        """
        cfg = self.cfg
        targets, pushed = self._targets(state, params)
        n = len(targets)
        lengths = np.array([len(t) for t in targets])
        k_max = int(lengths.max())
        padded = np.stack([np.concatenate([t, np.repeat(t[-1:], k_max - len(t), axis=0)]) for t in targets])
        positions, velocities = agent_rollout(state[:2], state[2:4], padded)
        pose0 = state[4:7]
        reach = AGENT_RADIUS + 1.5
        touching = (_distance_to_t(_to_local(positions, pose0)) < reach).any(-1)  # (n, K)
        block_moving = bool(np.any(state[7:10] != 0.0))
        err0 = float(np.linalg.norm(block_corners(pose0).reshape(8, 2) - _GOAL_CORNERS, axis=1).mean())
        best_cost = np.full(n, np.inf)
        best_step = np.zeros(n, dtype=int)
        for i in range(n):
            k_len = int(lengths[i])
            hits = np.flatnonzero(touching[i, :k_len])
            errors = np.full(k_len, err0)
            if len(hits) or block_moving:
                k0 = 0 if block_moving else int(hits[0])
                if k0 == 0:
                    self.sim.set_state(state)
                else:
                    # The block has not moved before the agent first comes near it.
                    p, v = positions[i, k0 - 1, -1], velocities[i, k0 - 1, -1]
                    self.sim.set_state(np.concatenate([p, v, pose0, [0.0, 0.0, 0.0]]))
                poses = np.empty((k_len - k0, 3))
                for k in range(k0, k_len):
                    x, y, a, vx, vy, w = self.sim.advance(velocities[i, k])
                    poses[k - k0] = (x, y, a)
                    # Once the push is over, the block is at rest and the agent's remaining path
                    # stays clear of it, nothing moves any more.
                    if k + 1 >= pushed[i] and k + 1 < k_len and vx == 0.0 and vy == 0.0 and w == 0.0:
                        rest = positions[i, k + 1 : k_len]
                        if _distance_to_t(_to_local(rest, poses[k - k0])).min() >= reach:
                            poses[k - k0 + 1 :] = poses[k - k0]
                            break
                corners = block_corners(poses).reshape(-1, 8, 2)
                errors[k0:] = np.linalg.norm(corners - _GOAL_CORNERS, axis=-1).mean(-1)
            cost = errors + cfg.step_cost * np.arange(1, k_len + 1)
            best_step[i] = int(cost.argmin())
            best_cost[i] = cost[best_step[i]]
        return targets, best_cost, best_step, err0

    def plan(self, state: np.ndarray) -> np.ndarray:
        """The targets to execute next from a physical state (see :meth:`PushT.get_state`)."""
        cfg = self.cfg
        params = self._sample(cfg.samples)
        targets, cost, step, err0 = self._evaluate(state, params)
        for _ in range(cfg.extra_rounds):
            if cost.min() < err0:
                break
            more = self._sample(cfg.samples)
            more_targets, more_cost, more_step, _ = self._evaluate(state, more)
            params = {k: np.concatenate([params[k], more[k]]) for k in params}
            targets += more_targets
            cost, step = np.concatenate([cost, more_cost]), np.concatenate([step, more_step])
        parents = np.argsort(cost, kind="stable")[: cfg.refine_parents]
        children = self._perturb(params, parents, cfg.refine_children)
        child_targets, child_cost, child_step, _ = self._evaluate(state, children)
        targets += child_targets
        cost, step = np.concatenate([cost, child_cost]), np.concatenate([step, child_step])
        best = int(cost.argmin())
        return targets[best][: step[best] + 1]


def run_expert_episode(seed: int, *, image: bool = False, max_steps: int = 300, rng_seed: int | None = None) -> Episode:
    """Run the planner on the episode gym-pusht starts from ``seed``.

    Args:
        seed: the environment seed (initial state).
        image: also record the 96 × 96 frames (``image``).
        max_steps: the step limit.
        rng_seed: the planner's seed (default: ``seed``); other values give other solutions.

    Returns:
        The episode: per-step observations (``agent_pos``, ``environment_state``, ``block_pose``
        and, with ``image``, ``image``) seen before each action, the actions (clipped targets),
        the rewards, success, maximum coverage and seed.

    Shapes:
        observations: agent_pos (T, 2), environment_state (T, 16), block_pose (T, 3) float32,
        image (T, 96, 96, 3) uint8; actions (T, 2) float32; rewards (T,) float32.
    """
    rng = np.random.default_rng(seed if rng_seed is None else rng_seed)
    env = PushT(image=image, max_steps=max_steps)
    sim = PushT()
    try:
        obs = env.reset(seed=seed)
        sim.reset(seed=seed)
        planner = _Planner(sim, rng)
        frames: dict[str, list[np.ndarray]] = {k: [] for k in obs}
        actions, rewards = [], []
        best = env.coverage
        success, done = False, False
        while not done:
            for target in planner.plan(env.get_state()):
                for k, v in obs.items():
                    frames[k].append(v)
                obs, reward, done, info = env.step(target)
                actions.append(info["action"])
                rewards.append(reward)
                best = max(best, info["coverage"])
                success = success or info["success"]
                if done:
                    break
    finally:
        env.close()
        sim.close()
    observations = {
        k: np.stack(v).astype(np.uint8 if k == "image" else np.float32) for k, v in frames.items()
    }
    return Episode(
        observations=observations,
        actions=np.stack(actions).astype(np.float32),
        success=bool(success),
        max_coverage=float(best),
        seed=int(seed),
        rewards=np.asarray(rewards, dtype=np.float32),
    )


def _run_one(args: tuple[int, bool]) -> Episode:
    seed, image = args
    return run_expert_episode(seed, image=image)


def generate_demonstrations(
    n: int,
    *,
    seed: int = 0,
    workers: int = 1,
    image: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[Episode]:
    """Run the expert on ``n`` episodes (environment seeds ``seed``, ``seed + 1``, ...).

    Args:
        n: how many episodes.
        seed: the first environment seed.
        workers: processes to use (1: run here).
        image: also record the 96 × 96 frames.
        progress: called as ``progress(done, n)`` after each finished episode.

    Returns:
        The episodes in seed order (failed ones included; see ``Episode.success``).

    Raises:
        ValueError: if ``n`` is negative or ``workers`` is below 1.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1; got {workers}")
    jobs = [(seed + i, image) for i in range(n)]
    if workers == 1 or n <= 1:
        episodes = []
        for i, job in enumerate(jobs):
            episodes.append(_run_one(job))
            if progress is not None:
                progress(i + 1, n)
        return episodes
    results: list[Episode | None] = [None] * n
    # A fresh interpreter per worker: forking a process that holds pygame or torch state is unsafe.
    with ProcessPoolExecutor(max_workers=min(workers, n), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_run_one, job): i for i, job in enumerate(jobs)}
        for done, future in enumerate(as_completed(futures), start=1):
            results[futures[future]] = future.result()
            if progress is not None:
                progress(done, n)
    return results  # type: ignore[return-value]
