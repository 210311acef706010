"""Speech enhancement benchmark: noisy input, classical baselines, SGMSE+ and StoRM on the demo corpus.

Run as ``python benchmarks/audio.py [--minutes 45] [--work benchmarks/scratch/audio]``.

Stages (each skipped when its output already exists in ``--work``, so an interrupted run resumes):

1. **Corpus**: ``build_demo_corpus`` with ``--utterances-per-speaker`` sentences per speaker
   (denoising task only), plus the real-recordings set.
2. **Training**: ``polydiff audio fit -c sgmse`` and ``polydiff audio fit -c storm`` — the bundled
   configs, unchanged apart from the data root and the budget — run side by side, one CPU thread
   each, for ``--minutes`` of wall time each (Lightning's ``max_time``). The newest checkpoint of
   each run is used; its step count is recorded.
3. **Evaluation**: every method enhances ``--test-files`` files of the held-out test split
   (speakers never seen in training; spread evenly over its sorted names, so every test speaker
   appears) and the first ``--real-files`` files of the real-recordings set, seeded. SGMSE+
   and StoRM run in parallel worker processes, one thread each, so their real-time factors are
   comparable. SI-SDR, wideband PESQ and ESTOI are computed per file against the clean
   reference and averaged. Network evaluations are counted by hooks on the networks (calls times
   segments in the call), per second of audio. Beside them, as a diagnostic, StoRM's predictive
   network alone (``storm_predictor``: the estimate its diffusion stage starts from).

Targets (on the held-out demo test set): both diffusion modes beat the best classical baseline
on SI-SDR, PESQ and ESTOI; both improve SI-SDR by at least 5 dB over the noisy input; StoRM's
PESQ is within 0.1 of SGMSE+'s (or above it) with at most a third of SGMSE+'s network
evaluations per second of audio.

Writes ``benchmarks/results/audio.json`` (``--out``) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REUSED: list[str] = []  # stages an earlier run of this script had finished, recorded in the report
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import machine_info  # noqa: E402

MODES = ("sgmse", "storm")
BASELINES = ("wiener", "spectral_subtraction")
# A diagnostic beside the two modes: the StoRM checkpoint's predictive network alone (one pass),
# i.e. what the diffusion stage starts from.
PREDICTOR = "storm_predictor"
SETS = ("test", "real")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- stage 1: corpus ---------------------------------------------------------------------------
def build_corpus(work: Path, per_speaker: int) -> Path:
    from polydiff_audio.corpus import build_demo_corpus

    corpus = work / "corpus"
    if (corpus / "manifest.json").exists():
        log(f"corpus: reusing {corpus}")
        REUSED.append("corpus")
        return corpus
    log("corpus: building")
    summary = build_demo_corpus(corpus, utterances_per_speaker=per_speaker, tasks=("denoise",), seed=0)
    log(f"corpus: {summary['files']} in {summary['seconds']} s")
    return corpus


# --- stage 2: training -------------------------------------------------------------------------
def _newest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(run_dir.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def fit_command(mode: str, corpus: Path, run_dir: Path, minutes: float) -> list[str]:
    hours, rest = divmod(int(round(minutes * 60)), 3600)
    budget = f"00:{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return [
        sys.executable, "-m", "polydiff", "audio", "fit", "-c", mode,
        "--data.root", str(corpus),
        "--trainer.max_time", budget,
        "--trainer.max_steps", "-1",
        "--trainer.val_check_interval", "200",
        "--trainer.log_every_n_steps", "50",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(run_dir),
    ]


def _validation_curve(run_dir: Path) -> list[dict]:
    """Validation loss and SI-SDR (a few sampling steps, validation set) logged during training."""
    import csv

    curve = []
    for path in sorted(run_dir.rglob("metrics.csv")):
        for row in csv.DictReader(open(path)):
            if row.get("val/loss"):
                curve.append({"step": int(row["step"]) + 1, "val_loss": float(row["val/loss"]),
                              "val_si_sdr": float(row["val/si_sdr"]) if row.get("val/si_sdr") else None,
                              "val_si_sdr_improvement": float(row["val/si_sdr_improvement"])
                              if row.get("val/si_sdr_improvement") else None})
    return curve


def train(work: Path, corpus: Path, minutes: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs = {}
    for mode in MODES:
        run_dir = work / "runs" / mode
        if _newest_checkpoint(run_dir) is not None and (run_dir / "done").exists():
            log(f"train {mode}: reusing {run_dir}")
            REUSED.append(f"training {mode}")
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        command = fit_command(mode, corpus, run_dir, minutes)
        (run_dir / "command.txt").write_text(shlex.join(command) + "\n")
        log(f"train {mode}: {minutes} min, log in {run_dir / 'fit.log'}")
        procs[mode] = (subprocess.Popen(command, stdout=open(run_dir / "fit.log", "w"), stderr=subprocess.STDOUT,
                                        env=env, cwd=ROOT), time.perf_counter())
    for mode, (proc, started) in procs.items():
        code = proc.wait()
        run_dir = work / "runs" / mode
        if code != 0:
            raise SystemExit(f"training {mode} failed with exit status {code}; see {run_dir / 'fit.log'}")
        (run_dir / "done").write_text(f"{time.perf_counter() - started:.1f}\n")
    info = {}
    for mode in MODES:
        import torch

        run_dir = work / "runs" / mode
        ckpt = _newest_checkpoint(run_dir)
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        info[mode] = {
            "validation": _validation_curve(run_dir),
            "command": (run_dir / "command.txt").read_text().strip().replace(sys.executable, "python")
            .replace(str(ROOT) + os.sep, ""),
            "checkpoint": str(ckpt.relative_to(work)),
            "steps": int(state["global_step"]),
            "epochs": int(state["epoch"]),
            "wall_seconds": float((run_dir / "done").read_text()),
        }
    return info


# --- stage 3: evaluation -----------------------------------------------------------------------
def eval_files(corpus: Path, real_files: int, test_files: int) -> dict[str, list[tuple[str, Path, Path]]]:
    """The evaluation pairs: ``test_files`` of the test split spread evenly over its (sorted) names,
    so every test speaker is represented, and the first ``real_files`` real recordings."""
    from polydiff_audio.data import pair_files

    test = pair_files(corpus / "denoise" / "test" / "clean", corpus / "denoise" / "test" / "noisy")
    if len(test) > test_files:
        test = [test[(i * len(test)) // test_files] for i in range(test_files)]
    files = {"test": test}
    if (corpus / "real" / "clean").is_dir():
        files["real"] = pair_files(corpus / "real" / "clean", corpus / "real" / "noisy")[:real_files]
    return files


def _count_calls(module) -> dict:
    """Hooks counting network calls times batch items (segments) on the denoiser and predictor."""
    counter = {"segment_evaluations": 0}

    def hook(net, args, output):
        counter["segment_evaluations"] += int(args[0].shape[0])

    nets = [module.sampling_denoiser()]
    if hasattr(module, "sampling_predictor"):
        nets.append(module.sampling_predictor())
    for net in nets:
        net.register_forward_hook(hook)
    return counter


def enhance_worker(method: str, work: Path, corpus: Path, real_files: int, test_files: int, seed: int) -> dict:
    """Enhance every evaluation file with one method; write WAVs and a timing record."""
    import torch

    from polydiff_audio.audio_files import read_audio, write_audio

    torch.set_num_threads(1)
    out_root = work / "enhanced" / method
    record: dict = {"method": method, "sets": {}}
    module = None
    if method in (*MODES, PREDICTOR):
        from polydiff.checkpoint import load_module

        source = "storm" if method == PREDICTOR else method
        module = load_module(_newest_checkpoint(work / "runs" / source), plugin="audio")
        counter = _count_calls(module)
        record["network_evaluations_per_segment"] = module.network_evaluations()
        record["sample_steps"] = module.sample_steps
        if method == PREDICTOR:
            record["network_evaluations_per_segment"], record["sample_steps"] = module.network_evaluations(0), 0
    else:
        from polydiff_audio import baseline

        fn = {"wiener": baseline.enhance_wiener, "spectral_subtraction": baseline.enhance_spectral_subtraction}[method]
    for name, pairs in eval_files(corpus, real_files, test_files).items():
        seconds = elapsed = 0.0
        evaluations = 0
        for stem, _, noisy_path in pairs:
            wav, rate = read_audio(noisy_path, rate=None)
            seconds += wav.shape[-1] / rate
            started = time.perf_counter()
            if module is not None:
                before = counter["segment_evaluations"]
                generator = torch.Generator().manual_seed(seed)
                enhanced = module.enhance(wav, steps=0 if method == PREDICTOR else None, generator=generator)
                evaluations += counter["segment_evaluations"] - before
            else:
                enhanced = fn(wav, rate)
            elapsed += time.perf_counter() - started
            write_audio(out_root / name / f"{stem}.wav", enhanced, rate)
        record["sets"][name] = {
            "files": len(pairs),
            "audio_seconds": round(seconds, 2),
            "enhance_seconds": round(elapsed, 2),
            "real_time_factor": round(elapsed / seconds, 4) if seconds else None,
            "network_evaluations_per_audio_second": round(evaluations / seconds, 2) if module is not None else 0,
        }
        log(f"{method} {name}: {len(pairs)} files, RTF {record['sets'][name]['real_time_factor']}")
    (out_root / "timing.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def evaluate(work: Path, corpus: Path, real_files: int, test_files: int, seed: int) -> dict:
    from polydiff_audio.metrics import evaluate_pairs, summarise

    # The two diffusion modes in parallel worker processes, one thread each; baselines after.
    procs = []
    for method in MODES:
        if (work / "enhanced" / method / "timing.json").exists():
            log(f"enhance {method}: reusing")
            REUSED.append(f"enhancement {method}")
            continue
        command = [sys.executable, __file__, "--work", str(work), "--real-files", str(real_files),
                   "--test-files", str(test_files),
                   "--seed", str(seed), "--worker", method]
        log(f"enhance {method}: started")
        procs.append((method, subprocess.Popen(command, env=dict(os.environ, OMP_NUM_THREADS="1"))))
    for method in (*BASELINES, PREDICTOR):
        if not (work / "enhanced" / method / "timing.json").exists():
            enhance_worker(method, work, corpus, real_files, test_files, seed)
        else:
            REUSED.append(f"enhancement {method}")
    for method, proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"enhancing with {method} failed")

    files = eval_files(corpus, real_files, test_files)
    results: dict = {}
    for name, pairs in files.items():
        table = {}
        for method in ("noisy", *BASELINES, *MODES, PREDICTOR):
            if method == "noisy":
                quads = [(stem, clean, noisy, None) for stem, clean, noisy in pairs]
                timing = {"real_time_factor": 0.0, "network_evaluations_per_audio_second": 0}
            else:
                folder = work / "enhanced" / method / name
                quads = [(stem, clean, folder / f"{stem}.wav", None) for stem, clean, _ in pairs]
                timing = json.loads((work / "enhanced" / method / "timing.json").read_text())["sets"][name]
            rows = evaluate_pairs(quads)
            summary = summarise(rows)
            table[method] = {
                "si_sdr": summary.metrics["si_sdr"].mean,
                "pesq": summary.metrics["pesq"].mean,
                "estoi": summary.metrics["estoi"].mean,
                "files_scored": summary.scored,
                **{k: v for k, v in timing.items() if k in ("real_time_factor", "network_evaluations_per_audio_second",
                                                            "audio_seconds")},
            }
            log(f"{name} {method}: " + ", ".join(f"{k} {table[method][k]:.3f}" for k in ("si_sdr", "pesq", "estoi")))
        results[name] = table
    for method in (*MODES, PREDICTOR):
        timing = json.loads((work / "enhanced" / method / "timing.json").read_text())
        results.setdefault("network_evaluations_per_segment", {})[method] = timing["network_evaluations_per_segment"]
        results.setdefault("sample_steps", {})[method] = timing["sample_steps"]
    return results


def build_targets(results: dict) -> list[dict]:
    test = results["test"]
    targets = []
    for mode in MODES:
        for metric in ("si_sdr", "pesq", "estoi"):
            best = max(test[b][metric] for b in BASELINES)
            which = max(BASELINES, key=lambda b: test[b][metric])
            targets.append(dict(name=f"test: {mode} {metric} > best classical baseline ({which})",
                                value=test[mode][metric], threshold=best, met=bool(test[mode][metric] > best)))
        gain = test[mode]["si_sdr"] - test["noisy"]["si_sdr"]
        targets.append(dict(name=f"test: {mode} SI-SDR improvement over noisy >= 5 dB", value=gain, threshold=5.0,
                            met=bool(gain >= 5.0)))
    gap = test["storm"]["pesq"] - test["sgmse"]["pesq"]
    targets.append(dict(name="test: StoRM PESQ - SGMSE+ PESQ >= -0.1", value=gap, threshold=-0.1, met=bool(gap >= -0.1)))
    ratio = test["storm"]["network_evaluations_per_audio_second"] / test["sgmse"]["network_evaluations_per_audio_second"]
    targets.append(dict(name="test: StoRM / SGMSE+ network evaluations per audio second <= 1/3", value=ratio,
                        threshold=1 / 3, met=bool(ratio <= 1 / 3 + 1e-12)))
    return targets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "scratch" / "audio")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "audio.json")
    parser.add_argument("--minutes", type=float, default=45.0, help="training wall time per mode")
    parser.add_argument("--utterances-per-speaker", type=int, default=24)
    parser.add_argument("--real-files", type=int, default=8)
    parser.add_argument("--test-files", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage", choices=("train", "all"), default="all")
    parser.add_argument("--worker", choices=(*MODES, *BASELINES, PREDICTOR), help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.work.resolve()
    corpus = work / "corpus"
    if args.worker:
        enhance_worker(args.worker, work, corpus, args.real_files, args.test_files, args.seed)
        return 0

    started = time.perf_counter()
    machine = machine_info()
    work.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(work, args.utterances_per_speaker)
    training = train(work, corpus, args.minutes)
    if args.stage == "train":
        log(json.dumps(training, indent=1))
        return 0
    results = evaluate(work, corpus, args.real_files, args.test_files, args.seed)
    results["training"] = training
    manifest = json.loads((corpus / "manifest.json").read_text())
    report = {
        "command": shlex.join([Path(sys.executable).name, "benchmarks/audio.py", *sys.argv[1:]]),
        "machine": machine,
        "budget": {
            "training_minutes_per_mode": args.minutes,
            "training": "both modes side by side, one CPU thread each, bundled configs sgmse/storm",
            "corpus": {"utterances_per_speaker": args.utterances_per_speaker,
                       "files": manifest["summary"]["files"], "clean_hours": manifest["summary"]["clean_hours"]},
            "evaluation": f"{args.test_files} demo test files spread over all test speakers; the first {args.real_files} real-recording files; seed {args.seed}; "
                          "one CPU thread per method",
        },
        "results": results,
        "targets": build_targets(results),
        "seconds": round(time.perf_counter() - started, 1),
        "reused_from_an_earlier_run": REUSED,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
