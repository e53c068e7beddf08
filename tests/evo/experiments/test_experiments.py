"""The paper's experiments as commands: transfer, fooling-class retraining, occlusion ablation."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from rounding import probability_bound
from small_setups import small_retrain

from fooling.evo.cli import main
from fooling.evo.config import RunConfig
from fooling.fitness.models import DIGIT_NAMES

DIGITS = tuple(DIGIT_NAMES)


@pytest.fixture(scope="module")
def run(fooling_home, tmp_path_factory):
    """A tiny finished MNIST run (10 elites) and its search."""
    from fooling.evo.run import evolve

    out = str(tmp_path_factory.mktemp("experiments") / "run")
    config = RunConfig(generations=6, population=40, seed=3, out=out, checkpoint_every=0)
    return out, evolve(config, show_progress=False)


def elite_confidence(search, lenet) -> tuple[np.ndarray, np.ndarray]:
    """The float64 confidence of ``lenet`` in each elite's class, and the rounding bound of a
    float32 evaluation of it (tests/rounding.py), in cell order."""
    from fooling.evo.evaluation import make_encoding

    cells = search.archive.occupied_cells()
    encoding = make_encoding(RunConfig(generations=6, population=40), lenet.spec)
    images = encoding.render(search.archive.genomes.take(cells))
    exact, bound = probability_bound(lenet.network, images)
    return exact[np.arange(len(cells)), cells], bound[np.arange(len(cells)), cells]


@pytest.fixture(scope="module")
def lenet_b(fooling_home):
    """DNN_B: a LeNet trained with another seed (1 epoch: enough to be a different net)."""
    from fooling.fitness import lenet_weights_path, train_lenet

    if not lenet_weights_path(1).exists():
        train_lenet(1, epochs=1)
    return "mnist-lenet-seed1"


# --- transfer ------------------------------------------------------------------------------


def test_transfer_table_and_files(run, lenet, lenet_b):
    from fooling.evo.experiments.transfer import TRANSFER_COLUMNS, transfer

    out, search = run
    result = transfer(out, [lenet_b, "mnist-lenet"])
    assert [row["target"] for row in result.rows] == [lenet_b, "mnist-lenet"]
    for row in result.rows:
        assert tuple(row) == TRANSFER_COLUMNS
        assert row["elites"] == 10
        for key in TRANSFER_COLUMNS[2:]:
            assert 0.0 <= row[key] <= 1.0, (key, row[key])
    # Rendering the genomes again gives back the confidence evolution measured: both are float32
    # evaluations (in other batches) within the rounding bound of the float64 confidence.
    exact, bound = elite_confidence(search, lenet)
    assert (np.abs(result.source_confidence - exact) <= bound).all()
    assert (np.abs(search.archive.elite_fitness() - exact) <= bound).all()
    # The source network scored as a target agrees with itself, up to that rounding.
    itself = result.rows[1]
    assert itself["same_top1"] == 1.0
    assert abs(itself["mean_target"] - itself["mean_source"]) <= 2 * bound.mean()
    name = f"transfer-to-{lenet_b}+mnist-lenet"
    assert result.uris == [os.path.join(out, f"{name}.md"), os.path.join(out, f"{name}.png")]
    assert os.path.getsize(os.path.join(out, f"{name}.png")) > 1000
    text = Path(out, f"{name}.md").read_text()
    assert "| target | elites | same top-1 label |" in text and lenet_b in text


def test_transfer_map_classes_to_a_net_with_a_fooling_class(run, lenet):
    from fooling.evo.experiments.transfer import transfer
    from fooling.fitness import load_model
    from fooling.fitness.fooling_class import add_output, save_retrained

    out, _ = run
    name = save_retrained(add_output(lenet.network), "mnist-lenet", 2, DIGITS + ("fooling",))
    eleven = load_model(name)
    assert eleven.spec.num_classes == 11 and eleven.spec.class_names[-1] == "fooling"
    with pytest.raises(ValueError, match="--map-classes"):
        transfer(out, [name], write=False)
    result = transfer(out, [name], map_classes=True, write=False)
    # The added output starts below every other one: labels do not change.
    assert result.rows[0]["same_top1"] == 1.0
    assert result.rows[0]["elites"] == 10


def test_transfer_is_reproducible(run, lenet_b):
    from fooling.evo.experiments.transfer import transfer

    out, _ = run
    first = transfer(out, [lenet_b], write=False)
    second = transfer(out, [lenet_b], write=False)
    assert first.rows == second.rows


# --- ablation ------------------------------------------------------------------------------


def test_ablate_table_and_files(run, lenet):
    from fooling.evo.experiments.ablation import ablate

    out, search = run
    fractions = (1.0, 0.5, 0.0)
    result = ablate(out, fractions_kept=fractions, grid=4, seed=1)
    assert [row["kept"] for row in result.rows] == list(fractions)
    assert result.curves.shape == (10, 3)
    assert ((result.curves >= 0) & (result.curves <= 1)).all()
    exact, bound = elite_confidence(search, lenet)  # nothing occluded: the elites' confidence
    assert (np.abs(result.curves[:, 0] - exact) <= bound).all()
    assert result.rows[0]["mean_drop"] == 0.0
    for row in result.rows:
        assert 0 <= row["mean"] <= 1 and 0 <= row["median"] <= 1 and 0 <= row["at_99"] <= 1
    # Direct-encoded noise has no repeated motifs.
    assert (result.repeats["removed"] == 0).all()
    assert "| fraction kept |" in Path(out, "ablation.md").read_text()
    assert os.path.getsize(os.path.join(out, "ablation.png")) > 1000
    again = ablate(out, fractions_kept=fractions, grid=4, seed=1, write=False)
    np.testing.assert_array_equal(again.curves, result.curves)


def test_occluding_everything_leaves_the_mean():
    from fooling.fitness.occlusion import replace_tiles

    images = torch.rand(2, 3, 10, 10)
    out = replace_tiles(images, np.ones((2, 9), dtype=bool), 3)
    expected = images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    torch.testing.assert_close(out, expected)
    untouched = replace_tiles(images, np.zeros((2, 9), dtype=bool), 3)
    torch.testing.assert_close(untouched, images)


def test_repeated_tiles_found_only_in_repeating_images():
    from fooling.fitness.occlusion import repeated_tiles

    generator = torch.Generator().manual_seed(0)
    motif = torch.rand(1, 7, 7, generator=generator)
    tiled = motif.repeat(1, 4, 4)[None]  # (1, 1, 28, 28): a motif repeated on a 4x4 grid
    noise = torch.rand(1, 1, 28, 28, generator=generator)
    masks = repeated_tiles(torch.cat([tiled, noise]), grid=4)
    assert masks[0].sum() == 15 and not masks[0, 15]  # every copy but the last one visited
    assert masks[1].sum() == 0


def test_repeats_off_the_grid_are_found():
    from fooling.fitness.occlusion import repeated_tiles

    # A period of 5 pixels on a 40-pixel image cut into 10-pixel tiles: no two tiles are
    # equal at the same place, yet each holds shifted copies of the others' motif.
    generator = torch.Generator().manual_seed(1)
    motif = torch.rand(3, 5, 5, generator=generator)
    stripes = motif.repeat(1, 8, 8)[None]
    shifted = torch.roll(stripes, shifts=(2, 3), dims=(2, 3))
    masks = repeated_tiles(shifted, grid=4)
    assert 8 <= masks[0].sum() < 16
    # Half the image noise: tiles there have no copy, so at most the periodic half goes.
    half = shifted.clone()
    half[..., 20:] = torch.rand(1, 3, 40, 20, generator=generator)
    half_masks = repeated_tiles(half, grid=4).reshape(4, 4)
    assert not half_masks[:, 2:].any() and half_masks[:, :2].sum() >= 4


# --- retraining ----------------------------------------------------------------------------


def test_fooling_share_and_training_set():
    from fooling.fitness.fooling_class import fooling_share, with_fooling_class

    assert fooling_share(15, 15, 0.25) == pytest.approx(0.25)
    assert fooling_share(1, 15, 0.25) == pytest.approx(0.25 / 15)
    with pytest.raises(ValueError):
        fooling_share(0, 15, 0.25)
    rng = np.random.default_rng(0)
    real = np.zeros((300, 28, 28), np.uint8)
    labels = np.arange(300) % 10
    pool = np.full((40, 28, 28), 7, np.uint8)
    dataset = with_fooling_class(real, labels, pool, 0.25, num_classes=10, rng=rng)
    assert dataset.fooling_label == 10
    assert (dataset.labels == 10).sum() == 100  # 100 / (300 + 100) = 25%
    assert dataset.share == pytest.approx(0.25)
    assert dataset.unique_fooling == 40  # every pool image used, then drawn again
    assert set(np.unique(dataset.labels)) == set(range(11))
    assert (dataset.images[dataset.labels == 10] == 7).all()


@pytest.fixture(scope="module")
def retrained(fooling_home, tmp_path_factory):
    """A finished two-round MNIST retraining run (in this process) and its folder."""
    out = tmp_path_factory.mktemp("retrain") / "a"
    return out, small_retrain(out)


def test_retrain_mnist_adds_one_class_at_the_stated_share(retrained):
    from fooling.evo.experiments.retrain import RETRAIN_COLUMNS
    from fooling.evo.run import GENOME_CLASSES
    from fooling.evo.store.checkpoint import read_latest_checkpoint
    from fooling.fitness import load_model

    out, result = retrained
    rows = result.rows
    assert [row["round"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert set(row) == set(RETRAIN_COLUMNS)
        assert 0 <= row["median"] <= 1 and 0 <= row["test_accuracy"] <= 1
        assert 0 <= row["at_9999"] <= row["cells"] == 10  # the fooling class is no target
    assert [row["outputs"] for row in rows] == [10, 11, 11]
    assert rows[0]["fooling_share"] == 0
    assert rows[1]["fooling_share"] == pytest.approx(0.125, abs=1e-3)
    assert rows[2]["fooling_share"] == pytest.approx(0.25, abs=1e-3)
    last = load_model(rows[2]["model"])
    assert last.spec.class_names == DIGITS + ("fooling",)
    checkpoint = read_latest_checkpoint(str(out / "round-3"), GENOME_CLASSES)
    assert checkpoint.model == rows[2]["model"] and checkpoint.archive.class_names == DIGITS
    assert checkpoint.config.seed == 5 + 2  # round k evolves with seed + k - 1
    for name in ("retrain.md", "retrain.json", "retrain.png"):
        assert (out / name).stat().st_size > 100


def test_a_retrain_round_is_the_run_evolve_makes(retrained, tmp_path):
    """Round 1 is an ordinary ``evolve`` run of the same config: the same archive, bit for bit."""
    from fooling.evo.run import GENOME_CLASSES, evolve
    from fooling.evo.store.checkpoint import read_latest_checkpoint
    from fooling.evo.store.runfolder import folder_kind

    out, result = retrained
    config = RunConfig(generations=3, population=16, seed=5, classes=list(DIGITS), out=str(tmp_path / "run"))
    search = evolve(config, show_progress=False)
    round_one = read_latest_checkpoint(str(out / "round-1"), GENOME_CLASSES)
    assert folder_kind(str(out / "round-1")) == "evolve"  # `fooling evolve --resume` takes it
    assert dataclasses.replace(round_one.config, out=config.out) == config
    assert round_one.generation == search.generation - 1 and round_one.next_id == search.next_id
    assert round_one.archive.equals(search.archive)
    assert result.rows[0]["median"] == search.archive.stats()["median"]


def _image_folder(root, classes, count=2, size=12):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_a_retrain_killed_before_its_first_checkpoint_runs_again(fooling_home, tmp_path, caplog):
    """SIGKILL in round 1's first generations leaves records and locks, no result: no run to refuse."""
    out = tmp_path / "killed"
    tiny = ["--rounds", "1", "--epochs", "1", "--population", "16", "--no-progress", "--out", str(out)]
    # No checkpoint before the kill: the first one would come after 100,000 generations.
    never = ["--generations", "100000", "--checkpoint-every", "100000"]
    command = [sys.executable, "-m", "fooling.evo.cli.main", "retrain", *tiny, *never]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "round-1" / ".fooling-run").exists():
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "round 1 did not start within 300 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
        process.stderr.close()
    assert (out / ".fooling-lock").exists() and (out / "round-1" / ".fooling-lock").exists()
    assert not list(out.rglob("gen-*.parquet"))
    assert main(["retrain", *tiny, "--generations", "2"]) == 0
    assert "killed before it saved anything; starting anew" in caplog.text
    assert (out / "retrain.json").is_file()
    assert len(list((out / "round-1" / "checkpoints").glob("gen-*"))) == 1


