"""The quickstart demo end to end on a few molecules per RDKit set."""

from __future__ import annotations

import json


def test_quickstart_demo_trains_generates_and_scores(tmp_path):
    from polydiff_molecules.demo import run_demo

    metrics = run_demo(tmp_path, progress=False, max_steps=2, per_source=40, samples=6, sample_steps=3)
    for name in ("generated", "conditional", "baseline"):
        assert (tmp_path / f"{name}.csv").exists()
        assert 0.0 <= metrics[f"validity_{name}"] <= 1.0
    assert metrics["train_steps"] == 2
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    table = json.loads((tmp_path / "metrics-table.json").read_text())
    assert len(table) == 3 and all(row["n_generated"] == 6 for row in table.values())
    # a second run reuses the data and the trained checkpoint
    ckpts = sorted((tmp_path / "run").rglob("*.ckpt"))
    run_demo(tmp_path, progress=False, max_steps=2, per_source=40, samples=6, sample_steps=3)
    assert sorted((tmp_path / "run").rglob("*.ckpt")) == ckpts
