"""Wiring an encoding to a scorer: genomes in, class probabilities out."""

from __future__ import annotations

import concurrent.futures

import numpy as np
import torch
import torch.nn.functional as F

from fooling.encodings import CPPNEncoding, CPPNGenomes, DirectEncoding, GenomeBatch
from fooling.encodings.cppn import WEIGHT_LIMIT
from fooling.evo.config import RunConfig
from fooling.fitness import LoadedModel, ModelSpec, Scorer, resolve_name
from fooling.fitness.weight_ascent import ascend_parameters


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
        color_space="hsv" if config.color_space == "rgb" else config.color_space,
        coordinates=config.coordinates,
        split_weight=config.split_weight,
        max_nodes=config.max_nodes,
        max_edges=config.max_edges,
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
        self._renderer: concurrent.futures.ThreadPoolExecutor | None = None

    # Rendering overlaps scoring on ONNX Runtime: a helper thread renders sub-batch k+1 (torch,
    # which releases the GIL in its kernels) while this thread scores sub-batch k (ONNX Runtime
    # releases it too). The helper runs torch on one thread (torch's thread count is per OpenMP
    # thread, so this leaves the scoring thread's two alone): with two, it and ONNX Runtime's
    # two oversubscribed the 2 cores and overlapping was slower than taking turns. Measured on
    # 128 paper-preset CPPNs of the paper-scale run, medians of 4 interleaved rounds: 53
    # evaluations/s overlapped with two render threads, 58 in turn, 62 overlapped with one.
    # Rendering on the mutator side instead would ship 224x224x3 float images (600 kB each)
    # through Ray instead of ~3 kB genomes. Sub-batches of OVERLAP_CHUNK genomes are rendered
    # and scored independently of what else is in the batch (ONNX Runtime gives each image the
    # same floats in any batch), so archives do not depend on the split.
    OVERLAP = True
    OVERLAP_CHUNK = 32

    @torch.no_grad()
    def images(self, genomes: GenomeBatch) -> torch.Tensor:
        """Images ``(batch_size, channels, *scorer.image_size)`` in [0, 1] on the scoring device."""
        images = self.encoding.render(genomes, self.scorer.device)
        if tuple(images.shape[-2:]) != self.scorer.image_size:
            images = F.interpolate(images, size=self.scorer.image_size, mode="bilinear", align_corners=False)
        return images

    @torch.no_grad()
    def evaluate(self, genomes: GenomeBatch) -> np.ndarray:
        """Probabilities ``(batch_size, num_cells)`` float32 of the archive's classes."""
        chunk = self.OVERLAP_CHUNK
        overlap = (
            self.OVERLAP
            and self.scorer.engine == "onnxruntime"
            and isinstance(self.encoding, CPPNEncoding)
            and len(genomes) > chunk
        )
        if not overlap:
            probabilities = self.scorer.score(self.images(genomes))
        else:
            if self._renderer is None:
                self._renderer = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="render", initializer=torch.set_num_threads, initargs=(1,)
                )
            parts = [genomes.take(slice(start, start + chunk)) for start in range(0, len(genomes), chunk)]
            pending = self._renderer.submit(self.images, parts[0])
            scored = []
            for index in range(len(parts)):
                images = pending.result()
                if index + 1 < len(parts):
                    pending = self._renderer.submit(self.images, parts[index + 1])
                scored.append(self.scorer.score(images))
            probabilities = np.concatenate(scored)
        return probabilities if self._all_classes else probabilities[:, self.class_ids]

    def refine(
        self,
        genomes: CPPNGenomes,
        cells: np.ndarray,
        *,
        steps: int,
        lr: float,
        keep_best: bool = False,
        chunk: int = 32,
    ) -> CPPNGenomes:
        """Copies of CPPN ``genomes`` after ``steps`` Adam steps on their weights (``--emitter gradient``).

        Row ``i`` climbs the log-probability of the class of archive cell ``cells[i]``
        through the differentiable renderer and the torch network, ``chunk`` genomes per
        forward/backward pass; weights stay in [-10, 10], topology and activations are kept.

        Args:
            genomes: ``batch_size`` CPPN genomes; not modified.
            cells: ``(batch_size,)`` archive cell index of each genome's target class.
            steps: Adam steps per genome.
            lr: Adam step size (weight units).
            keep_best: keep each genome's best-scoring weights along its steps
                (:func:`~fooling.fitness.weight_ascent.ascend_parameters`), not the last.
            chunk: genomes per forward/backward pass.

        Returns:
            ``batch_size`` new CPPN genomes, the refined copies in the order of ``genomes``.
        """
        out = genomes.copy()
        targets = torch.from_numpy(self.class_ids[np.asarray(cells)].astype(np.int64))
        with torch.enable_grad():
            for start in range(0, len(genomes), chunk):
                part = genomes.take(slice(start, start + chunk))
                weights = ascend_parameters(
                    self.scorer,
                    lambda w, part=part: self.encoding.render_differentiable(part, w),
                    torch.from_numpy(part.edge_weight),
                    targets[start : start + chunk],
                    steps=steps,
                    lr=lr,
                    low=-WEIGHT_LIMIT,
                    high=WEIGHT_LIMIT,
                    keep_best=keep_best,
                )
                rows = slice(start, start + len(part))
                out.edge_weight[rows] = np.where(part.edge_used, weights.numpy(), part.edge_weight)
        return out
