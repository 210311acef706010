"""Fixtures shared by the core and plugin tests: isolated plugin registries and fake installs.

A plugin is "installed" here the way pip would leave it, minus pip: a package folder and a
``*.dist-info`` folder (METADATA + entry_points.txt) side by side in a temporary directory that
is put on ``sys.path``. ``importlib.metadata`` then finds its entry points like any other.
"""

from __future__ import annotations

import importlib
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from polydiff.registry import ENTRY_POINT_GROUP, Registry

FAKE_PLUGIN_SRC = Path(__file__).parent / "fake_plugin" / "src" / "polydiff_fakewave"


def write_distribution(
    site: Path,
    name: str,
    plugins: Mapping[str, str],
    modules: Mapping[str, str] | None = None,
    version: str = "0.1.0",
) -> Path:
    """Write an installed distribution into ``site`` (no pip).

    Args:
        site: the folder that will be on ``sys.path``.
        name: the distribution name (as in METADATA).
        plugins: entry-point name to value for the ``polydiff.plugins`` group.
        modules: module file name (``"pkg.py"`` or ``"pkg/__init__.py"``) to source.
        version: the distribution version.

    Returns:
        The ``*.dist-info`` folder.
    """
    site.mkdir(parents=True, exist_ok=True)
    for filename, source in (modules or {}).items():
        path = site / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    info = site / f"{re.sub(r'[-_.]+', '_', name)}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = [f"[{ENTRY_POINT_GROUP}]", *(f"{key} = {value}" for key, value in plugins.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return info


def _forget_modules(prefixes: tuple[str, ...]) -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in prefixes:
            del sys.modules[name]


@pytest.fixture(scope="session")
def fake_plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the fake third-party plugin ``fakewave`` as if pip had installed it."""
    site = tmp_path_factory.mktemp("fake_site")
    shutil.copytree(FAKE_PLUGIN_SRC, site / "polydiff_fakewave", ignore=shutil.ignore_patterns("__pycache__"))
    write_distribution(site, "polydiff-fakewave", {"fakewave": "polydiff_fakewave:plugin"})
    return site


@pytest.fixture
def fakewave(fake_plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The fake plugin installed (its site on ``sys.path``) for one test; yields the site folder."""
    monkeypatch.syspath_prepend(str(fake_plugin_site))  # also invalidates importlib's caches
    yield fake_plugin_site
    _forget_modules(("polydiff_fakewave",))
    importlib.invalidate_caches()


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Path]]:
    """Install extra fake distributions for one test: ``plugin_site(name, plugins, modules)``.

    All of them share one folder on ``sys.path``; their modules are forgotten afterwards.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    written: list[str] = []

    def install(name: str, plugins: Mapping[str, str], modules: Mapping[str, str] | None = None) -> Path:
        written.extend(Path(f).parts[0].removesuffix(".py") for f in (modules or {}))
        info = write_distribution(site, name, plugins, modules)
        importlib.invalidate_caches()
        return info

    yield install
    _forget_modules(tuple(written))
    importlib.invalidate_caches()


@pytest.fixture
def isolated_registry() -> Callable[..., Registry]:
    """Build a registry from explicit entry points: ``isolated_registry(name="pkg:plugin", ...)``.

    Nothing installed in the environment is seen, so tests do not depend on which plugins are
    installed.
    """

    def make(**plugins: str) -> Registry:
        return Registry([EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in plugins.items()])

    return make


def pytest_configure(config: pytest.Config) -> None:
    # The tests run many small tensor operations, which one thread does fastest; on a busy
    # two-core machine extra threads only contend.
    import torch

    torch.set_num_threads(1)
