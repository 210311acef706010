"""Loading polydiff checkpoints safely.

A Lightning checkpoint written by :class:`~polydiff.module.DiffusionModule` carries a
``checkpoint["polydiff"]`` record (format, polydiff version, plugin name, module class and the
plain-data model config). Loading never unpickles code: files are read with
``torch.load(weights_only=True)``, and the module is rebuilt from the recorded
``class_path``/``init_args`` config by jsonargparse, importing classes only from polydiff, the
checkpoint's plugin package, ``torch.nn``/``torch.optim`` and prefixes the caller allows.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "load_checkpoint", "load_module", "allowed_class_prefixes"]

#: Modules whose classes a model config may always name: the core, and the harmless torch
#: building blocks (optimisers, schedulers, layers) that configs inject.
_ALWAYS_ALLOWED = ("polydiff.", "torch.nn.", "torch.optim.")

#: First byte of every pickle (protocol 2 and later), hence of torch's legacy format.
_PICKLE_MAGIC = b"\x80"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, with the file named in the message."""


def load_checkpoint(path: str | os.PathLike, *, plugin: str | None = None) -> dict[str, Any]:
    """Read a polydiff checkpoint without executing any code stored in it.

    Args:
        path: the ``.ckpt`` file.
        plugin: the plugin the checkpoint must belong to (``None`` accepts any).

    Returns:
        The checkpoint dict (``state_dict``, Lightning's entries and ``"polydiff"``).

    Raises:
        CheckpointError: if the file does not exist, is not a torch file, holds pickled code
            objects, is not a polydiff checkpoint, or belongs to another plugin.
    """
    import pickle
    import zipfile

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(2)
        if head[:1] != _PICKLE_MAGIC:  # neither torch's zip format nor a (legacy) pickle
            raise CheckpointError(f"{path} is not a torch checkpoint (it is neither a zip archive nor a pickle)")
        if head[1:2] != b"\x02":  # torch's legacy format is always pickle protocol 2
            raise CheckpointError(
                f"{path} is a plain Python pickle, not a file written by torch.save; polydiff does not "
                "unpickle arbitrary files"
            )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only refuses any global that is not a tensor, a primitive or allow-listed.
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        named = f" (it refers to {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path} contains pickled Python code objects{named}; polydiff loads checkpoints "
            "weights-only and will not execute them. If you trust the file, load it yourself with "
            "torch.load(weights_only=False) and save its state_dict"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} could not be read as a torch checkpoint: {_first_line(err)}") from None
    if not isinstance(checkpoint, dict) or "polydiff" not in checkpoint:
        raise CheckpointError(
            f"{path} is not a polydiff checkpoint (it has no 'polydiff' entry); checkpoints are "
            "written by training a polydiff.module.DiffusionModule with a Lightning Trainer"
        )
    meta = checkpoint["polydiff"]
    if not isinstance(meta, dict) or meta.get("format") != 1:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(
            f"{path} has a polydiff record of format {found!r}, which this polydiff does not read "
            "(it reads format 1); upgrade polydiff"
        )
    if plugin is not None and meta.get("plugin") != plugin:
        owner = meta.get("plugin")
        what = f"plugin {owner!r}" if owner is not None else "the polydiff core (no plugin)"
        raise CheckpointError(f"{path} is a checkpoint of {what}, not {plugin!r}")
    return checkpoint


