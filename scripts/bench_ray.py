"""Ray backend benchmark: end-to-end efficiency, scaling with simulated GPUs, the driver's ceiling.

One run prints three measurements (figures are measured, never assumed, except the
GPU-scorer rate used to turn the driver's ceiling into a number of scorers):

1. MNIST efficiency: raw scorer throughput (``Evaluator.evaluate`` in-process, one
   batch after the other) vs end-to-end evaluations/s of a search on Ray (1 mutator
   actor, 1 scorer actor: variation, transfers, scheduling and archive insertion
   included). Target >= 0.7.
2. Scaling: scorer actors that sleep a fixed time per task (a simulated GPU), 1, 2, 4
   and 8 of them; evaluations/s against the ideal ``scorers * batch / sleep``.
3. The driver's ceiling: evaluations/s when mutators only copy their parents and
   scorers return at once, so what is left is the driver's own work (parent
   selection, submitting, ``ray.wait``, fetching results, archive insertion). Divided
   by the rate of one GPU scorer (``--gpu-scorer-rate``), it says how many GPU
   scorers one driver can keep busy.
4. What crosses between processes per generation, direct-encoded ImageNet genomes
   (``--traffic-model``, 602 kB each) on 2 scorer actors: host variation (mutator actors:
   the parent pool once, every child to its scorer, each batch's candidate rows on to the
   driver) against
   ``--vary-on scorer`` (the archive's changes once, each batch's candidate rows back),
   and the evaluations/s of both.

Usage::

    python scripts/bench_ray.py [--quick]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

os.environ.setdefault("FOOLING_OFFLINE", "1")

import numpy as np  # noqa: E402
import ray  # noqa: E402
from deap import base  # noqa: E402

from fooling.evo.archive import ClassArchive, candidate_rows  # noqa: E402
from fooling.evo.cli import run_command
from fooling.evo.cli.parsing import Parser, positive_number
from fooling.evo.config import RunConfig  # noqa: E402
from fooling.evo.distributed.backend import RayBackend, init_local_ray, shutdown_ray  # noqa: E402
from fooling.evo.evaluation import Evaluator, class_ids, make_encoding  # noqa: E402
from fooling.evo.models import load_or_train  # noqa: E402
from fooling.evo.search import Candidates, Search, Variation  # noqa: E402
from fooling.evo.toolbox import make_toolbox  # noqa: E402
from fooling.fitness.engine import keep_freed_memory


def search_rate(backend, encoding, model, *, population: int, batch_size: int, generations: int) -> float:
    """Evaluations/s (wall clock) of ``generations`` generations after one warm-up generation."""
    return search_rates(
        backend, encoding, model, population=population, batch_size=batch_size, generations=generations
    )[0]


def search_rates(
    backend, encoding, model, *, population: int, batch_size: int, generations: int
) -> tuple[float, float]:
    """Evaluations per wall-clock second and per CPU second of this (the driver's) process."""
    names = [model.spec.class_names[i] for i in range(model.spec.num_classes)]
    search = Search(
        archive=ClassArchive(names), backend=backend, seed=0, population=population, batch_size=batch_size
    )
    search.step()  # generation 0: random genomes, actors warm up
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(generations):
        search.step()
    evaluations = generations * population
    return evaluations / (time.perf_counter() - started), evaluations / (time.process_time() - cpu)


def raw_scorer_rate(config: RunConfig, model, batch_size: int, repeats: int) -> float:
    """Evaluations/s of the scorer alone, in this process, on ready-made genomes."""
    evaluator = Evaluator(config, model)
    genomes = evaluator.encoding.random(batch_size, np.random.default_rng(0))
    evaluator.evaluate(genomes)
    started = time.perf_counter()
    for _ in range(repeats):
        evaluator.evaluate(genomes)
    return repeats * batch_size / (time.perf_counter() - started)


class SleepScorer:
    """A simulated GPU: takes ``SECONDS`` per task whatever its size, returns random probabilities."""

    SECONDS = 0.1

    def __init__(self, config, model, device, threads, cpu_threads, variation=None) -> None:
        self.cells = len(class_ids(config, model.spec))
        self.rng = np.random.default_rng(0)

    def describe(self) -> dict:
        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(), "device": "sleep"}

    def score(self, children, fitness, tasks=None, pool=None):
        started = time.perf_counter()
        out, candidates = [], []
        fitness = np.full(self.cells, -np.inf, np.float32) if fitness is None else fitness
        for batch in children:
            time.sleep(self.SECONDS)
            out.append(self.rng.random((len(batch), self.cells), dtype=np.float32))
            rows = candidate_rows(out[-1], fitness)
            candidates.append(Candidates(rows, batch.take(rows)))
        return out, time.perf_counter() - started, os.getpid(), candidates


