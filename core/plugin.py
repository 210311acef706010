"""The object a plugin exposes at its ``polydiff.plugins`` entry point.

A plugin is described by plain data: every class and function it contributes is named by a
dotted path and imported only when used. The module that defines the :class:`Plugin` object must
therefore stay light (no torch, no domain libraries), so that ``polydiff list`` can show every
plugin's description without importing any plugin's heavy dependencies.

Example, in ``polydiff_audio/__init__.py``::

    from polydiff.plugin import Plugin

    plugin = Plugin(
        name="audio",
        description="Speech enhancement and dereverberation.",
        extra="audio",
        requires=("torchaudio", "soundfile"),
        datamodule_class="polydiff_audio.data.SpeechDataModule",
        config_package="polydiff_audio.configs",
        commands={"enhance": "polydiff_audio.commands:enhance"},
        demo="polydiff_audio.demo:run_demo",
    )

and in the distribution's ``pyproject.toml``::

    [project.entry-points."polydiff.plugins"]
    audio = "polydiff_audio:plugin"

This module imports only the standard library.
"""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["Plugin", "ResolveError", "resolve", "TRAINER_COMMANDS", "RESERVED_NAMES"]

TRAINER_COMMANDS: tuple[str, ...] = ("fit", "validate", "test", "predict")
"""LightningCLI subcommands every plugin gets; a plugin's own commands may not reuse them."""

RESERVED_NAMES: tuple[str, ...] = ("list", "quickstart", "core", "help")
"""Top-level ``polydiff`` words that can never be plugin names."""

# A command word: lower-case letters, digits, "-" and "_", starting with a letter or a digit and
# holding at least one letter ("3d" is a name, "42" is not: it reads as a number).
_NAME = re.compile(r"^(?=[a-z0-9_-]*[a-z])[a-z0-9][a-z0-9_-]*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")


class ResolveError(ImportError):
    """A dotted path that names no importable object."""


def resolve(dotted: str) -> Any:
    """Import the object a dotted path names.

    Accepts ``"package.module:attr.sub"`` (entry-point style) and ``"package.module.attr"``. In
    the second form the longest prefix that is a module is imported and the rest is looked up
    as attributes.

    Args:
        dotted: the path.

    Returns:
        The object (a module, class, function, ...).

    Raises:
        ResolveError: naming the path and what was missing: the module that does not exist, the
            attribute a module lacks, or the error raised while a module was being imported (kept
            as ``__cause__``).
    """
    if not isinstance(dotted, str) or not dotted.strip():
        raise ResolveError(f"cannot resolve {dotted!r}: expected a dotted path such as 'package.module.Class'")
    if ":" in dotted:
        module_name, _, attr_path = dotted.partition(":")
        obj = _import(dotted, module_name)
        attrs = attr_path.split(".") if attr_path else []
    else:
        parts = dotted.split(".")
        module_name, attrs = parts[0], parts[1:]
        obj = _import(dotted, module_name)
        # Import parents before children, so an error is charged to the module that raised it;
        # the first prefix that is not a module starts the attribute lookups.
        while attrs:
            submodule = _import(dotted, f"{module_name}.{attrs[0]}", may_be_attribute=True)
            if submodule is None:
                break
            obj, module_name, attrs = submodule, f"{module_name}.{attrs[0]}", attrs[1:]
    owner = module_name
    for attr in attrs:
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise ResolveError(f"cannot resolve {dotted!r}: {owner!r} has no attribute {attr!r}") from None
        owner = f"{owner}.{attr}"
    return obj


