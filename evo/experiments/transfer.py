"""Transfer (paper, section 3.4): do images evolved against DNN_A fool DNN_B?

Reads a run's newest checkpoint, scores its elites on other networks, and writes a
Markdown table and a plot into the run folder.
"""

from __future__ import annotations

import dataclasses
import logging
import re

import numpy as np

from fooling.encodings import UserError
from fooling.evo.experiments.elites import (
    FAIR,
    HIGH,
    Elites,
    check_weights,
    class_map,
    load_elites,
    markdown_table,
    score_all,
)
from fooling.evo.models import load_or_train
from fooling.evo.report.escape import markdown_text
from fooling.evo.report.experiments import transfer_figure
from fooling.evo.report.figures import percent
from fooling.evo.store.location import exists, join, read_bytes, write_bytes
from fooling.fitness import LoadedModel, Scorer, get_model_spec

logger = logging.getLogger(__name__)

TRANSFER_COLUMNS = (
    "target",
    "elites",
    "same_top1",
    "both_9999",
    "both_99",
    "mean_source",
    "mean_target",
)


@dataclasses.dataclass
class TransferResult:
    """How a run's elites fare on other networks.

    Attributes:
        elites: the run's elites.
        rows: one dict per target with the keys of :data:`TRANSFER_COLUMNS`: ``elites``
            (elites whose class the target has), ``same_top1`` (fraction with the same
            top-1 label on both networks), ``both_9999`` / ``both_99`` (fraction at
            >= 99.99% / >= 99% in the elite's class on both), ``mean_source`` /
            ``mean_target`` (mean confidence in the elite's class).
        source_confidence: ``(n,)`` confidence of the source network in each elite's class.
        target_confidence: target name -> ``(n,)`` confidence (NaN where it lacks the class).
        target_top1: target name -> ``(n,)`` the target's top-1 class names.
        uris: files written.
    """

    elites: Elites
    rows: list[dict]
    source_confidence: np.ndarray
    target_confidence: dict[str, np.ndarray]
    target_top1: dict[str, list[str]]
    uris: list[str]


def transfer(
    run: str,
    targets: list[str],
    *,
    map_classes: bool = False,
    device: str | None = None,
    engine: str = "auto",
    write: bool = True,
    model: str | None = None,
) -> TransferResult:
    """Score run ``run``'s elites on ``targets`` and write ``transfer-to-TARGETS.md`` and ``.png``.

    Results of other targets stay; a result of the same targets that differs from the
    earlier one (e.g. retrained weights) is written beside it as ``...-2.md``, never over it.

    Args:
        run: run folder (an evolved or gradient-ascent run).
        targets: registry names of the networks to test (MNIST LeNets are trained on demand).
        map_classes: allow targets whose class set differs from the run's network, matching
            classes by name (elites whose class the target lacks are left out of its row).
        device: scoring device (default: CUDA when present).
        engine: scoring engine (``auto``, ``torch``, ``onnxruntime``).
        write: write the two files into the run folder.
        model: the run's network named again (``--model``); needed when it is behind an
            endpoint, which is never contacted on the run folder's word alone.

    Raises:
        CheckpointError: the run has no readable checkpoint.
        UserError: no targets, a target with another class set without ``map_classes``, or
            one with none of the elites' classes; a run of an endpoint that ``model`` does not
            name, or a ``model`` other than the run's (see :func:`load_elites`).
        UnknownNameError, ModelUnavailableError: a model that cannot be had.
    """
    if not targets:
        raise UserError("give at least one --to MODEL")
    elites = load_elites(run, model)
    source = load_or_train(elites.model)
    check_weights(elites, source)
    models: list[LoadedModel] = []
    for name in targets:
        spec = get_model_spec(name)  # cheap: checks names and class sets before any training
        if spec.class_names != source.spec.class_names and not map_classes:
            raise UserError(
                f"{spec.name} has other classes ({spec.num_classes}) than {source.spec.name} "
                f"({source.spec.num_classes}), the run's network; --map-classes matches them by name"
            )
        if not (class_map(source.spec.class_names, spec.class_names, elites.class_names) >= 0).any():
            raise UserError(
                f"{spec.name} has none of the classes of {run}'s elites (matched by name): nothing to compare"
            )
    for name in targets:
        models.append(load_or_train(name))
    source_scorer = Scorer(source, device=device, crops=elites.config.crops, engine=engine)
    source_probs = score_all(source_scorer, elites.images)
    source_ids = class_map(source.spec.class_names, source.spec.class_names, elites.class_names)
    rows_index = np.arange(len(elites.images))
    source_conf = source_probs[rows_index, source_ids]
    source_top1 = [source.spec.class_names[i].lower() for i in source_probs.argmax(1)]
    rows, confidences, top1s = [], {}, {}
    for model in models:
        probs = score_all(Scorer(model, device=device, engine=engine), elites.images)
        mapped = class_map(source.spec.class_names, model.spec.class_names, elites.class_names)
        has = mapped >= 0
        conf = np.full(len(mapped), np.nan, dtype=np.float32)
        conf[has] = probs[rows_index[has], mapped[has]]
        top1 = [model.spec.class_names[i] for i in probs.argmax(1)]
        same = np.array([a == b.lower() for a, b in zip(source_top1, top1)])
        count = int(has.sum())

        def fraction(values: np.ndarray, has: np.ndarray = has, count: int = count) -> float:
            return float(values[has].mean()) if count else float("nan")

        rows.append(
            dict(
                target=model.spec.name,
                elites=count,
                same_top1=fraction(same),
                both_9999=fraction((source_conf >= HIGH) & (np.nan_to_num(conf) >= HIGH)),
                both_99=fraction((source_conf >= FAIR) & (np.nan_to_num(conf) >= FAIR)),
                mean_source=fraction(source_conf),
                mean_target=float(conf[has].mean()) if count else float("nan"),
            )
        )
        confidences[model.spec.name], top1s[model.spec.name] = conf, top1
    result = TransferResult(elites, rows, source_conf, confidences, top1s, [])
    if write:
        result.uris = _write_transfer(result, source.spec.name)
    return result


