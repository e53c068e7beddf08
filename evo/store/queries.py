"""The run folder's query ledger: the most images a run may have sent its model.

A checkpoint stores the images sent up to it. A run killed between checkpoints has sent the
images of the generations after the last one, and a resume runs those generations again. So
before a generation sends anything, the driver durably writes what the count will be once it
has (``OUT/queries.json``), and a resume takes the larger of that and the checkpoint's count.
A generation interrupted part-way counts in full: a budget errs on the side of sending less.

The file is untrusted like everything in a run folder: it is read without following a link,
at most :data:`MAX_LEDGER_BYTES`, and must hold one non-negative integer.
"""

from __future__ import annotations

import json

from fooling.encodings import UserError
from fooling.evo.store.location import join, open_input_file, write_bytes

__all__ = ["LEDGER_NAME", "QueryLedgerError", "read_ledger", "write_ledger"]

LEDGER_NAME = "queries.json"
MAX_LEDGER_BYTES = 4096


class QueryLedgerError(UserError):
    """The run folder's query ledger cannot be read as one (a resume stops: exit 2)."""


def write_ledger(out: str, queries: int) -> None:
    """Record, all or nothing, that the run in ``out`` may have sent ``queries`` images.

    Raises:
        OSError: the file cannot be written (one line; the previous count stays).
    """
    write_bytes(join(out, LEDGER_NAME), (json.dumps({"queries": int(queries)}) + "\n").encode(), root=out)


def read_ledger(out: str) -> int | None:
    """The most images the run in ``out`` may have sent, ``None`` where it kept no ledger.

    Raises:
        QueryLedgerError: the ledger is a link, not a file, too large or not one count.
    """
    path = join(out, LEDGER_NAME)
    fix = "remove it to count from the last checkpoint alone"
    try:
        with open_input_file(path) as file:
            data = file.read(MAX_LEDGER_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as error:  # a symbolic link (never followed), a folder, a FIFO...
        raise QueryLedgerError(f"{path}: not a query ledger ({error.strerror or error}); {fix}") from None
    if len(data) > MAX_LEDGER_BYTES:
        raise QueryLedgerError(f"{path}: larger than a query ledger ({MAX_LEDGER_BYTES} bytes); {fix}")
    try:
        record = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        record = None
    queries = record.get("queries") if isinstance(record, dict) else None
    if type(queries) is not int or queries < 0:
        raise QueryLedgerError(f"{path}: damaged query ledger (no count of images); {fix}")
    return queries
