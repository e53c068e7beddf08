"""Archives of fixed tiny runs against checkpoints committed before a refactoring.

A move of code between modules must not change what a search finds: the MNIST direct and
CPPN runs below are compared, cell by cell and bit for bit, with checkpoints written by the
code as it stood when the goldens were made (and these old files must still read).

The LeNet the suite trains is bit-identical on every machine of one kind, but a CPU with
another instruction set (AVX-512 against AVX2) rounds its training differently and ends with
other weights, so each set of goldens lives under the weights hash it was made with, and the
test compares against the set of this machine's weights. Add the set of a new kind of machine,
or regenerate after an intended change of behaviour (delete the old sets first):
``python tests/evo/core/test_golden.py``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from fooling.evo import RunConfig, evolve
from fooling.evo.run import GENOME_CLASSES, resume_config
from fooling.evo.store.checkpoint import read_latest_checkpoint
from fooling.fitness import load_model, train_lenet

GOLDEN = Path(__file__).parent / "golden"  # GOLDEN / <weights hash> / <run name>
RUNS = {
    "mnist-direct": dict(encoding="direct", population=40, batch_size=20, seed=3, generations=5),
    "mnist-cppn": dict(encoding="cppn", population=20, batch_size=10, seed=1, generations=5),
}


def config(name: str, out: Path) -> RunConfig:
    return RunConfig(
        model="mnist-lenet", engine="onnxruntime", checkpoint_every=0, out=str(out), **RUNS[name]
    )


@pytest.mark.parametrize("name", sorted(RUNS))
def test_archive_equals_the_golden_checkpoint(fooling_home, tmp_path, name):
    weights_hash = load_model("mnist-lenet").weights_hash
    if not (GOLDEN / weights_hash).is_dir():
        known = ", ".join(sorted(path.name for path in GOLDEN.iterdir()))
        pytest.skip(
            f"no goldens for this machine's mnist-lenet weights {weights_hash} (there are: {known}); "
            "python tests/evo/core/test_golden.py adds them"
        )
    golden = read_latest_checkpoint(str(GOLDEN / weights_hash / name), GENOME_CLASSES)
    assert golden.weights_hash == weights_hash
    search = evolve(config(name, tmp_path / name), show_progress=False)
    assert golden.generation == search.generation - 1 and golden.next_id == search.next_id
    assert golden.archive.equals(search.archive)


def test_an_old_cppn_checkpoint_resumes_bit_identically(fooling_home, tmp_path):
    # The goldens were written when the config default "rgb" meant HSV outputs for CPPNs; they
    # read as "hsv", the name of that rendering now, and go on as an uninterrupted run.
    folder = GOLDEN / load_model("mnist-lenet").weights_hash / "mnist-cppn"
    if not folder.is_dir():
        pytest.skip("no goldens for this machine's mnist-lenet weights")
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    stored = read_latest_checkpoint(str(old), GENOME_CLASSES).config
    assert (stored.encoding, stored.color_space) == ("cppn", "hsv")
    resumed = evolve(resume_config(str(old), generations=7), resume=True, show_progress=False)
    straight = evolve(dataclasses.replace(config("mnist-cppn", tmp_path / "straight"), generations=7),
                      show_progress=False)  # fmt: skip
    assert resumed.archive.equals(straight.archive) and resumed.next_id == straight.next_id


def test_every_golden_set_is_filed_under_its_weights():
    for folder in GOLDEN.iterdir():
        for name in RUNS:
            assert read_latest_checkpoint(str(folder / name), GENOME_CLASSES).weights_hash == folder.name


if __name__ == "__main__":  # add this machine's goldens (or remake them after a change of behaviour)
    # The LeNet the suite's fixture trains: seed 0, offline data, in a home of its own.
    os.environ["FOOLING_OFFLINE"] = "1"
    with tempfile.TemporaryDirectory() as home:
        os.environ["FOOLING_HOME"] = home
        train_lenet(0)
        folder = GOLDEN / load_model("mnist-lenet").weights_hash
        for name in RUNS:
            shutil.rmtree(folder / name, ignore_errors=True)
            evolve(config(name, folder / name), show_progress=False)
            for extra in (folder / name).glob(".fooling-*"):
                extra.unlink()
            print(f"wrote {folder / name}", file=sys.stderr)
