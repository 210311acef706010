"""Metrics of probabilistic forecasts and of time-series anomaly detectors.

**Forecasts** are ensembles: ``samples`` holds the S members on axis 0, shape ``(S, ...)``, and
``obs`` the verifying observations, shape ``(...)``. Every metric is computed in float64 and
masks NaN observations out (a missing observation is excluded, never filled); a NaN member at an
observed element is an error, since it would silently turn an average into NaN.

- **CRPS** (continuous ranked probability score; Gneiting & Raftery 2007, "Strictly proper
  scoring rules, prediction, and estimation", Eq. 20):
  ``CRPS(F, y) = E|X - y| - 1/2 E|X - X'|`` with ``X, X'`` independent draws from the forecast.
  :func:`crps_ensemble` evaluates it for the empirical distribution of the ensemble; its
  ``fair`` variant (Ferro 2014, "Fair scores for ensemble forecasts") divides the pair sum by
  ``S (S - 1)`` instead of ``S^2`` and is unbiased for the CRPS of the distribution the members
  were drawn from. :func:`crps_gaussian` is the closed form for a normal forecast.
- **Spread–skill ratio** (Fortin et al. 2014, "Why should ensemble spread match the RMSE of the
  ensemble mean?"): ``sqrt((S + 1) / S * mean ensemble variance) / RMSE(ensemble mean)``. The
  factor ``(S + 1) / S`` corrects for the finite ensemble, so a calibrated ensemble (members and
  observation exchangeable) scores 1 for any S; below 1 is under-dispersed (over-confident),
  above 1 over-dispersed.
- **Interval coverage**: the fraction of observations inside the central ``level`` interval of
  the empirical member quantiles; ``level`` for a calibrated ensemble (up to the ensemble's
  resolution).

**Anomaly detection** works on one series of T steps: ``labels`` (0/1, 1 = anomalous),
continuous ``scores`` (higher = more anomalous; NaN is an error) and binary predictions
``pred``. Besides plain point-wise precision, recall, F1, AUROC and AUPRC (average precision),
the point-adjusted variants are reported: a labelled anomaly segment counts as entirely
detected as soon as one of its points is predicted (Xu et al. 2018, "Unsupervised anomaly
detection via variational auto-encoder for seasonal KPIs in web applications"). Point
adjustment is the customary protocol of the field but inflates scores badly: Kim et al. 2022
("Towards a rigorous evaluation of time-series anomaly detection") show that random scores reach
a near-perfect adjusted F1 on the common benchmarks when segments are long, since one lucky
point credits a whole segment. Report both, and read the adjusted numbers with that in mind;
:func:`detection_delay` adds how late within a segment the first detection comes.

Undefined values (a ratio with a zero denominator, AUROC with one class absent) are NaN
:class:`Score` objects that carry the reason, so tables record why instead of crashing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from polydiff.score import Score

__all__ = [
    "Score",
    "crps_ensemble",
    "crps_gaussian",
    "spread_skill_ratio",
    "interval_coverage",
    "forecast_scores",
    "scores_by_lead",
    "anomaly_segments",
    "point_adjust",
    "precision_recall_f1",
    "auroc",
    "auprc",
    "detection_delay",
    "best_f1_threshold",
    "quantile_threshold",
    "detection_scores",
]


# --- input checks ----------------------------------------------------------------------------
def _as_array(x: Any, name: str) -> np.ndarray:
    """A float64 array of numpy or torch input (a copy whenever a conversion is needed)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    array = np.asarray(x)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.bool_)
    ):
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    return array.astype(np.float64, copy=False)


