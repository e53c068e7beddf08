"""A hostile server in front of the real MLServer: every bad answer is one clean line, within bounds.

The fault proxy (oip_fixtures.FaultProxy) compresses answers, trickles them, and rewrites the
server's metadata and answers into what a broken or hostile server sends: deep JSON, ragged or
string data, shapes that overflow, implausible sizes, text holding terminal escapes and the
request's own token. Each must end the run with one printable line (exit code 2), without a
part of the token; a failure after the first generation keeps it saved.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import time

import numpy as np
import pytest
from oip_fixtures import FaultProxy, served

from fooling.evo.cli.main import main
from fooling.fitness import load_model
from fooling.fitness.endpoint import EndpointError, EndpointSettings

TOKEN = "hostileTOKEN-0123456789abcdef"
AUTHORIZATION = ("--header", f"Authorization: Bearer {TOKEN}")
# Text a hostile server puts in names and errors: a window title, a screen wipe, a second line.
ESCAPES = "\x1b]0;PWNED\x07\x1b[2J\x1b[31m\nsecond line"
DEEP = b"[" * 100_000 + b"]" * 100_000


def fragments(secret: str, run: int = 8) -> set[str]:
    """Every run of ``run`` characters of ``secret``: none may be shown."""
    return {secret[i : i + run] for i in range(len(secret) - run + 1)}


def evolve_fails(capsys, url: str, out, *extra: str) -> str:
    """``fooling evolve`` against ``url``: exit code 2, one printable line, no part of the token."""
    argv = ["evolve", "--model", url, "--out", str(out), "--population", "8", "--generations", "3"]
    code = main([*argv, "--no-progress", "--no-report", "--request-batch", "16", "--retries", "1", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.rstrip("\n").isprintable(), repr(err)
    assert not any(part in err for part in fragments(TOKEN)), err
    return err


@contextlib.contextmanager
def proxy_of(mlserver, **options):
    proxy = FaultProxy(mlserver.port, **options)
    try:
        yield proxy
    finally:
        proxy.stop()


def metadata_edit(change, model: str = "lenet"):
    """An edit giving ``model``'s metadata as ``change(metadata, request headers)`` leaves it."""

    def edit(path: str, headers: dict, status: int, body: bytes):
        if path != f"/v2/models/{model}":
            return None
        metadata = json.loads(body)
        change(metadata, headers)
        return 200, json.dumps(metadata).encode(), {}

    return edit


def answer_edit(change, after: int = 0):
    """An edit answering infer requests after the first ``after`` with ``change(answer, headers)``."""
    numbers = itertools.count(1)

    def edit(path: str, headers: dict, status: int, body: bytes):
        if not path.endswith("/infer") or next(numbers) <= after:
            return None
        return change(json.loads(body) if status == 200 else None, headers)

    return edit


def answered(answer: dict) -> tuple[int, bytes, dict]:
    return 200, json.dumps(answer).encode(), {}


# --- compressed answers -------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "gzip, gzip", "br"])
def test_compressed_answers_are_refused_and_never_unpacked(mlserver, tmp_path, capsys, encoding):
    with proxy_of(mlserver, schedule=("compressed",), encoding=encoding) as proxy:
        err = evolve_fails(capsys, f"{proxy.url}/v2/models/lenet", tmp_path / "run")
        assert f"compressed (Content-Encoding: {encoding})" in err
        assert proxy.counts == {"compressed": 1}  # refused at once: it would come compressed again
        assert {headers.get("Accept-Encoding") for headers in proxy.seen_headers} == {"identity"}


# --- the request timeout bounds each try as a whole -------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fault", ["trickle", "slow-headers"])
def test_an_answer_trickled_a_byte_at_a_time_is_cut_at_the_request_timeout(
    mlserver, endpoint_settings, fault
):
    """Each byte comes well within the timeout; the try as a whole does not, so it is tried again."""
    with proxy_of(mlserver, schedule=(fault,), slow_s=0.2) as proxy:
        endpoint_settings(EndpointSettings(timeout_s=1.0, retries=1, backoff_s=0.01))
        network = load_model(f"{proxy.url}/v2/models/lenet").network
        started = time.monotonic()
        with pytest.raises(EndpointError, match="no answer after 2 tries") as raised:
            network.score_images(np.zeros((2, 1, 28, 28), np.float32))
        assert time.monotonic() - started < 8
        assert "ReadTimeout: no whole answer within the request timeout of 1 s" in str(raised.value)
        assert proxy.counts == {fault: 2}


