"""Run folders: one writer at a time, one kind of run per folder, nothing written is lost."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fooling.evo.cli import main
from fooling.evo.config import RunConfig
from fooling.evo.run import evolve
from fooling.evo.store.checkpoint import checkpoint_uris, prune_checkpoints
from fooling.evo.store.runfolder import KIND_NAME, LOCK_NAME, RunLock, RunLockedError, folder_kind

TINY = ["--population", "20", "--batch-size", "10", "--no-progress", "--no-report"]


def snapshot(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != LOCK_NAME}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture
def sleeper():
    """A live process of this host, to own a lock."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def plant_lock(folder: Path, pid: int, host: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    owner = {"pid": pid, "host": host or socket.gethostname(), "command": "evolve"}
    (folder / LOCK_NAME).write_text(json.dumps(owner))


def test_second_evolve_on_a_locked_folder_refuses_at_once_and_keeps_the_first_runs_files(
    fooling_home, tmp_path, capsys, sleeper
):
    out = tmp_path / "run"
    assert main(["evolve", "--out", str(out), "--generations", "2", *TINY]) == 0
    before = snapshot(out)
    plant_lock(out, sleeper.pid)
    capsys.readouterr()
    assert main(["evolve", "--resume", str(out), "--generations", "4", *TINY]) == 2
    line = one_error_line(capsys)
    assert f"in use by pid {sleeper.pid}" in line
    assert snapshot(out) == before
    assert main(["evolve", "--out", str(tmp_path / "run"), "--generations", "2", *TINY]) == 2
    assert snapshot(out) == before


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(fooling_home, tmp_path, caplog):
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    out = tmp_path / "stale"
    plant_lock(out, process.pid)
    search = evolve(RunConfig(population=20, generations=2, out=str(out), seed=1), show_progress=False)
    assert search.generation == 2
    assert "no longer running" in caplog.text
    assert not (out / LOCK_NAME).exists()  # released at the end


