"""The one plugin loader: every failure is one line naming the plugin, its entry point and the fault."""

from __future__ import annotations

import pytest
from plugin_packages import installed_package

from fooling.encodings import EncodingSpec, PluginError, UserError, registered_encodings
from fooling.encodings.plugins import entry_points, instance, load_entry_point, load_entry_points

GROUP = "fooling.test_plugins"
SOURCE = """
class Thing:
    name = "thing"


class Misnamed:
    name = "other"


class Exploding:
    def __init__(self):
        raise RuntimeError("the plugin's own error\\nand a second line")


THING = Thing()
NUMBER = 3
"""
POINTS = f"""[{GROUP}]
thing = fake_plugins:Thing
misnamed = fake_plugins:Misnamed
exploding = fake_plugins:Exploding
number = fake_plugins:NUMBER
missing = fake_plugins_absent:Thing
"""


class Thing:  # what the group takes (the plugin's own Thing is another class)
    name = "thing"


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    with installed_package(tmp_path / "site", monkeypatch, "fake_plugins", SOURCE, POINTS):
        import fake_plugins

        yield fake_plugins


def load(name: str, **options):
    options = {"make": instance, **options}
    return load_entry_point(entry_points(GROUP)[name], "thing", options.pop("expected", object), **options)


def test_a_plugin_loads_and_is_made(plugins):
    assert isinstance(load("thing", expected=plugins.Thing), plugins.Thing)
    assert load("thing", make=None) is plugins.Thing  # without make: the object itself


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("missing", {}, "thing plugin 'missing' (fake_plugins_absent:Thing) failed: ModuleNotFoundError: "),
        ("exploding", {"named": False}, "thing plugin 'exploding' (fake_plugins:Exploding) failed: "
         "RuntimeError: the plugin's own error"),
        ("number", {"expected": Thing}, "thing plugin 'number' (fake_plugins:NUMBER) is int, not a Thing"),
        ("number", {"expected": EncodingSpec}, "is int, not an EncodingSpec"),
        ("misnamed", {}, "thing plugin 'misnamed' (fake_plugins:Misnamed) calls itself 'other'; "
         "name its entry point so"),
    ],
)  # fmt: skip
def test_every_failure_is_one_user_error_line(plugins, name, options, message):
    with pytest.raises(PluginError) as caught:
        load(name, **options)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert isinstance(caught.value, UserError)


def test_the_extension_points_error_class_is_raised(plugins):
    class OwnError(UserError):
        pass

    with pytest.raises(OwnError, match="calls itself 'other'"):
        load("misnamed", error=OwnError)


def test_all_of_a_group_but_the_skipped(plugins):
    skip = ("misnamed", "exploding", "missing")
    found = load_entry_points(GROUP, "thing", object, make=instance, named=False, skip=skip)
    assert list(found) == ["thing", "number"] and found["number"] == 3
    with pytest.raises(PluginError, match="^thing plugin 'number' .* calls itself None"):
        load_entry_points(GROUP, "thing", object, make=instance, skip=skip)


def test_a_broken_encoding_plugin_is_one_line(tmp_path, monkeypatch):
    points = "[fooling.encodings]\ncube = fake_encoding:CUBE\ndirect = fake_encoding:NOTHING\n"
    site = tmp_path / "site"
    with (
        installed_package(site, monkeypatch, "fake_encoding", "CUBE = 3\n", points),
        pytest.raises(PluginError) as caught,
    ):
        registered_encodings()  # the built-in "direct" is not replaced (nor loaded)
    assert str(caught.value) == "encoding plugin 'cube' (fake_encoding:CUBE) is int, not an EncodingSpec"
