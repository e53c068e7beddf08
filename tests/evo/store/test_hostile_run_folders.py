"""Run folders from someone else: planted symbolic links are never written through, bit rot
in a checkpoint falls back to the previous good one, every field read is type-checked, and
damaged locks and failed writes are one line naming the file.

Every hostile input is built here, from a tiny MNIST run."""

from __future__ import annotations

import errno
import functools
import hashlib
import http.server
import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from small_setups import sparse_file

import fooling.evo.store.location as location_module
from fooling.evo.cli import main
from fooling.evo.run import GENOME_CLASSES
from fooling.evo.store.checkpoint import (
    METADATA_CHECKSUM_KEY,
    METADATA_KEY,
    CheckpointError,
    checkpoint_uris,
    prune_checkpoints,
    read_checkpoint_file,
    read_latest_checkpoint,
    read_latest_rows,
)
from fooling.evo.store.genomes import CHECKSUM_COLUMN
from fooling.evo.store.location import UnsafePathError, write_bytes
from fooling.evo.store.runfolder import LOCK_NAME, RunLock, RunLockedError, remove_stale_temporaries

TINY = ["--population", "20", "--batch-size", "10", "--no-progress"]
VICTIM = b"another user's file: must never change\n"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def files_of(folder: Path) -> dict[str, bytes]:
    """Every regular file under ``folder`` (links not followed), by relative path."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink() and path.name != LOCK_NAME
    }


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, fooling_home) -> dict[str, Path]:
    """Tiny MNIST runs (direct and CPPN) with checkpoints of generations 1 and 3; copy before changing."""
    runs = {}
    for encoding in ("direct", "cppn"):
        out = tmp_path_factory.mktemp("runs") / encoding
        arguments = ["--encoding", encoding, "--generations", "4", "--checkpoint-every", "2", *TINY]
        assert main(["evolve", "--out", str(out), *arguments]) == 0
        assert [Path(uri).name for uri in checkpoint_uris(str(out))] == [
            "gen-000003.parquet",
            "gen-000001.parquet",
        ]
        runs[encoding] = out
    return runs


@pytest.fixture
def run(two_checkpoints, tmp_path) -> Path:
    """A fresh copy of the direct run, its report written."""
    out = tmp_path / "run"
    shutil.copytree(two_checkpoints["direct"], out)
    for name in ("index.html", "elites.png", "progress.png", "stats.parquet"):
        assert (out / name).is_file(), name
    return out


# --- 5: symbolic links planted in a run folder -------------------------------------------------

LINKED = ["checkpoints/LATEST", "stats.parquet", "index.html", "elites.png", "progress.png"]


def plant_link(run: Path, name: str, outside: Path) -> Path:
    """Replace ``run/name`` by a link to a file of ``outside`` holding :data:`VICTIM`."""
    outside.mkdir(exist_ok=True)
    target = outside / name.replace("/", "-")
    target.write_bytes(VICTIM)
    (run / name).unlink()
    (run / name).symlink_to(target)
    return target


@pytest.mark.parametrize("name", LINKED)
def test_resume_replaces_a_planted_link_and_leaves_its_target_alone(run, tmp_path, name):
    target = plant_link(run, name, tmp_path / "outside")
    assert main(["evolve", "--resume", str(run), "--generations", "5", *TINY]) == 0
    assert target.read_bytes() == VICTIM
    assert (run / name).is_file() and not (run / name).is_symlink()
    assert read_latest_checkpoint(str(run), GENOME_CLASSES).generation == 4


@pytest.mark.parametrize("name", LINKED)
def test_report_replaces_a_planted_link_and_leaves_its_target_alone(run, tmp_path, name, capsys):
    target = plant_link(run, name, tmp_path / "outside")
    assert main(["report", str(run)]) == 0
    assert target.read_bytes() == VICTIM
    if name in ("index.html", "elites.png", "progress.png"):  # what report writes
        assert (run / name).is_file() and not (run / name).is_symlink()
    else:  # read, never followed: the link stays, the target unread and unchanged
        assert (run / name).is_symlink()


def test_a_checkpoints_folder_linked_outside_is_refused_in_one_line(run, tmp_path, capsys):
    outside = tmp_path / "elsewhere"
    shutil.move(run / "checkpoints", outside)
    (run / "checkpoints").symlink_to(outside)
    (outside / ".tmp-someone-elses").write_bytes(VICTIM)
    before = files_of(outside)
    capsys.readouterr()
    assert main(["evolve", "--resume", str(run), "--generations", "5", *TINY]) == 2
    line = one_error_line(capsys)
    assert f"{run / 'checkpoints'} is a symbolic link" in line and "never writes through" in line
    assert files_of(outside) == before
    with pytest.raises(UnsafePathError, match="is a symbolic link"):
        prune_checkpoints(str(run), 1)
    with pytest.raises(UnsafePathError, match="is a symbolic link"):
        write_bytes(str(run / "checkpoints" / "LATEST"), b"x", root=str(run))
    assert files_of(outside) == before


def test_pruning_and_cleaning_remove_links_never_their_targets(run, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    oldest = run / "checkpoints" / "gen-000001.parquet"
    kept = outside / "theirs.parquet"
    shutil.copy(oldest, kept)  # a readable checkpoint: prune would count it as good
    oldest.unlink()
    oldest.symlink_to(kept)
    (outside / "victim").write_bytes(VICTIM)
    for folder in (run, run / "checkpoints"):
        (folder / ".tmp-planted").symlink_to(outside / "victim")
    before = files_of(outside)
    assert remove_stale_temporaries(str(run)) == 2
    assert prune_checkpoints(str(run), 1) == [str(oldest)]
    assert not oldest.exists() and not oldest.is_symlink()
    assert files_of(outside) == before


def test_a_checkpoint_that_is_a_link_is_skipped_with_a_warning(run, tmp_path, caplog):
    newest = run / "checkpoints" / "gen-000003.parquet"
    copy = tmp_path / "copy.parquet"
    shutil.copy(newest, copy)
    newest.unlink()
    newest.symlink_to(copy)
    assert read_latest_checkpoint(str(run), GENOME_CLASSES).generation == 1
    assert f"skipping {newest} is a symbolic link" in caplog.text


# --- 6: bit rot --------------------------------------------------------------------------------


def same_checkpoint(a, b) -> bool:
    fields = ("fitness", "occupied", "individual_id", "parent_id", "parent_cell", "birth_generation")
    same = a.archive.genomes.equals(b.archive.genomes) and all(
        np.array_equal(getattr(a.archive, f), getattr(b.archive, f)) for f in fields
    )
    return same and (a.generation, a.next_id, a.config, a.model_source, a.thumbnails) == (
        b.generation,
        b.next_id,
        b.config,
        b.model_source,
        b.thumbnails,
    )


@pytest.mark.parametrize("encoding", ["direct", "cppn"])
def test_a_flipped_byte_anywhere_falls_back_or_changes_nothing(two_checkpoints, tmp_path, caplog, encoding):
    out = tmp_path / "run"
    shutil.copytree(two_checkpoints[encoding], out)
    newest = out / "checkpoints" / "gen-000003.parquet"
    previous = out / "checkpoints" / "gen-000001.parquet"
    original = newest.read_bytes()
    written = {
        3: read_checkpoint_file(str(newest), GENOME_CLASSES),
        1: read_checkpoint_file(str(previous), GENOME_CLASSES),
    }
    outcomes = {1: 0, 3: 0}
    offsets = np.linspace(0, len(original) - 1, 64).astype(int).tolist()
    for number, offset in enumerate(offsets):
        damaged = bytearray(original)
        damaged[offset] ^= 1 << (number % 8)
        newest.write_bytes(bytes(damaged))  # each flip on a fresh copy of the newest checkpoint
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            resumed = read_latest_checkpoint(str(out), GENOME_CLASSES)
        assert resumed.generation in written, offset
        assert same_checkpoint(resumed, written[resumed.generation]), (
            f"offset {offset}: a changed archive read"
        )
        if resumed.generation == 1:  # a warning naming the damaged file
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1 and str(newest) in warnings[0], (offset, warnings)
        outcomes[resumed.generation] += 1
    # Many flips are noticed; the rest hit bytes nothing reads (statistics, names of page
    # encodings, ...: half of a tiny checkpoint is its footer).
    assert outcomes[1] >= len(offsets) // 3, outcomes


# Reads run argv[1]'s newest checkpoint with each of the 3 low bits of 64 footer bytes from argv[2]
# flipped (where a column's repetition type is).
FOOTER_FLIPS = """
import logging, sys
from pathlib import Path
from fooling.evo.run import GENOME_CLASSES
from fooling.evo.store.checkpoint import read_latest_checkpoint
logging.disable(logging.CRITICAL)
out, start = Path(sys.argv[1]), int(sys.argv[2])
newest = out / "checkpoints" / "gen-000003.parquet"
original = newest.read_bytes()
found = set()
for offset in range(start, min(start + 64, len(original))):
    for bit in range(3):
        damaged = bytearray(original)
        damaged[offset] ^= 1 << bit
        newest.write_bytes(bytes(damaged))
        found.add(read_latest_checkpoint(str(out), GENOME_CLASSES).generation)
