"""ONNX external data, read from the model's own folder only.

An ONNX tensor may keep its bytes in another file (``data_location = EXTERNAL``, with a
``location`` relative to the model). ONNX Runtime, given the model's bytes, resolves that
location against the current directory, so a model could read any file the user's shell
stands beside (``etc/passwd`` from ``/``). The files are read here instead, only from the
model's own folder, into a self-contained model that ONNX Runtime never looks past; they
belong to the model's SHA-256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

from fooling.fitness.sources.common import ModelFileError, read_model_bytes, reason


def _onnx_tensors(model) -> Iterator:
    """Every TensorProto of an ONNX model.

    Initializers, sparse tensors, node attributes, subgraphs, and the default attributes of its
    functions.
    """

    def sparse(tensor) -> Iterator:
        yield tensor.values
        yield tensor.indices

    def of_attributes(attributes) -> Iterator:
        for attribute in attributes:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield from sparse(attribute.sparse_tensor)
            for tensor in attribute.sparse_tensors:
                yield from sparse(tensor)
            if attribute.HasField("g"):
                yield from of_graph(attribute.g)
            for graph in attribute.graphs:
                yield from of_graph(graph)

    def of_nodes(nodes) -> Iterator:
        for node in nodes:
            yield from of_attributes(node.attribute)

    def of_graph(graph) -> Iterator:
        yield from graph.initializer
        for tensor in graph.sparse_initializer:
            yield from sparse(tensor)
        yield from of_nodes(graph.node)

    yield from of_graph(model.graph)
    for function in model.functions:
        yield from of_nodes(function.node)
        # Default values of the function's attributes: a node refers to them by name.
        yield from of_attributes(function.attribute_proto)


def _parse_onnx(data: bytes):
    """The ModelProto of ``data``, or ``None`` when it is not one (ONNX Runtime then says why)."""
    import onnx  # heavy: only for ONNX files

    try:
        return onnx.load_model_from_string(data)
    except Exception:  # protobuf's DecodeError and friends: not an ONNX model
        return None


def onnx_external_data(data: bytes) -> bool:
    """Whether the ONNX model ``data`` names any tensor data kept in another file."""
    model = _parse_onnx(data)
    return model is not None and any(_is_external(tensor) for tensor in _onnx_tensors(model))


def _is_external(tensor) -> bool:
    import onnx  # heavy: only for ONNX files

    return tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0


def _external_file(location: str, folder: Path, shown: str, tensor: str) -> Path:
    """The file an external ``location`` names inside ``folder`` (resolved).

    Raises:
        ModelFileError: empty, absolute, with ``..``, leading outside ``folder`` through a
            symlink, missing, or not a file.
    """
    where = f"{shown}: tensor {tensor[:60]!r} keeps its data in {location[:100]!r}"
    parts = PurePosixPath(location).parts
    if not location or "\0" in location:
        raise ModelFileError(f"{where}, which names no file")
    if "\\" in location or PurePosixPath(location).is_absolute() or PureWindowsPath(location).drive:
        raise ModelFileError(f"{where}: an absolute path; external data must lie in the model's folder")
    if ".." in parts:
        raise ModelFileError(f"{where}: '..' leads out of the model's folder, which is refused")
    root = folder.resolve()
    file = (folder / location).resolve()
    if not file.is_relative_to(root):
        raise ModelFileError(f"{where}, which leads outside the model's folder ({str(file)!r}); refused")
    if not file.exists():
        raise ModelFileError(f"{where}, which does not exist in {folder}")
    if not file.is_file():
        raise ModelFileError(f"{where}, which is not a file")
    return file


def inline_external_data(data: bytes, path: Path, shown: str) -> tuple[bytes, str]:
    """``(self-contained model bytes, SHA-256)`` of the ONNX file ``path`` whose bytes are ``data``.

    Every external tensor's bytes are read from the model's folder (:func:`_external_file`)
    into the model. The SHA-256 is the file's own where it has no external data; else it also
    covers each external file's name and contents.

    Raises:
        ModelFileError: a location refused by :func:`_external_file`, an unreadable file or one
            over :data:`~fooling.fitness.limits.MAX_MODEL_BYTES`, an offset or length outside
            it, or a model too large to hold in one piece (2 GiB).
    """
    import onnx  # heavy: only for ONNX files

    model = _parse_onnx(data)
    external = (
        [tensor for tensor in _onnx_tensors(model) if _is_external(tensor)] if model is not None else []
    )
    if not external:
        return data, hashlib.sha256(data).hexdigest()
    folder = path.expanduser().absolute().parent
    contents: dict[str, bytes] = {}
    for tensor in external:
        fields = {entry.key: entry.value for entry in tensor.external_data}
        location = fields.get("location", "")
        where = f"{shown}: tensor {tensor.name[:60]!r} keeps its data in {location[:100]!r}"
        if location not in contents:
            file = _external_file(location, folder, shown, tensor.name)
            contents[location] = read_model_bytes(file, where)  # refused by its size first
        blob = contents[location]
        try:
            offset = int(fields.get("offset", "0"))
            length = int(fields["length"]) if "length" in fields else len(blob) - offset
        except ValueError:
            raise ModelFileError(f"{where} at a malformed offset or length") from None
        if offset < 0 or length < 0 or offset + length > len(blob):
            raise ModelFileError(
                f"{where} at bytes {offset}..{offset + length}, outside the file's {len(blob)} bytes"
            )
        tensor.raw_data = blob[offset : offset + length]
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
    digest = hashlib.sha256(data)
    for location in sorted(contents):
        digest.update(b"\0" + location.encode() + b"\0" + hashlib.sha256(contents[location]).digest())
    try:
        inlined = model.SerializeToString()
    except ValueError as error:  # protobuf refuses messages over 2 GiB
        raise ModelFileError(
            f"{shown} with its external data is too large to load ({reason(error)})"
        ) from None
    return inlined, digest.hexdigest()
