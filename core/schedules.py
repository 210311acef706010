"""Forward (corruption) processes in continuous time t in [0, 1].

Every schedule describes the marginal ``x_t = alpha(t) x0 + beta(t) y + sigma(t) eps`` with
``alpha(0) = 1`` and ``sigma(0) = 0`` (t = 0 is clean data), where ``y`` is an optional
conditioning signal the mean drifts toward (only bridge processes have ``beta != 0``). Writing
``x' = x - beta(t) y`` turns every schedule into the plain ``x' = alpha x0 + sigma eps``, which is
how samplers stay schedule-agnostic.

Schedules are small immutable objects; all their maths is done in float64 and returned as float64
tensors of the shape of ``t`` (callers cast to the state's dtype).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "Schedule",
    "VPLinear",
    "VPCosine",
    "EDM",
    "RectifiedFlow",
    "OUVEBridge",
]


def _f64(t: Tensor | float) -> Tensor:
    return torch.as_tensor(t, dtype=torch.float64)


def _prior_dtype(dtype, device, y):
    if y is not None:
        return (dtype or y.dtype), (device if device is not None else y.device)
    return (dtype or torch.float32), device


class Schedule:
    """Base class of the Gaussian forward processes.

    Subclasses implement :meth:`alpha`, :meth:`sigma` and their time derivatives; bridges also
    implement :meth:`beta`. Everything else (log-SNR, its inverse, the SDE coefficients, the
    forward corruption) follows from those.

    Attributes:
        t_min: the smallest positive time samplers visit before their final step to t = 0.
        t_max: the time sampling starts from.
        has_bridge: whether the mean drifts toward a conditioning signal ``y``.
    """

    t_min: float = 1e-3
    t_max: float = 1.0
    has_bridge: bool = False

    def __setattr__(self, name, value):  # immutable once constructed
        if getattr(self, "_frozen", False):
            raise AttributeError(f"{type(self).__name__} is immutable; build a new one instead")
        super().__setattr__(name, value)

    def _freeze(self) -> None:
        object.__setattr__(self, "_frozen", True)

    # --- the marginal ---------------------------------------------------------------------
    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def beta(self, t: Tensor) -> Tensor:
        """Coefficient of the conditioning signal ``y`` in the mean (zero unless a bridge)."""
        return torch.zeros_like(_f64(t))

    def d_alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def d_beta(self, t: Tensor) -> Tensor:
        return torch.zeros_like(_f64(t))

    def log_snr(self, t: Tensor) -> Tensor:
        """``log(alpha^2 / sigma^2)``; +inf at t = 0."""
        t = _f64(t)
        return 2.0 * (torch.log(self.alpha(t)) - torch.log(self.sigma(t)))

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """Inverse of :meth:`log_snr` on ``[0, t_max]`` (bisection in float64 by default)."""
        target = _f64(log_snr)
        lo = torch.zeros_like(target)
        hi = torch.full_like(target, self.t_max)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            above = self.log_snr(mid) > target  # log-SNR falls with t
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    def t_from_sigma_ve(self, sigma_ve: Tensor) -> Tensor:
        """Time at which the variance-exploding equivalent noise level ``sigma/alpha`` is given."""
        return self.t_from_log_snr(-2.0 * torch.log(_f64(sigma_ve)))

    # --- the SDE ----------------------------------------------------------------------------
    def drift_coefficient(self, t: Tensor) -> Tensor:
        """``f(t) = alpha'/alpha`` in ``dx' = f(t) x' dt + g(t) dW`` (Song et al. 2021)."""
        t = _f64(t)
        return self.d_alpha(t) / self.alpha(t)

    def diffusion_squared(self, t: Tensor) -> Tensor:
        """``g(t)^2 = d(sigma^2)/dt - 2 f(t) sigma^2``, so the SDE has this schedule's marginals."""
        t = _f64(t)
        s = self.sigma(t)
        return 2.0 * s * self.d_sigma(t) - 2.0 * self.drift_coefficient(t) * s * s

    # --- corruption and the prior ---------------------------------------------------------
    def sample_t(
        self, n: int, *, generator: torch.Generator | None = None, device=None
    ) -> Tensor:
        """Training times, uniform on ``[t_min, t_max]`` unless a schedule says otherwise."""
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
        return (self.t_min + (self.t_max - self.t_min) * u).float()

    def corrupt(self, x0: Tensor, t: Tensor, noise: Tensor, y: Tensor | None = None) -> Tensor:
        """Draw ``x_t`` given clean data, times (per sample or per element) and noise.

        Shapes:
            x0, noise, y: (B, ...); t: (B,) or a prefix of x0's shape; returns (B, ...).
        """
        from polydiff.broadcast import time_like

        tt = time_like(t, x0)
        x = self.alpha(tt).to(x0.dtype) * x0 + self.sigma(tt).to(x0.dtype) * noise
        if self.has_bridge:
            if y is None:
                raise ValueError(f"{type(self).__name__} is a bridge: pass the conditioning signal y")
            x = x + self.beta(tt).to(x0.dtype) * y
        return x

    def prior(
        self,
        shape: tuple[int, ...],
        *,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device=None,
    ) -> Tensor:
        """A sample of ``x`` at ``t_max`` (the data term ``alpha(t_max) x0`` is neglected).

        ``dtype`` defaults to ``y``'s when given (complex ``y`` gives complex noise with half the
        variance in each part), else float32.
        """
        dtype, device = _prior_dtype(dtype, device, y)
        t = _f64(self.t_max)
        noise = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        x = float(self.sigma(t)) * noise
        if self.has_bridge:
            if y is None:
                raise ValueError(f"{type(self).__name__} is a bridge: pass the conditioning signal y")
            x = x + float(self.beta(t)) * y
        return x

    def __repr__(self) -> str:
        fields = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        inner = ", ".join(f"{k}={v!r}" for k, v in fields.items())
        return f"{type(self).__name__}({inner})"


