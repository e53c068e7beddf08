"""Models from outside the registry: ``timm:NAME``, ``torchvision:NAME``, model files, plugins.

What ``--model`` accepts besides the registry's names (see :func:`fooling.fitness.get_model_spec`):

* ``timm:NAME`` (``timm:resnet50.a1_in1k``): timm builds it; weights come from the local cache
  (Hugging Face hub cache or torch hub's ``checkpoints``), or are downloaded where the network
  allows (never with ``FOOLING_OFFLINE`` set). Input size, mean and std from timm's pretrained
  config; the 1,000 ImageNet names where the head has 1,000 outputs.
* ``torchvision:NAME[.WEIGHTS]`` (``torchvision:alexnet``): the classification weights enum's
  default (or named) weights, its crop size, mean, std and categories.
* a file, told apart by its suffix and checked by its contents:

  - ``PATH.pt`` / ``PATH.ts``: TorchScript (``torch.jit.save``);
  - ``PATH.pt2``: a ``torch.export`` ExportedProgram (``torch.export.save``);
  - ``PATH.onnx``: scored with ONNX Runtime (no gradients: perturb and ascent refuse it).

  Options (the CLI's ``--labels``, ``--input-size``, ``--channels``, ``--mean``, ``--std``) travel
  inside the reference string as ``PATH?labels=FILE&input-size=H,W&channels=C&mean=M&std=S``, so
  that a run's stored ``model`` rebuilds the same classifier (:func:`file_reference`).
* an installed plugin: a package declaring an entry point in the group ``fooling.models``
  whose object, called with no arguments, returns a :class:`ModelSpec`.

Loading never runs a Python pickle:

* ``torch.jit.load`` reads the archive with TorchScript's own C++ deserializer; its ``data.pkl``
  and ``constants.pkl`` are read by TorchScript's restricted unpickler, which rebuilds tensors
  and TorchScript types only and never imports or calls Python objects.
* ``torch.export.load`` is *not* pickle-free on its own (checked in torch 2.14): weights stored
  with ``use_pickle`` and the sample inputs go through ``torch.load``, which falls back to
  ``weights_only=False`` when the safe load fails, and "opaque" constants go through
  ``pickle.loads``. So archives holding opaque objects are refused before loading, and
  ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` is set while loading, which makes every ``torch.load``
  call use the safe weights-only unpickler whatever its caller asked for.
* timm and torchvision weights are read with the same variable set (safetensors need none).
* A plain ``torch.save`` file (a pickled state dict or module) is refused with a message
  saying how to save the model instead.

Model files reach Ray actors through the object store: a :class:`FileNetwork` pickles as the
file's bytes and is rebuilt from them on the other side, so nodes need no copy of the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import pickle
import site
import socket
import sysconfig
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from torch import nn

from fooling.fitness._home import offline
from fooling.fitness._names import UnknownNameError, close_names
from fooling.fitness.engine import onnx_session
from fooling.fitness.imagenet import imagenet_class_names
from fooling.fitness.images import RESAMPLING
from fooling.fitness.models import LoadedModel, ModelSpec, ModelUnavailableError, register_resolver

logger = logging.getLogger(__name__)

TIMM_PREFIX = "timm:"
TORCHVISION_PREFIX = "torchvision:"
PLUGIN_GROUP = "fooling.models"
# File suffix -> what the file must hold.
FILE_SUFFIXES = {".pt": "torchscript", ".ts": "torchscript", ".pt2": "export", ".onnx": "onnx"}
# Suffixes of pickled weights: refused with a message saying what to save instead.
PICKLE_SUFFIXES = (".pth", ".pkl", ".pickle", ".bin", ".ckpt")
KIND_NAMES = {"torchscript": "TorchScript", "export": "torch.export", "onnx": "ONNX"}
# How to save a model as a file this module reads.
SAVE_HINT = (
    "save the network with torch.jit.save(torch.jit.script(model), 'model.pt'), "
    "torch.export.save(torch.export.export(model, (example,)), 'model.pt2') or torch.onnx.export"
)
# timm's crop_pct where a pretrained config gives none (timm.data.DEFAULT_CROP_PCT).
TIMM_DEFAULT_CROP_PCT = 0.875
# Seconds a weights download may wait on the network.
DOWNLOAD_TIMEOUT_S = 30


class ModelFileError(ValueError):
    """A model file that cannot be used (missing, not a model, a pickle, bad options); one line."""


class GradientUnavailableError(ValueError):
    """A model without gradients (scored by ONNX Runtime) asked for them; one line."""


def reason(error: BaseException) -> str:
    """One line saying why ``error`` happened, at most 200 characters.

    For TorchScript's many-line errors it is the last line naming an exception
    (``RuntimeError: ...``), else the first line.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if lines[0].startswith("[ONNXRuntimeError]"):  # the useful part is on the next lines
        return " ".join(lines)[:200]
    named = [line for line in lines if line.split(":", 1)[0].endswith(("Error", "Exception"))]
    line = named[-1].split(":", 1)[1].strip() if named and ":" in named[-1] else lines[0]
    return (line or lines[0])[:200]


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """While inside: every ``torch.load`` uses the safe weights-only unpickler.

    This holds even where its caller passes ``weights_only=False``
    (``TORCH_FORCE_WEIGHTS_ONLY_LOAD``, read per call).
    """
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


