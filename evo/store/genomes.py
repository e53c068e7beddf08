"""Genomes in checkpoint columns: byte planes and checksums (versions 2 and 3), ``.npz`` (version 1).

Each genome field is one ``FIXED_LEN_BYTE_ARRAY`` column ``genome_<field>``, each cell one
genome's array in its own dtype (little-endian) stored as byte planes; column
``genome_sha256`` holds each row's SHA-256. Everything a checkpoint declares about its
genomes (fields, dtypes, shapes, sizes) is checked here against what its run makes, before
anything is decompressed. Failures are ``ValueError``: the checkpoint reader turns them into
a :class:`~fooling.evo.store.checkpoint.CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import types
import zipfile

import numpy as np
import pyarrow as pa

from fooling.encodings import GenomeBatch
from fooling.evo.config import RunConfig
from fooling.evo.evaluation import make_encoding

GENOME_PREFIX = "genome_"
# The column of each row's genome SHA-256.
CHECKSUM_COLUMN = GENOME_PREFIX + "sha256"


def genome_columns(genomes: GenomeBatch) -> tuple[dict[str, pa.Array], list[dict]]:
    """``genomes`` as checkpoint columns ``genome_<field>`` and their ``genome_fields`` metadata.

    Each cell holds one genome's array of the field in its own dtype, little-endian, as byte
    planes (byte 0 of every value, then byte 1, ...): lossless, and what zstd compresses best
    of the layouts measured (see the module docs).

    Column :data:`CHECKSUM_COLUMN` holds each row's SHA-256 over its fields' cells, in
    order (see :func:`genome_checksums`).

    Returns:
        ``(columns, fields)``: name -> ``fixed_size_binary`` array of ``len(genomes)`` rows
        (the fields' columns, then the checksums); one ``{"name", "dtype", "shape"}`` per
        field (``shape`` is one genome's).

    Raises:
        ValueError: a field of objects.
    """
    columns, fields, cells = {}, [], []
    for name, array in genomes.arrays().items():
        if GENOME_PREFIX + name == CHECKSUM_COLUMN:
            raise RuntimeError(f"genome field {name} would collide with the checksum column")
        if array.dtype.hasobject:
            raise ValueError(f"genome field {name} holds objects")
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder not in ("|", "<") else array.dtype
        array = np.ascontiguousarray(array, dtype=dtype)
        count, shape, item = len(array), array.shape[1:], dtype.itemsize
        elements = int(np.prod(shape, dtype=np.int64))
        planes = array.reshape(count, elements).view(np.uint8).reshape(count, elements, item)
        data = np.ascontiguousarray(planes.transpose(0, 2, 1))
        columns[GENOME_PREFIX + name] = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(elements * item), count, [None, pa.py_buffer(data)]
        )
        cells.append(data.reshape(count, elements * item))
        fields.append({"name": name, "dtype": dtype.str, "shape": list(shape)})
    sums = genome_checksums(cells, len(genomes))
    columns[CHECKSUM_COLUMN] = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(sums.shape[1]), len(genomes), [None, pa.py_buffer(sums)]
    )
    return columns, fields


def genome_checksums(cells: list[np.ndarray], rows: int) -> np.ndarray:
    """The SHA-256 of each row's genome bytes: ``(rows, 32)`` uint8.

    Args:
        cells: per genome field in ``genome_fields`` order, ``(rows, width)`` uint8: each
            row's cell as stored (byte planes).
        rows: how many rows.
    """
    sums = np.empty((rows, hashlib.sha256().digest_size), np.uint8)
    for row in range(rows):
        digest = hashlib.sha256()
        for field in cells:
            digest.update(field[row])
        sums[row] = np.frombuffer(digest.digest(), np.uint8)
    return sums


def stored_cells(column: pa.ChunkedArray) -> np.ndarray:
    """A ``fixed_size_binary`` column's cells as ``(rows, width)`` uint8, without copying.

    Raises:
        ValueError: missing cells.
    """
    array = column.combine_chunks()
    if array.null_count:
        raise ValueError("missing genomes")
    rows, width = len(array), array.type.byte_width
    raw = np.frombuffer(array.buffers()[1], np.uint8, count=rows * width, offset=array.offset * width)
    return raw.reshape(rows, width)


def decode_genome_field(column: pa.ChunkedArray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`genome_columns` for one field: ``(rows, *shape)`` of ``dtype`` (native order).

    Raises:
        ValueError: missing cells, or booleans that are neither 0 nor 1.
    """
    raw = stored_cells(column)
    rows, item = len(raw), dtype.itemsize
    elements = int(np.prod(shape, dtype=np.int64))
    if dtype.kind == "b" and raw.size and raw.max() > 1:
        raise ValueError("booleans other than 0 and 1")
    values = np.ascontiguousarray(raw.reshape(rows, item, elements).transpose(0, 2, 1))
    return values.view(dtype).reshape(rows, *shape).astype(dtype.newbyteorder("="), copy=False)


def run_shapes(metadata: dict) -> dict[str, tuple[np.dtype, tuple[int, ...]]] | None:
    """Dtype and one genome's shape of each genome field, as the run's config and model make them.

    The run's encoding is built from the stored config and the model's channels and input
    size (recorded in ``model_source``) and asked for one genome. ``None`` when the
    checkpoint does not record the model's input (older or hand-made checkpoints), or names
    an encoding this build does not have.

    Raises:
        ValueError: a config or model record that cannot describe a run.
    """
    source = metadata.get("model_source")
    if not isinstance(source, dict) or "channels" not in source or "input_size" not in source:
        return None
    config = RunConfig.from_json(json.dumps(metadata["config"]))
    height, width = (int(value) for value in source["input_size"])
    channels = int(source["channels"])
    if channels not in (1, 3) or not (0 < height <= MAX_MODEL_SIDE and 0 < width <= MAX_MODEL_SIDE):
        raise ValueError(f"model input {channels}x{height}x{width} out of range")
    spec = types.SimpleNamespace(channels=channels, input_size=(height, width))
    try:
        encoding = make_encoding(config, spec)
    except LookupError:  # an encoding of a newer build
        return None
    sample = encoding.random(1, np.random.default_rng(0))
    return {name: (array.dtype, tuple(array.shape[1:])) for name, array in sample.arrays().items()}


# Largest model input side a checkpoint may record (the genome of a direct run is that big).
MAX_MODEL_SIDE = 2048


def declared_fields(metadata: dict) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """The ``genome_fields`` a version 2 checkpoint declares, checked for form.

    Raises:
        ValueError: not a list of plain numeric fields with non-negative shapes.
    """
    fields = metadata.get("genome_fields")
    if not isinstance(fields, list) or not fields:
        raise ValueError("no genome_fields")
    declared = {}
    for field in fields:
        dtype = np.dtype(str(field["dtype"]))
        shape = tuple(int(size) for size in field["shape"])
        if dtype.kind not in "biuf" or dtype.hasobject or min(shape, default=1) < 1:
            raise ValueError(f"genome field {field['name']}: {dtype} {shape}")
        declared[str(field["name"])] = (dtype, shape)
    return declared


def describe_fields(fields: dict[str, tuple[np.dtype, tuple[int, ...]]]) -> str:
    """``fields`` in words, for messages: ``name (shape) dtype, ...``."""
    return ", ".join(f"{name} {shape} {np.dtype(dtype).name}" for name, (dtype, shape) in fields.items())


def genome_byte_limit(metadata: dict) -> int:
    """Most bytes one genome of a version 1 checkpoint (an ``.npz``) may take, uncompressed.

    Direct genomes: 3 float32 channels at the run's image side (or 512 pixels when it is the
    model's own size, more than any registered model takes); CPPN genomes: their capacity in
    nodes and connections (a few bytes each). Plus room for the ``.npz`` wrapping.
    """
    config = metadata.get("config") if isinstance(metadata.get("config"), dict) else {}
    try:
        side = int(config.get("image_size") or 0) or 512
        nodes = int(config.get("max_nodes") or 0) or 1024
        edges = int(config.get("max_edges") or 0) or 4096
    except (TypeError, ValueError):
        side, nodes, edges = 512, 1024, 4096
    direct = 3 * 4 * side * side
    cppn = 16 * (nodes + edges)
    return max(direct, cppn) + 16 * 1024


def check_genome_blobs(
    blobs: list[bytes],
    limit: int,
    expected: dict[str, tuple[np.dtype, tuple[int, ...]]] | None = None,
) -> None:
    """Check each version 1 genome's declared sizes before anything is decompressed.

    Each genome is an ``.npz`` (a zip of ``.npy`` arrays): the zip directory declares each
    member's uncompressed size and each ``.npy`` header its shape and dtype; both are read
    without inflating the data.

    Args:
        blobs: one ``.npz`` per genome.
        limit: most bytes one genome may declare.
        expected: field name -> dtype and one genome's shape, as the run makes them; each
            member must declare exactly that (``None``: only ``limit`` is checked).

    Raises:
        ValueError: a genome declaring more than ``limit`` bytes, an object dtype, an array
            whose header disagrees with its member's size, or (with ``expected``) other
            fields, dtypes or shapes than the run's.
    """
    for index, blob in enumerate(blobs):
        if blob is None:
            raise ValueError(f"genome {index} is missing")
        try:
            with zipfile.ZipFile(io.BytesIO(blob)) as archive:
                members = archive.infolist()
                total = sum(member.file_size for member in members)
                if total > limit:
                    raise ValueError(f"genome {index} declares {total:,} bytes, more than {limit:,}")
                found = {}
                for member in members:
                    with archive.open(member) as stream:
                        version = np.lib.format.read_magic(stream)
                        if version == (1, 0):
                            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
                        else:
                            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
                    if dtype.hasobject:
                        raise ValueError(f"genome {index} holds objects")
                    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                    if size > member.file_size:
                        raise ValueError(f"genome {index}: {member.filename} declares {shape} {dtype}, "
                                         f"more than its {member.file_size} bytes")  # fmt: skip
                    found[member.filename.removesuffix(".npy")] = (dtype, tuple(shape))
                if expected is not None and found != expected:
                    raise ValueError(
                        f"genome {index} declares {describe_fields(found)}, but its run's config makes "
                        f"{describe_fields(expected)}"
                    )
        except (zipfile.BadZipFile, EOFError, OSError) as error:
            raise ValueError(f"genome {index} is unreadable: {error}") from None