def test_a_dead_pid_of_another_pid_namespace_of_this_host_is_never_taken_over(tmp_path):
    """A container sharing this host name numbers its processes apart: its pid says nothing here."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    plant_lock(tmp_path / "x", process.pid)
    owner = json.loads((tmp_path / "x" / LOCK_NAME).read_text())
    (tmp_path / "x" / LOCK_NAME).write_text(json.dumps({**owner, "pid_namespace": "pid:[1]"}))
    with pytest.raises(RunLockedError, match=f"in use by pid {process.pid}"):
        RunLock(str(tmp_path / "x"), "evolve").acquire()
    with RunLock(str(tmp_path / "y"), "evolve"):  # what a lock records: this process's namespace
        recorded = json.loads((tmp_path / "y" / LOCK_NAME).read_text())["pid_namespace"]
    assert recorded == (os.readlink("/proc/self/ns/pid") if os.path.exists("/proc/self/ns/pid") else None)


def test_lock_of_another_host_is_never_taken_over(tmp_path):
    plant_lock(tmp_path / "x", 1, host="some-other-host.invalid")
    with pytest.raises(RunLockedError, match="some-other-host.invalid"):
        RunLock(str(tmp_path / "x"), "evolve").acquire()


@pytest.fixture
def holder(tmp_path):
    """Starts a live process that holds the lock of a folder (as a running command does)."""
    processes = []

    def hold(folder: Path) -> subprocess.Popen:
        script = (  # holds the lock; a line on stdin releases it, and the process lives on
            "import sys, time\n"
            "from fooling.evo.store.runfolder import RunLock\n"
            "lock = RunLock(sys.argv[1], 'evolve'); lock.acquire(); print('held', flush=True)\n"
            "sys.stdin.readline(); lock.release(); print('released', flush=True); time.sleep(120)\n"
        )
        command = [sys.executable, "-c", script, str(folder)]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield hold
    for process in processes:
        process.kill()
        process.wait()


def test_a_folder_copied_while_its_run_goes_on_resumes_and_the_original_stays_locked(
    fooling_home, tmp_path, capsys, caplog, holder
):
    """``cp -a`` of a running run copies its live lock: it names the folder its owner holds."""
    original, copy = tmp_path / "run", tmp_path / "copy"
    assert main(["evolve", "--out", str(original), "--generations", "2", *TINY]) == 0
    running = holder(original)
    subprocess.run(["cp", "-a", str(original), str(copy)], check=True)
    assert json.loads((copy / LOCK_NAME).read_text())["pid"] == running.pid
    capsys.readouterr()
    assert main(["evolve", "--resume", str(copy), "--generations", "4", *TINY]) == 0
    assert f"copied from the folder of pid {running.pid}" in caplog.text
    assert len(checkpoint_uris(str(copy))) > len(checkpoint_uris(str(original)))
    assert main(["evolve", "--resume", str(original), "--generations", "4", *TINY]) == 2
    assert f"in use by pid {running.pid}" in one_error_line(capsys)
    assert json.loads((original / LOCK_NAME).read_text())["pid"] == running.pid


def test_a_lock_its_live_owner_holds_open_is_never_taken_over(tmp_path, holder):
    running = holder(tmp_path / "run")
    owner = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
    assert owner["flocked"] is True
    with pytest.raises(RunLockedError, match=f"in use by pid {running.pid}"):
        RunLock(str(tmp_path / "run"), "evolve").acquire()
    assert json.loads((tmp_path / "run" / LOCK_NAME).read_text()) == owner


@pytest.mark.parametrize("then", ["taken", "being made"])
def test_a_lock_released_and_taken_again_while_a_third_process_judges_it_stays_taken(
    tmp_path, holder, monkeypatch, then
):
    """A holds; B reads A's record; A releases and C takes the folder; only then does B judge.

    ``being made``: C has created its lock file but not yet locked it or written its record.
    """
    out = tmp_path / "run"
    first = holder(out)
    second = []
    judge = RunLock._remove_unheld

    def late(self, path, handle, owner):
        if second:  # judging again: the lock C made meanwhile
            return judge(self, path, handle, owner)
        first.stdin.write("release\n")
        first.stdin.flush()
        assert first.stdout.readline().strip() == "released"
        if then == "taken":
            second.append(holder(out))
        else:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        return judge(self, path, handle, owner)

    monkeypatch.setattr(RunLock, "_remove_unheld", late)
    with pytest.raises(RunLockedError, match="in use by|is unreadable"):
        RunLock(str(out), "evolve").acquire()
    if then == "taken":
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == second[0].pid
    else:
        assert (out / LOCK_NAME).read_bytes() == b""  # C's, left for C to write


def test_a_lock_of_an_older_version_naming_a_live_process_is_refused_saying_what_to_remove(tmp_path, holder):
    """Older locks do not say whether their owner holds them open: a copy cannot be told apart."""
    running = holder(tmp_path / "run")
    subprocess.run(["cp", "-a", str(tmp_path / "run"), str(tmp_path / "copy")], check=True)
    lock = tmp_path / "copy" / LOCK_NAME
    owner = json.loads(lock.read_text())
    del owner["flocked"]
    lock.write_text(json.dumps(owner))
    expected = (
        f"in use by pid {running.pid}.*if {tmp_path / 'copy'} is a copy.*remove the copied lock: rm {lock}"
    )
    with pytest.raises(RunLockedError, match=expected):
        RunLock(str(tmp_path / "copy"), "evolve").acquire()
    assert json.loads(lock.read_text()) == owner


def test_two_processes_race_for_one_folder_and_exactly_one_wins(tmp_path):
    script = (
        "import sys, time\n"
        "from fooling.evo.store.runfolder import RunLock, RunLockedError\n"
        "try:\n"
        "    lock = RunLock(sys.argv[1], 'evolve'); lock.acquire()\n"
        "except RunLockedError:\n"
        "    sys.exit(3)\n"
        "time.sleep(3); lock.release()\n"
    )
    processes = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "r")]) for _ in range(2)]
    codes = sorted(p.wait() for p in processes)
    assert codes == [0, 3]


def test_evolve_refuses_a_folder_of_other_files_and_leaves_them(fooling_home, tmp_path, capsys):
    out = tmp_path / "site"
    out.mkdir()
    (out / "index.html").write_text("<html>mine</html>")
    (out / "stats.parquet").write_bytes(b"not yours")
    before = snapshot(out)
    assert main(["evolve", "--out", str(out), "--generations", "2", *TINY]) == 2
    assert "holds other files (index.html, stats.parquet)" in one_error_line(capsys)
    assert snapshot(out) == before and sorted(os.listdir(out)) == ["index.html", "stats.parquet"]


def test_evolve_and_retrain_refuse_each_others_folders(fooling_home, tmp_path, capsys):
    perturbed = tmp_path / "perturbed"
    perturbed.mkdir()
    (perturbed / KIND_NAME).write_text('{"kind": "perturb"}')
    (perturbed / "final.png").write_bytes(b"png")
    assert main(["evolve", "--out", str(perturbed), "--generations", "2", *TINY]) == 2
    assert "holds a perturb run" in one_error_line(capsys)
    assert main(["evolve", "--resume", str(perturbed), "--generations", "2", *TINY]) == 2
    assert one_error_line(capsys).endswith(f"--resume {perturbed} holds a perturb run, not an evolve run")
    evolved = tmp_path / "evolved"
    assert main(["evolve", "--out", str(evolved), "--generations", "2", *TINY]) == 0
    assert folder_kind(str(evolved)) == "evolve"
    before = snapshot(evolved)
    capsys.readouterr()
    code = main(["retrain", "--out", str(evolved), "--rounds", "1", "--generations", "2", "--no-progress"])
    assert code == 2
    assert "holds an evolve run" in one_error_line(capsys)
    assert snapshot(evolved) == before


def test_run_without_a_kind_record_but_with_checkpoints_is_an_evolve_run(fooling_home, tmp_path, capsys):
    out = tmp_path / "old"
    assert main(["evolve", "--out", str(out), "--generations", "2", *TINY]) == 0
    (out / KIND_NAME).unlink()  # as written before the record existed
    assert main(["evolve", "--resume", str(out), "--generations", "3", *TINY]) == 0


def test_stale_temporaries_are_removed_on_start(fooling_home, tmp_path):
    out = tmp_path / "tmps"
    assert main(["evolve", "--out", str(out), "--generations", "2", *TINY]) == 0
    for folder in (out, out / "checkpoints"):
        (folder / ".tmp-abc123").write_bytes(b"x" * 100)
    assert main(["evolve", "--resume", str(out), "--generations", "3", *TINY]) == 0
    assert not list(out.rglob(".tmp-*"))


def test_keep_checkpoints_deletes_old_ones_but_never_the_newest_good_one(fooling_home, tmp_path):
    out = tmp_path / "keep"
    args = ["--generations", "6", "--checkpoint-every", "1", "--keep-checkpoints", "2", *TINY]
    assert main(["evolve", "--out", str(out), *args]) == 0
    assert [Path(u).name for u in checkpoint_uris(str(out))] == ["gen-000005.parquet", "gen-000004.parquet"]
    # A corrupt newest file does not count: two good ones stay besides it.
    (out / "checkpoints" / "gen-000006.parquet").write_bytes(b"garbage")
    assert prune_checkpoints(str(out), 1) == [str(out / "checkpoints" / "gen-000004.parquet")]
    assert [Path(u).name for u in checkpoint_uris(str(out))] == ["gen-000006.parquet", "gen-000005.parquet"]
    assert prune_checkpoints(str(out), 0) == []


def test_resume_with_generations_not_above_the_checkpoint_says_so(fooling_home, tmp_path, capsys):
    out = tmp_path / "short"
    assert main(["evolve", "--out", str(out), "--generations", "3", *TINY]) == 0
    capsys.readouterr()
    assert main(["evolve", "--resume", str(out), "--generations", "3", *TINY]) == 2
    assert "already has 3 generations" in one_error_line(capsys)


def test_gpu_device_without_a_gpu_is_one_line_and_leaves_nothing(fooling_home, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for device in ("cuda", "gpu", "cuda:3"):
        out = tmp_path / f"dev-{device}"
        assert main(["evolve", "--out", str(out), "--generations", "2", "--device", device, *TINY]) == 2
        assert "no CUDA GPU" in one_error_line(capsys)
        assert not out.exists()
    assert main(["evolve", "--out", str(tmp_path / "d"), "--device", "tpu7", *TINY]) == 2
    assert "not" in one_error_line(capsys) and not (tmp_path / "d").exists()


def test_failed_run_leaves_no_empty_folder(fooling_home, tmp_path, capsys):
    out = tmp_path / "failed"
    assert main(["evolve", "--out", str(out), "--classes", "7,eleven", *TINY]) == 2
    assert not out.exists()


@pytest.mark.parametrize("damage", ["empty", "garbage", "folder", "no owner"])
def test_unreadable_lock_is_refused_in_words_that_say_what_to_delete(tmp_path, damage):
    out = tmp_path / "run"
    out.mkdir()
    lock = out / LOCK_NAME
    if damage == "folder":
        lock.mkdir()
    else:
        lock.write_bytes({"empty": b"", "garbage": b"\xff\x00{", "no owner": b'{"x": 1}'}[damage])
    with pytest.raises(RunLockedError, match=r"\.fooling-lock is unreadable .* delete it") as error:
        RunLock(str(out), "evolve").acquire()
    assert "pid None" not in str(error.value)
    assert lock.exists()  # never removed: its owner may be alive