def _ensemble(samples: Any, obs: Any) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``samples`` (S, ...) and ``obs`` (...), checked against each other."""
    x = _as_array(samples, "samples")
    y = _as_array(obs, "obs")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"samples must have shape (S, ...) with S >= 1 members, got {x.shape}")
    if x.shape[1:] != y.shape:
        raise ValueError(
            f"samples must have shape (S, *obs.shape) = (S, {', '.join(map(str, y.shape))}), "
            f"got samples {x.shape} and obs {y.shape}"
        )
    bad = np.isnan(x).any(axis=0) & ~np.isnan(y)
    if bad.any():
        raise ValueError(
            f"samples contain NaN members at {int(bad.sum())} observed element(s); an ensemble "
            "must be complete wherever obs is observed"
        )
    return x, y


def _binary(x: Any, name: str) -> np.ndarray:
    """A 1-D boolean copy of 0/1 (or boolean) labels or predictions."""
    array = _as_array(x, name)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D of shape (T,), got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError(f"{name} contain NaN at {int(np.isnan(array).sum())} step(s)")
    if not np.isin(array, (0.0, 1.0)).all():
        odd = array[~np.isin(array, (0.0, 1.0))]
        raise ValueError(f"{name} must be 0/1 (or boolean), got values such as {odd[:3].tolist()}")
    return array.astype(bool)


def _scores(x: Any, name: str = "scores") -> np.ndarray:
    """1-D float64 anomaly scores without NaN."""
    array = _as_array(x, name)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D of shape (T,), got shape {array.shape}")
    nan = np.isnan(array)
    if nan.any():
        raise ValueError(
            f"{name} contain NaN at {int(nan.sum())} of {array.size} steps (first at index "
            f"{int(np.argmax(nan))}); score every step or drop the NaN steps from both {name} "
            "and labels"
        )
    return array


def _same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same length, got {a.size} and {b.size}")


# --- forecasts -------------------------------------------------------------------------------
def crps_ensemble(samples: Any, obs: Any, *, fair: bool = False) -> np.ndarray:
    """Elementwise CRPS of an ensemble forecast (Gneiting & Raftery 2007, Eq. 20).

    ``CRPS = mean_i |x_i - y| - 1/(2 S^2) sum_ij |x_i - x_j|``, or with ``fair=True``
    ``... - 1/(2 S (S - 1)) sum_ij |x_i - x_j|`` (Ferro 2014). The pair sum is evaluated from
    the sorted members, ``sum_ij |x_i - x_j| = 2 sum_k (2k - S - 1) x_(k)``, in O(S log S)
    rather than O(S^2). For S = 1 the (non-fair) CRPS is ``|x - y|``.

    Args:
        samples: the ensemble, members on axis 0 (numpy array or torch tensor).
        obs: the observations; NaN marks a missing observation.
        fair: use the fair (ensemble-size-unbiased) estimator; needs S >= 2.

    Returns:
        The CRPS of every element, NaN where ``obs`` is NaN.

    Raises:
        ValueError: on mismatched shapes, NaN members at an observed element, or ``fair`` with
            a single member.

    Shapes:
        samples: (S, ...); obs: (...); returns (...).
    """
    x, y = _ensemble(samples, obs)
    s = x.shape[0]
    if fair and s < 2:
        raise ValueError("crps_ensemble(fair=True) needs samples with S >= 2 members, got S = 1")
    skill = np.abs(x - y).mean(axis=0)
    weights = (2.0 * np.arange(1, s + 1) - s - 1).reshape((s,) + (1,) * y.ndim)
    half_pair_sum = (weights * np.sort(x, axis=0)).sum(axis=0)  # = 1/2 sum_ij |x_i - x_j|
    spread = half_pair_sum / (s * (s - 1) if fair else s * s)
    return np.where(np.isnan(y), np.nan, skill - spread)


def crps_gaussian(mean: Any, std: Any, obs: Any) -> np.ndarray:
    """Closed-form CRPS of a normal forecast N(mean, std^2) (Gneiting & Raftery 2007, Eq. 21).

    ``CRPS = std * (z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi))`` with ``z = (obs - mean) / std``;
    a zero ``std`` (a point forecast) gives the limit ``|mean - obs|``.

    Args:
        mean: forecast means.
        std: forecast standard deviations, >= 0.
        obs: observations; NaN marks a missing observation.

    Returns:
        The CRPS of every element, NaN where ``obs`` is NaN.

    Raises:
        ValueError: if ``std`` is negative or NaN, or the shapes do not broadcast.

    Shapes:
        mean, std, obs: broadcastable to a common shape (...); returns (...).
    """
    from scipy.special import ndtr

    mu = _as_array(mean, "mean")
    sigma = _as_array(std, "std")
    y = _as_array(obs, "obs")
    if np.isnan(sigma).any() or (sigma < 0).any():
        raise ValueError("std must be >= 0 and not NaN")
    try:
        mu, sigma, y = np.broadcast_arrays(mu, sigma, y)
    except ValueError:
        raise ValueError(
            f"mean, std and obs must broadcast, got shapes {np.shape(mu)}, {np.shape(sigma)}, "
            f"{np.shape(y)}"
        ) from None
    point = sigma == 0
    safe = np.where(point, 1.0, sigma)  # keeps z finite where the limit is taken instead
    z = (y - mu) / safe
    density = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    crps = safe * (z * (2.0 * ndtr(z) - 1.0) + 2.0 * density - 1.0 / math.sqrt(math.pi))
    return np.where(point, np.abs(mu - y), crps)


def _observed(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Members (S, K) and observations (K,) at the K observed elements."""
    keep = ~np.isnan(y)
    return x[:, keep], y[keep]


