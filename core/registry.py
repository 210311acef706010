"""Plugin discovery through the ``polydiff.plugins`` entry-point group.

Discovery reads installed distributions' metadata and records each plugin as a name and a dotted
path, importing nothing. A plugin's entry-point object (its :class:`~polydiff.plugin.Plugin`,
defined in a light module) is loaded on first use, each inside its own guard: a failure is kept
as a value on the plugin's :class:`PluginRecord` and raised as :class:`PluginError` only when that
plugin is asked for, so one broken plugin never stops the others (unlike an eager loader where
one bad import stops start-up).

Tests build an isolated registry from an explicit list of entry points::

    from importlib.metadata import EntryPoint
    registry = Registry([EntryPoint("fake", "my_pkg:plugin", ENTRY_POINT_GROUP)])

This module imports only the standard library.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from polydiff.plugin import Plugin

__all__ = ["ENTRY_POINT_GROUP", "PluginError", "PluginRecord", "Registry", "Status"]

ENTRY_POINT_GROUP = "polydiff.plugins"

Status = Literal["not loaded", "ok", "missing extra", "error", "duplicate"]


class PluginError(RuntimeError):
    """A plugin that is unknown, failed to load, is registered twice or lacks its extra.

    Attributes:
        name: the plugin name asked for.
    """

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


@dataclass
class PluginRecord:
    """What the registry knows about one plugin name.

    Attributes:
        name: the entry-point name (the word after ``polydiff``).
        value: the entry point's dotted path, e.g. ``"polydiff_audio:plugin"``.
        distribution: the distribution that registered it (``None`` when unknown). For a
            duplicate name, every distribution involved, comma-separated.
        status: ``"not loaded"`` until :meth:`Registry.load` ran for it; then ``"ok"``,
            ``"missing extra"`` (loaded, but ``requires`` are not installed), ``"error"``
            (loading failed) or ``"duplicate"`` (registered by several distributions).
        error: what went wrong, with the fix where one is known; ``None`` when fine.
        plugin: the loaded plugin object (``None`` until loaded, or on failure).
    """

    name: str
    value: str
    distribution: str | None = None
    status: Status = "not loaded"
    error: str | None = None
    plugin: Plugin | None = None
    _exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def description(self) -> str:
        return self.plugin.description if self.plugin is not None else ""

    @property
    def extra(self) -> str | None:
        return self.plugin.extra if self.plugin is not None else None


def _distribution_name(ep: importlib.metadata.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None
    try:
        return dist.name
    except Exception:  # unreadable metadata must not break discovery
        return None


class Registry:
    """The plugins found through entry points, loaded lazily.

    Args:
        entry_points: the entry points to use instead of those of the installed distributions
            (isolated registries for tests). Entry points of other groups are ignored.
    """

    def __init__(self, entry_points: Iterable[importlib.metadata.EntryPoint] | None = None):
        self._explicit = None if entry_points is None else list(entry_points)
        self._records: dict[str, PluginRecord] | None = None

    def discover(self) -> Registry:
        """(Re)read the entry points; imports no plugin code. Returns ``self``."""
        if self._explicit is None:
            found = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
        else:
            found = [ep for ep in self._explicit if ep.group == ENTRY_POINT_GROUP]
        by_name: dict[str, list[tuple[str, str | None]]] = {}
        for ep in found:
            source = (ep.value, _distribution_name(ep))
            entries = by_name.setdefault(ep.name, [])
            # One distribution seen through two sys.path entries is one plugin, not a duplicate.
            if source not in entries:
                entries.append(source)
        records: dict[str, PluginRecord] = {}
        for name in sorted(by_name):
            entries = by_name[name]
            if len(entries) == 1:
                value, dist = entries[0]
                records[name] = PluginRecord(name=name, value=value, distribution=dist)
                continue
            sources = [f"{value} (from {dist or 'an unknown distribution'})" for value, dist in entries]
            dists = sorted({dist or "?" for _, dist in entries})
            records[name] = PluginRecord(
                name=name,
                value=", ".join(value for value, _ in entries),
                distribution=", ".join(dists),
                status="duplicate",
                error=(
                    f"plugin name {name!r} is registered {len(entries)} times: {'; '.join(sources)}; "
                    "uninstall all but one of these distributions"
                ),
            )
        self._records = records
        return self

    def _all(self) -> dict[str, PluginRecord]:
        if self._records is None:
            self.discover()
        assert self._records is not None
        return self._records

    def names(self) -> list[str]:
        """All registered plugin names, sorted, whatever their status."""
        return list(self._all())

    def __contains__(self, name: object) -> bool:
        return name in self._all()

    def record(self, name: str) -> PluginRecord:
        """The record of one plugin, not loaded.

        Raises:
            PluginError: unknown name; the message lists the valid names.
        """
        records = self._all()
        if name not in records:
            valid = ", ".join(records) if records else "none installed"
            raise PluginError(name, f"unknown plugin {name!r}; installed plugins: {valid}")
        return records[name]

    def load(self, name: str) -> PluginRecord:
        """Load one plugin's entry-point object (once) and check its requirements.

        Never raises for a broken plugin: the outcome is the returned record's status.

        Raises:
            PluginError: unknown name.
        """
        record = self.record(name)
        if record.status != "not loaded":
            return record
        try:
            obj = importlib.metadata.EntryPoint(name, record.value, ENTRY_POINT_GROUP).load()
            if not isinstance(obj, Plugin):
                raise TypeError(f"{record.value} is a {type(obj).__name__}, not a polydiff.plugin.Plugin")
            if obj.name != name:
                raise ValueError(f"{record.value} is named {obj.name!r} but registered as {name!r}")
        except Exception as exc:  # any failure is this plugin's, never the registry's
            record.status = "error"
            record.error = f"{type(exc).__name__}: {exc}"
            record._exception = exc
            return record
        record.plugin = obj
        missing = obj.missing_requirements()
        if missing:
            record.status = "missing extra"
            record.error = f"missing {', '.join(missing)}: {obj.install_hint}"
        else:
            record.status = "ok"
        return record

    def records(self, load: bool = True) -> list[PluginRecord]:
        """Every plugin's record, sorted by name; loads each (guarded) unless ``load`` is False."""
        return [self.load(name) if load else self.record(name) for name in self.names()]

    def get(self, name: str, *, check_requires: bool = True) -> Plugin:
        """The plugin called ``name``, loading it if needed.

        Args:
            name: the plugin name.
            check_requires: raise when the plugin's heavy dependencies are not installed.

        Raises:
            PluginError: naming the plugin and the problem: unknown name (with the valid names),
                a failed import (the original exception is ``__cause__``), a duplicate
                registration, or a missing extra (with the ``pip install`` that fixes it).
        """
        record = self.load(name)
        if record.status == "ok" or (record.status == "missing extra" and not check_requires):
            assert record.plugin is not None
            return record.plugin
        if record.status == "missing extra":
            raise PluginError(name, f"plugin {name!r} needs packages that are not installed: {record.error}")
        if record.status == "duplicate":
            raise PluginError(name, record.error or f"plugin {name!r} is registered more than once")
        raise PluginError(
            name, f"plugin {name!r} ({record.value}) failed to load: {record.error}"
        ) from record._exception
