"""The ``fooling`` command line: every bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import sys
import types
import typing

from fooling.fitness.limits import check_seed

from .config import RunConfig
from .model_cli import add_model_options, apply_model_options

logger = logging.getLogger("fooling")

# Modules that add sub-commands: each has ``register(subparsers)`` and sets ``func``.
EXTENSIONS: tuple[str, ...] = (
    "fooling.evo.gradient_cli",
    "fooling.evo.experiments_cli",
    "fooling.evo.audit_cli",
)


class UsageError(ValueError):
    """A bad command line, reported as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one line, not usage + message
        command = self.prog.removeprefix("fooling").strip()  # "fooling: error: " comes first
        raise UsageError(f"{command}: {message}" if command else message)


def _integer_at_least(minimum: int, description: str):
    """An argparse type: an integer >= ``minimum``, else a one-line error naming ``description``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value

    return parse


positive_int = _integer_at_least(1, "a positive integer")
non_negative_int = _integer_at_least(0, "an integer >= 0")


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
    "encoding": "genome encoding: direct or cppn",
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
    "address": "Ray cluster address (auto or HOST:PORT; default: start a local one)",
    "device": "scoring device, e.g. cpu, cuda (default: CUDA when present)",
    "image_size": "side of the evolved images in pixels, at most 1024 (0: the model's input size)",
    "engine": "scoring engine: auto (ONNX Runtime on the CPU, torch on CUDA), torch or onnxruntime",
    "emitter": "how children are made: paper (the paper's mutation), finetune (half the children: "
    "fine weight perturbations), gradient (Adam steps on CPPN weights; in-process only)",
    "preset": "start from a named set of settings; flags given override it (paper: the original "
    "ImageNet CPPN experiment)",
    "color_space": "colour of 3-channel genomes: rgb, hsv, hls, hls-opencv (CPPN: the original code's)",
    "coordinates": "CPPN x, y inputs: unit ([-1, 1]) or pixel (raw column and row, as the original)",
    "split_weight": "CPPN add-node weights: one (NEAT) or old (the original: old weight on both)",
    "max_nodes": "CPPN capacity in nodes",
    "max_edges": "CPPN capacity in connections",
}
_TYPES = {"generations": positive_int, "population": positive_int, "scorers": positive_int}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`RunConfig` field, defaulting to ``None`` (= not given)."""
    hints = typing.get_type_hints(RunConfig)
    defaults = RunConfig()
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
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=kind,
            default=None,
            metavar=field.name.upper() if not isinstance(hint, types.UnionType) else None,
            help=f"{FIELD_HELP.get(field.name, field.name.replace('_', ' '))} "
            f"(default: {getattr(defaults, field.name)})",
        )


def _config_overrides(args: argparse.Namespace) -> dict:
    return {field.name: getattr(args, field.name) for field in dataclasses.fields(RunConfig)}


def cmd_train(args: argparse.Namespace) -> int:
    from fooling.fitness import get_model_spec, lenet_model_name, lenet_weights_path, train_lenet
    from fooling.fitness.models import LENET_PATTERN

    spec = get_model_spec(args.model)
    match = LENET_PATTERN.match(spec.name)
    if not match:
        raise UsageError(f"{spec.name} comes with pretrained weights; only mnist-lenet is trained here")
    seed = args.seed if args.seed is not None else int(match.group(1) or 0)
    check_seed(seed)
    cached = lenet_weights_path(seed)
    if cached.exists() and not args.force:
        info = (
            json.loads(cached.with_suffix(".json").read_text())
            if cached.with_suffix(".json").exists()
            else {}
        )
        accuracy = f"test accuracy {100 * info['test_accuracy']:.2f}%, " if "test_accuracy" in info else ""
        print(f"{lenet_model_name(seed)}: already trained ({accuracy}{cached}); --force retrains it")
        return 0
    result = train_lenet(seed, epochs=args.epochs)
    print(
        f"{lenet_model_name(seed)}: test accuracy {100 * result.test_accuracy:.2f}% "
        f"({result.data_source}); weights {result.weights_hash} in {result.path}"
    )
    return 0


