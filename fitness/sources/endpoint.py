"""Models behind an Open Inference Protocol (KServe v2) endpoint: the spec and the scoring network.

``--model http(s)://HOST[:PORT]/v2/models/NAME[/versions/V]`` (:mod:`fooling.fitness.endpoint.reference`)
resolves here. The model's metadata (``GET /v2/models/NAME``) gives its input's name, type and
shape (``[batch, C, H, W]`` or ``[batch, H, W, C]``, FP32; ``-1`` where the options must say)
and its outputs (``[batch, classes]``); the server's (``GET /v2``) says whether it takes the
binary tensor extension. Nothing is sent to ``infer`` while resolving: every image the run
sends is one the search counts.

The network an endpoint spec builds, :class:`EndpointNetwork`, scores through
:class:`~fooling.fitness.endpoint.client.EndpointClient` (made per process, on first use) and is
scored by the ``endpoint`` engine (:mod:`fooling.fitness.endpoint.engine`). It has no gradients
(``perturb`` and ``ascent`` refuse it) and its "weights hash" is the SHA-256 of its URL and
metadata, so a resumed run refuses a server whose model changed shape or outputs.

Metadata is untrusted like any answer: implausible sizes (more than :data:`MAX_CLASSES` classes,
images larger than :data:`~fooling.fitness.limits.MAX_IMAGE_SIZE` a side, a fixed batch over
:data:`MAX_FIXED_BATCH`) are refused before anything is built from them, and what it says is
shown only through :meth:`~fooling.fitness.endpoint.settings.EndpointSettings.server_text`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging

import numpy as np
import torch
from torch import nn

from fooling.fitness.endpoint.client import EndpointClient, EndpointError
from fooling.fitness.endpoint.protocol import AnswerError
from fooling.fitness.endpoint.reference import EndpointReference, parse_endpoint
from fooling.fitness.endpoint.settings import EndpointSettings, endpoint_settings
from fooling.fitness.imagenet import imagenet_class_names
from fooling.fitness.limits import MAX_IMAGE_SIZE
from fooling.fitness.models import ModelSpec
from fooling.fitness.sources.common import GradientUnavailableError, ModelFileError
from fooling.fitness.sources.files import read_labels

__all__ = [
    "DISTRIBUTION_TOLERANCE",
    "MAX_CLASSES",
    "MAX_FIXED_BATCH",
    "EndpointInfo",
    "EndpointNetwork",
    "endpoint_spec",
    "is_distribution",
    "scores_to_probabilities",
]

logger = logging.getLogger(__name__)

# The most classes an endpoint's model may have: 1,000 times ImageNet's; the archive and the
# class names are built for every class before any image is sent.
MAX_CLASSES = 1_000_000
# The largest fixed batch an endpoint's input may declare: every request is padded to it, and
# every padding image counts against the query budget.
MAX_FIXED_BATCH = 4096
# How far a row of probabilities may sum from 1: room for probabilities rounded to two decimals
# (10 classes, each off by up to 0.005). Logits essentially never fall in [0, 1] and sum to 1.
DISTRIBUTION_TOLERANCE = 0.05


@dataclasses.dataclass(frozen=True)
class EndpointInfo:
    """What the metadata (and the options) say about an endpoint's model.

    Attributes:
        input_name: the input tensor.
        layout: ``"NCHW"`` or ``"NHWC"``.
        channels, input_size: the images it takes.
        fixed_batch: the batch size the input is fixed to, ``None`` when variable.
        output: the output tensor read.
        classes: outputs per image.
        binary: the server takes the binary tensor extension.
        digest: SHA-256 of the URL and the model's metadata (the "weights hash").
    """

    input_name: str
    layout: str
    channels: int
    input_size: tuple[int, int]
    fixed_batch: int | None
    output: str
    classes: int
    binary: bool
    digest: str


def _within_unit(scores: np.ndarray) -> bool:
    """Whether every score given (finite) is in [0, 1], up to float32 rounding."""
    given = scores[np.isfinite(scores)]
    return bool(((given >= -1e-6) & (given <= 1 + 1e-6)).all())


def is_distribution(scores: np.ndarray) -> bool:
    """Whether full scores ``(batch, classes)`` read as probabilities under ``--scores auto``.

    They do when every score is in [0, 1] and every row sums to 1 within
    :data:`DISTRIBUTION_TOLERANCE` (probabilities rounded to two decimals pass).
    """
    return _within_unit(scores) and bool((np.abs(scores.sum(axis=1) - 1.0) <= DISTRIBUTION_TOLERANCE).all())


def scores_to_probabilities(scores: np.ndarray, mode: str, top_k: int | None, shown: str) -> np.ndarray:
    """Probabilities ``(batch, classes)`` float32 from an answer's ``scores`` (``-inf``: not returned).

    ``mode`` ``"auto"`` reads these scores as probabilities where :func:`is_distribution`, else
    as logits (softmax); a network decides ``auto`` once, from its first answer, and passes
    what it decided. Top-k answers must be probabilities, their scores of an image adding up to
    at most 1 (within :data:`DISTRIBUTION_TOLERANCE`).

    Raises:
        AnswerError: probabilities outside [0, 1], or top-k scores adding up to over 1.
    """
    given = np.isfinite(scores)
    within = _within_unit(scores)
    if top_k is not None or mode == "probabilities":
        if not within:
            raise AnswerError(
                f"{shown}: the answer's scores are not probabilities (outside [0, 1]); try --scores logits"
            )
        if top_k is None:
            return np.clip(scores, 0, 1).astype(np.float32)
        if (np.where(given, scores, 0).sum(axis=1) > 1 + DISTRIBUTION_TOLERANCE).any():
            raise AnswerError(f"{shown}: a top-k answer's scores of one image add up to over 1")
        return np.where(given, np.clip(scores, 0, 1), -np.inf).astype(np.float32)
    if mode == "auto" and is_distribution(scores):
        return scores.astype(np.float32)
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


class EndpointNetwork(nn.Module):
    """A classifier behind an endpoint: images in, probabilities out, over HTTP.

    Pickles (to Ray actors) as its reference, metadata, settings and normalisation; each
    process opens its own connections on first use.

    Args:
        reference: the canonical endpoint reference.
        info: what its metadata says.
        settings: how to send requests (credentials included: never stored or logged).
        mean: per-channel mean subtracted from images in ``[0, 1]``.
        std: per-channel standard deviation they are divided by.
    """

    model_kind = "endpoint"
    differentiable = False

    def __init__(
        self,
        reference: str,
        info: EndpointInfo,
        settings: EndpointSettings,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        super().__init__()
        self.reference = reference
        self.parsed: EndpointReference = parse_endpoint(reference)
        self.info = info
        self.settings = settings
        self.mean, self.std = mean, std
        self.register_buffer(
            "endpoint_digest", torch.frombuffer(bytearray.fromhex(info.digest), dtype=torch.uint8)
        )
        self._client: EndpointClient | None = None
        # --scores auto, decided from the first answer and kept: one reading for every image.
        self._scores: str | None = None

    @property
    def shown(self) -> str:
        """How messages name it."""
        return self.parsed.shown

    def client(self) -> EndpointClient:
        """This process's client, made on first use."""
        if self._client is None:
            self._client = EndpointClient(self.parsed.origin, self.shown, self.settings)
        return self._client

    @property
    def images_sent(self) -> int:
        """Images this process sent (each once, retries not counted, padding counted)."""
        return 0 if self._client is None else self._client.images_sent

    def images_sent_for(self, count: int) -> int:
        """Images one :meth:`score_images` call of ``count`` images sends, padding included.

        ``count`` itself, but for a model whose input has a fixed batch size: its requests are
        all full, the last one padded, and the server counts (and may bill) the padding too.
        """
        batch = self.info.fixed_batch
        return count if batch is None else -(-count // batch) * batch

    def share_traffic(self, processes: int) -> None:
        """Divide the rate and the requests in flight among ``processes`` scoring processes.

        Each process (a Ray scorer actor) gets ``max_rate / processes`` images per second and
        ``concurrency // processes`` requests in flight (at least 1), so that together they
        keep to the settings. Call it before the network is sent to them.
        """
        settings = self.settings
        rate = None if settings.max_rate is None else settings.max_rate / processes
        self.settings = dataclasses.replace(
            settings, max_rate=rate, concurrency=max(1, settings.concurrency // processes)
        )
        self.close()

    def train(self, mode: bool = True) -> EndpointNetwork:
        """Sets this wrapper's flag only (the server's model is the server's)."""
        self.training = mode
        return self

    def score_images(self, images: np.ndarray) -> np.ndarray:
        """Probabilities ``(batch, classes)`` float32 of ``images`` (``-inf``: a class not returned).

        Args:
            images: ``(batch, channels, H, W)`` float32 in ``[0, 1]``.

        Raises:
            EndpointError: the endpoint failed (retries spent, refused credentials, ...).
            AnswerError: an answer of the wrong shape, with NaN or infinity, or not what
                ``--scores`` (or ``auto``'s first reading) says it is.
        """
        info = self.info
        shape = (1, -1, 1, 1)
        inputs = (images - np.asarray(self.mean, np.float32).reshape(shape)) / np.asarray(
            self.std, np.float32
        ).reshape(shape)
        if info.layout == "NHWC":
            inputs = inputs.transpose(0, 2, 3, 1)
        count = len(inputs)
        batch = info.fixed_batch or self.settings.request_batch
        missing = self.images_sent_for(count) - count  # a fixed-size input: full requests only
        if missing:
            inputs = np.concatenate([inputs, np.zeros((missing, *inputs.shape[1:]), inputs.dtype)])
        options = self.parsed.options
        path = f"{self.parsed.model_url.removeprefix(self.parsed.origin)}/infer"
        scores = self.client().infer(
            path,
            info.input_name,
            np.ascontiguousarray(inputs, dtype=np.float32),
            info.output,
            classes=info.classes,
            binary=info.binary,
            top_k=options.top_k,
            batch=batch,
        )[:count]
        if options.scores == "auto" and options.top_k is None and self._scores is None and count:
            # Decided once: answer by answer, rounded probabilities might be read one way in one
            # batch and the other way in the next.
            self._scores = "probabilities" if is_distribution(scores) else "logits"
            logger.info("%s: --scores auto reads its answers as %s", self.shown, self._scores)
        return scores_to_probabilities(scores, self._scores or options.scores, options.top_k, self.shown)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Refused: an endpoint is scored by the ``endpoint`` engine and has no gradients.

        Raises:
            GradientUnavailableError: always.
        """
        raise GradientUnavailableError(
            f"{self.shown} is a model behind an endpoint: it answers scores only (no gradients, no "
            "network to run here); score it with --engine auto or endpoint"
        )

    def close(self) -> None:
        """Close this process's connections."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __reduce__(self):
        return (EndpointNetwork, (self.reference, self.info, self.settings, self.mean, self.std))


def _fail(reference: EndpointReference, message: str) -> ModelFileError:
    return ModelFileError(f"{reference.shown}: {message}")


def _shape_text(shape: object, settings: EndpointSettings) -> str:
    """A metadata shape as a message shows it: its first numbers, or what the server gave instead."""
    if isinstance(shape, list) and all(type(d) is int for d in shape):
        return settings.server_text(str(shape[:9]), 60)
    return "a list of other than integers" if isinstance(shape, list) else settings.server_text(shape, 60)


def _layout(
    shape: object, options, reference: EndpointReference, settings: EndpointSettings
) -> tuple[str, int, tuple[int, int], int | None]:
    """``(layout, channels, (H, W), fixed batch)`` of an input of ``shape`` (``-1``: variable).

    Raises:
        ModelFileError: not a list of four sizes that make an image batch, sides over
            :data:`~fooling.fitness.limits.MAX_IMAGE_SIZE` or a fixed batch over
            :data:`MAX_FIXED_BATCH`, or options that contradict it.
    """
    shown = _shape_text(shape, settings)
    if (
        not isinstance(shape, list)
        or len(shape) != 4
        or not all(type(d) is int and (d == -1 or d > 0) for d in shape)
    ):
        raise _fail(
            reference,
            f"its input has shape {shown}; a classifier of images takes [batch, C, H, W] or "
            "[batch, H, W, C] (-1 for any size)",
        )
    first, last = shape[1], shape[3]
    if first in (1, 3) or (first == -1 and last not in (1, 3)):
        layout, channels, size = "NCHW", first, (shape[2], shape[3])
    elif last in (1, 3) or last == -1:
        layout, channels, size = "NHWC", last, (shape[1], shape[2])
    else:
        raise _fail(
            reference,
            f"its input has shape {shown}: not [batch, C, H, W] or [batch, H, W, C] with 1 or 3 channels",
        )
    channels = options.channels or (channels if channels != -1 else None)
    if channels is None:
        raise _fail(reference, f"its input shape {shown} does not say the channels: give --channels 1 or 3")
    if options.channels and channels not in (first, last, -1) and -1 not in (first, last):
        raise _fail(reference, f"--channels {options.channels} does not match its input shape {shown}")
    known = None if -1 in size else size
    if options.input_size and known and tuple(options.input_size) != tuple(known):
        raise _fail(reference, f"--input-size {options.input_size} does not match its input shape {shown}")
    size = options.input_size or known
    if size is None:
        raise _fail(reference, f"its input shape {shown} does not say the image size: give --input-size H,W")
    if max(size) > MAX_IMAGE_SIZE:  # every image of a generation is made at this size, then sent
        raise _fail(
            reference,
            f"its input of {size[0]}x{size[1]} pixels is over {MAX_IMAGE_SIZE} a side (the largest "
            "images this searches)",
        )
    if shape[0] > MAX_FIXED_BATCH:
        raise _fail(
            reference,
            f"its input has a fixed batch of {shape[0]} images, over {MAX_FIXED_BATCH}: every request "
            "would be padded to it",
        )
    return layout, channels, (int(size[0]), int(size[1])), None if shape[0] == -1 else shape[0]


def _metadata(client: EndpointClient, reference: EndpointReference) -> dict:
    path = reference.model_url.removeprefix(reference.origin)
    try:
        return client.get_json(path)
    except EndpointError as error:
        if error.status != 404:
            raise
    index = client.try_get_json("/v2/repository/index", "POST", b"{}")
    names = (
        sorted(
            {client.settings.server_text(item.get("name"), 60) for item in index if isinstance(item, dict)}
        )
        if isinstance(index, list)
        else []
    )
    has = f" (it has: {', '.join(names[:20])})" if names else ""
    raise EndpointError(f"{reference.shown}: the server has no model {reference.model!r}{has}", 404)


def _tensors(metadata: dict, key: str, reference: EndpointReference) -> list[dict]:
    tensors = metadata.get(key)
    if (
        not isinstance(tensors, list)
        or not tensors
        or not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in tensors)
    ):
        raise _fail(reference, f"its metadata lists no {key} (GET {reference.model_url})")
    return tensors


def endpoint_spec(text: str) -> ModelSpec:
    """The spec of the model behind endpoint reference ``text``; sends no image.

    Raises:
        UserError: a bad reference (see :func:`~fooling.fitness.endpoint.reference.parse_endpoint`).
        EndpointError: unreachable (after the retries), TLS, 401/403, no such model (naming the
            server's models where it lists them).
        ModelFileError: metadata this cannot use (several inputs, not FP32, a shape that is not
            an image batch, an output that is not ``[batch, classes]``, implausible sizes: see
            the module's docstring), or options that contradict it.
    """
    reference = parse_endpoint(text)
    options = reference.options
    settings = endpoint_settings()
    # The token variable is read once, here: scorer processes get the headers with the spec.
    settings = dataclasses.replace(settings, headers=tuple(settings.all_headers().items()))
    client = EndpointClient(reference.origin, reference.shown, settings)
    try:
        server = client.try_get_json("/v2")
        metadata = _metadata(client, reference)
    finally:
        client.close()
    extensions = server.get("extensions") if isinstance(server, dict) else None
    binary = isinstance(extensions, list) and "binary_tensor_data" in extensions
    inputs = _tensors(metadata, "inputs", reference)
    if len(inputs) != 1:
        raise _fail(reference, f"it takes {len(inputs)} inputs; a classifier takes one batch of images")
    if inputs[0].get("datatype") != "FP32":
        raise _fail(
            reference, f"its input is {settings.server_text(inputs[0].get('datatype'), 10)}, not FP32 images"
        )
    layout, channels, input_size, fixed_batch = _layout(
        inputs[0].get("shape"), options.file, reference, settings
    )
    outputs = _tensors(metadata, "outputs", reference)
    names = [t["name"] for t in outputs]
    output = options.output or names[0]
    shown = f"'{settings.server_text(output, 40)}'"
    if output not in names:
        listed = ", ".join(settings.server_text(name, 40) for name in names[:20])
        raise _fail(reference, f"it has no output {shown} (it has {listed}); give --output NAME")
    shape = next(t for t in outputs if t["name"] == output).get("shape")
    if not isinstance(shape, list) or len(shape) != 2 or not all(type(d) is int for d in shape):
        raise _fail(
            reference, f"its output {shown} has shape {_shape_text(shape, settings)}, not [batch, classes]"
        )
    if shape[1] > MAX_CLASSES:  # before a name or a cell is made for each
        raise _fail(reference, f"its output {shown} has {shape[1]:,} classes, over {MAX_CLASSES:,}")
    classes = shape[1] if shape[1] > 0 else None
    labels = read_labels(options.file.labels) if options.file.labels else None
    if labels is not None and classes is not None and len(labels) != classes:
        raise _fail(
            reference,
            f"it has {classes} outputs but --labels {options.file.labels} names {len(labels)} classes",
        )
    classes = classes or (len(labels) if labels else None)
    if classes is None:
        raise _fail(reference, f"its output {shown} does not say how many classes it has: give --labels FILE")
    if classes < 2:
        raise _fail(reference, f"its output {shown} has {classes} class; a classifier needs at least 2")
    if options.top_k is not None and options.top_k > classes:
        raise _fail(reference, f"--top-k {options.top_k} is more than its {classes} classes")
    names_out = labels or (
        imagenet_class_names() if classes == 1000 else tuple(str(i) for i in range(classes))
    )
    described = {
        "url": reference.model_url,
        "name": metadata.get("name"),
        "platform": metadata.get("platform"),
        "inputs": inputs,
        "outputs": outputs,
    }
    digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()
    info = EndpointInfo(
        inputs[0]["name"], layout, channels, input_size, fixed_batch, output, classes, binary, digest
    )
    mean = _broadcast(options.file.mean, 0.0, channels)
    std = _broadcast(options.file.std, 1.0, channels)
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise _fail(reference, f"--mean/--std need 1 or {channels} values, and a positive std")
    return ModelSpec(
        name=reference.model,
        channels=channels,
        input_size=input_size,
        mean=mean,
        std=std,
        class_names=tuple(names_out),
        build=functools.partial(EndpointNetwork, reference.canonical(), info, settings, mean, std),
        description=f"model {reference.model} behind {reference.shown} (Open Inference Protocol, {layout})",
    )


def _broadcast(values: tuple[float, ...] | None, default: float, channels: int) -> tuple[float, ...]:
    if values is None:
        return (default,) * channels
    return values * channels if len(values) == 1 else values
