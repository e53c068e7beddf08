"""CPPN encoding (Stanley 2007) as in the paper: NEAT-style complexification, no crossover.

A genome is a small feed-forward network from pixel coordinates to colour. Inputs are
``x``, ``y`` (in [-1, 1]), ``d`` (distance from the centre) and a bias of 1; outputs are
1 (gray) or 3 (colour, HSV or HLS) channels, pixel = ``|output|``.

Genomes are fixed-capacity padded arrays so that a batch is a plain structure of arrays
(it stacks, slices, ships through Ray and Parquet as numpy buffers). Every node carries a
*depth* in [0, 1]: inputs 0, outputs 1, a node made by splitting ``a -> b`` gets the mean
of their depths, and a connection always goes from a smaller depth to a larger one. The
network is therefore acyclic by construction, and sorting nodes by depth gives the
topological evaluation order used by :meth:`CPPNEncoding.render`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch

from ._threads import in_threads, thread_count
from .color import hls_bytes_to_rgb, hls_to_rgb, hsv_to_rgb
from .cppn_genomes import (
    ACTIVATIONS,
    NUM_INPUTS,
    WEIGHT_LIMIT,
    CPPNGenomes,
)
from .cppn_tensors import CPPNTensorVariation
from .errors import UserError
from .operators import polynomial_mutation

# How 3 outputs (|o| in [0, 1]) become RGB; "rgb" takes them as they are.
COLOR_CONVERSIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "hsv": hsv_to_rgb,
    "hls": hls_to_rgb,
    "hls-opencv": hls_bytes_to_rgb,
}
COLOR_SPACES = ("rgb", *COLOR_CONVERSIONS)


def _bipolar_sigmoid_(x: torch.Tensor) -> torch.Tensor:
    return x.sigmoid_().mul_(2.0).sub_(1.0)


def _gaussian_(x: torch.Tensor) -> torch.Tensor:
    return x.mul_(x).neg_().exp_()


def _clipped_linear_(x: torch.Tensor) -> torch.Tensor:
    return x.clamp_(-3.0, 3.0).div_(3.0)


# The same functions in place, in the order of ACTIVATIONS, for the renderer without gradients:
# the same operations on the same values, so the same bits (tested), without a temporary
# tensor per operation or a copy into the node's rows (a fifth of the rendering time at 256 px).
_ACTIVATIONS_IN_PLACE: tuple[Callable[[torch.Tensor], torch.Tensor], ...] = (
    torch.sin_,
    _bipolar_sigmoid_,
    _gaussian_,
    _clipped_linear_,
)


COORDINATES = ("unit", "pixel")


def coordinate_inputs(
    height: int, width: int, device: torch.device | str = "cpu", *, coordinates: str = "unit"
) -> torch.Tensor:
    """The four input planes ``(4, height * width)``: x, y, d, bias 1.

    ``d`` is always the distance from the centre with x and y scaled to [-1, 1]. With
    ``coordinates="unit"`` x and y are those scaled values too (smooth images); with
    ``"pixel"`` they are the raw column and row, 0 .. width-1 and 0 .. height-1, as the
    original code feeds them (with weights up to 10, the fine periodic textures of the
    paper's images).

    Raises:
        ValueError: ``coordinates`` is neither ``"unit"`` nor ``"pixel"``.
    """
    if coordinates not in COORDINATES:
        raise ValueError(f"coordinates must be unit or pixel, not {coordinates!r}")
    y = torch.linspace(-1.0, 1.0, height, device=device)
    x = torch.linspace(-1.0, 1.0, width, device=device)
    grid_y, grid_x = torch.meshgrid(y, x, indexing="ij")
    distance = torch.sqrt(grid_x**2 + grid_y**2)
    if coordinates == "pixel":
        rows = torch.arange(height, device=device, dtype=torch.float32)
        columns = torch.arange(width, device=device, dtype=torch.float32)
        grid_y, grid_x = torch.meshgrid(rows, columns, indexing="ij")
    return torch.stack([grid_x, grid_y, distance, torch.ones_like(grid_x)]).reshape(4, -1)


class CPPNEncoding(CPPNTensorVariation):
    """CPPN genomes, the paper's mutations and batched rendering.

    Args:
        outputs: 1 (gray) or 3 (colour).
        height: rendered image height (any; CPPNs are resolution independent).
        width: rendered image width.
        color_space: 3 outputs read as ``"hsv"`` (paper's text), ``"hls"``, or
            ``"hls-opencv"`` (the original code's bytes and OpenCV's 8-bit HLS, see
            :func:`~fooling.encodings.color.hls_bytes_to_rgb`): the ``--color-space``
            choices of the registered ``cppn`` encoding; ``"rgb"`` takes them as they are
            (for Python callers: no run config names it).
        coordinates: ``"unit"`` (x, y in [-1, 1]) or ``"pixel"`` (the original code's raw
            pixel column and row); see :func:`coordinate_inputs`.
        split_weight: weights of the two connections that replace a split one: ``"one"``
            (NEAT: 1 into the new node, the old weight out of it) or ``"old"`` (the original
            code: the old weight on both).
        max_nodes: capacity of a genome in nodes; a mutation that would exceed it is skipped.
        max_edges: capacity of a genome in connections, likewise.
        weight_probability: chance each weight mutates (polynomial, ``weight_eta``).
        activation_probability: chance each non-input node's activation is resampled.
        add_connection: chance per child of adding a connection.
        delete_connection: chance per child of deleting a connection.
        add_node: chance per child of splitting a connection with a new node.
        delete_node: chance per child of deleting a hidden node.

    Raises:
        ValueError: a size or probability out of range.
    """

    name = "cppn"
    genome_class = CPPNGenomes

    def __init__(
        self,
        *,
        outputs: int,
        height: int,
        width: int,
        color_space: str = "hsv",
        coordinates: str = "unit",
        split_weight: str = "one",
        max_nodes: int = 48,
        max_edges: int = 160,
        weight_probability: float = 0.1,
        weight_eta: float = 15.0,
        activation_probability: float = 0.1,
        add_connection: float = 0.5,
        delete_connection: float = 0.3,
        add_node: float = 0.5,
        delete_node: float = 0.2,
    ) -> None:
        if outputs not in (1, 3):
            raise ValueError(f"a CPPN has 1 or 3 outputs, not {outputs}")
        if height < 1 or width < 1:
            raise ValueError(f"image size must be positive, not {height}x{width}")
        if color_space not in COLOR_SPACES:
            raise ValueError(f"color space must be one of {', '.join(COLOR_SPACES)}, not {color_space!r}")
        if coordinates not in COORDINATES:
            raise ValueError(f"coordinates must be unit or pixel, not {coordinates!r}")
        if split_weight not in ("one", "old"):
            raise ValueError(f"split weight must be one or old, not {split_weight!r}")
        if max_nodes < NUM_INPUTS + outputs or max_edges < NUM_INPUTS * outputs:
            raise ValueError("capacity too small for the initial fully connected network")
        for value in (weight_probability, activation_probability, add_connection, delete_connection,
                      add_node, delete_node):  # fmt: skip
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"probabilities must be in [0, 1], not {value}")
        self.outputs = outputs
        self.shape = (outputs, height, width)
        self.color_space = color_space
        self.coordinates = coordinates
        self.split_weight = split_weight
        self.max_nodes = max_nodes
        self.max_edges = max_edges
        self.weight_probability = weight_probability
        self.weight_eta = weight_eta
        self.activation_probability = activation_probability
        self.structural = (add_connection, delete_connection, add_node, delete_node)

    # --- creation ---------------------------------------------------------------------

    def random(self, count: int, rng: np.random.Generator) -> CPPNGenomes:
        """``count`` genomes with no hidden node, every input connected to every output."""
        nodes, edges = self.max_nodes, self.max_edges
        first_hidden = NUM_INPUTS + self.outputs
        node_used = np.zeros((count, nodes), bool)
        node_used[:, :first_hidden] = True
        node_depth = np.full((count, nodes), 0.5, np.float32)
        node_depth[:, :NUM_INPUTS] = 0.0
        node_depth[:, NUM_INPUTS:first_hidden] = 1.0
        node_activation = rng.integers(0, len(ACTIVATIONS), size=(count, nodes)).astype(np.int8)
        initial = NUM_INPUTS * self.outputs
        sources, targets = np.meshgrid(np.arange(NUM_INPUTS), np.arange(NUM_INPUTS, first_hidden))
        edge_source = np.zeros((count, edges), np.int16)
        edge_target = np.zeros((count, edges), np.int16)
        edge_source[:, :initial] = sources.ravel()
        edge_target[:, :initial] = targets.ravel()
        edge_used = np.zeros((count, edges), bool)
        edge_used[:, :initial] = True
        edge_weight = np.zeros((count, edges), np.float32)
        edge_weight[:, :initial] = rng.uniform(-WEIGHT_LIMIT, WEIGHT_LIMIT, size=(count, initial))
        return CPPNGenomes(node_used, node_activation, node_depth, edge_used, edge_source, edge_target,
                           edge_weight)  # fmt: skip

    # --- variation --------------------------------------------------------------------

    def mutate(self, genomes: CPPNGenomes, rng: np.random.Generator, generation: int = 0) -> CPPNGenomes:
        """New genomes: weights, activations and structure mutated; inputs unchanged.

        Weights and activations are mutated for the whole batch at once, then each
        structural mutation is applied with its probability (cheap per genome).
        """
        out = genomes.copy()
        # Weights of every connection at once; unused slots are masked back afterwards.
        mutated = polynomial_mutation(out.edge_weight, rng, probability=self.weight_probability,
                                      eta=self.weight_eta, low=-WEIGHT_LIMIT, high=WEIGHT_LIMIT)  # fmt: skip
        out.edge_weight = np.where(out.edge_used, mutated, out.edge_weight)
        resample = rng.random(out.node_activation.shape) < self.activation_probability
        resample[:, :NUM_INPUTS] = False
        fresh = rng.integers(0, len(ACTIVATIONS), size=out.node_activation.shape).astype(np.int8)
        out.node_activation = np.where(resample & out.node_used, fresh, out.node_activation)
        draws = rng.random((len(out), 4)) < np.array(self.structural)
        operations = (self._add_connection, self._delete_connection, self._add_node, self._delete_node)
        for row, column in zip(*np.nonzero(draws)):
            operations[column](out, int(row), rng)
        return out

    def perturb_weights(
        self,
        genomes: CPPNGenomes,
        rng: np.random.Generator,
        generation: int = 0,
        *,
        scales: tuple[float, float] = (0.01, 1.0),
    ) -> CPPNGenomes:
        """New genomes: every used weight plus Gaussian noise, topology and activations kept.

        Each genome draws one noise scale, log-uniform in ``scales`` (weight units; weights
        live in [-10, 10]), so a batch mixes fine and coarse steps. Results are clipped to
        the weight range. Vectorised over the batch.

        Args:
            genomes: ``batch_size`` parents; not modified.
            rng: source of every random draw.
            generation: unused (the operator has no schedule); kept for the common signature.
            scales: ``(smallest, largest)`` standard deviation of the noise.
        """
        out = genomes.copy()
        low, high = np.log(scales[0]), np.log(scales[1])
        sigma = np.exp(rng.uniform(low, high, size=(len(out), 1))).astype(np.float32)
        noise = rng.standard_normal(out.edge_weight.shape).astype(np.float32) * sigma
        moved = np.clip(out.edge_weight + noise, -WEIGHT_LIMIT, WEIGHT_LIMIT)
        out.edge_weight = np.where(out.edge_used, moved, out.edge_weight).astype(np.float32)
        return out

    def _free_edge(self, genomes: CPPNGenomes, row: int) -> int:
        free = np.flatnonzero(~genomes.edge_used[row])
        return int(free[0]) if free.size else -1

    def _add_connection(self, genomes: CPPNGenomes, row: int, rng: np.random.Generator) -> None:
        slot = self._free_edge(genomes, row)
        if slot < 0:
            return
        nodes = np.flatnonzero(genomes.node_used[row])
        depth = genomes.node_depth[row]
        existing = set(zip(genomes.edge_source[row][genomes.edge_used[row]].tolist(),
                           genomes.edge_target[row][genomes.edge_used[row]].tolist()))  # fmt: skip
        for _ in range(20):  # a few tries; a dense network may have no free pair left
            source, target = rng.choice(nodes, size=2, replace=False)
            if depth[source] > depth[target]:
                source, target = target, source
            if depth[source] < depth[target] and (source, target) not in existing:
                genomes.edge_source[row, slot] = source
                genomes.edge_target[row, slot] = target
                genomes.edge_weight[row, slot] = rng.uniform(-WEIGHT_LIMIT, WEIGHT_LIMIT)
                genomes.edge_used[row, slot] = True
                return

    def _delete_connection(self, genomes: CPPNGenomes, row: int, rng: np.random.Generator) -> None:
        used = np.flatnonzero(genomes.edge_used[row])
        if used.size:
            genomes.edge_used[row, rng.choice(used)] = False

    def _add_node(self, genomes: CPPNGenomes, row: int, rng: np.random.Generator) -> None:
        free_nodes = np.flatnonzero(~genomes.node_used[row])
        used = np.flatnonzero(genomes.edge_used[row])
        if free_nodes.size == 0 or used.size == 0 or (~genomes.edge_used[row]).sum() < 1:
            return
        split = rng.choice(used)
        source, target = int(genomes.edge_source[row, split]), int(genomes.edge_target[row, split])
        depth = (genomes.node_depth[row, source] + genomes.node_depth[row, target]) / 2
        if not genomes.node_depth[row, source] < depth < genomes.node_depth[row, target]:
            return  # float32 cannot place a node between these two any more
        node = int(free_nodes[0])
        genomes.node_used[row, node] = True
        genomes.node_depth[row, node] = depth
        genomes.node_activation[row, node] = rng.integers(0, len(ACTIVATIONS))
        # NEAT's split: source -> node with weight 1, node -> target keeps the old weight;
        # the original code gives both the old weight.
        genomes.edge_source[row, split], genomes.edge_target[row, split] = node, target
        slot = self._free_edge(genomes, row)
        genomes.edge_source[row, slot], genomes.edge_target[row, slot] = source, node
        kept = genomes.edge_weight[row, split]
        genomes.edge_weight[row, slot] = 1.0 if self.split_weight == "one" else kept
        genomes.edge_used[row, slot] = True

    def _delete_node(self, genomes: CPPNGenomes, row: int, rng: np.random.Generator) -> None:
        hidden = (
            np.flatnonzero(genomes.node_used[row, NUM_INPUTS + self.outputs :]) + NUM_INPUTS + self.outputs
        )
        if hidden.size == 0:
            return
        node = rng.choice(hidden)
        genomes.node_used[row, node] = False
        touching = (genomes.edge_source[row] == node) | (genomes.edge_target[row] == node)
        genomes.edge_used[row, touching] = False

    # --- rendering --------------------------------------------------------------------

    def compile(self, genomes: CPPNGenomes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Topologically ordered evaluation lists of a batch, padded to a common length.

        Every genome's nodes are laid out as: the 4 inputs, its hidden nodes by depth,
        padding (nodes with no connections), its outputs. Position ``k`` only reads
        positions ``< k``, so one pass over positions evaluates every genome.

        Returns:
            ``order`` ``(batch_size, length)`` node slot at each position (-1 for padding),
            ``weights`` ``(batch_size, length, length)`` float32 with ``weights[b, k, j]``
            the weight of the connection from position ``j`` to position ``k``, and
            ``activations`` ``(batch_size, length)`` int8 activation ids.
        """
        batch = len(genomes)
        first_hidden = NUM_INPUTS + self.outputs
        hidden_used = genomes.node_used[:, first_hidden:]
        widest = int(hidden_used.sum(axis=1).max()) if batch else 0
        length = first_hidden + widest
        # Sort hidden slots by depth, free slots last, then keep the first `widest`.
        keys = np.where(hidden_used, genomes.node_depth[:, first_hidden:], np.inf)
        ranked = np.argsort(keys, axis=1, kind="stable")[:, :widest] + first_hidden
        ranked_used = np.take_along_axis(genomes.node_used, ranked, axis=1)
        hidden = np.where(ranked_used, ranked, -1)
        inputs = np.broadcast_to(np.arange(NUM_INPUTS), (batch, NUM_INPUTS))
        outputs = np.broadcast_to(np.arange(NUM_INPUTS, first_hidden), (batch, self.outputs))
        order = np.concatenate([inputs, hidden, outputs], axis=1)
        # position_of[b, slot] = position of node slot in genome b's order.
        position_of = np.full((batch, self.max_nodes), -1, np.int64)
        rows = np.repeat(np.arange(batch), length)
        valid = order.ravel() >= 0
        position_of[rows[valid], order.ravel()[valid]] = np.tile(np.arange(length), batch)[valid]
        weights = np.zeros((batch, length, length), np.float32)
        edge_rows, edge_slots, targets, sources = self._edge_positions(genomes, position_of)
        np.add.at(weights, (edge_rows, targets, sources), genomes.edge_weight[edge_rows, edge_slots])
        activations = np.take_along_axis(genomes.node_activation, np.maximum(order, 0), axis=1)
        return order, weights, activations

    @staticmethod
    def _edge_positions(
        genomes: CPPNGenomes, position_of: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every used connection as ``(row, slot, target position, source position)``, each ``(edges,)``."""
        edge_rows, edge_slots = np.nonzero(genomes.edge_used)
        targets = position_of[edge_rows, genomes.edge_target[edge_rows, edge_slots]]
        sources = position_of[edge_rows, genomes.edge_source[edge_rows, edge_slots]]
        return edge_rows, edge_slots, targets, sources

    def render_differentiable(self, genomes: CPPNGenomes, edge_weight: torch.Tensor) -> torch.Tensor:
        """Images of ``genomes`` with ``edge_weight`` as their weights, differentiable with respect to them.

        The same images as :meth:`render` (up to float rounding), on ``edge_weight``'s device,
        for gradient steps on the weights of fixed topologies. Quantising colour spaces
        (``"hls-opencv"``) pass the gradient of the unquantised conversion (straight-through).

        Args:
            genomes: the topologies and activations (their own weights are ignored).
            edge_weight: ``(batch_size, max_edges)`` float32; unused slots are ignored.

        Returns:
            ``(batch_size, outputs, height, width)`` float32 in [0, 1].
        """
        _, height, width = self.shape
        device = edge_weight.device
        batch = len(genomes)
        order, weights, activations = self.compile(genomes)
        length = order.shape[1]
        position_of = np.full((batch, self.max_nodes), -1, np.int64)
        rows, positions = np.nonzero(order >= 0)
        position_of[rows, order[rows, positions]] = positions
        edge_rows, edge_slots, targets, sources = (
            torch.from_numpy(np.asarray(a, np.int64)).to(device)
            for a in self._edge_positions(genomes, position_of)
        )
        matrix = torch.zeros(batch, length, length, device=device, dtype=edge_weight.dtype)
        matrix = matrix.index_put(
            (edge_rows, targets, sources), edge_weight[edge_rows, edge_slots], accumulate=True
        )
        activation_t = torch.from_numpy(activations.astype(np.int64)).to(device)
        planes = coordinate_inputs(height, width, device, coordinates=self.coordinates)  # (4, pixels)
        # A list, not one buffer written in place: autograd keeps every node's values.
        values = [planes[i].expand(batch, -1) for i in range(NUM_INPUTS)]
        for position in range(NUM_INPUTS, length):
            inputs = torch.stack(values, dim=1)  # (batch, position, pixels)
            total = torch.bmm(matrix[:, position : position + 1, :position], inputs)[:, 0]
            values.append(_activate(total, activation_t[:, position]))
        images = torch.stack(values[length - self.outputs :], dim=1).abs().clamp(0.0, 1.0)
        images = images.reshape(batch, self.outputs, height, width)
        if self.outputs == 3 and self.color_space == "hls-opencv":
            hue = torch.remainder(images[:, :1] * (510.0 / 360.0), 1.0)  # byte * 2 degrees, wrapped
            smooth = hls_to_rgb(torch.cat([hue, images[:, 1:]], dim=1))
            return smooth + (hls_bytes_to_rgb(images) - smooth).detach()
        if self.outputs == 3 and self.color_space != "rgb":
            images = COLOR_CONVERSIONS[self.color_space](images)
        return images

    def render(
        self, genomes: CPPNGenomes, device: torch.device | str = "cpu", *, chunk: int = 128
    ) -> torch.Tensor:
        """Images ``(batch_size, outputs, height, width)`` float32 in [0, 1] on ``device``.

        A chunk of genomes and a tile of pixels go through each level of nodes at once
        (:func:`_render_compiled`), no loop over pixels or genomes; the colour conversion
        runs per tile too.
        """
        _, height, width = self.shape
        device = torch.device(device)
        planes = coordinate_inputs(height, width, device, coordinates=self.coordinates)  # (4, pixels)
        convert = COLOR_CONVERSIONS.get(self.color_space) if self.outputs == 3 else None
        images = torch.empty((len(genomes), *self.shape), device=device)
        flat_images = images.view(len(genomes), self.outputs, height * width)
        for start in range(0, len(genomes), chunk):
            order, weights, activations = self.compile(genomes.take(slice(start, start + chunk)))
            _render_compiled(
                order, weights, activations, planes, flat_images[start : start + len(order)], convert
            )
        return images

    # --- checks -----------------------------------------------------------------------

    def validate(self, genomes: CPPNGenomes) -> None:
        """Raise :class:`UserError` unless every genome is a well-formed acyclic CPPN of this shape.

        Checks capacity and dtypes, inputs and outputs present with depths 0 and 1,
        activation ids in range, no connection from or to a missing node ("dangling"),
        every connection going to a larger depth (no cycles), finite bounded weights. Genomes
        may come from a file (a checkpoint), so a misfit is the user's: one line.
        """
        expected = {"node_used": self.max_nodes, "edge_used": self.max_edges}
        for name, width in expected.items():
            array = getattr(genomes, name)
            if array.ndim != 2 or array.shape[1] != width:
                raise UserError(f"CPPN genomes hold {name} of shape {array.shape}, expected (n, {width})")
        first_hidden = NUM_INPUTS + self.outputs
        used = genomes.node_used
        if not used[:, :first_hidden].all():
            raise UserError("a CPPN genome lacks an input or output node")
        depth = genomes.node_depth
        if (depth[:, :NUM_INPUTS] != 0).any() or (depth[:, NUM_INPUTS:first_hidden] != 1).any():
            raise UserError("a CPPN genome's inputs or outputs are out of place")
        hidden_depth = depth[:, first_hidden:][used[:, first_hidden:]]
        if hidden_depth.size and not ((hidden_depth > 0) & (hidden_depth < 1)).all():
            raise UserError("a CPPN genome has a hidden node outside depth (0, 1)")
        activation = genomes.node_activation[used]
        if activation.size and (activation.min() < 0 or activation.max() >= len(ACTIVATIONS)):
            raise UserError("a CPPN genome has an unknown activation id")
        rows, slots = np.nonzero(genomes.edge_used)
        sources, targets = genomes.edge_source[rows, slots], genomes.edge_target[rows, slots]
        if sources.size and (
            min(sources.min(), targets.min()) < 0 or max(sources.max(), targets.max()) >= self.max_nodes
        ):
            raise UserError("a CPPN genome has a connection to a node that does not exist")
        if not (used[rows, sources].all() and used[rows, targets].all()):
            raise UserError("a CPPN genome has a dangling connection (to or from a removed node)")
        if not (depth[rows, sources] < depth[rows, targets]).all():
            raise UserError("a CPPN genome has a cycle (a connection that does not go forward)")
        weights = genomes.edge_weight[rows, slots]
        if weights.size and not (np.isfinite(weights).all() and np.abs(weights).max() <= WEIGHT_LIMIT):
            raise UserError("a CPPN genome has a weight outside [-10, 10]")


def _activate(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Apply activation ``ids[b]`` to row ``b`` of ``values`` ``(batch, pixels)``."""
    out = torch.empty_like(values)
    for index, function in enumerate(ACTIVATIONS.values()):
        rows = ids == index
        if rows.any():
            out[rows] = function(values[rows])
    return out


# Pixels rendered at once on the CPU, per thread: a chunk's node values stay in the CPU caches
# (64 genomes x 20 nodes x 4096 px x 4 B = 20 MB, against 320 MB for a whole 256 px image), and
# each torch call does enough work to hide its ~5 us overhead. Measured on 192 of the paper-scale
# run's children (19 nodes, 256 px) in 2 threads: 1024 px 68-73 img/s, 2048 px 96-106, 4096 px
# 112-132, 8192 px 112-126, 16384 px 80-99.
RENDER_TILE = 4096


def _level_plan(
    order: np.ndarray, weights: np.ndarray, activations: np.ndarray, device: torch.device
) -> tuple[list[tuple], int, np.ndarray]:
    """The groups :func:`_render_compiled` evaluates one after the other, and where values live.

    Args:
        order: ``(batch, length)`` node slot per position (-1: padding, skipped).
        weights: ``(batch, length, length)`` float32, ``weights[b, k, j]`` from ``j`` to ``k``.
        activations: ``(batch, length)`` activation ids.
        device: where the index and weight tensors go.

    Returns:
        ``plan``: per group, in level order, ``(function, local target (k,), source rows (k,),
        weights (k, 1), first row, end row)`` over the group's ``k`` connections;
        ``rows_used``: rows of the value buffer (4 shared inputs, then every group's nodes);
        ``row``: ``(batch, length)`` int64 buffer row of each genome's position.
    """
    batch, length = activations.shape
    level = np.zeros((batch, length), np.int64)
    for position in range(NUM_INPUTS, length):
        sources = weights[:, position, :position] != 0
        level[:, position] = 1 + np.where(sources, level[:, :position], 0).max(axis=1)
    level[order < 0] = 0  # padding: never evaluated, never read
    # row[b, k]: the buffer row of genome b's position k; the 4 input rows are shared.
    row = np.zeros((batch, length), np.int64)
    row[:, :NUM_INPUTS] = np.arange(NUM_INPUTS)
    groups = []  # (function, genomes, positions, first row)
    rows_used = NUM_INPUTS
    for depth in range(1, int(level.max(initial=0)) + 1):
        for index, function in enumerate(_ACTIVATIONS_IN_PLACE):
            genomes, positions = np.nonzero((level == depth) & (activations == index))
            if genomes.size:
                row[genomes, positions] = np.arange(rows_used, rows_used + genomes.size)
                groups.append((function, genomes, positions, rows_used))
                rows_used += genomes.size
    plan = []  # per group: (function, local target, source rows, weights, first row, end row)
    for function, genomes, positions, first in groups:
        incoming = weights[genomes, positions]  # (group, length)
        local, source = np.nonzero(incoming)  # by target, then by source position
        plan.append((
            function,
            torch.from_numpy(local).to(device),
            torch.from_numpy(row[genomes[local], source]).to(device),
            torch.from_numpy(incoming[local, source]).to(device)[:, None],
            first,
            first + genomes.size,
        ))  # fmt: skip
    return plan, rows_used, row


def _render_compiled(
    order: np.ndarray,
    weights: np.ndarray,
    activations: np.ndarray,
    planes: torch.Tensor,
    out: torch.Tensor,
    convert: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> None:
    """Evaluate compiled CPPNs (see :meth:`CPPNEncoding.compile`) on every pixel.

    Nodes are evaluated level by level (a node's level is one more than its highest
    source's; inputs are level 0), and within a level in groups of one activation function,
    all genomes of the chunk together. A group's weighted inputs are gathered from one
    ``(node, pixels)`` buffer, summed with ``index_add_`` and written to the group's own
    contiguous rows of that buffer, where the next levels read them. No Python loop runs per
    genome or per pixel; the loops are over levels, activations (4) and pixel tiles.

    Profiled at 256 px on the CPU (2 cores), on the paper-scale run's elites: going
    position by position instead (the nodes at the ``k``-th place of each genome's order,
    32 places against 9 levels) and scattering results back with ``index_copy_`` made 1.5x
    fewer images per second; a dense matrix product per position over all earlier ones
    spent most of its time moving memory. Every node sums its connections in the order of
    their source positions, as those forms did, so images are unchanged bit for bit.

    Args:
        order: ``(batch, length)`` node slot per position (-1: padding, skipped).
        weights: ``(batch, length, length)`` float32, ``weights[b, k, j]`` from ``j`` to ``k``.
        activations: ``(batch, length)`` activation ids.
        planes: ``(4, pixels)`` input planes (x, y, d, bias) on the rendering device.
        out: ``(batch, outputs, pixels)`` float32, written with the images: ``|output|``
            clipped to [0, 1], then ``convert``-ed. Output nodes are the last ``outputs``
            positions.
        convert: colour conversion of ``(batch, 3, 1, tile)`` pixels, or ``None``. It runs per
            tile, while the tile is still in the CPU caches (on the whole image afterwards,
            the conversion's dozen full-size passes cost a fifth of the rendering time).
    """
    device = planes.device
    batch, outputs = activations.shape[0], out.shape[1]
    plan, rows_used, row = _level_plan(order, weights, activations, device)
    output_rows = torch.from_numpy(row[:, -outputs:].ravel()).to(device)
    pixels = planes.shape[1]
    tile = RENDER_TILE if device.type == "cpu" else pixels
    starts = range(0, pixels, tile)
    # Tiles are independent, and the torch calls on a tile's small groups are too small for
    # torch's own threads (1 or 2 of them rendered equally fast), so each thread takes every
    # n-th tile. Measured at 256 px on 192 of the paper-scale run's children, 2 cores: 77-86
    # images/s in one thread, 112-132 in two.
    parts = max(1, min(thread_count(), len(starts))) if device.type == "cpu" else 1

    def render_tiles(part: int) -> None:
        for begin in starts[part::parts]:
            width = min(tile, pixels - begin)
            # Uninitialised: every row is written before it is read (inputs here, groups in level order).
            values = torch.empty(rows_used, width, device=device)
            values[:NUM_INPUTS] = planes[:, begin : begin + width]
            for function, local, sources, edge_weights, first, end in plan:
                total = values[first:end].zero_()  # the group's own rows: summed and activated there
                total.index_add_(0, local, values.index_select(0, sources).mul_(edge_weights))
                function(total)
            chosen = values.index_select(0, output_rows).view(batch, outputs, width).abs_().clamp_(0.0, 1.0)
            if convert is not None:
                chosen = convert(chosen.unsqueeze(2)).squeeze(2)
            out[:, :, begin : begin + width] = chosen

    with _deterministic_off_the_cpu(device):
        in_threads(render_tiles, parts)


@contextlib.contextmanager
def _deterministic_off_the_cpu(device: torch.device) -> Iterator[None]:
    """Use deterministic kernels while rendering on a GPU (a process-wide switch, restored after).

    On CUDA ``index_add_`` sums with atomics, in whatever order the threads arrive, so a
    node with several connections could differ in its last bit from one render to the next;
    the deterministic kernel keeps the README's promise of bit-identical archives for a fixed
    device. The CPU kernels already are.
    """
    if device.type == "cpu":
        yield
        return
    enabled, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def node_count(genomes: CPPNGenomes) -> np.ndarray:
    """Used nodes per genome, ``(batch_size,)``."""
    return genomes.node_used.sum(axis=1)
