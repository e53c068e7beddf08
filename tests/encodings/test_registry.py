"""The encodings' registry: every built-in encoding follows the protocol and names its genomes."""

from __future__ import annotations

import numpy as np
import pytest

from fooling.encodings import ENCODINGS, GENOME_CLASSES, CPPNGenomes, DirectGenomes, Encoding

SETTINGS = dict(
    mutation_probability=0.1,
    mutation_eta=15.0,
    halve_mutation_every=0,
    crossover_eta=10.0,
    color_space="rgb",
    coordinates="unit",
    split_weight="one",
    max_nodes=48,
    max_edges=160,
)


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_built_in_encodings_follow_the_protocol(name):
    spec = ENCODINGS[name]
    assert spec.name == name and "rgb" in spec.color_spaces
    encoding = spec.build(SETTINGS, 3, (8, 8))
    assert isinstance(encoding, Encoding) and isinstance(encoding, spec.encoding_class)
    genomes = encoding.random(4, np.random.default_rng(0))
    assert type(genomes) is spec.genome_class
    encoding.validate(encoding.mutate(genomes, np.random.default_rng(1)))
    assert tuple(encoding.render(genomes).shape) == (4, 3, 8, 8)


def test_genome_classes_are_the_registered_ones():
    assert dict(GENOME_CLASSES) == {"DirectGenomes": DirectGenomes, "CPPNGenomes": CPPNGenomes}


def test_the_cppn_default_colour_space_still_means_hsv():
    # Old checkpoints store color_space "rgb" for CPPN runs scored with HSV outputs.
    assert ENCODINGS["cppn"].build(SETTINGS, 3, (8, 8)).color_space == "hsv"
    hsv = ENCODINGS["direct"].build({**SETTINGS, "color_space": "hsv"}, 3, (8, 8))
    assert hsv.color_space == "hsv"
