"""The audio plugin as a user drives it: registration, make-demo-data, fit, enhance, evaluate.

One tiny model is trained through ``polydiff audio fit`` with the bundled config (two steps,
a tiny network) and shared by the enhance tests; they check the files written (rate, length,
channels), the bad-input reports and exit statuses, that inputs are never written, and that a
seed reproduces the output.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from polydiff.cli import main
from polydiff.registry import Registry


RATE = 16000
# No attention: at two levels it would attend over every time-frequency bin of a 4 s segment.
TINY_NET = ["--model.init_args.denoiser.init_args.channels", "8", "--model.init_args.denoiser.init_args.channel_mult",
            "[1, 2]", "--model.init_args.denoiser.init_args.attention_levels", "[]"]


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _write_pairs(root: Path, synthetic_speech, names=("a", "b", "c"), seconds=1.0) -> None:
    """A VoiceBank-style split: speech-like clean files and noisy versions with the same names."""
    rng = np.random.default_rng(0)
    for split in ("train", "valid", "test"):
        for k, name in enumerate(names):
            clean = synthetic_speech(seconds=seconds + 0.1 * k)
            noisy = clean + 0.05 * rng.standard_normal(clean.shape)
            for kind, wav in (("clean", clean), ("noisy", noisy)):
                folder = root / split / kind
                folder.mkdir(parents=True, exist_ok=True)
                sf.write(folder / f"{name}.wav", wav, RATE, subtype="PCM_16")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, synthetic_speech) -> Path:
    """A two-step SGMSE+ model with a tiny network, trained through the CLI on synthetic pairs."""
    root = tmp_path_factory.mktemp("audio-fit")
    _write_pairs(root / "data", synthetic_speech)
    status = main([
        "audio", "fit", "-c", "sgmse", *TINY_NET,
        "--data.root", str(root / "data"), "--data.task", "null", "--data.batch_size", "2",
        "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(root / "run"),
        "--model.init_args.val_sample_steps", "1",
    ])
    assert status == 0
    found = sorted((root / "run").rglob("*.ckpt"))
    assert len(found) == 1
    return found[0]


# --- registration -----------------------------------------------------------------------------
def test_audio_plugin_is_registered_with_its_commands_and_configs(capsys):
    registry = Registry()
    assert "audio" in registry.names()
    plugin = registry.get("audio")
    assert set(plugin.commands) == {"make-demo-data", "enhance", "evaluate"}
    assert {"sgmse", "storm", "sgmse-dereverb", "storm-dereverb"} <= set(plugin.config_names())
    for command in plugin.commands:
        assert callable(plugin.load_command(command))
    assert plugin.load_demo() is not None
    assert plugin.missing_requirements() == ()
    assert main(["audio", "--help"]) == 0
    assert "enhance" in capsys.readouterr().out


def test_bundled_configs_parse_and_tasks_match_their_names():
    import yaml

    plugin = Registry().get("audio")
    for name in plugin.config_names():
        config = yaml.safe_load(plugin.config_resource(name).read_text())
        task = config["data"]["init_args"]["task"]
        assert task == ("dereverb" if name.endswith("-dereverb") else "denoise"), name
        assert config["data"]["init_args"]["rate"] == config["model"]["init_args"]["rate"], name


# --- make-demo-data ---------------------------------------------------------------------------
def test_make_demo_data_builds_and_refuses_a_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "corpus"
    assert main(["audio", "make-demo-data", str(out), "--size", "small", "--tasks", "denoise", "--no-real"]) == 0
    printed = capsys.readouterr().out
    assert "denoise/train" in printed and (out / "manifest.json").exists()
    assert len(list((out / "denoise" / "test" / "noisy").glob("*.wav"))) >= 4
    before = _digest(out / "denoise" / "test" / "noisy")
    assert main(["audio", "make-demo-data", str(out), "--size", "small"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert _digest(out / "denoise" / "test" / "noisy") == before


# --- fit -----------------------------------------------------------------------------------------
def test_fit_rejects_a_data_rate_that_differs_from_the_model_rate(tmp_path, synthetic_speech):
    _write_pairs(tmp_path / "data", synthetic_speech)
    with pytest.raises(ValueError, match="8000 Hz but the model works at 16000 Hz"):
        main([
            "audio", "fit", "-c", "sgmse", *TINY_NET, "--data.root", str(tmp_path / "data"), "--data.task", "null",
            "--data.rate", "8000", "--trainer.max_steps", "1", "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "run"),
        ])


# --- enhance -------------------------------------------------------------------------------------
@pytest.fixture
def inputs(tmp_path, synthetic_speech) -> Path:
    """Good files (16 kHz mono, 44.1 kHz stereo) mixed with every kind of bad one."""
    folder = tmp_path / "noisy"
    folder.mkdir()
    rng = np.random.default_rng(1)
    speech = synthetic_speech(seconds=1.5)
    sf.write(folder / "mono16k.wav", speech + 0.05 * rng.standard_normal(speech.shape), RATE)
    stereo = np.stack([synthetic_speech(seconds=1.2, rate=44100)] * 2, axis=1)
    sf.write(folder / "stereo44k.flac", stereo + 0.02 * rng.standard_normal(stereo.shape), 44100)
    (folder / "notaudio.wav").write_text("this is text, not audio")
    sf.write(folder / "silent.wav", np.zeros(RATE), RATE)
    sf.write(folder / "short.wav", 0.1 * rng.standard_normal(100), RATE)
    clipped = np.clip(4 * speech, -1, 1)
    sf.write(folder / "clipped.wav", clipped, RATE)
    return folder


def test_enhance_processes_the_good_files_and_reports_each_bad_one(checkpoint, inputs, tmp_path, capsys):
    before = _digest(inputs)
    out = tmp_path / "enhanced"
    status = main(["audio", "enhance", "--ckpt", str(checkpoint), str(inputs), "-o", str(out), "--steps", "2"])
    captured = capsys.readouterr()
    assert status == 1
    assert sorted(p.name for p in out.iterdir()) == ["mono16k.wav", "stereo44k.flac"]
    for name in ("mono16k.wav", "stereo44k.flac"):
        given, written = sf.info(inputs / name), sf.info(out / name)
        assert (written.samplerate, written.channels, written.frames) == (given.samplerate, given.channels, given.frames)
        data, _ = sf.read(out / name)
        assert np.isfinite(data).all() and np.abs(data).max() > 0
    reasons = {"notaudio.wav": "not readable as audio", "silent.wav": "silent", "short.wav": "too short",
               "clipped.wav": "clipped"}
    for name, reason in reasons.items():
        assert any(name in line and reason in line for line in captured.err.splitlines()), (name, captured.err)
    assert "2 enhanced, 4 failed" in captured.out
    assert _digest(inputs) == before


def test_enhance_never_writes_over_inputs_or_earlier_outputs(checkpoint, inputs, tmp_path, capsys):
    before = _digest(inputs)
    good = inputs / "mono16k.wav"
    assert main(["audio", "enhance", "--ckpt", str(checkpoint), str(good), "-o", str(inputs), "--overwrite"]) == 1
    assert "would replace an input file" in capsys.readouterr().err
    assert _digest(inputs) == before

    out = tmp_path / "enhanced"
    assert main(["audio", "enhance", "--ckpt", str(checkpoint), str(good), "-o", str(out), "--steps", "1"]) == 0
    first = _digest(out)
    assert main(["audio", "enhance", "--ckpt", str(checkpoint), str(good), "-o", str(out), "--steps", "1", "--seed", "5"]) == 1
    assert "exists (pass --overwrite" in capsys.readouterr().err
    assert _digest(out) == first
    assert main(["audio", "enhance", "--ckpt", str(checkpoint), str(good), "-o", str(out), "--steps", "1", "--seed", "5",
                 "--overwrite"]) == 0
    assert _digest(out) != first


def test_enhance_is_reproducible_with_a_seed_and_accepts_clipped_input_on_request(checkpoint, inputs, tmp_path):
    files = [str(inputs / "mono16k.wav"), str(inputs / "clipped.wav")]
    for run in ("one", "two"):
        assert main(["audio", "enhance", "--ckpt", str(checkpoint), *files, "-o", str(tmp_path / run), "--steps", "2",
                     "--seed", "3", "--allow-clipped"]) == 0
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")
    assert set(_digest(tmp_path / "one")) == {"mono16k.wav", "clipped.wav"}


def test_enhance_steps_0_needs_a_storm_checkpoint(checkpoint, inputs, tmp_path, capsys):
    assert main(["audio", "enhance", "--ckpt", str(checkpoint), str(inputs / "mono16k.wav"), "-o", str(tmp_path / "o"),
                 "--steps", "0"]) == 2
    assert "needs a StoRM checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_enhance_names_an_unusable_device(checkpoint, inputs, tmp_path, capsys):
    assert main(["audio", "enhance", "--ckpt", str(checkpoint), str(inputs / "mono16k.wav"), "-o", str(tmp_path / "o"),
                 "--device", "no-such-device"]) == 2
    assert "--device no-such-device" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_enhance_rejects_a_file_that_is_not_an_audio_checkpoint(tmp_path, inputs, capsys):
    bogus = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}}, bogus)
    assert main(["audio", "enhance", "--ckpt", str(bogus), str(inputs), "-o", str(tmp_path / "out")]) == 1
    assert str(bogus) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_enhance_reports_missing_inputs_and_still_processes_the_rest(checkpoint, inputs, tmp_path, capsys):
    missing = tmp_path / "nowhere.wav"
    status = main(["audio", "enhance", "--ckpt", str(checkpoint), str(missing), str(inputs / "mono16k.wav"),
                   "-o", str(tmp_path / "out"), "--steps", "1"])
    assert status == 1
    assert "no such file or folder" in capsys.readouterr().err
    assert (tmp_path / "out" / "mono16k.wav").exists()


# --- evaluate ------------------------------------------------------------------------------------
def test_evaluate_prints_a_table_writes_a_csv_and_reports_bad_pairs(tmp_path, synthetic_speech, capsys):
    import csv

    clean, enhanced, noisy = (tmp_path / d for d in ("clean", "enhanced", "noisy"))
    for folder in (clean, enhanced, noisy):
        folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("x.wav", "y.wav", "z.wav"):
        s = synthetic_speech(seconds=1.0)
        sf.write(clean / name, s, RATE, subtype="FLOAT")
        sf.write(noisy / name, s + 0.3 * rng.standard_normal(s.shape), RATE, subtype="FLOAT")
        if name != "z.wav":  # z has no enhanced file
            sf.write(enhanced / name, 0.5 * s + 0.01 * rng.standard_normal(s.shape), RATE, subtype="FLOAT")
    status = main(["audio", "evaluate", "--clean", str(clean), "--enhanced", str(enhanced), "--noisy", str(noisy)])
    out = capsys.readouterr().out
    assert status == 1
    assert "3 files: 2 scored, 1 failed" in out and "z.wav" in out
    rows = list(csv.DictReader(open(enhanced / "metrics.csv")))
    assert [r["name"] for r in rows] == ["x.wav", "y.wav", "z.wav"]
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"]
    # SI-SDR by its definition, from the files as written: scale-invariant, so 0.5 s + n scores
    # as s + 2 n would.
    reference, estimate = sf.read(clean / "x.wav")[0], sf.read(enhanced / "x.wav")[0]
    target = (estimate @ reference / (reference @ reference)) * reference
    expected = 10 * np.log10(np.sum(target**2) / np.sum((estimate - target) ** 2))
    assert math.isclose(float(rows[0]["si_sdr"]), expected, abs_tol=1e-4)
    assert float(rows[0]["si_sdr"]) > float(rows[0]["noisy_si_sdr"]) + 10
    assert math.isclose(float(rows[0]["delta_si_sdr"]), float(rows[0]["si_sdr"]) - float(rows[0]["noisy_si_sdr"]),
                        rel_tol=1e-9)
    # The CSV is not replaced without --overwrite.
    stamp = (enhanced / "metrics.csv").read_bytes()
    assert main(["audio", "evaluate", "--clean", str(clean), "--enhanced", str(enhanced)]) == 2
    assert (enhanced / "metrics.csv").read_bytes() == stamp


def test_evaluate_names_a_missing_folder(tmp_path, capsys):
    assert main(["audio", "evaluate", "--clean", str(tmp_path / "none"), "--enhanced", str(tmp_path)]) == 2
    assert "--clean" in capsys.readouterr().err


# --- quickstart --------------------------------------------------------------------------------
def test_quickstart_demo_writes_wavs_png_and_metrics(tmp_path):
    from polydiff_audio.demo import run_demo

    shutil.which("espeak-ng") or pytest.fail("the demo corpus needs espeak-ng (apt-get install espeak-ng)")
    metrics = run_demo(tmp_path, progress=False, max_steps=2, files=2)
    assert len(list((tmp_path / "enhanced").glob("*.wav"))) == 2
    assert (tmp_path / "spectrograms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "metrics.csv").exists() and (tmp_path / "metrics.json").exists()
    assert len(list((tmp_path / "predictor").glob("*.wav"))) == 2
    for method in ("noisy", "wiener", "storm", "storm_predictor"):
        assert math.isfinite(metrics[f"si_sdr_{method}"])
    assert metrics["si_sdr_wiener"] > metrics["si_sdr_noisy"]
    assert metrics["training_steps"] == 2
