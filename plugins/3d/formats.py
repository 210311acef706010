"""Shape collections on disk: a ShapeNet/ModelNet-style folder of meshes, read through trimesh.

Layout: ``<root>/<category>/<shape>.<ext>`` (or ModelNet's ``<root>/<category>/<split>/<shape>.<ext>``)
with meshes in OBJ, PLY, OFF, STL or GLB. :func:`scan_shapes` lists them; :func:`load_mesh` reads
one as a single triangle mesh (a multi-mesh scene is merged) and checks it. A file that cannot be
used raises :class:`ShapeError` naming the file and the reason, so a caller reading many files
skips it, records why, and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["MESH_SUFFIXES", "POINT_SUFFIXES", "SPLITS", "ShapeError", "ShapeFile", "scan_shapes", "scan_collection",
           "load_mesh", "shape_points", "write_procedural_collection", "write_demo_collection"]

#: The mesh formats read (through trimesh).
MESH_SUFFIXES: tuple[str, ...] = (".obj", ".ply", ".off", ".stl", ".glb")

#: Point-cloud files a collection may hold instead of meshes (ShapeNetCore.v2.PC15k's ``.npy``).
POINT_SUFFIXES: tuple[str, ...] = (".npy", ".npz", ".xyz")

#: Split folder names recognised in a collection.
SPLITS: tuple[str, ...] = ("train", "val", "test")


class ShapeError(ValueError):
    """A mesh file that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class ShapeFile:
    """One mesh of a collection: its category (the top folder), split (ModelNet's middle folder, or
    ``None``), id (the file's stem) and path."""

    category: str
    split: str | None
    id: str
    path: Path


def scan_shapes(root: str | Path, categories: list[str] | None = None) -> list[ShapeFile]:
    """The mesh files of a collection, sorted by category, split and id.

    Args:
        root: the collection's folder.
        categories: only these categories (each must exist).

    Raises:
        ShapeError: ``root`` is not a folder, holds no category folder, or a requested category
            is missing (the categories present are named).
    """
    root = Path(root)
    if not root.is_dir():
        raise ShapeError(f"{root}: no such folder")
    present = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not present:
        raise ShapeError(f"{root}: no category folders (expected <root>/<category>/<shape>.obj and the like)")
    wanted = present if categories is None else list(categories)
    missing = [c for c in wanted if c not in present]
    if missing:
        raise ShapeError(f"{root}: no category {', '.join(map(repr, missing))}; present: {', '.join(present)}")
    files = []
    for category in wanted:
        for path in sorted((root / category).rglob("*")):
            if path.suffix.lower() not in MESH_SUFFIXES + POINT_SUFFIXES or not path.is_file():
                continue
            relative = path.relative_to(root / category).parts
            split = relative[0] if len(relative) > 1 else None
            files.append(ShapeFile(category, split, path.stem, path))
    return files


def scan_collection(root: str | Path, categories: list[str] | None = None, split: str | None = None) -> list[ShapeFile]:
    """The shape files of a collection in any of the supported layouts.

    ``<root>/<category>/[<split>/]<shape>`` is read by :func:`scan_shapes`; a root whose folders are
    all split names (``train``, ``val``, ``test``) is read as ``<root>/<split>/<category>/<shape>``.
    ``split`` keeps only that split's files.
    """
    root = Path(root)
    if not root.is_dir():
        raise ShapeError(f"{root}: no such folder")
    present = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if present and set(present) <= set(SPLITS):
        files = []
        for name in present:
            if split is not None and name != split:
                continue
            try:
                members = scan_shapes(root / name, categories)
            except ShapeError:
                if categories is None:
                    raise
                continue  # a requested category may be absent from one split
            files += [ShapeFile(f.category, name, f.id, f.path) for f in members]
        if categories is not None:
            missing = sorted(set(categories) - {f.category for f in files})
            if missing:
                raise ShapeError(f"{root}: no category {', '.join(map(repr, missing))}")
        return files
    files = scan_shapes(root, categories)
    return [f for f in files if split is None or f.split == split]


