"""Storage locations: every storage failure is one StorageError (an OSError), one line naming the location."""

from __future__ import annotations

import errno
import os

import pytest

import fooling.evo.store.location as location_module
from fooling.encodings import UserError
from fooling.evo.store.location import (
    StorageError,
    UnsafePathError,
    check_writable,
    exists,
    join,
    list_names,
    open_input_file,
    read_bytes,
    storage_timeout,
    write_bytes,
)


def one_line(error: BaseException) -> str:
    message = str(error)
    assert message and "\n" not in message
    return message


def test_storage_errors_are_os_errors_and_links_are_storage_errors():
    assert issubclass(StorageError, OSError)
    assert issubclass(UnsafePathError, StorageError)
    assert not issubclass(StorageError, ValueError)  # the machine's state, not a typo


@pytest.mark.parametrize("call", [exists, list_names, read_bytes, lambda uri: write_bytes(uri, b"x")])
def test_a_storage_that_cannot_be_opened_is_a_storage_error(call):
    with pytest.raises(StorageError) as caught:
        call("nosuchscheme://bucket/run/file")
    assert one_line(caught.value).startswith("cannot open storage 'nosuchscheme://bucket/run/file'")


def test_check_writable_passes_an_unopenable_storage_through_and_names_an_unwritable_folder(tmp_path):
    with pytest.raises(StorageError, match="^cannot open storage 'nosuchscheme://bucket/run/"):
        check_writable("nosuchscheme://bucket/run")
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StorageError) as caught:
        check_writable(str(tmp_path / "file"))
    assert one_line(caught.value).startswith(f"--out {tmp_path / 'file'} cannot be written: ")


def test_a_failed_write_names_the_file_and_keeps_its_errno(tmp_path, monkeypatch):
    def full(handle, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(location_module, "_write_all", full)
    target = join(str(tmp_path), "out", "file.bin")
    with pytest.raises(StorageError) as caught:
        write_bytes(target, b"data")
    assert one_line(caught.value) == f"cannot write {target}: {os.strerror(errno.ENOSPC)}"
    assert caught.value.errno == errno.ENOSPC
    assert not (tmp_path / "out" / "file.bin").exists()
    assert not [name for name in os.listdir(tmp_path / "out") if name.startswith(".tmp-")]


def test_a_linked_folder_below_the_run_folder_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError, match="is a symbolic link"):
        write_bytes(str(tmp_path / "run" / "checkpoints" / "LATEST"), b"x", root=str(tmp_path / "run"))
    assert not list((tmp_path / "elsewhere").iterdir())


def test_reading_an_entry_that_is_no_regular_file_is_a_storage_error(tmp_path):
    os.mkfifo(tmp_path / "fifo")  # never waited on
    for read in (read_bytes, open_input_file):
        with pytest.raises(StorageError, match="fifo is not a regular file"):
            read(str(tmp_path / "fifo"))
        with pytest.raises(IsADirectoryError):
            read(str(tmp_path))
        with pytest.raises(FileNotFoundError):  # nothing there: an answer, not a storage failure
            read(str(tmp_path / "missing"))


def test_open_input_file_never_follows_a_link(tmp_path):
    (tmp_path / "real").write_bytes(b"contents")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with open_input_file(str(tmp_path / "real")) as file:
        assert file.read() == b"contents"
    with pytest.raises(OSError):
        open_input_file(str(tmp_path / "link"))


@pytest.mark.parametrize("value", ["0", "-3", "soon", "inf", "nan"])
def test_a_bad_storage_timeout_is_a_user_error(monkeypatch, value):
    monkeypatch.setenv("FOOLING_STORAGE_TIMEOUT", value)
    with pytest.raises(UserError, match="FOOLING_STORAGE_TIMEOUT"):
        storage_timeout()