@contextlib.contextmanager
def _network_timeout(seconds: float = DOWNLOAD_TIMEOUT_S) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


# --- file options and reference strings ----------------------------------------------------


def parse_input_size(text: str) -> tuple[int, int]:
    """``"H,W"`` (or ``"S"`` for a square) -> ``(H, W)``.

    Raises:
        ValueError: not one or two positive integers.
    """
    try:
        sides = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        sides = ()
    if len(sides) == 1:
        sides = sides * 2
    if len(sides) != 2 or min(sides) < 1 or max(sides) > 4096:
        raise ValueError(f"--input-size expects H,W (two integers in 1..4096), got {text!r}")
    return (sides[0], sides[1])


def parse_channels(text: str) -> int:
    """``"1"`` or ``"3"`` -> the channel count.

    Raises:
        ValueError: anything else.
    """
    if text.strip() not in ("1", "3"):
        raise ValueError(f"--channels expects 1 (gray) or 3 (RGB), got {text!r}")
    return int(text)


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    """``"0.5"`` or ``"0.485,0.456,0.406"`` -> finite floats.

    Raises:
        ValueError: not a comma-separated list of finite numbers.
    """
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(np.isfinite(values)):
        raise ValueError(f"{what} expects comma-separated numbers, got {text!r}")
    return values


@dataclasses.dataclass(frozen=True)
class FileOptions:
    """What a model file may not say about itself.

    Attributes:
        labels: path of a text file with one class name per line (``None``: ``"0"``, ``"1"``,
            ... or the ImageNet names for 1,000 outputs).
        input_size: ``(height, width)`` (``None``: read from the file, where it holds it).
        channels: 1 or 3 (``None``: from the file, else 3).
        mean, std: per-channel (or one shared) normalisation of images in ``[0, 1]``
            (``None``: 0 and 1).
    """

    labels: str | None = None
    input_size: tuple[int, int] | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def given(self) -> bool:
        """Whether any option is set (not ``None``)."""
        return any(getattr(self, field.name) is not None for field in dataclasses.fields(self))

    def query(self) -> str:
        """The options as ``key=value&...`` in a fixed order (empty when none are given)."""
        parts = []
        if self.labels is not None:
            parts.append(f"labels={self.labels}")
        if self.input_size is not None:
            parts.append(f"input-size={self.input_size[0]},{self.input_size[1]}")
        if self.channels is not None:
            parts.append(f"channels={self.channels}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key}={','.join(repr(float(v)) for v in value)}")
        return "&".join(parts)


def parse_options(query: str) -> FileOptions:
    """The inverse of :meth:`FileOptions.query`.

    Raises:
        ValueError: an unknown key or a bad value.
    """
    fields: dict = {}
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        key = key.strip().lower().replace("_", "-")
        if key == "labels":
            fields["labels"] = value
        elif key == "input-size":
            fields["input_size"] = parse_input_size(value)
        elif key == "channels":
            fields["channels"] = parse_channels(value)
        elif key in ("mean", "std"):
            fields[key] = parse_floats(value, f"--{key}")
        else:
            raise ValueError(f"unknown model option {key!r} (known: labels, input-size, channels, mean, std)")
    return FileOptions(**fields)


