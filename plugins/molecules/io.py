"""Writing generated molecules to CSV, SMILES and SD files, reading them back, drawing grids.

Generated graphs are kept one-to-one through files, invalid ones included, so that a file can
be evaluated later exactly as the in-memory set would be (validity is a fraction of *all*
generated graphs; dropping the invalid ones on writing would inflate it):

- ``.csv``: columns ``smiles``, ``valid`` and any extra columns (e.g. the requested property
  values). A valid molecule is written as its canonical SMILES (``isomericSmiles=False``); an
  invalid graph as its raw, unsanitised SMILES (:func:`raw_smiles`) with ``valid`` False.
- ``.smi`` / ``.smiles``: one SMILES per line, no header, valid and invalid alike; an invalid
  graph's raw SMILES fails sanitisation again when it is read back, and an empty graph is an
  empty line. Extra columns cannot be stored (a warning says they were left out).
- ``.sdf``: one record per molecule with 2D coordinates (``rdDepictor.Compute2DCoords``) and
  SD tags ``smiles``, ``valid`` (1 or 0) and the extra columns; invalid graphs are written
  unsanitised with ``valid`` 0, a ``None`` entry as an empty record.

:func:`read_generated` reads any of the three back into a list with one entry per molecule:
the sanitised molecule, or ``None`` for an entry that is marked invalid (``valid`` column or
tag false) or does not parse and sanitise. Writers refuse to replace an existing file unless
``overwrite=True``.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rdkit import Chem, rdBase

__all__ = ["raw_smiles", "write_molecules", "read_generated", "draw_grid"]

_SUFFIXES = (".csv", ".smi", ".smiles", ".sdf")
_SMILES_COLUMNS = ("smiles", "canonical_smiles", "smi")
_FALSE = {"0", "false", "no", "f", "n"}


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; use one of {', '.join(_SUFFIXES)}")
    return suffix


def raw_smiles(mol: Chem.Mol | None) -> str:
    """The SMILES of a molecule as it is, without sanitising it (for invalid graphs).

    Implicit hydrogen counts are computed leniently (``UpdatePropertyCache(strict=False)``), so
    over-bonded atoms are written as they are and fail sanitisation again when read back.

    Args:
        mol: a molecule, sanitised or not; None gives "".

    Returns:
        Non-canonical SMILES without stereochemistry, or "" if RDKit cannot write it.
    """
    if mol is None:
        return ""
    try:
        copy = Chem.Mol(mol)
        copy.UpdatePropertyCache(strict=False)
        return Chem.MolToSmiles(copy, canonical=False, isomericSmiles=False)
    except Exception:  # RDKit raises several types on malformed graphs
        return ""


def _prepare(mols: Sequence[Chem.Mol | None]) -> list[tuple[Chem.Mol | None, bool, str]]:
    """(molecule to write, valid, SMILES) per entry: sanitised copies for valid molecules."""
    from polydiff_molecules.chem import sanitize

    out = []
    with rdBase.BlockLogs():
        for mol in mols:
            if mol is None:
                out.append((None, False, ""))
                continue
            if not isinstance(mol, Chem.Mol):
                raise TypeError(f"molecules must be RDKit molecules or None, got {type(mol).__name__}")
            clean = sanitize(mol)[0] if mol.GetNumAtoms() else None
            if clean is None:
                out.append((mol, False, raw_smiles(mol)))
            else:
                out.append((clean, True, Chem.MolToSmiles(clean, isomericSmiles=False)))
    return out


def _text(value: Any) -> str:
    """A column value as text (numpy scalars and tensors' items included)."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


def write_molecules(
    path: str | Path,
    mols: Sequence[Chem.Mol | None],
    *,
    columns: Mapping[str, Sequence[Any]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write generated molecules, invalid ones included, to a .csv, .smi or .sdf file.

    Args:
        path: the output file; its suffix picks the format (see the module docstring).
            Missing parent folders are created.
        mols: the molecules, sanitised or not; None for graphs that could not be built.
        columns: extra per-molecule values, name -> sequence of the same length as ``mols``
            (CSV columns, SD tags; not stored in .smi files).
        overwrite: replace an existing file.

    Returns:
        The path written.

    Raises:
        ValueError: if the file exists and ``overwrite`` is False, the suffix is not supported,
            or a column has the wrong length or a reserved name (``smiles``, ``valid``).
    """
    path = Path(path)
    suffix = _suffix(path)
    if path.exists() and not overwrite:
        raise ValueError(f"{path} already exists; choose another file or pass overwrite=True")
    columns = dict(columns or {})
    for name, values in columns.items():
        if name.lower() in ("smiles", "valid"):
            raise ValueError(f"column {name!r} is reserved: write_molecules writes the smiles and valid columns itself")
        if len(values) != len(mols):
            raise ValueError(f"column {name!r} has {len(values)} values for {len(mols)} molecules")
    entries = _prepare(mols)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["smiles", "valid", *columns])
            for i, (_, valid, smiles) in enumerate(entries):
                writer.writerow([smiles, valid, *(_text(values[i]) for values in columns.values())])
    elif suffix in (".smi", ".smiles"):
        if columns:
            warnings.warn(f"{path}: SMILES files hold no columns; {', '.join(columns)} not written (use .csv or .sdf)",
                          stacklevel=2)
        with path.open("w", encoding="utf-8") as handle:
            handle.writelines(smiles + "\n" for _, _, smiles in entries)
    else:
        _write_sdf(path, entries, columns)
    return path


def _write_sdf(path: Path, entries: list[tuple[Chem.Mol | None, bool, str]], columns: Mapping[str, Sequence[Any]]) -> None:
    from rdkit.Chem import rdDepictor

    writer = Chem.SDWriter(str(path))
    try:
        with rdBase.BlockLogs():
            for i, (mol, valid, smiles) in enumerate(entries):
                record = Chem.Mol() if mol is None else Chem.Mol(mol)
                if not valid and record.GetNumAtoms():
                    record.UpdatePropertyCache(strict=False)
                    Chem.FastFindRings(record)
                try:
                    rdDepictor.Compute2DCoords(record)
                except Exception:  # an odd invalid graph is still written, without coordinates
                    pass
                record.SetProp("_Name", f"generated_{i + 1}")
                record.SetProp("smiles", smiles)
                record.SetProp("valid", "1" if valid else "0")
                for name, values in columns.items():
                    record.SetProp(name, _text(values[i]))
                writer.SetKekulize(valid)
                try:
                    writer.write(record)
                except Exception:  # keep one record per molecule even if RDKit cannot write the graph
                    empty = Chem.Mol()
                    for key in record.GetPropNames():
                        empty.SetProp(key, record.GetProp(key))
                    empty.SetProp("_Name", f"generated_{i + 1}")
                    writer.write(empty)
    finally:
        writer.close()


def _is_false(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _FALSE


def _parse(smiles: str) -> Chem.Mol | None:
    smiles = smiles.strip()
    if not smiles:
        return None
    mol = Chem.MolFromSmiles(smiles)
    return mol if mol is not None and mol.GetNumAtoms() else None


def read_generated(path: str | Path) -> list[Chem.Mol | None]:
    """Read generated molecules back from a .csv, .smi or .sdf file, one entry per molecule.

    CSV files need a SMILES column (``smiles``, ``canonical_smiles`` or ``smi``, any case); a
    ``valid`` column or SD tag, when present, marks entries written as invalid. SMILES files
    may hold a name after the SMILES and a header line starting with ``smiles``; every other
    line is an entry, an empty line an invalid (empty) one.

    Args:
        path: the file.

    Returns:
        The sanitised molecules, None for entries marked invalid or that fail to parse or
        sanitise (they stay in the list: they count as generated but invalid).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: for an unsupported suffix, an empty CSV file or one without a SMILES column.
    """
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file {path}")
    with rdBase.BlockLogs():
        if suffix == ".csv":
            return _read_csv(path)
        if suffix in (".smi", ".smiles"):
            return _read_smi(path)
        supplier = Chem.SDMolSupplier(str(path), sanitize=True, removeHs=True)
        out: list[Chem.Mol | None] = []
        for mol in supplier:
            if mol is None or mol.GetNumAtoms() == 0:
                out.append(None)
            elif mol.HasProp("valid") and _is_false(mol.GetProp("valid")):
                out.append(None)
            else:
                out.append(mol)
        return out


def _read_csv(path: Path) -> list[Chem.Mol | None]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path} is empty; expected a header with a smiles column")
        lower = [name.strip().lower() for name in header]
        smiles_at = next((lower.index(name) for name in _SMILES_COLUMNS if name in lower), None)
        if smiles_at is None:
            raise ValueError(f"{path} has no SMILES column (looked for {', '.join(_SMILES_COLUMNS)}; "
                             f"found {', '.join(header) or 'none'})")
        valid_at = lower.index("valid") if "valid" in lower else None
        out: list[Chem.Mol | None] = []
        for row in reader:
            if not row:  # csv yields [] for a blank line: not an entry
                continue
            smiles = row[smiles_at] if smiles_at < len(row) else ""
            if valid_at is not None and _is_false(row[valid_at] if valid_at < len(row) else None):
                out.append(None)
            else:
                out.append(_parse(smiles))
    return out


def _read_smi(path: Path) -> list[Chem.Mol | None]:
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":  # the newline that ends the last line
        lines.pop()
    if lines and lines[0].split() and lines[0].split()[0].lower() == "smiles":
        lines = lines[1:]
    return [_parse(line.split()[0]) if line.split() else None for line in lines]


def draw_grid(
    path_png: str | Path,
    mols: Sequence[Chem.Mol | None],
    legends: Sequence[str] | None = None,
    per_row: int = 5,
    size: tuple[int, int] = (250, 250),
    max_mols: int = 40,
) -> int:
    """Draw the valid molecules of a set as a PNG grid (``rdkit.Chem.Draw.MolsToGridImage``).

    ``None`` entries and graphs that fail sanitisation are skipped (with their legends); the
    first ``max_mols`` of the rest are drawn. An existing file is replaced.

    Args:
        path_png: the output PNG file; missing parent folders are created.
        mols: the molecules.
        legends: one caption per entry of ``mols`` (e.g. property values), or None.
        per_row: molecules per row.
        size: (width, height) of each cell in pixels.
        max_mols: the most molecules drawn.

    Returns:
        The number of molecules drawn.

    Raises:
        ValueError: if no molecule can be drawn, or ``legends`` does not match ``mols``.
    """
    from rdkit.Chem import Draw

    from polydiff_molecules.chem import sanitize

    if legends is not None and len(legends) != len(mols):
        raise ValueError(f"legends has {len(legends)} entries for {len(mols)} molecules")
    chosen: list[Chem.Mol] = []
    captions: list[str] = []
    with rdBase.BlockLogs():
        for i, mol in enumerate(mols):
            if len(chosen) >= max_mols:
                break
            clean = None if mol is None or mol.GetNumAtoms() == 0 else sanitize(mol)[0]
            if clean is not None:
                chosen.append(clean)
                captions.append("" if legends is None else str(legends[i]))
    if not chosen:
        raise ValueError(f"none of the {len(mols)} molecules is valid; nothing to draw into {path_png}")
    image = Draw.MolsToGridImage(chosen, molsPerRow=per_row, subImgSize=tuple(size), legends=captions, returnPNG=False)
    path = Path(path_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, bytes):  # pragma: no cover - when an IPython renderer patched RDKit
        path.write_bytes(image)
    else:
        image.save(path, format="PNG")
    return len(chosen)
