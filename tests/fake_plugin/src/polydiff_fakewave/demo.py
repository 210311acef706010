"""The fake plugin's quickstart demo: no training, just a file and a metric."""

from __future__ import annotations

import json
from pathlib import Path


def run_demo(out_dir: Path, progress: bool = True, max_steps: int | None = None) -> dict:
    """Write ``demo.txt`` and ``metrics.json`` under ``out_dir``; fail if ``FAKEWAVE_FAIL`` is set."""
    import os

    if os.environ.get("FAKEWAVE_FAIL"):
        raise RuntimeError("fakewave demo asked to fail")
    out_dir = Path(out_dir)
    (out_dir / "demo.txt").write_text("fakewave\n")
    metrics = {"score": 1.0, "max_steps": max_steps}
    (out_dir / "metrics.json").write_text(json.dumps(metrics))
    return metrics
