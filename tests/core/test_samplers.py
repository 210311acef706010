"""Samplers checked against exact answers: Gaussian mixtures have exact denoisers, a Gaussian's
probability-flow ODE has a closed-form solution, and mixtures condition in closed form."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from polydiff.denoiser import Denoiser
from polydiff.grids import make_grid
from polydiff.mixture import ExactMixtureDenoiser, GaussianMixture, sliced_wasserstein
from polydiff.samplers import SAMPLERS, KnownValues, NonFiniteError, evaluations, get_sampler, sample
from polydiff.schedules import EDM, OUVEBridge, RectifiedFlow, VPCosine, VPLinear

N = 4000


def _mixture() -> GaussianMixture:
    return GaussianMixture(
        torch.tensor([0.2, 0.5, 0.3]),
        torch.tensor([[-3.0, 0.0], [1.5, 2.0], [2.0, -2.0]]),
        torch.stack([
            torch.tensor([[0.4, 0.1], [0.1, 0.3]]),
            torch.tensor([[0.3, -0.15], [-0.15, 0.5]]),
            0.25 * torch.eye(2),
        ]),
    )


MIX = _mixture()
SCHEDULES = {"vp_linear": VPLinear(), "vp_cosine": VPCosine(), "edm": EDM(), "rectified_flow": RectifiedFlow()}


def _responsibilities(x: torch.Tensor, mix: GaussianMixture) -> torch.Tensor:
    comps = [torch.distributions.MultivariateNormal(mix.means[k], mix.covs[k]) for k in range(mix.num_components)]
    logp = torch.stack([c.log_prob(x.double()) for c in comps], 1) + torch.log(mix.weights)
    return torch.softmax(logp, 1)


def _check_matches_mixture(x: torch.Tensor, mix: GaussianMixture, *, tol_w=0.03, tol_mean=0.1, tol_cov=0.15):
    """Component weights, per-component means and covariances, and SWD against fresh samples."""
    x = x.double()
    assert torch.isfinite(x).all()
    resp = _responsibilities(x, mix)
    weights = resp.mean(0)
    assert torch.allclose(weights, mix.weights, atol=tol_w), (weights, mix.weights)
    for k in range(mix.num_components):
        r = resp[:, k:k + 1]
        mean = (r * x).sum(0) / r.sum()
        cov = ((r * (x - mean)).T @ (x - mean)) / r.sum()
        assert torch.allclose(mean, mix.means[k], atol=tol_mean), (k, mean, mix.means[k])
        assert torch.allclose(cov, mix.covs[k], atol=tol_cov), (k, cov, mix.covs[k])
    fresh = mix.sample(len(x), generator=torch.Generator().manual_seed(99))
    other = mix.sample(len(x), generator=torch.Generator().manual_seed(98))
    proj = torch.Generator().manual_seed(0)
    floor = sliced_wasserstein(fresh, other, generator=proj)
    swd = sliced_wasserstein(x, fresh, generator=torch.Generator().manual_seed(0))
    assert swd < 2.0 * floor + 0.03, (swd, floor)
    return swd


def _steps_for(name: str, nfe: int) -> int:
    return {"heun": (nfe + 1) // 2, "pc": nfe // 2}.get(name, nfe)


@pytest.mark.parametrize("schedule_name", list(SCHEDULES))
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_matches_the_mixture(name, schedule_name):
    schedule = SCHEDULES[schedule_name]
    denoiser = ExactMixtureDenoiser(MIX, schedule)
    g = torch.Generator().manual_seed(1)
    x = schedule.prior((N, 2), generator=g)
    # Stochastic samplers need more steps than deterministic ones for the same accuracy.
    nfe = 200 if name in ("ddpm", "pc") else 60
    # Annealed Langevin with step 2 (snr sigma)^2 over-disperses a Gaussian of variance sigma^2 by
    # 1 / (1 - snr^2); SGMSE+'s snr = 0.5 suits its small noise levels, Song et al. use 0.16.
    options = {"snr": 0.16} if name == "pc" else {}
    out = sample(denoiser, schedule, x, sampler=name, steps=_steps_for(name, nfe), generator=g, **options)
    _check_matches_mixture(out, MIX)


def test_unit_gaussian_keeps_unit_variance():
    """Nothing is clipped: diffusers' default DDIM clipping gives std 0.71 on this data."""
    mix = GaussianMixture(torch.ones(1), torch.zeros(1, 3), torch.eye(3)[None] * 4.0)
    schedule = VPLinear()
    g = torch.Generator().manual_seed(0)
    out = sample(ExactMixtureDenoiser(mix, schedule), schedule, schedule.prior((N, 3), generator=g),
                 sampler="dpmpp_2m", steps=50, generator=g)
    assert abs(float(out.std()) - 2.0) < 0.06


