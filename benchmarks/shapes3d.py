"""3D benchmark: point-cloud generation, completion and synchronized texturing at a CPU budget.

::

    python benchmarks/shapes3d.py [--category chair] [--steps 2000] [--texture-steps 3000] [--work benchmarks/scratch/3d]

Data: ``polydiff 3d make-demo-data`` with ``--categories CATEGORY --per-category 1000`` (800 / 100 /
100 procedural shapes) and 300 procedural textures per label.

Training (reused from ``--work`` when it finished):

- point clouds: ``-c points`` unconditional (``num_classes 0``, PointFlow's per-category setting)
  on the category's training split, ``--steps`` steps of batch 16, cosine learning rate;
- textures: ``-c texture``, ``--texture-steps`` steps (32-pixel images, batch 32).

Evaluation:

- generation: ``--clouds`` clouds (DDIM, ``--sample-steps`` steps) against as many test shapes,
  under the protocol card of :mod:`polydiff_3d.evaluation` (2,048 points, unit bounding box;
  Chamfer on all clouds, EMD exact on 256-point subsets of the first ``--emd-clouds``), with the
  memorisation (random training shapes) and jittered-template baselines; the generated clouds'
  distance to their nearest training cloud against the test clouds' (a memorisation check);
- completion: ``--completions`` test shapes seen from a random viewpoint (a z-buffered partial
  scan), completed by the model (known-values mask, DDIM) and by nearest-neighbour retrieval from
  the training split; Chamfer to 2,048 surface points of the full shape, both in the truth's unit
  bounding box;
- texturing: the UV-mapped demo vase from ``--texture-seeds`` seeds x the texture labels, 8 views at
  the model's 32 pixels, DDIM 30 steps, guidance 2, in three modes: independent per-view denoising
  projected to UV (baseline), synchronized (SyncMVD) and TexGen's persistent texture; the seam
  disagreement (the views' colour variance on texels two or more views see) of the final views.

Writes ``benchmarks/results/3d.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import log, machine_info, make_demo_data, portable, train_once, write_report  # noqa: E402


def _portable(value):
    """A record with the repository's own path removed from every string in it."""
    if isinstance(value, str):
        return portable(value)
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v) for v in value]
    return value


def _target(name: str, value: float, threshold: float, met: bool) -> dict:
    return {"name": name, "value": value, "threshold": threshold, "met": bool(met)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--category", default="chair")
    parser.add_argument("--per-category", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps of the point-cloud model")
    parser.add_argument("--texture-steps", type=int, default=3000, help="optimiser steps of the texture model")
    parser.add_argument("--sample-steps", type=int, default=50, help="DDIM steps for generation and completion")
    parser.add_argument("--clouds", type=int, default=100, help="generated clouds (and test clouds) compared")
    parser.add_argument("--emd-clouds", type=int, default=50, help="clouds per set in the EMD metrics")
    parser.add_argument("--completions", type=int, default=50, help="test shapes completed")
    parser.add_argument("--texture-seeds", type=int, default=1, help="demo meshes textured per label")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "scratch" / "3d")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "3d.json")
    parser.add_argument("--stage", choices=("train-points", "train-texture", "all"), default="all",
                        help="only train one model (to run trainings side by side), or run everything")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    machine = machine_info()
    data = make_demo_data("3d", args.work, ["--categories", args.category, "--per-category", str(args.per_category),
                                            "--overwrite"], "root")
    data = _portable(data)
    log(f"data: {data}")
    point_args = ["--data.root", str(args.work / "data" / "shapes"), "--data.categories", f"[{args.category}]",
                  "--model.init_args.denoiser.init_args.num_classes", "0",
                  "--model.init_args.lr_scheduler.init_args.T_max", str(args.steps)]
    texture_args = ["--data.root", str(args.work / "data" / "textures")]
    if args.stage == "train-texture":
        log(f"texture: {train_once('3d', args.work, 'texture', 'texture', args.texture_steps, 1, texture_args)}")
        return 0
    points = train_once("3d", args.work, "points", "points", args.steps, args.threads, point_args)
    log(f"points: {points}")
    if args.stage == "train-points":
        return 0
    texture = train_once("3d", args.work, "texture", "texture", args.texture_steps, 1, texture_args)
    log(f"texture: {texture}")

    import torch

    torch.set_num_threads(args.threads)
    generation = evaluate_generation(args, points)
    completion = evaluate_completion(args, points)
    texturing = evaluate_texturing(args, texture)
    results = {"data": data, "training": {"points": points, "texture": texture}, "generation": generation,
               "completion": completion, "texturing": texturing}
    report = {
        "command": "python benchmarks/shapes3d.py " + " ".join(sys.argv[1:]),
        "machine": machine,
        "budget": {"category": args.category, "shapes": args.per_category, "point_steps": args.steps,
                   "texture_steps": args.texture_steps, "batch_points": 16, "batch_textures": 32,
                   "sample_steps": args.sample_steps, "threads": args.threads,
                   "train_minutes": {"points": points["minutes"], "texture": texture["minutes"]},
                   "total_minutes_this_run": round((time.perf_counter() - started) / 60, 1)},
        "results": results,
        "targets": build_targets(generation, completion, texturing),
    }
    write_report(args.out, report)
    return 0


