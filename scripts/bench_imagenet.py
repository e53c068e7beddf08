"""Benchmark: ImageNet scoring engines, CPPN rendering and end-to-end evaluations/s, in one run.

Prints raw throughput of torch eager and of ONNX Runtime (the practical CPU limit), the
CPPN renderer's images/s, and end-to-end ``evolve`` evaluations/s for the CPPN and direct
encodings with the default engine, with the ratios the speed targets are stated in:

* raw throughput of the default CPU engine >= 4x torch eager;
* end-to-end CPPN evaluations/s >= 0.6 of raw ONNX Runtime throughput;
* end-to-end direct evaluations/s >= 0.8 of raw ONNX Runtime throughput.

All figures come from the same process, so a busy machine affects both sides of a ratio.
On a GPU pass ``--device cuda --batch-size 256`` (torch with AMP and channels_last).

    python scripts/bench_imagenet.py [--model imagenet-lite0] [--batch-size 32] [--population 128]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import numpy as np
import torch

from fooling.evo.config import RunConfig
from fooling.evo.evaluation import Evaluator, make_encoding
from fooling.evo.run import evolve
from fooling.fitness import Scorer, load_model, pick_device
from fooling.fitness.engine import resolve_engine, scoring_threads


def timed(function, seconds: float) -> tuple[int, float]:
    """Call ``function`` (returning an item count) until ``seconds`` pass; (items, elapsed)."""
    function()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        done += function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return done, time.perf_counter() - started


def raw_rate(scorer: Scorer, images: torch.Tensor, seconds: float) -> float:
    """Images/s of ``scorer.score`` on ``images``."""
    count, elapsed = timed(lambda: (scorer.score(images), len(images))[1], seconds)
    return count / elapsed


def end_to_end(model: str, encoding: str, population: int, generations: int, device: str) -> float:
    """Evaluations/s of the generation loop of an ``evolve`` run (generation 0 left out)."""
    with tempfile.TemporaryDirectory() as out:
        config = RunConfig(model=model, encoding=encoding, population=population, generations=generations,
                           checkpoint_every=0, out=out, device=device)  # fmt: skip
        search = evolve(config, show_progress=False)
    loop = [r for r in search.logbook if r["gen"] > 0] or list(search.logbook)
    return sum(r["evals"] for r in loop) / sum(r["seconds"] for r in loop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="imagenet-lite0")
    parser.add_argument("--batch-size", type=int, default=32, help="raw scoring batch")
    parser.add_argument("--population", type=int, default=128, help="children per generation end to end")
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--no-overlap", action="store_true", help="render and score one after the other")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    Evaluator.OVERLAP = not args.no_overlap
    device = pick_device(args.device)
    model = load_model(args.model)
    default = resolve_engine("auto", device)
    engines = ["torch"] + (["onnxruntime"] if device.type == "cpu" else [])
    scorers = {name: Scorer(model, device=device, engine=name) for name in engines}
    size = scorers["torch"].image_size
    images = torch.rand(args.batch_size, 3, *size, device=device)
    print(f"{args.model} on {device}, {scoring_threads()} threads, batch {args.batch_size}, {size[0]} px")
    raw = {name: raw_rate(scorer, images, args.seconds) for name, scorer in scorers.items()}
    for name, rate in raw.items():
        print(f"raw {name:12}               {rate:9.1f} images/s")
    limit = raw.get("onnxruntime", raw["torch"])

    rng = np.random.default_rng(0)
    config = RunConfig(model=args.model, encoding="cppn")
    encoding = make_encoding(config, model.spec)
    genomes = encoding.random(args.batch_size, rng)
    for _ in range(30):  # CPPNs of a realistic size (about 17 nodes, 20 connections)
        genomes = encoding.mutate(genomes, rng)
    count, seconds = timed(lambda: len(encoding.render(genomes, device)), args.seconds / 2)
    print(f"render cppn (30 mutations)         {count / seconds:9.1f} images/s")

    results = {}
    for name in ("cppn", "direct"):
        results[name] = end_to_end(args.model, name, args.population, args.generations, str(device))
        print(f"end-to-end {name:6} ({default}) {results[name]:9.1f} evaluations/s")
    targets = [
        (f"raw {default} / raw torch eager", raw[default] / raw["torch"], 4.0),
        ("end-to-end cppn / raw limit", results["cppn"] / limit, 0.6),
        ("end-to-end direct / raw limit", results["direct"] / limit, 0.8),
    ]
    for label, ratio, target in targets:
        print(f"{label:34} {ratio:6.2f}   target >= {target:g}: {'met' if ratio >= target else 'NOT met'}")


if __name__ == "__main__":
    main()
