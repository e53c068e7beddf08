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

Emitter state: the metadata key ``emitter_state`` holds what the run's emitter learnt (a JSON
object, checked by the emitter on ``--resume``); it is written only when not empty, and a
checkpoint without it (every checkpoint of a stateless emitter, and older ones) reads as ``{}``.

Where the files live and how they are written (atomically, never through a symbolic link) is
:mod:`fooling.evo.store.location`; the genome columns are :mod:`fooling.evo.store.genomes`,
the checks of the other fields :mod:`fooling.evo.store.validation`, the bounded footer parser
:mod:`fooling.evo.store.parquet_footer`, the thumbnails :mod:`fooling.evo.store.thumbnails`,
the statistics table :mod:`fooling.evo.store.tables`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fooling.encodings import GenomeBatch
from fooling.encodings.errors import UserError
from fooling.evo.archive import ClassArchive
from fooling.evo.config import RunConfig
from fooling.evo.on_device import HOST_SCHEME, RNG_SCHEMES
from fooling.evo.store.genomes import (
    CHECKSUM_COLUMN,
    GENOME_PREFIX,
    check_genome_blobs,
    declared_fields,
    decode_genome_field,
    describe_fields,
    genome_byte_limit,
    genome_checksums,
    genome_columns,
    run_shapes,
    stored_cells,
)
from fooling.evo.store.location import (
    delete,
    is_link,
    is_uri,
    join,
    list_names,
    open_input_file,
    read_bytes,
    write_bytes,
    write_streamed,
)
from fooling.evo.store.parquet_footer import footer_chunks
from fooling.evo.store.thumbnails import ThumbnailCache, genome_row_bytes, thumbnail_png
from fooling.evo.store.validation import DamagedField, check_metadata, check_rows, is_count, is_run_token
from fooling.fitness import error_line

logger = logging.getLogger(__name__)

FORMAT_VERSION = 3
# Versions this build reads: 1 stored each genome as an .npz in a `genome` column; 2 had no
# checksums.
READABLE_VERSIONS = (1, 2, 3)
# Genome bytes per row group of a checkpoint, and per batch of thumbnails rendered: what a
# checkpoint adds to a run's memory, whatever the size of the archive.
ROW_GROUP_GENOME_BYTES = 32 * 1024 * 1024
METADATA_KEY = b"fooling"
# SHA-256 (hex) of the METADATA_KEY value.
METADATA_CHECKSUM_KEY = b"fooling-sha256"
CHECKPOINT_PATTERN = re.compile(r"^gen-(\d{6,})\.parquet$")


class CheckpointError(UserError):
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
        emitter_state: what the run's emitter learnt (its ``state()``: a JSON object of plain
            values), given back to it on ``--resume``; ``{}`` for stateless emitters and
            checkpoints written before emitters kept state.
        rng_scheme: the random streams the run's children were made with (metadata
            ``rng.kind``): ``"numpy-seed-sequence"`` (host variation, and every checkpoint
            written before device variation), ``"torch-cpu"`` or ``"torch-cuda"``
            (:func:`fooling.evo.on_device.rng_scheme`).
        queries: images sent to the model up to this checkpoint (every generation and every
            earlier resume; metadata ``queries``), continued on ``--resume`` and checked
            against ``--max-queries``; ``None`` in checkpoints written before it was counted.
        run: the token of the run that wrote it (metadata ``run``; see
            :func:`~fooling.evo.store.runfolder.run_token`), ``None`` where that run had none.
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
    emitter_state: dict = dataclasses.field(default_factory=dict)
    rng_scheme: str = HOST_SCHEME
    queries: int | None = None
    run: str | None = None


# --- writing -----------------------------------------------------------------------------


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
            "kind": checkpoint.rng_scheme,
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
    if checkpoint.queries is not None:
        metadata["queries"] = int(checkpoint.queries)
    if checkpoint.run is not None:
        metadata["run"] = checkpoint.run
    if checkpoint.emitter_state:  # none: the metadata of a stateless emitter's run, as before
        metadata["emitter_state"] = checkpoint.emitter_state
    table = pa.table(columns)
    text = json.dumps(metadata).encode()
    return table.replace_schema_metadata(
        {METADATA_KEY: text, METADATA_CHECKSUM_KEY: hashlib.sha256(text).hexdigest().encode()}
    )


