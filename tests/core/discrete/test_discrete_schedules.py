"""Categorical transition schedules, checked against explicit matrices and Bayes' rule by hand."""

from __future__ import annotations

import math

import pytest
import torch

from polydiff.discrete import (
    AbsorbingTransitions,
    MarginalTransitions,
    UniformTransitions,
    draw_classes,
)

SCHEDULES = {
    "uniform": lambda: UniformTransitions(4),
    "marginal": lambda: MarginalTransitions([0.5, 0.3, 0.2, 0.0]),
    "absorbing-last": lambda: AbsorbingTransitions(4, mask_index=3),
    "absorbing-first": lambda: AbsorbingTransitions(4, mask_index=0),
}


@pytest.fixture(params=list(SCHEDULES), ids=list(SCHEDULES))
def schedule(request):
    return SCHEDULES[request.param]()


def random_probs(*shape: int, seed: int = 0) -> torch.Tensor:
    p = torch.rand(*shape, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return p / p.sum(-1, keepdim=True)


def explicit_matrix(keep: float, limit: torch.Tensor) -> torch.Tensor:
    """``keep I + (1 - keep) 1 mᵀ`` built entry by entry, independently of the code under test."""
    k = limit.numel()
    return torch.tensor(
        [[keep * (i == j) + (1 - keep) * float(limit[j]) for j in range(k)] for i in range(k)],
        dtype=torch.float64,
    )


# --- alpha_bar and the transition matrices ----------------------------------------------------


def test_alpha_bar_ends_are_exact_and_it_decreases(schedule):
    assert schedule.alpha_bar(0.0).item() == 1.0
    assert schedule.alpha_bar(1.0).item() == 0.0
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    ab = schedule.alpha_bar(t)
    assert (ab[1:] < ab[:-1]).all()
    # the cosine formula in the interior, by hand at t = 0.5
    s = 0.008
    expected = math.cos(math.pi / 2 * (0.5 + s) / (1 + s)) ** 2 / math.cos(math.pi / 2 * s / (1 + s)) ** 2
    assert schedule.alpha_bar(0.5).item() == pytest.approx(expected, rel=1e-12)


def test_transition_rows_sum_to_one(schedule):
    t = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    q_bar = schedule.cumulative_transition(t)
    assert q_bar.shape == (5, 4, 4)
    torch.testing.assert_close(q_bar.sum(-1), torch.ones(5, 4, dtype=torch.float64))
    assert (q_bar >= 0).all()
    q_step = schedule.step_transition(t[1:], t[:-1])
    torch.testing.assert_close(q_step.sum(-1), torch.ones(4, 4, dtype=torch.float64))


def test_cumulative_matrix_matches_explicit_construction(schedule):
    for t in (0.0, 0.3, 1.0):
        expected = explicit_matrix(schedule.alpha_bar(t).item(), schedule.limit)
        torch.testing.assert_close(schedule.cumulative_transition(t), expected)


@pytest.mark.parametrize("s, t", [(0.0, 0.4), (0.2, 0.5), (0.5, 0.99), (0.7, 1.0), (0.3, 0.3)])
def test_chapman_kolmogorov(schedule, s, t):
    composed = schedule.cumulative_transition(s) @ schedule.step_transition(t, s)
    torch.testing.assert_close(composed, schedule.cumulative_transition(t), rtol=0, atol=1e-12)


# --- marginals, corruption and the prior --------------------------------------------------------


def test_marginal_probs_reaches_the_limit_and_starts_clean(schedule):
    p0 = random_probs(6)
    torch.testing.assert_close(schedule.marginal_probs(p0, 1.0), schedule.limit.expand(6, 4))
    torch.testing.assert_close(schedule.marginal_probs(p0, 0.0), p0)
    # and in between it is the row vector p0 times Q̄_t, per sample
    t = torch.linspace(0.1, 0.9, 6, dtype=torch.float64)
    expected = torch.einsum("bi,bij->bj", p0, schedule.cumulative_transition(t))
    torch.testing.assert_close(schedule.marginal_probs(p0, t), expected)


def test_corrupt_frequencies_match_marginal_probs(schedule):
    """Pearson chi-square per clean class, 3 degrees of freedom at most: 16.27 is the 0.1% point."""
    n_per_class, t = 10_000, 0.6
    x0 = torch.arange(4).repeat_interleave(n_per_class)
    xt = schedule.corrupt(x0, torch.full((x0.numel(),), t), generator=torch.Generator().manual_seed(0))
    for c in range(4):
        counts = torch.bincount(xt[x0 == c], minlength=4).double()
        expected = n_per_class * schedule.marginal_probs(torch.eye(4, dtype=torch.float64)[c], t)
        assert (counts[expected == 0] == 0).all(), "a class of probability zero was drawn"
        live = expected > 0
        chi2 = (((counts - expected)[live]) ** 2 / expected[live]).sum().item()
        assert chi2 < 16.27, f"class {c}: chi-square {chi2:.2f}, counts {counts}, expected {expected}"


def test_corrupt_time_per_sample_and_per_element():
    absorbing = AbsorbingTransitions(4, mask_index=3)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, 3, (2, 5, 5), generator=g)
    # (B,) broadcast over the trailing dims: sample 0 is clean, sample 1 fully masked
    xt = absorbing.corrupt(x0, torch.tensor([0.0, 1.0]), generator=g)
    assert torch.equal(xt[0], x0[0])
    assert (xt[1] == 3).all()
    # per element with x0's shape
    t = (torch.arange(50).reshape(2, 5, 5) % 2).float()
    xt = absorbing.corrupt(x0, t, generator=g)
    assert torch.equal(xt[t == 0], x0[t == 0])
    assert (xt[t == 1] == 3).all()