def _reference(schedule, x, steps=2000):
    return sample(ExactMixtureDenoiser(MIX, schedule), schedule, x, sampler="heun", steps=steps, grid="karras")


@pytest.mark.parametrize("name", ["ddim", "euler", "heun", "dpmpp_2m", "flow_euler"])
def test_deterministic_error_falls_with_steps(name):
    schedule = VPLinear()
    x = schedule.prior((512, 2), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ref = _reference(schedule, x)
    errors = []
    for nfe in (6, 20, 100):
        out = sample(ExactMixtureDenoiser(MIX, schedule), schedule, x, sampler=name, steps=_steps_for(name, nfe))
        errors.append(float((out - ref).norm(dim=1).mean()))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.05, errors


def _gaussian_ode_case(schedule, n_steps):
    """1-D data N(mu, sd^2): the probability-flow ODE in x/alpha, sigma/alpha is solved exactly by
    x~(s) = mu + (x~(s0) - mu) sqrt(s^2 + sd^2) / sqrt(s0^2 + sd^2)."""
    mu, sd = 0.7, 0.5
    mix = GaussianMixture(torch.ones(1), torch.tensor([[mu]]), torch.tensor([[[sd**2]]]))
    t_start, t_end = 0.8, 0.05
    grid = torch.linspace(t_start, t_end, n_steps + 1, dtype=torch.float64)
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    s0 = schedule.sigma(torch.tensor(t_start, dtype=torch.float64)) / schedule.alpha(torch.tensor(t_start, dtype=torch.float64))
    s1 = schedule.sigma(torch.tensor(t_end, dtype=torch.float64)) / schedule.alpha(torch.tensor(t_end, dtype=torch.float64))
    a0 = schedule.alpha(torch.tensor(t_start, dtype=torch.float64))
    a1 = schedule.alpha(torch.tensor(t_end, dtype=torch.float64))
    exact = a1 * (mu + (x / a0 - mu) * torch.sqrt(s1**2 + sd**2) / torch.sqrt(s0**2 + sd**2))
    return ExactMixtureDenoiser(mix, schedule), x, grid, exact


@pytest.mark.parametrize("name, order", [("ddim", 1), ("euler", 1), ("heun", 2), ("dpmpp_2m", 2), ("flow_euler", 1)])
@pytest.mark.parametrize("schedule", [VPCosine(), EDM(), RectifiedFlow()], ids=["vp_cosine", "edm", "flow"])
def test_solver_order_on_a_known_ode(name, order, schedule):
    errors = []
    for n in (16, 32, 64):
        denoiser, x, grid, exact = _gaussian_ode_case(schedule, n)
        out = get_sampler(name)(denoiser, schedule, x, grid)
        errors.append(float((out - exact).abs().max()))
    rates = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert rates[-1] == pytest.approx(order, abs=0.35), (errors, rates)


def test_known_values_clean_mode_gives_the_exact_conditional():
    schedule = VPLinear()
    mask = torch.tensor([True, False])
    value = torch.tensor([1.8, 0.0])
    cond_mix = MIX.conditional(mask, value)
    known = KnownValues(value.expand(N, 2).float(), mask, mode="clean")
    g = torch.Generator().manual_seed(5)
    out = sample(ExactMixtureDenoiser(MIX, schedule), schedule, schedule.prior((N, 2), generator=g),
                 sampler="dpmpp_2m", steps=40, known=known, generator=g)
    assert torch.equal(out[:, 0], known.values[:, 0])
    _check_matches_mixture(out[:, 1:], cond_mix)


def test_known_values_replace_mode_holds_known_entries_and_leaves_independent_ones_alone():
    schedule = VPLinear()
    # Independent coordinates: conditioning on one must leave the other's distribution unchanged.
    mix = GaussianMixture(torch.ones(1), torch.tensor([[1.0, -1.0]]), torch.diag(torch.tensor([0.5, 0.3]))[None])
    values = torch.randn(N, 2)
    known = KnownValues(values, torch.tensor([True, False]), mode="replace")
    g = torch.Generator().manual_seed(6)
    out = sample(ExactMixtureDenoiser(mix, schedule), schedule, schedule.prior((N, 2), generator=g),
                 sampler="ddpm", steps=100, known=known, generator=g)
    assert torch.equal(out[:, 0], values[:, 0])
    assert abs(float(out[:, 1].mean()) + 1.0) < 0.05
    assert abs(float(out[:, 1].var()) - 0.3) < 0.04


def test_known_values_replace_mode_approximates_a_correlated_conditional():
    schedule = VPLinear()
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    mix = GaussianMixture(torch.ones(1), torch.zeros(1, 2), cov[None])
    known = KnownValues(torch.full((N, 2), 1.0), torch.tensor([True, False]), mode="replace")
    g = torch.Generator().manual_seed(7)
    out = sample(ExactMixtureDenoiser(mix, schedule), schedule, schedule.prior((N, 2), generator=g),
                 sampler="ddpm", steps=250, known=known, generator=g)
    # Exact conditional: mean 0.8, variance 0.36. Replacement without resampling is a known
    # approximation (Lugmayr et al. 2022): it conditions, but under-uses the correlation.
    assert 0.3 < float(out[:, 1].mean()) < 0.85
    assert 0.3 < float(out[:, 1].var()) < 1.0


def test_guidance_one_is_conditional_and_zero_is_unconditional():
    schedule = VPLinear()
    denoiser = ExactMixtureDenoiser(MIX, schedule)
    label = torch.full((N,), 1)
    g = torch.Generator().manual_seed(8)
    x = schedule.prior((N, 2), generator=g)
    denoiser.calls = 0
    out = sample(denoiser, schedule, x, sampler="dpmpp_2m", steps=30, cond=label, guidance=1.0, generator=g)
    assert denoiser.calls == 30
    single = GaussianMixture(torch.ones(1), MIX.means[1:2], MIX.covs[1:2])
    _check_matches_mixture(out, single)
    denoiser.calls = 0
    out = sample(denoiser, schedule, x, sampler="dpmpp_2m", steps=30, cond=label, guidance=0.0)
    assert denoiser.calls == 60
    _check_matches_mixture(out, MIX)


def test_guidance_above_one_pushes_away_from_the_other_classes():
    """w > 1 adds (w - 1) grad log p(c | x): component 0 lies left of the others, so its samples move left."""
    schedule = VPLinear()
    denoiser = ExactMixtureDenoiser(MIX, schedule)
    x = schedule.prior((N, 2), generator=torch.Generator().manual_seed(9))
    label = torch.full((N,), 0)
    plain = sample(denoiser, schedule, x, sampler="ddim", steps=30, cond=label)
    strong = sample(denoiser, schedule, x, sampler="ddim", steps=30, cond=label, guidance=3.0)
    assert float(strong[:, 0].mean()) < float(plain[:, 0].mean()) - 0.05


def test_guidance_without_condition_is_an_error():
    schedule = VPLinear()
    with pytest.raises(ValueError, match="cond"):
        sample(ExactMixtureDenoiser(MIX, schedule), schedule, torch.randn(4, 2), guidance=2.0)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_seeded_samples_are_bit_identical(name):
    schedule = VPLinear()
    denoiser = ExactMixtureDenoiser(MIX, schedule)

    def run():
        g = torch.Generator().manual_seed(11)
        return sample(denoiser, schedule, schedule.prior((64, 2), generator=g), sampler=name, steps=8,
                      generator=g, **({"churn": 5.0} if name in ("euler", "heun") else {}))

    assert torch.equal(run(), run())


def test_two_threads_sampling_at_once_equal_one_after_the_other():
    schedule = VPLinear()
    denoiser = ExactMixtureDenoiser(MIX, schedule)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return sample(denoiser, schedule, schedule.prior((256, 2), generator=g), sampler="ddpm", steps=40, generator=g)

    sequential = [run(1), run(2)]
    results = {}
    threads = [threading.Thread(target=lambda s=s: results.__setitem__(s, run(s))) for s in (1, 2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert torch.equal(results[1], sequential[0]) and torch.equal(results[2], sequential[1])


def test_per_element_grid_equal_to_shared_grid_gives_the_same_samples():
    schedule = VPLinear()
    denoiser = ExactMixtureDenoiser(MIX, schedule)
    x = schedule.prior((128, 2), generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    grid = make_grid("logsnr", schedule, 12)
    shared = sample(denoiser, schedule, x, sampler="dpmpp_2m", grid=grid)
    per_element = sample(denoiser, schedule, x, sampler="dpmpp_2m", grid=grid[:, None, None].expand(13, 1, 2))
    assert torch.allclose(shared, per_element, atol=1e-10)


def test_per_element_grid_with_offset_noise_levels_still_samples_the_mixture():
    """Rolling-diffusion style: coordinate 1 runs half a schedule behind coordinate 0."""
    schedule = VPLinear()
    steps = 120
    tau = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    lead = (tau * 1.5 - 0.5).clamp(0, 1)
    lag = (tau * 1.5).clamp(0, 1)
    grid = torch.stack([lead, lag], -1)[:, None, :]
    grid = torch.where(grid > 0, grid.clamp(min=schedule.t_min), grid)
    g = torch.Generator().manual_seed(13)
    x = schedule.prior((N, 2), generator=g)
    out = get_sampler("ddim")(ExactMixtureDenoiser(MIX, schedule), schedule, x, grid)
    _check_matches_mixture(out, MIX, tol_cov=0.2)


def test_callback_sees_every_step_and_can_replace_the_estimate():
    schedule = VPLinear()
    seen = []

    def callback(info):
        seen.append((info.index, float(info.t), float(info.t_next)))
        return torch.zeros_like(info.denoised)

    out = sample(ExactMixtureDenoiser(MIX, schedule), schedule, torch.randn(16, 2), sampler="ddim", steps=7,
                 callback=callback)
    assert [s[0] for s in seen] == list(range(7))
    assert seen[-1][2] == 0.0
    assert torch.equal(out, torch.zeros(16, 2))


@pytest.mark.parametrize("name", ["ddim", "pc", "pc_euler_maruyama", "dpmpp_2m", "heun"])
def test_bridge_schedule_samples_the_data_from_the_bridge_state(name):
    """OU-VE bridge: start from the exact x_1 = alpha x0 + beta y + sigma eps and recover x0's law."""
    schedule = OUVEBridge()
    y = torch.tensor([0.5, -0.5]).expand(N, 2).contiguous()
    g = torch.Generator().manual_seed(14)
    x0 = MIX.sample(N, generator=g).float()
    x1 = schedule.corrupt(x0, torch.ones(N), torch.randn(N, 2, generator=g), y)
    denoiser = ExactMixtureDenoiser(MIX, schedule)
    options = {"snr": 0.16} if name.startswith("pc") else {}
    if name == "pc_euler_maruyama":  # SGMSE+'s own reverse-diffusion predictor
        name, options["predictor"] = "pc", "euler_maruyama"
    out = sample(denoiser, schedule, x1, sampler=name, steps=_steps_for(name, 120), cond=y, y=y, generator=g,
                 **options)
    _check_matches_mixture(out, MIX)


def test_evaluations_counts_denoiser_calls():
    schedule = VPLinear()
    denoiser = ExactMixtureDenoiser(MIX, schedule)
    for name in SAMPLERS:
        denoiser.calls = 0
        sample(denoiser, schedule, torch.randn(8, 2), sampler=name, steps=6)
        assert denoiser.calls == evaluations(name, 6), name


class _Broken(Denoiser):
    def __init__(self, output):
        super().__init__("eps")
        self.output = output

    def forward(self, x, t, cond=None):
        return self.output(x)


def test_bad_input_errors_name_the_problem():
    schedule = VPLinear()
    good = ExactMixtureDenoiser(MIX, schedule)
    with pytest.raises(ValueError, match="unknown sampler 'dpm'.*ddim"):
        sample(good, schedule, torch.randn(4, 2), sampler="dpm")
    with pytest.raises(ValueError, match="no option eta"):
        sample(good, schedule, torch.randn(4, 2), sampler="heun", eta=1.0)
    with pytest.raises(NonFiniteError, match="step 0"):
        sample(_Broken(lambda x: torch.full_like(x, float("nan"))), schedule, torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"returned \(4, 3\)"):
        sample(_Broken(lambda x: torch.zeros(4, 3)), schedule, torch.randn(4, 2))
    with pytest.raises(ValueError, match="known values have shape"):
        sample(good, schedule, torch.randn(4, 2), known=KnownValues(torch.zeros(3, 2), torch.ones(2, dtype=torch.bool)))
    with pytest.raises(ValueError, match="bridge"):
        sample(ExactMixtureDenoiser(MIX, OUVEBridge()), OUVEBridge(), torch.randn(4, 2))
    with pytest.raises(TypeError, match="prediction"):
        sample(torch.nn.Identity(), schedule, torch.randn(4, 2))
    with pytest.raises(ValueError, match="unknown known-values mode"):
        KnownValues(torch.zeros(2), torch.ones(2, dtype=torch.bool), mode="paste")
