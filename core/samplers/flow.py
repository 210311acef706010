"""Euler integration of the flow (velocity) field."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from polydiff.samplers.guided import GridCoefficients, GuidedModel, KnownValues, StepInfo
from polydiff.schedules import Schedule

__all__ = ["sample_flow_euler"]


def sample_flow_euler(
    denoiser: Callable[..., Tensor],
    schedule: Schedule,
    x: Tensor,
    grid: Tensor,
    *,
    cond: Any = None,
    y: Tensor | None = None,
    guidance: float = 1.0,
    known: KnownValues | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[StepInfo], Tensor | None] | None = None,
) -> Tensor:
    """Euler steps ``x_next = x + (t_next - t) u(x, t)`` on the schedule's own time axis.

    ``u = alpha' x0 + beta' y + sigma' eps`` is the conditional flow of the interpolation
    (flow matching, Lipman et al. 2023; rectified flow, Liu et al. 2023). A final step to t = 0
    returns the clean estimate (for rectified flow the two coincide).

    Shapes:
        x: (B, ...) start state at ``grid[0]``; grid: (n+1,) or per element (n+1, *s);
        returns (B, ...).
    """
    model = GuidedModel(denoiser, schedule, x, cond=cond, y=y, guidance=guidance, known=known, callback=callback)
    c = GridCoefficients(schedule, grid, x)
    dt = x.dtype
    x = model.impose(x, c, 0, generator)
    for i in range(c.steps):
        x0, eps = model.x0_eps(x, c, i)
        u = c.d_alpha[i].to(dt) * x0 + c.d_sigma[i].to(dt) * eps
        if schedule.has_bridge:
            u = u + c.d_beta[i].to(dt) * y
        step = (c.t[i + 1] - c.t[i]).to(dt)
        x_next = x + step * u
        final = c.t[i + 1] == 0
        if final.any():
            x_next = torch.where(final, model.unshifted(x0, c.beta[i + 1]), x_next)
        x = model.impose(c.hold(i, x_next, x), c, i + 1, generator)
    return x
