"""Checkpoint rows checked before any of them reaches a page or a figure.

A run folder may come from someone else: every field the report reads from a checkpoint is
type-checked here (integers are integers, confidences finite numbers, names text, thumbnails
real PNG images of bounded size), and a row that fails is refused with one line naming the
file, the row and the field, never its content.
"""

from __future__ import annotations

import io
import math
import struct

from PIL import Image

from fooling.encodings.errors import UserError
from fooling.fitness.limits import MAX_CLASS_NAME_LENGTH

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Largest side of a checkpoint thumbnail the report decodes (the run writes at most 128 px).
MAX_PNG_SIDE = 1024
# Longest class name shown: what a labels file may hold.
MAX_NAME_LENGTH = MAX_CLASS_NAME_LENGTH
# Largest side of the thumbnails the gallery page shows.
PAGE_THUMBNAIL_SIDE = 64


class UntrustedFieldError(UserError):
    """A checkpoint field of the wrong type or out of range: not something a run writes."""


def _integer(value: object, low: int = 0) -> bool:
    return type(value) is int and value >= low


def _kind(value: object) -> str:
    """What ``value`` is, in a few words that never include its content."""
    if type(value) in (int, float):
        return f"the number {value!r}" if math.isfinite(value) else "a non-finite number"
    return f"a value of type {type(value).__name__}"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height a PNG declares in its header, read without decoding it.

    Raises:
        ValueError: not PNG bytes, or a side of 0 or more than :data:`MAX_PNG_SIDE`.
    """
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError("bytes that are not a PNG image")
    width, height = struct.unpack(">II", data[16:24])
    if not (0 < width <= MAX_PNG_SIDE and 0 < height <= MAX_PNG_SIDE):
        raise ValueError(f"a {width}x{height} PNG, larger than {MAX_PNG_SIDE}x{MAX_PNG_SIDE}")
    return width, height


def decode_png(data: bytes) -> Image.Image:
    """The picture of checked PNG bytes, as ``L`` or ``RGB``.

    Raises:
        ValueError: not a PNG, too large (checked before decoding), or damaged.
    """
    size = png_size(data)
    try:
        picture = Image.open(io.BytesIO(data), formats=["PNG"])
        if picture.size != size:
            raise ValueError("header and image disagree")
        picture.load()
        return picture if picture.mode in ("L", "RGB") else picture.convert("RGB")
    except (OSError, SyntaxError, ValueError, struct.error, Image.DecompressionBombError) as error:
        raise ValueError(f"a damaged PNG ({type(error).__name__})") from None


def page_thumbnail(data: bytes, max_side: int = PAGE_THUMBNAIL_SIDE) -> bytes:
    """A PNG of at most ``max_side`` pixels a side, re-encoded from checked PNG bytes.

    Only bytes made here reach a page: the checkpoint's own are decoded, not copied.

    Raises:
        ValueError: ``data`` is not a PNG the report accepts (see :func:`decode_png`).
    """
    picture = decode_png(data)
    if max(picture.size) > max_side:
        # Nearest neighbour keeps noise and hard CPPN edges as the network sees them.
        picture.thumbnail((max_side, max_side), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def checked_rows(rows: list[dict], source: str) -> list[dict]:
    """Checkpoint rows with their types checked, as new dicts of the fields the report uses.

    Args:
        rows: one dict per occupied cell, as read from a checkpoint.
        source: the checkpoint (named in errors).

    Returns:
        One dict per row with ``class_id`` (int >= 0), ``class_name`` (str), ``fitness``
        (finite float), ``birth_generation`` (int >= 0) and ``image_png`` (PNG bytes whose
        header was checked, or ``None``).

    Raises:
        UntrustedFieldError: a field of the wrong type, out of range, or a thumbnail that is
            not a PNG; the message names the file, row and field, not the field's content.
    """
    checked = []
    seen: set[int] = set()
    for index, row in enumerate(rows):
        class_id, name = row.get("class_id"), row.get("class_name")
        fitness, generation = row.get("fitness"), row.get("birth_generation")
        picture = row.get("image_png")
        problem = None
        if not _integer(class_id) or class_id in seen:
            problem = ("class_id", "a non-negative integer, one row per class")
        elif type(name) is not str or len(name) > MAX_NAME_LENGTH:
            problem = ("class_name", f"text of at most {MAX_NAME_LENGTH} characters")
        elif type(fitness) is not float or not math.isfinite(fitness):
            problem = ("fitness", "a finite number")
        elif not _integer(generation):
            problem = ("birth_generation", "a non-negative integer")
        elif picture is not None and type(picture) is not bytes:
            problem = ("image_png", "PNG bytes")
        else:
            problem = next(
                ((field, "an integer >= -1") for field in ("individual_id", "parent_id", "parent_cell")
                 if field in row and not _integer(row[field], low=-1)),
                None,
            )  # fmt: skip
        if problem is None and picture:
            try:
                png_size(picture)
            except ValueError as error:
                problem = ("image_png", f"PNG bytes of at most {MAX_PNG_SIDE} px a side, found {error}")
        if problem is not None:
            field, expected = problem
            found = "" if "found" in expected else f", found {_kind(row.get(field))}"
            raise UntrustedFieldError(
                f"{source}: row {index}, field {field}: expected {expected}{found} "
                "(not what a run writes; refusing to put it in a page)"
            )
        seen.add(class_id)
        checked.append({
            "class_id": class_id,
            "class_name": name,
            "fitness": fitness,
            "birth_generation": generation,
            "image_png": picture or None,
        })  # fmt: skip
    return checked
