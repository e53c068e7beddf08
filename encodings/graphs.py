"""Pure tensor functions replayed as CUDA graphs: one launch where eager torch makes hundreds.

On a GPU, a CPPN batch's mutation is 276 top-level torch operators and the renderer's compile
step 74 (counted on the CPU, ``docs/on-device.md``). On the paper's 400 children
each of them is shorter on the GPU than launching it, so the GPU waits while the host issues
them. :class:`GraphedFunction` records such a function once per signature of its inputs
(shapes, dtypes, device) and afterwards replays the recording: the host issues one launch, and
the device runs the same kernels with the same arguments, so the results are those of calling
the function itself.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

import torch

from .errors import error_line
from .tensors import TensorGenomes

__all__ = ["Capture", "GraphedFunction", "TensorFunction", "capture_cuda_graph", "graphed_mutation"]

logger = logging.getLogger(__name__)

# fn(inputs, generator) -> outputs: name -> tensor in, name -> tensor out.
TensorFunction = Callable[[dict[str, torch.Tensor], "torch.Generator | None"], dict[str, torch.Tensor]]
# capture(fn, static inputs, generator) -> (static outputs, replay): what records ``fn``.
Capture = Callable[
    [TensorFunction, dict[str, torch.Tensor], "torch.Generator | None"],
    tuple[dict[str, torch.Tensor], Callable[[], None]],
]


def capture_cuda_graph(
    function: TensorFunction, inputs: dict[str, torch.Tensor], generator: torch.Generator | None
) -> tuple[dict[str, torch.Tensor], Callable[[], None]]:
    """Record ``function(inputs, generator)`` as a CUDA graph.

    ``function`` runs once eagerly on a side stream first (torch's advice: lazy
    initialisations and workspaces happen outside the recording). ``generator`` is registered
    with the graph, so a replay draws from its state at the time of the replay (its seed and
    Philox offset are read on the device) and advances its offset as the eager calls would.

    Args:
        function: the pure function.
        inputs: the static input tensors the replays read (the caller copies each call's
            values into them).
        generator: the graph's own generator (``None``: the function draws nothing).

    Returns:
        The static output tensors each replay overwrites, and the replay.

    Raises:
        RuntimeError: the function does something a CUDA graph cannot hold (a wait for the
            device, a copy from the host's pageable memory, ...).
    """
    device = next(iter(inputs.values())).device
    with torch.cuda.device(device):
        state = None if generator is None else generator.get_state()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            function(inputs, generator)
        torch.cuda.current_stream(device).wait_stream(side)
        if generator is not None:
            generator.set_state(state)  # the warm-up's draws are not the caller's
        graph = torch.cuda.CUDAGraph()
        if generator is not None:
            graph.register_generator_state(generator)
        with torch.cuda.graph(graph):
            outputs = function(inputs, generator)
    return outputs, graph.replay


@dataclasses.dataclass
class _Recording:
    """One signature's recording: the tensors it reads and writes, and its replay."""

    inputs: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]
    generator: torch.Generator | None
    replay: Callable[[], None]


