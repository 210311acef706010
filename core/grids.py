"""Sampling time grids: decreasing times from ``schedule.t_max`` to 0.

A grid for ``n`` steps has ``n + 1`` points; all built-in grids place their ``n`` noise levels
between ``t_max`` and ``t_min`` and end with a final step to ``t = 0``, where samplers return
the denoised estimate (the convention of Karras et al. 2022). An explicit grid may end above 0,
in which case the state at its last time is returned.

A grid may also be per element: shape ``(n + 1, *s)`` with ``s`` broadcastable to the state the
way per-element times are (e.g. one noise level per frame for rolling diffusion).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor

from polydiff.schedules import EDM, Schedule

GridName = Literal["auto", "uniform", "karras", "logsnr", "trailing", "leading"]
GRIDS: tuple[str, ...] = get_args(GridName)

__all__ = [
    "GridName", "GRIDS", "uniform_grid", "karras_grid", "logsnr_grid", "trailing_grid", "leading_grid", "make_grid",
    "check_grid",
]

# log-SNR is clipped to this range so that schedules reaching pure noise (rectified flow at t = 1)
# still give finite grid end points.
_LOG_SNR_FLOOR = -30.0


def _finish(times: Tensor) -> Tensor:
    return torch.cat([times, times.new_zeros(1)])


def _log_snr_range(schedule: Schedule) -> tuple[float, float]:
    hi = float(schedule.log_snr(torch.tensor(schedule.t_min, dtype=torch.float64)))
    lo = max(float(schedule.log_snr(torch.tensor(schedule.t_max, dtype=torch.float64))), _LOG_SNR_FLOOR)
    return lo, hi


def uniform_grid(schedule: Schedule, steps: int) -> Tensor:
    """``steps`` times evenly spaced from ``t_max`` to ``t_min``, then 0 (DDPM/DDIM's spacing)."""
    _check_steps(steps)
    return _finish(torch.linspace(schedule.t_max, schedule.t_min, steps, dtype=torch.float64))


def trailing_grid(schedule: Schedule, steps: int) -> Tensor:
    """``steps + 1`` times evenly spaced from ``t_max`` to 0 (diffusers' "trailing" spacing).

    Unlike :func:`uniform_grid` no evaluation is spent at ``t_min``: the last step goes to t = 0
    from ``t_max / steps`` (Lin et al. 2024 recommend this spacing).
    """
    _check_steps(steps)
    return torch.linspace(schedule.t_max, 0.0, steps + 1, dtype=torch.float64)


def leading_grid(schedule: Schedule, steps: int) -> Tensor:
    """``t_min + i t_max / steps`` for ``i = steps-1 .. 0``, then 0 (diffusers' "leading" spacing).

    It reproduces the DDPM/DDIM "leading" timesteps of a discrete schedule exactly and, like
    them, never visits the highest noise levels (Lin et al. 2024 show the bias this causes); it
    is here so results from those samplers can be reproduced and compared.
    """
    _check_steps(steps)
    i = torch.arange(steps - 1, -1, -1, dtype=torch.float64)
    return _finish(schedule.t_min + i * (schedule.t_max / steps))


def karras_grid(schedule: Schedule, steps: int, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022, eq. 5) noise levels in the schedule's VE-equivalent ``sigma/alpha``.

    ``sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``.
    """
    _check_steps(steps)
    lo, hi = _log_snr_range(schedule)
    s_max, s_min = math.exp(-0.5 * lo), math.exp(-0.5 * hi)
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    sig = (s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    times = schedule.t_from_sigma_ve(sig)
    # t_min first, so a one-step grid still starts at t_max (where the prior is drawn).
    times[-1], times[0] = schedule.t_min, _first_time(schedule, lo)
    return _finish(times)


def logsnr_grid(schedule: Schedule, steps: int) -> Tensor:
    """Times evenly spaced in log-SNR (DPM-Solver's recommended spacing, Lu et al. 2022)."""
    _check_steps(steps)
    lo, hi = _log_snr_range(schedule)
    times = schedule.t_from_log_snr(torch.linspace(lo, hi, steps, dtype=torch.float64))
    # t_min first, so a one-step grid still starts at t_max (where the prior is drawn).
    times[-1], times[0] = schedule.t_min, _first_time(schedule, lo)
    return _finish(times)


def _first_time(schedule: Schedule, lo: float) -> float:
    t_max_log_snr = float(schedule.log_snr(torch.tensor(schedule.t_max, dtype=torch.float64)))
    return schedule.t_max if t_max_log_snr >= _LOG_SNR_FLOOR else float(schedule.t_from_log_snr(torch.tensor(lo)))


def _check_steps(steps: int) -> None:
    if int(steps) != steps or steps < 1:
        raise ValueError(f"the number of steps must be a positive integer, got {steps!r}")


def make_grid(
    grid: GridName | Tensor | list[float], schedule: Schedule, steps: int, *, rho: float | None = None
) -> Tensor:
    """A grid by name, or an explicit one validated.

    ``auto`` picks the Karras grid for :class:`~polydiff.schedules.EDM` (with its ``rho``) and the
    log-SNR grid otherwise.
    """
    if not isinstance(grid, str):
        return check_grid(grid)
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; valid: {', '.join(GRIDS)} or an explicit tensor of times")
    if grid == "auto":
        grid = "karras" if isinstance(schedule, EDM) else "logsnr"
    if grid == "uniform":
        return uniform_grid(schedule, steps)
    if grid == "trailing":
        return trailing_grid(schedule, steps)
    if grid == "leading":
        return leading_grid(schedule, steps)
    if grid == "karras":
        return karras_grid(schedule, steps, rho if rho is not None else getattr(schedule, "rho", 7.0))
    return logsnr_grid(schedule, steps)


def check_grid(grid: Tensor | list[float]) -> Tensor:
    """Validate an explicit grid: at least two points in [0, 1], non-increasing along dim 0.

    Every element must move at least once; a per-element grid may hold an element still for
    some steps (samplers leave it unchanged there).
    """
    grid = torch.as_tensor(grid, dtype=torch.float64)
    if grid.ndim == 0 or grid.shape[0] < 2:
        raise ValueError(f"a time grid needs at least two points, got shape {tuple(grid.shape)}")
    if not torch.isfinite(grid).all() or (grid < 0).any() or (grid > 1).any():
        raise ValueError("grid times must be finite and lie in [0, 1]")
    if not (grid[1:] <= grid[:-1]).all() or not (grid[1:] < grid[:-1]).any(dim=0).all():
        raise ValueError("grid times must decrease from the first point to the last")
    return grid
