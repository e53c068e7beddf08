"""The ``onnxruntime`` scoring engine, its cached ONNX export, and the thread counts of scoring.

The engine that scores a run is a setting of the run (``--engine``; the engines and their
registry: :mod:`fooling.fitness.engines`, whose names are re-exported here):

* ``torch`` (:mod:`fooling.fitness.torch_engine`): the network in eager mode; channels_last
  memory format, and on CUDA half precision autocast.
* ``onnxruntime`` (here): the network exported once to ONNX (opset :data:`OPSET`, dynamic
  batch axis, with the normalisation and the softmax inside the graph) and run by ONNX
  Runtime's CPU execution provider; on this 2-core machine 4-7x the throughput of torch eager
  for EfficientNet-Lite.
* ``auto`` (the default): ``onnxruntime`` on the CPU, ``torch`` on CUDA.

Exported files are cached under ``$FOOLING_HOME/onnx``, one per everything the graph has
baked in (:func:`export_key`: model name, weights hash, mean, std, input size, channels, opset,
export format), written atomically; a JSON file beside each records that key and the SHA-256
of the ``.onnx`` bytes, and the bytes are hashed again every time they are loaded, so a
truncated, corrupt or stale file, or one exported with other preprocessing, is exported anew
and never handed to ONNX Runtime.

Thread counts are decided here and nowhere else (:func:`configure_threads`): torch's pool
and every ONNX Runtime session get the same number, the cores this process may use
(``os.sched_getaffinity``) or the CPUs Ray gave the actor. So is the allocator setting of
processes that score and render (:func:`keep_freed_memory`).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import importlib.util
import io
import json
import logging
import os
import uuid
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fooling.fitness._home import fooling_home
from fooling.fitness.engines import (
    EngineOptions,
    EngineSession,
    ScoringEngine,
    model_call,
    register_engine,
)

# Importable from here, as before the registry (fooling.fitness.engines) existed.
from fooling.fitness.engines import EngineUnavailableError as EngineUnavailableError
from fooling.fitness.engines import check_engine as check_engine
from fooling.fitness.engines import resolve_engine as resolve_engine
from fooling.fitness.models import LoadedModel

logger = logging.getLogger(__name__)

# ONNX opset of the exported graphs; part of the cache key.
OPSET = 17
# Bump when the exported graph changes (inputs, outputs, what is folded in): old files are then ignored.
EXPORT_FORMAT = 1


def onnxruntime_available() -> bool:
    """True when the ``onnxruntime`` package can be imported."""
    return importlib.util.find_spec("onnxruntime") is not None


# --- threads --------------------------------------------------------------------------------

_threads: int | None = None


def available_cpus() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def configure_threads(cpus: float | None = None) -> int:
    """Decide and apply this process's thread count; return it.

    Torch's intra-op pool and every ONNX Runtime session made afterwards use this many
    threads, so the two never add up to more than the cores the process has (they score in
    turn, never at once).

    Args:
        cpus: the CPUs allocated to this process (a Ray actor's ``num_cpus``); ``None``:
            the cores of its affinity mask.
    """
    global _threads
    threads = max(1, int(cpus)) if cpus is not None else available_cpus()
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # inter-op pool already started: keep it
        torch.set_num_interop_threads(1 if threads == 1 else min(threads, 2))
    _threads = threads
    return threads


def scoring_threads() -> int:
    """The thread count of this process (decided on first use when nobody decided it yet)."""
    return _threads if _threads is not None else configure_threads()


# --- memory ----------------------------------------------------------------------------

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_memory_kept = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    Torch's CPU tensors of a batch (activations, rendered images: tens of MB each) are
    allocated and freed many times a second. By default glibc maps each block above 32 MB
    afresh and unmaps it when freed, and trims its heap, so every new tensor page-faults
    its memory in again: torch eager on EfficientNet-Lite0 (batch 32, 2-core machine) spent
    more time in the kernel than computing, at 19-21 images/s; with this setting it ran at
    47-60 images/s with no page faults once warm. Memory a process freed stays its own (its
    resident size stays near its peak), which suits long runs. Idempotent; call it once, early.
    ``FOOLING_DEFAULT_ALLOCATOR=1`` in the environment leaves glibc's defaults alone.

    Returns:
        True when the setting took effect (glibc), False elsewhere or when opted out
        (nothing changes).
    """
    global _memory_kept
    if _memory_kept:
        return True
    if os.environ.get("FOOLING_DEFAULT_ALLOCATOR", "") not in ("", "0"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # None: not glibc (macOS, musl)
    if mallopt is None:
        return False
    _memory_kept = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _memory_kept


# --- ONNX export and cache ------------------------------------------------------------------


class _Probabilities(nn.Module):
    """What the ONNX graph computes: ``softmax(network((images - mean) / std))``.

    ``images`` ``(batch, channels, height, width)`` float32 in [0, 1] -> ``(batch, classes)``.
    """

    def __init__(self, network: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.network((images - self.mean) / self.std).float(), dim=1)


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """Where one model's exported graph lives: ``onnx`` and its record ``meta`` (JSON)."""

    onnx: Path
    meta: Path


def export_key(model: LoadedModel) -> dict:
    """Everything the exported graph of ``model`` has baked in (JSON-able): its cache key.

    The graph normalises with the spec's mean and std, and the exporter traces one input
    size and channel count; the weights hash covers the network (a model file's hash covers
    its bytes). The torch version is not part of it: another exporter writes another graph of
    the same function.
    """
    spec = model.spec
    return {
        "model": spec.name,
        "weights_hash": model.weights_hash,
        "mean": [float(value) for value in spec.mean],
        "std": [float(value) for value in spec.std],
        "input_size": [int(side) for side in spec.input_size],
        "channels": int(spec.channels),
        "opset": OPSET,
        "export_format": EXPORT_FORMAT,
    }


def _key_digest(key: dict) -> str:
    """16 hex digits of the SHA-256 of ``key`` as canonical JSON."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def cache_entry(model: LoadedModel, home: Path | None = None) -> CacheEntry:
    """Cache paths of ``model``'s export: one per :func:`export_key` (its digest is in the name)."""
    stem = f"{model.spec.name}-{model.weights_hash}-{_key_digest(export_key(model))}"
    folder = (home or fooling_home()) / "onnx"
    return CacheEntry(folder / f"{stem}.onnx", folder / f"{stem}.json")


def export_onnx(model: LoadedModel) -> bytes:
    """``model`` as an ONNX graph (bytes): images ``(batch, c, h, w)`` in [0, 1] -> probabilities.

    Uses torch's TorchScript-based exporter (``dynamo=False``): it needs only the ``onnx``
    package and no network; the dynamo exporter would also need ``onnxscript``.

    Raises:
        Exception: whatever the exporter raises for a network it cannot export.
    """
    own = getattr(model.network, "onnx_probabilities", None)
    if own is not None:  # a model file exports itself (sources/files.py; ONNX files keep their graph)
        return own(model.spec)
    spec = model.spec
    wrapper = _Probabilities(model.network, spec.mean, spec.std).to("cpu").eval()
    example = torch.zeros(2, spec.channels, *spec.input_size)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            wrapper,
            (example,),
            buffer,
            opset_version=OPSET,
            dynamo=False,
            input_names=["images"],
            output_names=["probabilities"],
            dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}},
        )
    return buffer.getvalue()


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_cached(entry: CacheEntry, model: LoadedModel) -> bytes | None:
    """The cached graph's bytes when its record matches them and the model; else ``None`` (logged)."""
    if not entry.onnx.exists():
        return None
    try:
        meta = json.loads(entry.meta.read_text())
        data = entry.onnx.read_bytes()
    except (OSError, ValueError) as error:
        logger.warning("ONNX cache %s unreadable (%s): exporting again", entry.onnx, error)
        return None
    key = export_key(model)
    # The key is checked again, not only its digest in the name: a record made for another
    # preprocessing (or written by hand) never passes for this one.
    if (
        not isinstance(meta, dict)
        or any(meta.get(name) != value for name, value in key.items())
        or meta.get("sha256") != _sha256(data)
    ):
        logger.warning(
            "ONNX cache %s does not match its record (truncated, corrupt or stale): exporting again",
            entry.onnx,
        )
        return None
    return data


