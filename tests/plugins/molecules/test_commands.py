"""The molecules plugin as a user drives it: fit through the CLI, then generate and evaluate.

One tiny Graph DiT model (16 node, 8 pair, 16 graph channels, one layer, two heads) is trained
for three steps through ``polydiff molecules fit -c graph-dit`` on 40 real molecules, conditioned
on QED and logP computed by the data module; every command test reuses its checkpoint. The tests
check the files written (one entry per generated graph, requested and achieved columns), the
refusals and their exit statuses and messages, that inputs are never written, and the
evaluation table against values computed by hand.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("rdkit")
pytest.importorskip("torch_geometric")
pytest.importorskip("pandas")
from rdkit import Chem  # noqa: E402
from rdkit.Chem import QED  # noqa: E402

from polydiff.cli import main  # noqa: E402
from polydiff.registry import Registry  # noqa: E402
from polydiff_molecules.commands import load_model, parse_conditions  # noqa: E402
from polydiff_molecules.io import read_generated  # noqa: E402

SMILES = [
    "CCO", "CC(=O)O", "c1ccccc1", "Cc1ccccc1", "Oc1ccccc1", "Nc1ccccc1", "CC(=O)Nc1ccc(O)cc1",
    "CC(C)Cc1ccc(C(C)C(=O)O)cc1", "CC(=O)Oc1ccccc1C(=O)O", "Cn1cnc2c1c(=O)n(C)c(=O)n2C", "c1ccncc1", "C1CCCCC1",
    "C1CCNCC1", "C1COCCN1", "CCN(CC)CC", "CC(C)O", "CCCCO", "OC(=O)CCC(=O)O", "NCC(=O)O", "CC(N)C(=O)O",
    "OCC(O)CO", "C=CC(=O)O", "CC#N", "c1ccc2ccccc2c1", "c1ccoc1", "c1ccsc1", "c1cc[nH]c1", "O=C1CCCC1", "CC(C)=O",
    "COc1ccccc1", "CC(C)(C)O", "NC(N)=O", "O=C(O)c1ccccc1", "Clc1ccccc1", "Fc1ccccc1", "CCOC(C)=O", "C1CC1",
    "CCOCC", "N#Cc1ccccc1", "CC[N+](C)(C)C",
]
TINY = ["--model.init_args.denoiser.init_args.hidden_nodes", "16", "--model.init_args.denoiser.init_args.hidden_edges",
        "8", "--model.init_args.denoiser.init_args.hidden_graph", "16", "--model.init_args.denoiser.init_args.layers",
        "1", "--model.init_args.denoiser.init_args.heads", "2", "--model.init_args.val_samples", "4",
        "--model.init_args.val_sample_steps", "2", "--model.init_args.sample_steps", "3"]
QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary",
         "false", "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.max_steps", "3",
         "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "1"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, train.csv) of the graph-dit config trained 3 steps on 40 molecules."""
    root = tmp_path_factory.mktemp("mol-fit")
    train = root / "train.csv"
    with train.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["smiles", "qed"])
        for smiles in SMILES:
            writer.writerow([smiles, round(QED.qed(Chem.MolFromSmiles(smiles)), 4)])
    status = main(["molecules", "fit", "-c", "graph-dit", "--data.path", str(train), "--data.conditions", "[qed, logp]",
                   "--data.batch_size", "8", *TINY, *QUIET, "--trainer.default_root_dir", str(root / "run")])
    assert status == 0
    found = sorted((root / "run").rglob("*.ckpt"))
    assert len(found) == 1, found
    return found[0], train


@pytest.fixture(scope="module")
def generated(trained, tmp_path_factory) -> dict[str, Path]:
    """Files generated once: ``out`` (qed=0.8, 2 atoms each), ``base`` (marginal baseline)."""
    ckpt, _ = trained
    root = tmp_path_factory.mktemp("mol-gen")
    out, base = root / "out.csv", root / "base.csv"
    assert main(["molecules", "generate", "--ckpt", str(ckpt), "-n", "8", "--steps", "3", "--num-atoms", "2",
                 "--condition", "qed=0.8", "-o", str(out)]) == 0
    assert main(["molecules", "generate", "--ckpt", str(ckpt), "-n", "6", "--baseline", "marginal",
                 "-o", str(base)]) == 0
    return {"out": out, "base": base}


