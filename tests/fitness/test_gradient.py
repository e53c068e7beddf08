"""Gradient methods: targeted and untargeted perturbations, gradient ascent, animations, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fooling.evo.cli import main
from fooling.evo.report.animation import PANELS, frame_figure
from fooling.evo.store.checkpoint import read_latest_checkpoint_rows
from fooling.fitness.gradient import ascent, perturb
from fooling.fitness.images import load_images


@pytest.fixture(scope="module")
def digits(lenet):
    """Three real test digits the LeNet labels correctly: 0, 1, 2."""
    from fooling.fitness import load_mnist

    data = load_mnist()
    rows = [int(np.flatnonzero(data.test_labels == d)[0]) for d in (0, 1, 2)]
    images = torch.from_numpy(data.test_images[rows]).float().unsqueeze(1) / 255
    return images


def test_targeted_perturbation_raises_target_and_respects_budget_exactly(lenet, digits):
    eps = 0.25
    result = perturb(lenet, digits, 7, steps=40, eps=eps, lr=0.02)
    target = result.history.probabilities[:, :, 7]
    assert (target[-1] > target[0]).all()
    assert (result.images - result.original).abs().max() <= eps + 1e-7
    assert result.images.min() >= 0 and result.images.max() <= 1
    succeeded = result.success.numpy()
    assert (target[-1].numpy()[succeeded] >= 0.99).all()
    assert int(result.steps.max()) <= 40 and len(result.history.probabilities) == int(result.steps.max()) + 1


def test_untargeted_changes_the_label(lenet, digits):
    result = perturb(lenet, digits, None, steps=100, eps=0.3, lr=0.02)
    assert result.success.all()
    final = result.history.probabilities[-1].argmax(1)
    assert (final != result.source).all()


def test_target_equal_to_label_and_bad_numbers_are_refused(lenet, digits):
    with pytest.raises(ValueError, match="already labelled '0'"):
        perturb(lenet, digits[:1], 0)
    with pytest.raises(ValueError, match="eps"):
        perturb(lenet, digits, 5, eps=0)
    with pytest.raises(ValueError, match="steps"):
        perturb(lenet, digits, 5, steps=0)


def test_ascent_raises_every_digit_to_near_certainty(lenet):
    images, history = ascent(lenet, torch.arange(10), steps=150)
    reached = history.probabilities[-1][torch.arange(10), torch.arange(10)]
    start = history.probabilities[0][torch.arange(10), torch.arange(10)]
    assert (reached > start).all()
    assert (reached >= 0.9999).all()
    assert images.shape == (10, 1, 28, 28)


def test_animation_has_four_panels_and_one_frame_per_snapshot(lenet, digits, fooling_home, tmp_path, capsys):
    result = perturb(lenet, digits[:1], 7, steps=12, eps=0.3, lr=0.05, max_frames=5)
    figure = frame_figure(result.history.frames[:, 0], result.history.frame_steps.tolist(), 1,
                          result.history.probabilities[:, 0], result.history.loss[:, 0],
                          lenet.spec.class_names, source=0, target=7)  # fmt: skip
    assert [axis.get_title().split(" (")[0].split(":")[0] for axis in figure.axes][1:] == list(PANELS[1:])
    Image.fromarray((digits[0, 0].numpy() * 255).astype(np.uint8)).save(tmp_path / "zero.png")
    image = str(tmp_path / "zero.png")
    code = main(["perturb", "--model", "mnist-lenet", "--image", image, "--target", "7", "--steps", "12",
                 "--eps", "0.3", "--lr", "0.05", "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 1  # 92% after 12 steps, short of --threshold 0.99: a failed attack exits 1
    output = capsys.readouterr().out
    assert "zero: 0" in output and "L-inf" in output and "PSNR" in output
    gif = Image.open(tmp_path / "out" / "animation.gif")
    frames = gif.n_frames
    assert 2 <= frames <= 13
    assert gif.size == Image.open(tmp_path / "out" / "summary.png").size
    # The CLI and the API agree: same image in, same final image out.
    api = perturb(
        lenet, load_images(str(tmp_path / "zero.png"), 1, (28, 28))[0], 7, steps=12, eps=0.3, lr=0.05
    )
    cli = np.asarray(Image.open(tmp_path / "out" / "final.png"), dtype=np.float32) / 255
    assert np.abs(cli - api.images[0, 0].numpy()).max() <= 1 / 255


def test_ascent_cli_writes_a_run_that_report_can_read(fooling_home, tmp_path):
    out = tmp_path / "ascent"
    assert (
        main(["ascent", "--model", "mnist-lenet", "--classes", "3,8", "--steps", "60", "--out", str(out)])
        == 0
    )
    rows = read_latest_checkpoint_rows(str(out))
    assert [row["class_name"] for row in rows] == ["3", "8"]
    assert all(0 < row["fitness"] <= 1 for row in rows)
    assert (out / "elites.png").exists() and (out / "index.html").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--image", "/nonexistent.png", "--target", "3"], "no such image"),
        (
            ["--image", "chelsea", "--target", "jellyfsh", "--model", "imagenet-lite0"],
            "did you mean 'jellyfish'",
        ),
        (["--image", "IMAGE", "--target", "3", "--eps", "0"], "--eps must be positive"),
        (["--image", "IMAGE", "--target", "3", "--steps", "0"], "expected an integer in [1, 100,000]"),
        (["--image", "EMPTY", "--target", "3"], "holds no images"),
        (["--image", "BROKEN", "--target", "3"], "not a readable image"),
        (["--image", "IMAGE", "--target", "0"], "already labelled '0'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(fooling_home, digits, tmp_path, capsys, arguments, message):
    image = tmp_path / "zero.png"
    Image.fromarray((digits[0, 0].numpy() * 255).astype(np.uint8)).save(image)
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.png").write_bytes(b"not a png")
    replace = {"IMAGE": str(image), "EMPTY": str(tmp_path / "empty"), "BROKEN": str(tmp_path / "broken.png")}
    arguments = [replace.get(a, a) for a in arguments]
    if "--model" not in arguments:
        arguments += ["--model", "mnist-lenet"]
    code = main(["perturb", *arguments, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]


def test_lite0_photo_moves_towards_target(fooling_home):
    from fooling.fitness import load_model

    model = load_model("imagenet-lite0")
    images, _ = load_images("chelsea", 3, (224, 224))
    target = model.spec.class_names.index("jellyfish")
    result = perturb(model, images, target, steps=3, eps=8 / 255)
    probabilities = result.history.probabilities[:, 0, target]
    assert probabilities[-1] > probabilities[0]
    assert (result.images - result.original).abs().max() <= 8 / 255 + 1e-7
