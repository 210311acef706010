"""Non-diffusion baselines: persistence and climatology forecasts, a rolling z-score detector.

The reference points every probabilistic forecaster and anomaly detector should beat:

- :func:`persistence_forecast`: the last observed frame, held constant over the horizon (a
  deterministic, one-member "ensemble"; its CRPS equals its MAE).
- :class:`Climatology`: an ensemble of frames drawn from the training record, ignoring the
  context altogether; calibrated for the marginal distribution, so it sets the bar for spread
  and coverage, and skilful forecasters must beat its CRPS at short lead times.
- :class:`RollingZScore`: the classic statistical-process-control detector, each step's
  deviation from the mean of a trailing window in units of that window's standard deviation.

Arrays are numpy float64. Forecast layout: context ``(B, C, N)`` (B windows of C context frames
over N series, space and variables flattened) and forecasts ``(B, S, H, N)`` (S members, H
lead times), so ``forecast[:, :, h]`` lines up with the observed frame h steps ahead.
Metrics for these outputs are in :mod:`polydiff_timeseries.metrics`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["persistence_forecast", "Climatology", "RollingZScore"]


def _as_float(x: Any, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """A float64 array of numpy or torch input with ``ndim`` axes (or one of several counts)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    array = np.asarray(x)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if array.ndim not in allowed:
        wanted = " or ".join(map(str, allowed))
        raise ValueError(f"{name} must have {wanted} axes, got shape {array.shape}")
    return array.astype(np.float64, copy=False)


def _check_count(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def persistence_forecast(context: Any, horizon: int) -> np.ndarray:
    """Persistence: the last context frame, repeated for every lead time.

    A node whose value is NaN (or infinite) in the last frame takes its last finite value
    earlier in the context instead (the most recent observation is the persistence forecast); a node with no
    finite value in the whole context stays NaN.

    Args:
        context: the context windows.
        horizon: the number of lead times H, >= 1.

    Returns:
        The forecast, one member per window (a new array).

    Shapes:
        context: (B, C, N); returns (B, 1, H, N).
    """
    x = _as_float(context, "context", 3)
    horizon = _check_count(horizon, "horizon")
    b, c, n = x.shape
    if c == 0:
        raise ValueError("context must hold at least one frame, got C = 0")
    finite = np.isfinite(x)
    # Index of the last finite frame per (window, node): argmax finds the first True of the
    # time-reversed mask.
    last = c - 1 - np.argmax(finite[:, ::-1, :], axis=1)
    value = np.take_along_axis(x, last[:, None, :], axis=1)[:, 0, :]
    value = np.where(finite.any(axis=1), value, np.nan)
    return np.repeat(value[:, None, None, :], horizon, axis=2)


class Climatology:
    """Climatological ensemble: every member is a frame drawn at random from the training record.

    Whole frames are drawn (all N nodes of one training time step together), so the spatial and
    cross-variable structure of the members is that of real data. Each (window, member, lead
    time) gets its own independent draw: climatology has no memory, so consecutive lead times of
    one member are unrelated frames.

    Frames with a NaN are not drawn when the record holds at least one complete frame. When no
    frame is complete, frames are drawn from the whole record and each missing entry is
    replaced by a value of the same node drawn from that node's finite training values (the
    spatial structure then holds only approximately). :attr:`mean` and :attr:`std` ignore NaNs.

    Example::

        clim = Climatology().fit(train)            # train: (T, N)
        ensemble = clim.predict(context, 24, samples=50, seed=0)   # (B, 50, 24, N)
    """

    def __init__(self) -> None:
        self._frames: np.ndarray | None = None
        self._complete: np.ndarray | None = None
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None

    def fit(self, train: Any) -> Climatology:
        """Keep the training record.

        Args:
            train: training frames; NaN marks a missing value.

        Returns:
            ``self``.

        Raises:
            ValueError: if ``train`` is empty or a node has no finite value.

        Shapes:
            train: (T, N).
        """
        x = np.array(_as_float(train, "train", 2), dtype=np.float64)  # own copy: the caller may mutate
        x[~np.isfinite(x)] = np.nan
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"train must hold at least one frame of at least one node, got shape {x.shape}")
        observed = ~np.isnan(x)
        empty = np.flatnonzero(~observed.any(axis=0))
        if empty.size:
            raise ValueError(
                f"train has no finite value for {empty.size} node(s) (first: node {int(empty[0])}); "
                "drop them before fitting"
            )
        self._frames = x
        self._complete = np.flatnonzero(observed.all(axis=1))
        self._mean = np.nanmean(x, axis=0)
        self._std = np.nanstd(x, axis=0)
        return self

    def _fitted(self) -> np.ndarray:
        if self._frames is None:
            raise RuntimeError("Climatology is not fitted: call fit(train) first")
        return self._frames

    @property
    def mean(self) -> np.ndarray:
        """Per-node training mean, NaNs ignored. Shape (N,)."""
        self._fitted()
        return self._mean.copy()

    @property
    def std(self) -> np.ndarray:
        """Per-node training standard deviation (ddof = 0), NaNs ignored. Shape (N,)."""
        self._fitted()
        return self._std.copy()

    def predict(
        self,
        context: Any,
        horizon: int,
        samples: int = 50,
        seed: int | np.random.Generator | None = None,
    ) -> np.ndarray:
        """Draw a climatological ensemble for every context window.

        Args:
            context: the context windows; only their number B (and node count, checked) is
                used.
            horizon: the number of lead times H, >= 1.
            samples: the number of members S, >= 1.
            seed: seed or generator of the draws; the same seed gives the same ensemble.

        Returns:
            The ensemble (a new array).

        Shapes:
            context: (B, C, N); returns (B, S, H, N).
        """
        frames = self._fitted()
        x = _as_float(context, "context", 3)
        if x.shape[2] != frames.shape[1]:
            raise ValueError(
                f"context has {x.shape[2]} nodes but the climatology was fitted on {frames.shape[1]}"
            )
        horizon = _check_count(horizon, "horizon")
        samples = _check_count(samples, "samples")
        rng = np.random.default_rng(seed)
        shape = (x.shape[0], samples, horizon)
        if self._complete.size:
            return frames[self._complete[rng.integers(0, self._complete.size, size=shape)]]
        out = frames[rng.integers(0, frames.shape[0], size=shape)]
        # No complete frame exists: fill each gap with a random finite value of its node.
        missing = np.isnan(out)
        nodes = np.broadcast_to(np.arange(frames.shape[1]), out.shape)[missing]
        fill = np.empty(nodes.size)
        for node in np.unique(nodes):
            pool = frames[~np.isnan(frames[:, node]), node]
            where = nodes == node
            fill[where] = pool[rng.integers(0, pool.size, size=int(where.sum()))]
        out[missing] = fill
        return out