# --- malformed metadata and implausible sizes ---------------------------------------------


def _no_shape(metadata: dict, headers: dict) -> None:
    del metadata["inputs"][0]["shape"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_no_shape, "its input has shape None;"),
        (lambda m, h: m["inputs"][0].update(shape=28), "its input has shape 28;"),
        (lambda m, h: m["inputs"][0].update(shape={"a": 1, "b": 2, "c": 3, "d": 4}), "shape <dict>;"),
        (lambda m, h: m["inputs"][0].update(shape=[-1, 1, "28", 28]), "shape a list of other than integers"),
        (lambda m, h: m["inputs"][0].update(shape=[-1, 3, 1 << 20, 1 << 20]), "over 1024 a side"),
        (lambda m, h: m["inputs"][0].update(shape=[100_000, 1, 28, 28]), "a fixed batch of 100000 images"),
        (lambda m, h: m["outputs"][0].update(shape=[-1, 2_000_000]), "has 2,000,000 classes, over 1,000,000"),
        (lambda m, h: m["outputs"][0].update(shape=[-1, 10**12]), "has 1,000,000,000,000 classes"),
    ],
)
def test_malformed_or_implausible_metadata_is_one_line(mlserver, tmp_path, capsys, change, expected):
    before = served(mlserver.folder, "lenet")
    with proxy_of(mlserver, faults=False, edit=metadata_edit(change)) as proxy:
        err = evolve_fails(capsys, f"{proxy.url}/v2/models/lenet", tmp_path / "run")
    assert expected in err
    assert served(mlserver.folder, "lenet") == before  # refused before any image was sent


def test_deeply_nested_json_anywhere_is_one_line(mlserver, tmp_path, capsys, endpoint_settings):
    # The model's metadata: not an object it can read.
    def deep_metadata(path, headers, status, body):
        return (200, DEEP, {}) if path == "/v2/models/lenet" else None

    with proxy_of(mlserver, faults=False, edit=deep_metadata) as proxy:
        err = evolve_fails(capsys, f"{proxy.url}/v2/models/lenet", tmp_path / "meta")
        assert "did not answer a JSON object" in err

    # The server's metadata and its model index are optional facts: unreadable, they are not there.
    def deep_facts(path, headers, status, body):
        return (200, DEEP, {}) if path in ("/v2", "/v2/repository/index") else None

    with proxy_of(mlserver, faults=False, edit=deep_facts) as proxy:
        err = evolve_fails(capsys, f"{proxy.url}/v2/models/lenet-missing", tmp_path / "index")
        assert "has no model 'lenet-missing'" in err and "(it has" not in err
        network = load_model(f"{proxy.url}/v2/models/lenet").network
        assert network.info.binary is False
        assert network.score_images(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)


# --- malformed answers: one line, and the last whole generation saved ------------------------


def _ragged(answer: dict, headers: dict):
    data = answer["outputs"][0]["data"]
    answer["outputs"][0]["data"] = [data[:10], *data[10:]]
    return answered(answer)


def _nested_wrong(answer: dict, headers: dict):
    answer["outputs"][0]["data"] = [[answer["outputs"][0]["data"]], 5]
    return answered(answer)


def _deep_data(answer: dict, headers: dict):
    answer["outputs"][0]["data"] = "@@"
    return 200, json.dumps(answer).replace('"@@"', "[" * 5000 + "]" * 5000).encode(), {}


def _strings(answer: dict, headers: dict):
    answer["outputs"][0]["data"] = [str(value) for value in answer["outputs"][0]["data"]]
    return answered(answer)


