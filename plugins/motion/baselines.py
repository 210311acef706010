"""Text-to-motion baselines that a diffusion model must beat.

- :class:`RetrievalBaseline`: caption nearest-neighbour retrieval. For a query sentence
  embedding it returns the training motion whose caption embedding is nearest by cosine
  similarity, cut or looped to the requested length. It scores well on R-precision (it returns
  real motions) but can produce nothing new, so its diversity and FID show how much a model
  merely memorises.
- :class:`MotionRegressor`: the deterministic text -> motion regressor of the same size as
  :class:`~polydiff_motion.module.MotionDiffusion`: the same network, called with zeros at
  ``t = 0``, trained with a mean-squared error on the valid frames. One text gives one motion,
  the average of everything the text may mean, so its multimodality is zero. It subclasses the
  diffusion module, so ``generate``, checkpoints and every command work unchanged.

Both return motions as :meth:`MotionDiffusion.generate` does: HumanML3D's (denormalised)
features, ``(B, max(lengths), 263)``, zero past each length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from .features import FEATURE_DIM
from .module import MotionDiffusion

__all__ = ["RetrievalBaseline", "MotionRegressor"]


class RetrievalBaseline:
    """Caption nearest-neighbour retrieval over a set of captioned motions.

    Each entry is one caption and the frames it describes (a clip, or the part of a clip a
    sub-interval caption covers). A query returns the entry with the largest cosine similarity
    between its caption embedding and the query (the first such entry on a tie), cut to the
    requested length from its first frame, or looped when it is shorter: HumanML3D features
    hold root velocities and root-relative joints, so repeating the rows continues the motion
    from where it ended.

    Args:
        motions: the clips, each (T_i, 263) in HumanML3D's units.
        text_embeddings: one sentence embedding per entry.
        entries: per entry, ``(clip index, first frame, end frame)``.
        texts: per entry, the caption text (reported by :meth:`retrieve`).
        text_encoder: the name of the encoder that made ``text_embeddings``; queries must come
            from the same encoder.

    Shapes:
        text_embeddings: (N, D).

    Raises:
        ValueError: inconsistent sizes or an entry outside its clip.
    """

    def __init__(self, motions: Sequence[np.ndarray], text_embeddings: np.ndarray,
                 entries: Sequence[tuple[int, int, int]], texts: Sequence[str], *, text_encoder: str):
        self.motions = [np.asarray(m, dtype=np.float32) for m in motions]
        for i, motion in enumerate(self.motions):
            if motion.ndim != 2 or motion.shape[1] != FEATURE_DIM or len(motion) < 1:
                raise ValueError(f"motion {i} has shape {motion.shape}; expected (T >= 1, {FEATURE_DIM})")
        embeddings = np.asarray(text_embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or len(embeddings) != len(entries) or len(texts) != len(entries) or not len(entries):
            raise ValueError(f"need one embedding and one text per entry; got {embeddings.shape}, {len(texts)} "
                             f"texts and {len(entries)} entries")
        self.entries = [(int(c), int(a), int(b)) for c, a, b in entries]
        for clip, first, end in self.entries:
            if not (0 <= clip < len(self.motions) and 0 <= first < end <= len(self.motions[clip])):
                raise ValueError(f"entry ({clip}, {first}, {end}) lies outside its clip")
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        self.keys = embeddings / np.where(norms > 0, norms, 1.0)
        self.texts = list(texts)
        self.text_encoder, self.text_dim = str(text_encoder), int(embeddings.shape[1])

    @classmethod
    def from_humanml3d(cls, root: str | Path, split: str = "train", *, text_encoder: str = "minilm",
                       min_frames: int = 40) -> RetrievalBaseline:
        """The captions and motions of one split of a HumanML3D folder (embeddings through the
        folder's cache, as :class:`~polydiff_motion.data.MotionDataModule` makes them).

        Sub-interval captions shorter than ``min_frames`` are left out, as in training.

        Raises:
            polydiff_motion.formats.MotionDataError: the folder or split is missing, or no
                caption is usable.
        """
        from .data import CACHE_NAME, UNIT_LENGTH
        from .formats import HUMANML3D_FPS, MotionDataError, read_humanml3d
        from .text import EmbeddingCache, get_encoder

        records = read_humanml3d(root, split, min_frames=min_frames)
        motions, entries, texts = [], [], []
        for record in records:
            for caption in record.captions:
                span = record.frames(caption, HUMANML3D_FPS)
                if span.stop - span.start >= max(min_frames, UNIT_LENGTH):
                    entries.append((len(motions), span.start, span.stop))
                    texts.append(caption.text)
            motions.append(record.features)
        if not entries:
            raise MotionDataError(f"{root}: no usable caption in the {split} split")
        encoder = get_encoder(text_encoder)
        embeddings = EmbeddingCache(Path(root) / CACHE_NAME).encode(encoder, texts)
        return cls(motions, embeddings, entries, texts, text_encoder=encoder.name)

    def __len__(self) -> int:
        return len(self.entries)

    def retrieve(self, text_embeddings: Tensor | np.ndarray) -> np.ndarray:
        """Index of the nearest entry (cosine) for each query.

        Shapes:
            text_embeddings: (B, D) -> (B,) int64.
        """
        query = np.asarray(torch.as_tensor(text_embeddings).detach().cpu().float().numpy())
        if query.ndim != 2 or query.shape[1] != self.text_dim:
            raise ValueError(f"text embeddings of shape {query.shape} do not fit (B, {self.text_dim}) "
                             f"(the baseline indexes {self.text_encoder!r} embeddings)")
        norms = np.linalg.norm(query, axis=1, keepdims=True)
        return np.argmax((query / np.where(norms > 0, norms, 1.0)) @ self.keys.T, axis=1)

    def motion(self, index: int, length: int) -> np.ndarray:
        """Entry ``index``'s frames cut or looped to ``length``. Shapes: -> (length, 263)."""
        clip, first, end = self.entries[int(index)]
        frames = self.motions[clip][first:end]
        return frames[np.arange(int(length)) % len(frames)]

    @torch.no_grad()
    def generate(self, text_embeddings: Tensor, lengths: Tensor, *, generator: torch.Generator | None = None,
                 **unused: Any) -> Tensor:
        """The retrieved motions, like :meth:`MotionDiffusion.generate` (deterministic: the
        ``generator`` and sampler settings are accepted and ignored).

        Shapes:
            text_embeddings: (B, D); lengths: (B,); returns (B, max(lengths), 263) float32 on
            the device of ``text_embeddings``, zero past each length.
        """
        text = torch.as_tensor(text_embeddings)
        lengths = torch.as_tensor(lengths).long().reshape(-1).cpu()
        if lengths.shape[0] != text.shape[0] or lengths.numel() == 0 or int(lengths.min()) < 1:
            raise ValueError(f"need one length >= 1 per text embedding; got {tuple(lengths.shape)} for "
                             f"{tuple(text.shape)}")
        out = np.zeros((len(lengths), int(lengths.max()), FEATURE_DIM), dtype=np.float32)
        for row, (index, length) in enumerate(zip(self.retrieve(text), lengths.tolist())):
            out[row, :length] = self.motion(index, length)
        return torch.from_numpy(out).to(text.device)


class MotionRegressor(MotionDiffusion):
    """The deterministic text -> motion regressor: MDM's network without diffusion.

    The denoiser is called with a zero motion at ``t = 0`` and the text and frame mask as its
    condition, and trained with the mean-squared error of its output against the normalised
    motion on the valid frames. :meth:`sample` returns that output (no noise, no guidance), so
    ``generate`` and the commands treat it like a diffusion model.

    Args:
        denoiser: a :class:`~polydiff_motion.nets.MotionTransformer` (any network taking
            ``(x, t, cond)`` works).
        ema_decay, ema_start, optimizer, lr_scheduler, lr_scheduler_interval, data_info: as in
            :class:`~polydiff_motion.module.MotionDiffusion`.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        ema_decay: float = 0.999,
        ema_start: int = 0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        data_info: dict[str, Any] | None = None,
    ):
        super().__init__(denoiser, cond_dropout=0.0, ema_decay=ema_decay, ema_start=ema_start, sample_steps=1,
                         guidance=0.0, optimizer=optimizer, lr_scheduler=lr_scheduler,
                         lr_scheduler_interval=lr_scheduler_interval, data_info=data_info)

    def _regress(self, net: nn.Module, cond: Any, shape: tuple[int, ...]) -> Tensor:
        zeros = torch.zeros(shape, device=self.device, dtype=self.dtype)
        return net(zeros, torch.zeros(shape[0], device=self.device), cond)

    def compute_loss(self, batch: Mapping[str, Any], *, denoiser: nn.Module | None = None,
                     generator: torch.Generator | None = None, drop_cond: bool = True) -> Tensor:
        """Mean squared error of the regression on the valid frames (``batch["loss_mask"]``)."""
        net = self.denoiser if denoiser is None else denoiser
        x0 = batch["x0"]
        err = (self._regress(net, batch.get("cond"), tuple(x0.shape)) - x0).square()
        mask = batch.get("loss_mask")
        if mask is None:
            return err.mean()
        m = mask.to(device=x0.device, dtype=err.dtype)[..., None].expand_as(err)
        return (err * m).sum() / m.sum().clamp(min=1.0)

    @torch.no_grad()
    def sample(self, shape_or_x: Any, *, cond: Any = None, generator: torch.Generator | None = None,
               use_ema: bool = True, **unused: Any) -> Tensor:
        """The regression's output (``sampler``, ``steps``, ``guidance`` and noise are ignored)."""
        shape = tuple(shape_or_x.shape) if isinstance(shape_or_x, Tensor) else tuple(shape_or_x)
        was_training = self.training
        if was_training:
            self.eval()
        try:
            return self._regress(self.sampling_denoiser(use_ema), cond, shape)
        finally:
            if was_training:
                self.train()
