"""Text-to-motion evaluation: a TMR-style motion-text evaluator, the metric table and its commands.

:class:`MotionTextEvaluator` embeds motions and captions in one space (after TMR, Petrovich et
al. 2023): a small transformer over the normalised 263-d frames, pooled and projected to a unit
vector, and an MLP over the caption's sentence embedding, trained with a symmetric InfoNCE loss
whose negatives leave out captions that say the same thing. Its embeddings stand in for the
pretrained encoders of Guo et al. 2022 in :func:`evaluate_motions`, which computes the field's
table (FID, R-precision, matching score, diversity, multimodality) with the functions of
:mod:`~polydiff_motion.metrics`, plus the physical-plausibility measures on the recovered joints.

The evaluator normalises motions with its own statistics (those of the data it was trained on),
so any model's motions are measured in the same units, and records the text encoder its
captions must be embedded with. It is saved as a plain file (a dict of tensors and plain data)
that ``torch.load(weights_only=True)`` reads.

The shipped evaluator, ``assets/evaluator-demo.pt`` (:func:`load_evaluator` with no path), was
trained on the default demo corpus (``polydiff motion make-demo-data out/``: 2000 clips, seed 0,
MiniLM captions) with::

    polydiff motion train-evaluator --data.root out/ -o evaluator-demo.pt --steps 400 --threads 2

(batch 64, seed 0, AdamW at 2e-4 with warm-up and cosine decay; 2.4 MB). It was trained on the
corpus as ``make-demo-data`` wrote it before its shortest clips were made 2.1 s long instead of
2.0 s (about 7 % of the clips, which the 40-frame minimum then dropped); every other clip, caption
and split is the same as the current default's. Validation on the
corpus's val split (181 caption-crop pairs): R-precision in batches of 32 top-1 0.913, top-3
1.000 (chance 0.031, 0.094); text-to-motion top-1 over the whole split 0.635; InfoNCE 0.610.
It took 951 s on two CPU cores shared with other jobs (2.4 s a step; 1.3 s a step, about nine
minutes in all, with one other job). On the corpus's test split (189 clips, held-out caption
templates) ``polydiff motion evaluate --baseline retrieval`` gives the real motions R-precision
0.819 / 0.944 / 0.975, matching score 0.488, diversity 1.338, and caption retrieval from the
train split FID 0.033, R-precision 0.662 / 0.844 / 0.900.

Commands (``fn(argv) -> exit status``):

* ``polydiff motion train-evaluator --data.root out/ -o evaluator.pt --steps N``;
* ``polydiff motion evaluate --ckpt m.ckpt --data.root out/ [-o metrics.json]``: one motion per
  test caption at its clip's length, and the metric table with the real test set's row.

Inputs are only read; outputs that exist are refused unless ``--overwrite`` is given. Exit
status: 0 success, 1 a file could not be used, 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .features import FEATURE_DIM
from .commands import _fail
from .nets import sinusoidal_embedding

__all__ = [
    "MotionTextEvaluator",
    "EVALUATOR_FORMAT",
    "negative_filter",
    "info_nce",
    "train_evaluator",
    "load_evaluator",
    "embed_motions",
    "embed_texts",
    "evaluate_motions",
    "interval_r_precision",
    "format_table",
    "train_evaluator_command",
    "evaluate_command",
]

#: The key and version that mark an evaluator file.
EVALUATOR_FORMAT = ("polydiff_motion_evaluator", 1)
_ASSET = "evaluator-demo.pt"

Pooling = Literal["cls", "mean"]


# --- the contrastive loss -----------------------------------------------------------------------
def negative_filter(caption_embeddings: Tensor, threshold: float = 0.95) -> Tensor:
    """Pairs whose captions are near-duplicates, to be left out of each other's negatives (TMR).

    TMR (Petrovich et al. 2023, Sec. 3.2) notices that a batch often holds several captions that
    describe the same motion ("a person walks", "someone is walking"); treating their motions
    as negatives of each other punishes the right answer. A pair ``(i, j)``, ``i != j``, is
    dropped when the cosine similarity of the two captions' sentence embeddings exceeds
    ``threshold`` (TMR states its threshold on ``(1 + cos) / 2``; here it is the cosine itself).

    Shapes:
        caption_embeddings: (B, D) -> (B, B) bool, True where the pair is dropped; the diagonal
        is always False.
    """
    e = F.normalize(caption_embeddings.float(), dim=-1)
    drop = (e @ e.T) > threshold
    return drop & ~torch.eye(e.shape[0], dtype=torch.bool, device=e.device)


def info_nce(motion_latents: Tensor, text_latents: Tensor, temperature: float = 0.1, *,
             caption_embeddings: Tensor | None = None, threshold: float = 0.95) -> Tensor:
    """Symmetric InfoNCE (van den Oord et al. 2018; CLIP, Radford et al. 2021) of matched pairs.

    With ``S = M T^T / temperature`` (row i of each input a matched pair), the loss is the mean
    of the cross-entropies of the rows (motion -> text) and of the columns (text -> motion)
    with the diagonal as the target. Pairs :func:`negative_filter` drops get ``-inf`` logits.

    Shapes:
        motion_latents, text_latents: (B, D), unit vectors; caption_embeddings: (B, E); returns
        a scalar.
    """
    if motion_latents.shape != text_latents.shape or motion_latents.ndim != 2:
        raise ValueError(f"need matched (B, D) latents, got {tuple(motion_latents.shape)} and "
                         f"{tuple(text_latents.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logits = motion_latents.float() @ text_latents.float().T / temperature
    if caption_embeddings is not None:
        logits = logits.masked_fill(negative_filter(caption_embeddings, threshold), float("-inf"))
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


# --- the evaluator ------------------------------------------------------------------------------
class MotionTextEvaluator(nn.Module):
    """A motion encoder and a caption encoder into one unit-sphere latent space (TMR-style).

    Motion: a linear embedding of each run of ``frames_per_token`` normalised frames (4,
    HumanML3D's unit length, cuts attention's cost 16-fold so the evaluator trains on a CPU;
    padded frames inside a run are zeroed), sinusoidal positions, a pre-norm transformer encoder
    with the wholly padded tokens masked out, pooled by a learned CLS token or the
    mean over valid frames, then a linear map to ``latent_dim`` and L2 normalisation. Text: an
    MLP from the caption's sentence embedding (from the encoder named ``text_encoder``) to
    ``latent_dim``, L2-normalised. TMR's motion encoder is a VAE; its mean is what evaluation
    uses, so this deterministic encoder keeps only that part.

    Args:
        text_dim: size of the sentence embedding.
        latent_dim: size of the joint space.
        dim, layers, heads, ff, dropout: the motion transformer.
        text_hidden: width of the text MLP's hidden layer.
        max_frames: the longest motion the encoder takes.
        frames_per_token: consecutive frames embedded as one token.
        pooling: ``cls`` or ``mean``.
        temperature: of the InfoNCE loss.
        threshold: caption cosine above which negatives are filtered.
        text_encoder: the name of the caption encoder (see
            :func:`~polydiff_motion.text.get_encoder`).
        mean, std: the normalisation statistics of the motions (263 each; default 0 and 1,
            replaced by those of the training data in :func:`train_evaluator`).

    Shapes:
        motion features: (B, T, 263) in HumanML3D's units with T <= max_frames; lengths (B,);
        text embeddings (B, text_dim); latents (B, latent_dim).
    """

    def __init__(
        self,
        text_dim: int = 384,
        latent_dim: int = 256,
        dim: int = 128,
        layers: int = 2,
        heads: int = 4,
        ff: int = 256,
        dropout: float = 0.1,
        text_hidden: int = 256,
        max_frames: int = 196,
        frames_per_token: int = 4,
        pooling: Pooling = "cls",
        temperature: float = 0.1,
        threshold: float = 0.95,
        text_encoder: str = "minilm",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"unknown pooling {pooling!r}; valid: cls, mean")
        if dim < 2 or dim % 2 or dim % heads:
            raise ValueError(f"dim must be even and divisible by heads; got dim={dim}, heads={heads}")
        if min(text_dim, latent_dim, layers, ff, text_hidden, max_frames, frames_per_token) < 1:
            raise ValueError("text_dim, latent_dim, layers, ff, text_hidden, max_frames and frames_per_token must "
                             "be positive")
        if temperature <= 0 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"need temperature > 0 and dropout in [0, 1); got {temperature}, {dropout}")
        self.text_dim, self.latent_dim, self.dim, self.layers = int(text_dim), int(latent_dim), int(dim), int(layers)
        self.heads, self.ff, self.dropout, self.text_hidden = int(heads), int(ff), float(dropout), int(text_hidden)
        self.max_frames, self.frames_per_token, self.pooling = int(max_frames), int(frames_per_token), pooling
        self.temperature, self.threshold, self.text_encoder = float(temperature), float(threshold), str(text_encoder)
        mean = torch.zeros(FEATURE_DIM) if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        std = torch.ones(FEATURE_DIM) if std is None else torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != (FEATURE_DIM,) or std.shape != (FEATURE_DIM,) or not bool((std > 0).all()):
            raise ValueError(f"mean and std need {FEATURE_DIM} entries, std positive")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        self.input_proj = nn.Linear(FEATURE_DIM * self.frames_per_token, self.dim)
        self.cls = nn.Parameter(torch.randn(self.dim) * 0.02)
        tokens = -(-self.max_frames // self.frames_per_token)
        self.register_buffer("position", sinusoidal_embedding(torch.arange(tokens + 1), self.dim), persistent=False)
        layer = nn.TransformerEncoderLayer(self.dim, self.heads, self.ff, self.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        # Nested tensors would take another code path in eval mode only.
        self.encoder = nn.TransformerEncoder(layer, self.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(self.dim)
        self.motion_out = nn.Linear(self.dim, self.latent_dim)
        self.text_mlp = nn.Sequential(nn.Linear(self.text_dim, self.text_hidden), nn.GELU(),
                                      nn.Dropout(self.dropout), nn.Linear(self.text_hidden, self.latent_dim))

    def config(self) -> dict[str, Any]:
        """The constructor arguments as plain data (the statistics travel in the state dict)."""
        return {"text_dim": self.text_dim, "latent_dim": self.latent_dim, "dim": self.dim, "layers": self.layers,
                "heads": self.heads, "ff": self.ff, "dropout": self.dropout, "text_hidden": self.text_hidden,
                "max_frames": self.max_frames, "frames_per_token": self.frames_per_token, "pooling": self.pooling,
                "temperature": self.temperature, "threshold": self.threshold, "text_encoder": self.text_encoder}

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def normalize(self, features: Tensor) -> Tensor:
        """Shapes: (..., 263) -> (..., 263), with the evaluator's own statistics."""
        return (features - self.mean.to(features)) / self.std.to(features)

    def encode_normalized(self, x: Tensor, mask: Tensor) -> Tensor:
        """Latents of motions already normalised with the evaluator's statistics.

        Shapes:
            x: (B, T, 263); mask: (B, T) bool, True on valid frames; returns (B, latent_dim).
        """
        b, n, f = x.shape
        if f != FEATURE_DIM or n > self.max_frames or n < 1:
            raise ValueError(f"motion of shape {tuple(x.shape)} does not fit (B, 1 <= T <= {self.max_frames}, "
                             f"{FEATURE_DIM})")
        mask = mask.to(device=x.device, dtype=torch.bool)
        if mask.shape != (b, n) or not bool(mask.any(dim=1).all()):
            raise ValueError("the frame mask must be (B, T) with at least one valid frame per motion")
        p = self.frames_per_token
        pad = -n % p
        x = F.pad(torch.where(mask[..., None], x.float(), torch.zeros((), device=x.device)), (0, 0, 0, pad))
        tokens = (n + pad) // p
        # A token holds p consecutive frames; it is valid when any of them is.
        valid = F.pad(mask, (0, pad)).reshape(b, tokens, p).any(dim=-1)
        h = self.input_proj(x.reshape(b, tokens, p * FEATURE_DIM))
        h = torch.cat([self.cls.expand(b, 1, -1), h], dim=1) + self.position[: tokens + 1]
        padding = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=x.device), ~valid], dim=1)
        h = self.norm(self.encoder(h, src_key_padding_mask=padding))
        if self.pooling == "cls":
            pooled = h[:, 0]
        else:
            m = valid.float()[..., None]
            pooled = (h[:, 1:] * m).sum(dim=1) / m.sum(dim=1)
        return F.normalize(self.motion_out(pooled), dim=-1)

    def encode_motion(self, features: Tensor, lengths: Tensor) -> Tensor:
        """Latents of motions in HumanML3D's units (zero or anything past each length).

        Shapes:
            features: (B, T, 263); lengths: (B,) in [1, T]; returns (B, latent_dim).
        """
        features = torch.as_tensor(features, dtype=torch.float32, device=self.device)
        lengths = torch.as_tensor(lengths, device=self.device).long().reshape(-1)
        if features.ndim != 3 or lengths.shape[0] != features.shape[0]:
            raise ValueError(f"need features (B, T, {FEATURE_DIM}) and lengths (B,); got {tuple(features.shape)} "
                             f"and {tuple(lengths.shape)}")
        if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > features.shape[1]):
            raise ValueError(f"lengths must lie in [1, {features.shape[1]}]")
        mask = torch.arange(features.shape[1], device=self.device)[None] < lengths[:, None]
        x = torch.where(mask[..., None], self.normalize(features), torch.zeros((), device=self.device))
        return self.encode_normalized(x, mask)

    def encode_text(self, text_embeddings: Tensor) -> Tensor:
        """Latents of caption embeddings from the evaluator's text encoder.

        Shapes:
            text_embeddings: (B, text_dim) -> (B, latent_dim).
        """
        text = torch.as_tensor(text_embeddings, dtype=torch.float32, device=self.device)
        if text.ndim != 2 or text.shape[1] != self.text_dim:
            raise ValueError(f"text embeddings of shape {tuple(text.shape)} do not fit (B, {self.text_dim}) "
                             f"(the evaluator reads {self.text_encoder!r} embeddings)")
        return F.normalize(self.text_mlp(text), dim=-1)

    def loss(self, x: Tensor, mask: Tensor, text_embeddings: Tensor) -> Tensor:
        """The filtered InfoNCE loss of a batch of normalised motions and their captions' embeddings."""
        return info_nce(self.encode_normalized(x, mask), self.encode_text(text_embeddings), self.temperature,
                        caption_embeddings=text_embeddings, threshold=self.threshold)

    # --- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, training: dict[str, Any] | None = None,
             overwrite: bool = False) -> None:
        """Write the evaluator as a plain file: ``{key: version, "config", "state_dict", "training"}``.

        Raises:
            FileExistsError: ``path`` exists and ``overwrite`` is False.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
        payload = {
            EVALUATOR_FORMAT[0]: EVALUATOR_FORMAT[1],
            "config": self.config(),
            "state_dict": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
            "training": dict(training or {}),
        }
        partial = path.with_name(path.name + ".partial")
        torch.save(payload, partial)
        os.replace(partial, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> MotionTextEvaluator:
        """An evaluator saved by :meth:`save`, in eval mode; its training record is ``.training``.

        Raises:
            polydiff.checkpoint.CheckpointError: a missing or unreadable file, one with pickled
                code, a model checkpoint or anything else that is not an evaluator, or weights
                that do not fit the recorded configuration.
        """
        import pickle
        import zipfile

        from polydiff.checkpoint import CheckpointError

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such evaluator file")
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path} is not a motion-text evaluator (not a file written by torch.save)")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise CheckpointError(f"{path} contains pickled Python objects; an evaluator file holds only tensors "
                                  "and plain data") from None
        except (RuntimeError, EOFError, OSError, ValueError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise CheckpointError(f"{path} could not be read: {reason}") from None
        if not isinstance(payload, dict) or EVALUATOR_FORMAT[0] not in payload:
            what = "a polydiff model checkpoint" if isinstance(payload, dict) and "polydiff" in payload else "a torch file"
            raise CheckpointError(f"{path} is {what}, not a motion-text evaluator (write one with "
                                  "'polydiff motion train-evaluator')")
        if payload[EVALUATOR_FORMAT[0]] != EVALUATOR_FORMAT[1]:
            raise CheckpointError(f"{path}: evaluator format {payload[EVALUATOR_FORMAT[0]]!r} is not the one this "
                                  f"version reads ({EVALUATOR_FORMAT[1]})")
        config, state = payload.get("config"), payload.get("state_dict")
        if not isinstance(config, dict) or not isinstance(state, dict):
            raise CheckpointError(f"{path}: the evaluator lacks its 'config' or 'state_dict'")
        try:
            evaluator = cls(**config)
            evaluator.load_state_dict(state, strict=True)
        except (TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{path}: the evaluator's weights do not fit its configuration: "
                                  f"{str(error).splitlines()[0]}") from None
        evaluator.training_record = dict(payload.get("training") or {})
        return evaluator.to(device).eval()


def load_evaluator(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> MotionTextEvaluator:
    """The evaluator in ``path``, or the shipped one (trained on the default demo corpus).

    Raises:
        polydiff.checkpoint.CheckpointError: see :meth:`MotionTextEvaluator.load`.
    """
    if path is not None:
        return MotionTextEvaluator.load(path, device)
    from importlib.resources import as_file, files

    with as_file(files("polydiff_motion") / "assets" / _ASSET) as shipped:
        return MotionTextEvaluator.load(shipped, device)


# --- training -----------------------------------------------------------------------------------
@torch.no_grad()
def _validate(evaluator: MotionTextEvaluator, loader: Any) -> dict[str, float]:
    """Retrieval on a data split: R-precision in batches of 32 (Guo et al.) and over the whole split."""
    from .metrics import r_precision

    was_training = evaluator.training
    evaluator.eval()
    motions, texts, losses = [], [], []
    for batch in loader:
        x, mask, text = batch["x0"].to(evaluator.device), batch["mask"].to(evaluator.device), batch["text"]
        m, t = evaluator.encode_normalized(x, mask), evaluator.encode_text(text)
        losses.append(float(info_nce(m, t, evaluator.temperature, caption_embeddings=text.to(m.device),
                                     threshold=evaluator.threshold)))
        motions.append(m.cpu())
        texts.append(t.cpu())
    evaluator.train(was_training)
    m, t = torch.cat(motions), torch.cat(texts)
    out = {"val_loss": float(np.mean(losses)), "val_items": int(m.shape[0])}
    if m.shape[0] >= 32:
        top = r_precision(t.numpy(), m.numpy(), top_k=3, batch=32)
        out.update({"val_r_precision_top1": float(top[0]), "val_r_precision_top3": float(top[2])})
    # Text -> motion over the whole split, the harder figure TMR reports.
    out["val_t2m_top1_all"] = float(((t @ m.T).argmax(dim=1) == torch.arange(m.shape[0])).float().mean())
    return out


def train_evaluator(
    root: str | os.PathLike,
    steps: int = 400,
    batch: int = 64,
    seed: int = 0,
    *,
    text_encoder: str = "minilm",
    lr: float = 2e-4,
    weight_decay: float = 1e-4,
    max_frames: int = 196,
    min_frames: int = 40,
    device: str = "cpu",
    log_every: int = 100,
    log: Any = None,
    **architecture: Any,
) -> tuple[MotionTextEvaluator, dict[str, Any]]:
    """Train an evaluator on the train split of a HumanML3D folder; validate on its val split.

    Batches come from :class:`~polydiff_motion.data.MotionDataModule` (random captions and
    crops of at most ``max_frames`` frames). AdamW with a linear warm-up over the first 5 % of
    the steps and cosine decay.

    Args:
        root: the HumanML3D folder.
        steps: optimiser steps.
        batch: pairs per batch (the negatives of each pair are the other ``batch - 1``).
        seed: seeds the weights, the data order and the crops.
        text_encoder: the caption encoder (the evaluator records it).
        lr, weight_decay: AdamW's.
        max_frames, min_frames: as in the data module.
        device: where to train.
        log_every: steps between progress lines.
        log: a callable taking a line of text (``None``: silent).
        architecture: further :class:`MotionTextEvaluator` arguments.

    Returns:
        The evaluator (eval mode) and its training record as plain data (data set, settings,
        seconds, validation figures).
    """
    from .data import MotionDataModule

    if steps < 1 or batch < 2:
        raise ValueError(f"need steps >= 1 and batch >= 2; got {steps} and {batch}")
    torch.manual_seed(seed)
    data = MotionDataModule(str(root), text_encoder=text_encoder, max_frames=max_frames, min_frames=min_frames,
                            batch_size=batch, seed=seed)
    data.setup("fit")
    info = data.info()
    evaluator = MotionTextEvaluator(text_dim=int(info["text_dim"]), max_frames=max_frames,
                                    text_encoder=str(info["text_encoder"]), mean=info["mean"], std=info["std"],
                                    **architecture).to(device)
    optimizer = torch.optim.AdamW(evaluator.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    loader = data.train_dataloader()
    started, step, running = time.perf_counter(), 0, []
    evaluator.train()
    while step < steps:
        for item in loader:
            x, mask, text = item["x0"].to(device), item["mask"].to(device), item["text"].to(device)
            loss = evaluator.loss(x, mask, text)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(evaluator.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            running.append(float(loss.detach()))
            step += 1
            if log is not None and (step % log_every == 0 or step == steps):
                log(f"step {step}/{steps} loss {np.mean(running):.4f} ({time.perf_counter() - started:.0f} s)")
                running = []
            if step >= steps:
                break
    figures = _validate(evaluator, data.val_dataloader())
    record = {"dataset": info["dataset"], "text_encoder": info["text_encoder"], "steps": int(steps),
              "batch": int(batch), "seed": int(seed), "lr": float(lr),
              "seconds": round(time.perf_counter() - started, 1), **figures}
    if log is not None:
        log("validation: " + json.dumps(record))
    return evaluator.eval(), record


def train_evaluator_command(argv: Sequence[str]) -> int:
    """``polydiff motion train-evaluator --data.root out/ -o evaluator.pt --steps N``."""
    parser = argparse.ArgumentParser(
        prog="polydiff motion train-evaluator",
        description="Train the TMR-style motion-text evaluator (contrastive, with near-duplicate captions kept out "
                    "of the negatives) on a HumanML3D folder's train split, report retrieval on its val split, and "
                    "write it as a weights-only file for 'polydiff motion evaluate --evaluator'.",
    )
    parser.add_argument("--data.root", dest="root", type=Path, required=True, help="the HumanML3D folder")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the evaluator file to write")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--text-encoder", default="minilm", help="the caption encoder (minilm, hashing, hashing-<dim>)")
    parser.add_argument("--max-frames", type=int, default=196)
    parser.add_argument("--min-frames", type=int, default=40)
    parser.add_argument("--dim", type=int, default=128, help="width of the motion transformer")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--latent-dim", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    opts = parser.parse_args(list(argv))
    if opts.steps < 1 or opts.batch < 2 or opts.threads < 0:
        _fail("--steps must be positive, --batch at least 2 and --threads non-negative")
        return 2
    if opts.output.exists() and not opts.overwrite:
        _fail(f"{opts.output} exists; pass --overwrite to replace it")
        return 1
    if opts.threads:
        torch.set_num_threads(opts.threads)
    from .formats import MotionDataError

    try:
        evaluator, record = train_evaluator(
            opts.root, opts.steps, opts.batch, opts.seed, text_encoder=opts.text_encoder, lr=opts.lr,
            max_frames=opts.max_frames, min_frames=opts.min_frames, device=opts.device,
            log=lambda line: print(line, file=sys.stderr, flush=True),
            dim=opts.dim, layers=opts.layers, latent_dim=opts.latent_dim)
    except (MotionDataError, KeyError, ValueError, OSError) as error:
        _fail(str(error))
        return 1
    try:
        evaluator.save(opts.output, training=record, overwrite=opts.overwrite)
    except (FileExistsError, OSError) as error:
        _fail(str(error))
        return 1
    print(json.dumps(record, indent=2))
    return 0


# --- embeddings ---------------------------------------------------------------------------------
def _as_motion_list(motions: Any, lengths: Any, name: str) -> list[np.ndarray]:
    """Each motion's valid frames as a (L_i, 263) float32 array."""
    lengths = np.asarray(torch.as_tensor(lengths).cpu(), dtype=np.int64).reshape(-1)
    if isinstance(motions, Tensor):
        motions = motions.detach().cpu().float().numpy()
    if len(motions) != len(lengths):
        raise ValueError(f"{name}: {len(motions)} motions but {len(lengths)} lengths")
    out = []
    for i, (motion, length) in enumerate(zip(motions, lengths)):
        motion = np.asarray(motion, dtype=np.float32)
        if motion.ndim != 2 or motion.shape[1] != FEATURE_DIM or not 1 <= length <= len(motion):
            raise ValueError(f"{name}[{i}]: shape {motion.shape} with length {length}; expected (T, {FEATURE_DIM}) "
                             f"and 1 <= length <= T")
        out.append(motion[:length])
    return out