def _booleans(answer: dict, headers: dict):
    answer["outputs"][0]["data"] = [value > 0.5 for value in answer["outputs"][0]["data"]]
    return answered(answer)


def _two_outputs(answer: dict, headers: dict):
    first = dict(answer["outputs"][0])
    first["data"] = [1.0 if i % 10 == 0 else 0.0 for i in range(len(first["data"]))]
    answer["outputs"].insert(0, first)
    return answered(answer)


def _top_k(row: list[str]):
    def change(answer: dict, headers: dict):
        rows = answer["outputs"][0]["shape"][0]
        answer["outputs"][0]["data"] = row * rows
        return answered(answer)

    return change


@pytest.mark.parametrize(
    ("change", "extra", "expected"),
    [
        (_ragged, (), "not nested as its shape"),
        (_nested_wrong, (), "not nested as its shape"),
        (_deep_data, (), "the answer is not JSON"),
        (lambda answer, headers: (200, DEEP, {}), (), "the answer is not JSON"),
        (_strings, (), "holds other than numbers"),
        (_booleans, (), "holds other than numbers"),
        (_two_outputs, (), "the answer has output 'probabilities' twice"),
        (_top_k(["0.9:1", "0.8:2"]), ("--top-k", "2"), "scores of one image add up to over 1"),
        (_top_k(["0.5:1", "0.4:1"]), ("--top-k", "2"), "names class 1 twice for one image"),
    ],
)
def test_a_malformed_answer_mid_run_is_one_line_and_keeps_the_last_generation(
    mlserver, tmp_path, capsys, change, extra, expected
):
    out = tmp_path / "run"
    with proxy_of(mlserver, faults=False, edit=answer_edit(change, after=1)) as proxy:
        err = evolve_fails(capsys, f"{proxy.url}/v2/models/lenet", out, *extra)
    assert expected in err
    assert "generation 1: " in err and "generation 0 is the last one saved" in err
    assert list(out.glob("checkpoints/*.parquet"))


def test_a_binary_answer_whose_shape_overflows_is_one_line(mlserver, tmp_path, capsys):
    header = json.dumps(
        {
            "outputs": [
                {
                    "name": "probabilities",
                    "datatype": "FP32",
                    "shape": [1 << 30, 1 << 30, 16],  # 2**64 values: numpy's product wraps to 0
                    "parameters": {"binary_data_size": 0},
                }
            ]
        }
    ).encode()

    def edit(path, headers, status, body):
        if path == "/v2":
            return answered({"name": "mlserver", "extensions": ["binary_tensor_data"]})
        if path.endswith("/infer"):
            return 200, header, {"Inference-Header-Content-Length": str(len(header))}
        return None

    with proxy_of(mlserver, faults=False, edit=edit) as proxy:
        err = evolve_fails(capsys, f"{proxy.url}/v2/models/lenet", tmp_path / "run")
    assert "is FP32 of 0 bytes for shape [1073741824, 1073741824, 16]" in err


# --- credentials and terminal escapes in what the server says -------------------------------


def _echo(headers: dict) -> str:
    return headers.get("Authorization", "") + ESCAPES


@pytest.mark.parametrize("cut", [100, 110, 120, 125])
def test_an_error_echoing_the_token_shows_no_part_of_it(mlserver, tmp_path, capsys, cut):
    """The server's text is cut to 160 characters: wherever the cut falls, no 8 of the token's show."""

    def change(answer, headers):
        return 500, json.dumps({"error": "x" * cut + " got Authorization: " + _echo(headers)}).encode(), {}

    with proxy_of(mlserver, faults=False, edit=answer_edit(change)) as proxy:
        err = evolve_fails(capsys, f"{proxy.url}/v2/models/lenet", tmp_path / "run", *AUTHORIZATION)
    assert "HTTP 500: xxxx" in err


def _echoing_names(answer: dict, headers: dict):
    answer["outputs"][0]["name"] = "x" * 20 + _echo(headers)
    return answered(answer)


