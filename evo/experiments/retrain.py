"""The paper's "fooling class" loop (section 3.3): evolve, add the images as class n+1, retrain.

Round k evolves fooling images against DNN_k (archive cells: the n real classes only;
the fooling class is never a target), adds the round's images to a pool, and trains
DNN_k+1 on the real training set plus pool images labelled n+1 at a share that grows
linearly to ``share`` (paper, MNIST: 25% of the training data) by the last round. After
the last round evolution runs once more, against the last network. Each row of the table
says how well evolution fooled DNN_k and how DNN_k labels real test images.

MNIST LeNets are trained from scratch each round on the digits. Other networks (ImageNet)
are fine-tuned from DNN_k on a user's ImageFolder of natural images (``train_dir``) plus
the fooling images, their output layer grown by one.

Every DNN_k is cached in ``$FOOLING_HOME/models/retrained`` under a registry name
``BASE-retrainK-HASH``, and each round is an ordinary run of :func:`fooling.evo.run.evolve`
in its own run folder (``OUT/round-K``: checkpoints, Ctrl-C handling, ``fooling evolve
--resume``), which ``fooling report``, ``transfer`` and ``ablate`` can read.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time

import numpy as np
import torch
import torch.nn.functional as F

from fooling.encodings import GenomeBatch, UserError
from fooling.evo.config import RunConfig, check_cluster_choice
from fooling.evo.evaluation import make_encoding
from fooling.evo.models import load_or_train
from fooling.evo.rendering import render_uint8
from fooling.evo.report.escape import markdown_text
from fooling.evo.report.experiments import retrain_figure
from fooling.evo.report.figures import percent
from fooling.evo.run import EVOLVE_PRELUDE, evolve
from fooling.evo.search import Search
from fooling.evo.store.checkpoint import checkpoint_uris
from fooling.evo.store.location import join, write_bytes
from fooling.evo.store.runfolder import RunFolderError, claimed_run_folder
from fooling.fitness import LoadedModel, ModelSpec, get_model_spec, load_mnist, load_model
from fooling.fitness.fooling_class import (
    FOOLING_CLASS_NAME,
    add_output,
    fine_tune,
    fooling_share,
    load_image_folder,
    save_retrained,
    with_fooling_class,
)
from fooling.fitness.limits import check_device
from fooling.fitness.models import LENET_PATTERN
from fooling.fitness.sources import require_extensible
from fooling.fitness.train import accuracy, fit_lenet

logger = logging.getLogger(__name__)

RETRAIN_COLUMNS = (
    "round",
    "model",
    "outputs",
    "fooling_share",
    "fooling_images",
    "unique_fooling",
    "test_accuracy",
    "median",
    "mean",
    "at_9999",
    "cells",
    "new_images",
    "seconds",
)


@dataclasses.dataclass
class RetrainSettings:
    """One fooling-class experiment: every round's evolution as a :class:`RunConfig`, plus retraining.

    Attributes:
        run: the evolution of every round. ``run.model`` is DNN_1 (a registry name); ``run.out``
            the folder for the table, the plot and one run folder per round (``round-K``); round k
            evolves with seed ``run.seed + k - 1`` (training draws from ``run.seed`` too);
            ``run.classes`` the cells (``None``: every real class, never the fooling class).
        rounds: retraining rounds (paper: 15 for MNIST); ``rounds + 1`` networks are fooled.
        share: the fooling class's share of the training set in the last round.
        epochs: LeNet training epochs per round (``None``: as ``fooling train``).
        train_dir: ImageFolder of natural images (needed for non-LeNet models).
        steps: fine-tuning steps per round (non-LeNet models).
        keep_from: fooling images are the distinct elites present in the archive after each
            generation from this fraction of the run on (0.5: the second half), so weak
            early noise is not added.
    """

    run: RunConfig = dataclasses.field(default_factory=lambda: RunConfig(out="runs/retrain"))
    rounds: int = 15
    share: float = 0.25
    epochs: int | None = None
    train_dir: str | None = None
    steps: int = 100
    keep_from: float = 0.5

    def validate(self) -> None:
        """Raise :class:`UserError` naming the first retraining setting out of range.

        The run's own fields were checked when ``run`` was made (:meth:`RunConfig.validate`).
        """
        for name in ("rounds", "steps"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"--{name} must be a positive integer, not {getattr(self, name)}")
        if self.epochs is not None and self.epochs < 1:
            raise UserError(f"--epochs must be a positive integer, not {self.epochs}")
        if not 0 < self.share < 1:
            raise UserError(f"--share must be in (0, 1), not {self.share}")
        if not 0 <= self.keep_from < 1:
            raise UserError(f"keep_from must be in [0, 1), not {self.keep_from}")

    def round_config(self, round_index: int, model: str, classes: list[str]) -> RunConfig:
        """The run of round ``round_index`` (from 1): ``run`` against ``model``, in ``OUT/round-K``.

        Raises:
            ValueError: the round's seed out of range.
        """
        return dataclasses.replace(
            self.run,
            model=model,
            seed=self.run.seed + round_index - 1,
            out=join(self.run.out, f"round-{round_index}"),
            classes=classes,
        )


@dataclasses.dataclass
class RetrainResult:
    """Rows of :data:`RETRAIN_COLUMNS` (one per network fooled) and the files written."""

    rows: list[dict]
    uris: list[str]


class _NewElites:
    """Called by :func:`evolve` after each generation: collects the distinct elites' genomes.

    Those are the genomes of the distinct elites present in the archive from generation
    ``first`` on.
    """

    def __init__(self, first: int) -> None:
        self.first = first
        self.seen: set[int] = set()
        self.kept: list[GenomeBatch] = []

    def __call__(self, search: Search) -> None:
        if search.generation - 1 < self.first:
            return
        archive = search.archive
        new = [c for c in archive.occupied_cells() if int(archive.individual_id[c]) not in self.seen]
        self.seen.update(int(archive.individual_id[c]) for c in new)
        if new:
            self.kept.append(archive.genomes.take(np.array(new)))

    def genomes(self) -> GenomeBatch:
        """Every genome collected, in the order found.

        Raises:
            ValueError: none collected (the run had no generation from ``first`` on).
        """
        if not self.kept:
            raise ValueError(f"no generation from {self.first} on: no fooling images to add")
        return type(self.kept[0]).concatenate(self.kept)


class _Digits:
    """MNIST: train LeNets from scratch on the digits plus the fooling class."""

    def __init__(self, settings: RetrainSettings) -> None:
        self.settings = settings
        self.data = load_mnist()
        self.source = self.data.source
        self.real_images, self.real_labels = self.data.train_images, self.data.train_labels

    def pool_images(self, images: np.ndarray, spec) -> np.ndarray:
        return images  # (m, 28, 28) uint8, as the digits

    def train(self, previous: LoadedModel, images: np.ndarray, labels: np.ndarray, round_index: int):
        epochs = self.settings.epochs or (3 if len(self.real_labels) > 20_000 else 12)
        num_classes = previous.spec.num_classes if round_index > 1 else previous.spec.num_classes + 1
        return fit_lenet(
            images, labels, num_classes=num_classes, epochs=epochs, seed=self.settings.run.seed + round_index
        )

    def accuracy(self, model: LoadedModel) -> float:
        return accuracy(model.network, self.data.test_images, self.data.test_labels)


class _Folder:
    """Any other network: fine-tune on an ImageFolder of natural images plus the fooling class."""

    def __init__(self, settings: RetrainSettings, spec: ModelSpec) -> None:
        self.settings = settings
        images, labels = load_image_folder(
            settings.train_dir, spec.class_names, spec.input_size, spec.channels
        )
        self.real_images = (images * 255).round().to(torch.uint8).numpy()  # (n, c, H, W)
        self.real_labels = labels.numpy()
        self.source = (
            f"{len(labels)} images of {len(set(self.real_labels.tolist()))} classes in {settings.train_dir}"
        )

    def pool_images(self, images: np.ndarray, spec) -> np.ndarray:
        tensor = torch.from_numpy(images)
        tensor = tensor[:, None] if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2)
        tensor = F.interpolate(tensor.float(), size=spec.input_size, mode="bilinear", align_corners=False)
        return tensor.clamp(0, 255).round().to(torch.uint8).numpy()

    def train(self, previous: LoadedModel, images: np.ndarray, labels: np.ndarray, round_index: int):
        network = copy.deepcopy(previous.network) if round_index > 1 else add_output(previous.network)
        return fine_tune(
            network,
            torch.from_numpy(images).float() / 255.0,
            torch.from_numpy(labels),
            mean=previous.spec.mean,
            std=previous.spec.std,
            steps=self.settings.steps,
            seed=self.settings.run.seed + round_index,
        )

    def accuracy(self, model: LoadedModel) -> float:
        # No held-out set is asked of the user: this is accuracy on the natural images
        # of --train-dir (the report says so).
        with torch.no_grad():
            images = torch.from_numpy(self.real_images).float() / 255.0
            shape = (1, model.spec.channels, 1, 1)
            mean, std = torch.tensor(model.spec.mean).view(shape), torch.tensor(model.spec.std).view(shape)
            predictions = torch.cat(
                [
                    model.network((images[s : s + 32] - mean) / std).argmax(1)
                    for s in range(0, len(images), 32)
                ]
            )
        return float((predictions.numpy() == self.real_labels).mean())


def retrain(
    settings: RetrainSettings, *, show_progress: bool = False, trackers: list | None = None
) -> RetrainResult:
    """Run the fooling-class loop and write ``retrain.md``, ``retrain.json`` and ``retrain.png``.

    Each round is an ordinary run of :func:`fooling.evo.run.evolve` in ``OUT/round-K``: it
    checkpoints every ``run.checkpoint_every`` generations, and a Ctrl-C writes a checkpoint
    of the last finished generation before the ``KeyboardInterrupt`` comes through. ``trackers``
    (``NAME[:ARG]`` texts or specs, as :func:`~fooling.evo.run.evolve` takes) follow every round.

    Raises:
        UserError: a setting out of range, a non-LeNet model without ``train_dir``, or a
            ``train_dir`` not in ImageFolder layout.
        RunFolderError: ``out`` already holds rounds, other files or another kind of run, or
            is in use.
        UnknownNameError, ModelUnavailableError: a model that cannot be had.
        KeyboardInterrupt: after the round's checkpoint is written.
    """
    settings.validate()
    run = settings.run
    if checkpoint_uris(join(run.out, "round-1")):
        raise RunFolderError(f"--out {run.out} already holds a retraining run; choose another folder")
    require_extensible(run.model, "retrain")  # before asking for --train-dir, which would not help
    spec = get_model_spec(run.model)  # a misspelt name gets suggestions first
    lenet = LENET_PATTERN.match(spec.name) and settings.train_dir is None
    if not lenet and settings.train_dir is None:
        raise UserError(f"{run.model} needs --train-dir (an ImageFolder of natural images) to retrain")
    check_device(run.device)
    check_cluster_choice(run.address, run.workers)
    # The folder is checked before any model is loaded or trained: bad input fails fast.
    data = _Digits(settings) if lenet else _Folder(settings, spec)
    # A first round killed before its first checkpoint saved nothing: the command runs again.
    first_round = {"round-1": EVOLVE_PRELUDE}
    with claimed_run_folder(run.out, "retrain", remove_temporaries=True, subruns=first_round):
        rows = _rounds(settings, data, show_progress, trackers)
        return RetrainResult(rows, _write(settings, rows, data.source))


def _rounds(
    settings: RetrainSettings, data: _Digits | _Folder, show_progress: bool, trackers: list | None = None
) -> list[dict]:
    """Evolve against DNN_1, retrain, evolve against DNN_2, ...: one row per network fooled."""
    model = load_or_train(settings.run.model)
    real_classes = model.spec.class_names
    # The fooling class is never a target. Every real class by id: ImageNet's names repeat
    # ("crane", 134 and 517) or differ only by case ("Cardigan", 264; "cardigan", 474).
    cells = settings.run.classes or [str(i) for i in range(len(real_classes))]
    pool = None
    rows: list[dict] = []
    training = dict(fooling_share=0.0, fooling_images=0, unique_fooling=0)
    for round_index in range(1, settings.rounds + 2):
        started = time.perf_counter()
        config = settings.round_config(round_index, model.spec.name, cells)
        elites = _NewElites(int(settings.keep_from * config.generations))
        search = evolve(config, show_progress=show_progress, on_generation=elites, trackers=trackers)
        images = render_uint8(make_encoding(config, model.spec), elites.genomes())
        stats = search.archive.stats()
        fitness = search.archive.elite_fitness()
        row = dict(
            round=round_index,
            model=model.spec.name,
            outputs=model.spec.num_classes,
            **training,
            test_accuracy=data.accuracy(model),
            median=stats["median"],
            mean=stats["mean"],
            at_9999=int((fitness >= 0.9999).sum()),
            cells=search.archive.num_cells,
            new_images=len(images),
        )
        logger.info(
            "round %d: %s median %.4f, %d/%d classes >= 99.99%%, test accuracy %.3f",
            round_index,
            model.spec.name,
            row["median"],
            row["at_9999"],
            row["cells"],
            row["test_accuracy"],
        )
        if round_index <= settings.rounds:
            new = data.pool_images(images, model.spec)
            pool = new if pool is None else np.concatenate([pool, new])
            share = fooling_share(round_index, settings.rounds, settings.share)
            rng = np.random.default_rng([settings.run.seed, round_index, 7])
            # Class n+1 is always index len(real_classes): DNN_1 has n outputs, later ones n+1.
            dataset = with_fooling_class(
                data.real_images, data.real_labels, pool, share, num_classes=len(real_classes), rng=rng
            )
            network = data.train(model, dataset.images, dataset.labels, round_index)
            name = save_retrained(
                network, settings.run.model, round_index + 1, tuple(real_classes) + (FOOLING_CLASS_NAME,)
            )
            model = load_model(name)
            training = dict(
                fooling_share=dataset.share,
                fooling_images=int((dataset.labels == dataset.fooling_label).sum()),
                unique_fooling=dataset.unique_fooling,
            )
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
    return rows


def _write(settings: RetrainSettings, rows: list[dict], data_source: str) -> list[str]:
    header = [
        "round",
        "network",
        "outputs",
        "fooling class in its training set",
        "test accuracy",
        "median confidence",
        "classes >= 99.99%",
        "images added",
        "time",
    ]
    lines = [
        [
            f"DNN_{row['round']}",
            markdown_text(row["model"]),
            str(row["outputs"]),
            f"{100 * row['fooling_share']:.1f}% "
            f"({row['fooling_images']} images, {row['unique_fooling']} distinct)"
            if row["fooling_images"]
            else "-",
            f"{100 * row['test_accuracy']:.2f}%",
            percent(row["median"]),
            f"{row['at_9999']}/{row['cells']}",
            str(row["new_images"]) if row["round"] <= settings.rounds else "-",
            f"{row['seconds']:.0f} s",
        ]
        for row in rows
    ]
    table = "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        + ["| " + " | ".join(r) + " |" for r in lines]
    )
    accuracy_of = (
        "real test digits" if settings.train_dir is None else f"the natural images of {settings.train_dir}"
    )
    text = "\n\n".join(
        [
            f"# Fooling-class retraining from {markdown_text(settings.run.model)}",
            f"{settings.rounds} rounds; each evolves {settings.run.generations} generations x "
            f"{settings.run.population} children ({markdown_text(settings.run.encoding)} encoding) "
            "against DNN_k, adds the "
            f"distinct elites of the last {100 * (1 - settings.keep_from):.0f}% of generations to the "
            "fooling pool, and trains DNN_k+1 with the pool as one more class, growing linearly to "
            f"{100 * settings.share:.0f}% of the training set. "
            f"Real data: {markdown_text(data_source)}. "
            f"Test accuracy is on {markdown_text(accuracy_of)} (a real image labelled 'fooling' "
            "counts as wrong). Median confidence and classes >= 99.99% are over the real classes only.",
            table,
            "Paper (MNIST, 15 rounds): still fooled after retraining; "
            "ImageNet median 88.1% -> 11.7% after one round.",
        ]
    )
    written = []
    for name, data in (
        ("retrain.md", (text + "\n").encode()),
        ("retrain.json", json.dumps(rows, indent=1).encode()),
        ("retrain.png", retrain_figure(rows)),
    ):
        uri = join(settings.run.out, name)
        write_bytes(uri, data)
        written.append(uri)
    return written
