"""Model files (TorchScript, torch.export, ONNX): reading them safely, and the classifier they make.

Loading never runs a Python pickle, nor text from the file (see :mod:`fooling.fitness.sources`
for how); a :class:`FileNetwork` pickles as the model's bytes, rebuilt from them on the other side.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import pickle
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fooling.fitness.engine import onnx_session
from fooling.fitness.imagenet import imagenet_class_names
from fooling.fitness.limits import MAX_CLASS_NAME_LENGTH, open_regular_file
from fooling.fitness.models import ModelSpec
from fooling.fitness.sources.common import (
    GradientUnavailableError,
    ModelFileError,
    read_model_bytes,
    reason,
    weights_only_loads,
)
from fooling.fitness.sources.export_check import check_export_archive
from fooling.fitness.sources.onnx_data import inline_external_data, onnx_external_data
from fooling.fitness.sources.operators import check_script_module, check_script_sources
from fooling.fitness.sources.reference import FILE_SUFFIXES, PICKLE_SUFFIXES, split_reference

logger = logging.getLogger(__name__)

# Largest labels file read: a million class names of 60 characters.
MAX_LABELS_BYTES = 64 * 2**20
KIND_NAMES = {"torchscript": "TorchScript", "export": "torch.export", "onnx": "ONNX"}
# How to save a model as a file this module reads.
SAVE_HINT = (
    "save the network with torch.jit.save(torch.jit.script(model), 'model.pt'), "
    "torch.export.save(torch.export.export(model, (example,)), 'model.pt2') or torch.onnx.export"
)


def _zip_names(data: bytes) -> list[str] | None:
    """The member names when ``data`` is a zip archive, else ``None``."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.namelist()
    except zipfile.BadZipFile:
        return None


def sniff(data: bytes) -> str:
    """What a torch model file holds: ``"torchscript"``, ``"export"``, ``"pickle"`` or ``"unknown"``."""
    names = _zip_names(data)
    if names is None:
        # A legacy torch.save file is a bare pickle stream: protocol opcode 0x80 first.
        return "pickle" if data[:1] == b"\x80" else "unknown"
    stripped = {name.split("/", 1)[1] if "/" in name else name for name in names}
    if "archive_format" in stripped or any(name.startswith("models/") for name in stripped):
        return "export"
    if "data.pkl" in stripped and any(name.startswith("code/") for name in stripped):
        return "torchscript"
    if "data.pkl" in stripped:
        return "pickle"
    return "unknown"


