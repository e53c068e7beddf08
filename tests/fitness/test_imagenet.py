"""ImageNet models that work offline, and tiny searches of both encodings on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rounding import gamma

from fooling.evo.cli import main
from fooling.evo.config import RunConfig
from fooling.evo.run import GENOME_CLASSES, evolve
from fooling.evo.store.checkpoint import read_latest_checkpoint
from fooling.fitness import (
    ModelUnavailableError,
    Scorer,
    UnknownNameError,
    class_index,
    imagenet_class_names,
    load_model,
)


@pytest.fixture(scope="module")
def lite0():
    return load_model("imagenet-lite0")


def test_lite0_labels_chelsea_a_cat(lite0):
    from skimage import data

    photo = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float().unsqueeze(0) / 255
    photo = F.interpolate(photo, size=(224, 224), mode="bilinear", antialias=True)
    probabilities = Scorer(lite0).score(photo)[0]
    top = lite0.spec.class_names[int(probabilities.argmax())]
    assert top in ("Egyptian cat", "tabby", "tiger cat")
    assert len(lite0.spec.class_names) == 1000


def test_wrong_image_size_is_refused(lite0):
    with pytest.raises(ValueError, match=r"takes images of shape \(batch, 3, 224, 224\)"):
        Scorer(lite0).score(torch.rand(1, 3, 100, 100))


def test_ten_crops_take_the_larger_image(lite0):
    scorer = Scorer(lite0, crops=10)
    assert scorer.image_size == (256, 256)
    probabilities = scorer.score(torch.rand(2, 3, 256, 256))
    # Each crop's softmax divides by a float32 sum over 1000 classes, and numpy sums the mean of
    # the 10 crops again: each sum is off by at most gamma(n) of its value (tests/rounding.py).
    assert probabilities.shape == (2, 1000)
    assert (np.abs(probabilities.sum(1) - 1) <= 2 * gamma(1000 + 10)).all()


def test_torchvision_models_fail_clearly_offline(monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("TORCH_HOME", "/nonexistent-torch-home")
    with pytest.raises(ModelUnavailableError, match="IMAGENET1K_V1"):
        load_model("imagenet-alexnet")


@pytest.mark.parametrize("encoding", ["direct", "cppn"])
def test_tiny_search_on_lite0(fooling_home, tmp_path, encoding):
    config = RunConfig(model="imagenet-lite0", encoding=encoding, generations=2, population=6,
                       image_size=32, classes=["jellyfish", "goldfish", "king penguin"],
                       out=str(tmp_path / encoding))  # fmt: skip
    search = evolve(config, show_progress=False)
    assert search.archive.class_names == ("jellyfish", "goldfish", "king penguin")
    assert search.archive.occupied.all()
    assert ((search.archive.fitness > 0) & (search.archive.fitness < 1)).all()
    shape = search.archive.genomes.pixels.shape if encoding == "direct" else None
    assert shape in (None, (3, 3, 32, 32))


def test_unknown_class_suggests_close_names(fooling_home, tmp_path, capsys):
    code = main(
        ["evolve", "--model", "imagenet-lite0", "--classes", "jellyfsh", "--out", str(tmp_path / "x")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "did you mean 'jellyfish'" in err[0]


def test_classes_are_chosen_by_name_or_id(fooling_home, tmp_path, capsys):
    labels = ["cat", "crane", "crane", "7"]  # a user's model may repeat a label, or use digits
    assert class_index("Cat", labels) == 0 and class_index("2", labels) == 2
    assert class_index("7", labels) == 3  # a name first, an id only when no class has that name
    with pytest.raises(UnknownNameError, match="crane' names classes 1, 2: give the id"):
        class_index("crane", labels)
    with pytest.raises(UnknownNameError, match="unknown class '4'"):
        class_index("4", labels)
    names = imagenet_class_names()
    out = str(tmp_path / "run")
    argv = ["evolve", "--model", "imagenet-lite0", "--generations", "1", "--population", "4",
            "--image-size", "16", "--no-progress", "--out"]  # fmt: skip
    assert main([*argv, out, "--classes", "tench,0"]) == 2  # one class by name and by id
    assert "names 'tench' twice ('tench' and '0')" in capsys.readouterr().err
    assert main([*argv, out, "--classes", "134,517"]) == 0
    assert main(["evolve", "--resume", out, "--generations", "2", "--no-progress"]) == 0
    archive = read_latest_checkpoint(out, GENOME_CLASSES).archive
    assert archive.class_names == (names[134], names[517]) and archive.occupied.all()
