"""Gradient methods: targeted/untargeted perturbations of real images, gradient-ascent fooling images.

Both optimise the input, never the weights. Images are ``(batch, channels, height, width)``
float tensors in [0, 1] at the model's input size; everything runs batched on the scorer's
device.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fooling.encodings.errors import UserError
from fooling.fitness.models import LoadedModel
from fooling.fitness.scorer import Scorer

# Most steps of perturb and ascent (the commands' --steps): far beyond any useful run (the
# defaults are 300), and the history keeps every step's probabilities, 4 bytes per image and
# class per step (400 MB per ImageNet image at this many).
MAX_STEPS = 100_000
# Pixels are in [0, 1]: a step (or an L-inf budget) above 1 moves every pixel across the whole
# range, and far above it lr * gradient overflows float32 into NaN images.
MAX_STEP_SIZE = 1.0


def _check_steps(steps: int, **sizes: float) -> None:
    """Refuse ``steps`` outside ``[1, MAX_STEPS]``, or one of ``sizes`` outside ``(0, MAX_STEP_SIZE]``.

    Raises:
        UserError: one line naming the value (``steps``, ``lr``, ``eps``).
    """
    if not 0 < steps <= MAX_STEPS:
        raise UserError(f"steps must be in [1, {MAX_STEPS:,}], not {steps}")
    for name, size in sizes.items():
        if not 0 < size <= MAX_STEP_SIZE:
            raise UserError(f"{name} must be in (0, {MAX_STEP_SIZE:g}] (pixels are in [0, 1]), not {size}")


@dataclasses.dataclass
class GradientHistory:
    """What happened at every step, for plots and animations.

    Attributes:
        probabilities: ``(steps + 1, batch, num_classes)`` float32 softmax after each step
            (row 0: before the first step).
        loss: ``(steps + 1, batch)`` float32 loss after each step.
        frames: ``(num_frames, batch, channels, height, width)`` float32 snapshots of the images.
        frame_steps: ``(num_frames,)`` int64 step of each snapshot.
    """

    probabilities: torch.Tensor
    loss: torch.Tensor
    frames: torch.Tensor
    frame_steps: torch.Tensor

    @classmethod
    def stacked(cls, probabilities: list, losses: list, frames: list, frame_steps: list) -> GradientHistory:
        """A history from per-step lists of tensors."""
        return cls(
            torch.stack(probabilities), torch.stack(losses), torch.stack(frames), torch.tensor(frame_steps)
        )


@dataclasses.dataclass
class PerturbResult:
    """Outcome of :func:`perturb`.

    Attributes:
        images: ``(batch, channels, height, width)`` the perturbed images.
        original: ``(batch, channels, height, width)`` the inputs.
        source: ``(batch,)`` int64 label of each input before perturbation.
        target: ``(batch,)`` int64 target class (-1 when untargeted).
        steps: ``(batch,)`` int64 steps each image took (it stops once it succeeds).
        success: ``(batch,)`` bool: target probability >= threshold (untargeted: label changed).
        history: per-step record.
    """

    images: torch.Tensor
    original: torch.Tensor
    source: torch.Tensor
    target: torch.Tensor
    steps: torch.Tensor
    success: torch.Tensor
    history: GradientHistory

    def change(self) -> dict[str, torch.Tensor]:
        """Size of the change per image: ``l2``, ``linf`` (in [0, 1] pixel units) and ``psnr`` (dB)."""
        delta = (self.images - self.original).flatten(1)
        mse = delta.pow(2).mean(1)
        return {
            "l2": delta.norm(dim=1),
            "linf": delta.abs().amax(1),
            "psnr": 10 * torch.log10(1.0 / mse.clamp_min(1e-12)),
        }


def _as_scorer(model: LoadedModel | Scorer, device: str | None) -> Scorer:
    return model if isinstance(model, Scorer) else Scorer(model, device=device, amp=False)


class _Frames:
    """Snapshots of the images for animations, the first (the input) and the last always kept.

    One per step while there are few, thinned evenly past ``max_frames``.

    Each snapshot is a copy on the CPU: ``x.cpu()`` of a CPU tensor is the tensor
    itself, which the next step changes in place.
    """

    def __init__(self, max_frames: int) -> None:
        self.max_frames = max(2, max_frames)
        self.stride = 1
        self.frames: list[torch.Tensor] = []
        self.steps: list[int] = []

    def offer(self, step: int, images: torch.Tensor, last: bool = False) -> None:
        """Keep a copy of ``images`` at ``step`` if the current stride asks for it (or ``last``)."""
        if step % self.stride and not last:
            return
        self.frames.append(images.detach().to("cpu", copy=True))
        self.steps.append(step)
        if len(self.frames) > 2 * self.max_frames:  # bounded memory: keep every other one
            keep = list(range(0, len(self.frames) - 1, 2)) + [len(self.frames) - 1]
            self.frames = [self.frames[i] for i in keep]
            self.steps = [self.steps[i] for i in keep]
            self.stride *= 2

    def chosen(self) -> tuple[list[torch.Tensor], list[int]]:
        """At most ``max_frames`` snapshots, evenly spaced, first and last included."""
        count = len(self.frames)
        if count <= self.max_frames:
            return self.frames, self.steps
        keep = sorted({round(i * (count - 1) / (self.max_frames - 1)) for i in range(self.max_frames)})
        return [self.frames[i] for i in keep], [self.steps[i] for i in keep]


def perturb(
    model: LoadedModel | Scorer,
    images: torch.Tensor,
    target: torch.Tensor | int | None,
    *,
    steps: int = 300,
    eps: float = 8 / 255,
    lr: float | None = None,
    threshold: float = 0.99,
    max_frames: int = 60,
    device: str | None = None,
    show_progress: bool = False,
) -> PerturbResult:
    """Projected gradient descent on the input, within an L-inf ball of radius ``eps``.

    Targeted (``target`` given): minimise the cross-entropy of the one-hot target until
    its probability reaches ``threshold``. Untargeted (``target=None``): maximise the
    cross-entropy of the image's own label until the label changes, so the change stays
    as small as the step size allows. Each image stops on success; the others go on.

    Args:
        model: the classifier (or a :class:`Scorer` of it).
        images: ``(batch, channels, height, width)`` in [0, 1] at the model's input size.
        target: class index for all images, ``(batch,)`` indices, or ``None``.
        steps: most steps per image.
        eps: L-inf budget in [0, 1] pixel units (8/255 is customary).
        lr: step size per step (default ``eps / 4``).
        threshold: targeted success probability.
        max_frames: snapshots kept for animations: every step while there are at most
            this many, else this many evenly spaced; the first is the input itself.
        device: scoring device (``None``: CUDA when present, else CPU); unused when ``model``
            is a :class:`Scorer`.
        show_progress: draw a progress bar over the steps (on stderr).

    Returns:
        A :class:`PerturbResult`; ``(images - original).abs().max() <= eps`` always.

    Raises:
        UserError: ``steps`` outside ``[1, MAX_STEPS]``, ``eps`` or ``lr`` outside
            ``(0, MAX_STEP_SIZE]`` (the command's flags), or a target equal to an image's
            current label.
        ValueError: images of the wrong shape (a caller's bug: they are loaded for the model).
    """
    lr = eps / 4 if lr is None else lr
    _check_steps(steps, eps=eps, lr=lr)
    scorer = _as_scorer(model, device)
    scorer.check_images(images)
    original = images.detach().to(scorer.device, torch.float32)
    batch = original.shape[0]
    with torch.no_grad():
        source = scorer.logits(original).argmax(1)
    targeted = target is not None
    if targeted:
        target_t = torch.as_tensor(target, device=scorer.device, dtype=torch.int64).expand(batch).clone()
        if (target_t == source).any():
            name = scorer.spec.class_names[int(target_t[target_t == source][0])]
            raise UserError(f"the image is already labelled {name!r}: choose another target")
    else:
        target_t = torch.full((batch,), -1, device=scorer.device, dtype=torch.int64)
    goal = target_t if targeted else source
    direction = -1.0 if targeted else 1.0

    snapshots = _Frames(max_frames)
    x = original.clone()
    done = torch.zeros(batch, dtype=torch.bool, device=scorer.device)
    taken = torch.zeros(batch, dtype=torch.int64, device=scorer.device)
    current = torch.zeros(batch, scorer.spec.num_classes)  # last known probabilities, on the CPU
    current_loss = torch.zeros(batch)
    probabilities, losses = [], []
    bar = tqdm(total=steps, desc="perturb", unit="step", disable=not show_progress, dynamic_ncols=True)
    # Each step costs one forward and one backward pass, like plain PGD: the forward
    # that gives the gradient also tells which images have already succeeded, and only
    # images still going are computed at all.
    for step in range(steps + 1):
        rows = torch.nonzero(~done)[:, 0]
        inputs = x[rows].requires_grad_(step < steps)
        logits = scorer.logits(inputs)
        loss = F.cross_entropy(logits, goal[rows], reduction="none")
        now = F.softmax(logits.detach(), dim=1)
        if targeted:
            success = now.gather(1, goal[rows, None])[:, 0] >= threshold
        else:
            success = now.argmax(1) != source[rows]
        current[rows.cpu()] = now.cpu()
        current_loss[rows.cpu()] = loss.detach().cpu()
        probabilities.append(current.clone())
        losses.append(current_loss.clone())
        done[rows[success]] = True
        snapshots.offer(step, x, last=bool(done.all()) or step == steps)
        if done.all() or step == steps:
            break
        (gradient,) = torch.autograd.grad(loss[~success].sum(), inputs)
        with torch.no_grad():
            going = rows[~success]
            moved = inputs[~success] + direction * lr * gradient[~success].sign()
            bounds_low, bounds_high = original[going] - eps, original[going] + eps
            x[going] = torch.min(torch.max(moved, bounds_low), bounds_high).clamp(0.0, 1.0)
            taken[going] += 1
        bar.update(1)
        bar.set_postfix(done=f"{int(done.sum())}/{batch}", refresh=False)
    bar.close()
    history = GradientHistory.stacked(probabilities, losses, *snapshots.chosen())
    return PerturbResult(
        images=x.detach(),
        original=original,
        source=source,
        target=target_t,
        steps=taken,
        success=done,
        history=history,
    )


def ascent(
    model: LoadedModel | Scorer,
    classes: torch.Tensor,
    *,
    steps: int = 300,
    lr: float = 0.05,
    decay: float = 0.01,
    start: str = "noise",
    seed: int = 0,
    max_frames: int = 60,
    device: str | None = None,
) -> tuple[torch.Tensor, GradientHistory]:
    """Gradient-ascent fooling images (Simonyan et al. 2013), one per class, batched.

    Each step: ``x += lr * g`` with ``g`` the gradient of the class's log-probability
    (the probability's gradient divided by the probability: the same direction, but it
    does not vanish while the probability is tiny), normalised per image so ``lr`` is a
    per-pixel step; then ``x`` decays towards the model's mean image by ``decay`` (the
    L2 regulariser of the original) and is clipped to [0, 1].

    Args:
        model: the classifier (or a :class:`Scorer`).
        classes: ``(batch,)`` int64 class indices, one image each.
        steps: ascent steps.
        lr: per-pixel step size (gradients are normalised per image).
        decay: fraction of the distance to the model's mean image removed each step.
        start: ``"noise"`` (uniform) or ``"mean"`` (the model's mean image plus a little noise).
        seed: seed of the starting noise.
        max_frames: snapshots kept in the history for animations (first and last included).
        device: scoring device (``None``: CUDA when present, else CPU); unused when ``model``
            is a :class:`Scorer`.

    Returns:
        ``(images (batch, channels, height, width), history)``.

    Raises:
        UserError: ``steps`` outside ``[1, MAX_STEPS]``, ``lr`` outside ``(0, MAX_STEP_SIZE]``
            or an unknown ``start`` (the command's flags).
    """
    _check_steps(steps, lr=lr)
    if start not in ("noise", "mean"):
        raise UserError(f"start must be 'noise' or 'mean', not {start!r}")
    scorer = _as_scorer(model, device)
    classes = torch.as_tensor(classes, dtype=torch.int64, device=scorer.device)
    shape = (len(classes), scorer.spec.channels, *scorer.spec.input_size)
    generator = torch.Generator().manual_seed(seed)
    mean = torch.tensor(scorer.spec.mean).view(1, -1, 1, 1).to(scorer.device)
    noise = torch.rand(shape, generator=generator).to(scorer.device)
    x = noise if start == "noise" else (mean + 0.05 * (noise - 0.5)).clamp(0, 1).expand(shape).clone()
    snapshots = _Frames(max_frames)
    snapshots.offer(0, x)
    with torch.no_grad():
        first = F.softmax(scorer.logits(x), dim=1)
    probabilities = [first.cpu()]
    losses = [-torch.log(first.gather(1, classes[:, None])[:, 0].clamp_min(1e-30)).cpu()]
    for step in range(1, steps + 1):
        x.requires_grad_(True)
        log_probabilities = F.log_softmax(scorer.logits(x), dim=1).gather(1, classes[:, None])[:, 0]
        (gradient,) = torch.autograd.grad(log_probabilities.sum(), x)
        with torch.no_grad():
            scale = gradient.flatten(1).norm(dim=1).clamp_min(1e-12) / gradient[0].numel() ** 0.5
            x = x + lr * gradient / scale[:, None, None, None]
            x = (mean + (x - mean) * (1.0 - decay)).clamp(0.0, 1.0)
            now = F.softmax(scorer.logits(x), dim=1)
            probabilities.append(now.cpu())
            losses.append(-torch.log(now.gather(1, classes[:, None])[:, 0].clamp_min(1e-30)).cpu())
        snapshots.offer(step, x, last=step == steps)
    history = GradientHistory.stacked(probabilities, losses, *snapshots.chosen())
    return x.detach(), history
