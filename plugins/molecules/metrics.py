"""Metrics of generated molecule sets (MOSES and GuacaMol definitions) and of property control.

A generated set holds M entries, each an RDKit molecule (possibly unsanitised, as
:func:`polydiff_molecules.chem.graph_to_mol` builds them), a SMILES string, or ``None`` (a
graph that could not even be built). The definitions follow MOSES (Polykovskiy et al. 2020,
"Molecular sets (MOSES): a benchmarking platform for molecular generation models") and
GuacaMol (Brown et al. 2019, "GuacaMol: benchmarking models for de novo molecular design"):

- **validity** = valid / generated. An entry is valid when it has at least one atom and RDKit
  sanitisation of the *whole* molecule succeeds (valences, kekulisation, aromaticity); a
  disconnected molecule is not repaired by keeping its largest fragment.
- **uniqueness** = unique / valid, where unique counts the distinct canonical SMILES
  (``Chem.MolToSmiles(mol, isomericSmiles=False)``; stereochemistry is not modelled) among the
  valid molecules.
- **novelty** = novel / unique, where novel counts the unique valid molecules whose canonical
  SMILES is not in the reference (training) set. The reference SMILES are canonicalised the
  same way first, so any spelling of a molecule counts as the same molecule.
- **connected** = the fraction of generated graphs that form a single fragment (one connected
  component; a ``None`` entry or an empty graph is not connected), and **connected_valid** the
  same fraction among the valid molecules.
- **kl_score**: GuacaMol's KL-divergence benchmark. For each of ten descriptors the
  Kullback–Leibler divergence ``KL(P || Q)`` of the reference distribution P from the
  distribution Q of the unique valid generated molecules is computed, and the score is
  ``mean_i exp(-KL_i)``, in (0, 1], 1 for matching distributions. The descriptors are BertzCT,
  MolLogP, MolWt and TPSA (continuous: a Gaussian kernel density estimate of each set,
  ``scipy.stats.gaussian_kde`` with Scott's bandwidth, evaluated on a common grid of 1000 points
  spanning both sets), NumHAcceptors, NumHDonors, NumRotatableBonds, NumAliphaticRings and
  NumAromaticRings (integer-valued: the empirical probability of each value over the union of
  the values both sets take), and the internal similarity, continuous: for each molecule the
  largest Tanimoto similarity of its ECFP4 fingerprint (Morgan radius 2, 2048 bits) to the
  other molecules of its own set. Both distributions get ``1e-10`` added to every probability
  (and are renormalised) so that no ``log 0`` arises. For speed each set is capped at
  ``max_kl_molecules`` molecules (a seeded random subset), as GuacaMol samples 10 000 molecules.
  Integer descriptors use their exact values rather than GuacaMol's ten histogram bins over the
  reference range, so generated values outside that range are penalised too; scores are
  therefore close to, but not identical with, GuacaMol's published numbers.

Property control is scored by :func:`condition_mae`: the mean absolute error between the
property values achieved by the valid generated molecules and the values requested for them.

Ratios with a zero denominator (no valid molecule, no reference) are NaN
:class:`~polydiff.score.Score` objects that carry the reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from rdkit import Chem, rdBase

from polydiff.score import Score

__all__ = [
    "Score",
    "KL_DESCRIPTORS",
    "GenerationMetrics",
    "evaluate_molecules",
    "kl_divergences",
    "condition_mae",
    "format_metrics",
    "canonical_smiles",
]

KL_DESCRIPTORS: tuple[str, ...] = (
    "BertzCT",
    "MolLogP",
    "MolWt",
    "TPSA",
    "NumHAcceptors",
    "NumHDonors",
    "NumRotatableBonds",
    "NumAliphaticRings",
    "NumAromaticRings",
    "internal_similarity",
)
_DISCRETE = frozenset({"NumHAcceptors", "NumHDonors", "NumRotatableBonds", "NumAliphaticRings", "NumAromaticRings"})
_EPS = 1e-10
_GRID_POINTS = 1000


def _descriptor_functions() -> dict[str, Callable[[Chem.Mol], float]]:
    from rdkit.Chem import Crippen, Descriptors, rdMolDescriptors

    return {
        "BertzCT": Descriptors.BertzCT,
        "MolLogP": Crippen.MolLogP,
        "MolWt": Descriptors.MolWt,
        "TPSA": rdMolDescriptors.CalcTPSA,
        "NumHAcceptors": rdMolDescriptors.CalcNumHBA,
        "NumHDonors": rdMolDescriptors.CalcNumHBD,
        "NumRotatableBonds": rdMolDescriptors.CalcNumRotatableBonds,
        "NumAliphaticRings": rdMolDescriptors.CalcNumAliphaticRings,
        "NumAromaticRings": rdMolDescriptors.CalcNumAromaticRings,
    }


# --- validity and canonical SMILES -----------------------------------------------------------
def _graph(entry: Chem.Mol | str | None) -> Chem.Mol | None:
    """The molecular graph of a generated entry, unsanitised (None if there is none)."""
    if entry is None:
        return None
    if isinstance(entry, str):
        return Chem.MolFromSmiles(entry, sanitize=False) if entry.strip() else None
    if isinstance(entry, Chem.Mol):
        return entry
    raise TypeError(f"generated molecules must be RDKit molecules, SMILES strings or None, got {type(entry).__name__}")


def _sanitized(graph: Chem.Mol | None) -> Chem.Mol | None:
    """A sanitised copy of a graph with at least one atom, or None if sanitisation fails."""
    if graph is None or graph.GetNumAtoms() == 0:
        return None
    from polydiff_molecules.chem import sanitize

    mol, _ = sanitize(graph)
    return mol


def canonical_smiles(entry: Chem.Mol | str | None) -> str | None:
    """The canonical SMILES (no stereochemistry) of a valid molecule, else None.

    Args:
        entry: a molecule (sanitised or not), a SMILES string, or None.

    Returns:
        ``Chem.MolToSmiles(mol, isomericSmiles=False)`` of the sanitised molecule, or None if
        the entry is None, empty or fails sanitisation.
    """
    with rdBase.BlockLogs():
        mol = _sanitized(_graph(entry))
    return None if mol is None else Chem.MolToSmiles(mol, isomericSmiles=False)


def _ratio(numerator: int, denominator: int, what: str) -> Score:
    if denominator == 0:
        return Score.undefined(f"no {what}")
    return Score(numerator / denominator)


# --- KL divergence benchmark -----------------------------------------------------------------
def _fingerprint_matrix(mols: Sequence[Chem.Mol]):
    """ECFP4 bit vectors (Morgan radius 2, 2048 bits) as a sparse 0/1 matrix.

    Shapes:
        mols: (N,); returns a scipy CSR matrix (N, 2048) of float32.
    """
    import scipy.sparse
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    bits = np.stack([generator.GetFingerprintAsNumPy(mol) for mol in mols]).astype(np.float32)
    return scipy.sparse.csr_matrix(bits)


def _nearest_neighbour_similarity(mols: Sequence[Chem.Mol], block: int = 500) -> np.ndarray:
    """For each molecule, the largest ECFP4 Tanimoto similarity to another molecule of the set.

    Tanimoto similarity of bit vectors a, b: ``|a & b| / (|a| + |b| - |a & b|)``. The
    intersections come from a sparse product of the fingerprint matrix with itself, one block
    of rows at a time against the rows from the block on, so each pair is computed once.

    Shapes:
        mols: (N,) with N >= 2; returns (N,).
    """
    x = _fingerprint_matrix(mols)
    n = x.shape[0]
    counts = np.asarray(x.sum(axis=1), dtype=np.float32).reshape(-1)
    best = np.full(n, -np.inf)
    for start in range(0, n, block):
        stop = min(start + block, n)
        inter = (x[start:stop] @ x[start:].T).toarray()  # (rows, n - start), exact small integers
        union = counts[start:stop, None] + counts[None, start:] - inter
        sim = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        rows = np.arange(stop - start)
        sim[rows, rows] = -np.inf  # a molecule is not its own neighbour
        np.maximum(best[start:stop], sim.max(axis=1), out=best[start:stop])
        np.maximum(best[start:], sim.max(axis=0), out=best[start:])
    return best


def _descriptor_table(mols: Sequence[Chem.Mol]) -> dict[str, np.ndarray]:
    """The ten KL-benchmark descriptors of sanitised molecules (NaN where a descriptor fails).

    Shapes:
        mols: (N,) with N >= 2; every array: (N,).
    """
    functions = _descriptor_functions()
    table = {name: np.full(len(mols), np.nan) for name in functions}
    for i, mol in enumerate(mols):
        for name, function in functions.items():
            try:
                table[name][i] = float(function(mol))
            except Exception:  # one odd molecule must not stop the benchmark
                pass
    table["internal_similarity"] = _nearest_neighbour_similarity(mols)
    return table


def _smoothed(p: np.ndarray) -> np.ndarray:
    p = p / p.sum()
    p = p + _EPS
    return p / p.sum()


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p, q = _smoothed(p), _smoothed(q)
    return max(float(np.sum(p * np.log(p / q))), 0.0)  # >= 0; rounding can give -1e-16


def _density(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian KDE of ``values`` on ``grid``; a narrow bump per value if the KDE is singular."""
    from scipy.stats import gaussian_kde

    if values.size >= 2 and np.ptp(values) > 0:
        try:
            return gaussian_kde(values)(grid)
        except np.linalg.LinAlgError:  # pragma: no cover - guarded by the ptp check above
            pass
    width = grid[1] - grid[0]
    return np.exp(-0.5 * ((grid[:, None] - values[None, :]) / width) ** 2).sum(axis=1)