@torch.no_grad()
def embed_motions(evaluator: MotionTextEvaluator, motions: Any, lengths: Any, *, batch: int = 32) -> np.ndarray:
    """Evaluator latents of motions in HumanML3D's units; each is cut to ``evaluator.max_frames``
    frames (its first ones), as the protocol crops test clips to the model's longest motion.

    Shapes:
        motions: (N, T, 263) or N arrays (T_i, 263); lengths: (N,); returns (N, latent_dim).
    """
    clips = [m[:evaluator.max_frames] for m in _as_motion_list(motions, lengths, "motions")]
    out = []
    for start in range(0, len(clips), batch):
        part = clips[start:start + batch]
        sizes = torch.tensor([len(c) for c in part])
        padded = torch.zeros(len(part), int(sizes.max()), FEATURE_DIM)
        for row, clip in enumerate(part):
            padded[row, :len(clip)] = torch.from_numpy(clip)
        out.append(evaluator.encode_motion(padded, sizes).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, evaluator.latent_dim), dtype=np.float32)


def _text_encoder(evaluator: MotionTextEvaluator, text_encoder: Any) -> Any:
    from .text import get_encoder

    if text_encoder is None:
        text_encoder = evaluator.text_encoder
    encoder = get_encoder(text_encoder) if isinstance(text_encoder, str) else text_encoder
    if encoder.name != evaluator.text_encoder:
        raise ValueError(f"the evaluator reads {evaluator.text_encoder!r} caption embeddings, not {encoder.name!r}")
    return encoder


