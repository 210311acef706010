"""What every sampler shares: the grid's coefficients and one guarded model evaluation.

:class:`GuidedModel` turns a denoiser of any prediction type into the pair ``(x0, eps)`` at a
grid point, applying classifier-free guidance, the known-values mask and the per-step callback,
and refusing non-finite output. It is built afresh inside every sampler call and holds nothing
between calls, so two threads may sample with one denoiser at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, get_args

import torch
from torch import Tensor

from polydiff.denoiser import drop_condition, prediction_of
from polydiff.grids import check_grid
from polydiff.parameterization import safe_div, solve_x0_eps
from polydiff.schedules import Schedule

KnownMode = Literal["replace", "clean"]
KNOWN_MODES: tuple[str, ...] = get_args(KnownMode)

__all__ = ["KnownValues", "StepInfo", "NonFiniteError", "GridCoefficients", "GuidedModel"]


class NonFiniteError(FloatingPointError):
    """A denoiser returned NaN or infinity."""


@dataclass(frozen=True)
class KnownValues:
    """Entries of the state that are known (inpainting, imputation, in-betweening, observations).

    Args:
        values: the known clean values, shaped like the state (entries outside ``mask`` unused).
        mask: bool, True where known; broadcastable to the state (ordinary right-aligned
            broadcasting, e.g. ``(D,)`` for known features, ``(B, T, 1)`` for known frames).
        mode: ``replace`` re-noises the known values to the current noise level after every
            step and writes them into the state (works with any unconditional denoiser;
            RePaint without resampling, Lugmayr et al. 2022). ``clean`` hands the known entries
            to the denoiser clean, at time 0 per element (exact for a denoiser trained with
            observed entries at t = 0, as in CSDI, Tashiro et al. 2021).
    """

    values: Tensor
    mask: Tensor
    mode: KnownMode = "replace"

    def __post_init__(self) -> None:
        if self.mode not in KNOWN_MODES:
            raise ValueError(f"unknown known-values mode {self.mode!r}; valid: {', '.join(KNOWN_MODES)}")
        if self.mask.dtype != torch.bool:
            raise TypeError(f"the known-values mask must be a bool tensor, got {self.mask.dtype}")


@dataclass(frozen=True)
class StepInfo:
    """What a per-step callback sees; it may return a replacement for ``denoised``.

    Attributes:
        index: the step, counting from 0.
        steps: the number of steps.
        t: the current time (shaped like the grid's entries, broadcastable to ``x``).
        t_next: the time being stepped to.
        x: the current state.
        denoised: the model's clean estimate at ``(x, t)``.
    """

    index: int
    steps: int
    t: Tensor
    t_next: Tensor
    x: Tensor
    denoised: Tensor


def _align(grid: Tensor, x: Tensor) -> Tensor:
    """Shape a grid (n+1,) or (n+1, *s) as (n+1, *s, 1, ...) with 1 + x.ndim dimensions."""
    per_point = grid.shape[1:]
    if len(per_point) > x.ndim:
        raise ValueError(f"grid entries of shape {tuple(per_point)} have more dimensions than the state {tuple(x.shape)}")
    for size_g, size_x in zip(per_point, x.shape):
        if size_g not in (1, size_x):
            raise ValueError(
                f"grid entries of shape {tuple(per_point)} do not broadcast to the state {tuple(x.shape)}"
            )
    return grid.reshape(grid.shape[0], *per_point, *([1] * (x.ndim - len(per_point))))


class GridCoefficients:
    """The schedule evaluated once on the whole grid (float64), aligned for broadcasting.

    Attributes (each (n+1, ...) with 1 + x.ndim dimensions): ``t``, ``alpha``, ``sigma``,
    ``beta``, and ``d_alpha``, ``d_sigma``, ``d_beta``, ``f`` and ``g2`` when asked for.
    """

    def __init__(self, schedule: Schedule, grid: Tensor, x: Tensor, *, sde: bool = False):
        grid = check_grid(grid).to(x.device)
        self.schedule = schedule
        self.raw = grid
        self.t = _align(grid, x)
        self.steps = grid.shape[0] - 1
        t = self.t
        self.alpha, self.sigma, self.beta = schedule.alpha(t), schedule.sigma(t), schedule.beta(t)
        self.d_alpha, self.d_sigma, self.d_beta = schedule.d_alpha(t), schedule.d_sigma(t), schedule.d_beta(t)
        self.final = bool((grid[-1] == 0).all())
        # Per-element grids may hold some elements still (e.g. frames already clean); their
        # update must be the identity whatever the coefficients say (0/0 where sigma = 0).
        self.moving = self.t[1:] < self.t[:-1]
        self.all_moving = bool(self.moving.all())
        # Per-step values in the form the state's arithmetic wants: Python floats for a shared
        # grid (no tensor op per coefficient per step), real tensors of the state's precision
        # for a per-element grid.
        self.shared = grid.ndim == 1
        self._real = x.real.dtype
        self.xt = self.cast(self.t)
        self.xa, self.xs, self.xb = self.cast(self.alpha), self.cast(self.sigma), self.cast(self.beta)
        self.xda, self.xds, self.xdb = self.cast(self.d_alpha), self.cast(self.d_sigma), self.cast(self.d_beta)
        batch = x.shape[0]
        self.t_in = [torch.full((batch,), v, dtype=self._real, device=x.device) for v in self.xt] if self.shared else None
        if sde:
            self.f = schedule.drift_coefficient(t)
            self.g2 = schedule.diffusion_squared(t)

    def cast(self, values: Tensor) -> list[float] | Tensor:
        """Per-grid-point coefficients (float64, aligned) made ready to multiply the state."""
        return values.flatten().tolist() if self.shared else values.to(self._real)


    def hold(self, i: int, x_next: Tensor, x: Tensor) -> Tensor:
        """``x_next`` where the grid moves at step ``i``, ``x`` where it stands still."""
        return x_next if self.all_moving else torch.where(self.moving[i], x_next, x)


def _compact_time(t: Tensor, x: Tensor) -> Tensor:
    """A time tensor for the denoiser: (B,) per sample, or the shortest per-element prefix shape."""
    keep = t.ndim
    while keep > 1 and t.shape[keep - 1] == 1:
        keep -= 1
    t = t.reshape(t.shape[:keep])
    return t.expand(*x.shape[:keep]).to(x.real.dtype)  # real times for complex states too


class GuidedModel:
    """One sampler call's view of the denoiser.

    Args:
        denoiser: the network, called ``denoiser(x, t, cond)``.
        schedule: the forward process.
        x: the start state (shape, dtype and device are read from it).
        cond: the condition passed to the denoiser.
        y: the signal a bridge schedule drifts toward.
        guidance: classifier-free guidance scale ``w``: ``D_u + w (D_c - D_u)``; 1 is no guidance
            (one call per evaluation), 0 is unconditional.
        known: known entries of the state.
        callback: called once per step with a :class:`StepInfo`; may return a new ``denoised``.
    """

    def __init__(
        self,
        denoiser: Callable[..., Tensor],
        schedule: Schedule,
        x: Tensor,
        *,
        cond: Any = None,
        y: Tensor | None = None,
        guidance: float = 1.0,
        known: KnownValues | None = None,
        callback: Callable[[StepInfo], Tensor | None] | None = None,
    ):
        self.denoiser = denoiser
        self.kind = prediction_of(denoiser)
        self.schedule = schedule
        self.cond = cond
        self.y = y
        self.guidance = float(guidance)
        self.callback = callback
        self.shape = x.shape
        if schedule.has_bridge:
            if y is None:
                raise ValueError(f"{type(schedule).__name__} is a bridge: pass the signal y it drifts toward")
            if y.shape != x.shape:
                raise ValueError(f"y has shape {tuple(y.shape)} but the state has {tuple(x.shape)}")
        self.uncond = None
        if self.guidance != 1.0:
            if cond is None:
                raise ValueError("classifier-free guidance needs a condition: pass cond")
            everyone = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
            drop = getattr(denoiser, "drop_cond", None)
            self.uncond = drop(cond, everyone) if drop is not None else drop_condition(cond, everyone)
        self.known = known
        self.known_mask = None
        if known is not None:
            if known.values.shape != x.shape:
                raise ValueError(
                    f"known values have shape {tuple(known.values.shape)} but the state has {tuple(x.shape)}"
                )
            try:
                self.known_mask = torch.broadcast_to(known.mask.to(x.device), x.shape)
            except RuntimeError:
                raise ValueError(
                    f"the known-values mask of shape {tuple(known.mask.shape)} does not broadcast to the "
                    f"state {tuple(x.shape)}"
                ) from None
            self.known_values = known.values.to(device=x.device, dtype=x.dtype)

    def _call(self, x: Tensor, t: Tensor, cond: Any, index: int) -> Tensor:
        out = self.denoiser(x, t, cond)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"the denoiser returned {got} for a state of shape {tuple(x.shape)}")
        # One reduction is enough to notice NaN or infinity (they propagate through a sum); an
        # overflowing sum of finite values is told apart by the full check.
        if not torch.isfinite(out.sum()) and not torch.isfinite(out).all():
            raise NonFiniteError(
                f"the denoiser returned NaN or infinity at step {index} (t={float(t.flatten()[0]):.4g}); "
                "check its inputs, weights and the schedule's range"
            )
        return out

    def x0_eps(self, x: Tensor, c: GridCoefficients, i: int, *, step_info: bool = True,
               t: Tensor | None = None, alpha=None, sigma=None, beta=None, d_alpha=None, d_sigma=None,
               d_beta=None) -> tuple[Tensor, Tensor]:
        """The clean and noise estimates at grid point ``i`` (or at an explicit time ``t``).

        When ``t`` is given, the schedule's coefficients at ``t`` must be given too (aligned
        like the grid's entries). Returns float tensors shaped like ``x``.
        """
        mask = self.known_mask if self.known is not None and self.known.mode == "clean" else None
        t_in = None
        if t is None:
            if c.shared and mask is None:
                t_in = c.t_in[i]
                alpha, sigma, beta = c.xa[i], c.xs[i], c.xb[i]
                d_alpha, d_sigma, d_beta = c.xda[i], c.xds[i], c.xdb[i]
            else:
                t, alpha, sigma, beta = c.t[i], c.alpha[i], c.sigma[i], c.beta[i]
                d_alpha, d_sigma, d_beta = c.d_alpha[i], c.d_sigma[i], c.d_beta[i]
        x_in = x
        if mask is not None:
            x_in = torch.where(mask, self.known_values, x)
            zero = torch.zeros((), dtype=t.dtype, device=t.device)
            t, alpha, sigma, beta = (torch.where(mask, v, w) for v, w in
                                     ((zero, t), (zero + 1, alpha), (zero, sigma), (zero, beta)))
        if t_in is None:
            t_in = _compact_time(t, x)
            real = x.real.dtype
            alpha, sigma, beta = alpha.to(real), sigma.to(real), beta.to(real)
        out = self._call(x_in, t_in, self.cond, i)
        if self.uncond is not None:
            out_u = self._call(x_in, t_in, self.uncond, i)
            out = out_u + self.guidance * (out - out_u)
        a, s = alpha, sigma
        xp = x_in - beta * self.y if self.schedule.has_bridge else x_in
        x0, eps = solve_x0_eps(out, self.kind, xp, a, s, d_alpha, d_sigma, d_beta,
                               self.y if self.schedule.has_bridge else None)
        if mask is not None:
            x0 = torch.where(mask, self.known_values, x0)
        if self.callback is not None and step_info:
            new = self.callback(StepInfo(i, c.steps, c.t[i], c.t[i + 1], x, x0))
            if new is not None:
                x0 = new
                eps = safe_div(xp - a * x0, s)
        return x0, eps

    def impose(self, x: Tensor, c: GridCoefficients, i: int, generator: torch.Generator | None) -> Tensor:
        """Write the known entries into a state at grid point ``i`` (re-noised unless t = 0)."""
        if self.known is None:
            return x
        if self.known.mode == "clean":
            return torch.where(self.known_mask, self.known_values, x) if i == c.steps else x
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        value = c.xa[i] * self.known_values + c.xs[i] * noise
        if self.schedule.has_bridge:
            value = value + c.xb[i] * self.y
        return torch.where(self.known_mask, value, x)

    def shifted(self, x: Tensor, beta: Tensor | float) -> Tensor:
        """``x - beta y`` for bridges, ``x`` otherwise."""
        if not self.schedule.has_bridge:
            return x
        return x - (beta.to(x.real.dtype) if isinstance(beta, Tensor) else beta) * self.y

    def unshifted(self, xp: Tensor, beta: Tensor | float) -> Tensor:
        if not self.schedule.has_bridge:
            return xp
        return xp + (beta.to(xp.real.dtype) if isinstance(beta, Tensor) else beta) * self.y