class GraphedFunction:
    """``function(inputs, generator)``, replayed from one recording per signature of its inputs.

    ``function`` must be pure and static: its outputs depend only on the values of ``inputs``
    and on ``generator``'s state, and inputs of one signature (names, shapes, dtypes, device)
    always launch the same kernels with the same Python numbers (no branch on values, no wait
    for the device, no number that changes between calls). Everything else it reads is fixed
    when it is made (an encoding's chances, its number of outputs), which is why a
    :class:`GraphedFunction` serves one function object and the signature is the whole key.

    A call copies the inputs into the recording's, sets the recording's generator to
    ``generator``'s state, replays, moves ``generator`` on by what the replay drew, and returns
    copies of the outputs (the next replay overwrites the recording's). Where there is no
    ``capture`` for the inputs' device (by default: off CUDA), and for a signature whose
    recording failed (one warning), it calls ``function`` itself.

    Args:
        function: the pure function.
        name: what it is, for the warning.
        capture: records the function (default: :func:`capture_cuda_graph` for CUDA inputs).
        recordings: signatures kept; the oldest recording is dropped beyond them (each holds
            its tensors' memory).
    """

    def __init__(
        self, function: TensorFunction, name: str, *, capture: Capture | None = None, recordings: int = 4
    ) -> None:
        self.function = function
        self.name = name
        self.capture = capture
        self.recordings = recordings
        self._recorded: OrderedDict[tuple, _Recording | None] = OrderedDict()
        # A recording's tensors are shared between its replays: one call at a time uses them.
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        # Recordings hold a device's graphs and memory: a copy elsewhere records its own.
        return {name: value for name, value in self.__dict__.items() if name not in ("_recorded", "_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._recorded = OrderedDict()
        self._lock = threading.Lock()

    def _capture_for(self, device: torch.device) -> Capture | None:
        if self.capture is not None:
            return self.capture
        return capture_cuda_graph if device.type == "cuda" else None

    def __call__(
        self, inputs: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """``function(inputs, generator)``'s outputs, from a recording where there is one.

        Args:
            inputs: name -> tensor, all on one device; not modified.
            generator: the function's source of random draws, on that device; left where the
                function would leave it.

        Returns:
            name -> a new tensor.
        """
        device = next(iter(inputs.values())).device
        capture = self._capture_for(device)
        if capture is None:
            return self.function(inputs, generator)
        key = (
            device,
            generator is None,
            tuple((name, tuple(tensor.shape), tensor.dtype) for name, tensor in inputs.items()),
        )
        with self._lock:
            if key not in self._recorded:
                self._recorded[key] = self._record(capture, inputs, generator)
                while len(self._recorded) > self.recordings:
                    self._recorded.popitem(last=False)
            self._recorded.move_to_end(key)
            recording = self._recorded[key]
            if recording is None:
                return self.function(inputs, generator)
            for name, tensor in inputs.items():
                recording.inputs[name].copy_(tensor)
            if generator is not None:
                recording.generator.set_state(generator.get_state())
            recording.replay()
            if generator is not None:
                generator.set_state(recording.generator.get_state())
            return {name: tensor.clone() for name, tensor in recording.outputs.items()}

    def _record(
        self, capture: Capture, inputs: dict[str, torch.Tensor], generator: torch.Generator | None
    ) -> _Recording | None:
        """A recording of ``function`` for ``inputs``' signature; ``None`` (one warning) if it fails."""
        static = {name: tensor.clone() for name, tensor in inputs.items()}
        own = None
        if generator is not None:
            own = torch.Generator(device=generator.device)
            own.set_state(generator.get_state())
        try:
            outputs, replay = capture(self.function, static, own)
        except RuntimeError as error:
            logger.warning(
                "%s: recording it as a CUDA graph failed (%s); it runs without one",
                self.name,
                error_line(error),
            )
            return None
        return _Recording(static, outputs, own, replay)


def _mutated_fields(
    encoding, fields: dict[str, torch.Tensor], generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """The fields of ``encoding.mutate_tensor`` of the genomes whose fields are ``fields``."""
    return encoding.mutate_tensor(TensorGenomes(encoding.genome_class, fields), generator).fields


def graphed_mutation(encoding, **options) -> GraphedFunction:
    """``encoding.mutate_tensor`` as a :class:`GraphedFunction` of the genomes' fields.

    For an encoding whose ``static_tensor_mutation`` is true (its mutation ignores the
    generation). The function is a partial of a module-level one, so that it pickles.

    Args:
        encoding: has ``mutate_tensor`` and ``genome_class``.
        **options: :class:`GraphedFunction`'s ``capture`` and ``recordings``.
    """
    return GraphedFunction(
        functools.partial(_mutated_fields, encoding), f"the {encoding.name} mutation", **options
    )
