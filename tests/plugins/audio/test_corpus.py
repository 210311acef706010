"""The demo corpus: layout, SNRs, held-out speakers and rooms, aligned reverberation, determinism.

espeak-ng and flite are required (CI installs them with apt), so a machine without them fails
here with the install command; festival is optional and only its own test is skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from polydiff_audio import corpus
from polydiff_audio.corpus import RT60_RANGE_S, SNR_RANGE_DB, build_demo_corpus

RATE = 16000
SPLITS = ("train", "valid", "test")
INSTALL = "apt-get install espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"


def _require_engines() -> None:
    missing = [engine for engine in ("espeak-ng", "flite") if shutil.which(engine) is None]
    assert not missing, f"the demo corpus needs {', '.join(missing)}: {INSTALL}"


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    """One small build with both tasks and the real set, shared by the read-only tests."""
    _require_engines()
    out = tmp_path_factory.mktemp("corpus") / "demo"
    summary = build_demo_corpus(out, size="small", seed=0)
    return out, summary


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _read(path: Path) -> np.ndarray:
    data, rate = sf.read(path, dtype="float64")
    assert rate == RATE and data.ndim == 1, path
    return data


def _active_power(x: np.ndarray) -> float:
    """The manifest's definition, written out again: 20 ms frames within 40 dB of the loudest."""
    frame = 320
    frames = [x[i : i + frame] for i in range(0, len(x), frame)]
    powers = np.array([np.sum(f**2) / frame for f in frames])
    active = powers >= powers.max() * 1e-4
    return sum(np.sum(f**2) for f, a in zip(frames, active) if a) / sum(
        len(f) for f, a in zip(frames, active) if a
    )


def _lag_of_strongest_path(reference: np.ndarray, x: np.ndarray, max_lag: int) -> int:
    """Lag of the peak of the Roth-weighted cross-correlation (Knapp & Carter, 1976).

    Dividing the cross-spectrum by the reference's power spectrum turns the cross-correlation
    into an estimate of the impulse response from ``reference`` to ``x``, so its peak is the
    strongest single path (the direct one) rather than a cluster of reflections that the
    speech's own autocorrelation smears together.
    """
    n = len(reference) + len(x)
    ref = np.fft.rfft(reference, n)
    power = np.abs(ref) ** 2
    response = np.fft.irfft(np.fft.rfft(x, n) * np.conj(ref) / (power + 1e-3 * power.mean()), n)
    window = np.concatenate([response[-max_lag:], response[: max_lag + 1]])
    return int(np.argmax(np.abs(window))) - max_lag


def test_layout_pairs_every_name_in_each_task_and_split(small):
    out, summary = small
    for task in ("denoise", "dereverb"):
        for split in SPLITS:
            clean = sorted(p.name for p in (out / task / split / "clean").iterdir())
            noisy = sorted(p.name for p in (out / task / split / "noisy").iterdir())
            assert clean and clean == noisy, (task, split)
            assert summary["files"][f"{task}/{split}"] == len(clean)
            for name in clean:
                a, b = (
                    sf.info(out / task / split / "clean" / name),
                    sf.info(out / task / split / "noisy" / name),
                )
                assert (a.samplerate, a.channels, a.subtype) == (RATE, 1, "PCM_16")
                assert a.frames == b.frames, name
    assert set(summary["engines_used"]) >= {"espeak-ng", "flite"}
    assert (out / "manifest.json").is_file()


def test_noisy_files_are_at_their_recorded_snr(small):
    out, _ = small
    entries = [e for e in _manifest(out)["files"] if e["task"] == "denoise"]
    kinds = set()
    for entry in entries:
        folder = out / "denoise" / entry["split"]
        clean = _read(folder / "clean" / f"{entry['name']}.wav")
        noisy = _read(folder / "noisy" / f"{entry['name']}.wav")
        snr = 10 * np.log10(_active_power(clean) / np.mean((noisy - clean) ** 2))
        assert SNR_RANGE_DB[0] - 0.1 <= snr <= SNR_RANGE_DB[1] + 0.1, entry["name"]
        assert snr == pytest.approx(entry["snr_db"], abs=0.1), entry["name"]
        assert max(np.abs(clean).max(), np.abs(noisy).max()) < 0.95  # no clipping
        kinds.add(entry["noise"]["kind"])
    assert kinds == {"coloured", "babble", "bursts"}


def test_test_speakers_rooms_and_sentences_are_never_in_train_or_valid(small):
    out, _ = small
    manifest = _manifest(out)
    splits = manifest["splits"]
    seen = set(splits["train"]["speakers"]) | set(splits["valid"]["speakers"])
    assert splits["test"]["speakers"] and not seen & set(splits["test"]["speakers"])
    seen_identities = set(splits["train"]["identities"]) | set(splits["valid"]["identities"])
    assert not seen_identities & set(splits["test"]["identities"])
    assert not (set(splits["train"]["rooms"]) | set(splits["valid"]["rooms"])) & set(splits["test"]["rooms"])
    speaker_split = {code: s["split"] for code, s in manifest["speakers"].items()}
    texts = {split: {e["text"] for e in manifest["files"] if e["split"] == split} for split in SPLITS}
    assert not texts["test"] & (texts["train"] | texts["valid"])
    for entry in manifest["files"]:
        assert speaker_split[entry["speaker"]] == entry["split"]
        assert entry["name"].startswith(entry["speaker"] + "_")
        if entry.get("noise", {}).get("kind") == "babble":
            talkers = {speaker_split[t] for t in entry["noise"]["talkers"]}
            assert talkers == {"test"} if entry["split"] == "test" else "test" not in talkers
            assert entry["speaker"] not in entry["noise"]["talkers"]
        if "room" in entry:
            assert manifest["rooms"][entry["room"]]["split"] == entry["split"]


