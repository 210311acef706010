"""A small pseudo-spectral solver for 2D incompressible Navier–Stokes: turbulent demo fields.

The flow lives on the periodic square ``[0, 2π)²`` in vorticity form::

    ∂ω/∂t + u ∂ω/∂x + v ∂ω/∂y = ν ∇²ω − μ ω + f,   ∇²ψ = −ω,   u = ∂ψ/∂y,   v = −∂ψ/∂x,

with Kolmogorov forcing ``f = A k_f cos(k_f y)`` (Meshalkin & Sinai 1961) and a linear drag
``μ`` (bottom friction) that removes the energy the inverse cascade carries to the largest
scales, so that the flow settles into a statistically stationary turbulent state: the set-up of
the Kolmogorov-flow benchmark of Kochkov et al. (2021, "Machine learning–accelerated
computational fluid dynamics"), forcing wavenumber 4 and drag 0.1, here at a viscosity that
keeps the field smooth on a 32 × 32 output grid.

Space is discretised with a Fourier–Galerkin (pseudo-spectral) method using real FFTs and the
2/3 rule (Orszag 1971): the state keeps only wavenumbers ``|k_x|, |k_y| < grid/3``, so the
quadratic nonlinearity is computed free of aliasing. The nonlinear term is evaluated in
Basdevant's (1983) form ``∂x∂y(v² − u²) + (∂x² − ∂y²)(uv)``, which needs four FFTs per
evaluation instead of five. Time is advanced with the integrating-factor fourth-order
Runge–Kutta method (IFRK4; see Kassam & Trefethen 2005, "Fourth-order time-stepping for stiff PDEs"):
viscosity and drag are integrated exactly, so a viscous decay is exact to rounding and only
the advection sets the step limit.

:func:`simulate_vorticity` returns snapshots as a numpy array, :func:`navier_stokes_dataset`
wraps them (spectrally resampled to a coarser grid) in an ``xarray.Dataset``, and
:func:`write_netcdf` stores one without overwriting existing files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xarray

__all__ = ["simulate_vorticity", "navier_stokes_dataset", "velocity_from_vorticity", "write_netcdf"]

# The random initial field holds wavenumbers 1 <= |k| <= _INITIAL_BAND with this rms vorticity;
# both are of the order of the developed flow's, so the spin-up mostly forgets the seed's
# details rather than having to build the turbulence up from nothing.
_INITIAL_BAND = 8.0
_INITIAL_RMS = 3.0
# Vorticity beyond this cannot be a float32 snapshot of any sensible run: it is a blow-up.
_BLOW_UP = 1e30


def _wavenumbers(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer wavenumbers of an ``rfft2`` of a ``(ny, nx)`` field on ``[0, 2π)²``: (ky, kx) grids."""
    ky = np.fft.fftfreq(ny, 1.0 / ny)
    kx = np.fft.rfftfreq(nx, 1.0 / nx)
    return np.meshgrid(ky, kx, indexing="ij")