@pytest.mark.parametrize("classes", [["tabby", "goldfish"], None], ids=["two classes", "every class"])
def test_retrain_imagenet_fine_tunes_on_an_image_folder(fooling_home, tmp_path, classes):
    # Every class: ImageNet's names repeat ("crane") and differ only by case ("Cardigan").
    from fooling.fitness import ModelUnavailableError, load_model

    try:
        load_model("imagenet-lite0")
    except ModelUnavailableError as error:
        pytest.skip(str(error))
    folder = _image_folder(tmp_path / "train", ["tabby", "goldfish"])
    result = small_retrain(
        tmp_path / "out",
        model="imagenet-lite0",
        rounds=1,
        generations=1,
        population=2,
        image_size=16,
        classes=classes,
        train_dir=str(folder),
        steps=1,
    )
    assert [row["outputs"] for row in result.rows] == [1000, 1001]
    assert result.rows[1]["fooling_share"] == pytest.approx(0.2)  # 1 of 5 (4 real): nearest to 25%
    assert [row["cells"] for row in result.rows] == [len(classes or range(1000))] * 2
    assert load_model(result.rows[1]["model"]).spec.class_names[-1] == "fooling"


# --- bad input -----------------------------------------------------------------------------


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fooling: error: ") and err.count("\n") == 1, err
    return err


