"""Reproduce the paper's ImageNet CPPN experiment (median 88.11% over 1000 classes, AlexNet).

    python scripts/reproduce_imagenet.py --budget small   # 50 classes x 50 generations, CPU minutes
    python scripts/reproduce_imagenet.py --budget matched # the paper's children per class, 20 classes
    python scripts/reproduce_imagenet.py --budget paper   # 1000 classes x 5000 generations x 400 (GPU days)

Writes the run (checkpoints, elites.png, progress.png, index.html) under --out and prints a
Markdown table of median/mean elite confidence at several generations next to the paper's.
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np

from fooling.evo.cli import run_command
from fooling.evo.cli.parsing import Parser, non_negative_int, positive_int
from fooling.evo.config import RunConfig
from fooling.evo.report.figures import write_report
from fooling.evo.run import evolve
from fooling.fitness import imagenet_class_names

BUDGETS = {
    # classes: every 20th ImageNet class, so the small run spans animals, objects and scenes.
    "small": dict(classes=50, generations=50, population=50),
    # The paper's 400 x 5000 children over 1000 classes are 2000 children per class; 20
    # classes x 1000 generations x 40 gives each class as many (about half an hour on 2 CPU cores).
    "matched": dict(classes=20, generations=1000, population=40),
    "paper": dict(classes=1000, generations=5000, population=400),
}
PAPER = {"median": 0.8811, "note": "AlexNet, 1000 classes, 5000 generations, population 400"}


def main() -> None:
    parser = Parser(prog="reproduce_imagenet.py", description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    parser.add_argument("--model", default="imagenet-lite0")
    parser.add_argument("--encoding", default="cppn")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--out", default=None, help="run folder (default runs/reproduce-imagenet-BUDGET)")
    parser.add_argument("--workers", type=non_negative_int, default=0)
    parser.add_argument("--scorers", type=positive_int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    budget = BUDGETS[args.budget]
    names = imagenet_class_names()
    step = len(names) // budget["classes"]
    classes = None if budget["classes"] == len(names) else list(names[::step][: budget["classes"]])
    out = args.out or f"runs/reproduce-imagenet-{args.budget}-{args.encoding}"
    config = RunConfig(model=args.model, encoding=args.encoding, generations=budget["generations"],
                       population=budget["population"], seed=args.seed, classes=classes, out=out,
                       checkpoint_every=max(1, budget["generations"] // 10), workers=args.workers,
                       scorers=args.scorers)  # fmt: skip
    started = time.perf_counter()
    search = evolve(config, show_progress=True)
    minutes = (time.perf_counter() - started) / 60
    write_report(out)
    records = list(search.logbook)
    marks = sorted({max(1, budget["generations"] // 5) * k for k in range(1, 6)} | {budget["generations"]})
    print(f"\n{args.model}, {args.encoding}, {len(search.archive.class_names)} classes, population "
          f"{budget['population']}, seed {args.seed}: {minutes:.1f} min\n")  # fmt: skip
    print("| generation | median | mean | classes >= 99% |")
    print("|---|---|---|---|")
    for generation in marks:
        record = records[generation - 1]
        print(f"| {generation} | {100 * record['median']:.2f}% | {100 * record['mean']:.2f}% | |")
    over = int((search.archive.elite_fitness() >= 0.99).sum())
    final = search.archive.stats()
    print(f"| final | {100 * final['median']:.2f}% | {100 * final['mean']:.2f}% | "
          f"{over}/{search.archive.num_cells} |")  # fmt: skip
    print(f"\npaper: median {100 * PAPER['median']:.2f}% ({PAPER['note']})")
    print(f"images: {out}/elites.png  gallery: {out}/index.html")
    np.set_printoptions()


if __name__ == "__main__":
    sys.exit(run_command(main, program="reproduce_imagenet.py"))
