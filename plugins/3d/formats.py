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

__all__ = ["MESH_SUFFIXES", "ShapeError", "ShapeFile", "scan_shapes", "load_mesh", "write_procedural_collection"]

#: The mesh formats read (through trimesh).
MESH_SUFFIXES: tuple[str, ...] = (".obj", ".ply", ".off", ".stl", ".glb")


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
            if path.suffix.lower() not in MESH_SUFFIXES or not path.is_file():
                continue
            relative = path.relative_to(root / category).parts
            split = relative[0] if len(relative) > 1 else None
            files.append(ShapeFile(category, split, path.stem, path))
    return files


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
