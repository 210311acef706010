"""DPM-Solver++(2M): the multistep second-order data-prediction solver."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from polydiff.samplers.guided import GridCoefficients, GuidedModel, KnownValues, StepInfo
from polydiff.schedules import Schedule

__all__ = ["sample_dpmpp_2m"]


def sample_dpmpp_2m(
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
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2).

    In ``lambda = log(alpha/sigma)``, with ``h = lambda_next - lambda``:
    ``x_next = (sigma_next/sigma) x - alpha_next (e^{-h} - 1) D``, where ``D`` is the clean
    estimate for the first step and ``x0 + h/(2 h_prev) (x0 - x0_prev)`` afterwards; the final
    step to t = 0 returns the clean estimate (first order, as ``lower_order_final`` does).

    Shapes:
        x: (B, ...) start state at ``grid[0]``; grid: (n+1,) or per element (n+1, *s);
        returns (B, ...).
    """
    model = GuidedModel(denoiser, schedule, x, cond=cond, y=y, guidance=guidance, known=known, callback=callback)
    c = GridCoefficients(schedule, grid, x)
    a, s = c.alpha, c.sigma
    lam = torch.log(a) - torch.log(s)  # -inf at pure noise, +inf at t = 0
    h = lam[1:] - lam[:-1]
    ratio = s[1:] / s[:-1]
    data_coef = a[1:] * -torch.expm1(lam[:-1] - lam[1:])  # -alpha_next (e^{-h} - 1)
    k = torch.zeros_like(h)
    k[1:] = h[1:] / (2 * h[:-1])
    k = torch.where(torch.isfinite(k) & (s[1:] > 0), k, torch.zeros_like(k))
    ratio, data_coef, k = c.cast(ratio), c.cast(data_coef), c.cast(k)
    x = model.impose(x, c, 0, generator)
    x0_prev = None
    for i in range(c.steps):
        x0, _ = model.x0_eps(x, c, i)
        d = x0 if x0_prev is None else x0 + k[i] * (x0 - x0_prev)
        xp = ratio[i] * model.shifted(x, c.xb[i]) + data_coef[i] * d
        x = model.impose(c.hold(i, model.unshifted(xp, c.xb[i + 1]), x), c, i + 1, generator)
        x0_prev = x0
    return x
