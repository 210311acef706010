"""2D-to-3D pose lifting: cameras, the bone representation, the data, the lifters and ``polydiff motion lift``.

Cameras and the bone/position conversions are checked against hand-computed values and round
trips; the data module on a tiny procedural corpus (noise-free projections must be explained
exactly by a translation, validation windows are the same in every run); the reprojection
aggregation on a constructed case where each joint's right hypothesis is known. Two tiny lifters
(diffusion in bone space, and the deterministic baseline) are fitted for three steps through the
CLI, and every command test reuses their checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import polydiff_motion  # noqa: E402
from polydiff.cli import main  # noqa: E402
from polydiff_motion.lifting import (  # noqa: E402
    NUM_JOINTS,
    DeterministicLifter,
    LiftingDataModule,
    LiftingDiffusion,
    _window_plan,
    aggregate_hypotheses,
    bones_to_positions,
    estimate_translation,
    evaluate_lifter,
    lift_command,
    load_lifter,
    look_at,
    orbit_camera,
    pose_to_state,
    positions_to_bones,
    project,
    state_dim,
    state_to_pose,
)
from polydiff_motion.skeleton import SMPL22, SMPL22_NAMES  # noqa: E402

QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary",
         "false", "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.max_steps", "3",
         "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "1"]
TINY = ["--model.init_args.denoiser.init_args.dim", "16", "--model.init_args.denoiser.init_args.layers", "1",
        "--model.init_args.denoiser.init_args.heads", "2", "--model.init_args.denoiser.init_args.ff", "32",
        "--data.init_args.window", "8", "--data.init_args.batch_size", "4", "--data.init_args.eval_windows", "1"]


# --- cameras ------------------------------------------------------------------------------------
def test_look_at_and_projection_by_hand():
    rotation = look_at(np.array([0.0, 1.0, -4.0]), np.array([0.0, 1.0, 0.0]))
    # Looking along +z with y up: the image's right is world -x and its down is world -y.
    np.testing.assert_allclose(rotation, [[-1, 0, 0], [0, -1, 0], [0, 0, 1]], atol=1e-12)
    camera = rotation @ (np.array([0.5, 1.5, 0.0]) - [0.0, 1.0, -4.0])
    np.testing.assert_allclose(camera, [-0.5, -0.5, 4.0], atol=1e-12)
    np.testing.assert_allclose(project(camera), [-0.125, -0.125], atol=1e-12)


def test_orbit_camera_faces_the_body_and_looks_at_the_target():
    target = np.array([0.3, 0.9, -0.2])
    rotation, position = orbit_camera(target, 0.0, 0.0, 4.0)
    np.testing.assert_allclose(position, target + [0.0, 0.0, 4.0], atol=1e-12)
    # From the front of a body facing +z, its left (+x) is on the image's right.
    np.testing.assert_allclose(rotation, [[1, 0, 0], [0, -1, 0], [0, 0, -1]], atol=1e-12)
    rotation, position = orbit_camera(target, math.radians(90), math.radians(30), 5.0)
    np.testing.assert_allclose(position, target + 5.0 * np.array([math.cos(math.radians(30)), 0.5, 0.0]), atol=1e-12)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    seen = rotation @ (target - position)
    np.testing.assert_allclose(seen, [0.0, 0.0, 5.0], atol=1e-12)
    above = rotation @ (target + [0.0, 1.0, 0.0] - position)
    assert above[1] < 0  # up in the world is up (negative y) in the image
    with pytest.raises(ValueError, match="up direction"):
        look_at(np.array([0.0, 5.0, 0.0]), np.zeros(3))


# --- the pose representation -------------------------------------------------------------------
def test_bones_and_positions_round_trip_exactly():
    generator = torch.Generator().manual_seed(0)
    positions = torch.randn(3, 5, NUM_JOINTS, 3, generator=generator, dtype=torch.float64)
    lengths, directions = positions_to_bones(positions)
    assert lengths.shape == (3, 5, NUM_JOINTS - 1) and directions.shape == (3, 5, NUM_JOINTS - 1, 3)
    torch.testing.assert_close(torch.linalg.vector_norm(directions, dim=-1), torch.ones_like(lengths))
    back = bones_to_positions(lengths, directions, positions[..., 0, :])
    torch.testing.assert_close(back, positions, rtol=0, atol=1e-12)
    # The rest pose's bones are the skeleton's offsets.
    rest = torch.tensor(SMPL22.rest_positions())
    lengths, directions = positions_to_bones(rest)
    torch.testing.assert_close(lengths, torch.linalg.vector_norm(torch.tensor(SMPL22.offsets[1:]), dim=-1))


@pytest.mark.parametrize("bone_space", [False, True])
def test_state_round_trip(bone_space):
    generator = torch.Generator().manual_seed(1)
    positions = torch.randn(2, 4, NUM_JOINTS, 3, generator=generator, dtype=torch.float64)
    state = pose_to_state(positions, bone_space)
    assert state.shape == (2, 4, state_dim(bone_space)) == (2, 4, 84 if bone_space else 63)
    torch.testing.assert_close(state_to_pose(state, bone_space), positions - positions[..., :1, :], rtol=0, atol=1e-12)
    if bone_space:  # the rest pose has zero length deviations
        rest = torch.tensor(SMPL22.rest_positions())
        torch.testing.assert_close(pose_to_state(rest, True).reshape(-1, 4)[:, 0], torch.zeros(NUM_JOINTS - 1,
                                   dtype=torch.float64), rtol=0, atol=1e-12)


def test_window_plan_covers_every_frame_from_its_most_central_window():
    starts, owner, offset = _window_plan(21, 8)
    assert starts == [0, 4, 8, 12, 13]
    assert all(0 <= o < 8 and starts[w] + o == f for f, (w, o) in enumerate(zip(owner, offset)))
    assert owner[:4] == [0, 0, 0, 0] and owner[-1] == 4
    assert _window_plan(3, 8) == ([0], [0, 0, 0], [0, 1, 2])


# --- aggregation --------------------------------------------------------------------------------
def _pose(seed: int) -> torch.Tensor:
    rest = torch.tensor(SMPL22.rest_positions(), dtype=torch.float32)
    noise = 0.05 * torch.randn(NUM_JOINTS, 3, generator=torch.Generator().manual_seed(seed))
    pose = rest + noise
    return pose - pose[:1]


def test_estimate_translation_recovers_the_pelvis_and_ignores_missing_joints():
    pose = _pose(0)[None].repeat(2, 1, 1)
    tau = torch.tensor([[0.1, -0.2, 4.0], [-0.3, 0.4, 3.0]])
    keypoints = project(pose + tau[:, None])
    torch.testing.assert_close(estimate_translation(pose, keypoints), tau, atol=1e-5, rtol=0)
    confidence = torch.ones(2, NUM_JOINTS)
    confidence[:, 7] = 0
    keypoints[:, 7] = 0.0  # a missing joint holds no keypoint
    torch.testing.assert_close(estimate_translation(pose, keypoints, confidence), tau, atol=1e-5, rtol=0)


def test_reprojection_aggregation_picks_each_joints_right_hypothesis():
    truth = _pose(1)[None]  # (T=1, J, 3)
    tau = torch.tensor([0.1, -0.2, 4.0])
    keypoints = project(truth + tau)
    confidence = torch.ones(1, NUM_JOINTS)
    confidence[0, 20] = 0.0
    wrong = torch.tensor([0.25, -0.15, 0.0])
    first, second = truth.clone(), truth.clone()
    first[:, 5] += wrong  # the first hypothesis is wrong at the right knee only
    second[:, 12] -= wrong  # the second at the neck only
    far = truth + 0.3 * torch.randn(1, NUM_JOINTS, 3, generator=torch.Generator().manual_seed(2))
    far[:, 0] = 0.0
    hypotheses = torch.stack((first, second, far))
    pose, translation = aggregate_hypotheses(hypotheses, keypoints, confidence, "reprojection")
    expected = truth.clone()
    expected[:, 20] = hypotheses[:, :, 20].mean(0)  # a missing joint takes the mean
    torch.testing.assert_close(pose, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(translation[0], tau, atol=2e-2, rtol=0)
    mean, _ = aggregate_hypotheses(hypotheses, keypoints, confidence, "mean")
    torch.testing.assert_close(mean, hypotheses.mean(0))
    with pytest.raises(ValueError, match="valid: mean, reprojection"):
        aggregate_hypotheses(hypotheses, keypoints, confidence, "median")


# --- data ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A 12-clip procedural corpus in HumanML3D's layout."""
    from polydiff_motion.procedural import generate_corpus, write_humanml3d

    root = tmp_path_factory.mktemp("lift-data") / "h3d"
    write_humanml3d(root, generate_corpus(12, seed=0, max_seconds=3.0))
    return root


