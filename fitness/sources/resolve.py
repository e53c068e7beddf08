"""Which resolver takes a model reference: a table from the reference's kind to its resolver.

A reference's kind comes from its syntax (:func:`fooling.fitness.sources.reference.prefixed`:
``timm:``, ``torchvision:``; else a model file's suffix or an existing file); names of no
such kind go to plugins, then the registry (:func:`fooling.fitness.models.get_model_spec`).
"""

from __future__ import annotations

from collections.abc import Callable

from fooling.fitness.endpoint.reference import is_endpoint
from fooling.fitness.models import ModelSpec, register_resolver
from fooling.fitness.sources.endpoint import endpoint_spec
from fooling.fitness.sources.files import file_spec
from fooling.fitness.sources.hub import timm_spec, torchvision_spec
from fooling.fitness.sources.plugins import plugin_entry_points, plugin_spec
from fooling.fitness.sources.reference import is_model_file, prefixed

# Kind of reference -> its resolver, given what follows the prefix (a file: the whole reference).
RESOLVERS: dict[str, Callable[[str], ModelSpec]] = {
    "timm": timm_spec,
    "torchvision": torchvision_spec,
    "file": file_spec,
    "endpoint": endpoint_spec,  # http(s)://HOST[:PORT]/v2/models/NAME: an Open Inference Protocol server
}


def _kind(reference: str) -> tuple[str, str] | None:
    """``(kind, what its resolver is given)`` of a prefixed, endpoint or file reference, else ``None``."""
    if is_endpoint(reference):
        return ("endpoint", reference)
    found = prefixed(reference)
    if found is not None:
        return found
    return ("file", reference) if is_model_file(reference) else None


def resolve_source(name: str) -> ModelSpec | None:
    """The spec of ``timm:``, ``torchvision:`` and file references; ``None`` for other names.

    Raises:
        UnknownNameError, ModelFileError: see :func:`~fooling.fitness.sources.hub.timm_spec`,
            :func:`~fooling.fitness.sources.hub.torchvision_spec`,
            :func:`~fooling.fitness.sources.files.file_spec`.
    """
    found = _kind(name)
    if found is None:
        return None
    kind, argument = found
    return RESOLVERS[kind](argument)


def source_kind(reference: str) -> str:
    """``"timm"``, ``"torchvision"``, ``"file"``, ``"endpoint"``, ``"plugin"`` or ``"registry"``."""
    found = _kind(reference)
    if found is not None:
        return found[0]
    return "plugin" if reference in plugin_entry_points() else "registry"


register_resolver(resolve_source, first=True)
register_resolver(plugin_spec, names=lambda: list(plugin_entry_points()))