def cmd_evolve(args: argparse.Namespace) -> int:
    from .report import write_report
    from .run import evolve, resume_checkpoint

    overrides = _config_overrides(args)
    checkpoint = None
    if args.resume:
        if overrides["out"] is not None and overrides["out"] != args.resume:
            raise UsageError("give the run folder once: --resume DIR replaces --out")
        del overrides["out"]
        config, checkpoint = resume_checkpoint(args.resume, **overrides)
        if config.generations <= checkpoint.generation + 1:
            logger.warning(
                "%s already has its %d generations: nothing to run (--generations N > %d continues it)",
                args.resume,
                config.generations,
                checkpoint.generation + 1,
            )
    else:
        preset = overrides.pop("preset")
        config = RunConfig.from_preset(preset, **{k: v for k, v in overrides.items() if v is not None})
    search = evolve(
        config, resume=bool(args.resume), show_progress=not args.no_progress, checkpoint=checkpoint
    )
    if not args.no_report:
        for uri in write_report(config.out):
            logger.info("wrote %s", uri)
    stats = search.archive.stats()
    reached = int((search.archive.elite_fitness() >= 0.9999).sum())
    print(
        f"{config.out}: generation {search.generation - 1}, median confidence {100 * stats['median']:.2f}%, "
        f"{reached}/{search.archive.num_cells} classes >= 99.99%"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    for uri in write_report(args.run, max_tiles=args.tiles):
        print(uri)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fooling",
        description="Evolve images that deep networks classify with near-certainty.",
    )
    _add_common_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train and cache an MNIST LeNet")
    train.add_argument("--model", default="mnist-lenet")
    train.add_argument(
        "--seed", type=non_negative_int, default=None, help="training seed (default: from the name, else 0)"
    )
    train.add_argument("--epochs", type=positive_int, default=None)
    train.add_argument("--force", action="store_true", help="retrain even if cached")
    train.set_defaults(func=cmd_train)

    evolve = commands.add_parser("evolve", help="run or resume a MAP-Elites search")
    add_config_arguments(evolve)
    evolve.add_argument("--resume", metavar="DIR", default=None, help="continue the run in DIR")
    evolve.add_argument("--no-progress", action="store_true", help="no progress bar")
    evolve.add_argument("--no-report", action="store_true", help="skip elites.png / progress.png")
    evolve.set_defaults(func=cmd_evolve)

    report = commands.add_parser("report", help="write elites.png and progress.png of a run")
    report.add_argument("run", help="run folder")
    report.add_argument("--tiles", type=positive_int, default=40, help="elites shown in elites.png")
    report.set_defaults(func=cmd_report)

    for name in EXTENSIONS:
        importlib.import_module(name).register(commands)
    for command in commands.choices.values():
        add_model_options(command)  # --labels, --input-size, ... wherever --model or --to is
    for command in commands.choices.values():  # the common options also after the command
        _add_common_options(command, default=argparse.SUPPRESS)
    return parser


def _add_common_options(parser: argparse.ArgumentParser, default=None) -> None:
    """``--debug``, ``-v`` and ``--threads``, on ``fooling`` and (``SUPPRESS``: not
    overwriting what was given before the command) on every command."""
    flag = default or False
    parser.add_argument("--debug", action="store_true", default=flag, help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", default=flag, help="debug logging")
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=default,
        metavar="N",
        help="threads for scoring in this process (default: the cores it may use, from its CPU affinity)",
    )


# Arguments that name a run folder or an output location, and how the command line spells them.
STORAGE_ARGUMENTS = {"out": "--out", "resume": "--resume", "run": "run folder"}


def check_storage(args: argparse.Namespace) -> None:
    """Before any work: every storage URI on the command line answers within a bounded time.

    Raises:
        OSError: a location does not answer or refuses (one line; see
            :func:`fooling.evo.checkpoint.check_location`).
    """
    locations = [(flag, getattr(args, name, None)) for name, flag in STORAGE_ARGUMENTS.items()]
    if any(isinstance(value, str) and "://" in value for _, value in locations):
        from .checkpoint import check_location

        for flag, value in locations:
            if isinstance(value, str):
                check_location(value, flag)


def _user_errors() -> tuple[type[BaseException], ...]:
    from fooling.fitness import ModelUnavailableError

    return (ValueError, LookupError, OSError, ModelUnavailableError)


def main(argv: list[str] | None = None) -> int:
    argv = list(argv if argv is not None else sys.argv[1:])
    debug = "--debug" in argv or bool(os.environ.get("FOOLING_DEBUG"))
    try:
        parser = build_parser()
        if not argv:
            commands = ", ".join(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
            raise UsageError(f"give a command: {commands} (fooling --help, fooling COMMAND --help)")
        args = parser.parse_args(argv)
        if args.threads is not None:
            from fooling.fitness.engine import configure_threads

            configure_threads(args.threads)
        check_storage(args)
        apply_model_options(args)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(message)s",
            datefmt="%H:%M:%S",
        )
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("fooling: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as error:
        if debug:
            raise
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"fooling: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