def _generate(ckpt: Path, out: Path, *extra: str) -> int:
    return main(["molecules", "generate", "--ckpt", str(ckpt), "-n", "6", "--steps", "3", "-o", str(out), *extra])


# --- registration -------------------------------------------------------------------------------
def test_plugin_is_registered_with_its_commands_and_configs(capsys):
    import importlib

    import yaml

    plugin = Registry().get("molecules")
    assert set(plugin.commands) == {"make-demo-data", "generate", "evaluate"}
    assert set(plugin.config_names()) == {"digress", "graph-dit"}
    for command in plugin.commands:
        assert callable(plugin.load_command(command))
    noises = {}
    for name in plugin.config_names():
        config = yaml.safe_load(plugin.config_resource(name).read_text())
        module, _, cls = config["model"]["class_path"].rpartition(".")
        assert hasattr(importlib.import_module(module), cls), name
        assert config["data"]["class_path"] == "polydiff_molecules.data.MoleculeDataModule", name
        noises[name] = config["model"]["init_args"]["noise"]
    assert noises == {"digress": "marginal", "graph-dit": "joint"}
    assert main(["molecules", "--help"]) == 0
    assert "generate" in capsys.readouterr().out


# --- fit ----------------------------------------------------------------------------------------
def test_fit_checkpoint_loads_with_its_data_description(trained):
    from polydiff_molecules.module import GraphDiffusion

    ckpt, _ = trained
    model = load_model(ckpt)
    assert isinstance(model, GraphDiffusion) and not model.training
    info = model.data_info
    assert info["source"] == "train.csv" and model.noise == "joint"
    assert model.condition_names == ["qed", "logp"]
    assert model.denoiser.dx == 16 and model.denoiser.de == 8 and len(model.denoiser.blocks) == 1  # CLI overrides
    expected_tokens = {a.GetSymbol() + ("+" if a.GetFormalCharge() > 0 else "")
                       for s in SMILES for a in Chem.MolFromSmiles(s).GetAtoms()}
    assert set(info["atom_types"]) <= expected_tokens and "C" in info["atom_types"]
    qed = info["conditions"][0]
    assert qed["kind"] == "numeric" and 0 < qed["min"] < qed["mean"] < qed["max"] < 1
    assert int(model.ema.num_updates) == 3


def test_digress_config_trains_an_unconditional_model(trained, tmp_path, capsys):
    _, train = trained
    status = main(["molecules", "fit", "-c", "digress", "--data.path", str(train), "--data.batch_size", "8", *TINY,
                   *QUIET, "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
                   "--trainer.default_root_dir", str(tmp_path / "run")])
    assert status == 0
    (ckpt,) = (tmp_path / "run").rglob("*.ckpt")
    model = load_model(ckpt)
    assert model.noise == "marginal" and model.condition_names == [] and model.denoiser.condition_kinds == []
    capsys.readouterr()
    assert _generate(ckpt, tmp_path / "u.csv", "--condition", "qed=0.5") == 2
    assert "none (the model is unconditional)" in capsys.readouterr().err
    assert _generate(ckpt, tmp_path / "u.csv", "--guidance", "2") == 0
    assert len(read_generated(tmp_path / "u.csv")) == 6


# --- generate -----------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".sdf", ".csv", ".smi"])
def test_generate_writes_every_format(trained, tmp_path, capsys, suffix):
    ckpt, train = trained
    before = _digest(ckpt), _digest(train)
    out = tmp_path / f"mols{suffix}"
    assert _generate(ckpt, out, "--seed", "1") == 0
    assert out.is_file()
    assert len(read_generated(out)) == 6  # invalid graphs are written too
    printed = capsys.readouterr().out
    assert f"{out}: 6 molecules (3 steps" in printed
    assert (_digest(ckpt), _digest(train)) == before  # inputs are only read