def spread_skill_ratio(samples: Any, obs: Any) -> float:
    """Spread–skill ratio of an ensemble (Fortin et al. 2014), over the observed elements.

    ``sqrt((S + 1) / S * mean_k var_k) / sqrt(mean_k (mean_k - y_k)^2)``, where ``var_k`` is the
    unbiased (ddof = 1) variance of the members at element k and ``mean_k`` their mean. About 1
    for a calibrated ensemble, below 1 for an under-dispersed one.

    Args:
        samples: the ensemble, members on axis 0.
        obs: the observations; NaN elements are excluded.

    Returns:
        The ratio; a NaN :class:`Score` with its reason when S < 2, no element is observed or
        the ensemble mean is exact everywhere.

    Shapes:
        samples: (S, ...); obs: (...).
    """
    x, y = _observed(*_ensemble(samples, obs))
    s = x.shape[0]
    if s < 2:
        return Score.undefined(f"spread needs at least 2 ensemble members, got S = {s}")
    if y.size == 0:
        return Score.undefined("no observed (non-NaN) element")
    spread = math.sqrt((s + 1) / s * float(x.var(axis=0, ddof=1).mean()))
    skill = math.sqrt(float(((x.mean(axis=0) - y) ** 2).mean()))
    if skill == 0.0:
        return Score.undefined("the ensemble mean matches every observation exactly (RMSE = 0)")
    return Score(spread / skill)


