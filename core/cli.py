"""The ``polydiff`` command line.

::

    polydiff list                                   installed plugins and their status
    polydiff <plugin> fit|validate|test|predict ... LightningCLI, with the plugin's bundled configs
    polydiff <plugin> <command> [args]              the plugin's own commands
    polydiff <plugin> --help                        its commands and bundled configs
    polydiff quickstart [plugin ...] [-o OUT]       every plugin's offline demo (or the core's)
    polydiff --version

:func:`main` takes the argument list and returns the exit status, so tests call it in-process.
Torch and Lightning are imported only by the commands that need them: ``polydiff list`` imports
the standard library, the registry and the plugins' light entry-point modules.

Exit status: 0 success; 1 a failure at run time (a demo failed, a plugin is broken or lacks its
extra); 2 a usage or configuration error (unknown plugin or command, missing config or class).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import inspect
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polydiff import __version__
from polydiff.plugin import TRAINER_COMMANDS, Plugin, ResolveError
from polydiff.registry import ENTRY_POINT_GROUP, PluginError, Registry

__all__ = ["main", "fit_for_demo", "QUICKSTART_MARKER"]

QUICKSTART_MARKER = ".polydiff-quickstart"
"""File that marks a folder as ``polydiff quickstart`` output, which a later run may reuse."""

_BUILTIN_COMMANDS = ("list", "quickstart")
_SIMPLE_NAME = re.compile(r"^[\w.-]+$")


class _UsageError(Exception):
    """A problem with what the user asked for; reported in one message with exit status 2."""


# --- entry point --------------------------------------------------------------------------------
def main(args: Sequence[str] | None = None, *, registry: Registry | None = None) -> int:
    """Run the ``polydiff`` command line.

    Args:
        args: the arguments after ``polydiff``; ``sys.argv[1:]`` when ``None``.
        registry: the plugin registry (tests pass an isolated one); the installed plugins when
            ``None``.

    Returns:
        The exit status.
    """
    argv = list(sys.argv[1:] if args is None else args)
    registry = Registry() if registry is None else registry
    if not argv:
        print(_usage(registry), file=sys.stderr)
        return 2
    head, rest = argv[0], argv[1:]
    try:
        if head in ("-h", "--help", "help"):
            print(_usage(registry))
            return 0
        if head in ("-V", "--version"):
            print(f"polydiff {__version__}")
            return 0
        if head == "list":
            return _list(rest, registry)
        if head == "quickstart":
            return _quickstart(rest, registry)
        if head.startswith("-"):
            raise _UsageError(f"unknown option {head!r}; see 'polydiff --help'")
        return _plugin_command(head, rest, registry)
    except _UsageError as exc:
        _error(str(exc))
        return 2


def fit_for_demo(
    plugin: str,
    config: str,
    run_dir: Path,
    *,
    max_steps: int,
    seed: int = 0,
    progress: bool = True,
    args: Sequence[str] = (),
    registry: Registry | None = None,
) -> Path:
    """Train with one of a plugin's bundled configs, as a quickstart demo does, and return the checkpoint.

    Runs ``polydiff <plugin> fit -c <config>`` with ``args`` and the demo's settings (``max_steps``
    steps, one validation at the end on two batches, no logger or model summary, output under
    ``run_dir``). A finished run in ``run_dir`` is reused: its newest checkpoint is returned.

    Raises:
        RuntimeError: the training failed (its exit status is named).
    """
    run_dir = Path(run_dir)
    found = sorted(run_dir.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime) if run_dir.exists() else []
    if found:
        return found[-1]
    status = main([
        plugin, "fit", "-c", config,
        "--seed_everything", str(seed),
        *args,
        "--trainer.max_steps", str(max_steps),
        "--trainer.val_check_interval", str(max_steps),
        "--trainer.limit_val_batches", "2",
        "--trainer.logger", "false",
        "--trainer.enable_progress_bar", str(bool(progress)).lower(),
        "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(run_dir),
    ], registry=registry)
    if status != 0:
        raise RuntimeError(f"training {plugin} with config {config!r} failed (exit status {status})")
    return sorted(run_dir.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)[-1]


def _error(message: str) -> None:
    print(f"polydiff: error: {message}", file=sys.stderr)


def _usage(registry: Registry) -> str:
    names = registry.names()
    plugins = ", ".join(names) if names else f"none installed (entry-point group {ENTRY_POINT_GROUP})"
    return (
        "usage: polydiff <command> [args]\n"
        "\n"
        "commands:\n"
        "  list                                   the installed plugins, their status and errors\n"
        "  quickstart [plugin ...] [-o OUT]       run the offline demos (the core's when no plugin is installed)\n"
        "  <plugin> fit|validate|test|predict ... train or evaluate with LightningCLI\n"
        "  <plugin> <command> [args]              a plugin's own commands\n"
        "  <plugin> --help                        a plugin's commands and bundled configs\n"
        "\n"
        "options:\n"
        "  -h, --help     show this message\n"
        "  -V, --version  show the version\n"
        "\n"
        f"plugins: {plugins}"
    )


# --- polydiff list ------------------------------------------------------------------------------
def _list(argv: list[str], registry: Registry) -> int:
    parser = argparse.ArgumentParser(
        prog="polydiff list", description="List the installed plugins; broken ones are shown with their error."
    )
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        return _exit_code(exc)
    records = registry.records(load=True)
    if not records:
        print(f"no plugins installed (entry-point group {ENTRY_POINT_GROUP})")
        return 0
    rows = [(r.name, r.status, r.extra or "-", r.description or r.value) for r in records]
    print(_table(("name", "status", "extra", "description"), rows))
    problems = [r for r in records if r.error]
    if problems:
        print()
        for record in problems:
            source = f" [{record.distribution}]" if record.distribution else ""
            print(f"{record.name}{source}: {record.error}")
    return 0


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- polydiff <plugin> ... ----------------------------------------------------------------------
def _plugin_command(name: str, argv: list[str], registry: Registry) -> int:
    if name not in registry:
        installed = ", ".join(registry.names()) or "none installed"
        raise _UsageError(
            f"unknown command or plugin {name!r}; commands: {', '.join(_BUILTIN_COMMANDS)}; "
            f"plugins: {installed}"
        )
    try:
        plugin = registry.get(name)
    except PluginError as exc:
        _error(str(exc))
        return 1
    if not argv:
        print(_plugin_usage(plugin), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(_plugin_usage(plugin))
        return 0
    command, rest = argv[0], argv[1:]
    if command in TRAINER_COMMANDS:
        return _run_lightning(plugin, command, rest)
    if command in plugin.commands:
        try:
            fn = plugin.load_command(command)
        except ResolveError as exc:
            _error(f"plugin {plugin.name!r}, command {command!r}: {exc}")
            return 1
        try:
            status = fn(rest)
        except SystemExit as exc:  # argparse inside a command exits; keep main() returning
            return _exit_code(exc)
        return int(status or 0)
    valid = ", ".join([*TRAINER_COMMANDS, *sorted(plugin.commands)])
    raise _UsageError(f"plugin {plugin.name!r} has no command {command!r}; its commands: {valid}")


def _plugin_usage(plugin: Plugin) -> str:
    own = ", ".join(sorted(plugin.commands)) or "none"
    try:
        configs = ", ".join(plugin.config_names()) or "none"
    except Exception as exc:  # a broken config package must not hide the rest of the help
        configs = f"unavailable ({type(exc).__name__}: {exc})"
    return (
        f"usage: polydiff {plugin.name} <command> [args]\n"
        "\n"
        f"{plugin.description}\n"
        "\n"
        f"trainer commands: {', '.join(TRAINER_COMMANDS)}\n"
        f"  LightningCLI; -c NAME uses a bundled config, --trainer.* etc. override it;\n"
        f"  see 'polydiff {plugin.name} fit --help'\n"
        f"plugin commands: {own}\n"
        f"bundled configs: {configs}"
    )


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _with_bundled_configs(plugin: Plugin, argv: list[str], stack: contextlib.ExitStack) -> list[str]:
    """Replace ``-c NAME`` by the path of the plugin's bundled ``NAME.yaml`` where NAME is no file."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-c", "--config") and i + 1 < len(argv):
            out += [arg, _config_path(plugin, argv[i + 1], stack)]
            i += 2
            continue
        if arg.startswith("--config="):
            arg = "--config=" + _config_path(plugin, arg[len("--config="):], stack)
        out.append(arg)
        i += 1
    return out