def test_generate_with_a_condition_writes_requested_and_achieved_values(generated, capsys):
    rows = _rows(generated["out"])
    assert len(rows) == 8
    assert list(rows[0]) == ["smiles", "valid", "requested_qed", "qed"]
    assert all(float(r["requested_qed"]) == 0.8 for r in rows)
    valid = [r for r in rows if r["valid"] == "True"]
    assert valid, "2-atom graphs should give some valid molecules"
    for r in rows:
        if r["valid"] == "True":
            assert float(r["qed"]) == pytest.approx(QED.qed(Chem.MolFromSmiles(r["smiles"])), abs=1e-4)
        else:
            assert r["qed"] == ""
    for r in valid:
        assert Chem.MolFromSmiles(r["smiles"]).GetNumAtoms() == 2  # --num-atoms


def test_generate_prints_the_condition_error(trained, tmp_path, capsys):
    ckpt, _ = trained
    out = tmp_path / "q.csv"
    assert _generate(ckpt, out, "--num-atoms", "2", "--condition", "qed=0.8") == 0
    rows = _rows(out)
    achieved = [float(r["qed"]) for r in rows if r["qed"]]
    printed = capsys.readouterr().out
    line = next(x for x in printed.splitlines() if x.startswith("MAE requested vs achieved"))
    assert achieved, "2-atom graphs should give some valid molecules"
    assert line.endswith(f"qed {sum(abs(a - 0.8) for a in achieved) / len(achieved):.3f}")
    assert f"{len(achieved)} valid ({len(achieved) / 6:.1%}); grid in {out.with_name(out.name + '.png')}" in printed
    assert out.with_name(out.name + ".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_generate_in_batches_reports_progress(trained, tmp_path, capsys):
    ckpt, _ = trained
    out = tmp_path / "p.smi"
    assert _generate(ckpt, out, "--batch-size", "4", "--num-atoms", "3") == 0
    err = capsys.readouterr().err
    assert "4/6 molecules" in err and "6/6 molecules" in err
    assert len(out.read_text().splitlines()) == 6


def test_generate_is_reproducible_with_a_seed(trained, tmp_path):
    ckpt, _ = trained
    a, b = tmp_path / "a.smi", tmp_path / "b.smi"
    assert _generate(ckpt, a, "--seed", "5") == 0
    assert _generate(ckpt, b, "--seed", "5") == 0
    assert a.read_text() == b.read_text()


def test_unknown_condition_names_the_trained_ones(trained, tmp_path, capsys):
    ckpt, _ = trained
    out = tmp_path / "x.csv"
    assert _generate(ckpt, out, "--condition", "foo=1") == 2
    err = capsys.readouterr().err
    assert "foo" in err and "trained conditions: qed, logp" in err
    assert not out.exists()


def test_out_of_range_condition_warns_how_far(trained, tmp_path, capsys):
    ckpt, _ = trained
    top = load_model(ckpt).data_info["conditions"][1]
    assert top["name"] == "logp"
    assert _generate(ckpt, tmp_path / "far.csv", "--condition", "logp=50") == 0
    err = capsys.readouterr().err
    distance = 50 - top["max"]
    assert f"warning: condition logp=50 is {distance:.3g} above the training maximum {top['max']:g}" in err
    assert f"({distance / top['std']:.2f} training standard deviations)" in err


def test_existing_output_is_refused_and_left_unchanged(trained, tmp_path, capsys):
    ckpt, _ = trained
    out = tmp_path / "keep.csv"
    out.write_text("smiles\nCCO\n")
    assert _generate(ckpt, out) == 1
    assert out.read_text() == "smiles\nCCO\n"
    assert f"{out} exists; pass --overwrite" in capsys.readouterr().err
    assert _generate(ckpt, out, "--overwrite") == 0
    assert len(read_generated(out)) == 6


def test_output_over_the_checkpoint_is_refused(trained, capsys):
    ckpt, _ = trained
    before = _digest(ckpt)
    assert main(["molecules", "generate", "--ckpt", str(ckpt), "-n", "2", "-o", str(ckpt.with_suffix(".csv")),
                 "--png", str(ckpt)]) == 1
    assert "is the checkpoint" in capsys.readouterr().err
    assert _digest(ckpt) == before


def test_foreign_checkpoints_are_refused_with_a_clear_message(trained, tmp_path, capsys):
    ckpt, _ = trained
    other = tmp_path / "timeseries.ckpt"
    torch.save({"polydiff": {"format": 1, "plugin": "timeseries"}, "state_dict": {}}, other)
    assert _generate(other, tmp_path / "a.csv") == 1
    assert "is a checkpoint of plugin 'timeseries', not 'molecules'" in capsys.readouterr().err
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"this is not a checkpoint at all")
    assert _generate(junk, tmp_path / "b.csv") == 1
    assert "not a torch checkpoint" in capsys.readouterr().err
    assert _generate(tmp_path / "missing.ckpt", tmp_path / "c.csv") == 1
    assert "no such checkpoint file" in capsys.readouterr().err
    # a molecules checkpoint without its data description
    stripped = tmp_path / "stripped.ckpt"
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    del checkpoint["molecules"]
    torch.save(checkpoint, stripped)
    assert _generate(stripped, tmp_path / "d.csv") == 1
    assert "has no 'molecules' record" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in ("a.csv", "b.csv", "c.csv", "d.csv"))