def test_dereverb_pairs_are_aligned_and_reverberant(small):
    out, _ = small
    manifest = _manifest(out)
    for room in manifest["rooms"].values():
        assert RT60_RANGE_S[0] <= room["rt60_s"] <= RT60_RANGE_S[1]
        # The simulated response really decays at the room's RT60.
        assert room["rt60_measured_s"] == pytest.approx(room["rt60_s"], rel=0.2)
    one_ms = RATE // 1000
    for entry in (e for e in manifest["files"] if e["task"] == "dereverb"):
        folder = out / "dereverb" / entry["split"]
        dry = _read(folder / "clean" / f"{entry['name']}.wav")
        wet = _read(folder / "noisy" / f"{entry['name']}.wav")
        assert abs(_lag_of_strongest_path(dry, wet, RATE // 10)) <= one_ms, entry["name"]
        # Measurable reverberation: the reflected sound is within 10 dB of the direct sound or
        # louder, and once the dry speech stops the reverberant file goes on ringing (10-60 ms
        # after the last loud dry sample it is more than 6 dB above the dry file).
        assert 10 * np.log10(np.sum(dry**2) / np.sum((wet - dry) ** 2)) < 10, entry["name"]
        last = np.flatnonzero(np.abs(dry) > 1e-2 * np.abs(dry).max())[-1]
        after = slice(last + 10 * one_ms, last + 60 * one_ms)
        assert np.sum(wet[after] ** 2) > 4 * np.sum(dry[after] ** 2), entry["name"]


def test_real_recordings_are_paired_when_the_packages_are_installed(small):
    out, summary = small
    real = _manifest(out)["real"]
    if not corpus.find_real_recordings():
        assert real == [] and not (out / "real").exists()
        pytest.skip("pocketsphinx-testdata / codec2-examples are not installed")
    assert len(real) == summary["files"]["real"] == 3
    for entry in real:
        clean = _read(out / "real" / "clean" / f"{entry['name']}.wav")
        noisy = _read(out / "real" / "noisy" / f"{entry['name']}.wav")
        assert len(clean) == len(noisy) <= 4 * RATE
        snr = 10 * np.log10(_active_power(clean) / np.mean((noisy - clean) ** 2))
        assert snr == pytest.approx(entry["snr_db"], abs=0.1)


def test_festival_voices_are_used_when_installed(small):
    if shutil.which("festival") is None:
        pytest.skip("festival is optional and not installed")
    out, _ = small
    engines = _manifest(out)["engines"]
    assert engines["festival"]["available"], engines["festival"]["reason"]


def _digest(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_and_overwrite_only_when_asked(tmp_path):
    _require_engines()
    options = {"size": "small", "seed": 3, "tasks": ("denoise",), "real": False}
    first = tmp_path / "first"
    build_demo_corpus(first, **options)
    digest = _digest(first)

    with pytest.raises(FileExistsError, match="not empty"):
        build_demo_corpus(first, **options)
    assert _digest(first) == digest

    (first / "my_notes.txt").write_text("mine")
    build_demo_corpus(first, overwrite=True, **options)
    assert (first / "my_notes.txt").read_text() == "mine"  # only the corpus's own entries are replaced
    rebuilt = _digest(first)
    rebuilt.pop("my_notes.txt")
    assert rebuilt == digest
    assert not list(tmp_path.glob(".*partial"))

    other = tmp_path / "other"
    build_demo_corpus(other, **{**options, "seed": 4})
    assert _manifest(other)["files"] != _manifest(first)["files"]


def test_missing_engine_is_skipped_with_a_warning(tmp_path, monkeypatch, caplog):
    _require_engines()
    real_engines = corpus.available_engines

    def without_festival():
        engines = real_engines()
        engines["festival"] = {"available": False, "voices": [], "reason": "festival is not installed"}
        return engines

    monkeypatch.setattr(corpus, "available_engines", without_festival)
    with caplog.at_level(logging.WARNING, logger="polydiff_audio.corpus"):
        summary = build_demo_corpus(tmp_path / "c", size="small", tasks=("denoise",), real=False)
    assert "festival" not in summary["engines_used"]
    assert "speech engine festival skipped: festival is not installed" in caplog.text
    assert summary["files"]["denoise/test"] > 0


def test_bad_arguments_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="valid tasks: denoise, dereverb"):
        build_demo_corpus(tmp_path / "x", tasks=("denoise", "separate"))
    with pytest.raises(ValueError, match="valid sizes"):
        build_demo_corpus(tmp_path / "x", size="huge")
    assert not (tmp_path / "x").exists()
