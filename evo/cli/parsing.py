"""Argument types and the flags of :class:`RunConfig`, shared by every command group."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import types
import typing
from typing import Any

from fooling.encodings import UserError, color_space_help, encoding_help
from fooling.evo.config import RunConfig
from fooling.evo.emitters import emitter_help
from fooling.evo.on_device import VARY_ON
from fooling.evo.trackers import TrackerSpec, parse_tracker, tracker_help
from fooling.fitness import close_names
from fooling.fitness.engines import engine_help
from fooling.fitness.limits import normalise_device


class UsageError(UserError):
    """A bad command line, reported as one line."""


# argparse's words for a value outside ``choices``: "invalid choice: 'x' (choose from 'a', 'b')".
_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors raise :class:`UsageError` instead of exiting."""

    def error(self, message: str) -> typing.NoReturn:  # one line, not usage + message
        """Raise ``message``, prefixed with the command's name, as one line.

        Args:
            message: argparse's description of the error.

        Raises:
            UsageError: always.
        """
        command = self.prog.partition(" ")[2]  # "fooling evolve" -> "evolve": the program comes first
        choice = _INVALID_CHOICE.search(message)
        if choice:  # argparse lists the choices but does not say which one was meant
            message += close_names(choice[1], re.findall(r"'([^']*)'", choice[2]))
        raise UsageError(f"{command}: {message}" if command else message)


def integer_in(minimum: int, maximum: int | None = None, description: str | None = None):
    """An argparse type: an integer in ``[minimum, maximum]`` (no ``maximum``: unbounded above).

    Anything else is a one-line error naming ``description`` (default: the range).
    """
    if description is None:
        description = (
            f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum:,}]"
        )

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value

    return parse


positive_int = integer_in(1, description="a positive integer")
non_negative_int = integer_in(0)


def ray_address(text: str) -> str:
    """An argparse type: a Ray cluster address (``auto`` or ``HOST:PORT``), never blank.

    An empty ``--address ""`` would otherwise mean "no address" further on (a local Ray
    instead of the cluster the user meant to name).
    """
    address = text.strip()
    if not address:
        raise argparse.ArgumentTypeError(f"expected a Ray cluster address (auto or HOST:PORT), got {text!r}")
    return address


def thread_count(text: str) -> int:
    """An argparse type: a positive integer up to the machine's CPU count.

    More threads than cores only slow scoring down, and absurd counts (thousands) made
    torch crash or take minutes to start its pool.
    """
    value = positive_int(text)
    cores = os.cpu_count() or 1
    if value > cores:
        raise argparse.ArgumentTypeError(f"expected at most {cores} (this machine's CPU count), got {text!r}")
    return value


def number(text: str) -> float:
    """A float, also written as a fraction such as ``8/255``."""
    try:
        if "/" in text:
            numerator, denominator = text.split("/", 1)
            return float(numerator) / float(denominator)
        value = float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_number(text: str) -> float:
    """A finite number > 0 (see :func:`number`)."""
    value = number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def name_list(text: str) -> list[str] | None:
    """Comma-separated names; ``all`` means every one."""
    if text.strip().lower() == "all":
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names or 'all'")
    return names


FIELD_HELP = {
    "model": "classifier to fool: a registered name (mnist-lenet, imagenet-lite0), timm:NAME, "
    "torchvision:NAME, a file (.pt/.ts TorchScript, .pt2 torch.export, .onnx) or an installed plugin",
    "generations": "total generations, counting the random first one",
    "population": "children per generation (paper: 200 MNIST, 400 ImageNet CPPN)",
    "out": "run folder: local path or URI (s3://, gs://)",
    "checkpoint_every": "checkpoint every K generations (0: only at the end)",
    "keep_checkpoints": "newest checkpoints kept, older ones deleted (0: keep all; the newest good "
    "one is never deleted)",
    "batch_size": "children per variation/scoring batch (0: whole population)",
    "classes": "comma-separated class names that get a cell, or 'all'",
    "workers": "mutator actors on Ray (0: no Ray, all in this process)",
    "scorers": "scorer actors on Ray (one GPU each where there are GPUs)",
    "address": "Ray cluster address (auto or HOST:PORT; needs --workers; default: start a local one)",
    "device": "scoring device, e.g. cpu, cuda (default: CUDA when present)",
    "image_size": "side of the evolved images in pixels, at most 1024 (0: the model's input size)",
    "preset": "start from a named set of settings; flags given override it (paper: the original "
    "ImageNet CPPN experiment)",
    "coordinates": "CPPN x, y inputs: unit ([-1, 1]) or pixel (raw column and row, as the original)",
    "split_weight": "CPPN add-node weights: one (NEAT) or old (the original: old weight on both)",
    "max_nodes": "CPPN capacity in nodes",
    "max_edges": "CPPN capacity in connections",
    "max_queries": "images the run may send its model in all, over resumes (an endpoint's query "
    "budget; a gradient step counts as the 3 evaluations it costs; the run stops with a checkpoint "
    "before a generation that would exceed it)",
    "init": "how the direct encoding draws its first images: paper (every pixel uniform) or "
    "multiscale (smooth noise of a random scale, for top-1 answers; see docs/endpoint.md)",
    "vary_on": "where children are made: " + "; ".join(f"{name}: {what}" for name, what in VARY_ON.items()),
}
_TYPES = {
    "generations": positive_int,
    "population": positive_int,
    "scorers": positive_int,
    "max_queries": positive_int,
    "address": ray_address,
}


