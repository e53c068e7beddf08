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
Everything in an answer is untrusted: sizes, shapes and types are checked before use.
"""

from __future__ import annotations

import json

import numpy as np

from fooling.encodings.errors import UserError

__all__ = [
    "BINARY_HEADER",
    "AnswerError",
    "GarbledAnswer",
    "decode_answer",
    "encode_request",
]

BINARY_HEADER = "Inference-Header-Content-Length"
_DTYPES = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2", "INT64": "<i8", "INT32": "<i4"}


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
                f"the answer's {BINARY_HEADER} ({header_length[:20]!r}) does not fit its body"
            )
    try:
        header = json.loads(body[:length])
    except (ValueError, UnicodeDecodeError):
        raise GarbledAnswer("the answer is not JSON (garbage or a proxy's page)") from None
    if not isinstance(header, dict):
        raise GarbledAnswer("the answer is not a JSON object")
    return header, body[length:]


def _find_output(header: dict, output: str) -> tuple[dict, int]:
    outputs = header.get("outputs")
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise AnswerError("the answer has no list of outputs")
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
    names = [str(o.get("name"))[:40] for o in outputs]
    raise AnswerError(f"the answer has no output {output!r} (it has {', '.join(names) or 'none'})")


def _shape(tensor: dict) -> tuple[int, ...]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and 0 <= d < 1 << 31 for d in shape):
        raise AnswerError("the answer's output has no valid shape")
    return tuple(shape)


def _array(tensor: dict, tail: bytes, offset: int) -> np.ndarray:
    shape = _shape(tensor)
    count = int(np.prod(shape)) if shape else 1
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
                f"the answer's output is {str(datatype)[:10]} of {size} bytes for shape {shape}"
            )
        return np.frombuffer(raw, dtype=_DTYPES[datatype]).reshape(shape).astype(np.float64)
    data = tensor.get("data")
    if not isinstance(data, list):
        raise AnswerError("the answer's output has no data")
    flat = data
    while flat and isinstance(flat[0], list):  # some servers nest the data by shape
        flat = [value for row in flat for value in row]
    if len(flat) != count:
        raise AnswerError(f"the answer's output holds {len(flat)} values for shape {shape}")
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise AnswerError("the answer's BYTES output holds other than strings")
        return np.array(flat, dtype=object).reshape(shape)
    if datatype not in _DTYPES:
        raise AnswerError(f"the answer's output is of type {str(datatype)[:10]}, not a number type")
    try:
        return np.asarray(flat, dtype=np.float64).reshape(shape)
    except (TypeError, ValueError):
        raise AnswerError("the answer's output holds other than numbers") from None


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
                raise AnswerError(f"a top-k answer names class {index} of a model of {classes}")
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
        AnswerError: not JSON, no such output, a shape other than asked for, non-numbers.
    """
    header, tail = _header_and_tail(body, header_length)
    tensor, offset = _find_output(header, output)
    values = _array(tensor, tail, offset)
    if values.dtype == object:
        if top_k is None:
            raise AnswerError(
                f"output {output!r} is BYTES (a classification answer) but no --top-k was asked"
            )
        return _classification(values, rows, classes, top_k)
    if values.shape != (rows, classes):
        raise AnswerError(
            f"output {output!r} has shape {values.shape} for {rows} image(s), expected ({rows}, {classes})"
        )
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values).all(axis=1)).sum())
        raise AnswerError(f"output {output!r} holds NaN or infinity for {bad} of {rows} image(s)")
    if top_k is not None and top_k < classes:
        order = np.argsort(-values, axis=1, kind="stable")
        kept = np.full_like(values, -np.inf)
        np.put_along_axis(kept, order[:, :top_k], np.take_along_axis(values, order[:, :top_k], 1), 1)
        return kept
    return values
