"""Evaluation of generated and completed point clouds, with the protocol card and the baselines.

Protocol card (what every table this module prints was computed with):

* **clouds**: ``points`` (2,048) points per cloud; a mesh is sampled uniformly by area, a point
  file with more points is subsampled at random (seeded), one with fewer is refused;
* **normalisation**: every cloud (generated and reference alike) is centred on its bounding box
  and scaled so that its longest side is 2 (the unit bounding box ``[-1, 1]``, as LION reports);
* **distances**: Chamfer as PointFlow (squared distances, both directions' means summed), and
  EMD exact (POT) on a random ``emd_points`` subset (256 by default) of each cloud (the k-th
  cloud of either set keeps the same point indices; subsets of one cloud are not at EMD 0 from
  each other unless ``emd_points`` equals the cloud's size);
* **sets**: MMD, COV and 1-NNA (see :mod:`polydiff_3d.metrics`) between equal numbers of
  generated and reference clouds (the smaller of the two sets' sizes, capped by ``max_clouds``).

Baselines, in the same tables:

* ``training shapes (memorisation)``: training clouds drawn at random, what a model that had
  memorised its training set would output;
* ``jittered template``: the category's medoid training cloud (least mean Chamfer distance to the
  others) with Gaussian jitter on every point, one draw per sample;
* completion ``retrieval``: the training cloud nearest to the partial scan (one-sided Chamfer from
  the partial points to the cloud), returned whole.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
import numpy as np

from .metrics import metrics_from_distances, pairwise_distances

__all__ = ["PROTOCOL", "unit_box", "prepare_cloud", "evaluate_sets", "template_baseline", "memorisation_baseline",
           "retrieve_completion", "one_sided_chamfer", "read_cloud_folder", "evaluate_command"]

#: The protocol card's settings, recorded next to every table.
PROTOCOL = {"points": 2048, "normalization": "unit bounding box ([-1, 1], longest side 2, per cloud)",
            "chamfer": "PointFlow (squared, both directions' means summed)", "emd": "exact (POT), on emd_points",
            "emd_points": 256}


def unit_box(cloud: np.ndarray) -> np.ndarray:
    """A cloud centred on its bounding box and scaled to a longest side of 2. Shapes: (N, 3)."""
    cloud = np.asarray(cloud, dtype=np.float64)
    lo, hi = cloud.min(0), cloud.max(0)
    side = float((hi - lo).max())
    if side <= 0:
        raise ValueError("all points coincide")
    return ((cloud - (lo + hi) / 2) / (side / 2)).astype(np.float32)


def prepare_cloud(cloud: np.ndarray, points: int, *, seed: int = 0, name: str = "cloud") -> np.ndarray:
    """``points`` points of a cloud (random subset, seeded), in the unit bounding box."""
    cloud = np.asarray(cloud, dtype=np.float32)
    if cloud.ndim != 2 or cloud.shape[1] != 3:
        raise ValueError(f"{name}: expected (N, 3) points, got {cloud.shape}")
    if len(cloud) < points:
        raise ValueError(f"{name}: {len(cloud)} points, the protocol needs {points}")
    if not np.isfinite(cloud).all():
        raise ValueError(f"{name}: NaN or infinite coordinates")
    rng = np.random.default_rng(seed)
    return unit_box(cloud[rng.choice(len(cloud), points, replace=False)])


def _emd_subsets(clouds: Sequence[np.ndarray], count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [c[rng.choice(len(c), min(count, len(c)), replace=False)] for c in clouds]


def evaluate_sets(generated: Sequence[np.ndarray], reference: Sequence[np.ndarray], *, emd_points: int | None = 256,
                  seed: int = 0, cache: dict | None = None) -> dict[str, float]:
    """MMD/COV/1-NNA under Chamfer (and EMD unless ``emd_points`` is None) of prepared clouds.

    Args:
        cache: a dict kept between calls with the same reference set (and ``emd_points``,
            ``seed``), so the reference-to-reference distances are computed once for several rows.

    Returns:
        ``{"1-nna-cd", "cov-cd", "mmd-cd"}`` (+ the ``-emd`` ones), fractions and distances.
    """
    cache = {} if cache is None else cache
    d_gr = pairwise_distances(generated, reference)
    d_gg = pairwise_distances(generated, generated)
    if "rr" not in cache:
        cache["rr"] = pairwise_distances(reference, reference)
    d_rr = cache["rr"]
    out = {f"{k}-cd": v for k, v in metrics_from_distances(d_gr, d_gg, d_rr).items()}
    if emd_points:
        g, r = _emd_subsets(generated, emd_points, seed), _emd_subsets(reference, emd_points, seed)
        e_gr = pairwise_distances(g, r, "emd")
        e_gg = pairwise_distances(g, g, "emd")
        if "rr-emd" not in cache:
            cache["rr-emd"] = pairwise_distances(r, r, "emd")
        e_rr = cache["rr-emd"]
        out.update({f"{k}-emd": v for k, v in metrics_from_distances(e_gr, e_gg, e_rr).items()})
    return out


def medoid(clouds: Sequence[np.ndarray], *, max_candidates: int = 64) -> np.ndarray:
    """The cloud with the least mean Chamfer distance to the others (among the first ``max_candidates``)."""
    pool = list(clouds)[:max_candidates]
    d = pairwise_distances(pool, pool)
    return pool[int(d.mean(axis=1).argmin())]


def template_baseline(train: Sequence[np.ndarray], count: int, *, jitter: float = 0.02, seed: int = 0) -> list[np.ndarray]:
    """``count`` jittered copies of the medoid training cloud (prepared clouds in, prepared out)."""
    template = medoid(train)
    rng = np.random.default_rng(seed)
    return [unit_box(template + rng.normal(0.0, jitter, template.shape)) for _ in range(count)]


def memorisation_baseline(train: Sequence[np.ndarray], count: int, *, seed: int = 0) -> list[np.ndarray]:
    """``count`` training clouds drawn at random without replacement."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(train), size=min(count, len(train)), replace=False)
    return [train[i] for i in pick]