@torch.no_grad()
def embed_texts(evaluator: MotionTextEvaluator, captions: Sequence[str], *, text_encoder: Any = None,
                cache: Any = None) -> np.ndarray:
    """Evaluator latents of captions.

    Args:
        captions: the texts.
        text_encoder: a :class:`~polydiff_motion.text.TextEncoder` or its name; it must be the
            one the evaluator was trained with (``None``: that one).
        cache: an :class:`~polydiff_motion.text.EmbeddingCache` to encode through.

    Shapes:
        returns (N, latent_dim).
    """
    encoder = _text_encoder(evaluator, text_encoder)
    captions = list(captions)
    vectors = cache.encode(encoder, captions) if cache is not None else encoder.encode(captions)
    return evaluator.encode_text(torch.from_numpy(np.asarray(vectors, dtype=np.float32))).cpu().numpy()


# --- the metric table ---------------------------------------------------------------------------
#: Columns of the table: (key, heading, format).
_COLUMNS = (("fid", "FID", "{:.3f}"), ("r_precision_top1", "R@1", "{:.3f}"), ("r_precision_top2", "R@2", "{:.3f}"),
            ("r_precision_top3", "R@3", "{:.3f}"), ("matching_score", "MM-Dist", "{:.3f}"),
            ("diversity", "Diversity", "{:.3f}"), ("multimodality", "MModality", "{:.3f}"),
            ("skate_ratio", "Skate", "{:.3f}"), ("penetration_mean", "Penetr.", "{:.4f}"),
            ("floating", "Float", "{:.4f}"))


