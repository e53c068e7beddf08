"""The classifier a command works on, loaded by name; MNIST LeNets are trained on first use.

Shared by the driver (:mod:`fooling.evo.run`), the experiments and the gradient commands.
"""

from __future__ import annotations

import logging

from fooling.encodings import UserError
from fooling.fitness import LoadedModel, ModelUnavailableError, lenet_weights_path, load_model, train_lenet
from fooling.fitness.endpoint import is_endpoint, parse_endpoint
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


def named_stored_model(stored: str, given: str | None, *, where: str, flag: str = "--model") -> str | None:
    """Refuse a model a run folder names behind an endpoint unless the command line names it too.

    A run folder may come from someone else: connecting to the endpoint it names would send
    that host this user's credentials (``--header``, ``FOOLING_ENDPOINT_TOKEN``) and images.
    As with the Ray address, which is never read from a checkpoint, only the user says where
    requests go: the stored endpoint is used only when ``given`` (the command line's ``flag``)
    names the same ``http(s)://HOST[:PORT]/v2/models/NAME[/versions/V]``. Nothing is sent
    before this check.

    Args:
        stored: the model (or reference model) the run folder records.
        given: what the command line gave for it (``None``: nothing).
        where: the run folder, as messages name it (e.g. ``"--resume runs/a"``).
        flag: the flag that names the model on this command.

    Returns:
        ``given`` as an override to compare with ``stored``, or ``None`` where it changes
        nothing: not given, or the bare URL of the stored endpoint (whose stored options,
        such as its labels, then stay).

    Raises:
        UserError: ``stored`` is an endpoint and ``given`` does not name it (one line, saying
            which flag to give), or ``stored`` is not a valid endpoint reference.
    """
    if not is_endpoint(stored):
        return given
    url = parse_endpoint(stored).model_url
    if given is not None and is_endpoint(given):
        named = parse_endpoint(given)
        if named.model_url == url:
            return None if named.canonical() == named.model_url else given
    raise UserError(
        f"{where} names the endpoint {url}; nothing is sent to an address read from a run folder "
        f"(it would get your credentials and images): give {flag} {url} to use it"
    )
