"""``fooling audit``: one command, one report on how easily a classifier is fooled."""

from __future__ import annotations

import argparse

from fooling.evo.cli.parsing import (
    FIELD_HELP,
    UsageError,
    add_scoring_arguments,
    add_track_argument,
    non_negative_int,
)
from fooling.evo.experiments.audit import BUDGETS, audit, resume_audit
from fooling.evo.store.location import join
from fooling.evo.trackers import Tracking

# The audit settings a resumed audit keeps, and their defaults for a new one.
AUDIT_DEFAULTS = {"budget": "small", "real_images": None, "reference": "auto", "seed": 0}

BUDGET_HELP = "; ".join(
    f"{name}: {budget.evaluations:,} CPPN + {budget.evaluations:,} direct evaluations, "
    f"{budget.ascent_steps} ascent steps"
    for name, budget in BUDGETS.items()
)


def cmd_audit(args: argparse.Namespace) -> int:
    """``fooling audit``: write the audit report of ``args.model`` and print a one-line summary.

    Args:
        args: the parsed command line (``model``, ``out`` or ``resume``, ``budget``,
            ``real_images``, ``reference``, ``seed`` and the scoring options).

    Returns:
        The exit code, 0.

    Raises:
        UsageError: neither ``--model`` and ``--out`` nor ``--resume``, or ``--out`` with ``--resume``.
    """
    scoring = dict(workers=args.workers, scorers=args.scorers, address=args.address, trackers=args.track)
    if args.resume is not None or args.out is not None:  # missing extras and bad places: before any work
        Tracking(args.track).check(args.resume if args.resume is not None else args.out)
    if args.resume is not None:
        if args.out is not None:
            raise UsageError("give the audit folder once: --resume OUT replaces --out")
        given = {name: getattr(args, name) for name in ("model", *AUDIT_DEFAULTS)}
        result = resume_audit(
            args.resume, given=given, device=args.device, engine=args.engine, **scoring,
            show_progress=not args.no_progress,
        )  # fmt: skip
    else:
        missing = [flag for flag, value in (("--model", args.model), ("--out", args.out)) if value is None]
        if missing:
            raise UsageError(f"audit needs {' and '.join(missing)} (or --resume OUT to continue an audit)")
        settings = {name: default if getattr(args, name) is None else getattr(args, name)
                    for name, default in AUDIT_DEFAULTS.items()}  # fmt: skip
        result = audit(
            args.model, args.out, **settings, device=args.device, engine=args.engine or "auto", **scoring,
            show_progress=not args.no_progress,
        )  # fmt: skip
    best = result.summary["methods"].get("best", {})
    print(
        f"{result.summary['model']}: {best.get('>=99%', 0)} of {result.summary['classes']} classes "
        f"fooled by a search at >= 99%, {best.get('>=90%', 0)} at >= 90%, {best.get('>=50%', 0)} at >= 50% "
        f"(budget {result.summary['budget']}); report in {join(result.out, 'report.html')} and "
        f"{join(result.out, 'report.md')}"
    )
    return 0


def register(commands) -> None:
    """Add ``audit`` to ``fooling``'s sub-commands."""
    parser = commands.add_parser(
        "audit", help="how easily is a classifier fooled: searches, gradient ascent, transfer, one report"
    )
    parser.add_argument("--model", default=None, help=FIELD_HELP["model"])
    parser.add_argument(
        "--budget",
        choices=tuple(BUDGETS),
        default=None,
        help=f"how much to spend ({BUDGET_HELP}; default small)",
    )
    parser.add_argument(
        "--real-images", metavar="DIR", default=None, help="real photos as DIR/CLASS/IMAGE, scored beside"
    )
    parser.add_argument(
        "--reference",
        metavar="MODEL",
        default=None,
        help="model the fooling images are transferred to (default: one with the same classes; none: skip)",
    )
    parser.add_argument(
        "--seed", type=non_negative_int, default=None, help="seed of every stage (default: 0)"
    )
    add_scoring_arguments(parser, actors=True)
    # None: the audit's own engine when resuming, "auto" for a new audit.
    parser.set_defaults(engine=None)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_track_argument(parser)
    parser.add_argument(
        "--out", default=None, help="new or empty folder for the report: local path or URI (s3://, gs://)"
    )
    parser.add_argument(
        "--resume",
        metavar="OUT",
        default=None,
        help="continue the interrupted audit in OUT with its settings, each search from its last checkpoint",
    )
    parser.set_defaults(func=cmd_audit)