def _config_path(plugin: Plugin, value: str, stack: contextlib.ExitStack) -> str:
    if Path(value).exists() or not _SIMPLE_NAME.match(value):
        return value  # a file, or inline YAML / a bad path that jsonargparse reports itself
    try:
        resource = plugin.config_resource(value)
    except KeyError as exc:
        raise _UsageError(f"no config file {value!r}, and {exc.args[0]}") from None
    # as_file gives a real path even when the plugin is installed zipped; it lives until the run ends.
    return str(stack.enter_context(importlib.resources.as_file(resource)))


def _run_lightning(plugin: Plugin, command: str, argv: list[str]) -> int:
    with contextlib.ExitStack() as stack:
        # Config names first: a typo is reported before the slow import of torch and Lightning.
        args = [command, *_with_bundled_configs(plugin, argv, stack)]
        try:
            model_class = plugin.load_model_class()
            datamodule_class = plugin.load_datamodule_class()
        except ResolveError as exc:
            _error(f"plugin {plugin.name!r}: {exc}")
            return 1
        cli_class = _polydiff_cli_class()
        try:
            cli_class(
                plugin_name=plugin.name,
                model_class=model_class,
                datamodule_class=datamodule_class,
                subclass_mode_model=True,
                subclass_mode_data=True,
                args=args,
                run=True,
                save_config_kwargs={"overwrite": True},
                # The optimizer is the model's own init argument (one place to configure it).
                auto_configure_optimizers=False,
                # Parse errors as exceptions, so they are reported in one message below.
                parser_kwargs={"exit_on_error": False},
            )
        except SystemExit as exc:  # --help, --print_config
            return _exit_code(exc)
        except (argparse.ArgumentError, _InstantiationError) as exc:
            raise _UsageError(_describe_config_error(plugin, command, str(exc))) from None
    return 0


