"""A real Open Inference Protocol server (Seldon MLServer) serving the LeNet, and a fault proxy.

MLServer runs as its own process, bound to 127.0.0.1 on free ports, with the small runtime
``lenet_runtime.py`` beside this file (ONNX Runtime, one thread: the same answer for the same
request every time). It serves several models of one LeNet export:

* ``lenet``: input ``images`` FP32 [-1, 1, 28, 28], output ``probabilities`` [-1, 10]; it
  answers an output asked for with ``parameters.classification = k`` with Triton's top-k
  strings ``"score:index"``;
* ``lenet-logits``: output ``logits``; ``lenet-nhwc``: input [-1, 28, 28, 1];
* ``lenet-nan`` (NaN scores), ``lenet-wide`` (answers 9 classes for a model of 10),
  ``lenet-flat`` (metadata input [-1, 784], which no image classifier takes).

Each model counts the images it scored in ``count-NAME.txt`` (:func:`served`), so tests check
the client's count against the server's.

:class:`FaultProxy` forwards to it and breaks requests on a fixed schedule: 503, 429 with
``Retry-After``, a dropped connection, a slow answer, a redirect to another port (a listener
that records whoever connects: nobody must), garbage, a compressed answer, an answer trickled a
byte at a time, headers trickled a line at a time. It can also demand a bearer token (401
otherwise), and rewrite any answer the server gave (``edit``: hostile metadata, malformed
answers, text echoing the token). Everything listens on 127.0.0.1 only and stops after the tests.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.client
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
IMAGES = {"name": "images", "datatype": "FP32", "shape": [-1, 1, 28, 28]}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    return free_port()


def _model(folder: Path, name: str, inputs: dict, output: str, **extra) -> None:
    path = folder / name
    path.mkdir()
    settings = {
        "name": name,
        "implementation": "lenet_runtime.LeNetRuntime",
        "inputs": [inputs],
        "outputs": [{"name": output, "datatype": "FP32", "shape": [-1, extra.pop("classes", 10)]}],
        "parameters": {
            "uri": str(folder / "lenet.onnx"),
            "extra": {"output": output, "count": str(folder), **extra},
        },
    }
    (path / "model-settings.json").write_text(json.dumps(settings))


class _QuietServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that says nothing when a client drops its connection.

    The client closes connections it refuses answers on; socketserver would print each reset
    to this process's stderr, which the tests read as the command's output.
    """

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def served(folder: Path, name: str) -> int:
    """Images model ``name`` has scored so far."""
    path = folder / f"count-{name}.txt"
    return int(path.read_text()) if path.exists() else 0


