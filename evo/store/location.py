"""Storage locations: local folders and pyarrow filesystem URIs (``s3://``, ``gs://``, ...).

Every file of a run folder is read and written here. Local files are written atomically
(temporary file, fsync, rename). Object stores have no rename, but a PUT is atomic: an
object appears whole or not at all.

Symbolic links: nothing is ever written, replaced or deleted through a link inside a run
folder. A file is written as a new temporary file (``O_CREAT | O_EXCL | O_NOFOLLOW``) in its
folder and renamed over its name (a link there is replaced, its target untouched); folders on
the way below the run folder are opened with ``O_NOFOLLOW``, and one that is a link is refused.

Every storage failure (a store that cannot be opened, reached or written, a folder that is a
link, an entry that is not a regular file) is a :class:`StorageError`, one line naming the
location; an entry that is simply not there is a ``FileNotFoundError``.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import stat
import subprocess
import sys
from collections.abc import Callable
from typing import BinaryIO

import pyarrow as pa
import pyarrow.fs as pafs

from fooling.fitness import error_line
from fooling.fitness.limits import timeout_seconds

# Name prefix of the temporary files writes go through (removed on start if a kill left them).
TEMPORARY_PREFIX = ".tmp-"
# What check_writable writes and deletes again (left only by a process killed in between).
WRITE_PROBE_NAME = ".fooling-write-probe"


class StorageError(OSError):
    """A storage location that cannot be opened, reached, written or used (one line)."""


class _UnopenableStorage(StorageError):
    """A location naming no filesystem pyarrow can open (passed through :func:`check_writable` as is)."""


class UnsafePathError(StorageError):
    """A folder inside a run folder that is a symbolic link: never followed (one line)."""


def _filesystem(uri: str) -> tuple[pafs.FileSystem | None, str]:
    """``(None, local path)`` for local folders, else a pyarrow filesystem and its path."""
    if "://" not in uri or uri.startswith("file://"):
        # Not resolved: a link inside a run folder must stay a link (see write_bytes).
        return None, os.path.abspath(uri.removeprefix("file://"))
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as error:
        raise _UnopenableStorage(f"cannot open storage {uri!r}: {error_line(error)}") from None


def join(uri: str, *parts: str) -> str:
    """``uri`` and ``parts`` joined with ``/`` (for local paths and storage URIs alike).

    Args:
        uri: a folder: a local path or a storage URI; a trailing ``/`` is dropped.
        *parts: names to append, in order.

    Returns:
        The joined path or URI.
    """
    return "/".join([uri.rstrip("/"), *parts])


_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _parts_below(path: str, root: str | None) -> tuple[str, list[str], str]:
    """``(base, folders, name)``: ``path`` is ``base/folders.../name``, ``base`` being ``root``.

    ``root`` (default: the folder of ``path``) is the folder the user named; the folders
    below it are the run folder's own.
    """
    directory, name = os.path.split(path)
    base = directory if root is None else _filesystem(root)[1]
    relative = os.path.relpath(directory, base)
    folders = [] if relative == "." else relative.split(os.sep)
    if ".." in folders or not name:
        raise RuntimeError(f"{path} is not a file inside {base}")  # a bug of the caller
    return base, folders, name


def _link_target(name: str, folder: int) -> str | None:
    """Where ``name`` in open folder ``folder`` points if it is a symbolic link, else ``None``."""
    try:
        return os.readlink(name, dir_fd=folder)
    except OSError:  # not a link, or gone
        return None


def _linked_folder(path: str, target: str) -> UnsafePathError:
    return UnsafePathError(
        f"{path} is a symbolic link (to {target}); fooling never writes through a link inside "
        "a run folder: replace it with a real folder"
    )


def _open_folder(base: str, folders: list[str], *, create: bool) -> int:
    """A descriptor of folder ``base/folders...``, never following a link among ``folders``.

    ``base`` itself is opened as named (it may be a link the user made).

    Raises:
        UnsafePathError: one of ``folders`` is a symbolic link.
        OSError: a folder is missing (without ``create``) or is not a folder.
    """
    if create:
        os.makedirs(base, exist_ok=True)
    handle = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    shown = base
    try:
        for folder in folders:
            shown = os.path.join(shown, folder)
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(folder, dir_fd=handle)
            try:
                inner = os.open(folder, _FOLDER_FLAGS, dir_fd=handle)
            except OSError:
                if _link_target(folder, handle) is not None:
                    raise _linked_folder(shown, _link_target(folder, handle)) from None
                raise
            os.close(handle)
            handle = inner
    except BaseException:
        os.close(handle)
        raise
    return handle


def _write_all(handle: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(handle, view) :]


class _Appender(io.RawIOBase):
    """A write-only stream over file descriptor ``handle``; every write goes through :func:`_write_all`."""

    def __init__(self, handle: int) -> None:
        super().__init__()
        self._handle = handle
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        _write_all(self._handle, data)
        self._written += size
        return size

    def tell(self) -> int:
        return self._written


def _write_error(uri: str, error: OSError) -> OSError:
    """``error`` as one line naming ``uri`` (a full disk names the file being written)."""
    if isinstance(error, UnsafePathError):
        return error
    reason = error.strerror or error_line(error)
    failure = StorageError(f"cannot write {uri}: {reason}")
    failure.errno = error.errno
    return failure


def write_bytes(uri: str, data: bytes, *, root: str | None = None) -> None:
    """Write ``data`` to ``uri`` so that readers see the old object or the new one, never half.

    See :func:`write_streamed`, which this is with one write of ``data``.

    Raises:
        UnsafePathError: a folder below ``root`` is a symbolic link.
        OSError: the file cannot be written (one line naming it; nothing earlier changed).
    """
    write_streamed(uri, lambda stream: stream.write(data), root=root)


def write_streamed(uri: str, produce: Callable[[BinaryIO], object], *, root: str | None = None) -> None:
    """Write what ``produce`` writes to the stream it is given to ``uri``, all or nothing.

    A local file is written to a new temporary file (``O_CREAT | O_EXCL | O_NOFOLLOW``) in
    its folder, synced, and renamed over its name: a symbolic link there is replaced, never
    written through. Folders between ``root`` and the file are created as needed and never
    followed when they are links.

    The contents never need to be in memory at once (a checkpoint of large genomes is
    written row group by row group).

    Args:
        uri: the file: a local path or a storage URI.
        produce: writes the file's new contents to the binary stream it is called with.
        root: the run folder ``uri`` lies in (default: the folder of ``uri``).

    Raises:
        UnsafePathError: a folder below ``root`` is a symbolic link.
        OSError: the file cannot be written (one line naming it; nothing earlier changed).
    """
    filesystem, path = _filesystem(uri)
    if filesystem is not None:
        filesystem.create_dir(os.path.dirname(path), recursive=True)
        with filesystem.open_output_stream(path) as stream:
            produce(stream)
        return
    base, folders, name = _parts_below(path, root)
    try:
        folder = _open_folder(base, folders, create=True)
    except OSError as error:
        raise _write_error(uri, error) from None
    temporary = f"{TEMPORARY_PREFIX}{secrets.token_hex(8)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        # Mode 0666 less the umask (0644 as a rule), as PIL, matplotlib and other tools write:
        # run folders are shared and served (the gallery is an index.html).
        handle = os.open(temporary, flags, 0o666, dir_fd=folder)
        try:
            produce(_Appender(handle))
            os.fsync(handle)
        finally:
            os.close(handle)
        os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
        os.fsync(folder)  # make the rename itself durable
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=folder)
        if isinstance(error, OSError):
            raise _write_error(uri, error) from None
        raise
    finally:
        os.close(folder)


def read_bytes(uri: str, limit: int | None = None) -> bytes:
    """Contents of ``uri``; with ``limit``, refused when larger (a planted file is untrusted).

    Raises:
        FileNotFoundError: nothing is there.
        StorageError: a local entry that is not a regular file (a folder, a FIFO: never waited
            on), or more than ``limit`` bytes (never read whole).
    """
    size = -1 if limit is None else limit + 1
    filesystem, path = _filesystem(uri)
    if filesystem is None:
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(handle, "rb") as file:
            if not stat.S_ISREG(os.fstat(handle).st_mode):
                raise StorageError(f"{uri} is not a regular file")
            data = file.read(size)
    else:
        try:
            with filesystem.open_input_stream(path) as stream:
                data = stream.read(None if limit is None else size)
        except (OSError, pa.ArrowException) as error:
            raise FileNotFoundError(f"{uri}: {error_line(error)}") from None
    if limit is not None and len(data) > limit:
        raise StorageError(f"{uri} holds over {limit:,} bytes, not what a run writes; refusing to read it")
    return data


def open_input_file(uri: str) -> BinaryIO:
    """A seekable binary file of ``uri`` to read parts of (a Parquet footer), never following a link.

    Raises:
        FileNotFoundError: nothing is there.
        StorageError: a local entry that is not a regular file (a folder, a FIFO: never waited on).
        OSError: a local symbolic link (``ELOOP``: never followed).
    """
    filesystem, path = _filesystem(uri)
    if filesystem is not None:
        return filesystem.open_input_file(path)
    handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    file = os.fdopen(handle, "rb")
    if not stat.S_ISREG(os.fstat(handle).st_mode):
        file.close()
        raise StorageError(f"{uri} is not a regular file")
    return file


def is_link(uri: str) -> bool:
    """Whether ``uri`` is a local symbolic link (never one on an object store)."""
    filesystem, path = _filesystem(uri)
    return filesystem is None and os.path.islink(path)


def exists(uri: str) -> bool:
    """Whether anything (a file or a folder) is at ``uri``.

    Args:
        uri: a local path or a storage URI.

    Returns:
        ``True`` when something is there.

    Raises:
        StorageError: the storage of ``uri`` cannot be opened.
    """
    filesystem, path = _filesystem(uri)
    if filesystem is None:
        return os.path.exists(path)
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def list_names(uri: str) -> list[str]:
    """Names of the entries directly inside folder ``uri`` (empty if it does not exist)."""
    filesystem, path = _filesystem(uri)
    if filesystem is None:
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    selector = pafs.FileSelector(path, allow_not_found=True)
    return sorted(os.path.basename(info.path) for info in filesystem.get_file_info(selector))


def folder_entries(uri: str) -> list[str] | None:
    """Names directly inside folder ``uri``; ``None`` when nothing is there.

    Raises:
        NotADirectoryError: ``uri`` is a file.
    """
    filesystem, path = _filesystem(uri)
    if filesystem is None:
        found, folder = os.path.exists(path), os.path.isdir(path)
    else:
        kind = filesystem.get_file_info(path).type
        found, folder = kind != pafs.FileType.NotFound, kind == pafs.FileType.Directory
    if not found:
        return None
    if not folder:
        raise NotADirectoryError(f"{uri} is a file, not a folder")
    return list_names(uri)


def delete(uri: str, *, root: str | None = None) -> None:
    """Delete the file ``uri`` (nothing if it is already gone), never following a link.

    A local symbolic link is removed itself; a folder is left alone.

    Args:
        uri: the file: a local path or a storage URI.
        root: the run folder ``uri`` lies in (default: the folder of ``uri``); folders below
            it that are links are refused, not followed.

    Raises:
        UnsafePathError: a folder below ``root`` is a symbolic link.
    """
    filesystem, path = _filesystem(uri)
    if filesystem is not None:
        with contextlib.suppress(FileNotFoundError):
            filesystem.delete_file(path)
        return
    base, folders, name = _parts_below(path, root)
    try:
        folder = _open_folder(base, folders, create=False)
    except FileNotFoundError:
        return
    try:
        if not stat.S_ISDIR(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode):
            os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        pass
    finally:
        os.close(folder)


def check_writable(out: str) -> None:
    """Fail before any work when run folder ``out`` cannot take objects.

    Writes and deletes a small probe object, so a typo in a bucket name or missing
    credentials show up at once instead of at the first checkpoint, hours later.

    Raises:
        StorageError: ``out`` names no filesystem pyarrow knows, or cannot be written (one line).
    """
    uri = join(out, WRITE_PROBE_NAME)
    try:
        write_bytes(uri, b"probe")
        delete(uri)
    except _UnopenableStorage:
        raise
    except (OSError, pa.ArrowException) as error:
        raise StorageError(f"--out {out} cannot be written: {error_line(error)}") from None


# --- reachability: storage that does not answer fails in seconds, in one line ------------------

# How long the check of a storage URI may take before the command gives up (seconds).
STORAGE_TIMEOUT_VARIABLE = "FOOLING_STORAGE_TIMEOUT"
DEFAULT_STORAGE_TIMEOUT_S = 10.0

# Run in a child process: a store with no route makes pyarrow's clients retry for many
# minutes inside C++ calls that neither a timeout nor Ctrl-C can cut short, while a child
# process can always be killed. It opens the filesystem and reads the entry's type.
_PROBE = """
import sys
import pyarrow.fs as pafs
try:
    filesystem, path = pafs.FileSystem.from_uri(sys.argv[1])
    filesystem.get_file_info(path)
