"""The text-to-motion baselines: caption retrieval and the deterministic regressor.

Retrieval is checked against the files on disk (a caption's own motion comes back, cut or
looped). The regressor is trained for three steps through the CLI with the bundled
``t2m-regressor`` config (a tiny network, the hashing caption encoder) on a 40-clip procedural
folder; ``evaluate`` then rates its checkpoint end to end with a tiny evaluator file.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from polydiff.cli import main
from polydiff_motion import procedural
from polydiff_motion.baselines import MotionRegressor, RetrievalBaseline
from polydiff_motion.commands import load_motion_model
from polydiff_motion.evaluation import MotionTextEvaluator
from polydiff_motion.formats import read_humanml3d, read_stats
from polydiff_motion.text import HashingEncoder

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.max_steps", "3",
         "--trainer.val_check_interval", "3", "--trainer.log_every_n_steps", "1"]
TINY = ["--data.init_args.text_encoder", "hashing", "--data.init_args.batch_size", "8",
        "--data.init_args.max_frames", "64", "--data.init_args.min_frames", "36",
        "--model.init_args.denoiser.init_args.dim", "16", "--model.init_args.denoiser.init_args.layers", "1",
        "--model.init_args.denoiser.init_args.heads", "2", "--model.init_args.denoiser.init_args.ff", "32",
        "--model.init_args.denoiser.init_args.max_frames", "64", "--model.init_args.denoiser.init_args.text_dim", "64",
        "--model.init_args.optimizer.init_args.lr", "3e-3"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("baselines") / "hml3d"
    procedural.write_humanml3d(folder, procedural.generate_corpus(40, seed=0))
    return folder


@pytest.fixture(scope="module")
def trained(root: Path, tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, CSV log) of ``t2m-regressor`` trained three steps on the tiny folder."""
    run = tmp_path_factory.mktemp("regressor")
    logger = json.dumps({"class_path": "pytorch_lightning.loggers.CSVLogger",
                         "init_args": {"save_dir": str(run / "logs"), "name": "tiny"}})
    status = main(["motion", "fit", "-c", "t2m-regressor", "--data.root", str(root), *TINY, *QUIET,
                   "--trainer.logger", logger, "--trainer.default_root_dir", str(run / "run")])
    assert status == 0
    checkpoints = sorted(run.rglob("*.ckpt"))
    logs = sorted(run.rglob("metrics.csv"))
    assert len(checkpoints) == 1 and len(logs) == 1, (checkpoints, logs)
    return checkpoints[0], logs[0]


# --- retrieval ----------------------------------------------------------------------------------
def test_retrieval_returns_the_training_motion_of_its_own_caption(root: Path):
    baseline = RetrievalBaseline.from_humanml3d(root, "train", text_encoder="hashing", min_frames=36)
    records = {r.id: r for r in read_humanml3d(root, "train", min_frames=36)}
    assert baseline.text_encoder == "hashing" and len(baseline) >= len(records)
    texts = list(dict.fromkeys(baseline.texts))
    queries = HashingEncoder().encode(texts)
    found = baseline.retrieve(queries)
    for text, index in zip(texts, found):
        assert baseline.texts[index] == text  # the nearest caption is the caption itself
    lengths = torch.full((len(texts),), 36)  # no caption covers fewer frames
    motions = baseline.generate(torch.from_numpy(queries), lengths)
    assert motions.shape == (len(texts), 36, 263) and motions.dtype == torch.float32
    for row, (text, index) in enumerate(zip(texts, found)):
        clip, first, end = baseline.entries[index]
        # The motion is the raw file's rows for the caption (whole-clip captions here).
        matches = [r for r in records.values() if text in [c.text for c in r.captions]]
        assert any(np.array_equal(motions[row].numpy(), r.features[first:first + 36]) for r in matches)


def test_retrieval_cuts_and_loops_to_the_requested_length():
    motion = np.arange(5 * 263, dtype=np.float32).reshape(5, 263)
    other = -np.ones((8, 263), dtype=np.float32)
    baseline = RetrievalBaseline([motion, other], np.array([[1.0, 0.0], [0.0, 1.0]]), [(0, 1, 4), (1, 0, 8)],
                                 ["a", "b"], text_encoder="hashing-2")
    out = baseline.generate(torch.tensor([[2.0, 0.1], [0.0, 3.0]]), torch.tensor([7, 2]))
    assert out.shape == (2, 7, 263)
    np.testing.assert_array_equal(out[0].numpy(), motion[[1, 2, 3, 1, 2, 3, 1]])  # rows 1..3 looped
    np.testing.assert_array_equal(out[1, :2].numpy(), other[:2])
    assert not out[1, 2:].any()  # zero past the length
    with pytest.raises(ValueError, match="hashing-2"):
        baseline.retrieve(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="outside its clip"):
        RetrievalBaseline([motion], np.ones((1, 2)), [(0, 2, 9)], ["a"], text_encoder="hashing-2")


