"""Categorical transition schedules in continuous time t in [0, 1] (t = 0 clean, t = 1 the limit).

A clean class ``x0`` among ``K`` is corrupted by the cumulative transition matrix

    Q̄_t = ᾱ_t I + (1 - ᾱ_t) 1 mᵀ,        Q̄_t[i, j] = q(x_t = j | x0 = i),

which keeps the class with probability ``ᾱ_t`` and otherwise redraws it from the stationary
distribution ``m`` (Austin et al. 2021, D3PM, §3; Vignac et al. 2023, DiGress, §3-4). Because
``1 mᵀ`` is idempotent, these matrices compose: ``Q̄_t = Q̄_s Q_{t|s}`` with
``Q_{t|s} = (ᾱ_t/ᾱ_s) I + (1 - ᾱ_t/ᾱ_s) 1 mᵀ``, so any grid on the t axis is a valid chain and
nothing here ever materialises a K x K matrix per element.

Schedules are small immutable objects; their maths is done in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from polydiff.broadcast import time_like

__all__ = [
    "CategoricalSchedule",
    "UniformTransitions",
    "MarginalTransitions",
    "AbsorbingTransitions",
    "draw_classes",
]

_SUM_TOLERANCE = 1e-6


def draw_classes(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw one class per row of non-negative (not necessarily normalised) class weights.

    Classes of weight zero are never drawn. Every categorical draw of :mod:`polydiff.discrete`
    goes through here, so that one generator makes the whole sampler reproducible.

    Shapes:
        probs: ``(..., K)``; returns ``(...)``, dtype long.
    """
    flat = probs.reshape(-1, probs.shape[-1])
    if flat.shape[0] == 0:
        return torch.empty(probs.shape[:-1], dtype=torch.long, device=probs.device)
    flat = flat.to(torch.promote_types(flat.dtype, torch.float32))  # multinomial needs float32/64
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


def _check_num_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")


def _check_distribution(values: Sequence[float] | Tensor, name: str) -> Tensor:
    dist = torch.as_tensor(values, dtype=torch.float64).detach().clone().cpu()
    if dist.ndim != 1 or dist.numel() < 2:
        shape = list(dist.shape)
        raise ValueError(f"{name} must be a 1-D list of two or more probabilities, got shape {shape}")
    if not torch.isfinite(dist).all() or (dist < 0).any():
        raise ValueError(f"{name} must be finite and non-negative, got {dist.tolist()}")
    total = float(dist.sum())
    if abs(total - 1.0) > _SUM_TOLERANCE:
        raise ValueError(f"{name} must sum to 1 (within {_SUM_TOLERANCE:g}), got a sum of {total:.8g}")
    return dist / total


