"""Samplers: pure functions over (denoiser, schedule, start state, time grid).

Every sampler has the signature ``sampler(denoiser, schedule, x, grid, *, cond=None, y=None,
guidance=1.0, known=None, generator=None, callback=None, **options)`` and returns the sample.
They keep their history in local variables and draw randomness only from ``generator``.
:func:`sample` picks a sampler and a grid by name.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import Tensor

from polydiff.grids import GridName, make_grid
from polydiff.samplers.ddim import sample_ddim, sample_ddpm
from polydiff.samplers.dpmpp import sample_dpmpp_2m
from polydiff.samplers.edm import sample_euler, sample_heun
from polydiff.samplers.flow import sample_flow_euler
from polydiff.samplers.guided import KnownValues, NonFiniteError, StepInfo
from polydiff.samplers.pc import sample_pc
from polydiff.schedules import EDM, RectifiedFlow, Schedule

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
    "pc": sample_pc,
    "flow_euler": sample_flow_euler,
}

# The grid each sampler is usually run on when the caller says "auto".
_AUTO_GRID = {"ddpm": "uniform", "ddim": "uniform", "pc": "uniform", "flow_euler": "uniform",
              "euler": "karras", "heun": "karras", "dpmpp_2m": "logsnr"}

__all__ = [
    "SAMPLERS", "get_sampler", "sample", "sampler_options", "check_sampler_options", "evaluations", "KnownValues", "StepInfo", "NonFiniteError",
    "sample_ddpm", "sample_ddim", "sample_euler", "sample_heun", "sample_dpmpp_2m", "sample_pc",
    "sample_flow_euler",
]


def get_sampler(name: str) -> Callable[..., Tensor]:
    """The sampler function called ``name``; the error lists the valid names."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}") from None


def sampler_options(name: str) -> set[str]:
    """The names of a sampler's own options (``eta``, ``churn``, ``snr``, ...)."""
    fn = get_sampler(name)
    names = {p.name for p in inspect.signature(fn).parameters.values() if p.kind == p.KEYWORD_ONLY}
    return names - {"cond", "y", "guidance", "known", "generator", "callback"}


def check_sampler_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` if ``name`` accepts them all, else a ValueError listing the valid ones."""
    allowed = sampler_options(name)
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(
            f"sampler {name!r} has no option {', '.join(sorted(unknown))}; "
            f"its options: {', '.join(sorted(allowed)) or 'none'}"
        )
    return dict(options)


def evaluations(name: str, steps: int, *, guidance: float = 1.0, corrector_steps: int = 1) -> int:
    """Denoiser evaluations (NFE) a sampler spends on ``steps`` steps ending at t = 0."""
    get_sampler(name)
    per_call = 1 if guidance == 1 else 2
    if name == "heun":
        return per_call * (2 * steps - 1)
    if name == "pc":
        return per_call * (steps * (1 + corrector_steps))
    return per_call * steps


def sample(
    denoiser: Callable[..., Tensor],
    schedule: Schedule,
    x: Tensor,
    *,
    sampler: str = "dpmpp_2m",
    steps: int = 20,
    grid: GridName | Tensor = "auto",
    rho: float | None = None,
    cond: Any = None,
    y: Tensor | None = None,
    guidance: float = 1.0,
    known: KnownValues | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[StepInfo], Tensor | None] | None = None,
    **options: Any,
) -> Tensor:
    """Sample with a sampler and grid chosen by name.

    Args:
        denoiser: called ``denoiser(x, t, cond)``; declares its ``prediction``.
        schedule: the forward process the denoiser was trained with.
        x: the start state, usually ``schedule.prior(shape, y=y, generator=generator)``.
        sampler: one of :data:`SAMPLERS`.
        steps: number of steps (see :func:`evaluations` for the denoiser calls they cost).
        grid: ``auto`` (the sampler's usual grid; Karras for EDM), ``uniform``, ``karras``,
            ``logsnr``, or an explicit decreasing tensor of times.
        rho: exponent of the Karras grid (default: the schedule's, else 7).
        options: the sampler's own options (``eta``, ``churn``, ``snr``, ...).

    Shapes:
        x, y: (B, ...); returns (B, ...).
    """
    fn = get_sampler(sampler)
    check_sampler_options(sampler, options)
    if isinstance(grid, str) and grid == "auto":
        if isinstance(schedule, RectifiedFlow):
            grid = "uniform"  # straight paths: even steps in t, as flow-matching models are sampled
        else:
            grid = "karras" if isinstance(schedule, EDM) else _AUTO_GRID[sampler]
    times = make_grid(grid, schedule, steps, rho=rho)
    return fn(denoiser, schedule, x, times, cond=cond, y=y, guidance=guidance, known=known,
              generator=generator, callback=callback, **options)
