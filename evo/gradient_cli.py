"""``fooling perturb`` and ``fooling ascent``: the gradient methods on the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fooling.encodings import DirectGenomes
from fooling.fitness import resolve_name
from fooling.fitness.animation import animation_frames, save_gif
from fooling.fitness.gradient import ascent, perturb
from fooling.fitness.images import BUNDLED_PHOTOS, load_images

from .archive import ClassArchive
from .checkpoint import Checkpoint, write_checkpoint
from .cli import UsageError, name_list, number, positive_int
from .config import RunConfig
from .evaluation import make_encoding
from .report import write_report
from .run import load_or_train, render_uint8


def _fresh_folder(out: str) -> Path:
    """``out`` as a new or empty folder; refuse one that holds files (nothing is overwritten)."""
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"--out {out} already exists and is not empty; choose another folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _save_png(image: torch.Tensor, path: Path) -> None:
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)


def cmd_perturb(args: argparse.Namespace) -> int:
    if not args.eps > 0:
        raise UsageError(f"--eps must be positive, not {args.eps}")
    if args.lr is not None and not args.lr > 0:
        raise UsageError(f"--lr must be positive, not {args.lr}")
    if not 0 < args.threshold <= 1:
        raise UsageError(f"--threshold must be in (0, 1], not {args.threshold}")
    if args.untargeted == (args.target is not None):
        raise UsageError("give either --target CLASS or --untargeted")
    model = load_or_train(args.model)
    names = model.spec.class_names
    target = None if args.untargeted else names.index(resolve_name(args.target, names, "class"))
    images, image_names = load_images(args.image, model.spec.channels, model.spec.input_size)
    out = _fresh_folder(args.out)
    result = perturb(model, images, target, steps=args.steps, eps=args.eps, lr=args.lr,
                     threshold=args.threshold, device=args.device)  # fmt: skip
    change = result.change()
    final = result.history.probabilities[-1]
    first = result.history.probabilities[0]
    for row, name in enumerate(image_names):
        folder = out if len(image_names) == 1 else out / name
        folder.mkdir(exist_ok=True)
        _save_png(result.images[row].cpu(), folder / "final.png")
        delta = (result.images[row] - result.original[row]).cpu()
        _save_png(0.5 + delta / (2 * args.eps), folder / "perturbation.png")  # amplified to the full range
        source = int(result.source[row])
        pictures = animation_frames(result.history.frames[:, row], result.history.frame_steps.tolist(),
                                    result.history.probabilities[:, row], result.history.loss[:, row], names,
                                    source=source, target=target)  # fmt: skip
        save_gif(pictures, folder / "animation.gif")
        pictures[-1].save(folder / "summary.png")
        now = int(final[row].argmax())
        goal = target if target is not None else now
        before, after = first[row], final[row]
        print(f"{name}: {names[source]} {100 * float(before[source]):.2f}% -> "
              f"{100 * float(after[source]):.2f}%; {names[goal]} {100 * float(before[goal]):.2f}% -> "
              f"{100 * float(after[goal]):.2f}%; {'success' if result.success[row] else 'FAILED'} in "
              f"{int(result.steps[row])} steps; L2 {float(change['l2'][row]):.3f}, "
              f"L-inf {255 * float(change['linf'][row]):.2f}/255, PSNR {float(change['psnr'][row]):.1f} dB "
              f"-> {folder}")  # fmt: skip
    return 0


def cmd_ascent(args: argparse.Namespace) -> int:
    if not args.lr > 0:
        raise UsageError(f"--lr must be positive, not {args.lr}")
    model = load_or_train(args.model)
    names = model.spec.class_names
    chosen = [resolve_name(name, names, "class") for name in args.classes] if args.classes else list(names)
    classes = torch.tensor([names.index(name) for name in chosen])
    out = _fresh_folder(args.out)
    images, history = ascent(model, classes, steps=args.steps, lr=args.lr, start=args.start,
                             seed=args.seed, device=args.device)  # fmt: skip
    probabilities = history.probabilities[-1].numpy()
    # Stored as a run of the direct encoding, so `fooling report` and `fooling transfer`
    # read ascent images exactly like evolved ones.
    config = RunConfig(model=args.model, encoding="direct", generations=1, population=len(chosen),
                       seed=args.seed, classes=None if args.classes is None else chosen, out=str(out),
                       checkpoint_every=0)  # fmt: skip
    archive = ClassArchive(chosen)
    genomes = DirectGenomes(images.cpu().numpy().astype(np.float32))
    cells = np.arange(len(chosen))
    archive.genomes = genomes
    archive.fitness[:] = probabilities[cells, classes.numpy()]
    archive.occupied[:] = True
    archive.individual_id[:] = cells
    archive.birth_generation[:] = 0
    encoding = make_encoding(config, model.spec)
    state = Checkpoint(config, 0, len(chosen), args.model, model.weights_hash, archive)
    write_checkpoint(str(out), state, render_uint8(encoding, genomes))
    write_report(str(out), max_tiles=args.tiles)
    reached = int((archive.fitness >= 0.9999).sum())
    print(
        f"{out}: median confidence {100 * float(np.median(archive.fitness)):.2f}%, "
        f"{reached}/{len(chosen)} classes >= 99.99% after {args.steps} steps; grid in {out / 'elites.png'}"
    )
    return 0


def register(commands) -> None:
    """Add ``perturb`` and ``ascent`` to the ``fooling`` command."""
    perturb_parser = commands.add_parser(
        "perturb", help="push real photos towards a class (PGD, L-inf budget)"
    )
    perturb_parser.add_argument("--model", default="imagenet-lite0")
    perturb_parser.add_argument(
        "--image", required=True, help=f"image file, folder of images, or one of {', '.join(BUNDLED_PHOTOS)}"
    )
    perturb_parser.add_argument("--target", help="class to push towards (e.g. jellyfish)")
    perturb_parser.add_argument("--untargeted", action="store_true", help="any wrong class, smallest change")
    perturb_parser.add_argument("--steps", type=positive_int, default=300)
    perturb_parser.add_argument("--eps", type=number, default=8 / 255, help="L-inf budget (default 8/255)")
    perturb_parser.add_argument("--lr", type=number, default=None, help="step size (default eps/4)")
    perturb_parser.add_argument(
        "--threshold", type=number, default=0.99, help="target probability to stop at"
    )
    perturb_parser.add_argument("--device", default=None)
    perturb_parser.add_argument("--out", required=True)
    perturb_parser.set_defaults(func=cmd_perturb)

    ascent_parser = commands.add_parser("ascent", help="gradient-ascent fooling images, one per class")
    ascent_parser.add_argument("--model", default="mnist-lenet")
    ascent_parser.add_argument(
        "--classes", type=name_list, default=None, help="comma-separated names or 'all'"
    )
    ascent_parser.add_argument("--steps", type=positive_int, default=300)
    ascent_parser.add_argument("--lr", type=number, default=0.05)
    ascent_parser.add_argument("--start", choices=("noise", "mean"), default="noise")
    ascent_parser.add_argument("--seed", type=int, default=0)
    ascent_parser.add_argument("--tiles", type=positive_int, default=40)
    ascent_parser.add_argument("--device", default=None)
    ascent_parser.add_argument("--out", required=True)
    ascent_parser.set_defaults(func=cmd_ascent)
