"""The offline demo corpus behind ``polydiff audio make-demo-data OUT``.

Builds a speech enhancement and a dereverberation corpus in the VoiceBank-DEMAND layout
(``OUT/<task>/{train,valid,test}/{clean,noisy}/<name>.wav``, 16 kHz, 16-bit PCM) with no
downloads:

* **Clean speech** is synthesised from sentences made by a small built-in grammar, with several
  engines and voices: espeak-ng (accents such as ``en-gb-scotland`` crossed with voice variants
  such as ``+f2``, each with its own speed and pitch), flite (``kal16``, ``awb``, ``rms``,
  ``slt``) and festival (``kal_diphone``, ``ked_diphone``, ``cmu_us_slt_arctic_hts``). Each
  (engine, voice, variant) is a *speaker*. Recordings of the same person (flite ``slt`` and
  festival's ``slt`` HTS voice, flite ``kal16`` and festival ``kal``) share an *identity* and
  always land in the same split.
* **Noise** is synthesised: coloured noise (white, pink, brown by spectral shaping), babble
  (3-6 talkers drawn from the split's own speakers, never from the test speakers outside the
  test split), and nonstationary bursts (clicks, harmonic hums, modulated noise). It is mixed at
  an SNR drawn uniformly from -5 to 15 dB, measured on active speech (see
  :func:`active_speech_level`).
* **Reverberation** comes from pyroomacoustics shoebox rooms with RT60 drawn from 0.3-1.0 s
  (wall absorption by ``inverse_sabine``); the target is the dry speech aligned to the direct
  path, so clean and reverberant files are time-aligned sample for sample.
* **Real recordings** (Debian's ``pocketsphinx-testdata`` and ``codec2-examples``) form an
  out-of-domain set ``OUT/real/{clean,noisy}``, noise added the same way as for the test split.

Speakers, sentences and rooms of the test split never appear in train or valid; the manifest
(``OUT/manifest.json``) records every file's speaker, sentence, noise, SNR and room, and which
engines were used. Everything is drawn from generators seeded by ``seed``, so a build is
reproducible byte for byte on the same engines.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "RATE",
    "RT60_RANGE_S",
    "SIZES",
    "SNR_RANGE_DB",
    "TASKS",
    "CorpusSize",
    "Speaker",
    "active_speech_level",
    "available_engines",
    "build_demo_corpus",
    "make_sentences",
]

log = logging.getLogger(__name__)

RATE = 16000
"""Sample rate of every file in the corpus, in Hz."""

TASKS: tuple[str, ...] = ("denoise", "dereverb")
SPLITS: tuple[str, ...] = ("train", "valid", "test")

SNR_RANGE_DB: tuple[float, float] = (-5.0, 15.0)
"""Range of the uniform SNR draw for the noisy files, in dB, on active speech."""

RT60_RANGE_S: tuple[float, float] = (0.3, 1.0)
"""Range of the uniform RT60 draw for the rooms, in seconds."""

MANIFEST = "manifest.json"

# Speech level every clean utterance is brought to before mixing (ITU-T P.56's usual -26 dBov);
# the final files are then scaled by a random peak level, clean and noisy alike.
_SPEECH_LEVEL_DBFS = -26.0
_PEAK_RANGE = (0.3, 0.9)

# Active speech: 20 ms frames whose power is within 40 dB of the loudest frame.
_FRAME_SECONDS = 0.02
_ACTIVE_RANGE_DB = 40.0

# Hybrid room response: pyroomacoustics' image sources up to this order give the early part, a
# noise tail decaying at the room's RT60 gives the rest. Full image-source orders from
# inverse_sabine reach 100-130 for RT60 = 1 s (seconds per room), while order 25 covers the
# first 60 ms after the direct path completely even in a 2.5 m high room.
_IMAGE_ORDER = 25
_MIXING_SECONDS = 0.06
_CROSSFADE_SECONDS = 0.01
# Silence appended to the dry speech before reverberation, so the files keep the decay.
_REVERB_TAIL_SECONDS = 0.3


# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CorpusSize:
    """How many speakers, utterances and rooms a build has.

    Args:
        speakers: speakers per split (train, valid, test).
        utterances_per_speaker: sentences each speaker says.
        rooms: rooms per split for the dereverberation task.
        real_files: most real recordings to use (``None``: all found).
        real_max_seconds: longer real recordings are cut to their first this many seconds.
    """

    speakers: dict[str, int]
    utterances_per_speaker: int
    rooms: dict[str, int]
    real_files: int | None = None
    real_max_seconds: float = 12.0


SIZES: dict[str, CorpusSize] = {
    # About 20 s on two cores: 184 utterances (~9 minutes of speech) per task, 26 real recordings.
    "default": CorpusSize(
        speakers={"train": 15, "valid": 3, "test": 5},
        utterances_per_speaker=8,
        rooms={"train": 10, "valid": 2, "test": 3},
    ),
    # A few seconds, for tests: every split, task and noise kind still appears. Test needs 4
    # speakers so that babble has 3 other test talkers.
    "small": CorpusSize(
        speakers={"train": 4, "valid": 2, "test": 4},
        utterances_per_speaker=2,
        rooms={"train": 2, "valid": 1, "test": 2},
        real_files=3,
        real_max_seconds=4.0,
    ),
}

_MEAN_UTTERANCE_SECONDS = 2.8  # measured on the default build; used to turn ``hours`` into counts


# ---------------------------------------------------------------------------------------------
# Sentences
# ---------------------------------------------------------------------------------------------
def _words(text: str) -> tuple[str, ...]:
    return tuple(word.strip() for word in text.split(","))


_NAMES = _words(
    "Anna, Brian, Chloe, David, Elena, Farid, Grace, Henry, Isla, Jonah, Keiko, Liam, Maya, Nadia, "
    "Oscar, Priya, Quentin, Rosa, Samuel, Tara"
)
_ADJECTIVES = _words(
    "old, yellow, heavy, quiet, broken, shiny, tiny, wooden, careful, bright, empty, warm, narrow, "
    "strange, gentle, noisy, rusty, clever, pale, crowded"
)
_NOUNS = tuple(
    (noun, noun + ("es" if noun.endswith("s") else "s"))
    for noun in _words(
        "kettle, bicycle, letter, garden, window, basket, engine, lantern, blanket, ladder, mirror, "
        "suitcase, violin, teacup, notebook, bridge, parcel, compass, candle, umbrella"
    )
)
_PLACES = _words(
    "station, harbour, library, kitchen, market, hallway, village square, bakery, museum, orchard, "
    "cellar, bus stop, workshop, riverbank, school yard, attic"
)
_TIMES = _words(
    "this morning, last night, before lunch, on Tuesday, after the storm, at noon, every Sunday, "
    "in the spring, around midnight, later today, two days ago, at dawn"
)
_TRANSITIVE = tuple(
    tuple(pair.split("/"))
    for pair in _words(
        "found/find, painted/paint, carried/carry, fixed/fix, dropped/drop, borrowed/borrow, "
        "cleaned/clean, sold/sell, wrapped/wrap, measured/measure, opened/open, hid/hide"
    )
)
_INTRANSITIVE = _words("waited, rattled, vanished, glowed, tumbled, stayed, drifted, shivered")
_COMPARATIVES = _words(
    "older, heavier, quieter, shinier, smaller, brighter, warmer, narrower, stranger, gentler, "
    "noisier, cleaner"
)
_WEATHER = ("wind", "rain", "fog", "heat", "snow", "thunder", "frost", "dust")
_ADVERBS = ("quickly", "slowly", "twice", "carefully", "again", "quietly", "at once", "by mistake")
_NUMBERS = ("Two", "Three", "Four", "Five", "Seven", "Nine", "Twelve", "Twenty")
_EVENTS = ("the guests arrive", "the train leaves", "it gets dark", "the shop closes", "the tide turns")

# Each template is a function of a random generator: one small grammar, many sentence shapes.
_Template = Callable[[np.random.Generator], str]


def _pick(rng: np.random.Generator, words: Sequence[Any]) -> Any:
    return words[int(rng.integers(len(words)))]


def _with_article(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


_TEMPLATES: tuple[_Template, ...] = (
    lambda r: (
        f"The {_pick(r, _ADJECTIVES)} {_pick(r, _NOUNS)[0]} {_pick(r, _INTRANSITIVE)} "
        f"near the {_pick(r, _PLACES)} {_pick(r, _TIMES)}."
    ),
    lambda r: (
        f"{_pick(r, _NAMES)} {_pick(r, _TRANSITIVE)[0]} the {_pick(r, _ADJECTIVES)} "
        f"{_pick(r, _NOUNS)[0]} {_pick(r, _TIMES)}."
    ),
    lambda r: f"Please {_pick(r, _TRANSITIVE)[1]} the {_pick(r, _NOUNS)[0]} at the {_pick(r, _PLACES)}.",
    lambda r: (
        f"Did {_pick(r, _NAMES)} {_pick(r, _TRANSITIVE)[1]} the {_pick(r, _NOUNS)[1]} {_pick(r, _TIMES)}?"
    ),
    lambda r: (
        f"{_pick(r, _NUMBERS)} {_pick(r, _ADJECTIVES)} {_pick(r, _NOUNS)[1]} "
        f"{_pick(r, _INTRANSITIVE)} at the {_pick(r, _PLACES)}."
    ),
    lambda r: (
        f"We must {_pick(r, _TRANSITIVE)[1]} {_with_article(_pick(r, _ADJECTIVES))} "
        f"{_pick(r, _NOUNS)[0]} before {_pick(r, _EVENTS)}."
    ),
    lambda r: f"The {_pick(r, _PLACES)} was closed because of the {_pick(r, _WEATHER)}.",
    lambda r: (
        f"{_pick(r, _NAMES)} said the {_pick(r, _NOUNS)[0]} {_pick(r, _INTRANSITIVE)} {_pick(r, _ADVERBS)}."
    ),
    lambda r: f"Where did {_pick(r, _NAMES)} put the {_pick(r, _ADJECTIVES)} {_pick(r, _NOUNS)[1]}?",
    lambda r: (
        f"After the {_pick(r, _WEATHER)}, {_pick(r, _NAMES)} {_pick(r, _TRANSITIVE)[0]} "
        f"{_with_article(_pick(r, _NOUNS)[0])} {_pick(r, _ADVERBS)}."
    ),
    lambda r: f"My {_pick(r, _NOUNS)[0]} is {_pick(r, _COMPARATIVES)} than {_pick(r, _NAMES)}'s.",
    lambda r: (
        f"Nobody {_pick(r, _TRANSITIVE)[0]} the {_pick(r, _NOUNS)[1]} from the "
        f"{_pick(r, _PLACES)} {_pick(r, _TIMES)}."
    ),
)


def make_sentences(count: int, rng: np.random.Generator) -> list[str]:
    """Draw ``count`` distinct short English sentences from the built-in grammar.

    Args:
        count: how many sentences.
        rng: the generator that picks templates and words.

    Returns:
        The sentences, in drawing order, all different.
    """
    seen: set[str] = set()
    sentences: list[str] = []
    attempts = 0
    while len(sentences) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise RuntimeError(f"the sentence grammar cannot make {count} distinct sentences")
        sentence = _pick(rng, _TEMPLATES)(rng)
        if sentence not in seen:
            seen.add(sentence)
            sentences.append(sentence)
    return sentences


# ---------------------------------------------------------------------------------------------
# Engines and speakers
# ---------------------------------------------------------------------------------------------
# espeak-ng accents (built-in "gmw" voices; the "mb/" ones need the separate mbrola program)
# and voice variants that sound like speech rather than effects.
_ESPEAK_ACCENTS = _words(
    "en-us, en-gb, en-gb-scotland, en-gb-x-rp, en-gb-x-gbclan, en-gb-x-gbcwmd, en-029, en-us-nyc"
)
_ESPEAK_VARIANTS = _words("m1, m2, m3, m4, m5, m6, m7, f1, f2, f3, f4, f5, klatt, klatt2")
# flite voices and their identities; kal (8 kHz) duplicates kal16 and awb_time speaks only
# clock times, so neither is used.
_FLITE_VOICES = {"kal16": "kal", "awb": "awb", "rms": "rms", "slt": "slt"}
_FESTIVAL_VOICES = {"kal_diphone": "kal", "ked_diphone": "ked", "cmu_us_slt_arctic_hts": "slt"}


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an engine, a voice and the settings that make it distinct.

    Args:
        code: short name used in file names (``es03``, ``fl01``, ``fe02``).
        engine: ``"espeak-ng"``, ``"flite"`` or ``"festival"``.
        voice: the engine's voice name (espeak-ng: ``accent+variant``).
        identity: the person or voice design behind it; speakers sharing one are kept in one split.
        settings: engine settings (speed, pitch, duration stretch).
    """

    code: str
    engine: str
    voice: str
    identity: str
    settings: dict[str, float] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """``engine:voice``, e.g. ``espeak-ng:en-gb-scotland+f2``."""
        return f"{self.engine}:{self.voice}"