def _model(work: Path, record: dict):
    from polydiff_3d.commands import load_point_model

    return load_point_model(work / record["checkpoint"])


def _data(args: argparse.Namespace):
    from polydiff_3d.data import ShapeDataModule

    dm = ShapeDataModule(str(args.work / "data" / "shapes"), categories=[args.category])
    dm.setup()
    return dm


def evaluate_generation(args: argparse.Namespace, record: dict) -> dict:
    import numpy as np
    import torch

    from polydiff_3d.evaluation import (evaluate_sets, memorisation_baseline, prepare_cloud, template_baseline)
    from polydiff_3d.metrics import pairwise_distances

    cache = args.work / "eval-generation.json"
    if cache.exists():
        return json.loads(cache.read_text())
    model = _model(args.work, record)
    dm = _data(args)
    scale, centre = dm.info()["scale"], np.asarray(dm.info()["centre"])
    test, _, _ = dm.split("test")
    train, _, _ = dm.split("train")
    count = min(args.clouds, len(test))
    t0 = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    clouds = []
    for first in range(0, count, 16):
        n = min(16, count - first)
        clouds.append(model.generate(n, steps=args.sample_steps, generator=generator).numpy())
    generated_raw = np.concatenate(clouds)
    sample_seconds = time.perf_counter() - t0
    log(f"generated {count} clouds in {sample_seconds:.0f} s")
    generated = [prepare_cloud(c, 2048, seed=i) for i, c in enumerate(generated_raw)]
    reference = [prepare_cloud(c * scale + centre, 2048, seed=10_000 + i) for i, c in enumerate(test[:count])]
    train_clouds = [prepare_cloud(c * scale + centre, 2048, seed=20_000 + i) for i, c in enumerate(train)]
    rows = {}
    sets = {"diffusion": generated, "training shapes (memorisation)": memorisation_baseline(train_clouds, count),
            "jittered template": template_baseline(train_clouds, count)}
    cd_cache: dict = {}
    emd_cache: dict = {}
    for name, clouds in sets.items():
        t1 = time.perf_counter()
        rows[name] = evaluate_sets(clouds, reference, emd_points=None, cache=cd_cache)
        emd = evaluate_sets(clouds[: args.emd_clouds], reference[: args.emd_clouds], emd_points=256, cache=emd_cache)
        rows[name].update({k: v for k, v in emd.items() if k.endswith("-emd")})
        log(f"{name}: {rows[name]} ({time.perf_counter() - t1:.0f} s)")
    # Memorisation check: how close generated clouds come to the training set, against test clouds.
    pool = memorisation_baseline(train_clouds, 100, seed=1)  # 100 random training clouds
    near_gen = pairwise_distances(generated, pool).min(axis=1)
    near_test = pairwise_distances(reference, pool).min(axis=1)
    result = {"clouds": count, "points": 2048, "sample_steps": args.sample_steps,
              "sampling_seconds_per_cloud": round(sample_seconds / count, 2), "rows": rows,
              "nearest_training_cd": {"generated_mean": float(near_gen.mean()), "test_mean": float(near_test.mean()),
                                      "training_clouds_searched": len(pool)},
              "emd_clouds": min(args.emd_clouds, count), "emd_points": 256}
    cache.write_text(json.dumps(result, indent=1) + "\n")
    return result


def evaluate_completion(args: argparse.Namespace, record: dict) -> dict:
    import numpy as np
    import torch

    from polydiff_3d.evaluation import completion_chamfer, retrieve_completion
    from polydiff_3d.formats import load_mesh
    from polydiff_3d.procedural import sample_surface
    from polydiff_3d.scans import partial_from_mesh

    cache = args.work / "eval-completion.json"
    if cache.exists():
        return json.loads(cache.read_text())
    model = _model(args.work, record)
    dm = _data(args)
    scale, centre = dm.info()["scale"], np.asarray(dm.info()["centre"])
    train, _, _ = dm.split("train")
    train_units = [c[:2048] * scale + centre for c in train]
    _, _, files = dm.split("test")
    rng = np.random.default_rng(0)
    partials, truths = [], []
    for k, f in enumerate(files[: args.completions]):
        mesh = load_mesh(f.path)
        azimuth, elevation = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.8)
        eye = mesh.centroid + 3.0 * float(mesh.scale) * np.array([np.cos(azimuth), elevation, np.sin(azimuth)])
        partials.append(partial_from_mesh(mesh, eye=eye, points=1024, seed=k))
        truths.append(sample_surface(mesh, 2048, seed=50_000 + k))
    t0 = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    completed = []
    for first in range(0, len(partials), 16):
        batch = [torch.as_tensor(p) for p in partials[first:first + 16]]
        completed.append(model.complete(batch, steps=args.sample_steps, generator=generator).numpy())
    completed = np.concatenate(completed)
    seconds = time.perf_counter() - t0
    diffusion = [completion_chamfer(c, t) for c, t in zip(completed, truths)]
    retrieval = [completion_chamfer(retrieve_completion(p, train_units)[0], t) for p, t in zip(partials, truths)]
    partial_only = [completion_chamfer(p, t) for p, t in zip(partials, truths)]
    result = {"shapes": len(partials), "partial_points": 1024, "sample_steps": args.sample_steps,
              "seconds_per_shape": round(seconds / max(1, len(partials)), 2),
              "chamfer": {"diffusion": float(np.mean(diffusion)), "retrieval": float(np.mean(retrieval)),
                          "partial scan alone": float(np.mean(partial_only))},
              "diffusion_better_share": float(np.mean(np.asarray(diffusion) < np.asarray(retrieval)))}
    log(f"completion: {result}")
    cache.write_text(json.dumps(result, indent=1) + "\n")
    return result