def test_bad_input_is_one_line_exit_2(run, capsys, tmp_path, fooling_home):
    out, _ = run
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no checkpoint" in _one_line_error(capsys, ["transfer", str(empty), "--to", "mnist-lenet"])
    assert "no checkpoint" in _one_line_error(capsys, ["ablate", str(empty)])
    err = _one_line_error(capsys, ["transfer", out, "--to", "imagenet-lite0"])
    assert "--map-classes" in err
    for rounds in ("0", "-2"):
        assert "--rounds" in _one_line_error(capsys, ["retrain", "--rounds", rounds])
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "cat.jpg").write_bytes(b"not really")
    for folder in (flat, tmp_path / "missing"):
        err = _one_line_error(
            capsys,
            ["retrain", "--model", "imagenet-lite0", "--train-dir", str(folder), "--out", str(tmp_path)],
        )
        assert "ImageFolder" in err
    unknown = _image_folder(tmp_path / "unknown", ["not-a-class"], count=1)
    err = _one_line_error(
        capsys, ["retrain", "--model", "imagenet-lite0", "--train-dir", str(unknown), "--out", str(tmp_path)]
    )
    assert "not-a-class" in err
    assert "--train-dir" in _one_line_error(
        capsys, ["retrain", "--model", "imagenet-lite0", "--out", str(tmp_path)]
    )
    assert "--keep" in _one_line_error(capsys, ["ablate", out, "--keep", "1.5"])


