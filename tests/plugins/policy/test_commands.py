"""The policy plugin as a user drives it: record demonstrations, fit through the CLI, roll out.

Two expert demonstrations (environment seeds 2 and 3) are recorded once with
``polydiff policy make-demo-data``; a tiny Diffusion Policy (U-Net widths 8 and 16, horizon 8,
4 actions executed per chunk) is trained on them for three steps with the bundled ``pusht``
config, and every rollout test reuses its checkpoint. Rollouts are a few dozen steps, so the
policies are far from solving the task: the tests check exit statuses, refusals and their
messages, and the files written (rows, keys, chunk counts worked out from the step limit, GIFs).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gym_pusht")
pytest.importorskip("pyarrow")

from polydiff.cli import main  # noqa: E402
from polydiff_policy.commands import format_table, load_policy  # noqa: E402
from polydiff_policy.formats import read_dataset  # noqa: E402
from polydiff_policy.module import DiffusionPolicy, RegressionPolicy  # noqa: E402

QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary",
         "false", "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.max_steps", "3",
         "--trainer.val_check_interval", "3"]
TINY_DATA = ["--data.init_args.batch_size", "8", "--data.init_args.horizon", "8",
             "--data.init_args.action_horizon", "4"]
TINY_UNET = ["--model.init_args.denoiser.init_args.down_dims", "[8, 16]", "--model.init_args.denoiser.init_args.groups",
             "4", "--model.init_args.denoiser.init_args.time_dim", "8", "--model.init_args.sample_steps", "2"]
METRIC_KEYS = {"policy", "episodes", "success_rate", "mean_max_coverage", "crashed", "mean_steps", "chunks",
               "first_seed", "max_steps", "threads", "seconds", "videos"}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _one_checkpoint(root: Path) -> Path:
    found = sorted(root.rglob("*.ckpt"))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> tuple[Path, dict]:
    """(dataset, printed summary) of ``make-demo-data`` on environment seeds 2 and 3 (LeRobot)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("policy-data")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["policy", "make-demo-data", str(out), "--episodes", "2", "--seed", "2", "--workers", "1",
                       "--quiet"])
    assert status == 0
    return out / "pusht", json.loads(printed.getvalue())


@pytest.fixture(scope="module")
def trained(demos, tmp_path_factory) -> Path:
    """The ``pusht`` config (a tiny U-Net) trained three steps on the demonstrations."""
    data, _ = demos
    root = tmp_path_factory.mktemp("policy-fit")
    status = main(["policy", "fit", "-c", "pusht", "--data.path", str(data), *TINY_DATA, *TINY_UNET, *QUIET,
                   "--trainer.default_root_dir", str(root / "run")])
    assert status == 0
    return _one_checkpoint(root / "run")


def rollout(*args: str) -> int:
    return main(["policy", "rollout", "--quiet", *args])


# --- make-demo-data -------------------------------------------------------------------------------
def test_make_demo_data_writes_a_readable_lerobot_dataset(demos):
    data, summary = demos
    assert summary["dataset"] == str(data) and summary["format"] == "lerobot"
    assert summary["episodes_recorded"] == 2 and 1 <= summary["episodes_written"] <= 2
    dataset = read_dataset(data)
    assert dataset.format == "lerobot-v3.0" and dataset.fps == 10
    assert len(dataset) == summary["episodes_written"] and dataset.n_frames == summary["frames_written"]
    assert all(ep.success for ep in dataset.episodes)  # failures are left out by default
    assert {"agent_pos", "environment_state"} <= set(dataset.episodes[0].observations)
    assert summary["expert_success_rate"] == summary["episodes_written"] / 2


def test_make_demo_data_refuses_an_existing_dataset(demos, capsys):
    data, _ = demos
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    assert main(["policy", "make-demo-data", str(data.parent), "--episodes", "1", "--workers", "1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"polydiff policy: error: {data} exists; pass --overwrite to replace it" in err
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before


def test_make_demo_data_as_zarr_and_overwrite(tmp_path, capsys):
    pytest.importorskip("zarr")
    assert main(["policy", "make-demo-data", str(tmp_path), "--episodes", "1", "--seed", "2", "--workers", "1",
                 "--format", "zarr", "--quiet"]) == 0
    target = tmp_path / "pusht.zarr"
    summary = json.loads(capsys.readouterr().out)
    assert summary["dataset"] == str(target) and summary["format"] == "zarr"
    dataset = read_dataset(target)
    assert dataset.format == "zarr" and len(dataset) == summary["episodes_written"] == 1
    assert dataset.n_frames == summary["frames_written"] and "image" not in dataset.episodes[0].observations
    # Refused without --overwrite, named; replaced with it.
    assert main(["policy", "make-demo-data", str(tmp_path), "--episodes", "1", "--seed", "2", "--format", "zarr",
                 "--quiet"]) == 1
    assert f"{target} exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert main(["policy", "make-demo-data", str(tmp_path), "--episodes", "1", "--seed", "2", "--workers", "1",
                 "--format", "zarr", "--images", "--overwrite", "--quiet"]) == 0
    again = read_dataset(target)
    assert again.episodes[0].observations["image"].shape[1:] == (96, 96, 3)
    assert again.n_frames == dataset.n_frames  # the same expert episode, now with images


