"""The denoiser contract and EDM preconditioning.

A denoiser is any ``nn.Module`` called as ``denoiser(x, t, cond) -> Tensor`` that has a
``prediction`` attribute naming what it returns (see :mod:`polydiff.parameterization`). ``t`` is
a float tensor of shape ``(B,)`` or per element (a prefix of ``x``'s shape). :class:`Denoiser`
is a convenient base; subclassing it is not required.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from polydiff.broadcast import time_like
from polydiff.parameterization import PREDICTIONS, Prediction, check_prediction
from polydiff.schedules import Schedule

__all__ = ["Denoiser", "EDMPrecond", "prediction_of", "drop_condition"]


def drop_condition(cond: Any, mask: Tensor) -> Any:
    """Replace the condition of the samples where ``mask`` is True by the null condition (zeros).

    Tensors are zeroed along their first (batch) dimension; dicts, lists and tuples are handled
    element-wise; ``None`` stays ``None``. Never modifies ``cond`` in place.
    """
    if cond is None:
        return None
    if isinstance(cond, Tensor):
        keep = (~mask).reshape(-1, *([1] * (cond.ndim - 1)))
        return torch.where(keep, cond, torch.zeros_like(cond))
    if isinstance(cond, dict):
        return {k: drop_condition(v, mask) for k, v in cond.items()}
    if isinstance(cond, (list, tuple)):
        return type(cond)(drop_condition(v, mask) for v in cond)
    raise TypeError(f"cannot drop a condition of type {type(cond).__name__}; override drop_cond")


class Denoiser(nn.Module):
    """Base class for denoisers.

    Args:
        prediction: what :meth:`forward` returns: one of eps, x0, v, score, flow.
    """

    def __init__(self, prediction: Prediction = "eps"):
        super().__init__()
        self.prediction = check_prediction(prediction)

    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def drop_cond(self, cond: Any, mask: Tensor) -> Any:
        """The null condition for samples where ``mask`` is True (classifier-free guidance)."""
        return drop_condition(cond, mask)


def prediction_of(denoiser: Any) -> Prediction:
    """The declared prediction type of a denoiser, with a clear error when it has none."""
    kind = getattr(denoiser, "prediction", None)
    if kind is None:
        raise TypeError(
            f"{type(denoiser).__name__} does not declare what it predicts: give it a `prediction` "
            f"attribute, one of {', '.join(PREDICTIONS)}"
        )
    return check_prediction(kind)


class EDMPrecond(Denoiser):
    """EDM preconditioning around a raw network (Karras et al. 2022, Table 1).

    Computes ``D(x; sigma) = c_skip x + c_out F(c_in x; c_noise)`` in the variance-exploding
    coordinates of any schedule (``x / alpha`` and ``sigma / alpha``), so the same wrapper serves
    VP and VE schedules. The wrapped network is called as ``net(c_in * x, c_noise, cond)`` with
    ``c_noise = ln(sigma) / 4`` shaped like ``t``; the wrapper predicts ``x0``.

    Args:
        net: the raw network ``F``.
        schedule: the schedule the model is trained with (must not be a bridge).
        sigma_data: standard deviation of the data; by default the schedule's own
            ``sigma_data`` where it has one (:class:`~polydiff.schedules.EDM`), else 0.5.
    """

    def __init__(self, net: nn.Module, schedule: Schedule, sigma_data: float | None = None):
        super().__init__(prediction="x0")
        if schedule.has_bridge:
            raise ValueError("EDMPrecond needs a schedule without a conditioning drift (not a bridge)")
        self.net = net
        self.schedule = schedule
        self.sigma_data = float(sigma_data if sigma_data is not None else getattr(schedule, "sigma_data", 0.5))

    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        tt = time_like(t, x)
        a = self.schedule.alpha(tt)
        sigma = self.schedule.sigma(tt) / a
        sd2 = self.sigma_data**2
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * self.sigma_data / torch.sqrt(sigma**2 + sd2)
        c_in = 1.0 / (a * torch.sqrt(sigma**2 + sd2))
        c_noise = torch.log(self.schedule.sigma(torch.as_tensor(t, dtype=torch.float64, device=x.device))
                            / self.schedule.alpha(torch.as_tensor(t, dtype=torch.float64, device=x.device))) / 4
        dt = x.dtype
        out = self.net(c_in.to(dt) * x, c_noise.to(dt), cond)
        return c_skip.to(dt) * (x / a.to(dt)) + c_out.to(dt) * out