def split_reference(reference: str) -> tuple[str, FileOptions]:
    """``"PATH?options"`` -> ``(PATH, options)``.

    Raises:
        ValueError: bad options.
    """
    path, _, query = reference.partition("?")
    return path, parse_options(query)


def is_model_file(name: str) -> bool:
    """True when ``name`` names a model file: a known suffix, or a file that exists."""
    path = name.partition("?")[0]
    if not path or path.startswith((TIMM_PREFIX, TORCHVISION_PREFIX)):
        return False
    suffix = Path(path).suffix.lower()
    return suffix in FILE_SUFFIXES or suffix in PICKLE_SUFFIXES or Path(path).is_file()


def file_reference(path: str, options: FileOptions = FileOptions()) -> str:
    """The canonical reference of model file ``path`` with ``options``.

    Paths are absolute (so a run resumed from another directory finds the files) and options
    come in a fixed order.
    """
    labels = options.labels
    if labels is not None:
        labels = str(Path(labels).expanduser().absolute())
    options = dataclasses.replace(options, labels=labels)
    absolute = str(Path(path).expanduser().absolute())
    query = options.query()
    return f"{absolute}?{query}" if query else absolute


def with_options(model: str, options: FileOptions) -> str:
    """``model`` with the command line's file ``options`` folded in (files only).

    Raises:
        ValueError: options given for a model that is not a file.
    """
    if not is_model_file(model):
        if options.given():
            raise ValueError(
                f"--labels, --input-size, --channels, --mean and --std describe model files "
                f"(.pt, .ts, .pt2, .onnx), not {model!r}"
            )
        return model
    path, inline = split_reference(model)
    merged = {
        field.name: getattr(options, field.name)
        if getattr(options, field.name) is not None
        else getattr(inline, field.name)
        for field in dataclasses.fields(FileOptions)
    }
    return file_reference(path, FileOptions(**merged))


# --- reading model files safely ------------------------------------------------------------


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


def _check_export_archive(data: bytes, shown: str) -> None:
    """Refuse a ``.pt2`` archive whose loading would unpickle Python objects.

    Raises:
        ModelFileError: it holds opaque (Python-pickled) constants or pickled weights.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for member in archive.namelist():
            if not member.endswith(("_constants_config.json", "_weights_config.json")):
                continue
            try:
                config = json.loads(archive.read(member))
            except ValueError:
                raise ModelFileError(f"{shown}: damaged torch.export archive ({member})") from None
            entries = config.get("config", {}) if isinstance(config, dict) else {}
            for entry in entries.values():
                if not isinstance(entry, dict):
                    continue
                path = str(entry.get("path_name", ""))
                if entry.get("use_pickle") or path.startswith("opaque_obj_"):
                    raise ModelFileError(
                        f"{shown} holds pickled Python objects ({path or member}); loading it could run "
                        "arbitrary code, so it is refused (export the model without custom objects)"
                    )


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
    whenever any byte of the file does.

    Args:
        kind: ``"torchscript"``, ``"export"`` or ``"onnx"``.
        data: the file's bytes.
        shown: how to name the file in messages.

    Raises:
        ModelFileError: not a model of that kind, a pickle, or several inputs.
    """

    def __init__(self, kind: str, data: bytes, shown: str) -> None:
        super().__init__()
        self.kind = kind
        self.shown = shown
        self.sha256 = hashlib.sha256(data).hexdigest()
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
                try:
                    self.inner = torch.jit.load(io.BytesIO(data), map_location="cpu")
                except Exception as error:
                    raise ModelFileError(f"{shown}: cannot read TorchScript ({reason(error)})") from None
                return
            _check_export_archive(data, shown)
            try:
                with weights_only_loads():
                    program = torch.export.load(io.BytesIO(data))
            except pickle.UnpicklingError:
                raise ModelFileError(
                    f"{shown} holds pickled Python objects that the safe (weights-only) loader refuses; "
                    "loading them could run arbitrary code"
                ) from None
            except Exception as error:
                raise ModelFileError(
                    f"{shown}: cannot read the torch.export archive ({reason(error)})"
                ) from None
            self.input_shape, self.input_name = _input_from_export(program)
            self.inner = program.module()

    def _load_onnx(self, data: bytes) -> None:
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
        # The file's bytes travel (to Ray actors: through the object store) with their SHA-256,
        # checked on arrival, and the batch size the driver found the file to take.
        return (_rebuild_file_network, (self.kind, self._data, self.shown, self.sha256, self.fixed_batch))