def one_sided_chamfer(partial: np.ndarray, cloud: np.ndarray) -> float:
    """Mean squared distance from each partial point to the nearest point of ``cloud``."""
    from scipy.spatial import cKDTree

    d, _ = cKDTree(np.asarray(cloud, dtype=np.float64)).query(np.asarray(partial, dtype=np.float64))
    return float(np.mean(d**2))


def retrieve_completion(partial: np.ndarray, train: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
    """The training cloud nearest to a partial scan (one-sided Chamfer), and its index.

    Clouds and the partial scan must be in the same frame and units.
    """
    scores = [one_sided_chamfer(partial, c) for c in train]
    best = int(np.argmin(scores))
    return np.asarray(train[best]), best


def read_cloud_folder(folder: Path, points: int, *, category: str | None = None, seed: int = 0,
                      limit: int | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Prepared clouds of every usable file in a folder, and the errors of the files that could not
    be used, each naming the file.

    A folder with point files (PLY without faces, XYZ, NPY) directly inside is read for those alone
    (``generate`` writes each cloud beside its reconstructed mesh); a folder of meshes for the
    meshes; a folder of category folders as a collection (recursively).
    """
    from .formats import MESH_SUFFIXES, POINT_SUFFIXES, ShapeError, scan_collection, shape_points

    folder = Path(folder)
    if not folder.is_dir():
        raise ShapeError(f"{folder}: no such folder")
    loose = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MESH_SUFFIXES + POINT_SUFFIXES)
    points_only = [p for p in loose if p.suffix.lower() in POINT_SUFFIXES or _is_point_ply(p)]
    if loose:
        # A folder written by ``generate`` holds each cloud and its reconstructed mesh: the clouds count.
        paths = points_only or loose
    else:
        paths = [f.path for f in scan_collection(folder, categories=[category] if category else None)]
    if limit is not None:
        paths = paths[:limit]
    clouds, errors = [], []
    for k, path in enumerate(paths):
        try:
            cloud = shape_points(path, max(points, 1), seed=seed + k) if path.suffix.lower() in MESH_SUFFIXES and \
                not _is_point_ply(path) else _read_points(path)
            clouds.append(prepare_cloud(cloud, points, seed=seed + k, name=str(path)))
        except (ShapeError, ValueError) as error:
            errors.append(str(error) if str(path) in str(error) else f"{path}: {error}")
    return clouds, errors


def _is_point_ply(path: Path) -> bool:
    from .formats import _ply_without_faces

    return path.suffix.lower() == ".ply" and _ply_without_faces(path)


def _read_points(path: Path) -> np.ndarray:
    from .pointio import read_points

    return read_points(path)


# --- the command ---------------------------------------------------------------------------------
def _table(rows: list[tuple[str, dict[str, float]]], keys: list[str]) -> str:
    header = ["row", *keys]
    lines = [header] + [[name, *(f"{m[k]:.4f}" if k in m else "-" for k in keys)] for name, m in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in lines)


def evaluate_command(argv: Sequence[str]) -> int:
    """``polydiff 3d evaluate GEN --reference REF [--train TRAIN --baselines]``."""
    parser = argparse.ArgumentParser(
        prog="polydiff 3d evaluate",
        description="Compare generated point clouds (PLY/XYZ/NPY files or meshes in GEN) with reference shapes (a "
                    "folder of files or a collection): MMD, COV and 1-NNA under Chamfer and EMD, after the protocol "
                    "card (2,048 points, each cloud in the unit bounding box, EMD exact on a 256-point subset). With "
                    "--train, the memorisation and jittered-template baselines are rows of the same table.",
    )
    parser.add_argument("generated", type=Path, help="folder of generated clouds")
    parser.add_argument("--reference", type=Path, required=True, help="folder of reference shapes (e.g. out/shapes/test)")
    parser.add_argument("--category", default=None, help="only this category of a reference collection")
    parser.add_argument("--train", type=Path, default=None, help="training shapes, for the baselines")
    parser.add_argument("--points", type=int, default=PROTOCOL["points"])
    parser.add_argument("--emd-points", type=int, default=PROTOCOL["emd_points"], help="0 skips EMD")
    parser.add_argument("--max-clouds", type=int, default=100, help="clouds per set at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(list(argv))
    from .formats import ShapeError

    if args.json is not None and args.json.exists() and not args.overwrite:
        print(f"polydiff 3d: error: {args.json} exists; pass --overwrite to replace", file=sys.stderr)
        return 1
    failed = False
    try:
        generated, errors = read_cloud_folder(args.generated, args.points, seed=args.seed)
        reference, ref_errors = read_cloud_folder(args.reference, args.points, category=args.category,
                                                  seed=args.seed + 10_000)
    except ShapeError as error:
        print(f"polydiff 3d: error: {error}", file=sys.stderr)
        return 1
    for message in errors + ref_errors:
        print(f"polydiff 3d: skipped {message}", file=sys.stderr)
        failed = True
    count = min(len(generated), len(reference), args.max_clouds)
    if count < 2:
        print(f"polydiff 3d: error: need at least two usable clouds in each set; got {len(generated)} generated in "
              f"{args.generated} and {len(reference)} reference in {args.reference}", file=sys.stderr)
        return 1
    rng = np.random.default_rng(args.seed)
    generated = [generated[i] for i in sorted(rng.choice(len(generated), count, replace=False))]
    reference = [reference[i] for i in sorted(rng.choice(len(reference), count, replace=False))]
    emd_points = args.emd_points or None
    rows = [("generated", evaluate_sets(generated, reference, emd_points=emd_points, seed=args.seed))]
    if args.train is not None:
        try:
            train, train_errors = read_cloud_folder(args.train, args.points, category=args.category,
                                                    seed=args.seed + 20_000, limit=max(4 * count, 64))
        except ShapeError as error:
            print(f"polydiff 3d: error: {error}", file=sys.stderr)
            return 1
        failed |= bool(train_errors)
        if len(train) >= 2:
            rows.append(("training shapes (memorisation)", evaluate_sets(
                memorisation_baseline(train, count, seed=args.seed), reference, emd_points=emd_points, seed=args.seed)))
            rows.append(("jittered template", evaluate_sets(
                template_baseline(train, count, seed=args.seed), reference, emd_points=emd_points, seed=args.seed)))
    keys = ["1-nna-cd", "cov-cd", "mmd-cd"] + (["1-nna-emd", "cov-emd", "mmd-emd"] if emd_points else [])
    print(f"{count} generated vs {count} reference clouds; {args.points} points, unit bounding box, "
          f"EMD on {emd_points or 0} points")
    print(_table(rows, keys))
    if args.json is not None:
        args.json.write_text(json.dumps({"protocol": {**PROTOCOL, "points": args.points, "emd_points": emd_points,
                                                      "clouds": count}, "rows": dict(rows)}, indent=1) + "\n")
    return 1 if failed else 0


def completion_chamfer(completed: np.ndarray, truth: np.ndarray) -> float:
    """Chamfer distance of a completed cloud to the ground truth, both scaled by the truth's unit
    bounding box (one transform for both, so the comparison keeps the observation's frame)."""
    from .metrics import chamfer_distance

    truth = np.asarray(truth, dtype=np.float64)
    lo, hi = truth.min(0), truth.max(0)
    centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2
    return chamfer_distance((np.asarray(completed) - centre) / half, (truth - centre) / half)

