"""The 3D plugin's commands as a user drives them, end to end on a tiny corpus.

``make-demo-data`` writes 10 chairs and 10 vases, 3 textures per label and 2 scans once per
module (Debian's CGAL meshes are left out: their scans take longer than the rest together); a
tiny point model and a tiny texture model are trained two steps each with the bundled configs,
and every command test reuses them. The models are far from trained: the tests check exit
statuses, refusals and their messages, the files written and what completion must keep exactly.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
trimesh = pytest.importorskip("trimesh")

from polydiff.checkpoint import CheckpointError  # noqa: E402
from polydiff.cli import main  # noqa: E402
from polydiff_3d import scans as scans_module  # noqa: E402
from polydiff_3d.commands import complete, generate, load_point_model, make_demo_data, texture  # noqa: E402
from polydiff_3d.images import TEXTURE_LABELS  # noqa: E402
from polydiff_3d.pointio import read_points  # noqa: E402
from polydiff_3d.scans import backproject_depth  # noqa: E402

torch.set_num_threads(1)

QUIET = ["--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
         "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary",
         "false"]


def _run(fn, argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = fn(list(map(str, argv)))
    return status, out.getvalue(), err.getvalue()


def _files(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    """(OUT, printed summary) of ``polydiff 3d make-demo-data`` through the CLI."""
    out = tmp_path_factory.mktemp("demo") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scans_module, "cgal_meshes", lambda: [])
        status, printed, _ = _run(lambda argv: main(["3d", "make-demo-data", *argv]),
                                  [out, "--per-category", 10, "--textures-per-label", 3, "--scans", 2,
                                   "--categories", "chair", "vase", "--texture-size", 16])
    assert status == 0
    return out, json.loads(printed)


@pytest.fixture(scope="module")
def point_ckpt(corpus, tmp_path_factory) -> Path:
    out, _ = corpus
    run = tmp_path_factory.mktemp("fit-points")
    status = main(["3d", "fit", "-c", "points", "--data.root", str(out / "shapes"), "--data.points", "64",
                   "--data.cache_points", "128", "--data.batch_size", "4",
                   "--model.init_args.denoiser.init_args.channels", "[8, 8]",
                   "--model.init_args.denoiser.init_args.resolutions", "[4, 4]",
                   "--model.init_args.denoiser.init_args.emb_dim", "16", "--model.init_args.sample_steps", "2",
                   *QUIET, "--trainer.default_root_dir", str(run)])
    assert status == 0
    (ckpt,) = sorted(run.rglob("*.ckpt"))
    return ckpt


@pytest.fixture(scope="module")
def texture_ckpt(corpus, tmp_path_factory) -> Path:
    out, _ = corpus
    run = tmp_path_factory.mktemp("fit-texture")
    status = main(["3d", "fit", "-c", "texture", "--data.root", str(out / "textures"), "--data.size", "16",
                   "--data.batch_size", "4", "--model.init_args.denoiser.init_args.channels", "8",
                   "--model.init_args.denoiser.init_args.channel_mult", "[1]", "--model.init_args.sample_steps", "2",
                   *QUIET, "--trainer.default_root_dir", str(run)])
    assert status == 0
    (ckpt,) = sorted(run.rglob("*.ckpt"))
    return ckpt


# --- make-demo-data ------------------------------------------------------------------------------
def test_make_demo_data_writes_the_layout_and_summary(corpus):
    out, summary = corpus
    assert summary["splits"] == {"train": 16, "val": 2, "test": 2}
    assert summary["categories"] == ["chair", "vase"]
    for split, count in (("train", 8), ("val", 1), ("test", 1)):
        for category in ("chair", "vase"):
            assert len(list((out / "shapes" / split / category).glob("*.ply"))) == count
    for label in TEXTURE_LABELS:
        assert len(list((out / "textures" / label).glob("*.png"))) == 3
    assert Path(summary["uv_mesh"]) == out / "uv_vase.obj" and (out / "uv_vase.obj").is_file()
    assert len(summary["scans"]) == 2 and summary["cgal_scans"] == []
    for scan in summary["scans"]:
        assert len(read_points(scan)) >= 16


def test_make_demo_data_refuses_a_non_empty_folder(corpus):
    out, _ = corpus
    before = _files(out)
    status, _, err = _run(make_demo_data, [out, "--per-category", 10, "--textures-per-label", 3, "--scans", 2])
    assert status == 1
    assert "--overwrite" in err and str(out / "shapes") in err
    assert _files(out) == before


# --- generate ------------------------------------------------------------------------------------
def test_generate_writes_clouds_meshes_and_turntables(point_ckpt, tmp_path: Path):
    gen = tmp_path / "gen"
    argv = ["--ckpt", point_ckpt, "-n", 2, "--steps", 2, "--category", "chair", "-o", gen, "--mesh-resolution", 24]
    status, printed, err = _run(generate, argv)
    assert status == 0, err
    for i in range(2):
        assert len(read_points(gen / f"chair_{i:03d}.ply")) == 64
        assert len(trimesh.load(gen / f"chair_{i:03d}_mesh.obj", force="mesh").faces) > 0
        assert (gen / f"chair_{i:03d}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(printed)["failed"] == 0
    before = _files(gen)
    status, _, err = _run(generate, argv)
    assert status == 1 and "--overwrite" in err and "chair_000.ply" in err
    assert _files(gen) == before
    status, _, err = _run(generate, [*argv, "--overwrite", "--no-mesh", "--no-render"])
    assert status == 0, err
    assert _files(gen)["chair_000.ply"] != before["chair_000.ply"]


def test_generate_unknown_category(point_ckpt, tmp_path: Path):
    status, _, err = _run(generate, ["--ckpt", point_ckpt, "-n", 1, "--category", "sofa", "-o", tmp_path / "g"])
    assert status == 1
    assert "'sofa'" in err and "chair, vase" in err
    assert not (tmp_path / "g").exists()


# --- complete ------------------------------------------------------------------------------------
def _nearest_gap(points: np.ndarray, cloud: np.ndarray) -> float:
    return float(np.abs(points[:, None, :] - cloud[None]).max(-1).min(-1).max())


def test_complete_keeps_going_past_a_bad_partial(corpus, point_ckpt, tmp_path: Path):
    out, summary = corpus
    good = Path(summary["scans"][0])
    bad = tmp_path / "bad.npy"
    cloud = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    cloud[5, 1] = np.nan
    np.save(bad, cloud)
    target = tmp_path / "done"
    status, _, err = _run(complete, ["--ckpt", point_ckpt, "--partial", good, "--partial", bad, "--steps", 2,
                                     "-o", target, "--category", "chair"])
    assert status == 1
    assert str(bad) in err
    written = read_points(target / f"{good.stem}_completed.ply")
    assert written.shape == (64, 3)
    # The first half are observed points, kept exactly.
    assert _nearest_gap(written[:32], read_points(good)) < 1e-4
    assert not list(target.glob("bad*"))


def test_complete_from_a_depth_image(point_ckpt, tmp_path: Path):
    depth = np.full((8, 8), 2.0, dtype=np.float32)
    depth[0, :] = 0.0  # missing pixels are skipped
    depth[3:5, 3:5] = 1.5
    np.save(tmp_path / "depth.npy", depth)
    target = tmp_path / "from_depth.ply"
    status, printed, err = _run(complete, ["--ckpt", point_ckpt, "--depth", tmp_path / "depth.npy",
                                           "--intrinsics", 10, 10, 3.5, 3.5, "--steps", 2, "-o", target])
    assert status == 0, err
    assert json.loads(printed)["completed"] == 1
    written = read_points(target)
    observed = backproject_depth(depth, 10, 10, 3.5, 3.5)
    assert len(observed) == 56
    assert _nearest_gap(written[:32], observed) < 1e-4
    # Existing output is refused.
    status, _, err = _run(complete, ["--ckpt", point_ckpt, "--depth", tmp_path / "depth.npy",
                                     "--intrinsics", 10, 10, 3.5, 3.5, "--steps", 2, "-o", target])
    assert status == 1 and "--overwrite" in err


# --- texture -------------------------------------------------------------------------------------
def test_texture_writes_glb_texture_and_views(corpus, texture_ckpt, tmp_path: Path):
    out, _ = corpus
    target = tmp_path / "tex" / "vase.glb"
    target.parent.mkdir()
    status, printed, err = _run(texture, ["--mesh", out / "uv_vase.obj", "--ckpt", texture_ckpt, "--views", 2,
                                          "--steps", 2, "--texture-size", 32, "--label", "stripes", "-o", target])
    assert status == 0, err
    result = json.loads(printed)
    assert result["views"] == 2 and 0 < result["coverage"] <= 1
    assert len(trimesh.load(target, force="mesh").faces) > 0
    from PIL import Image

    with Image.open(target.with_name("vase_texture.png")) as image:
        assert image.size == (32, 32)
    with Image.open(target.with_name("vase_views.png")) as image:
        assert image.size == (2 * 16, 16)  # the views side by side at the model's image size
    status, _, err = _run(texture, ["--mesh", out / "uv_vase.obj", "--ckpt", texture_ckpt, "--views", 2,
                                    "--steps", 2, "-o", target])
    assert status == 1 and "--overwrite" in err


def test_texture_refuses_a_mesh_without_uvs(texture_ckpt, tmp_path: Path):
    box = tmp_path / "box.ply"
    trimesh.creation.box().export(box)
    status, _, err = _run(texture, ["--mesh", box, "--ckpt", texture_ckpt, "--views", 2, "--steps", 2,
                                    "-o", tmp_path / "box.glb"])
    assert status == 1
    assert str(box) in err and "--unwrap" in err
    assert not (tmp_path / "box.glb").exists()


def test_checkpoints_of_the_wrong_kind_are_named(point_ckpt, texture_ckpt, tmp_path: Path):
    with pytest.raises(CheckpointError, match="texture-denoiser checkpoint, not a point-cloud model"):
        load_point_model(texture_ckpt)
    status, _, err = _run(generate, ["--ckpt", texture_ckpt, "-n", 1, "-o", tmp_path / "g"])
    assert status == 1 and "polydiff 3d texture" in err
    status, _, err = _run(texture, ["--mesh", tmp_path / "none.obj", "--ckpt", point_ckpt, "-o", tmp_path / "t.glb"])
    assert status == 1 and "point-cloud checkpoint" in err


def test_texture_with_a_local_diffusers_unet(corpus, tmp_path: Path):
    diffusers = pytest.importorskip("diffusers")
    out, _ = corpus
    unet = diffusers.UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                                 layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"))
    unet.save_pretrained(tmp_path / "unet")
    target = tmp_path / "d.glb"
    status, printed, err = _run(texture, ["--mesh", out / "uv_vase.obj", "--diffusers", tmp_path / "unet", "--views", 3,
                                          "--steps", 2, "--texture-size", 16, "-o", target])
    assert status == 0, err
    result = json.loads(printed)
    assert result["views"] == 3 and target.exists()
    from PIL import Image

    with Image.open(target.with_name("d_views.png")) as image:
        assert image.size == (3 * 16, 16)  # the views at the UNet's sample size
    # A class index for a model without class embeddings is refused, naming the folder.
    status, _, err = _run(texture, ["--mesh", out / "uv_vase.obj", "--diffusers", tmp_path / "unet",
                                    "--class-index", "1", "-o", tmp_path / "e.glb"])
    assert status == 1 and "class embedding" in err and "unet" in err
    status, _, err = _run(texture, ["--mesh", out / "uv_vase.obj", "--diffusers", tmp_path / "missing",
                                    "-o", tmp_path / "f.glb"])
    assert status == 1 and "missing" in err
