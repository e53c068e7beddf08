"""Wiring an encoding to a scorer: genomes in, class probabilities out."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# ENCODINGS: the built-in encodings' specs (name -> EncodingSpec), re-exported; plugins are in
# registered_encodings(), which make_encoding reads.
from fooling.encodings import ENCODINGS, CPPNGenomes, Encoding, GenomeBatch, UserError, registered_encodings
from fooling.encodings.cppn import WEIGHT_LIMIT, CPPNEncoding, node_count
from fooling.encodings.cppn_triton import available as triton_available
from fooling.encodings.cppn_triton import render_on_device
from fooling.encodings.tensors import TensorGenomes
from fooling.evo.archive import BatchBest
from fooling.evo.config import RunConfig
from fooling.fitness import LoadedModel, ModelSpec, Scorer, class_index, pick_device, resolve_name
from fooling.fitness.scorer import Scores, scored_image_size
from fooling.fitness.weight_ascent import ascend_parameters

__all__ = ["ENCODINGS", "Evaluator", "class_ids", "image_size", "make_encoding", "resolve_classes"]


def image_size(config: RunConfig, spec: ModelSpec) -> tuple[int, int]:
    """``(height, width)`` of the evolved images: ``--image-size`` or what the scorer takes.

    Raises:
        UserError: ``--crops 10`` with an ``--image-size`` smaller than the crops cut from it.
    """
    height, width = spec.input_size
    if config.image_size and config.crops == 10 and config.image_size < max(height, width):
        raise UserError(
            f"--crops 10 cuts {height}x{width} crops ({spec.name}'s input) from each image, so "
            f"--image-size {config.image_size} is smaller than a crop: give at least {max(height, width)}, "
            f"or 0 for {scored_image_size(spec, 10)[0]} px (256/224 of the input, as the original)"
        )
    if config.image_size:
        return (config.image_size, config.image_size)
    return scored_image_size(spec, config.crops)


def make_encoding(config: RunConfig, spec: ModelSpec) -> Encoding:
    """The registered encoding named by ``config.encoding``, sized for the model.

    Raises:
        UnknownNameError: no such encoding (suggests close names).
        PluginError: a plugin encoding fails to load (one line naming it).
        UserError: ``--crops 10`` with too small an ``--image-size``.
        ValueError: settings the encoding refuses (the run config checks them first, so a bug).
    """
    encodings = registered_encodings()
    name = resolve_name(config.encoding, encodings, "encoding")
    return encodings[name].build(dataclasses.asdict(config), spec.channels, image_size(config, spec))


def resolve_classes(names: Sequence[str], class_names: Sequence[str]) -> list[int]:
    """The class ids of ``names`` (class names or ids, see :func:`~fooling.fitness.class_index`).

    Raises:
        UnknownNameError: a class name or id the model does not have (suggests close names),
            or a name two classes share (give the id).
        UserError: one class given twice (e.g. by name and by id).
    """
    ids = [class_index(name, class_names) for name in names]
    repeated = next((i for i in ids if ids.count(i) > 1), None)
    if repeated is not None:
        spellings = " and ".join(repr(name) for name, i in zip(names, ids) if i == repeated)
        raise UserError(
            f"--classes names {class_names[repeated]!r} twice ({spellings}); give each class once"
        )
    return ids


def class_ids(config: RunConfig, spec: ModelSpec) -> np.ndarray:
    """Class indices that get an archive cell: ``config.classes`` resolved (:func:`resolve_classes`), or all.

    Raises:
        UnknownNameError, UserError: as :func:`resolve_classes`.
    """
    if not config.classes:
        return np.arange(spec.num_classes)
    return np.array(resolve_classes(config.classes, spec.class_names))


class Evaluator:
    """Renders genomes and scores them: the work of one scorer (in-process or a Ray actor).

    Args:
        config: the run.
        model: the classifier, with weights (shipped to actors so nodes need no cache).
        device: scoring device (default: CUDA when present, else CPU).
    """

    def __init__(self, config: RunConfig, model: LoadedModel, *, device: str | None = None) -> None:
        device = pick_device(device or config.device)
        per_call = None
        if device.type != "cpu":  # the compiled network's one shape fits the calls of a whole task
            per_call = self.calls(config.effective_batch_size, model.spec, config.crops, device)[0]
        self.scorer = Scorer(model, device=device, crops=config.crops, engine=config.engine, batch=per_call)
        self.encoding = make_encoding(config, model.spec)
        self.class_ids = class_ids(config, model.spec)
        self._all_classes = len(self.class_ids) == model.spec.num_classes

    @torch.no_grad()
    def images(self, genomes: GenomeBatch | TensorGenomes) -> torch.Tensor:
        """Images ``(batch_size, channels, *scorer.image_size)`` in [0, 1] on the scoring device.

        Genomes on a device (:class:`~fooling.encodings.TensorGenomes`) are rendered there:
        CPPNs on a CUDA GPU by the Triton renderer where Triton is installed; on the CPU by
        the encoding's own renderer, made for CPU threads, which is faster there.
        """
        on_gpu = isinstance(genomes, TensorGenomes) and genomes.device.type == "cuda"
        if on_gpu and isinstance(self.encoding, CPPNEncoding) and triton_available(genomes.device):
            images = render_on_device(self.encoding, genomes)
        else:
            # Encodings whose render takes tensors say so; the others get numpy genomes.
            if isinstance(genomes, TensorGenomes) and not getattr(self.encoding, "renders_tensors", False):
                genomes = genomes.to_host()
            images = self.encoding.render(genomes, self.scorer.device)
        if tuple(images.shape[-2:]) != self.scorer.image_size:
            images = F.interpolate(images, size=self.scorer.image_size, mode="bilinear", align_corners=False)
        return images

    # On the CPU, input pixels rendered and scored at once: 64 images of 224x224 (4,096 of
    # MNIST's 28x28). Whole generations at once made ONNX Runtime's buffers huge: 400
    # paper-preset CPPNs took 8.6 GB and ran at 34 evaluations/s, against 2.1 GB and 55-68
    # evaluations/s 64 at a time (32 and 48 at a time: 50-57); small images keep large batches,
    # where per-run costs matter.
    EVALUATE_PIXELS = 64 * 224 * 224
    # Measured on 196 of the paper-scale run's children (256 px, 2 cores): 49 rendered at a
    # time 114-118 images/s, 98 at a time 131-142.
    RENDER_CHUNKS = 2
    # Off the CPU, network input pixels per call, crops counted (1,024 inputs of 224x224: about
    # 2.5 GB of transient float32 copies). Chunks of 64 images had the compiled network pad each
    # to its batch of 256, computing 4.5 times the rows a generation of 400 needs, and waited for
    # the device after each; the paper preset's 400 children at 10 crops now take 4 calls.
    DEVICE_PIXELS = 1024 * 224 * 224

    @classmethod
    def calls(cls, count: int, spec: ModelSpec, crops: int, device: torch.device) -> list[int]:
        """How many of ``count`` genomes each render-and-score call takes, in order.

        On the CPU, :attr:`RENDER_CHUNKS` scoring chunks (:meth:`cpu_chunk`) per call;
        elsewhere as few calls of as equal sizes as :attr:`DEVICE_PIXELS` allows.

        Returns:
            Positive sizes that add up to ``count`` (``[]`` for none).
        """
        if count <= 0:
            return []
        if device.type == "cpu":
            per_call = cls.cpu_chunk(spec, crops) * cls.RENDER_CHUNKS
        else:
            height, width = spec.input_size
            inputs = max(1, cls.DEVICE_PIXELS // (crops * height * width))
            per_call = -(-count // -(-count // inputs))
        return [min(per_call, count - start) for start in range(0, count, per_call)]

    @classmethod
    def call_chunks(cls, count: int, spec: ModelSpec, crops: int, device: torch.device) -> list[list[int]]:
        """The genomes of each scoring chunk of each render-and-score call of ``count`` genomes.

        The calls are :meth:`calls`; on the CPU each is scored in chunks of :meth:`cpu_chunk`,
        elsewhere whole.

        Returns:
            Lists of positive sizes, together adding up to ``count`` (``[]`` for none).
        """
        chunk = cls.cpu_chunk(spec, crops) if device.type == "cpu" else None
        return [
            [min(chunk or call, call - start) for start in range(0, call, chunk or call)]
            for call in cls.calls(count, spec, crops, device)
        ]

    @classmethod
    def score_sizes(cls, count: int, spec: ModelSpec, crops: int, device: torch.device) -> list[int]:
        """How many of ``count`` genomes each scoring call of one evaluation takes, in order.

        The network sees each call's images, ``crops`` per genome, in one batch: an endpoint
        whose input has a fixed batch size pads every call (the driver counts that padding).

        Returns:
            Positive sizes that add up to ``count`` (``[]`` for none).
        """
        return [size for call in cls.call_chunks(count, spec, crops, device) for size in call]

    @classmethod
    def cpu_chunk(cls, spec: ModelSpec, crops: int) -> int:
        """Images scored at once on the CPU: :attr:`EVALUATE_PIXELS` of the scorer's images."""
        height, width = scored_image_size(spec, crops)
        return max(1, cls.EVALUATE_PIXELS // (height * width))

    # Floats the differentiable renderer may hold for one chunk of refine (1 GiB of float32).
    REFINE_FLOATS = 1 << 28

    @torch.no_grad()
    def evaluate(self, genomes: GenomeBatch) -> np.ndarray:
        """Probabilities ``(batch_size, num_cells)`` float32 of the archive's classes.

        Renders and scores the genomes call by call (:meth:`calls`); on the CPU each call's
        images are scored in :attr:`RENDER_CHUNKS` chunks, one after the other.
        Rendering the next chunk in a helper thread while ONNX Runtime scored this one was
        tried and measured slower on the 2-core CPU once both had become fast (they compete
        for the same cores, and the allocator setting of
        :func:`~fooling.fitness.engine.keep_freed_memory` removed the page faults that had
        left cores idle): 128 children, evaluations/s, two interleaved rounds each, 97.5 and
        79.3 overlapped against 104.8 and 92.6 in turn; on the paper-scale run's CPPNs, medians
        of 4 rounds, 48.4 against 52.9. Rendering on Ray's mutator side instead would ship
        224x224x3 float images (600 kB each) instead of ~3 kB genomes.
        """
        probabilities = np.concatenate(self._score_calls(genomes, self.scorer.score))
        return probabilities if self._all_classes else probabilities[:, self.class_ids]

    @torch.no_grad()
    def evaluate_best(self, genomes: GenomeBatch | TensorGenomes) -> BatchBest:
        """Each archive cell's best row of ``genomes``: :meth:`evaluate` reduced to what insertion needs.

        Off the CPU the probabilities stay where the scorer computed them (a GPU, for the torch
        engine) and are reduced there: the host receives one row index and one value per cell,
        and the count of images with non-finite scores. On the CPU numpy reduces them: torch's
        reduction there left OpenMP threads spinning beside ONNX Runtime's, whose next batch
        then took 16-18 ms instead of 10-11 (MNIST, 200 children, 2 cores).

        Returns:
            ``BatchBest.of(self.evaluate(genomes))``, the same rows and values.

        Raises:
            ModelRunError: the network raised, or gave non-finite scores.
        """
        if self.scorer.device.type == "cpu":
            return BatchBest.of(self.evaluate(genomes))
        return self._best_on_device(genomes)

    def evaluate_for(self, genomes: GenomeBatch | TensorGenomes, every_row: bool) -> np.ndarray | BatchBest:
        """What a backend sends the driver for ``genomes``.

        Args:
            genomes: the batch.
            every_row: the emitter learns from every child (:attr:`Emitter.learns`).

        Returns:
            :meth:`evaluate`'s probabilities ``(batch_size, num_cells)`` where ``every_row``,
            else :meth:`evaluate_best`'s :class:`BatchBest` (all that insertion reads).

        Raises:
            ModelRunError: the network raised, or gave non-finite scores.
        """
        return self.evaluate(genomes) if every_row else self.evaluate_best(genomes)

    def _best_on_device(self, genomes: GenomeBatch | TensorGenomes) -> BatchBest:
        """:meth:`evaluate_best` reduced where the scorer leaves its probabilities (any device)."""
        probabilities = torch.cat(self._score_calls(genomes, self.scorer.score_tensor))
        bad = self.scorer.bad_rows(probabilities).sum()
        if not self._all_classes:
            probabilities = probabilities[:, torch.from_numpy(self.class_ids).to(probabilities.device)]
        self.scorer.check_finite(int(bad), len(probabilities))  # the one wait for the device
        return BatchBest.of_tensor(probabilities)

    def _score_calls(
        self, genomes: GenomeBatch | TensorGenomes, score: Callable[[torch.Tensor], Scores]
    ) -> list[Scores]:
        """``score`` of each scoring chunk of ``genomes``' images, in order (:meth:`call_chunks`).

        On the CPU each call's images go in :attr:`RENDER_CHUNKS` chunks (:meth:`cpu_chunk`).
        An empty batch gives one empty chunk's scores.
        """
        spec, crops, device = self.scorer.spec, self.scorer.crops, self.scorer.device
        parts, start = [], 0
        for chunks in self.call_chunks(len(genomes), spec, crops, device) or [[0]]:
            images = self.images(genomes.take(slice(start, start + sum(chunks))))
            offset = 0
            for size in chunks:
                parts.append(score(images[offset : offset + size]))
                offset += size
            start += offset
        return parts

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
            chunk: genomes per forward/backward pass at most (fewer for large renders,
                see :attr:`REFINE_FLOATS`).

        Returns:
            ``batch_size`` new CPPN genomes, the refined copies in the order of ``genomes``.
        """
        out = genomes.copy()
        targets = torch.from_numpy(self.class_ids[np.asarray(cells)].astype(np.int64))
        # The differentiable renderer keeps, for the backward pass, each node position's stack of
        # all earlier nodes' values: about pixels x nodes^2 / 2 floats per genome (6.7 GB for 32
        # genomes of 40 nodes at 256 px). Fewer genomes per pass keep that within REFINE_FLOATS;
        # rows do not interact, so only the batching changes.
        if len(genomes):
            _, height, width = self.encoding.shape
            per_genome = height * width * int(node_count(genomes).max()) ** 2 // 2
            chunk = max(1, min(chunk, self.REFINE_FLOATS // max(per_genome, 1)))
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
