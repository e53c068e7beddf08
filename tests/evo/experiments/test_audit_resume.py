"""``fooling audit --resume OUT``: an interrupted audit continues to the report of an uninterrupted one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from small_setups import LABELS, tiny

from fooling.evo.cli import main
from fooling.evo.experiments.audit import SETTINGS_NAME
from fooling.evo.store.runfolder import LOCK_NAME


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> list[str]:
    """The ``--model`` flags of a TorchScript classifier of 16x16 images into :data:`LABELS`."""
    folder = tmp_path_factory.mktemp("audit-resume-model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(tiny(0)), str(folder / "net.pt"))
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return [
        "--model",
        str(folder / "net.pt"),
        "--input-size",
        "16,16",
        "--labels",
        str(folder / "labels.txt"),
    ]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """One FOOLING_HOME (the ONNX export cache) for the audits here and their subprocesses."""
    return tmp_path_factory.mktemp("audit-resume-home")


@pytest.fixture(autouse=True)
def private_home(home, monkeypatch):
    monkeypatch.setenv("FOOLING_HOME", str(home))


def audit_args(model: list[str], *extra: str) -> list[str]:
    return ["audit", *model, "--reference", "none", "--seed", "3", "--no-progress", *extra]


@pytest.fixture(scope="module")
def straight(model, home, tmp_path_factory) -> Path:
    """An uninterrupted small-budget audit (20 generations of 50 per search, checkpoints every 2)."""
    out = tmp_path_factory.mktemp("audit-straight") / "report"
    previous = os.environ.get("FOOLING_HOME")
    os.environ["FOOLING_HOME"] = str(home)
    try:
        assert main(audit_args(model, "--out", str(out))) == 0
    finally:
        if previous is None:
            del os.environ["FOOLING_HOME"]
        else:
            os.environ["FOOLING_HOME"] = previous
    return out


def same_report(first: Path, second: Path) -> None:
    pd.testing.assert_frame_equal(
        pd.read_parquet(first / "audit.parquet"), pd.read_parquet(second / "audit.parquet")
    )
    one, two = (json.loads((folder / "summary.json").read_text()) for folder in (first, second))
    for facts in (one, two):
        del facts["seconds"], facts["date"]
    assert one == two


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_an_audit_killed_after_its_first_checkpoint_resumes_to_the_same_report(
    model, home, straight, tmp_path, capsys, caplog
):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "fooling.evo.cli.main", *audit_args(model, "--out", str(out))]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "FOOLING_HOME": str(home)})  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not list((out / "cppn" / "checkpoints").glob("gen-*.parquet")):
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)  # no handler runs: locks stay behind
        process.wait(timeout=60)
    finally:
        process.kill()
        process.stderr.close()
    assert (out / LOCK_NAME).exists()  # the audit's, held until it ends: left by the killed process
    assert not (out / "audit.parquet").exists()
    # Run again as new, it says how to continue.
    assert main(audit_args(model, "--out", str(out))) == 2
    assert f"--out {out} holds an audit; continue it with fooling audit --resume {out}" in one_error_line(
        capsys
    )
    # --resume continues with the stored settings (given again, they must agree).
    assert main(["audit", "--resume", str(out), "--seed", "3", "--no-progress"]) == 0
    assert "which is no longer running" in caplog.text  # the killed process's locks, taken over
    same_report(straight, out)


def test_an_audit_killed_before_any_checkpoint_resumes_to_the_same_report(straight, tmp_path, capsys):
    # As SIGKILL early leaves it: settings, locks of a dead process, a search folder with the
    # statistics and a temporary file of its first checkpoint, no checkpoint, no second search.
    out = tmp_path / "early"
    out.mkdir()
    for name in (SETTINGS_NAME, ".fooling-run"):
        shutil.copy(straight / name, out / name)
    (out / "cppn" / "checkpoints").mkdir(parents=True)
    shutil.copy(straight / "cppn" / ".fooling-run", out / "cppn" / ".fooling-run")
    shutil.copy(straight / "cppn" / "stats.parquet", out / "cppn" / "stats.parquet")
    (out / "cppn" / "checkpoints" / ".tmp-gen-000001.parquet").write_bytes(b"half a checkpoint")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lock = {
        "pid": gone.pid,
        "host": os.uname().nodename,
        "command": "audit",
        "started": "2025-01-01T00:00:00",
    }
    for folder in (out, out / "cppn"):
        (folder / LOCK_NAME).write_text(json.dumps(lock) + "\n")
    assert main(["audit", "--resume", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    same_report(straight, out)
    assert not list(out.rglob(".tmp-*")) and not (out / LOCK_NAME).exists()


def test_resuming_a_finished_audit_writes_the_same_report(straight, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(straight, out)
    assert main(["audit", "--resume", str(out), "--no-progress"]) == 0
    same_report(straight, out)


@pytest.mark.parametrize(
    ("make", "arguments", "message"),
    [
        (None, [], "--resume {out}: no such folder"),
        ("empty", [], "--resume {out} is not an audit folder (no audit there)"),
        ("evolve", [], "--resume {out} is not an audit folder (it holds an evolve run)"),
        ("files", [], "--resume {out} is not an audit folder (no audit there)"),
        ("audit", ["--out", "{out}"], "give the audit folder once: --resume OUT replaces --out"),
        ("audit", ["--budget", "medium"], "--budget medium differs from the audit's small"),
        ("audit", ["--seed", "4"], "--seed 4 differs from the audit's 3"),
    ],
)
def test_resume_of_what_is_not_an_audit_is_one_line_exit_2(
    straight, model, tmp_path, capsys, make, arguments, message
):
    out = tmp_path / "folder"
    if make == "empty":
        out.mkdir()
    elif make == "evolve":
        shutil.copytree(straight / "cppn", out)
    elif make == "files":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif make == "audit":
        shutil.copytree(straight, out)
    before = sorted(str(path) for path in out.rglob("*")) if out.exists() else None
    arguments = [argument.format(out=out) for argument in arguments]
    assert main(["audit", "--resume", str(out), "--no-progress", *arguments]) == 2
    assert message.format(out=out) in one_error_line(capsys)
    assert (sorted(str(path) for path in out.rglob("*")) if out.exists() else None) == before


def test_audit_without_model_or_out_says_what_it_needs(capsys):
    assert main(["audit", "--no-progress"]) == 2
    assert "audit needs --model and --out (or --resume OUT to continue an audit)" in one_error_line(capsys)
