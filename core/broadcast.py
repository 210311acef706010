"""Broadcasting of time and coefficient tensors against states of any layout.

The same sampler must run on (batch, channels, time), (batch, nodes, features) and
(batch, points, 3), so nothing here assumes images: a time tensor is brought to the state's
rank by appending trailing singleton dimensions.
"""

from __future__ import annotations

import torch
from torch import Tensor


def append_dims(t: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dimensions to ``t`` until it has ``ndim`` dimensions."""
    missing = ndim - t.ndim
    if missing < 0:
        raise ValueError(f"a tensor of shape {tuple(t.shape)} has more dimensions than {ndim}")
    return t.reshape(*t.shape, *([1] * missing))


def time_like(t: Tensor | float, x: Tensor) -> Tensor:
    """Bring a time tensor to a shape that broadcasts against ``x``.

    Args:
        t: a Python number or 0-d tensor (one time for everything), a ``(B,)`` tensor (one time
            per sample) or a per-element tensor whose shape is a prefix of ``x``'s, with any of
            its dimensions of size one (e.g. ``(B, T)`` for one noise level per frame of a
            ``(B, T, D)`` state).
        x: the state.

    Returns:
        ``t`` as a float64 tensor on ``x``'s device with ``x.ndim`` dimensions.

    Raises:
        ValueError: if ``t`` cannot be broadcast to ``x`` that way.
    """
    t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
    if t.ndim == 0:
        return t.reshape([1] * x.ndim)
    if t.ndim > x.ndim:
        raise ValueError(
            f"time of shape {tuple(t.shape)} has more dimensions than the state {tuple(x.shape)}"
        )
    t = append_dims(t, x.ndim)
    for size_t, size_x in zip(t.shape, x.shape):
        if size_t not in (1, size_x):
            raise ValueError(
                f"time of shape {tuple(t.shape)} does not broadcast to the state {tuple(x.shape)}: "
                "pass one time per sample (B,), or per element with a prefix of the state's shape"
            )
    return t
