"""Inputs that must be refused in one line (exit 2) and small things a user notices (issue 14)."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
import torch
from PIL import Image

from fooling.evo.cli.main import build_parser, main
from fooling.evo.config import RunConfig
from fooling.fitness.limits import check_device


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--seed", "-1"], "--seed"),
        (["--seed", "4294967296"], "--seed must be in [0, 4294967295]"),
        (["--model", "mnist-lenet-seed99999999999999999999"], "seed of model"),
        (["--classes", "3,3"], "names '3' twice"),
        (["--classes", "3,Cat,7,cat"], "names 'cat' twice"),  # one class in two spellings
        (["--image-size", "100000"], "--image-size must be in [0, 1024]"),
        (["--crops", "10", "--image-size", "27"], "--image-size 27 is smaller than a crop: give at least 28"),
        (["--preset", "paper", "--image-size", "20"], "--image-size 20 is smaller than a crop"),
        (["--color-space", "hls"], "--color-space hls is for --encoding cppn"),
        (["--keep-checkpoints", "-1"], "--keep-checkpoints"),
        (["--address", "127.0.0.1:1"], "--workers is 0 (everything in this process)"),
    ],
)
def test_evolve_refuses_in_one_line_and_leaves_nothing(fooling_home, tmp_path, capsys, arguments, message):
    out = tmp_path / "x"
    assert main(["evolve", "--out", str(out), "--generations", "2", *arguments]) == 2
    line = one_line(capsys)
    assert line.startswith("fooling: error: ") and message in line
    assert not out.exists()


def test_train_refuses_negative_and_huge_seeds(fooling_home, capsys):
    assert main(["train", "--seed", "-1"]) == 2
    assert "--seed" in one_line(capsys)
    assert main(["train", "--model", "mnist-lenet-seed99999999999999999999"]) == 2
    assert "4294967295" in one_line(capsys)


def test_retrain_suggests_a_misspelt_model(fooling_home, tmp_path, capsys):
    assert main(["retrain", "--model", "mnist-lenat", "--out", str(tmp_path / "r")]) == 2
    assert "did you mean 'mnist-lenet'" in one_line(capsys)
    assert not (tmp_path / "r").exists()


def test_retrain_refuses_an_address_without_workers(fooling_home, tmp_path, capsys):
    assert main(["retrain", "--address", "127.0.0.1:1", "--out", str(tmp_path / "r")]) == 2
    assert "--workers is 0 (everything in this process)" in one_line(capsys)
    assert not (tmp_path / "r").exists()


def test_bare_fooling_and_parse_errors_say_fooling_once(capsys):
    assert main([]) == 2
    line = one_line(capsys)
    assert line.count("fooling:") == 1 and "give a command" in line and "evolve" in line
    assert main(["evolve", "--generations", "zero"]) == 2
    line = one_line(capsys)
    assert line.startswith("fooling: error: evolve: argument --generations")


def test_debug_verbose_and_threads_work_after_the_command(fooling_home, tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        assert main(["report", str(tmp_path / "none"), "--threads", "1", "-v"]) == 2
        assert "holds no checkpoint" in one_line(capsys)
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="holds no checkpoint"):  # --debug: the traceback
            main(["report", str(tmp_path / "none"), "--debug"])
        assert main(["--threads", "0", "report", "x"]) == 2
        assert "--threads" in one_line(capsys)
    finally:
        torch.set_num_threads(before)


def test_image_size_help_says_what_zero_means():
    evolve = build_parser()._subparsers._group_actions[0].choices["evolve"]
    text = " ".join(evolve.format_help().split())
    assert "0: the model's input size" in text and "--threads" in text and "--keep-checkpoints" in text


def test_gpu_is_cuda_and_device_names_are_checked():
    assert RunConfig(device="gpu").device == "cuda"
    assert RunConfig(device=" CPU").device == "cpu"  # torch.device itself refuses both spellings
    with pytest.raises(ValueError, match="not a device"):
        check_device("quantum")


def test_a_device_in_capitals_or_with_spaces_runs(fooling_home, tmp_path):
    # check_device accepted them, then torch.device raised its own traceback.
    for device in ("CPU", " cpu"):
        out = tmp_path / device.strip()
        assert main(["evolve", "--device", device, "--generations", "1", "--population", "8",
                     "--no-progress", "--no-report", "--out", str(out)]) == 0  # fmt: skip


def test_run_files_are_written_0644_under_the_usual_umask(fooling_home, tmp_path):
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    out = tmp_path / "modes"
    assert (
        main(["evolve", "--out", str(out), "--generations", "2", "--population", "10", "--no-progress"]) == 0
    )
    modes = {
        p.name: stat.S_IMODE(p.stat().st_mode)
        for p in Path(out).rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }
    assert modes and set(modes.values()) == {0o666 & ~mask}, modes


def test_make_toolbox_takes_a_run_config():
    from fooling.evo.toolbox import make_toolbox

    toolbox = make_toolbox(RunConfig(model="mnist-lenet", generations=2))
    import numpy as np

    genomes = toolbox.random(3, np.random.default_rng(0))
    assert genomes.pixels.shape == (3, 1, 28, 28)


def test_progress_bars_show_percent_and_perturb_steps(fooling_home, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["evolve", "--out", str(out), "--generations", "2", "--population", "20", "--no-report"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"median=\d+\.\d\d%", err), err[-400:]  # as the summary says it, not 0.0258
    Image.new("L", (28, 28), 0).save(tmp_path / "zero.png")
    code = main(["perturb", "--model", "mnist-lenet", "--image", str(tmp_path / "zero.png"), "--target", "7",
                 "--steps", "3", "--out", str(tmp_path / "p")])  # fmt: skip
    assert code in (0, 1)
    assert re.search(r"perturb: .*\d+/3 \[", capsys.readouterr().err), "perturb shows a progress bar"


def test_misspelt_choices_are_suggested(fooling_home, tmp_path, capsys):
    assert main(["evolv"]) == 2
    assert "did you mean 'evolve'?" in one_line(capsys)
    for flag, wrong, right in (("--color-space", "rbg", "rgb"), ("--coordinates", "pixl", "pixel")):
        assert main(["evolve", "--out", str(tmp_path / "x"), flag, wrong]) == 2
        assert f"did you mean {right!r}?" in one_line(capsys)
    assert main(["ascent", "--out", str(tmp_path / "a"), "--start", "nois"]) == 2
    assert "did you mean 'noise'?" in one_line(capsys)
    assert main(["perturb", "--image", "chelsa", "--target", "3", "--out", str(tmp_path / "p")]) == 2
    assert "did you mean 'chelsea'?" in one_line(capsys)
    assert not any(tmp_path.iterdir())


def test_threads_above_the_machines_cores_and_bad_devices_are_one_line(fooling_home, tmp_path, capsys):
    assert main(["--threads", "99999", "evolve", "--out", str(tmp_path / "x")]) == 2
    assert "at most" in one_line(capsys)
    # transfer and ablate checked no device before torch raised its own error
    for command in (["transfer", str(tmp_path), "--to", "mnist-lenet"], ["ablate", str(tmp_path)]):
        assert main([*command, "--device", "foo"]) == 2
        assert "--device foo: not a device" in one_line(capsys)


def test_a_file_or_nothing_where_a_folder_belongs_is_one_line(fooling_home, tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    assert main(["evolve", "--out", str(file), "--generations", "1"]) == 2
    assert "is a file, not a folder" in one_line(capsys)  # was "[Errno 17] File exists"
    for command in (["report", str(file)], ["transfer", str(file), "--to", "mnist-lenet"]):
        assert main(command) == 2
        assert "is a file, not a run folder" in one_line(capsys)  # was "[Errno 20] Not a directory"
    assert main(["evolve", "--out", "", "--generations", "1"]) == 2
    assert "--out is empty" in one_line(capsys)
    assert main(["ablate", str(tmp_path), "--seed", "-1"]) == 2
    assert "--seed: expected an integer >= 0" in one_line(capsys)
    assert file.read_text() == "mine"


def test_train_shows_a_trained_lenet_whose_record_is_damaged(fooling_home, tmp_path, monkeypatch, capsys):
    import shutil

    from fooling.fitness import lenet_weights_path

    weights = lenet_weights_path(0)
    monkeypatch.setenv("FOOLING_HOME", str(tmp_path))
    copy = lenet_weights_path(0)
    copy.parent.mkdir(parents=True)
    shutil.copyfile(weights, copy)
    copy.with_suffix(".json").write_text("{damaged")
    assert main(["train"]) == 0  # was "Expecting property name ...", naming no file, exit 2
    assert "already trained" in capsys.readouterr().out


def test_settings_a_new_run_would_ignore_are_one_line(fooling_home, tmp_path, capsys):
    for flags, says in [
        (["--scorers", "3"], "--scorers 3 sets Ray's scorer actors, but --workers is 0"),
        (["--encoding", "cppn", "--crossover-probability", "0.5"], "the cppn encoding has no crossover"),
        # Encoding settings the run's encoding does not read (each encoding declares its own).
        (
            ["--encoding", "cppn", "--halve-mutation-every", "5"],
            "--halve-mutation-every 5 applies to the direct encoding only; --encoding cppn ignores it",
        ),
        (["--max-nodes", "64"], "--max-nodes 64 applies to the cppn encoding only; --encoding direct"),
        (["--coordinates", "pixel"], "--coordinates pixel applies to the cppn encoding only"),
    ]:
        out = tmp_path / "run"
        assert main(["evolve", *flags, "--generations", "1", "--no-progress", "--out", str(out)]) == 2
        assert says in one_line(capsys)
        assert not out.exists()