def _run(command: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, check=False)


def available_engines() -> dict[str, dict[str, Any]]:
    """Find the speech synthesisers installed here and the voices each offers.

    Returns:
        Engine name to ``{"available": bool, "version": str, "voices": [...], "reason": str}``
        for ``espeak-ng``, ``flite`` and ``festival``. For espeak-ng, ``voices`` lists accents
        and ``variants`` the voice variants.
    """
    engines: dict[str, dict[str, Any]] = {}

    if shutil.which("espeak-ng"):
        listing = _run(["espeak-ng", "--voices=en"]).stdout.splitlines()[1:]
        accents = sorted(
            {row.split()[1] for row in listing if len(row.split()) >= 5 and row.split()[4].startswith("gmw/")}
        )
        variant_rows = _run(["espeak-ng", "--voices=variant"]).stdout.splitlines()[1:]
        variants = sorted(
            {row.split()[4].removeprefix("!v/") for row in variant_rows if len(row.split()) >= 5}
        )
        version = _run(["espeak-ng", "--version"]).stdout.strip()
        engines["espeak-ng"] = {
            "available": bool(accents),
            "version": version,
            "voices": [a for a in _ESPEAK_ACCENTS if a in accents],
            "variants": [v for v in _ESPEAK_VARIANTS if v in variants],
            "reason": "" if accents else "espeak-ng lists no English voices",
        }
    else:
        engines["espeak-ng"] = {"available": False, "voices": [], "reason": "espeak-ng is not installed"}

    if shutil.which("flite"):
        listing = _run(["flite", "-lv"]).stdout
        voices = listing.split(":", 1)[1].split() if ":" in listing else []
        version = next(
            (line.strip() for line in _run(["flite", "--version"]).stdout.splitlines() if "version" in line),
            "",
        )
        usable = [v for v in _FLITE_VOICES if v in voices]
        engines["flite"] = {
            "available": bool(usable),
            "version": version,
            "voices": usable,
            "reason": "" if usable else f"flite offers none of {sorted(_FLITE_VOICES)}",
        }
    else:
        engines["flite"] = {"available": False, "voices": [], "reason": "flite is not installed"}

    if shutil.which("festival"):
        listing = _run(["festival", "--batch", "(print (voice.list))"]).stdout
        voices = listing.replace("(", " ").replace(")", " ").split()
        usable = [v for v in _FESTIVAL_VOICES if v in voices]
        version = _run(["festival", "--version"]).stdout.strip()
        engines["festival"] = {
            "available": bool(usable),
            "version": version,
            "voices": usable,
            "reason": "" if usable else f"festival offers none of {sorted(_FESTIVAL_VOICES)}",
        }
    else:
        engines["festival"] = {"available": False, "voices": [], "reason": "festival is not installed"}
    return engines