def _rebuild_file_network(
    kind: str, data: bytes, shown: str, sha256: str, fixed_batch: int | None
) -> FileNetwork:
    """Unpickling a :class:`FileNetwork`: check the shipped file bytes, then load them again.

    Raises:
        ModelFileError: the bytes do not have the SHA-256 the sender computed (damaged on the way).
    """
    arrived = hashlib.sha256(data).hexdigest()
    if arrived != sha256:
        raise ModelFileError(
            f"{shown} arrived damaged (SHA-256 {arrived[:12]}..., sent {sha256[:12]}...); "
            "the model file did not reach this process intact"
        )
    network = FileNetwork(kind, data, shown)
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
        ModelFileError: missing, unreadable, empty, or a name given twice.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelFileError(f"--labels {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ModelFileError(f"--labels {path}: cannot read it ({reason(error)})") from None
    names = tuple(line.strip() for line in text.strip().splitlines())
    if not names or not all(names):
        raise ModelFileError(f"--labels {path}: expected one class name per line, with no blank lines")
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            raise ModelFileError(f"--labels {path} names {name!r} twice")
        seen.add(name.lower())
    return names


def read_model_file(path: str) -> bytes:
    """The bytes of model file ``path``.

    Raises:
        ModelFileError: missing, a folder, unreadable, or of a suffix this module does not read.
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
    try:
        return file.read_bytes()
    except OSError as error:
        raise ModelFileError(f"model file {path}: cannot read it ({reason(error)})") from None


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
    data = read_model_file(path)
    network = FileNetwork(FILE_SUFFIXES[Path(path).suffix.lower()], data, Path(path).name)
    if expected_sha256 is not None and network.sha256 != expected_sha256:
        raise ModelFileError(f"{path} changed while it was being loaded; try again")
    return network


def file_spec(reference: str) -> ModelSpec:
    """The spec of the model file ``reference`` names (``PATH[?options]``).

    Loads the file once, runs a batch of zeros through it to learn the number of outputs and
    to check that the input size fits.

    Raises:
        ModelFileError: missing file, not a model, a pickle, bad options, labels that do not
            match the outputs, or an input size the model rejects.
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


# --- timm ---------------------------------------------------------------------------------


def _timm_names() -> list[str]:
    import timm  # heavy: only for timm: models

    return timm.list_models(pretrained=True)


def timm_config(name: str):
    """The timm pretrained config of ``name`` (``ARCH`` or ``ARCH.TAG``) and its full tagged name.

    Raises:
        UnknownNameError: no pretrained timm model of that name; suggests close names.
    """
    from timm.models import get_pretrained_cfg  # heavy: only for timm: models

    tagged = _timm_names()
    architectures = sorted({full.split(".", 1)[0] for full in tagged})
    if name not in tagged and name not in architectures:
        raise UnknownNameError(
            f"unknown timm model {name!r}{close_names(name, tagged + architectures)} "
            "(timm.list_models(pretrained=True) lists them)"
        )
    config = get_pretrained_cfg(name)
    full = name if "." in name else f"{name}.{config.tag}"
    return config, full


def _timm_cached_weights(config) -> Path | None:
    """The local copy of a timm model's weights: the Hugging Face cache, then torch hub's."""
    if config.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache  # heavy: only for timm: models

        repo = config.hf_hub_id.split("@", 1)[0]
        filenames = [config.hf_hub_filename] if config.hf_hub_filename else []
        for filename in [*filenames, "model.safetensors", "pytorch_model.bin"]:
            found = try_to_load_from_cache(repo, filename)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    if config.url:
        local = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(config.url).path).name
        if local.is_file():
            return local
    return None


