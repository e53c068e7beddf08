"""Checks of a checkpoint's untrusted run metadata and rows (types and ranges), before any is used.

A checkpoint may come from someone else's run folder: every field is checked here, and the
reader (:mod:`fooling.evo.store.checkpoint`) reports a :class:`DamagedField` as a damaged
checkpoint naming the file, skipped like a torn one.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pyarrow as pa

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class DamagedField(Exception):
    """What is wrong with one field of a checkpoint, in words (the reader names the file)."""


def is_count(value: object) -> bool:
    """A non-negative integer of JSON (``True`` is no count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_run_token(value: object) -> bool:
    """A run's token: 16 lowercase hex digits (:func:`~fooling.evo.store.runfolder.run_token`)."""
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{16}", value) is not None


def check_metadata(metadata: dict, rows: int) -> None:
    """Type-check the run metadata of a checkpoint whose footer declares ``rows`` rows.

    Raises:
        DamagedField: a field of the wrong type or out of range (naming the field).
    """
    for name in ("generation", "next_id"):
        if not is_count(metadata.get(name)):
            raise DamagedField(f"its {name} is {metadata.get(name)!r}, expected a non-negative integer")
    names = metadata.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise DamagedField("its class_names are not a list of names")
    for name in ("model", "weights_hash"):
        if not isinstance(metadata.get(name), str):
            raise DamagedField(f"its {name} is {metadata.get(name)!r}, expected a string")
    if not isinstance(metadata.get("config"), dict):
        raise DamagedField("its config is not a JSON object")
    if not isinstance(metadata.get("model_source"), dict | None):
        raise DamagedField("its model_source is not a JSON object")
    if not isinstance(metadata.get("genome_class"), str | None):
        raise DamagedField(f"its genome_class is {metadata.get('genome_class')!r}, expected a name")
    if not isinstance(metadata.get("emitter_state", {}), dict):
        raise DamagedField("its emitter_state is not a JSON object")
    if "rows" in metadata and metadata["rows"] != rows:
        raise DamagedField(f"its footer declares {rows} rows, its run metadata {metadata['rows']!r}")
    if rows > len(names):
        raise DamagedField(f"{rows} rows for {len(names)} classes")


# Each row column: the Arrow types it may have (by predicate) and what they are, in words.
ROW_TYPES: dict[str, tuple[Callable[[pa.DataType], bool], str]] = {
    "class_id": (pa.types.is_integer, "integers"),
    "class_name": (lambda kind: pa.types.is_string(kind) or pa.types.is_large_string(kind), "strings"),
    "fitness": (pa.types.is_floating, "floats"),
    "individual_id": (pa.types.is_integer, "integers"),
    "parent_id": (pa.types.is_integer, "integers"),
    "parent_cell": (pa.types.is_integer, "integers"),
    "birth_generation": (pa.types.is_integer, "integers"),
    "image_png": (lambda kind: pa.types.is_binary(kind) or pa.types.is_large_binary(kind), "bytes"),
}
# Columns every checkpoint has (image_png may be missing: no thumbnails).
REQUIRED_ROWS = ("class_id", "class_name", "fitness", "individual_id", "parent_id", "parent_cell",
                  "birth_generation")  # fmt: skip


def check_rows(table: pa.Table, metadata: dict) -> None:
    """Type- and range-check every row field of a checkpoint, as read into ``table``.

    class_id: distinct integers of the run's classes; class_name: that class's name;
    fitness: finite floats in [0, 1]; individual_id: integers below next_id; parent_id:
    -1 or an individual; parent_cell: -1 or a class; birth_generation: non-negative
    integers; image_png: PNG bytes or nothing.

    Raises:
        DamagedField: a missing column, or a field of the wrong type or out of range
            (naming the field).
    """
    names = metadata["class_names"]
    required = REQUIRED_ROWS + (("image_png",) if metadata["format_version"] >= 3 else ())
    for name, (accepts, kind) in ROW_TYPES.items():
        if name not in table.column_names:
            if name in required:
                raise DamagedField(f"no column {name}")
            continue
        column = table.column(name)
        if not accepts(column.type):
            raise DamagedField(f"{name} holds {column.type}, expected {kind}")
        if name != "image_png" and column.null_count:
            raise DamagedField(f"{name} has missing values")

    def values(name: str) -> np.ndarray:
        return table.column(name).to_numpy()

    def out_of_range(name: str, bad: np.ndarray, expected: str) -> None:
        if bad.any():
            found = values(name)[bad][0].item()
            raise DamagedField(f"{name} {found!r} in row {int(np.flatnonzero(bad)[0])}, expected {expected}")

    cells = values("class_id")
    out_of_range("class_id", (cells < 0) | (cells >= len(names)), f"a class id in [0, {len(names) - 1}]")
    if len(np.unique(cells)) != len(cells):
        raise DamagedField("class_id holds a class twice")
    fitness = values("fitness")
    out_of_range("fitness", ~((fitness >= 0) & (fitness <= 1)), "a finite float in [0, 1]")
    next_id = metadata["next_id"]
    ids = values("individual_id")
    out_of_range("individual_id", (ids < 0) | (ids >= next_id), f"an id in [0, next_id {next_id})")
    parents = values("parent_id")
    out_of_range("parent_id", (parents < -1) | (parents >= next_id), f"-1 or an id below next_id {next_id}")
    parent_cells = values("parent_cell")
    out_of_range("parent_cell", (parent_cells < -1) | (parent_cells >= len(names)), "-1 or a class id")
    out_of_range("birth_generation", values("birth_generation") < 0, "a non-negative integer")
    stored = table.column("class_name").to_pylist()
    for row, (cell, name) in enumerate(zip(cells.tolist(), stored)):
        if name != names[cell]:
            raise DamagedField(f"class_name {name!r} in row {row}, expected {names[cell]!r} (class {cell})")
    if "image_png" in table.column_names:
        for row, png in enumerate(table.column("image_png").to_pylist()):
            if png is not None and not png.startswith(PNG_SIGNATURE):
                raise DamagedField(f"image_png in row {row} is not a PNG")
