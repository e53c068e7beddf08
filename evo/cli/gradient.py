"""``fooling perturb`` and ``fooling ascent``: the gradient methods on the command line."""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from fooling.encodings import DirectGenomes
from fooling.evo.archive import ClassArchive
from fooling.evo.cli.parsing import UsageError, integer_in, name_list, non_negative_int, number, positive_int
from fooling.evo.config import RunConfig
from fooling.evo.evaluation import resolve_classes
from fooling.evo.models import load_or_train
from fooling.evo.report.animation import animation_frames, save_gif
from fooling.evo.report.figures import write_report
from fooling.evo.run import save_checkpoint
from fooling.evo.store.location import is_uri, join, write_bytes
from fooling.evo.store.runfolder import claimed_run_folder
from fooling.fitness import class_index
from fooling.fitness.endpoint import is_endpoint
from fooling.fitness.gradient import MAX_STEP_SIZE, MAX_STEPS, ascent, perturb
from fooling.fitness.images import BUNDLED_PHOTOS, load_model_images
from fooling.fitness.limits import check_device, check_seed, normalise_device
from fooling.fitness.sources import require_gradients


@contextlib.contextmanager
def _fresh_folder(out: str, kind: str) -> Iterator[Path]:
    """``out`` as a new or empty folder, locked while the command writes it.

    Refuses a folder that holds files (nothing is overwritten) or that another process
    uses; a folder this command created is removed again if it fails before writing.

    A storage URI (``s3://``, ``gs://``, ...) gets the same checks; the command writes into
    a local staging folder whose files are uploaded to ``out`` when it succeeds.
    """
    path = Path(out)
    if not is_uri(out) and path.exists() and not path.is_dir():
        raise UsageError(f"--out {out} is a file; choose a folder")

    def refused(error: Exception) -> UsageError:
        return UsageError(f"--out {out} already exists and is not empty; choose another folder")

    with claimed_run_folder(out, kind, refused=refused):
        if not is_uri(out):
            yield path
            return
        with tempfile.TemporaryDirectory(prefix="fooling-out-") as staging:
            yield Path(staging)
            for file in sorted(Path(staging).rglob("*")):
                if file.is_file():
                    write_bytes(join(out, file.relative_to(staging).as_posix()), file.read_bytes())


def _shown(location: str, local: Path, path: Path) -> str:
    """How to name ``path``, written under ``local``, to the user: inside ``location`` when a URI."""
    if not is_uri(location):
        return str(path)
    relative = path.relative_to(local).as_posix()
    return location if relative == "." else join(location, relative)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _png(image: torch.Tensor) -> bytes:
    """PNG bytes of ``image`` ``(channels, height, width)`` in [0, 1]."""
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    return _encoded(lambda stream: picture.save(stream, format="PNG"))


def _encoded(save: Callable[[io.BytesIO], object]) -> bytes:
    """The bytes ``save`` writes to the stream it is given."""
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue()


def _refuse_endpoint(model: str, command: str) -> None:
    """Refuse a model behind an endpoint before any request: it gives scores, never gradients."""
    if is_endpoint(model):
        raise UsageError(
            f"{command} follows gradients, and a model behind an endpoint answers scores only: "
            "use evolve, audit or transfer --to with it (black-box search)"
        )


def cmd_perturb(args: argparse.Namespace) -> int:
    """Exit code 0 when every image reached its goal, 1 when an attack failed."""
    _refuse_endpoint(args.model, "perturb")
    _check_step_size("--eps", args.eps)
    if args.lr is not None:
        _check_step_size("--lr", args.lr)
    if not 0 < args.threshold < 1:
        raise UsageError(
            f"--threshold must be in (0, 1) (a probability of 1 is never reached), not {args.threshold}"
        )
    if args.untargeted == (args.target is not None):
        raise UsageError("give either --target CLASS or --untargeted")
    check_device(args.device)
    model = load_or_train(args.model)
    require_gradients(model, "perturb")
    names = model.spec.class_names
    target = None if args.untargeted else class_index(args.target, names)
    images, image_names = load_model_images(args.image, model.spec)
    with _fresh_folder(args.out, "perturb") as out:
        return _perturb_into(out, args, model, images, image_names, target)