class MLServer:
    """An MLServer process serving the LeNet models (see the module's docstring)."""

    def __init__(self, folder: Path, network: torch.nn.Module) -> None:
        self.folder = folder
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notices
            torch.onnx.export(
                network.eval(),
                (torch.zeros(2, 1, 28, 28),),
                str(folder / "lenet.onnx"),
                opset_version=17,
                dynamo=False,
                input_names=["images"],
                output_names=["logits"],
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            )
        shutil.copy(HERE / "lenet_runtime.py", folder / "lenet_runtime.py")
        _model(folder, "lenet", IMAGES, "probabilities")
        _model(folder, "lenet-logits", IMAGES, "logits")
        _model(folder, "lenet-nhwc", {**IMAGES, "shape": [-1, 28, 28, 1]}, "probabilities", layout="NHWC")
        _model(folder, "lenet-nan", IMAGES, "probabilities", fault="nan")
        _model(folder, "lenet-wide", IMAGES, "probabilities", fault="wide")
        _model(folder, "lenet-flat", {**IMAGES, "shape": [-1, 784]}, "probabilities")
        self.port = free_port()
        settings = {
            "host": "127.0.0.1",
            "http_port": self.port,
            "grpc_port": free_port(),
            "metrics_endpoint": None,
            "parallel_workers": 0,
            "debug": False,
        }
        (folder / "settings.json").write_text(json.dumps(settings))
        self.log = open(folder / "mlserver.log", "w")  # noqa: SIM115 (closed in stop)
        environment = {**os.environ, "MLSERVER_METRICS_DIR": str(folder / "metrics")}
        mlserver = Path(sys.executable).with_name("mlserver")
        self.process = subprocess.Popen(
            [str(mlserver), "start", str(folder)],
            cwd=folder,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=environment,
        )
        self._wait_ready()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"MLServer exited: {(self.folder / 'mlserver.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/v2/models/lenet/ready")
                if connection.getresponse().status == 200:
                    return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("MLServer did not become ready")

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL)."""
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


class Trap:
    """A listener on 127.0.0.1 counting the connections made to it (a redirect's target)."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except OSError:
                continue
            self.connections += 1
            connection.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.socket.close()


# The proxy's schedule: request number (from 1) modulo its length -> what happens to it.
FAULTS = ("pass", "503", "pass", "429", "drop", "pass", "slow", "redirect", "pass", "garbage", "pass", "500")
# How long a trickling answer goes on at most (then the proxy's thread ends on its own).
TRICKLE_S = 60.0

# An edit of the server's answers: (path, request headers, status, body) -> (status, body, extra
# headers) to answer instead, or None to pass the server's answer on.
Edit = Callable[[str, dict, int, bytes], "tuple[int, bytes, dict] | None"]


@functools.cache
def compressed_zeros() -> bytes:
    """8 MiB of zeros, gzip-compressed to about 8 kB: a small compression bomb."""
    return gzip.compress(b"\0" * (8 << 20), 9)


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream``, breaking infer requests on :data:`FAULTS`.

    Args:
        upstream: the server's port.
        faults: break infer requests (``False``: forward everything).
        token: demand ``Authorization: Bearer TOKEN`` (401 otherwise), ``None``: no check.
        slow_s: how long a "slow" answer waits before it is forwarded.
        tls: serve HTTPS with this context (``None``: HTTP).
        schedule: the faults, by infer request number modulo its length (default :data:`FAULTS`);
            besides those of :data:`FAULTS`: ``compressed`` (:func:`compressed_zeros` with
            ``Content-Encoding: encoding``), ``trickle`` (headers, then one byte of a long body
            every ``slow_s``), ``slow-headers`` (one header line every ``slow_s``).
        edit: rewrites the server's answers (see :data:`Edit`), ``None``: none.
        encoding: the ``Content-Encoding`` of a ``compressed`` answer.
    """

    def __init__(
        self,
        upstream: int,
        *,
        faults: bool = True,
        token: str | None = None,
        slow_s: float = 1.5,
        tls: ssl.SSLContext | None = None,
        schedule: tuple[str, ...] = FAULTS,
        edit: Edit | None = None,
        encoding: str = "gzip",
    ) -> None:
        self.upstream = upstream
        self.schedule = schedule
        self.faults = faults
        self.token = token
        self.slow_s = slow_s
        self.edit = edit
        self.encoding = encoding
        self.trap = Trap()
        self.counts: dict[str, int] = {}
        self.requests = 0
        self.seen_authorization: set[str] = set()
        self.seen_headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _forward(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                authorization = self.headers.get("Authorization")
                with proxy._lock:
                    proxy.seen_headers.append(dict(self.headers))
                    if authorization:
                        proxy.seen_authorization.add(authorization)
                if proxy.token is not None and authorization != f"Bearer {proxy.token}":
                    return self._answer(401, b'{"error": "unauthorized"}')
                fault = "pass"
                if proxy.faults and self.path.endswith("/infer"):
                    with proxy._lock:
                        proxy.requests += 1
                        fault = proxy.schedule[proxy.requests % len(proxy.schedule)]
                        proxy.counts[fault] = proxy.counts.get(fault, 0) + 1
                if fault == "503":
                    return self._answer(503, b'{"error": "busy"}', {"Retry-After": "0"})
                if fault == "429":
                    return self._answer(429, b'{"error": "slow down"}', {"Retry-After": "0.05"})
                if fault == "500":
                    return self._answer(500, b"internal error")
                if fault == "drop":
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return None
                if fault == "redirect":
                    location = f"http://127.0.0.1:{proxy.trap.port}{self.path}"
                    return self._answer(307, b"", {"Location": location})
                if fault == "garbage":
                    return self._answer(200, b"<html>\x00\xff not json", {"Content-Type": "application/json"})
                if fault == "compressed":
                    headers = {"Content-Type": "application/json", "Content-Encoding": proxy.encoding}
                    return self._answer(200, compressed_zeros(), headers)
                if fault == "trickle":
                    start = (
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                    )
                    return self._trickle(start, b" ")
                if fault == "slow-headers":
                    return self._trickle(b"HTTP/1.1 200 OK\r\n", b"X-Slow: 1\r\n")
                if fault == "slow":
                    time.sleep(proxy.slow_s)
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream, timeout=30)
                # No compression asked for: the answer is passed on as it is, headers and all.
                dropped = ("host", "authorization", "accept-encoding")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
                upstream.request(method, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                upstream.close()
                passed = ("content-type", "inference-header-content-length", "retry-after")
                status, headers = answer.status, {k: v for k, v in answer.getheaders() if k.lower() in passed}
                edited = proxy.edit(self.path, dict(self.headers), status, data) if proxy.edit else None
                if edited is not None:
                    status, data, extra = edited
                    headers = {"Content-Type": "application/json", **extra}
                self._answer(status, data, headers)
                return None

            def _trickle(self, start: bytes, unit: bytes) -> None:
                """``start`` at once, then ``unit`` every ``slow_s``: never a whole answer."""
                self.close_connection = True
                try:
                    self.wfile.write(start)
                    for _ in range(int(TRICKLE_S / proxy.slow_s)):
                        time.sleep(proxy.slow_s)
                        self.wfile.write(unit)
                except OSError:  # the client gave up: as it should
                    pass

            def _answer(self, status: int, body: bytes, headers: dict | None = None) -> None:
                try:
                    self.send_response(status)
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up on a slow answer: nobody to tell
                    self.close_connection = True

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                self._forward("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._forward("POST")

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """``http(s)://127.0.0.1:PORT``."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.trap.stop()


def self_signed(folder: Path) -> tuple[Path, Path]:
    """``(certificate, key)`` PEM files of a self-signed certificate for 127.0.0.1."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert, secret = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    secret.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert, secret


@pytest.fixture(scope="session")
def mlserver(lenet, tmp_path_factory):
    """A running MLServer serving the LeNet models on 127.0.0.1 (stopped after the session)."""
    server = MLServer(tmp_path_factory.mktemp("mlserver"), lenet.network)
    yield server
    server.stop()


@pytest.fixture
def fault_proxy(mlserver):
    """A fault-injecting proxy in front of :func:`mlserver` (stopped after the test)."""
    proxy = FaultProxy(mlserver.port)
    yield proxy
    proxy.stop()


@pytest.fixture
def endpoint_settings():
    """Restores this process's endpoint settings after a test that configures them."""
    from fooling.fitness.endpoint import EndpointSettings, configure_endpoints

    yield configure_endpoints
    configure_endpoints(EndpointSettings())
