"""Checkpoints: one Parquet file per checkpoint, one row per occupied cell, no pickle.

Layout of a run folder ``OUT`` (a local path or any pyarrow filesystem URI)::

    OUT/checkpoints/gen-000199.parquet   elites after generation 199
    OUT/checkpoints/LATEST               name of the newest good checkpoint
    OUT/stats.parquet                    one row per generation

Local files are written atomically (temporary file, fsync, rename). Object stores
have no rename, but a PUT is atomic: a checkpoint object appears whole or not at
all, and LATEST is replaced only after it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from PIL import Image

from fooling.encodings import GenomeBatch
from fooling.evo.archive import ClassArchive
from fooling.evo.config import RunConfig

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
METADATA_KEY = b"fooling"
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
    """

    config: RunConfig
    generation: int
    next_id: int
    model: str
    weights_hash: str
    archive: ClassArchive
    path: str = ""
    model_source: dict | None = None


# --- file systems ------------------------------------------------------------------------


def _filesystem(uri: str) -> tuple[pafs.FileSystem | None, str]:
    """``(None, local path)`` for local folders, else a pyarrow filesystem and its path."""
    if "://" not in uri or uri.startswith("file://"):
        return None, str(Path(uri.removeprefix("file://")).resolve())
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as error:
        raise CheckpointError(f"cannot open storage {uri!r}: {str(error).splitlines()[0]}") from None


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


def _file_mode() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