# --- the regressor ------------------------------------------------------------------------------
def _losses(log: Path) -> list[float]:
    with log.open(newline="") as handle:
        return [float(row["train/loss"]) for row in csv.DictReader(handle) if row.get("train/loss")]


def test_the_regressor_trains_through_the_cli(trained):
    ckpt, log = trained
    losses = _losses(log)
    assert len(losses) == 3 and losses[-1] < losses[0]
    model = load_motion_model(ckpt)
    assert isinstance(model, MotionRegressor) and model.require_info()["text_encoder"] == "hashing"
    text = torch.from_numpy(HashingEncoder().encode(["a person walks forward", "a person jumps"]))
    a = model.generate(text, torch.tensor([40, 24]), generator=torch.Generator().manual_seed(0))
    b = model.generate(text, torch.tensor([40, 24]), generator=torch.Generator().manual_seed(1), steps=7,
                       guidance=3.0)
    assert a.shape == (2, 40, 263) and torch.equal(a, b)  # deterministic: seeds and sampler settings ignored
    assert not a[1, 24:].any()


def test_the_regressor_loss_is_the_mse_on_valid_frames(root: Path):
    from polydiff_motion.nets import MotionTransformer

    stats = read_stats(root)
    info = {"feature_dim": 263, "fps": 20, "max_frames": 64, "min_frames": 36, "text_dim": 64,
            "text_encoder": "hashing", "mean": stats.mean, "std": stats.std, "dataset": "tiny"}
    torch.manual_seed(0)
    model = MotionRegressor(MotionTransformer(dim=16, layers=1, heads=2, ff=32, text_dim=64, max_frames=64),
                            data_info=info).eval()
    x0 = torch.randn(2, 6, 263)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    batch = model.unpack_batch({"x0": x0, "mask": mask, "text": torch.randn(2, 64)})
    prediction = model.sample((2, 6, 263), cond=batch["cond"])
    expected = ((prediction - x0).square().sum(-1) * mask).sum() / (mask.sum() * 263)
    torch.testing.assert_close(model.compute_loss(batch), expected)


# --- evaluate, end to end -----------------------------------------------------------------------
def test_evaluate_runs_end_to_end_on_the_regressor(root: Path, trained, tmp_path: Path, capsys):
    ckpt, _ = trained
    stats = read_stats(root)
    torch.manual_seed(0)
    evaluator_path = tmp_path / "evaluator.pt"
    MotionTextEvaluator(text_dim=64, latent_dim=16, dim=16, layers=1, heads=2, ff=32, text_hidden=32,
                        text_encoder="hashing", mean=stats.mean, std=stats.std).save(evaluator_path)
    out = tmp_path / "metrics.json"
    args = ["motion", "evaluate", "--ckpt", str(ckpt), "--data.root", str(root), "--evaluator", str(evaluator_path),
            "--samples", "2", "--repeats", "2", "--baseline", "retrieval", "--device", "cpu", "-o", str(out)]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["model", "real", "MotionRegressor", "retrieval"]
    result = json.loads(out.read_text())
    rows = result["rows"]
    items = result["settings"]["test_items"]
    assert rows["MotionRegressor"]["samples"] == 2 * items and rows["retrieval"]["samples"] == 2 * items
    # One deterministic motion per text: both samples and both repeats coincide.
    assert rows["MotionRegressor"]["multimodality"] == pytest.approx(0.0, abs=1e-5)
    assert rows["retrieval"]["multimodality"] == pytest.approx(0.0, abs=1e-5)
    assert rows["real (test)"]["fid"] == pytest.approx(0.0, abs=1e-3) and rows["real (test)"]["multimodality"] is None
    assert rows["MotionRegressor"]["fid"] > rows["real (test)"]["fid"]
    assert main(args) == 1  # the output exists now
    assert "exists" in capsys.readouterr().err
