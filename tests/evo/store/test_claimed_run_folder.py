"""claimed_run_folder: lock, claim; on failure, remove only a folder this call created, while empty."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fooling.encodings import UserError
from fooling.evo.store.location import WRITE_PROBE_NAME
from fooling.evo.store.runfolder import (
    KIND_NAME,
    LOCK_NAME,
    RunFolderError,
    RunLockedError,
    claimed_run_folder,
    folder_kind,
    run_token,
)


class Boom(Exception):
    pass


def test_the_body_runs_locked_in_a_claimed_folder_and_the_lock_goes_after(tmp_path):
    out = str(tmp_path / "run")
    with claimed_run_folder(out, "ascent") as folder:
        assert folder == out
        assert (tmp_path / "run" / LOCK_NAME).is_file()
        assert folder_kind(out) == "ascent"
        (tmp_path / "run" / "result.txt").write_text("done")
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    record = json.loads((tmp_path / "run" / KIND_NAME).read_text())
    assert record["kind"] == "ascent" and run_token(out) == record["run"] and len(record["run"]) == 16


def test_a_failure_removes_the_folder_it_created_while_empty(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Boom), claimed_run_folder(str(out), "evolve"):
        raise Boom
    assert not out.exists()


def test_a_failure_keeps_a_folder_that_was_there_or_that_got_files(tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(Boom), claimed_run_folder(str(existing), "evolve"):
        raise Boom
    assert existing.is_dir()
    written = tmp_path / "written"
    with pytest.raises(Boom), claimed_run_folder(str(written), "evolve"):
        (written / "stats.parquet").write_bytes(b"x")
        raise Boom
    assert (written / "stats.parquet").is_file()


@pytest.mark.parametrize("fails", [True, False])
def test_a_new_run_that_saved_nothing_takes_its_prelude_and_record_with_it(tmp_path, fails):
    """Its ledger and record go (the same command can run again); another file keeps them all."""
    existing = tmp_path / "existing"
    existing.mkdir()
    with contextlib.suppress(Boom), claimed_run_folder(str(existing), "evolve", prelude=("queries.json",)):
        (existing / "queries.json").write_text('{"queries": 8}')
        (existing / "checkpoints").mkdir()
        if fails:
            raise Boom
    assert existing.is_dir() and list(existing.iterdir()) == []
    kept = tmp_path / "kept"
    with pytest.raises(Boom), claimed_run_folder(str(kept), "evolve", prelude=("queries.json",)):
        (kept / "queries.json").write_text('{"queries": 8}')
        (kept / "checkpoints").mkdir()
        (kept / "checkpoints" / "gen-000000.parquet").write_bytes(b"x")
        raise Boom
    assert sorted(path.name for path in kept.iterdir()) == [KIND_NAME, "checkpoints", "queries.json"]


def test_what_a_run_killed_before_its_first_result_left_takes_a_new_run(tmp_path, caplog):
    """SIGKILL leaves the record and the ledger (and a lock, taken over): not a run to refuse."""
    out = tmp_path / "run"
    out.mkdir()
    (out / KIND_NAME).write_text('{"kind": "evolve", "run": "0123456789abcdef"}')
    (out / "queries.json").write_text('{"queries": 8}')
    with claimed_run_folder(str(out), "evolve", prelude=("queries.json",)):
        assert run_token(str(out)) not in (None, "0123456789abcdef")
        (out / "result.txt").write_text("saved")
    assert "killed before it saved anything; starting anew" in caplog.text
    assert sorted(path.name for path in out.iterdir()) == [KIND_NAME, "result.txt"]
    # With a result, the same leftovers are a run: refused.
    with pytest.raises(RunFolderError, match="already holds a run"), claimed_run_folder(str(out), "evolve"):
        pytest.fail("the body of a refused folder ran")


PRELUDE = ("queries.json", "stats.parquet")


def test_a_run_killed_while_writing_its_first_checkpoint_leaves_a_folder_the_command_takes(tmp_path, caplog):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / KIND_NAME).write_text('{"kind": "evolve", "run": "0123456789abcdef"}')
    (out / "stats.parquet").write_bytes(b"stats of generation 0")
    (out / "checkpoints" / ".tmp-gen-000000.parquet").write_bytes(b"half a checkpoint")
    with claimed_run_folder(str(out), "evolve", prelude=PRELUDE):
        assert sorted(path.name for path in out.iterdir()) == sorted([KIND_NAME, LOCK_NAME])
    assert "starting anew" in caplog.text


def test_files_of_no_run_of_ours_are_never_removed(tmp_path):
    """No record: a user's own stats.parquet and queries.json are files of no run, refused."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "stats.parquet").write_bytes(b"the user's table")
    (out / "queries.json").write_text('{"queries": 8}')
    with (
        pytest.raises(RunFolderError, match="holds other files"),
        claimed_run_folder(str(out), "evolve", prelude=PRELUDE),
    ):
        pytest.fail("the body of a refused folder ran")
    assert (out / "stats.parquet").read_bytes() == b"the user's table" and (out / "queries.json").exists()


