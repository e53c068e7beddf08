"""Genome batches held as torch tensors on a device, for generations that never leave the GPU.

A :class:`TensorGenomes` holds the same fields as a :class:`~fooling.encodings.GenomeBatch`
subclass (same names, dtypes and shapes), each a tensor on one device. It slices, assigns and
copies like a genome batch, so an archive can keep its elites on the scorer's device and the
parent pool, the children and the insertions stay there; :meth:`TensorGenomes.to_host` brings
a batch back as numpy arrays for checkpoints and thumbnails.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from ._batch import GenomeBatch

__all__ = ["TensorGenomes"]


def _index(rows: np.ndarray | torch.Tensor | Sequence[int] | slice, device: torch.device):
    """``rows`` as an index torch accepts on ``device`` (slices stay slices)."""
    if isinstance(rows, slice):
        return rows
    if isinstance(rows, torch.Tensor):
        return rows.to(device=device, dtype=torch.int64)
    return torch.as_tensor(np.asarray(rows, dtype=np.int64), device=device)


@dataclasses.dataclass
class TensorGenomes:
    """A batch of genomes of class ``kind`` whose fields are tensors on one device.

    Attributes:
        kind: the :class:`GenomeBatch` subclass whose fields these are.
        fields: field name -> tensor ``(batch_size, ...)``, in the order of ``kind``'s fields,
            with the dtypes of its numpy arrays.
    """

    kind: type[GenomeBatch]
    fields: dict[str, torch.Tensor]

    def __getattr__(self, name: str) -> torch.Tensor:
        # Only called for names that are not attributes: the genome fields (``genomes.pixels``).
        fields = self.__dict__.get("fields")
        if fields is not None and name in fields:
            return fields[name]
        raise AttributeError(name)

    def __len__(self) -> int:
        return next(iter(self.fields.values())).shape[0]

    @property
    def device(self) -> torch.device:
        """The device every field lives on."""
        return next(iter(self.fields.values())).device

    @classmethod
    def from_host(cls, batch: GenomeBatch, device: torch.device | str) -> TensorGenomes:
        """``batch`` copied to ``device``."""
        return cls(type(batch), {name: torch.from_numpy(np.ascontiguousarray(array)).to(device)
                                 for name, array in batch.arrays().items()})  # fmt: skip

    def to_host(self) -> GenomeBatch:
        """The genomes as a numpy :class:`GenomeBatch` of class :attr:`kind`."""
        return self.kind(**{name: tensor.cpu().numpy() for name, tensor in self.fields.items()})

    def replace(self, **fields: torch.Tensor) -> TensorGenomes:
        """A batch with ``fields`` replaced (the others shared, not copied)."""
        return TensorGenomes(self.kind, {**self.fields, **fields})

    def take(self, rows: np.ndarray | torch.Tensor | Sequence[int] | slice) -> TensorGenomes:
        """Rows ``rows`` of every field, as a new batch (copies for index arrays)."""
        index = _index(rows, self.device)
        return TensorGenomes(self.kind, {name: tensor[index] for name, tensor in self.fields.items()})

    def assign(
        self,
        rows: np.ndarray | torch.Tensor,
        other: TensorGenomes,
        other_rows: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        """In place: row ``rows[i]`` of every field takes row ``other_rows[i]`` of ``other``.

        Args:
            rows: ``(n,)`` rows of this batch.
            other: a batch of the same kind on the same device.
            other_rows: ``(n,)`` rows of ``other``; ``None``: ``other`` holds exactly the ``n`` rows.
        """
        index = _index(rows, self.device)
        source_index = None if other_rows is None else _index(other_rows, self.device)
        for name, tensor in self.fields.items():
            source = other.fields[name]
            tensor[index] = source if source_index is None else source[source_index]

    def empty(self, count: int) -> TensorGenomes:
        """``count`` rows of unset values with this batch's fields, dtypes and device (for filling)."""
        return TensorGenomes(self.kind, {name: tensor.new_empty((count, *tensor.shape[1:]))
                                         for name, tensor in self.fields.items()})  # fmt: skip

    def copy(self) -> TensorGenomes:
        """A deep copy on the same device."""
        return TensorGenomes(self.kind, {name: tensor.clone() for name, tensor in self.fields.items()})

    @classmethod
    def concatenate(cls, batches: Sequence[TensorGenomes]) -> TensorGenomes:
        """One batch holding ``batches`` one after the other (all of one kind and device)."""
        first = batches[0]
        return cls(first.kind, {name: torch.cat([b.fields[name] for b in batches]) for name in first.fields})

    def equals(self, other: TensorGenomes | GenomeBatch) -> bool:
        """True when both hold bit-identical genomes (a host batch is compared on the host)."""
        mine = self.to_host()
        theirs = other.to_host() if isinstance(other, TensorGenomes) else other
        return mine.equals(theirs)

    def nbytes(self) -> int:
        """Bytes of all fields."""
        return sum(tensor.numel() * tensor.element_size() for tensor in self.fields.values())
