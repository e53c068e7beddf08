"""CPPN variation on tensors, on any device: the paper's mutations vectorised over the batch.

:class:`CPPNTensorVariation` gives :class:`~fooling.encodings.CPPNEncoding` its ``random_tensor`` and
``mutate_tensor``: the same operations and chances as its numpy ``random`` and ``mutate``, as torch
operations on every genome of a batch at once (no loop per child), drawing from one
``torch.Generator`` on the genomes' device.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from .cppn_genomes import ACTIVATIONS, NUM_INPUTS, WEIGHT_LIMIT, CPPNGenomes
from .tensor_operators import first_true, polynomial_mutation_tensor, random_true
from .tensors import TensorGenomes

__all__ = ["CPPNTensorVariation"]


@dataclasses.dataclass
class _Network:
    """A batch's CPPN fields as tensors while :meth:`CPPNEncoding.mutate_tensor` edits them.

    The fields of :class:`CPPNGenomes`, with sources and targets as int64 (gather indices).
    """

    node_used: torch.Tensor
    node_activation: torch.Tensor
    node_depth: torch.Tensor
    edge_used: torch.Tensor
    edge_source: torch.Tensor
    edge_target: torch.Tensor
    edge_weight: torch.Tensor


# Tries of a connection's two ends before a child gives up adding one (as the numpy version).
_CONNECTION_TRIES = 20


def _one_hot(index: torch.Tensor, width: int) -> torch.Tensor:
    """``(rows, width)`` bool, ``True`` at column ``index[r]`` of row ``r``."""
    return torch.arange(width, device=index.device) == index[:, None]


class CPPNTensorVariation:
    """The tensor operators of :class:`~fooling.encodings.CPPNEncoding`.

    A mixin: it reads the encoding's ``outputs``, capacities, split weight and chances.

    Attributes:
        static_tensor_mutation: :meth:`mutate_tensor` launches the same kernels with the same
            numbers for every batch of one shape, whatever the generation (there is no
            schedule) and whatever the genomes hold: on CUDA it can be replayed from a CUDA
            graph (:class:`~fooling.encodings.graphs.GraphedFunction`).
    """

    static_tensor_mutation: ClassVar[bool] = True

    # --- variation on tensors (any device) ---------------------------------------------

    def random_tensor(
        self, count: int, generator: torch.Generator, device: torch.device | str
    ) -> TensorGenomes:
        """``count`` genomes like :meth:`random`, drawn from ``generator`` on ``device``.

        Args:
            count: genomes to make.
            generator: source of every random draw; it lives on ``device``.
            device: where the genomes' tensors go.

        Returns:
            A :class:`TensorGenomes` of :class:`CPPNGenomes` fields with their numpy dtypes.
        """
        device = torch.device(device)
        nodes, edges = self.max_nodes, self.max_edges
        first_hidden = NUM_INPUTS + self.outputs
        slots = torch.arange(nodes, device=device)
        node_used = (slots < first_hidden).expand(count, nodes).clone()
        node_depth = torch.where(slots < NUM_INPUTS, 0.0, torch.where(slots < first_hidden, 1.0, 0.5))
        node_depth = node_depth.to(torch.float32).expand(count, nodes).clone()
        node_activation = torch.randint(
            0, len(ACTIVATIONS), (count, nodes), generator=generator, device=device, dtype=torch.int8
        )
        initial = NUM_INPUTS * self.outputs
        edge = torch.arange(edges, device=device)
        # Input i to output o in slot o * NUM_INPUTS + i, as numpy's meshgrid lays them out.
        edge_source = torch.where(edge < initial, edge % NUM_INPUTS, 0).to(torch.int16).expand(count, edges)
        edge_target = torch.where(edge < initial, NUM_INPUTS + edge // NUM_INPUTS, 0).to(torch.int16)
        edge_used = (edge < initial).expand(count, edges).clone()
        edge_weight = torch.zeros((count, edges), device=device)
        edge_weight[:, :initial].uniform_(-WEIGHT_LIMIT, WEIGHT_LIMIT, generator=generator)
        return TensorGenomes(CPPNGenomes, {
            "node_used": node_used,
            "node_activation": node_activation,
            "node_depth": node_depth,
            "edge_used": edge_used,
            "edge_source": edge_source.clone(),
            "edge_target": edge_target.expand(count, edges).clone(),
            "edge_weight": edge_weight,
        })  # fmt: skip

    def mutate_tensor(
        self, genomes: TensorGenomes, generator: torch.Generator, generation: int = 0
    ) -> TensorGenomes:
        """New genomes: :meth:`mutate`'s operators on tensors, vectorised over the batch.

        Weights (polynomial on [-10, 10]) and activations first, then each child's
        structural mutations with their probabilities, in :meth:`mutate`'s order: add a
        connection, delete one, add a node, delete one. Every operation acts on the whole
        batch at once through masks (no loop per child; off the CPU, no wait for the
        device); a child skips
        an operation as :meth:`mutate` does (no free slot, no candidate, no float32 depth
        strictly between the ends of a split connection). What is drawn never depends on
        the genomes' values (only on the batch's size, the capacities and the generator),
        so row ``i`` of the result depends only on row ``i`` of ``genomes`` and the
        generator's state.

        Args:
            genomes: ``batch_size`` parents (:class:`CPPNGenomes` fields on
                ``generator``'s device); not modified.
            generator: source of every random draw.
            generation: unused (no schedule); kept for the common signature.

        Returns:
            The children, on the parents' device, with the parents' dtypes.
        """
        used = genomes.edge_used
        weight = polynomial_mutation_tensor(
            genomes.edge_weight,
            generator,
            probability=self.weight_probability,
            eta=self.weight_eta,
            low=-WEIGHT_LIMIT,
            high=WEIGHT_LIMIT,
        )
        activation = genomes.node_activation
        resample = torch.rand(activation.shape, generator=generator, device=activation.device)
        resample = (resample < self.activation_probability) & genomes.node_used
        resample[:, :NUM_INPUTS] = False
        fresh = torch.randint(0, len(ACTIVATIONS), activation.shape, generator=generator,
                              device=activation.device, dtype=activation.dtype)  # fmt: skip
        state = _Network(
            node_used=genomes.node_used.clone(),
            node_activation=torch.where(resample, fresh, activation),
            node_depth=genomes.node_depth.clone(),
            edge_used=used.clone(),
            edge_source=genomes.edge_source.to(torch.int64),
            edge_target=genomes.edge_target.to(torch.int64),
            edge_weight=torch.where(used, weight, genomes.edge_weight),
        )
        batch = len(genomes)
        # Compared column by column with Python floats: a tensor of the chances would be a
        # copy from the host, which waits for the device.
        draws = torch.rand((batch, 4), generator=generator, device=used.device)
        operations = (self._add_connection_tensor, self._delete_connection_tensor, self._add_node_tensor,
                      self._delete_node_tensor)  # fmt: skip
        for column, (operation, chance) in enumerate(zip(operations, self.structural)):
            operation(state, draws[:, column] < chance, generator)
        fields = {field.name: getattr(state, field.name) for field in dataclasses.fields(state)}
        fields["edge_source"] = state.edge_source.to(genomes.edge_source.dtype)
        fields["edge_target"] = state.edge_target.to(genomes.edge_target.dtype)
        return TensorGenomes(CPPNGenomes, fields)

    # The structural mutations, in place on a batch's state; ``chosen`` ``(batch,)`` bool
    # says which children undergo one. Each draws a fixed number of numbers per child.

    def _add_connection_tensor(self, net: _Network, chosen: torch.Tensor, generator: torch.Generator) -> None:
        """A new connection between two used nodes, ordered by depth, not yet connected."""
        batch, device = len(chosen), chosen.device
        slot, has_slot = first_true(~net.edge_used)
        count = net.node_used.sum(dim=1, keepdim=True)  # at least NUM_INPUTS + outputs >= 5
        # The numpy version's 20 tries, all at once: an ordered pair of distinct used nodes
        # (ranks i != j among them, uniform), then the first try that is valid.
        first = torch.rand(
            (batch, _CONNECTION_TRIES), generator=generator, device=device, dtype=torch.float64
        )
        second = torch.rand(
            (batch, _CONNECTION_TRIES), generator=generator, device=device, dtype=torch.float64
        )
        i = torch.minimum((first * count).floor_().to(torch.int64), count - 1)
        j = torch.minimum((second * (count - 1)).floor_().to(torch.int64), count - 2)
        j = j + (j >= i).to(torch.int64)
        running = net.node_used.cumsum(dim=1)
        a = torch.searchsorted(running, i + 1)  # node slot of the i-th used node, (batch, tries)
        b = torch.searchsorted(running, j + 1)
        depth_a, depth_b = net.node_depth.gather(1, a), net.node_depth.gather(1, b)
        source = torch.where(depth_a > depth_b, b, a)
        target = torch.where(depth_a > depth_b, a, b)
        forward = depth_a != depth_b
        existing = (
            net.edge_used[:, None, :]
            & (net.edge_source[:, None, :] == source[:, :, None])
            & (net.edge_target[:, None, :] == target[:, :, None])
        ).any(dim=2)
        attempt, found = first_true(forward & ~existing)
        new_weight = torch.empty(batch, device=device).uniform_(
            -WEIGHT_LIMIT, WEIGHT_LIMIT, generator=generator
        )
        apply = chosen & has_slot & found
        at = _one_hot(slot, net.edge_used.shape[1]) & apply[:, None]
        net.edge_source = torch.where(at, source.gather(1, attempt[:, None]), net.edge_source)
        net.edge_target = torch.where(at, target.gather(1, attempt[:, None]), net.edge_target)
        net.edge_weight = torch.where(at, new_weight[:, None], net.edge_weight)
        net.edge_used = net.edge_used | at

    def _delete_connection_tensor(
        self, net: _Network, chosen: torch.Tensor, generator: torch.Generator
    ) -> None:
        """One used connection, chosen uniformly, disabled."""
        slot, found = random_true(net.edge_used, generator)
        net.edge_used = net.edge_used & ~(_one_hot(slot, net.edge_used.shape[1]) & (chosen & found)[:, None])

    def _add_node_tensor(self, net: _Network, chosen: torch.Tensor, generator: torch.Generator) -> None:
        """A used connection ``s -> t`` split by a new node ``n``: ``s -> n`` (new slot), ``n -> t``."""
        batch, device = len(chosen), chosen.device
        node, has_node = first_true(~net.node_used)
        split, has_edge = random_true(net.edge_used, generator)
        # The split connection stays used, so the first free slot is another one.
        slot, has_slot = first_true(~net.edge_used)
        fresh = torch.randint(0, len(ACTIVATIONS), (batch,), generator=generator, device=device,
                              dtype=net.node_activation.dtype)  # fmt: skip
        source = net.edge_source.gather(1, split[:, None])  # (batch, 1)
        target = net.edge_target.gather(1, split[:, None])
        depth_source, depth_target = net.node_depth.gather(1, source), net.node_depth.gather(1, target)
        depth = (depth_source + depth_target) / 2  # float32, as the numpy version computes it
        fits = ((depth_source < depth) & (depth < depth_target))[:, 0]
        apply = (chosen & has_node & has_edge & has_slot & fits)[:, None]
        at_node = _one_hot(node, net.node_used.shape[1]) & apply
        net.node_used = net.node_used | at_node
        net.node_depth = torch.where(at_node, depth, net.node_depth)
        net.node_activation = torch.where(at_node, fresh[:, None], net.node_activation)
        edges = net.edge_used.shape[1]
        at_split = _one_hot(split, edges) & apply
        at_slot = _one_hot(slot, edges) & apply
        # NEAT's split: source -> node with weight 1, node -> target keeps the old weight;
        # the original code gives both the old weight.
        kept = net.edge_weight.gather(1, split[:, None])
        incoming = torch.ones_like(kept) if self.split_weight == "one" else kept
        net.edge_source = torch.where(at_split, node[:, None], torch.where(at_slot, source, net.edge_source))
        net.edge_target = torch.where(at_slot, node[:, None], net.edge_target)
        net.edge_weight = torch.where(at_slot, incoming, net.edge_weight)
        net.edge_used = net.edge_used | at_slot

    def _delete_node_tensor(self, net: _Network, chosen: torch.Tensor, generator: torch.Generator) -> None:
        """One used hidden node, chosen uniformly, removed with every connection to or from it."""
        hidden = net.node_used.clone()
        hidden[:, : NUM_INPUTS + self.outputs] = False
        node, found = random_true(hidden, generator)
        apply = (chosen & found)[:, None]
        net.node_used = net.node_used & ~(_one_hot(node, net.node_used.shape[1]) & apply)
        touching = (net.edge_source == node[:, None]) | (net.edge_target == node[:, None])
        net.edge_used = net.edge_used & ~(touching & apply)
