"""Hub models: ``timm:NAME`` and ``torchvision:NAME[.WEIGHTS]``.

Weights come from the local cache (Hugging Face hub cache, torch hub's ``checkpoints``), or are
downloaded where the network allows (never with ``FOOLING_OFFLINE`` set), and are read with
every ``torch.load`` weights-only (:func:`~fooling.fitness.sources.common.weights_only_loads`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from fooling.fitness._home import offline
from fooling.fitness._names import UnknownNameError, close_names
from fooling.fitness.imagenet import IMAGENET_MEAN, IMAGENET_STD, imagenet_class_names
from fooling.fitness.images import RESAMPLING
from fooling.fitness.models import ModelSpec, ModelUnavailableError, register_model
from fooling.fitness.sources.common import reason, weights_only_loads
from fooling.fitness.sources.reference import TIMM_PREFIX, TORCHVISION_PREFIX

# timm's crop_pct where a pretrained config gives none (timm.data.DEFAULT_CROP_PCT).
TIMM_DEFAULT_CROP_PCT = 0.875
# Seconds a weights download may wait on the network.
DOWNLOAD_TIMEOUT_S = 30


logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _network_timeout(seconds: float = DOWNLOAD_TIMEOUT_S) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _check_reachable(model: str, url: str) -> None:
    """Stop at once when the host of ``url``, where ``model``'s weights are, has no address.

    With no network (or no name service) a download would fail only after its client's retries
    (the Hugging Face hub's: about 45 s of warnings). Skipped where a proxy is set: the proxy
    resolves names, not this machine.

    Raises:
        ModelUnavailableError: the host's name does not resolve.
    """
    host = urlparse(url).hostname
    proxies = urllib.request.getproxies()
    if not host or any(scheme in proxies for scheme in ("http", "https", "all")):
        return
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as error:  # UnicodeError: not a valid host name
        why = error.strerror if isinstance(error, socket.gaierror) else "not a valid host name"
        raise ModelUnavailableError(
            f"{model}: weights are not in the local cache, and {host} cannot be reached to download "
            f"them ({why}); fetch them once where the network is reachable"
        ) from None
    logger.info("%s: downloading the weights from %s", model, host)


@contextlib.contextmanager
def _hub_warnings_muted() -> Iterator[None]:
    """The Hugging Face hub's warnings (one per retry, each printed twice) kept off the terminal.

    A download that fails in the end says why in its one-line error.
    """
    hub = logging.getLogger("huggingface_hub")
    level = hub.level
    hub.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub.setLevel(level)


# --- timm ---------------------------------------------------------------------------------


def _timm_names() -> list[str]:
    import timm  # heavy: only for timm: models

    return timm.list_models(pretrained=True)


def timm_config(name: str):
    """The timm pretrained config of ``name`` (``ARCH`` or ``ARCH.TAG``) and its full tagged name.

    Raises:
        UnknownNameError: no pretrained timm model of that name; suggests close names.
    """
    from timm.models import get_pretrained_cfg  # heavy: only for timm: models

    tagged = _timm_names()
    architectures = sorted({full.split(".", 1)[0] for full in tagged})
    if name not in tagged and name not in architectures:
        raise UnknownNameError(
            f"unknown timm model {name!r}{close_names(name, tagged + architectures)} "
            "(timm.list_models(pretrained=True) lists them)"
        )
    config = get_pretrained_cfg(name)
    full = name if "." in name else f"{name}.{config.tag}"
    return config, full


def _timm_cached_weights(config) -> Path | None:
    """The local copy of a timm model's weights: the Hugging Face cache, then torch hub's."""
    if config.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache  # heavy: only for timm: models

        repo = config.hf_hub_id.split("@", 1)[0]
        filenames = [config.hf_hub_filename] if config.hf_hub_filename else []
        for filename in [*filenames, "model.safetensors", "pytorch_model.bin"]:
            found = try_to_load_from_cache(repo, filename)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    if config.url:
        local = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(config.url).path).name
        if local.is_file():
            return local
    return None


def timm_spec(name: str) -> ModelSpec:
    """The spec of ``timm:NAME`` (no weights are read until ``build``).

    Raises:
        UnknownNameError: no such pretrained timm model (suggests close names).
    """
    config, full = timm_config(name)
    channels, height, width = config.input_size
    outputs = config.num_classes
    if config.label_names and len(config.label_names) == outputs:
        names = tuple(config.label_names)
    elif outputs == 1000:
        names = imagenet_class_names()
    else:
        names = tuple(str(index) for index in range(outputs))
    return ModelSpec(
        name=TIMM_PREFIX + full,
        channels=channels,
        input_size=(height, width),
        mean=tuple(config.mean),
        std=tuple(config.std),
        class_names=names,
        build=functools.partial(_build_timm, full),
        description=f"timm {full} ({config.interpolation} resize, crop {config.crop_pct})",
        crop_pct=float(config.crop_pct or TIMM_DEFAULT_CROP_PCT),
        interpolation=config.interpolation if config.interpolation in RESAMPLING else "bicubic",
    )


def _build_timm(full: str) -> nn.Module:
    import timm  # heavy: only for timm: models

    config, _ = timm_config(full)
    cached = _timm_cached_weights(config)
    if cached is None and offline():
        raise ModelUnavailableError(
            f"timm:{full}: weights are not in the local cache (Hugging Face hub {config.hf_hub_id or '-'}, "
            f"or {Path(torch.hub.get_dir()) / 'checkpoints'}) and FOOLING_OFFLINE is set; "
            "fetch them once where the network is reachable"
        )
    overlay = {"file": str(cached), "source": None} if cached is not None else None
    if cached is None:
        from huggingface_hub import constants  # heavy: only for timm: models

        # Where the hub's client sends its requests (HF_ENDPOINT), as it builds its URLs.
        hub = constants.HUGGINGFACE_CO_URL_TEMPLATE
        _check_reachable(f"timm:{full}", hub if config.hf_hub_id else config.url)
    try:
        with weights_only_loads(), _network_timeout(), _hub_warnings_muted(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            network = timm.create_model(full, pretrained=True, pretrained_cfg_overlay=overlay)
    except Exception as error:
        where = (
            f"from {cached}"
            if cached is not None
            else "(downloading; no network? FOOLING_OFFLINE=1 skips the download)"
        )
        raise ModelUnavailableError(
            f"timm:{full}: cannot load the weights {where}: {reason(error)}"
        ) from None
    return network.eval()


# --- torchvision --------------------------------------------------------------------------


def _torchvision_weights(name: str):
    """``(architecture, weights enum member)`` of ``torchvision:ARCH[.WEIGHTS]``.

    Raises:
        UnknownNameError: no such classification model or weights (suggests close names).
    """
    import torchvision.models as models  # heavy: only for torchvision: models

    architecture, _, tag = name.partition(".")
    known = models.list_models(module=models)
    if architecture not in known:
        raise UnknownNameError(
            f"unknown torchvision model {architecture!r}{close_names(architecture, known)} "
            "(torchvision.models.list_models() lists them)"
        )
    weights_enum = models.get_model_weights(architecture)
    members = [member.name for member in weights_enum]
    if not tag:
        return architecture, weights_enum.DEFAULT
    if tag not in members:
        raise UnknownNameError(
            f"torchvision:{architecture} has no weights {tag!r}{close_names(tag, members)} "
            f"(known: {', '.join(members)})"
        )
    return architecture, weights_enum[tag]


def torchvision_spec(name: str) -> ModelSpec:
    """The spec of ``torchvision:ARCH[.WEIGHTS]`` (no weights are read until ``build``).

    Raises:
        UnknownNameError: no such classification model or weights (suggests close names).
    """
    architecture, weights = _torchvision_weights(name)
    transform = weights.transforms()
    crop = list(getattr(transform, "crop_size", [224]))
    height, width = (crop[0], crop[0]) if len(crop) == 1 else (crop[0], crop[1])
    # Photos: the shorter side resized to resize_size, then the centre crop (crop_pct = crop/resize).
    resize = list(getattr(transform, "resize_size", None) or [height])
    interpolation = getattr(getattr(transform, "interpolation", None), "value", "bilinear")
    return ModelSpec(
        name=f"{TORCHVISION_PREFIX}{architecture}.{weights.name}",
        channels=3,
        input_size=(height, width),
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        class_names=tuple(weights.meta["categories"]),
        build=functools.partial(_build_torchvision, architecture, weights.name),
        description=f"torchvision {architecture} with {weights.name} weights",
        crop_pct=min(height, width) / resize[0],
        interpolation=interpolation if interpolation in RESAMPLING else "bilinear",
    )


def _build_torchvision(architecture: str, tag: str) -> nn.Module:
    import torchvision.models as models  # heavy: only for torchvision: models

    weights = models.get_model_weights(architecture)[tag]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    if not cached.is_file() and offline():
        raise ModelUnavailableError(
            f"torchvision:{architecture}: weights {tag} are not in the local cache ({cached}) and "
            "FOOLING_OFFLINE is set; fetch them once where the network is reachable"
        )
    if not cached.is_file():
        _check_reachable(f"torchvision:{architecture}", weights.url)
    try:
        with weights_only_loads(), _network_timeout():
            network = models.get_model(architecture, weights=weights)
    except Exception as error:
        raise ModelUnavailableError(
            f"torchvision:{architecture}: cannot load weights {tag} (no network? FOOLING_OFFLINE=1 skips "
            f"the download): {reason(error)}"
        ) from None
    return network.eval()


# --- the registered torchvision ImageNet models ------------------------------------------


def _imagenet_spec(name: str, architecture: str, tag: str, description: str) -> ModelSpec:
    """``--model NAME``: torchvision's ``architecture`` with weights ``tag``, on the project's class names."""
    return ModelSpec(
        name=name,
        channels=3,
        input_size=(224, 224),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        class_names=imagenet_class_names(),
        build=functools.partial(_build_torchvision, architecture, tag),
        description=description,
    )


_ALEXNET = "AlexNet, the paper's network (torchvision)"
register_model(
    "imagenet-alexnet",
    functools.partial(_imagenet_spec, "imagenet-alexnet", "alexnet", "IMAGENET1K_V1", _ALEXNET),
)
register_model(
    "imagenet-resnet50",
    functools.partial(
        _imagenet_spec, "imagenet-resnet50", "resnet50", "IMAGENET1K_V2", "ResNet-50 (torchvision)"
    ),
)
