"""Bad input found by a red-team sweep: each is one line and exit 2 (or 130), never a traceback.

Environment variables (FOOLING_RAY_*_TIMEOUT, FOOLING_DEBUG),
``--labels`` paths holding the reference syntax's characters, ``--address ""``,
``--steps`` without bound, SIGTERM of ``ascent``/``perturb``, and huge (sparse) model files.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from small_setups import LABELS, sparse_file, tiny

from fooling.encodings import UserError
from fooling.evo.cli.main import build_parser, main
from fooling.fitness.gradient import MAX_STEPS
from fooling.fitness.limits import MAX_MODEL_BYTES, timeout_seconds

# The console script ``fooling`` (setup.cfg: fooling.evo.cli:main) does exactly this.
CONSOLE_SCRIPT = "import sys; from fooling.evo.cli import main; sys.exit(main())"


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def fooling_command(*argv: str) -> list[str]:
    """The installed ``fooling`` script where there is one, else what it runs."""
    script = Path(sys.executable).with_name("fooling")
    if script.is_file():
        return [sys.executable, str(script), *argv]
    return [sys.executable, "-c", CONSOLE_SCRIPT, *argv]


# --- 1. FOOLING_RAY_START_TIMEOUT and FOOLING_RAY_STALL_TIMEOUT ----------------------------------


@pytest.mark.parametrize("variable", ["FOOLING_RAY_START_TIMEOUT", "FOOLING_RAY_STALL_TIMEOUT"])
@pytest.mark.parametrize("value", ["abc", "nan", "inf", "-1", "0"])
def test_a_bad_ray_timeout_is_one_line_naming_it(
    fooling_home, tmp_path, capsys, monkeypatch, variable, value
):
    monkeypatch.setenv(variable, value)
    argv = ["evolve", "--workers", "1", "--generations", "1", "--population", "4", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    line = one_line(capsys)
    assert line == f"fooling: error: {variable}={value!r}: expected a positive number of seconds"


def test_ray_timeouts_are_read_when_used_not_at_import(monkeypatch):
    monkeypatch.setenv("FOOLING_RAY_START_TIMEOUT", "soon")
    done = subprocess.run(
        [sys.executable, "-c", "import fooling.evo.distributed.backend"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "FOOLING_RAY_START_TIMEOUT": "soon", "FOOLING_RAY_STALL_TIMEOUT": "nan"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with pytest.raises(UserError, match="FOOLING_RAY_START_TIMEOUT='soon'"):
        timeout_seconds("FOOLING_RAY_START_TIMEOUT", 300.0)
    for good, seconds in (("2.5", 2.5), (" 60 ", 60.0), ("", 300.0)):
        monkeypatch.setenv("FOOLING_RAY_START_TIMEOUT", good)
        assert timeout_seconds("FOOLING_RAY_START_TIMEOUT", 300.0) == seconds


# --- 2. FOOLING_DEBUG ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "", "false", "No", "OFF"])
def test_fooling_debug_off_values_keep_errors_one_line(tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("FOOLING_DEBUG", value)
    assert main(["report", str(tmp_path / "none")]) == 2
    assert "holds no checkpoint" in one_line(capsys)


@pytest.mark.parametrize("value", ["1", "true", "Yes", "on"])
def test_fooling_debug_on_values_show_the_traceback(tmp_path, monkeypatch, value):
    monkeypatch.setenv("FOOLING_DEBUG", value)
    with pytest.raises(UserError, match="holds no checkpoint"):
        main(["report", str(tmp_path / "none")])


def test_another_fooling_debug_value_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FOOLING_DEBUG", "maybe")
    assert main(["report", str(tmp_path / "none")]) == 2
    line = one_line(capsys)
    assert line.startswith("fooling: error: FOOLING_DEBUG='maybe': expected 1, true, yes or on")


# --- 4. --labels paths with &, =, ?, #, % ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["cats&dogs.txt", "a=b.txt", "what?.txt", "no#1.txt", "100%25.txt", "x&channels=1"]
)
def test_labels_with_reference_characters_in_their_name(fooling_home, tmp_path, capsys, name):
    model = tmp_path / "net.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(tiny(0)), str(model))
    labels = tmp_path / name
    labels.write_text("\n".join(LABELS) + "\n")
    out = tmp_path / "run"
    argv = ["--model", str(model), "--labels", str(labels), "--input-size", "16,16", "--no-progress"]
    assert (
        main(["evolve", *argv, "--generations", "1", "--population", "8", "--no-report", "--out", str(out)])
        == 0
    )
    assert main(["evolve", "--resume", str(out), "--generations", "2", "--no-progress", "--no-report"]) == 0
    assert "generation 1" in capsys.readouterr().out

    from fooling.evo.run import GENOME_CLASSES
    from fooling.evo.store.checkpoint import read_latest_checkpoint
    from fooling.fitness.sources import split_reference

    checkpoint = read_latest_checkpoint(str(out), GENOME_CLASSES)
    assert list(checkpoint.archive.class_names) == list(LABELS)
    assert split_reference(checkpoint.config.model)[1].labels == str(labels.absolute())


@pytest.mark.parametrize("folder", ["what?", "cats&dogs", "no#1", "100%25", "x?labels=y.txt"])
@pytest.mark.parametrize("labelled", [True, False])
def test_a_model_file_with_reference_characters_in_its_path(fooling_home, tmp_path, capsys, folder, labelled):
    """The path is the file's, whole: written escaped in the run's reference, read back the same."""
    model = tmp_path / folder / "net?.pt"
    model.parent.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(tiny(0)), str(model))
    # A file named as the stored reference spells the model's path: never read in its place.
    (model.parent / "net%3F.pt").write_bytes(b"not the model")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    out = tmp_path / "run"
    argv = ["--model", str(model), "--input-size", "16,16", "--no-progress", "--no-report"]
    argv += ["--labels", str(labels)] if labelled else []
    assert main(["evolve", *argv, "--generations", "1", "--population", "8", "--out", str(out)]) == 0
    assert main(["evolve", "--resume", str(out), "--generations", "2", "--no-progress", "--no-report"]) == 0
    assert "generation 1" in capsys.readouterr().out

    from fooling.evo.run import GENOME_CLASSES
    from fooling.evo.store.checkpoint import read_latest_checkpoint
    from fooling.fitness.sources import split_reference

    checkpoint = read_latest_checkpoint(str(out), GENOME_CLASSES)
    path, options = split_reference(checkpoint.config.model)
    assert path == str(model.absolute())
    assert options.labels == (str(labels.absolute()) if labelled else None)
    expected = list(LABELS) if labelled else [str(i) for i in range(len(LABELS))]
    assert list(checkpoint.archive.class_names) == expected


def test_a_typed_model_path_starting_with_a_tilde_is_the_home_folders(
    fooling_home, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "what?").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(tiny(0)), str(tmp_path / "what?" / "net.pt"))
    out = tmp_path / "run"
    argv = ["--model", "~/what?/net.pt", "--input-size", "16,16", "--no-progress", "--no-report"]
    assert main(["evolve", *argv, "--generations", "1", "--population", "8", "--out", str(out)]) == 0
    assert "generation 0" in capsys.readouterr().out


# --- 5. --address "" --------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["", "  "])
def test_an_empty_address_is_one_line(fooling_home, tmp_path, capsys, address):
    out = tmp_path / "x"
    tiny_run = ["--generations", "1", "--population", "4", "--no-progress", "--no-report"]
    assert main(["evolve", *tiny_run, "--address", address, "--out", str(out)]) == 2
    line = one_line(capsys)
    expected = "expected a Ray cluster address (auto or HOST:PORT)"
    assert line == f"fooling: error: evolve: argument --address: {expected}, got {address!r}"
    assert not out.exists()
    with pytest.raises(UserError, match="audit: argument --address: expected a Ray cluster address"):
        build_parser().parse_args(["audit", "--workers", "1", "--address", address, "--out", str(out)])


# --- 6. --steps of perturb and ascent; SIGTERM --------------------------------------------------------------


@pytest.mark.parametrize("steps", ["1000000000000", str(MAX_STEPS + 1), "0"])
@pytest.mark.parametrize("command", [["ascent"], ["perturb", "--image", "chelsea", "--untargeted"]])
def test_steps_have_a_documented_bound(tmp_path, capsys, command, steps):
    out = tmp_path / "x"
    expected = f"argument --steps: expected an integer in [1, {MAX_STEPS:,}], got '{steps}'"
    with pytest.raises(UserError, match=re.escape(expected)):  # refused while parsing, before any step
        build_parser().parse_args([*command, "--steps", steps, "--out", str(out)])
    assert main([*command, "--steps", steps, "--out", str(out)]) == 2
    assert one_line(capsys) == f"fooling: error: {command[0]}: {expected}"
    assert not out.exists()
    assert (
        build_parser().parse_args([*command, "--steps", str(MAX_STEPS), "--out", str(out)]).steps == MAX_STEPS
    )
    assert (
        f"up to {MAX_STEPS:,}"
        in build_parser()._subparsers._group_actions[0].choices[command[0]].format_help()
    )


@pytest.mark.parametrize("kind", ["ascent", "perturb"])
def test_sigterm_stops_a_gradient_command_and_frees_its_folder(fooling_home, lenet, tmp_path, kind):
    out = tmp_path / kind
    extra = []
    if kind == "perturb":  # a gray square pushed, with a tiny budget, towards a class it is not
        from PIL import Image

        from fooling.fitness.scorer import Scorer

        photo = tmp_path / "gray.png"
        Image.new("L", (28, 28), 128).save(photo)
        label = int(Scorer(lenet, device="cpu").score(torch.full((1, 1, 28, 28), 128 / 255)).argmax())
        target = str((label + 1) % 10)
        extra = ["--image", str(photo), "--target", target, "--threshold", "0.9999999", "--eps", "0.001"]
        extra.append("--no-progress")
    argv = [kind, "--model", "mnist-lenet", "--device", "cpu", *extra, "--out", str(out)]
    process = subprocess.Popen(
        fooling_command(*argv, "--steps", str(MAX_STEPS)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FOOLING_HOME": str(fooling_home)},
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / ".fooling-lock").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.5)  # into the steps
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "fooling: interrupted" and "Traceback" not in err
    assert not out.exists()  # created by the command, nothing written yet: removed, lock and all
    assert main([*argv, "--steps", "2"]) in (0, 1)  # the folder takes the next run (1: attack failed)
    assert (out / ".fooling-run").exists() and not (out / ".fooling-lock").exists()


# --- 7. huge model files ------------------------------------------------------------------------------------


HUGE = 40 * 2**30


def test_a_huge_model_file_is_refused_by_its_size(tmp_path, capsys):
    model = sparse_file(tmp_path / "huge.onnx", HUGE)
    try:
        assert main(["evolve", "--model", str(model), "--out", str(tmp_path / "run")]) == 2
    finally:
        model.unlink()
    line = one_line(capsys)
    assert line == (
        f"fooling: error: model file {model}: {HUGE:,} bytes, over the "
        f"{MAX_MODEL_BYTES / 2**30:g} GiB limit of model files"
    )
    assert not (tmp_path / "run").exists()


def test_huge_onnx_external_data_is_refused_by_its_size(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    model = tmp_path / "net.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(tiny(0), (torch.zeros(1, 3, 16, 16),), str(model), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "n"}})  # fmt: skip
    proto = onnx.load(str(model))
    onnx.save_model(proto, str(model), save_as_external_data=True, location="weights.bin", size_threshold=0)
    weights = sparse_file(tmp_path / "weights.bin", HUGE)
    try:
        assert main(["evolve", "--model", str(model), "--out", str(tmp_path / "run")]) == 2
    finally:
        weights.unlink()
    line = one_line(capsys)
    assert line.startswith(f"fooling: error: {model}: tensor ")
    assert line.endswith(
        f"keeps its data in 'weights.bin': {HUGE:,} bytes, over the 8 GiB limit of model files"
    )


# --- 8. what a run would write but could not read back ---------------------------------------------------


def test_ascent_with_a_step_beyond_the_pixel_range_is_refused_before_any_work(tmp_path, capsys):
    """--lr 1e308 overflowed float32 into NaN images, whose checkpoint the tool then refused to read."""
    out = tmp_path / "out"
    assert main(["ascent", "--model", "mnist-lenet", "--lr", "1e308", "--steps", "2", "--out", str(out)]) == 2
    assert "--lr must be positive and at most 1" in one_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "problem"), [("a" * 1001, "1,001 characters"), ("tab\there", "a control character")]
)
def test_a_labels_line_no_table_could_hold_is_refused(fooling_home, tmp_path, capsys, name, problem):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join([*LABELS[:-1], name]) + "\n")
    model = tmp_path / "net.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(tiny(0).eval()), str(model))
    out = tmp_path / "run"
    argv = [
        "evolve",
        "--model",
        str(model),
        "--labels",
        str(labels),
        "--input-size",
        "16,16",
        "--out",
        str(out),
    ]
    assert main([*argv, "--population", "4", "--generations", "1", "--no-progress", "--no-report"]) == 2
    line = one_line(capsys)
    assert f"line {len(LABELS)} holds {problem}" in line and "at most 1,000 characters" in line
    assert not out.exists()
