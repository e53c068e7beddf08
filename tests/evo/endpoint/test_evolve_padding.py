"""A model whose input has a fixed batch size: the padding the server receives counts as sent."""

from __future__ import annotations

import json

from oip_fixtures import FaultProxy, served

from fooling.encodings import GENOME_CLASSES
from fooling.evo.cli.main import main
from fooling.evo.store.checkpoint import read_latest_checkpoint


def _fixed_batch_of_7(path: str, headers: dict, status: int, body: bytes):
    if path != "/v2/models/lenet":
        return None
    metadata = json.loads(body)
    metadata["inputs"][0]["shape"] = [7, 1, 28, 28]
    return 200, json.dumps(metadata).encode(), {}


def _evolve_through_a_batch_of_7(mlserver, out, generations: int, max_queries: int, capsys) -> int:
    """Run a population of 10 through a proxy that gives the model a fixed batch of 7; images served."""
    proxy = FaultProxy(mlserver.port, faults=False, edit=_fixed_batch_of_7)
    before = served(mlserver.folder, "lenet")
    try:
        code = main(
            ["evolve", "--model", f"{proxy.url}/v2/models/lenet", "--out", str(out), "--population", "10",
             "--generations", str(generations), "--seed", "3", "--no-progress", "--no-report",
             "--max-queries", str(max_queries)]
        )  # fmt: skip
    finally:
        proxy.stop()
    assert code == 0, capsys.readouterr().err
    return served(mlserver.folder, "lenet") - before


def test_the_budget_and_the_ledger_count_the_padding_sent(mlserver, tmp_path, capsys, endpoint_settings):
    """Generations of 10 images go as requests of 7: 14 images a generation reach the server."""
    out = tmp_path / "run"
    sent = _evolve_through_a_batch_of_7(mlserver, out, 2, 1000, capsys)
    assert sent == 28
    assert json.loads((out / "queries.json").read_text()) == {"queries": sent}
    assert read_latest_checkpoint(str(out), GENOME_CLASSES).queries == sent


def test_a_budget_stops_before_the_padding_would_pass_it(mlserver, tmp_path, capsys, endpoint_settings):
    """--max-queries 20: the first generation sends 14 (10 and 4 of padding), the second would reach 28."""
    out = tmp_path / "run"
    assert _evolve_through_a_batch_of_7(mlserver, out, 3, 20, capsys) == 14
    assert json.loads((out / "queries.json").read_text()) == {"queries": 14}
    assert read_latest_checkpoint(str(out), GENOME_CLASSES).generation == 0
