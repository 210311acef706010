"""Closed-loop execution of a chunked policy: observation history, receding horizon, warm starts.

:class:`ChunkRunner` turns a trained :class:`~polydiff_policy.module.DiffusionPolicy` into a
step-by-step controller. It keeps the last ``obs_horizon`` observations (the first one repeated at
the start of an episode, as in training), predicts a chunk of ``horizon`` actions when its queue
is empty, and executes ``action_horizon`` of them (those from the current frame on) before
predicting again (Chi et al. 2023).

Inference modes (``mode``):

* ``ddpm`` / ``ddim``: every chunk from pure noise with the core's sampler over ``steps`` steps.
* ``rti``: the real-time-iteration scheme (RTI-DP, Duan et al. 2025). The previous chunk,
  shifted by the ``action_horizon`` actions executed since (its last action repeated to fill
  the end), is the initial guess; it is re-noised to ``t_start`` and denoised with only
  ``steps`` DDIM steps, because the solution of the previous control step is already close to
  the new one (the optimal-control idea of warm-starting each solve from the last). The first
  chunk of an episode has no guess and is sampled cold with ``cold_steps`` DDIM steps. By default
  ``t_start`` is ``t_max * steps / reference_steps``, where the last ``steps`` steps of a
  ``reference_steps``-step DDIM grid evenly spaced from ``t_max`` to 0 (diffusers' "trailing"
  spacing) begin, so RTI with k steps is "the last k steps of a trailing DDIM-N from a warm
  start". Discrete action
  dimensions (a gripper's open/close, in normalised units ±1) are scaled by ``discrete_scale``
  in the guess before re-noising, so that the decision survives the re-noising instead of being
  blurred towards 0, and the result is snapped back to ±1.

Latency is measured per chunk (observation normalisation and encoding, sampling and
unnormalisation) with ``time.perf_counter``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor

__all__ = ["ChunkRunner", "Mode", "MODES"]

Mode = Literal["ddpm", "ddim", "rti"]
MODES: tuple[str, ...] = get_args(Mode)


class ChunkRunner:
    """Run a policy step by step with receding-horizon chunks.

    Args:
        model: a trained :class:`~polydiff_policy.module.DiffusionPolicy` (or
            :class:`~polydiff_policy.module.RegressionPolicy`, for which the mode is ignored).
        mode: ``ddpm``, ``ddim`` or ``rti`` (see the module docstring).
        steps: denoising steps per chunk (for ``rti``: per warm-started chunk).
        action_horizon: actions executed per chunk (default: the model's).
        t_start: RTI's re-noising time (default from ``reference_steps``).
        reference_steps: the DDIM grid that places RTI's default ``t_start``.
        cold_steps: DDIM steps of RTI's first chunk in an episode.
        discrete_dims: indices of discrete action dimensions (RTI's scaling).
        discrete_scale: RTI's scale of discrete dimensions in the warm start.
        seed: seed of the sampling noise (reset with :meth:`reset`).

    Attributes:
        latencies: seconds of every chunk predicted since construction.
        cold: for every chunk, whether it was sampled from pure noise.
    """

    def __init__(
        self,
        model: Any,
        mode: Mode = "ddim",
        steps: int = 10,
        *,
        action_horizon: int | None = None,
        t_start: float | None = None,
        reference_steps: int = 10,
        cold_steps: int = 10,
        discrete_dims: Sequence[int] = (),
        discrete_scale: float = 3.0,
        seed: int = 0,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown inference mode {mode!r}; valid: {', '.join(MODES)}")
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        self.model = model
        self.mode = mode
        self.steps = int(steps)
        self.obs_horizon = model.obs_horizon
        self.horizon = model.horizon
        self.action_horizon = int(action_horizon if action_horizon is not None else model.action_horizon)
        if not 1 <= self.action_horizon <= self.horizon - self.obs_horizon + 1:
            raise ValueError(
                f"action_horizon must lie in [1, {self.horizon - self.obs_horizon + 1}] for horizon {self.horizon} "
                f"and obs_horizon {self.obs_horizon}, got {self.action_horizon}"
            )
        t_max = float(model.schedule.t_max)
        if mode == "rti":
            if reference_steps < self.steps:
                raise ValueError(f"reference_steps ({reference_steps}) must be at least the RTI steps ({self.steps})")
            self.t_start = float(t_start) if t_start is not None else t_max * self.steps / reference_steps
            if not 0.0 < self.t_start <= t_max:
                raise ValueError(f"t_start must lie in (0, {t_max}], got {self.t_start}")
        else:
            self.t_start = None
        if int(cold_steps) != cold_steps or cold_steps < 1:
            raise ValueError(f"cold_steps must be a positive integer, got {cold_steps!r}")
        self.cold_steps = int(cold_steps)
        dims = [int(d) for d in discrete_dims]
        if any(not 0 <= d < model.action_dim for d in dims):
            raise ValueError(f"discrete_dims {dims} out of range for {model.action_dim} action dimensions")
        self.discrete_dims = dims
        if discrete_scale <= 0:
            raise ValueError(f"discrete_scale must be positive, got {discrete_scale}")
        self.discrete_scale = float(discrete_scale)
        self.seed = int(seed)
        self.latencies: list[float] = []
        self.cold: list[bool] = []
        info = model.require_info()
        self.features = list(info["obs_features"])
        self.image_feature = info.get("image_feature")
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """Forget the episode: observation history, action queue and warm start."""
        self.generator = torch.Generator(device=self.model.device)
        self.generator.manual_seed(self.seed if seed is None else int(seed))
        self.history: deque[Mapping[str, np.ndarray]] = deque(maxlen=self.obs_horizon)
        self.queue: deque[np.ndarray] = deque()
        self.previous: Tensor | None = None

    def _stack(self) -> tuple[Tensor, Tensor | None]:
        frames = list(self.history)
        while len(frames) < self.obs_horizon:  # the first observation repeated, as training pads
            frames.insert(0, frames[0])
        try:
            low = [np.concatenate([np.asarray(f[k], dtype=np.float32).reshape(-1) for k in self.features])
                   if self.features else np.zeros(0, np.float32) for f in frames]
        except KeyError as err:
            raise KeyError(f"the observation has no feature {err.args[0]!r}; the policy observes {self.features}") from None
        obs = torch.from_numpy(np.stack(low)).unsqueeze(0)
        image = None
        if self.image_feature:
            pics = np.stack([np.asarray(f[self.image_feature]) for f in frames])  # (To, H, W, 3) uint8
            image = torch.from_numpy(pics).permute(0, 3, 1, 2).float().div(255.0).unsqueeze(0)
        return obs, image

    def _warm_start(self) -> Tensor:
        prev = self.previous
        n = self.action_horizon
        shifted = torch.cat([prev[:, n:], prev[:, -1:].expand(-1, n, -1)], dim=1).clone()
        if self.discrete_dims:
            shifted[..., self.discrete_dims] *= self.discrete_scale
        return shifted

    def predict(self) -> np.ndarray:
        """A new chunk from the current history, (horizon, action_dim) in environment units."""
        obs, image = self._stack()
        started = time.perf_counter()
        model = self.model
        cold = self.mode != "rti" or self.previous is None
        if self.mode == "rti" and not cold:
            chunk = model.predict_chunk(obs, image, sampler="ddim", steps=self.steps, start=self._warm_start(),
                                        t_start=self.t_start, generator=self.generator, normalized=True)
        else:
            steps = self.cold_steps if self.mode == "rti" else self.steps
            sampler = "ddim" if self.mode == "rti" else self.mode
            chunk = model.predict_chunk(obs, image, sampler=sampler, steps=steps, generator=self.generator, normalized=True)
        if self.discrete_dims:
            chunk[..., self.discrete_dims] = torch.where(chunk[..., self.discrete_dims] >= 0, 1.0, -1.0)
        self.previous = chunk
        actions = model.unnormalize_actions(chunk)[0].cpu().numpy()
        self.latencies.append(time.perf_counter() - started)
        self.cold.append(cold)
        return actions

    def act(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        """The action for this observation (predicting a new chunk when the last one is used up)."""
        self.history.append(observation)
        if not self.queue:
            chunk = self.predict()
            start = self.obs_horizon - 1
            self.queue.extend(chunk[start:start + self.action_horizon])
        return self.queue.popleft()