class VPLinear(Schedule):
    """Variance-preserving schedule with DDPM's linear betas (Ho et al. 2020).

    ``log alpha^2`` is interpolated linearly between the knots ``t_k = k / num_train_steps``,
    where it equals ``log prod_{j<k} (1 - beta_j)``: on its grid this schedule is exactly the
    usual discrete DDPM schedule (``alpha(t_k)^2 = alphas_cumprod[k-1]``), and between knots it
    is continuous, so any sampler grid can be used.

    Args:
        beta_start: first DDPM beta.
        beta_end: last DDPM beta.
        num_train_steps: number of discrete DDPM steps the betas are spread over.
    """

    def __init__(self, beta_start: float = 1e-4, beta_end: float = 0.02, num_train_steps: int = 1000):
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        if num_train_steps < 1:
            raise ValueError(f"num_train_steps must be positive, got {num_train_steps}")
        self.beta_start = beta_start
        self.beta_end = beta_end
        self.num_train_steps = num_train_steps
        betas = torch.linspace(beta_start, beta_end, num_train_steps, dtype=torch.float64)
        knots = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(torch.log1p(-betas), 0)])
        self._knots = knots  # log alpha^2 at t = k / N, k = 0..N
        self.t_min = 1.0 / num_train_steps
        self._freeze()

    @property
    def alphas_cumprod(self) -> Tensor:
        """The discrete schedule's ``alphas_cumprod`` (index k is time ``(k + 1) / N``)."""
        return torch.exp(self._knots[1:])

    def _log_alpha2(self, t: Tensor) -> tuple[Tensor, Tensor]:
        t = _f64(t)
        n = self.num_train_steps
        knots = self._knots.to(t.device)
        pos = t.clamp(0.0, 1.0) * n
        idx = pos.floor().clamp(max=n - 1).long()
        slope = knots[idx + 1] - knots[idx]
        return knots[idx] + (pos - idx) * slope, slope * n

    def alpha(self, t):
        return torch.exp(0.5 * self._log_alpha2(t)[0])

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(self._log_alpha2(t)[0]))

    def d_alpha(self, t):
        value, slope = self._log_alpha2(t)
        return 0.5 * slope * torch.exp(0.5 * value)

    def d_sigma(self, t):
        value, slope = self._log_alpha2(t)
        return -0.5 * slope * torch.exp(value) / torch.sqrt(-torch.expm1(value))

    def log_snr(self, t):
        value = self._log_alpha2(t)[0]
        return value - torch.log(-torch.expm1(value))

    def t_from_log_snr(self, log_snr):
        # alpha^2 = sigmoid(log_snr); invert the piecewise-linear log alpha^2 exactly.
        target = torch.nn.functional.logsigmoid(_f64(log_snr))
        knots = self._knots.to(target.device)
        descending = -knots  # increasing in k
        idx = torch.searchsorted(descending, -target.contiguous(), right=False).clamp(1, len(knots) - 1) - 1
        lo, hi = knots[idx], knots[idx + 1]
        frac = ((target - lo) / (hi - lo)).clamp(0.0, 1.0)
        return (idx + frac) / self.num_train_steps


