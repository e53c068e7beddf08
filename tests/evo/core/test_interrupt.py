"""Ctrl-C on a real `fooling evolve` process: checkpoint, exit 130, resume to the same archive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from fooling.evo.config import RunConfig
from fooling.evo.run import GENOME_CLASSES, evolve, resume_config
from fooling.evo.store.checkpoint import read_latest_checkpoint


def test_sigint_checkpoints_and_resume_matches_uninterrupted(fooling_home, tmp_path):
    out = tmp_path / "interrupted"
    command = [
        sys.executable,
        "-m",
        "fooling.evo.cli.main",
        "evolve",
        "--generations",
        "400",
        "--population",
        "40",
        "--batch-size",
        "20",
        "--seed",
        "5",
        "--checkpoint-every",
        "0",
        "--no-progress",
        "--out",
        str(out),
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FOOLING_HOME": str(fooling_home)},
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until the loop runs (the config is logged first)
            line = process.stderr.readline()
            if "run configuration" in line or not line:
                break
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "interrupted" in err
    stopped = read_latest_checkpoint(str(out), GENOME_CLASSES)
    assert 0 <= stopped.generation < 399
    config = RunConfig(
        model="mnist-lenet",
        generations=stopped.generation + 3,
        population=40,
        batch_size=20,
        seed=5,
        checkpoint_every=0,
        out=str(tmp_path / "straight"),
    )
    straight = evolve(config, show_progress=False)
    resumed = evolve(
        resume_config(str(out), generations=stopped.generation + 3), resume=True, show_progress=False
    )
    assert resumed.archive.equals(straight.archive)
