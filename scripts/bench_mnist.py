"""Benchmark: end-to-end MAP-Elites evaluations/s against the LeNet's raw forward throughput.

Each repeat measures the raw forward just before and just after one ``evolve`` loop and
divides the loop's rate by their mean, so that load on the machine during a repeat hits
both sides of its ratio; the median over repeats is reported. The ratio says how
evaluation-bound the loop is (target on 2 CPU cores: >= 0.85). Each scoring engine
(torch, ONNX Runtime) is measured: raw forward and the loop on it. Beside the ratio, the
share of the loop's time spent scoring, timed inside the loop itself: machine load
between the raw measurements and the loop does not move it.

    python scripts/bench_mnist.py [--population 200] [--generations 300] [--repeats 5]
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time

import torch

from fooling.evo.cli import run_command
from fooling.evo.cli.parsing import Parser, positive_int
from fooling.evo.config import RunConfig
from fooling.evo.models import load_or_train
from fooling.evo.run import evolve, local_backend
from fooling.evo.search import LocalBackend, Variation
from fooling.fitness import Scorer
from fooling.fitness.engine import keep_freed_memory


def raw_forward(scorer: Scorer, batch_size: int, seconds: float = 2.0) -> float:
    """Images/s of ``scorer.score`` on random images of ``batch_size``."""
    images = torch.rand(batch_size, 1, 28, 28)
    scorer.score(images)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        scorer.score(images)
        done += batch_size
    return done / (time.perf_counter() - started)


class ScoringClock:
    """A backend factory for :func:`evolve`: the in-process backend, its evaluator timed."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, config: RunConfig, variation: Variation, model) -> LocalBackend:
        backend = local_backend(config, variation, model)
        evaluate = backend.evaluator.evaluate

        def timed(genomes):
            started = time.perf_counter()
            probabilities = evaluate(genomes)
            self.seconds += time.perf_counter() - started
            return probabilities

        backend.evaluator.evaluate = timed
        return backend


def end_to_end(population: int, generations: int, seed: int, engine: str) -> tuple[float, ...]:
    """One ``evolve``: (loop evaluations/s, scoring's share, command evaluations/s, final median)."""
    clock = ScoringClock()
    with tempfile.TemporaryDirectory() as out:
        config = RunConfig(
            model="mnist-lenet",
            population=population,
            generations=generations,
            seed=seed,
            out=out,
            checkpoint_every=0,
            engine=engine,
        )
        started = time.perf_counter()
        search = evolve(config, show_progress=False, backend=clock)
        wall = time.perf_counter() - started
    loop_seconds = sum(record["seconds"] for record in search.logbook)
    evaluations = population * generations
    share = clock.seconds / loop_seconds
    return evaluations / loop_seconds, share, evaluations / wall, search.archive.stats()["median"]


def main() -> None:
    parser = Parser(prog="bench_mnist.py", description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=positive_int, default=200)
    parser.add_argument("--generations", type=positive_int, default=300)
    parser.add_argument("--repeats", type=positive_int, default=5)
    args = parser.parse_args()
    keep_freed_memory()  # as the fooling command does, in every figure of the run
    logging.basicConfig(level=logging.WARNING)
    model = load_or_train("mnist-lenet")
    for engine in ("torch", "onnxruntime"):
        scorer = Scorer(model, engine=engine)
        raws, loops, walls, ratios, shares = [], [], [], [], []
        for repeat in range(args.repeats):
            before = raw_forward(scorer, args.population)
            loop, share, wall, median = end_to_end(
                args.population, args.generations, seed=repeat, engine=engine
            )
            after = raw_forward(scorer, args.population)
            raws.append((before + after) / 2)
            loops.append(loop)
            walls.append(wall)
            ratios.append(loop / raws[-1])
            shares.append(share)
            print(
                f"{engine} repeat {repeat}: raw {before:,.0f} / {after:,.0f} img/s (before / after), "
                f"loop {loop:,.0f} evals/s, ratio {ratios[-1]:.2f}, scoring share {share:.2f}, "
                f"command {wall:,.0f} evals/s, final median {median:.4f}"
            )
        raw, loop, wall, ratio = (statistics.median(x) for x in (raws, loops, walls, ratios))
        print(
            f"\n{engine}: {scorer.threads} threads, batch size {args.population}, medians of {args.repeats}"
        )
        print(f"raw LeNet forward:             {raw:10,.0f} images/s")
        print(f"evolve, generation loop:       {loop:10,.0f} evaluations/s   ratio {ratio:.2f}")
        print(f"scoring's share of the loop:   {statistics.median(shares):10.2f}   (timed inside the loop)")
        print(
            f"evolve, whole command:         {wall:10,.0f} evaluations/s   ratio {wall / raw:.2f}"
            "  (includes model load, checkpoint, thumbnails)"
        )
        print(f"target: loop ratio >= 0.85 -> {'met' if ratio >= 0.85 else 'NOT met'}\n")


if __name__ == "__main__":
    sys.exit(run_command(main, program="bench_mnist.py"))