# Mode of files written here: 0644 under the usual umask, as PIL, matplotlib and every other
# tool write their outputs (run folders are shared and served: the gallery is an index.html).
FILE_MODE = _file_mode()


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri`` so that readers see the old object or the new one, never half."""
    filesystem, path = _filesystem(uri)
    if filesystem is None:
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        try:
            os.fchmod(handle, FILE_MODE)  # mkstemp makes 0600; outputs are shared like any tool's
            with os.fdopen(handle, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
        directory_handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_handle)  # make the rename itself durable
        finally:
            os.close(directory_handle)
        return
    filesystem.create_dir(os.path.dirname(path), recursive=True)
    with filesystem.open_output_stream(path) as stream:
        stream.write(data)


def read_bytes(uri: str) -> bytes:
    """Contents of ``uri``. Raises ``FileNotFoundError`` if absent."""
    filesystem, path = _filesystem(uri)
    if filesystem is None:
        return Path(path).read_bytes()
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    except (OSError, pa.ArrowException) as error:
        raise FileNotFoundError(f"{uri}: {str(error).splitlines()[0]}") from None


def exists(uri: str) -> bool:
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
        filesystem, path = _filesystem(uri)
        if filesystem is None:
            os.unlink(path)
        else:
            filesystem.delete_file(path)
    except CheckpointError:
        raise
    except (OSError, pa.ArrowException) as error:
        message = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise OSError(f"--out {out} cannot be written: {message}") from None


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


def checkpoint_table(checkpoint: Checkpoint, images: np.ndarray | None = None) -> pa.Table:
    """The Parquet table of ``checkpoint``.

    Args:
        images: ``(num_occupied, height, width[, 3])`` uint8 renderings of the occupied
            cells in ascending cell order, stored as PNG; ``None`` stores no images.
    """
    archive = checkpoint.archive
    cells = archive.occupied_cells()
    genomes = archive.genomes.take(cells) if archive.genomes is not None else None
    columns = {
        "class_id": pa.array(cells, pa.int32()),
        "class_name": pa.array([archive.class_names[c] for c in cells], pa.string()),
        "fitness": pa.array(archive.fitness[cells], pa.float32()),
        "genome": pa.array([genomes.row_bytes(i) for i in range(len(cells))], pa.binary()),
        "individual_id": pa.array(archive.individual_id[cells], pa.int64()),
        "parent_id": pa.array(archive.parent_id[cells], pa.int64()),
        "parent_cell": pa.array(archive.parent_cell[cells], pa.int32()),
        "birth_generation": pa.array(archive.birth_generation[cells], pa.int32()),
        "image_png": pa.array(
            [thumbnail_png(image) for image in images] if images is not None else [None] * len(cells),
            pa.binary(),
        ),
    }
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
        "genome_class": type(genomes).__name__ if genomes is not None else None,
        "class_names": list(archive.class_names),
    }
    table = pa.table(columns)
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()})


def checkpoint_name(generation: int) -> str:
    return f"gen-{generation:06d}.parquet"


def write_checkpoint(out: str, checkpoint: Checkpoint, images: np.ndarray | None = None) -> str:
    """Write ``checkpoint`` under ``out/checkpoints`` and point ``LATEST`` at it.

    Returns:
        The checkpoint's URI.
    """
    buffer = io.BytesIO()
    pq.write_table(checkpoint_table(checkpoint, images), buffer, compression="zstd")
    uri = join(out, "checkpoints", checkpoint_name(checkpoint.generation))
    write_bytes(uri, buffer.getvalue())
    write_bytes(join(out, "checkpoints", "LATEST"), (checkpoint_name(checkpoint.generation) + "\n").encode())
    return uri


def _readable_footer(uri: str) -> bool:
    """True when ``uri`` is a Parquet file whose footer and run metadata read (cheap: no data)."""
    filesystem, path = _filesystem(uri)
    try:
        if filesystem is None:
            schema = pq.read_schema(path)
        else:
            with filesystem.open_input_file(path) as handle:
                schema = pq.read_schema(handle)
        metadata = json.loads(schema.metadata[METADATA_KEY])
        return metadata.get("format_version") == FORMAT_VERSION
    except Exception:  # any unreadable file is simply not counted as good
        return False


def delete(uri: str) -> None:
    """Delete the file ``uri`` (nothing if it is already gone)."""
    filesystem, path = _filesystem(uri)
    try:
        if filesystem is None:
            os.unlink(path)
        else:
            filesystem.delete_file(path)
    except FileNotFoundError:
        pass


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
        delete(uri)
        deleted.append(uri)
    if deleted:
        logger.debug("deleted %d old checkpoint(s) of %s (--keep-checkpoints %d)", len(deleted), out, keep)
    return deleted


def write_stats(out: str, records: list[dict]) -> None:
    """Write the per-generation statistics table ``out/stats.parquet``."""
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), buffer)
    write_bytes(join(out, "stats.parquet"), buffer.getvalue())


# --- reading -----------------------------------------------------------------------------


def read_checkpoint_table(uri: str) -> tuple[pa.Table, dict]:
    """The table of one checkpoint file and its metadata, without rebuilding genomes.

    Raises:
        CheckpointError: missing, unreadable, or of another format version.
    """
    try:
        parquet = pq.ParquetFile(io.BytesIO(read_bytes(uri)))  # the file is read once
        metadata = json.loads(parquet.schema_arrow.metadata[METADATA_KEY])
    except FileNotFoundError:
        raise CheckpointError(f"{uri}: no such checkpoint") from None
    except Exception as error:
        message = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise CheckpointError(f"{uri} is not a readable checkpoint ({message})") from None
    if not isinstance(metadata, dict) or metadata.get("format_version") != FORMAT_VERSION:
        version = metadata.get("format_version") if isinstance(metadata, dict) else None
        raise CheckpointError(f"{uri}: format version {version}, expected {FORMAT_VERSION}")
    # Sizes the footer declares are checked before any column is decompressed, so a small
    # crafted file cannot make us allocate gigabytes.
    rows = parquet.metadata.num_rows
    declared = sum(
        parquet.metadata.row_group(group).column(column).total_uncompressed_size
        for group in range(parquet.metadata.num_row_groups)
        for column in range(parquet.metadata.num_columns)
    )
    limit = rows * (genome_byte_limit(metadata) + ROW_OVERHEAD_LIMIT) + FILE_OVERHEAD_LIMIT
    if declared > limit:
        raise CheckpointError(
            f"{uri} declares {declared:,} bytes uncompressed, more than {limit:,} for {rows} elites "
            "of its run; refusing to read it"
        )
    try:
        table = parquet.read()
    except Exception as error:
        message = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise CheckpointError(f"{uri} is not a readable checkpoint ({message})") from None
    return table, metadata


# Bounds for the sizes a checkpoint may declare: besides its genome, a row holds ids, a class
# name and a PNG thumbnail of at most 128x128 pixels.
ROW_OVERHEAD_LIMIT = 256 * 1024
FILE_OVERHEAD_LIMIT = 16 * 1024 * 1024


def genome_byte_limit(metadata: dict) -> int:
    """Most bytes one stored genome of the run ``metadata`` describes may take, uncompressed.

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


