"""Registries of the extension points: ``--help`` lists exactly what is registered, and plugins
installed as packages (a ``*.dist-info`` with entry points on ``sys.path``) run and resume."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from fooling.encodings import ENCODING_GROUP, ENCODINGS, GENOME_CLASSES, registered_encodings
from fooling.encodings.plugins import PluginError
from fooling.evo import RunConfig, evolve
from fooling.evo.cli.main import build_parser
from fooling.evo.emitters import EMITTER_GROUP, EMITTERS, get_emitter, registered_emitters
from fooling.evo.run import resume_config


def option_help(capsys, option: str) -> str:
    """The text ``fooling evolve --help`` prints for ``option``, whitespace collapsed."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evolve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    match = re.search(rf"{re.escape(option)} [A-Z_]+ (.*?) (?=--[a-z])", text)
    assert match, text
    return match[1]


def listed_names(help_text: str, prefix: str) -> list[str]:
    """The names of a help text ``prefix: name: summary | name: summary | ... (default: ...)``."""
    assert help_text.startswith(prefix), help_text
    entries = help_text.removeprefix(prefix).rsplit(" (default:", 1)[0].split(" | ")
    return [entry.split(":", 1)[0] for entry in entries]


def install_plugin(root: Path, monkeypatch, *, module: str, source: str, group: str, entries: dict) -> None:
    """Install a one-module package under ``root`` (code and ``dist-info``); put ``root`` on ``sys.path``."""
    root.mkdir(exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{module.replace('_', '-')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {module}:{target}\n" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}")
    monkeypatch.syspath_prepend(str(root))


EMITTER_PLUGIN = """
    import dataclasses
    from typing import ClassVar

    from fooling.evo.emitters import Emitter


    @dataclasses.dataclass(frozen=True)
    class TwiceEmitter(Emitter):
        name: ClassVar[str] = "twice"
        summary: ClassVar[str] = "two rounds of the encoding's mutation per child"

        def vary(self, toolbox, parents, rng, *, generation, crossover_probability=0.0):
            once = super().vary(
                toolbox, parents, rng, generation=generation, crossover_probability=crossover_probability
            )
            return toolbox.mutate(once, rng, generation)
"""


@pytest.fixture
def twice_emitter(tmp_path, monkeypatch):
    install_plugin(
        tmp_path / "site",
        monkeypatch,
        module="twice_emitter",
        source=EMITTER_PLUGIN,
        group=EMITTER_GROUP,
        entries={"twice": "TwiceEmitter"},
    )
    return "twice"


def test_help_lists_exactly_the_registered_emitters(capsys):
    names = listed_names(option_help(capsys, "--emitter"), "how children are made: ")
    assert names == list(registered_emitters()) == list(EMITTERS)


def test_help_lists_a_plugin_emitter(capsys, twice_emitter):
    names = listed_names(option_help(capsys, "--emitter"), "how children are made: ")
    assert names == [*EMITTERS, "twice"]
    assert not get_emitter("TWICE").refines


def test_a_misnamed_emitter_plugin_is_one_line(tmp_path, monkeypatch):
    install_plugin(tmp_path / "site", monkeypatch, module="twice_emitter", source=EMITTER_PLUGIN,
                   group=EMITTER_GROUP, entries={"thrice": "TwiceEmitter"})  # fmt: skip
    with pytest.raises(
        PluginError, match=r"emitter plugin 'thrice' \(twice_emitter:TwiceEmitter\) calls itself"
    ):
        registered_emitters()


def test_plugin_emitter_runs_and_resumes_bit_identically(fooling_home, tmp_path, twice_emitter):
    def run(name: str, generations: int) -> RunConfig:
        return RunConfig(
            model="mnist-lenet",
            encoding="direct",
            emitter="twice",
            population=12,
            batch_size=6,
            generations=generations,
            checkpoint_every=0,
            out=str(tmp_path / name),
        )

    straight = evolve(run("straight", 4), show_progress=False)
    paper = evolve(RunConfig(**{**vars(run("paper", 4)), "emitter": "paper"}), show_progress=False)
    assert not straight.archive.equals(paper.archive)  # the plugin's variation made the children
    evolve(run("split", 2), show_progress=False)
    config = resume_config(str(tmp_path / "split"), generations=4)
    assert config.emitter == "twice"
    resumed = evolve(config, resume=True, show_progress=False)
    assert resumed.archive.equals(straight.archive) and resumed.next_id == straight.next_id


ENCODING_PLUGIN = """
    import dataclasses

    import numpy as np
    import torch
    import torch.nn.functional as F

    from fooling.encodings import EncodingSpec, GenomeBatch, polynomial_mutation


    @dataclasses.dataclass
    class BlockGenomes(GenomeBatch):
        levels: np.ndarray  # (batch_size, channels, 4, 4) float32 in [0, 1]


    class BlockEncoding:
        genome_class = BlockGenomes

        def __init__(self, channels, height, width, probability, eta):
            self.shape = (channels, height, width)
            self.probability, self.eta = probability, eta

        def random(self, count, rng):
            return BlockGenomes(rng.random((count, self.shape[0], 4, 4), dtype=np.float32))

        def mutate(self, genomes, rng, generation=0):
            levels = polynomial_mutation(genomes.levels, rng, probability=self.probability, eta=self.eta)
            return BlockGenomes(levels)

        def render(self, genomes, device="cpu"):
            images = torch.from_numpy(genomes.levels).to(device)
            return F.interpolate(images, size=self.shape[1:], mode="nearest")

        def validate(self, genomes):
            levels = genomes.levels
            if levels.dtype != np.float32 or levels.shape[1:] != (self.shape[0], 4, 4):
                raise ValueError(f"block genomes of shape {levels.shape[1:]}")


    def build(settings, channels, size):
        return BlockEncoding(channels, *size, settings["mutation_probability"], settings["mutation_eta"])


    BLOCKS = EncodingSpec("blocks", "4x4 blocks of gray levels", BlockEncoding, build)
"""


@pytest.fixture
def blocks_encoding(tmp_path, monkeypatch):
    install_plugin(
        tmp_path / "site",
        monkeypatch,
        module="blocks_encoding",
        source=ENCODING_PLUGIN,
        group=ENCODING_GROUP,
        entries={"blocks": "BLOCKS"},
    )
    return "blocks"


def test_help_lists_exactly_the_registered_encodings(capsys):
    names = listed_names(option_help(capsys, "--encoding"), "genome encoding: ")
    assert names == list(registered_encodings()) == list(ENCODINGS) == ["direct", "cppn"]


def test_help_lists_a_plugin_encoding(capsys, blocks_encoding):
    names = listed_names(option_help(capsys, "--encoding"), "genome encoding: ")
    assert names == ["direct", "cppn", "blocks"]
    assert "BlockGenomes" in GENOME_CLASSES


def test_emitters_and_colour_spaces_follow_the_encodings_registry(blocks_encoding):
    with pytest.raises(ValueError, match="it needs --encoding cppn$"):
        RunConfig(encoding="blocks", emitter="finetune")
    with pytest.raises(ValueError, match="--color-space hsv is for --encoding direct or --encoding cppn"):
        RunConfig(encoding="blocks", color_space="hsv")


def test_plugin_encoding_runs_and_resumes_bit_identically(fooling_home, tmp_path, blocks_encoding):
    def run(name: str, generations: int) -> RunConfig:
        return RunConfig(
            model="mnist-lenet",
            encoding="blocks",
            population=12,
            batch_size=6,
            generations=generations,
            checkpoint_every=0,
            out=str(tmp_path / name),
        )

    straight = evolve(run("straight", 4), show_progress=False)
    assert type(straight.archive.genomes).__name__ == "BlockGenomes"
    evolve(run("split", 2), show_progress=False)
    config = resume_config(str(tmp_path / "split"), generations=4)
    assert config.encoding == "blocks"
    resumed = evolve(config, resume=True, show_progress=False)
    assert resumed.archive.equals(straight.archive) and resumed.next_id == straight.next_id