def timm_spec(name: str) -> ModelSpec:
    """The spec of ``timm:NAME`` (no weights are read until ``build``).

    Raises:
        UnknownNameError: no such pretrained timm model (suggests close names).
    """
    config, full = timm_config(name)
    channels, height, width = config.input_size
    outputs = config.num_classes
    if config.label_names and len(config.label_names) == outputs:
        names = tuple(config.label_names)
    elif outputs == 1000:
        names = imagenet_class_names()
    else:
        names = tuple(str(index) for index in range(outputs))
    return ModelSpec(
        name=TIMM_PREFIX + full,
        channels=channels,
        input_size=(height, width),
        mean=tuple(config.mean),
        std=tuple(config.std),
        class_names=names,
        build=functools.partial(_build_timm, full),
        description=f"timm {full} ({config.interpolation} resize, crop {config.crop_pct})",
        crop_pct=float(config.crop_pct or TIMM_DEFAULT_CROP_PCT),
        interpolation=config.interpolation if config.interpolation in RESAMPLING else "bicubic",
    )


def _build_timm(full: str) -> nn.Module:
    import timm  # heavy: only for timm: models

    config, _ = timm_config(full)
    cached = _timm_cached_weights(config)
    if cached is None and offline():
        raise ModelUnavailableError(
            f"timm:{full}: weights are not in the local cache (Hugging Face hub {config.hf_hub_id or '-'}, "
            f"or {Path(torch.hub.get_dir()) / 'checkpoints'}) and FOOLING_OFFLINE is set; "
            "fetch them once where the network is reachable"
        )
    overlay = {"file": str(cached), "source": None} if cached is not None else None
    try:
        with weights_only_loads(), _network_timeout(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            network = timm.create_model(full, pretrained=True, pretrained_cfg_overlay=overlay)
    except Exception as error:
        where = f"from {cached}" if cached is not None else "(downloading; no network?)"
        raise ModelUnavailableError(
            f"timm:{full}: cannot load the weights {where}: {reason(error)}"
        ) from None
    return network.eval()


# --- torchvision --------------------------------------------------------------------------


def _torchvision_weights(name: str):
    """``(architecture, weights enum member)`` of ``torchvision:ARCH[.WEIGHTS]``.

    Raises:
        UnknownNameError: no such classification model or weights (suggests close names).
    """
    import torchvision.models as models  # heavy: only for torchvision: models

    architecture, _, tag = name.partition(".")
    known = models.list_models(module=models)
    if architecture not in known:
        raise UnknownNameError(
            f"unknown torchvision model {architecture!r}{close_names(architecture, known)} "
            "(torchvision.models.list_models() lists them)"
        )
    weights_enum = models.get_model_weights(architecture)
    members = [member.name for member in weights_enum]
    if not tag:
        return architecture, weights_enum.DEFAULT
    if tag not in members:
        raise UnknownNameError(
            f"torchvision:{architecture} has no weights {tag!r}{close_names(tag, members)} "
            f"(known: {', '.join(members)})"
        )
    return architecture, weights_enum[tag]


def torchvision_spec(name: str) -> ModelSpec:
    """The spec of ``torchvision:ARCH[.WEIGHTS]`` (no weights are read until ``build``).

    Raises:
        UnknownNameError: no such classification model or weights (suggests close names).
    """
    architecture, weights = _torchvision_weights(name)
    transform = weights.transforms()
    crop = list(getattr(transform, "crop_size", [224]))
    height, width = (crop[0], crop[0]) if len(crop) == 1 else (crop[0], crop[1])
    # Photos: the shorter side resized to resize_size, then the centre crop (crop_pct = crop/resize).
    resize = list(getattr(transform, "resize_size", None) or [height])
    interpolation = getattr(getattr(transform, "interpolation", None), "value", "bilinear")
    return ModelSpec(
        name=f"{TORCHVISION_PREFIX}{architecture}.{weights.name}",
        channels=3,
        input_size=(height, width),
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        class_names=tuple(weights.meta["categories"]),
        build=functools.partial(_build_torchvision, architecture, weights.name),
        description=f"torchvision {architecture} with {weights.name} weights",
        crop_pct=min(height, width) / resize[0],
        interpolation=interpolation if interpolation in RESAMPLING else "bilinear",
    )


def _build_torchvision(architecture: str, tag: str) -> nn.Module:
    import torchvision.models as models  # heavy: only for torchvision: models

    weights = models.get_model_weights(architecture)[tag]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    if not cached.is_file() and offline():
        raise ModelUnavailableError(
            f"torchvision:{architecture}: weights {tag} are not in the local cache ({cached}) and "
            "FOOLING_OFFLINE is set; fetch them once where the network is reachable"
        )
    try:
        with weights_only_loads(), _network_timeout():
            network = models.get_model(architecture, weights=weights)
    except Exception as error:
        raise ModelUnavailableError(
            f"torchvision:{architecture}: cannot load weights {tag} (no network?): {reason(error)}"
        ) from None
    return network.eval()


# --- plugins --------------------------------------------------------------------------------


def plugin_entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """Installed entry points of the group ``fooling.models``, by name (read afresh each call)."""
    return {entry.name: entry for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP)}