def _continuous_kl(reference: np.ndarray, generated: np.ndarray) -> float:
    lo = min(reference.min(), generated.min())
    hi = max(reference.max(), generated.max())
    if not hi > lo:  # both sets are the same single value
        return 0.0
    grid = np.linspace(lo, hi, _GRID_POINTS)
    return _kl(_density(reference, grid), _density(generated, grid))


def _discrete_kl(reference: np.ndarray, generated: np.ndarray) -> float:
    support = np.union1d(reference, generated)
    p = np.array([np.count_nonzero(reference == v) for v in support], dtype=np.float64)
    q = np.array([np.count_nonzero(generated == v) for v in support], dtype=np.float64)
    return _kl(p, q)


def _kl_from_tables(reference: Mapping[str, np.ndarray], generated: Mapping[str, np.ndarray]) -> dict[str, Score]:
    out: dict[str, Score] = {}
    for name in KL_DESCRIPTORS:
        p = reference[name][np.isfinite(reference[name])]
        q = generated[name][np.isfinite(generated[name])]
        if p.size == 0 or q.size == 0:
            out[name] = Score.undefined(f"{name} could not be computed for any {'reference' if p.size == 0 else 'generated'} molecule")
            continue
        out[name] = Score(_discrete_kl(p, q) if name in _DISCRETE else _continuous_kl(p, q))
    return out