def test_data_module_batches_and_noise_free_projection(corpus):
    dm = LiftingDataModule(str(corpus), window=8, batch_size=4, noise_px=0.0, missing_joint_prob=0.0)
    batch = next(iter(dm.train_dataloader()))
    assert batch["keypoints"].shape == (4, 8, NUM_JOINTS, 2) and batch["confidence"].shape == (4, 8, NUM_JOINTS)
    assert batch["target"].shape == (4, 8, NUM_JOINTS, 3)
    assert torch.equal(batch["target"][..., 0, :], torch.zeros(4, 8, 3))
    assert torch.equal(batch["confidence"], torch.ones(4, 8, NUM_JOINTS))
    # Without noise the keypoints are exactly a perspective view of the target, 3-6 m away.
    tau = estimate_translation(batch["target"], batch["keypoints"])
    torch.testing.assert_close(project(batch["target"] + tau[..., None, :]), batch["keypoints"], atol=1e-5, rtol=0)
    assert ((tau[..., 2] > 2.5) & (tau[..., 2] < 6.5)).all()
    info = dm.info()
    assert info["window"] == 8 and info["joints"] == NUM_JOINTS and info["normalization"] == "camera"
    assert info["joint_names"] == list(SMPL22_NAMES)


def test_validation_windows_are_fixed_and_missing_joints_are_zeroed(corpus):
    a = LiftingDataModule(str(corpus), window=8, missing_joint_prob=0.3, seed=3)
    b = LiftingDataModule(str(corpus), window=8, missing_joint_prob=0.3, seed=3)
    first, second = next(iter(a.val_dataloader())), next(iter(b.val_dataloader()))
    again = next(iter(a.val_dataloader()))
    for key in ("keypoints", "confidence", "target"):
        assert torch.equal(first[key], second[key]) and torch.equal(first[key], again[key])
    missing = first["confidence"] == 0
    assert 0.1 < missing.float().mean() < 0.5
    assert torch.equal(first["keypoints"][missing], torch.zeros(int(missing.sum()), 2))
    assert len(a.dataset("val")) <= 4 * len(a.ids["val"])


