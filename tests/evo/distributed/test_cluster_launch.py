"""cluster/local.yaml really launched: `ray up` over SSH, `ray submit`, `ray job submit`, `ray down`.

An OpenSSH server started by the test on a free 127.0.0.1 port (key made for the test)
stands in for the on-premise head machine. The cluster config is cluster/local.yaml with
the machine-specific values replaced (addresses, user, key, ports) and no software
installation (this machine already has the project in its virtual environment, which the
"remote" ``~/venv`` points at). Everything listens on 127.0.0.1, and every Ray process of
the test lives under the test's own temporary folder: its ``ray stop`` stops only those
(a real ``ray stop`` stops every Ray instance on the machine). Skipped, with the reason,
where sshd, ssh or rsync cannot run (``.ci/run`` installs openssh-server and rsync).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from netcheck import (
    free_port,
    listening_sockets,
    on_loopback,
    processes_with,
    ray_start_port_flags,
    wait_for_job,
    worker_ports_low,
)

from fooling.evo.run import GENOME_CLASSES
from fooling.evo.store.checkpoint import read_latest_checkpoint

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"

# Relays an SSH connection from stdin/stdout to HOST PORT: Ray's SSH has no port option,
# its `ssh_proxy_command` reaches the test's sshd on its free port.
BRIDGE = """
import os, socket, sys, threading
connection = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def upstream():
    while data := os.read(0, 65536):
        connection.sendall(data)
    connection.shutdown(socket.SHUT_WR)
threading.Thread(target=upstream, daemon=True).start()
while data := connection.recv(65536):
    os.write(1, data)
"""

# Stops the Ray processes under the test's folder only (given as the first argument).
STOP = """
import os, signal, sys, time
from pathlib import Path
marker = sys.argv[1]
def ours():
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                found.append(int(entry.name))
    return found
for sig in (signal.SIGTERM, signal.SIGKILL):
    for pid in ours():
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    time.sleep(2)
"""


def _missing_tools() -> str | None:
    """Why the launch cannot run here, or ``None``."""
    if not Path(SSHD).exists():
        return "openssh-server is not installed (no sshd); .ci/run installs it"
    for tool in ("ssh", "ssh-keygen", "rsync"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed; .ci/run installs it"
    return None


@contextlib.contextmanager
def ssh_server(folder: Path):
    """An sshd on a free 127.0.0.1 port accepting the key ``folder/id``; yields the port.

    Every session runs with ``HOME=folder/home`` (the "remote" home), whatever the user's home.
    """
    reason = _missing_tools()
    if reason:
        pytest.skip(reason)
    if os.geteuid() == 0 and not Path("/run/sshd").is_dir():
        try:  # sshd's privilege-separation folder, made by the ssh service where one runs
            Path("/run/sshd").mkdir(mode=0o755, parents=True)
        except OSError as error:
            pytest.skip(f"sshd cannot run: /run/sshd is missing and cannot be made ({error.strerror})")
    for name in ("host_key", "id"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    shutil.copy(folder / "id.pub", folder / "authorized_keys")
    port = free_port()
    home = folder / "home"
    (folder / "sshd_config").write_text(
        textwrap.dedent(f"""\
        Port {port}
        ListenAddress 127.0.0.1
        HostKey {folder}/host_key
        AuthorizedKeysFile {folder}/authorized_keys
        PubkeyAuthentication yes
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PermitRootLogin prohibit-password
        StrictModes no
        UsePAM no
        PidFile {folder}/sshd.pid
        ForceCommand HOME={home}; export HOME; cd "$HOME"; exec /bin/bash -c "$SSH_ORIGINAL_COMMAND"
        """)
    )
    server = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(folder / "sshd_config")],
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "sshd.log", "wb"),  # noqa: SIM115 (closed with the process)
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if server.poll() is not None:
                log = (folder / "sshd.log").read_text(errors="replace").strip().splitlines()
                pytest.skip(f"sshd cannot run here: {log[-1] if log else f'exit code {server.returncode}'}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                pytest.skip("sshd did not listen within 20 s")
            time.sleep(0.1)
        yield port
    finally:
        server.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=10)
        if server.poll() is None:
            server.kill()


def _remote_home(folder: Path, fooling_home: Path, token: str) -> Path:
    """The head machine's home: ``~/venv/bin`` (this venv, with a ``ray`` whose ``stop`` stops
    only the test's processes), the Ray token, the environment every SSH session gets."""
    home = folder / "home"
    venv = home / "venv" / "bin"
    venv.mkdir(parents=True)
    # Scripts, not symlinks: a symlinked venv python would not find the venv's site-packages.
    for name in ("python", "python3", "fooling"):
        (venv / name).write_text(f'#!/bin/sh\nexec {BIN / name} "$@"\n')
        (venv / name).chmod(0o755)
    (folder / "stop.py").write_text(STOP)
    (venv / "ray").write_text(
        f'#!/bin/sh\nif [ "$1" = stop ]; then exec {sys.executable} {folder}/stop.py {folder}/ray/; fi\n'
        f'exec {BIN}/ray "$@"\n'
    )
    (venv / "ray").chmod(0o755)
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(token)
    environment = textwrap.dedent(f"""\
        export PATH={venv}:$PATH
        export RAY_TMPDIR={folder}
        # Ray's switch off: `ray start --node-ip-address 127.0.0.1` then keeps 127.0.0.1 instead of
        # taking the machine's network address, and drivers connect to 127.0.0.1 too.
        export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
        export RAY_USAGE_STATS_ENABLED=0 FOOLING_HOME={fooling_home} FOOLING_OFFLINE=1
        unset RAY_ADDRESS RAY_AUTH_TOKEN RAY_AUTH_TOKEN_PATH
        """)
    for name in (".profile", ".bashrc", ".bash_profile"):
        (home / name).write_text(environment)
    return home