def _describe_config_error(plugin: Plugin, command: str, message: str) -> str:
    """One headline for a jsonargparse error (the innermost class problem), then its full report."""
    headline = f"invalid {command} configuration for plugin {plugin.name!r}"
    problems = re.findall(r"Problem with given class_path '([^']+)':\n\s*(.+)", message)
    deepest = [(path, reason) for path, reason in problems if not reason.startswith("Parser key")]
    union_errors = re.findall(r"Errors:\n\s*- (.+)", message)
    if deepest:
        path, reason = deepest[-1]
        headline += f": cannot use class_path {path!r}: {reason.strip()}"
    elif union_errors:
        headline += f": {union_errors[0].strip()}"
    elif "\n" not in message.strip():
        headline += f": {message.strip()}"
        message = ""
    lines = [headline]
    if message.strip():
        lines.append("details:\n  " + message.strip().replace("\n", "\n  "))
    lines.append(
        f"see 'polydiff {plugin.name} {command} --help'; bundled configs: {', '.join(plugin.config_names()) or 'none'}"
    )
    return "\n".join(lines)


class _InstantiationError(Exception):
    """A configured class could not be built (its constructor rejected its arguments)."""


_CLI_CLASS: type | None = None


def _polydiff_cli_class() -> type:
    """LightningCLI subclass that tags the model with its plugin; built on first use (heavy import)."""
    global _CLI_CLASS
    if _CLI_CLASS is not None:
        return _CLI_CLASS
    from pytorch_lightning.cli import LightningCLI

    class PolydiffCLI(LightningCLI):
        """LightningCLI that records the plugin name and model config on the model."""

        def __init__(self, *args: Any, plugin_name: str, **kwargs: Any):
            self.plugin_name = plugin_name
            super().__init__(*args, **kwargs)

        def parse_arguments(self, parser: Any, args: Any) -> None:
            # The parent warns whenever sys.argv is non-empty, which it always is under `polydiff`.
            self.config = parser.parse_args(args)

        def instantiate_classes(self) -> None:
            try:
                super().instantiate_classes()
            except Exception as exc:
                raise _InstantiationError(f"{type(exc).__name__}: {exc}") from exc
            config = self.config[self.subcommand] if self.subcommand else self.config
            # Saved into checkpoints by DiffusionModule, so a model can be rebuilt without the CLI.
            self.model.plugin_name = self.plugin_name
            self.model.polydiff_config = _plain(config.get("model"))

    _CLI_CLASS = PolydiffCLI
    return PolydiffCLI


def _plain(value: Any) -> Any:
    """Plain data (dicts, lists, str, numbers, bool, None) that ``torch.load(weights_only=True)`` reads."""
    if hasattr(value, "as_dict") and callable(value.as_dict):  # a jsonargparse Namespace
        value = value.as_dict()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # paths, enums, dtypes: their text is what the config said


