"""The 3D part of ``polydiff quickstart``: shapes, a completed scan and a textured mesh, with renders.

Everything is built offline: a small procedural corpus (chairs and mugs, textures), a small
point-voxel model trained for a few hundred steps on 512-point clouds, a small texture denoiser,
then ``generate``, ``complete`` and ``texture`` as a user would run them. The quickstart's models
are far from converged; ``benchmarks/shapes3d.py`` measures trained ones.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["run_demo"]

_POINT_ARGS = [
    "--model.init_args.denoiser.init_args.channels", "[16, 32, 32, 16]",
    "--model.init_args.denoiser.init_args.resolutions", "[8, 4, 4, 8]",
    "--model.init_args.ema_decay", "0.98",
    "--model.init_args.optimizer.init_args.lr", "2e-3",
    "--data.init_args.points", "512",
    "--data.init_args.cache_points", "2048",
    "--data.init_args.batch_size", "8",
]
_TEXTURE_ARGS = [
    "--model.init_args.denoiser.init_args.channels", "16",
    "--model.init_args.ema_decay", "0.98",
    "--model.init_args.ema_start", "0",
    "--model.init_args.optimizer.init_args.lr", "2e-3",
    "--data.init_args.size", "16",
    "--data.init_args.batch_size", "16",
]


def run_demo(out_dir: Path, *, progress: bool = True, max_steps: int = 200, seed: int = 0) -> dict[str, Any]:
    """Make data, train both models briefly, and generate, complete and texture.

    Args:
        out_dir: everything is written here (``data/``, ``points-run/``, ``texture-run/``, ``gen/``,
            ``completed.ply`` with its mesh and render, ``textured.glb`` with its texture and views,
            ``metrics.json``).
        progress: show progress bars and the summary.
        max_steps: training steps of each model.
        seed: seed of the corpus, the trainings and the samples.

    Returns:
        The seam disagreement of synchronized and independent texturing, the files written and the
        run's details.
    """
    from polydiff.cli import fit_for_demo

    from . import commands

    started = time.perf_counter()
    out_dir = Path(out_dir)
    data = out_dir / "data"
    if not (data / "uv_vase.obj").exists():
        status = commands.make_demo_data([str(data), "--categories", "chair", "mug", "--per-category", "40",
                                          "--textures-per-label", "24", "--texture-size", "32", "--scans", "2",
                                          "--cgal-scans", "1", "--seed", str(seed), "--overwrite"])
        if status != 0:
            raise RuntimeError(f"make-demo-data failed (exit status {status})")
    points_ckpt = fit_for_demo("3d", "points", out_dir / "points-run", max_steps=max_steps, seed=seed,
                               progress=progress, args=["--data.root", str(data / "shapes"), *_POINT_ARGS])
    texture_ckpt = fit_for_demo("3d", "texture", out_dir / "texture-run", max_steps=max_steps, seed=seed,
                                progress=progress, args=["--data.root", str(data / "textures"), *_TEXTURE_ARGS])
    files: dict[str, list[str]] = {}
    _run(commands.generate, ["--ckpt", str(points_ckpt), "-n", "4", "--category", "chair", "--steps", "25",
                             "--mesh-resolution", "48", "--seed", str(seed), "-o", str(out_dir / "gen"), "--overwrite"])
    files["generated"] = sorted(str(p.relative_to(out_dir)) for p in (out_dir / "gen").iterdir())
    scans = sorted((data / "scans").glob("chair_*.ply"))
    if not scans:
        raise RuntimeError(f"make-demo-data wrote no chair scan in {data / 'scans'}")
    _run(commands.complete, ["--ckpt", str(points_ckpt), "--partial", str(scans[0]), "--category", "chair",
                             "--steps", "25", "--mesh", "--seed", str(seed), "-o", str(out_dir / "completed.ply"),
                             "--overwrite"])
    files["completed"] = ["completed.ply", "completed_mesh.obj", "completed.png"]
    seams = {}
    for mode, name in (("sync", "textured.glb"), ("independent", "textured-independent.glb")):
        summary = _run(commands.texture, ["--mesh", str(data / "uv_vase.obj"), "--ckpt", str(texture_ckpt),
                                          "--views", "8", "--label", "stripes", "--mode", mode, "--steps", "25",
                                          "--texture-size", "128", "--seed", str(seed), "-o", str(out_dir / name),
                                          "--overwrite"])
        seams[mode] = summary["seam"]
        stem = name.removesuffix(".glb")
        files[f"textured ({mode})"] = [name, f"{stem}_texture.png", f"{stem}_views.png"]
    metrics: dict[str, Any] = {"seam_sync": round(seams["sync"], 5), "seam_independent": round(seams["independent"], 5),
                               "files": files, "train_steps": max_steps,
                               "seconds": round(time.perf_counter() - started, 1)}
    if progress:
        print(f"seam disagreement of the textured vase: synchronized {seams['sync']:.5f}, "
              f"independent views {seams['independent']:.5f}")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _run(command: Any, argv: list[str]) -> dict[str, Any]:
    """Run one of the plugin's commands, capturing its JSON summary; an error names the command."""
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = command(argv)
    if status != 0:
        raise RuntimeError(f"polydiff 3d {command.__name__} failed (exit status {status})")
    lines = [line for line in buffer.getvalue().splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}
