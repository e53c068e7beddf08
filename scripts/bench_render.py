"""Benchmark: CPPN images/s of the CPU renderer and of the Triton renderer (issue 30).

Genomes: ``--batch`` random CPPNs after ``--mutations`` rounds of the numpy mutation (hidden
nodes as in a search), rendered at ``--size`` pixels. Rows, all measured in this run:

* ``torch renderer, cpu``: :meth:`CPPNEncoding.render` on the CPU (always);
* on CUDA: the same renderer on the GPU (``render(genomes, "cuda")``, today's GPU path), and
  :func:`render_on_device` from genomes already on the GPU (compile step and kernel, colour
  conversion fused), and the kernel without the fused conversion followed by torch's conversion
  (what fusing saves), with the largest difference from the CPU renderer's images, and the
  compile step alone, called and replayed from a CUDA graph (as ``render_on_device`` runs it);
* ``--sweep``: the Triton renderer for several pixel blocks, warps and programs per SM.

The issue's target is >= 170,000 images/s on an H100 at 224 px (5x the compiled scorer).
On a machine without CUDA only the CPU row runs: the Triton renderer needs CUDA (on the CPU it
runs in Triton's interpreter, for tests only).

    python scripts/bench_render.py [--batch 400] [--mutations 30] [--size 224] [--seconds 3] [--sweep]
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable

import numpy as np
import torch

from fooling.encodings import CPPNEncoding, TensorGenomes, cppn_triton, render_on_device
from fooling.encodings.cppn import COLOR_CONVERSIONS


def rate(render: Callable[[], torch.Tensor], count: int, device: torch.device, seconds: float) -> float:
    """Images/s of ``render`` (``count`` images a call), after one warm-up call (compilation)."""
    render()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        render()
        done += count
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=400)
    parser.add_argument("--mutations", type=int, default=30)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--outputs", type=int, choices=(1, 3), default=3)
    parser.add_argument("--color-space", default="hsv", choices=("rgb", *COLOR_CONVERSIONS))
    parser.add_argument("--coordinates", default="unit", choices=("unit", "pixel"))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--cpu-seconds", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", action="store_true", help="try several blocks, warps and programs per SM")
    args = parser.parse_args()

    encoding = CPPNEncoding(outputs=args.outputs, height=args.size, width=args.size,
                            color_space=args.color_space, coordinates=args.coordinates)  # fmt: skip
    rng = np.random.default_rng(args.seed)
    genomes = encoding.random(args.batch, rng)
    for _ in range(args.mutations):
        genomes = encoding.mutate(genomes, rng)
    hidden = genomes.node_used[:, 4 + args.outputs :].sum(axis=1)
    connections = genomes.edge_used.sum(axis=1)
    print(f"{args.batch} CPPNs after {args.mutations} mutations, {args.size} px, {args.outputs} outputs "
          f"({args.color_space}, {args.coordinates}): hidden nodes mean {hidden.mean():.1f}, "
          f"max {hidden.max()}, connections mean {connections.mean():.1f}")  # fmt: skip

    cpu = torch.device("cpu")
    cpu_rate = rate(lambda: encoding.render(genomes), args.batch, cpu, args.cpu_seconds)
    print(f"torch renderer, cpu ({torch.get_num_threads()} threads): {cpu_rate:,.0f} images/s")
    if not torch.cuda.is_available() or not cppn_triton.available("cuda"):
        print("no CUDA device (or no triton): the Triton renderer needs CUDA; only the CPU row was measured")
        return

    device = torch.device("cuda")
    versions = f"triton {cppn_triton.triton.__version__}, torch {torch.__version__}"
    print(f"device: {torch.cuda.get_device_name(device)}; {versions}")
    gpu_torch = rate(lambda: encoding.render(genomes, device), args.batch, device, args.seconds)
    print(f"torch renderer, cuda: {gpu_torch:,.0f} images/s")
    on_device = TensorGenomes.from_host(genomes, device)
    fused = rate(lambda: render_on_device(encoding, on_device), args.batch, device, args.seconds)
    print(f"triton renderer (compile + kernel, conversion fused): {fused:,.0f} images/s "
          f"(target >= 170,000 on an H100: {'met' if fused >= 170_000 else 'not met'})")  # fmt: skip
    images = render_on_device(encoding, on_device)
    reference = encoding.render(genomes.take(slice(0, 32)))
    print(f"largest difference from the CPU renderer (first 32 images): "
          f"{(images[:32].cpu() - reference).abs().max().item():.2e}")  # fmt: skip
    again = render_on_device(encoding, on_device)
    print(f"bit-identical on a second render: {torch.equal(images, again)}")
    if args.outputs == 3 and args.color_space != "rgb":
        plain = CPPNEncoding(outputs=3, height=args.size, width=args.size, color_space="rgb",
                             coordinates=args.coordinates)  # fmt: skip
        convert = COLOR_CONVERSIONS[args.color_space]
        separate = rate(lambda: convert(render_on_device(plain, on_device)), args.batch, device, args.seconds)
        print(f"triton kernel, then torch's {args.color_space} conversion: {separate:,.0f} images/s")
    program = cppn_triton.compile_on_device(encoding, on_device)
    compile_rate = rate(
        lambda: cppn_triton.compile_on_device(encoding, on_device), args.batch, device, args.seconds
    )
    graphed_rate = rate(
        lambda: cppn_triton.compile_graphed(encoding, on_device), args.batch, device, args.seconds
    )
    print(f"compile step alone: {compile_rate:,.0f} genomes/s, replayed from a CUDA graph (as the renderer "
          f"runs it) {graphed_rate:,.0f} ({int(program.count.max())} positions at most)")  # fmt: skip
    if args.sweep:
        defaults = (cppn_triton.BLOCK, cppn_triton.NUM_WARPS, cppn_triton.PROGRAMS_PER_SM)
        for block, warps, per_sm in itertools.product((128, 256, 512, 1024), (4, 8), (4, 8, 16)):
            if block < 32 * warps:  # fewer pixels than threads
                continue
            cppn_triton.BLOCK, cppn_triton.NUM_WARPS, cppn_triton.PROGRAMS_PER_SM = block, warps, per_sm
            swept = rate(lambda: render_on_device(encoding, on_device), args.batch, device, args.seconds / 2)
            print(f"  block {block:5d}, {warps} warps, {per_sm:2d} programs/SM: {swept:,.0f} images/s")
        cppn_triton.BLOCK, cppn_triton.NUM_WARPS, cppn_triton.PROGRAMS_PER_SM = defaults


if __name__ == "__main__":
    main()
