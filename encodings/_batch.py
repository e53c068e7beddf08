"""Genome batches: small dataclasses whose fields are arrays sharing a leading batch axis."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from .errors import UserError

T = TypeVar("T", bound="GenomeBatch")

# Rows at least this large are copied one by one by :meth:`GenomeBatch.assign`.
_ROW_BY_ROW_BYTES = 1 << 16


@dataclasses.dataclass
class GenomeBatch:
    """Base class of every encoding's genomes: a structure of arrays.

    Every field is a numpy array whose first axis is the batch axis, so a batch
    slices, concatenates and serialises the same way whatever the encoding. Fields
    are plain arrays, never objects, so batches cross process boundaries (Ray,
    Parquet) without pickling anything but numpy buffers.
    """

    def __len__(self) -> int:
        return len(getattr(self, dataclasses.fields(self)[0].name))

    def arrays(self) -> dict[str, np.ndarray]:
        """The fields by name (views, not copies)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def take(self: T, rows: np.ndarray | Sequence[int] | slice) -> T:
        """Rows ``rows`` of every field, as a new batch (copies for index arrays)."""
        return type(self)(**{name: array[rows] for name, array in self.arrays().items()})

    def assign(self: T, rows: np.ndarray, other: T, other_rows: np.ndarray | None = None) -> None:
        """In place: row ``rows[i]`` of every field takes row ``i`` of ``other``.

        Args:
            rows: ``(n,)`` rows of this batch.
            other: a batch of the same class.
            other_rows: ``(n,)`` rows of ``other`` to copy (row ``other_rows[i]`` goes to
                ``rows[i]``); ``None``: ``other`` holds exactly the ``n`` rows, in order.
        """
        for name, array in self.arrays().items():
            source = getattr(other, name)
            if other_rows is None:
                array[rows] = source
            elif source[0].nbytes >= _ROW_BY_ROW_BYTES:
                # ``array[rows] = source[other_rows]`` gathers into a temporary first, copying
                # every row twice: for direct-encoded ImageNet images (600 kB a row), 500 rows
                # took 100 ms that way and 62 ms one by one.
                for row, other_row in zip(np.asarray(rows).tolist(), np.asarray(other_rows).tolist()):
                    array[row] = source[other_row]
            else:
                array[rows] = source[other_rows]

    def copy(self: T) -> T:
        return type(self)(**{name: array.copy() for name, array in self.arrays().items()})

    @classmethod
    def concatenate(cls: type[T], batches: Sequence[T]) -> T:
        """One batch holding ``batches`` one after the other."""
        names = [field.name for field in dataclasses.fields(cls)]
        return cls(**{name: np.concatenate([getattr(b, name) for b in batches]) for name in names})

    def equals(self, other: GenomeBatch) -> bool:
        """True when both batches hold bit-identical arrays."""
        if type(self) is not type(other):
            return False
        mine, theirs = self.arrays(), other.arrays()
        return all(
            mine[name].dtype == theirs[name].dtype and np.array_equal(mine[name], theirs[name])
            for name in mine
        )

    def row_bytes(self, row: int) -> bytes:
        """One genome as an ``.npz`` archive (no pickle), for storage in a Parquet cell."""
        buffer = io.BytesIO()
        np.savez(buffer, **{name: array[row] for name, array in self.arrays().items()})
        return buffer.getvalue()

    @classmethod
    def from_row_bytes(cls: type[T], rows: Sequence[bytes]) -> T:
        """Stack genomes written by :meth:`row_bytes` back into a batch.

        Raises:
            UserError: a row is not a valid ``.npz`` of this class's fields, or rows
                disagree in shape. Loading never unpickles (``allow_pickle=False``).
        """
        names = [field.name for field in dataclasses.fields(cls)]
        columns: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for index, blob in enumerate(rows):
            try:
                with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                    if sorted(npz.files) != sorted(names):
                        raise ValueError(f"fields {sorted(npz.files)} instead of {sorted(names)}")
                    for name in names:
                        columns[name].append(npz[name])
            except Exception as error:  # zipfile, numpy and our own errors alike
                raise UserError(f"genome {index} is unreadable: {error}") from None
        try:
            return cls(**{name: np.stack(values) for name, values in columns.items()})
        except ValueError as error:
            raise UserError(f"genomes disagree in shape: {error}") from None
