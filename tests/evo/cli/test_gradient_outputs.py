"""Gradient commands keep what they show and what they wrote: frames, names, exit codes."""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fooling.evo.cli import main
from fooling.evo.report.animation import frame_figure
from fooling.fitness import load_mnist
from fooling.fitness.gradient import _Frames, ascent, perturb
from fooling.fitness.images import load_images, unique_names
from fooling.fitness.limits import MAX_IMAGE_PIXELS


@pytest.fixture(scope="module")
def zero(lenet) -> torch.Tensor:
    """The first test-set zero, ``(1, 1, 28, 28)`` in [0, 1] (the LeNet labels it 0)."""
    data = load_mnist()
    row = int(np.flatnonzero(data.test_labels == 0)[0])
    return torch.from_numpy(data.test_images[row : row + 1]).float().unsqueeze(1) / 255


def save_digit(image: torch.Tensor, path: Path) -> Path:
    Image.fromarray((image[0, 0].numpy() * 255).round().astype(np.uint8)).save(path)
    return path


def test_frames_are_copies_frame_zero_is_the_input_and_every_step_is_kept(lenet, zero):
    result = perturb(lenet, zero, 7, steps=12, eps=0.3, lr=0.05, threshold=0.999)
    history = result.history
    taken = int(result.steps[0])
    assert history.frame_steps.tolist() == list(range(taken + 1))  # a frame for every step
    assert torch.equal(history.frames[0, 0], zero[0])  # frame 0 is the photo itself
    assert torch.equal(history.frames[-1, 0], result.images[0])
    changes = (history.frames[1:] - history.frames[:-1]).abs().flatten(1).amax(1)
    assert (changes > 0).all()  # every "change since previous frame" panel shows something
    figure = frame_figure(history.frames[:, 0], history.frame_steps.tolist(), 1, history.probabilities[:, 0],
                          history.loss[:, 0], lenet.spec.class_names, source=0, target=7)  # fmt: skip
    shown = float(re.search(r"max ([0-9.]+)/255", figure.axes[1].get_title()).group(1))
    assert shown > 0


def test_frames_thin_evenly_past_the_cap_keeping_first_and_last():
    frames = _Frames(10)
    for step in range(301):
        frames.offer(step, torch.full((1, 1, 2, 2), float(step)), last=step == 300)
    kept, steps = frames.chosen()
    assert len(kept) <= 10 and steps[0] == 0 and steps[-1] == 300
    assert [int(frame[0, 0, 0, 0]) for frame in kept] == steps  # each frame is the image of its step
    gaps = np.diff(steps)
    assert gaps.max() <= 2.5 * gaps.min()
    assert len(frames.frames) <= 21  # memory stays bounded while running


def test_ascent_frames_start_at_the_start_image_and_differ(lenet):
    images, history = ascent(lenet, torch.tensor([3]), steps=8, lr=0.05)
    assert history.frame_steps.tolist() == list(range(9))
    assert torch.equal(history.frames[-1], images.cpu())
    assert ((history.frames[1:] - history.frames[:-1]).abs().flatten(1).amax(1) > 0).all()


