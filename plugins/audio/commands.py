"""The audio plugin's own commands: ``make-demo-data``, ``enhance`` and ``evaluate``.

Each is ``fn(argv) -> exit status``, run as ``polydiff audio <command> ...``:

* ``make-demo-data OUT`` builds the offline corpus (:func:`~polydiff_audio.corpus.build_demo_corpus`).
* ``enhance --ckpt M.ckpt INPUT ... -o OUT`` enhances files and folders of files with a trained
  SGMSE+ or StoRM checkpoint. Every input is read at its own rate and channel count, resampled
  to the model's rate, enhanced channel by channel in bounded memory, resampled back and written
  under ``OUT`` with the input's name, rate and length.
* ``evaluate --clean DIR --enhanced DIR [--noisy DIR]`` scores enhanced files against clean ones
  (SI-SDR, wideband PESQ, ESTOI), prints a table and writes a per-file CSV.

Bad input never stops a batch: each bad file (not audio, empty, silent, clipped, too short, an
output that exists or would replace an input) is reported by name with the reason, the others
are processed, no input file is ever written, and the exit status is 1 when anything failed
(2 for a usage error).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["enhance", "evaluate", "make_demo_data"]


# Endings whose format the enhanced file keeps; other inputs (MP3, ...) are written as WAV.
_KEPT_SUFFIXES = (".wav", ".flac")


def _fail(message: str) -> None:
    print(f"polydiff audio: error: {message}", file=sys.stderr)


# --- make-demo-data ------------------------------------------------------------------------------
def make_demo_data(argv: Sequence[str]) -> int:
    """``polydiff audio make-demo-data OUT``: build the offline demo corpus."""
    from polydiff_audio.corpus import SIZES, TASKS

    parser = argparse.ArgumentParser(
        prog="polydiff audio make-demo-data",
        description=(
            "Build the offline speech corpus: synthesised voices (espeak-ng, flite, festival), synthetic "
            "noise at -5..15 dB SNR, simulated rooms for dereverberation, held-out test speakers and rooms, "
            "and a real-recordings set. Layout: OUT/<task>/{train,valid,test}/{clean,noisy}/*.wav and "
            "OUT/real/{clean,noisy}; OUT/manifest.json records every file."
        ),
    )
    parser.add_argument("out", type=Path, help="the corpus folder (created; must be empty unless --overwrite)")
    parser.add_argument("--size", choices=sorted(SIZES), default="default", help="speaker and room counts")
    parser.add_argument("--hours", type=float, default=None, help="about this many hours of clean training speech per task")
    parser.add_argument("--utterances-per-speaker", type=int, default=None, help="sentences per speaker")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="tasks to build")
    parser.add_argument("--no-real", action="store_true", help="skip the real-recordings set")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier corpus in OUT")
    opts = parser.parse_args(list(argv))

    from polydiff_audio.corpus import build_demo_corpus

    try:
        summary = build_demo_corpus(
            opts.out,
            size=opts.size,
            hours=opts.hours,
            utterances_per_speaker=opts.utterances_per_speaker,
            seed=opts.seed,
            tasks=opts.tasks,
            real=not opts.no_real,
            overwrite=opts.overwrite,
        )
    except (FileExistsError, ValueError) as exc:
        _fail(str(exc))
        return 2
    except RuntimeError as exc:
        _fail(str(exc))
        return 1
    for key, count in summary["files"].items():
        print(f"{key:<16}{count:>6} files")
    hours = ", ".join(f"{task} {h:.3f} h" for task, h in summary["clean_hours"].items())
    print(f"clean speech: {hours}; speakers {summary['speakers']}; engines {', '.join(summary['engines_used'])}")
    print(f"corpus in {opts.out} ({summary['seconds']} s); manifest {summary['manifest']}")
    return 0


# --- enhance -------------------------------------------------------------------------------------
class _Skip(Exception):
    """One input that cannot be processed; the message is the reason."""


def _collect_inputs(inputs: Sequence[Path], recursive: bool) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """``(file, name under the output folder)`` for every input, and the inputs that name nothing."""
    from polydiff_audio.audio_files import find_audio_files

    found: list[tuple[Path, Path]] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        if item.is_dir():
            files = find_audio_files(item, recursive=recursive)
            if not files:
                problems.append((str(item), "folder holds no audio files (.wav, .flac, .ogg, .mp3)"))
            found.extend((f, f.relative_to(item)) for f in files)
        elif item.is_file():
            found.append((item, Path(item.name)))
        else:
            problems.append((str(item), "no such file or folder"))
    return found, problems


def _output_name(relative: Path) -> Path:
    return relative if relative.suffix.lower() in _KEPT_SUFFIXES else relative.with_suffix(".wav")


def _is_input(target: Path, resolved_inputs: set[Path], inputs: Sequence[Path]) -> bool:
    """Whether writing ``target`` would replace an input (same path, or a link to one)."""
    if target.resolve() in resolved_inputs:
        return True
    if not target.exists():
        return False
    try:
        return any(os.path.samefile(target, other) for other in inputs)
    except OSError:
        return False


def enhance(argv: Sequence[str]) -> int:
    """``polydiff audio enhance --ckpt M.ckpt INPUT ... -o OUT``: enhance audio files."""
    parser = argparse.ArgumentParser(
        prog="polydiff audio enhance",
        description=(
            "Enhance speech with a trained SGMSE+ or StoRM checkpoint (the mode is the checkpoint's). "
            "Inputs are files or folders of files at any rate and channel count; each result is written "
            "as OUT/<name> at the input's rate. Existing outputs are kept unless --overwrite; inputs are "
            "never written. Exit status 1 when any file failed."
        ),
    )
    parser.add_argument("inputs", nargs="+", type=Path, help="noisy audio files or folders")
    parser.add_argument("--ckpt", required=True, type=Path, help="checkpoint written by 'polydiff audio fit'")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    parser.add_argument("--steps", type=int, default=None,
                        help="reverse steps (default: the model's, 30 SGMSE+, 8 StoRM); 0 with a StoRM checkpoint "
                             "gives its predictive network's estimate alone")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling noise (each file starts from it)")
    parser.add_argument("--device", default="cpu", help="torch device, or 'auto' for CUDA when available")
    parser.add_argument("--recursive", action="store_true", help="also enhance files in sub-folders of input folders")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files (never inputs)")
    parser.add_argument("--allow-clipped", action="store_true", help="enhance clipped inputs instead of rejecting them")
    opts = parser.parse_args(list(argv))
    if opts.steps is not None and opts.steps < 0:
        parser.error(f"--steps must be at least 0, got {opts.steps}")
    if opts.output.exists() and not opts.output.is_dir():
        _fail(f"output {opts.output} exists and is not a folder")
        return 2

    import torch

    from polydiff.checkpoint import CheckpointError, load_module

    from polydiff_audio.audio_files import AudioError, check_audio, read_audio, resample, write_audio
    from polydiff_audio.module import SGMSEModule, StoRMModule

    device = "cuda" if opts.device == "auto" and torch.cuda.is_available() else ("cpu" if opts.device == "auto" else opts.device)
    try:
        module = load_module(opts.ckpt, plugin="audio")
    except CheckpointError as exc:
        _fail(str(exc))
        return 1
    if not isinstance(module, SGMSEModule):
        _fail(f"{opts.ckpt}: a {type(module).__name__} checkpoint, not an audio enhancement model (SGMSE+ or StoRM)")
        return 1
    if opts.steps == 0 and not isinstance(module, StoRMModule):
        _fail(f"--steps 0 (the predictive network alone) needs a StoRM checkpoint; {opts.ckpt} is {type(module).__name__}")
        return 2
    try:
        module.to(device)
    except (RuntimeError, ValueError) as exc:
        _fail(f"--device {opts.device}: {exc}")
        return 2
    mode = type(module).__name__.removesuffix("Module")
    steps = module.sample_steps if opts.steps is None else opts.steps
    print(f"{opts.ckpt}: {mode}, {steps} steps ({module.network_evaluations(steps)} network evaluations per segment), "
          f"{module.rate} Hz, device {device}")

    files, failures = _collect_inputs(opts.inputs, opts.recursive)
    inputs = [f for f, _ in files]
    resolved_inputs = {f.resolve() for f in inputs}
    planned: dict[Path, Path] = {}
    done = 0
    audio_seconds = spent = 0.0
    for path, relative in files:
        target = opts.output / _output_name(relative)
        try:
            if _is_input(target, resolved_inputs, inputs):
                raise _Skip(f"the output {target} would replace an input file; choose another output folder")
            if target.resolve() in planned:
                raise _Skip(f"has the same output name {target} as {planned[target.resolve()]}")
            planned[target.resolve()] = path
            if target.exists() and not opts.overwrite:
                raise _Skip(f"the output {target} exists (pass --overwrite to replace it)")
            wav, rate = read_audio(path, rate=None)
            min_samples = math.ceil(module.transform.min_samples * rate / module.rate)
            check_audio(wav, rate, min_samples=min_samples, path=path,
                        clip_fraction=math.inf if opts.allow_clipped else 0.001)
            started = time.perf_counter()
            model_wav = resample(wav, rate, module.rate) if rate != module.rate else wav
            generator = torch.Generator(device=module.device).manual_seed(opts.seed)
            enhanced = module.enhance(model_wav, steps=opts.steps, generator=generator)
            enhanced = resample(enhanced, module.rate, rate) if rate != module.rate else enhanced
            enhanced = enhanced[..., : wav.shape[-1]]
            if enhanced.shape[-1] < wav.shape[-1]:  # resampling back can lose a sample at the end
                enhanced = torch.nn.functional.pad(enhanced, (0, wav.shape[-1] - enhanced.shape[-1]))
            seconds = wav.shape[-1] / rate
            elapsed = time.perf_counter() - started
            write_audio(target, enhanced, rate, overwrite=opts.overwrite)
        except (_Skip, AudioError, FileExistsError, ValueError, RuntimeError) as exc:
            reason = str(exc)
            if isinstance(exc, AudioError) and reason.startswith(str(path)):
                reason = reason[len(str(path)):].lstrip(": ")
            failures.append((str(path), reason))
            print(f"FAILED {path}: {reason}", file=sys.stderr)
            continue
        done += 1
        audio_seconds += seconds
        spent += elapsed
        channels = wav.shape[0]
        print(f"ok {path} -> {target} ({seconds:.2f} s, {channels} ch, {rate} Hz, {elapsed:.1f} s, RTF {elapsed / seconds:.2f})")
    rtf = f", real-time factor {spent / audio_seconds:.2f}" if audio_seconds else ""
    print(f"{done} enhanced, {len(failures)} failed{rtf}; outputs in {opts.output}")
    for name, reason in failures:
        print(f"  FAILED {name}: {reason}", file=sys.stderr)
    return 1 if failures or done == 0 else 0


# --- evaluate ------------------------------------------------------------------------------------
def evaluate(argv: Sequence[str]) -> int:
    """``polydiff audio evaluate --clean DIR --enhanced DIR [--noisy DIR]``: metric table and CSV."""
    parser = argparse.ArgumentParser(
        prog="polydiff audio evaluate",
        description=(
            "Score enhanced files against clean references with the same names: SI-SDR (dB), wideband "
            "PESQ and ESTOI per file, averaged; with --noisy also the noisy input's scores and the "
            "improvement. Prints a table and writes a per-file CSV. Exit status 1 when a pair failed."
        ),
    )
    parser.add_argument("--clean", required=True, type=Path, help="folder of clean reference files")
    parser.add_argument("--enhanced", required=True, type=Path, help="folder of enhanced files")
    parser.add_argument("--noisy", type=Path, default=None, help="folder of the noisy inputs (optional)")
    parser.add_argument("--csv", type=Path, default=None, help="per-file CSV (default: ENHANCED/metrics.csv)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    opts = parser.parse_args(list(argv))

    from polydiff_audio.metrics import evaluate_pairs, format_table, pairs_from_folders, summarise, write_csv

    for label, folder in (("clean", opts.clean), ("enhanced", opts.enhanced), ("noisy", opts.noisy)):
        if folder is not None and not folder.is_dir():
            _fail(f"--{label} {folder}: not a folder")
            return 2
    pairs = pairs_from_folders(opts.clean, opts.enhanced, opts.noisy)
    if not pairs:
        _fail(f"--clean {opts.clean}: no audio files to score")
        return 1
    csv_path = opts.csv if opts.csv is not None else opts.enhanced / "metrics.csv"
    if csv_path.exists() and not opts.overwrite:
        _fail(f"{csv_path} exists; pass --overwrite to replace it, or --csv another file")
        return 2
    rows = evaluate_pairs(pairs)
    summary = summarise(rows)
    print(format_table(summary))
    write_csv(rows, csv_path, overwrite=opts.overwrite)
    print(f"per-file scores in {csv_path}")
    return 1 if summary.failed else 0
