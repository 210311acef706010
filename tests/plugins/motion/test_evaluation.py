"""The motion-text evaluator, the metric table and the ``evaluate`` command's refusals.

The loss is checked on hand-made latents whose InfoNCE is worked out in closed form; the
evaluator runs untrained (random weights, a 16-d latent space so that 40 motions give full-rank
covariances) with the hashing caption encoder on a tiny procedural HumanML3D folder. The
end-to-end ``evaluate`` run on a trained checkpoint is in ``test_baselines.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from polydiff.checkpoint import CheckpointError
from polydiff.cli import main
from polydiff_motion import procedural
from polydiff_motion.evaluation import (
    MotionTextEvaluator,
    embed_motions,
    evaluate_motions,
    format_table,
    info_nce,
    interval_r_precision,
    load_evaluator,
    negative_filter,
)
from polydiff_motion.formats import read_humanml3d, read_stats

TINY = dict(text_dim=64, latent_dim=16, dim=16, layers=1, heads=2, ff=32, text_hidden=32, text_encoder="hashing")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("evaluation") / "hml3d"
    procedural.write_humanml3d(folder, procedural.generate_corpus(40, seed=0))
    return folder


@pytest.fixture(scope="module")
def evaluator(root: Path) -> MotionTextEvaluator:
    torch.manual_seed(0)
    stats = read_stats(root)
    return MotionTextEvaluator(**TINY, mean=stats.mean, std=stats.std).eval()


@pytest.fixture(scope="module")
def real(root: Path) -> tuple[list[np.ndarray], list[str]]:
    records = read_humanml3d(root, "train", min_frames=36)
    return [r.features for r in records], [r.captions[0].text for r in records]


# --- the loss -----------------------------------------------------------------------------------
def test_info_nce_matches_the_closed_form():
    e = torch.eye(2)
    # Matched unit vectors: logits [[10, 0], [0, 10]], each row and column log(1 + e^-10).
    assert info_nce(e, e, 0.1).item() == pytest.approx(math.log1p(math.exp(-10)), abs=1e-6)
    # Both texts on motion 0's direction: rows are ties (log 2 each); columns are
    # log(1 + e^-10) for text 0 and 10 + log(1 + e^-10) for text 1.
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    expected = 0.5 * (math.log(2) + 0.5 * (10 + 2 * math.log1p(math.exp(-10))))
    assert info_nce(e, text, 0.1).item() == pytest.approx(expected, abs=1e-5)


def test_info_nce_rejects_bad_input():
    with pytest.raises(ValueError, match="matched"):
        info_nce(torch.zeros(2, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="temperature"):
        info_nce(torch.eye(2), torch.eye(2), 0.0)


def test_negative_filter_drops_near_duplicate_captions_only():
    captions = torch.tensor([[1.0, 0.0, 0.0], [0.99, 0.1, 0.0], [0.0, 0.0, 1.0]])  # cos(0, 1) = 0.995
    drop = negative_filter(captions, 0.95)
    np.testing.assert_array_equal(drop.numpy(), [[False, True, False], [True, False, False], [False, False, False]])
    assert not negative_filter(captions, 0.999).any()
    assert not negative_filter(torch.ones(3, 3), 0.95).diagonal().any()  # identical captions keep their positive


def test_filtered_negatives_stop_punishing_a_duplicate_caption():
    # Two pairs with the same caption and the same latents: unfiltered, each row is a tie
    # between its positive and the duplicate (log 2); filtered, the duplicate is no negative.
    latents = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    captions = torch.tensor([[0.6, 0.8], [0.6, 0.8]])
    assert info_nce(latents, latents, 0.1).item() == pytest.approx(math.log(2), rel=1e-6)
    assert info_nce(latents, latents, 0.1, caption_embeddings=captions).item() == pytest.approx(0.0, abs=1e-6)
    # Against a hand-masked softmax with a third, unrelated pair.
    m = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2], [0.9, 0.5], [-0.3, 1.0]]), dim=-1)
    t = torch.nn.functional.normalize(torch.tensor([[0.8, 0.1], [1.0, 0.4], [0.0, 1.0]]), dim=-1)
    caps = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]])
    logits = m @ t.T / 0.1
    logits[0, 1] = logits[1, 0] = float("-inf")
    target = torch.arange(3)
    expected = 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                      + torch.nn.functional.cross_entropy(logits.T, target))
    assert info_nce(m, t, 0.1, caption_embeddings=caps).item() == pytest.approx(expected.item(), rel=1e-6)


# --- the evaluator ------------------------------------------------------------------------------
def test_latents_are_unit_vectors_and_ignore_padding(evaluator, real):
    motions, _ = real
    a = embed_motions(evaluator, motions[:3], [40, 41, 44])
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    padded = torch.zeros(1, 80, 263)
    padded[0, :41] = torch.from_numpy(motions[1][:41])
    padded[0, 41:] = 1e3  # garbage past the length must not matter
    np.testing.assert_allclose(evaluator.encode_motion(padded, torch.tensor([41])).detach().numpy()[0], a[1],
                               rtol=1e-4, atol=1e-5)


def test_save_load_round_trip(evaluator, real, tmp_path: Path):
    path = tmp_path / "evaluator.pt"
    evaluator.save(path, training={"steps": 3, "val_r_precision_top1": 0.5})
    raw = torch.load(path, weights_only=True)  # plain tensors and data only
    assert raw["config"]["text_encoder"] == "hashing" and raw["training"]["steps"] == 3
    loaded = MotionTextEvaluator.load(path)
    assert loaded.config() == evaluator.config() and loaded.training_record["val_r_precision_top1"] == 0.5
    for key, value in evaluator.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    motions, captions = real
    np.testing.assert_array_equal(embed_motions(loaded, motions[:4], [40] * 4),
                                  embed_motions(evaluator, motions[:4], [40] * 4))
    with pytest.raises(FileExistsError, match="--overwrite"):
        evaluator.save(path)
    evaluator.save(path, overwrite=True)


def test_files_that_are_not_evaluators_are_refused(tmp_path: Path):
    with pytest.raises(CheckpointError, match="no such evaluator file"):
        MotionTextEvaluator.load(tmp_path / "missing.pt")
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a motion-text evaluator"):
        MotionTextEvaluator.load(text)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="other.pt is a torch file, not a motion-text evaluator"):
        load_evaluator(other)
    ckpt = tmp_path / "model.ckpt"
    torch.save({"polydiff": {"format": 1}, "state_dict": {}}, ckpt)
    with pytest.raises(CheckpointError, match="polydiff model checkpoint, not a motion-text evaluator"):
        load_evaluator(ckpt)
    broken = tmp_path / "broken.pt"
    torch.save({"polydiff_motion_evaluator": 1, "config": {"dim": 16, "heads": 2}, "state_dict": {}}, broken)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_evaluator(broken)


def test_the_shipped_evaluator_loads_with_its_record():
    evaluator = load_evaluator()
    assert evaluator.text_encoder == "minilm" and evaluator.text_dim == 384 and evaluator.latent_dim == 256
    record = evaluator.training_record
    assert record["dataset"] and record["steps"] > 0
    assert record["val_r_precision_top1"] > 0.2  # chance is 1/32
    assert float(evaluator.std.min()) > 0 and float(evaluator.mean.abs().sum()) > 0  # its own statistics


# --- the metric table ---------------------------------------------------------------------------
def test_real_motions_against_themselves(evaluator, real):
    motions, captions = real
    lengths = [min(len(m), 120) for m in motions]
    row = evaluate_motions(evaluator, motions, lengths, captions, motions, lengths, text_encoder="hashing", seed=3)
    assert row["samples"] == len(motions) >= 32
    assert abs(row["fid"]) < 1e-3
    top = [row[f"r_precision_top{k}"] for k in (1, 2, 3)]
    assert 0.0 <= top[0] <= top[1] <= top[2] <= 1.0
    assert row["matching_score"] > 0 and row["diversity"] > 0 and row["diversity_pairs"] == len(motions)
    assert row["skate_ratio"] >= 0 and row["penetration_mean"] >= 0 and row["floating"] >= 0
    again = evaluate_motions(evaluator, motions, lengths, captions, motions, lengths, text_encoder="hashing", seed=3)
    assert again == row
    # Another set is farther than the set itself.
    shifted = [m + np.float32(2.0) * np.asarray(evaluator.std) for m in motions]
    assert evaluate_motions(evaluator, shifted, lengths, captions, motions, lengths, physics=False)["fid"] > 1e-2


def test_multimodality_from_repeated_captions(evaluator, real):
    motions, _ = real
    # Two texts, three motions each, all identical within a text: multimodality 0.
    same = [motions[0]] * 3 + [motions[1]] * 3
    captions = ["a person walks"] * 3 + ["a person jumps"] * 3
    row = evaluate_motions(evaluator, same, [40] * 6, captions, motions, [40] * len(motions), physics=False)
    assert row["multimodality"] == pytest.approx(0.0, abs=1e-6) and row["multimodality_texts"] == 2
    assert row["r_precision_top1"] is None  # fewer than 32 motions
    # Keyed by request instead of caption: each request has one motion, so no multimodality.
    keyed = evaluate_motions(evaluator, same, [40] * 6, captions, motions, [40] * len(motions), physics=False,
                             groups=range(6))
    assert keyed["multimodality"] is None and keyed["fid"] == row["fid"]
    unique = evaluate_motions(evaluator, motions[:4], [40] * 4, ["a", "b", "c", "d"], motions, [40] * len(motions),
                              physics=False)
    assert unique["multimodality"] is None
    table = format_table({"real": row, "other": unique})
    assert table.splitlines()[0].split()[:3] == ["model", "FID", "R@1"] and "-" in table.splitlines()[1].split()


def test_evaluate_motions_rejects_bad_input(evaluator, real):
    motions, captions = real
    with pytest.raises(ValueError, match="captions"):
        evaluate_motions(evaluator, motions[:3], [40] * 3, captions[:2], motions, [40] * len(motions))
    with pytest.raises(ValueError, match=r"motions\[0\]"):
        evaluate_motions(evaluator, motions[:3], [10_000] * 3, captions[:3], motions, [40] * len(motions))
    with pytest.raises(ValueError, match="reads 'hashing'"):
        evaluate_motions(evaluator, motions[:3], [40] * 3, captions[:3], motions, [40] * len(motions),
                         text_encoder="hashing-32")


def test_interval_r_precision(evaluator, real):
    motions, captions = real
    motion = np.concatenate([motions[0][:60], motions[1][:60]])
    result = interval_r_precision(evaluator, motion, [(0, 60, "walk"), (60, 120, "jump")], [], text_encoder="hashing")
    assert result["pool"] == 2 and [i["rank"] for i in result["intervals"]] in ([0, 0], [0, 1], [1, 0], [1, 1])
    assert result["top2"] == 1.0 and result["top1"] == np.mean([i["rank"] == 0 for i in result["intervals"]])
    alone = interval_r_precision(evaluator, motion, [(0.0, 3.0, "walk")], [], fps=20.0)
    assert alone["top1"] == 1.0 and alone["intervals"][0]["end"] == 60
    with pytest.raises(ValueError, match="holds no frame"):
        interval_r_precision(evaluator, motion, [(130, 140, "walk")], [])


# --- the evaluate command's refusals ------------------------------------------------------------
def test_evaluate_command_refuses_bad_requests(root: Path, evaluator, tmp_path: Path, capsys):
    assert main(["motion", "evaluate", "--data.root", str(root)]) == 2
    assert "give --ckpt" in capsys.readouterr().err
    assert main(["motion", "evaluate", "--baseline", "retrieval", "--data.root", str(root), "--samples", "0"]) == 2
    existing = tmp_path / "metrics.json"
    existing.write_text("{}")
    assert main(["motion", "evaluate", "--baseline", "retrieval", "--data.root", str(root), "-o", str(existing)]) == 1
    assert "exists" in capsys.readouterr().err and existing.read_text() == "{}"
    assert main(["motion", "evaluate", "--baseline", "retrieval", "--data.root", str(root), "--evaluator",
                 str(tmp_path / "none.pt")]) == 1
    assert "no such evaluator file" in capsys.readouterr().err
    path = tmp_path / "tiny.pt"
    evaluator.save(path)
    other = tmp_path / "other.ckpt"
    torch.save({"polydiff": {"format": 1, "plugin": "policy"}, "state_dict": {}}, other)
    assert main(["motion", "evaluate", "--ckpt", str(other), "--data.root", str(root), "--evaluator", str(path)]) == 1
    assert "plugin 'policy', not 'motion'" in capsys.readouterr().err
    lifting = tmp_path / "lifting.ckpt"
    torch.save({"polydiff": {"format": 1, "plugin": "motion"}, "lifting": {"frames": 27}, "state_dict": {}}, lifting)
    assert main(["motion", "evaluate", "--ckpt", str(lifting), "--data.root", str(root), "--evaluator", str(path)]) == 1
    assert "lifting.ckpt is a 2D-to-3D pose-lifting checkpoint" in capsys.readouterr().err
    assert main(["motion", "evaluate", "--baseline", "retrieval", "--data.root", str(tmp_path / "nowhere"),
                 "--evaluator", str(path)]) == 1
    assert "no such folder" in capsys.readouterr().err


def test_evaluate_command_rates_the_retrieval_baseline(root: Path, evaluator, tmp_path: Path, capsys):
    import json

    path = tmp_path / "tiny.pt"
    evaluator.save(path)
    out = tmp_path / "metrics.json"
    assert main(["motion", "evaluate", "--baseline", "retrieval", "--data.root", str(root), "--evaluator", str(path),
                 "-o", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[1].startswith("real (test)") and printed.splitlines()[2].startswith("retrieval")
    result = json.loads(out.read_text())
    assert set(result["rows"]) == {"real (test)", "retrieval"}
    assert result["rows"]["real (test)"]["fid"] == pytest.approx(0.0, abs=1e-3)
    assert result["settings"]["test_items"] == result["rows"]["retrieval"]["samples"] >= 2


# --- train-evaluator ----------------------------------------------------------------------------
def test_train_evaluator_command_writes_a_loadable_evaluator(root: Path, tmp_path: Path, capsys):
    import json

    out = tmp_path / "evaluator.pt"
    args = ["motion", "train-evaluator", "--data.root", str(root), "-o", str(out), "--steps", "2", "--batch", "8",
            "--text-encoder", "hashing", "--dim", "16", "--layers", "1", "--latent-dim", "16", "--min-frames", "36"]
    assert main(args) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["steps"] == 2 and record["text_encoder"] == "hashing" and 0 <= record["val_t2m_top1_all"] <= 1
    loaded = load_evaluator(out)
    assert loaded.text_encoder == "hashing" and loaded.training_record == record
    stats = read_stats(root)
    np.testing.assert_allclose(loaded.mean.numpy(), stats.mean, rtol=1e-6)  # its own statistics
    np.testing.assert_allclose(loaded.std.numpy(), stats.std, rtol=1e-6)
    before = out.read_bytes()
    assert main(args) == 1 and "exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main([*args[:-2], "--steps", "0"]) == 2
    assert main(["motion", "train-evaluator", "--data.root", str(tmp_path / "nowhere"), "-o",
                 str(tmp_path / "e.pt")]) == 1
    assert "no such folder" in capsys.readouterr().err and not (tmp_path / "e.pt").exists()
