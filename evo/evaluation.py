"""Wiring an encoding to a scorer: genomes in, class probabilities out."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fooling.encodings import CPPNEncoding, DirectEncoding, GenomeBatch
from fooling.fitness import LoadedModel, ModelSpec, Scorer, resolve_name

from .config import RunConfig


def _direct(config: RunConfig, spec: ModelSpec, size: tuple[int, int]) -> DirectEncoding:
    return DirectEncoding(
        channels=spec.channels,
        height=size[0],
        width=size[1],
        mutation_probability=config.mutation_probability,
        mutation_eta=config.mutation_eta,
        halve_mutation_every=config.halve_mutation_every or None,
        crossover_eta=config.crossover_eta,
        color_space="rgb" if config.color_space == "rgb" else "hsv",
    )


def _cppn(config: RunConfig, spec: ModelSpec, size: tuple[int, int]) -> CPPNEncoding:
    return CPPNEncoding(
        outputs=spec.channels,
        height=size[0],
        width=size[1],
        # The paper's text says HSV; "rgb" (the config default) is taken to mean that.
        color_space="hls" if config.color_space == "hls" else "hsv",
        weight_probability=config.mutation_probability,
        weight_eta=config.mutation_eta,
    )


# name -> factory(config, model spec, (height, width)) -> encoding
ENCODINGS = {"direct": _direct, "cppn": _cppn}


def image_size(config: RunConfig, spec: ModelSpec) -> tuple[int, int]:
    """``(height, width)`` of the evolved images: ``--image-size`` or what the scorer takes."""
    if config.image_size:
        return (config.image_size, config.image_size)
    height, width = spec.input_size
    if config.crops == 10:
        return (height * 256 // 224, width * 256 // 224)
    return (height, width)


def make_encoding(config: RunConfig, spec: ModelSpec):
    """The encoding named by ``config.encoding``, sized for the model.

    Raises:
        UnknownNameError: no such encoding (suggests close names).
    """
    name = resolve_name(config.encoding, ENCODINGS, "encoding")
    return ENCODINGS[name](config, spec, image_size(config, spec))


def class_ids(config: RunConfig, spec: ModelSpec) -> np.ndarray:
    """Class indices that get an archive cell: ``config.classes`` resolved, or all.

    Raises:
        UnknownNameError: a class name the model does not have (suggests close names).
    """
    if not config.classes:
        return np.arange(spec.num_classes)
    index = {name: i for i, name in enumerate(spec.class_names)}
    return np.array([index[resolve_name(name, index, "class")] for name in config.classes])


class Evaluator:
    """Renders genomes and scores them: the work of one scorer (in-process or a Ray actor).

    Args:
        config: the run.
        model: the classifier, with weights (shipped to actors so nodes need no cache).
        device: scoring device (default: CUDA when present, else CPU).
    """

    def __init__(self, config: RunConfig, model: LoadedModel, *, device: str | None = None) -> None:
        self.scorer = Scorer(model, device=device or config.device, crops=config.crops, engine=config.engine)
        self.encoding = make_encoding(config, model.spec)
        self.class_ids = class_ids(config, model.spec)
        self._all_classes = len(self.class_ids) == model.spec.num_classes

    @torch.no_grad()
    def evaluate(self, genomes: GenomeBatch) -> np.ndarray:
        """Probabilities ``(batch_size, num_cells)`` float32 of the archive's classes."""
        images = self.encoding.render(genomes, self.scorer.device)
        if tuple(images.shape[-2:]) != self.scorer.image_size:
            images = F.interpolate(images, size=self.scorer.image_size, mode="bilinear", align_corners=False)
        probabilities = self.scorer.score(images)
        return probabilities if self._all_classes else probabilities[:, self.class_ids]