def _multimodality(latents: np.ndarray, keys: Sequence[Any], pairs: int, seed: int) -> tuple[float | None, int]:
    """Guo et al.'s multimodality over the keys that have several motions (the same number
    ``K`` of each, the smallest count; ``min(pairs, K)`` pairs)."""
    from .metrics import multimodality

    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    groups = {c: rows for c, rows in groups.items() if len(rows) >= 2}
    if not groups:
        return None, 0
    k = min(len(rows) for rows in groups.values())
    feats = np.stack([latents[rows[:k]] for rows in groups.values()])
    return multimodality(feats, pairs=min(pairs, k), seed=seed), len(groups)


def evaluate_motions(
    evaluator: MotionTextEvaluator,
    motions: Any,
    lengths: Any,
    captions: Sequence[str],
    real_motions: Any,
    real_lengths: Any,
    *,
    text_encoder: Any = None,
    batch: int = 32,
    seed: int = 0,
    diversity_pairs: int = 300,
    multimodality_pairs: int = 10,
    groups: Sequence[Any] | None = None,
    multimodal: tuple[Any, Any, Sequence[Any]] | None = None,
    physics: bool = True,
    fps: float = 20.0,
    cache: Any = None,
) -> dict[str, Any]:
    """The text-to-motion metric table's row for some motions (Guo et al. 2022's protocol).

    With the evaluator's motion latents ``m`` of the motions, ``r`` of the real ones and text
    latents ``t`` of the captions:

    - ``fid``: Fréchet distance between Gaussian fits of ``m`` and ``r``;
    - ``r_precision_top1/2/3``: the pairs are shuffled (``seed``) and cut into batches of
      ``batch``; each text ranks its batch's motions by distance (true motion among 31 others);
      ``None`` with fewer than ``batch`` motions;
    - ``matching_score``: mean distance between ``t`` and ``m`` of the same pair;
    - ``diversity``: mean distance of ``min(diversity_pairs, N)`` random pairs of ``m``;
    - ``multimodality``: mean distance between motions generated for the same text, from
      ``multimodal`` (motions, lengths, group keys) when given, else from the motions that share
      a key of ``groups`` (by default their caption); ``None`` when no key has two motions;
    - physics (with ``physics``): ``skate_ratio``, ``skate_speed``, ``penetration_mean``,
      ``penetration_max``, ``floating`` of :func:`~polydiff_motion.metrics.physics_report` on
      the joints recovered by :func:`~polydiff_motion.features.features_to_positions`, averaged
      over motions (of two frames or more).

    The real test set's own row is ``evaluate_motions(e, real, real_lengths, real_captions,
    real, real_lengths)`` (FID 0).

    Args:
        evaluator: the motion-text evaluator.
        motions, lengths: the motions to rate, in HumanML3D's units.
        captions: the caption each motion was generated from.
        real_motions, real_lengths: the reference (test) motions.
        text_encoder: the evaluator's caption encoder or its name (``None``: by its name).
        batch: the R-precision batch (32 in the protocol).
        seed: of the shuffles and random pairs.
        diversity_pairs, multimodality_pairs: the protocol's 300 and 10.
        groups: per motion, the key of the request it answers (default: its caption; give
            distinct keys so that equal captions of different test clips do not count).
        multimodal: separate (motions, lengths, group keys) for multimodality.
        physics: add the physical-plausibility measures.
        fps: frame rate of the motions (for the skating speed).
        cache: an :class:`~polydiff_motion.text.EmbeddingCache` for the captions.

    Shapes:
        motions: (N, T, 263) or N arrays (T_i, 263); lengths: (N,); real likewise (M, ...).

    Returns:
        A dict of floats (``None`` for the metrics that could not be computed) and ``samples``,
        ``diversity_pairs`` and ``multimodality_texts`` counts.
    """
    from .features import features_to_positions
    from .metrics import diversity, frechet_distance, matching_score, physics_report, r_precision

    captions = list(captions)
    clips = _as_motion_list(motions, lengths, "motions")
    if len(captions) != len(clips):
        raise ValueError(f"{len(clips)} motions but {len(captions)} captions")
    if len(clips) < 2:
        raise ValueError("the metric table needs at least two motions")
    real = _as_motion_list(real_motions, real_lengths, "real_motions")
    if len(real) < 2:
        raise ValueError("the metric table needs at least two real motions")
    sizes = [len(c) for c in clips]
    gen = embed_motions(evaluator, clips, sizes)
    ref = embed_motions(evaluator, real, [len(c) for c in real])
    text = embed_texts(evaluator, captions, text_encoder=text_encoder, cache=cache)
    n = len(clips)
    row: dict[str, Any] = {"samples": n, "fid": frechet_distance(gen, ref)}
    order = np.random.default_rng(seed).permutation(n)
    if n >= batch:
        top = r_precision(text[order], gen[order], top_k=min(3, batch), batch=batch)
        top = list(top) + [None] * (3 - len(top))
        row.update({f"r_precision_top{k + 1}": None if v is None else float(v) for k, v in enumerate(top)})
    else:
        row.update({f"r_precision_top{k}": None for k in (1, 2, 3)})
    row["matching_score"] = matching_score(text, gen)
    pairs = min(diversity_pairs, n)
    row["diversity"], row["diversity_pairs"] = diversity(gen, pairs=pairs, seed=seed), pairs
    if multimodal is not None:
        mm_motions, mm_lengths, mm_captions = multimodal
        mm_clips = _as_motion_list(mm_motions, mm_lengths, "multimodal motions")
        mm_latents = embed_motions(evaluator, mm_clips, [len(c) for c in mm_clips])
        row["multimodality"], row["multimodality_texts"] = _multimodality(mm_latents, list(mm_captions),
                                                                          multimodality_pairs, seed)
    else:
        keys = captions if groups is None else list(groups)
        if len(keys) != n:
            raise ValueError(f"{n} motions but {len(keys)} group keys")
        row["multimodality"], row["multimodality_texts"] = _multimodality(gen, keys, multimodality_pairs, seed)
    if physics:
        reports = [physics_report(features_to_positions(c.astype(np.float64)), fps=fps) for c in clips if len(c) >= 2]
        for key in ("skate_ratio", "skate_speed", "penetration_mean", "penetration_max", "floating"):
            row[key] = float(np.mean([r[key] for r in reports])) if reports else None
    return row