def test_names_echoing_the_token_or_escapes_are_shown_clean(mlserver, tmp_path, capsys):
    # In an infer answer's outputs.
    with proxy_of(mlserver, faults=False, edit=answer_edit(_echoing_names)) as proxy:
        err = evolve_fails(capsys, f"{proxy.url}/v2/models/lenet", tmp_path / "infer", *AUTHORIZATION)
        assert "the answer has no output 'probabilities' (it has xxxxxxxxxxxxxxxxxxxx***...)" in err
    # In the model's metadata: its outputs, its input's type.
    with proxy_of(
        mlserver, faults=False, edit=metadata_edit(lambda m, h: m["outputs"][0].update(name=_echo(h)))
    ) as proxy:
        url = f"{proxy.url}/v2/models/lenet"
        err = evolve_fails(capsys, url, tmp_path / "meta", *AUTHORIZATION, "--output", "probabilities")
        assert "it has no output 'probabilities' (it has ***?]0;PWNED??[2J?[31m second line)" in err
    with proxy_of(
        mlserver, faults=False, edit=metadata_edit(lambda m, h: m["inputs"][0].update(datatype=_echo(h)))
    ) as proxy:
        err = evolve_fails(capsys, f"{proxy.url}/v2/models/lenet", tmp_path / "type", *AUTHORIZATION)
        assert "its input is ***?]0;..., not FP32 images" in err

    # In the server's list of its models.
    def index(path, headers, status, body):
        if path != "/v2/repository/index":
            return None
        return answered([{"name": "m2"}, {"name": "leak " + _echo(headers)}, {"name": ESCAPES + "x"}])

    with proxy_of(mlserver, faults=False, edit=index) as proxy:
        err = evolve_fails(capsys, f"{proxy.url}/v2/models/lenet-missing", tmp_path / "index", *AUTHORIZATION)
        assert "has no model 'lenet-missing' (it has: " in err and "m2" in err and "leak ***?]0;PWNED" in err


# --- --scores auto ------------------------------------------------------------------------


def _rounded(answer: dict, headers: dict):
    answer["outputs"][0]["data"] = [round(value, 2) for value in answer["outputs"][0]["data"]]
    return answered(answer)


def test_scores_auto_reads_rounded_probabilities_as_probabilities_once_for_all(mlserver, caplog):
    """A vendor rounding to two decimals: rows sum to 1 give or take a few hundredths."""
    rng = np.random.default_rng(5)
    images = np.concatenate([rng.random((24, 1, 28, 28), dtype=np.float32) ** p for p in (1, 3, 8)])
    with proxy_of(mlserver, faults=False, edit=answer_edit(_rounded)) as proxy:
        url = f"{proxy.url}/v2/models/lenet"
        forced = load_model(f"{url}?scores=probabilities").network.score_images(images)
        assert (np.abs(forced.sum(axis=1) - 1) > 1e-3).any()  # the rows a 1e-3 rule took for logits
        network = load_model(url).network
        with caplog.at_level(logging.INFO, logger="fooling.fitness.sources.endpoint"):
            np.testing.assert_array_equal(network.score_images(images[:24]), forced[:24])
            np.testing.assert_array_equal(network.score_images(images[24:]), forced[24:])
    decided = [r.getMessage() for r in caplog.records if "--scores auto reads" in r.getMessage()]
    assert decided == [f"{url}: --scores auto reads its answers as probabilities"]


# --- fixed batches: the padding is sent, and counted -----------------------------------------


def test_a_fixed_batch_model_counts_its_padding_as_sent(mlserver):
    edit = metadata_edit(lambda m, h: m["inputs"][0].update(shape=[7, 1, 28, 28]))
    with proxy_of(mlserver, faults=False, edit=edit) as proxy:
        network = load_model(f"{proxy.url}/v2/models/lenet").network
        assert network.info.fixed_batch == 7
        assert [network.images_sent_for(n) for n in (0, 1, 7, 8, 20)] == [0, 7, 7, 14, 21]
        before = served(mlserver.folder, "lenet")
        assert network.score_images(np.zeros((20, 1, 28, 28), np.float32)).shape == (20, 10)
        assert served(mlserver.folder, "lenet") - before == 21 == network.images_sent