class VPCosine(Schedule):
    """Variance-preserving cosine schedule (Nichol & Dhariwal 2021).

    ``alpha(t)^2 = cos^2(pi/2 (t + s)/(1 + s)) / cos^2(pi/2 s/(1 + s))``. Sampling starts at
    ``t_max`` < 1 because alpha(1) = 0 makes an eps-prediction network's clean estimate undefined
    there (the paper clips betas at 0.999 for the same reason).

    Args:
        s: offset that keeps the noise at small t from being too small.
        t_max: where sampling starts.
    """

    def __init__(self, s: float = 0.008, t_max: float = 0.9946):
        if s < 0:
            raise ValueError(f"s must be non-negative, got {s}")
        if not 0 < t_max <= 1:
            raise ValueError(f"t_max must lie in (0, 1], got {t_max}")
        self.s = s
        self.t_max = t_max
        self.t_min = 1e-3
        self._freeze()

    def _angle(self, t):
        return 0.5 * math.pi * (_f64(t) + self.s) / (1 + self.s)

    def alpha(self, t):
        return (torch.cos(self._angle(t)) / math.cos(0.5 * math.pi * self.s / (1 + self.s))).clamp(min=0.0)

    def sigma(self, t):
        return torch.sqrt((1.0 - self.alpha(t) ** 2).clamp(min=0.0))

    def d_alpha(self, t):
        k = 0.5 * math.pi / (1 + self.s)
        return -k * torch.sin(self._angle(t)) / math.cos(0.5 * math.pi * self.s / (1 + self.s))

    def d_sigma(self, t):
        a = self.alpha(t)
        return -a * self.d_alpha(t) / self.sigma(t)


class EDM(Schedule):
    """Variance-exploding schedule of Karras et al. 2022 (EDM): ``alpha = 1``, ``sigma = sigma_max t``.

    The time axis is linear in sigma; sampler grids put EDM's steps on it (the Karras grid with
    ``rho`` is the usual choice, :func:`polydiff.grids.karras_grid`). Training times follow EDM's
    log-normal noise distribution (``ln sigma ~ N(p_mean, p_std^2)``).

    Args:
        sigma_min: the smallest noise level sampling visits.
        sigma_max: the largest noise level (t = 1).
        rho: exponent of the Karras grid used by default with this schedule.
        p_mean: mean of ln sigma during training.
        p_std: standard deviation of ln sigma during training.
        sigma_data: standard deviation of the data, used by EDM preconditioning and weighting.
    """

    def __init__(
        self,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        sigma_data: float = 0.5,
    ):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.rho = rho
        self.p_mean = p_mean
        self.p_std = p_std
        self.sigma_data = sigma_data
        self.t_min = sigma_min / sigma_max
        self._freeze()

    def alpha(self, t):
        return torch.ones_like(_f64(t))

    def sigma(self, t):
        return self.sigma_max * _f64(t)

    def d_alpha(self, t):
        return torch.zeros_like(_f64(t))

    def d_sigma(self, t):
        return torch.full_like(_f64(t), self.sigma_max)

    def t_from_log_snr(self, log_snr):
        return torch.exp(-0.5 * _f64(log_snr)) / self.sigma_max

    def sample_t(self, n, *, generator=None, device=None):
        ln_sigma = self.p_mean + self.p_std * torch.randn(n, generator=generator, dtype=torch.float64, device=device)
        return (torch.exp(ln_sigma) / self.sigma_max).clamp(self.t_min, 1.0).float()


