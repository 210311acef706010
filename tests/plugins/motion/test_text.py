"""Caption encoders and the embedding cache.

The hashing encoder is checked by hand (a one-word text lands in one bucket) and by similarity
(a paraphrase sharing words is closer than an unrelated sentence); the cache by counting the
texts it hands to the encoder. MiniLM itself loads only in the slow test.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from polydiff_motion.text import EmbeddingCache, HashingEncoder, MiniLMEncoder, TextEncoder, get_encoder


class CountingEncoder(HashingEncoder):
    """A hashing encoder that records every batch of texts it encodes."""

    def __init__(self, dim: int = 64):
        super().__init__(dim)
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        return super().encode(texts)


def test_hashing_one_word_is_one_bucket():
    vector = HashingEncoder(16).encode(["Walks"])[0]
    expected = np.zeros(16, dtype=np.float32)
    expected[zlib.crc32(b"walks") % 16] = 1.0
    np.testing.assert_array_equal(vector, expected)


def test_hashing_is_deterministic_unit_length_and_float32():
    encoder = HashingEncoder()
    texts = ["a person walks forward", "someone jumps twice", ""]
    first, second = encoder.encode(texts), HashingEncoder().encode(texts)
    assert first.shape == (3, 64) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(np.linalg.norm(first[:2], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(first[2], 0.0)  # no words, no direction
    assert encoder.encode([]).shape == (0, 64)


def test_hashing_paraphrase_is_closer_than_unrelated_sentence():
    encoder = HashingEncoder(256)
    anchor, paraphrase, unrelated = encoder.encode(["a person walks forward slowly",
                                                    "the person walks forward", "someone jumps up twice"])
    assert anchor @ paraphrase > 0.5
    assert anchor @ paraphrase > anchor @ unrelated + 0.3


def test_hashing_uses_bigrams():
    encoder = HashingEncoder(4096)
    a, b = encoder.encode(["left arm raises", "arm left raises"])  # same words, other order
    assert 0.4 < a @ b < 0.99


def test_get_encoder_names():
    assert isinstance(get_encoder("hashing"), HashingEncoder) and get_encoder("hashing").dim == 64
    assert get_encoder("hashing-32").dim == 32 and get_encoder("hashing-32").name == "hashing-32"
    minilm = get_encoder("minilm")  # constructing it loads nothing
    assert isinstance(minilm, MiniLMEncoder) and minilm.dim == 384 and minilm.name == "minilm"
    assert isinstance(minilm, TextEncoder) and isinstance(HashingEncoder(), TextEncoder)
    for name in ("hashing", "hashing-32", "minilm"):
        assert get_encoder(name).name == name  # the name rebuilds the encoder
    with pytest.raises(ValueError, match="valid names: minilm, hashing"):
        get_encoder("clip")
    with pytest.raises(ValueError, match="unknown text encoder"):
        get_encoder("hashing-0")


def test_cache_hit_avoids_re_encoding():
    encoder, cache = CountingEncoder(), EmbeddingCache()
    first = cache.encode(encoder, ["walks", "jumps", "walks"])
    assert encoder.calls == [["walks", "jumps"]]  # distinct texts, once each
    second = cache.encode(encoder, ["jumps", "walks", "kicks"])
    assert encoder.calls == [["walks", "jumps"], ["kicks"]]
    np.testing.assert_array_equal(first[[1, 0]], second[:2])
    np.testing.assert_array_equal(second, HashingEncoder().encode(["jumps", "walks", "kicks"]))
    cache.encode(encoder, ["kicks", "walks"])
    assert len(encoder.calls) == 2 and len(cache) == 3


def test_cache_keeps_encoders_apart():
    cache, small, large = EmbeddingCache(), CountingEncoder(8), CountingEncoder(16)
    assert cache.encode(small, ["walks"]).shape == (1, 8)
    assert cache.encode(large, ["walks"]).shape == (1, 16)
    assert len(small.calls) == len(large.calls) == 1


def test_npz_cache_round_trips(tmp_path: Path):
    path = tmp_path / "emb.npz"
    texts = ["a person walks", "someone sits down", "they wave the left hand"]
    first = CountingEncoder()
    expected = EmbeddingCache(path).encode(first, texts)
    assert path.is_file() and len(first.calls) == 1
    with np.load(path) as data:
        assert sorted(data.files) == ["hashing/texts", "hashing/vectors"]
    second = CountingEncoder()
    reloaded = EmbeddingCache(path)
    np.testing.assert_array_equal(reloaded.encode(second, texts[::-1]), expected[::-1])
    assert second.calls == []  # everything came from the file
    reloaded.encode(second, ["a new sentence"])
    assert second.calls == [["a new sentence"]] and len(EmbeddingCache(path)) == 4


def test_unreadable_cache_file_is_ignored_with_a_warning(tmp_path: Path):
    path = tmp_path / "emb.npz"
    path.write_bytes(b"not a zip")
    encoder = CountingEncoder()
    with pytest.warns(UserWarning, match="ignoring the text-embedding cache"):
        vectors = EmbeddingCache(path).encode(encoder, ["walks"])
    np.testing.assert_array_equal(vectors, HashingEncoder().encode(["walks"]))
    assert len(EmbeddingCache(path)) == 1  # rewritten


@pytest.mark.slow
def test_minilm_embeds_and_ranks_paraphrases():
    encoder = MiniLMEncoder(device="cpu")
    vectors = encoder.encode(["a person walks forward", "someone strolls ahead", "a man does a backflip"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    np.testing.assert_allclose(encoder.encode(["a person walks forward"])[0], vectors[0], atol=1e-5)