def _subset(items: list, limit: int | None, seed: int) -> list:
    if limit is None or len(items) <= limit:
        return items
    keep = np.sort(np.random.default_rng(seed).choice(len(items), size=limit, replace=False))
    return [items[i] for i in keep]


def kl_divergences(
    reference: Sequence[Chem.Mol], generated: Sequence[Chem.Mol]
) -> dict[str, Score]:
    """KL divergence ``KL(reference || generated)`` of each of the ten benchmark descriptors.

    See the module docstring for the descriptors and the estimators. Molecules must be
    sanitised; duplicates are not removed here.

    Args:
        reference: the reference molecules (P), at least 2.
        generated: the generated molecules (Q), at least 2.

    Returns:
        ``{descriptor: KL}`` in the order of :data:`KL_DESCRIPTORS`, each >= 0.

    Raises:
        ValueError: if either set has fewer than 2 molecules (the internal similarity needs
            a neighbour).

    Shapes:
        reference: (N_ref,); generated: (N_gen,).
    """
    for name, mols in (("reference", reference), ("generated", generated)):
        if len(mols) < 2:
            raise ValueError(f"the KL benchmark needs at least 2 {name} molecules, got {len(mols)}")
    return _kl_from_tables(_descriptor_table(reference), _descriptor_table(generated))