print(sorted(found))
"""


def test_a_flipped_bit_in_the_footer_never_aborts_the_process(two_checkpoints, tmp_path):
    """pyarrow aborts the process (an uncaught C++ exception) on some damaged footers' column chunks."""
    out = tmp_path / "run"
    shutil.copytree(two_checkpoints["cppn"], out)
    data = (out / "checkpoints" / "gen-000003.parquet").read_bytes()
    start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")  # the schema: repetition types
    result = subprocess.run([sys.executable, "-c", FOOTER_FLIPS, str(out), str(start)],
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[1, 3]"


def test_resume_falls_back_past_a_rotten_genome_and_continues(two_checkpoints, tmp_path, caplog, capsys):
    """A genome changed under an intact page CRC (as a flip before writing would): its SHA-256 says so."""
    out = tmp_path / "cppn"
    shutil.copytree(two_checkpoints["cppn"], out)
    newest = out / "checkpoints" / "gen-000003.parquet"
    table = pq.read_table(newest)
    name = "genome_edge_weight"
    cells = table.column(name).to_pylist()
    cells[0] = bytes([cells[0][0] ^ 0x40]) + cells[0][1:]  # one bit of one weight
    table = table.set_column(
        table.schema.get_field_index(name), name, pa.array(cells, table.schema.field(name).type)
    )
    pq.write_table(table, newest, write_page_checksum=True)
    with pytest.raises(
        CheckpointError, match=r"damaged checkpoint: the genome of class \d+ does not match its SHA-256"
    ):
        read_checkpoint_file(str(newest), GENOME_CLASSES)
    with caplog.at_level(logging.INFO, logger="fooling.evo.run"):
        assert main(["evolve", "--resume", str(out), "--generations", "5", *TINY, "--no-report"]) == 0
    assert f"skipping {newest} is a damaged checkpoint" in caplog.text
    assert "resuming" in caplog.text and "after generation 1" in caplog.text
    assert read_latest_checkpoint(str(out), GENOME_CLASSES).generation == 4


def test_rotten_run_metadata_is_damaged(run):
    newest = run / "checkpoints" / "gen-000003.parquet"
    table = pq.read_table(newest)
    stored = table.schema.metadata
    text = stored[METADATA_KEY].replace(b'"next_id": ', b'"next_id": 1')  # one digit more
    pq.write_table(table.replace_schema_metadata({**stored, METADATA_KEY: text}), newest)
    with pytest.raises(CheckpointError, match="its run metadata does not match its SHA-256 checksum"):
        read_checkpoint_file(str(newest), GENOME_CLASSES)


def test_checkpoints_without_checksums_still_read(run, caplog):
    """As format version 2 wrote them (and as a hand edit leaves them): read, with a debug line."""
    newest = run / "checkpoints" / "gen-000003.parquet"
    before = read_checkpoint_file(str(newest), GENOME_CLASSES)
    table = pq.read_table(newest).drop_columns([CHECKSUM_COLUMN])
    metadata = json.loads(table.schema.metadata[METADATA_KEY])
    metadata["format_version"] = 2
    del metadata["rows"]
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()}), newest)
    with caplog.at_level(logging.DEBUG, logger="fooling.evo.store.checkpoint"):
        after = read_checkpoint_file(str(newest), GENOME_CLASSES)
    assert same_checkpoint(before, after)
    assert "has no genome checksums" in caplog.text


