"""Sampling grids: end points, monotonicity, Karras eq. 5 and even log-SNR spacing, validation."""

from __future__ import annotations

import math

import pytest
import torch

from polydiff.grids import GRIDS, check_grid, karras_grid, logsnr_grid, make_grid, uniform_grid
from polydiff.schedules import EDM, OUVEBridge, RectifiedFlow, VPCosine, VPLinear

SCHEDULES = {
    "vp-linear": VPLinear,
    "vp-cosine": VPCosine,
    "edm": EDM,
    "rectified-flow": RectifiedFlow,
    "ou-ve-bridge": OUVEBridge,
}
BUILDERS = {"uniform": uniform_grid, "karras": karras_grid, "logsnr": logsnr_grid}
LOG_SNR_FLOOR = -30.0  # where the grids clip schedules that reach pure noise (rectified flow)


@pytest.fixture(params=list(SCHEDULES), ids=list(SCHEDULES))
def schedule(request):
    return SCHEDULES[request.param]()


def sigma_ve(schedule, t: torch.Tensor) -> torch.Tensor:
    return schedule.sigma(t) / schedule.alpha(t)


def start_sigma_ve(schedule) -> float:
    """The VE noise level sampling starts from, clipped at the log-SNR floor."""
    t_max = torch.tensor(schedule.t_max, dtype=torch.float64)
    return min(sigma_ve(schedule, t_max).item(), math.exp(-0.5 * LOG_SNR_FLOOR))


