"""Discrete (categorical) diffusion: transition schedules, the posterior sampler and its loss.

Categorical data (atom and bond types, tokens) is corrupted by transition matrices toward a
limit distribution (uniform, data marginals or an absorbing mask class) and generated back by
ancestral sampling over posteriors given a denoiser that predicts clean-class probabilities
(Austin et al. 2021, D3PM; Vignac et al. 2023, DiGress).
"""

from polydiff.discrete.sampler import CategoricalStep, categorical_loss, sample_categorical
from polydiff.discrete.schedules import (
    AbsorbingTransitions,
    CategoricalSchedule,
    MarginalTransitions,
    UniformTransitions,
    draw_classes,
)

__all__ = [
    "CategoricalSchedule",
    "UniformTransitions",
    "MarginalTransitions",
    "AbsorbingTransitions",
    "draw_classes",
    "CategoricalStep",
    "sample_categorical",
    "categorical_loss",
]