def interval_coverage(samples: Any, obs: Any, level: float) -> float:
    """Fraction of observations inside the central ``level`` interval of the ensemble.

    The interval runs from the ``(1 - level) / 2`` to the ``(1 + level) / 2`` empirical quantile
    of the members (numpy's default linear interpolation), both ends included.

    Args:
        samples: the ensemble, members on axis 0.
        obs: the observations; NaN elements are excluded.
        level: the nominal coverage, in (0, 1).

    Returns:
        The observed coverage; a NaN :class:`Score` with its reason when S < 2 (the interval is
        a point) or no element is observed.

    Shapes:
        samples: (S, ...); obs: (...).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    x, y = _observed(*_ensemble(samples, obs))
    s = x.shape[0]
    if s < 2:
        return Score.undefined(f"an interval needs at least 2 ensemble members, got S = {s}")
    if y.size == 0:
        return Score.undefined("no observed (non-NaN) element")
    lower, upper = np.quantile(x, [(1.0 - level) / 2.0, (1.0 + level) / 2.0], axis=0)
    return Score(float(((lower <= y) & (y <= upper)).mean()))


def forecast_scores(samples: Any, obs: Any) -> dict[str, float]:
    """The forecast metrics of an ensemble, averaged over all observed elements.

    Keys: ``crps`` (mean :func:`crps_ensemble`, not fair), ``mse`` and ``mae`` (of the ensemble
    mean), ``spread_skill`` (:func:`spread_skill_ratio`), ``coverage_50`` and ``coverage_90``
    (:func:`interval_coverage`) and ``count`` (the number of observed elements, an int). With a
    single member, ``crps`` equals ``mae`` and the spread metrics are NaN; with no observed
    element every metric is NaN and ``count`` is 0.

    Args:
        samples: the ensemble, members on axis 0.
        obs: the observations; NaN elements are excluded.

    Returns:
        The metrics, NaN values as :class:`Score` objects carrying the reason.

    Shapes:
        samples: (S, ...); obs: (...).
    """
    x, y = _observed(*_ensemble(samples, obs))
    count = int(y.size)
    if count == 0:
        none = Score.undefined("no observed (non-NaN) element")
        return {
            **{k: none for k in ("crps", "mse", "mae", "spread_skill", "coverage_50", "coverage_90")},
            "count": 0,
        }
    error = x.mean(axis=0) - y
    return {
        "crps": Score(float(crps_ensemble(x, y).mean())),
        "mse": Score(float((error**2).mean())),
        "mae": Score(float(np.abs(error).mean())),
        "spread_skill": spread_skill_ratio(x, y),
        "coverage_50": interval_coverage(x, y, 0.5),
        "coverage_90": interval_coverage(x, y, 0.9),
        "count": count,
    }


def scores_by_lead(samples: Any, obs: Any, *, lead_axis: int) -> list[dict[str, float]]:
    """:func:`forecast_scores` separately for every lead time.

    Args:
        samples: the ensemble, members on axis 0.
        obs: the observations; NaN elements are excluded.
        lead_axis: the lead-time axis of ``obs`` (negative counts from the end); in ``samples``
            it is axis ``lead_axis + 1``.

    Returns:
        One metrics dict per lead time, in order.

    Shapes:
        samples: (S, ...); obs: (...) with H = obs.shape[lead_axis]; returns a list of H dicts.
    """
    x, y = _ensemble(samples, obs)
    if not -y.ndim <= lead_axis < y.ndim:
        raise ValueError(f"lead_axis {lead_axis} is out of range for obs of shape {y.shape}")
    axis = lead_axis % y.ndim
    return [
        forecast_scores(np.take(x, h, axis=axis + 1), np.take(y, h, axis=axis))
        for h in range(y.shape[axis])
    ]


# --- anomaly detection -----------------------------------------------------------------------
def _segment_bounds(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    edges = np.diff(np.concatenate(([0], labels.astype(np.int8), [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _segment_ids(labels: np.ndarray) -> np.ndarray:
    """For every step, the index of the labelled segment it lies in (meaningless outside)."""
    starts = np.diff(np.concatenate(([0], labels.astype(np.int8)))) == 1
    return np.cumsum(starts) - 1


def anomaly_segments(labels: Any) -> list[tuple[int, int]]:
    """The labelled anomaly segments: maximal runs of 1s.

    Args:
        labels: 0/1 (or boolean) labels.

    Returns:
        ``(start, stop)`` pairs, half-open (``labels[start:stop]`` is all 1), in time order.

    Shapes:
        labels: (T,).
    """
    starts, stops = _segment_bounds(_binary(labels, "labels"))
    return [(int(a), int(b)) for a, b in zip(starts, stops)]


def _adjust(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    ids = _segment_ids(labels)
    hit = np.zeros(int(ids[-1]) + 1 if ids.size else 0, dtype=bool)
    hit[ids[pred & labels]] = True
    adjusted = pred.copy()
    adjusted[labels] = hit[ids[labels]]
    return adjusted


def point_adjust(pred: Any, labels: Any) -> np.ndarray:
    """Point-adjusted predictions (Xu et al. 2018).

    Every point of a labelled segment counts as detected when any point of that segment is
    predicted; predictions outside the segments are left as they are. See the module docstring
    for why this inflates scores (Kim et al. 2022).

    Args:
        pred: 0/1 (or boolean) predictions.
        labels: 0/1 (or boolean) labels.

    Returns:
        The adjusted predictions, boolean (a new array).

    Shapes:
        pred, labels: (T,); returns (T,).
    """
    p = _binary(pred, "pred")
    y = _binary(labels, "labels")
    _same_length(p, y, "pred", "labels")
    return _adjust(p, y)


def _prf(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def precision_recall_f1(pred: Any, labels: Any, *, adjust: bool = False) -> tuple[float, float, float]:
    """Point-wise precision, recall and F1 of binary predictions.

    A ratio whose denominator is zero is reported as 0.0 rather than NaN (precision with no
    positive prediction, recall with no labelled anomaly, F1 when both precision and recall are
    0), so that a detector that never fires scores 0 and averages stay defined.

    Args:
        pred: 0/1 (or boolean) predictions.
        labels: 0/1 (or boolean) labels.
        adjust: apply :func:`point_adjust` first.

    Returns:
        ``(precision, recall, f1)``.

    Shapes:
        pred, labels: (T,).
    """
    p = _binary(pred, "pred")
    y = _binary(labels, "labels")
    _same_length(p, y, "pred", "labels")
    if adjust:
        p = _adjust(p, y)
    tp = int((p & y).sum())
    return _prf(tp, int(p.sum()) - tp, int(y.sum()) - tp)


def _scored(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = _scores(scores)
    y = _binary(labels, "labels")
    _same_length(s, y, "scores", "labels")
    return s, y


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve, as the Mann–Whitney statistic.

    The probability that a random anomalous step scores higher than a random normal one, ties
    counted 1/2 (average ranks), so constant scores give exactly 0.5.

    Args:
        scores: anomaly scores, higher = more anomalous; NaN is an error.
        labels: 0/1 (or boolean) labels.

    Returns:
        The AUROC; a NaN :class:`Score` with its reason when one class is absent.

    Shapes:
        scores, labels: (T,).
    """
    s, y = _scored(scores, labels)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return Score.undefined(f"AUROC needs both classes, got {n_pos} anomalous and {n_neg} normal steps")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    # 1-based average rank of each distinct value: the middle of its block in sorted order.
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return Score(float(u / (n_pos * n_neg)))