def _import(dotted: str, module_name: str, may_be_attribute: bool = False) -> Any:
    """Import ``module_name`` for :func:`resolve`; ``None`` if it is not a module and may be an attribute."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name and may_be_attribute:
            return None
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ResolveError(f"cannot resolve {dotted!r}: no module named {exc.name!r}") from exc
        raise ResolveError(
            f"cannot resolve {dotted!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    except Exception as exc:
        raise ResolveError(
            f"cannot resolve {dotted!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


@dataclass(frozen=True, kw_only=True)
class Plugin:
    """What a plugin contributes, as names; nothing is imported until it is used.

    Args:
        name: the word after ``polydiff`` on the command line; lower case, digits, ``-`` or ``_``.
        description: one line for ``polydiff list``.
        datamodule_class: dotted path of the plugin's ``LightningDataModule`` (base class for
            LightningCLI's subclass mode: configs may name any subclass).
        model_class: dotted path of the ``LightningModule`` base class for LightningCLI.
        extra: the ``polydiff`` extra that installs the heavy dependencies (``"audio"``), or
            ``None`` for a plugin that needs none or lives outside polydiff.
        requires: top-level import names of the heavy dependencies. They are looked up with
            :func:`importlib.util.find_spec`, never imported, so a missing one is reported
            without cost.
        install: the command that installs ``requires``; defaults to
            ``pip install "polydiff[<extra>]"`` (third-party plugins give their own).
        config_package: package whose ``*.yaml`` files are the bundled configs, used as
            ``polydiff <name> fit -c <config>``.
        commands: the plugin's own commands: command name to dotted path of a callable
            ``fn(argv: list[str]) -> int`` (the exit status).
        demo: dotted path of ``fn(out_dir: Path, progress: bool) -> dict`` that builds offline
            demo data, trains briefly, writes its outputs under ``out_dir`` and returns metrics;
            run by ``polydiff quickstart``. A demo that also accepts ``max_steps`` is given the
            quickstart's ``--max-steps`` when one is set.
    """

    name: str
    description: str
    datamodule_class: str
    model_class: str = "polydiff.module.DiffusionModule"
    extra: str | None = None
    requires: tuple[str, ...] = ()
    install: str | None = None
    config_package: str | None = None
    commands: Mapping[str, str] = field(default_factory=dict)
    demo: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"plugin name {self.name!r} is not valid: use lower-case letters, digits, '-' or '_', "
                "starting with a letter or digit and holding at least one letter"
            )
        if self.name in RESERVED_NAMES:
            raise ValueError(f"plugin name {self.name!r} is reserved; reserved names: {', '.join(RESERVED_NAMES)}")
        if "\n" in self.description:
            raise ValueError(f"plugin {self.name!r}: the description must be one line")
        requires = (self.requires,) if isinstance(self.requires, str) else tuple(self.requires)
        for module in requires:
            if not _IDENTIFIER.match(module):
                raise ValueError(
                    f"plugin {self.name!r}: requires entry {module!r} is not a top-level import name"
                )
        clashes = sorted(set(self.commands) & set(TRAINER_COMMANDS))
        if clashes:
            raise ValueError(
                f"plugin {self.name!r}: command names {clashes} clash with the trainer commands "
                f"{', '.join(TRAINER_COMMANDS)}"
            )
        # Frozen means frozen: a caller's dict or list must not change the plugin later.
        object.__setattr__(self, "requires", requires)
        object.__setattr__(self, "commands", MappingProxyType(dict(self.commands)))

    # --- requirements -----------------------------------------------------------------------
    def missing_requirements(self) -> tuple[str, ...]:
        """The entries of ``requires`` that cannot be imported (found without importing them)."""
        missing = []
        for module in self.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):  # a broken or half-installed package
                found = False
            if not found:
                missing.append(module)
        return tuple(missing)

    @property
    def install_hint(self) -> str:
        """The command that installs this plugin's requirements."""
        if self.install:
            return self.install
        if self.extra:
            return f'pip install "polydiff[{self.extra}]"'
        return "pip install " + " ".join(self.requires)

    # --- configs ------------------------------------------------------------------------------
    def config_names(self) -> list[str]:
        """Names of the bundled configs (file names without ``.yaml``), sorted."""
        if self.config_package is None:
            return []
        root = importlib.resources.files(self.config_package)
        return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml") and p.is_file())

    def config_resource(self, name: str) -> importlib.resources.abc.Traversable:
        """The bundled config ``name`` (``"tiny"`` or ``"tiny.yaml"``).

        Use :func:`importlib.resources.as_file` to get a file system path from it.

        Raises:
            KeyError: no such config; the message lists the bundled ones.
        """
        stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
        names = self.config_names()
        if stem not in names:
            valid = ", ".join(names) if names else "none"
            raise KeyError(f"plugin {self.name!r} has no bundled config {name!r}; bundled configs: {valid}")
        return importlib.resources.files(self.config_package) / f"{stem}.yaml"

    # --- the objects behind the names ---------------------------------------------------------
    def load_model_class(self) -> type:
        """The model base class (imports it)."""
        return resolve(self.model_class)

    def load_datamodule_class(self) -> type:
        """The datamodule base class (imports it)."""
        return resolve(self.datamodule_class)

    def load_command(self, command: str) -> Any:
        """The callable behind one of the plugin's own commands.

        Raises:
            KeyError: the plugin has no such command; the message lists its commands.
        """
        if command not in self.commands:
            valid = ", ".join(sorted(self.commands)) or "none"
            raise KeyError(f"plugin {self.name!r} has no command {command!r}; its commands: {valid}")
        return resolve(self.commands[command])

    def load_demo(self) -> Any | None:
        """The demo function, or ``None`` when the plugin has no demo."""
        return None if self.demo is None else resolve(self.demo)
