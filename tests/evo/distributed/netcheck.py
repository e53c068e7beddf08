"""Helpers of the network tests: which addresses processes listen on (read from /proc, Linux),
and waiting for a Ray job."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import time
from pathlib import Path


def descendants(root: int) -> set[int]:
    """``root`` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def _socket_owners(pids: set[int]) -> dict[int, int]:
    """Socket inode -> pid, for the sockets the processes ``pids`` hold open."""
    owners = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        owners[int(link[8:-1])] = pid
    return owners


def _ip(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    return ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))


def listening_sockets(pids: set[int]) -> list[tuple[str, str, int, str]]:
    """``(protocol, address, port, process name)`` of every TCP socket listening and every UDP
    socket bound by the processes ``pids``, from /proc (no psutil needed)."""
    owners = _socket_owners(pids)
    found = []
    for table, protocol, state in (("tcp", "tcp", "0A"), ("tcp6", "tcp", "0A"), ("udp", "udp", "07"),
                                   ("udp6", "udp", "07")):  # fmt: skip
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                inode = int(fields[9])
                if fields[3] == state and inode in owners:
                    address, port = fields[1].split(":")
                    name = "?"
                    with contextlib.suppress(OSError):
                        name = Path(f"/proc/{owners[inode]}/comm").read_text().strip()
                    found.append((protocol, str(_ip(address)), int(port, 16), name))
    return found


def on_loopback(address: str) -> bool:
    """``True`` for 127.0.0.0/8, ::1 and IPv4-mapped loopback (``::ffff:127.0.0.1``)."""
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def wait_for_job(ray_cli, address: str, submission: str, timeout: float) -> tuple[str, str]:
    """Poll ``ray job status`` until the job ends or ``timeout`` seconds pass.

    ``ray_cli(*arguments)`` runs the ``ray`` command and returns its CompletedProcess.

    Returns:
        The last status (lower case) and the job's log.
    """
    status, deadline = "", time.monotonic() + timeout
    ended = ("succeeded", "failed", "stopped")
    while time.monotonic() < deadline and not any(word in status for word in ended):
        time.sleep(2)
        status = ray_cli("job", "status", address, submission).stdout.lower()
    return status, ray_cli("job", "logs", address, submission).stdout


def processes_with(marker: str) -> set[int]:
    """Pids of the processes (other than this one) whose command line contains ``marker``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.add(int(entry.name))
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_ports_low(first: int = 20000) -> int:
    """The first of 100 worker ports for this process's Ray nodes: a block chosen by pid, from
    ``first`` up to below the kernel's ephemeral range, where :func:`free_port` draws the other
    ports (a block inside it once met a service port Ray had drawn there)."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    blocks = max(1, (ephemeral - first) // 100)
    return first + (os.getpid() % blocks) * 100


def ray_start_port_flags(low: int) -> list[str]:
    """``ray start`` flags putting a node's services on free loopback ports and its workers on
    ports ``low`` to ``low + 99`` (so two Ray instances on one machine never collide)."""
    services = ("node-manager", "object-manager", "dashboard-agent-listen", "dashboard-agent-grpc",
                "metrics-export", "runtime-env-agent")  # fmt: skip
    ports: list[int] = []
    while len(ports) < len(services):  # none among the workers' ports, none twice
        port = free_port()
        if not low <= port <= low + 99 and port not in ports:
            ports.append(port)
    flags = [f"--{service}-port={port}" for service, port in zip(services, ports)]
    return flags + [f"--min-worker-port={low}", f"--max-worker-port={low + 99}"]
