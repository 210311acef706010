"""Molecules as heavy-atom graphs with categorical atoms and bonds, and back.

The models of this plugin see a molecule the way DiGress does (Vignac et al. 2023, "DiGress:
Discrete Denoising diffusion for Graph Generation"): a graph whose nodes are the heavy atoms and
whose edges carry a bond class. Hydrogens are implicit; RDKit's default valence model gives
them back when a graph becomes a molecule again.

- **Atom tokens** are the element symbol plus the formal charge when it is not zero: ``"C"``,
  ``"N+"``, ``"O-"``, ``"S+2"``. Charged atoms are tokens of their own, so nitro groups
  (``[N+](=O)[O-]``), ammonium ions and zwitterions are representable.
- **Bond classes** are fixed: 0 none, 1 single, 2 double, 3 triple (:data:`BOND_TYPES`).
  Molecules are kekulised first, so aromatic rings are alternating single and double bonds,
  and aromaticity is perceived again when a generated graph is sanitised.
- **Canonical SMILES** are RDKit's without stereochemistry or isotopes
  (``Chem.MolToSmiles(mol, isomericSmiles=False)``); stereo is not modelled.

:func:`standardize` decides whether a molecule can be learnt from: it keeps the largest
fragment of a salt or mixture, rejects elements outside the allowed set and radicals, and
checks that the molecule's graph gives the very same molecule back (an atom whose hydrogen count
differs from its default valence, such as ``[PH5]``, cannot be told apart in the graph and is
rejected with a note saying so).

Graphs come out as torch tensors (:func:`mol_to_graph`) and go back in as any (n, n) matrix of
bond classes (:func:`graph_to_mol`).
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from rdkit import Chem, rdBase

__all__ = [
    "ORGANIC_ELEMENTS", "BOND_TYPES", "atom_token", "parse_token", "canonical_smiles", "mol_to_graph",
    "graph_to_mol", "sanitize", "standardize", "quiet_rdkit",
]

#: Heavy elements accepted by default: the organic subset of SMILES plus silicon.
ORGANIC_ELEMENTS: tuple[str, ...] = ("B", "C", "N", "O", "F", "Si", "P", "S", "Cl", "Br", "I")

#: Bond classes, by index: 0 none, 1 single, 2 double, 3 triple.
BOND_TYPES: tuple[str, ...] = ("none", "single", "double", "triple")

_RDKIT_BONDS = (None, Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE)
_BOND_CLASS = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3}
_TOKEN = re.compile(r"^([A-Z][a-z]?)(?:([+-])(\d*))?$")


@contextlib.contextmanager
def quiet_rdkit() -> Iterator[None]:
    """Silence RDKit's own logging (parse errors, valence warnings) inside the block.

    The previous state of every RDKit log level is restored on exit, so a caller that had
    enabled or disabled logging keeps its choice.
    """
    blocker = rdBase.BlockLogs()
    try:
        yield
    finally:
        del blocker


@functools.lru_cache(maxsize=1)
def _elements() -> frozenset[str]:
    table = Chem.GetPeriodicTable()
    return frozenset(table.GetElementSymbol(z) for z in range(1, 119))


def atom_token(atom: Chem.Atom) -> str:
    """The token of an atom: its element symbol plus its formal charge when not zero.

    Examples: ``C``, ``N+`` (charge +1), ``O-`` (charge -1), ``S+2``, ``N-2``.
    """
    charge = atom.GetFormalCharge()
    symbol = atom.GetSymbol()
    if charge == 0:
        return symbol
    sign = "+" if charge > 0 else "-"
    return f"{symbol}{sign}{abs(charge)}" if abs(charge) > 1 else f"{symbol}{sign}"


@functools.lru_cache(maxsize=512)
def parse_token(token: str) -> tuple[str, int]:
    """The element symbol and formal charge of an atom token (the inverse of :func:`atom_token`).

    Raises:
        ValueError: if the token is not an element symbol optionally followed by ``+``, ``-``,
            ``+k`` or ``-k``.
    """
    match = _TOKEN.match(str(token))
    if match is None or match.group(1) not in _elements():
        raise ValueError(f"unknown atom token {token!r}: expected an element symbol with an optional charge "
                         "such as 'C', 'N+', 'O-' or 'S+2'")
    symbol, sign, magnitude = match.groups()
    if sign is None:
        return symbol, 0
    if magnitude in ("0", "1") or (magnitude and magnitude.startswith("0")):
        raise ValueError(f"unknown atom token {token!r}: a charge of one is written '+' or '-', none at all for 0")
    size = int(magnitude) if magnitude else 1
    return symbol, size if sign == "+" else -size


def canonical_smiles(mol: Chem.Mol) -> str:
    """RDKit's canonical SMILES of ``mol`` without stereochemistry or isotopes.

    A copy is sanitised first, so a kekulised molecule whose aromatic flags were cleared (as
    :func:`standardize` returns them) gives the same aromatic SMILES as its sanitised form. A
    molecule that fails sanitisation is written as it is (a generated graph with a bad valence
    still has a SMILES).
    """
    copy = Chem.Mol(mol)
    with quiet_rdkit():
        try:
            Chem.SanitizeMol(copy)
        except Exception:  # impossible valences and the like: write the molecule as given
            copy = Chem.Mol(mol)  # a fresh copy: sanitisation may have stopped half-way
            try:
                copy.UpdatePropertyCache(strict=False)
            except Exception:
                pass
    return Chem.MolToSmiles(copy, isomericSmiles=False)


@functools.lru_cache(maxsize=None)
def _query(smarts: str) -> Chem.Mol:
    return Chem.MolFromSmarts(smarts)


def _kekule(mol: Chem.Mol) -> Chem.Mol:
    """``mol`` itself when it has no aromatic bond, else a kekulised copy (aromatic flags cleared)."""
    if mol.HasSubstructMatch(_query("*:*")):
        mol = Chem.Mol(mol)
        Chem.Kekulize(mol, clearAromaticFlags=True)
    return mol


def _atoms(mol: Chem.Mol) -> list[Chem.Atom]:
    """The atoms of ``mol`` as a list (indexing is several times faster than RDKit's iterator)."""
    return [mol.GetAtomWithIdx(i) for i in range(mol.GetNumAtoms())]


def _bond_error(mol: Chem.Mol) -> ValueError:
    """The error naming the first bond that is not single, double or triple."""
    for k in range(mol.GetNumBonds()):
        bond = mol.GetBondWithIdx(k)
        if bond.GetBondType() not in _BOND_CLASS:
            return ValueError(f"unsupported bond type {bond.GetBondType()} between atoms {bond.GetBeginAtomIdx()} "
                              f"and {bond.GetEndAtomIdx()} (only single, double and triple bonds are modelled)")
    return ValueError("unsupported bonds (only single, double and triple bonds are modelled)")


def _bond_array(mol: Chem.Mol) -> np.ndarray:
    """The bonds ``(i, j, class)`` with ``i < j`` of a kekulised molecule, as an int64 array (m, 3).

    Raises:
        ValueError: for a bond that is not single, double or triple (dative, ionic, aromatic...).
    """
    if mol.GetNumBonds() == 0:
        return np.zeros((0, 3), dtype=np.int64)
    orders = Chem.GetAdjacencyMatrix(mol, useBO=True)
    rows, cols = np.nonzero(orders)
    upper = rows < cols
    out = np.empty((int(upper.sum()), 3), dtype=np.int64)
    out[:, 0], out[:, 1] = rows[upper], cols[upper]
    classes = orders[out[:, 0], out[:, 1]]
    out[:, 2] = classes
    # Aromatic (1.5), dative (one-sided), zero-order, ionic and higher bonds all fail one of these.
    if len(out) != mol.GetNumBonds() or (orders != orders.T).any() or (out[:, 2] != classes).any() \
            or (classes > 3).any():
        raise _bond_error(mol)
    return out


def _graph_lists(mol: Chem.Mol) -> tuple[list[str], np.ndarray]:
    """Atom tokens and the bond array (see :func:`_bond_array`) of a kekulised molecule."""
    return [atom_token(atom) for atom in _atoms(mol)], _bond_array(mol)


def _edge_tensors(bonds: np.ndarray, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both directions of every bond, sorted by (source, target), and their classes."""
    array = np.asarray(bonds, dtype=np.int64).reshape(-1, 3)
    src = np.concatenate([array[:, 0], array[:, 1]])
    dst = np.concatenate([array[:, 1], array[:, 0]])
    cls = np.concatenate([array[:, 2], array[:, 2]])
    order = np.argsort(src * max(n, 1) + dst, kind="stable")
    return torch.from_numpy(np.stack([src[order], dst[order]])), torch.from_numpy(cls[order])


def mol_to_graph(
    mol: Chem.Mol, vocab: Sequence[str] | Mapping[str, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The graph of a molecule: atom classes, bonds in both directions and bond classes.

    An aromatic molecule is kekulised (on a copy) first. Hydrogen atoms that are nodes of
    ``mol`` are treated like any atom (token ``H``); remove them first (see :func:`standardize`).

    Args:
        mol: the molecule.
        vocab: the atom tokens, in class order (or a mapping token -> class).

    Returns:
        ``atoms`` long (n,) the class of each atom; ``edge_index`` long (2, 2m) with every bond
        in both directions, sorted by source then target; ``edge_attr`` long (2m,) the bond
        classes 1 (single), 2 (double) or 3 (triple).

    Raises:
        ValueError: for an atom whose token is not in ``vocab`` (named in the message) or a bond
            that is not single, double or triple.

    Shapes:
        atoms (n,), edge_index (2, 2m), edge_attr (2m,) for n atoms and m bonds.
    """
    index = vocab if isinstance(vocab, Mapping) else {token: i for i, token in enumerate(vocab)}
    tokens, bonds = _graph_lists(_kekule(mol))
    try:
        atoms = torch.tensor([index[token] for token in tokens], dtype=torch.long)
    except KeyError:
        unknown = sorted({t for t in tokens if t not in index})
        raise ValueError(f"atom type{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} not in the "
                         f"vocabulary ({', '.join(index)})") from None
    edge_index, edge_attr = _edge_tensors(bonds, len(tokens))
    return atoms, edge_index, edge_attr


def _build(tokens: Sequence[str], bonds: Any) -> Chem.RWMol:
    mol = Chem.RWMol()
    for token in tokens:
        symbol, charge = parse_token(token)
        atom = Chem.Atom(symbol)
        atom.SetFormalCharge(charge)
        atom.SetNoImplicit(False)
        atom.SetNumExplicitHs(0)
        mol.AddAtom(atom)
    for i, j, cls in bonds:
        mol.AddBond(int(i), int(j), _RDKIT_BONDS[int(cls)])
    return mol


def graph_to_mol(atom_tokens: Sequence[str], bonds: Any) -> Chem.RWMol:
    """The (unsanitised) molecule of a graph.

    Every atom gets its element and formal charge and no explicit hydrogens; RDKit fills in
    implicit hydrogens from its default valences when the molecule is sanitised (see
    :func:`sanitize`). Nothing is checked chemically here: generated graphs with impossible
    valences still give a molecule, which then fails sanitisation.

    Args:
        atom_tokens: the token of each atom (see :func:`atom_token`).
        bonds: the symmetric matrix of bond classes (0 none, 1 single, 2 double, 3 triple), as a
            tensor, array or nested lists; the diagonal is ignored.

    Returns:
        An ``RWMol`` with the atoms in the given order.

    Raises:
        ValueError: for an unknown token, a matrix of the wrong shape, an asymmetric matrix or
            a class outside 0..3.

    Shapes:
        atom_tokens (n,), bonds (n, n).
    """
    if isinstance(bonds, torch.Tensor):
        bonds = bonds.detach().cpu().numpy()
    matrix = np.asarray(bonds)
    n = len(atom_tokens)
    if matrix.size == 0 and n == 0:
        matrix = np.zeros((0, 0), dtype=np.int64)
    if matrix.shape != (n, n):
        raise ValueError(f"bonds must be a ({n}, {n}) matrix for {n} atoms, got shape {matrix.shape}")
    matrix = matrix.astype(np.int64, copy=False)
    if not np.array_equal(matrix, matrix.T):
        raise ValueError("the bond matrix is not symmetric")
    upper = np.triu(matrix, 1)
    if upper.min(initial=0) < 0 or upper.max(initial=0) >= len(BOND_TYPES):
        raise ValueError(f"bond classes must lie in 0..{len(BOND_TYPES) - 1}, got {upper.min()}..{upper.max()}")
    rows, cols = np.nonzero(upper)
    return _build(atom_tokens, list(zip(rows.tolist(), cols.tolist(), upper[rows, cols].tolist())))


def sanitize(mol: Chem.Mol | None) -> tuple[Chem.Mol | None, str | None]:
    """A sanitised copy of ``mol`` (valences checked, aromaticity perceived), or the reason it fails.

    Never raises and never modifies ``mol``; RDKit's log stays quiet.

    Returns:
        ``(copy, None)`` on success, ``(None, error text)`` on failure (``"no molecule"`` for
        ``None``).
    """
    if mol is None:
        return None, "no molecule"
    copy = Chem.Mol(mol)
    with quiet_rdkit():
        try:
            Chem.SanitizeMol(copy)
        except Exception as exc:  # RDKit raises valence, kekulisation and ring errors of several types
            return None, _first_line(exc)
    return copy, None


_H_PARAMS: Chem.RemoveHsParameters | None = None


def _remove_hs(mol: Chem.Mol) -> Chem.Mol:
    """``mol`` without hydrogen atoms (isotopic ones included) where they can become implicit."""
    global _H_PARAMS
    if mol.GetNumHeavyAtoms() == mol.GetNumAtoms():
        return mol
    if _H_PARAMS is None:
        _H_PARAMS = Chem.RemoveHsParameters()
        _H_PARAMS.removeIsotopes = True
        _H_PARAMS.removeDefiningBondStereo = True
        _H_PARAMS.showWarnings = False
    with quiet_rdkit():
        return Chem.RemoveHs(mol, _H_PARAMS, sanitize=True)


def _standardize(
    mol: Chem.Mol | None,
    fragments: str = "largest",
    allowed_elements: Sequence[str] | frozenset[str] = ORGANIC_ELEMENTS,
    max_atoms: int | None = None,
    *,
    copy: bool = True,
) -> tuple[Chem.Mol | None, str | None, str | None, str | None, tuple[list[str], np.ndarray] | None]:
    """:func:`standardize` plus the canonical SMILES, a kind of note for summaries and the graph.

    Args:
        copy: ``False`` lets the function modify ``mol`` (a molecule the caller just parsed).

    Returns:
        ``(mol, smiles, note, kind, graph)``; graph is ``(tokens, bonds)`` as
        :func:`_graph_lists` gives it (``None`` for a rejected molecule); kind is ``"fragments"`` for a kept molecule reduced to its
        largest fragment, one of ``"elements"``, ``"size"``, ``"fragments"``, ``"radicals"``,
        ``"graph"``, ``"empty"``, ``"invalid"`` for a rejected one, ``None`` otherwise.
    """
    if fragments not in ("largest", "skip"):
        raise ValueError(f"fragments must be 'largest' or 'skip', got {fragments!r}")
    if mol is None:
        return None, None, "no molecule", "invalid", None
    if copy:
        mol = Chem.Mol(mol)
    try:
        mol = _remove_hs(mol)
    except Exception as exc:
        return None, None, f"could not remove hydrogens: {_first_line(exc)}", "invalid", None
    note = None
    pieces = Chem.GetMolFrags(mol)
    if len(pieces) > 1:
        if fragments == "skip":
            return None, None, f"{len(pieces)} fragments (a salt or mixture)", "fragments", None
        best = max(range(len(pieces)),
                   key=lambda k: (len(pieces[k]), sum(mol.GetAtomWithIdx(i).GetAtomicNum() for i in pieces[k])))
        with quiet_rdkit():
            try:
                mol = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=True)[best]
            except Exception as exc:
                return None, None, f"its largest fragment fails sanitisation: {_first_line(exc)}", "invalid", None
        note = f"kept the largest of {len(pieces)} fragments"
    atoms = _atoms(mol)
    symbols = [atom.GetSymbol() for atom in atoms]
    if not atoms or all(symbol == "H" for symbol in symbols):
        return None, None, "no heavy atoms", "empty", None
    bad = sorted(set(symbols).difference(allowed_elements))
    if bad:
        return None, None, f"unsupported element{'s' if len(bad) > 1 else ''} {', '.join(bad)}", "elements", None
    if max_atoms is not None and len(atoms) > max_atoms:
        return None, None, f"{len(atoms)} heavy atoms, more than max_atoms={max_atoms}", "size", None
    flagged = []  # atoms whose hydrogen count was given rather than implied by valence
    for i, atom in enumerate(atoms):
        if atom.GetNumRadicalElectrons():
            return None, None, f"radical (unpaired electrons on atom {i}, {symbols[i]})", "radicals", None
        if atom.GetIsotope():  # isotopes and atom maps are not modelled
            atom.SetIsotope(0)
        if atom.GetAtomMapNum():
            atom.SetAtomMapNum(0)
        if atom.GetNoImplicit() or atom.GetNumExplicitHs():
            flagged.append(i)
    smiles = Chem.MolToSmiles(mol, isomericSmiles=False)  # still aromatic here
    try:
        Chem.Kekulize(mol, clearAromaticFlags=True)
        bonds = _bond_array(mol)
    except Exception as exc:
        return None, None, _first_line(exc), "graph", None
    # The molecule graph_to_mol gives for this graph: the same atoms, charges and kekulé bonds,
    # with hydrogens left to the default valences. It equals the molecule exactly when every
    # atom carries the same number of hydrogens.
    rebuilt = Chem.RWMol(mol)
    for i in flagged:
        atom = rebuilt.GetAtomWithIdx(i)
        atom.SetNumExplicitHs(0)
        atom.SetNoImplicit(False)
    with quiet_rdkit():
        try:
            rebuilt.UpdatePropertyCache(strict=True)
        except Exception as exc:
            return None, None, f"its graph does not give the molecule back ({_first_line(exc)})", "graph", None
    for i, atom in enumerate(atoms):
        want, got = atom.GetTotalNumHs(), rebuilt.GetAtomWithIdx(i).GetTotalNumHs()
        if want != got:
            return None, None, (
                f"atom {i} ({symbols[i]}) carries {want} hydrogens but its default valence gives {got}; "
                "hydrogens are implicit in the graph"), "graph", None
    tokens = [atom_token(atom) for atom in atoms]
    return mol, smiles, note, ("fragments" if note else None), (tokens, bonds)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def standardize(
    mol: Chem.Mol | None,
    fragments: Literal["largest", "skip"] = "largest",
    allowed_elements: Sequence[str] = ORGANIC_ELEMENTS,
    max_atoms: int | None = None,
) -> tuple[Chem.Mol | None, str | None]:
    """The molecule as the plugin learns it, or why it cannot be.

    In order: hydrogen atoms become implicit (isotopic ones too); a molecule of several
    fragments keeps its largest (most heavy atoms, then heaviest) or is rejected; a molecule
    with an element outside ``allowed_elements``, with more than ``max_atoms`` heavy atoms or
    with unpaired electrons is rejected; isotopes and atom-map numbers are dropped
    (stereochemistry is left out of the SMILES and the graph); the molecule is kekulised;
    finally the molecule its graph gives back (as :func:`graph_to_mol` and :func:`sanitize`
    would build it) is compared with it, and a molecule that does not come back identical
    (an atom whose hydrogen count is not its default valence's) is rejected.

    Args:
        mol: a sanitised molecule (it is not modified).
        fragments: ``"largest"`` keeps the largest fragment, ``"skip"`` rejects mixtures.
        allowed_elements: element symbols accepted.
        max_atoms: the most heavy atoms accepted (``None``: any number).

    Returns:
        ``(kekulised copy, note)`` for a kept molecule, where the note is ``None`` or says what
        changed (``"kept the largest of 2 fragments"``); ``(None, reason)`` for a rejected one.
    """
    kept, _, note, _, _ = _standardize(mol, fragments, allowed_elements, max_atoms)
    return kept, note
