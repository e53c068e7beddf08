"""The Open Inference Protocol's (KServe v2) REST bodies: infer requests and answers.

Framed here, over :mod:`httpx`, rather than with ``tritonclient[http]``: tritonclient's HTTP
client runs on gevent (``geventhttpclient``), whose monkey-patching does not mix with Ray's
and torch's threads, and it offers no control over redirects, answer sizes or ``Retry-After``;
the protocol's two encodings are small:

* JSON: ``{"inputs": [{"name", "shape", "datatype": "FP32", "data": [...]}], "outputs": [...]}``
  and the answer's ``{"outputs": [{"name", "shape", "datatype", "data"}]}``;
* the binary tensor extension (servers that list ``binary_tensor_data`` in ``GET /v2``): the
  JSON header, then the raw little-endian tensor bytes; the header's length goes in the
  ``Inference-Header-Content-Length`` HTTP header, each tensor's byte count in its
  ``parameters.binary_data_size``.

Top-k answers follow Triton's classification extension: an output asked for with
``parameters: {"classification": k}`` comes back as ``BYTES`` strings ``"score:index[:label]"``.
Everything in an answer is untrusted: sizes, shapes and types are checked before use, and what
it says is shown only through :func:`~fooling.fitness.endpoint.settings.server_text`.
"""

from __future__ import annotations

import json
import math

import numpy as np

from fooling.encodings.errors import UserError
from fooling.fitness.endpoint.settings import server_text

__all__ = [
    "BINARY_HEADER",
    "AnswerError",
    "GarbledAnswer",
    "decode_answer",
    "encode_request",
    "load_json",
]

BINARY_HEADER = "Inference-Header-Content-Length"
_DTYPES = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2", "INT64": "<i8", "INT32": "<i4"}
# The most dimensions an answer's output may have: scores are (rows, classes), or (k,) for one
# image's top-k; more is not an answer to this client's request.
MAX_RANK = 8


class AnswerError(UserError):
    """An answer that does not hold what was asked (a bad shape or type, garbage); one line."""


class GarbledAnswer(AnswerError):
    """An answer that is not a protocol answer at all (not JSON: garbage, a proxy's page).

    Worth another try, unlike a well-formed answer of the wrong shape.
    """


def encode_request(
    input_name: str,
    images: np.ndarray,
    output: str,
    *,
    binary: bool,
    top_k: int | None,
) -> tuple[bytes, dict[str, str]]:
    """``(body, headers)`` of an infer request for ``images``.

    Args:
        input_name: the model's input tensor.
        images: ``(batch, ...)`` float32, in the model's layout.
        output: the output tensor asked for.
        binary: use the binary tensor extension (request and answer).
        top_k: ask for the ``top_k`` best classes (classification extension), ``None``: all.
    """
    images = np.ascontiguousarray(images, dtype="<f4")
    parameters: dict = {}
    if binary:
        parameters["binary_data"] = True
    if top_k is not None:
        parameters["classification"] = int(top_k)
    tensor: dict = {"name": input_name, "shape": list(images.shape), "datatype": "FP32"}
    if binary:
        tensor["parameters"] = {"binary_data_size": images.nbytes}
    else:
        tensor["data"] = images.ravel().tolist()  # float32 -> float: exact in JSON
    header = {"inputs": [tensor], "outputs": [{"name": output, "parameters": parameters}]}
    text = json.dumps(header, separators=(",", ":")).encode()
    if not binary:
        return text, {"Content-Type": "application/json"}
    return text + images.tobytes(), {
        "Content-Type": "application/octet-stream",
        BINARY_HEADER: str(len(text)),
    }


