"""Evaluation metrics for generated motion and lifted poses, as plain numpy functions.

Three families:

- **text-to-motion**, following the evaluation protocol of Guo et al. 2022 ("Generating Diverse
  and Natural 3D Human Motions from Text", CVPR), as used by T2M, MDM and their successors. They
  act on features from the protocol's pretrained text and motion encoders; this module takes the
  features as given;
- **physical plausibility** on joint positions (metres, y up, module :mod:`.skeleton`'s
  conventions): foot skating, floor penetration and floating, after PhysDiff (Yuan et al. 2023)
  and GMD (Karunratanakul et al. 2023);
- **pose lifting**: MPJPE, P-MPJPE (Procrustes-aligned) and multi-hypothesis MPJPE, as in
  Human3.6M evaluation (Ionescu et al. 2014; Pavllo et al. 2019, VideoPose3D).

Randomised metrics take a ``seed`` and draw from their own ``numpy.random.Generator``, so a
call never touches global random state and the same seed gives the same number.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np

from .skeleton import FOOT_JOINTS

__all__ = [
    "gaussian_statistics",
    "frechet_distance_from_statistics",
    "frechet_distance",
    "diversity",
    "multimodality",
    "r_precision",
    "matching_score",
    "FootSkate",
    "Penetration",
    "foot_skate",
    "penetration",
    "floating",
    "physics_report",
    "mpjpe",
    "p_mpjpe",
    "procrustes_align",
    "multi_hypothesis_mpjpe",
]

_UP = 1  # y up; the horizontal plane is x-z.


# --- text-to-motion (Guo et al. 2022) -----------------------------------------------------------
def gaussian_statistics(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of features, the Gaussian fit FID compares.

    Shapes:
        feats: (N, D) -> (D,), (D, D)
    """
    feats = _features(feats, "feats")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def frechet_distance_from_statistics(mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray,
                                     *, eps: float = 1e-6) -> float:
    """Fréchet distance between two Gaussians (Dowson & Landau 1982; Heusel et al. 2017, FID).

    ``|mu_a - mu_b|^2 + tr(sigma_a + sigma_b - 2 (sigma_a sigma_b)^{1/2})``. As in the reference
    implementation used by Guo et al. 2022, a singular product gets ``eps`` added to both
    diagonals before the square root, and a numerically complex root must have a negligible
    imaginary part, which is then dropped.

    Shapes:
        mu_a, mu_b: (D,); sigma_a, sigma_b: (D, D)

    Raises:
        ValueError: the square root has a significant imaginary component.
    """
    from scipy import linalg

    mu_a, mu_b = np.atleast_1d(np.asarray(mu_a, np.float64)), np.atleast_1d(np.asarray(mu_b, np.float64))
    sigma_a, sigma_b = np.atleast_2d(np.asarray(sigma_a, np.float64)), np.atleast_2d(np.asarray(sigma_b, np.float64))
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape or sigma_a.shape != mu_a.shape * 2:
        raise ValueError(f"statistics disagree in shape: means {mu_a.shape}, {mu_b.shape}; "
                         f"covariances {sigma_a.shape}, {sigma_b.shape}")
    diff = mu_a - mu_b
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma_a @ sigma_b)
    # A singular product (rank-deficient features) has an inaccurate root; the offset regularises it.
    if not np.isfinite(covmean).all() or any(issubclass(w.category, linalg.LinAlgWarning) for w in caught):
        offset = np.eye(sigma_a.shape[0]) * eps
        covmean = linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm of the covariance product has imaginary component "
                             f"{np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.trace(covmean))


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between Gaussian fits of two feature sets (Heusel et al. 2017; Guo et al. 2022, Sec. 5).

    Shapes:
        feats_a: (N_a, D); feats_b: (N_b, D)
    """
    return frechet_distance_from_statistics(*gaussian_statistics(feats_a), *gaussian_statistics(feats_b))


def diversity(feats: np.ndarray, pairs: int = 300, seed: int = 0) -> float:
    """Mean Euclidean distance between randomly paired features (Guo et al. 2022, Sec. 5).

    As in the reference code, two index sets of size ``pairs`` are drawn independently, each
    without replacement, and zipped into pairs; a sample can therefore meet itself, with
    probability ``1/N`` per pair.

    Shapes:
        feats: (N, D) with N >= pairs

    Raises:
        ValueError: fewer than ``pairs`` samples.
    """
    feats = _features(feats, "feats")
    if feats.shape[0] < pairs:
        raise ValueError(f"diversity with {pairs} pairs needs at least {pairs} samples, got {feats.shape[0]}")
    rng = np.random.default_rng(seed)
    first = rng.choice(feats.shape[0], pairs, replace=False)
    second = rng.choice(feats.shape[0], pairs, replace=False)
    return float(np.linalg.norm(feats[first] - feats[second], axis=-1).mean())


def multimodality(feats_per_text: np.ndarray, pairs: int = 10, seed: int = 0) -> float:
    """Mean distance between pairs of motions generated for the same text (Guo et al. 2022, Sec. 5).

    As in the reference code, one set of ``pairs`` index pairs (each side drawn without
    replacement) is shared by all texts, and the distances are averaged over texts and pairs.

    Shapes:
        feats_per_text: (N, K, D), K motions per text, K >= pairs

    Raises:
        ValueError: wrong rank or fewer than ``pairs`` motions per text.
    """
    feats = np.asarray(feats_per_text, np.float64)
    if feats.ndim != 3:
        raise ValueError(f"feats_per_text must be (N, K, D), got shape {feats.shape}")
    if feats.shape[1] < pairs:
        raise ValueError(f"multimodality with {pairs} pairs needs at least {pairs} motions per text, "
                         f"got {feats.shape[1]}")
    rng = np.random.default_rng(seed)
    first = rng.choice(feats.shape[1], pairs, replace=False)
    second = rng.choice(feats.shape[1], pairs, replace=False)
    return float(np.linalg.norm(feats[:, first] - feats[:, second], axis=-1).mean())


def r_precision(text_feats: np.ndarray, motion_feats: np.ndarray, top_k: int = 3, batch: int = 32) -> np.ndarray:
    """Top-1..top-k retrieval accuracy of matched text/motion pairs (Guo et al. 2022, Sec. 5).

    The pairs are cut into consecutive batches of ``batch`` (the incomplete last one dropped, as
    the reference data loader does); within a batch each text ranks the batch's motions by
    Euclidean distance, and counts a hit at ``k`` when its own motion is among the ``k`` nearest.
    Ties are broken by index (a stable sort). Accuracies are averaged over batches; chance level
    is ``k / batch``.

    Shapes:
        text_feats, motion_feats: (N, D), row i of each a matched pair -> (top_k,)

    Raises:
        ValueError: mismatched shapes, ``top_k > batch``, or fewer than ``batch`` pairs.
    """
    text, motion = _pairs(text_feats, motion_feats)
    if not 1 <= top_k <= batch:
        raise ValueError(f"top_k must be in [1, batch={batch}], got {top_k}")
    n_batches = text.shape[0] // batch
    if n_batches == 0:
        raise ValueError(f"r_precision needs at least one full batch of {batch} pairs, got {text.shape[0]}")
    text = text[:n_batches * batch].reshape(n_batches, batch, -1)
    motion = motion[:n_batches * batch].reshape(n_batches, batch, -1)
    dist = np.linalg.norm(text[:, :, None] - motion[:, None, :], axis=-1)  # (B, text, motion)
    order = np.argsort(dist, axis=-1, kind="stable")
    rank = np.argmax(order == np.arange(batch)[None, :, None], axis=-1)  # own motion's place, 0 = nearest
    hits = rank[..., None] < np.arange(1, top_k + 1)  # (B, batch, top_k)
    return hits.mean(axis=(0, 1))


def matching_score(text_feats: np.ndarray, motion_feats: np.ndarray) -> float:
    """Mean Euclidean distance between matched text and motion features (Guo et al. 2022, Sec. 5).

    Shapes:
        text_feats, motion_feats: (N, D), row i of each a matched pair
    """
    text, motion = _pairs(text_feats, motion_feats)
    return float(np.linalg.norm(text - motion, axis=-1).mean())


def _features(feats: np.ndarray, name: str) -> np.ndarray:
    feats = np.asarray(feats, np.float64)
    if feats.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {feats.shape}")
    return feats


def _pairs(text_feats: np.ndarray, motion_feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    text, motion = _features(text_feats, "text_feats"), _features(motion_feats, "motion_feats")
    if text.shape != motion.shape:
        raise ValueError(f"text and motion features must match in shape, got {text.shape} and {motion.shape}")
    return text, motion


# --- physical plausibility ----------------------------------------------------------------------
class FootSkate(NamedTuple):
    """Foot-skating statistics; see :func:`foot_skate`."""

    ratio: float  #: fraction of frame transitions in which some contact joint skates
    speed: float  #: contact-weighted mean horizontal speed of the contact joints, m/s


class Penetration(NamedTuple):
    """Floor-penetration depth in metres; see :func:`penetration`."""

    mean: float  #: mean over frames of the deepest joint's depth below the floor (0 when above)
    max: float  #: the largest such depth


def foot_skate(positions: np.ndarray, fps: float = 20, height_threshold: float = 0.05, *,
               speed_threshold: float = 0.5, floor: float = 0.0,
               joints: Sequence[int] = FOOT_JOINTS) -> FootSkate:
    """Foot skating: feet that slide while touching the ground (after GMD and PhysDiff).

    For each foot joint ``j`` and each transition ``t -> t+1`` (``T - 1`` of them):

    - the joint is *in contact* when its height above ``floor`` is below ``height_threshold`` at
      both ``t`` and ``t + 1`` (GMD, Karunratanakul et al. 2023);
    - its *horizontal speed* is ``fps * |xz[t+1] - xz[t]|`` in m/s;
    - it *skates* when in contact with speed above ``speed_threshold``; the default 0.5 m/s is
      GMD's (2.5 cm per frame at 20 fps). GMD's extra 5-frame smoothing of the speed is left out.

    Returns:
        ``ratio``: the fraction of transitions in which any joint skates (GMD's skating ratio);
        ``speed``: ``sum(contact * speed) / sum(contact)`` over joints and transitions, the mean
        sliding speed while in contact (PhysDiff's skate measure with a hard contact weight;
        independent of ``speed_threshold``), 0 when nothing touches the ground.

    Shapes:
        positions: (T, J, 3) with T >= 2

    Raises:
        ValueError: fewer than two frames or a wrong shape.
    """
    positions = _positions(positions)
    if positions.shape[0] < 2:
        raise ValueError(f"foot_skate needs at least two frames, got {positions.shape[0]}")
    feet = positions[:, list(joints)]
    low = feet[..., _UP] - floor < height_threshold
    contact = low[:-1] & low[1:]  # (T-1, F)
    step = np.delete(feet[1:] - feet[:-1], _UP, axis=-1)
    speed = np.linalg.norm(step, axis=-1) * fps
    skating = (contact & (speed > speed_threshold)).any(axis=-1)
    touching = contact.sum()
    mean_speed = float((speed * contact).sum() / touching) if touching else 0.0
    return FootSkate(ratio=float(skating.mean()), speed=mean_speed)


def penetration(positions: np.ndarray, floor: float = 0.0) -> Penetration:
    """Depth of the body below the floor (PhysDiff's "Penetrate", on joints instead of vertices).

    Per frame, the depth is ``max(floor - min_j y_j, 0)``: how far the lowest joint is below
    the floor. ``mean`` averages it over all frames (frames above the floor count as 0), ``max``
    is the worst frame.

    Shapes:
        positions: (T, J, 3)
    """
    depth = np.maximum(floor - _positions(positions)[..., _UP].min(axis=-1), 0.0)
    return Penetration(mean=float(depth.mean()), max=float(depth.max()))


def floating(positions: np.ndarray, floor: float = 0.0, tolerance: float = 0.005, *,
             joints: Sequence[int] = FOOT_JOINTS) -> float:
    """Mean height of the body above the floor while no foot touches it (after PhysDiff's "Float").

    A frame *floats* when every foot joint is more than ``tolerance`` above ``floor``; its
    floating height is the lowest joint's height above the floor (any joint, clipped at 0).
    Returns the mean floating height over floating frames, 0 when no frame floats. The mean is
    over floating frames only, so a brief hop and a sustained hover of the same height score
    alike; a hand on the floor with both feet up scores about 0 for that frame.

    Shapes:
        positions: (T, J, 3)
    """
    heights = _positions(positions)[..., _UP] - floor
    airborne = (heights[:, list(joints)] > tolerance).all(axis=-1)
    if not airborne.any():
        return 0.0
    return float(np.maximum(heights[airborne].min(axis=-1), 0.0).mean())


def physics_report(positions: np.ndarray, fps: float = 20, floor: float = 0.0) -> dict[str, float]:
    """All physical-plausibility metrics with their default thresholds, as a flat dict of floats.

    Keys: ``skate_ratio``, ``skate_speed`` (:func:`foot_skate`), ``penetration_mean``,
    ``penetration_max`` (:func:`penetration`), ``floating`` (:func:`floating`).

    Shapes:
        positions: (T, J, 3)
    """
    skate = foot_skate(positions, fps, floor=floor)
    depth = penetration(positions, floor)
    return {
        "skate_ratio": skate.ratio,
        "skate_speed": skate.speed,
        "penetration_mean": depth.mean,
        "penetration_max": depth.max,
        "floating": floating(positions, floor),
    }


def _positions(positions: np.ndarray) -> np.ndarray:
    positions = np.asarray(positions, np.float64)
    if positions.ndim != 3 or positions.shape[-1] != 3:
        raise ValueError(f"positions must be (T, J, 3), got shape {positions.shape}")
    return positions


# --- pose lifting -------------------------------------------------------------------------------
def mpjpe(pred: np.ndarray, target: np.ndarray, *, root_relative: bool = False, root: int = 0) -> float:
    """Mean per-joint position error: mean Euclidean distance over all joints and frames.

    With ``root_relative``, both poses are first translated so that joint ``root`` is at the
    origin (Protocol 1 of Human3.6M, Ionescu et al. 2014).

    Shapes:
        pred, target: (..., J, 3)
    """
    pred, target = _poses(pred, target)
    if root_relative:
        pred = pred - pred[..., root:root + 1, :]
        target = target - target[..., root:root + 1, :]
    return float(np.linalg.norm(pred - target, axis=-1).mean())


def procrustes_align(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``pred`` moved onto ``target`` by the best similarity transform, pose by pose.

    Scale ``s``, rotation ``R`` and translation ``t`` minimise ``sum_j |s R p_j + t - q_j|^2``
    (Umeyama 1991). ``R`` is a proper rotation: when the optimal orthogonal map is a reflection,
    the smallest singular direction is flipped (Umeyama's ``S = diag(1, 1, -1)``), as in
    VideoPose3D's ``p_mpjpe``, so a mirrored pose is not aligned away.

    Shapes:
        pred, target: (..., J, 3) -> (..., J, 3)
    """
    pred, target = _poses(pred, target)
    mu_p, mu_q = pred.mean(axis=-2, keepdims=True), target.mean(axis=-2, keepdims=True)
    p, q = pred - mu_p, target - mu_q
    cov = np.swapaxes(q, -1, -2) @ p  # sum_j q_j p_j^T
    u, sv, vh = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vh))
    d = np.where(d == 0, 1.0, d)
    signs = np.stack((np.ones_like(d), np.ones_like(d), d), axis=-1)
    rotation = (u * signs[..., None, :]) @ vh
    var_p = (p ** 2).sum(axis=(-2, -1))
    scale = (sv * signs).sum(axis=-1) / np.where(var_p > 0, var_p, 1.0)
    return scale[..., None, None] * p @ np.swapaxes(rotation, -1, -2) + mu_q


def p_mpjpe(pred: np.ndarray, target: np.ndarray) -> float:
    """MPJPE after per-pose Procrustes alignment with scale (Protocol 2 of Human3.6M).

    See :func:`procrustes_align` for the alignment, which keeps reflections out.

    Shapes:
        pred, target: (..., J, 3)
    """
    return mpjpe(procrustes_align(pred, target), target)


def multi_hypothesis_mpjpe(hypotheses: np.ndarray, target: np.ndarray,
                           mode: Literal["mean", "best", "aggregate"] = "mean", *,
                           root_relative: bool = False, root: int = 0) -> float:
    """MPJPE of a set of pose hypotheses, as reported by probabilistic lifters.

    Modes (the names of Li & Lee 2019 and D3DP, Shan et al. 2023, in brackets):

    - ``"mean"``: the per-frame MPJPE averaged over hypotheses and frames, the expected error
      of one hypothesis drawn at random;
    - ``"best"``: per frame, the smallest MPJPE among the hypotheses, averaged over frames
      (oracle, "P-Best"); never above ``"mean"``;
    - ``"aggregate"``: the MPJPE of the hypotheses' mean pose ("P-Agg"); never above ``"mean"``
      (the norm is convex) but not ordered against ``"best"``.

    Shapes:
        hypotheses: (H, T, J, 3); target: (T, J, 3)

    Raises:
        ValueError: unknown mode or shapes that disagree.
    """
    modes = ("mean", "best", "aggregate")
    if mode not in modes:
        raise ValueError(f"mode must be one of {', '.join(map(repr, modes))}; got {mode!r}")
    hypotheses, target = np.asarray(hypotheses, np.float64), np.asarray(target, np.float64)
    if hypotheses.ndim != 4 or hypotheses.shape[1:] != target.shape or target.shape[-1] != 3:
        raise ValueError(f"hypotheses must be (H, T, J, 3) and target (T, J, 3); "
                         f"got {hypotheses.shape} and {target.shape}")
    if root_relative:
        hypotheses = hypotheses - hypotheses[..., root:root + 1, :]
        target = target - target[..., root:root + 1, :]
    if mode == "aggregate":
        return mpjpe(hypotheses.mean(axis=0), target)
    per_frame = np.linalg.norm(hypotheses - target, axis=-1).mean(axis=-1)  # (H, T)
    return float(per_frame.min(axis=0).mean() if mode == "best" else per_frame.mean())


def _poses(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if pred.shape != target.shape or pred.ndim < 2 or pred.shape[-1] != 3:
        raise ValueError(f"pred and target must both be (..., J, 3), got {pred.shape} and {target.shape}")
    return pred, target
