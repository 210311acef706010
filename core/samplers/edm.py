"""Euler and Heun samplers of Karras et al. (2022), with optional stochastic churn."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from polydiff.samplers.guided import GridCoefficients, GuidedModel, KnownValues, StepInfo
from polydiff.schedules import Schedule

__all__ = ["sample_euler", "sample_heun"]


def _sample_edm(
    denoiser, schedule, x, grid, *, second_order, churn, s_tmin, s_tmax, s_noise, cond, y, guidance,
    known, generator, callback,
) -> Tensor:
    model = GuidedModel(denoiser, schedule, x, cond=cond, y=y, guidance=guidance, known=known, callback=callback)
    c = GridCoefficients(schedule, grid, x)
    dt = x.dtype
    # EDM's ODE in variance-exploding coordinates: x~ = x'/alpha, sigma~ = sigma/alpha.
    sig = c.sigma / c.alpha
    gamma_max = min(churn / c.steps, math.sqrt(2) - 1) if churn > 0 else 0.0
    x = model.impose(x, c, 0, generator)
    for i in range(c.steps):
        x_start = x
        a_cur, s_cur, b_cur = c.alpha[i], c.sigma[i], c.beta[i]
        coeffs = {}
        if gamma_max > 0:
            # Algorithm 2: raise the noise level to sigma_hat = (1 + gamma) sigma~ and add matching noise.
            inside = (sig[i] >= s_tmin) & (sig[i] <= s_tmax)
            sig_hat = sig[i] * (1 + gamma_max * inside.double())
            t_hat = schedule.t_from_sigma_ve(sig_hat).clamp(max=1.0)
            a_hat, s_hat, b_hat = schedule.alpha(t_hat), schedule.sigma(t_hat), schedule.beta(t_hat)
            z = torch.randn(x.shape, generator=generator, dtype=dt, device=x.device)
            xp = model.shifted(x, b_cur)
            xp = (a_hat / a_cur).to(dt) * xp + (a_hat * (sig_hat**2 - sig[i] ** 2).clamp_min(0).sqrt() * s_noise).to(dt) * z
            x = model.unshifted(xp, b_hat)
            a_cur, s_cur, b_cur = a_hat, s_hat, b_hat
            coeffs = dict(t=t_hat, alpha=a_hat, sigma=s_hat, beta=b_hat, d_alpha=schedule.d_alpha(t_hat),
                          d_sigma=schedule.d_sigma(t_hat), d_beta=schedule.d_beta(t_hat))
        x0, eps = model.x0_eps(x, c, i, **coeffs)
        a_n, s_n = c.alpha[i + 1], c.sigma[i + 1]
        x_next = a_n.to(dt) * x0 + s_n.to(dt) * eps  # the Euler step, written in x'
        final = c.t[i + 1] == 0
        if second_order and not bool(final.all()):
            x_mid = model.unshifted(x_next, c.beta[i + 1])
            _, eps_next = model.x0_eps(x_mid, c, i + 1, step_info=False)
            # x~_next = x~ + (sigma~_next - sigma~)(d + d')/2 with d = eps, d' = eps_next.
            xp = model.shifted(x, b_cur)
            sig_cur = s_cur / a_cur
            heun = (a_n / a_cur).to(dt) * xp + (a_n * (sig[i + 1] - sig_cur) / 2).to(dt) * (eps + eps_next)
            usable = ~final & (a_cur > 0)  # alpha = 0 (pure noise) has no finite sigma~: keep Euler there
            x_next = torch.where(usable, heun, x_next)
        x = model.impose(c.hold(i, model.unshifted(x_next, c.beta[i + 1]), x_start), c, i + 1, generator)
    return x


def sample_euler(
    denoiser: Callable[..., Tensor],
    schedule: Schedule,
    x: Tensor,
    grid: Tensor,
    *,
    churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    cond: Any = None,
    y: Tensor | None = None,
    guidance: float = 1.0,
    known: KnownValues | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[StepInfo], Tensor | None] | None = None,
) -> Tensor:
    """Euler steps of the probability-flow ODE in EDM's coordinates (Karras et al. 2022, Alg. 2).

    With ``churn = 0`` this is deterministic (and equal to DDIM with eta = 0); ``churn > 0``
    adds EDM's stochastic noise raise for noise levels ``sigma/alpha`` in ``[s_tmin, s_tmax]``.

    Shapes:
        x: (B, ...) start state at ``grid[0]``; grid: (n+1,) or per element (n+1, *s);
        returns (B, ...).
    """
    return _sample_edm(denoiser, schedule, x, grid, second_order=False, churn=churn, s_tmin=s_tmin,
                       s_tmax=s_tmax, s_noise=s_noise, cond=cond, y=y, guidance=guidance, known=known,
                       generator=generator, callback=callback)


def sample_heun(
    denoiser: Callable[..., Tensor],
    schedule: Schedule,
    x: Tensor,
    grid: Tensor,
    *,
    churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    cond: Any = None,
    y: Tensor | None = None,
    guidance: float = 1.0,
    known: KnownValues | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[StepInfo], Tensor | None] | None = None,
) -> Tensor:
    """Heun's second-order method (Karras et al. 2022, Algorithms 1 and 2).

    Two denoiser evaluations per step except the last step to t = 0, which is an Euler step;
    ``n`` steps cost ``2n - 1`` evaluations.

    Shapes:
        x: (B, ...) start state at ``grid[0]``; grid: (n+1,) or per element (n+1, *s);
        returns (B, ...).
    """
    return _sample_edm(denoiser, schedule, x, grid, second_order=True, churn=churn, s_tmin=s_tmin,
                       s_tmax=s_tmax, s_noise=s_noise, cond=cond, y=y, guidance=guidance, known=known,
                       generator=generator, callback=callback)
