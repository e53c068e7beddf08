"""``fooling transfer``, ``fooling retrain`` and ``fooling ablate``: the paper's experiments as commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from fooling.evo.cli.parsing import (
    add_config_arguments,
    add_scoring_arguments,
    add_track_argument,
    new_config,
    non_negative_int,
    number,
    positive_int,
)
from fooling.evo.config import RunConfig
from fooling.evo.experiments.ablation import DEFAULT_FRACTIONS, ablate
from fooling.evo.experiments.retrain import RetrainSettings, retrain
from fooling.evo.experiments.transfer import transfer
from fooling.evo.report.figures import percent
from fooling.evo.trackers import Tracking


def _fraction(text: str) -> float:
    value = number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], got {text!r}")
    return value


def _share(text: str) -> float:
    value = number(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1), got {text!r}")
    return value


def _print_result(rows: list[dict], uris: list[str], line: Callable[[dict], str]) -> int:
    """Print ``line(row)`` for each result row, then the files written; exit code 0."""
    for text in [line(row) for row in rows] + uris:
        print(text)
    return 0


def _transfer_line(row: dict) -> str:
    return (
        f"{row['target']}: {row['elites']} elites, same top-1 {100 * row['same_top1']:.1f}%, "
        f">= 99.99% on both {100 * row['both_9999']:.1f}%, >= 99% on both {100 * row['both_99']:.1f}%, "
        f"mean confidence {percent(row['mean_source'])} -> {percent(row['mean_target'])}"
    )


def _retrain_line(row: dict) -> str:
    return (
        f"DNN_{row['round']} ({row['outputs']} outputs): median {percent(row['median'])}, "
        f"{row['at_9999']}/{row['cells']} classes >= 99.99%, test accuracy {100 * row['test_accuracy']:.2f}%"
    )


def _ablate_line(row: dict) -> str:
    return f"kept {row['kept']:.2f}: mean {percent(row['mean'])}, median {percent(row['median'])}"


def cmd_transfer(args: argparse.Namespace) -> int:
    """``fooling transfer``: score a run's elites on the target networks, one line per target.

    Args:
        args: the parsed command line (``run``, ``to``, ``map_classes`` and the scoring options).

    Returns:
        The exit code, 0.
    """
    result = transfer(
        args.run,
        args.to,
        map_classes=args.map_classes,
        device=args.device,
        engine=args.engine,
        model=args.model,
    )
    return _print_result(result.rows, result.uris, _transfer_line)


# Where ``fooling retrain`` writes unless --out says otherwise.
RETRAIN_OUT = "runs/retrain"


def cmd_retrain(args: argparse.Namespace) -> int:
    """``fooling retrain``: evolve and retrain with a fooling class, one line per round.

    Args:
        args: the parsed command line (the run's settings, ``rounds``, ``share``, ``epochs``,
            ``train_dir``, ``steps``).

    Returns:
        The exit code, 0.
    """
    settings = RetrainSettings(
        run=new_config(args, out=RETRAIN_OUT),
        rounds=args.rounds,
        share=args.share,
        epochs=args.epochs,
        train_dir=args.train_dir,
        steps=args.steps,
    )
    Tracking(args.track).check(settings.run.out)  # missing extras and bad places: before any work
    result = retrain(settings, show_progress=not args.no_progress, trackers=args.track)
    return _print_result(result.rows, result.uris, _retrain_line)


def cmd_ablate(args: argparse.Namespace) -> int:
    """``fooling ablate``: a run's elites under occlusion and repeat removal, one line per fraction kept.

    Args:
        args: the parsed command line (``run``, ``keep``, ``grid``, ``tolerance``, ``seed`` and the
            scoring options).

    Returns:
        The exit code, 0.
    """
    result = ablate(
        args.run,
        fractions_kept=tuple(args.keep) if args.keep else DEFAULT_FRACTIONS,
        grid=args.grid,
        tolerance=args.tolerance,
        seed=args.seed,
        device=args.device,
        engine=args.engine,
        model=args.model,
    )
    return _print_result(result.rows, result.uris, _ablate_line)


def _add_run_model_argument(parser: argparse.ArgumentParser) -> None:
    """``--model``: the run's own network, named again (how a run of an endpoint is allowed to send)."""
    parser.add_argument(
        "--model",
        default=None,
        metavar="MODEL",
        help="the run's network again (default: as the run folder says); a run of an endpoint "
        "needs its URL here, as nothing is sent to an address only the run folder names",
    )


def register(commands) -> None:
    """Add the three sub-commands to ``fooling``'s sub-parsers."""
    transfer = commands.add_parser("transfer", help="score a run's elites on other networks (DNN_A -> DNN_B)")
    transfer.add_argument("run", help="run folder")
    transfer.add_argument(
        "--to", action="append", required=True, metavar="MODEL", help="target network (repeatable)"
    )
    transfer.add_argument(
        "--map-classes", action="store_true", help="allow targets with another class set, matching names"
    )
    _add_run_model_argument(transfer)
    add_scoring_arguments(transfer)
    transfer.set_defaults(func=cmd_transfer)

    retrain = commands.add_parser(
        "retrain",
        help="the fooling-class (n+1) retraining loop",
        description="Every round evolves as `fooling evolve` with the run flags below (--model is "
        "DNN_1; --out holds the table, the plot and one run folder per round; round k evolves "
        "with seed --seed + k - 1).",
    )
    add_config_arguments(retrain, RunConfig(out=RETRAIN_OUT))
    retrain.add_argument("--rounds", type=positive_int, default=15, help="retraining rounds (paper: 15)")
    retrain.add_argument(
        "--share",
        type=_share,
        default=0.25,
        help="fooling class's share of the data by the last round (default 0.25)",
    )
    retrain.add_argument(
        "--epochs", type=positive_int, default=None, help="LeNet epochs per round (default: as fooling train)"
    )
    retrain.add_argument(
        "--train-dir", default=None, help="ImageFolder of natural images (ROOT/CLASS/IMAGE), non-MNIST models"
    )
    retrain.add_argument(
        "--steps", type=positive_int, default=100, help="fine-tuning steps per round (default 100)"
    )
    retrain.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_track_argument(retrain)
    retrain.set_defaults(func=cmd_retrain)

    ablate = commands.add_parser(
        "ablate", help="confidence of a run's elites under occlusion and repeat removal"
    )
    ablate.add_argument("run", help="run folder")
    ablate.add_argument(
        "--keep", type=_fraction, nargs="+", default=None, help="fractions of the image kept (default 1 .. 0)"
    )
    ablate.add_argument("--grid", type=positive_int, default=4, help="tiles per side")
    ablate.add_argument("--tolerance", type=number, default=0.05, help="repeat tolerance (mean |difference|)")
    ablate.add_argument("--seed", type=non_negative_int, default=0)
    _add_run_model_argument(ablate)
    add_scoring_arguments(ablate)
    ablate.set_defaults(func=cmd_ablate)
