"""DDIM and ancestral DDPM sampling."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from polydiff.samplers.guided import GridCoefficients, GuidedModel, KnownValues, StepInfo
from polydiff.schedules import Schedule

__all__ = ["sample_ddim", "sample_ddpm"]


def sample_ddim(
    denoiser: Callable[..., Tensor],
    schedule: Schedule,
    x: Tensor,
    grid: Tensor,
    *,
    eta: float = 0.0,
    cond: Any = None,
    y: Tensor | None = None,
    guidance: float = 1.0,
    known: KnownValues | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[StepInfo], Tensor | None] | None = None,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12) on any schedule; ``eta = 1`` is ancestral DDPM.

    ``x_next = alpha' x0 + sqrt(sigma'^2 - c^2) eps + c z`` with
    ``c = eta sigma' / sigma sqrt(sigma^2 - (alpha/alpha')^2 sigma'^2)``, the posterior standard
    deviation of the forward process scaled by ``eta``. With ``eta = 0`` this is the first-order
    solver of the probability-flow ODE in the coordinates ``x / alpha``, ``sigma / alpha``.

    Shapes:
        x: (B, ...) start state at ``grid[0]``; grid: (n+1,) or per element (n+1, *s);
        returns (B, ...).
    """
    if eta < 0:
        raise ValueError(f"eta must be non-negative, got {eta}")
    model = GuidedModel(denoiser, schedule, x, cond=cond, y=y, guidance=guidance, known=known, callback=callback)
    c = GridCoefficients(schedule, grid, x)
    a, s = c.alpha, c.sigma
    # Posterior variance of q(x_next | x, x0): sigma_next^2 (1 - SNR(t)/SNR(t_next)), written
    # without dividing by alpha so that it stays finite where alpha = 0 (pure noise).
    var = (s[1:] ** 2 / s[:-1] ** 2) * (s[:-1] ** 2 - (a[:-1] * s[1:] / a[1:].clamp_min(1e-300)) ** 2).clamp_min(0)
    var = torch.where(a[:-1] == 0, s[1:] ** 2, var)
    noise_std = eta * var.clamp_min(0).sqrt()
    eps_coef = c.cast((s[1:] ** 2 - noise_std**2).clamp_min(0).sqrt())
    noise_std, a_next = c.cast(noise_std), c.xa[1:]
    dt = x.dtype
    x = model.impose(x, c, 0, generator)
    for i in range(c.steps):
        x0, eps = model.x0_eps(x, c, i)
        xp = a_next[i] * x0 + eps_coef[i] * eps
        if eta > 0:
            z = torch.randn(x.shape, generator=generator, dtype=dt, device=x.device)
            xp = xp + noise_std[i] * z
        x = model.impose(c.hold(i, model.unshifted(xp, c.xb[i + 1]), x), c, i + 1, generator)
    return x


def sample_ddpm(
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
    """Ancestral sampling (Ho et al. 2020): draw each step from the forward process's posterior.

    Identical to :func:`sample_ddim` with ``eta = 1``; on the uniform grid of a 1000-step
    :class:`~polydiff.schedules.VPLinear` schedule it is exactly DDPM's Algorithm 2.
    """
    return sample_ddim(denoiser, schedule, x, grid, eta=1.0, cond=cond, y=y, guidance=guidance,
                       known=known, generator=generator, callback=callback)