def velocity_from_vorticity(omega: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The velocity ``(u, v)`` of a periodic vorticity field on ``[0, 2π)²``.

    Solves ``∇²ψ = −ω`` spectrally and differentiates: ``u = ∂ψ/∂y``, ``v = −∂ψ/∂x``, so that
    ``∂u/∂x + ∂v/∂y = 0`` and ``∂v/∂x − ∂u/∂y = ω``. The mean of ``omega`` is ignored: a periodic
    velocity field has zero mean curl, so the mean vorticity is not the curl of any velocity.

    Args:
        omega: vorticity with ``y`` then ``x`` as its last two axes, sampled at
            ``2π j / n`` along each; leading axes (e.g. time) are batch axes.

    Returns:
        ``(u, v)``, each shaped like ``omega``, in its floating dtype (float64 for integers).

    Raises:
        ValueError: if ``omega`` has fewer than two axes, an axis shorter than 2, or non-finite
            values.
    """
    omega = np.asarray(omega)
    if omega.ndim < 2 or min(omega.shape[-2:]) < 2:
        raise ValueError(f"omega must have (y, x) as its last two axes, each of length >= 2; got shape {omega.shape}")
    if not np.all(np.isfinite(omega)):
        raise ValueError("omega must be finite everywhere")
    dtype = omega.dtype if np.issubdtype(omega.dtype, np.floating) else np.dtype(np.float64)
    ny, nx = omega.shape[-2:]
    ky, kx = _wavenumbers(ny, nx)
    k2 = kx**2 + ky**2
    k2[0, 0] = 1.0
    psi_hat = np.fft.rfft2(omega.astype(np.float64)) / k2
    psi_hat[..., 0, 0] = 0.0
    u = np.fft.irfft2(1j * ky * psi_hat, s=(ny, nx))
    v = np.fft.irfft2(-1j * kx * psi_hat, s=(ny, nx))
    return u.astype(dtype, copy=False), v.astype(dtype, copy=False)


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _check_nonnegative(name: str, value: float) -> float:
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0; got {value!r}")
    return float(value)


def _random_initial(grid: int, seed: int) -> np.ndarray:
    """A smooth random vorticity field: Gaussian Fourier coefficients in a band, fixed rms."""
    rng = np.random.default_rng(seed)
    # Filtering the FFT of real white noise keeps the Hermitian symmetry a real field needs.
    noise_hat = np.fft.rfft2(rng.standard_normal((grid, grid)))
    ky, kx = _wavenumbers(grid, grid)
    k = np.hypot(kx, ky)
    noise_hat[(k < 1.0) | (k > _INITIAL_BAND)] = 0.0
    field = np.fft.irfft2(noise_hat, s=(grid, grid))
    return field * (_INITIAL_RMS / field.std())


class _IFRK4:
    """IFRK4 stepper for the spectral vorticity ``ω̂`` (rfft2 layout), dealiased by the 2/3 rule."""

    def __init__(self, grid: int, dt: float, viscosity: float, drag: float, forcing_hat: np.ndarray):
        self.grid = grid
        self.dt = dt
        ky, kx = _wavenumbers(grid, grid)
        cutoff = grid / 3.0
        self.mask = (np.abs(kx) < cutoff) & (np.abs(ky) < cutoff)
        k2 = kx**2 + ky**2
        inv_k2 = np.where(k2 > 0, 1.0 / np.where(k2 > 0, k2, 1.0), 0.0)
        # Spectral operators for u = ψ_y, v = −ψ_x with ψ̂ = ω̂ / k², stacked so that one inverse
        # FFT call yields both components.
        self.to_velocity = np.stack([1j * ky * inv_k2, -1j * kx * inv_k2]) * self.mask
        # Basdevant: u·∇ω = ∂x∂y(v² − u²) + (∂x² − ∂y²)(uv); the minus sign of the tendency and
        # the 2/3 truncation of the products are folded in here.
        self.from_products = np.stack([kx * ky, -(ky**2 - kx**2)]) * self.mask
        self.forcing_hat = forcing_hat * self.mask
        linear = -viscosity * k2 - drag
        self.e_half = np.exp(0.5 * dt * linear)
        self.e_full = self.e_half**2

    def tendency(self, w_hat: np.ndarray) -> np.ndarray:
        """Advection plus forcing, ``−u·∇ω + f``, in spectral space."""
        u, v = np.fft.irfft2(self.to_velocity * w_hat, s=(self.grid, self.grid))
        products = np.fft.rfft2(np.stack([v * v - u * u, u * v]))
        # −∂x∂y(·) = kx ky (·)^ and −(∂x² − ∂y²)(·) = (kx² − ky²)(·)^.
        return products[0] * self.from_products[0] + products[1] * self.from_products[1] + self.forcing_hat

    def step(self, w_hat: np.ndarray) -> np.ndarray:
        dt, e_half, e_full = self.dt, self.e_half, self.e_full
        a = self.tendency(w_hat)
        b = self.tendency(e_half * (w_hat + 0.5 * dt * a))
        c = self.tendency(e_half * w_hat + 0.5 * dt * b)
        d = self.tendency(e_full * w_hat + dt * e_half * c)
        return e_full * w_hat + (dt / 6.0) * (e_full * a + 2.0 * e_half * (b + c) + d)


def simulate_vorticity(
    *,
    grid: int = 64,
    frames: int = 200,
    dt: float = 0.02,
    save_every: int = 5,
    viscosity: float = 1e-2,
    drag: float = 0.1,
    forcing_wavenumber: int = 4,
    forcing_amplitude: float = 1.0,
    spinup: float = 20.0,
    seed: int = 0,
    initial: np.ndarray | None = None,
) -> np.ndarray:
    """Vorticity snapshots of forced, damped 2D turbulence (Kolmogorov flow).

    Starts from ``initial`` or, by default, a random field with wavenumbers ``1 <= |k| <= 8``
    drawn from ``seed``; modes beyond the 2/3 dealiasing cut-off (``|k_x|`` or ``|k_y|`` of at
    least ``grid / 3``) are removed from it first. The flow is integrated for
    ``round(spinup / dt)`` steps, then snapshot ``n`` is taken ``n * save_every`` steps later,
    i.e. at time ``round(spinup / dt) * dt + n * save_every * dt``; with ``spinup = 0``,
    snapshot 0 is the (truncated) initial field. The solver is deterministic: the same
    arguments give bit-identical output on the same machine.

    The defaults give a statistically stationary, smooth but turbulent flow: over 2000
    snapshots the kinetic energy ``<u² + v²>/2`` stays between about 0.4 and 0.9 (mean 0.63),
    the vorticity rms is about 3.6, and the enstrophy spectrum falls by about 3.4 decades from
    its peak at ``k_f = 4`` to the dealiasing cut-off ``k = 21``. Snapshots are 0.1
    time units apart; resampled to 32 × 32 (:func:`navier_stokes_dataset`), the correlation of
    the vorticity anomalies (about each point's time mean) is 0.989 at lag 1, 0.86 at lag 4,
    0.63 at lag 8 and 0.30 at lag 16, so the frames change steadily and an 8-frame forecast
    is informative but not trivial. 2000 snapshots take about 20 s on one core.

    Args:
        grid: points per side (even, >= 8); the field is sampled at ``2π j / grid``.
        frames: number of snapshots.
        dt: time step. IFRK4 treats viscosity and drag exactly, so ``dt`` is limited by
            advection only: keep ``max|u| * dt * grid / 3`` below about 2.
        save_every: steps between snapshots.
        viscosity: kinematic viscosity ``ν``.
        drag: linear drag coefficient ``μ``.
        forcing_wavenumber: ``k_f`` of the forcing ``A k_f cos(k_f y)``, below ``grid / 3``.
        forcing_amplitude: ``A``; 0 turns the forcing off.
        spinup: time integrated before the first snapshot, so that the snapshots are
            statistically stationary rather than a transient from the initial field.
        seed: seed of the random initial field (unused when ``initial`` is given).
        initial: optional ``(grid, grid)`` initial vorticity, indexed ``[y, x]``; not modified.

    Returns:
        float32 array of shape ``(frames, grid, grid)``, indexed ``[time, y, x]``.

    Raises:
        ValueError: for an argument out of range, an ``initial`` of the wrong shape or with
            non-finite values, or if the integration blows up (``dt`` too large).
    """
    grid = _check_positive_int("grid", grid, 8)
    if grid % 2:
        raise ValueError(f"grid must be even; got {grid}")
    frames = _check_positive_int("frames", frames)
    save_every = _check_positive_int("save_every", save_every)
    forcing_wavenumber = _check_positive_int("forcing_wavenumber", forcing_wavenumber)
    if forcing_wavenumber >= grid / 3:
        raise ValueError(
            f"forcing_wavenumber must be below grid / 3 = {grid / 3:.3g} to survive dealiasing; "
            f"got {forcing_wavenumber}"
        )
    if not np.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt must be finite and > 0; got {dt!r}")
    viscosity = _check_nonnegative("viscosity", viscosity)
    drag = _check_nonnegative("drag", drag)
    spinup = _check_nonnegative("spinup", spinup)
    if not np.isfinite(forcing_amplitude):
        raise ValueError(f"forcing_amplitude must be finite; got {forcing_amplitude!r}")

    if initial is None:
        omega0 = _random_initial(grid, seed)
    else:
        omega0 = np.asarray(initial, dtype=np.float64)
        if omega0.shape != (grid, grid):
            raise ValueError(f"initial must have shape (grid, grid) = ({grid}, {grid}); got {omega0.shape}")
        if not np.all(np.isfinite(omega0)):
            raise ValueError("initial must be finite everywhere")

    y = 2.0 * np.pi * np.arange(grid) / grid
    forcing = np.broadcast_to(
        (forcing_amplitude * forcing_wavenumber * np.cos(forcing_wavenumber * y))[:, None], (grid, grid)
    )
    stepper = _IFRK4(grid, float(dt), viscosity, drag, np.fft.rfft2(forcing))
    w_hat = np.fft.rfft2(omega0) * stepper.mask

    out = np.empty((frames, grid, grid), dtype=np.float32)
    # An unstable dt overflows to inf/nan within a few steps; that is reported below as an
    # error, so numpy's floating-point warnings would only repeat it.
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(int(round(spinup / dt))):
            w_hat = stepper.step(w_hat)
        for n in range(frames):
            if n:
                for _ in range(save_every):
                    w_hat = stepper.step(w_hat)
            snapshot = np.fft.irfft2(w_hat, s=(grid, grid))
            if not np.all(np.isfinite(snapshot)) or np.abs(snapshot).max() > _BLOW_UP:
                raise ValueError(f"the integration blew up before snapshot {n}; reduce dt (got {dt})")
            out[n] = snapshot
    return out


def _resample_to_centres(omega: np.ndarray, out_grid: int) -> np.ndarray:
    """Fourier-truncate ``(..., n, n)`` node samples to ``|k| < out_grid / 2`` and evaluate the
    result at the cell centres ``2π (m + 1/2) / out_grid``."""
    n = omega.shape[-1]
    src = np.fft.rfft2(omega.astype(np.float64))
    ky_out = np.fft.fftfreq(out_grid, 1.0 / out_grid).astype(int)
    kx_out = np.fft.rfftfreq(out_grid, 1.0 / out_grid).astype(int)
    # The out-grid Nyquist modes are dropped: shifted by half a cell they would not be real.
    keep_y = np.abs(ky_out) < out_grid / 2
    keep_x = kx_out < out_grid / 2
    dst = np.zeros(omega.shape[:-2] + (out_grid, kx_out.size), dtype=complex)
    rows = np.flatnonzero(keep_y)
    cols = np.flatnonzero(keep_x)
    block = src[..., (ky_out[rows] % n)[:, None], kx_out[cols][None, :]]
    phase = np.exp(1j * np.pi / out_grid * (ky_out[rows][:, None] + kx_out[cols][None, :]))
    dst[..., rows[:, None], cols[None, :]] = block * phase * (out_grid / n) ** 2
    return np.fft.irfft2(dst, s=(out_grid, out_grid))


def navier_stokes_dataset(
    *,
    frames: int = 400,
    grid: int = 64,
    out_grid: int = 32,
    trajectories: int = 1,
    seed: int = 0,
    **solver_options: Any,
) -> "xarray.Dataset":
    """Kolmogorov-flow vorticity snapshots as an ``xarray.Dataset``.

    The flow is simulated on ``grid``² points by :func:`simulate_vorticity` and resampled to
    ``out_grid``² by Fourier truncation (wavenumbers ``|k| < out_grid / 2``) evaluated at cell
    centres, so the output is the smooth large-scale part of the field with no aliasing from
    the small scales.

    With ``trajectories == 1`` (the default) the variable ``vorticity`` has dims
    ``(time, y, x)``. Independent runs cannot be concatenated along time (the joins would be
    jumps no flow makes), so ``trajectories > 1`` adds a leading ``trajectory`` dim:
    ``(trajectory, time, y, x)``, run ``i`` starting from the random field of seed ``seed + i``
    (run 0 is thus the single-trajectory dataset).

    Coordinates: ``time`` (float64 physical time, starting after the spin-up), ``y`` and ``x``
    (float64 cell centres ``2π (m + 1/2) / out_grid`` in ``[0, 2π)``). The dataset's attrs
    record the solver settings (``viscosity``, ``drag``, ``forcing_wavenumber``,
    ``forcing_amplitude``, ``dt``, ``save_every``, ``spinup``, ``grid``, ``seed``, ...) so a
    stored file says how it was made.

    Args:
        frames: snapshots per trajectory.
        grid: solver points per side.
        out_grid: output points per side, ``4 <= out_grid <= grid``.
        trajectories: number of independent runs.
        seed: seed of the (first) run's initial field.
        **solver_options: further keyword arguments of :func:`simulate_vorticity`
            (``dt``, ``save_every``, ``viscosity``, ``drag``, ``forcing_wavenumber``,
            ``forcing_amplitude``, ``spinup``, ``initial``).

    Returns:
        The dataset, float32 ``vorticity``.

    Raises:
        ValueError: for a bad ``out_grid`` or ``trajectories``, an unknown solver option, or any
            error of :func:`simulate_vorticity`.
    """
    import inspect

    import xarray as xr

    grid = _check_positive_int("grid", grid, 8)
    out_grid = _check_positive_int("out_grid", out_grid, 4)
    if out_grid > grid:
        raise ValueError(f"out_grid must be at most grid = {grid}; got {out_grid}")
    trajectories = _check_positive_int("trajectories", trajectories)
    defaults = {
        name: p.default
        for name, p in inspect.signature(simulate_vorticity).parameters.items()
        if name not in ("grid", "frames", "seed")
    }
    unknown = sorted(set(solver_options) - set(defaults))
    if unknown:
        raise ValueError(f"unknown solver options {unknown}; valid ones are {sorted(defaults)}")
    settings = {**defaults, **solver_options}

    runs = [
        _resample_to_centres(
            simulate_vorticity(grid=grid, frames=frames, seed=seed + i, **settings), out_grid
        ).astype(np.float32)
        for i in range(trajectories)
    ]
    dt = float(settings["dt"])
    start = int(round(settings["spinup"] / dt)) * dt
    time = start + np.arange(frames, dtype=np.float64) * settings["save_every"] * dt
    centres = 2.0 * np.pi * (np.arange(out_grid) + 0.5) / out_grid
    cell = "cell centre in the periodic [0, 2pi)"
    coords = {
        "time": ("time", time, {"long_name": "time", "units": "1", "description": "nondimensional time"}),
        "y": ("y", centres, {"long_name": "y", "units": "1", "description": cell}),
        "x": ("x", centres.copy(), {"long_name": "x", "units": "1", "description": cell}),
    }
    if trajectories == 1:
        data, dims = runs[0], ("time", "y", "x")
    else:
        data, dims = np.stack(runs), ("trajectory", "time", "y", "x")
        coords["trajectory"] = ("trajectory", np.arange(trajectories), {"long_name": "run index"})
    vorticity = xr.Variable(
        dims, data, {"long_name": "vorticity", "units": "1", "description": "dv/dx - du/dy, nondimensional"}
    )
    attrs = {
        "title": "2D Kolmogorov flow, forced and damped incompressible Navier-Stokes (vorticity form)",
        "equation": (
            "dw/dt + u.grad(w) = viscosity lap(w) - drag w + forcing_amplitude k cos(k y), k = forcing_wavenumber"
        ),
        "method": (
            "pseudo-spectral (rfft2, 2/3-rule dealiasing), integrating-factor RK4; "
            "output Fourier-truncated to cell centres"
        ),
        "domain": "periodic [0, 2pi) x [0, 2pi)",
        "units": "nondimensional",
        "grid": grid,
        "out_grid": out_grid,
        "dt": dt,
        "save_every": int(settings["save_every"]),
        "frame_interval": float(settings["save_every"]) * dt,
        "spinup": float(settings["spinup"]),
        "viscosity": float(settings["viscosity"]),
        "drag": float(settings["drag"]),
        "forcing_wavenumber": int(settings["forcing_wavenumber"]),
        "forcing_amplitude": float(settings["forcing_amplitude"]),
        "seed": int(seed),
        "trajectories": trajectories,
        "initial": "random band-limited" if settings["initial"] is None else "user-supplied",
    }
    return xr.Dataset({"vorticity": vorticity}, coords=coords, attrs=attrs)


def write_netcdf(ds: "xarray.Dataset", path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``ds`` to a NetCDF-4 file with the h5netcdf engine.

    Args:
        ds: the dataset.
        path: the file to write; its folder must exist.
        overwrite: replace an existing file instead of refusing.

    Returns:
        The path written.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    ds.to_netcdf(path, engine="h5netcdf")
    return path
