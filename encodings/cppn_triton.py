"""CPPN rendering on the GPU: a device-side compile step and one Triton kernel.

:func:`render_on_device` renders a batch of CPPNs that already live on a device as
:class:`~fooling.encodings.TensorGenomes`, without the genomes or the images leaving it and
with no Python loop per genome:

1. **Compile** (torch ops, vectorised over the batch, no host synchronisation): every
   genome's nodes get positions in topological order, as :meth:`CPPNEncoding.compile
   <fooling.encodings.CPPNEncoding.compile>` lays them out (the 4 inputs, the hidden nodes by
   depth, the outputs; padding dropped, which keeps the relative order). The used connections
   become a compressed list per genome, sorted by (target position, source position), with one
   edge range per position (``start``) and the summed weight of duplicate connections.
2. **Render** (:func:`_render_program`, one Triton kernel): persistent programs take
   ``(genome, pixel block)`` tiles. A program keeps the node values of its block in a scratch
   row per position (``(positions, BLOCK)`` floats, reused for every tile, so the scratch of all
   programs stays in the L1/L2 caches: no node's full image is ever written out), walks the
   genome's positions in order, sums each node's incoming connections one after the other in the
   order of their source positions, applies the activation, then writes ``|output|`` clipped to
   [0, 1] after the fused colour conversion.

The sums run in the same order as the CPU renderer's ``index_add_`` (a node's connections by
source position, starting from zero), and the multiply and add are separate IEEE operations
(``enable_fp_fusion=False``: no fused multiply-add), so on the same inputs every sum has the
CPU's bits; differences come only from the implementations of ``sin`` and ``exp``. Nothing
uses atomics: a render is bit-identical from one call to the next on a given device.

Triton is optional: without it this module still imports, :func:`available` is ``False`` and
:func:`render_on_device` raises. On CPU tensors the kernel runs in Triton's interpreter (numpy,
one program after the other): slow, for tests; on CUDA it is compiled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator

import numpy as np
import torch

from .cppn import COLOR_CONVERSIONS, NUM_INPUTS, CPPNEncoding, CPPNGenomes, coordinate_inputs
from .graphs import GraphedFunction
from .tensors import TensorGenomes

try:  # Optional: a CPU-only torch install may lack triton.
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
    from triton.runtime.interpreter import InterpretedFunction
except ImportError:  # pragma: no cover - CI's venv has triton (torch's wheel pulls it in)
    triton = None
    tl = None
    libdevice = None
    InterpretedFunction = None

__all__ = ["available", "compile_graphed", "compile_on_device", "render_on_device", "DeviceProgram"]

logger = logging.getLogger(__name__)

# The fused colour conversions (COLOR constexpr of the kernel): 0 keeps the outputs as they are.
_COLOR_CODES = {"hsv": 1, "hls": 2, "hls-opencv": 3}
assert set(_COLOR_CODES) == set(COLOR_CONVERSIONS)  # a new conversion needs its kernel branch

# Pixels per program and tile. 512 pixels in 4 warps are 4 per thread: each connection's two
# scalar loads (source, weight) serve 4 pixels, and a position's scratch row is one 16-byte
# access per thread. Persistent programs per streaming multiprocessor: enough warps to hide the
# latency of the scratch loads; their scratch (programs x positions x BLOCK x 4 bytes, about
# 16 positions in use after 30 mutations: 132 x 8 x 16 x 2 kB = 34 MB on an H100) fits the L2.
BLOCK = 512
NUM_WARPS = 4
PROGRAMS_PER_SM = 8
# The interpreter runs programs one after the other: a few are enough to exercise the loop.
_INTERPRETER_PROGRAMS = 3


def available(device: torch.device | str = "cuda") -> bool:
    """Whether :func:`render_on_device` can run on ``device``.

    True when triton imports and ``device`` is a CUDA device torch can use, or the CPU (where
    the kernel runs in Triton's interpreter, slowly: for tests).
    """
    if triton is None:
        return False
    kind = torch.device(device).type
    return kind == "cpu" or (kind == "cuda" and torch.cuda.is_available())


@dataclasses.dataclass
class DeviceProgram:
    """Compiled CPPNs of one batch, on the genomes' device (see :func:`compile_on_device`).

    Attributes:
        count: ``(batch,)`` int32 positions in use (4 inputs, hidden nodes, outputs last).
        activation: ``(batch, max_nodes)`` int32 activation id per position.
        start: ``(batch, max_nodes + 1)`` int32; position ``p``'s incoming connections are
            entries ``start[b, p] .. start[b, p + 1] - 1`` of ``source`` and ``weight``.
        source: ``(batch, max_edges)`` int32 source position of each sorted connection.
        weight: ``(batch, max_edges)`` float32 weight of each sorted connection (duplicates of
            a (source, target) pair summed into the first, the others 0).
    """

    count: torch.Tensor
    activation: torch.Tensor
    start: torch.Tensor
    source: torch.Tensor
    weight: torch.Tensor


@contextlib.contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic torch kernels off the CPU, restored afterwards.

    There ``index_put_`` with accumulation sorts instead of using atomics; the CPU's kernels
    are deterministic already.
    """
    if device.type == "cpu":
        yield
        return
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def compile_on_device(encoding: CPPNEncoding, genomes: TensorGenomes) -> DeviceProgram:
    """The evaluation program of every genome, computed on the genomes' device.

    The positions are those of :meth:`CPPNEncoding.compile` without its padding: inputs
    ``0..3``, then the used hidden nodes by depth (ties by slot, as numpy's stable sort), then
    the outputs. Connections from or to an unused node are ignored (``validate`` rejects them).

    Args:
        encoding: the CPPN encoding (its number of outputs).
        genomes: ``batch`` CPPN genomes, fields as :class:`~fooling.encodings.CPPNGenomes`.

    Returns:
        The program, every tensor on ``genomes.device``.
    """
    return _compile(encoding.outputs, genomes)


# The compile step's recordings, per number of outputs (all it reads of the encoding).
_GRAPHED_COMPILE: dict[int, GraphedFunction] = {}


def compile_graphed(encoding: CPPNEncoding, genomes: TensorGenomes) -> DeviceProgram:
    """:func:`compile_on_device`, on CUDA replayed from a CUDA graph (:class:`GraphedFunction`).

    Its ~74 small operations are one launch then; the program is the same.
    """
    outputs = encoding.outputs
    graphed = _GRAPHED_COMPILE.get(outputs)
    if graphed is None:

        def program_fields(fields: dict[str, torch.Tensor], _generator: None) -> dict[str, torch.Tensor]:
            program = _compile(outputs, TensorGenomes(CPPNGenomes, fields))
            return {field.name: getattr(program, field.name) for field in dataclasses.fields(program)}

        graphed = _GRAPHED_COMPILE[outputs] = GraphedFunction(program_fields, "the CPPN compile step")
    return DeviceProgram(**graphed(genomes.fields))


def _compile(outputs: int, genomes: TensorGenomes) -> DeviceProgram:
    """:func:`compile_on_device` for CPPNs with ``outputs`` outputs."""
    device = genomes.device
    node_used = genomes.node_used
    batch, nodes = node_used.shape
    first_hidden = NUM_INPUTS + outputs
    hidden_used = node_used[:, first_hidden:]
    hidden_count = hidden_used.sum(dim=1)  # (batch,)
    keys = torch.where(hidden_used, genomes.node_depth[:, first_hidden:], torch.inf)
    ranked = torch.sort(keys, dim=1, stable=True).indices  # hidden slot offsets, used ones first by depth
    rank = torch.arange(nodes - first_hidden, device=device)
    hidden_position = torch.where(rank < hidden_count[:, None], NUM_INPUTS + rank, -1)
    position_of = torch.empty((batch, nodes), dtype=torch.int64, device=device)
    position_of[:, :NUM_INPUTS] = torch.arange(NUM_INPUTS, device=device)
    position_of[:, NUM_INPUTS:first_hidden] = (
        NUM_INPUTS + hidden_count[:, None] + torch.arange(outputs, device=device)
    )
    position_of[:, first_hidden:] = torch.empty_like(hidden_position).scatter_(1, ranked, hidden_position)
    count = NUM_INPUTS + hidden_count + outputs

    # Activation id per position; unused slots (position -1) go to a spare last column.
    target_column = torch.where(position_of >= 0, position_of, nodes)
    activation = torch.zeros((batch, nodes + 1), dtype=torch.int32, device=device)
    activation.scatter_(1, target_column, genomes.node_activation.to(torch.int32))

    # Connections as keys target * nodes + source, unused ones as nodes**2 (sorted last).
    source_slot = genomes.edge_source.long()
    target_slot = genomes.edge_target.long()
    used = (genomes.edge_used & node_used.gather(1, source_slot.clamp(0, nodes - 1))
            & node_used.gather(1, target_slot.clamp(0, nodes - 1)))  # fmt: skip
    source = position_of.gather(1, source_slot.clamp(0, nodes - 1))
    target = position_of.gather(1, target_slot.clamp(0, nodes - 1))
    sentinel = nodes * nodes
    key = torch.where(used, target * nodes + source, sentinel)
    # Duplicates of a pair add up in slot order from 0, as the CPU's np.add.at: one weight, one
    # product per pair, so the kernel's sums see the CPU's terms.
    merged = torch.zeros((batch, sentinel + 1), dtype=torch.float32, device=device)
    rows = torch.arange(batch, device=device)[:, None].expand_as(key)
    with _deterministic(device):
        merged.index_put_((rows, key), genomes.edge_weight.float(), accumulate=True)
    sorted_key = torch.sort(key, dim=1, stable=True).values
    first_of_pair = torch.ones_like(sorted_key, dtype=torch.bool)
    first_of_pair[:, 1:] = sorted_key[:, 1:] != sorted_key[:, :-1]
    weight = torch.where(first_of_pair, merged.gather(1, sorted_key), 0.0)
    boundaries = torch.arange(nodes + 1, device=device) * nodes
    start = torch.searchsorted(sorted_key, boundaries.expand(batch, -1).contiguous())
    return DeviceProgram(
        count=count.to(torch.int32),
        activation=activation[:, :nodes].contiguous(),
        start=start.to(torch.int32),
        source=(sorted_key % nodes).to(torch.int32),
        weight=weight.contiguous(),
    )


def _render_program(
    planes_ptr,
    count_ptr,
    activation_ptr,
    start_ptr,
    source_ptr,
    weight_ptr,
    scratch_ptr,
    out_ptr,
    pixels,
    blocks,
    tiles,
    nodes,
    edges,
    OUTPUTS: tl.constexpr,
    COLOR: tl.constexpr,
    BLOCK: tl.constexpr,
    LIBDEVICE: tl.constexpr,
):
    """Render tiles ``pid, pid + programs, ...`` of ``(genome, pixel block)``.

    ``planes`` ``(4, pixels)``, ``scratch`` ``(programs, nodes, BLOCK)``, ``out``
    ``(batch, OUTPUTS, pixels)``; the program's other arrays as :class:`DeviceProgram`.
    ``LIBDEVICE``: CUDA's accurate ``sinf``/``expf`` (``tl.sin`` compiles to the hardware's
    approximate sine, wrong by far more than 1e-5 at pixel coordinates' arguments of thousands);
    the interpreter has no libdevice and uses numpy's.
    """
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    lanes = tl.arange(0, BLOCK)
    scratch = scratch_ptr + pid.to(tl.int64) * nodes * BLOCK
    for tile in range(pid, tiles, programs):
        genome = tile // blocks
        offsets = (tile % blocks) * BLOCK + lanes
        inside = offsets < pixels
        # Every thread reads scratch written by others of its program only after a barrier
        # (here: the previous tile is done with the rows before they are overwritten).
        tl.debug_barrier()
        for i in tl.static_range(4):
            tl.store(
                scratch + i * BLOCK + lanes,
                tl.load(planes_ptr + i * pixels + offsets, mask=inside, other=0.0),
            )
        tl.debug_barrier()
        count = tl.load(count_ptr + genome)
        for position in range(4, count):
            first = tl.load(start_ptr + genome * (nodes + 1) + position)
            last = tl.load(start_ptr + genome * (nodes + 1) + position + 1)
            total = tl.full([BLOCK], 0.0, tl.float32)
            # One connection after the other, by source position: the CPU's order of summation.
            for edge in range(first, last):
                source = tl.load(source_ptr + genome * edges + edge)
                weight = tl.load(weight_ptr + genome * edges + edge)
                total = total + weight * tl.load(scratch + source * BLOCK + lanes)
            activation = tl.load(activation_ptr + genome * nodes + position)
            if activation == 0:  # sine
                value = libdevice.sin(total) if LIBDEVICE else tl.sin(total)
            elif activation == 1:  # bipolar sigmoid 2 * sigmoid(x) - 1, sigmoid = 1 / (1 + e^-x)
                exponential = libdevice.exp(-total) if LIBDEVICE else tl.exp(-total)
                value = 2.0 * tl.div_rn(tl.full([BLOCK], 1.0, tl.float32), 1.0 + exponential) - 1.0
            elif activation == 2:  # gaussian exp(-x^2)
                square = -(total * total)
                value = libdevice.exp(square) if LIBDEVICE else tl.exp(square)
            else:  # linear, clipped to [-3, 3] then / 3 (a correctly rounded division, as torch's)
                value = tl.div_rn(tl.minimum(tl.maximum(total, -3.0), 3.0), tl.full([BLOCK], 3.0, tl.float32))
            tl.store(scratch + position * BLOCK + lanes, value)
            tl.debug_barrier()
        # Outputs are the last OUTPUTS positions; pixel = |output| clipped to [0, 1].
        first_output = count - OUTPUTS
        a = tl.minimum(tl.abs(tl.load(scratch + first_output * BLOCK + lanes)), 1.0)
        image = out_ptr + genome.to(tl.int64) * OUTPUTS * pixels + offsets
        if OUTPUTS == 1 or COLOR == 0:
            tl.store(image, a, mask=inside)
            if OUTPUTS == 3:
                b = tl.minimum(tl.abs(tl.load(scratch + (first_output + 1) * BLOCK + lanes)), 1.0)
                c = tl.minimum(tl.abs(tl.load(scratch + (first_output + 2) * BLOCK + lanes)), 1.0)
                tl.store(image + pixels, b, mask=inside)
                tl.store(image + 2 * pixels, c, mask=inside)
        else:
            b = tl.minimum(tl.abs(tl.load(scratch + (first_output + 1) * BLOCK + lanes)), 1.0)
            c = tl.minimum(tl.abs(tl.load(scratch + (first_output + 2) * BLOCK + lanes)), 1.0)
            # The formulas of fooling.encodings.color, operation for operation. Their remainders
            # (torch's % of non-negative values, exact) are one conditional subtraction, exact by
            # Sterbenz's lemma (y <= x <= 2y), where a float remainder may not be on the GPU.
            if COLOR == 1:  # hsv: channel k = v * (1 - s * clamp(min(t, 4 - t), 0, 1)), t = (o_k + 6h) % 6
                for offset in tl.static_range(5, 0, -2):
                    t = offset + a * 6.0
                    t = tl.where(t >= 6.0, t - 6.0, t)
                    amount = tl.minimum(tl.maximum(tl.minimum(t, 4.0 - t), 0.0), 1.0)
                    tl.store(image + ((5 - offset) // 2) * pixels, c * (1.0 - b * amount), mask=inside)
            else:
                if COLOR == 3:  # hls-opencv: bytes trunc(|o| * 255), hue 2 degrees a byte, wrapped
                    a = tl.floor(a * 255.0) * 2.0
                    a = tl.div_rn(tl.where(a >= 360.0, a - 360.0, a), tl.full([BLOCK], 360.0, tl.float32))
                    b = tl.div_rn(tl.floor(b * 255.0), tl.full([BLOCK], 255.0, tl.float32))
                    c = tl.div_rn(tl.floor(c * 255.0), tl.full([BLOCK], 255.0, tl.float32))
                # hls: channel k = l - 0.5 * chroma * clamp(min(k - 3, 9 - k), -1, 1), k = (o_k + 12h) % 12
                chroma = (1.0 - tl.abs(2.0 * b - 1.0)) * c
                for channel in tl.static_range(3):
                    k = (8 * channel % 12) + a * 12.0  # offsets 0, 8, 4
                    k = tl.where(k >= 12.0, k - 12.0, k)
                    amount = tl.minimum(tl.maximum(tl.minimum(k - 3.0, 9.0 - k), -1.0), 1.0)
                    value = b - 0.5 * chroma * amount
                    if COLOR == 3:  # cvRound to a byte: half to even, by the 2^23 trick (0 <= x <= 255)
                        value = tl.div_rn(
                            (value * 255.0 + 8388608.0) - 8388608.0, tl.full([BLOCK], 255.0, tl.float32)
                        )
                    tl.store(image + channel * pixels, value, mask=inside)


if triton is not None:
    # Compiled for CUDA tensors; interpreted (numpy) for CPU tensors. Triton reads
    # TRITON_INTERPRET when `triton.jit` decorates, so with the variable set both are interpreted.
    _COMPILED = triton.jit(_render_program)
    _INTERPRETED = InterpretedFunction(_render_program)


def render_on_device(encoding: CPPNEncoding, genomes: TensorGenomes) -> torch.Tensor:
    """The images of ``genomes``, rendered on their device by the Triton kernel.

    The same images as :meth:`CPPNEncoding.render` (same layout, coordinates and colour
    conversion) up to the last bits of ``sin`` and ``exp``; the compile step and the kernel
    stay on the device and nothing waits for the host.

    Args:
        encoding: the CPPN encoding (outputs, image size, colour space, coordinates).
        genomes: ``batch`` CPPN genomes on a CUDA device (or the CPU: Triton's interpreter).

    Returns:
        ``(batch, outputs, height, width)`` float32 in [0, 1] on ``genomes.device``.

    Raises:
        RuntimeError: triton is not installed, or the device is neither CUDA nor the CPU.
    """
    device = genomes.device
    if not available(device):
        raise RuntimeError(
            f"the Triton CPPN renderer cannot run on {device} (triton installed: {triton is not None})"
        )
    outputs, height, width = encoding.shape
    batch = len(genomes)
    images = torch.empty((batch, outputs, height, width), dtype=torch.float32, device=device)
    if batch == 0:
        return images
    program = compile_graphed(encoding, genomes)
    planes = coordinate_inputs(height, width, device, coordinates=encoding.coordinates).contiguous()
    pixels = height * width
    blocks = triton.cdiv(pixels, BLOCK)
    tiles = batch * blocks
    # With TRITON_INTERPRET=1 the "compiled" kernel is interpreted too, without libdevice.
    interpreted = device.type != "cuda" or isinstance(_COMPILED, InterpretedFunction)
    if device.type == "cuda":
        kernel = _COMPILED
        processors = torch.cuda.get_device_properties(device).multi_processor_count
        programs = min(tiles, processors * PROGRAMS_PER_SM)
    else:
        kernel = _INTERPRETED
        programs = min(tiles, _INTERPRETER_PROGRAMS)
    nodes = program.activation.shape[1]
    scratch = torch.empty((programs, nodes, BLOCK), dtype=torch.float32, device=device)
    color = _COLOR_CODES.get(encoding.color_space, 0) if outputs == 3 else 0
    # The interpreter's numpy warns where e^-x overflows to inf in the sigmoid (1 / (1 + inf) = 0,
    # as torch's); num_stages=1: no software pipelining of the scratch loads across the stores.
    with np.errstate(over="ignore"):
        kernel[(programs,)](
            planes, program.count, program.activation, program.start, program.source, program.weight,
            scratch, images, pixels, blocks, tiles, nodes, program.source.shape[1],
            OUTPUTS=outputs, COLOR=color, BLOCK=BLOCK, LIBDEVICE=not interpreted,
            num_warps=NUM_WARPS, num_stages=1, enable_fp_fusion=False,
        )  # fmt: skip
    return images
