"""Endpoint models against a real MLServer: what the metadata gives, and every bad input as one line."""

from __future__ import annotations

import email.utils
import pickle
import ssl
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import torch
from oip_fixtures import FaultProxy, closed_port, self_signed, served

from fooling.evo.cli.main import main
from fooling.fitness import load_model
from fooling.fitness.endpoint import (
    EndpointError,
    EndpointSettings,
    QueryBudget,
    RateLimiter,
    decode_answer,
    encode_request,
    parse_endpoint,
)
from fooling.fitness.endpoint.client import EndpointClient, RetryableError, _retry_after
from fooling.fitness.sources import describe_model, source_change


def test_scores_match_the_network_in_every_layout_and_kind_of_output(mlserver, lenet):
    images = np.random.default_rng(1).random((7, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        expected = torch.softmax(lenet.network(torch.from_numpy(images)), 1).numpy()
    for name in ("lenet", "lenet-logits", "lenet-nhwc"):
        model = load_model(f"{mlserver.url}/v2/models/{name}")
        assert model.spec.input_size == (28, 28) and model.spec.channels == 1 and model.spec.num_classes == 10
        before = served(mlserver.folder, name)
        got = model.network.score_images(images)
        # float32 softmax on two sides: agreement to a few float32 ulps of 1.
        np.testing.assert_allclose(got, expected, atol=1e-6)
        assert served(mlserver.folder, name) - before == 7 == model.network.images_sent
    record = describe_model(f"{mlserver.url}/v2/models/lenet", load_model(f"{mlserver.url}/v2/models/lenet"))
    assert record["kind"] == "endpoint" and record["differentiable"] is False


def test_top_k_keeps_only_the_classes_returned(mlserver):
    images = np.random.default_rng(2).random((5, 1, 28, 28), dtype=np.float32)
    full = load_model(f"{mlserver.url}/v2/models/lenet").network.score_images(images)
    for k in (1, 3):
        top = load_model(f"{mlserver.url}/v2/models/lenet?top-k={k}").network.score_images(images)
        assert (np.isfinite(top).sum(axis=1) == k).all()
        best = np.argsort(-full, axis=1, kind="stable")[:, :k]
        np.testing.assert_allclose(
            np.take_along_axis(top, best, 1), np.take_along_axis(full, best, 1), atol=1e-7
        )


def one_line(capsys, *argv: str) -> str:
    code = main(["evolve", "--population", "8", "--generations", "2", "--no-progress", "--no-report", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    ("model", "extra", "expected"),
    [
        ("lenet-missing", (), "has no model 'lenet-missing' (it has: "),
        ("lenet-flat", (), "[batch, C, H, W]"),
        ("lenet-nan", (), "NaN or infinity"),
        ("lenet-wide", (), "shape (8, 9)"),
        ("lenet", ("--output", "nope"), "no output 'nope'"),
        ("lenet", ("--top-k", "11"), "more than its 10 classes"),
        ("lenet", ("--top-k", "2", "--scores", "logits"), "cannot be used with --scores logits"),
    ],
)
def test_bad_models_and_answers_are_one_line(
    mlserver, tmp_path, capsys, model, extra, expected, endpoint_settings
):
    out = tmp_path / "run"
    err = one_line(
        capsys,
        "--model",
        f"{mlserver.url}/v2/models/{model}",
        "--out",
        str(out),
        "--request-batch",
        "16",
        *extra,
    )
    assert expected in err
    assert not list(out.glob("checkpoints/*.parquet"))


def test_an_unreachable_host_is_one_line_within_the_retries(tmp_path, capsys, endpoint_settings):
    url = f"http://127.0.0.1:{closed_port()}/v2/models/lenet"
    err = one_line(
        capsys, "--model", url, "--out", str(tmp_path / "run"), "--retries", "2", "--request-timeout", "2"
    )
    assert "no answer after 3 tries" in err and "ConnectError" in err


def test_an_answer_over_the_size_cap_is_one_line(mlserver, endpoint_settings):
    endpoint_settings(EndpointSettings(max_answer_bytes=200))
    model = load_model(f"{mlserver.url}/v2/models/lenet")
    with pytest.raises(Exception, match="over the cap of 200") as raised:
        model.network.score_images(np.zeros((20, 1, 28, 28), np.float32))
    assert str(raised.value).count("\n") == 0


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("http://user:pw@127.0.0.1:1/v2/models/a", "user name or password"),
        ("http://127.0.0.1:1/v1/models/a", "/v2/models/NAME"),
        ("http://127.0.0.1:1/v2/models/a?api_key=SECRETVALUE", "unknown endpoint option 'api-key'"),
        ("http://127.0.0.1:1/v2/models/a?top-k=0", "--top-k expects"),
        ("ftp://127.0.0.1/v2/models/a", "not a model file"),
        ("http://127.0.0.1:1/v2/models/a/versions/..", "/v2/models/NAME"),  # would leave the model's path
        ("http://127.0.0.1:1/v2/models/./versions/2", "/v2/models/NAME"),
    ],
)
def test_bad_references_never_repeat_a_secret(reference, expected, capsys, tmp_path):
    code = main(["evolve", "--model", reference, "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "SECRETVALUE" not in err and "pw@" not in err
    if not reference.startswith("ftp"):
        assert expected in err


def test_perturb_and_ascent_refuse_an_endpoint_before_any_request(capsys, tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/v2/models/lenet"
    for argv in (
        ["perturb", "--model", url, "--image", "x.png", "--target", "1", "--out", str(tmp_path / "p")],
        ["ascent", "--model", url, "--out", str(tmp_path / "a")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "follows gradients" in err and err.count("\n") == 1


def test_a_header_or_token_that_is_not_ascii_is_one_line_without_its_value(tmp_path, capsys, monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/v2/models/lenet"
    run = ["evolve", "--model", url, "--retries", "0", "--no-progress", "--out", str(tmp_path / "r")]
    assert main([*run, "--header", "X-Key: sécret-valüe"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the X-Key header (--header) holds a non-ASCII character" in err
    monkeypatch.setenv("FOOLING_ENDPOINT_TOKEN", "tökén-SECRETVALUE")
    assert main(run) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "$FOOLING_ENDPOINT_TOKEN or --header" in err and "SECRETVALUE" not in err


def test_headers_are_never_shown():
    settings = EndpointSettings(headers=(("Authorization", "Bearer abcdefgh12345678"),))
    assert "abcdefgh12345678" not in repr(settings)
    assert settings.redact("echo: Bearer abcdefgh12345678 and abcdefgh12345678") == "echo: *** and ***"
    assert (
        parse_endpoint("HTTP://LocalHost:8/v2/models/m/versions/2").model_url
        == "http://localhost:8/v2/models/m/versions/2"
    )


def test_binary_framing_matches_tritonclient():
    """Our binary tensor extension request is byte for byte what tritonclient builds, and decodes."""
    http = pytest.importorskip("tritonclient.http")  # installed with mlserver
    images = np.random.default_rng(3).random((3, 1, 4, 4), dtype=np.float32)
    body, headers = encode_request("images", images, "probabilities", binary=True, top_k=None)
    tensor = http.InferInput("images", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images, binary_data=True)
    theirs, length = http.InferenceServerClient.generate_request_body(
        [tensor], outputs=[http.InferRequestedOutput("probabilities", binary_data=True)]
    )
    import json

    assert int(headers["Inference-Header-Content-Length"]) == len(body) - images.nbytes
    assert json.loads(body[: len(body) - images.nbytes])["inputs"] == json.loads(theirs[:length])["inputs"]
    assert body[-images.nbytes :] == theirs[length:]
    # An answer in the extension: a JSON header, then the raw scores.
    scores = np.random.default_rng(4).random((3, 10)).astype(np.float32)
    header = json.dumps(
        {
            "outputs": [
                {
                    "name": "probabilities",
                    "datatype": "FP32",
                    "shape": [3, 10],
                    "parameters": {"binary_data_size": 120},
                }
            ]
        }
    ).encode()
    got = decode_answer(
        header + scores.tobytes(), str(len(header)), "probabilities", rows=3, classes=10, top_k=None
    )
    np.testing.assert_array_equal(got, scores)


def test_the_rate_limiter_spaces_images_and_the_budget_counts_exactly():
    limiter = RateLimiter(1000.0)
    waited = sum(limiter.acquire(100) for _ in range(12))  # 1,200 images at 1,000/s: 1 s of bucket
    assert waited >= 0.1  # the second beyond the bucket's one second's worth
    budget = QueryBudget(10, spent=4)
    assert budget.allows(6) and not budget.allows(7)
    budget.spend(6)
    with pytest.raises(ValueError):
        budget.spend(1)


def test_tls_is_verified_and_a_ca_bundle_lets_a_private_server_in(
    mlserver, tmp_path, capsys, endpoint_settings
):
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    proxy = FaultProxy(mlserver.port, faults=False, tls=context)
    try:
        url = f"{proxy.url}/v2/models/lenet"
        assert url.startswith("https://")
        err = one_line(capsys, "--model", url, "--out", str(tmp_path / "run"), "--retries", "0")
        assert "TLS verification failed" in err and "--ca-bundle" in err
        endpoint_settings(EndpointSettings(ca_bundle=str(cert)))
        model = load_model(url)
        assert model.network.score_images(np.zeros((3, 1, 28, 28), np.float32)).shape == (3, 10)
    finally:
        proxy.stop()


def test_a_redirect_is_never_followed(mlserver, tmp_path, capsys, endpoint_settings):
    """A server that only redirects costs the retries, then one line; the redirect's target sees nothing."""
    proxy = FaultProxy(mlserver.port, schedule=("redirect",))
    try:
        endpoint_settings(
            EndpointSettings(retries=2, backoff_s=0.01, headers=(("Authorization", "Bearer abcdefgh123456"),))
        )
        model = load_model(f"{proxy.url}/v2/models/lenet")
        with pytest.raises(EndpointError, match="HTTP 307 redirect") as raised:
            model.network.score_images(np.zeros((2, 1, 28, 28), np.float32))
        assert "abcdefgh123456" not in str(raised.value)
        assert proxy.trap.connections == 0 and proxy.counts == {"redirect": 3}
    finally:
        proxy.stop()


def test_scorer_actors_share_the_rate_and_the_requests_in_flight(mlserver, endpoint_settings):
    endpoint_settings(EndpointSettings(max_rate=90.0, concurrency=8))
    network = load_model(f"{mlserver.url}/v2/models/lenet").network
    network.share_traffic(3)
    assert network.settings.max_rate == 30.0 and network.settings.concurrency == 2
    shipped = pickle.loads(pickle.dumps(network))  # as Ray sends it to a scorer actor
    assert shipped.settings == network.settings and shipped.info == network.info
    assert shipped.score_images(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)


def test_retry_after_is_honoured_up_to_the_longest_backoff(mlserver):

    def answer(value: str) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": value})

    assert _retry_after(answer("3")) == 3.0 and _retry_after(answer("soon")) is None
    assert 0 < _retry_after(answer(email.utils.formatdate(time.time() + 60))) <= 60
    client = EndpointClient(mlserver.url, "test", EndpointSettings(max_backoff_s=5.0, backoff_s=0.25))
    client._retrying()  # sets the backoff
    try:
        for after, expected in ((2.0, 2.0), (30.0, 5.0)):
            failed = SimpleNamespace(exception=lambda after=after: RetryableError("429", after))
            assert client._wait(SimpleNamespace(outcome=failed, attempt_number=1)) == expected
        # Without Retry-After: exponential backoff with jitter, from 0.25 s.
        failed = SimpleNamespace(exception=lambda: RetryableError("503"))
        waits = [client._wait(SimpleNamespace(outcome=failed, attempt_number=n)) for n in (1, 2, 3)]
        assert 0.25 <= waits[0] <= 0.5 and 0.5 <= waits[1] <= 0.75 and 1.0 <= waits[2] <= 1.25
    finally:
        client.close()


def test_resume_check_reads_no_file_for_an_endpoint_named_like_one(tmp_path, monkeypatch):
    # A model called net.onnx behind a server: its URL ends like a model file, and the resume
    # check must not look for that file (here or anywhere) nor refuse the run.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.onnx").write_bytes(b"not the served model")
    recorded = {"kind": "endpoint", "sha256": "0" * 64}
    assert source_change(recorded, "http://127.0.0.1:9/v2/models/net.onnx") is None