def onnx_model(model: LoadedModel, home: Path | None = None) -> bytes:
    """The verified ONNX graph of ``model``, from the cache or exported (and cached) now.

    A cached file is used only when its SHA-256 matches the record written with it; else it
    is exported and written again. A cache folder that cannot be written is not an error:
    the graph is then kept in memory only.

    Raises:
        Exception: the exporter's error for a network it cannot export.
    """
    entry = cache_entry(model, home)
    data = _read_cached(entry, model)
    if data is not None:
        return data
    data = export_onnx(model)
    record = {
        **export_key(model),
        "sha256": _sha256(data),
        "bytes": len(data),
        "torch": torch.__version__,
    }
    try:
        # The graph first, then its record: a crash in between leaves a record that does not
        # match the file, which the next reader detects.
        _write_atomically(entry.onnx, data)
        _write_atomically(entry.meta, json.dumps(record, indent=1).encode())
        logger.info("exported %s to ONNX (%d bytes): %s", model.spec.name, len(data), entry.onnx)
    except OSError as error:
        logger.warning("cannot cache the ONNX export in %s (%s): kept in memory", entry.onnx.parent, error)
    return data


def onnx_session(data: bytes, threads: int | None = None):
    """An ONNX Runtime CPU session of graph ``data`` with ``threads`` intra-op threads.

    Args:
        data: a serialized ONNX model (verified by :func:`onnx_model`).
        threads: intra-op threads (default: :func:`scoring_threads`).
    """
    import onnxruntime as ort  # optional heavy dependency: only the ONNX Runtime engine loads it

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or scoring_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Pool threads spin between the operators of a run (waking a sleeping thread for each of
    # a network's ~100 parallel operators cost up to half the throughput on a busy 2-core
    # machine) and stop spinning when the run returns: scoring alternates with rendering and
    # variation in the same process, which threads spinning idle would slow down.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


# --- the engine -------------------------------------------------------------------------------

# Input bytes per ONNX Runtime run (8 ImageNet images of 224 px; 1,500 MNIST digits). The arena
# then holds ~50 MB of EfficientNet-Lite0 activations instead of ~700 MB for a batch of 64, at
# the same speed (measured on the 2-core CPU: 0.42 s for 64 images either way).
RUN_INPUT_BYTES = 8 * 3 * 224 * 224 * 4


class OnnxRuntimeSession(EngineSession):
    """An ONNX Runtime session of a model's exported graph (images in [0, 1] -> probabilities).

    Attributes:
        runtime: the ``onnxruntime.InferenceSession``.
    """

    def __init__(self, runtime, name: str) -> None:
        self.runtime = runtime
        self.name = name

    def probabilities(self, images: torch.Tensor) -> np.ndarray:
        """See :meth:`EngineSession.probabilities`.

        Runs at most :data:`RUN_INPUT_BYTES` of images at a time: ONNX Runtime's arena keeps
        the largest run's activations for the life of the session.
        """
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        step = max(1, RUN_INPUT_BYTES // max(1, array[0].nbytes if len(array) else 1))
        with model_call(self.name):
            if len(array) <= step:
                return self.runtime.run(None, {"images": array})[0]
            return np.concatenate(
                [
                    self.runtime.run(None, {"images": array[start : start + step]})[0]
                    for start in range(0, len(array), step)
                ]
            )


class OnnxRuntimeEngine(ScoringEngine):
    """The model exported to ONNX (cached, :func:`onnx_model`) and run by ONNX Runtime on the CPU.

    A network the exporter cannot handle is scored by torch instead, with one log line.
    ONNX Runtime's CPU kernels give the same floats whatever the thread count (split over
    outputs, not reductions).
    """

    name = "onnxruntime"
    title = "ONNX Runtime"
    help = "the network exported once to ONNX, cached, and run by ONNX Runtime on the CPU"
    devices = frozenset({"cpu"})
    auto_preference = 1
    falls_back_to = "torch"

    def unavailable(self) -> str | None:
        """Why ONNX Runtime cannot run here (the package missing), else ``None``."""
        if onnxruntime_available():
            return None
        return "the onnxruntime package is not installed (pip install onnxruntime, or use --engine torch)"

    def floats_depend_on_threads(self, device: torch.device) -> bool:
        """False: the same floats whatever the thread count."""
        return False

    def prepare(self, model: LoadedModel) -> None:
        """Export the graph into the cache once, so that scorers on this machine read it from there.

        Otherwise they would all export it at once (those on other machines export their own).
        """
        try:
            onnx_model(model)
        except Exception:  # the scorers fall back to torch and say why
            logger.debug("ONNX export failed on the driver", exc_info=True)

    def session(self, model: LoadedModel, options: EngineOptions) -> OnnxRuntimeSession:
        """An ONNX Runtime session of the verified graph, with the scorer's thread count.

        Raises:
            Exception: the exporter's or ONNX Runtime's error for a network it cannot handle.
        """
        return OnnxRuntimeSession(onnx_session(onnx_model(model), options.threads), model.spec.name)


register_engine(OnnxRuntimeEngine())