def test_prior_sample_follows_the_limit(schedule):
    x = schedule.prior_sample((20_000,), generator=torch.Generator().manual_seed(2))
    assert x.dtype == torch.long and x.shape == (20_000,)
    freq = torch.bincount(x, minlength=4).double() / x.numel()
    limit = schedule.limit
    assert (freq[limit == 0] == 0).all()
    assert (freq - limit).abs().max() < 0.015


def test_randomness_comes_only_from_the_generator(schedule):
    def run():
        g = torch.Generator().manual_seed(5)
        x0 = torch.randint(0, 4, (64,), generator=g)
        return schedule.corrupt(x0, 0.5, generator=g), schedule.prior_sample((64,), generator=g)

    torch.manual_seed(0)
    first = run()
    torch.manual_seed(1)
    second = run()
    assert all(torch.equal(a, b) for a, b in zip(first, second))


# --- the posterior ---------------------------------------------------------------------------------


def brute_force_posterior(schedule, x_t: int, p0: torch.Tensor, t: float, s: float) -> torch.Tensor:
    """``Σ_{x0} p̂(x0) q(x_s | x_t, x0)`` over explicit matrices, dropping impossible x0, renormalised."""
    limit, ab = schedule.limit, schedule.alpha_bar
    q_t = explicit_matrix(ab(t).item(), limit)
    q_s = explicit_matrix(ab(s).item(), limit)
    q_ts = explicit_matrix(ab(t).item() / ab(s).item(), limit)
    k = limit.numel()
    out = torch.zeros(k, dtype=torch.float64)
    for x0 in range(k):
        if q_t[x0, x_t] == 0:
            continue  # this clean class cannot have produced x_t
        for x_s in range(k):
            out[x_s] += p0[x0] * q_ts[x_s, x_t] * q_s[x0, x_s] / q_t[x0, x_t]
    return out / out.sum()


@pytest.mark.parametrize("t, s", [(0.7, 0.3), (1.0, 0.5), (0.4, 0.0), (0.2, 0.19)])
def test_posterior_matches_brute_force_bayes(schedule, t, s):
    p0 = random_probs(4, seed=3)
    p0[1, 2] = 0.0  # a class the prediction rules out
    x_t = torch.arange(4)  # every value of x_t, one per row
    got = schedule.posterior_probs(x_t, p0, t, s)
    for row in range(4):
        if (p0[row] * (schedule.cumulative_transition(t)[:, row] > 0)).sum() == 0:
            continue  # no consistent mass: covered by the fallback test
        torch.testing.assert_close(got[row], brute_force_posterior(schedule, row, p0[row], t, s))


