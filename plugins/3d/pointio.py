"""Point-cloud files: PLY, XYZ/TXT, NPY and NPZ in; the same formats out.

* ``.ply``: ascii or binary, read through trimesh; a point cloud, or the vertices of a mesh.
  Written as binary little-endian PLY with one ``vertex`` element of float ``x y z``.
* ``.xyz`` / ``.txt``: whitespace-separated columns, one point a row, ``#`` comments; the first
  three columns are the coordinates and any further ones (normals, colours, as in CGAL's ``.xyz``
  files) are ignored.
* ``.npy``: one float array of shape (N, 3). ``.npz``: such an array under the key ``points``.

A file that cannot be used raises :class:`PointError` naming the file and the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["POINT_SUFFIXES", "PointError", "read_points", "write_points"]

#: The point-cloud formats read and written.
POINT_SUFFIXES: tuple[str, ...] = (".ply", ".xyz", ".txt", ".npy", ".npz")


class PointError(ValueError):
    """A point-cloud file that cannot be used; the message names the file and the reason."""


def _read_ply(path: Path) -> np.ndarray:
    import trimesh

    loaded = trimesh.load(path, process=False)
    if isinstance(loaded, trimesh.Scene):
        parts = [g.vertices for g in loaded.geometry.values() if hasattr(g, "vertices")]
        return np.concatenate(parts) if parts else np.zeros((0, 3))
    return np.asarray(loaded.vertices)


def _read_text(path: Path) -> np.ndarray:
    rows = np.loadtxt(path, comments="#", ndmin=2, dtype=np.float64)
    if rows.size and rows.shape[1] < 3:
        raise PointError(f"{path}: {rows.shape[1]} column(s) a row; at least 3 (x y z) needed")
    return rows[:, :3] if rows.size else np.zeros((0, 3))


def _read_npz(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        if "points" not in archive.files:
            raise PointError(f"{path}: no array 'points'; present: {', '.join(archive.files) or 'none'}")
        return archive["points"]


_READERS = {".ply": _read_ply, ".xyz": _read_text, ".txt": _read_text,
            ".npy": lambda p: np.load(p, allow_pickle=False), ".npz": _read_npz}


def read_points(path: str | Path, *, min_points: int = 16) -> np.ndarray:
    """One point-cloud file as an array, checked (formats in the module docstring).

    Args:
        path: the file; its suffix picks the format.
        min_points: fewer points than this is an error.

    Shapes:
        returns (N, 3) float32, N >= ``min_points``.

    Raises:
        PointError: an unknown suffix, an unreadable file, an array that is not (N, 3), rows with
            NaN or infinite values (their number is given), or fewer than ``min_points`` points.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise PointError(f"{path}: unknown point-cloud type {suffix!r}; read: {', '.join(POINT_SUFFIXES)}")
    try:
        points = np.asarray(_READERS[suffix](path))
    except PointError:
        raise
    except Exception as error:  # numpy and trimesh raise many kinds for a broken file
        raise PointError(f"{path}: not a readable point cloud ({type(error).__name__}: {error})") from None
    if points.ndim != 2 or points.shape[1] != 3:
        raise PointError(f"{path}: points must have shape (N, 3); got {points.shape}")
    if not np.issubdtype(points.dtype, np.number):
        raise PointError(f"{path}: points must be numbers; got dtype {points.dtype}")
    bad = int((~np.isfinite(points)).any(axis=1).sum())
    if bad:
        raise PointError(f"{path}: {bad} of {len(points)} row(s) hold NaN or infinite values")
    if len(points) < min_points:
        raise PointError(f"{path}: {len(points)} point(s); at least {min_points} needed")
    return points.astype(np.float32)


def _ply_bytes(points: np.ndarray) -> bytes:
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {len(points)}\n"
              "property float x\nproperty float y\nproperty float z\nend_header\n")
    return header.encode("ascii") + np.ascontiguousarray(points, dtype="<f4").tobytes()


def write_points(path: str | Path, points, *, overwrite: bool = False) -> Path:
    """Write a point cloud; the suffix picks the format (module docstring).

    Args:
        path: the file to write.
        points: the cloud.
        overwrite: replace an existing file.

    Shapes:
        points: (N, 3), N >= 1.

    Returns:
        The path written.

    Raises:
        FileExistsError: the file exists and ``overwrite`` is false.
        PointError: an unknown suffix, or points that are not a finite (N, 3) array.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in POINT_SUFFIXES:
        raise PointError(f"{path}: unknown point-cloud type {suffix!r}; write one of {', '.join(POINT_SUFFIXES)}")
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise PointError(f"{path}: points must have shape (N >= 1, 3); got {points.shape}")
    bad = int((~np.isfinite(points)).any(axis=1).sum())
    if bad:
        raise PointError(f"{path}: {bad} of {len(points)} row(s) hold NaN or infinite values; nothing written")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    if suffix == ".ply":
        path.write_bytes(_ply_bytes(points))
    elif suffix in (".xyz", ".txt"):
        # Nine significant digits keep float32 values exact through the text round trip.
        np.savetxt(path, points, fmt="%.9g")
    elif suffix == ".npy":
        with path.open("wb") as handle:
            np.save(handle, points.astype(np.float32))
    else:
        with path.open("wb") as handle:
            np.savez(handle, points=points.astype(np.float32))
    return path
