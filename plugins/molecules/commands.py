"""The molecules plugin's own commands: ``make-demo-data``, ``generate``, ``evaluate``.

Each is ``fn(argv) -> exit status``, run as ``polydiff molecules <command> ...``:

* ``make-demo-data OUT`` writes ``train.csv`` and ``test.csv`` from the molecule sets RDKit
  ships (no downloads), with QED, logP, molecular weight, SA score and ring count.
* ``generate --ckpt M.ckpt -n 1000 -o mols.sdf`` samples molecules (``.sdf`` with 2D
  coordinates, ``.csv`` or ``.smi``), optionally conditioned (``--condition qed=0.8
  --condition logp=2.5``, with ``--guidance``), and draws a PNG grid beside the output.
  ``--baseline marginal`` samples the training marginals instead of the model.
* ``evaluate FILE... --reference train.csv`` prints validity, uniqueness, novelty,
  connectedness and the GuacaMol KL score of each file in one table, and with ``--condition``
  the MAE between the requested and achieved properties.

Input files are only read; an output that exists is refused unless ``--overwrite`` is given.
Exit status: 0 success, 1 a file could not be used (named, with the reason; other files of the
same call are still processed), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["make_demo_data", "generate", "evaluate", "load_model", "parse_conditions"]

BUILTIN_PROPERTIES = ("qed", "logp", "mw", "sa", "rings")


def _fail(message: str) -> None:
    print(f"polydiff molecules: error: {message}", file=sys.stderr)


def _warn(message: str) -> None:
    print(f"polydiff molecules: warning: {message}", file=sys.stderr)


def parse_conditions(items: Sequence[str]) -> dict[str, str | float]:
    """``["qed=0.8", "scaffold=benzene"]`` as ``{"qed": 0.8, "scaffold": "benzene"}``.

    Raises:
        ValueError: an item without ``=``, an empty name, or a name given twice.
    """
    out: dict[str, str | float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ValueError(f"--condition {item!r} must look like name=value (e.g. qed=0.8)")
        if name in out:
            raise ValueError(f"--condition {name} is given twice")
        try:
            out[name] = float(value)
        except ValueError:
            out[name] = value
    return out


# --- make-demo-data ------------------------------------------------------------------------------
def make_demo_data(argv: Sequence[str]) -> int:
    """``polydiff molecules make-demo-data OUT``."""
    parser = argparse.ArgumentParser(
        prog="polydiff molecules make-demo-data",
        description="Write train.csv and test.csv from the molecule sets RDKit ships (NCI, PAINS test set, ChEMBL), "
                    "filtered to organic heavy atoms, with QED, logP, MW, SA score and ring count.",
    )
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--max-atoms", type=int, default=30, help="largest number of heavy atoms kept")
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace existing train.csv/test.csv")
    opts = parser.parse_args(list(argv))
    if opts.max_atoms < 2 or not 0 < opts.test_fraction < 1:
        _fail("--max-atoms must be >= 2 and --test-fraction lie in (0, 1)")
        return 2
    from polydiff_molecules.demo_data import build_demo_data

    try:
        summary = build_demo_data(opts.out, max_atoms=opts.max_atoms, test_fraction=opts.test_fraction,
                                  seed=opts.seed, overwrite=opts.overwrite)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
        return 1
    print(json.dumps(summary, indent=2, default=str))
    print(f"demo data in {opts.out}")
    return 0


# --- loading -------------------------------------------------------------------------------------
def load_model(path: Path, device: str = "cpu") -> Any:
    """A trained molecule model with its data description, in eval mode.

    Raises:
        polydiff.checkpoint.CheckpointError: not a checkpoint of this plugin, or one without its
            data description.
    """
    from polydiff.checkpoint import load_module
    from polydiff_molecules.module import GraphDiffusion

    model = load_module(path, plugin="molecules", expect=GraphDiffusion, require=("molecules",))
    return model.to(device).eval()


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return name


# --- generate ------------------------------------------------------------------------------------
def generate(argv: Sequence[str]) -> int:
    """``polydiff molecules generate --ckpt M.ckpt -n 1000 -o mols.sdf``."""
    parser = argparse.ArgumentParser(
        prog="polydiff molecules generate",
        description="Sample molecules from a trained model and write them as .sdf (2D coordinates), .csv or .smi, "
                    "with a PNG grid of the first ones. Invalid graphs are written too (flagged), so that "
                    "`evaluate` counts them.",
    )
    parser.add_argument("--ckpt", type=Path, required=True, help="a trained molecule model")
    parser.add_argument("-n", "--count", type=int, default=1000, help="molecules to generate")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output .sdf, .csv or .smi")
    parser.add_argument("--condition", action="append", default=[], metavar="NAME=VALUE",
                        help="property to condition on (repeatable), e.g. qed=0.8; others are left free")
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (1 = none)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--num-atoms", type=int, default=None, help="heavy atoms per molecule (default: drawn from the training data)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--baseline", choices=("marginal",), default=None,
                        help="sample the training marginals (atoms and bonds independently) instead of the model")
    parser.add_argument("--png", type=Path, default=None, help="PNG grid (default: the output's name + .png)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    opts = parser.parse_args(list(argv))
    if opts.count < 1 or opts.batch_size < 1 or (opts.steps is not None and opts.steps < 1):
        _fail("-n, --batch-size and --steps must be positive")
        return 2
    if opts.num_atoms is not None and opts.num_atoms < 1:
        _fail("--num-atoms must be positive")
        return 2
    if opts.output.suffix.lower() not in (".sdf", ".csv", ".smi", ".smiles"):
        _fail(f"{opts.output}: the output must end in .sdf, .csv or .smi")
        return 2
    png = opts.png if opts.png is not None else opts.output.with_name(opts.output.name + ".png")
    try:
        conditions = parse_conditions(opts.condition)
        device = _device(opts.device)
    except ValueError as exc:
        _fail(str(exc))
        return 2
    if opts.baseline and (conditions or opts.guidance is not None):
        _fail("--baseline marginal ignores conditions and guidance; leave them out")
        return 2
    for out in (opts.output, png):
        if out.resolve() == opts.ckpt.resolve():
            _fail(f"{out} is the checkpoint; choose another output")
            return 1
        if out.exists() and not opts.overwrite:
            _fail(f"{out} exists; pass --overwrite to replace it")
            return 1

    import torch

    from polydiff.checkpoint import CheckpointError
    from polydiff_molecules.chem import sanitize
    from polydiff_molecules.io import draw_grid, write_molecules
    from polydiff_molecules.properties import compute_properties

    try:
        model = load_model(opts.ckpt, device)
        encoded, notes = model.encode_conditions(conditions)
    except CheckpointError as exc:
        _fail(str(exc))
        return 1
    except (KeyError, ValueError) as exc:
        _fail(exc.args[0] if exc.args else str(exc))
        return 2
    for note in notes:
        _warn(note)
    generator = torch.Generator(device=device).manual_seed(opts.seed)
    start = time.perf_counter()
    if opts.baseline:
        from polydiff_molecules.baselines import sample_marginal_graphs

        mols = sample_marginal_graphs(model.data_info, opts.count, generator=torch.Generator().manual_seed(opts.seed),
                                      num_atoms=opts.num_atoms)
    else:
        def progress(done: int, total: int) -> None:
            print(f"  {done}/{total} molecules", file=sys.stderr)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the out-of-range notes were printed above
            mols = model.generate(opts.count, num_atoms=opts.num_atoms, conditions=encoded, guidance=opts.guidance,
                                  steps=opts.steps, batch_size=opts.batch_size, generator=generator,
                                  progress=progress if opts.count > opts.batch_size else None)
    seconds = time.perf_counter() - start
    clean = [sanitize(m)[0] for m in mols]
    valid = sum(m is not None for m in clean)
    columns: dict[str, list[Any]] = {}
    measurable = [name for name in conditions if name in BUILTIN_PROPERTIES]
    if measurable:
        achieved = compute_properties(clean, measurable)
        for name in measurable:
            columns[f"requested_{name}"] = [conditions[name]] * len(mols)
            columns[name] = [None if math.isnan(v) else round(float(v), 4) for v in achieved[name]]
    try:
        write_molecules(opts.output, mols, columns=columns or None, overwrite=opts.overwrite)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
        return 1
    if valid:
        try:
            draw_grid(png, clean, legends=None)
        except (ValueError, OSError) as exc:
            _warn(f"{png}: the grid could not be drawn ({exc})")
    else:
        _warn(f"no valid molecule to draw; {png} not written")
    source = "marginal baseline" if opts.baseline else f"{opts.steps or model.sample_steps} steps"
    print(f"{opts.output}: {len(mols)} molecules ({source}, {seconds:.1f} s, {len(mols) / seconds:.1f} molecules/s), "
          f"{valid} valid ({valid / len(mols):.1%})" + (f"; grid in {png}" if valid else ""))
    if measurable:
        from polydiff_molecules.metrics import condition_mae

        mae = condition_mae(achieved, {k: float(conditions[k]) for k in measurable})
        print("MAE requested vs achieved (valid molecules): " + ", ".join(f"{k} {float(v):.3f}" for k, v in mae.items()))
    return 0


# --- evaluate ------------------------------------------------------------------------------------
def evaluate(argv: Sequence[str]) -> int:
    """``polydiff molecules evaluate FILE... --reference train.csv``."""
    parser = argparse.ArgumentParser(
        prog="polydiff molecules evaluate",
        description="MOSES/GuacaMol metrics of generated molecule files, one row per file: validity (RDKit "
                    "sanitisation of the whole molecule), uniqueness (of the valid), novelty (of the unique valid, "
                    "against the reference), connected (of all generated), the GuacaMol KL score against the "
                    "reference and, with --condition, the MAE between requested and achieved properties.",
    )
    parser.add_argument("files", type=Path, nargs="+", help="generated .sdf, .csv or .smi files")
    parser.add_argument("--reference", type=Path, default=None, help="training molecules (.csv/.smi/.sdf) for novelty and KL")
    parser.add_argument("--condition", action="append", default=[], metavar="NAME=VALUE",
                        help="requested property values to score the files against (qed, logp, mw, sa, rings)")
    parser.add_argument("--max-kl-molecules", type=int, default=10000, help="cap on each set in the KL benchmark")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument("--overwrite", action="store_true")
    opts = parser.parse_args(list(argv))
    try:
        conditions = parse_conditions(opts.condition)
    except ValueError as exc:
        _fail(str(exc))
        return 2
    unknown = [k for k in conditions if k not in BUILTIN_PROPERTIES]
    if unknown:
        _fail(f"--condition {unknown}: evaluate can measure only {', '.join(BUILTIN_PROPERTIES)}")
        return 2
    if opts.json is not None and opts.json.exists() and not opts.overwrite:
        _fail(f"{opts.json} exists; pass --overwrite to replace it")
        return 1

    from polydiff_molecules.chem import sanitize
    from polydiff_molecules.data import read_molecules
    from polydiff_molecules.io import read_generated
    from polydiff_molecules.metrics import GenerationMetrics, condition_mae
    from polydiff_molecules.properties import compute_properties

    reference = None
    if opts.reference is not None:
        try:
            table = read_molecules(opts.reference)
        except (ValueError, OSError) as exc:
            _fail(str(exc))
            return 1
        print(f"reference {opts.reference.name}: {table.summary()}", file=sys.stderr)
        reference = [r.smiles for r in table.records]
    metrics = GenerationMetrics(reference, max_kl_molecules=opts.max_kl_molecules)
    rows, results, status = [], {}, 0
    for path in opts.files:
        try:
            generated = read_generated(path)
        except (ValueError, OSError) as exc:
            _fail(str(exc))
            status = 1
            continue
        if not generated:
            _fail(f"{path}: no molecules")
            status = 1
            continue
        result = metrics(generated)
        if conditions:
            clean = [None if m is None else sanitize(m)[0] for m in generated]
            achieved = compute_properties(clean, list(conditions))
            for name, value in condition_mae(achieved, {k: float(v) for k, v in conditions.items()}).items():
                result[f"mae_{name}"] = value
        results[str(path)] = result
        rows.append((path.name, result))
    if rows:
        print(_table(rows, list(conditions)))
    if opts.json is not None and results:
        opts.json.write_text(json.dumps(_plain(results), indent=2))
    return status


def _table(rows: list[tuple[str, dict[str, Any]]], conditions: list[str]) -> str:
    columns = ["n", "validity", "uniqueness", "novelty", "connected", "kl_score"] + [f"mae_{c}" for c in conditions]

    def cell(result: dict[str, Any], column: str) -> str:
        if column == "n":
            return str(result["n_generated"])
        value = result.get(column)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        return f"{float(value):.3f}"

    body = [[name] + [cell(r, c) for c in columns] for name, r in rows]
    header = ["file"] + columns
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)) for line in [header] + body]
    notes = ("validity = sanitisable / generated; uniqueness = unique / valid; novelty = not in reference / unique; "
             "connected = one fragment / generated; kl_score = GuacaMol KL benchmark (mean exp(-KL) over descriptors)")
    return "\n".join(lines + [notes])


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return None if math.isnan(value) else float(value)
    if isinstance(value, (int, str, bool)) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
