"""One demonstration or rollout held in memory: per-frame observations and the actions taken.

Observation features use the plugin's canonical names (``agent_pos`` (2,), ``environment_state``
(16,), ``block_pose`` (3,), ``image`` uint8 (96, 96, 3)); every array's first axis is time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Episode"]


@dataclass
class Episode:
    """A recorded episode: observation ``t`` was seen, then action ``t`` was applied.

    Attributes:
        observations: feature name -> array whose first axis is time.
        actions: the actions taken, one per observation.
        success: whether the episode reached the goal (``None``: unknown).
        max_coverage: the highest goal coverage reached (``None``: unknown).
        seed: the environment seed the episode started from (``None``: unknown).
        rewards: the reward received after each action (``None``: not recorded).

    Shapes:
        observations[name]: (T, ...)
        actions: (T, A) float32
        rewards: (T,)
    """

    observations: dict[str, np.ndarray]
    actions: np.ndarray
    success: bool | None = None
    max_coverage: float | None = None
    seed: int | None = None
    rewards: np.ndarray | None = None

    def __len__(self) -> int:
        return int(len(self.actions))
