"""Ancestral sampling of categorical diffusion over posteriors (D3PM / DiGress), and its loss.

The denoiser predicts clean-class probabilities ``p̂(x0 | x_t)``; each step draws
``x_s ~ Σ_{x0} p̂(x0) q(x_s | x_t, x0)`` independently per element (Austin et al. 2021, D3PM, §3;
Vignac et al. 2023, DiGress, §3). With the exact denoiser a single variable is sampled exactly
at any number of steps; dependencies between variables are recovered as the steps get finer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from polydiff.discrete.schedules import CategoricalSchedule, draw_classes
from polydiff.grids import check_grid

__all__ = ["CategoricalStep", "sample_categorical", "categorical_loss"]

State = Tensor | tuple[Tensor, ...]


@dataclass(frozen=True)
class CategoricalStep:
    """What :func:`sample_categorical` shows its callback at each step.

    Attributes:
        index: the step number, from 0.
        t: the current time.
        t_next: the time this step moves to.
        x: the state at ``t`` (a tuple when the sampler was given one).
        probs: the predicted clean-class probabilities for the condition given (guidance acts
            later, on the reverse step), structured like ``x``, each of shape ``(*x.shape, K)``.
    """

    index: int
    t: float
    t_next: float
    x: State
    probs: State


@torch.no_grad()
def sample_categorical(
    denoiser: nn.Module,
    schedule: CategoricalSchedule | tuple[CategoricalSchedule, ...],
    x: State,
    grid: Tensor,
    *,
    cond: Any = None,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
    callback: Callable[[CategoricalStep], State | None] | None = None,
    constrain: Callable[[State], State | None] | None = None,
    limits: Callable[[State, State], Any] | None = None,
) -> State:
    """Ancestral sampling over categorical posteriors (D3PM's x0-parameterised reverse process).

    Args:
        denoiser: called as ``denoiser(x_t, t, cond)`` with ``t`` a ``(B,)`` tensor of the default
            float dtype; returns clean-class probabilities (a tuple of them for a tuple state).
            Put it in eval mode first; it is not modified here.
        schedule: the transitions of ``x``, or a tuple of them, one per component of ``x``.
        x: the start state, usually ``schedule.prior_sample(...)``; a tensor of classes or a tuple
            of them (e.g. node classes and edge classes). Never modified.
        grid: decreasing times, normally from 1 to 0. At the last step to ``t = 0`` the posterior
            is the prediction itself (conditioned on ``x_t``), so it is sampled, not arg-maxed.
        cond: the condition passed to the denoiser.
        guidance: classifier-free guidance weight ``w``; 1 is plain conditional sampling. For
            ``w != 1`` (and a condition) the denoiser is also run unconditionally, on
            ``denoiser.drop_cond(cond, all_true_mask)`` if it has that method and on ``None``
            otherwise, and the two reverse steps are combined as
            ``log p(x_s | x_t) = log p_u + w (log p_c - log p_u)``, renormalised, as Graph DiT
            (Liu et al. 2024) does; in the small-step limit these are the guided transition
            rates of Nisonoff et al. (2024), and at the final step the guided prediction itself.
        generator: the only source of randomness.
        callback: called with a :class:`CategoricalStep` at each step; may return replacement
            conditional probabilities (same structure and shapes) or None.
        constrain: called with the new state after each draw; may return a replacement state
            (e.g. edge classes made symmetric) or None.
        limits: for forward processes whose limit depends on the clean data (per-element limits,
            see :meth:`CategoricalSchedule.element_limit`): called each step with the state and
            the predicted clean-class probabilities (after the callback), it returns the
            per-element limits to use in that step's posteriors, structured like ``x`` (``None``
            for a component keeps its schedule's ``m``). Both guidance branches use them.

    Returns:
        The state at the last time of ``grid``, structured like ``x``.

    Raises:
        ValueError: on mismatched states and schedules, a bad grid, or probabilities of the wrong
            shape, negative, non-finite or summing to zero (naming the step and time).

    Shapes:
        x: ``(B, ...)`` long, or a tuple of such with the same ``B``; each prediction:
        ``(*x.shape, K)`` with ``K`` its schedule's ``num_classes``; grid: ``(n + 1,)``.
    """
    is_tuple = isinstance(x, tuple)
    xs = x if is_tuple else (x,)
    schedules = schedule if isinstance(schedule, tuple) else (schedule,)
    if is_tuple != isinstance(schedule, tuple) or len(xs) != len(schedules):
        raise ValueError(
            "x and schedule must both be single or tuples of the same length; got "
            f"{len(xs) if is_tuple else 'a tensor'} state(s) and "
            f"{len(schedules) if isinstance(schedule, tuple) else 'one schedule'}"
        )
    times = check_grid(grid)
    if times.ndim != 1:
        raise ValueError(f"the grid must be 1-D (one time per step), got shape {tuple(times.shape)}")
    _check_state(xs, xs, schedules, "the start state")
    batch, device = xs[0].shape[0], xs[0].device
    pack = (lambda parts: tuple(parts)) if is_tuple else (lambda parts: parts[0])
    times = times.tolist()

    def checked(probs: Any, source: str) -> tuple[Tensor, ...]:  # for the current xs, index and t
        return _check_probs(probs, xs, schedules, is_tuple, f"{source} at step {index} (t={t:.4g})")

    def posteriors(probs: tuple[Tensor, ...], ms: tuple[Any, ...]) -> tuple[Tensor, ...]:  # p(x_s | x_t)
        return tuple(
            sch.posterior_probs(xc, pc, t, t_next, limit=m) for sch, xc, pc, m in zip(schedules, xs, probs, ms)
        )

    guided = guidance != 1.0 and cond is not None
    for index, (t, t_next) in enumerate(zip(times[:-1], times[1:])):
        t_batch = torch.full((batch,), t, dtype=torch.get_default_dtype(), device=device)
        probs = checked(denoiser(pack(xs), t_batch, cond), "denoiser output")
        if guided:
            drop = getattr(denoiser, "drop_cond", None)
            everyone = torch.ones(batch, dtype=torch.bool, device=device)
            uncond = drop(cond, everyone) if callable(drop) else None
            probs_u = checked(denoiser(pack(xs), t_batch, uncond), "unconditional denoiser output")
        if callback is not None:
            replaced = callback(CategoricalStep(index, t, t_next, pack(xs), pack(probs)))
            if replaced is not None:
                probs = checked(replaced, "probabilities from the callback")
        ms: tuple[Any, ...] = (None,) * len(xs)
        if limits is not None:
            given = limits(pack(xs), pack(probs))
            if given is not None:
                ms = tuple(given) if is_tuple else (given,)
                if len(ms) != len(xs):
                    raise ValueError(f"limits at step {index}: expected {len(xs)} components, got {len(ms)}")
        steps = posteriors(probs, ms)
        if guided:
            steps = tuple(_guide(pc, pu, guidance) for pc, pu in zip(steps, posteriors(probs_u, ms)))
        xs = tuple(draw_classes(p, generator) for p in steps)
        if constrain is not None:
            replaced = constrain(pack(xs))
            if replaced is not None:
                replaced = tuple(replaced) if is_tuple else (replaced,)
                _check_state(replaced, xs, schedules, f"the state from constrain at step {index} (t={t:.4g})")
                xs = replaced
    return pack(xs)


def _guide(probs_c: Tensor, probs_u: Tensor, weight: float) -> Tensor:
    """Classifier-free guidance of two categorical distributions in log space, renormalised."""
    # a floor instead of log(0) = -inf, whose differences would be NaN; a class that only the
    # conditional branch allows is then strongly favoured for w > 1, as the formula implies
    floor = torch.finfo(torch.float64).tiny
    log_c = probs_c.to(torch.float64).clamp_min(floor).log()
    log_u = probs_u.to(torch.float64).clamp_min(floor).log()
    return torch.softmax(log_u + weight * (log_c - log_u), dim=-1).to(probs_c.dtype)


def _check_probs(
    probs: Any, xs: tuple[Tensor, ...], schedules: tuple[CategoricalSchedule, ...], is_tuple: bool, what: str
) -> tuple[Tensor, ...]:
    parts = tuple(probs) if is_tuple and isinstance(probs, (tuple, list)) else (probs,)
    if is_tuple != isinstance(probs, (tuple, list)) or len(parts) != len(xs):
        expected = f"a tuple of {len(xs)} tensors" if is_tuple else "a tensor"
        raise ValueError(f"{what}: expected {expected} of class probabilities, got {type(probs).__name__}")
    for i, (p, xc, sch) in enumerate(zip(parts, xs, schedules)):
        name = f"{what}, state component {i}" if is_tuple else what
        expected = (*xc.shape, sch.num_classes)
        if not isinstance(p, Tensor) or not p.is_floating_point():
            raise ValueError(f"{name}: expected a floating tensor of probabilities, got {type(p).__name__}")
        if tuple(p.shape) != expected:
            raise ValueError(f"{name}: expected probabilities of shape {expected}, got {tuple(p.shape)}")
        if not torch.isfinite(p).all():
            raise ValueError(f"{name}: probabilities contain non-finite values (NaN or inf)")
        if (p < 0).any():
            raise ValueError(f"{name}: probabilities contain negative values (min {float(p.min()):.4g})")
        if (p.sum(-1) <= 0).any():
            raise ValueError(f"{name}: some elements have probabilities that sum to zero")
    return parts


def _check_state(
    parts: tuple[Any, ...], like: tuple[Tensor, ...], schedules: tuple[CategoricalSchedule, ...], what: str
) -> None:
    if len(parts) != len(like):
        raise ValueError(f"{what}: expected {len(like)} state components, got {len(parts)}")
    batch = like[0].shape[0] if isinstance(like[0], Tensor) and like[0].ndim else None
    for i, (xc, ref, sch) in enumerate(zip(parts, like, schedules)):
        name = f"{what}, component {i}" if len(like) > 1 else what
        if not isinstance(xc, Tensor) or xc.ndim == 0:
            raise ValueError(f"{name}: expected a tensor of classes with a batch dimension")
        if xc.shape[0] != batch:
            raise ValueError(f"{name}: expected batch size {batch}, got shape {tuple(xc.shape)}")
        if xc.shape != ref.shape:
            raise ValueError(f"{name}: expected shape {tuple(ref.shape)}, got {tuple(xc.shape)}")
        sch.check_classes(xc, name)


def categorical_loss(log_probs: Tensor, x0: Tensor, mask: Tensor | None = None) -> Tensor:
    """Cross-entropy of the clean classes under the prediction (DiGress's training loss).

    Args:
        log_probs: predicted log-probabilities, or unnormalised logits: ``log_softmax`` is applied,
            which leaves log-probabilities unchanged.
        x0: the clean classes.
        mask: optional bool (or float weights) broadcastable to ``x0``; elements where it is
            False/0 do not count (e.g. padding nodes).

    Returns:
        The mean over the counted elements (a weighted mean for float weights); 0 if none count.

    Shapes:
        log_probs: ``(*S, K)``; x0: ``S`` long; mask: broadcastable to ``S``; returns ``()``.
    """
    if log_probs.shape[:-1] != x0.shape:
        raise ValueError(
            f"log_probs of shape {tuple(log_probs.shape)} does not match x0 of shape {tuple(x0.shape)}: "
            "expected (*x0.shape, K)"
        )
    nll = -torch.log_softmax(log_probs, dim=-1).gather(-1, x0.unsqueeze(-1)).squeeze(-1)
    if mask is None:
        return nll.mean()
    weight = mask.to(nll.dtype).expand_as(nll)
    # where(), not a product, so a -inf log-probability on an excluded element cannot give NaN
    total = torch.where(weight > 0, nll * weight, 0.0).sum()
    return total / weight.sum().clamp_min(torch.finfo(nll.dtype).tiny)