def _perturb_into(out: Path, args: argparse.Namespace, model, images, image_names: list[str], target) -> int:
    names = model.spec.class_names
    result = perturb(model, images, target, steps=args.steps, eps=args.eps, lr=args.lr,
                     threshold=args.threshold, device=normalise_device(args.device),
                     show_progress=not args.no_progress)  # fmt: skip
    change = result.change()
    final = result.history.probabilities[-1]
    first = result.history.probabilities[0]
    rows = tqdm(list(enumerate(image_names)), desc="animations", unit="image",
                disable=args.no_progress or len(image_names) == 1)  # fmt: skip
    for row, name in rows:
        # ``name`` is one safe component (fitness.images.safe_name); each file is written to a new
        # temporary file renamed over its name, never through a link planted in ``out``.
        folder = out if len(image_names) == 1 else out / name
        delta = (result.images[row] - result.original[row]).cpu()
        source = int(result.source[row])
        pictures = animation_frames(result.history.frames[:, row], result.history.frame_steps.tolist(),
                                    result.history.probabilities[:, row], result.history.loss[:, row], names,
                                    source=source, target=target)  # fmt: skip
        files = {
            "final.png": _png(result.images[row].cpu()),
            "perturbation.png": _png(0.5 + delta / (2 * args.eps)),  # amplified to the full range
            "animation.gif": _encoded(lambda stream, pictures=pictures: save_gif(pictures, stream)),
            "summary.png": _encoded(lambda stream, picture=pictures[-1]: picture.save(stream, format="PNG")),
        }
        for file_name, data in files.items():
            write_bytes(str(folder / file_name), data, root=str(out))
        now = int(final[row].argmax())
        goal = target if target is not None else now
        before, after = first[row], final[row]
        tqdm.write(f"{name}: {names[source]} {100 * float(before[source]):.2f}% -> "
              f"{100 * float(after[source]):.2f}%; {names[goal]} {100 * float(before[goal]):.2f}% -> "
              f"{100 * float(after[goal]):.2f}%; {'success' if result.success[row] else 'FAILED'} in "
              f"{_plural(int(result.steps[row]), 'step')}; L2 {float(change['l2'][row]):.3f}, "
              f"L-inf {255 * float(change['linf'][row]):.2f}/255, PSNR {float(change['psnr'][row]):.1f} dB "
              f"-> {_shown(args.out, out, folder)}", file=sys.stdout)  # fmt: skip
    failed = int((~result.success).sum())
    if failed:
        print(f"fooling: {failed} of {len(image_names)} attack(s) failed", file=sys.stderr)
        return 1
    return 0


def cmd_ascent(args: argparse.Namespace) -> int:
    """``fooling ascent``: gradient ascent per class, saved as a direct-encoding run in ``--out``.

    Args:
        args: the parsed command line (``model``, ``classes``, ``steps``, ``lr``, ``start``,
            ``seed``, ``device``, ``out``, ``tiles``).

    Returns:
        The exit code, 0.

    Raises:
        UsageError: ``--lr`` is not positive, or ``--out`` is not a new or empty folder.
        ValueError: a seed out of range, a device this machine cannot use, or a class given
            twice.
        UnknownNameError: a class the model does not have.
        GradientUnavailableError: the model is scored without gradients (ONNX Runtime).
    """
    _refuse_endpoint(args.model, "ascent")
    _check_step_size("--lr", args.lr)
    check_seed(args.seed)
    check_device(args.device)
    model = load_or_train(args.model)
    require_gradients(model, "ascent")
    names = model.spec.class_names
    ids = resolve_classes(args.classes, names) if args.classes else list(range(len(names)))
    chosen = [names[i] for i in ids]
    classes = torch.tensor(ids)
    with _fresh_folder(args.out, "ascent") as out:
        return _ascent_into(out, args, model, chosen, classes)


