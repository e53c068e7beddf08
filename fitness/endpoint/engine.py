"""The ``endpoint`` scoring engine: a model behind an endpoint is scored by sending it the images.

``auto`` picks it for endpoint models (and only for them: it runs no other kind). The session
hands the images, in ``[0, 1]`` on the CPU, to the network's
:meth:`~fooling.fitness.sources.endpoint.EndpointNetwork.score_images`; its failures (retries
spent, a refused credential, an answer of the wrong shape) are already one line and pass as
:class:`~fooling.fitness.engines.ModelRunError`, so a search saves its last whole generation
and says which one.
"""

from __future__ import annotations

import numpy as np
import torch

from fooling.fitness.endpoint.client import EndpointError
from fooling.fitness.endpoint.protocol import AnswerError
from fooling.fitness.engines import (
    EngineOptions,
    EngineSession,
    ModelRunError,
    ScoringEngine,
    register_engine,
)
from fooling.fitness.models import LoadedModel

__all__ = ["ENDPOINT_KIND", "EndpointEngine", "EndpointRunError", "EndpointSession"]

# The model kind (fooling.fitness.engines.model_kind) of a network behind an endpoint.
ENDPOINT_KIND = "endpoint"


class EndpointRunError(ModelRunError):
    """The endpoint failed while scoring (retries spent, credentials refused, a bad answer); one line."""


class EndpointSession(EngineSession):
    """Scores by sending the images to the endpoint.

    Attributes:
        partial_scores: the answers hold only the top-k classes (``-inf`` for the others).
    """

    def __init__(self, network) -> None:
        self.network = network
        self.partial_scores = network.parsed.options.top_k is not None

    def probabilities(self, images: torch.Tensor) -> np.ndarray:
        """Probabilities ``(batch, classes)`` float32 of ``images`` (``-inf``: a class not returned).

        Raises:
            EndpointRunError: the endpoint failed or answered wrongly (one line).
        """
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        try:
            return self.network.score_images(array)
        except (EndpointError, AnswerError) as error:
            raise EndpointRunError(str(error)) from error


class EndpointEngine(ScoringEngine):
    """Scoring by the model's own endpoint (Open Inference Protocol over HTTP)."""

    name = "endpoint"
    title = "the model's endpoint"
    help = "a model behind an http(s):// Open Inference Protocol endpoint, scored by sending it requests"
    model_kinds = frozenset({ENDPOINT_KIND})
    auto_preference = 100  # the only engine that runs endpoint models, and it runs nothing else

    def floats_depend_on_threads(self, device: torch.device) -> bool:
        """No: the server computes the scores."""
        return False

    def session(self, model: LoadedModel, options: EngineOptions) -> EndpointSession:
        """A session sending ``model``'s images to its endpoint."""
        return EndpointSession(model.network)


register_engine(EndpointEngine())
