"""Motion metrics, checked against values worked out by hand.

Feature metrics use samples whose empirical mean and covariance are set exactly, so FID meets
its closed form; physics metrics use a rigid T-pose moved in known ways; lifting metrics use
poses moved by known similarity transforms.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from polydiff_motion.metrics import (
    FootSkate,
    diversity,
    floating,
    foot_skate,
    frechet_distance,
    frechet_distance_from_statistics,
    matching_score,
    mpjpe,
    multi_hypothesis_mpjpe,
    multimodality,
    p_mpjpe,
    penetration,
    physics_report,
    procrustes_align,
    r_precision,
)
from polydiff_motion.skeleton import SMPL22


def _with_statistics(rng: np.random.Generator, n: int, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """n samples whose sample mean and unbiased covariance are exactly ``mean`` and ``cov``."""
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(axis=0)
    white = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return white @ np.linalg.cholesky(cov).T + mean


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    x, y, z = axis / np.linalg.norm(axis)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def _standing(frames: int) -> np.ndarray:
    """(frames, 22, 3) rest pose with the lowest joint (the toes) exactly on the floor."""
    rest = SMPL22.rest_positions()
    rest = rest - np.array([0.0, rest[:, 1].min(), 0.0])
    return np.repeat(rest[None], frames, axis=0)


# --- text-to-motion -----------------------------------------------------------------------------
def test_fid_of_a_sample_with_itself_is_zero():
    feats = np.random.default_rng(0).standard_normal((500, 16))
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)


def test_fid_of_diagonal_gaussians_matches_closed_form():
    rng = np.random.default_rng(1)
    mean_a, mean_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.0])
    var_a, var_b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    a = _with_statistics(rng, 400, mean_a, np.diag(var_a))
    b = _with_statistics(rng, 300, mean_b, np.diag(var_b))
    # |dm|^2 = 1 + 4 + 0; commuting covariances: sum (sqrt(va) - sqrt(vb))^2 = 1 + 1 + 4.
    assert frechet_distance(a, b) == pytest.approx(11.0, rel=1e-9)


def test_fid_of_non_commuting_gaussians_matches_closed_form():
    rng = np.random.default_rng(2)
    cov_a, cov_b = np.array([[2.0, 1.0], [1.0, 2.0]]), np.array([[3.0, 0.0], [0.0, 1.0]])
    a = _with_statistics(rng, 200, np.zeros(2), cov_a)
    b = _with_statistics(rng, 200, np.array([3.0, 4.0]), cov_b)
    # For 2x2 M with positive eigenvalues, tr M^{1/2} = sqrt(tr M + 2 sqrt(det M)).
    product = cov_a @ cov_b  # [[6, 1], [3, 2]]: trace 8, det 9
    tr_sqrt = math.sqrt(8 + 2 * 3)
    assert np.trace(product) == 8 and np.linalg.det(product) == pytest.approx(9)
    expected = 25 + 4 + 4 - 2 * tr_sqrt
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-9)


def test_fid_survives_singular_covariances():
    # Rank-deficient features (a constant coordinate) make sqrtm of the product singular.
    rng = np.random.default_rng(3)
    a = np.concatenate([rng.standard_normal((100, 2)), np.zeros((100, 1))], axis=1)
    # Equal covariances, means 1 apart in each of 3 coordinates: 3, up to the eps offset.
    assert frechet_distance(a, a + 1.0) == pytest.approx(3.0, abs=1e-4)
    assert frechet_distance_from_statistics(np.zeros(2), np.zeros((2, 2)), np.ones(2), np.zeros((2, 2))) \
        == pytest.approx(2.0, abs=1e-5)


def test_diversity_of_an_integer_lattice_has_the_known_expectation():
    # With pairs == N both index draws are permutations, so each pair is two independent uniform
    # sites of {0..N-1}: E|i - j| = (N^2 - 1) / (3N), times the lattice spacing.
    n, spacing = 50, 0.5
    feats = spacing * np.arange(n, dtype=float)[:, None] * np.array([[0.6, 0.8]])
    values = [diversity(feats, pairs=n, seed=s) for s in range(400)]
    assert np.mean(values) == pytest.approx(spacing * (n * n - 1) / (3 * n), rel=0.02)


def test_diversity_of_equidistant_points_counts_only_distinct_pairs():
    # Scaled basis vectors are all sqrt(2) * a apart; a pair can only be 0 (self) or sqrt(2) * a.
    n, a, pairs = 2000, 3.0, 300
    feats = a * np.eye(n)
    value = diversity(feats, pairs=pairs, seed=0)
    distinct = value / (math.sqrt(2) * a) * pairs
    assert distinct == pytest.approx(round(distinct)) and pairs - 5 <= round(distinct) <= pairs
    assert diversity(feats, pairs=pairs, seed=0) == value
    assert diversity(2 * feats + 7, pairs=pairs, seed=0) == pytest.approx(2 * value)
    with pytest.raises(ValueError, match="at least 300"):
        diversity(feats[:10])


def test_multimodality_is_the_within_text_spread():
    # Text i's K motions lie on a line with spacing i; all texts share one set of pairs, so the
    # score is (mean i) * (mean |first - second|), and both pair draws are permutations.
    n, k = 4, 10
    base = np.arange(k, dtype=float)[None, :, None] * np.arange(1, n + 1, dtype=float)[:, None, None]
    feats = np.concatenate([base, np.zeros((n, k, 2))], axis=-1)
    scores = [multimodality(feats, pairs=k, seed=s) for s in range(300)]
    assert np.mean(scores) == pytest.approx(2.5 * (k * k - 1) / (3 * k), rel=0.03)
    assert multimodality(np.repeat(feats[:, :1], k, axis=1), pairs=k) == 0.0


def test_r_precision_is_one_for_identical_features():
    feats = np.random.default_rng(4).standard_normal((100, 8))
    np.testing.assert_array_equal(r_precision(feats, feats), [1.0, 1.0, 1.0])


def test_r_precision_is_chance_for_independent_features():
    rng = np.random.default_rng(5)
    text, motion = rng.standard_normal((32 * 600, 8)), rng.standard_normal((32 * 600, 8))
    np.testing.assert_allclose(r_precision(text, motion), np.array([1, 2, 3]) / 32, atol=0.008)


def test_r_precision_ranks_within_a_batch_and_drops_the_last():
    # On a line, text i sits at i. With motion i at i + 0.4 each text's own motion is nearest
    # (0.4 against 0.6 for motion i - 1); at i + 0.6 motion i - 1 (0.4 away) beats its own, except
    # for text 0, so top-1 is 1/32 and top-2 is 1. 37 pairs make one batch; the 5 left over drop.
    batch = 32
    line = np.arange(batch + 5, dtype=float)[:, None]
    np.testing.assert_array_equal(r_precision(line, line + 0.4, top_k=1), [1.0])
    top = r_precision(line, line + 0.6, top_k=2)
    assert top[0] == pytest.approx(1 / batch)
    assert top[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="full batch"):
        r_precision(line[:10], line[:10])


def test_matching_score_is_mean_pair_distance():
    text = np.zeros((4, 2))
    motion = np.array([[3.0, 4.0], [0.0, 1.0], [0.0, 0.0], [6.0, 8.0]])
    assert matching_score(text, motion) == pytest.approx((5 + 1 + 0 + 10) / 4)


# --- physical plausibility ----------------------------------------------------------------------
def test_foot_skate_is_zero_for_a_planted_foot():
    assert foot_skate(_standing(30)) == FootSkate(0.0, 0.0)


def test_foot_skate_measures_the_exact_sliding_speed():
    fps, velocity = 20, np.array([0.6, 0.0, 0.8])  # 1 m/s, over the 0.5 m/s threshold
    frames = _standing(21) + np.arange(21)[:, None, None] / fps * velocity
    skate = foot_skate(frames, fps)
    assert skate.ratio == pytest.approx(1.0)
    assert skate.speed == pytest.approx(1.0)
    slow = foot_skate(_standing(21) + np.arange(21)[:, None, None] / fps * 0.2 * velocity, fps)
    assert slow.ratio == 0.0 and slow.speed == pytest.approx(0.2)


def test_foot_skate_counts_only_transitions_in_contact():
    fps = 30
    frames = _standing(11) + np.arange(11)[:, None, None] / fps * np.array([1.0, 0.0, 0.0])
    frames[6:, :, 1] += 0.2  # lifted from frame 6: transitions 0..4 in contact, 5..9 not
    skate = foot_skate(frames, fps)
    assert skate.ratio == pytest.approx(5 / 10)
    assert skate.speed == pytest.approx(1.0)
    assert foot_skate(frames[6:], fps) == FootSkate(0.0, 0.0)


def test_penetration_of_a_pose_below_the_floor():
    frames = _standing(10)
    frames[:4, :, 1] -= 0.03
    depth = penetration(frames)
    assert depth.mean == pytest.approx(0.03 * 4 / 10)
    assert depth.max == pytest.approx(0.03)
    assert penetration(_standing(5)) == (0.0, 0.0)
    assert penetration(_standing(5) - np.array([0, 0.03, 0])).mean == pytest.approx(0.03)


def test_floating_of_a_lifted_pose():
    frames = _standing(10)
    frames[:3, :, 1] += 0.10
    assert floating(frames) == pytest.approx(0.10)
    assert floating(_standing(10)) == 0.0
    assert floating(_standing(10) + np.array([0, 0.004, 0])) == 0.0  # within tolerance


def test_physics_report_collects_everything():
    frames = _standing(10) - np.array([0, 0.03, 0])
    report = physics_report(frames, fps=20)
    assert report == pytest.approx({"skate_ratio": 0.0, "skate_speed": 0.0, "penetration_mean": 0.03,
                                    "penetration_max": 0.03, "floating": 0.0})


# --- pose lifting -------------------------------------------------------------------------------
def test_mpjpe_of_a_translated_pose_is_the_translation_length():
    target = np.random.default_rng(6).standard_normal((5, 22, 3))
    shift = np.array([0.03, -0.04, 0.12])  # length 0.13
    assert mpjpe(target + shift, target) == pytest.approx(0.13)
    assert mpjpe(target + shift, target, root_relative=True) == pytest.approx(0.0, abs=1e-12)


def test_p_mpjpe_aligns_similarity_transforms_away():
    rng = np.random.default_rng(7)
    target = rng.standard_normal((6, 17, 3))
    pred = np.stack([
        (1.5 + 0.2 * t) * target[t] @ _rotation(rng.standard_normal(3), 0.5 + t).T + rng.standard_normal(3)
        for t in range(6)
    ])
    assert mpjpe(pred, target) > 0.5
    assert p_mpjpe(pred, target) == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(procrustes_align(pred, target), target, atol=1e-9)


def test_p_mpjpe_does_not_undo_a_reflection():
    target = np.random.default_rng(8).standard_normal((4, 22, 3))
    mirrored = target * np.array([-1.0, 1.0, 1.0])
    error = p_mpjpe(mirrored, target)
    assert error > 0.3
    # An orthogonal fit that allowed reflections would reach 0: the determinant fix is what holds.
    assert p_mpjpe(mirrored @ _rotation(np.array([0.0, 1.0, 0.0]), 1.0).T, target) == pytest.approx(error)


def test_p_mpjpe_never_exceeds_mpjpe():
    rng = np.random.default_rng(9)
    target = rng.standard_normal((8, 22, 3))
    pred = target + 0.1 * rng.standard_normal((8, 22, 3))
    assert p_mpjpe(pred, target) <= mpjpe(pred, target)


def test_multi_hypothesis_modes():
    rng = np.random.default_rng(10)
    target = rng.standard_normal((5, 22, 3))
    shifts = np.array([[0.1, 0, 0], [0, 0.2, 0], [0, 0, 0.3]])  # hypothesis h off by shift h everywhere
    hypotheses = target[None] + shifts[:, None, None, :]
    assert multi_hypothesis_mpjpe(hypotheses, target, "mean") == pytest.approx(0.2)
    assert multi_hypothesis_mpjpe(hypotheses, target, "best") == pytest.approx(0.1)
    assert multi_hypothesis_mpjpe(hypotheses, target, "aggregate") == pytest.approx(
        np.linalg.norm(shifts.mean(axis=0)))
    # Per-frame best: frame-dependent winner.
    noisy = target[None] + 0.1 * rng.standard_normal((4, 5, 22, 3))
    best = multi_hypothesis_mpjpe(noisy, target, "best")
    mean = multi_hypothesis_mpjpe(noisy, target, "mean")
    assert best < mean
    assert best < min(mpjpe(h, target) for h in noisy) + 1e-12
    with pytest.raises(ValueError, match="'mean', 'best', 'aggregate'"):
        multi_hypothesis_mpjpe(noisy, target, "median")  # type: ignore[arg-type]