def plugin_spec(name: str) -> ModelSpec | None:
    """The spec an installed plugin declares under ``name``, or ``None`` when none does.

    Raises:
        ModelUnavailableError: the entry point fails to load or to make its spec, or returns
            something other than a :class:`ModelSpec`.
    """
    entry = plugin_entry_points().get(name)
    if entry is None:
        return None
    try:
        spec = entry.load()()
    except Exception as error:
        raise ModelUnavailableError(
            f"plugin model {name!r} ({entry.value}) failed: {type(error).__name__}: {reason(error)}"
        ) from None
    if not isinstance(spec, ModelSpec):
        raise ModelUnavailableError(
            f"plugin model {name!r} ({entry.value}) returned {type(spec).__name__}, not a ModelSpec"
        )
    return dataclasses.replace(spec, build=functools.partial(_build_plugin, name, entry.value, spec.build))


def _build_plugin(name: str, where: str, build) -> nn.Module:
    try:
        network = build()
    except ModelUnavailableError:
        raise
    except Exception as error:
        raise ModelUnavailableError(
            f"plugin model {name!r} ({where}) failed to build: {type(error).__name__}: {reason(error)}"
        ) from None
    if not isinstance(network, nn.Module):
        raise ModelUnavailableError(
            f"plugin model {name!r} ({where}) built {type(network).__name__}, not a torch.nn.Module"
        )
    return network.eval()


def plugin_name(spec: ModelSpec) -> str | None:
    """The entry point name of the plugin that made ``spec`` (see :func:`plugin_spec`), else ``None``."""
    build = spec.build
    if isinstance(build, functools.partial) and build.func is _build_plugin:
        return str(build.args[0])
    return None


def _interpreter_folders() -> set[Path]:
    """The folders every process of this interpreter searches anyway: stdlib and site-packages."""
    folders = {Path(path) for path in sysconfig.get_paths().values()}
    folders.update(Path(path) for path in site.getsitepackages())
    folders.add(Path(site.getusersitepackages()))
    return {folder.resolve() for folder in folders}


def plugin_import_paths(spec: ModelSpec) -> tuple[str, ...]:
    """The folders, beyond this interpreter's own site-packages, that hold the plugin which made ``spec``.

    They are where its distribution metadata (``*.dist-info``, so that its entry points
    resolve) and its module live. Other processes (Ray workers) put them on their
    ``sys.path`` to import the plugin as this process does. Empty for a spec of no plugin, and
    for a plugin installed in site-packages, which every worker of the same environment sees.
    """
    name = plugin_name(spec)
    entry = plugin_entry_points().get(name) if name is not None else None
    if entry is None:
        return ()
    roots: list[Path] = []
    with contextlib.suppress(Exception):  # a distribution not read from a folder (a zip, a custom finder)
        roots.append(Path(entry.dist.locate_file("")))
    with contextlib.suppress(ImportError, ValueError, AttributeError):
        found = importlib.util.find_spec(entry.module)
        if found is not None and found.origin and Path(found.origin).is_file():
            origin = Path(found.origin)
            depth = entry.module.count(".") + (1 if origin.name == "__init__.py" else 0)
            roots.append(origin.parents[depth])
    own = _interpreter_folders()
    paths: list[str] = []
    for root in roots:
        resolved = str(root.resolve())
        if root.resolve() not in own and resolved not in paths:
            paths.append(resolved)
    return tuple(paths)