def _score_from_kl(kl: Mapping[str, float]) -> Score:
    values = [float(v) for v in kl.values()]
    undefined = [name for name, v in kl.items() if math.isnan(v)]
    if undefined:
        return Score.undefined(f"KL undefined for {', '.join(undefined)}")
    return Score(float(np.mean(np.exp(-np.asarray(values)))))


# --- the evaluator ---------------------------------------------------------------------------
class GenerationMetrics:
    """Reusable evaluator of generated sets against a fixed reference.

    The reference is canonicalised (and its KL-benchmark descriptors computed) once at
    construction, so evaluating many generated sets against the same training data, for example
    during training, pays that cost once.

    Args:
        reference_smiles: SMILES of the training molecules, for novelty; None leaves novelty
            undefined. Unparseable entries are ignored (counted in ``n_reference_unparsed``).
        kl_reference: SMILES of the KL-benchmark reference; defaults to ``reference_smiles``.
            None for both leaves ``kl_score`` undefined.
        max_kl_molecules: the most molecules of either set the KL benchmark uses (a random
            subset beyond it); None for no cap. The internal similarity costs O(N^2).
        seed: seed of those random subsets.
    """

    def __init__(
        self,
        reference_smiles: Sequence[str] | None = None,
        *,
        kl_reference: Sequence[str] | None = None,
        max_kl_molecules: int | None = 10000,
        seed: int = 0,
    ) -> None:
        if max_kl_molecules is not None and max_kl_molecules < 2:
            raise ValueError(f"max_kl_molecules must be >= 2 or None, got {max_kl_molecules}")
        self.max_kl_molecules = max_kl_molecules
        self.seed = seed
        self.reference: set[str] | None = None
        self.n_reference_unparsed = 0
        if reference_smiles is not None:
            canonical = self._canonical(reference_smiles)
            self.n_reference_unparsed = sum(smiles is None for smiles in canonical)
            self.reference = {smiles for smiles in canonical if smiles is not None}
        if kl_reference is not None:
            kl_smiles = sorted({smiles for smiles in self._canonical(kl_reference) if smiles is not None})
        else:
            kl_smiles = sorted(self.reference or ())
        self._kl_table: dict[str, np.ndarray] | None = None
        self.n_kl_reference = 0
        if len(kl_smiles) >= 2:
            chosen = _subset(kl_smiles, max_kl_molecules, seed)
            self._kl_table = _descriptor_table([Chem.MolFromSmiles(smiles) for smiles in chosen])
            self.n_kl_reference = len(chosen)
        self._kl_reason = (
            "no KL reference given" if reference_smiles is None and kl_reference is None
            else f"the KL reference has {len(kl_smiles)} distinct valid molecule(s), needs >= 2"
        )

    @staticmethod
    def _canonical(smiles_list: Sequence[str]) -> list[str | None]:
        """Canonical SMILES of each reference entry, None where it does not parse."""
        if isinstance(smiles_list, str):
            raise TypeError("reference SMILES must be a sequence of strings, got a single string")
        out: list[str | None] = []
        with rdBase.BlockLogs():
            for smiles in smiles_list:
                mol = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) and smiles.strip() else None
                out.append(None if mol is None else Chem.MolToSmiles(mol, isomericSmiles=False))
        return out

    def __call__(self, generated: Sequence[Chem.Mol | str | None]) -> dict[str, Any]:
        """Evaluate a generated set; see :func:`evaluate_molecules` for the returned keys."""
        if isinstance(generated, (str, Chem.Mol)):
            raise TypeError("generated must be a sequence of molecules, got a single molecule")
        n_generated = len(generated)
        n_valid = n_connected = n_connected_valid = 0
        unique: dict[str, Chem.Mol] = {}
        with rdBase.BlockLogs():
            for entry in generated:
                graph = _graph(entry)
                one_fragment = graph is not None and graph.GetNumAtoms() > 0 and len(Chem.GetMolFrags(graph)) == 1
                n_connected += one_fragment
                mol = _sanitized(graph)
                if mol is None:
                    continue
                n_valid += 1
                n_connected_valid += one_fragment
                unique.setdefault(Chem.MolToSmiles(mol, isomericSmiles=False), mol)
        n_unique = len(unique)
        results: dict[str, Any] = {
            "n_generated": n_generated,
            "n_valid": n_valid,
            "n_unique": n_unique,
            "validity": _ratio(n_valid, n_generated, "generated molecules"),
            "uniqueness": _ratio(n_unique, n_valid, "valid molecules"),
            "connected": _ratio(n_connected, n_generated, "generated molecules"),
            "connected_valid": _ratio(n_connected_valid, n_valid, "valid molecules"),
        }
        if self.reference is None:
            results["n_novel"] = None
            results["novelty"] = Score.undefined("no reference set given")
        else:
            n_novel = sum(smiles not in self.reference for smiles in unique)
            results["n_novel"] = n_novel
            results["novelty"] = _ratio(n_novel, n_unique, "valid molecules")
        results["n_reference"] = None if self.reference is None else len(self.reference)
        results.update(self._kl(list(unique.values())))
        return results

    def _kl(self, unique_mols: list[Chem.Mol]) -> dict[str, Any]:
        if self._kl_table is None:
            return {"kl_score": Score.undefined(self._kl_reason), "kl_divergences": {},
                    "n_kl_generated": 0, "n_kl_reference": self.n_kl_reference}
        if len(unique_mols) < 2:
            return {"kl_score": Score.undefined(f"{len(unique_mols)} unique valid generated molecule(s), needs >= 2"),
                    "kl_divergences": {}, "n_kl_generated": len(unique_mols), "n_kl_reference": self.n_kl_reference}
        chosen = _subset(unique_mols, self.max_kl_molecules, self.seed)
        kl = _kl_from_tables(self._kl_table, _descriptor_table(chosen))
        return {"kl_score": _score_from_kl(kl), "kl_divergences": kl,
                "n_kl_generated": len(chosen), "n_kl_reference": self.n_kl_reference}


