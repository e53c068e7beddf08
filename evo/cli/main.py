"""The ``fooling`` command line: every bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from fooling.encodings import UserError
from fooling.evo.cli import audit, experiments, gradient
from fooling.evo.cli.models import add_model_options, apply_model_options
from fooling.evo.cli.parsing import (
    Parser,
    UsageError,
    add_config_arguments,
    add_track_argument,
    config_overrides,
    new_config,
    non_negative_int,
    positive_int,
    thread_count,
)
from fooling.evo.report.figures import write_report
from fooling.evo.run import evolve, resume_checkpoint
from fooling.evo.store.location import check_location
from fooling.fitness import (
    error_line,
    get_model_spec,
    lenet_model_name,
    lenet_weights_path,
    train_lenet,
)
from fooling.fitness.engine import configure_threads, keep_freed_memory
from fooling.fitness.limits import check_device, check_seed
from fooling.fitness.models import LENET_PATTERN

logger = logging.getLogger("fooling")

# Command groups beyond train/evolve/report: each has ``register(subparsers)`` setting ``func``.
COMMAND_GROUPS = (gradient, experiments, audit)


def cmd_train(args: argparse.Namespace) -> int:
    """``fooling train``: train and cache an MNIST LeNet (unless cached and not ``--force``).

    Args:
        args: the parsed command line (``model``, ``seed``, ``epochs``, ``force``).

    Returns:
        The exit code, 0.

    Raises:
        UsageError: the model comes with pretrained weights (only ``mnist-lenet`` is trained).
        ValueError: the seed is out of range.
    """
    spec = get_model_spec(args.model)
    match = LENET_PATTERN.match(spec.name)
    if not match:
        raise UsageError(f"{spec.name} comes with pretrained weights; only mnist-lenet is trained here")
    seed = args.seed if args.seed is not None else int(match.group(1) or 0)
    check_seed(seed)
    cached = lenet_weights_path(seed)
    if cached.exists() and not args.force:
        try:  # the training record is only shown: a missing or damaged one leaves it out
            info = json.loads(cached.with_suffix(".json").read_text())
            accuracy = f"test accuracy {100 * float(info['test_accuracy']):.2f}%, "
        except (OSError, ValueError, TypeError, KeyError):
            accuracy = ""
        print(f"{lenet_model_name(seed)}: already trained ({accuracy}{cached}); --force retrains it")
        return 0
    result = train_lenet(seed, epochs=args.epochs)
    print(
        f"{lenet_model_name(seed)}: test accuracy {100 * result.test_accuracy:.2f}% "
        f"({result.data_source}); weights {result.weights_hash} in {result.path}"
    )
    return 0


def cmd_evolve(args: argparse.Namespace) -> int:
    """``fooling evolve``: run or resume a MAP-Elites search, then write its report.

    Args:
        args: the parsed command line (the run's settings, ``resume``, ``no_progress``,
            ``no_report``).

    Returns:
        The exit code, 0.

    Raises:
        UsageError: ``--out`` names another folder than ``--resume``.
    """
    overrides = config_overrides(args)
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
        config = new_config(args)
    search = evolve(
        config,
        resume=bool(args.resume),
        show_progress=not args.no_progress,
        checkpoint=checkpoint,
        trackers=args.track,  # checked by evolve before the model loads
    )
    stats = search.archive.stats()
    reached = int((search.archive.elite_fitness() >= 0.9999).sum())
    summary = (
        f"{config.out}: generation {search.generation - 1}, median confidence {100 * stats['median']:.2f}%, "
        f"{reached}/{search.archive.num_cells} classes >= 99.99%"
    )
    # The archive's genomes (602 MB for 1,000 direct ImageNet cells) are not needed by the
    # report, which reads the checkpoint: freed first, the report reuses their memory.
    del search, checkpoint
    if not args.no_report:
        for uri in write_report(config.out):
            logger.info("wrote %s", uri)
    print(summary)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``fooling report``: write a run's figures and print their URIs.

    Args:
        args: the parsed command line (``run``, ``tiles``).

    Returns:
        The exit code, 0.
    """
    for uri in write_report(args.run, max_tiles=args.tiles):
        print(uri)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``fooling`` parser with every command, each setting ``func`` to its handler.

    Returns:
        A parser whose errors raise :class:`UsageError` instead of exiting.
    """
    parser = Parser(
        prog="fooling",
        description="Evolve images that deep networks classify with near-certainty.",
    )
    _add_common_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    train = commands.add_parser("train", help="train and cache an MNIST LeNet")
    train.add_argument(
        "--model", default="mnist-lenet", help="mnist-lenet or mnist-lenet-seedN (default mnist-lenet)"
    )
    train.add_argument(
        "--seed", type=non_negative_int, default=None, help="training seed (default: from the name, else 0)"
    )
    train.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="passes over the training digits (default: 3 on full MNIST, 12 on the offline subset)",
    )
    train.add_argument("--force", action="store_true", help="retrain even if cached")
    train.set_defaults(func=cmd_train, model_files=False)  # trains a registered LeNet: no files, no endpoints

    evolve = commands.add_parser("evolve", help="run or resume a MAP-Elites search")
    add_config_arguments(evolve)
    evolve.add_argument("--resume", metavar="DIR", default=None, help="continue the run in DIR")
    evolve.add_argument("--no-progress", action="store_true", help="no progress bar")
    evolve.add_argument("--no-report", action="store_true", help="skip elites.png / progress.png")
    add_track_argument(evolve)
    evolve.set_defaults(func=cmd_evolve)

    report = commands.add_parser("report", help="write elites.png and progress.png of a run")
    report.add_argument("run", help="run folder")
    report.add_argument("--tiles", type=positive_int, default=40, help="elites shown in elites.png")
    report.set_defaults(func=cmd_report)

    for group in COMMAND_GROUPS:
        group.register(commands)
    for command in commands.choices.values():
        add_model_options(command)  # --labels, --input-size, ... wherever --model or --to is
    for command in commands.choices.values():  # the common options also after the command
        _add_common_options(command, default=argparse.SUPPRESS)
    return parser


def _add_common_options(parser: argparse.ArgumentParser, default=None) -> None:
    """Add ``--debug``, ``-v`` and ``--threads`` to ``parser``.

    They are added on ``fooling`` and on every command; on a command, ``default`` is
    ``SUPPRESS`` so as not to overwrite what was given before the command.
    """
    flag = default or False
    parser.add_argument(
        "--debug",
        action="store_true",
        default=flag,
        help="show tracebacks (also FOOLING_DEBUG=1, true, yes or on; 0, false, no, off or unset: "
        "one-line errors)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", default=flag, help="debug logging")
    parser.add_argument(
        "--threads",
        type=thread_count,
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
            :func:`fooling.evo.store.location.check_location`).
    """
    locations = [(flag, getattr(args, name, None)) for name, flag in STORAGE_ARGUMENTS.items()]
    if any(isinstance(value, str) and "://" in value for _, value in locations):
        for flag, value in locations:
            if isinstance(value, str):
                check_location(value, flag)


