"""The motion plugin's own commands: ``make-demo-data`` and ``generate``.

Each is ``fn(argv) -> exit status``, run as ``polydiff motion <command> ...``:

* ``make-demo-data OUT --clips 2000`` writes the procedural demo corpus (no downloads) in
  HumanML3D's layout in ``OUT`` and encodes its captions with the offline MiniLM model.
* ``generate --ckpt M.ckpt --text "a person walks forward" --seconds 6 -o walk.bvh`` generates
  motions from text, from a multi-track timeline (``--timeline T.json``, STMC), or edits a
  motion (``--edit in-between|keep-upper|keep-lower --source S``), optionally with the
  physics projection (``--physics``), and writes BVH, joint positions (npz) and a stick-figure
  render (GIF).

Inputs are only read; outputs that exist are refused unless ``--overwrite`` is given.
Exit status: 0 success, 1 a file could not be used or a request in a batch failed (named, with
the reason; the other requests still run), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["make_demo_data", "generate", "load_motion_model"]


def _fail(message: str) -> None:
    print(f"polydiff motion: error: {message}", file=sys.stderr)


# --- make-demo-data ------------------------------------------------------------------------------
def make_demo_data(argv: Sequence[str]) -> int:
    """``polydiff motion make-demo-data OUT --clips 2000``."""
    parser = argparse.ArgumentParser(
        prog="polydiff motion make-demo-data",
        description="Write the procedural demo corpus (actions on the SMPL skeleton composed into 1-3 action "
                    "sequences with template captions; no downloads) in HumanML3D's layout: new_joint_vecs/, "
                    "new_joints/, texts/, train/val/test.txt, Mean.npy, Std.npy. The test split holds out action "
                    "pairs and caption templates.",
    )
    parser.add_argument("out", type=Path, help="output folder (the HumanML3D root)")
    parser.add_argument("--clips", type=int, default=2000, help="motion clips to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-encoder", default="minilm", choices=("minilm", "hashing", "none"),
                        help="encode the captions now into the embedding cache (none: on first use)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing corpus in OUT")
    opts = parser.parse_args(list(argv))
    if opts.clips < 10:
        _fail("--clips must be at least 10 (the corpus is split into train, val and test)")
        return 2
    from polydiff_motion.procedural import generate_corpus, write_humanml3d

    started = time.perf_counter()
    clips = generate_corpus(opts.clips, seed=opts.seed)
    try:
        split = write_humanml3d(opts.out, clips, overwrite=opts.overwrite)
    except (FileExistsError, OSError) as exc:
        _fail(str(exc))
        return 1
    captions = sorted({c for part in (split.train, split.val, split.test) for clip in part for c in clip.captions})
    if opts.text_encoder != "none":
        from polydiff_motion.data import CACHE_NAME
        from polydiff_motion.text import EmbeddingCache, get_encoder

        EmbeddingCache(opts.out / CACHE_NAME).encode(get_encoder(opts.text_encoder), captions)
    frames = sum(len(c.positions) for c in clips)
    summary = {
        "root": str(opts.out),
        "clips": {"train": len(split.train), "val": len(split.val), "test": len(split.test)},
        "frames": int(frames),
        "hours": round(frames / 20.0 / 3600.0, 2),
        "captions": len(captions),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary, indent=2))
    return 0


# --- loading -------------------------------------------------------------------------------------
def load_motion_model(path: Path | str, device: str = "cpu") -> Any:
    """A trained text-to-motion model (diffusion or a baseline) with its data description, in eval mode.

    Raises:
        polydiff.checkpoint.CheckpointError: not a text-to-motion checkpoint of this plugin.
    """
    from polydiff.checkpoint import CheckpointError, load_checkpoint, load_module
    from polydiff_motion.module import MotionDiffusion

    try:
        model = load_module(path, plugin="motion", expect=MotionDiffusion, require=("motion",))
    except CheckpointError:
        try:
            lifting = isinstance(load_checkpoint(path, plugin="motion").get("lifting"), dict)
        except CheckpointError:
            lifting = False
        if lifting:
            raise CheckpointError(f"{path} is a 2D-to-3D pose-lifting checkpoint, not a text-to-motion model "
                                  "(use it with 'polydiff motion lift')") from None
        raise
    return model.to(device).eval()


# --- generate ------------------------------------------------------------------------------------
def _outputs(out: Path, count: int) -> list[Path]:
    """One output path per request: ``out`` itself for one, ``out/NNN.bvh`` for several."""
    if count == 1 and out.suffix.lower() in (".bvh", ".npz"):
        return [out]
    if count == 1 and out.suffix:
        raise ValueError(f"-o {out}: a motion is written as .bvh (with an .npz beside it) or .npz, or into a folder")
    if out.suffix:
        raise ValueError(f"-o {out}: several motions are written to a folder; give a folder name without a suffix")
    return [out / f"{i:03d}.bvh" for i in range(count)]


def _write_motion(path: Path, features: Any, fps: float, *, text: str, render: bool, overwrite: bool,
                  smpl_model: Path | None = None) -> list[Path]:
    """Write one motion: BVH (or npz), always an npz of features and positions beside a BVH, a GIF
    if asked, and an AMASS-layout SMPL pose file (``<name>.smpl.npz``) with a body model."""
    import numpy as np

    from polydiff_motion.export import positions_to_bvh, render_gif
    from polydiff_motion.features import features_to_positions

    features = np.asarray(features, dtype=np.float32)
    positions = features_to_positions(features)
    archive = path if path.suffix.lower() == ".npz" else path.with_suffix(".npz")
    smpl = path.with_suffix(".smpl.npz")
    targets = ([archive] + ([path] if path.suffix.lower() == ".bvh" else []) + ([path.with_suffix(".gif")] if render else [])
               + ([smpl] if smpl_model is not None else []))
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exist(s); pass --overwrite to replace")
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    if path.suffix.lower() == ".bvh":
        written.append(positions_to_bvh(positions, path, fps, overwrite=overwrite))
    tmp = archive.with_name(archive.name + ".part")
    with open(tmp, "wb") as fh:
        np.savez(fh, features=features, positions=positions.astype(np.float32), fps=np.float32(fps), text=np.str_(text))
    tmp.replace(archive)
    written.append(archive)
    if render:
        written.append(render_gif(positions, path.with_suffix(".gif"), fps, title=text, overwrite=overwrite))
    if smpl_model is not None:
        from polydiff_motion.export import positions_to_smpl

        written.append(positions_to_smpl(positions, smpl, smpl_model, fps, overwrite=overwrite))
    return written


def generate(argv: Sequence[str]) -> int:
    """``polydiff motion generate --ckpt M.ckpt --text "..." --seconds 6 -o walk.bvh``."""
    parser = argparse.ArgumentParser(
        prog="polydiff motion generate",
        description="Generate motions with a trained text-to-motion model: from text (--text, repeatable), from a "
                    "multi-track timeline (--timeline, STMC), or by editing a source motion (--edit with --source). "
                    "Writes BVH (metres, y up; opens in Blender) with an npz of the 263-d features and joint positions "
                    "beside it, and a stick-figure GIF with --render. Several requests go to a folder (-o DIR).",
    )
    parser.add_argument("--ckpt", type=Path, required=True, help="a text-to-motion checkpoint of this plugin")
    parser.add_argument("--text", action="append", default=[], help="a prompt (repeat for several motions)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[6.0],
                        help="duration of each motion (one value for all, or one per --text)")
    parser.add_argument("--timeline", type=Path, help="a timeline JSON file (intervals with text, start, end, body_parts)")
    parser.add_argument("--edit", choices=("in-between", "keep-upper", "keep-lower"),
                        help="edit --source: regenerate all but its first and last --keep seconds, or keep its upper "
                             "(lower) body and generate the rest from --text")
    parser.add_argument("--source", type=Path, help="the motion to edit (.bvh with SMPL joint names, HumanML3D .npy, or a generated .npz)")
    parser.add_argument("--keep", type=float, default=0.5, help="seconds kept at each end for --edit in-between")
    parser.add_argument("--physics", action="store_true",
                        help="project each denoising step's estimate against penetration, floating and foot skating")
    parser.add_argument("--samples", type=int, default=1, help="motions per request")
    parser.add_argument("--steps", type=int, help="sampling steps (default: the model's, 50)")
    parser.add_argument("--sampler", help="a core sampler (default: the model's, ddim)")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's, 2.5)")
    parser.add_argument("--margin", type=float, default=0.25, help="timeline crops' margin in seconds (blended)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--render", action="store_true", help="also write a stick-figure GIF of each motion")
    parser.add_argument("--smpl-model", type=Path,
                        help="a SMPL-family body-model file (or folder): also write NAME.smpl.npz, the motion as SMPL "
                             "pose parameters in AMASS's layout")
    parser.add_argument("-o", "--out", type=Path, required=True, help="a .bvh or .npz file, or a folder for several")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    opts = parser.parse_args(list(argv))
    if opts.samples < 1:
        _fail("--samples must be at least 1")
        return 2
    from polydiff.samplers import SAMPLERS

    if opts.sampler is not None and opts.sampler not in SAMPLERS:
        _fail(f"unknown --sampler {opts.sampler!r}; valid: {', '.join(SAMPLERS)}")
        return 2
    if opts.steps is not None and opts.steps < 1:
        _fail("--steps must be at least 1")
        return 2
    if opts.guidance is not None and not math.isfinite(opts.guidance):
        _fail("--guidance must be a finite number")
        return 2
    if opts.keep <= 0 or not math.isfinite(opts.keep) or opts.margin < 0:
        _fail("--keep must be positive and --margin non-negative (seconds)")
        return 2
    if opts.timeline is not None and (opts.text or opts.edit):
        _fail("--timeline takes its prompts from the file; do not combine it with --text or --edit")
        return 2
    if opts.timeline is None and not opts.text:
        _fail("give --text (one or more) or --timeline")
        return 2
    if opts.edit and opts.source is None:
        _fail("--edit needs --source")
        return 2
    if len(opts.seconds) not in (1, len(opts.text) or 1):
        _fail(f"--seconds takes one value or one per --text ({len(opts.text)}); got {len(opts.seconds)}")
        return 2
    import torch

    from polydiff.checkpoint import CheckpointError
    from polydiff_motion.text import get_encoder

    try:
        model = load_motion_model(opts.ckpt)
    except (CheckpointError, OSError, ValueError) as exc:
        _fail(str(exc))
        return 1
    info = model.require_info()
    fps = float(info["fps"])
    limit = int(getattr(model.denoiser, "max_frames", info["max_frames"]))
    encoder = get_encoder(info["text_encoder"])
    sample_args = dict(steps=opts.steps, sampler=opts.sampler, guidance=opts.guidance, physics=opts.physics)

    if opts.timeline is not None:
        from polydiff_motion.control import TimelineError, read_timeline

        try:
            outputs = _outputs(opts.out, opts.samples)
        except ValueError as exc:
            _fail(str(exc))
            return 2
        try:
            timeline = read_timeline(opts.timeline, max_seconds=limit / fps)
        except TimelineError as exc:
            _fail(str(exc))
            return 1
        texts = [i.text for i in timeline.intervals]
        embeddings = torch.from_numpy(encoder.encode(texts + [timeline.joined_text]))
        generator = torch.Generator().manual_seed(opts.seed)
        try:
            motions = model.generate_timeline(timeline, embeddings[:-1], embeddings[-1], samples=opts.samples,
                                              margin=opts.margin, generator=generator, **sample_args)
        except (ValueError, FloatingPointError) as exc:
            _fail(f"generation failed for {opts.timeline}: {exc}")
            return 1
        status = 0
        for path, motion in zip(outputs, motions):
            try:
                for written in _write_motion(path, motion.numpy(), fps, text=timeline.joined_text, render=opts.render,
                                             overwrite=opts.overwrite, smpl_model=opts.smpl_model):
                    print(written)
            except (FileExistsError, OSError, ValueError) as exc:
                _fail(str(exc))
                status = 1
        return status

    # Text requests (and edits): each checked on its own; the valid ones are generated together.
    seconds = opts.seconds * len(opts.text) if len(opts.seconds) == 1 else opts.seconds
    requests = [(text, sec) for text, sec in zip(opts.text, seconds) for _ in range(opts.samples)]
    try:
        outputs = _outputs(opts.out, len(requests))
    except ValueError as exc:
        _fail(str(exc))
        return 2
    source = None
    if opts.edit:
        from polydiff_motion.export import MotionSourceError, read_motion_source

        try:
            source = read_motion_source(opts.source, fps)
        except MotionSourceError as exc:
            _fail(str(exc))
            return 1
        if len(source) > limit:
            _fail(f"{opts.source}: {len(source)} frames; the model generates at most {limit} ({limit / fps:.1f} s)")
            return 1
    status, valid = 0, []
    for k, (text, sec) in enumerate(requests):
        frames = len(source) if source is not None else int(round(sec * fps))
        where = f"request {k // opts.samples + 1} ({text!r})"
        if not text.strip():
            _fail(f"{where}: the text is empty")
            status = 1
        elif not 1 <= frames <= limit:
            _fail(f"{where}: {sec} s is {frames} frames; the model generates 1 to {limit} frames ({limit / fps:.1f} s)")
            status = 1
        elif frames < 2:
            _fail(f"{where}: {sec} s is a single frame; a motion needs at least 2 (0.1 s)")
            status = 1
        else:
            valid.append((k, text.strip(), frames))
    if not valid:
        return status
    embeddings = torch.from_numpy(encoder.encode([text for _, text, _ in valid]))
    lengths = torch.tensor([frames for _, _, frames in valid])
    known = None
    if source is not None:
        from polydiff_motion.control import body_part_known, inbetween_known

        values = torch.from_numpy(source)[None].expand(len(valid), -1, -1).contiguous()
        if opts.edit == "in-between":
            keep = max(1, int(round(opts.keep * fps)))
            try:
                known = inbetween_known(values, lengths, keep, keep)
            except ValueError as exc:
                _fail(f"{opts.source}: {exc}")
                return 1
        else:
            known = body_part_known(values, lengths, ["upper_body" if opts.edit == "keep-upper" else "lower_body"])
    generator = torch.Generator().manual_seed(opts.seed)
    try:
        motions = model.generate(embeddings, lengths, generator=generator, known=known, **sample_args)
    except (ValueError, FloatingPointError) as exc:
        _fail(f"generation failed: {exc}")
        return 1
    for (k, text, frames), motion in zip(valid, motions):
        try:
            for written in _write_motion(outputs[k], motion[:frames].numpy(), fps, text=text, render=opts.render,
                                         overwrite=opts.overwrite, smpl_model=opts.smpl_model):
                print(written)
        except (FileExistsError, OSError, ValueError, ImportError) as exc:
            _fail(str(exc))
            status = 1
    return status
