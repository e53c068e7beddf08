"""Checkpoints: one Parquet file per checkpoint, one row per occupied cell, no pickle.

Layout of a run folder ``OUT`` (a local path or any pyarrow filesystem URI)::

    OUT/checkpoints/gen-000199.parquet   elites after generation 199
    OUT/checkpoints/LATEST               name of the newest good checkpoint
    OUT/stats.parquet                    one row per generation

Local files are written atomically (temporary file, fsync, rename). Object stores
have no rename, but a PUT is atomic: a checkpoint object appears whole or not at
all, and LATEST is replaced only after it.

Genomes (format version 2): one ``FIXED_LEN_BYTE_ARRAY`` column ``genome_<field>`` per
field of the genome class, each cell one genome's array in its own dtype (little-endian),
stored as byte planes (all first bytes of its values, then all second bytes, ...), so that
zstd finds the runs in the exponent bytes of float genes; the schema metadata's
``genome_fields`` gives each field's dtype and per-genome shape. Nothing is rounded: a
resumed run continues bit for bit. Measured on ImageNet direct genomes (3x224x224 float32,
602 kB raw, after 30 mutations): 540 kB per genome as the ``.npz`` of version 1 (zstd),
494 kB as byte planes (zstd; lz4 535 kB, plain bytes 540 kB), the same or smaller for CPPN
genomes. Version 1 checkpoints (one ``.npz`` per genome in a ``genome`` column) still read.

Bit rot (format version 3): column ``genome_sha256`` holds the SHA-256 of each row's genome
bytes (its fields' cells in ``genome_fields`` order, as stored), checked before a genome is
decoded; the schema metadata key ``fooling-sha256`` holds the SHA-256 of the run metadata
(which records the row count); every Parquet page carries its CRC. A checkpoint failing any
of these, or any check of the fields it holds (types and ranges), is damaged and skipped like
a torn file: a warning naming it, then the previous good one. Versions 1 and 2 (no checksums)
still read.

Symbolic links: nothing is ever written, replaced or deleted through a link inside a run
folder. A file is written as a new temporary file (``O_CREAT | O_EXCL | O_NOFOLLOW``) in its
folder and renamed over its name (a link there is replaced, its target untouched); folders on
the way below the run folder are opened with ``O_NOFOLLOW``, and one that is a link is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import secrets
import stat
import subprocess
import sys
import types
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from PIL import Image

from fooling.encodings import GenomeBatch
from fooling.evo.archive import ClassArchive
from fooling.evo.config import RunConfig
from fooling.evo.evaluation import make_encoding
from fooling.fitness import error_line

logger = logging.getLogger(__name__)

FORMAT_VERSION = 3
# Versions this build reads: 1 stored each genome as an .npz in a `genome` column; 2 had no
# checksums.
READABLE_VERSIONS = (1, 2, 3)
GENOME_PREFIX = "genome_"
# Genome bytes per row group of a checkpoint, and per batch of thumbnails rendered: what a
# checkpoint adds to a run's memory, whatever the size of the archive.
ROW_GROUP_GENOME_BYTES = 32 * 1024 * 1024
METADATA_KEY = b"fooling"
# SHA-256 (hex) of the METADATA_KEY value, and the column of each row's genome SHA-256.
METADATA_CHECKSUM_KEY = b"fooling-sha256"
CHECKSUM_COLUMN = GENOME_PREFIX + "sha256"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Name prefix of the temporary files writes go through (removed on start if a kill left them).
TEMPORARY_PREFIX = ".tmp-"
CHECKPOINT_PATTERN = re.compile(r"^gen-(\d{6,})\.parquet$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not belong to this run."""


@dataclasses.dataclass
class Checkpoint:
    """Everything needed to continue a run exactly where it stopped.

    Attributes:
        config: the run's configuration.
        generation: last completed generation; a resumed run starts at ``generation + 1``.
        next_id: next unused individual id.
        model: registry name of the classifier.
        weights_hash: hash of the classifier's weights.
        archive: the elites.
        path: where it was read from or written to.
        model_source: how to rebuild the model (reference string, kind, file SHA-256, labels,
            preprocessing; see :func:`fooling.fitness.sources.describe_model`), or ``None``.
        thumbnails: cell -> ``(individual id, PNG bytes)`` of the thumbnails it holds, to seed
            a resumed run's :class:`ThumbnailCache`.
    """

    config: RunConfig
    generation: int
    next_id: int
    model: str
    weights_hash: str
    archive: ClassArchive
    path: str = ""
    model_source: dict | None = None
    thumbnails: dict[int, tuple[int, bytes]] = dataclasses.field(default_factory=dict)


# --- file systems ------------------------------------------------------------------------


def _filesystem(uri: str) -> tuple[pafs.FileSystem | None, str]:
    """``(None, local path)`` for local folders, else a pyarrow filesystem and its path."""
    if "://" not in uri or uri.startswith("file://"):
        # Not resolved: a link inside a run folder must stay a link (see write_bytes).
        return None, os.path.abspath(uri.removeprefix("file://"))
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as error:
        raise CheckpointError(f"cannot open storage {uri!r}: {error_line(error)}") from None


def join(uri: str, *parts: str) -> str:
    """``uri`` and ``parts`` joined with ``/`` (for local paths and storage URIs alike).

    Args:
        uri: a folder: a local path or a storage URI; a trailing ``/`` is dropped.
        *parts: names to append, in order.

    Returns:
        The joined path or URI.
    """
    return "/".join([uri.rstrip("/"), *parts])


class UnsafePathError(OSError):
    """A folder inside a run folder that is a symbolic link: never followed (one line)."""


_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _parts_below(path: str, root: str | None) -> tuple[str, list[str], str]:
    """``(base, folders, name)``: ``path`` is ``base/folders.../name``, ``base`` being ``root``.

    ``root`` (default: the folder of ``path``) is the folder the user named; the folders
    below it are the run folder's own.
    """
    directory, name = os.path.split(path)
    base = directory if root is None else _filesystem(root)[1]
    relative = os.path.relpath(directory, base)
    folders = [] if relative == "." else relative.split(os.sep)
    if ".." in folders or not name:
        raise RuntimeError(f"{path} is not a file inside {base}")  # a bug of the caller
    return base, folders, name


def _link_target(name: str, folder: int) -> str | None:
    """Where ``name`` in open folder ``folder`` points if it is a symbolic link, else ``None``."""
    try:
        return os.readlink(name, dir_fd=folder)
    except OSError:  # not a link, or gone
        return None


def _linked_folder(path: str, target: str) -> UnsafePathError:
    return UnsafePathError(
        f"{path} is a symbolic link (to {target}); fooling never writes through a link inside "
        "a run folder: replace it with a real folder"
    )


