"""A small drug-like training set from the example molecules RDKit ships, for demos and tests.

RDKit's installation carries a few thousand molecules in its data and Contrib folders: the
WEHI screening set of the PAINS filters, the first 5000 and first 200 structures of the NCI
open database, a ChEMBL series used by the Free-Wilson example, and EGFR and CDK2 ligand sets.
:func:`build_demo_data` standardises them as the plugin does any file (organic heavy atoms,
largest fragment, at most ``max_atoms`` heavy atoms), removes duplicates by canonical SMILES
(the first source that has a molecule keeps it), shuffles them and writes a training and a
test table with the five built-in properties, so conditional generation can be tried without
downloading anything. Files missing from a particular RDKit build are skipped and named.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np

from .chem import ORGANIC_ELEMENTS
from .data import MoleculeTable, molecules_from_smiles, read_molecules

__all__ = ["DEMO_SOURCES", "PROPERTY_COLUMNS", "build_demo_data"]

#: ``(name, folder, path within it)``; folder ``data`` is ``RDConfig.RDDataDir``, ``contrib``
#: is ``RDConfig.RDContribDir``.
DEMO_SOURCES: tuple[tuple[str, str, str], ...] = (
    ("wehi_mols", "data", "Pains/test_data/wehi_mols.csv"),
    ("nci_first_5K", "data", "NCI/first_5K.smi"),
    ("nci_first_200", "data", "NCI/first_200.props.sdf"),
    ("chembl2321810", "contrib", "FreeWilson/data/CHEMBL2321810.smi"),
    ("egfr", "contrib", "PBF/testData/egfr.sdf"),
    ("cdk2", "contrib", "Fastcluster/testdata/cdk2.sdf"),
)
PROPERTY_COLUMNS = ("qed", "logp", "mw", "sa", "rings")


def _folder(kind: str) -> Path:
    from rdkit import RDConfig

    return Path(RDConfig.RDDataDir if kind == "data" else RDConfig.RDContribDir)


def _read_source(path: Path, max_atoms: int, limit: int | None) -> MoleculeTable:
    if path.suffix.lower() == ".csv":  # wehi_mols.csv: no header, "SMILES","id" per line
        with open(path, newline="", encoding="utf-8", errors="replace") as handle:
            smiles = [row[0] if row else "" for row in csv.reader(handle)]
        if limit is not None:
            smiles = smiles[:limit]
        table = molecules_from_smiles(smiles, source=str(path), allowed_elements=ORGANIC_ELEMENTS,
                                      max_atoms=max_atoms)
        table.rows = len(smiles)
        return table
    return read_molecules(path, allowed_elements=ORGANIC_ELEMENTS, max_atoms=max_atoms, limit=limit)


def build_demo_data(
    out: str | Path,
    *,
    max_atoms: int = 30,
    test_fraction: float = 0.1,
    seed: int = 0,
    overwrite: bool = False,
    limit: int | None = None,
) -> dict[str, Any]:
    """Write ``out/train.csv`` and ``out/test.csv`` from the molecules RDKit ships.

    Columns: ``smiles`` (canonical, no stereochemistry), ``source`` (the name in
    :data:`DEMO_SOURCES`) and the properties ``qed``, ``logp``, ``mw``, ``sa`` and ``rings``
    (see :mod:`polydiff_molecules.properties`).

    Args:
        out: the folder (created if needed).
        max_atoms: the most heavy atoms a molecule may have.
        test_fraction: the fraction of the (shuffled, deduplicated) molecules in the test file.
        seed: the shuffle's seed.
        overwrite: replace existing ``train.csv`` / ``test.csv``.
        limit: read only the first ``limit`` molecules of each source (for quick tests).

    Returns:
        ``sources``: per source name its ``file`` (relative to its RDKit folder), ``read``
        (rows), ``molecules`` (that passed standardisation), ``new`` (not seen in an earlier
        source), ``duplicates``, ``rejected`` and ``reasons`` (rejections by kind);
        ``missing``: the source files this RDKit lacks; ``train``, ``test``, ``total``:
        molecules written; ``max_atoms``; ``seconds``: ``read`` (reading and standardising)
        and ``total`` (with the properties); ``files``: the two paths.

    Raises:
        ValueError: ``train.csv`` or ``test.csv`` exists and ``overwrite`` is False, a
            fraction is out of range, or no source file is found.
    """
    import pandas as pd

    from .properties import compute_properties

    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must lie in [0, 1), got {test_fraction}")
    out = Path(out)
    paths = {"train": out / "train.csv", "test": out / "test.csv"}
    for path in paths.values():
        if path.exists() and not overwrite:
            raise ValueError(f"{path} exists; pass overwrite=True to replace it")
    start = time.perf_counter()
    sources: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    seen: set[str] = set()
    smiles, names, mols = [], [], []
    for name, folder, relative in DEMO_SOURCES:
        path = _folder(folder) / relative
        if not path.is_file():
            missing.append(f"{folder}/{relative}")
            continue
        table = _read_source(path, max_atoms, limit)
        new = 0
        for record in table.records:
            if record.smiles in seen:
                continue
            seen.add(record.smiles)
            smiles.append(record.smiles)
            names.append(name)
            mols.append(record.mol)
            new += 1
        reasons: dict[str, int] = {}
        for problem in table.problems:
            reasons[problem.kind] = reasons.get(problem.kind, 0) + 1
        sources[name] = {"file": relative, "read": table.rows, "molecules": len(table.records), "new": new,
                         "duplicates": len(table.records) - new, "rejected": len(table.problems), "reasons": reasons}
    if not sources:
        raise ValueError(f"none of RDKit's example molecule files was found (looked for {', '.join(missing)})")
    read_seconds = time.perf_counter() - start
    order = np.random.default_rng(seed).permutation(len(smiles))
    values = compute_properties([mols[i] for i in order], PROPERTY_COLUMNS)
    frame = pd.DataFrame({"smiles": [smiles[i] for i in order], "source": [names[i] for i in order],
                          **{c: values[c] for c in PROPERTY_COLUMNS}})
    frame["rings"] = frame["rings"].astype("Int64")
    n_test = int(round(len(frame) * test_fraction))
    out.mkdir(parents=True, exist_ok=True)
    frame.iloc[n_test:].to_csv(paths["train"], index=False, float_format="%.6g")
    frame.iloc[:n_test].to_csv(paths["test"], index=False, float_format="%.6g")
    return {
        "sources": sources,
        "missing": missing,
        "train": len(frame) - n_test,
        "test": n_test,
        "total": len(frame),
        "max_atoms": max_atoms,
        "seconds": {"read": round(read_seconds, 2), "total": round(time.perf_counter() - start, 2)},
        "files": {k: str(v) for k, v in paths.items()},
    }
