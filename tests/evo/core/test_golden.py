"""Archives of fixed tiny runs against checkpoints committed before a refactoring.

A move of code between modules must not change what a search finds: the MNIST direct and
CPPN runs below are compared, cell by cell and bit for bit, with checkpoints written by the
code as it stood when the goldens were made (and these old files must still read).
Regenerate only for an intended change of behaviour: ``python tests/evo/core/test_golden.py``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from fooling.evo import RunConfig, evolve
from fooling.evo.run import GENOME_CLASSES
from fooling.evo.store.checkpoint import read_latest_checkpoint
from fooling.fitness import load_model

GOLDEN = Path(__file__).parent / "golden"
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
    golden = read_latest_checkpoint(str(GOLDEN / name), GENOME_CLASSES)
    if golden.weights_hash != load_model("mnist-lenet").weights_hash:
        pytest.skip("this machine trained mnist-lenet to other weights than the golden's")
    search = evolve(config(name, tmp_path / name), show_progress=False)
    assert golden.generation == search.generation - 1 and golden.next_id == search.next_id
    assert golden.archive.equals(search.archive)


if __name__ == "__main__":  # regenerate the goldens (a deliberate change of behaviour)
    for name in RUNS:
        shutil.rmtree(GOLDEN / name, ignore_errors=True)
        evolve(config(name, GOLDEN / name), show_progress=False)
        for extra in (GOLDEN / name).glob(".fooling-*"):
            extra.unlink()
        print(f"wrote {GOLDEN / name}", file=sys.stderr)
