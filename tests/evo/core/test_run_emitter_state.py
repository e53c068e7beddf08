"""evolve saves its emitter's state in each checkpoint and gives it back on resume."""

from __future__ import annotations

import numpy as np
import pytest

import fooling.evo.run as run_module
from fooling.encodings import UserError
from fooling.evo.archive import ClassArchive
from fooling.evo.config import RunConfig
from fooling.evo.run import GENOME_CLASSES, evolve, resume_config, save_checkpoint
from fooling.evo.store.checkpoint import checkpoint_uris, read_checkpoint_file, read_latest_checkpoint

TINY = dict(model="mnist-lenet", population=20, batch_size=10, seed=3)


@pytest.fixture
def recording_emitter(monkeypatch) -> list[dict]:
    """Emitters whose state says what they were restored from; the states restored, in order."""
    restored: list[dict] = []
    real_get_emitter = run_module.get_emitter

    def get_emitter(name):
        emitter = real_get_emitter(name)

        class Recording(type(emitter)):
            def state(self) -> dict:
                return {"restored_from": restored[-1] if restored else None, "values": [1, 2.5, True, "x"]}

            def restore(self, state: dict) -> None:
                restored.append(state)

        object.__setattr__(emitter, "__class__", Recording)  # emitters may be frozen dataclasses
        return emitter

    monkeypatch.setattr(run_module, "get_emitter", get_emitter)
    return restored


def test_evolve_stores_the_emitter_state_and_restores_it_on_resume(fooling_home, tmp_path, recording_emitter):
    out = str(tmp_path / "run")
    evolve(RunConfig(**TINY, generations=4, checkpoint_every=2, out=out), show_progress=False)
    assert recording_emitter == []  # a new run restores nothing
    first = {"restored_from": None, "values": [1, 2.5, True, "x"]}
    assert len(checkpoint_uris(out)) == 2
    assert [read_checkpoint_file(uri, GENOME_CLASSES).emitter_state for uri in checkpoint_uris(out)] == [
        first
    ] * 2
    evolve(resume_config(out, generations=6), resume=True, show_progress=False)
    assert recording_emitter == [first]  # the newest checkpoint's state, given back once
    assert read_latest_checkpoint(out, GENOME_CLASSES).emitter_state == {
        "restored_from": first,
        "values": [1, 2.5, True, "x"],
    }


def test_an_emitter_that_refuses_its_state_stops_the_resume_in_one_line(fooling_home, tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    evolve(RunConfig(**TINY, generations=2, out=out), show_progress=False)
    real_get_emitter = run_module.get_emitter

    def refusing(name):
        emitter = real_get_emitter(name)

        class Refusing(type(emitter)):
            def restore(self, state: dict) -> None:
                raise UserError("the checkpoint's emitter state is damaged")

        object.__setattr__(emitter, "__class__", Refusing)
        return emitter

    monkeypatch.setattr(run_module, "get_emitter", refusing)
    with pytest.raises(UserError, match="emitter state is damaged"):
        evolve(resume_config(out, generations=4), resume=True, show_progress=False)
    assert read_latest_checkpoint(out, GENOME_CLASSES).generation == 1  # nothing more written


def test_save_checkpoint_stores_the_state_it_is_given(lenet, tmp_path):
    config = RunConfig(model="mnist-lenet", population=4, out=str(tmp_path / "run"))
    archive = ClassArchive(list(lenet.spec.class_names))
    encoding = run_module.make_encoding(config, lenet.spec)
    rng = np.random.default_rng(0)
    archive.add_batch(
        encoding.random(4, rng),
        np.eye(10, dtype=np.float32)[:4] * 0.9,
        individual_id=np.arange(4),
        generation=0,
    )
    state = {"sigma": 0.3, "mean": [0.0, 1.0], "flags": {"stalled": False}}
    uri = save_checkpoint(config, lenet, archive, generation=0, next_id=4, emitter_state=state)
    assert read_checkpoint_file(uri, GENOME_CLASSES).emitter_state == state
    uri = save_checkpoint(config, lenet, archive, generation=1, next_id=4)
    assert read_checkpoint_file(uri, GENOME_CLASSES).emitter_state == {}