@pytest.mark.parametrize("planted", ["linked checkpoints", "checkpoint", "linked prelude", "user file"])
def test_an_unstarted_run_beside_anything_else_is_left_whole(tmp_path, planted):
    out, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (elsewhere / "gen-000003.parquet").write_bytes(b"a checkpoint kept on another disk")
    (out / KIND_NAME).write_text('{"kind": "evolve", "run": "0123456789abcdef"}')
    (out / "queries.json").write_text('{"queries": 8}')
    if planted == "linked checkpoints":
        (out / "checkpoints").symlink_to(elsewhere)
    elif planted == "checkpoint":
        (out / "checkpoints").mkdir()
        (out / "checkpoints" / "gen-000000.parquet").write_bytes(b"x")
    elif planted == "linked prelude":
        (out / "stats.parquet").symlink_to(elsewhere / "gen-000003.parquet")
    else:
        (out / "notes.txt").write_text("mine")
    before = sorted(path.name for path in out.iterdir())
    with pytest.raises(RunFolderError), claimed_run_folder(str(out), "evolve", prelude=PRELUDE):
        pytest.fail("the body of a refused folder ran")
    assert sorted(path.name for path in out.iterdir()) == before
    assert (elsewhere / "gen-000003.parquet").read_bytes() == b"a checkpoint kept on another disk"


def _dead_lock(folder) -> None:
    """The lock a SIGKILLed process leaves in ``folder``."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname()}))


def _killed_first_round(out) -> None:
    """As a retraining SIGKILLed in its first round's first generation leaves ``out``."""
    round_1 = out / "round-1"
    (round_1 / "checkpoints").mkdir(parents=True)
    (out / KIND_NAME).write_text('{"kind": "retrain", "run": "0123456789abcdef"}')
    (round_1 / KIND_NAME).write_text('{"kind": "evolve", "run": "fedcba9876543210"}')
    (round_1 / "stats.parquet").write_bytes(b"stats of generation 0")
    (round_1 / "checkpoints" / ".tmp-gen-000000.parquet").write_bytes(b"half a checkpoint")
    _dead_lock(out)
    _dead_lock(round_1)


@pytest.mark.parametrize("probe", [False, True], ids=["", "killed while probing"])
def test_a_run_inside_a_run_that_saved_nothing_goes_with_it(tmp_path, caplog, probe):
    out = tmp_path / "retrain"
    _killed_first_round(out)
    if probe:  # killed between check_writable's write and its delete
        (out / "round-1" / WRITE_PROBE_NAME).write_bytes(b"probe")
    with claimed_run_folder(str(out), "retrain", subruns={"round-1": PRELUDE}):
        assert sorted(path.name for path in out.iterdir()) == sorted([KIND_NAME, LOCK_NAME])
        assert run_token(str(out)) not in (None, "0123456789abcdef")
    assert "starting anew" in caplog.text and "round-1 left by pid" in caplog.text


def test_a_cleanup_that_fails_midway_leaves_a_folder_the_next_one_cleans(tmp_path, monkeypatch):
    """A file of the run inside that cannot be deleted: the outer record stays, so it is tried again."""
    out = tmp_path / "retrain"
    _killed_first_round(out)
    stuck = out / "round-1" / "stats.parquet"
    unlink = Path.unlink

    def refuse(path, *args, **kwargs):
        if path == stuck:
            raise PermissionError(1, "Operation not permitted", str(path))
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", refuse)
    with (
        pytest.raises(PermissionError),
        claimed_run_folder(str(out), "retrain", subruns={"round-1": PRELUDE}),
    ):
        pytest.fail("the body ran")
    assert (out / KIND_NAME).is_file() and stuck.is_file()
    monkeypatch.undo()
    with claimed_run_folder(str(out), "retrain", subruns={"round-1": PRELUDE}):
        assert sorted(path.name for path in out.iterdir()) == sorted([KIND_NAME, LOCK_NAME])


