"""The marginal baseline reproduces the marginals it is given, over many draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("rdkit")
scipy_stats = pytest.importorskip("scipy.stats")
from rdkit import Chem  # noqa: E402

from polydiff_molecules.baselines import sample_marginal_graphs  # noqa: E402
from polydiff_molecules.chem import atom_token  # noqa: E402

BOND_CLASS = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3}


@pytest.fixture
def info() -> dict:
    return {
        "atom_types": ["C", "N", "O", "N+"],
        "bond_types": ["none", "single", "double", "triple"],
        "atom_marginals": [0.55, 0.2, 0.15, 0.1],
        "bond_marginals": [0.7, 0.2, 0.07, 0.03],
        "num_atoms": [0.0, 0.0, 0.1, 0.2, 0.3, 0.4],  # 2 to 5 atoms
        "max_atoms": 5,
    }


def _chi_square_p(counts: np.ndarray, probs: np.ndarray) -> float:
    probs = np.asarray(probs, dtype=float) / np.sum(probs)
    return float(scipy_stats.chisquare(counts, counts.sum() * probs).pvalue)


def test_reproduces_atom_bond_and_size_marginals(info: dict) -> None:
    mols = sample_marginal_graphs(info, 3000, generator=torch.Generator().manual_seed(0))
    assert len(mols) == 3000 and all(isinstance(m, Chem.RWMol) for m in mols)
    sizes = np.bincount([m.GetNumAtoms() for m in mols], minlength=6)
    atoms = np.zeros(4)
    bonds = np.zeros(4)
    for mol in mols:
        for atom in mol.GetAtoms():
            atoms[info["atom_types"].index(atom_token(atom))] += 1
        n = mol.GetNumAtoms()
        classes = [BOND_CLASS[b.GetBondType()] for b in mol.GetBonds()]
        bonds[1:] += np.bincount(classes, minlength=4)[1:]
        bonds[0] += n * (n - 1) // 2 - len(classes)
    assert sizes[:2].sum() == 0
    # With a fixed seed the draws are fixed; p-values this large mean the counts sit well within
    # the multinomial noise of the requested probabilities (a wrong marginal gives p ~ 0).
    assert _chi_square_p(sizes[2:], info["num_atoms"][2:]) > 1e-3
    assert _chi_square_p(atoms, info["atom_marginals"]) > 1e-3
    assert _chi_square_p(bonds, info["bond_marginals"]) > 1e-3
    np.testing.assert_allclose(atoms / atoms.sum(), info["atom_marginals"], atol=0.02)
    np.testing.assert_allclose(bonds / bonds.sum(), info["bond_marginals"], atol=0.02)
    # The test has power: the same counts are far from a different marginal.
    assert _chi_square_p(atoms, [0.45, 0.3, 0.15, 0.1]) < 1e-6


def test_charged_tokens_and_fixed_size(info: dict) -> None:
    mols = sample_marginal_graphs(info, 50, generator=torch.Generator().manual_seed(1), num_atoms=7)
    assert {m.GetNumAtoms() for m in mols} == {7}
    charged = [a for m in mols for a in m.GetAtoms() if a.GetFormalCharge()]
    assert charged and all(a.GetSymbol() == "N" and a.GetFormalCharge() == 1 for a in charged)


def test_seeded_draws_are_reproducible(info: dict) -> None:
    def draw(seed: int) -> list[str]:
        mols = sample_marginal_graphs(info, 20, generator=torch.Generator().manual_seed(seed))
        return [Chem.MolToSmiles(m, canonical=False) for m in mols]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)
    assert sample_marginal_graphs(info, 0) == []


def test_most_marginal_graphs_are_invalid_or_disconnected(info: dict) -> None:
    from polydiff_molecules.metrics import evaluate_molecules

    r = evaluate_molecules(sample_marginal_graphs(info, 200, generator=torch.Generator().manual_seed(2)), None)
    assert r["n_generated"] == 200
    assert r["connected"] < 0.5  # a bond exists with probability 0.3 per pair


def test_bad_info_is_a_clear_error(info: dict) -> None:
    with pytest.raises(KeyError, match="atom_marginals"):
        sample_marginal_graphs({k: v for k, v in info.items() if k != "atom_marginals"}, 1)
    with pytest.raises(ValueError, match="atom_marginals.*3 entries, expected 4"):
        sample_marginal_graphs({**info, "atom_marginals": [0.5, 0.3, 0.2]}, 1)
    with pytest.raises(ValueError, match="bond_marginals"):
        sample_marginal_graphs({**info, "bond_marginals": [1.0, -0.5, 0.5, 0.0]}, 1)
    with pytest.raises(ValueError, match="0 atoms"):
        sample_marginal_graphs({**info, "num_atoms": [1.0]}, 1)
    with pytest.raises(ValueError, match="count"):
        sample_marginal_graphs(info, -1)
    with pytest.raises(ValueError, match="num_atoms"):
        sample_marginal_graphs(info, 1, num_atoms=0)
