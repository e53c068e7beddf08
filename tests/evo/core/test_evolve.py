"""End-to-end searches on the trained LeNet: determinism, resume, checkpoints, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fooling.encodings import DirectGenomes
from fooling.evo.cli import main
from fooling.evo.config import RunConfig
from fooling.evo.run import GENOME_CLASSES, evolve, resume_config
from fooling.evo.store.checkpoint import METADATA_KEY, CheckpointError, read_latest_checkpoint
from fooling.evo.store.genomes import genome_columns
from fooling.evo.store.runfolder import RunFolderError

TINY = dict(model="mnist-lenet", population=40, batch_size=20, seed=3)


def run(tmp_path: Path, name: str, **fields) -> RunConfig:
    return RunConfig(**{**TINY, "out": str(tmp_path / name), **fields})


def load(out) -> object:
    return read_latest_checkpoint(str(out), GENOME_CLASSES)


def test_tiny_evolve_on_mnist_writes_checkpoints_stats_and_report(fooling_home, tmp_path, capsys, caplog):
    caplog.set_level("INFO", logger="fooling")
    out = tmp_path / "mnist"
    code = main(
        [
            "evolve",
            "--generations",
            "6",
            "--population",
            "40",
            "--batch-size",
            "20",
            "--checkpoint-every",
            "3",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "LATEST",
        "gen-000002.parquet",
        "gen-000005.parquet",
    ]
    assert (out / "checkpoints" / "LATEST").read_text().strip() == "gen-000005.parquet"
    assert (out / "elites.png").stat().st_size > 1000 and (out / "progress.png").stat().st_size > 1000
    stats = pd.read_parquet(out / "stats.parquet")
    assert stats["gen"].tolist() == list(range(6))
    assert (stats["median"].diff().dropna() >= 0).all()  # elites only ever improve
    assert "median confidence" in capsys.readouterr().out
    # Progress without the bar: a line at each checkpoint, before the run's end.
    assert "generation 2 checkpointed: median " in caplog.text


def test_same_seed_same_archive_other_seed_differs(fooling_home, tmp_path):
    first = evolve(run(tmp_path, "a", generations=5), show_progress=False).archive
    second = evolve(run(tmp_path, "b", generations=5), show_progress=False).archive
    third = evolve(run(tmp_path, "c", generations=5, seed=4), show_progress=False).archive
    assert first.equals(second)
    assert not first.equals(third)


def test_resume_equals_uninterrupted(fooling_home, tmp_path):
    straight = evolve(
        run(tmp_path, "straight", generations=8, crossover_probability=0.5), show_progress=False
    )
    evolve(run(tmp_path, "split", generations=3, crossover_probability=0.5), show_progress=False)
    config = resume_config(str(tmp_path / "split"), generations=8)
    resumed = evolve(config, resume=True, show_progress=False)
    assert resumed.archive.equals(straight.archive)
    assert resumed.next_id == straight.next_id == 8 * 40
    # The checkpoint written at the end holds the same archive, bit for bit.
    assert load(tmp_path / "split").archive.equals(straight.archive)
    stats = pq.read_table(tmp_path / "split" / "stats.parquet").column("gen").to_pylist()
    assert stats == list(range(8))  # no generation re-run or lost on resume


def test_interrupt_checkpoints_last_finished_generation_and_resume_matches(fooling_home, tmp_path):
    from fooling.evo import run as run_module

    straight = evolve(run(tmp_path, "straight", generations=6), show_progress=False)
    config = run(tmp_path, "stopped", generations=6, checkpoint_every=0)
    original = run_module.Search.step
    calls = []

    def step_then_interrupt(self):
        calls.append(self.generation)
        if self.generation == 4:
            raise KeyboardInterrupt  # as a second Ctrl-C in the middle of generation 4
        return original(self)

    run_module.Search.step = step_then_interrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            evolve(config, show_progress=False)
    finally:
        run_module.Search.step = original
    assert load(config.out).generation == 3
    resumed = evolve(resume_config(config.out), resume=True, show_progress=False)
    assert resumed.archive.equals(straight.archive)


def test_checkpoint_round_trips_through_pyarrow_and_pandas(fooling_home, tmp_path):
    search = evolve(run(tmp_path, "rt", generations=3), show_progress=False)
    path = tmp_path / "rt" / "checkpoints" / "gen-000002.parquet"
    frame = pd.read_parquet(path)
    assert set(
        [
            "class_id",
            "class_name",
            "fitness",
            "genome_pixels",
            "image_png",
            "birth_generation",
            "parent_cell",
            "individual_id",
        ]
    ) <= set(frame.columns)
    assert frame["class_name"].tolist() == [str(d) for d in range(10)]
    # Each cell is one genome's float32 values as byte planes (all first bytes, then all second...).
    planes = [np.frombuffer(cell, np.uint8).reshape(4, -1) for cell in frame["genome_pixels"]]
    pixels = np.stack([np.ascontiguousarray(p.T).view("<f4").reshape(1, 28, 28) for p in planes])
    assert DirectGenomes(pixels).equals(search.archive.genomes)
    assert np.array_equal(frame["fitness"].to_numpy(), search.archive.fitness)
    metadata = json.loads(pq.read_schema(path).metadata[METADATA_KEY])
    assert metadata["genome_fields"] == [{"name": "pixels", "dtype": "<f4", "shape": [1, 28, 28]}]
    assert metadata["generation"] == 2 and metadata["model"] == "mnist-lenet"
    assert metadata["config"]["seed"] == 3 and len(metadata["weights_hash"]) == 16
    restored = load(tmp_path / "rt")
    assert restored.archive.equals(search.archive) and restored.next_id == search.next_id


def test_corrupt_latest_falls_back_to_previous_good_one(fooling_home, tmp_path, caplog):
    evolve(run(tmp_path, "bad", generations=4, checkpoint_every=2), show_progress=False)
    folder = tmp_path / "bad" / "checkpoints"
    latest = folder / "gen-000003.parquet"
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])  # a torn write
    checkpoint = load(tmp_path / "bad")
    assert checkpoint.generation == 1
    assert "skipping" in caplog.text
    # Resuming from the fallback rebuilds generations 2..3 without touching other files.
    good = (folder / "gen-000001.parquet").read_bytes()
    evolve(resume_config(str(tmp_path / "bad")), resume=True, show_progress=False)
    assert (folder / "gen-000001.parquet").read_bytes() == good
    assert load(tmp_path / "bad").generation == 3


def test_every_checkpoint_corrupt_is_a_clear_error(fooling_home, tmp_path, capsys):
    evolve(run(tmp_path, "dead", generations=2), show_progress=False)
    latest = tmp_path / "dead" / "checkpoints" / "gen-000001.parquet"
    latest.write_bytes(b"PAR1 not really")
    assert main(["evolve", "--resume", str(tmp_path / "dead"), "--generations", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no readable checkpoint" in err[0]
    assert latest.read_bytes() == b"PAR1 not really"  # nothing overwritten


def test_genome_that_fails_validation_is_refused(fooling_home, tmp_path, capsys):
    evolve(run(tmp_path, "shape", generations=2), show_progress=False)
    path = tmp_path / "shape" / "checkpoints" / "gen-000001.parquet"
    table = pq.read_table(path)
    wrong = DirectGenomes(np.full((10, 1, 28, 28), 7.0, np.float32))  # values outside [0, 1]
    for name, column in genome_columns(wrong)[0].items():  # the genomes and their checksums
        table = table.set_column(table.schema.get_field_index(name), name, column)
    pq.write_table(table, path)
    assert main(["evolve", "--resume", str(tmp_path / "shape"), "--generations", "3"]) == 2
    assert "outside [0, 1]" in capsys.readouterr().err


def test_checkpoint_of_other_weights_is_refused(fooling_home, tmp_path, capsys):
    evolve(run(tmp_path, "other", generations=2), show_progress=False)
    path = tmp_path / "other" / "checkpoints" / "gen-000001.parquet"
    table = pq.read_table(path)
    metadata = json.loads(table.schema.metadata[METADATA_KEY])
    metadata["weights_hash"] = "0123456789abcdef"
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata)}), path)
    assert main(["evolve", "--resume", str(tmp_path / "other"), "--generations", "3"]) == 2
    err = capsys.readouterr().err
    assert "0123456789abcdef" in err and "refusing" in err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", "mnist-lenett"], "did you mean 'mnist-lenet'"),
        (["--model", "resnet"], "unknown model"),
        (["--encoding", "drect"], "did you mean 'direct'"),
        (["--generations", "0"], "positive integer"),
        (["--population", "-5"], "positive integer"),
        (["--population", "many"], "positive integer"),
        (["--mutation-probability", "1.5"], "[0, 1]"),
        (["--classes", "7,eleven"], "unknown class 'eleven'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(fooling_home, tmp_path, capsys, arguments, message):
    code = main(["evolve", "--out", str(tmp_path / "x"), "--generations", "2", *arguments])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "x").exists()


def test_out_holding_a_run_is_refused_and_left_intact(fooling_home, tmp_path, capsys):
    out = tmp_path / "taken"
    evolve(run(tmp_path, "taken", generations=2), show_progress=False)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["evolve", "--out", str(out), "--generations", "2", "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert before == {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # In Python too, saying how to continue it there.
    with pytest.raises(RunFolderError, match=r"in Python: evolve\(config, resume=True\)"):
        evolve(run(tmp_path, "taken", generations=2), show_progress=False)
    assert before == {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_resume_of_missing_folder_and_changed_settings(fooling_home, tmp_path, capsys):
    assert main(["evolve", "--resume", str(tmp_path / "nowhere"), "--generations", "3"]) == 2
    assert "no run there" in capsys.readouterr().err
    evolve(run(tmp_path, "keep", generations=2), show_progress=False)
    assert main(["evolve", "--resume", str(tmp_path / "keep"), "--population", "99"]) == 2
    assert "keeps its settings" in capsys.readouterr().err


def test_resume_past_the_end_runs_nothing_more(fooling_home, tmp_path):
    evolve(run(tmp_path, "done", generations=3), show_progress=False)
    config = resume_config(str(tmp_path / "done"))
    assert config == dataclasses.replace(run(tmp_path, "done", generations=3))
    search = evolve(config, resume=True, show_progress=False)
    assert search.generation == 3
    assert sorted(os.listdir(tmp_path / "done" / "checkpoints")) == ["LATEST", "gen-000002.parquet"]


def test_report_command_and_missing_run(fooling_home, tmp_path, capsys):
    evolve(run(tmp_path, "rep", generations=2), show_progress=False)
    assert main(["report", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "elites.png").exists()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err


def test_read_latest_checkpoint_of_empty_folder(tmp_path):
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        load(tmp_path)


def test_train_uses_the_cache_and_refuses_pretrained_models(fooling_home, capsys):
    from fooling.fitness import lenet_weights_path

    before = lenet_weights_path(0).read_bytes()
    assert main(["train", "--model", "mnist-lenet"]) == 0
    assert "already trained (test accuracy" in capsys.readouterr().out
    assert lenet_weights_path(0).read_bytes() == before
    assert main(["train", "--model", "imagenet-lite0"]) == 2
    assert "pretrained" in capsys.readouterr().err
