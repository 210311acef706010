"""The core's own offline demo: a 2-D ring of Gaussians learned by a small MLP.

``polydiff quickstart`` runs :func:`run_demo` when no domain plugin is installed, and the tests
use the pieces. Because the data distribution is a Gaussian mixture, the demo can report honest
reference points next to the trained model: a single Gaussian fitted by moment matching (what a
model that learned only the first two moments would give), the exact mixture denoiser sampled
with the same sampler (the best any network could do with that sampler and step count), and two
independent draws of the data (the sampling-noise floor of the metric).
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from polydiff.broadcast import time_like
from polydiff.denoiser import Denoiser
from polydiff.mixture import ExactMixtureDenoiser, GaussianMixture, sliced_wasserstein
from polydiff.module import DiffusionModule, SampleMetrics
from polydiff.parameterization import Prediction
from polydiff.samplers import sample

__all__ = ["ring_mixture", "MixtureDataModule", "MLPDenoiser", "MixtureMetrics", "run_demo"]


def ring_mixture(num_components: int = 8, radius: float = 4.0, std: float = 0.3) -> GaussianMixture:
    """Equal-weight isotropic Gaussians with means evenly spaced on a circle.

    Shapes:
        the mixture's samples are (N, 2).
    """
    angles = torch.arange(num_components, dtype=torch.float64) * (2 * math.pi / num_components)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    covs = (std**2) * torch.eye(2, dtype=torch.float64).expand(num_components, 2, 2).clone()
    weights = torch.full((num_components,), 1.0 / num_components, dtype=torch.float64)
    return GaussianMixture(weights, means, covs)


class _PointDataset(Dataset):
    def __init__(self, points: Tensor, labels: Tensor):
        self.points, self.labels = points, labels

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"x0": self.points[index], "cond": self.labels[index]}


class MixtureDataModule(pl.LightningDataModule):
    """Points from a ring of Gaussians, with their component labels as the condition.

    Batches are ``{"x0": float32 (B, 2), "cond": long (B,)}``. The data are drawn once, from
    ``seed``, so every run sees the same training and validation sets.

    Args:
        n_train: number of training points.
        n_val: number of validation points.
        batch_size: batch size of both loaders.
        seed: seed of the data and of the training shuffle.
        num_components: number of Gaussians on the ring.
        radius: radius of the ring.
        std: standard deviation of each Gaussian.
    """

    def __init__(
        self,
        n_train: int = 20_000,
        n_val: int = 1_000,
        batch_size: int = 256,
        seed: int = 0,
        num_components: int = 8,
        radius: float = 4.0,
        std: float = 0.3,
    ):
        super().__init__()
        if n_train < 1 or n_val < 1 or batch_size < 1:
            raise ValueError(f"n_train, n_val and batch_size must be positive, got {n_train}, {n_val}, {batch_size}")
        self.n_train, self.n_val, self.batch_size, self.seed = n_train, n_val, batch_size, seed
        self.mixture = ring_mixture(num_components, radius, std)
        self._train: _PointDataset | None = None
        self._val: _PointDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self._train is not None:
            return
        generator = torch.Generator().manual_seed(self.seed)
        x, labels = self.mixture.sample(self.n_train + self.n_val, generator=generator, return_labels=True)
        x = x.float()
        self._train = _PointDataset(x[: self.n_train], labels[: self.n_train])
        self._val = _PointDataset(x[self.n_train :], labels[self.n_train :])

    def train_dataloader(self) -> DataLoader:
        self.setup()
        shuffle = torch.Generator().manual_seed(self.seed + 1)
        return DataLoader(self._train, batch_size=self.batch_size, shuffle=True, generator=shuffle, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(self._val, batch_size=self.batch_size)

    def train_points(self) -> Tensor:
        """All training points, (n_train, 2)."""
        self.setup()
        return self._train.points


class MLPDenoiser(Denoiser):
    """A residual MLP denoiser for low-dimensional points.

    Each coordinate's time is embedded with sinusoidal features over geometrically spaced
    frequencies (Vaswani et al. 2017; Tancik et al. 2020), so the network takes one time per
    sample ``(B,)`` or one per coordinate ``(B, dim)`` (per-element times, as known-values
    sampling uses). With ``num_classes`` it is class-conditional: labels ``0..num_classes-1``
    index an embedding, and the null condition of classifier-free guidance is a dedicated extra
    index (``num_classes``), so no real class doubles as "unconditional". A ``None`` condition or
    a negative label means the null condition.

    Args:
        dim: dimension of the points.
        hidden: width of the hidden layers.
        depth: number of residual blocks.
        num_classes: number of condition classes; ``None`` for an unconditional network.
        prediction: what the network predicts: eps, x0, v, score or flow.
        time_features: number of sinusoidal frequencies per coordinate.

    Shapes:
        x: (B, dim); t: scalar, (B,), (B, 1) or (B, dim); cond: (B,) long or None;
        returns (B, dim).
    """

    def __init__(
        self,
        dim: int = 2,
        hidden: int = 128,
        depth: int = 3,
        num_classes: int | None = None,
        prediction: Prediction = "eps",
        time_features: int = 16,
    ):
        super().__init__(prediction=prediction)
        if dim < 1 or hidden < 1 or depth < 0 or time_features < 1:
            raise ValueError("dim, hidden and time_features must be positive and depth non-negative")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be positive or None, got {num_classes}")
        self.dim = dim
        self.num_classes = num_classes
        # Frequencies from 1/2 to 500 cycles over t in [0, 1] resolve both the coarse and the
        # nearly-clean end of the schedule.
        self.register_buffer(
            "freqs", 2 * math.pi * torch.logspace(math.log10(0.5), math.log10(500.0), time_features), persistent=False
        )
        self.inp = nn.Linear(dim + 2 * time_features * dim, hidden)
        self.label = nn.Embedding(num_classes + 1, hidden) if num_classes is not None else None
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(depth)
        )
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def drop_cond(self, cond: Tensor | None, mask: Tensor) -> Tensor | None:
        if cond is None or self.num_classes is None:
            return cond
        return torch.where(mask, torch.full_like(cond, self.num_classes), cond)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        tt = time_like(t, x).expand_as(x).to(x.dtype)  # (B, dim)
        angles = tt[..., None] * self.freqs.to(x.dtype)  # (B, dim, F)
        emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(1)
        h = self.inp(torch.cat([x, emb], dim=1))
        if self.label is not None:
            if cond is None:
                labels = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            else:
                labels = cond.long().to(x.device)
                labels = torch.where(labels < 0, torch.full_like(labels, self.num_classes), labels)
            h = h + self.label(labels)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


class MixtureMetrics(SampleMetrics):
    """Sliced 2-Wasserstein distance between samples and fresh draws of the ring mixture.

    When the batch carries component labels (``cond``) the reference points are drawn from the
    same components, so class-conditional samples are compared with their own classes; labels
    below zero or a missing ``cond`` mean the whole mixture.

    Args:
        num_components, radius, std: the ring (as in :class:`MixtureDataModule`).
        projections: number of random directions of the sliced distance.
        seed: seed of the reference draws and the directions.
    """

    def __init__(
        self, num_components: int = 8, radius: float = 4.0, std: float = 0.3, projections: int = 256, seed: int = 0
    ):
        self.mixture = ring_mixture(num_components, radius, std)
        self.projections = projections
        self.seed = seed

    def reference(self, labels: Tensor | None, n: int, generator: torch.Generator) -> Tensor:
        """Fresh mixture points, from the given components where labels are non-negative."""
        free, drawn_labels = self.mixture.sample(n, generator=generator, return_labels=True)
        if labels is None:
            return free
        labels = labels.long().cpu()
        chosen = torch.where(labels >= 0, labels, drawn_labels)
        z = torch.randn(n, self.mixture.dim, generator=generator, dtype=torch.float64)
        chol = self.mixture._chol[chosen]
        return self.mixture.means[chosen] + torch.einsum("nij,nj->ni", chol, z)

    def __call__(self, samples: Tensor, batch: Mapping[str, Any]) -> dict[str, float]:
        generator = torch.Generator().manual_seed(self.seed)
        points = samples.detach().cpu().reshape(samples.shape[0], -1)
        ref = self.reference(batch.get("cond"), points.shape[0], generator)
        return {"sliced_w2": sliced_wasserstein(points, ref, projections=self.projections, generator=generator)}


def _off_mode_fraction(points: Tensor, mixture: GaussianMixture, radius_in_std: float = 3.0) -> float:
    """Fraction of points farther than ``radius_in_std`` standard deviations from every mean."""
    std = float(mixture.covs[0, 0, 0].sqrt())
    dist = torch.cdist(points.to(torch.float64), mixture.means).min(dim=1).values
    return float((dist > radius_in_std * std).double().mean())


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    # Lightning's start-up banners and the "few dataloader workers" hint are noise for a demo.
    names = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def run_demo(
    out_dir: Path,
    *,
    max_steps: int = 2000,
    progress: bool = True,
    seed: int = 0,
    n_samples: int = 2000,
) -> dict[str, Any]:
    """Train a diffusion model on the ring mixture, sample it and compare with baselines.

    Writes ``out_dir/samples.csv`` (columns ``source,x,y`` for the diffusion samples, the
    Gaussian baseline, the oracle and held-out data) and ``out_dir/metrics.json``; nothing is
    written outside ``out_dir`` (no logger, no checkpoints).

    Args:
        out_dir: where the results go (created if needed).
        max_steps: training steps.
        progress: show Lightning's progress bar.
        seed: seed of the data, the initial weights, training and sampling.
        n_samples: number of points sampled from each method.

    Returns:
        The metrics written to ``metrics.json``: sliced 2-Wasserstein distances (``sw2_*``,
        lower is better) and off-mode fractions (``off_mode_*``, the share of points more than
        3 std from every mode) for the diffusion model, the oracle, the Gaussian baseline and a
        second draw of the data (the floor set by sampling noise), plus run details.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    # A 128-wide MLP gains nothing from intra-op threads, and when other processes compete
    # for the cores OpenMP's spin-waiting makes two threads many times slower than one.
    torch.set_num_threads(1)
    try:
        return _run_demo(out_dir, max_steps=max_steps, progress=progress, seed=seed, n_samples=n_samples)
    finally:
        torch.set_num_threads(threads)


