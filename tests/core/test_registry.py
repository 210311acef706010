"""Plugin objects, dotted-path resolution and entry-point discovery."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint

import pytest

from polydiff.plugin import Plugin, ResolveError, resolve
from polydiff.registry import ENTRY_POINT_GROUP, PluginError, Registry

BROKEN_MODULE = 'raise ImportError("libfoo is not installed")\n'

NEEDS_EXTRA_MODULE = """\
from polydiff.plugin import Plugin

plugin = Plugin(
    name="needy",
    description="Needs a package that is not installed.",
    extra="audio",
    requires=("polydiff_surely_missing_dependency",),
    datamodule_class="polydiff_needy.data.DataModule",
)
"""


def _plugin_module(name: str, package: str) -> str:
    return (
        "from polydiff.plugin import Plugin\n"
        f"plugin = Plugin(name={name!r}, description='x', datamodule_class='{package}.data.D')\n"
    )


# --- Plugin -------------------------------------------------------------------------------------
def test_plugin_defaults_and_immutability():
    commands = {"go": "os:getcwd"}
    plugin = Plugin(name="demo", description="d", datamodule_class="a.B", requires=["json"], commands=commands)
    commands["later"] = "os:getpid"  # the caller's dict must not leak into the frozen plugin
    assert plugin.model_class == "polydiff.module.DiffusionModule"
    assert plugin.requires == ("json",)
    assert dict(plugin.commands) == {"go": "os:getcwd"}
    with pytest.raises(AttributeError):
        plugin.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        plugin.commands["x"] = "y"  # type: ignore[index]


def test_plugin_name_may_start_with_a_digit():
    assert Plugin(name="3d", description="d", datamodule_class="a.B").name == "3d"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "Bad Name"}, "not valid"),
        ({"name": "42"}, "not valid"),
        ({"name": "-x"}, "not valid"),
        ({"name": "list"}, "reserved"),
        ({"requires": ("torch.nn",)}, "top-level import name"),
        ({"commands": {"fit": "a:b"}}, "clash"),
        ({"description": "two\nlines"}, "one line"),
    ],
)
def test_plugin_rejects_bad_fields(kwargs, message):
    fields = {"name": "demo", "description": "d", "datamodule_class": "a.B", **kwargs}
    with pytest.raises(ValueError, match=message):
        Plugin(**fields)


def test_missing_requirements_found_without_import():
    plugin = Plugin(
        name="demo", description="d", datamodule_class="a.B", extra="audio",
        requires=("json", "polydiff_surely_missing_dependency"),
    )
    assert plugin.missing_requirements() == ("polydiff_surely_missing_dependency",)
    assert plugin.install_hint == 'pip install "polydiff[audio]"'
    third_party = Plugin(name="demo", description="d", datamodule_class="a.B", install="pip install demo-extra")
    assert third_party.install_hint == "pip install demo-extra"


def test_resolve_both_spellings():
    import os.path

    assert resolve("os.path.join") is os.path.join
    assert resolve("os.path:join") is os.path.join
    assert resolve("os.path") is os.path


@pytest.mark.parametrize(
    "dotted, message",
    [
        ("polydiff_no_such_package.mod.Thing", "no module named 'polydiff_no_such_package'"),
        ("os.path.no_such_function", "'os.path' has no attribute 'no_such_function'"),
        ("os:no_such.thing", "'os' has no attribute 'no_such'"),
        ("", "expected a dotted path"),
    ],
)
def test_resolve_errors_name_what_is_missing(dotted, message):
    with pytest.raises(ResolveError, match=message) as info:
        resolve(dotted)
    assert repr(dotted) in str(info.value) or dotted == ""


def test_resolve_reports_errors_raised_inside_a_module(plugin_site):
    plugin_site("explodes", {}, {"polydiff_explodes.py": "raise RuntimeError('boom at import')\n"})
    with pytest.raises(ResolveError, match="importing 'polydiff_explodes' failed: RuntimeError: boom at import"):
        resolve("polydiff_explodes.Thing")


def test_bundled_configs(fakewave):
    import polydiff_fakewave

    plugin = polydiff_fakewave.plugin
    assert plugin.config_names() == ["tiny"]
    assert plugin.config_resource("tiny.yaml").name == "tiny.yaml"
    with pytest.raises(KeyError, match="bundled configs: tiny"):
        plugin.config_resource("huge")


# --- discovery ----------------------------------------------------------------------------------
def test_discovery_imports_no_plugin_code(fakewave):
    registry = Registry()
    assert "fakewave" in registry.names()
    record = registry.record("fakewave")
    assert record.status == "not loaded"
    assert record.value == "polydiff_fakewave:plugin"
    assert record.distribution == "polydiff-fakewave"
    assert "polydiff_fakewave" not in sys.modules


def test_get_loads_the_plugin_lazily(fakewave):
    registry = Registry()
    plugin = registry.get("fakewave")
    assert isinstance(plugin, Plugin) and plugin.name == "fakewave"
    assert registry.record("fakewave").status == "ok"
    # Only the light entry-point module is imported, not the data or network code.
    assert "polydiff_fakewave" in sys.modules
    assert "polydiff_fakewave.data" not in sys.modules
    assert "polydiff_fakewave.nets" not in sys.modules


def test_broken_plugin_is_reported_and_others_still_work(fakewave, plugin_site):
    plugin_site("polydiff-broken", {"broken": "polydiff_broken:plugin"}, {"polydiff_broken.py": BROKEN_MODULE})
    registry = Registry()
    records = {r.name: r for r in registry.records()}
    assert records["broken"].status == "error"
    assert records["broken"].error == "ImportError: libfoo is not installed"
    assert records["fakewave"].status == "ok"
    with pytest.raises(PluginError, match="plugin 'broken' .* failed to load: ImportError: libfoo") as info:
        registry.get("broken")
    assert info.value.name == "broken"
    assert isinstance(info.value.__cause__, ImportError)
    assert registry.get("fakewave").name == "fakewave"


def test_plugin_with_missing_requirements_says_how_to_fix(plugin_site):
    plugin_site("polydiff-needy", {"needy": "polydiff_needy:plugin"}, {"polydiff_needy/__init__.py": NEEDS_EXTRA_MODULE})
    registry = Registry()
    record = registry.load("needy")
    assert record.status == "missing extra"
    assert record.description == "Needs a package that is not installed."
    assert 'pip install "polydiff[audio]"' in record.error
    assert "polydiff_surely_missing_dependency" in record.error
    with pytest.raises(PluginError, match=r'pip install "polydiff\[audio\]"'):
        registry.get("needy")
    assert registry.get("needy", check_requires=False).name == "needy"


def test_duplicate_names_are_an_error_for_that_name_only(fakewave, plugin_site):
    plugin_site(
        "polydiff-imposter",
        {"fakewave": "polydiff_imposter:plugin", "fine": "polydiff_fine:plugin"},
        {"polydiff_imposter.py": _plugin_module("fakewave", "polydiff_imposter"),
         "polydiff_fine.py": _plugin_module("fine", "polydiff_fine")},
    )
    registry = Registry()
    record = registry.load("fakewave")
    assert record.status == "duplicate"
    assert "polydiff-fakewave" in record.error and "polydiff-imposter" in record.error
    with pytest.raises(PluginError, match="registered 2 times"):
        registry.get("fakewave")
    assert registry.get("fine").name == "fine"
    assert "polydiff_imposter" not in sys.modules  # a duplicate is never imported


def test_same_entry_point_seen_twice_is_not_a_duplicate(fakewave):
    ep = EntryPoint("fakewave", "polydiff_fakewave:plugin", ENTRY_POINT_GROUP)
    registry = Registry([ep, ep])
    assert registry.get("fakewave").name == "fakewave"


def test_unknown_plugin_lists_valid_names(isolated_registry):
    registry = isolated_registry(beta="b:plugin", alpha="a:plugin")
    with pytest.raises(PluginError, match="unknown plugin 'gamma'; installed plugins: alpha, beta"):
        registry.get("gamma")
    with pytest.raises(PluginError, match="none installed"):
        isolated_registry().get("gamma")


def test_entry_point_must_be_a_matching_plugin(plugin_site, isolated_registry):
    plugin_site("x", {}, {
        "polydiff_notplugin.py": "plugin = 42\n",
        "polydiff_misnamed.py": _plugin_module("othername", "polydiff_misnamed"),
    })
    registry = isolated_registry(notplugin="polydiff_notplugin:plugin", misnamed="polydiff_misnamed:plugin")
    assert "is a int, not a polydiff.plugin.Plugin" in registry.load("notplugin").error
    assert "named 'othername' but registered as 'misnamed'" in registry.load("misnamed").error


def test_isolated_registry_ignores_installed_plugins_and_other_groups(fakewave):
    registry = Registry([EntryPoint("x", "a:b", "some.other.group")])
    assert registry.names() == []


def test_discover_rereads_the_environment(plugin_site):
    registry = Registry()
    assert "late" not in registry.names()
    plugin_site("polydiff-late", {"late": "polydiff_late:plugin"}, {"polydiff_late.py": _plugin_module("late", "polydiff_late")})
    assert "late" in registry.discover().names()
