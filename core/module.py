"""``DiffusionModule``: the generic Lightning training loop for a Gaussian diffusion model.

The loop is the same for every modality: draw times, corrupt the clean data, predict, take a
weighted mean-squared error in a chosen parameterisation, keep an EMA of the weights, and in
validation measure the loss with the EMA weights and sample. A plugin supplies the denoiser, the
data (a ``LightningDataModule``) and its metrics (a :class:`SampleMetrics`), and overrides
:meth:`DiffusionModule.unpack_batch` when its batches are not the default mapping.

Everything is a typed constructor argument so LightningCLI can configure it from YAML::

    model:
      class_path: polydiff.module.DiffusionModule
      init_args:
        denoiser: {class_path: polydiff.demo.MLPDenoiser, init_args: {dim: 2}}
        schedule: {class_path: polydiff.schedules.VPLinear}
        weighting: min_snr
        optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 2.0e-4}}
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Callable, Literal, get_args

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

import polydiff
from polydiff.broadcast import append_dims, time_like
from polydiff.denoiser import drop_condition, prediction_of
from polydiff.ema import EMA
from polydiff.grids import GRIDS
from polydiff.parameterization import convert, from_x0_eps
from polydiff.samplers import SAMPLERS, check_sampler_options
from polydiff.samplers import sample as run_sampler
from polydiff.schedules import Schedule, VPLinear

__all__ = ["DiffusionModule", "SampleMetrics", "LossSpace", "Weighting", "CHECKPOINT_FORMAT"]

LossSpace = Literal["native", "eps", "x0", "v", "flow", "score"]
Weighting = Literal["none", "snr", "min_snr", "edm"]
LrInterval = Literal["step", "epoch"]

#: Version of the ``checkpoint["polydiff"]`` record; bumped when its fields change meaning.
CHECKPOINT_FORMAT = 1


def _check_choice(name: str, value: str, literal: Any) -> str:
    valid = get_args(literal)
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    return value


class SampleMetrics:
    """Base class of the metrics computed on samples during validation.

    Subclasses implement ``__call__(samples, batch)`` and return a mapping from metric name to a
    scalar (tensor or float); each is logged as ``val/<name>``. ``batch`` is the output of
    :meth:`DiffusionModule.unpack_batch` (a dict with at least ``"x0"``), so a metric can compare
    against the reference data or read the condition the samples were drawn with.

    Shapes:
        samples: like ``batch["x0"]``, (B, ...).
    """

    def __call__(self, samples: Tensor, batch: Mapping[str, Any]) -> dict[str, Tensor | float]:
        raise NotImplementedError


class DiffusionModule(pl.LightningModule):
    """Train a denoiser on a Gaussian forward process, with EMA weights and sampling.

    The training loss for a batch is
    ``mean(w(t) * m * (convert(D(x_t, t, c)) - target)^2) / mean(m)``, with times from
    ``schedule.sample_t``, ``x_t = schedule.corrupt(x0, t, eps, y)``, the prediction converted
    into ``loss_space`` and the target in that space computed from ``(x0, eps)``; ``m`` is the
    optional per-element loss mask.

    Weightings (``w``):

    * ``none``: 1.
    * ``snr``: ``alpha^2 / sigma^2`` multiplying the loss in ``loss_space`` as it is (on an
      ``x0``-space loss this gives exactly the plain ``eps``-space MSE of Ho et al. 2020).
    * ``min_snr``: Min-SNR-gamma (Hang et al. 2023): ``min(snr, gamma) / snr`` on the
      ``eps``-space loss.
    * ``edm``: ``(sigma_ve^2 + sigma_data^2) / (sigma_ve sigma_data)^2`` on the ``x0``-space loss
      (Karras et al. 2022, eq. 8), ``sigma_ve = sigma / alpha``; ``sigma_data`` is the schedule's
      if it has one, else 0.5.

    ``min_snr`` and ``edm`` are defined in a particular space; in any other ``loss_space`` the
    weight is divided by the squared ratio between an error in that space and the same error in
    the reference space (both are linear in the prediction at fixed ``x_t``), so the objective
    is the published one whatever ``loss_space`` is (e.g. ``min(snr, gamma) / (snr + 1)`` for a
    ``v`` loss under a variance-preserving schedule, as in Hang et al.). Elements at
    ``sigma = 0`` (observed exactly, with per-element times) carry no loss.

    Batches are mappings with ``"x0"`` and optionally ``"cond"`` (passed to the denoiser),
    ``"y"`` (the signal a bridge schedule drifts toward), ``"loss_mask"`` (per element, a prefix
    of ``x0``'s shape, bool or float) and ``"known"`` (a
    :class:`~polydiff.samplers.KnownValues` used when sampling in validation; in ``clean`` mode
    its entries are also trained at t = 0, as sampling hands them to the denoiser); override
    :meth:`unpack_batch` for other layouts.

    Args:
        denoiser: the network, ``denoiser(x_t, t, cond)``, declaring its ``prediction``.
        schedule: the forward process (default: :class:`~polydiff.schedules.VPLinear`).
        loss_space: the parameterisation the MSE is taken in; ``native`` is what the denoiser
            predicts.
        weighting: per-sample loss weight (see above).
        min_snr_gamma: the ``gamma`` of ``min_snr``.
        cond_dropout: probability of replacing a sample's condition by the null condition
            during training (through ``denoiser.drop_cond``), which trains the unconditional
            model classifier-free guidance needs (Ho & Salimans 2022).
        ema_decay: decay of the EMA weights, in [0, 1); 0 makes them the current weights.
        ema_start: optimiser steps before the EMA starts averaging (it copies the weights until
            then, so an average does not remember the first, poor iterates).
        sampler: sampler used by :meth:`sample` and validation (see
            :data:`polydiff.samplers.SAMPLERS`).
        sampler_options: that sampler's own options (e.g. ``{"eta": 0.5}`` for ddim, ``{"snr":
            0.5}`` for pc), checked here against the sampler's signature.
        sample_steps: number of sampling steps.
        grid: sampling time grid: auto, uniform, karras or logsnr.
        guidance: classifier-free guidance scale (1 = no guidance).
        val_metrics: metrics computed on samples in validation; ``None`` skips sampling.
        val_sample_batches: how many validation batches (the first ones) are also sampled.
        optimizer: builds the optimiser from the denoiser's parameters.
        lr_scheduler: builds an optional learning-rate scheduler from the optimiser.
        lr_scheduler_interval: whether the scheduler steps every optimiser step or epoch.

    Attributes:
        ema: the :class:`~polydiff.ema.EMA` of the denoiser, part of the ``state_dict``.
        plugin_name: name of the plugin this model belongs to (set by the CLI); recorded in
            checkpoints so that loading can check it.
        polydiff_config: the plain-data ``class_path``/``init_args`` config the module was built
            from (set by the CLI); recorded in checkpoints so that
            :func:`polydiff.checkpoint.load_module` can rebuild the module.
    """

    plugin_name: str | None = None
    polydiff_config: dict | None = None

    def __init__(
        self,
        denoiser: nn.Module,
        schedule: Schedule | None = None,
        loss_space: LossSpace = "native",
        weighting: Weighting = "none",
        min_snr_gamma: float = 5.0,
        cond_dropout: float = 0.0,
        ema_decay: float = 0.999,
        ema_start: int = 0,
        sampler: str = "dpmpp_2m",
        sampler_options: dict[str, Any] | None = None,
        sample_steps: int = 20,
        grid: str = "auto",
        guidance: float = 1.0,
        val_metrics: SampleMetrics | None = None,
        val_sample_batches: int = 1,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: LrInterval = "step",
    ):
        super().__init__()
        self.denoiser = denoiser
        self.native_prediction = prediction_of(denoiser)
        self.schedule = schedule if schedule is not None else VPLinear()
        if not isinstance(self.schedule, Schedule):
            raise TypeError(f"schedule must be a polydiff.schedules.Schedule, got {type(self.schedule).__name__}")
        self.loss_space = _check_choice("loss_space", loss_space, LossSpace)
        self.weighting = _check_choice("weighting", weighting, Weighting)
        if min_snr_gamma <= 0:
            raise ValueError(f"min_snr_gamma must be positive, got {min_snr_gamma}")
        self.min_snr_gamma = float(min_snr_gamma)
        if not 0.0 <= cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must lie in [0, 1), got {cond_dropout}")
        self.cond_dropout = float(cond_dropout)
        if ema_start < 0:
            raise ValueError(f"ema_start must be non-negative, got {ema_start}")
        self.ema_start = int(ema_start)
        self.ema = EMA(denoiser, decay=ema_decay)
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; valid: {', '.join(SAMPLERS)}")
        self.sampler = sampler
        self.sampler_options = check_sampler_options(sampler, sampler_options or {})
        if int(sample_steps) != sample_steps or sample_steps < 1:
            raise ValueError(f"sample_steps must be a positive integer, got {sample_steps!r}")
        self.sample_steps = int(sample_steps)
        if grid not in GRIDS:
            raise ValueError(f"unknown grid {grid!r}; valid: {', '.join(GRIDS)}")
        self.grid = grid
        self.guidance = float(guidance)
        self.val_metrics = val_metrics
        if val_sample_batches < 0:
            raise ValueError(f"val_sample_batches must be non-negative, got {val_sample_batches}")
        self.val_sample_batches = int(val_sample_batches)
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.lr_scheduler_interval = _check_choice("lr_scheduler_interval", lr_scheduler_interval, LrInterval)

    # --- batches -----------------------------------------------------------------------------
    def unpack_batch(self, batch: Any) -> dict[str, Any]:
        """Bring a batch to the dict this module reads: ``x0`` and optional ``cond``, ``y``,
        ``loss_mask``, ``known``. Extra keys are kept (metrics see them).

        Plugins whose DataModules yield other layouts override this.
        """
        if not isinstance(batch, Mapping):
            raise TypeError(
                f"{type(self).__name__} expects each batch to be a mapping with key 'x0' (and "
                f"optionally 'cond', 'y', 'loss_mask'), got {type(batch).__name__}; override "
                "unpack_batch for other batch formats"
            )
        if "x0" not in batch:
            raise KeyError(f"batch has no 'x0' entry (keys: {', '.join(map(str, batch))})")
        parts = dict(batch)
        for key in ("cond", "y", "loss_mask", "known"):
            parts.setdefault(key, None)
        return parts

    # --- the loss ----------------------------------------------------------------------------
    def sample_times(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Training times, one per sample by default; override for per-element times.

        Shapes:
            x0: (B, ...); returns (B,) or a prefix of x0's shape.
        """
        return self.schedule.sample_t(x0.shape[0], generator=generator, device=x0.device)

    def _space(self) -> str:
        return self.native_prediction if self.loss_space == "native" else self.loss_space

    def _error_ratio_sq(self, space: str, tt: Tensor) -> Tensor:
        """Squared ratio of an error in ``space`` to the same prediction's error in x0 space.

        At fixed ``x_t``, ``alpha dx0 + sigma deps = 0``, so every parameterisation's error is a
        multiple of the x0 error: eps ``-alpha/sigma``, v ``-(alpha^2 + sigma^2)/sigma``, score
        ``alpha/sigma^2``, flow ``alpha' - sigma' alpha/sigma``.
        """
        a, s = self.schedule.alpha(tt), self.schedule.sigma(tt)
        if space == "x0":
            ratio = torch.ones_like(a)
        elif space == "eps":
            ratio = a / s
        elif space == "v":
            ratio = (a * a + s * s) / s
        elif space == "score":
            ratio = a / (s * s)
        else:
            ratio = self.schedule.d_alpha(tt) - self.schedule.d_sigma(tt) * a / s
        return ratio * ratio

    def loss_weight(self, t: Tensor, x0: Tensor) -> Tensor:
        """The weight ``w(t)`` of the configured weighting in the configured loss space.

        Shapes:
            t: (B,) or a prefix of x0's shape; x0: (B, ...); returns a float64 tensor that
            broadcasts against x0 (``x0.ndim`` dimensions).
        """
        tt = time_like(t, x0)
        a, s = self.schedule.alpha(tt), self.schedule.sigma(tt)
        clean = s == 0
        if self.weighting == "none":
            return torch.where(clean, torch.zeros_like(tt), torch.ones_like(tt))
        s_safe = torch.where(clean, torch.ones_like(s), s)
        snr = (a / s_safe) ** 2
        if self.weighting == "snr":
            weight = snr
        else:
            if self.weighting == "min_snr":
                # min(snr, gamma)/snr on the eps loss = min(snr, gamma) on the x0 loss.
                weight_x0 = snr.clamp(max=self.min_snr_gamma)
            else:
                sigma_data = float(getattr(self.schedule, "sigma_data", 0.5))
                sigma_ve2 = 1.0 / snr
                weight_x0 = (sigma_ve2 + sigma_data**2) / (sigma_ve2 * sigma_data**2)
            ratio_sq = self._error_ratio_sq(self._space(), torch.where(clean, torch.full_like(tt, 0.5), tt))
            weight = weight_x0 / ratio_sq
        # Exactly observed elements have nothing to learn and an infinite SNR.
        return torch.where(clean, torch.zeros_like(weight), weight)

    def compute_loss(
        self,
        batch: Mapping[str, Any],
        *,
        denoiser: nn.Module | None = None,
        generator: torch.Generator | None = None,
        drop_cond: bool = True,
    ) -> Tensor:
        """The weighted diffusion loss of one unpacked batch (see the class docstring).

        Args:
            batch: the output of :meth:`unpack_batch`.
            denoiser: the network to evaluate (default: the trained one, not the EMA).
            generator: source of the times, noise and condition dropout (default: global RNG).
            drop_cond: whether to apply ``cond_dropout``.

        Returns:
            A scalar tensor.
        """
        denoiser = self.denoiser if denoiser is None else denoiser
        x0, cond, y, mask = batch["x0"], batch.get("cond"), batch.get("y"), batch.get("loss_mask")
        t = self.sample_times(x0, generator)
        known = batch.get("known")
        if known is not None and known.mode == "clean":
            # Entries a "clean" known-values mask hands to the denoiser sit at t = 0 when sampling,
            # so training shows them the same way (CSDI); they carry no loss at sigma = 0.
            t = torch.where(known.mask.to(x0.device), torch.zeros((), dtype=torch.float64, device=x0.device),
                            time_like(t, x0)).expand(x0.shape)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        x_t = self.schedule.corrupt(x0, t, noise, y)
        if drop_cond and self.cond_dropout > 0 and cond is not None:
            drop = torch.rand(x0.shape[0], generator=generator, device=x0.device) < self.cond_dropout
            dropper: Callable[[Any, Tensor], Any] = getattr(denoiser, "drop_cond", drop_condition)
            cond = dropper(cond, drop)
        prediction = denoiser(x_t, t, cond)
        space = self._space()
        pred = convert(prediction, self.native_prediction, space, x_t, t, self.schedule, y)
        target = from_x0_eps(x0, noise, space, x_t, t, self.schedule, y)
        diff = pred - target
        err = diff.abs().square() if diff.is_complex() else diff.square()  # |.|^2 for complex states
        weighted = err * self.loss_weight(t, x0).to(err.dtype)
        if mask is None:
            return weighted.mean()
        mask = append_dims(torch.as_tensor(mask, device=x0.device), x0.ndim).to(err.dtype).expand_as(err)
        # Mean over the elements that count, not over the batch, so masked-out padding does not
        # dilute the loss of short sequences.
        return (weighted * mask).sum() / mask.sum().clamp(min=1.0)

    # --- Lightning hooks ---------------------------------------------------------------------
    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        """The trained denoiser's prediction (not the EMA's)."""
        return self.denoiser(x, t, cond)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        parts = self.unpack_batch(batch)
        loss = self.compute_loss(parts)
        self.log("train/loss", loss, prog_bar=True, batch_size=parts["x0"].shape[0])
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> Any:
        # global_step counts completed steps, so it is this step's index (0-based) here.
        step = self.global_step
        out = super().optimizer_step(*args, **kwargs)
        self.update_ema(step)
        return out

    def update_ema(self, step: int | None = None) -> None:
        """Update the EMA after an optimiser step (call it yourself under manual optimisation)."""
        step = self.global_step if step is None else step
        if step < self.ema_start:
            self.ema.reset(self.denoiser)
        else:
            self.ema.update(self.denoiser)

    def _val_generator(self, batch_idx: int, dataloader_idx: int, device: torch.device) -> torch.Generator:
        # A fixed seed per (loader, batch, rank) makes val/loss and sampled metrics comparable
        # across epochs, and leaves the global RNG (hence training) untouched by validation.
        generator = torch.Generator(device=device)
        generator.manual_seed(1_000_003 * dataloader_idx + 7919 * batch_idx + self.global_rank)
        return generator

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        parts = self.unpack_batch(batch)
        x0 = parts["x0"]
        n = x0.shape[0]
        generator = self._val_generator(batch_idx, dataloader_idx, x0.device)
        loss = self.compute_loss(parts, denoiser=self.sampling_denoiser(), generator=generator, drop_cond=False)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=n)
        if self.val_metrics is None or batch_idx >= self.val_sample_batches:
            return
        samples = self.sample(
            tuple(x0.shape), cond=parts["cond"], y=parts["y"], known=parts["known"], generator=generator
        )
        for name, value in self.val_metrics(samples, parts).items():
            self.log(f"val/{name}", value, sync_dist=True, batch_size=n)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.denoiser.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        config = {"scheduler": scheduler, "interval": self.lr_scheduler_interval}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = "val/loss"
        return {"optimizer": optimizer, "lr_scheduler": config}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["polydiff"] = {
            "format": CHECKPOINT_FORMAT,
            "version": polydiff.__version__,
            "plugin": self.plugin_name,
            "module_class": f"{type(self).__module__}.{type(self).__qualname__}",
            "model_config": _plain_data(self.polydiff_config, "polydiff_config"),
        }
        if self.data_key is not None:
            info = self.require_info()
            checkpoint[self.data_key] = info
            self.record_init_arg(checkpoint, "data_info", info)

    # --- the data description ----------------------------------------------------------------
    #: The checkpoint key under which a module keeps the description of its data (feature
    #: statistics, sizes, a vocabulary): set by plugins whose networks or normalisation depend on
    #: the data. With it set, the module takes the description from the data module's ``info()``
    #: in ``setup`` (:meth:`configure_data`), checks the fields in :attr:`data_matching` when it
    #: already has one, records it in checkpoints (under this key and as the ``data_info`` init
    #: argument) and takes it back from a checkpoint's key when loaded without it.
    data_key: str | None = None
    #: Fields of the data description that must agree between a trained model and new data.
    data_matching: tuple[str, ...] = ()
    #: The data description, once known.
    data_info: dict[str, Any] | None = None

    def configure_data(self, info: Mapping[str, Any]) -> None:
        """Take a data description (check it, build what depends on it, set :attr:`data_info`)."""
        raise NotImplementedError(f"{type(self).__name__} sets data_key but does not implement configure_data")

    def require_info(self) -> dict[str, Any]:
        """The data description; an error saying how to get one when there is none yet."""
        if self.data_info is None:
            raise RuntimeError(f"the {type(self).__name__} has no data description yet: train it on its plugin's data "
                               "module or load a checkpoint")
        return self.data_info

    def setup(self, stage: str | None = None) -> None:
        if self.data_key is None:
            return
        info = self.datamodule_info()
        if info is None:
            return
        if self.data_info is None:
            self.configure_data(info)
            self.to(self.device)
            return
        for key in self.data_matching:
            if info.get(key) != self.data_info.get(key):
                ours, theirs = repr(self.data_info.get(key)), repr(info.get(key))
                detail = f" {theirs} differs from the model's {ours}" if len(ours) + len(theirs) < 160 else \
                    " differs from the model's"
                raise ValueError(f"the data's {key}{detail}")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.data_key is not None and self.data_info is None and isinstance(checkpoint.get(self.data_key), Mapping):
            self.configure_data(checkpoint[self.data_key])

    def rebuild_ema(self) -> None:
        """Start the EMA afresh from the denoiser as it is now, with the same decay and warm-up.

        Call it after a data-dependent build has added layers to the denoiser (in
        ``setup`` or from a checkpoint's data description): the EMA made in ``__init__`` copied
        the network before those layers existed.
        """
        self.ema = EMA(self.denoiser, decay=self.ema.decay, warmup=self.ema.warmup)

    def datamodule_info(self) -> Any:
        """``info()`` of the trainer's data module, or ``None`` (no trainer, no data module, or
        one without ``info``): what a plugin's module reads in ``setup`` to build the layers
        whose sizes come from the data."""
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        if datamodule is None or not callable(getattr(datamodule, "info", None)):
            return None
        return datamodule.info()

    @staticmethod
    def record_init_arg(checkpoint: dict[str, Any], name: str, value: Any) -> None:
        """Record ``value`` as the init argument ``name`` of the model config saved in
        ``checkpoint`` (call it in ``on_save_checkpoint`` after the base class), so that
        :func:`polydiff.checkpoint.load_module` rebuilds the module with what it learned from its
        data (a vocabulary, normalisers) without the data."""
        record = checkpoint.get("polydiff")
        config = record.get("model_config") if isinstance(record, dict) else None
        if not isinstance(config, dict):
            return
        config = dict(config)
        if "class_path" in config:
            config["init_args"] = {**config.get("init_args", {}), name: _plain_data(value, name)}
        else:
            config[name] = _plain_data(value, name)
        record["model_config"] = config

    # --- sampling ----------------------------------------------------------------------------
    def sampling_denoiser(self, use_ema: bool = True) -> nn.Module:
        """The network sampling uses: the EMA copy once it has been updated, else the trained one.

        A module that has never taken an optimiser step (built by hand, or with only the
        denoiser's weights loaded) has an EMA equal to its initial weights, which would be the
        wrong network to sample from.
        """
        if use_ema and int(self.ema.num_updates) > 0:
            return self.ema.module
        return self.denoiser

    @torch.no_grad()
    def sample(
        self,
        shape_or_x: tuple[int, ...] | torch.Size | Tensor,
        *,
        cond: Any = None,
        y: Tensor | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        grid: str | Tensor | None = None,
        guidance: float | None = None,
        known: Any = None,
        generator: torch.Generator | None = None,
        callback: Callable[..., Tensor | None] | None = None,
        use_ema: bool = True,
        **options: Any,
    ) -> Tensor:
        """Draw samples with the configured (or the given) sampler, steps, grid and guidance.

        Args:
            shape_or_x: the shape to sample (the start state is drawn from
                ``schedule.prior`` with ``generator``), or the start state itself at
                ``schedule.t_max``.
            cond: the condition passed to the denoiser (``None`` for unconditional).
            y: the signal a bridge schedule drifts toward.
            sampler, steps, grid, guidance: override the module's settings for this call.
            known: a :class:`~polydiff.samplers.KnownValues` (inpainting, imputation).
            generator: the source of all randomness, for reproducible samples.
            callback: called after every step with a :class:`~polydiff.samplers.StepInfo`.
            use_ema: sample with the EMA weights (if they have been updated at all).
            options: the sampler's own options, over ``sampler_options`` (which apply only to
                the configured sampler).

        Shapes:
            shape_or_x: (B, ...) as a shape or a tensor; y: (B, ...); returns (B, ...).
        """
        name = self.sampler if sampler is None else sampler
        merged = {**(self.sampler_options if name == self.sampler else {}), **options}
        if isinstance(shape_or_x, Tensor):
            x = shape_or_x.to(self.device)
        else:
            x = self.schedule.prior(
                tuple(shape_or_x), y=y, generator=generator, dtype=None if y is not None else self.dtype,
                device=self.device
            )
        # Switching modes walks every submodule (about as long as a small network's forward pass
        # at batch 1), so a module already in eval mode is left as it is.
        was_training = self.training
        if was_training:
            self.eval()
        try:
            return run_sampler(
                self.sampling_denoiser(use_ema),
                self.schedule,
                x,
                sampler=name,
                steps=self.sample_steps if steps is None else steps,
                grid=self.grid if grid is None else grid,
                cond=cond,
                y=y,
                guidance=self.guidance if guidance is None else guidance,
                known=known,
                generator=generator,
                callback=callback,
                **merged,
            )
        finally:
            if was_training:
                self.train()


def _plain_data(value: Any, where: str) -> Any:
    """``value`` as JSON-like data, which ``torch.load(weights_only=True)`` can read back."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "as_dict") and callable(value.as_dict):  # a jsonargparse Namespace
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {str(k): _plain_data(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_data(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, os.PathLike):
        return str(value)
    raise TypeError(
        f"{where} holds a {type(value).__name__}, which a weights-only checkpoint cannot store; "
        "the model config must be plain data (class_path/init_args dicts, lists, numbers, strings)"
    )
