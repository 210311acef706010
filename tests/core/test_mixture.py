"""Gaussian mixtures and their exact denoiser, against closed forms, quadrature and Tweedie's formula."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from polydiff.broadcast import time_like
from polydiff.mixture import ExactMixtureDenoiser, GaussianMixture, sliced_wasserstein
from polydiff.parameterization import convert
from polydiff.schedules import EDM, OUVEBridge, RectifiedFlow, VPCosine, VPLinear

SCHEDULES = {
    "vp-linear": VPLinear,
    "vp-cosine": VPCosine,
    "edm": EDM,
    "rectified-flow": RectifiedFlow,
    "ou-ve-bridge": OUVEBridge,
}
# Times with VE noise sigma/alpha of order one for each schedule, where the posterior is not trivial.
TIMES = {
    "vp-linear": [0.05, 0.2, 0.4, 0.6],
    "vp-cosine": [0.05, 0.2, 0.4, 0.6],
    "edm": [0.001, 0.005, 0.01, 0.03],
    "rectified-flow": [0.05, 0.2, 0.4, 0.6],
    "ou-ve-bridge": [0.05, 0.2, 0.5, 1.0],
}


@pytest.fixture(params=list(SCHEDULES), ids=list(SCHEDULES))
def name(request):
    return request.param


def f64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def two_d_mixture() -> GaussianMixture:
    return GaussianMixture(
        f64([0.3, 0.7]),
        f64([[-2.0, 0.5], [1.5, -1.0]]),
        f64([[[1.0, 0.6], [0.6, 0.8]], [[0.5, -0.2], [-0.2, 0.7]]]),
    )


def one_d_mixture() -> GaussianMixture:
    return GaussianMixture(
        f64([0.2, 0.5, 0.3]),
        f64([[-2.5], [0.0], [2.0]]),
        f64([[[0.3]], [[0.8]], [[0.1]]]),
    )


def coefficients(schedule, t: torch.Tensor, x: torch.Tensor):
    tt = time_like(t, x)
    return schedule.alpha(tt), schedule.sigma(tt), schedule.beta(tt)


def prior_on_grid(mix: GaussianMixture, axis: torch.Tensor) -> torch.Tensor:
    """p(x0) on the grid axis^D (D = 1 or 2), from the Gaussian density written out by hand."""
    if mix.dim == 1:
        var = mix.covs[:, 0, 0, None]
        dens = torch.exp(-0.5 * (axis - mix.means[:, 0, None]) ** 2 / var) / torch.sqrt(2 * math.pi * var)
        return (mix.weights[:, None] * dens).sum(0)
    total = torch.zeros(axis.shape[0], axis.shape[0], dtype=torch.float64)
    for w, m, c in zip(mix.weights, mix.means, mix.covs):
        dx, dy = (axis - m[0])[:, None], (axis - m[1])[None, :]
        det = c[0, 0] * c[1, 1] - c[0, 1] ** 2
        quad = (c[1, 1] * dx**2 - 2 * c[0, 1] * dx * dy + c[0, 0] * dy**2) / det
        total = total + w * torch.exp(-0.5 * quad) / (2 * math.pi * torch.sqrt(det))
    return total


def quadrature_posterior_mean(mix, axis, x, a, s, b, y):
    """E[x0 | x] by brute force: x0 p(x0) N(x; a x0 + b y, s^2) summed over a fine grid of x0.

    The likelihood factorises over coordinates (a, s diagonal), so the 2-D sums are matrix
    products. Shapes: axis (n,); x, a, s, b, y (B, D) with D = 1 or 2. Returns (B, D).
    """
    d = mix.dim
    prior = prior_on_grid(mix, axis)
    z = (x - b * y)[..., None] - a[..., None] * axis  # (B, D, n)
    log_lik = -0.5 * (z / s[..., None]) ** 2
    lik = torch.exp(log_lik - log_lik.max(-1, keepdim=True).values)
    if d == 1:
        w = prior[None] * lik[:, 0]
        return ((w * axis).sum(1) / w.sum(1))[:, None]
    l1, l2 = lik[:, 0], lik[:, 1]
    total = torch.einsum("bi,ij,bj->b", l1, prior, l2)
    first = torch.einsum("bi,i,ij,bj->b", l1, axis, prior, l2)
    second = torch.einsum("bi,ij,j,bj->b", l1, prior, axis, l2)
    return torch.stack([first, second], 1) / total[:, None]


def states(mix, schedule, t, n=None, seed=0):
    """Noisy states x_t drawn from the model itself, with a bridge signal y."""
    gen = torch.Generator().manual_seed(seed)
    n = n or t.shape[0]
    x0 = mix.sample(n, generator=gen)
    y = torch.randn(n, mix.dim, generator=gen, dtype=torch.float64)
    return schedule.corrupt(x0, t, torch.randn(n, mix.dim, generator=gen, dtype=torch.float64), y), y


# --- the exact posterior mean ---------------------------------------------------------------


def test_single_gaussian_posterior_mean_in_closed_form(name):
    schedule = SCHEDULES[name]()
    mu, var = 0.8, 1.7
    mix = GaussianMixture(f64([1.0]), f64([[mu]]), f64([[[var]]]))
    t = torch.tensor(TIMES[name], dtype=torch.float64)
    x, y = states(mix, schedule, t)
    den = ExactMixtureDenoiser(mix, schedule)
    out = den(x, t, y if schedule.has_bridge else None)
    a, s, b = coefficients(schedule, t, x)
    expected = mu + a * var / (a**2 * var + s**2) * (x - b * y - a * mu)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_independent_coordinates_with_per_element_times(name):
    """A diagonal Gaussian factorises, so each coordinate has its own 1-D closed form."""
    schedule = SCHEDULES[name]()
    mu = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    var = torch.tensor([0.4, 1.0, 2.5], dtype=torch.float64)
    mix = GaussianMixture(torch.tensor([1.0]), mu[None], torch.diag(var)[None])
    lo, hi = TIMES[name][0], TIMES[name][-1]
    t = lo + (hi - lo) * torch.rand(4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t[0, 1] = 0.0  # one clean coordinate: returned as observed
    x, y = states(mix, schedule, t)
    out = ExactMixtureDenoiser(mix, schedule)(x, t, y if schedule.has_bridge else None)
    a, s, b = coefficients(schedule, t, x)
    expected = mu + a * var / (a**2 * var + s**2) * (x - b * y - a * mu)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert out[0, 1].item() == pytest.approx(x[0, 1].item(), abs=1e-12)


def test_one_d_mixture_matches_quadrature(name):
    schedule = SCHEDULES[name]()
    mix = one_d_mixture()
    t = torch.tensor(TIMES[name], dtype=torch.float64).repeat(3)  # (12,)
    x, y = states(mix, schedule, t, seed=4)
    out = ExactMixtureDenoiser(mix, schedule)(x, t, y if schedule.has_bridge else None)
    axis = torch.linspace(-8, 8, 8001, dtype=torch.float64)
    a, s, b = coefficients(schedule, t, x)
    expected = quadrature_posterior_mean(mix, axis, x, a, s, b, y)
    torch.testing.assert_close(out, expected, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", ["vp-cosine", "edm", "ou-ve-bridge"])
def test_two_d_mixture_with_per_element_times_matches_quadrature(name):
    schedule = SCHEDULES[name]()
    mix = two_d_mixture()
    lo, hi = TIMES[name][1], TIMES[name][-1]
    t = lo + (hi - lo) * torch.rand(6, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x, y = states(mix, schedule, t, seed=6)
    out = ExactMixtureDenoiser(mix, schedule)(x, t, y if schedule.has_bridge else None)
    axis = torch.linspace(-9, 9, 901, dtype=torch.float64)  # spacing 0.02
    a, s, b = coefficients(schedule, t, x)
    expected = quadrature_posterior_mean(mix, axis, x, a, s, b, y)
    torch.testing.assert_close(out, expected, rtol=1e-7, atol=1e-7)


def test_a_clean_coordinate_conditions_the_others_exactly():
    """With sigma = 0 on coordinate 0, the denoiser of coordinate 1 is the exact denoiser of the
    conditional mixture p(x0_1 | x0_0 = x_0)."""
    schedule = VPCosine()
    mix = two_d_mixture()
    x = torch.tensor([[-1.2, 0.4], [0.9, -2.0], [2.5, 1.0]], dtype=torch.float64)
    t = torch.tensor([[0.0, 0.3], [0.0, 0.6], [0.0, 0.1]], dtype=torch.float64)
    out = ExactMixtureDenoiser(mix, schedule)(x, t)
    torch.testing.assert_close(out[:, 0], x[:, 0], rtol=0, atol=1e-12)
    for i in range(3):
        cond = mix.conditional(torch.tensor([True, False]), x[i])
        expected = ExactMixtureDenoiser(cond, schedule)(x[i : i + 1, 1:], t[i, 1].reshape(1))
        torch.testing.assert_close(out[i, 1], expected[0, 0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["vp-linear", "vp-cosine", "edm", "rectified-flow"])
def test_at_vanishing_noise_the_posterior_mean_is_the_state(name):
    schedule = SCHEDULES[name]()
    den = ExactMixtureDenoiser(two_d_mixture(), schedule)
    x = torch.tensor([[-1.0, 0.3], [4.0, -3.0], [0.2, 0.2]], dtype=torch.float64)
    torch.testing.assert_close(den(x, torch.zeros(3, dtype=torch.float64)), x, rtol=0, atol=1e-12)
    # sigma / alpha = 1e-5: E[x0 | x] = x / alpha + O(sigma^2 * score)
    t = schedule.t_from_sigma_ve(torch.full((3,), 1e-5, dtype=torch.float64))
    a = schedule.alpha(t)[:, None]
    torch.testing.assert_close(den(x, t), x / a, rtol=0, atol=1e-7)


def test_tweedie_score_matches_autograd_of_the_marginal_density(name):
    """score(x_t) = grad log p_t(x_t), where p_t is the mixture of
    N(alpha mu_k + beta y, alpha^2 Sigma_k + sigma^2 I)."""
    schedule = SCHEDULES[name]()
    mix = two_d_mixture()
    t = torch.tensor(TIMES[name], dtype=torch.float64)
    x, y = states(mix, schedule, t, seed=8)
    den = ExactMixtureDenoiser(mix, schedule)
    score = convert(den(x, t, y if schedule.has_bridge else None), "x0", "score", x, t, schedule, y)
    a, s, b = (c[:, :1, None] for c in coefficients(schedule, t, x))  # (B, 1, 1)
    xg = x.clone().requires_grad_(True)
    eye = torch.eye(2, dtype=torch.float64)
    log_terms = [
        torch.log(mix.weights[k])
        + MultivariateNormal(a[:, :, 0] * mix.means[k] + b[:, :, 0] * y, a**2 * mix.covs[k] + s**2 * eye)
        .log_prob(xg)
        for k in range(mix.num_components)
    ]
    (grad,) = torch.autograd.grad(torch.logsumexp(torch.stack(log_terms), 0).sum(), xg)
    torch.testing.assert_close(score, grad, rtol=1e-9, atol=1e-9)


# --- conditioning on component labels ------------------------------------------------------


def test_label_condition_equals_the_single_component_denoiser():
    schedule = VPLinear()
    mix = two_d_mixture()
    t = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.2], dtype=torch.float64)
    x, _ = states(mix, schedule, t, seed=9)
    den = ExactMixtureDenoiser(mix, schedule)
    labels = torch.tensor([0, 1, -1, 1, 0])
    out = den(x, t, labels)
    for i, k in enumerate(labels.tolist()):
        if k < 0:
            expected = den(x[i : i + 1], t[i : i + 1])
        else:
            single = GaussianMixture(torch.ones(1), mix.means[k : k + 1], mix.covs[k : k + 1])
            expected = ExactMixtureDenoiser(single, schedule)(x[i : i + 1], t[i : i + 1])
        torch.testing.assert_close(out[i], expected[0], rtol=1e-12, atol=1e-12)


def test_drop_cond_gives_the_null_label():
    den = ExactMixtureDenoiser(two_d_mixture(), VPLinear())
    labels = torch.tensor([0, 1, 1, 0])
    assert den.drop_cond(labels, torch.tensor([True, False, True, False])).tolist() == [-1, 1, -1, 0]
    assert labels.tolist() == [0, 1, 1, 0]
    assert den.drop_cond(None, torch.tensor([True])) is None


def test_denoiser_keeps_dtype_counts_calls_and_needs_y_under_a_bridge():
    den = ExactMixtureDenoiser(two_d_mixture(), VPCosine())
    assert den.prediction == "x0"
    out = den(torch.randn(3, 2), torch.rand(3))
    assert out.dtype == torch.float32 and den.calls == 1
    with pytest.raises(ValueError, match=r"\by\b"):
        ExactMixtureDenoiser(two_d_mixture(), OUVEBridge())(torch.randn(3, 2), torch.rand(3))


# --- GaussianMixture ------------------------------------------------------------------------


def bivariate(m1, m2, s1, s2, r):
    return [m1, m2], [[s1**2, r * s1 * s2], [r * s1 * s2, s2**2]]


def test_conditional_matches_hand_computed_gaussian_conditioning():
    (w_a, w_b) = (0.4, 0.6)
    comps = [(-1.0, 2.0, 1.5, 0.8, 0.7), (2.0, -0.5, 0.6, 1.2, -0.4)]  # m1, m2, s1, s2, rho
    means, covs = zip(*(bivariate(*c) for c in comps))
    mix = GaussianMixture(f64([w_a, w_b]), f64(means), f64(covs))
    v = 0.9
    for known in (1, 0):  # observe x2 = v, then x1 = v
        cond = mix.conditional(torch.tensor([known == 0, known == 1]), f64([v, v]))
        hid = 1 - known
        raw_w, exp_means, exp_vars = [], [], []
        for w, (m1, m2, s1, s2, r) in zip((w_a, w_b), comps):
            m, s = (m1, m2), (s1, s2)
            exp_means.append(m[hid] + r * s[hid] / s[known] * (v - m[known]))
            exp_vars.append(s[hid] ** 2 * (1 - r**2))
            density = math.exp(-0.5 * ((v - m[known]) / s[known]) ** 2) / (s[known] * math.sqrt(2 * math.pi))
            raw_w.append(w * density)
        total = sum(raw_w)
        assert cond.dim == 1 and cond.num_components == 2
        torch.testing.assert_close(cond.weights, torch.tensor([w / total for w in raw_w], dtype=torch.float64))
        torch.testing.assert_close(cond.means[:, 0], torch.tensor(exp_means, dtype=torch.float64))
        torch.testing.assert_close(cond.covs[:, 0, 0], torch.tensor(exp_vars, dtype=torch.float64))


def test_mixture_mean_and_covariance_by_hand():
    mix = one_d_mixture()
    w, m, v = [0.2, 0.5, 0.3], [-2.5, 0.0, 2.0], [0.3, 0.8, 0.1]
    mean = sum(wi * mi for wi, mi in zip(w, m))
    second = sum(wi * (vi + mi**2) for wi, mi, vi in zip(w, m, v))
    assert mix.mean().item() == pytest.approx(mean, rel=1e-12)
    assert mix.covariance().item() == pytest.approx(second - mean**2, rel=1e-12)


def test_samples_have_the_mixture_moments_and_labels():
    mix = two_d_mixture()
    n = 60000
    x, labels = mix.sample(n, generator=torch.Generator().manual_seed(0), return_labels=True)
    assert x.shape == (n, 2) and x.dtype == torch.float64
    assert abs((labels == 1).double().mean().item() - 0.7) < 5 * math.sqrt(0.21 / n)
    cov = mix.covariance()
    se = torch.sqrt(torch.diagonal(cov) / n)
    assert ((x.mean(0) - mix.mean()).abs() < 5 * se).all()
    torch.testing.assert_close(torch.cov(x.T), cov, rtol=0.05, atol=0.05)
    one = mix.sample(n, generator=torch.Generator().manual_seed(1), component=0)
    torch.testing.assert_close(torch.cov(one.T), mix.covs[0], rtol=0, atol=0.05)
    assert ((one.mean(0) - mix.means[0]).abs() < 5 * math.sqrt(1.0 / n)).all()


@pytest.mark.parametrize(
    "weights, means, covs",
    [
        ([0.5, 0.6], [[0.0], [1.0]], [[[1.0]], [[1.0]]]),
        ([1.5, -0.5], [[0.0], [1.0]], [[[1.0]], [[1.0]]]),
        ([1.0], [[0.0], [1.0]], [[[1.0]], [[1.0]]]),
        ([0.5, 0.5], [[0.0], [1.0]], [[[1.0]]]),
    ],
    ids=["weights-sum", "negative-weight", "weights-shape", "covs-shape"],
)
def test_bad_mixtures_raise(weights, means, covs):
    with pytest.raises(ValueError):
        GaussianMixture(torch.tensor(weights), torch.tensor(means), torch.tensor(covs))


# --- sliced Wasserstein ---------------------------------------------------------------------


def test_sliced_wasserstein_of_identical_and_permuted_sets_is_zero():
    a = torch.randn(500, 3, generator=torch.Generator().manual_seed(0))
    assert sliced_wasserstein(a, a) == 0.0
    assert sliced_wasserstein(a, a[torch.randperm(500, generator=torch.Generator().manual_seed(1))]) < 1e-12


def test_sliced_wasserstein_is_symmetric():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 2, generator=gen), 2 * torch.randn(400, 2, generator=gen) + 1
    ab = sliced_wasserstein(a, b, generator=torch.Generator().manual_seed(5))
    ba = sliced_wasserstein(b, a, generator=torch.Generator().manual_seed(5))
    assert ab > 0.5 and ab == pytest.approx(ba, rel=1e-12)


@pytest.mark.parametrize("shift", [0.7, -2.5])
def test_sliced_wasserstein_of_a_shifted_1d_set_is_the_shift(shift):
    a = torch.randn(300, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert sliced_wasserstein(a, a + shift, projections=16) == pytest.approx(abs(shift), rel=1e-12)


def test_sliced_wasserstein_of_a_shifted_3d_set_averages_the_projected_shift():
    # Projections of a shift v on uniform directions in 3-D are |v| u with u ~ U(-1, 1): E = |v|^2 / 3.
    a = torch.randn(200, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = torch.tensor([1.0, -2.0, 2.0], dtype=torch.float64)  # |v| = 3
    got = sliced_wasserstein(a, a + v, projections=4096, generator=torch.Generator().manual_seed(1))
    assert got == pytest.approx(3 / math.sqrt(3), rel=0.04)


def test_sliced_wasserstein_needs_equal_shapes():
    with pytest.raises(ValueError, match="same shape"):
        sliced_wasserstein(torch.zeros(10, 2), torch.zeros(11, 2))
