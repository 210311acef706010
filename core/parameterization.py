"""Exact conversions between what a denoiser predicts: eps, x0, v, score or flow.

Given a schedule, the state ``x = alpha x0 + beta y + sigma eps`` and any one prediction
determine the pair ``(x0, eps)`` through a 2x2 linear system, and from that pair every other
prediction follows. Each prediction is a linear row in ``(x0, eps)`` (after removing the
``beta y`` term):

=======  ===================================  ============================================
name     definition                           reference
=======  ===================================  ============================================
eps      the noise                            Ho et al. 2020
x0       the clean data                       Ramesh et al. 2022; Karras et al. 2022
v        ``alpha eps - sigma x0``             Salimans & Ho 2022
score    ``grad log p_t(x) = -eps / sigma``   Song et al. 2021
flow     ``dx/dt = alpha' x0 + beta' y + sigma' eps``   Lipman et al. 2023 (rectified flow: eps - x0)
=======  ===================================  ============================================

``t`` may be one time per sample ``(B,)`` or per element (any prefix of ``x``'s shape, e.g.
``(B, T)`` for one noise level per frame). Where ``sigma = 0`` (a clean element) ``eps`` is
undefined and reported as zero.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from polydiff.broadcast import time_like
from polydiff.schedules import Schedule

Prediction = Literal["eps", "x0", "v", "score", "flow"]
PREDICTIONS: tuple[str, ...] = get_args(Prediction)

__all__ = [
    "Prediction", "PREDICTIONS", "check_prediction", "solve_x0_eps", "to_x0_eps", "from_x0_eps", "convert",
    "safe_div",
]


def check_prediction(name: str) -> str:
    """Return ``name`` if it is a known prediction type, else raise naming the valid ones."""
    if name not in PREDICTIONS:
        raise ValueError(f"unknown prediction type {name!r}; valid: {', '.join(PREDICTIONS)}")
    return name


def _coefficients(schedule: Schedule, t: Tensor, x: Tensor) -> dict[str, Tensor]:
    tt = time_like(t, x)
    return {
        "a": schedule.alpha(tt),
        "s": schedule.sigma(tt),
        "b": schedule.beta(tt),
        "da": schedule.d_alpha(tt),
        "ds": schedule.d_sigma(tt),
        "db": schedule.d_beta(tt),
    }


def _remove_bridge(schedule: Schedule, x: Tensor, c: dict[str, Tensor], y: Tensor | None) -> Tensor:
    if not schedule.has_bridge:
        return x
    if y is None:
        raise ValueError(f"{type(schedule).__name__} is a bridge: pass the conditioning signal y")
    return x - c["b"].to(x.dtype) * y


def safe_div(num: Tensor, den: Tensor | float) -> Tensor:
    """``num / den`` with zero wherever ``den`` is zero."""
    if not isinstance(den, Tensor):
        return num / den if den != 0 else torch.zeros_like(num)
    zero = den == 0
    return torch.where(zero, torch.zeros_like(num), num / torch.where(zero, torch.ones_like(den), den))


def solve_x0_eps(
    prediction: Tensor,
    kind: Prediction,
    x_shifted: Tensor,
    alpha: Tensor,
    sigma: Tensor,
    d_alpha: Tensor | None = None,
    d_sigma: Tensor | None = None,
    d_beta: Tensor | None = None,
    y: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``(x0, eps)`` from a prediction, given the schedule's coefficients already evaluated.

    ``x_shifted`` is ``x - beta y``; the derivatives are needed only for ``flow``, and ``d_beta``
    with ``y`` only for a bridge's flow. Coefficients must broadcast against ``x_shifted``.
    """
    real = x_shifted.real.dtype
    a, s = (v.to(real) if isinstance(v, Tensor) else v for v in (alpha, sigma))
    if kind == "x0":
        return prediction, safe_div(x_shifted - a * prediction, s)
    if kind in ("eps", "score"):
        eps = prediction if kind == "eps" else -s * prediction
        return safe_div(x_shifted - s * eps, a), eps
    if kind == "v":
        # x' = a x0 + s eps, v = a eps - s x0  =>  x0 = (a x' - s v)/(a^2+s^2), eps = (s x' + a v)/(a^2+s^2)
        norm = a * a + s * s
        return (a * x_shifted - s * prediction) / norm, (s * x_shifted + a * prediction) / norm
    if kind != "flow":
        check_prediction(kind)
    # flow: u - beta' y = alpha' x0 + sigma' eps; solve it together with x' = alpha x0 + sigma eps.
    da, ds, db = (v.to(real) if isinstance(v, Tensor) else v for v in (d_alpha, d_sigma, d_beta))
    u = prediction - db * y if y is not None and d_beta is not None else prediction
    det = a * ds - s * da
    return (ds * x_shifted - s * u) / det, (a * u - da * x_shifted) / det


def to_x0_eps(
    prediction: Tensor,
    kind: Prediction,
    x: Tensor,
    t: Tensor | float,
    schedule: Schedule,
    y: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The clean-data and noise estimates implied by a prediction of type ``kind``.

    Shapes:
        prediction, x, y: (B, ...); t: (B,) or a prefix of x's shape; returns two (B, ...).
    """
    check_prediction(kind)
    c = _coefficients(schedule, t, x)
    xp = _remove_bridge(schedule, x, c, y)
    return solve_x0_eps(
        prediction, kind, xp, c["a"], c["s"], c["da"], c["ds"], c["db"], y if schedule.has_bridge else None
    )


def from_x0_eps(
    x0: Tensor,
    eps: Tensor,
    kind: Prediction,
    x: Tensor,
    t: Tensor | float,
    schedule: Schedule,
    y: Tensor | None = None,
) -> Tensor:
    """The prediction of type ``kind`` for a given ``(x0, eps)`` pair; also the training target.

    Shapes:
        x0, eps, x, y: (B, ...); t: (B,) or a prefix of x's shape; returns (B, ...).
    """
    check_prediction(kind)
    if kind == "x0":
        return x0
    if kind == "eps":
        return eps
    c = _coefficients(schedule, t, x)
    dt = x.dtype
    a, s = c["a"].to(dt), c["s"].to(dt)
    if kind == "v":
        return a * eps - s * x0
    if kind == "score":
        return safe_div(-eps, s)
    u = c["da"].to(dt) * x0 + c["ds"].to(dt) * eps
    if schedule.has_bridge:
        if y is None:
            raise ValueError(f"{type(schedule).__name__} is a bridge: pass the conditioning signal y")
        u = u + c["db"].to(dt) * y
    return u


def convert(
    prediction: Tensor,
    source: Prediction,
    target: Prediction,
    x: Tensor,
    t: Tensor | float,
    schedule: Schedule,
    y: Tensor | None = None,
) -> Tensor:
    """Convert a prediction of type ``source`` into the equivalent prediction of type ``target``.

    Shapes:
        prediction, x, y: (B, ...); t: (B,) or a prefix of x's shape; returns (B, ...).
    """
    check_prediction(target)
    if source == target:
        check_prediction(source)
        return prediction
    x0, eps = to_x0_eps(prediction, source, x, t, schedule, y)
    return from_x0_eps(x0, eps, target, x, t, schedule, y)
