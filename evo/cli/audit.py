"""``fooling audit``: one command, one report on how easily a classifier is fooled."""

from __future__ import annotations

import argparse

from fooling.evo.cli.parsing import FIELD_HELP, add_scoring_arguments, non_negative_int
from fooling.evo.experiments.audit import BUDGETS, audit
from fooling.evo.store.checkpoint import join

BUDGET_HELP = "; ".join(
    f"{name}: {budget.evaluations:,} CPPN + {budget.evaluations:,} direct evaluations, "
    f"{budget.ascent_steps} ascent steps"
    for name, budget in BUDGETS.items()
)


def cmd_audit(args: argparse.Namespace) -> int:
    """``fooling audit``: write the audit report of ``args.model`` and print a one-line summary.

    Args:
        args: the parsed command line (``model``, ``out``, ``budget``, ``real_images``,
            ``reference``, ``seed`` and the scoring options).

    Returns:
        The exit code, 0.
    """
    result = audit(
        args.model,
        args.out,
        budget=args.budget,
        real_images=args.real_images,
        reference=args.reference,
        seed=args.seed,
        device=args.device,
        engine=args.engine,
        workers=args.workers,
        scorers=args.scorers,
        address=args.address,
        show_progress=not args.no_progress,
    )
    best = result.summary["methods"].get("best", {})
    print(
        f"{result.summary['model']}: {best.get('>=99%', 0)} of {result.summary['classes']} classes fooled at "
        f">= 99%, {best.get('>=90%', 0)} at >= 90%, {best.get('>=50%', 0)} at >= 50% "
        f"(budget {args.budget}); report in {join(result.out, 'report.html')} and "
        f"{join(result.out, 'report.md')}"
    )
    return 0


def register(commands) -> None:
    """Add ``audit`` to ``fooling``'s sub-commands."""
    parser = commands.add_parser(
        "audit", help="how easily is a classifier fooled: searches, gradient ascent, transfer, one report"
    )
    parser.add_argument("--model", required=True, help=FIELD_HELP["model"])
    parser.add_argument(
        "--budget", choices=tuple(BUDGETS), default="small", help=f"how much to spend ({BUDGET_HELP})"
    )
    parser.add_argument(
        "--real-images", metavar="DIR", default=None, help="real photos as DIR/CLASS/IMAGE, scored beside"
    )
    parser.add_argument(
        "--reference",
        metavar="MODEL",
        default="auto",
        help="model the fooling images are transferred to (default: one with the same classes; none: skip)",
    )
    parser.add_argument("--seed", type=non_negative_int, default=0)
    add_scoring_arguments(parser, actors=True)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--out", required=True, help="new or empty folder for the report: local path or URI (s3://, gs://)"
    )
    parser.set_defaults(func=cmd_audit)
