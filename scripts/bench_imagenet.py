"""Benchmark: ImageNet classifier throughput, CPPN/direct rendering, end-to-end evaluations/s.

All figures come from one run, so the ratios (end-to-end over raw classifier throughput,
target >= 0.8) compare like with like. On a GPU it uses AMP and channels_last (the Scorer's
defaults there); pass ``--device cuda --batch-size 256`` or so.

    python scripts/bench_imagenet.py [--model imagenet-lite0] [--batch-size 32] [--generations 3]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import numpy as np
import torch

from fooling.evo.config import RunConfig
from fooling.evo.evaluation import make_encoding
from fooling.evo.run import evolve
from fooling.fitness import Scorer, load_model, pick_device


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="imagenet-lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = pick_device(args.device)
    model = load_model(args.model)
    scorer = Scorer(model, device=device)
    size = scorer.image_size
    images = torch.rand(args.batch_size, 3, *size, device=device)
    count, seconds = timed(lambda: (scorer.score(images), args.batch_size)[1], args.seconds)
    raw = count / seconds
    print(
        f"{args.model} on {device} ({torch.get_num_threads()} threads), batch {args.batch_size}, {size[0]}px"
    )
    print(f"raw classifier:         {raw:9.1f} images/s")

    rng = np.random.default_rng(0)
    results = {}
    for encoding_name in ("cppn", "direct"):
        config = RunConfig(model=args.model, encoding=encoding_name, population=args.batch_size)
        encoding = make_encoding(config, model.spec)
        genomes = encoding.random(args.batch_size, rng)
        for _ in range(30 if encoding_name == "cppn" else 0):  # CPPNs of a realistic size
            genomes = encoding.mutate(genomes, rng)
        count, seconds = timed(lambda e=encoding, g=genomes: len(e.render(g, device)), args.seconds / 2)
        print(f"render {encoding_name:6}          {count / seconds:9.1f} images/s")
        with tempfile.TemporaryDirectory() as out:
            config = RunConfig(model=args.model, encoding=encoding_name, population=args.batch_size,
                               generations=args.generations, checkpoint_every=0, out=out,
                               device=str(device))  # fmt: skip
            search = evolve(config, show_progress=False)
        # Generation 0 renders random genomes; later ones carry the whole loop.
        loop = [r for r in search.logbook if r["gen"] > 0] or list(search.logbook)
        rate = sum(r["evals"] for r in loop) / sum(r["seconds"] for r in loop)
        results[encoding_name] = rate
        print(f"end-to-end {encoding_name:6}      {rate:9.1f} evaluations/s   ratio {rate / raw:.2f}")
    verdict = all(rate / raw >= 0.8 for rate in results.values())
    print(f"target: end-to-end >= 0.8 of raw classifier throughput -> {'met' if verdict else 'NOT met'}")


if __name__ == "__main__":
    main()
