"""The text-to-motion denoiser: MDM's transformer encoder (Tevet et al. 2023).

The network sees one token for the diffusion time, one for the text and one per frame of the
263-d HumanML3D features (see :mod:`polydiff_motion.features`), attends over all of them with the
padded frames masked out, and predicts the clean motion (``x0``), as MDM does so that geometric
losses can be taken on its output.

The condition is the mapping ``{"text": (B, text_dim), "mask": (B, T) bool}``, optionally with
``"null": (B,) bool`` marking the rows whose text is replaced by the learned null embedding.
:meth:`MotionTransformer.drop_cond` sets ``"null"`` (classifier-free guidance) and never touches
``"mask"``: the unconditional model still generates the requested number of frames.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from polydiff.denoiser import Denoiser

__all__ = ["MotionTransformer", "PositionEncoding", "sinusoidal_embedding"]

PositionEncoding = Literal["learned", "sinusoidal"]


def sinusoidal_embedding(positions: Tensor, dim: int) -> Tensor:
    """Transformer sinusoids (Vaswani et al. 2017) of real-valued positions.

    Shapes:
        positions: (N,) -> (N, dim), float32.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.float().reshape(-1, 1) * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class MotionTransformer(Denoiser):
    """MDM's denoiser: a transformer encoder over [time token, text token, frame tokens].

    Frames are embedded by a linear layer; the time by sinusoids of ``1000 t`` (the frequencies
    of a 1000-step model) and a two-layer MLP; the text embedding by a linear layer, or replaced
    by a learned null token where ``cond["null"]`` is True. A position encoding over the whole
    sequence (MDM adds it to the condition tokens too) lets attention tell the tokens apart.
    Pre-norm layers with GELU are used (more stable than MDM's post-norm at small batch sizes).
    Padded frames are excluded as keys, so they cannot change the valid frames' outputs; their
    own outputs are meaningless.

    Args:
        dim: token width.
        layers: encoder layers.
        heads: attention heads (must divide ``dim``).
        ff: width of the feed-forward blocks.
        dropout: dropout of the embeddings, attention and feed-forward blocks.
        feature_dim: features per frame (263 for HumanML3D).
        text_dim: size of the sentence embedding (384 for MiniLM).
        max_frames: the longest motion the position encoding covers.
        position_encoding: ``learned`` or ``sinusoidal``.

    Shapes:
        x: (B, T, feature_dim) with T <= max_frames; t: (B,) or a scalar; returns
        (B, T, feature_dim).
    """

    def __init__(
        self,
        dim: int = 256,
        layers: int = 4,
        heads: int = 4,
        ff: int = 1024,
        dropout: float = 0.1,
        feature_dim: int = 263,
        text_dim: int = 384,
        max_frames: int = 256,
        position_encoding: PositionEncoding = "sinusoidal",
    ):
        super().__init__(prediction="x0")
        if dim < 2 or dim % 2 or dim % heads:
            raise ValueError(f"dim must be even and divisible by heads; got dim={dim}, heads={heads}")
        if min(layers, ff, feature_dim, text_dim, max_frames) < 1:
            raise ValueError("layers, ff, feature_dim, text_dim and max_frames must be positive")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        if position_encoding not in ("learned", "sinusoidal"):
            raise ValueError(f"unknown position_encoding {position_encoding!r}; valid: learned, sinusoidal")
        self.dim, self.feature_dim, self.text_dim = int(dim), int(feature_dim), int(text_dim)
        self.max_frames, self.position_encoding = int(max_frames), position_encoding
        self.input_proj = nn.Linear(self.feature_dim, self.dim)
        self.time_mlp = nn.Sequential(nn.Linear(self.dim, self.dim), nn.SiLU(), nn.Linear(self.dim, self.dim))
        self.text_proj = nn.Linear(self.text_dim, self.dim)
        self.null_text = nn.Parameter(torch.randn(self.dim) * 0.02)
        positions = self.max_frames + 2
        if position_encoding == "learned":
            self.position = nn.Parameter(torch.randn(positions, self.dim) * 0.02)
        else:
            self.register_buffer("position", sinusoidal_embedding(torch.arange(positions), self.dim), persistent=False)
        self.embed_dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(self.dim, heads, ff, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        # Nested tensors would drop padded positions in eval mode only, so training and sampling
        # would run different code paths.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(self.dim)
        self.output = nn.Linear(self.dim, self.feature_dim)

    def _condition(self, cond: Any, b: int, n: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        if cond is None:
            cond = {}
        if not isinstance(cond, Mapping):
            raise TypeError("the motion condition is a mapping with 'text' (B, D) and 'mask' (B, T)")
        text = cond.get("text")
        null = cond.get("null")
        if text is None:
            text = torch.zeros(b, self.text_dim, device=device)
            null = torch.ones(b, dtype=torch.bool, device=device)
        if text.shape != (b, self.text_dim):
            raise ValueError(f"text embeddings of shape {tuple(text.shape)} do not fit (B, text_dim) = ({b}, {self.text_dim})")
        null = torch.zeros(b, dtype=torch.bool, device=device) if null is None else null.to(device=device, dtype=torch.bool)
        mask = cond.get("mask")
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.bool, device=device)
        if mask.shape != (b, n):
            raise ValueError(f"the frame mask has shape {tuple(mask.shape)}, the motion ({b}, {n})")
        return text.to(device), null.reshape(b), mask.to(device=device, dtype=torch.bool)

    def forward(self, x: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        b, n, f = x.shape
        if f != self.feature_dim or n > self.max_frames:
            raise ValueError(f"motion of shape {tuple(x.shape)} does not fit (B, T <= {self.max_frames}, {self.feature_dim})")
        text, null, mask = self._condition(cond, b, n, x.device)
        t = torch.as_tensor(t, device=x.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(b)
        if t.numel() != b:
            raise ValueError(f"one time per motion is needed: got {t.numel()} for a batch of {b}")
        dtype = self.input_proj.weight.dtype
        time_token = self.time_mlp(sinusoidal_embedding(1000.0 * t, self.dim).to(dtype))
        text_token = torch.where(null[:, None], self.null_text.to(dtype), self.text_proj(text.to(dtype)))
        h = torch.cat([time_token[:, None], text_token[:, None], self.input_proj(x.to(dtype))], dim=1)
        h = self.embed_dropout(h + self.position[: n + 2].to(dtype))
        padding = torch.cat([torch.zeros(b, 2, dtype=torch.bool, device=x.device), ~mask], dim=1)
        h = self.encoder(h, src_key_padding_mask=padding)
        return self.output(self.norm(h[:, 2:])).to(x.dtype)

    def drop_cond(self, cond: Any, mask: Tensor) -> Any:
        """The condition with the text of the rows where ``mask`` is True replaced by the null
        token (``"null"`` set, text zeroed); the frame mask is kept. Never modifies ``cond``."""
        if cond is None:
            return None
        if not isinstance(cond, Mapping):
            raise TypeError("the motion condition is a mapping with 'text' and 'mask'")
        out = dict(cond)
        text = cond.get("text")
        mask = mask.to(torch.bool)
        if text is not None:
            mask = mask.to(text.device)
            out["text"] = torch.where(mask[:, None], torch.zeros_like(text), text)
        null = cond.get("null")
        out["null"] = mask if null is None else (null.to(device=mask.device, dtype=torch.bool) | mask)
        return out
