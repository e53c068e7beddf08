"""Talking to an Open Inference Protocol server: metadata, infer, retries, rate, concurrency.

One :class:`EndpointClient` per process and endpoint. Requests go over one :mod:`httpx`
client (a pool of keep-alive connections, TLS verified, redirects never followed: a
credential is never sent to another origin), ``concurrency`` at a time from a thread pool,
at most ``max_rate`` images per second (:class:`RateLimiter`). A request that fails with a
connection error, a timeout, HTTP 429, 5xx, a redirect or a garbled answer is tried again
after an exponential backoff with jitter (:mod:`tenacity`; ``Retry-After`` honoured), the same
images in the same request, so the answers, matched to requests in order, are the same at any
concurrency and with any number of retries. Images are counted once, when first sent
(:attr:`EndpointClient.images_sent`, a fixed-batch model's padding included), never again on a
retry.

Each try has one deadline, the request timeout, from connecting to the answer's last byte: the
connections' every read and write is cut to what is left of it (:class:`_DeadlineStream`), so a
server trickling an answer a byte at a time cannot hold a request longer. Answers are asked for,
and accepted, uncompressed only (``Accept-Encoding: identity``): a small compressed answer can
unpack to gigabytes, and the protocol's answers need no compression.

Errors are one line and never hold a credential: 401/403 name the status, and everything a
server says is shown through :meth:`EndpointSettings.server_text` (secrets blanked, printable).
"""

from __future__ import annotations

import concurrent.futures
import email.utils
import logging
import ssl
import threading
import time

import numpy as np

try:  # the ``endpoint`` extra
    import httpcore
    import httpx
    import tenacity
except ImportError:
    httpcore = httpx = tenacity = None

from fooling.encodings.errors import UserError, error_line
from fooling.fitness.endpoint.protocol import (
    BINARY_HEADER,
    AnswerError,
    GarbledAnswer,
    decode_answer,
    encode_request,
    load_json,
)
from fooling.fitness.endpoint.settings import TOKEN_VARIABLE, EndpointSettings

__all__ = [
    "EndpointError",
    "EndpointClient",
    "RateLimiter",
    "RetryableError",
]

logger = logging.getLogger(__name__)