# --- 6: every field read is type-checked ---------------------------------------------------------


def reseal(path: Path, table: pa.Table, **metadata_changes) -> None:
    """Write ``table`` to ``path`` with valid checksums, as a crafted (not rotten) checkpoint would be."""
    metadata = json.loads(table.schema.metadata[METADATA_KEY])
    metadata.update(metadata_changes)
    text = json.dumps(metadata).encode()
    checksum = hashlib.sha256(text).hexdigest().encode()
    table = table.replace_schema_metadata({METADATA_KEY: text, METADATA_CHECKSUM_KEY: checksum})
    pq.write_table(table, path, write_page_checksum=True)


def with_column(table: pa.Table, name: str, values: list, kind: pa.DataType | None = None) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, pa.array(values, kind))


XSS = "<img src=x onerror=alert(1)>"
CRAFTED = {
    "class id out of range": (
        lambda t, n: with_column(t, "class_id", [99] * n, pa.int32()),
        {},
        "class_id 99",
    ),
    "class ids as strings": (lambda t, n: with_column(t, "class_id", ["1"] * n), {}, "class_id holds string"),
    "fitness above 1": (lambda t, n: with_column(t, "fitness", [1.5] * n, pa.float32()), {}, "fitness 1.5"),
    "fitness NaN": (
        lambda t, n: with_column(t, "fitness", [float("nan")] * n, pa.float32()),
        {},
        "fitness nan",
    ),
    "birth generation negative": (
        lambda t, n: with_column(t, "birth_generation", [-3] * n, pa.int32()),
        {},
        "birth_generation -3",
    ),
    "birth generation HTML": (
        lambda t, n: with_column(t, "birth_generation", [XSS] * n),
        {},
        "birth_generation holds",
    ),
    "thumbnail not a PNG": (
        lambda t, n: with_column(t, "image_png", [b"<svg onload=x>"] * n),
        {},
        "not a PNG",
    ),
    "class name not its class": (
        lambda t, n: with_column(t, "class_name", [XSS] * n),
        {},
        "class_name '<img",
    ),
    "individual id past next_id": (
        lambda t, n: with_column(t, "individual_id", [10**9] * n, pa.int64()),
        {},
        "individual_id 1000000000",
    ),
    "generation negative": (
        lambda t, n: t,
        {"generation": -5},
        "its generation is -5, expected a non-negative",
    ),
    "next_id a string": (lambda t, n: t, {"next_id": "7"}, "its next_id is '7'"),
    "class names not names": (lambda t, n: t, {"class_names": [1, 2]}, "class_names are not a list of names"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_every_field_read_from_a_checkpoint_is_checked(run, caplog, case):
    edit, metadata_changes, message = CRAFTED[case]
    newest = run / "checkpoints" / "gen-000003.parquet"
    table = pq.read_table(newest)
    reseal(newest, edit(table, table.num_rows), **metadata_changes)
    with pytest.raises(CheckpointError) as raised:
        read_checkpoint_file(str(newest), GENOME_CLASSES)
    text = str(raised.value)
    assert text.startswith(f"{newest} is a damaged checkpoint: ") and message in text and "\n" not in text
    # The report's read (rows only, no genomes) and resume both fall back to the previous one.
    assert read_latest_rows(str(run)).metadata["generation"] == 1
    assert read_latest_checkpoint(str(run), GENOME_CLASSES).generation == 1
    assert f"skipping {newest} is a damaged checkpoint" in caplog.text


def test_a_negative_generation_is_one_line_naming_file_and_field(run, capsys):
    (run / "checkpoints" / "gen-000001.parquet").unlink()
    newest = run / "checkpoints" / "gen-000003.parquet"
    reseal(newest, pq.read_table(newest), generation=-5)
    capsys.readouterr()
    assert main(["evolve", "--resume", str(run), "--generations", "9", *TINY]) == 2
    line = one_error_line(capsys)
    assert str(newest) in line and "generation is -5, expected a non-negative integer" in line


# --- 8/10: locks and failed writes -----------------------------------------------------------


def plant_lock(folder: Path, record: object) -> Path:
    lock = folder / LOCK_NAME
    lock.write_text(json.dumps(record))
    return lock


@pytest.mark.parametrize("pid", [99999999999999999999, 0, -1, 2**40, "123", True, 1.5, None])
def test_a_lock_naming_no_process_is_damaged_and_says_how_to_remove_it(run, capsys, pid):
    lock = plant_lock(run, {"pid": pid, "host": socket.gethostname(), "command": "evolve"})
    with pytest.raises(RunLockedError, match=r"is a damaged lock \(it names pid .*, not a process id\)"):
        RunLock(str(run), "evolve").acquire()
    before = files_of(run)
    capsys.readouterr()
    assert main(["evolve", "--resume", str(run), "--generations", "5", *TINY]) == 2
    line = one_error_line(capsys)
    assert f"{lock} is a damaged lock" in line and f"delete it: rm {lock}" in line
    assert "in use by pid" not in line and lock.exists() and files_of(run) == before


@pytest.mark.parametrize("target", ["dangling", "a dead process's lock"])
def test_a_lock_that_is_a_link_is_refused_never_followed(run, tmp_path, capsys, target):
    lock = run / LOCK_NAME
    pointed = tmp_path / "elsewhere"
    if target != "dangling":
        pointed.write_text(json.dumps({"pid": 2**22 - 1, "host": socket.gethostname()}))
    lock.symlink_to(pointed)
    capsys.readouterr()
    assert main(["evolve", "--resume", str(run), "--generations", "5", *TINY]) == 2
    line = one_error_line(capsys)
    assert f"{lock} is a symbolic link, not a lock" in line and f"rm {lock}" in line
    assert "keeps changing" not in line and lock.is_symlink()
    assert pointed.exists() == (target != "dangling")


def test_a_lock_that_is_a_fifo_is_refused_at_once(run):
    os.mkfifo(run / LOCK_NAME)
    with pytest.raises(RunLockedError, match="is unreadable"):
        RunLock(str(run), "evolve").acquire()


def test_a_full_disk_names_the_file_and_loses_nothing(run, capsys, monkeypatch):
    before = files_of(run)

    def full(handle, data):
        if len(data) > 100:  # the write probe (5 bytes) passes, the run's files do not
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(handle, data)

    original = location_module._write_all

    monkeypatch.setattr(location_module, "_write_all", full)
    capsys.readouterr()
    assert main(["evolve", "--resume", str(run), "--generations", "5", *TINY, "--no-report"]) == 2
    line = one_error_line(capsys)
    assert "cannot write" in line and "No space left on device" in line
    assert str(run) in line and ("stats.parquet" in line or "gen-000004.parquet" in line)
    after = files_of(run)
    assert {name: data for name, data in after.items() if name != ".fooling-run"} == {
        name: data for name, data in before.items() if name != ".fooling-run"
    }
    assert not list(run.rglob(".tmp-*"))


# --- 11: a run folder never says where requests (and the user's token) go ------------------------

TOKEN = "s3cr3t-token-of-the-user-for-their-own-endpoint"


@pytest.fixture
def listener():
    """A loopback HTTP server recording every request: the host a crafted run folder names."""
    seen: list[tuple[str, str, str | None]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            seen.append((self.command, self.path, self.headers.get("Authorization")))
            self.send_response(404)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v2/models/victim-model", seen
    server.shutdown()
    server.server_close()


def name_endpoint(run: Path, url: str) -> None:
    """Make ``run``'s newest checkpoint name ``url`` as its model, as anyone sharing the folder can."""
    newest = run / "checkpoints" / "gen-000003.parquet"
    table = pq.read_table(newest)
    metadata = json.loads(table.schema.metadata[METADATA_KEY])
    config = {**metadata["config"], "model": url}
    reseal(newest, table, config=config, model=url, model_source={"reference": url, "kind": "endpoint"})


def audit_folder(folder: Path, **settings) -> Path:
    """An audit folder whose settings are ``settings`` over a small audit of mnist-lenet."""
    folder.mkdir()
    (folder / ".fooling-run").write_text(json.dumps({"kind": "audit"}))
    stored = {"model": "mnist-lenet", "budget": "small", "real_images": None, "reference": "none",
              "seed": 0, "device": None, "engine": "auto", **settings}  # fmt: skip
    (folder / "audit-settings.json").write_text(json.dumps(stored))
    return folder


@pytest.mark.parametrize(
    "command", ["evolve --resume", "transfer", "ablate", "audit --model", "audit --reference"]
)
def test_an_endpoint_a_run_folder_names_gets_no_request(
    run, tmp_path, listener, capsys, monkeypatch, command
):
    url, seen = listener
    monkeypatch.setenv("FOOLING_ENDPOINT_TOKEN", TOKEN)
    name_endpoint(run, url)
    flag = "--reference" if command == "audit --reference" else "--model"
    if command.startswith("audit"):
        folder = audit_folder(tmp_path / "audit", **{flag[2:]: url})
        argv = ["audit", "--resume", str(folder), "--no-progress"]
    else:
        argv = {
            "evolve --resume": ["evolve", "--resume", str(run), "--generations", "5", *TINY],
            "transfer": ["transfer", str(run), "--to", "mnist-lenet"],
            "ablate": ["ablate", str(run), "--grid", "2"],
        }[command]
    before = files_of(run)
    capsys.readouterr()
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert f"names the endpoint {url}" in line and f"give {flag} {url} to use it" in line
    assert TOKEN not in line
    assert seen == []  # not one request: no token, no image, not even the metadata
    assert files_of(run) == before
    # Another endpoint named on the command line is no permission either.
    other = url.replace("victim-model", "another-model")
    assert main([*argv, flag, other]) == 2
    assert f"give {flag} {url} to use it" in one_error_line(capsys)
    assert seen == []


def test_naming_the_run_folders_endpoint_on_the_command_line_lets_requests_go(
    run, listener, capsys, monkeypatch
):
    url, seen = listener
    monkeypatch.setenv("FOOLING_ENDPOINT_TOKEN", TOKEN)
    name_endpoint(run, url)
    capsys.readouterr()
    # The user says where: the requests go there, with the user's token (the stand-in has no model).
    assert main(["evolve", "--resume", str(run), "--model", url, "--generations", "5", *TINY]) == 2
    assert "the server has no model 'victim-model'" in one_error_line(capsys)
    assert seen and all(authorization == f"Bearer {TOKEN}" for _, _, authorization in seen)


# --- 12: what a checkpoint holds must be what its model gives --------------------------------------


def test_more_class_names_than_the_model_has_are_refused_on_resume_in_one_line(run, capsys):
    newest = run / "checkpoints" / "gen-000003.parquet"
    table = pq.read_table(newest)
    names = json.loads(table.schema.metadata[METADATA_KEY])["class_names"]
    reseal(newest, table, class_names=[*names, "ten", "eleven"])
    before = files_of(run)
    capsys.readouterr()
    assert main(["evolve", "--resume", str(run), "--generations", "5", *TINY]) == 2
    line = one_error_line(capsys)
    assert f"{newest} holds 12 classes where its model mnist-lenet and --classes give 10" in line
    assert files_of(run) == before


# --- 13: the statistics table ----------------------------------------------------------------------


def stats_table(run: Path, case: str) -> pa.Table:
    """A crafted ``stats.parquet``: columns left out, a missing value, or millions of rows."""
    if case == "no columns but gen":
        return pa.table({"gen": pa.array([0, 1, 2], pa.int64())})
    if case == "a missing value":
        table = pq.read_table(run / "stats.parquet")
        return with_column(table, "max", [None] * table.num_rows, pa.float64())
    rows = 3_000_000  # 69 KB with zstd, 2.5 GB once read into rows
    return pa.table({name: pa.array(np.zeros(rows, np.int64 if name == "gen" else np.float64))
                     for name in ("gen", "max", "median", "mean", "min")})  # fmt: skip


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("no columns but gen", "no column median"),
        ("a missing value", "column max has missing values"),
        ("3 million rows", "3,000,000 rows, more than the run's 4 generations"),
    ],
)
def test_a_crafted_stats_table_is_skipped_with_one_warning(run, caplog, monkeypatch, case, reason):
    pq.write_table(stats_table(run, case), run / "stats.parquet", compression="zstd")
    read = pq.ParquetFile.read

    def read_bounded(self, *args, **kwargs):
        assert self.metadata.num_rows < 1000, "a table longer than the run was read"
        return read(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read", read_bounded)
    with caplog.at_level(logging.WARNING):
        assert main(["report", str(run)]) == 0
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert warnings == [f"skipping {run / 'stats.parquet'}: not a statistics table a run writes ({reason})"]


# --- 14: stored thumbnails decoded by transfer and ablate ----------------------------------------


@functools.cache
def zero_png(width: int, height: int) -> bytes:
    """A valid 8-bit gray PNG of zeros, compressed row by row (20000x20000: a few hundred KB)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


@pytest.mark.parametrize("command", ["transfer", "ablate"])
@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            "sizes",
            "the stored images of rows 0 and 1 differ in size (height x width x channels 28x28x1 and "
            "29x28x1); a run stores one size",
        ),
        ("bomb", "the stored image of row 0 is a 20000x20000 PNG, larger than 1024x1024"),
        ("large", "the stored image of row 0 is a 512x512 PNG, larger than the 128x128 a run stores"),
    ],
)
def test_stored_thumbnails_not_as_a_run_writes_them_are_one_line(run, capsys, command, case, message):
    newest = run / "checkpoints" / "gen-000003.parquet"
    table = pq.read_table(newest)
    sides = {"bomb": lambda row: (20000, 20000), "large": lambda row: (512, 512),
             "sizes": lambda row: (28, 28 + row)}[case]  # fmt: skip
    pngs = [zero_png(*sides(row)) for row in range(table.num_rows)]
    # An unknown genome class: the stored thumbnails are what transfer and ablate score.
    reseal(newest, with_column(table, "image_png", pngs, pa.binary()), genome_class="FromANewerVersion")
    before = files_of(run)
    capsys.readouterr()
    argv = ["transfer", str(run), "--to", "mnist-lenet"] if command == "transfer" else ["ablate", str(run)]
    assert main(argv) == 2
    assert one_error_line(capsys) == f"fooling: error: {newest}: {message}"
    assert files_of(run) == before


# --- a checkpoint copied in from another run ---------------------------------------------------


def test_a_checkpoint_copied_from_another_run_is_not_continued_as_this_one(run, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["evolve", "--out", str(other), "--generations", "4", "--seed", "9", *TINY]) == 0
    newest = run / "checkpoints" / "gen-000003.parquet"  # the one LATEST names
    shutil.copyfile(other / "checkpoints" / "gen-000003.parquet", newest)
    before = files_of(run)
    assert main(["evolve", "--resume", str(run), "--generations", "6", *TINY]) == 2
    line = one_error_line(capsys)
    assert "gen-000003.parquet was written by another run" in line and "refusing to continue it" in line
    assert files_of(run) == before
    newest.unlink()  # what the message says to do: the run's own checkpoints resume
    assert main(["evolve", "--resume", str(run), "--generations", "3", *TINY]) == 0
    assert read_latest_checkpoint(str(run), GENOME_CLASSES).generation == 2
    # The whole folder, copied, is the same run: it resumes.
    copied = tmp_path / "copied"
    shutil.copytree(other, copied)
    assert main(["evolve", "--resume", str(copied), "--generations", "5", *TINY]) == 0


# --- small records planted huge (sparse: no disk used) -----------------------------------------------


HUGE = 8 * 2**30


def test_a_huge_run_record_is_one_line_never_read_whole(run, capsys):
    sparse_file(run / ".fooling-run", HUGE)
    assert main(["evolve", "--resume", str(run), "--generations", "5", *TINY]) == 2
    line = one_error_line(capsys)
    assert ".fooling-run holds over 4,096 bytes" in line and "refusing to read it" in line


def test_a_huge_latest_pointer_is_passed_over_for_the_newest_checkpoint(run):
    sparse_file(run / "checkpoints" / "LATEST", HUGE)
    assert read_latest_checkpoint(str(run), GENOME_CLASSES).generation == 3
    assert main(["evolve", "--resume", str(run), "--generations", "5", *TINY]) == 0
    assert (run / "checkpoints" / "LATEST").read_text().strip() == "gen-000004.parquet"
