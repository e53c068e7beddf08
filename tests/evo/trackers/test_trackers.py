"""Trackers read back with their own readers: TensorBoard's EventAccumulator, MLflow's MlflowClient."""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fooling.evo.config import RunConfig
from fooling.evo.run import GENOME_CLASSES, evolve, resume_config
from fooling.evo.store.checkpoint import read_latest_checkpoint
from fooling.evo.trackers import TRACKERS, tracker_class, tracker_metrics

TINY = dict(model="mnist-lenet", population=40, batch_size=20, seed=3, checkpoint_every=3)


class Crash(RuntimeError):
    """Stands for a kill: raised after a generation, before any checkpoint of it."""


def crash_after(generation: int):
    def on_generation(search) -> None:
        if search.generation - 1 == generation:
            raise Crash(f"killed after generation {generation}")

    return on_generation


def crashed_then_resumed(out: Path, trackers: list[str], *, crash: int = 4, generations: int = 8) -> None:
    """Generations 0..crash (checkpoint at 2 only), then a resume from 3 to ``generations`` - 1."""
    with pytest.raises(Crash):
        evolve(
            RunConfig(**TINY, generations=generations, out=str(out)),
            show_progress=False,
            on_generation=crash_after(crash),
            trackers=trackers,
        )
    assert read_latest_checkpoint(str(out), GENOME_CLASSES).generation == 2
    evolve(resume_config(str(out)), resume=True, show_progress=False, trackers=trackers)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_tensorboard_after_a_kill_and_a_resume_holds_each_generation_once(fooling_home, tmp_path):
    out = tmp_path / "run"
    crashed_then_resumed(out, ["tensorboard"])
    stats = pd.read_parquet(out / "stats.parquet")
    assert stats["gen"].tolist() == list(range(8))
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    # Generations 3 and 4 were written by the killed process too: purged, written once again.
    tags = {"fitness/median": "median", "fitness/max": "max", "archive/qd_score": "qd_score"}
    for tag, column in tags.items():
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == list(range(8)), tag
        np.testing.assert_array_equal(
            np.float32([s.value for s in scalars]), stats[column].to_numpy(np.float32), err_msg=tag
        )
    evaluations = [s.value for s in events.Scalars("budget/evaluations")]
    assert evaluations == list(np.cumsum(stats["evals"]).astype(float))
    # Checkpoints: 2 (first process), 5 and 7 (the resumed one's checkpoint and its end).
    assert [image.step for image in events.Images("elites")] == [2, 5, 7]
    thumbnails = [tag for tag in events.Tags()["images"] if tag.startswith("classes/")]
    assert len(thumbnails) == 8 and all(
        [image.step for image in events.Images(tag)] == [2, 5, 7] for tag in thumbnails
    )
    elites = events.Images("elites")[-1]
    assert elites.width > 200 and elites.encoded_image_string.startswith(b"\x89PNG")
    assert "mnist-lenet" in str(events.Tensors("run/model/text_summary")[0].tensor_proto.string_val)


def test_mlflow_after_a_kill_and_a_resume_is_one_run_with_every_generation_once(
    fooling_home, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # MLflow's sqlite store keeps artifacts in ./mlruns
    database = tmp_path / "mlflow.db"
    uri = f"sqlite:///{database}"
    out = tmp_path / "run"
    crashed_then_resumed(out, [f"mlflow:{uri}"])
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("fooling").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert json.loads((out / "mlflow.json").read_text()) == {"runs": {uri: run.info.run_id}}
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    stats = pd.read_parquet(out / "stats.parquet")
    history = sorted(client.get_metric_history(run.info.run_id, "fitness/median"), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(8))
    np.testing.assert_allclose([m.value for m in history], stats["median"], rtol=1e-12)
    assert run.data.params["seed"] == "3" and run.data.params["model.name"] == "mnist-lenet"
    assert run.data.params["generations"] == "8"

    def files(path=None) -> list[str]:
        found = []
        for entry in client.list_artifacts(run.info.run_id, path):
            found += files(entry.path) if entry.is_dir else [entry.path]
        return found

    artifacts = files()
    report = {"report/elites.png", "report/progress.png", "report/stats.parquet"}
    assert report | {"model.json"} <= set(artifacts)
    steps = sorted(
        int(re.search(r"\+step\+(\d+)\+", name)[1])
        for name in artifacts
        if name.startswith("images/elites+") and name.endswith(".png")
    )
    assert steps == [2, 5, 7]
    report_stats = client.download_artifacts(run.info.run_id, "report/stats.parquet", str(tmp_path))
    assert Path(report_stats).read_bytes() == (out / "stats.parquet").read_bytes()


def test_a_tracker_at_a_closed_port_changes_nothing_and_warns_once(fooling_home, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="fooling.evo.trackers")
    config = RunConfig(**{**TINY, "checkpoint_every": 2}, generations=6, out=str(tmp_path / "plain"))
    plain = evolve(config, show_progress=False)
    url = f"http://127.0.0.1:{closed_port()}"
    tracked = evolve(
        RunConfig(**{**TINY, "checkpoint_every": 2}, generations=6, out=str(tmp_path / "tracked")),
        show_progress=False,
        trackers=[f"mlflow:{url}"],
    )
    assert plain.archive.equals(tracked.archive)
    first, second = (pd.read_parquet(tmp_path / name / "stats.parquet") for name in ("plain", "tracked"))
    timing = ["evals_per_s", "seconds"]
    pd.testing.assert_frame_equal(first.drop(columns=timing), second.drop(columns=timing))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "tracker mlflow failed" in warnings[0].getMessage() and "127.0.0.1" in warnings[0].getMessage()
    # Tried again at checkpoints (1, 3 and 5; two close ones may come as one) and at the end: not
    # at each of the 6 generations.
    assert 1 <= len([r for r in caplog.records if "still failing" in r.getMessage()]) <= 4
    assert not any("still sending" in r.getMessage() for r in caplog.records)  # the end did not wait
    assert not (tmp_path / "tracked" / "mlflow.json").exists()


def test_metrics_carry_queries_where_a_record_counts_them():
    record = dict(gen=3, evals=40, median=0.5, mean=0.4, max=0.9, min=0.1, coverage=1.0, qd_score=4.0,
                  evals_per_s=100.0, seconds=0.4)  # fmt: skip
    metrics = tracker_metrics(record, 160)
    assert "budget/queries" not in metrics and metrics["budget/evaluations"] == 160.0
    assert metrics["fitness/median"] == 0.5 and metrics["archive/qd_score"] == 4.0
    assert tracker_metrics({**record, "queries": 120}, 160)["budget/queries"] == 120.0


def test_built_in_trackers_describe_themselves_as_their_registry_entries():
    for name, entry in TRACKERS.items():
        kind = tracker_class(name)
        assert (kind.name, kind.summary, kind.argument) == (name, entry.summary, entry.argument)


def test_the_tracker_packages_load_only_for_a_run_that_asks():
    # TensorBoard and MLflow take seconds to import: no command pays for them unless it tracks.
    code = (
        "import json, sys; import fooling.evo.run, fooling.evo.cli.main; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    loaded = set(json.loads(result.stdout.splitlines()[-1]))
    assert not loaded & {"tensorboard", "mlflow"}
