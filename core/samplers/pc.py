"""Predictor–corrector sampling: reverse-diffusion predictor and annealed Langevin corrector."""

from __future__ import annotations

from typing import Any, Callable, Literal, get_args

import torch
from torch import Tensor

from polydiff.samplers.guided import GridCoefficients, GuidedModel, KnownValues, StepInfo
from polydiff.schedules import Schedule

__all__ = ["sample_pc", "Predictor", "PREDICTORS"]


Predictor = Literal["ancestral", "euler_maruyama"]
PREDICTORS: tuple[str, ...] = get_args(Predictor)


def sample_pc(
    denoiser: Callable[..., Tensor],
    schedule: Schedule,
    x: Tensor,
    grid: Tensor,
    *,
    snr: float = 0.5,
    corrector_steps: int = 1,
    predictor: Predictor = "ancestral",
    cond: Any = None,
    y: Tensor | None = None,
    guidance: float = 1.0,
    known: KnownValues | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[StepInfo], Tensor | None] | None = None,
) -> Tensor:
    """Predictor–corrector sampling of the reverse SDE (Song et al. 2021, Algorithm 1).

    At every time the corrector first runs ``corrector_steps`` annealed Langevin steps with step
    size ``2 (snr sigma)^2`` (the SGMSE+ setting: snr 0.5, one step), then the predictor steps to
    the next time. ``predictor="euler_maruyama"`` is the reverse-diffusion step of SGMSE+,
    ``x - [f - g^2 score] dt + g sqrt(dt) z``; ``"ancestral"`` draws from the forward process's
    posterior around the same Tweedie mean (Song et al. note ancestral sampling is a
    reverse-diffusion predictor), which stays accurate on stiff schedules (VP-cosine near
    t = 1) and with large steps (Karras grids at high noise), where Euler–Maruyama is not.
    A final step to t = 0 returns the clean estimate.

    Shapes:
        x: (B, ...) start state at ``grid[0]``; grid: (n+1,) or per element (n+1, *s);
        returns (B, ...).
    """
    if snr <= 0 or corrector_steps < 0:
        raise ValueError(f"need snr > 0 and corrector_steps >= 0, got {snr}, {corrector_steps}")
    if predictor not in PREDICTORS:
        raise ValueError(f"unknown predictor {predictor!r}; valid: {', '.join(PREDICTORS)}")
    model = GuidedModel(denoiser, schedule, x, cond=cond, y=y, guidance=guidance, known=known, callback=callback)
    c = GridCoefficients(schedule, grid, x, sde=predictor == "euler_maruyama")
    a, s = c.alpha, c.sigma
    if predictor == "ancestral":
        # Posterior of q(x_next | x, x0): mean alpha' x0 + (alpha sigma'^2)/(alpha' sigma) eps,
        # variance sigma'^2 (1 - (alpha sigma')^2 / (alpha' sigma)^2).
        ratio = (a[:-1] * s[1:]) / (a[1:] * s[:-1])
        eps_coef = ratio * s[1:]
        noise_std = (s[1:] * (1 - ratio**2).clamp_min(0).sqrt())
    dt = x.dtype
    x = model.impose(x, c, 0, generator)
    for i in range(c.steps):
        x_start = x
        s_i = c.sigma[i]
        for _ in range(corrector_steps):
            _, eps = model.x0_eps(x, c, i, step_info=False)
            z = torch.randn(x.shape, generator=generator, dtype=dt, device=x.device)
            # step * score = 2 (snr s)^2 (-eps / s); noise sqrt(2 step) = 2 snr s.
            x = x - (2 * snr**2 * s_i).to(dt) * eps + (2 * snr * s_i).to(dt) * z
            x = model.impose(x, c, i, generator)
        x0, eps = model.x0_eps(x, c, i)
        z = torch.randn(x.shape, generator=generator, dtype=dt, device=x.device)
        if predictor == "ancestral":
            xp = a[i + 1].to(dt) * x0 + eps_coef[i].to(dt) * eps + noise_std[i].to(dt) * z
            x_next = model.unshifted(xp, c.beta[i + 1])
        else:
            delta = c.t[i] - c.t[i + 1]
            drift = c.f[i].to(dt) * model.shifted(x, c.beta[i])
            if schedule.has_bridge:
                drift = drift + c.d_beta[i].to(dt) * y
            # score = -eps / sigma, so drift - g^2 score = drift + g^2 eps / sigma.
            x_mean = x - delta.to(dt) * (drift + (c.g2[i] / s_i).to(dt) * eps)
            x_next = x_mean + (c.g2[i] * delta).clamp_min(0).sqrt().to(dt) * z
        final = c.t[i + 1] == 0
        if final.any():
            x_next = torch.where(final, model.unshifted(x0, c.beta[i + 1]), x_next)
        x = model.impose(c.hold(i, x_next, x_start), c, i + 1, generator)
    return x
