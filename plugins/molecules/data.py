"""Reading molecule files, and the DataModule that turns them into graph batches.

Files are read by their ending:

- **tables** ``.csv``, ``.tsv`` (also gzipped, like MOSES's ``dataset_v1.csv.gz``) with a
  header; the SMILES column is the first whose name is ``smiles``, ``canonical_smiles`` or
  ``smi`` (any case) unless named; any other column can be read along, e.g. as a condition;
- **SMILES files** ``.smi``, ``.smiles`` (gzipped too): one molecule per line, the SMILES then
  optionally a name (column ``name``), separated by white space; a first line whose first word
  is ``smiles`` (any case) is a header;
- **SD files** ``.sdf`` (gzipped too): every record's data items (SD tags) become columns.

Every molecule goes through :func:`polydiff_molecules.chem.standardize` (largest fragment,
allowed elements, graph round trip). A bad row is never fatal: it is kept in
:attr:`MoleculeTable.problems` with its row number and reason, and
:meth:`MoleculeTable.summary` counts them by kind. RDKit's own log is silenced while reading.

:class:`MoleculeDataModule` serves DiGress-style graphs (Vignac et al. 2023): atom classes from
a vocabulary of atom tokens (element plus formal charge) found in the training split, bond
classes none/single/double/triple, and a vector of condition values per molecule (Graph DiT,
Liu et al. 2024, conditions on several properties at once, numeric and categorical). Its
:meth:`~MoleculeDataModule.info` holds the marginal distributions a marginal-transition
diffusion needs (the atom and bond type frequencies, the distribution of the number of atoms)
and those of atoms given bonds and bonds given atoms.
"""

from __future__ import annotations

import gzip
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from rdkit import Chem
from torch.utils.data import Dataset

from .chem import BOND_TYPES, ORGANIC_ELEMENTS, _graph_lists, _standardize, quiet_rdkit

__all__ = [
    "MolRecord", "Problem", "MoleculeTable", "read_molecules", "molecules_from_smiles", "MoleculeGraphs",
    "MoleculeDataModule", "SMILES_COLUMNS", "TABLE_SUFFIXES", "SMILES_SUFFIXES", "SDF_SUFFIXES",
]

TABLE_SUFFIXES = (".csv", ".tsv")
SMILES_SUFFIXES = (".smi", ".smiles")
SDF_SUFFIXES = (".sdf",)
#: Column names taken for SMILES (any case), in order of preference.
SMILES_COLUMNS = ("smiles", "canonical_smiles", "smi")

# Kinds of problems, in the order a summary lists them, with their words there.
_KINDS = {
    "empty": "empty",
    "unparseable": "unparseable SMILES",
    "unreadable": "unreadable records",
    "invalid": "failed sanitisation",
    "elements": "with unsupported elements",
    "fragments": "with several fragments",
    "size": "over max_atoms",
    "radicals": "radicals",
    "graph": "not representable as graphs",
}
_MISSING = frozenset({"", "nan", "na", "n/a", "none", "null"})
_MAX_LISTED = 10


# --- reading ------------------------------------------------------------------------------------
@dataclass
class MolRecord:
    """One molecule read from a file.

    Attributes:
        row: 1-based data row (header excluded) or SDF record index.
        smiles: canonical SMILES (no stereochemistry).
        mol: the standardised molecule, kekulised with aromatic flags cleared (use a sanitised
            copy for descriptors that depend on aromaticity).
        values: the requested columns' raw values (``None`` or NaN where missing).
        graph: the atom tokens and bonds ``(i, j, class)`` of ``mol``, kept from
            standardisation so that they are not computed twice (``None``: not kept).
    """

    row: int
    smiles: str
    mol: Chem.Mol
    values: dict[str, Any] = field(default_factory=dict)
    graph: tuple[list[str], np.ndarray] | None = field(default=None, repr=False, compare=False)

    def tokens_and_bonds(self) -> tuple[list[str], np.ndarray]:
        """The atom tokens (n,) and the bonds (m, 3) ``(i, j, class)``, ``i < j``, of the molecule."""
        return self.graph if self.graph is not None else _graph_lists(self.mol)


