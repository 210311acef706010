"""Generated molecules survive a round trip through CSV, SMILES and SD files, invalid ones included."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rdkit")
from rdkit import Chem  # noqa: E402

from polydiff_molecules.chem import graph_to_mol  # noqa: E402
from polydiff_molecules.io import draw_grid, raw_smiles, read_generated, write_molecules  # noqa: E402


def _over_bonded_carbon() -> Chem.RWMol:
    return graph_to_mol(["C"] * 6, np.array([[0, 1, 1, 1, 1, 1]] + [[1, 0, 0, 0, 0, 0]] * 5))


def _generated() -> list[Chem.Mol | None]:
    """Valid (kekulised, unsanitised, charged, disconnected) and invalid entries."""
    aspirin = Chem.MolFromSmiles("CC(=O)Oc1ccccc1C(=O)O")
    Chem.Kekulize(aspirin, clearAromaticFlags=True)
    nitrogen = graph_to_mol(["N", "N"], np.array([[0, 3], [3, 0]]))  # unsanitised but valid
    hypervalent_n = graph_to_mol(["N"] + ["C"] * 4, np.array([[0, 1, 1, 1, 1]] + [[1, 0, 0, 0, 0]] * 4))
    return [
        aspirin,
        _over_bonded_carbon(),
        None,
        nitrogen,
        Chem.MolFromSmiles("C[N+](C)(C)C.CC(=O)[O-]"),
        Chem.Mol(),  # an empty graph
        hypervalent_n,  # uncharged N with four bonds: invalid
        Chem.MolFromSmiles("CCO"),
    ]


EXPECTED = ["CC(=O)Oc1ccccc1C(=O)O", None, None, "N#N", "CC(=O)[O-].C[N+](C)(C)C", None, None, "CCO"]


def _canonical(mols: list[Chem.Mol | None]) -> list[str | None]:
    return [None if m is None else Chem.MolToSmiles(m, isomericSmiles=False) for m in mols]


@pytest.mark.parametrize("suffix", [".csv", ".smi", ".sdf"])
def test_round_trip_keeps_every_entry(tmp_path: Path, suffix: str) -> None:
    mols = _generated()
    path = write_molecules(tmp_path / f"generated{suffix}", mols)
    assert path == tmp_path / f"generated{suffix}" and path.is_file()
    back = read_generated(path)
    assert len(back) == len(mols)
    assert _canonical(back) == EXPECTED


def test_smi_invalid_entries_are_invalid_by_their_smiles_alone(tmp_path: Path) -> None:
    path = write_molecules(tmp_path / "g.smi", _generated())
    lines = path.read_text().split("\n")[:-1]
    assert len(lines) == 8 and lines[2] == "" and lines[5] == ""
    assert Chem.MolFromSmiles(lines[1]) is None and lines[1].count("C") == 6  # written as it is
    assert lines[0] == "CC(=O)Oc1ccccc1C(=O)O"  # valid ones: canonical, aromatic


def test_csv_columns_and_flags(tmp_path: Path) -> None:
    mols = _generated()
    qed = np.array([0.5, np.nan, np.nan, 0.1, 0.2, np.nan, np.nan, 0.4])
    path = write_molecules(tmp_path / "out" / "g.csv", mols, columns={"qed": qed, "target": ["a"] * 8})
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["smiles", "valid", "qed", "target"]
    assert [r["valid"] for r in rows] == ["True", "False", "False", "True", "True", "False", "False", "True"]
    assert float(rows[0]["qed"]) == 0.5 and rows[1]["qed"] == "nan" and rows[7]["target"] == "a"
    assert rows[1]["smiles"] == raw_smiles(mols[1]) and rows[2]["smiles"] == ""


def test_csv_valid_column_is_honoured(tmp_path: Path) -> None:
    path = tmp_path / "hand.csv"
    path.write_text("name,SMILES,valid\na,CCO,1\nb,CCN,0\nc,C1CC,true\nd,,yes\n")
    assert _canonical(read_generated(path)) == ["CCO", None, None, None]


def test_sdf_has_2d_coordinates_and_tags(tmp_path: Path) -> None:
    path = write_molecules(tmp_path / "g.sdf", _generated(), columns={"qed": [0.1] * 8})
    records = list(Chem.SDMolSupplier(str(path), sanitize=False))
    assert len(records) == 8
    aspirin = records[0]
    conf = aspirin.GetConformer()
    xyz = conf.GetPositions()
    assert not conf.Is3D() and np.allclose(xyz[:, 2], 0.0)
    assert np.ptp(xyz[:, 0]) > 1.0 and np.ptp(xyz[:, 1]) > 1.0  # a real layout, not all at the origin
    assert [r.GetProp("valid") for r in records] == ["1", "0", "0", "1", "1", "0", "0", "1"]
    assert aspirin.GetProp("smiles") == EXPECTED[0] and aspirin.GetProp("qed") == "0.1"
    assert records[1].GetNumAtoms() == 6  # the invalid graph itself is kept


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "g.csv"
    write_molecules(path, [Chem.MolFromSmiles("CCO")])
    before = path.read_text()
    with pytest.raises(ValueError, match="g.csv already exists"):
        write_molecules(path, [Chem.MolFromSmiles("CCN")])
    assert path.read_text() == before
    write_molecules(path, [Chem.MolFromSmiles("CCN")], overwrite=True)
    assert _canonical(read_generated(path)) == ["CCN"]


def test_write_errors(tmp_path: Path) -> None:
    mols = [Chem.MolFromSmiles("CCO")]
    with pytest.raises(ValueError, match=r"unsupported file type '\.txt'"):
        write_molecules(tmp_path / "g.txt", mols)
    with pytest.raises(ValueError, match="'qed' has 2 values for 1 molecules"):
        write_molecules(tmp_path / "g.csv", mols, columns={"qed": [1, 2]})
    with pytest.raises(ValueError, match="reserved"):
        write_molecules(tmp_path / "g.csv", mols, columns={"valid": [1]})
    with pytest.warns(UserWarning, match="qed not written"):
        write_molecules(tmp_path / "g.smi", mols, columns={"qed": [1]})
    assert not (tmp_path / "g.csv").exists() and not (tmp_path / "g.txt").exists()


def test_read_errors_and_smi_headers(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_generated(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,score\na,1\n")
    with pytest.raises(ValueError, match="bad.csv has no SMILES column.*found name, score"):
        read_generated(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        read_generated(empty)
    smi = tmp_path / "named.smi"
    smi.write_text("SMILES Name\nCCO first\nC(C)(C)(C)(C)C second\nc1ccccc1\tthird\n")
    assert _canonical(read_generated(smi)) == ["CCO", None, "c1ccccc1"]


def test_raw_smiles() -> None:
    raw = raw_smiles(_over_bonded_carbon())
    assert Chem.MolFromSmiles(raw, sanitize=False).GetNumAtoms() == 6
    assert Chem.MolFromSmiles(raw) is None
    assert raw_smiles(None) == "" and raw_smiles(Chem.Mol()) == ""


def test_draw_grid_writes_a_png(tmp_path: Path) -> None:
    from PIL import Image

    mols = _generated()
    legends = [f"m{i}" for i in range(len(mols))]
    path = tmp_path / "figs" / "grid.png"
    drawn = draw_grid(path, mols, legends=legends, per_row=2, size=(120, 100))
    assert drawn == 4  # the valid ones
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (240, 200)  # 2 per row, 2 rows
    assert draw_grid(tmp_path / "two.png", mols, max_mols=2) == 2
    with pytest.raises(ValueError, match="nothing to draw"):
        draw_grid(tmp_path / "none.png", [None, _over_bonded_carbon()])
    with pytest.raises(ValueError, match="legends"):
        draw_grid(tmp_path / "x.png", mols, legends=["a"])