def test_broken_clips_are_skipped_and_named(corpus, tmp_path):
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(corpus, root)
    bad = (root / "train.txt").read_text().split()[0]
    np.save(root / "new_joints" / f"{bad}.npy", np.zeros((10, 21, 3), np.float32))
    dm = LiftingDataModule(str(root), window=8)
    with pytest.warns(UserWarning, match=f"{bad}: .*shape"):
        dm.dataset("train")
    assert [clip for clip, _ in dm.problems["train"]] == [bad] and bad not in dm.ids["train"]
    with pytest.raises(ValueError, match="missing_joint_prob"):
        LiftingDataModule(str(root), missing_joint_prob=1.0)


# --- fitting through the CLI --------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli():
    """The real CLI; the plugin's LightningCLI bases are widened if they do not admit the lifters."""
    from polydiff.plugin import resolve

    plugin = polydiff_motion.plugin
    with pytest.MonkeyPatch.context() as patch:
        if not (issubclass(LiftingDiffusion, resolve(plugin.model_class))
                and issubclass(LiftingDataModule, resolve(plugin.datamodule_class))):
            patch.setattr(polydiff_motion, "plugin", dataclasses.replace(
                plugin, model_class="polydiff.module.DiffusionModule",
                datamodule_class="pytorch_lightning.LightningDataModule"))
        yield main


def _fit(cli, config: str, corpus, root, *extra: str):
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = cli(["motion", "fit", "-c", config, "--data.root", str(corpus), *TINY, *QUIET, *extra,
                      "--trainer.default_root_dir", str(root)])
    assert status == 0
    found = sorted(root.rglob("*.ckpt"))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def diffusion_ckpt(cli, corpus, tmp_path_factory):
    return _fit(cli, "lift", corpus, tmp_path_factory.mktemp("lift-fit"), "--model.init_args.bone_space", "true",
                "--model.init_args.sample_steps", "2", "--model.init_args.hypotheses", "3")


@pytest.fixture(scope="module")
def deterministic_ckpt(cli, corpus, tmp_path_factory):
    return _fit(cli, "lift-deterministic", corpus, tmp_path_factory.mktemp("lift-det-fit"))