def shape_points(path: str | Path, count: int, *, seed: int = 0) -> np.ndarray:
    """``count`` points of one shape file: area-uniform surface samples of a mesh, or a random
    subset (with replacement when the file holds fewer) of a point file's points.

    Shapes:
        returns (count, 3) float32.

    Raises:
        ShapeError: the file cannot be used (named, with the reason).
    """
    path = Path(path)
    if path.suffix.lower() in POINT_SUFFIXES or (path.suffix.lower() == ".ply" and _ply_without_faces(path)):
        from .pointio import PointError, read_points

        try:
            points = read_points(path)
        except PointError as error:
            raise ShapeError(str(error)) from None
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(points), size=count, replace=len(points) < count)
        return np.asarray(points[pick], dtype=np.float32)
    from .procedural import sample_surface

    return sample_surface(load_mesh(path), count, seed=seed)


def _ply_without_faces(path: Path) -> bool:
    """Whether a PLY file's header declares no faces (a point cloud)."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(4096).split(b"end_header")[0]
    except OSError:
        return False
    for line in header.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == b"element" and parts[1] == b"face":
            return int(parts[2]) == 0
    return True


def load_mesh(path: str | Path, *, min_faces: int = 1):
    """One mesh file as a single ``trimesh.Trimesh`` (scenes merged), checked.

    Raises:
        ShapeError: an unknown suffix, an unreadable file, no triangles (or fewer than
            ``min_faces``), NaN or infinite vertices, or zero surface area.
    """
    import trimesh

    path = Path(path)
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise ShapeError(f"{path}: unknown mesh type {path.suffix!r}; read: {', '.join(MESH_SUFFIXES)}")
    if not path.is_file():
        raise ShapeError(f"{path}: no such file")
    try:
        loaded = trimesh.load(path, force="mesh", process=False)
    except Exception as error:  # trimesh raises many kinds for a broken file
        raise ShapeError(f"{path}: not a readable mesh ({type(error).__name__}: {error})") from None
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) < max(1, min_faces):
        faces = len(getattr(loaded, "faces", []))
        raise ShapeError(f"{path}: {faces} triangle(s); at least {max(1, min_faces)} needed")
    if not np.isfinite(loaded.vertices).all():
        raise ShapeError(f"{path}: NaN or infinite vertex coordinates")
    if not loaded.area > 0:
        raise ShapeError(f"{path}: zero surface area (degenerate triangles only)")
    return loaded


def write_procedural_collection(root: str | Path, per_category: int, *, seed: int = 0, suffix: str = ".ply",
                                overwrite: bool = False) -> list[ShapeFile]:
    """Write the procedural shape families as a collection (``<root>/<category>/<id><suffix>``).

    Raises:
        FileExistsError: ``root`` exists and is not empty, and ``overwrite`` is false.
    """
    from .procedural import CATEGORIES, make_shape

    root = Path(root)
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise FileExistsError(f"{root} exists and is not empty; pass overwrite=True to replace its shapes")
    if suffix not in MESH_SUFFIXES:
        raise ValueError(f"unknown mesh type {suffix!r}; write one of {', '.join(MESH_SUFFIXES)}")
    written = []
    for category in CATEGORIES:
        (root / category).mkdir(parents=True, exist_ok=True)
        for k in range(per_category):
            path = root / category / f"{category}_{seed + k:05d}{suffix}"
            make_shape(category, seed + k).export(path)
            written.append(ShapeFile(category, None, path.stem, path))
    return written


def write_demo_collection(root: str | Path, per_category: int, *, categories: list[str] | None = None, seed: int = 0,
                          fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), suffix: str = ".ply",
                          overwrite: bool = False) -> dict[str, int]:
    """Write the procedural families split-first: ``<root>/<split>/<category>/<category>_<seed>.ply``.

    Each category's shapes ``seed .. seed + per_category - 1`` are divided into train, val and test
    in the given fractions (in seed order). Returns the number of shapes written per split.

    Raises:
        FileExistsError: ``root`` exists and is not empty, and ``overwrite`` is false.
    """
    from .procedural import CATEGORIES, make_shape

    root = Path(root)
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise FileExistsError(f"{root} exists and is not empty; pass overwrite=True to replace its shapes")
    counts = {s: 0 for s in SPLITS}
    n_train = int(round(per_category * fractions[0]))
    n_val = int(round(per_category * fractions[1]))
    for category in categories or CATEGORIES:
        for k in range(per_category):
            split = "train" if k < n_train else "val" if k < n_train + n_val else "test"
            folder = root / split / category
            folder.mkdir(parents=True, exist_ok=True)
            make_shape(category, seed + k).export(folder / f"{category}_{seed + k:05d}{suffix}")
            counts[split] += 1
    return counts
