"""Generation metrics checked against hand counts and the KL benchmark on contrasting sets."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("rdkit")
pytest.importorskip("scipy")
from rdkit import Chem  # noqa: E402

from polydiff_molecules.chem import graph_to_mol  # noqa: E402
from polydiff_molecules.metrics import (  # noqa: E402
    KL_DESCRIPTORS,
    GenerationMetrics,
    Score,
    _continuous_kl,
    _discrete_kl,
    _nearest_neighbour_similarity,
    canonical_smiles,
    condition_mae,
    evaluate_molecules,
    format_metrics,
    kl_divergences,
)

DRUGS = """CC(=O)Oc1ccccc1C(=O)O CC(C)Cc1ccc(cc1)C(C)C(=O)O Cn1cnc2c1c(=O)n(C)c(=O)n2C CC(=O)Nc1ccc(O)cc1
CN1CCC23C4C1CC5=C2C(=C(C=C5)O)OC3C(C=C4)O CC12CCC3C(CCC4=CC(=O)CCC34C)C1CCC2O O=C(O)Cc1ccccc1Nc1c(Cl)cccc1Cl
CN(C)CCCN1c2ccccc2CCc2ccccc21 COc1ccc2[nH]cc(CCNC(C)=O)c2c1 CC(C)NCC(O)COc1cccc2ccccc12
Clc1ccc(cc1)C(c1ccccc1)N1CCN(CC1)CCOCC(=O)O CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc21
CCOC(=O)C1=C(C)NC(C)=C(C(=O)OC)C1c1cccc(c1)[N+](=O)[O-] CC(C)(C)NCC(O)c1ccc(O)c(CO)c1
O=C(NC1CCCCC1)Nc1ccc(cc1)S(=O)(=O)N NC(=O)c1cccnc1 CC1=C(C(=O)Nc2ccccn2)N(C)S(=O)(=O)c2ccccc21
COc1ccc(cc1)C(=O)CC(=O)c1ccc(cc1)C(C)(C)C CN1CCN(CC1)c1ccc2nc3ccccc3n2c1 Cc1ccc(cc1)S(=O)(=O)NC(=O)NN1CCCCCC1
OC(=O)c1ccccc1O CCN(CC)C(=O)c1cccc(C)c1 Cc1onc(c1C(=O)NC1C(=O)N2C1SC(C)(C)C2C(=O)O)-c1ccccc1
COC(=O)C1C(OC(=O)c2ccccc2)CC2CCC1N2C CN1CCCC1c1cccnc1 O=C1CCCN1 CC(N)Cc1ccccc1 NCCc1ccc(O)c(O)c1
CC(C)C1CCC(C)CC1O OC1CCCCC1 c1ccc2c(c1)ccc1ccccc12 CCCCCCCCCCCCCCCC(=O)O FC(F)(F)c1ccc(OC(CCNC)c2ccccc2)cc1
Nc1ccc(cc1)S(=O)(=O)Nc1ncccn1 CC1(C)SC2C(NC(=O)Cc3ccccc3)C(=O)N2C1C(=O)O COc1cc(cc(OC)c1OC)C(=O)NCc1ccccc1
CS(=O)(=O)Nc1ccc(cc1)C(O)CNC(C)C O=C(c1ccccc1)c1ccc(O)cc1 Clc1ccc(Cl)c(c1)OCC(=O)O CC(=O)c1ccc2ccccc2c1""".split()
TINY = "C CC CCC O CO N CN C=C C#C CCO C=O CC=O OO NN CCN C#N CCCC CC(C)C OCO NCO".split()


def _over_bonded_carbon() -> Chem.RWMol:
    """A carbon bonded to five carbons: a graph that fails sanitisation."""
    return graph_to_mol(["C"] * 6, np.array([[0, 1, 1, 1, 1, 1]] + [[1, 0, 0, 0, 0, 0]] * 5))


# --- validity, uniqueness, novelty, connectivity ---------------------------------------------
def test_hand_counted_set() -> None:
    kekule_benzene = Chem.MolFromSmiles("c1ccccc1")
    Chem.Kekulize(kekule_benzene, clearAromaticFlags=True)
    generated = [
        "CCO",  # valid, in the reference
        "OCC",  # valid, the same molecule again
        "c1ccccc1",  # valid, in the reference (spelt in Kekulé form there)
        _over_bonded_carbon(),  # invalid but one fragment
        None,  # no graph at all
        "CC.O",  # valid, two fragments, novel
        "not a smiles",  # unparseable
        kekule_benzene,  # valid, benzene again
    ]
    r = evaluate_molecules(generated, ["CCO", "C1=CC=CC=C1", "CCN"], kl_reference=None)
    assert (r["n_generated"], r["n_valid"], r["n_unique"], r["n_novel"], r["n_reference"]) == (8, 5, 3, 1, 3)
    assert r["validity"] == pytest.approx(5 / 8)
    assert r["uniqueness"] == pytest.approx(3 / 5)
    assert r["novelty"] == pytest.approx(1 / 3)
    assert r["connected"] == pytest.approx(5 / 8)  # CCO, OCC, benzene twice and the invalid graph
    assert r["connected_valid"] == pytest.approx(4 / 5)
    text = format_metrics(r)
    assert "5 of 8 generated" in text and "1 of 3 unique" in text


def test_unsanitised_graphs_are_judged_like_smiles() -> None:
    ethanol = graph_to_mol(["C", "C", "O"], np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]]))
    r = evaluate_molecules([ethanol, _over_bonded_carbon()], None)
    assert (r["n_valid"], r["n_unique"]) == (1, 1)
    assert canonical_smiles(ethanol) == "CCO"
    assert canonical_smiles(_over_bonded_carbon()) is None
    assert canonical_smiles("") is None and canonical_smiles(None) is None
    assert canonical_smiles("C[C@H](N)C(=O)O") == "CC(N)C(=O)O"  # stereochemistry is dropped
    assert ethanol.GetNumAtoms() == 3 and not ethanol.GetAtomWithIdx(0).GetIsAromatic()


def test_undefined_ratios_carry_a_reason() -> None:
    r = evaluate_molecules([], ["CCO"])
    assert r["n_generated"] == 0
    assert isinstance(r["validity"], Score) and math.isnan(r["validity"]) and "no generated" in r["validity"].reason
    r = evaluate_molecules([None, "C(C)(C)(C)(C)C"], None)
    assert r["validity"] == 0.0
    assert math.isnan(r["uniqueness"]) and r["uniqueness"].reason
    assert math.isnan(r["novelty"]) and "reference" in r["novelty"].reason and r["n_novel"] is None
    assert math.isnan(r["kl_score"]) and r["kl_score"].reason


def test_rejects_a_single_molecule_instead_of_a_sequence() -> None:
    with pytest.raises(TypeError, match="sequence"):
        evaluate_molecules("CCO", None)
    with pytest.raises(TypeError, match="int"):
        evaluate_molecules([3], None)


# --- KL divergence benchmark -----------------------------------------------------------------
def test_kl_score_of_a_set_against_itself_is_one() -> None:
    r = evaluate_molecules(DRUGS, DRUGS)
    assert r["kl_score"] > 0.99
    assert set(r["kl_divergences"]) == set(KL_DESCRIPTORS)
    assert all(v >= 0 for v in r["kl_divergences"].values())
    assert r["n_kl_generated"] == r["n_kl_reference"] == len(DRUGS)
    assert r["novelty"] == 0.0


def test_kl_score_separates_tiny_molecules_from_drugs() -> None:
    tiny = evaluate_molecules(TINY, DRUGS)["kl_score"]
    half = evaluate_molecules(DRUGS[::2], DRUGS[1::2])["kl_score"]
    assert tiny < 0.3
    assert half > 0.5  # 20 drugs against 20 others: similar distributions, but small samples
    assert half - tiny > 0.4


def test_kl_reference_defaults_to_the_reference_and_can_differ() -> None:
    r = evaluate_molecules(TINY, DRUGS, kl_reference=TINY)
    assert r["kl_score"] > 0.99 and r["novelty"] == 1.0
    assert r["n_kl_reference"] == len(TINY)


def test_kl_cap_uses_a_seeded_subset() -> None:
    a = evaluate_molecules(DRUGS, DRUGS, max_kl_molecules=10, seed=1)
    b = GenerationMetrics(DRUGS, max_kl_molecules=10, seed=1)(DRUGS)
    assert a["n_kl_generated"] == a["n_kl_reference"] == 10
    assert a["kl_score"] == b["kl_score"]
    with pytest.raises(ValueError, match="max_kl_molecules"):
        GenerationMetrics(DRUGS, max_kl_molecules=1)


def test_evaluator_reuse_gives_the_same_results() -> None:
    metrics = GenerationMetrics(DRUGS)
    first, second = metrics(TINY), metrics(TINY)
    assert first == second
    assert first == evaluate_molecules(TINY, DRUGS)


def test_kl_divergences_needs_two_molecules() -> None:
    mols = [Chem.MolFromSmiles(s) for s in DRUGS[:5]]
    out = kl_divergences(mols, mols)
    assert list(out) == list(KL_DESCRIPTORS) and max(out.values()) < 1e-9
    with pytest.raises(ValueError, match="at least 2 generated"):
        kl_divergences(mols, mols[:1])


def test_internal_similarity_matches_rdkit_tanimoto() -> None:
    from rdkit import DataStructs
    from rdkit.Chem import rdFingerprintGenerator

    mols = [Chem.MolFromSmiles(s) for s in DRUGS[:12]]
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    fps = [generator.GetFingerprint(m) for m in mols]
    expected = [max(DataStructs.BulkTanimotoSimilarity(fp, fps[:i] + fps[i + 1:])) for i, fp in enumerate(fps)]
    for block in (5, 500):  # blocks that split the set and one that holds it whole
        np.testing.assert_allclose(_nearest_neighbour_similarity(mols, block=block), expected, rtol=1e-6)


def test_discrete_kl_hand_case() -> None:
    # P = (1/2, 1/2) on {0, 1}, Q = (3/4, 1/4): KL = 1/2 log(2/3) + 1/2 log 2.
    kl = _discrete_kl(np.array([0.0, 1.0, 0.0, 1.0]), np.array([0.0, 0.0, 0.0, 1.0]))
    assert kl == pytest.approx(0.5 * math.log(2 / 3) + 0.5 * math.log(2), rel=1e-6)
    # A value the generated set never takes costs ~ p log(p / eps), large but finite.
    assert 5.0 < _discrete_kl(np.array([0.0, 1.0]), np.array([0.0, 0.0])) < 20.0


def test_continuous_kl_matches_gaussian_closed_form() -> None:
    # KL(N(0, 1) || N(1, 1)) = 1/2; the KDE's bandwidth widens both a little.
    rng = np.random.default_rng(0)
    kl = _continuous_kl(rng.normal(0.0, 1.0, 4000), rng.normal(1.0, 1.0, 4000))
    assert kl == pytest.approx(0.5, abs=0.06)
    assert _continuous_kl(np.array([2.0, 2.0]), np.array([2.0, 2.0, 2.0])) == 0.0  # degenerate, same point
    assert _continuous_kl(np.array([1.0, 1.0]), np.array([3.0, 3.0])) > 5.0  # disjoint point masses


# --- property control ------------------------------------------------------------------------
def test_condition_mae_hand_case() -> None:
    achieved = {"qed": np.array([0.5, np.nan, 0.7]), "mw": np.array([100.0, np.nan, 300.0])}
    out = condition_mae(achieved, {"qed": 0.6, "mw": np.array([110.0, 0.0, 250.0])})
    assert out["qed"] == pytest.approx(0.1)  # (0.1 + 0.1) / 2; the invalid molecule drops out
    assert out["mw"] == pytest.approx(30.0)  # (10 + 50) / 2
    nan = condition_mae({"qed": np.array([np.nan])}, {"qed": 0.5})["qed"]
    assert math.isnan(nan) and "qed" in nan.reason


def test_condition_mae_errors() -> None:
    with pytest.raises(KeyError, match="'logp'.*'qed'"):
        condition_mae({"qed": np.zeros(2)}, {"logp": 1.0})
    with pytest.raises(ValueError, match="3 values but 2"):
        condition_mae({"qed": np.zeros(2)}, {"qed": np.zeros(3)})
