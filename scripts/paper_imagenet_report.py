"""Report of a paper-scale ImageNet run: the paper's figures, beside the model's confidence on real photos.

    fooling evolve --preset paper --model imagenet-lite0 --crops 1 --out runs/paper-lite0
    python scripts/paper_imagenet_report.py runs/paper-lite0 --docs docs/paper-imagenet

Writes into ``--docs``: ``elites.png`` (the best classes), ``progress.png`` (median and mean
elite confidence against evaluations, to see whether it still rises), ``classes.parquet``
(one row per class: id, name, confidence, generation found) and ``summary.md`` (median,
mean, classes at >= 99 / 90 / 50%, evaluations, and the model's top-1 confidence on the
photos scikit-image ships, or on ``--real-images DIR``, to read the fooling figures against).
It reads the run's newest good checkpoint, so it works on a run still going or stopped.

``--carry DIR`` also writes that checkpoint without its thumbnails (a few MB instead of
tens) and the stats into ``DIR``, small enough for the repository, so the run continues on
another machine: ``cp -r DIR runs/paper-lite0 && fooling evolve --resume runs/paper-lite0``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from fooling.evo.report.figures import elites_figure
from fooling.evo.run import GENOME_CLASSES
from fooling.evo.store.checkpoint import (
    read_latest_rows,
    read_stats,
    write_checkpoint,
    write_stats,
)
from fooling.fitness import Scorer, load_model
from fooling.fitness.images import BUNDLED_PHOTOS, load_images

PAPER = {"median": 0.8811, "evaluations": 2_000_000}
THRESHOLDS = (0.99, 0.9, 0.5)


def real_photo_confidence(model_name: str, source: str | None, engine: str) -> pd.DataFrame:
    """Top-1 class and confidence of the model on each real photo (bundled, or ``source``)."""
    model = load_model(model_name)
    scorer = Scorer(model, engine=engine)
    sources = [source] if source else list(BUNDLED_PHOTOS)
    rows = []
    for item in sources:
        images, names = load_images(item, model.spec.channels, model.spec.input_size)
        probabilities = scorer.score(images)
        for name, probs in zip(names, probabilities):
            top = int(np.argmax(probs))
            rows.append({"photo": name, "top1": model.spec.class_names[top], "confidence": float(probs[top])})
    return pd.DataFrame(rows)


def progress_figure(stats: pd.DataFrame) -> Figure:
    figure = Figure(figsize=(6.5, 3.6), layout="constrained")
    axis = figure.subplots()
    evaluations = stats["evals"].cumsum()
    for key, style in (("median", "-"), ("mean", "--")):
        axis.plot(evaluations, 100 * stats[key], style, label=f"{key} of the elites")
    axis.axhline(100 * PAPER["median"], color="gray", lw=0.8, ls=":", label="paper's median (AlexNet)")
    axis.set_xlabel("evaluations")
    axis.set_ylabel("confidence (%)")
    axis.set_ylim(0, 100.5)
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left", fontsize=8)
    return figure


def summary_markdown(
    run: str, classes: pd.DataFrame, evaluations: int, generation: int, config, photos
) -> str:
    fitness = classes["fitness"]
    counts = ", ".join(f">= {100 * t:.0f}%: {int((fitness >= t).sum())}" for t in THRESHOLDS)
    lines = [
        f"# Paper-scale ImageNet CPPN run: `{run}`",
        "",
        f"Model `{config.model}`, preset `{config.preset}`, engine `{getattr(config, 'engine', 'auto')}`, "
        f"crops {config.crops}, coordinates `{config.coordinates}`, colour `{config.color_space}`, "
        f"population {config.population}, seed {config.seed}.",
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
        *[f"| {r.photo} | {r.top1} | {100 * r.confidence:.2f}% |" for r in photos.itertuples()],
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run folder of `fooling evolve`")
    parser.add_argument("--docs", default="docs/paper-imagenet", help="folder the report goes to")
    parser.add_argument("--real-images", default=None, help="folder of real photos (default: bundled ones)")
    parser.add_argument("--tiles", type=int, default=40, help="elites shown in elites.png")
    parser.add_argument("--carry", default=None, help="also copy the checkpoint (no thumbnails) here")
    args = parser.parse_args(argv)
    try:
        stored = read_latest_rows(args.run, GENOME_CLASSES)  # read once: rows and genomes agree
        checkpoint, rows = stored.checkpoint, stored.rows
        if checkpoint is None:
            raise ValueError(f"genomes of an unknown kind ({stored.metadata.get('genome_class')})")
    except Exception as error:  # one line for any unreadable run
        print(f"paper_imagenet_report: {args.run}: {error}", file=sys.stderr)
        return 2
    stats = pd.DataFrame(read_stats(args.run))
    stats = stats[stats["gen"] <= checkpoint.generation]
    config = checkpoint.config
    columns = ["class_id", "class_name", "fitness", "birth_generation"]
    classes = pd.DataFrame([{column: row[column] for column in columns} for row in rows], columns=columns)
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    classes.sort_values("fitness", ascending=False).to_parquet(docs / "classes.parquet", index=False)
    (docs / "elites.png").write_bytes(elites_figure(rows, args.tiles))
    progress_figure(stats).savefig(docs / "progress.png", dpi=110)
    with torch.no_grad():
        photos = real_photo_confidence(config.model, args.real_images, getattr(config, "engine", "auto"))
    evaluations = int(stats["evals"].sum())
    text = summary_markdown(args.run, classes, evaluations, checkpoint.generation, config, photos)
    (docs / "summary.md").write_text(text)
    if args.carry:
        write_checkpoint(args.carry, checkpoint, images=None)
        write_stats(args.carry, stats.to_dict("records"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
