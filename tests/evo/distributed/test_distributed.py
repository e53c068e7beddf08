"""Ray backend: determinism across actor counts, actor and driver crashes, a real cluster, bad input."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
from backend_wrappers import ActorKiller, Recording
from netcheck import (
    descendants,
    free_port,
    listening_sockets,
    on_loopback,
    processes_with,
    ray_start_port_flags,
    wait_for_job,
    worker_ports_low,
)

import fooling.evo.distributed.backend as distributed
import fooling.evo.run as run_module
import fooling.evo.store.location as location_module
import fooling.evo.store.runfolder as runfolder_module
from fooling.evo.archive import BatchBest
from fooling.evo.cli import main
from fooling.evo.config import RunConfig
from fooling.evo.run import GENOME_CLASSES, evolve, resume_config
from fooling.evo.search import BackendError, Candidates
from fooling.evo.store.checkpoint import read_latest_checkpoint, write_checkpoint

TINY = dict(model="mnist-lenet", population=40, batch_size=10, seed=3)
GENERATIONS = 5
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[3]


def config(tmp_path: Path, name: str, **fields) -> RunConfig:
    return RunConfig(**{**TINY, "generations": GENERATIONS, "out": str(tmp_path / name), **fields})


def run_naming_a_cluster(tmp_path: Path, name: str, address: str) -> Path:
    """A 2-generation run whose stored config names the cluster ``address``, like a run folder
    written on someone else's cluster (run in this process, then its config changed)."""
    out = tmp_path / name
    evolve(config(tmp_path, name, generations=2), show_progress=False)
    stored = read_latest_checkpoint(str(out), GENOME_CLASSES)
    stored.config = dataclasses.replace(stored.config, address=address)
    write_checkpoint(str(out), stored)
    return out


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("fooling: error: ")
    return err[0]


@pytest.fixture(scope="module")
def reference(fooling_home, tmp_path_factory):
    """The in-process run (no Ray) every distributed run must reproduce bit for bit."""
    return evolve(config(tmp_path_factory.mktemp("ref"), "local"), show_progress=False)


@pytest.fixture
def backends(monkeypatch):
    """Every backend ``evolve`` makes, kept for inspection after the run."""
    made = []
    original = run_module.make_backend

    def keep(*args, **kwargs):
        backend = original(*args, **kwargs)
        made.append(backend)
        return backend

    monkeypatch.setattr(run_module, "make_backend", keep)
    return made


@pytest.mark.parametrize(("workers", "scorers"), [(1, 1), (1, 2), (4, 2)])
def test_same_archive_whatever_the_number_of_actors(
    ray_session, reference, tmp_path, backends, workers, scorers
):
    search = evolve(config(tmp_path, "ray", workers=workers, scorers=scorers), show_progress=False)
    assert search.archive.equals(reference.archive)
    assert search.next_id == reference.next_id
    backend = backends[0]
    assert isinstance(backend, distributed.RayBackend)
    # Work really went through every actor, and each scorer holds its own (fake) GPU.
    assert [s.kind for s in backend.stats].count("mutator") == workers
    assert sum(s.children for s in backend.stats if s.kind == "scorer") == GENERATIONS * TINY["population"]
    gpu_ids = [tuple(s.gpu_ids) for s in backend.stats if s.kind == "scorer"]
    assert all(len(ids) == 1 for ids in gpu_ids) and len(set(gpu_ids)) == scorers
    assert all(s.calls > 0 for s in backend.stats if s.kind == "scorer")
    assert "restarts 0" in backend.summary()


def test_children_go_from_mutator_to_scorer_and_only_candidates_reach_the_driver(
    ray_session, reference, tmp_path, monkeypatch
):
    returned = []
    original = run_module.make_backend
    monkeypatch.setattr(run_module, "make_backend", lambda *a, **k: Recording(original(*a, **k), returned))
    search = evolve(config(tmp_path, "recorded", workers=1, scorers=1), show_progress=False)
    assert search.archive.equals(reference.archive)
    assert len(returned) == GENERATIONS * TINY["population"] // TINY["batch_size"]
    for candidates, best in returned:
        assert isinstance(candidates, Candidates) and len(candidates.rows) == len(candidates.genomes)
        # Each cell's best row, not the whole (batch, cells) matrix; at most one row per cell.
        assert isinstance(best, BatchBest) and best.size == TINY["batch_size"]
        assert set(candidates.rows) <= set(best.row)


