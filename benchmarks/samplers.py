#!/usr/bin/env python
"""Sampler benchmark: polydiff's samplers against huggingface diffusers' schedulers.

Run as ``python benchmarks/samplers.py [--quick] [--out benchmarks/results/samplers.json]``.

Both libraries sample a Gaussian mixture (D = 2, and D = 8 unless --quick) under
``VPLinear()`` (DDPM's 1000 linear betas 1e-4..0.02; integer timestep k is polydiff time
(k+1)/1000) with the exact posterior-mean denoiser, so the only error left is the sampler's
(plus the finite-sample noise of the metric). Reported:

* accuracy: the sliced-Wasserstein distance (SWD, fixed projections) between N samples and N
  fresh exact mixture samples, averaged over seeds, for every polydiff sampler x grid and every
  diffusers scheduler x spacing option, at NFE budgets 5, 10, 20, 50, 100; plus the noise floor
  (SWD between two independent exact sample sets of size N);
* exactness checks: polydiff's DDIM / DPM-Solver++(2M) / Euler run on the very time grid a
  diffusers scheduler uses must reproduce that scheduler's output sample by sample;
* speed: wall time per step excluding the denoiser (the denoiser is wrapped and its own time
  subtracted), median over repeats, batch 4096, NFE 10 and 50;
* targets, computed from the numbers above (never edited by hand).

The results file is written with the command line, the machine and the budget.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import math
import os
import pstats
import shlex
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

import diffusers
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler

import polydiff

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_info as common_machine_info  # noqa: E402
from polydiff.grids import GRIDS as POLYDIFF_GRIDS
from polydiff.mixture import ExactMixtureDenoiser, GaussianMixture, sliced_wasserstein
from polydiff.parameterization import convert
from polydiff.samplers import SAMPLERS, evaluations
from polydiff.samplers import sample as pd_sample
from polydiff.samplers.guided import NonFiniteError
from polydiff.schedules import VPLinear

logging.getLogger("diffusers").setLevel(logging.ERROR)
diffusers.utils.logging.set_verbosity_error()

NFES = [5, 10, 20, 50, 100]
GRIDS = [g for g in POLYDIFF_GRIDS if g != "auto"]  # every built-in grid (uniform, karras, logsnr, trailing, leading)
TIMING_NFES = [10, 50]
RELIABLE_IQR = 0.5  # a timing comparison is flagged unreliable when a median's IQR exceeds this fraction of it
SCHEDULE = VPLinear()
N_TRAIN = SCHEDULE.num_train_steps
DIFFUSERS_BASE = dict(num_train_timesteps=N_TRAIN, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                      prediction_type="epsilon")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# The data and the exact denoiser
# --------------------------------------------------------------------------------------------

def make_mixture(dim: int) -> GaussianMixture:
    """D = 2: 8 anisotropic components on a ring of radius 2. D > 2: 6 random components."""
    g = torch.Generator().manual_seed(1234 + dim)
    if dim == 2:
        k = 8
        ang = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
        means = 2.0 * torch.stack([ang.cos(), ang.sin()], 1)
    else:
        k = 6
        means = 1.5 * torch.randn(k, dim, generator=g, dtype=torch.float64)
    factor = 0.15 * torch.randn(k, dim, dim, generator=g, dtype=torch.float64)
    covs = factor @ factor.transpose(1, 2) + 0.01 * torch.eye(dim, dtype=torch.float64)
    weights = torch.rand(k, generator=g, dtype=torch.float64) + 0.5
    return GaussianMixture(weights / weights.sum(), means, covs)


class SharedTimeMixtureDenoiser(ExactMixtureDenoiser):
    """``ExactMixtureDenoiser`` with a fast path for the case every sampler here produces.

    When all samples share one time (and there is no condition), the marginal covariance
    ``a^2 Sigma_k + s^2 I`` is the same for every sample, so it is factored once per component
    instead of once per (sample, component) as the parent does; the arithmetic is otherwise the
    parent's (checked against it at start-up, see ``denoiser_check`` in the results). Anything
    else falls back to the parent.
    """

    def __init__(self, mixture: GaussianMixture, schedule):
        super().__init__(mixture, schedule)
        self._log_weights = torch.log(mixture.weights)

    @torch.no_grad()
    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        t = torch.as_tensor(t)
        flat = t.reshape(-1)
        if (cond is not None or self.schedule.has_bridge or x.ndim != 2 or t.ndim > 1 or flat.numel() == 0
                or not bool((flat == flat[0]).all())):
            return super().forward(x, t, cond)
        self.calls += 1
        mix = self.mixture
        tt = flat[:1].to(torch.float64)
        a, s = self.schedule.alpha(tt), self.schedule.sigma(tt)  # (1,)
        # Layout (K, D, B): the batch is the contiguous dimension, so every reduction is over K or D.
        xt = x.to(torch.float64).T  # (D, B)
        mu, cov = mix.means, mix.covs  # (K, D), (K, D, D)
        marg = (a * a) * cov + (s * s) * torch.eye(mix.dim, dtype=torch.float64)  # (K, D, D)
        chol = torch.linalg.cholesky(marg)
        resid = xt[None] - (a * mu)[:, :, None]  # (K, D, B)
        sol = torch.cholesky_solve(resid, chol)  # (A Sigma A + S^2)^-1 r
        post_mean = mu[:, :, None] + a * torch.matmul(cov, sol)  # mu + Sigma A (.)^-1 r
        log_det = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (K,)
        log_lik = -0.5 * ((resid * sol).sum(1) + log_det[:, None] + mix.dim * math.log(2 * math.pi))  # (K, B)
        w = torch.softmax(self._log_weights[:, None] + log_lik, dim=0)  # (K, B)
        return (w[:, None, :] * post_mean).sum(0).T.to(x.dtype)


def check_denoiser(mixture: GaussianMixture) -> dict:
    """Max |fast - ExactMixtureDenoiser| over a few times (float64 states)."""
    parent = ExactMixtureDenoiser(mixture, SCHEDULE)
    fast = SharedTimeMixtureDenoiser(mixture, SCHEDULE)
    g = torch.Generator().manual_seed(7)
    worst = 0.0
    for t in [0.001, 0.01, 0.05, 0.2, 0.5, 0.9, 1.0]:
        x = SCHEDULE.corrupt(mixture.sample(512, generator=g), torch.full((512,), t),
                             torch.randn(512, mixture.dim, generator=g, dtype=torch.float64))
        tt = torch.full((512,), t, dtype=torch.float64)
        worst = max(worst, float((fast(x, tt) - parent(x, tt)).abs().max()))
    return {"times": [0.001, 0.01, 0.05, 0.2, 0.5, 0.9, 1.0], "max_abs_diff_vs_ExactMixtureDenoiser": worst}


class Timed:
    """Wraps a callable and accumulates the wall time spent inside it."""

    def __init__(self, fn: Callable, prediction: str | None = None):
        self.fn = fn
        self.elapsed = 0.0
        self.calls = 0
        if prediction is not None:
            self.prediction = prediction

    def __call__(self, *args):
        start = time.perf_counter()
        out = self.fn(*args)
        self.elapsed += time.perf_counter() - start
        self.calls += 1
        return out


class EpsAdapter:
    """What a diffusers eps-prediction model would return, from the exact x0 denoiser.

    Called with the VP state (the model input after ``scale_model_input``) and either the
    scheduler's own VE noise level ``sigma`` (DPM-Solver, Euler: polydiff time
    ``t_from_sigma_ve(sigma)``) or an integer timestep k (DDIM: time (k + 1) / 1000).
    """

    def __init__(self, denoiser: ExactMixtureDenoiser):
        self.denoiser = denoiser

    def __call__(self, x_vp: Tensor, sigma: Tensor | None, timestep: Tensor | None) -> Tensor:
        if sigma is not None:
            t = SCHEDULE.t_from_sigma_ve(torch.as_tensor(float(sigma), dtype=torch.float64))
        else:
            t = torch.tensor((int(timestep) + 1) / N_TRAIN, dtype=torch.float64)
        t = t.reshape(1).expand(x_vp.shape[0])
        x0 = self.denoiser(x_vp, t)
        return convert(x0, "x0", "eps", x_vp, t, SCHEDULE)


# --------------------------------------------------------------------------------------------
# Running the two libraries
# --------------------------------------------------------------------------------------------

def steps_for(name: str, nfe: int) -> int:
    """Steps that spend at most ``nfe`` evaluations: heun (nfe+1)//2, pc nfe//2 (1 corrector)."""
    if name == "heun":
        return (nfe + 1) // 2
    if name == "pc":
        return max(nfe // 2, 1)
    return nfe


def run_polydiff(denoiser, name: str, grid: str | Tensor, steps: int, x_start: Tensor, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return pd_sample(denoiser, SCHEDULE, x_start, sampler=name, steps=steps, grid=grid, generator=gen)


def polydiff_start(z: Tensor) -> Tensor:
    """``schedule.prior`` with a given standard-normal draw: sigma(t_max) z."""
    return float(SCHEDULE.sigma(torch.tensor(SCHEDULE.t_max, dtype=torch.float64))) * z


# Each diffusers option: (label, scheduler class, extra config).
def diffusers_options() -> list[tuple[str, type, dict]]:
    opts: list[tuple[str, type, dict]] = []
    for spacing in ["leading", "linspace", "trailing"]:
        opts.append((f"DDIM[{spacing},clip_sample=True(default)]", DDIMScheduler,
                     dict(timestep_spacing=spacing, clip_sample=True)))
        opts.append((f"DDIM[{spacing},clip_sample=False]", DDIMScheduler,
                     dict(timestep_spacing=spacing, clip_sample=False)))
    for spacing in ["leading", "linspace", "trailing"]:
        opts.append((f"DPMSolverMultistep[{spacing}]", DPMSolverMultistepScheduler,
                     dict(algorithm_type="dpmsolver++", solver_order=2, timestep_spacing=spacing)))
    opts.append(("DPMSolverMultistep[karras]", DPMSolverMultistepScheduler,
                 dict(algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True)))
    for spacing in ["leading", "linspace", "trailing"]:
        opts.append((f"EulerDiscrete[{spacing}]", EulerDiscreteScheduler, dict(timestep_spacing=spacing)))
    opts.append(("EulerDiscrete[karras]", EulerDiscreteScheduler, dict(use_karras_sigmas=True)))
    return opts


def make_scheduler(cls: type, extra: dict):
    return cls(**DIFFUSERS_BASE, **extra)


def run_diffusers(model: Callable, cls: type, extra: dict, steps: int, z: Tensor) -> Tensor:
    """The standard diffusers loop; ``model(x_vp, sigma, timestep) -> eps``."""
    sched = make_scheduler(cls, extra)
    sched.set_timesteps(steps)
    x = z * sched.init_noise_sigma
    has_sigmas = not isinstance(sched, DDIMScheduler)
    for i, k in enumerate(sched.timesteps):
        x_in = sched.scale_model_input(x, k)
        eps = model(x_in, sched.sigmas[i] if has_sigmas else None, None if has_sigmas else k)
        x = sched.step(eps, k, x).prev_sample
    return x


# --------------------------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------------------------

class SlicedW2:
    """``polydiff.mixture.sliced_wasserstein(a, ref, projections=P, generator=seed 0)`` for many ``a``.

    The same directions (drawn exactly as the library draws them) and the same formula; the
    reference set's sorted projections are computed once and the sort runs along contiguous
    memory, which makes repeated evaluations against one reference several times cheaper.
    Checked against the library function at start-up (``swd_check`` in the results).
    """

    def __init__(self, ref: Tensor, projections: int):
        dirs = torch.randn(ref.shape[1], projections, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        self.dirs = dirs / dirs.norm(dim=0, keepdim=True)
        self.ref = ref
        self.projections = projections
        self.ref_sorted = self._sorted(ref)

    def _sorted(self, a: Tensor) -> Tensor:
        return torch.sort((a.to(torch.float64) @ self.dirs).T.contiguous(), dim=1).values

    def __call__(self, a: Tensor) -> float:
        if not bool(torch.isfinite(a).all()):
            return float("inf")
        return float(((self._sorted(a) - self.ref_sorted) ** 2).mean().sqrt())

    def check(self, a: Tensor) -> dict:
        lib = sliced_wasserstein(a, self.ref, projections=self.projections, generator=torch.Generator().manual_seed(0))
        return dict(library=lib, cached=self(a), abs_diff=abs(lib - self(a)))


def mean_se(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    if len(values) < 2 or not math.isfinite(m):
        return m, float("nan")
    return m, statistics.stdev(values) / math.sqrt(len(values))


def accuracy(dim: int, n: int, seeds: list[int], projections: int, floor_reps: int) -> dict:
    mixture = make_mixture(dim)
    den = SharedTimeMixtureDenoiser(mixture, SCHEDULE)
    adapter = EpsAdapter(den)
    zs = {s: torch.randn(n, dim, generator=torch.Generator().manual_seed(1000 + s)) for s in seeds}
    refs = {s: mixture.sample(n, generator=torch.Generator().manual_seed(2000 + s)) for s in seeds}
    metric = {s: SlicedW2(refs[s], projections) for s in seeds}

    floor_vals = []
    for s in seeds:
        for r in range(floor_reps):
            other = mixture.sample(n, generator=torch.Generator().manual_seed(5000 + 100 * s + r))
            floor_vals.append(metric[s](other))
    floor_mean, floor_se = mean_se(floor_vals)
    floor_sd = statistics.stdev(floor_vals) if len(floor_vals) > 1 else float("nan")

    rows = []
    t_start = time.perf_counter()
    for name in SAMPLERS:
        for grid in GRIDS:
            for budget in NFES:
                steps = steps_for(name, budget)
                nfe = evaluations(name, steps)
                vals, err = [], None
                for s in seeds:
                    try:
                        out = run_polydiff(den, name, grid, steps, polydiff_start(zs[s]), 3000 + s)
                        vals.append(metric[s](out))
                    except NonFiniteError as exc:  # reported, not hidden
                        vals.append(float("inf"))
                        err = str(exc)
                m, se = mean_se(vals)
                row = dict(library="polydiff", method=name, option=f"grid={grid}", nfe_budget=budget, nfe=nfe,
                           steps=steps, swd=m, swd_se=se, swd_per_seed=vals)
                if err:
                    row["error"] = err
                rows.append(row)
        log(f"D={dim} polydiff {name} done ({time.perf_counter() - t_start:.0f}s)")
    for label, cls, extra in diffusers_options():
        for budget in NFES:
            vals = [metric[s](run_diffusers(adapter, cls, extra, budget, zs[s])) for s in seeds]
            m, se = mean_se(vals)
            rows.append(dict(library="diffusers", method=cls.__name__, option=label, nfe_budget=budget, nfe=budget,
                             steps=budget, swd=m, swd_se=se, swd_per_seed=vals))
        log(f"D={dim} diffusers {label} done ({time.perf_counter() - t_start:.0f}s)")

    # How much diffusers' default clip_sample=True shrinks the samples (DDIM, NFE 20, seed 0).
    s0 = seeds[0]
    clip = {}
    for clip_sample in (True, False):
        out = run_diffusers(adapter, DDIMScheduler, dict(timestep_spacing="leading", clip_sample=clip_sample), 20, zs[s0])
        clip[f"clip_sample={clip_sample}"] = dict(mean_norm=float(out.double().norm(dim=1).mean()),
                                                  max_abs_coordinate=float(out.abs().max()))
    clip["exact_samples"] = dict(mean_norm=float(refs[s0].norm(dim=1).mean()),
                                 max_abs_coordinate=float(refs[s0].abs().max()))

    best = {}
    for budget in NFES:
        entry = {}
        for lib in ("polydiff", "diffusers"):
            cand = [r for r in rows if r["library"] == lib and r["nfe_budget"] == budget]
            b = min(cand, key=lambda r: r["swd"])
            entry[lib] = dict(swd=b["swd"], swd_se=b["swd_se"], method=b["method"], option=b["option"], nfe=b["nfe"])
        best[str(budget)] = entry
    table = {}
    for r in rows:
        table.setdefault(f"{r['library']} | {r['method']} | {r['option']}", {})[str(r["nfe_budget"])] = (
            [round(r["swd"], 5), r["nfe"]])
    return dict(dim=dim, samples=n, seeds=seeds, table_swd_and_nfe_by_budget=table, mixture=dict(components=mixture.num_components,
                                      weights=[round(float(w), 4) for w in mixture.weights]),
                denoiser_check=check_denoiser(mixture),
                swd_check=metric[seeds[0]].check(mixture.sample(n, generator=torch.Generator().manual_seed(77))),
                noise_floor=dict(swd=floor_mean, se=floor_se, sd=floor_sd, replicates=len(floor_vals)),
                best=best, ddim_clip_default_effect=clip, rows=rows,
                exactness=exactness_checks(den, adapter, dim, seeds[0]))


def exactness_checks(den, adapter, dim: int, seed: int, n: int = 2000) -> list[dict]:
    """polydiff on the time grid a diffusers scheduler uses vs that scheduler, sample by sample."""
    z = torch.randn(n, dim, generator=torch.Generator().manual_seed(9000 + seed))
    out = []

    def record(what, a, b, note=""):
        out.append(dict(check=what, max_abs_diff=float((a.double() - b.double()).abs().max()),
                        rms_sample=float(b.double().pow(2).mean().sqrt()), note=note))

    for steps in (10, 20, 50):
        for spacing in ("leading", "trailing"):
            sched = make_scheduler(DDIMScheduler, dict(timestep_spacing=spacing, clip_sample=False))
            sched.set_timesteps(steps)
            ks = [int(k) for k in sched.timesteps]
            grid = torch.tensor([(k + 1) / N_TRAIN for k in ks] + [0.0], dtype=torch.float64)
            ref = run_diffusers(adapter, DDIMScheduler, dict(timestep_spacing=spacing, clip_sample=False), steps, z)
            pd = run_polydiff(den, "ddim", grid, steps, z * sched.init_noise_sigma, 0)
            record(f"ddim eta=0 on diffusers' DDIM[{spacing}] grid vs DDIMScheduler[{spacing},clip_sample=False], {steps} steps",
                   pd, ref)
        # linspace: diffusers' DDIM steps from timestep k to k - 1000//steps, not to the next linspace point.
        ref = run_diffusers(adapter, DDIMScheduler, dict(timestep_spacing="linspace", clip_sample=False), steps, z)
        pd = run_polydiff(den, "ddim", "uniform", steps, polydiff_start(z), 0)
        record(f"ddim eta=0 grid=uniform vs DDIMScheduler[linspace,clip_sample=False], {steps} steps", pd, ref,
               "not expected to match exactly: diffusers' DDIM step goes to prev_timestep = k - 1000//steps, "
               "which is not the next 'linspace' timestep unless 999/(steps-1) is an integer equal to 1000//steps")
        for label, cls, name in (("DPMSolverMultistep[linspace]", DPMSolverMultistepScheduler, "dpmpp_2m"),
                                 ("DPMSolverMultistep[karras]", DPMSolverMultistepScheduler, "dpmpp_2m"),
                                 ("EulerDiscrete[linspace]", EulerDiscreteScheduler, "euler"),
                                 ("EulerDiscrete[karras]", EulerDiscreteScheduler, "euler"),
                                 ("EulerDiscrete[linspace]", EulerDiscreteScheduler, "ddim")):
            extra = [o for o in diffusers_options() if o[0] == label][0][2]
            sched = make_scheduler(cls, extra)
            sched.set_timesteps(steps)
            sig = sched.sigmas.double()
            grid = torch.cat([SCHEDULE.t_from_sigma_ve(sig[:-1]), torch.zeros(1, dtype=torch.float64)])
            ref = run_diffusers(adapter, cls, extra, steps, z)
            x_vp = sched.scale_model_input(z * sched.init_noise_sigma, sched.timesteps[0])  # the VP start state
            pd = run_polydiff(den, name, grid, steps, x_vp, 0)
            record(f"{name} on {label}'s sigmas vs {label}, {steps} steps", pd, ref)
        # Heun: diffusers' HeunDiscreteScheduler (2 * steps - 1 model calls) vs polydiff heun on its sigmas.
        for extra in (dict(), dict(use_karras_sigmas=True)):
            sched = make_scheduler(HeunDiscreteScheduler, extra)
            sched.set_timesteps(steps)
            x = z * sched.init_noise_sigma
            x_vp = sched.scale_model_input(x, sched.timesteps[0])
            sched = make_scheduler(HeunDiscreteScheduler, extra)
            sched.set_timesteps(steps)
            for i, k in enumerate(sched.timesteps):
                eps = adapter(sched.scale_model_input(x, k), sched.sigmas[i], None)
                x = sched.step(eps, k, x).prev_sample
            sig = torch.unique_consecutive(sched.sigmas.double())
            grid = torch.cat([SCHEDULE.t_from_sigma_ve(sig[:-1]), torch.zeros(1, dtype=torch.float64)])
            pd = run_polydiff(den, "heun", grid, len(grid) - 1, x_vp, 0)
            record(f"heun on HeunDiscrete{'[karras]' if extra else '[linspace]'}'s sigmas vs HeunDiscreteScheduler, "
                   f"{steps} steps", pd, x)
    return out


# --------------------------------------------------------------------------------------------
# Speed
# --------------------------------------------------------------------------------------------

TIMING_POLYDIFF = {"ddpm": "uniform", "ddim": "uniform", "euler": "karras", "heun": "karras",
                   "dpmpp_2m": "logsnr", "pc": "uniform", "flow_euler": "uniform"}
TIMING_DIFFUSERS = [("DDIM[linspace,clip_sample=False]", DDIMScheduler, dict(timestep_spacing="linspace", clip_sample=False)),
                    ("DDIM[leading,clip_sample=True(default)]", DDIMScheduler, dict(timestep_spacing="leading", clip_sample=True)),
                    ("DPMSolverMultistep[linspace]", DPMSolverMultistepScheduler,
                     dict(algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="linspace")),
                    ("EulerDiscrete[linspace]", EulerDiscreteScheduler, dict(timestep_spacing="linspace"))]


class Recorder:
    """Calls a model and keeps its outputs, in call order."""

    def __init__(self, fn: Callable, prediction: str | None = None):
        self.fn, self.outputs = fn, []
        if prediction is not None:
            self.prediction = prediction

    def __call__(self, *args):
        out = self.fn(*args)
        self.outputs.append(out)
        return out


class Replay:
    """Returns a recorded run's model outputs in call order (the loop then does identical work)."""

    def __init__(self, outputs: list[Tensor], prediction: str | None = None):
        self.outputs, self.i = outputs, 0
        if prediction is not None:
            self.prediction = prediction

    def __call__(self, *args):
        out = self.outputs[self.i]
        self.i += 1
        return out


def timing_jobs(den, z: Tensor) -> list[dict]:
    jobs = []
    for budget in TIMING_NFES:
        for name, grid in TIMING_POLYDIFF.items():
            steps = steps_for(name, budget)
            jobs.append(dict(library="polydiff", method=f"{name}[grid={grid}]", nfe_budget=budget, steps=steps,
                             nfe=evaluations(name, steps), prediction="x0", real=den,
                             run=lambda model, name=name, grid=grid, steps=steps:
                                 run_polydiff(model, name, grid, steps, polydiff_start(z), 0)))
        for label, cls, extra in TIMING_DIFFUSERS:
            jobs.append(dict(library="diffusers", method=label, nfe_budget=budget, steps=budget, nfe=budget,
                             prediction=None, real=EpsAdapter(den),
                             run=lambda model, cls=cls, extra=extra, steps=budget:
                                 run_diffusers(model, cls, extra, steps, z)))
    return jobs


def record(jobs: list[dict]) -> None:
    """Run every job once with the real (exact) model, one thread, keeping the model's outputs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for job in jobs:
            rec = Recorder(job["real"], job["prediction"])
            job["reference"] = job["run"](rec)
            job["outputs"] = rec.outputs
    finally:
        torch.set_num_threads(threads)


def timing(batch: int, repeats: int, thread_settings: list[int], dim: int = 2) -> dict:
    """Per-step wall time excluding the model, median over ``repeats`` rounds (after one warm-up).

    Every loop is first run with the exact model and the model's outputs are recorded; the timed
    runs then get a wrapper that replays those outputs (so the sampler/scheduler does exactly
    the work it did with the real model, on the same values) and accumulates its own time, which
    is subtracted. Job order is shuffled every round so that load changes hit both libraries
    alike. The whole measurement is repeated for each torch thread count in ``thread_settings``.
    """
    import random

    mixture = make_mixture(dim)
    den = SharedTimeMixtureDenoiser(mixture, SCHEDULE)
    z = torch.randn(batch, dim, generator=torch.Generator().manual_seed(11))
    jobs = timing_jobs(den, z)
    record(jobs)
    default_threads = torch.get_num_threads()
    passes = {}
    for threads in thread_settings:
        torch.set_num_threads(threads)
        for job in jobs:
            job["per_step"], job["total"], job["model"] = [], [], []
        worst_replay_diff = 0.0
        for rep in range(repeats + 1):  # round 0 is a warm-up
            order = list(range(len(jobs)))
            random.Random(rep).shuffle(order)
            for i in order:
                job = jobs[i]
                timed = Timed(Replay(job["outputs"], job["prediction"]), prediction=job["prediction"])
                start = time.perf_counter()
                out = job["run"](timed)
                total = time.perf_counter() - start
                if rep == 0 or rep == repeats:
                    worst_replay_diff = max(worst_replay_diff, float((out - job["reference"]).abs().max()))
                if rep > 0:
                    job["per_step"].append((total - timed.elapsed) / job["steps"])
                    job["total"].append(total)
                    job["model"].append(timed.elapsed)
        rows = []
        for job in jobs:
            v = sorted(job["per_step"])
            rows.append(dict(library=job["library"], method=job["method"], nfe_budget=job["nfe_budget"],
                             steps=job["steps"], nfe=job["nfe"], overhead_per_step_us=1e6 * statistics.median(v),
                             overhead_iqr_us=[1e6 * v[len(v) // 4], 1e6 * v[(3 * len(v)) // 4]],
                             overhead_min_us=1e6 * v[0],
                             relative_iqr=(v[(3 * len(v)) // 4] - v[len(v) // 4]) / statistics.median(v),
                             loop_ms=1e3 * statistics.median(job["total"]),
                             replay_wrapper_ms=1e3 * statistics.median(job["model"])))
        passes[str(threads)] = dict(torch_threads=threads, replay_max_abs_diff_vs_recorded_run=worst_replay_diff,
                                    rows=rows)
        log(f"timing with {threads} thread(s) done")
    torch.set_num_threads(default_threads)
    return dict(batch=batch, dim=dim, repeats=repeats, default_threads=default_threads, passes=passes)


def profile_loops(batch: int, thread_settings: list[int], budget: int = 50, runs: int = 20) -> dict:
    """cProfile of polydiff's dpmpp_2m and ddim loops and of diffusers' counterparts (model replayed)."""
    mixture = make_mixture(2)
    den = SharedTimeMixtureDenoiser(mixture, SCHEDULE)
    z = torch.randn(batch, 2, generator=torch.Generator().manual_seed(12))
    wanted = ("dpmpp_2m[grid=logsnr]", "ddim[grid=uniform]", "DPMSolverMultistep[linspace]",
              "DDIM[linspace,clip_sample=False]")
    jobs = [j for j in timing_jobs(den, z) if j["nfe_budget"] == budget and j["method"] in wanted]
    record(jobs)
    default_threads = torch.get_num_threads()
    out = {}
    for threads in thread_settings:
        torch.set_num_threads(threads)
        out[f"threads={threads}"] = _profile_jobs(jobs, runs)
    torch.set_num_threads(default_threads)
    return out


def _profile_jobs(jobs: list[dict], runs: int) -> dict:
    out = {}
    for job in jobs:
        job["run"](Replay(job["outputs"], job["prediction"]))
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(runs):
            job["run"](Replay(job["outputs"], job["prediction"]))
        prof.disable()
        stats = pstats.Stats(prof)
        per = runs * job["steps"]
        entries = [dict(function=f"{os.path.basename(file)}:{line}({func})", calls_per_step=nc / per,
                        tottime_us_per_step=1e6 * tt / per, cumtime_us_per_step=1e6 * ct / per)
                   for (file, line, func), (cc, nc, tt, ct, _) in stats.stats.items()]
        entries.sort(key=lambda e: -e["tottime_us_per_step"])
        out[f"{job['library']} {job['method']}"] = dict(
            steps=job["steps"], runs=runs,
            total_us_per_step_under_profiler=1e6 * stats.total_tt / per,
            function_calls_per_step=sum(e["calls_per_step"] for e in entries),
            top_by_tottime=entries[:15])
    return out


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def code_version() -> dict:
    """The git commit the core was imported from, and whether core/ had uncommitted changes."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    dirty = git("status", "--porcelain", "--", "core")
    return dict(commit=git("rev-parse", "HEAD"), core_uncommitted_changes=dirty.splitlines() if dirty else [],
                polydiff_grids=list(POLYDIFF_GRIDS))


def machine_info() -> dict:
    return common_machine_info(diffusers=diffusers.__version__, numpy=np.__version__,
                               polydiff=getattr(polydiff, "__version__", None))


def build_targets(acc: list[dict], tim: dict) -> list[dict]:
    targets = []
    for a in acc:
        floor_se = a["noise_floor"]["se"]
        for budget in NFES:
            if budget > 20:
                continue
            b = a["best"][str(budget)]
            thr = b["diffusers"]["swd"] + (floor_se if math.isfinite(floor_se) else 0.0)
            val = b["polydiff"]["swd"]
            targets.append(dict(
                name=f"D={a['dim']} NFE {budget}: best polydiff SWD <= diffusers' best SWD + noise-floor SE",
                value=val, threshold=thr, met=bool(val <= thr),
                detail=f"polydiff {b['polydiff']['method']} {b['polydiff']['option']} (NFE {b['polydiff']['nfe']}); "
                       f"diffusers {b['diffusers']['option']} = {b['diffusers']['swd']:.5f}; floor SE {floor_se:.5f}"))
    for threads, tpass in tim["passes"].items():
        rows = tpass["rows"]
        primary = int(threads) == tim["default_threads"]

        def get(lib, prefix, budget):
            return [r for r in rows if r["library"] == lib and r["method"].startswith(prefix)
                    and r["nfe_budget"] == budget][0]

        for budget in TIMING_NFES:
            for pd_name, df_label in (("dpmpp_2m", "DPMSolverMultistep[linspace]"),
                                      ("ddim", "DDIM[linspace,clip_sample=False]")):
                p, d = get("polydiff", pd_name + "[", budget), get("diffusers", df_label, budget)
                tag = f"torch threads={threads}" + ("" if primary else ", supplementary")
                noisy = max(p["relative_iqr"], d["relative_iqr"])
                targets.append(dict(
                    name=f"NFE {budget}: polydiff {pd_name} overhead per step <= diffusers {df_label} "
                         f"(us, median; {tag})",
                    value=p["overhead_per_step_us"], threshold=d["overhead_per_step_us"],
                    met=bool(p["overhead_per_step_us"] <= d["overhead_per_step_us"]),
                    reliable=bool(noisy < RELIABLE_IQR),
                    detail=f"relative IQR polydiff {p['relative_iqr']:.2f}, diffusers {d['relative_iqr']:.2f}; "
                           f"unreliable when either exceeds {RELIABLE_IQR} (load from other jobs)"))
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N, 2 seeds, D=2 only, few timing repeats")
    parser.add_argument("--out", default="benchmarks/results/samplers.json")
    args = parser.parse_args()

    default_threads = torch.get_num_threads()
    if args.quick:
        budget = dict(samples={2: 4000}, projections=128, seeds={2: [0, 1]}, nfe=NFES, dims=[2], floor_replicates=4,
                      timing_batch=4096, timing_repeats=9)
    else:
        budget = dict(samples={2: 10000, 8: 5000}, projections=128, seeds={2: [0, 1, 2], 8: [0, 1]}, nfe=NFES,
                      dims=[2, 8], floor_replicates=4, timing_batch=4096, timing_repeats=41)
    budget["accuracy_torch_threads"] = 1
    budget["timing_torch_threads"] = f"{default_threads} (as is; primary, used by the targets), then 1 (supplementary)"
    t0 = time.perf_counter()
    info = machine_info()
    code = code_version()  # read at start: the modules in use are the ones imported now

    # Accuracy does not depend on threads; one thread avoids oversubscribing a shared machine.
    torch.set_num_threads(1)
    acc = []
    for dim in budget["dims"]:
        acc.append(accuracy(dim, budget["samples"][dim], budget["seeds"][dim], budget["projections"],
                            budget["floor_replicates"]))
        log(f"accuracy D={dim} done")
    torch.set_num_threads(default_threads)  # timing with torch's threads as they were
    thread_settings = [default_threads] + ([1] if default_threads != 1 else [])
    tim = timing(budget["timing_batch"], budget["timing_repeats"], thread_settings)
    prof = profile_loops(budget["timing_batch"], thread_settings)
    log("profile done")
    targets = build_targets(acc, tim)

    result = dict(
        command=shlex.join(["python", *sys.argv]),
        machine=info,
        code=code,
        budget=budget,
        results=dict(
            setup=dict(
                schedule="polydiff.schedules.VPLinear() (DDPM linear betas 1e-4..0.02, 1000 steps; timestep k = time (k+1)/1000)",
                denoiser="exact posterior mean of the mixture: SharedTimeMixtureDenoiser, a subclass of "
                         "polydiff.mixture.ExactMixtureDenoiser with a shared-time fast path (identical math, see "
                         "accuracy[*].denoiser_check); polydiff gets its x0 prediction, diffusers gets it converted to "
                         "eps with polydiff.parameterization.convert",
                diffusers_drive=("DDIM: model evaluated at time (k+1)/1000 of its integer timestep k. DPMSolverMultistep "
                                 "and EulerDiscrete: at time VPLinear().t_from_sigma_ve(scheduler.sigmas[i]), the noise "
                                 "level the scheduler's own update assumes (for integer timesteps this is exactly (k+1)/1000; "
                                 "for karras sigmas it is what the rounded timestep only approximates), on the VP state "
                                 "scale_model_input returns (x / sqrt(sigma^2+1) for Euler)."),
                start_noise=("one standard-normal draw z per seed shared by both libraries: diffusers starts at "
                             "z * init_noise_sigma, polydiff at schedule.prior's sigma(t_max) z = 0.99998 z"),
                metric="sliced 2-Wasserstein distance, polydiff.mixture.sliced_wasserstein with projection seed 0, "
                       "against N fresh exact samples per seed (the same reference set for every method of a seed)",
                nfe=("polydiff steps per budget: heun (NFE+1)//2 (2*steps-1 evaluations), pc NFE//2 with one corrector "
                     "(2*steps evaluations), others NFE; 'nfe' is what was actually spent; diffusers: steps = NFE"),
                ddim_clip_note=("diffusers' DDIMScheduler defaults to clip_sample=True, which clips its x0 estimate to "
                                "[-1, 1] at every step and so shrinks data outside that box (here a ring of radius 2): "
                                "see accuracy[*].ddim_clip_default_effect; both settings are reported and 'diffusers best' "
                                "is the minimum over all options"),
                target_rule=("accuracy: met if best polydiff SWD <= diffusers' best SWD + the standard error of the "
                             "noise floor (SD of the floor replicates / sqrt(replicates)); both libraries share the start "
                             "noise and reference set, so their SWDs are paired. overhead: median (total loop time - "
                             "denoiser/adapter time) / steps over the repeats, polydiff dpmpp_2m (logsnr) vs "
                             "DPMSolverMultistep[linspace] and polydiff ddim (uniform) vs DDIM[linspace,clip_sample=False]"),
                timing_note=("loops timed end to end including grid construction (polydiff.samplers.sample / make_grid) "
                             "and set_timesteps, minus the time spent inside the wrapped model, divided by steps. Each loop "
                             "is first run with the exact model (its outputs recorded; for diffusers the recorded output "
                             "is the adapter's eps, so the sigma->time and x0->eps glue is never charged to diffusers); "
                             "the timed runs replay those outputs through the timing wrapper, so the loop does identical "
                             "work on identical values (checked: replay_max_abs_diff_vs_recorded_run) while the "
                             "subtracted model time is microseconds instead of tens of milliseconds, which would "
                             "otherwise swamp a sub-millisecond overhead on this shared 2-core machine. Job order is "
                             "shuffled every round. With batch 4096 x D=2 (8192 elements) the per-step tensor ops stay "
                             "below torch's intra-op parallel grain. The timing runs once with torch's threads as they "
                             "were (primary; the targets use it) and once with 1 thread (supplementary). While this "
                             "benchmark was being written and the shared 2-core machine was oversubscribed by other jobs "
                             "(load average ~6, this process under nice), the 2-thread setting showed millisecond stalls "
                             "inside small transcendental ops (log, pow, sqrt, log_sigmoid on 0-d..1000-element tensors) "
                             "in both libraries, inflating some loops 5-25x; with the machine idle the two passes agree. "
                             "Compare machine.load_average_at_start and the two passes before trusting a number."),
            ),
            accuracy=acc,
            timing=tim,
            profile=prof,
            elapsed_s=time.perf_counter() - t0,
        ),
        targets=targets,
    )
    text = json.dumps(result, indent=1, allow_nan=True)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