def _transfer_uris(run: str, targets: list[str], text: bytes) -> tuple[str, str]:
    """``RUN/transfer-to-TARGETS.md`` and ``.png``, or a numbered name when that one is taken.

    When that file already holds another result (e.g. the target's weights changed), the names
    end in ``-2``, ``-3``, ... instead: nothing is overwritten.
    """
    stem = "transfer-to-" + "+".join(re.sub(r"[^A-Za-z0-9._-]+", "_", target) for target in targets)
    for number in range(1, 10_000):
        name = stem if number == 1 else f"{stem}-{number}"
        md_uri = join(run, f"{name}.md")
        if not exists(md_uri) or read_bytes(md_uri) == text:
            return md_uri, join(run, f"{name}.png")
    raise UserError(f"{run} holds too many transfer results named {stem}-N; move some away")


def _write_transfer(result: TransferResult, source: str) -> list[str]:
    # Class names, labels, model references and the run's path come from files someone may
    # have shared: each is escaped to show as itself (no HTML, no table-breaking pipes).
    elites = result.elites
    shown_source = markdown_text(source)
    header = [
        "target",
        "elites",
        "same top-1 label",
        ">= 99.99% on both",
        ">= 99% on both",
        f"mean confidence on {shown_source}",
        "mean confidence on target",
    ]
    rows = [
        [
            markdown_text(row["target"]),
            str(row["elites"]),
            f"{100 * row['same_top1']:.1f}%",
            f"{100 * row['both_9999']:.1f}%",
            f"{100 * row['both_99']:.1f}%",
            percent(row["mean_source"]),
            percent(row["mean_target"]),
        ]
        for row in result.rows
    ]
    # Per-elite detail, best first, capped so 1000-class runs stay readable.
    order = np.argsort(-result.source_confidence)[:50]
    targets = list(result.target_confidence)
    detail = [
        [
            markdown_text(elites.class_names[i]),
            percent(float(result.source_confidence[i])),
            *[
                f"{percent(float(result.target_confidence[t][i]))} ({top1})"
                if not np.isnan(result.target_confidence[t][i])
                else f"- ({top1})"
                for t in targets
                for top1 in [markdown_text(result.target_top1[t][i])]
            ],
        ]
        for i in order
    ]
    text = "\n\n".join(
        [
            f"# Transfer of {markdown_text(elites.run)}'s elites",
            f"Evolved against **{shown_source}** ({markdown_text(elites.config.encoding)} encoding, "
            f"{len(elites.images)} elites, scored from {markdown_text(elites.source)}). "
            "Confidence is each network's probability of the elite's class; "
            "the paper (section 3.4) found many images fooling DNN_B as well, with DNN_A scoring higher.",
            markdown_table(header, rows),
            "## Per elite (best 50 on the source): confidence in the class (target's top-1 label)",
            markdown_table(["class", shown_source, *map(markdown_text, targets)], detail),
        ]
    )
    md_uri, png_uri = _transfer_uris(elites.run, targets, (text + "\n").encode())
    write_bytes(md_uri, (text + "\n").encode())
    write_bytes(png_uri, transfer_figure(result, source, targets))
    return [md_uri, png_uri]


# --- ablation --------------------------------------------------------------------------------