@contextlib.contextmanager
def _torch_export_log() -> Iterator[list[logging.LogRecord]]:
    """While inside: what torch.export's loggers say is kept in the list yielded, not printed.

    ``torch.export.load`` logs a whole traceback (on torch's own stderr handler) before it
    raises on a damaged archive; the error the user sees is one line made from it instead.
    """
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    loggers = [logging.getLogger(name) for name in ("torch.export", "torch._export")]
    previous = [logger.propagate for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield records
    finally:
        for logger, propagate in zip(loggers, previous, strict=True):
            logger.removeHandler(handler)
            logger.propagate = propagate


def _input_from_export(program) -> tuple[tuple[int | None, ...], str]:
    """``(shape with None for dynamic dims, input name)`` of an ExportedProgram's one user input."""
    inputs = list(program.graph_signature.user_inputs)
    if len(inputs) != 1:
        raise ModelFileError(f"takes {len(inputs)} inputs; a classifier takes one batch of images")
    node = next(node for node in program.graph.nodes if node.op == "placeholder" and node.name == inputs[0])
    value = node.meta.get("val")
    shape = tuple(dim if isinstance(dim, int) else None for dim in value.shape) if value is not None else ()
    return shape, inputs[0]


def _input_from_onnx(session) -> tuple[tuple[int | None, ...], str]:
    """``(shape with None for symbolic dims, input name)`` of an ONNX Runtime session's one input."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelFileError(f"takes {len(inputs)} inputs; a classifier takes one batch of images")
    if inputs[0].type != "tensor(float)":
        raise ModelFileError(f"takes {inputs[0].type} input; expected float32 images")
    shape = tuple(dim if isinstance(dim, int) and dim > 0 else None for dim in inputs[0].shape)
    return shape, inputs[0].name


class FileNetwork(nn.Module):
    """A classifier read from a model file, giving the logits of normalised images.

    It maps ``(batch, channels, H, W)`` normalised images to ``(batch, classes)`` logits.

    Pickles as the file's bytes (a Ray object), rebuilt by loading them again on the other
    side. A file that takes a fixed batch size is run in chunks of that size (the last one
    padded). The file's SHA-256 is a buffer, so :func:`fooling.fitness.weights_hash` changes
    whenever any byte of the file (or of an ONNX file's external data) does.

    Args:
        kind: ``"torchscript"``, ``"export"`` or ``"onnx"``.
        data: the file's bytes; for ONNX, self-contained (external data read in by
            :func:`read_model`: ONNX Runtime would look for it relative to the current directory).
        shown: how to name the file in messages.
        sha256: the model's SHA-256 as :func:`read_model` computes it (default: of ``data``).

    Raises:
        ModelFileError: not a model of that kind, a pickle, an archive whose loading could run
            code it carries, an ONNX model still naming external data, or several inputs.
    """

    def __init__(self, kind: str, data: bytes, shown: str, sha256: str | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.shown = shown
        self.sha256 = sha256 or hashlib.sha256(data).hexdigest()
        self.register_buffer(
            "file_digest", torch.frombuffer(bytearray.fromhex(self.sha256), dtype=torch.uint8)
        )
        self._data = data
        self._session = None
        self.inner: nn.Module | None = None
        self.input_shape: tuple[int | None, ...] = ()
        self.input_name = "input"
        try:
            self._load(data)
        except ModelFileError as error:
            raise ModelFileError(
                f"{shown}: {error}" if not str(error).startswith(shown) else str(error)
            ) from None
        self.fixed_batch: int | None = self.input_shape[0] if self.input_shape else None
        for parameter in self.parameters():
            parameter.requires_grad_(False)

    def _load(self, data: bytes) -> None:
        shown = self.shown
        if self.kind == "onnx":
            self._load_onnx(data)
            return
        found = sniff(data)
        if found == "pickle":
            raise ModelFileError(
                f"{shown} is a pickle (torch.save of a state dict or module), which could run arbitrary "
                f"code when loaded and is refused; {SAVE_HINT}"
            )
        if found == "unknown":
            raise ModelFileError(f"{shown} is not a TorchScript or torch.export file; {SAVE_HINT}")
        self.kind = found  # the contents decide: a .pt may hold an ExportedProgram
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notices
            if found == "torchscript":
                check_script_sources(data, shown)
                try:
                    self.inner = torch.jit.load(io.BytesIO(data), map_location="cpu")
                except Exception as error:
                    raise ModelFileError(f"{shown}: cannot read TorchScript ({reason(error)})") from None
                check_script_module(self.inner, shown)
                return
            check_export_archive(data, shown)
            with _torch_export_log() as logged:
                try:
                    with weights_only_loads():
                        program = torch.export.load(io.BytesIO(data))
                        self.input_shape, self.input_name = _input_from_export(program)
                        self.inner = program.module()
                except pickle.UnpicklingError:
                    raise ModelFileError(
                        f"{shown} holds pickled Python objects that the safe (weights-only) loader "
                        "refuses; loading them could run arbitrary code"
                    ) from None
                except ModelFileError:
                    raise
                except Exception as error:
                    # torch logs the error that broke the archive, then raises another one
                    # ("check the warnings above"): the logged one says what is wrong.
                    first = next((r.exc_info[1] for r in logged if r.exc_info and r.exc_info[1]), error)
                    raise ModelFileError(
                        f"{shown}: cannot read the torch.export archive ({reason(first)})"
                    ) from None

    def _load_onnx(self, data: bytes) -> None:
        if onnx_external_data(data):
            raise ModelFileError(
                f"{self.shown} keeps tensors in external files; load it from its path, which reads them "
                "from the model's own folder"
            )
        try:
            self._session = _onnx_session(data)
        except ModuleNotFoundError:
            raise ModelFileError(f"{self.shown}: scoring ONNX files needs the onnxruntime package") from None
        except Exception as error:
            raise ModelFileError(
                f"{self.shown} is not an ONNX model ONNX Runtime can run ({reason(error)})"
            ) from None
        self.input_shape, self.input_name = _input_from_onnx(self._session)

    @property
    def differentiable(self) -> bool:
        """False for ONNX files: ONNX Runtime computes no gradients."""
        return self.kind != "onnx"

    @property
    def model_kind(self) -> str:
        """The file's format, as scoring engines tell kinds of model apart (``"onnx"``, ...)."""
        return self.kind

    def train(self, mode: bool = True) -> FileNetwork:
        """Sets only this wrapper's flag, never the file's module's.

        Files are saved in eval mode (and an ExportedProgram's module refuses ``eval()``).
        """
        self.training = mode
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(batch, channels, H, W)`` normalised images -> ``(batch, classes)`` logits.

        Raises:
            GradientUnavailableError: gradients asked of an ONNX file.
        """
        batch = images.shape[0]
        if self.fixed_batch is None or batch == self.fixed_batch:
            return self._run(images)
        outputs = []
        for start in range(0, batch, self.fixed_batch):
            chunk = images[start : start + self.fixed_batch]
            missing = self.fixed_batch - chunk.shape[0]
            if missing:
                chunk = torch.cat([chunk, chunk.new_zeros((missing, *chunk.shape[1:]))])
            outputs.append(self._run(chunk)[: self.fixed_batch - missing])
        return torch.cat(outputs)

    def _run(self, images: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing() and (self.kind == "onnx" or self.fixed_batch is not None):
            # A trace would record ONNX Runtime's answer as a constant, or the chunks of one batch size.
            raise ValueError(f"{self.shown} cannot be traced; see onnx_probabilities")
        if self.kind != "onnx":
            return self.inner(images)
        if images.requires_grad and torch.is_grad_enabled():
            raise GradientUnavailableError(
                f"{self.shown} is scored with ONNX Runtime, which computes no gradients: perturb and "
                "ascent need a TorchScript (.pt), torch.export (.pt2), timm: or torchvision: model"
            )
        if self._session is None:
            self._session = _onnx_session(self._data)
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        logits = self._session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(np.ascontiguousarray(logits)).to(images.device)

    def onnx_probabilities(self, spec: ModelSpec) -> bytes:
        """For the ONNX Runtime engine: this network as an ONNX graph of images to probabilities.

        The graph takes images in ``[0, 1]`` named ``images`` ``(batch, channels, H, W)`` and
        gives softmax ``probabilities`` ``(batch, classes)`` (see :func:`probabilities_graph`).
        An ONNX file's own graph is used; TorchScript and torch.export files are exported
        (opset 17, dynamic batch).

        Raises:
            ValueError: a file that takes a fixed batch size (scored by torch instead).
            Exception: whatever the exporter raises for a network it cannot export.
        """
        if self.fixed_batch is not None:
            raise ValueError(f"{self.shown} takes batches of exactly {self.fixed_batch} image(s)")
        if self.kind == "onnx":
            return probabilities_graph(self._data, spec.mean, spec.std)
        buffer = io.BytesIO()
        example = torch.zeros(2, spec.channels, *spec.input_size)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(
                # A ScriptModule exports as it is; an ExportedProgram's module only through this
                # wrapper (its module refuses the exporter's train(False)).
                self.inner if self.kind == "torchscript" else self,
                (example,),
                buffer,
                opset_version=17,
                dynamo=False,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
        return probabilities_graph(buffer.getvalue(), spec.mean, spec.std)

    def __reduce__(self):
        # The model's bytes travel (to Ray actors: through the object store) with their SHA-256,
        # checked on arrival, the model's own SHA-256 (which, with external data, covers more
        # than these bytes) and the batch size the driver found the file to take.
        sent = hashlib.sha256(self._data).hexdigest()
        return (
            _rebuild_file_network,
            (self.kind, self._data, self.shown, sent, self.fixed_batch, self.sha256),
        )


def _rebuild_file_network(
    kind: str, data: bytes, shown: str, sent: str, fixed_batch: int | None, sha256: str | None = None
) -> FileNetwork:
    """Unpickling a :class:`FileNetwork`: check the shipped bytes, then load them again.

    Raises:
        ModelFileError: the bytes do not have the SHA-256 the sender computed (damaged on the way).
    """
    arrived = hashlib.sha256(data).hexdigest()
    if arrived != sent:
        raise ModelFileError(
            f"{shown} arrived damaged (SHA-256 {arrived[:12]}..., sent {sent[:12]}...); "
            "the model file did not reach this process intact"
        )
    network = FileNetwork(kind, data, shown, sha256)
    network.fixed_batch = fixed_batch
    return network


def _onnx_session(data: bytes):
    """An ONNX Runtime CPU session of ``data`` (the engine's settings and thread count)."""
    return onnx_session(data)


def probabilities_graph(data: bytes, mean: tuple[float, ...], std: tuple[float, ...]) -> bytes:
    """A user's ONNX classifier wrapped as the engine's graphs are.

    Input ``images`` ``(batch, channels, H, W)`` in ``[0, 1]``, normalised inside the graph with
    ``mean`` and ``std``; output ``probabilities`` ``(batch, classes)``, the softmax of the logits.

    Raises:
        ValueError: the graph has not exactly one input and one output.
    """
    import onnx  # heavy: only for ONNX files
    from onnx import helper, numpy_helper

    model = onnx.load_model_from_string(data)
    graph = model.graph
    initialisers = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initialisers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ValueError(f"expected one input and one output, not {len(inputs)} and {len(graph.output)}")
    for reserved in ("images", "probabilities"):
        _rename(graph, reserved, f"user_{reserved}")
    source, logits = inputs[0], graph.output[0]
    channels = len(mean)
    shape = [
        dim.dim_value if dim.HasField("dim_value") else None for dim in source.type.tensor_type.shape.dim
    ]
    shape = ["batch", *shape[1:]] if shape else ["batch", channels, None, None]
    scale = (
        np.asarray(mean, np.float32).reshape(1, -1, 1, 1),
        np.asarray(std, np.float32).reshape(1, -1, 1, 1),
    )
    graph.initializer.extend(
        [numpy_helper.from_array(scale[0], "fooling_mean"), numpy_helper.from_array(scale[1], "fooling_std")]
    )
    prologue = [
        helper.make_node("Sub", ["images", "fooling_mean"], ["fooling_centred"], name="fooling_sub"),
        helper.make_node("Div", ["fooling_centred", "fooling_std"], [source.name], name="fooling_div"),
    ]
    epilogue = helper.make_node("Softmax", [logits.name], ["probabilities"], name="fooling_softmax", axis=1)
    nodes = [*prologue, *graph.node, epilogue]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input.remove(source)
    graph.input.insert(0, helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, shape))
    graph.output.remove(logits)
    graph.output.append(
        helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["batch", None])
    )
    return model.SerializeToString()