def test_posterior_per_sample_times_match_scalar_times(schedule):
    p0 = random_probs(3, 5)
    x_t = schedule.prior_sample((3, 5), generator=torch.Generator().manual_seed(0))
    scalar = schedule.posterior_probs(x_t, p0, 0.6, 0.2)
    per_sample = schedule.posterior_probs(x_t, p0, torch.full((3,), 0.6), torch.full((3,), 0.2))
    torch.testing.assert_close(per_sample, scalar, rtol=1e-6, atol=1e-6)  # float32 times


def test_posterior_at_zero_is_the_prediction_for_uniform_noise():
    uniform = UniformTransitions(3)
    p0 = torch.tensor([[0.2, 0.5, 0.3], [0.0, 0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(uniform.posterior_probs(torch.tensor([0, 1]), p0, 0.5, 0.0), p0)


def test_posterior_is_finite_when_the_prediction_contradicts_x_t():
    absorbing = AbsorbingTransitions(3, mask_index=2)
    # x_t = 0 is an unmasked token, so x0 = 0 for sure, but the prediction gives class 0 no mass
    p0 = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    out = absorbing.posterior_probs(torch.tensor([0]), p0, 0.6, 0.3)
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64))
    # x_t = 0 at t = 1 cannot happen (everything is masked by then): the prediction alone is used
    out = absorbing.posterior_probs(torch.tensor([0]), torch.tensor([[0.5, 0.5, 0.0]]), 1.0, 0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.sum(-1), torch.ones(1))


def test_posterior_keeps_the_prediction_dtype():
    uniform = UniformTransitions(3)
    out = uniform.posterior_probs(torch.tensor([0]), torch.tensor([[0.2, 0.3, 0.5]]), 0.5, 0.2)
    assert out.dtype == torch.float32


# --- drawing -------------------------------------------------------------------------------------------


def test_draw_classes_never_picks_a_zero_weight_class():
    weights = torch.tensor([2.0, 0.0, 6.0]).expand(40_000, 3)  # unnormalised on purpose
    x = draw_classes(weights, torch.Generator().manual_seed(0))
    counts = torch.bincount(x, minlength=3)
    assert counts[1] == 0
    assert abs(counts[0].item() / 40_000 - 0.25) < 0.01


# --- construction ------------------------------------------------------------------------------------


def test_marginals_from_data_are_counted():
    schedule = MarginalTransitions.from_data(torch.tensor([[0, 0], [1, 2]]), num_classes=4)
    assert schedule.marginals == (0.5, 0.25, 0.25, 0.0)
    torch.testing.assert_close(schedule.limit, torch.tensor([0.5, 0.25, 0.25, 0.0], dtype=torch.float64))


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: UniformTransitions(1), "num_classes"),
        (lambda: UniformTransitions(2.5), "num_classes"),
        (lambda: UniformTransitions(3, s=-0.1), "cosine offset"),
        (lambda: MarginalTransitions([0.5, 0.6]), "sum to 1"),
        (lambda: MarginalTransitions([1.2, -0.2]), "non-negative"),
        (lambda: MarginalTransitions([float("nan"), 1.0]), "finite"),
        (lambda: MarginalTransitions([1.0]), "two or more"),
        (lambda: MarginalTransitions([[0.5, 0.5]]), "1-D"),
        (lambda: MarginalTransitions.from_data(torch.tensor([0, 3]), num_classes=3), "outside"),
        (lambda: MarginalTransitions.from_data(torch.tensor([], dtype=torch.long), num_classes=3), "empty"),
        (lambda: AbsorbingTransitions(4, mask_index=4), "mask_index"),
        (lambda: AbsorbingTransitions(4, mask_index=-1), "mask_index"),
    ],
)
def test_bad_arguments_are_named(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_classes_are_named():
    uniform = UniformTransitions(3)
    with pytest.raises(ValueError, match="integer class indices"):
        uniform.corrupt(torch.zeros(4), 0.5)
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        uniform.corrupt(torch.tensor([0, 3]), 0.5)
    with pytest.raises(ValueError, match="does not match x_t"):
        uniform.posterior_probs(torch.tensor([0, 1]), torch.ones(3, 3) / 3, 0.5, 0.2)
    with pytest.raises(ValueError, match="size 3"):
        uniform.marginal_probs(torch.ones(2, 4) / 4, 0.5)


def test_schedules_are_immutable():
    schedule = MarginalTransitions([0.5, 0.5])
    with pytest.raises(AttributeError, match="immutable"):
        schedule.s = 0.1
    schedule.limit[0] = 7.0  # a copy: the schedule is unchanged
    assert schedule.limit[0].item() == 0.5
    expected = "AbsorbingTransitions(num_classes=3, s=0.008, mask_index=2)"
    assert repr(AbsorbingTransitions(3, mask_index=2)) == expected


# --- per-element limits ------------------------------------------------------------------------------


def brute_force_posterior_with_limit(schedule, x_t: int, p0, t: float, s: float, limit) -> torch.Tensor:
    """The brute-force posterior of a chain toward ``limit`` instead of the schedule's own."""
    ab = schedule.alpha_bar
    q_t = explicit_matrix(ab(t).item(), limit)
    q_s = explicit_matrix(ab(s).item(), limit)
    q_ts = explicit_matrix(ab(t).item() / ab(s).item(), limit)
    out = torch.zeros(limit.numel(), dtype=torch.float64)
    for x0 in range(limit.numel()):
        if q_t[x0, x_t] == 0:
            continue
        for x_s in range(limit.numel()):
            out[x_s] += p0[x0] * q_ts[x_s, x_t] * q_s[x0, x_s] / q_t[x0, x_t]
    return out / out.sum()


def test_per_element_limits_give_each_element_its_own_chain():
    schedule = MarginalTransitions([0.25, 0.25, 0.25, 0.25])
    limits = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.0, 0.0, 0.5, 0.5], [0.2, 0.3, 0.4, 0.1]], dtype=torch.float64)
    p0 = random_probs(3, seed=5)
    x_t = torch.tensor([0, 2, 3])
    got = schedule.posterior_probs(x_t, p0, 0.7, 0.3, limit=limits)
    for i in range(3):
        torch.testing.assert_close(got[i], brute_force_posterior_with_limit(schedule, int(x_t[i]), p0[i], 0.7, 0.3, limits[i]))
    # marginal_probs follows the element's limit, and unnormalised limits are normalised
    x0 = torch.nn.functional.one_hot(torch.tensor([1, 1, 1]), 4).double()
    ab = schedule.alpha_bar(0.6).item()
    expected = ab * x0 + (1 - ab) * limits
    torch.testing.assert_close(schedule.marginal_probs(x0, 0.6, limit=3 * limits), expected)


