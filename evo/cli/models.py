"""The model-file flags every command with ``--model`` (or ``--to``) takes.

``--labels``, ``--input-size``, ``--channels``, ``--mean`` and ``--std`` describe what a model
file may not say about itself. They are folded into the model's reference string
(``PATH?labels=...``, see :func:`fooling.fitness.sources.file_reference`), so that a run stores
one string that rebuilds the same classifier, here, on resume and on Ray workers.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from fooling.encodings import UserError
from fooling.fitness.sources import (
    FileOptions,
    is_model_file,
    parse_channels,
    parse_floats,
    parse_input_size,
    with_options,
)

# Attributes of parsed arguments that name models: one name, or a list of names.
MODEL_ARGUMENTS = ("model", "to")


def _argument_type(parse: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse type reporting ``parse``'s ``ValueError`` message as it is."""

    def convert(text: str) -> object:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


# The flags that describe a model file: (flag, metavar, parser of the value, help).
_FILE_FLAGS: tuple[tuple[str, str, Callable[[str], object], str], ...] = (
    ("--input-size", "H,W", parse_input_size, "input size (default: read from the file where it holds it)"),
    ("--channels", "C", parse_channels, "1 or 3 (default 3)"),
    (
        "--mean",
        "M",
        lambda text: parse_floats(text, "--mean"),
        "normalisation mean, one value or one per channel (default 0)",
    ),
    (
        "--std",
        "S",
        lambda text: parse_floats(text, "--std"),
        "normalisation std (default 1): the model sees (image - mean) / std, image in [0, 1]",
    ),
)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Add the model-file flags to ``parser`` when it has ``--model`` or ``--to``."""
    if not any(flag in parser._option_string_actions for flag in ("--model", "--to")):
        return
    group = parser.add_argument_group(
        "model files (.pt/.ts TorchScript, .pt2 torch.export, .onnx)",
        "--model also takes timm:NAME, torchvision:NAME and installed plugins (entry points "
        "of the group fooling.models)",
    )
    group.add_argument("--labels", metavar="FILE", default=None, help="class names, one per line")
    for flag, metavar, parse, text in _FILE_FLAGS:
        group.add_argument(flag, metavar=metavar, type=_argument_type(parse), default=None, help=text)


def apply_model_options(args: argparse.Namespace) -> None:
    """Fold the model-file flags into every model file named by ``args`` (``--model``, ``--to``).

    Raises:
        UserError: flags given with no model file to describe, or bad inline options.
    """
    options = FileOptions(
        labels=getattr(args, "labels", None),
        input_size=getattr(args, "input_size", None),
        channels=getattr(args, "channels", None),
        mean=getattr(args, "mean", None),
        std=getattr(args, "std", None),
    )
    files = 0
    for attribute in MODEL_ARGUMENTS:
        value = getattr(args, attribute, None)
        names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        files += sum(is_model_file(name) for name in names)
        # Files get the options (and absolute paths); other names stay as they are.
        rewritten = [with_options(name, options) if is_model_file(name) else name for name in names]
        if isinstance(value, str):
            setattr(args, attribute, rewritten[0])
        elif isinstance(value, list):
            setattr(args, attribute, rewritten)
    if options.given() and not files:
        raise UserError(
            "--labels, --input-size, --channels, --mean and --std describe a model file "
            "(.pt, .ts, .pt2, .onnx) given with --model or --to"
        )