def test_cppn_genomes_on_ray_give_the_in_process_archive(ray_session, fooling_home, tmp_path, backends):
    # CPPN genomes are ragged (padded node and edge arrays): the parent pool, the rows
    # into it and the rendering on scorer actors must all carry them unchanged.
    local = evolve(config(tmp_path, "local", encoding="cppn"), show_progress=False)
    on_ray = evolve(config(tmp_path, "ray", encoding="cppn", workers=2, scorers=1), show_progress=False)
    assert isinstance(backends[1], distributed.RayBackend)
    assert on_ray.archive.equals(local.archive) and len(local.archive) == 10


def test_killed_mutator_and_scorer_cost_a_retry_not_data(ray_session, reference, tmp_path, monkeypatch):
    killers = []
    original = run_module.make_backend

    def make(*args, **kwargs):
        killers.append(ActorKiller(original(*args, **kwargs), {1: "mutator", 3: "scorer"}))
        return killers[0]

    monkeypatch.setattr(run_module, "make_backend", make)
    search = evolve(config(tmp_path, "killed", workers=1, scorers=1), show_progress=False)
    killer = killers[0]
    assert len(killer.killed) == 2
    restarts = {s.kind: s.restarts for s in killer.inner.stats}
    assert restarts == {"mutator": 1, "scorer": 1}
    assert {s.pid for s in killer.inner.stats}.isdisjoint(killer.killed)
    assert search.archive.equals(reference.archive)


def _crash_in_generation_2(genomes, rng, generation):
    if generation >= 2:
        os._exit(3)  # the actor's process dies, every time it gets this work
    return _MUTATE(genomes, rng, generation)


_MUTATE = None


def test_actor_that_keeps_crashing_gives_up_after_a_checkpoint(ray_session, tmp_path, monkeypatch, capsys):
    from ray import cloudpickle

    global _MUTATE
    # Actors cannot import this test module: ship its functions by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    original_toolbox = run_module.make_toolbox

    def crashing_toolbox(encoding):
        global _MUTATE
        toolbox = original_toolbox(encoding)
        _MUTATE = encoding.mutate
        toolbox.register("mutate", _crash_in_generation_2)
        return toolbox

    monkeypatch.setattr(run_module, "make_toolbox", crashing_toolbox)
    monkeypatch.setattr(distributed, "MAX_RESTARTS", 1)
    out = tmp_path / "crashing"
    code = main(
        ["evolve", "--workers", "1", "--population", "40", "--batch-size", "20", "--generations", "6"]
        + ["--seed", "3", "--checkpoint-every", "0", "--out", str(out), "--no-progress", "--no-report"]
    )
    assert code == 2
    line = one_error_line(capsys)
    assert "died more than 1 times" in line
    # Generations 0 and 1 finished before the crashes: their archive is saved, intact.
    saved = read_latest_checkpoint(str(out), GENOME_CLASSES)
    assert saved.generation == 1 and saved.next_id == 80
    _MUTATE = None