def test_fitted_lifters_load_with_their_description(diffusion_ckpt, deterministic_ckpt):
    record = torch.load(diffusion_ckpt, weights_only=True)
    assert record["lifting"]["window"] == 8 and record["lifting"]["normalization"] == "camera"
    model = load_lifter(diffusion_ckpt)
    assert type(model) is LiftingDiffusion and model.bone_space and model.hypotheses == 3 and model.window == 8
    baseline = load_lifter(deterministic_ckpt)
    assert type(baseline) is DeterministicLifter
    keypoints = 0.1 * torch.randn(21, NUM_JOINTS, 2, generator=torch.Generator().manual_seed(0))
    a = model.lift(keypoints, hypotheses=2, generator=torch.Generator().manual_seed(5))
    b = model.lift(keypoints, hypotheses=2, generator=torch.Generator().manual_seed(5))
    assert a.shape == (2, 21, NUM_JOINTS, 3) and torch.equal(a, b) and torch.isfinite(a).all()
    assert torch.equal(a[..., 0, :], torch.zeros(2, 21, 3))
    assert model.lift(keypoints[:3]).shape == (3, 3, NUM_JOINTS, 3)
    assert baseline.lift(keypoints, hypotheses=4).shape == (1, 21, NUM_JOINTS, 3)


def test_evaluate_lifter_reports_millimetres(diffusion_ckpt, deterministic_ckpt, corpus):
    dm = LiftingDataModule(str(corpus), window=8)
    result = evaluate_lifter(load_lifter(diffusion_ckpt), dm, hypotheses=2, split="val", limit=3, steps=2)
    assert result["frames"] == 24 and result["hypotheses"] == 2
    for key in ("mean_mpjpe_mm", "mean_p_mpjpe_mm", "reprojection_mpjpe_mm", "reprojection_p_mpjpe_mm",
                "best_mpjpe_mm", "hypothesis_mpjpe_mm"):
        assert 0 < result[key] < 5000, key
    assert result["best_mpjpe_mm"] <= result["hypothesis_mpjpe_mm"] + 1e-9
    item = dm.dataset("val")[0]
    records = [{"keypoints": item["keypoints"][:5].numpy(), "confidence": item["confidence"][:5].numpy(),
                "target": item["target"][:5].numpy()}]
    single = evaluate_lifter(load_lifter(deterministic_ckpt), records, hypotheses=5, aggregates=("mean",))
    assert single["frames"] == 5 and single["hypotheses"] == 1
    assert single["best_mpjpe_mm"] == pytest.approx(single["mean_mpjpe_mm"])


# --- polydiff motion lift -----------------------------------------------------------------------
def _track(path, frames: int = 11, joints: int = NUM_JOINTS, **extra):
    generator = np.random.default_rng(0)
    keypoints = 0.1 * generator.standard_normal((frames, joints, 2))
    np.savez(path, keypoints=keypoints.astype(np.float32), **extra)
    return path