# --- the resolver and what a checkpoint records -----------------------------------------------


def resolve_source(name: str) -> ModelSpec | None:
    """The spec of ``timm:``, ``torchvision:`` and file references; ``None`` for other names.

    Raises:
        UnknownNameError, ModelFileError: see :func:`timm_spec`, :func:`torchvision_spec`,
            :func:`file_spec`.
    """
    if name.startswith(TIMM_PREFIX):
        return timm_spec(name[len(TIMM_PREFIX) :])
    if name.startswith(TORCHVISION_PREFIX):
        return torchvision_spec(name[len(TORCHVISION_PREFIX) :])
    if is_model_file(name):
        return file_spec(name)
    return None


def source_kind(reference: str) -> str:
    """``"timm"``, ``"torchvision"``, ``"file"``, ``"plugin"`` or ``"registry"``."""
    if reference.startswith(TIMM_PREFIX):
        return "timm"
    if reference.startswith(TORCHVISION_PREFIX):
        return "torchvision"
    if is_model_file(reference):
        return "file"
    return "plugin" if reference in plugin_entry_points() else "registry"


def describe_model(reference: str, model: LoadedModel) -> dict:
    """How to rebuild ``model`` (JSON-able, stored in checkpoints).

    The record holds the reference string, its kind, the file's SHA-256 (files), labels,
    preprocessing and the weights hash.
    """
    record = {
        "reference": reference,
        "kind": source_kind(reference),
        "name": model.spec.name,
        "channels": model.spec.channels,
        "input_size": list(model.spec.input_size),
        "mean": list(model.spec.mean),
        "std": list(model.spec.std),
        "crop_pct": model.spec.crop_pct,
        "interpolation": model.spec.interpolation,
        "labels": list(model.spec.class_names),
        "weights_hash": model.weights_hash,
        "differentiable": differentiable(model),
    }
    if isinstance(model.network, FileNetwork):
        record["file_format"] = model.network.kind
        record["sha256"] = model.network.sha256
    return record


def differentiable(model: LoadedModel) -> bool:
    """False when the model cannot give gradients (an ONNX file)."""
    return bool(getattr(model.network, "differentiable", True))


def require_gradients(model: LoadedModel, command: str) -> None:
    """Raise :class:`GradientUnavailableError` for a model without gradients."""
    if not differentiable(model):
        raise GradientUnavailableError(
            f"{command} follows gradients, and {model.spec.name} is scored with ONNX Runtime, which "
            "computes none: use a TorchScript (.pt), torch.export (.pt2), timm: or torchvision: model"
        )


register_resolver(resolve_source, first=True)
register_resolver(plugin_spec, names=lambda: list(plugin_entry_points()))


def model_change(recorded: dict | None, model: LoadedModel) -> str | None:
    """What changed in a model file since ``recorded`` was made, as a sentence.

    ``recorded`` is a :func:`describe_model` record. ``None`` when the record names no file or
    its SHA-256 still matches.
    """
    if not recorded or "sha256" not in recorded or not isinstance(model.network, FileNetwork):
        return None
    before, now = str(recorded["sha256"]), model.network.sha256
    if before == now:
        return None
    path = split_reference(str(recorded.get("reference", model.spec.name)))[0]
    return f"{path} changed since the run was made (SHA-256 {before[:12]}... then, {now[:12]}... now)"


def require_extensible(model: LoadedModel, command: str) -> None:
    """Raise :class:`ModelFileError` for a model read from a file.

    Its graph is fixed, so no output unit can be added to it (the fooling class of ``retrain``).
    """
    if isinstance(model.network, FileNetwork):
        raise ModelFileError(
            f"{command} adds an output unit to the network, which a {KIND_NAMES[model.network.kind]} file "
            f"({model.spec.name}) cannot take: use a timm:, torchvision: or plugin model"
        )