def evaluate_texturing(args: argparse.Namespace, record: dict) -> dict:
    import numpy as np
    import torch

    from polydiff_3d.commands import load_texture_model
    from polydiff_3d.render import orbit_cameras
    from polydiff_3d.texturing import UVMesh, texture_mesh, uv_demo_mesh

    cache = args.work / "eval-texturing.json"
    if cache.exists():
        return json.loads(cache.read_text())
    model = load_texture_model(args.work / record["checkpoint"])
    labels = model.require_info()["labels"]
    size = int(model.require_info()["size"])
    cameras = orbit_cameras(8, radius=2.6, elevation_deg=20, size=size)
    modes = ("independent", "sync", "texgen")
    seams = {m: [] for m in modes}
    coverage = {m: [] for m in modes}
    contrast = {m: [] for m in modes}
    seconds = {m: 0.0 for m in modes}
    for seed in range(args.texture_seeds):
        mesh = uv_demo_mesh(seed=seed)
        uv = UVMesh.from_trimesh(mesh)
        v = uv.vertices
        centre = (v.min(0).values + v.max(0).values) / 2
        uv = UVMesh((v - centre) / float((v - centre).norm(dim=1).max()), uv.faces, uv.uv)
        for k, label in enumerate(labels):
            cond_value = labels.index(label)

            def sample_fn(start, known, callback, generator, cond_value=cond_value):
                count = start.shape[0] if isinstance(start, torch.Tensor) else start[0]
                cond = torch.full((count,), cond_value, dtype=torch.long)
                return model.sample(start, cond=cond, known=known, callback=callback, generator=generator)

            for mode in modes:
                t0 = time.perf_counter()
                generator = torch.Generator().manual_seed(1000 * seed + k)
                result = texture_mesh(sample_fn, uv, cameras, mode=mode, tex_size=128, generator=generator,
                                      schedule=model.schedule)
                seconds[mode] += time.perf_counter() - t0
                seams[mode].append(float(result.seam))
                coverage[mode].append(float(result.coverage))
                contrast[mode].append(float(result.contrast))
        log(f"texturing seed {seed}: " + ", ".join(f"{m} {np.mean(seams[m]):.4f}" for m in modes))
    runs = len(seams["sync"])
    result = {"meshes": args.texture_seeds, "labels": labels, "views": 8, "view_size": size,
              "sample_steps": model.sample_steps, "guidance": model.guidance,
              "seam_disagreement": {m: float(np.mean(seams[m])) for m in modes},
              "coverage": {m: float(np.mean(coverage[m])) for m in modes},
              "texture_contrast": {m: float(np.mean(contrast[m])) for m in modes},
              "seconds_per_mesh": {m: round(seconds[m] / runs, 1) for m in modes}}
    log(f"texturing: {result}")
    cache.write_text(json.dumps(result, indent=1) + "\n")
    return result


def build_targets(generation: dict, completion: dict, texturing: dict) -> list[dict]:
    nna = generation["rows"]["diffusion"]["1-nna-cd"]
    chamfer = completion["chamfer"]
    seam = texturing["seam_disagreement"]
    ratio = seam["sync"] / max(seam["independent"], 1e-12)
    return [
        _target("generation: 1-NNA (Chamfer) of the diffusion model (at most; 0.5 is ideal)", nna, 0.65, nna <= 0.65),
        _target("completion: Chamfer of diffusion completion below nearest-neighbour retrieval's (retrieval's value "
                "is the threshold)", chamfer["diffusion"], chamfer["retrieval"], chamfer["diffusion"] < chamfer["retrieval"]),
        _target("texturing: seam disagreement, synchronized / independent (at most)", ratio, 0.5, ratio <= 0.5),
    ]


if __name__ == "__main__":
    raise SystemExit(main())