def test_make_demo_data_usage_errors(tmp_path, capsys):
    assert main(["policy", "make-demo-data", str(tmp_path), "--episodes", "0"]) == 2
    assert "--episodes must be at least 1" in capsys.readouterr().err
    assert main(["policy", "make-demo-data", str(tmp_path), "--format", "hdf5"]) == 2
    assert not any(tmp_path.iterdir())


def test_make_demo_data_refuses_a_negative_worker_count(tmp_path, capsys):
    assert main(["policy", "make-demo-data", str(tmp_path), "--episodes", "1", "--workers", "-1", "--quiet"]) == 2
    assert "--workers" in capsys.readouterr().err


# --- fit and rollout ------------------------------------------------------------------------------
def test_fit_writes_a_policy_checkpoint(trained, demos):
    model = load_policy(trained)
    assert type(model) is DiffusionPolicy and not model.training
    info = model.require_info()
    assert info["dataset"] == "pusht" and info["format"] == "lerobot-v3.0"
    assert (info["obs_horizon"], info["horizon"], info["action_horizon"], info["action_dim"]) == (2, 8, 4, 2)
    assert info["obs_features"] == ["agent_pos", "environment_state"] and info["obs_dims"] == [2, 16]
    assert model.denoiser.down_dims == [8, 16]


def test_rollout_with_real_time_iteration(trained, tmp_path, capsys):
    out = tmp_path / "eval"
    status = rollout("--ckpt", str(trained), "--episodes", "2", "--max-steps", "20", "--sampler", "rti", "--steps", "2",
                     "-o", str(out))
    captured = capsys.readouterr()
    assert status == 0, captured.err
    rows = _rows(out / "episodes.csv")
    assert [r["seed"] for r in rows] == ["100000", "100001"]
    assert all(r["error"] == "" and 1 <= int(r["steps"]) <= 20 for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())
    rti_keys = {"checkpoint", "sampler", "steps", "action_horizon", "rti_start", "rti_cold_steps"}
    assert METRIC_KEYS | rti_keys <= set(metrics)
    assert (metrics["policy"], metrics["sampler"], metrics["steps"], metrics["action_horizon"]) == ("DiffusionPolicy",
                                                                                                   "rti", 2, 4)
    assert metrics["rti_start"] == pytest.approx(0.9946 * 2 / 10) and metrics["rti_cold_steps"] == 10
    assert (metrics["episodes"], metrics["max_steps"], metrics["crashed"], metrics["first_seed"]) == (2, 20, 0, 100000)
    assert metrics["checkpoint"] == trained.name
    # A chunk every 4 steps: ceil(steps / 4) chunks per episode.
    assert metrics["chunks"] == sum(math.ceil(int(r["steps"]) / 4) for r in rows)
    assert [int(r["chunks"]) for r in rows] == [math.ceil(int(r["steps"]) / 4) for r in rows]
    assert metrics["latency_median_ms"] > 0
    assert metrics["videos"] == ["episode_100000.gif"] and (out / "episode_100000.gif").exists()
    assert not (out / "episode_100001.gif").exists()
    assert "DiffusionPolicy" in captured.out and "rti" in captured.out


def test_rollout_refuses_existing_results(trained, tmp_path, capsys):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text("{}\n")
    args = ["--ckpt", str(trained), "--episodes", "1", "--max-steps", "4", "--videos", "0", "-o", str(out)]
    assert rollout(*args) == 1
    assert f"{out / 'metrics.json'} exists; pass --overwrite to replace the results" in capsys.readouterr().err
    assert (out / "metrics.json").read_text() == "{}\n" and not (out / "episodes.csv").exists()
    assert rollout(*args, "--overwrite") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sampler"] == "ddim" and metrics["steps"] == 10 and metrics["videos"] == []
    assert "rti_start" not in metrics


def test_rollout_of_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    fake = tmp_path / "weights.ckpt"
    fake.write_text("not a checkpoint\n")
    assert rollout("--ckpt", str(fake), "-o", str(tmp_path / "eval")) == 1
    assert f"polydiff policy: error: {fake} is not a torch checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()
    assert rollout("--ckpt", str(tmp_path / "missing.ckpt"), "-o", str(tmp_path / "eval")) == 1
    assert "missing.ckpt: no such checkpoint file" in capsys.readouterr().err


def test_rollout_usage_errors(trained, tmp_path, capsys):
    out = str(tmp_path / "eval")
    assert rollout("--ckpt", str(trained), "--steps", "0", "-o", out) == 2
    assert "steps must be a positive integer, got 0" in capsys.readouterr().err
    assert rollout("--ckpt", str(trained), "--action-horizon", "8", "-o", out) == 2
    assert "action_horizon must lie in [1, 7]" in capsys.readouterr().err
    assert rollout("--ckpt", str(trained), "--episodes", "0", "-o", out) == 2
    assert rollout("--ckpt", str(trained), "--expert", "-o", out) == 2  # one source only
    assert rollout("--episodes", "1", "-o", out) == 2  # no source
    assert not (tmp_path / "eval").exists()


