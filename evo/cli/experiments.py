"""``fooling transfer``, ``fooling retrain`` and ``fooling ablate``: the paper's experiments as commands."""

from __future__ import annotations

import argparse

from fooling.evo.cli.parsing import FIELD_HELP, name_list, non_negative_int, number, positive_int
from fooling.evo.experiments.ablation import DEFAULT_FRACTIONS, ablate
from fooling.evo.experiments.retrain import RetrainSettings, retrain
from fooling.evo.experiments.transfer import transfer
from fooling.evo.report.figures import percent


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


def cmd_transfer(args: argparse.Namespace) -> int:
    result = transfer(args.run, args.to, map_classes=args.map_classes, device=args.device, engine=args.engine)
    for row in result.rows:
        print(
            f"{row['target']}: {row['elites']} elites, same top-1 {100 * row['same_top1']:.1f}%, "
            f">= 99.99% on both {100 * row['both_9999']:.1f}%, >= 99% on both {100 * row['both_99']:.1f}%, "
            f"mean confidence {percent(row['mean_source'])} -> {percent(row['mean_target'])}"
        )
    for uri in result.uris:
        print(uri)
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    settings = RetrainSettings(
        model=args.model,
        rounds=args.rounds,
        generations=args.generations,
        population=args.population,
        encoding=args.encoding,
        seed=args.seed,
        out=args.out,
        share=args.share,
        epochs=args.epochs,
        train_dir=args.train_dir,
        steps=args.steps,
        image_size=args.image_size,
        classes=args.classes,
        device=args.device,
        engine=args.engine,
        workers=args.workers,
        scorers=args.scorers,
        address=args.address,
    )
    result = retrain(settings, show_progress=not args.no_progress)
    for row in result.rows:
        print(
            f"DNN_{row['round']} ({row['outputs']} outputs): median {percent(row['median'])}, "
            f"{row['at_9999']}/{row['cells']} classes >= 99.99%, "
            f"test accuracy {100 * row['test_accuracy']:.2f}%"
        )
    for uri in result.uris:
        print(uri)
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    result = ablate(
        args.run,
        fractions_kept=tuple(args.keep) if args.keep else DEFAULT_FRACTIONS,
        grid=args.grid,
        tolerance=args.tolerance,
        seed=args.seed,
        device=args.device,
        engine=args.engine,
    )
    for row in result.rows:
        print(f"kept {row['kept']:.2f}: mean {percent(row['mean'])}, median {percent(row['median'])}")
    for uri in result.uris:
        print(uri)
    return 0


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
    transfer.add_argument("--device", default=None, help="scoring device (default: CUDA when present)")
    transfer.add_argument("--engine", default="auto", help=FIELD_HELP["engine"])
    transfer.set_defaults(func=cmd_transfer)

    retrain = commands.add_parser("retrain", help="the fooling-class (n+1) retraining loop")
    retrain.add_argument("--model", default="mnist-lenet", help="DNN_1 (default: mnist-lenet)")
    retrain.add_argument("--rounds", type=positive_int, default=15, help="retraining rounds (paper: 15)")
    retrain.add_argument("--generations", type=positive_int, default=200, help="generations per round")
    retrain.add_argument("--population", type=positive_int, default=200, help="children per generation")
    retrain.add_argument("--encoding", default="direct", help="genome encoding (direct or cppn)")
    retrain.add_argument("--seed", type=int, default=0)
    retrain.add_argument("--out", default="runs/retrain", help="folder for the table, plot and rounds")
    retrain.add_argument(
        "--share", type=_share, default=0.25, help="fooling class's share of the data by the last round"
    )
    retrain.add_argument("--epochs", type=positive_int, default=None, help="LeNet epochs per round")
    retrain.add_argument(
        "--train-dir", default=None, help="ImageFolder of natural images (ROOT/CLASS/IMAGE), non-MNIST models"
    )
    retrain.add_argument("--steps", type=positive_int, default=100, help="fine-tuning steps per round")
    retrain.add_argument("--image-size", type=positive_int, default=0, help="side of evolved images")
    retrain.add_argument("--classes", type=name_list, default=None, help="classes that get a cell")
    retrain.add_argument("--device", default=None)
    retrain.add_argument("--engine", default="auto", help=FIELD_HELP["engine"])
    retrain.add_argument("--workers", type=non_negative_int, default=0, help=FIELD_HELP["workers"])
    retrain.add_argument("--scorers", type=positive_int, default=1, help=FIELD_HELP["scorers"])
    retrain.add_argument("--address", default=None, help=FIELD_HELP["address"])
    retrain.add_argument("--no-progress", action="store_true")
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
    ablate.add_argument("--seed", type=int, default=0)
    ablate.add_argument("--device", default=None)
    ablate.add_argument("--engine", default="auto", help=FIELD_HELP["engine"])
    ablate.set_defaults(func=cmd_ablate)