def _open_folder(base: str, folders: list[str], *, create: bool) -> int:
    """A descriptor of folder ``base/folders...``, never following a link among ``folders``.

    ``base`` itself is opened as named (it may be a link the user made).

    Raises:
        UnsafePathError: one of ``folders`` is a symbolic link.
        OSError: a folder is missing (without ``create``) or is not a folder.
    """
    if create:
        os.makedirs(base, exist_ok=True)
    handle = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    shown = base
    try:
        for folder in folders:
            shown = os.path.join(shown, folder)
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(folder, dir_fd=handle)
            try:
                inner = os.open(folder, _FOLDER_FLAGS, dir_fd=handle)
            except OSError:
                if _link_target(folder, handle) is not None:
                    raise _linked_folder(shown, _link_target(folder, handle)) from None
                raise
            os.close(handle)
            handle = inner
    except BaseException:
        os.close(handle)
        raise
    return handle


def _write_all(handle: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(handle, view) :]


class _Appender(io.RawIOBase):
    """A write-only stream over file descriptor ``handle``; every write goes through :func:`_write_all`."""

    def __init__(self, handle: int) -> None:
        super().__init__()
        self._handle = handle
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        _write_all(self._handle, data)
        self._written += size
        return size

    def tell(self) -> int:
        return self._written


def _write_error(uri: str, error: OSError) -> OSError:
    """``error`` as one line naming ``uri`` (a full disk names the file being written)."""
    if isinstance(error, UnsafePathError):
        return error
    reason = error.strerror or error_line(error)
    failure = OSError(f"cannot write {uri}: {reason}")
    failure.errno = error.errno
    return failure


def write_bytes(uri: str, data: bytes, *, root: str | None = None) -> None:
    """Write ``data`` to ``uri`` so that readers see the old object or the new one, never half.

    See :func:`write_streamed`, which this is with one write of ``data``.

    Raises:
        UnsafePathError: a folder below ``root`` is a symbolic link.
        OSError: the file cannot be written (one line naming it; nothing earlier changed).
    """
    write_streamed(uri, lambda stream: stream.write(data), root=root)


def write_streamed(uri: str, produce: Callable[[BinaryIO], object], *, root: str | None = None) -> None:
    """Write what ``produce`` writes to the stream it is given to ``uri``, all or nothing.

    A local file is written to a new temporary file (``O_CREAT | O_EXCL | O_NOFOLLOW``) in
    its folder, synced, and renamed over its name: a symbolic link there is replaced, never
    written through. Folders between ``root`` and the file are created as needed and never
    followed when they are links.

    The contents never need to be in memory at once (a checkpoint of large genomes is
    written row group by row group).

    Args:
        uri: the file: a local path or a storage URI.
        produce: writes the file's new contents to the binary stream it is called with.
        root: the run folder ``uri`` lies in (default: the folder of ``uri``).

    Raises:
        UnsafePathError: a folder below ``root`` is a symbolic link.
        OSError: the file cannot be written (one line naming it; nothing earlier changed).
    """
    filesystem, path = _filesystem(uri)
    if filesystem is not None:
        filesystem.create_dir(os.path.dirname(path), recursive=True)
        with filesystem.open_output_stream(path) as stream:
            produce(stream)
        return
    base, folders, name = _parts_below(path, root)
    try:
        folder = _open_folder(base, folders, create=True)
    except OSError as error:
        raise _write_error(uri, error) from None
    temporary = f"{TEMPORARY_PREFIX}{secrets.token_hex(8)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        # Mode 0666 less the umask (0644 as a rule), as PIL, matplotlib and other tools write:
        # run folders are shared and served (the gallery is an index.html).
        handle = os.open(temporary, flags, 0o666, dir_fd=folder)
        try:
            produce(_Appender(handle))
            os.fsync(handle)
        finally:
            os.close(handle)
        os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
        os.fsync(folder)  # make the rename itself durable
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=folder)
        if isinstance(error, OSError):
            raise _write_error(uri, error) from None
        raise
    finally:
        os.close(folder)


def read_bytes(uri: str) -> bytes:
    """Contents of ``uri``.

    Raises:
        FileNotFoundError: nothing is there.
        OSError: a local entry that is not a regular file (a folder, a FIFO: never waited on).
    """
    filesystem, path = _filesystem(uri)
    if filesystem is None:
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(handle, "rb") as file:
            if not stat.S_ISREG(os.fstat(handle).st_mode):
                raise OSError(f"{uri} is not a regular file")
            return file.read()
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    except (OSError, pa.ArrowException) as error:
        raise FileNotFoundError(f"{uri}: {error_line(error)}") from None


def is_link(uri: str) -> bool:
    """Whether ``uri`` is a local symbolic link (never one on an object store)."""
    filesystem, path = _filesystem(uri)
    return filesystem is None and os.path.islink(path)


def exists(uri: str) -> bool:
    """Whether anything (a file or a folder) is at ``uri``.

    Args:
        uri: a local path or a storage URI.

    Returns:
        ``True`` when something is there.

    Raises:
        CheckpointError: the storage of ``uri`` cannot be opened.
    """
    filesystem, path = _filesystem(uri)
    if filesystem is None:
        return os.path.exists(path)
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def list_names(uri: str) -> list[str]:
    """Names of the entries directly inside folder ``uri`` (empty if it does not exist)."""
    filesystem, path = _filesystem(uri)
    if filesystem is None:
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    selector = pafs.FileSelector(path, allow_not_found=True)
    return sorted(os.path.basename(info.path) for info in filesystem.get_file_info(selector))


def folder_entries(uri: str) -> list[str] | None:
    """Names directly inside folder ``uri``; ``None`` when nothing is there.

    Raises:
        NotADirectoryError: ``uri`` is a file.
    """
    filesystem, path = _filesystem(uri)
    if filesystem is None:
        found, folder = os.path.exists(path), os.path.isdir(path)
    else:
        kind = filesystem.get_file_info(path).type
        found, folder = kind != pafs.FileType.NotFound, kind == pafs.FileType.Directory
    if not found:
        return None
    if not folder:
        raise NotADirectoryError(f"{uri} is a file, not a folder")
    return list_names(uri)


def write_columns(uri: str, columns: dict[str, np.ndarray | list]) -> None:
    """Write a Parquet table of ``columns`` to ``uri``, atomically.

    ``columns`` maps each name to one value per row, all of one length; the table is for
    readers such as pandas, pyarrow and duckdb.

    Raises:
        ValueError: columns of different lengths or of values Parquet cannot hold.
    """
    try:
        table = pa.table({name: pa.array(values) for name, values in columns.items()})
    except (pa.ArrowException, TypeError) as error:
        raise ValueError(f"{uri}: {error_line(error)}") from None
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    write_bytes(uri, buffer.getvalue())


def check_writable(out: str) -> None:
    """Fail before any work when run folder ``out`` cannot take objects.

    Writes and deletes a small probe object, so a typo in a bucket name or missing
    credentials show up at once instead of at the first checkpoint, hours later.

    Raises:
        CheckpointError: ``out`` names no filesystem pyarrow knows.
        OSError: ``out`` cannot be written (one line).
    """
    uri = join(out, ".fooling-write-probe")
    try:
        write_bytes(uri, b"probe")
        delete(uri)
    except CheckpointError:
        raise
    except (OSError, pa.ArrowException) as error:
        raise OSError(f"--out {out} cannot be written: {error_line(error)}") from None


# --- reachability: storage that does not answer fails in seconds, in one line ------------------