except Exception as error:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    print(lines[0] if lines else type(error).__name__)
    sys.exit(1)
"""


def is_uri(location: str) -> bool:
    """``True`` for a filesystem URI (``s3://``, ``gs://``, ...), ``False`` for a local path."""
    return "://" in location and not location.startswith("file://")


def storage_timeout() -> float:
    """Seconds a storage check may take: ``$FOOLING_STORAGE_TIMEOUT``, else 10.

    Raises:
        UserError: the variable is not a positive number.
    """
    return timeout_seconds(STORAGE_TIMEOUT_VARIABLE, DEFAULT_STORAGE_TIMEOUT_S)


def check_location(location: str, what: str = "--out", timeout: float | None = None) -> None:
    """Fail within ``timeout`` seconds, in one line, when storage URI ``location`` does not answer.

    Local paths are left to the command (nothing to wait for). A URI is opened and its
    entry looked up in a child process that is killed when the time is up, so the
    check ends on time, and Ctrl-C ends it at once, whatever the store does.

    Args:
        location: run folder or output location, a local path or a URI.
        what: how the command line named it, for the message (``--out``, ``--resume``).
        timeout: seconds to wait (default: :func:`storage_timeout`).

    Raises:
        StorageError: no answer in time, or the store refused (unknown scheme, bad
            credentials, no such bucket, connection refused...).
    """
    if not is_uri(location):
        return
    seconds = storage_timeout() if timeout is None else timeout
    command = [sys.executable, "-c", _PROBE, location]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise StorageError(
            f"{what} {location}: no answer from the store within {seconds:g} s (check the endpoint, "
            f"network and credentials; {STORAGE_TIMEOUT_VARIABLE} sets the wait)"
        ) from None
    if result.returncode != 0:
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        reason = lines[0].strip()[:240] if lines else f"the check exited with code {result.returncode}"
        raise StorageError(f"{what} {location} cannot be used: {reason}")
