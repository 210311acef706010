"""Molecules benchmark: DiGress / Graph DiT trained on a MOSES subset at a CPU budget.

::

    pip install --no-deps molsets      # only for its data files (MOSES splits); never imported
    python benchmarks/molecules.py [--train-size 50000] [--steps 9000] [--work benchmarks/scratch/molecules]

Data: a seeded random subset of the MOSES training split (``--train-size`` SMILES of 1,584,663;
atoms C N O S F Cl Br, no charges, at most 27 heavy atoms), read from the CSV files the
``molsets`` wheel carries. The KL reference is a seeded subset of the MOSES test split (never
trained on); novelty is measured against the training subset the model saw.

Model: ``-c graph-dit`` (graph transformer, 1.7 M parameters) conditioned on QED and Crippen
logP, trained for ``--steps`` optimiser steps of 32 molecules with the machine's threads; the
noise model is ``--noise`` (``marginal``: DiGress's; ``joint``: Graph DiT's graph-dependent).

Generation and metrics:

- unconditional: ``--samples`` molecules with the conditions dropped (the same network), at
  ``--sample-steps`` steps; validity (RDKit sanitisation of the whole molecule), uniqueness
  (of the valid), novelty (of the unique valid), connected (of all generated), GuacaMol KL score
  (``--kl-molecules`` each side), molecules per second;
- baseline: atoms and bonds drawn independently from the training marginals, same count;
- conditional: one molecule per (QED, logP) pair of ``--conditional`` test molecules, at
  guidance 1 and ``--guidance``; MAE between requested and achieved QED and logP over the valid
  molecules, beside the unconditional samples' MAE against the same targets.

Training is reused from ``--work`` when it finished. Writes ``benchmarks/results/molecules.json``.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import machine_info, write_report  # noqa: E402

DIGRESS_MOSES_VALIDITY = 0.857  # Vignac et al. 2023, Table 4 (full GPU training)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _portable(text: str) -> str:
    return text.replace(f"{ROOT}/", "")


def moses_file(name: str) -> Path:
    spec = importlib.util.find_spec("moses")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the MOSES data files are missing: pip install --no-deps molsets")
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset" / "data" / name
    if not path.exists():
        raise SystemExit(f"{path.name} is not in the installed molsets package")
    return path


def read_moses(name: str) -> list[str]:
    with gzip.open(moses_file(name), "rt") as fh:
        header = fh.readline().strip().split(",")
        column = header.index("SMILES")
        return [line.rstrip("\n").split(",")[column] for line in fh if line.strip()]


def build_data(work: Path, train_size: int, seed: int) -> dict:
    data = work / "data"
    train_csv = data / "train.csv"
    if not train_csv.exists():
        data.mkdir(parents=True, exist_ok=True)
        smiles = read_moses("train.csv.gz")
        chosen = random.Random(seed).sample(smiles, train_size)
        train_csv.write_text("smiles\n" + "\n".join(chosen) + "\n")
        log(f"MOSES train subset: {train_size} of {len(smiles)} SMILES")
    return {"train": train_csv, "moses_train_size": 1_584_663, "train_size": train_size}


def train(work: Path, data: Path, steps: int, noise: str) -> dict:
    run = work / "runs" / f"graph-dit-{noise}"
    done = run / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    run.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "polydiff", "molecules", "fit", "-c", "graph-dit", "--data.path", str(data),
               "--data.init_args.conditions", "[qed, logp]", "--data.init_args.val_fraction", "0.01",
               "--model.init_args.noise", noise, "--trainer.max_steps", str(steps),
               "--trainer.val_check_interval", str(max(steps // 3, 1)), "--trainer.limit_val_batches", "4",
               "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(run)]
    log(f"train: {_portable(' '.join(['polydiff', *command[3:]]))}")
    start = time.perf_counter()
    with open(run / "train.log", "w") as out:
        rc = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    found = sorted(run.glob("**/checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime)
    if rc != 0 or not found:
        raise RuntimeError(f"training failed (exit {rc}); see {run / 'train.log'}")
    record = {"steps": steps, "batch_size": 32, "noise": noise, "seconds": round(seconds, 1),
              "checkpoint": str(found[-1].relative_to(work)),
              "command": _portable(" ".join(["polydiff", *command[3:]]))}
    done.write_text(json.dumps(record, indent=1) + "\n")
    log(f"trained in {seconds / 60:.1f} min")
    return record


def evaluate(work: Path, trained: dict, args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from polydiff_molecules.baselines import sample_marginal_graphs
    from polydiff_molecules.chem import sanitize
    from polydiff_molecules.commands import load_model
    from polydiff_molecules.metrics import GenerationMetrics, condition_mae
    from polydiff_molecules.properties import compute_properties

    model = load_model(work / trained["checkpoint"])
    train_smiles = (work / "data" / "train.csv").read_text().split()[1:]
    test = read_moses("test.csv.gz")
    rng = random.Random(args.seed + 1)
    kl_reference = rng.sample(test, min(args.kl_molecules, len(test)))
    log("reference sets")
    metrics = GenerationMetrics(train_smiles, kl_reference=kl_reference, max_kl_molecules=args.kl_molecules)

    def scored(mols: list, seconds: float | None) -> dict:
        result = {k: (float(v) if isinstance(v, float) else v) for k, v in metrics(mols).items()
                  if k != "kl_divergences"}
        if seconds is not None:
            result["seconds"] = round(seconds, 1)
            result["molecules_per_second"] = round(len(mols) / seconds, 2)
        return result

    results: dict = {}
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    uncond = model.generate(args.samples, steps=args.sample_steps, batch_size=args.batch_size, generator=generator)
    seconds = time.perf_counter() - start
    results["unconditional"] = scored(uncond, seconds)
    results["unconditional"]["sample_steps"] = args.sample_steps
    log(f"unconditional: {results['unconditional']}")
    baseline = sample_marginal_graphs(model.data_info, args.samples, generator=torch.Generator().manual_seed(args.seed))
    results["marginal_baseline"] = scored(baseline, None)
    log(f"baseline: {results['marginal_baseline']}")

    # conditional: targets are (QED, logP) pairs of held-out test molecules
    targets_smiles = random.Random(args.seed + 2).sample(test, args.conditional)
    target_mols = [sanitize(m)[0] for m in _parse(targets_smiles)]
    targets = compute_properties(target_mols, ["qed", "logp"])
    keep = np.isfinite(targets["qed"]) & np.isfinite(targets["logp"])
    targets = {k: v[keep] for k, v in targets.items()}
    count = int(keep.sum())
    encoded = torch.stack([model.encode_conditions({"qed": float(q), "logp": float(p)})[0]
                           for q, p in zip(targets["qed"], targets["logp"])])
    uncond_props = compute_properties([sanitize(m)[0] for m in uncond[:count]], ["qed", "logp"])
    results["conditional"] = {"targets": count, "unconditional_mae": {k: float(v) for k, v in condition_mae(
        uncond_props, targets).items()}}
    for guidance in sorted({1.0, args.guidance}):
        mols: list = []
        start = time.perf_counter()
        for lo in range(0, count, args.batch_size):
            part = encoded[lo:lo + args.batch_size]
            graphs = model.sample_graphs(len(part), conditions=part, guidance=guidance, steps=args.sample_steps,
                                         generator=generator)
            mols.extend(model.to_molecules(*graphs))
        seconds = time.perf_counter() - start
        props = compute_properties([sanitize(m)[0] for m in mols], ["qed", "logp"])
        entry = scored(mols, seconds)
        entry["mae"] = {k: float(v) for k, v in condition_mae(props, targets).items()}
        results["conditional"][f"guidance {guidance:g}"] = entry
        log(f"conditional guidance {guidance:g}: {entry}")
    return results


def _parse(smiles: list[str]) -> list:
    from rdkit import Chem

    from polydiff_molecules.chem import quiet_rdkit

    with quiet_rdkit():
        return [Chem.MolFromSmiles(s) for s in smiles]


def build_targets(results: dict, guidance: float) -> list[dict]:
    u = results["unconditional"]
    targets = [
        dict(name="unconditional validity >= 0.60", value=u["validity"], threshold=0.60, met=bool(u["validity"] >= 0.60)),
        dict(name="unconditional uniqueness (of valid) >= 0.95", value=u["uniqueness"], threshold=0.95,
             met=bool(u["uniqueness"] >= 0.95)),
        dict(name="unconditional novelty (of unique valid) >= 0.90", value=u["novelty"], threshold=0.90,
             met=bool(u["novelty"] >= 0.90)),
        dict(name="validity > marginal baseline validity", value=u["validity"],
             threshold=results["marginal_baseline"]["validity"],
             met=bool(u["validity"] > results["marginal_baseline"]["validity"])),
    ]
    c = results["conditional"]
    best = c[f"guidance {guidance:g}"]
    for prop in ("qed", "logp"):
        limit = 0.5 * c["unconditional_mae"][prop]
        targets.append(dict(name=f"conditional MAE {prop} (guidance {guidance:g}) <= 0.5 x unconditional MAE",
                            value=best["mae"][prop], threshold=limit, met=bool(best["mae"][prop] <= limit)))
    return targets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "scratch" / "molecules")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "molecules.json")
    parser.add_argument("--train-size", type=int, default=50_000)
    parser.add_argument("--steps", type=int, default=9000, help="optimiser steps (batches of 32)")
    parser.add_argument("--noise", choices=("marginal", "joint"), default="marginal")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--sample-steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--conditional", type=int, default=500, help="conditional targets (one molecule each)")
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--kl-molecules", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-only", action="store_true")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    start = time.perf_counter()
    data = build_data(args.work, args.train_size, args.seed)
    trained = train(args.work, data["train"], args.steps, args.noise)
    if args.train_only:
        return 0
    results = {"data": {k: (str(v.relative_to(args.work)) if isinstance(v, Path) else v) for k, v in data.items()},
               "training": trained, **evaluate(args.work, trained, args),
               "reference": {"digress_moses_validity_full_gpu_training": DIGRESS_MOSES_VALIDITY}}
    report = {
        "command": "python benchmarks/molecules.py " + " ".join(sys.argv[1:]),
        "machine": machine,
        "budget": {"training_steps": args.steps, "batch_size": 32, "training_minutes": round(trained["seconds"] / 60, 1),
                   "threads": int(os.environ.get("OMP_NUM_THREADS", 0)) or machine.get("torch_threads_default"),
                   "wall_minutes": round((time.perf_counter() - start) / 60, 1), "samples": args.samples,
                   "sample_steps": args.sample_steps, "conditional_targets": args.conditional},
        "results": results,
        "targets": build_targets(results, args.guidance),
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