def field_help(name: str) -> str:
    """The help of flag ``name`` (a :class:`RunConfig` field); registered choices come from their registry."""
    if name == "engine":
        return engine_help()
    if name == "encoding":  # from the encoding registry, plugins included
        return encoding_help().replace("%", "%%")
    if name == "color_space":  # each registered encoding's own choices
        return color_space_help().replace("%", "%%")
    if name == "emitter":  # from the emitter registry, plugins included (argparse reads % as a format)
        return emitter_help().replace("%", "%%")
    return FIELD_HELP.get(name, name.replace("_", " "))


def tracker_spec(text: str) -> TrackerSpec:
    """An argparse type: ``NAME[:ARG]`` of a registered tracker (nothing is imported yet)."""
    try:
        return parse_tracker(text)
    except UserError as error:  # argparse shows only ArgumentTypeError's own words
        raise argparse.ArgumentTypeError(str(error)) from None


def add_track_argument(parser: argparse.ArgumentParser) -> None:
    """``--track NAME[:ARG]`` (repeatable): the experiment trackers of :mod:`fooling.evo.trackers`."""
    parser.add_argument(
        "--track",
        action="append",
        type=tracker_spec,
        default=None,
        metavar="NAME[:ARG]",
        help=tracker_help().replace("%", "%%"),
    )


def add_scoring_arguments(parser: argparse.ArgumentParser, *, actors: bool = False) -> None:
    """``--device`` and ``--engine``; with ``actors``, also ``--workers``, ``--scorers`` and ``--address``.

    For commands that score without a :class:`RunConfig`; the defaults are ``RunConfig``'s.
    """
    parser.add_argument("--device", type=normalise_device, default=None, help=FIELD_HELP["device"])
    parser.add_argument("--engine", default="auto", help=field_help("engine"))
    if actors:
        parser.add_argument("--workers", type=non_negative_int, default=0, help=FIELD_HELP["workers"])
        parser.add_argument("--scorers", type=positive_int, default=1, help=FIELD_HELP["scorers"])
        parser.add_argument("--address", type=ray_address, default=None, help=FIELD_HELP["address"])


def add_config_arguments(parser: argparse.ArgumentParser, defaults: RunConfig | None = None) -> None:
    """One flag per :class:`RunConfig` field, defaulting to ``None`` (= not given).

    Args:
        parser: the command's parser.
        defaults: the values the help text names as defaults (default: ``RunConfig()``'s).
    """
    hints = typing.get_type_hints(RunConfig)
    defaults = defaults or RunConfig()
    for field in dataclasses.fields(RunConfig):
        hint = hints[field.name]
        if field.name in _TYPES:
            kind = _TYPES[field.name]
        elif hint is int:
            kind = non_negative_int
        elif hint is float:
            kind = number
        elif field.name == "classes":
            kind = name_list
        else:
            kind = str
        # A colour space's default is the encoding's own (the help lists it first).
        default = "the encoding's" if field.name == "color_space" else getattr(defaults, field.name)
        text = field_help(field.name)
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=kind,
            default=None,
            metavar=field.name.upper() if not isinstance(hint, types.UnionType) else None,
            # A help text that says its default itself (``device``'s "CUDA when present") keeps it.
            help=text if "(default" in text else f"{text} (default: {default})",
        )


def config_overrides(args: argparse.Namespace) -> dict:
    """Every :class:`RunConfig` field's flag as parsed: ``{field: value or None (not given)}``."""
    return {field.name: getattr(args, field.name) for field in dataclasses.fields(RunConfig)}


def new_config(args: argparse.Namespace, **defaults: Any) -> RunConfig:
    """The config of a new run: ``--preset``'s values, then ``defaults``, then the flags given.

    Args:
        args: parsed by a parser with :func:`add_config_arguments`.
        **defaults: fields this command defaults differently from :class:`RunConfig`
            (e.g. ``out``); they replace a preset's value too.

    Raises:
        UnknownNameError: no such preset.
        UserError: a value out of range.
    """
    overrides = config_overrides(args)
    preset = overrides.pop("preset")
    given = {name: value for name, value in overrides.items() if value is not None}
    return RunConfig.from_preset(preset, **{**defaults, **given})