class CategoricalSchedule:
    """Corruption of ``K`` classes toward a stationary distribution ``m`` (D3PM / DiGress).

    ``ᾱ(t)``, the probability that a class has not been redrawn by time t, follows the cosine
    schedule of Nichol & Dhariwal (2021) used by DiGress:
    ``ᾱ(t) = cos²(π/2 (t+s)/(1+s)) / cos²(π/2 s/(1+s))``, pinned to exactly 1 at t = 0 and 0 at
    t = 1 so that ``x_1`` follows ``m`` exactly and the sampler may start from :meth:`prior_sample`.
    Subclasses may override :meth:`alpha_bar`; everything else follows from it and ``m``.

    Args:
        limit: the stationary distribution ``m``: non-negative, summing to 1.
        s: offset of the cosine schedule.

    Shapes:
        limit: ``(K,)``.
    """

    def __init__(self, limit: Sequence[float] | Tensor, s: float = 0.008):
        limit = _check_distribution(limit, "limit")
        if not (math.isfinite(s) and s >= 0):
            raise ValueError(f"the cosine offset s must be finite and >= 0, got {s!r}")
        self.num_classes = int(limit.numel())
        self.s = float(s)
        self._limit = limit
        self._freeze()

    def __setattr__(self, name, value):  # immutable once constructed
        if getattr(self, "_frozen", False):
            raise AttributeError(f"{type(self).__name__} is immutable; build a new one instead")
        super().__setattr__(name, value)

    def _freeze(self) -> None:
        object.__setattr__(self, "_frozen", True)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"

    @property
    def limit(self) -> Tensor:
        """The stationary distribution ``m`` as a float64 tensor ``(K,)`` (a copy)."""
        return self._limit.clone()

    # --- the forward process ----------------------------------------------------------------
    def alpha_bar(self, t: Tensor | float) -> Tensor:
        """Probability of keeping the clean class up to time ``t``; float64, shaped like ``t``."""
        t = torch.as_tensor(t, dtype=torch.float64)
        s = self.s
        value = torch.cos(0.5 * math.pi * (t + s) / (1 + s)) ** 2 / math.cos(0.5 * math.pi * s / (1 + s)) ** 2
        # cos(pi/2) is 6e-17 in floating point, not 0: pin the ends so x_1 is exactly the limit.
        value = torch.where(t >= 1, 0.0, torch.where(t <= 0, 1.0, value))
        return value.clamp(0.0, 1.0)

    def _keep_ratio(self, t: Tensor | float, s: Tensor | float) -> Tensor:
        """``ᾱ_t / ᾱ_s``, the keep probability of ``Q_{t|s}``; 0 where ``ᾱ_s = 0`` (so is ``ᾱ_t``)."""
        ab_t, ab_s = self.alpha_bar(t), self.alpha_bar(s)
        positive = ab_s > 0
        return torch.where(positive, ab_t / torch.where(positive, ab_s, 1.0), 0.0).clamp(0.0, 1.0)

    def _transition(self, keep: Tensor) -> Tensor:
        keep = keep[..., None, None]
        eye = torch.eye(self.num_classes, dtype=torch.float64, device=keep.device)
        return keep * eye + (1 - keep) * self._limit.to(keep.device)

    def cumulative_transition(self, t: Tensor | float) -> Tensor:
        """The matrix ``Q̄_t`` (rows: x0, columns: x_t), for tests and small K.

        Shapes:
            t: any shape ``S``; returns ``(*S, K, K)`` float64.
        """
        return self._transition(self.alpha_bar(t))

    def step_transition(self, t: Tensor | float, s: Tensor | float) -> Tensor:
        """The matrix ``Q_{t|s}`` (rows: x_s, columns: x_t) for ``s <= t``.

        Shapes:
            t, s: broadcastable shapes ``S``; returns ``(*S, K, K)`` float64.
        """
        return self._transition(self._keep_ratio(t, s))

    def marginal_probs(self, x0_probs: Tensor, t: Tensor | float, limit: Tensor | None = None) -> Tensor:
        """Probabilities of ``x_t`` given a distribution over ``x0``: ``p(x_t) = p(x0) Q̄_t``.

        Args:
            x0_probs: a distribution over the clean class (a one-hot for a known class).
            t: one time, one per sample ``(B,)``, or per element (a prefix of ``x0_probs``'s
                shape without the class dimension).
            limit: optional per-element limit distributions replacing ``m`` (see
                :meth:`element_limit`).

        Returns:
            The probabilities of ``x_t``, in ``x0_probs``'s floating dtype (float64 otherwise).

        Shapes:
            x0_probs: ``(B, ..., K)``; returns ``(B, ..., K)``.
        """
        self._check_probs_shape(x0_probs)
        p = x0_probs.to(torch.float64)
        ab = self.alpha_bar(time_like(t, p[..., 0])).unsqueeze(-1)
        m = self.element_limit(limit, p.shape, p.device)
        out = ab * p + (1 - ab) * p.sum(-1, keepdim=True) * m
        return out.to(x0_probs.dtype if x0_probs.is_floating_point() else torch.float64)

    def corrupt(
        self, x0: Tensor, t: Tensor | float, generator: torch.Generator | None = None, limit: Tensor | None = None
    ) -> Tensor:
        """Draw ``x_t ~ q(x_t | x0)``: keep each class with probability ``ᾱ_t``, else redraw from ``m``.

        Args:
            x0: clean classes.
            t: one time, one per sample ``(B,)`` (broadcast over the remaining dimensions), or
                per element with ``x0``'s shape.
            generator: the source of randomness.
            limit: optional per-element limit distributions replacing ``m`` (see
                :meth:`element_limit`): a redrawn element comes from its own limit.

        Shapes:
            x0: ``(B, ...)`` long; returns ``(B, ...)`` long.
        """
        self.check_classes(x0, "x0")
        keep_prob = self.alpha_bar(time_like(t, x0))
        # uniform draws lie in [0, 1), so ᾱ = 1 always keeps and ᾱ = 0 never does
        keep = torch.rand(x0.shape, generator=generator, dtype=torch.float64, device=x0.device) < keep_prob
        if limit is None:
            noise = self.prior_sample(x0.shape, generator=generator, device=x0.device)
        else:
            noise = draw_classes(self.element_limit(limit, (*x0.shape, self.num_classes), x0.device), generator)
        return torch.where(keep, x0, noise)

    def prior_sample(
        self, shape: Sequence[int], generator: torch.Generator | None = None, device=None
    ) -> Tensor:
        """Draw classes from the limit ``m`` (the law of ``x_1``), on the generator's device by default.

        Shapes:
            returns ``shape``, dtype long.
        """
        shape = tuple(int(n) for n in shape)
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        count = math.prod(shape)
        if count == 0:
            return torch.empty(shape, dtype=torch.long, device=device)
        limit = self._limit.to(device)
        return torch.multinomial(limit, count, replacement=True, generator=generator).reshape(shape)

    # --- the reverse process ----------------------------------------------------------------
    def posterior_probs(
        self, x_t: Tensor, x0_probs: Tensor, t: Tensor | float, s: Tensor | float, limit: Tensor | None = None
    ) -> Tensor:
        """``p(x_s | x_t) = Σ_{x0} p̂(x0) q(x_s | x_t, x0)`` for ``s <= t`` (D3PM's x0-parameterisation).

        With ``q(x_s | x_t, x0) = Q_{t|s}[x_s, x_t] Q̄_s[x0, x_s] / Q̄_t[x0, x_t]`` (Bayes) and the
        rank-one structure of the matrices, the sum over ``x0`` collapses to ``O(K)`` work per
        element: with ``w = p̂ / Q̄_t[:, x_t]``,
        ``p(x_s = a | x_t) ∝ Q_{t|s}[a, x_t] (ᾱ_s w_a + (1 - ᾱ_s) m_a Σ_i w_i)``.

        Clean classes that cannot have produced ``x_t`` (``Q̄_t[x0, x_t] = 0``, e.g. an unmasked
        token under absorbing transitions) get no weight and the result is renormalised, i.e. the
        prediction is conditioned on ``x_t``. If the prediction puts no mass on any consistent
        class, a uniform prediction is used instead; if no clean class is consistent with ``x_t``
        at all (a state the forward process cannot reach), ``x_t`` is ignored and ``q(x_s | p̂)``
        is returned. At ``s = 0`` the result is the prediction conditioned on ``x_t``.

        Args:
            x_t: current classes.
            x0_probs: predicted clean-class probabilities (need not be normalised).
            t: current time; one, per sample ``(B,)`` or per element.
            s: earlier time, shaped like ``t``.
            limit: optional per-element limit distributions replacing ``m`` (see
                :meth:`element_limit`); the formula is the same with each element's own ``m``.

        Returns:
            Normalised probabilities of ``x_s``, in ``x0_probs``'s floating dtype.

        Shapes:
            x_t: ``(B, ...)`` long; x0_probs: ``(B, ..., K)``; returns ``(B, ..., K)``.
        """
        self._check_probs_shape(x0_probs)
        if x0_probs.shape[:-1] != x_t.shape:
            raise ValueError(
                f"x0_probs of shape {tuple(x0_probs.shape)} does not match x_t of shape "
                f"{tuple(x_t.shape)}: expected {(*x_t.shape, self.num_classes)}"
            )
        p = x0_probs.to(torch.float64)
        m = self.element_limit(limit, p.shape, p.device)
        tt, ss = time_like(t, x_t), time_like(s, x_t)
        ab_t = self.alpha_bar(tt).unsqueeze(-1)
        ab_s = self.alpha_bar(ss).unsqueeze(-1)
        keep = self._keep_ratio(tt, ss).unsqueeze(-1)
        is_xt = torch.nn.functional.one_hot(x_t, self.num_classes).to(torch.float64)
        m_xt = m.gather(-1, x_t.unsqueeze(-1))
        likelihood = ab_t * is_xt + (1 - ab_t) * m_xt  # q(x_t | x0 = i) over i
        backward = keep * is_xt + (1 - keep) * m_xt  # q(x_t | x_s = a) over a
        consistent = likelihood > 0
        # a prediction that rules out everything x_t allows is overruled by x_t, not trusted
        mass = torch.where(consistent, p, 0.0).sum(-1, keepdim=True)
        prior = torch.where(mass > 0, p, consistent.to(p.dtype))
        w = torch.where(consistent, prior / torch.where(consistent, likelihood, 1.0), 0.0)
        out = backward * (ab_s * w + (1 - ab_s) * m * w.sum(-1, keepdim=True))
        total = out.sum(-1, keepdim=True)
        # no clean class could have produced x_t (not a forward-process state): use q(x_s | p̂)
        ignore_xt = ab_s * p / p.sum(-1, keepdim=True) + (1 - ab_s) * m
        out = torch.where(total > 0, out / torch.where(total > 0, total, 1.0), ignore_xt)
        return out.to(x0_probs.dtype if x0_probs.is_floating_point() else torch.float64)

    def element_limit(self, limit: Tensor | None, shape: Sequence[int], device=None) -> Tensor:
        """The limit distribution of every element, ``(*shape[:-1], K)`` float64.

        Without ``limit`` it is the schedule's ``m`` for every element. A ``limit`` of shape
        broadcastable to ``shape`` gives each element its own stationary distribution (non-negative,
        normalised here): the forward process of an element is then the same keep-or-redraw
        chain toward its own ``m``, as when the noise of one variable depends on the clean value
        of another (Graph DiT's graph-dependent noise, Liu et al. 2024).

        Raises:
            ValueError: a limit of the wrong class count, negative, non-finite or summing to 0.
        """
        shape = tuple(shape)
        if limit is None:
            return self._limit.to(device).expand(shape)
        limit = torch.as_tensor(limit).to(device=device, dtype=torch.float64)
        if limit.ndim == 0 or limit.shape[-1] != self.num_classes:
            raise ValueError(
                f"per-element limits must end with a dimension of size {self.num_classes}, got shape {tuple(limit.shape)}"
            )
        if not torch.isfinite(limit).all() or (limit < 0).any():
            raise ValueError("per-element limits must be finite and non-negative")
        total = limit.sum(-1, keepdim=True)
        if (total <= 0).any():
            raise ValueError("some per-element limits sum to zero")
        try:
            return (limit / total).expand(shape)
        except RuntimeError:
            raise ValueError(
                f"per-element limits of shape {tuple(limit.shape)} do not broadcast to {shape}"
            ) from None

    # --- checks -------------------------------------------------------------------------------
    def _check_probs_shape(self, probs: Tensor) -> None:
        if probs.ndim == 0 or probs.shape[-1] != self.num_classes:
            raise ValueError(
                f"class probabilities must end with a dimension of size {self.num_classes}, "
                f"got shape {tuple(probs.shape)}"
            )

    def check_classes(self, x: Tensor, name: str = "x") -> None:
        """Raise a ValueError naming ``name`` unless ``x`` holds integer classes in ``[0, K)``."""
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer class indices, got dtype {x.dtype}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.num_classes):
            raise ValueError(
                f"{name} holds classes outside [0, {self.num_classes}): "
                f"min {int(x.min())}, max {int(x.max())}"
            )


