"""Crafted checkpoints and broken statistics: refused or tolerated cheaply, with the file named."""

from __future__ import annotations

import io
import json
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fooling.evo.cli import main
from fooling.evo.run import GENOME_CLASSES
from fooling.evo.store.checkpoint import METADATA_KEY, CheckpointError, read_checkpoint_file
from fooling.evo.store.tables import read_stats

TINY = ["--population", "20", "--batch-size", "10", "--no-progress", "--no-report"]


@pytest.fixture
def finished(fooling_home, tmp_path) -> Path:
    out = tmp_path / "run"
    assert main(["evolve", "--out", str(out), "--generations", "4", "--checkpoint-every", "2", *TINY]) == 0
    return out


def bomb_npz(megabytes: int) -> bytes:
    """An ``.npz`` whose one member inflates to ``megabytes`` MB of zeros (about 0.1% of it stored)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f4", "fortran_order": False, "shape": (megabytes * 262144,)}
        )
        with archive.open("pixels.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            chunk = bytes(1 << 20)
            for _ in range(megabytes):
                member.write(chunk)
    return buffer.getvalue()


def replace_genomes(path: Path, blob: bytes) -> None:
    """Make ``path`` a format 1 checkpoint (one ``.npz`` per genome) whose genomes are all ``blob``."""
    table = pq.read_table(path)
    metadata = json.loads(table.schema.metadata[METADATA_KEY])
    metadata["format_version"] = 1
    genomes = pa.array([blob] * table.num_rows, pa.binary())
    table = table.drop_columns([name for name in table.column_names if name.startswith("genome_")])
    table = table.append_column("genome", genomes)
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()})
    pq.write_table(table, path, compression="zstd")


def test_genome_bomb_is_refused_before_inflating_and_resume_falls_back(finished, caplog):
    newest = finished / "checkpoints" / "gen-000003.parquet"
    replace_genomes(newest, bomb_npz(200))
    assert newest.stat().st_size < 3_000_000
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match="declares .* bytes, more than"):
        read_checkpoint_file(str(newest), GENOME_CLASSES)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.perf_counter() - started < 5 and peak < 100_000_000
    assert main(["evolve", "--resume", str(finished), "--generations", "5", *TINY]) == 0
    assert "skipping" in caplog.text and "gen-000003.parquet" in caplog.text


def test_npy_header_larger_than_its_member_is_refused(finished):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f4", "fortran_order": False, "shape": (1, 28, 28)}
        )
        archive.writestr("pixels.npy", header.getvalue() + bytes(16))
    newest = finished / "checkpoints" / "gen-000003.parquet"
    replace_genomes(newest, buffer.getvalue())
    with pytest.raises(CheckpointError, match="more than its"):
        read_checkpoint_file(str(newest), GENOME_CLASSES)


def test_declared_parquet_sizes_are_checked_before_reading(finished):
    newest = finished / "checkpoints" / "gen-000003.parquet"
    table = pq.read_table(newest)
    # 4 MB of thumbnail per elite, far past what any elite's row may declare (zstd makes it small).
    big = pa.array([bytes([row]) * 4_000_000 for row in range(table.num_rows)], pa.binary())
    table = table.set_column(table.schema.get_field_index("image_png"), "image_png", big)
    pq.write_table(table, newest, compression="zstd")
    with pytest.raises(CheckpointError, match="uncompressed"):
        read_checkpoint_file(str(newest), GENOME_CLASSES)


def _varint(value: int, length: int) -> bytes:
    """``value`` as a Thrift compact varint of exactly ``length`` bytes (padded with empty groups)."""
    groups = []
    for _ in range(length):
        groups.append(value & 0x7F)
        value >>= 7
    assert value == 0
    return bytes([group | 0x80 for group in groups[:-1]] + [groups[-1]])


def test_pages_declaring_more_than_their_footer_are_refused_before_reading(finished):
    # A reader allocates each page from the page's own header: a footer claiming a small chunk
    # over a page of 256 MB must not pass the size check.
    newest = finished / "checkpoints" / "gen-000003.parquet"
    table = pq.read_table(newest)
    column = table.schema.get_field_index("image_png")
    big = pa.array([bytes(256 * 2**20)] + [None] * (table.num_rows - 1), pa.binary())
    pq.write_table(table.set_column(column, "image_png", big), newest, compression="zstd")
    chunk = pq.ParquetFile(newest).metadata.row_group(0).column(column)
    declared = chunk.total_uncompressed_size
    data = bytearray(newest.read_bytes())
    footer = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    zigzag = declared << 1
    original = _varint(zigzag, (zigzag.bit_length() + 6) // 7)
    assert data.count(original, footer) == 1
    at = data.index(original, footer)
    data[at : at + len(original)] = _varint(1000 << 1, len(original))  # the footer now says 1,000 bytes
    newest.write_bytes(bytes(data))
    assert pq.ParquetFile(newest).metadata.row_group(0).column(column).total_uncompressed_size == 1000
    assert newest.stat().st_size < 1_000_000
    tracemalloc.start()
    with pytest.raises(CheckpointError, match=r"declares 26\d,\d{3},\d{3} bytes uncompressed"):
        read_checkpoint_file(str(newest), GENOME_CLASSES)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50_000_000


def test_corrupt_stats_are_named_kept_and_tolerated(finished, caplog, capsys):
    stats = finished / "stats.parquet"
    stats.write_bytes(b"PAR1 not really")
    assert read_stats(str(finished), generations=4) == []
    assert str(stats) in caplog.text
    assert main(["report", str(finished)]) == 0
    assert main(["evolve", "--resume", str(finished), "--generations", "5", *TINY]) == 0
    assert (finished / "stats.corrupt-1.parquet").read_bytes() == b"PAR1 not really"
    assert [row["gen"] for row in read_stats(str(finished), generations=5)] == [4]


def test_missing_stats_are_warned_on_resume(finished, caplog):
    (finished / "stats.parquet").unlink()
    assert main(["evolve", "--resume", str(finished), "--generations", "5", *TINY]) == 0
    assert "stats.parquet is missing" in caplog.text
