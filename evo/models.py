"""The classifier a command works on, loaded by name; MNIST LeNets are trained on first use.

Shared by the driver (:mod:`fooling.evo.run`), the experiments and the gradient commands.
"""

from __future__ import annotations

import logging

from fooling.fitness import LoadedModel, ModelUnavailableError, lenet_weights_path, load_model, train_lenet
from fooling.fitness.models import LENET_PATTERN

logger = logging.getLogger(__name__)


def load_or_train(name: str) -> LoadedModel:
    """Load model ``name``; MNIST LeNets that are not trained yet are trained first.

    A LeNet whose cached weights are damaged is trained again (deterministic), with a warning.

    Args:
        name: anything ``--model`` takes (registry name, ``timm:``, ``torchvision:``, a model
            file reference, a plugin).

    Returns:
        The loaded model.

    Raises:
        ModelUnavailableError: a model other than an MNIST LeNet that cannot be loaded.
        UnknownNameError, ModelFileError: as :func:`fooling.fitness.load_model`.
    """
    try:
        return load_model(name)
    except ModelUnavailableError as error:
        match = LENET_PATTERN.match(name)
        if not match:
            raise
        if lenet_weights_path(int(match.group(1) or 0)).exists():  # damaged: say so, then replace it
            logger.warning("%s; training %s again (deterministic, cached for later runs)", error, name)
        else:
            logger.info("%s is not trained yet: training it once (cached for later runs)", name)
        train_lenet(int(match.group(1) or 0))
        return load_model(name)
