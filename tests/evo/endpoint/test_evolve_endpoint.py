"""``fooling evolve --model http://127.0.0.1:PORT/v2/models/NAME`` against a real MLServer.

Tiny budgets (a few generations of 16-40 children); the 200-generation target run is
scripts/bench_endpoint.py's, by hand (docs/endpoint.md).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from oip_fixtures import FaultProxy, served

from fooling.encodings import GENOME_CLASSES
from fooling.evo.cli.main import main
from fooling.evo.config import RunConfig
from fooling.evo.evaluation import make_encoding
from fooling.evo.experiments.audit import queries_to_fool
from fooling.evo.run import evolve as run_evolve
from fooling.evo.store.checkpoint import read_latest_checkpoint
from fooling.fitness import load_model

TOKEN = "s3cr3t-T0KEN-abcdef0123456789"


def evolve(capsys, url: str, out, *extra: str) -> tuple[int, str]:
    code = main(
        [
            "evolve", "--model", url, "--out", str(out), "--population", "16", "--seed", "3",
            "--no-progress", "--no-report", "--checkpoint-every", "1", *extra,
        ]
    )  # fmt: skip
    return code, capsys.readouterr().err


def checkpoint(out):
    return read_latest_checkpoint(str(out), GENOME_CLASSES)


def test_evolve_scores_through_the_server_and_counts_every_image(
    mlserver, tmp_path, capsys, endpoint_settings
):
    before = served(mlserver.folder, "lenet")
    code, err = evolve(capsys, f"{mlserver.url}/v2/models/lenet", tmp_path / "run", "--generations", "4")
    assert code == 0, err
    state = checkpoint(tmp_path / "run")
    assert state.queries == 4 * 16 == served(mlserver.folder, "lenet") - before
    assert state.generation == 3 and len(state.archive) > 0
    assert state.config.model == f"{mlserver.url}/v2/models/lenet"
    stats = pq.read_table(tmp_path / "run" / "stats.parquet").to_pylist()
    assert [row["queries"] for row in stats] == [16, 32, 48, 64]
    # The curve's counts: the cells at or above each level, never more at a higher level.
    last = stats[-1]
    fitness = state.archive.fitness
    assert last["fooled_50"] == int((fitness >= 0.5).sum()) >= last["fooled_90"] >= last["fooled_9999"]
    curve = queries_to_fool(stats, 10)
    assert curve["queries"] == 64 and [point[0] for point in curve["curve"]] == [16, 32, 48, 64]
    assert curve["levels"]["50%"]["fraction"] == last["fooled_50"] / 10
    first = next(row["queries"] for row in stats if row["fooled_50"] >= 1)
    assert curve["levels"]["50%"]["first"] == first


def test_max_queries_stops_exactly_and_resume_continues_the_count(
    mlserver, tmp_path, capsys, endpoint_settings
):
    url = f"{mlserver.url}/v2/models/lenet"
    out = tmp_path / "run"
    before = served(mlserver.folder, "lenet")
    # 40 images: generations of 16 fit twice (32), the third would pass the budget.
    code, err = evolve(capsys, url, out, "--generations", "6", "--max-queries", "40")
    assert code == 0, err
    assert "query budget spent: 32 of --max-queries 40" in err
    assert checkpoint(out).queries == 32 == served(mlserver.folder, "lenet") - before
    assert checkpoint(out).generation == 1
    code, err = evolve(capsys, url, out, "--resume", str(out), "--max-queries", "64")
    assert code == 0, err
    assert checkpoint(out).queries == 64 == served(mlserver.folder, "lenet") - before
    assert checkpoint(out).generation == 3
    # Same seed, no budget: the same archive as the run stopped and resumed.
    whole = tmp_path / "whole"
    assert evolve(capsys, url, whole, "--generations", "4")[0] == 0
    assert checkpoint(whole).archive.equals(checkpoint(out).archive)


class Killed(BaseException):
    """Ends a run at once, like SIGKILL: no handler of the run catches it, nothing is saved."""


def test_images_sent_after_the_last_checkpoint_count_against_the_budget(
    mlserver, tmp_path, capsys, caplog, endpoint_settings
):
    url = f"{mlserver.url}/v2/models/lenet"
    out = tmp_path / "run"
    before = served(mlserver.folder, "lenet")

    def kill_after_generation_2(search):
        if search.generation == 3:
            raise Killed

    config = RunConfig(model=url, out=str(out), population=16, seed=3, generations=6, checkpoint_every=2)
    with pytest.raises(Killed):
        run_evolve(config, show_progress=False, on_generation=kill_after_generation_2)
    # Generations 0-2 were sent; the checkpoint holds 0-1.
    assert checkpoint(out).queries == 32 and served(mlserver.folder, "lenet") - before == 48
    assert json.loads((out / "queries.json").read_text()) == {"queries": 48}
    code, err = evolve(capsys, url, out, "--resume", str(out), "--max-queries", "64")
    assert code == 0, err
    assert "16 images were sent after the last checkpoint (32 before it); they count as sent" in caplog.text
    # 48 sent and one generation of 16 more: the budget ends the run there, not two generations later.
    assert "query budget spent: 64 of --max-queries 64 images sent, generation 3 needs 16" in err
    assert checkpoint(out).queries == 64 == served(mlserver.folder, "lenet") - before
    assert checkpoint(out).generation == 2


@pytest.mark.parametrize("planted", ["garbage", "negative", "link", "huge"])
def test_a_damaged_query_ledger_stops_the_resume_in_one_line(
    mlserver, tmp_path, capsys, endpoint_settings, planted
):
    url = f"{mlserver.url}/v2/models/lenet"
    out = tmp_path / "run"
    assert evolve(capsys, url, out, "--generations", "1")[0] == 0
    ledger = out / "queries.json"
    ledger.unlink()
    secret = tmp_path / "secret.json"
    secret.write_text('{"queries": 1000000}')
    if planted == "link":
        ledger.symlink_to(secret)
    else:
        text = {"garbage": "{not json", "negative": '{"queries": -3}', "huge": " " * 5000 + "1"}[planted]
        ledger.write_text(text)
    served_before = served(mlserver.folder, "lenet")
    code, err = evolve(capsys, url, out, "--resume", str(out), "--generations", "2")
    assert code == 2 and err.count("\n") == 1, err
    assert "queries.json" in err and "remove it to count from the last checkpoint alone" in err
    assert served(mlserver.folder, "lenet") == served_before  # refused before any image was sent
    assert checkpoint(out).generation == 0


@pytest.mark.parametrize("value", ["0", "-5", "x"])
def test_a_bad_max_queries_is_one_line(mlserver, tmp_path, capsys, value, endpoint_settings):
    code, err = evolve(capsys, f"{mlserver.url}/v2/models/lenet", tmp_path / "run", "--max-queries", value)
    assert code == 2 and err.count("\n") == 1 and "--max-queries" in err
    assert not (tmp_path / "run").exists()


def test_faults_change_nothing_but_the_time(mlserver, tmp_path, capsys, endpoint_settings):
    """503s, 429s, drops, slow answers, a redirect, garbage: the same count and archive as without."""
    clean = tmp_path / "clean"
    flags = ("--generations", "3", "--request-batch", "4", "--concurrency", "3")
    assert evolve(capsys, f"{mlserver.url}/v2/models/lenet", clean, *flags)[0] == 0
    proxy = FaultProxy(mlserver.port, slow_s=1.2)
    try:
        code, err = evolve(
            capsys,
            f"{proxy.url}/v2/models/lenet",
            tmp_path / "faulty",
            *flags,
            "--request-timeout", "0.8", "--retries", "12",
        )  # fmt: skip
        assert code == 0, err
        # Every kind of fault happened at least once, and nothing reached the redirect's target.
        assert set(proxy.counts) >= {"503", "429", "drop", "slow", "redirect", "garbage", "500"}, proxy.counts
        assert proxy.trap.connections == 0
    finally:
        proxy.stop()
    faulty, reference = checkpoint(tmp_path / "faulty"), checkpoint(clean)
    assert faulty.queries == reference.queries == 3 * 16
    assert faulty.archive.equals(reference.archive)


def test_the_token_reaches_the_server_and_no_file_of_the_run(
    mlserver, tmp_path, capsys, monkeypatch, endpoint_settings
):
    proxy = FaultProxy(mlserver.port, faults=False, token=TOKEN)
    try:
        out = tmp_path / "run"
        url = f"{proxy.url}/v2/models/lenet"
        # Without the token: 401, one line naming the status, never a token.
        code, err = evolve(
            capsys, url, out, "--generations", "2", "--header", "Authorization: Bearer wrong-token-123"
        )
        assert code == 2 and "HTTP 401" in err and "wrong-token-123" not in err and err.count("\n") == 1
        code, err = evolve(
            capsys, url, out, "--generations", "2", "--header", f"Authorization: Bearer {TOKEN}"
        )
        assert code == 0, err
        assert TOKEN not in err
        monkeypatch.setenv("FOOLING_ENDPOINT_TOKEN", TOKEN)  # the variable, on resume
        code, err = evolve(capsys, url, out, "--resume", str(out), "--generations", "3", "-v")
        assert code == 0, err
        assert TOKEN not in err  # debug logging included
        assert f"Bearer {TOKEN}" in proxy.seen_authorization
    finally:
        proxy.stop()
    main(["report", str(out)])
    capsys.readouterr()
    files = [path for path in out.rglob("*") if path.is_file()]
    assert any(path.suffix == ".png" for path in files) and any(path.suffix == ".parquet" for path in files)
    for path in files:
        assert TOKEN.encode() not in path.read_bytes(), path


def test_top_1_answers_update_only_the_cells_that_came_back(mlserver, tmp_path, capsys, endpoint_settings):
    out = tmp_path / "run"
    code, err = evolve(capsys, f"{mlserver.url}/v2/models/lenet", out, "--generations", "8", "--top-k", "1")
    assert code == 0, err
    state = checkpoint(out)
    assert state.config.model.endswith("?top-k=1")
    cells = np.flatnonzero(state.archive.occupied)
    assert len(cells) >= 1
    # Each elite holds an image whose top-1 class is its cell, with the probability the server
    # gave it: rescored with full answers, the argmax is the cell and the score matches.
    full = load_model(f"{mlserver.url}/v2/models/lenet")
    encoding = make_encoding(state.config, full.spec)
    images = encoding.render(state.archive.genomes.take(cells), torch.device("cpu")).numpy()
    probabilities = full.network.score_images(images)
    assert (probabilities.argmax(axis=1) == cells).all()
    np.testing.assert_allclose(
        probabilities[np.arange(len(cells)), cells], state.archive.fitness[cells], atol=1e-6
    )


def test_on_ray_scorer_actors_send_the_requests_and_find_the_same_archive(
    mlserver, tmp_path, capsys, endpoint_settings
):
    """Scorer actors score through the endpoint (the client travels pickled, without a connection).

    The server is deterministic, so the archive is the one the in-process run finds, and the
    budget, kept by the driver, counts the same images; the server saw each of them once.
    """
    url = f"{mlserver.url}/v2/models/lenet"
    local, distributed = tmp_path / "local", tmp_path / "ray"
    assert evolve(capsys, url, local, "--generations", "3")[0] == 0
    before = served(mlserver.folder, "lenet")
    code, err = evolve(capsys, url, distributed, "--generations", "3", "--workers", "1", "--scorers", "2")
    assert code == 0, err
    assert served(mlserver.folder, "lenet") - before == 3 * 16 == checkpoint(distributed).queries
    assert checkpoint(distributed).archive.equals(checkpoint(local).archive)


def test_audit_of_an_endpoint_reports_the_queries_to_fool(mlserver, tmp_path, capsys, endpoint_settings):
    """The small audit (2 x 20 generations of 50) through the server: queries spent and the curve."""
    out = tmp_path / "audit"
    before = served(mlserver.folder, "lenet")
    url = f"{mlserver.url}/v2/models/lenet"
    code = main(["audit", "--model", url, "--reference", "none", "--no-progress", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    for method in ("cppn", "direct"):
        curve = summary["queries"][method]
        assert curve["queries"] == 20 * 50 == summary["evaluations"][method]
        stats = pq.read_table(out / method / "stats.parquet").to_pylist()
        assert curve["levels"]["99.99%"]["fraction"] == stats[-1]["fooled_9999"] / 10
    assert served(mlserver.folder, "lenet") - before == 2 * 20 * 50  # no gradient ascent, no transfer
    assert "## Queries to fool" in (out / "report.md").read_text()
    assert summary["gradients"] is False


def test_transfer_to_an_endpoint_scores_each_elite_once_through_the_server(
    mlserver, tmp_path, capsys, endpoint_settings, monkeypatch
):
    """``fooling transfer RUN --to URL``: a local run's elites scored by the same LeNet behind the server."""
    out = tmp_path / "run"
    code = main(["evolve", "--model", "mnist-lenet", "--out", str(out), "--population", "16", "--seed", "3",
                 "--generations", "3", "--no-progress", "--no-report"])  # fmt: skip
    evolved = capsys.readouterr()
    assert code == 0, evolved.err
    elites = len(checkpoint(out).archive)
    monkeypatch.setenv("FOOLING_ENDPOINT_TOKEN", TOKEN)
    url = f"{mlserver.url}/v2/models/lenet"
    before = served(mlserver.folder, "lenet")
    code = main(["transfer", str(out), "--to", url])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert served(mlserver.folder, "lenet") - before == elites  # one image per elite, one crop
    line = captured.out.splitlines()[0]
    # The server runs the source network itself: every elite keeps its label and its confidence.
    assert line.startswith(f"lenet: {elites} elites, same top-1 100.0%"), line  # the served name
    source, target = line.rsplit("mean confidence ", 1)[1].split(" -> ")
    assert source == target, line
    written = [path for path in out.glob("transfer-to-*") if path.is_file()]
    assert sorted(path.suffix for path in written) == [".md", ".png"]
    for path in written:
        assert TOKEN.encode() not in path.read_bytes()
