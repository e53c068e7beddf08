"""Failures that are the user's, not ours, each one line and exit 2 from the command line.

A model file that raises or gives NaN part-way through a search, a checkpoint whose stored
config is out of range, a preset whose settings clash with the flags given. The models are
tiny networks built and saved inside the tests; their forward passes count their calls in a
buffer, so they fail at a known generation (one scoring call per generation here: 8
children in one batch).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from small_setups import LABELS, RefusesBrightImages, tiny
from torch import nn

from fooling.evo.cli import main
from fooling.evo.run import GENOME_CLASSES
from fooling.evo.store.checkpoint import (
    METADATA_CHECKSUM_KEY,
    METADATA_KEY,
    checkpoint_uris,
    read_latest_checkpoint,
)

SIZE = 16


class GivesUp(nn.Module):
    """``tiny(0)`` that raises from its ``limit + 1``-th forward pass on."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.net = tiny(0)
        self.limit = limit
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if bool(self.calls > self.limit):
            raise RuntimeError("the network gave up")
        return self.net(images)


class ExportedGivesUp(GivesUp):
    """The same, in a form torch.export records: a runtime assertion instead of an ``if``."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        torch._assert_async(self.calls <= self.limit, "the network gave up")
        return self.net(images)


class GoesNaN(GivesUp):
    """``tiny(0)`` whose logits are NaN from its ``limit + 1``-th forward pass on."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        logits = self.net(images)
        if bool(self.calls > self.limit):
            return logits * float("nan")
        return logits


def saved(folder: Path, module: nn.Module, kind: str) -> str:
    """``module`` saved as TorchScript (``pt``) or torch.export (``pt2``): its ``--model`` reference."""
    path = folder / f"net.{kind}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        if kind == "pt":
            torch.jit.save(torch.jit.script(module.eval()), str(path))
        else:
            example = torch.zeros(2, 3, SIZE, SIZE)
            batch = torch.export.Dim("batch")
            program = torch.export.export(module.eval(), (example,), dynamic_shapes=({0: batch},))
            torch.export.save(program, str(path))
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return f"{path}?labels={folder / 'labels.txt'}&input-size={SIZE},{SIZE}"


def evolve_args(model: str, out: Path, *extra: str) -> list[str]:
    return ["evolve", "--model", model, "--engine", "torch", "--population", "8", "--checkpoint-every", "1",
            "--out", str(out), "--no-progress", "--no-report", *extra]  # fmt: skip


def one_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(autouse=True)
def private_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FOOLING_HOME", str(tmp_path / "home"))


@pytest.mark.parametrize(("kind", "module"), [("pt", GivesUp(3)), ("pt2", ExportedGivesUp(3))])
def test_a_model_that_raises_part_way_is_one_line_naming_it_and_the_generation(
    tmp_path, capsys, kind, module
):
    model, out = saved(tmp_path, module, kind), tmp_path / "run"
    assert main(evolve_args(model, out, "--generations", "6")) == 2
    line = one_line(capsys)
    assert line.startswith("fooling: error: generation 3: model net.") and "the network gave up" in line
    assert f"generation 2 is the last one saved in {out}" in line
    # The checkpoints are intact: the run resumes after generation 2 (the file, loaded afresh,
    # counts from 0 again: 3 more calls are generations 3 to 5).
    assert read_latest_checkpoint(str(out), GENOME_CLASSES).generation == 2
    assert main(["evolve", "--resume", str(out), "--no-progress", "--no-report"]) == 0
    assert read_latest_checkpoint(str(out), GENOME_CLASSES).generation == 5


def test_a_model_raising_at_once_leaves_nothing(tmp_path, capsys):
    model, out = saved(tmp_path, RefusesBrightImages(), "pt"), tmp_path / "run"
    assert main(evolve_args(model, out, "--generations", "3")) == 2
    line = one_line(capsys)
    assert "generation 0: model net.pt raised" in line and "no generation was saved" in line
    assert not out.exists()


