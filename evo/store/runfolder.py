"""Run folders: one writer at a time, one kind of run per folder, no stale temporaries.

Every command that writes a run folder (``evolve``, ``retrain``, ``perturb``, ``ascent``,
``audit``) holds :class:`RunLock` on it while it works and records what kind of run the folder
holds, so that nothing already written is lost (:func:`claimed_run_folder` does both):

- ``OUT/.fooling-lock`` holds the owner's pid and host while a command runs. A second
  process refuses at once; a lock left by a dead process on this host is taken over
  with a warning (a lock of another host cannot be checked, so it is never taken over). While
  it runs, the owner holds an exclusive ``flock`` on the lock file it made (records say so:
  ``"flocked": true``), so on this host a lock nobody holds that way is one to take over: its
  owner is gone, or it is a copy (``cp -a`` of a running run's folder). Records of older
  versions, and file systems without ``flock``, are judged by their process id alone.
- ``OUT/.fooling-run`` names the kind of run and the run itself
  (``{"kind": "evolve", "run": "5f0c..."}``, a random token drawn when the run starts). A folder
  is accepted when it is new (absent or empty), or holds a run of the same kind (to be
  resumed); anything else is refused with one line. Checkpoints record the token, so that a
  checkpoint copied in from another run is not continued as this one (:func:`run_token`).

Locks are local-filesystem locks; object stores (``s3://``, ``gs://``) have no atomic
create-if-absent here, so on them the lock is advisory: written, checked, but racy.

A lock is untrusted input like the rest of a shared folder: one that is a symbolic link,
not a regular file, or names no plausible process id is refused as damaged (never
followed, never taken over), with the command that removes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shlex
import socket
import stat
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path

from fooling.encodings.errors import UserError
from fooling.evo.store.checkpoint import CHECKPOINT_PATTERN
from fooling.evo.store.location import (
    _FOLDER_FLAGS,
    TEMPORARY_PREFIX,
    WRITE_PROBE_NAME,
    _filesystem,
    _link_target,
    _linked_folder,
    exists,
    join,
    list_names,
    read_bytes,
    write_bytes,
)
from fooling.evo.store.validation import is_run_token

logger = logging.getLogger(__name__)

LOCK_NAME = ".fooling-lock"
KIND_NAME = ".fooling-run"
# Largest run record read: one is about 50 bytes.
RECORD_SIZE_LIMIT = 4096
RUN_KINDS = ("evolve", "retrain", "retrain-round", "perturb", "ascent", "audit")


class RunFolderError(UserError):
    """``--out`` or ``--resume`` points at the wrong kind of folder, or one in use."""


class RunLockedError(RunFolderError):
    """Another live process holds the run folder's lock."""


def _local_path(out: str) -> Path | None:
    filesystem, path = _filesystem(out)
    return Path(path) if filesystem is None else None


# Largest lock size read: a lock record is about 150 bytes.
LOCK_SIZE_LIMIT = 64 * 1024


def _pid_max() -> int:
    """The largest process id of this kernel (``/proc/sys/kernel/pid_max``, else 2**22)."""
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        return 2**22


def _lock_damage(owner: dict) -> str | None:
    """What is wrong with lock record ``owner`` (``None``: it names a plausible process)."""
    pid, host = owner.get("pid"), owner.get("host")
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= max(_pid_max(), 2**22):
        return f"it names pid {_shown(pid)}, not a process id"
    if not isinstance(host, str) or not host or not host.isprintable():
        return f"it names host {_shown(host)}, not a host name"
    return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (guards against a reused pid), where /proc has it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        return None