# --- polydiff quickstart ------------------------------------------------------------------------
def _quickstart(argv: list[str], registry: Registry) -> int:
    parser = argparse.ArgumentParser(
        prog="polydiff quickstart",
        description=(
            "Run each installed plugin's offline demo (or the named ones) into OUT/<plugin>/ and print "
            "their metrics. With no plugin installed, run the core demo (a 2-D Gaussian mixture) into "
            "OUT/core/. Nothing outside OUT is written; an existing OUT must be empty or an earlier "
            "quickstart's output unless --force is given."
        ),
    )
    parser.add_argument("plugins", nargs="*", metavar="plugin", help="plugins to run ('core' for the core demo)")
    parser.add_argument("-o", "--out", type=Path, default=Path("quickstart-out"), help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--force", action="store_true", help="write into an existing folder of other files")
    # Hidden: shortens training for tests and smoke runs; demos that accept max_steps get it.
    parser.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)
    try:
        opts = parser.parse_args(argv)
    except SystemExit as exc:
        return _exit_code(exc)

    jobs = _quickstart_jobs(opts.plugins, registry)
    out = _prepare_out(opts.out, opts.force)
    results = []
    for name, plugin, problem in jobs:
        if problem is not None:
            results.append({"name": name, "status": problem[0], "seconds": 0.0, "metrics": {}, "error": problem[1]})
            continue
        results.append(_run_demo(name, plugin, out / name, progress=not opts.no_progress, max_steps=opts.max_steps))

    (out / "quickstart.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(_table(("demo", "status", "seconds"), [(r["name"], r["status"], f"{r['seconds']:.1f}") for r in results]))
    metric_rows = [(r["name"], key, value) for r in results for key, value in _scalar_metrics(r["metrics"])]
    if metric_rows:
        print()
        print(_table(("demo", "metric", "value"), metric_rows))
    for r in results:
        if r.get("error"):
            print(f"{r['name']}: {r['error']}", file=sys.stderr)
    print(f"outputs in {out}")
    return 1 if any(r["status"] == "failed" for r in results) else 0


def _quickstart_jobs(
    names: list[str], registry: Registry
) -> list[tuple[str, Plugin | None, tuple[str, str] | None]]:
    """(name, plugin, problem) for each demo to run; plugin ``None`` means the core demo."""
    jobs: list[tuple[str, Plugin | None, tuple[str, str] | None]] = []
    if names:
        for name in dict.fromkeys(names):  # keep order, drop repeats
            if name == "core":
                jobs.append(("core", None, None))
                continue
            if name not in registry:
                installed = ", ".join(registry.names()) or "none installed"
                raise _UsageError(f"unknown plugin {name!r}; plugins: {installed}, or 'core'")
            try:
                plugin = registry.get(name)
            except PluginError as exc:
                jobs.append((name, None, ("failed", str(exc))))
                continue
            if plugin.demo is None:
                jobs.append((name, None, ("failed", f"plugin {name!r} has no demo")))
            else:
                jobs.append((name, plugin, None))
        return jobs
    for record in registry.records(load=True):
        if record.status == "ok":
            if record.plugin is not None and record.plugin.demo is not None:
                jobs.append((record.name, record.plugin, None))
        elif record.status == "missing extra":
            jobs.append((record.name, None, ("skipped", record.error or "missing extra")))
        else:  # a broken plugin is a failure the user should see, but the others still run
            jobs.append((record.name, None, ("failed", record.error or record.status)))
    if not any(plugin is not None for _, plugin, _ in jobs):
        jobs.insert(0, ("core", None, None))
    return jobs


def _prepare_out(out: Path, force: bool) -> Path:
    if out.exists():
        if not out.is_dir():
            raise _UsageError(f"{out} exists and is not a folder; choose another with -o")
        ours = (out / QUICKSTART_MARKER).is_file()
        if not ours and any(out.iterdir()) and not force:
            raise _UsageError(
                f"{out} exists and is not the output of an earlier quickstart; "
                "choose another folder with -o, or pass --force to write into it"
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / QUICKSTART_MARKER).write_text("written by polydiff quickstart; a later run may overwrite this folder\n")
    return out


def _run_demo(name: str, plugin: Plugin | None, out_dir: Path, *, progress: bool, max_steps: int | None) -> dict:
    start = time.perf_counter()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if plugin is None:
            from polydiff.demo import run_demo

            kwargs: dict[str, Any] = {"progress": progress}
            if max_steps is not None:
                kwargs["max_steps"] = max_steps
            metrics = run_demo(out_dir, **kwargs)
        else:
            fn = plugin.load_demo()
            kwargs = {"progress": progress}
            if max_steps is not None and _accepts(fn, "max_steps"):
                kwargs["max_steps"] = max_steps
            metrics = fn(out_dir, **kwargs)
        metrics = dict(metrics or {})
        if not (out_dir / "metrics.json").exists():
            (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
        status, error = "ok", None
    except Exception as exc:  # one failed demo must not stop the others
        import traceback

        traceback.print_exc()
        metrics, status, error = {}, "failed", f"demo failed: {type(exc).__name__}: {exc}"
    return {
        "name": name,
        "status": status,
        "seconds": time.perf_counter() - start,
        "metrics": metrics,
        "error": error,
    }


def _accepts(fn: Any, parameter: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return parameter in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _scalar_metrics(metrics: dict) -> list[tuple[str, str]]:
    """(name, formatted value) of the scalar entries; nested ones stay in metrics.json."""
    rows = []
    for key, value in metrics.items():
        if isinstance(value, float):
            rows.append((str(key), f"{value:.4g}" if math.isfinite(value) else str(value)))
        elif isinstance(value, (bool, int, str)) or value is None:
            rows.append((str(key), str(value)))
    return rows
