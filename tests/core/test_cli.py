"""The ``polydiff`` command line, run in-process through ``main`` (and as a subprocess where it must)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import polydiff
from polydiff.cli import QUICKSTART_MARKER, main

BROKEN_MODULE = 'raise ImportError("libfoo is not installed")\n'

HEAVY_PLUGIN_MODULE = """\
from polydiff.plugin import Plugin

plugin = Plugin(
    name="heavy",
    description="Requires a heavy dependency that is installed.",
    extra="audio",
    requires=("polydiff_fake_heavy_dependency",),
    datamodule_class="polydiff_heavy.data.DataModule",
)
"""


def _env_with(site: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    return env


def _checkpoints(root: Path) -> list[Path]:
    return sorted(root.rglob("*.ckpt"))


# --- top level ----------------------------------------------------------------------------------
def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"polydiff {polydiff.__version__}"


def test_help_and_no_arguments(capsys, isolated_registry):
    registry = isolated_registry()
    assert main(["--help"], registry=registry) == 0
    out = capsys.readouterr().out
    assert "quickstart" in out and "list" in out and "fit|validate|test|predict" in out
    assert main([], registry=registry) == 2
    assert "usage: polydiff" in capsys.readouterr().err


def test_unknown_plugin_exits_2_and_lists_valid_names(capsys, fakewave):
    assert main(["fakewav", "fit"]) == 2
    err = capsys.readouterr().err
    assert "unknown command or plugin 'fakewav'" in err
    assert "fakewave" in err and "list, quickstart" in err
    assert "Traceback" not in err


def test_unknown_option_exits_2(capsys):
    assert main(["--frobnicate"]) == 2
    assert "unknown option '--frobnicate'" in capsys.readouterr().err


# --- polydiff list ------------------------------------------------------------------------------
def test_list_shows_plugins_and_their_errors(capsys, fakewave, plugin_site):
    plugin_site("polydiff-broken", {"broken": "polydiff_broken:plugin"}, {"polydiff_broken.py": BROKEN_MODULE})
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    table, _, errors = out.partition("\n\n")
    lines = {line.split()[0]: line for line in table.splitlines()}
    assert "ok" in lines["fakewave"] and "Fake third-party plugin" in lines["fakewave"]
    assert "error" in lines["broken"]
    assert "broken [polydiff-broken]: ImportError: libfoo is not installed" in errors


def test_list_with_no_plugins(capsys, isolated_registry):
    assert main(["list"], registry=isolated_registry()) == 0
    assert "no plugins installed" in capsys.readouterr().out


def test_list_imports_neither_torch_nor_plugin_dependencies(fakewave, plugin_site, tmp_path):
    # A plugin whose (present) heavy dependency would leave a trace if it were imported.
    info = plugin_site(
        "polydiff-heavy",
        {"heavy": "polydiff_heavy:plugin"},
        {"polydiff_heavy.py": HEAVY_PLUGIN_MODULE,
         "polydiff_fake_heavy_dependency.py": "raise RuntimeError('heavy dependency imported')\n"},
    )
    script = (
        "import sys\n"
        "from polydiff.cli import main\n"
        "code = main(['list'])\n"
        "heavy = [m for m in ('torch', 'pytorch_lightning', 'jsonargparse', 'polydiff_fake_heavy_dependency',"
        " 'polydiff_fakewave.data') if m in sys.modules]\n"
        "print('HEAVY', heavy, 'CODE', code)\n"
    )
    env = _env_with(fakewave)
    env["PYTHONPATH"] = os.pathsep.join([str(info.parent), env["PYTHONPATH"]])
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY [] CODE 0" in proc.stdout
    assert "heavy" in proc.stdout and "fakewave" in proc.stdout


# --- polydiff <plugin> ... ----------------------------------------------------------------------
def test_plugin_help_lists_commands_and_configs(capsys, fakewave):
    assert main(["fakewave", "--help"]) == 0
    out = capsys.readouterr().out
    assert "fit, validate, test, predict" in out
    assert "plugin commands: hello" in out
    assert "bundled configs: tiny" in out


def test_plugin_command_runs_with_its_arguments_and_exit_status(capsys, fakewave):
    assert main(["fakewave", "hello", "--name", "there"]) == 0
    assert capsys.readouterr().out.strip() == "hello there"
    assert main(["fakewave", "hello", "--fail"]) == 3
    assert main(["fakewave", "hello", "--bogus"]) == 2  # argparse's own exit, returned not raised


def test_unknown_plugin_command_lists_commands(capsys, fakewave):
    assert main(["fakewave", "dance"]) == 2
    assert "its commands: fit, validate, test, predict, hello" in capsys.readouterr().err


def test_broken_plugin_says_why(capsys, plugin_site):
    plugin_site("polydiff-broken", {"broken": "polydiff_broken:plugin"}, {"polydiff_broken.py": BROKEN_MODULE})
    assert main(["broken", "fit"]) == 1
    assert "plugin 'broken' (polydiff_broken:plugin) failed to load: ImportError: libfoo" in capsys.readouterr().err


def test_missing_bundled_config_lists_the_bundled_ones(capsys, fakewave, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "huge" must not happen to be a file
    assert main(["fakewave", "fit", "-c", "huge"]) == 2
    err = capsys.readouterr().err
    assert "no config file 'huge'" in err and "bundled configs: tiny" in err


def test_fit_with_bundled_config_and_trainer_override(fakewave, tmp_path):
    root = tmp_path / "run"
    code = main(["fakewave", "fit", "-c", "tiny", "--trainer.max_steps", "5", "--trainer.default_root_dir", str(root)])
    assert code == 0
    (ckpt,) = _checkpoints(root)
    assert "step=5" in ckpt.name  # the override beat the config's max_steps: 20
    assert "max_steps: 5" in (root / "config.yaml").read_text()

    import torch

    record = torch.load(ckpt, weights_only=True)["polydiff"]
    assert record["plugin"] == "fakewave"
    denoiser = record["model_config"]["init_args"]["denoiser"]
    assert denoiser["class_path"] == "polydiff_fakewave.nets.TinyConvDenoiser"

    from polydiff.checkpoint import CheckpointError, load_checkpoint, load_module

    assert load_checkpoint(ckpt, plugin="fakewave")["global_step"] == 5
    with pytest.raises(CheckpointError, match="fakewave"):
        load_checkpoint(ckpt, plugin="other")
    # The recorded config rebuilds the plugin's model without the CLI.
    module = load_module(ckpt, plugin="fakewave")
    assert module.plugin_name == "fakewave"
    assert tuple(module.sample((2, 1, 32), generator=torch.Generator().manual_seed(0)).shape) == (2, 1, 32)


def test_config_naming_a_missing_class_exits_2(capsys, fakewave, tmp_path):
    import polydiff_fakewave

    tiny = polydiff_fakewave.plugin.config_resource("tiny").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(tiny.replace("polydiff_fakewave.nets.TinyConvDenoiser", "polydiff_fakewave.nets.NoSuchNet"))
    assert main(["fakewave", "fit", "-c", str(bad), "--trainer.default_root_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith("polydiff: error: invalid fit configuration for plugin 'fakewave'")
    assert "'polydiff_fakewave.nets.NoSuchNet'" in first and "has no attribute 'NoSuchNet'" in first
    assert "Traceback" not in err
    assert not _checkpoints(tmp_path)


def test_invalid_constructor_value_exits_2(capsys, fakewave, tmp_path):
    args = ["fakewave", "fit", "-c", "tiny", "--model.init_args.sampler", "bogus",
            "--trainer.default_root_dir", str(tmp_path)]
    assert main(args) == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert "unknown sampler 'bogus'" in first


def test_unknown_trainer_option_exits_2(capsys, fakewave, tmp_path):
    assert main(["fakewave", "fit", "-c", "tiny", "--trainer.no_such_option", "1"]) == 2
    assert "unrecognized arguments: --trainer.no_such_option" in capsys.readouterr().err


def test_trainer_command_help(capsys, fakewave):
    assert main(["fakewave", "fit", "--help"]) == 0
    assert "--trainer.max_steps" in capsys.readouterr().out


def test_ddp_fit_on_cpu_in_a_subprocess(fakewave, tmp_path):
    # Lightning's DDP launcher re-executes the command line, so this cannot run in-process.
    args = [sys.executable, "-m", "polydiff", "fakewave", "fit", "-c", "tiny", "--trainer.strategy", "ddp",
            "--trainer.devices", "2", "--trainer.accelerator", "cpu", "--trainer.max_steps", "3",
            "--trainer.default_root_dir", str(tmp_path)]
    proc = subprocess.run(args, env=_env_with(fakewave), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (ckpt,) = _checkpoints(tmp_path)
    assert "step=3" in ckpt.name


# --- polydiff quickstart ------------------------------------------------------------------------
def test_quickstart_runs_the_core_demo_when_no_plugin_is_installed(capsys, tmp_path, isolated_registry):
    pytest.importorskip("polydiff.demo")
    out = tmp_path / "qs"
    assert main(["quickstart", "-o", str(out), "--no-progress", "--max-steps", "30"], registry=isolated_registry()) == 0
    metrics = json.loads((out / "core" / "metrics.json").read_text())
    assert metrics
    assert (out / QUICKSTART_MARKER).is_file()
    table = capsys.readouterr().out
    assert "core" in table and "ok" in table


def test_quickstart_runs_plugin_demos_and_reports_failures(capsys, fakewave, plugin_site, isolated_registry, tmp_path):
    plugin_site("polydiff-broken", {}, {"polydiff_broken.py": BROKEN_MODULE})
    registry = isolated_registry(fakewave="polydiff_fakewave:plugin", broken="polydiff_broken:plugin")
    out = tmp_path / "qs"
    assert main(["quickstart", "-o", str(out), "--no-progress", "--max-steps", "7"], registry=registry) == 1
    captured = capsys.readouterr()
    assert "broken: ImportError: libfoo" in captured.err
    # The working plugin ran anyway, got the step override, and the core demo was not needed.
    assert json.loads((out / "fakewave" / "metrics.json").read_text()) == {"score": 1.0, "max_steps": 7}
    assert not (out / "core").exists()
    summary = {r["name"]: r["status"] for r in json.loads((out / "quickstart.json").read_text())}
    assert summary == {"broken": "failed", "fakewave": "ok"}


def test_quickstart_demo_failure_gives_nonzero_exit(capsys, fakewave, isolated_registry, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKEWAVE_FAIL", "1")
    registry = isolated_registry(fakewave="polydiff_fakewave:plugin")
    assert main(["quickstart", "fakewave", "-o", str(tmp_path / "qs"), "--no-progress"], registry=registry) == 1
    assert "fakewave: demo failed: RuntimeError: fakewave demo asked to fail" in capsys.readouterr().err


def test_quickstart_unknown_plugin_exits_2(capsys, isolated_registry, tmp_path):
    registry = isolated_registry(alpha="a:plugin")
    assert main(["quickstart", "nope", "-o", str(tmp_path / "qs")], registry=registry) == 2
    assert "unknown plugin 'nope'; plugins: alpha, or 'core'" in capsys.readouterr().err
    assert not (tmp_path / "qs").exists()


def test_quickstart_never_writes_into_a_foreign_folder(capsys, fakewave, isolated_registry, tmp_path):
    registry = isolated_registry(fakewave="polydiff_fakewave:plugin")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    assert main(["quickstart", "-o", str(out), "--no-progress"], registry=registry) == 2
    assert "--force" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    # --force writes beside the user's file and leaves it alone.
    assert main(["quickstart", "-o", str(out), "--no-progress", "--force"], registry=registry) == 0
    assert (out / "notes.txt").read_text() == "precious"
    assert (out / "fakewave" / "metrics.json").is_file()
    # A folder a quickstart wrote may be reused without --force.
    assert main(["quickstart", "-o", str(out), "--no-progress"], registry=registry) == 0


def test_quickstart_refuses_a_file_as_output(capsys, isolated_registry, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert main(["quickstart", "-o", str(target), "--force"], registry=isolated_registry()) == 2
    assert target.read_text() == "x"


def test_python_dash_m_polydiff(fakewave):
    proc = subprocess.run(
        [sys.executable, "-m", "polydiff", "list"], env=_env_with(fakewave), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "fakewave" in proc.stdout


# --- the documented commands ------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[2]


def _readme_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def test_ci_runs_the_readme_test_command():
    setup_lines = _readme_blocks("bash")[0].strip().splitlines()
    assert len(setup_lines) == 2 and setup_lines[0].endswith("polydiff quickstart")
    test_command = setup_lines[1]
    ci = (REPO / ".ci" / "run").read_text()
    assert any(line.startswith(test_command + " ") for line in ci.splitlines())


def test_readme_python_example_runs(tmp_path, monkeypatch):
    (example,) = [block for block in _readme_blocks("python") if "trainer.fit" in block]
    assert "max_steps=500" in example
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example.replace("max_steps=500", "max_steps=5"), "README.md", "exec"), namespace)
    assert tuple(namespace["points"].shape) == (1000, 2)