def allowed_class_prefixes(plugin: str | None, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """Module prefixes a checkpoint's config may import classes from.

    The core and ``torch.nn``/``torch.optim``; for a plugin, ``polydiff_<plugin>`` and the
    top-level package of its ``polydiff.plugins`` entry point (read from the package metadata,
    without importing it); then ``extra``.
    """
    prefixes = list(_ALWAYS_ALLOWED)
    if plugin:
        prefixes.append(f"polydiff_{plugin}.")
        package = _entry_point_package(plugin)
        if package:
            prefixes.append(f"{package}.")
    for prefix in extra:
        prefix = prefix.strip()
        if prefix:
            prefixes.append(prefix if prefix.endswith(".") else f"{prefix}.")
    return tuple(dict.fromkeys(prefixes))


def load_module(
    path: str | os.PathLike,
    *,
    plugin: str | None = None,
    use_ema: bool = True,
    allowed_prefixes: Iterable[str] = (),
    expect: type | None = None,
    require: Iterable[str] = (),
) -> Any:
    """Rebuild a :class:`~polydiff.module.DiffusionModule` from a checkpoint, in eval mode.

    The module is instantiated from the checkpoint's recorded model config (the
    ``class_path``/``init_args`` the CLI built it from), its ``state_dict`` is loaded strictly,
    and with ``use_ema`` the EMA weights are copied into the denoiser, so ``module.denoiser``
    and ``module.sample`` both use them. The file is read once; the module's
    ``on_load_checkpoint`` hook then sees the whole checkpoint, as under Lightning, so a plugin's
    own records (a data description, normalisers) reach the module.

    Args:
        path: the ``.ckpt`` file.
        plugin: the plugin the checkpoint must belong to (``None`` accepts any).
        use_ema: copy the EMA weights into the denoiser (when the EMA has been updated).
        allowed_prefixes: further module prefixes whose classes the config may name.
        expect: the module class (or a base of it) the checkpoint must hold.
        require: top-level entries the checkpoint must carry, each a mapping (a plugin's own
            records, e.g. its data description).

    Raises:
        CheckpointError: for everything :func:`load_checkpoint` rejects, a checkpoint saved
            without a model config, a class outside the allowed modules or other than
            ``expect``, a missing ``require`` entry, or a config or ``state_dict`` that does not
            fit.
    """
    from polydiff.module import DiffusionModule

    path = Path(path)
    checkpoint = load_checkpoint(path, plugin=plugin)
    for key in require:
        if not isinstance(checkpoint.get(key), dict):
            owner = f"the {plugin} plugin's" if plugin else "the expected"
            raise CheckpointError(f"{path} has no {key!r} record, so it was not written by {owner} training")
    meta = checkpoint["polydiff"]
    config = meta.get("model_config")
    if config is None:
        raise CheckpointError(
            f"{path} records no model config (it was saved outside the polydiff CLI); build the "
            "module in Python as it was built for training and call "
            "module.load_state_dict(polydiff.checkpoint.load_checkpoint(path)['state_dict'])"
        )
    module_class = meta.get("module_class") or "polydiff.module.DiffusionModule"
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: the recorded model config is a {type(config).__name__}, not a mapping")
    if "class_path" not in config:
        config = {"class_path": module_class, "init_args": config}
    allowed = allowed_class_prefixes(meta.get("plugin"), allowed_prefixes)
    _check_class_paths(path, config, allowed)
    _check_class_paths(path, {"class_path": module_class}, allowed)
    cls = _import_class(path, module_class)
    if not (isinstance(cls, type) and issubclass(cls, DiffusionModule)):
        raise CheckpointError(f"{path}: module class {module_class} is not a polydiff DiffusionModule")
    if expect is not None and not issubclass(cls, expect):
        raise CheckpointError(f"{path} holds a {cls.__name__}, not a {expect.__name__}")

    module = _instantiate(path, cls, config, allowed)
    try:
        module.load_state_dict(checkpoint["state_dict"], strict=True)
    except (KeyError, RuntimeError) as err:
        raise CheckpointError(f"{path}: the weights do not fit the rebuilt module: {_first_line(err)}") from None
    module.on_load_checkpoint(checkpoint)
    if use_ema and int(module.ema.num_updates) > 0:
        module.ema.copy_to(module.denoiser)
    module.plugin_name = meta.get("plugin")
    module.polydiff_config = config
    return module.eval()


def _instantiate(path: Path, cls: type, config: dict[str, Any], allowed: tuple[str, ...]) -> Any:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--model", type=cls)
    try:
        parsed = parser.parse_object({"model": config})
    except Exception as err:  # jsonargparse reports bad configs with several exception types
        raise CheckpointError(f"{path}: the recorded model config is not valid: {_first_line(err)}") from None
    # Parsing normalises shorthand (a bare class name where a class is expected) into
    # class_path entries, so check again before anything is instantiated.
    _check_class_paths(path, parsed.as_dict(), allowed)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    try:
        return instantiate(parsed).model
    except Exception as err:
        raise CheckpointError(f"{path}: rebuilding the module from its config failed: {_first_line(err)}") from err


def _walk_class_paths(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "class_path":
                yield item
            else:
                yield from _walk_class_paths(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _walk_class_paths(item)


def _check_class_paths(path: Path, config: Any, allowed: tuple[str, ...]) -> None:
    for class_path in _walk_class_paths(config):
        if not isinstance(class_path, str) or not class_path.startswith(allowed):
            raise CheckpointError(
                f"{path} names the class {class_path!r}, which is outside the modules polydiff "
                f"imports from a checkpoint ({', '.join(p.rstrip('.') for p in allowed)}); if you "
                "trust it, pass allowed_prefixes"
            )


def _import_class(path: Path, dotted: str) -> Any:
    module_name, _, name = dotted.rpartition(".")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError:
        # A nested class: import the longest importable prefix and walk attributes.
        parts = dotted.split(".")
        for i in range(len(parts) - 1, 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            try:
                for attr in parts[i:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                break
            return obj
        raise CheckpointError(f"{path}: cannot import the module class {dotted}") from None
    try:
        return getattr(obj, name)
    except AttributeError:
        raise CheckpointError(f"{path}: cannot import the module class {dotted}") from None


def _entry_point_package(plugin: str) -> str | None:
    from importlib.metadata import entry_points

    try:
        found = entry_points(group="polydiff.plugins", name=plugin)
    except Exception:  # broken metadata of some other distribution must not block loading
        return None
    for entry in found:
        return entry.value.split(":")[0].split(".")[0].strip()
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]
