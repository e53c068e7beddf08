"""CPPN genomes as arrays, and what they are made of: inputs, activations, the weight range.

The fixed-capacity layout every CPPN module shares (:mod:`.cppn` varies and renders it on the
host, :mod:`.cppn_tensors` varies it on a device, :mod:`.cppn_triton` renders it on a GPU).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from ._batch import GenomeBatch

NUM_INPUTS = 4  # x, y, d, bias
WEIGHT_LIMIT = 10.0  # weights live in [-10, 10], as in the paper's code


def _bipolar_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return 2.0 * torch.sigmoid(x) - 1.0  # = 2 / (1 + e^-x) - 1


def _gaussian(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-x * x)


def _clipped_linear(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(-3.0, 3.0) / 3.0


# The activation registry: name -> torch function. A genome stores indices into it.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sine": torch.sin,
    "bipolar_sigmoid": _bipolar_sigmoid,
    "gaussian": _gaussian,
    "linear": _clipped_linear,
}
ACTIVATION_NAMES = tuple(ACTIVATIONS)


@dataclasses.dataclass
class CPPNGenomes(GenomeBatch):
    """A batch of CPPNs, padded to a common capacity.

    Node slots ``0..3`` are the inputs (x, y, d, bias), slots ``4..4+outputs-1`` the
    outputs, later slots hidden nodes (used or free).

    Attributes:
        node_used: ``(batch_size, max_nodes)`` bool.
        node_activation: ``(batch_size, max_nodes)`` int8 index into :data:`ACTIVATIONS`
            (ignored for inputs and free slots).
        node_depth: ``(batch_size, max_nodes)`` float32 in [0, 1]; inputs 0, outputs 1.
        edge_used: ``(batch_size, max_edges)`` bool (enabled connections).
        edge_source: ``(batch_size, max_edges)`` int16 node slot.
        edge_target: ``(batch_size, max_edges)`` int16 node slot.
        edge_weight: ``(batch_size, max_edges)`` float32 in [-10, 10].
    """

    node_used: np.ndarray
    node_activation: np.ndarray
    node_depth: np.ndarray
    edge_used: np.ndarray
    edge_source: np.ndarray
    edge_target: np.ndarray
    edge_weight: np.ndarray
