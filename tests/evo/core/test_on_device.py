"""Generations on the scorer's device (``--vary-on scorer``), exercised on the CPU.

The device path keeps the archive's genomes as tensors and varies them with torch; on the CPU
it runs the same code as on a GPU, with torch's CPU generator. What users rely on: the same
seed gives the same archive, ``--resume`` continues bit for bit, the checkpoint names the
random streams, a checkpoint of the host's streams still resumes (with one log line), and
what cannot run on a device is one line before any work.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from fooling.encodings import CPPNEncoding, DirectEncoding, TensorGenomes, UserError
from fooling.evo.cli import main
from fooling.evo.config import RunConfig
from fooling.evo.emitters import get_emitter
from fooling.evo.on_device import check_device_memory, rng_scheme, varies_on_device
from fooling.evo.run import GENOME_CLASSES, evolve, resume_config
from fooling.evo.store.checkpoint import (
    METADATA_CHECKSUM_KEY,
    METADATA_KEY,
    checkpoint_uris,
    read_latest_checkpoint,
)

TINY = dict(model="mnist-lenet", population=40, batch_size=20, seed=3, vary_on="scorer", device="cpu")


def run(tmp_path: Path, name: str, **fields) -> RunConfig:
    return RunConfig(**{**TINY, "out": str(tmp_path / name), **fields})


def metadata(out: Path) -> dict:
    newest = read_latest_checkpoint(str(out), GENOME_CLASSES).path
    return json.loads(pq.read_schema(newest).metadata[METADATA_KEY])


@pytest.mark.parametrize("encoding", ["direct", "cppn"])
def test_same_seed_same_archive_and_resume_is_bit_identical(fooling_home, tmp_path, encoding):
    extra = {"crossover_probability": 0.5} if encoding == "direct" else {}
    straight = evolve(
        run(tmp_path, "straight", encoding=encoding, generations=6, **extra), show_progress=False
    )
    again = evolve(run(tmp_path, "again", encoding=encoding, generations=6, **extra), show_progress=False)
    assert straight.archive.equals(again.archive)
    evolve(run(tmp_path, "split", encoding=encoding, generations=3, **extra), show_progress=False)
    resumed = evolve(resume_config(str(tmp_path / "split"), generations=6), resume=True, show_progress=False)
    assert resumed.archive.equals(straight.archive)
    # The elites come back to the caller as numpy arrays, and the run really used the device path.
    assert isinstance(straight.archive.genomes, GENOME_CLASSES[type(straight.archive.genomes).__name__])
    assert metadata(tmp_path / "straight")["rng"]["kind"] == "torch-cpu"
    assert len(straight.archive) == 10


def test_device_streams_differ_from_host_streams_and_are_recorded(fooling_home, tmp_path):
    device = evolve(run(tmp_path, "device", generations=2), show_progress=False).archive
    host = evolve(run(tmp_path, "host", generations=2, vary_on="host"), show_progress=False).archive
    assert metadata(tmp_path / "host")["rng"]["kind"] == "numpy-seed-sequence"
    assert metadata(tmp_path / "device")["rng"]["kind"] == "torch-cpu"
    # Generation 0's random genomes come from different generators.
    assert not np.array_equal(device.genomes.pixels, host.genomes.pixels)


def test_a_host_scheme_checkpoint_resumes_on_the_device_with_one_log_line(fooling_home, tmp_path, caplog):
    evolve(run(tmp_path, "old", generations=3, vary_on="host"), show_progress=False)
    caplog.set_level("WARNING", logger="fooling")
    config = resume_config(str(tmp_path / "old"), generations=5, vary_on="scorer")
    search = evolve(config, resume=True, show_progress=False)
    assert search.generation == 5
    lines = [r.getMessage() for r in caplog.records if "random streams" in r.getMessage()]
    assert len(lines) == 1 and "numpy-seed-sequence" in lines[0] and "torch-cpu" in lines[0]
    assert metadata(tmp_path / "old")["rng"]["kind"] == "torch-cpu"
    # Its archive went on from the checkpoint: every elite of generation <= 2 that survived is as before.
    first = read_latest_checkpoint(str(tmp_path / "old"), GENOME_CLASSES)
    assert first.generation == 4 and len(first.archive) == 10


def test_a_checkpoint_naming_an_unknown_scheme_is_damaged(fooling_home, tmp_path, caplog, capsys):
    evolve(run(tmp_path, "run", generations=2), show_progress=False)
    newest = checkpoint_uris(str(tmp_path / "run"))[-1]
    table = pq.read_table(newest)
    data = json.loads(table.schema.metadata[METADATA_KEY])
    data["rng"]["kind"] = "python-random"
    text = json.dumps(data).encode()
    table = table.replace_schema_metadata(
        {METADATA_KEY: text, METADATA_CHECKSUM_KEY: hashlib.sha256(text).hexdigest().encode()}
    )
    pq.write_table(table, newest)
    code = main(["evolve", "--resume", str(tmp_path / "run"), "--generations", "3", "--no-progress"])
    assert code == 2
    assert "python-random" in caplog.text + capsys.readouterr().err


def test_what_cannot_vary_on_a_device_is_one_line_before_any_work(fooling_home, tmp_path, capsys):
    out = tmp_path / "gradient"
    code = main(["evolve", "--encoding", "cppn", "--emitter", "gradient", "--vary-on", "scorer",
                 "--device", "cpu", "--generations", "2", "--population", "8", "--out", str(out),
                 "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--vary-on host" in err[0] and "gradient" in err[0]
    assert not out.exists() or not any(out.iterdir())
    code = main(["evolve", "--encoding", "cppn", "--emitter", "cma-me", "--vary-on", "scorer",
                 "--generations",
                 "2", "--out", str(tmp_path / "cma"), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cma-me" in err[0] and "--vary-on host" in err[0]
    code = main(["evolve", "--vary-on", "gpu", "--out", str(tmp_path / "bad"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--vary-on must be" in err[0]


def test_auto_varies_on_a_cuda_scorer_when_the_emitter_and_encoding_can():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    paper, cma = get_emitter("paper"), get_emitter("cma-me")
    direct = DirectEncoding(channels=1, height=28, width=28)
    assert varies_on_device("auto", cuda, paper, direct) and not varies_on_device("auto", cpu, paper, direct)
    assert varies_on_device("scorer", cpu, paper, direct)
    assert not varies_on_device("host", cuda, paper, direct)
    # The default never refuses: an emitter with numpy steps of its own varies on the host.
    assert not varies_on_device("auto", cuda, cma, direct)
    assert rng_scheme("auto", cuda, cma, direct) == "numpy-seed-sequence"
    with pytest.raises(UserError, match="--emitter cma-me has its own"):
        varies_on_device("scorer", cuda, cma, direct)
    assert rng_scheme("auto", cuda, paper, direct) == "torch-cuda"
    assert rng_scheme("auto", cpu, paper, direct) == "numpy-seed-sequence"


def test_a_gpu_without_room_for_the_archive_is_refused_naming_the_need(monkeypatch):
    # The direct-encoded ImageNet archive: 1,000 cells x 602 kB, on a GPU with 256 MiB free.
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (256 * 2**20, 80 * 2**30))
    with pytest.raises(UserError, match=r"needs 574 MiB on the GPU, but only 256 of its 81,920 MiB"):
        check_device_memory(torch.device("cuda"), 1000 * 3 * 224 * 224 * 4, "the archive")
    check_device_memory(torch.device("cuda"), 100 * 2**20, "the archive")  # fits: no error


def test_tensor_genomes_round_trip_and_assign_like_numpy_batches():
    encoding = CPPNEncoding(outputs=3, height=8, width=8)
    host = encoding.random(6, np.random.default_rng(0))
    device = TensorGenomes.from_host(host, "cpu")
    assert device.to_host().equals(host) and len(device) == 6
    target = device.copy()
    target.assign(np.array([0, 5]), device, np.array([3, 1]))
    expected = host.copy()
    expected.assign(np.array([0, 5]), host, np.array([3, 1]))
    assert target.equals(expected)
    assert not device.take([0]).equals(host.take([1]))


def test_a_cppn_search_whose_mutation_is_replayed_from_recordings_finds_the_same_archive(
    fooling_home, tmp_path, request
):
    # On CUDA the CPPN mutation is replayed from a CUDA graph; here from the CPU stand-in.
    direct = evolve(run(tmp_path, "called", encoding="cppn", generations=4), show_progress=False)
    replayed_graphs = request.getfixturevalue("replayed_graphs")
    replayed = evolve(run(tmp_path, "replayed", encoding="cppn", generations=4), show_progress=False)
    assert replayed_graphs.recorded == 1  # batches of 20 children: one signature
    assert replayed.archive.equals(direct.archive)