def _cluster_config(folder: Path, ssh_port: int, gcs: int, dashboard: int) -> dict:
    """cluster/local.yaml with this machine's values in place of the placeholders."""
    config = yaml.safe_load((REPO / "cluster" / "local.yaml").read_text())
    config["cluster_name"] = f"fooling-test-{secrets.token_hex(3)}"
    config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    config["auth"] = {
        "ssh_user": getpass.getuser(),
        "ssh_private_key": str(folder / "id"),
        "ssh_proxy_command": f"{sys.executable} {folder}/bridge.py 127.0.0.1 {ssh_port}",
    }
    # Installing the project is the one step left out: ~/venv already holds it.
    installs = [command for command in config["setup_commands"] if "pip install" in command]
    assert installs
    config["setup_commands"] = [command for command in config["setup_commands"] if command not in installs]
    config["setup_commands"].append("~/venv/bin/python -c 'import fooling.evo'")
    flags = [
        "--node-ip-address=127.0.0.1",
        "--num-cpus=2",
        "--num-gpus=0",
        f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={free_port()}",
        *ray_start_port_flags(worker_ports_low(21000)),
        "--include-dashboard=true",
    ]
    extra = " ".join(flags)
    head = config["head_start_ray_commands"]
    assert head[0].endswith("ray stop") and "--port=6379" in head[1]
    head[1] = head[1].replace("--port=6379", f"--port={gcs} {extra}")
    config["worker_start_ray_commands"] = []
    return config


def _run(command: list[str], env: dict, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(900)
def test_ray_up_submit_job_submit_and_down_of_the_local_config(fooling_home):
    folder = Path(tempfile.mkdtemp(prefix="fl-", dir="/tmp"))  # short: Unix socket paths <= 107 bytes
    marker = f"{folder}/ray/"
    try:
        with ssh_server(folder) as ssh_port:
            (folder / "bridge.py").write_text(BRIDGE)
            token = secrets.token_hex(32)
            home = _remote_home(folder, fooling_home, token)
            client = folder / "client"
            (client / ".ray").mkdir(parents=True)
            (client / ".ray" / "auth_token").write_text(token)
            gcs, dashboard = free_port(), free_port()
            config_path = folder / "cluster.yaml"
            config_path.write_text(yaml.safe_dump(_cluster_config(folder, ssh_port, gcs, dashboard)))
            env = {
                name: value
                for name, value in os.environ.items()
                if name not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
            }
            env.update(
                PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
                HOME=str(client),  # the file mount ~/.ray/auth_token comes from here
                RAY_TMPDIR=str(folder),
                RAY_AUTH_MODE="token",
                RAY_USAGE_STATS_ENABLED="0",
            )
            ray = str(BIN / "ray")
            # `ray up` runs from a copy of the repository: the file mount "." is hashed whole
            # (rsync_exclude aside), and runs/ of the working tree may change meanwhile.
            source = folder / "source"
            shutil.copytree(
                REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "__pycache__")
            )

            def run(*arguments: str, timeout: float = 300) -> subprocess.CompletedProcess:
                return _run([ray, *arguments], env, source, timeout)

            up = run("up", "-y", "--no-config-cache", str(config_path), timeout=420)
            assert up.returncode == 0, (up.stdout + up.stderr)[-4000:]
            assert (home / "fooling" / "setup.cfg").exists(), "the file mount of the project is missing"
            assert (home / "ray_bootstrap_config.yaml").exists()
            cluster = processes_with(marker)
            sockets = listening_sockets(cluster)
            assert {"gcs_server", "raylet"} <= {name for *_, name in sockets}, sockets
            assert [s for s in sockets if not on_loopback(s[1])] == [], sockets

            submitted = folder / "runs" / "submit"
            script = folder / "evolve_on_the_cluster.py"
            script.write_text(
                "import sys\nfrom fooling.evo.cli.main import main\n"
                f"sys.exit(main(['evolve', '--address', '127.0.0.1:{gcs}', '--workers', '1',"
                f" '--scorers', '1', '--generations', '3', '--population', '20', '--batch-size', '10',"
                f" '--out', '{submitted}', '--no-progress', '--no-report']))\n"
            )
            submit = run("submit", str(config_path), str(script))
            assert submit.returncode == 0, (submit.stdout + submit.stderr)[-4000:]
            saved = read_latest_checkpoint(str(submitted), GENOME_CLASSES)
            assert saved.generation == 2 and np.isfinite(saved.archive.elite_fitness()).all()

            job_out = folder / "runs" / "job"
            address = f"--address=http://127.0.0.1:{dashboard}"
            submission = f"fooling-test-{secrets.token_hex(4)}"
            evolve = ["fooling", "evolve", "--workers", "1", "--scorers", "1", "--generations", "3"]
            evolve += ["--population", "20", "--batch-size", "10", "--out", str(job_out), "--no-progress"]
            job = run("job", "submit", address, f"--submission-id={submission}", "--no-wait", "--", *evolve)
            assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
            status, log = wait_for_job(run, address, submission, timeout=300)
            assert "succeeded" in status, status[-1000:] + log[-3000:]
            saved = read_latest_checkpoint(str(job_out), GENOME_CLASSES)
            assert saved.generation == 2 and saved.config.workers == 1

            down = run("down", "-y", str(config_path))
            assert down.returncode == 0, (down.stdout + down.stderr)[-3000:]
            deadline = time.monotonic() + 30
            while processes_with(marker) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert processes_with(marker) == set(), "ray down left processes of the cluster running"
    finally:
        for pid in processes_with(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)
