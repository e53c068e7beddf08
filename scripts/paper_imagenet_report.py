"""Report of a paper-scale ImageNet run: the paper's figures, beside the model's confidence on real photos.

    fooling evolve --preset paper --model imagenet-lite0 --crops 1 --out runs/paper-lite0
    python scripts/paper_imagenet_report.py runs/paper-lite0 --docs docs/paper-imagenet

Writes into ``--docs``: ``elites.png`` (the best classes), ``progress.png`` (median and mean
elite confidence against evaluations, to see whether it still rises), ``classes.parquet``
(one row per class: id, name, confidence, generation found) and ``summary.md`` (median,
mean, classes at >= 99 / 90 / 50%, evaluations, and the model's top-1 confidence on the
photos scikit-image ships and, with ``--real-images DIR`` (``DIR/CLASS/IMAGE``), its mean
confidence on a user's labelled photos of each class beside the run's fooling confidence).
It reads the run's newest good checkpoint, so it works on a run still going or stopped.

``--beside RUN`` compares another run of the same search (e.g. with the default rendering:
``--color-space hsv --coordinates unit --image-size 0`` after ``--preset paper``) at equal
cost: ``summary.md`` gets a table of both runs' median and mean at the evaluations the
shorter one reached, with how each renders, and ``progress.png`` its median curve.

``--carry DIR`` also writes that checkpoint without its thumbnails (a few MB instead of
tens) and the stats into ``DIR``, small enough for the repository, so the run continues on
another machine: ``cp -r DIR runs/paper-lite0 && fooling evolve --resume runs/paper-lite0``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from fooling.encodings import GENOME_CLASSES, UserError
from fooling.evo.cli import run_command
from fooling.evo.cli.parsing import Parser, UsageError, positive_int
from fooling.evo.config import RunConfig
from fooling.evo.evaluation import image_size, make_encoding
from fooling.evo.report.escape import markdown_text
from fooling.evo.report.figures import elites_figure
from fooling.evo.store.checkpoint import (
    Checkpoint,
    prune_checkpoints,
    read_latest_checkpoint,
    read_latest_rows,
    write_checkpoint,
)
from fooling.evo.store.tables import read_stats, write_stats
from fooling.fitness import ModelSpec, Scorer, load_model
from fooling.fitness.images import (
    BUNDLED_PHOTOS,
    class_photo_folders,
    load_model_images,
    real_photo_confidence,
)

PAPER = {"median": 0.8811, "evaluations": 2_000_000}
THRESHOLDS = (0.99, 0.9, 0.5)


def bundled_photo_table(scorer: Scorer) -> pd.DataFrame:
    """Top-1 class and confidence of the model on each photo scikit-image ships."""
    rows = []
    for name in BUNDLED_PHOTOS:
        images, _ = load_model_images(name, scorer.spec)
        probabilities = scorer.score(images)[0]
        top = int(np.argmax(probabilities))
        rows.append(
            {"photo": name, "top1": scorer.spec.class_names[top], "confidence": float(probabilities[top])}
        )
    return pd.DataFrame(rows)


def labelled_photo_table(scorer: Scorer, folder: str, classes: pd.DataFrame) -> pd.DataFrame:
    """Per class of a ``DIR/CLASS/IMAGE`` folder: the model's mean confidence in it on its photos.

    Each class's row sets that beside the run's fooling confidence for the class.

    Raises:
        FileNotFoundError, ValueError: not such a folder, no class folder of the model, an
            unreadable image (see :func:`fooling.fitness.images.class_photo_folders`).
    """
    found = real_photo_confidence(scorer, class_photo_folders(folder, scorer.spec))
    fooling = dict(zip(classes["class_id"], classes["fitness"]))
    rows = [
        {
            "class_name": scorer.spec.class_names[class_id],
            "photos": count,
            "real": confidence,
            "fooling": fooling.get(class_id, float("nan")),
        }
        for class_id, (confidence, count) in sorted(found.items())
    ]
    return pd.DataFrame(rows)


def progress_figure(stats: pd.DataFrame, beside: Beside | None = None) -> Figure:
    """Median and mean elite confidence against evaluations (and ``beside``'s median)."""
    figure = Figure(figsize=(6.5, 3.6), layout="constrained")
    axis = figure.subplots()
    evaluations = stats["evals"].cumsum()
    for key, style in (("median", "-"), ("mean", "--")):
        axis.plot(evaluations, 100 * stats[key], style, label=f"{key} of the elites")
    if beside is not None:
        axis.plot(
            beside.stats["evals"].cumsum(), 100 * beside.stats["median"], "-", label=f"median, {beside.run}"
        )
    axis.axhline(100 * PAPER["median"], color="gray", lw=0.8, ls=":", label="paper's median (AlexNet)")
    axis.set_xlabel("evaluations")
    axis.set_ylabel("confidence (%)")
    axis.set_ylim(0, 100.5)
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left", fontsize=8)
    return figure


def stats_until(run: str, checkpoint: Checkpoint) -> pd.DataFrame:
    """The per-generation statistics of ``run`` up to its ``checkpoint``'s generation.

    Raises:
        ValueError: the run has no readable statistics (``stats.parquet``).
    """
    stats = pd.DataFrame(read_stats(run, generations=checkpoint.config.generations))
    generation = checkpoint.generation
    if stats.empty:
        raise UserError("no statistics (stats.parquet)")
    return stats[stats["gen"] <= generation]


class Beside:
    """Another run of the search, compared at equal evaluations.

    Args:
        run: its folder.

    Raises:
        OSError, ValueError: no readable checkpoint or statistics there.
    """

    def __init__(self, run: str) -> None:
        checkpoint = read_latest_rows(run, GENOME_CLASSES).checkpoint
        if checkpoint is None:
            raise UserError("genomes of an unknown kind")
        self.run = run
        self.config: RunConfig = checkpoint.config
        self.stats = stats_until(run, checkpoint)


def rendering(config: RunConfig, spec: ModelSpec) -> str:
    """How a run turns genomes into images, in words: (CPPN) coordinates, colour, size, crops."""
    height, width = image_size(config, spec)
    coordinates = f"coordinates `{config.coordinates}`, " if config.encoding == "cppn" else ""
    return (
        f"{coordinates}colour `{make_encoding(config, spec).color_space}`, {height}x{width} px, "
        f"crops {config.crops}"
    )


def at_evaluations(stats: pd.DataFrame, evaluations: int) -> pd.Series:
    """The statistics of the first generation by whose end ``evaluations`` had been spent."""
    return stats[stats["evals"].cumsum() >= evaluations].iloc[0]


@dataclasses.dataclass
class Comparison:
    """Two runs at equal cost: ``rows`` holds ``(run, rendering, generation, median, mean)`` of each."""

    evaluations: int
    rows: list[tuple[str, str, int, float, float]]

    @classmethod
    def of(
        cls, run: str, config: RunConfig, stats: pd.DataFrame, beside: Beside, spec: ModelSpec
    ) -> Comparison:
        """Both runs at the evaluations the shorter one reached."""
        evaluations = int(min(stats["evals"].sum(), beside.stats["evals"].sum()))
        rows = []
        for name, run_config, run_stats in ((run, config, stats), (beside.run, beside.config, beside.stats)):
            row = at_evaluations(run_stats, evaluations)
            rows.append((name, rendering(run_config, spec), int(row["gen"]), row["median"], row["mean"]))
        return cls(evaluations, rows)

    def markdown(self) -> str:
        """A section for ``summary.md``."""
        lines = [
            f"## Beside `{self.rows[1][0]}`, at {self.evaluations:,} evaluations",
            "",
            "| run | rendering | generation | median | mean |",
            "|---|---|---|---|---|",
            *[
                f"| `{name}` | {how} | {generation} | {100 * median:.2f}% | {100 * mean:.2f}% |"
                for name, how, generation, median, mean in self.rows
            ],
        ]
        return "\n".join([*lines, ""])

    def reproduction_row(self) -> str:
        """A row for ``docs/REPRODUCTION.md``'s table."""
        runs = " against ".join(
            f"median {100 * median:.2f}% (mean {100 * mean:.2f}%) for `{name}` ({how})"
            for name, how, _, median, mean in self.rows
        )
        at = f"at {self.evaluations:,} evaluations"
        return f"| the same at equal cost, each rendering | | {at}: {runs} | otherwise the same |"


def summary_markdown(
    run: str,
    classes: pd.DataFrame,
    evaluations: int,
    generation: int,
    config: RunConfig,
    spec: ModelSpec,
    photos: pd.DataFrame,
    labelled: pd.DataFrame | None = None,
    labelled_source: str | None = None,
) -> str:
    fitness = classes["fitness"]
    counts = ", ".join(f">= {100 * t:.0f}%: {int((fitness >= t).sum())}" for t in THRESHOLDS)
    lines = [
        f"# Paper-scale ImageNet CPPN run: {markdown_text(run)}",
        "",
        f"Model {markdown_text(config.model)}, preset `{config.preset}`, "
        f"engine `{getattr(config, 'engine', 'auto')}`, "
        f"{rendering(config, spec)}, population {config.population}, seed {config.seed}.",
        "",
        "| evaluations | generation | classes | median | mean | classes (of the archive's) |",
        "|---|---|---|---|---|---|",
        f"| {evaluations:,} | {generation} | {len(classes)} | {100 * fitness.median():.2f}% | "
        f"{100 * fitness.mean():.2f}% | {counts} |",
        f"| paper (AlexNet) | 5,000 | 1,000 | {100 * PAPER['median']:.2f}% | | |",
        "",
        "The model's own top-1 confidence on real photos, to read the figures above against:",
        "",
        "| photo | top-1 class | confidence |",
        "|---|---|---|",
        *[
            f"| {markdown_text(r.photo)} | {markdown_text(r.top1)} | {100 * r.confidence:.2f}% |"
            for r in photos.itertuples()
        ],
        "",
    ]
    if labelled is not None:
        lines += [
            f"On the labelled photos of {markdown_text(str(labelled_source))}: "
            "the model's mean confidence in each photo's "
            "own class, beside the fooling confidence the run reached for that class.",
            "",
            "| class | photos | real photos | fooling image |",
            "|---|---|---|---|",
            *[
                f"| {markdown_text(r.class_name)} | {r.photos} | "
                f"{100 * r.real:.2f}% | {100 * r.fooling:.2f}% |"
                for r in labelled.itertuples()
            ],
            "",
        ]
    return "\n".join(lines)


SECTION_START = "<!-- paper-scale ImageNet run: written by scripts/paper_imagenet_report.py -->"
SECTION_END = "<!-- end of the paper-scale ImageNet run -->"


def reproduction_section(
    classes: pd.DataFrame,
    evaluations: int,
    generation: int,
    config: RunConfig,
    photos: pd.DataFrame,
    comparison: Comparison | None = None,
) -> str:
    """The paper-scale row of docs/REPRODUCTION.md, between markers so it can be replaced.

    With a ``comparison``, a second row sets the run beside the other one at equal evaluations.
    """
    fitness = classes["fitness"]
    counts = ", ".join(f"{int((fitness >= t).sum())} classes >= {100 * t:.0f}%" for t in THRESHOLDS)
    real = "; ".join(f"{r.photo} {100 * r.confidence:.0f}% ({r.top1})" for r in photos.itertuples())
    status = "done" if evaluations >= PAPER["evaluations"] else "in progress"
    return "\n".join(
        [
            SECTION_START,
            f"## The paper's ImageNet CPPN experiment at full scale ({status})",
            "",
            "| experiment | paper | ours | settings |",
            "|---|---|---|---|",
            f"| ImageNet, cppn, paper scale | median {100 * PAPER['median']:.2f}% at "
            f"{PAPER['evaluations']:,} evaluations (AlexNet, 10 crops) | "
            f"median {100 * fitness.median():.2f}%, "
            f"mean {100 * fitness.mean():.2f}%, {counts}, of {len(classes)} classes at {evaluations:,} "
            f"evaluations (generation {generation}); the model on real photos: {real} | "
            f"`{config.model}`, `--preset {config.preset}`, crops {config.crops}, population "
            f"{config.population}, seed {config.seed} |",
            *([comparison.reproduction_row()] if comparison else []),
            "",
            "Written by `python scripts/paper_imagenet_report.py`; details, curve and elites in "
            "[paper-imagenet/summary.md](paper-imagenet/summary.md).",
            SECTION_END,
        ]
    )


def current_section(document: Path) -> str | None:
    """The paper-scale section of ``document``, markers included; ``None`` where it has none."""
    text = document.read_text() if document.exists() else ""
    if SECTION_START not in text or SECTION_END not in text:
        return None
    return SECTION_START + text.split(SECTION_START, 1)[1].split(SECTION_END, 1)[0] + SECTION_END


def splice_section(document: Path, section: str) -> None:
    """Put ``section`` into ``document``, which is created when missing.

    It goes in place of its previous version, else before ``## Plots``, else at the end.
    """
    text = document.read_text() if document.exists() else ""
    if SECTION_START in text and SECTION_END in text:
        before, rest = text.split(SECTION_START, 1)
        after = rest.split(SECTION_END, 1)[1]
        text = before + section + after
    elif "\n## Plots" in text:
        before, after = text.split("\n## Plots", 1)
        text = before.rstrip("\n") + "\n\n" + section + "\n\n## Plots" + after
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + section + "\n"
    document.write_text(text)


def check_carry(carry: str, run: str, checkpoint: Checkpoint) -> None:
    """Refuse a ``--carry`` folder where writing the carry could destroy another run's files.

    The folder may be new, empty, or hold an earlier carry of the same run (same model,
    weights, seed, population and classes) at or before ``checkpoint``'s generation.

    Raises:
        ValueError: the folder is the run itself, holds something else, or a later checkpoint.
    """
    folder = Path(carry)
    if folder.resolve() == Path(run).resolve():
        raise UserError(f"--carry {carry} is the run itself; name another folder")
    if not folder.exists() or not any(folder.iterdir()):
        return
    try:
        earlier = read_latest_checkpoint(carry, GENOME_CLASSES)
    except (OSError, ValueError) as error:
        raise UserError(f"--carry {carry} holds files that are not a carried checkpoint ({error})") from error
    ours, theirs = checkpoint.config, earlier.config
    same_run = (earlier.model, earlier.weights_hash, theirs.seed, theirs.population, theirs.classes) == (
        checkpoint.model, checkpoint.weights_hash, ours.seed, ours.population, ours.classes
    )  # fmt: skip
    if not same_run:
        raise UserError(f"--carry {carry} holds a checkpoint of another run; name another folder")
    if earlier.generation > checkpoint.generation:
        raise UserError(
            f"--carry {carry} holds generation {earlier.generation}, later than the run's "
            f"{checkpoint.generation}; nothing written"
        )


def report(argv: list[str] | None) -> None:
    """Parse ``argv`` and write the report; bad input raises before anything is written.

    Raises:
        UsageError: a bad argument, or a ``--docs``/``--reproduction`` of the wrong kind.
        ValueError: an unreadable run, ``--beside`` run, ``--carry`` folder, engine or photo.
        OSError: a missing file or folder.
    """
    parser = Parser(prog="paper_imagenet_report", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run folder of `fooling evolve`")
    parser.add_argument("--docs", default="docs/paper-imagenet", help="folder the report goes to")
    parser.add_argument(
        "--real-images",
        metavar="DIR",
        default=None,
        help="labelled photos as DIR/CLASS/IMAGE (class folders named after the model's classes), "
        "scored beside the bundled photos",
    )
    parser.add_argument("--tiles", type=positive_int, default=40, help="elites shown in elites.png")
    parser.add_argument(
        "--reproduction",
        default="docs/REPRODUCTION.md",
        help="Markdown file whose paper-scale row is (re)written ('' for none)",
    )
    parser.add_argument("--carry", default=None, help="also copy the checkpoint (no thumbnails) here")
    parser.add_argument(
        "--beside", metavar="RUN", default=None, help="another run, compared at equal evaluations"
    )
    args = parser.parse_args(argv)
    # Where the report goes must be a folder and a file, before anything is read or written.
    for flag, path, kind in (("--docs", args.docs, "folder"), ("--reproduction", args.reproduction, "file")):
        target = Path(path) if path else None
        if target is not None and target.exists() and target.is_dir() != (kind == "folder"):
            raise UsageError(f"{flag} {path} is not a {kind}")
    try:
        stored = read_latest_rows(args.run, GENOME_CLASSES)  # read once: rows and genomes agree
        checkpoint, rows = stored.checkpoint, stored.rows
        if checkpoint is None:
            raise UserError(f"genomes of an unknown kind ({stored.metadata.get('genome_class')})")
        stats = stats_until(args.run, checkpoint)
    except Exception as error:  # any unreadable run is bad input: name the run
        raise UserError(f"{args.run}: {error}") from error
    try:
        beside = Beside(args.beside) if args.beside else None
    except Exception as error:  # the same for the run beside it
        raise UserError(f"--beside {args.beside}: {error}") from error
    config = checkpoint.config
    columns = ["class_id", "class_name", "fitness", "birth_generation"]
    classes = pd.DataFrame([{column: row[column] for column in columns} for row in rows], columns=columns)
    # Everything that can fail on bad input before anything is written.
    if args.carry:
        check_carry(args.carry, args.run, checkpoint)
    scorer = Scorer(load_model(config.model), engine=getattr(config, "engine", "auto"))
    with torch.no_grad():
        photos = bundled_photo_table(scorer)
        labelled = labelled_photo_table(scorer, args.real_images, classes) if args.real_images else None
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    classes.sort_values("fitness", ascending=False).to_parquet(docs / "classes.parquet", index=False)
    (docs / "elites.png").write_bytes(elites_figure(rows, args.tiles))
    progress_figure(stats, beside).savefig(docs / "progress.png", dpi=110)
    evaluations = int(stats["evals"].sum())
    text = summary_markdown(
        args.run,
        classes,
        evaluations,
        checkpoint.generation,
        config,
        scorer.spec,
        photos,
        labelled,
        args.real_images,
    )
    comparison = Comparison.of(args.run, config, stats, beside, scorer.spec) if beside else None
    if comparison is not None:
        text += "\n" + comparison.markdown()
    (docs / "summary.md").write_text(text)
    if args.reproduction:
        section = reproduction_section(
            classes, evaluations, checkpoint.generation, config, photos, comparison
        )
        splice_section(Path(args.reproduction), section)
    if args.carry:
        write_checkpoint(args.carry, checkpoint, images=None)
        write_stats(args.carry, stats.to_dict("records"))
        prune_checkpoints(args.carry, keep=1)  # the carry is the newest checkpoint alone
    print(text)


def main(argv: list[str] | None = None) -> int:
    """Run the report as a program: bad input is one line on stderr and exit code 2.

    Returns:
        The exit code (:func:`fooling.evo.cli.run_command`).
    """
    return run_command(lambda: report(argv), program="paper_imagenet_report")


if __name__ == "__main__":
    sys.exit(main())