class RectifiedFlow(Schedule):
    """Straight-line interpolation ``x_t = (1 - t) x0 + t eps`` (Liu et al. 2023; Lipman et al. 2023).

    Its flow (velocity) target is ``eps - x0``.
    """

    def __init__(self, t_min: float = 1e-3):
        if not 0 < t_min < 1:
            raise ValueError(f"t_min must lie in (0, 1), got {t_min}")
        self.t_min = t_min
        self._freeze()

    def alpha(self, t):
        return 1.0 - _f64(t)

    def sigma(self, t):
        return _f64(t)

    def d_alpha(self, t):
        return torch.full_like(_f64(t), -1.0)

    def d_sigma(self, t):
        return torch.ones_like(_f64(t))

    def t_from_log_snr(self, log_snr):
        # alpha/sigma = exp(log_snr / 2) and alpha + sigma = 1.
        return torch.sigmoid(-0.5 * _f64(log_snr))


class OUVEBridge(Schedule):
    """Ornstein–Uhlenbeck process with variance-exploding noise (SGMSE+, Richter et al. 2023).

    SDE: ``dx = gamma (y - x) dt + sigma_min (sigma_max/sigma_min)^t sqrt(2 ln(sigma_max/sigma_min)) dW``.
    Its mean moves from the clean signal toward ``y``: ``alpha = e^{-gamma t}``,
    ``beta = 1 - e^{-gamma t}``, and
    ``sigma^2 = sigma_min^2 ((sigma_max/sigma_min)^{2t} - e^{-2 gamma t}) L / (gamma + L)``,
    ``L = ln(sigma_max/sigma_min)``. Sampling starts from ``y`` plus noise of std ``sigma(1)``.

    Args:
        gamma: stiffness of the mean reversion toward y.
        sigma_min: noise scale at t = 0.
        sigma_max: noise scale at t = 1.
        t_min: the smallest time visited before the final step (SGMSE+ uses 0.03).
    """

    has_bridge = True

    def __init__(self, gamma: float = 1.5, sigma_min: float = 0.05, sigma_max: float = 0.5, t_min: float = 0.03):
        if gamma <= 0 or not 0 < sigma_min < sigma_max:
            raise ValueError(
                f"need gamma > 0 and 0 < sigma_min < sigma_max, got {gamma}, {sigma_min}, {sigma_max}"
            )
        if not 0 < t_min < 1:
            raise ValueError(f"t_min must lie in (0, 1), got {t_min}")
        self.gamma = gamma
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.t_min = t_min
        self._freeze()

    @property
    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def alpha(self, t):
        return torch.exp(-self.gamma * _f64(t))

    def beta(self, t):
        return -torch.expm1(-self.gamma * _f64(t))

    def sigma(self, t):
        t = _f64(t)
        lr = self._log_ratio
        c = self.sigma_min**2 * lr / (self.gamma + lr)
        return torch.sqrt(c * (torch.exp(2 * lr * t) - torch.exp(-2 * self.gamma * t)))

    def d_alpha(self, t):
        return -self.gamma * self.alpha(t)

    def d_beta(self, t):
        return self.gamma * self.alpha(t)

    def d_sigma(self, t):
        t = _f64(t)
        lr = self._log_ratio
        c = self.sigma_min**2 * lr / (self.gamma + lr)
        d_var = c * (2 * lr * torch.exp(2 * lr * t) + 2 * self.gamma * torch.exp(-2 * self.gamma * t))
        return d_var / (2 * self.sigma(t))

    def prior(self, shape, *, y=None, generator=None, dtype=None, device=None):
        if y is None:
            raise ValueError("OUVEBridge starts from the conditioning signal: pass y")
        dtype, device = _prior_dtype(dtype, device, y)
        noise = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        return y + float(self.sigma(_f64(self.t_max))) * noise
