"""Point-cloud metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scipy")

from polydiff_3d.metrics import chamfer_distance, emd, pairwise_distances, set_metrics  # noqa: E402


def test_chamfer_by_hand():
    a = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    b = np.array([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 0.0, 1.0]])
    # a -> b: 0 and 1 (to (1,0,1)); b -> a: 0, 4, 1.
    assert chamfer_distance(a, b) == pytest.approx((0 + 1) / 2 + (0 + 4 + 1) / 3)
    assert chamfer_distance(a, a) == 0.0


def test_emd_is_the_optimal_matching_not_the_greedy_one():
    a = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    b = np.array([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    # Greedy nearest (a1->b0 first) forces a0->b1 (2): mean 1; the optimum a0->b0, a1->b1 is also 1.
    assert emd(a, b) == pytest.approx(1.0)
    c = np.array([[0.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    d = np.array([[0.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    assert emd(c, d) == pytest.approx(0.0)  # a permutation costs nothing
    with pytest.raises(ValueError, match="equal size"):
        emd(a, b[:1])


def test_bad_clouds_are_named():
    with pytest.raises(ValueError, match=r"a must have shape \(N >= 1, 3\)"):
        chamfer_distance(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="b contains NaN"):
        chamfer_distance(np.zeros((3, 3)), np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="unknown metric 'l1'"):
        pairwise_distances([np.zeros((2, 3))], [np.zeros((2, 3))], "l1")


def _clouds(centres, seed):
    rng = np.random.default_rng(seed)
    return [c + 0.01 * rng.normal(size=(16, 3)) for c in centres]


@pytest.mark.parametrize("metric", ["chamfer", "emd"])
def test_set_metrics_of_a_copy_and_of_a_collapsed_set(metric):
    centres = [np.array([x, 0.0, 0.0]) for x in (0.0, 1.0, 2.0, 3.0)]
    reference = _clouds(centres, 0)
    # Samples of the same distribution: full coverage, 1-NNA near 50 % (each generated cloud's
    # nearest neighbour is its twin in the reference set, and the other way round: 0 % here).
    twins = _clouds(centres, 1)
    good = set_metrics(twins, reference, metric)
    assert good["cov"] == 1.0 and good["1-nna"] == 0.0 and good["mmd"] < 0.05
    # A collapsed generator (every cloud at x = 0.4): all nearest the first reference (coverage
    # 1/4); the generated clouds are each other's nearest (4 right), the references at 0 and 1
    # have a generated cloud nearest (wrong), those at 2 and 3 a reference (right): 6/8.
    collapsed = _clouds([np.array([0.4, 0.0, 0.0])] * 4, 2)
    bad = set_metrics(collapsed, reference, metric)
    assert bad["cov"] == 0.25 and bad["1-nna"] == pytest.approx(6 / 8) and bad["mmd"] > 10 * good["mmd"]
    with pytest.raises(ValueError, match="at least two"):
        set_metrics(reference[:1], reference, metric)