def test_driver_killed_with_sigkill_resumes_to_the_same_archive(ray_session, fooling_home, tmp_path):
    out = tmp_path / "driver"
    gcs = ray_session.get_runtime_context().gcs_address
    command = [str(BIN / "fooling"), "evolve", "--address", gcs, "--workers", "1", "--generations", "100000"]
    command += ["--population", "40", "--batch-size", "10", "--seed", "3", "--checkpoint-every", "2"]
    command += ["--out", str(out), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    latest = out / "checkpoints" / "LATEST"
    deadline = time.monotonic() + 120
    while not latest.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    output = process.communicate(timeout=60)[0].decode(errors="replace")
    assert process.returncode == -signal.SIGKILL, output[-2000:]
    killed_at = read_latest_checkpoint(str(out), GENOME_CLASSES).generation
    final = 16
    assert killed_at < final - 1, "the driver was killed too late to test anything"
    code = main(["evolve", "--resume", str(out), "--generations", str(final), "--no-progress", "--no-report"])
    assert code == 0
    resumed = read_latest_checkpoint(str(out), GENOME_CLASSES)
    straight = evolve(config(tmp_path, "straight", generations=final), show_progress=False)
    assert resumed.generation == final - 1
    assert resumed.archive.equals(straight.archive)
    assert resumed.next_id == straight.next_id


def test_checkpoints_on_a_pyarrow_filesystem_uri(ray_session, reference, tmp_path, monkeypatch):
    """``--out`` on a non-local filesystem: an in-memory pyarrow filesystem stands in for S3."""
    store = pafs._MockFileSystem()
    original = location_module._filesystem
    opened = []

    def filesystem(uri):
        if uri.startswith("mock://"):
            opened.append(uri)
            return store, uri.removeprefix("mock://")
        return original(uri)

    monkeypatch.setattr(location_module, "_filesystem", filesystem)
    monkeypatch.setattr(runfolder_module, "_filesystem", filesystem)  # the run-folder lock's store
    out = "mock://bucket/runs/a"
    evolve(config(tmp_path, "unused", out=out, generations=3, workers=1), show_progress=False)
    names = [info.base_name for info in store.get_file_info(pafs.FileSelector("bucket/runs/a/checkpoints"))]
    assert sorted(names) == ["LATEST", "gen-000002.parquet"]
    assert not any(
        ".fooling-write-probe" in info.path
        for info in store.get_file_info(pafs.FileSelector("bucket", recursive=True))
    )
    resumed = evolve(resume_config(out, generations=GENERATIONS), resume=True, show_progress=False)
    assert resumed.archive.equals(reference.archive)
    assert opened


def test_unreachable_address_is_one_line_exit_2(fooling_home, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["evolve", "--workers", "1", "--address", f"127.0.0.1:{free_port()}", "--out", str(out)])
    assert code == 2
    assert "no Ray cluster answers there" in one_error_line(capsys)
    assert not (out / "checkpoints").exists()


def test_address_auto_is_checked_where_ray_resolves_it(fooling_home, tmp_path, capsys, monkeypatch):
    # Ray's record of the last `ray start` may name an address nothing answers on (a cluster
    # started on 127.0.0.1 recorded under the network address): one line, not minutes of retries.
    recorded = f"127.0.0.1:{free_port()}"
    monkeypatch.setattr(distributed.ray_services, "canonicalize_bootstrap_address", lambda address: recorded)
    out = tmp_path / "run"
    assert main(["evolve", "--workers", "1", "--address", "auto", "--out", str(out)]) == 2
    assert one_error_line(capsys).endswith(
        f"--address auto ({recorded}, the cluster Ray last recorded here): no Ray cluster answers there "
        "(Connection refused)"
    )

    def none_recorded(address):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one ...")

    monkeypatch.setattr(distributed.ray_services, "canonicalize_bootstrap_address", none_recorded)
    assert main(["evolve", "--workers", "1", "--address", "auto", "--out", str(out)]) == 2
    assert one_error_line(capsys).endswith("--address auto: no Ray cluster found on this machine")
    assert not out.exists()


def test_resume_never_connects_to_the_address_in_the_checkpoint(ray_session, tmp_path, monkeypatch, capsys):
    """A run folder from someone else must not point this driver (and its Ray token) at their cluster."""
    stored = f"127.0.0.1:{free_port()}"
    out = run_naming_a_cluster(tmp_path, "shared", stored)
    assert read_latest_checkpoint(str(out), GENOME_CLASSES).config.address == stored
    tried = []
    original = distributed.check_address

    def check(address, timeout=5.0, what="--address"):
        tried.append(address)
        return original(address, timeout, what)

    monkeypatch.setattr(distributed, "check_address", check)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    command = ["evolve", "--resume", str(out), "--generations", "3", "--workers", "1", "--no-progress"]
    code = main(command + ["--no-report"])
    assert code == 0, capsys.readouterr().err[-2000:]
    assert stored not in tried
    resumed = read_latest_checkpoint(str(out), GENOME_CLASSES)
    assert resumed.generation == 2 and resumed.config.address is None and resumed.config.workers == 1


def test_resume_takes_the_address_from_ray_address_only(fooling_home, tmp_path):
    stored, given = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    out = run_naming_a_cluster(tmp_path, "run", stored)
    env = {**os.environ, "RAY_ADDRESS": given}
    command = [str(BIN / "fooling"), "evolve", "--resume", str(out), "--generations", "3", "--workers", "1"]
    result = subprocess.run(command + ["--no-progress", "--no-report"], env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"fooling: error: RAY_ADDRESS {given}: no Ray cluster answers there (Connection refused)"
    assert stored not in result.stderr


def test_the_session_instance_listens_on_loopback_only(ray_session):
    sockets = listening_sockets(descendants(os.getpid()))
    assert {"gcs_server", "raylet"} <= {name for *_, name in sockets}, sockets
    assert [s for s in sockets if not on_loopback(s[1])] == []


def _session_folder(root: int) -> Path | None:
    """The Ray session folder of the raylet below process ``root``, from its command line."""
    for pid in descendants(root):
        with contextlib.suppress(OSError):
            for argument in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0"):
                if argument.startswith("--raylet_socket_name="):
                    return Path(argument.split("=", 1)[1]).parents[1]
    return None


@pytest.mark.timeout(400)
def test_a_local_run_listens_on_loopback_only(fooling_home, tmp_path):
    """`fooling evolve --workers 1` without --address: every listening socket of the run's own
    processes (driver, GCS, raylet, agents, actors, metrics) is on 127.0.0.1, and the session
    folder is out of other users' reach and removed at the end."""
    out = tmp_path / "local"
    env = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"}
    command = [str(BIN / "fooling"), "evolve", "--workers", "1", "--scorers", "1", "--generations", "100000",
               "--population", "40", "--batch-size", "10", "--checkpoint-every", "1", "--out", str(out),
               "--no-progress", "--no-report"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoints" / "LATEST").exists() and process.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.1)
        sockets = listening_sockets(descendants(process.pid))
        session = _session_folder(process.pid)
        # Folders on the way to the session that other users cannot enter (mode ...0).
        closed = [
            folder for folder in (session.parents if session else []) if not folder.stat().st_mode & 0o007
        ]
    finally:
        process.send_signal(signal.SIGTERM)  # as Ctrl-C: finish the generation, checkpoint, stop
        output = process.communicate(timeout=120)[0].decode(errors="replace")
    assert process.returncode == 130, output[-3000:]
    names = {name for *_, name in sockets}
    assert {"gcs_server", "raylet"} <= names and len(sockets) >= 5, sockets
    assert [s for s in sockets if not on_loopback(s[1])] == [], sockets
    assert session is not None and not str(session).startswith("/tmp/ray/"), session
    assert closed and all(folder != Path("/tmp") for folder in closed), session
    assert not session.exists(), "the private session folder outlived the run"


def test_more_scorers_than_gpus_is_one_line_exit_2(ray_session, tmp_path, capsys):
    code = main(["evolve", "--workers", "1", "--scorers", "3", "--out", str(tmp_path / "run")])
    assert code == 2
    line = one_error_line(capsys)
    assert "--scorers 3 needs 3 GPUs" in line and "has 2" in line


@pytest.mark.parametrize("out", ["nosuchscheme://bucket/run", "{file}/run"])
def test_storage_that_cannot_be_written_is_one_line_exit_2(fooling_home, tmp_path, capsys, out):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    code = main(["evolve", "--generations", "2", "--out", out.format(file=blocker), "--no-progress"])
    assert code == 2
    assert "fooling: error:" in one_error_line(capsys)
    assert blocker.read_text() == "a file, not a folder"


def test_backend_error_is_a_user_error():
    assert issubclass(BackendError, OSError)  # the CLI prints OSError as one line, exit 2


# --- a real cluster: `ray start` (two nodes) and `ray job submit` -------------------------------------


def _kill_processes_under(marker: str) -> None:
    """SIGKILL the processes whose command line names ``marker`` (only what this test started).

    ``ray stop`` would stop every Ray instance on the machine, the session's included.
    """
    for pid in processes_with(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# `ray start` for a cluster that listens on 127.0.0.1 only. Every process of the test runs with
# Ray's cluster switch off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), so none replaces 127.0.0.1 by
# the machine's network address; `ray start` itself refuses a second node with the switch off,
# so here it is on, and 127.0.0.1 is kept as given (--node-ip-address, the address to join).
_LOOPBACK_RAY_START = """
import sys
import ray._private.ray_constants as constants
import ray._private.services as services
constants.ENABLE_RAY_CLUSTER = True
services.resolve_ip_for_localhost = lambda host: host
from ray.scripts.scripts import main
sys.argv[0] = "ray"
main()
"""


@pytest.mark.timeout(400)
def test_ray_job_submit_on_a_two_node_local_cluster(fooling_home, tmp_path):
    # Short path: Ray's socket paths must stay under the 107-byte limit of Unix sockets.
    temp = tempfile.mkdtemp(prefix="fr-", dir="/tmp")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_USAGE_STATS_ENABLED": "0",
        "FOOLING_HOME": str(fooling_home),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }
    env.pop("RAY_ADDRESS", None)
    # Token authentication, as cluster/README.md recommends: every node and client needs the token.
    token = Path(temp) / "auth_token"
    token.write_text(secrets.token_hex(32))
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    env.pop("RAY_AUTH_TOKEN", None)
    gcs_port, dashboard_port = free_port(), free_port()
    out = tmp_path / "job"

    def ray(*arguments: str, timeout: float = 120) -> subprocess.CompletedProcess:
        command = (
            [sys.executable, "-c", _LOOPBACK_RAY_START] if arguments[0] == "start" else [str(BIN / "ray")]
        )
        return subprocess.run(
            [*command, *arguments], env=env, capture_output=True, text=True, timeout=timeout
        )

    try:
        head = ray(
            "start", "--head", f"--port={gcs_port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
            "--num-gpus=0", f"--temp-dir={temp}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={free_port()}",
            "--disable-usage-stats", *ray_start_port_flags(worker_ports_low()),
        )  # fmt: skip
        assert head.returncode == 0, head.stderr[-3000:]
        worker = ray(
            "start", f"--address=127.0.0.1:{gcs_port}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
            "--num-gpus=0", *ray_start_port_flags(worker_ports_low()),
        )  # fmt: skip
        assert worker.returncode == 0, worker.stderr[-3000:]
        sockets = listening_sockets(processes_with(temp))
        assert [name for *_, name in sockets].count("raylet") >= 2, sockets  # both nodes' raylets
        assert [s for s in sockets if not on_loopback(s[1])] == [], sockets
        dashboard = f"--address=http://127.0.0.1:{dashboard_port}"
        submission = f"fooling-test-{secrets.token_hex(4)}"
        job = ray(
            "job", "submit", dashboard, f"--working-dir={REPO}", f"--submission-id={submission}", "--no-wait",
            "--", "fooling", "evolve", "--workers", "2", "--scorers", "1", "--generations", "3",
            "--population", "20", "--batch-size", "10", "--out", str(out), "--no-progress", "--no-report",
        )  # fmt: skip
        assert job.returncode == 0, job.stderr[-3000:]
        status, log = wait_for_job(ray, dashboard, submission, timeout=240)
        assert "succeeded" in status, status[-1000:] + log[-3000:]
        assert "Ray: 2 mutators, 1 scorers on cpu (2 nodes)" in log, log[-3000:]
        saved = read_latest_checkpoint(str(out), GENOME_CLASSES)
        assert saved.generation == 2 and saved.config.workers == 2
        assert np.isfinite(saved.archive.elite_fitness()).all()
    finally:
        _kill_processes_under(temp)
        shutil.rmtree(temp, ignore_errors=True)
