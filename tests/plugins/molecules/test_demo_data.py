"""The demo data set built from the molecules RDKit ships (a few per source, to stay fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rdkit")
pd = pytest.importorskip("pandas")

from rdkit import Chem  # noqa: E402

from polydiff_molecules import demo_data  # noqa: E402
from polydiff_molecules.demo_data import DEMO_SOURCES, PROPERTY_COLUMNS, build_demo_data  # noqa: E402

LIMIT = 25  # molecules read per source


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo")
    return out, build_demo_data(out, max_atoms=24, test_fraction=0.2, seed=0, limit=LIMIT)


def test_files_columns_and_counts(built):
    out, report = built
    train, test = pd.read_csv(out / "train.csv"), pd.read_csv(out / "test.csv")
    assert list(train.columns) == ["smiles", "source", *PROPERTY_COLUMNS]
    assert len(train) == report["train"] and len(test) == report["test"]
    assert report["total"] == report["train"] + report["test"]
    assert report["test"] == round(report["total"] * 0.2)
    sources = report["sources"]
    missing = {name for name, folder, rel in DEMO_SOURCES if f"{folder}/{rel}" in report["missing"]}
    assert set(sources) | missing == {name for name, _, _ in DEMO_SOURCES} and not set(sources) & missing
    assert sum(s["new"] for s in sources.values()) == report["total"]
    for name, counts in sources.items():
        assert counts["read"] <= LIMIT
        assert counts["molecules"] + counts["rejected"] == counts["read"]
        assert counts["new"] + counts["duplicates"] == counts["molecules"]
        assert sum(counts["reasons"].values()) == counts["rejected"]
    both = pd.concat([train, test])
    assert both["smiles"].is_unique
    assert set(both["source"]) <= set(sources)
    for name in sources:
        assert (both["source"] == name).sum() == sources[name]["new"]


def test_molecules_are_standardised_and_properties_right(built):
    from polydiff_molecules.properties import compute_properties

    out, report = built
    frame = pd.concat([pd.read_csv(out / "train.csv"), pd.read_csv(out / "test.csv")])
    mols = [Chem.MolFromSmiles(s) for s in frame["smiles"]]
    assert all(m is not None for m in mols)
    assert all(m.GetNumAtoms() <= 24 for m in mols)
    assert all(len(Chem.GetMolFrags(m)) == 1 for m in mols)
    assert all(Chem.MolToSmiles(m, isomericSmiles=False) == s for m, s in zip(mols, frame["smiles"]))
    organic = {"B", "C", "N", "O", "F", "Si", "P", "S", "Cl", "Br", "I"}
    assert all({a.GetSymbol() for a in m.GetAtoms()} <= organic for m in mols)
    expected = compute_properties(mols[:10], list(PROPERTY_COLUMNS))
    for column in PROPERTY_COLUMNS:
        np.testing.assert_allclose(frame[column].to_numpy()[:10], expected[column], rtol=1e-5)
    assert ((frame["qed"] > 0) & (frame["qed"] < 1)).all()


def test_refuses_to_overwrite_and_is_reproducible(built, tmp_path):
    out, _ = built
    with pytest.raises(ValueError, match="train.csv exists; pass overwrite=True"):
        build_demo_data(out, max_atoms=24, limit=LIMIT)
    (tmp_path / "test.csv").write_text("mine\n")
    with pytest.raises(ValueError, match="test.csv exists"):
        build_demo_data(tmp_path, limit=5)
    assert (tmp_path / "test.csv").read_text() == "mine\n"  # untouched
    again = tmp_path / "again"
    build_demo_data(again, max_atoms=24, test_fraction=0.2, seed=0, limit=LIMIT)
    assert (again / "train.csv").read_text() == (out / "train.csv").read_text()
    build_demo_data(again, max_atoms=24, test_fraction=0.2, seed=1, limit=LIMIT, overwrite=True)
    assert (again / "train.csv").read_text() != (out / "train.csv").read_text()


def test_missing_sources_are_named_and_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_data, "DEMO_SOURCES",
                        (("ghost", "data", "NoSuchFolder/ghost.smi"), DEMO_SOURCES[1]))
    report = build_demo_data(tmp_path, limit=10)
    assert report["missing"] == ["data/NoSuchFolder/ghost.smi"]
    assert list(report["sources"]) == [DEMO_SOURCES[1][0]]
    monkeypatch.setattr(demo_data, "DEMO_SOURCES", (("ghost", "data", "NoSuchFolder/ghost.smi"),))
    with pytest.raises(ValueError, match="none of RDKit's example molecule files"):
        build_demo_data(tmp_path / "none", limit=10)
    assert not (tmp_path / "none").exists()


def test_bad_fraction(tmp_path):
    with pytest.raises(ValueError, match="test_fraction"):
        build_demo_data(tmp_path, test_fraction=1.0)