class EndpointError(UserError):
    """An endpoint that cannot be used or stopped answering; one line, never a credential.

    Attributes:
        status: the HTTP status that caused it, where one did (``None``: no answer).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetryableError(Exception):
    """A failure worth another try (connection, timeout, 429, 5xx, redirect, garbled answer).

    Attributes:
        retry_after: seconds the server asked to wait (``Retry-After``), or ``None``.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimiter:
    """At most ``rate`` units per second, shared by threads (a token bucket of one second).

    Args:
        rate: units per second; ``None``: no limit.
    """

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def acquire(self, units: int) -> float:
        """Wait until ``units`` more may go; return the seconds waited."""
        if self.rate is None:
            return 0.0
        with self._lock:
            # GCRA: a theoretical arrival time moving on by units / rate per request; an idle
            # client may send a burst of one second's worth at once.
            now = time.monotonic()
            self._next = max(self._next, now) + units / self.rate
            wait = max(0.0, self._next - 1.0 - now)
        if wait > 0:
            time.sleep(wait)
        return wait


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds of a ``Retry-After`` header (a number or an HTTP date), ``None`` if absent or bad."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# Each try's deadline, per thread: a try runs in one thread from connecting to the answer's last
# byte, so its connection's reads and writes find the deadline here (``at`` None: no try running).
_DEADLINE = threading.local()
# Bytes written at once: the deadline is checked between pieces of a large request.
_WRITE_PIECE = 1 << 16


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` cut to what is left of this thread's try.

    Raises:
        error: nothing is left (an ``httpcore`` timeout, which httpx reports as its own).
    """
    at = getattr(_DEADLINE, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:  # not 0 passed on: a socket timeout of 0 means "do not wait", not "time is up"
        raise error("the request timeout is over")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream:
    """An httpcore network stream whose reads and writes keep to the try's deadline (:func:`_left`)."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        for start in range(0, len(buffer), _WRITE_PIECE):
            self._stream.write(buffer[start : start + _WRITE_PIECE], _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout=None):
        timeout = _left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str):
        return self._stream.get_extra_info(info)


class _DeadlineBackend:
    """httpcore's network backend, connecting within the try's deadline to :class:`_DeadlineStream` s."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout=None, local_address=None, socket_options=None):
        timeout = _left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _transport(settings: EndpointSettings) -> httpx.HTTPTransport:
    """The httpx transport for ``settings``, over connections that keep each try's deadline.

    Raises:
        RuntimeError: an httpx whose transport keeps no httpcore pool (a bug to fix here).
    """
    verify = ssl.create_default_context(cafile=settings.ca_bundle) if settings.ca_bundle else True
    limits = httpx.Limits(
        max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
    )
    transport = httpx.HTTPTransport(verify=verify, limits=limits, trust_env=False)
    # httpx takes no network backend: its transport sends every request through the httpcore
    # pool it keeps as ``_pool``, which is replaced by the same pool over deadline-keeping
    # connections. Checked, so that an httpx that changed this fails here, not silently later.
    if not isinstance(getattr(transport, "_pool", None), httpcore.ConnectionPool):
        raise RuntimeError(
            "httpx.HTTPTransport keeps no httpcore pool in _pool: update fooling's endpoint client"
        )
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=_DeadlineBackend(),
    )
    return transport


def _tls_failure(error: BaseException) -> bool:
    while error is not None:
        if isinstance(error, ssl.SSLError):
            return True
        error = error.__cause__ or error.__context__
    return False


class EndpointClient:
    """Requests to one endpoint from one process.

    Args:
        origin: ``scheme://host:port``.
        shown: how messages name the endpoint.
        settings: credentials, TLS, timeouts, retries and traffic.
    """

    def __init__(self, origin: str, shown: str, settings: EndpointSettings) -> None:
        if httpx is None or httpcore is None or tenacity is None:
            raise EndpointError(
                f"{shown}: scoring a model behind an endpoint needs httpx and tenacity: "
                "pip install 'fooling[endpoint]'"
            )
        for name, value in settings.all_headers().items():
            if not value.isascii():  # HTTP sends header values as ASCII; the value is never shown
                source = f"${TOKEN_VARIABLE} or --header" if name.lower() == "authorization" else "--header"
                raise EndpointError(f"{shown}: the {name} header ({source}) holds a non-ASCII character")
        self.origin = origin
        self.shown = shown
        self.settings = settings
        self.images_sent = 0  # counted once per image, when its request is first sent
        self._count_lock = threading.Lock()
        self.rate = RateLimiter(settings.max_rate)
        # Per-request lines would drown the log (and httpx logs every request at INFO).
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self._http = httpx.Client(
            base_url=origin,
            # Uncompressed answers only (the size cap counts the bytes that arrive).
            headers={**settings.all_headers(), "Accept-Encoding": "identity"},
            transport=_transport(settings),
            follow_redirects=False,
            timeout=httpx.Timeout(settings.timeout_s),
            trust_env=False,  # no proxy or .netrc from the environment: requests go where the URL says
        )
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Close the connections and the thread pool."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._http.close()

    # --- one request ------------------------------------------------------------------

    def _fail(self, message: str, status: int | None = None) -> EndpointError:
        return EndpointError(self.settings.redact(f"{self.shown}: {message}"), status)

    def _server_says(self, body: bytes) -> str:
        """``": TEXT"`` of a JSON error answer's ``error`` text, shown safely; ``""`` if none."""
        try:
            answer = load_json(body)
        except ValueError:
            answer = None
        said = answer.get("error") if isinstance(answer, dict) else None
        text = self.settings.server_text(said, 160) if isinstance(said, str) else ""
        return f": {text}" if text else ""

    def _once(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[bytes, httpx.Headers]:
        """One try, within the request timeout as a whole: ``(body, headers)`` of a 200 answer.

        Raises:
            RetryableError: worth another try (a timeout among them).
            EndpointError: not (401, 403, 404, other 4xx, an answer over the size cap or
                compressed, TLS).
        """
        cap = self.settings.max_answer_bytes
        _DEADLINE.at = time.monotonic() + self.settings.timeout_s
        try:
            with self._http.stream(method, path, content=body, headers=headers) as response:
                encoding = response.headers.get("content-encoding", "").strip().lower()
                if encoding not in ("", "identity"):
                    said = self.settings.server_text(encoding, 30)
                    raise self._fail(
                        f"the answer is compressed (Content-Encoding: {said}) although an uncompressed "
                        "one was asked for; this client reads uncompressed answers only"
                    )
                length = response.headers.get("content-length")
                if length is not None and length.isdigit() and int(length) > cap:
                    raise self._fail(f"the answer is {int(length):,} bytes, over the cap of {cap:,}")
                chunks, size = [], 0
                for chunk in response.iter_raw():  # raw: httpx never decompresses what arrives
                    size += len(chunk)
                    if size > cap:
                        raise self._fail(f"the answer is over the cap of {cap:,} bytes")
                    chunks.append(chunk)
                data = b"".join(chunks)
        except httpx.TransportError as error:
            # httpx's own text may quote what the server sent (a malformed header line).
            said = self.settings.server_text(error_line(error, limit=None), 160)
            if isinstance(error, httpx.TimeoutException):  # every phase waits at most what is left
                said = f"no whole answer within the request timeout of {self.settings.timeout_s:g} s"
            if _tls_failure(error):
                raise self._fail(
                    f"TLS verification failed ({said}); give the server's CA with --ca-bundle FILE"
                ) from None
            raise RetryableError(f"{type(error).__name__}: {said}") from None
        finally:
            _DEADLINE.at = None
        status = response.status_code
        if status == 200:
            return data, response.headers
        reason = self.settings.server_text(response.reason_phrase, 40)
        if status in (401, 403):
            raise self._fail(
                f"HTTP {status} {reason}: the server refused the credentials "
                "(check --header or FOOLING_ENDPOINT_TOKEN)",
                status,
            )
        if status == 429 or status >= 500:
            raise RetryableError(f"HTTP {status}{self._server_says(data)}", _retry_after(response))
        if 300 <= status < 400:  # never followed: the credentials would go wherever it points
            raise RetryableError(f"HTTP {status} redirect (not followed)")
        raise self._fail(f"HTTP {status} {reason}{self._server_says(data)}", status)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        after = getattr(error, "retry_after", None)
        if after is not None:
            return min(after, self.settings.max_backoff_s)
        return self._backoff(state)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ):
        """``(body, headers)`` of the 200 answer to ``method path``, retrying as the settings say.

        Raises:
            EndpointError: a failure not worth retrying, or the retries spent (one line with
                the last failure).
        """
        return self._retrying()(self._once, method, path, body, headers or {})

    def _retrying(self) -> tenacity.Retrying:
        settings = self.settings
        self._backoff = tenacity.wait_exponential_jitter(
            multiplier=settings.backoff_s, max=settings.max_backoff_s, jitter=settings.backoff_s
        )

        def log(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            logger.info(
                "%s: %s; try %d again", self.shown, self.settings.redact(str(error)), state.attempt_number + 1
            )

        def give_up(state: tenacity.RetryCallState):
            error = state.outcome.exception() if state.outcome is not None else None
            raise self._fail(f"no answer after {state.attempt_number} tries (last: {error})")

        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(settings.retries + 1),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type((RetryableError, GarbledAnswer)),
            before_sleep=log,
            retry_error_callback=give_up,
        )

    # --- the protocol ---------------------------------------------------------------------

    def get_json(self, path: str) -> dict:
        """The JSON object a ``GET path`` answers.

        Raises:
            EndpointError: see :meth:`request`; an answer that is not a JSON object.
        """
        body, _ = self.request("GET", path)
        try:
            value = load_json(body)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise self._fail(f"GET {path} did not answer a JSON object")
        return value

    def try_get_json(self, path: str, method: str = "GET", body: bytes | None = None) -> dict | list | None:
        """Like :meth:`get_json` for optional facts (the server's metadata, its models); ``None`` if none."""
        try:
            answer, _ = self._once(method, path, body, {"Content-Type": "application/json"} if body else {})
            return load_json(answer)
        except (EndpointError, RetryableError, ValueError):
            return None

    def infer_batch(
        self,
        path: str,
        input_name: str,
        images: np.ndarray,
        output: str,
        *,
        classes: int,
        binary: bool,
        top_k: int | None,
    ) -> np.ndarray:
        """Scores ``(len(images), classes)`` float64 of one request (``-inf``: not returned).

        Raises:
            EndpointError: see :meth:`request`.
            AnswerError: an answer of the wrong shape, type, or with NaN or infinity.
        """
        body, headers = encode_request(input_name, images, output, binary=binary, top_k=top_k)
        self.rate.acquire(len(images))
        with self._count_lock:
            self.images_sent += len(images)

        def once() -> np.ndarray:
            answer, answer_headers = self._once("POST", path, body, headers)
            return decode_answer(
                answer,
                answer_headers.get(BINARY_HEADER.lower()),
                output,
                rows=len(images),
                classes=classes,
                top_k=top_k,
            )

        try:
            return self._retrying()(once)
        except AnswerError as error:
            raise AnswerError(self.settings.redact(f"{self.shown}: {error}")) from None

    def infer(
        self,
        path: str,
        input_name: str,
        images: np.ndarray,
        output: str,
        *,
        classes: int,
        binary: bool,
        top_k: int | None,
        batch: int,
    ) -> np.ndarray:
        """Scores ``(len(images), classes)`` of ``images`` in requests of ``batch``, in order.

        Up to ``settings.concurrency`` requests are in flight; the answers are put back in
        the order of the images, whatever order they arrive in.
        """
        starts = range(0, len(images), batch)
        call = dict(classes=classes, binary=binary, top_k=top_k)
        if self.settings.concurrency == 1 or len(starts) == 1:
            parts = [
                self.infer_batch(path, input_name, images[s : s + batch], output, **call) for s in starts
            ]
        else:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self.settings.concurrency, thread_name_prefix="fooling-endpoint"
                )
            futures = [
                self._pool.submit(self.infer_batch, path, input_name, images[s : s + batch], output, **call)
                for s in starts
            ]
            try:
                parts = [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return np.concatenate(parts) if parts else np.zeros((0, classes))
