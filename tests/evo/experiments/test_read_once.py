"""transfer and ablate read a run's checkpoint once (rows, thumbnails and genomes from one read)."""

from __future__ import annotations

import pytest

import fooling.evo.store.checkpoint as checkpoint_module
from fooling.evo.cli import main
from fooling.evo.experiments.ablation import ablate
from fooling.evo.experiments.transfer import transfer


@pytest.fixture
def counted_reads(monkeypatch) -> list[str]:
    reads: list[str] = []
    original = checkpoint_module.read_bytes

    def read_bytes(uri: str, limit: int | None = None) -> bytes:
        reads.append(uri)
        return original(uri, limit)

    monkeypatch.setattr(checkpoint_module, "read_bytes", read_bytes)
    return reads


def test_transfer_and_ablate_read_the_checkpoint_once(fooling_home, tmp_path, counted_reads):
    run = tmp_path / "run"
    tiny = ["--population", "20", "--generations", "2", "--no-progress", "--no-report"]
    assert main(["evolve", "--out", str(run), *tiny]) == 0
    checkpoint = f"{run}/checkpoints/gen-000001.parquet"
    counted_reads.clear()
    transfer(str(run), ["mnist-lenet"], write=False)
    assert [uri for uri in counted_reads if "/checkpoints/gen-" in uri] == [checkpoint]
    counted_reads.clear()
    ablate(str(run), grid=2, write=False)
    assert [uri for uri in counted_reads if "/checkpoints/gen-" in uri] == [checkpoint]