# How long the check of a storage URI may take before the command gives up (seconds).
STORAGE_TIMEOUT_VARIABLE = "FOOLING_STORAGE_TIMEOUT"
DEFAULT_STORAGE_TIMEOUT_S = 10.0

# Run in a child process: a store with no route makes pyarrow's clients retry for many
# minutes inside C++ calls that neither a timeout nor Ctrl-C can cut short, while a child
# process can always be killed. It opens the filesystem and reads the entry's type.
_PROBE = """
import sys
import pyarrow.fs as pafs
try:
    filesystem, path = pafs.FileSystem.from_uri(sys.argv[1])
    filesystem.get_file_info(path)
except Exception as error:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    print(lines[0] if lines else type(error).__name__)
    sys.exit(1)
"""


class StorageError(OSError):
    """A storage location that cannot be reached or used (one line)."""


def is_uri(location: str) -> bool:
    """``True`` for a filesystem URI (``s3://``, ``gs://``, ...), ``False`` for a local path."""
    return "://" in location and not location.startswith("file://")


def storage_timeout() -> float:
    """Seconds a storage check may take: ``$FOOLING_STORAGE_TIMEOUT``, else 10.

    Raises:
        ValueError: the variable is not a positive number.
    """
    text = os.environ.get(STORAGE_TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_STORAGE_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ValueError(f"{STORAGE_TIMEOUT_VARIABLE}={text!r}: expected a positive number of seconds")
    return value


def check_location(location: str, what: str = "--out", timeout: float | None = None) -> None:
    """Fail within ``timeout`` seconds, in one line, when storage URI ``location`` does not answer.

    Local paths are left to the command (nothing to wait for). A URI is opened and its
    entry looked up in a child process that is killed when the time is up, so the
    check ends on time, and Ctrl-C ends it at once, whatever the store does.

    Args:
        location: run folder or output location, a local path or a URI.
        what: how the command line named it, for the message (``--out``, ``--resume``).
        timeout: seconds to wait (default: :func:`storage_timeout`).

    Raises:
        StorageError: no answer in time, or the store refused (unknown scheme, bad
            credentials, no such bucket, connection refused...).
    """
    if not is_uri(location):
        return
    seconds = storage_timeout() if timeout is None else timeout
    command = [sys.executable, "-c", _PROBE, location]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise StorageError(
            f"{what} {location}: no answer from the store within {seconds:g} s (check the endpoint, "
            f"network and credentials; {STORAGE_TIMEOUT_VARIABLE} sets the wait)"
        ) from None
    if result.returncode != 0:
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        reason = lines[0].strip()[:240] if lines else f"the check exited with code {result.returncode}"
        raise StorageError(f"{what} {location} cannot be used: {reason}")


# --- writing -----------------------------------------------------------------------------


def thumbnail_png(image: np.ndarray, max_side: int = 128) -> bytes:
    """PNG bytes of ``image`` ``(height, width)`` or ``(height, width, 3)`` uint8, at most ``max_side``."""
    picture = Image.fromarray(image)
    if max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


class ThumbnailCache:
    """PNG thumbnails of the cells earlier checkpoints of one run wrote.

    A checkpoint then renders and encodes only the cells whose elite changed since (cheap for
    a 1,000-class run where few cells change between checkpoints).

    A cell's thumbnail is kept with the id of the individual it shows: ids are never reused
    within a run, so the same id is the same genome, hence the same image.

    Args:
        thumbnails: cell -> ``(individual id, PNG bytes)`` already written (a resumed run's
            :attr:`Checkpoint.thumbnails`); none by default.

    Attributes:
        rendered: cells rendered so far (for tests and logs).
    """

    def __init__(self, thumbnails: dict[int, tuple[int, bytes]] | None = None) -> None:
        self._png: dict[int, tuple[int, bytes]] = dict(thumbnails or {})
        self.rendered = 0

    def thumbnails(
        self,
        cells: np.ndarray,
        individual_ids: np.ndarray,
        genomes: GenomeBatch,
        render: Callable[[GenomeBatch], np.ndarray],
    ) -> list[bytes]:
        """The PNG of each of ``cells``, rendering only those not cached for their individual.

        Args:
            cells: ``(n,)`` occupied cells, ascending.
            individual_ids: ``(n,)`` id of each cell's elite.
            genomes: the archive's genomes, one row per cell (only the stale cells' rows are
                copied out and rendered).
            render: genomes -> ``(m, height, width[, 3])`` uint8 images.
        """
        stale = [
            row
            for row, (cell, ident) in enumerate(zip(cells.tolist(), individual_ids.tolist()))
            if self._png.get(cell, (None, b""))[0] != ident
        ]
        # In batches, so that a first checkpoint of 1,000 ImageNet genomes never copies them all.
        step = max(1, ROW_GROUP_GENOME_BYTES // max(1, _genome_row_bytes(genomes)))
        for start in range(0, len(stale), step):
            rows = stale[start : start + step]
            images = render(genomes.take(cells[np.asarray(rows, dtype=np.int64)]))
            for row, image in zip(rows, images):
                self._png[int(cells[row])] = (int(individual_ids[row]), thumbnail_png(image))
            self.rendered += len(rows)
        return [self._png[int(cell)][1] for cell in cells]


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


def _stored_cells(column: pa.ChunkedArray) -> np.ndarray:
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


def _decode_genome_field(column: pa.ChunkedArray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`genome_columns` for one field: ``(rows, *shape)`` of ``dtype`` (native order).

    Raises:
        ValueError: missing cells, or booleans that are neither 0 nor 1.
    """
    raw = _stored_cells(column)
    rows, item = len(raw), dtype.itemsize
    elements = int(np.prod(shape, dtype=np.int64))
    if dtype.kind == "b" and raw.size and raw.max() > 1:
        raise ValueError("booleans other than 0 and 1")
    values = np.ascontiguousarray(raw.reshape(rows, item, elements).transpose(0, 2, 1))
    return values.view(dtype).reshape(rows, *shape).astype(dtype.newbyteorder("="), copy=False)


def checkpoint_table(
    checkpoint: Checkpoint,
    images: np.ndarray | None = None,
    *,
    thumbnails: list[bytes] | None = None,
    rows: slice = slice(None),
) -> pa.Table:
    """The Parquet table of ``checkpoint`` (format version :data:`FORMAT_VERSION`).

    Args:
        checkpoint: the run's state to store (config, generation, model, archive).
        images: ``(num_occupied, height, width[, 3])`` uint8 renderings of the occupied
            cells in ascending cell order, stored as PNG; ``None`` stores no images.
        thumbnails: the PNGs themselves, one per occupied cell (instead of ``images``).
        rows: which of the occupied cells (in ascending order) the table holds; its schema
            and metadata are those of the whole checkpoint whatever the slice, so the tables
            of consecutive slices are row groups of one file (see :func:`write_checkpoint`).
    """
    archive = checkpoint.archive
    occupied = archive.occupied_cells()
    cells = occupied[rows]
    genomes = archive.genomes.take(cells) if archive.genomes is not None and len(occupied) else None
    if thumbnails is not None:
        thumbnails = thumbnails[rows]
    elif images is not None:
        thumbnails = [thumbnail_png(image) for image in images[rows]]
    else:
        thumbnails = [None] * len(cells)
    columns = {
        "class_id": pa.array(cells, pa.int32()),
        "class_name": pa.array([archive.class_names[c] for c in cells], pa.string()),
        "fitness": pa.array(archive.fitness[cells], pa.float32()),
        "individual_id": pa.array(archive.individual_id[cells], pa.int64()),
        "parent_id": pa.array(archive.parent_id[cells], pa.int64()),
        "parent_cell": pa.array(archive.parent_cell[cells], pa.int32()),
        "birth_generation": pa.array(archive.birth_generation[cells], pa.int32()),
        "image_png": pa.array(thumbnails, pa.binary()),
    }
    fields = None
    if genomes is not None:
        genome_data, fields = genome_columns(genomes)
        columns.update(genome_data)
    metadata = {
        "format_version": FORMAT_VERSION,
        "config": json.loads(checkpoint.config.to_json()),
        "generation": checkpoint.generation,
        "next_id": checkpoint.next_id,
        # Every random draw is a pure function of (seed, generation, batch index): the
        # seed and the generation above are the whole RNG state.
        "rng": {
            "kind": "numpy-seed-sequence",
            "seed": checkpoint.config.seed,
            "streams": "(seed, generation, batch_index, stream)",
        },
        "model": checkpoint.model,
        "weights_hash": checkpoint.weights_hash,
        "model_source": checkpoint.model_source,
        "genome_class": type(archive.genomes).__name__ if archive.genomes is not None else None,
        "genome_fields": fields,
        "class_names": list(archive.class_names),
        "rows": len(occupied),
    }
    table = pa.table(columns)
    text = json.dumps(metadata).encode()
    return table.replace_schema_metadata(
        {METADATA_KEY: text, METADATA_CHECKSUM_KEY: hashlib.sha256(text).hexdigest().encode()}
    )


def _genome_row_bytes(genomes: GenomeBatch | None) -> int:
    """Bytes of one genome of ``genomes`` (all fields); 0 for none."""
    if genomes is None:
        return 0
    return sum(array[0].nbytes if len(array) else 0 for array in genomes.arrays().values())


def checkpoint_name(generation: int) -> str:
    """The file name of generation ``generation``'s checkpoint, e.g. ``gen-000042.parquet``."""
    return f"gen-{generation:06d}.parquet"


def write_checkpoint(
    out: str,
    checkpoint: Checkpoint,
    images: np.ndarray | None = None,
    *,
    render: Callable[[GenomeBatch], np.ndarray] | None = None,
    thumbnails: ThumbnailCache | None = None,
) -> str:
    """Write ``checkpoint`` under ``out/checkpoints`` and point ``LATEST`` at it.

    Args:
        out: the run folder: a local path or a storage URI.
        checkpoint: the run's state to store (config, generation, model, archive).
        images: ``(num_occupied, height, width[, 3])`` uint8 images of the occupied cells in
            ascending cell order, stored as PNG thumbnails; ``None``: see ``render``.
        render: genomes -> uint8 images; renders the thumbnails when ``images`` is ``None``
            (only the cells ``thumbnails`` does not hold). Neither: no thumbnails.
        thumbnails: the run's cache of earlier checkpoints' thumbnails (with ``render``).

    Returns:
        The checkpoint's URI.
    """
    pngs = None
    archive = checkpoint.archive
    if images is None and render is not None and archive.genomes is not None:
        cells = archive.occupied_cells()
        cache = thumbnails if thumbnails is not None else ThumbnailCache()
        pngs = cache.thumbnails(cells, archive.individual_id[cells], archive.genomes, render)
    # Row groups of at most ROW_GROUP_GENOME_BYTES of genomes, each converted, compressed and
    # written before the next is built: a checkpoint never holds a second copy of the archive
    # in memory (1,000 direct ImageNet genomes are 602 MB).
    count = len(archive.occupied_cells())
    step = max(1, ROW_GROUP_GENOME_BYTES // max(1, _genome_row_bytes(archive.genomes)))

    def produce(stream: BinaryIO) -> None:
        writer = None
        try:
            for start in range(0, max(count, 1), step):
                table = checkpoint_table(checkpoint, images, thumbnails=pngs, rows=slice(start, start + step))
                if writer is None:
                    # Genome bytes are nearly unique per row: a dictionary page would only cost time.
                    others = [name for name in table.column_names if not name.startswith(GENOME_PREFIX)]
                    writer = pq.ParquetWriter(
                        stream,
                        table.schema,
                        compression="zstd",
                        use_dictionary=others,
                        write_page_checksum=True,
                    )
                writer.write_table(table)
                del table  # before the next row group is built
        finally:
            if writer is not None:
                writer.close()

    uri = join(out, "checkpoints", checkpoint_name(checkpoint.generation))
    write_streamed(uri, produce, root=out)
    latest = (checkpoint_name(checkpoint.generation) + "\n").encode()
    write_bytes(join(out, "checkpoints", "LATEST"), latest, root=out)
    return uri


def _readable_footer(uri: str) -> bool:
    """True when ``uri`` is a Parquet file whose footer and run metadata read (cheap: no data).

    A local entry that is not a regular file (a symbolic link among them) is never good.
    """
    filesystem, path = _filesystem(uri)
    try:
        if filesystem is None:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                return False
            schema = pq.read_schema(path)
        else:
            with filesystem.open_input_file(path) as handle:
                schema = pq.read_schema(handle)
        metadata = json.loads(schema.metadata[METADATA_KEY])
        return metadata.get("format_version") in READABLE_VERSIONS
    except Exception:  # any unreadable file is simply not counted as good
        return False


def delete(uri: str, *, root: str | None = None) -> None:
    """Delete the file ``uri`` (nothing if it is already gone), never following a link.

    A local symbolic link is removed itself; a folder is left alone.

    Args:
        uri: the file: a local path or a storage URI.
        root: the run folder ``uri`` lies in (default: the folder of ``uri``); folders below
            it that are links are refused, not followed.

    Raises:
        UnsafePathError: a folder below ``root`` is a symbolic link.
    """
    filesystem, path = _filesystem(uri)
    if filesystem is not None:
        with contextlib.suppress(FileNotFoundError):
            filesystem.delete_file(path)
        return
    base, folders, name = _parts_below(path, root)
    try:
        folder = _open_folder(base, folders, create=False)
    except FileNotFoundError:
        return
    try:
        if not stat.S_ISDIR(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode):
            os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        pass
    finally:
        os.close(folder)


def prune_checkpoints(out: str, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest readable checkpoints of run ``out``.

    Newest first, checkpoints whose footer reads count as good until ``keep`` are found;
    only checkpoints older than the oldest of those are deleted, so the newest good one
    (and anything newer, readable or not) always stays. ``keep <= 0`` deletes nothing.

    Returns:
        The URIs deleted.
    """
    if keep <= 0:
        return []
    uris = checkpoint_uris(out)
    good = 0
    for index, uri in enumerate(uris):
        good += _readable_footer(uri)
        if good == keep:
            doomed = uris[index + 1 :]
            break
    else:
        return []
    try:
        latest = read_bytes(join(out, "checkpoints", "LATEST")).decode().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        latest = ""
    deleted = []
    for uri in doomed:
        if uri.rsplit("/", 1)[-1] == latest:
            continue
        delete(uri, root=out)
        deleted.append(uri)
    if deleted:
        logger.debug("deleted %d old checkpoint(s) of %s (--keep-checkpoints %d)", len(deleted), out, keep)
    return deleted


def write_stats(out: str, records: list[dict]) -> None:
    """Write the per-generation statistics table ``out/stats.parquet``."""
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), buffer, write_page_checksum=True)
    write_bytes(join(out, "stats.parquet"), buffer.getvalue(), root=out)


# --- reading -----------------------------------------------------------------------------


# Bounds for the sizes a checkpoint may declare: besides its genome, a row holds ids, a class
# name and a PNG thumbnail of at most 128x128 pixels.
ROW_OVERHEAD_LIMIT = 256 * 1024
FILE_OVERHEAD_LIMIT = 16 * 1024 * 1024
# What Parquet adds to a fixed-width column's values: page headers and definition levels.
GENOME_PAGE_SLACK = 64 * 1024
ROW_PAGE_SLACK = 64


@dataclasses.dataclass
class CheckpointRows:
    """One checkpoint file as read (once).

    It holds the run metadata, one dict per occupied cell, and the checkpoint itself where
    its genome class is known.

    Attributes:
        uri: the file.
        metadata: the run metadata of the schema (config, generation, model, ...).
        rows: one dict per occupied cell in ascending cell order, keys ``class_id``,
            ``class_name``, ``fitness``, ``individual_id``, ``parent_id``, ``parent_cell``,
            ``birth_generation`` and ``image_png`` (PNG bytes or ``None``); no genomes.
        checkpoint: the checkpoint with its genomes, or ``None`` when this build does not
            know the genome class (then only the rows and their thumbnails are there).
    """

    uri: str
    metadata: dict
    rows: list[dict]
    checkpoint: Checkpoint | None


def _run_shapes(metadata: dict) -> dict[str, tuple[np.dtype, tuple[int, ...]]] | None:
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


def _declared_fields(metadata: dict) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
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


def _describe(fields: dict[str, tuple[np.dtype, tuple[int, ...]]]) -> str:
    return ", ".join(f"{name} {shape} {np.dtype(dtype).name}" for name, (dtype, shape) in fields.items())


# --- the Parquet footer, read without pyarrow's column chunk objects ----------------------------
#
# pyarrow (26) builds a column chunk's metadata object where a C++ exception cannot be caught:
# a footer whose level histograms disagree with its schema (one flipped bit of a repetition
# type does it) aborts the whole process on ``row_group(i).column(j)``. The sizes checked
# before reading are therefore read here, from the footer's Thrift (compact protocol); pyarrow's
# own read of such a file raises an ordinary exception.

_THRIFT_DEPTH_LIMIT = 32


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise ValueError("a damaged footer (a number runs past its end)")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _zigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def _thrift_value(data: bytes, position: int, kind: int, depth: int) -> tuple[object, int]:
    """One compact-protocol value of type ``kind`` at ``position``: ``(value, next position)``."""
    if depth > _THRIFT_DEPTH_LIMIT:
        raise ValueError("a damaged footer (nested too deep)")
    if kind in (1, 2, 3):  # a boolean in a list, or a byte
        if position >= len(data):
            raise ValueError("a damaged footer (truncated)")
        return data[position], position + 1
    if kind in (4, 5, 6):  # i16, i32, i64
        value, position = _varint(data, position)
        return _zigzag(value), position
    if kind == 7:  # double
        if position + 8 > len(data):
            raise ValueError("a damaged footer (truncated)")
        return None, position + 8
    if kind == 8:  # binary
        size, position = _varint(data, position)
        if position + size > len(data):
            raise ValueError("a damaged footer (a string runs past its end)")
        return data[position : position + size], position + size
    if kind in (9, 10):  # list, set
        if position >= len(data):
            raise ValueError("a damaged footer (truncated)")
        header = data[position]
        size, element, position = header >> 4, header & 0x0F, position + 1
        if size == 15:
            size, position = _varint(data, position)
        if size > len(data) - position:  # every element takes a byte at least
            raise ValueError("a damaged footer (a list longer than the footer)")
        items = []
        for _ in range(size):
            item, position = _thrift_value(data, position, element, depth + 1)
            items.append(item)
        return items, position
    if kind == 11:  # map
        size, position = _varint(data, position)
        if size == 0:
            return [], position
        if position >= len(data) or 2 * size > len(data) - position:
            raise ValueError("a damaged footer (a map longer than the footer)")
        key_kind, value_kind, position = data[position] >> 4, data[position] & 0x0F, position + 1
        pairs = []
        for _ in range(size):
            key, position = _thrift_value(data, position, key_kind, depth + 1)
            value, position = _thrift_value(data, position, value_kind, depth + 1)
            pairs.append((key, value))
        return pairs, position
    if kind == 12:
        return _thrift_struct(data, position, depth + 1)
    raise ValueError(f"a damaged footer (Thrift type {kind})")


def _thrift_struct(data: bytes, position: int, depth: int = 0) -> tuple[dict[int, object], int]:
    """A compact-protocol struct at ``position``: ``({field id: value}, next position)``."""
    fields: dict[int, object] = {}
    last = 0
    while True:
        if position >= len(data):
            raise ValueError("a damaged footer (truncated)")
        header = data[position]
        position += 1
        if header == 0:
            return fields, position
        kind, delta = header & 0x0F, header >> 4
        if delta:
            field = last + delta
        else:
            value, position = _varint(data, position)
            field = _zigzag(value)
        last = field
        if kind in (1, 2):  # a boolean field holds its value in its type
            fields[field] = kind == 1
            continue
        fields[field], position = _thrift_value(data, position, kind, depth)


def _footer_chunks(data: bytes) -> list[tuple[int, list[tuple[str, int]]]]:
    """Each row group of Parquet file ``data``: its rows, and each column chunk's name and size.

    The size is the chunk's declared ``total_uncompressed_size``.

    Raises:
        ValueError: not a Parquet file, or a footer that is not what Parquet writes.
    """
    if len(data) < 12 or data[-4:] != b"PAR1":
        raise ValueError("not a Parquet file")
    length = int.from_bytes(data[-8:-4], "little")
    if length > len(data) - 12:
        raise ValueError("a damaged footer (longer than the file)")
    footer, _ = _thrift_struct(data[-8 - length : -8], 0)
    groups = []
    for group in footer.get(4) or []:  # FileMetaData.row_groups
        columns, rows = (group.get(1), group.get(3)) if isinstance(group, dict) else (None, None)
        if not isinstance(columns, list) or not isinstance(rows, int) or rows < 0:
            raise ValueError("a damaged footer (a row group)")
        chunks = []
        for chunk in columns:  # ColumnChunk.meta_data: path_in_schema, total_uncompressed_size
            meta = chunk.get(3) if isinstance(chunk, dict) else None
            path = meta.get(3) if isinstance(meta, dict) else None
            size = meta.get(6) if isinstance(meta, dict) else None
            if not isinstance(path, list) or not all(isinstance(part, bytes) for part in path):
                raise ValueError("a damaged footer (a column chunk)")
            if not isinstance(size, int) or size < 0:
                raise ValueError("a damaged footer (a column chunk's size)")
            chunks.append((".".join(part.decode() for part in path), size))
        groups.append((rows, chunks))
    return groups


def _damaged(uri: str, what: str) -> CheckpointError:
    return CheckpointError(f"{uri} is a damaged checkpoint: {what}")


def _is_count(value: object) -> bool:
    """A non-negative integer of JSON (``True`` is no count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_metadata(uri: str, metadata: dict, rows: int) -> None:
    """Type-check the run metadata of checkpoint ``uri`` (its footer declares ``rows`` rows).

    Raises:
        CheckpointError: a field of the wrong type or out of range (naming the file and field).
    """
    for name in ("generation", "next_id"):
        if not _is_count(metadata.get(name)):
            raise _damaged(uri, f"its {name} is {metadata.get(name)!r}, expected a non-negative integer")
    names = metadata.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise _damaged(uri, "its class_names are not a list of names")
    for name in ("model", "weights_hash"):
        if not isinstance(metadata.get(name), str):
            raise _damaged(uri, f"its {name} is {metadata.get(name)!r}, expected a string")
    if not isinstance(metadata.get("config"), dict):
        raise _damaged(uri, "its config is not a JSON object")
    if not isinstance(metadata.get("model_source"), dict | None):
        raise _damaged(uri, "its model_source is not a JSON object")
    if not isinstance(metadata.get("genome_class"), str | None):
        raise _damaged(uri, f"its genome_class is {metadata.get('genome_class')!r}, expected a name")
    if "rows" in metadata and metadata["rows"] != rows:
        raise _damaged(uri, f"its footer declares {rows} rows, its run metadata {metadata['rows']!r}")
    if rows > len(names):
        raise _damaged(uri, f"{rows} rows for {len(names)} classes")


# Each row column: the Arrow types it may have (by predicate) and what they are, in words.
_ROW_TYPES: dict[str, tuple[Callable[[pa.DataType], bool], str]] = {
    "class_id": (pa.types.is_integer, "integers"),
    "class_name": (lambda kind: pa.types.is_string(kind) or pa.types.is_large_string(kind), "strings"),
    "fitness": (pa.types.is_floating, "floats"),
    "individual_id": (pa.types.is_integer, "integers"),
    "parent_id": (pa.types.is_integer, "integers"),
    "parent_cell": (pa.types.is_integer, "integers"),
    "birth_generation": (pa.types.is_integer, "integers"),
    "image_png": (lambda kind: pa.types.is_binary(kind) or pa.types.is_large_binary(kind), "bytes"),
}
# Columns every checkpoint has (image_png may be missing: no thumbnails).
_REQUIRED_ROWS = ("class_id", "class_name", "fitness", "individual_id", "parent_id", "parent_cell",
                  "birth_generation")  # fmt: skip


def _check_rows(uri: str, table: pa.Table, metadata: dict) -> None:
    """Type- and range-check every row field of checkpoint ``uri``, as read into ``table``.

    class_id: distinct integers of the run's classes; class_name: that class's name;
    fitness: finite floats in [0, 1]; individual_id: integers below next_id; parent_id:
    -1 or an individual; parent_cell: -1 or a class; birth_generation: non-negative
    integers; image_png: PNG bytes or nothing.

    Raises:
        CheckpointError: a missing column, or a field of the wrong type or out of range
            (naming the file and the field).
    """
    names = metadata["class_names"]
    required = _REQUIRED_ROWS + (("image_png",) if metadata["format_version"] >= 3 else ())
    for name, (accepts, kind) in _ROW_TYPES.items():
        if name not in table.column_names:
            if name in required:
                raise _damaged(uri, f"no column {name}")
            continue
        column = table.column(name)
        if not accepts(column.type):
            raise _damaged(uri, f"{name} holds {column.type}, expected {kind}")
        if name != "image_png" and column.null_count:
            raise _damaged(uri, f"{name} has missing values")

    def values(name: str) -> np.ndarray:
        return table.column(name).to_numpy()

    def out_of_range(name: str, bad: np.ndarray, expected: str) -> None:
        if bad.any():
            found = values(name)[bad][0].item()
            raise _damaged(uri, f"{name} {found!r} in row {int(np.flatnonzero(bad)[0])}, expected {expected}")

    cells = values("class_id")
    out_of_range("class_id", (cells < 0) | (cells >= len(names)), f"a class id in [0, {len(names) - 1}]")
    if len(np.unique(cells)) != len(cells):
        raise _damaged(uri, "class_id holds a class twice")
    fitness = values("fitness")
    out_of_range("fitness", ~((fitness >= 0) & (fitness <= 1)), "a finite float in [0, 1]")
    next_id = metadata["next_id"]
    ids = values("individual_id")
    out_of_range("individual_id", (ids < 0) | (ids >= next_id), f"an id in [0, next_id {next_id})")
    parents = values("parent_id")
    out_of_range("parent_id", (parents < -1) | (parents >= next_id), f"-1 or an id below next_id {next_id}")
    parent_cells = values("parent_cell")
    out_of_range("parent_cell", (parent_cells < -1) | (parent_cells >= len(names)), "-1 or a class id")
    out_of_range("birth_generation", values("birth_generation") < 0, "a non-negative integer")
    stored = table.column("class_name").to_pylist()
    for row, (cell, name) in enumerate(zip(cells.tolist(), stored)):
        if name != names[cell]:
            raise _damaged(uri, f"class_name {name!r} in row {row}, expected {names[cell]!r} (class {cell})")
    if "image_png" in table.column_names:
        for row, png in enumerate(table.column("image_png").to_pylist()):
            if png is not None and not png.startswith(PNG_SIGNATURE):
                raise _damaged(uri, f"image_png in row {row} is not a PNG")


def _check_genome_sums(uri: str, version: int, table: pa.Table, fields: list[str], cells: np.ndarray) -> None:
    """Check each row's genome bytes against its SHA-256 (column :data:`CHECKSUM_COLUMN`).

    Args:
        uri: the checkpoint, for messages.
        version: its format version (before 3: no checksums to check).
        table: its columns as read, the genome fields' among them.
        fields: the genome fields in ``genome_fields`` order.
        cells: each row's class id, for messages.

    Raises:
        CheckpointError: a genome whose bytes do not match (bit rot), or a damaged checksum column.
    """
    if CHECKSUM_COLUMN not in table.column_names:
        if version >= 3:
            raise _damaged(uri, f"no column {CHECKSUM_COLUMN}")
        logger.debug("%s has no genome checksums (format version %d): not verified", uri, version)
        return
    column = table.column(CHECKSUM_COLUMN)
    if column.type != pa.binary(32):
        raise _damaged(uri, f"{CHECKSUM_COLUMN} holds {column.type}, expected 32-byte SHA-256 digests")
    stored = _stored_cells(column)
    genomes = [_stored_cells(table.column(GENOME_PREFIX + name)) for name in fields]
    found = genome_checksums(genomes, len(stored))
    bad = np.flatnonzero((found != stored).any(axis=1))
    if len(bad):
        raise _damaged(
            uri,
            f"the genome of class {int(cells[bad[0]])} does not match its SHA-256 checksum "
            f"({len(bad)} genome{'s' if len(bad) > 1 else ''} differ)",
        )


def _open_checkpoint(uri: str) -> tuple[pq.ParquetFile, dict]:
    """Read ``uri`` (once) and check everything its footer declares, before any column is decompressed.

    Whatever fails in a damaged footer (a name that is not UTF-8, a number out of range...)
    is a :class:`CheckpointError`, so that the previous checkpoint is tried.

    Returns:
        The Parquet file (in memory) and its run metadata.

    Raises:
        CheckpointError: see :func:`_open_checked`.
    """
    try:
        return _open_checked(uri)
    except (CheckpointError, MemoryError):
        raise
    except Exception as error:
        raise CheckpointError(f"{uri} is not a readable checkpoint ({error_line(error)})") from None


def _open_checked(uri: str) -> tuple[pq.ParquetFile, dict]:
    """Read ``uri`` (once) and check everything its footer declares, before any column is decompressed.

    The checks: format version, the genome fields' dtypes and shapes exactly against the run's
    config (version 2), each genome column's width, and every column's uncompressed size.

    Returns:
        The Parquet file (in memory) and its run metadata.

    Raises:
        CheckpointError: missing, unreadable, of another version, or declaring genomes or
            sizes its run cannot have (one line, naming the file).
    """
    try:
        # The file is read once; every page's CRC (format 3 writes them) is checked as it is read.
        data = read_bytes(uri)
        parquet = pq.ParquetFile(io.BytesIO(data), page_checksum_verification=True)
        stored = parquet.schema_arrow.metadata or {}
        text = stored[METADATA_KEY]
        checksum = stored.get(METADATA_CHECKSUM_KEY)
        if checksum is not None and hashlib.sha256(text).hexdigest().encode() != checksum:
            raise _damaged(uri, "its run metadata does not match its SHA-256 checksum")
        metadata = json.loads(text)
    except FileNotFoundError:
        raise CheckpointError(f"{uri}: no such checkpoint") from None
    except CheckpointError:
        raise
    except Exception as error:
        raise CheckpointError(f"{uri} is not a readable checkpoint ({error_line(error)})") from None
    if not isinstance(metadata, dict) or metadata.get("format_version") not in READABLE_VERSIONS:
        version = metadata.get("format_version") if isinstance(metadata, dict) else None
        raise CheckpointError(
            f"{uri}: format version {version}, expected one of {', '.join(map(str, READABLE_VERSIONS))}"
        )
    if checksum is None and metadata["format_version"] >= 3:
        logger.debug("%s has no checksum of its run metadata (edited by hand?): not verified", uri)
    footer = parquet.metadata
    rows = footer.num_rows
    _check_metadata(uri, metadata, rows)
    widths: dict[str, int] = {}
    if metadata["format_version"] >= 2 and rows:
        try:
            declared = _declared_fields(metadata)
            expected = _run_shapes(metadata)
        except Exception as error:
            raise CheckpointError(f"{uri} is corrupt ({error_line(error)})") from None
        if expected is not None and declared != expected:
            raise CheckpointError(
                f"{uri} declares genomes of {_describe(declared)}, but its run's config makes "
                f"{_describe(expected)}; refusing to read it"
            )
        schema = parquet.schema
        for name, (dtype, shape) in declared.items():
            width = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            index = schema.names.index(GENOME_PREFIX + name) if GENOME_PREFIX + name in schema.names else -1
            column = schema.column(index) if index >= 0 else None
            if column is None or column.physical_type != "FIXED_LEN_BYTE_ARRAY" or column.length != width:
                found = "no such column" if column is None else f"{column.physical_type} {column.length}"
                raise CheckpointError(
                    f"{uri}: column {GENOME_PREFIX}{name} should hold {width}-byte genomes ({found})"
                )
            widths[GENOME_PREFIX + name] = width
    if metadata["format_version"] == 1:
        limit = genome_byte_limit(metadata)
        widths["genome"] = limit  # a bound: version 1 stored .npz archives of any size
    # Sizes the footer declares are checked before any column is decompressed, so a small
    # crafted file cannot make us allocate gigabytes.
    other = 0
    for group_rows, chunks in _footer_chunks(data):
        for name, size in chunks:
            if name in widths:
                limit = group_rows * (widths[name] + ROW_PAGE_SLACK) + GENOME_PAGE_SLACK
                if size > limit:
                    raise CheckpointError(
                        f"{uri} declares {size:,} bytes uncompressed for {name}, "
                        f"more than {limit:,} for {group_rows} genomes of its run; refusing it"
                    )
            else:
                other += size
    limit = rows * ROW_OVERHEAD_LIMIT + FILE_OVERHEAD_LIMIT
    if other > limit:
        raise CheckpointError(
            f"{uri} declares {other:,} bytes uncompressed, more than {limit:,} for {rows} elites "
            "of its run; refusing to read it"
        )
    return parquet, metadata


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
                        f"genome {index} declares {_describe(found)}, but its run's config makes "
                        f"{_describe(expected)}"
                    )
        except (zipfile.BadZipFile, EOFError, OSError) as error:
            raise ValueError(f"genome {index} is unreadable: {error}") from None


ROW_COLUMNS = (
    "class_id",
    "class_name",
    "fitness",
    "individual_id",
    "parent_id",
    "parent_cell",
    "birth_generation",
    "image_png",
)


def _read(uri: str, genome_classes: dict[str, type[GenomeBatch]] | None) -> CheckpointRows:
    """Read checkpoint ``uri`` once; rebuild its genomes when ``genome_classes`` knows their class.

    Raises:
        CheckpointError: unreadable, truncated, inconsistent, or declaring what its run cannot have.
    """
    parquet, metadata = _open_checkpoint(uri)
    genome_class = (genome_classes or {}).get(str(metadata.get("genome_class")))
    version = metadata["format_version"]
    names = parquet.schema_arrow.names
    wanted = [name for name in ROW_COLUMNS if name in names]
    if genome_class is not None:
        wanted += [name for name in names if name == "genome" or name.startswith(GENOME_PREFIX)]
    try:
        table = parquet.read(columns=wanted)
    except Exception as error:
        raise CheckpointError(f"{uri} is not a readable checkpoint ({error_line(error)})") from None
    if table.num_rows != parquet.metadata.num_rows:  # a row group's count damaged in the footer
        raise _damaged(uri, f"{table.num_rows} rows read of the {parquet.metadata.num_rows} it declares")
    try:
        _check_rows(uri, table, metadata)
        config = RunConfig.from_json(json.dumps(metadata["config"]))
        archive = ClassArchive(metadata["class_names"])
        cells = table.column("class_id").to_numpy()
        fitness = table.column("fitness").to_numpy()
        order = np.argsort(cells, kind="stable")
        columns = {name: table.column(name).to_pylist() for name in ROW_COLUMNS if name in names}
        rows = [{name: columns[name][i] for name in columns} for i in order.tolist()]
        if genome_class is None:
            return CheckpointRows(uri, metadata, rows, None)
        if len(cells):
            if version == 1:
                blobs = table.column("genome").to_pylist()
                check_genome_blobs(blobs, genome_byte_limit(metadata), _run_shapes(metadata))
                genomes = genome_class.from_row_bytes(blobs)
            else:
                declared = _declared_fields(metadata)
                expected = [field.name for field in dataclasses.fields(genome_class)]
                if sorted(declared) != sorted(expected):
                    raise ValueError(f"genome fields {sorted(declared)} instead of {sorted(expected)}")
                _check_genome_sums(uri, version, table, list(declared), cells)  # before any genome is used
                genomes = genome_class(**{
                    name: _decode_genome_field(table.column(GENOME_PREFIX + name), *declared[name])
                    for name in expected
                })  # fmt: skip
            archive.genomes = genomes.take(np.zeros(archive.num_cells, dtype=np.int64))
            archive.genomes.assign(cells, genomes)
        archive.fitness[cells] = fitness
        archive.occupied[cells] = True
        for name in ("individual_id", "parent_id", "parent_cell", "birth_generation"):
            getattr(archive, name)[cells] = table.column(name).to_numpy()
        checkpoint = Checkpoint(
            config=config,
            generation=int(metadata["generation"]),
            next_id=int(metadata["next_id"]),
            model=str(metadata["model"]),
            weights_hash=str(metadata["weights_hash"]),
            archive=archive,
            path=uri,
            model_source=metadata.get("model_source"),
            thumbnails={
                row["class_id"]: (row["individual_id"], row["image_png"])
                for row in rows
                if row.get("image_png")
            },
        )
        return CheckpointRows(uri, metadata, rows, checkpoint)
    except CheckpointError:
        raise
    except Exception as error:
        raise CheckpointError(f"{uri} is corrupt ({error_line(error)})") from None


def read_checkpoint_file(uri: str, genome_classes: dict[str, type[GenomeBatch]]) -> Checkpoint:
    """Read one checkpoint file, checking everything it holds.

    Args:
        uri: the checkpoint file: a local path or a storage URI.
        genome_classes: genome class name -> class, for rebuilding genomes.

    Returns:
        The checkpoint, with its archive and genomes.

    Raises:
        CheckpointError: unreadable, truncated, inconsistent, or of a genome class not in
            ``genome_classes``.
    """
    contents = _read(uri, genome_classes)
    if contents.checkpoint is None:
        kind = contents.metadata.get("genome_class")
        raise CheckpointError(f"{uri} holds genomes of an unknown kind ({kind})")
    return contents.checkpoint


def checkpoint_uris(out: str) -> list[str]:
    """Checkpoint files under ``out/checkpoints``, newest first."""
    folder = join(out, "checkpoints")
    names = [name for name in list_names(folder) if CHECKPOINT_PATTERN.match(name)]
    return [join(folder, name) for name in sorted(names, reverse=True)]


def _newest_good(out: str, read):
    """``read(uri)`` of the newest checkpoint it accepts: LATEST's, then newest first.

    Each one skipped (unreadable, damaged, or a symbolic link: never followed inside a run
    folder) is logged as a warning naming it; nothing is deleted or rewritten.
    """
    if not is_uri(out) and Path(out).is_file():
        raise CheckpointError(f"{out} is a file, not a run folder")
    candidates = checkpoint_uris(out)
    pointer = join(out, "checkpoints", "LATEST")
    try:
        latest = "" if is_link(pointer) else read_bytes(pointer).decode().strip()
        if CHECKPOINT_PATTERN.match(latest):
            preferred = join(out, "checkpoints", latest)
            candidates = [preferred] + [uri for uri in candidates if uri != preferred]
    except (OSError, UnicodeDecodeError):
        pass
    if not candidates:
        raise CheckpointError(
            f"{out} holds no checkpoint (expected {join(out, 'checkpoints', 'gen-*.parquet')})"
        )
    problems = []
    for uri in candidates:
        try:
            if is_link(uri):
                raise CheckpointError(f"{uri} is a symbolic link (never followed inside a run folder)")
            return read(uri)
        except CheckpointError as error:
            logger.warning("skipping %s", error)
            problems.append(str(error))
    raise CheckpointError(f"no readable checkpoint in {out}: {problems[0]}")


def read_latest_checkpoint(out: str, genome_classes: dict[str, type[GenomeBatch]]) -> Checkpoint:
    """The newest good checkpoint of run ``out`` (falling back past corrupt ones).

    Raises:
        CheckpointError: the run has no readable checkpoint.
    """
    return _newest_good(out, lambda uri: read_checkpoint_file(uri, genome_classes))


def read_latest_rows(out: str, genome_classes: dict[str, type[GenomeBatch]] | None = None) -> CheckpointRows:
    """The newest good checkpoint of run ``out``, read once.

    It comes as metadata, rows and (where ``genome_classes`` knows its genome class) the
    checkpoint with genomes.

    Raises:
        CheckpointError: the run has no readable checkpoint.
    """
    return _newest_good(out, lambda uri: _read(uri, genome_classes))


def read_latest_checkpoint_rows(out: str) -> list[dict]:
    """The newest good checkpoint of run ``out`` as one dict per occupied cell, ascending.

    The keys are :data:`ROW_COLUMNS`; genomes are not decompressed.

    Raises:
        CheckpointError: no readable checkpoint.
    """
    return read_latest_rows(out).rows


def read_stats(out: str, *, resuming: bool = False) -> list[dict]:
    """Rows of ``out/stats.parquet``, one dict per generation.

    Empty, with a warning naming the file, when it is missing (warned only when ``resuming``)
    or unreadable, as unreadable checkpoints are skipped.

    Args:
        out: the run folder: a local path or a storage URI.
        resuming: the run goes on and will rewrite the file: a missing one is worth a
            warning, and an unreadable one is first kept as ``stats.corrupt-N.parquet``.
    """
    uri = join(out, "stats.parquet")
    if is_link(uri):  # never followed: its target is not this run's to read (or copy)
        logger.warning("skipping %s: a symbolic link (never followed inside a run folder)", uri)
        return []
    try:
        data = read_bytes(uri)
    except FileNotFoundError:
        if resuming:
            logger.warning("%s is missing: the per-generation statistics start afresh", uri)
        return []
    try:
        records = pq.read_table(io.BytesIO(data), page_checksum_verification=True).to_pylist()
        if not all(_is_count(record.get("gen")) for record in records):
            raise ValueError("a row without a generation number (column gen)")
        return records
    except Exception as error:
        message = error_line(error)
        kept = ""
        if resuming:
            number = 1
            while exists(join(out, f"stats.corrupt-{number}.parquet")):
                number += 1
            write_bytes(join(out, f"stats.corrupt-{number}.parquet"), data, root=out)
            kept = f"; kept as stats.corrupt-{number}.parquet, the statistics start afresh"
        logger.warning("skipping %s: not a readable Parquet table (%s)%s", uri, message, kept)
        return []
