"""Conversions between eps, x0, v, score and flow: round trips, definitions and Tweedie's formula."""

from __future__ import annotations

import itertools

import pytest
import torch

from polydiff.parameterization import PREDICTIONS, check_prediction, convert, from_x0_eps, solve_x0_eps, to_x0_eps
from polydiff.schedules import EDM, OUVEBridge, RectifiedFlow, VPCosine, VPLinear

SCHEDULES = {
    "vp-linear": VPLinear,
    "vp-cosine": VPCosine,
    "edm": EDM,
    "rectified-flow": RectifiedFlow,
    "ou-ve-bridge": OUVEBridge,
}
B, T, D = 4, 3, 2


@pytest.fixture(params=list(SCHEDULES), ids=list(SCHEDULES))
def schedule(request):
    return SCHEDULES[request.param]()


def per_sample_t(schedule) -> torch.Tensor:
    # between VPLinear's knots, clear of the ends where alpha or sigma vanish
    return torch.tensor([0.0205, 0.2505, 0.6005, 0.9005], dtype=torch.float64) * schedule.t_max


def per_element_t(schedule) -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    return (0.02 + 0.88 * torch.rand(B, T, generator=gen, dtype=torch.float64)) * schedule.t_max


def problem(schedule, t, seed=0):
    """Clean data, noise, signal y and the state they make, all float64 of shape (B, T, D)."""
    gen = torch.Generator().manual_seed(seed)
    x0, eps, y = (torch.randn(B, T, D, generator=gen, dtype=torch.float64) for _ in range(3))
    return x0, eps, y, schedule.corrupt(x0, t, eps, y)


TIME_KINDS = {"per-sample": per_sample_t, "per-element": per_element_t}


@pytest.mark.parametrize("time_kind", list(TIME_KINDS))
def test_every_prediction_determines_x0_and_eps(schedule, time_kind):
    t = TIME_KINDS[time_kind](schedule)
    x0, eps, y, x = problem(schedule, t)
    for kind in PREDICTIONS:
        pred = from_x0_eps(x0, eps, kind, x, t, schedule, y)
        got_x0, got_eps = to_x0_eps(pred, kind, x, t, schedule, y)
        torch.testing.assert_close(got_x0, x0, rtol=1e-9, atol=1e-9, msg=kind)
        torch.testing.assert_close(got_eps, eps, rtol=1e-9, atol=1e-9, msg=kind)


@pytest.mark.parametrize("time_kind", list(TIME_KINDS))
def test_all_25_conversions_agree_and_round_trip(schedule, time_kind):
    t = TIME_KINDS[time_kind](schedule)
    x0, eps, y, x = problem(schedule, t, seed=1)
    preds = {kind: from_x0_eps(x0, eps, kind, x, t, schedule, y) for kind in PREDICTIONS}
    for source, target in itertools.product(PREDICTIONS, PREDICTIONS):
        out = convert(preds[source], source, target, x, t, schedule, y)
        torch.testing.assert_close(out, preds[target], rtol=1e-9, atol=1e-9, msg=f"{source} -> {target}")
        back = convert(out, target, source, x, t, schedule, y)
        torch.testing.assert_close(back, preds[source], rtol=1e-9, atol=1e-9, msg=f"{source} -> {target} -> back")


def test_python_float_time_is_accepted(schedule):
    x0, eps, y, _ = problem(schedule, 0.4)
    x = schedule.corrupt(x0, torch.tensor(0.4, dtype=torch.float64), eps, y)
    v = from_x0_eps(x0, eps, "v", x, 0.4, schedule, y)
    torch.testing.assert_close(convert(v, "v", "x0", x, 0.4, schedule, y), x0, rtol=1e-9, atol=1e-9)


# --- the targets are the papers' definitions -----------------------------------------------