def test_rollout_refuses_a_negative_thread_count(tmp_path, capsys):
    assert rollout("--expert", "--threads", "-1", "--episodes", "1", "--max-steps", "2", "-o", str(tmp_path / "e")) == 2
    assert "--threads" in capsys.readouterr().err


def test_rollout_on_a_missing_cuda_device_is_a_usage_error(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rollout("--expert", "--device", "cuda", "--episodes", "1", "-o", str(tmp_path / "e")) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_rollouts_are_reproducible(trained, tmp_path):
    args = ["--ckpt", str(trained), "--episodes", "2", "--max-steps", "12", "--sampler", "rti", "--steps", "2",
            "--videos", "0", "--seed", "7", "-o", str(tmp_path / "eval")]
    runs = []
    for _ in range(2):
        assert rollout(*args, "--overwrite") == 0
        runs.append([(r["seed"], r["max_coverage"], r["steps"]) for r in _rows(tmp_path / "eval" / "episodes.csv")])
    assert runs[0] == runs[1] and [seed for seed, _, _ in runs[0]] == ["7", "8"]


def test_rollout_of_the_expert(tmp_path):
    out = tmp_path / "expert"
    assert rollout("--expert", "--episodes", "1", "--max-steps", "30", "-o", str(out)) == 0
    (row,) = _rows(out / "episodes.csv")
    assert row["seed"] == "100000" and row["error"] == "" and 1 <= int(row["steps"]) <= 30
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics) and metrics["policy"] == "expert" and metrics["chunks"] == 0
    assert metrics["videos"] == ["episode_100000.gif"]
    from PIL import Image

    with Image.open(out / "episode_100000.gif") as gif:
        assert gif.n_frames >= 2  # the reset frame and a frame per step (identical ones may merge)


def test_the_mlp_baseline_trains_and_rolls_out(demos, tmp_path):
    data, _ = demos
    status = main(["policy", "fit", "-c", "pusht-mlp", "--data.path", str(data), *TINY_DATA,
                   "--model.init_args.denoiser.init_args.hidden", "[16]", *QUIET,
                   "--trainer.default_root_dir", str(tmp_path / "run")])
    assert status == 0
    ckpt = _one_checkpoint(tmp_path / "run")
    model = load_policy(ckpt)
    assert type(model) is RegressionPolicy and model.denoiser.hidden == [16]
    out = tmp_path / "eval"
    assert rollout("--ckpt", str(ckpt), "--episodes", "1", "--max-steps", "9", "--videos", "0", "-o", str(out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["policy"], metrics["sampler"], metrics["steps"]) == ("RegressionPolicy", "regression", 1)
    (row,) = _rows(out / "episodes.csv")
    assert metrics["chunks"] == math.ceil(int(row["steps"]) / 4)


def test_format_table():
    rows = [{"policy": "expert", "episodes": 2, "success_rate": 0.5, "mean_max_coverage": 0.75, "crashed": 0},
            {"label": "rti2", "sampler": "rti", "steps": 2, "episodes": 4, "success_rate": 0.25,
             "mean_max_coverage": 0.5, "crashed": 1, "latency_median_ms": 12.34, "latency_p95_ms": 20.0}]
    lines = format_table(rows).splitlines()
    assert len(lines) == 4 and lines[0].split()[:3] == ["policy", "sampler", "steps"]
    assert lines[2].split() == ["expert", "-", "-", "2", "0.500", "0.750", "-", "-", "0"]
    assert lines[3].split() == ["rti2", "rti", "2", "4", "0.250", "0.500", "12.3", "20.0", "1"]


# --- the quickstart demo --------------------------------------------------------------------------
def test_demo_end_to_end(tmp_path):
    from polydiff_policy.demo import run_demo

    metrics = run_demo(tmp_path, progress=False, max_steps=5, demos=2, episodes=1)
    for name in ("ddim10", "rti2", "mlp", "expert"):
        assert 0.0 <= metrics[f"success_{name}"] <= 1.0 and 0.0 <= metrics[f"coverage_{name}"] <= 1.0
        assert (tmp_path / f"eval-{name}" / "metrics.json").exists()
    assert {"latency_ms_ddim10", "latency_ms_rti2", "latency_ms_mlp"} <= set(metrics)
    assert "latency_ms_expert" not in metrics
    assert (metrics["demos"], metrics["train_steps"]) == (2, 5) and metrics["seconds"] > 0
    assert metrics["video"] == "eval-ddim10/episode_100000.gif" and (tmp_path / metrics["video"]).exists()
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert len((tmp_path / "table.txt").read_text().splitlines()) == 6  # header, rule, four rows
