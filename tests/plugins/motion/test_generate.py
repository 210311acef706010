"""``polydiff motion generate`` and ``make-demo-data`` end to end, through the command line.

A tiny model (one transformer layer of width 32) is trained for two steps on a 40-clip
procedural corpus once for the module; its motions are meaningless, but every path of the
command (text, batches with bad requests, timelines, editing, overwriting, wrong checkpoints)
runs for real with 3 sampling steps. Editing is checked on what the command wrote: the known
values are imposed exactly at the end of sampling, so the kept frames or channels match the
source up to the float32 normalisation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytorch_lightning")

from polydiff.cli import main  # noqa: E402
from polydiff_motion.bvh import read_bvh  # noqa: E402
from polydiff_motion.control import part_channels  # noqa: E402
from polydiff_motion.features import FEATURE_DIM  # noqa: E402
from polydiff_motion.procedural import generate_corpus, write_humanml3d  # noqa: E402

STEPS = ["--steps", "3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("generate")
    root, run = base / "data", base / "run"
    write_humanml3d(root, generate_corpus(40, seed=0))
    status = main(["motion", "fit", "-c", "t2m", "--data.root", str(root),
                   "--data.init_args.text_encoder", "hashing", "--data.init_args.batch_size", "4",
                   "--model.init_args.denoiser.init_args.dim", "32", "--model.init_args.denoiser.init_args.ff", "64",
                   "--model.init_args.denoiser.init_args.layers", "1",
                   "--model.init_args.denoiser.init_args.text_dim", "64", "--trainer.max_steps", "2",
                   "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
                   "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(run)])
    assert status == 0
    (ckpt,) = (run / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt")
    return {"root": root, "ckpt": ckpt}


def _generate(trained, *args) -> int:
    return main(["motion", "generate", "--ckpt", str(trained["ckpt"]), *STEPS, *map(str, args)])


def _source(trained, tmp_path, frames=40) -> tuple[Path, np.ndarray]:
    ids = (trained["root"] / "train.txt").read_text().split()
    features = np.load(trained["root"] / "new_joint_vecs" / f"{ids[0]}.npy")[:frames]
    path = tmp_path / "source.npy"
    np.save(path, features)
    return path, features


def test_text_to_bvh_npz_and_gif(trained, tmp_path, capsys):
    out = tmp_path / "walk.bvh"
    assert _generate(trained, "--text", "a person walks forward", "--seconds", "1.5", "--render", "-o", out) == 0
    printed = capsys.readouterr().out.split()
    assert set(printed) == {str(out), str(out.with_suffix(".npz")), str(out.with_suffix(".gif"))}
    archive = np.load(out.with_suffix(".npz"))
    assert archive["features"].shape == (30, FEATURE_DIM)
    assert archive["positions"].shape == (30, 22, 3)
    assert float(archive["fps"]) == 20.0 and str(archive["text"]) == "a person walks forward"
    assert np.isfinite(archive["features"]).all()
    assert read_bvh(out).n_frames == 30
    from PIL import Image

    with Image.open(out.with_suffix(".gif")) as image:
        assert image.n_frames == 30


def test_npz_output_and_several_samples(trained, tmp_path):
    assert _generate(trained, "--text", "a person jumps", "--seconds", "1", "-o", tmp_path / "jump.npz") == 0
    assert np.load(tmp_path / "jump.npz")["features"].shape == (20, FEATURE_DIM)
    assert not (tmp_path / "jump.bvh").exists()
    assert _generate(trained, "--text", "a person jumps", "--seconds", "1", "--samples", "2",
                     "-o", tmp_path / "many") == 0
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["000.bvh", "000.npz", "001.bvh", "001.npz"]


def test_bad_requests_are_named_and_the_rest_is_written(trained, tmp_path, capsys):
    out = tmp_path / "batch"
    status = _generate(trained, "--text", "a person waves", "--text", "  ", "--text", "a person runs",
                       "--seconds", "1", "1", "30", "-o", out)
    assert status == 1
    err = capsys.readouterr().err
    assert "request 2 ('  '): the text is empty" in err
    assert "request 3 ('a person runs'): 30.0 s is 600 frames; the model generates 1 to 196 frames" in err
    assert sorted(p.name for p in out.iterdir()) == ["000.bvh", "000.npz"]
    assert np.load(out / "000.npz")["features"].shape == (20, FEATURE_DIM)


def test_timeline_generation(trained, tmp_path):
    timeline = tmp_path / "timeline.json"
    timeline.write_text(json.dumps({"duration": 2.0, "intervals": [
        {"text": "a person walks forward", "start": 0.0, "end": 2.0, "body_parts": ["legs"]},
        {"text": "a person waves the right hand", "start": 0.5, "end": 1.5, "body_parts": ["right_arm"]}]}))
    out = tmp_path / "timeline.bvh"
    assert _generate(trained, "--timeline", timeline, "-o", out) == 0
    archive = np.load(out.with_suffix(".npz"))
    assert archive["features"].shape == (40, FEATURE_DIM)
    assert str(archive["text"]) == "a person walks forward and a person waves the right hand"
    assert read_bvh(out).n_frames == 40
    assert _generate(trained, "--timeline", timeline, "--samples", "2", "--physics", "-o", tmp_path / "several") == 0
    for name in ("000.npz", "001.npz"):
        assert np.load(tmp_path / "several" / name)["features"].shape == (40, FEATURE_DIM)


def test_physics_projection_leaves_no_penetration(trained, tmp_path):
    out = tmp_path / "physics.npz"
    assert _generate(trained, "--text", "a person walks", "--seconds", "2", "--physics", "-o", out) == 0
    positions = np.load(out)["positions"]
    assert positions.shape == (40, 22, 3)
    assert float(positions[..., 1].min()) > -1e-4


@pytest.mark.parametrize("option", [["--sampler", "nonsense"], ["--steps", "0"]])
def test_bad_sampling_options_are_usage_errors(trained, tmp_path, capsys, option):
    status = main(["motion", "generate", "--ckpt", str(trained["ckpt"]), "--text", "x", "--seconds", "1", *option,
                   "-o", str(tmp_path / "a.bvh")])
    assert status == 2
    assert option[0] in capsys.readouterr().err


def test_wrong_output_suffix_is_named(trained, tmp_path, capsys):
    assert _generate(trained, "--text", "x", "--seconds", "1", "-o", tmp_path / "walk.gif") == 2
    err = capsys.readouterr().err
    assert ".bvh" in err and "several motions" not in err


def test_bad_timeline_and_usage_errors(trained, tmp_path, capsys):
    timeline = tmp_path / "long.json"
    timeline.write_text(json.dumps({"intervals": [{"text": "a person walks", "start": 0, "end": 12}]}))
    assert _generate(trained, "--timeline", timeline, "-o", tmp_path / "t.bvh") == 1
    assert f"{timeline}: the duration 12.0 s is longer than the model's 9.8 s" in capsys.readouterr().err
    assert _generate(trained, "--timeline", timeline, "--text", "x", "-o", tmp_path / "t.bvh") == 2
    assert _generate(trained, "--edit", "in-between", "--text", "x", "-o", tmp_path / "t.bvh") == 2
    assert _generate(trained, "--text", "x", "--text", "y", "-o", tmp_path / "t.bvh") == 2
    assert not list(tmp_path.glob("t.*"))


def test_inbetween_keeps_the_sources_ends(trained, tmp_path):
    source_path, source = _source(trained, tmp_path)
    out = tmp_path / "between.bvh"
    assert _generate(trained, "--edit", "in-between", "--source", source_path, "--keep", "0.5",
                     "--text", "a person jumps", "-o", out) == 0
    written = np.load(out.with_suffix(".npz"))["features"]
    assert written.shape == source.shape
    scale = np.abs(source).max(0) + 1.0
    assert np.allclose(written[:10], source[:10], atol=1e-3 * scale.max())
    assert np.allclose(written[-10:], source[-10:], atol=1e-3 * scale.max())
    assert not np.allclose(written[10:30], source[10:30], atol=1e-2)


def test_keep_lower_keeps_the_legs_channels(trained, tmp_path):
    source_path, source = _source(trained, tmp_path, frames=30)
    out = tmp_path / "upper.npz"
    assert _generate(trained, "--edit", "keep-lower", "--source", source_path, "--text", "a person waves",
                     "-o", out) == 0
    written = np.load(out)["features"]
    legs = part_channels(["lower_body"])
    others = part_channels(["upper_body"])
    assert np.allclose(written[:, legs], source[:, legs], atol=1e-3)
    assert not np.allclose(written[:, others], source[:, others], atol=1e-2)


def test_keep_upper_from_a_generated_bvh(trained, tmp_path):
    first = tmp_path / "first.bvh"
    assert _generate(trained, "--text", "a person walks", "--seconds", "1.5", "-o", first) == 0
    out = tmp_path / "edited.npz"
    assert _generate(trained, "--edit", "keep-upper", "--source", first, "--text", "a person kicks", "-o", out) == 0
    from polydiff_motion.export import read_motion_source

    source = read_motion_source(first)
    written = np.load(out)["features"]
    assert written.shape == source.shape == (29, FEATURE_DIM)  # features of T positions have T - 1 rows
    upper = part_channels(["upper_body"])
    assert np.allclose(written[:, upper], source[:, upper], atol=1e-3)


def test_edit_source_errors(trained, tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((10, 100), np.float32))
    assert _generate(trained, "--edit", "in-between", "--source", bad, "--text", "x", "-o", tmp_path / "e.bvh") == 1
    assert f"{bad}: features must have shape" in capsys.readouterr().err
    short = tmp_path / "short.npy"
    np.save(short, np.zeros((15, FEATURE_DIM), np.float32))
    assert _generate(trained, "--edit", "in-between", "--source", short, "--keep", "0.5", "--text", "x",
                     "-o", tmp_path / "e.bvh") == 1
    assert f"{short}: keeping 10 + 10 frames leaves nothing to generate" in capsys.readouterr().err
    assert not list(tmp_path.glob("e.*"))


def test_existing_outputs_are_refused_without_overwrite(trained, tmp_path, capsys):
    out = tmp_path / "walk.bvh"
    assert _generate(trained, "--text", "a person walks", "--seconds", "1", "-o", out) == 0
    before = {p: p.read_bytes() for p in (out, out.with_suffix(".npz"))}
    assert _generate(trained, "--text", "a person runs", "--seconds", "2", "-o", out) == 1
    assert "exist(s); pass --overwrite to replace" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before
    # Only the npz exists: the BVH is refused too, since they go together.
    out.unlink()
    assert _generate(trained, "--text", "a person runs", "--seconds", "2", "-o", out) == 1
    assert not out.exists()
    assert _generate(trained, "--text", "a person runs", "--seconds", "2", "-o", out, "--overwrite") == 0
    assert read_bvh(out).n_frames == 40


def test_wrong_checkpoints_are_refused(trained, tmp_path, capsys):
    text_file = tmp_path / "notes.ckpt"
    text_file.write_text("not a checkpoint")
    status = main(["motion", "generate", "--ckpt", str(text_file), "--text", "x", "-o", str(tmp_path / "a.bvh")])
    assert status == 1
    err = capsys.readouterr().err
    assert "polydiff motion: error:" in err and str(text_file) in err and "not a torch checkpoint" in err

    checkpoint = torch.load(trained["ckpt"], map_location="cpu", weights_only=False)
    checkpoint["polydiff"]["plugin"] = "policy"
    other = tmp_path / "policy.ckpt"
    torch.save(checkpoint, other)
    status = main(["motion", "generate", "--ckpt", str(other), "--text", "x", "-o", str(tmp_path / "a.bvh")])
    assert status == 1
    assert f"{other} is a checkpoint of plugin 'policy', not 'motion'" in capsys.readouterr().err

    checkpoint["polydiff"]["plugin"] = "motion"
    del checkpoint["motion"]
    torch.save(checkpoint, other)
    status = main(["motion", "generate", "--ckpt", str(other), "--text", "x", "-o", str(tmp_path / "a.bvh")])
    assert status == 1
    assert "has no 'motion' record" in capsys.readouterr().err

    missing = tmp_path / "missing.ckpt"
    assert main(["motion", "generate", "--ckpt", str(missing), "--text", "x", "-o", str(tmp_path / "a.bvh")]) == 1
    assert str(missing) in capsys.readouterr().err
    assert not list(tmp_path.glob("a.*"))


def test_make_demo_data(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["motion", "make-demo-data", str(out), "--clips", "12", "--text-encoder", "hashing"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sum(summary["clips"].values()) == 12
    for name in ("train.txt", "val.txt", "test.txt", "Mean.npy", "Std.npy"):
        assert (out / name).is_file(), name
    ids = [i for part in ("train", "val", "test") for i in (out / f"{part}.txt").read_text().split()]
    assert len(ids) == 12
    for i in ids:
        assert np.load(out / "new_joint_vecs" / f"{i}.npy").shape[1] == FEATURE_DIM
        assert (out / "new_joints" / f"{i}.npy").is_file() and (out / "texts" / f"{i}.txt").is_file()
    caches = [p for p in out.iterdir() if p.suffix == ".npz"]
    assert len(caches) == 1  # the caption embeddings

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert main(["motion", "make-demo-data", str(out), "--clips", "12", "--text-encoder", "hashing"]) == 1
    assert "exists and is not empty" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    assert main(["motion", "make-demo-data", str(out), "--clips", "12", "--text-encoder", "none", "--overwrite"]) == 0
    assert main(["motion", "make-demo-data", str(tmp_path / "few"), "--clips", "5"]) == 2


def test_smpl_pose_file_beside_the_bvh(trained, tmp_path):
    pytest.importorskip("smplx")
    from polydiff_motion.formats import read_amass
    from polydiff_motion.skeleton import SMPL22

    rest = SMPL22.rest_positions()
    model = tmp_path / "SMPL_NEUTRAL.npz"
    np.savez(model, v_template=rest, shapedirs=np.zeros((22, 3, 10)), posedirs=np.zeros((22, 3, 189)),
             J_regressor=np.eye(22), weights=np.eye(22),
             kintree_table=np.stack([np.array((0,) + SMPL22.parents[1:]), np.arange(22)]), f=np.array([[0, 1, 2]]))
    out = tmp_path / "walk.bvh"
    assert _generate(trained, "--text", "a person walks", "--seconds", "2", "--smpl-model", model, "-o", out) == 0
    smpl = tmp_path / "walk.smpl.npz"
    positions = np.load(tmp_path / "walk.npz")["positions"]
    back = read_amass(smpl, model, fps=20.0)
    assert back.shape == positions.shape
    # The model's bones are SMPL22's, not the generated motion's, so joints agree in direction,
    # and the pelvis exactly.
    np.testing.assert_allclose(back[:, 0], positions[:, 0], atol=1e-4)