def test_a_run_failing_before_its_first_checkpoint_leaves_its_folder_able_to_take_it_again(tmp_path, capsys):
    """The ledger (--max-queries) and the run's record are written first; they go with the run."""
    out = tmp_path / "run"
    out.mkdir()
    (tmp_path / "failing").mkdir()
    (tmp_path / "working").mkdir()
    failing = saved(tmp_path / "failing", RefusesBrightImages(), "pt")
    assert main(evolve_args(failing, out, "--generations", "3", "--max-queries", "1000")) == 2
    assert "no generation was saved" in one_line(capsys)
    assert list(out.iterdir()) == []  # before: "already holds a run" to --out, "no run there" to --resume
    working = saved(tmp_path / "working", GivesUp(100), "pt")
    assert main(evolve_args(working, out, "--generations", "3", "--max-queries", "1000")) == 0
    assert read_latest_checkpoint(str(out), GENOME_CLASSES).queries == 24


def test_a_query_budget_below_the_first_generation_is_refused_before_any_work(tmp_path, capsys):
    model, out = saved(tmp_path, GivesUp(100), "pt"), tmp_path / "run"
    assert main(evolve_args(model, out, "--generations", "3", "--max-queries", "7")) == 2
    assert (
        one_line(capsys)
        == "fooling: error: --max-queries 7 is below the 8 images generation 0 sends; give at least 8"
    )
    assert not out.exists()


def test_nan_scores_name_the_model_and_the_generation(tmp_path, capsys):
    model, out = saved(tmp_path, GoesNaN(2), "pt"), tmp_path / "run"
    assert main(evolve_args(model, out, "--generations", "6")) == 2
    line = one_line(capsys)
    assert line == (
        "fooling: error: generation 2: model net.pt gave non-finite scores (NaN or infinity) for 8 of 8 "
        f"images; generation 1 is the last one saved in {out}"
    )
    assert read_latest_checkpoint(str(out), GENOME_CLASSES).generation == 1


def reseal_config(path: str, **changes) -> None:
    """Rewrite the run config stored in checkpoint ``path``, with a valid checksum (crafted, not rotten)."""
    table = pq.read_table(path)
    metadata = json.loads(table.schema.metadata[METADATA_KEY])
    metadata["config"].update(changes)
    text = json.dumps(metadata).encode()
    checksum = hashlib.sha256(text).hexdigest().encode()
    table = table.replace_schema_metadata({METADATA_KEY: text, METADATA_CHECKSUM_KEY: checksum})
    pq.write_table(table, path, write_page_checksum=True)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"population": 10**12}, "--population must be in [1, 1,000,000], not 1,000,000,000,000"),
        ({"batch_size": 10**15}, "--batch-size must be in [0, 1,000,000]"),
        ({"max_edges": 2**40}, "--max-edges must be in [1, 1,048,576]"),
        ({"workers": 10**9}, "--workers must be in [0, 4,096]"),
        ({"generations": "many"}, "--generations must be an integer, not 'many'"),
        ({"population": 12.5}, "--population must be an integer, not 12.5"),
        ({"mutation_eta": None}, "--mutation-eta must be a number, not None"),
        ({"classes": [1, 2]}, "--classes must be a list of class names"),
        ({"device": ["cpu"]}, "--device must be text"),
    ],
)
def test_a_checkpoint_config_out_of_range_is_one_line_before_allocating(tmp_path, capsys, changes, message):
    model, out = saved(tmp_path, tiny(0), "pt"), tmp_path / "run"
    assert main(evolve_args(model, out, "--generations", "2")) == 0
    capsys.readouterr()
    for uri in checkpoint_uris(str(out)):
        reseal_config(uri, **changes)
    assert main(["evolve", "--resume", str(out), "--generations", "4", "--no-progress"]) == 2
    line = one_line(capsys)
    assert line.startswith("fooling: error: no readable checkpoint in") and message in line, line


def test_a_preset_value_that_clashes_is_named_as_the_presets(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["evolve", "--preset", "paper", "--encoding", "direct", "--out", str(out), "--no-progress"])
    assert code == 2
    assert one_line(capsys) == (
        "fooling: error: --preset paper sets --color-space hls-opencv, and --color-space hls-opencv is for "
        "--encoding cppn; --encoding direct takes rgb or hsv: give --color-space yourself to override the "
        "preset's, or leave out --encoding direct"
    )
    assert not out.exists()
