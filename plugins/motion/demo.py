"""The motion part of ``polydiff quickstart``: a short text-to-motion training on the procedural corpus.

Writes a small procedural corpus in HumanML3D's layout (no downloads; captions encoded with the
offline MiniLM model), trains a small MDM-style model for a few hundred steps, and generates: a
motion from text (BVH, npz and a stick-figure GIF), a two-track timeline (STMC), and the same
prompts with and without the physics projection, whose foot-skating, penetration and floating
figures go into the metric table. Minutes of CPU training give a model far from converged: the
point is the whole path, with honest figures.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["run_demo", "DEMO_TIMELINE"]

_DEMO_ARGS = [
    "--model.init_args.denoiser.init_args.dim", "64",
    "--model.init_args.denoiser.init_args.ff", "128",
    "--model.init_args.denoiser.init_args.layers", "2",
    "--model.init_args.ema_decay", "0.98",
    "--model.init_args.optimizer.init_args.lr", "1e-3",
    "--data.init_args.batch_size", "16",
    "--data.init_args.max_frames", "100",
]

#: The quickstart's timeline: walking throughout, a right-hand wave over it, then both arms up.
DEMO_TIMELINE = {
    "duration": 5.0,
    "intervals": [
        {"text": "a person walks forward", "start": 0.0, "end": 5.0, "body_parts": ["legs"]},
        {"text": "a person waves with the right hand", "start": 0.5, "end": 3.0, "body_parts": ["right_arm"]},
        {"text": "a person raises both arms", "start": 3.0, "end": 5.0, "body_parts": ["upper_body"]},
    ],
}

_PROMPTS = ["a person walks forward", "someone jumps in place", "a person waves with the left hand",
            "a man kicks with the right leg", "the figure turns left", "a person crouches down"]


def run_demo(out_dir: Path, *, progress: bool = True, max_steps: int = 250, seed: int = 0, clips: int = 200) -> dict[str, Any]:
    """Make data, train briefly, generate from text and a timeline, and compare the physics projection.

    Args:
        out_dir: everything is written here (``data/``, ``run/``, ``text.bvh`` / ``.npz`` / ``.gif``,
            ``timeline.json``, ``timeline.bvh`` / ``.gif``, ``metrics.json``).
        progress: show progress bars and the table.
        max_steps: training steps.
        seed: seed of the corpus, the training and the samples.
        clips: clips in the corpus.

    Returns:
        Physical-plausibility figures of the generated motions with and without the projection,
        the files written and the run's details.
    """
    import numpy as np
    import torch

    from polydiff.cli import fit_for_demo
    from polydiff_motion import commands
    from polydiff_motion.features import features_to_positions
    from polydiff_motion.metrics import physics_report
    from polydiff_motion.text import get_encoder

    started = time.perf_counter()
    out_dir = Path(out_dir)
    data = out_dir / "data"
    if not (data / "Mean.npy").exists():
        status = commands.make_demo_data([str(data), "--clips", str(clips), "--seed", str(seed), "--overwrite"])
        if status != 0:
            raise RuntimeError(f"make-demo-data failed (exit status {status})")
    ckpt = fit_for_demo("motion", "t2m", out_dir / "run", max_steps=max_steps, seed=seed, progress=progress,
                        args=["--data.root", str(data), *_DEMO_ARGS])
    files = {}
    status = commands.generate(["--ckpt", str(ckpt), "--text", _PROMPTS[0], "--seconds", "5", "--render",
                                "--seed", str(seed), "-o", str(out_dir / "text.bvh"), "--overwrite"])
    if status != 0:
        raise RuntimeError(f"generate failed (exit status {status})")
    files["text"] = ["text.bvh", "text.npz", "text.gif"]
    (out_dir / "timeline.json").write_text(json.dumps(DEMO_TIMELINE, indent=1) + "\n")
    status = commands.generate(["--ckpt", str(ckpt), "--timeline", str(out_dir / "timeline.json"), "--render",
                                "--seed", str(seed), "-o", str(out_dir / "timeline.bvh"), "--overwrite"])
    if status != 0:
        raise RuntimeError(f"generate --timeline failed (exit status {status})")
    files["timeline"] = ["timeline.json", "timeline.bvh", "timeline.npz", "timeline.gif"]

    model = commands.load_motion_model(ckpt)
    encoder = get_encoder(model.require_info()["text_encoder"])
    text = torch.from_numpy(encoder.encode(_PROMPTS))
    lengths = torch.full((len(_PROMPTS),), 80)
    rows = {}
    for label, physics in (("plain", False), ("projected", True)):
        motions = model.generate(text, lengths, generator=torch.Generator().manual_seed(seed), physics=physics)
        reports = [physics_report(features_to_positions(m.numpy())) for m in motions]
        rows[label] = {k: round(float(np.mean([r[k] for r in reports])), 4) for k in reports[0]}
    header = f"{'sampling':<10} " + " ".join(f"{k:>16}" for k in rows["plain"])
    table = "\n".join([header] + [f"{name:<10} " + " ".join(f"{v:>16.4f}" for v in row.values())
                                  for name, row in rows.items()])
    (out_dir / "table.txt").write_text(table + "\n")
    if progress:
        print(table)
    metrics: dict[str, Any] = {f"{k}_{label}": v for label, row in rows.items() for k, v in row.items()}
    metrics.update(files=files, clips=clips, train_steps=max_steps, seconds=round(time.perf_counter() - started, 1))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
