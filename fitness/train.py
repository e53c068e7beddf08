"""Training the MNIST LeNet and caching its weights."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fooling.fitness.data import DigitData, load_mnist
from fooling.fitness.lenet import LeNet
from fooling.fitness.models import lenet_model_name, lenet_weights_path, weights_hash

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    """What ``train_lenet`` reports.

    Attributes:
        model_name: registry name of the trained network.
        path: where its weights are cached.
        test_accuracy: fraction of held-out digits labelled right, in [0, 1].
        data_source: which MNIST was used.
        weights_hash: see :func:`fooling.fitness.weights_hash`.
        seconds: wall-clock training time.
    """

    model_name: str
    path: Path
    test_accuracy: float
    data_source: str
    weights_hash: str
    seconds: float


def fit_lenet(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int = 10,
    epochs: int = 12,
    seed: int = 0,
    batch_size: int = 64,
    network: LeNet | None = None,
) -> LeNet:
    """Train a LeNet with Adam on ``images`` ``(n, 28, 28)`` uint8 and ``labels`` ``(n,)``.

    Args:
        images: ``(n, 28, 28)`` uint8 digits.
        labels: ``(n,)`` integer class of each image, in ``[0, num_classes)``.
        num_classes: outputs of a new network.
        epochs: passes over the data, each in a new random order.
        seed: seed of the initial weights (torch's global generator) and of the orders.
        batch_size: images per Adam step.
        network: continue training this one (same number of outputs) instead of a new one.

    Returns:
        The trained network, in eval mode.
    """
    torch.manual_seed(seed)
    network = network or LeNet(num_classes=num_classes)
    network.train()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    inputs = torch.from_numpy(images).float().unsqueeze(1) / 255.0
    targets = torch.from_numpy(labels).long()
    generator = torch.Generator().manual_seed(seed)
    loss_function = nn.CrossEntropyLoss()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            optimizer.zero_grad()
            loss_function(network(inputs[rows]), targets[rows]).backward()
            optimizer.step()
    return network.eval()


def accuracy(network: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of ``images`` ``(n, 28, 28)`` uint8 whose argmax label equals ``labels``."""
    with torch.no_grad():
        logits = network(torch.from_numpy(images).float().unsqueeze(1) / 255.0)
    return float((logits.argmax(1).numpy() == labels).mean())


def save_weights(network: nn.Module, path: Path, info: dict) -> None:
    """Write weights and a JSON side-car atomically: a crash never leaves a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(network.state_dict(), temporary)
    os.replace(temporary, path)
    path.with_suffix(".json").write_text(json.dumps(info, indent=2))


def train_lenet(seed: int = 0, *, epochs: int | None = None, data: DigitData | None = None) -> TrainResult:
    """Train the paper's LeNet on MNIST and cache it where ``load_model`` finds it."""
    started = time.perf_counter()
    data = data or load_mnist()
    logger.info("training %s on %s", lenet_model_name(seed), data.source)
    if epochs is None:
        # The subset is small: more passes reach ~97%; full MNIST needs only a few.
        epochs = 3 if len(data.train_labels) > 20_000 else 12
    network = fit_lenet(data.train_images, data.train_labels, epochs=epochs, seed=seed)
    test_accuracy = accuracy(network, data.test_images, data.test_labels)
    path = lenet_weights_path(seed)
    digest = weights_hash(network)
    save_weights(
        network,
        path,
        {
            "model": lenet_model_name(seed),
            "seed": seed,
            "epochs": epochs,
            "data": data.source,
            "test_accuracy": test_accuracy,
            "weights_hash": digest,
        },
    )
    seconds = time.perf_counter() - started
    logger.info(
        "%s: test accuracy %.2f%% on %d held-out digits (%.0f s)",
        lenet_model_name(seed),
        100 * test_accuracy,
        len(data.test_labels),
        seconds,
    )
    return TrainResult(lenet_model_name(seed), path, test_accuracy, data.source, digest, seconds)