def test_targets_match_definitions_for_rectified_flow():
    schedule = RectifiedFlow()
    t = per_sample_t(schedule)
    x0, eps, _, x = problem(schedule, t)
    tt = t[:, None, None]
    torch.testing.assert_close(x, (1 - tt) * x0 + tt * eps, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(from_x0_eps(x0, eps, "flow", x, t, schedule), eps - x0, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(from_x0_eps(x0, eps, "v", x, t, schedule), (1 - tt) * eps - tt * x0)
    torch.testing.assert_close(from_x0_eps(x0, eps, "score", x, t, schedule), -eps / tt)
    assert from_x0_eps(x0, eps, "x0", x, t, schedule) is x0
    assert from_x0_eps(x0, eps, "eps", x, t, schedule) is eps


def test_v_target_is_alpha_eps_minus_sigma_x0_for_vp_cosine():
    schedule = VPCosine()
    t = per_sample_t(schedule)
    x0, eps, _, x = problem(schedule, t)
    s = 0.008
    alpha = (torch.cos(torch.pi / 2 * (t + s) / (1 + s)) / torch.cos(torch.tensor(torch.pi / 2 * s / (1 + s),
                                                                                 dtype=torch.float64)))
    alpha, sigma = alpha[:, None, None], torch.sqrt(1 - alpha**2)[:, None, None]
    torch.testing.assert_close(from_x0_eps(x0, eps, "v", x, t, schedule), alpha * eps - sigma * x0)
    torch.testing.assert_close(from_x0_eps(x0, eps, "score", x, t, schedule), -eps / sigma)


def test_edm_flow_is_the_probability_flow_velocity():
    schedule = EDM()
    t = per_sample_t(schedule)
    x0, eps, _, x = problem(schedule, t)
    torch.testing.assert_close(from_x0_eps(x0, eps, "flow", x, t, schedule), 80.0 * eps)
    # Karras et al. 2022 eq. 4 with sigma(t) = 80 t: dx/dt = (x - D(x)) / sigma * dsigma/dt
    tt = t[:, None, None]
    torch.testing.assert_close(from_x0_eps(x0, eps, "flow", x, t, schedule), (x - x0) / (80 * tt) * 80)


@pytest.mark.parametrize("time_kind", list(TIME_KINDS))
def test_flow_target_is_the_time_derivative_of_the_path(schedule, time_kind):
    t = TIME_KINDS[time_kind](schedule)
    x0, eps, y, x = problem(schedule, t)
    h = 1e-6
    path = lambda s: schedule.corrupt(x0, s, eps, y)  # noqa: E731
    numeric = (path(t + h) - path(t - h)) / (2 * h)
    torch.testing.assert_close(from_x0_eps(x0, eps, "flow", x, t, schedule, y), numeric, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("time_kind", list(TIME_KINDS))
def test_posterior_mean_of_a_gaussian_converts_to_its_analytic_score(schedule, time_kind):
    """x0 ~ N(mu, s^2 I): x_t ~ N(alpha mu + beta y, (alpha^2 s^2 + sigma^2) I), and Tweedie's
    formula ties the posterior mean E[x0 | x_t] to that marginal's score."""
    t = TIME_KINDS[time_kind](schedule)
    _, _, y, x = problem(schedule, t, seed=3)
    mu, s = 0.7, 1.3
    tt = t.reshape(*t.shape, *([1] * (x.ndim - t.ndim)))
    a, sig, b = schedule.alpha(tt), schedule.sigma(tt), schedule.beta(tt)
    resid = x - a * mu - b * y
    posterior_mean = mu + a * s**2 / (a**2 * s**2 + sig**2) * resid
    score = convert(posterior_mean, "x0", "score", x, t, schedule, y)
    torch.testing.assert_close(score, -resid / (a**2 * s**2 + sig**2), rtol=1e-9, atol=1e-9)


# --- clean elements and errors ------------------------------------------------------------


def test_clean_elements_give_zero_eps_not_nan(schedule):
    t = per_element_t(schedule)
    t[:, 0] = 0.0  # the first frame of every sample is clean
    x0, eps, y, x = problem(schedule, t)
    got_x0, got_eps = to_x0_eps(x0, "x0", x, t, schedule, y)
    assert torch.isfinite(got_eps).all()
    assert (got_eps[:, 0] == 0).all()
    torch.testing.assert_close(got_eps[:, 1:], eps[:, 1:], rtol=1e-9, atol=1e-9)
    for target in ("eps", "score", "v"):
        out = convert(x0, "x0", target, x, t, schedule, y)
        assert torch.isfinite(out).all(), target
        if target in ("eps", "score"):
            assert (out[:, 0] == 0).all(), target
    # and back from eps or score: a clean element's x0 is the state itself (minus the bridge mean)
    for source in ("eps", "score"):
        pred = convert(x0, "x0", source, x, t, schedule, y)
        torch.testing.assert_close(convert(pred, source, "x0", x, t, schedule, y)[:, 0], x0[:, 0])


def test_unknown_prediction_type_lists_the_valid_ones():
    x = torch.zeros(2, 3)
    t = torch.full((2,), 0.5)
    calls = [
        lambda: check_prediction("noise"),
        lambda: convert(x, "noise", "x0", x, t, VPLinear()),
        lambda: convert(x, "x0", "noise", x, t, VPLinear()),
        lambda: convert(x, "noise", "noise", x, t, VPLinear()),
        lambda: to_x0_eps(x, "noise", x, t, VPLinear()),
        lambda: from_x0_eps(x, x, "noise", x, t, VPLinear()),
        lambda: solve_x0_eps(x, "noise", x, torch.ones(1), torch.ones(1), torch.ones(1), torch.ones(1)),
    ]
    for call in calls:
        with pytest.raises(ValueError) as info:
            call()
        assert "noise" in str(info.value)
        for name in PREDICTIONS:
            assert name in str(info.value)


def test_bridge_conversions_need_y():
    schedule = OUVEBridge()
    x = torch.randn(2, 3)
    t = torch.full((2,), 0.5)
    with pytest.raises(ValueError, match=r"\by\b"):
        to_x0_eps(x, "eps", x, t, schedule)
    with pytest.raises(ValueError, match=r"\by\b"):
        from_x0_eps(x, x, "flow", x, t, schedule)


def test_conversions_keep_float32_and_shape():
    schedule = VPCosine()
    x = torch.randn(B, T, D)
    t = torch.rand(B, T) * 0.9 + 0.05
    out = convert(x, "eps", "v", x, t, schedule)
    assert out.dtype == torch.float32 and out.shape == (B, T, D)