# --- nothing overwritten, nothing mixed (issue 14) --------------------------------------------


def test_transfer_never_overwrites_an_earlier_result(run, lenet_b):
    from fooling.evo.experiments.transfer import transfer

    out, _ = run
    first = transfer(out, ["mnist-lenet"]).uris
    other = transfer(out, [lenet_b]).uris
    assert first != other and all(os.path.exists(uri) for uri in first + other)
    Path(first[0]).write_text("an earlier, different result\n")
    again = transfer(out, ["mnist-lenet"]).uris
    assert again[0].endswith("transfer-to-mnist-lenet-2.md")
    assert Path(first[0]).read_text() == "an earlier, different result\n"
    assert transfer(out, ["mnist-lenet"]).uris == again  # the same result again: same files


def test_map_classes_with_no_shared_class_is_an_error(run, capsys):
    out, _ = run
    before = sorted(os.listdir(out))
    err = _one_line_error(capsys, ["transfer", out, "--to", "imagenet-lite0", "--map-classes"])
    assert "none of the classes" in err
    assert sorted(os.listdir(out)) == before


def test_transfer_and_ablate_refuse_changed_weights(run, capsys, monkeypatch):
    import fooling.evo.experiments.ablation as ablation_module
    import fooling.evo.experiments.transfer as transfer_module
    import fooling.evo.run as run_module

    out, _ = run
    real = run_module.load_or_train

    def retrained(name):
        model = real(name)
        return type(model)(spec=model.spec, network=model.network, weights_hash="0" * 16)

    for module in (transfer_module, ablation_module):  # where each command looks the model up
        monkeypatch.setattr(module, "load_or_train", retrained)
    for arguments in (["transfer", out, "--to", "mnist-lenet"], ["ablate", out]):
        assert "refusing to mix" in _one_line_error(capsys, arguments)


def test_ablate_grid_and_tolerance_out_of_range(run, capsys):
    out, _ = run
    assert "--grid 100" in _one_line_error(capsys, ["ablate", out, "--grid", "100"])
    assert "--tolerance" in _one_line_error(capsys, ["ablate", out, "--tolerance", "-1"])


def test_ablate_on_a_run_with_image_size(fooling_home, tmp_path):
    from fooling.evo.experiments.ablation import ablate
    from fooling.evo.run import evolve

    out = str(tmp_path / "small")
    evolve(RunConfig(generations=2, population=20, image_size=14, out=out), show_progress=False)
    result = ablate(out, grid=2, fractions_kept=(1.0, 0.5))
    assert result.curves.shape == (len(result.elites.class_names), 2)
    assert np.isfinite(result.repeats["original"]).all()