# Largest LATEST pointer read: it names one checkpoint file.
LATEST_SIZE_LIMIT = 4096


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
        cache = thumbnails if thumbnails is not None else ThumbnailCache(batch_bytes=ROW_GROUP_GENOME_BYTES)
        pngs = cache.thumbnails(cells, archive.individual_id[cells], archive.genomes, render)
    # Row groups of at most ROW_GROUP_GENOME_BYTES of genomes, each converted, compressed and
    # written before the next is built: a checkpoint never holds a second copy of the archive
    # in memory (1,000 direct ImageNet genomes are 602 MB).
    count = len(archive.occupied_cells())
    step = max(1, ROW_GROUP_GENOME_BYTES // max(1, genome_row_bytes(archive.genomes)))

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
    try:
        with open_input_file(uri) as handle:
            schema = pq.read_schema(handle)
        metadata = json.loads(schema.metadata[METADATA_KEY])
        return metadata.get("format_version") in READABLE_VERSIONS
    except Exception:  # any unreadable file is simply not counted as good
        return False


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
        latest = read_bytes(join(out, "checkpoints", "LATEST"), LATEST_SIZE_LIMIT).decode().strip()
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
        config: the run's configuration, checked (also where ``checkpoint`` is ``None``).
    """

    uri: str
    metadata: dict
    rows: list[dict]
    checkpoint: Checkpoint | None
    config: RunConfig | None = None


def _rng_scheme(metadata: dict) -> str:
    """The random streams metadata ``rng.kind`` names (checked: the file is untrusted).

    Raises:
        DamagedField: not a scheme this version knows.
    """
    rng = metadata.get("rng")
    kind = rng.get("kind", HOST_SCHEME) if isinstance(rng, dict) else HOST_SCHEME
    if kind not in RNG_SCHEMES:
        raise DamagedField(f"rng.kind is {str(kind)[:40]!r}, not one of {', '.join(RNG_SCHEMES)}")
    return kind


def _queries(metadata: dict) -> int | None:
    """Metadata ``queries`` (images sent so far), ``None`` where absent (checked: the file is untrusted).

    Raises:
        DamagedField: present but not a count.
    """
    queries = metadata.get("queries")
    if queries is not None and not is_count(queries):
        raise DamagedField(f"queries is {str(queries)[:40]!r}, not a count of images")
    return queries


def _run(metadata: dict) -> str | None:
    """Metadata ``run`` (the token of the run that wrote it), ``None`` where absent (checked).

    Raises:
        DamagedField: present but not a run token.
    """
    token = metadata.get("run")
    if token is not None and not is_run_token(token):
        raise DamagedField(f"run is {str(token)[:40]!r}, not a run token")
    return token


def _damaged(uri: str, what: str) -> CheckpointError:
    return CheckpointError(f"{uri} is a damaged checkpoint: {what}")


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
    stored = stored_cells(column)
    genomes = [stored_cells(table.column(GENOME_PREFIX + name)) for name in fields]
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
    try:
        check_metadata(metadata, rows)
    except DamagedField as error:
        raise _damaged(uri, str(error)) from None
    widths: dict[str, int] = {}
    if metadata["format_version"] >= 2 and rows:
        try:
            declared = declared_fields(metadata)
            expected = run_shapes(metadata)
        except Exception as error:
            raise CheckpointError(f"{uri} is corrupt ({error_line(error)})") from None
        if expected is not None and declared != expected:
            raise CheckpointError(
                f"{uri} declares genomes of {describe_fields(declared)}, but its run's config makes "
                f"{describe_fields(expected)}; refusing to read it"
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
    for group_rows, chunks in footer_chunks(data):
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
        check_rows(table, metadata)
        config = RunConfig.from_json(json.dumps(metadata["config"]))
        archive = ClassArchive(metadata["class_names"])
        cells = table.column("class_id").to_numpy()
        fitness = table.column("fitness").to_numpy()
        order = np.argsort(cells, kind="stable")
        columns = {name: table.column(name).to_pylist() for name in ROW_COLUMNS if name in names}
        rows = [{name: columns[name][i] for name in columns} for i in order.tolist()]
        if genome_class is None:
            return CheckpointRows(uri, metadata, rows, None, config)
        if len(cells):
            if version == 1:
                blobs = table.column("genome").to_pylist()
                check_genome_blobs(blobs, genome_byte_limit(metadata), run_shapes(metadata))
                genomes = genome_class.from_row_bytes(blobs)
            else:
                declared = declared_fields(metadata)
                expected = [field.name for field in dataclasses.fields(genome_class)]
                if sorted(declared) != sorted(expected):
                    raise ValueError(f"genome fields {sorted(declared)} instead of {sorted(expected)}")
                _check_genome_sums(uri, version, table, list(declared), cells)  # before any genome is used
                genomes = genome_class(**{
                    name: decode_genome_field(table.column(GENOME_PREFIX + name), *declared[name])
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
            emitter_state=metadata.get("emitter_state", {}),
            rng_scheme=_rng_scheme(metadata),
            queries=_queries(metadata),
            run=_run(metadata),
        )
        return CheckpointRows(uri, metadata, rows, checkpoint, config)
    except CheckpointError:
        raise
    except DamagedField as error:
        raise _damaged(uri, str(error)) from None
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
        latest = "" if is_link(pointer) else read_bytes(pointer, LATEST_SIZE_LIMIT).decode().strip()
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