def karras_eq5(s_max: float, s_min: float, n: int, rho: float) -> torch.Tensor:
    """Karras et al. 2022, eq. 5, written out term by term."""
    return torch.tensor(
        [(s_max ** (1 / rho) + i / (n - 1) * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho for i in range(n)],
        dtype=torch.float64,
    )


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("steps", [1, 2, 5, 18])
def test_grid_shape_end_points_and_monotonicity(schedule, name, steps):
    grid = BUILDERS[name](schedule, steps)
    assert grid.dtype == torch.float64 and grid.shape == (steps + 1,)
    assert torch.isfinite(grid).all()
    assert (grid[1:] < grid[:-1]).all()
    assert grid[-1].item() == 0.0
    if steps >= 2:
        assert grid[-2].item() == schedule.t_min
    t_max = torch.tensor(schedule.t_max, dtype=torch.float64)
    if schedule.log_snr(t_max).item() >= LOG_SNR_FLOOR or name == "uniform":
        assert grid[0].item() == schedule.t_max
    else:  # rectified flow: pure noise at t = 1, so the grid starts where log-SNR = -30
        assert grid[0].item() == pytest.approx(schedule.t_max, abs=1e-6)
        assert schedule.log_snr(grid[0]).item() == pytest.approx(LOG_SNR_FLOOR, abs=1e-6)


def test_uniform_grid_is_evenly_spaced(schedule):
    grid = uniform_grid(schedule, 7)
    step = (schedule.t_max - schedule.t_min) / 6
    torch.testing.assert_close(grid[:-2] - grid[1:-1], torch.full((6,), step, dtype=torch.float64))


@pytest.mark.parametrize("steps", [2, 5, 18])
@pytest.mark.parametrize("rho", [7.0, 3.0])
def test_karras_grid_follows_eq5(schedule, steps, rho):
    grid = karras_grid(schedule, steps, rho=rho)
    t_min = torch.tensor(schedule.t_min, dtype=torch.float64)
    expected = karras_eq5(start_sigma_ve(schedule), sigma_ve(schedule, t_min).item(), steps, rho)
    torch.testing.assert_close(sigma_ve(schedule, grid[:-1]), expected, rtol=1e-9, atol=0)


def test_karras_grid_for_edm_is_the_papers_sigmas():
    schedule = EDM()
    grid = karras_grid(schedule, 18)
    torch.testing.assert_close(80.0 * grid[:-1], karras_eq5(80.0, 0.002, 18, 7.0), rtol=1e-12, atol=0)


@pytest.mark.parametrize("steps", [2, 5, 18])
def test_logsnr_grid_is_evenly_spaced_in_log_snr(schedule, steps):
    grid = logsnr_grid(schedule, steps)
    lam = schedule.log_snr(grid[:-1])
    t_min = torch.tensor(schedule.t_min, dtype=torch.float64)
    lo, hi = -2 * math.log(start_sigma_ve(schedule)), schedule.log_snr(t_min).item()
    torch.testing.assert_close(lam, torch.linspace(lo, hi, steps, dtype=torch.float64), rtol=0, atol=1e-8)


def test_auto_is_karras_with_the_schedules_rho_for_edm():
    for rho in (7.0, 4.0):
        schedule = EDM(rho=rho)
        grid = make_grid("auto", schedule, 10)
        torch.testing.assert_close(80.0 * grid[:-1], karras_eq5(80.0, 0.002, 10, rho), rtol=1e-12, atol=0)
        assert torch.equal(grid, make_grid("karras", schedule, 10))
    assert torch.equal(make_grid("karras", EDM(), 10, rho=3.0), karras_grid(EDM(), 10, rho=3.0))


@pytest.mark.parametrize("name", ["vp-linear", "vp-cosine", "rectified-flow", "ou-ve-bridge"])
def test_auto_is_logsnr_elsewhere(name):
    schedule = SCHEDULES[name]()
    assert torch.equal(make_grid("auto", schedule, 9), logsnr_grid(schedule, 9))


def test_make_grid_by_name_matches_the_builders(schedule):
    for name, build in BUILDERS.items():
        assert torch.equal(make_grid(name, schedule, 6), build(schedule, 6))


def test_rectified_flow_grids_are_finite_in_log_snr():
    schedule = RectifiedFlow()
    for name in GRIDS:
        grid = make_grid(name, schedule, 12)
        assert torch.isfinite(grid).all(), name
        if name not in ("uniform", "trailing"):  # these start exactly at pure noise, t = 1
            assert torch.isfinite(schedule.log_snr(grid[:-1])).all(), name


# --- validation -----------------------------------------------------------------------------


def test_unknown_grid_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        make_grid("cosine", EDM(), 10)
    message = str(info.value)
    assert "cosine" in message
    for name in ("auto", "uniform", "karras", "logsnr"):
        assert name in message


@pytest.mark.parametrize("steps", [0, -3, 2.5])
def test_bad_step_counts_raise(steps):
    for build in BUILDERS.values():
        with pytest.raises(ValueError, match="steps"):
            build(VPLinear(), steps)


def test_explicit_grid_is_validated_and_returned_as_float64():
    grid = make_grid([1.0, 0.5, 0.1, 0.0], EDM(), 3)
    assert grid.dtype == torch.float64
    assert grid.tolist() == [1.0, 0.5, 0.1, 0.0]
    assert check_grid(torch.tensor([0.8, 0.3])).tolist() == pytest.approx([0.8, 0.3])


@pytest.mark.parametrize(
    "grid, match",
    [
        ([0.0, 0.5, 1.0], "decrease"),
        ([1.0, 0.2, 0.5, 0.0], "decrease"),
        ([1.5, 0.5, 0.0], r"\[0, 1\]"),
        ([1.0, 0.5, -0.1], r"\[0, 1\]"),
        ([1.0, math.nan, 0.0], "finite"),
        ([1.0, math.inf, 0.0], "finite"),
        ([0.5], "at least two"),
        ([], "at least two"),
        (0.5, "at least two"),
    ],
    ids=["increasing", "not-monotone", "above-one", "below-zero", "nan", "inf", "one-point", "empty", "scalar"],
)
def test_bad_explicit_grids_raise_with_a_helpful_message(grid, match):
    with pytest.raises(ValueError, match=match):
        make_grid(grid, VPLinear(), 3)


def test_per_element_grids_are_accepted():
    # (n + 1, B, T): frame 0 finishes first, frame 2 waits at full noise (rolling diffusion).
    column = torch.tensor([[1.0, 1.0, 1.0], [0.5, 1.0, 1.0], [0.0, 0.5, 1.0], [0.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
    grid = torch.stack([column, column.flip(-1)], dim=1)  # (5, 2, 3)
    checked = check_grid(grid)
    assert checked.shape == (5, 2, 3) and checked.dtype == torch.float64
    assert torch.equal(make_grid(grid, VPLinear(), 4), checked)


def test_per_element_grids_must_not_increase_anywhere():
    grid = torch.tensor([[1.0, 1.0], [0.5, 0.6], [0.6, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="decrease"):
        check_grid(grid)


def test_per_element_grids_must_move_every_element():
    grid = torch.tensor([[1.0, 0.7], [0.5, 0.7], [0.0, 0.7]])
    with pytest.raises(ValueError, match="decrease"):
        check_grid(grid)


def test_trailing_grid_is_even_from_t_max_to_zero(schedule):
    grid = make_grid("trailing", schedule, 5)
    torch.testing.assert_close(grid, torch.linspace(schedule.t_max, 0, 6, dtype=torch.float64))


def test_leading_grid_reproduces_discrete_leading_timesteps():
    """DDIM's "leading" spacing for 1000 training steps and 5 sampling steps: k = 800, 600, ..., 0."""
    schedule = VPLinear()
    grid = make_grid("leading", schedule, 5)
    expected = torch.tensor([801, 601, 401, 201, 1], dtype=torch.float64) / 1000
    torch.testing.assert_close(grid[:-1], expected, rtol=0, atol=1e-12)
    assert grid[-1] == 0
