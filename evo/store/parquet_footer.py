"""The Parquet footer, read without pyarrow's column chunk objects: a bounded Thrift parser.

pyarrow (26) builds a column chunk's metadata object where a C++ exception cannot be caught:
a footer whose level histograms disagree with its schema (one flipped bit of a repetition
type does it) aborts the whole process on ``row_group(i).column(j)``. The sizes a checkpoint
is checked for before it is read are therefore read here, from the footer's Thrift (compact
protocol); pyarrow's own read of such a file raises an ordinary exception.

Every length and count is checked against the bytes left and nesting is bounded, so a
crafted footer costs at most its own size in memory and time. Pure Python, no pyarrow.
"""

from __future__ import annotations

_THRIFT_DEPTH_LIMIT = 32


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise ValueError("a damaged footer (a number runs past its end)")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _zigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def _thrift_value(data: bytes, position: int, kind: int, depth: int) -> tuple[object, int]:
    """One compact-protocol value of type ``kind`` at ``position``: ``(value, next position)``."""
    if depth > _THRIFT_DEPTH_LIMIT:
        raise ValueError("a damaged footer (nested too deep)")
    if kind in (1, 2, 3):  # a boolean in a list, or a byte
        if position >= len(data):
            raise ValueError("a damaged footer (truncated)")
        return data[position], position + 1
    if kind in (4, 5, 6):  # i16, i32, i64
        value, position = _varint(data, position)
        return _zigzag(value), position
    if kind == 7:  # double
        if position + 8 > len(data):
            raise ValueError("a damaged footer (truncated)")
        return None, position + 8
    if kind == 8:  # binary
        size, position = _varint(data, position)
        if position + size > len(data):
            raise ValueError("a damaged footer (a string runs past its end)")
        return data[position : position + size], position + size
    if kind in (9, 10):  # list, set
        if position >= len(data):
            raise ValueError("a damaged footer (truncated)")
        header = data[position]
        size, element, position = header >> 4, header & 0x0F, position + 1
        if size == 15:
            size, position = _varint(data, position)
        if size > len(data) - position:  # every element takes a byte at least
            raise ValueError("a damaged footer (a list longer than the footer)")
        items = []
        for _ in range(size):
            item, position = _thrift_value(data, position, element, depth + 1)
            items.append(item)
        return items, position
    if kind == 11:  # map
        size, position = _varint(data, position)
        if size == 0:
            return [], position
        if position >= len(data) or 2 * size > len(data) - position:
            raise ValueError("a damaged footer (a map longer than the footer)")
        key_kind, value_kind, position = data[position] >> 4, data[position] & 0x0F, position + 1
        pairs = []
        for _ in range(size):
            key, position = _thrift_value(data, position, key_kind, depth + 1)
            value, position = _thrift_value(data, position, value_kind, depth + 1)
            pairs.append((key, value))
        return pairs, position
    if kind == 12:
        return _thrift_struct(data, position, depth + 1)
    raise ValueError(f"a damaged footer (Thrift type {kind})")


def _thrift_struct(data: bytes, position: int, depth: int = 0) -> tuple[dict[int, object], int]:
    """A compact-protocol struct at ``position``: ``({field id: value}, next position)``."""
    fields: dict[int, object] = {}
    last = 0
    while True:
        if position >= len(data):
            raise ValueError("a damaged footer (truncated)")
        header = data[position]
        position += 1
        if header == 0:
            return fields, position
        kind, delta = header & 0x0F, header >> 4
        if delta:
            field = last + delta
        else:
            value, position = _varint(data, position)
            field = _zigzag(value)
        last = field
        if kind in (1, 2):  # a boolean field holds its value in its type
            fields[field] = kind == 1
            continue
        fields[field], position = _thrift_value(data, position, kind, depth)


def _pages_uncompressed(data: bytes, meta: dict) -> int:
    """The uncompressed bytes the pages of one column chunk (``ColumnMetaData`` ``meta``) declare.

    A reader sizes each page's buffer from the page's own header, not from the footer, so a
    footer declaring a small chunk over pages declaring gigabytes must not pass as small.

    Raises:
        ValueError: page headers that do not tile the chunk's bytes.
    """
    start = meta.get(11) if isinstance(meta.get(11), int) else meta.get(9)  # dictionary, else data page
    length = meta.get(7)  # total_compressed_size, page headers included
    if not isinstance(start, int) or not isinstance(length, int) or start < 0 or length < 0:
        raise ValueError("a damaged footer (a column chunk's offsets)")
    end = start + length
    if end > len(data):
        raise ValueError("a damaged footer (a column chunk past the end of the file)")
    pages = memoryview(data)[:end]
    total, position = 0, start
    while position < end:
        header, position = _thrift_struct(pages, position)
        uncompressed, compressed = header.get(2), header.get(3)
        sizes = (uncompressed, compressed)
        if not all(isinstance(size, int) for size in sizes) or min(sizes) < 0:
            raise ValueError("a damaged page header")
        total += uncompressed
        position += compressed
    if position != end:
        raise ValueError("a damaged page header (pages overrun their column chunk)")
    return total


def footer_chunks(data: bytes) -> list[tuple[int, list[tuple[str, int]]]]:
    """Each row group of Parquet file ``data``: its rows, and each column chunk's name and size.

    The size is the larger of the chunk's declared ``total_uncompressed_size`` and the sum of
    its pages' own uncompressed sizes, which a reader allocates.

    Raises:
        ValueError: not a Parquet file, or a footer that is not what Parquet writes.
    """
    if len(data) < 12 or data[-4:] != b"PAR1":
        raise ValueError("not a Parquet file")
    length = int.from_bytes(data[-8:-4], "little")
    if length > len(data) - 12:
        raise ValueError("a damaged footer (longer than the file)")
    footer, _ = _thrift_struct(data[-8 - length : -8], 0)
    groups = []
    for group in footer.get(4) or []:  # FileMetaData.row_groups
        columns, rows = (group.get(1), group.get(3)) if isinstance(group, dict) else (None, None)
        if not isinstance(columns, list) or not isinstance(rows, int) or rows < 0:
            raise ValueError("a damaged footer (a row group)")
        chunks = []
        for chunk in columns:  # ColumnChunk.meta_data: path_in_schema, total_uncompressed_size
            meta = chunk.get(3) if isinstance(chunk, dict) else None
            path = meta.get(3) if isinstance(meta, dict) else None
            size = meta.get(6) if isinstance(meta, dict) else None
            if not isinstance(path, list) or not all(isinstance(part, bytes) for part in path):
                raise ValueError("a damaged footer (a column chunk)")
            if not isinstance(size, int) or size < 0:
                raise ValueError("a damaged footer (a column chunk's size)")
            name = ".".join(part.decode() for part in path)
            chunks.append((name, max(size, _pages_uncompressed(data, meta))))
        groups.append((rows, chunks))
    return groups