def test_corrupt_with_per_element_limits_redraws_from_them():
    schedule = UniformTransitions(3)
    limit = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)  # (2, K), broadcast over samples
    x0 = torch.ones(4000, 2, dtype=torch.long)
    x_1 = schedule.corrupt(x0, 1.0, torch.Generator().manual_seed(0), limit=limit)
    assert (x_1[:, 0] == 0).all() and (x_1[:, 1] == 2).all()
    x_t = schedule.corrupt(x0, 0.5, torch.Generator().manual_seed(1), limit=limit)
    keep = schedule.alpha_bar(0.5).item()
    assert abs((x_t[:, 0] == 1).double().mean().item() - keep) < 0.03
    assert set(x_t[:, 0].tolist()) <= {0, 1}


@pytest.mark.parametrize("limit, match", [
    (torch.ones(3), "size 4"),
    (torch.tensor([1.0, -1.0, 0.5, 0.5]), "non-negative"),
    (torch.zeros(2, 4), "sum to zero"),
    (torch.ones(5, 4), "broadcast"),
])
def test_bad_per_element_limits_are_named(limit, match):
    schedule = UniformTransitions(4)
    with pytest.raises(ValueError, match=match):
        schedule.posterior_probs(torch.zeros(2, dtype=torch.long), random_probs(2), 0.5, 0.2, limit=limit)