def _plan_speakers(
    engines: dict[str, dict[str, Any]], counts: dict[str, int], rng: np.random.Generator
) -> dict[str, list[Speaker]]:
    """Choose each split's speakers so that no identity, accent or variant of test is trained on.

    Named voices (flite, festival) are grouped by identity and whole identities go to train or
    test (about 40 % of them to test). espeak-ng accents and variants are split the same way:
    a test speaker combines a test-only accent with a test-only variant; valid speakers are
    unseen combinations of training accents and variants.
    """
    named: list[Speaker] = []
    for engine, table in (("flite", _FLITE_VOICES), ("festival", _FESTIVAL_VOICES)):
        for voice in engines[engine]["voices"] if engines[engine]["available"] else []:
            # Speed is the one setting all voices honour; pitch changes break the diphone voices.
            stretch = round(float(rng.uniform(0.9, 1.15)), 3)
            named.append(Speaker("", engine, voice, table[voice], {"duration_stretch": stretch}))
    identities = sorted({s.identity for s in named})
    rng.shuffle(identities)
    n_test_identities = round(0.4 * len(identities)) if len(identities) > 1 else 0
    test_identities = set(identities[:n_test_identities])

    plan: dict[str, list[Speaker]] = {split: [] for split in SPLITS}
    for split, allowed in (
        ("train", lambda s: s.identity not in test_identities),
        ("test", lambda s: s.identity in test_identities),
    ):
        pool = [s for s in named if allowed(s)]
        rng.shuffle(pool)
        # At most half of a split's speakers come from the few named voices; espeak-ng fills the rest.
        plan[split] = pool[: max(1, counts[split] // 2) if counts[split] > 1 else counts[split]]

    espeak = engines["espeak-ng"]
    if espeak["available"]:
        accents = list(espeak["voices"])
        variants = list(espeak["variants"])
        rng.shuffle(accents)
        rng.shuffle(variants)
        n_test_accents = max(1, len(accents) // 4) if len(accents) > 1 else 0
        n_test_variants = max(1, len(variants) // 4) if len(variants) > 1 else 0
        test_pairs = [(a, v) for a in accents[:n_test_accents] for v in variants[:n_test_variants]]
        train_pairs = [(a, v) for a in accents[n_test_accents:] for v in variants[n_test_variants:]]
        rng.shuffle(test_pairs)
        rng.shuffle(train_pairs)
        need = {split: counts[split] - len(plan[split]) for split in SPLITS}
        pairs = {
            "train": train_pairs[: need["train"]],
            "valid": train_pairs[need["train"] : need["train"] + need["valid"]],
            "test": test_pairs[: need["test"]],
        }
        for split in SPLITS:
            for accent, variant in pairs[split]:
                settings = {"speed": int(rng.integers(140, 191)), "pitch": int(rng.integers(25, 76))}
                plan[split].append(
                    Speaker("", "espeak-ng", f"{accent}+{variant}", f"espeak-ng:{accent}+{variant}", settings)
                )

    if len(plan["valid"]) < counts["valid"]:
        # Without espeak-ng, valid takes the training identities' voices that train left over.
        spare = [s for s in named if s.identity not in test_identities and s not in plan["train"]]
        plan["valid"] += spare[: counts["valid"] - len(plan["valid"])]

    numbering: dict[str, int] = {}
    prefixes = {"espeak-ng": "es", "flite": "fl", "festival": "fe"}
    for split in SPLITS:
        named_plan = []
        for speaker in plan[split]:
            prefix = prefixes[speaker.engine]
            numbering[prefix] = numbering.get(prefix, 0) + 1
            named_plan.append(replace(speaker, code=f"{prefix}{numbering[prefix]:02d}"))
        plan[split] = named_plan
    return plan


def _synthesize(speaker: Speaker, texts: Sequence[str], workdir: Path) -> list[np.ndarray]:
    """Speak each text with one speaker; the waveforms come back at :data:`RATE`, float64, mono."""
    from .audio_files import read_audio

    folder = workdir / speaker.code
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:04d}.wav" for i in range(len(texts))]
    settings = speaker.settings
    if speaker.engine == "espeak-ng":
        voice = ["-v", speaker.voice, "-s", str(settings["speed"]), "-p", str(settings["pitch"])]
        for text, path in zip(texts, paths):
            _check_engine(_run(["espeak-ng", *voice, "-w", str(path), text]), speaker)
    elif speaker.engine == "flite":
        voice = ["-voice", speaker.voice, "--setf", f"duration_stretch={settings['duration_stretch']}"]
        for text, path in zip(texts, paths):
            _check_engine(_run(["flite", *voice, "-t", text, "-o", str(path)]), speaker)
    elif speaker.engine == "festival":
        # One festival process per speaker: its start-up (~0.2 s) costs more than an utterance.
        lines = [
            f"(voice_{speaker.voice})",
            f"(Parameter.set 'Duration_Stretch {speaker.settings['duration_stretch']})",
        ]
        for text, path in zip(texts, paths):
            quoted = text.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{quoted}")) "{path}" (quote riff))')
        script = folder / "speak.scm"
        script.write_text("\n".join(lines) + "\n")
        _check_engine(_run(["festival", "--batch", str(script)], timeout=300.0), speaker)
    else:
        raise ValueError(f"unknown engine {speaker.engine!r}")
    waves = []
    for path in paths:
        if not path.is_file():
            raise RuntimeError(f"{speaker.id} wrote no audio for an utterance ({path.name})")
        wave = read_audio(path, rate=RATE)[0].mean(dim=0).double().numpy()
        if not np.abs(wave).max() > 0:
            raise RuntimeError(f"{speaker.id} produced silence for an utterance ({path.name})")
        waves.append(wave)
    return waves


def _check_engine(result: subprocess.CompletedProcess[str], speaker: Speaker) -> None:
    if result.returncode != 0 or "SIOD ERROR" in result.stdout + result.stderr:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise RuntimeError(
            f"{speaker.id} failed (exit {result.returncode}): {message[-1] if message else 'no message'}"
        )


# ---------------------------------------------------------------------------------------------
# Levels, trimming and mixing
# ---------------------------------------------------------------------------------------------
def _frame_powers(x: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    frame = max(1, round(_FRAME_SECONDS * rate))
    n_frames = math.ceil(len(x) / frame)
    padded = np.zeros(n_frames * frame)
    padded[: len(x)] = x
    return (padded.reshape(n_frames, frame) ** 2).mean(axis=1), frame


def active_speech_level(x: np.ndarray, rate: int = RATE) -> float:
    """Mean power of ``x`` over its active-speech frames.

    Active frames are the 20 ms frames (non-overlapping, from the first sample) whose power is
    within 40 dB of the loudest frame's: a simple stand-in for ITU-T P.56 that ignores pauses.
    The corpus's SNR is ``10 log10(active_speech_level(clean) / mean(noise**2))``.

    Args:
        x: the clean speech.
        rate: its sample rate in Hz.

    Returns:
        The power (mean square), 0.0 for an all-zero signal.

    Shapes:
        x: ``(samples,)``.
    """
    powers, frame = _frame_powers(np.asarray(x, dtype=np.float64), rate)
    peak = powers.max(initial=0.0)
    if peak <= 0:
        return 0.0
    active = powers >= peak * 10 ** (-_ACTIVE_RANGE_DB / 10)
    # Frame powers are means over full frames; the last frame is zero-padded, so weigh by length.
    lengths = np.full(len(powers), frame, dtype=np.float64)
    lengths[-1] = len(x) - frame * (len(powers) - 1)
    return float((powers[active] * frame).sum() / lengths[active].sum())


def _trim(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cut leading and trailing silence, leaving a random 0.1-0.25 s margin on each side."""
    powers, frame = _frame_powers(x, RATE)
    active = np.flatnonzero(powers >= powers.max() * 10 ** (-45 / 10))
    lead, trail = (int(rng.uniform(0.1, 0.25) * RATE) for _ in range(2))
    start = max(0, active[0] * frame - lead)
    stop = min(len(x), (active[-1] + 1) * frame + trail)
    out = x[start:stop]
    # Keep the margins even when the engine left less silence than asked for.
    pad_front = max(0, lead - active[0] * frame)
    pad_back = max(0, (active[-1] + 1) * frame + trail - len(x))
    return np.concatenate([np.zeros(pad_front), out, np.zeros(pad_back)])


def _to_level(x: np.ndarray, level_dbfs: float) -> np.ndarray:
    power = active_speech_level(x)
    return x * math.sqrt(10 ** (level_dbfs / 10) / power) if power > 0 else x


def _mix(clean: np.ndarray, noise: np.ndarray, snr_db: float, peak: float) -> tuple[np.ndarray, np.ndarray]:
    """Add noise at ``snr_db`` (on active speech), then scale clean and noisy alike to a peak."""
    noise = noise[: len(clean)]
    gain = math.sqrt(active_speech_level(clean) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    noisy = clean + gain * noise
    # One factor for both keeps noisy - clean the noise; the peak keeps 16-bit PCM from clipping.
    scale = peak / max(np.abs(noisy).max(), np.abs(clean).max())
    return clean * scale, noisy * scale


# ---------------------------------------------------------------------------------------------
# Noise
# ---------------------------------------------------------------------------------------------
_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}


def _coloured_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1 / f**exponent, unit RMS."""
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    # Flat below 20 Hz: 1/f**2 would otherwise put most of brown noise's power in a DC drift.
    spectrum *= np.maximum(freqs, 20.0) ** (-exponent / 2)
    x = np.fft.irfft(spectrum, n)
    return x / np.sqrt(np.mean(x**2))


def _burst_noise(n: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Nonstationary noise: a mix of clicks, a harmonic hum and modulated noise bursts."""
    t = np.arange(n) / RATE
    kinds = ["clicks", "hum", "modulated"]
    chosen = sorted(rng.choice(kinds, size=int(rng.integers(1, 4)), replace=False).tolist())
    parts = []
    info: dict[str, Any] = {"components": chosen}
    if "clicks" in chosen:
        x = np.zeros(n)
        rate_per_s = float(rng.uniform(2, 8))
        for start in np.flatnonzero(rng.random(n) < rate_per_s / RATE):
            length = int(rng.uniform(0.001, 0.008) * RATE)
            decay = np.exp(-np.arange(length) / (length / 4))
            seg = rng.standard_normal(length) * decay * rng.uniform(0.3, 1.0)
            x[start : start + length] += seg[: n - start]
        parts.append(x)
        info["clicks_per_second"] = round(rate_per_s, 2)
    if "hum" in chosen:
        f0 = float(rng.choice([50.0, 60.0])) if rng.random() < 0.5 else float(rng.uniform(90, 400))
        harmonics = int(rng.integers(3, 11))
        rolloff = float(rng.uniform(0.5, 1.5))
        x = sum(
            k**-rolloff * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
            for k in range(1, harmonics + 1)
            if k * f0 < RATE / 2
        )
        x = x * (1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 1.0) * t + rng.uniform(0, 2 * np.pi)))
        parts.append(np.asarray(x, dtype=np.float64))
        info.update(hum_hz=round(f0, 1), harmonics=harmonics)
    if "modulated" in chosen:
        carrier = _coloured_noise(n, float(rng.uniform(0, 1.5)), rng)
        if rng.random() < 0.5:
            envelope = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(2, 8) * t + rng.uniform(0, 2 * np.pi)))
            info["modulation"] = "sinusoidal"
        else:
            # Bursts of 50-500 ms with 10 ms raised-cosine edges, so the gating itself adds no clicks.
            gate = np.zeros(n)
            position = int(rng.uniform(0, 0.3) * RATE)
            while position < n:
                length = int(rng.uniform(0.05, 0.5) * RATE)
                gate[position : position + length] = 1.0
                position += length + int(rng.uniform(0.1, 0.6) * RATE)
            ramp = np.hanning(int(0.02 * RATE))
            envelope = np.convolve(gate, ramp / ramp.sum(), mode="same")
            info["modulation"] = "gated"
        parts.append(carrier * envelope)
    mixture = np.zeros(n)
    for part in parts:
        rms = np.sqrt(np.mean(part**2))
        if rms > 0:
            mixture += part / rms * 10 ** (rng.uniform(-10, 0) / 20)
    # A faint pink floor keeps the noise from being exactly zero between bursts.
    mixture += 0.03 * _coloured_noise(n, 1.0, rng)
    return mixture, info


def _babble(
    n: int, pool: dict[str, list[np.ndarray]], exclude: str, rng: np.random.Generator
) -> tuple[np.ndarray, list[str]]:
    """Sum of 3-6 talkers (other speakers of ``pool``), each a looped stream at equal level."""
    others = sorted(code for code in pool if code != exclude)
    if not others:
        raise RuntimeError("babble needs at least one other speaker")
    talkers = rng.choice(others, size=min(len(others), int(rng.integers(3, 7))), replace=False).tolist()
    mixture = np.zeros(n)
    for code in talkers:
        utterances = pool[code]
        offset = int(rng.integers(0, RATE))
        pieces, total = [], 0
        while total < n + offset:
            piece = utterances[int(rng.integers(len(utterances)))]
            gap = np.zeros(int(rng.uniform(0.0, 0.3) * RATE))
            pieces += [piece, gap]
            total += len(piece) + len(gap)
        stream = np.concatenate(pieces)[offset : offset + n]
        mixture += _to_level(stream, _SPEECH_LEVEL_DBFS)
    return mixture, sorted(talkers)


def _noise_for(
    n: int, speaker: str, pool: dict[str, list[np.ndarray]], rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    kind = str(rng.choice(["coloured", "babble", "bursts"]))
    if kind == "coloured":
        colour = str(rng.choice(list(_COLOURS)))
        return _coloured_noise(n, _COLOURS[colour], rng), {"kind": kind, "colour": colour}
    if kind == "babble":
        noise, talkers = _babble(n, pool, speaker, rng)
        return noise, {"kind": kind, "talkers": talkers}
    noise, info = _burst_noise(n, rng)
    return noise, {"kind": kind, **info}


# ---------------------------------------------------------------------------------------------
# Rooms
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Room:
    id: str
    dims: tuple[float, float, float]
    rt60: float


def _plan_rooms(counts: dict[str, int], rng: np.random.Generator) -> dict[str, list[_Room]]:
    rooms: dict[str, list[_Room]] = {}
    number = 0
    for split in SPLITS:
        rooms[split] = []
        for _ in range(counts[split]):
            number += 1
            dims = (
                round(float(rng.uniform(3, 10)), 2),
                round(float(rng.uniform(3, 8)), 2),
                round(float(rng.uniform(2.5, 4)), 2),
            )
            rooms[split].append(_Room(f"room{number:02d}", dims, round(float(rng.uniform(*RT60_RANGE_S)), 3)))
    return rooms


def _positions(room: _Room, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A source and a microphone 0.5-2 m apart, 0.75 m or more from the side walls.

    Closer to a wall (or a corner), two reflections can arrive together and outweigh the
    direct path, which would make "aligned to the direct path" ambiguous.
    """
    dims = np.asarray(room.dims)
    margin = 0.75
    for _ in range(1000):
        source = rng.uniform(
            [margin, margin, 1.2], [dims[0] - margin, dims[1] - margin, min(1.9, dims[2] - 0.5)]
        )
        mic = rng.uniform(
            [margin, margin, 0.8], [dims[0] - margin, dims[1] - margin, min(1.6, dims[2] - 0.5)]
        )
        if 0.5 <= np.linalg.norm(source - mic) <= 2.0:
            return np.round(source, 3), np.round(mic, 3)
    raise RuntimeError(f"no source/microphone placement found in {room}")


def _impulse_response(
    room: _Room, source: np.ndarray, mic: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int]:
    """Room impulse response, its direct path alone, both at unit direct-path gain, and the delay.

    The direct path is a fractional-delay filter peaking at sample ``delay``; convolving the dry
    speech with it (and dropping ``delay`` samples) gives a target aligned to within a fraction
    of a sample with the reverberant speech, which a bare integer shift could not.

    Early part: pyroomacoustics' image sources (walls absorbing as ``inverse_sabine`` gives for
    the room's RT60). Late part, from 60 ms after the direct path: Gaussian noise decaying by
    60 dB per RT60, matched in level to the image-source response where they cross-fade. The
    random tail keeps the build fast for long RT60s (where full image-source orders take
    seconds) and deterministic (pyroomacoustics' ray tracer is not seeded).
    """
    import pyroomacoustics as pra

    absorption, full_order = pra.inverse_sabine(room.rt60, list(room.dims))

    def simulate(order: int) -> np.ndarray:
        shoebox = pra.ShoeBox(
            list(room.dims),
            fs=RATE,
            materials=pra.Material(absorption),
            max_order=order,
            air_absorption=False,
        )
        shoebox.add_source(source.tolist())
        shoebox.add_microphone(mic.tolist())
        shoebox.compute_rir()
        return np.asarray(shoebox.rir[0][0], dtype=np.float64)

    direct = simulate(0)
    delay = int(np.argmax(np.abs(direct)))
    # The direct path is a fractional-delay filter: its energy, not its peak, is the path's gain.
    gain = float(np.sqrt(np.sum(direct**2)))
    direct = direct / gain
    early = simulate(min(full_order, _IMAGE_ORDER)) / gain

    mixing = delay + int(_MIXING_SECONDS * RATE)
    fade = int(_CROSSFADE_SECONDS * RATE)
    length = mixing + int(room.rt60 * RATE)
    rir = np.zeros(length)
    rir[: min(length, len(early))] = early[:length]
    window = early[mixing - fade : mixing + fade]
    level = math.sqrt(np.mean(window**2)) if len(window) else 0.0
    t = np.arange(length - (mixing - fade)) - fade
    tail = level * 10 ** (-3 * t / (room.rt60 * RATE)) * rng.standard_normal(len(t))
    ramp = np.clip((t + fade) / (2 * fade), 0.0, 1.0)
    rir[mixing - fade :] = rir[mixing - fade :] * (1 - ramp) + tail * ramp
    return rir, direct, delay


def _convolve_aligned(x: np.ndarray, response: np.ndarray, delay: int) -> np.ndarray:
    """``x`` filtered by ``response`` with ``delay`` samples removed, as long as ``x``."""
    from scipy.signal import fftconvolve

    return fftconvolve(x, response)[delay : delay + len(x)]


def _rt60_measured(rir: np.ndarray) -> float | None:
    import pyroomacoustics as pra

    try:
        return round(float(pra.experimental.measure_rt60(rir, fs=RATE, decay_db=30)), 3)
    except (ValueError, IndexError, ZeroDivisionError, FloatingPointError):
        return None  # a measurement is a report, never a reason to fail a build


def _direct_to_reverberant_db(rir: np.ndarray, delay: int) -> float:
    # Direct part: 2.5 ms either side of the direct path, the usual DRR window.
    half = int(0.0025 * RATE)
    direct = np.sum(rir[max(0, delay - half) : delay + half + 1] ** 2)
    rest = np.sum(rir**2) - direct
    return round(10 * math.log10(direct / rest), 2)


# ---------------------------------------------------------------------------------------------
# Real recordings
# ---------------------------------------------------------------------------------------------
REAL_PACKAGES: tuple[str, ...] = ("pocketsphinx-testdata", "codec2-examples")
"""Debian packages whose WAV files form the out-of-domain real-speech set."""


def find_real_recordings() -> list[tuple[str, Path]]:
    """WAV files of :data:`REAL_PACKAGES`, as (package, path), found through ``dpkg -L``.

    Returns:
        The files, sorted; empty (with a warning) where dpkg or the packages are missing.
    """
    if not shutil.which("dpkg"):
        log.warning("real-speech set skipped: dpkg is not available to locate %s", ", ".join(REAL_PACKAGES))
        return []
    found = []
    for package in REAL_PACKAGES:
        result = _run(["dpkg", "-L", package])
        if result.returncode != 0:
            log.warning("real-speech set: Debian package %s is not installed; skipping it", package)
            continue
        wavs = sorted(Path(line) for line in result.stdout.splitlines() if line.lower().endswith(".wav"))
        found += [(package, path) for path in wavs if path.is_file()]
    return found


def _real_name(package: str, path: Path) -> str:
    # The parent folder keeps names unique within a package (codec2's wav/ and raw/ both exist).
    stem = f"{package.split('-')[0]}_{path.parent.name}_{path.stem}"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)


# ---------------------------------------------------------------------------------------------
# The build
# ---------------------------------------------------------------------------------------------
Progress = Callable[[str, int, int], None]


def build_demo_corpus(
    out: str | os.PathLike[str],
    *,
    size: Literal["default", "small"] = "default",
    hours: float | None = None,
    utterances_per_speaker: int | None = None,
    seed: int = 0,
    tasks: Sequence[str] = TASKS,
    real: bool = True,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Build the offline demo corpus under ``out`` and write ``out/manifest.json``.

    The corpus is assembled in a hidden sibling folder and moved into ``out`` when complete, so
    a failed build leaves nothing half-written in ``out``.

    Args:
        out: the corpus folder; created if missing.
        size: ``"default"`` (15/3/5 speakers, 8 utterances each, about 20 s on two cores)
            or ``"small"`` (4/2/4 speakers, 2 utterances each, a few seconds; for tests).
        hours: approximate hours of clean training speech per task; sets the utterances per
            speaker (overrides ``utterances_per_speaker``).
        utterances_per_speaker: sentences each speaker says (default: the size's).
        seed: seeds every random choice; the same seed on the same engines gives the same bytes.
        tasks: any of ``"denoise"`` and ``"dereverb"``.
        real: also build ``out/real`` from the Debian real-speech packages (skipped with a
            warning where they are missing).
        overwrite: allowed to replace a previous build in a non-empty ``out``. Only the
            corpus's own entries (the task folders, ``real``, the manifest) are replaced;
            other files in ``out`` are left alone.
        progress: called as ``progress(stage, done, total)`` while building.

    Returns:
        A summary: files per task and split, hours of clean speech, speakers per split, engines
        used, seconds taken and the manifest's path.

    Raises:
        FileExistsError: ``out`` is not empty and ``overwrite`` is false.
        ValueError: an unknown task or size, or a non-positive count.
        RuntimeError: neither espeak-ng nor flite is available, or a split ends with no speakers.
    """
    started = time.perf_counter()
    out = Path(out)
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown task(s) {unknown or tasks!r}; valid tasks: {', '.join(TASKS)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; valid sizes: {', '.join(SIZES)}")
    plan_size = SIZES[size]
    per_speaker = utterances_per_speaker
    if per_speaker is None:
        per_speaker = plan_size.utterances_per_speaker
    if hours is not None:
        if hours <= 0:
            raise ValueError(f"hours must be positive, got {hours}")
        per_speaker = max(1, round(hours * 3600 / (plan_size.speakers["train"] * _MEAN_UTTERANCE_SECONDS)))
    if per_speaker < 1:
        raise ValueError(f"utterances_per_speaker must be at least 1, got {per_speaker}")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out}: folder is not empty; refusing to overwrite it "
            "(pass overwrite=True to replace the corpus)"
        )
    report = progress or (lambda stage, done, total: None)

    engines = available_engines()
    for name, info in engines.items():
        if not info["available"]:
            log.warning("speech engine %s skipped: %s", name, info["reason"])
    if not (engines["espeak-ng"]["available"] or engines["flite"]["available"]):
        raise RuntimeError(
            "the demo corpus needs espeak-ng or flite: "
            f"{engines['espeak-ng']['reason']}; {engines['flite']['reason']} "
            "(Debian/Ubuntu: apt-get install espeak-ng flite festival festvox-kallpc16k "
            "festvox-kdlpc16k festvox-us-slt-hts)"
        )

    def generator(*key: int) -> np.random.Generator:
        # One independent stream per purpose and item, so adding an item changes nothing else.
        return np.random.default_rng([seed, *key])

    speakers = _plan_speakers(engines, plan_size.speakers, generator(1))
    sentences = make_sentences(sum(len(v) for v in speakers.values()) * per_speaker, generator(2))

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        manifest = _build(stage, speakers, sentences, per_speaker, plan_size, tasks, real, generator, report)
        manifest.update(
            seed=seed,
            size=size,
            rate=RATE,
            snr_range_db=list(SNR_RANGE_DB),
            rt60_range_s=list(RT60_RANGE_S),
            utterances_per_speaker=per_speaker,
            engines=engines,
        )
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        out.mkdir(parents=True, exist_ok=True)
        for entry in (*TASKS, "real", MANIFEST):
            target = out / entry
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        for child in stage.iterdir():
            os.replace(child, out / child.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)

    summary = dict(manifest["summary"])
    summary.update(
        manifest=str(out / MANIFEST),
        engines_used=sorted({s["engine"] for s in manifest["speakers"].values()}),
        seconds=round(time.perf_counter() - started, 1),
    )
    return summary


def _build(
    stage: Path,
    speakers: dict[str, list[Speaker]],
    sentences: list[str],
    per_speaker: int,
    plan_size: CorpusSize,
    tasks: tuple[str, ...],
    real: bool,
    generator: Callable[..., np.random.Generator],
    report: Progress,
) -> dict[str, Any]:
    from .audio_files import write_audio

    # --- clean speech ---------------------------------------------------------------------
    all_speakers = [s for split in SPLITS for s in speakers[split]]
    texts: dict[str, list[str]] = {}
    cursor = 0
    for speaker in all_speakers:
        texts[speaker.code] = sentences[cursor : cursor + per_speaker]
        cursor += per_speaker
    clean: dict[str, list[np.ndarray]] = {}
    dropped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="polydiff-tts-") as workdir:

        def speak(speaker: Speaker) -> list[np.ndarray] | Exception:
            try:
                return _synthesize(speaker, texts[speaker.code], Path(workdir))
            except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
                return exc

        # The engines are separate processes, so threads overlap them; results are collected
        # in speaker order, which keeps the build deterministic.
        with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
            for number, (speaker, result) in enumerate(zip(all_speakers, pool.map(speak, all_speakers))):
                report("synthesise", number, len(all_speakers))
                if isinstance(result, Exception):
                    log.warning("speaker %s skipped: %s", speaker.id, result)
                    dropped[speaker.code] = str(result)
                    continue
                rng = generator(3, number)
                clean[speaker.code] = [_to_level(_trim(w, rng), _SPEECH_LEVEL_DBFS) for w in result]
        report("synthesise", len(all_speakers), len(all_speakers))
    for split in SPLITS:
        speakers[split] = [s for s in speakers[split] if s.code in clean]
        if not speakers[split]:
            raise RuntimeError(f"no speaker could be synthesised for the {split} split: {dropped}")

    # Babble pools: test babble only from test speakers; train and valid never from test ones.
    pools = {
        "train": {s.code: clean[s.code] for s in speakers["train"]},
        "valid": {s.code: clean[s.code] for s in speakers["train"] + speakers["valid"]},
        "test": {s.code: clean[s.code] for s in speakers["test"]},
    }
    rooms = _plan_rooms(plan_size.rooms, generator(4))
    number_of = {s.code: number for number, s in enumerate(all_speakers)}
    files: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"files": {}, "clean_hours": {}}
    item = 0
    total = sum(len(speakers[split]) * per_speaker for split in SPLITS) * len(tasks)
    for task in tasks:
        seconds = 0.0
        for split in SPLITS:
            count = 0
            for speaker in speakers[split]:
                for k, (wave, text) in enumerate(zip(clean[speaker.code], texts[speaker.code])):
                    report(task, item, total)
                    item += 1
                    name = f"{speaker.code}_{k + 1:03d}"
                    rng = generator(5, TASKS.index(task), number_of[speaker.code], k)
                    entry: dict[str, Any] = {
                        "task": task,
                        "split": split,
                        "name": name,
                        "speaker": speaker.code,
                        "text": text,
                    }
                    if task == "denoise":
                        noise, info = _noise_for(len(wave), speaker.code, pools[split], rng)
                        snr = float(rng.uniform(*SNR_RANGE_DB))
                        target, noisy = _mix(wave, noise, snr, float(rng.uniform(*_PEAK_RANGE)))
                        entry.update(snr_db=round(snr, 3), noise=info)
                    else:
                        room = rooms[split][int(rng.integers(len(rooms[split])))]
                        source, mic = _positions(room, rng)
                        rir, direct, delay = _impulse_response(room, source, mic, rng)
                        padded = np.concatenate([wave, np.zeros(int(_REVERB_TAIL_SECONDS * RATE))])
                        dry = _convolve_aligned(padded, direct, delay)
                        wet = _convolve_aligned(padded, rir, delay)
                        scale = float(rng.uniform(*_PEAK_RANGE)) / max(np.abs(wet).max(), np.abs(dry).max())
                        target, noisy = dry * scale, wet * scale
                        entry.update(
                            room=room.id,
                            source=source.tolist(),
                            microphone=mic.tolist(),
                            distance_m=round(float(np.linalg.norm(source - mic)), 3),
                            drr_db=_direct_to_reverberant_db(rir, delay),
                        )
                    write_audio(stage / task / split / "clean" / f"{name}.wav", target, RATE)
                    write_audio(stage / task / split / "noisy" / f"{name}.wav", noisy, RATE)
                    seconds += len(target) / RATE
                    files.append(entry)
                    count += 1
            summary["files"][f"{task}/{split}"] = count
        summary["clean_hours"][task] = round(seconds / 3600, 4)

    room_table = {}
    if "dereverb" in tasks:
        import pyroomacoustics as pra

        for split in SPLITS:
            for room in rooms[split]:
                absorption, order = pra.inverse_sabine(room.rt60, list(room.dims))
                # Measured on a response from the room's centre line: a check on the hybrid tail.
                centre = np.asarray(room.dims) / 2
                rir, _, _ = _impulse_response(
                    room, centre + [0.6, 0.4, 0.0], centre - [0.6, 0.4, 0.3], generator(6)
                )
                room_table[room.id] = {
                    "split": split,
                    "dims_m": list(room.dims),
                    "rt60_s": room.rt60,
                    "rt60_measured_s": _rt60_measured(rir),
                    "wall_absorption": round(float(absorption), 4),
                    "image_source_order": min(int(order), _IMAGE_ORDER),
                }

    real_files: list[dict[str, Any]] = []
    if real:
        real_files = _build_real(stage, pools["test"], plan_size, generator, report)
        summary["files"]["real"] = len(real_files)

    summary["speakers"] = {split: len(speakers[split]) for split in SPLITS}
    report("done", 1, 1)
    return {
        "format": "polydiff-audio-demo-corpus/1",
        "layout": "<task>/<split>/{clean,noisy}/<name>.wav; dereverb's noisy/ holds the reverberant input",
        "snr_definition": (
            "10*log10(P_active(clean) / mean(noise**2)); P_active: mean power over the 20 ms frames "
            "within 40 dB of the loudest"
        ),
        "speakers": {
            s.code: {**asdict(s), "id": s.id, "split": split} for split in SPLITS for s in speakers[split]
        },
        "dropped_speakers": dropped,
        "splits": {
            split: {
                "speakers": [s.code for s in speakers[split]],
                "identities": sorted({s.identity for s in speakers[split]}),
                "rooms": [r.id for r in rooms[split]] if "dereverb" in tasks else [],
            }
            for split in SPLITS
        },
        "rooms": room_table,
        "files": files,
        "real": real_files,
        "summary": summary,
    }


def _build_real(
    stage: Path,
    pool: dict[str, list[np.ndarray]],
    plan_size: CorpusSize,
    generator: Callable[..., np.random.Generator],
    report: Progress,
) -> list[dict[str, Any]]:
    """Noisy versions of the Debian packages' real recordings, mixed like the test split."""
    import torch

    from .audio_files import AudioError, check_audio, read_audio, write_audio

    recordings = find_real_recordings()
    if plan_size.real_files is not None and len(recordings) > plan_size.real_files:
        chosen = generator(7).choice(len(recordings), size=plan_size.real_files, replace=False)
        recordings = [recordings[i] for i in sorted(chosen)]
    entries: list[dict[str, Any]] = []
    for index, (package, path) in enumerate(recordings):
        report("real", index, len(recordings))
        try:
            wav, original_rate = read_audio(path, rate=RATE)
            wave = wav.mean(dim=0)[: int(plan_size.real_max_seconds * RATE)]
            check_audio(wave, RATE, min_samples=int(0.5 * RATE), path=path)
        except AudioError as exc:
            log.warning("real-speech file skipped: %s", exc)
            continue
        rng = generator(8, index)
        wave = _to_level(wave.to(torch.float64).numpy(), _SPEECH_LEVEL_DBFS)
        noise, info = _noise_for(len(wave), "", pool, rng)
        snr = float(rng.uniform(*SNR_RANGE_DB))
        target, noisy = _mix(wave, noise, snr, float(rng.uniform(*_PEAK_RANGE)))
        name = _real_name(package, path)
        write_audio(stage / "real" / "clean" / f"{name}.wav", target, RATE)
        write_audio(stage / "real" / "noisy" / f"{name}.wav", noisy, RATE)
        entries.append(
            {
                "name": name,
                "package": package,
                "source": path.name,
                "original_rate": original_rate,
                "snr_db": round(snr, 3),
                "noise": info,
            }
        )
    report("real", len(recordings), len(recordings))
    return entries
