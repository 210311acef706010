"""polydiff: one small diffusion core for every modality.

The top-level package is light: submodules load on first use, so ``polydiff list`` starts fast.

Modules:
    schedules: forward processes (VP-linear, VP-cosine, EDM, rectified flow, OU-VE bridge).
    grids: sampling time grids (uniform, Karras, log-SNR, explicit).
    parameterization: exact conversions between eps, x0, v, score and flow predictions.
    denoiser: the denoiser contract and EDM preconditioning.
    samplers: DDPM, DDIM, Euler, Heun, DPM-Solver++(2M), predictor-corrector, flow Euler.
    discrete: categorical diffusion (uniform, marginal, absorbing transitions).
    module: ``DiffusionModule``, the Lightning training loop.
    registry: plugin discovery through the ``polydiff.plugins`` entry-point group.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "broadcast", "schedules", "grids", "parameterization", "denoiser", "samplers", "discrete",
    "mixture", "module", "ema", "checkpoint", "registry", "plugin", "cli", "demo",
}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"polydiff.{name}")
    raise AttributeError(f"module 'polydiff' has no attribute {name!r}")