def evaluate_molecules(
    generated: Sequence[Chem.Mol | str | None],
    reference_smiles: Sequence[str] | None,
    *,
    kl_reference: Sequence[str] | None = None,
    max_kl_molecules: int | None = 10000,
    seed: int = 0,
) -> dict[str, Any]:
    """MOSES / GuacaMol metrics of a generated set (definitions in the module docstring).

    Args:
        generated: the generated entries: RDKit molecules (sanitised or not), SMILES strings,
            or None for graphs that could not be built (all count as generated).
        reference_smiles: SMILES of the training set, for novelty (None: novelty undefined).
        kl_reference: SMILES of the KL-benchmark reference; defaults to ``reference_smiles``.
        max_kl_molecules: cap on either set in the KL benchmark (a seeded random subset).
        seed: seed of those subsets.

    Returns:
        A dict of plain values: the counts ``n_generated``, ``n_valid``, ``n_unique``,
        ``n_novel`` (None without a reference), ``n_reference`` (distinct reference
        molecules), ``n_kl_generated`` and ``n_kl_reference`` (molecules the KL benchmark
        used), the ratios ``validity``, ``uniqueness``, ``novelty``, ``connected``,
        ``connected_valid``, ``kl_score`` (:class:`Score` floats, NaN with a reason when
        undefined), and ``kl_divergences`` (``{descriptor: KL}``).

    Shapes:
        generated: (M,); reference_smiles: (R,).
    """
    metrics = GenerationMetrics(reference_smiles, kl_reference=kl_reference,
                                max_kl_molecules=max_kl_molecules, seed=seed)
    return metrics(generated)


