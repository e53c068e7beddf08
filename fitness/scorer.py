"""Batched, gradient-free scoring of images by a classifier, on the engine a run names."""

from __future__ import annotations

import logging
import math
from typing import TypeVar

import numpy as np
import torch

from fooling.fitness._messages import error_line
from fooling.fitness.engine import scoring_threads
from fooling.fitness.engines import (
    EngineOptions,
    EngineSession,
    ModelRunError,
    get_engine,
    model_call,
    resolve_engine,
    ten_crops,
)
from fooling.fitness.models import LoadedModel, ModelSpec

logger = logging.getLogger(__name__)

# Probabilities or logits, ``(batch, classes)``: numpy on the host, or a tensor on the scoring device.
Scores = TypeVar("Scores", np.ndarray, torch.Tensor)

__all__ = ["ModelRunError", "Scorer", "pick_device", "scored_image_size", "ten_crops"]


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def scored_image_size(spec: ModelSpec, crops: int) -> tuple[int, int]:
    """``(height, width)`` of the images a scorer of ``spec`` with ``crops`` (1 or 10) takes.

    With 10 crops, 256/224 of the model's input size, as the original cut its crops.
    """
    height, width = spec.input_size
    if crops == 10:
        return (height * 256 // 224, width * 256 // 224)
    return (height, width)


class Scorer:
    """Softmax probabilities of a classifier for batches of images.

    No gradients. Images in ``[0, 1]`` are normalised the way the model expects. Scoring runs
    on the engine ``engine`` names (see :mod:`fooling.fitness.engines`): ONNX Runtime on the
    CPU by default, torch elsewhere (channels_last; on CUDA also half precision autocast).
    The engine's session is made on first use; an engine that cannot run the model falls back
    to the engine it names (ONNX Runtime to torch), with one log line.
    :meth:`logits` (for gradient methods) always runs the torch network.

    Args:
        model: the network and its spec.
        device: where to run; default CUDA when present, else CPU.
        crops: 1 (the image as is) or 10 (the paper's 10-crop average; images then
            come at 256/224 of the model's input size and are cropped to it).
        amp: half-precision autocast of the torch engine; default on for CUDA.
        engine: ``"auto"`` or a registered engine (:func:`fooling.fitness.engines.engine_names`).
        compiled: score with ``torch.compile`` (torch engine) in chunks of one fixed batch
            shape; default on for CUDA (lite0 on an H100 at AMP: 33,700-34,100 images/s
            against 22,500-23,100 without; a CUDA graph on top added 0-5%, and was not kept).
            A network that cannot be compiled falls back to eager torch, with one log line.
        batch: images per :meth:`score` call the caller means to make, or ``None``. The
            compiled network's shape is fitted to it
            (:func:`~fooling.fitness.torch_engine.fitted_batch`); ``None``: chunks of
            :data:`~fooling.fitness.torch_engine.COMPILED_BATCH`.

    Raises:
        ValueError: ``crops`` not 1 or 10, or ``batch`` below 1.
        UnknownNameError: no such engine (suggests close names).
        EngineUnavailableError: an engine that cannot run here (``onnxruntime`` without the
            package or off the CPU).
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        device: str | torch.device | None = None,
        crops: int = 1,
        amp: bool | None = None,
        engine: str = "auto",
        compiled: bool | None = None,
        batch: int | None = None,
    ) -> None:
        if crops not in (1, 10):
            raise ValueError(f"crops must be 1 or 10, not {crops}")
        if batch is not None and batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self.spec = model.spec
        self.weights_hash = model.weights_hash
        self.device = pick_device(device)
        self.crops = crops
        self.amp = self.device.type == "cuda" if amp is None else amp
        self.engine = resolve_engine(engine, self.device, model)
        self._model = model
        self._compile = self.device.type == "cuda" if compiled is None else compiled
        self.batch = batch
        self._session: EngineSession | None = None  # the engine's, made on first use
        self.threads = scoring_threads()
        # channels_last: faster convolutions on CUDA and, for torch, on the CPU too.
        self.network = model.network.to(self.device).eval().to(memory_format=torch.channels_last)
        shape = (1, self.spec.channels, 1, 1)
        self._mean = torch.tensor(self.spec.mean, device=self.device).view(shape)
        self._std = torch.tensor(self.spec.std, device=self.device).view(shape)

    @property
    def compiled(self) -> bool:
        """Whether the torch engine scores through ``torch.compile`` (``False`` once it could not)."""
        return bool(getattr(self._session, "compiled", self._compile))

    def _options(self) -> EngineOptions:
        return EngineOptions(
            device=self.device,
            threads=self.threads,
            amp=self.amp,
            compiled=self._compile,
            batch=None if self.batch is None else self.batch * self.crops,
        )

    def session(self) -> EngineSession:
        """The engine's session, made on first use.

        An engine that cannot make one for this model falls back to the engine it names
        (:attr:`~fooling.fitness.engines.ScoringEngine.falls_back_to`), with one log line.

        Raises:
            Exception: the engine's error, where it names no engine to fall back to.
        """
        if self._session is None:
            engine = get_engine(self.engine)
            try:
                self._session = engine.session(self._model, self._options())
            except Exception as error:  # any exporter or runtime failure: the fallback still works
                if engine.falls_back_to is None:
                    raise
                logger.warning(
                    "%s cannot run on %s (%s): scoring with %s",
                    self.spec.name,
                    engine.title,
                    error_line(error),
                    engine.falls_back_to,
                )
                self.engine = engine.falls_back_to
                self._session = get_engine(self.engine).session(self._model, self._options())
        return self._session

    def _onnx_session(self):
        """The ONNX Runtime session of the ``onnxruntime`` engine (``None`` after a fallback)."""
        return getattr(self.session(), "runtime", None)

    def _finite(self, probabilities: np.ndarray) -> np.ndarray:
        """``probabilities`` after checking the network gave finite scores for every image.

        Raises:
            ModelRunError: some image's scores hold NaN or infinity (the model's logits did).
        """
        self.check_finite(int(self.bad_rows(probabilities).sum()), len(probabilities))
        return probabilities

    def bad_rows(self, probabilities: Scores) -> Scores:
        """``(batch,)`` bool, the rows whose scores hold NaN or infinity: numpy, or torch on its device.

        ``-inf`` marks a class not returned where the engine gives partial scores (top-k answers).
        Written with operators both array types share, so numpy and torch apply one rule (and
        numpy's scores stay with numpy: torch's CPU reductions left OpenMP threads spinning
        beside ONNX Runtime's, see :meth:`~fooling.evo.evaluation.Evaluator.evaluate_best`).
        """
        partial = getattr(self._session, "partial_scores", False)
        infinite = (probabilities if partial else abs(probabilities)) == math.inf
        return ((probabilities != probabilities) | infinite).any(axis=1)  # NaN != NaN

    def check_finite(self, bad: int, total: int) -> None:
        """Raise unless ``bad``, the rows of ``total`` images with non-finite scores, is 0.

        Raises:
            ModelRunError: ``bad`` > 0 (the model's logits held NaN or infinity).
        """
        if bad:
            raise ModelRunError(
                f"model {self.spec.name} gave non-finite scores (NaN or infinity) for {bad} of {total} images"
            )

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the images :meth:`score` takes."""
        return scored_image_size(self.spec, self.crops)

    def check_images(self, images: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``images`` is ``(batch, channels, *image_size)``."""
        expected = (self.spec.channels, *self.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"{self.spec.name} takes images of shape (batch, {', '.join(map(str, expected))}), "
                f"got {tuple(images.shape)}"
            )

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch_size, num_classes)`` float32, differentiable (no crops, no AMP).

        ``images``: ``(batch_size, channels, *spec.input_size)`` in ``[0, 1]`` on the device.

        Raises:
            ModelRunError: the network raised.
        """
        inputs = (images - self._mean) / self._std
        with model_call(self.spec.name):
            logits = self.network(inputs)
        return logits.float()

    @torch.no_grad()
    def score(self, images: torch.Tensor) -> np.ndarray:
        """Probabilities ``(batch_size, num_classes)`` float32 of ``images``.

        Args:
            images: ``(batch_size, channels, *image_size)`` in ``[0, 1]``, any device.

        Raises:
            ValueError: images of the wrong shape for this model.
            ModelRunError: the network raised, or gave non-finite scores.
        """
        self.check_images(images)
        return self._finite(self.session().score(images, self.crops, self.spec.input_size))

    @torch.no_grad()
    def score_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(batch_size, num_classes)``, left where the engine scored them.

        On the scoring device with the torch engine (nothing waits for it), else on the CPU;
        float32, or the engine's own dtype (an endpoint's float64).
        Unlike :meth:`score`, the scores are not checked here, which would wait for the device:
        the caller checks them where its reduction reaches the host (:meth:`bad_rows`,
        :meth:`check_finite`).

        Args:
            images: ``(batch_size, channels, *image_size)`` in ``[0, 1]``, any device.

        Raises:
            ValueError: images of the wrong shape for this model.
            ModelRunError: the network raised.
        """
        self.check_images(images)
        return self.session().score_tensor(images, self.crops, self.spec.input_size)