@pytest.mark.parametrize("planted", ["checkpoint", "live lock", "linked round", "user file"])
def test_a_run_inside_that_saved_something_keeps_the_whole_folder(tmp_path, planted):
    out, elsewhere = tmp_path / "retrain", tmp_path / "elsewhere"
    _killed_first_round(out)
    round_1 = out / "round-1"
    sleeper = None
    if planted == "checkpoint":
        (round_1 / "checkpoints" / "gen-000000.parquet").write_bytes(b"x")
    elif planted == "live lock":
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        (round_1 / LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
    elif planted == "linked round":
        shutil.move(round_1, elsewhere)
        round_1.symlink_to(elsewhere)
    else:
        (round_1 / "notes.txt").write_text("mine")
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    before.pop(out / LOCK_NAME)  # the dead process's, taken over (round-1's too, but a live one)
    if planted in ("checkpoint", "user file"):
        before.pop(round_1 / LOCK_NAME)
    try:
        with (
            pytest.raises(RunFolderError),
            claimed_run_folder(str(out), "retrain", subruns={"round-1": PRELUDE}),
        ):
            pytest.fail("the body of a refused folder ran")
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()
    after = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    assert {path: after.get(path) for path in before} == before


def test_a_resumed_run_keeps_its_folder_whatever_happens(tmp_path):
    out = tmp_path / "run"
    with claimed_run_folder(str(out), "evolve", prelude=("queries.json",)):
        (out / "queries.json").write_text('{"queries": 8}')
        (out / "stats.parquet").write_bytes(b"x")
    (out / "stats.parquet").unlink()  # now only the prelude: still a run, since it is resumed
    with pytest.raises(Boom), claimed_run_folder(str(out), "evolve", resume=True, prelude=("queries.json",)):
        raise Boom
    assert sorted(path.name for path in out.iterdir()) == [KIND_NAME, "queries.json"]


def test_a_ctrl_c_in_the_body_also_cleans_up(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt), claimed_run_folder(str(out), "retrain"):
        raise KeyboardInterrupt
    assert not out.exists()


def test_a_folder_of_another_kind_is_refused_before_the_body(tmp_path):
    out = str(tmp_path / "run")
    with claimed_run_folder(out, "perturb"):
        (tmp_path / "run" / "result.png").write_bytes(b"x")  # a run that saved something
    refusal = pytest.raises(RunFolderError, match="holds a perturb run, not an audit run")
    with refusal, claimed_run_folder(out, "audit"):
        pytest.fail("the body of a refused folder ran")
    assert issubclass(RunFolderError, UserError) and issubclass(RunLockedError, RunFolderError)


def test_refused_words_the_error_and_resume_continues(tmp_path):
    out = str(tmp_path / "run")
    with claimed_run_folder(out, "perturb"):
        (tmp_path / "run" / "result.png").write_bytes(b"x")  # a run that saved something

    def refused(error: RunFolderError) -> Exception:
        return UserError(f"--out {out} already exists and is not empty; choose another folder")

    refusal = pytest.raises(UserError, match="already exists and is not empty")
    with refusal as caught, claimed_run_folder(out, "perturb", refused=refused):
        pytest.fail("the body of a refused folder ran")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with claimed_run_folder(out, "perturb", resume=True):
        pass
    with (
        pytest.raises(RunFolderError, match="no run there"),
        claimed_run_folder(str(tmp_path / "new"), "perturb", resume=True),
    ):
        pass
    assert not (tmp_path / "new").exists()


def test_remove_temporaries_deletes_what_killed_writes_left(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / KIND_NAME).write_text(json.dumps({"kind": "evolve"}))  # a run killed mid-write
    (out / "checkpoints" / ".tmp-0123").write_bytes(b"half")
    (out / ".tmp-4567").write_bytes(b"half")
    with claimed_run_folder(str(out), "evolve", resume=True):
        assert len(list(out.rglob(".tmp-*"))) == 2
    with claimed_run_folder(str(out), "evolve", resume=True, remove_temporaries=True):
        assert not list(out.rglob(".tmp-*"))