def interval_r_precision(
    evaluator: MotionTextEvaluator,
    motion: Any,
    intervals: Sequence[tuple[float, float, str]],
    pool_texts: Sequence[str],
    *,
    text_encoder: Any = None,
    fps: float | None = None,
    cache: Any = None,
) -> dict[str, Any]:
    """Per-interval retrieval for a multi-track timeline: is each interval's crop nearest its own text?

    Each interval's frames are embedded (cut to ``evaluator.max_frames``) and the pool (the
    given texts plus every interval's own, without repeats) is ranked by distance to it; rank 0
    means its own text is the nearest.

    Args:
        motion: one motion in HumanML3D's units.
        intervals: ``(start, end, text)``; frames ``[start, end)``, or seconds when ``fps`` is
            given.
        pool_texts: the distractor texts.
        text_encoder, cache: as in :func:`embed_texts`.

    Shapes:
        motion: (T, 263).

    Returns:
        ``{"top1", "top2", "top3": fractions of intervals, "pool": pool size, "intervals":
        [{"start", "end", "text", "rank"} ...]}``.

    Raises:
        ValueError: an interval outside the motion or shorter than one frame.
    """
    motion = np.asarray(torch.as_tensor(motion).detach().cpu().float().numpy() if isinstance(motion, Tensor)
                        else motion, dtype=np.float32)
    if motion.ndim != 2 or motion.shape[1] != FEATURE_DIM:
        raise ValueError(f"the motion must be (T, {FEATURE_DIM}), got {motion.shape}")
    if not intervals:
        raise ValueError("no intervals to rate")
    crops, spans = [], []
    for start, end, text in intervals:
        a, b = (int(round(start * fps)), int(round(end * fps))) if fps else (int(start), int(end))
        b = min(b, len(motion))
        if not 0 <= a < b:
            raise ValueError(f"interval ({start}, {end}, {text!r}) holds no frame of a {len(motion)}-frame motion")
        crops.append(motion[a:b])
        spans.append((a, b, str(text)))
    pool = list(dict.fromkeys([*map(str, pool_texts), *(t for _, _, t in spans)]))
    latents = embed_motions(evaluator, crops, [len(c) for c in crops])
    texts = embed_texts(evaluator, pool, text_encoder=text_encoder, cache=cache)
    dist = np.linalg.norm(latents[:, None] - texts[None], axis=-1)
    own = np.array([pool.index(t) for _, _, t in spans])
    ranks = (dist < dist[np.arange(len(spans)), own][:, None]).sum(axis=1)
    return {**{f"top{k}": float((ranks < k).mean()) for k in (1, 2, 3)}, "pool": len(pool),
            "intervals": [{"start": a, "end": b, "text": t, "rank": int(r)} for (a, b, t), r in zip(spans, ranks)]}


