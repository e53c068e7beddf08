"""Benchmark: variation of a generation's children with numpy, with torch on the CPU, and on CUDA.

Times, for ``--population`` children: direct ImageNet mutation (3x224x224 genes, rate 0.1,
eta 15) and SBX, and CPPN mutation (weights, activations, the four structural mutations)
of parents grown by 30 mutations, and the CPPN renderer's compile step. numpy runs the
encodings' ``mutate``/``mate``/``compile``; torch runs ``mutate_tensor``/``mate_tensor`` and
the Triton renderer's ``compile_on_device`` on CPU tensors and, when a CUDA device exists, on
it (synchronised before the clock stops), and there also as a search on the GPU runs the CPPN
ones: replayed from a CUDA graph (``cuda graph``). Each figure is the median of ``--repeats`` rounds,
the three variants interleaved so that load on the machine hits each alike; the ratio is
numpy's time over torch's (above 1: torch is faster). The process keeps freed memory for
reuse, as ``fooling`` runs do (:func:`fooling.fitness.engine.keep_freed_memory`).

    python scripts/bench_operators.py [--population 400] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from fooling.encodings import CPPNEncoding, DirectEncoding, TensorGenomes
from fooling.encodings.cppn_triton import compile_graphed, compile_on_device
from fooling.encodings.graphs import graphed_mutation
from fooling.evo.cli import run_command
from fooling.evo.cli.parsing import Parser, positive_int
from fooling.fitness.engine import keep_freed_memory


def timed(function: Callable[[], object], device: torch.device | None) -> float:
    """Seconds of one call of ``function`` (waiting for ``device``'s queued work)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    function()
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def measure(
    cases: dict[str, tuple[Callable[[], object], torch.device | None]], repeats: int
) -> dict[str, float]:
    """Median seconds of each case over ``repeats`` interleaved rounds, after one warm-up call each."""
    for function, device in cases.values():
        timed(function, device)
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, (function, device) in cases.items():
            seconds[name].append(timed(function, device))
    return {name: statistics.median(values) for name, values in seconds.items()}


def devices() -> list[torch.device]:
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def direct_cases(population: int) -> dict[str, dict[str, tuple[Callable[[], object], torch.device | None]]]:
    """Per operation, per variant: the call to time."""
    encoding = DirectEncoding(channels=3, height=224, width=224)
    rng = np.random.default_rng(0)
    parents, others = encoding.random(population, rng), encoding.random(population, rng)
    mutate = {"numpy": (lambda: encoding.mutate(parents, rng), None)}
    mate = {"numpy": (lambda: encoding.mate(parents, others, rng), None)}
    for device in devices():
        first, second = TensorGenomes.from_host(parents, device), TensorGenomes.from_host(others, device)
        random = torch.Generator(device=device).manual_seed(0)
        mutate[f"torch {device.type}"] = (lambda f=first, r=random: encoding.mutate_tensor(f, r), device)
        mate[f"torch {device.type}"] = (
            lambda f=first, s=second, r=random: encoding.mate_tensor(f, s, r),
            device,
        )
    return {"direct mutate": mutate, "direct mate (SBX)": mate}


def cppn_cases(population: int) -> dict[str, dict[str, tuple[Callable[[], object], torch.device | None]]]:
    encoding = CPPNEncoding(outputs=3, height=224, width=224)
    rng = np.random.default_rng(0)
    parents = encoding.random(population, rng)
    for _ in range(30):
        parents = encoding.mutate(parents, rng)
    mutate = {"numpy": (lambda: encoding.mutate(parents, rng), None)}
    compile_step = {"numpy": (lambda: encoding.compile(parents), None)}
    for device in devices():
        genomes = TensorGenomes.from_host(parents, device)
        random = torch.Generator(device=device).manual_seed(0)
        mutate[f"torch {device.type}"] = (lambda g=genomes, r=random: encoding.mutate_tensor(g, r), device)
        compile_step[f"torch {device.type}"] = (lambda g=genomes: compile_on_device(encoding, g), device)
        if device.type == "cuda":  # replayed from a CUDA graph, as a search on the GPU runs them
            mutation = graphed_mutation(encoding)
            mutate["cuda graph"] = (lambda g=genomes, r=random, m=mutation: m(g.fields, r), device)
            compile_step["cuda graph"] = (lambda g=genomes: compile_graphed(encoding, g), device)
    return {"cppn mutate": mutate, "cppn compile step": compile_step}


def main() -> None:
    parser = Parser(prog="bench_operators.py", description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=positive_int, default=400, help="children per generation")
    parser.add_argument("--repeats", type=positive_int, default=5, help="rounds of each measurement (median)")
    parser.add_argument(
        "--threads", type=positive_int, default=None, help="torch (and numpy operator) threads"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as a run does: large temporaries are reused, not page-faulted in afresh
    names = ", ".join(
        f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f"{device}"
        for device in devices()
    )
    print(f"devices: {names}; {torch.get_num_threads()} CPU threads; population {args.population}")
    print(f"medians of {args.repeats} rounds, milliseconds (ratio: numpy / torch)")
    for build in (direct_cases, cppn_cases):
        for operation, cases in build(args.population).items():
            seconds = measure(cases, args.repeats)
            numpy_seconds = seconds["numpy"]
            row = "  ".join(
                f"{name} {value * 1e3:9.2f}"
                + ("" if name == "numpy" else f" ({numpy_seconds / value:5.2f}x)")
                for name, value in seconds.items()
            )
            print(f"{operation:18s} {row}")


if __name__ == "__main__":
    sys.exit(run_command(main, program="bench_operators.py"))
