"""Parquet tables of a run folder other than checkpoints: per-generation statistics, result tables."""

from __future__ import annotations

import io
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fooling.evo.store.location import exists, is_link, join, read_bytes, write_bytes
from fooling.evo.store.validation import is_count
from fooling.fitness import error_line

logger = logging.getLogger(__name__)


# The per-generation statistics of a run folder.
STATS_NAME = "stats.parquet"


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


def write_stats(out: str, records: list[dict]) -> None:
    """Write the per-generation statistics table ``out/stats.parquet``."""
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), buffer, write_page_checksum=True)
    write_bytes(join(out, STATS_NAME), buffer.getvalue(), root=out)


# Columns every row of a run's statistics holds, as numbers: what the report draws and a resumed
# run continues (older runs lack the later columns, which readers take as missing).
STATS_COLUMNS = ("gen", "median", "mean", "max", "min")


def _checked_stats(data: bytes, generations: int) -> list[dict]:
    """The rows of statistics table ``data``, checked against what a run of ``generations`` writes.

    The row count and the columns are read from the Parquet footer before any row is read: a
    file of 69 KB may declare millions of rows, gigabytes once read.

    Raises:
        ValueError: more rows than generations, a missing or non-numeric column, a missing
            value, or a row without its generation number (the reason, in words).
        Exception: whatever pyarrow raises for a file that is not Parquet.
    """
    parquet = pq.ParquetFile(io.BytesIO(data), page_checksum_verification=True)
    rows = parquet.metadata.num_rows
    if rows > generations:
        raise ValueError(f"{rows:,} rows, more than the run's {generations:,} generations")
    schema = parquet.schema_arrow
    for name in STATS_COLUMNS:
        if name not in schema.names:
            raise ValueError(f"no column {name}")
        kind = schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            raise ValueError(f"column {name} holds {kind}, not numbers")
    table = parquet.read()
    if table.num_rows != rows:  # a row group's count damaged in the footer
        raise ValueError(f"{table.num_rows:,} rows read of the {rows:,} it declares")
    for name in STATS_COLUMNS:
        if table.column(name).null_count:
            raise ValueError(f"column {name} has missing values")
    records = table.to_pylist()
    if not all(is_count(record.get("gen")) for record in records):
        raise ValueError("a row without a generation number (column gen)")
    return records


def read_stats(out: str, *, generations: int, resuming: bool = False) -> list[dict]:
    """Rows of ``out/stats.parquet``, one dict per generation.

    Empty, with a warning naming the file, when it is missing (warned only when ``resuming``)
    or unreadable, as unreadable checkpoints are skipped. Unreadable includes a table that is
    not what the run writes: more rows than ``generations`` (refused from the footer, before
    reading), or a row without a number in a column of :data:`STATS_COLUMNS`.

    Args:
        out: the run folder: a local path or a storage URI.
        generations: the most generations the run has (its config's): a run folder may come
            from someone else, and its table's size is bounded by them.
        resuming: the run goes on and will rewrite the file: a missing one is worth a
            warning, and an unreadable one is first kept as ``stats.corrupt-N.parquet``.
    """
    uri = join(out, STATS_NAME)
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
        return _checked_stats(data, generations)
    except Exception as error:
        message = error_line(error)
        kept = ""
        if resuming:
            number = 1
            while exists(join(out, f"stats.corrupt-{number}.parquet")):
                number += 1
            write_bytes(join(out, f"stats.corrupt-{number}.parquet"), data, root=out)
            kept = f"; kept as stats.corrupt-{number}.parquet, the statistics start afresh"
        logger.warning("skipping %s: not a statistics table a run writes (%s)%s", uri, message, kept)
        return []
