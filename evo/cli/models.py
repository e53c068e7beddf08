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
from fooling.fitness.endpoint import (
    SCORES,
    TOKEN_VARIABLE,
    EndpointSettings,
    configure_endpoints,
    endpoint_reference,
    is_endpoint,
    parse_header,
)
from fooling.fitness.limits import open_regular_file
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
    ("--channels", "C", parse_channels, "1 or 3 (default: read from the file where it holds it, else 3)"),
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
    """Add the model-file and endpoint flags to ``parser`` when it has ``--model`` or ``--to``.

    A command says what its ``--model`` takes with parser defaults: ``model_files=False``
    (registered models only: ``train``) gets none of them, ``endpoints=False`` (the gradient
    commands: no endpoint has gradients) the model-file flags only.
    """
    if not any(flag in parser._option_string_actions for flag in ("--model", "--to")):
        return
    if parser.get_default("model_files") is False:
        return
    group = parser.add_argument_group(
        "model files (.pt/.ts TorchScript, .pt2 torch.export, .onnx)",
        "--model also takes timm:NAME, torchvision:NAME and installed plugins (entry points "
        "of the group fooling.models)",
    )
    group.add_argument("--labels", metavar="FILE", default=None, help="class names, one per line")
    for flag, metavar, parse, text in _FILE_FLAGS:
        group.add_argument(flag, metavar=metavar, type=_argument_type(parse), default=None, help=text)
    if parser.get_default("endpoints") is not False:
        _add_endpoint_options(parser)


# Endpoint flags that are not part of the model's reference: (flag, EndpointSettings field, type, help).
_TRAFFIC_FLAGS: tuple[tuple[str, str, Callable[[str], object], str], ...] = (
    (
        "--ca-bundle",
        "ca_bundle",
        str,
        "PEM certificates to verify an https:// server with (TLS is always verified)",
    ),
    (
        "--request-timeout",
        "timeout_s",
        float,
        "seconds one request may take before it is tried again (default 30)",
    ),
    ("--retries", "retries", int, "tries again after a connection error, timeout, 429 or 5xx (default 5)"),
    (
        "--concurrency",
        "concurrency",
        int,
        "requests in flight at once, the run's total (split over Ray's scorers; default 4)",
    ),
    ("--request-batch", "request_batch", int, "images per request (default 50)"),
    (
        "--max-rate",
        "max_rate",
        float,
        "images per second at most, the run's total (split over Ray's scorers; default: no limit)",
    ),
)


def _add_endpoint_options(parser: argparse.ArgumentParser) -> None:
    """The flags of ``--model http(s)://HOST/v2/models/NAME`` (see :mod:`fooling.fitness.endpoint`)."""
    group = parser.add_argument_group(
        "endpoints (--model http(s)://HOST[:PORT]/v2/models/NAME[/versions/V], Open Inference Protocol)",
        f"credentials: --header, or a bearer token in ${TOKEN_VARIABLE}; never stored with the run "
        "(give them again with --resume)",
    )
    group.add_argument(
        "--header",
        action="append",
        metavar="'NAME: VALUE'",
        default=None,
        help="HTTP header sent with every request",
    )
    for flag, _, _, text in _TRAFFIC_FLAGS:
        group.add_argument(flag, default=None, help=text)
    group.add_argument(
        "--output", default=None, help="the output tensor read (default: the only or first one)"
    )
    group.add_argument(
        "--scores", choices=SCORES, default=None, help="how the output is read (default auto: detected)"
    )
    group.add_argument(
        "--top-k", type=int, default=None, metavar="K", help="ask for (and accept) the K best classes only"
    )


def _endpoint_settings(args: argparse.Namespace) -> EndpointSettings:
    """This process's endpoint settings from the flags (one-line errors, never naming a header's value)."""
    fields: dict = {"headers": tuple(parse_header(text) for text in getattr(args, "header", None) or ())}
    for flag, field, kind, _ in _TRAFFIC_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is not None:
            try:
                fields[field] = kind(value)
            except ValueError:
                raise UserError(f"{flag} expects a number, got {value[:20]!r}") from None
    return EndpointSettings(**fields)


def _check_labels_file(path: str) -> None:
    """Refuse a ``--labels`` that is not a regular file (a FIFO would hang its reading forever).

    A missing or unreadable file is left to the labels reader, which names it in its words.

    Raises:
        UserError: a FIFO, a device or a folder.
    """
    try:
        handle = open_regular_file(path, f"--labels {path}")
    except OSError:
        return
    handle.close()


def apply_model_options(args: argparse.Namespace) -> None:
    """Fold the model-file flags into every model file named by ``args`` (``--model``, ``--to``).

    Raises:
        UserError: flags given with no model file to describe, bad inline options, or a
            ``--labels`` that is not a regular file.
    """
    labels = getattr(args, "labels", None)
    if labels is not None:
        _check_labels_file(labels)
    options = FileOptions(
        labels=labels,
        input_size=getattr(args, "input_size", None),
        channels=getattr(args, "channels", None),
        mean=getattr(args, "mean", None),
        std=getattr(args, "std", None),
    )
    files = endpoints = 0
    endpoint = dict(
        output=getattr(args, "output", None),
        scores=getattr(args, "scores", None),
        top_k=getattr(args, "top_k", None),
    )
    for attribute in MODEL_ARGUMENTS:
        value = getattr(args, attribute, None)
        names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        endpoints += sum(is_endpoint(name) for name in names)
        files += sum(is_model_file(name) and not is_endpoint(name) for name in names)
        # Files and endpoints get the options (files: absolute paths); other names stay as they are.
        rewritten = [
            endpoint_reference(name, options, **endpoint)
            if is_endpoint(name)
            else with_options(name, options)
            if is_model_file(name)
            else name
            for name in names
        ]
        if isinstance(value, str):
            setattr(args, attribute, rewritten[0])
        elif isinstance(value, list):
            setattr(args, attribute, rewritten)
    if endpoints:
        configure_endpoints(_endpoint_settings(args))
    elif any(v is not None for v in endpoint.values()) or getattr(args, "header", None):
        raise UserError(
            "--header, --output, --scores and --top-k describe an endpoint given with --model or --to"
        )
    if options.given() and not files and not endpoints:
        raise UserError(
            "--labels, --input-size, --channels, --mean and --std describe a model file "
            "(.pt, .ts, .pt2, .onnx) given with --model or --to"
        )