class InstantScorer(SleepScorer):
    """Returns at once: only the driver's own work is left."""

    SECONDS = 0.0


def genome_bytes(genomes) -> int:
    """Bytes of a numpy genome batch."""
    return sum(array.nbytes for array in genomes.arrays().values())


class Traffic:
    """Wraps a RayBackend: counts the genome bytes that cross between processes.

    Args:
        inner: the backend.
        row_bytes: bytes of one genome.
    """

    def __init__(self, inner: RayBackend, row_bytes: int) -> None:
        self.inner = inner
        self.row_bytes = row_bytes
        self.bytes = 0

    def run(self, tasks, parents):
        for task, (children, scores) in zip(tasks, self.inner.run(tasks, parents)):
            self.bytes += genome_bytes(children.genomes)  # the candidates, to the driver
            if self.inner.mutators:  # every child, from its mutator to its scorer
                self.bytes += task.count * self.row_bytes
            yield children, scores
        if parents is not None and "genomes" in vars(parents):  # the pool, put once
            self.bytes += genome_bytes(parents.genomes)

    def total(self) -> int:
        """Bytes so far, the replicas' changes included."""
        return self.bytes + self.inner.sync_bytes

    def close(self) -> None:
        self.inner.close()


def traffic(model_name: str, out: str, generations: int) -> None:
    """Measurement 4: genome bytes between processes, host variation against the scorers' replicas."""
    model = load_or_train(model_name)
    population, batch = 100, 25
    print(f"\n4. Traffic: {model_name}, direct genomes, population {population}, batch {batch}, 2 scorers")
    print("   variation                     first copy MB   MB/generation   evaluations/s")
    for vary_on in ("host", "scorer"):
        config = RunConfig(model=model_name, population=population, batch_size=batch, workers=1, scorers=2,
                           vary_on=vary_on, out=out)  # fmt: skip
        encoding = make_encoding(config, model.spec)
        row_bytes = genome_bytes(encoding.random(1, np.random.default_rng(0)))
        backend = Traffic(RayBackend(config, Variation(make_toolbox(encoding), seed=0), model), row_bytes)
        names = [model.spec.class_names[i] for i in range(model.spec.num_classes)]
        search = Search(archive=ClassArchive(names), backend=backend, seed=0, population=population,
                        batch_size=batch)  # fmt: skip
        try:
            search.step()  # random genomes
            search.step()  # the first parents: the replicas get the whole archive once
            copy = backend.inner.sync_bytes / 1e6  # the replicas' whole copy (0 for mutators)
            first, started = backend.total(), time.perf_counter()
            measured = max(2, generations // 3)
            for _ in range(measured):
                search.step()
            rate = measured * population / (time.perf_counter() - started)
            per_generation = (backend.total() - first) / measured / 1e6
        finally:
            backend.close()
        label = "mutator actors (host)" if vary_on == "host" else "on the scorers (replicas)"
        print(f"   {label:28}  {copy:13.1f}   {per_generation:13.1f}   {rate:13.0f}")


def copying_toolbox(encoding) -> base.Toolbox:
    """Mutation that copies its parents: mutators cost (almost) nothing."""
    toolbox = make_toolbox(encoding)
    toolbox.register("mutate", lambda genomes, rng, generation: genomes.copy())
    return toolbox


def main() -> None:
    parser = Parser(prog="bench_ray.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer generations (a rough figure)")
    parser.add_argument(
        "--gpu-scorer-rate",
        type=positive_number,
        default=2000.0,
        help="evaluations/s of one GPU scorer, to turn the driver's ceiling into a number of "
        "scorers (default 2000: an ImageNet-size net, single crop, on one GPU)",
    )
    parser.add_argument(
        "--sections", default="1234", help="which measurements to run, e.g. 4 (default all: 1234)"
    )
    parser.add_argument(
        "--traffic-model", default="imagenet-lite0", help="the network of measurement 4 (an ImageNet model)"
    )
    args = parser.parse_args()
    keep_freed_memory()  # as the fooling command does, in every figure of the run
    generations = 3 if args.quick else 10
    cpus = os.cpu_count() or 2
    # Loopback only, private session folder: what `fooling evolve` starts without --address.
    init_local_ray(num_cpus=cpus, logging_level="ERROR", log_to_driver=False)
    model = load_or_train("mnist-lenet")
    out = tempfile.mkdtemp(prefix="bench-ray-")
    print(f"machine: {cpus} CPU cores; Ray {ray.__version__}; model mnist-lenet; out {out}")

    sections = set(args.sections)
    encoding = make_encoding(RunConfig(out=out), model.spec)
    variation = Variation(make_toolbox(encoding), seed=0)
    if "1" in sections:
        # 1. End-to-end efficiency on MNIST.
        population, batch = 4000, 500
        config = RunConfig(population=population, batch_size=batch, workers=1, scorers=1, out=out)
        raw = raw_scorer_rate(config, model, batch, repeats=4 * generations)
        backend = RayBackend(config, variation, model)
        try:
            e2e = search_rate(
                backend, encoding, model, population=population, batch_size=batch, generations=generations
            )
        finally:
            backend.close()
        print("\n1. MNIST LeNet, batch", batch, "population", population)
        print(f"   raw scorer (in-process)      {raw:9.0f} evaluations/s")
        print(f"   end to end on Ray (1+1)      {e2e:9.0f} evaluations/s")
        print(f"   ratio                        {e2e / raw:9.2f}   (target >= 0.7)")

    if "2" in sections:
        # 2. Scaling with simulated GPUs: each task takes SECONDS whatever else runs.
        population, batch, seconds = 3200, 100, SleepScorer.SECONDS
        print(
            f"\n2. Scaling: scorers sleeping {seconds * 1000:.0f} ms per task of {batch} "
            f"(population {population})"
        )
        print("   scorers   evaluations/s   ideal   efficiency")
        for scorers in (1, 2, 4, 8):
            config = RunConfig(population=population, batch_size=batch, workers=2, scorers=scorers, out=out)
            backend = RayBackend(config, variation, model, scorer_actor=SleepScorer)
            try:
                rate = search_rate(
                    backend,
                    encoding,
                    model,
                    population=population,
                    batch_size=batch,
                    generations=max(2, generations // 2),
                )
            finally:
                backend.close()
            ideal = scorers * batch / seconds
            print(f"   {scorers:7d}   {rate:13.0f}   {ideal:5.0f}   {rate / ideal:10.2f}")

    if "3" in sections:
        # 3. The driver's ceiling: copying mutators, instant scorers. Here the actors share
        # this machine's cores with the driver, so the wall-clock rate understates what a
        # driver with its own node does; the CPU time of the driver's process (its Ray
        # threads included) is what bounds it on a cluster, where actors run elsewhere.
        population, batch = 8000, 500
        config = RunConfig(population=population, batch_size=batch, workers=1, scorers=2, out=out)
        copying = Variation(copying_toolbox(encoding), seed=0)
        backend = RayBackend(config, copying, model, scorer_actor=InstantScorer)
        try:
            wall, per_cpu = search_rates(
                backend, encoding, model, population=population, batch_size=batch, generations=generations
            )
        finally:
            backend.close()
        print(f"\n3. Driver ceiling (MNIST genomes, batch {batch}, copying mutators, instant scorers)")
        print(f"   wall clock, actors on the same cores   {wall:9.0f} evaluations/s")
        print(f"   per CPU second of the driver process   {per_cpu:9.0f} evaluations/s  (the ceiling)")
        print(
            f"   GPU scorers one driver can feed        {per_cpu / args.gpu_scorer_rate:9.0f}   "
            f"(ceiling / {args.gpu_scorer_rate:.0f} evaluations/s per GPU scorer; target >= 100)"
        )

    if "4" in sections:
        traffic(args.traffic_model, out, generations)
    shutdown_ray()


if __name__ == "__main__":
    sys.exit(run_command(main, program="bench_ray.py"))
