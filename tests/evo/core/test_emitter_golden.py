"""Every built-in emitter's archive against goldens saved before emitters became classes.

The goldens (genomes, fitness and individual ids of the archive of a tiny in-process MNIST
run per emitter) were written by the code as it stood before the refactoring of issue 29;
any later change of what an emitter draws or makes shows here bit for bit. Like
``test_golden.py``, each set lives under the LeNet weights hash it was made with. Add the set
of another kind of machine (or remake them after an intended change of behaviour):
``python tests/evo/core/test_emitter_golden.py``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from fooling.evo import RunConfig, evolve
from fooling.evo.archive import ClassArchive
from fooling.evo.emitters import EMITTERS
from fooling.fitness import load_model, train_lenet

GOLDEN = Path(__file__).parent / "golden"  # GOLDEN / <weights hash> / emitters / <run>.npz
TINY = dict(population=16, batch_size=8, generations=4)
RUNS = {
    "paper-direct": dict(encoding="direct", emitter="paper", seed=3),
    "focus-direct": dict(encoding="direct", emitter="focus", seed=3),
    "paper-cppn": dict(encoding="cppn", emitter="paper", seed=1),
    "focus-cppn": dict(encoding="cppn", emitter="focus", seed=1),
    "finetune-cppn": dict(encoding="cppn", emitter="finetune", seed=1),
    "gradient-cppn": dict(encoding="cppn", emitter="gradient", seed=1, generations=3),
    "ascent-cppn": dict(encoding="cppn", emitter="ascent", seed=1, generations=3),
    # Added with the emitter (after the refactoring): it holds cma-me to what it made then.
    "cma-me-cppn": dict(encoding="cppn", emitter="cma-me", seed=1, generations=6),
}


def config(name: str, out: Path) -> RunConfig:
    fields = {**TINY, **RUNS[name]}
    return RunConfig(
        model="mnist-lenet", engine="onnxruntime", checkpoint_every=0, workers=0, out=str(out), **fields
    )


def archive_arrays(archive: ClassArchive) -> dict[str, np.ndarray]:
    """What a golden holds: fitness, individual ids and every genome array of ``archive``."""
    arrays = {"fitness": archive.fitness, "individual_id": archive.individual_id}
    arrays.update({f"genome_{key}": value for key, value in archive.genomes.arrays().items()})
    return arrays


def test_every_built_in_emitter_has_a_golden():
    assert {run["emitter"] for run in RUNS.values()} == set(EMITTERS)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_emitter_archive_equals_its_golden(fooling_home, tmp_path, name):
    weights_hash = load_model("mnist-lenet").weights_hash
    folder = GOLDEN / weights_hash / "emitters"
    if not folder.is_dir():
        pytest.skip(
            f"no emitter goldens for this machine's mnist-lenet weights {weights_hash}; "
            "python tests/evo/core/test_emitter_golden.py adds them"
        )
    golden = np.load(folder / f"{name}.npz")
    got = archive_arrays(evolve(config(name, tmp_path / name), show_progress=False).archive)
    assert set(golden) == set(got)
    for key in golden:
        assert np.array_equal(golden[key], got[key]), key


if __name__ == "__main__":  # add this machine's goldens (or remake them after a change of behaviour)
    only = set(sys.argv[1:]) or set(RUNS)  # e.g. cma-me-cppn: write that golden only
    os.environ["FOOLING_OFFLINE"] = "1"
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as runs:
        os.environ["FOOLING_HOME"] = home
        train_lenet(0)
        folder = GOLDEN / load_model("mnist-lenet").weights_hash / "emitters"
        folder.mkdir(parents=True, exist_ok=True)
        for name in sorted(only):
            search = evolve(config(name, Path(runs) / name), show_progress=False)
            np.savez(folder / f"{name}.npz", **archive_arrays(search.archive))
            print(f"wrote {folder / name}.npz", file=sys.stderr)
