"""Tests of the pseudo-spectral Navier–Stokes solver: exact solutions, velocity, datasets, files."""

from __future__ import annotations

import numpy as np
import pytest

from polydiff_timeseries.navier_stokes import (
    navier_stokes_dataset,
    simulate_vorticity,
    velocity_from_vorticity,
    write_netcdf,
)

xr = pytest.importorskip("xarray")
pytest.importorskip("h5netcdf")

# Unforced, undamped unless a test says otherwise; no spin-up, so snapshot 0 is the initial field.
QUIET = dict(forcing_amplitude=0.0, drag=0.0, spinup=0.0)


def _mesh(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) grids of the solver's nodes 2π j / n, indexed [y, x]."""
    s = 2.0 * np.pi * np.arange(n) / n
    y, x = np.meshgrid(s, s, indexing="ij")
    return y, x


def _spectral_derivatives(field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(∂/∂y, ∂/∂x) of a periodic field on [0, 2π)², with a full complex FFT."""
    n_y, n_x = field.shape[-2:]
    ky = np.fft.fftfreq(n_y, 1.0 / n_y)[:, None]
    kx = np.fft.fftfreq(n_x, 1.0 / n_x)[None, :]
    f = np.fft.fft2(field)
    return np.fft.ifft2(1j * ky * f).real, np.fft.ifft2(1j * kx * f).real


@pytest.mark.parametrize(
    "name, k2, viscosity, drag",
    [
        ("single mode cos(3x)", 9.0, 0.05, 0.0),
        ("single mode cos(3x) with drag", 9.0, 0.05, 0.3),
        ("Taylor-Green sin x sin y", 2.0, 0.3, 0.0),
    ],
)
def test_exact_viscous_decay(name: str, k2: float, viscosity: float, drag: float) -> None:
    # Both fields make u·∇ω vanish, so ω(t) = ω(0) exp(−(ν k² + μ) t) exactly.
    y, x = _mesh(32)
    omega0 = np.cos(3 * x) if k2 == 9.0 else np.sin(x) * np.sin(y)
    dt, save_every, frames = 0.01, 10, 6
    out = simulate_vorticity(
        grid=32, frames=frames, dt=dt, save_every=save_every, initial=omega0,
        **{**QUIET, "viscosity": viscosity, "drag": drag},
    )
    assert out.shape == (frames, 32, 32) and out.dtype == np.float32
    times = np.arange(frames) * save_every * dt
    expected = omega0[None] * np.exp(-(viscosity * k2 + drag) * times)[:, None, None]
    assert np.abs(out - expected).max() <= 1e-5 * np.abs(expected).max(axis=(1, 2)).min()
    assert expected[-1].max() < 0.8  # the decay is large enough to be tested


def test_laminar_forced_response_is_exact() -> None:
    # A field of y alone has no advection; from rest, ω = A k cos(ky) (1 − e^{−λt}) / λ with λ = νk² + μ.
    y, _ = _mesh(32)
    k, amplitude, viscosity, drag = 3, 0.7, 0.02, 0.2
    out = simulate_vorticity(
        grid=32, frames=5, dt=0.01, save_every=50, initial=np.zeros((32, 32)), viscosity=viscosity,
        drag=drag, forcing_wavenumber=k, forcing_amplitude=amplitude, spinup=0.0,
    )
    rate = viscosity * k**2 + drag
    t = np.arange(5)[:, None, None] * 0.5
    expected = amplitude * k * np.cos(k * y)[None] * (1 - np.exp(-rate * t)) / rate
    np.testing.assert_allclose(out, expected, atol=1e-5 * np.abs(expected).max())


def test_advection_term_sign_and_size() -> None:
    # ω = cos x + cos 2y: ψ = cos x + cos(2y)/4, u = −sin(2y)/2, v = sin x, so
    # −u·∇ω = −(u (−sin x) + v (−2 sin 2y)) = 1.5 sin x sin 2y (hand-computed).
    y, x = _mesh(32)
    omega0 = np.cos(x) + np.cos(2 * y)
    dt = 1e-3
    out = simulate_vorticity(grid=32, frames=2, dt=dt, save_every=1, initial=omega0, viscosity=0.0, **QUIET)
    rate = (out[1].astype(np.float64) - out[0]) / dt
    np.testing.assert_allclose(rate, 1.5 * np.sin(x) * np.sin(2 * y), atol=5e-3)


def test_inviscid_flow_conserves_energy_and_enstrophy() -> None:
    # The dealiased Galerkin system conserves both exactly; only the time stepping errs.
    out = simulate_vorticity(grid=32, frames=6, dt=0.005, save_every=20, viscosity=0.0, seed=3, **QUIET)
    omega = out.astype(np.float64)
    u, v = velocity_from_vorticity(omega)
    energy = (u**2 + v**2).mean(axis=(1, 2))
    enstrophy = (omega**2).mean(axis=(1, 2))
    assert np.abs(out[-1] - out[0]).max() > 0.5 * np.abs(out[0]).max()  # the flow did evolve
    np.testing.assert_allclose(energy, energy[0], rtol=1e-4)
    np.testing.assert_allclose(enstrophy, enstrophy[0], rtol=1e-3)


def test_velocity_of_taylor_green_vortex() -> None:
    y, x = _mesh(16)
    u, v = velocity_from_vorticity(2 * np.sin(x) * np.sin(y))  # ψ = sin x sin y
    np.testing.assert_allclose(u, np.sin(x) * np.cos(y), atol=1e-12)
    np.testing.assert_allclose(v, -np.cos(x) * np.sin(y), atol=1e-12)


def test_velocity_is_divergence_free_and_its_curl_is_the_vorticity() -> None:
    rng = np.random.default_rng(1)
    omega = rng.standard_normal((2, 24, 24))
    omega -= omega.mean(axis=(1, 2), keepdims=True)
    # Drop the Nyquist modes, whose derivative is not a real field on the grid.
    spectrum = np.fft.fft2(omega)
    spectrum[..., 12, :] = 0.0
    spectrum[..., :, 12] = 0.0
    omega = np.fft.ifft2(spectrum).real
    before = omega.copy()
    u, v = velocity_from_vorticity(omega)
    np.testing.assert_array_equal(omega, before)
    assert u.shape == v.shape == omega.shape
    u_y, u_x = _spectral_derivatives(u)
    v_y, v_x = _spectral_derivatives(v)
    assert np.abs(u_x + v_y).max() < 1e-10
    np.testing.assert_allclose(v_x - u_y, omega, atol=1e-10)


def test_velocity_keeps_float32_and_rejects_bad_input() -> None:
    u, v = velocity_from_vorticity(np.zeros((8, 8), dtype=np.float32))
    assert u.dtype == v.dtype == np.float32
    with pytest.raises(ValueError, match="omega"):
        velocity_from_vorticity(np.zeros(8))
    with pytest.raises(ValueError, match="finite"):
        velocity_from_vorticity(np.full((8, 8), np.nan))


def test_seed_reproducibility() -> None:
    options = dict(grid=32, frames=3, spinup=1.0)
    first = simulate_vorticity(seed=5, **options)
    np.testing.assert_array_equal(first, simulate_vorticity(seed=5, **options))
    other = simulate_vorticity(seed=6, **options)
    assert np.abs(first - other).mean() > 0.1 * np.abs(first).mean()


def test_forced_flow_stays_bounded_and_moves() -> None:
    out = simulate_vorticity(grid=32, frames=20, spinup=2.0, seed=2).astype(np.float64)
    assert np.all(np.isfinite(out))
    rms = np.sqrt((out**2).mean(axis=(1, 2)))
    assert 0.5 < rms.min() and rms.max() < 20.0
    assert np.abs(out[-1] - out[0]).mean() > 0.1 * np.abs(out[0]).mean()


def test_simulate_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="initial must have shape"):
        simulate_vorticity(grid=32, frames=1, initial=np.zeros((16, 16)))
    with pytest.raises(ValueError, match="forcing_wavenumber"):
        simulate_vorticity(grid=32, frames=1, forcing_wavenumber=11)
    with pytest.raises(ValueError, match="grid must be even"):
        simulate_vorticity(grid=33, frames=1)
    with pytest.raises(ValueError, match="dt"):
        simulate_vorticity(grid=32, frames=1, dt=0.0)
    with pytest.raises(ValueError, match="blew up"):
        simulate_vorticity(grid=32, frames=3, dt=5.0, spinup=0.0)


def test_dataset_layout_and_attrs() -> None:
    ds = navier_stokes_dataset(
        frames=4, grid=32, out_grid=16, seed=1, spinup=0.4, dt=0.02, save_every=5, viscosity=0.02
    )
    assert ds["vorticity"].dims == ("time", "y", "x")
    assert ds["vorticity"].shape == (4, 16, 16) and ds["vorticity"].dtype == np.float32
    np.testing.assert_allclose(ds["time"].values, 0.4 + 0.1 * np.arange(4))
    assert ds["time"].dtype == np.float64
    centres = 2 * np.pi * (np.arange(16) + 0.5) / 16
    np.testing.assert_allclose(ds["x"].values, centres)
    np.testing.assert_allclose(ds["y"].values, centres)
    for name, value in dict(viscosity=0.02, drag=0.1, forcing_wavenumber=4, forcing_amplitude=1.0, dt=0.02,
                            save_every=5, spinup=0.4, grid=32, seed=1).items():
        assert ds.attrs[name] == value, name
    assert "units" in ds.attrs and "units" in ds["vorticity"].attrs


def test_dataset_resampling_matches_the_analytic_field() -> None:
    # Modes sharing one |k|² = 5 have ψ ∝ ω, hence no advection: the unforced field just decays,
    # and the output must be it at the output's cell centres (both axes shifted, ±k mixed).
    y, x = _mesh(32)
    viscosity = 0.05

    def field(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.cos(x + 2 * y) + np.sin(2 * x - y + 1.0) - 0.5 * np.cos(x - 2 * y + 0.3)

    ds = navier_stokes_dataset(
        frames=3, grid=32, out_grid=12, initial=field(y, x), viscosity=viscosity, dt=0.01, save_every=20, **QUIET
    )
    t = ds["time"].values[:, None, None]
    yy, xx = np.meshgrid(ds["y"].values, ds["x"].values, indexing="ij")
    expected = np.exp(-5 * viscosity * t) * field(yy, xx)[None]
    assert expected[-1].max() < 0.95 * expected[0].max()
    np.testing.assert_allclose(ds["vorticity"].values, expected, atol=2e-6)


def test_dataset_trajectories() -> None:
    options = dict(frames=2, grid=32, out_grid=16, seed=3, spinup=0.2)
    single = navier_stokes_dataset(**options)
    many = navier_stokes_dataset(trajectories=2, **options)
    assert many["vorticity"].dims == ("trajectory", "time", "y", "x")
    np.testing.assert_array_equal(many["vorticity"].values[0], single["vorticity"].values)
    assert not np.array_equal(many["vorticity"].values[0], many["vorticity"].values[1])


def test_dataset_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="out_grid"):
        navier_stokes_dataset(frames=1, grid=32, out_grid=64)
    with pytest.raises(ValueError, match="unknown solver options.*viscocity"):
        navier_stokes_dataset(frames=1, grid=32, viscocity=0.1)


def test_netcdf_round_trip_and_no_overwrite(tmp_path) -> None:
    ds = navier_stokes_dataset(frames=3, grid=32, out_grid=16, spinup=0.2)
    path = write_netcdf(ds, tmp_path / "flow.nc")
    assert path == tmp_path / "flow.nc"
    with xr.open_dataset(path, engine="h5netcdf") as back:
        back = back.load()
    xr.testing.assert_identical(back, ds)

    with pytest.raises(FileExistsError, match="flow.nc"):
        write_netcdf(ds.isel(time=slice(0, 1)), path)
    with xr.open_dataset(path, engine="h5netcdf") as kept:
        assert kept.sizes["time"] == 3
    write_netcdf(ds.isel(time=slice(0, 1)), path, overwrite=True)
    with xr.open_dataset(path, engine="h5netcdf") as replaced:
        assert replaced.sizes["time"] == 1


@pytest.mark.slow
def test_default_flow_is_stationary_and_forecastable() -> None:
    # The defaults' purpose: a bounded, turbulent field that decorrelates over ~10 frames.
    ds = navier_stokes_dataset(frames=1000)
    omega = ds["vorticity"].values.astype(np.float64)
    u, v = velocity_from_vorticity(omega)
    energy = 0.5 * (u**2 + v**2).mean(axis=(1, 2))
    quarters = energy.reshape(4, -1).mean(axis=1)
    assert quarters.max() < 1.5 * quarters.min()
    anomaly = omega - omega.mean(axis=0)

    def autocorrelation(lag: int) -> float:
        a, b = anomaly[:-lag], anomaly[lag:]
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))

    assert 0.95 < autocorrelation(1) < 0.999
    assert 0.3 < autocorrelation(8) < 0.85