def test_same_stem_in_a_folder_gets_distinct_outputs(fooling_home, zero, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    save_digit(zero, photos / "x.png")
    Image.open(photos / "x.png").convert("L").save(photos / "x.bmp")
    assert load_images(str(photos), 1, (28, 28))[1] == ["x.bmp", "x.png"]
    out = tmp_path / "out"
    code = main(["perturb", "--model", "mnist-lenet", "--image", str(photos), "--target", "7",
                 "--steps", "60", "--threshold", "0.5", "--eps", "0.3", "--lr", "0.05", "--no-progress",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    assert (out / "x.png" / "final.png").exists() and (out / "x.bmp" / "final.png").exists()
    assert "in 1 steps" not in capsys.readouterr().out


def test_a_photo_named_dot_dot_png_writes_inside_out_and_overwrites_nothing(fooling_home, zero, tmp_path):
    # A shared photo folder: "...png" has the stem "..", which named --out's parent before.
    photos = tmp_path / "photos"
    photos.mkdir()
    save_digit(zero, photos / "cat.png")
    for name in ("...png", "..png"):  # PIL reads no extension from these names: copies
        (photos / name).write_bytes((photos / "cat.png").read_bytes())
    project = tmp_path / "project"
    project.mkdir()
    (project / "summary.png").write_text("my own work, not to be lost\n")
    out = project / "attack"
    code = main(["perturb", "--model", "mnist-lenet", "--image", str(photos), "--untargeted", "--steps", "1",
                 "--no-progress", "--out", str(out)])  # fmt: skip
    assert code in (0, 1)
    assert (project / "summary.png").read_text() == "my own work, not to be lost\n"
    assert sorted(path.name for path in project.iterdir()) == ["attack", "summary.png"]
    assert sorted(path.name for path in out.iterdir() if not path.name.startswith(".")) == ["_", "__", "cat"]
    for name in ("_", "__", "cat"):
        assert sorted(path.name for path in (out / name).iterdir()) == [
            "animation.gif", "final.png", "perturbation.png", "summary.png"
        ]  # fmt: skip
    assert not list(out.rglob(".tmp-*"))


def test_names_from_photo_files_are_single_safe_components():
    files = [Path(name) for name in ("...png", "..png", ".hidden.png", "a\\b.png", "x\x01.png", "x.png")]
    names = unique_names(files)
    assert names == ["__", "_", "_hidden", "a_b", "x_", "x"]
    assert all(name not in (".", "..") and "/" not in name and not name.startswith(".") for name in names)


def test_failed_attack_exits_non_zero(fooling_home, zero, tmp_path, capsys):
    image = save_digit(zero, tmp_path / "zero.png")
    code = main(["perturb", "--model", "mnist-lenet", "--image", str(image), "--target", "7", "--steps", "1",
                 "--eps", "0.01", "--no-progress", "--out", str(tmp_path / "out")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    assert "FAILED in 1 step;" in captured.out
    assert captured.err.strip().splitlines() == ["fooling: 1 of 1 attack(s) failed"]


def test_perturb_into_a_folder_in_use_is_refused(fooling_home, zero, tmp_path, capsys):
    import json
    import os
    import socket

    out = tmp_path / "busy"
    out.mkdir()
    (out / ".fooling-lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    image = save_digit(zero, tmp_path / "zero.png")
    code = main(
        ["perturb", "--model", "mnist-lenet", "--image", str(image), "--target", "7", "--out", str(out)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "in use by pid" in err[0]


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG file whose header declares ``width`` x ``height`` pixels."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IHDR")
    data[start + 4 : start + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[start : start + 17]))
    data[start + 17 : start + 21] = struct.pack(">I", crc)
    return bytes(data)


@pytest.mark.parametrize("side", [12000, 20000])
def test_huge_images_are_refused_from_their_header(fooling_home, tmp_path, capsys, side):
    assert side * side > MAX_IMAGE_PIXELS
    image = tmp_path / "huge.png"
    image.write_bytes(png_declaring(side, side))
    out = tmp_path / "out"
    code = main(
        ["perturb", "--model", "mnist-lenet", "--image", str(image), "--target", "7", "--out", str(out)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "limit" in err[0] and "huge.png" in err[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--eps", "8"], "at most 1"),
        (["--eps", "-0.1"], "--eps must be positive"),
        (["--lr", "1e308"], "--lr must be positive and at most 1"),
        (["--threshold", "1"], "--threshold must be in (0, 1)"),
        (["--device", "cuda:7"], "--device cuda:7"),
    ],
)
def test_perturb_numbers_out_of_range(fooling_home, zero, tmp_path, capsys, arguments, message):
    if "cuda:7" in arguments and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    image = save_digit(zero, tmp_path / "zero.png")
    out = tmp_path / "out"
    code = main(["perturb", "--model", "mnist-lenet", "--image", str(image), "--target", "7", *arguments,
                 "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]
    assert not out.exists()


def test_ascent_refuses_bad_seed_and_repeated_classes(fooling_home, tmp_path, capsys):
    for arguments, message in (
        (["--seed", "-1"], "--seed: expected an integer >= 0"),  # the parser, before any work
        (["--seed", "4294967296"], "--seed must be in [0,"),
        (["--classes", "3,3"], "names '3' twice"),
    ):
        code = main(["ascent", "--model", "mnist-lenet", *arguments, "--out", str(tmp_path / "a")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0]
        assert not (tmp_path / "a").exists()
