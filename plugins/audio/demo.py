"""The audio part of ``polydiff quickstart``: a small corpus, a brief training, enhanced files.

:func:`run_demo` goes through what a user does, with the same commands:

1. ``polydiff audio make-demo-data`` at the small size (denoising only, a few seconds);
2. ``polydiff audio fit -c storm`` on it for ``max_steps`` steps;
3. ``polydiff audio enhance`` on a few held-out test files, with the full StoRM model and with
   its predictive network alone (``--steps 0``), and the Wiener baseline on the same files;
4. the scores of ``polydiff audio evaluate`` (SI-SDR, PESQ, ESTOI) for the noisy input, the
   baseline, the model and its predictor,

and writes ``enhanced/*.wav``, ``spectrograms.png`` (noisy, enhanced and clean spectrograms of
one file) and ``metrics.csv`` next to ``metrics.json``. The scores of a model trained for a few
minutes on a CPU are low: the table shows where it stands against the noisy input and the
baseline; ``benchmarks/audio.py`` measures a longer training.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["run_demo", "plot_spectrograms"]


def plot_spectrograms(panels: list[tuple[str, Any]], rate: int, path: Path) -> Path:
    """Write log-magnitude spectrograms of waveforms, one panel per ``(title, wav)``, as a PNG.

    Shapes:
        each wav: (samples,) or (1, samples).
    """
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib import pyplot as plt
    from scipy.signal import stft

    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.2 * len(panels)), sharex=True, squeeze=False)
    for ax, (title, wav) in zip(axes[:, 0], panels):
        x = np.asarray(wav, dtype=np.float64).reshape(-1)
        freqs, times, spec = stft(x, fs=rate, nperseg=512, noverlap=384)
        db = 20 * np.log10(np.abs(spec) + 1e-6)
        image = ax.pcolormesh(times, freqs / 1000, db, vmin=db.max() - 80, vmax=db.max(), shading="auto", cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("kHz")
        fig.colorbar(image, ax=ax, label="dB", pad=0.01)
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_demo(out_dir: Path, *, progress: bool = True, max_steps: int = 150, files: int = 4, seed: int = 0) -> dict[str, Any]:
    """Build a small corpus, train StoRM briefly, enhance and score a few test files.

    Args:
        out_dir: everything is written here: ``corpus/``, ``train/`` (checkpoint),
            ``enhanced/``, ``predictor/`` and ``wiener/`` (WAVs), ``spectrograms.png``, ``metrics.csv``,
            ``metrics.json``.
        progress: show progress bars.
        max_steps: training steps.
        files: test files enhanced.
        seed: seed of the corpus, the training and the sampling.

    Returns:
        Mean SI-SDR (dB), PESQ and ESTOI of the noisy input, the Wiener baseline, the model and
        its predictor alone, plus the run's details.
    """
    import torch

    from polydiff.cli import fit_for_demo

    from polydiff_audio import commands
    from polydiff_audio.audio_files import read_audio, write_audio
    from polydiff_audio.baseline import enhance_wiener
    from polydiff_audio.corpus import build_demo_corpus
    from polydiff_audio.data import pair_files
    from polydiff_audio.metrics import evaluate_pairs, summarise, write_csv

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = out_dir / "corpus"
    if not (corpus / "manifest.json").exists():
        build_demo_corpus(corpus, size="small", tasks=("denoise",), real=False, seed=seed, overwrite=True)

    checkpoint = fit_for_demo("audio", "storm", out_dir / "train", max_steps=max_steps, seed=seed, progress=progress,
                              args=["--data.root", str(corpus)])

    pairs = pair_files(corpus / "denoise" / "test" / "clean", corpus / "denoise" / "test" / "noisy")[:files]
    enhanced_dir, predictor_dir, wiener_dir = out_dir / "enhanced", out_dir / "predictor", out_dir / "wiener"
    # StoRM, and its predictive network alone (--steps 0): after a short training the estimate
    # the diffusion stage starts from can be the better of the two (benchmarks/audio.py).
    for folder, extra in ((enhanced_dir, []), (predictor_dir, ["--steps", "0"])):
        todo = [str(noisy) for _, _, noisy in pairs if not (folder / noisy.name).exists()]
        if todo:
            status = commands.enhance(["--ckpt", str(checkpoint), *todo, "-o", str(folder), "--seed", str(seed), *extra])
            if status != 0:
                raise RuntimeError(f"enhancing failed (exit status {status})")
    for _, _, noisy in pairs:
        if not (wiener_dir / noisy.name).exists():
            wav, rate = read_audio(noisy, rate=None)
            write_audio(wiener_dir / noisy.name, enhance_wiener(wav, rate), rate)

    metrics: dict[str, Any] = {}
    rows_all = []
    for method, folder in (("noisy", None), ("wiener", wiener_dir), ("storm", enhanced_dir),
                           ("storm_predictor", predictor_dir)):
        quads = [(name, clean, noisy if folder is None else folder / noisy.name, None) for name, clean, noisy in pairs]
        rows = evaluate_pairs(quads)
        rows_all += [{"method": method, **row} for row in rows]
        summary = summarise(rows)
        for metric in ("si_sdr", "pesq", "estoi"):
            entry = summary.metrics.get(metric)
            metrics[f"{metric}_{method}"] = round(entry.mean, 4) if entry is not None else float("nan")
    write_csv(rows_all, out_dir / "metrics.csv", overwrite=True)

    name, clean, noisy = pairs[0]
    clean_wav, rate = read_audio(clean, rate=None)
    panels = [(f"noisy input ({name})", read_audio(noisy, rate=None)[0]),
              ("enhanced (StoRM)", read_audio(enhanced_dir / noisy.name, rate=None)[0]),
              ("clean reference", clean_wav)]
    plot_spectrograms(panels, rate, out_dir / "spectrograms.png")

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    metrics.update(
        training_steps=int(state["global_step"]),
        files=len(pairs),
        checkpoint=str(checkpoint.relative_to(out_dir)),
        seconds=round(time.perf_counter() - started, 1),
    )
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics
