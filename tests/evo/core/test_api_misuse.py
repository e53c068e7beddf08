"""Misuse of the Python API: clear errors at construction (or a clear acceptance), never a
traceback from deep inside a run, and nothing written to the run folder before it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from fooling.encodings import EncodingSpec, UserError
from fooling.evo import RunConfig, evolve
from fooling.evo.config import ENCODING_SETTINGS, check_encoding_settings
from fooling.evo.run import resume_config


def test_numpy_numbers_and_sequences_are_taken_as_pythons_own():
    config = RunConfig(
        population=np.int64(8),
        generations=np.int32(2),
        seed=np.uint32(3),
        max_queries=np.int64(1000),
        mutation_probability=np.float32(0.25),
        mutation_eta=np.int64(15),
        crossover_eta=np.float64(7.5),
        classes=np.array(["0", "1"]),
        model=np.str_("mnist-lenet"),
    )
    for name, kind in [("population", int), ("generations", int), ("seed", int), ("max_queries", int),
                       ("mutation_probability", float), ("mutation_eta", float), ("crossover_eta", float),
                       ("model", str)]:  # fmt: skip
        assert type(getattr(config, name)) is kind, name
    assert config.classes == ["0", "1"] and all(type(name) is str for name in config.classes)
    stored = json.loads(config.to_json())  # was "Object of type int64 is not JSON serializable"
    assert stored["population"] == 8 and stored["mutation_probability"] == pytest.approx(0.25)
    assert RunConfig.from_json(config.to_json()) == config
    assert RunConfig(classes=("0", "1")).classes == ["0", "1"]  # a tuple: a list, as JSON reads it back
    assert type(RunConfig(mutation_eta=15).mutation_eta) is int  # Python's own numbers stay as they are


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(workers=np.bool_(False)), "--workers must be an integer"),  # a bool is no count
        (dict(population=np.float64(8.0)), "--population must be an integer"),
        (dict(classes="cat"), "--classes must be a list of class names"),
        (dict(classes=np.array([["0", "1"]])), "--classes must be a list of class names"),
    ],
)
def test_numpy_values_of_another_kind_are_still_refused(fields, message):
    with pytest.raises(UserError, match=message):
        RunConfig(**fields)


def test_a_numpy_population_runs_and_checkpoints(fooling_home, tmp_path):
    out = tmp_path / "run"
    config = RunConfig(population=np.int64(8), generations=np.int64(2), checkpoint_every=1, out=str(out))
    evolve(config, show_progress=False)  # failed writing its first checkpoint, leaving checkpoints/ empty
    assert sorted(path.name for path in (out / "checkpoints").glob("gen-*.parquet")) == [
        "gen-000000.parquet",
        "gen-000001.parquet",
    ]


def test_no_classes_is_refused_and_a_stored_empty_list_still_means_all():
    with pytest.raises(UserError, match="give at least one class, or leave classes unset for all"):
        RunConfig(classes=[])
    stored = json.loads(RunConfig().to_json())
    assert RunConfig.from_json(json.dumps({**stored, "classes": []})).classes is None


def test_a_config_is_frozen_and_a_changed_copy_is_checked_again():
    config = RunConfig(population=8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.population = -1  # was taken, and failed deep inside the run
    assert config.population == 8
    assert dataclasses.replace(config, population=16).population == 16
    with pytest.raises(UserError, match=r"--population must be in \[1, 1,000,000\], not -1"):
        dataclasses.replace(config, population=-1)


@pytest.mark.parametrize("config", [None, "runs/x", {"population": 8}])
def test_evolve_of_something_else_than_a_run_config_is_a_type_error(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        TypeError, match=f"evolve\\(\\) takes a RunConfig as its config, not {type(config).__name__}"
    ):
        evolve(config)
    assert list(tmp_path.iterdir()) == []


def test_one_tracker_name_alone_is_one_tracker(tmp_path):
    out = tmp_path / "run"
    # Was taken letter by letter: "unknown tracker 't'".
    with pytest.raises(UserError, match="unknown tracker 'tensorbord'; did you mean 'tensorboard'"):
        evolve(RunConfig(out=str(out)), trackers="tensorbord", show_progress=False)
    assert not out.exists()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            dict(encoding="cppn", halve_mutation_every=5),
            "--halve-mutation-every 5 applies to the direct encoding only",
        ),
        (dict(encoding="cppn", crossover_eta=5.0), "--crossover-eta 5.0 applies to the direct encoding only"),
        (dict(encoding="direct", max_nodes=64), "--max-nodes 64 applies to the cppn encoding only"),
        (dict(encoding="direct", max_edges=200), "--max-edges 200 applies to the cppn encoding only"),
        (
            dict(encoding="direct", coordinates="pixel"),
            "--coordinates pixel applies to the cppn encoding only",
        ),
        (dict(encoding="direct", split_weight="old"), "--split-weight old applies to the cppn encoding only"),
    ],
)
def test_a_setting_the_encoding_does_not_read_is_refused(fields, message):
    config = RunConfig(**fields)  # a stored run may hold it: the config itself takes it
    with pytest.raises(UserError, match=f"^{message}; --encoding {fields['encoding']} ignores it, drop it$"):
        check_encoding_settings(config)


def test_settings_the_encoding_reads_or_left_at_their_defaults_pass():
    check_encoding_settings(RunConfig(encoding="cppn", max_nodes=64, coordinates="pixel", mutation_eta=5.0))
    check_encoding_settings(RunConfig(encoding="direct", halve_mutation_every=5, crossover_eta=5.0))
    check_encoding_settings(RunConfig(encoding="cppn"))
    check_encoding_settings(RunConfig(encoding="direct"))
    # A preset's own values are not the user's: compared with the preset's, not the defaults.
    check_encoding_settings(RunConfig.from_preset("paper", image_size=32))
    check_encoding_settings(RunConfig(encoding="no-such-encoding"))  # reported when it is made


def _spec(name: str, settings) -> EncodingSpec:
    def build(settings, channels, size):
        raise AssertionError("not built")

    return EncodingSpec(name, name, type("Plugin", (), {}), build, settings=settings)


def test_an_encoding_that_declares_nothing_is_refused_nothing(monkeypatch):
    from fooling.evo import config as config_module

    registered = {"quiet": _spec("quiet", None), "says": _spec("says", ("mutation_probability",))}
    monkeypatch.setattr(config_module, "registered_encodings", lambda: registered)
    every = dict(halve_mutation_every=5, crossover_eta=5.0, coordinates="pixel", split_weight="old",
                 max_nodes=64, max_edges=200, mutation_probability=0.5, mutation_eta=5.0)  # fmt: skip
    assert set(every) == set(ENCODING_SETTINGS)
    check_encoding_settings(dataclasses.replace(RunConfig(), **every, encoding="quiet"))
    # One that declares its settings is held to them; none here declares mutation_eta.
    with pytest.raises(
        UserError, match="^--mutation-eta 5.0 applies to no registered encoding; --encoding says"
    ):
        check_encoding_settings(dataclasses.replace(RunConfig(), mutation_eta=5.0, encoding="says"))


def test_a_resumed_run_holding_a_setting_its_encoding_ignores_resumes(fooling_home, tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    config = RunConfig(encoding="direct", max_nodes=64, population=8, generations=1, out=out)
    with pytest.raises(UserError, match="--max-nodes 64 applies to the cppn encoding only"):
        evolve(config, show_progress=False)
    # A run stored before the check (the check switched off to write one).
    with monkeypatch.context() as patch:
        patch.setattr("fooling.evo.run.check_encoding_settings", lambda config: None)
        evolve(config, show_progress=False)
    resumed = resume_config(out, generations=2)
    assert resumed.max_nodes == 64
    assert evolve(resumed, resume=True, show_progress=False).generation == 2


def test_evolve_resumes_only_with_the_runs_own_settings(fooling_home, tmp_path):
    """The command line refuses a changed seed on --resume; evolve(config, resume=True) did not."""
    out = str(tmp_path / "run")
    config = RunConfig(population=8, generations=2, seed=0, out=out)
    evolve(config, show_progress=False)
    before = sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir())
    for changed in (dict(seed=5), dict(population=20), dict(mutation_probability=0.5)):
        name = next(iter(changed))
        with pytest.raises(UserError, match=f"{name} .* differs from the run's"):
            evolve(dataclasses.replace(config, generations=4, **changed), resume=True, show_progress=False)
    assert sorted(path.name for path in (tmp_path / "run" / "checkpoints").iterdir()) == before
    moved = tmp_path / "moved"
    (tmp_path / "run").rename(moved)  # the folder may move; generations may grow
    assert (
        evolve(
            dataclasses.replace(config, generations=4, out=str(moved)), resume=True, show_progress=False
        ).generation
        == 4
    )


def test_a_budget_first_given_on_resume_says_what_its_count_cannot_know(fooling_home, tmp_path, caplog):
    out = str(tmp_path / "run")
    evolve(RunConfig(population=8, generations=2, out=out), show_progress=False)  # no budget: no ledger
    resumed = resume_config(out, generations=3, max_queries=100)
    assert evolve(resumed, resume=True, show_progress=False).generation == 3
    assert (
        "kept no query ledger" in caplog.text and "continues from the checkpoint's 16 images" in caplog.text
    )
    assert json.loads((tmp_path / "run" / "queries.json").read_text()) == {"queries": 24}


def test_a_budget_below_what_the_run_already_sent_is_refused(fooling_home, tmp_path):
    out = str(tmp_path / "run")
    evolve(RunConfig(population=8, generations=2, out=out, max_queries=100), show_progress=False)
    with pytest.raises(UserError, match="--max-queries 10 is below the 16 images .* already sent"):
        evolve(resume_config(out, generations=3, max_queries=10), resume=True, show_progress=False)
    assert json.loads((tmp_path / "run" / "queries.json").read_text()) == {"queries": 16}
