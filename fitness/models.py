"""The model registry: names users type, how each model loads, and its preprocessing."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fooling.encodings.errors import UserError
from fooling.fitness._home import fooling_home
from fooling.fitness._names import resolve_name
from fooling.fitness.lenet import LeNet
from fooling.fitness.limits import check_seed

logger = logging.getLogger(__name__)

DIGIT_NAMES = tuple(str(digit) for digit in range(10))


class ModelUnavailableError(UserError, RuntimeError):
    """A known model whose weights cannot be had here (not trained yet, no network); one line.

    Also a ``RuntimeError``, as it was before :class:`~fooling.encodings.errors.UserError`.
    """


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a model needs from the outside world.

    Attributes:
        name: registry name, e.g. ``"mnist-lenet"``.
        channels: 1 (gray) or 3 (RGB) input channels.
        input_size: ``(height, width)`` the network takes.
        mean, std: per-channel normalisation applied to images in ``[0, 1]``.
        class_names: one name per output.
        build: returns the network with its weights loaded, on the CPU, in eval mode.
        description: one line for ``--help`` and reports.
        crop_pct: how real photos are fitted to ``input_size`` (timm's and torchvision's eval
            transform): resized so that ``input_size / crop_pct`` covers the shorter side, then
            centre-cropped; ``None``: the centre square, resized (see :mod:`fooling.fitness.images`).
        interpolation: the resampling filter of that resize (``"bilinear"``, ``"bicubic"``, ...).
    """

    name: str
    channels: int
    input_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    build: Callable[[], nn.Module]
    description: str = ""
    crop_pct: float | None = None
    interpolation: str = "bilinear"

    @property
    def num_classes(self) -> int:
        """Number of output classes, one per class name."""
        return len(self.class_names)


@dataclasses.dataclass
class LoadedModel:
    """A network ready to score, with the spec and a hash identifying its weights."""

    spec: ModelSpec
    network: nn.Module
    weights_hash: str


def weights_hash(network: nn.Module) -> str:
    """SHA-256 (16 hex digits) over every parameter and buffer, in state-dict order."""
    digest = hashlib.sha256()
    for key, tensor in network.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# --- MNIST LeNet --------------------------------------------------------------------------

LENET_PATTERN = re.compile(r"^mnist-lenet(?:-seed(\d+))?$")


def lenet_weights_path(seed: int = 0, home: Path | None = None) -> Path:
    """Where ``fooling train --model mnist-lenet --seed SEED`` caches its weights."""
    return (home or fooling_home()) / "models" / f"mnist-lenet-seed{seed}.pt"


def lenet_model_name(seed: int) -> str:
    """Registry name of the LeNet trained with ``seed``: seed 0 is plain ``mnist-lenet``."""
    return "mnist-lenet" if seed == 0 else f"mnist-lenet-seed{seed}"


def _load_lenet(seed: int) -> nn.Module:
    path = lenet_weights_path(seed)
    if not path.exists():
        raise ModelUnavailableError(
            f"{lenet_model_name(seed)} is not trained yet: run `fooling train --model "
            f"{lenet_model_name(seed)}` (expected weights at {path})"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        network = LeNet(num_classes=state["classifier.3.weight"].shape[0])
        network.load_state_dict(state)
    except Exception as error:
        raise ModelUnavailableError(f"cannot read weights {path}: {str(error)[:200]}") from None
    return network.eval()


def _lenet_spec(seed: int) -> ModelSpec:
    return ModelSpec(
        name=lenet_model_name(seed),
        channels=1,
        input_size=(28, 28),
        mean=(0.0,),
        std=(1.0,),  # Caffe's LeNet only scales pixels to [0, 1]
        class_names=DIGIT_NAMES,
        build=lambda: _load_lenet(seed),
        description=f"the paper's MNIST LeNet (trained here, seed {seed})",
    )


# --- Registry ------------------------------------------------------------------------------

_REGISTRY: dict[str, Callable[[], ModelSpec]] = {"mnist-lenet": lambda: _lenet_spec(0)}


# Names outside the registry (see fitness/sources/: timm:, torchvision:, model files, plugins):
# (asked before the registry?, resolve(name) -> spec or None, extra names for suggestions).
_RESOLVERS: list[tuple[bool, Callable[[str], ModelSpec | None], Callable[[], list[str]] | None]] = []


def register_resolver(
    resolve: Callable[[str], ModelSpec | None],
    *,
    names: Callable[[], list[str]] | None = None,
    first: bool = False,
) -> None:
    """Let names outside the registry resolve.

    Args:
        resolve: returns the spec of a name it knows, else ``None``.
        names: the names it knows, offered as suggestions for misspelt names.
        first: ask it before the registry (for names of their own syntax, such as ``timm:``).
    """
    _RESOLVERS.append((first, resolve, names))


def register_model(name: str, make_spec: Callable[[], ModelSpec]) -> None:
    """Add a model under ``name``; ``make_spec`` is called lazily on first use."""
    _REGISTRY[name] = make_spec


def model_names() -> list[str]:
    """Every registered name (``mnist-lenet-seedN`` variants are accepted too)."""
    return sorted(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    """The spec registered under ``name``.

    Besides registered names: ``timm:NAME``, ``torchvision:NAME``, model files and installed
    plugins (see :mod:`fooling.fitness.sources`).

    Raises:
        UnknownNameError: no such model; the message suggests close names.
        ModelFileError: a model file that cannot be used (a ``ValueError``).
        ModelUnavailableError: a plugin that fails.
    """
    match = LENET_PATTERN.match(name)
    if match:
        check_seed(int(match.group(1) or 0), f"the seed of model {name}")
        return _lenet_spec(int(match.group(1) or 0))
    for first, resolve, _ in _RESOLVERS:
        if first and (spec := resolve(name)) is not None:
            return spec
    if name not in _REGISTRY:
        for first, resolve, _ in _RESOLVERS:
            if not first and (spec := resolve(name)) is not None:
                return spec
    extra = [extra for _, _, names in _RESOLVERS if names is not None for extra in names()]
    resolved = resolve_name(name, [*_REGISTRY, *extra], "model")
    return _REGISTRY[resolved]() if resolved in _REGISTRY else get_model_spec(resolved)


def load_model(name: str) -> LoadedModel:
    """Build the network registered under ``name`` with its weights, in eval mode, on the CPU.

    Raises:
        UnknownNameError: no such model.
        ModelUnavailableError: the weights cannot be had here.
    """
    spec = get_model_spec(name)
    network = spec.build()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return LoadedModel(spec=spec, network=network, weights_hash=weights_hash(network))