def _pid_namespace() -> str | None:
    """This process's PID namespace (``pid:[4026531836]``), where /proc has it.

    Containers sharing a host name (``--uts=host``, ``--network=host``) may still number their
    processes apart: a pid is only checked within the namespace that recorded it.
    """
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _try_flock(handle: int, wait_s: float = 0.0) -> bool:
    """Take an exclusive ``flock`` on open file ``handle``, waiting up to ``wait_s`` seconds.

    Returns ``False`` when another open file holds it that long, and where the file system has
    no ``flock`` (nothing can be told from it there).
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
            continue
        except OSError:  # ENOLCK, EOPNOTSUPP: no flock here
            return False
        return True


# How a lock is opened to be read: never through a link, never waiting on a FIFO.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _record_in(handle: int) -> dict | None:
    """The lock record in open file ``handle``; ``None`` while empty, ``{}`` if it is none.

    Reads at most :data:`LOCK_SIZE_LIMIT` bytes from the start, and only from a regular file.
    """
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            return {}  # a folder, a FIFO
        text = os.pread(handle, LOCK_SIZE_LIMIT, 0).decode()
    except (OSError, UnicodeDecodeError):  # garbage bytes: not a lock record
        return {}
    if not text.strip():
        return None
    try:
        owner = json.loads(text)
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


def _shown(value: object) -> str:
    """``value`` as one short line (a lock's fields are untrusted text)."""
    return "".join(char if char.isprintable() else "?" for char in str(value)[:80])


def _owner_text(owner: dict) -> str:
    return (
        f"pid {_shown(owner.get('pid'))} on {_shown(owner.get('host'))} ({_shown(owner.get('command', '?'))})"
    )


class RunLock:
    """Exclusive use of run folder ``out`` by this process, as a context manager.

    Args:
        out: the run folder (created if absent).
        command: what holds it, shown to a process that is refused.

    Raises:
        RunLockedError: (on entering) another live process holds the folder.
    """

    def __init__(self, out: str, command: str) -> None:
        self.out = out
        self.command = command
        self.uri = join(out, LOCK_NAME)
        self.held = False
        self._handle: int | None = None

    def _record(self, flocked: bool = False) -> bytes:
        pid = os.getpid()
        owner = {
            "pid": pid,
            "host": socket.gethostname(),
            "command": self.command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "start_time": _start_time(pid),
            "pid_namespace": _pid_namespace(),
        }
        if flocked:  # held with flock while this process runs: see _take_over
            owner["flocked"] = True
        return (json.dumps(owner) + "\n").encode()

    @staticmethod
    def _local_owner(owner: dict) -> bool:
        """True when ``owner``'s pid can be checked here: another process of this host and PID namespace.

        ``owner`` is a plausible record (see :func:`_lock_damage`).
        """
        if owner.get("host") != socket.gethostname():
            return False
        namespace = owner.get("pid_namespace")  # absent from locks of older versions
        if namespace is not None and namespace != _pid_namespace():
            return False  # another PID namespace on this host: its pids are not ours to check
        return owner["pid"] != os.getpid()

    def _stale(self, owner: dict) -> bool:
        """True when ``owner`` is a process of this host (and PID namespace) that is gone.

        ``owner`` is a plausible record (see :func:`_lock_damage`).
        """
        if not self._local_owner(owner):
            return False
        pid = owner["pid"]
        if not _process_alive(pid):
            return True
        recorded = owner.get("start_time")
        return recorded is not None and _start_time(pid) not in (None, recorded)

    def acquire(self) -> None:
        """Take the lock (see the class)."""
        local = _local_path(self.out)
        if local is None:
            self._acquire_remote()
            return
        if local.exists() and not local.is_dir():
            raise RunFolderError(f"{self.out} is a file, not a folder; choose a folder")
        local.mkdir(parents=True, exist_ok=True)
        path = local / LOCK_NAME
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        taken_over: list[int] = []  # the flocks of locks taken over, held until ours exists
        try:
            for _ in range(3):
                try:
                    handle = os.open(path, flags, 0o644)
                except FileExistsError:
                    held = self._take_over(path)
                    if held is not None:
                        taken_over.append(held)
                    continue
                try:
                    # flock first, the record after: whoever reads a record saying so finds it held.
                    # (Another process may hold it for a moment: one judging the lock this file
                    # replaced, which lets go when it finds this file's record is not that one.)
                    flocked = _try_flock(handle, wait_s=1.0)
                    os.write(handle, self._record(flocked=flocked))
                    os.fsync(handle)
                except BaseException:
                    os.close(handle)
                    raise
                self._handle = handle  # held open (with its flock) until release
                self.held = True
                return
        finally:
            for held in taken_over:
                os.close(held)
        raise RunLockedError(f"{self.out} is in use by another process (its lock keeps changing)")

    def _take_over(self, path: Path) -> int | None:
        """Judge the lock at ``path`` someone else made: remove it if nobody holds it.

        The record judged and the ``flock`` tried are those of one open file, and the lock is
        removed only while the path still names that file.

        Returns:
            An open file holding the ``flock`` of the lock removed (close it once the new lock
            exists, so that no other process takes the old one meanwhile), or ``None``: nothing
            held (removed by its process-id record, or gone or made again meanwhile: look again).

        Raises:
            RunLockedError: the lock is held, damaged, a link, or of another host.
        """
        if path.is_symlink():  # a lock is never followed, whatever it points at
            raise RunLockedError(
                f"{path} is a symbolic link, not a lock (damaged, or planted); if no fooling "
                f"command is using {self.out}, remove it: rm {shlex.quote(str(path))}"
            )
        try:
            handle = os.open(path, _READ_FLAGS)
        except FileNotFoundError:  # released meanwhile: look again
            return None
        except OSError:  # a link (ELOOP), no permission: not a lock record of ours
            handle = None
        removed = False
        try:
            owner = {} if handle is None else _record_in(handle)
            if owner is None:  # being written right now by its owner
                time.sleep(0.05)
                owner = _record_in(handle)
            if owner is None or not {"pid", "host"} <= owner.keys():  # empty or not a lock record
                raise RunLockedError(
                    f"{path} is unreadable (empty or damaged, as a crash while taking it leaves it); "
                    f"if no fooling command is using {self.out}, delete it: rm {shlex.quote(str(path))}"
                )
            damage = _lock_damage(owner)
            if damage is not None:
                raise RunLockedError(
                    f"{path} is a damaged lock ({damage}); if no fooling command is using "
                    f"{self.out}, delete it: rm {shlex.quote(str(path))}"
                )
            if owner.get("flocked") is True and self._local_owner(owner):
                removed = self._remove_unheld(path, handle, owner)
                return handle if removed else None
            if not self._stale(owner):
                raise RunLockedError(
                    f"{self.out} is in use by {_owner_text(owner)}; wait for it to finish or choose "
                    f"another folder (if {self.out} is a copy of that run's folder, remove the copied "
                    f"lock: rm {shlex.quote(str(path))})"
                )
            logger.warning(
                "taking over the lock of %s left by %s, which is no longer running",
                self.out,
                _owner_text(owner),
            )
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return None
        finally:
            if handle is not None and not removed:
                os.close(handle)

    def _remove_unheld(self, path: Path, handle: int, owner: dict) -> bool:
        """Remove the lock open as ``handle`` (its record: ``owner``) if nobody holds its ``flock``.

        Returns:
            True: removed, its ``flock`` held through ``handle``; False: ``path`` names another
            file by now (released, and made again or not): look again.

        Raises:
            RunLockedError: its owner holds it.
        """
        if not _try_flock(handle):
            raise RunLockedError(
                f"{self.out} is in use by {_owner_text(owner)}; wait for it to finish or choose "
                "another folder"
            )
        opened = os.fstat(handle)
        try:
            current = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
            return False
        logger.warning(
            "taking over the lock of %s %s",
            self.out,
            f"left by {_owner_text(owner)}, which is no longer running"
            if self._stale(owner)
            else f"copied from the folder of {_owner_text(owner)}, which runs elsewhere",
        )
        path.unlink()
        return True

    def _acquire_remote(self) -> None:
        try:
            owner = json.loads(read_bytes(self.uri, LOCK_SIZE_LIMIT))
        except FileNotFoundError:
            owner = None
        except ValueError:
            owner = {}
        if owner is not None:
            damage = _lock_damage(owner) if isinstance(owner, dict) else "not a lock record"
            if damage is not None:
                raise RunLockedError(
                    f"{self.uri} is a damaged lock ({damage}); if no fooling command is using "
                    f"{self.out}, delete it"
                )
        if owner is not None and not self._stale(owner):
            raise RunLockedError(
                f"{self.out} is in use by {_owner_text(owner)}; wait for it to finish, or delete "
                f"{self.uri} if that process is gone"
            )
        write_bytes(self.uri, self._record())
        self.held = True

    @staticmethod
    def _read_owner(path: Path) -> dict | None:
        """The lock's record; ``None`` while empty or once removed, ``{}`` if unreadable.

        Never follows a link, never waits on a FIFO, reads at most :data:`LOCK_SIZE_LIMIT` bytes.
        """
        try:
            handle = os.open(path, _READ_FLAGS)
        except FileNotFoundError:
            return None
        except OSError:  # a link (ELOOP), no permission: not a lock record of ours
            return {}
        try:
            return _record_in(handle)
        finally:
            os.close(handle)

    def release(self) -> None:
        """Give the lock back (only if this process still holds it)."""
        if not self.held:
            return
        self.held = False
        try:
            self._remove_own_lock()
        finally:
            if self._handle is not None:
                os.close(self._handle)
                self._handle = None

    def _remove_own_lock(self) -> None:
        """Delete the lock file if its record is still this process's."""
        local = _local_path(self.uri)
        if local is not None:
            owner = self._read_owner(local)
        else:
            try:
                owner = json.loads(read_bytes(self.uri, LOCK_SIZE_LIMIT))
            except (FileNotFoundError, ValueError):
                return
        if not isinstance(owner, dict) or owner.get("pid") != os.getpid():
            return
        if owner.get("host") != socket.gethostname():
            return
        filesystem, path = _filesystem(self.uri)
        try:
            if filesystem is None:
                os.unlink(path)
            else:
                filesystem.delete_file(path)
        except (OSError, FileNotFoundError):
            pass

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# --- what a folder holds -------------------------------------------------------------------

# Files a command writes itself besides its run files; they never make a folder "foreign".
_OWN_NAMES = {LOCK_NAME, KIND_NAME, WRITE_PROBE_NAME}


def folder_kind(out: str) -> str | None:
    """The kind of run ``out`` holds; ``None`` for an absent or empty folder.

    The kind is read from its ``.fooling-run`` record, else inferred for runs written before
    that record existed (checkpoints: ``evolve``; ``round-1``: ``retrain``).

    Raises:
        RunFolderError: the folder holds files of no run.
    """
    try:
        record = json.loads(read_bytes(join(out, KIND_NAME), RECORD_SIZE_LIMIT))
        kind = record.get("kind") if isinstance(record, dict) else None
        if kind in RUN_KINDS:
            return kind
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        pass
    names = [name for name in list_names(out) if name not in _OWN_NAMES]
    if not names:
        return None
    if any(CHECKPOINT_PATTERN.match(name) for name in list_names(join(out, "checkpoints"))):
        return "evolve"
    if "round-1" in names and list_names(join(out, "round-1")):
        return "retrain"
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    raise RunFolderError(f"--out {out} holds other files ({shown}); choose a new or empty folder")


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def check_resume_kind(out: str, kind: str) -> None:
    """Raise unless ``out``, given to ``--resume``, holds no run or a run of ``kind``.

    A folder of no run at all is left to the caller, which says what it looked for.

    Raises:
        RunFolderError: ``out`` holds another kind of run (a ``perturb`` run given to
            ``evolve --resume``).
    """
    try:
        found = folder_kind(out)
    except RunFolderError:
        return
    if found is not None and found != kind:
        raise RunFolderError(f"--resume {out} holds {_a(found)} run, not {_a(kind)} run")


def holds_a_run(out: str) -> str:
    """The refusal of a new ``evolve`` run in ``out``, which holds one: how to continue it instead."""
    return (
        f"--out {out} already holds a run; continue it with --resume {out} (in Python: "
        "evolve(config, resume=True)) or choose another folder"
    )


def claim_folder(out: str, kind: str, *, resume: bool = False) -> None:
    """Check that ``out`` may take a run of ``kind`` and record the kind in it.

    Call while holding :class:`RunLock` on ``out``.

    Args:
        out: the run folder: a local path or a storage URI.
        kind: the command's kind of run (one of :data:`RUN_KINDS`).
        resume: a run of the same kind is being continued (otherwise the folder must be new).

    Raises:
        RunFolderError: ``out`` holds other files or another kind of run, or (without
            ``resume``) already holds a run.
    """
    found = folder_kind(out)
    if found is not None and found != kind:
        raise RunFolderError(
            f"--out {out} holds {_a(found)} run, not {_a(kind)} run; choose a new or empty folder"
        )
    if found is None and resume:
        raise RunFolderError(f"--resume {out}: no run there")
    if found is not None and not resume:
        raise RunFolderError(
            holds_a_run(out)
            if kind == "evolve"
            else f"--out {out} already holds {_a(kind)} run; choose another folder"
        )
    if not exists(join(out, KIND_NAME)):
        # A run resumed without its record (written before records existed, or deleted) gets
        # none of its own: a token drawn now would disown the checkpoints it already wrote.
        record = {"kind": kind} if resume else {"kind": kind, "run": secrets.token_hex(RUN_TOKEN_BYTES)}
        write_bytes(join(out, KIND_NAME), (json.dumps(record) + "\n").encode())


# Random bytes of a run's token (16 hex digits): unique among the runs anyone will compare.
RUN_TOKEN_BYTES = 8


def run_token(out: str) -> str | None:
    """The token that names the run in ``out`` (its ``.fooling-run`` record); ``None`` if it has none.

    Runs written before tokens, and folders without a record, have none. A record is untrusted:
    a token that is not 16 lowercase hex digits counts as none.
    """
    try:
        record = json.loads(read_bytes(join(out, KIND_NAME), RECORD_SIZE_LIMIT))
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return None
    token = record.get("run") if isinstance(record, dict) else None
    return token if is_run_token(token) else None


def remove_stale_temporaries(out: str) -> int:
    """Delete ``.tmp-*`` files left by killed writes in ``out`` and ``out/checkpoints``.

    Only safe while holding :class:`RunLock` (no write of ours is in flight). Local folders
    only. Nothing is followed: a ``.tmp-*`` link is removed itself, and ``out/checkpoints``
    must be a real folder (checked here, before any work, as every checkpoint write checks it).

    Returns:
        How many were removed.

    Raises:
        UnsafePathError: ``out/checkpoints`` is a symbolic link (one line).
    """
    local = _local_path(out)
    if local is None or not local.is_dir():
        return 0
    removed = 0
    handle = os.open(local, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        folders = [handle]
        try:
            folders.append(os.open("checkpoints", _FOLDER_FLAGS, dir_fd=handle))
        except OSError as error:
            target = _link_target("checkpoints", handle)
            if target is not None:
                raise _linked_folder(str(local / "checkpoints"), target) from None
            if not isinstance(error, FileNotFoundError | NotADirectoryError):
                raise
            # None yet; a file in its place fails the first checkpoint write, naming it.
        for folder in folders:
            for name in os.listdir(folder):
                if not name.startswith(TEMPORARY_PREFIX):
                    continue
                try:
                    kind = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
                    if stat.S_ISREG(kind) or stat.S_ISLNK(kind):
                        os.unlink(name, dir_fd=folder)
                        removed += 1
                except FileNotFoundError:
                    pass
    finally:
        for folder in reversed(folders):
            os.close(folder)
    if removed:
        logger.warning("removed %d temporary file(s) left by an interrupted write in %s", removed, out)
    return removed


def discard_if_empty(out: str) -> None:
    """Remove local folder ``out`` if it holds nothing but this module's own files.

    Used when a run that created ``out`` fails before writing anything: no empty folder
    (or one holding only a lock or kind record) is left behind.
    """
    local = _local_path(out)
    if local is None or not local.is_dir() or (local / LOCK_NAME).exists():
        return  # a lock present now is another process's: leave its folder alone
    if any(path.name not in _OWN_NAMES for path in local.iterdir()):
        return
    for path in local.iterdir():
        try:
            path.unlink()
        except OSError:
            return
    with contextlib.suppress(OSError):
        local.rmdir()


def _regular(path: Path) -> bool:
    """``path`` is a regular file itself (a link to one is not)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _temporaries_only(folder: Path) -> list[Path] | None:
    """The ``.tmp-*`` files of killed writes that are all real folder ``folder`` holds; else ``None``."""
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return None
        entries = [folder / name for name in os.listdir(folder)]
    except OSError:
        return None
    if all(entry.name.startswith(TEMPORARY_PREFIX) and _regular(entry) for entry in entries):
        return entries
    return None


def _unstarted_entries(
    local: Path, prelude: Collection[str], *, skipped: Collection[str] = (), record: bool = True
) -> list[Path] | None:
    """The files a run that saved nothing left in real folder ``local``; ``None``: it holds more.

    Those are the regular files of ``prelude``, temporaries, and those of a real ``checkpoints``
    folder holding temporaries only (its own files, the lock and record, not counted). Entries
    named in ``skipped`` are the caller's to judge. With ``record``, the folder must hold a run
    record (a run of ours claimed it).
    """
    try:
        if not stat.S_ISDIR(os.lstat(local).st_mode) or (record and not _regular(local / KIND_NAME)):
            return None
        names = set(os.listdir(local))
    except OSError:
        return None
    if any(name in names and not _regular(local / name) for name in _OWN_NAMES):
        return None
    doomed: list[Path] = []
    for name in sorted(names - _OWN_NAMES - set(skipped)):
        path = local / name
        if name == "checkpoints":
            temporaries = _temporaries_only(path)
            if temporaries is None:
                return None
            doomed += temporaries
        elif not (_regular(path) and (name in prelude or name.startswith(TEMPORARY_PREFIX))):
            return None
        else:
            doomed.append(path)
    return doomed


def _discard(local: Path, doomed: list[Path]) -> None:
    """Remove ``doomed`` (from :func:`_unstarted_entries`), then ``checkpoints`` and a write probe.

    The run record goes last: a failure before it leaves the folder recognised, to be cleaned again.
    """
    for path in doomed:
        path.unlink()
    if (local / "checkpoints").is_dir():
        (local / "checkpoints").rmdir()
    with contextlib.suppress(FileNotFoundError):
        (local / WRITE_PROBE_NAME).unlink()
    with contextlib.suppress(FileNotFoundError):
        (local / KIND_NAME).unlink()


def discard_unstarted(
    out: str, prelude: Collection[str], subruns: Mapping[str, Collection[str]] | None = None
) -> list[str]:
    """Remove what a new run in local folder ``out`` left when it saved nothing.

    A run that fails, stops or is killed before its first result leaves its kind record, the
    files it writes before any result (``prelude``: a query ledger, settings) and, killed while
    writing its first checkpoint, temporary files. Left there, the folder would take no new run
    ("already holds a run") and resume none ("no run there"); removed, the same command can
    simply run again. Only such a folder is touched: its ``.fooling-run`` record is there (a
    run of ours claimed it), and every other entry is a regular file of ``prelude``, a
    temporary file, a real ``checkpoints`` folder holding temporary files only, or a real
    folder of ``subruns`` (a retraining's ``round-1``) that is itself a run that saved nothing:
    its lock, if any, one of a process that is gone (taken over, then released). Anything else
    (a checkpoint, a user's file, a link, ``checkpoints`` linked elsewhere) leaves the folder as
    it is. Call while holding :class:`RunLock`, for a folder this command claimed for a new
    run, or is about to claim for one.

    Args:
        out: the run folder.
        prelude: the names of the files the run writes before its first result.
        subruns: folder name -> the prelude of the run it holds (runs inside this run).

    Returns:
        The names removed (none: the folder holds more than an unstarted run, or is not local).

    Raises:
        RunLockedError: a folder of ``subruns`` is locked by a live process, or its lock is damaged.
    """
    subruns = subruns or {}
    local = _local_path(out)
    if local is None or local.is_symlink():
        return []
    doomed = _unstarted_entries(local, prelude, skipped=subruns)
    if doomed is None:
        return []
    with contextlib.ExitStack() as locks:
        inner: list[tuple[Path, list[Path]]] = []
        for name, inner_prelude in subruns.items():
            folder = local / name
            if not os.path.lexists(folder):
                continue
            if folder.is_symlink() or not folder.is_dir():
                return []
            locks.enter_context(RunLock(str(folder), "a check of an unstarted run"))
            entries = _unstarted_entries(folder, inner_prelude, record=False)
            if entries is None:
                return []
            inner.append((folder, entries))
        # The runs inside first, this run's record last: a failure midway (a file that cannot be
        # deleted) leaves a folder still recognised as a run that saved nothing.
        for folder, entries in inner:
            _discard(folder, entries)
        _discard(local, doomed)
    for folder, entries in inner:
        doomed += entries
        with contextlib.suppress(OSError):  # a lock a process took since: its folder stays
            folder.rmdir()
    removed = [str(path.relative_to(local)) for path in doomed]
    if removed:
        logger.info("%s: a run that saved nothing; removed %s", out, ", ".join(removed))
    return [*removed, KIND_NAME]


@contextlib.contextmanager
def claimed_run_folder(
    out: str,
    kind: str,
    *,
    resume: bool = False,
    remove_temporaries: bool = False,
    refused: Callable[[RunFolderError], Exception] | None = None,
    prelude: Collection[str] = (),
    subruns: Mapping[str, Collection[str]] | None = None,
) -> Iterator[str]:
    """Run folder ``out``, locked and claimed for a run of ``kind`` while the body runs.

    Takes :class:`RunLock` on ``out`` (creating it if absent), checks and records the kind of
    run it holds (:func:`claim_folder`; for a new run, what a run killed before its first result
    left is removed first, :func:`discard_unstarted`) and, with ``remove_temporaries``, deletes what killed
    writes left (:func:`remove_stale_temporaries`). The lock is released when the body ends;
    if it fails (or is interrupted) and this call created ``out``, the folder is removed again
    while it holds nothing but the lock and kind records (:func:`discard_if_empty`)::

        with claimed_run_folder(config.out, "evolve", resume=resume) as out:
            ...  # write the run into out

    Args:
        out: the run folder: a local path or a storage URI.
        kind: the command's kind of run (one of :data:`RUN_KINDS`).
        resume: a run of the same kind is being continued (otherwise the folder must be new).
        remove_temporaries: delete ``.tmp-*`` files left by interrupted writes, once locked.
        refused: makes the error raised instead of :func:`claim_folder`'s when the folder
            cannot take the run (a command's own wording); ``None``: that error itself.
        prelude: files a new run writes before its first result (a query ledger, settings),
            removed with its kind record when the body ends before any result was saved
            (:func:`discard_unstarted`), so that the same command can run again.
        subruns: folders of runs inside this one (a retraining's ``round-1``) -> their
            prelude: a new run that saved nothing in them is removed too.

    Yields:
        ``out``.

    Raises:
        RunLockedError: another live process holds the folder (or its lock is damaged).
        RunFolderError: ``out`` is a file, or holds other files or another kind of run, or
            (without ``resume``) already holds a run; or what ``refused`` makes of that.
        UnsafePathError: (with ``remove_temporaries``) ``out/checkpoints`` is a symbolic link.
    """
    created = not exists(out)
    try:
        with RunLock(out, kind):
            if not resume and discard_unstarted(out, prelude, subruns):
                # Killed (SIGKILL, power loss) before its first result: no run to continue.
                logger.warning("%s held a run killed before it saved anything; starting anew", out)
            try:
                claim_folder(out, kind, resume=resume)
            except RunFolderError as error:
                if refused is None:
                    raise
                raise refused(error) from None
            if remove_temporaries:
                remove_stale_temporaries(out)
            try:
                yield out
            finally:
                if not resume:  # claimed for a new run: an empty folder then, all of it is ours
                    discard_unstarted(out, prelude, subruns)
    except BaseException:
        if created:
            discard_if_empty(out)  # a run that wrote nothing leaves nothing behind
        raise
    if created:
        discard_if_empty(out)
