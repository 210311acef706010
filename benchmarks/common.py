"""What every benchmark records about the machine it ran on."""

from __future__ import annotations

import os
import platform


def machine_info(**versions: str | None) -> dict:
    """Platform, CPU model and count, torch version and threads, GPU, load average; plus ``versions``."""
    import torch

    cpu = None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return dict(platform=platform.platform(), python=platform.python_version(), cpu_model=cpu,
                cpu_count=os.cpu_count(), gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                torch=torch.__version__, torch_threads_default=torch.get_num_threads(), **versions,
                load_average_at_start=load)


def write_report(out, report: dict) -> None:
    """Write a benchmark's report (``command``, ``machine``, ``budget``, ``results``, ``targets``)
    to ``out`` as JSON and print its targets."""
    import json
    from pathlib import Path

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(json.dumps(report["targets"], indent=1, default=float))


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def log(message: str) -> None:
    """Print a time-stamped progress line."""
    import time

    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def portable(text: str) -> str:
    """``text`` with the repository's own path removed (reports name repository-relative paths)."""
    return text.replace(f"{ROOT}/", "")


def make_demo_data(plugin: str, work, args: list[str], key: str) -> dict:
    """``polydiff <plugin> make-demo-data WORK/data ARGS`` once: its JSON summary, cached in
    ``WORK/data.json`` (``key`` names the summary's path field, made repository-relative)."""
    import json
    import subprocess
    import sys

    done = work / "data.json"
    if done.exists():
        return json.loads(done.read_text())
    command = [sys.executable, "-m", "polydiff", plugin, "make-demo-data", str(work / "data"), *args]
    log(f"data: {portable(' '.join(['polydiff', *command[3:]]))}")
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"make-demo-data failed:\n{out.stderr}")
    record = json.loads(out.stdout)
    record[key] = portable(record[key])
    done.write_text(json.dumps(record, indent=1) + "\n")
    return record


def train_once(plugin: str, work, config: str, name: str, steps: int, threads: int, args: list[str]) -> dict:
    """``polydiff <plugin> fit -c CONFIG ARGS`` for ``steps`` steps into ``WORK/NAME`` (one validation
    at the end, ``threads`` CPU threads, log in ``train.log``), reused when it finished: the
    checkpoint, minutes, steps, threads and the command."""
    import json
    import os
    import subprocess
    import sys
    import time

    run = work / name
    done = run / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    command = [sys.executable, "-m", "polydiff", plugin, "fit", "-c", config, *args,
               "--seed_everything", "0", "--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps),
               "--trainer.limit_val_batches", "4", "--trainer.enable_progress_bar", "false",
               "--trainer.default_root_dir", str(run)]
    log(f"train {name}: {portable(' '.join(['polydiff', *command[3:]]))}")
    run.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with open(run / "train.log", "w") as out:
        rc = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        raise SystemExit(f"training {name} failed (exit status {rc}); see {run / 'train.log'}")
    ckpts = sorted(run.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    record = {"checkpoint": str(ckpts[-1].relative_to(work)), "minutes": round((time.perf_counter() - started) / 60, 1),
              "steps": steps, "threads": threads, "command": portable(" ".join(["polydiff", *command[3:]]))}
    done.write_text(json.dumps(record, indent=1) + "\n")
    return record
