"""Scoring engines: the interface an engine implements, and the registry ``--engine`` reads.

An engine scores images with a classifier: from a :class:`~fooling.fitness.models.LoadedModel`
it builds a per-process :class:`EngineSession` (a network on a device, an ONNX Runtime
session, a connection to a server...), which turns a batch ``(batch, channels, H, W)`` of
float32 images in ``[0, 1]`` into ``(batch, classes)`` softmax probabilities. Each engine
says which devices and which kinds of model it serves, and may warm a cache on the driver
(:meth:`ScoringEngine.prepare`) before the scorer processes start, so that they do not all
build the same thing at once.

Built in: ``torch`` (:mod:`fooling.fitness.torch_engine`) and ``onnxruntime``
(:mod:`fooling.fitness.engine`), registered when :mod:`fooling.fitness` is imported, and
``auto``, which picks, per device, the engine of highest :attr:`ScoringEngine.auto_preference`
that serves it and can run here. Other packages add engines through the entry point group
``fooling.engines``: the entry point names a :class:`ScoringEngine` subclass (or instance),
and its name is what ``--engine`` takes. :func:`engine_help` writes the ``--engine`` help from
the registry, so it lists exactly the engines there are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import logging
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import torch

from fooling.encodings.errors import UserError, error_line
from fooling.encodings.plugins import entry_points, instance, load_entry_point
from fooling.fitness._names import resolve_name
from fooling.fitness._plugins import import_paths
from fooling.fitness.models import LoadedModel

logger = logging.getLogger(__name__)

# Entry point group of engines from other packages.
ENGINE_GROUP = "fooling.engines"
# The engine name that picks one per device.
AUTO = "auto"
# Kinds of model (:func:`model_kind`): a network built in Python, a model file's format, or a
# model behind an endpoint (fooling.fitness.endpoint).
MODEL_KINDS = ("module", "torchscript", "export", "onnx", "endpoint")


class EngineUnavailableError(UserError):
    """An engine that cannot run here (package missing, wrong device, a broken plugin); one line."""


class ModelRunError(UserError, RuntimeError):
    """The classifier itself failed while scoring: it raised, or gave non-finite scores.

    Raised around the network's own call only (a model file's code, a plugin's network, ONNX
    Runtime on the file's graph), never around this package's code, whose bugs keep their
    tracebacks. The message is one line naming the model; the search adds the generation.
    The original error is its ``__cause__``. A :class:`~fooling.encodings.errors.UserError`
    (the user's network failed, not this package) and, as before, a ``RuntimeError``.
    """


@contextlib.contextmanager
def model_call(name: str) -> Iterator[None]:
    """Around a call of model ``name``'s network: its errors become one :class:`ModelRunError` line.

    Errors of this package's own types pass unchanged (e.g. an ONNX file asked for
    gradients: already one line); so does ``KeyboardInterrupt``.
    """
    try:
        yield
    except Exception as error:
        if type(error).__module__.split(".")[0] == "fooling":
            raise
        if isinstance(error, torch.jit.Error):  # TorchScript's traceback ends in the error raised
            reason = error_line(error, last=True).removeprefix("builtins.")
        else:
            reason = f"{type(error).__name__}: {error_line(error)}"
        raise ModelRunError(f"model {name} raised while scoring: {reason}") from error


def ten_crops(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The paper's 10 crops: 4 corners and centre, each also mirrored.

    Args:
        images: ``(batch_size, channels, H, W)`` with ``H >= size[0]``, ``W >= size[1]``.
        size: ``(height, width)`` of each crop.

    Returns:
        ``(10, batch_size, channels, size[0], size[1])``.
    """
    height, width = images.shape[-2:]
    crop_h, crop_w = size
    tops = (0, 0, height - crop_h, height - crop_h, (height - crop_h) // 2)
    lefts = (0, width - crop_w, 0, width - crop_w, (width - crop_w) // 2)
    crops = [images[..., t : t + crop_h, l : l + crop_w] for t, l in zip(tops, lefts)]
    crops += [crop.flip(-1) for crop in crops]
    return torch.stack(crops)


def model_kind(model: LoadedModel) -> str:
    """The kind of ``model`` (one of :data:`MODEL_KINDS`): a model file's format, else ``"module"``."""
    return str(getattr(model.network, "model_kind", "module"))


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """How a scorer asks an engine to score; an engine ignores what does not concern it.

    Attributes:
        device: where the scorer's images and network live.
        threads: CPU threads this process scores with (:func:`fooling.fitness.engine.scoring_threads`).
        amp: half-precision autocast (the torch engine).
        compiled: ``torch.compile`` (the torch engine).
        batch: network inputs (crops counted) per call the caller means to make, or ``None``;
            an engine that runs one fixed batch shape fits it to this.
    """

    device: torch.device
    threads: int
    amp: bool = False
    compiled: bool = False
    batch: int | None = None


class EngineSession:
    """One process's scoring state for one model, made by :meth:`ScoringEngine.session`."""

    def probabilities(self, images: torch.Tensor) -> np.ndarray:
        """Softmax probabilities ``(batch, classes)`` float32 of ``images``.

        Args:
            images: ``(batch, channels, H, W)`` float32 in ``[0, 1]`` at the model's input size,
                on any device. The network's own failures are raised as :class:`ModelRunError`
                (wrap its call in :func:`model_call`).
        """
        raise NotImplementedError

    def score(self, images: torch.Tensor, crops: int, size: tuple[int, int]) -> np.ndarray:
        """Probabilities ``(batch, classes)`` of ``images``, averaged over ``crops`` (1 or 10).

        With 10 crops ``images`` are larger than ``size`` (the model's input size) and each one's
        probabilities are the mean over :func:`ten_crops`.
        """
        if crops == 1:
            return self.probabilities(images)
        batch = images.shape[0]
        probabilities = self.probabilities(ten_crops(images, size).flatten(0, 1))
        return probabilities.reshape(10, batch, -1).mean(0)

    def score_tensor(self, images: torch.Tensor, crops: int, size: tuple[int, int]) -> torch.Tensor:
        """:meth:`score` as a tensor of its dtype, on the device where the engine scored.

        The default scores with :meth:`score` and wraps its array (on the CPU); an engine whose
        network runs on the images' device overrides it, so that the caller can reduce the
        probabilities there without copying them all to the host.
        """
        return torch.from_numpy(np.ascontiguousarray(self.score(images, crops, size)))


class ScoringEngine:
    """A way of scoring images with a classifier; subclass it and register it.

    Attributes:
        name: what ``--engine`` takes (lower case).
        title: how messages name it (``"ONNX Runtime"``).
        help: one line for ``--engine``'s help.
        devices: the device types it scores on (``{"cpu"}``), ``None``: every one.
        model_kinds: the :data:`MODEL_KINDS` it can run, ``None``: every one.
        auto_preference: ``auto`` picks, among the engines that serve the device, run the
            model and can run here, the one of highest preference; ``None``: never ``auto``'s.
        falls_back_to: the engine that scores instead when this one cannot make a session for
            a model (one log line says why); ``None``: the error is raised.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    help: ClassVar[str] = ""
    devices: ClassVar[frozenset[str] | None] = None
    model_kinds: ClassVar[frozenset[str] | None] = None
    auto_preference: ClassVar[int | None] = None
    falls_back_to: ClassVar[str | None] = None

    def unavailable(self) -> str | None:
        """Why this engine cannot run in this environment (a package missing), else ``None``."""
        return None

    def serves(self, device: torch.device) -> bool:
        """Whether it scores on ``device``."""
        return self.devices is None or device.type in self.devices

    def runs(self, model: LoadedModel) -> bool:
        """Whether it can score ``model`` (see :func:`model_kind`)."""
        return self.model_kinds is None or model_kind(model) in self.model_kinds

    def floats_depend_on_threads(self, device: torch.device) -> bool:
        """Whether its probabilities on ``device`` depend on the CPU thread count.

        Where they do, scorer processes score with the driver's thread count, so that an
        archive does not depend on how many processes score it. The default, true on the CPU,
        is the safe answer.
        """
        return device.type == "cpu"

    def prepare(self, model: LoadedModel) -> None:
        """On the driver, before scorer processes start: warm what their sessions will read.

        For instance export a graph to a cache every process on this machine reads. Failing
        here is not an error (the scorers then try again, and fall back or say why).
        """

    def session(self, model: LoadedModel, options: EngineOptions) -> EngineSession:
        """This process's session scoring ``model`` as ``options`` say.

        Raises:
            Exception: the model cannot be run by this engine (see :attr:`falls_back_to`).
        """
        raise NotImplementedError


# --- the registry ---------------------------------------------------------------------------

_REGISTRY: dict[str, ScoringEngine] = {}


def register_engine(engine: ScoringEngine) -> ScoringEngine:
    """Add ``engine`` under its name (the built-in engines; plugins come through entry points).

    Raises:
        ValueError: a name that is empty, ``auto``, or already taken by another engine.
    """
    name = engine.name
    if not name or name.lower() != name or name == AUTO:
        raise ValueError(f"an engine needs a lower-case name other than {AUTO!r}, not {name!r}")
    if name in _REGISTRY and type(_REGISTRY[name]) is not type(engine):
        raise ValueError(f"engine {name!r} is registered already ({type(_REGISTRY[name]).__name__})")
    _REGISTRY[name] = engine
    return engine


def plugin_engines() -> dict[str, importlib.metadata.EntryPoint]:
    """Installed entry points of the group ``fooling.engines`` not named as a built-in engine."""
    return {name: entry for name, entry in entry_points(ENGINE_GROUP).items() if name not in _REGISTRY}


def engine_names() -> list[str]:
    """``"auto"``, then the registered engines, then the installed plugin engines (each sorted)."""
    return [AUTO, *sorted(_REGISTRY), *sorted(plugin_engines())]


def _load_plugin(entry: importlib.metadata.EntryPoint) -> ScoringEngine:
    """The engine that entry point ``entry`` declares (a :class:`ScoringEngine` subclass or instance).

    Raises:
        EngineUnavailableError: it fails to load, or is not a :class:`ScoringEngine` of its
            entry point's name; one line naming the plugin.
    """
    return load_entry_point(entry, "engine", ScoringEngine, make=instance, error=EngineUnavailableError)


def check_engine(name: str) -> str:
    """The canonical spelling of engine ``name`` (``auto``, registered or installed).

    Raises:
        UnknownNameError: not an engine; the message suggests close names.
    """
    known = [AUTO, *_REGISTRY]
    by_lower = {choice.lower(): choice for choice in known}
    if name.lower() in by_lower:  # the built-in names never read the installed packages
        return by_lower[name.lower()]
    return resolve_name(name, engine_names(), "engine")


def get_engine(name: str) -> ScoringEngine:
    """The engine called ``name`` (not ``auto``: see :func:`resolve_engine`).

    Raises:
        UnknownNameError: no such engine.
        EngineUnavailableError: a plugin engine that fails to load.
    """
    name = check_engine(name)
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name == AUTO:
        raise ValueError("'auto' names no engine of its own: resolve it for a device first")
    return _load_plugin(plugin_engines()[name])


def engine_import_paths(name: str) -> tuple[str, ...]:
    """The folders another process needs on ``sys.path`` to load plugin engine ``name``.

    Empty for ``auto``, the built-in engines and plugins in this interpreter's site-packages
    (see :func:`fooling.fitness._plugins.import_paths`).
    """
    with contextlib.suppress(LookupError):
        name = check_engine(name)
    entry = plugin_engines().get(name) if name not in (AUTO, *_REGISTRY) else None
    return import_paths(entry) if entry is not None else ()


def _by_preference() -> list[ScoringEngine]:
    """The registered engines ``auto`` may pick, most preferred first."""
    eligible = [engine for engine in _REGISTRY.values() if engine.auto_preference is not None]
    return sorted(eligible, key=lambda engine: (-(engine.auto_preference or 0), engine.name))


def _auto(device: torch.device, model: LoadedModel | None) -> ScoringEngine:
    """The engine ``auto`` means on ``device`` (for ``model``, where given).

    Without a model, engines that run only some kinds of model are passed over. A preferred
    engine that cannot run here (its package missing) is passed over with one
    log line.
    """
    missing: list[str] = []
    for engine in _by_preference():
        if not engine.serves(device) or (model is not None and not engine.runs(model)):
            continue
        if model is None and engine.model_kinds is not None:
            continue  # an engine of some kinds of model only (endpoint) is no default for any model
        reason = engine.unavailable()
        if reason is None:
            for skipped in missing:
                logger.warning("%s: scoring with %s", skipped, engine.name)
            return engine
        missing.append(reason)
    raise EngineUnavailableError(f"--engine auto: no engine scores on {device} here")


def _where(devices: frozenset[str]) -> str:
    return " or ".join("the CPU" if device == "cpu" else device for device in sorted(devices))


def resolve_engine(name: str, device: torch.device | str, model: LoadedModel | None = None) -> str:
    """The engine that ``name`` means on ``device`` (for ``model``, where given): an engine's name.

    Raises:
        UnknownNameError: not an engine name.
        EngineUnavailableError: an engine asked for explicitly that cannot run here (its
            package is missing), does not serve ``device``, or cannot run ``model``.
    """
    device = torch.device(device)
    if check_engine(name) == AUTO:
        return _auto(device, model).name
    engine = get_engine(name)
    missing = engine.unavailable()
    if missing is not None:
        raise EngineUnavailableError(f"--engine {engine.name}: {missing}")
    if not engine.serves(device):
        # Engines of one kind of model only (endpoint) are no alternative for the others.
        others = [o.name for o in _REGISTRY.values() if o.serves(device) and o.model_kinds is None]
        raise EngineUnavailableError(
            f"--engine {engine.name} scores on {_where(engine.devices or frozenset())}, not {device}: "
            f"use --engine {' or '.join(others)} (or auto) there"
        )
    if model is not None and not engine.runs(model):
        runs = " or ".join(sorted(engine.model_kinds or ()))
        raise EngineUnavailableError(
            f"--engine {engine.name} runs {runs} models only, and {model.spec.name} is a "
            f"{model_kind(model)} model: leave --engine at auto, or name an engine for that kind"
        )
    return engine.name


def engine_help() -> str:
    """The help of ``--engine``: every engine :func:`engine_names` lists, in its order.

    Installed plugin engines are named with their entry point, not loaded (building the
    command line imports no plugin).
    """
    preferred = ", ".join(engine.name for engine in _by_preference())
    parts = [f"{AUTO} (the first of {preferred} that serves the device and can run here)"]
    parts += [f"{name} ({_REGISTRY[name].help})" for name in sorted(_REGISTRY)]
    parts += [f"{name} (installed: {entry.value})" for name, entry in sorted(plugin_engines().items())]
    return "scoring engine: " + "; ".join(parts)