def _rename(graph, old: str, new: str) -> None:
    """Rename value ``old`` to ``new`` everywhere in ``graph`` (not inside subgraphs)."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        if value.name == old:
            value.name = new


def read_labels(path: str) -> tuple[str, ...]:
    """Class names, one per line (blank lines at the ends ignored).

    Raises:
        ModelFileError: missing, unreadable, empty, too large, a name given twice, or a name
            over :data:`~fooling.fitness.limits.MAX_CLASS_NAME_LENGTH` characters or holding
            a control character (a tab, an escape sequence).
        UserError: not a regular file (a FIFO, a device).
    """
    try:
        # A stored path may name a FIFO or a device (one line, never a hang); labels are small.
        with open_regular_file(path, f"--labels {path}") as handle:
            data = handle.read(MAX_LABELS_BYTES + 1)
        if len(data) > MAX_LABELS_BYTES:
            raise ModelFileError(f"--labels {path}: over {MAX_LABELS_BYTES:,} bytes, not class names")
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ModelFileError(f"--labels {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ModelFileError(f"--labels {path}: cannot read it ({reason(error)})") from None
    names = tuple(line.strip() for line in text.strip().splitlines())
    if not names or not all(names):
        raise ModelFileError(f"--labels {path}: expected one class name per line, with no blank lines")
    seen: set[str] = set()
    for line, name in enumerate(names, 1):
        if len(name) > MAX_CLASS_NAME_LENGTH or not name.isprintable():
            problem = f"{len(name):,} characters" if name.isprintable() else "a control character"
            raise ModelFileError(
                f"--labels {path}: line {line} holds {problem}; a class name is printable text of at "
                f"most {MAX_CLASS_NAME_LENGTH:,} characters"
            )
        if name.lower() in seen:
            raise ModelFileError(f"--labels {path} names {name!r} twice")
        seen.add(name.lower())
    return names


def read_model_file(path: str) -> bytes:
    """The bytes of model file ``path``.

    Raises:
        ModelFileError: missing, a folder, unreadable, over
            :data:`~fooling.fitness.limits.MAX_MODEL_BYTES` (refused by its size, before any
            read), or of a suffix this module does not read.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise ModelFileError(
            f"{path}: {suffix} files are pickles, which could run arbitrary code when loaded and are "
            f"refused; {SAVE_HINT}"
        )
    if suffix not in FILE_SUFFIXES:
        raise ModelFileError(
            f"{path}: model files end in .pt or .ts (TorchScript), .pt2 (torch.export) or .onnx"
        )
    if not file.exists():
        raise ModelFileError(f"model file {path} does not exist")
    if not file.is_file():
        raise ModelFileError(f"model file {path} is not a file")
    return read_model_bytes(file, f"model file {path}")


