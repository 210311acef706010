"""Molecular properties checked against known values of well-known molecules."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rdkit")
from rdkit import Chem  # noqa: E402

from polydiff_molecules import properties  # noqa: E402
from polydiff_molecules.properties import PROPERTIES, compute_properties  # noqa: E402

ETHANOL, BENZENE = "CCO", "c1ccccc1"
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
STRYCHNINE = "O=C7CC6OCC=C5CN3CCC12c4ccccc4N7C6C1C5CC23"


def _mols(*smiles: str) -> list[Chem.Mol]:
    return [Chem.MolFromSmiles(s) for s in smiles]


def test_known_values() -> None:
    out = compute_properties(_mols(ETHANOL, BENZENE, ASPIRIN), ["mw", "rings", "qed", "logp", "sa"])
    assert list(out) == ["mw", "rings", "qed", "logp", "sa"]
    for values in out.values():
        assert values.dtype == np.float64 and values.shape == (3,)
    np.testing.assert_allclose(out["mw"], [46.069, 78.114, 180.159], atol=0.01)  # g/mol
    np.testing.assert_array_equal(out["rings"], [0.0, 1.0, 1.0])
    assert out["qed"][2] == pytest.approx(0.55, abs=0.01)  # Bickerton et al. report 0.55 for aspirin
    assert out["logp"][1] == pytest.approx(1.6866, abs=1e-3)  # Crippen logP of benzene
    assert out["logp"][0] < 0 < out["logp"][1]  # ethanol is hydrophilic, benzene lipophilic
    assert out["sa"][1] < 2.0  # benzene is trivial to make
    assert np.all((out["sa"] >= 1.0) & (out["sa"] <= 10.0))


def test_sa_ranks_a_complex_natural_product_as_harder() -> None:
    sa = compute_properties(_mols(BENZENE, ASPIRIN, STRYCHNINE), ["sa"])["sa"]
    assert sa[0] < sa[1] < sa[2]
    assert sa[2] > 5.0  # strychnine: a caged polycyclic alkaloid


def test_invalid_and_missing_molecules_give_nan() -> None:
    over_bonded = Chem.RWMol()  # a carbon with five carbon neighbours: fails sanitisation
    for _ in range(6):
        over_bonded.AddAtom(Chem.Atom("C"))
    for j in range(1, 6):
        over_bonded.AddBond(0, j, Chem.BondType.SINGLE)
    out = compute_properties([None, over_bonded, Chem.Mol(), Chem.MolFromSmiles(ETHANOL)], list(PROPERTIES))
    for name, values in out.items():
        assert np.isnan(values[:3]).all(), name
        assert np.isfinite(values[3]), name


def test_kekulised_input_matches_aromatic_input_and_is_not_modified() -> None:
    aromatic = Chem.MolFromSmiles(ASPIRIN)
    kekule = Chem.Mol(aromatic)
    Chem.Kekulize(kekule, clearAromaticFlags=True)
    before = Chem.MolToSmiles(kekule)
    a = compute_properties([aromatic], list(PROPERTIES))
    k = compute_properties([kekule], list(PROPERTIES))
    for name in PROPERTIES:
        np.testing.assert_allclose(k[name], a[name], err_msg=name)
    assert Chem.MolToSmiles(kekule) == before
    assert not any(atom.GetIsAromatic() for atom in kekule.GetAtoms())


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(KeyError, match="valid names: qed, logp, mw, sa, rings"):
        compute_properties(_mols(ETHANOL), ["qed", "tpsa"])


def test_empty_input_and_single_name_string() -> None:
    out = compute_properties([], ["qed"])
    assert out["qed"].shape == (0,)
    assert compute_properties(_mols(BENZENE), "rings")["rings"].tolist() == [1.0]


def test_missing_sa_scorer_is_a_clear_error(tmp_path, monkeypatch) -> None:
    from rdkit import RDConfig

    properties.sa_scorer.cache_clear()
    monkeypatch.setattr(RDConfig, "RDContribDir", str(tmp_path))
    try:
        with pytest.raises(FileNotFoundError, match="SA_Score"):
            compute_properties(_mols(ETHANOL), ["qed", "sa"])
        assert compute_properties(_mols(ETHANOL), ["qed"])["qed"][0] > 0  # other properties still work
    finally:
        properties.sa_scorer.cache_clear()