def _ascent_into(out: Path, args: argparse.Namespace, model, chosen: list[str], classes: torch.Tensor) -> int:
    images, history = ascent(model, classes, steps=args.steps, lr=args.lr, start=args.start,
                             seed=args.seed, device=normalise_device(args.device))  # fmt: skip
    probabilities = history.probabilities[-1].numpy()
    # Stored as a run of the direct encoding, so `fooling report` and `fooling transfer`
    # read ascent images exactly like evolved ones.
    config = RunConfig(model=args.model, encoding="direct", generations=1, population=len(chosen),
                       seed=args.seed, classes=args.classes,
                       out=args.out if is_uri(args.out) else str(out),
                       checkpoint_every=0)  # fmt: skip
    archive = ClassArchive(chosen)
    genomes = DirectGenomes(images.cpu().numpy().astype(np.float32))
    cells = np.arange(len(chosen))
    archive.genomes = genomes
    archive.fitness[:] = probabilities[cells, classes.numpy()]
    archive.occupied[:] = True
    archive.individual_id[:] = cells
    archive.birth_generation[:] = 0
    save_checkpoint(config, model, archive, generation=0, next_id=len(chosen), out=str(out))
    write_report(str(out), max_tiles=args.tiles)
    reached = int((archive.fitness >= 0.9999).sum())
    print(
        f"{_shown(args.out, out, out)}: median confidence {100 * float(np.median(archive.fitness)):.2f}%, "
        f"{reached}/{len(chosen)} classes >= 99.99% after {_plural(args.steps, 'step')}; "
        f"grid in {_shown(args.out, out, out / 'elites.png')}"
    )
    return 0


def _check_step_size(flag: str, value: float) -> None:
    """Refuse a step size or budget outside ``(0, MAX_STEP_SIZE]`` before the model loads (one line)."""
    if not 0 < value <= MAX_STEP_SIZE:
        raise UsageError(
            f"{flag} must be positive and at most {MAX_STEP_SIZE:g} (pixels are in [0, 1]), not {value}"
        )


# --steps of both commands.
step_count = integer_in(1, MAX_STEPS)


def register(commands) -> None:
    """Add ``perturb`` and ``ascent`` to the ``fooling`` command."""
    perturb_parser = commands.add_parser(
        "perturb", help="push real photos towards a class (PGD, L-inf budget)"
    )
    perturb_parser.add_argument(
        "--model", default="imagenet-lite0", help="a model with gradients (default imagenet-lite0)"
    )
    perturb_parser.add_argument(
        "--image", required=True, help=f"image file, folder of images, or one of {', '.join(BUNDLED_PHOTOS)}"
    )
    perturb_parser.add_argument("--target", help="class to push towards (e.g. jellyfish)")
    perturb_parser.add_argument("--untargeted", action="store_true", help="any wrong class, smallest change")
    perturb_parser.add_argument(
        "--steps", type=step_count, default=300, help=f"at most (default 300; up to {MAX_STEPS:,})"
    )
    perturb_parser.add_argument("--eps", type=number, default=8 / 255, help="L-inf budget (default 8/255)")
    perturb_parser.add_argument("--lr", type=number, default=None, help="step size (default eps/4)")
    perturb_parser.add_argument(
        "--threshold", type=number, default=0.99, help="target probability to stop at (default 0.99)"
    )
    perturb_parser.add_argument("--device", default=None, help="cpu, cuda (default: CUDA when present)")
    perturb_parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    perturb_parser.add_argument(
        "--out", required=True, help="new or empty folder for the results: local path or URI (s3://, gs://)"
    )
    perturb_parser.set_defaults(func=cmd_perturb, endpoints=False)  # gradients: no endpoint has them

    ascent_parser = commands.add_parser("ascent", help="gradient-ascent fooling images, one per class")
    ascent_parser.add_argument(
        "--model", default="mnist-lenet", help="a model with gradients (default mnist-lenet)"
    )
    ascent_parser.add_argument(
        "--classes", type=name_list, default=None, help="comma-separated names or 'all'"
    )
    ascent_parser.add_argument(
        "--steps", type=step_count, default=300, help=f"steps (default 300; up to {MAX_STEPS:,})"
    )
    ascent_parser.add_argument("--lr", type=number, default=0.05, help="step size (default 0.05)")
    ascent_parser.add_argument(
        "--start", choices=("noise", "mean"), default="noise", help="first image (default noise)"
    )
    ascent_parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of the noise (default 0)"
    )
    ascent_parser.add_argument(
        "--tiles", type=positive_int, default=40, help="elites shown in elites.png (default 40)"
    )
    ascent_parser.add_argument("--device", default=None, help="cpu, cuda (default: CUDA when present)")
    ascent_parser.add_argument(
        "--out", required=True, help="new or empty run folder: local path or URI (s3://, gs://)"
    )
    ascent_parser.set_defaults(func=cmd_ascent, endpoints=False)  # gradients: no endpoint has them