# How FOOLING_DEBUG may be spelt (any case); anything else is refused in one line.
DEBUG_VARIABLE = "FOOLING_DEBUG"
DEBUG_OFF = ("", "0", "false", "no", "off")
DEBUG_ON = ("1", "true", "yes", "on")


def debug_from_environment() -> bool:
    """Whether ``$FOOLING_DEBUG`` asks for tracebacks: 1/true/yes/on; unset, 0/false/no/off do not.

    Raises:
        UserError: any other value (a typo must not silently turn tracebacks on or off).
    """
    text = os.environ.get(DEBUG_VARIABLE, "").strip().lower()
    if text in DEBUG_ON:
        return True
    if text in DEBUG_OFF:
        return False
    raise UserError(
        f"{DEBUG_VARIABLE}={os.environ[DEBUG_VARIABLE][:40]!r}: expected 1, true, yes or on "
        "(tracebacks) or 0, false, no, off or nothing (one-line errors)"
    )


def _user_errors() -> tuple[type[BaseException], ...]:
    # The user's mistakes (bad input, damaged files, unknown names, a network that raised or
    # gave NaN: UserError) and the machine's state (a full disk, an unreachable store: OSError).
    # Anything else is a bug and keeps its traceback.
    return (UserError, OSError)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While inside, SIGTERM (``kill``, a batch system's stop) interrupts as Ctrl-C does.

    A command then unwinds: its run folder's lock is released, a run that saved nothing leaves
    its folder as it found it (:func:`~fooling.evo.store.runfolder.claimed_run_folder`), and it
    exits with "interrupted" and code 130; killed by the signal instead (exit 143), it left its
    lock and run record behind. ``evolve``'s generations handle SIGTERM themselves (the
    generation finishes and is saved first) and give this handler back afterwards.
    """
    if threading.current_thread() is not threading.main_thread():  # only it may set handlers
        yield
        return

    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(command: Callable[[], int | None], *, program: str = "fooling", debug: bool = False) -> int:
    """Run ``command`` as a program: a user error becomes one line on stderr and exit code 2.

    The ``fooling`` command and the scripts under ``scripts/`` share it, so every entry point
    reports bad input the same way.

    Args:
        command: the work; returns its exit code (``None`` for 0).
        program: the name the error line starts with.
        debug: raise a user error with its traceback instead (also with ``FOOLING_DEBUG`` on:
            see :func:`debug_from_environment`).

    Returns:
        ``command``'s exit code, 2 for a user error (bad input, missing file, unknown name, ...,
        also a bad ``FOOLING_DEBUG``, before ``command`` runs), 130 when interrupted.
    """
    try:
        debug = debug_from_environment() or debug
    except UserError as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return 2
    try:
        with sigterm_interrupts():
            return command() or 0
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as error:
        if debug:
            raise
        # The whole first line: it is the message the user acts on (paths included).
        print(f"{program}: error: {error_line(error, limit=None)}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """Run the ``fooling`` command line (:func:`run_command`; ``--debug`` shows tracebacks).

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 2 for a user error, 130 when interrupted.
    """
    argv = list(argv if argv is not None else sys.argv[1:])
    keep_freed_memory()

    def command() -> int | None:
        parser = build_parser()
        if not argv:
            commands = ", ".join(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
            raise UsageError(f"give a command: {commands} (fooling --help, fooling COMMAND --help)")
        args = parser.parse_args(argv)
        if args.threads is not None:
            configure_threads(args.threads)
        check_storage(args)
        check_device(getattr(args, "device", None))  # every command that scores, before any work
        apply_model_options(args)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(message)s",
            datefmt="%H:%M:%S",
        )
        return args.func(args)

    return run_command(command, debug="--debug" in argv)


if __name__ == "__main__":
    sys.exit(main())
