"""Reading molecule files (tables, SMILES files, SD files) and the graph DataModule.

Expected marginals are computed by hand on two- and three-molecule tables; bad rows are mixed
into small files to check that they are reported and that the rest is read.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rdkit")
pd = pytest.importorskip("pandas")
torch = pytest.importorskip("torch")
pytest.importorskip("torch_geometric")

from rdkit import Chem  # noqa: E402

from polydiff_molecules.chem import atom_token, canonical_smiles  # noqa: E402
from polydiff_molecules.data import MoleculeDataModule, molecules_from_smiles, read_molecules  # noqa: E402

INFO_KEYS = {"atom_types", "bond_types", "atom_marginals", "bond_marginals", "bond_given_atom", "atom_given_bond",
             "num_atoms", "max_atoms", "conditions", "train_size", "source"}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


MIXED_CSV = """id,SMILES,score,label
1,CCO,1.0,a
2,not_a_smiles,2.0,b
3,C[Pt]C,3.0,a
4,CC(=O)[O-].[Na+],4.0,b
5,,5.0,a
6,C(C)(C)(C)(C)C,6.0,a
7,O=[N+]([O-])c1ccccc1,,b
8,c1ccc2[nH]ccc2c1,8.0,
"""


# --- reading ------------------------------------------------------------------------------------
def test_csv_with_bad_rows_reports_them_and_reads_the_rest(tmp_path):
    table = read_molecules(_write(tmp_path / "mixed.csv", MIXED_CSV), columns=["score", "label"])
    assert [r.row for r in table.records] == [1, 4, 7, 8]
    assert [r.smiles for r in table.records] == ["CCO", "CC(=O)[O-]", "O=[N+]([O-])c1ccccc1", "c1ccc2[nH]ccc2c1"]
    assert [(p.row, p.kind) for p in table.problems] == [(2, "unparseable"), (3, "elements"), (5, "empty"),
                                                           (6, "invalid")]
    assert table.problems[0].text == "not_a_smiles"
    assert "Pt" in table.problems[1].reason
    assert "valence" in table.problems[3].reason.lower()
    assert table.notes == [(4, "kept the largest of 2 fragments")]
    assert table.records[0].values == {"score": 1.0, "label": "a"}
    assert math.isnan(table.records[2].values["score"]) and table.records[2].values["label"] == "b"
    assert table.rows == 8
    assert table.summary() == ("read 8 rows: 4 molecules, 1 empty, 1 unparseable SMILES, 1 failed sanitisation, "
                               "1 with unsupported elements; 1 salt/mixture reduced to the largest fragment")
    # Records hold kekulised molecules whose SMILES is the record's.
    for record in table.records:
        assert not any(b.GetBondType() == Chem.BondType.AROMATIC for b in record.mol.GetBonds())
        assert canonical_smiles(record.mol) == record.smiles
        # The graph kept from standardisation is the molecule's.
        tokens, bonds = record.tokens_and_bonds()
        assert tokens == [atom_token(a) for a in record.mol.GetAtoms()]
        expected = sorted((min(b.GetBeginAtomIdx(), b.GetEndAtomIdx()), max(b.GetBeginAtomIdx(), b.GetEndAtomIdx()),
                           int(b.GetBondTypeAsDouble())) for b in record.mol.GetBonds())
        assert sorted(map(tuple, bonds.tolist())) == expected
    lines = table.problem_lines(limit=2)
    assert lines == ["row 2: unparseable SMILES (not_a_smiles)", "row 3: unsupported element Pt (C[Pt]C)",
                     "... and 2 more"]


def test_rdkit_log_stays_quiet_while_reading(tmp_path, capfd):
    read_molecules(_write(tmp_path / "mixed.csv", MIXED_CSV))
    assert "SMILES Parse Error" not in capfd.readouterr().err


def test_fragments_skip_and_max_atoms_and_limit(tmp_path):
    path = _write(tmp_path / "mixed.csv", MIXED_CSV)
    skipped = read_molecules(path, fragments="skip")
    assert 4 not in [r.row for r in skipped.records]
    assert any(p.row == 4 and p.kind == "fragments" for p in skipped.problems)
    small = read_molecules(path, max_atoms=5)
    assert [r.smiles for r in small.records] == ["CCO", "CC(=O)[O-]"]
    assert "2 over max_atoms" in small.summary()
    first = read_molecules(path, limit=3)
    assert first.rows == 3 and [r.row for r in first.records] == [1]


@pytest.mark.parametrize(("header", "column"), [
    ("smiles", "smiles"), ("SMILES", "SMILES"), ("Canonical_SMILES", "Canonical_SMILES"), ("smi", "smi"),
])
def test_smiles_column_is_found_by_name_in_any_case(tmp_path, header, column):
    path = _write(tmp_path / "t.csv", f"name,{header}\nx,CCO\ny,c1ccccc1\n")
    assert [r.smiles for r in read_molecules(path).records] == ["CCO", "c1ccccc1"]


def test_smiles_column_preference_and_explicit_choice(tmp_path):
    path = _write(tmp_path / "t.csv", "smi,SMILES,other\nC,CCO,CCN\n")
    assert read_molecules(path).records[0].smiles == "CCO"  # "smiles" beats "smi"
    assert read_molecules(path, smiles_column="other").records[0].smiles == "CCN"


def test_missing_smiles_column_names_the_file_and_the_columns_found(tmp_path):
    path = _write(tmp_path / "nosmiles.csv", "molecule,value\nCCO,1\n")
    with pytest.raises(ValueError, match="no SMILES column") as info:
        read_molecules(path)
    assert "nosmiles.csv" in str(info.value) and "molecule, value" in str(info.value)
    with pytest.raises(ValueError, match=r"no SMILES column 'structure' \(columns found: molecule, value\)"):
        read_molecules(path, smiles_column="structure")
    with pytest.raises(ValueError, match=r"no column 'qed' \(columns found: molecule, value\)"):
        read_molecules(path, smiles_column="molecule", columns=["qed"])


def test_empty_missing_and_unknown_files_are_errors_naming_the_file(tmp_path):
    empty = _write(tmp_path / "empty.csv", "")
    with pytest.raises(ValueError, match="empty.csv: the file is empty"):
        read_molecules(empty)
    header_only = _write(tmp_path / "header.csv", "smiles,score\n")
    with pytest.raises(ValueError, match="header.csv: the file holds no molecule rows"):
        read_molecules(header_only)
    with pytest.raises(ValueError, match="absent.csv: no such file"):
        read_molecules(tmp_path / "absent.csv")
    with pytest.raises(ValueError, match="unknown kind of file '.xlsx'"):
        read_molecules(_write(tmp_path / "t.xlsx", "smiles\nC\n"))
    empty_smi = _write(tmp_path / "empty.smi", "")
    with pytest.raises(ValueError, match="empty.smi: the file is empty"):
        read_molecules(empty_smi)


def test_moses_style_gzipped_csv_and_tsv(tmp_path):
    path = tmp_path / "dataset_v1.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("SMILES,SPLIT\nCCO,train\nc1ccncc1,test\nCC#N,train\n")
    table = read_molecules(path, columns=["SPLIT"])
    assert [r.smiles for r in table.records] == ["CCO", "c1ccncc1", "CC#N"]
    assert [r.values["SPLIT"] for r in table.records] == ["train", "test", "train"]
    tsv = _write(tmp_path / "t.tsv", "smiles\tlogp\nCCO\t-0.1\nCCCC\t1.8\n")
    table = read_molecules(tsv, columns=["logp"])
    assert [r.values["logp"] for r in table.records] == [-0.1, 1.8]


def test_smiles_file_with_header_names_and_blank_lines(tmp_path):
    text = "SMILES Name\nCCO ethanol\n\nc1ccccc1\tbenzene ring\nC1CC bad\n[Pt] platinum\n\n"
    path = _write(tmp_path / "mols.smi", text)
    table = read_molecules(path, columns=["name"])
    assert table.rows == 5 and table.unit == "rows"
    assert [(r.row, r.smiles, r.values["name"]) for r in table.records] == [
        (1, "CCO", "ethanol"), (3, "c1ccccc1", "benzene ring")]
    assert [(p.row, p.kind) for p in table.problems] == [(2, "empty"), (4, "unparseable"), (5, "elements")]
    no_header = _write(tmp_path / "plain.smiles", "CCO\nCCN\n")
    assert [r.smiles for r in read_molecules(no_header).records] == ["CCO", "CCN"]
    gz = tmp_path / "mols.smi.gz"
    with gzip.open(gz, "wt") as handle:
        handle.write("CCO 1\nCCN 2\n")
    assert read_molecules(gz, limit=1).rows == 1
    with pytest.raises(ValueError, match="no column 'qed'"):
        read_molecules(path, columns=["qed"])


def _sdf(tmp_path: Path, name: str = "mols.sdf") -> Path:
    path = tmp_path / name
    writer = Chem.SDWriter(str(path))
    for smiles, activity, series in [("CCO", "1.5", "A"), ("c1ccccc1O", "2.5", "B"), ("CC(=O)[O-].[Na+]", "7", "A")]:
        mol = Chem.MolFromSmiles(smiles)
        mol.SetProp("activity", activity)
        mol.SetProp("series", series)
        writer.write(mol)
    writer.close()
    good = path.read_text()
    bad_block = "broken\n  nothing\n\n  2  1  0  0  0  0  0  0  0  0999 V2000\nnot an atom line\nM  END\n$$$$\n"
    platinum = Chem.MolFromSmiles("C[Pt]C")
    platinum.SetProp("activity", "9")
    path.write_text(good + bad_block + Chem.MolToMolBlock(platinum) + ">  <activity>\n9\n\n$$$$\n")
    return path


def test_sdf_reads_tags_and_reports_bad_records(tmp_path):
    table = read_molecules(_sdf(tmp_path), columns=["activity", "series"])
    assert table.unit == "records" and table.rows == 5
    assert [r.smiles for r in table.records] == ["CCO", "Oc1ccccc1", "CC(=O)[O-]"]
    assert [r.values for r in table.records] == [{"activity": "1.5", "series": "A"}, {"activity": "2.5", "series": "B"},
                                                 {"activity": "7", "series": "A"}]
    assert [(p.row, p.kind) for p in table.problems] == [(4, "unreadable"), (5, "elements")]
    assert table.notes == [(3, "kept the largest of 2 fragments")]
    assert set(table.columns) == {"activity", "series"}
    assert table.summary().startswith("read 5 records: 3 molecules, 1 unreadable records, 1 with unsupported elements")
    with pytest.raises(ValueError, match=r"no SD tag 'ic50' \(SD tags found: activity, series\)"):
        read_molecules(_sdf(tmp_path, "again.sdf"), columns=["ic50"])
    with pytest.raises(ValueError, match="smiles_column does not apply"):
        read_molecules(_sdf(tmp_path, "third.sdf"), smiles_column="smiles")


def test_sdf_gz_and_explicit_hydrogens(tmp_path):
    mol = Chem.AddHs(Chem.MolFromSmiles("c1ccccc1N"))
    mol.SetProp("activity", "3")
    path = tmp_path / "h.sdf.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(Chem.MolToMolBlock(mol) + ">  <activity>\n3\n\n$$$$\n")
    table = read_molecules(path, columns=["activity"])
    assert [r.smiles for r in table.records] == ["Nc1ccccc1"]
    assert table.records[0].mol.GetNumAtoms() == 7 and table.records[0].values == {"activity": "3"}


def test_molecules_from_smiles_matches_reading_a_file(tmp_path):
    smiles = ["CCO", "bad(", "CC(=O)[O-].[K+]"]
    table = molecules_from_smiles(smiles, values={"k": [1, 2, 3]})
    assert [r.smiles for r in table.records] == ["CCO", "CC(=O)[O-]"]
    assert [r.values["k"] for r in table.records] == [1, 3]
    assert table.summary() == ("read 3 rows: 2 molecules, 1 unparseable SMILES; "
                               "1 salt/mixture reduced to the largest fragment")


# --- DataModule ---------------------------------------------------------------------------------
def test_marginals_of_a_three_molecule_table_by_hand(tmp_path):
    path = _write(tmp_path / "toy.csv", "smiles\nCCO\nC=O\nCC#N\n")
    dm = MoleculeDataModule(str(path), val_fraction=0.0, batch_size=2)
    info = dm.info()
    assert set(info) == INFO_KEYS
    json.dumps(info)  # plain data only
    # Atoms: C 5, O 2, N 1.
    assert info["atom_types"] == ["C", "O", "N"]
    np.testing.assert_allclose(info["atom_marginals"], [5 / 8, 2 / 8, 1 / 8])
    # Pairs: CCO (C-C single, C-O single, C..O none), C=O (double), CC#N (single, triple, none).
    assert info["bond_types"] == ["none", "single", "double", "triple"]
    np.testing.assert_allclose(info["bond_marginals"], [2 / 7, 3 / 7, 1 / 7, 1 / 7])
    # Per atom, the classes of its pairs with the other atoms of its molecule.
    np.testing.assert_allclose(info["bond_given_atom"], [[2 / 9, 5 / 9, 1 / 9, 1 / 9],  # C
                                                         [1 / 3, 1 / 3, 1 / 3, 0],  # O
                                                         [1 / 2, 0, 0, 1 / 2]])  # N
    # Per class, the types of both endpoints of its pairs.
    np.testing.assert_allclose(info["atom_given_bond"], [[2 / 4, 1 / 4, 1 / 4],  # none
                                                         [5 / 6, 1 / 6, 0],  # single
                                                         [1 / 2, 1 / 2, 0],  # double
                                                         [1 / 2, 0, 1 / 2]])  # triple
    np.testing.assert_allclose(info["num_atoms"], [0, 0, 1 / 3, 2 / 3])
    assert info["max_atoms"] == 3 and info["train_size"] == 3 and info["source"] == "toy.csv"
    assert info["conditions"] == []


def test_rows_without_data_take_the_marginals(tmp_path):
    path = _write(tmp_path / "toy.smi", "CO\nC=C\n[NH4+]\n")
    info = MoleculeDataModule(str(path), val_fraction=0.0).info()
    assert info["atom_types"] == ["C", "N+", "O"]  # C 3, then N+ and O once each, by token
    np.testing.assert_allclose(info["atom_marginals"], [3 / 5, 1 / 5, 1 / 5])
    np.testing.assert_allclose(info["bond_marginals"], [0, 1 / 2, 1 / 2, 0])
    np.testing.assert_allclose(info["bond_given_atom"], [[0, 1 / 3, 2 / 3, 0], [0, 1 / 2, 1 / 2, 0], [0, 1, 0, 0]])
    np.testing.assert_allclose(info["atom_given_bond"], [[3 / 5, 1 / 5, 1 / 5], [1 / 2, 0, 1 / 2], [1, 0, 0],
                                                         [3 / 5, 1 / 5, 1 / 5]])
    np.testing.assert_allclose(info["num_atoms"], [0, 1 / 3, 2 / 3])


CONDITIONS_CSV = """smiles,potency,series,batch
CCO,1.0,alpha,1
CCN,2.0,beta,2
CCC,,alpha,10
c1ccccc1,4.0,,2
CC(=O)O,5.0,beta,1
CCCl,6.0,gamma,10
"""


def test_batches_shapes_and_standardised_and_categorical_conditions(tmp_path, capsys):
    path = _write(tmp_path / "cond.csv", CONDITIONS_CSV)
    dm = MoleculeDataModule(str(path), conditions=["potency", "series", "batch", "mw"], categorical=["batch"],
                            val_fraction=0.0, batch_size=4, seed=3)
    info = dm.info()
    out = capsys.readouterr().out
    assert "cond.csv: read 6 rows: 6 molecules" in out
    assert "'series' is categorical" in out
    potency, series, batch, mw = info["conditions"]
    values = np.array([1.0, 2.0, 4.0, 5.0, 6.0])
    assert potency == {"name": "potency", "kind": "numeric", "mean": pytest.approx(values.mean()),
                       "std": pytest.approx(values.std()), "min": 1.0, "max": 6.0}
    assert series == {"name": "series", "kind": "categorical", "categories": ["alpha", "beta", "gamma"]}
    assert batch == {"name": "batch", "kind": "categorical", "categories": ["1", "2", "10"]}  # numeric order
    assert mw["kind"] == "numeric" and 40 < mw["mean"] < 80

    dataset = dm.datasets["train"]
    by_smiles = {dataset[i].smiles: dataset[i] for i in range(len(dataset))}
    item = by_smiles["CCO"]
    assert item.x.dtype == torch.long and item.x.shape == (3,)
    assert item.edge_index.shape == (2, 4) and item.edge_attr.tolist() == [1, 1, 1, 1]
    assert item.y.dtype == torch.float32 and item.y.shape == (1, 4)
    assert item.n == 3
    np.testing.assert_allclose(item.y[0, :3].numpy(), [(1.0 - values.mean()) / values.std(), 0.0, 0.0], rtol=1e-6)
    mw_ethanol = 46.069
    assert item.y[0, 3].item() == pytest.approx((mw_ethanol - mw["mean"]) / mw["std"], abs=1e-3)
    assert math.isnan(by_smiles["CCC"].y[0, 0].item())  # missing potency
    assert by_smiles["CCC"].y[0, 2].item() == 2.0  # batch "10" is the third category
    assert math.isnan(by_smiles["c1ccccc1"].y[0, 1].item())  # missing series
    benzene = by_smiles["c1ccccc1"]
    assert sorted(benzene.edge_attr.tolist()) == [1] * 6 + [2] * 6  # kekulised

    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == 1  # 6 molecules, batch 4, drop_last
    first = batches[0]
    assert first.y.shape == (4, 4) and first.n.shape == (4,) and len(first.smiles) == 4
    assert first.x.shape == (int(first.n.sum()),) and first.batch.shape == first.x.shape
    assert first.edge_index.shape[0] == 2 and first.edge_attr.shape == (first.edge_index.shape[1],)
    assert int(first.edge_index.max()) < first.x.shape[0]
    again = [b.smiles for b in MoleculeDataModule(str(path), conditions=["potency"], val_fraction=0.0, batch_size=4,
                                                  seed=3).train_dataloader()]
    assert again == [b.smiles for b in batches]  # seeded shuffle


def test_built_in_properties_match_compute_properties_on_the_molecules(tmp_path):
    from polydiff_molecules.properties import compute_properties

    path = _write(tmp_path / "p.csv", "smiles\nc1ccccc1O\nCC(=O)Nc1ccc(O)cc1\nc1ccc2[nH]ccc2c1\nCCCCCC\n")
    dm = MoleculeDataModule(str(path), conditions=["logp", "rings"], val_fraction=0.0, batch_size=2)
    info = dm.info()
    dataset = dm.datasets["train"]
    smiles = [dataset[i].smiles for i in range(len(dataset))]
    expected = compute_properties([Chem.MolFromSmiles(s) for s in smiles], ["logp", "rings"])
    logp, rings = info["conditions"]
    for i in range(len(dataset)):
        y = dataset[i].y[0]
        assert y[0].item() * logp["std"] + logp["mean"] == pytest.approx(expected["logp"][i], abs=1e-4)
        assert y[1].item() * rings["std"] + rings["mean"] == pytest.approx(expected["rings"][i], abs=1e-4)
    assert logp["min"] == pytest.approx(expected["logp"].min())


def test_random_validation_split(tmp_path):
    smiles = ["C" * k for k in range(1, 21)]
    path = _write(tmp_path / "chains.csv", "smiles\n" + "\n".join(smiles) + "\n")
    dm = MoleculeDataModule(str(path), val_fraction=0.25, batch_size=4, seed=1)
    dm.setup()
    train, val = dm.train_smiles(), list(dm.datasets["val"].smiles)
    assert len(train) == 15 and len(val) == 5
    assert not set(train) & set(val) and set(train) | set(val) == set(smiles)
    assert dm.info()["train_size"] == 15
    other = MoleculeDataModule(str(path), val_fraction=0.25, seed=2)
    other.setup()
    assert list(other.datasets["val"].smiles) != val
    assert len(list(dm.val_dataloader())) == 2  # 5 molecules, batch 4, nothing dropped


def test_validation_file_with_unknown_atom_types_and_categories(tmp_path, capsys):
    train = _write(tmp_path / "train.csv", "smiles,kind\nCCO,x\nCCN,y\nCC=O,x\n")
    val = _write(tmp_path / "val.csv", "smiles,kind\nCCS,x\nOCCO,z\nC[Pt],x\n")
    dm = MoleculeDataModule(str(train), val_path=str(val), conditions=["kind"], batch_size=2)
    dm.setup()
    out = capsys.readouterr().out
    assert "train.csv: read 3 rows: 3 molecules" in out
    assert "val.csv: read 3 rows: 2 molecules, 1 with unsupported elements" in out
    assert "dropped 1 molecules with atom types not in the training split (S)" in out
    assert "categories not in the training split (z)" in out
    assert dm.datasets["val"].smiles == ["OCCO"]
    assert math.isnan(dm.datasets["val"][0].y[0, 0].item())
    assert dm.info()["atom_types"] == ["C", "O", "N"]


def test_datamodule_errors_name_the_problem(tmp_path):
    path = _write(tmp_path / "t.csv", "smiles,a\nCCO,1\nCCN,2\n")
    with pytest.raises(ValueError, match=r"t.csv: no column 'b' \(columns found: smiles, a\)"):
        MoleculeDataModule(str(path), conditions=["b"]).setup()
    with pytest.raises(ValueError, match="not among the conditions"):
        MoleculeDataModule(str(path), conditions=["a"], categorical=["b"])
    with pytest.raises(ValueError, match="more than once"):
        MoleculeDataModule(str(path), conditions=["a", "a"])
    with pytest.raises(ValueError, match="val_fraction"):
        MoleculeDataModule(str(path), val_fraction=1.0)
    bad = _write(tmp_path / "bad.csv", "smiles\n[Pt]\nxyz\n")
    with pytest.raises(ValueError, match="bad.csv: no usable molecule"):
        MoleculeDataModule(str(bad), val_fraction=0.0).setup()