def format_table(rows: dict[str, dict[str, Any]]) -> str:
    """The metric rows as a fixed-width text table, one line per row ("-": not computed)."""
    name_width = max([len("model"), *map(len, rows)])
    widths = [max(len(heading), 9) for _, heading, _ in _COLUMNS]
    lines = ["  ".join([f"{'model':<{name_width}}", *(f"{h:>{w}}" for (_, h, _), w in zip(_COLUMNS, widths))])]
    for name, row in rows.items():
        cells = []
        for (key, _, fmt), w in zip(_COLUMNS, widths):
            value = row.get(key)
            text = "-" if value is None else fmt.format(value)
            if text.startswith("-") and value is not None and float(text) == 0:
                text = text[1:]  # a rounding residue such as FID -1e-12 shows as 0
            cells.append(f"{text:>{w}}")
        lines.append("  ".join([f"{name:<{name_width}}", *cells]))
    return "\n".join(lines)


# --- evaluate -----------------------------------------------------------------------------------
def _test_items(records: Sequence[Any], max_frames: int, min_frames: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """One (caption, frames) pair per test clip, drawn as the protocol's test loader draws them:
    a random caption of the clip and a random crop of the frames it describes, at most
    ``max_frames`` long and a multiple of 4 (HumanML3D's unit)."""
    from .data import UNIT_LENGTH, crop_length
    from .formats import HUMANML3D_FPS

    items = []
    for index, record in enumerate(records):
        options = []
        for caption in record.captions:
            span = record.frames(caption, HUMANML3D_FPS)
            if span.stop - span.start >= max(min_frames, UNIT_LENGTH):
                options.append((caption.text, span.start, span.stop))
        if not options:
            continue
        rng = np.random.default_rng([seed, index])
        text, first, end = options[int(rng.integers(len(options)))]
        length = crop_length(end - first, max_frames)
        start = first + int(rng.integers(end - first - length + 1))
        items.append((text, np.asarray(record.features[start:start + length], dtype=np.float32)))
    return items


def _generate_all(model: Any, embeddings: np.ndarray, lengths: Sequence[int], *, batch: int, seed: int,
                  device: str, label: str, **options: Any) -> list[np.ndarray]:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    out: list[np.ndarray] = []
    for start in range(0, len(lengths), batch):
        text = torch.from_numpy(np.asarray(embeddings[start:start + batch], dtype=np.float32)).to(device)
        size = torch.tensor(list(lengths[start:start + batch]), device=device)
        motions = model.generate(text, size, generator=generator, **options).float().cpu().numpy()
        out.extend(m[:int(n)] for m, n in zip(motions, size.tolist()))
        print(f"\r{label}: {len(out)}/{len(lengths)}", end="" if len(out) < len(lengths) else "\n",
              file=sys.stderr, flush=True)
    return out


def evaluate_command(argv: Sequence[str]) -> int:
    """``polydiff motion evaluate --ckpt m.ckpt --data.root out/ [-o metrics.json]``."""
    parser = argparse.ArgumentParser(
        prog="polydiff motion evaluate",
        description="Rate a text-to-motion model (or the retrieval baseline) with Guo et al.'s metric table -- FID, "
                    "R-precision, matching score, diversity, multimodality -- in a motion-text evaluator's space, "
                    "plus foot skating, floor penetration and floating. One motion per test caption is generated at "
                    "the test clip's length; the real test set's own row is the reference.",
    )
    parser.add_argument("--ckpt", type=Path, help="a text-to-motion checkpoint (diffusion or regressor)")
    parser.add_argument("--data.root", dest="root", type=Path, required=True, help="the HumanML3D folder (test split)")
    parser.add_argument("--evaluator", type=Path, default=None, help="an evaluator file (default: the shipped one, "
                        "trained on the default demo corpus)")
    parser.add_argument("--samples", type=int, default=1, help="motions per test caption")
    parser.add_argument("--repeats", type=int, default=0,
                        help="motions per text for multimodality (0: none; the protocol uses 30)")
    parser.add_argument("--mm-texts", type=int, default=100, help="texts for multimodality (the protocol's 100)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    parser.add_argument("--sampler", default=None, help="sampler (default: the model's)")
    parser.add_argument("--physics", action="store_true",
                        help="also rate the model with the physics projection in its sampling loop (a second row)")
    parser.add_argument("--baseline", choices=("retrieval",), default=None,
                        help="also rate caption nearest-neighbour retrieval from the train split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32, help="motions generated per batch")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("-o", "--output", type=Path, default=None, help="write the rows as JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    opts = parser.parse_args(list(argv))
    if opts.ckpt is None and opts.baseline is None:
        parser.print_usage(sys.stderr)
        _fail("give --ckpt, --baseline retrieval, or both")
        return 2
    if opts.samples < 1 or opts.repeats < 0 or opts.repeats == 1 or opts.mm_texts < 1 or opts.batch_size < 1 \
            or (opts.steps is not None and opts.steps < 1):
        _fail("--samples, --mm-texts, --batch-size and --steps must be positive, --repeats 0 or at least 2")
        return 2
    if opts.output is not None and opts.output.exists() and not opts.overwrite:
        _fail(f"{opts.output} exists; pass --overwrite to replace it")
        return 1
    from polydiff.checkpoint import CheckpointError

    from .data import CACHE_NAME
    from .formats import MotionDataError, read_humanml3d
    from .text import EmbeddingCache, get_encoder

    device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    try:
        evaluator = load_evaluator(opts.evaluator, device)
    except CheckpointError as error:
        _fail(str(error))
        return 1
    models: dict[str, tuple[Any, str, dict[str, Any]]] = {}
    max_frames, min_frames = evaluator.max_frames, 40
    if opts.ckpt is not None:
        from polydiff_motion.commands import load_motion_model

        try:
            model = load_motion_model(opts.ckpt, device)
        except CheckpointError as error:
            _fail(f"{error} (evaluate rates text-to-motion checkpoints)")
            return 1
        info = model.require_info()
        max_frames = min(max_frames, int(info["max_frames"]))
        min_frames = int(info["min_frames"])
        sampling = {"steps": opts.steps, "guidance": opts.guidance, "sampler": opts.sampler}
        models[type(model).__name__] = (model, str(info["text_encoder"]), sampling)
        if opts.physics:
            models[f"{type(model).__name__} + physics"] = (model, str(info["text_encoder"]), {**sampling, "physics": True})
    cache = EmbeddingCache(opts.root / CACHE_NAME)
    try:
        records = read_humanml3d(opts.root, "test", min_frames=min_frames)
        for clip, reason in records.problems:
            print(f"polydiff motion: warning: skipped test clip {clip}: {reason}", file=sys.stderr)
        items = _test_items(records, max_frames, min_frames, opts.seed)
        if len(items) < 2:
            raise MotionDataError(f"{opts.root}: fewer than two usable test clips")
        if opts.baseline == "retrieval":
            from .baselines import RetrievalBaseline

            name = next(iter(models.values()))[1] if models else evaluator.text_encoder
            baseline = RetrievalBaseline.from_humanml3d(opts.root, "train", text_encoder=name, min_frames=min_frames)
            models["retrieval"] = (baseline, baseline.text_encoder, {})
    except (MotionDataError, ValueError, KeyError, OSError) as error:
        _fail(str(error))
        return 1
    captions = [text for text, _ in items]
    real = [frames for _, frames in items]
    lengths = [len(frames) for frames in real]
    try:
        rows = {"real (test)": evaluate_motions(evaluator, real, lengths, captions, real, lengths, seed=opts.seed,
                                                groups=range(len(items)), cache=cache)}
        for name, (model, encoder_name, sampling) in models.items():
            embeddings = cache.encode(get_encoder(encoder_name), captions)
            index = np.repeat(np.arange(len(items)), opts.samples)
            motions = _generate_all(model, embeddings[index], [lengths[i] for i in index], batch=opts.batch_size,
                                    seed=opts.seed, device=device, label=name, **sampling)
            multimodal = None
            if opts.repeats >= 2:
                chosen = np.random.default_rng(opts.seed).permutation(len(items))[:opts.mm_texts]
                mm_index = np.repeat(chosen, opts.repeats)
                mm = _generate_all(model, embeddings[mm_index], [lengths[i] for i in mm_index],
                                   batch=opts.batch_size, seed=opts.seed + 1, device=device,
                                   label=f"{name} (multimodality)", **sampling)
                multimodal = (mm, [len(m) for m in mm], mm_index)
            rows[name] = evaluate_motions(evaluator, motions, [len(m) for m in motions],
                                          [captions[i] for i in index], real, lengths, seed=opts.seed,
                                          groups=index, multimodal=multimodal, cache=cache)
    except (ValueError, KeyError, RuntimeError) as error:
        _fail(str(error))
        return 1
    print(format_table(rows))
    if opts.output is not None:
        result = {"rows": rows,
                  "settings": {"ckpt": None if opts.ckpt is None else str(opts.ckpt), "data_root": str(opts.root),
                               "evaluator": "shipped" if opts.evaluator is None else str(opts.evaluator),
                               "test_items": len(items), "samples": opts.samples, "repeats": opts.repeats,
                               "steps": opts.steps, "guidance": opts.guidance, "sampler": opts.sampler,
                               "baseline": opts.baseline, "physics": opts.physics, "seed": opts.seed,
                               "seconds": round(time.perf_counter() - started, 1)},
                  "evaluator_training": getattr(evaluator, "training_record", {})}
        try:
            if opts.output.exists() and not opts.overwrite:
                raise FileExistsError(f"{opts.output} exists; pass --overwrite to replace it")
            opts.output.parent.mkdir(parents=True, exist_ok=True)
            opts.output.write_text(json.dumps(result, indent=2) + "\n")
        except OSError as error:
            _fail(str(error))
            return 1
    return 0
