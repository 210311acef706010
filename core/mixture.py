"""Gaussian mixtures and their exact denoiser.

A Gaussian-mixture data distribution has a closed-form posterior mean ``E[x0 | x_t]`` under
every schedule, so samplers can be checked against the true distribution with no training
(the analytic check used by the tests and ``benchmarks/samplers.py``). The exact denoiser also
handles per-element times: with ``x = A x0 + S eps`` for diagonal ``A``, ``S``, each component
is a linear-Gaussian observation model, and elements with ``sigma = 0`` act as exact
observations (which is how the known-values mask's ``clean`` mode conditions on them).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from polydiff.broadcast import time_like
from polydiff.denoiser import Denoiser
from polydiff.schedules import Schedule

__all__ = ["GaussianMixture", "ExactMixtureDenoiser", "sliced_wasserstein"]


class GaussianMixture:
    """A mixture of full-covariance Gaussians in D dimensions.

    Args:
        weights: component weights, shape (K,), summing to one.
        means: shape (K, D).
        covs: shape (K, D, D), symmetric positive definite.
    """

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor):
        weights = torch.as_tensor(weights, dtype=torch.float64)
        means = torch.as_tensor(means, dtype=torch.float64)
        covs = torch.as_tensor(covs, dtype=torch.float64)
        k, d = means.shape
        if weights.shape != (k,) or covs.shape != (k, d, d):
            raise ValueError(
                f"shapes disagree: weights {tuple(weights.shape)}, means {tuple(means.shape)}, "
                f"covs {tuple(covs.shape)}; expected (K,), (K, D), (K, D, D)"
            )
        if (weights < 0).any() or abs(float(weights.sum()) - 1) > 1e-6:
            raise ValueError("mixture weights must be non-negative and sum to one")
        weights = weights / weights.sum()
        self.weights, self.means, self.covs = weights, means, covs
        self._chol = torch.linalg.cholesky(covs)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def mean(self) -> Tensor:
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        m = self.mean()
        centred = self.means - m
        return (self.weights[:, None, None] * (self.covs + centred[:, :, None] * centred[:, None, :])).sum(0)

    def sample(
        self, n: int, *, generator: torch.Generator | None = None, component: int | None = None,
        return_labels: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Draw ``n`` samples (float64), optionally from one component only."""
        if component is None:
            labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        else:
            labels = torch.full((n,), component, dtype=torch.long)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = self.means[labels] + torch.einsum("nij,nj->ni", self._chol[labels], z)
        return (x, labels) if return_labels else x

    def conditional(self, known_mask: Tensor, known_values: Tensor) -> "GaussianMixture":
        """The mixture of the unknown coordinates given the known ones (exact Gaussian conditioning).

        Args:
            known_mask: bool (D,), True where the coordinate is observed.
            known_values: (D,) values (only the observed ones are read).
        """
        obs = known_mask.bool()
        hid = ~obs
        xo = torch.as_tensor(known_values, dtype=torch.float64)[obs]
        log_w, means, covs = [], [], []
        for k in range(self.num_components):
            mu, cov = self.means[k], self.covs[k]
            s_oo = cov[obs][:, obs]
            s_ho = cov[hid][:, obs]
            gain = s_ho @ torch.linalg.inv(s_oo)
            means.append(mu[hid] + gain @ (xo - mu[obs]))
            covs.append(cov[hid][:, hid] - gain @ s_ho.T)
            dist = torch.distributions.MultivariateNormal(mu[obs], s_oo)
            log_w.append(torch.log(self.weights[k]) + dist.log_prob(xo))
        w = torch.softmax(torch.stack(log_w), 0)
        return GaussianMixture(w, torch.stack(means), torch.stack(covs))