def test_marginal_baseline(generated, trained, tmp_path, capsys):
    assert len(read_generated(generated["base"])) == 6
    ckpt, _ = trained
    out = tmp_path / "base.smi"
    assert main(["molecules", "generate", "--ckpt", str(ckpt), "-n", "5", "--baseline", "marginal",
                 "--num-atoms", "3", "-o", str(out)]) == 0
    assert "marginal baseline" in capsys.readouterr().out
    lines = out.read_text().splitlines()
    assert len(lines) == 5
    for line in lines:  # raw SMILES of the (mostly invalid) graphs still hold three heavy atoms
        mol = Chem.MolFromSmiles(line, sanitize=False)
        assert mol is None or mol.GetNumAtoms() == 3
    assert main(["molecules", "generate", "--ckpt", str(ckpt), "-n", "5", "--baseline", "marginal",
                 "--condition", "qed=0.5", "-o", str(tmp_path / "x.csv")]) == 2
    assert "ignores conditions" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["-n", "0"], "must be positive"),
        (["--steps", "0"], "must be positive"),
        (["--num-atoms", "0"], "--num-atoms must be positive"),
        (["--condition", "qed"], "must look like name=value"),
        (["--condition", "qed=0.5", "--condition", "qed=0.6"], "given twice"),
    ],
)
def test_generate_usage_errors(trained, tmp_path, capsys, extra, message):
    ckpt, _ = trained
    assert main(["molecules", "generate", "--ckpt", str(ckpt), "-o", str(tmp_path / "x.csv"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_generate_refuses_an_unknown_output_kind(trained, tmp_path, capsys):
    ckpt, _ = trained
    assert main(["molecules", "generate", "--ckpt", str(ckpt), "-o", str(tmp_path / "x.txt")]) == 2
    assert "must end in .sdf, .csv or .smi" in capsys.readouterr().err


# --- evaluate -----------------------------------------------------------------------------------
def _known_file(path: Path) -> Path:
    # 4 generated: two ethanols (in the training set), octane (new) and a pentavalent carbon
    path.write_text("CCO\nCCO\nCCCCCCCC\nC(C)(C)(C)(C)C\n")
    return path


def test_evaluate_prints_one_row_per_file_and_writes_json(generated, trained, tmp_path, capsys):
    _, train = trained
    known = _known_file(tmp_path / "known.smi")
    report = tmp_path / "r.json"
    files = [generated["out"], generated["base"], known]
    before = [_digest(p) for p in files]
    assert main(["molecules", "evaluate", *map(str, files), "--reference", str(train), "--condition", "qed=0.8",
                 "--json", str(report)]) == 0
    assert [_digest(p) for p in files] == before
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["file", "n", "validity", "uniqueness", "novelty", "connected", "kl_score", "mae_qed"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:4]}
    assert set(rows) == {"out.csv", "base.csv", "known.smi"}
    assert rows["out.csv"][0] == "8" and rows["base.csv"][0] == "6"
    # the hand-made file: 3 of 4 valid, 2 unique, one of them new, 3 in one piece
    ethanol, octane = (QED.qed(Chem.MolFromSmiles(s)) for s in ("CCO", "CCCCCCCC"))
    qed_mae = (2 * abs(ethanol - 0.8) + abs(octane - 0.8)) / 3
    assert rows["known.smi"][:5] == ["4", "0.750", "0.667", "0.500", "0.750"]
    assert rows["known.smi"][6] == f"{qed_mae:.3f}"
    data = json.loads(report.read_text())
    assert set(data) == {str(p) for p in files}
    known_result = data[str(known)]
    assert known_result["n_generated"] == 4 and known_result["n_valid"] == 3 and known_result["n_novel"] == 1
    assert known_result["validity"] == 0.75 and known_result["novelty"] == 0.5
    assert known_result["mae_qed"] == pytest.approx(qed_mae)
    assert 0 <= data[str(generated["out"])]["validity"] <= 1


def test_evaluate_goes_on_past_a_missing_file(generated, tmp_path, capsys):
    known = _known_file(tmp_path / "known.smi")
    missing = tmp_path / "missing.csv"
    report = tmp_path / "r.json"
    assert main(["molecules", "evaluate", str(missing), str(known), "--json", str(report)]) == 1
    captured = capsys.readouterr()
    assert "missing.csv" in captured.err
    lines = captured.out.splitlines()
    assert lines[1].split()[:3] == ["known.smi", "4", "0.750"]
    assert not any(line.startswith("missing.csv") for line in lines)
    assert set(json.loads(report.read_text())) == {str(known)}
    assert json.loads(report.read_text())[str(known)]["novelty"] is None  # no reference: undefined


def test_evaluate_refusals(generated, tmp_path, capsys):
    out = str(generated["out"])
    assert main(["molecules", "evaluate", out, "--condition", "foo=1"]) == 2
    assert "evaluate can measure only qed, logp, mw, sa, rings" in capsys.readouterr().err
    report = tmp_path / "r.json"
    report.write_text("{}")
    assert main(["molecules", "evaluate", out, "--json", str(report)]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err and report.read_text() == "{}"
    assert main(["molecules", "evaluate", out, "--reference", str(tmp_path / "none.csv")]) == 1
    assert "none.csv" in capsys.readouterr().err
    empty = tmp_path / "empty.smi"
    empty.write_text("")
    assert main(["molecules", "evaluate", str(empty)]) == 1
    assert "empty.smi: no molecules" in capsys.readouterr().err


# --- parse_conditions ---------------------------------------------------------------------------
def test_parse_conditions():
    assert parse_conditions([]) == {}
    got = parse_conditions(["qed=0.8", " logp = -2 ", "mw=1e2", "scaffold=benzene", "smarts=C=O"])
    assert got == {"qed": 0.8, "logp": -2.0, "mw": 100.0, "scaffold": "benzene", "smarts": "C=O"}
    assert isinstance(got["logp"], float)
    for bad, match in [("qed", "name=value"), ("=1", "name=value"), ("qed=", "name=value"), ("qed= ", "name=value")]:
        with pytest.raises(ValueError, match=match):
            parse_conditions([bad])
    with pytest.raises(ValueError, match="given twice"):
        parse_conditions(["qed=1", "qed =2"])
    assert math.isnan(parse_conditions(["x=nan"])["x"])  # a number, refused later by the model
