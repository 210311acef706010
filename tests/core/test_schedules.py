"""Forward processes, checked against closed forms, finite differences and simulation.

Every expected value is derived here independently of ``polydiff.schedules``: DDPM's
``alphas_cumprod`` from its betas, SGMSE+'s OU-VE variance from its own formula, the SDE
coefficients of each process by hand, and the bridge SDE by Euler–Maruyama.
"""

from __future__ import annotations

import math

import pytest
import torch

from polydiff.schedules import EDM, OUVEBridge, RectifiedFlow, VPCosine, VPLinear

SCHEDULES = {
    "vp-linear": VPLinear,
    "vp-cosine": VPCosine,
    "edm": EDM,
    "rectified-flow": RectifiedFlow,
    "ou-ve-bridge": OUVEBridge,
}

# Interior times half-way between VPLinear's knots k/1000, where its maths is smooth.
TIMES = torch.tensor([0.0135, 0.1235, 0.3705, 0.5515, 0.8125, 0.9405], dtype=torch.float64)


@pytest.fixture(params=list(SCHEDULES), ids=list(SCHEDULES))
def schedule(request):
    return SCHEDULES[request.param]()


def central_difference(fn, t: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    return (fn(t + h) - fn(t - h)) / (2 * h)


# --- the marginal ---------------------------------------------------------------------------


def test_clean_at_time_zero(schedule):
    zero = torch.tensor(0.0, dtype=torch.float64)
    assert schedule.alpha(zero).item() == 1.0
    assert schedule.sigma(zero).item() == 0.0
    assert schedule.beta(zero).item() == 0.0
    assert schedule.log_snr(zero).item() == math.inf


def test_outputs_are_float64_and_shaped_like_t(schedule):
    t = torch.full((2, 3), 0.25)
    for fn in (schedule.alpha, schedule.sigma, schedule.beta, schedule.d_alpha, schedule.d_sigma,
               schedule.d_beta, schedule.log_snr, schedule.drift_coefficient, schedule.diffusion_squared):
        out = fn(t)
        assert out.dtype == torch.float64 and out.shape == (2, 3), fn.__name__


def test_log_snr_is_log_of_alpha2_over_sigma2_and_strictly_decreasing(schedule):
    t = torch.linspace(0, schedule.t_max, 2001, dtype=torch.float64)
    lam = schedule.log_snr(t)
    assert (lam[1:] < lam[:-1]).all()
    inner = t[1:-1]
    by_hand = torch.log(schedule.alpha(inner) ** 2 / schedule.sigma(inner) ** 2)
    torch.testing.assert_close(lam[1:-1], by_hand, rtol=1e-10, atol=1e-10)


def test_t_from_log_snr_inverts_log_snr(schedule):
    t = torch.linspace(schedule.t_min, schedule.t_max, 97, dtype=torch.float64)
    torch.testing.assert_close(schedule.t_from_log_snr(schedule.log_snr(t)), t, rtol=0, atol=1e-10)


def test_t_from_sigma_ve_inverts_sigma_over_alpha(schedule):
    t = torch.linspace(schedule.t_min, 0.95 * schedule.t_max, 97, dtype=torch.float64)
    sigma_ve = schedule.sigma(t) / schedule.alpha(t)
    torch.testing.assert_close(schedule.t_from_sigma_ve(sigma_ve), t, rtol=0, atol=1e-10)


def test_derivatives_match_central_differences(schedule):
    for name, fn in (("alpha", schedule.alpha), ("sigma", schedule.sigma), ("beta", schedule.beta)):
        analytic = getattr(schedule, f"d_{name}")(TIMES)
        torch.testing.assert_close(analytic, central_difference(fn, TIMES), rtol=1e-6, atol=1e-8, msg=name)


# --- the SDE --------------------------------------------------------------------------------


def test_sde_coefficients_reproduce_the_marginals(schedule):
    f, g2 = schedule.drift_coefficient(TIMES), schedule.diffusion_squared(TIMES)
    var = lambda t: schedule.sigma(t) ** 2  # noqa: E731
    torch.testing.assert_close(central_difference(var, TIMES), 2 * f * var(TIMES) + g2, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(central_difference(schedule.alpha, TIMES), f * schedule.alpha(TIMES),
                               rtol=1e-6, atol=1e-8)
    assert (g2 > 0).all()


def _sde_by_hand(name: str, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f, g^2)`` of each process, written from its paper."""
    if name == "vp-linear":  # beta(t) = -N log(1 - beta_k) on [k/N, (k+1)/N), f = -beta/2
        betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
        b = -1000 * torch.log(1 - betas[(t * 1000).floor().long()])
        return -0.5 * b, b
    if name == "vp-cosine":  # beta(t) = -d log alpha^2/dt = pi/(1+s) tan(pi/2 (t+s)/(1+s))
        s = 0.008
        b = math.pi / (1 + s) * torch.tan(math.pi / 2 * (t + s) / (1 + s))
        return -0.5 * b, b
    if name == "edm":  # dx = sqrt(d sigma^2/dt) dW
        return torch.zeros_like(t), 2 * 80.0**2 * t
    if name == "rectified-flow":  # alpha = 1 - t, sigma = t
        return -1 / (1 - t), 2 * t / (1 - t)
    gamma, s_min, s_max = 1.5, 0.05, 0.5  # SGMSE+: g = s_min (s_max/s_min)^t sqrt(2 ln(s_max/s_min))
    log_ratio = math.log(s_max / s_min)
    return torch.full_like(t, -gamma), (s_min * (s_max / s_min) ** t) ** 2 * 2 * log_ratio


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_sde_coefficients_match_the_papers(name):
    schedule = SCHEDULES[name]()
    f, g2 = _sde_by_hand(name, TIMES)
    torch.testing.assert_close(schedule.drift_coefficient(TIMES), f, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(schedule.diffusion_squared(TIMES), g2, rtol=1e-9, atol=1e-12)


# --- VP-linear is DDPM on its grid ----------------------------------------------------------


def test_vp_linear_equals_ddpm_on_its_knots():
    schedule = VPLinear()
    alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    k = torch.arange(1, 1001)
    alpha2 = schedule.alpha(k.double() / 1000) ** 2
    torch.testing.assert_close(alpha2, alphas_cumprod[k - 1], rtol=0, atol=1e-12)
    torch.testing.assert_close(schedule.alphas_cumprod, alphas_cumprod, rtol=0, atol=1e-12)
    sigma2 = schedule.sigma(k.double() / 1000) ** 2
    torch.testing.assert_close(sigma2, 1 - alphas_cumprod[k - 1], rtol=0, atol=1e-12)


def test_vp_linear_interpolates_log_alpha2_linearly_between_knots():
    schedule = VPLinear()
    alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    lo, hi = torch.log(alphas_cumprod[99]), torch.log(alphas_cumprod[100])  # t = 0.100, 0.101
    t = torch.tensor(0.1003, dtype=torch.float64)
    assert torch.log(schedule.alpha(t) ** 2).item() == pytest.approx((0.7 * lo + 0.3 * hi).item(), rel=1e-12)


def test_vp_linear_matches_diffusers_ddpm():
    diffusers = pytest.importorskip("diffusers")
    reference = diffusers.DDPMScheduler(beta_schedule="linear").alphas_cumprod.double()
    # diffusers builds its betas and cumprod in float32: 1000 float32 products drift by ~1e-6.
    torch.testing.assert_close(VPLinear().alphas_cumprod, reference, rtol=5e-6, atol=0)


def test_vp_linear_t_from_log_snr_lands_on_its_knots():
    schedule = VPLinear()
    k = torch.tensor([1, 2, 50, 999, 1000])
    alphas_cumprod = schedule.alphas_cumprod[k - 1]
    log_snr = torch.log(alphas_cumprod / (1 - alphas_cumprod))
    torch.testing.assert_close(schedule.t_from_log_snr(log_snr), k.double() / 1000, rtol=0, atol=1e-12)


# --- the OU-VE bridge (SGMSE+) --------------------------------------------------------------


def sgmse_std(t: torch.Tensor, gamma: float, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """``OUVESDE._std`` of SGMSE+ (Richter et al. 2023), transcribed independently."""
    logsig = math.log(sigma_max / sigma_min)
    return torch.sqrt(
        sigma_min**2 * torch.exp(-2 * gamma * t) * (torch.exp(2 * (gamma + logsig) * t) - 1) * logsig
        / (gamma + logsig)
    )


@pytest.mark.parametrize("gamma, sigma_min, sigma_max", [(1.5, 0.05, 0.5), (0.3, 0.01, 1.2)])
def test_bridge_sigma_matches_sgmse_closed_form(gamma, sigma_min, sigma_max):
    schedule = OUVEBridge(gamma=gamma, sigma_min=sigma_min, sigma_max=sigma_max)
    t = torch.linspace(0, 1, 51, dtype=torch.float64)
    torch.testing.assert_close(schedule.sigma(t), sgmse_std(t, gamma, sigma_min, sigma_max), rtol=1e-12, atol=0)


def test_bridge_mean_drifts_toward_y():
    schedule = OUVEBridge()
    t = torch.linspace(0, 1, 21, dtype=torch.float64)
    alpha, beta = schedule.alpha(t), schedule.beta(t)
    torch.testing.assert_close(alpha, torch.exp(-1.5 * t), rtol=1e-14, atol=0)
    torch.testing.assert_close(beta, 1 - alpha, rtol=0, atol=1e-15)
    assert (beta[1:] > beta[:-1]).all()
    x0, y = torch.tensor([[2.0, -1.0]], dtype=torch.float64), torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    mean = schedule.corrupt(x0, torch.tensor([0.7], dtype=torch.float64), torch.zeros_like(x0), y)
    torch.testing.assert_close(mean, x0 + (y - x0) * (1 - math.exp(-1.5 * 0.7)), rtol=1e-12, atol=1e-12)


def test_bridge_euler_maruyama_reproduces_the_marginals():
    gamma, sigma_min, sigma_max = 1.5, 0.05, 0.5
    schedule = OUVEBridge(gamma=gamma, sigma_min=sigma_min, sigma_max=sigma_max)
    # 16000 x 2 elements stay under torch's intra-op grain size: one thread per step, no contention.
    n, steps = 16000, 500
    dt = 1.0 / steps
    x0 = torch.tensor([1.0, -0.3], dtype=torch.float64)
    y = torch.tensor([-0.5, 0.8], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x = x0.expand(n, 2).clone()
    log_ratio = math.log(sigma_max / sigma_min)
    snapshots = {}
    for i in range(steps):
        g = sigma_min * (sigma_max / sigma_min) ** (i * dt) * math.sqrt(2 * log_ratio)
        dw = torch.randn(n, 2, generator=gen, dtype=torch.float64) * math.sqrt(dt)
        x = x + gamma * (y - x) * dt + g * dw
        if i + 1 in (steps // 2, steps):
            snapshots[(i + 1) * dt] = x
    for t, xt in snapshots.items():
        tt = torch.tensor(t, dtype=torch.float64)
        mean = schedule.alpha(tt) * x0 + schedule.beta(tt) * y
        std = schedule.sigma(tt).item()
        # 5 Monte-Carlo standard errors, plus Euler–Maruyama's O(dt) bias (about 5e-4 here).
        assert (xt.mean(0) - mean).abs().max().item() < 5 * std / math.sqrt(n) + dt / 2
        assert (xt.std(0) - std).abs().max().item() < 5 * std / math.sqrt(2 * n) + dt / 2


def test_bridge_without_y_names_y():
    schedule = OUVEBridge()
    x0 = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"\by\b"):
        schedule.corrupt(x0, torch.rand(2), torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"\by\b"):
        schedule.prior((2, 3))


def test_bridge_prior_is_y_plus_noise_of_sigma_t_max():
    schedule = OUVEBridge()
    y = torch.full((50000,), 0.3, dtype=torch.float64)
    x = schedule.prior(y.shape, y=y, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    std = schedule.sigma(torch.tensor(1.0)).item()
    assert abs(x.mean().item() - 0.3) < 5 * std / math.sqrt(50000)
    assert abs(x.std().item() - std) < 5 * std / math.sqrt(2 * 50000)


# --- EDM's training times -------------------------------------------------------------------


def test_edm_sample_t_is_log_normal_in_sigma():
    schedule = EDM(p_mean=-0.7, p_std=0.9)
    n = 200000
    t = schedule.sample_t(n, generator=torch.Generator().manual_seed(0))
    assert t.shape == (n,) and (t >= schedule.t_min).all() and (t <= 1).all()
    ln_sigma = torch.log(schedule.sigma(t))
    assert abs(ln_sigma.mean().item() - (-0.7)) < 5 * 0.9 / math.sqrt(n)
    assert abs(ln_sigma.std().item() - 0.9) < 5 * 0.9 / math.sqrt(2 * n) + 1e-5


def test_default_sample_t_is_uniform_between_t_min_and_t_max():
    schedule = VPCosine()
    n = 100000
    t = schedule.sample_t(n, generator=torch.Generator().manual_seed(0)).double()
    assert (t >= schedule.t_min).all() and (t <= schedule.t_max).all()
    width = schedule.t_max - schedule.t_min
    assert abs(t.mean().item() - (schedule.t_min + width / 2)) < 5 * width / math.sqrt(12 * n)


def test_sample_t_is_reproducible_with_a_seeded_generator(schedule):
    a = schedule.sample_t(64, generator=torch.Generator().manual_seed(3))
    b = schedule.sample_t(64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


# --- corruption -----------------------------------------------------------------------------


def test_corrupt_is_alpha_x0_plus_sigma_noise_exactly(schedule):
    gen = torch.Generator().manual_seed(0)
    x0, noise, y = (torch.randn(4, 3, 2, generator=gen, dtype=torch.float64) for _ in range(3))
    t = torch.tensor([0.0, 0.2, 0.55, 0.9]) * schedule.t_max
    x = schedule.corrupt(x0, t, noise, y)
    for b in range(4):
        tb = t[b].double()
        expected = schedule.alpha(tb) * x0[b] + schedule.sigma(tb) * noise[b] + schedule.beta(tb) * y[b]
        torch.testing.assert_close(x[b], expected, rtol=1e-14, atol=1e-14)


def test_corrupt_has_the_marginal_mean_and_variance(schedule):
    n = 30000
    gen = torch.Generator().manual_seed(0)
    x0 = torch.full((n, 1), 1.5, dtype=torch.float64)
    y = torch.full((n, 1), -0.5, dtype=torch.float64)
    t = torch.full((n,), 0.4)
    x = schedule.corrupt(x0, t, torch.randn(n, 1, generator=gen, dtype=torch.float64), y)
    tt = torch.tensor(0.4, dtype=torch.float64)
    mean = (1.5 * schedule.alpha(tt) - 0.5 * schedule.beta(tt)).item()
    std = schedule.sigma(tt).item()
    assert abs(x.mean().item() - mean) < 5 * std / math.sqrt(n)
    assert abs(x.var().item() - std**2) < 5 * std**2 * math.sqrt(2 / n)


def test_corrupt_accepts_per_element_times(schedule):
    gen = torch.Generator().manual_seed(1)
    x0, noise, y = (torch.randn(2, 5, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    t = torch.rand(2, 5, generator=gen, dtype=torch.float64) * schedule.t_max
    x = schedule.corrupt(x0, t, noise, y)
    assert x.shape == x0.shape
    for b in range(2):
        for f in range(5):
            tt = t[b, f]
            expected = (schedule.alpha(tt) * x0[b, f] + schedule.sigma(tt) * noise[b, f]
                        + schedule.beta(tt) * y[b, f])
            torch.testing.assert_close(x[b, f], expected, rtol=1e-14, atol=1e-14)


def test_corrupt_rejects_times_that_do_not_broadcast(schedule):
    x0 = torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match="broadcast"):
        schedule.corrupt(x0, torch.rand(2, 4), torch.zeros_like(x0), torch.zeros_like(x0))


def test_corrupt_keeps_the_state_dtype(schedule):
    x0 = torch.randn(3, 4)
    assert schedule.corrupt(x0, torch.rand(3), torch.randn(3, 4), torch.randn(3, 4)).dtype == torch.float32


# --- construction ---------------------------------------------------------------------------


def test_schedules_are_immutable(schedule):
    with pytest.raises(AttributeError, match="immutable"):
        schedule.t_min = 0.5
    with pytest.raises(AttributeError, match="immutable"):
        schedule.something_new = 1
    assert type(schedule).__name__ in repr(schedule)


BAD_ARGUMENTS = {
    "vp-linear-zero-beta": lambda: VPLinear(beta_start=0.0),
    "vp-linear-betas-reversed": lambda: VPLinear(beta_start=0.02, beta_end=0.01),
    "vp-linear-beta-one": lambda: VPLinear(beta_end=1.0),
    "vp-linear-no-steps": lambda: VPLinear(num_train_steps=0),
    "vp-cosine-negative-s": lambda: VPCosine(s=-0.1),
    "vp-cosine-t-max-zero": lambda: VPCosine(t_max=0.0),
    "vp-cosine-t-max-above-one": lambda: VPCosine(t_max=1.5),
    "edm-zero-sigma-min": lambda: EDM(sigma_min=0.0),
    "edm-sigmas-reversed": lambda: EDM(sigma_min=80.0, sigma_max=1.0),
    "flow-t-min-zero": lambda: RectifiedFlow(t_min=0.0),
    "flow-t-min-one": lambda: RectifiedFlow(t_min=1.0),
    "bridge-zero-gamma": lambda: OUVEBridge(gamma=0.0),
    "bridge-zero-sigma-min": lambda: OUVEBridge(sigma_min=0.0),
    "bridge-sigmas-reversed": lambda: OUVEBridge(sigma_min=0.5, sigma_max=0.05),
    "bridge-t-min-zero": lambda: OUVEBridge(t_min=0.0),
    "bridge-t-min-one": lambda: OUVEBridge(t_min=1.0),
}


@pytest.mark.parametrize("make", list(BAD_ARGUMENTS.values()), ids=list(BAD_ARGUMENTS))
def test_bad_constructor_arguments_raise(make):
    with pytest.raises(ValueError):
        make()


def test_only_the_bridge_has_a_bridge():
    assert [name for name, cls in SCHEDULES.items() if cls().has_bridge] == ["ou-ve-bridge"]