def test_lift_writes_hypotheses_and_the_aggregated_pose(diffusion_ckpt, tmp_path, capsys):
    confidence = np.ones((11, NUM_JOINTS), np.float32)
    confidence[2, 4] = 0.0
    confidence[6] = 0.0  # a frame with no detection
    names = np.array(SMPL22_NAMES)[::-1]  # the file's own joint order, mapped onto SMPL's
    source = _track(tmp_path / "clip.npz", confidence=confidence, joint_names=names)
    out = tmp_path / "clip3d.npz"
    status = lift_command(["--ckpt", str(diffusion_ckpt), "--keypoints", str(source), "--hypotheses", "3",
                           "--aggregate", "reprojection", "--steps", "2", "-o", str(out)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "1 of 11 frame(s) have no confident joint" in captured.err
    with np.load(out) as result:
        assert result["hypotheses"].shape == (3, 11, NUM_JOINTS, 3) and result["pose"].shape == (11, NUM_JOINTS, 3)
        assert result["translation"].shape == (11, 3) and str(result["aggregate"]) == "reprojection"
        assert list(result["joint_names"]) == list(SMPL22_NAMES)
        assert np.isfinite(result["hypotheses"]).all()
    # Same seed, same hypotheses; refused without --overwrite, and the file is left alone.
    before = out.read_bytes()
    assert lift_command(["--ckpt", str(diffusion_ckpt), "--keypoints", str(source), "--steps", "2", "-o", str(out)]) == 1
    assert f"{out} exists; pass --overwrite" in capsys.readouterr().err and out.read_bytes() == before
    assert lift_command(["--ckpt", str(diffusion_ckpt), "--keypoints", str(source), "--hypotheses", "3", "--steps", "2",
                         "--aggregate", "mean", "-o", str(out), "--overwrite"]) == 0
    with np.load(out) as result:
        assert str(result["aggregate"]) == "mean"
        np.testing.assert_allclose(result["pose"], result["hypotheses"].mean(0), atol=1e-6)


def test_lift_with_a_deterministic_lifter_and_pixel_keypoints(deterministic_ckpt, tmp_path, capsys):
    pixels = tmp_path / "pixels.npz"
    np.savez(pixels, keypoints=(500 + 1000 * 0.1 * np.random.default_rng(1).standard_normal((9, NUM_JOINTS, 2)))
             .astype(np.float32))
    out = tmp_path / "pixels3d.npz"
    assert lift_command(["--ckpt", str(deterministic_ckpt), "--keypoints", str(pixels), "-o", str(out)]) == 1
    assert "look like pixels" in capsys.readouterr().err and not out.exists()
    assert lift_command(["--ckpt", str(deterministic_ckpt), "--keypoints", str(pixels), "--hypotheses", "4",
                         "--focal", "1000", "--center", "500", "500", "-o", str(out)]) == 0
    with np.load(out) as result:
        assert result["hypotheses"].shape == (1, 9, NUM_JOINTS, 3)
    # A file in another joint order, with its names, lifts to the same poses.
    ordered, shuffled = _track(tmp_path / "ordered.npz"), tmp_path / "shuffled.npz"
    order = np.random.default_rng(2).permutation(NUM_JOINTS)
    with np.load(ordered) as data:
        np.savez(shuffled, keypoints=data["keypoints"][:, order], joint_names=np.array(SMPL22_NAMES)[order])
    poses = []
    for source in (ordered, shuffled):
        target = tmp_path / f"{source.stem}3d.npz"
        assert lift_command(["--ckpt", str(deterministic_ckpt), "--keypoints", str(source), "-o", str(target)]) == 0
        with np.load(target) as result:
            poses.append(result["pose"])
    np.testing.assert_allclose(poses[0], poses[1], atol=1e-6)


def test_lift_batch_reports_bad_files_and_lifts_the_rest(diffusion_ckpt, tmp_path, capsys):
    good = _track(tmp_path / "good.npz", frames=5)
    wrong = _track(tmp_path / "wrong.npz", joints=17)
    nan = tmp_path / "nan.npz"
    keypoints = np.zeros((5, NUM_JOINTS, 2), np.float32)
    keypoints[1, 3] = np.nan
    np.savez(nan, keypoints=keypoints)
    unknown = _track(tmp_path / "names.npz", joint_names=np.array(["nose", *SMPL22_NAMES[1:]]))
    out = tmp_path / "lifted"
    status = lift_command(["--ckpt", str(diffusion_ckpt), "--keypoints", str(wrong), str(nan), str(unknown), str(good),
                           "--steps", "1", "--hypotheses", "2", "-o", str(out)])
    err = capsys.readouterr().err
    assert status == 1
    assert f"{wrong}: 17 joints, but a lifter takes the 22 SMPL joints" in err
    assert f"{nan}: field 'keypoints' contains NaN" in err
    assert f"{unknown}: unknown joint name(s) 'nose'" in err
    assert sorted(p.name for p in out.iterdir()) == ["good.npz"]


def test_lift_refuses_other_checkpoints_and_bad_usage(tmp_path, capsys, diffusion_ckpt):
    fake = tmp_path / "t2m.ckpt"
    torch.save({"polydiff": {"format": 1, "plugin": "motion", "module_class": "polydiff_motion.module.MotionDiffusion",
                             "model_config": {}}, "motion": {"feature_dim": 263}, "state_dict": {}}, fake)
    source = _track(tmp_path / "clip.npz")
    assert lift_command(["--ckpt", str(fake), "--keypoints", str(source), "-o", str(tmp_path / "o.npz")]) == 1
    err = capsys.readouterr().err
    assert "polydiff motion: error:" in err and "is a text-to-motion checkpoint, not a 2D-to-3D lifter" in err
    assert not (tmp_path / "o.npz").exists()
    usage = [["--hypotheses", "0"], ["--steps", "0"], ["--focal", "1000"], ["--aggregate", "median"]]
    for extra in usage:
        assert lift_command(["--ckpt", str(diffusion_ckpt), "--keypoints", str(source), "-o",
                             str(tmp_path / "o.npz"), *extra]) == 2, extra
    assert not (tmp_path / "o.npz").exists()
