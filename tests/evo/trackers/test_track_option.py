"""``--track`` on the command line: bad input is one line and exit 2 before any work; plugins plug in."""

from __future__ import annotations

import json
import logging

import pytest
from plugin_packages import installed_package

from fooling.encodings.plugins import PluginError
from fooling.evo.cli import main
from fooling.evo.cli.main import build_parser
from fooling.evo.config import RunConfig
from fooling.evo.run import evolve
from fooling.evo.trackers import (
    make_trackers,
    mlflow_tracker,
    parse_tracker,
    registered_trackers,
    tensorboard_tracker,
    tracker_help,
)

TINY = ["--generations", "4", "--population", "40", "--batch-size", "20", "--no-progress", "--no-report"]


def one_line_exit_2(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("command", ["evolve", "retrain", "audit"])
def test_unknown_tracker_suggests_close_names(capsys, tmp_path, command):
    out = tmp_path / "run"
    extra = ["--model", "mnist-lenet"] if command == "audit" else []
    err = one_line_exit_2(capsys, [command, *extra, "--out", str(out), "--track", "tensorbord"])
    assert "unknown tracker 'tensorbord'; did you mean 'tensorboard'?" in err
    assert not out.exists()


def test_a_tensorboard_dir_that_is_a_file_fails_before_any_work(capsys, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    out = tmp_path / "run"
    err = one_line_exit_2(capsys, ["evolve", *TINY, "--out", str(out), "--track", f"tensorboard:{taken}"])
    assert f"{taken} is a file, not a folder" in err
    assert not out.exists()  # the model was not even loaded: no run folder


def test_an_mlflow_uri_of_an_unknown_scheme_fails_before_any_work(capsys, tmp_path):
    out = tmp_path / "run"
    err = one_line_exit_2(capsys, ["evolve", *TINY, "--out", str(out), "--track", "mlflow:htp://127.0.0.1:1"])
    assert "unknown tracking URI scheme 'htp'; did you mean 'http'" in err
    assert not out.exists()


def test_mlflow_uri_credentials_never_reach_the_error(capsys, tmp_path):
    err = one_line_exit_2(
        capsys, ["evolve", "--out", str(tmp_path / "run"), "--track", "mlflow:htp://user:secret@127.0.0.1:1"]
    )
    assert "secret" not in err and "htp://127.0.0.1:1" in err


@pytest.mark.parametrize(
    ("module", "attribute", "name", "extra"),
    [
        (tensorboard_tracker, "SummaryWriter", "tensorboard", "tensorboard"),
        (mlflow_tracker, "mlflow", "mlflow", "mlflow"),
    ],
)
def test_a_missing_extra_names_the_extra_to_install(
    capsys, tmp_path, monkeypatch, module, attribute, name, extra
):
    monkeypatch.setattr(module, attribute, None)  # as the module leaves it when the import failed
    for command in (["evolve", *TINY], ["retrain"]):
        out = tmp_path / command[0]
        err = one_line_exit_2(capsys, [*command, "--out", str(out), "--track", name])
        assert f"pip install 'fooling[{extra}]'" in err
        assert not out.exists()


def test_track_help_lists_every_tracker_on_each_command():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for command in ("evolve", "retrain", "audit"):
        help_text = commands[command].format_help()
        assert "--track NAME[:ARG]" in help_text and "tensorboard[:DIR]" in help_text, command
    assert "mlflow[:TRACKING_URI]" in tracker_help()


RECORDER = '''
import json
from pathlib import Path

from fooling.evo.trackers import Tracker


class Recorder(Tracker):
    """Writes every call it gets to ARG (a JSON lines file); fails once on generation 1 if asked."""

    name = "recorder"
    summary = "writes its calls down"
    argument = "FILE"
    failed = set()

    def _write(self, *call):
        with open(self.arg, "a") as file:
            file.write(json.dumps(call) + "\\n")

    def start(self, run, resumed):
        self._write("start", run.name, run.first_generation, resumed, len(run.class_names))
        return -1

    def log_generation(self, step, metrics):
        if "flaky" in self.arg and step == 1 and self.arg not in Recorder.failed:
            Recorder.failed.add(self.arg)
            raise ConnectionError("server went away")
        self._write("generation", step, sorted(metrics))

    def log_checkpoint(self, step, images):
        pngs = all(png[:4] == b"\\x89PNG" for png in images.values())
        self._write("checkpoint", step, sorted(images)[:2], pngs)

    def finish(self, artifacts, status):
        self._write("finish", sorted(artifacts), status)


class NotATracker:
    name = "broken"
'''
POINTS = "[fooling.trackers]\nrecorder = fake_tracker:Recorder\nbroken = fake_tracker:NotATracker\n"


def calls(path) -> list[list]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_plugin_tracker_gets_every_call_in_order_and_a_failure_is_retried(
    fooling_home, tmp_path, monkeypatch, caplog
):
    caplog.set_level(logging.WARNING)
    with installed_package(tmp_path / "site", monkeypatch, "fake_tracker", RECORDER, POINTS):
        with pytest.raises(PluginError, match=r"tracker plugin 'broken' .* not a Tracker subclass"):
            registered_trackers()
        assert "recorder: plugin" in tracker_help()
        config = dict(
            model="mnist-lenet", population=40, batch_size=20, seed=3, checkpoint_every=2, generations=5
        )
        steady, flaky = tmp_path / "steady.jsonl", tmp_path / "flaky.jsonl"
        evolve(
            RunConfig(**config, out=str(tmp_path / "a")), show_progress=False, trackers=[f"recorder:{steady}"]
        )
        evolve(
            RunConfig(**config, out=str(tmp_path / "b")), show_progress=False, trackers=[f"recorder:{flaky}"]
        )
    made = calls(steady)
    assert made[0] == ["start", "a", 0, False, 10]
    assert [c[1] for c in made if c[0] == "generation"] == [0, 1, 2, 3, 4]
    expected = {"fitness/median", "fitness/mean", "fitness/max", "fitness/min", "archive/coverage",
                "archive/qd_score", "speed/evals_per_s", "budget/evaluations"}  # fmt: skip
    # budget/queries too where the scoring counts queries (endpoints).
    assert expected <= set(made[1][2]) <= expected | {"budget/queries"}
    checkpoints = [c for c in made if c[0] == "checkpoint"]
    assert [c[1] for c in checkpoints] == [1, 3, 4] and all(c[3] for c in checkpoints)
    assert checkpoints[0][2] == ["class-0000-0", "class-0001-1"]
    assert made[-1] == ["finish", ["elites.png", "progress.png", "stats.parquet"], "FINISHED"]
    # The flaky one missed generation 1 and more until the next checkpoint: all sent once, in order.
    again = calls(flaky)
    assert [c[1] for c in again if c[0] == "generation"] == [0, 1, 2, 3, 4]
    assert again[-1][0] == "finish"
    warnings = [r.getMessage() for r in caplog.records if "recorder" in r.getMessage()]
    assert len(warnings) == 1 and "ConnectionError: server went away" in warnings[0]


def test_make_trackers_keeps_tracker_objects_and_refuses_other_things(tmp_path):
    with pytest.raises(TypeError, match="expected a tracker name or a Tracker"):
        make_trackers([42])
    tracker = make_trackers(["tensorboard"])[0]
    assert make_trackers([tracker]) == [tracker]
    # One alone is a list of one: a name, a spec or a tracker (a name was read letter by letter).
    assert make_trackers(tracker) == [tracker]
    assert [type(made) for made in make_trackers("tensorboard")] == [type(tracker)]
    assert [type(made) for made in make_trackers(parse_tracker("tensorboard"))] == [type(tracker)]
