"""Checkpoint format 2: compact genome columns, bit-exact round trips, old checkpoints still
read, declared genome layouts checked against the run before anything is inflated, and
thumbnails of unchanged cells reused."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fooling.evo.store.checkpoint as checkpoint_module
from fooling.encodings import CPPNEncoding, DirectEncoding
from fooling.evo.archive import ClassArchive
from fooling.evo.cli import main
from fooling.evo.config import RunConfig
from fooling.evo.evaluation import make_encoding
from fooling.evo.rendering import render_uint8
from fooling.evo.run import GENOME_CLASSES, resume_checkpoint
from fooling.evo.store.checkpoint import (
    FORMAT_VERSION,
    METADATA_KEY,
    Checkpoint,
    CheckpointError,
    checkpoint_uris,
    read_checkpoint_file,
    read_latest_checkpoint,
    read_latest_rows,
    write_checkpoint,
)
from fooling.evo.store.thumbnails import ThumbnailCache, thumbnail_png
from fooling.fitness import get_model_spec

ROOT = Path(__file__).resolve().parents[3]
# Version-1 checkpoints: the first set of goldens, written before format version 2.
GOLDEN = ROOT / "tests" / "evo" / "core" / "golden" / "dbc1efaff822c1b3"
PAPER_RUN = ROOT / "docs" / "paper-imagenet" / "run"
TINY = ["--population", "20", "--batch-size", "10", "--no-progress", "--no-report"]
MNIST_SOURCE = {"channels": 1, "input_size": [28, 28]}


def same_archive(a: ClassArchive, b: ClassArchive) -> bool:
    fields = ("fitness", "occupied", "individual_id", "parent_id", "parent_cell", "birth_generation")
    return a.genomes.equals(b.genomes) and all(np.array_equal(getattr(a, f), getattr(b, f)) for f in fields)


def filled_archive(encoding, cells: int, seed: int = 0) -> ClassArchive:
    rng = np.random.default_rng(seed)
    archive = ClassArchive([f"class {i}" for i in range(cells)])
    genomes = encoding.random(cells, rng)
    for _ in range(5):
        genomes = encoding.mutate(genomes, rng)
    archive.genomes = genomes
    archive.fitness[:] = rng.random(cells, dtype=np.float32)
    archive.occupied[:] = True
    archive.individual_id[:] = np.arange(cells)
    archive.parent_id[:] = -1
    archive.birth_generation[:] = 0
    return archive


def checkpoint_of(archive: ClassArchive, config: RunConfig, source: dict | None = None) -> Checkpoint:
    return Checkpoint(config, 3, 1000, config.model, "0123456789abcdef", archive, model_source=source)


@pytest.mark.parametrize("run", ["mnist-direct", "mnist-cppn"])
def test_golden_version_1_checkpoints_read_and_rewrite_bit_for_bit(run, tmp_path):
    old = read_latest_checkpoint(str(GOLDEN / run), GENOME_CLASSES)
    write_checkpoint(str(tmp_path), old)
    new = read_latest_checkpoint(str(tmp_path), GENOME_CLASSES)
    metadata = json.loads(pq.read_schema(checkpoint_uris(str(tmp_path))[0]).metadata[METADATA_KEY])
    assert metadata["format_version"] == FORMAT_VERSION == 3
    assert same_archive(old.archive, new.archive)
    assert (new.generation, new.next_id, new.config) == (old.generation, old.next_id, old.config)


def test_the_carried_paper_run_resumes(tmp_path):
    """docs/paper-imagenet/run (the paper-scale run, carried between machines) resumes with this code."""
    run = tmp_path / "paper"
    shutil.copytree(PAPER_RUN, run)
    config, checkpoint = resume_checkpoint(str(run), generations=checkpoint_of_generations(run) + 1)
    # 400 random genomes, then 400 children per generation: every id is accounted for.
    assert config.preset == "paper" and checkpoint.next_id == config.population * (checkpoint.generation + 1)
    assert checkpoint.archive.occupied.sum() == 1000
    uri = write_checkpoint(str(tmp_path / "again"), checkpoint)
    again = read_latest_checkpoint(str(tmp_path / "again"), GENOME_CLASSES)
    assert same_archive(checkpoint.archive, again.archive) and Path(uri).exists()


def checkpoint_of_generations(run: Path) -> int:
    return read_latest_checkpoint(str(run), GENOME_CLASSES).generation + 1


def test_cppn_genomes_of_every_dtype_round_trip(tmp_path):
    encoding = CPPNEncoding(outputs=1, height=28, width=28, max_nodes=48, max_edges=160)
    archive = filled_archive(encoding, 10)
    archive.occupied[3] = False  # an empty cell in the middle
    config = RunConfig(encoding="cppn", out=str(tmp_path))
    write_checkpoint(str(tmp_path), checkpoint_of(archive, config, MNIST_SOURCE))
    back = read_latest_checkpoint(str(tmp_path), GENOME_CLASSES).archive
    cells = archive.occupied_cells()
    assert back.occupied_cells().tolist() == cells.tolist()
    assert back.genomes.take(cells).equals(archive.genomes.take(cells))
    for name, array in back.genomes.arrays().items():
        assert array.dtype == getattr(archive.genomes, name).dtype and array.dtype.isnative


def test_direct_imagenet_genomes_take_less_space_than_npz(tmp_path):
    encoding = DirectEncoding(channels=3, height=224, width=224)
    archive = filled_archive(encoding, 6)
    config = RunConfig(model="imagenet-lite0", out=str(tmp_path))
    source = {"channels": 3, "input_size": [224, 224]}
    new = Path(write_checkpoint(str(tmp_path / "v2"), checkpoint_of(archive, config, source)))
    back = read_latest_checkpoint(str(tmp_path / "v2"), GENOME_CLASSES)
    assert same_archive(archive, back.archive)
    table = pq.read_table(new)
    npz = pa.array([archive.genomes.row_bytes(i) for i in range(6)], pa.binary())
    old = table.drop_columns(["genome_pixels"]).append_column("genome", npz)
    buffer = io.BytesIO()
    pq.write_table(old, buffer, compression="zstd")
    raw = archive.genomes.pixels.nbytes
    assert new.stat().st_size < 0.95 * len(buffer.getvalue()) and new.stat().st_size < 0.88 * raw


@pytest.fixture
def finished(fooling_home, tmp_path) -> Path:
    out = tmp_path / "run"
    assert main(["evolve", "--out", str(out), "--generations", "4", "--checkpoint-every", "2", *TINY]) == 0
    return out


def rewrite(path: Path, *, metadata_changes: dict | None = None, column=None) -> None:
    table = pq.read_table(path)
    metadata = json.loads(table.schema.metadata[METADATA_KEY])
    metadata.update(metadata_changes or {})
    if column is not None:
        table = table.set_column(table.schema.get_field_index("genome_pixels"), "genome_pixels", column)
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()})
    pq.write_table(table, path, compression="zstd")


def refused_cheaply(path: Path, match: str) -> str:
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match=match) as raised:
        read_checkpoint_file(str(path), GENOME_CLASSES)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    message = str(raised.value)
    assert time.perf_counter() - started < 5 and peak < 30_000_000, (time.perf_counter() - started, peak)
    assert str(path) in message and "\n" not in message
    return message


def test_genome_column_wider_than_the_run_declares_is_refused_before_inflating(finished, caplog):
    newest = finished / "checkpoints" / "gen-000003.parquet"
    rows = pq.read_metadata(newest).num_rows
    width = 3 * 1024 * 1024 * 4  # 12 MB of zeros per genome, about 1 kB once compressed
    zeros = np.zeros(rows * width, np.uint8)
    column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), rows, [None, pa.py_buffer(zeros)])
    rewrite(newest, column=column)
    del zeros, column
    assert newest.stat().st_size < 2_000_000
    refused_cheaply(newest, "should hold 3136-byte genomes")
    assert main(["evolve", "--resume", str(finished), "--generations", "5", *TINY]) == 0
    assert "skipping" in caplog.text and "gen-000003.parquet" in caplog.text


def test_declared_genome_shape_is_checked_against_the_runs_config(finished):
    newest = finished / "checkpoints" / "gen-000003.parquet"
    fields = [{"name": "pixels", "dtype": "<f4", "shape": [1, 1024, 1024]}]
    rewrite(newest, metadata_changes={"genome_fields": fields})
    message = refused_cheaply(newest, "declares genomes of pixels")
    assert "(1, 1024, 1024) float32" in message
    assert "its run's config makes pixels (1, 28, 28) float32" in message
    fields = [{"name": "pixels", "dtype": "<f8", "shape": [1, 28, 28]}]
    rewrite(newest, metadata_changes={"genome_fields": fields})
    refused_cheaply(newest, "float64")


def test_declared_uncompressed_size_of_a_genome_column_is_checked(finished, monkeypatch):
    newest = finished / "checkpoints" / "gen-000003.parquet"
    # As if the footer declared 100 bytes more per genome than the run allows.
    monkeypatch.setattr(checkpoint_module, "ROW_PAGE_SLACK", -100)
    monkeypatch.setattr(checkpoint_module, "GENOME_PAGE_SLACK", 0)
    refused_cheaply(newest, "bytes uncompressed for genome_pixels")


def test_version_1_genome_members_are_checked_exactly_against_the_run(tmp_path):
    run = tmp_path / "golden"
    shutil.copytree(GOLDEN / "mnist-direct", run)
    path = checkpoint_uris(str(run))[0]
    table = pq.read_table(path)
    metadata = json.loads(table.schema.metadata[METADATA_KEY])
    metadata["model_source"]["input_size"] = [27, 27]  # the run's genomes would be 1x27x27
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()})
    pq.write_table(table, path, compression="zstd")
    with pytest.raises(CheckpointError, match=r"declares pixels \(1, 28, 28\) float32, but its run's config"):
        read_checkpoint_file(path, GENOME_CLASSES)


def test_thumbnail_cache_renders_only_changed_cells_and_writes_the_same_file(tmp_path):
    encoding = DirectEncoding(channels=1, height=28, width=28)
    archive = filled_archive(encoding, 1000)
    config = RunConfig(out=str(tmp_path))
    rendered = []

    def render(genomes):
        rendered.append(len(genomes))
        return render_uint8(encoding, genomes)

    cache = ThumbnailCache()
    first = checkpoint_of(archive, config, MNIST_SOURCE)
    write_checkpoint(str(tmp_path / "a"), first, render=render, thumbnails=cache)
    assert rendered == [1000]
    changed = np.array([5, 500, 999])
    archive.genomes.assign(changed, encoding.random(3, np.random.default_rng(9)))
    archive.individual_id[changed] = [1000, 1001, 1002]
    started = time.perf_counter()
    later = dataclasses.replace(first, generation=4)
    cached = write_checkpoint(str(tmp_path / "a"), later, render=render, thumbnails=cache)
    assert rendered == [1000, 3] and cache.rendered == 1003
    fresh = write_checkpoint(str(tmp_path / "b"), later, render_uint8(encoding, archive.genomes))
    assert Path(cached).read_bytes() == Path(fresh).read_bytes(), "cached thumbnails change the file"
    assert time.perf_counter() - started < 30


@pytest.mark.parametrize("encoding", ["direct", "cppn"])
def test_thumbnails_of_an_evolve_run_equal_fresh_renderings(fooling_home, tmp_path, encoding):
    out = tmp_path / encoding
    arguments = ["--encoding", encoding, "--generations", "5", "--checkpoint-every", "1"]
    arguments += ["--keep-checkpoints", "0"]
    assert main(["evolve", "--out", str(out), *arguments, *TINY]) == 0
    uris = checkpoint_uris(str(out))
    assert len(uris) == 5
    for uri in uris:
        checkpoint = read_checkpoint_file(uri, GENOME_CLASSES)
        archive = checkpoint.archive
        cells = archive.occupied_cells()
        renderer = make_encoding(checkpoint.config, get_model_spec("mnist-lenet"))
        images = render_uint8(renderer, archive.genomes.take(cells))
        stored = pq.read_table(uri, columns=["image_png"]).column("image_png").to_pylist()
        assert stored == [thumbnail_png(image) for image in images], uri


def test_a_resumed_run_renders_only_the_cells_changed_since_its_checkpoint(
    fooling_home, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    # CPPNs: the LeNet's cells do not all reach 100% within a few generations, as direct ones do.
    assert main(["evolve", "--out", str(out), "--encoding", "cppn", "--generations", "2", *TINY]) == 0
    before = read_checkpoint_file(checkpoint_uris(str(out))[0], GENOME_CLASSES)  # newest first
    assert before.thumbnails and set(before.thumbnails) == set(before.archive.occupied_cells().tolist())
    rendered = []
    original = ThumbnailCache.thumbnails

    def spy(self, cells, individual_ids, genomes, render):
        result = original(self, cells, individual_ids, genomes, render)
        rendered.append(self.rendered)
        return result

    monkeypatch.setattr(ThumbnailCache, "thumbnails", spy)
    resume = ["evolve", "--resume", str(out), "--generations", "6", "--checkpoint-every", "100"]
    assert main([*resume, "--no-progress", "--no-report"]) == 0  # one checkpoint, at the end
    after = read_checkpoint_file(checkpoint_uris(str(out))[0], GENOME_CLASSES)
    changed = int((after.archive.individual_id != before.archive.individual_id).sum())
    assert rendered == [changed]  # not every occupied cell, as an empty cache would
    renderer = make_encoding(after.config, get_model_spec("mnist-lenet"))
    # Whatever the run changed on this CPU: a cache holding every cell renders only the cells
    # whose elite it has not seen (here, one whose id is made new).
    cells = after.archive.occupied_cells()
    ids = after.archive.individual_id[cells].copy()
    cache = ThumbnailCache(after.thumbnails)
    cache.thumbnails(cells, ids, after.archive.genomes, lambda g: render_uint8(renderer, g))
    assert cache.rendered == 0
    ids[0] = ids.max() + 1
    cache.thumbnails(cells, ids, after.archive.genomes, lambda g: render_uint8(renderer, g))
    assert cache.rendered == 1
    fresh = [thumbnail_png(image) for image in render_uint8(renderer, after.archive.genomes.take(cells))]
    assert [after.thumbnails[cell][1] for cell in cells.tolist()] == fresh


def test_rows_of_a_checkpoint_come_without_arrow(finished):
    stored = read_latest_rows(str(finished), GENOME_CLASSES)
    assert isinstance(stored.rows, list) and all(isinstance(row, dict) for row in stored.rows)
    assert [row["class_id"] for row in stored.rows] == sorted(row["class_id"] for row in stored.rows)
    assert stored.checkpoint is not None and stored.metadata["generation"] == stored.checkpoint.generation
    assert all(type(value).__module__ == "builtins" for row in stored.rows for value in row.values())
    unknown = read_latest_rows(str(finished))  # no genome classes: rows only, genomes not decoded
    assert unknown.checkpoint is None and unknown.rows == stored.rows
