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
