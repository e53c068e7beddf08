"""The encodings' registry: every built-in encoding follows the protocol and names its genomes."""

from __future__ import annotations

import numpy as np
import pytest

from fooling.encodings import (
    ENCODINGS,
    GENOME_CLASSES,
    CPPNEncoding,
    CPPNGenomes,
    DirectGenomes,
    Encoding,
    EncodingSpec,
    color_space_help,
)

SETTINGS = dict(
    mutation_probability=0.1,
    mutation_eta=15.0,
    halve_mutation_every=0,
    crossover_eta=10.0,
    color_space=None,  # each encoding's default
    coordinates="unit",
    split_weight="one",
    max_nodes=48,
    max_edges=160,
)


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_built_in_encodings_follow_the_protocol(name):
    spec = ENCODINGS[name]
    assert spec.name == name and spec.default_color_space == spec.color_spaces[0]
    encoding = spec.build(SETTINGS, 3, (8, 8))
    assert isinstance(encoding, Encoding) and isinstance(encoding, spec.encoding_class)
    genomes = encoding.random(4, np.random.default_rng(0))
    assert type(genomes) is spec.genome_class
    encoding.validate(encoding.mutate(genomes, np.random.default_rng(1)))
    assert tuple(encoding.render(genomes).shape) == (4, 3, 8, 8)


def test_genome_classes_are_the_registered_ones():
    assert dict(GENOME_CLASSES) == {"DirectGenomes": DirectGenomes, "CPPNGenomes": CPPNGenomes}


def test_each_encoding_names_its_own_colour_spaces_and_default():
    assert ENCODINGS["direct"].color_spaces == ("rgb", "hsv")
    assert ENCODINGS["cppn"].color_spaces == ("hsv", "hls", "hls-opencv")
    assert ENCODINGS["direct"].build(SETTINGS, 3, (8, 8)).color_space == "rgb"
    assert ENCODINGS["cppn"].build(SETTINGS, 3, (8, 8)).color_space == "hsv"
    for spec in ENCODINGS.values():
        for space in spec.color_spaces:
            assert spec.build({**SETTINGS, "color_space": space}, 3, (8, 8)).color_space == space
    # "rgb" is one rendering, RGB genes: the CPPN builder does not take it (old CPPN runs'
    # "rgb", which meant HSV outputs, is mapped when their config is read).
    assert ENCODINGS["cppn"].renamed_color_spaces == {"rgb": "hsv"}
    with pytest.raises(ValueError, match="'rgb' is not one of"):
        ENCODINGS["cppn"].build({**SETTINGS, "color_space": "rgb"}, 3, (8, 8))
    assert color_space_help().endswith("direct: rgb, hsv | cppn: hsv, hls, hls-opencv")


def test_a_spec_checks_its_colour_spaces():
    def build(settings, channels, size):
        raise AssertionError("not built")

    spec = EncodingSpec("grey", "one", CPPNEncoding, build)
    assert (spec.color_spaces, spec.default_color_space) == (("rgb",), "rgb")
    assert EncodingSpec("two", "two", CPPNEncoding, build, ("a", "b"), "b").default_color_space == "b"
    for wrong in (
        dict(color_spaces=()),
        dict(default_color_space="c"),
        dict(renamed_color_spaces={"a": "b"}),  # "a" is still a choice
        dict(renamed_color_spaces={"old": "c"}),  # "c" is none
    ):
        with pytest.raises(ValueError):
            EncodingSpec("bad", "bad", CPPNEncoding, build, **{"color_spaces": ("a", "b"), **wrong})


class _Recording(dict):
    """Run settings that remember which of them were read."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_built_in_encodings_declare_exactly_the_settings_they_read(name):
    settings = _Recording({**SETTINGS, "init": "paper", "model": "m", "population": 8})
    ENCODINGS[name].build(settings, 3, (8, 8))
    assert set(ENCODINGS[name].settings) == settings.read


def test_settings_are_field_names_or_none():
    def build(settings, channels, size):
        raise AssertionError("not built")

    assert EncodingSpec("plugin", "p", CPPNEncoding, build).settings is None  # declares nothing: reads all
    assert EncodingSpec("plugin", "p", CPPNEncoding, build, settings=["max_nodes"]).settings == ("max_nodes",)
    for wrong in ("max_nodes", (1,)):
        with pytest.raises(ValueError, match="settings must be a tuple of field names"):
            EncodingSpec("bad", "bad", CPPNEncoding, build, settings=wrong)
