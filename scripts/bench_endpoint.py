"""Benchmark: the MNIST LeNet behind a real Open Inference Protocol server (MLServer), in one run.

Starts Seldon MLServer on 127.0.0.1 with the tests' runtime (tests/fitness/endpoint: the LeNet
exported to ONNX, ONNX Runtime with one thread), then measures with the same client settings
(``--concurrency``, ``--request-batch``):

* the server alone: random images sent straight through the client, images/s;
* through the search: ``evolve`` evaluations/s (population ``--population``), and their ratio
  (the issue's target: >= 0.7 at concurrency 8, batch 50);
* with ``--target``: the 200-generation MNIST search of ``make demo`` through the endpoint,
  with full probabilities and with each ``--top-k`` (default 1): the median confidence over
  the 10 digits, the classes >= 99.99%, and the queries spent; ``--init paper,multiscale``
  runs each of them with each first-generation draw (``RunConfig.init``).

    python scripts/bench_endpoint.py [--concurrency 8] [--request-batch 50] [--target [--top-k 1,3]]
        [--init paper,multiscale] [--skip-speed]

Needs the ``test`` extra (mlserver) and a trained ``mnist-lenet`` (``fooling train``).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fooling.encodings import GENOME_CLASSES
from fooling.evo.cli import run_command
from fooling.evo.cli.parsing import Parser, positive_int
from fooling.evo.config import RunConfig
from fooling.evo.run import evolve
from fooling.evo.store.checkpoint import read_latest_checkpoint
from fooling.fitness import load_model
from fooling.fitness.endpoint import EndpointSettings, configure_endpoints

# The server and its runtime are the tests' (a real MLServer process; nothing here is a stub).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fitness" / "endpoint"))
from oip_fixtures import MLServer  # noqa: E402


def _server_alone(url: str, images: int, rounds: int) -> float:
    """Best images/s of ``rounds`` rounds of ``images`` random images through the client."""
    network = load_model(url).network
    batch = np.random.default_rng(0).random((images, 1, 28, 28), dtype=np.float32)
    network.score_images(batch[:100])  # connections opened, the server warm
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        network.score_images(batch)
        best = max(best, images / (time.perf_counter() - started))
    network.close()
    return best


def _search(url: str, out: str, generations: int, population: int) -> tuple[float, object]:
    config = RunConfig(model=url, out=out, generations=generations, population=population, checkpoint_every=0)
    search = evolve(config, show_progress=False)
    records = list(search.logbook)[1:]  # generation 0 includes the start-up
    rate = sum(r["evals"] for r in records) / sum(r["seconds"] for r in records)
    return rate, read_latest_checkpoint(out, GENOME_CLASSES)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="bench_endpoint.py", description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=positive_int, default=8)
    parser.add_argument("--request-batch", type=positive_int, default=50)
    parser.add_argument("--population", type=positive_int, default=400)
    parser.add_argument("--generations", type=positive_int, default=6)
    parser.add_argument("--images", type=positive_int, default=4000)
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--target", action="store_true", help="also the 200-generation MNIST runs")
    parser.add_argument(
        "--top-k", default="1", help="the --target runs' top-k answers, comma-separated (default 1)"
    )
    parser.add_argument(
        "--init", default="paper", help="the --target runs' --init values, comma-separated (default paper)"
    )
    parser.add_argument("--skip-speed", action="store_true", help="only the --target runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    configure_endpoints(EndpointSettings(concurrency=args.concurrency, request_batch=args.request_batch))
    with tempfile.TemporaryDirectory() as folder:
        lenet = load_model("mnist-lenet")
        server = MLServer(Path(folder), lenet.network)
        try:
            url = f"{server.url}/v2/models/lenet"
            if not args.skip_speed:
                alone = _server_alone(url, args.images, args.rounds)
                searched, _ = _search(url, f"{folder}/speed", args.generations, args.population)
                print(
                    f"concurrency {args.concurrency}, batch {args.request_batch}: "
                    f"server alone {alone:.0f} images/s, "
                    f"through the search {searched:.0f} evaluations/s, ratio {searched / alone:.2f}"
                )
            if args.target:
                answers = [("full probabilities", url)]
                answers += [(f"--top-k {k}", f"{url}?top-k={k}") for k in args.top_k.split(",")]
                runs = [
                    (f"{name}, --init {init}", reference, init)
                    for init in args.init.split(",")
                    for name, reference in answers
                ]
                for number, (name, reference, init) in enumerate(runs):
                    started = time.perf_counter()
                    config = RunConfig(
                        model=reference, out=f"{folder}/target{number}", checkpoint_every=0, init=init
                    )
                    search = evolve(config, show_progress=False)
                    state = read_latest_checkpoint(config.out, GENOME_CLASSES)
                    fitness = np.where(state.archive.occupied, state.archive.fitness, 0.0)
                    print(
                        f"MNIST 200 generations x 200, seed 0, {name}: "
                        f"median {100 * np.median(fitness):.4f}%, "
                        f"{int((fitness >= 0.9999).sum())}/10 classes >= 99.99%, "
                        f"{len(state.archive)}/10 cells, "
                        f"{state.queries:,} queries, {time.perf_counter() - started:.0f} s"
                    )
                    del search
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(run_command(lambda: main(sys.argv[1:]), program="bench_endpoint.py"))