class UniformTransitions(CategoricalSchedule):
    """Uniform noise: the limit is ``1/K`` for every class (D3PM's uniform transitions).

    Args:
        num_classes: number of classes ``K``.
        s: offset of the cosine schedule.
    """

    def __init__(self, num_classes: int, s: float = 0.008):
        _check_num_classes(num_classes)
        super().__init__(torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64), s=s)


class MarginalTransitions(CategoricalSchedule):
    """Noise drawn from the data's class marginals (DiGress, Vignac et al. 2023, §4.1).

    DiGress shows that the limit closest to the data among factorised ones is the marginal
    distribution of the classes, which keeps the noisy graphs' sparsity close to the data's.

    Args:
        marginals: class frequencies; non-negative, summing to 1. Classes of frequency zero are
            never produced by the noise.
        s: offset of the cosine schedule.
    """

    def __init__(self, marginals: Sequence[float] | Tensor, s: float = 0.008):
        limit = _check_distribution(marginals, "marginals")
        super().__init__(limit, s=s)
        object.__setattr__(self, "marginals", tuple(limit.tolist()))

    @classmethod
    def from_data(cls, labels: Tensor, num_classes: int, s: float = 0.008) -> MarginalTransitions:
        """Count the classes of ``labels`` (any shape; select real entries, e.g. non-padding, first)."""
        _check_num_classes(num_classes)
        labels = torch.as_tensor(labels)
        if labels.numel() == 0:
            raise ValueError("cannot estimate class marginals from an empty tensor of labels")
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"labels must hold integer class indices, got dtype {labels.dtype}")
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            low, high = int(labels.min()), int(labels.max())
            raise ValueError(f"labels hold classes outside [0, {num_classes}): min {low}, max {high}")
        counts = torch.bincount(labels.reshape(-1).cpu(), minlength=num_classes).to(torch.float64)
        return cls(counts / counts.sum(), s=s)


class AbsorbingTransitions(CategoricalSchedule):
    """Absorbing ("masking") noise: a corrupted class becomes ``mask_index`` and stays there
    (D3PM's absorbing-state transitions). The limit is one-hot on the mask class.

    Args:
        num_classes: number of classes ``K``, the mask class included.
        mask_index: index of the mask class, in ``[0, K)``.
        s: offset of the cosine schedule.
    """

    def __init__(self, num_classes: int, mask_index: int, s: float = 0.008):
        _check_num_classes(num_classes)
        is_int = isinstance(mask_index, int) and not isinstance(mask_index, bool)
        if not (is_int and 0 <= mask_index < num_classes):
            raise ValueError(f"mask_index must be an integer in [0, {num_classes}), got {mask_index!r}")
        limit = torch.zeros(num_classes, dtype=torch.float64)
        limit[mask_index] = 1.0
        super().__init__(limit, s=s)
        object.__setattr__(self, "mask_index", mask_index)