class RollingZScore:
    """Rolling z-score anomaly detector, using only past values.

    ``score_t = max_d |x_td - m_td| / (s_td + eps)`` where ``m_td`` and ``s_td`` are the mean
    and the sample standard deviation (ddof = 1) of channel d over the trailing window
    ``x_{t-w}, ..., x_{t-1}`` (step t itself excluded, so an anomaly cannot mask itself). For
    ``t < w`` the window is everything before t (an expanding window). NaN (and infinite)
    values are skipped in the window statistics; a channel scores 0 at a step where its value
    is missing or fewer than 2 finite past values exist, which makes ``score_0`` and
    ``score_1`` always 0. Scores from a window of only a few values are heavy-tailed (a
    Student-t with few degrees of freedom), so compare scores from the first w steps with care.

    The window sums come from cumulative sums, O(T D) for any window. They are taken about
    each channel's first finite value to limit cancellation, and a window variance below the
    rounding error of those sums counts as exactly 0 (a flat stretch), so a flat stretch
    followed by any change scores about ``|change| / eps``. The prefix sums still grow with the
    record: on a series whose level drifts by thousands of local standard deviations the scores
    carry relative errors of order 1e-4 (1e-10 for stationary data); detrend or difference
    such series first.

    Args:
        window: the trailing window w, >= 2.
        eps: added to the standard deviation, > 0.
    """

    def __init__(self, window: int = 50, eps: float = 1e-8) -> None:
        self.window = _check_count(window, "window", minimum=2)
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.eps = float(eps)

    def score(self, values: Any) -> np.ndarray:
        """Score every step.

        Args:
            values: the series; a 1-D input is one channel.

        Returns:
            The anomaly score of every step, >= 0.

        Shapes:
            values: (T, D) or (T,); returns (T,).
        """
        x = _as_float(values, "values", (1, 2))
        if x.ndim == 1:
            x = x[:, None]
        t, d = x.shape
        if d == 0:
            raise ValueError("values must have at least one channel, got D = 0")
        if t == 0:
            return np.zeros(0)
        finite = np.isfinite(x)
        # Centring on each channel's first finite value limits cancellation in the prefix sums
        # and, unlike a global statistic, keeps score_t a function of x_0..x_t only, bit for bit.
        first = np.argmax(finite, axis=0)
        center = np.where(finite.any(axis=0), x[first, np.arange(d)], 0.0)
        xc = np.where(finite, x - center, 0.0)

        def prefix(a: np.ndarray) -> np.ndarray:  # prefix[k] = sum of the first k rows
            return np.concatenate([np.zeros((1, d)), np.cumsum(a, axis=0)])

        c1, c2, cn = prefix(xc), prefix(xc * xc), prefix(finite.astype(np.float64))
        end = np.arange(t)
        start = np.maximum(end - self.window, 0)
        n = cn[end] - cn[start]
        s1 = c1[end] - c1[start]
        s2 = c2[end] - c2[start]
        enough = (n >= 2) & finite
        n_safe = np.where(enough, n, 2.0)
        mean = s1 / n_safe
        var = (s2 - s1 * mean) / (n_safe - 1.0)
        # Each window sum is a difference of two prefix sums; below their rounding error the
        # variance is noise, and treating it as 0 keeps flat stretches exactly flat.
        floor = 8.0 * np.finfo(np.float64).eps * (c2[end] + c2[start]) / (n_safe - 1.0)
        var = np.where(var > floor, var, 0.0)
        z = np.abs(xc - mean) / (np.sqrt(var) + self.eps)
        return np.where(enough, z, 0.0).max(axis=1)
