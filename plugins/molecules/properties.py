"""Molecular properties used as generation conditions and for evaluation.

Five built-in properties, each computed by RDKit:

- ``qed``: quantitative estimate of drug-likeness (Bickerton et al. 2012, "Quantifying the
  chemical beauty of drugs"), in [0, 1]; ``rdkit.Chem.QED.qed`` with its default weights.
- ``logp``: octanol/water partition coefficient by Crippen's atom contributions (Wildman &
  Crippen 1999, "Prediction of physicochemical parameters by atomic contributions");
  ``Crippen.MolLogP``.
- ``mw``: average molecular weight in g/mol, implicit hydrogens included; ``Descriptors.MolWt``.
- ``sa``: synthetic accessibility score (Ertl & Schuffenhauer 2009, "Estimation of synthetic
  accessibility score of drug-like molecules based on molecular complexity and fragment
  contributions"), from 1 (easy to make) to 10 (very hard); the reference implementation RDKit
  ships in ``Contrib/SA_Score/sascorer.py``, loaded from there by file path once and cached.
- ``rings``: number of rings of the smallest set of smallest rings;
  ``rdMolDescriptors.CalcNumRings``.

Every property is computed on a sanitised copy of the molecule, so aromaticity is perceived
again: a kekulised molecule whose aromatic flags were cleared (as the plugin stores them) gets
the same values as its aromatic form. A molecule that is ``None``, fails sanitisation or makes
a descriptor raise gets NaN; the input molecules are never modified.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from collections.abc import Callable, Sequence
from types import ModuleType

import numpy as np
from rdkit import Chem

__all__ = ["PROPERTIES", "compute_properties", "sa_scorer"]

PROPERTIES: dict[str, str] = {
    "qed": "quantitative estimate of drug-likeness (Bickerton et al. 2012), 0 to 1, higher is more drug-like",
    "logp": "Crippen octanol/water partition coefficient logP (Wildman & Crippen 1999)",
    "mw": "average molecular weight in g/mol, hydrogens included",
    "sa": "synthetic accessibility score (Ertl & Schuffenhauer 2009), 1 (easy) to 10 (hard)",
    "rings": "number of rings (smallest set of smallest rings)",
}


@functools.lru_cache(maxsize=1)
def sa_scorer() -> ModuleType:
    """The SA-score module RDKit ships in ``Contrib/SA_Score/sascorer.py``, loaded once.

    Returns:
        The module; its ``calculateScore(mol)`` gives the SA score of a sanitised molecule.

    Raises:
        FileNotFoundError: if the RDKit installation has no ``Contrib/SA_Score/sascorer.py``
            (some minimal builds leave the Contrib folder out).
    """
    from rdkit import RDConfig

    path = os.path.join(RDConfig.RDContribDir, "SA_Score", "sascorer.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"the SA score needs RDKit's Contrib/SA_Score/sascorer.py, which this RDKit installation "
            f"lacks (looked for {path}); install an RDKit build that ships the Contrib folder (the "
            "'rdkit' wheel on PyPI does), or leave 'sa' out of the requested properties"
        )
    spec = importlib.util.spec_from_file_location("polydiff_molecules._sascorer", path)
    if spec is None or spec.loader is None:  # pragma: no cover - only for an unreadable file
        raise FileNotFoundError(f"could not load the SA scorer from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _qed(mol: Chem.Mol) -> float:
    from rdkit.Chem import QED

    return QED.qed(mol)


def _logp(mol: Chem.Mol) -> float:
    from rdkit.Chem import Crippen

    return Crippen.MolLogP(mol)


def _mw(mol: Chem.Mol) -> float:
    from rdkit.Chem import Descriptors

    return Descriptors.MolWt(mol)


def _sa(mol: Chem.Mol) -> float:
    return sa_scorer().calculateScore(mol)


def _rings(mol: Chem.Mol) -> float:
    from rdkit.Chem import rdMolDescriptors

    return float(rdMolDescriptors.CalcNumRings(mol))


_FUNCTIONS: dict[str, Callable[[Chem.Mol], float]] = {
    "qed": _qed,
    "logp": _logp,
    "mw": _mw,
    "sa": _sa,
    "rings": _rings,
}


def _sanitized_copy(mol: Chem.Mol | None) -> Chem.Mol | None:
    """A sanitised copy of ``mol`` (aromaticity perceived again), or None if that fails."""
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    copy = Chem.Mol(mol)
    try:
        Chem.SanitizeMol(copy)
    except Exception:  # RDKit raises several types (valence, kekulisation, ring errors)
        return None
    return copy


def compute_properties(mols: Sequence[Chem.Mol | None], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Properties of molecules by name (see :data:`PROPERTIES`).

    Args:
        mols: the molecules; ``None`` entries (invalid molecules) are allowed.
        names: property names among ``qed``, ``logp``, ``mw``, ``sa``, ``rings``.

    Returns:
        One float64 array per requested name, in the order of ``names``; NaN for ``None``
        molecules, molecules that fail sanitisation, and descriptor failures.

    Raises:
        KeyError: for an unknown property name (the message lists the valid names).
        FileNotFoundError: if ``sa`` is requested and RDKit's SA scorer is missing.

    Shapes:
        mols: (M,); every returned array: (M,).
    """
    if isinstance(names, str):
        names = [names]
    unknown = [name for name in names if name not in _FUNCTIONS]
    if unknown:
        raise KeyError(
            f"unknown propert{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}; "
            f"valid names: {', '.join(PROPERTIES)}"
        )
    if "sa" in names:
        sa_scorer()  # fail early and clearly, before any molecule is processed
    functions = [(name, _FUNCTIONS[name]) for name in dict.fromkeys(names)]
    out = {name: np.full(len(mols), np.nan, dtype=np.float64) for name, _ in functions}
    for i, mol in enumerate(mols):
        clean = _sanitized_copy(mol)
        if clean is None:
            continue
        for name, function in functions:
            try:
                value = float(function(clean))
            except Exception:  # a descriptor failing on one odd molecule gives NaN, not a crash
                continue
            out[name][i] = value if math.isfinite(value) else np.nan
    return out
