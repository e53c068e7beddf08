"""The paper's MNIST network: Caffe's LeNet (conv20-pool-conv50-pool-fc500-relu-fc10)."""

from __future__ import annotations

import torch
from torch import nn


class LeNet(nn.Module):
    """LeNet as in Caffe's MNIST example, taking ``(batch_size, 1, 28, 28)`` images in [0, 1].

    Args:
        num_classes: outputs; 10 digits, 11 once a "fooling" class is added.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 20, kernel_size=5),
            nn.MaxPool2d(2),
            nn.Conv2d(20, 50, kernel_size=5),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(50 * 4 * 4, 500),
            nn.ReLU(inplace=True),
            nn.Linear(500, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch_size, num_classes)``."""
        return self.classifier(self.features(images))
