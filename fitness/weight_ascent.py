"""Gradient steps on the parameters of an image generator (e.g. a CPPN's weights) toward target classes.

The generator is any differentiable function from a parameter batch to an image batch;
this module knows the classifier, not genomes or archives. Costs are counted the way
searches count them: one forward pass of one image is one evaluation, a forward and a
backward pass are :data:`FORWARD_BACKWARD_COST` evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fooling.fitness.scorer import Scorer, ten_crops

# Evaluations one image costs per gradient step: a forward pass (1) and a backward pass (2).
FORWARD_BACKWARD_COST = 3


def target_log_probabilities(scorer: Scorer, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Log of the probability :meth:`Scorer.score` gives each image's target, differentiably.

    With 10 crops that is the log of the softmax averaged over the crops, the fitness a search
    selects on, not the probability of one resized image.

    Args:
        scorer: the classifier; its torch network runs, in float32.
        images: ``(batch, channels, h, w)`` in [0, 1] on the scorer's device; images of another
            size than :attr:`Scorer.image_size` are resized (bilinear) to it.
        targets: ``(batch,)`` int64 class index of each image.

    Returns:
        ``(batch,)`` float32.
    """
    if tuple(images.shape[-2:]) != scorer.image_size:
        images = F.interpolate(images, size=scorer.image_size, mode="bilinear", align_corners=False)
    if scorer.crops == 10:
        crops = ten_crops(images, scorer.spec.input_size)  # (10, batch, c, h, w)
        log_probabilities = F.log_softmax(scorer.logits(crops.flatten(0, 1)), dim=1).view(10, len(images), -1)
        log_probabilities = torch.logsumexp(log_probabilities, dim=0) - math.log(10)
    else:
        log_probabilities = F.log_softmax(scorer.logits(images), dim=1)
    return log_probabilities.gather(1, targets[:, None])[:, 0]


def ascend_parameters(
    scorer: Scorer,
    generate: Callable[[torch.Tensor], torch.Tensor],
    parameters: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: int,
    lr: float,
    low: float,
    high: float,
    keep_best: bool = False,
) -> torch.Tensor:
    """Adam steps on ``parameters``, each row toward its own target class's log-probability.

    All rows go through the classifier together, one forward and one backward pass per
    step; rows do not interact (the loss is a sum of per-row terms and Adam's state is
    per element). After each step the parameters are clipped to ``[low, high]``.

    Args:
        scorer: the classifier; its torch network runs (any engine), in float32.
        generate: parameters ``(batch, n)`` -> images ``(batch, channels, h, w)`` in [0, 1],
            differentiable; the objective is :func:`target_log_probabilities` (10 crops
            where the scorer takes them).
        parameters: ``(batch, n)`` float32 start values (not modified).
        targets: ``(batch,)`` int64 class index of each row.
        steps: gradient steps (0 returns a copy of ``parameters``).
        lr: Adam's step size, in parameter units.
        low: lower bound of every parameter.
        high: upper bound of every parameter.
        keep_best: return, row by row, the parameters whose forward pass gave the highest
            target log-probability (the start included; the parameters after the last step,
            never put through the classifier, are not candidates) instead of the last ones.

    Returns:
        ``(batch, n)`` float32 parameters after ``steps`` steps (or the best seen), detached,
        on ``parameters``' device.

    Raises:
        ValueError: ``steps < 0``, ``lr <= 0`` or ``targets`` not one per row.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, not {steps}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, not {lr}")
    if targets.shape != (parameters.shape[0],):
        raise ValueError(f"targets of shape {tuple(targets.shape)} for {parameters.shape[0]} rows")
    weights = parameters.detach().to(scorer.device, torch.float32).clone().requires_grad_(True)
    if steps == 0 or weights.shape[0] == 0:
        return weights.detach().to(parameters.device)
    targets = targets.to(scorer.device)
    optimiser = torch.optim.Adam([weights], lr=lr)
    best = weights.detach().clone()
    best_score = torch.full((weights.shape[0],), -torch.inf, device=weights.device)
    for _ in range(steps):
        log_probabilities = target_log_probabilities(scorer, generate(weights), targets)
        if keep_best:
            with torch.no_grad():
                better = log_probabilities > best_score
                best[better] = weights[better]
                best_score = torch.where(better, log_probabilities, best_score)
        loss = -log_probabilities.sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            weights.clamp_(low, high)
    return (best if keep_best else weights.detach()).to(parameters.device)
