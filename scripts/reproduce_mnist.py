"""Reproduce the paper's MNIST result: every run >= 99.99% median confidence by generation 200.

Paper settings: direct encoding, 200 children per generation, 200 generations,
per-gene polynomial mutation (p = 0.1, eta = 15), LeNet. Prints a Markdown table.

    python scripts/reproduce_mnist.py [--seeds 0 1 2] [--encoding direct] [--out runs/reproduce-mnist]
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fooling.evo.cli import run_command
from fooling.evo.cli.parsing import Parser, non_negative_int, positive_int
from fooling.evo.config import RunConfig
from fooling.evo.run import evolve

CHECKPOINTS = (50, 100, 200)


def main() -> None:
    parser = Parser(prog="reproduce_mnist.py", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--generations", type=positive_int, default=200)
    parser.add_argument("--population", type=positive_int, default=200)
    parser.add_argument("--encoding", default="direct")
    parser.add_argument("--model", default="mnist-lenet")
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    marks = [g for g in CHECKPOINTS if g <= args.generations]
    header = " | ".join(f"median @ gen {g}" for g in marks)
    print(f"| seed | {header} | classes >= 99.99% | first gen median >= 99.99% | time |")
    print("|---" * (len(marks) + 4) + "|")
    reached_all = True
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.out or scratch)
        for seed in args.seeds:
            config = RunConfig(
                model=args.model,
                encoding=args.encoding,
                population=args.population,
                generations=args.generations,
                seed=seed,
                checkpoint_every=0,
                out=str(root / f"{args.encoding}-seed{seed}"),
            )
            started = time.perf_counter()
            search = evolve(config, show_progress=False)
            seconds = time.perf_counter() - started
            medians = np.array(search.logbook.select("median"))
            cells = [f"{100 * medians[g - 1]:.4f}%" for g in marks]
            over = int((search.archive.elite_fitness() >= 0.9999).sum())
            hits = np.flatnonzero(medians >= 0.9999)
            first = str(hits[0] + 1) if hits.size else "never"
            reached_all &= bool(hits.size)
            row = [str(seed), *cells, f"{over}/{search.archive.num_cells}", first, f"{seconds:.0f} s"]
            print("| " + " | ".join(row) + " |")
    verdict = "reproduced" if reached_all else "NOT reproduced"
    print(f"\npaper: median >= 99.99% by generation 200 on every run -> {verdict}")


if __name__ == "__main__":
    sys.exit(run_command(main, program="reproduce_mnist.py"))
