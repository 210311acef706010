"""The motion DataModule on a tiny procedural HumanML3D folder.

Every check compares against the files on disk: denormalised crops must be rows of the clip's
``new_joint_vecs`` file, captions must be the clip's, text embeddings the hashing encoder's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from polydiff_motion import procedural
from polydiff_motion.data import CACHE_NAME, EpochSampler, MotionDataModule, collate_motion, crop_length
from polydiff_motion.features import FEATURE_DIM
from polydiff_motion.text import HashingEncoder


@pytest.fixture(scope="module")
def corpus() -> list:
    return procedural.generate_corpus(12, seed=0)


@pytest.fixture
def root(tmp_path: Path, corpus) -> Path:
    folder = tmp_path / "tiny_hml3d"
    procedural.write_humanml3d(folder, corpus)
    return folder


def _module(root: Path, **kwargs) -> MotionDataModule:
    # Two clips of the corpus have 39 feature rows; min_frames=36 keeps them (and the warnings out).
    options = dict(text_encoder="hashing", max_frames=64, min_frames=36, batch_size=4, seed=0)
    return MotionDataModule(str(root), **{**options, **kwargs})


def _ids(root: Path, split: str) -> list[str]:
    return (root / f"{split}.txt").read_text().split()


def _raw(root: Path, clip: str) -> np.ndarray:
    return np.load(root / "new_joint_vecs" / f"{clip}.npy")


def _denormalize(root: Path, x0: torch.Tensor) -> np.ndarray:
    return x0.numpy() * np.load(root / "Std.npy") + np.load(root / "Mean.npy")


def _captions(root: Path, clip: str) -> list[str]:
    return [line.split("#")[0] for line in (root / "texts" / f"{clip}.txt").read_text().splitlines()]


def test_batch_keys_shapes_and_dtypes(root: Path):
    dm = _module(root)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"x0", "mask", "length", "text", "caption"}
    T = int(batch["length"].max())
    assert batch["x0"].shape == (4, T, FEATURE_DIM) and batch["x0"].dtype == torch.float32
    assert batch["mask"].shape == (4, T) and batch["mask"].dtype == torch.bool
    assert batch["length"].shape == (4,) and batch["length"].dtype == torch.int64
    assert batch["text"].shape == (4, 64) and batch["text"].dtype == torch.float32
    assert isinstance(batch["caption"], list) and len(batch["caption"]) == 4
    np.testing.assert_array_equal(batch["text"].numpy(), HashingEncoder().encode(batch["caption"]))


def test_mask_matches_lengths_padding_is_zero_and_crops_are_rows_of_the_file(root: Path):
    dm = _module(root, max_frames=64)
    dm.setup("fit")
    train = dm.datasets["train"]
    seen_lengths = set()
    for epoch in range(3):
        sampler = EpochSampler(len(train), seed=0)
        sampler.set_epoch(epoch)
        keys = list(sampler)
        for start in range(0, len(keys), 4):
            batch = collate_motion([train[k] for k in keys[start:start + 4]])
            lengths = batch["length"]
            expected = torch.arange(batch["x0"].shape[1])[None] < lengths[:, None]
            assert torch.equal(batch["mask"], expected)
            assert batch["x0"][~batch["mask"]].abs().max() == 0 if (~batch["mask"]).any() else True
            for row, (_, index) in enumerate(keys[start:start + 4]):
                n = int(lengths[row])
                seen_lengths.add(n)
                assert n % 4 == 0 and 0 < n <= 64
                clip = train.ids[index]
                assert batch["caption"][row] in _captions(root, clip)
                raw, crop = _raw(root, clip), _denormalize(root, batch["x0"][row, :n])
                # The crop is a window of the clip's rows: find where it starts.
                errors = [np.abs(raw[o:o + n] - crop).max() for o in range(len(raw) - n + 1)]
                assert min(errors) < 1e-4
    assert 64 in seen_lengths  # long clips are cut to max_frames


def test_normalisation_uses_mean_and_std(root: Path):
    clip = _ids(root, "train")[0]
    # Cut the clip to 80 rows, a multiple of 4, so that a crop is the whole clip.
    np.save(root / "new_joint_vecs" / f"{clip}.npy", _raw(root, clip)[:80])
    np.save(root / "new_joints" / f"{clip}.npy", np.load(root / "new_joints" / f"{clip}.npy")[:81])
    dm = _module(root, max_frames=196)
    dm.setup("fit")
    train = dm.datasets["train"]
    index = train.ids.index(clip)
    item = train[(5, index)]
    raw = _raw(root, clip)
    assert item["length"] == len(raw)
    np.testing.assert_allclose(_denormalize(root, item["x0"]), raw, atol=1e-4)
    expected = (raw - np.load(root / "Mean.npy")) / np.load(root / "Std.npy")
    np.testing.assert_allclose(item["x0"].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(item["x0"].numpy(), raw, atol=1e-2)


def test_crop_length_rounds_down_to_multiple_of_four():
    assert [crop_length(n, 196) for n in (40, 41, 43, 44, 199, 300)] == [40, 40, 40, 44, 196, 196]
    assert crop_length(70, 66) == 64


def test_broken_clip_is_skipped_with_a_warning_and_the_rest_load(root: Path):
    train_ids = _ids(root, "train")
    broken = train_ids[1]
    features = _raw(root, broken)
    features[5, 7] = np.nan
    np.save(root / "new_joint_vecs" / f"{broken}.npy", features)
    dm = _module(root)
    with pytest.warns(UserWarning, match=rf"skipped 1 clip\(s\) of the train split:\n  {broken}: .*NaN"):
        dm.setup("fit")
    assert [clip for clip, _ in dm.problems["train"]] == [broken]
    assert dm.datasets["train"].ids == [clip for clip in train_ids if clip != broken]
    assert dm.problems["val"] == []


def test_sub_interval_captions_use_their_frames(root: Path):
    clip = max(_ids(root, "train"), key=lambda c: len(_raw(root, c)))
    (root / "texts" / f"{clip}.txt").write_text("kicks with the left leg#kicks/VERB#1.0#3.0\n"
                                                "waves briefly#waves/VERB#0.0#1.0\n")
    dm = _module(root, max_frames=196, min_frames=36)
    dm.setup("fit")
    train = dm.datasets["train"]
    index = train.ids.index(clip)
    assert train.options[index] == [("kicks with the left leg", 20, 60)]  # the 1 s caption is too short
    for epoch in range(3):
        item = train[(epoch, index)]
        assert item["caption"] == "kicks with the left leg" and item["length"] == 40
        np.testing.assert_allclose(_denormalize(root, item["x0"]), _raw(root, clip)[20:60], atol=1e-4)


def test_items_are_seeded_per_epoch(root: Path):
    first, second = _module(root, seed=3), _module(root, seed=3)
    first.setup("fit"), second.setup("fit")
    a, b = next(iter(first.train_dataloader())), next(iter(second.train_dataloader()))
    assert torch.equal(a["x0"], b["x0"]) and a["caption"] == b["caption"]
    loader = first.train_dataloader()
    epochs = [[item for batch in loader for item in batch["caption"]] for _ in range(2)]
    assert epochs[0] != epochs[1]  # a new order (and new draws) each epoch
    val = [torch.cat([b["length"] for b in first.val_dataloader()]) for _ in range(2)]
    assert torch.equal(val[0], val[1])


def test_info(root: Path):
    dm = _module(root, max_frames=100, min_frames=40)
    info = dm.info()
    assert json.loads(json.dumps(info)) == info  # plain data
    assert {k: info[k] for k in ("feature_dim", "fps", "max_frames", "min_frames", "text_dim", "text_encoder",
                                 "dataset")} == {"feature_dim": 263, "fps": 20, "max_frames": 100, "min_frames": 40,
                                                 "text_dim": 64, "text_encoder": "hashing", "dataset": "tiny_hml3d"}
    np.testing.assert_allclose(info["mean"], np.load(root / "Mean.npy"), rtol=1e-6)
    np.testing.assert_allclose(info["std"], np.load(root / "Std.npy"), rtol=1e-6)


def test_captions_are_encoded_once_and_cached_beside_the_data(root: Path):
    dm = _module(root)
    dm.setup("fit")
    assert (root / CACHE_NAME).is_file()
    again = _module(root)
    calls = []
    again.encoder.encode = lambda texts: calls.append(texts) or HashingEncoder().encode(texts)
    again.setup("fit")
    assert calls == []
    assert np.array_equal(again.datasets["train"].embeddings[dm.datasets["train"].options[0][0][0]],
                          dm.datasets["train"].embeddings[dm.datasets["train"].options[0][0][0]])


def test_test_split_and_records(root: Path):
    dm = _module(root)
    dm.setup("test")
    assert set(dm.datasets) == {"test"}
    records = dm.test_records()
    assert [r.id for r in records] == _ids(root, "test")
    np.testing.assert_array_equal(records[0].features, _raw(root, records[0].id))  # not normalised
    batch = next(iter(dm.test_dataloader()))
    assert batch["x0"].shape[0] == min(4, len(records))


@pytest.mark.parametrize("kwargs, message", [
    (dict(text_encoder="clip"), "valid names"),
    (dict(min_frames=2), "min_frames"),
    (dict(max_frames=30, min_frames=40), "max_frames"),
    (dict(batch_size=0), "batch_size"),
])
def test_invalid_arguments(tmp_path: Path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        MotionDataModule(str(tmp_path), **kwargs)
