"""Plugin models: installed packages declaring an entry point in the group ``fooling.models``.

The entry point's object, called with no arguments, returns a :class:`ModelSpec`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata

from torch import nn

from fooling.encodings.plugins import entry_points, load_entry_point
from fooling.fitness._plugins import import_paths
from fooling.fitness.models import ModelSpec, ModelUnavailableError
from fooling.fitness.sources.common import reason

PLUGIN_GROUP = "fooling.models"


def plugin_entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """Installed entry points of the group ``fooling.models``, by name (read afresh each call)."""
    return entry_points(PLUGIN_GROUP)


def plugin_spec(name: str) -> ModelSpec | None:
    """The spec an installed plugin declares under ``name``, or ``None`` when none does.

    Raises:
        ModelUnavailableError: the entry point fails to load or to make its spec, or returns
            something other than a :class:`ModelSpec`; one line naming the plugin.
    """
    entry = plugin_entry_points().get(name)
    if entry is None:
        return None
    spec = load_entry_point(entry, "model", ModelSpec, make=_call, named=False, error=ModelUnavailableError)
    return dataclasses.replace(spec, build=functools.partial(_build_plugin, name, entry.value, spec.build))


def _call(factory):
    """What the entry point's object makes when called with no arguments (a model plugin's spec)."""
    return factory()


def _build_plugin(name: str, where: str, build) -> nn.Module:
    try:
        network = build()
    except ModelUnavailableError:
        raise
    except Exception as error:
        raise ModelUnavailableError(
            f"model plugin {name!r} ({where}) failed to build: {type(error).__name__}: {reason(error)}"
        ) from None
    if not isinstance(network, nn.Module):
        raise ModelUnavailableError(
            f"model plugin {name!r} ({where}) built {type(network).__name__}, not a torch.nn.Module"
        )
    return network.eval()


def plugin_name(spec: ModelSpec) -> str | None:
    """The entry point name of the plugin that made ``spec`` (see :func:`plugin_spec`), else ``None``."""
    build = spec.build
    if isinstance(build, functools.partial) and build.func is _build_plugin:
        return str(build.args[0])
    return None


def plugin_import_paths(spec: ModelSpec) -> tuple[str, ...]:
    """The folders, beyond this interpreter's own site-packages, that hold the plugin which made ``spec``.

    Other processes (Ray workers) put them on their ``sys.path`` to import the plugin as this
    process does (see :func:`fooling.fitness._plugins.import_paths`). Empty for a spec of no
    plugin, and for a plugin installed in site-packages, which every worker of the same
    environment sees.
    """
    name = plugin_name(spec)
    entry = plugin_entry_points().get(name) if name is not None else None
    return import_paths(entry) if entry is not None else ()