def load_json(body: bytes) -> object:
    """The JSON value of a server's ``body``.

    Raises:
        ValueError: not UTF-8 JSON, or nested too deeply for the parser (json's recursion
            would otherwise escape as a ``RecursionError``).
    """
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _header_and_tail(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    if header_length is None:
        length = len(body)
    else:
        try:
            length = int(header_length)
        except ValueError:
            length = -1
        if not 0 < length <= len(body):
            raise GarbledAnswer(
                f"the answer's {BINARY_HEADER} ({server_text(header_length, 20)}) does not fit its body"
            )
    try:
        header = load_json(body[:length])
    except ValueError:
        raise GarbledAnswer("the answer is not JSON (garbage or a proxy's page)") from None
    if not isinstance(header, dict):
        raise GarbledAnswer("the answer is not a JSON object")
    return header, body[length:]


def _find_output(header: dict, output: str) -> tuple[dict, int]:
    outputs = header.get("outputs")
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise AnswerError("the answer has no list of outputs")
    # Two tensors of one name: which one holds the scores is anyone's guess.
    if sum(tensor.get("name") == output for tensor in outputs) > 1:
        raise AnswerError(f"the answer has output '{server_text(output, 40)}' twice")
    offset = 0
    for tensor in outputs:
        size = (
            (tensor.get("parameters") or {}).get("binary_data_size")
            if isinstance(tensor.get("parameters"), dict)
            else None
        )
        if tensor.get("name") == output:
            return tensor, offset
        if isinstance(size, int) and size >= 0:
            offset += size
    names = [server_text(o.get("name"), 40) for o in outputs[:10]]
    raise AnswerError(
        f"the answer has no output '{server_text(output, 40)}' (it has {', '.join(names) or 'none'})"
    )


def _shape(tensor: dict) -> tuple[int, ...]:
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_RANK
        or not all(type(d) is int and 0 <= d < 1 << 31 for d in shape)
    ):
        raise AnswerError("the answer's output has no valid shape")
    return tuple(shape)


def _flat(data: list, shape: tuple[int, ...]) -> list:
    """The values of ``data``, given flat or nested as ``shape`` (row-major), in order.

    Raises:
        AnswerError: nested, but not as ``shape`` (ragged rows, another depth).
    """
    if not data or not isinstance(data[0], list):
        return data  # flat: a list among the numbers is refused when they are read
    level = [data]
    for size in shape:
        if not all(isinstance(part, list) and len(part) == size for part in level):
            raise AnswerError(f"the answer's output data is not nested as its shape {list(shape)}")
        level = [value for part in level for value in part]
    return level


def _numbers(values: list, shape: tuple[int, ...]) -> np.ndarray:
    """``values`` (JSON numbers, as many as ``shape`` holds) as float64 of ``shape``.

    ``null`` is NaN: JSON has no NaN, and servers (MLServer) send it as ``null``.

    Raises:
        AnswerError: anything but numbers: strings (even of digits), booleans, lists.
    """
    try:
        array = np.asarray(values)
        if array.dtype == object and any(value is None for value in values):
            array = np.asarray([math.nan if value is None else value for value in values])
    except (ValueError, TypeError, OverflowError, RecursionError):
        array = None
    # Strings are "U" and booleans "b": numpy would convert both to numbers if asked for float64.
    if array is None or array.dtype.kind not in "iuf" or array.shape != (len(values),):
        raise AnswerError("the answer's output holds other than numbers")
    return array.astype(np.float64).reshape(shape)