def check_genome_blobs(blobs: list[bytes], limit: int) -> None:
    """Check each stored genome's declared sizes before anything is decompressed.

    Each genome is an ``.npz`` (a zip of ``.npy`` arrays): the zip directory declares each
    member's uncompressed size and each ``.npy`` header its shape and dtype; both are read
    without inflating the data.

    Raises:
        ValueError: a genome declaring more than ``limit`` bytes, an object dtype, or an
            array whose header disagrees with its member's size.
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
        except (zipfile.BadZipFile, EOFError, OSError) as error:
            raise ValueError(f"genome {index} is unreadable: {error}") from None


def read_checkpoint_file(uri: str, genome_classes: dict[str, type[GenomeBatch]]) -> Checkpoint:
    """Read one checkpoint file, checking everything it holds.

    Args:
        genome_classes: genome class name -> class, for rebuilding genomes.

    Raises:
        CheckpointError: unreadable, truncated, or inconsistent.
    """
    table, metadata = read_checkpoint_table(uri)
    try:
        config = RunConfig.from_json(json.dumps(metadata["config"]))
        archive = ClassArchive(metadata["class_names"])
        cells = table.column("class_id").to_numpy()
        if len(cells) and (
            cells.min() < 0 or cells.max() >= archive.num_cells or len(set(cells)) != len(cells)
        ):
            raise ValueError("class ids out of range or repeated")
        if len(cells):
            genome_class = genome_classes[metadata["genome_class"]]
            blobs = table.column("genome").to_pylist()
            check_genome_blobs(blobs, genome_byte_limit(metadata))
            genomes = genome_class.from_row_bytes(blobs)
            archive.genomes = genomes.take(np.zeros(archive.num_cells, dtype=np.int64))
            archive.genomes.assign(cells, genomes)
        fitness = table.column("fitness").to_numpy()
        if not np.isfinite(fitness).all():
            raise ValueError("non-finite fitness")
        archive.fitness[cells] = fitness
        archive.occupied[cells] = True
        for name in ("individual_id", "parent_id", "parent_cell", "birth_generation"):
            getattr(archive, name)[cells] = table.column(name).to_numpy()
        return Checkpoint(
            config=config,
            generation=int(metadata["generation"]),
            next_id=int(metadata["next_id"]),
            model=str(metadata["model"]),
            weights_hash=str(metadata["weights_hash"]),
            archive=archive,
            path=uri,
            model_source=metadata.get("model_source"),
        )
    except CheckpointError:
        raise
    except Exception as error:
        raise CheckpointError(f"{uri} is corrupt ({str(error).splitlines()[0][:160]})") from None


def checkpoint_uris(out: str) -> list[str]:
    """Checkpoint files under ``out/checkpoints``, newest first."""
    folder = join(out, "checkpoints")
    names = [name for name in list_names(folder) if CHECKPOINT_PATTERN.match(name)]
    return [join(folder, name) for name in sorted(names, reverse=True)]


def _newest_good(out: str, read):
    """``read(uri)`` of the newest checkpoint it accepts: LATEST's, then newest first.

    Each one skipped is logged as a warning; nothing is deleted or rewritten.
    """
    candidates = checkpoint_uris(out)
    try:
        latest = read_bytes(join(out, "checkpoints", "LATEST")).decode().strip()
        if CHECKPOINT_PATTERN.match(latest):
            preferred = join(out, "checkpoints", latest)
            candidates = [preferred] + [uri for uri in candidates if uri != preferred]
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    if not candidates:
        raise CheckpointError(
            f"{out} holds no checkpoint (expected {join(out, 'checkpoints', 'gen-*.parquet')})"
        )
    problems = []
    for uri in candidates:
        try:
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


def read_latest_checkpoint_table(out: str) -> pa.Table:
    """The table of run ``out``'s newest readable checkpoint, metadata included.

    Raises:
        CheckpointError: the run has no readable checkpoint.
    """
    return _newest_good(out, lambda uri: read_checkpoint_table(uri)[0])


def read_latest_checkpoint_rows(out: str) -> list[dict]:
    """The newest good checkpoint of run ``out`` as one dict per occupied cell (its columns).

    Raises:
        CheckpointError: no readable checkpoint.
    """
    return read_latest_checkpoint_table(out).to_pylist()


def checkpoint_metadata(table: pa.Table) -> dict:
    """The run metadata stored in a checkpoint table's schema."""
    return json.loads(table.schema.metadata[METADATA_KEY])


def read_stats(out: str, *, resuming: bool = False) -> list[dict]:
    """Rows of ``out/stats.parquet``; empty, with a warning naming the file, when it is
    missing (warned only when ``resuming``) or unreadable, as unreadable checkpoints are skipped.

    Args:
        resuming: the run goes on and will rewrite the file: a missing one is worth a
            warning, and an unreadable one is first kept as ``stats.corrupt-N.parquet``.
    """
    uri = join(out, "stats.parquet")
    try:
        data = read_bytes(uri)
    except FileNotFoundError:
        if resuming:
            logger.warning("%s is missing: the per-generation statistics start afresh", uri)
        return []
    try:
        return pq.read_table(io.BytesIO(data)).to_pylist()
    except Exception as error:
        message = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        kept = ""
        if resuming:
            number = 1
            while exists(join(out, f"stats.corrupt-{number}.parquet")):
                number += 1
            write_bytes(join(out, f"stats.corrupt-{number}.parquet"), data)
            kept = f"; kept as stats.corrupt-{number}.parquet, the statistics start afresh"
        logger.warning("skipping %s: not a readable Parquet table (%s)%s", uri, message, kept)
        return []