class ExactMixtureDenoiser(Denoiser):
    """The exact posterior-mean denoiser of a Gaussian mixture under a given schedule.

    Predicts ``x0`` for states of shape (B, D). ``cond`` may be a LongTensor (B,) of component
    labels: the denoiser is then exact for that single component, and label -1 (the null
    condition, see :meth:`drop_cond`) means the whole mixture; this makes classifier-free
    guidance testable against known distributions. Under a bridge schedule ``cond`` is the
    signal ``y`` the process drifts toward.

    Args:
        mixture: the data distribution.
        schedule: the forward process.
    """

    def __init__(self, mixture: GaussianMixture, schedule: Schedule):
        super().__init__(prediction="x0")
        self.mixture = mixture
        self.schedule = schedule
        self.calls = 0
        self._eigh = torch.linalg.eigh(mixture.covs)

    def drop_cond(self, cond: Any, mask: Tensor) -> Any:
        return None if cond is None else torch.where(mask, torch.full_like(cond, -1), cond)

    @torch.no_grad()
    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        self.calls += 1
        y = None
        if self.schedule.has_bridge:  # a bridge's denoiser is conditioned on y itself
            y, cond = cond, None
        mix = self.mixture
        xd = x.to(torch.float64)
        tt = time_like(t, x).expand_as(xd)
        a, s = self.schedule.alpha(tt), self.schedule.sigma(tt)  # (B, D)
        if self.schedule.has_bridge:
            if y is None:
                raise ValueError("under a bridge schedule, pass y as the condition")
            xd = xd - self.schedule.beta(tt) * y.to(torch.float64)
        if tt.shape[1:].numel() and bool((tt == tt[:, :1]).all()):
            post_mean, log_lik = self._shared_time(xd, a[:, :1], s[:, :1])
        else:
            post_mean, log_lik = self._per_element(xd, a, s)
        log_w = torch.log(mix.weights)[None] + log_lik  # (B, K)
        if cond is not None:
            cond = cond.to(x.device).long()
            one = torch.nn.functional.one_hot(cond.clamp(min=0), mix.num_components).bool()
            log_w = torch.where((cond[:, None] >= 0) & ~one, torch.full_like(log_w, -math.inf), log_w)
        w = torch.softmax(log_w, dim=1)
        return (w[..., None] * post_mean).sum(1).to(x.dtype)

    def _shared_time(self, x: Tensor, a: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        # One noise level per sample: diagonalise each covariance once, Sigma = U diag(lam) U^T,
        # so (a^2 Sigma + s^2 I)^-1 is diagonal in U's basis and no per-sample factorisation is needed.
        mix = self.mixture
        lam, u = self._eigh
        resid = x[:, None, :] - a[:, :, None] * mix.means[None]  # (B, K, D)
        proj = torch.einsum("bkd,kde->bke", resid, u)
        var = a[:, :, None] ** 2 * lam[None] + s[:, :, None] ** 2  # (B, K, D)
        post_mean = mix.means[None] + a[:, :, None] * torch.einsum("kde,bke->bkd", u, lam[None] * proj / var)
        log_lik = -0.5 * ((proj**2 / var).sum(-1) + torch.log(var).sum(-1) + mix.dim * math.log(2 * math.pi))
        return post_mean, log_lik

    def _per_element(self, x: Tensor, a: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        # Per-element times: x = A x0 + S eps with diagonal A, S, a linear-Gaussian observation
        # of each component, so E[x0 | x, k] = mu + Sigma A (A Sigma A + S^2)^-1 (x - A mu).
        mix = self.mixture
        mu, cov = mix.means, mix.covs  # (K, D), (K, D, D)
        a_cov = a[:, None, :, None] * cov[None]  # (B, K, D, D) = A Sigma
        marg = a_cov * a[:, None, None, :] + torch.diag_embed(s * s)[:, None]  # A Sigma A + S^2
        resid = x[:, None, :] - a[:, None, :] * mu[None]  # (B, K, D)
        chol = torch.linalg.cholesky(marg)
        sol = torch.cholesky_solve(resid[..., None], chol)[..., 0]
        post_mean = mu[None] + torch.einsum("bkij,bki->bkj", a_cov, sol)
        log_det = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        log_lik = -0.5 * ((resid * sol).sum(-1) + log_det + mix.dim * math.log(2 * math.pi))
        return post_mean, log_lik


def sliced_wasserstein(
    a: Tensor, b: Tensor, *, projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced 2-Wasserstein distance between two equal-size point sets (Rabin et al. 2011).

    Shapes:
        a, b: (N, D) with the same N.
    """
    if a.shape != b.shape:
        raise ValueError(f"point sets must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    dirs = torch.randn(a.shape[1], projections, generator=generator, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa = torch.sort(a.to(torch.float64) @ dirs, dim=0).values
    pb = torch.sort(b.to(torch.float64) @ dirs, dim=0).values
    return float(((pa - pb) ** 2).mean().sqrt())