@dataclass
class Problem:
    """A row that gave no molecule.

    Attributes:
        row: 1-based data row or SDF record index.
        text: the input SMILES ("" for an empty cell or an SDF record).
        reason: why, in words.
        kind: the kind of problem a summary counts it under (``empty``, ``unparseable``,
            ``unreadable``, ``invalid``, ``elements``, ``fragments``, ``size``, ``radicals``,
            ``graph``).
    """

    row: int
    text: str
    reason: str
    kind: str = "invalid"


@dataclass
class MoleculeTable:
    """The molecules of a file, the rows that failed, and what was changed.

    Attributes:
        path: the file read.
        rows: data rows (or SDF records) read.
        columns: the file's columns (SD tags for an SD file).
        records: the molecules, in file order.
        problems: the rows that gave no molecule.
        notes: ``(row, note)`` for molecules kept with a change (a salt reduced to its largest
            fragment).
        unit: ``"rows"`` or ``"records"``.
    """

    path: str
    rows: int = 0
    columns: list[str] = field(default_factory=list)
    records: list[MolRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[tuple[int, str]] = field(default_factory=list)
    unit: str = "rows"

    def __len__(self) -> int:
        return len(self.records)

    def summary(self) -> str:
        """One line: ``read 1000 rows: 982 molecules, 12 unparseable SMILES, 4 with unsupported
        elements, 2 empty; 7 salts/mixtures reduced to the largest fragment``."""
        counts = Counter(p.kind for p in self.problems)
        parts = [f"{len(self.records)} molecule{'s' if len(self.records) != 1 else ''}"]
        parts += [f"{counts[k]} {label}" for k, label in _KINDS.items() if counts.get(k)]
        parts += [f"{n} {k}" for k, n in counts.items() if k not in _KINDS]
        text = f"read {self.rows} {self.unit}: " + ", ".join(parts)
        if self.notes:
            plural = "s" if len(self.notes) != 1 else ""
            text += f"; {len(self.notes)} salt{plural}/mixture{plural} reduced to the largest fragment"
        return text

    def problem_lines(self, limit: int = _MAX_LISTED) -> list[str]:
        """The first ``limit`` problems as ``row N: reason (text)`` lines, and a count of the rest."""
        lines = [f"{self.unit[:-1]} {p.row}: {p.reason}" + (f" ({p.text})" if p.text else "")
                 for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more")
        return lines


def _kind_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in TABLE_SUFFIXES:
        return "table"
    if last in SMILES_SUFFIXES:
        return "smi"
    if last in SDF_SUFFIXES:
        return "sdf"
    raise ValueError(f"{path}: unknown kind of file {''.join(path.suffixes) or '(no suffix)'!r}; molecules are read "
                     f"from {', '.join(TABLE_SUFFIXES + SMILES_SUFFIXES + SDF_SUFFIXES)} files (optionally .gz)")


def _open_text(path: Path) -> Any:
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


class _Reader:
    """Standardises molecules one row at a time into a :class:`MoleculeTable`."""

    def __init__(self, table: MoleculeTable, fragments: str, allowed_elements: Sequence[str], max_atoms: int | None):
        if fragments not in ("largest", "skip"):
            raise ValueError(f"fragments must be 'largest' or 'skip', got {fragments!r}")
        if max_atoms is not None and max_atoms < 1:
            raise ValueError(f"max_atoms must be a positive number of heavy atoms, got {max_atoms}")
        self.table, self.fragments, self.max_atoms = table, fragments, max_atoms
        self.allowed = frozenset(allowed_elements)

    def add_mol(self, row: int, mol: Chem.Mol, text: str, values: dict[str, Any]) -> None:
        """A parsed, sanitised molecule that this reader may modify."""
        kept, smiles, note, kind, graph = _standardize(mol, self.fragments, self.allowed, self.max_atoms, copy=False)
        if kept is None:
            self.table.problems.append(Problem(row, text, note or "rejected", kind or "invalid"))
            return
        if note:
            self.table.notes.append((row, note))
        self.table.records.append(MolRecord(row, smiles, kept, values, graph))

    def add_smiles(self, row: int, smiles: Any, values: dict[str, Any]) -> None:
        self.table.rows += 1
        text = smiles.strip() if isinstance(smiles, str) else ""
        if not text:
            self.table.problems.append(Problem(row, "", "no SMILES", "empty"))
            return
        mol = Chem.MolFromSmiles(text)
        if mol is None:
            raw = Chem.MolFromSmiles(text, sanitize=False)
            if raw is None:
                self.table.problems.append(Problem(row, text, "unparseable SMILES", "unparseable"))
            else:
                error = _sanitize_error(raw)
                self.table.problems.append(Problem(row, text, f"failed sanitisation: {error}", "invalid"))
            return
        self.add_mol(row, mol, text, values)


def _sanitize_error(mol: Chem.Mol) -> str | None:
    """Sanitise ``mol`` in place; the error text, or None on success."""
    try:
        Chem.SanitizeMol(mol)
    except Exception as exc:  # RDKit raises valence, kekulisation and ring errors of several types
        lines = str(exc).strip().splitlines()
        return lines[0] if lines else type(exc).__name__
    return None


def read_molecules(
    path: str | Path,
    *,
    smiles_column: str | None = None,
    columns: Sequence[str] = (),
    fragments: Literal["largest", "skip"] = "largest",
    allowed_elements: Sequence[str] = ORGANIC_ELEMENTS,
    max_atoms: int | None = None,
    limit: int | None = None,
) -> MoleculeTable:
    """Read and standardise the molecules of a CSV/TSV table, SMILES file or SD file.

    Each SMILES is parsed by RDKit once; reading 100k molecules takes well under a minute.

    Args:
        path: the file (see the module docstring for the formats).
        smiles_column: a table's SMILES column (default: the first named ``smiles``,
            ``canonical_smiles`` or ``smi``, any case). Not for SD files.
        columns: further columns (SD tags) to keep in each record's ``values``; a SMILES
            file has the column ``name``.
        fragments: ``"largest"`` keeps the largest fragment of a salt or mixture (with a
            note), ``"skip"`` rejects it.
        allowed_elements: element symbols accepted; molecules with others are rejected.
        max_atoms: the most heavy atoms accepted (``None``: any number).
        limit: read only the first ``limit`` data rows (SDF records).

    Returns:
        The :class:`MoleculeTable`; rows that give no molecule are in its ``problems``.

    Raises:
        ValueError: the file is missing, empty or of an unknown kind, or it has no SMILES
            column or lacks a requested column (the message names the file and the columns
            found).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    kind = _kind_of(path)
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of rows, got {limit}")
    columns = list(dict.fromkeys(columns))
    table = MoleculeTable(str(path), unit="records" if kind == "sdf" else "rows")
    reader = _Reader(table, fragments, allowed_elements, max_atoms)
    with quiet_rdkit():
        if kind == "table":
            _read_table(path, reader, smiles_column, columns, limit)
        elif kind == "smi":
            _read_smi(path, reader, smiles_column, columns, limit)
        else:
            if smiles_column is not None:
                raise ValueError(f"{path}: smiles_column does not apply to an SD file (its molecules are its "
                                 "connection tables)")
            _read_sdf(path, reader, columns, limit)
    if table.rows == 0:
        raise ValueError(f"{path}: the file holds no molecule rows")
    return table


def _pick_smiles_column(path: Path, found: Sequence[str], smiles_column: str | None) -> str:
    if smiles_column is not None:
        if smiles_column not in found:
            raise ValueError(f"{path}: no SMILES column {smiles_column!r} (columns found: {', '.join(found)})")
        return smiles_column
    for wanted in SMILES_COLUMNS:
        for name in found:
            if name.strip().lower() == wanted:
                return name
    raise ValueError(f"{path}: no SMILES column (looked for {', '.join(SMILES_COLUMNS)} in any case; columns found: "
                     f"{', '.join(found) or 'none'}); name it with smiles_column")


def _missing_columns(path: Path, wanted: Sequence[str], found: Sequence[str], what: str = "column") -> None:
    missing = [c for c in wanted if c not in found]
    if missing:
        raise ValueError(f"{path}: no {what}{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
                         f"({what}s found: {', '.join(found) or 'none'})")


def _read_table(path: Path, reader: _Reader, smiles_column: str | None, columns: list[str],
                limit: int | None) -> None:
    import pandas as pd

    sep = "\t" if ".tsv" in [s.lower() for s in path.suffixes] else ","
    try:
        header = pd.read_csv(path, sep=sep, nrows=0)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the file is empty") from None
    except Exception as exc:
        raise ValueError(f"{path}: could not be read as a table ({type(exc).__name__}: {exc})") from None
    found = [str(c) for c in header.columns]
    reader.table.columns = found
    column = _pick_smiles_column(path, found, smiles_column)
    _missing_columns(path, columns, found)
    wanted = list(dict.fromkeys([column, *columns]))
    try:
        frame = pd.read_csv(path, sep=sep, usecols=wanted, dtype={column: str}, nrows=limit)
    except Exception as exc:
        raise ValueError(f"{path}: could not be read as a table ({type(exc).__name__}: {exc})") from None
    smiles = frame[column].tolist()
    values = {c: frame[c].tolist() for c in columns}
    for i, text in enumerate(smiles):
        reader.add_smiles(i + 1, text, {c: values[c][i] for c in columns})


def _read_smi(path: Path, reader: _Reader, smiles_column: str | None, columns: list[str], limit: int | None) -> None:
    if smiles_column is not None:
        raise ValueError(f"{path}: smiles_column does not apply to a SMILES file (the SMILES is each line's "
                         "first word)")
    reader.table.columns = ["smiles", "name"]
    _missing_columns(path, columns, reader.table.columns)
    with _open_text(path) as handle:
        lines = handle.read().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if lines and lines[0].split(None, 1) and lines[0].split(None, 1)[0].lower() == "smiles":
        lines = lines[1:]
    if limit is not None:
        lines = lines[:limit]
    for i, line in enumerate(lines):
        parts = line.strip().split(None, 1)
        text = parts[0] if parts else ""
        name = parts[1].strip() if len(parts) > 1 else None
        reader.add_smiles(i + 1, text, {"name": name} if columns else {})


def _read_sdf(path: Path, reader: _Reader, columns: list[str], limit: int | None) -> None:
    table = reader.table
    tags: dict[str, None] = {}
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as handle:
        supplier = Chem.ForwardSDMolSupplier(handle, sanitize=False, removeHs=False)
        for index, mol in enumerate(supplier, start=1):
            if limit is not None and index > limit:
                break
            table.rows += 1
            if mol is None:
                table.problems.append(Problem(index, "", "unreadable SDF record", "unreadable"))
                continue
            names = list(mol.GetPropNames())
            tags.update(dict.fromkeys(names))
            values = {c: (mol.GetProp(c) if c in names else None) for c in columns}
            if mol.GetNumAtoms() == 0:
                table.problems.append(Problem(index, "", "no atoms", "empty"))
                continue
            error = _sanitize_error(mol)
            if error is not None:
                table.problems.append(Problem(index, "", f"failed sanitisation: {error}", "invalid"))
                continue
            reader.add_mol(index, mol, "", values)
    table.columns = list(tags)
    if table.rows:
        _missing_columns(path, columns, table.columns, what="SD tag")


def molecules_from_smiles(
    smiles: Iterable[str],
    *,
    values: dict[str, Sequence[Any]] | None = None,
    source: str = "<smiles>",
    fragments: Literal["largest", "skip"] = "largest",
    allowed_elements: Sequence[str] = ORGANIC_ELEMENTS,
    max_atoms: int | None = None,
) -> MoleculeTable:
    """Standardise SMILES strings held in memory, exactly as :func:`read_molecules` does a file.

    Args:
        smiles: the SMILES (rows are numbered from 1 in this order).
        values: optional columns, each as long as ``smiles``, kept in the records' ``values``.
        source: a name for the table (its ``path``).

    Returns:
        The :class:`MoleculeTable`.
    """
    values = values or {}
    table = MoleculeTable(source)
    reader = _Reader(table, fragments, allowed_elements, max_atoms)
    with quiet_rdkit():
        for i, text in enumerate(smiles):
            reader.add_smiles(i + 1, text, {c: column[i] for c, column in values.items()})
    return table


# --- graphs -------------------------------------------------------------------------------------
class MoleculeGraphs(Dataset):
    """Molecule graphs stored as a few flat arrays; items are ``torch_geometric`` ``Data``.

    Each item: ``x`` long (n,) atom classes, ``edge_index`` long (2, 2m) (both directions),
    ``edge_attr`` long (2m,) bond classes 1..3, ``y`` float32 (1, P) condition values, ``n`` the
    number of atoms and ``smiles`` its canonical SMILES.

    Args:
        atoms: the atom classes of all molecules, concatenated.
        atom_ptr: molecule ``i``'s atoms are ``atoms[atom_ptr[i]:atom_ptr[i + 1]]``.
        edges: (2, E) directed edges with indices local to their molecule, concatenated.
        edge_attr: (E,) their bond classes.
        edge_ptr: molecule ``i``'s edges are ``edges[:, edge_ptr[i]:edge_ptr[i + 1]]``.
        y: (M, P) condition values.
        smiles: (M,) canonical SMILES.
    """

    def __init__(self, atoms: np.ndarray, atom_ptr: np.ndarray, edges: np.ndarray, edge_attr: np.ndarray,
                 edge_ptr: np.ndarray, y: np.ndarray, smiles: list[str]):
        self.atoms, self.atom_ptr = atoms, atom_ptr
        self.edges, self.edge_attr, self.edge_ptr = edges, edge_attr, edge_ptr
        self.y, self.smiles = y, smiles

    @classmethod
    def build(cls, graphs: Sequence[tuple[list[str], np.ndarray]], index: dict[str, int], y: np.ndarray,
              smiles: list[str]) -> MoleculeGraphs:
        """From ``(tokens, bonds)`` per molecule (bonds ``(i, j, class)``, ``i < j``)."""
        sizes = np.array([len(tokens) for tokens, _ in graphs], dtype=np.int64)
        atom_ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        atoms = np.fromiter((index[t] for tokens, _ in graphs for t in tokens), dtype=np.int64, count=int(sizes.sum()))
        edge_counts = np.array([2 * len(bonds) for _, bonds in graphs], dtype=np.int64)
        edge_ptr = np.concatenate([[0], np.cumsum(edge_counts)]).astype(np.int64)
        bonds = [np.asarray(b, dtype=np.int64).reshape(-1, 3) for _, b in graphs]
        if bonds and edge_ptr[-1]:
            both = np.concatenate([np.concatenate([b, b[:, [1, 0, 2]]]) for b in bonds])
            mol = np.repeat(np.arange(len(graphs)), edge_counts)
            # Sort each molecule's directed edges by (source, target).
            order = np.lexsort((both[:, 1], both[:, 0], mol))
            both = both[order]
            edges, edge_attr = np.ascontiguousarray(both[:, :2].T), np.ascontiguousarray(both[:, 2])
        else:
            edges, edge_attr = np.zeros((2, 0), dtype=np.int64), np.zeros(0, dtype=np.int64)
        return cls(atoms, atom_ptr, edges, edge_attr, edge_ptr, np.asarray(y, dtype=np.float32), list(smiles))

    def __len__(self) -> int:
        return len(self.smiles)

    def sizes(self) -> np.ndarray:
        """The number of atoms of every molecule. Shapes: (M,)."""
        return np.diff(self.atom_ptr)

    def __getitem__(self, i: int) -> Any:
        from torch_geometric.data import Data

        a0, a1 = int(self.atom_ptr[i]), int(self.atom_ptr[i + 1])
        e0, e1 = int(self.edge_ptr[i]), int(self.edge_ptr[i + 1])
        return Data(
            x=torch.from_numpy(self.atoms[a0:a1]),
            edge_index=torch.from_numpy(self.edges[:, e0:e1]),
            edge_attr=torch.from_numpy(self.edge_attr[e0:e1]),
            y=torch.from_numpy(self.y[i:i + 1]),
            n=a1 - a0,
            smiles=self.smiles[i],
        )


def _to_float(value: Any) -> tuple[float, bool]:
    """``(number, ok)``: NaN for a missing value; ``ok`` is False for a non-numeric one."""
    if value is None:
        return math.nan, True
    if isinstance(value, (bool, np.bool_, int, float, np.integer, np.floating)):
        return float(value), True
    text = str(value).strip()
    if text.lower() in _MISSING:
        return math.nan, True
    try:
        return float(text), True
    except ValueError:
        return math.nan, False


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return bool(np.isnan(value))
    return isinstance(value, str) and value.strip().lower() in _MISSING


def _category(value: Any) -> str:
    """The label of a category: numbers without a needless ``.0``, text stripped."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _category_order(labels: Iterable[str]) -> list[str]:
    labels = set(labels)
    numbers = {}
    for label in labels:
        number, ok = _to_float(label)
        if not ok:
            return sorted(labels)
        numbers[label] = number
    return sorted(labels, key=lambda label: (numbers[label], label))


class MoleculeDataModule(pl.LightningDataModule):
    """Molecule graphs with optional conditions from a CSV/TSV/SMILES/SD file.

    The training file is read once (see :func:`read_molecules`); without ``val_path`` a random
    ``val_fraction`` of its molecules (chosen with ``seed``) validates. The atom vocabulary is
    the training split's atom tokens, most frequent first; validation molecules with other
    tokens are dropped and reported. The read summaries are printed once.

    Conditions are the built-in properties ``qed``, ``logp``, ``mw``, ``sa`` and ``rings``
    (computed with :func:`polydiff_molecules.properties.compute_properties`) or columns of the
    file. A numeric condition is standardised with the training split's mean and standard
    deviation; a categorical one (named in ``categorical``, or any column with a non-numeric
    value) is given as its category index. Missing values are NaN.

    Batches are ``torch_geometric`` batches of :class:`MoleculeGraphs` items: ``x`` (N_total,),
    ``edge_index`` (2, E_total), ``edge_attr`` (E_total,), ``y`` (B, P), ``n`` (B,), ``batch``
    (N_total,) and ``smiles`` (a list of B strings).

    Args:
        path: the training molecules.
        val_path: the validation molecules (default: split off ``path``).
        smiles_column: a table's SMILES column (default: detected by name).
        conditions: condition names, in the order of ``y``'s columns.
        categorical: condition names to treat as categorical even if numeric.
        max_atoms: the most heavy atoms a molecule may have (larger ones are skipped).
        limit: read only the first ``limit`` rows of each file.
        val_fraction: the fraction of ``path``'s molecules that validate when ``val_path`` is
            not given.
        batch_size: molecules per batch.
        num_workers: DataLoader workers.
        seed: the seed of the validation split and of the training shuffle.
        fragments: ``largest`` keeps the largest fragment of salts and mixtures, ``skip`` drops
            them.
    """

    def __init__(
        self,
        path: str,
        val_path: str | None = None,
        smiles_column: str | None = None,
        conditions: list[str] | None = None,
        categorical: list[str] | None = None,
        max_atoms: int | None = None,
        limit: int | None = None,
        val_fraction: float = 0.05,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        fragments: Literal["largest", "skip"] = "largest",
    ):
        super().__init__()
        conditions = list(conditions or [])
        categorical = list(categorical or [])
        repeated = sorted({c for c in conditions if conditions.count(c) > 1})
        if repeated:
            raise ValueError(f"conditions name {', '.join(map(repr, repeated))} more than once")
        stray = [c for c in categorical if c not in conditions]
        if stray:
            raise ValueError(f"categorical names {', '.join(map(repr, stray))}, which are not among the conditions "
                             f"({', '.join(conditions) or 'none'})")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if max_atoms is not None and max_atoms < 1:
            raise ValueError(f"max_atoms must be positive, got {max_atoms}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        if fragments not in ("largest", "skip"):
            raise ValueError(f"fragments must be 'largest' or 'skip', got {fragments!r}")
        self.path, self.val_path, self.smiles_column = str(path), val_path and str(val_path), smiles_column
        self.conditions, self.categorical = conditions, categorical
        self.max_atoms, self.limit, self.val_fraction = max_atoms, limit, float(val_fraction)
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)
        self.fragments = fragments
        self.datasets: dict[str, MoleculeGraphs] = {}
        self._info: dict[str, Any] | None = None

    # --- setup ---
    def _read(self, path: str, columns: list[str]) -> MoleculeTable:
        table = read_molecules(path, smiles_column=self.smiles_column, columns=columns, fragments=self.fragments,
                               max_atoms=self.max_atoms, limit=self.limit)
        print(f"{Path(path).name}: {table.summary()}", flush=True)
        return table

    def setup(self, stage: str | None = None) -> None:
        if self._info is not None:
            return
        from .properties import PROPERTIES, compute_properties

        file_columns = [c for c in self.conditions if c not in PROPERTIES]
        table = self._read(self.path, file_columns)
        records = table.records
        if self.val_path is not None:
            train, val = records, self._read(self.val_path, file_columns).records
        else:
            train, val = self._split(records)
        if not train:
            raise ValueError(f"{self.path}: no usable molecule in the training split ({table.summary()})")

        train_graphs = [r.tokens_and_bonds() for r in train]
        counts = Counter(t for tokens, _ in train_graphs for t in tokens)
        vocab = sorted(counts, key=lambda t: (-counts[t], t))
        index = {t: i for i, t in enumerate(vocab)}
        val_graphs, kept, unknown = [], [], Counter()
        for record in val:
            graph = record.tokens_and_bonds()
            strange = [t for t in graph[0] if t not in index]
            if strange:
                unknown.update(set(strange))
                continue
            val_graphs.append(graph)
            kept.append(record)
        if len(kept) < len(val):
            print(f"validation: dropped {len(val) - len(kept)} molecules with atom types not in the training split "
                  f"({', '.join(sorted(unknown))})", flush=True)
        val = kept

        builtin = [c for c in self.conditions if c in PROPERTIES]
        raw_train: dict[str, list[Any]] = {}
        raw_val: dict[str, list[Any]] = {}
        if builtin:
            for raw, recs in ((raw_train, train), (raw_val, val)):
                computed = compute_properties([r.mol for r in recs], builtin)
                raw.update({c: computed[c].tolist() for c in builtin})
        for c in file_columns:
            raw_train[c] = [r.values.get(c) for r in train]
            raw_val[c] = [r.values.get(c) for r in val]
        specs, y_train, y_val = [], [], []
        for name in self.conditions:
            spec, a, b = self._condition(name, raw_train[name], raw_val[name])
            specs.append(spec)
            y_train.append(a)
            y_val.append(b)
        y_train_array = np.stack(y_train, axis=1) if y_train else np.zeros((len(train), 0), np.float32)
        y_val_array = np.stack(y_val, axis=1) if y_val else np.zeros((len(val), 0), np.float32)

        self.datasets = {
            "train": MoleculeGraphs.build(train_graphs, index, y_train_array, [r.smiles for r in train]),
            "val": MoleculeGraphs.build(val_graphs, index, y_val_array, [r.smiles for r in val]),
        }
        self._info = self._statistics(self.datasets["train"], vocab)
        self._info["conditions"] = specs
        self._info["source"] = Path(self.path).name

    def _split(self, records: list[MolRecord]) -> tuple[list[MolRecord], list[MolRecord]]:
        n = len(records)
        n_val = int(round(n * self.val_fraction))
        if self.val_fraction > 0 and n >= 2:
            n_val = min(max(n_val, 1), n - 1)
        chosen = np.zeros(n, dtype=bool)
        chosen[np.random.default_rng(self.seed).permutation(n)[:n_val]] = True
        return [r for r, c in zip(records, chosen) if not c], [r for r, c in zip(records, chosen) if c]

    def _condition(self, name: str, train: list[Any], val: list[Any]) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        """The condition's description and its encoded training and validation values."""
        categorical = name in self.categorical
        if not categorical:
            converted = [_to_float(v) for v in (*train, *val)]
            odd = next((v for v, (_, ok) in zip((*train, *val), converted) if not ok), None)
            if odd is not None:
                categorical = True
        if categorical:
            labels = [None if _is_missing(v) else _category(v) for v in train]
            categories = _category_order(label for label in labels if label is not None)
            if not categories:
                raise ValueError(f"{self.path}: condition {name!r} has no value in the training split")
            where = {c: float(i) for i, c in enumerate(categories)}
            encode = np.array([where.get(label, math.nan) if label is not None else math.nan for label in labels],
                              dtype=np.float32)
            val_labels = [None if _is_missing(v) else _category(v) for v in val]
            unseen = sorted({label for label in val_labels if label is not None and label not in where})
            if unseen:
                print(f"validation: condition {name!r} has categories not in the training split "
                      f"({', '.join(unseen[:_MAX_LISTED])}); they are given as missing", flush=True)
            encode_val = np.array([where.get(label, math.nan) if label is not None else math.nan
                                   for label in val_labels], dtype=np.float32)
            if name not in self.categorical:
                print(f"condition {name!r} is categorical (non-numeric values such as {odd!r}): "
                      f"{len(categories)} categories", flush=True)
            return {"name": name, "kind": "categorical", "categories": categories}, encode, encode_val
        values = np.array([v for v, _ in converted[:len(train)]], dtype=np.float64)
        val_values = np.array([v for v, _ in converted[len(train):]], dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            raise ValueError(f"{self.path}: condition {name!r} has no value in the training split")
        mean, std = float(finite.mean()), float(finite.std())
        if not std > 1e-12:
            std = 1.0
        spec = {"name": name, "kind": "numeric", "mean": mean, "std": std, "min": float(finite.min()),
                "max": float(finite.max())}
        return spec, ((values - mean) / std).astype(np.float32), ((val_values - mean) / std).astype(np.float32)

    @staticmethod
    def _statistics(data: MoleculeGraphs, vocab: list[str]) -> dict[str, Any]:
        """The marginals of the training graphs (see :meth:`info`)."""
        k = len(vocab)
        sizes = data.sizes()
        types = data.atoms
        atom_counts = np.bincount(types, minlength=k).astype(np.float64)
        atom_marginals = atom_counts / atom_counts.sum()
        # pair_counts[a, b]: over atoms of type a, the number of other atoms of the same
        # molecule they share a pair of class b with. Every pair counts once per endpoint.
        pair_counts = np.zeros((k, len(BOND_TYPES)), dtype=np.float64)
        mol_of_edge = np.repeat(np.arange(len(data)), np.diff(data.edge_ptr))
        src = data.edges[0] + data.atom_ptr[:-1][mol_of_edge]
        np.add.at(pair_counts, (types[src], data.edge_attr), 1.0)
        degree = np.bincount(src, minlength=len(types))
        unbonded = np.repeat(sizes, sizes) - 1 - degree
        pair_counts[:, 0] += np.bincount(types, weights=unbonded, minlength=k)
        totals = pair_counts.sum(axis=0)
        if totals.sum() > 0:
            bond_marginals = totals / totals.sum()
        else:  # only single atoms: no pair to count
            bond_marginals = np.eye(len(BOND_TYPES))[0]
        row_sums = pair_counts.sum(axis=1, keepdims=True)
        bond_given_atom = np.where(row_sums > 0, pair_counts / np.maximum(row_sums, 1e-300), bond_marginals)
        col_sums = pair_counts.sum(axis=0, keepdims=True)
        atom_given_bond = np.where(col_sums > 0, pair_counts / np.maximum(col_sums, 1e-300),
                                   atom_marginals[:, None]).T
        max_n = int(sizes.max())
        num_atoms = np.bincount(sizes, minlength=max_n + 1) / len(sizes)
        return {
            "atom_types": list(vocab),
            "bond_types": list(BOND_TYPES),
            "atom_marginals": atom_marginals.tolist(),
            "bond_marginals": bond_marginals.tolist(),
            "bond_given_atom": bond_given_atom.tolist(),
            "atom_given_bond": atom_given_bond.tolist(),
            "num_atoms": num_atoms.tolist(),
            "max_atoms": max_n,
            "train_size": len(data),
        }

    # --- results ---
    def info(self) -> dict[str, Any]:
        """Plain data (lists, floats, ints, strings) a model keeps in its checkpoint.

        Keys: ``atom_types`` (K_a tokens), ``bond_types`` (none/single/double/triple),
        ``atom_marginals`` (K_a), ``bond_marginals`` (4, over unordered pairs of distinct atoms
        of a molecule, class 0 = not bonded), ``bond_given_atom`` (K_a x 4: the class of the
        pairs an atom of each type is in), ``atom_given_bond`` (4 x K_a: the types of the
        endpoints of pairs of each class, both counted), ``num_atoms`` (max_atoms + 1: the
        probability of each number of heavy atoms), ``max_atoms``, ``conditions`` (one dict per
        condition: ``name``, ``kind`` and either ``mean``, ``std``, ``min``, ``max`` or
        ``categories``), ``train_size`` and ``source`` (the training file's name). Rows without
        data take the marginal distribution.
        """
        self.setup()
        return dict(self._info)

    def train_smiles(self) -> list[str]:
        """Canonical SMILES of the training split (the reference for novelty)."""
        self.setup()
        return list(self.datasets["train"].smiles)

    def _loader(self, split: str, shuffle: bool) -> Any:
        from torch_geometric.loader import DataLoader

        self.setup()
        data = self.datasets[split]
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(data, batch_size=self.batch_size, shuffle=shuffle, generator=generator,
                          drop_last=shuffle and len(data) >= self.batch_size, num_workers=self.num_workers)

    def train_dataloader(self) -> Any:
        return self._loader("train", True)

    def val_dataloader(self) -> Any:
        return self._loader("val", False)