def read_model(path: str) -> tuple[bytes, str]:
    """``(bytes to load, SHA-256)`` of model file ``path``.

    The bytes are the file's; for ONNX, with any external data read in from the model's own
    folder (:func:`inline_external_data`). The SHA-256 covers the external files too.

    Raises:
        ModelFileError: see :func:`read_model_file` and :func:`inline_external_data`.
    """
    data = read_model_file(path)
    if FILE_SUFFIXES[Path(path).suffix.lower()] == "onnx":
        return inline_external_data(data, Path(path), path)
    return data, hashlib.sha256(data).hexdigest()


def _broadcast(
    values: tuple[float, ...] | None, default: float, channels: int, what: str
) -> tuple[float, ...]:
    if values is None:
        return (default,) * channels
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise ModelFileError(f"{what} gives {len(values)} values for a model of {channels} channel(s)")
    return values


def _probe(network: FileNetwork, shape: tuple[int, ...], hint: str) -> int:
    """Run zeros of ``shape`` through ``network``; return its number of outputs.

    Raises:
        ModelFileError: the network rejects that input, or does not give ``(batch, classes)``.
    """
    try:
        with torch.no_grad():
            logits = network(torch.zeros(shape))
    except GradientUnavailableError:
        raise
    except Exception as error:
        raise ModelFileError(
            f"{network.shown} rejects images of shape {tuple(shape)} ({hint}): {reason(error)}"
        ) from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != shape[0]:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelFileError(
            f"{network.shown} returns {got} for {shape[0]} image(s); a classifier must return one "
            "(batch, classes) tensor of logits"
        )
    if logits.shape[1] < 2:
        raise ModelFileError(f"{network.shown} has {logits.shape[1]} output; a classifier needs at least 2")
    rows = logits.float()
    if bool((rows >= 0).all()) and torch.allclose(rows.sum(1), torch.ones(rows.shape[0]), atol=1e-3):
        logger.warning(
            "%s seems to output probabilities; fooling applies a softmax to its outputs, so it should "
            "output logits",
            network.shown,
        )
    return int(logits.shape[1])