def _threshold_curve(
    values: np.ndarray, tp_weight: np.ndarray, fp_weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct thresholds (descending) with the true and false positives of ``values >= thr``."""
    order = np.argsort(-values, kind="stable")
    v = values[order]
    tp = np.cumsum(tp_weight[order])
    fp = np.cumsum(fp_weight[order])
    # The last position of each run of equal values: tied steps cross a threshold together.
    last = np.flatnonzero(np.append(v[1:] != v[:-1], True))
    return v[last], tp[last], fp[last]


def auprc(scores: Any, labels: Any) -> float:
    """Area under the precision–recall curve as average precision.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score values taken as thresholds in
    decreasing order (``pred = scores >= thr``; tied steps enter together), with ``R_0 = 0``:
    scikit-learn's ``average_precision_score``, without interpolation.

    Args:
        scores: anomaly scores, higher = more anomalous; NaN is an error.
        labels: 0/1 (or boolean) labels.

    Returns:
        The average precision; a NaN :class:`Score` with its reason when no step is anomalous.

    Shapes:
        scores, labels: (T,).
    """
    s, y = _scored(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0:
        return Score.undefined("average precision needs at least one anomalous step")
    _, tp, fp = _threshold_curve(s, y.astype(np.float64), (~y).astype(np.float64))
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return Score(float((np.diff(recall, prepend=0.0) * precision).sum()))


def detection_delay(pred: Any, labels: Any) -> tuple[float, int]:
    """How late detections come within the labelled segments.

    A segment is detected when any of its points is predicted (as in point adjustment); its
    delay is the number of steps from its start to its first predicted point. Predictions
    before a segment starts do not count for it.

    Args:
        pred: 0/1 (or boolean) predictions.
        labels: 0/1 (or boolean) labels.

    Returns:
        ``(mean delay over the detected segments, number of detected segments)``; the mean is a
        NaN :class:`Score` with its reason when no segment is detected.

    Shapes:
        pred, labels: (T,).
    """
    p = _binary(pred, "pred")
    y = _binary(labels, "labels")
    _same_length(p, y, "pred", "labels")
    starts, _ = _segment_bounds(y)
    hits = np.flatnonzero(p & y)
    # hits are in time order, so the first occurrence of each segment id is its first hit.
    segment, first = np.unique(_segment_ids(y)[hits], return_index=True)
    if segment.size == 0:
        reason = "no labelled segment" if starts.size == 0 else "no labelled segment was detected"
        return Score.undefined(reason), 0
    delays = hits[first] - starts[segment]
    return Score(float(delays.mean())), int(segment.size)


def best_f1_threshold(scores: Any, labels: Any, *, adjust: bool = False) -> float:
    """The threshold whose predictions ``scores >= thr`` maximise F1 (an oracle, for reporting).

    Exact for both settings, in O(T log T): every distinct score value is tried. Without
    adjustment the true positives at a threshold are the anomalous steps above it; with point
    adjustment (``adjust=True``) a segment contributes its whole length exactly when its
    highest score reaches the threshold, while normal steps count as false positives one by one,
    so the adjusted F1 of every threshold follows from one sort as well. When several
    thresholds reach the best F1 the largest is returned (the fewest alarms).

    Args:
        scores: anomaly scores, higher = more anomalous; NaN is an error.
        labels: 0/1 (or boolean) labels with at least one anomalous step.
        adjust: maximise the point-adjusted F1.

    Returns:
        The threshold, one of the values of ``scores``.

    Raises:
        ValueError: if ``labels`` hold no anomalous step (every threshold then has F1 = 0).

    Shapes:
        scores, labels: (T,).
    """
    s, y = _scored(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("labels hold no anomalous step, so every threshold has F1 = 0")
    if adjust:
        starts, stops = _segment_bounds(y)
        # reduceat over the interleaved bounds gives each segment's maximum at the even
        # positions; the appended value makes a segment that ends at T a valid index.
        bounds = np.stack([starts, stops], axis=1).ravel()
        peaks = np.maximum.reduceat(np.append(s, 0.0), bounds)[::2]
        normal = s[~y]
        values = np.concatenate([normal, peaks])
        tp_weight = np.concatenate([np.zeros(normal.size), (stops - starts).astype(np.float64)])
        fp_weight = np.concatenate([np.ones(normal.size), np.zeros(peaks.size)])
    else:
        values, tp_weight, fp_weight = s, y.astype(np.float64), (~y).astype(np.float64)
    thresholds, tp, fp = _threshold_curve(values, tp_weight, fp_weight)
    f1 = 2.0 * tp / (tp + fp + n_pos)  # 2 TP / (2 TP + FP + FN) with FN = n_pos - TP
    return float(thresholds[int(np.argmax(f1))])


def quantile_threshold(reference_scores: Any, q: float = 0.99) -> float:
    """An unsupervised threshold: the ``q`` quantile of scores on normal (training) data.

    Args:
        reference_scores: anomaly scores of data assumed normal; NaN is an error.
        q: the quantile, in [0, 1] (numpy's default linear interpolation).

    Returns:
        The threshold.

    Shapes:
        reference_scores: any shape, flattened.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must lie in [0, 1], got {q!r}")
    s = _scores(_as_array(reference_scores, "reference_scores").ravel(), "reference_scores")
    if s.size == 0:
        raise ValueError("reference_scores is empty")
    return float(np.quantile(s, q))


def detection_scores(scores: Any, labels: Any, threshold: float) -> dict[str, float]:
    """All anomaly-detection metrics of scores thresholded at ``threshold``.

    Keys: ``precision``, ``recall``, ``f1`` (point-wise), ``precision_pa``, ``recall_pa``,
    ``f1_pa`` (point-adjusted), ``auroc``, ``auprc`` (threshold-free), ``delay`` (mean steps to
    the first detection, see :func:`detection_delay`), ``detected`` and ``segments`` (detected
    and labelled segment counts, ints) and ``threshold``. Predictions are ``scores >= threshold``.

    Args:
        scores: anomaly scores, higher = more anomalous; NaN is an error.
        labels: 0/1 (or boolean) labels.
        threshold: the decision threshold.

    Returns:
        The metrics; undefined values are NaN :class:`Score` objects with their reason.

    Shapes:
        scores, labels: (T,).
    """
    s, y = _scored(scores, labels)
    pred = s >= threshold
    precision, recall, f1 = precision_recall_f1(pred, y)
    precision_pa, recall_pa, f1_pa = precision_recall_f1(pred, y, adjust=True)
    delay, detected = detection_delay(pred, y)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "precision_pa": precision_pa,
        "recall_pa": recall_pa,
        "f1_pa": f1_pa,
        "auroc": auroc(s, y),
        "auprc": auprc(s, y),
        "delay": delay,
        "detected": detected,
        "segments": len(anomaly_segments(y)),
        "threshold": float(threshold),
    }