def condition_mae(
    achieved: Mapping[str, np.ndarray], requested: Mapping[str, float | np.ndarray]
) -> dict[str, Score]:
    """Mean absolute error between achieved and requested property values, per property.

    ``MAE_p = mean_i |achieved_p[i] - requested_p[i]|`` over the molecules where both are
    finite, so invalid molecules (NaN achieved values, as
    :func:`~polydiff_molecules.properties.compute_properties` gives them) drop out.

    Args:
        achieved: property name -> values of the generated molecules.
        requested: property name -> the requested value, one number for all molecules or one
            per molecule.

    Returns:
        ``{name: MAE}`` for every requested name; a NaN :class:`Score` with the reason when no
        molecule has a finite value.

    Raises:
        KeyError: if a requested property is missing from ``achieved``.
        ValueError: if per-molecule requested values do not match the achieved length.

    Shapes:
        achieved[name]: (M,); requested[name]: () or (M,).
    """
    out: dict[str, Score] = {}
    for name, target in requested.items():
        if name not in achieved:
            raise KeyError(f"no achieved values for {name!r}; achieved has {', '.join(map(repr, achieved)) or 'nothing'}")
        a = np.asarray(achieved[name], dtype=np.float64).reshape(-1)
        r = np.asarray(target, dtype=np.float64)
        if r.ndim > 0:
            r = r.reshape(-1)
            if r.size != a.size:
                raise ValueError(f"requested {name!r} has {r.size} values but {a.size} were achieved")
        error = np.abs(a - r)
        finite = np.isfinite(error)
        if not finite.any():
            out[name] = Score.undefined(f"no valid molecule has a value of {name!r}")
        else:
            out[name] = Score(float(error[finite].mean()))
    return out


def format_metrics(results: Mapping[str, Any]) -> str:
    """A short multi-line report of :func:`evaluate_molecules` results, with the counts.

    Args:
        results: the dict :func:`evaluate_molecules` returns.

    Returns:
        Lines such as ``validity 0.950 (950 of 1000 generated)``.
    """
    def fmt(value: float) -> str:
        reason = getattr(value, "reason", None)
        return "n/a" + (f" ({reason})" if reason else "") if math.isnan(value) else f"{value:.3f}"

    lines = [
        f"validity {fmt(results['validity'])} ({results['n_valid']} of {results['n_generated']} generated)",
        f"uniqueness {fmt(results['uniqueness'])} ({results['n_unique']} unique of {results['n_valid']} valid)",
    ]
    if results.get("n_novel") is None:
        lines.append(f"novelty {fmt(results['novelty'])}")
    else:
        lines.append(f"novelty {fmt(results['novelty'])} ({results['n_novel']} of {results['n_unique']} unique "
                     f"not among {results['n_reference']} reference molecules)")
    lines.append(f"connected {fmt(results['connected'])} of generated, {fmt(results['connected_valid'])} of valid")
    lines.append(f"kl_score {fmt(results['kl_score'])} ({results['n_kl_generated']} generated vs "
                 f"{results['n_kl_reference']} reference molecules)")
    return "\n".join(lines)