def _array(tensor: dict, tail: bytes, offset: int) -> np.ndarray:
    shape = _shape(tensor)
    count = math.prod(shape)  # Python integers: numpy's product wraps around past 2**63
    datatype = tensor.get("datatype")
    parameters = tensor.get("parameters") if isinstance(tensor.get("parameters"), dict) else {}
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(tail):
            raise AnswerError("the answer's binary_data_size does not fit its body")
        raw = tail[offset : offset + size]
        if datatype == "BYTES":  # each element: a 4-byte little-endian length, then the bytes
            items, at = [], 0
            while at + 4 <= len(raw) and len(items) < count:
                length = int.from_bytes(raw[at : at + 4], "little")
                items.append(raw[at + 4 : at + 4 + length].decode("utf-8", "replace"))
                at += 4 + length
            if len(items) != count:
                raise AnswerError("the answer's BYTES tensor is truncated")
            return np.array(items, dtype=object).reshape(shape)
        if datatype not in _DTYPES or size != count * np.dtype(_DTYPES[datatype]).itemsize:
            raise AnswerError(
                f"the answer's output is {server_text(datatype, 10)} of {size} bytes for shape {list(shape)}"
            )
        return np.frombuffer(raw, dtype=_DTYPES[datatype]).reshape(shape).astype(np.float64)
    data = tensor.get("data")
    if not isinstance(data, list):
        raise AnswerError("the answer's output has no data")
    flat = _flat(data, shape)  # some servers nest the data by shape
    if len(flat) != count:
        raise AnswerError(f"the answer's output holds {len(flat)} values for shape {list(shape)}")
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise AnswerError("the answer's BYTES output holds other than strings")
        return np.array(flat, dtype=object).reshape(shape)
    if datatype not in _DTYPES:
        raise AnswerError(f"the answer's output is of type {server_text(datatype, 10)}, not a number type")
    return _numbers(flat, shape)


def _classification(strings: np.ndarray, rows: int, classes: int, top_k: int) -> np.ndarray:
    """Scores ``(rows, classes)`` from ``"score:index[:label]"`` strings, ``-inf`` where not given."""
    if strings.ndim == 1 and rows == 1:
        strings = strings.reshape(1, -1)
    if strings.ndim != 2 or strings.shape[0] != rows or not 1 <= strings.shape[1] <= top_k:
        raise AnswerError(f"the top-k answer has shape {strings.shape}, expected ({rows}, up to {top_k})")
    scores = np.full((rows, classes), -np.inf)
    for row in range(rows):
        for item in strings[row]:
            parts = str(item).split(":")
            try:
                score, index = float(parts[0]), int(parts[1])
            except (ValueError, IndexError):
                raise AnswerError("a top-k answer is not 'score:index[:label]'") from None
            if not np.isfinite(score):
                raise AnswerError("a top-k answer holds NaN or infinity")
            if not 0 <= index < classes:
                raise AnswerError(
                    f"a top-k answer names class {server_text(index, 20)} of a model of {classes}"
                )
            if np.isfinite(scores[row, index]):  # which of its two scores would be the class'?
                raise AnswerError(f"a top-k answer names class {index} twice for one image")
            scores[row, index] = score
    return scores


def decode_answer(
    body: bytes,
    header_length: str | None,
    output: str,
    *,
    rows: int,
    classes: int,
    top_k: int | None,
) -> np.ndarray:
    """Scores ``(rows, classes)`` float64 from an infer answer (``-inf``: a class not returned).

    A full answer (``(rows, classes)`` numbers) asked for ``top_k`` classes keeps only its
    ``top_k`` best per row, as if the server had sent only those.

    Raises:
        AnswerError: not JSON, no such output or two of that name, a shape other than asked
            for, data not nested as its shape, anything but numbers (strings of digits
            included), a class named twice in one image's top-k.
    """
    header, tail = _header_and_tail(body, header_length)
    tensor, offset = _find_output(header, output)
    values = _array(tensor, tail, offset)
    name = f"'{server_text(output, 40)}'"
    if values.dtype == object:
        if top_k is None:
            raise AnswerError(f"output {name} is BYTES (a classification answer) but no --top-k was asked")
        return _classification(values, rows, classes, top_k)
    if values.shape != (rows, classes):
        raise AnswerError(
            f"output {name} has shape {values.shape} for {rows} image(s), expected ({rows}, {classes})"
        )
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values).all(axis=1)).sum())
        raise AnswerError(f"output {name} holds NaN or infinity for {bad} of {rows} image(s)")
    if top_k is not None and top_k < classes:
        order = np.argsort(-values, axis=1, kind="stable")
        kept = np.full_like(values, -np.inf)
        np.put_along_axis(kept, order[:, :top_k], np.take_along_axis(values, order[:, :top_k], 1), 1)
        return kept
    return values