def _load_file_network(path: str, expected_sha256: str | None = None) -> FileNetwork:
    data, sha256 = read_model(path)
    network = FileNetwork(FILE_SUFFIXES[Path(path).suffix.lower()], data, Path(path).name, sha256)
    if expected_sha256 is not None and network.sha256 != expected_sha256:
        raise ModelFileError(f"{path} changed while it was being loaded; try again")
    return network


def file_spec(reference: str) -> ModelSpec:
    """The spec of the model file ``reference`` names (``PATH[?options]``).

    Loads the file once, runs a batch of zeros through it to learn the number of outputs and
    to check that the input size fits.

    Raises:
        ModelFileError: missing file, not a model, a pickle, bad options, labels that do not
            match the outputs, an input size the model rejects, or other than 1 or 3 channels.
    """
    path, options = split_reference(reference)
    network = _load_file_network(path)
    shape = network.input_shape
    known_size = tuple(shape[2:4]) if len(shape) == 4 and None not in shape[2:4] else None
    input_size = options.input_size or known_size
    if input_size is None:
        raise ModelFileError(
            f"{network.shown} does not record its input size: give --input-size H,W "
            f"({KIND_NAMES[network.kind]} file)"
        )
    channels = options.channels or (shape[1] if len(shape) == 4 and shape[1] is not None else 3)
    if channels not in (1, 3):  # every image here is gray or RGB (an RGBA input cannot be fed)
        raise ModelFileError(
            f"{network.shown} takes {channels}-channel images; only 1 (gray) or 3 (RGB) can be used"
        )
    batch = network.fixed_batch or 2
    hint = f"--input-size {input_size[0]},{input_size[1]}, --channels {channels}"
    try:
        outputs = _probe(network, (batch, channels, *input_size), hint)
    except ModelFileError:
        if network.fixed_batch is not None or network.kind == "onnx":
            raise
        outputs = _probe(network, (1, channels, *input_size), hint)  # a file fixed to batches of 1
        network.fixed_batch = 1
    if options.labels is not None:
        names = read_labels(options.labels)
        if len(names) != outputs:
            raise ModelFileError(
                f"{network.shown} has {outputs} outputs but --labels {options.labels} names "
                f"{len(names)} classes"
            )
    else:
        names = imagenet_class_names() if outputs == 1000 else tuple(str(index) for index in range(outputs))
    mean = _broadcast(options.mean, 0.0, channels, "--mean")
    std = _broadcast(options.std, 1.0, channels, "--std")
    if min(std) <= 0:
        raise ModelFileError(f"--std must be positive, not {','.join(map(str, std))}")
    fixed_batch = network.fixed_batch
    return ModelSpec(
        name=network.shown,
        channels=channels,
        input_size=(int(input_size[0]), int(input_size[1])),
        mean=mean,
        std=std,
        class_names=names,
        build=functools.partial(_build_file, path, network.sha256, fixed_batch),
        description=f"{KIND_NAMES[network.kind]} file {path} (SHA-256 {network.sha256[:12]})",
    )


def _build_file(path: str, sha256: str, fixed_batch: int | None) -> FileNetwork:
    network = _load_file_network(path, sha256)
    network.fixed_batch = fixed_batch
    return network
