"""Benchmark: targeted perturbations of the bundled photos, ours next to torchattacks' PGD.

For each photo and each of ``--targets`` random target classes: success (target
probability >= 0.99 within ``--steps``), steps taken, L2 / L-inf of the change and
images/s. torchattacks' targeted PGD runs at the same budget (eps, step size, steps) in
the same run when it is importable; it pins an old ``requests`` that clashes with Ray, so
install it without its dependencies: ``pip install --no-deps torchattacks``.

    python scripts/bench_perturb.py [--photos chelsea coffee astronaut rocket] [--targets 20] [--steps 300]
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
import torch.nn.functional as F

from fooling.evo.cli import run_command
from fooling.evo.cli.parsing import Parser, non_negative_int, number, positive_int
from fooling.fitness import Scorer, load_model
from fooling.fitness.engine import keep_freed_memory
from fooling.fitness.gradient import perturb
from fooling.fitness.images import BUNDLED_PHOTOS, load_images
from fooling.fitness.limits import check_device


def ours(model, images, targets, args) -> dict:
    started = time.perf_counter()
    result = perturb(model, images, targets, steps=args.steps, eps=args.eps, lr=args.eps / 4,
                     threshold=0.99, max_frames=2, device=args.device)  # fmt: skip
    seconds = time.perf_counter() - started
    change = result.change()
    return {
        "success": result.success.float().mean().item(),
        "steps": statistics.median(result.steps.tolist()),
        "l2": statistics.median(change["l2"].tolist()),
        "linf": statistics.median(change["linf"].tolist()),
        "images_s": len(images) / seconds,
    }


def library(model, images, targets, args) -> dict | None:
    try:
        # Optional heavy dependency: torchattacks pins an old requests, so it may be absent.
        import torchattacks
    except ImportError:
        return None
    scorer = Scorer(model, device=args.device, amp=False)

    class Wrapped(torch.nn.Module):
        def forward(self, x):
            return scorer.logits(x)

    attack = torchattacks.PGD(
        Wrapped(), eps=args.eps, alpha=args.eps / 4, steps=args.steps, random_start=False
    )
    attack.set_mode_targeted_by_label(quiet=True)
    images = images.to(scorer.device)
    started = time.perf_counter()
    adversarial = attack(images, targets.to(scorer.device))
    seconds = time.perf_counter() - started
    with torch.no_grad():
        probabilities = F.softmax(scorer.logits(adversarial), dim=1)
    delta = (adversarial - images).flatten(1)
    return {
        "success": (probabilities.gather(1, targets[:, None].to(scorer.device))[:, 0] >= 0.99)
        .float()
        .mean()
        .item(),
        "steps": args.steps,  # PGD always runs every step
        "l2": statistics.median(delta.norm(dim=1).tolist()),
        "linf": statistics.median(delta.abs().amax(1).tolist()),
        "images_s": len(images) / seconds,
    }


def main() -> None:
    parser = Parser(prog="bench_perturb.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="imagenet-lite0")
    parser.add_argument("--photos", nargs="+", default=list(BUNDLED_PHOTOS))
    parser.add_argument("--targets", type=positive_int, default=20)
    parser.add_argument("--steps", type=positive_int, default=300)
    parser.add_argument("--eps", type=number, default=8 / 255)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    check_device(args.device)  # before torch's own multi-line error
    keep_freed_memory()  # as the fooling command does, in every figure of the run
    model = load_model(args.model)
    size = model.spec.input_size
    photos = torch.cat([load_images(name, model.spec.channels, size)[0] for name in args.photos])
    generator = torch.Generator().manual_seed(args.seed)
    images = photos.repeat_interleave(args.targets, dim=0)
    targets = torch.randint(0, model.spec.num_classes, (len(images),), generator=generator)
    labels = torch.from_numpy(Scorer(model, device="cpu").score(images)).argmax(1)
    targets = torch.where(targets == labels, (targets + 1) % model.spec.num_classes, targets)
    print(f"{args.model}: {len(args.photos)} photos x {args.targets} targets, eps {255 * args.eps:.1f}/255, "
          f"step eps/4, at most {args.steps} steps\n")  # fmt: skip
    print("| method | success (p >= 0.99) | median steps | median L2 | median L-inf | images/s |")
    print("|---|---|---|---|---|---|")
    rows = {"fooling.perturb": ours(model, images, targets, args)}
    other = library(model, images, targets, args)
    if other is not None:
        rows["torchattacks.PGD"] = other
    for name, row in rows.items():
        print(f"| {name} | {100 * row['success']:.1f}% | {row['steps']:.0f} | {row['l2']:.3f} | "
              f"{255 * row['linf']:.2f}/255 | {row['images_s']:.2f} |")  # fmt: skip
    if other is None:
        print("\n(torchattacks not importable: pip install --no-deps torchattacks to compare)")
    ratio = rows["fooling.perturb"]["images_s"] / other["images_s"] if other else float("nan")
    verdict = "met" if rows["fooling.perturb"]["success"] >= 0.95 else "NOT met"
    print(f"\ntarget: >= 95% success -> {verdict}; speed vs torchattacks: {ratio:.2f}x")


if __name__ == "__main__":
    sys.exit(run_command(main, program="bench_perturb.py"))