def _run_demo(out_dir: Path, *, max_steps: int, progress: bool, seed: int, n_samples: int) -> dict[str, Any]:
    started = time.perf_counter()
    pl.seed_everything(seed, verbose=False)
    data = MixtureDataModule(batch_size=512, seed=seed)
    # v-prediction: with data of std ~3 against a unit-variance prior, an eps network's
    # x0 = (x - sigma eps)/alpha amplifies its errors ~150x at the start of sampling. A one-cycle
    # learning rate sharpens the modes markedly for the same number of steps.
    model = DiffusionModule(
        MLPDenoiser(dim=2, prediction="v"),
        weighting="min_snr",
        ema_decay=0.995,
        optimizer=partial(torch.optim.AdamW, lr=3e-3),
        lr_scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=3e-3, total_steps=max(max_steps, 1)),
    )
    with _quiet_lightning():
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=max_steps,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            default_root_dir=out_dir,
        )
        trainer.fit(model, datamodule=data)
    train_seconds = time.perf_counter() - started

    mixture = data.mixture
    generator = torch.Generator().manual_seed(seed + 10)
    start = model.schedule.prior((n_samples, 2), generator=generator)
    samples = model.sample(start, generator=torch.Generator().manual_seed(seed + 11))
    oracle_samples = sample(
        ExactMixtureDenoiser(mixture, model.schedule), model.schedule, start, sampler=model.sampler,
        steps=model.sample_steps, grid=model.grid, generator=torch.Generator().manual_seed(seed + 11),
    )

    train = data.train_points().to(torch.float64)
    mean, cov = train.mean(0), torch.cov(train.T)
    z = torch.randn(n_samples, 2, generator=generator, dtype=torch.float64)
    gaussian = mean + z @ torch.linalg.cholesky(cov).T
    reference = mixture.sample(n_samples, generator=generator)
    second_draw = mixture.sample(n_samples, generator=generator)

    def sw(points: Tensor) -> float:
        # The same directions for every method, so their distances are comparable.
        return sliced_wasserstein(points, reference, generator=torch.Generator().manual_seed(seed + 12))

    sets = {"diffusion": samples, "oracle": oracle_samples, "gaussian": gaussian, "data": second_draw}
    metrics: dict[str, Any] = {}
    for name, points in sets.items():
        metrics[f"sw2_{name}"] = sw(points.detach().double())
        metrics[f"off_mode_{name}"] = _off_mode_fraction(points.detach().double(), mixture)
    metrics.update(
        sampler=model.sampler,
        sample_steps=model.sample_steps,
        n_samples=n_samples,
        train_steps=int(trainer.global_step),
        final_train_loss=float(trainer.callback_metrics.get("train/loss", float("nan"))),
        seconds=round(time.perf_counter() - started, 2),
        train_seconds=round(train_seconds, 2),
        seed=seed,
    )

    with open(out_dir / "samples.csv", "w") as f:
        f.write("source,x,y\n")
        for name, points in sets.items():
            for px, py in points.detach().double().tolist():
                f.write(f"{name},{px:.6g},{py:.6g}\n")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
